//! Model tests of the queue structure, in one process.

use proptest::prelude::*;

use super::*;
use crate::ring::HeapRegion;

fn make(config: QueueConfig) -> (HeapRegion, QueueHandle) {
    let heap = HeapRegion::new(MessageQueue::required_size(&config).unwrap()).unwrap();
    // SAFETY: fresh memory, used only through the handle; `heap` is
    // returned alongside and outlives it in every test.
    let handle = unsafe {
        MessageQueue::init(heap.region(), &config, 5).unwrap();
        MessageQueue::attach(heap.region()).unwrap()
    };
    (heap, handle)
}

fn config(max_msgs: usize, max_msg: usize) -> QueueConfig {
    QueueConfig {
        max_msgs,
        max_bytes: max_msgs.max(1) * max_msg,
        max_msg,
        priorities: 32,
    }
}

const T: u64 = 1;

/// Receives with `select` into a fresh buffer: (type, priority, payload).
fn take(q: &QueueHandle, select: Select) -> Option<(u64, u32, Vec<u8>)> {
    let mut l = q.try_lock(T).unwrap();
    let found = l.find(select, 0).unwrap()?;
    let mut out = vec![0; found.len];
    l.receive(&found, &mut out, 9, 10, false).unwrap();
    drop(l);
    q.returned(T);
    Some((found.mtype, found.priority, out))
}

fn put(
    q: &QueueHandle,
    payload: &[u8],
    mtype: u64,
    priority: u32,
) -> Result<(u64, u64), QueueOpError> {
    q.try_lock(T).unwrap().send(payload, mtype, priority, 7, 8)
}

#[test]
fn highest_priority_first_then_oldest() {
    let (_heap, q) = make(config(8, 16));
    put(&q, b"a", 1, 0).unwrap();
    put(&q, b"b", 1, 5).unwrap();
    put(&q, b"c", 1, 5).unwrap();
    put(&q, b"d", 1, 31).unwrap();
    put(&q, b"", 1, 0).unwrap();
    let order: Vec<Vec<u8>> = std::iter::from_fn(|| take(&q, Select::Any).map(|m| m.2)).collect();
    assert_eq!(
        order,
        [
            b"d".to_vec(),
            b"b".to_vec(),
            b"c".to_vec(),
            b"a".to_vec(),
            vec![]
        ]
    );
    let stats = q.stats();
    assert_eq!(
        (stats.count, stats.bytes, stats.sent, stats.received),
        (0, 0, 5, 5)
    );
    assert_eq!(
        (stats.last_send_pid, stats.last_recv_pid, stats.created_ns),
        (7, 9, 5)
    );
}

#[test]
fn type_selection_modes() {
    let (_heap, q) = make(config(8, 16));
    for (mtype, prio) in [(5, 0), (3, 0), (9, 1), (3, 2), (2, 0)] {
        put(&q, &[mtype as u8], mtype, prio).unwrap();
    }
    // Receive order: prio 2: [3]; prio 1: [9]; prio 0: [5, 3, 2].
    assert_eq!(take(&q, Select::Type(5)).unwrap().0, 5);
    assert_eq!(take(&q, Select::Type(7)), None);
    assert_eq!(take(&q, Select::TypeAtMost(4)).unwrap().0, 2);
    let m = take(&q, Select::TypeAtMost(4)).unwrap();
    assert_eq!((m.0, m.1), (3, 2), "lowest type, first in receive order");
    assert_eq!(take(&q, Select::ExceptType(9)).unwrap().0, 3);
    assert_eq!(take(&q, Select::ExceptType(9)), None);
    assert_eq!(take(&q, Select::Any).unwrap().0, 9);
    assert_eq!(q.stats().count, 0);
}

#[test]
fn peek_finds_the_nth_in_receive_order_and_removes_nothing() {
    let (_heap, q) = make(config(8, 16));
    for (i, prio) in [0u32, 3, 3, 1].into_iter().enumerate() {
        put(&q, &[i as u8], 10 - i as u64, prio).unwrap();
    }
    let l = q.try_lock(T).unwrap();
    let mut out = [0u8; 1];
    let order: Vec<u8> = (0..4)
        .map(|n| {
            let found = l.find(Select::Any, n).unwrap().unwrap();
            l.peek(&found, &mut out);
            out[0]
        })
        .collect();
    assert_eq!(order, [1, 2, 3, 0]);
    assert_eq!(l.find(Select::Any, 4).unwrap(), None);
    // By type: 7 (msg 3), 8 (msg 2), 9 (msg 1), 10 (msg 0).
    let by_type: Vec<u64> = (0..4)
        .map(|n| l.find(Select::TypeAtMost(100), n).unwrap().unwrap().mtype)
        .collect();
    assert_eq!(by_type, [7, 8, 9, 10]);
    drop(l);
    assert_eq!(q.stats().count, 4);
}

#[test]
fn limits_reject_and_change_nothing() {
    let (_heap, q) = make(QueueConfig {
        max_msgs: 3,
        max_bytes: 10,
        max_msg: 8,
        priorities: 32,
    });
    assert_eq!(
        put(&q, &[0; 9], 1, 0),
        Err(QueueOpError::TooLarge { len: 9, max: 8 })
    );
    assert_eq!(put(&q, b"x", 0, 0), Err(QueueOpError::InvalidType));
    assert_eq!(
        put(&q, b"x", 1, 32),
        Err(QueueOpError::InvalidPriority {
            priority: 32,
            priorities: 32
        })
    );
    put(&q, &[1; 8], 1, 0).unwrap();
    assert_eq!(put(&q, &[1; 3], 1, 0), Err(QueueOpError::Full), "bytes");
    put(&q, &[1; 2], 1, 0).unwrap();
    put(&q, &[], 1, 0).unwrap();
    assert_eq!(put(&q, &[], 1, 0), Err(QueueOpError::Full), "messages");
    let stats = q.stats();
    assert_eq!((stats.count, stats.bytes, stats.sent), (3, 10, 3));
}

#[test]
fn priorities_and_sizes_are_validated_at_creation() {
    for bad in [
        QueueConfig {
            priorities: 31,
            ..config(4, 8)
        },
        QueueConfig {
            priorities: 65,
            ..config(4, 8)
        },
        QueueConfig {
            max_bytes: 7,
            ..config(4, 8)
        },
        config(MAX_BLOCKS + 1, 8),
        config(4, MAX_MESSAGE_LIMIT + 1),
        QueueConfig {
            max_msgs: MAX_BLOCKS,
            max_bytes: MAX_QUEUE_BYTES,
            max_msg: MAX_MESSAGE_LIMIT,
            priorities: 64,
        },
    ] {
        assert!(
            matches!(
                MessageQueue::required_size(&bad),
                Err(RingError::InvalidCapacity { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(config(0, 8).blocks(), RENDEZVOUS_BLOCKS);
}

#[test]
fn loans_reserve_bytes_and_are_sent_in_place() {
    let (_heap, q) = make(config(2, 16));
    let mut l = q.try_lock(T).unwrap();
    let block = l.loan(5).unwrap();
    drop(l);
    q.write_held(block, 0, b"he");
    q.write_held(block, 2, b"llo");
    assert_eq!(q.stats().bytes, 5);
    assert_eq!(q.stats().count, 0);
    let mut l = q.try_lock(T).unwrap();
    l.send_loaned(block, 4, 1, 1, 1).unwrap();
    drop(l);
    assert_eq!(take(&q, Select::Any), Some((4, 1, b"hello".to_vec())));
    // An unsent loan gives its bytes back.
    let mut l = q.try_lock(T).unwrap();
    let block = l.loan(16).unwrap();
    l.free_held(block).unwrap();
    drop(l);
    assert_eq!((q.stats().bytes, q.stats().count), (0, 0));
    put(&q, b"a", 1, 0).unwrap();
    put(&q, b"b", 1, 0).unwrap();
}

#[test]
fn a_borrowed_message_is_read_in_place_then_freed() {
    let (_heap, q) = make(config(1, 16));
    put(&q, b"abcdefghij", 3, 2).unwrap();
    let mut l = q.try_lock(T).unwrap();
    let found = l.find(Select::Any, 0).unwrap().unwrap();
    l.receive(&found, &mut [], 1, 1, true).unwrap();
    drop(l);
    let mut out = [0u8; 7];
    q.read_held(found.index, 3, &mut out);
    assert_eq!(&out, b"defghij");
    assert_eq!(
        put(&q, b"x", 1, 0),
        Err(QueueOpError::Full),
        "the block is held"
    );
    q.try_lock(T).unwrap().free_held(found.index).unwrap();
    put(&q, b"x", 1, 0).unwrap();
}

#[test]
fn a_dead_tokens_blocks_and_undelivered_receive_are_reclaimed() {
    let (_heap, q) = make(config(4, 16));
    let dead = 40;
    put(&q, b"1", 1, 0).unwrap();
    put(&q, b"2", 1, 0).unwrap();
    put(&q, b"3", 1, 0).unwrap();
    let mut l = q.try_lock(dead).unwrap();
    let found = l.find(Select::Any, 0).unwrap().unwrap();
    l.receive(&found, &mut [], 1, 1, true).unwrap(); // borrowed
    let found = l.find(Select::Any, 0).unwrap().unwrap();
    l.receive(&found, &mut [0; 1], 1, 1, false).unwrap(); // in hand
    l.loan(7).unwrap();
    // Dies holding the lock.
    std::mem::forget(l);
    assert_eq!(q.lock_holder(), dead);
    let reclaimed = q
        .reclaim(
            dead,
            WaitStrategy::Park,
            Deadline::after(std::time::Duration::from_secs(1)),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        reclaimed,
        Reclaimed {
            freed: 2,
            lost: 2,
            held_lock: true
        }
    );
    let stats = q.stats();
    assert_eq!(
        (stats.count, stats.bytes, stats.losses, stats.repairs),
        (1, 1, 2, 4)
    );
    assert_eq!(take(&q, Select::Any).unwrap().2, b"3");
    for i in 0..4 {
        put(&q, &[i], 1, 0).unwrap();
    }
    assert_eq!(put(&q, b"x", 1, 0), Err(QueueOpError::Full));
}

#[cfg(feature = "failpoints")]
#[test]
fn a_holder_dead_after_the_commit_point_has_its_send_replayed() {
    use crate::failpoint::abandon_at;
    for (step, applied) in [
        ("journal.staged", false),
        ("journal.committed", true),
        ("journal.applied", true),
    ] {
        let (_heap, q) = make(config(2, 16));
        let dead = 3;
        let mut l = q.try_lock(dead).unwrap();
        abandon_at(step);
        let _ = l.send(b"zz", 1, 0, 1, 1);
        std::mem::forget(l);
        let reclaimed = q
            .reclaim(
                dead,
                WaitStrategy::Park,
                Deadline::after(std::time::Duration::from_secs(1)),
            )
            .unwrap()
            .unwrap();
        assert!(reclaimed.held_lock);
        assert_eq!(q.stats().count, u64::from(applied), "{step}");
        assert_eq!(
            take(&q, Select::Any).map(|m| m.2),
            applied.then(|| b"zz".to_vec()),
            "{step}"
        );
        put(&q, b"a", 1, 0).unwrap();
        put(&q, b"b", 1, 0).unwrap();
    }
}

#[test]
fn a_rendezvous_message_is_withdrawn_unless_taken() {
    let (_heap, q) = make(config(0, 8));
    let (index, seq) = put(&q, b"r", 1, 0).unwrap();
    assert!(!q.taken(index, seq));
    assert!(q.try_lock(T).unwrap().withdraw(index, seq).unwrap());
    assert_eq!(q.stats().count, 0);
    let (index, seq) = put(&q, b"r", 1, 0).unwrap();
    take(&q, Select::Any).unwrap();
    assert!(q.taken(index, seq));
    assert!(!q.try_lock(T).unwrap().withdraw(index, seq).unwrap());
}

/// Damaged words: every walk and index is bounded, every error typed.
#[test]
fn scribbled_links_are_reported_not_followed() {
    let (_heap, q) = make(config(4, 16));
    put(&q, b"a", 1, 0).unwrap();
    put(&q, b"b", 1, 0).unwrap();
    let header = q.header();
    // A cycle: the tail links back to the head.
    let tail = header.tails[0].load(Ordering::Relaxed);
    let head = header.heads[0].load(Ordering::Relaxed);
    q.block(tail)[NEXT].store(head, Ordering::Relaxed);
    let l = q.try_lock(T).unwrap();
    assert!(matches!(
        l.find(Select::Type(99), 0),
        Err(QueueOpError::Corrupted(_))
    ));
    drop(l);
    q.block(tail)[NEXT].store(1 << 40, Ordering::Relaxed);
    assert!(matches!(
        q.try_lock(T).unwrap().find(Select::Type(99), 0),
        Err(QueueOpError::Corrupted(_))
    ));
    q.block(tail)[NEXT].store(NIL, Ordering::Relaxed);
    header.free_head.store(77, Ordering::Relaxed);
    assert!(matches!(
        put(&q, b"c", 1, 0),
        Err(QueueOpError::Corrupted(_))
    ));
    header.free_head.store(2, Ordering::Relaxed);
    q.block(head)[META].store(u64::MAX, Ordering::Relaxed);
    assert!(matches!(
        q.try_lock(T).unwrap().find(Select::Any, 0),
        Err(QueueOpError::Corrupted(_))
    ));
    header.bitmap.store(u64::MAX, Ordering::Relaxed);
    assert!(matches!(
        q.try_lock(T).unwrap().find(Select::Any, 0),
        Err(QueueOpError::Corrupted(_))
    ));
    assert_eq!(q.lock_holder(), 0);
}

#[test]
fn attach_validates_the_stored_parameters() {
    let (heap, _q) = make(config(4, 16));
    let region = heap.region();
    // SAFETY: the header is atomics; the handle is not used after this.
    let header = unsafe { &*region.as_ptr().cast::<QueueHeader>() };
    header.config.priorities.store(1000, Ordering::Relaxed);
    // SAFETY: as above.
    assert!(unsafe { MessageQueue::attach(region) }.is_err());
    header.config.priorities.store(32, Ordering::Relaxed);
    header.config.blocks.store(1 << 30, Ordering::Relaxed);
    // SAFETY: as above.
    assert!(unsafe { MessageQueue::attach(region) }.is_err());
    header.config.blocks.store(4, Ordering::Relaxed);
    header.config.max_msgs.store(1000, Ordering::Relaxed);
    // SAFETY: as above.
    assert!(unsafe { MessageQueue::attach(region) }.is_err());
}

#[derive(Clone, Debug)]
enum Op {
    Send {
        len: usize,
        mtype: u64,
        priority: u32,
    },
    Recv(Select),
}

fn op() -> impl Strategy<Value = Op> {
    let select = prop_oneof![
        Just(Select::Any),
        (1u64..5).prop_map(Select::Type),
        (1u64..5).prop_map(Select::TypeAtMost),
        (1u64..5).prop_map(Select::ExceptType),
    ];
    prop_oneof![
        (0usize..20, 1u64..5, 0u32..34).prop_map(|(len, mtype, priority)| Op::Send {
            len,
            mtype,
            priority
        }),
        select.prop_map(Op::Recv),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 200 }))]

    /// Against a model: a list of (seq, type, priority, payload); receive
    /// order is priority descending, then seq.
    #[test]
    fn matches_a_model(ops in proptest::collection::vec(op(), 1..80)) {
        let cfg = QueueConfig { max_msgs: 6, max_bytes: 40, max_msg: 16, priorities: 32 };
        let (_heap, q) = make(cfg);
        let mut model: Vec<(u64, u64, u32, Vec<u8>)> = Vec::new();
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Send { len, mtype, priority } => {
                    seq += 1;
                    let payload: Vec<u8> = (0..len).map(|i| (seq as u8).wrapping_add(i as u8)).collect();
                    let bytes: usize = model.iter().map(|m| m.3.len()).sum();
                    let expect = if len > cfg.max_msg {
                        Err(QueueOpError::TooLarge { len, max: cfg.max_msg })
                    } else if priority >= 32 {
                        Err(QueueOpError::InvalidPriority { priority, priorities: 32 })
                    } else if bytes + len > cfg.max_bytes || model.len() == cfg.max_msgs {
                        Err(QueueOpError::Full)
                    } else {
                        Ok(())
                    };
                    let got = put(&q, &payload, mtype, priority).map(|_| ());
                    prop_assert_eq!(got, expect);
                    if got.is_ok() {
                        model.push((seq, mtype, priority, payload));
                    }
                }
                Op::Recv(select) => {
                    let mut order: Vec<usize> = (0..model.len()).collect();
                    order.sort_by_key(|&i| (std::cmp::Reverse(model[i].2), model[i].0));
                    let pick = match select {
                        Select::TypeAtMost(t) => order
                            .iter()
                            .copied()
                            .filter(|&i| model[i].1 <= t)
                            .min_by_key(|&i| model[i].1),
                        _ => order.iter().copied().find(|&i| select.matches(model[i].1)),
                    };
                    let got = take(&q, select);
                    let expect = pick.map(|i| {
                        let m = model.remove(i);
                        (m.1, m.2, m.3)
                    });
                    prop_assert_eq!(got, expect);
                }
            }
            let stats = q.stats();
            prop_assert_eq!(stats.count, model.len() as u64);
            prop_assert_eq!(stats.bytes, model.iter().map(|m| m.3.len() as u64).sum::<u64>());
        }
    }
}

#[test]
fn layout_matches_the_documented_table() {
    use std::mem::offset_of;
    assert_eq!(offset_of!(QueueHeader, config), 40);
    assert_eq!(offset_of!(QueueHeader, lock), 88);
    assert_eq!(offset_of!(QueueHeader, free_head), 512);
    assert_eq!(offset_of!(QueueHeader, in_hand), 632);
    assert_eq!(offset_of!(QueueHeader, heads), 1152);
    assert_eq!(offset_of!(QueueHeader, tails), 1664);
    assert_eq!(offset_of!(QueueHeader, data_ready), 2176);
    assert_eq!(offset_of!(QueueHeader, space_ready), 2192);
    assert_eq!(blocks_offset(), 2240);
}
