//! `ipcring stat --watch`, run as a user would run it while other
//! processes use the channel: the per-interval figures add up to what was
//! sent, sleeps show as futex calls, and a channel that goes away ends the
//! watch with status 1.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Cleanup, unique_posix};
use ipcring::channel::{self, ChannelOptions, records, spsc, stream};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{Address, CreateOptions, Segment};
use ipcring::sync::WaitStrategy;
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

fn succeed(args: &[&str]) {
    let output = run(args);
    assert!(
        output.status.success(),
        "ipcring {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
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

    /// Takes the lines that have come, without waiting; returns how many
    /// have come in all.
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
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: plain syscall on our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the exit; returns its code, every stdout line and stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < LIMIT, "the watch did not end");
            std::thread::sleep(Duration::from_millis(5));
        };
        // The reader thread ends at EOF, and drops its sender.
        while let Ok(line) = self.lines.recv_timeout(LIMIT) {
            self.seen.push(line);
        }
        let mut stderr = String::new();
        self.stderr.read_to_string(&mut stderr).unwrap();
        (status.code(), std::mem::take(&mut self.seen), stderr)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
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

/// The sum of a counter's per-interval deltas.
fn sum(refreshes: &[Value], counter: &str) -> u64 {
    refreshes
        .iter()
        .map(|r| {
            r[counter]["delta"]
                .as_u64()
                .unwrap_or_else(|| panic!("{counter} has no delta in {r}"))
        })
        .sum()
}

fn assert_repairs_and_losses_shown(refreshes: &[Value]) {
    for refresh in refreshes {
        for counter in ["repairs", "losses"] {
            assert_eq!(refresh[counter]["total"], 0, "{refresh}");
            assert_eq!(refresh[counter]["delta"], 0, "{refresh}");
        }
    }
}

const SPSC_MESSAGES: u64 = 40;

/// The child's part: sends `SPSC_MESSAGES` items, each only once the
/// receiver has gone to sleep for it, so each one takes a futex wait (and
/// normally a wake).
fn spsc_sender(address: &Address) {
    let mut tx = spsc::Sender::<u64>::open(address).unwrap();
    let futex_calls = |tx: &spsc::Sender<u64>| channel::counters(tx.segment()).unwrap().futex_calls;
    let mut seen = futex_calls(&tx);
    for i in 0..SPSC_MESSAGES {
        // The count goes up right before the receiver's futex wait.
        common::eventually(LIMIT, "the receiver to sleep", || futex_calls(&tx) != seen);
        tx.send(i).unwrap();
        seen = futex_calls(&tx);
    }
}

/// A child process sends 40 u64s over an SPSC channel to a receiver that
/// only parks, while `stat --watch --json` runs; SIGTERM then ends the
/// watch with status 0. The deltas add up to 40 messages and 320 bytes,
/// and the receiver's 40 sleeps show as at least 40 futex calls.
#[test]
fn spsc_deltas_add_up_and_sleeps_show_as_futex_calls() {
    if let Some(role) = common::child_role() {
        assert_eq!(role, "spsc-sender");
        spsc_sender(&std::env::var("NAME").unwrap().parse().unwrap());
        return;
    }
    let address = unique_posix("watch-spsc");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    let options = ChannelOptions::new().wait_strategy(WaitStrategy::Park);
    let mut rx = spsc::Receiver::<u64>::create(&address, 8, &options).unwrap();

    let mut watch = Watch::start(&name, &["--json", "--interval", "200ms"]);
    // The first line means the watch has its starting reading.
    watch.wait_lines(1);
    let sender = common::spawn_child(
        "spsc_deltas_add_up_and_sleeps_show_as_futex_calls",
        "spsc-sender",
        &[("NAME", name.clone())],
    );
    for i in 0..SPSC_MESSAGES {
        assert_eq!(rx.recv().unwrap(), i);
    }
    sender.wait_success(LIMIT);
    // Two more refreshes: one might have been on its way already, the
    // second surely sampled after the last send.
    let n = watch.poll();
    watch.wait_lines(n + 2);
    watch.signal(libc::SIGTERM);
    let (code, lines, stderr) = watch.finish();
    assert_eq!(
        code,
        Some(0),
        "SIGTERM ends a watch with status 0: {stderr}"
    );
    let refreshes = parse(&lines);
    for (i, refresh) in refreshes.iter().enumerate() {
        assert_eq!(refresh["name"], name.as_str());
        assert_eq!(refresh["kind"], "spsc");
        assert_eq!(refresh["refresh"], i as u64 + 1);
    }
    assert_eq!(sum(&refreshes, "messages"), SPSC_MESSAGES, "{lines:#?}");
    assert_eq!(sum(&refreshes, "bytes"), SPSC_MESSAGES * 8, "{lines:#?}");
    let futex_calls = sum(&refreshes, "futex_calls");
    assert!(
        futex_calls >= SPSC_MESSAGES,
        "{futex_calls} futex calls for {SPSC_MESSAGES} sleeps: {lines:#?}"
    );
    assert_repairs_and_losses_shown(&refreshes);
    let last = refreshes.last().unwrap();
    assert_eq!(last["messages"]["total"], SPSC_MESSAGES);
}

/// Refreshes of a watch that ran `count` times at 200 ms while `traffic`
/// ran in full after its first refresh.
fn watch_around(name: &str, count: usize, traffic: impl FnOnce()) -> Vec<Value> {
    let count_arg = count.to_string();
    let mut watch = Watch::start(
        name,
        &["--json", "--interval", "200ms", "--count", &count_arg],
    );
    watch.wait_lines(1);
    traffic();
    // One refresh may have been on its way when the traffic ended; the one
    // after it surely sampled everything.
    let done_at = watch.poll();
    let (code, lines, stderr) = watch.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), count, "--count {count}: {lines:#?}");
    assert!(
        done_at + 2 <= count,
        "the traffic outlasted the watch ({done_at} of {count} refreshes)"
    );
    parse(&lines)
}

/// `ipcring send` (a child process) puts 100 messages in a queue while
/// `stat --watch --json --count 15` runs: messages and payload bytes add up.
#[test]
fn queue_deltas_add_up_to_what_send_sent() {
    let address = unique_posix("watch-queue");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    succeed(&["create", &name, "--kind", "queue", "--capacity", "128"]);
    let messages: Vec<String> = (0..100).map(|i| format!("message {i}")).collect();
    let bytes: usize = messages.iter().map(String::len).sum();
    let refreshes = watch_around(&name, 15, || {
        let mut args = vec!["send", name.as_str()];
        args.extend(messages.iter().map(String::as_str));
        succeed(&args);
    });
    assert_eq!(refreshes[0]["kind"], "queue");
    assert_eq!(sum(&refreshes, "messages"), 100);
    assert_eq!(sum(&refreshes, "bytes"), bytes as u64);
    assert_repairs_and_losses_shown(&refreshes);
}

/// `ipcring write` (a child process) copies 300 000 bytes into a stream
/// that this process reads: the byte deltas add up, and a stream has no
/// messages (`null`).
#[test]
fn stream_byte_deltas_add_up_and_messages_are_null() {
    const BYTES: usize = 300_000;
    let address = unique_posix("watch-stream");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    succeed(&["create", &name, "--kind", "stream"]);
    let mut reader = stream::Reader::open(&address).unwrap();
    let draining = std::thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        all.len()
    });
    let refreshes = watch_around(&name, 15, || {
        let mut writer = ipcring(&["write", &name])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = writer.stdin.take().unwrap();
        stdin.write_all(&vec![b'x'; BYTES]).unwrap();
        drop(stdin);
        assert!(writer.wait().unwrap().success());
        assert_eq!(draining.join().unwrap(), BYTES);
    });
    assert_eq!(sum(&refreshes, "bytes"), BYTES as u64);
    for refresh in &refreshes {
        assert!(refresh["messages"].is_null(), "{refresh}");
        assert!(refresh["futex_calls"]["total"].is_u64(), "{refresh}");
    }
    assert_repairs_and_losses_shown(&refreshes);
}

/// The text form: a heading, one line per refresh, and `-` for what a
/// record channel does not count (its messages).
#[test]
fn text_lines_show_a_dash_for_what_is_not_counted() {
    let address = unique_posix("watch-text");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    let _tx = records::Sender::create(&address, 4096, ProducerMode::Single, &ChannelOptions::new())
        .unwrap();
    let output = run(&[
        "stat",
        "--watch",
        &name,
        "--interval",
        "50ms",
        "--count",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "heading, columns, two refreshes: {stdout}");
    assert!(
        lines[0].contains(&name) && lines[0].contains("records"),
        "{stdout}"
    );
    for column in ["MSGS/S", "BYTES/S", "FUTEX/S", "REPAIRS", "LOSSES"] {
        assert!(lines[1].contains(column), "{stdout}");
    }
    for line in &lines[2..] {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // TIME, MSGS/S, BYTES/S (number and unit), FUTEX/S, REPAIRS, LOSSES
        assert_eq!(fields[1], "-", "{stdout}");
        assert_eq!(&fields[2..], ["0", "B/s", "0", "0", "0"], "{stdout}");
    }
}

/// A removed channel ends the watch: a line saying so, then status 1 with
/// one line on stderr. In JSON too.
#[test]
fn a_channel_removed_while_watching_ends_it_with_status_1() {
    for json in [false, true] {
        let address = unique_posix("watch-removed");
        let _cleanup = Cleanup(address.clone());
        let name = address.to_string();
        succeed(&["create", &name, "--kind", "queue"]);
        let mut extra = vec!["--interval", "100ms"];
        if json {
            extra.push("--json");
        }
        let mut watch = Watch::start(&name, &extra);
        // Text: the heading, the columns, a refresh. JSON: a refresh.
        watch.wait_lines(if json { 1 } else { 3 });
        succeed(&["rm", &name]);
        let (code, lines, stderr) = watch.finish();
        assert_eq!(code, Some(1), "{lines:#?} {stderr}");
        let last = lines.last().unwrap();
        if json {
            let last: Value = serde_json::from_str(last).unwrap();
            assert_eq!(last["name"], name.as_str());
            assert!(last["gone"].as_str().unwrap().contains("removed"), "{last}");
        } else {
            assert!(
                last.starts_with(&name) && last.contains("removed"),
                "{last}"
            );
        }
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("ipcring: stat --watch "), "{stderr}");
        assert!(stderr.contains("removed"), "{stderr}");
    }
}

/// A segment whose file is cut short ends the watch the same way, instead
/// of a fault.
#[test]
fn a_truncated_segment_ends_the_watch_with_status_1() {
    let address = unique_posix("watch-truncated");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    let _tx = spsc::Sender::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
    let mut watch = Watch::start(&name, &["--json", "--interval", "100ms"]);
    watch.wait_lines(1);
    common::truncate::truncate_segment_file_from_child(&address, 0);
    let (code, lines, stderr) = watch.finish();
    assert_eq!(code, Some(1), "{lines:#?} {stderr}");
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(
        last["gone"].as_str().unwrap().contains("truncated"),
        "{last}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// SIGINT (Ctrl-C) ends a watch with status 0, like SIGTERM.
#[test]
fn sigint_ends_the_watch_with_status_0() {
    let address = unique_posix("watch-sigint");
    let _cleanup = Cleanup(address.clone());
    let _rx = spsc::Receiver::<u32>::create(&address, 8, &ChannelOptions::new()).unwrap();
    let mut watch = Watch::start(&address.to_string(), &["--interval", "100ms"]);
    watch.wait_lines(3);
    watch.signal(libc::SIGINT);
    let (code, _, stderr) = watch.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// A name that leads nowhere, or to no channel, exits 1 with one line on
/// stderr; usage errors exit 2.
#[test]
fn bad_names_exit_1_and_usage_errors_exit_2() {
    let missing = unique_posix("watch-missing").to_string();
    let plain = unique_posix("watch-plain");
    let _cleanup = Cleanup(plain.clone());
    let _segment = Segment::create(&plain, &CreateOptions::new(8192)).unwrap();
    let plain = plain.to_string();
    for args in [
        vec!["stat", "--watch", missing.as_str()],
        vec!["stat", "--watch", "no/slashes"],
        vec!["stat", "--watch", plain.as_str(), "--count", "1"],
    ] {
        let output = run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("ipcring: stat --watch "), "{stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    for args in [
        vec!["stat", "--watch"],
        vec!["stat", "--watch", "x", "--count", "0"],
        vec!["stat", "--watch", "x", "--count", "many"],
        vec!["stat", "--watch", "x", "--interval", "0"],
        vec!["stat", "--watch", "x", "--interval", "5ms"],
        vec!["stat", "--watch", "x", "--interval", "soon"],
        vec!["stat", "x", "--count", "3"],
        vec!["stat", "x", "--interval", "1s"],
    ] {
        let output = run(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
