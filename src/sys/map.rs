//! Mappings of shared memory: `mmap` of a file descriptor (POSIX shm and
//! memfd, through memmap2) or `shmat` of a SysV segment.
//!
//! A file mapping is registered with [`sigbus`](super::sigbus) for its
//! lifetime, so that a truncation of the file breaks the mapping (it reads
//! zeros) instead of killing the process.
//!
//! [`MirroredMapping`] maps one range of a file twice, back to back, so
//! that a ring buffer in that range can be read and written across its end
//! with one contiguous access.
//!
//! Either kind can be populated (every page faulted in before the first
//! access: `MAP_POPULATE` while mapping with `mmap`, or
//! `MADV_POPULATE_READ`/`_WRITE` once mapped, as after `shmat`) and locked
//! (`mlock`: never paged out). A lock lasts as long
//! as the mapping; unmapping ends it.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::sigbus::{self, Protection};
use super::{cvt, retry_eintr};

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
    access: Access,
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
        Mapping::map_fd_with(fd, len, access, false)
    }

    /// As [`map_fd`](Self::map_fd), and with `populate`, `MAP_POPULATE`:
    /// the kernel maps every page of the file in before returning, so the
    /// first accesses take no page faults. Like any `MAP_POPULATE`, it is
    /// best effort: pages it could not bring in fault later as usual.
    pub fn map_fd_with(
        fd: impl AsFd,
        len: usize,
        access: Access,
        populate: bool,
    ) -> io::Result<Mapping> {
        let mut options = MmapOptions::new();
        options.len(len);
        if populate {
            options.populate();
        }
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
            access,
            protection,
        })
    }

    /// Wraps an address returned by `shmat`, so that drop detaches it.
    pub(super) fn from_shmat(addr: *mut u8, len: usize, access: Access) -> Mapping {
        Mapping {
            inner: Inner::SysV { addr, len },
            access,
            protection: None,
        }
    }

    /// Faults every page of the mapping in now: `MADV_POPULATE_WRITE` (or
    /// `_READ` for a read-only mapping), which, unlike `MAP_POPULATE`,
    /// reports a failure. Kernels before 5.14 know neither advice
    /// (`EINVAL`); there each page is touched with a read instead, which
    /// for shared memory maps it in (writable, if the mapping is) without
    /// changing a byte.
    ///
    /// A file that another process cut short under the mapping has pages
    /// past its end that cannot be faulted in (`EFAULT`). They are left as
    /// `MAP_POPULATE` leaves them: the pages that exist are in, and the
    /// first access past the end faults, which the SIGBUS handler turns
    /// into a broken segment, as for any access after a truncation.
    pub fn populate(&self) -> io::Result<()> {
        let advice = match self.access {
            Access::ReadOnly => libc::MADV_POPULATE_READ,
            Access::ReadWrite => libc::MADV_POPULATE_WRITE,
        };
        let (ptr, len) = (self.as_ptr(), self.len());
        // SAFETY: `ptr..ptr + len` is this mapping, alive while `self` is;
        // populating faults its pages in and changes neither their contents
        // nor the mapping.
        let advised = retry_eintr(|| cvt(unsafe { libc::madvise(ptr.cast(), len, advice) }));
        match advised {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.touch_pages();
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads one byte of each page of the mapping.
    fn touch_pages(&self) {
        let (ptr, len) = (self.as_ptr(), self.len());
        for offset in (0..len).step_by(page_size()) {
            // SAFETY: `offset < len`, so the byte is inside this mapping,
            // alive while `self` is; another process may write it, so it is
            // read as an atomic (Relaxed, so a read-only mapping will do),
            // and the value is unused. A file truncated under us makes this
            // fault, which the SIGBUS handler repairs, as for any access.
            unsafe { (*ptr.add(offset).cast::<AtomicU8>()).load(Ordering::Relaxed) };
        }
    }

    /// Locks the mapping's pages in memory (`mlock`), faulting them in
    /// first, until it is unmapped. Fails with `EPERM` or `ENOMEM` when
    /// `RLIMIT_MEMLOCK` (without `CAP_IPC_LOCK`) does not cover it, with
    /// `EAGAIN` if some pages could not be locked.
    pub fn lock(&self) -> io::Result<()> {
        lock(self.as_ptr(), self.len())
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

/// `mlock` of a range we map.
fn lock(ptr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: the range is a mapping of ours; mlock only pins its pages
    // (faulting them in) and changes no byte and no mapping.
    cvt(unsafe { libc::mlock(ptr.cast_const().cast(), len) }).map(drop)
}

/// The size of a page: what mappings, their lengths and their file offsets
/// align to. Asked once (`sysconf`), then cached.
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    // Relaxed: every thread computes the same value; no other data hangs on it.
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf only reads a system constant.
            let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            // Linux always reports one; 4096 is the smallest any port uses.
            let size = usize::try_from(size)
                .ok()
                .filter(|&s| s > 0)
                .unwrap_or(4096);
            PAGE.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

/// `len` bytes of a file mapped twice, back to back: byte `i` of the range
/// is at `as_ptr() + i` and at `as_ptr() + len + i`, the same memory. So
/// any `len` bytes starting anywhere in the first copy are contiguous in
/// our address space, whichever end of the range they cross.
///
/// Built by reserving `2 * len` bytes of address space with an anonymous
/// `PROT_NONE` mapping, then mapping the file range over each half with
/// `MAP_SHARED | MAP_FIXED` (replacing only our own reservation). The whole
/// `2 * len` range is registered with the SIGBUS handler as one range: if
/// the file is truncated under it, a fault replaces both halves with
/// private zeros (they are then no longer the same memory, and the layer
/// above must stop using them: [`is_broken`](Self::is_broken)).
///
/// It hands out only a raw pointer, like [`Mapping`].
#[derive(Debug)]
pub struct MirroredMapping {
    base: NonNull<u8>,
    /// Bytes in one copy; the reservation is twice this.
    len: usize,
    protection: Option<Protection<'static>>,
}

// SAFETY: an address range, as for `Mapping`; munmap may run on any thread.
unsafe impl Send for MirroredMapping {}
// SAFETY: &MirroredMapping only yields the base pointer and length.
unsafe impl Sync for MirroredMapping {}

/// Unmaps a reservation unless disarmed (on the error paths of `map_fd`).
struct Reservation {
    base: *mut libc::c_void,
    total: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: `base..base + total` is our own reservation (and the file
        // mappings placed inside it), which nothing else references yet.
        unsafe { libc::munmap(self.base, self.total) };
    }
}

impl MirroredMapping {
    /// Maps `len` bytes of `fd` from byte `offset` twice, back to back.
    /// `offset` and `len` must be multiples of the page size, `len` not 0
    /// (else `InvalidInput`); the file must be at least `offset + len`
    /// bytes long (the caller checked). With `populate`, each half is
    /// mapped with `MAP_POPULATE`, as [`Mapping::map_fd_with`] does.
    pub fn map_fd(
        fd: impl AsFd,
        offset: u64,
        len: usize,
        access: Access,
        populate: bool,
    ) -> io::Result<MirroredMapping> {
        let page = page_size();
        let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
        if len == 0 || len % page != 0 || offset % page as u64 != 0 {
            return Err(invalid());
        }
        let total = len
            .checked_mul(2)
            .filter(|&total| total <= isize::MAX as usize)
            .ok_or_else(invalid)?;
        let file_offset = libc::off_t::try_from(offset).map_err(|_| invalid())?;
        let protection = match access {
            Access::ReadOnly => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        };
        // SAFETY: a fresh anonymous mapping where the kernel chooses; it
        // replaces nothing. PROT_NONE and MAP_NORESERVE: address space
        // only, never touched before the file is mapped over it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let reservation = Reservation { base, total };
        let mut flags = libc::MAP_SHARED | libc::MAP_FIXED;
        if populate {
            flags |= libc::MAP_POPULATE;
        }
        for half in 0..2 {
            let at = base.cast::<u8>().wrapping_add(half * len).cast();
            // SAFETY: `at..at + len` lies inside our own reservation, which
            // no one else references; MAP_FIXED replaces exactly that part.
            let mapped = unsafe {
                libc::mmap(
                    at,
                    len,
                    protection,
                    flags,
                    fd.as_fd().as_raw_fd(),
                    file_offset,
                )
            };
            if mapped == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            if mapped != at {
                // MAP_FIXED never moves a mapping; treat it as a failure.
                return Err(io::Error::other("mmap ignored MAP_FIXED"));
            }
        }
        std::mem::forget(reservation);
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(invalid)?;
        // Registered before anyone can touch the range, as in `Mapping`.
        let protection = sigbus::protect(base.as_ptr(), total, access == Access::ReadWrite);
        Ok(MirroredMapping {
            base,
            len,
            protection,
        })
    }

    /// The first byte of the first copy (page-aligned); the second copy
    /// starts `len()` bytes later.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Bytes in one copy.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Locks both copies in memory (`mlock`) until unmapped; see
    /// [`Mapping::lock`].
    pub fn lock(&self) -> io::Result<()> {
        lock(self.base.as_ptr(), 2 * self.len)
    }

    /// Whether a truncation of the file made an access fault, so that the
    /// whole range (both copies) now holds private zeros.
    pub fn is_broken(&self) -> bool {
        self.protection.as_ref().is_some_and(Protection::is_broken)
    }
}

impl Drop for MirroredMapping {
    fn drop(&mut self) {
        // Deregister first, as `Mapping` does, so the handler never maps
        // over a range that is no longer ours.
        drop(self.protection.take());
        // SAFETY: the reservation and both file mappings inside it are ours
        // and unmapped exactly once, here.
        unsafe { libc::munmap(self.base.as_ptr().cast(), 2 * self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{memfd, shm};
    use std::os::fd::OwnedFd;

    #[test]
    fn both_copies_are_the_same_memory() {
        let page = page_size();
        let fd = memfd::create("mirror-test", false).unwrap();
        shm::set_len(&fd, 4 * page as u64).unwrap();
        let mirror =
            MirroredMapping::map_fd(&fd, page as u64, 2 * page, Access::ReadWrite, false).unwrap();
        let base = mirror.as_ptr();
        let len = mirror.len();
        assert_eq!(len, 2 * page);
        // SAFETY: both copies are mapped, writable, and only this test
        // touches them; the accesses are in bounds of 2 * len.
        unsafe {
            base.add(len - 3)
                .copy_from_nonoverlapping(b"abcdef".as_ptr(), 6);
            let mut seen = [0u8; 6];
            base.add(2 * len - 3)
                .copy_to_nonoverlapping(seen.as_mut_ptr(), 3);
            base.copy_to_nonoverlapping(seen.as_mut_ptr().add(3), 3);
            assert_eq!(&seen, b"abcdef", "the write across the end wrapped");
            assert_eq!(base.add(len).read(), b'd');
        }
        // The file sees the range at its offset.
        let whole = Mapping::map_fd(&fd, 4 * page, Access::ReadOnly).unwrap();
        // SAFETY: in bounds of the 4-page mapping.
        assert_eq!(unsafe { whole.as_ptr().add(page).read() }, b'd');
        // SAFETY: as above.
        assert_eq!(unsafe { whole.as_ptr().add(3 * page - 1).read() }, b'c');
    }

    /// Kilobytes of the mapping at `addr` that are resident in our page
    /// tables, as /proc/self/smaps says.
    fn rss_kb(addr: *mut u8) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let addr = addr as usize;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().and_then(|r| {
                let (start, end) = r.split_once('-')?;
                Some((
                    usize::from_str_radix(start, 16).ok()?,
                    usize::from_str_radix(end, 16).ok()?,
                ))
            });
            if let Some((start, end)) = range {
                inside = (start..end).contains(&addr);
            } else if let Some(kb) = line.strip_prefix("Rss:").filter(|_| inside) {
                return kb.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping at {addr:#x} in smaps");
    }

    fn memfd_of(pages: usize) -> OwnedFd {
        let fd = memfd::create("populate-test", false).unwrap();
        shm::set_len(&fd, (pages * page_size()) as u64).unwrap();
        shm::reserve(&fd, (pages * page_size()) as u64).unwrap();
        fd
    }

    #[test]
    fn populating_maps_every_page_in() {
        let pages = 16;
        let kb = (pages * page_size() / 1024) as u64;
        let fd = memfd_of(pages);
        let lazy = Mapping::map_fd(&fd, pages * page_size(), Access::ReadWrite).unwrap();
        assert_eq!(rss_kb(lazy.as_ptr()), 0, "nothing touched yet");
        lazy.populate().unwrap();
        assert_eq!(rss_kb(lazy.as_ptr()), kb, "MADV_POPULATE_WRITE");

        let eager = Mapping::map_fd_with(&fd, pages * page_size(), Access::ReadOnly, true).unwrap();
        assert_eq!(rss_kb(eager.as_ptr()), kb, "MAP_POPULATE");

        // The fallback for kernels without MADV_POPULATE_*.
        let touched = Mapping::map_fd(&fd, pages * page_size(), Access::ReadWrite).unwrap();
        assert_eq!(rss_kb(touched.as_ptr()), 0);
        touched.touch_pages();
        assert_eq!(rss_kb(touched.as_ptr()), kb, "touched");
    }

    #[test]
    fn misaligned_or_empty_ranges_are_refused() {
        let page = page_size();
        let fd = memfd::create("mirror-test", false).unwrap();
        shm::set_len(&fd, 4 * page as u64).unwrap();
        for (offset, len) in [(0, 0), (1, page), (0, page + 1), (0, usize::MAX / 2 + 1)] {
            let error = MirroredMapping::map_fd(&fd, offset as u64, len, Access::ReadWrite, false)
                .unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{offset} {len}");
        }
    }
}
