//! Replays a ring image taken mid-operation and then damaged, and runs
//! every ring operation on it: each must return a value or a typed error,
//! never panic, hang or touch memory outside the region.
//!
//! Shared by the `segment_image` fuzz target and `tests/fuzz_regressions.rs`,
//! which replays the inputs the fuzzer found without needing the fuzzer.
//! The library must be built with its `failpoints` feature.
//!
//! The input, byte by byte (missing bytes read as zero):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | ring kind (`% 4`): SPSC of `[u8; 3]`, MPMC of `u32`, record ring with one producer, with many |
//! | 1 | capacity: 1 to 8 slots, or a 64 to 512-byte record buffer |
//! | 2 | waits: strategy (bits 0-1), timeout (bits 2-3), `stop` after N polls (bits 4-7, 0 = never) |
//! | 3 | script length, 0 to 16 steps |
//! | 4.. | the script: two bytes per step, operation and argument |
//! | then 16 | two claim records to repair with, little-endian |
//! | rest | damage, four bytes per change: area, offset low, offset high, byte |
//!
//! The script runs on fresh heap memory with up to four claimers. Some
//! steps stop a claimer part-way, as if its process died there: the step
//! runs on a thread of its own with a failpoint armed, and the claimer's
//! handle is then forgotten (no drop runs), leaving its claim half done.
//! Every handle is forgotten at the end of the script, so the image is what
//! a set of killed processes would leave. The damage is then applied, and
//! fresh handles attach and run every operation, a bounded number of times.
//! Changes marked "late" are applied only once the fresh handles are
//! attached: a peer may scribble at any time, and `attach` validates only
//! what it sees then.

// Dead claimers' handles are forgotten even where the type has no drop
// today: it says that no drop may run, and stays right if one is added.
#![allow(clippy::forget_non_drop)]

use std::mem;
use std::time::{Duration, Instant};

use ipcring::failpoint::abandon_at;
use ipcring::ring::mpmc::{MpmcHandle, MpmcRing};
use ipcring::ring::record::{ProducerMode, RecordConsumer, RecordProducer, RecordRing};
use ipcring::ring::spsc::{Consumer, Producer, SpscRing};
use ipcring::ring::{HeapRegion, MAX_CLAIMERS, Region, Side, ring_stats};
use ipcring::sync::{Deadline, WaitStrategy};

/// SPSC items: an odd size, so slots are neither word-sized nor aligned.
type SpscItem = [u8; 3];
/// MPMC items: smaller than the slot's sequence word.
type MpmcItem = u32;

/// Claimers the script uses (ids 0 to 3).
const SCRIPT_CLAIMERS: usize = 4;
/// Claimer ids the fresh handles take after the damage.
const FRESH_IDS: [u8; 2] = [29, 30];
/// Operations on the damaged image, at most.
const MAX_OPERATIONS: usize = 64;
/// A wait that returns this long after its deadline hangs.
const OVERRUN: Duration = Duration::from_secs(2);

/// Offsets every ring shares (see `ring::RingHeader`): five cache-padded
/// blocks of 128 bytes, then (MPMC and record ring) the claim table.
const LINE: usize = 128;
const HEADER_LINES: usize = 5;
const CLAIMS_OFFSET: usize = HEADER_LINES * LINE;
/// The claim table: a counters line, then 32 producer and 32 consumer lines.
const CLAIM_LINES: usize = 1 + 32 + 32;
const CLAIMS_END: usize = CLAIMS_OFFSET + CLAIM_LINES * LINE;

/// Reads the input front to back; past its end every byte is zero.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }

    fn u64(&mut self) -> u64 {
        let mut word = [0; 8];
        let taken = self.take(8);
        word[..taken.len()].copy_from_slice(taken);
        u64::from_le_bytes(word)
    }
}

/// The ring kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Spsc,
    Mpmc,
    Records(ProducerMode),
}

/// How the blocking waits wait.
#[derive(Clone, Copy, Debug)]
struct Waits {
    strategy: WaitStrategy,
    timeout: Duration,
    /// `stop()` returns true from its N-th call on; 0: never.
    stop_after: u32,
}

impl Waits {
    fn new(byte: u8) -> Waits {
        let strategy = match byte & 3 {
            0 => WaitStrategy::BusySpin,
            1 => WaitStrategy::SpinThenPark {
                spins: 16,
                yields: 1,
            },
            2 => WaitStrategy::Park,
            _ => WaitStrategy::default(),
        };
        // A few milliseconds at most, so that the fuzzer keeps its pace;
        // zero and 100 us reach the deadline checks in every phase of a wait.
        let timeout = [0, 100, 1_000, 3_000][usize::from(byte >> 2 & 3)];
        Waits {
            strategy,
            timeout: Duration::from_micros(timeout),
            stop_after: u32::from(byte >> 4),
        }
    }

    /// Runs a blocking wait with a deadline `timeout` from now and checks
    /// that it returns by then, give or take scheduling.
    fn run(
        &self,
        wait: impl FnOnce(WaitStrategy, Option<Deadline>, &mut dyn FnMut() -> bool) -> bool,
    ) {
        let mut calls = 0;
        let stop_after = self.stop_after;
        let mut stop = move || {
            calls += 1;
            stop_after != 0 && calls >= stop_after
        };
        let started = Instant::now();
        let _ready = wait(
            self.strategy,
            Some(Deadline::after(self.timeout)),
            &mut stop,
        );
        let took = started.elapsed();
        assert!(
            took <= self.timeout + OVERRUN,
            "a wait with a {:?} deadline took {took:?}",
            self.timeout
        );
    }
}

/// Replays one input.
pub fn replay(input: &[u8]) {
    let mut input = Input { bytes: input };
    let kind = match input.byte() % 4 {
        0 => Kind::Spsc,
        1 => Kind::Mpmc,
        2 => Kind::Records(ProducerMode::Single),
        _ => Kind::Records(ProducerMode::Many),
    };
    let size = input.byte();
    let waits = Waits::new(input.byte());
    let steps = usize::from(input.byte() % 17);
    let script = input.take(2 * steps);
    let records = [input.u64(), input.u64()];
    let damage = input.bytes;
    match kind {
        Kind::Spsc => {
            let capacity = 1 + usize::from(size % 8);
            let heap =
                HeapRegion::new(SpscRing::<SpscItem>::required_size(capacity).unwrap()).unwrap();
            // SAFETY: fresh memory, no handle yet.
            unsafe { SpscRing::<SpscItem>::init(heap.region(), capacity).unwrap() };
            let slots = heap.region().len() - capacity * mem::size_of::<SpscItem>();
            spsc_script(heap.region(), script);
            apply_damage(heap.region(), slots, false, damage, false);
            let late = || apply_damage(heap.region(), slots, false, damage, true);
            spsc_probe(heap.region(), slots, script, &waits, late);
        }
        Kind::Mpmc => {
            let capacity = 1 + usize::from(size % 8);
            let heap =
                HeapRegion::new(MpmcRing::<MpmcItem>::required_size(capacity).unwrap()).unwrap();
            // SAFETY: fresh memory, no handle yet.
            unsafe { MpmcRing::<MpmcItem>::init(heap.region(), capacity).unwrap() };
            mpmc_script(heap.region(), script);
            apply_damage(heap.region(), CLAIMS_END, true, damage, false);
            let late = || apply_damage(heap.region(), CLAIMS_END, true, damage, true);
            mpmc_probe(heap.region(), script, records, &waits, late);
        }
        Kind::Records(mode) => {
            let capacity = 64 << (size % 4);
            let heap = HeapRegion::new(RecordRing::required_size(capacity).unwrap()).unwrap();
            // SAFETY: fresh memory, no handle yet.
            unsafe { RecordRing::init(heap.region(), capacity, mode).unwrap() };
            record_script(heap.region(), mode, script);
            apply_damage(heap.region(), CLAIMS_END, true, damage, false);
            let late = || apply_damage(heap.region(), CLAIMS_END, true, damage, true);
            record_probe(heap.region(), mode, script, records, &waits, late);
        }
    }
}

/// Changes bytes of the region: the changes that are `late` or not. Each
/// change is four bytes: an area (bits 0-1; bit 6 set: late; bit 7 set:
/// store the byte rather than xor it in), a 16-bit offset within the area,
/// and the byte. The areas are the ring header's words, the claim table's
/// words (rings that have one), the slots or buffer, and the whole region.
fn apply_damage(region: Region, payload: usize, has_claims: bool, damage: &[u8], late: bool) {
    let changes = damage
        .chunks_exact(4)
        .filter(|change| (change[0] & 0x40 != 0) == late);
    for change in changes {
        let (area, offset, byte) = (
            change[0],
            usize::from(u16::from_le_bytes([change[1], change[2]])),
            change[3],
        );
        let at = match area & 3 {
            0 => {
                // The first word of each header block, or the whole info
                // block (magic, capacity, slot size and alignment, flags).
                let line = offset % HEADER_LINES;
                line * LINE + (offset >> 8) % if line == 0 { 40 } else { 8 }
            }
            1 if has_claims => {
                // The repair counters, or a claim record.
                let line = offset % CLAIM_LINES;
                CLAIMS_OFFSET + line * LINE + (offset >> 8) % if line == 0 { 16 } else { 8 }
            }
            1 | 2 => payload + offset % (region.len() - payload),
            _ => offset % region.len(),
        };
        // SAFETY: `at` is inside the region (every arm reduces it modulo a
        // length that ends within it). Handles reach the region only
        // through atomics and raw copies, and none is in the middle of an
        // operation while the image is changed.
        unsafe {
            let target = region.as_ptr().add(at);
            if area & 0x80 != 0 {
                target.write(byte);
            } else {
                target.write(target.read() ^ byte);
            }
        }
    }
}

/// The script's steps as (operation, argument) pairs.
fn steps(script: &[u8]) -> impl Iterator<Item = (u8, u8)> + '_ {
    script.chunks_exact(2).map(|step| (step[0], step[1]))
}

/// Runs `operation` on a thread of its own that dies at failpoint `point`:
/// the thread's next pass through it returns at once. The thread owns its
/// handles, and forgets them, so no drop undoes what it left half-done.
///
/// Joined, not scoped: `join` returns only once the thread has exited, its
/// thread-local destructors included, where a scope ends when the closure
/// does; the leak checker would otherwise catch those destructors midway.
fn die_at(point: &'static str, operation: impl FnOnce() + Send + 'static) {
    let thread = std::thread::spawn(move || {
        abandon_at(point);
        operation();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn spsc_script(region: Region, script: &[u8]) {
    let mut producer: Option<Producer<SpscItem>> = None;
    let mut consumer: Option<Consumer<SpscItem>> = None;
    for (operation, argument) in steps(script) {
        let n = usize::from(argument % 4) + 1;
        let item = [argument; 3];
        if operation % 8 < 4 && producer.is_none() {
            // SAFETY: the region outlives the handle; the previous producer
            // is gone (forgotten), so this is the only one.
            producer = unsafe { Producer::attach(region) }.ok();
        }
        if operation % 8 >= 4 && consumer.is_none() {
            // SAFETY: as for the producer.
            consumer = unsafe { Consumer::attach(region) }.ok();
        }
        match operation % 8 {
            0 => {
                if let Some(tx) = &mut producer {
                    let _ = tx.try_push(item);
                }
            }
            1 => {
                if let Some(tx) = &mut producer {
                    let _ = tx.push_slice(&[item; 4][..n]);
                }
            }
            2 | 3 => {
                if let Some(mut tx) = producer.take() {
                    if let Ok(mut chunk) = tx.write_chunk_up_to(n) {
                        chunk.fill_from_slice(&[item; 4]);
                        if operation % 8 == 2 {
                            chunk.commit(usize::from(argument >> 4));
                        } else {
                            // Dies with its slots written, not published.
                            mem::forget(chunk);
                            mem::forget(tx);
                            continue;
                        }
                    }
                    producer = Some(tx);
                }
            }
            4 => {
                if let Some(rx) = &mut consumer {
                    let _ = rx.try_pop();
                }
            }
            5 => {
                if let Some(rx) = &mut consumer {
                    let _ = rx.pop_into(&mut [[0; 3]; 4][..n]);
                }
            }
            _ => {
                if let Some(mut rx) = consumer.take() {
                    if let Ok(chunk) = rx.read_chunk_up_to(n) {
                        let _ = chunk.get(0);
                        if operation % 8 == 6 {
                            chunk.commit(usize::from(argument >> 4));
                        } else {
                            // Dies holding items it read but did not release.
                            mem::forget(chunk);
                            mem::forget(rx);
                            continue;
                        }
                    }
                    consumer = Some(rx);
                }
            }
        }
    }
    mem::forget(producer);
    mem::forget(consumer);
}

/// Where an MPMC claimer may die, pushing or popping.
const MPMC_PUSH_POINTS: [&str; 3] = [
    "mpmc.push.announced",
    "mpmc.push.claimed",
    "mpmc.push.written",
];
const MPMC_POP_POINTS: [&str; 3] = ["mpmc.pop.announced", "mpmc.pop.claimed", "mpmc.pop.read"];

/// Attaches an MPMC handle; the caller keeps ids unique among live handles.
fn mpmc_handle(region: Region, id: u8) -> Option<MpmcHandle<MpmcItem>> {
    // SAFETY: the region outlives every handle, and the callers never let
    // two live handles share an id.
    unsafe { MpmcHandle::attach(region, id) }.ok()
}

fn mpmc_script(region: Region, script: &[u8]) {
    let mut claimers: [Option<MpmcHandle<MpmcItem>>; SCRIPT_CLAIMERS] = Default::default();
    let mut dead = [false; SCRIPT_CLAIMERS];
    for (operation, argument) in steps(script) {
        let index = usize::from(argument) % SCRIPT_CLAIMERS;
        let id = index as u8;
        let operation = operation % 6;
        if operation == 5 {
            // A survivor repairs the dead claimer's claims, as the channel's
            // reaper does; its id may then be used again.
            if dead[index] {
                if let Some(repairer) = mpmc_handle(region, FRESH_IDS[1]) {
                    for side in [Side::Producer, Side::Consumer] {
                        repairer.repair(side, id, repairer.claim_record(side, id));
                    }
                }
                dead[index] = false;
            }
            continue;
        }
        if dead[index] {
            continue;
        }
        if claimers[index].is_none() {
            claimers[index] = mpmc_handle(region, id);
        }
        let value = MpmcItem::from(argument) * 0x0101_0101;
        match operation {
            0 => {
                if let Some(handle) = &claimers[index] {
                    for _ in 0..=argument >> 6 {
                        let _ = handle.try_push(value);
                    }
                }
            }
            1 => {
                if let Some(handle) = &claimers[index] {
                    for _ in 0..=argument >> 6 {
                        let _ = handle.try_pop();
                    }
                }
            }
            2 | 3 => {
                let points = if operation == 2 {
                    MPMC_PUSH_POINTS
                } else {
                    MPMC_POP_POINTS
                };
                let point = points[usize::from(argument >> 2) % 3];
                if let Some(handle) = claimers[index].take() {
                    die_at(point, move || {
                        if operation == 2 {
                            let _ = handle.try_push(value);
                        } else {
                            let _ = handle.try_pop();
                        }
                        mem::forget(handle);
                    });
                    dead[index] = true;
                }
            }
            _ => {
                // Dies between operations: nothing is half done.
                mem::forget(claimers[index].take());
                dead[index] = true;
            }
        }
    }
    mem::forget(claimers);
}

/// Where a record producer may die, and where the consumer may.
const RECORD_PRODUCER_POINTS: [&str; 5] = [
    "record.reserve.announced",
    "record.reserve.claimed",
    "record.reserve.padded",
    "record.write",
    "record.commit",
];
const RECORD_CONSUMER_POINTS: [&str; 3] = [
    "record.consume",
    "record.release.marked",
    "record.release.zeroed",
];

fn record_producer(region: Region, id: u8) -> Option<RecordProducer> {
    // SAFETY: the region outlives every handle; with one producer the
    // callers keep at most one live producer, with many they keep ids
    // unique among live producers.
    unsafe { RecordProducer::attach(region, id) }.ok()
}

fn record_consumer(region: Region) -> Option<RecordConsumer> {
    // SAFETY: the region outlives the handle; the callers keep at most one
    // live consumer.
    unsafe { RecordConsumer::attach(region) }.ok()
}

/// A payload length from an argument byte, up to the ring's maximum.
fn payload_len(argument: u8, capacity: usize) -> usize {
    usize::from(argument) % (RecordRing::max_payload(capacity) + 1)
}

fn record_script(region: Region, mode: ProducerMode, script: &[u8]) {
    let capacity = region.len() - CLAIMS_END;
    let mut producers: [Option<RecordProducer>; SCRIPT_CLAIMERS] = Default::default();
    let mut dead = [false; SCRIPT_CLAIMERS];
    let mut consumer: Option<RecordConsumer> = None;
    let mut out = Vec::new();
    for (operation, argument) in steps(script) {
        // One producer: always id 0.
        let index = match mode {
            ProducerMode::Single => 0,
            ProducerMode::Many => usize::from(argument >> 6),
        };
        let id = index as u8;
        let len = payload_len(argument, capacity);
        let payload = vec![argument; len];
        let operation = operation % 8;
        if operation == 7 {
            if dead[index] {
                if mode == ProducerMode::Many {
                    if let Some(repairer) = record_producer(region, FRESH_IDS[1]) {
                        repairer.repair(id, repairer.claim_record(id));
                    }
                }
                dead[index] = false;
            }
            continue;
        }
        if operation == 5 || operation == 6 {
            if consumer.is_none() {
                consumer = record_consumer(region);
            }
            let Some(mut rx) = consumer.take() else {
                continue;
            };
            if operation == 5 {
                let _ = rx.try_receive_into(&mut out);
                let _ = rx.poll();
                consumer = Some(rx);
            } else {
                let point = RECORD_CONSUMER_POINTS[usize::from(argument) % 3];
                die_at(point, move || {
                    let mut out = Vec::new();
                    let _ = rx.try_receive_into(&mut out);
                    mem::forget(rx);
                });
            }
            continue;
        }
        if dead[index] {
            continue;
        }
        if producers[index].is_none() {
            producers[index] = record_producer(region, id);
        }
        let Some(mut tx) = producers[index].take() else {
            continue;
        };
        match operation {
            0 => {
                let _ = tx.try_push(&payload);
            }
            1 => {
                if let Ok(mut grant) = tx.try_reserve(len) {
                    grant.write_at(usize::from(argument % 3), &payload);
                    grant.commit();
                }
            }
            2 => {
                // Dropped uncommitted: published as a skip.
                if let Ok(mut grant) = tx.try_reserve(len) {
                    grant.write_at(0, &payload);
                }
            }
            3 => {
                // Leaked: abandoned at the producer's next reserve.
                if let Ok(grant) = tx.try_reserve(len) {
                    mem::forget(grant);
                }
            }
            _ => {
                let point = RECORD_PRODUCER_POINTS[usize::from(argument) % 5];
                die_at(point, move || {
                    if let Ok(mut grant) = tx.try_reserve(len) {
                        grant.write_at(0, &payload);
                        if point == "record.write" {
                            // Died writing: it never commits.
                            mem::forget(grant);
                        } else {
                            grant.commit();
                        }
                    }
                    mem::forget(tx);
                });
                dead[index] = true;
                continue;
            }
        }
        producers[index] = Some(tx);
    }
    mem::forget(producers);
    mem::forget(consumer);
}

/// Checks that `len` bytes at `ptr` lie within `start..end` of the region.
fn assert_within(region: Region, start: usize, ptr: *const u8, len: usize, what: &str) {
    let base = region.as_ptr() as usize;
    let at = (ptr as usize).wrapping_sub(base);
    assert!(
        at >= start && at.checked_add(len).is_some_and(|end| end <= region.len()),
        "{what}: {len} bytes at offset {at} leave {start}..{}",
        region.len()
    );
}

/// The probe's plan: which operation the i-th step runs, chosen by the
/// script's bytes, so that the fuzzer steers both.
fn plan(script: &[u8], i: usize) -> u8 {
    match script.len() {
        0 => i as u8,
        n => script[i % n].wrapping_add(i as u8),
    }
}

fn spsc_probe(region: Region, slots: usize, script: &[u8], waits: &Waits, late: impl Fn()) {
    // SAFETY: the script's handles are forgotten and never used again, so
    // these are the only producer and consumer.
    let producer = unsafe { Producer::<SpscItem>::attach(region) };
    // SAFETY: as above.
    let consumer = unsafe { Consumer::<SpscItem>::attach(region) };
    late();
    let item_size = mem::size_of::<SpscItem>();
    let (mut producer, mut consumer) = (producer.ok(), consumer.ok());
    // The consumer waits on the image as it is, the producer once it has
    // filled what it could.
    if let Some(rx) = &mut consumer {
        let capacity = rx.capacity();
        if let Ok(ready) = rx.ready_items() {
            assert!(ready <= capacity, "{ready} items ready in {capacity} slots");
        }
        waits.run(|strategy, deadline, stop| rx.wait_for_data(strategy, deadline, stop));
    }
    if let Some(tx) = &mut producer {
        let capacity = tx.capacity();
        if let Ok(free) = tx.free_slots() {
            assert!(free <= capacity, "{free} free slots in {capacity}");
        }
        for i in 0..MAX_OPERATIONS / 2 {
            let n = usize::from(plan(script, i) % 4);
            match plan(script, i) % 4 {
                0 => {
                    if tx.try_push([i as u8; 3]).is_err() {
                        break;
                    }
                }
                1 => {
                    let _ = tx.push_slice(&[[i as u8; 3]; 3][..n]);
                }
                2 => {
                    if let Ok(mut chunk) = tx.write_chunk(n) {
                        assert_eq!(chunk.len(), n);
                        chunk_parts_within(region, slots, chunk.as_raw_parts(), n, item_size);
                        chunk.write(0, [1; 3]);
                        chunk.commit_all();
                    }
                }
                _ => {
                    if let Ok(mut chunk) = tx.write_chunk_up_to(n) {
                        assert!(chunk.len() <= n);
                        let len = chunk.len();
                        chunk_parts_within(region, slots, chunk.as_raw_parts(), len, item_size);
                        chunk.fill_from_slice(&[[2; 3]; 3]);
                        chunk.commit(1);
                    }
                }
            }
        }
        waits.run(|strategy, deadline, stop| {
            tx.wait_for_space(1 + capacity / 2, strategy, deadline, stop)
        });
        tx.wake_consumer();
    }
    if let Some(rx) = &mut consumer {
        for i in 0..MAX_OPERATIONS / 2 {
            let n = usize::from(plan(script, i) % 4);
            match plan(script, i) % 4 {
                0 => {
                    if rx.try_pop().is_err() {
                        break;
                    }
                }
                1 => {
                    let _ = rx.pop_into(&mut [[0; 3]; 3][..n]);
                }
                2 => {
                    if let Ok(chunk) = rx.read_chunk(n) {
                        assert_eq!(chunk.len(), n);
                        let parts = chunk.as_raw_parts().map(|(ptr, len)| (ptr.cast_mut(), len));
                        chunk_parts_within(region, slots, parts, n, item_size);
                        let _ = chunk.get(n.saturating_sub(1));
                        chunk.commit_all();
                    }
                }
                _ => {
                    if let Ok(chunk) = rx.read_chunk_up_to(n) {
                        assert!(chunk.len() <= n);
                        let mut out = [[0; 3]; 3];
                        chunk.copy_to_slice(&mut out);
                        chunk.commit(1);
                    }
                }
            }
        }
        rx.wake_producer();
    }
}

/// Checks a chunk's two runs of slots: `len` slots in all, inside the slots.
fn chunk_parts_within(
    region: Region,
    slots: usize,
    parts: [(*mut SpscItem, usize); 2],
    len: usize,
    item_size: usize,
) {
    assert_eq!(parts[0].1 + parts[1].1, len, "a chunk's runs do not add up");
    for (ptr, n) in parts {
        assert_within(region, slots, ptr.cast(), n * item_size, "chunk");
    }
}

/// Every claimer id, and two no ring has.
fn all_ids() -> impl Iterator<Item = u8> {
    (0..MAX_CLAIMERS as u8).chain([MAX_CLAIMERS as u8, u8::MAX])
}

fn mpmc_repair_all(handle: &MpmcHandle<MpmcItem>, records: [u64; 2]) {
    for side in [Side::Producer, Side::Consumer] {
        for id in all_ids() {
            let current = handle.claim_record(side, id);
            for record in [current, records[0], records[1], current.wrapping_add(1)] {
                let _ = handle.repair(side, id, record);
            }
        }
    }
}

fn mpmc_probe(region: Region, script: &[u8], records: [u64; 2], waits: &Waits, late: impl Fn()) {
    let _ = ring_stats(&region);
    // SAFETY: out-of-range ids are refused before anything is touched.
    assert!(unsafe { MpmcHandle::<MpmcItem>::attach(region, MAX_CLAIMERS as u8) }.is_err());
    let (Some(a), Some(b)) = (
        mpmc_handle(region, FRESH_IDS[0]),
        mpmc_handle(region, FRESH_IDS[1]),
    ) else {
        return;
    };
    late();
    let capacity = a.capacity();
    mpmc_repair_all(&a, records);
    let _ = a.stats();
    assert!(a.len_hint() <= capacity);
    waits.run(|strategy, deadline, stop| a.wait_for_data(strategy, deadline, stop));
    waits.run(|strategy, deadline, stop| b.wait_for_space(strategy, deadline, stop));
    // Fill, drain, then as the plan says.
    let mut operations = 0;
    while operations < MAX_OPERATIONS / 4 && a.try_push(operations as MpmcItem).is_ok() {
        operations += 1;
    }
    while operations < MAX_OPERATIONS / 2 && b.try_pop().is_ok() {
        operations += 1;
    }
    for i in operations..MAX_OPERATIONS {
        let handle = if plan(script, i) & 4 == 0 { &a } else { &b };
        match plan(script, i) % 4 {
            0 | 1 => {
                let _ = handle.try_push(i as MpmcItem);
            }
            2 => {
                let _ = handle.try_pop();
            }
            _ => {
                let _ = handle.repair(Side::Consumer, handle.id() ^ 1, records[i & 1]);
            }
        }
    }
    assert!(b.len_hint() <= capacity);
    mpmc_repair_all(&b, records);
    let _ = b.stats();
    let _ = ring_stats(&region);
    a.wake_all();
}

fn record_repair_all(producer: &RecordProducer, records: [u64; 2]) {
    for id in all_ids() {
        let current = producer.claim_record(id);
        for record in [current, records[0], records[1], current ^ 1 << 31] {
            let _ = producer.repair(id, record);
        }
    }
}

fn record_probe(
    region: Region,
    mode: ProducerMode,
    script: &[u8],
    records: [u64; 2],
    waits: &Waits,
    late: impl Fn(),
) {
    let _ = ring_stats(&region);
    let capacity = region.len() - CLAIMS_END;
    let max_payload = RecordRing::max_payload(capacity);
    let mut producers: Vec<RecordProducer> = match mode {
        ProducerMode::Single => record_producer(region, 0).into_iter().collect(),
        ProducerMode::Many => FRESH_IDS
            .iter()
            .filter_map(|&id| record_producer(region, id))
            .collect(),
    };
    let mut consumer = record_consumer(region);
    late();
    if let Some(tx) = producers.first_mut() {
        assert!(tx.max_payload() <= max_payload);
        record_repair_all(tx, records);
        let _ = tx.stats();
        let len = payload_len(plan(script, 0), capacity);
        waits.run(|strategy, deadline, stop| tx.wait_for_space(len, strategy, deadline, stop));
    }
    if let Some(rx) = &mut consumer {
        waits.run(|strategy, deadline, stop| rx.wait_for_data(strategy, deadline, stop));
    }
    let mut out = Vec::new();
    for i in 0..MAX_OPERATIONS {
        let step = plan(script, i);
        let len = payload_len(step.wrapping_mul(7), capacity);
        let count = producers.len();
        // Producing steps first, then mixed, so the ring fills and drains.
        let produce = if i < MAX_OPERATIONS / 4 {
            true
        } else {
            step & 8 == 0
        };
        if produce && count > 0 {
            let tx = &mut producers[i % count];
            match step % 5 {
                0 | 1 => {
                    let _ = tx.try_push(&vec![step; len]);
                }
                2 => {
                    if let Ok(mut grant) = tx.try_reserve(len) {
                        assert_eq!(grant.len(), len);
                        let ptr = grant.as_mut_ptr();
                        assert_within(region, CLAIMS_END, ptr, len, "grant");
                        grant.write_at(len / 2, &[step; 9]);
                        grant.commit();
                    }
                }
                3 => {
                    if let Ok(grant) = tx.try_reserve(len) {
                        if step & 16 == 0 {
                            drop(grant);
                        } else {
                            mem::forget(grant);
                        }
                    }
                }
                _ => {
                    let _ = tx.try_reserve(max_payload + 1 + usize::from(step));
                }
            }
        } else if let Some(rx) = &mut consumer {
            match step % 3 {
                0 => {
                    if let Ok(view) = rx.try_receive() {
                        let len = view.len();
                        assert!(
                            len <= max_payload,
                            "a {len}-byte record exceeds {max_payload}"
                        );
                        assert_within(region, CLAIMS_END, view.as_ptr(), len, "record");
                        assert_eq!(view.to_vec().len(), len);
                        let mut tail = [0; 5];
                        view.read_at(len.saturating_sub(3), &mut tail);
                    }
                }
                1 => {
                    if let Ok(len) = rx.try_receive_into(&mut out) {
                        assert_eq!(len, out.len());
                        assert!(len <= max_payload);
                    }
                }
                _ => {
                    let _ = rx.poll();
                }
            }
        }
    }
    if let Some(tx) = producers.last_mut() {
        record_repair_all(tx, records);
        let len = payload_len(plan(script, 1), capacity);
        waits.run(|strategy, deadline, stop| tx.wait_for_space(len, strategy, deadline, stop));
        tx.wake_consumer();
    }
    if let Some(rx) = &mut consumer {
        waits.run(|strategy, deadline, stop| rx.wait_for_data(strategy, deadline, stop));
        rx.wake_producers();
    }
    let _ = ring_stats(&region);
}
