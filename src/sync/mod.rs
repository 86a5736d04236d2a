//! How a side sleeps and is woken.
//!
//! This module owns the wait/notify handshake that every ring uses: a
//! [`WaitWord`] in shared memory, a [`WaitStrategy`] that says how long to
//! spin before sleeping, and [`Deadline`]s on the monotonic clock. It calls
//! the futex through `sys` and must never know what a ring, a segment or a
//! message is.
//!
//! Under `cfg(loom)` the atomics, `UnsafeCell` and the futex are swapped for
//! loom models (see [`shim`]), so the same protocol code is model-checked.

pub mod shim;
mod wait;

pub use wait::{Deadline, WaitStrategy, WaitWord};
