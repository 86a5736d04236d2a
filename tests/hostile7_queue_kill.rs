//! Message queue deaths the step-by-step crash tests leave out: a reaper
//! killed while it takes back a dead handle's block (holding the lock
//! under the dead handle's token), and a rendezvous sender killed while it
//! withdraws its message. Real processes, stopped at a failpoint in a
//! single-threaded grandchild and SIGKILLed there; the survivors must
//! carry on with exact counts.
#![cfg(feature = "failpoints")]

mod common;
mod hostile_support;

use std::time::Duration;

use common::{Cleanup, unique_posix};
use hostile_support::{Victim, env, role, run_role};
use ipcring::channel::ChannelOptions;
use ipcring::channel::queue::{self, Queue, QueueConfig, QueueSendError, QueueStats, Select};
use ipcring::segment::{Address, OpenOptions, Segment};

const LIMIT: Duration = Duration::from_secs(10);

fn address_from_env() -> Address {
    env("QUEUE").parse().unwrap()
}

fn stats_of(address: &Address) -> QueueStats {
    let segment = Segment::open(address, &OpenOptions::new().read_only()).unwrap();
    queue::stats(&segment).unwrap()
}

fn killed_at(test: &str, role: &str, failpoint: &str, address: &Address) {
    let mut victim = Victim::spawn(
        test,
        role,
        Some(failpoint),
        &[("QUEUE", address.to_string())],
    );
    victim
        .wait_stopped(LIMIT)
        .unwrap_or_else(|e| panic!("{role} at {failpoint}: {e}"));
    victim.kill();
}

/// Every block is usable again: as many messages as the queue holds go in
/// and come out, and the counts end at zero.
fn every_block_usable(address: &Address, blocks: usize) {
    let mut a = Queue::open(address).unwrap();
    let mut b = Queue::open(address).unwrap();
    for i in 0..blocks {
        a.send_timeout(&[i as u8; 3], 1, 0, LIMIT)
            .unwrap_or_else(|e| panic!("block {i} of {blocks}: {e}"));
    }
    let mut buf = [0u8; 64];
    for i in 0..blocks {
        let got = b.recv_timeout(Select::Any, &mut buf, LIMIT).unwrap();
        assert_eq!(&buf[..got.len], &[i as u8; 3]);
    }
    let stats = a.stats();
    assert_eq!((stats.count, stats.bytes), (0, 0), "{stats:?}");
}

/// A loaner dies holding a block; the next process to attach reaps it and
/// is itself killed at each step of the repair's journal commit, holding
/// the lock under the dead loaner's token. A third handle takes the
/// reaper's mark over, replays or drops its update, and the block and its
/// bytes come back exactly once.
#[test]
fn a_reaper_killed_mid_reclaim_is_taken_over() {
    if let Some(role) = role() {
        return run_role(|| {
            let address = address_from_env();
            match role.as_str() {
                "loaner" => {
                    let mut q = Queue::open(&address).unwrap();
                    let mut loan = q.try_loan(8).unwrap();
                    loan.write_at(0, b"unsent!!");
                    std::mem::forget(loan);
                    // Hold it until killed.
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                // Attaching reaps the dead loaner first.
                "reaper" => drop(Queue::open(&address).unwrap()),
                other => panic!("{other}"),
            }
        });
    }
    for step in ["journal.staged", "journal.committed", "journal.applied"] {
        let address = unique_posix("h7-reaper");
        let _cleanup = Cleanup(address.clone());
        let config = QueueConfig::new(3, 16);
        let creator = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
        // The loaner stops after its loan (queue.loan.taken) and is killed.
        killed_at(
            "a_reaper_killed_mid_reclaim_is_taken_over",
            "loaner",
            "queue.loan.taken",
            &address,
        );
        assert_eq!(stats_of(&address).bytes, 8, "{step}: the loan's bytes");
        killed_at(
            "a_reaper_killed_mid_reclaim_is_taken_over",
            "reaper",
            step,
            &address,
        );
        drop(creator);
        every_block_usable(&address, 3);
        let stats = stats_of(&address);
        assert_eq!(
            (stats.count, stats.bytes, stats.losses),
            (0, 0, 0),
            "{step}"
        );
        assert!(stats.repairs >= 1, "{step}: {stats:?}");
    }
}

/// A rendezvous sender whose timed send found no receiver is killed while
/// withdrawing its message (its second journal commit): the message is
/// either withdrawn or still queued, never both, and no block is lost.
#[test]
fn a_rendezvous_sender_killed_while_withdrawing() {
    if let Some(role) = role() {
        return run_role(|| {
            assert_eq!(role, "sender");
            let mut q = Queue::open(&address_from_env()).unwrap();
            let sent = q.send_timeout(b"nobody", 4, 1, Duration::from_millis(50));
            assert_eq!(sent, Err(QueueSendError::Timeout));
        });
    }
    for step in [
        "journal.staged@2",
        "journal.committed@2",
        "journal.applied@2",
    ] {
        let address = unique_posix("h7-rdv");
        let _cleanup = Cleanup(address.clone());
        let config = QueueConfig::new(0, 16);
        let mut q = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
        killed_at(
            "a_rendezvous_sender_killed_while_withdrawing",
            "sender",
            step,
            &address,
        );
        // Reap the sender (the lock it held), then look.
        let mut buf = [0u8; 16];
        let got = q.recv_timeout(Select::Any, &mut buf, Duration::from_millis(400));
        let stats = stats_of(&address);
        eprintln!("{step}: {got:?}, {stats:?}");
        assert_eq!((stats.count, stats.bytes), (0, 0), "{step}");
        if let Ok(got) = got {
            assert_eq!(&buf[..got.len], b"nobody", "{step}");
            assert!(
                step.starts_with("journal.staged"),
                "{step}: withdrawn and received"
            );
        }
        // A fresh sender's rendezvous still works (and is withdrawn).
        drop(q);
        let mut a = Queue::open(&address).unwrap();
        assert_eq!(a.try_send(b"x", 1, 0), Err(QueueSendError::Full));
        assert_eq!(stats_of(&address).count, 0);
    }
}
