//! The wait/notify handshake over one futex word in shared memory.
//!
//! ```text
//! waiter (condition C false)          notifier (after making C true)
//! W1 e = epoch.load(Acquire)          N1 store that makes C true
//! W2 sleepers += 1                    N2 fence(SeqCst)
//! W3 fence(SeqCst)                    N3 if sleepers.load() > 0:
//! W4 if C: sleepers -= 1, done        N4     epoch += 1 (Release)
//! W5 futex_wait(epoch, e)             N5     futex_wake(epoch)
//! W6 sleepers -= 1, re-check C
//! ```
//!
//! No lost wakeup: the two SeqCst fences are totally ordered. If W3 comes
//! first, N3 reads W2's increment (or a later value), so the notifier bumps
//! the epoch and wakes. W1 read the epoch before N4 (reading N4's value would
//! make N3 happen before W2, yet N3 read W2), so at W5 either the kernel sees
//! the epoch changed and returns at once, or the waiter is queued before N5
//! runs and N5 wakes it. If N2 comes first, W4 sees C true and never sleeps.
//! The notifier's fast path is a fence and one load: the futex syscall runs
//! only when a waiter announced itself in W2.

use std::time::Duration;

use super::shim::{self, AtomicU32, Ordering, fence};
use crate::sys::time::MonotonicTime;

/// An absolute point on the monotonic clock by which a wait gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(MonotonicTime);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(MonotonicTime::now().saturating_add(timeout))
    }

    /// Whether the deadline is behind us.
    pub fn has_passed(self) -> bool {
        MonotonicTime::now() >= self.0
    }

    /// Time left, zero once passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(MonotonicTime::now())
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn instant(self) -> MonotonicTime {
        self.0
    }
}

/// How a waiting side passes the time until its condition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Poll without pause and never sleep: lowest latency, burns a core.
    BusySpin,
    /// Poll `spins` times, then yield `yields` times, then sleep on the
    /// futex. The default: near-spin latency under steady traffic, no CPU
    /// when idle.
    SpinThenPark {
        /// Load-only polls with a CPU spin hint between them.
        spins: u32,
        /// `sched_yield` rounds after spinning.
        yields: u32,
    },
    /// Sleep on the futex as soon as the condition is false.
    Park,
}

impl WaitStrategy {
    /// The default spin-then-park budget: about a few microseconds of
    /// polling, which covers a peer that answers promptly.
    pub const DEFAULT_SPINS: u32 = 4096;
    /// The default number of yields after spinning.
    pub const DEFAULT_YIELDS: u32 = 8;
}

impl Default for WaitStrategy {
    fn default() -> WaitStrategy {
        WaitStrategy::SpinThenPark {
            spins: WaitStrategy::DEFAULT_SPINS,
            yields: WaitStrategy::DEFAULT_YIELDS,
        }
    }
}

/// The futex word one kind of waiter sleeps on, with a count of sleepers so
/// that notifiers skip the syscall when nobody sleeps.
///
/// It lives in shared memory; its layout is part of the segment format:
///
/// | offset | field      | written by                | meaning                       |
/// |--------|------------|---------------------------|-------------------------------|
/// | 0      | `epoch`    | notifiers (`fetch_add`)   | bumped before each futex wake; wraps |
/// | 4      | `sleepers` | waiters (`+1` / `-1`)     | waiters between W2 and W6     |
///
/// A corrupted `sleepers` can never make a wait read out of bounds. Too
/// high, it costs a syscall per notify (as does a waiter killed while
/// asleep, which never decrements). Scribbled to `u32::MAX`, the next
/// waiter's increment wraps it to zero and a notify may be skipped: waits
/// with a deadline still end, which is why the channels wait in slices.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use ipcring::sync::{WaitStrategy, WaitWord};
///
/// let word = Arc::new(WaitWord::new());
/// let flag = Arc::new(AtomicBool::new(false));
/// let (w, f) = (word.clone(), flag.clone());
/// let notifier = std::thread::spawn(move || {
///     f.store(true, Ordering::Release);
///     w.notify_all();
/// });
/// let ready = word.wait_until(WaitStrategy::Park, None, || flag.load(Ordering::Acquire));
/// assert!(ready);
/// notifier.join().unwrap();
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct WaitWord {
    epoch: AtomicU32,
    sleepers: AtomicU32,
}

impl WaitWord {
    /// A word with no sleepers.
    #[cfg(not(loom))]
    pub const fn new() -> WaitWord {
        WaitWord {
            epoch: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    /// A word with no sleepers.
    #[cfg(loom)]
    pub fn new() -> WaitWord {
        WaitWord {
            epoch: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Waits until `ready()` returns true, or the deadline passes.
    ///
    /// `ready` must only load (it runs in the spin loop) and must observe
    /// the notifier's store with at least Acquire. Returns `true` if ready,
    /// `false` on timeout.
    #[inline]
    pub fn wait_until(
        &self,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        if ready() {
            return true;
        }
        self.wait_slow(strategy, deadline, &mut ready)
    }

    #[cold]
    fn wait_slow(
        &self,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        ready: &mut dyn FnMut() -> bool,
    ) -> bool {
        match strategy {
            WaitStrategy::BusySpin => loop {
                for _ in 0..64 {
                    if ready() {
                        return true;
                    }
                    shim::spin_loop();
                }
                if deadline.is_some_and(Deadline::has_passed) {
                    return ready();
                }
            },
            WaitStrategy::SpinThenPark { spins, yields } => {
                let passed = || deadline.is_some_and(Deadline::has_passed);
                for spin in 0..spins {
                    if ready() {
                        return true;
                    }
                    // A clock read now and then: a large spin budget must
                    // not outlast the caller's deadline.
                    if spin % 1024 == 1023 && passed() {
                        return ready();
                    }
                    shim::spin_loop();
                }
                for _ in 0..yields {
                    shim::yield_now();
                    if ready() {
                        return true;
                    }
                    if passed() {
                        return ready();
                    }
                }
                if deadline.is_some_and(Deadline::has_passed) {
                    return ready();
                }
                self.park(deadline, ready)
            }
            WaitStrategy::Park => self.park(deadline, ready),
        }
    }

    fn park(&self, deadline: Option<Deadline>, ready: &mut dyn FnMut() -> bool) -> bool {
        loop {
            // W1. Acquire: pairs with the Release `fetch_add` of the epoch
            // in `wake_slow` (N4); see the module proof.
            let epoch = self.epoch.load(Ordering::Acquire);
            // W2.
            self.sleepers.fetch_add(1, Ordering::Relaxed);
            // W3. SeqCst: pairs with the fence in `notify` (N2), so either
            // we see the condition or the notifier sees us.
            fence(Ordering::SeqCst);
            if ready() {
                self.sleepers.fetch_sub(1, Ordering::Relaxed);
                return true;
            }
            let woken = shim::futex_wait(&self.epoch, epoch, deadline);
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            if ready() {
                return true;
            }
            if !woken || deadline.is_some_and(Deadline::has_passed) {
                return false;
            }
        }
    }

    /// Wakes every sleeper. Call it after the store that makes their
    /// condition true. Returns whether a syscall was made.
    #[inline]
    pub fn notify_all(&self) -> bool {
        self.notify(u32::MAX)
    }

    /// Wakes one sleeper (use only when any one waiter can take what was
    /// made ready). Returns whether a syscall was made.
    #[inline]
    pub fn notify_one(&self) -> bool {
        self.notify(1)
    }

    #[inline]
    fn notify(&self, count: u32) -> bool {
        // N2. SeqCst: pairs with the waiter's fence (W3).
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.wake_slow(count)
    }

    #[cold]
    fn wake_slow(&self, count: u32) -> bool {
        // N4. Release: pairs with the Acquire epoch load (W1).
        self.epoch.fetch_add(1, Ordering::Release);
        shim::futex_wake(&self.epoch, count);
        true
    }

    /// Waiters that announced they sleep (a hint: it changes at any moment).
    pub fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn notify_without_sleepers_makes_no_syscall() {
        let word = WaitWord::new();
        assert!(!word.notify_all());
        assert!(!word.notify_one());
    }

    #[test]
    fn timeout_returns_false_for_every_strategy() {
        let word = WaitWord::new();
        for strategy in [
            WaitStrategy::BusySpin,
            WaitStrategy::default(),
            WaitStrategy::Park,
        ] {
            let deadline = Deadline::after(Duration::from_millis(20));
            assert!(!word.wait_until(strategy, Some(deadline), || false));
            assert!(deadline.has_passed());
            assert_eq!(word.sleepers(), 0);
        }
    }

    #[test]
    fn parked_waiter_is_woken_and_notifier_sees_it() {
        let word = Arc::new(WaitWord::new());
        let flag = Arc::new(AtomicBool::new(false));
        let (w, f) = (word.clone(), flag.clone());
        let waiter = std::thread::spawn(move || {
            w.wait_until(WaitStrategy::Park, None, || f.load(Ordering::Acquire))
        });
        while word.sleepers() == 0 {
            std::thread::yield_now();
        }
        flag.store(true, Ordering::Release);
        assert!(
            word.notify_all(),
            "a sleeper was announced, so notify must wake"
        );
        assert!(waiter.join().unwrap());
        assert_eq!(word.sleepers(), 0);
    }
}
