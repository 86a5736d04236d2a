//! What `ipcring bench` prints: the machine it ran on, then each row as a
//! table line or as one JSON object.

use std::fs;

use serde_json::{Value, json};

use super::drivers::Measurement;
use super::rows::{MSG_SIZE, Row, Scenario};

/// Where the two sides of every row ran.
#[derive(Clone, Debug)]
pub enum Placement {
    Pinned {
        parent: usize,
        child: usize,
    },
    /// Why not.
    Unpinned(String),
}

impl Placement {
    pub fn child_cpu(&self) -> Option<usize> {
        match self {
            Placement::Pinned { child, .. } => Some(*child),
            Placement::Unpinned(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Placement::Pinned { parent, child } => {
                format!(
                    "parent (or first thread) on CPU {parent}, child (or second thread) on CPU {child}"
                )
            }
            Placement::Unpinned(why) => format!("not pinned: {why}"),
        }
    }
}

pub struct Machine {
    /// CPUs this process may run on.
    pub cpus: usize,
    pub placement: Placement,
    pub kernel: String,
    pub cpu_model: String,
}

impl Machine {
    pub fn detect(cpus: usize, placement: Placement) -> Machine {
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|cpuinfo| cpu_model(&cpuinfo))
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cpus,
            placement,
            kernel,
            cpu_model,
        }
    }
}

/// The first `model name` line (x86); Arm kernels print none.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

pub struct RowResult {
    pub row: &'static Row,
    pub measurement: Measurement,
}

impl RowResult {
    fn msgs_per_sec(&self) -> f64 {
        self.measurement.msgs_per_sec()
    }

    /// What the ratio columns compare, higher is faster: the median round
    /// trip for ping-pong, which one VM stall cannot move as it moves the
    /// mean behind msgs/s; msgs/s for throughput.
    fn speed(&self) -> f64 {
        match self.measurement.latency {
            Some(latency) => 1.0 / latency.p50.max(1) as f64,
            None => self.msgs_per_sec(),
        }
    }
}

/// How many times faster `row` is than the reference row, if there is one.
fn ratio(row: &RowResult, reference: Option<&RowResult>) -> Option<f64> {
    reference.map(|reference| row.speed() / reference.speed())
}

fn reference<'a>(
    results: &'a [RowResult],
    transport: &str,
    scenario: Scenario,
) -> Option<&'a RowResult> {
    results
        .iter()
        .find(|r| r.row.transport == transport && r.row.scenario() == scenario)
}

pub fn json(machine: &Machine, results: &[RowResult]) -> Value {
    let pinned = match machine.placement {
        Placement::Pinned { parent, child } => json!([parent, child]),
        Placement::Unpinned(_) => Value::Null,
    };
    let rows: Vec<Value> = results
        .iter()
        .map(|result| {
            let latency = result.measurement.latency;
            let msgs_per_sec = result.msgs_per_sec();
            json!({
                "transport": result.row.transport,
                "mode": result.row.mode.as_str(),
                "scenario": result.row.scenario().as_str(),
                "msg_size": MSG_SIZE,
                "p50_ns": latency.map(|l| l.p50),
                "p99_ns": latency.map(|l| l.p99),
                "p999_ns": latency.map(|l| l.p999),
                "max_ns": latency.map(|l| l.max),
                "msgs_per_sec": msgs_per_sec.round() as u64,
                "bytes_per_sec": (msgs_per_sec * MSG_SIZE as f64).round() as u64,
                "iterations": result.measurement.iterations,
            })
        })
        .collect();
    json!({
        "machine": {
            "cpus": machine.cpus,
            "pinned": pinned,
            "placement": machine.placement.describe(),
            "kernel": machine.kernel,
            "cpu_model": machine.cpu_model,
        },
        "results": rows,
    })
}

pub fn table(machine: &Machine, heading: &str, results: &[RowResult]) -> String {
    let mut out = format!(
        "{heading}\nmachine: {} CPU{} ({}), kernel {}\nplacement: {}\n\n",
        machine.cpus,
        if machine.cpus == 1 { "" } else { "s" },
        machine.cpu_model,
        machine.kernel,
        machine.placement.describe()
    );
    out += &format!(
        "{:<22} {:<6} {:<10} {:>9} {:>9} {:>9} {:>9} {:>14} {:>8} {:>8}\n",
        "transport", "mode", "scenario", "p50", "p99", "p99.9", "max", "msgs/s", "vs pipe", "vs hw"
    );
    let hw_limit = reference(results, "hw-limit", Scenario::PingPong);
    for result in results {
        let scenario = result.row.scenario();
        let [p50, p99, p999, max] = match result.measurement.latency {
            Some(l) => [l.p50, l.p99, l.p999, l.max].map(nanos),
            None => ["-"; 4].map(str::to_owned),
        };
        let vs_pipe = ratio(result, reference(results, "pipe", scenario));
        let vs_hw = match scenario {
            Scenario::PingPong => ratio(result, hw_limit),
            Scenario::Throughput => None,
        };
        out += &format!(
            "{:<22} {:<6} {:<10} {:>9} {:>9} {:>9} {:>9} {:>14} {:>8} {:>8}\n",
            result.row.transport,
            result.row.mode.as_str(),
            scenario.as_str(),
            p50,
            p99,
            p999,
            max,
            thousands(result.msgs_per_sec().round() as u64),
            vs_pipe.map_or("-".to_owned(), times),
            vs_hw.map_or("-".to_owned(), times),
        );
    }
    out += "\nmsgs/s: round trips (pingpong) or items (throughput) per second.\n\
            vs pipe, vs hw: times faster than the pipe row of the same scenario and than\n\
            hw-limit, by median round trip (pingpong) or by msgs/s (throughput).\n";
    out
}

fn nanos(ns: u64) -> String {
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
        if i > 0 && (digits.len() - i) % 3 == 0 {
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
    fn reads_the_x86_model_name() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n"), None);
    }

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
