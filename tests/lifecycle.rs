//! A channel's life across runs: open-or-create from either end, timed
//! opens, owned channels, peers of earlier runs (generations), and names
//! removed or replaced under a waiting endpoint. Cross-process behaviour
//! runs in real child processes (see `common::spawn_child`).

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, child_role, spawn_child, unique_posix, unique_sysv};
use ipcring::channel::records;
use ipcring::channel::{
    ChannelError, ChannelOptions, RecvError, RecvTimeoutError, SendTimeoutError, TryRecvError,
    TrySendError, mpmc, spsc,
};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{Address, Segment, SegmentError};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a test lets an endpoint wait for something that must not come.
const QUIET: Duration = Duration::from_millis(300);

fn address_from_env() -> Address {
    std::env::var("SEGMENT").unwrap().parse().unwrap()
}

fn exists(address: &Address) -> bool {
    match Segment::inspect(address) {
        Ok(_) => true,
        Err(SegmentError::NotFound(_)) => false,
        Err(e) => panic!("inspect {address}: {e}"),
    }
}

#[test]
fn open_or_create_works_from_either_end_first() {
    let options = ChannelOptions::new();
    // Receiver first.
    let address = unique_posix("ooc-rx");
    let _cleanup = Cleanup(address.clone());
    let mut rx = spsc::Receiver::<u64>::open_or_create(&address, 8, &options).unwrap();
    let mut tx = spsc::Sender::<u64>::open_or_create(&address, 8, &options).unwrap();
    tx.send(1).unwrap();
    assert_eq!(rx.recv(), Ok(1));

    // Sender first, MPMC.
    let address = unique_posix("ooc-mpmc");
    let _cleanup = Cleanup(address.clone());
    let mut tx = mpmc::Sender::<u32>::open_or_create(&address, 8, &options).unwrap();
    let mut rx = mpmc::Receiver::<u32>::open_or_create(&address, 8, &options).unwrap();
    tx.send(2).unwrap();
    assert_eq!(rx.recv(), Ok(2));

    // Records, both modes, and a SysV key.
    for (address, mode) in [
        (unique_posix("ooc-rec"), ProducerMode::Single),
        (unique_sysv(), ProducerMode::Many),
    ] {
        let _cleanup = Cleanup(address.clone());
        let mut tx = records::Sender::open_or_create(&address, 1024, mode, &options).unwrap();
        let mut rx = records::Receiver::open_or_create(&address, 1024, mode, &options).unwrap();
        tx.send(b"hi").unwrap();
        assert_eq!(rx.recv().unwrap().to_vec(), b"hi");
    }
}

#[test]
fn open_or_create_refuses_a_channel_made_with_other_parameters() {
    let options = ChannelOptions::new();
    let address = unique_posix("ooc-other");
    let _cleanup = Cleanup(address.clone());
    let mut rx = spsc::Receiver::<u64>::open_or_create(&address, 8, &options).unwrap();
    let refused = |e: ChannelError| match e {
        ChannelError::Incompatible {
            field,
            found,
            expected,
        } => (field, found, expected),
        other => panic!("expected Incompatible, got {other:?}"),
    };
    assert_eq!(
        refused(
            spsc::Sender::<u64>::open_or_create(&address, 16, &options)
                .err()
                .unwrap()
        ),
        ("capacity", 8, 16)
    );
    assert_eq!(
        refused(
            spsc::Sender::<u32>::open_or_create(&address, 8, &options)
                .err()
                .unwrap()
        ),
        ("slot size", 8, 4)
    );
    let (field, found, expected) = refused(
        mpmc::Sender::<u64>::open_or_create(&address, 8, &options)
            .err()
            .unwrap(),
    );
    assert_eq!(field, "channel kind");
    assert_eq!(found, u64::from(spsc::KIND));
    assert_eq!(expected, u64::from(mpmc::KIND));
    // Nothing was attached: the refused senders did not count as senders
    // that came and left, so the receiver still waits ...
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert!(!rx.is_disconnected());
    // ... and the right sender still gets the role.
    let mut tx = spsc::Sender::<u64>::open_or_create(&address, 8, &options).unwrap();
    tx.send(5).unwrap();
    assert_eq!(rx.recv(), Ok(5));

    let address = unique_posix("ooc-rec-other");
    let _cleanup = Cleanup(address.clone());
    let _rx =
        records::Receiver::open_or_create(&address, 1024, ProducerMode::Single, &options).unwrap();
    let refused_records = |capacity, mode| {
        refused(
            records::Sender::open_or_create(&address, capacity, mode, &options)
                .err()
                .unwrap(),
        )
    };
    assert_eq!(
        refused_records(1024, ProducerMode::Many),
        ("producer mode", 0, 1)
    );
    assert_eq!(
        refused_records(2048, ProducerMode::Single),
        ("capacity", 1024, 2048)
    );
    assert!(
        records::Sender::open_or_create(&address, 1024, ProducerMode::Single, &options).is_ok()
    );
}

#[test]
fn open_timeout_waits_for_the_name_and_reports_timeout() {
    if child_role().is_some() {
        std::thread::sleep(Duration::from_millis(200));
        let address = address_from_env();
        let mut tx = spsc::Sender::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
        tx.send(9).unwrap();
        return;
    }
    let address = unique_posix("otimeout");
    let _cleanup = Cleanup(address.clone());
    let started = Instant::now();
    match spsc::Receiver::<u64>::open_timeout(&address, Duration::from_millis(50)) {
        Err(ChannelError::Timeout { waited }) => assert_eq!(waited, Duration::from_millis(50)),
        other => panic!("expected Timeout, got {:?}", other.err()),
    }
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(matches!(
        records::Receiver::open_timeout(&address, Duration::ZERO),
        Err(ChannelError::Timeout { .. })
    ));

    let child = spawn_child(
        "open_timeout_waits_for_the_name_and_reports_timeout",
        "creator",
        &[("SEGMENT", address.to_string())],
    );
    let mut rx = spsc::Receiver::<u64>::open_timeout(&address, LIMIT).unwrap();
    assert_eq!(rx.recv_timeout(LIMIT), Ok(9));
    child.wait_success(LIMIT);
    assert_eq!(rx.recv_timeout(LIMIT), Err(RecvTimeoutError::Disconnected));
}

#[test]
fn owned_channel_goes_with_its_creator() {
    if let Some(role) = child_role() {
        let address = address_from_env();
        let options = ChannelOptions::new().owned(true);
        let mut tx = spsc::Sender::<u64>::open_or_create(&address, 2, &options).unwrap();
        if role == "killed" {
            tx.send(1).unwrap();
            std::thread::sleep(LIMIT * 2);
            return;
        }
        // Capacity 2: the third send waits until the parent has received.
        for i in 0..4 {
            tx.send(i).unwrap();
        }
        return;
    }
    // The creator leaves: its name goes with it, and the receiver still
    // drains what it sent.
    let address = unique_posix("owned");
    let _cleanup = Cleanup(address.clone());
    let child = spawn_child(
        "owned_channel_goes_with_its_creator",
        "leaves",
        &[("SEGMENT", address.to_string())],
    );
    let mut rx = spsc::Receiver::<u64>::open_timeout(&address, LIMIT).unwrap();
    for i in 0..4 {
        assert_eq!(rx.recv_timeout(LIMIT), Ok(i));
    }
    child.wait_success(LIMIT);
    assert_eq!(rx.recv_timeout(LIMIT), Err(RecvTimeoutError::Disconnected));
    assert!(!exists(&address), "the creator's drop removed the name");

    // The creator dies: the name stays until the stale sweep.
    let address = unique_posix("owned-killed");
    let _cleanup = Cleanup(address.clone());
    let mut child = spawn_child(
        "owned_channel_goes_with_its_creator",
        "killed",
        &[("SEGMENT", address.to_string())],
    );
    let mut rx = spsc::Receiver::<u64>::open_timeout(&address, LIMIT).unwrap();
    assert_eq!(rx.recv_timeout(LIMIT), Ok(1));
    child.child().kill().unwrap();
    child.wait_code(LIMIT);
    assert_eq!(rx.recv_timeout(LIMIT), Err(RecvTimeoutError::Disconnected));
    assert!(exists(&address));
    let removed = ipcring::segment::remove_stale_where(|a| a == &address).unwrap();
    assert_eq!(removed.len(), 1);
    assert!(!exists(&address));

    // A persistent channel (the default) outlives its creator.
    let address = unique_posix("persistent");
    let _cleanup = Cleanup(address.clone());
    drop(spsc::Sender::<u64>::create(&address, 2, &ChannelOptions::new()).unwrap());
    assert!(exists(&address));
    assert!(
        ipcring::segment::remove_stale_where(|a| a == &address)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn endpoints_of_a_later_run_wait_for_new_peers() {
    let options = ChannelOptions::new();
    let address = unique_posix("generations");
    let _cleanup = Cleanup(address.clone());
    // An earlier run: a full exchange, then both ends leave.
    {
        let mut tx = spsc::Sender::<u64>::open_or_create(&address, 4, &options).unwrap();
        let mut rx = spsc::Receiver::<u64>::open_or_create(&address, 4, &options).unwrap();
        tx.send(1).unwrap();
        drop(tx);
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    }
    // A new receiver is not told of the earlier sender's leaving: it waits.
    let mut rx = spsc::Receiver::<u64>::open_or_create(&address, 4, &options).unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(rx.recv_timeout(QUIET), Err(RecvTimeoutError::Timeout));
    assert!(!rx.is_disconnected());
    // A sender of this run comes and leaves: now it is disconnected.
    let mut tx = spsc::Sender::<u64>::open_or_create(&address, 4, &options).unwrap();
    tx.send(2).unwrap();
    drop(tx);
    assert_eq!(rx.recv(), Ok(2));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    drop(rx);

    // Likewise a new sender: it fills the ring and waits for a receiver.
    let mut tx = spsc::Sender::<u64>::open_or_create(&address, 4, &options).unwrap();
    for i in 0..4 {
        tx.try_send(i).unwrap();
    }
    assert!(matches!(tx.try_send(4), Err(TrySendError::Full(4))));
    assert!(matches!(
        tx.send_timeout(4, QUIET),
        Err(SendTimeoutError::Timeout(4))
    ));
    let mut rx = spsc::Receiver::<u64>::open_or_create(&address, 4, &options).unwrap();
    assert_eq!(rx.recv(), Ok(0));
    drop(rx);
    assert!(matches!(tx.try_send(4), Err(TrySendError::Disconnected(4))));
}

#[test]
fn a_late_receiver_drains_a_finished_senders_messages_then_is_disconnected() {
    let options = ChannelOptions::new();
    let address = unique_posix("late-rx");
    let _cleanup = Cleanup(address.clone());
    let mut tx = mpmc::Sender::<u32>::open_or_create(&address, 8, &options).unwrap();
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    drop(tx);
    let mut rx = mpmc::Receiver::<u32>::open_or_create(&address, 8, &options).unwrap();
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.recv(), Ok(2));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));

    let address = unique_posix("late-rec");
    let _cleanup = Cleanup(address.clone());
    let mode = ProducerMode::Many;
    let mut tx = records::Sender::open_or_create(&address, 1024, mode, &options).unwrap();
    tx.send(b"left behind").unwrap();
    drop(tx);
    let mut rx = records::Receiver::open_or_create(&address, 1024, mode, &options).unwrap();
    assert_eq!(rx.recv().unwrap().to_vec(), b"left behind");
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
}

/// The README's flow, one process per end: the sender sends `COUNT`
/// numbers and leaves; the receiver counts them until `Disconnected`. The
/// ring holds `CAPACITY` of them.
const CAPACITY: usize = 256;

fn run_role(role: &str) {
    let address = address_from_env();
    let count: u64 = std::env::var("COUNT").unwrap().parse().unwrap();
    let options = ChannelOptions::new();
    match role {
        "sender" => {
            let mut tx = spsc::Sender::<u64>::open_or_create(&address, CAPACITY, &options).unwrap();
            for i in 0..count {
                tx.send_timeout(i, LIMIT).unwrap();
            }
        }
        "receiver" => {
            let mut rx =
                spsc::Receiver::<u64>::open_or_create(&address, CAPACITY, &options).unwrap();
            let mut next = 0;
            loop {
                match rx.recv_timeout(LIMIT) {
                    Ok(i) => {
                        assert_eq!(i, next);
                        next += 1;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(e) => panic!("receiver: {e}"),
                }
            }
            assert_eq!(next, count, "every number, then Disconnected");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn the_readme_flow_runs_twice_in_either_start_order() {
    if let Some(role) = child_role() {
        run_role(&role);
        return;
    }
    let address = unique_posix("readme-flow");
    let _cleanup = Cleanup(address.clone());
    let spawn = |role, count: usize| {
        spawn_child(
            "the_readme_flow_runs_twice_in_either_start_order",
            role,
            &[
                ("SEGMENT", address.to_string()),
                ("COUNT", count.to_string()),
            ],
        )
    };
    let pause = || std::thread::sleep(Duration::from_millis(100));
    // Run 1: all fits in the ring, and the sender finishes before the
    // receiver starts.
    spawn("sender", CAPACITY).wait_success(LIMIT);
    spawn("receiver", CAPACITY).wait_success(LIMIT);
    // Run 2, over what run 1 left: the receiver first, waiting.
    let many = CAPACITY * 20;
    let receiver = spawn("receiver", many);
    pause();
    spawn("sender", many).wait_success(LIMIT);
    receiver.wait_success(LIMIT);
    // Run 3: the sender first, waiting for room.
    let sender = spawn("sender", many);
    pause();
    spawn("receiver", many).wait_success(LIMIT);
    sender.wait_success(LIMIT);
    // Run 4: both at once.
    let receiver = spawn("receiver", many);
    let sender = spawn("sender", many);
    sender.wait_success(LIMIT);
    receiver.wait_success(LIMIT);
    assert!(
        exists(&address),
        "a persistent channel stays for the next run"
    );
}

#[test]
fn a_waiting_endpoint_learns_that_its_name_was_replaced() {
    if child_role().is_some() {
        // The old trap: this receiver waits on a channel whose name the
        // parent then removes and creates anew.
        let address = address_from_env();
        let mut rx = spsc::Receiver::<u64>::open(&address).unwrap();
        assert_eq!(rx.recv_timeout(LIMIT), Err(RecvTimeoutError::Removed));
        return;
    }
    let options = ChannelOptions::new();
    for address in [unique_posix("replaced"), unique_sysv()] {
        let _cleanup = Cleanup(address.clone());
        let segment = spsc::create_segment::<u64>(Some(&address), 4, &options).unwrap();
        drop(segment);
        let mut child = spawn_child(
            "a_waiting_endpoint_learns_that_its_name_was_replaced",
            "receiver",
            &[("SEGMENT", address.to_string())],
        );
        // Let it attach and wait.
        std::thread::sleep(Duration::from_millis(200));
        Segment::remove(&address).unwrap();
        let _new = spsc::Sender::<u64>::create(&address, 4, &options).unwrap();
        assert_eq!(child.wait_code(LIMIT), Some(0), "the receiver got Removed");
    }

    // A sender waiting for room, with no receiver, learns it too; so does
    // a receiver whose name is simply removed.
    let address = unique_posix("removed");
    let _cleanup = Cleanup(address.clone());
    let mut tx = spsc::Sender::<u64>::create(&address, 1, &options).unwrap();
    tx.send(1).unwrap();
    Segment::remove(&address).unwrap();
    assert!(matches!(
        tx.send_timeout(2, LIMIT),
        Err(SendTimeoutError::Removed(2))
    ));

    let address = unique_posix("removed-rx");
    let _cleanup = Cleanup(address.clone());
    let mut rx = records::Receiver::create(&address, 1024, ProducerMode::Single, &options).unwrap();
    Segment::remove(&address).unwrap();
    assert!(matches!(
        rx.recv_timeout(LIMIT),
        Err(RecvTimeoutError::Removed)
    ));
}

#[test]
fn removing_the_name_does_not_disturb_attached_peers() {
    let options = ChannelOptions::new();
    let address = unique_posix("unlinked-pair");
    let _cleanup = Cleanup(address.clone());
    let mut tx = spsc::Sender::<u64>::create(&address, 2, &options).unwrap();
    let mut rx = spsc::Receiver::<u64>::open(&address).unwrap();
    Segment::remove(&address).unwrap();
    // Both wait on each other past several reap intervals: no Removed.
    assert_eq!(rx.recv_timeout(QUIET), Err(RecvTimeoutError::Timeout));
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    assert!(matches!(
        tx.send_timeout(3, QUIET),
        Err(SendTimeoutError::Timeout(3))
    ));
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.recv(), Ok(2));
    drop(tx);
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}
