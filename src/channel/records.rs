//! A channel of variable-length byte records over
//! [`ring::record`](crate::ring::record): one receiver, and one sender or
//! up to 31 (chosen at creation). Message boundaries are kept; a record is
//! received whole or not at all.
//!
//! ```
//! use ipcring::channel::records::{Receiver, Sender};
//! use ipcring::channel::ChannelOptions;
//! use ipcring::ring::record::ProducerMode;
//! use ipcring::segment::{Address, Segment};
//!
//! let address: Address = format!("doc-records-{}", std::process::id()).parse()?;
//! let mut tx = Sender::create(&address, 1 << 16, ProducerMode::Single, &ChannelOptions::new())?;
//! let mut rx = Receiver::open(&address)?;
//! tx.send(b"hello").unwrap();
//! tx.send(b"").unwrap();
//! let mut out = Vec::new();
//! assert_eq!(rx.recv_into(&mut out).unwrap(), 5);
//! assert_eq!(out, b"hello");
//! assert_eq!(rx.recv().unwrap().len(), 0);
//! Segment::remove(&address)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use super::{
    ChannelError, ChannelOptions, Endpoint, PeerState, RecvError, RecvTimeoutError, Role,
    TryRecvError,
};
use crate::ring::record::{
    ProducerMode, RecordConsumer, RecordGrant, RecordProducer, RecordRing, RecordView, Reservation,
    ReserveError,
};
use crate::ring::{Corruption, Region, Repair, RingStats, Side};
use crate::segment::{Address, OpenOptions, Segment};
use crate::sync::{Deadline, WaitStrategy};

/// The segment kind of a single-sender record channel ("RECS").
pub const KIND_SINGLE: u32 = u32::from_le_bytes(*b"RECS");
/// The segment kind of a many-sender record channel ("RECM").
pub const KIND_MANY: u32 = u32::from_le_bytes(*b"RECM");

/// Why a record was not sent. Every form may return `Disconnected`,
/// `TooLarge` and `Corrupted`; `try_send` returns `Full` where the timed
/// form returns `Timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordSendError {
    /// No room now.
    #[error("the channel is full")]
    Full,
    /// Still no room when the timeout passed.
    #[error("timed out waiting for room")]
    Timeout,
    /// Larger than this channel can ever carry.
    #[error("a record of {len} bytes exceeds the channel's maximum of {max}")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The largest record.
        max: usize,
    },
    /// The receiver has left (or died).
    #[error("the receiver has left")]
    Disconnected,
    /// No receiver is attached, and the channel's name was removed or now
    /// names another segment: no receiver can join any more.
    #[error("no receiver is attached and the channel's name was removed or reused")]
    Removed,
    /// The ring's memory holds impossible values.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

/// Why a record was not received into a caller's buffer. `try_` forms
/// return `Empty` where timed forms return `Timeout`; a blocking form
/// returns neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordRecvError {
    /// Nothing to receive now.
    #[error("the channel is empty")]
    Empty,
    /// Still nothing when the timeout passed.
    #[error("timed out waiting for a record")]
    Timeout,
    /// Empty, and every sender has left (or died).
    #[error("the channel is empty and every sender has left")]
    Disconnected,
    /// Empty, no sender is attached, and the channel's name was removed or
    /// now names another segment.
    #[error("no sender is attached and the channel's name was removed or reused")]
    Removed,
    /// The next record is longer than the buffer. It stays in the channel,
    /// to be received with a buffer of at least `len` bytes.
    #[error("the next record has {len} bytes, the buffer {capacity}")]
    BufferTooSmall {
        /// The record's length.
        len: usize,
        /// The buffer's length.
        capacity: usize,
    },
    /// The ring's memory holds impossible values.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

impl From<TryRecvError> for RecordRecvError {
    fn from(e: TryRecvError) -> RecordRecvError {
        match e {
            TryRecvError::Empty => RecordRecvError::Empty,
            TryRecvError::Disconnected => RecordRecvError::Disconnected,
            TryRecvError::Removed => RecordRecvError::Removed,
            TryRecvError::Corrupted(c) => RecordRecvError::Corrupted(c),
        }
    }
}

impl From<RecvTimeoutError> for RecordRecvError {
    fn from(e: RecvTimeoutError) -> RecordRecvError {
        match e {
            RecvTimeoutError::Timeout => RecordRecvError::Timeout,
            RecvTimeoutError::Disconnected => RecordRecvError::Disconnected,
            RecvTimeoutError::Removed => RecordRecvError::Removed,
            RecvTimeoutError::Corrupted(c) => RecordRecvError::Corrupted(c),
        }
    }
}

/// Creates a record channel segment with a `capacity`-byte buffer (a power
/// of two, 64 B to 4 GiB) without attaching; `None` makes it anonymous.
pub fn create_segment(
    address: Option<&Address>,
    capacity: usize,
    mode: ProducerMode,
    options: &ChannelOptions,
) -> Result<Segment, ChannelError> {
    let bytes = RecordRing::required_size(capacity)?;
    let kind = match mode {
        ProducerMode::Single => KIND_SINGLE,
        ProducerMode::Many => KIND_MANY,
    };
    super::create_segment(address, kind, bytes, options, |region| {
        // SAFETY: the segment is new and its ring is not published yet.
        unsafe { RecordRing::init(region, capacity, mode) }
    })
}

fn open_any(address: &Address) -> Result<Segment, ChannelError> {
    open_any_with(address, &ChannelOptions::new())
}

/// Opens a record channel of either mode, mapped as `options` ask.
fn open_any_with(address: &Address, options: &ChannelOptions) -> Result<Segment, ChannelError> {
    check_kind(Segment::open(address, &options.open_options())?)
}

/// The segment kind of a record channel with `mode`.
fn kind_of(mode: ProducerMode) -> u32 {
    match mode {
        ProducerMode::Single => KIND_SINGLE,
        ProducerMode::Many => KIND_MANY,
    }
}

/// What `open_or_create` found and asked for must agree on the mode (0:
/// one sender, 1: many).
fn expect_mode(segment: &Segment, mode: Option<ProducerMode>) -> Result<(), ChannelError> {
    let many = |kind| u64::from(kind == KIND_MANY);
    super::expect_same(
        "producer mode",
        many(segment.kind()),
        mode.map(|mode| many(kind_of(mode))),
    )
}

/// Opens the named record channel with `open_or_create`'s rules, creating
/// it if it does not exist; returns it and the parameters an existing one
/// must have.
fn create_or_open(
    address: &Address,
    capacity: usize,
    mode: ProducerMode,
    options: &ChannelOptions,
) -> Result<(Segment, Option<Expected>), ChannelError> {
    let (segment, created) = super::create_or_open(
        address,
        || create_segment(Some(address), capacity, mode, options),
        || open_any_with(address, options),
    )?;
    let expected = (!created).then_some(Expected { capacity, mode });
    expect_mode(&segment, expected.as_ref().map(|e| e.mode))?;
    Ok((segment, expected))
}

/// Opens the named record channel, waiting up to `timeout` for it.
fn open_any_within(
    address: &Address,
    timeout: Duration,
) -> Result<(Segment, Deadline), ChannelError> {
    let deadline = Deadline::after(timeout);
    let segment = super::open_within(timeout, deadline, |left| {
        Segment::open(address, &OpenOptions::new().timeout(left))
    })?;
    Ok((check_kind(segment)?, deadline))
}

/// What an existing channel must have for `open_or_create`.
struct Expected {
    capacity: usize,
    mode: ProducerMode,
}

/// The ring check made before an endpoint claims its slot, then the
/// repair handle.
fn check_ring(
    region: Region,
    expected: Option<&Expected>,
) -> Result<Option<Box<dyn super::ClaimRepair>>, ChannelError> {
    let (capacity, _) = RecordRing::check(&region)?;
    super::expect_same(
        "capacity",
        capacity as u64,
        expected.map(|e| e.capacity as u64),
    )?;
    repairer(region)
}

fn check_kind(segment: Segment) -> Result<Segment, ChannelError> {
    match segment.kind() {
        KIND_SINGLE | KIND_MANY => Ok(segment),
        found => Err(
            crate::segment::SegmentError::Incompatible(crate::segment::Mismatch::Kind {
                found,
                expected: KIND_SINGLE,
            })
            .into(),
        ),
    }
}

/// A sending end.
pub struct Sender {
    ring: RecordProducer,
    endpoint: Endpoint,
}

impl Sender {
    /// Creates a named record channel and attaches as a sender.
    pub fn create(
        address: &Address,
        capacity: usize,
        mode: ProducerMode,
        options: &ChannelOptions,
    ) -> Result<Sender, ChannelError> {
        let segment = create_segment(Some(address), capacity, mode, options)?;
        Sender::attach_with(segment, options.strategy)
    }

    /// Opens a named record channel as a sender.
    pub fn open(address: &Address) -> Result<Sender, ChannelError> {
        Sender::attach(open_any(address)?)
    }

    /// Opens the named record channel as a sender, creating it (with a
    /// `capacity`-byte buffer, `mode` and `options`) if it does not exist.
    /// An existing channel must have the same capacity and producer mode,
    /// or this fails with [`ChannelError::Incompatible`] naming the field
    /// that differs, and attaches nothing. Only a call that creates the
    /// channel applies `options`' mode, ownership and huge pages;
    /// prefaulting and memory locking apply either way.
    pub fn open_or_create(
        address: &Address,
        capacity: usize,
        mode: ProducerMode,
        options: &ChannelOptions,
    ) -> Result<Sender, ChannelError> {
        let (segment, expected) = create_or_open(address, capacity, mode, options)?;
        let ready_by = Deadline::after(super::READY_WAIT);
        Sender::attach_checked(segment, options.strategy, ready_by, expected.as_ref())
            .map_err(super::as_incompatible)
    }

    /// Opens the named record channel as a sender, waiting up to `timeout`
    /// for the name to appear and its creator to finish setting it up:
    /// [`ChannelError::Timeout`] if neither happened in time.
    pub fn open_timeout(address: &Address, timeout: Duration) -> Result<Sender, ChannelError> {
        let (segment, deadline) = open_any_within(address, timeout)?;
        Sender::attach_checked(segment, WaitStrategy::default(), deadline, None)
            .map_err(|e| super::timeout_if_not_ready(e, timeout))
    }

    /// Attaches to a record channel segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Sender, ChannelError> {
        Sender::attach_with(segment, WaitStrategy::default())
    }

    fn attach_with(segment: Segment, strategy: WaitStrategy) -> Result<Sender, ChannelError> {
        let ready_by = Deadline::after(super::READY_WAIT);
        Sender::attach_checked(segment, strategy, ready_by, None)
    }

    fn attach_checked(
        segment: Segment,
        strategy: WaitStrategy,
        ready_by: Deadline,
        expected: Option<&Expected>,
    ) -> Result<Sender, ChannelError> {
        let exclusive = segment.kind() != KIND_MANY;
        let (endpoint, region) = Endpoint::attach(
            segment,
            Role::Producer,
            exclusive,
            strategy,
            ready_by,
            |region| check_ring(region, expected),
        )?;
        // SAFETY: in a single-sender channel the exclusive producer slot is
        // ours; a many-sender ring allows any number of producers, each
        // with its endpoint slot as its id. The ring's own mode flag must
        // agree with the segment kind.
        let ring = unsafe { RecordProducer::attach(region, endpoint.id())? };
        if (ring.mode() == ProducerMode::Single) != exclusive {
            return Err(crate::ring::RingError::Incompatible {
                field: "producer mode",
                found: u64::from(exclusive),
                expected: u64::from(!exclusive),
            }
            .into());
        }
        Ok(Sender { ring, endpoint })
    }

    /// The largest record this channel carries.
    pub fn max_record(&self) -> usize {
        self.ring.max_payload()
    }

    /// Reserves room for a record of `len` bytes to write in place; commit
    /// the grant to send it (dropped uncommitted, nothing is delivered).
    pub fn try_reserve(&mut self, len: usize) -> Result<RecordGrant<'_>, RecordSendError> {
        let reservation = self.try_reserve_open(len)?;
        Ok(self.ring.grant(reservation))
    }

    /// As [`try_reserve`](Self::try_reserve), waiting for room as long as
    /// it takes.
    pub fn reserve(&mut self, len: usize) -> Result<RecordGrant<'_>, RecordSendError> {
        self.reserve_within(len, None)
    }

    /// As [`try_reserve`](Self::try_reserve), waiting for room at most
    /// `timeout` (then `Timeout`).
    pub fn reserve_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<RecordGrant<'_>, RecordSendError> {
        self.reserve_within(len, Some(timeout))
    }

    fn reserve_within(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<RecordGrant<'_>, RecordSendError> {
        let deadline = timeout.map(Deadline::after);
        // The loop keeps only a reservation, never a borrow of the ring, so
        // that the grant can borrow it once, after the loop.
        let reservation = loop {
            match self.try_reserve_open(len) {
                Ok(reservation) => break reservation,
                Err(RecordSendError::Full) => {}
                Err(e) => return Err(e),
            }
            let Some(until) = self.endpoint.slice(deadline) else {
                return Err(RecordSendError::Timeout);
            };
            let peers = self.endpoint.peers();
            let stop = || peers.is_gone();
            let strategy = self.endpoint.strategy();
            self.ring.wait_for_space(len, strategy, Some(until), stop);
        };
        Ok(self.ring.grant(reservation))
    }

    fn try_reserve_open(&mut self, len: usize) -> Result<Reservation, RecordSendError> {
        if self.endpoint.peer_gone() {
            return Err(RecordSendError::Disconnected);
        }
        match self.ring.reserve_open(len) {
            Ok(reservation) => Ok(reservation),
            Err(ReserveError::Full) => {
                self.endpoint.check_intact()?;
                match self.endpoint.peer_state() {
                    PeerState::Present => Err(RecordSendError::Full),
                    PeerState::Gone => Err(RecordSendError::Disconnected),
                    PeerState::Removed => Err(RecordSendError::Removed),
                }
            }
            Err(e) => Err(reserve_error(e)),
        }
    }

    /// Sends one record without blocking.
    pub fn try_send(&mut self, record: &[u8]) -> Result<(), RecordSendError> {
        let mut grant = self.try_reserve(record.len())?;
        grant.write_at(0, record);
        grant.commit();
        if self.endpoint.truncated() {
            // Written to private zeros: nobody will receive it.
            return Err(RecordSendError::Corrupted(super::TRUNCATED));
        }
        Ok(())
    }

    /// Sends one record, waiting for room as long as it takes.
    pub fn send(&mut self, record: &[u8]) -> Result<(), RecordSendError> {
        self.send_within(record, None)
    }

    /// Sends one record, waiting for room at most `timeout`.
    pub fn send_timeout(
        &mut self,
        record: &[u8],
        timeout: Duration,
    ) -> Result<(), RecordSendError> {
        self.send_within(record, Some(timeout))
    }

    fn send_within(
        &mut self,
        record: &[u8],
        timeout: Option<Duration>,
    ) -> Result<(), RecordSendError> {
        let deadline = timeout.map(Deadline::after);
        loop {
            match self.try_send(record) {
                Err(RecordSendError::Full) => {}
                other => return other,
            }
            let Some(until) = self.endpoint.slice(deadline) else {
                return Err(RecordSendError::Timeout);
            };
            let peers = self.endpoint.peers();
            let stop = || peers.is_gone();
            let strategy = self.endpoint.strategy();
            self.ring
                .wait_for_space(record.len(), strategy, Some(until), stop);
        }
    }
}

/// The repair handle: a producer handle that never reserves, used to read
/// claim records and repair the reservations of dead senders.
struct Repairer(RecordProducer);

impl super::ClaimRepair for Repairer {
    fn claim_record(&self, side: Side, id: u8) -> u64 {
        match side {
            Side::Producer => self.0.claim_record(id),
            Side::Consumer => crate::ring::claims::NO_CLAIM_RECORD,
        }
    }

    fn repair(&self, side: Side, id: u8, record: u64) -> Repair {
        match side {
            Side::Producer => self.0.repair(id, record),
            // The one receiver claims nothing: a successor resumes at `head`.
            Side::Consumer => Repair::Nothing,
        }
    }

    fn stats(&self) -> RingStats {
        self.0.stats()
    }
}

fn repairer(region: Region) -> Result<Option<Box<dyn super::ClaimRepair>>, ChannelError> {
    // SAFETY: the region lies in the segment the endpoint owns, which drops
    // the repairer first. It never reserves, so it does not count as a
    // producer, and sharing id 0 with a live sender is harmless.
    let handle = unsafe { RecordProducer::attach(region, 0)? };
    Ok(Some(Box::new(Repairer(handle))))
}

fn reserve_error(e: ReserveError) -> RecordSendError {
    match e {
        ReserveError::Full => RecordSendError::Full,
        ReserveError::TooLarge { len, max } => RecordSendError::TooLarge { len, max },
        ReserveError::Corrupted(c) => RecordSendError::Corrupted(c),
    }
}

/// The receiving end; one per channel at a time.
pub struct Receiver {
    ring: RecordConsumer,
    endpoint: Endpoint,
}

impl Receiver {
    /// Creates a named record channel and attaches as its receiver.
    pub fn create(
        address: &Address,
        capacity: usize,
        mode: ProducerMode,
        options: &ChannelOptions,
    ) -> Result<Receiver, ChannelError> {
        let segment = create_segment(Some(address), capacity, mode, options)?;
        Receiver::attach_with(segment, options.strategy)
    }

    /// Opens a named record channel as its receiver.
    pub fn open(address: &Address) -> Result<Receiver, ChannelError> {
        Receiver::attach(open_any(address)?)
    }

    /// Opens the named record channel as its receiver, creating it (with a
    /// `capacity`-byte buffer, `mode` and `options`) if it does not exist.
    /// An existing channel must have the same capacity and producer mode,
    /// or this fails with [`ChannelError::Incompatible`] naming the field
    /// that differs, and attaches nothing. Only a call that creates the
    /// channel applies `options`' mode, ownership and huge pages;
    /// prefaulting and memory locking apply either way.
    pub fn open_or_create(
        address: &Address,
        capacity: usize,
        mode: ProducerMode,
        options: &ChannelOptions,
    ) -> Result<Receiver, ChannelError> {
        let (segment, expected) = create_or_open(address, capacity, mode, options)?;
        let ready_by = Deadline::after(super::READY_WAIT);
        Receiver::attach_checked(segment, options.strategy, ready_by, expected.as_ref())
            .map_err(super::as_incompatible)
    }

    /// Opens the named record channel as its receiver, waiting up to
    /// `timeout` for the name to appear and its creator to finish setting
    /// it up: [`ChannelError::Timeout`] if neither happened in time.
    pub fn open_timeout(address: &Address, timeout: Duration) -> Result<Receiver, ChannelError> {
        let (segment, deadline) = open_any_within(address, timeout)?;
        Receiver::attach_checked(segment, WaitStrategy::default(), deadline, None)
            .map_err(|e| super::timeout_if_not_ready(e, timeout))
    }

    /// Attaches to a record channel segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Receiver, ChannelError> {
        Receiver::attach_with(segment, WaitStrategy::default())
    }

    fn attach_with(segment: Segment, strategy: WaitStrategy) -> Result<Receiver, ChannelError> {
        let ready_by = Deadline::after(super::READY_WAIT);
        Receiver::attach_checked(segment, strategy, ready_by, None)
    }

    fn attach_checked(
        segment: Segment,
        strategy: WaitStrategy,
        ready_by: Deadline,
        expected: Option<&Expected>,
    ) -> Result<Receiver, ChannelError> {
        let (mut endpoint, region) = Endpoint::attach(
            segment,
            Role::Consumer,
            true,
            strategy,
            ready_by,
            |region| check_ring(region, expected),
        )?;
        // SAFETY: the exclusive consumer slot is ours.
        let mut ring = unsafe { RecordConsumer::attach(region)? };
        endpoint.note_leftovers(ring.poll().unwrap_or(false));
        Ok(Receiver { ring, endpoint })
    }

    /// The largest record this channel carries.
    pub fn max_record(&self) -> usize {
        self.ring.max_payload()
    }

    /// Whether a record is ready; an empty channel whose senders all left
    /// is `Disconnected`, after a last look.
    fn ready(&mut self) -> Result<(), TryRecvError> {
        if self.ring.poll()? {
            if self.endpoint.truncated() {
                return Err(TryRecvError::Corrupted(super::TRUNCATED));
            }
            return Ok(());
        }
        self.endpoint.check_intact()?;
        let end = match self.endpoint.peer_state() {
            PeerState::Present => return Err(TryRecvError::Empty),
            PeerState::Gone => TryRecvError::Disconnected,
            PeerState::Removed => TryRecvError::Removed,
        };
        // The last sender's leaving (Release) was seen (Acquire).
        if self.ring.poll()? { Ok(()) } else { Err(end) }
    }

    /// The next record without blocking, as a view released on drop.
    ///
    /// The view offers copies ([`RecordView::to_vec`],
    /// [`RecordView::copy_to`]) and a raw pointer, never a `&[u8]`: see
    /// [`RecordView`] for why.
    pub fn try_recv(&mut self) -> Result<RecordView<'_>, TryRecvError> {
        self.ready()?;
        self.ring.try_receive().map_err(pop_error)
    }

    /// The next record, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<RecordView<'_>, RecvError> {
        self.wait_ready(None).map_err(super::blocking_recv_error)?;
        self.ring.try_receive().map_err(|e| match pop_error(e) {
            TryRecvError::Corrupted(c) => RecvError::Corrupted(c),
            _ => RecvError::Disconnected,
        })
    }

    /// The next record, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<RecordView<'_>, RecvTimeoutError> {
        self.wait_ready(Some(timeout))?;
        self.ring.try_receive().map_err(|e| match pop_error(e) {
            TryRecvError::Corrupted(c) => RecvTimeoutError::Corrupted(c),
            _ => RecvTimeoutError::Timeout,
        })
    }

    /// Copies the next record into `out` without blocking; returns its length.
    pub fn try_recv_into(&mut self, out: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        self.ready()?;
        self.ring.try_receive_into(out).map_err(pop_error)
    }

    /// Copies the next record into `out`, waiting as long as it takes.
    pub fn recv_into(&mut self, out: &mut Vec<u8>) -> Result<usize, RecvError> {
        let view = self.recv()?;
        out.clear();
        out.resize(view.len(), 0);
        view.read_at(0, out);
        Ok(view.len())
    }

    /// Copies the next record to the start of `out` without blocking;
    /// returns its length. A record longer than `out` is not received:
    /// `BufferTooSmall` says how long it is, and it stays in the channel.
    pub fn try_recv_slice(&mut self, out: &mut [u8]) -> Result<usize, RecordRecvError> {
        self.ready()?;
        self.copy_next(out)
    }

    /// As [`try_recv_slice`](Self::try_recv_slice), waiting for a record
    /// as long as it takes.
    pub fn recv_slice(&mut self, out: &mut [u8]) -> Result<usize, RecordRecvError> {
        self.wait_ready(None).map_err(|e| match e {
            // Without a deadline there is no timeout.
            RecvTimeoutError::Timeout => RecordRecvError::Disconnected,
            other => other.into(),
        })?;
        self.copy_next(out)
    }

    /// As [`try_recv_slice`](Self::try_recv_slice), waiting for a record
    /// at most `timeout`.
    pub fn recv_slice_timeout(
        &mut self,
        out: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecordRecvError> {
        self.wait_ready(Some(timeout))?;
        self.copy_next(out)
    }

    /// Copies the record `ready` found, unless it is longer than `out`.
    fn copy_next(&mut self, out: &mut [u8]) -> Result<usize, RecordRecvError> {
        let Some(len) = self.ring.next_len()? else {
            return Err(RecordRecvError::Empty);
        };
        if len > out.len() {
            return Err(RecordRecvError::BufferTooSmall {
                len,
                capacity: out.len(),
            });
        }
        let view = self.ring.try_receive().map_err(pop_error)?;
        let copied = view
            .copy_to(out)
            .map_err(|e| RecordRecvError::BufferTooSmall {
                len: e.len,
                capacity: e.capacity,
            })?;
        drop(view);
        if self.endpoint.truncated() {
            return Err(RecordRecvError::Corrupted(super::TRUNCATED));
        }
        Ok(copied)
    }

    fn wait_ready(&mut self, timeout: Option<Duration>) -> Result<(), RecvTimeoutError> {
        let deadline = timeout.map(Deadline::after);
        loop {
            match self.ready() {
                Ok(()) => return Ok(()),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Removed) => return Err(RecvTimeoutError::Removed),
                Err(TryRecvError::Corrupted(c)) => return Err(RecvTimeoutError::Corrupted(c)),
            }
            let Some(until) = self.endpoint.slice(deadline) else {
                return Err(RecvTimeoutError::Timeout);
            };
            let peers = self.endpoint.peers();
            let stop = || peers.is_gone();
            let strategy = self.endpoint.strategy();
            self.ring.wait_for_data(strategy, Some(until), stop);
        }
    }
}

fn pop_error(e: crate::ring::record::PopError) -> TryRecvError {
    match e {
        crate::ring::record::PopError::Empty => TryRecvError::Empty,
        crate::ring::record::PopError::Corrupted(c) => TryRecvError::Corrupted(c),
    }
}

super::endpoint_common!(Sender, wake_consumer, abandon_leaked_grant);

super::endpoint_common!(Receiver, wake_producers);
