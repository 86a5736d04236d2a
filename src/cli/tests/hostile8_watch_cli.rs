//! `ipcring stat --watch` against a hostile world: intervals and counts at
//! the edges of their types, names that lead nowhere, a channel replaced
//! by another kind under its name, SysV channels removed, files cut short
//! (part-way, or cut and regrown), rings scribbled while watched, a reader
//! killed mid-watch, and the watch itself stopped and resumed. Every run
//! ends with status 0 (signalled to stop), 1 (one line on stderr) or 2
//! (usage), never a panic or a signal, and every line it prints parses.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{Cleanup, unique_posix, unique_sysv};
use ipcring::channel::{ChannelOptions, RING_OFFSET, mpmc, spsc};
use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

fn ipcring(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipcring"));
    command.args(args);
    command
}

fn run(args: &[&str]) -> Output {
    ipcring(args).output().unwrap()
}

fn assert_no_panic(what: &str, stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: {stderr}"
    );
}

/// A running `stat --watch`, its stdout read line by line on a thread.
struct Watch {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::process::ChildStderr,
}

impl Watch {
    fn start(name: &str, extra: &[&str]) -> Watch {
        let mut args = vec!["stat", "--watch", name];
        args.extend_from_slice(extra);
        let mut child = ipcring(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Watch {
            child: Some(child),
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn poll(&mut self) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.len()
    }

    /// Waits until `n` lines have come in all.
    fn wait_lines(&mut self, n: usize) {
        let deadline = Instant::now() + LIMIT;
        while self.seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!("{e} waiting for line {n}; so far: {:#?}", self.seen),
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: plain syscall on our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits for the exit; returns its status, every stdout line and
    /// stderr.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < LIMIT, "the watch did not end");
            std::thread::sleep(Duration::from_millis(5));
        };
        while let Ok(line) = self.lines.recv_timeout(LIMIT) {
            self.seen.push(line);
        }
        let mut stderr = String::new();
        self.stderr.read_to_string(&mut stderr).unwrap();
        assert_no_panic("watch", &stderr);
        (status, std::mem::take(&mut self.seen), stderr)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: plain syscall on our own child; it may be stopped.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn parse(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Every counter of a JSON refresh is null or has a total, a delta that
/// is null or a count, and a rate that is null or a finite number that
/// agrees with the delta over the interval.
fn assert_refresh_is_sane(refresh: &Value) {
    let interval = refresh["interval_s"].as_f64().expect("interval_s");
    assert!(interval >= 0.0, "{refresh}");
    for counter in ["messages", "bytes", "futex_calls", "repairs", "losses"] {
        let value = &refresh[counter];
        if value.is_null() {
            continue;
        }
        assert!(value["total"].is_u64(), "{counter}: {refresh}");
        match (value["delta"].as_u64(), value["per_s"].as_f64()) {
            (None, None) => assert!(value["delta"].is_null() && value["per_s"].is_null()),
            (Some(delta), Some(rate)) => {
                assert!(rate.is_finite() && rate >= 0.0, "{counter}: {refresh}");
                if interval >= 0.01 {
                    // Rounded to 0.1 a second, over microsecond intervals.
                    let implied = rate * interval;
                    let slack = 1.0 + delta as f64 * 0.01 + interval * 0.1;
                    assert!(
                        (implied - delta as f64).abs() <= slack,
                        "{counter}: {rate}/s over {interval} s is not {delta}: {refresh}"
                    );
                }
            }
            (Some(_), None) => assert!(interval == 0.0, "{counter}: {refresh}"),
            (None, Some(_)) => panic!("{counter}: a rate without a delta: {refresh}"),
        }
    }
}

/// Intervals and counts outside what the options take: each a usage
/// error (status 2), never a panic, whatever the number's size or sign.
#[test]
fn absurd_intervals_and_counts_are_usage_errors() {
    let name = unique_posix("h8-watch-absurd").to_string();
    let intervals = [
        "0",
        "1ns",
        "-1",
        "-5s",
        "1e9s",
        "1e-2",
        "9ms",
        "0.0099",
        "18446744073709551615",
        "18446744073709551616s",
        "1e308",
        "99999999999999999999999999999999999999h",
        "nan",
        "inf",
        "",
        " ",
        "1.2.3",
        "5 s",
        "٣s",
    ];
    for interval in intervals {
        let flag = format!("--interval={interval}");
        let output = run(&["stat", "--watch", &name, &flag, "--count", "1"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert_no_panic(&flag, &stderr);
    }
    for count in ["0", "-1", "18446744073709551616", "1e3", "", "many"] {
        let flag = format!("--count={count}");
        let output = run(&["stat", "--watch", &name, &flag]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert_no_panic(&flag, &stderr);
    }
}

/// An interval so long that the clock cannot add it (and one it can, a
/// few hundred million years): the watch prints its heading, waits, and
/// ends at once with status 0 on SIGTERM; the largest count is taken, and
/// SIGINT ends that watch too.
#[test]
fn intervals_beyond_the_clock_and_the_largest_count_end_on_a_signal() {
    let address = unique_posix("h8-watch-huge");
    let _cleanup = Cleanup(address.clone());
    let _tx = spsc::Sender::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
    let name = address.to_string();
    for interval in ["4000000000000000h", "3000000000000h"] {
        let mut watch = Watch::start(&name, &["--interval", interval, "--count", "3"]);
        watch.wait_lines(2);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(watch.poll(), 2, "no refresh comes: {:?}", watch.seen);
        watch.signal(libc::SIGTERM);
        let (status, lines, stderr) = watch.finish();
        assert_eq!(status.code(), Some(0), "{interval}: {lines:?} {stderr}");
    }
    let mut watch = Watch::start(
        &name,
        &[
            "--json",
            "--interval",
            "10ms",
            "--count",
            "18446744073709551615",
        ],
    );
    watch.wait_lines(3);
    watch.signal(libc::SIGINT);
    let (status, lines, stderr) = watch.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    for (i, refresh) in parse(&lines).iter().enumerate() {
        assert_eq!(refresh["refresh"], i as u64 + 1);
        assert_refresh_is_sane(refresh);
    }
}

/// Names that lead to no channel: anonymous-memory spellings, SysV keys
/// that are private, negative, absent or not numbers, paths, and a name
/// longer than any file name; and plain segments of random kinds, one
/// too small for a channel. Status 1 with one line on stderr, or 2.
#[test]
fn names_that_lead_to_no_channel_exit_1_or_2_with_one_line() {
    let missing_key = unique_sysv().to_string();
    let long = "x".repeat(300);
    let plain_small = unique_posix("h8-watch-plain-small");
    let plain_big = unique_posix("h8-watch-plain-big");
    let plain_sysv = unique_sysv();
    let _cleanup = (
        Cleanup(plain_small.clone()),
        Cleanup(plain_big.clone()),
        Cleanup(plain_sysv.clone()),
    );
    let spsc_kind = u32::from_le_bytes(*b"SPSC");
    let _segments = [
        Segment::create(&plain_small, &CreateOptions::new(1).kind(spsc_kind)).unwrap(),
        Segment::create(&plain_big, &CreateOptions::new(1 << 16).kind(0xdead_beef)).unwrap(),
        Segment::create(&plain_sysv, &CreateOptions::new(1 << 16).kind(spsc_kind)).unwrap(),
    ];
    // SysV segments another program made: blank, and full of bytes.
    let raw_keys = [unique_sysv(), unique_sysv()];
    let _raw: Vec<common::RemoveSysvKey> = raw_keys
        .iter()
        .enumerate()
        .map(|(i, address)| {
            let Address::SysV(key) = address else {
                unreachable!()
            };
            // SAFETY: plain syscalls on a fresh segment of our own; the
            // bytes written lie within its 64 KiB, attached here.
            unsafe {
                let id = libc::shmget(key.get(), 1 << 16, libc::IPC_CREAT | libc::IPC_EXCL | 0o600);
                assert!(id >= 0, "shmget");
                if i == 1 {
                    let at = libc::shmat(id, std::ptr::null(), 0);
                    assert_ne!(at as isize, -1, "shmat");
                    std::ptr::write_bytes(at.cast::<u8>(), 0xa5, 1 << 16);
                    libc::shmdt(at);
                }
            }
            common::RemoveSysvKey(key.get())
        })
        .collect();
    let raw_names = raw_keys.map(|address| address.to_string());
    let (plain_small, plain_big, plain_sysv) = (
        plain_small.to_string(),
        plain_big.to_string(),
        plain_sysv.to_string(),
    );
    for name in [
        "memfd",
        "memfd:ipcring-anon",
        "/proc/self/fd/0",
        "/dev/shm/",
        "sysv:0",
        "sysv:-1",
        "sysv:0x",
        "sysv:zz",
        "sysv:0x1ffffffff",
        missing_key.as_str(),
        ".",
        "..",
        "",
        long.as_str(),
        plain_small.as_str(),
        plain_big.as_str(),
        plain_sysv.as_str(),
        raw_names[0].as_str(),
        raw_names[1].as_str(),
    ] {
        let output = run(&[
            "stat",
            "--watch",
            name,
            "--interval",
            "10ms",
            "--count",
            "2",
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let code = output.status.code();
        assert!(matches!(code, Some(1 | 2)), "{name:?}: {code:?} {stderr}");
        assert_no_panic(name, &stderr);
        if code == Some(1) {
            assert_eq!(stderr.lines().count(), 1, "{name:?}: {stderr}");
            assert!(output.stdout.is_empty(), "{name:?}");
        }
    }
}

/// The watch's end: status 1, a last line saying the channel is gone for
/// `reason`, and one line on stderr.
fn assert_gone(status: std::process::ExitStatus, lines: &[String], stderr: &str, reason: &str) {
    assert_eq!(status.code(), Some(1), "{lines:#?} {stderr}");
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(
        last["gone"].as_str().unwrap_or_default().contains(reason),
        "{last}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A channel removed and its name given to a channel of another kind
/// between two refreshes: the watch does not go on reading the old
/// channel as if it were the new one; it ends, saying so.
#[test]
fn a_channel_replaced_by_another_kind_under_its_name_ends_the_watch() {
    let address = unique_posix("h8-watch-replaced");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    let mut tx = spsc::Sender::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
    tx.send(1).unwrap();
    let mut watch = Watch::start(&name, &["--json", "--interval", "200ms"]);
    watch.wait_lines(1);
    drop(tx);
    Segment::remove(&address).unwrap();
    let created = run(&["create", &name, "--kind", "queue"]);
    assert!(created.status.success());
    let (status, lines, stderr) = watch.finish();
    assert_gone(status, &lines, &stderr, "removed");
    for refresh in &parse(&lines)[..lines.len() - 1] {
        assert_eq!(refresh["kind"], "spsc");
    }
}

/// A SysV channel watched while a sender sends, then removed: the deltas
/// add up and the removal ends the watch.
#[test]
fn a_sysv_channel_is_watched_and_its_removal_ends_the_watch() {
    let address = unique_sysv();
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    let mut tx = mpmc::Sender::<u32>::create(&address, 64, &ChannelOptions::new()).unwrap();
    let mut watch = Watch::start(&name, &["--json", "--interval", "100ms"]);
    watch.wait_lines(1);
    for i in 0..40 {
        tx.send(i).unwrap();
    }
    let n = watch.poll();
    watch.wait_lines(n + 2);
    Segment::remove(&address).unwrap();
    let (status, lines, stderr) = watch.finish();
    assert_gone(status, &lines, &stderr, "removed");
    let refreshes = parse(&lines[..lines.len() - 1]);
    let sent: u64 = refreshes
        .iter()
        .map(|r| r["messages"]["delta"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, 40, "{lines:#?}");
    assert_eq!(refreshes[0]["kind"], "mpmc");
    refreshes.iter().for_each(assert_refresh_is_sane);
}

/// The file cut to a page past the ring's header (what the watch reads
/// is still there), and cut to nothing and regrown between two refreshes
/// (what it reads is zeros): both end the watch with status 1 and one
/// line, never a SIGBUS.
#[test]
fn a_file_cut_part_way_or_cut_and_regrown_ends_the_watch_with_status_1() {
    let address = unique_posix("h8-watch-cut");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    let _tx = spsc::Sender::<u64>::create(&address, 4096, &ChannelOptions::new()).unwrap();
    let size = std::fs::metadata(common::truncate::segment_file(&address))
        .unwrap()
        .len();
    let mut watch = Watch::start(&name, &["--json", "--interval", "100ms"]);
    watch.wait_lines(1);
    let part_way = (ipcring::segment::HEADER_SIZE + RING_OFFSET + 4096) as u64;
    assert!(part_way < size);
    common::truncate::truncate_segment_file_from_child(&address, part_way);
    let (status, lines, stderr) = watch.finish();
    assert_gone(status, &lines, &stderr, "truncated");

    common::truncate::truncate_segment_file_from_child(&address, size);
    let mut watch = Watch::start(&name, &["--json", "--interval", "500ms"]);
    watch.wait_lines(1);
    common::truncate::truncate_segment_file_from_child(&address, 0);
    common::truncate::truncate_segment_file_from_child(&address, size);
    let (status, lines, stderr) = watch.finish();
    assert_eq!(status.code(), Some(1), "{lines:#?} {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    parse(&lines).iter().for_each(|refresh| {
        if refresh.get("gone").is_none() {
            assert_refresh_is_sane(refresh);
        }
    });
}

/// Random words written over a channel's ring (positions, wait words and
/// their futex counts, slots; everything but the magic) from another
/// thread, again and again, while it is watched every 10 ms: every line
/// parses and its rates are null or agree with their deltas, and SIGTERM
/// ends the watch with status 0.
#[test]
fn rings_scribbled_while_watched_give_sane_lines_or_dashes() {
    use ipcring::channel::queue::{Queue, QueueConfig};
    for kind in ["spsc", "mpmc", "queue"] {
        let address = unique_posix("h8-watch-scribble");
        let _cleanup = Cleanup(address.clone());
        let name = address.to_string();
        let options = ChannelOptions::new();
        let _keep: Box<dyn std::any::Any> = match kind {
            "spsc" => Box::new(spsc::Sender::<u64>::create(&address, 64, &options).unwrap()),
            "mpmc" => Box::new(mpmc::Sender::<u64>::create(&address, 64, &options).unwrap()),
            _ => Box::new(Queue::create(&address, &QueueConfig::new(8, 64), &options).unwrap()),
        };
        for json in [true, false] {
            let mut extra = vec!["--interval", "10ms"];
            if json {
                extra.push("--json");
            }
            let mut watch = Watch::start(&name, &extra);
            watch.wait_lines(3);
            let scribbler = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
            let ring_len = scribbler.user_len() - RING_OFFSET;
            let words = ring_len.min(2 * 4096) / 8;
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(json);
            for _ in 0..50 {
                for _ in 0..8 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Past the magic, which would make it no channel at all.
                    let offset = RING_OFFSET + 8 + 8 * (x % (words as u64 - 1)) as usize;
                    scribbler
                        .view::<AtomicU64>(offset)
                        .unwrap()
                        .store(x.rotate_left(17) >> (x % 64), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let n = watch.poll();
            watch.wait_lines(n + 2);
            watch.signal(libc::SIGTERM);
            let (status, lines, stderr) = watch.finish();
            assert_eq!(status.code(), Some(0), "{kind}: {stderr}");
            if json {
                parse(&lines).iter().for_each(assert_refresh_is_sane);
            } else {
                for line in &lines[2..] {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    assert!(fields.len() >= 6, "{kind}: {line}");
                    for field in fields {
                        assert!(
                            !field.contains("inf") && !field.contains("NaN"),
                            "{kind}: {line}"
                        );
                    }
                }
            }
        }
    }
}

/// Run in a child: a receiver that takes whatever comes until killed.
fn receive_forever(address: &Address) {
    let mut rx = mpmc::Receiver::<u64>::open(address).unwrap();
    loop {
        let _ = rx.recv_timeout(Duration::from_millis(100));
    }
}

/// A receiver process SIGKILLed while watched, between sends: the watch
/// goes on, its lines stay sane, and the senders' later traffic is
/// counted.
#[test]
fn a_receiver_killed_mid_watch_leaves_the_watch_running() {
    const NAME: &str = "a_receiver_killed_mid_watch_leaves_the_watch_running";
    if let Some(role) = common::child_role() {
        assert_eq!(role, "receiver");
        receive_forever(&std::env::var("NAME").unwrap().parse().unwrap());
        return;
    }
    let address = unique_posix("h8-watch-killed");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    let mut tx = mpmc::Sender::<u64>::create(&address, 256, &ChannelOptions::new()).unwrap();
    let mut watch = Watch::start(&name, &["--json", "--interval", "100ms"]);
    watch.wait_lines(1);
    let mut receiver = common::spawn_child(NAME, "receiver", &[("NAME", name.clone())]);
    for i in 0..100 {
        tx.send(i).unwrap();
    }
    // Killed once the watch has counted the sends, whatever it is doing.
    let counted = |watch: &mut Watch| {
        watch.poll();
        watch
            .seen
            .iter()
            .any(|line| serde_json::from_str::<Value>(line).unwrap()["messages"]["total"] == 100)
    };
    common::eventually(LIMIT, "a refresh counting 100", || counted(&mut watch));
    receiver.child().kill().unwrap();
    receiver.wait_code(LIMIT);
    for i in 0..50 {
        tx.try_send(i).unwrap();
    }
    let n = watch.poll();
    watch.wait_lines(n + 3);
    watch.signal(libc::SIGTERM);
    let (status, lines, stderr) = watch.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let refreshes = parse(&lines);
    refreshes.iter().for_each(assert_refresh_is_sane);
    let last = refreshes.last().unwrap();
    assert_eq!(last["messages"]["total"], 150, "{last}");
}

/// The watch SIGSTOPed for a second while 5 000 messages are sent,
/// then resumed: the first refresh after covers the whole gap with a rate
/// that agrees with its delta (no burst of refreshes to catch up, no
/// nonsense rate), and the deltas add up to what was sent.
#[test]
fn a_watch_stopped_and_resumed_reports_the_gap_with_a_sane_rate() {
    const SENT: u64 = 5000;
    let address = unique_posix("h8-watch-stopped");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    let mut tx = spsc::Sender::<u64>::create(&address, 8192, &ChannelOptions::new()).unwrap();
    let mut rx = spsc::Receiver::<u64>::open(&address).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let draining = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut got = 0;
            while got < SENT && !done.load(Ordering::Relaxed) {
                if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    got += 1;
                }
            }
            got
        })
    };
    let mut watch = Watch::start(&name, &["--json", "--interval", "100ms"]);
    watch.wait_lines(2);
    watch.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let pid = watch.pid();
    common::eventually(LIMIT, "the watch to stop", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The state follows the parenthesised command name.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    });
    for i in 0..SENT {
        tx.send(i).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(stopped.elapsed()));
    let before_resume = watch.poll();
    watch.signal(libc::SIGCONT);
    watch.wait_lines(before_resume + 3);
    watch.signal(libc::SIGTERM);
    let (status, lines, stderr) = watch.finish();
    done.store(true, Ordering::Relaxed);
    assert_eq!(draining.join().unwrap(), SENT);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let refreshes = parse(&lines);
    refreshes.iter().for_each(assert_refresh_is_sane);
    let sum: u64 = refreshes
        .iter()
        .map(|r| r["messages"]["delta"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, SENT, "{lines:#?}");
    // The refresh that spans the stop: at least the time it was stopped.
    let gap = refreshes
        .iter()
        .find(|r| r["messages"]["delta"].as_u64().unwrap() > 0)
        .unwrap();
    assert!(gap["interval_s"].as_f64().unwrap() >= 0.9, "{gap}");
    // After the gap the beat starts again from then: the next refreshes
    // are not a burst of catch-ups at zero intervals.
    let at = refreshes.iter().position(|r| r == gap).unwrap();
    let next = &refreshes[at + 1];
    assert!(next["interval_s"].as_f64().unwrap() > 0.01, "{next}");
}
