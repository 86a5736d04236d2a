//! Loom models from a review of the claim-repair code. Each shows an
//! interleaving (or a value the memory model allows a load to return) in
//! which a repair misses a dead claim or lands on live data.
#![cfg(loom)]

use ipcring::failpoint::abandon_at;
use ipcring::ring::mpmc::{MpmcHandle, MpmcRing, PopError, PushError};
use ipcring::ring::record::{ProducerMode, RecordConsumer, RecordProducer, RecordRing};
use ipcring::ring::{HeapRegion, Repair, Side};
use loom::sync::Arc;
use loom::thread;
use loom_tests::model;

fn mpmc_handle(heap: &Arc<HeapRegion>, id: u8) -> MpmcHandle<u32> {
    // SAFETY: every thread that holds a handle also holds the heap, and
    // each concurrently used handle has its own id.
    unsafe { MpmcHandle::<u32>::attach(heap.region(), id) }.unwrap()
}

/// `mark_previous` reads the slot with a Relaxed load after a Relaxed load
/// of `tail`, so nothing orders it after the consumer's `FREE(p)` store
/// that the (now dead) claimer of `p` saw. It may read the previous lap's
/// `FULL`, skip the mark, and move `tail` on: the dead claim is then
/// attributable neither by `tail` nor by its slot, `repair` does nothing,
/// and every consumer waits at `p` forever.
#[test]
fn mpmc_a_dead_claim_is_always_repairable() {
    model(|| {
        let heap = Arc::new(HeapRegion::new(MpmcRing::<u32>::required_size(2).unwrap()).unwrap());
        // SAFETY: fresh memory, no handle yet.
        unsafe { MpmcRing::<u32>::init(heap.region(), 2).unwrap() };
        let main = mpmc_handle(&heap, 0);
        // Positions 0 and 1 hold items; a consumer frees both slots
        // concurrently with the producers of positions 2 and 3.
        main.try_push(10).unwrap();
        main.try_push(11).unwrap();
        let consumer = {
            let (ring, keep) = (mpmc_handle(&heap, 3), heap.clone());
            thread::spawn(move || {
                let _keep = keep;
                assert_eq!(ring.try_pop(), Ok(10));
                assert_eq!(ring.try_pop(), Ok(11));
            })
        };
        let dying = {
            let (ring, keep) = (mpmc_handle(&heap, 1), heap.clone());
            thread::spawn(move || {
                let _keep = keep;
                abandon_at("mpmc.push.claimed");
                let _ = ring.try_push(1);
                // Dead (or, if the ring was full, it simply gave up).
                std::mem::forget(ring);
            })
        };
        let live = {
            let (ring, keep) = (mpmc_handle(&heap, 2), heap.clone());
            thread::spawn(move || {
                let _keep = keep;
                ring.try_push(2).is_ok()
            })
        };
        consumer.join().unwrap();
        dying.join().unwrap();
        let pushed = live.join().unwrap();
        // The reaper repairs the dead producer.
        let record = main.claim_record(Side::Producer, 1);
        let _ = main.repair(Side::Producer, 1, record);
        // Whatever the live producer pushed must now come out.
        let mut got = Vec::new();
        loop {
            match main.try_pop() {
                Ok(item) => got.push(item),
                Err(PopError::Empty) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        if pushed {
            assert!(
                got.contains(&2),
                "a live producer's item is stuck behind an unrepaired dead claim: {got:?}"
            );
        }
    });
}

/// A mark is a Relaxed compare-exchange, so a producer whose view of
/// `tail` is stale can read `WRITING(p)` at its position without
/// synchronising with anyone who saw `tail` move; its reload of `tail` may
/// then return the same old word, and `try_push` reports a healthy ring as
/// corrupt.
#[test]
fn mpmc_a_marked_slot_is_not_corruption() {
    model(|| {
        let heap = Arc::new(HeapRegion::new(MpmcRing::<u32>::required_size(2).unwrap()).unwrap());
        // SAFETY: fresh memory, no handle yet.
        unsafe { MpmcRing::<u32>::init(heap.region(), 2).unwrap() };
        let stale = mpmc_handle(&heap, 3);
        let slow = {
            let (ring, keep) = (mpmc_handle(&heap, 1), heap.clone());
            thread::spawn(move || {
                let _keep = keep;
                // Claims position 0 and stops there (slow, or dead).
                abandon_at("mpmc.push.claimed");
                let _ = ring.try_push(1);
                std::mem::forget(ring);
            })
        };
        let marker = {
            let (ring, keep) = (mpmc_handle(&heap, 2), heap.clone());
            thread::spawn(move || {
                let _keep = keep;
                ring.try_push(2)
            })
        };
        let mine = stale.try_push(3);
        assert!(!matches!(mine, Err(PushError::Corrupted(..))), "{mine:?}");
        slow.join().unwrap();
        let theirs = marker.join().unwrap();
        assert!(
            !matches!(theirs, Err(PushError::Corrupted(..))),
            "{theirs:?}"
        );
    });
}

/// `Shared::repair` checks `head` *before* it loads and compare-exchanges
/// the header word. In between, the consumer can pass the (committed)
/// record and producers can write a later lap over its bytes; the
/// compare-exchange then replaces a word of a live record's payload with
/// a skip header.
#[test]
fn record_repair_never_writes_into_a_later_lap() {
    model(|| {
        let heap = Arc::new(HeapRegion::new(RecordRing::required_size(64).unwrap()).unwrap());
        // SAFETY: fresh memory; many-producer mode, one consumer; each
        // producer has its own id.
        let (mut rx, mut live, mut dead, reaper) = unsafe {
            RecordRing::init(heap.region(), 64, ProducerMode::Many).unwrap();
            (
                RecordConsumer::attach(heap.region()).unwrap(),
                RecordProducer::attach(heap.region(), 2).unwrap(),
                RecordProducer::attach(heap.region(), 1).unwrap(),
                RecordProducer::attach(heap.region(), 3).unwrap(),
            )
        };
        let mut out = Vec::new();
        live.try_push(&[7; 8]).unwrap(); // [0, 16)
        rx.try_receive_into(&mut out).unwrap();
        // The producer that will be found dead committed [16, 32).
        dead.try_push(&[1; 8]).unwrap();
        std::mem::forget(dead);
        let keep = heap.clone();
        let reaping = thread::spawn(move || {
            let _keep = keep;
            let record = reaper.claim_record(1);
            reaper.repair(1, record)
        });
        // The consumer takes the dead producer's record, and the next lap
        // puts a live record's payload over offset 16.
        rx.try_receive_into(&mut out).unwrap();
        assert_eq!(out, [1; 8]);
        live.try_push(&[0xaa; 24]).unwrap(); // [32, 64)
        live.try_push(&[0xbb; 24]).unwrap(); // [64, 96): payload at 72..96
        rx.try_receive_into(&mut out).unwrap();
        assert_eq!(out, [0xaa; 24]);
        let repaired = reaping.join().unwrap();
        rx.try_receive_into(&mut out).unwrap();
        assert_eq!(out, [0xbb; 24], "repair outcome {repaired:?}");
        assert_eq!(repaired, Repair::Nothing);
    });
}
