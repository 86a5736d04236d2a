//! A many-sender record channel's claim records keep a reservation's start
//! as `position / 8` modulo 2^32, so a claim record names a position only
//! within a 32 GiB window. After 32 GiB of traffic an old, long-committed
//! claim of an idle sender reads as a claim inside the live part of the
//! ring, and repairing it when that sender dies overwrites live bytes.
//!
//! The traffic is made cheaply: the busy sender reserves the largest record
//! and drops the grant (a skip record, nothing copied); the receiver passes
//! over it. 32 GiB take a few seconds.

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use common::{Cleanup, RemoveFile, unique_posix};
use hostile_support::{Victim, env, role};
use ipcring::channel::{ChannelOptions, TryRecvError, records};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::Address;

const CAPACITY: u64 = 1 << 20;
/// Where a claim record's position wraps.
const WINDOW: u64 = 1 << 35;

#[test]
fn a_dead_idle_senders_old_claim_does_not_tear_a_live_record() {
    if role().is_some() {
        // The idle sender: one record, then quiet (alive) until killed.
        let address: Address = env("SEGMENT").parse().unwrap();
        let mut tx = records::Sender::open(&address).unwrap();
        tx.send(&[0xaa; 8]).unwrap();
        std::fs::write(env("READY"), "sent").unwrap();
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let address = unique_posix("wrap32g");
    let _cleanup = Cleanup(address.clone());
    let ready = std::env::temp_dir().join(format!("hostile-wrap-{}", std::process::id()));
    let _remove = RemoveFile(ready.clone());
    let options = ChannelOptions::new();
    let mut busy =
        records::Sender::create(&address, CAPACITY as usize, ProducerMode::Many, &options).unwrap();
    let mut rx = records::Receiver::open(&address).unwrap();
    // Record 0 at [0, 16): the idle sender's record then starts at 16.
    busy.send(&[0xb0; 8]).unwrap();
    assert_eq!(rx.recv().unwrap().to_vec(), [0xb0; 8]);
    let mut idle = Victim::spawn_with(
        "a_dead_idle_senders_old_claim_does_not_tear_a_live_record",
        "idle",
        None,
        &[
            ("SEGMENT", address.to_string()),
            ("READY", ready.display().to_string()),
        ],
        false,
    );
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "idle sender not ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(rx.recv().unwrap().to_vec(), [0xaa; 8]);

    // 32 GiB of skip records, landing exactly on the window's end.
    let mut tail = 32u64;
    let started = Instant::now();
    while tail < WINDOW {
        let to_end = CAPACITY - tail % CAPACITY;
        let size = to_end.min(CAPACITY / 2);
        drop(busy.try_reserve(size as usize - 8).unwrap());
        tail += size;
        match rx.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("a skip record delivered: {:?}", other.map(|v| v.len())),
        }
        assert!(started.elapsed() < Duration::from_secs(600), "too slow");
    }
    eprintln!("32 GiB of traffic in {:?}", started.elapsed());

    // A live record at the window's end, not yet received.
    let live: Vec<u8> = (0..64u8).map(|i| 0x40 | (i & 0x3f)).collect();
    busy.send(&live).unwrap();
    let repairs_before = busy.stats().repairs;
    // The idle sender dies; a fresh sender's attach reaps it.
    idle.kill();
    drop(records::Sender::open(&address).unwrap());
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap().to_vec();
    let repairs = busy.stats().repairs - repairs_before;
    let differing: Vec<usize> = (0..live.len())
        .filter(|&i| got.get(i) != Some(&live[i]))
        .collect();
    eprintln!("repairs of the dead idle sender's long-committed claim: {repairs}");
    assert!(
        differing.is_empty(),
        "the live record was torn at bytes {differing:?}: {got:02x?}"
    );
    assert_eq!(repairs, 0, "a committed, consumed claim was repaired");
}
