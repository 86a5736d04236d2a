//! A ring of variable-length byte records: one consumer, and either one
//! producer or many.
//!
//! | offset | field          | written by | meaning |
//! |--------|----------------|------------|---------|
//! | 0      | `info`         | creator    | [`RingInfo`], magic `RECDRNG2`; `capacity` in bytes (a power of two, 64 B to 4 GiB); `flags` 1 = one producer, 2 = many |
//! | 128    | `tail`         | producers  | bytes ever reserved: one producer stores it at commit; many CAS `position << 5 \| (id + 1)` at reserve |
//! | 256    | `head`         | consumer   | bytes ever released |
//! | 384    | `data_ready`   | both | the consumer sleeps here |
//! | 512    | `space_ready`  | both | producers sleep here |
//! | 640    | claims         | each producer its own record | see [`claims`]; used with many producers |
//! | 8960   | buffer         | | `capacity` bytes of records |
//!
//! A record is an 8-byte header word and its payload, padded to 8 bytes. It
//! never wraps: when it does not fit before the end, the producer first
//! writes a *pad* header that covers the rest of the buffer, and the record
//! starts at offset 0. A record may carry at most `capacity / 2 - 8` bytes,
//! so an empty ring always has room for one.
//!
//! Header word: bit 63 committed, bits 32..=62 a tag (`position / 8`, 31
//! bits), bit 31 skip (an aborted reservation), bits 0..=30 the payload
//! length; a length field of all ones (with bit 31) marks a pad. The tag ties
//! a header to its position, so a header left from an earlier lap never
//! passes for a new one.
//!
//! With one producer the consumer knows what is published from `tail`. With
//! many, producers reserve space with a CAS on `tail` and publish each
//! record by storing its header last; the consumer trusts only a committed
//! header with the right tag, and zeroes the bytes it consumes, so that
//! stale payload bytes never look like a header in a later lap.
//!
//! **Repair (many producers).** Before its CAS on `tail`, a producer
//! announces the range it is about to reserve (start and size, with the
//! pad) in its claim record, and its id goes into `tail` with the CAS. A
//! producer about to move `tail` past someone else's reservation first
//! *confirms* that reservation in the owner's claim record (a CAS that sets
//! a bit), so every reservation is attributable after the owner dies: the
//! latest by `tail`, older ones by their confirmed record. The layer above
//! calls [`RecordProducer::repair`] for a producer it found dead; the ring
//! then writes the pad and a committed *skip* record over the dead
//! producer's range unless its record was committed, so the consumer passes
//! over it. A grant that is leaked (`mem::forget`) is abandoned the same way
//! by its own producer at the next reserve, or when the producer is
//! dropped.
//!
//! Every length read from the buffer is checked: a record that would cross
//! the end of the buffer or the reserved data, or exceed the maximum, is
//! reported as corruption.

use std::ptr::NonNull;

use super::bytes::ByteBuf;
use super::claims::{self, ClaimTable, NO_CLAIM, Repair, RingStats, Side};
use super::{Corruption, Region, RingCounters, RingError, RingHeader, RingInfo, check_region};
use crate::sync::shim::{AtomicU64, Ordering};
use crate::sync::{Deadline, WaitStrategy};

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"RECDRNG2");
const HEADER: usize = 8;
const COMMITTED: u64 = 1 << 63;
const SKIP: u64 = 1 << 31;
const PAD_LEN: u64 = 0xffff_ffff;
const LEN_MASK: u64 = 0x7fff_ffff;
const TAG_MASK: u64 = 0x7fff_ffff << 32;
/// The largest buffer: tags stay unique per lap (cap / 8 < 2^31 would not
/// wrap them) and lengths fit in 31 bits.
pub const MAX_CAPACITY: usize = 1 << 32;
/// The smallest buffer.
pub const MIN_CAPACITY: usize = 64;

/// Who may produce into a record ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerMode {
    /// One producer at a time: publication by a counter, no CAS.
    Single,
    /// Any number of producers: reservation by CAS, publication per record.
    Many,
}

impl ProducerMode {
    fn flags(self) -> u64 {
        match self {
            ProducerMode::Single => 1,
            ProducerMode::Many => 2,
        }
    }

    fn from_flags(flags: u64) -> Result<ProducerMode, Corruption> {
        match flags {
            1 => Ok(ProducerMode::Single),
            2 => Ok(ProducerMode::Many),
            value => Err(Corruption {
                field: "producer mode",
                value,
            }),
        }
    }
}

/// The ring header, then the producers' claim records.
#[repr(C)]
struct Header {
    ring: RingHeader,
    claims: ClaimTable,
}

const BUFFER_OFFSET: usize = std::mem::size_of::<Header>();

/// The totals of the record ring at the start of `region`: `tail` counts
/// bytes reserved (one producer: a plain count; many: a position with the
/// last claimer's id), framing included. Records are not counted: that
/// would take a write per record that the positions spare us. Loads only.
pub(crate) fn counters_of(region: &Region) -> Option<RingCounters> {
    // SAFETY: `Header` is repr(C), starts with a RingHeader, and holds
    // atomics only; we only load.
    let header = unsafe { RingHeader::peek::<Header>(region, MAGIC)? };
    // Relaxed: statistics; each load stands alone.
    let tail = header.ring.tail.load(Ordering::Relaxed);
    let flags = header.ring.info.flags.load(Ordering::Relaxed);
    let bytes = match ProducerMode::from_flags(flags) {
        Ok(ProducerMode::Single) => Some(tail),
        Ok(ProducerMode::Many) => Some(claims::position(tail)),
        Err(_) => None,
    };
    let stats = header.claims.stats();
    Some(RingCounters {
        items: None,
        bytes,
        futex_calls: header.ring.futex_calls(),
        repairs: stats.repairs,
        losses: stats.losses,
    })
}

/// A claim record with many producers: bits 32..=63 the start position / 8
/// (modulo 2^32), bit 31 confirmed, bits 0..=30 the size / 8 (pad included).
const CONFIRMED: u64 = 1 << 31;
const NEED_MASK: u64 = 0x7fff_ffff;

fn claim_record(start: u64, need: u64) -> u64 {
    ((start >> 3) & 0xffff_ffff) << 32 | (need >> 3)
}

/// Whether `record` announces the reservation that ends at `end`; its
/// start if so.
fn claim_start(record: u64, end: u64) -> Option<u64> {
    if record == NO_CLAIM {
        return None;
    }
    let need = (record & NEED_MASK) << 3;
    let start = end.wrapping_sub(need);
    (claim_record(start, need) == record & !CONFIRMED).then_some(start)
}

fn tag(position: u64) -> u64 {
    ((position >> 3) & 0x7fff_ffff) << 32
}

fn record_size(len: usize) -> usize {
    HEADER + len.next_multiple_of(8)
}

/// Why a record could not be reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// Not enough free space now.
    #[error("the ring has no room for the record now")]
    Full,
    /// The record is larger than this ring can ever hold.
    #[error("a record of {len} bytes exceeds this ring's maximum of {max}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The ring's maximum payload.
        max: usize,
    },
    /// The consumer's counter is impossible.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

pub use super::spsc::PopError;

/// A record does not fit the caller's buffer; nothing was copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a record of {len} bytes does not fit a buffer of {capacity}")]
pub struct BufferTooSmall {
    /// The record's payload length.
    pub len: usize,
    /// The buffer's length.
    pub capacity: usize,
}

/// Sizes and initialises record rings.
pub struct RecordRing;

impl RecordRing {
    /// Bytes a ring with a `capacity`-byte buffer needs.
    pub fn required_size(capacity: usize) -> Result<usize, RingError> {
        Self::check_capacity(capacity)?;
        Ok(BUFFER_OFFSET + capacity)
    }

    /// The largest payload a ring of `capacity` bytes takes.
    pub fn max_payload(capacity: usize) -> usize {
        (capacity / 2).saturating_sub(HEADER)
    }

    /// Validates the ring at the start of `region`, as `attach` does,
    /// without attaching; returns its buffer capacity in bytes and its
    /// producer mode. Only its creator-written info block is read.
    pub fn check(region: &Region) -> Result<(usize, ProducerMode), RingError> {
        Shared::attach(*region).map(|shared| (shared.capacity as usize, shared.mode))
    }

    fn check_capacity(capacity: usize) -> Result<(), RingError> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(RingError::InvalidCapacity {
                capacity,
                reason: "a record ring's buffer is a power of two from 64 B to 4 GiB",
            });
        }
        Ok(())
    }

    /// Writes an empty ring with a `capacity`-byte buffer at the start of
    /// `region`.
    ///
    /// # Safety
    ///
    /// Nothing else may access the region while this runs, and no handle
    /// attached to a previous ring in it may be used afterwards.
    pub unsafe fn init(
        region: Region,
        capacity: usize,
        mode: ProducerMode,
    ) -> Result<(), RingError> {
        let total = Self::required_size(capacity)?;
        check_region(&region, total, 8)?;
        let header = Header {
            ring: RingHeader::new(RingInfo::new(MAGIC, capacity as u64, 0, 8, mode.flags())),
            claims: ClaimTable::new(),
        };
        let base = region.as_ptr();
        // SAFETY: the region holds `total` bytes, aligned (checked above),
        // and nothing else accesses it now.
        unsafe {
            base.cast::<Header>().write(header);
            let words = base.add(BUFFER_OFFSET).cast::<AtomicU64>();
            for i in 0..capacity / 8 {
                words.add(i).write(AtomicU64::new(0));
            }
        }
        Ok(())
    }
}

struct Shared {
    header: NonNull<Header>,
    buffer: ByteBuf,
    capacity: u64,
    mode: ProducerMode,
}

impl Shared {
    fn attach(region: Region) -> Result<Shared, RingError> {
        let (header, capacity, flags) =
            RingHeader::attach(&region, BUFFER_OFFSET + MIN_CAPACITY, 8, (MAGIC, 0, 8))?;
        // The region holds a whole Header (the minimum length covers it).
        let header = header.cast::<Header>();
        let fits = region.len() - BUFFER_OFFSET;
        if RecordRing::check_capacity(capacity as usize).is_err() || capacity as usize > fits {
            return Err(Corruption {
                field: "capacity",
                value: capacity,
            }
            .into());
        }
        let mode = ProducerMode::from_flags(flags)?;
        // SAFETY: the buffer follows the header inside the region and holds
        // `capacity` bytes of initialised words (checked above).
        let buffer = unsafe {
            ByteBuf::new(
                NonNull::new_unchecked(region.as_ptr().add(BUFFER_OFFSET).cast()),
                capacity as usize,
            )
        };
        Ok(Shared {
            header,
            buffer,
            capacity,
            mode,
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the region outlives every handle (Region's contract) and
        // holds an initialised Header.
        unsafe { self.header.as_ref() }
    }

    fn offset(&self, position: u64) -> usize {
        (position & (self.capacity - 1)) as usize
    }

    fn max_payload(&self) -> usize {
        RecordRing::max_payload(self.capacity as usize)
    }
}

/// A producing end. With [`ProducerMode::Single`] at most one may exist;
/// with [`ProducerMode::Many`], each has its own claimer id.
pub struct RecordProducer {
    shared: Shared,
    /// Single mode: our copy of `tail`. Many: unused.
    tail: u64,
    cached_head: u64,
    id: u8,
    /// The record position and length of the grant handed out last, until
    /// it is committed or dropped: if it is still set at the next reserve
    /// (or when the producer goes), the grant was leaked.
    open: Option<(u64, usize)>,
}

// SAFETY: accesses are synchronised by the ring protocol.
unsafe impl Send for RecordProducer {}

/// Whether a record fits at a `tail` position.
enum Room {
    /// It fits after a pad of this many bytes.
    Fits(u64),
    /// The consumer is past our view of `tail`: reload it.
    Stale,
}

impl RecordProducer {
    /// Attaches a producing end; `id` (0 to 30) names it in claim records
    /// when the ring has many producers.
    ///
    /// # Safety
    ///
    /// If the ring was made for [`ProducerMode::Single`], no other producer
    /// may reserve while the returned one reserves. With many producers, no
    /// other producer with the same `id` may. (A handle that never reserves,
    /// used only to repair, reads `stats` or waits, takes no part.)
    pub unsafe fn attach(region: Region, id: u8) -> Result<RecordProducer, RingError> {
        let id = claims::check_id(id)?;
        let shared = Shared::attach(region)?;
        let header = shared.header();
        // Acquire: pairs with the consumer's Release store of `head`. Head
        // first: the consumer released only what producers had reserved
        // before, so the `tail` we load next is at or past it.
        let head = header.ring.head.load(Ordering::Acquire);
        // Acquire: pairs with the Release store of `tail` by a previous
        // single producer (or the Release CAS of a many-producer one).
        let tail = shared.tail_position(header.ring.tail.load(Ordering::Acquire));
        if tail.wrapping_sub(head) > shared.capacity || tail % 8 != 0 {
            return Err(Corruption {
                field: "tail",
                value: tail,
            }
            .into());
        }
        if head % 8 != 0 {
            return Err(Corruption {
                field: "head",
                value: head,
            }
            .into());
        }
        Ok(RecordProducer {
            shared,
            tail,
            cached_head: head,
            id,
            open: None,
        })
    }

    /// The largest payload this ring takes.
    pub fn max_payload(&self) -> usize {
        self.shared.max_payload()
    }

    /// The producer mode the ring was made with.
    pub fn mode(&self) -> ProducerMode {
        self.shared.mode
    }

    /// Reserves room for a record of `len` bytes. Write the payload into
    /// the grant, then commit it; a grant dropped uncommitted becomes a
    /// record the consumer skips, and so does a leaked one (at the next
    /// reserve, or when this producer is dropped).
    pub fn try_reserve(&mut self, len: usize) -> Result<RecordGrant<'_>, ReserveError> {
        let reservation = self.reserve_open(len)?;
        Ok(self.grant(reservation))
    }

    /// The grant for a reservation [`reserve_open`](Self::reserve_open)
    /// just made. Split from it so that a caller can retry a reservation in
    /// a loop and borrow the producer for the grant only once it is made.
    pub(crate) fn grant(&mut self, reservation: Reservation) -> RecordGrant<'_> {
        RecordGrant {
            producer: self,
            position: reservation.position,
            len: reservation.len,
            committed: false,
        }
    }

    /// Reserves as [`try_reserve`](Self::try_reserve) does; the reservation
    /// is open (and abandoned as leaked at the next reserve) until
    /// [`grant`](Self::grant) turns it into a grant.
    pub(crate) fn reserve_open(&mut self, len: usize) -> Result<Reservation, ReserveError> {
        self.abandon_leaked_grant();
        let max = self.max_payload();
        if len > max {
            return Err(ReserveError::TooLarge { len, max });
        }
        let size = record_size(len) as u64;
        let (start, pad) = match self.shared.mode {
            ProducerMode::Single => match self.room(self.tail, size)? {
                Room::Fits(pad) => (self.tail, pad),
                Room::Stale => return Err(self.corrupted_head()),
            },
            ProducerMode::Many => self.reserve_many(size)?,
        };
        failpoint!("record.reserve.claimed", Err(ReserveError::Full));
        if pad > 0 {
            // A pad is complete as soon as it is written; with one producer
            // it becomes visible with the record's tail store.
            let word = COMMITTED | tag(start) | PAD_LEN;
            // Release: pairs with the consumer's Acquire header load (many
            // producers; with one, the tail store publishes it).
            self.shared
                .buffer
                .word(self.shared.offset(start))
                .store(word, Ordering::Release);
        }
        failpoint!("record.reserve.padded", Err(ReserveError::Full));
        let position = start.wrapping_add(pad);
        self.open = Some((position, len));
        Ok(Reservation { position, len })
    }

    /// Many producers: claims `pad + size` bytes by CAS on `tail`; returns
    /// the start and the pad.
    fn reserve_many(&mut self, size: u64) -> Result<(u64, u64), ReserveError> {
        // Acquire: pairs with the Release CAS of `tail` by the previous
        // claimer, so the claim record it announced before is visible to
        // `confirm`.
        let mut word = self.shared.header().ring.tail.load(Ordering::Acquire);
        loop {
            if let Some(owner) = claims::owner(word) {
                if owner != self.id {
                    self.shared.confirm(owner, claims::position(word));
                }
            }
            let tail = claims::position(word);
            let pad = match self.room(tail, size)? {
                Room::Fits(pad) => pad,
                Room::Stale => {
                    // Bounded: if `tail` has not moved, no producer is
                    // behind the consumer's `head`, and it is corrupt.
                    // Acquire: as above.
                    let current = self.shared.header().ring.tail.load(Ordering::Acquire);
                    if current == word {
                        return Err(self.corrupted_head());
                    }
                    word = current;
                    continue;
                }
            };
            let need = pad + size;
            let header = self.shared.header();
            // The full start first, then the record that names it (Release
            // in `announce`): a repair that reads the record (Acquire) and
            // then the start sees this start or a later one.
            header
                .claims
                .start(Side::Producer, self.id)
                .store(tail, Ordering::Relaxed);
            header
                .claims
                .announce(Side::Producer, self.id, claim_record(tail, need));
            failpoint!("record.reserve.announced", Err(ReserveError::Full));
            // Release: pairs with the Acquire loads of `tail` in the next
            // claimer's `reserve_many` and in `repair`, publishing the claim
            // record announced above. Acquire on failure: as the load above.
            match header.ring.tail.compare_exchange_weak(
                word,
                claims::pack(tail.wrapping_add(need), Some(self.id)),
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok((tail, pad)),
                Err(current) => word = current,
            }
        }
    }

    fn corrupted_head(&self) -> ReserveError {
        // Relaxed: only reported.
        let head = self.shared.header().ring.head.load(Ordering::Relaxed);
        Corruption {
            field: "head",
            value: head,
        }
        .into()
    }

    /// Whether `size` bytes fit at `tail` (after a pad to the end if the
    /// record would cross it); rereads `head` only when the cached one says
    /// no.
    fn room(&mut self, tail: u64, size: u64) -> Result<Room, ReserveError> {
        let capacity = self.shared.capacity;
        // Records start at multiples of 8; a `tail` that is not one was
        // written by no producer.
        if tail % 8 != 0 {
            return Err(Corruption {
                field: "tail",
                value: tail,
            }
            .into());
        }
        let to_end = capacity - (tail & (capacity - 1));
        let pad = if size > to_end { to_end } else { 0 };
        let need = pad + size;
        let used = tail.wrapping_sub(self.cached_head);
        if used <= capacity && capacity - used >= need {
            return Ok(Room::Fits(pad));
        }
        // Acquire: pairs with the Release store of `head` in the consumer's
        // `release`: its reads (and, with many producers, its zeroing) of
        // the freed bytes happen before we reuse them.
        let head = self.shared.header().ring.head.load(Ordering::Acquire);
        if head % 8 != 0 {
            return Err(Corruption {
                field: "head",
                value: head,
            }
            .into());
        }
        if head.wrapping_sub(tail) as i64 > 0 {
            // The consumer is past our view of `tail`: with many producers,
            // others reserved and it consumed since we read `tail`. With one
            // producer it is impossible.
            return match self.shared.mode {
                ProducerMode::Single => Err(Corruption {
                    field: "head",
                    value: head,
                }
                .into()),
                ProducerMode::Many => Ok(Room::Stale),
            };
        }
        let used = tail.wrapping_sub(head);
        if used > capacity {
            return Err(Corruption {
                field: "tail",
                value: tail,
            }
            .into());
        }
        self.cached_head = head;
        if capacity - used < need {
            return Err(ReserveError::Full);
        }
        Ok(Room::Fits(pad))
    }

    /// Reserves, copies `payload` in and commits: one record.
    pub fn try_push(&mut self, payload: &[u8]) -> Result<(), ReserveError> {
        let mut grant = self.try_reserve(payload.len())?;
        grant.write_at(0, payload);
        grant.commit();
        Ok(())
    }

    fn publish(&mut self, position: u64, len: usize, skip: bool) {
        self.open = None;
        let size = record_size(len) as u64;
        let mut word = COMMITTED | tag(position) | len as u64;
        if skip {
            word |= SKIP;
        }
        let header = self.shared.header();
        let slot = self.shared.buffer.word(self.shared.offset(position));
        match self.shared.mode {
            ProducerMode::Single => {
                slot.store(word, Ordering::Relaxed);
                self.tail = position.wrapping_add(size);
                // Release: pairs with the consumer's Acquire load of `tail`,
                // publishing the header, payload and any pad before it.
                header.ring.tail.store(self.tail, Ordering::Release);
            }
            ProducerMode::Many => {
                // Release: pairs with the consumer's Acquire header load,
                // publishing the payload written before it.
                slot.store(word, Ordering::Release);
                // The claim is published: nothing is left for a repair to
                // find, however long this record stays. (A stale record
                // could otherwise name bytes a later lap reuses.)
                header.claims.announce(Side::Producer, self.id, NO_CLAIM);
            }
        }
        header.ring.data_ready.notify_one();
    }

    /// A grant handed out earlier and neither committed nor dropped (it was
    /// leaked): publish it as a skip, so the consumer is not stuck at it.
    /// With one producer nothing was published yet, so it simply never was.
    /// Runs at the next reserve and on drop; call it before the producer's
    /// endpoint leaves, so that no one sees the producers gone while a
    /// reservation of theirs is still open.
    pub fn abandon_leaked_grant(&mut self) {
        if let Some((position, len)) = self.open.take() {
            if self.shared.mode == ProducerMode::Many {
                self.publish(position, len, true);
            }
        }
    }

    /// Repairs the reservation of dead producer `id` whose claim record
    /// read `record` (from [`claim_record`](Self::claim_record)): unless it
    /// was committed, its range becomes a pad and a committed skip record
    /// that the consumer passes over. Idempotent. Only for rings with many
    /// producers; a single producer leaves nothing to repair.
    ///
    /// Call it only for a producer whose owner is dead (or gone for good):
    /// a live producer's record would be overwritten under it.
    pub fn repair(&self, id: u8, record: u64) -> Repair {
        let repair = self.shared.repair(id, record);
        self.shared.header().claims.count(repair);
        if repair != Repair::Nothing {
            self.wake_consumer();
        }
        repair
    }

    /// What producer `id` last announced; pass it to
    /// [`repair`](Self::repair) once its owner is known to be dead.
    pub fn claim_record(&self, id: u8) -> u64 {
        self.shared.header().claims.load(Side::Producer, id)
    }

    /// Repairs and losses counted in this ring.
    pub fn stats(&self) -> RingStats {
        self.shared.header().claims.stats()
    }

    /// Waits until a record of `len` bytes would fit, or `stop()` holds, or
    /// the deadline passes.
    pub fn wait_for_space(
        &mut self,
        len: usize,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        // Worst case: a pad of up to one record, then the record.
        let need = (2 * record_size(len.min(self.max_payload())) as u64).min(self.shared.capacity);
        let capacity = self.shared.capacity;
        let single_tail = self.tail;
        let shared = &self.shared;
        let header = shared.header();
        header.ring.space_ready.wait_until(strategy, deadline, || {
            let tail = match shared.mode {
                ProducerMode::Single => single_tail,
                // Relaxed: only a hint to stop waiting; `try_reserve`
                // decides.
                ProducerMode::Many => claims::position(header.ring.tail.load(Ordering::Relaxed)),
            };
            // Acquire: as in `room`.
            let head = header.ring.head.load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            used > capacity || capacity - used >= need || stop()
        })
    }

    /// Wakes the consumer if it sleeps (used when a producer leaves).
    pub fn wake_consumer(&self) {
        self.shared.header().ring.data_ready.notify_all();
    }
}

impl Drop for RecordProducer {
    fn drop(&mut self) {
        self.abandon_leaked_grant();
    }
}

impl Shared {
    /// The position a `tail` word holds in this ring's mode.
    fn tail_position(&self, word: u64) -> u64 {
        match self.mode {
            ProducerMode::Single => word,
            ProducerMode::Many => claims::position(word),
        }
    }

    /// Confirms, in `owner`'s claim record, the reservation that ends at
    /// `end` (the latest, named by `tail`), before `tail` moves past it.
    fn confirm(&self, owner: u8, end: u64) {
        let record = self.header().claims.load(Side::Producer, owner);
        if record & CONFIRMED == 0 && claim_start(record, end).is_some() {
            // Relaxed: the bit publishes nothing; `repair` reads the record
            // with Acquire after learning that its owner died.
            let _ = self
                .header()
                .claims
                .record(Side::Producer, owner)
                .compare_exchange(
                    record,
                    record | CONFIRMED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
        }
    }

    /// See [`RecordProducer::repair`].
    fn repair(&self, id: u8, record: u64) -> Repair {
        if self.mode != ProducerMode::Many
            || record == NO_CLAIM
            || usize::from(id) >= claims::MAX_CLAIMERS
        {
            return Repair::Nothing;
        }
        let header = self.header();
        // Acquire: pairs with the Release CAS that moved `tail`: if it moved
        // past the dead producer's reservation, the mover confirmed it in
        // the record first, and we read the record after this load.
        let tail_word = header.ring.tail.load(Ordering::Acquire);
        // Reread after `tail`: a producer that moved `tail` past this claim
        // since the caller read the record has set its confirmed bit. Any
        // other change means the record is no longer the dead owner's.
        let current = header.claims.load(Side::Producer, id);
        if current == NO_CLAIM || current & !CONFIRMED != record & !CONFIRMED {
            return Repair::Nothing;
        }
        let record = current;
        // Relaxed: stored before the record (Release), which we read with
        // Acquire.
        let start = header
            .claims
            .start(Side::Producer, id)
            .load(Ordering::Relaxed);
        let tail = claims::position(tail_word);
        let need = (record & NEED_MASK) << 3;
        let capacity = self.capacity;
        if tail % 8 != 0
            || start % 8 != 0
            || claim_record(start, need) != record & !CONFIRMED
            || need < 8
            || need > capacity
        {
            // A start that is not the record's (a producer that died
            // between the two stores never made its CAS), or scribbled
            // words: nothing we can repair safely.
            return Repair::Nothing;
        }
        let end = start.wrapping_add(need);
        let latest = claims::owner(tail_word) == Some(id) && end == tail;
        if !latest && record & CONFIRMED == 0 {
            // The reservation was never made (the CAS failed or never ran).
            return Repair::Nothing;
        }
        if end.wrapping_sub(tail) as i64 > 0 {
            return Repair::Nothing;
        }
        let to_end = capacity - (start & (capacity - 1));
        let pad = if need > to_end { to_end } else { 0 };
        let position = start.wrapping_add(pad);
        let size = need - pad;
        if size < 8 || size as usize - HEADER > self.max_payload() {
            return Repair::Nothing;
        }
        if pad > 0 {
            let padded = COMMITTED | tag(start) | PAD_LEN;
            self.rewrite_header(start, |current| (current != padded).then_some(padded));
        }
        let skipped = COMMITTED | tag(position) | SKIP | (size - HEADER as u64);
        let rewritten = self.rewrite_header(position, |current| {
            // A committed record (or a skip already written) stays.
            (current & COMMITTED == 0 || current & TAG_MASK != tag(position)).then_some(skipped)
        });
        if rewritten {
            Repair::Skipped
        } else {
            Repair::Nothing
        }
    }

    /// Replaces the header word at `position` with what `replace` makes of
    /// it, unless the consumer has passed `position`: then the header was
    /// there, and its bytes may already belong to a later lap. True if
    /// this call wrote it.
    ///
    /// `head` is read after the header word: once we have read a header
    /// that is missing or not committed, the consumer cannot pass it until
    /// someone writes it, so a `head` still at or before it then means the
    /// bytes are still this lap's when the compare-exchange lands.
    fn rewrite_header(&self, position: u64, replace: impl FnOnce(u64) -> Option<u64>) -> bool {
        let word = self.buffer.word(self.offset(position));
        // Acquire: pairs with the Release store of a header here.
        let current = word.load(Ordering::Acquire);
        let Some(replacement) = replace(current) else {
            return false;
        };
        // Acquire: pairs with the consumer's Release store of `head`.
        let head = self.header().ring.head.load(Ordering::Acquire);
        if (position.wrapping_sub(head) as i64) < 0 {
            return false;
        }
        // Release: pairs with the consumer's Acquire header load, so the
        // dead producer's writes happen before the consumer passes it.
        word.compare_exchange(current, replacement, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }
}

/// A reservation made by `RecordProducer::reserve_open`, not yet a grant.
#[derive(Debug)]
pub(crate) struct Reservation {
    position: u64,
    len: usize,
}

/// Room for one record, reserved. Commit publishes it; dropping it
/// uncommitted publishes a record the consumer skips.
pub struct RecordGrant<'a> {
    producer: &'a mut RecordProducer,
    position: u64,
    len: usize,
    committed: bool,
}

impl RecordGrant<'_> {
    /// The payload length reserved.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the record is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn payload_offset(&self) -> usize {
        self.producer.shared.offset(self.position) + HEADER
    }

    /// Copies `bytes` into the payload at `offset`; returns how many fit.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        failpoint!("record.write", 0);
        let n = bytes.len().min(self.len - offset);
        let start = self.payload_offset();
        // Payload bytes are copied by 8-aligned runs; an unaligned start is
        // handled by reading back and merging the first word.
        write_unaligned(&self.producer.shared.buffer, start, offset, &bytes[..n]);
        n
    }

    /// A raw pointer to the payload's first byte, for writing in place.
    /// The payload is `len()` bytes and is not shared until `commit`.
    #[cfg(not(loom))]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.producer.shared.buffer.ptr(self.payload_offset())
    }

    /// Publishes the record.
    pub fn commit(mut self) {
        self.committed = true;
        failpoint!("record.commit", std::mem::forget(self));
        self.producer.publish(self.position, self.len, false);
    }
}

impl Drop for RecordGrant<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.producer.publish(self.position, self.len, true);
        }
    }
}

/// Copies `bytes` to `base + offset` where `base` is 8-aligned but
/// `offset` need not be.
fn write_unaligned(buffer: &ByteBuf, base: usize, offset: usize, bytes: &[u8]) {
    let misalign = offset % 8;
    let aligned = base + offset - misalign;
    if misalign == 0 {
        buffer.write(aligned, bytes);
        return;
    }
    let mut word = [0u8; 8];
    let head_len = (8 - misalign).min(bytes.len());
    buffer.read(aligned, &mut word);
    word[misalign..misalign + head_len].copy_from_slice(&bytes[..head_len]);
    buffer.write(aligned, &word);
    if bytes.len() > head_len {
        buffer.write(aligned + 8, &bytes[head_len..]);
    }
}

/// The consuming end; one per ring.
pub struct RecordConsumer {
    shared: Shared,
    head: u64,
    /// Single mode: the producer's `tail` as last read.
    cached_tail: u64,
}

// SAFETY: accesses are synchronised by the ring protocol.
unsafe impl Send for RecordConsumer {}

impl RecordConsumer {
    /// Attaches the consuming end.
    ///
    /// # Safety
    ///
    /// No other consumer may use this ring while the returned one lives.
    pub unsafe fn attach(region: Region) -> Result<RecordConsumer, RingError> {
        let shared = Shared::attach(region)?;
        let header = shared.header();
        // Acquire: pairs with the Release store of `head` by a previous
        // consumer; loaded before `tail` for the reason given in the
        // producer's `attach`.
        let head = header.ring.head.load(Ordering::Acquire);
        // Acquire: pairs with a single producer's Release store of `tail`
        // (or a many-producer one's Release CAS).
        let tail = shared.tail_position(header.ring.tail.load(Ordering::Acquire));
        if tail.wrapping_sub(head) > shared.capacity || head % 8 != 0 {
            return Err(Corruption {
                field: "head",
                value: head,
            }
            .into());
        }
        Ok(RecordConsumer {
            shared,
            head,
            cached_tail: head,
        })
    }

    /// The largest payload this ring takes.
    pub fn max_payload(&self) -> usize {
        self.shared.max_payload()
    }

    /// The next record, as a view that releases it when dropped.
    pub fn try_receive(&mut self) -> Result<RecordView<'_>, PopError> {
        loop {
            let (len, size) = match self.peek()? {
                Some(found) => found,
                None => return Err(PopError::Empty),
            };
            match len {
                Peeked::Record(len) => {
                    failpoint!("record.consume", Err(PopError::Empty));
                    return Ok(RecordView {
                        consumer: self,
                        len,
                        size,
                    });
                }
                Peeked::Skip => self.release(size),
            }
        }
    }

    /// Whether a record is ready, passing over pads and skipped records on
    /// the way; `try_receive` then returns it.
    pub fn poll(&mut self) -> Result<bool, Corruption> {
        loop {
            match self.peek()? {
                None => return Ok(false),
                Some((Peeked::Record(_), _)) => return Ok(true),
                Some((Peeked::Skip, size)) => self.release(size),
            }
        }
    }

    /// The payload length of the next record, passing over pads and
    /// skipped records on the way; `None` if none is published. The record
    /// stays in the ring.
    pub fn next_len(&mut self) -> Result<Option<usize>, Corruption> {
        loop {
            match self.peek()? {
                None => return Ok(None),
                Some((Peeked::Record(len), _)) => return Ok(Some(len)),
                Some((Peeked::Skip, size)) => self.release(size),
            }
        }
    }

    /// Copies the next record into `out` (replacing its contents); returns
    /// its length.
    pub fn try_receive_into(&mut self, out: &mut Vec<u8>) -> Result<usize, PopError> {
        let view = self.try_receive()?;
        out.clear();
        out.resize(view.len(), 0);
        view.read_at(0, out);
        Ok(view.len())
    }

    /// Looks at the header at `head`: `None` if nothing is published there.
    fn peek(&mut self) -> Result<Option<(Peeked, u64)>, Corruption> {
        let capacity = self.shared.capacity;
        let offset = self.shared.offset(self.head);
        let word = match self.shared.mode {
            ProducerMode::Single => {
                if self.cached_tail == self.head {
                    // Acquire: pairs with the producer's Release store of
                    // `tail` in `publish`.
                    let tail = self.shared.header().ring.tail.load(Ordering::Acquire);
                    let available = tail.wrapping_sub(self.head);
                    if available > capacity || available % 8 != 0 {
                        return Err(Corruption {
                            field: "tail",
                            value: tail,
                        });
                    }
                    self.cached_tail = tail;
                    if available == 0 {
                        return Ok(None);
                    }
                }
                let word = self.shared.buffer.word(offset).load(Ordering::Relaxed);
                if word & COMMITTED == 0 || word & TAG_MASK != tag(self.head) {
                    return Err(Corruption {
                        field: "record header",
                        value: word,
                    });
                }
                word
            }
            ProducerMode::Many => {
                // Acquire: pairs with the producer's Release header store in
                // `publish` (or of a pad in `try_reserve`).
                let word = self.shared.buffer.word(offset).load(Ordering::Acquire);
                if word & COMMITTED == 0 || word & TAG_MASK != tag(self.head) {
                    return Ok(None);
                }
                word
            }
        };
        let to_end = capacity - offset as u64;
        if word & 0xffff_ffff == PAD_LEN {
            self.check_published(to_end, word)?;
            return Ok(Some((Peeked::Skip, to_end)));
        }
        let len = (word & LEN_MASK) as usize;
        let size = record_size(len) as u64;
        if len > self.max_payload() || size > to_end {
            return Err(Corruption {
                field: "record length",
                value: word,
            });
        }
        self.check_published(size, word)?;
        if word & SKIP != 0 {
            return Ok(Some((Peeked::Skip, size)));
        }
        Ok(Some((Peeked::Record(len), size)))
    }

    /// A record must lie within what producers reserved: with one, what
    /// `tail` published; with many, what they claimed (which includes ranges
    /// still being written), so that a scribbled length cannot make us read
    /// (or zero) bytes beyond anything reserved.
    fn check_published(&mut self, size: u64, word: u64) -> Result<(), Corruption> {
        if size <= self.cached_tail.wrapping_sub(self.head) {
            return Ok(());
        }
        if self.shared.mode == ProducerMode::Many {
            // Acquire: pairs with the producers' Release CAS of `tail`.
            let tail = self.shared.header().ring.tail.load(Ordering::Acquire);
            let tail = claims::position(tail);
            if tail.wrapping_sub(self.head) <= self.shared.capacity {
                self.cached_tail = tail;
                if size <= tail.wrapping_sub(self.head) {
                    return Ok(());
                }
            }
        }
        Err(Corruption {
            field: "record length",
            value: word,
        })
    }

    fn release(&mut self, size: u64) {
        let offset = self.shared.offset(self.head);
        if self.shared.mode == ProducerMode::Many {
            // Mark the record skipped first, so a consumer that dies from here
            // on leaves a record its successor passes over, not a hole it
            // would wait at forever. The header keeps its tag, which no later
            // lap's position shares, so it can stay.
            let header = self.shared.buffer.word(offset);
            let word = header.load(Ordering::Relaxed);
            if word & 0xffff_ffff != PAD_LEN {
                header.store(word | SKIP, Ordering::Relaxed);
            }
            failpoint!("record.release.marked");
            // Payload bytes, though, could read as a header at a later
            // lap's record boundary: zero them.
            self.shared
                .buffer
                .zero(offset + HEADER, size as usize - HEADER);
            failpoint!("record.release.zeroed");
        }
        self.head = self.head.wrapping_add(size);
        let header = self.shared.header();
        // Release: pairs with the producers' Acquire load of `head` in
        // `refresh_head`, handing the bytes (read and zeroed) back.
        header.ring.head.store(self.head, Ordering::Release);
        header.ring.space_ready.notify_all();
    }

    /// Waits until a record (or a pad or skip) is published, or `stop()`
    /// holds, or the deadline passes.
    pub fn wait_for_data(
        &mut self,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) -> bool {
        let head = self.head;
        let mode = self.shared.mode;
        let word = self.shared.buffer.word(self.shared.offset(head));
        let header = self.shared.header();
        header.ring.data_ready.wait_until(strategy, deadline, || {
            let published = match mode {
                // Acquire: as in `peek`.
                ProducerMode::Single => header.ring.tail.load(Ordering::Acquire) != head,
                ProducerMode::Many => {
                    let word = word.load(Ordering::Acquire);
                    word & COMMITTED != 0 && word & TAG_MASK == tag(head)
                }
            };
            published || stop()
        })
    }

    /// Wakes producers sleeping for space (used when the consumer leaves).
    pub fn wake_producers(&self) {
        self.shared.header().ring.space_ready.notify_all();
    }
}

enum Peeked {
    Record(usize),
    Skip,
}

/// A received record, borrowed from the ring; released when dropped.
///
/// The bytes stay in shared memory until then: read them with
/// [`to_vec`](RecordView::to_vec), [`copy_to`](RecordView::copy_to) or
/// [`read_at`](RecordView::read_at).
///
/// There is deliberately no `&[u8]` view of the payload (no `Deref`, no
/// `as_slice`). The bytes live in memory that other processes map
/// writable: a correct sender no longer writes them, but a faulty or
/// hostile one (or a scribbler) may, and Rust forbids a shared slice whose
/// bytes change under it, whatever the reader then does with them. The
/// copies read the bytes with atomic word loads, which is sound whatever
/// another process does; a caller that wants zero-copy access and accepts
/// that contract gets the raw pointer from [`as_ptr`](RecordView::as_ptr)
/// and must not make a slice of it either, except of bytes it has copied.
pub struct RecordView<'a> {
    consumer: &'a mut RecordConsumer,
    len: usize,
    size: u64,
}

impl RecordView<'_> {
    /// Payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn payload_offset(&self) -> usize {
        self.consumer.shared.offset(self.consumer.head) + HEADER
    }

    /// Copies payload bytes from `offset` into `out`; returns how many.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let n = out.len().min(self.len - offset);
        let misalign = offset % 8;
        let aligned = self.payload_offset() + offset - misalign;
        let buffer = &self.consumer.shared.buffer;
        if misalign == 0 {
            buffer.read(aligned, &mut out[..n]);
        } else {
            let mut word = [0u8; 8];
            buffer.read(aligned, &mut word);
            let head_len = (8 - misalign).min(n);
            out[..head_len].copy_from_slice(&word[misalign..misalign + head_len]);
            if n > head_len {
                buffer.read(aligned + 8, &mut out[head_len..n]);
            }
        }
        n
    }

    /// The payload, copied out.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.len];
        self.read_at(0, &mut out);
        out
    }

    /// Copies the whole payload to the start of `out`; returns its length.
    /// An `out` shorter than the payload is refused (`BufferTooSmall`,
    /// nothing copied), never filled with a truncated record.
    pub fn copy_to(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let Some(out) = out.get_mut(..self.len) else {
            return Err(BufferTooSmall {
                len: self.len,
                capacity: out.len(),
            });
        };
        Ok(self.read_at(0, out))
    }

    /// A raw pointer to the payload's first byte, valid until the view is
    /// dropped. The producer does not write these bytes before then.
    #[cfg(not(loom))]
    pub fn as_ptr(&self) -> *const u8 {
        self.consumer.shared.buffer.ptr(self.payload_offset())
    }
}

impl Drop for RecordView<'_> {
    fn drop(&mut self) {
        self.consumer.release(self.size);
    }
}
