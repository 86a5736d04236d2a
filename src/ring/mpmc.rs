//! A lock-free multi-producer multi-consumer ring of `Pod` slots, after
//! Dmitry Vyukov's bounded queue: each slot carries a sequence number that
//! says whose turn it is.
//!
//! | offset | field          | written by | meaning |
//! |--------|----------------|------------|---------|
//! | 0      | `info`         | creator    | [`RingInfo`], magic `MPMCRING` |
//! | 128    | `tail`  | producers (CAS) | next position to claim for writing |
//! | 256    | `head`  | consumers (CAS) | next position to claim for reading |
//! | 384    | `data_ready`   | both | consumers sleep here |
//! | 512    | `space_ready`  | both | producers sleep here |
//! | 640    | slots          | | `capacity` × { `sequence: u64`, `value: T` } |
//!
//! Sequences count in steps of two: `2p` means "free for the producer of
//! position `p`", `2p + 1` means "holds the item of position `p`". Slot `i`
//! starts at `2i`. A producer that claims position `p` (a CAS of
//! `tail` from `p` to `p + 1`, allowed when the slot reads `2p`)
//! writes the value, then stores `2p + 1`. A consumer that claims `p` (when
//! the slot reads `2p + 1`) reads the value, then stores `2(p + capacity)`,
//! freeing the slot for the next lap. The factor of two keeps "full" and
//! "free for the next lap" apart even with one slot, so any capacity from 1
//! works; the slot index is `p % capacity`.
//!
//! A sequence that no correct peer writes (behind by more than a lap, or
//! ahead while the position counter has not moved) is reported as
//! corruption instead of being waited on forever.

use std::marker::PhantomData;
use std::ptr::NonNull;

use super::{
    Corruption, Pod, Region, RingError, RingHeader, RingInfo, check_region, check_stored_capacity,
    slotted_layout,
};
use crate::sync::shim::{AtomicU64, Ordering, UnsafeCell};
use crate::sync::{Deadline, WaitStrategy};

const MAGIC: u64 = u64::from_le_bytes(*b"MPMCRING");

/// `tail` is the enqueue position, `head` the dequeue position.
type Header = RingHeader;

#[repr(C)]
struct Slot<T> {
    sequence: AtomicU64,
    value: UnsafeCell<T>,
}

/// Why an item was not pushed; the item comes back.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError<T> {
    /// Every slot is taken (or still being read).
    #[error("the ring is full")]
    Full(T),
    /// A sequence number or position is impossible.
    #[error("{1}")]
    Corrupted(T, Corruption),
}

impl<T> std::fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Full(_) => f.write_str("Full(..)"),
            PushError::Corrupted(_, c) => write!(f, "Corrupted(.., {c:?})"),
        }
    }
}

pub use super::spsc::PopError;

/// Sizes and initialises MPMC rings of `T`.
pub struct MpmcRing<T>(PhantomData<T>);

impl<T: Pod> MpmcRing<T> {
    /// Bytes a ring of `capacity` slots needs.
    pub fn required_size(capacity: usize) -> Result<usize, RingError> {
        Self::layout(capacity).map(|(_, total)| total)
    }

    fn layout(capacity: usize) -> Result<(usize, usize), RingError> {
        if std::mem::size_of::<T>() == 0 {
            return Err(RingError::ZeroSized);
        }
        if capacity == 0 || capacity > (1 << 40) {
            return Err(RingError::InvalidCapacity {
                capacity,
                reason: "an MPMC ring holds 1 to 2^40 slots",
            });
        }
        slotted_layout::<Header, Slot<T>>(capacity)
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
        // `flags` holds the item size: the slot size alone cannot tell a
        // u32 from a u64 (both pad to a 16-byte slot).
        let header = Header::new(RingInfo::new(
            MAGIC,
            capacity as u64,
            std::mem::size_of::<Slot<T>>() as u64,
            std::mem::align_of::<Slot<T>>() as u64,
            std::mem::size_of::<T>() as u64,
        ));
        let base = region.as_ptr();
        // SAFETY: the region holds `total` bytes aligned for the header and
        // the slots (checked above), and nothing else accesses it now.
        unsafe {
            base.cast::<Header>().write(header);
            let slots = base.add(slots_offset).cast::<Slot<T>>();
            for i in 0..capacity {
                slots.add(i).write(Slot {
                    sequence: AtomicU64::new(2 * i as u64),
                    value: UnsafeCell::new(T::zeroed()),
                });
            }
        }
        Ok(())
    }
}

/// A handle on an MPMC ring; clone it for each producer or consumer thread.
/// Any number may push and pop concurrently.
pub struct MpmcHandle<T> {
    header: NonNull<Header>,
    slots: NonNull<Slot<T>>,
    capacity: u64,
    /// Precomputed for the common power-of-two case.
    mask: Option<u64>,
}

impl<T> Clone for MpmcHandle<T> {
    fn clone(&self) -> Self {
        MpmcHandle { ..*self }
    }
}

// SAFETY: every shared access is atomic or ordered by the slot sequence
// protocol, which any number of threads may run.
unsafe impl<T: Pod + Send> Send for MpmcHandle<T> {}
// SAFETY: as above; &MpmcHandle allows pushing and popping from many threads.
unsafe impl<T: Pod + Send> Sync for MpmcHandle<T> {}

/// The sequence of a slot free for the producer of `position`.
fn free(position: u64) -> u64 {
    position.wrapping_mul(2)
}

/// The sequence of a slot holding the item of `position`.
fn full(position: u64) -> u64 {
    position.wrapping_mul(2).wrapping_add(1)
}

/// How many times a push or pop may find a slot ahead of its position
/// counter before it calls the ring corrupt: more than any number of real
/// concurrent peers can cause, since each such find means another thread
/// completed a claim and moved the counter.
const MAX_RETRIES: u32 = 1 << 20;

impl<T: Pod> MpmcHandle<T> {
    /// Attaches to an initialised ring.
    ///
    /// # Safety
    ///
    /// The region's memory must stay valid while this handle or any clone
    /// of it lives (a [`HeapRegion`](super::HeapRegion) must outlive them).
    pub unsafe fn attach(region: Region) -> Result<MpmcHandle<T>, RingError> {
        let (slots_offset, min) = MpmcRing::<T>::layout(1)?;
        let (header, capacity, item_size) = Header::attach(
            &region,
            min,
            std::mem::align_of::<Slot<T>>(),
            (
                MAGIC,
                std::mem::size_of::<Slot<T>>() as u64,
                std::mem::align_of::<Slot<T>>() as u64,
            ),
        )?;
        if item_size != std::mem::size_of::<T>() as u64 {
            return Err(RingError::Incompatible {
                field: "item size",
                found: item_size,
                expected: std::mem::size_of::<T>() as u64,
            });
        }
        let max = (region.len() - slots_offset) / std::mem::size_of::<Slot<T>>();
        let capacity = check_stored_capacity(capacity, max.min(1 << 40) as u64)? as u64;
        Ok(MpmcHandle {
            header,
            // SAFETY: slots_offset < region.len(): the pointer is in bounds.
            slots: unsafe { NonNull::new_unchecked(region.as_ptr().add(slots_offset).cast()) },
            capacity,
            mask: capacity.is_power_of_two().then(|| capacity - 1),
        })
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    fn header(&self) -> &Header {
        // SAFETY: the region outlives every handle (Region's contract) and
        // holds an initialised Header.
        unsafe { self.header.as_ref() }
    }

    #[inline]
    fn slot(&self, position: u64) -> &Slot<T> {
        let index = match self.mask {
            Some(mask) => position & mask,
            None => position % self.capacity,
        };
        // SAFETY: index < capacity, and the region holds `capacity` slots.
        unsafe { &*self.slots.as_ptr().add(index as usize) }
    }

    /// Pushes one item, or gives it back if the ring is full. Lock-free.
    #[inline]
    pub fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        let header = self.header();
        let mut position = header.tail.load(Ordering::Relaxed);
        let mut retries = 0;
        loop {
            let slot = self.slot(position);
            // Acquire: pairs with the Release store of `sequence` by the
            // consumer that last emptied this slot, so its read is done.
            let sequence = slot.sequence.load(Ordering::Acquire);
            let lag = sequence.wrapping_sub(free(position)) as i64;
            if lag == 0 {
                // Relaxed: the slot's sequence, not the counter, carries the
                // data's ordering; the CAS only decides who owns `position`.
                match header.tail.compare_exchange_weak(
                    position,
                    position.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        slot.value.with_mut(|value| {
                            // SAFETY: winning the CAS for `position` while its
                            // sequence was `position` makes this slot ours
                            // until we bump the sequence.
                            unsafe { value.write(item) }
                        });
                        // Release: pairs with the Acquire sequence load in
                        // `try_pop`, publishing the value.
                        slot.sequence.store(full(position), Ordering::Release);
                        // All, not one: items may be published out of order,
                        // and a consumer woken for a later position than its
                        // own would sleep again while another item waits.
                        header.data_ready.notify_all();
                        return Ok(());
                    }
                    Err(current) => position = current,
                }
            } else if lag < 0 {
                // The slot still holds the item from a lap ago: full, unless
                // the sequence is further behind than any correct state.
                if lag < -2 * (self.capacity as i64) {
                    return Err(PushError::Corrupted(
                        item,
                        Corruption {
                            field: "slot sequence",
                            value: sequence,
                        },
                    ));
                }
                return Err(PushError::Full(item));
            } else {
                // Another producer claimed `position`; catch up.
                let current = header.tail.load(Ordering::Relaxed);
                retries += 1;
                if current == position || retries > MAX_RETRIES {
                    return Err(PushError::Corrupted(
                        item,
                        Corruption {
                            field: "slot sequence",
                            value: sequence,
                        },
                    ));
                }
                position = current;
            }
        }
    }

    /// Pops one item. Lock-free.
    #[inline]
    pub fn try_pop(&self) -> Result<T, PopError> {
        let header = self.header();
        let mut position = header.head.load(Ordering::Relaxed);
        let mut retries = 0;
        loop {
            let slot = self.slot(position);
            // Acquire: pairs with the producer's Release store of
            // `sequence = position + 1`, making its value write visible.
            let sequence = slot.sequence.load(Ordering::Acquire);
            let lag = sequence.wrapping_sub(full(position)) as i64;
            if lag == 0 {
                // Relaxed: as in `try_push`.
                match header.head.compare_exchange_weak(
                    position,
                    position.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let item = slot.value.with(|value| {
                            // SAFETY: winning the CAS for `position` while the
                            // sequence was `position + 1` makes this published
                            // slot ours until we bump the sequence; any bytes
                            // are a valid T (Pod).
                            unsafe { value.read() }
                        });
                        // Release: pairs with the Acquire sequence load in
                        // `try_push` of the next lap's producer.
                        slot.sequence.store(
                            free(position.wrapping_add(self.capacity)),
                            Ordering::Release,
                        );
                        // All, for the same reason as in `try_push`.
                        header.space_ready.notify_all();
                        return Ok(item);
                    }
                    Err(current) => position = current,
                }
            } else if lag < 0 {
                if lag < -2 * (self.capacity as i64) {
                    return Err(PopError::Corrupted(Corruption {
                        field: "slot sequence",
                        value: sequence,
                    }));
                }
                return Err(PopError::Empty);
            } else {
                let current = header.head.load(Ordering::Relaxed);
                retries += 1;
                if current == position || retries > MAX_RETRIES {
                    return Err(PopError::Corrupted(Corruption {
                        field: "slot sequence",
                        value: sequence,
                    }));
                }
                position = current;
            }
        }
    }

    /// Items claimed for writing but not yet for reading: a hint, exact only
    /// when nobody else is pushing or popping.
    pub fn len_hint(&self) -> usize {
        let header = self.header();
        let enqueued = header.tail.load(Ordering::Relaxed);
        let dequeued = header.head.load(Ordering::Relaxed);
        (enqueued.wrapping_sub(dequeued)).min(self.capacity) as usize
    }

    /// Waits until the slot at the dequeue position is published, or
    /// `stop()` holds, or the deadline passes.
    pub fn wait_for_data(
        &self,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        let header = self.header();
        header.data_ready.wait_until(strategy, deadline, || {
            let position = header.head.load(Ordering::Relaxed);
            // Acquire: as in `try_pop`.
            let sequence = self.slot(position).sequence.load(Ordering::Acquire);
            sequence.wrapping_sub(full(position)) as i64 >= 0 || stop()
        })
    }

    /// Waits until the slot at the enqueue position is free, or `stop()`
    /// holds, or the deadline passes.
    pub fn wait_for_space(
        &self,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        let header = self.header();
        header.space_ready.wait_until(strategy, deadline, || {
            let position = header.tail.load(Ordering::Relaxed);
            // Acquire: as in `try_push`.
            let sequence = self.slot(position).sequence.load(Ordering::Acquire);
            sequence.wrapping_sub(free(position)) as i64 >= 0 || stop()
        })
    }

    /// Wakes every sleeper on both sides (used when an endpoint leaves).
    pub fn wake_all(&self) {
        let header = self.header();
        header.data_ready.notify_all();
        header.space_ready.notify_all();
    }
}
