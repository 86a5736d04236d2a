//! Random-kill soak of the message queue: sender and receiver processes
//! are SIGKILLed at random moments and replaced, for about 20 s, while
//! they exchange sequence-numbered, checksummed messages of random
//! length, type and priority. Half the sends go through loans; every
//! receive is in place, so a receiver's record of what it got is written
//! before the message leaves the queue for good (its block is freed when
//! the guard drops), and a receiver killed holding one makes the queue
//! count a loss.
//!
//! Each child records what it did in a ledger segment apart from the
//! queue, one atomic word per fact: a sender stores the sequence number it
//! is sending before the call and the last one that returned `Ok` after;
//! a receiver sets one bit per message (a bit already set is a
//! duplicate). Checks: no torn message, no duplicate, nothing received
//! that was never sent, every message whose send returned `Ok` received
//! except at most as many as the queue counted lost (at most one per
//! receiver kill), the queue's counts at zero after the drain, no stall
//! of 5 s, and fresh handles working afterwards.
//!
//! `IPCRING_QUEUE_SOAK_SECS` changes the kill phase (default 15 s).

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{ChildGuard, Cleanup, child_role, spawn_child, unique_posix};
use ipcring::channel::ChannelOptions;
use ipcring::channel::queue::{Queue, QueueConfig, QueueRecvError, Select};
use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment};

const SENDERS: usize = 3;
const RECEIVERS: usize = 3;
const MAX_INCARNATIONS: usize = 512;
const MAX_SEQ: u64 = 1 << 15;
const HEADER: usize = 16;
const BITMAP: usize = HEADER + 2 * MAX_INCARNATIONS;
const LEDGER_WORDS: usize = BITMAP + MAX_INCARNATIONS * (MAX_SEQ as usize / 64);
const STOP: usize = 0;
const TORN: usize = 1;
const DUPLICATES: usize = 2;
const RECEIVED: usize = 3;
const SENDERS_DONE: usize = 4;

struct Ledger(Segment);

impl Ledger {
    fn word(&self, index: usize) -> &AtomicU64 {
        self.0.view::<AtomicU64>(index * 8).unwrap()
    }
    fn attempting(&self, id: usize) -> &AtomicU64 {
        self.word(HEADER + 2 * id)
    }
    fn done(&self, id: usize) -> &AtomicU64 {
        self.word(HEADER + 2 * id + 1)
    }
    /// Marks message (id, seq) received; false if it already was.
    fn mark(&self, id: usize, seq: u64) -> bool {
        let bit = seq as usize;
        let word = self.word(BITMAP + id * (MAX_SEQ as usize / 64) + bit / 64);
        word.fetch_or(1 << (bit % 64), Relaxed) & (1 << (bit % 64)) == 0
    }
    fn received(&self, id: usize, seq: u64) -> bool {
        let bit = seq as usize;
        let word = self.word(BITMAP + id * (MAX_SEQ as usize / 64) + bit / 64);
        word.load(Relaxed) & (1 << (bit % 64)) != 0
    }
}

fn env_address(name: &str) -> Address {
    std::env::var(name).unwrap().parse().unwrap()
}

/// A cheap deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn body_byte(id: usize, seq: u64, i: usize) -> u8 {
    (id as u64)
        .wrapping_mul(131)
        .wrapping_add(seq * 31 + i as u64 * 7) as u8
}

fn message(id: usize, seq: u64, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + len);
    m.extend_from_slice(&(id as u64).to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((0..len).map(|i| body_byte(id, seq, i)));
    m
}

/// (id, seq) if the message is whole.
fn verify(m: &[u8]) -> Option<(usize, u64)> {
    let id = u64::from_le_bytes(m.get(..8)?.try_into().ok()?) as usize;
    let seq = u64::from_le_bytes(m.get(8..16)?.try_into().ok()?);
    if id >= MAX_INCARNATIONS || seq == 0 || seq >= MAX_SEQ {
        return None;
    }
    let body_ok = m[HEADER..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == body_byte(id, seq, i));
    body_ok.then_some((id, seq))
}

fn sender(ledger: &Ledger, id: usize) {
    let mut q = Queue::open(&env_address("QUEUE")).unwrap();
    let mut rng = Rng(0x9e37_79b9 ^ (id as u64 + 1).wrapping_mul(0x1234_5678_9abc));
    for seq in 1..MAX_SEQ {
        if ledger.word(STOP).load(Relaxed) != 0 {
            return;
        }
        let len = (rng.next() % 49) as usize;
        let payload = message(id, seq, len);
        let (mtype, priority) = (1 + seq % 5, (seq % 32) as u32);
        ledger.attempting(id).store(seq, Relaxed);
        let sent = if rng.next() % 2 == 0 {
            q.send_timeout(&payload, mtype, priority, Duration::from_secs(1))
        } else {
            match q.loan_timeout(payload.len(), Duration::from_secs(1)) {
                Ok(mut loan) => {
                    loan.write_at(0, &payload[..payload.len() / 2]);
                    loan.write_at(payload.len() / 2, &payload[payload.len() / 2..]);
                    loan.send(mtype, priority)
                }
                Err(e) => Err(e),
            }
        };
        match sent {
            Ok(()) => ledger.done(id).store(seq, Relaxed),
            // Receivers being killed and replaced: try again.
            Err(ipcring::channel::queue::QueueSendError::Timeout) => {
                ledger.attempting(id).store(0, Relaxed);
                return sender_retry(ledger, id, seq, q, rng);
            }
            Err(e) => panic!("sender {id}: {e}"),
        }
    }
}

/// Keeps sending from `seq` after a timeout (kept apart so the common
/// path stays a plain loop).
fn sender_retry(ledger: &Ledger, id: usize, seq: u64, mut q: Queue, mut rng: Rng) {
    let mut seq = seq;
    while seq < MAX_SEQ && ledger.word(STOP).load(Relaxed) == 0 {
        let payload = message(id, seq, (rng.next() % 49) as usize);
        ledger.attempting(id).store(seq, Relaxed);
        if q.send_timeout(
            &payload,
            1 + seq % 5,
            (seq % 32) as u32,
            Duration::from_secs(1),
        )
        .is_ok()
        {
            ledger.done(id).store(seq, Relaxed);
            seq += 1;
        }
    }
}

fn receiver(ledger: &Ledger, id: u64) {
    let mut q = Queue::open(&env_address("QUEUE")).unwrap();
    let mut rng = Rng(0x51ed_270b ^ (id + 7).wrapping_mul(0x2545_f491_4f6c_dd1d));
    loop {
        let select = match rng.next() % 8 {
            0 => Select::TypeAtMost(3),
            1 => Select::ExceptType(2),
            2 => Select::Type(1 + rng.next() % 5),
            _ => Select::Any,
        };
        let timed_out = match q.recv_in_place_timeout(select, Duration::from_millis(50)) {
            Ok(m) => {
                match verify(&m.to_vec()) {
                    Some((sender, seq)) => {
                        if !ledger.mark(sender, seq) {
                            ledger.word(DUPLICATES).fetch_add(1, Relaxed);
                        }
                    }
                    None => {
                        ledger.word(TORN).fetch_add(1, Relaxed);
                    }
                }
                ledger.word(RECEIVED).fetch_add(1, Relaxed);
                drop(m);
                false
            }
            Err(QueueRecvError::Timeout) => true,
            Err(e) => panic!("receiver: {e}"),
        };
        if timed_out && ledger.word(SENDERS_DONE).load(Relaxed) != 0 && q.stats().count == 0 {
            return;
        }
    }
}

#[test]
fn random_kills_tear_duplicate_lose_nor_wedge_nothing() {
    if let Some(role) = child_role() {
        let options = OpenOptions::new().register(false);
        let ledger = Ledger(Segment::open(&env_address("LEDGER"), &options).unwrap());
        let id: usize = std::env::var("ID").unwrap().parse().unwrap();
        match role.as_str() {
            "sender" => sender(&ledger, id),
            "receiver" => receiver(&ledger, id as u64),
            other => panic!("{other}"),
        }
        return;
    }
    let secs: u64 = std::env::var("IPCRING_QUEUE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let address = unique_posix("q-soak");
    let ledger_address = unique_posix("q-soak-ledger");
    let _c1 = Cleanup(address.clone());
    let _c2 = Cleanup(ledger_address.clone());
    let config = QueueConfig::new(24, 64).max_bytes(24 * 40);
    let queue = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
    let ledger = Ledger(
        Segment::create(
            &ledger_address,
            &CreateOptions::new(LEDGER_WORDS * 8).register(false),
        )
        .unwrap(),
    );
    let seed = std::env::var("IPCRING_SOAK_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    eprintln!("queue soak seed 0x{seed:x}");
    let mut rng = Rng(seed);
    let mut next_id = 0usize;
    let mut spawn = |role: &str| {
        let id = next_id;
        next_id += 1;
        assert!(id < MAX_INCARNATIONS, "too many incarnations");
        let child = spawn_child(
            "random_kills_tear_duplicate_lose_nor_wedge_nothing",
            role,
            &[
                ("QUEUE", address.to_string()),
                ("LEDGER", ledger_address.to_string()),
                ("ID", id.to_string()),
            ],
        );
        (id, child)
    };
    let mut senders: Vec<(usize, ChildGuard)> = (0..SENDERS).map(|_| spawn("sender")).collect();
    let mut receivers: Vec<(usize, ChildGuard)> =
        (0..RECEIVERS).map(|_| spawn("receiver")).collect();
    let mut killed_senders = Vec::new();
    let mut receiver_kills = 0u64;
    let started = Instant::now();
    let mut last_progress = (0u64, Instant::now());
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 120));
        let victim_is_sender = rng.next() % 2 == 0;
        let list = if victim_is_sender {
            &mut senders
        } else {
            &mut receivers
        };
        let at = (rng.next() % list.len() as u64) as usize;
        let (id, mut child) = list.swap_remove(at);
        let _ = child.child().kill();
        child.wait_code(Duration::from_secs(10));
        if victim_is_sender {
            killed_senders.push(id);
            let fresh = spawn("sender");
            senders.push(fresh);
        } else {
            receiver_kills += 1;
            let fresh = spawn("receiver");
            receivers.push(fresh);
        }
        let received = ledger.word(RECEIVED).load(Relaxed);
        if received != last_progress.0 {
            last_progress = (received, Instant::now());
        }
        assert!(
            last_progress.1.elapsed() < Duration::from_secs(5),
            "stalled: nothing received for 5 s (seed 0x{seed:x}, stats {:?})",
            queue.stats()
        );
    }
    // Stop the senders, let the receivers drain.
    ledger.word(STOP).store(1, Relaxed);
    for (_, child) in senders.drain(..) {
        child.wait_success(Duration::from_secs(20));
    }
    ledger.word(SENDERS_DONE).store(1, Relaxed);
    for (_, child) in receivers.drain(..) {
        child.wait_success(Duration::from_secs(20));
    }
    let stats = queue.stats();
    assert_eq!((stats.count, stats.bytes), (0, 0), "{stats:?}");
    let (torn, duplicates) = (
        ledger.word(TORN).load(Relaxed),
        ledger.word(DUPLICATES).load(Relaxed),
    );
    assert_eq!((torn, duplicates), (0, 0), "seed 0x{seed:x}");
    let mut missing = 0u64;
    let mut delivered_in_flight = 0u64;
    for id in 0..next_id {
        let done = ledger.done(id).load(Relaxed);
        let attempting = ledger.attempting(id).load(Relaxed);
        for seq in 1..=done {
            if !ledger.received(id, seq) {
                missing += 1;
            }
        }
        // Nothing beyond what the sender was sending when it stopped.
        let beyond = attempting.max(done) + 1;
        for seq in beyond..MAX_SEQ.min(beyond + 64) {
            assert!(
                !ledger.received(id, seq),
                "{id}/{seq} received but never sent (seed 0x{seed:x})"
            );
        }
        if attempting > done && ledger.received(id, attempting) {
            delivered_in_flight += 1;
        }
    }
    eprintln!(
        "queue soak: {} s, {} sender kills, {} receiver kills, {} received, {} sent-not-returned delivered, \
         {} missing, queue counted {} lost and {} repairs",
        secs,
        killed_senders.len(),
        receiver_kills,
        ledger.word(RECEIVED).load(Relaxed),
        delivered_in_flight,
        missing,
        stats.losses,
        stats.repairs
    );
    assert!(
        missing <= stats.losses,
        "{missing} missing, {} counted lost (seed 0x{seed:x})",
        stats.losses
    );
    assert!(
        stats.losses <= receiver_kills,
        "more losses than receiver kills"
    );
    assert!(
        ledger.word(RECEIVED).load(Relaxed) > 100,
        "too little traffic to mean anything"
    );
    // Fresh handles work afterwards.
    let mut a = Queue::open(&address).unwrap();
    let mut b = Queue::open(&address).unwrap();
    a.send(b"after", 1, 0).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        b.recv_timeout(Select::Any, &mut buf, Duration::from_secs(5))
            .unwrap()
            .len,
        5
    );
}
