//! Byte-stream transports: `pipe` (the kernel baseline; the child's stdin
//! and stdout are two pipes to the parent), `fifo` (two named FIFOs in a
//! private directory), `uds-stream` (a connected Unix stream socket pair)
//! and `ipcring-stream` (two anonymous ipcring byte streams the child
//! inherits, as large as a pipe's default buffer). They are used alike:
//! ping-pong writes and reads one message per call; throughput writes up
//! to [`BATCH_BYTES`] per call, as a program streaming records through a
//! pipe would.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::Duration;

use ipcring::channel::ChannelOptions;
use ipcring::channel::stream::{self, Reader, Writer};
use ipcring::platform::{FifoEnd, create_fifo, monotonic_ns, open_fifo_nonblocking};
use ipcring::segment::{self, Segment};
use ipcring::sync::WaitStrategy;

use crate::bench::link::{Consumer, Echo, PingPongTransport, Producer, Stop, ThroughputTransport};
use crate::bench::message;
use crate::bench::process::{Inherited, Spawner};

use super::ipcring::two_segments;

/// Bytes per `write` in throughput rows: `PIPE_BUF` (the largest write
/// the kernel keeps whole) and one page; 512 8-byte messages. A message
/// larger than this goes in one call of its own.
pub const BATCH_BYTES: usize = 4096;

/// Which byte stream a [`Stream`] row uses.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Pipe,
    Fifo,
    UnixStream,
}

pub struct Stream(pub Kind);

/// FIFOs need a temporary directory that takes them.
fn supports(kind: Kind) -> Result<(), String> {
    match kind {
        Kind::Fifo => FifoDir::create().map(drop),
        Kind::Pipe | Kind::UnixStream => Ok(()),
    }
}

impl PingPongTransport for Stream {
    fn supports(&self, _size: usize) -> Result<(), String> {
        supports(self.0)
    }

    fn parent(&self, spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(Ends::to_child(self.0, spawner, size)?))
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(Ends::to_parent(self.0, inherited, size)?))
    }
}

impl ThroughputTransport for Stream {
    fn supports(&self, _size: usize) -> Result<(), String> {
        supports(self.0)
    }

    fn parent(&self, spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Producer>, String> {
        Ok(Box::new(Ends::to_child(self.0, spawner, size)?))
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Consumer>, String> {
        Ok(Box::new(Ends::to_parent(self.0, inherited, size)?))
    }
}

/// Both directions, seen from one side. Blocking: a side waits in the
/// kernel, which is what a user of these transports pays. A peer that dies
/// closes its ends, and the blocked `read` or `write` fails.
struct Ends {
    kind: Kind,
    to_peer: File,
    from_peer: File,
    size: usize,
    /// Throughput batches; kept here so the loops allocate nothing.
    batch: Vec<u8>,
    /// Removes the FIFOs and their directory when the parent's end goes.
    _fifos: Option<FifoDir>,
}

impl Ends {
    fn new(kind: Kind, to_peer: File, from_peer: File, size: usize) -> Ends {
        Ends {
            kind,
            to_peer,
            from_peer,
            size,
            batch: vec![0; batch_messages(size) * size],
            _fifos: None,
        }
    }

    fn to_child(kind: Kind, mut spawner: Spawner<'_>, size: usize) -> Result<Ends, String> {
        match kind {
            Kind::Pipe => {
                spawner.pipe_stdio();
                let child: &mut Child = spawner.spawn()?;
                let to_child = child.stdin.take().ok_or("the child has no stdin pipe")?;
                let from_child = child.stdout.take().ok_or("the child has no stdout pipe")?;
                Ok(Ends::new(
                    kind,
                    File::from(OwnedFd::from(to_child)),
                    File::from(OwnedFd::from(from_child)),
                    size,
                ))
            }
            Kind::UnixStream => {
                let (ours, theirs) =
                    UnixStream::pair().map_err(|e| format!("uds-stream socketpair: {e}"))?;
                let theirs_too = theirs.try_clone().map_err(|e| format!("uds-stream: {e}"))?;
                spawner.stdio(OwnedFd::from(theirs), OwnedFd::from(theirs_too));
                spawner.spawn()?;
                let reader = ours.try_clone().map_err(|e| format!("uds-stream: {e}"))?;
                Ok(Ends::new(
                    kind,
                    File::from(OwnedFd::from(ours)),
                    File::from(OwnedFd::from(reader)),
                    size,
                ))
            }
            Kind::Fifo => fifo_parent(spawner, size),
        }
    }

    fn to_parent(kind: Kind, inherited: &Inherited, size: usize) -> Result<Ends, String> {
        match kind {
            Kind::Pipe | Kind::UnixStream => {
                let (from_parent, to_parent) = inherited.stdio_pipes()?;
                Ok(Ends::new(kind, to_parent, from_parent, size))
            }
            Kind::Fifo => {
                let dir = PathBuf::from(inherited.name()?);
                // Blocks until the parent opens its write end, so the first
                // read cannot see end-of-file.
                let from_parent =
                    File::open(dir.join(DOWN)).map_err(|e| format!("fifo: opening {DOWN}: {e}"))?;
                // The parent holds the read end open already: no wait.
                let to_parent = fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join(UP))
                    .map_err(|e| format!("fifo: opening {UP}: {e}"))?;
                Ok(Ends::new(kind, to_parent, from_parent, size))
            }
        }
    }

    fn error(&self, e: std::io::Error) -> String {
        let name = match self.kind {
            Kind::Pipe => "pipe",
            Kind::Fifo => "fifo",
            Kind::UnixStream => "uds-stream",
        };
        format!("{name}: {e}")
    }
}

/// FIFO names inside the row's private directory: parent to child, and
/// back.
const DOWN: &str = "down";
const UP: &str = "up";
/// How often the parent retries opening the write end while the child
/// starts.
const OPEN_RETRY: Duration = Duration::from_millis(1);

/// A private directory (mode 0700) holding a row's two FIFOs, removed with
/// them on drop, whichever way the row ends.
struct FifoDir(PathBuf);

impl FifoDir {
    fn create() -> Result<FifoDir, String> {
        let path = std::env::temp_dir().join(format!(
            "ipcring-bench-{}-{}",
            std::process::id(),
            monotonic_ns()
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("fifo: creating {}: {e}", path.display()))?;
        let dir = FifoDir(path);
        for name in [DOWN, UP] {
            create_fifo(&dir.0.join(name), 0o600).map_err(|e| format!("fifo: mkfifo: {e}"))?;
        }
        Ok(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for FifoDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn fifo_parent(mut spawner: Spawner<'_>, size: usize) -> Result<Ends, String> {
    let dir = FifoDir::create()?;
    // Opened before the child exists, without waiting for a writer, so the
    // child's open of the write end returns at once.
    let from_child = open_fifo_nonblocking(&dir.path(UP), FifoEnd::Read)
        .map_err(|e| format!("fifo: opening {UP}: {e}"))?
        .ok_or("fifo: no read end")?;
    spawner.share_name(path_str(&dir.0)?);
    let stop = spawner.stop().clone();
    let child = spawner.spawn()?;
    let to_child = open_writer(&dir.path(DOWN), child, &stop)?;
    let mut ends = Ends::new(Kind::Fifo, to_child, from_child, size);
    ends._fifos = Some(dir);
    Ok(ends)
}

/// Opens the write end once the child has the read end open; a child that
/// dies first, or a deadline, ends the wait.
fn open_writer(path: &Path, child: &mut Child, stop: &Stop) -> Result<File, String> {
    loop {
        if let Some(file) = open_fifo_nonblocking(path, FifoEnd::Write)
            .map_err(|e| format!("fifo: opening {DOWN}: {e}"))?
        {
            return Ok(file);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the child exited ({status}) before opening the fifo"
            ));
        }
        stop.check()?;
        thread::sleep(OPEN_RETRY);
    }
}

fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

fn batch_messages(size: usize) -> usize {
    (BATCH_BYTES / size.max(1)).max(1)
}

impl Echo for Ends {
    fn send(&mut self, message: &[u8], _stop: &Stop) -> Result<(), String> {
        self.to_peer.write_all(message).map_err(|e| self.error(e))
    }

    fn recv(&mut self, buffer: &mut [u8], _stop: &Stop) -> Result<(), String> {
        self.from_peer.read_exact(buffer).map_err(|e| self.error(e))
    }
}

/// Splits `items` into the batches both sides use, so each `read_exact`
/// matches one `write`.
fn batches(items: Range<u64>, per_batch: usize) -> impl Iterator<Item = Range<u64>> {
    items.clone().step_by(per_batch).map(move |first| {
        let end = first.saturating_add(per_batch as u64).min(items.end);
        first..end
    })
}

impl Producer for Ends {
    fn produce(&mut self, items: Range<u64>, _stop: &Stop) -> Result<(), String> {
        let size = self.size;
        for batch in batches(items, batch_messages(size)) {
            let bytes = (batch.end - batch.start) as usize * size;
            for (slot, seq) in self.batch[..bytes].chunks_exact_mut(size).zip(batch) {
                message::fill(slot, seq, 0);
            }
            let result = self.to_peer.write_all(&self.batch[..bytes]);
            result.map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}

impl Consumer for Ends {
    fn consume(&mut self, items: Range<u64>, _stop: &Stop) -> Result<(), String> {
        let size = self.size;
        for batch in batches(items, batch_messages(size)) {
            let bytes = (batch.end - batch.start) as usize * size;
            let result = self.from_peer.read_exact(&mut self.batch[..bytes]);
            result.map_err(|e| self.error(e))?;
            for (slot, seq) in self.batch[..bytes].chunks_exact(size).zip(batch) {
                message::check_seq(slot, seq)?;
            }
        }
        Ok(())
    }
}

/// Bytes an ipcring stream holds: a pipe's default buffer (16 pages), or
/// two messages where that is more.
const RING_STREAM_BYTES: usize = 64 * 1024;
/// How long one blocking call may wait before the bench checks its stop.
const SLICE: Duration = Duration::from_millis(50);

/// `ipcring-stream`: one ipcring byte stream each way, both sides waiting
/// in one wait strategy. Writes and reads block in slices, so that the
/// bench's stop is checked between them.
pub struct RingStream(pub WaitStrategy);

struct RingEnds {
    writer: Writer,
    reader: Reader,
    size: usize,
    /// Throughput batches; kept here so the loops allocate nothing.
    batch: Vec<u8>,
}

fn ring_stream_capacity(size: usize) -> usize {
    (2 * size)
        .max(RING_STREAM_BYTES)
        .next_multiple_of(segment::page_size())
}

impl RingStream {
    /// Writes to `out`, reads from `back`.
    fn ends(&self, out: Segment, back: Segment, size: usize) -> Result<RingEnds, String> {
        let mut writer = Writer::attach(out).map_err(|e| format!("ipcring-stream writer: {e}"))?;
        let mut reader = Reader::attach(back).map_err(|e| format!("ipcring-stream reader: {e}"))?;
        writer.set_wait_strategy(self.0);
        reader.set_wait_strategy(self.0);
        Ok(RingEnds {
            writer,
            reader,
            size,
            batch: vec![0; batch_messages(size) * size],
        })
    }

    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<RingEnds, String> {
        let options = ChannelOptions::new().wait_strategy(self.0);
        let make = || {
            stream::create_segment(None, ring_stream_capacity(size), &options)
                .map_err(|e| format!("ipcring-stream segment: {e}"))
        };
        let (down, up) = two_segments(make, &mut spawner)?;
        let ends = self.ends(down, up, size)?;
        spawner.spawn()?;
        Ok(ends)
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<RingEnds, String> {
        self.ends(inherited.segment(1)?, inherited.segment(0)?, size)
    }
}

impl PingPongTransport for RingStream {
    fn parent(&self, spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(RingStream::parent(self, spawner, size)?))
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(RingStream::child(self, inherited, size)?))
    }
}

impl ThroughputTransport for RingStream {
    fn parent(&self, spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Producer>, String> {
        Ok(Box::new(RingStream::parent(self, spawner, size)?))
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Consumer>, String> {
        Ok(Box::new(RingStream::child(self, inherited, size)?))
    }
}

/// `write_all` on an ipcring stream, in slices.
fn write_all(writer: &mut Writer, mut bytes: &[u8], stop: &Stop) -> Result<(), String> {
    while !bytes.is_empty() {
        match writer.write_timeout(bytes, SLICE) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => stop.check()?,
            Err(e) => return Err(format!("ipcring-stream write: {e}")),
        }
    }
    Ok(())
}

/// `read_exact` on an ipcring stream, in slices; its end is an error.
fn read_exact(reader: &mut Reader, mut buffer: &mut [u8], stop: &Stop) -> Result<(), String> {
    while !buffer.is_empty() {
        match reader.read_timeout(buffer, SLICE) {
            Ok(0) => return Err("ipcring-stream: the writer has gone".to_owned()),
            Ok(n) => buffer = &mut buffer[n..],
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => stop.check()?,
            Err(e) => return Err(format!("ipcring-stream read: {e}")),
        }
    }
    Ok(())
}

impl Echo for RingEnds {
    fn send(&mut self, message: &[u8], stop: &Stop) -> Result<(), String> {
        write_all(&mut self.writer, message, stop)
    }

    fn recv(&mut self, buffer: &mut [u8], stop: &Stop) -> Result<(), String> {
        read_exact(&mut self.reader, buffer, stop)
    }
}

impl Producer for RingEnds {
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        let size = self.size;
        for range in batches(items, batch_messages(size)) {
            let bytes = (range.end - range.start) as usize * size;
            for (slot, seq) in self.batch[..bytes].chunks_exact_mut(size).zip(range) {
                message::fill(slot, seq, 0);
            }
            write_all(&mut self.writer, &self.batch[..bytes], stop)?;
        }
        Ok(())
    }
}

impl Consumer for RingEnds {
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        let size = self.size;
        for range in batches(items, batch_messages(size)) {
            let bytes = (range.end - range.start) as usize * size;
            read_exact(&mut self.reader, &mut self.batch[..bytes], stop)?;
            for (slot, seq) in self.batch[..bytes].chunks_exact(size).zip(range) {
                message::check_seq(slot, seq)?;
            }
        }
        Ok(())
    }
}
