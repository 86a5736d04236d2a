//! The journaled lock under loom: a holder stops for good at any step of a
//! commit (a failpoint), a survivor that learns of the death releases the
//! lock, and whoever takes it next sees the update applied whole or not at
//! all, never half.
#![cfg(loom)]

use ipcring::failpoint::abandon_at;
use ipcring::ring::journal::{JournalLock, Released, owner_token};
use ipcring::ring::{HeapRegion, Region, Side};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::thread;
use loom_tests::model;

const WORDS: [usize; 2] = [1024, 1032];

fn setup() -> Arc<HeapRegion> {
    let heap = HeapRegion::new(2048).unwrap();
    let region = heap.region();
    // SAFETY: fresh memory, not shared yet.
    unsafe { JournalLock::init(&region, 0) }.unwrap();
    for offset in WORDS {
        // SAFETY: in bounds, aligned, not shared yet; loom atomics must be
        // constructed, not zeroed.
        unsafe {
            region
                .as_ptr()
                .add(offset)
                .cast::<AtomicU64>()
                .write(AtomicU64::new(0))
        };
    }
    Arc::new(heap)
}

fn word(region: &Region, offset: usize) -> &AtomicU64 {
    // SAFETY: constructed in `setup`, which the region outlives.
    unsafe { &*region.as_ptr().add(offset).cast::<AtomicU64>() }
}

fn lock(region: &Region) -> &JournalLock {
    // SAFETY: initialised in `setup`.
    unsafe { JournalLock::at(region, 0) }.unwrap()
}

/// The holder stages both words and commits; it dies at `step` (if any).
/// The survivor takes the lock (releasing it from the dead holder once the
/// death is known) and checks that both words agree.
fn holder_dies_at(step: Option<&'static str>) {
    model(move || {
        let heap = setup();
        let dead = Arc::new(AtomicBool::new(false));
        let holder = {
            let (heap, dead) = (heap.clone(), dead.clone());
            thread::spawn(move || {
                let region = heap.region();
                let lock = lock(&region);
                let token = owner_token(Side::Producer, 0);
                if !lock.try_lock(token) {
                    return false;
                }
                let mut tx = lock.transaction(&region);
                for offset in WORDS {
                    tx.set(word(&region, offset), 1).unwrap();
                }
                if let Some(step) = step {
                    abandon_at(step);
                    tx.commit(9).unwrap();
                    // Release: pairs with the survivor's Acquire load; the
                    // kernel reports a death after all the process's stores.
                    dead.store(true, Ordering::Release);
                    return true;
                }
                tx.commit(9).unwrap();
                lock.unlock(token).unwrap();
                true
            })
        };
        let region = heap.region();
        let lock = lock(&region);
        let token = owner_token(Side::Consumer, 0);
        let mut released = None;
        loop {
            if lock.try_lock(token) {
                let a = word(&region, WORDS[0]).load(Ordering::Relaxed);
                let b = word(&region, WORDS[1]).load(Ordering::Relaxed);
                assert_eq!(a, b, "half an update is visible");
                if released == Some(Released::Replayed(9)) {
                    assert_eq!(a, 1);
                }
                lock.unlock(token).unwrap();
                break;
            }
            // Acquire: pairs with the dead holder's Release store.
            if released.is_none() && dead.load(Ordering::Acquire) {
                released = Some(
                    lock.release_dead(&region, owner_token(Side::Producer, 0))
                        .unwrap(),
                );
                continue;
            }
            thread::yield_now();
        }
        holder.join().unwrap();
    });
}

#[test]
fn holder_lives() {
    holder_dies_at(None);
}

#[test]
fn holder_dies_before_the_commit_point() {
    holder_dies_at(Some("journal.staged"));
}

#[test]
fn holder_dies_after_the_commit_point() {
    holder_dies_at(Some("journal.committed"));
}

#[test]
fn holder_dies_after_applying() {
    holder_dies_at(Some("journal.applied"));
}
