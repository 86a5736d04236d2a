//! `stat --watch`: a channel's traffic, refreshed every interval.
//!
//! The library reads the counters from the channel's shared memory
//! (`channel::counters`) and judges each interval's change
//! (`Counters::since`); this file only keeps the clock and formats. It
//! maps the segment read-only and attaches no endpoint, so watching changes
//! nothing in the channel. SIGINT and SIGTERM end it with status 0: it has
//! nothing to clean up, and stopping is how a watch is meant to end.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipcring::channel::{self, Change, Changes, Counters};
use ipcring::segment::{Address, OpenOptions, Segment, SegmentError};
use serde_json::{Value, json};

/// The shortest `--interval`: shorter would only measure our own sleeps.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The `--interval` without one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Sleeps last at most this long, so a signal is noticed promptly.
const SLICE: Duration = Duration::from_millis(50);

/// `--interval`: a duration as `recv --timeout` takes it, at least
/// [`MIN_INTERVAL`].
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = crate::queue_cmd::parse_duration(text)?;
    if interval < MIN_INTERVAL {
        return Err(format!("`{text}` is shorter than {MIN_INTERVAL:?}"));
    }
    Ok(interval)
}

/// Why a watch ended early.
enum Ended {
    /// The channel went away; the line says how.
    Gone(&'static str),
    /// Anything else, as the one-line error.
    Failed(String),
}

/// Watches `name`, printing a line every `interval`, `count` times (or
/// until SIGINT or SIGTERM).
pub fn run(name: &str, as_json: bool, interval: Duration, count: Option<u64>) -> ExitCode {
    match watch(name, as_json, interval, count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Ended::Gone(reason)) => {
            if as_json {
                println!("{}", json!({ "name": name, "gone": reason }));
            } else {
                println!("{name}: {reason}");
            }
            eprintln!("ipcring: stat --watch {name}: {reason}");
            ExitCode::FAILURE
        }
        Err(Ended::Failed(message)) => {
            eprintln!("ipcring: stat --watch {name}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn watch(name: &str, as_json: bool, interval: Duration, count: Option<u64>) -> Result<(), Ended> {
    crate::interrupt::install().map_err(Ended::Failed)?;
    let address: Address = name
        .parse()
        .map_err(|e: SegmentError| Ended::Failed(e.to_string()))?;
    let options = OpenOptions::new()
        .read_only()
        .allow_foreign_owner(true)
        .timeout(Duration::ZERO);
    let segment = Segment::open(&address, &options).map_err(|e| Ended::Failed(e.to_string()))?;
    let kind = crate::inspect::kind_name(segment.kind());
    let mut earlier = channel::counters(&segment).map_err(|e| Ended::Failed(e.to_string()))?;
    let started = Instant::now();
    let mut sampled = started;
    if !as_json {
        println!("watching {name} ({kind}) every {interval:?}; Ctrl-C stops");
        println!(
            "{:>8} {:>12} {:>14} {:>9} {:>9} {:>9}",
            "TIME", "MSGS/S", "BYTES/S", "FUTEX/S", "REPAIRS", "LOSSES"
        );
    }
    let mut refresh = 0u64;
    // On a fixed beat, so that lines do not drift; after a stall (the
    // process was stopped), the beat starts again from now.
    let mut due = started.checked_add(interval);
    while count.is_none_or(|count| refresh < count) {
        if !sleep_until(due) {
            return Ok(());
        }
        due = due.and_then(|due| due.checked_add(interval));
        if due.is_some_and(|due| due <= Instant::now()) {
            due = Instant::now().checked_add(interval);
        }
        let now = sample(&segment)?;
        let at = Instant::now();
        let elapsed = at - sampled;
        let changes = now.since(&earlier, elapsed);
        refresh += 1;
        if as_json {
            println!(
                "{}",
                line_json(name, &kind, refresh, at - started, elapsed, &now, &changes)
            );
        } else {
            println!("{}", line_text(at - started, elapsed, &now, &changes));
        }
        earlier = now;
        sampled = at;
    }
    Ok(())
}

/// Sleeps until `due` (never, if `None`: an interval past the clock's
/// range) in slices; false if a signal asked us to stop.
fn sleep_until(due: Option<Instant>) -> bool {
    loop {
        if crate::interrupt::received().is_some() {
            return false;
        }
        let left = due.map_or(SLICE, |due| due.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(SLICE));
    }
}

/// One reading, unless the channel is gone: its file cut short (checked
/// first, so that we do not read pages that are no longer there), or its
/// name removed or given to another segment.
fn sample(segment: &Segment) -> Result<Counters, Ended> {
    const TRUNCATED: &str = "the segment's file was truncated while watching";
    if !segment.file_intact() {
        return Err(Ended::Gone(TRUNCATED));
    }
    let counters = channel::counters(segment).map_err(|e| {
        if segment.is_broken() {
            Ended::Gone(TRUNCATED)
        } else {
            Ended::Failed(e.to_string())
        }
    })?;
    match segment.is_still_named() {
        Ok(true) => Ok(counters),
        Ok(false) => Err(Ended::Gone("the channel was removed while watching")),
        Err(e) => Err(Ended::Failed(e.to_string())),
    }
}

fn counter_json(total: Option<u64>, change: Change, elapsed: Duration) -> Value {
    match (total, change) {
        (None, _) | (_, Change::NotKept) => Value::Null,
        (Some(total), change) => json!({
            "total": total,
            "delta": change.amount(),
            "per_s": change.per_second(elapsed).map(|rate| (rate * 10.0).round() / 10.0),
        }),
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1e6
}

fn line_json(
    name: &str,
    kind: &str,
    refresh: u64,
    since_start: Duration,
    elapsed: Duration,
    now: &Counters,
    changes: &Changes,
) -> Value {
    json!({
        "name": name,
        "kind": kind,
        "refresh": refresh,
        "elapsed_s": seconds(since_start),
        "interval_s": seconds(elapsed),
        "messages": counter_json(now.messages, changes.messages, elapsed),
        "bytes": counter_json(now.bytes, changes.bytes, elapsed),
        "futex_calls": counter_json(Some(u64::from(now.futex_calls)), changes.futex_calls, elapsed),
        "repairs": counter_json(Some(now.repairs), changes.repairs, elapsed),
        "losses": counter_json(Some(now.losses), changes.losses, elapsed),
    })
}

/// A rate as a whole number, or `-` when not told.
fn rate(change: Change, elapsed: Duration) -> String {
    change
        .per_second(elapsed)
        .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.0}"))
}

/// Bytes per second in binary units, or `-`.
fn byte_rate(change: Change, elapsed: Duration) -> String {
    let Some(rate) = change.per_second(elapsed) else {
        return "-".to_owned();
    };
    let units = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"];
    let mut value = rate;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", units[0])
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// A running total, with this interval's growth when there was some.
fn total(total: u64, change: Change) -> String {
    match change {
        Change::By(n) if n > 0 => format!("{total} (+{n})"),
        _ => total.to_string(),
    }
}

fn line_text(
    since_start: Duration,
    elapsed: Duration,
    now: &Counters,
    changes: &Changes,
) -> String {
    format!(
        "{:>7.1}s {:>12} {:>14} {:>9} {:>9} {:>9}",
        since_start.as_secs_f64(),
        rate(changes.messages, elapsed),
        byte_rate(changes.bytes, elapsed),
        rate(changes.futex_calls, elapsed),
        total(now.repairs, changes.repairs),
        total(now.losses, changes.losses),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("1ms").is_err());
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn rates_and_dashes() {
        let second = Duration::from_secs(1);
        assert_eq!(byte_rate(Change::By(512), second), "512 B/s");
        assert_eq!(byte_rate(Change::By(3 << 20), second), "3.0 MiB/s");
        assert_eq!(byte_rate(Change::Implausible, second), "-");
        assert_eq!(rate(Change::NotKept, second), "-");
        assert_eq!(rate(Change::By(7), second / 2), "14");
        assert_eq!(total(3, Change::By(1)), "3 (+1)");
        assert_eq!(total(3, Change::Implausible), "3");
    }
}
