//! A lock-free multi-producer multi-consumer ring of `Pod` slots, after
//! Dmitry Vyukov's bounded queue (each slot carries a sequence word that
//! says whose turn it is), extended so that a claimer that dies between
//! claiming a slot and finishing with it can be repaired by a survivor.
//!
//! | offset | field          | written by | meaning |
//! |--------|----------------|------------|---------|
//! | 0      | `info`         | creator    | [`RingInfo`], magic `MPMCRNG2` |
//! | 128    | `tail`         | producers (CAS) | `position << 5 \| (id + 1)`: next position to claim for writing, and who claimed last |
//! | 256    | `head`         | consumers (CAS) | the same for reading |
//! | 384    | `data_ready`   | both | consumers sleep here |
//! | 512    | `space_ready`  | both | producers sleep here |
//! | 640    | claims         | each claimer its own record | see [`claims`] |
//! | 8960   | slots          | | `capacity` × { `sequence: u64`, `value: T` } |
//!
//! A slot's sequence is `position << 8 | owner << 3 | state`, the position
//! taken modulo 2^56:
//!
//! | state | meaning | next |
//! |---|---|---|
//! | `FREE` (0) | free for the producer of `position` | claimed by the `tail` CAS |
//! | `WRITING` (1) | claimed by producer `owner`, not yet published (set by the next producer, see below) | `FULL`; or `SKIP` by a repair |
//! | `FULL` (2) | holds the item of `position` | claimed by the `head` CAS |
//! | `SKIP` (3) | a repaired claim: no item | claimed by the `head` CAS, passed over |
//! | `READING` (4) | claimed by consumer `owner`, not yet freed | `FREE` for `position + capacity`; or the same by a repair, counted as a loss |
//! | `READING_SKIP` (5) | as `READING`, for a `SKIP` | as `READING`, no loss |
//!
//! A producer claims position `p` by a CAS of `tail` from `p` to `p + 1`
//! (with its id) while slot `p` reads `FREE(p)`, writes the value, and
//! stores `FULL(p)` (Release). A consumer claims `p` by a CAS of `head`
//! while the slot reads `FULL(p)` or `SKIP(p)`, reads, and stores
//! `FREE(p + capacity)` (Release).
//!
//! **Repair.** Before the CAS, a claimer writes `p` into its claim record.
//! Before a CAS that moves a counter past a claim made by someone else, the
//! claimer marks that earlier claim at its slot (`FREE(p)` becomes
//! `WRITING(p, owner)`, `FULL(p)` becomes `READING(p, owner)`), so every
//! claim is attributable: the latest by the counter's owner bits, older ones
//! by their slot. The layer above, which knows processes, calls
//! [`MpmcHandle::repair`] for a claimer it found dead; the ring turns that
//! claimer's pending slot into `SKIP(p)` (a producer: nothing committed is
//! lost) or frees it (a consumer: the item it held is dropped and counted,
//! so delivery is at most once). The channel layer repairs only claimers
//! whose liveness lock the kernel released (dead ones), however slow a
//! live one is.
//!
//! A sequence that no correct peer writes (a position that is not this
//! slot's, more than a lap behind, or ahead while the counter has not moved)
//! is reported as corruption instead of being waited on forever.

use std::marker::PhantomData;
use std::ptr::NonNull;

use super::claims::{self, ClaimTable, NO_CLAIM, Repair, RingStats, Side};
use super::{
    Corruption, Pod, Region, RingCounters, RingError, RingHeader, RingInfo, check_region,
    check_stored_capacity, slotted_layout,
};
use crate::sync::shim::{self, AtomicU64, Ordering, UnsafeCell};
use crate::sync::{Deadline, WaitStrategy};

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MPMCRNG2");

/// The ring header, then the claim records.
#[repr(C)]
struct Header {
    ring: RingHeader,
    claims: ClaimTable,
}

/// The totals of the MPMC ring at the start of `region`: `tail` holds the
/// positions producers claimed, each an item of `flags` bytes (the item
/// size; see `init`). Loads only.
pub(crate) fn counters_of(region: &Region) -> Option<RingCounters> {
    // SAFETY: `Header` is repr(C), starts with a RingHeader, and holds
    // atomics only; we only load.
    let header = unsafe { RingHeader::peek::<Header>(region, MAGIC)? };
    // Relaxed: statistics; each load stands alone.
    let items = claims::position(header.ring.tail.load(Ordering::Relaxed));
    let item_size = header.ring.info.flags.load(Ordering::Relaxed);
    let stats = header.claims.stats();
    Some(RingCounters {
        items: Some(items),
        bytes: Some(items.wrapping_mul(item_size)),
        futex_calls: header.ring.futex_calls(),
        repairs: stats.repairs,
        losses: stats.losses,
    })
}

#[repr(C)]
struct Slot<T> {
    sequence: AtomicU64,
    value: UnsafeCell<T>,
}

const FREE: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
const SKIP: u64 = 3;
const READING: u64 = 4;
const READING_SKIP: u64 = 5;
const STATE_MASK: u64 = 0b111;
const POSITION_SHIFT: u32 = 8;

/// The largest capacity: positions are compared modulo 2^56, so a lap must
/// be far shorter than that.
const MAX_CAPACITY: usize = 1 << 40;

fn sequence(position: u64, owner: u8, state: u64) -> u64 {
    (position << POSITION_SHIFT) | (u64::from(owner) & 31) << 3 | state
}

fn free(position: u64) -> u64 {
    sequence(position, 0, FREE)
}

fn full(position: u64) -> u64 {
    sequence(position, 0, FULL)
}

fn skip(position: u64) -> u64 {
    sequence(position, 0, SKIP)
}

fn writing(position: u64, owner: u8) -> u64 {
    sequence(position, owner, WRITING)
}

fn reading(position: u64, owner: u8, was_skip: bool) -> u64 {
    sequence(
        position,
        owner,
        if was_skip { READING_SKIP } else { READING },
    )
}

/// How far the slot's position is ahead of `position` (negative: behind),
/// modulo 2^56.
fn lag(sequence: u64, position: u64) -> i64 {
    let difference = (sequence >> POSITION_SHIFT).wrapping_sub(position);
    ((difference << POSITION_SHIFT) as i64) >> POSITION_SHIFT
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
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(RingError::InvalidCapacity {
                capacity,
                reason: "an MPMC ring holds 1 to 2^40 slots",
            });
        }
        slotted_layout::<Header, Slot<T>>(capacity)
    }

    /// Validates the ring at the start of `region` for items of `T`, as
    /// `attach` does, without attaching; returns its capacity in slots.
    pub fn check(region: &Region) -> Result<usize, RingError> {
        // SAFETY: the handle lives only within this call, while the caller
        // keeps the region mapped, and never pushes or pops: it reads the
        // info block only, so sharing id 0 with a live handle is harmless.
        let handle = unsafe { MpmcHandle::<T>::attach(*region, 0)? };
        Ok(handle.capacity())
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
        let header = Header {
            ring: RingHeader::new(RingInfo::new(
                MAGIC,
                capacity as u64,
                std::mem::size_of::<Slot<T>>() as u64,
                std::mem::align_of::<Slot<T>>() as u64,
                std::mem::size_of::<T>() as u64,
            )),
            claims: ClaimTable::new(),
        };
        let base = region.as_ptr();
        // SAFETY: the region holds `total` bytes aligned for the header and
        // the slots (checked above), and nothing else accesses it now.
        unsafe {
            base.cast::<Header>().write(header);
            let slots = base.add(slots_offset).cast::<Slot<T>>();
            for i in 0..capacity {
                slots.add(i).write(Slot {
                    sequence: AtomicU64::new(free(i as u64)),
                    value: UnsafeCell::new(T::zeroed()),
                });
            }
        }
        Ok(())
    }
}

/// One participant's handle on an MPMC ring: it pushes and pops under its
/// claimer id. Attach one handle per thread or process, each with its own
/// id; any number may push and pop concurrently.
pub struct MpmcHandle<T> {
    header: NonNull<Header>,
    slots: NonNull<Slot<T>>,
    capacity: u64,
    /// Precomputed for the common power-of-two case.
    mask: Option<u64>,
    id: u8,
}

// SAFETY: every shared access is atomic or ordered by the slot sequence
// protocol; the handle may move to another thread. It is not Sync: its
// claim records belong to one thread at a time.
unsafe impl<T: Pod + Send> Send for MpmcHandle<T> {}

/// How many times a push or pop may find a slot ahead of its position
/// counter before it calls the ring corrupt: more than any number of real
/// concurrent peers can cause, since each such find means another thread
/// completed a claim and moved the counter.
const MAX_RETRIES: u32 = 1 << 20;

impl<T: Pod> MpmcHandle<T> {
    /// Attaches to an initialised ring as claimer `id` (0 to 30) on both
    /// sides.
    ///
    /// # Safety
    ///
    /// The region's memory must stay valid while this handle lives (a
    /// [`HeapRegion`](super::HeapRegion) must outlive it), and no other
    /// handle with the same `id` may push (or pop) while this one does.
    pub unsafe fn attach(region: Region, id: u8) -> Result<MpmcHandle<T>, RingError> {
        let id = claims::check_id(id)?;
        let (slots_offset, min) = MpmcRing::<T>::layout(1)?;
        let (header, capacity, item_size) = RingHeader::attach(
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
        let capacity = check_stored_capacity(capacity, max.min(MAX_CAPACITY) as u64)? as u64;
        Ok(MpmcHandle {
            // The region holds a whole Header (min covers it).
            header: header.cast(),
            // SAFETY: slots_offset < region.len(): the pointer is in bounds.
            slots: unsafe { NonNull::new_unchecked(region.as_ptr().add(slots_offset).cast()) },
            capacity,
            mask: capacity.is_power_of_two().then(|| capacity - 1),
            id,
        })
    }

    #[doc(hidden)]
    pub fn debug_state(&self) -> (u64, u64, u64) {
        let h = self.header();
        (
            h.ring.tail.load(Ordering::SeqCst),
            h.ring.head.load(Ordering::SeqCst),
            self.slot(0).sequence.load(Ordering::SeqCst),
        )
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// This handle's claimer id.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn header(&self) -> &Header {
        // SAFETY: the region outlives every handle (attach's contract) and
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

    fn corrupted(&self, sequence: u64) -> Corruption {
        Corruption {
            field: "slot sequence",
            value: sequence,
        }
    }

    /// Marks the claim the counter word names (the previous claimer's) at
    /// its slot, if it is not visible there yet, so that moving the counter
    /// on does not make it anonymous.
    #[inline]
    fn mark_previous(&self, word: u64, side: Side) {
        let Some(owner) = claims::owner(word) else {
            return;
        };
        if owner == self.id {
            // Our own previous claim: finished before this call began.
            return;
        }
        let position = claims::position(word).wrapping_sub(1);
        let slot = self.slot(position);
        let current = slot.sequence.load(Ordering::Relaxed);
        let marked = match side {
            Side::Producer if current == free(position) => writing(position, owner),
            Side::Consumer if current == full(position) => reading(position, owner, false),
            Side::Consumer if current == skip(position) => reading(position, owner, true),
            _ => return,
        };
        // AcqRel: the mark publishes no data (the owner's own Release store
        // of `FULL` or `FREE` does), but a producer or consumer that later
        // reads the mark with Acquire must also see everything we saw, the
        // counter past this claim included; with Relaxed it could read the
        // mark, reload a stale counter and call the ring corrupt.
        let _ =
            slot.sequence
                .compare_exchange(current, marked, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Pushes one item, or gives it back if the ring is full. Lock-free.
    #[inline]
    pub fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        let header = self.header();
        // Acquire (here, on CAS failure and on reload): pairs with the
        // Release CAS of the claimer that wrote this word, so its slot (and
        // the previous lap's) is seen at least as new as it saw it; else
        // `mark_previous` could read an older lap's sequence and miss the
        // claim it must mark, or see a mark and take the ring for corrupt.
        let mut word = header.ring.tail.load(Ordering::Acquire);
        let mut retries = 0;
        loop {
            self.mark_previous(word, Side::Producer);
            let position = claims::position(word);
            let slot = self.slot(position);
            // Acquire: pairs with the Release store of `sequence` by the
            // consumer that last emptied this slot (or a repair), so its
            // read is done before we write.
            let sequence = slot.sequence.load(Ordering::Acquire);
            let lag = lag(sequence, position);
            if lag == 0 && sequence & STATE_MASK == FREE {
                header.claims.announce(Side::Producer, self.id, position);
                failpoint!("mpmc.push.announced", Err(PushError::Full(item)));
                // Release: pairs with the Acquire load of `tail` in `repair`,
                // so a repairer that sees the counter past a claim also sees
                // the mark we made of it in `mark_previous`. The slot's
                // sequence, not the counter, carries the data's ordering.
                match header.ring.tail.compare_exchange_weak(
                    word,
                    claims::pack(position.wrapping_add(1), Some(self.id)),
                    Ordering::Release,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        failpoint!("mpmc.push.claimed", Err(PushError::Full(item)));
                        slot.value.with_mut(|value| {
                            // SAFETY: winning the CAS for `position` while
                            // its slot read FREE(position) makes the value
                            // ours until we publish; marks and repairs touch
                            // only the sequence.
                            unsafe { super::copy::store(value, item) }
                        });
                        failpoint!("mpmc.push.written", Err(PushError::Full(item)));
                        // Release: pairs with the Acquire sequence load in
                        // `try_pop`, publishing the value.
                        shim::store_after_rmw(&slot.sequence, full(position), Ordering::Release);
                        // All, not one: items may be published out of order,
                        // and a consumer woken for a later position than its
                        // own would sleep again while another item waits.
                        header.ring.data_ready.notify_all();
                        return Ok(());
                    }
                    Err(current) => word = current,
                }
            } else if lag >= 0 {
                // Someone claimed `position` (or later) already: our view of
                // `tail` is stale. Catch up, unless it has not moved.
                let current = header.ring.tail.load(Ordering::Acquire);
                retries += 1;
                if current == word || retries > MAX_RETRIES {
                    return Err(PushError::Corrupted(item, self.corrupted(sequence)));
                }
                word = current;
            } else if lag == -(self.capacity as i64) {
                // The slot still belongs to the previous lap: full.
                return Err(PushError::Full(item));
            } else {
                return Err(PushError::Corrupted(item, self.corrupted(sequence)));
            }
        }
    }

    /// Pops one item. Lock-free. Repaired claims (`SKIP`) are passed over.
    #[inline]
    pub fn try_pop(&self) -> Result<T, PopError> {
        let header = self.header();
        // Acquire: as in `try_push`.
        let mut word = header.ring.head.load(Ordering::Acquire);
        let mut retries = 0;
        loop {
            self.mark_previous(word, Side::Consumer);
            let position = claims::position(word);
            let slot = self.slot(position);
            // Acquire: pairs with the producer's Release store of
            // `FULL(position)` (or a repair's of `SKIP`), making its value
            // write visible.
            let sequence = slot.sequence.load(Ordering::Acquire);
            let lag = lag(sequence, position);
            let state = sequence & STATE_MASK;
            if lag == 0 && (state == FULL || state == SKIP) {
                header.claims.announce(Side::Consumer, self.id, position);
                failpoint!("mpmc.pop.announced", Err(PopError::Empty));
                let next = claims::pack(position.wrapping_add(1), Some(self.id));
                // Release: pairs with the Acquire load of `head` in `repair`,
                // as in `try_push`.
                match header.ring.head.compare_exchange_weak(
                    word,
                    next,
                    Ordering::Release,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        failpoint!("mpmc.pop.claimed", Err(PopError::Empty));
                        let item = (state == FULL).then(|| {
                            slot.value.with(|value| {
                                // SAFETY: winning the CAS for `position`
                                // while its slot read FULL(position) makes
                                // the published value ours until we free the
                                // slot; any bytes are a valid T (Pod).
                                unsafe { super::copy::load(value) }
                            })
                        });
                        failpoint!("mpmc.pop.read", Err(PopError::Empty));
                        // Release: pairs with the Acquire sequence load in
                        // `try_push` of the next lap's producer.
                        shim::store_after_rmw(
                            &slot.sequence,
                            free(position.wrapping_add(self.capacity)),
                            Ordering::Release,
                        );
                        // All, for the same reason as in `try_push`.
                        header.ring.space_ready.notify_all();
                        match item {
                            Some(item) => return Ok(item),
                            None => {
                                word = next;
                                continue;
                            }
                        }
                    }
                    Err(current) => word = current,
                }
            } else if lag == 0 && (state == FREE || state == WRITING) {
                return Err(PopError::Empty);
            } else if lag >= 0 {
                let current = header.ring.head.load(Ordering::Acquire);
                retries += 1;
                if current == word || retries > MAX_RETRIES {
                    return Err(PopError::Corrupted(self.corrupted(sequence)));
                }
                word = current;
            } else if lag == -(self.capacity as i64) {
                // The previous lap's consumer has not freed the slot yet.
                return Err(PopError::Empty);
            } else {
                return Err(PopError::Corrupted(self.corrupted(sequence)));
            }
        }
    }

    /// Items claimed for writing but not yet for reading: a hint, exact only
    /// when nobody else is pushing or popping.
    pub fn len_hint(&self) -> usize {
        let header = self.header();
        let enqueued = claims::position(header.ring.tail.load(Ordering::Relaxed));
        let dequeued = claims::position(header.ring.head.load(Ordering::Relaxed));
        (enqueued.wrapping_sub(dequeued)).min(self.capacity) as usize
    }

    /// What claimer `id` on `side` last announced; pass it to
    /// [`repair`](Self::repair) once its owner is known to be dead.
    pub fn claim_record(&self, side: Side, id: u8) -> u64 {
        self.header().claims.load(side, id)
    }

    /// Repairs the claim of a dead claimer `id` on `side` whose claim record
    /// read `record`: a producer's unpublished slot becomes a skip, a
    /// consumer's unfinished slot is freed (its item counted as lost).
    /// Idempotent: several survivors may repair the same claim.
    ///
    /// Call it only for a claimer whose owner is dead (or gone for good):
    /// a live claimer's slot would be taken from under it.
    pub fn repair(&self, side: Side, id: u8, record: u64) -> Repair {
        if record == NO_CLAIM || usize::from(id) >= claims::MAX_CLAIMERS {
            return Repair::Nothing;
        }
        let header = self.header();
        let slot = self.slot(record);
        // A few laps at most: each failed CAS means a mark by a peer (or
        // another repairer) changed the slot, and marks happen once.
        for _ in 0..4 {
            // The counter first, then the slot. Acquire: pairs with the
            // Release CAS that moved the counter past the claim; that
            // claimer marked the claim at its slot before, so we see the
            // mark if the counter no longer names the claim.
            let counter = match side {
                Side::Producer => header.ring.tail.load(Ordering::Acquire),
                Side::Consumer => header.ring.head.load(Ordering::Acquire),
            };
            let latest = counter == claims::pack(record.wrapping_add(1), Some(id));
            // Acquire: pairs with the Release stores of the slot's sequence,
            // so what its last publisher did happens before our change.
            let current = slot.sequence.load(Ordering::Acquire);
            let (replacement, outcome) = match side {
                Side::Producer => {
                    if current == writing(record, id) || (latest && current == free(record)) {
                        (skip(record), Repair::Skipped)
                    } else {
                        return Repair::Nothing;
                    }
                }
                Side::Consumer => {
                    let freed = free(record.wrapping_add(self.capacity));
                    if current == reading(record, id, false) || (latest && current == full(record))
                    {
                        (freed, Repair::Lost)
                    } else if current == reading(record, id, true)
                        || (latest && current == skip(record))
                    {
                        (freed, Repair::Skipped)
                    } else {
                        return Repair::Nothing;
                    }
                }
            };
            // Release: pairs with the Acquire sequence loads in `try_pop`
            // (a skip) and `try_push` (a freed slot): the dead claimer's
            // writes, and ours, happen before the slot's next use.
            if slot
                .sequence
                .compare_exchange(current, replacement, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                header.claims.count(outcome);
                match side {
                    Side::Producer => header.ring.data_ready.notify_all(),
                    Side::Consumer => header.ring.space_ready.notify_all(),
                };
                return outcome;
            }
        }
        Repair::Nothing
    }

    /// Repairs and losses counted in this ring.
    pub fn stats(&self) -> RingStats {
        self.header().claims.stats()
    }

    /// Whether a pop would not find the ring empty (an item, a skip, or a
    /// state that needs a closer look).
    fn data_ready(&self) -> bool {
        let header = self.header();
        let position = claims::position(header.ring.head.load(Ordering::Relaxed));
        // Acquire: as in `try_pop`.
        let sequence = self.slot(position).sequence.load(Ordering::Acquire);
        let lag = lag(sequence, position);
        let state = sequence & STATE_MASK;
        !(lag == -(self.capacity as i64) || (lag == 0 && (state == FREE || state == WRITING)))
    }

    /// Whether a push would not find the ring full.
    fn space_ready(&self) -> bool {
        let header = self.header();
        let position = claims::position(header.ring.tail.load(Ordering::Relaxed));
        // Acquire: as in `try_push`.
        let sequence = self.slot(position).sequence.load(Ordering::Acquire);
        lag(sequence, position) != -(self.capacity as i64)
    }

    /// Waits until the slot at the dequeue position is published, or
    /// `stop()` holds, or the deadline passes.
    pub fn wait_for_data(
        &self,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        self.header()
            .ring
            .data_ready
            .wait_until(strategy, deadline, || self.data_ready() || stop())
    }

    /// Waits until the slot at the enqueue position is free, or `stop()`
    /// holds, or the deadline passes.
    pub fn wait_for_space(
        &self,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        self.header()
            .ring
            .space_ready
            .wait_until(strategy, deadline, || self.space_ready() || stop())
    }

    /// Wakes every sleeper on both sides (used when an endpoint leaves).
    pub fn wake_all(&self) {
        let header = self.header();
        header.ring.data_ready.notify_all();
        header.ring.space_ready.notify_all();
    }
}
