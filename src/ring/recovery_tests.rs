//! Recovery at the ring layer: a claimer "dies" at each failpoint of its
//! operation (the operation returns there and the claimer is never used
//! again), and a survivor repairs it. Cross-process kills of real processes
//! at the same failpoints are in `tests/crash.rs`.

use super::claims::Side;
use super::mpmc::{MpmcHandle, MpmcRing, PopError, PushError};
use super::record::{ProducerMode, RecordConsumer, RecordProducer, RecordRing, ReserveError};
use super::{HeapRegion, Repair};
use crate::failpoint::abandon_at;

fn mpmc(capacity: usize) -> HeapRegion {
    let heap = HeapRegion::new(MpmcRing::<u64>::required_size(capacity).unwrap()).unwrap();
    // SAFETY: fresh memory, no handle yet.
    unsafe { MpmcRing::<u64>::init(heap.region(), capacity).unwrap() };
    heap
}

fn handle(heap: &HeapRegion, id: u8) -> MpmcHandle<u64> {
    // SAFETY: the tests keep the heap alive longer than the handles, and
    // give each handle its own id.
    unsafe { MpmcHandle::attach(heap.region(), id) }.unwrap()
}

fn repair_producer(ring: &MpmcHandle<u64>, id: u8) -> Repair {
    ring.repair(Side::Producer, id, ring.claim_record(Side::Producer, id))
}

fn repair_consumer(ring: &MpmcHandle<u64>, id: u8) -> Repair {
    ring.repair(Side::Consumer, id, ring.claim_record(Side::Consumer, id))
}

#[test]
fn mpmc_producer_dying_before_its_claim_leaves_nothing_to_repair() {
    let heap = mpmc(4);
    let (dying, survivor) = (handle(&heap, 1), handle(&heap, 2));
    abandon_at("mpmc.push.announced");
    assert!(matches!(dying.try_push(1), Err(PushError::Full(1))));
    survivor.try_push(2).unwrap();
    assert_eq!(survivor.try_pop(), Ok(2));
    assert_eq!(repair_producer(&survivor, 1), Repair::Nothing);
    assert_eq!(survivor.stats().repairs, 0);
}

#[test]
fn mpmc_producer_dying_after_its_claim_is_skipped() {
    for point in ["mpmc.push.claimed", "mpmc.push.written"] {
        // Alone (its claim is the latest, named by `tail`), or followed by
        // another producer (which marks the claim at its slot).
        for followed in [false, true] {
            let heap = mpmc(4);
            let (dying, survivor) = (handle(&heap, 1), handle(&heap, 2));
            abandon_at(point);
            assert!(dying.try_push(1).is_err());
            if followed {
                survivor.try_push(2).unwrap();
            }
            // Stuck behind the dead claim until it is repaired.
            assert_eq!(survivor.try_pop(), Err(PopError::Empty), "{point}");
            assert_eq!(repair_producer(&survivor, 1), Repair::Skipped, "{point}");
            assert_eq!(repair_producer(&survivor, 1), Repair::Nothing, "idempotent");
            if followed {
                assert_eq!(survivor.try_pop(), Ok(2));
            }
            assert_eq!(survivor.try_pop(), Err(PopError::Empty));
            // The ring works on, across laps.
            for i in 0..10 {
                survivor.try_push(i).unwrap();
                assert_eq!(survivor.try_pop(), Ok(i));
            }
            assert_eq!(survivor.stats().repairs, 1);
            assert_eq!(survivor.stats().losses, 0);
        }
    }
}

#[test]
fn mpmc_consumer_dying_holding_an_item_loses_it_once() {
    for point in ["mpmc.pop.claimed", "mpmc.pop.read"] {
        for followed in [false, true] {
            let heap = mpmc(2);
            let (dying, survivor) = (handle(&heap, 1), handle(&heap, 2));
            survivor.try_push(10).unwrap();
            survivor.try_push(11).unwrap();
            abandon_at(point);
            assert!(dying.try_pop().is_err());
            if followed {
                assert_eq!(survivor.try_pop(), Ok(11));
            }
            // Position 2 is slot 0, which the dead consumer still holds.
            assert!(matches!(survivor.try_push(12), Err(PushError::Full(12))));
            assert_eq!(repair_consumer(&survivor, 1), Repair::Lost, "{point}");
            assert_eq!(repair_consumer(&survivor, 1), Repair::Nothing);
            survivor.try_push(12).unwrap();
            if followed {
                survivor.try_push(13).unwrap();
            } else {
                assert_eq!(survivor.try_pop(), Ok(11));
            }
            assert_eq!(survivor.try_pop(), Ok(12));
            if followed {
                assert_eq!(survivor.try_pop(), Ok(13));
            }
            assert_eq!(survivor.try_pop(), Err(PopError::Empty));
            assert_eq!(survivor.stats().losses, 1);
        }
    }
}

#[test]
fn mpmc_consumer_dying_before_its_claim_loses_nothing() {
    let heap = mpmc(2);
    let (dying, survivor) = (handle(&heap, 1), handle(&heap, 2));
    survivor.try_push(10).unwrap();
    abandon_at("mpmc.pop.announced");
    assert_eq!(dying.try_pop(), Err(PopError::Empty));
    assert_eq!(repair_consumer(&survivor, 1), Repair::Nothing);
    assert_eq!(survivor.try_pop(), Ok(10));
}

#[test]
fn mpmc_consumer_dying_on_a_skip_counts_no_loss() {
    let heap = mpmc(2);
    let (dead_producer, dying, survivor) = (handle(&heap, 1), handle(&heap, 2), handle(&heap, 3));
    abandon_at("mpmc.push.claimed");
    assert!(dead_producer.try_push(1).is_err());
    assert_eq!(repair_producer(&survivor, 1), Repair::Skipped);
    abandon_at("mpmc.pop.claimed");
    assert_eq!(dying.try_pop(), Err(PopError::Empty));
    assert_eq!(repair_consumer(&survivor, 2), Repair::Skipped);
    assert_eq!(survivor.stats().losses, 0);
    for i in 0..4 {
        survivor.try_push(i).unwrap();
        assert_eq!(survivor.try_pop(), Ok(i));
    }
}

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

fn receive(consumer: &mut RecordConsumer) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    consumer.try_receive_into(&mut out).ok().map(|_| out)
}

/// A producer dies at `point` while reserving or writing `len` bytes after
/// `lead` bytes of records were sent; the survivor repairs it.
fn record_producer_dies(point: &'static str, lead: usize, len: usize, followed: bool) {
    let heap = records(256);
    let mut survivor = producer(&heap, 2);
    let mut rx = consumer(&heap);
    // `lead` bytes of records (at most 100 bytes each), sent and received.
    let mut sent = 0;
    while sent < lead {
        let len = (lead - sent).min(100) - 8;
        survivor.try_push(&vec![1; len]).unwrap();
        assert_eq!(receive(&mut rx).unwrap().len(), len);
        sent += len + 8;
    }
    let mut dying = producer(&heap, 1);
    abandon_at(point);
    match dying.try_reserve(len) {
        Ok(mut grant) => {
            let payload = vec![9; len];
            if point == "record.write" {
                grant.write_at(0, &payload);
                std::mem::forget(grant);
            } else {
                grant.write_at(0, &payload);
                grant.commit();
            }
        }
        Err(ReserveError::Full) => {}
        Err(e) => panic!("{point} lead {lead} len {len}: {e}"),
    }
    // Dead: no drop may run for it.
    std::mem::forget(dying);
    if followed {
        survivor.try_push(b"after").unwrap();
    }
    let stuck = point != "record.reserve.announced";
    if stuck {
        assert!(receive(&mut rx).is_none(), "{point}: stuck before repair");
        assert_eq!(
            survivor.repair(1, survivor.claim_record(1)),
            Repair::Skipped,
            "{point}"
        );
    }
    assert_eq!(
        survivor.repair(1, survivor.claim_record(1)),
        Repair::Nothing,
        "{point}"
    );
    if followed {
        assert_eq!(receive(&mut rx).as_deref(), Some(&b"after"[..]), "{point}");
    }
    assert!(receive(&mut rx).is_none());
    for i in 0..20u8 {
        survivor.try_push(&vec![i; 1 + usize::from(i) * 5]).unwrap();
        assert_eq!(receive(&mut rx).unwrap(), vec![i; 1 + usize::from(i) * 5]);
    }
    assert_eq!(survivor.stats().repairs, u64::from(stuck));
}

#[test]
fn record_producer_dying_at_any_step_is_repaired() {
    for point in [
        "record.reserve.announced",
        "record.reserve.claimed",
        "record.reserve.padded",
        "record.write",
        "record.commit",
    ] {
        for followed in [false, true] {
            // No pad, and a reservation that pads to the end first.
            record_producer_dies(point, 0, 20, followed);
            record_producer_dies(point, 216, 40, followed);
        }
    }
}

#[test]
fn a_committed_record_is_not_repaired_away() {
    let heap = records(256);
    let mut dying = producer(&heap, 1);
    let survivor = producer(&heap, 2);
    let mut rx = consumer(&heap);
    dying.try_push(b"kept").unwrap();
    std::mem::forget(dying);
    assert_eq!(
        survivor.repair(1, survivor.claim_record(1)),
        Repair::Nothing
    );
    assert_eq!(receive(&mut rx).as_deref(), Some(&b"kept"[..]));
}

#[test]
fn a_leaked_grant_is_abandoned_by_its_producer() {
    let heap = records(256);
    let mut tx = producer(&heap, 1);
    let mut rx = consumer(&heap);
    let mut grant = tx.try_reserve(8).unwrap();
    grant.write_at(0, b"leaked!!");
    std::mem::forget(grant);
    assert!(receive(&mut rx).is_none());
    tx.try_push(b"next").unwrap();
    assert_eq!(receive(&mut rx).as_deref(), Some(&b"next"[..]));
    // Leaked, then the producer goes away.
    let grant = tx.try_reserve(3).unwrap();
    std::mem::forget(grant);
    drop(tx);
    let mut tx = producer(&heap, 1);
    tx.try_push(b"last").unwrap();
    assert_eq!(receive(&mut rx).as_deref(), Some(&b"last"[..]));
}

/// A repair must not rewrite a header the consumer has passed: those bytes
/// may hold a later lap's record by then. (The soak found this: a dead
/// producer's consumed pad was "restored" over a live record.)
#[test]
fn repair_leaves_headers_the_consumer_passed_alone() {
    let heap = records(256);
    let mut survivor = producer(&heap, 2);
    let mut rx = consumer(&heap);
    // Advance to position 224 (offset 224): 104 + 104 + 16 bytes.
    for len in [92, 92, 8] {
        survivor.try_push(&vec![1; len]).unwrap();
        assert_eq!(receive(&mut rx).unwrap().len(), len);
    }
    // The doomed producer's record does not fit before the end: a pad at
    // 224..256, then the record at 256..304.
    let mut dying = producer(&heap, 1);
    dying.try_push(&[7; 40]).unwrap();
    std::mem::forget(dying);
    // The consumer passes the pad and holds the record.
    let view = rx.try_receive().unwrap();
    assert_eq!(view.len(), 40);
    // Meanwhile the next lap reaches the pad's bytes: 304 + 3 × 56 = 472,
    // offset 216, then a record at offset 216..232 and one at 232..256.
    for _ in 0..3 {
        survivor.try_push(&[3; 48]).unwrap();
    }
    survivor.try_push(&[4; 8]).unwrap();
    survivor.try_push(&[5; 16]).unwrap();
    assert_eq!(
        survivor.repair(1, survivor.claim_record(1)),
        Repair::Nothing
    );
    drop(view);
    for expected in [
        vec![3; 48],
        vec![3; 48],
        vec![3; 48],
        vec![4; 8],
        vec![5; 16],
    ] {
        assert_eq!(receive(&mut rx), Some(expected));
    }
    assert!(receive(&mut rx).is_none());
}
