//! In-process costs of the ring operations, so regressions show:
//! `cargo bench --bench rings`. One thread does both sides, so these are
//! the instruction costs of each operation without cache-line transfer
//! (`ipcring bench` measures the cross-process figures).

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipcring::ring::HeapRegion;
use ipcring::ring::mpmc::{MpmcHandle, MpmcRing};
use ipcring::ring::record::{ProducerMode, RecordConsumer, RecordProducer, RecordRing};
use ipcring::ring::spsc::{Consumer, Producer, SpscRing};

fn spsc(c: &mut Criterion) {
    let heap = HeapRegion::new(SpscRing::<u64>::required_size(4096).unwrap()).unwrap();
    // SAFETY: fresh memory; one producer and one consumer.
    let (mut tx, mut rx) = unsafe {
        SpscRing::<u64>::init(heap.region(), 4096).unwrap();
        (
            Producer::<u64>::attach(heap.region()).unwrap(),
            Consumer::<u64>::attach(heap.region()).unwrap(),
        )
    };
    c.bench_function("spsc try_push + try_pop (u64)", |b| {
        b.iter(|| {
            tx.try_push(black_box(7)).unwrap();
            black_box(rx.try_pop().unwrap())
        })
    });
    let items = [1u64; 256];
    let mut out = [0u64; 256];
    let mut group = c.benchmark_group("spsc chunk of 256 u64");
    group.throughput(Throughput::Elements(256));
    group.bench_function("write_chunk + read_chunk", |b| {
        b.iter(|| {
            let mut chunk = tx.write_chunk(256).unwrap();
            chunk.fill_from_slice(black_box(&items));
            chunk.commit_all();
            let chunk = rx.read_chunk(256).unwrap();
            chunk.copy_to_slice(&mut out);
            chunk.commit_all();
            black_box(out[255])
        })
    });
    group.finish();
}

fn mpmc(c: &mut Criterion) {
    let heap = HeapRegion::new(MpmcRing::<u64>::required_size(4096).unwrap()).unwrap();
    // SAFETY: fresh memory.
    unsafe { MpmcRing::<u64>::init(heap.region(), 4096).unwrap() };
    // SAFETY: `heap` outlives the handle (both live to the end of this fn).
    let ring = unsafe { MpmcHandle::<u64>::attach(heap.region(), 0) }.unwrap();
    c.bench_function("mpmc try_push + try_pop (u64)", |b| {
        b.iter(|| {
            ring.try_push(black_box(7)).unwrap();
            black_box(ring.try_pop().unwrap())
        })
    });
}

fn records(c: &mut Criterion) {
    for mode in [ProducerMode::Single, ProducerMode::Many] {
        let heap = HeapRegion::new(RecordRing::required_size(1 << 16).unwrap()).unwrap();
        // SAFETY: fresh memory; one producer and one consumer.
        let (mut tx, mut rx) = unsafe {
            RecordRing::init(heap.region(), 1 << 16, mode).unwrap();
            (
                RecordProducer::attach(heap.region(), 0).unwrap(),
                RecordConsumer::attach(heap.region()).unwrap(),
            )
        };
        let payload = [5u8; 64];
        let mut out = [0u8; 64];
        c.bench_function(
            &format!("record push + receive (64 B, {mode:?} producer)"),
            |b| {
                b.iter(|| {
                    tx.try_push(black_box(&payload)).unwrap();
                    let view = rx.try_receive().unwrap();
                    view.read_at(0, &mut out);
                    black_box(out[63])
                })
            },
        );
    }
}

fn queue(c: &mut Criterion) {
    use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
    let config = QueueConfig {
        max_msgs: 1024,
        max_bytes: 1024 * 64,
        max_msg: 64,
        priorities: 32,
    };
    let heap = HeapRegion::new(MessageQueue::required_size(&config).unwrap()).unwrap();
    // SAFETY: fresh memory; `heap` outlives the handle.
    let queue = unsafe {
        MessageQueue::init(heap.region(), &config, 0).unwrap();
        MessageQueue::attach(heap.region()).unwrap()
    };
    let payload = [7u8; 64];
    let mut out = [0u8; 64];
    // What an uncontended `Queue::send` + `Queue::recv` of 64 B does: lock,
    // copy, journal commit, unlock, each way (the channel adds a clock read).
    c.bench_function("queue send + recv (64 B, lock and journal)", |b| {
        b.iter(|| {
            queue
                .try_lock(1)
                .unwrap()
                .send(black_box(&payload), 1, 3, 1, 0)
                .unwrap();
            queue.wake_receivers();
            let mut locked = queue.try_lock(1).unwrap();
            let found = locked.find(Select::Any, 0).unwrap().unwrap();
            locked.receive(&found, &mut out, 1, 0, false).unwrap();
            drop(locked);
            queue.returned(1);
            queue.wake_senders();
            black_box(out[63])
        })
    });
}

criterion_group!(benches, spsc, mpmc, records, queue);
criterion_main!(benches);
