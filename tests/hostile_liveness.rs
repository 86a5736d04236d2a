//! Whether channel endpoints tell live peers from dead ones the way the
//! segment layer does. The segment layer judges by OFD locks, which the
//! kernel drops when a process dies (or execs), whatever its pid namespace;
//! channel endpoints judge by pid and start time read from /proc. So:
//!
//! - a peer in another pid namespace (a container sharing /dev/shm) names
//!   itself by a pid that means another process here, and is declared dead
//!   while it runs: its slot is reaped and its claim repaired under it;
//! - a peer that `exec`s another program keeps its pid and start time, and
//!   is never declared gone, so its blocked partner waits forever.
#![cfg(feature = "failpoints")]

mod common;
mod hostile_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cleanup, unique_posix};
use hostile_support::{Victim, env, layout, peek, role, run_role};
use ipcring::channel::{ChannelOptions, RecvTimeoutError, mpmc, spsc};
use ipcring::segment::{Address, OpenOptions, Segment};

const LIMIT: Duration = Duration::from_secs(20);
const VICTIM_ITEM: u64 = 0xdead_0000;

fn address_from_env() -> Address {
    env("SEGMENT").parse().unwrap()
}

// ---------------------------------------------------------------------------
// A peer that execs.

/// A receiving end of either kind, as a timed receive.
type Receive = Box<dyn FnMut(Duration) -> Result<u64, RecvTimeoutError>>;

fn exec_sleep() -> ! {
    use std::os::unix::process::CommandExt;
    let error = Command::new("sleep").arg("60").exec();
    panic!("exec sleep: {error}");
}

#[test]
fn a_receiver_notices_its_sender_exec_another_program() {
    if let Some(role) = role() {
        let address = address_from_env();
        match role.as_str() {
            "spsc" => {
                let mut tx = spsc::Sender::<u64>::open(&address).unwrap();
                tx.send(1).unwrap();
                exec_sleep();
            }
            "mpmc" => {
                let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
                tx.send(1).unwrap();
                exec_sleep();
            }
            other => panic!("unknown role {other}"),
        }
    }
    let test = "a_receiver_notices_its_sender_exec_another_program";
    let mut failures = Vec::new();
    for kind in ["spsc", "mpmc"] {
        let address = unique_posix("exec");
        let _cleanup = Cleanup(address.clone());
        let options = ChannelOptions::new();
        let mut receive: Receive = if kind == "spsc" {
            let mut rx = spsc::Receiver::<u64>::create(&address, 4, &options).unwrap();
            Box::new(move |t| rx.recv_timeout(t))
        } else {
            let mut rx = mpmc::Receiver::<u64>::create(&address, 4, &options).unwrap();
            Box::new(move |t| rx.recv_timeout(t))
        };
        let mut sender =
            Victim::spawn_with(test, kind, None, &[("SEGMENT", address.to_string())], false);
        assert_eq!(receive(LIMIT).unwrap(), 1);
        // The sender is now `sleep 60`: nothing of it touches the channel.
        std::thread::sleep(Duration::from_millis(200));
        let inspected = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
        let segment_view: Vec<bool> = inspected
            .participants()
            .iter()
            .filter(|p| p.pid == sender.pid())
            .map(|p| p.alive)
            .collect();
        let started = Instant::now();
        let result = receive(Duration::from_secs(2));
        eprintln!(
            "{kind}: after the sender exec'd, recv_timeout(2s) gave {result:?} after {:?}; \
             the segment layer calls it alive: {segment_view:?}",
            started.elapsed()
        );
        if result != Err(RecvTimeoutError::Disconnected) {
            failures.push(format!("{kind}: {result:?}"));
        }
        sender.kill();
    }
    assert!(
        failures.is_empty(),
        "a receiver whose sender exec'd was not told it is gone: {failures:?}"
    );
}

// ---------------------------------------------------------------------------
// A peer in another pid namespace.

/// Whether `unshare --pid --mount-proc` works here.
fn namespaces_available() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Starts this test binary as `role` in a new pid namespace with its own
/// /proc (as a container would be), with `failpoint` armed.
fn spawn_in_namespace(
    test: &str,
    role: &str,
    failpoint: Option<&str>,
    envs: &[(&str, String)],
) -> Victim {
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(hostile_support::ROLE_VAR, role)
        .env_remove("IPCRING_FAILPOINT")
        .stdout(Stdio::null());
    if let Some(point) = failpoint {
        command.env("IPCRING_FAILPOINT", point);
        // The role runs in a forked, single-threaded grandchild that stops
        // exactly at the failpoint (see `hostile_support::Victim`).
        command.env("HOSTILE_PIDFILE", "/dev/null");
    }
    for (key, value) in envs {
        command.env(key, value);
    }
    Victim::from_command(command)
}

/// The pids (as seen here) whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_ascii_whitespace();
        let _state = fields.next();
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            children.push(pid);
        }
    }
    children
}

fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Waits for the process that runs the role inside the namespace to stop
/// at its failpoint: unshare's child, then that child's forked grandchild.
fn wait_namespaced_stop(unshare_pid: u32) -> Result<u32, String> {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        for child in children_of(unshare_pid) {
            for grandchild in children_of(child) {
                if state_of(grandchild) == Some('T') {
                    return Ok(grandchild);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err("the namespaced role never stopped".to_owned())
}

fn namespaced_child(role: &str) {
    let address = address_from_env();
    match role {
        // Attaches next to live endpoints outside, sends, and reports what
        // it made of them; then stays alive and quiet.
        "send-and-report" => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            let sent = tx.send_timeout(1, Duration::from_secs(1));
            std::thread::sleep(Duration::from_millis(300));
            let gone = tx.is_disconnected();
            let report = format!("send: {sent:?}, receivers gone: {gone}");
            std::fs::write(env("RESULT"), report).unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        // Sends one item and stays alive and quiet.
        "send-and-stay" => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            tx.send(1).unwrap();
            std::fs::write(env("RESULT"), "sent").unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "send" => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            tx.send(VICTIM_ITEM).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn wait_for_file(path: &std::path::Path) -> String {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the namespaced child wrote nothing");
}

fn result_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hostile-pidns-{}-{tag}", std::process::id()))
}

#[test]
fn a_namespaced_endpoint_leaves_live_endpoints_outside_alone() {
    if let Some(role) = role() {
        return run_role(|| namespaced_child(&role));
    }
    if !namespaces_available() {
        eprintln!("skipped: unshare --pid --mount-proc is not available");
        return;
    }
    let address = unique_posix("pidns-in");
    let _cleanup = Cleanup(address.clone());
    let result = result_path("in");
    let _remove = common::RemoveFile(result.clone());
    let mut rx = mpmc::Receiver::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
    let segment = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
    let own_slot = peek(&segment, layout::CONSUMER_SLOTS);
    let mut sender = spawn_in_namespace(
        "a_namespaced_endpoint_leaves_live_endpoints_outside_alone",
        "send-and-report",
        None,
        &[
            ("SEGMENT", address.to_string()),
            ("RESULT", result.display().to_string()),
        ],
    );
    let report = wait_for_file(&result);
    let received = rx.recv_timeout(Duration::from_millis(500));
    let slot_now = peek(&segment, layout::CONSUMER_SLOTS);
    sender.kill();
    eprintln!(
        "inside: {report}; outside: received {received:?}; the live receiver's slot \
         {own_slot:#x} now holds {slot_now:#x}"
    );
    assert_eq!(
        (report.as_str(), received, slot_now),
        ("send: Ok(()), receivers gone: false", Ok(1), own_slot),
        "the namespaced sender took the live receiver outside for dead"
    );
}

#[test]
fn a_live_peer_in_another_pid_namespace_is_not_declared_dead() {
    if let Some(role) = role() {
        return run_role(|| namespaced_child(&role));
    }
    if !namespaces_available() {
        eprintln!("skipped: unshare --pid --mount-proc is not available");
        return;
    }
    let address = unique_posix("pidns-out");
    let _cleanup = Cleanup(address.clone());
    let result = result_path("out");
    let _remove = common::RemoveFile(result.clone());
    // The namespaced sender attaches first, so it has no one to misjudge.
    let _segment = mpmc::create_segment::<u64>(Some(&address), 4, &ChannelOptions::new()).unwrap();
    let mut sender = spawn_in_namespace(
        "a_live_peer_in_another_pid_namespace_is_not_declared_dead",
        "send-and-stay",
        None,
        &[
            ("SEGMENT", address.to_string()),
            ("RESULT", result.display().to_string()),
        ],
    );
    wait_for_file(&result);
    let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
    let first = rx.recv_timeout(LIMIT);
    // The sender lives on, quietly: nothing more, and no disconnection.
    let then = rx.recv_timeout(Duration::from_secs(1));
    sender.kill();
    eprintln!("received {first:?}, then {then:?}");
    assert_eq!(first, Ok(1));
    assert_eq!(
        then,
        Err(RecvTimeoutError::Timeout),
        "the receiver declared its live, namespaced sender dead"
    );
}

#[test]
fn a_stopped_peer_in_another_pid_namespace_keeps_its_claim() {
    if let Some(role) = role() {
        return run_role(|| namespaced_child(&role));
    }
    if !namespaces_available() {
        eprintln!("skipped: unshare --pid --mount-proc is not available");
        return;
    }
    let address = unique_posix("pidns-claim");
    let _cleanup = Cleanup(address.clone());
    // The namespaced sender attaches first, so it has no one to misjudge.
    let _segment = mpmc::create_segment::<u64>(Some(&address), 4, &ChannelOptions::new()).unwrap();
    let mut victim = spawn_in_namespace(
        "a_stopped_peer_in_another_pid_namespace_keeps_its_claim",
        "send",
        Some("mpmc.push.written"),
        &[("SEGMENT", address.to_string())],
    );
    // Stopped with its item written into slot 0 but not yet published.
    let role_pid = wait_namespaced_stop(victim.pid()).unwrap();
    let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
    let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
    let mut problems = Vec::new();
    let mut received = Vec::new();
    tx.send(1).unwrap();
    match rx.recv_timeout(Duration::from_millis(500)) {
        Err(RecvTimeoutError::Timeout) => {}
        Ok(item) => {
            received.push(item);
            problems.push(format!(
                "got past the live (stopped) sender's claim: received {item}, stats {:?}",
                rx.stats()
            ));
        }
        other => problems.push(format!(
            "got past the live (stopped) sender's claim: {other:?}, stats {:?}",
            rx.stats()
        )),
    }
    // It goes on and publishes its item.
    // SAFETY: a process we started (through unshare), still running.
    unsafe { libc::kill(role_pid as i32, libc::SIGCONT) };
    match victim.wait_exit(LIMIT) {
        Some(hostile_support::Exit::Code(0)) => {}
        other => problems.push(format!("the continued sender ended with {other:?}")),
    }
    // Everything sent must now arrive, each once.
    for item in 2..=8u64 {
        if let Err(e) = tx.send_timeout(item, Duration::from_secs(1)) {
            problems.push(format!("send {item} after the victim finished: {e:?}"));
            break;
        }
        while let Ok(item) = rx.try_recv() {
            received.push(item);
        }
    }
    while let Ok(item) = rx.recv_timeout(Duration::from_millis(300)) {
        received.push(item);
    }
    received.sort_unstable();
    let mut expected: Vec<u64> = (1..=8).collect();
    expected.push(VICTIM_ITEM);
    if received != expected {
        problems.push(format!("received {received:?}, expected {expected:?}"));
        // Is the ring wedged for good, with everyone alive?
        let fresh = mpmc::Receiver::<u64>::open(&address)
            .map(|mut fresh| fresh.recv_timeout(Duration::from_millis(500)));
        problems.push(format!(
            "then: try_send {:?}, a fresh receiver's recv_timeout {:?}",
            tx.try_send(100),
            fresh
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
