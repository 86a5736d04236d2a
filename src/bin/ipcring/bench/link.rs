//! What a transport implements to become a bench row, and the two helpers
//! every side uses while it waits: [`Stop`] (when to give up) and
//! [`Control`] (the child's acknowledgements, beside the transport).
//!
//! The drivers in `drivers.rs` only ever talk to these traits, so every row
//! pays the same measurement overhead and a new transport brings only its
//! own send and receive.

use std::hint;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ipcring::segment::Segment;
use ipcring::sync::{Deadline, WaitStrategy, WaitWord};

use super::process::{Inherited, Spawner};

/// One end of a ping-pong link; the parent's and the child's are alike.
pub trait Echo {
    /// Sends one 8-byte message to the peer.
    fn send(&mut self, value: u64, stop: &Stop) -> Result<(), String>;
    /// Waits for the peer's next message.
    fn recv(&mut self, stop: &Stop) -> Result<u64, String>;
}

/// The sending end of a one-way throughput link.
pub trait Producer {
    /// Sends `items` in order; each item's value is its own sequence number,
    /// so the consumer can check that nothing was lost or reordered.
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String>;
}

/// The receiving end of a one-way throughput link.
pub trait Consumer {
    /// Receives exactly `items`, checking each value against its sequence
    /// number.
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String>;
}

/// A ping-pong link between two processes.
pub trait PingPongTransport: Sync {
    /// Creates the link, starts the child with `spawner` (handing it what it
    /// must inherit) and returns the parent's end.
    fn parent(&self, spawner: Spawner<'_>) -> Result<Box<dyn Echo>, String>;
    /// The child's end, made from what it inherited.
    fn child(&self, inherited: &Inherited) -> Result<Box<dyn Echo>, String>;
}

/// A one-way link between two processes: the parent produces, the child
/// consumes.
pub trait ThroughputTransport: Sync {
    /// As [`PingPongTransport::parent`].
    fn parent(&self, spawner: Spawner<'_>) -> Result<Box<dyn Producer>, String>;
    /// As [`PingPongTransport::child`].
    fn child(&self, inherited: &Inherited) -> Result<Box<dyn Consumer>, String>;
}

/// A one-way link between two threads of this process.
pub trait ThreadTransport: Sync {
    /// Both ends of a queue holding up to `capacity` items. The consumer
    /// moves to the second thread.
    fn pair(&self, capacity: usize) -> (Box<dyn Producer>, Box<dyn Consumer + Send>);
}

/// How often a spinning side looks up from its poll loop to check for a
/// dead peer or the deadline: rarely enough that the clock read (about
/// 25 ns on a VM) does not show in the figures.
const POLLS_PER_CHECK: u32 = 1024;
/// How long a parked side sleeps before it checks again.
const PARK_SLICE: Duration = Duration::from_millis(50);

/// When a waiting side gives up: the row's deadline passed, or someone
/// raised the abort flag (the watchdog saw the child exit, or the other
/// thread of an in-process row failed).
///
/// Blocking transports such as pipes cannot poll it; they are released
/// instead when the watchdog kills the child and the pipe reaches its end.
#[derive(Clone, Debug)]
pub struct Stop {
    deadline: Instant,
    timeout: Duration,
    aborted: Arc<AtomicBool>,
    yield_between_checks: bool,
}

impl Stop {
    pub fn after(timeout: Duration) -> Stop {
        Stop {
            deadline: Instant::now() + timeout,
            timeout,
            aborted: Arc::new(AtomicBool::new(false)),
            yield_between_checks: false,
        }
    }

    /// For sides that are not pinned apart and may share a CPU: a spinning
    /// side then yields at each check, or its peer would run only when the
    /// scheduler preempts it, a time slice per message.
    pub fn yielding(mut self, may_share_cpu: bool) -> Stop {
        self.yield_between_checks = may_share_cpu;
        self
    }

    /// Makes every side waiting on this `Stop` give up at its next check.
    /// Relaxed: the flag publishes no data, and a late sighting costs at
    /// most one more round of polls.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn deadline_passed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub fn check(&self) -> Result<(), String> {
        if self.aborted.load(Ordering::Relaxed) {
            Err("the peer is gone".to_owned())
        } else if self.deadline_passed() {
            Err(format!("the row did not finish within {:?}", self.timeout))
        } else {
            Ok(())
        }
    }

    /// Busy-polls `poll` until it yields a value.
    ///
    /// The spin hint between polls matches `WaitStrategy::BusySpin`, so
    /// the `hw-limit` row and ipcring's spinning rows poll the same way.
    #[inline]
    pub fn spin_until<T>(&self, mut poll: impl FnMut() -> Option<T>) -> Result<T, String> {
        loop {
            for _ in 0..POLLS_PER_CHECK {
                if let Some(value) = poll() {
                    return Ok(value);
                }
                hint::spin_loop();
            }
            if self.yield_between_checks {
                thread::yield_now();
            }
            self.check()?;
        }
    }

    /// Waits on `word` with `strategy` until `ready()` holds, in slices, so
    /// that a dead peer or the deadline is noticed even while parked.
    pub fn wait_on(
        &self,
        word: &WaitWord,
        strategy: WaitStrategy,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        loop {
            if word.wait_until(strategy, Some(Deadline::after(PARK_SLICE)), &mut ready) {
                return Ok(());
            }
            self.check()?;
        }
    }
}

/// Offsets of the control block, a 4096-byte memfd segment of its own so
/// that transports need no back channel for the bench's coordination.
///
/// | offset | field       | unit / range                            | written by |
/// |--------|-------------|-----------------------------------------|------------|
/// | 0      | `acks`      | phases the child finished: 1 ready, then one per phase | the child only |
/// | 64     | `ack_word`  | `WaitWord` the parent sleeps on         | both (handshake) |
const ACKS: usize = 0;
const ACK_WORD: usize = 64;
pub const CONTROL_SIZE: usize = 4096;

/// The child's acknowledgements to the parent: "ready" once its end is
/// open and it is pinned, then one per finished phase.
#[derive(Clone, Copy)]
pub struct Control<'a> {
    acks: &'a AtomicU64,
    ack_word: &'a WaitWord,
}

impl<'a> Control<'a> {
    pub fn in_segment(segment: &'a Segment) -> Result<Control<'a>, String> {
        let view_error = |e| format!("control block: {e}");
        Ok(Control {
            acks: segment.view(ACKS).map_err(view_error)?,
            ack_word: segment.view(ACK_WORD).map_err(view_error)?,
        })
    }

    pub fn ack(&self) {
        // Release: pairs with the Acquire load in `wait_for_acks`, so what
        // the child did before acknowledging (opening its end, taking the
        // last item) happens before the parent acts on it.
        self.acks.fetch_add(1, Ordering::Release);
        self.ack_word.notify_all();
    }

    /// Waits until the child has acknowledged `count` times in all.
    pub fn wait_for_acks(&self, count: u64, stop: &Stop) -> Result<(), String> {
        // Spin-then-park: a child that is still starting takes
        // milliseconds, and a parent spinning that long on an unpinned run
        // would take the CPU the child needs.
        stop.wait_on(self.ack_word, WaitStrategy::default(), || {
            // Acquire: pairs with the Release `fetch_add` in `ack`.
            self.acks.load(Ordering::Acquire) >= count
        })
    }
}

/// The control block of an in-process row, on the heap.
#[derive(Default)]
pub struct LocalControl {
    acks: AtomicU64,
    ack_word: WaitWord,
}

impl LocalControl {
    pub fn control(&self) -> Control<'_> {
        Control {
            acks: &self.acks,
            ack_word: &self.ack_word,
        }
    }
}
