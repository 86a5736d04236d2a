//! Regression tests from a second reading of the message queue: each shows
//! a defect found there, and asserts what the queue promises instead.

use super::*;
use crate::ring::HeapRegion;

fn make(max_msgs: usize) -> (HeapRegion, QueueHandle) {
    let config = QueueConfig {
        max_msgs,
        max_bytes: max_msgs * 8,
        max_msg: 8,
        priorities: 32,
    };
    let heap = HeapRegion::new(MessageQueue::required_size(&config).unwrap()).unwrap();
    // SAFETY: fresh memory, used only through the handle, which the
    // returned heap outlives in every test.
    let handle = unsafe {
        MessageQueue::init(heap.region(), &config, 0).unwrap();
        MessageQueue::attach(heap.region()).unwrap()
    };
    (heap, handle)
}

/// Free blocks, by walking the free list (bounded).
fn free_blocks(q: &QueueHandle) -> usize {
    let mut at = q.header().free_head.load(Ordering::Relaxed);
    let mut n = 0;
    while at != NIL && n <= q.block_count {
        n += 1;
        at = q.block(at)[NEXT].load(Ordering::Relaxed);
    }
    n
}

/// A `Found` is only good under the lock it was found under: one kept past
/// an unlock may name a message another handle has received since, whose
/// block is back on the free list. Receiving it must be refused, not unlink
/// a free block into a priority list (which would hand one block to two
/// owners and drive the count below the messages really queued).
#[test]
fn a_found_kept_past_its_lock_is_refused() {
    let (_heap, q) = make(4);
    let mut locked = q.try_lock(1).unwrap();
    locked.send(b"a", 1, 0, 1, 0).unwrap();
    locked.send(b"b", 1, 0, 1, 0).unwrap();
    let stale = locked.find(Select::Any, 0).unwrap().unwrap();
    drop(locked);

    // Another handle receives the same message meanwhile.
    let mut other = q.try_lock(2).unwrap();
    let found = other.find(Select::Any, 0).unwrap().unwrap();
    assert_eq!(found.index(), stale.index());
    other.receive(&found, &mut [0; 8], 2, 0, false).unwrap();
    drop(other);
    q.returned(2);

    let mut locked = q.try_lock(1).unwrap();
    let again = locked.receive(&stale, &mut [0; 8], 1, 0, false);
    assert!(
        matches!(again, Err(QueueOpError::Corrupted(_))),
        "a stale find was received: {again:?}"
    );
    // The queue is as the other receive left it: "b" queued, three free.
    let left = locked.find(Select::Any, 0).unwrap().unwrap();
    let mut out = [0u8; 8];
    assert_eq!(locked.peek(&left, &mut out), 1);
    assert_eq!(&out[..1], b"b");
    drop(locked);
    assert_eq!(q.stats().count, 1);
    assert_eq!(free_blocks(&q), 3);
}

/// As above for an in-place receive and for a found message that is now
/// loaned: neither may be received again.
#[test]
fn a_found_whose_block_was_reused_is_refused() {
    let (_heap, q) = make(2);
    let mut locked = q.try_lock(1).unwrap();
    locked.send(b"a", 1, 0, 1, 0).unwrap();
    let stale = locked.find(Select::Any, 0).unwrap().unwrap();
    // Received under this same lock, then its block lent out again.
    locked.receive(&stale, &mut [0; 8], 1, 0, false).unwrap();
    let lent = locked.loan(1).unwrap();
    assert_eq!(lent, stale.index());
    let again = locked.receive(&stale, &mut [], 1, 0, true);
    assert!(
        matches!(again, Err(QueueOpError::Corrupted(_))),
        "{again:?}"
    );
    let again = locked.withdraw(stale.index(), 1);
    assert_eq!(again, Ok(false));
    locked.free_held(lent).unwrap();
    drop(locked);
    q.returned(1);
    let stats = q.stats();
    assert_eq!((stats.count, stats.bytes), (0, 0));
    assert_eq!(free_blocks(&q), 2);
}

/// The journal lock's fields sit where its layout table says: the wait
/// word in it is 16 bytes (epoch, reserved, `generation << 32 | count`).
#[test]
fn journal_lock_layout_matches_its_table() {
    use std::mem::{offset_of, size_of};
    assert_eq!(size_of::<WaitWord>(), 16);
    assert_eq!(super::super::journal::JOURNAL_LOCK_SIZE, 40 + 16 * 24);
    assert_eq!(
        offset_of!(QueueHeader, lock) + super::super::journal::JOURNAL_LOCK_SIZE,
        512
    );
}
