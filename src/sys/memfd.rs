//! Anonymous shared memory: `memfd_create` and file seals.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use super::cvt;

/// The seals an ipcring memfd carries once sized: its length can change no
/// more (so no peer can make a mapping fault with SIGBUS), and no seal can be
/// added or removed after these.
pub const SIZE_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// The seal without which a mapping of the memfd can fault: its holder
/// could shrink it under us.
pub const SEAL_SHRINK: libc::c_int = libc::F_SEAL_SHRINK;

/// Creates an unsized, sealable memfd; `name` shows in `/proc/PID/fd`.
///
/// With `huge_pages` it is on hugetlbfs (`MFD_HUGETLB`, the default huge
/// page size): its size must be a multiple of the huge page size, and its
/// pages come from the huge page pool. Sizing it succeeds even when the
/// pool is empty; allocating (`posix_fallocate`) or mapping it then fails.
pub fn create(name: &str, huge_pages: bool) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if huge_pages {
        flags |= libc::MFD_HUGETLB;
    }
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    let fd = cvt(fd)?;
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `seals` (`F_ADD_SEALS`).
pub fn add_seals(fd: impl AsFd, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: plain fcntl on a borrowed descriptor.
    cvt(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// The seals on `fd`; `Ok(0)` for a file that cannot carry seals.
pub fn seals(fd: impl AsFd) -> io::Result<libc::c_int> {
    // SAFETY: plain fcntl on a borrowed descriptor.
    match cvt(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GET_SEALS) }) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(0),
        other => other,
    }
}

/// A duplicate of `fd` without `FD_CLOEXEC`, so a child started with
/// `exec` inherits it.
pub fn dup_inheritable(fd: impl AsFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD returns a fresh descriptor (without FD_CLOEXEC).
    let new = cvt(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_DUPFD, 0) })?;
    // SAFETY: `new` is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A close-on-exec duplicate of a raw descriptor number that this process
/// was handed (inherited from a parent). The original stays open.
pub fn dup_raw(raw: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor table; an invalid
    // number fails with EBADF, and the original is not closed or changed.
    let new = cvt(unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `new` is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
