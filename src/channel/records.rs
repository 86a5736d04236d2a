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
    ChannelError, ChannelOptions, Endpoint, RecvError, RecvTimeoutError, Role, TryRecvError,
};
use crate::ring::record::{
    ProducerMode, RecordConsumer, RecordGrant, RecordProducer, RecordRing, RecordView, ReserveError,
};
use crate::ring::{Corruption, Region, Repair, RingStats, Side};
use crate::segment::{Address, Segment};
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
    /// The ring's memory holds impossible values.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
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
    let segment = Segment::open(address, &crate::segment::OpenOptions::new())?;
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

    /// Attaches to a record channel segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Sender, ChannelError> {
        Sender::attach_with(segment, WaitStrategy::default())
    }

    fn attach_with(segment: Segment, strategy: WaitStrategy) -> Result<Sender, ChannelError> {
        let exclusive = segment.kind() != KIND_MANY;
        let (endpoint, region) =
            Endpoint::attach(segment, Role::Producer, exclusive, strategy, repairer)?;
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
        if self.endpoint.peer_gone() {
            return Err(RecordSendError::Disconnected);
        }
        match self.ring.try_reserve(len) {
            Ok(grant) => Ok(grant),
            Err(ReserveError::Full) => {
                self.endpoint.check_intact()?;
                if self.endpoint.peer_gone_or_dead() {
                    Err(RecordSendError::Disconnected)
                } else {
                    Err(RecordSendError::Full)
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

    /// Attaches to a record channel segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Receiver, ChannelError> {
        Receiver::attach_with(segment, WaitStrategy::default())
    }

    fn attach_with(segment: Segment, strategy: WaitStrategy) -> Result<Receiver, ChannelError> {
        let (endpoint, region) =
            Endpoint::attach(segment, Role::Consumer, true, strategy, repairer)?;
        // SAFETY: the exclusive consumer slot is ours.
        let ring = unsafe { RecordConsumer::attach(region)? };
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
        if !self.endpoint.peer_gone_or_dead() {
            return Err(TryRecvError::Empty);
        }
        // The last sender's leaving (Release) was seen (Acquire).
        if self.ring.poll()? {
            Ok(())
        } else {
            Err(TryRecvError::Disconnected)
        }
    }

    /// The next record without blocking, as a view released on drop.
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

    fn wait_ready(&mut self, timeout: Option<Duration>) -> Result<(), RecvTimeoutError> {
        let deadline = timeout.map(Deadline::after);
        loop {
            match self.ready() {
                Ok(()) => return Ok(()),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
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
