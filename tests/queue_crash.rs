//! The message queue when a process dies mid-operation: a child stops
//! itself at a named step (`IPCRING_FAILPOINT=NAME`), the parent SIGKILLs
//! it there and checks what the survivors see: nothing wedges, counts are
//! exact, every sent message arrives once, and a message a receiver had
//! committed but not returned is lost and counted. While the child is only
//! stopped, the survivors wait: a stopped holder is never repaired.
#![cfg(feature = "failpoints")]

mod common;

use std::time::{Duration, Instant};

use common::{ChildGuard, Cleanup, child_role, spawn_child, unique_posix};
use ipcring::channel::ChannelOptions;
use ipcring::channel::queue::{
    self, Queue, QueueConfig, QueueRecvError, QueueSendError, QueueStats, Select,
};
use ipcring::segment::{Address, OpenOptions, Segment};

const LIMIT: Duration = Duration::from_secs(10);
/// How long survivors may take to repair after a kill (design bound: a
/// 100 ms slice plus a 50 ms reap interval; more allowed for a loaded
/// machine).
const REPAIR_LIMIT: Duration = Duration::from_secs(2);

fn address_from_env() -> Address {
    std::env::var("QUEUE").unwrap().parse().unwrap()
}

fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat[stat.rfind(')')? + 2..].chars().next())
        == Some('T')
}

/// Starts `test` again as `role`, armed to stop at `failpoint`, and waits
/// until it has stopped there.
fn stopped_at(test: &str, role: &str, failpoint: &str, address: &Address) -> ChildGuard {
    let mut child = spawn_child(
        test,
        role,
        &[
            ("QUEUE", address.to_string()),
            ("IPCRING_FAILPOINT", failpoint.to_string()),
        ],
    );
    let started = Instant::now();
    while !is_stopped(child.pid()) {
        if let Some(status) = child.child().try_wait().unwrap() {
            panic!("{role} exited ({status}) before reaching {failpoint}");
        }
        assert!(
            started.elapsed() < LIMIT,
            "{role} never reached {failpoint}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

fn kill(mut child: ChildGuard) {
    // SAFETY: kill has no memory effects; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(child.pid() as i32, libc::SIGKILL) }, 0);
    child.wait_code(LIMIT);
}

fn stats_of(address: &Address) -> QueueStats {
    let segment = Segment::open(address, &OpenOptions::new().read_only()).unwrap();
    queue::stats(&segment).unwrap()
}

fn drain(q: &mut Queue) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok(got) = q.try_recv(Select::Any, &mut buf) {
        out.push(buf[..got.len].to_vec());
    }
    out
}

/// After the repair: fresh handles still exchange messages, counts agree.
fn survivors_carry_on(address: &Address) {
    let mut a = Queue::open(address).unwrap();
    let mut b = Queue::open(address).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..20u8 {
        a.send_timeout(&[i], 1, u32::from(i % 4), LIMIT).unwrap();
        let got = b.recv_timeout(Select::Any, &mut buf, LIMIT).unwrap();
        assert_eq!(&buf[..got.len], &[i]);
    }
    let stats = a.stats();
    assert_eq!((stats.count, stats.bytes), (0, 0));
}

/// A sender killed at each step of a send, holding the lock: a survivor
/// blocked on the lock gets it once the sender is dead (not while it is
/// only stopped); the message is queued once if the commit point was
/// passed, else not at all.
#[test]
fn sender_killed_at_each_step() {
    if let Some(role) = child_role() {
        assert_eq!(role, "sender");
        Queue::open(&address_from_env())
            .unwrap()
            .send(b"child", 7, 3)
            .unwrap();
        return;
    }
    for step in [
        "queue.send.copied",
        "journal.staged",
        "journal.committed",
        "journal.applied",
    ] {
        let address = unique_posix("qc-tx");
        let _cleanup = Cleanup(address.clone());
        let mut q =
            Queue::create(&address, &QueueConfig::new(4, 64), &ChannelOptions::new()).unwrap();
        let child = stopped_at("sender_killed_at_each_step", "sender", step, &address);
        // Stopped, not dead: it keeps the lock.
        assert_eq!(
            q.send_timeout(b"parent", 1, 0, Duration::from_millis(300)),
            Err(QueueSendError::Timeout),
            "{step}"
        );
        let sending = std::thread::spawn(move || {
            let sent = q.send_timeout(b"parent", 1, 0, LIMIT);
            (sent, Instant::now(), q)
        });
        std::thread::sleep(Duration::from_millis(100));
        kill(child);
        let killed = Instant::now();
        let (sent, at, mut q) = sending.join().unwrap();
        sent.unwrap();
        let took = at.saturating_duration_since(killed);
        eprintln!(
            "{step}: a sender blocked on the dead holder's lock got it {took:?} after the kill"
        );
        assert!(took < REPAIR_LIMIT, "{step}: {took:?}");
        let committed = step != "queue.send.copied" && step != "journal.staged";
        let expected: Vec<&[u8]> = if committed {
            vec![b"child", b"parent"]
        } else {
            vec![b"parent"]
        };
        assert_eq!(q.stats().count, expected.len() as u64, "{step}");
        assert_eq!(drain(&mut q), expected, "{step}");
        let stats = stats_of(&address);
        assert_eq!(
            (stats.count, stats.bytes, stats.losses),
            (0, 0, 0),
            "{step}"
        );
        assert_eq!(stats.repairs, 1, "{step}: the lock taken back");
        survivors_carry_on(&address);
    }
}

/// A receiver killed at each step of a receive: before the commit point
/// the message stays for the next receiver (at least once); after it, the
/// message is gone with the dead receiver, and counted as lost.
#[test]
fn receiver_killed_at_each_step() {
    if let Some(role) = child_role() {
        assert_eq!(role, "receiver");
        let mut buf = [0u8; 64];
        let _ = Queue::open(&address_from_env())
            .unwrap()
            .recv(Select::Any, &mut buf);
        return;
    }
    for step in [
        "queue.recv.copied",
        "journal.staged",
        "journal.committed",
        "journal.applied",
    ] {
        let address = unique_posix("qc-rx");
        let _cleanup = Cleanup(address.clone());
        let mut q =
            Queue::create(&address, &QueueConfig::new(4, 64), &ChannelOptions::new()).unwrap();
        q.send(b"first", 1, 5).unwrap();
        q.send(b"second", 1, 0).unwrap();
        let child = stopped_at("receiver_killed_at_each_step", "receiver", step, &address);
        let mut buf = [0u8; 64];
        assert_eq!(
            q.recv_timeout(Select::Any, &mut buf, Duration::from_millis(300)),
            Err(QueueRecvError::Timeout),
            "{step}: a stopped holder keeps the lock"
        );
        kill(child);
        let killed = Instant::now();
        let mut got = Vec::new();
        let first = q.recv_timeout(Select::Any, &mut buf, REPAIR_LIMIT).unwrap();
        eprintln!(
            "{step}: a receiver got past the dead holder {:?} after the kill",
            killed.elapsed()
        );
        got.push(buf[..first.len].to_vec());
        got.extend(drain(&mut q));
        let committed = step == "journal.committed" || step == "journal.applied";
        let expected: Vec<&[u8]> = if committed {
            vec![b"second"]
        } else {
            vec![b"first", b"second"]
        };
        assert_eq!(got, expected, "{step}");
        let stats = stats_of(&address);
        assert_eq!((stats.count, stats.bytes), (0, 0), "{step}");
        assert_eq!(stats.losses, u64::from(committed), "{step}");
        assert_eq!(
            stats.repairs,
            1 + u64::from(committed),
            "{step}: the lock, and the loss"
        );
        // Either the dead receiver's committed receive and ours, or our two.
        assert_eq!(stats.received, 2, "{step}");
        survivors_carry_on(&address);
    }
}

/// A loaner killed holding its loan, and a borrower killed holding a
/// message in place: survivors get the block back (a sender waiting for
/// room gets through); the borrowed message counts as lost.
#[test]
fn loaner_and_borrower_killed_holding_their_block() {
    if let Some(role) = child_role() {
        let mut q = Queue::open(&address_from_env()).unwrap();
        match role.as_str() {
            "loaner" => {
                let mut loan = q.try_loan(8).unwrap();
                loan.write_at(0, b"unsent");
                loan.send(1, 0).unwrap();
            }
            "borrower" => {
                let message = q.try_recv_in_place(Select::Any).unwrap();
                assert_eq!(message.to_vec(), b"borrowed");
                drop(message);
            }
            other => panic!("{other}"),
        }
        return;
    }
    for (role, step) in [
        ("loaner", "queue.loan.taken"),
        ("borrower", "queue.borrow.held"),
    ] {
        let address = unique_posix("qc-held");
        let _cleanup = Cleanup(address.clone());
        let mut q =
            Queue::create(&address, &QueueConfig::new(1, 16), &ChannelOptions::new()).unwrap();
        if role == "borrower" {
            q.send(b"borrowed", 2, 0).unwrap();
        }
        let child = stopped_at(
            "loaner_and_borrower_killed_holding_their_block",
            role,
            step,
            &address,
        );
        let stats = stats_of(&address);
        assert_eq!(
            (stats.count, stats.bytes),
            if role == "loaner" { (0, 8) } else { (0, 0) }
        );
        assert_eq!(
            q.send_timeout(b"mine", 1, 0, Duration::from_millis(300)),
            Err(QueueSendError::Timeout)
        );
        kill(child);
        let killed = Instant::now();
        q.send_timeout(b"mine", 1, 0, REPAIR_LIMIT).unwrap();
        eprintln!(
            "{role}: a blocked sender had the dead holder's block {:?} after the kill",
            killed.elapsed()
        );
        assert_eq!(drain(&mut q), vec![b"mine".to_vec()]);
        let stats = stats_of(&address);
        assert_eq!(
            (stats.count, stats.bytes, stats.repairs),
            (0, 0, 1),
            "{role}"
        );
        assert_eq!(stats.losses, u64::from(role == "borrower"), "{role}");
        survivors_carry_on(&address);
    }
}

#[test]
fn steps_are_named_failpoints() {
    for step in [
        "queue.send.copied",
        "queue.recv.copied",
        "queue.loan.taken",
        "queue.borrow.held",
        "journal.staged",
        "journal.committed",
        "journal.applied",
    ] {
        assert!(ipcring::failpoint::NAMES.contains(&step));
    }
}

/// A sender stopped (not killed) while holding the lock is never
/// repaired: survivors' timed calls time out, and once it continues its
/// send completes normally, the message arriving once.
#[test]
fn stopped_holder_is_not_repaired_behind_its_back() {
    if let Some(role) = child_role() {
        assert_eq!(role, "sender");
        Queue::open(&address_from_env())
            .unwrap()
            .send(b"slow", 7, 3)
            .unwrap();
        return;
    }
    let address = unique_posix("qc-stop");
    let _cleanup = Cleanup(address.clone());
    let mut q = Queue::create(&address, &QueueConfig::new(4, 64), &ChannelOptions::new()).unwrap();
    let mut child = stopped_at(
        "stopped_holder_is_not_repaired_behind_its_back",
        "sender",
        "journal.committed",
        &address,
    );
    let mut buf = [0u8; 64];
    // Several wait slices and reap intervals.
    assert_eq!(
        q.recv_timeout(Select::Any, &mut buf, Duration::from_millis(600)),
        Err(QueueRecvError::Timeout)
    );
    // SAFETY: kill has no memory effects; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(child.pid() as i32, libc::SIGCONT) }, 0);
    let got = q.recv_timeout(Select::Any, &mut buf, LIMIT).unwrap();
    assert_eq!(&buf[..got.len], b"slow");
    assert_eq!(child.wait_code(LIMIT), Some(0));
    assert_eq!(
        q.try_recv(Select::Any, &mut buf),
        Err(QueueRecvError::NoMessage)
    );
    let stats = stats_of(&address);
    assert_eq!(
        (stats.count, stats.sent, stats.repairs, stats.losses),
        (0, 1, 0, 0)
    );
}
