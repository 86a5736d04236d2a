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
//! The identity pairs the pid with the process's start time from
//! `/proc/PID/stat`, so a pid the kernel reuses for another process is not
//! mistaken for the original (the low 32 bits of the start time in clock
//! ticks repeat only after ~497 days at 100 Hz). A slot is claimed and freed
//! with one compare-exchange on `identity`: there is no half-registered state
//! for a crash to leave behind.

use std::sync::atomic::{AtomicU64, Ordering};

use super::SegmentError;
use crate::sys;

#[repr(C)]
pub(crate) struct ParticipantSlot {
    identity: AtomicU64,
    attached_ns: AtomicU64,
}

/// One attached process, as the table reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Participant {
    /// Its pid.
    pub pid: u32,
    /// Whether that same process (pid and start time) is still running.
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

// The table holds no data whose visibility depends on it: every access is
// one atomic word standing for itself, so Relaxed suffices throughout.

/// Claims a free slot for `identity`; returns its index.
pub(crate) fn register(table: &[ParticipantSlot], identity: u64) -> Option<usize> {
    for (index, slot) in table.iter().enumerate() {
        if slot
            .identity
            .compare_exchange(0, identity, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            slot.attached_ns
                .store(sys::time::realtime_ns(), Ordering::Relaxed);
            return Some(index);
        }
    }
    None
}

/// Frees slot `index` if it still holds `identity` (a reaper may have freed
/// it, and another process claimed it since).
pub(crate) fn deregister(table: &[ParticipantSlot], index: usize, identity: u64) {
    if let Some(slot) = table.get(index) {
        let _ = slot
            .identity
            .compare_exchange(identity, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Every claimed slot, with liveness.
pub(crate) fn list(table: &[ParticipantSlot]) -> Vec<Participant> {
    table
        .iter()
        .filter_map(|slot| {
            let word = slot.identity.load(Ordering::Relaxed);
            (word != 0).then(|| {
                let (pid, start_low) = split(word);
                Participant {
                    pid,
                    alive: pid != 0 && sys::process::is_alive(pid, start_low),
                    attached_realtime_ns: slot.attached_ns.load(Ordering::Relaxed),
                }
            })
        })
        .collect()
}

/// Frees the slots of processes that are gone; returns how many.
pub(crate) fn reap(table: &[ParticipantSlot]) -> usize {
    let mut reaped = 0;
    for slot in table {
        let word = slot.identity.load(Ordering::Relaxed);
        if word == 0 {
            continue;
        }
        let (pid, start_low) = split(word);
        if (pid == 0 || !sys::process::is_alive(pid, start_low))
            && slot
                .identity
                .compare_exchange(word, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            reaped += 1;
        }
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
        let a = register(&table, me).unwrap();
        let b = register(&table, me).unwrap();
        assert_ne!(a, b);
        let listed = list(&table);
        assert_eq!(listed.len(), 2);
        assert!(
            listed
                .iter()
                .all(|p| p.alive && p.pid == std::process::id())
        );
        deregister(&table, a, me);
        assert_eq!(list(&table).len(), 1);
        // Deregistering a slot someone else holds leaves it alone.
        deregister(&table, b, me ^ 1);
        assert_eq!(list(&table).len(), 1);
    }

    #[test]
    fn full_table_refuses() {
        let table = table(2);
        assert!(register(&table, own_identity().unwrap()).is_some());
        assert!(register(&table, own_identity().unwrap()).is_some());
        assert!(register(&table, own_identity().unwrap()).is_none());
    }

    #[test]
    fn reaps_dead_and_reused_pids_only() {
        let table = table(4);
        let me = own_identity().unwrap();
        register(&table, me).unwrap();
        // Our pid with another start time: a reused pid.
        register(&table, me ^ 0x1).unwrap();
        // A pid above pid_max: never alive. Pid 0: scribbled.
        register(&table, identity(1 << 30, 5)).unwrap();
        register(&table, identity(0, 7)).unwrap();
        assert_eq!(list(&table).iter().filter(|p| p.alive).count(), 1);
        assert_eq!(reap(&table), 3);
        assert_eq!(list(&table).len(), 1);
        assert_eq!(reap(&table), 0);
    }
}
