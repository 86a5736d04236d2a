//! A wait-free single-producer single-consumer ring of `Pod` slots.
//!
//! Memory layout (offsets for x86_64, where a cache-padded word takes 128
//! bytes):
//!
//! | offset | field         | written by     | meaning |
//! |--------|---------------|----------------|---------|
//! | 0      | `info`        | creator        | [`RingInfo`], magic `SPSCRING` |
//! | 128    | `tail`        | producer only  | items ever pushed; `tail - head` is in `0..=capacity` |
//! | 256    | `head`        | consumer only  | items ever popped |
//! | 384    | `data_ready`  | both           | the consumer sleeps here; the producer notifies |
//! | 512    | `space_ready` | both           | the producer sleeps here; the consumer notifies |
//! | 640    | slots         | producer writes a free slot, consumer reads a full one | `capacity` slots of `T` |
//!
//! `tail` and `head` count items, not slots, and never wrap in practice
//! (2^64 items); each side keeps its own slot position locally, so any
//! capacity works without a division. Each side caches the other's counter
//! and rereads it only when its cache says full or empty.

use std::marker::PhantomData;
use std::ptr::NonNull;

use super::{
    Corruption, Pod, Region, RingCounters, RingError, RingHeader, RingInfo, check_region,
    check_stored_capacity, slotted_layout,
};
use crate::sync::shim::{Ordering, UnsafeCell};
use crate::sync::{Deadline, WaitStrategy};

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SPSCRING");

/// The totals of the SPSC ring at the start of `region`: `tail` counts the
/// items published, each `slot_size` bytes. Loads only.
pub(crate) fn counters_of(region: &Region) -> Option<RingCounters> {
    // SAFETY: `Header` is the RingHeader itself; we only load.
    let header = unsafe { RingHeader::peek::<Header>(region, MAGIC)? };
    // Relaxed: statistics; each load stands alone.
    let items = header.tail.load(Ordering::Relaxed);
    let item_size = header.info.slot_size.load(Ordering::Relaxed);
    Some(RingCounters {
        items: Some(items),
        bytes: Some(items.wrapping_mul(item_size)),
        futex_calls: header.futex_calls(),
        repairs: 0,
        losses: 0,
    })
}

type Header = RingHeader;

type Slot<T> = UnsafeCell<T>;

/// Why an item was not pushed; the item comes back.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError<T> {
    /// Every slot is taken.
    #[error("the ring is full")]
    Full(T),
    /// The consumer's counter is impossible.
    #[error("{1}")]
    Corrupted(T, Corruption),
}

/// Why nothing was popped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// No item is ready.
    #[error("the ring is empty")]
    Empty,
    /// The producer's counter is impossible.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

/// Why a chunk of the requested size is not available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Fewer slots (or items) are available than asked for.
    #[error("only {available} available")]
    TooFew {
        /// How many are available now.
        available: usize,
    },
    /// The other side's counter is impossible.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

impl<T> std::fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Full(_) => f.write_str("Full(..)"),
            PushError::Corrupted(_, c) => write!(f, "Corrupted(.., {c:?})"),
        }
    }
}

/// Sizes and initialises SPSC rings of `T`.
pub struct SpscRing<T>(PhantomData<T>);

impl<T: Pod> SpscRing<T> {
    /// Bytes a ring of `capacity` slots needs.
    pub fn required_size(capacity: usize) -> Result<usize, RingError> {
        Self::layout(capacity).map(|(_, total)| total)
    }

    fn layout(capacity: usize) -> Result<(usize, usize), RingError> {
        if std::mem::size_of::<T>() == 0 {
            return Err(RingError::ZeroSized);
        }
        if capacity == 0 {
            return Err(RingError::InvalidCapacity {
                capacity,
                reason: "a ring needs at least one slot",
            });
        }
        slotted_layout::<Header, Slot<T>>(capacity)
    }

    /// Validates the ring at the start of `region` for items of `T`, as
    /// `attach` does, without attaching; returns its capacity in slots.
    /// Only its creator-written info block is read.
    pub fn check(region: &Region) -> Result<usize, RingError> {
        Shared::<T>::attach(*region).map(|shared| shared.capacity as usize)
    }

    /// Writes an empty ring of `capacity` slots at the start of `region`.
    ///
    /// # Safety
    ///
    /// Nothing else may access the region while this runs, and no handle
    /// attached to a previous ring in it may be used afterwards.
    pub unsafe fn init(region: Region, capacity: usize) -> Result<(), RingError> {
        let (slots_offset, total) = Self::layout(capacity)?;
        check_region(&region, total, std::mem::align_of::<Slot<T>>())?;
        let header = Header::new(RingInfo::new(
            MAGIC,
            capacity as u64,
            std::mem::size_of::<Slot<T>>() as u64,
            std::mem::align_of::<Slot<T>>() as u64,
            0,
        ));
        let base = region.as_ptr();
        // SAFETY: the region holds `total` bytes aligned for the header and
        // the slots (checked above), and nothing else accesses it now.
        unsafe {
            base.cast::<Header>().write(header);
            let slots = base.add(slots_offset).cast::<Slot<T>>();
            for i in 0..capacity {
                slots.add(i).write(UnsafeCell::new(T::zeroed()));
            }
        }
        Ok(())
    }
}

/// What both ends share: pointers into the region and validated sizes.
struct Shared<T> {
    header: NonNull<Header>,
    slots: NonNull<Slot<T>>,
    capacity: u64,
}

impl<T: Pod> Shared<T> {
    fn attach(region: Region) -> Result<Shared<T>, RingError> {
        let (slots_offset, min) = SpscRing::<T>::layout(1)?;
        let (header, capacity, _) = Header::attach(
            &region,
            min,
            std::mem::align_of::<Slot<T>>(),
            (
                MAGIC,
                std::mem::size_of::<Slot<T>>() as u64,
                std::mem::align_of::<Slot<T>>() as u64,
            ),
        )?;
        let max = (region.len() - slots_offset) / std::mem::size_of::<Slot<T>>();
        let capacity = check_stored_capacity(capacity, max as u64)?;
        let base = region.as_ptr();
        Ok(Shared {
            header,
            // SAFETY: slots_offset < region.len(), so the pointer is in bounds.
            slots: unsafe { NonNull::new_unchecked(base.add(slots_offset).cast()) },
            capacity: capacity as u64,
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: `header` points into a region that outlives every handle
        // (Region's contract) and holds an initialised Header.
        unsafe { self.header.as_ref() }
    }

    /// The slot at `index`, which callers keep below `capacity`.
    fn slot(&self, index: usize) -> &Slot<T> {
        debug_assert!((index as u64) < self.capacity);
        // SAFETY: index < capacity and the region holds `capacity` slots.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    /// `position + n`, wrapped into `0..capacity`, for `n <= capacity`.
    fn advance(&self, position: usize, n: usize) -> usize {
        let next = position + n;
        if next >= self.capacity as usize {
            next - self.capacity as usize
        } else {
            next
        }
    }

    /// Validates a counter of the other side against ours.
    fn check_distance(
        &self,
        ahead: u64,
        behind: u64,
        field: &'static str,
        value: u64,
    ) -> Result<u64, Corruption> {
        let distance = ahead.wrapping_sub(behind);
        if distance > self.capacity {
            return Err(Corruption { field, value });
        }
        Ok(distance)
    }
}

/// The producing end. At most one may exist per ring at a time.
pub struct Producer<T> {
    shared: Shared<T>,
    /// Our copy of `tail` (we are its only writer).
    tail: u64,
    /// `tail % capacity`, kept incrementally.
    tail_slot: usize,
    /// The consumer's `head` as last read; only ever behind the real one.
    cached_head: u64,
}

// SAFETY: the producer's accesses are synchronised by the ring protocol;
// it may move to another thread like any owner of its items.
unsafe impl<T: Pod + Send> Send for Producer<T> {}

impl<T: Pod> Producer<T> {
    /// Attaches the producing end to an initialised ring.
    ///
    /// # Safety
    ///
    /// No other `Producer` may use this ring while the returned one lives
    /// (the channel layer enforces this with its role table).
    pub unsafe fn attach(region: Region) -> Result<Producer<T>, RingError> {
        let shared = Shared::<T>::attach(region)?;
        let header = shared.header();
        // Acquire: pairs with the Release stores of the previous producer
        // (tail) and the consumer (head).
        let tail = header.tail.load(Ordering::Acquire);
        let head = header.head.load(Ordering::Acquire);
        shared.check_distance(tail, head, "tail", tail)?;
        let tail_slot = (tail % shared.capacity) as usize;
        Ok(Producer {
            shared,
            tail,
            tail_slot,
            cached_head: head,
        })
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.capacity as usize
    }

    /// Free slots, rereading the consumer's counter.
    pub fn free_slots(&mut self) -> Result<usize, Corruption> {
        self.refresh_head()?;
        Ok(self.free_cached())
    }

    fn free_cached(&self) -> usize {
        (self.shared.capacity - self.tail.wrapping_sub(self.cached_head)) as usize
    }

    #[cold]
    fn refresh_head(&mut self) -> Result<(), Corruption> {
        // Acquire: pairs with the Release store of `head` in the consumer's
        // `release`, so its reads of those slots finish before we reuse them.
        let head = self.shared.header().head.load(Ordering::Acquire);
        self.shared.check_distance(self.tail, head, "head", head)?;
        self.cached_head = head;
        Ok(())
    }

    /// Pushes one item, or gives it back if the ring is full. Wait-free; the
    /// futex is touched only if the consumer announced it sleeps.
    #[inline]
    pub fn try_push(&mut self, item: T) -> Result<(), PushError<T>> {
        if self.free_cached() == 0 {
            if let Err(corruption) = self.refresh_head() {
                return Err(PushError::Corrupted(item, corruption));
            }
            if self.free_cached() == 0 {
                return Err(PushError::Full(item));
            }
        }
        self.shared.slot(self.tail_slot).with_mut(|slot| {
            // SAFETY: the slot at `tail` is free: the consumer released it
            // (head > tail - capacity) and will not read it until we publish.
            unsafe { super::copy::store(slot, item) }
        });
        self.publish(1);
        Ok(())
    }

    /// Pushes as many items from the front of `items` as fit, with one
    /// publication; returns how many.
    pub fn push_slice(&mut self, items: &[T]) -> Result<usize, Corruption> {
        let mut chunk = match self.write_chunk_up_to(items.len()) {
            Ok(chunk) => chunk,
            Err(ChunkError::Corrupted(c)) => return Err(c),
            Err(ChunkError::TooFew { .. }) => return Ok(0),
        };
        let n = chunk.fill_from_slice(items);
        chunk.commit(n);
        Ok(n)
    }

    /// Exactly `n` free slots to fill, or `TooFew`.
    pub fn write_chunk(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        if self.free_cached() < n {
            self.refresh_head()?;
            if self.free_cached() < n {
                return Err(ChunkError::TooFew {
                    available: self.free_cached(),
                });
            }
        }
        Ok(WriteChunk {
            producer: self,
            len: n,
        })
    }

    /// Up to `n` free slots to fill (possibly none).
    pub fn write_chunk_up_to(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        if self.free_cached() < n {
            self.refresh_head()?;
        }
        let len = n.min(self.free_cached());
        Ok(WriteChunk {
            producer: self,
            len,
        })
    }

    fn publish(&mut self, n: usize) {
        self.tail = self.tail.wrapping_add(n as u64);
        self.tail_slot = self.shared.advance(self.tail_slot, n);
        let header = self.shared.header();
        // Release: pairs with the Acquire load of `tail` in the consumer's
        // `refresh_tail`, so the slot writes above are visible there.
        header.tail.store(self.tail, Ordering::Release);
        header.data_ready.notify_one();
    }

    /// Waits until at least `n` slots are free, or `stop()` holds, or the
    /// deadline passes. Returns whether the wait ended before the deadline.
    pub fn wait_for_space(
        &mut self,
        n: usize,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        let n = n.min(self.capacity()) as u64;
        let (capacity, tail) = (self.shared.capacity, self.tail);
        let header = self.shared.header();
        header.space_ready.wait_until(strategy, deadline, || {
            // Acquire: as in `refresh_head`. A corrupt head ends the wait,
            // and the retry reports it.
            let head = header.head.load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            used > capacity || capacity - used >= n || stop()
        })
    }

    /// Wakes a consumer sleeping for data (used when the producer leaves).
    pub fn wake_consumer(&self) {
        self.shared.header().data_ready.notify_all();
    }
}

/// Free slots being filled; `commit` publishes them. Dropped without commit,
/// nothing is published.
pub struct WriteChunk<'a, T: Pod> {
    producer: &'a mut Producer<T>,
    len: usize,
}

impl<T: Pod> WriteChunk<'_, T> {
    /// Slots in the chunk.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk has no slots.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot_index(&self, i: usize) -> usize {
        self.producer.shared.advance(self.producer.tail_slot, i)
    }

    /// Writes `item` into slot `i` of the chunk. Out-of-range `i` is ignored
    /// and returns false.
    pub fn write(&mut self, i: usize, item: T) -> bool {
        if i >= self.len {
            return false;
        }
        let index = self.slot_index(i);
        self.producer.shared.slot(index).with_mut(|slot| {
            // SAFETY: slots of the chunk are free and owned by the producer
            // until it publishes them.
            unsafe { super::copy::store(slot, item) }
        });
        true
    }

    /// Copies from the front of `items` into the chunk; returns how many.
    pub fn fill_from_slice(&mut self, items: &[T]) -> usize {
        let n = items.len().min(self.len);
        #[cfg(not(loom))]
        {
            let [(first, first_len), (second, _)] = self.as_raw_parts();
            let split = n.min(first_len);
            // SAFETY: both parts are free slots owned by the producer
            // (see `as_raw_parts`), `split <= first_len` and
            // `n - split <= second_len`; `items` cannot overlap the ring.
            unsafe {
                super::copy::store_slice(first, &items[..split]);
                super::copy::store_slice(second, &items[split..n]);
            }
        }
        #[cfg(loom)]
        for (i, item) in items[..n].iter().enumerate() {
            self.write(i, *item);
        }
        n
    }

    /// The chunk as at most two runs of raw slots, `[(ptr, len); 2]`, the
    /// second empty unless the chunk wraps. Writes through these pointers
    /// before `commit` are what `commit` publishes.
    #[cfg(not(loom))]
    pub fn as_raw_parts(&mut self) -> [(*mut T, usize); 2] {
        let shared = &self.producer.shared;
        let start = self.producer.tail_slot;
        let first_len = self.len.min(shared.capacity as usize - start);
        let base = shared.slots.as_ptr().cast::<T>();
        // SAFETY: start < capacity; the slot type is a transparent cell of T.
        let first = unsafe { base.add(start) };
        [(first, first_len), (base, self.len - first_len)]
    }

    /// Publishes the first `n` slots of the chunk (at most its length).
    pub fn commit(self, n: usize) {
        let n = n.min(self.len);
        if n > 0 {
            self.producer.publish(n);
        }
    }

    /// Publishes every slot of the chunk.
    pub fn commit_all(self) {
        let n = self.len;
        self.commit(n);
    }
}

/// The consuming end. At most one may exist per ring at a time.
pub struct Consumer<T> {
    shared: Shared<T>,
    head: u64,
    head_slot: usize,
    cached_tail: u64,
}

// SAFETY: as for Producer.
unsafe impl<T: Pod + Send> Send for Consumer<T> {}

impl<T: Pod> Consumer<T> {
    /// Attaches the consuming end to an initialised ring.
    ///
    /// # Safety
    ///
    /// No other `Consumer` may use this ring while the returned one lives.
    pub unsafe fn attach(region: Region) -> Result<Consumer<T>, RingError> {
        let shared = Shared::<T>::attach(region)?;
        let header = shared.header();
        // Acquire: pairs with the Release stores of the previous consumer
        // (head) and of the producer (tail).
        let head = header.head.load(Ordering::Acquire);
        let tail = header.tail.load(Ordering::Acquire);
        shared.check_distance(tail, head, "head", head)?;
        let head_slot = (head % shared.capacity) as usize;
        Ok(Consumer {
            shared,
            head,
            head_slot,
            cached_tail: tail,
        })
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.capacity as usize
    }

    /// Items ready, rereading the producer's counter.
    pub fn ready_items(&mut self) -> Result<usize, Corruption> {
        self.refresh_tail()?;
        Ok(self.ready_cached())
    }

    fn ready_cached(&self) -> usize {
        self.cached_tail.wrapping_sub(self.head) as usize
    }

    #[cold]
    fn refresh_tail(&mut self) -> Result<(), Corruption> {
        // Acquire: pairs with the Release store of `tail` in `publish`.
        let tail = self.shared.header().tail.load(Ordering::Acquire);
        self.shared.check_distance(tail, self.head, "tail", tail)?;
        self.cached_tail = tail;
        Ok(())
    }

    /// Pops one item. Wait-free; the futex is touched only if the producer
    /// announced it sleeps.
    #[inline]
    pub fn try_pop(&mut self) -> Result<T, PopError> {
        if self.ready_cached() == 0 {
            self.refresh_tail()?;
            if self.ready_cached() == 0 {
                return Err(PopError::Empty);
            }
        }
        let item = self.shared.slot(self.head_slot).with(|slot| {
            // SAFETY: the slot at `head` is full: the producer published it
            // (tail > head) and will not write it until we release it. Any
            // bytes are a valid T (Pod).
            unsafe { super::copy::load(slot) }
        });
        self.release(1);
        Ok(item)
    }

    /// Pops up to `out.len()` items into `out`; returns how many.
    pub fn pop_into(&mut self, out: &mut [T]) -> Result<usize, Corruption> {
        let chunk = match self.read_chunk_up_to(out.len()) {
            Ok(chunk) => chunk,
            Err(ChunkError::Corrupted(c)) => return Err(c),
            Err(ChunkError::TooFew { .. }) => return Ok(0),
        };
        let n = chunk.copy_to_slice(out);
        chunk.commit(n);
        Ok(n)
    }

    /// Exactly `n` ready items, or `TooFew`.
    pub fn read_chunk(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        if self.ready_cached() < n {
            self.refresh_tail()?;
            if self.ready_cached() < n {
                return Err(ChunkError::TooFew {
                    available: self.ready_cached(),
                });
            }
        }
        Ok(ReadChunk {
            consumer: self,
            len: n,
        })
    }

    /// Up to `n` ready items (possibly none).
    pub fn read_chunk_up_to(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        if self.ready_cached() < n {
            self.refresh_tail()?;
        }
        let len = n.min(self.ready_cached());
        Ok(ReadChunk {
            consumer: self,
            len,
        })
    }

    fn release(&mut self, n: usize) {
        self.head = self.head.wrapping_add(n as u64);
        self.head_slot = self.shared.advance(self.head_slot, n);
        let header = self.shared.header();
        // Release: pairs with the Acquire load of `head` in the producer's
        // `refresh_head`, so our reads of these slots happen before reuse.
        header.head.store(self.head, Ordering::Release);
        header.space_ready.notify_one();
    }

    /// Waits until an item is ready, or `stop()` holds, or the deadline
    /// passes. Returns whether the wait ended before the deadline.
    pub fn wait_for_data(
        &mut self,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        let head = self.head;
        let header = self.shared.header();
        header.data_ready.wait_until(strategy, deadline, || {
            // Acquire: as in `refresh_tail`.
            header.tail.load(Ordering::Acquire) != head || stop()
        })
    }

    /// Wakes a producer sleeping for space (used when the consumer leaves).
    pub fn wake_producer(&self) {
        self.shared.header().space_ready.notify_all();
    }
}

/// Ready items being read; `commit` releases them to the producer. Dropped
/// without commit, nothing is consumed.
pub struct ReadChunk<'a, T: Pod> {
    consumer: &'a mut Consumer<T>,
    len: usize,
}

impl<T: Pod> ReadChunk<'_, T> {
    /// Items in the chunk.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of item `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let index = self.consumer.shared.advance(self.consumer.head_slot, i);
        Some(self.consumer.shared.slot(index).with(|slot| {
            // SAFETY: slots of the chunk are published and not yet released,
            // so the producer does not write them.
            unsafe { super::copy::load(slot) }
        }))
    }

    /// Copies the chunk's items into the front of `out`; returns how many.
    pub fn copy_to_slice(&self, out: &mut [T]) -> usize {
        let n = out.len().min(self.len);
        #[cfg(not(loom))]
        {
            let [(first, first_len), (second, _)] = self.as_raw_parts();
            let split = n.min(first_len);
            // SAFETY: both parts are published, unreleased slots (see
            // `as_raw_parts`); `split <= first_len`, `n - split <= second
            // length`; `out` cannot overlap the ring.
            unsafe {
                super::copy::load_slice(first, &mut out[..split]);
                super::copy::load_slice(second, &mut out[split..n]);
            }
        }
        #[cfg(loom)]
        for (i, slot) in out[..n].iter_mut().enumerate() {
            if let Some(item) = self.get(i) {
                *slot = item;
            }
        }
        n
    }

    /// The chunk as at most two runs of raw slots, `[(ptr, len); 2]`. Read
    /// through these pointers before `commit`.
    #[cfg(not(loom))]
    pub fn as_raw_parts(&self) -> [(*const T, usize); 2] {
        let shared = &self.consumer.shared;
        let start = self.consumer.head_slot;
        let first_len = self.len.min(shared.capacity as usize - start);
        let base = shared.slots.as_ptr().cast::<T>().cast_const();
        // SAFETY: start < capacity; the slot type is a transparent cell of T.
        let first = unsafe { base.add(start) };
        [(first, first_len), (base, self.len - first_len)]
    }

    /// Releases the first `n` items (at most the chunk's length).
    pub fn commit(self, n: usize) {
        let n = n.min(self.len);
        if n > 0 {
            self.consumer.release(n);
        }
    }

    /// Releases every item of the chunk.
    pub fn commit_all(self) {
        let n = self.len;
        self.commit(n);
    }
}
