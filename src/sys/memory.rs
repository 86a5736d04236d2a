//! What keeps shared memory resident: the locked-memory limit
//! (`RLIMIT_MEMLOCK`), the huge page pool (`/proc/meminfo`), and whether a
//! file lives on hugetlbfs (`fstatfs`).
//!
//! Reading these never changes them; raising a limit or reserving huge
//! pages is the administrator's business.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use super::cvt;

/// The `RLIMIT_MEMLOCK` soft limit in bytes; `None` if unlimited.
pub fn memlock_limit() -> io::Result<Option<u64>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is writable and is the struct getrlimit fills.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) })?;
    Ok((limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur))
}

/// The default huge page pool as `/proc/meminfo` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugePagePool {
    /// `Hugepagesize`, in bytes: what `MFD_HUGETLB` and `SHM_HUGETLB`
    /// allocate without a size flag.
    pub page_size: u64,
    /// `HugePages_Total`: pages in the pool (`vm.nr_hugepages`, plus
    /// surplus pages while they exist).
    pub total: u64,
    /// `HugePages_Free` minus `HugePages_Rsvd`: pages no one has allocated
    /// or reserved.
    pub available: u64,
}

/// The default huge page pool; `Ok(None)` if the kernel has no huge pages
/// (no `Hugepagesize` line).
pub fn huge_page_pool() -> io::Result<Option<HugePagePool>> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    Ok(parse_meminfo(&text))
}

fn parse_meminfo(text: &str) -> Option<HugePagePool> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut words = rest.split_whitespace();
            let value: u64 = words.next()?.parse().ok()?;
            match words.next() {
                Some("kB") => value.checked_mul(1024),
                None => Some(value),
                Some(_) => None,
            }
        })
    };
    let page_size = field("Hugepagesize").filter(|&size| size > 0)?;
    let free = field("HugePages_Free").unwrap_or(0);
    let reserved = field("HugePages_Rsvd").unwrap_or(0);
    Some(HugePagePool {
        page_size,
        total: field("HugePages_Total").unwrap_or(0),
        available: free.saturating_sub(reserved),
    })
}

/// Whether `fd` is a file on hugetlbfs (a `MFD_HUGETLB` memfd, say), and if
/// so its page size in bytes.
pub fn hugetlbfs_page_size(fd: impl AsFd) -> io::Result<Option<u64>> {
    // SAFETY: an all-zero statfs is a valid value for this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and is the struct fstatfs fills.
    cvt(unsafe { libc::fstatfs(fd.as_fd().as_raw_fd(), &mut st) })?;
    // f_type's width differs between targets; the magic fits in 32 bits.
    let hugetlbfs = st.f_type as u32 == libc::HUGETLBFS_MAGIC as u32;
    Ok(hugetlbfs.then_some(st.f_bsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_pool_subtracts_reserved_pages() {
        let text = "MemTotal:       16384000 kB\n\
                    HugePages_Total:       8\n\
                    HugePages_Free:        5\n\
                    HugePages_Rsvd:        2\n\
                    HugePages_Surp:        0\n\
                    Hugepagesize:       2048 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(HugePagePool {
                page_size: 2 << 20,
                total: 8,
                available: 3,
            })
        );
    }

    #[test]
    fn meminfo_without_huge_pages_is_none() {
        assert_eq!(parse_meminfo("MemTotal: 1 kB\nHugePages_Total: 0\n"), None);
        assert_eq!(parse_meminfo("Hugepagesize: 0 kB\n"), None);
        assert_eq!(parse_meminfo(""), None);
    }

    #[test]
    fn an_ordinary_memfd_is_not_on_hugetlbfs() {
        let fd = super::super::memfd::create("hugetlbfs-probe", false).unwrap();
        assert_eq!(hugetlbfs_page_size(&fd).unwrap(), None);
    }
}
