//! A one-way byte stream between processes, like a pipe or a FIFO, over
//! [`ring::stream`](crate::ring::stream): any number of [`Writer`]s (up to
//! 31) and [`Reader`]s (up to 31), no message boundaries, each byte read by
//! one reader. Writers implement [`Write`], readers [`Read`] and
//! [`BufRead`]; errors are [`io::Error`]s with the kinds a pipe gives.
//!
//! ```
//! use std::io::{Read, Write};
//! use ipcring::channel::stream::{Reader, Writer};
//! use ipcring::channel::ChannelOptions;
//! use ipcring::segment::{Address, Segment};
//!
//! let address: Address = format!("doc-stream-{}", std::process::id()).parse()?;
//! let mut reader = Reader::create(&address, 64 * 1024, &ChannelOptions::new())?;
//! let mut writer = Writer::open(&address)?; // usually in another process
//! writer.write_all(b"hello, ")?;
//! writer.write_all(b"stream")?;
//! drop(writer); // the last writer leaves: the reader sees the end
//! let mut text = String::new();
//! reader.read_to_string(&mut text)?;
//! assert_eq!(text, "hello, stream");
//! Segment::remove(&address)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What a pipe user knows, and how it maps (docs/semantics.md has the
//! table):
//!
//! - **End of stream**: `read` returns `Ok(0)` once the bytes are drained
//!   and every writer has gone (left, or died and been found dead), *after
//!   this reader has seen one*: a writer was attached when the reader
//!   attached, or bytes it left were waiting, or one attached since. Until
//!   then the reader waits for a writer, as opening a FIFO does, whether
//!   or not earlier writers came and went; a nonblocking one gets
//!   `WouldBlock`.
//! - **Broken pipe**: `write` fails with `ErrorKind::BrokenPipe` (no
//!   signal) once every reader this writer has seen has gone. A writer
//!   that has seen no reader yet does not fail: the stream buffers what
//!   fits, and then the writer waits for room (for a reader) like one
//!   blocked in opening a FIFO.
//! - **Atomic writes**: a write of at most [`ATOMIC_WRITE`] bytes goes in
//!   whole, never interleaved with another writer's bytes (like
//!   `PIPE_BUF`); a larger one may be split where room runs out.
//! - **Blocking**: `read` waits while the stream is empty and returns what
//!   is there (at least one byte); `write` waits while it is full and
//!   returns once everything is written (or the readers left after part of
//!   it: then the part's length). [`set_nonblocking`](Writer::set_nonblocking)
//!   makes both return `WouldBlock` instead; a nonblocking write larger
//!   than [`ATOMIC_WRITE`] writes what fits and returns the count, a
//!   smaller one goes in whole or not at all. [`set_timeout`](Writer::set_timeout)
//!   and the `*_timeout` forms end with `TimedOut` (or the count written
//!   so far). A huge timeout waits forever.
//! - **Zero copy**: [`Writer::write_window`] hands out the free space and
//!   [`Reader::read_window`] the waiting bytes, each contiguous in memory
//!   even across the end of the buffer: the data area is mapped twice,
//!   back to back ([`Segment::map_mirrored`]).
//! - **Deaths**: a writer or reader killed anywhere, even holding its
//!   side's lock mid-copy, is found dead by the others' reapers, which
//!   take its lock back. Bytes a writer had copied but not published are
//!   discarded; bytes a reader had copied but not consumed are read again
//!   by the next reader.
//!
//! The segment is a channel segment (kind `STRM`): the endpoint tables, then
//! the ring's control block, then the data area at the next page boundary
//! of the file, `capacity` bytes (a multiple of the page size). SysV
//! segments cannot be mapped twice by offset, so streams are POSIX or
//! memfd only ([`ChannelError::Unsupported`]).

use std::io::{self, BufRead, Read, Write};
use std::ptr::NonNull;
use std::time::Duration;

use super::{
    ChannelError, ChannelOptions, Endpoint, Endpoints, RING_OFFSET, Role, TRUNCATED, ring_region,
    wait_ready,
};
use crate::ring::stream::{
    CONTROL_SIZE, DataArea, ReadGuard, StreamConsumer, StreamProducer, StreamRepair, StreamRing,
    WriteGuard,
};
use crate::ring::{Corruption, Region, Repair, RingError, RingStats, Side};
use crate::segment::{self, Address, HEADER_SIZE, MirroredMap, Mismatch, Segment, SegmentError};
use crate::sync::{Deadline, WaitStrategy};

/// The segment kind of a byte stream ("STRM").
pub const KIND: u32 = u32::from_le_bytes(*b"STRM");

/// The largest write that is never interleaved with another writer's
/// bytes, like `PIPE_BUF`: it goes into the stream whole, in one turn of
/// the writer lock, or (nonblocking) not at all. Every stream holds at
/// least this much (a page).
pub const ATOMIC_WRITE: usize = 4096;

/// The largest capacity (1 GiB).
pub const MAX_CAPACITY: usize = crate::ring::stream::MAX_CAPACITY;

/// How many bytes [`BufRead::fill_buf`] asks for at a time (at most the
/// capacity).
const READ_BUFFER: usize = 64 * 1024;

/// How long a nonblocking call spins for a lock another endpoint holds
/// before giving up with `WouldBlock`: long enough for a copy of a few
/// kilobytes, short enough not to count as blocking.
const NONBLOCKING_LOCK_WAIT: Duration = Duration::from_micros(50);

const SYSV_REFUSED: &str = "a byte stream needs a POSIX or memfd segment: a SysV segment cannot \
                            be mapped twice back to back";

const HUGE_PAGES_REFUSED: &str = "a byte stream cannot live on huge pages: its data area, mapped \
                                  twice back to back, does not start on a huge page boundary";

/// Where the data area starts in the ring region: the first page boundary
/// of the segment's file after the control block, so that it can be
/// mapped on its own.
fn data_offset() -> usize {
    let before = HEADER_SIZE + RING_OFFSET;
    (before + CONTROL_SIZE).next_multiple_of(segment::page_size()) - before
}

fn check_capacity(capacity: usize) -> Result<(), ChannelError> {
    let page = segment::page_size();
    if capacity == 0 || capacity % page != 0 || capacity > MAX_CAPACITY {
        return Err(RingError::InvalidCapacity {
            capacity,
            reason: "a stream's capacity is a non-zero multiple of the page size, at most 1 GiB",
        }
        .into());
    }
    Ok(())
}

/// Creates a stream segment of `capacity` bytes (a multiple of
/// [`segment::page_size`], at most [`MAX_CAPACITY`]) without attaching;
/// `None` makes it anonymous (memfd), to hand to a child like `pipe()`.
pub fn create_segment(
    address: Option<&Address>,
    capacity: usize,
    options: &ChannelOptions,
) -> Result<Segment, ChannelError> {
    check_capacity(capacity)?;
    if let Some(Address::SysV(_)) = address {
        return Err(ChannelError::Unsupported {
            reason: SYSV_REFUSED,
        });
    }
    if options.huge_pages {
        return Err(ChannelError::Unsupported {
            reason: HUGE_PAGES_REFUSED,
        });
    }
    let data_offset = data_offset();
    let bytes = StreamRing::required_size(capacity, data_offset)?;
    super::create_segment(address, KIND, bytes, options, |region| {
        // SAFETY: the segment is new and its ring is not published yet.
        unsafe { StreamRing::init(region, capacity, data_offset) }
    })
}

/// An anonymous stream with both ends in this process, like `pipe()`, for
/// threads. For a child process, do not fork with these ends (an endpoint
/// belongs to the process that attached it: the parent dropping its copy
/// would end the stream under the child); create the segment with
/// [`create_segment`]`(None, ..)`, attach this process's end, and let the
/// child attach its own from [`Segment::inheritable_fd`].
pub fn pipe(capacity: usize, options: &ChannelOptions) -> Result<(Reader, Writer), ChannelError> {
    let segment = create_segment(None, capacity, options)?;
    let second = segment.reopen(&options.open_options())?;
    let reader = Reader::attach_with(segment, options.strategy)?;
    let writer = Writer::attach_with(second, options.strategy)?;
    Ok((reader, writer))
}

/// Removes the name of a stream this call just created if attaching to it
/// failed, so that a failed `create` leaves nothing behind. Unlike other
/// channels, attaching can fail on a fresh stream: its data is mapped a
/// second time, and locking that mirror may exceed `RLIMIT_MEMLOCK` where
/// the segment alone did not.
fn unname_on_error<E>(
    address: &Address,
    attached: Result<E, ChannelError>,
) -> Result<E, ChannelError> {
    if attached.is_err() {
        // As `channel::create_segment` does when a ring cannot be set up;
        // an error (someone removed it first) leaves nothing to do.
        let _ = Segment::remove(address);
    }
    attached
}

/// What both ends hold once attached.
struct Attached {
    endpoint: Endpoint,
    region: Region,
    mirror: MirroredMap,
    data: DataArea,
}

/// Checks the segment, maps its data area twice, then claims a slot on
/// `role`'s side. The mapping comes first: an endpoint that cannot map the
/// stream must never count as attached, or its leaving would end the
/// stream for a reader still waiting for its first writer.
fn attach(segment: Segment, role: Role, strategy: WaitStrategy) -> Result<Attached, ChannelError> {
    if segment.kind() != KIND {
        return Err(SegmentError::Incompatible(Mismatch::Kind {
            found: segment.kind(),
            expected: KIND,
        })
        .into());
    }
    wait_ready(
        segment.view::<Endpoints>(0)?,
        crate::sync::Deadline::after(super::READY_WAIT),
    )?;
    let layout = StreamRing::layout(&ring_region(&segment)?)?;
    let page = segment::page_size();
    let file_offset = HEADER_SIZE + RING_OFFSET + layout.data_offset;
    if file_offset % page != 0 || layout.capacity % page != 0 {
        return Err(RingError::Corrupted(Corruption {
            field: "stream data offset (not page-aligned)",
            value: layout.data_offset as u64,
        })
        .into());
    }
    let mirror = segment
        .map_mirrored(RING_OFFSET + layout.data_offset, layout.capacity)
        .map_err(|e| match e {
            SegmentError::WrongBacking(_) => ChannelError::Unsupported {
                reason: SYSV_REFUSED,
            },
            e => e.into(),
        })?;
    let ptr = NonNull::new(mirror.as_ptr()).ok_or(SegmentError::InvalidOptions {
        reason: "the mirrored mapping has no address",
    })?;
    // SAFETY: the mirror maps `capacity` bytes twice, back to back, and
    // lives in the endpoint next to every ring handle made with it (the
    // handles are dropped no later than the mirror). The bytes are reached
    // only through those handles and the raw-pointer windows.
    let data = unsafe { DataArea::mirrored(ptr, layout.capacity) };
    let (endpoint, region) = Endpoint::attach(
        segment,
        role,
        false,
        strategy,
        crate::sync::Deadline::after(super::READY_WAIT),
        repairer,
    )?;
    Ok(Attached {
        endpoint,
        region,
        mirror,
        data,
    })
}

/// The repair handle: takes back the writer or reader lock of an endpoint
/// found dead.
struct Repairer(StreamRepair);

impl super::ClaimRepair for Repairer {
    fn claim_record(&self, _side: Side, _id: u8) -> u64 {
        // The lock word names its holder; there is no record to read.
        crate::ring::claims::NO_CLAIM_RECORD
    }

    fn repair(&self, side: Side, id: u8, _record: u64) -> Repair {
        match self.0.release_dead(side, id) {
            // Its unpublished bytes are skipped, in effect.
            Ok(true) => Repair::Skipped,
            // A scribbled lock word: nothing to take back; operations that
            // meet it report the corruption.
            Ok(false) | Err(_) => Repair::Nothing,
        }
    }

    fn stats(&self) -> RingStats {
        RingStats {
            repairs: self.0.repairs(),
            losses: 0,
        }
    }
}

fn repairer(region: Region) -> Result<Option<Box<dyn super::ClaimRepair>>, ChannelError> {
    // SAFETY: the region lies in the segment the endpoint owns, which drops
    // the repairer before the segment.
    let handle = unsafe { StreamRepair::attach(region)? };
    Ok(Some(Box::new(Repairer(handle))))
}

/// How long an operation may wait.
#[derive(Clone, Copy, Debug)]
enum Patience {
    /// Not at all (nonblocking): `WouldBlock`.
    Now,
    /// Until the deadline, or for ever: `TimedOut`.
    Until(Option<Deadline>),
}

impl Patience {
    fn after(timeout: Duration) -> Patience {
        Patience::Until(Some(Deadline::after(timeout)))
    }

    fn expired(self) -> io::Error {
        match self {
            Patience::Now => io::ErrorKind::WouldBlock.into(),
            Patience::Until(_) => io::ErrorKind::TimedOut.into(),
        }
    }
}

/// What `Read` and `Write` do when they would wait, as set by
/// `set_nonblocking` and `set_timeout`.
#[derive(Clone, Copy, Debug, Default)]
struct Settings {
    nonblocking: bool,
    timeout: Option<Duration>,
}

impl Settings {
    fn patience(self) -> Patience {
        match (self.nonblocking, self.timeout) {
            (true, _) => Patience::Now,
            (false, Some(timeout)) => Patience::after(timeout),
            (false, None) => Patience::Until(None),
        }
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            // As std's sockets: zero would read as "never wait" to some and
            // "no timeout" to others; `set_nonblocking` says the former.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a zero timeout is not allowed (use set_nonblocking)",
            ));
        }
        self.timeout = timeout;
        Ok(())
    }
}

fn corrupted(corruption: Corruption) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, corruption)
}

fn broken_pipe() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "every reader of the stream has left",
    )
}

fn invalid_input(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The count written so far if any, else `error`.
fn partial(written: usize, error: io::Error) -> io::Result<usize> {
    if written > 0 { Ok(written) } else { Err(error) }
}

/// The slow check: the memory is still the stream's (the file was not
/// truncated under either mapping, the words checked at attach hold).
#[cold]
fn check_intact(endpoint: &Endpoint, mirror: &MirroredMap) -> io::Result<()> {
    endpoint.check_intact().map_err(corrupted)?;
    if mirror.is_broken() {
        return Err(corrupted(TRUNCATED));
    }
    Ok(())
}

/// After a fast-path operation: whether it went through private zeros
/// (one load of a process-wide flag until some mapping breaks).
#[inline]
fn truncated(endpoint: &Endpoint, mirror: &MirroredMap) -> bool {
    endpoint.truncated() || mirror.is_broken()
}

/// Waits for a lock another endpoint holds, as `patience` allows: in wait
/// slices, reaping between them, so that a lock whose holder died is taken
/// back within a reap interval. `acquire` takes the lock, waiting until a
/// deadline. Ok(false): patience ran out.
#[cold]
fn wait_for_lock(
    endpoint: &mut Endpoint,
    mirror: &MirroredMap,
    patience: Patience,
    acquire: impl Fn(WaitStrategy, Option<Deadline>) -> bool,
) -> io::Result<bool> {
    match patience {
        Patience::Now => {
            if acquire(
                WaitStrategy::BusySpin,
                Some(Deadline::after(NONBLOCKING_LOCK_WAIT)),
            ) {
                return Ok(true);
            }
            check_intact(endpoint, mirror)?;
            // A dead holder is taken back here, for the next try.
            endpoint.peer_gone_or_dead();
            Ok(false)
        }
        Patience::Until(deadline) => loop {
            let Some(until) = endpoint.slice(deadline) else {
                return Ok(false);
            };
            if acquire(endpoint.strategy(), Some(until)) {
                return Ok(true);
            }
            check_intact(endpoint, mirror)?;
            endpoint.peer_gone_or_dead();
        },
    }
}

/// The lock word stopped naming us between taking the lock and using it.
fn lock_lost() -> io::Error {
    corrupted(Corruption {
        field: "stream lock holder",
        value: 0,
    })
}

/// Whether an endpoint has seen the other side of its stream: someone of
/// it was attached when we attached, or someone has attached since (its
/// side's attach count moved), or (for a reader) bytes were waiting when
/// it attached, which a writer left. Until then the other side's absence
/// means "not here yet", as for a FIFO's open, not "gone". The count is read
/// before the slots: a peer that attached and left entirely while we were
/// attaching (between our count and our look at its slots) is missed, and
/// we wait for the next one.
#[derive(Clone, Copy, Debug)]
struct PeerWatch {
    attaches_then: u64,
    seen: bool,
}

impl PeerWatch {
    /// Whether the other side was seen, given its attach count now.
    #[inline]
    fn seen_by_now(self, attaches_now: u64) -> bool {
        self.seen || attaches_now != self.attaches_then
    }
}

/// The writing end. Any number of writers may share a stream (31 at a
/// time); a write of at most [`ATOMIC_WRITE`] bytes is never interleaved
/// with another's.
pub struct Writer {
    ring: StreamProducer,
    mirror: MirroredMap,
    settings: Settings,
    readers: PeerWatch,
    // Last: the ring and the mirror point into memory it keeps mapped.
    endpoint: Endpoint,
}

/// Whether a writer waiting for room should try again.
enum Room {
    Maybe,
    ReadersGone,
    OutOfTime,
}

impl Writer {
    /// Creates a named stream of `capacity` bytes and attaches as a writer.
    pub fn create(
        address: &Address,
        capacity: usize,
        options: &ChannelOptions,
    ) -> Result<Writer, ChannelError> {
        let segment = create_segment(Some(address), capacity, options)?;
        unname_on_error(address, Writer::attach_with(segment, options.strategy))
    }

    /// Opens a named stream as a writer.
    pub fn open(address: &Address) -> Result<Writer, ChannelError> {
        Writer::attach(super::open_segment(address, KIND)?)
    }

    /// Attaches to a stream segment (named, or a memfd received or
    /// inherited: [`Segment::open_inherited`]).
    pub fn attach(segment: Segment) -> Result<Writer, ChannelError> {
        Writer::attach_with(segment, WaitStrategy::default())
    }

    fn attach_with(segment: Segment, strategy: WaitStrategy) -> Result<Writer, ChannelError> {
        let attached = attach(segment, Role::Producer, strategy)?;
        // SAFETY: the region and data area are this stream's, kept mapped
        // by the endpoint and the mirror, which the Writer drops after the
        // ring handle; our endpoint slot makes our claimer id unique among
        // live writers.
        let ring = unsafe {
            StreamProducer::attach(attached.region, attached.data, attached.endpoint.id())?
        };
        ring.count_attach();
        // The count first, then the slots: see `PeerWatch`.
        let attaches_then = ring.reader_attaches();
        let readers = PeerWatch {
            attaches_then,
            seen: attached.endpoint.peers_present(),
        };
        Ok(Writer {
            ring,
            mirror: attached.mirror,
            settings: Settings::default(),
            readers,
            endpoint: attached.endpoint,
        })
    }

    /// Bytes the stream holds at most.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// The fast check: every reader this writer has seen is gone.
    #[inline]
    fn readers_gone(&mut self) -> bool {
        self.endpoint.peer_gone() && self.saw_readers()
    }

    /// The slow check, reaping dead endpoints first (at most every 50 ms).
    #[cold]
    fn readers_gone_or_dead(&mut self) -> bool {
        self.endpoint.peer_gone_or_dead() && self.saw_readers()
    }

    fn saw_readers(&mut self) -> bool {
        self.readers.seen = self.readers.seen_by_now(self.ring.reader_attaches());
        self.readers.seen
    }

    /// Whether a reader came (while this writer was attached, or before and
    /// still there) and every reader has left or been found dead: writes
    /// fail with `BrokenPipe`. Bytes written may still wait to be read.
    pub fn is_disconnected(&mut self) -> bool {
        self.readers_gone_or_dead()
    }

    /// Bytes written (by any writer) and not yet read.
    pub fn buffered(&self) -> io::Result<usize> {
        self.ring.buffered().map_err(corrupted)
    }

    /// Bytes that could be written now without waiting (a hint: others
    /// move on at once).
    pub fn free(&self) -> io::Result<usize> {
        self.ring.free().map_err(corrupted)
    }

    /// Whether `write` (and [`write_window`](Self::write_window)) return
    /// `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&mut self, nonblocking: bool) {
        self.settings.nonblocking = nonblocking;
    }

    /// See [`set_nonblocking`](Self::set_nonblocking).
    pub fn is_nonblocking(&self) -> bool {
        self.settings.nonblocking
    }

    /// How long a blocking `write` waits for room before `TimedOut` (or
    /// the count written so far); `None` (the default) waits for ever. A
    /// zero timeout is `InvalidInput`, as for std's sockets.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.settings.set_timeout(timeout)
    }

    /// See [`set_timeout`](Self::set_timeout).
    pub fn timeout(&self) -> Option<Duration> {
        self.settings.timeout
    }

    /// Writes without waiting: `WouldBlock` if nothing could be written
    /// (see the module's notes on atomic writes).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(buf, Patience::Now)
    }

    /// Writes, waiting for room at most `timeout`: the count written, or
    /// `TimedOut` if nothing was.
    pub fn write_timeout(&mut self, buf: &[u8], timeout: Duration) -> io::Result<usize> {
        self.write_with(buf, Patience::after(timeout))
    }

    fn write_with(&mut self, buf: &[u8], patience: Patience) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let atomic = buf.len() <= ATOMIC_WRITE;
        let mut written = 0;
        loop {
            if self.readers_gone() {
                return partial(written, broken_pipe());
            }
            let rest = &buf[written..];
            // An atomic write goes in whole, in one turn of the lock; a
            // larger one in as many pieces as the room allows.
            let need = if atomic { rest.len() } else { 1 };
            match self.write_once(rest, need, patience)? {
                Some(n) => written += n,
                None => return partial(written, patience.expired()),
            }
            if written == buf.len() {
                return Ok(written);
            }
            match self.wait_for_room(need, patience)? {
                Room::Maybe => {}
                Room::ReadersGone => return partial(written, broken_pipe()),
                Room::OutOfTime => return partial(written, patience.expired()),
            }
        }
    }

    /// One turn of the lock: writes what fits of `rest` if at least `need`
    /// bytes are free. `None`: patience ran out waiting for the lock.
    #[inline]
    fn write_once(
        &mut self,
        rest: &[u8],
        need: usize,
        patience: Patience,
    ) -> io::Result<Option<usize>> {
        let Writer {
            ring,
            mirror,
            endpoint,
            ..
        } = self;
        if !ring.try_acquire()
            && !wait_for_lock(endpoint, mirror, patience, |s, d| ring.acquire(s, d))?
        {
            return Ok(None);
        }
        let mut guard = ring.try_lock().ok_or_else(lock_lost)?;
        let free = guard.free(need).map_err(corrupted)?;
        if free < need {
            return Ok(Some(0));
        }
        let n = guard.write_at(0, &rest[..rest.len().min(free)]);
        guard.commit(n).map_err(corrupted)?;
        if truncated(endpoint, mirror) {
            // Written to private zeros that nobody else sees.
            return Err(corrupted(TRUNCATED));
        }
        Ok(Some(n))
    }

    /// The stream has less than `need` bytes free: reports a departure or
    /// damage, or waits one slice for room.
    #[cold]
    fn wait_for_room(&mut self, need: usize, patience: Patience) -> io::Result<Room> {
        check_intact(&self.endpoint, &self.mirror)?;
        if self.readers_gone_or_dead() {
            return Ok(Room::ReadersGone);
        }
        let Patience::Until(deadline) = patience else {
            return Ok(Room::OutOfTime);
        };
        let Some(until) = self.endpoint.slice(deadline) else {
            return Ok(Room::OutOfTime);
        };
        let (peers, watch, ring) = (self.endpoint.peers(), self.readers, &self.ring);
        ring.wait_for_space(need, self.endpoint.strategy(), Some(until), || {
            peers.is_gone() && watch.seen_by_now(ring.reader_attaches())
        });
        Ok(Room::Maybe)
    }

    /// The free space, contiguous, once at least `min` bytes (1 to
    /// `capacity`) are free: fill it (copy into it, or hand its pointer to
    /// code that writes memory) and [`commit`](WriteWindow::commit) what
    /// you wrote. Waits as `write` does (`set_nonblocking`, `set_timeout`).
    ///
    /// The window holds the writer lock until it is committed or dropped:
    /// other writers wait meanwhile, so fill it and let it go. If this
    /// process dies holding it, the lock is taken back and nothing in it is
    /// published.
    ///
    /// ```
    /// # use ipcring::channel::stream::{pipe, Reader, Writer};
    /// # use ipcring::channel::ChannelOptions;
    /// let (mut reader, mut writer) = pipe(64 * 1024, &ChannelOptions::new())?;
    /// let mut window = writer.write_window(480)?;
    /// assert!(window.len() >= 480);
    /// let frame = [7u8; 480];
    /// window.copy_from(0, &frame);
    /// window.commit(480)?;
    ///
    /// let window = reader.read_window(480)?;
    /// let mut out = [0u8; 480];
    /// assert_eq!(window.copy_to(0, &mut out), 480);
    /// window.consume(480)?;
    /// assert_eq!(out, frame);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_window(&mut self, min: usize) -> io::Result<WriteWindow<'_>> {
        let patience = self.settings.patience();
        self.window_with(min, patience)
    }

    /// [`write_window`](Self::write_window) without waiting: `WouldBlock`.
    pub fn try_write_window(&mut self, min: usize) -> io::Result<WriteWindow<'_>> {
        self.window_with(min, Patience::Now)
    }

    /// [`write_window`](Self::write_window), waiting at most `timeout`.
    pub fn write_window_timeout(
        &mut self,
        min: usize,
        timeout: Duration,
    ) -> io::Result<WriteWindow<'_>> {
        self.window_with(min, Patience::after(timeout))
    }

    fn window_with(&mut self, min: usize, patience: Patience) -> io::Result<WriteWindow<'_>> {
        if min == 0 || min > self.capacity() {
            return Err(invalid_input(
                "a write window holds from 1 byte to the stream's capacity",
            ));
        }
        loop {
            if self.readers_gone() {
                return Err(broken_pipe());
            }
            let Writer {
                ring,
                mirror,
                endpoint,
                ..
            } = self;
            if !ring.try_acquire()
                && !wait_for_lock(endpoint, mirror, patience, |s, d| ring.acquire(s, d))?
            {
                return Err(patience.expired());
            }
            // Under the lock `tail` stands still and `head` only grows, so
            // the hint is a floor.
            if ring.free().map_err(corrupted)? >= min {
                break;
            }
            ring.release_leaked_lock();
            match self.wait_for_room(min, patience)? {
                Room::Maybe => {}
                Room::ReadersGone => return Err(broken_pipe()),
                Room::OutOfTime => return Err(patience.expired()),
            }
        }
        let Writer {
            ring,
            mirror,
            endpoint,
            ..
        } = self;
        let mut guard = ring.try_lock().ok_or_else(lock_lost)?;
        // All the free space, not just what the cached `head` shows.
        guard.free(usize::MAX).map_err(corrupted)?;
        let len = guard.contiguous();
        Ok(WriteWindow {
            guard,
            len,
            endpoint,
            mirror,
        })
    }
}

impl Write for Writer {
    /// Writes all of `buf`, waiting for room (or returns `WouldBlock`,
    /// `TimedOut` or a shorter count, as set); `BrokenPipe` once every
    /// reader has left, or the count written before they did.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let patience = self.settings.patience();
        self.write_with(buf, patience)
    }

    /// Nothing to do: every write is published before it returns.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Free space of a stream, held for one writer: see
/// [`Writer::write_window`]. The bytes are contiguous in memory.
///
/// Other processes map the same memory, so the window hands out a raw
/// pointer, safe copies, and an `unsafe` slice whose contract says when a
/// Rust reference to the bytes is sound.
pub struct WriteWindow<'a> {
    guard: WriteGuard<'a>,
    len: usize,
    endpoint: &'a Endpoint,
    mirror: &'a MirroredMap,
}

impl WriteWindow<'_> {
    /// Bytes in the window (at least the `min` asked for).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window has no bytes (never: a window holds `min` >= 1).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte; `len()` bytes from here are writable and
    /// contiguous. Write through it with raw-pointer copies (or a system
    /// call that fills memory) only, not through a reference, unless the
    /// contract of [`as_mut_slice`](Self::as_mut_slice) holds.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.guard.as_mut_ptr()
    }

    /// Copies `src` into the window from `offset`, as much as fits;
    /// returns how many bytes. Copies word by word with atomic stores, so
    /// that even a peer that breaks the protocol cannot make it a data
    /// race.
    pub fn copy_from(&mut self, offset: usize, src: &[u8]) -> usize {
        let n = src.len().min(self.len.saturating_sub(offset));
        self.guard.write_at(offset, &src[..n])
    }

    /// The window as a mutable slice, for code that wants one (a decoder
    /// writing frames in place, `Read::read` into it).
    ///
    /// # Safety
    ///
    /// No other process may read or write these bytes while the slice
    /// lives. Endpoints of this crate never do: the writer lock keeps
    /// other writers out, and readers never look past the published
    /// bytes. So the contract is that every process that can write the
    /// segment (its owner's, given the default mode 0600) runs only
    /// ipcring endpoints on it, or code that keeps the same rules. A
    /// process that scribbles over the bytes meanwhile makes the slice
    /// change under Rust's feet, which is undefined behaviour.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes from the pointer are mapped, writable and
        // contiguous (the mirror), and ours under the lock; the caller
        // vouches that no other process touches them meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.guard.as_mut_ptr(), self.len) }
    }

    /// Publishes the first `n` bytes (`InvalidInput` if `n > len()`; the
    /// lock is released and nothing is published) and releases the lock.
    /// `InvalidData` if the segment's file was truncated under us: the
    /// bytes went to private memory nobody else sees.
    pub fn commit(self, n: usize) -> io::Result<()> {
        if n > self.len {
            return Err(invalid_input("commit beyond the window"));
        }
        let WriteWindow {
            guard,
            endpoint,
            mirror,
            ..
        } = self;
        guard.commit(n).map_err(corrupted)?;
        if truncated(endpoint, mirror) {
            return Err(corrupted(TRUNCATED));
        }
        Ok(())
    }
}

/// The reading end. Any number of readers may share a stream (31 at a
/// time), each byte going to one of them.
pub struct Reader {
    ring: StreamConsumer,
    mirror: MirroredMap,
    settings: Settings,
    writers: PeerWatch,
    /// What `BufRead::fill_buf` took out of the stream and `consume` has
    /// not passed yet: consumed from the stream, so this process's to lose.
    buffer: ReadBuffer,
    // Last: the ring and the mirror point into memory it keeps mapped.
    endpoint: Endpoint,
}

#[derive(Default)]
struct ReadBuffer {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    fn pending(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Copies pending bytes into `out`; returns how many.
    fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.bytes[self.start..self.start + n]);
        self.start += n;
        n
    }
}

impl Reader {
    /// Creates a named stream of `capacity` bytes and attaches as a reader.
    pub fn create(
        address: &Address,
        capacity: usize,
        options: &ChannelOptions,
    ) -> Result<Reader, ChannelError> {
        let segment = create_segment(Some(address), capacity, options)?;
        unname_on_error(address, Reader::attach_with(segment, options.strategy))
    }

    /// Opens a named stream as a reader.
    pub fn open(address: &Address) -> Result<Reader, ChannelError> {
        Reader::attach(super::open_segment(address, KIND)?)
    }

    /// Attaches to a stream segment (named, or a memfd received or
    /// inherited).
    pub fn attach(segment: Segment) -> Result<Reader, ChannelError> {
        Reader::attach_with(segment, WaitStrategy::default())
    }

    fn attach_with(segment: Segment, strategy: WaitStrategy) -> Result<Reader, ChannelError> {
        let mut attached = attach(segment, Role::Consumer, strategy)?;
        // SAFETY: as in `Writer::attach_with`, for readers.
        let ring = unsafe {
            StreamConsumer::attach(attached.region, attached.data, attached.endpoint.id())?
        };
        ring.count_attach();
        // The count first, then the slots: see `PeerWatch`. Bytes waiting
        // were written by a writer that came before us, perhaps gone
        // already: its end is ours to read (a corrupt pair of counters
        // counts as nothing waiting; reads report it).
        let attaches_then = ring.writer_attaches();
        let waiting = ring.available().is_ok_and(|n| n > 0);
        // Bytes left by writers that have all gone are ours to drain, then
        // end of stream (the channel layer's rule for leftovers).
        attached.endpoint.note_leftovers(waiting);
        let writers = PeerWatch {
            attaches_then,
            seen: attached.endpoint.peers_present() || waiting,
        };
        Ok(Reader {
            ring,
            mirror: attached.mirror,
            settings: Settings::default(),
            writers,
            buffer: ReadBuffer::default(),
            endpoint: attached.endpoint,
        })
    }

    /// Bytes the stream holds at most.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// The slow check, reaping dead endpoints first (at most every 50 ms):
    /// every writer this reader has seen is gone.
    #[cold]
    fn writers_gone_or_dead(&mut self) -> bool {
        if !self.endpoint.peer_gone_or_dead() {
            return false;
        }
        self.writers.seen = self.writers.seen_by_now(self.ring.writer_attaches());
        self.writers.seen
    }

    /// Whether a writer came (while this reader was attached, or before:
    /// still there, or its bytes waiting) and every writer has left or
    /// been found dead: once the bytes are drained, reads return the end
    /// of the stream.
    pub fn is_disconnected(&mut self) -> bool {
        self.writers_gone_or_dead()
    }

    /// Bytes a `read` could return now without waiting: those in the stream
    /// (a hint: writers and other readers move on at once) and those
    /// `BufRead` already took out of it for this reader.
    pub fn available(&self) -> io::Result<usize> {
        let waiting = self.ring.available().map_err(corrupted)?;
        Ok(waiting + self.buffer.pending().len())
    }

    /// Whether `read` (and [`read_window`](Self::read_window)) return
    /// `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&mut self, nonblocking: bool) {
        self.settings.nonblocking = nonblocking;
    }

    /// See [`set_nonblocking`](Self::set_nonblocking).
    pub fn is_nonblocking(&self) -> bool {
        self.settings.nonblocking
    }

    /// How long a blocking `read` waits for data before `TimedOut`; `None`
    /// (the default) waits for ever. A zero timeout is `InvalidInput`.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.settings.set_timeout(timeout)
    }

    /// See [`set_timeout`](Self::set_timeout).
    pub fn timeout(&self) -> Option<Duration> {
        self.settings.timeout
    }

    /// Reads without waiting: `WouldBlock` if the stream is empty (or has
    /// never had a writer), `Ok(0)` at the end of the stream.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(buf, Patience::Now)
    }

    /// Reads, waiting for data at most `timeout`: `TimedOut` if none came.
    pub fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.read_with(buf, Patience::after(timeout))
    }

    fn read_with(&mut self, buf: &mut [u8], patience: Patience) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.buffer.pending().is_empty() {
            return Ok(self.buffer.take(buf));
        }
        self.read_direct(buf, patience)
    }

    /// Reads from the stream itself into `out` (not empty).
    fn read_direct(&mut self, out: &mut [u8], patience: Patience) -> io::Result<usize> {
        let mut writers_gone = false;
        loop {
            match self.read_once(out, patience)? {
                Some(0) => {}
                Some(n) => return Ok(n),
                None => return Err(patience.expired()),
            }
            if writers_gone {
                // Empty at a last look after every writer had gone.
                return Ok(0);
            }
            check_intact(&self.endpoint, &self.mirror)?;
            if self.writers_gone_or_dead() {
                // The last writer's leaving (Release) was seen (Acquire):
                // one more look finds everything it wrote.
                writers_gone = true;
                continue;
            }
            let Patience::Until(deadline) = patience else {
                return Err(patience.expired());
            };
            let Some(until) = self.endpoint.slice(deadline) else {
                return Err(patience.expired());
            };
            self.wait_for_data(1, until);
        }
    }

    /// Sleeps until `min` bytes are waiting, the writers are gone, or the
    /// slice ends.
    fn wait_for_data(&self, min: usize, until: Deadline) {
        let (peers, watch, ring) = (self.endpoint.peers(), self.writers, &self.ring);
        ring.wait_for_data(min, self.endpoint.strategy(), Some(until), || {
            peers.is_gone() && watch.seen_by_now(ring.writer_attaches())
        });
    }

    /// One turn of the lock: copies out what is waiting, up to `out.len()`;
    /// `Some(0)` if nothing is. `None`: patience ran out waiting for the
    /// lock.
    #[inline]
    fn read_once(&mut self, out: &mut [u8], patience: Patience) -> io::Result<Option<usize>> {
        // Empty needs no lock: spinning readers do not hammer it.
        if self.ring.available().map_err(corrupted)? == 0 {
            return Ok(Some(0));
        }
        let Reader {
            ring,
            mirror,
            endpoint,
            ..
        } = self;
        if !ring.try_acquire()
            && !wait_for_lock(endpoint, mirror, patience, |s, d| ring.acquire(s, d))?
        {
            return Ok(None);
        }
        let mut guard = ring.try_lock().ok_or_else(lock_lost)?;
        let waiting = guard.available(1).map_err(corrupted)?;
        let n = out.len().min(waiting);
        let n = guard.read_at(0, &mut out[..n]);
        guard.consume(n).map_err(corrupted)?;
        if n > 0 && truncated(endpoint, mirror) {
            // Copied from private zeros, not from the stream.
            return Err(corrupted(TRUNCATED));
        }
        Ok(Some(n))
    }

    /// The waiting bytes, contiguous, once at least `min` (1 to `capacity`)
    /// are waiting, or fewer at the end of the stream (an empty window is
    /// the end). Copy out what you need and [`consume`](ReadWindow::consume)
    /// it. Waits as `read` does (`set_nonblocking`, `set_timeout`). Bytes
    /// `BufRead` already buffered are not in the window: do not mix the
    /// two on one reader.
    ///
    /// The window holds the reader lock until it is consumed or dropped:
    /// other readers wait meanwhile. If this process dies holding it, the
    /// lock is taken back and its bytes go to the next reader.
    pub fn read_window(&mut self, min: usize) -> io::Result<ReadWindow<'_>> {
        let patience = self.settings.patience();
        self.window_with(min, patience)
    }

    /// [`read_window`](Self::read_window) without waiting: `WouldBlock`.
    pub fn try_read_window(&mut self, min: usize) -> io::Result<ReadWindow<'_>> {
        self.window_with(min, Patience::Now)
    }

    /// [`read_window`](Self::read_window), waiting at most `timeout`.
    pub fn read_window_timeout(
        &mut self,
        min: usize,
        timeout: Duration,
    ) -> io::Result<ReadWindow<'_>> {
        self.window_with(min, Patience::after(timeout))
    }

    fn window_with(&mut self, min: usize, patience: Patience) -> io::Result<ReadWindow<'_>> {
        if min == 0 || min > self.capacity() {
            return Err(invalid_input(
                "a read window asks for 1 byte to the stream's capacity",
            ));
        }
        let mut writers_gone = false;
        loop {
            if self.ring.available().map_err(corrupted)? >= min || writers_gone {
                let Reader {
                    ring,
                    mirror,
                    endpoint,
                    ..
                } = self;
                if !ring.try_acquire()
                    && !wait_for_lock(endpoint, mirror, patience, |s, d| ring.acquire(s, d))?
                {
                    return Err(patience.expired());
                }
                // Under the lock `head` stands still and `tail` only grows.
                if ring.available().map_err(corrupted)? >= min || writers_gone {
                    break;
                }
                ring.release_leaked_lock();
            }
            check_intact(&self.endpoint, &self.mirror)?;
            if self.writers_gone_or_dead() {
                writers_gone = true;
                continue;
            }
            let Patience::Until(deadline) = patience else {
                return Err(patience.expired());
            };
            let Some(until) = self.endpoint.slice(deadline) else {
                return Err(patience.expired());
            };
            self.wait_for_data(min, until);
        }
        let Reader {
            ring,
            mirror,
            endpoint,
            ..
        } = self;
        let mut guard = ring.try_lock().ok_or_else(lock_lost)?;
        // Everything waiting, not just what the cached `tail` shows.
        guard.available(usize::MAX).map_err(corrupted)?;
        let len = guard.contiguous();
        Ok(ReadWindow {
            guard,
            len,
            endpoint,
            mirror,
        })
    }
}

impl Read for Reader {
    /// Reads what is waiting (at least one byte), waiting while the stream
    /// is empty (or returns `WouldBlock` or `TimedOut`, as set); `Ok(0)`
    /// once every writer has gone and the stream is drained.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let patience = self.settings.patience();
        self.read_with(buf, patience)
    }
}

impl BufRead for Reader {
    /// Takes up to 64 KiB out of the stream into a private buffer, when it
    /// is empty. Those bytes are consumed from the stream: if this process
    /// dies before using them, they are lost with it.
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.buffer.pending().is_empty() {
            let mut bytes = std::mem::take(&mut self.buffer.bytes);
            if bytes.is_empty() {
                bytes = vec![0; READ_BUFFER.min(self.capacity())];
            }
            let patience = self.settings.patience();
            let read = self.read_direct(&mut bytes, patience);
            self.buffer = ReadBuffer {
                bytes,
                start: 0,
                end: 0,
            };
            self.buffer.end = read?;
        }
        Ok(self.buffer.pending())
    }

    fn consume(&mut self, amount: usize) {
        self.buffer.start = (self.buffer.start + amount).min(self.buffer.end);
    }
}

/// Waiting bytes of a stream, held for one reader: see
/// [`Reader::read_window`]. The bytes are contiguous in memory.
pub struct ReadWindow<'a> {
    guard: ReadGuard<'a>,
    len: usize,
    endpoint: &'a Endpoint,
    mirror: &'a MirroredMap,
}

impl ReadWindow<'_> {
    /// Bytes in the window; 0 only at the end of the stream.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty: the end of the stream.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte; `len()` bytes from here are readable and contiguous.
    /// Read through it with raw-pointer copies only, unless the contract
    /// of [`as_slice`](Self::as_slice) holds.
    pub fn as_ptr(&self) -> *const u8 {
        self.guard.as_ptr()
    }

    /// Copies window bytes from `offset` into `out`, as many as fit;
    /// returns how many. Word-sized atomic loads: a peer that breaks the
    /// protocol can tear the bytes, not make it a data race.
    pub fn copy_to(&self, offset: usize, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len.saturating_sub(offset));
        self.guard.read_at(offset, &mut out[..n])
    }

    /// The window as a slice, to parse or hand on in place.
    ///
    /// # Safety
    ///
    /// No other process may write these bytes while the slice lives.
    /// Endpoints of this crate never do: writers only write free space,
    /// and these bytes stay unfree until we consume them. So, as for
    /// [`WriteWindow::as_mut_slice`], every process that can write the
    /// segment must run only ipcring endpoints on it, or code that keeps
    /// the same rules.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes from the pointer are mapped and contiguous
        // (the mirror), and published; the caller vouches that nobody
        // writes them meanwhile.
        unsafe { std::slice::from_raw_parts(self.guard.as_ptr(), self.len) }
    }

    /// Consumes the first `n` bytes (`InvalidInput` if `n > len()`: nothing
    /// is consumed) and releases the lock. `InvalidData` if the segment's
    /// file was truncated under us: the bytes read were private zeros.
    pub fn consume(self, n: usize) -> io::Result<()> {
        if n > self.len {
            return Err(invalid_input("consume beyond the window"));
        }
        let ReadWindow {
            guard,
            endpoint,
            mirror,
            ..
        } = self;
        guard.consume(n).map_err(corrupted)?;
        if truncated(endpoint, mirror) {
            return Err(corrupted(TRUNCATED));
        }
        Ok(())
    }
}

/// Two streams, one each way, held as one endpoint: like a socketpair's
/// end. Reads come from one stream and writes go to the other.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use ipcring::channel::stream::Duplex;
/// use ipcring::channel::ChannelOptions;
///
/// let (mut a, b) = Duplex::pair(64 * 1024, &ChannelOptions::new())?;
/// let echo = std::thread::spawn(move || {
///     let (reader, mut writer) = b.into_split();
///     for line in BufReader::new(reader).lines() {
///         writeln!(writer, "echo: {}", line.unwrap()).unwrap();
///     }
/// });
/// writeln!(a, "hi")?;
/// let mut reply = String::new();
/// a.read_line(&mut reply)?;
/// assert_eq!(reply, "echo: hi\n");
/// drop(a); // b reads the end of its stream and its thread returns
/// echo.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Duplex {
    reader: Reader,
    writer: Writer,
}

impl Duplex {
    /// Two ends over two anonymous streams of `capacity` bytes each, both
    /// in this process, for threads (for a child, see
    /// [`attach`](Self::attach)).
    pub fn pair(
        capacity: usize,
        options: &ChannelOptions,
    ) -> Result<(Duplex, Duplex), ChannelError> {
        let (a_reader, b_writer) = pipe(capacity, options)?;
        let (b_reader, a_writer) = pipe(capacity, options)?;
        Ok((
            Duplex {
                reader: a_reader,
                writer: a_writer,
            },
            Duplex {
                reader: b_reader,
                writer: b_writer,
            },
        ))
    }

    /// One end over two stream segments: it reads from `inbound` and writes
    /// to `outbound`. For a child, create both with [`create_segment`]
    /// (`None`), attach the parent's end as `attach(a, b)`, hand the child
    /// both descriptors ([`Segment::inheritable_fd`]) and let it attach as
    /// `attach(b, a)`.
    pub fn attach(inbound: Segment, outbound: Segment) -> Result<Duplex, ChannelError> {
        Ok(Duplex {
            reader: Reader::attach(inbound)?,
            writer: Writer::attach(outbound)?,
        })
    }

    /// The reading half.
    pub fn reader(&mut self) -> &mut Reader {
        &mut self.reader
    }

    /// The writing half.
    pub fn writer(&mut self) -> &mut Writer {
        &mut self.writer
    }

    /// The two halves, to use from two threads.
    pub fn into_split(self) -> (Reader, Writer) {
        (self.reader, self.writer)
    }

    /// Sets both halves nonblocking (or not).
    pub fn set_nonblocking(&mut self, nonblocking: bool) {
        self.reader.set_nonblocking(nonblocking);
        self.writer.set_nonblocking(nonblocking);
    }

    /// See [`Reader::set_timeout`].
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.set_timeout(timeout)
    }

    /// See [`Writer::set_timeout`].
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.writer.set_timeout(timeout)
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl BufRead for Duplex {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.reader.consume(amount)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What both ends share besides their side's checks (which follow the
/// ends' `PeerWatch`, unlike other channels' `is_disconnected`), and
/// leaving on drop: a leaked window's lock released, the slot freed, the
/// other side woken so that it sees the departure at once.
macro_rules! stream_endpoint {
    ($end:ident, $wake:ident) => {
        impl $end {
            /// How blocking operations wait.
            pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
                self.endpoint.set_strategy(strategy);
            }

            /// The segment, e.g. to send an anonymous stream's memfd to
            /// another process.
            pub fn segment(&self) -> &Segment {
                self.endpoint.segment()
            }

            /// Locks taken back from endpoints that died holding them.
            pub fn stats(&self) -> super::ChannelStats {
                self.endpoint.stats()
            }
        }

        impl Drop for $end {
            fn drop(&mut self) {
                self.ring.release_leaked_lock();
                self.endpoint.leave();
                self.ring.$wake();
            }
        }
    };
}

stream_endpoint!(Writer, wake_consumers);
stream_endpoint!(Reader, wake_producers);

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("capacity", &self.capacity())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("capacity", &self.capacity())
            .field("settings", &self.settings)
            .field("buffered", &self.buffer.pending().len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Duplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Duplex")
            .field("reader", &self.reader)
            .field("writer", &self.writer)
            .finish()
    }
}

impl std::fmt::Debug for WriteWindow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteWindow")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ReadWindow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadWindow")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}
