//! The byte stream's locks, counters and sleep/wake under loom: writes of
//! two writers never interleave, bytes arrive in order across the wrap, no
//! wakeup is lost (loom reports a thread blocked for ever as a deadlock),
//! and a writer that stops for good at any step of a write, holding the
//! lock, leaves either all of its bytes or none once a survivor takes the
//! lock back. The data area is an array of loom `AtomicU8`s, so loom checks
//! that the counters' Release/Acquire pairs publish the bytes.
#![cfg(loom)]

use std::ptr::NonNull;

use ipcring::failpoint::abandon_at;
use ipcring::ring::stream::{
    CONTROL_SIZE, DataArea, StreamConsumer, StreamProducer, StreamRepair, StreamRing,
};
use ipcring::ring::{HeapRegion, Side};
use ipcring::sync::WaitStrategy;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use loom::thread;
use loom_tests::model;

const PARK: WaitStrategy = WaitStrategy::Park;

/// A stream of `capacity` bytes: its control block, and its data as loom
/// cells in a second allocation.
struct Stream {
    control: HeapRegion,
    cells: HeapRegion,
    capacity: usize,
}

impl Stream {
    fn new(capacity: usize) -> Arc<Stream> {
        let control =
            HeapRegion::new(StreamRing::required_size(capacity, CONTROL_SIZE).unwrap()).unwrap();
        // SAFETY: fresh memory, not shared yet.
        unsafe { StreamRing::init(control.region(), capacity, CONTROL_SIZE) }.unwrap();
        let cells = HeapRegion::new(capacity * std::mem::size_of::<AtomicU8>()).unwrap();
        for i in 0..capacity {
            // SAFETY: in bounds and aligned; loom atomics must be
            // constructed, not zeroed.
            unsafe {
                cells
                    .region()
                    .as_ptr()
                    .cast::<AtomicU8>()
                    .add(i)
                    .write(AtomicU8::new(0))
            };
        }
        Arc::new(Stream {
            control,
            cells,
            capacity,
        })
    }

    fn data(&self) -> DataArea {
        let ptr = NonNull::new(self.cells.region().as_ptr()).unwrap();
        // SAFETY: `capacity` constructed cells, alive as long as `self`.
        unsafe { DataArea::linear(ptr, self.capacity) }
    }

    fn producer(&self, id: u8) -> StreamProducer {
        // SAFETY: the stream outlives the handle (each thread keeps an Arc);
        // ids are distinct per side in each model.
        unsafe { StreamProducer::attach(self.control.region(), self.data(), id) }.unwrap()
    }

    fn consumer(&self, id: u8) -> StreamConsumer {
        // SAFETY: as above.
        unsafe { StreamConsumer::attach(self.control.region(), self.data(), id) }.unwrap()
    }

    fn repair(&self) -> StreamRepair {
        // SAFETY: as above.
        unsafe { StreamRepair::attach(self.control.region()) }.unwrap()
    }
}

/// Writes `bytes` whole (an atomic write): takes the lock, waiting on it,
/// and waits for room without it.
fn write_whole(tx: &mut StreamProducer, bytes: &[u8]) {
    loop {
        if !tx.try_acquire() {
            tx.acquire(PARK, None);
        }
        let mut guard = tx.try_lock().unwrap();
        if guard.free(bytes.len()).unwrap() >= bytes.len() {
            assert_eq!(guard.write_at(0, bytes), bytes.len());
            guard.commit(bytes.len()).unwrap();
            return;
        }
        drop(guard);
        tx.wait_for_space(bytes.len(), PARK, None, || false);
    }
}

/// Reads at most `max` bytes, waiting for at least one.
fn read_some(rx: &mut StreamConsumer, max: usize) -> Vec<u8> {
    loop {
        if !rx.try_acquire() {
            rx.acquire(PARK, None);
        }
        let mut guard = rx.try_lock().unwrap();
        let n = guard.available(1).unwrap().min(max);
        if n > 0 {
            let mut out = vec![0; n];
            assert_eq!(guard.read_at(0, &mut out), n);
            guard.consume(n).unwrap();
            return out;
        }
        drop(guard);
        rx.wait_for_data(1, PARK, None, || false);
    }
}

/// Two writers, one atomic write each, into a ring that holds exactly
/// both; the reader, taking at most three bytes at a time, sees each write
/// whole.
#[test]
fn writes_of_two_writers_never_interleave() {
    model(|| {
        let stream = Stream::new(4);
        let writers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|id| {
                let stream = stream.clone();
                thread::spawn(move || {
                    let mut tx = stream.producer(id);
                    write_whole(&mut tx, &[id, id]);
                })
            })
            .collect();
        let mut rx = stream.consumer(0);
        let mut got = Vec::new();
        while got.len() < 4 {
            got.extend(read_some(&mut rx, 3));
        }
        for writer in writers {
            writer.join().unwrap();
        }
        assert!(got == [1, 1, 2, 2] || got == [2, 2, 1, 1], "{got:?}");
    });
}

/// Five bytes through a three-byte ring in writes of two and one: the
/// writer must sleep on a full ring and the reader on an empty one, both
/// must be woken, and the bytes come out in order across the wrap.
#[test]
fn blocking_hand_off_across_the_wrap() {
    model(|| {
        let stream = Stream::new(3);
        let writer = {
            let stream = stream.clone();
            thread::spawn(move || {
                let mut tx = stream.producer(0);
                write_whole(&mut tx, &[1, 2]);
                write_whole(&mut tx, &[3, 4]);
                write_whole(&mut tx, &[5]);
            })
        };
        let mut rx = stream.consumer(0);
        let mut got = Vec::new();
        while got.len() < 5 {
            got.extend(read_some(&mut rx, 2));
        }
        writer.join().unwrap();
        assert_eq!(got, [1, 2, 3, 4, 5]);
    });
}

/// A writer stops for good at `step` of an atomic write, holding the lock.
/// A survivor that learns of the death (as the channel layer's reaper
/// does, from the kernel) takes the lock back and writes; the reader sees
/// the dead writer's bytes whole or not at all, then the survivor's.
fn writer_dies_at(step: &'static str, published: bool) {
    model(move || {
        let stream = Stream::new(4);
        let dead = Arc::new(AtomicBool::new(false));
        let dying = {
            let (stream, dead) = (stream.clone(), dead.clone());
            thread::spawn(move || {
                let mut tx = stream.producer(1);
                abandon_at(step);
                if let Some(mut guard) = tx.try_lock() {
                    if guard.write_at(0, &[9, 9]) == 2 {
                        let _ = guard.commit(2);
                    } else {
                        std::mem::forget(guard);
                    }
                }
                // The handle has no Drop: a dead thread's just stops.
                drop(tx);
                // Release: pairs with the survivor's Acquire load; the
                // kernel reports a death after all the process's stores.
                dead.store(true, Ordering::Release);
            })
        };
        let survivor = {
            let (stream, dead) = (stream.clone(), dead.clone());
            thread::spawn(move || {
                let mut tx = stream.producer(2);
                let repair = stream.repair();
                loop {
                    if tx.try_acquire() {
                        break;
                    }
                    // Acquire: pairs with the Release store above.
                    if dead.load(Ordering::Acquire) {
                        repair.release_dead(Side::Producer, 1).unwrap();
                    } else {
                        thread::yield_now();
                    }
                }
                let mut guard = tx.try_lock().unwrap();
                assert!(guard.free(1).unwrap() >= 1);
                guard.write_at(0, &[5]);
                guard.commit(1).unwrap();
            })
        };
        dying.join().unwrap();
        survivor.join().unwrap();
        let mut rx = stream.consumer(0);
        let mut guard = rx.try_lock().unwrap();
        let n = guard.available(4).unwrap();
        let mut got = vec![0; n];
        guard.read_at(0, &mut got);
        // The survivor may have written before the dying writer locked,
        // or held the lock when it tried (it then died holding nothing).
        let valid: &[&[u8]] = if published {
            &[&[9, 9, 5], &[5, 9, 9], &[5]]
        } else {
            &[&[5]]
        };
        assert!(valid.contains(&got.as_slice()), "{step}: {got:?}");
    });
}

#[test]
fn a_writer_dead_holding_the_lock_before_copying_leaves_nothing() {
    writer_dies_at("stream.write.locked", false);
}

#[test]
fn a_writer_dead_mid_copy_leaves_nothing() {
    writer_dies_at("stream.write.copying", false);
}

#[test]
fn a_writer_dead_before_publishing_leaves_nothing() {
    writer_dies_at("stream.write.copied", false);
}

#[test]
fn a_writer_dead_after_publishing_leaves_its_write_whole() {
    writer_dies_at("stream.write.published", true);
}
