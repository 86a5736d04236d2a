//! Ring tests at the ring layer: model tests against `VecDeque`, threaded
//! stress, and scribbled memory. Counts shrink under Miri.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering};

use proptest::prelude::*;

use super::mpmc::{MpmcHandle, MpmcRing};
use super::record::{ProducerMode, RecordConsumer, RecordProducer, RecordRing, ReserveError};
use super::spsc::{ChunkError, Consumer, PopError, Producer, PushError, SpscRing};
use super::{HeapRegion, RingError};

fn cases() -> u32 {
    if cfg!(miri) { 4 } else { 256 }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn spsc(capacity: usize) -> (HeapRegion, Producer<u64>, Consumer<u64>) {
    let heap = HeapRegion::new(SpscRing::<u64>::required_size(capacity).unwrap()).unwrap();
    // SAFETY: fresh memory; one producer and one consumer are made.
    unsafe {
        SpscRing::<u64>::init(heap.region(), capacity).unwrap();
        let producer = Producer::attach(heap.region()).unwrap();
        let consumer = Consumer::attach(heap.region()).unwrap();
        (heap, producer, consumer)
    }
}

fn mpmc(capacity: usize) -> (HeapRegion, MpmcHandle<u64>) {
    let heap = HeapRegion::new(MpmcRing::<u64>::required_size(capacity).unwrap()).unwrap();
    // SAFETY: fresh memory, no handle yet.
    unsafe { MpmcRing::<u64>::init(heap.region(), capacity).unwrap() };
    // SAFETY: the heap is returned with the handle and outlives it.
    let handle = unsafe { MpmcHandle::attach(heap.region(), 0) }.unwrap();
    (heap, handle)
}

/// Another handle on the ring in `heap`, with claimer id `id`.
fn mpmc_handle(heap: &HeapRegion, id: u8) -> MpmcHandle<u64> {
    // SAFETY: callers keep the heap alive as long as the handle, and give
    // each concurrently used handle its own id.
    unsafe { MpmcHandle::attach(heap.region(), id) }.unwrap()
}

fn records(capacity: usize, mode: ProducerMode) -> (HeapRegion, RecordProducer, RecordConsumer) {
    let heap = HeapRegion::new(RecordRing::required_size(capacity).unwrap()).unwrap();
    // SAFETY: fresh memory; one producer and one consumer are made.
    unsafe {
        RecordRing::init(heap.region(), capacity, mode).unwrap();
        let producer = RecordProducer::attach(heap.region(), 0).unwrap();
        let consumer = RecordConsumer::attach(heap.region()).unwrap();
        (heap, producer, consumer)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Push(u64),
    Pop,
    PushSlice(Vec<u64>),
    PopInto(usize),
    WriteChunk(usize, bool),
    ReadChunk(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u64>().prop_map(Op::Push),
        Just(Op::Pop),
        proptest::collection::vec(any::<u64>(), 0..8).prop_map(Op::PushSlice),
        (0usize..8).prop_map(Op::PopInto),
        ((0usize..8), any::<bool>()).prop_map(|(n, c)| Op::WriteChunk(n, c)),
        ((0usize..8), any::<bool>()).prop_map(|(n, c)| Op::ReadChunk(n, c)),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn spsc_matches_a_vecdeque(capacity in prop_oneof![Just(1usize), Just(2), Just(3), Just(5), Just(8)],
                               ops in proptest::collection::vec(op(), 0..64)) {
        let (_heap, mut producer, mut consumer) = spsc(capacity);
        let mut model = VecDeque::new();
        let mut next = 1_000_000u64;
        for op in ops {
            match op {
                Op::Push(x) => match producer.try_push(x) {
                    Ok(()) => { prop_assert!(model.len() < capacity); model.push_back(x) }
                    Err(PushError::Full(y)) => { prop_assert_eq!(model.len(), capacity); prop_assert_eq!(y, x) }
                    Err(e) => prop_assert!(false, "{e:?}"),
                },
                Op::Pop => match consumer.try_pop() {
                    Ok(x) => prop_assert_eq!(Some(x), model.pop_front()),
                    Err(PopError::Empty) => prop_assert!(model.is_empty()),
                    Err(e) => prop_assert!(false, "{e:?}"),
                },
                Op::PushSlice(items) => {
                    let n = producer.push_slice(&items).unwrap();
                    prop_assert_eq!(n, items.len().min(capacity - model.len()));
                    model.extend(&items[..n]);
                }
                Op::PopInto(len) => {
                    let mut out = vec![0; len];
                    let n = consumer.pop_into(&mut out).unwrap();
                    prop_assert_eq!(n, len.min(model.len()));
                    for x in &out[..n] { prop_assert_eq!(Some(*x), model.pop_front()); }
                }
                Op::WriteChunk(n, commit) => match producer.write_chunk(n) {
                    Ok(mut chunk) => {
                        prop_assert!(n <= capacity - model.len());
                        for i in 0..n { next += 1; prop_assert!(chunk.write(i, next)); }
                        prop_assert!(!chunk.write(n, 0));
                        if commit { chunk.commit_all(); model.extend(next - n as u64 + 1..=next); }
                    }
                    Err(ChunkError::TooFew { available }) => {
                        prop_assert_eq!(available, capacity - model.len());
                        prop_assert!(n > available);
                    }
                    Err(e) => prop_assert!(false, "{e:?}"),
                },
                Op::ReadChunk(n, commit) => match consumer.read_chunk(n) {
                    Ok(chunk) => {
                        for i in 0..n { prop_assert_eq!(chunk.get(i), model.get(i).copied()); }
                        prop_assert_eq!(chunk.get(n), None);
                        if commit { chunk.commit_all(); model.drain(..n); }
                    }
                    Err(ChunkError::TooFew { available }) => prop_assert_eq!(available, model.len()),
                    Err(e) => prop_assert!(false, "{e:?}"),
                },
            }
        }
    }

    #[test]
    fn mpmc_matches_a_vecdeque(capacity in prop_oneof![Just(1usize), Just(2), Just(3), Just(5), Just(8)],
                               ops in proptest::collection::vec(prop_oneof![any::<u64>().prop_map(Some), Just(None)], 0..64)) {
        let (_heap, ring) = mpmc(capacity);
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Some(x) => match ring.try_push(x) {
                    Ok(()) => { prop_assert!(model.len() < capacity); model.push_back(x) }
                    Err(super::mpmc::PushError::Full(_)) => prop_assert_eq!(model.len(), capacity),
                    Err(e) => prop_assert!(false, "{e:?}"),
                },
                None => match ring.try_pop() {
                    Ok(x) => prop_assert_eq!(Some(x), model.pop_front()),
                    Err(PopError::Empty) => prop_assert!(model.is_empty()),
                    Err(e) => prop_assert!(false, "{e:?}"),
                },
            }
            prop_assert_eq!(ring.len_hint(), model.len());
        }
    }

    #[test]
    fn record_ring_matches_a_vecdeque(many in any::<bool>(),
                                      capacity in prop_oneof![Just(64usize), Just(128), Just(256)],
                                      ops in proptest::collection::vec(prop_oneof![
                                          (0usize..80, any::<u8>(), 0u8..4).prop_map(|(len, byte, how)| Some((len, byte, how))),
                                          Just(None)], 0..64)) {
        let mode = if many { ProducerMode::Many } else { ProducerMode::Single };
        let (_heap, mut producer, mut consumer) = records(capacity, mode);
        let max = RecordRing::max_payload(capacity);
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        for op in ops {
            match op {
                Some((len, byte, how)) => {
                    let payload = vec![byte; len];
                    let result = if how == 0 {
                        // Reserve and abandon: the consumer must skip it.
                        producer.try_reserve(len).map(drop)
                    } else {
                        producer.try_push(&payload)
                    };
                    match result {
                        Ok(()) if how != 0 => model.push_back(payload),
                        Ok(()) => {}
                        Err(ReserveError::TooLarge { .. }) => prop_assert!(len > max),
                        Err(ReserveError::Full) => prop_assert!(len <= max),
                        Err(e) => prop_assert!(false, "{e:?}"),
                    }
                }
                None => {
                    let mut out = Vec::new();
                    match consumer.try_receive_into(&mut out) {
                        Ok(n) => { prop_assert_eq!(n, out.len()); prop_assert_eq!(Some(out), model.pop_front()) }
                        Err(PopError::Empty) => prop_assert!(model.is_empty()),
                        Err(e) => prop_assert!(false, "{e:?}"),
                    }
                }
            }
        }
        // Whatever is left drains in order, and then the ring is empty.
        let mut out = Vec::new();
        while consumer.try_receive_into(&mut out).is_ok() {
            prop_assert_eq!(Some(out.clone()), model.pop_front());
        }
        prop_assert!(model.is_empty());
    }
}

#[test]
fn record_views_read_unaligned_ranges_and_release_on_drop() {
    let (_heap, mut producer, mut consumer) = records(256, ProducerMode::Single);
    let payload: Vec<u8> = (0..37).collect();
    let mut grant = producer.try_reserve(payload.len()).unwrap();
    assert_eq!(grant.write_at(0, &payload[..5]), 5);
    assert_eq!(grant.write_at(5, &payload[5..]), 32);
    assert_eq!(grant.write_at(37, b"x"), 0);
    grant.commit();
    let view = consumer.try_receive().unwrap();
    assert_eq!(view.len(), 37);
    let mut part = [0u8; 10];
    assert_eq!(view.read_at(3, &mut part), 10);
    assert_eq!(&part, &payload[3..13]);
    assert_eq!(view.read_at(33, &mut part), 4);
    assert_eq!(view.to_vec(), payload);
    drop(view);
    assert!(matches!(consumer.try_receive(), Err(PopError::Empty)));
}

#[test]
fn oversized_records_are_refused_and_the_maximum_fits_an_empty_ring() {
    for mode in [ProducerMode::Single, ProducerMode::Many] {
        let (_heap, mut producer, mut consumer) = records(128, mode);
        let max = producer.max_payload();
        assert_eq!(max, 56);
        assert!(matches!(
            producer.try_push(&[0; 57]),
            Err(ReserveError::TooLarge { len: 57, max: 56 })
        ));
        // At every offset, an empty ring takes a maximal record.
        for round in 0..40 {
            producer
                .try_push(&vec![round as u8; (round * 7) % 24])
                .unwrap();
            consumer.try_receive().unwrap();
            producer.try_push(&[1; 56]).unwrap();
            assert_eq!(consumer.try_receive().unwrap().len(), 56);
        }
    }
}

#[test]
fn invalid_capacities_and_regions_are_refused() {
    assert!(SpscRing::<u64>::required_size(0).is_err());
    assert!(SpscRing::<u64>::required_size(usize::MAX).is_err());
    assert!(matches!(
        SpscRing::<()>::required_size(4),
        Err(RingError::ZeroSized)
    ));
    assert!(MpmcRing::<u64>::required_size(0).is_err());
    for bad in [0, 32, 100, 3 << 20] {
        assert!(RecordRing::required_size(bad).is_err(), "{bad}");
    }
    let heap = HeapRegion::new(256).unwrap();
    // SAFETY: fresh memory, no handles.
    unsafe {
        assert!(matches!(
            SpscRing::<u64>::init(heap.region(), 64),
            Err(RingError::TooSmall { .. })
        ));
    }
    // SAFETY: the attach fails; no handle outlives the heap.
    let attached = unsafe { MpmcHandle::<u64>::attach(heap.region(), 0) };
    assert!(matches!(attached, Err(RingError::TooSmall { .. })));
    // Zeroed memory holds no ring.
    let heap = HeapRegion::new(16384).unwrap();
    // SAFETY: as above.
    let attached = unsafe { MpmcHandle::<u64>::attach(heap.region(), 0) };
    assert!(matches!(attached, Err(RingError::Incompatible { .. })));
    // A ring of one type does not attach as another.
    let (heap, _p, _c) = spsc(4);
    // SAFETY: the attach fails before any access beyond the header.
    let wrong_type = unsafe { Producer::<u32>::attach(heap.region()) };
    assert!(matches!(
        wrong_type,
        Err(RingError::Incompatible {
            field: "slot size",
            ..
        })
    ));
    // SAFETY: as above.
    assert!(unsafe { MpmcHandle::<u64>::attach(heap.region(), 0) }.is_err());
}

/// Overwrites the u64 at `offset` of the region, as a faulty peer could.
fn scribble(heap: &HeapRegion, offset: usize, value: u64) {
    // SAFETY: tests pass 8-aligned offsets inside the region; the word is
    // an atomic in the ring's layout.
    unsafe {
        let word = &*heap.region().as_ptr().add(offset).cast::<StdAtomicU64>();
        word.store(value, Ordering::Relaxed);
    }
}

#[test]
fn scribbled_counters_are_reported_not_followed() {
    // SPSC: tail at 128, head at 256, capacity at 8.
    let (heap, mut producer, mut consumer) = spsc(4);
    scribble(&heap, 128, 1 << 40);
    assert!(matches!(consumer.try_pop(), Err(PopError::Corrupted(_))));
    scribble(&heap, 128, 0);
    for i in 0..4 {
        producer.try_push(i).unwrap();
    }
    scribble(&heap, 256, u64::MAX);
    assert!(matches!(
        producer.try_push(9),
        Err(PushError::Corrupted(9, _))
    ));
    scribble(&heap, 8, 1 << 50);
    // SAFETY: attach fails on the capacity check.
    assert!(unsafe { Consumer::<u64>::attach(heap.region()) }.is_err());

    // MPMC: slot sequences live after the header; any value yields an item,
    // Empty, Full or Corrupted, never a hang.
    let (heap, ring) = mpmc(4);
    let slots = MpmcRing::<u64>::required_size(4).unwrap() - 4 * 16;
    for value in [0, 1, 5, 1 << 40, u64::MAX, u64::MAX / 2] {
        for slot in 0..4 {
            scribble(&heap, slots + slot * 16, value);
        }
        let _ = ring.try_push(1);
        let _ = ring.try_pop();
    }
    scribble(&heap, slots, 1 << 40);
    scribble(&heap, 256, 0);
    assert!(matches!(ring.try_pop(), Err(PopError::Corrupted(_))));

    // Record ring: lengths past the end or the published data.
    for mode in [ProducerMode::Single, ProducerMode::Many] {
        let (heap, mut producer, mut consumer) = records(128, mode);
        producer.try_push(&[7; 10]).unwrap();
        let buffer = RecordRing::required_size(128).unwrap() - 128;
        // A committed header claiming 60 bytes (more than is published, and
        // more than the 56-byte maximum would allow at offset 0 + 8).
        // Position 0 has tag 0.
        scribble(&heap, buffer, (1 << 63) | 60);
        assert!(matches!(
            consumer.try_receive(),
            Err(PopError::Corrupted(_))
        ));
        scribble(&heap, buffer, (1 << 63) | 200);
        assert!(matches!(
            consumer.try_receive(),
            Err(PopError::Corrupted(_))
        ));
    }
}

#[test]
fn unaligned_record_counters_are_corruption_not_a_panic() {
    // Found by the ring_memory fuzz target: a scribbled `tail` that is not a
    // multiple of 8 reached the byte buffer's bounds assertion.
    for mode in [ProducerMode::Single, ProducerMode::Many] {
        let (heap, mut producer, _consumer) = records(256, mode);
        scribble(&heap, 128, 0xcaca_caca_caca_caca);
        scribble(&heap, 256, 0xcaca_caca_caca_caca);
        if mode == ProducerMode::Many {
            assert!(matches!(
                producer.try_push(b"x"),
                Err(ReserveError::Corrupted(_))
            ));
        }
        // SAFETY: the attaches fail on the counter checks.
        unsafe {
            assert!(RecordProducer::attach(heap.region(), 0).is_err());
            assert!(RecordConsumer::attach(heap.region()).is_err());
        }
    }
}

// Regressions from a review of the ring layer.

#[test]
fn a_head_past_every_reservation_is_corruption_not_a_hang() {
    let (heap, mut producer, _consumer) = records(64, ProducerMode::Many);
    for _ in 0..3 {
        producer.try_push(&[1; 8]).unwrap();
    }
    scribble(&heap, 256, 1 << 20);
    assert!(matches!(
        producer.try_push(&[2; 24]),
        Err(ReserveError::Corrupted(_))
    ));
}

#[test]
fn a_stale_committed_header_does_not_make_the_consumer_spin() {
    let (heap, _producer, mut consumer) = records(128, ProducerMode::Many);
    let buffer = RecordRing::required_size(128).unwrap() - 128;
    // Committed, but with the tag of position 8, not 0.
    scribble(&heap, buffer, (1 << 63) | (1 << 32));
    assert!(matches!(consumer.try_receive(), Err(PopError::Empty)));
    let deadline = crate::sync::Deadline::after(std::time::Duration::from_millis(100));
    let started = std::time::Instant::now();
    let ready = consumer.wait_for_data(crate::sync::WaitStrategy::Park, Some(deadline), || false);
    assert!(!ready, "the wait said ready while nothing can be received");
    assert!(started.elapsed() >= std::time::Duration::from_millis(90));
}

#[test]
fn a_consumer_that_dies_inside_release_leaves_a_skippable_record() {
    let (heap, mut producer, mut consumer) = records(128, ProducerMode::Many);
    producer.try_push(&[9; 16]).unwrap();
    producer.try_push(&[8; 16]).unwrap();
    let buffer = RecordRing::required_size(128).unwrap() - 128;
    // What `release` has done when its process dies before storing `head`:
    // the header marked skipped, the payload zeroed.
    let view = consumer.try_receive().unwrap();
    std::mem::forget(view);
    // SAFETY: reads the header word of the first record (offset 0).
    let header = unsafe { &*heap.region().as_ptr().add(buffer).cast::<StdAtomicU64>() };
    header.fetch_or(1 << 31, Ordering::Relaxed);
    for word in 1..3 {
        scribble(&heap, buffer + 8 * word, 0);
    }
    // SAFETY: the successor consumer; the first one is abandoned.
    let mut successor = unsafe { RecordConsumer::attach(heap.region()) }.unwrap();
    let mut out = Vec::new();
    successor.try_receive_into(&mut out).unwrap();
    assert_eq!(
        out, [8; 16],
        "the successor passes the half-released record"
    );
}

#[test]
fn out_of_order_publication_wakes_every_parked_consumer() {
    if cfg!(miri) {
        return; // timing-based; the loom models cover the protocol
    }
    let (heap, ring) = mpmc(4);
    let heap = Arc::new(heap);
    // Layout: tail (enqueue position << 5 | owner) at 128, data_ready at
    // 384, slots of { sequence, value } from 8960.
    // SAFETY: the WaitWord lives at 384 in the ring header.
    let data_ready = unsafe {
        &*heap
            .region()
            .as_ptr()
            .add(384)
            .cast::<crate::sync::WaitWord>()
    };
    let taken = Arc::new(StdAtomicU64::new(0));
    let consumers: Vec<_> = (0..2u8)
        .map(|id| {
            let (ring, taken, _keep) = (mpmc_handle(&heap, id + 1), taken.clone(), heap.clone());
            std::thread::spawn(move || {
                let deadline = crate::sync::Deadline::after(std::time::Duration::from_secs(5));
                while !deadline.has_passed() {
                    if ring.try_pop().is_ok() {
                        taken.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    ring.wait_for_data(crate::sync::WaitStrategy::Park, Some(deadline), || false);
                }
            })
        })
        .collect();
    while data_ready.sleepers() < 2 {
        std::thread::yield_now();
    }
    // A slow producer claims position 0; a fast one publishes position 1.
    scribble(&heap, 128, 1 << 5);
    ring.try_push(11).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // The slow one publishes position 0 as `try_push` does: FULL(0) is 2.
    scribble(&heap, 8968, 10);
    // SAFETY: slot 0's sequence word at 8960.
    unsafe { &*heap.region().as_ptr().add(8960).cast::<StdAtomicU64>() }
        .store(2, Ordering::Release);
    data_ready.notify_all();
    let started = std::time::Instant::now();
    for consumer in consumers {
        consumer.join().unwrap();
    }
    assert_eq!(
        taken.load(Ordering::Relaxed),
        2,
        "an item was left while a consumer slept"
    );
    // Well within the deadline: nobody waited it out.
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[test]
fn tiny_capacities_do_not_underflow() {
    assert_eq!(RecordRing::max_payload(8), 0);
    assert_eq!(RecordRing::max_payload(0), 0);
}

#[test]
fn spsc_threads_keep_order() {
    let count: u64 = if cfg!(miri) { 100 } else { 200_000 };
    let (heap, mut producer, mut consumer) = spsc(7);
    let heap = Arc::new(heap);
    let _keep = heap.clone();
    let writer = std::thread::spawn(move || {
        let mut next = 0;
        while next < count {
            let mut chunk = producer.write_chunk_up_to(3).unwrap();
            for i in 0..chunk.len() {
                chunk.write(i, next + i as u64);
            }
            next += chunk.len() as u64;
            chunk.commit_all();
        }
    });
    let mut expected = 0;
    let mut buffer = [0u64; 5];
    while expected < count {
        let n = consumer.pop_into(&mut buffer).unwrap();
        for &x in &buffer[..n] {
            assert_eq!(x, expected);
            expected += 1;
        }
        if n == 0 {
            std::thread::yield_now();
        }
    }
    writer.join().unwrap();
}

#[test]
fn mpmc_threads_deliver_each_item_once() {
    let per_producer: u64 = if cfg!(miri) { 20 } else { 50_000 };
    let (heap, _ring) = mpmc(6);
    let heap = Arc::new(heap);
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let (ring, _keep) = (mpmc_handle(&heap, p as u8 + 1), heap.clone());
            std::thread::spawn(move || {
                for i in 0..per_producer {
                    let mut item = (p << 32) | i;
                    while let Err(super::mpmc::PushError::Full(back)) = ring.try_push(item) {
                        item = back;
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..2u8)
        .map(|c| {
            let (ring, _keep) = (mpmc_handle(&heap, c + 3), heap.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut last = [None::<u64>; 2];
                while seen.len() < per_producer as usize {
                    match ring.try_pop() {
                        Ok(item) => {
                            let (p, i) = ((item >> 32) as usize, item & 0xffff_ffff);
                            // Per producer, one consumer sees increasing items.
                            assert!(last[p].is_none_or(|l| l < i));
                            last[p] = Some(i);
                            seen.push(item);
                        }
                        Err(PopError::Empty) => std::thread::yield_now(),
                        Err(e) => panic!("{e:?}"),
                    }
                }
                seen
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    let mut all: Vec<u64> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort_unstable();
    let mut expected: Vec<u64> = (0..2u64)
        .flat_map(|p| (0..per_producer).map(move |i| (p << 32) | i))
        .collect();
    expected.sort_unstable();
    assert_eq!(all, expected);
}

#[test]
fn many_producer_records_arrive_whole_and_in_per_producer_order() {
    let per_producer: u32 = if cfg!(miri) { 6 } else { 20_000 };
    let heap = Arc::new(HeapRegion::new(RecordRing::required_size(512).unwrap()).unwrap());
    // SAFETY: fresh memory; many-producer mode allows several producers.
    unsafe { RecordRing::init(heap.region(), 512, ProducerMode::Many).unwrap() };
    let producers: Vec<_> = (0..2u8)
        .map(|p| {
            let heap = heap.clone();
            std::thread::spawn(move || {
                // SAFETY: the ring is many-producer.
                let mut producer = unsafe { RecordProducer::attach(heap.region(), p) }.unwrap();
                for i in 0..per_producer {
                    let len = 5 + (i as usize * 13) % 60;
                    let mut record = vec![p; len];
                    record[..4].copy_from_slice(&i.to_le_bytes());
                    while let Err(e) = producer.try_push(&record) {
                        assert_eq!(e, ReserveError::Full);
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    // SAFETY: the only consumer.
    let mut consumer = unsafe { RecordConsumer::attach(heap.region()) }.unwrap();
    let mut next = [0u32; 2];
    let mut out = Vec::new();
    while next.iter().any(|&n| n < per_producer) {
        match consumer.try_receive_into(&mut out) {
            Ok(len) => {
                let p = out[len - 1] as usize;
                let i = u32::from_le_bytes(out[..4].try_into().unwrap());
                assert_eq!(i, next[p]);
                assert_eq!(len, 5 + (i as usize * 13) % 60);
                assert!(out[4..].iter().all(|&b| b as usize == p));
                next[p] += 1;
            }
            Err(PopError::Empty) => std::thread::yield_now(),
            Err(e) => panic!("{e:?}"),
        }
    }
    for producer in producers {
        producer.join().unwrap();
    }
}

/// `ring_counters` on every ring kind: the totals of a fresh ring, then any
/// bytes in every word after the magic, as a peer may write them. It must
/// never panic (overflow checks are on) nor read outside the region; under
/// Miri this checks the casts of each ring's `counters_of`.
#[test]
fn ring_counters_read_every_ring_kind_whatever_its_words_hold() {
    use super::queue::{MessageQueue, QueueConfig};
    use super::ring_counters;
    use super::stream::{CONTROL_SIZE, StreamRing};

    // No handle outlives its ring's setup: the memory is scribbled over
    // below, and only `ring_counters` may read it then.
    let spsc_heap = {
        let (heap, mut tx, _) = spsc(8);
        tx.try_push(7).unwrap();
        tx.try_push(8).unwrap();
        heap
    };
    let (mpmc_heap, _) = mpmc(8);
    let (single_heap, _, _) = records(256, ProducerMode::Single);
    let (many_heap, _, _) = records(256, ProducerMode::Many);
    let stream_heap =
        HeapRegion::new(StreamRing::required_size(256, CONTROL_SIZE).unwrap()).unwrap();
    // SAFETY: fresh memory, no handle yet.
    unsafe { StreamRing::init(stream_heap.region(), 256, CONTROL_SIZE).unwrap() };
    let config = QueueConfig {
        max_msgs: 2,
        max_bytes: 16,
        max_msg: 8,
        priorities: 32,
    };
    let queue_heap = HeapRegion::new(MessageQueue::required_size(&config).unwrap()).unwrap();
    // SAFETY: fresh memory, no handle yet.
    unsafe { MessageQueue::init(queue_heap.region(), &config, 0).unwrap() };

    let counters = ring_counters(&spsc_heap.region()).unwrap();
    assert_eq!((counters.items, counters.bytes), (Some(2), Some(16)));
    let heaps = [
        &spsc_heap,
        &mpmc_heap,
        &single_heap,
        &many_heap,
        &stream_heap,
        &queue_heap,
    ];
    for heap in heaps {
        assert!(ring_counters(&heap.region()).is_some());
    }
    // Every word after the magic (at 0), up to the end of the largest header
    // read (a claim table); fewer under Miri. Each is left at 0, so later
    // readings see a mix of zeros and live fields.
    let stride = if cfg!(miri) { 72 } else { 8 };
    for heap in heaps {
        let region = heap.region();
        let end = region.len().min(16 << 10) / 8 * 8;
        for offset in (8..end).step_by(stride) {
            // SAFETY: in bounds (below `end`) and 8-aligned (the region is
            // RING_ALIGN-aligned); no handle on the region is left.
            let word = unsafe { &*region.as_ptr().add(offset).cast::<StdAtomicU64>() };
            for scribble in [u64::MAX, 1 << 63, 0] {
                word.store(scribble, Ordering::Relaxed);
                let _ = ring_counters(&region);
            }
        }
    }
}
