//! The queue commands abused from a shell: removal under a blocked
//! `recv`, selections that can never match, bad durations and numbers,
//! binary and oversized input, segments of another kind. Errors are one
//! line with the documented exit code (1 error, 2 usage, 3 would block,
//! 4 timeout); nothing hangs (every child is waited for with a limit).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Cleanup, unique_posix};
use ipcring::channel::ChannelOptions;
use ipcring::channel::queue::{Queue, QueueRecvError, Select};

const LIMIT: Duration = Duration::from_secs(10);

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipcring"));
    command.args(args);
    command
}

/// Waits for `child` at most `LIMIT`, killing it (and failing) after.
fn finish(mut child: Child, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A child that stops reading early closes the pipe: not our failure.
    let _ = input.write_all(stdin);
    drop(input);
    finish(child, &format!("{args:?}"))
}

/// Runs and expects `code`, with one `ipcring: ` line on stderr for our
/// own errors (clap's usage errors, code 2, have their own form).
fn fails(args: &[&str], code: i32) -> String {
    let output = run(args, b"");
    let message = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{args:?}: {message}");
    assert!(!message.contains("panicked"), "{message}");
    if code != 2 {
        assert!(message.starts_with("ipcring: "), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "one line: {message}");
    }
    message
}

fn ok(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let output = run(args, stdin);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `ipcring rm` of a queue under a `recv` that waits with no timeout (and
/// a library handle that does the same) ends both with "removed", as
/// `Queue::remove` does; before, the name went and the waiters waited for
/// ever on a queue no one could reach.
#[test]
fn rm_of_a_queue_ends_blocked_receivers() {
    let address = unique_posix("h7-cli-rm");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    ok(
        &["create", &name, "--kind", "queue", "--capacity", "2"],
        b"",
    );
    let waiting = command(&["recv", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut handle = Queue::open(&address).unwrap();
    let library = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        handle.recv(Select::Any, &mut buf)
    });
    std::thread::sleep(Duration::from_millis(300));
    ok(&["rm", &name], b"");
    let output = finish(waiting, "recv blocked across rm");
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("removed"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    let started = Instant::now();
    while !library.is_finished() {
        assert!(started.elapsed() < LIMIT, "library recv blocked across rm");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(library.join().unwrap(), Err(QueueRecvError::Removed));
    // rm of other kinds and of missing names is unchanged.
    fails(&["rm", &name], 1);
    let other = unique_posix("h7-cli-rm-mpmc");
    let _cleanup2 = Cleanup(other.clone());
    let tx =
        ipcring::channel::mpmc::Sender::<u64>::create(&other, 4, &ChannelOptions::new()).unwrap();
    ok(&["rm", &other.to_string()], b"");
    drop(tx);
}

/// A selection no message can match is refused up front (usage error),
/// instead of a `recv` that waits for ever.
#[test]
fn selections_that_can_never_match_are_refused() {
    let address = unique_posix("h7-cli-type0");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    ok(
        &["create", &name, "--kind", "queue", "--capacity", "2"],
        b"",
    );
    ok(&["send", &name, "--type", "5", "five"], b"");
    let message = fails(&["recv", &name, "--type", "0"], 2);
    assert!(message.contains("type 0"), "{message}");
    fails(&["recv", &name, "--type-at-most", "0"], 2);
    fails(&["recv", &name, "--type", "-1"], 2);
    fails(&["recv", &name, "--type", "18446744073709551616"], 2);
    // --except 0 matches everything: it is served.
    assert_eq!(
        ok(&["recv", &name, "--except", "0", "--nonblock"], b""),
        b"five\n"
    );
    fails(&["send", &name, "--type", "0", "x"], 1);
    fails(&["send", &name, "--priority", "999", "x"], 1);
    fails(&["send", &name, "--priority", "4294967296", "x"], 2);
    fails(&["recv", &name, "--nonblock"], 3);
    fails(&["recv", &name, "--timeout", "10ms"], 4);
    fails(
        &[
            "recv",
            &name,
            "--count",
            "18446744073709551615",
            "--nonblock",
        ],
        3,
    );
}

/// Durations a user might type: refused as usage errors, or taken.
#[test]
fn bad_durations_are_usage_errors() {
    let address = unique_posix("h7-cli-dur");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    ok(
        &["create", &name, "--kind", "queue", "--capacity", "1"],
        b"",
    );
    for bad in [
        "-1",
        "1e400s",
        "abc",
        "inf",
        "NaN",
        "1e30",
        "",
        "ms",
        "1.2.3s",
        "5y",
        "99999999999999999999s",
    ] {
        let timeout = format!("--timeout={bad}");
        fails(&["recv", &name, &timeout], 2);
        fails(&["send", &name, &timeout, "x"], 2);
    }
    for good in ["0", "0s", "1us", "0.000000001", "1ms"] {
        fails(&["recv", &name, "--timeout", good], 4);
    }
    ok(&["send", &name, "x"], b"");
    fails(&["send", &name, "--timeout", "0", "y"], 4);
}

/// Binary lines, empty lines and a line above the maximum: the bytes go
/// through as they are, and an oversized line stops the send with one
/// line of error, the lines before it sent.
#[test]
fn binary_and_oversized_stdin() {
    let address = unique_posix("h7-cli-stdin");
    let _cleanup = Cleanup(address.clone());
    let name = address.to_string();
    ok(
        &[
            "create",
            &name,
            "--kind",
            "queue",
            "--capacity",
            "8",
            "--max-msg",
            "16",
        ],
        b"",
    );
    let mut input = vec![0u8, 255, 13, 0];
    input.push(b'\n');
    input.push(b'\n');
    input.extend_from_slice(&[b'z'; 17]);
    input.push(b'\n');
    input.extend_from_slice(b"never sent\n");
    let output = run(&["send", &name, "--nonblock"], &input);
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("17 bytes"), "{message}");
    let received = ok(&["recv", &name, "--count", "2", "--nonblock"], b"");
    assert_eq!(received, [0u8, 255, 13, 0, b'\n', b'\n']);
    fails(&["recv", &name, "--nonblock"], 3);
    // A megabyte with no newline at all.
    let output = run(&["send", &name], &vec![b'a'; 1 << 20]);
    assert_eq!(output.status.code(), Some(1));
}

/// The queue commands on segments that are not queues, or not there.
#[test]
fn other_kinds_and_missing_segments() {
    let other = unique_posix("h7-cli-kind");
    let _cleanup = Cleanup(other.clone());
    let _tx =
        ipcring::channel::mpmc::Sender::<u64>::create(&other, 4, &ChannelOptions::new()).unwrap();
    let name = other.to_string();
    fails(&["send", &name, "x"], 1);
    fails(&["recv", &name, "--nonblock"], 1);
    fails(&["create", &name, "--kind", "queue"], 1);
    let missing = unique_posix("h7-cli-missing").to_string();
    fails(&["send", &missing, "x"], 1);
    fails(&["recv", &missing], 1);
    fails(&["stat", &missing], 1);
    for bad in ["", "a/b", "..", "sysv:0x0", "sysv:zz", "sysv:0x1ffffffff"] {
        fails(&["recv", bad, "--nonblock"], 1);
        fails(&["send", bad, "x"], 1);
    }
    // A queue's parameters the library refuses: one line, nothing left.
    let refused = unique_posix("h7-cli-refused");
    let _cleanup2 = Cleanup(refused.clone());
    let refused = refused.to_string();
    for args in [
        vec!["--capacity", "1048577"],
        vec!["--max-msg", "16777217"],
        vec!["--priorities", "31"],
        vec!["--max-bytes", "1", "--max-msg", "2"],
        vec!["--mode", "1777"],
    ] {
        let mut all = vec!["create", refused.as_str(), "--kind", "queue"];
        all.extend(args);
        fails(&all, 1);
        assert!(
            !std::path::Path::new("/dev/shm")
                .join(format!("ipcring.{refused}"))
                .exists()
        );
    }
}
