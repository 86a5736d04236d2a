//! Lock-free rings over raw memory.
//!
//! This module owns the algorithms: a wait-free single-producer ring
//! ([`spsc`]), a lock-free multi-producer multi-consumer ring ([`mpmc`]), both
//! of fixed-size plain-old-data slots, and a ring of variable-length records
//! ([`record`]). A ring lives in a [`Region`] of memory that the layer above
//! provides (a segment's user area, or heap memory in tests and under loom).
//! It makes no OS call, never learns a segment's name, and treats every
//! index and length it reads from the region as untrusted: an impossible
//! value is reported as [`Corruption`], never used.
//!
//! Each ring's memory starts with a [`RingInfo`] block (magic, capacity, slot
//! size and alignment) that `attach` validates against the handle's type, and
//! keeps producer-owned and consumer-owned words on separate cache lines.

pub mod claims;
pub mod journal;
pub mod mpmc;
#[cfg(not(loom))]
pub mod queue;
pub mod record;
pub mod spsc;
pub mod stream;

mod bytes;
mod copy;
#[cfg(all(test, not(loom), feature = "failpoints"))]
mod recovery_tests;
#[cfg(all(test, not(loom), feature = "failpoints"))]
mod review_tests;
#[cfg(all(test, not(loom)))]
mod tests;

use std::alloc::Layout;
use std::ptr::NonNull;

pub use bytemuck::Pod;
pub use claims::{MAX_CLAIMERS, Repair, RingStats, Side};

use crossbeam_utils::CachePadded;

use crate::sync::WaitWord;
use crate::sync::shim::{AtomicU64, Ordering};

/// Memory a ring lives in: `len` bytes at `ptr`.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    /// A region of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes for as long as
    /// any ring handle made from this region lives, and those bytes must be
    /// reached only through ring handles (atomics and raw copies), never
    /// through Rust references.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> Region {
        Region { ptr, len }
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Zeroed heap memory for a ring used within one process: tests, loom and
/// Miri runs, and in-process benchmarks.
#[derive(Debug)]
pub struct HeapRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: HeapRegion owns its allocation like a Box<[u8]>; the rings in it
// synchronise their own accesses.
unsafe impl Send for HeapRegion {}
// SAFETY: &HeapRegion only hands out the region's address.
unsafe impl Sync for HeapRegion {}

impl HeapRegion {
    /// `len` zeroed bytes aligned to `RING_ALIGN`.
    pub fn new(len: usize) -> Result<HeapRegion, RingError> {
        let layout = Layout::from_size_align(len.max(1), RING_ALIGN).map_err(|_| {
            RingError::InvalidCapacity {
                capacity: len,
                reason: "the region would not fit in memory",
            }
        })?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Ok(HeapRegion { ptr, layout })
    }

    /// The region to init and attach rings in. It must not outlive `self`.
    pub fn region(&self) -> Region {
        Region {
            ptr: self.ptr,
            len: self.layout.size(),
        }
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// The alignment every ring needs at the start of its region: enough for a
/// cache-padded header (128 bytes covers adjacent-line prefetch on x86).
pub const RING_ALIGN: usize = 128;

/// A value in the ring's memory that no correct peer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ring memory corrupted: {field} holds {value:#x}")]
pub struct Corruption {
    /// Which word.
    pub field: &'static str,
    /// What it holds.
    pub value: u64,
}

/// Why a ring cannot be initialised in, or attached to, a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The region is too small for the requested capacity.
    #[error("the region holds {have} bytes, the ring needs {need}")]
    TooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The region's start is not aligned to [`RING_ALIGN`] (or the slot type).
    #[error("the region is not aligned to {align} bytes")]
    Misaligned {
        /// Required alignment.
        align: usize,
    },
    /// The capacity is zero, too large, or otherwise unusable.
    #[error("invalid ring capacity {capacity}: {reason}")]
    InvalidCapacity {
        /// The capacity asked for.
        capacity: usize,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A claimer id outside `0..MAX_CLAIMERS`.
    #[error("claimer id {id} is out of range (0 to 30)")]
    InvalidClaimer {
        /// The id given.
        id: u8,
    },
    /// The item type cannot live in a ring (zero-sized).
    #[error("zero-sized item types cannot be sent")]
    ZeroSized,
    /// The region holds another kind of ring, or one for another item type.
    #[error("the region holds an incompatible ring: {field} is {found}, expected {expected}")]
    Incompatible {
        /// What differs.
        field: &'static str,
        /// In the region.
        found: u64,
        /// What this handle needs.
        expected: u64,
    },
    /// A header value no correct creator writes.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

/// The first block of every ring: what `attach` validates.
///
/// | offset | field        | written by | meaning |
/// |--------|--------------|------------|---------|
/// | 0      | `magic`      | creator    | one per ring kind |
/// | 8      | `capacity`   | creator    | slots, or bytes for the record ring |
/// | 16     | `slot_size`  | creator    | bytes per slot (0 for the record ring) |
/// | 24     | `slot_align` | creator    | alignment of a slot |
/// | 32     | `flags`      | creator    | ring-specific (record ring: producer mode) |
#[repr(C)]
#[derive(Debug)]
pub struct RingInfo {
    magic: AtomicU64,
    capacity: AtomicU64,
    slot_size: AtomicU64,
    slot_align: AtomicU64,
    flags: AtomicU64,
}

impl RingInfo {
    fn new(magic: u64, capacity: u64, slot_size: u64, slot_align: u64, flags: u64) -> RingInfo {
        RingInfo {
            magic: AtomicU64::new(magic),
            capacity: AtomicU64::new(capacity),
            slot_size: AtomicU64::new(slot_size),
            slot_align: AtomicU64::new(slot_align),
            flags: AtomicU64::new(flags),
        }
    }

    /// Checks magic, slot size and alignment; returns (capacity, flags).
    /// Relaxed: the creator published the whole region before any attach
    /// (through the segment's init protocol, or by handing over the region).
    fn check(&self, magic: u64, slot_size: u64, slot_align: u64) -> Result<(u64, u64), RingError> {
        let expect = |field, found: u64, expected: u64| {
            if found == expected {
                Ok(())
            } else {
                Err(RingError::Incompatible {
                    field,
                    found,
                    expected,
                })
            }
        };
        expect("magic", self.magic.load(Ordering::Relaxed), magic)?;
        expect(
            "slot size",
            self.slot_size.load(Ordering::Relaxed),
            slot_size,
        )?;
        expect(
            "slot alignment",
            self.slot_align.load(Ordering::Relaxed),
            slot_align,
        )?;
        Ok((
            self.capacity.load(Ordering::Relaxed),
            self.flags.load(Ordering::Relaxed),
        ))
    }
}

/// The block every ring starts with, each field on its own cache line
/// (128 bytes on x86_64):
///
/// | offset | field         | written by | meaning |
/// |--------|---------------|------------|---------|
/// | 0      | `info`        | creator    | [`RingInfo`] |
/// | 128    | `tail`        | producers  | producer-owned position: SPSC and record `tail`, MPMC enqueue position |
/// | 256    | `head`        | consumers  | consumer-owned position: SPSC and record `head`, MPMC dequeue position |
/// | 384    | `data_ready`  | both       | consumers sleep here; producers notify |
/// | 512    | `space_ready` | both       | producers sleep here; consumers notify |
#[repr(C)]
pub(crate) struct RingHeader {
    pub(crate) info: CachePadded<RingInfo>,
    pub(crate) tail: CachePadded<AtomicU64>,
    pub(crate) head: CachePadded<AtomicU64>,
    pub(crate) data_ready: CachePadded<WaitWord>,
    pub(crate) space_ready: CachePadded<WaitWord>,
}

impl RingHeader {
    /// An empty ring's header.
    fn new(info: RingInfo) -> RingHeader {
        RingHeader {
            info: CachePadded::new(info),
            tail: CachePadded::new(AtomicU64::new(0)),
            head: CachePadded::new(AtomicU64::new(0)),
            data_ready: CachePadded::new(WaitWord::new()),
            space_ready: CachePadded::new(WaitWord::new()),
        }
    }

    /// The header of `region` once its size (at least `min_len`) and
    /// alignment are checked and its `info` matches; with the stored
    /// capacity and flags, still to be validated by the caller.
    fn attach(
        region: &Region,
        min_len: usize,
        align: usize,
        expect: (u64, u64, u64),
    ) -> Result<(NonNull<RingHeader>, u64, u64), RingError> {
        check_region(
            region,
            min_len.max(std::mem::size_of::<RingHeader>()),
            align,
        )?;
        // SAFETY: the region is large and aligned enough for a RingHeader
        // (checked above), and it is made only of atomics, valid for any
        // bytes.
        let header = unsafe { &*region.as_ptr().cast::<RingHeader>() };
        let (capacity, flags) = header.info.check(expect.0, expect.1, expect.2)?;
        // From the region's pointer, not from `header`: callers cast it to a
        // larger header (with claim records), which a pointer derived from
        // a `&RingHeader` may not reach.
        Ok((region.ptr.cast(), capacity, flags))
    }
}

/// Where the slots of a ring with header `H` and slots `S` start, and how
/// many bytes `capacity` slots need in all.
fn slotted_layout<H, S>(capacity: usize) -> Result<(usize, usize), RingError> {
    let slots_offset = std::mem::size_of::<H>().next_multiple_of(std::mem::align_of::<S>());
    let total = capacity
        .checked_mul(std::mem::size_of::<S>())
        .and_then(|bytes| bytes.checked_add(slots_offset))
        .filter(|&total| total <= isize::MAX as usize)
        .ok_or(RingError::InvalidCapacity {
            capacity,
            reason: "the ring would not fit in memory",
        })?;
    Ok((slots_offset, total))
}

/// Checks the region's size and alignment for a layout.
fn check_region(region: &Region, need: usize, align: usize) -> Result<(), RingError> {
    let align = align.max(RING_ALIGN);
    if region.as_ptr() as usize % align != 0 {
        return Err(RingError::Misaligned { align });
    }
    if region.len() < need {
        return Err(RingError::TooSmall {
            need,
            have: region.len(),
        });
    }
    Ok(())
}

/// The repair counters of the many-writer ring at the start of `region`
/// (MPMC, record or stream ring), read without attaching; `None` for another ring
/// or a region too small to hold one.
pub fn ring_stats(region: &Region) -> Option<RingStats> {
    if let Some(repairs) = stream::repairs_of(region) {
        return Some(RingStats { repairs, losses: 0 });
    }
    #[repr(C)]
    struct WithClaims {
        ring: RingHeader,
        claims: claims::ClaimTable,
    }
    if region.len() < std::mem::size_of::<WithClaims>()
        || region.as_ptr() as usize % std::mem::align_of::<WithClaims>() != 0
    {
        return None;
    }
    // SAFETY: the region is large and aligned enough (checked above), and
    // the header and claim table are made only of atomics, valid for any
    // bytes; we only load from them.
    let header = unsafe { &*region.as_ptr().cast::<WithClaims>() };
    // Relaxed: the creator published the region before anyone could find it.
    let magic = header.ring.info.magic.load(Ordering::Relaxed);
    (magic == mpmc::MAGIC || magic == record::MAGIC).then(|| header.claims.stats())
}

/// The running totals a ring keeps in its own memory, read without
/// attaching (see [`ring_counters`]). Each field is one load: the set is
/// not a consistent snapshot, and any of it may be scribbled by a peer, so
/// compare two readings with wrapping arithmetic and be ready for a value
/// that went backwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingCounters {
    /// Items producers have put in, ever: the SPSC ring's published
    /// `tail`, the MPMC ring's claimed positions (a claim repaired after
    /// its producer died counts, with no item), the queue's sends. `None`
    /// for the record ring, whose positions count bytes, and the byte
    /// stream, which has no messages.
    pub items: Option<u64>,
    /// Bytes producers have put in, ever: items times the item size (SPSC,
    /// MPMC), bytes written (stream), payload bytes sent (queue), or ring
    /// bytes reserved (record ring: each record's 8-byte header and its
    /// padding to 8 included, and the pad before a wrap).
    pub bytes: Option<u64>,
    /// Futex syscalls made on the ring's wait words (and its locks'), by
    /// every process, summed modulo 2^32.
    pub futex_calls: u32,
    /// Claims or locks of dead endpoints repaired, ever (0 for SPSC).
    pub repairs: u64,
    /// Items lost with a receiver that died holding them, ever (MPMC and
    /// queue; 0 for the others).
    pub losses: u64,
}

/// The running totals of whichever ring starts `region` (SPSC, MPMC,
/// record, stream or queue), read without attaching, with loads only: a
/// read-only mapping will do. `None` if the region is too small or
/// misaligned for a ring, or its magic word names none.
///
/// ```
/// use ipcring::ring::{HeapRegion, ring_counters};
/// use ipcring::ring::spsc::{Producer, SpscRing};
///
/// let heap = HeapRegion::new(SpscRing::<u64>::required_size(8)?)?;
/// // SAFETY: fresh heap memory that outlives the handle, one producer.
/// let mut tx = unsafe {
///     SpscRing::<u64>::init(heap.region(), 8)?;
///     Producer::<u64>::attach(heap.region())?
/// };
/// tx.try_push(7)?;
/// tx.try_push(8)?;
/// let counters = ring_counters(&heap.region()).unwrap();
/// assert_eq!((counters.items, counters.bytes), (Some(2), Some(16)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn ring_counters(region: &Region) -> Option<RingCounters> {
    if region.len() < std::mem::size_of::<RingInfo>() || region.as_ptr() as usize % 8 != 0 {
        return None;
    }
    // SAFETY: large and aligned enough for a RingInfo (checked above), made
    // of atomics, valid for any bytes; we only load.
    let info = unsafe { &*region.as_ptr().cast::<RingInfo>() };
    // Relaxed: the creator published the region before anyone could find it.
    match info.magic.load(Ordering::Relaxed) {
        spsc::MAGIC => spsc::counters_of(region),
        mpmc::MAGIC => mpmc::counters_of(region),
        record::MAGIC => record::counters_of(region),
        stream::MAGIC => stream::counters_of(region),
        #[cfg(not(loom))]
        queue::MAGIC => queue::counters_of(region),
        _ => None,
    }
}

impl RingHeader {
    /// The header at the start of `region`, for loads only, if the region
    /// is large and aligned enough for `H` and its magic is `magic`.
    ///
    /// # Safety
    ///
    /// `H` must be `#[repr(C)]`, start with a `RingHeader` (so it is at
    /// least as large and as aligned), and be made of atomics only, so that
    /// any bytes, however a peer wrote them, are a valid `H`. The caller
    /// only loads through the reference.
    unsafe fn peek<H>(region: &Region, magic: u64) -> Option<&H> {
        if region.len() < std::mem::size_of::<H>()
            || region.as_ptr() as usize % std::mem::align_of::<H>() != 0
        {
            return None;
        }
        // SAFETY: large and aligned enough for `H` (checked above), which
        // starts with a `RingHeader` made of atomics (the caller's promise);
        // we only load. The region's memory outlives the borrow of `region`
        // (Region's contract).
        let ring = unsafe { &*region.as_ptr().cast::<RingHeader>() };
        // Relaxed: the creator published the region before anyone found it.
        if ring.info.magic.load(Ordering::Relaxed) != magic {
            return None;
        }
        // SAFETY: as above, for the whole of `H`.
        Some(unsafe { &*region.as_ptr().cast::<H>() })
    }

    /// Futex syscalls made on both wait words, modulo 2^32.
    fn futex_calls(&self) -> u32 {
        self.data_ready
            .futex_calls()
            .wrapping_add(self.space_ready.futex_calls())
    }
}

/// Validates a capacity read from the region against what it can hold.
fn check_stored_capacity(capacity: u64, max: u64) -> Result<usize, RingError> {
    if capacity == 0 || capacity > max {
        return Err(Corruption {
            field: "capacity",
            value: capacity,
        }
        .into());
    }
    Ok(capacity as usize)
}
