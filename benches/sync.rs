//! Costs of the sync layer and of segment set-up, in-process.
//!
//! `cargo bench --bench sync`. The figures that matter are the notifier's
//! fast path (no sleeper: a fence and a load, no syscall) against the futex
//! wake it avoids.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::AtomicU32;

use criterion::{Criterion, criterion_group, criterion_main};
use ipcring::segment::{Address, CreateOptions, Segment};
use ipcring::sync::WaitWord;

fn notify(c: &mut Criterion) {
    let word = WaitWord::new();
    c.bench_function("notify_one/no sleeper (fast path)", |b| {
        b.iter(|| black_box(&word).notify_one())
    });
    let futex = AtomicU32::new(0);
    c.bench_function("futex_wake syscall/no sleeper", |b| {
        b.iter(|| {
            // The same syscall a notifier makes when a sleeper announced
            // itself; here nobody sleeps, so it measures the kernel entry.
            black_box(ipcring::sync::shim::futex_wake(black_box(&futex), 1))
        })
    });
}

fn segment_lifecycle(c: &mut Criterion) {
    let address: Address = format!("bench-sync-{}", std::process::id())
        .parse()
        .unwrap();
    c.bench_function("segment create+remove (posix, 64 KiB)", |b| {
        b.iter(|| {
            let segment = Segment::create(&address, &CreateOptions::new(64 << 10)).unwrap();
            Segment::remove(&address).unwrap();
            drop(segment);
        })
    });
}

criterion_group!(benches, notify, segment_lifecycle);
criterion_main!(benches);
