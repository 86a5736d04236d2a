//! A ring of variable-length byte records: one consumer, and either one
//! producer or many.
//!
//! | offset | field          | written by | meaning |
//! |--------|----------------|------------|---------|
//! | 0      | `info`         | creator    | [`RingInfo`], magic `RECDRING`; `capacity` in bytes (a power of two, 64 B to 4 GiB); `flags` 1 = one producer, 2 = many |
//! | 128    | `tail`         | producers  | bytes ever reserved (one producer: a store at commit; many: a CAS at reserve) |
//! | 256    | `head`         | consumer   | bytes ever released |
//! | 384    | `data_ready`   | both | the consumer sleeps here |
//! | 512    | `space_ready`  | both | producers sleep here |
//! | 640    | buffer         | | `capacity` bytes of records |
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
//! Every length read from the buffer is checked: a record that would cross
//! the end of the buffer or the published data, or exceed the maximum, is
//! reported as corruption.

use std::ptr::NonNull;

use super::bytes::ByteBuf;
use super::{Corruption, Region, RingError, RingHeader, RingInfo, check_region};
use crate::sync::shim::{AtomicU64, Ordering};
use crate::sync::{Deadline, WaitStrategy};

const MAGIC: u64 = u64::from_le_bytes(*b"RECDRING");
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

type Header = RingHeader;

const BUFFER_OFFSET: usize = std::mem::size_of::<Header>();

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
        let header = Header::new(RingInfo::new(MAGIC, capacity as u64, 0, 8, mode.flags()));
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
            Header::attach(&region, BUFFER_OFFSET + MIN_CAPACITY, 8, (MAGIC, 0, 8))?;
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

/// A producing end. With [`ProducerMode::Single`] at most one may exist.
pub struct RecordProducer {
    shared: Shared,
    /// Single mode: our copy of `tail`. Many: unused.
    tail: u64,
    cached_head: u64,
}

// SAFETY: accesses are synchronised by the ring protocol.
unsafe impl Send for RecordProducer {}

impl RecordProducer {
    /// Attaches a producing end.
    ///
    /// # Safety
    ///
    /// If the ring was made for [`ProducerMode::Single`], no other producer
    /// may use it while the returned one lives.
    pub unsafe fn attach(region: Region) -> Result<RecordProducer, RingError> {
        let shared = Shared::attach(region)?;
        let header = shared.header();
        // Acquire: pairs with the consumer's Release store of `head`. Head
        // first: the consumer released only what producers had reserved
        // before, so the `tail` we load next is at or past it.
        let head = header.head.load(Ordering::Acquire);
        // Acquire: pairs with the Release store of `tail` by a previous
        // single producer.
        let tail = header.tail.load(Ordering::Acquire);
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
    /// record the consumer skips.
    pub fn try_reserve(&mut self, len: usize) -> Result<RecordGrant<'_>, ReserveError> {
        let max = self.max_payload();
        if len > max {
            return Err(ReserveError::TooLarge { len, max });
        }
        let size = record_size(len) as u64;
        let capacity = self.shared.capacity;
        let header = self.shared.header();
        let mut tail = match self.shared.mode {
            ProducerMode::Single => self.tail,
            // Relaxed: the CAS below decides ownership; data is published by
            // each record's header.
            ProducerMode::Many => header.tail.load(Ordering::Relaxed),
        };
        let (start, pad) = loop {
            // Records start at multiples of 8; a `tail` that is not one
            // was written by no producer.
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
            if used > capacity || capacity - used < need {
                // Acquire: pairs with the Release store of `head` in the
                // consumer's `release`: its reads (and, with many producers,
                // its zeroing) of the freed bytes happen before we reuse them.
                let head = header.head.load(Ordering::Acquire);
                if head % 8 != 0 {
                    return Err(Corruption {
                        field: "head",
                        value: head,
                    }
                    .into());
                }
                if head.wrapping_sub(tail) as i64 > 0 {
                    // The consumer is past our view of `tail`: with many
                    // producers, others reserved and it consumed since we
                    // read `tail`. With one producer it is impossible.
                    if self.shared.mode == ProducerMode::Single {
                        return Err(Corruption {
                            field: "head",
                            value: head,
                        }
                        .into());
                    }
                    // Bounded: if `tail` has not moved, no producer is
                    // behind that `head`, and it is corrupt.
                    let current = header.tail.load(Ordering::Relaxed);
                    if current == tail {
                        return Err(Corruption {
                            field: "head",
                            value: head,
                        }
                        .into());
                    }
                    tail = current;
                    continue;
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
            }
            match self.shared.mode {
                ProducerMode::Single => break (tail, pad),
                ProducerMode::Many => match header.tail.compare_exchange_weak(
                    tail,
                    tail.wrapping_add(need),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break (tail, pad),
                    Err(current) => tail = current,
                },
            }
        };
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
        let position = start.wrapping_add(pad);
        Ok(RecordGrant {
            producer: self,
            position,
            len,
            committed: false,
        })
    }

    /// Reserves, copies `payload` in and commits: one record.
    pub fn try_push(&mut self, payload: &[u8]) -> Result<(), ReserveError> {
        let mut grant = self.try_reserve(payload.len())?;
        grant.write_at(0, payload);
        grant.commit();
        Ok(())
    }

    fn publish(&mut self, position: u64, len: usize, skip: bool) {
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
                header.tail.store(self.tail, Ordering::Release);
            }
            ProducerMode::Many => {
                // Release: pairs with the consumer's Acquire header load,
                // publishing the payload written before it.
                slot.store(word, Ordering::Release);
            }
        }
        header.data_ready.notify_one();
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
        let mode = self.shared.mode;
        let header = self.shared.header();
        header.space_ready.wait_until(strategy, deadline, || {
            let tail = match mode {
                ProducerMode::Single => single_tail,
                ProducerMode::Many => header.tail.load(Ordering::Relaxed),
            };
            // Acquire: as in `refresh_head`.
            let head = header.head.load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            used > capacity || capacity - used >= need || stop()
        })
    }

    /// Wakes the consumer if it sleeps (used when a producer leaves).
    pub fn wake_consumer(&self) {
        self.shared.header().data_ready.notify_all();
    }
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
        let head = header.head.load(Ordering::Acquire);
        // Acquire: pairs with a single producer's Release store of `tail`.
        let tail = header.tail.load(Ordering::Acquire);
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
                    let tail = self.shared.header().tail.load(Ordering::Acquire);
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

    /// With one producer, a record must lie within what `tail` published.
    fn check_published(&self, size: u64, word: u64) -> Result<(), Corruption> {
        if self.shared.mode == ProducerMode::Single
            && size > self.cached_tail.wrapping_sub(self.head)
        {
            return Err(Corruption {
                field: "record length",
                value: word,
            });
        }
        Ok(())
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
            // Payload bytes, though, could read as a header at a later
            // lap's record boundary: zero them.
            self.shared
                .buffer
                .zero(offset + HEADER, size as usize - HEADER);
        }
        self.head = self.head.wrapping_add(size);
        let header = self.shared.header();
        // Release: pairs with the producers' Acquire load of `head` in
        // `refresh_head`, handing the bytes (read and zeroed) back.
        header.head.store(self.head, Ordering::Release);
        header.space_ready.notify_all();
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
        header.data_ready.wait_until(strategy, deadline, || {
            let published = match mode {
                // Acquire: as in `peek`.
                ProducerMode::Single => header.tail.load(Ordering::Acquire) != head,
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
        self.shared.header().space_ready.notify_all();
    }
}

enum Peeked {
    Record(usize),
    Skip,
}

/// A received record, borrowed from the ring; released when dropped.
///
/// The bytes stay in shared memory until then: read them with
/// [`read_at`](RecordView::read_at) or [`to_vec`](RecordView::to_vec).
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
