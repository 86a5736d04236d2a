//! A multi-producer multi-consumer channel of `Pod` items over
//! [`ring::mpmc`](crate::ring::mpmc): up to 31 senders and 31 receivers,
//! each item delivered to exactly one receiver.
//!
//! ```
//! use ipcring::channel::mpmc::{Receiver, Sender};
//! use ipcring::channel::ChannelOptions;
//! use ipcring::segment::{Address, Segment};
//!
//! let address: Address = format!("doc-mpmc-{}", std::process::id()).parse()?;
//! let mut a = Sender::<u32>::create(&address, 64, &ChannelOptions::new())?;
//! let mut b = Sender::<u32>::open(&address)?;
//! let mut rx = Receiver::<u32>::open(&address)?;
//! a.send(1).unwrap();
//! b.send(2).unwrap();
//! assert_eq!(rx.recv().unwrap() + rx.recv().unwrap(), 3);
//! Segment::remove(&address)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use super::{
    ChannelError, ChannelOptions, Endpoint, PopEnd, PushEnd, RecvError, RecvTimeoutError, Role,
    SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::ring::mpmc::{MpmcHandle, MpmcRing, PushError};
use crate::ring::{Corruption, Pod, Region, Repair, RingStats, Side};
use crate::segment::{Address, OpenOptions, Segment};
use crate::sync::{Deadline, WaitStrategy};

/// The segment kind of an MPMC channel ("MPMC").
pub const KIND: u32 = u32::from_le_bytes(*b"MPMC");

/// Creates a channel segment for `capacity` items of `T` without attaching;
/// `None` makes an anonymous (memfd) segment.
pub fn create_segment<T: Pod>(
    address: Option<&Address>,
    capacity: usize,
    options: &ChannelOptions,
) -> Result<Segment, ChannelError> {
    let bytes = MpmcRing::<T>::required_size(capacity)?;
    super::create_segment(address, KIND, bytes, options, |region| {
        // SAFETY: the segment is new and its ring is not published yet.
        unsafe { MpmcRing::<T>::init(region, capacity) }
    })
}

struct Ring<T>(MpmcHandle<T>);

/// The repair handle: claimer id 0 on both sides, used only to read claim
/// records and repair (never to push or pop).
struct Repairer<T>(MpmcHandle<T>);

// SAFETY: the repairer never reads or writes a value of T: it touches only
// sequence words, counters and claim records, which are atomics.
unsafe impl<T> Send for Repairer<T> {}

impl<T: Pod> super::ClaimRepair for Repairer<T> {
    fn claim_record(&self, side: Side, id: u8) -> u64 {
        self.0.claim_record(side, id)
    }

    fn repair(&self, side: Side, id: u8, record: u64) -> Repair {
        self.0.repair(side, id, record)
    }

    fn stats(&self) -> RingStats {
        self.0.stats()
    }
}

fn repairer<T: Pod>(region: Region) -> Result<Option<Box<dyn super::ClaimRepair>>, ChannelError> {
    // SAFETY: the region lies in the segment the endpoint owns, and the
    // endpoint drops the repairer before the segment. It never pushes or
    // pops, so sharing id 0 with a live endpoint is harmless.
    let handle = unsafe { MpmcHandle::<T>::attach(region, 0)? };
    Ok(Some(Box::new(Repairer(handle))))
}

impl<T: Pod> Ring<T> {
    /// Wakes every sleeper on both sides (used when an endpoint leaves).
    fn wake_all(&self) {
        self.0.wake_all();
    }
}

impl<T: Pod> PushEnd<T> for Ring<T> {
    #[inline]
    fn push(&mut self, item: T) -> Result<(), (T, bool)> {
        self.0.try_push(item).map_err(|e| match e {
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
        self.0.wait_for_space(strategy, Some(until), stop);
    }
}

impl<T: Pod> PopEnd<T> for Ring<T> {
    #[inline]
    fn pop(&mut self) -> Result<Option<T>, Corruption> {
        match self.0.try_pop() {
            Ok(item) => Ok(Some(item)),
            Err(crate::ring::mpmc::PopError::Empty) => Ok(None),
            Err(crate::ring::mpmc::PopError::Corrupted(c)) => Err(c),
        }
    }

    fn wait_data(
        &mut self,
        strategy: WaitStrategy,
        until: Deadline,
        stop: &mut dyn FnMut() -> bool,
    ) {
        self.0.wait_for_data(strategy, Some(until), stop);
    }
}

macro_rules! common {
    ($end:ident, $role:expr) => {
        impl<T: Pod> $end<T> {
            /// Creates a named channel and attaches to it.
            pub fn create(
                address: &Address,
                capacity: usize,
                options: &ChannelOptions,
            ) -> Result<$end<T>, ChannelError> {
                let segment = create_segment::<T>(Some(address), capacity, options)?;
                $end::attach_with(segment, options.strategy)
            }

            /// Opens a named channel.
            pub fn open(address: &Address) -> Result<$end<T>, ChannelError> {
                $end::attach(super::open_segment(address, KIND)?)
            }

            /// Opens the named channel, creating it (with `capacity` and
            /// `options`) if it does not exist. An existing channel must
            /// hold items of `T` in `capacity` slots, or this fails with
            /// [`ChannelError::Incompatible`] naming the field that
            /// differs, and attaches nothing. Only a call that creates the
            /// channel applies `options`' mode, ownership and huge pages;
            /// the wait strategy, prefaulting and memory locking apply
            /// either way.
            pub fn open_or_create(
                address: &Address,
                capacity: usize,
                options: &ChannelOptions,
            ) -> Result<$end<T>, ChannelError> {
                let (segment, created) = super::create_or_open(
                    address,
                    || create_segment::<T>(Some(address), capacity, options),
                    || super::open_segment_with(address, KIND, options),
                )?;
                let expected = (!created).then_some(capacity);
                let ready_by = Deadline::after(super::READY_WAIT);
                $end::attach_checked(segment, options.strategy, ready_by, expected)
                    .map_err(super::as_incompatible)
            }

            /// Opens the named channel, waiting up to `timeout` for the
            /// name to appear and its creator to finish setting it up:
            /// [`ChannelError::Timeout`] if neither happened in time.
            pub fn open_timeout(
                address: &Address,
                timeout: Duration,
            ) -> Result<$end<T>, ChannelError> {
                let deadline = Deadline::after(timeout);
                let segment = super::open_within(timeout, deadline, |left| {
                    Segment::open(address, &OpenOptions::new().kind(KIND).timeout(left))
                })?;
                $end::attach_checked(segment, WaitStrategy::default(), deadline, None)
                    .map_err(|e| super::timeout_if_not_ready(e, timeout))
            }

            /// Attaches to a channel segment (named, SysV or memfd).
            pub fn attach(segment: Segment) -> Result<$end<T>, ChannelError> {
                $end::attach_with(segment, WaitStrategy::default())
            }

            fn attach_with(
                segment: Segment,
                strategy: WaitStrategy,
            ) -> Result<$end<T>, ChannelError> {
                let ready_by = Deadline::after(super::READY_WAIT);
                $end::attach_checked(segment, strategy, ready_by, None)
            }

            fn attach_checked(
                segment: Segment,
                strategy: WaitStrategy,
                ready_by: Deadline,
                capacity: Option<usize>,
            ) -> Result<$end<T>, ChannelError> {
                let (endpoint, region) =
                    Endpoint::attach(segment, $role, false, strategy, ready_by, |region| {
                        let found = MpmcRing::<T>::check(&region)?;
                        super::expect_same("capacity", found as u64, capacity.map(|c| c as u64))?;
                        repairer::<T>(region)
                    })?;
                // SAFETY: the region lies in the segment the endpoint owns,
                // which outlives the ring handle (dropped first, with
                // `self`); our id is our endpoint slot, which no other live
                // endpoint of our side holds.
                let ring = Ring(unsafe { MpmcHandle::attach(region, endpoint.id())? });
                let mut end = $end { ring, endpoint };
                if $role == Role::Consumer {
                    let has_messages = end.ring.0.len_hint() > 0;
                    end.endpoint.note_leftovers(has_messages);
                }
                Ok(end)
            }
        }
    };
}

/// A sending end; up to 31 may be attached at once.
pub struct Sender<T: Pod> {
    ring: Ring<T>,
    endpoint: Endpoint,
}

/// A receiving end; up to 31 may be attached at once.
pub struct Receiver<T: Pod> {
    ring: Ring<T>,
    endpoint: Endpoint,
}

common!(Sender, Role::Producer);
common!(Receiver, Role::Consumer);
super::endpoint_common!(Sender<T>, wake_all);
super::endpoint_common!(Receiver<T>, wake_all);

impl<T: Pod> Sender<T> {
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
}

impl<T: Pod> Receiver<T> {
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
}
