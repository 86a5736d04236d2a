//! Targeted scribbles over a message queue's state words: values no run of
//! the algorithm can leave (more bytes queued than the queue holds, blocks
//! lost from the free list, the lock word naming the caller itself). The
//! promise is a typed error or correct behaviour, never a hang: every
//! blocking call here runs on its own thread under a time limit, and must
//! end (with `Corrupted`) instead of waiting for room that can never come.

mod common;
mod hostile_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Cleanup, unique_posix};
use hostile_support::{bounded, peek, poke};
use ipcring::channel::ChannelOptions;
use ipcring::channel::RING_OFFSET;
use ipcring::channel::queue::{Queue, QueueConfig, QueueRecvError, QueueSendError, Select};
use ipcring::segment::{Address, OpenOptions, Segment};

/// How long a blocking call may take to notice the damage (a few wait
/// slices, with room for a loaded machine).
const NOTICE: Duration = Duration::from_secs(5);
const NIL: u64 = u64::MAX;
/// The lock word's place in the queue header (after the ring info and the
/// stored configuration).
const LOCK_HOLDER: usize = RING_OFFSET + 88;

/// Where the queue's state words are: found by their values rather than
/// hard-coded, so a layout change fails loudly here instead of poking the
/// wrong word.
struct State {
    free_head: usize,
    bytes: usize,
}

fn new_queue(tag: &str, config: QueueConfig) -> (Cleanup, Queue, Address, Segment, State) {
    let address = unique_posix(tag);
    let cleanup = Cleanup(address.clone());
    let mut queue = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
    let segment = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
    // Three messages of 1, 2 and 3 bytes: count 3, bytes 6, next sequence
    // 4, and the free head the fourth block; three consecutive words.
    for len in 1..=3u8 {
        queue.send(&vec![len; len as usize], 1, 0).unwrap();
    }
    let words: Vec<u64> = (0..200)
        .map(|i| peek(&segment, LOCK_HOLDER + 8 * i))
        .collect();
    let at = words
        .windows(3)
        .position(|w| w == [3, 6, 4])
        .expect("count, bytes and sequence words not found");
    let count = LOCK_HOLDER + 8 * at;
    let state = State {
        free_head: count - 16,
        bytes: count + 8,
    };
    assert!(
        [3, NIL].contains(&peek(&segment, state.free_head)),
        "free head"
    );
    let mut buf = [0u8; 64];
    while queue.try_recv(Select::Any, &mut buf).is_ok() {}
    (cleanup, queue, address, segment, state)
}

/// The bytes word says more than the queue may ever hold: a blocking send
/// into the (empty) queue must not wait for ever.
#[test]
fn bytes_above_the_limit_do_not_wedge_a_blocking_send() {
    let config = QueueConfig::new(4, 16);
    let (_c, mut queue, _address, segment, state) = new_queue("h7-bytes", config);
    poke(&segment, state.bytes, u64::MAX - 3);
    let sent = bounded(NOTICE, move || {
        let sent = queue.send(b"abc", 1, 0);
        (sent, queue.stats().count)
    })
    .expect_returned("send with bytes scribbled above the limit");
    assert!(
        matches!(sent.0, Err(QueueSendError::Corrupted(_))),
        "{sent:?}"
    );
}

/// Bytes equal to the limit with nothing queued and nothing lent: the
/// queue is empty, so a send that waits for room waits for ever.
#[test]
fn bytes_with_nothing_queued_do_not_wedge_a_blocking_send() {
    let config = QueueConfig::new(4, 16);
    let (_c, mut queue, _address, segment, state) = new_queue("h7-bytes-full", config);
    poke(&segment, state.bytes, 64);
    let sent = bounded(NOTICE, move || queue.send(b"abc", 1, 0))
        .expect_returned("send with bytes scribbled to the limit");
    assert!(
        matches!(sent, Err(QueueSendError::Corrupted(_))),
        "{sent:?}"
    );
}

/// The free list scribbled empty while no block is queued or lent: every
/// block is lost, and a blocking send would wait for ever.
#[test]
fn a_lost_free_list_does_not_wedge_a_blocking_send_or_loan() {
    let config = QueueConfig::new(4, 16);
    let (_c, mut queue, _address, segment, state) = new_queue("h7-free", config);
    poke(&segment, state.free_head, NIL);
    let (sent, loaned) = bounded(NOTICE, move || {
        let sent = queue.send(b"abc", 1, 0);
        let loaned = queue.loan(3).map(|_| ());
        (sent, loaned)
    })
    .expect_returned("send with the free list scribbled empty");
    assert!(
        matches!(sent, Err(QueueSendError::Corrupted(_))),
        "{sent:?}"
    );
    assert!(
        matches!(loaned, Err(QueueSendError::Corrupted(_))),
        "{loaned:?}"
    );
}

/// A legitimately full queue (every block queued, or lent) is not taken
/// for a damaged one: the send times out, the loan too, and both succeed
/// once room is made.
#[test]
fn a_full_queue_with_loans_is_not_reported_corrupted() {
    let config = QueueConfig::new(3, 16);
    let (_c, mut queue, address, _segment, _state) = new_queue("h7-full", config);
    let mut other = Queue::open(&address).unwrap();
    let mut third = Queue::open(&address).unwrap();
    // Three blocks: one held in place, one lent, one queued.
    queue.send(b"a", 1, 0).unwrap();
    let in_place = third.try_recv_in_place(Select::Any).unwrap();
    let loan = other.try_loan(4).unwrap();
    queue.send(b"b", 1, 0).unwrap();
    assert_eq!(queue.stats().count, 1);
    let short = Duration::from_millis(150);
    assert_eq!(
        queue.send_timeout(b"d", 1, 0, short),
        Err(QueueSendError::Timeout)
    );
    assert!(matches!(
        queue.loan_timeout(1, short),
        Err(QueueSendError::Timeout)
    ));
    drop(loan);
    queue.send_timeout(b"d", 1, 0, short).unwrap();
    drop(in_place);
    queue.send_timeout(b"e", 1, 0, short).unwrap();
    assert_eq!(queue.stats().count, 3);
}

/// The lock word scribbled to the caller's own token: nobody else acts
/// under that token, so it is not a holder to wait for.
#[test]
fn the_lock_word_naming_the_caller_does_not_wedge_it() {
    let config = QueueConfig::new(4, 16);
    let (_c, mut queue, address, segment, _state) = new_queue("h7-own-token", config);
    // The first handle attached has slot 0, so token 1.
    let mut other = Queue::open(&address).unwrap();
    other.send(b"x", 1, 0).unwrap();
    drop(other);
    poke(&segment, LOCK_HOLDER, 1);
    let got = bounded(NOTICE, move || {
        let mut buf = [0u8; 16];
        let first = queue.recv(Select::Any, &mut buf);
        let second = queue.recv_timeout(Select::Any, &mut buf, Duration::from_millis(50));
        (first, second)
    })
    .expect_returned("recv with the lock word naming the caller");
    // Refused as damaged once, the word freed, and then served.
    assert!(
        matches!(got.0, Err(QueueRecvError::Corrupted(_))),
        "{got:?}"
    );
    assert!(matches!(got.1, Ok(ref r) if r.len == 1), "{got:?}");
    let value = segment
        .view::<AtomicU64>(LOCK_HOLDER)
        .unwrap()
        .load(Ordering::SeqCst);
    assert_eq!(value, 0, "the lock is free again");
}

/// A failed `try_lock` leaves the lock alone, even when the word holds the
/// caller's token (a reaper acting for a dead handle under its token, or a
/// process forked with a handle, acts under a token that is not its own).
/// It used to build the guard before knowing whether the lock was taken,
/// and the guard's drop released the other holder's lock.
#[test]
fn a_failed_try_lock_does_not_release_the_holders_lock() {
    use ipcring::ring::HeapRegion;
    use ipcring::ring::queue::{MessageQueue, QueueConfig as RingConfig};
    let config = RingConfig {
        max_msgs: 2,
        max_bytes: 16,
        max_msg: 8,
        priorities: 32,
    };
    let heap = HeapRegion::new(MessageQueue::required_size(&config).unwrap()).unwrap();
    // SAFETY: fresh heap memory, used only through these handles.
    let queue = unsafe {
        MessageQueue::init(heap.region(), &config, 0).unwrap();
        MessageQueue::attach(heap.region()).unwrap()
    };
    let held = queue.try_lock(7).expect("free lock");
    assert!(queue.try_lock(7).is_none(), "taken twice");
    assert_eq!(
        queue.lock_holder(),
        7,
        "a failed try_lock released the lock"
    );
    let timed = ipcring::sync::Deadline::after(Duration::from_millis(20));
    assert!(
        queue
            .lock(7, ipcring::sync::WaitStrategy::Park, Some(timed))
            .is_none()
    );
    assert_eq!(queue.lock_holder(), 7, "a failed lock released the lock");
    drop(held);
    assert_eq!(queue.lock_holder(), 0);
}
