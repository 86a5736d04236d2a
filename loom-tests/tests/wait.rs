//! The futex wait/notify handshake (`ipcring::sync::WaitWord`) under loom:
//! every interleaving, with a model futex, ends with the waiter awake. A
//! lost wakeup would leave a thread blocked forever, which loom reports as
//! a deadlock.
#![cfg(loom)]

use ipcring::sync::{WaitStrategy, WaitWord};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;
use loom_tests::model;

/// One waiter, one notifier.
#[test]
fn two_threads_no_lost_wakeup() {
    for strategy in [
        WaitStrategy::Park,
        WaitStrategy::SpinThenPark {
            spins: 1,
            yields: 1,
        },
    ] {
        model(move || {
            let word = Arc::new(WaitWord::new());
            let flag = Arc::new(AtomicU32::new(0));
            let notifier = {
                let (word, flag) = (word.clone(), flag.clone());
                thread::spawn(move || {
                    // Release: pairs with the waiter's Acquire load.
                    flag.store(1, Ordering::Release);
                    word.notify_one();
                })
            };
            assert!(word.wait_until(strategy, None, || flag.load(Ordering::Acquire) == 1));
            notifier.join().unwrap();
        });
    }
}

/// Two waiters on one word, one notifier that wakes all.
#[test]
fn three_threads_two_waiters() {
    model(|| {
        let word = Arc::new(WaitWord::new());
        let flag = Arc::new(AtomicU32::new(0));
        let waiter = {
            let (word, flag) = (word.clone(), flag.clone());
            thread::spawn(move || {
                assert!(word.wait_until(WaitStrategy::Park, None, || {
                    flag.load(Ordering::Acquire) == 1
                }));
            })
        };
        let notifier = {
            let (word, flag) = (word.clone(), flag.clone());
            thread::spawn(move || {
                flag.store(1, Ordering::Release);
                word.notify_all();
            })
        };
        assert!(
            word.wait_until(WaitStrategy::Park, None, || flag.load(Ordering::Acquire)
                == 1)
        );
        waiter.join().unwrap();
        notifier.join().unwrap();
    });
}

/// One waiter needs two events from two notifiers: the first wakeup may come
/// too early, and the waiter must sleep again without missing the second.
#[test]
fn three_threads_two_notifiers() {
    model(|| {
        let word = Arc::new(WaitWord::new());
        let bits = Arc::new(AtomicU32::new(0));
        let notifiers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|bit| {
                let (word, bits) = (word.clone(), bits.clone());
                thread::spawn(move || {
                    bits.fetch_or(bit, Ordering::Release);
                    word.notify_one();
                })
            })
            .collect();
        assert!(
            word.wait_until(WaitStrategy::Park, None, || bits.load(Ordering::Acquire)
                == 3)
        );
        for notifier in notifiers {
            notifier.join().unwrap();
        }
    });
}

/// A waiter with a deadline: the model times out at once; the wait reports
/// the truth either way (ready, or not ready and timed out).
#[test]
fn timed_wait_reports_readiness_truthfully() {
    model(|| {
        let word = Arc::new(WaitWord::new());
        let flag = Arc::new(AtomicU32::new(0));
        let notifier = {
            let (word, flag) = (word.clone(), flag.clone());
            thread::spawn(move || {
                flag.store(1, Ordering::Release);
                word.notify_one();
            })
        };
        let deadline = ipcring::sync::Deadline::after(std::time::Duration::from_secs(1));
        let ready = word.wait_until(WaitStrategy::Park, Some(deadline), || {
            flag.load(Ordering::Acquire) == 1
        });
        notifier.join().unwrap();
        if !ready {
            // Timed out before the store was visible; it is visible now.
            assert_eq!(flag.load(Ordering::Acquire), 1);
        }
        assert_eq!(word.sleepers(), 0);
    });
}

/// A control for the model itself: a protocol without the fences loses a
/// wakeup, and loom must report the deadlock. Loom aborts the process when
/// it does (its panic unwinds through a non-unwinding frame), so this is
/// not run by default; run it with `--ignored` and expect the abort.
#[test]
#[ignore = "must abort with loom's deadlock report; run by hand"]
fn model_catches_a_notifier_that_skips_the_fence() {
    use ipcring::sync::shim::{futex_wait, futex_wake};
    model(|| {
        let epoch = Arc::new(AtomicU32::new(0));
        let flag = Arc::new(AtomicU32::new(0));
        let sleeping = Arc::new(AtomicU32::new(0));
        let notifier = {
            let (epoch, flag, sleeping) = (epoch.clone(), flag.clone(), sleeping.clone());
            thread::spawn(move || {
                flag.store(1, Ordering::Relaxed);
                // Broken: no fence between the store and this load.
                if sleeping.load(Ordering::Relaxed) != 0 {
                    epoch.fetch_add(1, Ordering::Relaxed);
                    futex_wake(&epoch, 1);
                }
            })
        };
        let seen = epoch.load(Ordering::Relaxed);
        sleeping.store(1, Ordering::Relaxed);
        if flag.load(Ordering::Relaxed) == 0 {
            futex_wait(&epoch, seen, None);
        }
        notifier.join().unwrap();
    });
}
