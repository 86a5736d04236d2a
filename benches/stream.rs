//! Costs of byte-stream operations in one thread: `cargo bench --bench
//! stream`. The ring rows run on heap memory (the lock, the counters and
//! the copies); the channel rows go through a real anonymous stream, with
//! its mirrored mapping and the endpoint's checks. One thread does both
//! sides, so these are instruction costs without cache-line transfer.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::ptr::NonNull;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipcring::channel::ChannelOptions;
use ipcring::channel::stream;
use ipcring::ring::HeapRegion;
use ipcring::ring::stream::{CONTROL_SIZE, DataArea, StreamConsumer, StreamProducer, StreamRing};

fn ring(c: &mut Criterion) {
    const CAPACITY: usize = 1 << 16;
    let heap = HeapRegion::new(StreamRing::required_size(CAPACITY, CONTROL_SIZE).unwrap()).unwrap();
    let region = heap.region();
    let data = NonNull::new(region.as_ptr().wrapping_add(CONTROL_SIZE)).unwrap();
    // SAFETY: fresh memory; one writer and one reader, which `heap`
    // outlives; the data area is the region's tail.
    let (mut tx, mut rx) = unsafe {
        StreamRing::init(region, CAPACITY, CONTROL_SIZE).unwrap();
        let data = DataArea::linear(data, CAPACITY);
        (
            StreamProducer::attach(region, data, 0).unwrap(),
            StreamConsumer::attach(region, data, 0).unwrap(),
        )
    };
    let mut group = c.benchmark_group("stream ring");
    for len in [64usize, 4096] {
        let src = vec![7u8; len];
        let mut out = vec![0u8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(
            format!("lock, write, commit + lock, read, consume ({len} B)"),
            |b| {
                b.iter(|| {
                    let mut guard = tx.try_lock().unwrap();
                    guard.free(len).unwrap();
                    let n = guard.write_at(0, black_box(&src));
                    guard.commit(n).unwrap();
                    let mut guard = rx.try_lock().unwrap();
                    guard.available(len).unwrap();
                    let n = guard.read_at(0, &mut out);
                    guard.consume(n).unwrap();
                    black_box(out[len - 1])
                })
            },
        );
    }
    group.finish();
}

fn channel(c: &mut Criterion) {
    let (mut reader, mut writer) = stream::pipe(1 << 20, &ChannelOptions::new()).unwrap();
    let mut group = c.benchmark_group("stream channel");
    for len in [64usize, 4096, 65536] {
        let src = vec![7u8; len];
        let mut out = vec![0u8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("write + read ({len} B)"), |b| {
            b.iter(|| {
                writer.write_all(black_box(&src)).unwrap();
                reader.read_exact(&mut out).unwrap();
                black_box(out[len - 1])
            })
        });
    }
    let frame = vec![7u8; 4096];
    group.throughput(Throughput::Bytes(4096));
    group.bench_function("write_window + read_window (4096 B)", |b| {
        b.iter(|| {
            let mut window = writer.write_window(4096).unwrap();
            window.copy_from(0, black_box(&frame));
            window.commit(4096).unwrap();
            let window = reader.read_window(4096).unwrap();
            black_box(window.as_ptr());
            window.consume(4096).unwrap();
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = ring, channel
}
criterion_main!(benches);
