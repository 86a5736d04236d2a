//! A co-tenant with write access scribbles over a channel segment while
//! endpoints are blocked in `recv()` or `send()` with no timeout. The
//! promise: every blocked call returns (with any typed error) within a
//! bounded time, and nothing panics, hangs or faults.
//!
//! Each scenario blocks one call on a thread of its own, damages a part of
//! the segment through another mapping with atomic stores (as another
//! process would), and then waits. If the call is still blocked after
//! [`NOTICE`], the test's own endpoint on the other side leaves as well, so
//! that "the peer side is gone" holds too, and the call gets [`AFTER_LEAVE`]
//! more. A call still blocked then is a hang; a panic (debug-build integer
//! overflow included) fails the scenario too.

mod common;
mod hostile_support;

use std::time::Duration;

use common::{Cleanup, unique_posix};
use hostile_support::{Outcome, Pending, Rng, fill, layout, scribble};
use ipcring::channel::{ChannelOptions, mpmc, records, spsc};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{Address, OpenOptions, Segment};

/// How long a blocked call may take to notice damage on its own.
const NOTICE: Duration = Duration::from_millis(1500);
/// How long it may take once its peer has left too.
const AFTER_LEAVE: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Spsc,
    Mpmc,
    RecordsSingle,
    RecordsMany,
}

const KINDS: [Kind; 4] = [
    Kind::Spsc,
    Kind::Mpmc,
    Kind::RecordsSingle,
    Kind::RecordsMany,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocked {
    /// A receiver on an empty ring.
    Recv,
    /// A sender on a full ring.
    Send,
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Zero the whole user area.
    ZeroAll,
    /// Fill the whole user area with 0xff.
    OnesAll,
    /// Random words over a range of the user area.
    Random {
        offset: usize,
        len: usize,
        seed: u64,
    },
    /// Zero a range.
    Zero { offset: usize, len: usize },
    /// Zero the peer side's presence word and its first slot: two words.
    PeerPresenceAndSlot,
    /// Zero the whole file, the segment header included.
    WholeFile,
}

/// The test's own endpoint on the other side of the blocked call: it keeps
/// the peer side alive until it is dropped.
enum Peer {
    SpscTx(spsc::Sender<u64>),
    SpscRx(spsc::Receiver<u64>),
    MpmcTx(mpmc::Sender<u64>),
    MpmcRx(mpmc::Receiver<u64>),
    RecTx(records::Sender),
    RecRx(records::Receiver),
}

const SLOTS: usize = 4;
const RECORD_BYTES: usize = 256;

/// Creates the channel with the test's endpoint on the side opposite to
/// the blocked call.
fn create(kind: Kind, blocked: Blocked, address: &Address) -> Peer {
    let options = ChannelOptions::new();
    match (kind, blocked) {
        (Kind::Spsc, Blocked::Recv) => {
            Peer::SpscTx(spsc::Sender::create(address, SLOTS, &options).unwrap())
        }
        (Kind::Spsc, Blocked::Send) => {
            Peer::SpscRx(spsc::Receiver::create(address, SLOTS, &options).unwrap())
        }
        (Kind::Mpmc, Blocked::Recv) => {
            Peer::MpmcTx(mpmc::Sender::create(address, SLOTS, &options).unwrap())
        }
        (Kind::Mpmc, Blocked::Send) => {
            Peer::MpmcRx(mpmc::Receiver::create(address, SLOTS, &options).unwrap())
        }
        (Kind::RecordsSingle | Kind::RecordsMany, _) => {
            let mode = if kind == Kind::RecordsSingle {
                ProducerMode::Single
            } else {
                ProducerMode::Many
            };
            match blocked {
                Blocked::Recv => Peer::RecTx(
                    records::Sender::create(address, RECORD_BYTES, mode, &options).unwrap(),
                ),
                Blocked::Send => Peer::RecRx(
                    records::Receiver::create(address, RECORD_BYTES, mode, &options).unwrap(),
                ),
            }
        }
    }
}

/// Opens the blocked endpoint and blocks in its call; `ready` is sent just
/// before the blocking call. Returns what the call returned, as text.
fn blocked_call(
    kind: Kind,
    blocked: Blocked,
    address: Address,
    ready: std::sync::mpsc::Sender<()>,
) -> String {
    match (kind, blocked) {
        (Kind::Spsc, Blocked::Recv) => {
            let mut rx = spsc::Receiver::<u64>::open(&address).unwrap();
            ready.send(()).unwrap();
            format!("{:?}", rx.recv())
        }
        (Kind::Spsc, Blocked::Send) => {
            let mut tx = spsc::Sender::<u64>::open(&address).unwrap();
            while tx.try_send(1).is_ok() {}
            ready.send(()).unwrap();
            format!("{:?}", tx.send(2))
        }
        (Kind::Mpmc, Blocked::Recv) => {
            let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
            ready.send(()).unwrap();
            format!("{:?}", rx.recv())
        }
        (Kind::Mpmc, Blocked::Send) => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            while tx.try_send(1).is_ok() {}
            ready.send(()).unwrap();
            format!("{:?}", tx.send(2))
        }
        (_, Blocked::Recv) => {
            let mut rx = records::Receiver::open(&address).unwrap();
            ready.send(()).unwrap();
            format!("{:?}", rx.recv().map(|view| view.len()))
        }
        (_, Blocked::Send) => {
            let mut tx = records::Sender::open(&address).unwrap();
            while tx.try_send(&[7; 40]).is_ok() {}
            ready.send(()).unwrap();
            format!("{:?}", tx.send(&[8; 40]))
        }
    }
}

fn damage(segment: &Segment, address: &Address, blocked: Blocked, damage: Damage) {
    let len = segment.user_len();
    match damage {
        Damage::PeerPresenceAndSlot => {
            let presence = match blocked {
                Blocked::Recv => layout::PRODUCER_PRESENCE,
                Blocked::Send => layout::CONSUMER_PRESENCE,
            };
            fill(segment, presence, 16, 0);
        }
        Damage::WholeFile => {
            use std::os::unix::fs::FileExt;
            let path = common::truncate::segment_file(address);
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            let size = file.metadata().unwrap().len();
            file.write_all_at(&vec![0u8; size as usize], 0).unwrap();
        }
        Damage::ZeroAll => fill(segment, 0, len, 0),
        Damage::OnesAll => fill(segment, 0, len, 0xff),
        Damage::Random {
            offset,
            len: range,
            seed,
        } => {
            let range = range.min(len.saturating_sub(offset));
            scribble(segment, offset, range & !7, &mut Rng(seed));
        }
        Damage::Zero { offset, len: range } => {
            fill(segment, offset, range.min(len.saturating_sub(offset)), 0)
        }
    }
}

/// What one scenario saw.
#[derive(Debug)]
// The texts are read through `Debug`, in the reports.
#[allow(dead_code)]
enum Verdict {
    /// The call returned on its own after the damage.
    Noticed(String),
    /// It returned only once its peer had left as well.
    AfterLeave(String),
    /// It panicked.
    Panicked(String),
    /// It was still blocked after its peer had left.
    Hung,
}

fn run(kind: Kind, blocked: Blocked, what: Damage) -> Verdict {
    let address = unique_posix("scrib");
    let _cleanup = Cleanup(address.clone());
    let peer = create(kind, blocked, &address);
    let vandal = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let call_address = address.clone();
    let mut pending = Pending::start("blocked", move || {
        blocked_call(kind, blocked, call_address, ready_tx)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the blocked endpoint never got to its call");
    // Let it reach its futex wait.
    std::thread::sleep(Duration::from_millis(150));
    if let Some(outcome) = pending.poll() {
        panic!("{kind:?} {blocked:?}: returned before any damage: {outcome:?}");
    }
    damage(&vandal, &address, blocked, what);
    let started = std::time::Instant::now();
    loop {
        if let Some(outcome) = pending.poll() {
            return match outcome {
                Outcome::Returned(text) => Verdict::Noticed(text),
                Outcome::Panicked(message) => Verdict::Panicked(message),
                Outcome::Hung => unreachable!(),
            };
        }
        if started.elapsed() > NOTICE {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(peer);
    match pending.finish(NOTICE + AFTER_LEAVE + Duration::from_millis(150)) {
        Outcome::Returned(text) => Verdict::AfterLeave(text),
        Outcome::Panicked(message) => Verdict::Panicked(message),
        Outcome::Hung => Verdict::Hung,
    }
}

/// Runs every (kind, blocked call) pair under `what`; fails listing each
/// pair that hung or panicked.
fn check_all(label: &str, what: Damage) {
    let mut failures = Vec::new();
    for kind in KINDS {
        for blocked in [Blocked::Recv, Blocked::Send] {
            let verdict = run(kind, blocked, what);
            eprintln!("{label}: {kind:?} blocked in {blocked:?}: {verdict:?}");
            if matches!(verdict, Verdict::Hung | Verdict::Panicked(_)) {
                failures.push(format!("{kind:?} {blocked:?}: {verdict:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{label} ({what:?}): blocked calls that never returned or panicked:\n{}",
        failures.join("\n")
    );
}

#[test]
fn zeroing_the_segment_unblocks_blocked_calls() {
    check_all("zero all", Damage::ZeroAll);
}

#[test]
fn zeroing_the_whole_file_unblocks_blocked_calls() {
    check_all("zero the file", Damage::WholeFile);
}

#[test]
fn zeroing_two_words_does_not_hide_the_peers_departure() {
    check_all("zero peer presence and slot", Damage::PeerPresenceAndSlot);
}

#[test]
fn filling_the_segment_with_ones_unblocks_blocked_calls() {
    check_all("0xff all", Damage::OnesAll);
}

#[test]
fn zeroing_the_endpoint_tables_unblocks_blocked_calls() {
    check_all(
        "zero endpoint tables",
        Damage::Zero {
            offset: layout::ENDPOINTS,
            len: 4096,
        },
    );
}

#[test]
fn random_endpoint_tables_unblock_blocked_calls() {
    for seed in 1..=3 {
        check_all(
            "random endpoint tables",
            Damage::Random {
                offset: layout::ENDPOINTS,
                len: 4096,
                seed,
            },
        );
    }
}

#[test]
fn random_ring_headers_unblock_blocked_calls() {
    for seed in 1..=3 {
        check_all(
            "random ring header",
            Damage::Random {
                offset: layout::RING,
                len: 640,
                seed,
            },
        );
    }
}

#[test]
fn random_claim_records_unblock_blocked_calls() {
    for seed in 1..=2 {
        check_all(
            "random claim records",
            Damage::Random {
                offset: layout::CLAIMS,
                len: 8320,
                seed,
            },
        );
    }
}

#[test]
fn random_slots_and_record_headers_unblock_blocked_calls() {
    for seed in 1..=3 {
        check_all(
            "random slots",
            Damage::Random {
                offset: layout::SPSC_SLOTS,
                len: 1 << 16,
                seed,
            },
        );
    }
}

/// Every operation of both ends, each bounded by its own timeout; returns
/// what each did, as text. Fresh endpoints attach too, so the reaper and
/// the repair code run over the damage.
fn exercise(kind: Kind, address: &Address, peers: &mut (Peer, Peer)) -> Vec<String> {
    let short = Duration::from_millis(20);
    let mut seen = Vec::new();
    for peer in [&mut peers.0, &mut peers.1] {
        let text = match peer {
            Peer::SpscTx(tx) => format!(
                "{:?} {:?} {}",
                tx.try_send(9),
                tx.send_timeout(9, short),
                tx.is_disconnected()
            ),
            Peer::SpscRx(rx) => format!(
                "{:?} {:?} {}",
                rx.try_recv(),
                rx.recv_timeout(short),
                rx.is_disconnected()
            ),
            Peer::MpmcTx(tx) => format!(
                "{:?} {:?} {} {:?}",
                tx.try_send(9),
                tx.send_timeout(9, short),
                tx.is_disconnected(),
                tx.stats()
            ),
            Peer::MpmcRx(rx) => format!(
                "{:?} {:?} {} {:?}",
                rx.try_recv(),
                rx.recv_timeout(short),
                rx.is_disconnected(),
                rx.stats()
            ),
            Peer::RecTx(tx) => format!(
                "{:?} {:?} {} {:?}",
                tx.try_send(&[9; 20]),
                tx.send_timeout(&[9; 20], short),
                tx.is_disconnected(),
                tx.stats()
            ),
            Peer::RecRx(rx) => {
                let a = format!("{:?}", rx.try_recv().map(|v| v.to_vec()));
                let b = format!("{:?}", rx.recv_timeout(short).map(|v| v.to_vec()));
                format!("{a} {b} {} {:?}", rx.is_disconnected(), rx.stats())
            }
        };
        seen.push(text);
    }
    // Fresh endpoints on both sides: attach reaps and repairs.
    let fresh = match kind {
        Kind::Spsc => format!(
            "{:?} {:?}",
            spsc::Sender::<u64>::open(address).map(|_| ()),
            spsc::Receiver::<u64>::open(address).map(|_| ())
        ),
        Kind::Mpmc => format!(
            "{:?} {:?}",
            mpmc::Sender::<u64>::open(address).map(|mut tx| tx.try_send(3)),
            mpmc::Receiver::<u64>::open(address).map(|mut rx| rx.try_recv())
        ),
        _ => format!(
            "{:?} {:?}",
            records::Sender::open(address).map(|mut tx| tx.try_send(b"x")),
            records::Receiver::open(address).map(|_| ())
        ),
    };
    seen.push(fresh);
    let stats = Segment::open(address, &OpenOptions::new().register(false))
        .map(|segment| format!("{:?}", ipcring::channel::stats(&segment)));
    seen.push(format!("{stats:?}"));
    seen
}

/// Both ends of a channel, with a little traffic through it.
fn both_ends(kind: Kind, address: &Address) -> (Peer, Peer) {
    let options = ChannelOptions::new();
    match kind {
        Kind::Spsc => {
            let mut tx = spsc::Sender::create(address, SLOTS, &options).unwrap();
            let mut rx = spsc::Receiver::open(address).unwrap();
            for i in 0..3 {
                tx.send(i).unwrap();
            }
            rx.recv().unwrap();
            (Peer::SpscTx(tx), Peer::SpscRx(rx))
        }
        Kind::Mpmc => {
            let mut tx = mpmc::Sender::create(address, SLOTS, &options).unwrap();
            let mut rx = mpmc::Receiver::open(address).unwrap();
            for i in 0..3 {
                tx.send(i).unwrap();
            }
            rx.recv().unwrap();
            (Peer::MpmcTx(tx), Peer::MpmcRx(rx))
        }
        _ => {
            let mode = if kind == Kind::RecordsSingle {
                ProducerMode::Single
            } else {
                ProducerMode::Many
            };
            let mut tx = records::Sender::create(address, RECORD_BYTES, mode, &options).unwrap();
            let mut rx = records::Receiver::open(address).unwrap();
            for i in 0..3u8 {
                tx.send(&[i; 30]).unwrap();
            }
            drop(rx.recv().unwrap());
            (Peer::RecTx(tx), Peer::RecRx(rx))
        }
    }
}

/// A word that matters: endpoint tables, ring header, claim records, the
/// first slots or record headers.
fn interesting_offset(rng: &mut Rng, kind: Kind, len: usize) -> usize {
    let many_writer = matches!(kind, Kind::Mpmc | Kind::RecordsSingle | Kind::RecordsMany);
    let slots = if many_writer {
        layout::SLOTS
    } else {
        layout::SPSC_SLOTS
    };
    let candidates = [
        0, // ready
        layout::PRODUCER_PRESENCE,
        layout::PRODUCER_SLOTS,
        layout::PRODUCER_SLOTS + 8,
        layout::CONSUMER_PRESENCE,
        layout::CONSUMER_SLOTS,
        layout::CONSUMER_SLOTS + 8,
        layout::RING,      // magic
        layout::RING + 8,  // capacity
        layout::RING + 16, // slot size
        layout::RING + 24, // slot alignment
        layout::RING + 32, // flags
        layout::RING_TAIL,
        layout::RING_HEAD,
        layout::RING_DATA_READY,
        layout::RING_DATA_READY + 8,
        layout::RING_SPACE_READY,
        layout::RING_SPACE_READY + 8,
        layout::CLAIMS,              // repairs
        layout::CLAIMS + 8,          // losses
        layout::CLAIMS + 128,        // producer 0's claim record
        layout::CLAIMS + 256,        // producer 1's
        layout::CLAIMS + 128 + 4096, // consumer 0's
        layout::CLAIMS + 256 + 4096, // consumer 1's
        slots,
        slots + 8,
        slots + 16,
        slots + 24,
        slots + 32,
        slots + 48,
    ];
    let at = candidates[rng.below(candidates.len() as u64) as usize];
    if at + 8 > len || (!many_writer && (layout::CLAIMS..layout::SLOTS).contains(&at)) {
        return (rng.below(len as u64 / 8) * 8) as usize;
    }
    at
}

/// A value a careless or hostile peer might leave in a word.
fn nasty_value(rng: &mut Rng, current: u64) -> u64 {
    match rng.below(10) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.next(),
        3 => current ^ (1 << rng.below(64)),
        4 => current.wrapping_add(rng.below(17)).wrapping_sub(8),
        5 => current.wrapping_add(1 << rng.below(64)),
        6 => 1 << 63 | rng.next() >> 1,
        7 => rng.below(64),
        8 => current.wrapping_mul(2),
        _ => (rng.next() & 0xffff_ffff) << 32 | current & 0xffff_ffff,
    }
}

#[test]
fn random_damage_never_panics_or_hangs_any_operation() {
    let seeds: u64 = std::env::var("HOSTILE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut failures = Vec::new();
    for seed in 0..seeds {
        for kind in KINDS {
            let address = unique_posix("scrib-fuzz");
            let _cleanup = Cleanup(address.clone());
            let mut peers = both_ends(kind, &address);
            let vandal = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
            let mut rng = Rng(seed * 4 + kind as u64);
            let len = vandal.user_len() & !7;
            for _ in 0..1 + rng.below(4) {
                let at = interesting_offset(&mut rng, kind, len);
                let current = hostile_support::peek(&vandal, at);
                hostile_support::poke(&vandal, at, nasty_value(&mut rng, current));
            }
            let address_for_call = address.clone();
            let outcome = hostile_support::bounded(Duration::from_secs(10), move || {
                let seen = exercise(kind, &address_for_call, &mut peers);
                drop(peers);
                seen
            });
            match outcome {
                Outcome::Returned(seen) => {
                    if std::env::var("HOSTILE_VERBOSE").is_ok() {
                        eprintln!("seed {seed} {kind:?}: {seen:?}");
                    }
                }
                Outcome::Panicked(message) => {
                    failures.push(format!("seed {seed} {kind:?}: panicked: {message}"))
                }
                Outcome::Hung => failures.push(format!("seed {seed} {kind:?}: hung")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
