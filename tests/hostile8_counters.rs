//! `channel::counters` and `Counters::since` against hostile memory and
//! hostile clocks: segments that hold no channel (any kind, any bytes,
//! a channel's magic with too little room after it), every channel kind
//! with its ring scribbled with random words, SysV channels, and readings
//! taken far apart (a monitor that was stopped) with a count that went
//! backwards meanwhile.

mod common;
mod hostile_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Cleanup, unique_posix, unique_sysv};
use hostile_support::{Rng, scribble};
use ipcring::channel::queue::{Queue, QueueConfig};
use ipcring::channel::{
    self, Change, ChannelError, ChannelOptions, Counters, RING_OFFSET, mpmc, records, spsc, stream,
};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment};
use std::sync::atomic::AtomicU8;

/// The segment as a monitor maps it: read-only, attached to nothing.
fn observe(address: &Address) -> Segment {
    let options = OpenOptions::new()
        .read_only()
        .allow_foreign_owner(true)
        .timeout(Duration::ZERO);
    Segment::open(address, &options).unwrap()
}

fn reading(messages: u64, futex_calls: u32) -> Counters {
    Counters {
        messages: Some(messages),
        bytes: Some(messages * 8),
        futex_calls,
        repairs: 0,
        losses: 0,
    }
}

/// The futex count is 32 bits and wraps. A monitor that was stopped for a
/// minute (or an hour) and then finds the count one lower than before must
/// not report four billion futex calls: a count that went backwards is
/// implausible over any gap, while real growth over a long gap is told.
#[test]
fn a_futex_count_that_went_backwards_is_implausible_however_long_the_gap() {
    let earlier = reading(1000, 5000);
    let backwards = reading(1000, 4999);
    for gap in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_secs(1),
        Duration::from_secs(17),
        Duration::from_secs(60),
        Duration::from_secs(3600),
        Duration::from_secs(86_400 * 365),
        Duration::MAX,
    ] {
        let changes = backwards.since(&earlier, gap);
        assert_eq!(changes.futex_calls, Change::Implausible, "over {gap:?}");
        assert_eq!(changes.futex_calls.per_second(gap), None, "over {gap:?}");
        // The 64-bit counts too.
        let changes = reading(999, 5000).since(&earlier, gap);
        assert_eq!(changes.messages, Change::Implausible, "over {gap:?}");
    }
    // Real growth after a long stop is told, with a sane rate.
    let hour = Duration::from_secs(3600);
    let later = reading(1000 + 36_000_000, 5000 + 3_600_000);
    let changes = later.since(&earlier, hour);
    assert_eq!(changes.messages, Change::By(36_000_000));
    assert_eq!(changes.futex_calls, Change::By(3_600_000));
    assert_eq!(changes.futex_calls.per_second(hour), Some(1000.0));
    // Growth across the 32-bit wrap, over a short interval, too.
    let wrapped = reading(1000, 10).since(&reading(1000, u32::MAX - 9), hour);
    assert_eq!(wrapped.futex_calls, Change::By(20));
}

/// Every channel kind's first ring word (its magic), as a real channel
/// has it.
fn magics() -> Vec<(&'static str, u64)> {
    let options = ChannelOptions::new();
    let segments = [
        (
            "spsc",
            spsc::create_segment::<u64>(None, 8, &options).unwrap(),
        ),
        (
            "mpmc",
            mpmc::create_segment::<u64>(None, 8, &options).unwrap(),
        ),
        (
            "records",
            records::create_segment(None, 4096, ProducerMode::Many, &options).unwrap(),
        ),
        (
            "stream",
            stream::create_segment(None, ipcring::segment::page_size(), &options).unwrap(),
        ),
        (
            "queue",
            ipcring::channel::queue::create_segment(None, &QueueConfig::new(4, 64), &options)
                .unwrap(),
        ),
    ];
    segments
        .iter()
        .map(|(kind, segment)| {
            let magic = segment
                .view::<AtomicU64>(RING_OFFSET)
                .unwrap()
                .load(Ordering::Relaxed);
            (*kind, magic)
        })
        .collect()
}

/// Plain segments, made with `Segment::create` and random kinds, that a
/// monitor is pointed at: too small for a channel, random bytes, and each
/// channel's magic with 0 to a few hundred bytes after it, the rest random.
/// `counters` reads each without a panic or a fault, and calls it
/// `Unsupported` unless a whole ring header is there.
#[test]
fn segments_that_hold_no_channel_read_as_errors_or_numbers_never_a_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let magics = magics();
    let address = unique_posix("h8-plain");
    let _cleanup = Cleanup(address.clone());
    let mut sizes = vec![1, 8, RING_OFFSET - 1, RING_OFFSET];
    sizes.extend([8, 64, 128, 383, 384, 1024, 4096, 3 * 4096].map(|n| RING_OFFSET + n));
    for &size in &sizes {
        for planted in std::iter::once(None).chain(magics.iter().map(Some)) {
            let kind = rng.next() as u32;
            let segment = Segment::create(&address, &CreateOptions::new(size).kind(kind)).unwrap();
            scribble_bytes(&segment, size, &mut rng);
            let has_room_for_magic = size >= RING_OFFSET + 8;
            if let Some((_, magic)) = planted.filter(|_| has_room_for_magic) {
                segment
                    .view::<AtomicU64>(RING_OFFSET)
                    .unwrap()
                    .store(*magic, Ordering::Relaxed);
            }
            let what = format!("{size} bytes, kind {kind:#x}, magic of {planted:?}");
            for monitor in [observe(&address), segment.reopen_named()] {
                match channel::counters(&monitor) {
                    Ok(counters) => {
                        assert!(planted.is_some(), "{what}: read as a channel");
                        let _ = counters.since(&Counters::default(), Duration::ZERO);
                        let _ = Counters::default().since(&counters, Duration::MAX);
                    }
                    Err(ChannelError::Unsupported { .. } | ChannelError::Segment(_)) => {}
                    Err(e) => panic!("{what}: {e:?}"),
                }
            }
            drop(segment);
            Segment::remove(&address).unwrap();
        }
    }
}

/// Random bytes over the first `len` bytes of the user area: words, then
/// the odd bytes at the end.
fn scribble_bytes(segment: &Segment, len: usize, rng: &mut Rng) {
    let words = len / 8 * 8;
    scribble(segment, 0, words, rng);
    for at in words..len {
        segment
            .view::<AtomicU8>(at)
            .unwrap()
            .store(rng.next() as u8, Ordering::Relaxed);
    }
}

trait ReopenNamed {
    /// A second, writable mapping of the same named segment.
    fn reopen_named(&self) -> Segment;
}

impl ReopenNamed for Segment {
    fn reopen_named(&self) -> Segment {
        Segment::open(
            &self.address().unwrap(),
            &OpenOptions::new().register(false),
        )
        .unwrap()
    }
}

/// Makes a channel segment at the address it closes over.
type Maker<'a> = Box<dyn Fn() -> Result<Segment, ChannelError> + 'a>;

/// Every channel kind, POSIX and SysV, its ring region (header, positions,
/// wait words and slots) scribbled with random words a hundred times over:
/// each reading is numbers or a typed error, and each pair of readings
/// compares without overflow.
#[test]
fn every_channel_kind_scribbled_reads_without_panic_posix_and_sysv() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let options = ChannelOptions::new();
    for address in [unique_posix("h8-scribbled"), unique_sysv()] {
        let _cleanup = Cleanup(address.clone());
        let is_sysv = matches!(address, Address::SysV(_));
        let mut makers: Vec<(&str, Maker)> = vec![
            (
                "spsc",
                Box::new(|| spsc::create_segment::<u64>(Some(&address), 64, &options)),
            ),
            (
                "mpmc",
                Box::new(|| mpmc::create_segment::<u64>(Some(&address), 64, &options)),
            ),
            (
                "records",
                Box::new(|| {
                    records::create_segment(Some(&address), 4096, ProducerMode::Single, &options)
                }),
            ),
            (
                "queue",
                Box::new(|| {
                    ipcring::channel::queue::create_segment(
                        Some(&address),
                        &QueueConfig::new(8, 64),
                        &options,
                    )
                }),
            ),
        ];
        if !is_sysv {
            makers.push((
                "stream",
                Box::new(|| {
                    stream::create_segment(Some(&address), ipcring::segment::page_size(), &options)
                }),
            ));
        }
        for (kind, make) in &makers {
            let segment = make().unwrap();
            let monitor = observe(&address);
            let mut earlier = channel::counters(&monitor).unwrap();
            let ring_len = segment.user_len() - RING_OFFSET;
            for round in 0..100 {
                // A few random words, or a whole run of bytes, anywhere in
                // the ring's first pages.
                let words = ring_len.min(3 * 4096) / 8;
                let offset = RING_OFFSET + 8 * rng.below(words as u64) as usize;
                let len = (8 * (rng.below(8) as usize + 1)).min(segment.user_len() - offset);
                scribble(&segment, offset, len, &mut rng);
                let gap = Duration::from_nanos(rng.next() >> rng.below(64));
                match channel::counters(&monitor) {
                    Ok(now) => {
                        let _ = now.since(&earlier, gap);
                        let _ = earlier.since(&now, gap);
                        earlier = now;
                    }
                    Err(ChannelError::Unsupported { .. }) => {}
                    Err(e) => panic!("{address} {kind} round {round}: {e:?}"),
                }
            }
            drop((segment, monitor));
            Segment::remove(&address).unwrap();
        }
    }
}

/// A queue whose counters are read while the queue is in use by another
/// thread, with its futex word scribbled backwards between readings: the
/// scribbled interval is implausible, and the next one is told again.
#[test]
fn a_live_queue_scribbled_backwards_recovers_on_the_next_interval() {
    let address = unique_posix("h8-queue-live");
    let _cleanup = Cleanup(address.clone());
    let mut queue =
        Queue::create(&address, &QueueConfig::new(16, 64), &ChannelOptions::new()).unwrap();
    for i in 0..10u8 {
        queue.send(&[i], 1, 0).unwrap();
    }
    let monitor = observe(&address);
    let earlier = channel::counters(&monitor).unwrap();
    assert_eq!(earlier.messages, Some(10));
    // The queue's `sent` total, wherever it is: find it by its value and
    // set it back, as a scribbler would.
    let scribbler = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
    let sent = (RING_OFFSET..RING_OFFSET + 2048)
        .step_by(8)
        .find(|&offset| {
            let word = scribbler.view::<AtomicU64>(offset).unwrap();
            if word.load(Ordering::SeqCst) != 10 {
                return false;
            }
            word.store(11, Ordering::SeqCst);
            let moved = channel::counters(&monitor).unwrap().messages == Some(11);
            word.store(10, Ordering::SeqCst);
            moved
        })
        .expect("the queue's sent total");
    let word = scribbler.view::<AtomicU64>(sent).unwrap();
    word.store(3, Ordering::SeqCst);
    let scribbled = channel::counters(&monitor).unwrap();
    let long_gap = Duration::from_secs(3600);
    assert_eq!(
        scribbled.since(&earlier, long_gap).messages,
        Change::Implausible
    );
    word.store(10, Ordering::SeqCst);
    queue.send(b"x", 1, 0).unwrap();
    let now = channel::counters(&monitor).unwrap();
    assert_eq!(now.since(&earlier, long_gap).messages, Change::By(1));
}
