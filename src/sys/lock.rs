//! Open-file-description (OFD) byte-range locks: `F_OFD_SETLK` and
//! `F_OFD_GETLK`.
//!
//! An OFD lock belongs to the open file description, not to the process:
//! it is released when the last descriptor referring to that description is
//! closed, which the kernel does for us when the process dies, whatever pid
//! namespace it lives in. That makes a held lock a liveness signal no pid
//! check can match. Locks held through one description never conflict with
//! each other, so a probe must go through a description that holds none.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::{cvt, retry_eintr};

/// Which lock to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// `F_RDLCK`: any number may be held at once; needs a readable
    /// description.
    Shared,
    /// `F_WRLCK`: excludes every other lock on the byte; needs a writable
    /// description.
    Exclusive,
}

/// Opens a new open file description of the file behind `fd`, through
/// `/proc/self/fd/N`: the same inode, whatever its name now points to, or
/// if it has none (a memfd, or an unlinked name). Close-on-exec.
pub fn reopen(fd: BorrowedFd<'_>, writable: bool) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

/// Takes a lock on the one byte at `offset` without waiting. `Ok(false)`
/// if another description holds a conflicting lock.
pub fn try_lock(fd: impl AsFd, offset: u64, kind: LockKind) -> io::Result<bool> {
    let l_type = match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    };
    let mut lock = one_byte(offset, l_type)?;
    let result = retry_eintr(|| {
        // SAFETY: `lock` is a valid, initialised flock that outlives the
        // call; F_OFD_SETLK only reads it.
        cvt(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_OFD_SETLK, &mut lock) })
    });
    match result {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases this description's lock on the byte at `offset` (closing the
/// last descriptor of the description does the same).
pub fn unlock(fd: impl AsFd, offset: u64) -> io::Result<()> {
    let mut lock = one_byte(offset, libc::F_UNLCK)?;
    retry_eintr(|| {
        // SAFETY: as in `try_lock`.
        cvt(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_OFD_SETLK, &mut lock) })
    })
    .map(drop)
}

/// Whether any description other than `fd`'s holds a lock (of either kind)
/// on the byte at `offset`. Takes no lock, and needs no write access.
pub fn is_locked_by_other(fd: impl AsFd, offset: u64) -> io::Result<bool> {
    // A write lock conflicts with every lock, so the kernel reports any.
    let mut lock = one_byte(offset, libc::F_WRLCK)?;
    retry_eintr(|| {
        // SAFETY: `lock` is a valid flock with `l_pid` 0, as F_OFD_GETLK
        // requires; the kernel writes the answer into it.
        cvt(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_OFD_GETLK, &mut lock) })
    })?;
    Ok(i32::from(lock.l_type) != libc::F_UNLCK)
}

fn one_byte(offset: u64, l_type: libc::c_int) -> io::Result<libc::flock> {
    let start =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero flock is a valid value for this plain C struct
    // (and `l_pid` must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = l_type as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start;
    lock.l_len = 1;
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd() -> OwnedFd {
        super::super::memfd::create("lock-test", false).unwrap()
    }

    #[test]
    fn shared_locks_coexist_and_are_seen_by_a_third_description() {
        let main = memfd();
        let a = reopen(main.as_fd(), false).unwrap();
        let b = reopen(main.as_fd(), false).unwrap();
        assert!(!is_locked_by_other(&main, 7).unwrap());
        assert!(try_lock(&a, 7, LockKind::Shared).unwrap());
        assert!(try_lock(&b, 7, LockKind::Shared).unwrap());
        assert!(is_locked_by_other(&main, 7).unwrap());
        assert!(!is_locked_by_other(&main, 8).unwrap(), "one byte only");
        drop(a);
        assert!(is_locked_by_other(&main, 7).unwrap(), "b still holds it");
        unlock(&b, 7).unwrap();
        assert!(!is_locked_by_other(&main, 7).unwrap());
    }

    #[test]
    fn an_exclusive_lock_excludes_shared_ones_and_vice_versa() {
        let main = memfd();
        let reader = reopen(main.as_fd(), false).unwrap();
        let writer = reopen(main.as_fd(), true).unwrap();
        assert!(try_lock(&reader, 1 << 48, LockKind::Shared).unwrap());
        assert!(!try_lock(&writer, 1 << 48, LockKind::Exclusive).unwrap());
        drop(reader);
        assert!(try_lock(&writer, 1 << 48, LockKind::Exclusive).unwrap());
        let late = reopen(main.as_fd(), false).unwrap();
        assert!(!try_lock(&late, 1 << 48, LockKind::Shared).unwrap());
    }

    #[test]
    fn a_description_does_not_see_its_own_lock() {
        let main = memfd();
        let own = reopen(main.as_fd(), false).unwrap();
        assert!(try_lock(&own, 3, LockKind::Shared).unwrap());
        assert!(!is_locked_by_other(&own, 3).unwrap());
        assert!(is_locked_by_other(&main, 3).unwrap());
    }

    #[test]
    fn offsets_beyond_off_t_are_refused() {
        let main = memfd();
        assert!(try_lock(&main, u64::MAX, LockKind::Shared).is_err());
    }
}
