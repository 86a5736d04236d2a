//! The rings' publication and sleep/wake protocols under loom: no lost
//! item, no duplicate, no lost wakeup (a lost wakeup leaves a thread blocked
//! forever, which loom reports as a deadlock), and loom's cell checks catch
//! any unsynchronised slot access.
#![cfg(loom)]

use ipcring::ring::mpmc::{MpmcHandle, MpmcRing};
use ipcring::ring::record::{ProducerMode, RecordConsumer, RecordProducer, RecordRing};
use ipcring::ring::spsc::{Consumer, Producer, SpscRing};
use ipcring::ring::{HeapRegion, spsc};
use ipcring::sync::WaitStrategy;
use loom::sync::Arc;
use loom::thread;
use loom_tests::model;

const PARK: WaitStrategy = WaitStrategy::Park;

/// Three items through two slots: the producer must sleep on a full ring
/// and the consumer on an empty one, and both must be woken.
#[test]
fn spsc_blocking_handoff_with_wrap() {
    model(|| {
        let heap = Arc::new(HeapRegion::new(SpscRing::<u32>::required_size(2).unwrap()).unwrap());
        // SAFETY: fresh memory; exactly one producer and one consumer.
        let (mut producer, mut consumer) = unsafe {
            SpscRing::<u32>::init(heap.region(), 2).unwrap();
            (
                Producer::<u32>::attach(heap.region()).unwrap(),
                Consumer::<u32>::attach(heap.region()).unwrap(),
            )
        };
        let keep = heap.clone();
        let writer = thread::spawn(move || {
            let _keep = keep;
            for item in 1..=3u32 {
                let mut item = item;
                loop {
                    match producer.try_push(item) {
                        Ok(()) => break,
                        Err(spsc::PushError::Full(back)) => {
                            item = back;
                            producer.wait_for_space(1, PARK, None, || false);
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
        });
        for expected in 1..=3u32 {
            loop {
                match consumer.try_pop() {
                    Ok(item) => {
                        assert_eq!(item, expected);
                        break;
                    }
                    Err(spsc::PopError::Empty) => {
                        consumer.wait_for_data(PARK, None, || false);
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        writer.join().unwrap();
    });
}

/// A chunk that wraps around the end of the ring is published whole.
#[test]
fn spsc_chunk_across_the_wrap() {
    model(|| {
        let heap = Arc::new(HeapRegion::new(SpscRing::<u32>::required_size(3).unwrap()).unwrap());
        // SAFETY: fresh memory; one producer and one consumer.
        let (mut producer, mut consumer) = unsafe {
            SpscRing::<u32>::init(heap.region(), 3).unwrap();
            (
                Producer::<u32>::attach(heap.region()).unwrap(),
                Consumer::<u32>::attach(heap.region()).unwrap(),
            )
        };
        // Move both ends to slot 2, so the next chunk of 2 wraps.
        for _ in 0..2 {
            producer.try_push(0).unwrap();
            consumer.try_pop().unwrap();
        }
        let keep = heap.clone();
        let writer = thread::spawn(move || {
            let _keep = keep;
            let mut chunk = producer.write_chunk(2).unwrap();
            assert_eq!(chunk.fill_from_slice(&[7, 8]), 2);
            chunk.commit_all();
        });
        let mut out = [0u32; 2];
        let mut got = 0;
        while got < 2 {
            got += consumer.pop_into(&mut out[got..]).unwrap();
            if got < 2 {
                consumer.wait_for_data(PARK, None, || false);
            }
        }
        assert_eq!(out, [7, 8]);
        writer.join().unwrap();
    });
}

fn pop_blocking(ring: &MpmcHandle<u32>) -> u32 {
    loop {
        match ring.try_pop() {
            Ok(item) => return item,
            Err(_) => {
                ring.wait_for_data(PARK, None, || false);
            }
        }
    }
}

fn push_blocking(ring: &MpmcHandle<u32>, item: u32) {
    while ring.try_push(item).is_err() {
        ring.wait_for_space(PARK, None, || false);
    }
}

fn mpmc_ring(capacity: usize) -> (Arc<HeapRegion>, MpmcHandle<u32>) {
    let heap =
        Arc::new(HeapRegion::new(MpmcRing::<u32>::required_size(capacity).unwrap()).unwrap());
    // SAFETY: fresh memory, no handle yet.
    unsafe { MpmcRing::<u32>::init(heap.region(), capacity).unwrap() };
    let ring = mpmc_handle(&heap, 0);
    (heap, ring)
}

/// Another handle on the ring in `heap`, claimer `id`.
fn mpmc_handle(heap: &Arc<HeapRegion>, id: u8) -> MpmcHandle<u32> {
    // SAFETY: every thread that holds a handle also holds the heap, and
    // each concurrently used handle has its own id.
    unsafe { MpmcHandle::<u32>::attach(heap.region(), id) }.unwrap()
}

/// Two producers race for one or two slots; one consumer takes both items,
/// sleeping when empty. With one slot a producer must sleep for space.
#[test]
fn mpmc_two_producers() {
    for capacity in [1usize, 2] {
        model(move || {
            let (heap, ring) = mpmc_ring(capacity);
            let producers: Vec<_> = [1u32, 2]
                .into_iter()
                .map(|item| {
                    let (ring, keep) = (mpmc_handle(&heap, item as u8), heap.clone());
                    thread::spawn(move || {
                        let _keep = keep;
                        push_blocking(&ring, item);
                    })
                })
                .collect();
            let mut both = [pop_blocking(&ring), pop_blocking(&ring)];
            for producer in producers {
                producer.join().unwrap();
            }
            both.sort_unstable();
            assert_eq!(both, [1, 2]);
        });
    }
}

/// Two consumers compete for what one producer pushes: each item exactly
/// once, and both sleeping consumers are woken.
#[test]
fn mpmc_two_consumers() {
    model(|| {
        let (heap, ring) = mpmc_ring(1);
        let other = {
            let (ring, keep) = (mpmc_handle(&heap, 1), heap.clone());
            thread::spawn(move || {
                let _keep = keep;
                pop_blocking(&ring)
            })
        };
        let mine = {
            let (ring, keep) = (mpmc_handle(&heap, 2), heap.clone());
            thread::spawn(move || {
                let _keep = keep;
                pop_blocking(&ring)
            })
        };
        push_blocking(&ring, 1);
        push_blocking(&ring, 2);
        let mut both = [mine.join().unwrap(), other.join().unwrap()];
        both.sort_unstable();
        assert_eq!(both, [1, 2]);
    });
}

/// One producer, records that force a pad and a wrap in a 64-byte ring.
#[test]
fn record_ring_single_producer_wraps() {
    model(|| {
        let heap = Arc::new(HeapRegion::new(RecordRing::required_size(64).unwrap()).unwrap());
        // SAFETY: fresh memory; one producer and one consumer.
        let (mut producer, mut consumer) = unsafe {
            RecordRing::init(heap.region(), 64, ProducerMode::Single).unwrap();
            (
                RecordProducer::attach(heap.region(), 0).unwrap(),
                RecordConsumer::attach(heap.region()).unwrap(),
            )
        };
        let keep = heap.clone();
        let writer = thread::spawn(move || {
            let _keep = keep;
            // 24 + 24 bytes, then 24 more: the third needs a pad to wrap.
            for byte in [1u8, 2, 3] {
                while producer.try_push(&[byte; 16]).is_err() {
                    producer.wait_for_space(16, PARK, None, || false);
                }
            }
        });
        let mut out = Vec::new();
        for byte in [1u8, 2, 3] {
            loop {
                match consumer.try_receive_into(&mut out) {
                    Ok(_) => break,
                    Err(_) => {
                        consumer.wait_for_data(PARK, None, || false);
                    }
                }
            }
            assert_eq!(out, [byte; 16]);
        }
        writer.join().unwrap();
    });
}

/// Two producers reserve concurrently; each record arrives whole, once.
#[test]
fn record_ring_two_producers() {
    model(|| {
        let heap = Arc::new(HeapRegion::new(RecordRing::required_size(64).unwrap()).unwrap());
        // SAFETY: fresh memory; many-producer mode, one consumer.
        let mut consumer = unsafe {
            RecordRing::init(heap.region(), 64, ProducerMode::Many).unwrap();
            RecordConsumer::attach(heap.region()).unwrap()
        };
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|byte| {
                let heap = heap.clone();
                thread::spawn(move || {
                    // SAFETY: the ring is many-producer.
                    let mut producer =
                        unsafe { RecordProducer::attach(heap.region(), byte) }.unwrap();
                    while producer.try_push(&[byte; 9]).is_err() {
                        producer.wait_for_space(9, PARK, None, || false);
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        let mut out = Vec::new();
        while seen.len() < 2 {
            match consumer.try_receive_into(&mut out) {
                Ok(_) => {
                    assert!(out.len() == 9 && out.iter().all(|&b| b == out[0]));
                    seen.push(out[0]);
                }
                Err(_) => {
                    consumer.wait_for_data(PARK, None, || false);
                }
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, [1, 2]);
        for producer in producers {
            producer.join().unwrap();
        }
    });
}
