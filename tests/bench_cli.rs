//! `ipcring bench` run as a user would, with every count divided by 100
//! (`--smoke`) so that it takes about a second: the JSON report's shape,
//! and that the bench leaves no segment behind.

use std::process::{Command, Stdio};

use ipcring::segment::{self, Address};
use serde_json::Value;

const TRANSPORTS: [&str; 6] = [
    "hw-limit",
    "ipcring-spsc",
    "ipcring-mpmc",
    "pipe",
    "rtrb",
    "crossbeam-arrayqueue",
];
const LATENCY_FIELDS: [&str; 4] = ["p50_ns", "p99_ns", "p999_ns", "max_ns"];

/// Named segments (POSIX and SysV) that exist now, with their creators.
fn named_segments() -> Vec<(Address, Option<u32>)> {
    segment::list()
        .unwrap()
        .into_iter()
        .map(|listing| {
            let creator = listing.info.ok().map(|info| info.creator_pid);
            (listing.address, creator)
        })
        .collect()
}

fn positive(value: &Value) -> bool {
    value.as_f64().is_some_and(|v| v > 0.0)
}

#[test]
fn smoke_run_prints_one_complete_json_report_and_leaves_no_segment() {
    let before = named_segments();
    let bench = Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args(["bench", "--quick", "--smoke", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bench_pid = bench.id();
    let output = bench.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // `from_slice` rejects anything after the first value: exactly one
    // object.
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    let machine = &report["machine"];
    let cpus = machine["cpus"].as_u64().expect("machine.cpus");
    assert!(cpus >= 1);
    match &machine["pinned"] {
        Value::Null => {}
        Value::Array(pair) => {
            assert_eq!(pair.len(), 2, "{machine}");
            assert!(pair.iter().all(Value::is_u64), "{machine}");
            assert_ne!(pair[0], pair[1], "{machine}");
        }
        other => panic!("machine.pinned must be [A, B] or null, not {other}"),
    }
    assert!(
        machine["kernel"]
            .as_str()
            .is_some_and(|kernel| !kernel.is_empty())
    );
    assert!(machine["cpu_model"].is_string());

    let results = report["results"].as_array().expect("results");
    for transport in TRANSPORTS {
        assert!(
            results.iter().any(|row| row["transport"] == transport),
            "{transport} missing: {report}"
        );
    }
    for scenario in ["pingpong", "throughput"] {
        assert!(
            results
                .iter()
                .any(|row| row["transport"] == "pipe" && row["scenario"] == scenario),
            "no pipe {scenario} row, which the ratios need: {report}"
        );
    }
    for row in results {
        assert!(row["transport"].is_string(), "{row}");
        let mode = row["mode"].as_str().expect("mode");
        assert!(["spin", "hybrid", "park", "null"].contains(&mode), "{row}");
        assert_eq!(row["msg_size"], 8, "{row}");
        for field in ["msgs_per_sec", "bytes_per_sec", "iterations"] {
            assert!(positive(&row[field]), "{field} must be positive: {row}");
        }
        match row["scenario"].as_str().expect("scenario") {
            "pingpong" => {
                let latency: Vec<u64> = LATENCY_FIELDS
                    .iter()
                    .map(|field| row[*field].as_u64().expect("latency in ns"))
                    .collect();
                assert!(latency[0] > 0, "{row}");
                assert!(latency.is_sorted(), "percentiles out of order: {row}");
            }
            "throughput" => {
                for field in LATENCY_FIELDS {
                    assert!(row[field].is_null(), "{field} must be null: {row}");
                }
            }
            other => panic!("unknown scenario {other}"),
        }
    }

    // The bench shares only anonymous memfds, so it should add no named
    // segment at all; one it created and left would carry its pid.
    let leftovers: Vec<_> = named_segments()
        .into_iter()
        .filter(|segment| !before.contains(segment))
        .filter(|(address, creator)| {
            *creator == Some(bench_pid) || address.to_string().contains("bench")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "the bench left segments behind: {leftovers:?}"
    );
}

#[test]
fn rejects_the_same_cpu_twice() {
    let output = Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args(["bench", "--smoke", "--cpus", "0,0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("must differ"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
