//! Regression tests from a review of the claim-repair code: each test shows
//! a defect the review found, and asserts the behaviour the ring promises.

use std::sync::atomic::AtomicU64;

use super::claims::{self, Side};
use super::mpmc::{MpmcHandle, MpmcRing};
use super::record::{ProducerMode, RecordConsumer, RecordProducer, RecordRing};
use super::{HeapRegion, Repair};
use crate::sync::shim::Ordering;

/// Offset of `RingHeader::tail` in every ring's region.
const TAIL_OFFSET: usize = 128;

fn records(capacity: usize) -> HeapRegion {
    let heap = HeapRegion::new(RecordRing::required_size(capacity).unwrap()).unwrap();
    // SAFETY: fresh memory, no handle yet.
    unsafe { RecordRing::init(heap.region(), capacity, ProducerMode::Many).unwrap() };
    heap
}

fn producer(heap: &HeapRegion, id: u8) -> RecordProducer {
    // SAFETY: the heap outlives the producer; the ring is many-producer and
    // each producer has its own id.
    unsafe { RecordProducer::attach(heap.region(), id) }.unwrap()
}

fn consumer(heap: &HeapRegion) -> RecordConsumer {
    // SAFETY: the heap outlives the consumer, the only one.
    unsafe { RecordConsumer::attach(heap.region()) }.unwrap()
}

/// The ring's `tail` word, as a peer that scribbles it would reach it.
fn tail_word(heap: &HeapRegion) -> &AtomicU64 {
    // SAFETY: every ring's header holds `tail`, an AtomicU64, at this
    // offset, and the region is at least a header long and 128-aligned.
    unsafe { &*heap.region().as_ptr().add(TAIL_OFFSET).cast::<AtomicU64>() }
}

/// A copy of a ring's memory: the same state, for a second experiment.
fn clone_region(heap: &HeapRegion) -> HeapRegion {
    let copy = HeapRegion::new(heap.region().len()).unwrap();
    // SAFETY: both regions are `len` bytes, distinct allocations, and no
    // handle uses either while we copy.
    unsafe {
        std::ptr::copy_nonoverlapping(
            heap.region().as_ptr(),
            copy.region().as_ptr(),
            heap.region().len(),
        )
    };
    copy
}

/// The record claim record keeps only 35 bits of the start position. A
/// producer that sent once and then sat idle while others moved 2^35 bytes
/// (32 GiB: half a minute at 1 GB/s) leaves a *confirmed* record; when it
/// dies, `repair` rebuilds a start within 2^35 bytes of `tail` that is not
/// its own. Here the alias lands exactly on a live producer's uncommitted
/// reservation, which repair overwrites with a committed skip; the consumer
/// then skips 16 bytes into the live record and waits forever mid-payload.
/// A second copy of the same state, with no reservation in flight, shows
/// the skip written at `tail` itself (`start == tail` is accepted), which
/// the consumer reports as corruption.
#[test]
#[cfg_attr(miri, ignore = "moves 32 GiB through the ring")]
fn record_repair_of_an_old_confirmed_claim_aliases_onto_live_data() {
    const CAPACITY: usize = 1 << 24;
    const ALIAS: u64 = 1 << 35;
    let heap = records(CAPACITY);
    let mut idle = producer(&heap, 1);
    let mut busy = producer(&heap, 2);
    let mut rx = consumer(&heap);
    idle.try_push(b"once").unwrap(); // [0, 16)
    busy.try_push(b"next").unwrap(); // confirms idle's claim record
    let mut out = Vec::new();
    for _ in 0..2 {
        rx.try_receive_into(&mut out).unwrap();
    }
    // Stream 2^35 - 32 bytes in records that never need a pad.
    let half = (CAPACITY / 2) as u64;
    let mut tail = 32u64;
    while tail < ALIAS {
        let step = (half - tail % half).min(ALIAS - tail);
        busy.try_reserve(step as usize - 8).unwrap().commit();
        drop(rx.try_receive().unwrap());
        tail += step;
    }
    // `idle` is killed now, having done nothing for 32 GiB.
    std::mem::forget(idle);
    let record = busy.claim_record(1);
    assert_eq!(record & (1 << 31), 1 << 31, "the record was confirmed");
    let snapshot = clone_region(&heap);

    // 1. A live reservation at the aliased position.
    let mut grant = busy.try_reserve(100).unwrap();
    let reaper = producer(&heap, 3);
    let repaired = reaper.repair(1, record);
    // The consumer polls while the live producer is still writing.
    let early = rx.try_receive().map(|view| view.len()).ok();
    grant.write_at(0, &[0xab; 100]);
    grant.commit();
    busy.try_push(b"after").unwrap();
    let first = rx.try_receive_into(&mut out).map(|_| out.clone());
    let second = rx.try_receive_into(&mut out).map(|_| out.clone());

    // 2. Nothing in flight: the skip lands at `tail`.
    let mut rx2 = consumer(&snapshot);
    let reaper2 = producer(&snapshot, 3);
    let repaired_at_tail = reaper2.repair(1, record);
    let polled = rx2.poll();

    // Observed before the fix: (Skipped, None, Err(Empty), Err(Empty)) and
    // (Skipped, Err(Corruption { field: "record length", .. })).
    let live = (repaired, early, first, second);
    let at_tail = (repaired_at_tail, polled);
    assert_eq!(
        live,
        (
            Repair::Nothing,
            None,
            Ok(vec![0xab; 100]),
            Ok(b"after".to_vec())
        ),
        "repair of a long-finished claim must leave a live reservation alone \
         (and at tail: {at_tail:?})"
    );
    assert_eq!(
        at_tail,
        (Repair::Nothing, Ok(false)),
        "repair must not write at or past tail"
    );
}

/// A `tail` that is not a multiple of 8 is impossible, but `repair` (run
/// by reapers, on a cleanup path) turns it into a start that is not either
/// and panics in `ByteBuf::word` instead of giving up or reporting it.
#[test]
fn record_repair_survives_a_scribbled_tail() {
    let heap = records(256);
    let mut dying = producer(&heap, 1);
    let reaper = producer(&heap, 2);
    let grant = dying.try_reserve(8).unwrap(); // claims [0, 16)
    std::mem::forget(grant);
    std::mem::forget(dying);
    let record = reaper.claim_record(1);
    // A peer scribbles the low bits of the position, keeping the owner.
    let word = tail_word(&heap);
    let scribbled = claims::pack(16 + 4, Some(1));
    word.store(scribbled, Ordering::Relaxed);
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reaper.repair(1, record)));
    assert!(outcome.is_ok(), "repair panicked on tail {scribbled:#x}");
}

/// Sanity check of the MPMC repair's exact positions (no aliasing there):
/// a long-finished claim is never repaired, however far the ring moved.
#[test]
fn mpmc_repair_of_a_finished_claim_does_nothing() {
    let heap = HeapRegion::new(MpmcRing::<u64>::required_size(3).unwrap()).unwrap();
    // SAFETY: fresh memory, no handle yet.
    unsafe { MpmcRing::<u64>::init(heap.region(), 3).unwrap() };
    // SAFETY: the heap outlives the handles; each has its own id.
    let (idle, busy) = unsafe {
        (
            MpmcHandle::<u64>::attach(heap.region(), 1).unwrap(),
            MpmcHandle::<u64>::attach(heap.region(), 2).unwrap(),
        )
    };
    idle.try_push(1).unwrap();
    assert_eq!(busy.try_pop(), Ok(1));
    for i in 0..1000 {
        busy.try_push(i).unwrap();
        assert_eq!(busy.try_pop(), Ok(i));
    }
    let record = busy.claim_record(Side::Producer, 1);
    assert_eq!(busy.repair(Side::Producer, 1, record), Repair::Nothing);
}
