//! A byte stream: many writers and many readers share one buffer of bytes,
//! with no message boundaries, the way a pipe does.
//!
//! Two counters say everything: `tail`, the bytes ever written, and
//! `head`, the bytes ever read, both `u64`s that only grow. Byte `i` of the
//! stream lives at `i % capacity` of the data area, so `tail - head` bytes
//! are waiting (`0..=capacity`) and the rest is free. Writers exclude one
//! another with one [`JournalLock`] and readers with another. The holder
//! copies its bytes, then moves its counter with one Release store: that
//! store is the whole publication, so a holder that dies before it changed
//! nothing anyone can see, and one that dies after it had finished. The
//! lock word names its holder ([`owner_token`] of its side and claimer id),
//! so the layer above, which learns from the kernel that a claimer died,
//! takes the lock back with [`StreamRepair::release_dead`]. No journal
//! entries are needed: the update is a single word.
//!
//! The data area is not in the [`Region`]: the layer above maps it and
//! hands it over as a [`DataArea`]. Mirrored (the same memory mapped twice,
//! back to back), any `capacity` bytes from any position are contiguous,
//! which is what the zero-copy windows need; linear (heap memory in tests,
//! Miri and loom), copies split at the end and windows stop there.
//!
//! ```
//! use std::ptr::NonNull;
//! use ipcring::ring::HeapRegion;
//! use ipcring::ring::stream::{
//!     CONTROL_SIZE, DataArea, StreamConsumer, StreamProducer, StreamRing,
//! };
//!
//! let capacity = 64;
//! let heap = HeapRegion::new(StreamRing::required_size(capacity, CONTROL_SIZE)?)?;
//! let region = heap.region();
//! let data = NonNull::new(region.as_ptr().wrapping_add(CONTROL_SIZE)).unwrap();
//! // SAFETY: fresh heap memory that outlives both handles, its data area
//! // after the control block; one writer and one reader.
//! let (mut tx, mut rx) = unsafe {
//!     StreamRing::init(region, capacity, CONTROL_SIZE)?;
//!     let data = DataArea::linear(data, capacity);
//!     (StreamProducer::attach(region, data, 0)?, StreamConsumer::attach(region, data, 0)?)
//! };
//! let mut guard = tx.try_lock().unwrap(); // the writer lock
//! let n = guard.write_at(0, b"bytes");
//! guard.commit(n)?; // one Release store of `tail`, then unlock
//!
//! let mut guard = rx.try_lock().unwrap(); // the reader lock
//! let mut out = [0u8; 5];
//! assert_eq!(guard.available(5)?, 5);
//! guard.read_at(0, &mut out);
//! guard.consume(5)?;
//! assert_eq!(&out, b"bytes");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! It makes no OS call, never learns a segment's name, and treats both
//! counters as untrusted: a pair further apart than `capacity` is
//! [`Corruption`], and every position is reduced modulo `capacity` before
//! use.
//!
//! Layout of the region (offsets for x86_64, where a cache line is padded
//! to 128 bytes):
//!
//! | offset | field         | written by        | meaning |
//! |--------|---------------|-------------------|---------|
//! | 0      | `info`        | creator           | [`RingInfo`]: magic `STRMRING`, capacity in bytes (1..=[`MAX_CAPACITY`]), slot size and alignment 1, flags = the data area's offset in the region |
//! | 128    | `tail`        | writer-lock holder | bytes ever written; `tail - head` in `0..=capacity` |
//! | 256    | `head`        | reader-lock holder | bytes ever read |
//! | 384    | `data_ready`  | both              | readers sleep here; writers notify |
//! | 512    | `space_ready` | both              | writers sleep here; readers notify |
//! | 640    | writer lock   | writers, reapers  | [`JournalLock`]: 0 free, else the holder's token |
//! | 1152   | reader lock   | readers, reapers  | the same for readers |
//! | 1664   | `repairs`     | reapers           | locks taken back from dead holders, ever |
//! | 1672   | `writer_attaches` | each writer, once | writers that ever attached |
//! | 1680   | `reader_attaches` | each reader, once | readers that ever attached |
//! | 1792   | ([`CONTROL_SIZE`]) | | the data area starts at the offset in `info.flags`, at least here |

use std::ptr::NonNull;

use crossbeam_utils::CachePadded;

use super::claims::{MAX_CLAIMERS, Side};
use super::journal::{JOURNAL_LOCK_SIZE, JournalLock, Released, owner_token};
use super::{Corruption, Region, RingCounters, RingError, RingHeader, RingInfo, check_region};
use crate::sync::shim::{AtomicU64, Ordering};
use crate::sync::{Deadline, WaitStrategy};

/// The magic word of a stream ring.
pub const MAGIC: u64 = u64::from_le_bytes(*b"STRMRING");

/// The largest data area (1 GiB). A mirrored area reserves twice this much
/// address space.
pub const MAX_CAPACITY: usize = 1 << 30;

const LINE: usize = std::mem::align_of::<CachePadded<u8>>();
const WRITER_LOCK: usize = std::mem::size_of::<RingHeader>().next_multiple_of(LINE);
const READER_LOCK: usize = (WRITER_LOCK + JOURNAL_LOCK_SIZE).next_multiple_of(LINE);
const COUNTERS: usize = (READER_LOCK + JOURNAL_LOCK_SIZE).next_multiple_of(LINE);

/// Bytes of the control block at the start of the region; the data area
/// may start at any 8-aligned offset from here.
pub const CONTROL_SIZE: usize = (COUNTERS + std::mem::size_of::<Counters>()).next_multiple_of(LINE);

/// Counts kept for the layer above, each changed in one atomic step.
#[repr(C)]
struct Counters {
    /// Locks taken back from dead holders, ever.
    repairs: AtomicU64,
    /// Writers that ever attached (each adds 1 once its endpoint holds a
    /// slot), so that a reader can tell whether one came since it did.
    writer_attaches: AtomicU64,
    /// Readers that ever attached; the same for writers.
    reader_attaches: AtomicU64,
}

/// Where a stream's data lives and how large it is, as its creator wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLayout {
    /// Bytes of data area.
    pub capacity: usize,
    /// The data area's offset in the region.
    pub data_offset: usize,
}

/// Sizes, initialises and validates stream rings.
#[derive(Debug)]
pub struct StreamRing;

impl StreamRing {
    /// Bytes of region a stream of `capacity` bytes needs, its data area
    /// starting at `data_offset` (8-aligned, at least [`CONTROL_SIZE`]).
    pub fn required_size(capacity: usize, data_offset: usize) -> Result<usize, RingError> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(RingError::InvalidCapacity {
                capacity,
                reason: "a stream holds 1 byte to 1 GiB",
            });
        }
        if data_offset < CONTROL_SIZE || data_offset % 8 != 0 {
            return Err(RingError::InvalidCapacity {
                capacity,
                reason: "the data area must start after the control block, 8-aligned",
            });
        }
        data_offset
            .checked_add(capacity)
            .ok_or(RingError::InvalidCapacity {
                capacity,
                reason: "the ring would not fit in memory",
            })
    }

    /// Writes an empty stream of `capacity` bytes, its data at
    /// `data_offset`, into `region`.
    ///
    /// # Safety
    ///
    /// Nothing else may access the region while this runs, and no handle
    /// attached to a previous ring in it may be used afterwards.
    pub unsafe fn init(
        region: Region,
        capacity: usize,
        data_offset: usize,
    ) -> Result<(), RingError> {
        let total = Self::required_size(capacity, data_offset)?;
        check_region(&region, total, LINE)?;
        let header = RingHeader::new(RingInfo::new(
            MAGIC,
            capacity as u64,
            1,
            1,
            data_offset as u64,
        ));
        // SAFETY: the region holds at least CONTROL_SIZE bytes aligned to a
        // cache line (checked above), and nothing else accesses it now.
        unsafe {
            region.as_ptr().cast::<RingHeader>().write(header);
            JournalLock::init(&region, WRITER_LOCK)?;
            JournalLock::init(&region, READER_LOCK)?;
            region
                .as_ptr()
                .add(COUNTERS)
                .cast::<Counters>()
                .write(Counters {
                    repairs: AtomicU64::new(0),
                    writer_attaches: AtomicU64::new(0),
                    reader_attaches: AtomicU64::new(0),
                });
        }
        Ok(())
    }

    /// The stream's capacity and data offset, after checking the magic and
    /// that the data area lies in the region.
    pub fn layout(region: &Region) -> Result<StreamLayout, RingError> {
        let (_, capacity, data_offset) =
            RingHeader::attach(region, CONTROL_SIZE, LINE, (MAGIC, 1, 1))?;
        if capacity == 0 || capacity > MAX_CAPACITY as u64 {
            return Err(Corruption {
                field: "capacity",
                value: capacity,
            }
            .into());
        }
        let fits = data_offset >= CONTROL_SIZE as u64
            && data_offset % 8 == 0
            && data_offset
                .checked_add(capacity)
                .is_some_and(|end| end <= region.len() as u64);
        if !fits {
            return Err(Corruption {
                field: "stream data offset",
                value: data_offset,
            }
            .into());
        }
        Ok(StreamLayout {
            capacity: capacity as usize,
            data_offset: data_offset as usize,
        })
    }
}

/// The repair count of the stream ring at the start of `region`, read
/// without attaching; `None` if the region holds no stream ring.
pub(crate) fn repairs_of(region: &Region) -> Option<u64> {
    if region.len() < CONTROL_SIZE || region.as_ptr() as usize % LINE != 0 {
        return None;
    }
    // SAFETY: large and aligned enough (checked above); made of atomics,
    // valid for any bytes; we only load.
    let header = unsafe { &*region.as_ptr().cast::<RingHeader>() };
    // Relaxed: the creator published the region before anyone found it.
    if header.info.magic.load(Ordering::Relaxed) != MAGIC {
        return None;
    }
    // SAFETY: in bounds (CONTROL_SIZE) and aligned (a line boundary).
    let counters = unsafe { &*region.as_ptr().add(COUNTERS).cast::<Counters>() };
    // Relaxed: a statistic.
    Some(counters.repairs.load(Ordering::Relaxed))
}

/// The totals of the stream ring at the start of `region`: `tail` counts
/// the bytes written; a stream has no messages. Loads only.
pub(crate) fn counters_of(region: &Region) -> Option<RingCounters> {
    if region.len() < CONTROL_SIZE {
        return None;
    }
    // SAFETY: the RingHeader itself; we only load.
    let header = unsafe { RingHeader::peek::<RingHeader>(region, MAGIC)? };
    // SAFETY: the region holds a stream's control block (its magic, and
    // CONTROL_SIZE bytes, checked above), whose locks sit at these offsets;
    // made of atomics, valid for any bytes; we only load.
    let (writer_lock, reader_lock) = unsafe {
        (
            JournalLock::at(region, WRITER_LOCK).ok()?,
            JournalLock::at(region, READER_LOCK).ok()?,
        )
    };
    // SAFETY: in bounds (CONTROL_SIZE) and aligned (a line boundary), as in
    // `repairs_of`.
    let counters = unsafe { &*region.as_ptr().add(COUNTERS).cast::<Counters>() };
    // Relaxed: statistics; each load stands alone.
    let bytes = header.tail.load(Ordering::Relaxed);
    let futex_calls = header
        .futex_calls()
        .wrapping_add(writer_lock.futex_calls())
        .wrapping_add(reader_lock.futex_calls());
    Some(RingCounters {
        items: None,
        bytes: Some(bytes),
        futex_calls,
        repairs: counters.repairs.load(Ordering::Relaxed),
        losses: 0,
    })
}

/// The bytes of a stream, wherever the layer above mapped them.
#[derive(Clone, Copy, Debug)]
pub struct DataArea {
    ptr: NonNull<u8>,
    capacity: usize,
    mirrored: bool,
}

impl DataArea {
    /// `capacity` bytes at `ptr`, mapped a second time right after them:
    /// byte `capacity + i` is byte `i`.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `2 * capacity` bytes, of
    /// which the second `capacity` are the same memory as the first, for as
    /// long as any handle using the area lives; and those bytes must be
    /// reached only through ring handles and raw-pointer copies, never
    /// through Rust references.
    pub unsafe fn mirrored(ptr: NonNull<u8>, capacity: usize) -> DataArea {
        DataArea {
            ptr,
            capacity,
            mirrored: true,
        }
    }

    /// `capacity` bytes at `ptr`, mapped once: copies split at the end,
    /// and windows stop there.
    ///
    /// # Safety
    ///
    /// As for [`mirrored`](Self::mirrored), for `capacity` bytes. Under
    /// loom, `ptr` must point to `capacity` constructed loom `AtomicU8`s.
    pub unsafe fn linear(ptr: NonNull<u8>, capacity: usize) -> DataArea {
        DataArea {
            ptr,
            capacity,
            mirrored: false,
        }
    }

    /// Whether any `capacity` bytes from any position are contiguous.
    pub fn is_mirrored(&self) -> bool {
        self.mirrored
    }

    /// Copies `bytes` to stream position `start` (below `capacity`);
    /// `bytes` holds at most `capacity` bytes.
    #[inline]
    fn store(&self, start: usize, bytes: &[u8]) {
        debug_assert!(start < self.capacity && bytes.len() <= self.capacity);
        let first = if self.mirrored {
            bytes.len()
        } else {
            bytes.len().min(self.capacity - start)
        };
        // SAFETY: mirrored: start + len < 2 * capacity, all mapped; linear:
        // the first part ends at `capacity` at the latest and the second
        // starts at 0 and is shorter than `start`. The caller holds the
        // range (the writer lock, and the bytes are free).
        unsafe {
            super::copy::store_bytes(self.ptr.as_ptr(), start, &bytes[..first]);
            super::copy::store_bytes(self.ptr.as_ptr(), 0, &bytes[first..]);
        }
    }

    /// Copies from stream position `start` (below `capacity`) into `out`
    /// (at most `capacity` bytes).
    #[inline]
    fn load(&self, start: usize, out: &mut [u8]) {
        debug_assert!(start < self.capacity && out.len() <= self.capacity);
        let first = if self.mirrored {
            out.len()
        } else {
            out.len().min(self.capacity - start)
        };
        let (head, rest) = out.split_at_mut(first);
        // SAFETY: in bounds as in `store`; the caller holds the range (the
        // reader lock, and the bytes are published).
        unsafe {
            super::copy::load_bytes(self.ptr.as_ptr(), start, head);
            super::copy::load_bytes(self.ptr.as_ptr(), 0, rest);
        }
    }
}

/// What every handle shares: the control block's words, checked once.
#[derive(Clone, Copy)]
struct Control {
    region: Region,
    header: NonNull<RingHeader>,
    writer_lock: NonNull<JournalLock>,
    reader_lock: NonNull<JournalLock>,
    counters: NonNull<Counters>,
    capacity: u64,
}

impl Control {
    fn attach(region: Region) -> Result<(Control, StreamLayout), RingError> {
        let layout = StreamRing::layout(&region)?;
        // SAFETY: `layout` checked the region holds a stream's control
        // block, made only of atomics, and Region's contract keeps it
        // alive and reached only atomically while handles live.
        let (writer_lock, reader_lock) = unsafe {
            (
                NonNull::from(JournalLock::at(&region, WRITER_LOCK)?),
                NonNull::from(JournalLock::at(&region, READER_LOCK)?),
            )
        };
        let base = region.as_ptr();
        let control = Control {
            region,
            // SAFETY: `base` is the region's non-null start.
            header: unsafe { NonNull::new_unchecked(base.cast()) },
            // SAFETY: COUNTERS < CONTROL_SIZE <= region.len(): in bounds.
            counters: unsafe { NonNull::new_unchecked(base.add(COUNTERS).cast()) },
            writer_lock,
            reader_lock,
            capacity: layout.capacity as u64,
        };
        Ok((control, layout))
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: checked at attach; alive and atomic-only (Region's contract).
        unsafe { self.header.as_ref() }
    }

    fn lock(&self, side: Side) -> &JournalLock {
        let lock = match side {
            Side::Producer => self.writer_lock,
            Side::Consumer => self.reader_lock,
        };
        // SAFETY: as in `header`.
        unsafe { lock.as_ref() }
    }

    fn counters(&self) -> &Counters {
        // SAFETY: as in `header`.
        unsafe { self.counters.as_ref() }
    }

    fn attaches(&self, side: Side) -> &AtomicU64 {
        match side {
            Side::Producer => &self.counters().writer_attaches,
            Side::Consumer => &self.counters().reader_attaches,
        }
    }

    /// `tail - head`, checked: bytes waiting.
    fn distance(&self, tail: u64, head: u64) -> Result<u64, Corruption> {
        let used = tail.wrapping_sub(head);
        if used > self.capacity {
            return Err(Corruption {
                field: "stream counters (tail - head)",
                value: used,
            });
        }
        Ok(used)
    }

    /// Bytes waiting, from both counters as they are now (a hint).
    fn used_now(&self) -> Result<u64, Corruption> {
        let header = self.header();
        // Acquire: pairs with the Release stores in `commit` and `consume`.
        let head = header.head.load(Ordering::Acquire);
        let tail = header.tail.load(Ordering::Acquire);
        // A reader may consume between the two loads: tail read last is
        // never behind head read first, so the distance is at worst stale.
        self.distance(tail, head)
    }

    /// Position `start + offset` reduced into `0..capacity`, for both
    /// below `capacity`.
    fn wrap(&self, start: usize, offset: usize) -> usize {
        let at = start + offset;
        let capacity = self.capacity as usize;
        if at >= capacity { at - capacity } else { at }
    }
}

fn check_claimer(id: u8) -> Result<(), RingError> {
    if usize::from(id) >= MAX_CLAIMERS {
        return Err(RingError::InvalidClaimer { id });
    }
    Ok(())
}

/// A writing end. Any number may exist; they take turns through the writer
/// lock, each with its own claimer id.
pub struct StreamProducer {
    control: Control,
    data: DataArea,
    token: u64,
    /// `head` as last read; only ever behind the real one.
    cached_head: u64,
}

// SAFETY: the handle's accesses to shared memory are atomic or covered by
// the writer lock; it may move between threads like any owner.
unsafe impl Send for StreamProducer {}

impl StreamProducer {
    /// Attaches a writing end with claimer id `id` (below
    /// [`MAX_CLAIMERS`]) to the stream in `region`, whose data is `data`.
    ///
    /// # Safety
    ///
    /// The region's contract ([`Region::new`]) holds, `data` is this
    /// stream's data area, and no other live producer uses `id` on this
    /// ring (the channel layer's endpoint slots guarantee it).
    pub unsafe fn attach(
        region: Region,
        data: DataArea,
        id: u8,
    ) -> Result<StreamProducer, RingError> {
        check_claimer(id)?;
        let (control, layout) = Control::attach(region)?;
        check_data(&data, &layout)?;
        // Acquire: pairs with the readers' Release stores of `head`.
        let cached_head = control.header().head.load(Ordering::Acquire);
        Ok(StreamProducer {
            control,
            data,
            token: owner_token(Side::Producer, id),
            cached_head,
        })
    }

    /// Bytes of data area.
    pub fn capacity(&self) -> usize {
        self.control.capacity as usize
    }

    /// Bytes written and not yet read (a hint: readers move on at once).
    pub fn buffered(&self) -> Result<usize, Corruption> {
        self.control.used_now().map(|used| used as usize)
    }

    /// Free bytes now (a hint: other writers and readers move on at once).
    pub fn free(&self) -> Result<usize, Corruption> {
        self.control
            .used_now()
            .map(|used| (self.control.capacity - used) as usize)
    }

    /// Takes the writer lock if it is free (or already ours: a leaked
    /// guard's lock is taken over, its uncommitted bytes discarded).
    #[inline]
    pub fn try_lock(&mut self) -> Option<WriteGuard<'_>> {
        if !self.try_acquire() {
            return None;
        }
        failpoint!("stream.write.locked", None);
        Some(self.guard())
    }

    /// Takes the writer lock if it is free, without a guard (get it with
    /// [`try_lock`](Self::try_lock), which finds the lock ours); true if
    /// it is ours now.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let lock = self.control.lock(Side::Producer);
        lock.holder() == self.token || lock.try_lock(self.token)
    }

    /// Takes the writer lock, waiting with `strategy` until `deadline`;
    /// false if it passed. Get the guard with [`try_lock`](Self::try_lock)
    /// afterwards. Callers wait in slices and take back the locks of dead
    /// holders between them.
    pub fn acquire(&self, strategy: WaitStrategy, deadline: Option<Deadline>) -> bool {
        let lock = self.control.lock(Side::Producer);
        lock.holder() == self.token || lock.lock(self.token, strategy, deadline)
    }

    fn guard(&mut self) -> WriteGuard<'_> {
        // Acquire: pairs with the Release store of `tail` in the previous
        // holder's `commit` (the lock orders it too, but a holder that died
        // handed the lock over through a reaper).
        let tail = self.control.header().tail.load(Ordering::Acquire);
        let used = tail.wrapping_sub(self.cached_head);
        // A stale cache says "full"; `free` rereads when asked for more.
        let free = self.control.capacity.saturating_sub(used) as usize;
        WriteGuard {
            position: (tail % self.control.capacity) as usize,
            tail,
            free,
            producer: self,
        }
    }

    /// Waits until at least `n` bytes (at most `capacity`) look free, or
    /// `stop()` holds, or the deadline passes; returns whether the wait
    /// ended before the deadline.
    pub fn wait_for_space(
        &self,
        n: usize,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        let capacity = self.control.capacity;
        let n = (n as u64).min(capacity);
        let header = self.control.header();
        header.space_ready.wait_until(strategy, deadline, || {
            // Acquire on `head`: pairs with the Release store in `consume`.
            // A corrupt pair ends the wait; the retry reports it.
            let head = header.head.load(Ordering::Acquire);
            let tail = header.tail.load(Ordering::Relaxed);
            let used = tail.wrapping_sub(head);
            used > capacity || capacity - used >= n || stop()
        })
    }

    /// Counts this writer in `writer_attaches`; call it once, after the
    /// layer above has given the handle its claimer slot.
    pub fn count_attach(&self) {
        // Release: pairs with the Acquire load in `writer_attaches`, so a
        // reader that counts us also sees our slot, taken before.
        self.control
            .attaches(Side::Producer)
            .fetch_add(1, Ordering::Release);
    }

    /// Readers that ever attached.
    pub fn reader_attaches(&self) -> u64 {
        // Acquire: pairs with the Release increment in `count_attach`.
        self.control
            .attaches(Side::Consumer)
            .load(Ordering::Acquire)
    }

    /// Wakes every reader asleep waiting for data (when a writer leaves).
    pub fn wake_consumers(&self) {
        self.control.header().data_ready.notify_all();
    }

    /// Releases the writer lock if this handle holds it (a guard leaked
    /// with `mem::forget`): nothing it had not committed is published.
    pub fn release_leaked_lock(&mut self) {
        let lock = self.control.lock(Side::Producer);
        if lock.holder() == self.token {
            let _ = lock.unlock(self.token);
        }
    }
}

/// The writer lock, held, and the free space after `tail`. Write into it
/// with [`write_at`](Self::write_at) (or through the raw window), then
/// [`commit`](Self::commit) to publish; dropped without a commit, nothing
/// is published and the lock is released.
pub struct WriteGuard<'a> {
    producer: &'a mut StreamProducer,
    /// `tail` when the lock was taken; nobody else moves it meanwhile.
    tail: u64,
    /// `tail % capacity`.
    position: usize,
    /// Free bytes as last computed.
    free: usize,
}

impl WriteGuard<'_> {
    /// Free bytes after `tail`: rereads the readers' counter only when the
    /// cached one shows fewer than `want` (pass 0 for the cached figure).
    #[inline]
    pub fn free(&mut self, want: usize) -> Result<usize, Corruption> {
        if self.free < want {
            self.refresh()?;
        }
        Ok(self.free)
    }

    #[cold]
    fn refresh(&mut self) -> Result<(), Corruption> {
        let control = &self.producer.control;
        // Acquire: pairs with the Release store of `head` in `consume`, so
        // the readers' copies out of those bytes are done before we write.
        let head = control.header().head.load(Ordering::Acquire);
        // Nothing is free while the counters are impossible.
        self.free = 0;
        let used = control.distance(self.tail, head)?;
        self.producer.cached_head = head;
        self.free = (control.capacity - used) as usize;
        Ok(())
    }

    /// `tail`: the stream position of the first free byte.
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// The first free byte. With a mirrored data area all `free` bytes
    /// from here are contiguous; with a linear one, the first
    /// [`contiguous`](Self::contiguous). Reach them only with raw-pointer
    /// copies: other processes map the same memory.
    #[cfg(not(loom))]
    pub fn as_mut_ptr(&self) -> *mut u8 {
        // SAFETY: position < capacity: inside the data area.
        unsafe { self.producer.data.ptr.as_ptr().add(self.position) }
    }

    /// How many free bytes from [`as_mut_ptr`](Self::as_mut_ptr) are
    /// contiguous in memory.
    pub fn contiguous(&self) -> usize {
        if self.producer.data.mirrored {
            self.free
        } else {
            self.free
                .min(self.producer.control.capacity as usize - self.position)
        }
    }

    /// Copies `src` into the free space from `offset`, as much as fits;
    /// returns how many bytes.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> usize {
        let n = src.len().min(self.free.saturating_sub(offset));
        if n == 0 {
            return 0;
        }
        // In two halves, so that tests can stop a writer in the middle.
        let (first, second) = src[..n].split_at(n / 2);
        let data = self.producer.data;
        let control = &self.producer.control;
        data.store(control.wrap(self.position, offset), first);
        failpoint!("stream.write.copying", first.len());
        data.store(control.wrap(self.position, offset + first.len()), second);
        n
    }

    /// Publishes the first `n` free bytes (at most `free`) with one Release
    /// store of `tail`, wakes sleeping readers, and releases the lock. An
    /// error if the lock word no longer names us (scribbled over): the
    /// bytes are published all the same.
    pub fn commit(self, n: usize) -> Result<(), Corruption> {
        // Not dropped: the lock is released below (or, at a failpoint, kept
        // as a dead process would keep it).
        let this = std::mem::ManuallyDrop::new(self);
        let n = n.min(this.free) as u64;
        let producer = &*this.producer;
        let header = producer.control.header();
        failpoint!("stream.write.copied", Ok(()));
        if n > 0 {
            // Release: pairs with the Acquire loads of `tail` by readers, so
            // the bytes written above are visible before they count.
            header
                .tail
                .store(this.tail.wrapping_add(n), Ordering::Release);
            failpoint!("stream.write.published", Ok(()));
            header.data_ready.notify_all();
        }
        producer.control.lock(Side::Producer).unlock(producer.token)
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // An error means the word was scribbled; nothing to do about it here.
        let _ = self
            .producer
            .control
            .lock(Side::Producer)
            .unlock(self.producer.token);
    }
}

/// A reading end. Any number may exist; they take turns through the reader
/// lock, each byte going to one of them.
pub struct StreamConsumer {
    control: Control,
    data: DataArea,
    token: u64,
    /// `tail` as last read; only ever behind the real one.
    cached_tail: u64,
}

// SAFETY: as for StreamProducer.
unsafe impl Send for StreamConsumer {}

impl StreamConsumer {
    /// Attaches a reading end with claimer id `id`.
    ///
    /// # Safety
    ///
    /// As for [`StreamProducer::attach`], for consumers.
    pub unsafe fn attach(
        region: Region,
        data: DataArea,
        id: u8,
    ) -> Result<StreamConsumer, RingError> {
        check_claimer(id)?;
        let (control, layout) = Control::attach(region)?;
        check_data(&data, &layout)?;
        // Acquire: pairs with the writers' Release stores of `tail`.
        let cached_tail = control.header().tail.load(Ordering::Acquire);
        Ok(StreamConsumer {
            control,
            data,
            token: owner_token(Side::Consumer, id),
            cached_tail,
        })
    }

    /// Bytes of data area.
    pub fn capacity(&self) -> usize {
        self.control.capacity as usize
    }

    /// Bytes waiting to be read (a hint: writers and other readers move on
    /// at once).
    #[inline]
    pub fn available(&self) -> Result<usize, Corruption> {
        self.control.used_now().map(|used| used as usize)
    }

    /// Takes the reader lock if it is free (or already ours, from a leaked
    /// guard).
    #[inline]
    pub fn try_lock(&mut self) -> Option<ReadGuard<'_>> {
        if !self.try_acquire() {
            return None;
        }
        failpoint!("stream.read.locked", None);
        Some(self.guard())
    }

    /// Takes the reader lock if it is free, without a guard; as for
    /// [`StreamProducer::try_acquire`].
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let lock = self.control.lock(Side::Consumer);
        lock.holder() == self.token || lock.try_lock(self.token)
    }

    /// Takes the reader lock, waiting with `strategy` until `deadline`;
    /// false if it passed. As for [`StreamProducer::acquire`].
    pub fn acquire(&self, strategy: WaitStrategy, deadline: Option<Deadline>) -> bool {
        let lock = self.control.lock(Side::Consumer);
        lock.holder() == self.token || lock.lock(self.token, strategy, deadline)
    }

    fn guard(&mut self) -> ReadGuard<'_> {
        // Acquire: pairs with the Release store of `head` by the previous
        // holder, as for `tail` in `StreamProducer::guard`.
        let head = self.control.header().head.load(Ordering::Acquire);
        let waiting = self.cached_tail.wrapping_sub(head);
        // A cache behind `head` (other readers passed it) says "empty";
        // `available` rereads when asked for more.
        let available = if waiting > self.control.capacity {
            0
        } else {
            waiting as usize
        };
        ReadGuard {
            position: (head % self.control.capacity) as usize,
            head,
            available,
            consumer: self,
        }
    }

    /// Waits until at least `n` bytes (at most `capacity`) are waiting, or
    /// `stop()` holds, or the deadline passes; returns whether the wait
    /// ended before the deadline.
    pub fn wait_for_data(
        &self,
        n: usize,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        let capacity = self.control.capacity;
        let n = (n as u64).clamp(1, capacity);
        let header = self.control.header();
        header.data_ready.wait_until(strategy, deadline, || {
            // Acquire on `tail`: pairs with the Release store in `commit`.
            // A corrupt pair ends the wait; the retry reports it.
            let tail = header.tail.load(Ordering::Acquire);
            let head = header.head.load(Ordering::Relaxed);
            let used = tail.wrapping_sub(head);
            used > capacity || used >= n || stop()
        })
    }

    /// Counts this reader in `reader_attaches`; as for
    /// [`StreamProducer::count_attach`].
    pub fn count_attach(&self) {
        // Release: as in `StreamProducer::count_attach`.
        self.control
            .attaches(Side::Consumer)
            .fetch_add(1, Ordering::Release);
    }

    /// Writers that ever attached.
    pub fn writer_attaches(&self) -> u64 {
        // Acquire: pairs with the Release increment in `count_attach`.
        self.control
            .attaches(Side::Producer)
            .load(Ordering::Acquire)
    }

    /// Wakes every writer asleep waiting for room (when a reader leaves).
    pub fn wake_producers(&self) {
        self.control.header().space_ready.notify_all();
    }

    /// Releases the reader lock if this handle holds it (a leaked guard):
    /// nothing it had not consumed is consumed.
    pub fn release_leaked_lock(&mut self) {
        let lock = self.control.lock(Side::Consumer);
        if lock.holder() == self.token {
            let _ = lock.unlock(self.token);
        }
    }
}

/// The reader lock, held, and the bytes waiting after `head`. Copy them out
/// with [`read_at`](Self::read_at) (or through the raw window), then
/// [`consume`](Self::consume) what was used; dropped without it, nothing is
/// consumed and the lock is released.
pub struct ReadGuard<'a> {
    consumer: &'a mut StreamConsumer,
    /// `head` when the lock was taken; nobody else moves it meanwhile.
    head: u64,
    /// `head % capacity`.
    position: usize,
    /// Bytes waiting as last computed.
    available: usize,
}

impl ReadGuard<'_> {
    /// Bytes waiting after `head`: rereads the writers' counter only when
    /// the cached one shows fewer than `want`.
    #[inline]
    pub fn available(&mut self, want: usize) -> Result<usize, Corruption> {
        if self.available < want {
            self.refresh()?;
        }
        Ok(self.available)
    }

    #[cold]
    fn refresh(&mut self) -> Result<(), Corruption> {
        let control = &self.consumer.control;
        // Acquire: pairs with the Release store of `tail` in `commit`, so
        // the writers' bytes are visible before we copy them.
        let tail = control.header().tail.load(Ordering::Acquire);
        // Nothing is waiting while the counters are impossible.
        self.available = 0;
        let used = control.distance(tail, self.head)?;
        self.consumer.cached_tail = tail;
        self.available = used as usize;
        Ok(())
    }

    /// `head`: the stream position of the first waiting byte.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// The first waiting byte; as for [`WriteGuard::as_mut_ptr`].
    #[cfg(not(loom))]
    pub fn as_ptr(&self) -> *const u8 {
        // SAFETY: position < capacity: inside the data area.
        unsafe { self.consumer.data.ptr.as_ptr().add(self.position) }
    }

    /// How many waiting bytes from [`as_ptr`](Self::as_ptr) are contiguous.
    pub fn contiguous(&self) -> usize {
        if self.consumer.data.mirrored {
            self.available
        } else {
            self.available
                .min(self.consumer.control.capacity as usize - self.position)
        }
    }

    /// Copies waiting bytes from `offset` into `out`, as many as there are;
    /// returns how many.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> usize {
        let n = out.len().min(self.available.saturating_sub(offset));
        if n == 0 {
            return 0;
        }
        let (first, second) = out[..n].split_at_mut(n / 2);
        let data = self.consumer.data;
        let control = &self.consumer.control;
        data.load(control.wrap(self.position, offset), first);
        failpoint!("stream.read.copying", first.len());
        data.load(control.wrap(self.position, offset + first.len()), second);
        n
    }

    /// Consumes the first `n` waiting bytes (at most `available`) with one
    /// Release store of `head`, wakes sleeping writers, and releases the
    /// lock. An error if the lock word no longer names us.
    pub fn consume(self, n: usize) -> Result<(), Corruption> {
        let this = std::mem::ManuallyDrop::new(self);
        let n = n.min(this.available) as u64;
        let consumer = &*this.consumer;
        let header = consumer.control.header();
        failpoint!("stream.read.copied", Ok(()));
        if n > 0 {
            // Release: pairs with the Acquire loads of `head` by writers, so
            // our copies out of these bytes finish before they are reused.
            header
                .head
                .store(this.head.wrapping_add(n), Ordering::Release);
            failpoint!("stream.read.consumed", Ok(()));
            header.space_ready.notify_all();
        }
        consumer.control.lock(Side::Consumer).unlock(consumer.token)
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .consumer
            .control
            .lock(Side::Consumer)
            .unlock(self.consumer.token);
    }
}

fn check_data(data: &DataArea, layout: &StreamLayout) -> Result<(), RingError> {
    if data.capacity != layout.capacity {
        return Err(RingError::Incompatible {
            field: "data area length",
            found: data.capacity as u64,
            expected: layout.capacity as u64,
        });
    }
    Ok(())
}

/// What reapers use: takes a dead claimer's lock back.
pub struct StreamRepair {
    control: Control,
}

// SAFETY: it touches only atomics in the control block.
unsafe impl Send for StreamRepair {}

impl StreamRepair {
    /// A repair handle for the stream in `region`.
    ///
    /// # Safety
    ///
    /// The region's contract ([`Region::new`]) holds.
    pub unsafe fn attach(region: Region) -> Result<StreamRepair, RingError> {
        Ok(StreamRepair {
            control: Control::attach(region)?.0,
        })
    }

    /// Releases the writer lock (`side` producer) or the reader lock
    /// (consumer) if dead claimer `id` holds it; true if it did. What the
    /// holder copied but had not published stays unpublished: the next
    /// writer overwrites it, the next reader reads it again. Sleepers on
    /// both sides are woken, in case the holder died between its
    /// publication and its notify.
    ///
    /// The caller must know that the claimer is dead and be the only one
    /// repairing it (the channel layer's mark on its endpoint slot).
    pub fn release_dead(&self, side: Side, id: u8) -> Result<bool, Corruption> {
        let lock = self.control.lock(side);
        match lock.release_dead(&self.control.region, owner_token(side, id))? {
            Released::NotHeld => Ok(false),
            Released::Released | Released::Replayed(_) => {
                // Relaxed: a statistic.
                self.control
                    .counters()
                    .repairs
                    .fetch_add(1, Ordering::Relaxed);
                let header = self.control.header();
                header.data_ready.notify_all();
                header.space_ready.notify_all();
                Ok(true)
            }
        }
    }

    /// Locks taken back from dead holders, ever.
    pub fn repairs(&self) -> u64 {
        // Relaxed: a statistic.
        self.control.counters().repairs.load(Ordering::Relaxed)
    }

    /// The token of the writer-lock or reader-lock holder now, 0 if free (a
    /// hint, for diagnostics and tests).
    pub fn lock_holder(&self, side: Side) -> u64 {
        self.control.lock(side).holder()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::ring::HeapRegion;

    /// A stream of `capacity` bytes in heap memory, linear.
    struct Heap {
        heap: HeapRegion,
        capacity: usize,
    }

    impl Heap {
        fn new(capacity: usize) -> Heap {
            let size = StreamRing::required_size(capacity, CONTROL_SIZE).unwrap();
            let heap = HeapRegion::new(size).unwrap();
            // SAFETY: fresh memory, not shared yet.
            unsafe { StreamRing::init(heap.region(), capacity, CONTROL_SIZE) }.unwrap();
            Heap { heap, capacity }
        }

        fn data(&self) -> DataArea {
            let ptr = NonNull::new(self.heap.region().as_ptr().wrapping_add(CONTROL_SIZE)).unwrap();
            // SAFETY: the data area of the heap region, which outlives the
            // handles in each test.
            unsafe { DataArea::linear(ptr, self.capacity) }
        }

        fn producer(&self, id: u8) -> StreamProducer {
            // SAFETY: as in `data`; ids are distinct per side in each test.
            unsafe { StreamProducer::attach(self.heap.region(), self.data(), id) }.unwrap()
        }

        fn consumer(&self, id: u8) -> StreamConsumer {
            // SAFETY: as above.
            unsafe { StreamConsumer::attach(self.heap.region(), self.data(), id) }.unwrap()
        }

        fn repair(&self) -> StreamRepair {
            // SAFETY: as above.
            unsafe { StreamRepair::attach(self.heap.region()) }.unwrap()
        }

        fn word(&self, offset: usize) -> &AtomicU64 {
            // SAFETY: in bounds and aligned; the control block's words.
            unsafe { &*self.heap.region().as_ptr().add(offset).cast::<AtomicU64>() }
        }
    }

    fn write(tx: &mut StreamProducer, bytes: &[u8]) -> usize {
        let mut guard = tx.try_lock().unwrap();
        let free = guard.free(bytes.len()).unwrap();
        let n = guard.write_at(0, &bytes[..bytes.len().min(free)]);
        guard.commit(n).unwrap();
        n
    }

    fn read(rx: &mut StreamConsumer, max: usize) -> Vec<u8> {
        let mut guard = rx.try_lock().unwrap();
        let n = guard.available(max).unwrap().min(max);
        let mut out = vec![0; n];
        assert_eq!(guard.read_at(0, &mut out), n);
        guard.consume(n).unwrap();
        out
    }

    #[test]
    fn bytes_go_through_in_order_across_the_end() {
        let heap = Heap::new(10);
        let mut tx = heap.producer(0);
        let mut rx = heap.consumer(0);
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for round in 0..50u8 {
            let chunk: Vec<u8> = (0..(round % 7 + 1))
                .map(|i| round.wrapping_mul(31) ^ i)
                .collect();
            let n = write(&mut tx, &chunk);
            expected.extend_from_slice(&chunk[..n]);
            got.extend(read(&mut rx, (round % 5 + 1) as usize));
        }
        got.extend(read(&mut rx, 10));
        assert_eq!(got, expected);
        assert_eq!(rx.available().unwrap(), 0);
    }

    #[test]
    fn free_and_available_add_up_to_capacity() {
        let heap = Heap::new(16);
        let mut tx = heap.producer(0);
        let mut rx = heap.consumer(0);
        assert_eq!(tx.free().unwrap(), 16);
        assert_eq!(write(&mut tx, &[1; 20]), 16, "a write takes what fits");
        assert_eq!(tx.free().unwrap(), 0);
        assert_eq!(rx.available().unwrap(), 16);
        assert_eq!(tx.buffered().unwrap(), 16);
        assert_eq!(read(&mut rx, 5), vec![1; 5]);
        assert_eq!(tx.free().unwrap(), 5);
        assert_eq!(rx.available().unwrap(), 11);
    }

    #[test]
    fn linear_windows_stop_at_the_end() {
        let heap = Heap::new(8);
        let mut tx = heap.producer(0);
        let mut rx = heap.consumer(0);
        write(&mut tx, &[0; 6]);
        read(&mut rx, 6);
        let mut guard = tx.try_lock().unwrap();
        assert_eq!(guard.free(8).unwrap(), 8);
        assert_eq!(guard.contiguous(), 2);
        assert_eq!(guard.position(), 6);
        drop(guard);
        assert_eq!(
            rx.available().unwrap(),
            0,
            "a dropped guard publishes nothing"
        );
    }

    #[test]
    fn one_writer_at_a_time_and_one_reader_at_a_time() {
        let heap = Heap::new(8);
        let mut a = heap.producer(0);
        let mut b = heap.producer(1);
        let mut r = heap.consumer(0);
        let mut s = heap.consumer(1);
        let guard = a.try_lock().unwrap();
        assert!(b.try_lock().is_none());
        let read_guard = r.try_lock().unwrap();
        assert!(s.try_lock().is_none());
        drop((guard, read_guard));
        assert!(b.try_lock().is_some());
        assert!(s.try_lock().is_some());
    }

    #[test]
    fn a_leaked_guard_is_taken_over_by_its_own_handle() {
        let heap = Heap::new(8);
        let mut tx = heap.producer(3);
        let mut rx = heap.consumer(0);
        let mut guard = tx.try_lock().unwrap();
        guard.write_at(0, b"lost");
        std::mem::forget(guard);
        // The handle takes its own lock over; the leaked bytes were never
        // published and are overwritten.
        assert_eq!(write(&mut tx, b"kept"), 4);
        assert_eq!(read(&mut rx, 8), b"kept");
        let guard = tx.try_lock().unwrap();
        std::mem::forget(guard);
        tx.release_leaked_lock();
        assert_eq!(heap.repair().lock_holder(Side::Producer), 0);
    }

    #[test]
    fn dead_holders_are_released_only_by_their_token() {
        let heap = Heap::new(8);
        let mut tx = heap.producer(2);
        let repair = heap.repair();
        std::mem::forget(tx.try_lock().unwrap());
        assert_eq!(repair.release_dead(Side::Producer, 1), Ok(false));
        assert_eq!(repair.release_dead(Side::Consumer, 2), Ok(false));
        assert_eq!(
            repair.lock_holder(Side::Producer),
            owner_token(Side::Producer, 2)
        );
        assert_eq!(repair.release_dead(Side::Producer, 2), Ok(true));
        assert_eq!(repair.lock_holder(Side::Producer), 0);
        assert_eq!(repair.repairs(), 1);
        assert_eq!(repairs_of(&heap.heap.region()), Some(1));
    }

    #[test]
    fn scribbled_counters_are_corruption_not_a_panic() {
        let heap = Heap::new(8);
        let tail = heap.word(128);
        let head = heap.word(256);
        for (id, (t, h)) in [(100, 0), (0, 1), (u64::MAX, 5), (3, u64::MAX - 100)]
            .into_iter()
            .enumerate()
        {
            tail.store(t, Ordering::Relaxed);
            head.store(h, Ordering::Relaxed);
            // Fresh handles, whose caches hold the scribbled values.
            let mut tx = heap.producer(id as u8);
            let mut rx = heap.consumer(id as u8);
            assert!(tx.free().is_err(), "{t} {h}");
            assert!(rx.available().is_err(), "{t} {h}");
            let mut guard = tx.try_lock().unwrap();
            assert!(guard.free(1).is_err(), "{t} {h}");
            assert_eq!(guard.write_at(0, b"x"), 0, "nothing is free");
            drop(guard);
            let mut guard = rx.try_lock().unwrap();
            assert!(guard.available(1).is_err(), "{t} {h}");
            assert_eq!(guard.read_at(0, &mut [0; 4]), 0);
            drop(guard);
        }
        // Counters far past 2^32 with a sane distance still work.
        tail.store(u64::MAX - 2, Ordering::Relaxed);
        head.store(u64::MAX - 2, Ordering::Relaxed);
        let mut tx = heap.producer(9);
        let mut rx = heap.consumer(9);
        assert_eq!(write(&mut tx, b"wrap"), 4);
        assert_eq!(read(&mut rx, 8), b"wrap");
    }

    #[test]
    fn layouts_are_checked() {
        assert!(StreamRing::required_size(0, CONTROL_SIZE).is_err());
        assert!(StreamRing::required_size(MAX_CAPACITY + 1, CONTROL_SIZE).is_err());
        assert!(StreamRing::required_size(8, CONTROL_SIZE - 8).is_err());
        assert!(StreamRing::required_size(8, CONTROL_SIZE + 4).is_err());
        let heap = Heap::new(64);
        let region = heap.heap.region();
        assert_eq!(
            StreamRing::layout(&region).unwrap(),
            StreamLayout {
                capacity: 64,
                data_offset: CONTROL_SIZE
            }
        );
        // A data offset pointing past the region.
        heap.word(32).store(region.len() as u64, Ordering::Relaxed);
        assert!(StreamRing::layout(&region).is_err());
        heap.word(32).store(CONTROL_SIZE as u64, Ordering::Relaxed);
        heap.word(8).store(1 << 40, Ordering::Relaxed);
        assert!(StreamRing::layout(&region).is_err());
        heap.word(8).store(64, Ordering::Relaxed);
        // SAFETY: the data area handed over is one byte short: refused.
        let short = unsafe {
            StreamProducer::attach(
                region,
                DataArea::linear(NonNull::new(region.as_ptr()).unwrap(), 63),
                0,
            )
        };
        assert!(matches!(short, Err(RingError::Incompatible { .. })));
        // SAFETY: as in Heap::producer; the id is refused first.
        let bad_id = unsafe { StreamProducer::attach(region, heap.data(), 31) };
        assert!(matches!(bad_id, Err(RingError::InvalidClaimer { id: 31 })));
    }

    #[test]
    fn writers_on_threads_never_interleave_within_a_write() {
        const WRITES: usize = if cfg!(miri) { 20 } else { 2000 };
        const LEN: usize = 7;
        let heap = std::sync::Arc::new(Heap::new(32));
        let writers: Vec<_> = (0..3u8)
            .map(|id| {
                let heap = heap.clone();
                std::thread::spawn(move || {
                    let mut tx = heap.producer(id);
                    let record = [id + 1; LEN];
                    for _ in 0..WRITES {
                        loop {
                            if tx.free().unwrap() >= LEN {
                                if let Some(mut guard) = tx.try_lock() {
                                    if guard.free(LEN).unwrap() >= LEN {
                                        guard.write_at(0, &record);
                                        guard.commit(LEN).unwrap();
                                        break;
                                    }
                                }
                            }
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut rx = heap.consumer(0);
        let mut stream = Vec::new();
        while stream.len() < 3 * WRITES * LEN {
            match rx.try_lock() {
                Some(mut guard) => {
                    let n = guard.available(1).unwrap();
                    let mut out = vec![0; n];
                    guard.read_at(0, &mut out);
                    guard.consume(n).unwrap();
                    stream.extend(out);
                }
                None => std::thread::yield_now(),
            }
            std::thread::yield_now();
        }
        for writer in writers {
            writer.join().unwrap();
        }
        for (i, record) in stream.chunks(LEN).enumerate() {
            assert!(
                record.iter().all(|&b| b == record[0]),
                "write {i} torn: {record:?}"
            );
        }
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn a_writer_dead_at_any_step_publishes_all_or_nothing() {
        use crate::failpoint::abandon_at;
        for (step, published) in [
            ("stream.write.locked", false),
            ("stream.write.copying", false),
            ("stream.write.copied", false),
            ("stream.write.published", true),
        ] {
            let heap = Heap::new(16);
            let mut dead = heap.producer(4);
            let mut survivor = heap.producer(5);
            let mut rx = heap.consumer(0);
            write(&mut survivor, b"ab");
            abandon_at(step);
            // The dying writer: whatever step it stops at, it takes no
            // further one (its handle is forgotten, as a dead process's).
            if let Some(mut guard) = dead.try_lock() {
                let n = guard.write_at(0, b"DEAD");
                if n == 4 {
                    let _ = guard.commit(4);
                } else {
                    std::mem::forget(guard);
                }
            }
            assert!(survivor.try_lock().is_none(), "{step}: the lock is held");
            assert_eq!(
                heap.repair().release_dead(Side::Producer, 4),
                Ok(true),
                "{step}"
            );
            write(&mut survivor, b"cd");
            let expected: &[u8] = if published { b"abDEADcd" } else { b"abcd" };
            assert_eq!(read(&mut rx, 16), expected, "{step}");
        }
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn a_reader_dead_at_any_step_leaves_unconsumed_bytes_for_the_next() {
        use crate::failpoint::abandon_at;
        for (step, consumed) in [
            ("stream.read.locked", false),
            ("stream.read.copying", false),
            ("stream.read.copied", false),
            ("stream.read.consumed", true),
        ] {
            let heap = Heap::new(16);
            let mut tx = heap.producer(0);
            let mut dead = heap.consumer(7);
            let mut survivor = heap.consumer(8);
            write(&mut tx, b"abcdef");
            abandon_at(step);
            if let Some(mut guard) = dead.try_lock() {
                let mut out = [0; 4];
                assert_eq!(guard.available(4), Ok(6));
                if guard.read_at(0, &mut out) == 4 {
                    let _ = guard.consume(4);
                } else {
                    std::mem::forget(guard);
                }
            }
            assert!(survivor.try_lock().is_none(), "{step}: the lock is held");
            assert_eq!(
                heap.repair().release_dead(Side::Consumer, 7),
                Ok(true),
                "{step}"
            );
            let expected: &[u8] = if consumed { b"ef" } else { b"abcdef" };
            assert_eq!(read(&mut survivor, 16), expected, "{step}");
        }
    }

    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        #[derive(Clone, Debug)]
        enum Op {
            Write(Vec<u8>),
            Read(usize),
            /// A write guard dropped after writing, without committing.
            AbandonWrite(Vec<u8>),
            /// A read guard dropped after reading, without consuming.
            AbandonRead(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..12).prop_map(Op::Write),
                (0usize..12).prop_map(Op::Read),
                proptest::collection::vec(any::<u8>(), 0..12).prop_map(Op::AbandonWrite),
                (0usize..12).prop_map(Op::AbandonRead),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 }))]

            #[test]
            fn behaves_like_a_bounded_deque(
                capacity in prop_oneof![Just(1usize), Just(2), Just(3), Just(5), Just(8)],
                ops in proptest::collection::vec(op(), 0..60),
            ) {
                let heap = Heap::new(capacity);
                let mut tx = heap.producer(0);
                let mut rx = heap.consumer(0);
                let mut model = VecDeque::new();
                for op in ops {
                    match op {
                        Op::Write(bytes) => {
                            let n = write(&mut tx, &bytes);
                            prop_assert_eq!(n, bytes.len().min(capacity - model.len()));
                            model.extend(&bytes[..n]);
                        }
                        Op::Read(max) => {
                            let got = read(&mut rx, max);
                            let want: Vec<u8> = model.drain(..max.min(model.len())).collect();
                            prop_assert_eq!(got, want);
                        }
                        Op::AbandonWrite(bytes) => {
                            let mut guard = tx.try_lock().unwrap();
                            guard.free(bytes.len()).unwrap();
                            guard.write_at(0, &bytes);
                        }
                        Op::AbandonRead(max) => {
                            let mut guard = rx.try_lock().unwrap();
                            guard.available(max).unwrap();
                            guard.read_at(0, &mut vec![0; max]);
                        }
                    }
                    prop_assert_eq!(rx.available().unwrap(), model.len());
                    prop_assert_eq!(tx.free().unwrap(), capacity - model.len());
                }
            }
        }
    }
}
