//! Mappings of shared memory: `mmap` of a file descriptor (POSIX shm and
//! memfd, through memmap2) or `shmat` of a SysV segment.
//!
//! A file mapping is registered with [`sigbus`](super::sigbus) for its
//! lifetime, so that a truncation of the file breaks the mapping (it reads
//! zeros) instead of killing the process.

use std::io;
use std::os::fd::AsFd;

use memmap2::{MmapOptions, MmapRaw};

use super::sigbus::{self, Protection};

/// Whether a mapping may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `PROT_READ` only: for inspection (`ipcring stat`) without write rights.
    ReadOnly,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

/// A live mapping; unmapped (or detached) on drop.
///
/// It hands out only a raw pointer: the bytes are shared with other
/// processes, so no `&[u8]` to them may exist.
#[derive(Debug)]
pub struct Mapping {
    inner: Inner,
    /// The SIGBUS registration of a file mapping; `None` for SysV (its size
    /// cannot change) or when protection is off or full.
    protection: Option<Protection<'static>>,
}

#[derive(Debug)]
enum Inner {
    Mmap(MmapRaw),
    SysV { addr: *mut u8, len: usize },
}

// SAFETY: a Mapping is an address range; which threads touch it is governed
// by the atomics the layers above use, and both munmap and shmdt may be
// called from any thread.
unsafe impl Send for Mapping {}
// SAFETY: &Mapping only yields the base pointer and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, shared.
    pub fn map_fd(fd: impl AsFd, len: usize, access: Access) -> io::Result<Mapping> {
        let mut options = MmapOptions::new();
        options.len(len);
        let fd = fd.as_fd();
        let raw = match access {
            Access::ReadOnly => options.map_raw_read_only(&fd)?,
            Access::ReadWrite => options.map_raw(&fd)?,
        };
        // Registered before anyone can touch the range, so no access to it
        // can fault unprotected.
        let protection = sigbus::protect(raw.as_mut_ptr(), raw.len(), access == Access::ReadWrite);
        Ok(Mapping {
            inner: Inner::Mmap(raw),
            protection,
        })
    }

    /// Wraps an address returned by `shmat`, so that drop detaches it.
    pub(super) fn from_shmat(addr: *mut u8, len: usize) -> Mapping {
        Mapping {
            inner: Inner::SysV { addr, len },
            protection: None,
        }
    }

    /// The first byte of the mapping (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        match &self.inner {
            Inner::Mmap(raw) => raw.as_mut_ptr(),
            Inner::SysV { addr, .. } => *addr,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Mmap(raw) => raw.len(),
            Inner::SysV { len, .. } => *len,
        }
    }

    /// Whether the file behind the mapping was truncated under us and an
    /// access faulted: the whole range now holds private zeros, and nothing
    /// written to it reaches other processes. It stays false until such a
    /// fault; a file shrunk and grown back before we touched it is not seen.
    pub fn is_broken(&self) -> bool {
        self.protection.as_ref().is_some_and(Protection::is_broken)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Deregister before unmapping (the fields drop after this body), so
        // the handler never maps over a range that is no longer ours.
        drop(self.protection.take());
        if let Inner::SysV { addr, .. } = self.inner {
            // SAFETY: `addr` came from a successful shmat and is detached
            // exactly once, here. A failure (EINVAL) would mean it was not
            // attached, and there is nothing to do about it in drop.
            unsafe { libc::shmdt(addr.cast()) };
        }
        // MmapRaw unmaps itself.
    }
}
