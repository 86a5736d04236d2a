//! A channel's running totals, read from its shared memory without
//! attaching, and what changed between two readings: what a monitor
//! samples (`ipcring stat --watch`).
//!
//! Nothing here writes to the segment, and no fast path of a send or
//! receive pays for it. Messages and bytes come from the positions the
//! rings keep anyway, except a queue's payload bytes: a queue send journals
//! one word more for them, under the lock it holds anyway. Futex calls come
//! from the wait words' own counts, a relaxed increment next to each futex
//! syscall; repairs and losses from the counts kept for `stat`. Where the
//! memory does not hold a count, the field is `None`
//! rather than a write per message: a record channel counts bytes only
//! (its positions are in bytes, framing included), and a byte stream has
//! no messages.
//!
//! The memory is shared with processes we do not trust, so a reading may be
//! anything: [`Counters::since`] calls a counter that went backwards, or
//! grew faster than any channel can, [`Change::Implausible`] instead of
//! reporting a rate, and never overflows.

use std::time::Duration;

use super::{ChannelError, TRUNCATED, ring_region};
use crate::ring::{RingCounters, RingError};
use crate::segment::Segment;

/// A channel's totals at one moment: each field is one load, so the set is
/// not a consistent snapshot. All counts are since the channel was created
/// and only grow, unless memory was scribbled over.
///
/// ```
/// use ipcring::channel::{self, ChannelOptions, spsc};
///
/// let segment = spsc::create_segment::<u64>(None, 8, &ChannelOptions::new())?;
/// let mut tx = spsc::Sender::<u64>::attach(segment)?;
/// let before = channel::counters(tx.segment())?;
/// tx.send(1)?;
/// tx.send(2)?;
/// let after = channel::counters(tx.segment())?;
/// assert_eq!((after.messages, after.bytes), (Some(2), Some(16)));
/// let changes = after.since(&before, std::time::Duration::from_secs(1));
/// assert_eq!(changes.messages, channel::Change::By(2));
/// assert_eq!(changes.bytes.per_second(std::time::Duration::from_secs(1)), Some(16.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages sent: items pushed (SPSC), positions claimed by senders
    /// (MPMC; a claim repaired after its sender died counts too), sends
    /// (queue, datagram mailbox). `None` for record channels and streams.
    pub messages: Option<u64>,
    /// Bytes sent: messages times the item size (SPSC, MPMC), payload
    /// bytes (queue), bytes written (stream), or ring bytes reserved
    /// (records: each record's 8-byte header and padding to 8 included).
    /// `None` only if the ring's producer mode word is impossible.
    pub bytes: Option<u64>,
    /// Futex wait and wake system calls made on the channel's wait words
    /// (and its locks'), by every process, modulo 2^32.
    pub futex_calls: u32,
    /// Claims or locks of dead endpoints that survivors repaired.
    pub repairs: u64,
    /// Messages lost with a receiver that died holding them.
    pub losses: u64,
}

impl From<RingCounters> for Counters {
    fn from(ring: RingCounters) -> Counters {
        Counters {
            messages: ring.items,
            bytes: ring.bytes,
            futex_calls: ring.futex_calls,
            repairs: ring.repairs,
            losses: ring.losses,
        }
    }
}

/// The totals of the channel in `segment`, read without attaching (a
/// read-only segment will do), for any channel kind this library makes.
/// `Unsupported` if the segment holds no ring it knows; `Corrupted` (as
/// [`TRUNCATED`]) if the segment's file was cut short, so that the reading
/// came from zeros.
pub fn counters(segment: &Segment) -> Result<Counters, ChannelError> {
    let ring = crate::ring::ring_counters(&ring_region(segment)?);
    if segment.is_broken() {
        return Err(RingError::Corrupted(TRUNCATED).into());
    }
    ring.map(Counters::from).ok_or(ChannelError::Unsupported {
        reason: "the segment holds no channel ring this library knows",
    })
}

/// How one counter moved between two readings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The channel does not keep this count.
    NotKept,
    /// It grew by this much.
    By(u64),
    /// It went backwards, or grew faster than any channel can: the memory
    /// was written by something other than the channel's endpoints. No
    /// rate can be told for this interval; the next one starts afresh.
    Implausible,
}

impl Change {
    /// The growth per second over `elapsed`; `None` unless [`Change::By`]
    /// and `elapsed` is not zero.
    pub fn per_second(self, elapsed: Duration) -> Option<f64> {
        match self {
            Change::By(n) if !elapsed.is_zero() => Some(n as f64 / elapsed.as_secs_f64()),
            _ => None,
        }
    }

    /// The growth, if told.
    pub fn amount(self) -> Option<u64> {
        match self {
            Change::By(n) => Some(n),
            _ => None,
        }
    }
}

/// What changed between two [`Counters`] readings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Changes {
    /// Messages sent in the interval.
    pub messages: Change,
    /// Bytes sent in the interval.
    pub bytes: Change,
    /// Futex system calls made in the interval.
    pub futex_calls: Change,
    /// Repairs made in the interval.
    pub repairs: Change,
    /// Messages lost in the interval.
    pub losses: Change,
}

/// More than this many per second of a 64-bit count (2^40, a terabyte of
/// bytes or a trillion one-byte items) is no channel's doing: memory moves
/// far slower.
const MAX_PER_SECOND: u64 = 1 << 40;
/// More than this many futex calls per second on one channel (about 2.7
/// × 10^8) is no channel's doing: each call enters the kernel and takes the
/// futex's hash-bucket lock, hundreds of nanoseconds, on a handful of words.
const MAX_FUTEX_CALLS_PER_SECOND: u64 = 1 << 28;
/// The most a 32-bit count compared modulo 2^32 may grow in one interval,
/// however long: a reading 2^31 or more ahead of the last is nearer to one
/// behind it (serial number arithmetic, as in RFC 1982). Without this cap,
/// over an interval of 16 s or more (a monitor that was stopped) a count
/// that went back by one would read as four billion calls.
const MAX_FUTEX_GROWTH: u64 = (1 << 31) - 1;
/// Intervals shorter than this are judged as this long, so that a reading
/// taken right after another still allows for a little growth.
const MIN_JUDGED_INTERVAL: Duration = Duration::from_millis(1);

/// The most a count growing at `per_second` can grow in `elapsed`.
fn limit(per_second: u64, elapsed: Duration) -> u64 {
    let nanos = elapsed.max(MIN_JUDGED_INTERVAL).as_nanos();
    let most = u128::from(per_second).saturating_mul(nanos) / 1_000_000_000;
    u64::try_from(most).unwrap_or(u64::MAX)
}

fn change_u64(
    earlier: Option<u64>,
    now: Option<u64>,
    per_second: u64,
    elapsed: Duration,
) -> Change {
    match (earlier, now) {
        (Some(earlier), Some(now)) => match now.checked_sub(earlier) {
            Some(grown) if grown <= limit(per_second, elapsed) => Change::By(grown),
            _ => Change::Implausible,
        },
        _ => Change::NotKept,
    }
}

impl Counters {
    /// What changed since `earlier`, a reading taken `elapsed` before this
    /// one. Counts that went backwards or grew implausibly fast are
    /// [`Change::Implausible`]; counts either reading lacks are
    /// [`Change::NotKept`]. The futex count, 32 bits wide, is compared
    /// modulo 2^32: growth of 2^31 or more in one interval cannot be told
    /// from a count that went backwards, and is `Implausible` however long
    /// the interval.
    pub fn since(&self, earlier: &Counters, elapsed: Duration) -> Changes {
        let futex_calls = {
            let grown = u64::from(self.futex_calls.wrapping_sub(earlier.futex_calls));
            if grown <= limit(MAX_FUTEX_CALLS_PER_SECOND, elapsed).min(MAX_FUTEX_GROWTH) {
                Change::By(grown)
            } else {
                Change::Implausible
            }
        };
        Changes {
            messages: change_u64(earlier.messages, self.messages, MAX_PER_SECOND, elapsed),
            bytes: change_u64(earlier.bytes, self.bytes, MAX_PER_SECOND, elapsed),
            futex_calls,
            repairs: change_u64(
                Some(earlier.repairs),
                Some(self.repairs),
                MAX_PER_SECOND,
                elapsed,
            ),
            losses: change_u64(
                Some(earlier.losses),
                Some(self.losses),
                MAX_PER_SECOND,
                elapsed,
            ),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn reading(messages: u64, futex_calls: u32) -> Counters {
        Counters {
            messages: Some(messages),
            bytes: Some(messages * 8),
            futex_calls,
            repairs: 0,
            losses: 0,
        }
    }

    #[test]
    fn growth_is_told_with_its_rate() {
        let changes = reading(1500, 7).since(&reading(1000, 3), SECOND / 2);
        assert_eq!(changes.messages, Change::By(500));
        assert_eq!(changes.bytes, Change::By(4000));
        assert_eq!(changes.futex_calls, Change::By(4));
        assert_eq!(changes.repairs, Change::By(0));
        assert_eq!(changes.messages.per_second(SECOND / 2), Some(1000.0));
    }

    #[test]
    fn a_count_that_went_backwards_is_implausible() {
        let changes = reading(10, 3).since(&reading(1000, 5), SECOND);
        assert_eq!(changes.messages, Change::Implausible);
        assert_eq!(changes.bytes, Change::Implausible);
        assert_eq!(changes.futex_calls, Change::Implausible);
        assert_eq!(changes.messages.per_second(SECOND), None);
    }

    #[test]
    fn an_absurd_jump_is_implausible_and_nothing_overflows() {
        let changes = reading(u64::MAX / 8, u32::MAX).since(&reading(0, 0), SECOND);
        assert_eq!(changes.messages, Change::Implausible);
        assert_eq!(changes.futex_calls, Change::Implausible);
        let garbage = Counters {
            messages: Some(u64::MAX),
            bytes: Some(u64::MAX),
            futex_calls: u32::MAX,
            repairs: u64::MAX,
            losses: u64::MAX,
        };
        for elapsed in [Duration::ZERO, SECOND, Duration::MAX] {
            let _ = garbage.since(&Counters::default(), elapsed);
            let _ = Counters::default().since(&garbage, elapsed);
        }
    }

    #[test]
    fn the_futex_count_wraps() {
        let changes = reading(0, 2).since(&reading(0, u32::MAX - 1), SECOND);
        assert_eq!(changes.futex_calls, Change::By(4));
    }

    #[test]
    fn counts_not_kept_stay_not_kept() {
        let stream = Counters {
            messages: None,
            ..reading(0, 0)
        };
        let changes = stream.since(&reading(0, 0), SECOND);
        assert_eq!(changes.messages, Change::NotKept);
        assert_eq!(changes.messages.per_second(SECOND), None);
        assert_eq!(changes.messages.amount(), None);
    }
}
