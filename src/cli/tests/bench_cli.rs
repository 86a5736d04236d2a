//! `ipcring bench` run as a user would, with every count divided by 100
//! (`--smoke`) so that it takes seconds: the JSON report's schema, that
//! every row `--list` names either measured or said why not, `--only`, the
//! refusal to run on one CPU, that the bench leaves nothing behind
//! (segments, FIFOs, message queues, iceoryx2's files, also after its child
//! is killed), and the charts of `--svg`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ipcring::segment::{self, Address};
use serde_json::Value;

const TRANSPORTS: [&str; 19] = [
    "hw-limit",
    "ipcring-spsc",
    "ipcring-spsc-chunk",
    "ipcring-mpmc",
    "ipcring-records",
    "ipcring-datagram",
    "ipcring-queue",
    "ipcring-stream",
    "pipe",
    "fifo",
    "uds-stream",
    "uds-dgram",
    "sysv-msg",
    "posix-mq",
    "eventfd",
    "iceoryx2",
    "rtrb",
    "rtrb-chunk",
    "crossbeam-arrayqueue",
];
/// ipcring's channels, each measured in every wait strategy.
const CHANNELS: [&str; 6] = [
    "ipcring-spsc",
    "ipcring-mpmc",
    "ipcring-records",
    "ipcring-datagram",
    "ipcring-queue",
    "ipcring-stream",
];
const MODES: [&str; 3] = ["spin", "hybrid", "park"];
/// The rows whose items are fixed-size types of up to 1 KiB.
const FIXED_SLOT: [&str; 3] = ["ipcring-spsc", "ipcring-spsc-chunk", "ipcring-mpmc"];
const SIZES: [u64; 4] = [8, 64, 1024, 65536];
const RATES: [u64; 3] = [1_000, 10_000, 100_000];
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

/// The ids of the SysV message queues that exist now.
fn sysv_queue_ids() -> BTreeSet<String> {
    let text = std::fs::read_to_string("/proc/sysvipc/msg").unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let Some(id_col) = header.iter().position(|&c| c == "msqid") else {
        return BTreeSet::new();
    };
    lines
        .filter_map(|line| line.split_whitespace().nth(id_col).map(str::to_owned))
        .collect()
}

/// What the bench names in shared places: FIFO directories in the temp
/// directory and POSIX queues (when /dev/mqueue is mounted). iceoryx2's
/// directories are left to [`iceoryx2_files`], which tells runs apart by
/// pid: another test's bench may be running an iceoryx2 row meanwhile.
fn bench_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for dir in [std::env::temp_dir(), "/dev/mqueue".into()] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("ipcring-bench-")
                    && !name.starts_with("ipcring-bench-iceoryx2-")
                {
                    names.insert(format!("{}/{name}", dir.display()));
                }
            }
        }
    }
    names
}

/// iceoryx2's files: what the bench's iceoryx2 rows name in /dev/shm and
/// the temp directory (`ipcring-bench-iceoryx2-<bench pid>-...`), and
/// anything in iceoryx2's default places (its root directory and its
/// `iox2_` shared-memory prefix), which the rows must never use. Another
/// iceoryx2 program running beside the tests would show up here too.
fn iceoryx2_files(bench_pid: u32) -> BTreeSet<String> {
    let ours = format!("ipcring-bench-iceoryx2-{bench_pid}-");
    let mut names = BTreeSet::new();
    for dir in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&ours) || name.starts_with("iox2_") {
                    names.insert(format!("{}/{name}", dir.display()));
                }
            }
        }
    }
    for dir in ["/tmp/iceoryx2/nodes", "/tmp/iceoryx2/services"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                names.insert(entry.path().display().to_string());
            }
        }
    }
    names
}

fn positive(value: &Value) -> bool {
    value.as_f64().is_some_and(|v| v > 0.0)
}

fn bench(args: &[&str]) -> (Output, u32) {
    bench_with(args, &[])
}

fn bench_with(args: &[&str], env: &[(&str, &str)]) -> (Output, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .arg("bench")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

/// The ids `bench --list` prints for `args`, in order.
fn listed(args: &[&str]) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args(["bench", "--list"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "bench --list failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The ids every run must have: each ipcring channel in each wait
/// strategy at each size, a throughput row per channel and size in the
/// default strategy, and hybrid and park paced rows per channel and rate.
fn required_ipcring_ids() -> Vec<String> {
    let mut ids = Vec::new();
    for channel in CHANNELS {
        for size in SIZES {
            for mode in MODES {
                ids.push(format!("{channel}/{mode}/pingpong/{size}"));
            }
            ids.push(format!("{channel}/hybrid/throughput/{size}"));
        }
        for rate in RATES {
            for mode in ["hybrid", "park"] {
                ids.push(format!("{channel}/{mode}/paced-{rate}/64"));
            }
        }
    }
    ids
}

fn json_report(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // `from_slice` rejects anything after the first value: exactly one
    // object, with no progress or warning text mixed in.
    serde_json::from_slice(&output.stdout).unwrap()
}

fn check_machine(machine: &Value) {
    let cpus = machine["cpus"].as_u64().expect("machine.cpus");
    assert!(cpus >= 2, "{machine}");
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
    assert!(machine["virtualized"].is_boolean(), "{machine}");
    for field in ["cores", "threads_per_core", "pinned_pair", "hypervisor"] {
        assert!(machine.get(field).is_some(), "machine.{field} missing");
    }
}

fn check_row(row: &Value) {
    assert!(row["id"].is_string(), "{row}");
    assert!(row["transport"].is_string(), "{row}");
    let mode = row["mode"].as_str().expect("mode");
    assert!(["spin", "hybrid", "park", "null"].contains(&mode), "{row}");
    let size = row["msg_size"].as_u64().expect("msg_size");
    assert!(SIZES.contains(&size), "{row}");
    for field in ["msgs_per_sec", "bytes_per_sec", "iterations"] {
        assert!(positive(&row[field]), "{field} must be positive: {row}");
    }
    assert!(
        row["cpu_ns_per_msg"].as_f64().is_some_and(|cpu| cpu >= 0.0),
        "{row}"
    );
    assert!(row["suspect"].is_boolean(), "{row}");
    let ipcring = row["transport"]
        .as_str()
        .is_some_and(|t| t.starts_with("ipcring-"));
    assert_eq!(
        row["futex_calls_per_msg"].is_number(),
        ipcring,
        "futex_calls_per_msg is a number for ipcring rows only: {row}"
    );
    match row["scenario"].as_str().expect("scenario") {
        "pingpong" | "paced" | "first-lap" => {
            let latency: Vec<u64> = LATENCY_FIELDS
                .iter()
                .map(|field| row[*field].as_u64().expect("latency in ns"))
                .collect();
            assert!(latency[0] > 0, "{row}");
            assert!(latency.is_sorted(), "percentiles out of order: {row}");
            if row["scenario"] == "paced" {
                let rate = row["rate"].as_u64().expect("paced rows have a rate");
                assert!(RATES.contains(&rate), "{row}");
            } else {
                assert!(row["rate"].is_null(), "{row}");
            }
        }
        "throughput" => {
            for field in LATENCY_FIELDS {
                assert!(row[field].is_null(), "{field} must be null: {row}");
            }
            assert!(row["rate"].is_null(), "{row}");
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn smoke_run_reports_every_transport_and_leaves_nothing_behind() {
    let segments_before = named_segments();
    let queues_before = sysv_queue_ids();
    let names_before = bench_names();
    // The bench's pid is not known yet: its own names cannot exist before.
    let iceoryx2_before = iceoryx2_files(0);
    let (output, bench_pid) = bench(&["--quick", "--smoke", "--json"]);
    let report = json_report(&output);
    check_machine(&report["machine"]);
    assert!(report["warnings"].is_array());

    let results = report["results"].as_array().expect("results");
    let skipped = report["skipped"].as_array().expect("skipped");
    for row in results {
        check_row(row);
    }
    for skip in skipped {
        let reason = skip["reason"].as_str().expect("reason");
        assert!(
            !reason.is_empty() && !reason.starts_with("failed"),
            "{skip}"
        );
        assert!(skip["row"].is_string(), "{skip}");
    }
    // Every transport measured or said why not, at every size it has rows
    // for; a row is never both.
    let measured: BTreeSet<&str> = results.iter().filter_map(|r| r["id"].as_str()).collect();
    let not_measured: BTreeSet<&str> = skipped.iter().filter_map(|s| s["row"].as_str()).collect();
    assert!(measured.is_disjoint(&not_measured));
    // Exactly the rows the bench defines, each once.
    let defined = listed(&[]);
    let defined_set: BTreeSet<&str> = defined.iter().map(String::as_str).collect();
    assert_eq!(
        defined_set.len(),
        defined.len(),
        "duplicate ids: {defined:?}"
    );
    assert_eq!(results.len() + skipped.len(), defined.len(), "{report}");
    let reported: BTreeSet<&str> = measured.union(&not_measured).copied().collect();
    assert_eq!(reported, defined_set);
    for id in required_ipcring_ids() {
        assert!(defined_set.contains(id.as_str()), "{id} is not a row");
    }
    // Only fixed-slot items stop short of a size; every other ipcring row
    // carries every size. Huge-page rows may be skipped where the system
    // reserves none, with the kernel's reason, and mlock rows where
    // RLIMIT_MEMLOCK is too low for their rings (an ordinary user's).
    for skip in skipped {
        let row = skip["row"].as_str().unwrap_or_default();
        let transport = row.split('/').next().unwrap_or_default();
        let reason = skip["reason"].as_str().unwrap_or_default();
        if transport == "ipcring-spsc-huge" {
            assert!(reason.contains("huge pages"), "{skip}");
        } else if transport == "ipcring-spsc-mlock" {
            assert!(reason.contains("RLIMIT_MEMLOCK"), "{skip}");
        } else if transport.starts_with("ipcring-") {
            assert!(
                FIXED_SLOT.contains(&transport) && row.ends_with("/65536"),
                "{skip}"
            );
        }
    }
    for transport in TRANSPORTS {
        let prefix = format!("{transport}/");
        assert!(
            measured
                .iter()
                .chain(&not_measured)
                .any(|id| id.starts_with(&prefix)),
            "{transport} neither measured nor skipped: {report}"
        );
    }
    for transport in [
        "pipe",
        "fifo",
        "uds-stream",
        "uds-dgram",
        "sysv-msg",
        "posix-mq",
        "eventfd",
    ] {
        for scenario in ["pingpong", "throughput"] {
            for size in SIZES {
                let id = format!("{transport}/null/{scenario}/{size}");
                assert!(
                    measured.contains(id.as_str()) || not_measured.contains(id.as_str()),
                    "{id} missing: {report}"
                );
            }
        }
    }
    for scenario in ["pingpong", "throughput"] {
        for size in SIZES {
            let id = format!("iceoryx2/spin/{scenario}/{size}");
            assert!(
                measured.contains(id.as_str()) || not_measured.contains(id.as_str()),
                "{id} missing: {report}"
            );
        }
    }
    for scenario in ["pingpong", "throughput"] {
        assert!(
            results
                .iter()
                .any(|row| row["transport"] == "pipe" && row["scenario"] == scenario),
            "no pipe {scenario} row, which the ratios need: {report}"
        );
    }
    for rate in RATES {
        for transport in ["pipe", "ipcring-spsc", "ipcring-stream"] {
            assert!(
                results.iter().any(|row| row["transport"] == transport
                    && row["scenario"] == "paced"
                    && row["rate"] == rate),
                "no {transport} paced row at {rate}/s: {report}"
            );
        }
    }

    // The residency rows: the first lap after attach, plain and with each
    // option, at every SPSC payload size; huge pages may be skipped (with
    // the reason) where none are reserved, mlock where the limit is too
    // low (the reasons are checked above), the others must run.
    for transport in [
        "ipcring-spsc",
        "ipcring-spsc-populate",
        "ipcring-spsc-mlock",
        "ipcring-spsc-huge",
    ] {
        for size in [8, 64, 1024] {
            let id = format!("{transport}/spin/first-lap/{size}");
            let may_skip = matches!(transport, "ipcring-spsc-huge" | "ipcring-spsc-mlock");
            assert!(
                measured.contains(id.as_str()) || (may_skip && not_measured.contains(id.as_str())),
                "{id} missing: {report}"
            );
        }
    }

    // The bench shares only anonymous memfds, so it should add no named
    // segment at all; one it created and left would carry its pid.
    let leftovers: Vec<_> = named_segments()
        .into_iter()
        .filter(|segment| !segments_before.contains(segment))
        .filter(|(address, creator)| {
            *creator == Some(bench_pid) || address.to_string().contains("bench")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "the bench left segments behind: {leftovers:?}"
    );
    let new_queues: Vec<_> = sysv_queue_ids()
        .difference(&queues_before)
        .cloned()
        .collect();
    assert!(
        new_queues.is_empty(),
        "SysV message queues left: {new_queues:?}"
    );
    let new_names: Vec<_> = bench_names().difference(&names_before).cloned().collect();
    assert!(
        new_names.is_empty(),
        "FIFOs or POSIX queues left: {new_names:?}"
    );
    let new_iceoryx2: Vec<_> = iceoryx2_files(bench_pid)
        .difference(&iceoryx2_before)
        .cloned()
        .collect();
    assert!(
        new_iceoryx2.is_empty(),
        "iceoryx2 files left: {new_iceoryx2:?}"
    );
}

/// The pid of a running `bench-child` whose parent is `bench_pid`.
fn bench_child_of(bench_pid: u32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The fields after the parenthesised command: state, then ppid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(bench_pid) && String::from_utf8_lossy(&cmdline).contains("bench-child") {
            return Some(pid);
        }
    }
    None
}

#[test]
fn iceoryx2_rows_leave_nothing_behind_when_the_child_is_killed() {
    let iceoryx2_before = iceoryx2_files(0);
    // Not `--smoke`: the rows run long enough for a child to be found.
    let child = Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args([
            "bench",
            "--quick",
            "--json",
            "--only",
            "iceoryx2/spin/pingpong/*",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bench_pid = child.id();
    let started = Instant::now();
    let mut killed = None;
    while killed.is_none() && started.elapsed() < Duration::from_secs(60) {
        if let Some(pid) = bench_child_of(bench_pid) {
            // SAFETY: kill(2) on a pid we just read as the bench's child;
            // at worst it has exited and the call fails with ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = Some(pid);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let output = child.wait_with_output().unwrap();
    assert!(killed.is_some(), "no bench-child appeared");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let skipped = report["skipped"].as_array().unwrap();
    // The killed row failed (or, if the kill came as the row ended, all
    // rows measured); either way, iceoryx2's files are gone.
    assert!(
        skipped.iter().all(|s| s["reason"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("failed"))),
        "{report}"
    );
    let left: Vec<_> = iceoryx2_files(bench_pid)
        .difference(&iceoryx2_before)
        .cloned()
        .collect();
    assert!(left.is_empty(), "iceoryx2 files left: {left:?}");
}

#[test]
fn only_selects_rows_by_substring_or_glob() {
    let (output, _) = bench(&["--smoke", "--json", "--only", "pipe/*/pingpong/8"]);
    let report = json_report(&output);
    let ids: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["id"].as_str())
        .collect();
    assert_eq!(ids, ["pipe/null/pingpong/8"], "{report}");

    let (output, _) = bench(&["--smoke", "--json", "--only", "sysv-msg/null/pingpong"]);
    let report = json_report(&output);
    let rows = report["results"].as_array().unwrap();
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(rows.len() + skipped.len(), SIZES.len(), "{report}");
    assert!(rows.iter().all(|row| row["transport"] == "sysv-msg"));

    // A new channel's row, through the same selection.
    let (output, _) = bench(&["--smoke", "--json", "--only", "datagram/park/pingpong/64"]);
    let report = json_report(&output);
    let ids: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["id"].as_str())
        .collect();
    assert_eq!(ids, ["ipcring-datagram/park/pingpong/64"], "{report}");

    // --list applies the same selection, in table order.
    assert_eq!(
        listed(&["--only", "ipcring-stream/park"]),
        [
            "ipcring-stream/park/pingpong/8",
            "ipcring-stream/park/pingpong/64",
            "ipcring-stream/park/pingpong/1024",
            "ipcring-stream/park/pingpong/65536",
            "ipcring-stream/park/paced-1000/64",
            "ipcring-stream/park/paced-10000/64",
            "ipcring-stream/park/paced-100000/64",
        ]
    );

    let (output, _) = bench(&["--smoke", "--only", "no-such-row"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no row matches"));
}

#[test]
fn one_cpu_fails_fast_and_suggests_no_pin() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipcring"));
    command.args(["bench", "--smoke"]);
    // As `taskset -c 0` would: the bench inherits a one-CPU mask.
    let cpu = 0;
    // SAFETY: the closure runs in the forked child before exec and calls
    // only sched_setaffinity, which is async-signal-safe; `set` lives on
    // the child's stack for the call.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let output = command.output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--no-pin") && stderr.contains("CPU 0"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
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

/// A path in the temp directory no other test or run uses; what is there is
/// removed on drop, whether the test passed or not.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        TempPath(std::env::temp_dir().join(format!(
            "ipcring-svg-test-{}-{tag}-{nanos}",
            std::process::id()
        )))
    }

    fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CHART_TITLES: [&str; 3] = [
    "Ping-pong round trip: p50 (bar) and p99 (whisker)",
    "Throughput: messages per second, one way",
    "Paced one-way latency against send rate",
];

/// Parses the chart as XML (so every `<`, `&` and quote in its text must be
/// escaped), checks its frame and returns its pieces of text.
fn chart_texts(path: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(path).expect("the chart was written");
    let document = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let view_box: Vec<f64> = root
        .attribute("viewBox")
        .expect("viewBox")
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        view_box.len() == 4 && view_box[2] > 0.0 && view_box[3] > 0.0,
        "{view_box:?}"
    );
    let texts: Vec<String> = root
        .descendants()
        .filter(|node| node.is_text())
        .filter_map(|node| node.text().map(str::to_owned))
        .collect();
    for title in CHART_TITLES {
        assert!(texts.iter().any(|t| t.starts_with(title)), "{title}: {svg}");
    }
    texts
}

#[test]
fn svg_charts_the_rows_and_lists_those_not_measured() {
    let chart = TempPath::new("skips.svg");
    // A temp directory that does not exist: the FIFO row cannot make its
    // FIFOs and is skipped, with a reason that names the directory, whose
    // name needs escaping.
    let missing = TempPath::new("no-dir-a&b<c>\"d'");
    let (output, _) = bench_with(
        &[
            "--smoke",
            "--json",
            "--only",
            "*f*/pingpong/8",
            "--svg",
            chart.as_str(),
        ],
        &[("TMPDIR", missing.as_str())],
    );
    let report = json_report(&output);
    let skipped: Vec<&str> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["row"].as_str())
        .collect();
    assert_eq!(skipped, ["fifo/null/pingpong/8"], "{report}");
    let measured: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(measured, ["eventfd/null/pingpong/8"], "{report}");

    let texts = chart_texts(&chart.0);
    let all = texts.join("\n");
    assert!(texts.iter().any(|t| t == "eventfd 8 B"), "{all}");
    assert!(texts.iter().any(|t| t == "8 B messages"), "{all}");
    assert!(all.contains("1 ping-pong row not measured"), "{all}");
    assert!(all.contains("Not measured (1 row):"), "{all}");
    assert!(
        all.contains("fifo/null/pingpong/8: fifo: creating") && all.contains("a&b<c>\"d'"),
        "{all}"
    );
    assert!(all.contains("No throughput rows in this run."), "{all}");
    assert!(all.contains("No paced rows in this run."), "{all}");
}

#[test]
fn svg_of_paced_rows_only() {
    let chart = TempPath::new("paced.svg");
    let (output, _) = bench(&[
        "--smoke",
        "--only",
        "pipe/null/paced-*",
        "--svg",
        chart.as_str(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The table still goes to stdout.
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("paced@1k") && table.contains("paced@100k"),
        "{table}"
    );

    let texts = chart_texts(&chart.0);
    let all = texts.join("\n");
    for expected in ["pipe", "p50", "p99", "1k/s", "10k/s", "100k/s"] {
        assert!(texts.iter().any(|t| t == expected), "{expected}: {all}");
    }
    assert!(all.contains("No ping-pong rows in this run."), "{all}");
    assert!(all.contains("No throughput rows in this run."), "{all}");
    assert!(!all.contains("not measured"), "{all}");
}

#[test]
fn svg_that_cannot_be_written_fails_in_one_line_after_the_results() {
    let missing_dir = TempPath::new("missing-dir");
    let chart = missing_dir.0.join("chart.svg");
    let (output, _) = bench(&[
        "--smoke",
        "--json",
        "--only",
        "pipe/null/pingpong/8",
        "--svg",
        chart.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    // The results were printed all the same.
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["results"][0]["id"], "pipe/null/pingpong/8");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // A busy machine adds its own warning line first.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with("ipcring bench: warning:"))
        .collect();
    assert_eq!(errors.len(), 1, "one clear line: {stderr}");
    assert!(
        errors[0].contains("chart.svg") && errors[0].contains("No such file"),
        "{stderr}"
    );
    assert!(!chart.exists());
}
