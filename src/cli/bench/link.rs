//! What a transport implements to become a bench row, and the two helpers
//! every side uses while it waits: [`Stop`] (when to give up) and
//! [`Control`] (the child's acknowledgements, beside the transport).
//!
//! The drivers in `drivers.rs` only ever talk to these traits, so every row
//! pays the same measurement overhead and a new transport brings only its
//! own send and receive.

use std::hint;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipcring::segment::Segment;
use ipcring::sync::{Deadline, WaitStrategy, WaitWord};

use super::message;
use super::process::{Inherited, Spawner};

/// One end of a two-way message link; the parent's and the child's are
/// alike. Messages are the row's size and laid out as `message.rs` says;
/// the transport moves the bytes and never looks into them.
pub trait Echo {
    /// Sends all of `message` to the peer as one message.
    fn send(&mut self, message: &[u8], stop: &Stop) -> Result<(), String>;
    /// Waits for the peer's next message and copies it into `buffer`, which
    /// is exactly one message long.
    fn recv(&mut self, buffer: &mut [u8], stop: &Stop) -> Result<(), String>;
}

/// The sending end of a one-way throughput link.
pub trait Producer {
    /// Sends messages `items` in order, each built by `message::fill`, so
    /// the consumer can check that nothing was lost, torn or reordered.
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String>;
}

/// The receiving end of a one-way throughput link.
pub trait Consumer {
    /// Receives exactly `items`, checking each with `message::check_seq`.
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String>;
}

/// A two-way link between two processes, for ping-pong and paced rows.
pub trait PingPongTransport: Sync {
    /// `Err(reason)` if messages of `size` bytes cannot travel here (a
    /// kernel limit, a missing feature, no permission): the row is then
    /// reported as skipped. It may probe the kernel, and must clean up
    /// what it probed with.
    fn supports(&self, _size: usize) -> Result<(), String> {
        Ok(())
    }
    /// Creates the link, starts the child with `spawner` (handing it what it
    /// must inherit) and returns the parent's end.
    fn parent(&self, spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String>;
    /// The child's end, made from what it inherited.
    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String>;
}

/// A one-way link between two processes: the parent produces, the child
/// consumes.
pub trait ThroughputTransport: Sync {
    /// As [`PingPongTransport::supports`].
    fn supports(&self, _size: usize) -> Result<(), String> {
        Ok(())
    }
    /// As [`PingPongTransport::parent`].
    fn parent(&self, spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Producer>, String>;
    /// As [`PingPongTransport::child`].
    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Consumer>, String>;
}

/// A one-way link between two threads of this process (8-byte items).
pub trait ThreadTransport: Sync {
    /// Both ends of a queue holding up to `capacity` items. The consumer
    /// moves to the second thread.
    fn pair(&self, capacity: usize) -> (Box<dyn Producer>, Box<dyn Consumer + Send>);
}

/// Any two-way transport as a one-way one: one message per send and per
/// receive, which is how message-oriented transports (datagrams, message
/// queues) are used.
pub struct OneAtATime(pub &'static dyn PingPongTransport);

impl ThroughputTransport for OneAtATime {
    fn supports(&self, size: usize) -> Result<(), String> {
        self.0.supports(size)
    }

    fn parent(&self, spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Producer>, String> {
        Ok(Box::new(EchoEnd {
            end: self.0.parent(spawner, size)?,
            buffer: vec![0; size],
        }))
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Consumer>, String> {
        Ok(Box::new(EchoEnd {
            end: self.0.child(inherited, size)?,
            buffer: vec![0; size],
        }))
    }
}

struct EchoEnd {
    end: Box<dyn Echo>,
    buffer: Vec<u8>,
}

impl Producer for EchoEnd {
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        for seq in items {
            message::fill(&mut self.buffer, seq, 0);
            self.end.send(&self.buffer, stop)?;
        }
        Ok(())
    }
}

impl Consumer for EchoEnd {
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        for seq in items {
            self.end.recv(&mut self.buffer, stop)?;
            message::check_seq(&self.buffer, seq)?;
        }
        Ok(())
    }
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
#[derive(Clone)]
pub struct Stop {
    deadline: Instant,
    timeout: Duration,
    aborted: Arc<AtomicBool>,
    /// Run once by the first `abort`: releases a side blocked in a call
    /// that neither a peer's death nor the flag can end (a SysV `msgrcv`).
    release: Arc<Mutex<Option<Release>>>,
    yield_between_checks: bool,
}

type Release = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("deadline", &self.deadline)
            .field("aborted", &self.aborted)
            .finish_non_exhaustive()
    }
}

impl Stop {
    pub fn after(timeout: Duration) -> Stop {
        Stop {
            deadline: Instant::now() + timeout,
            timeout,
            aborted: Arc::new(AtomicBool::new(false)),
            release: Arc::new(Mutex::new(None)),
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
        let release = self.release.lock().ok().and_then(|mut slot| slot.take());
        if let Some(release) = release {
            release();
        }
    }

    /// Sets what [`abort`](Self::abort) runs to free a blocked side.
    pub fn on_abort(&self, release: impl FnOnce() + Send + 'static) {
        if let Ok(mut slot) = self.release.lock() {
            *slot = Some(Box::new(release));
        }
    }

    /// When the row gives up.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
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
/// | 128    | `report`    | [`ChildReport`], 8 words                | the child only, before its last ack |
const ACKS: usize = 0;
const ACK_WORD: usize = 64;
const REPORT: usize = 128;
const REPORT_WORDS: usize = 8;
pub const CONTROL_SIZE: usize = 4096;

/// The child's acknowledgements to the parent: "ready" once its end is
/// open and it is pinned, then one per finished phase.
#[derive(Clone, Copy)]
pub struct Control<'a> {
    acks: &'a AtomicU64,
    ack_word: &'a WaitWord,
    report: &'a [AtomicU64; REPORT_WORDS],
}

/// What the child measured on its side, handed back through the control
/// block: its own CPU time and futex calls, and for paced rows the one-way
/// latencies it saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChildReport {
    pub cpu_ns: u64,
    pub futex_calls: u64,
    /// Paced rows: one-way latency percentiles (ns) and the sample count.
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub samples: u64,
}

impl ChildReport {
    fn to_words(self) -> [u64; REPORT_WORDS] {
        [
            self.cpu_ns,
            self.futex_calls,
            self.p50,
            self.p99,
            self.p999,
            self.max,
            self.samples,
            0,
        ]
    }

    fn from_words(w: [u64; REPORT_WORDS]) -> ChildReport {
        ChildReport {
            cpu_ns: w[0],
            futex_calls: w[1],
            p50: w[2],
            p99: w[3],
            p999: w[4],
            max: w[5],
            samples: w[6],
        }
    }
}

impl<'a> Control<'a> {
    pub fn in_segment(segment: &'a Segment) -> Result<Control<'a>, String> {
        let view_error = |e| format!("control block: {e}");
        Ok(Control {
            acks: segment.view(ACKS).map_err(view_error)?,
            ack_word: segment.view(ACK_WORD).map_err(view_error)?,
            report: segment.view(REPORT).map_err(view_error)?,
        })
    }

    /// Writes the child's report; call it before the `ack` that ends the
    /// child's part, which publishes it.
    pub fn report(&self, report: ChildReport) {
        for (word, value) in self.report.iter().zip(report.to_words()) {
            // Relaxed: published by the Release `fetch_add` in `ack`.
            word.store(value, Ordering::Relaxed);
        }
    }

    /// The child's report; valid once the ack that followed it was seen
    /// by `wait_for_acks`.
    pub fn read_report(&self) -> ChildReport {
        // Relaxed: `wait_for_acks`' Acquire load ordered these after the
        // child's stores.
        ChildReport::from_words(std::array::from_fn(|i| {
            self.report[i].load(Ordering::Relaxed)
        }))
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
    report: [AtomicU64; REPORT_WORDS],
}

impl LocalControl {
    pub fn control(&self) -> Control<'_> {
        Control {
            acks: &self.acks,
            ack_word: &self.ack_word,
            report: &self.report,
        }
    }
}
