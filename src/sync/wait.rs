//! The wait/notify handshake over one futex word in shared memory.
//!
//! ```text
//! waiter (condition C false)              notifier (after making C true)
//! W1 e = epoch.load(Acquire)              N1 store that makes C true
//! W2 g = generation of sleepers += 1      N2 fence(SeqCst)
//! W3 fence(SeqCst)                        N3 if count of sleepers > 0:
//! W4 if C: deregister(g), done            N4     sleepers = (generation + 1, 0)
//! W5 futex_wait(epoch, e)                 N5     epoch += 1 (Release)
//! W6 deregister(g), re-check C            N6     futex_wake(epoch, all)
//! ```
//!
//! No lost wakeup: the two SeqCst fences are totally ordered. If W3 comes
//! first, N3 reads W2's increment (or a later value), so the notifier bumps
//! the epoch and wakes. W1 read the epoch before N5 (reading N5's value would
//! make N3 happen before W2, yet N3 read W2), so at W5 either the kernel sees
//! the epoch changed and returns at once, or the waiter is queued before N6
//! runs and N6 wakes it. If N2 comes first, W4 sees C true and never sleeps.
//! The notifier's fast path is a fence and one load: the futex syscall runs
//! only when a waiter announced itself in W2.
//!
//! **A waiter that dies asleep is forgotten at the next wake.** The notifier
//! does not wait for sleepers to count themselves out: N4 starts a new
//! generation with a count of zero and N6 wakes every sleeper. A waiter
//! takes its own count back (`deregister`) only while its generation is
//! still current; one whose generation was reset was woken by that reset
//! and registers again if it must sleep on. So a process killed while
//! parked costs one extra wake-up syscall, not one per operation forever.
//!
//! **Each word counts its own syscalls.** `futex_calls` goes up by one
//! right before each futex wait (W5) and wake (N6) made on the word, so an
//! observer that maps the segment (`ipcring stat --watch`) sees how often
//! a channel falls back to the kernel. The increment sits on the slow path
//! only, next to a syscall that costs hundreds of nanoseconds; the fast
//! paths (a condition found while spinning, a notify with nobody asleep)
//! never touch it.
use std::time::Duration;

use super::shim::{self, AtomicU32, AtomicU64, Ordering, fence};
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
/// | offset | field         | written by                | meaning                       |
/// |--------|---------------|---------------------------|-------------------------------|
/// | 0      | `epoch`       | notifiers (`fetch_add`)   | bumped before each futex wake; wraps |
/// | 4      | `futex_calls` | waiters and notifiers (`fetch_add`, next to the syscall only) | futex wait and wake syscalls made on this word, ever; wraps |
/// | 8      | `sleepers`    | waiters (`+1` / `-1`), notifiers (reset) | `generation << 32 \| count`: waiters between W2 and W6 of the current generation |
///
/// A corrupted `sleepers` can never make a wait read out of bounds. A count
/// too high costs one wake-up syscall, at the next notify, which resets it
/// (as does a waiter killed while asleep). A count scribbled to zero while
/// someone sleeps may skip a notify: waits with a deadline still end, which
/// is why the channels wait in slices. `futex_calls` is a statistic nobody
/// decides anything by: scribbled, it misleads an observer and nothing else.
///
/// Offset 4 was reserved (always zero) before it counted; the segment
/// layout's version was kept for the change. Nobody ever read the word, so
/// a library that leaves it at zero and one that counts in it work together
/// on one segment; an observer merely sees no calls from the former.
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
    futex_calls: AtomicU32,
    sleepers: AtomicU64,
}

/// `sleepers`: the count of waiters in the current generation.
const COUNT: u64 = 0xffff_ffff;

impl WaitWord {
    /// A word with no sleepers.
    #[cfg(not(loom))]
    pub const fn new() -> WaitWord {
        WaitWord {
            epoch: AtomicU32::new(0),
            futex_calls: AtomicU32::new(0),
            sleepers: AtomicU64::new(0),
        }
    }

    /// A word with no sleepers.
    #[cfg(loom)]
    pub fn new() -> WaitWord {
        WaitWord {
            epoch: AtomicU32::new(0),
            futex_calls: AtomicU32::new(0),
            sleepers: AtomicU64::new(0),
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
            // in `wake_slow` (N5); see the module proof.
            let epoch = self.epoch.load(Ordering::Acquire);
            // W2. Relaxed: the fences order it (W3, N2).
            let generation = self.sleepers.fetch_add(1, Ordering::Relaxed) >> 32;
            // W3. SeqCst: pairs with the fence in `notify` (N2), so either
            // we see the condition or the notifier sees us.
            fence(Ordering::SeqCst);
            if ready() {
                self.deregister(generation);
                return true;
            }
            self.count_futex_call();
            let woken = shim::futex_wait(&self.epoch, epoch, deadline);
            self.deregister(generation);
            if ready() {
                return true;
            }
            if !woken || deadline.is_some_and(Deadline::has_passed) {
                return false;
            }
        }
    }

    /// W4/W6: takes back the count W2 added, unless a notifier has since
    /// started a new generation (which dropped it, and woke us).
    fn deregister(&self, generation: u64) {
        // Relaxed throughout: a count, ordered by the fences.
        let mut current = self.sleepers.load(Ordering::Relaxed);
        while current >> 32 == generation && current & COUNT != 0 {
            match self.sleepers.compare_exchange_weak(
                current,
                current - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(found) => current = found,
            }
        }
    }

    /// Wakes every sleeper. Call it after the store that makes their
    /// condition true. Returns whether a syscall was made.
    #[inline]
    pub fn notify_all(&self) -> bool {
        // N2. SeqCst: pairs with the waiter's fence (W3).
        fence(Ordering::SeqCst);
        // N3. Relaxed: ordered by the fences.
        if self.sleepers.load(Ordering::Relaxed) & COUNT == 0 {
            return false;
        }
        self.wake_slow()
    }

    /// Use when any one waiter can take what was made ready. The wake goes
    /// to every sleeper of the word all the same (each wake starts a new
    /// generation of the sleeper count, see the module docs); words with
    /// one waiter at a time, as the single-consumer rings have, lose
    /// nothing by it. Returns whether a syscall was made.
    #[inline]
    pub fn notify_one(&self) -> bool {
        self.notify_all()
    }

    #[cold]
    fn wake_slow(&self) -> bool {
        // N4. A new generation with nobody in it: every sleeper counted so
        // far is woken below, and counts itself again if it sleeps on.
        // Relaxed: a waiter that sees N5's epoch (Acquire) registers after
        // this in the word's modification order.
        let mut current = self.sleepers.load(Ordering::Relaxed);
        loop {
            let next = ((current >> 32).wrapping_add(1) & COUNT) << 32;
            match self.sleepers.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(found) => current = found,
            }
        }
        // N5. Release: pairs with the Acquire epoch load (W1).
        self.epoch.fetch_add(1, Ordering::Release);
        // N6.
        self.count_futex_call();
        shim::futex_wake(&self.epoch, u32::MAX);
        true
    }

    /// Counts a futex syscall about to be made on this word.
    fn count_futex_call(&self) {
        // Relaxed: a statistic; nothing is published with it or decided by
        // it, and `fetch_add` wraps.
        self.futex_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Futex wait and wake system calls made on this word so far, by every
    /// process that maps it, modulo 2^32. Compare two readings with
    /// `wrapping_sub`.
    ///
    /// ```
    /// use ipcring::sync::{Deadline, WaitStrategy, WaitWord};
    /// use std::time::Duration;
    ///
    /// let word = WaitWord::new();
    /// assert!(!word.notify_all()); // nobody asleep: no syscall, nothing counted
    /// assert_eq!(word.futex_calls(), 0);
    /// let deadline = Deadline::after(Duration::from_millis(1));
    /// assert!(!word.wait_until(WaitStrategy::Park, Some(deadline), || false));
    /// assert!(word.futex_calls() >= 1); // the wait that timed out
    /// ```
    pub fn futex_calls(&self) -> u32 {
        // Relaxed: a statistic, as in `count_futex_call`.
        self.futex_calls.load(Ordering::Relaxed)
    }

    /// Waiters that announced they sleep (a hint: it changes at any moment).
    pub fn sleepers(&self) -> u32 {
        (self.sleepers.load(Ordering::Relaxed) & COUNT) as u32
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
        assert!(word.futex_calls() >= 1, "the wake syscall is counted");
    }

    #[test]
    fn futex_calls_count_syscalls_and_nothing_else() {
        let word = WaitWord::new();
        assert!(!word.notify_all());
        assert!(word.wait_until(WaitStrategy::Park, None, || true));
        assert_eq!(word.futex_calls(), 0, "no syscall, nothing counted");
        let deadline = Deadline::after(Duration::from_millis(5));
        assert!(!word.wait_until(WaitStrategy::Park, Some(deadline), || false));
        assert!(word.futex_calls() >= 1, "the timed-out wait is counted");
    }

    #[test]
    fn futex_calls_wrap() {
        let word = WaitWord::new();
        word.futex_calls.store(u32::MAX, Ordering::Relaxed);
        let deadline = Deadline::after(Duration::from_millis(1));
        assert!(!word.wait_until(WaitStrategy::Park, Some(deadline), || false));
        assert!(word.futex_calls() < 8, "wrapped past u32::MAX");
    }
}
