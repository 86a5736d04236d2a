//! The two measurement loops every row runs, whatever its transport: a
//! ping-pong that records each round trip, and a one-way stream timed from
//! the first item sent to the consumer's acknowledgement of the last.
//! Each has a driving side (the parent, which measures) and a serving side
//! (the child or the second thread).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::link::{Consumer, Control, Echo, Producer, Stop};

/// The message that ends a ping-pong; rounds count up from 1, so it never
/// collides with one.
const STOP_MESSAGE: u64 = u64::MAX;
/// The longest round trip the histogram resolves; longer ones are recorded
/// as this. Far beyond any row's timeout.
const HIGHEST_TRACKABLE_NS: u64 = 600_000_000_000;
/// Three significant digits: 0.1% resolution at every magnitude.
const SIGNIFICANT_DIGITS: u8 = 3;

/// How many iterations a row runs: `warmup` first, not measured, then
/// `measured`. For ping-pong an iteration is a round trip; for throughput,
/// an item.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub warmup: u64,
    pub measured: u64,
}

/// Round-trip percentiles, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// Ping-pong rows only.
    pub latency: Option<Latency>,
    pub iterations: u64,
    pub elapsed: Duration,
}

impl Measurement {
    /// Round trips per second for ping-pong, items per second for
    /// throughput.
    pub fn msgs_per_sec(&self) -> f64 {
        self.iterations as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// The parent's side of a ping-pong: waits for the child to be ready, then
/// bounces rounds `1..=warmup + measured`, timing each measured one.
pub fn drive_pingpong(
    end: &mut dyn Echo,
    control: Control<'_>,
    counts: Counts,
    stop: &Stop,
) -> Result<Measurement, String> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, HIGHEST_TRACKABLE_NS, SIGNIFICANT_DIGITS)
            .map_err(|e| format!("histogram: {e}"))?;
    control.wait_for_acks(1, stop)?;
    for round in 1..=counts.warmup {
        round_trip(end, round, stop)?;
    }
    let first = counts.warmup + 1;
    let started = Instant::now();
    for round in first..first + counts.measured {
        let sent = Instant::now();
        round_trip(end, round, stop)?;
        histogram.saturating_record(sent.elapsed().as_nanos() as u64);
    }
    let elapsed = started.elapsed();
    end.send(STOP_MESSAGE, stop)?;
    Ok(Measurement {
        latency: Some(Latency {
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }),
        iterations: counts.measured,
        elapsed,
    })
}

fn round_trip(end: &mut dyn Echo, round: u64, stop: &Stop) -> Result<(), String> {
    end.send(round, stop)?;
    let echoed = end.recv(stop)?;
    if echoed != round {
        return Err(format!("sent round {round}, the peer echoed {echoed}"));
    }
    Ok(())
}

/// The child's side of a ping-pong: echoes every message until the stop
/// message.
pub fn serve_pingpong(end: &mut dyn Echo, control: Control<'_>, stop: &Stop) -> Result<(), String> {
    control.ack();
    loop {
        let message = end.recv(stop)?;
        if message == STOP_MESSAGE {
            return Ok(());
        }
        end.send(message, stop)?;
    }
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
    producer.produce(measured, stop)?;
    control.wait_for_acks(3, stop)?;
    Ok(Measurement {
        latency: None,
        iterations: counts.measured,
        elapsed: started.elapsed(),
    })
}

/// The consumer's side of a throughput row; acknowledges readiness and each
/// phase.
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
    consumer.consume(measured, stop)?;
    control.ack();
    Ok(())
}

fn phases(counts: Counts) -> (std::ops::Range<u64>, std::ops::Range<u64>) {
    let end = counts.warmup + counts.measured;
    (0..counts.warmup, counts.warmup..end)
}
