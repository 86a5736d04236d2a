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
const DATA_READY_SLEEPERS: usize = RING_OFFSET + 384 + 4;
const SPACE_READY_SLEEPERS: usize = RING_OFFSET + 512 + 4;
const SLOTS: usize = RING_OFFSET + 640;
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

/// One side's endpoint table: census and holders.
fn table(segment: &Segment, offset: usize, name: &str) -> String {
    let census = word(segment, offset);
    let mut holders = Vec::new();
    for index in 0..MAX_ENDPOINTS {
        let slot = word(segment, offset + 8 + index * 8);
        if let Some(holder) = ProcessIdentity::from_word(slot) {
            let state = if holder.is_alive() { "alive" } else { "dead" };
            holders.push(format!("#{index} pid {} {state}", holder.pid()));
        }
    }
    format!(
        "{name}: census {} attached now, {} ever; slots [{}]",
        census & 0xffff_ffff,
        census >> 32,
        holders.join(", ")
    )
}

/// The channel's shared state in a few lines.
pub fn describe(segment: &Segment, kind: ChannelKind) -> String {
    let mut text = String::new();
    let capacity = word(segment, CAPACITY);
    let tail = word(segment, TAIL);
    let head = word(segment, HEAD);
    match kind {
        ChannelKind::Mpmc => {
            let slot_size = std::mem::size_of::<Item>().next_multiple_of(8) + 8;
            let sequence = |position: u64| {
                let index = (position % capacity.max(1)) as usize;
                word(segment, SLOTS + index * slot_size)
            };
            let _ = writeln!(
                text,
                "  ring: capacity {capacity} slots; tail (enqueue) {tail}, head (dequeue) {head}, {} claimed and not yet dequeued",
                tail.wrapping_sub(head)
            );
            let at_head = sequence(head);
            let _ = writeln!(
                text,
                "  slot at head: sequence {at_head}; {} (published would be {}, free for this lap {})",
                if at_head == 2 * head + 1 {
                    "published, ready to pop"
                } else if at_head == 2 * head && head == tail {
                    "free: the ring is empty"
                } else if at_head == 2 * head {
                    "free: the producer that claimed this position has not published it"
                } else if at_head == 2 * head.wrapping_sub(capacity) + 1 {
                    "still holds last lap's item: the consumer that dequeued it never freed the slot"
                } else {
                    "neither published nor free"
                },
                2 * head + 1,
                2 * head
            );
            let at_tail = sequence(tail);
            let last_lap = tail.wrapping_sub(capacity);
            let _ = writeln!(
                text,
                "  slot at tail: sequence {at_tail}; {} (free would be {})",
                if at_tail == 2 * tail {
                    "free"
                } else if at_tail == 2 * last_lap + 1 && head > last_lap {
                    "last lap's item was dequeued by a consumer that never freed the slot"
                } else if at_tail == 2 * last_lap + 1 {
                    "still holds last lap's item: full"
                } else if at_tail == 2 * last_lap {
                    "last lap's position was claimed by a producer that never published it"
                } else {
                    "unexpected"
                },
                2 * tail
            );
        }
        ChannelKind::Records => {
            let offset = (head & capacity.wrapping_sub(1)) as usize;
            let header = word(segment, SLOTS + offset);
            let tag = (head >> 3) & 0x7fff_ffff;
            let _ = writeln!(
                text,
                "  ring: {capacity} bytes; tail (reserved) {tail}, head (released) {head}, {} bytes reserved and not released",
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
    let _ = writeln!(text, "  {}", table(segment, PRODUCER_TABLE, "senders"));
    let _ = write!(text, "  {}", table(segment, CONSUMER_TABLE, "receivers"));
    text
}
