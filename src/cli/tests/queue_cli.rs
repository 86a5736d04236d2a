//! `ipcring create --kind queue`, `send`, `recv`, `stat` and `ls` on
//! queues, run as a user would run them.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{Cleanup, unique_posix, unique_sysv};
use serde_json::Value;

fn ipcring(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let output = ipcring(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn fails(args: &[&str], code: i32) -> String {
    let output = ipcring(args);
    assert_eq!(output.status.code(), Some(code), "{args:?}");
    let message = String::from_utf8(output.stderr).unwrap();
    assert!(!message.contains("panicked"), "{message}");
    // Usage errors (code 2) are clap's; ours are one line.
    if code != 2 {
        assert!(message.starts_with("ipcring: "), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "one line: {message}");
    }
    message
}

/// The classic typed sender and receiver: messages of several types, and
/// receivers that pick by type.
#[test]
fn typed_send_and_receive_like_msgsnd_and_msgrcv() {
    let address = unique_posix("qcli-typed");
    let _c = Cleanup(address.clone());
    let name = address.to_string();
    ok(&[
        "create",
        &name,
        "--kind",
        "queue",
        "--capacity",
        "16",
        "--max-msg",
        "128",
    ]);
    ok(&["send", &name, "--type", "1", "first of type 1"]);
    ok(&["send", &name, "--type", "2", "type 2"]);
    ok(&["send", &name, "--type", "3", "type 3"]);
    ok(&["send", &name, "--type", "1", "second of type 1"]);
    assert_eq!(
        ok(&["recv", &name, "--type", "2", "--show-type"]),
        "2 type 2\n"
    );
    assert_eq!(ok(&["recv", &name, "--except", "1"]), "type 3\n");
    assert_eq!(
        ok(&[
            "recv",
            &name,
            "--type-at-most",
            "5",
            "--count",
            "2",
            "--show-type"
        ]),
        "1 first of type 1\n1 second of type 1\n"
    );
    fails(&["recv", &name, "--nonblock"], 3);
    // Usage: one selection at a time.
    fails(&["recv", &name, "--type", "1", "--except", "2"], 2);
}

#[test]
fn stdin_lines_priorities_and_stat() {
    let address = unique_posix("qcli-stdin");
    let _c = Cleanup(address.clone());
    let name = address.to_string();
    ok(&[
        "create",
        &name,
        "--kind",
        "queue",
        "--capacity",
        "8",
        "--max-msg",
        "64",
        "--max-bytes",
        "100",
        "--priorities",
        "40",
        "--mode",
        "640",
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args(["send", &name, "--priority", "1"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\n\nline three")
        .unwrap();
    assert!(child.wait().unwrap().success());
    ok(&["send", &name, "--priority", "39", "urgent"]);
    fails(&["send", &name, "--priority", "40", "x"], 1);
    fails(&["send", &name, "--type", "0", "x"], 1);
    let stat: Value = serde_json::from_str(&ok(&["stat", &name, "--json"])).unwrap();
    assert_eq!(stat["kind_name"], "queue");
    assert_eq!(stat["mode"], "0640");
    let queue = &stat["queue"];
    assert_eq!(
        (queue["count"].as_u64(), queue["bytes"].as_u64()),
        (Some(4), Some(24))
    );
    assert_eq!(queue["max_bytes"], 100);
    assert_eq!(queue["priorities"], 40);
    assert!(queue["last_send_pid"].as_u64().unwrap() > 0);
    assert_eq!(stat["losses"], 0);
    assert_eq!(
        ok(&["recv", &name, "--count", "4"]),
        "urgent\nline one\n\nline three\n"
    );
    let text = ok(&["stat", &name]);
    assert!(
        text.contains("queue:          0 messages, 0 bytes queued"),
        "{text}"
    );
    assert!(text.contains("sent/received:  4 / 4"), "{text}");
    let listed: Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    let item = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap()
        .clone();
    assert_eq!(item["kind_name"], "queue");
    assert!(
        ok(&["ls"])
            .lines()
            .any(|l| l.starts_with(&name) && l.trim_end().ends_with("queue"))
    );
}

#[test]
fn full_empty_and_timeouts_have_their_exit_codes() {
    let address = unique_posix("qcli-codes");
    let _c = Cleanup(address.clone());
    let name = address.to_string();
    ok(&[
        "create",
        &name,
        "--kind",
        "queue",
        "--capacity",
        "1",
        "--max-msg",
        "8",
    ]);
    fails(&["recv", &name, "--nonblock"], 3);
    fails(&["recv", &name, "--timeout", "50ms"], 4);
    ok(&["send", &name, "one"]);
    let full = fails(&["send", &name, "--nonblock", "two"], 3);
    assert!(full.contains("full"), "{full}");
    fails(&["send", &name, "--timeout", "50ms", "two"], 4);
    let large = fails(&["send", &name, "nine bytes"], 1);
    assert!(large.contains("exceeds"), "{large}");
    fails(&["send", &name, "--timeout", "soon", "x"], 2);
    fails(&["create", &name, "--kind", "queue"], 1);
    fails(
        &[
            "create",
            &unique_posix("qcli-bad").to_string(),
            "--kind",
            "queue",
            "--priorities",
            "8",
        ],
        1,
    );
    fails(
        &[
            "create",
            &unique_posix("qcli-bad").to_string(),
            "--kind",
            "queue",
            "--mode",
            "999",
        ],
        1,
    );
    fails(&["send", &unique_posix("qcli-missing").to_string(), "x"], 1);
    // Not a queue.
    let other = unique_posix("qcli-other");
    let _c2 = Cleanup(other.clone());
    drop(
        ipcring::segment::Segment::create(&other, &ipcring::segment::CreateOptions::new(64))
            .unwrap(),
    );
    fails(&["recv", &other.to_string()], 1);
}

#[test]
fn a_sysv_queue_and_a_rendezvous_queue() {
    let address = unique_sysv();
    let _c = Cleanup(address.clone());
    let key = address.to_string();
    let bare = key.trim_start_matches("sysv:").to_string();
    ok(&[
        "create",
        &bare,
        "--kind",
        "queue",
        "--backend",
        "sysv",
        "--capacity",
        "2",
        "--max-msg",
        "16",
    ]);
    ok(&["send", &key, "over sysv"]);
    assert_eq!(ok(&["recv", &key]), "over sysv\n");
    fails(&["create", &key, "--kind", "queue"], 1);

    let rendezvous = unique_posix("qcli-rdv");
    let _c2 = Cleanup(rendezvous.clone());
    let name = rendezvous.to_string();
    ok(&[
        "create",
        &name,
        "--kind",
        "queue",
        "--capacity",
        "0",
        "--max-msg",
        "16",
    ]);
    // Nobody receives: a timed rendezvous send gives up and withdraws.
    fails(&["send", &name, "--timeout", "100ms", "alone"], 4);
    let sender = Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args(["send", &name, "--timeout", "10s", "met"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(ok(&["recv", &name, "--timeout", "10s"]), "met\n");
    let sent = sender.wait_with_output().unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
}

/// `--kind datagram` makes a mailbox that the library's `Mailbox` opens,
/// and that `send` and `recv` serve.
#[test]
fn a_datagram_mailbox_from_the_shell() {
    let address = unique_posix("qcli-mailbox");
    let _c = Cleanup(address.clone());
    let name = address.to_string();
    ok(&[
        "create",
        &name,
        "--kind",
        "datagram",
        "--capacity",
        "8",
        "--max-msg",
        "64",
    ]);
    ok(&["send", &name, "from the shell"]);
    let mut mailbox = ipcring::channel::datagram::Mailbox::open(&address).unwrap();
    let mut buf = [0u8; 64];
    let n = mailbox.try_recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from the shell");
    mailbox.send(b"from the library").unwrap();
    assert_eq!(ok(&["recv", &name, "--nonblock"]), "from the library\n");
    fails(&["recv", &name, "--nonblock"], 3);
}
