//! Random scribbles anywhere in a queue segment's user area (endpoint
//! tables, ring info, stored parameters, the journal, state words, lists,
//! block headers and payloads; only the lock word is left out, see
//! docs/crash-behavior.md), then every API call and the CLI's `stat`,
//! `ls`, `send` and `recv` on it. Each round runs under a time limit: a
//! typed error or a result, never a panic or a hang. Seeded: a failure
//! names its round and seed.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/hostile_support/mod.rs"]
mod hostile_support;

use std::process::Command;
use std::time::Duration;

use common::{Cleanup, unique_posix};
use hostile_support::{Outcome, Rng, bounded, peek, poke};
use ipcring::channel::ChannelOptions;
use ipcring::channel::RING_OFFSET;
use ipcring::channel::datagram::Mailbox;
use ipcring::channel::queue::{Queue, QueueConfig, Receive, Select};
use ipcring::segment::{Address, OpenOptions, Segment};

const ROUND_LIMIT: Duration = Duration::from_secs(8);
const SHORT: Duration = Duration::from_millis(5);
const LOCK_HOLDER: usize = RING_OFFSET + 88;

fn nasty(rng: &mut Rng, current: u64) -> u64 {
    match rng.below(9) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.below(8),
        3 => current ^ (1 << rng.below(64)),
        4 => current.wrapping_add(1),
        5 => current.wrapping_sub(1),
        6 => 1 << 32 | rng.below(70),
        7 => 2 << 32 | rng.below(70),
        _ => rng.next(),
    }
}

/// Every call, once, with short timeouts; what each returned.
fn exercise(address: &Address) -> Vec<String> {
    let mut out = Vec::new();
    let mut q = match Queue::open(address) {
        Ok(q) => q,
        Err(e) => return vec![format!("open: {e}")],
    };
    let mut buf = [0u8; 48];
    out.push(format!("{:?}", q.try_send(b"abc", 2, 1)));
    out.push(format!("{:?}", q.send_timeout(b"defg", 3, 0, SHORT)));
    out.push(format!("{:?}", q.try_recv(Select::Any, &mut buf)));
    out.push(format!(
        "{:?}",
        q.recv_timeout(Select::TypeAtMost(3), &mut buf, SHORT)
    ));
    out.push(format!(
        "{:?}",
        q.receive(
            &Receive::new(Select::ExceptType(2))
                .timeout(SHORT)
                .truncate(true),
            &mut buf[..2]
        )
    ));
    for nth in [0, 1, 5] {
        out.push(format!("{:?}", q.peek(Select::Type(2), nth, &mut buf)));
    }
    out.push(format!(
        "{:?}",
        q.recv_in_place_timeout(Select::Any, SHORT)
            .map(|m| m.to_vec())
    ));
    out.push(format!(
        "{:?}",
        q.loan_timeout(5, SHORT).map(|mut loan| {
            loan.write_at(0, b"loan!");
            loan.send(4, 2)
        })
    ));
    out.push(format!("{:?}", q.try_loan(3).map(|_| ())));
    out.push(format!("{:?}", q.stats()));
    drop(q);
    if let Ok(mut mailbox) = Mailbox::open(address) {
        out.push(format!("{:?}", mailbox.try_send(b"m")));
        out.push(format!("{:?}", mailbox.try_recv(&mut buf)));
    }
    out
}

fn cli(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(
        output.status.code().is_some(),
        "{args:?}: killed by a signal"
    );
    stderr
}

fn sweep(seed: u64, rounds: usize, region: std::ops::Range<usize>, with_cli: bool) -> usize {
    let address = unique_posix("h7-sweep");
    let _cleanup = Cleanup(address.clone());
    let config = QueueConfig::new(6, 40).priorities(40);
    let mut rng = Rng(seed);
    let mut segment = None;
    let mut corrupted = 0;
    for round in 0..rounds {
        if round % 25 == 0 {
            let _ = Queue::remove(&address);
            let _ = Segment::remove(&address);
            let mut q = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
            for i in 0..4u8 {
                q.try_send(&[i; 7], 1 + u64::from(i % 3), u32::from(i * 7))
                    .unwrap();
            }
            drop(q);
            segment = Some(Segment::open(&address, &OpenOptions::new().register(false)).unwrap());
        }
        let segment = segment.as_ref().unwrap();
        let end = region.end.min(segment.user_len());
        for _ in 0..1 + rng.below(3) {
            let offset = (region.start + rng.below((end - region.start) as u64) as usize) & !7;
            if offset == LOCK_HOLDER {
                continue;
            }
            let value = nasty(&mut rng, peek(segment, offset));
            poke(segment, offset, value);
        }
        let target = address.clone();
        let results = match bounded(ROUND_LIMIT, move || exercise(&target)) {
            Outcome::Returned(results) => results,
            Outcome::Panicked(message) => panic!("seed {seed:#x} round {round}: panic: {message}"),
            Outcome::Hung => panic!("seed {seed:#x} round {round}: hung"),
        };
        corrupted += results.iter().filter(|r| r.contains("orrupt")).count();
        if with_cli && round % 5 == 0 {
            let name = address.to_string();
            cli(&["stat", &name]);
            cli(&["stat", &name, "--json"]);
            cli(&["ls"]);
            cli(&["send", &name, "--timeout", "5ms", "cli"]);
            cli(&["recv", &name, "--timeout", "5ms", "--count", "3"]);
        }
    }
    eprintln!("seed {seed:#x}: {corrupted} calls reported corrupted memory");
    corrupted
}

/// The whole user area, endpoint tables included.
#[test]
fn scribbles_anywhere_give_typed_errors() {
    assert!(sweep(0x0007_0001, 150, 0..usize::MAX, true) > 0);
}

/// The queue's header only (info, parameters, journal, state, lists).
#[test]
fn scribbles_in_the_queue_header_give_typed_errors() {
    sweep(0x0007_0002, 250, RING_OFFSET..RING_OFFSET + 2304, false);
}

/// The journal only: its count, tag and entries, while no holder dies.
/// Live holders overwrite the journal at each commit and never replay
/// it, so nothing is reported corrupted and every call works.
#[test]
fn scribbles_in_the_journal_give_typed_errors() {
    assert_eq!(
        sweep(0x0007_0003, 150, RING_OFFSET + 96..RING_OFFSET + 512, false),
        0
    );
}
