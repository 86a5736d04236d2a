//! The platform layer: the only module that calls libc.
//!
//! Everything above `sys` sees small typed functions (`futex_wait`,
//! `shm::create`, `sysv::attach`, `lock::try_lock`, ...) that return
//! [`std::io::Error`] on failure. This module knows nothing of headers,
//! rings or messages; it must never interpret the bytes of a segment.

// Under loom only the clock is needed: the futex is modelled in `sync`, and
// segments (the only users of the rest) are not built.
#[cfg(not(loom))]
pub(crate) mod affinity;
#[cfg(not(loom))]
pub(crate) mod fdpass;
#[cfg(not(loom))]
pub(crate) mod futex;
#[cfg(not(loom))]
pub(crate) mod kernel_ipc;
#[cfg(not(loom))]
pub(crate) mod lock;
#[cfg(not(loom))]
pub(crate) mod map;
#[cfg(not(loom))]
pub(crate) mod memfd;
#[cfg(not(loom))]
pub(crate) mod memory;
#[cfg(not(loom))]
pub(crate) mod process;
#[cfg(not(loom))]
pub(crate) mod shm;
#[cfg(not(loom))]
pub(crate) mod sigbus;
#[cfg(not(loom))]
pub(crate) mod sysv;
pub(crate) mod time;
#[cfg(not(loom))]
pub(crate) mod usage;

#[cfg(not(loom))]
use std::io;

#[cfg(not(loom))]
/// Turns a libc "-1 and errno" return into an `io::Result`.
#[inline]
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(not(loom))]
/// Runs `f` again while it fails with `EINTR`.
pub(crate) fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
