//! Channel endpoints judge each other alive by pid and start time, read
//! from `/proc`. Across pid namespaces (a container sharing /dev/shm) that
//! calls a live endpoint dead: its slot is reaped, its claims "repaired"
//! under it, and its claimer id handed to the next endpoint. The segment
//! layer's participants table moved to OFD liveness locks for exactly this
//! reason; the endpoint table has not.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{ChildGuard, Cleanup, ROLE_VAR, child_role, eventually, unique_posix};
use ipcring::channel::mpmc::{Receiver, Sender, create_segment};
use ipcring::channel::{ChannelOptions, SendTimeoutError};
use ipcring::segment::{Address, Segment};

const LIMIT: Duration = Duration::from_secs(20);
/// Offset of the producers' slot words in a channel's user area.
const PRODUCER_SLOTS: usize = 16;
/// Exit code of a child whose send found the (live) receiver gone.
const SAW_DISCONNECTED: i32 = 3;

fn namespaces_available() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs this test binary's `test_name` as `role` in new pid and mount
/// namespaces, where it is pid 1.
fn spawn_in_new_pid_namespace(test_name: &str, role: &str, address: &Address) -> ChildGuard {
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(std::env::current_exe().unwrap())
        .args([
            test_name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(ROLE_VAR, role)
        .env("SEGMENT", address.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard(Some(child))
}

fn child_address() -> Address {
    std::env::var("SEGMENT").unwrap().parse().unwrap()
}

/// A sender in another pid namespace reaps our live receiver when it
/// attaches, and its send reports the receiver side gone.
#[test]
fn a_live_receiver_is_not_reaped_from_another_pid_namespace() {
    const NAME: &str = "a_live_receiver_is_not_reaped_from_another_pid_namespace";
    if child_role().is_some() {
        let mut tx = Sender::<u64>::open(&child_address()).unwrap();
        match tx.send_timeout(7, Duration::from_secs(5)) {
            Ok(()) => std::thread::sleep(Duration::from_secs(30)),
            Err(SendTimeoutError::Disconnected(_)) => std::process::exit(SAW_DISCONNECTED),
            Err(e) => panic!("{e:?}"),
        }
        return;
    }
    if !namespaces_available() {
        eprintln!("skipped: unshare --pid --mount-proc is not available");
        return;
    }
    let address = unique_posix("review-ns-rx");
    let _cleanup = Cleanup(address.clone());
    let mut rx = Receiver::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
    let mut child = spawn_in_new_pid_namespace(NAME, "sender", &address);
    let received = rx.recv_timeout(Duration::from_secs(2));
    let exit = child.child().try_wait().unwrap().and_then(|s| s.code());
    assert_eq!(
        (received, exit),
        (Ok(7), None),
        "exit code {SAW_DISCONNECTED}: the child's send found our live receiver gone"
    );
}

/// A sender that attaches here reaps a live sender in another pid
/// namespace and takes its slot, so both push under claimer id 0 (which
/// `MpmcHandle::attach`'s safety contract forbids).
#[test]
fn a_live_sender_in_another_pid_namespace_keeps_its_slot() {
    const NAME: &str = "a_live_sender_in_another_pid_namespace_keeps_its_slot";
    if child_role().is_some() {
        let _tx = Sender::<u64>::open(&child_address()).unwrap();
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    if !namespaces_available() {
        eprintln!("skipped: unshare --pid --mount-proc is not available");
        return;
    }
    let address = unique_posix("review-ns-tx");
    let _cleanup = Cleanup(address.clone());
    // The segment, with no endpoint attached yet.
    let segment: Segment =
        create_segment::<u64>(Some(&address), 8, &ChannelOptions::new()).unwrap();
    let slot0 = segment.view::<AtomicU64>(PRODUCER_SLOTS).unwrap();
    let mut child = spawn_in_new_pid_namespace(NAME, "sender", &address);
    eventually(LIMIT, "the child to attach", || {
        slot0.load(Ordering::Acquire) != 0
    });
    let child_word = slot0.load(Ordering::Acquire);
    let _tx = Sender::<u64>::open(&address).unwrap();
    let after = slot0.load(Ordering::Acquire);
    assert!(
        child.child().try_wait().unwrap().is_none(),
        "the child is alive"
    );
    assert_eq!(
        after, child_word,
        "slot 0 held the live child's identity; our attach reaped it and took the slot"
    );
}
