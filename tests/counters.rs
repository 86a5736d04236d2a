//! `channel::counters`: the totals an observer reads from a channel's
//! shared memory without attaching, for every channel kind, and what it
//! makes of memory that was scribbled over.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use common::{Cleanup, unique_posix};
use ipcring::channel::queue::{Queue, QueueConfig};
use ipcring::channel::{
    self, Change, ChannelError, ChannelOptions, Counters, mpmc, records, spsc, stream,
};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment};
use ipcring::sync::WaitStrategy;

const SECOND: Duration = Duration::from_secs(1);

/// The segment as an observer maps it: read-only, attached to nothing.
fn observe(address: &Address) -> Segment {
    let options = OpenOptions::new()
        .read_only()
        .allow_foreign_owner(true)
        .timeout(Duration::ZERO);
    Segment::open(address, &options).unwrap()
}

fn counters(address: &Address) -> Counters {
    channel::counters(&observe(address)).unwrap()
}

/// Where the parts of a channel's user area are (see `channel` and
/// `ring::spsc`): the ring after the one-page endpoint table, its `tail` on
/// the second cache line, its `data_ready` wait word on the fourth.
const RING: usize = 4096;
const RING_TAIL: usize = RING + 128;
const DATA_READY_FUTEX_CALLS: usize = RING + 384 + 4;
const RING_FLAGS: usize = RING + 32;

/// A writable mapping of the segment, as another process with write
/// access has.
fn writable(address: &Address) -> Segment {
    Segment::open(address, &OpenOptions::new()).unwrap()
}

/// Stores into the user area, atomically, as such a process could.
fn poke_u64(segment: &Segment, offset: usize, value: u64) {
    segment
        .view::<AtomicU64>(offset)
        .unwrap()
        .store(value, Ordering::SeqCst);
}

fn poke_u32(segment: &Segment, offset: usize, value: u32) {
    segment
        .view::<AtomicU32>(offset)
        .unwrap()
        .store(value, Ordering::SeqCst);
}

#[test]
fn spsc_counts_items_and_bytes_from_its_positions() {
    let address = unique_posix("counters-spsc");
    let _cleanup = Cleanup(address.clone());
    let mut tx = spsc::Sender::<u64>::create(&address, 64, &ChannelOptions::new()).unwrap();
    let mut rx = spsc::Receiver::<u64>::open(&address).unwrap();
    let before = counters(&address);
    assert_eq!(
        before,
        Counters {
            messages: Some(0),
            bytes: Some(0),
            futex_calls: 0,
            repairs: 0,
            losses: 0
        }
    );
    for i in 0..50 {
        tx.send(i).unwrap();
    }
    for _ in 0..20 {
        rx.recv().unwrap();
    }
    let after = counters(&address);
    // Sent, not received: the producer's position.
    assert_eq!((after.messages, after.bytes), (Some(50), Some(400)));
    let changes = after.since(&before, SECOND);
    assert_eq!(changes.messages, Change::By(50));
    assert_eq!(changes.bytes.per_second(SECOND / 2), Some(800.0));
}

#[test]
fn a_sleeping_receiver_shows_in_the_futex_count() {
    const WAKES: u32 = 20;
    let address = unique_posix("counters-futex");
    let _cleanup = Cleanup(address.clone());
    let options = ChannelOptions::new().wait_strategy(WaitStrategy::Park);
    let mut rx = spsc::Receiver::<u64>::create(&address, 4, &options).unwrap();
    let mut tx = spsc::Sender::<u64>::open(&address).unwrap();
    let receiver = std::thread::spawn(move || {
        for i in 0..u64::from(WAKES) {
            assert_eq!(rx.recv().unwrap(), i);
        }
    });
    let observer = observe(&address);
    let mut seen = channel::counters(&observer).unwrap().futex_calls;
    for i in 0..u64::from(WAKES) {
        // The count goes up right before the receiver's futex wait: it is
        // asleep (or about to be) for item i, so this send must wake it.
        common::eventually(Duration::from_secs(10), "the receiver to sleep", || {
            channel::counters(&observer).unwrap().futex_calls != seen
        });
        tx.send(i).unwrap();
        seen = channel::counters(&observer).unwrap().futex_calls;
    }
    receiver.join().unwrap();
    let calls = channel::counters(&observer).unwrap().futex_calls;
    // At least one wait per item; the wakes come on top.
    assert!(calls >= WAKES, "{calls} futex calls for {WAKES} sleeps");
}

#[test]
fn mpmc_counts_claimed_positions_times_the_item_size() {
    let address = unique_posix("counters-mpmc");
    let _cleanup = Cleanup(address.clone());
    let mut tx = mpmc::Sender::<u32>::create(&address, 64, &ChannelOptions::new()).unwrap();
    let mut rx = mpmc::Receiver::<u32>::open(&address).unwrap();
    for i in 0..30 {
        tx.send(i).unwrap();
    }
    rx.recv().unwrap();
    let now = counters(&address);
    assert_eq!((now.messages, now.bytes), (Some(30), Some(120)));
    assert_eq!((now.repairs, now.losses), (0, 0));
}

#[test]
fn record_channels_count_ring_bytes_but_not_records() {
    for mode in [ProducerMode::Single, ProducerMode::Many] {
        let address = unique_posix("counters-records");
        let _cleanup = Cleanup(address.clone());
        let mut tx = records::Sender::create(&address, 4096, mode, &ChannelOptions::new()).unwrap();
        tx.send(b"hello").unwrap(); // 8-byte header + 5 bytes padded to 8
        tx.send(&[7u8; 16]).unwrap(); // 8 + 16
        let now = counters(&address);
        assert_eq!(now.messages, None, "{mode:?}");
        assert_eq!(now.bytes, Some(16 + 24), "{mode:?}");
        let changes = now.since(&now, SECOND);
        assert_eq!(changes.messages, Change::NotKept);
        assert_eq!(changes.bytes, Change::By(0));
    }
}

#[test]
fn a_stream_counts_bytes_written() {
    let address = unique_posix("counters-stream");
    let _cleanup = Cleanup(address.clone());
    let mut writer = stream::Writer::create(&address, 1 << 16, &ChannelOptions::new()).unwrap();
    let mut reader = stream::Reader::open(&address).unwrap();
    writer.write_all(&[1u8; 1000]).unwrap();
    let mut out = [0u8; 300];
    reader.read_exact(&mut out).unwrap();
    let now = counters(&address);
    assert_eq!((now.messages, now.bytes), (None, Some(1000)));
}

#[test]
fn a_queue_counts_sends_and_their_payload_bytes() {
    let address = unique_posix("counters-queue");
    let _cleanup = Cleanup(address.clone());
    let mut queue =
        Queue::create(&address, &QueueConfig::new(16, 64), &ChannelOptions::new()).unwrap();
    queue.send(b"one", 1, 0).unwrap();
    queue.send(b"three", 2, 5).unwrap();
    let now = counters(&address);
    assert_eq!((now.messages, now.bytes), (Some(2), Some(8)));
    assert_eq!(queue.stats().bytes_sent, 8);
}

/// Garbage where the counters live: no panic, no overflow, and a reading
/// that went backwards or jumped is implausible rather than a rate.
#[test]
fn scribbled_counters_are_implausible_not_a_panic() {
    let address = unique_posix("counters-scribble");
    let _cleanup = Cleanup(address.clone());
    let mut tx = spsc::Sender::<u64>::create(&address, 64, &ChannelOptions::new()).unwrap();
    for i in 0..10 {
        tx.send(i).unwrap();
    }
    let before = counters(&address);
    assert_eq!(before.messages, Some(10));
    let scribbler = writable(&address);

    // Backwards.
    poke_u64(&scribbler, RING_TAIL, 3);
    let after = counters(&address);
    assert_eq!(after.messages, Some(3));
    let changes = after.since(&before, SECOND);
    assert_eq!(changes.messages, Change::Implausible);
    assert_eq!(changes.bytes, Change::Implausible);
    assert_eq!(changes.messages.per_second(SECOND), None);

    // An absurd jump, and bytes that overflow u64 when multiplied.
    poke_u64(&scribbler, RING_TAIL, u64::MAX - 1);
    poke_u32(&scribbler, DATA_READY_FUTEX_CALLS, 0xdead_beef);
    let after = counters(&address);
    let changes = after.since(&before, SECOND);
    assert_eq!(changes.messages, Change::Implausible);
    assert_eq!(changes.futex_calls, Change::Implausible);

    // Back to a sane value: the next interval is told again.
    poke_u64(&scribbler, RING_TAIL, 12);
    poke_u32(&scribbler, DATA_READY_FUTEX_CALLS, 0);
    let sane = counters(&address);
    assert_eq!(sane.since(&before, SECOND).messages, Change::By(2));
}

#[test]
fn a_scribbled_producer_mode_leaves_bytes_untold() {
    let address = unique_posix("counters-scribble-mode");
    let _cleanup = Cleanup(address.clone());
    let mut tx =
        records::Sender::create(&address, 4096, ProducerMode::Single, &ChannelOptions::new())
            .unwrap();
    tx.send(b"x").unwrap();
    poke_u64(&writable(&address), RING_FLAGS, 0x55);
    let now = counters(&address);
    assert_eq!((now.messages, now.bytes), (None, None));
}

#[test]
fn every_word_of_a_queue_header_scribbled_still_reads_without_panic() {
    let address = unique_posix("counters-scribble-queue");
    let _cleanup = Cleanup(address.clone());
    let mut queue =
        Queue::create(&address, &QueueConfig::new(4, 64), &ChannelOptions::new()).unwrap();
    queue.send(b"abc", 1, 0).unwrap();
    let before = counters(&address);
    let scribbler = writable(&address);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    // Everything after the magic, up to the blocks (2240 bytes in).
    for offset in (RING + 8..RING + 2240).step_by(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        poke_u64(&scribbler, offset, x);
    }
    let after = counters(&address);
    let _ = after.since(&before, SECOND);
    let _ = before.since(&after, Duration::ZERO);
}

#[test]
fn a_segment_without_a_channel_is_unsupported() {
    let address = unique_posix("counters-plain");
    let _cleanup = Cleanup(address.clone());
    let _segment = Segment::create(&address, &CreateOptions::new(2 * RING)).unwrap();
    match channel::counters(&observe(&address)) {
        Err(ChannelError::Unsupported { .. }) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
