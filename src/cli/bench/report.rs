//! What `ipcring bench` prints: the machine it ran on, then each row as a
//! table line or as one JSON object, then the rows that could not run.

use std::time::Duration;

use serde_json::{Value, json};

use super::drivers::Measurement;
use super::machine::{Machine, Placement};
use super::rows::{Row, Scenario};

pub struct RowResult<'a> {
    pub row: &'a Row,
    pub measurement: Measurement,
}

/// A row that did not run here, and why.
pub struct Skipped {
    pub row: String,
    pub reason: String,
}

impl RowResult<'_> {
    fn msgs_per_sec(&self) -> f64 {
        self.measurement.msgs_per_sec()
    }

    /// What the ratio columns compare, higher is faster: the median
    /// latency for ping-pong and paced rows, which one VM stall cannot move
    /// as it moves the mean behind msgs/s; msgs/s for throughput.
    fn speed(&self) -> f64 {
        match self.measurement.latency {
            Some(latency) => 1.0 / latency.p50.max(1) as f64,
            None => self.msgs_per_sec(),
        }
    }

    /// CPU time per iteration, both sides together, in nanoseconds.
    fn cpu_ns_per_msg(&self) -> f64 {
        let m = &self.measurement;
        m.parent_cost.per_iteration(m.parent_cost.cpu_ns)
            + m.child_cost.per_iteration(m.child_cost.cpu_ns)
    }

    /// Futex syscalls per iteration, both sides; rows that do not wait
    /// through ipcring's handshake have none to count.
    fn futex_calls_per_msg(&self) -> Option<f64> {
        let m = &self.measurement;
        self.row.futex.then(|| {
            m.parent_cost.per_iteration(m.parent_cost.futex_calls)
                + m.child_cost.per_iteration(m.child_cost.futex_calls)
        })
    }

    /// The hardware floor for this row's latency: the `hw-limit` round
    /// trip for ping-pong, half of it for one-way paced rows.
    fn floor_ns(&self, hw_limit: Option<&RowResult>) -> Option<u64> {
        let round_trip = hw_limit?.measurement.latency?.p50;
        match self.row.scenario {
            Scenario::PingPong | Scenario::FirstLap => Some(round_trip),
            Scenario::Paced { .. } => Some(round_trip / 2),
            Scenario::Throughput => None,
        }
    }

    /// Faster than the hardware allows: a measuring error, not a result.
    fn suspect(&self, hw_limit: Option<&RowResult>) -> bool {
        let is_floor = hw_limit.is_some_and(|hw| std::ptr::eq(hw.row, self.row));
        match (self.floor_ns(hw_limit), self.measurement.latency) {
            (Some(floor), Some(latency)) => !is_floor && latency.p50 < floor,
            _ => false,
        }
    }
}

/// How many times faster `row` is than the reference row, if there is one.
fn ratio(row: &RowResult, reference: Option<&RowResult>) -> Option<f64> {
    reference.map(|reference| row.speed() / reference.speed())
}

/// The pipe row of the same scenario, size and rate.
fn pipe_row<'a>(results: &'a [RowResult<'a>], row: &Row) -> Option<&'a RowResult<'a>> {
    results.iter().find(|r| {
        r.row.transport == "pipe" && r.row.scenario == row.scenario && r.row.size == row.size
    })
}

fn hw_limit_row<'a>(results: &'a [RowResult<'a>]) -> Option<&'a RowResult<'a>> {
    results
        .iter()
        .find(|r| r.row.transport == "hw-limit" && r.row.scenario == Scenario::PingPong)
}

/// Whether each result is suspect, in order: the charts mark them as the
/// table and the JSON do.
pub fn suspects(results: &[RowResult]) -> Vec<bool> {
    let hw_limit = hw_limit_row(results);
    results.iter().map(|r| r.suspect(hw_limit)).collect()
}

pub fn json(machine: &Machine, results: &[RowResult], skipped: &[Skipped]) -> Value {
    let pinned = match machine.placement {
        Placement::Pinned { parent, child } => json!([parent, child]),
        Placement::Unpinned(_) => Value::Null,
    };
    let hw_limit = hw_limit_row(results);
    let rows: Vec<Value> = results
        .iter()
        .map(|result| {
            let latency = result.measurement.latency;
            let msgs_per_sec = result.msgs_per_sec();
            let m = &result.measurement;
            json!({
                "id": result.row.id(),
                "transport": result.row.transport,
                "mode": result.row.mode.as_str(),
                "scenario": result.row.scenario.as_str(),
                "rate": result.row.scenario.rate(),
                "msg_size": result.row.size,
                "p50_ns": latency.map(|l| l.p50),
                "p99_ns": latency.map(|l| l.p99),
                "p999_ns": latency.map(|l| l.p999),
                "max_ns": latency.map(|l| l.max),
                "msgs_per_sec": msgs_per_sec.round() as u64,
                "bytes_per_sec": (msgs_per_sec * result.row.size as f64).round() as u64,
                "iterations": m.iterations,
                "cpu_ns_per_msg": round2(result.cpu_ns_per_msg()),
                "cpu_ns_per_msg_parent": round2(m.parent_cost.per_iteration(m.parent_cost.cpu_ns)),
                "cpu_ns_per_msg_child": round2(m.child_cost.per_iteration(m.child_cost.cpu_ns)),
                "futex_calls_per_msg": result.futex_calls_per_msg().map(round4),
                "vs_pipe": ratio(result, pipe_row(results, result.row)),
                "floor_ns": result.floor_ns(hw_limit),
                "suspect": result.suspect(hw_limit),
            })
        })
        .collect();
    let skipped: Vec<Value> = skipped
        .iter()
        .map(|s| json!({ "row": s.row, "reason": s.reason }))
        .collect();
    json!({
        "machine": {
            "cpus": machine.cpus,
            "cores": machine.cores,
            "threads_per_core": machine.threads_per_core,
            "pinned": pinned,
            "pinned_pair": machine.pair,
            "placement": machine.placement.describe(),
            "kernel": machine.kernel,
            "cpu_model": machine.cpu_model,
            "virtualized": machine.hypervisor.is_some(),
            "hypervisor": machine.hypervisor,
            "load_average": machine.load_average,
            "procs_running": machine.procs_running,
        },
        "warnings": machine.busy_warning().into_iter().collect::<Vec<_>>(),
        "results": rows,
        "skipped": skipped,
    })
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

pub fn table(
    machine: &Machine,
    heading: &str,
    results: &[RowResult],
    skipped: &[Skipped],
    took: Duration,
) -> String {
    let mut out = format!(
        "{heading}\nmachine: {}\nplacement: {}{}\n",
        machine.describe(),
        machine.placement.describe(),
        machine
            .pair
            .map_or(String::new(), |pair| format!(" ({pair})")),
    );
    if let Some(warning) = machine.busy_warning() {
        out += &format!("WARNING: {warning}\n");
    }
    out += &format!(
        "\n{:<22} {:<6} {:<12} {:>6} {:>9} {:>9} {:>9} {:>9} {:>14} {:>9} {:>7} {:>8} {:>8} {:>8}\n",
        "transport",
        "mode",
        "scenario",
        "size",
        "p50",
        "p99",
        "p99.9",
        "max",
        "msgs/s",
        "cpu/msg",
        "futex",
        "vs pipe",
        "vs hw",
        "floor"
    );
    let hw_limit = hw_limit_row(results);
    let mut suspects = 0;
    for result in results {
        let [p50, p99, p999, max] = match result.measurement.latency {
            Some(l) => [l.p50, l.p99, l.p999, l.max].map(nanos),
            None => ["-"; 4].map(str::to_owned),
        };
        let floor = result.floor_ns(hw_limit);
        let vs_hw = match (floor, result.measurement.latency) {
            (Some(floor), Some(latency)) => Some(floor as f64 / latency.p50.max(1) as f64),
            _ => None,
        };
        let suspect = result.suspect(hw_limit);
        suspects += usize::from(suspect);
        let scenario = match result.row.scenario {
            Scenario::Paced { rate } => format!("paced@{}", short_rate(rate)),
            other => other.as_str().to_owned(),
        };
        out += &format!(
            "{:<22} {:<6} {:<12} {:>6} {:>9} {:>9} {:>9} {:>9} {:>14} {:>9} {:>7} {:>8} {:>8} {:>8}\n",
            format!(
                "{}{}",
                result.row.transport,
                if suspect { " (!)" } else { "" }
            ),
            result.row.mode.as_str(),
            scenario,
            bytes(result.row.size),
            p50,
            p99,
            p999,
            max,
            thousands(result.msgs_per_sec().round() as u64),
            nanos(result.cpu_ns_per_msg().round() as u64),
            result
                .futex_calls_per_msg()
                .map_or("-".to_owned(), |f| format!("{f:.2}")),
            ratio(result, pipe_row(results, result.row)).map_or("-".to_owned(), times),
            vs_hw.map_or("-".to_owned(), times),
            floor.map_or("-".to_owned(), nanos),
        );
    }
    if !skipped.is_empty() {
        out += "\nnot measured:\n";
        for skip in skipped {
            out += &format!("  {:<40} {}\n", skip.row, skip.reason);
        }
    }
    out += "\nmsgs/s: round trips (pingpong, first-lap) or messages (throughput, paced) per second.\n\
            p50..max: round trip (pingpong, first-lap); one-way from the intended send time\n\
            (paced). first-lap: the ring's first lap after attach, no warm-up.\n\
            cpu/msg: CPU time of both sides per round trip or message; futex: futex syscalls\n\
            per round trip or message, both sides (ipcring rows only).\n\
            vs pipe: times faster than the pipe row of the same scenario and size (by p50,\n\
            or msgs/s for throughput); vs hw: the floor over p50; floor: the hw-limit round\n\
            trip (half of it for one-way paced rows).\n";
    if suspects > 0 {
        out += "(!): faster than the hardware floor: a measuring error, do not trust the row.\n";
    }
    out += &format!("took {:.1} s\n", took.as_secs_f64());
    out
}

pub fn bytes(size: usize) -> String {
    match size {
        0..1024 => format!("{size} B"),
        _ => format!("{} KiB", size / 1024),
    }
}

fn short_rate(rate: u64) -> String {
    match rate {
        0..1_000 => rate.to_string(),
        _ => format!("{}k", rate / 1_000),
    }
}

pub fn nanos(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// Two significant digits below 10 (`0.0024x`, `0.32x`, `5.7x`), whole
/// numbers above: rows differ by orders of magnitude.
fn times(ratio: f64) -> String {
    if !ratio.is_finite() || ratio <= 0.0 {
        return "-".to_owned();
    }
    let decimals = if ratio >= 10.0 {
        0
    } else {
        (1 - ratio.log10().floor() as i32) as usize
    };
    format!("{ratio:.decimals$}x")
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_for_the_table() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
        assert_eq!(nanos(812), "812 ns");
        assert_eq!(nanos(12_345), "12.3 µs");
        assert_eq!(times(0.5), "0.50x");
        assert_eq!(times(0.002_44), "0.0024x");
        assert_eq!(times(1.0), "1.0x");
        assert_eq!(times(5.71), "5.7x");
        assert_eq!(times(123.4), "123x");
    }
}
