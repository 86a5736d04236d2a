//! The participants table: which processes are attached, and whether they
//! still live.
//!
//! Each slot is 16 bytes:
//!
//! | offset | field         | meaning |
//! |--------|---------------|---------|
//! | 0      | `identity`    | 0 = free; else `pid << 32 \| (start_ticks & 0xffff_ffff)` |
//! | 8      | `attached_ns` | CLOCK_REALTIME ns of the attach, written after the claim |
//!
//! A slot is claimed and freed with one compare-exchange on `identity`:
//! there is no half-registered state for a crash to leave behind.
//!
//! Whether a claimant lives is the caller's question to answer (see
//! [`Liveness`]). For segments with a file, the claimant of slot `i` takes
//! the shared liveness lock for key `i` *before* its claim, so a claimed
//! slot whose key nobody holds can only belong to a dead process. For SysV
//! segments the identity pairs the pid with the process's start time from
//! `/proc/PID/stat`, so a pid the kernel reuses for another process is not
//! mistaken for the original (the low 32 bits of the start time in clock
//! ticks repeat only after ~497 days at 100 Hz); that check is wrong across
//! pid namespaces, which is why it is only the fallback.

use std::sync::atomic::{AtomicU64, Ordering};

use super::SegmentError;
use crate::sys;

#[repr(C)]
pub(crate) struct ParticipantSlot {
    identity: AtomicU64,
    attached_ns: AtomicU64,
}

impl ParticipantSlot {
    /// Whether both words are zero (never written).
    pub(crate) fn is_blank(&self) -> bool {
        self.identity.load(Ordering::Relaxed) == 0 && self.attached_ns.load(Ordering::Relaxed) == 0
    }
}

/// One attached process, as the table reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Participant {
    /// Its slot in the table (`0..MAX_PARTICIPANTS`), which is also its
    /// liveness key.
    pub slot: usize,
    /// Its pid, in the pid namespace it registered from.
    pub pid: u32,
    /// Whether it still runs: for POSIX and memfd segments, whether its
    /// liveness lock is held; for SysV, whether the same process (pid and
    /// start time) is running and not a zombie.
    pub alive: bool,
    /// When it attached, ns since the Unix epoch (0 if not yet recorded).
    pub attached_realtime_ns: u64,
}

/// A process, named so that a reused pid is not mistaken for it: the pid
/// and the low 32 bits of its start time, packed in one word that fits an
/// atomic in shared memory. Zero is no process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessIdentity(u64);

impl ProcessIdentity {
    /// This process. Fails only if `/proc/self/stat` cannot be read (no
    /// /proc, or no file descriptors left): then we cannot name ourselves in
    /// a way others can check, and must not claim anything.
    pub fn current() -> Result<ProcessIdentity, SegmentError> {
        own_identity().map(ProcessIdentity)
    }

    /// The packed word (never zero).
    pub fn to_word(self) -> u64 {
        self.0
    }

    /// Unpacks a word read from shared memory; `None` for zero.
    pub fn from_word(word: u64) -> Option<ProcessIdentity> {
        (word != 0).then_some(ProcessIdentity(word))
    }

    /// The pid.
    pub fn pid(self) -> u32 {
        split(self.0).0
    }

    /// Whether this very process still runs (not a zombie, not a reused
    /// pid). Reads /proc: microseconds, so keep it off fast paths.
    pub fn is_alive(self) -> bool {
        let (pid, start_low) = split(self.0);
        pid != 0 && sys::process::is_alive(pid, start_low)
    }
}

/// This process's identity word, read from /proc once per process (the
/// cache holds the pid, so a forked child reads its own).
pub(crate) fn own_identity() -> Result<u64, SegmentError> {
    static CACHED: AtomicU64 = AtomicU64::new(0);
    let pid = sys::process::pid();
    let cached = CACHED.load(Ordering::Relaxed);
    if cached != 0 && split(cached).0 == pid {
        return Ok(cached);
    }
    let stat = sys::process::proc_stat(pid)
        .and_then(|stat| stat.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)))
        .map_err(|source| SegmentError::Io {
            op: "read /proc/self/stat",
            source,
        })?;
    let word = identity(pid, stat.start_ticks);
    CACHED.store(word, Ordering::Relaxed);
    Ok(word)
}

fn identity(pid: u32, start_ticks: u64) -> u64 {
    (u64::from(pid) << 32) | (start_ticks & 0xffff_ffff)
}

fn split(identity: u64) -> (u32, u32) {
    ((identity >> 32) as u32, identity as u32)
}

/// How the table learns whether a slot's claimant lives, and how it keeps
/// a dead claimant's slot from being claimed while it frees it.
pub(crate) trait Liveness {
    /// Called before claiming free slot `index`: reserve the slot's
    /// liveness signal. `Ok(false)` means "not now" (try the next slot).
    fn reserve(&mut self, index: usize) -> Result<bool, SegmentError>;
    /// Undoes `reserve` after a lost claim, or `hold_if_dead` after a reap.
    fn release(&mut self, index: usize);
    /// Whether the claimant of `index`, whose identity is `word`, lives.
    fn is_alive(&mut self, index: usize, word: u64) -> bool;
    /// If the claimant of `index` is dead, keeps anyone from reserving the
    /// slot until `release`, and returns true.
    fn hold_if_dead(&mut self, index: usize, word: u64) -> bool;
}

/// The fallback: pid and start time from /proc. Correct within one pid
/// namespace only; reserving is a no-op.
pub(crate) struct ByProcessIdentity;

impl Liveness for ByProcessIdentity {
    fn reserve(&mut self, _index: usize) -> Result<bool, SegmentError> {
        Ok(true)
    }

    fn release(&mut self, _index: usize) {}

    fn is_alive(&mut self, _index: usize, word: u64) -> bool {
        let (pid, start_low) = split(word);
        pid != 0 && sys::process::is_alive(pid, start_low)
    }

    fn hold_if_dead(&mut self, index: usize, word: u64) -> bool {
        !self.is_alive(index, word)
    }
}

/// Claims a free slot for `identity`, reserving its liveness signal first;
/// returns its index, or `None` if every slot is taken.
pub(crate) fn register(
    table: &[ParticipantSlot],
    identity: u64,
    liveness: &mut impl Liveness,
) -> Result<Option<usize>, SegmentError> {
    for (index, slot) in table.iter().enumerate() {
        if slot.identity.load(Ordering::Relaxed) != 0 || !liveness.reserve(index)? {
            continue;
        }
        // Release: pairs with the Acquire loads of `identity` in `list` and
        // `reap`, so whoever sees the claim also sees the liveness lock
        // taken before it.
        if slot
            .identity
            .compare_exchange(0, identity, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            slot.attached_ns
                .store(sys::time::realtime_ns(), Ordering::Relaxed);
            return Ok(Some(index));
        }
        liveness.release(index);
    }
    Ok(None)
}

/// Frees slot `index` if it still holds `identity` (a reaper may have freed
/// it, and another process claimed it since).
pub(crate) fn deregister(table: &[ParticipantSlot], index: usize, identity: u64) {
    if let Some(slot) = table.get(index) {
        // Relaxed: the slot is one word standing for itself; the liveness
        // lock is released after this, so a reaper never frees it twice.
        let _ = slot
            .identity
            .compare_exchange(identity, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Every claimed slot, with liveness.
pub(crate) fn list(table: &[ParticipantSlot], liveness: &mut impl Liveness) -> Vec<Participant> {
    let mut participants = Vec::new();
    for (index, slot) in table.iter().enumerate() {
        // Acquire: pairs with the Release claim in `register`.
        let word = slot.identity.load(Ordering::Acquire);
        if word == 0 {
            continue;
        }
        participants.push(Participant {
            slot: index,
            pid: split(word).0,
            alive: liveness.is_alive(index, word),
            attached_realtime_ns: slot.attached_ns.load(Ordering::Relaxed),
        });
    }
    participants
}

/// Frees the slots of processes that are gone; returns how many.
pub(crate) fn reap(table: &[ParticipantSlot], liveness: &mut impl Liveness) -> usize {
    let mut reaped = 0;
    for (index, slot) in table.iter().enumerate() {
        // Acquire: pairs with the Release claim in `register`.
        let word = slot.identity.load(Ordering::Acquire);
        if word == 0 || !liveness.hold_if_dead(index, word) {
            continue;
        }
        // With liveness locks, no one can reserve the slot while we hold
        // it, so a word equal to the one we judged is still the dead
        // claimant's, not the same process registering again.
        if slot
            .identity
            .compare_exchange(word, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            reaped += 1;
        }
        liveness.release(index);
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<ParticipantSlot> {
        (0..n)
            .map(|_| ParticipantSlot {
                identity: AtomicU64::new(0),
                attached_ns: AtomicU64::new(0),
            })
            .collect()
    }

    #[test]
    fn register_list_deregister() {
        let table = table(3);
        let me = own_identity().unwrap();
        let a = register(&table, me, &mut ByProcessIdentity)
            .unwrap()
            .unwrap();
        let b = register(&table, me, &mut ByProcessIdentity)
            .unwrap()
            .unwrap();
        assert_ne!(a, b);
        let listed = list(&table, &mut ByProcessIdentity);
        assert_eq!(listed.len(), 2);
        assert_eq!((listed[0].slot, listed[1].slot), (a, b));
        assert!(
            listed
                .iter()
                .all(|p| p.alive && p.pid == std::process::id())
        );
        deregister(&table, a, me);
        assert_eq!(list(&table, &mut ByProcessIdentity).len(), 1);
        // Deregistering a slot someone else holds leaves it alone.
        deregister(&table, b, me ^ 1);
        assert_eq!(list(&table, &mut ByProcessIdentity).len(), 1);
    }

    #[test]
    fn full_table_refuses() {
        let table = table(2);
        let me = own_identity().unwrap();
        assert!(
            register(&table, me, &mut ByProcessIdentity)
                .unwrap()
                .is_some()
        );
        assert!(
            register(&table, me, &mut ByProcessIdentity)
                .unwrap()
                .is_some()
        );
        assert!(
            register(&table, me, &mut ByProcessIdentity)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn reaps_dead_and_reused_pids_only() {
        let table = table(4);
        let me = own_identity().unwrap();
        let mut by_pid = ByProcessIdentity;
        register(&table, me, &mut by_pid).unwrap();
        // Our pid with another start time: a reused pid.
        register(&table, me ^ 0x1, &mut by_pid).unwrap();
        // A pid above pid_max: never alive. Pid 0: scribbled.
        register(&table, identity(1 << 30, 5), &mut by_pid).unwrap();
        register(&table, identity(0, 7), &mut by_pid).unwrap();
        assert_eq!(
            list(&table, &mut by_pid).iter().filter(|p| p.alive).count(),
            1
        );
        assert_eq!(reap(&table, &mut by_pid), 3);
        assert_eq!(list(&table, &mut by_pid).len(), 1);
        assert_eq!(reap(&table, &mut by_pid), 0);
    }

    /// A liveness signal kept in a set of "held" slots, recording calls.
    #[derive(Default)]
    struct Recorded {
        held: std::collections::BTreeSet<usize>,
        refuse: std::collections::BTreeSet<usize>,
        released: Vec<usize>,
    }

    impl Liveness for Recorded {
        fn reserve(&mut self, index: usize) -> Result<bool, SegmentError> {
            Ok(!self.refuse.contains(&index) && self.held.insert(index))
        }
        fn release(&mut self, index: usize) {
            self.released.push(index);
        }
        fn is_alive(&mut self, index: usize, _word: u64) -> bool {
            self.held.contains(&index)
        }
        fn hold_if_dead(&mut self, index: usize, _word: u64) -> bool {
            !self.held.contains(&index)
        }
    }

    #[test]
    fn a_slot_whose_signal_cannot_be_reserved_is_skipped() {
        let table = table(3);
        let mut liveness = Recorded::default();
        liveness.refuse.insert(0);
        assert_eq!(register(&table, 42 << 32, &mut liveness).unwrap(), Some(1));
        assert!(liveness.released.is_empty());
    }

    #[test]
    fn the_signal_decides_liveness_whatever_the_identity_says() {
        let table = table(2);
        let mut liveness = Recorded::default();
        // An identity the pid check would call dead.
        let bogus = identity(1 << 30, 5);
        assert_eq!(register(&table, bogus, &mut liveness).unwrap(), Some(0));
        assert!(list(&table, &mut liveness)[0].alive);
        assert_eq!(reap(&table, &mut liveness), 0);
        // The signal goes: the slot is reaped, and released afterwards.
        liveness.held.clear();
        assert!(!list(&table, &mut liveness)[0].alive);
        assert_eq!(reap(&table, &mut liveness), 1);
        assert_eq!(liveness.released, vec![0]);
        assert!(list(&table, &mut liveness).is_empty());
    }
}
