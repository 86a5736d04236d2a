//! A description of a channel's shared state for a failure report: the
//! endpoint tables and the ring's positions, read from the segment at the
//! offsets the layout tables of `channel`, `ring::mpmc` and `ring::record`
//! document. For diagnosis only: nothing here decides a verdict.

use std::fmt::Write;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use ipcring::channel::{MAX_ENDPOINTS, RING_OFFSET};
use ipcring::segment::{ProcessIdentity, Segment};

use super::ChannelKind;
use super::message::Item;

const CAPACITY: usize = RING_OFFSET + 8;
const TAIL: usize = RING_OFFSET + 128;
const HEAD: usize = RING_OFFSET + 256;
/// A wait word: `futex_calls` at 4, `sleepers` at 8 (`generation << 32 |
/// count`; the count is the low, first half on little-endian machines).
const DATA_READY_FUTEX_CALLS: usize = RING_OFFSET + 384 + 4;
const DATA_READY_SLEEPERS: usize = RING_OFFSET + 384 + 8;
const SPACE_READY_FUTEX_CALLS: usize = RING_OFFSET + 512 + 4;
const SPACE_READY_SLEEPERS: usize = RING_OFFSET + 512 + 8;
/// After the ring header (640 bytes) and the claim records (8320).
const SLOTS: usize = RING_OFFSET + 8960;
const PRODUCER_TABLE: usize = 8;
const CONSUMER_TABLE: usize = 264;

fn word(segment: &Segment, offset: usize) -> u64 {
    segment
        .view::<AtomicU64>(offset)
        .map_or(u64::MAX, |w| w.load(Relaxed))
}

fn half(segment: &Segment, offset: usize) -> u32 {
    segment
        .view::<AtomicU32>(offset)
        .map_or(u32::MAX, |w| w.load(Relaxed))
}

/// One side's endpoint table: presence hint and holders.
fn table(segment: &Segment, offset: usize, name: &str) -> String {
    let presence = word(segment, offset);
    let mut holders = Vec::new();
    for index in 0..MAX_ENDPOINTS {
        let slot = word(segment, offset + 8 + index * 8);
        let reaping = slot >> 63 == 1;
        if let Some(holder) = ProcessIdentity::from_word(slot & !(1 << 63)) {
            let state = if holder.is_alive() { "alive" } else { "dead" };
            let what = if reaping { "reaper" } else { "holder" };
            holders.push(format!("#{index} {what} pid {} {state}", holder.pid()));
        }
    }
    format!(
        "{name}: presence hint {:#x}, attached once: {}; slots [{}]",
        presence & 0x7fff_ffff,
        presence >> 63 == 1,
        holders.join(", ")
    )
}

/// A counter word's position and the id of its latest claimer.
fn counter(word: u64) -> (u64, Option<u64>) {
    (word >> 5, (word & 31).checked_sub(1))
}

/// The channel's shared state in a few lines.
pub fn describe(segment: &Segment, kind: ChannelKind) -> String {
    let mut text = String::new();
    let capacity = word(segment, CAPACITY);
    let (tail, tail_owner) = counter(word(segment, TAIL));
    let head_word = word(segment, HEAD);
    match kind {
        ChannelKind::Mpmc => {
            let (head, head_owner) = counter(head_word);
            let slot_size = std::mem::size_of::<Item>().next_multiple_of(8) + 8;
            let sequence = |position: u64| {
                let index = (position % capacity.max(1)) as usize;
                word(segment, SLOTS + index * slot_size)
            };
            let _ = writeln!(
                text,
                "  ring: capacity {capacity} slots; tail (enqueue) {tail} by {tail_owner:?}, head (dequeue) {head} by {head_owner:?}, {} claimed and not yet dequeued",
                tail.wrapping_sub(head)
            );
            // A sequence is position << 8 | owner << 3 | state.
            let explain = |sequence: u64| {
                let state = [
                    "free",
                    "writing",
                    "full",
                    "skip",
                    "reading",
                    "reading a skip",
                ]
                .get((sequence & 7) as usize)
                .copied()
                .unwrap_or("impossible state");
                format!(
                    "position {}, {state}, owner {}",
                    sequence >> 8,
                    (sequence >> 3) & 31
                )
            };
            let _ = writeln!(text, "  slot at head: {}", explain(sequence(head)));
            let _ = writeln!(text, "  slot at tail: {}", explain(sequence(tail)));
        }
        ChannelKind::Records => {
            let head = head_word;
            let offset = (head & capacity.wrapping_sub(1)) as usize;
            let header = word(segment, SLOTS + offset);
            let tag = (head >> 3) & 0x7fff_ffff;
            let _ = writeln!(
                text,
                "  ring: {capacity} bytes; tail (reserved) {tail} by {tail_owner:?}, head (released) {head}, {} bytes reserved and not released",
                tail.wrapping_sub(head)
            );
            let state = if header >> 63 == 0 || (header >> 32) & 0x7fff_ffff != tag {
                if head == tail {
                    "nothing reserved there: empty"
                } else {
                    "not committed: reserved by a producer that has not published it"
                }
            } else if header & 0xffff_ffff == 0xffff_ffff {
                "a committed pad"
            } else if header & (1 << 31) != 0 {
                "a committed skip"
            } else {
                "a committed record, ready to receive"
            };
            let _ = writeln!(
                text,
                "  record header at head: {header:#018x}: {state} (length field {})",
                header & 0x7fff_ffff
            );
        }
    }
    let _ = writeln!(
        text,
        "  sleepers: {} on data_ready, {} on space_ready (a process killed asleep stays counted)",
        half(segment, DATA_READY_SLEEPERS),
        half(segment, SPACE_READY_SLEEPERS)
    );
    let _ = writeln!(
        text,
        "  futex calls: {} on data_ready, {} on space_ready",
        half(segment, DATA_READY_FUTEX_CALLS),
        half(segment, SPACE_READY_FUTEX_CALLS)
    );
    let _ = writeln!(text, "  {}", table(segment, PRODUCER_TABLE, "senders"));
    let _ = write!(text, "  {}", table(segment, CONSUMER_TABLE, "receivers"));
    text
}
