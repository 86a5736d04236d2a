//! The measurement loops every row runs, whatever its transport: a
//! ping-pong that records each round trip, a one-way stream timed from the
//! first item sent to the consumer's acknowledgement of the last, and a
//! paced one-way stream whose receiver records each message's latency from
//! the moment it was meant to be sent. Each has a driving side (the parent,
//! which measures) and a serving side (the child or the second thread),
//! and each side counts the CPU time and futex calls it spent on the
//! messages (the child hands its counts back through the control block).

use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ipcring::platform::{monotonic_ns, thread_cpu_ns};
use ipcring::sync::futex_calls;

use super::link::{ChildReport, Consumer, Control, Echo, Producer, Stop};
use super::message;

/// The sequence number that ends a ping-pong or paced stream; rounds count
/// up from 1, so it never collides with one.
const STOP_MESSAGE: u64 = u64::MAX;
/// The longest latency the histogram resolves; longer ones are recorded
/// as this. Far beyond any row's timeout.
const HIGHEST_TRACKABLE_NS: u64 = 600_000_000_000;
/// Three significant digits: 0.1% resolution at every magnitude.
const SIGNIFICANT_DIGITS: u8 = 3;
/// A paced sender sleeps until this close to a send time, then spins: a
/// sleep overshoots by tens of microseconds, which at 100k msg/s is
/// several periods.
const SPIN_BEFORE_SEND: Duration = Duration::from_micros(100);

/// How many iterations a row runs: `warmup` first, not measured, then
/// `measured`. For ping-pong an iteration is a round trip; otherwise, a
/// message.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub warmup: u64,
    pub measured: u64,
}

/// Latency percentiles, in nanoseconds: round trips for ping-pong, one-way
/// from the intended send time for paced rows.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// What one side spent over the iterations it counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cost {
    pub cpu_ns: u64,
    pub futex_calls: u64,
    /// Iterations the counts cover (ping-pong counts its warm-up too).
    pub iterations: u64,
}

impl Cost {
    pub fn per_iteration(&self, value: u64) -> f64 {
        value as f64 / self.iterations.max(1) as f64
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// Ping-pong and paced rows.
    pub latency: Option<Latency>,
    pub iterations: u64,
    pub elapsed: Duration,
    /// The parent (or first thread) and the child (or second thread).
    pub parent_cost: Cost,
    pub child_cost: Cost,
}

impl Measurement {
    /// Round trips per second for ping-pong, messages per second otherwise.
    pub fn msgs_per_sec(&self) -> f64 {
        self.iterations as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Counts what one side spends from `start` until `finish`.
struct Meter {
    cpu_ns: u64,
    futex_calls: u64,
}

impl Meter {
    fn start() -> Meter {
        Meter {
            cpu_ns: cpu_ns(),
            futex_calls: futex_calls(),
        }
    }

    fn finish(self, iterations: u64) -> Cost {
        Cost {
            cpu_ns: cpu_ns().saturating_sub(self.cpu_ns),
            futex_calls: futex_calls().saturating_sub(self.futex_calls),
            iterations,
        }
    }
}

/// This thread's CPU time, user and kernel, exact to the call.
fn cpu_ns() -> u64 {
    thread_cpu_ns()
}

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, HIGHEST_TRACKABLE_NS, SIGNIFICANT_DIGITS)
        .map_err(|e| format!("histogram: {e}"))
}

fn child_cost(report: ChildReport, iterations: u64) -> Cost {
    Cost {
        cpu_ns: report.cpu_ns,
        futex_calls: report.futex_calls,
        iterations,
    }
}

/// The parent's side of a ping-pong: waits for the child to be ready, then
/// bounces rounds `1..=warmup + measured`, timing each measured one.
pub fn drive_pingpong(
    end: &mut dyn Echo,
    control: Control<'_>,
    counts: Counts,
    size: usize,
    stop: &Stop,
) -> Result<Measurement, String> {
    let mut histogram = histogram()?;
    let mut out = vec![0; size];
    let mut back = vec![0; size];
    control.wait_for_acks(1, stop)?;
    let meter = Meter::start();
    for round in 1..=counts.warmup {
        round_trip(end, round, &mut out, &mut back, stop)?;
    }
    let first = counts.warmup + 1;
    let started = Instant::now();
    for round in first..first + counts.measured {
        let sent = Instant::now();
        round_trip(end, round, &mut out, &mut back, stop)?;
        histogram.saturating_record(sent.elapsed().as_nanos() as u64);
    }
    let elapsed = started.elapsed();
    let rounds = counts.warmup + counts.measured;
    let parent_cost = meter.finish(rounds);
    message::fill(&mut out, STOP_MESSAGE, 0);
    end.send(&out, stop)?;
    control.wait_for_acks(2, stop)?;
    Ok(Measurement {
        latency: Some(Latency::of(&histogram)),
        iterations: counts.measured,
        elapsed,
        parent_cost,
        child_cost: child_cost(control.read_report(), rounds),
    })
}

fn round_trip(
    end: &mut dyn Echo,
    round: u64,
    out: &mut [u8],
    back: &mut [u8],
    stop: &Stop,
) -> Result<(), String> {
    message::fill(out, round, 0);
    end.send(out, stop)?;
    end.recv(back, stop)?;
    message::check_seq(back, round).map(drop)
}

/// The child's side of a ping-pong: checks and echoes every message until
/// the stop message, then reports what it spent.
pub fn serve_pingpong(
    end: &mut dyn Echo,
    control: Control<'_>,
    size: usize,
    stop: &Stop,
) -> Result<(), String> {
    let mut buffer = vec![0; size];
    control.ack();
    let meter = Meter::start();
    let mut rounds = 0;
    loop {
        end.recv(&mut buffer, stop)?;
        let (seq, _) = message::check(&buffer)?;
        if seq == STOP_MESSAGE {
            break;
        }
        end.send(&buffer, stop)?;
        rounds += 1;
    }
    report(control, meter.finish(rounds), None);
    Ok(())
}

fn report(control: Control<'_>, cost: Cost, latency: Option<(Latency, u64)>) {
    let mut report = ChildReport {
        cpu_ns: cost.cpu_ns,
        futex_calls: cost.futex_calls,
        ..ChildReport::default()
    };
    if let Some((latency, samples)) = latency {
        report.p50 = latency.p50;
        report.p99 = latency.p99;
        report.p999 = latency.p999;
        report.max = latency.max;
        report.samples = samples;
    }
    control.report(report);
    control.ack();
}

/// The parent's side of a throughput row: sends the warm-up items and waits
/// until they are consumed, then times the measured items from the first
/// send to the consumer's acknowledgement of the last.
pub fn drive_throughput(
    producer: &mut dyn Producer,
    control: Control<'_>,
    counts: Counts,
    stop: &Stop,
) -> Result<Measurement, String> {
    let (warmup, measured) = phases(counts);
    control.wait_for_acks(1, stop)?;
    producer.produce(warmup, stop)?;
    control.wait_for_acks(2, stop)?;
    let started = Instant::now();
    let meter = Meter::start();
    producer.produce(measured, stop)?;
    let parent_cost = meter.finish(counts.measured);
    control.wait_for_acks(3, stop)?;
    let elapsed = started.elapsed();
    Ok(Measurement {
        latency: None,
        iterations: counts.measured,
        elapsed,
        parent_cost,
        child_cost: child_cost(control.read_report(), counts.measured),
    })
}

/// The consumer's side of a throughput row; acknowledges readiness and each
/// phase, the last one with its report.
pub fn serve_throughput(
    consumer: &mut dyn Consumer,
    control: Control<'_>,
    counts: Counts,
    stop: &Stop,
) -> Result<(), String> {
    let (warmup, measured) = phases(counts);
    control.ack();
    consumer.consume(warmup, stop)?;
    control.ack();
    let meter = Meter::start();
    consumer.consume(measured, stop)?;
    report(control, meter.finish(counts.measured), None);
    Ok(())
}

fn phases(counts: Counts) -> (std::ops::Range<u64>, std::ops::Range<u64>) {
    let end = counts.warmup + counts.measured;
    (0..counts.warmup, counts.warmup..end)
}

/// The parent's side of a paced row: sends message `n` at `start + n /
/// rate`, stamped with that intended time, not the time it actually left.
/// A sender held up (by a full transport, or descheduled) sends the
/// messages it owes at once, and their latency includes the hold-up: the
/// receiver's figures are free of coordinated omission.
pub fn drive_paced(
    end: &mut dyn Echo,
    control: Control<'_>,
    counts: Counts,
    size: usize,
    rate: u64,
    stop: &Stop,
) -> Result<Measurement, String> {
    let mut out = vec![0; size];
    let period_ns = 1_000_000_000 / rate.max(1);
    let total = counts.warmup + counts.measured;
    control.wait_for_acks(1, stop)?;
    let meter = Meter::start();
    let start = monotonic_ns();
    let mut measured_from = Instant::now();
    for seq in 0..total {
        if seq == counts.warmup {
            measured_from = Instant::now();
        }
        let intended = start + seq * period_ns;
        wait_until(intended, stop)?;
        message::fill(&mut out, seq, intended);
        end.send(&out, stop)?;
    }
    let elapsed = measured_from.elapsed();
    let parent_cost = meter.finish(total);
    message::fill(&mut out, STOP_MESSAGE, 0);
    end.send(&out, stop)?;
    control.wait_for_acks(2, stop)?;
    let report = control.read_report();
    Ok(Measurement {
        latency: Some(Latency {
            p50: report.p50,
            p99: report.p99,
            p999: report.p999,
            max: report.max,
        }),
        iterations: counts.measured,
        elapsed,
        parent_cost,
        child_cost: child_cost(report, total),
    })
}

/// Sleeps, then spins, until `CLOCK_MONOTONIC` reaches `at_ns`.
fn wait_until(at_ns: u64, stop: &Stop) -> Result<(), String> {
    loop {
        let now = monotonic_ns();
        if now >= at_ns {
            return Ok(());
        }
        let left = Duration::from_nanos(at_ns - now);
        if left > SPIN_BEFORE_SEND {
            thread::sleep(left - SPIN_BEFORE_SEND);
            stop.check()?;
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The receiver of a paced row: records each measured message's latency
/// from its intended send time until the stop message, then reports.
pub fn serve_paced(
    end: &mut dyn Echo,
    control: Control<'_>,
    counts: Counts,
    size: usize,
    stop: &Stop,
) -> Result<(), String> {
    let mut histogram = histogram()?;
    let mut buffer = vec![0; size];
    control.ack();
    let meter = Meter::start();
    let mut expected = 0;
    loop {
        end.recv(&mut buffer, stop)?;
        let now = monotonic_ns();
        let (seq, intended) = message::check(&buffer)?;
        if seq == STOP_MESSAGE {
            break;
        }
        if seq != expected {
            return Err(format!("expected message {expected}, received {seq}"));
        }
        if seq >= counts.warmup {
            histogram.saturating_record(now.saturating_sub(intended));
        }
        expected += 1;
    }
    let cost = meter.finish(expected);
    report(
        control,
        cost,
        Some((Latency::of(&histogram), histogram.len())),
    );
    Ok(())
}
