//! Byte-stream transports: `pipe` (the kernel baseline; the child's stdin
//! and stdout are two pipes to the parent), `fifo` (two named FIFOs in a
//! private directory) and `uds-stream` (a connected Unix stream socket
//! pair). They share one end type: ping-pong writes and reads one message
//! per call; throughput writes up to [`BATCH_BYTES`] per call, as a
//! program streaming records through a pipe would.

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

use ipcring::platform::{FifoEnd, create_fifo, monotonic_ns, open_fifo_nonblocking};

use crate::bench::link::{Consumer, Echo, PingPongTransport, Producer, Stop, ThroughputTransport};
use crate::bench::message;
use crate::bench::process::{Inherited, Spawner};

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
