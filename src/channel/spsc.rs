//! A single-producer single-consumer channel of `Pod` items over
//! [`ring::spsc`](crate::ring::spsc).
//!
//! ```
//! use ipcring::channel::spsc::{Receiver, Sender};
//! use ipcring::channel::ChannelOptions;
//! use ipcring::segment::{Address, Segment};
//!
//! let address: Address = format!("doc-spsc-{}", std::process::id()).parse()?;
//! let mut tx = Sender::<u64>::create(&address, 1024, &ChannelOptions::new())?;
//! let mut rx = Receiver::<u64>::open(&address)?; // usually in another process
//! tx.send(7).unwrap();
//! assert_eq!(rx.recv().unwrap(), 7);
//! drop(tx);
//! assert!(rx.recv().is_err()); // drained, and the sender left
//! Segment::remove(&address)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use super::{
    ChannelError, ChannelOptions, Endpoint, PeerState, PopEnd, PushEnd, RecvError,
    RecvTimeoutError, Role, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::ring::spsc::{
    ChunkError, Consumer, Producer, PushError, ReadChunk, SpscRing, WriteChunk,
};
use crate::ring::{Corruption, Pod, Region};
use crate::segment::{Address, OpenOptions, Segment};
use crate::sync::{Deadline, WaitStrategy};

/// The segment kind of an SPSC channel ("SPSC").
pub const KIND: u32 = u32::from_le_bytes(*b"SPSC");

/// Creates a channel segment for `capacity` items of `T` without attaching;
/// `None` makes an anonymous (memfd) segment.
pub fn create_segment<T: Pod>(
    address: Option<&Address>,
    capacity: usize,
    options: &ChannelOptions,
) -> Result<Segment, ChannelError> {
    let bytes = SpscRing::<T>::required_size(capacity)?;
    super::create_segment(address, KIND, bytes, options, |region| {
        // SAFETY: the segment is new and its ring is not published yet, so
        // no endpoint can touch the region while it is initialised.
        unsafe { SpscRing::<T>::init(region, capacity) }
    })
}

/// The ring check made before an endpoint claims its slot: items of `T`,
/// and `capacity` slots if `open_or_create` asked for them.
fn check_ring<T: Pod>(
    region: Region,
    capacity: Option<usize>,
) -> Result<Option<Box<dyn super::ClaimRepair>>, ChannelError> {
    let found = SpscRing::<T>::check(&region)?;
    super::expect_same("capacity", found as u64, capacity.map(|c| c as u64))?;
    Ok(None)
}

impl<T: Pod> PushEnd<T> for Producer<T> {
    #[inline]
    fn push(&mut self, item: T) -> Result<(), (T, bool)> {
        self.try_push(item).map_err(|e| match e {
            PushError::Full(t) => (t, false),
            PushError::Corrupted(t, _) => (t, true),
        })
    }

    fn wait_space(
        &mut self,
        strategy: WaitStrategy,
        until: Deadline,
        stop: &mut dyn FnMut() -> bool,
    ) {
        self.wait_for_space(1, strategy, Some(until), stop);
    }
}

impl<T: Pod> PopEnd<T> for Consumer<T> {
    #[inline]
    fn pop(&mut self) -> Result<Option<T>, Corruption> {
        match self.try_pop() {
            Ok(item) => Ok(Some(item)),
            Err(crate::ring::spsc::PopError::Empty) => Ok(None),
            Err(crate::ring::spsc::PopError::Corrupted(c)) => Err(c),
        }
    }

    fn wait_data(
        &mut self,
        strategy: WaitStrategy,
        until: Deadline,
        stop: &mut dyn FnMut() -> bool,
    ) {
        self.wait_for_data(strategy, Some(until), stop);
    }
}

/// The sending end. One per channel at a time; another process may take
/// over once this one leaves or dies.
pub struct Sender<T: Pod> {
    ring: Producer<T>,
    endpoint: Endpoint,
}

impl<T: Pod> Sender<T> {
    /// Creates a named channel and attaches as its sender.
    pub fn create(
        address: &Address,
        capacity: usize,
        options: &ChannelOptions,
    ) -> Result<Sender<T>, ChannelError> {
        let segment = create_segment::<T>(Some(address), capacity, options)?;
        Sender::attach_with(segment, options.strategy)
    }

    /// Opens a named channel as its sender.
    pub fn open(address: &Address) -> Result<Sender<T>, ChannelError> {
        Sender::attach(super::open_segment(address, KIND)?)
    }

    /// Opens the named channel as its sender, creating it (with
    /// `capacity` and `options`) if it does not exist. An existing channel
    /// must hold items of `T` in `capacity` slots, or this fails with
    /// [`ChannelError::Incompatible`] naming the field that differs, and
    /// attaches nothing. Only a call that creates the channel applies
    /// `options`' mode, ownership and huge pages; the wait strategy,
    /// prefaulting and memory locking apply either way.
    pub fn open_or_create(
        address: &Address,
        capacity: usize,
        options: &ChannelOptions,
    ) -> Result<Sender<T>, ChannelError> {
        let (segment, created) = super::create_or_open(
            address,
            || create_segment::<T>(Some(address), capacity, options),
            || super::open_segment_with(address, KIND, options),
        )?;
        let expected = (!created).then_some(capacity);
        let ready_by = Deadline::after(super::READY_WAIT);
        Sender::attach_checked(segment, options.strategy, ready_by, expected)
            .map_err(super::as_incompatible)
    }

    /// Opens the named channel as its sender, waiting up to `timeout` for
    /// the name to appear and its creator to finish setting it up:
    /// [`ChannelError::Timeout`] if neither happened in time.
    pub fn open_timeout(address: &Address, timeout: Duration) -> Result<Sender<T>, ChannelError> {
        let deadline = Deadline::after(timeout);
        let segment = super::open_within(timeout, deadline, |left| {
            Segment::open(address, &OpenOptions::new().kind(KIND).timeout(left))
        })?;
        Sender::attach_checked(segment, WaitStrategy::default(), deadline, None)
            .map_err(|e| super::timeout_if_not_ready(e, timeout))
    }

    /// Attaches to a channel segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Sender<T>, ChannelError> {
        Sender::attach_with(segment, WaitStrategy::default())
    }

    fn attach_with(segment: Segment, strategy: WaitStrategy) -> Result<Sender<T>, ChannelError> {
        let ready_by = Deadline::after(super::READY_WAIT);
        Sender::attach_checked(segment, strategy, ready_by, None)
    }

    fn attach_checked(
        segment: Segment,
        strategy: WaitStrategy,
        ready_by: Deadline,
        capacity: Option<usize>,
    ) -> Result<Sender<T>, ChannelError> {
        let (endpoint, region) = Endpoint::attach(
            segment,
            Role::Producer,
            true,
            strategy,
            ready_by,
            |region| check_ring::<T>(region, capacity),
        )?;
        // SAFETY: the exclusive producer slot is ours, so no other
        // Producer uses this ring while we hold it.
        let ring = unsafe { Producer::attach(region)? };
        Ok(Sender { ring, endpoint })
    }

    /// Sends without blocking.
    #[inline]
    pub fn try_send(&mut self, item: T) -> Result<(), TrySendError<T>> {
        super::try_send(&mut self.ring, &mut self.endpoint, item)
    }

    /// Sends, waiting for room as long as it takes.
    pub fn send(&mut self, item: T) -> Result<(), SendError<T>> {
        super::send(&mut self.ring, &mut self.endpoint, item, None)
            .map_err(super::blocking_send_error)
    }

    /// Sends, waiting for room at most `timeout`.
    pub fn send_timeout(&mut self, item: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        super::send(&mut self.ring, &mut self.endpoint, item, Some(timeout))
    }

    /// Sends as many items from the front of `items` as fit now, with one
    /// publication; returns how many.
    pub fn try_send_slice(&mut self, items: &[T]) -> Result<usize, TrySendError<()>> {
        if self.endpoint.peer_gone() {
            return Err(TrySendError::Disconnected(()));
        }
        let sent = self
            .ring
            .push_slice(items)
            .map_err(|_| TrySendError::Corrupted(()))?;
        if self.endpoint.truncated() {
            return Err(TrySendError::Corrupted(()));
        }
        Ok(sent)
    }

    /// Exactly `n` free slots to fill in place, or `TooFew` (see
    /// [`Producer::write_chunk`]); commit the chunk to send them.
    /// Disconnection (and truncation of the segment's file) is not checked
    /// here: see [`Sender::is_disconnected`] and [`Segment::is_broken`].
    pub fn write_chunk(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        self.ring.write_chunk(n)
    }

    /// Up to `n` free slots to fill in place (possibly none).
    pub fn write_chunk_up_to(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        self.ring.write_chunk_up_to(n)
    }

    /// Free slots now.
    pub fn free_slots(&mut self) -> Result<usize, Corruption> {
        self.ring.free_slots()
    }
}

/// The receiving end. One per channel at a time.
pub struct Receiver<T: Pod> {
    ring: Consumer<T>,
    endpoint: Endpoint,
}

impl<T: Pod> Receiver<T> {
    /// Creates a named channel and attaches as its receiver.
    pub fn create(
        address: &Address,
        capacity: usize,
        options: &ChannelOptions,
    ) -> Result<Receiver<T>, ChannelError> {
        let segment = create_segment::<T>(Some(address), capacity, options)?;
        Receiver::attach_with(segment, options.strategy)
    }

    /// Opens a named channel as its receiver.
    pub fn open(address: &Address) -> Result<Receiver<T>, ChannelError> {
        Receiver::attach(super::open_segment(address, KIND)?)
    }

    /// Opens the named channel as its receiver, creating it (with
    /// `capacity` and `options`) if it does not exist. An existing channel
    /// must hold items of `T` in `capacity` slots, or this fails with
    /// [`ChannelError::Incompatible`] naming the field that differs, and
    /// attaches nothing. Only a call that creates the channel applies
    /// `options`' mode, ownership and huge pages; the wait strategy,
    /// prefaulting and memory locking apply either way.
    pub fn open_or_create(
        address: &Address,
        capacity: usize,
        options: &ChannelOptions,
    ) -> Result<Receiver<T>, ChannelError> {
        let (segment, created) = super::create_or_open(
            address,
            || create_segment::<T>(Some(address), capacity, options),
            || super::open_segment_with(address, KIND, options),
        )?;
        let expected = (!created).then_some(capacity);
        let ready_by = Deadline::after(super::READY_WAIT);
        Receiver::attach_checked(segment, options.strategy, ready_by, expected)
            .map_err(super::as_incompatible)
    }

    /// Opens the named channel as its receiver, waiting up to `timeout` for
    /// the name to appear and its creator to finish setting it up:
    /// [`ChannelError::Timeout`] if neither happened in time.
    pub fn open_timeout(address: &Address, timeout: Duration) -> Result<Receiver<T>, ChannelError> {
        let deadline = Deadline::after(timeout);
        let segment = super::open_within(timeout, deadline, |left| {
            Segment::open(address, &OpenOptions::new().kind(KIND).timeout(left))
        })?;
        Receiver::attach_checked(segment, WaitStrategy::default(), deadline, None)
            .map_err(|e| super::timeout_if_not_ready(e, timeout))
    }

    /// Attaches to a channel segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Receiver<T>, ChannelError> {
        Receiver::attach_with(segment, WaitStrategy::default())
    }

    fn attach_with(segment: Segment, strategy: WaitStrategy) -> Result<Receiver<T>, ChannelError> {
        let ready_by = Deadline::after(super::READY_WAIT);
        Receiver::attach_checked(segment, strategy, ready_by, None)
    }

    fn attach_checked(
        segment: Segment,
        strategy: WaitStrategy,
        ready_by: Deadline,
        capacity: Option<usize>,
    ) -> Result<Receiver<T>, ChannelError> {
        let (endpoint, region) = Endpoint::attach(
            segment,
            Role::Consumer,
            true,
            strategy,
            ready_by,
            |region| check_ring::<T>(region, capacity),
        )?;
        // SAFETY: the exclusive consumer slot is ours.
        let ring = unsafe { Consumer::attach(region)? };
        let mut ring = ring;
        let mut endpoint = endpoint;
        endpoint.note_leftovers(ring.ready_items().is_ok_and(|n| n > 0));
        Ok(Receiver { ring, endpoint })
    }

    /// Receives without blocking.
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        super::try_recv(&mut self.ring, &mut self.endpoint)
    }

    /// Receives, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        super::recv(&mut self.ring, &mut self.endpoint, None).map_err(super::blocking_recv_error)
    }

    /// Receives, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        super::recv(&mut self.ring, &mut self.endpoint, Some(timeout))
    }

    /// Receives up to `out.len()` ready items without blocking; returns
    /// how many (0 when empty).
    pub fn try_recv_slice(&mut self, out: &mut [T]) -> Result<usize, TryRecvError> {
        let n = self.ring.pop_into(out)?;
        if self.endpoint.truncated() {
            return Err(TryRecvError::Corrupted(super::TRUNCATED));
        }
        if n == 0 {
            self.endpoint.check_intact()?;
        }
        if n > 0 {
            return Ok(n);
        }
        let end = match self.endpoint.peer_state() {
            PeerState::Present => return Ok(0),
            PeerState::Gone => TryRecvError::Disconnected,
            PeerState::Removed => TryRecvError::Removed,
        };
        match self.ring.pop_into(out)? {
            0 => Err(end),
            n => Ok(n),
        }
    }

    /// Exactly `n` ready items to read in place, or `TooFew` (see
    /// [`Consumer::read_chunk`]); commit the chunk to release them.
    pub fn read_chunk(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        self.ring.read_chunk(n)
    }

    /// Up to `n` ready items to read in place (possibly none).
    pub fn read_chunk_up_to(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        self.ring.read_chunk_up_to(n)
    }

    /// Items ready now.
    pub fn ready_items(&mut self) -> Result<usize, Corruption> {
        self.ring.ready_items()
    }
}

super::endpoint_common!(Sender<T>, wake_consumer);

super::endpoint_common!(Receiver<T>, wake_producer);
