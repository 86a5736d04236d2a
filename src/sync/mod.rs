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

/// How many futex system calls (waits and wakes) this process has made
/// through the wait/notify handshake since it started, across all
/// segments and threads.
///
/// Each call costs a kernel entry (hundreds of nanoseconds); a busy channel
/// makes none, because waiters spin first and notifiers skip the wake when
/// nobody sleeps. Sampling this before and after a workload says how often
/// it fell back to the kernel. The count is kept in the slow path only,
/// next to each syscall, with a relaxed increment. Each [`WaitWord`] also
/// counts the calls made on it by every process that maps it
/// ([`WaitWord::futex_calls`]).
///
/// ```
/// let before = ipcring::sync::futex_calls();
/// let word = ipcring::sync::WaitWord::default();
/// word.notify_all(); // nobody sleeps: no syscall
/// assert_eq!(ipcring::sync::futex_calls(), before);
/// ```
pub fn futex_calls() -> u64 {
    // Relaxed: a statistic that publishes nothing.
    shim::FUTEX_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}
