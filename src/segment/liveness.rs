//! Kernel-kept liveness: one-byte open-file-description locks on a
//! segment's file, far beyond its end.
//!
//! A participant holds a shared lock on the byte for its key through a
//! description of its own. The kernel drops the lock when the process dies
//! (whatever its pid namespace), so "the byte is locked" means "someone who
//! took it still runs". Anyone may ask through the segment's main
//! descriptor, which never holds liveness locks itself.
//!
//! Keys:
//!
//! | keys | owner |
//! |------|-------|
//! | `0..MAX_PARTICIPANTS` | the participants table: slot `i` is key `i` |
//! | `MAX_PARTICIPANTS` (128) | the creator of an owned segment, while its handle lives |
//! | `129..MIN_LIVENESS_KEY` | reserved for the segment layer |
//! | `MIN_LIVENESS_KEY..` | the layer above (channels use `1024 + side * 64 + index`) |
//!
//! Only backings with a file have locks: POSIX shared memory and memfds.
//! SysV segments have none, and fall back to pid and start time.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::SegmentError;
use crate::sys::lock::{self, LockKind};

/// The byte offset of key 0's lock: 256 TiB, far beyond the largest
/// segment (1 TiB and a page), so no lock ever covers segment bytes.
pub const LIVENESS_LOCK_BASE: u64 = 1 << 48;

/// The first liveness key the layer above may lock; the keys below belong
/// to the segment layer (`0..MAX_PARTICIPANTS` to the participants table).
pub const MIN_LIVENESS_KEY: u32 = 1024;

/// A held liveness lock: a shared OFD lock on key's byte, through a
/// descriptor of its own. Dropping it releases the lock; so does the death
/// of the process, whatever its pid namespace.
///
/// A child forked while the lock is held shares its open file description,
/// so the lock then lasts until both processes have closed it (the
/// descriptor is close-on-exec, so a child that `exec`s lets go at once).
///
/// ```
/// use ipcring::segment::{CreateOptions, Segment};
///
/// let segment = Segment::create_anonymous(&CreateOptions::new(4096))?;
/// assert_eq!(segment.liveness_held(1024)?, Some(false));
/// let lock = segment.lock_liveness(1024)?.expect("memfds have locks");
/// assert_eq!(segment.liveness_held(1024)?, Some(true));
/// drop(lock);
/// assert_eq!(segment.liveness_held(1024)?, Some(false));
/// # Ok::<(), ipcring::segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct LivenessLock {
    /// Held, never read: closing it releases the lock.
    _description: OwnedFd,
    key: u32,
}

impl LivenessLock {
    /// The key this lock holds.
    pub fn key(&self) -> u32 {
        self.key
    }
}

/// Held by the creator's handle of an owned segment.
pub(crate) const CREATOR_KEY: u32 = super::MAX_PARTICIPANTS as u32;

/// The byte a key locks.
pub(crate) fn offset(key: u32) -> u64 {
    LIVENESS_LOCK_BASE + u64::from(key)
}

fn io(op: &'static str) -> impl Fn(std::io::Error) -> SegmentError {
    move |source| SegmentError::Io { op, source }
}

/// A fresh description of `file`, on which locks can be taken. Reopening
/// checks the file's mode against us, as opening its name would, so a memfd
/// sent by another user with mode 0600 cannot be reopened.
pub(crate) fn new_description(
    file: BorrowedFd<'_>,
    writable: bool,
) -> Result<OwnedFd, SegmentError> {
    lock::reopen(file, writable).map_err(io("open /proc/self/fd/N"))
}

/// Takes the shared lock for `key` through a fresh description of `file`.
pub(crate) fn acquire(file: BorrowedFd<'_>, key: u32) -> Result<LivenessLock, SegmentError> {
    let description = new_description(file, false)?;
    if try_share(description.as_fd(), key)? {
        Ok(held(description, key))
    } else {
        Err(SegmentError::LivenessKeyBusy { key })
    }
}

/// Takes the shared lock for `key` on a description this registration
/// already opened; `Ok(false)` if the byte is held exclusively (a reaper).
pub(crate) fn try_share(description: BorrowedFd<'_>, key: u32) -> Result<bool, SegmentError> {
    lock::try_lock(description, offset(key), LockKind::Shared).map_err(io("fcntl(F_OFD_SETLK)"))
}

/// Takes the exclusive lock for `key` on `description`: it succeeds only
/// if no one holds the key, and keeps anyone from taking it until released.
pub(crate) fn try_exclude(description: BorrowedFd<'_>, key: u32) -> bool {
    // An error counts as "held": never free a slot on a failed probe.
    lock::try_lock(description, offset(key), LockKind::Exclusive).unwrap_or(false)
}

/// Releases this description's lock on `key`.
pub(crate) fn release(description: BorrowedFd<'_>, key: u32) {
    // An unlock of a byte we hold cannot fail but for EINTR, which is
    // retried; closing the description releases it anyway.
    let _ = lock::unlock(description, offset(key));
}

/// Wraps a description that holds the shared lock on `key`.
pub(crate) fn held(description: OwnedFd, key: u32) -> LivenessLock {
    LivenessLock {
        _description: description,
        key,
    }
}

/// Whether any description other than `main`'s holds `key`.
pub(crate) fn is_held(main: impl AsFd, key: u32) -> Result<bool, SegmentError> {
    lock::is_locked_by_other(main, offset(key)).map_err(io("fcntl(F_OFD_GETLK)"))
}
