//! Steady-state messaging allocates nothing: a counting global allocator
//! watches sends and receives on every channel kind after warm-up.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Cleanup, unique_posix};
use ipcring::channel::{ChannelOptions, mpmc, spsc};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

// One test function, so no other test thread allocates while we count.
#[test]
fn steady_state_send_and_receive_allocate_nothing() {
    let address = unique_posix("noalloc-spsc");
    let _cleanup = Cleanup(address.clone());
    let mut tx = spsc::Sender::<u64>::create(&address, 64, &ChannelOptions::new()).unwrap();
    let mut rx = spsc::Receiver::<u64>::open(&address).unwrap();
    let mut out = [0u64; 16];
    let count = allocations_during(|| {
        for i in 0..100_000u64 {
            tx.try_send(i).unwrap();
            assert_eq!(rx.try_recv().unwrap(), i);
            tx.send(i).unwrap();
            assert_eq!(rx.recv().unwrap(), i);
            tx.try_send_slice(&[i; 8]).unwrap();
            assert_eq!(rx.try_recv_slice(&mut out).unwrap(), 8);
            let mut chunk = tx.write_chunk(2).unwrap();
            chunk.fill_from_slice(&[i, i]);
            chunk.commit_all();
            rx.read_chunk(2).unwrap().commit_all();
        }
        // Empty and timed-out receives take the slow path; still nothing.
        assert!(rx.try_recv().is_err());
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(1))
                .is_err()
        );
    });
    assert_eq!(count, 0, "SPSC allocated {count} times");

    let address = unique_posix("noalloc-mpmc");
    let _cleanup = Cleanup(address.clone());
    let mut tx = mpmc::Sender::<[u8; 32]>::create(&address, 64, &ChannelOptions::new()).unwrap();
    let mut rx = mpmc::Receiver::<[u8; 32]>::open(&address).unwrap();
    let count = allocations_during(|| {
        for i in 0..100_000u32 {
            tx.send([i as u8; 32]).unwrap();
            assert_eq!(rx.recv().unwrap(), [i as u8; 32]);
        }
    });
    assert_eq!(count, 0, "MPMC allocated {count} times");

    use ipcring::channel::records;
    use ipcring::ring::record::ProducerMode;
    for mode in [ProducerMode::Single, ProducerMode::Many] {
        let address = unique_posix("noalloc-rec");
        let _cleanup = Cleanup(address.clone());
        let mut tx = records::Sender::create(&address, 4096, mode, &ChannelOptions::new()).unwrap();
        let mut rx = records::Receiver::open(&address).unwrap();
        let mut out = Vec::with_capacity(64);
        let payload = [9u8; 48];
        let count = allocations_during(|| {
            for _ in 0..100_000 {
                tx.send(&payload).unwrap();
                assert_eq!(rx.recv_into(&mut out).unwrap(), 48);
                tx.try_send(&payload[..7]).unwrap();
                assert_eq!(rx.try_recv().unwrap().len(), 7);
            }
        });
        assert_eq!(
            count, 0,
            "record channel ({mode:?}) allocated {count} times"
        );
    }
}
