//! Random-kill soak of a byte stream's many-writer path: writer processes
//! are SIGKILLed at random moments and replaced, for a few seconds, while
//! each writes sequence-numbered, checksummed frames of random length (at
//! most `ATOMIC_WRITE` bytes, one `write` call each) and one reader in
//! this process reads the stream as a whole.
//!
//! Each writer incarnation records in a ledger segment the sequence number
//! it is writing before the call and the last one whose `write` returned.
//! Checks: every frame is whole (a write is never interleaved with
//! another writer's bytes, nor cut short by a kill), each incarnation's
//! frames arrive in order without gaps, every write that returned is read,
//! at most the one write a killed writer was in arrives beyond that, the
//! stream ends (`Ok(0)`) once the writers are gone, and nothing stalls for
//! 5 s.
//!
//! `IPCRING_STREAM_SOAK_SECS` changes the kill phase (default 4 s).

mod common;

use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{ChildGuard, Cleanup, child_role, spawn_child, unique_posix};
use ipcring::channel::ChannelOptions;
use ipcring::channel::stream::{ATOMIC_WRITE, Reader, Writer};
use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment};

const WRITERS: usize = 3;
const MAX_INCARNATIONS: usize = 1024;
const MAGIC: u32 = 0x5354_524d;
/// magic, incarnation, sequence, payload length, then the payload, then a
/// checksum of all of it.
const FRAME_HEADER: usize = 16;
const STOP: usize = 0;

struct Ledger(Segment);

impl Ledger {
    fn word(&self, index: usize) -> &AtomicU64 {
        self.0.view::<AtomicU64>(index * 8).unwrap()
    }
    fn attempting(&self, id: usize) -> &AtomicU64 {
        self.word(8 + 2 * id)
    }
    fn done(&self, id: usize) -> &AtomicU64 {
        self.word(8 + 2 * id + 1)
    }
}

fn env_address(name: &str) -> Address {
    std::env::var(name).unwrap().parse().unwrap()
}

fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn frame(id: usize, seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_HEADER + len + 4);
    f.extend_from_slice(&MAGIC.to_le_bytes());
    f.extend_from_slice(&(id as u32).to_le_bytes());
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&(len as u32).to_le_bytes());
    f.extend((0..len).map(|i| (id as u32 * 131 + seq * 31 + i as u32 * 7) as u8));
    let sum = checksum(&f);
    f.extend_from_slice(&sum.to_le_bytes());
    f
}

fn writer(ledger: &Ledger, id: usize) {
    let mut stream = Writer::open(&env_address("STREAM")).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (id as u64 + 1).wrapping_mul(0x2545_f491);
    for seq in 1u32.. {
        if ledger.word(STOP).load(Relaxed) != 0 {
            return;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let len = (rng % (ATOMIC_WRITE - FRAME_HEADER - 4) as u64) as usize;
        let f = frame(id, seq, len);
        ledger.attempting(id).store(u64::from(seq), Relaxed);
        // One call: a write of at most ATOMIC_WRITE bytes goes whole.
        let n = stream.write(&f).unwrap();
        assert_eq!(n, f.len(), "a blocking atomic write goes whole");
        ledger.done(id).store(u64::from(seq), Relaxed);
    }
}

#[test]
fn killed_writers_never_tear_or_interleave_a_write() {
    if let Some(role) = child_role() {
        let ledger = Ledger(Segment::open(&env_address("LEDGER"), &OpenOptions::new()).unwrap());
        writer(&ledger, role.parse().unwrap());
        return;
    }
    let secs = std::env::var("IPCRING_STREAM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let address = unique_posix("stream-soak");
    let _cleanup = Cleanup(address.clone());
    let ledger_address = unique_posix("stream-soak-ledger");
    let _ledger_cleanup = Cleanup(ledger_address.clone());
    let ledger = Ledger(
        Segment::create(
            &ledger_address,
            &CreateOptions::new(8 * (8 + 2 * MAX_INCARNATIONS)),
        )
        .unwrap(),
    );
    let mut reader = Reader::create(&address, 1 << 16, &ChannelOptions::new()).unwrap();
    reader.set_timeout(Some(Duration::from_secs(5))).unwrap();
    let spawn = |id: usize| {
        spawn_child(
            "killed_writers_never_tear_or_interleave_a_write",
            &id.to_string(),
            &[
                ("STREAM", address.to_string()),
                ("LEDGER", ledger_address.to_string()),
            ],
        )
    };

    // The reader runs on its own thread and returns, per incarnation, the
    // last sequence number it read.
    let reading = std::thread::spawn(move || {
        let mut last = vec![0u32; MAX_INCARNATIONS];
        let mut frames = 0u64;
        let mut header = [0u8; FRAME_HEADER];
        loop {
            // EOF exactly at a frame boundary ends the stream.
            if reader.fill_buf().expect("no stall of 5 s").is_empty() {
                return (last, frames);
            }
            reader.read_exact(&mut header).expect("a frame's header");
            let word = |i: usize| u32::from_le_bytes(header[4 * i..4 * i + 4].try_into().unwrap());
            assert_eq!(word(0), MAGIC, "frames are whole and never interleaved");
            let (id, seq, len) = (word(1) as usize, word(2), word(3) as usize);
            assert!(id < MAX_INCARNATIONS && len < ATOMIC_WRITE, "a sane header");
            let mut rest = vec![0u8; len + 4];
            reader.read_exact(&mut rest).expect("a frame's body");
            let mut whole = header.to_vec();
            whole.extend_from_slice(&rest[..len]);
            let sum = u32::from_le_bytes(rest[len..].try_into().unwrap());
            assert_eq!(checksum(&whole), sum, "frame {id}/{seq} whole");
            assert_eq!(seq, last[id] + 1, "incarnation {id} in order, no gap");
            last[id] = seq;
            frames += 1;
        }
    });

    let mut writers: Vec<(usize, ChildGuard)> = (0..WRITERS).map(|id| (id, spawn(id))).collect();
    let mut next_id = WRITERS;
    let mut kills = 0;
    let mut rng = 0x51ed_270b_u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) && next_id < MAX_INCARNATIONS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(5 + rng % 40));
        let victim = (rng >> 8) as usize % writers.len();
        let _ = writers[victim].1.child().kill();
        let _ = writers[victim].1.wait_code(Duration::from_secs(10));
        kills += 1;
        writers[victim] = (next_id, spawn(next_id));
        next_id += 1;
    }
    ledger.word(STOP).store(1, Relaxed);
    for (_, child) in writers {
        child.wait_success(Duration::from_secs(30));
    }
    let (last, frames) = reading.join().expect("the reader checked every frame");
    for (id, &got) in last.iter().enumerate().take(next_id) {
        let done = ledger.done(id).load(Relaxed) as u32;
        let attempting = ledger.attempting(id).load(Relaxed) as u32;
        assert!(
            got == done || (got == attempting && attempting == done + 1),
            "incarnation {id}: read up to {got}, its writes returned up to {done} (was writing {attempting})"
        );
    }
    eprintln!("stream soak: {kills} writer kills, {frames} frames, {next_id} incarnations");
    assert!(kills > 0 && frames > 0);
}
