//! Claim records: what lets a survivor repair a claim whose owner died.
//!
//! A many-writer ring hands out positions by compare-exchange on a shared
//! counter (`tail` for producers, `head` for consumers), and the winner
//! publishes what it claimed a few instructions later. A process can die
//! between the two. To make such a claim recoverable, every claimer has a
//! small id (0..[`MAX_CLAIMERS`], its endpoint index in the layer above) and
//!
//! - writes the position it is about to claim into its own *claim record*
//!   before the compare-exchange, so a survivor knows where to look;
//! - stores its id in the low bits of the counter it advances
//!   (`position << 5 | (id + 1)`), so the latest claim on each counter is
//!   attributable; every later claimer first marks the previous claim at its
//!   place (a slot sequence or a claim record), so older claims are
//!   attributable too.
//!
//! The ring never decides that a claimer is dead: the layer above, which
//! knows processes, calls `repair` for an id whose owner it found dead, and
//! the ring then turns the claim into something the others pass over (a
//! skip) or hand on, counting it in [`RingStats`].
//!
//! | offset | field       | written by | meaning |
//! |--------|-------------|------------|---------|
//! | 0      | `repairs`   | repairers  | claims of dead owners repaired, ever |
//! | 8      | `losses`    | repairers  | committed items dropped because their consumer died holding them |
//! | 128    | `producers` | producer `i` its own `[i]` | 32 lines of 128 bytes: the claim record, then (record ring) the full start position it announces |
//! | 4224   | `consumers` | consumer `i` its own `[i]` | the same for consumers |

use crossbeam_utils::CachePadded;

use crate::sync::shim::{AtomicU64, Ordering};

/// Claimer ids per side: 0 to 30 (the counters keep `id + 1` in 5 bits).
pub const MAX_CLAIMERS: usize = 31;

/// A claim record that holds no claim.
pub(crate) const NO_CLAIM: u64 = u64::MAX;
/// A claim record that holds no claim, for the layers above.
pub const NO_CLAIM_RECORD: u64 = NO_CLAIM;

/// Bits of a counter word that name its latest claimer.
const OWNER_BITS: u32 = 5;
const OWNER_MASK: u64 = (1 << OWNER_BITS) - 1;

/// Which side of a ring a claimer is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Producers: they claim by advancing `tail`.
    Producer,
    /// Consumers: they claim by advancing `head`.
    Consumer,
}

/// What `repair` did with a dead claimer's claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Nothing was pending (or another survivor repaired it first).
    Nothing,
    /// An unpublished claim became a skip: nothing committed was lost.
    Skipped,
    /// A committed item held by a dead consumer was dropped (at most once).
    Lost,
}

/// Repair counters, as [`RingStats`] reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Claims of dead owners repaired, ever.
    pub repairs: u64,
    /// Committed items dropped because the consumer holding them died.
    pub losses: u64,
}

impl Record {
    fn new() -> Record {
        Record {
            claim: AtomicU64::new(NO_CLAIM),
            start: AtomicU64::new(0),
        }
    }
}

#[repr(C)]
pub(crate) struct Counters {
    repairs: AtomicU64,
    losses: AtomicU64,
}

/// One claimer's line: its claim record, and (for the record ring) the
/// full start position of the range the record announces.
#[repr(C)]
pub(crate) struct Record {
    claim: AtomicU64,
    start: AtomicU64,
}

/// The claim records and repair counters of a many-writer ring.
#[repr(C)]
pub(crate) struct ClaimTable {
    counters: CachePadded<Counters>,
    producers: [CachePadded<Record>; 32],
    consumers: [CachePadded<Record>; 32],
}

impl ClaimTable {
    /// An empty table: no claims, zero counters.
    pub(crate) fn new() -> ClaimTable {
        ClaimTable {
            counters: CachePadded::new(Counters {
                repairs: AtomicU64::new(0),
                losses: AtomicU64::new(0),
            }),
            producers: std::array::from_fn(|_| CachePadded::new(Record::new())),
            consumers: std::array::from_fn(|_| CachePadded::new(Record::new())),
        }
    }

    /// Claimer `id`'s line on `side` (`id` below [`MAX_CLAIMERS`]).
    #[inline]
    fn line(&self, side: Side, id: u8) -> &Record {
        let records = match side {
            Side::Producer => &self.producers,
            Side::Consumer => &self.consumers,
        };
        // Ids are checked at attach and by `check_id`; masking keeps a bad
        // one in bounds regardless.
        &records[usize::from(id) & 31]
    }

    /// Claimer `id`'s claim record on `side`.
    #[inline]
    pub(crate) fn record(&self, side: Side, id: u8) -> &AtomicU64 {
        &self.line(side, id).claim
    }

    /// The full start position beside claimer `id`'s record (record ring).
    #[inline]
    pub(crate) fn start(&self, side: Side, id: u8) -> &AtomicU64 {
        &self.line(side, id).start
    }

    /// Reads claimer `id`'s record.
    pub(crate) fn load(&self, side: Side, id: u8) -> u64 {
        // Acquire: pairs with the Release store in `announce`, so a survivor
        // that reads a new owner's record also sees that owner's attach
        // (the layer above re-checks the owner after reading).
        self.record(side, id).load(Ordering::Acquire)
    }

    /// Records that claimer `id` is about to claim `value`.
    #[inline]
    pub(crate) fn announce(&self, side: Side, id: u8, value: u64) {
        // Release: pairs with the Acquire load in `load`. (A confirm may
        // have set a bit in the old value by compare-exchange.)
        crate::sync::shim::store_after_rmw(self.record(side, id), value, Ordering::Release);
    }

    pub(crate) fn count(&self, repair: Repair) {
        // Relaxed: statistics; nothing is published through them.
        match repair {
            Repair::Nothing => {}
            Repair::Skipped => {
                self.counters.repairs.fetch_add(1, Ordering::Relaxed);
            }
            Repair::Lost => {
                self.counters.repairs.fetch_add(1, Ordering::Relaxed);
                self.counters.losses.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn stats(&self) -> RingStats {
        RingStats {
            repairs: self.counters.repairs.load(Ordering::Relaxed),
            losses: self.counters.losses.load(Ordering::Relaxed),
        }
    }
}

/// A counter word: `position` claimed up to, and who claimed last.
#[inline]
pub(crate) fn pack(position: u64, owner: Option<u8>) -> u64 {
    (position << OWNER_BITS) | owner.map_or(0, |id| u64::from(id) + 1)
}

/// The position a counter word holds.
#[inline]
pub(crate) fn position(word: u64) -> u64 {
    word >> OWNER_BITS
}

/// The id of the latest claimer a counter word names, if any.
#[inline]
pub(crate) fn owner(word: u64) -> Option<u8> {
    match word & OWNER_MASK {
        0 => None,
        code => Some(code as u8 - 1),
    }
}

/// Checks a claimer id given to `attach`.
pub(crate) fn check_id(id: u8) -> Result<u8, super::RingError> {
    if usize::from(id) < MAX_CLAIMERS {
        Ok(id)
    } else {
        Err(super::RingError::InvalidClaimer { id })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counter_words_round_trip() {
        for position in [0u64, 1, 7, 1 << 40, (1 << 59) - 1] {
            for id in [None, Some(0u8), Some(30)] {
                let word = pack(position, id);
                assert_eq!(super::position(word), position);
                assert_eq!(owner(word), id);
            }
        }
        assert!(check_id(30).is_ok());
        assert!(check_id(31).is_err());
    }
}
