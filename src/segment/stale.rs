//! Stale segments: those nobody will use again, and which may be removed
//! without losing data.
//!
//! Two kinds are stale, and only segments our effective uid owns are
//! considered:
//!
//! - **abandoned**: never initialised, and never will be. A POSIX object
//!   under our prefix that is empty, or whose header is blank or carries our
//!   magic without being ready (our creators name a segment only once it is
//!   complete); a SysV segment with our magic, not ready, whose creator
//!   (`shm_cpid`) is gone and to which nobody is attached. A SysV segment
//!   whose header is all zeros is *not* swept: it may be another program's
//!   (remove it by key with [`Segment::remove`](super::Segment::remove)).
//! - **creator gone**: created with [`CreateOptions::owned`](super::CreateOptions::owned),
//!   and its creator is gone: nobody holds the creator liveness lock (POSIX),
//!   or the creator's pid and start time no longer name a running process
//!   (SysV).
//!
//! Everything else, a persistent segment whose every participant died
//! included, holds data someone may come back for, and is left alone.

use std::fmt;
use std::os::fd::AsFd;

use super::header::{BackingKind, FLAG_OWNED, Readiness};
use super::{
    Address, HEADER_SIZE, POSIX_PREFIX, PosixName, ProcessIdentity, SegmentError, SysvKey,
    header_of, liveness, posix_c_name, sysv_creator_gone, unlink_if_same,
};
use crate::sys::map::{Access, Mapping};
use crate::sys::{self, shm, sysv};

/// Why [`remove_stale`] removed a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StaleReason {
    /// Its creator died (or stopped) before marking it ready; it never
    /// will be.
    Abandoned,
    /// It was created owned by its creator, and the creator is gone.
    CreatorGone {
        /// The creator's pid, as recorded in the header.
        creator_pid: u32,
    },
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::Abandoned => f.write_str("abandoned before its creator initialised it"),
            StaleReason::CreatorGone { creator_pid } => {
                write!(f, "owned by its creator (pid {creator_pid}), which is gone")
            }
        }
    }
}

/// One segment [`remove_stale`] removed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// Its name or key.
    pub address: Address,
    /// Why it was stale.
    pub reason: StaleReason,
}

/// Removes every stale segment our effective uid owns, and says which and
/// why: segments abandoned before they were initialised (POSIX: empty, or
/// not ready; SysV: our magic, not ready, creator gone, nobody attached),
/// and owned segments ([`CreateOptions::owned`]) whose creator is gone.
/// Persistent segments are never removed, whoever is attached or alive. A
/// SysV segment whose header is all zeros is not swept either: it may be
/// another program's; [`Segment::remove`] removes one by key.
///
/// [`CreateOptions::owned`]: super::CreateOptions::owned
/// [`Segment::remove`]: super::Segment::remove
///
/// Each segment is judged and removed through one handle on it (a
/// descriptor, or a SysV id), so a newer segment that takes the name in
/// between is not removed (but for the window [`Segment::unlink`] notes).
/// A segment that vanishes, cannot be read, or cannot be removed is left
/// out of the report. Fails only if `/dev/shm` cannot be listed.
///
/// [`Segment::unlink`]: super::Segment::unlink
pub fn remove_stale() -> Result<Vec<Removed>, SegmentError> {
    remove_stale_where(|_| true)
}

/// [`remove_stale`], considering only the segments `select` picks (an
/// application's own names, say).
pub fn remove_stale_where(
    mut select: impl FnMut(&Address) -> bool,
) -> Result<Vec<Removed>, SegmentError> {
    let mut removed = Vec::new();
    let names = shm::list(POSIX_PREFIX).map_err(|source| SegmentError::Io {
        op: "read /dev/shm",
        source,
    })?;
    for file_name in names {
        let Ok(name) = PosixName::new(&file_name[POSIX_PREFIX.len()..]) else {
            continue;
        };
        if !select(&Address::Posix(name.clone())) {
            continue;
        }
        if let Some(reason) = remove_posix_if_stale(&name) {
            removed.push(Removed {
                address: Address::Posix(name),
                reason,
            });
        }
    }
    // Without /proc/sysvipc there are no SysV segments to sweep.
    for entry in sysv::list().unwrap_or_default() {
        let Ok(key) = SysvKey::new(entry.key) else {
            continue;
        };
        if !select(&Address::SysV(key)) {
            continue;
        }
        if let Some(reason) = remove_sysv_if_stale(entry.id) {
            removed.push(Removed {
                address: Address::SysV(key),
                reason,
            });
        }
    }
    Ok(removed)
}

fn remove_posix_if_stale(name: &PosixName) -> Option<StaleReason> {
    let fd = shm::open(&posix_c_name(name), false).ok()?;
    let stat = shm::fstat(&fd).ok()?;
    if !stat.regular || stat.uid != sys::process::euid() {
        return None;
    }
    let reason = if stat.size == 0 {
        StaleReason::Abandoned
    } else {
        if stat.size < HEADER_SIZE as u64 {
            return None;
        }
        let mapping = Mapping::map_fd(&fd, HEADER_SIZE, Access::ReadOnly).ok()?;
        let header = header_of(&mapping);
        match header.readiness().ok()? {
            Readiness::NotYet if header.is_ours() || header.is_blank() => StaleReason::Abandoned,
            Readiness::NotYet => return None,
            Readiness::Ready => {
                // Only a header we fully understand says who owns it: a
                // newer layout or unknown flags are not ours to judge.
                header.validate(stat.size, BackingKind::Posix, None).ok()?;
                // This descriptor is fresh and holds no lock, so it sees the
                // creator's.
                let creator_gone = header.raw_flags() & FLAG_OWNED != 0
                    && !liveness::is_held(&fd, liveness::CREATOR_KEY).unwrap_or(true);
                if !creator_gone {
                    return None;
                }
                StaleReason::CreatorGone {
                    creator_pid: header.raw_creator_pid(),
                }
            }
        }
    };
    unlink_if_same(name, fd.as_fd()).ok()?;
    Some(reason)
}

fn remove_sysv_if_stale(id: i32) -> Option<StaleReason> {
    let stat = sysv::stat(id).ok()?;
    if stat.uid != sys::process::euid() || stat.size < HEADER_SIZE as u64 {
        return None;
    }
    let reason = {
        let mapping = sysv::attach(id, HEADER_SIZE, Access::ReadOnly).ok()?;
        let header = header_of(&mapping);
        // Blank segments may be another program's: never swept.
        if !header.is_ours() {
            return None;
        }
        match header.readiness().ok()? {
            Readiness::NotYet if sysv_creator_gone(stat.creator_pid) => StaleReason::Abandoned,
            Readiness::NotYet => return None,
            Readiness::Ready => {
                // As for POSIX: only a header we fully understand.
                header.validate(stat.size, BackingKind::SysV, None).ok()?;
                let creator_gone = header.raw_flags() & FLAG_OWNED != 0
                    && ProcessIdentity::from_word(header.raw_creator_identity())
                        .is_some_and(|creator| !creator.is_alive());
                if !creator_gone {
                    return None;
                }
                StaleReason::CreatorGone {
                    creator_pid: header.raw_creator_pid(),
                }
            }
        }
    };
    // Counted once our own attachment is gone: an abandoned segment someone
    // is attached to is left for a later sweep.
    if reason == StaleReason::Abandoned && sysv::stat(id).ok()?.attachments != 0 {
        return None;
    }
    sysv::remove(id).ok()?;
    Some(reason)
}
