//! The seam between real and model-checked execution.
//!
//! Protocol code (the waiter here, the rings above) imports atomics,
//! `UnsafeCell`, spinning and the futex from this module only. Without
//! `cfg(loom)` they are the standard ones and the real futex; with it they are
//! loom's, and the futex is a model: a loom `Condvar` per address behind one
//! loom `Mutex`, where a wait with a deadline may time out at any point.

#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

#[cfg(not(loom))]
use crate::sync::Deadline;

/// Stores `value` into a word that other threads may change with a
/// read-modify-write (a mark or a repair) while we own it.
///
/// A plain store everywhere but under loom, where it is a `swap`: loom 0.7
/// can place a store between the read and the write of another thread's
/// earlier compare-exchange in the modification order (tokio-rs/loom issues
/// 254 and 389), and then lets a later reader that synchronised with the
/// store see the compare-exchange's older value. That breaks RMW atomicity,
/// which the C11 model and the hardware guarantee; a `swap` keeps loom's
/// order right without weakening what it checks.
#[inline]
pub fn store_after_rmw(word: &AtomicU64, value: u64, ordering: Ordering) {
    #[cfg(not(loom))]
    word.store(value, ordering);
    #[cfg(loom)]
    word.swap(value, ordering);
}

/// Hints the CPU that we are in a spin loop (a scheduling point under loom).
#[inline]
pub fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Gives the rest of the time slice away.
#[inline]
pub fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// A cell whose contents are reached through raw pointers only, with the
/// `with`/`with_mut` API of loom's `UnsafeCell` so that loom can check every
/// access for data races.
#[cfg(not(loom))]
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a pointer for reading.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a pointer for writing.
    #[inline]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub use loom::cell::UnsafeCell;

/// Futex syscalls (`futex_wait` and `futex_wake` below) this process has
/// made; read through [`crate::sync::futex_calls`]. A std atomic even under
/// loom, which does not count its modelled futex.
pub(crate) static FUTEX_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sleeps while `*futex == expected` (see `sys::futex::futex_wait`).
/// Returns `false` only on timeout.
#[cfg(not(loom))]
#[inline]
pub fn futex_wait(futex: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> bool {
    // Relaxed: a statistic; it orders nothing. Only reached on the way to
    // a syscall, so the fast path never pays for it.
    FUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    crate::sys::futex::futex_wait(futex, expected, deadline.map(Deadline::instant))
}

/// Wakes up to `count` sleepers on `futex`; returns how many woke.
#[cfg(not(loom))]
#[inline]
pub fn futex_wake(futex: &AtomicU32, count: u32) -> usize {
    // Relaxed: as in `futex_wait`.
    FUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    crate::sys::futex::futex_wake(futex, count)
}

#[cfg(loom)]
pub use loom_futex::{futex_wait, futex_wake};

#[cfg(loom)]
mod loom_futex {
    use std::collections::HashMap;

    use loom::sync::{Arc, Condvar, Mutex};

    use super::{AtomicU32, Ordering};
    use crate::sync::Deadline;

    // One lock stands for the kernel's futex hash-bucket lock: a waiter
    // checks the value and queues itself under it, and a waker wakes under
    // it, so a wake that follows a change of the value cannot slip between
    // a waiter's check and its sleep.
    loom::lazy_static! {
        static ref QUEUES: Mutex<HashMap<usize, Arc<Condvar>>> = Mutex::new(HashMap::new());
    }

    /// Model of `futex_wait`. A deadline is modelled as a timeout that fires
    /// at once, the worst case a caller must handle.
    pub fn futex_wait(futex: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> bool {
        let key = futex as *const AtomicU32 as usize;
        let mut queues = QUEUES.lock().unwrap();
        // Relaxed: the bucket lock orders this load after any waker's
        // change-then-lock, as the kernel's lock does.
        if futex.load(Ordering::Relaxed) != expected {
            return true;
        }
        if deadline.is_some() {
            return false;
        }
        let condvar = queues
            .entry(key)
            .or_insert_with(|| Arc::new(Condvar::new()))
            .clone();
        drop(condvar.wait(queues).unwrap());
        true
    }

    /// Model of `futex_wake`: wakes one sleeper, or all of them.
    pub fn futex_wake(futex: &AtomicU32, count: u32) -> usize {
        let key = futex as *const AtomicU32 as usize;
        let queues = QUEUES.lock().unwrap();
        if let Some(condvar) = queues.get(&key) {
            if count == 1 {
                condvar.notify_one();
            } else {
                condvar.notify_all();
            }
        }
        // The model does not count sleepers; callers only use this as a hint.
        0
    }
}
