//! Typed errors of channel operations. Send errors give the item back.

use crate::ring::{Corruption, RingError};
use crate::segment::SegmentError;

/// Why an endpoint could not be created or attached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The segment could not be created, opened or validated.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The ring in the segment is missing, of another type, or damaged.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// This side of a single-producer or single-consumer channel is taken
    /// by a live process.
    #[error("the {role} end is held by pid {pid}")]
    RoleTaken {
        /// `"producer"` or `"consumer"`.
        role: &'static str,
        /// The holder.
        pid: u32,
    },
    /// Every endpoint slot of this side is taken by a live process.
    #[error("all {capacity} {role} slots are taken")]
    TooManyEndpoints {
        /// `"producer"` or `"consumer"`.
        role: &'static str,
        /// Slots per side.
        capacity: usize,
    },
    /// The creator has not finished setting up the ring.
    #[error("the channel's ring was not initialised in time")]
    NotReady,
    /// `open_or_create` found an existing channel made with other
    /// parameters; nothing was attached. `field` is `"channel kind"` (the
    /// segment kinds, as their little-endian ASCII codes), `"capacity"`
    /// (slots, or bytes for a record channel), `"producer mode"` (0 for one
    /// sender, 1 for many), or a ring field such as `"slot size"` or
    /// `"item size"` (bytes) for another item type.
    #[error("the existing channel's {field} is {found}, this call asked for {expected}")]
    Incompatible {
        /// What differs.
        field: &'static str,
        /// In the existing channel.
        found: u64,
        /// What the call asked for.
        expected: u64,
    },
    /// `open_timeout` gave up: the name did not appear, or its channel was
    /// not ready, within the time given.
    #[error("no ready channel appeared within {waited:?}")]
    Timeout {
        /// The time given.
        waited: std::time::Duration,
    },
    /// This kind of channel cannot live in this kind of segment (a byte
    /// stream in a SysV segment, which cannot be mapped twice by offset).
    #[error("{reason}")]
    Unsupported {
        /// Why.
        reason: &'static str,
    },
}

/// A non-blocking send failed.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// No room now.
    #[error("the channel is full")]
    Full(T),
    /// Every receiver has left (or died).
    #[error("every receiver has left")]
    Disconnected(T),
    /// No receiver is attached, and the channel's name was removed or now
    /// names another segment: no receiver can join any more.
    #[error("no receiver is attached and the channel's name was removed or reused")]
    Removed(T),
    /// The ring's memory holds impossible values.
    #[error("the channel's memory is corrupted")]
    Corrupted(T),
}

/// A blocking send failed.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError<T> {
    /// Every receiver has left (or died).
    #[error("every receiver has left")]
    Disconnected(T),
    /// No receiver is attached, and the channel's name was removed or now
    /// names another segment: no receiver can join any more.
    #[error("no receiver is attached and the channel's name was removed or reused")]
    Removed(T),
    /// The ring's memory holds impossible values.
    #[error("the channel's memory is corrupted")]
    Corrupted(T),
}

/// A send with a timeout failed.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendTimeoutError<T> {
    /// Still no room when the timeout passed.
    #[error("timed out waiting for room")]
    Timeout(T),
    /// Every receiver has left (or died).
    #[error("every receiver has left")]
    Disconnected(T),
    /// No receiver is attached, and the channel's name was removed or now
    /// names another segment: no receiver can join any more.
    #[error("no receiver is attached and the channel's name was removed or reused")]
    Removed(T),
    /// The ring's memory holds impossible values.
    #[error("the channel's memory is corrupted")]
    Corrupted(T),
}

/// A non-blocking receive failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing to receive now.
    #[error("the channel is empty")]
    Empty,
    /// Empty, and every sender has left (or died).
    #[error("the channel is empty and every sender has left")]
    Disconnected,
    /// Empty, no sender is attached, and the channel's name was removed or
    /// now names another segment: no sender can join any more.
    #[error("no sender is attached and the channel's name was removed or reused")]
    Removed,
    /// The ring's memory holds impossible values.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

/// A blocking receive failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Empty, and every sender has left (or died).
    #[error("the channel is empty and every sender has left")]
    Disconnected,
    /// Empty, no sender is attached, and the channel's name was removed or
    /// now names another segment: no sender can join any more.
    #[error("no sender is attached and the channel's name was removed or reused")]
    Removed,
    /// The ring's memory holds impossible values.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

/// A receive with a timeout failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// Still nothing when the timeout passed.
    #[error("timed out waiting for a message")]
    Timeout,
    /// Empty, and every sender has left (or died).
    #[error("the channel is empty and every sender has left")]
    Disconnected,
    /// Empty, no sender is attached, and the channel's name was removed or
    /// now names another segment: no sender can join any more.
    #[error("no sender is attached and the channel's name was removed or reused")]
    Removed,
    /// The ring's memory holds impossible values.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

macro_rules! opaque_debug {
    ($($name:ident { $($variant:ident),* })*) => {$(
        impl<T> std::fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)*
                }
            }
        }
    )*};
}

opaque_debug! {
    TrySendError { Full, Disconnected, Removed, Corrupted }
    SendError { Disconnected, Removed, Corrupted }
    SendTimeoutError { Timeout, Disconnected, Removed, Corrupted }
}

impl<T> TrySendError<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(t)
            | TrySendError::Disconnected(t)
            | TrySendError::Removed(t)
            | TrySendError::Corrupted(t) => t,
        }
    }
}

impl<T> SendTimeoutError<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(t)
            | SendTimeoutError::Disconnected(t)
            | SendTimeoutError::Removed(t)
            | SendTimeoutError::Corrupted(t) => t,
        }
    }
}

impl From<RecvTimeoutError> for TryRecvError {
    fn from(e: RecvTimeoutError) -> TryRecvError {
        match e {
            RecvTimeoutError::Timeout => TryRecvError::Empty,
            RecvTimeoutError::Disconnected => TryRecvError::Disconnected,
            RecvTimeoutError::Removed => TryRecvError::Removed,
            RecvTimeoutError::Corrupted(c) => TryRecvError::Corrupted(c),
        }
    }
}
