//! Named POSIX shared memory: unnamed creation and atomic naming in
//! `/dev/shm`, `shm_open`, `shm_unlink`, and the listing of `/dev/shm`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, retry_eintr};

/// Where Linux mounts the tmpfs behind `shm_open`.
pub const SHM_DIR: &str = "/dev/shm";

/// What `fstat` says about a shared-memory file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdStat {
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`0o777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Whether it is a regular file (not a FIFO, device or directory).
    pub regular: bool,
    /// Device and inode: which object this is, whatever its name.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
}

/// Creates an unnamed shared-memory file (`O_TMPFILE` in /dev/shm) with
/// exactly `mode`. Nobody can open it until [`publish`] names it, and it
/// vanishes if we die first.
pub fn create_unnamed(mode: u32) -> io::Result<OwnedFd> {
    let dir = CString::new(SHM_DIR).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = retry_eintr(|| {
        // SAFETY: `dir` is a NUL-terminated string that outlives the call;
        // O_TMPFILE takes the mode as the third argument.
        cvt(unsafe {
            libc::open(
                dir.as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })
    })?;
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The umask narrowed the mode; restore it exactly.
    fchmod(fd.as_fd(), mode)?;
    Ok(fd)
}

/// Gives an unnamed file from [`create_unnamed`] its `name` (which starts
/// with `/`), atomically: `AlreadyExists` if the name is taken, and never
/// replacing what holds it.
pub fn publish(fd: impl AsFd, name: &CStr) -> io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let to = CString::new([SHM_DIR.as_bytes(), name.to_bytes()].concat())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// Whether `name` (which starts with `/`) exists in /dev/shm, whatever it is.
pub fn name_exists(name: &CStr) -> bool {
    let path = [SHM_DIR.as_bytes(), name.to_bytes()].concat();
    std::str::from_utf8(&path).is_ok_and(|path| std::fs::symlink_metadata(path).is_ok())
}

/// Opens an existing `name`. `O_NONBLOCK`: anyone may put a FIFO in
/// /dev/shm, and a plain open of a FIFO blocks until a writer comes; the
/// caller checks that the result is a regular file.
pub fn open(name: &CStr, writable: bool) -> io::Result<OwnedFd> {
    let access = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    let flags = access | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let fd = retry_eintr(|| {
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        cvt(unsafe { libc::shm_open(name.as_ptr(), flags, 0) })
    })?;
    // SAFETY: shm_open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes `name`; mappings that exist stay valid until unmapped.
pub fn unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) }).map(drop)
}

/// Sets the size of a freshly created object.
pub fn set_len(fd: impl AsFd, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    retry_eintr(|| {
        // SAFETY: plain syscall on a descriptor we borrow for the call.
        cvt(unsafe { libc::ftruncate(fd.as_fd().as_raw_fd(), len) })
    })
    .map(drop)
}

/// Allocates the object's pages now, so that a full tmpfs fails here with
/// ENOSPC instead of faulting (SIGBUS) on the first touch of the mapping.
pub fn reserve(fd: impl AsFd, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on a borrowed descriptor; it returns the error
    // number instead of setting errno.
    match unsafe { libc::posix_fallocate(fd.as_fd().as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Sets the permission bits.
pub fn fchmod(fd: impl AsFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we borrow for the call.
    cvt(unsafe { libc::fchmod(fd.as_fd().as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// Size, mode and owner of an open descriptor.
pub fn fstat(fd: impl AsFd) -> io::Result<FdStat> {
    // SAFETY: an all-zero `stat` is a valid value for this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and sized for the kernel's answer.
    cvt(unsafe { libc::fstat(fd.as_fd().as_raw_fd(), &mut st) })?;
    Ok(FdStat {
        size: st.st_size as u64,
        mode: st.st_mode & 0o777,
        uid: st.st_uid,
        regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// The names in `/dev/shm` (without the leading `/`) that start with `prefix`.
pub fn list(prefix: &str) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            if name.starts_with(prefix) {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// `"/" + name` as a C string; `None` if `name` holds a NUL.
pub fn c_name(name: &str) -> Option<CString> {
    CString::new(format!("/{name}")).ok()
}
