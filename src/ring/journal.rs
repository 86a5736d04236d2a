//! A lock in shared memory that survivors can take back from a dead
//! holder, with a redo journal so that the holder's last update is applied
//! whole or not at all.
//!
//! The lock-free rings keep one ordering and let each claim be repaired on
//! its own. Structures that need a consistent view of many words at once
//! (a message queue selected by type, several writers of a byte stream)
//! use this lock instead. A process can die holding it at any instruction,
//! so two rules make that survivable:
//!
//! - **The holder is named.** The lock word holds the holder's
//!   [`owner_token`] (its side and claimer id, as in [`claims`](super::claims)),
//!   so the channel layer's reaper, which learns from the kernel that the
//!   claimer died, can release it ([`JournalLock::release_dead`]).
//! - **Every update is a redo journal.** Under the lock, the holder stages
//!   the words it will change with their new values ([`Transaction::set`]),
//!   then commits: it writes the entries, publishes their count (the commit
//!   point), applies them, and clears the count. A holder that dies before
//!   the commit point changed nothing; one that dies after it has its
//!   entries applied again by the reaper. Re-applying is harmless because
//!   the entries are absolute values and nobody else writes those words
//!   while the lock is held.
//!
//! Work done under the lock but outside the journal (copying a payload into
//! a block that nobody else can reach yet, or out of one that stays queued)
//! must be harmless if the holder dies halfway: that is the user's part of
//! the contract.
//!
//! Layout, at an offset the structure using it chooses (8-byte aligned):
//!
//! | offset | field     | written by | meaning |
//! |--------|-----------|------------|---------|
//! | 0      | `holder`  | lockers, the reaper | 0 free, else the holder's token (1..=64) |
//! | 8      | `waiters` | waiters, unlockers | a [`WaitWord`] for those blocked on the lock |
//! | 24     | `count`   | the holder, the reaper | committed journal entries, 0..=[`JOURNAL_ENTRIES`] |
//! | 32     | `tag`     | the holder | what the committed update was (the user's code) |
//! | 40     | `entries` | the holder | [`JOURNAL_ENTRIES`] × (offset in the region, value) |

use crate::ring::{Corruption, Region, Side};
use crate::sync::shim::{AtomicU64, Ordering};
use crate::sync::{Deadline, WaitStrategy, WaitWord};

/// Words one transaction may change.
pub const JOURNAL_ENTRIES: usize = 24;

/// Bytes a [`JournalLock`] takes in a region.
pub const JOURNAL_LOCK_SIZE: usize = std::mem::size_of::<JournalLock>();

/// The lock word's value for claimer `id` of `side`: 1..=32 for producers,
/// 33..=64 for consumers. Never 0, the free value.
pub fn owner_token(side: Side, id: u8) -> u64 {
    let base = match side {
        Side::Producer => 1,
        Side::Consumer => 33,
    };
    base + u64::from(id & 31)
}

/// The lock and its journal, as laid out in shared memory.
#[repr(C)]
#[derive(Debug)]
pub struct JournalLock {
    holder: AtomicU64,
    waiters: WaitWord,
    count: AtomicU64,
    tag: AtomicU64,
    entries: [[AtomicU64; 2]; JOURNAL_ENTRIES],
}

/// What [`JournalLock::release_dead`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// The dead claimer did not hold the lock.
    NotHeld,
    /// It held the lock with nothing committed: released, nothing changed.
    Released,
    /// It died after committing an update with this tag; the update is now
    /// applied in full and the lock released.
    Replayed(u64),
}

impl JournalLock {
    /// Writes a free lock with an empty journal at `offset` in `region`
    /// (zeroed memory is one too, except under loom, whose atomics must be
    /// constructed).
    ///
    /// # Safety
    ///
    /// Nobody else may be using those bytes yet.
    pub unsafe fn init(region: &Region, offset: usize) -> Result<(), Corruption> {
        check_fits(region, offset)?;
        let lock = JournalLock {
            holder: AtomicU64::new(0),
            waiters: WaitWord::new(),
            count: AtomicU64::new(0),
            tag: AtomicU64::new(0),
            entries: std::array::from_fn(|_| [AtomicU64::new(0), AtomicU64::new(0)]),
        };
        // SAFETY: in bounds and aligned (checked), and not shared yet.
        unsafe {
            region
                .as_ptr()
                .add(offset)
                .cast::<JournalLock>()
                .write(lock)
        };
        Ok(())
    }

    /// The lock at `offset` in `region`.
    ///
    /// # Safety
    ///
    /// The bytes at `offset` must hold a `JournalLock` (zeroed memory is a
    /// free lock with an empty journal) and be reached only atomically for
    /// as long as the returned reference lives, which must not outlive the
    /// region's memory.
    pub unsafe fn at(region: &Region, offset: usize) -> Result<&JournalLock, Corruption> {
        check_fits(region, offset)?;
        // SAFETY: in bounds and 8-byte aligned (the region starts aligned
        // to RING_ALIGN); the caller vouches for the contents and lifetime.
        Ok(unsafe { &*region.as_ptr().add(offset).cast::<JournalLock>() })
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self, token: u64) -> bool {
        // Acquire: pairs with the Release CAS in `unlock` and
        // `release_dead`, so the last holder's writes are visible to us.
        self.holder
            .compare_exchange(0, token, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock, waiting with `strategy` until `deadline`; false on
    /// timeout. Callers wait in slices and reap dead holders between them.
    pub fn lock(&self, token: u64, strategy: WaitStrategy, deadline: Option<Deadline>) -> bool {
        loop {
            if self.try_lock(token) {
                return true;
            }
            // Relaxed: a hint to stop waiting; `try_lock` synchronises.
            let free = self.waiters.wait_until(strategy, deadline, || {
                self.holder.load(Ordering::Relaxed) == 0
            });
            if !free {
                return self.try_lock(token);
            }
        }
    }

    /// Futex syscalls made on the lock's wait word, modulo 2^32 (see
    /// [`WaitWord::futex_calls`]).
    pub fn futex_calls(&self) -> u32 {
        self.waiters.futex_calls()
    }

    /// The holder's token, 0 if free (a hint: it changes at any moment).
    pub fn holder(&self) -> u64 {
        self.holder.load(Ordering::Relaxed)
    }

    /// Releases the lock held by `token` and wakes a waiter. An error if
    /// the word no longer holds our token (scribbled over): the lock is
    /// then left as it is.
    pub fn unlock(&self, token: u64) -> Result<(), Corruption> {
        // Release: pairs with the Acquire CAS in `try_lock`.
        match self
            .holder
            .compare_exchange(token, 0, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => {
                self.waiters.notify_all();
                Ok(())
            }
            Err(found) => Err(Corruption {
                field: "journal lock holder",
                value: found,
            }),
        }
    }

    /// Starts an update of words in `region` (which must be the region the
    /// lock lives in). Only the holder may call it.
    pub fn transaction<'a>(&'a self, region: &'a Region) -> Transaction<'a> {
        Transaction {
            lock: self,
            region,
            staged: [(0, 0); JOURNAL_ENTRIES],
            len: 0,
        }
    }

    /// Releases the lock if dead claimer `token` holds it, first applying
    /// its committed update if it died between the commit point and the
    /// clearing of the journal. The caller must know that the claimer is
    /// dead and be the only one repairing it (the reaper's mark on its
    /// endpoint slot).
    pub fn release_dead(&self, region: &Region, token: u64) -> Result<Released, Corruption> {
        // Acquire: pairs with the Release CAS of `unlock` or
        // `release_dead` that last freed the word, for the case that the
        // token no longer holds it. What the dead holder itself wrote
        // (entries, count, applied words) is ordered before us by how we
        // learnt of its death (the kernel releasing its liveness lock, then
        // the Acquire CAS of the reaper's mark), not by this load.
        if self.holder.load(Ordering::Acquire) != token {
            return Ok(Released::NotHeld);
        }
        // Acquire: pairs with the Release store of the count in `commit`
        // (the commit point), so the entries it published are visible.
        let count = self.count.load(Ordering::Acquire);
        let outcome = if count == 0 {
            Released::Released
        } else {
            let tag = self.tag.load(Ordering::Relaxed);
            let applied = self.apply(region, count);
            // Relaxed: ordered before the Release CAS below.
            self.count.store(0, Ordering::Relaxed);
            // A scribbled journal is reported, but the lock is released
            // all the same: a lock nobody can ever take would wedge every
            // survivor, while the error tells them the memory is damaged.
            if let Err(e) = applied {
                self.force_release(token);
                return Err(e);
            }
            Released::Replayed(tag)
        };
        // Release: pairs with the Acquire CAS in `try_lock`; the replayed
        // update is visible to the next holder.
        if let Err(found) =
            self.holder
                .compare_exchange(token, 0, Ordering::Release, Ordering::Relaxed)
        {
            return Err(Corruption {
                field: "journal lock holder",
                value: found,
            });
        }
        self.waiters.notify_all();
        Ok(outcome)
    }

    fn force_release(&self, token: u64) {
        // Release: as in `release_dead`.
        let _ = self
            .holder
            .compare_exchange(token, 0, Ordering::Release, Ordering::Relaxed);
        self.waiters.notify_all();
    }

    /// Applies the first `count` journal entries to `region`.
    fn apply(&self, region: &Region, count: u64) -> Result<(), Corruption> {
        if count > JOURNAL_ENTRIES as u64 {
            return Err(Corruption {
                field: "journal count",
                value: count,
            });
        }
        for entry in &self.entries[..count as usize] {
            // Relaxed: the holder's own writes, or ordered by the Acquire
            // load of `count` for the reaper.
            let offset = entry[0].load(Ordering::Relaxed);
            let value = entry[1].load(Ordering::Relaxed);
            let word = word_at(region, offset)?;
            // Release: pairs with Acquire loads of structure words by those
            // who read them without the lock (statistics, hints).
            word.store(value, Ordering::Release);
        }
        Ok(())
    }
}

fn check_fits(region: &Region, offset: usize) -> Result<(), Corruption> {
    let fits = offset
        .checked_add(JOURNAL_LOCK_SIZE)
        .is_some_and(|end| end <= region.len());
    if !fits || offset % 8 != 0 {
        return Err(Corruption {
            field: "journal lock offset",
            value: offset as u64,
        });
    }
    Ok(())
}

/// The word at byte `offset` of `region`, if in bounds and aligned.
fn word_at(region: &Region, offset: u64) -> Result<&AtomicU64, Corruption> {
    let bad = Corruption {
        field: "journal entry offset",
        value: offset,
    };
    let offset = usize::try_from(offset).map_err(|_| bad)?;
    if offset % 8 != 0 || offset.checked_add(8).is_none_or(|end| end > region.len()) {
        return Err(bad);
    }
    // SAFETY: in bounds and aligned; every word the journal names is an
    // AtomicU64 of the structure sharing this region.
    Ok(unsafe { &*region.as_ptr().add(offset).cast::<AtomicU64>() })
}

/// An update being staged by the lock's holder.
#[derive(Debug)]
pub struct Transaction<'a> {
    lock: &'a JournalLock,
    region: &'a Region,
    staged: [(u64, u64); JOURNAL_ENTRIES],
    len: usize,
}

/// More words than one transaction can change: a bug in the structure
/// using the journal, reported instead of overrunning it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a journal transaction may change at most {JOURNAL_ENTRIES} words")]
pub struct JournalFull;

impl Transaction<'_> {
    /// Stages `value` for `word`, which must lie in the lock's region. A
    /// word staged twice takes the later value.
    pub fn set(&mut self, word: &AtomicU64, value: u64) -> Result<(), JournalFull> {
        let offset =
            (word as *const AtomicU64 as usize).wrapping_sub(self.region.as_ptr() as usize);
        let offset = offset as u64;
        if let Some(entry) = self.staged[..self.len].iter_mut().find(|e| e.0 == offset) {
            entry.1 = value;
            return Ok(());
        }
        if self.len == JOURNAL_ENTRIES {
            return Err(JournalFull);
        }
        self.staged[self.len] = (offset, value);
        self.len += 1;
        Ok(())
    }

    /// The value staged for `word`, if any.
    pub fn staged(&self, word: &AtomicU64) -> Option<u64> {
        let offset =
            (word as *const AtomicU64 as usize).wrapping_sub(self.region.as_ptr() as usize);
        self.staged[..self.len]
            .iter()
            .find(|e| e.0 == offset as u64)
            .map(|e| e.1)
    }

    /// Commits: after this returns, every staged word holds its new value;
    /// if the holder dies inside, the update is applied in full by the
    /// reaper or not at all. `tag` tells the reaper what the update was.
    pub fn commit(self, tag: u64) -> Result<(), Corruption> {
        let lock = self.lock;
        for (entry, &(offset, value)) in lock.entries.iter().zip(&self.staged[..self.len]) {
            // Relaxed: published by the Release store of `count`.
            entry[0].store(offset, Ordering::Relaxed);
            entry[1].store(value, Ordering::Relaxed);
        }
        lock.tag.store(tag, Ordering::Relaxed);
        failpoint!("journal.staged", Ok(()));
        // The commit point. Release: pairs with the Acquire load of
        // `count` in `release_dead`.
        lock.count.store(self.len as u64, Ordering::Release);
        failpoint!("journal.committed", Ok(()));
        // From our own staged copy, not the shared entries: a peer
        // scribbling those now must not make us apply half an update.
        let mut applied = Ok(());
        for &(offset, value) in &self.staged[..self.len] {
            match word_at(self.region, offset) {
                // Release: as in `apply`.
                Ok(word) => word.store(value, Ordering::Release),
                Err(e) => applied = Err(e),
            }
        }
        failpoint!("journal.applied", Ok(()));
        // Relaxed: ordered before the Release CAS of `unlock`.
        lock.count.store(0, Ordering::Relaxed);
        applied
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::ring::HeapRegion;

    fn setup() -> HeapRegion {
        HeapRegion::new(4096).unwrap()
    }

    fn word(region: &Region, offset: usize) -> &AtomicU64 {
        word_at(region, offset as u64).unwrap()
    }

    #[test]
    fn lock_excludes_and_unlock_frees() {
        let heap = setup();
        let region = heap.region();
        // SAFETY: zeroed heap memory used only through the lock.
        let lock = unsafe { JournalLock::at(&region, 0) }.unwrap();
        let a = owner_token(Side::Producer, 0);
        let b = owner_token(Side::Consumer, 0);
        assert!(lock.try_lock(a));
        assert!(!lock.try_lock(b));
        assert_eq!(lock.holder(), a);
        assert!(lock.unlock(b).is_err());
        lock.unlock(a).unwrap();
        assert!(lock.try_lock(b));
    }

    #[test]
    fn commit_applies_every_staged_word() {
        let heap = setup();
        let region = heap.region();
        // SAFETY: as above.
        let lock = unsafe { JournalLock::at(&region, 0) }.unwrap();
        let token = owner_token(Side::Producer, 3);
        assert!(lock.try_lock(token));
        let mut tx = lock.transaction(&region);
        tx.set(word(&region, 1024), 7).unwrap();
        tx.set(word(&region, 1032), 8).unwrap();
        tx.set(word(&region, 1024), 9).unwrap();
        assert_eq!(tx.staged(word(&region, 1024)), Some(9));
        tx.commit(1).unwrap();
        assert_eq!(word(&region, 1024).load(Ordering::Relaxed), 9);
        assert_eq!(word(&region, 1032).load(Ordering::Relaxed), 8);
        assert_eq!(lock.release_dead(&region, token), Ok(Released::Released));
        assert_eq!(lock.holder(), 0);
    }

    #[test]
    fn a_transaction_has_a_bound() {
        let heap = setup();
        let region = heap.region();
        // SAFETY: as above.
        let lock = unsafe { JournalLock::at(&region, 0) }.unwrap();
        let mut tx = lock.transaction(&region);
        for i in 0..JOURNAL_ENTRIES {
            tx.set(word(&region, 1024 + 8 * i), 1).unwrap();
        }
        assert_eq!(tx.set(word(&region, 2048), 1), Err(JournalFull));
    }

    #[test]
    fn offsets_are_checked() {
        let heap = setup();
        let region = heap.region();
        // SAFETY: as above; both calls must refuse.
        assert!(unsafe { JournalLock::at(&region, 4) }.is_err());
        // SAFETY: as above.
        assert!(unsafe { JournalLock::at(&region, 4096 - 8) }.is_err());
    }

    #[test]
    fn scribbled_journal_is_reported_not_followed() {
        let heap = setup();
        let region = heap.region();
        // SAFETY: as above.
        let lock = unsafe { JournalLock::at(&region, 0) }.unwrap();
        let token = owner_token(Side::Producer, 1);
        assert!(lock.try_lock(token));
        lock.count.store(3, Ordering::Relaxed);
        lock.entries[0][0].store(1 << 40, Ordering::Relaxed);
        assert!(lock.release_dead(&region, token).is_err());
        assert_eq!(lock.holder(), 0, "released all the same");
        assert!(lock.try_lock(token));
        lock.count.store(1000, Ordering::Relaxed);
        assert!(lock.release_dead(&region, token).is_err());
        assert_eq!(lock.holder(), 0);
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn a_holder_dead_at_any_step_leaves_all_or_nothing() {
        use crate::failpoint::abandon_at;
        for (step, applied) in [
            ("journal.staged", false),
            ("journal.committed", true),
            ("journal.applied", true),
        ] {
            let heap = setup();
            let region = heap.region();
            // SAFETY: as above.
            let lock = unsafe { JournalLock::at(&region, 0) }.unwrap();
            let token = owner_token(Side::Consumer, 5);
            assert!(lock.try_lock(token));
            let mut tx = lock.transaction(&region);
            tx.set(word(&region, 1024), 1).unwrap();
            tx.set(word(&region, 1032), 2).unwrap();
            abandon_at(step);
            tx.commit(77).unwrap();
            // Whatever the dead holder managed, scribble the first word
            // back as if its apply had only half happened.
            if step == "journal.committed" {
                assert_eq!(word(&region, 1024).load(Ordering::Relaxed), 0);
            }
            let released = lock.release_dead(&region, token).unwrap();
            let (a, b) = (
                word(&region, 1024).load(Ordering::Relaxed),
                word(&region, 1032).load(Ordering::Relaxed),
            );
            if applied {
                assert_eq!((a, b), (1, 2), "{step}");
                assert_eq!(released, Released::Replayed(77), "{step}");
            } else {
                assert_eq!((a, b), (0, 0), "{step}");
                assert_eq!(released, Released::Released, "{step}");
            }
            assert_eq!(lock.holder(), 0);
            assert!(lock.try_lock(token));
        }
    }
}
