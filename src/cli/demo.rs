//! `ipcring demo`: a parent and a child process bounce a counter through a
//! named segment, waking each other with the futex handshake, once per wait
//! strategy. It shows the segment, the participants table and the sync layer
//! working across real processes.
//!
//! SIGINT and SIGTERM end it cleanly: the parent notices within one wait
//! slice, stops its child and removes the segment before exiting.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment};
use ipcring::sync::{Deadline, WaitStrategy, WaitWord};

const PING: usize = 0;
const PONG: usize = 64;
const PING_WORD: usize = 128;
const PONG_WORD: usize = 192;
const STOP: u64 = u64::MAX;
/// A round trip that takes longer means the peer is gone.
const ROUND_TRIP_LIMIT: Duration = Duration::from_secs(5);
/// The parent waits in slices this long, checking for SIGINT and SIGTERM
/// between them (a futex wait outlasts signals).
const WAIT_SLICE: Duration = Duration::from_millis(50);

const STRATEGIES: [(&str, WaitStrategy); 3] = [
    ("busy-spin", WaitStrategy::BusySpin),
    (
        "spin-then-park",
        WaitStrategy::SpinThenPark {
            spins: WaitStrategy::DEFAULT_SPINS,
            yields: WaitStrategy::DEFAULT_YIELDS,
        },
    ),
    ("park", WaitStrategy::Park),
];

struct Cells<'a> {
    ping: &'a AtomicU64,
    pong: &'a AtomicU64,
    ping_word: &'a WaitWord,
    pong_word: &'a WaitWord,
}

fn cells(segment: &Segment) -> Result<Cells<'_>, String> {
    let view_error = |e| format!("demo: {e}");
    Ok(Cells {
        ping: segment.view(PING).map_err(view_error)?,
        pong: segment.view(PONG).map_err(view_error)?,
        ping_word: segment.view(PING_WORD).map_err(view_error)?,
        pong_word: segment.view(PONG_WORD).map_err(view_error)?,
    })
}

/// Removes the demo segment however `run` ends.
struct RemoveGuard(Address);

impl Drop for RemoveGuard {
    fn drop(&mut self) {
        let _ = Segment::remove(&self.0);
    }
}

/// Kills the child if the parent bails out early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn run(round_trips: u64) -> Result<(), String> {
    // Before the segment exists: from here a signal only sets a flag.
    super::interrupt::install().map_err(|e| format!("demo: {e}"))?;
    let name = format!("demo-{}", std::process::id());
    let address: Address = name.parse().map_err(|e| format!("demo: {e}"))?;
    let segment =
        Segment::create(&address, &CreateOptions::new(4096)).map_err(|e| format!("demo: {e}"))?;
    let _remove = RemoveGuard(address.clone());
    let cells = cells(&segment)?;
    let exe = std::env::current_exe().map_err(|e| format!("demo: {e}"))?;

    println!(
        "two processes, one segment (/dev/shm/ipcring.{name}), {round_trips} round trips per strategy"
    );
    println!(
        "{:<16} {:>10} {:>10} {:>10} {:>12}",
        "strategy", "p50 ns", "p99 ns", "max ns", "round trips/s"
    );
    for (label, strategy) in STRATEGIES {
        cells.ping.store(0, Ordering::Relaxed);
        cells.pong.store(0, Ordering::Relaxed);
        let child = Command::new(&exe)
            .args(["demo-child", &name, label])
            .spawn()
            .map_err(|e| format!("demo: spawning the child: {e}"))?;
        let mut child = ChildGuard(child);
        let mut samples = Vec::with_capacity(round_trips as usize);
        let started = Instant::now();
        for round in 1..=round_trips {
            let t0 = Instant::now();
            // Release: pairs with the child's Acquire load of `ping`.
            cells.ping.store(round, Ordering::Release);
            cells.ping_word.notify_one();
            let limit = Deadline::after(ROUND_TRIP_LIMIT);
            loop {
                let slice = Deadline::after(WAIT_SLICE.min(limit.remaining()));
                // Acquire: pairs with the child's Release store of `pong`.
                let answered = cells.pong_word.wait_until(strategy, Some(slice), || {
                    cells.pong.load(Ordering::Acquire) == round
                });
                if answered {
                    break;
                }
                stop_if_interrupted()?;
                if limit.has_passed() {
                    return Err(format!(
                        "demo: the child did not answer round {round} within {ROUND_TRIP_LIMIT:?}"
                    ));
                }
            }
            samples.push(t0.elapsed().as_nanos() as u64);
            stop_if_interrupted()?;
        }
        let elapsed = started.elapsed();
        cells.ping.store(STOP, Ordering::Release);
        cells.ping_word.notify_one();
        let status = child.0.wait().map_err(|e| format!("demo: {e}"))?;
        if !status.success() {
            return Err(format!("demo: the child exited with {status}"));
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>12.0}",
            label,
            at(0.50),
            at(0.99),
            samples[samples.len() - 1],
            round_trips as f64 / elapsed.as_secs_f64()
        );
    }
    let info = segment.info();
    println!(
        "participants now: {} (the children detached when they exited)",
        info.participants.len()
    );
    Ok(())
}

/// Returns (dropping the child and segment guards on the way out) once
/// SIGINT or SIGTERM has come.
fn stop_if_interrupted() -> Result<(), String> {
    match super::interrupt::received() {
        Some(signal) => Err(format!("demo: interrupted by signal {signal}")),
        None => Ok(()),
    }
}

pub fn child(name: &str, strategy: &str) -> Result<(), String> {
    let strategy = STRATEGIES
        .iter()
        .find(|(label, _)| *label == strategy)
        .map(|(_, s)| *s)
        .ok_or_else(|| format!("demo-child: unknown strategy {strategy:?}"))?;
    let address: Address = name.parse().map_err(|e| format!("demo-child: {e}"))?;
    let segment =
        Segment::open(&address, &OpenOptions::new()).map_err(|e| format!("demo-child: {e}"))?;
    let cells = cells(&segment)?;
    let mut last = 0;
    loop {
        // Acquire: pairs with the parent's Release store of `ping`. The
        // parent notices a dead child by its own timeout; a child whose
        // parent died is stopped after the same limit.
        let deadline = Deadline::after(ROUND_TRIP_LIMIT * 2);
        let woke = cells.ping_word.wait_until(strategy, Some(deadline), || {
            cells.ping.load(Ordering::Acquire) != last
        });
        if !woke {
            return Err("demo-child: the parent went quiet".to_owned());
        }
        last = cells.ping.load(Ordering::Acquire);
        if last == STOP {
            return Ok(());
        }
        // Release: pairs with the parent's Acquire load of `pong`.
        cells.pong.store(last, Ordering::Release);
        cells.pong_word.notify_one();
    }
}
