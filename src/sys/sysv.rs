//! System V shared memory: `shmget`, `shmat`, `shmctl`, and the listing in
//! `/proc/sysvipc/shm`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::map::{Access, Mapping};
use super::{cvt, retry_eintr};

/// What `IPC_STAT` says about a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmStat {
    /// The key it was created with (0 once it is marked for removal).
    pub key: i32,
    /// Size requested at creation, in bytes.
    pub size: u64,
    /// Permission bits (`0o777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Pid of the creator.
    pub creator_pid: u32,
    /// Number of current attachments.
    pub attachments: u64,
}

/// One line of `/proc/sysvipc/shm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmEntry {
    /// The key.
    pub key: i32,
    /// The id `shmat` takes.
    pub id: i32,
}

/// A key made from a path's inode and device and a project id, the way
/// `ftok(3)` makes it, so it is the same key C programs compute.
pub fn key_from_path(path: &Path, project_id: u8) -> io::Result<i32> {
    let meta = std::fs::metadata(path)?;
    let key = (meta.ino() & 0xffff) as u32
        | ((meta.dev() & 0xff) as u32) << 16
        | u32::from(project_id) << 24;
    Ok(key as i32)
}

/// Whether an error from `shmat` or `shmctl` on an id we just looked up
/// means the segment was removed in between.
pub fn is_removed(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EIDRM | libc::EINVAL))
}

/// Creates a segment for `key` exclusively; returns its id. With
/// `huge_pages`, its memory comes from the default huge page pool
/// (`SHM_HUGETLB`) and is reserved now: an empty pool fails here with
/// `ENOMEM`, and a caller without `CAP_IPC_LOCK` (or membership of
/// `vm.hugetlb_shm_group`, or enough `RLIMIT_MEMLOCK`) with `EPERM`.
pub fn create_exclusive(key: i32, size: usize, mode: u32, huge_pages: bool) -> io::Result<i32> {
    let mut flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as libc::c_int;
    if huge_pages {
        flags |= libc::SHM_HUGETLB;
    }
    // SAFETY: plain syscall with integer arguments.
    cvt(unsafe { libc::shmget(key, size, flags) })
}

/// Looks up the id of the existing segment for `key`.
pub fn lookup(key: i32) -> io::Result<i32> {
    // SAFETY: plain syscall with integer arguments.
    cvt(unsafe { libc::shmget(key, 0, 0) })
}

/// `IPC_STAT`.
pub fn stat(id: i32) -> io::Result<ShmStat> {
    // SAFETY: an all-zero shmid_ds is a valid value for this plain C struct.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is writable and is the struct IPC_STAT fills.
    cvt(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) })?;
    Ok(ShmStat {
        key: ds.shm_perm.__key,
        size: ds.shm_segsz as u64,
        mode: u32::from(ds.shm_perm.mode) & 0o777,
        uid: ds.shm_perm.uid,
        creator_pid: ds.shm_cpid as u32,
        attachments: ds.shm_nattch as u64,
    })
}

/// Attaches `len` bytes of segment `id` (the caller checked the size).
pub fn attach(id: i32, len: usize, access: Access) -> io::Result<Mapping> {
    attach_with(id, len, access, false)
}

/// As [`attach`], and with `populate`, faults every page in before
/// returning (`shmat` has no `MAP_POPULATE`; see [`Mapping::populate`]).
pub fn attach_with(id: i32, len: usize, access: Access, populate: bool) -> io::Result<Mapping> {
    let flags = match access {
        Access::ReadOnly => libc::SHM_RDONLY,
        Access::ReadWrite => 0,
    };
    let addr = retry_eintr(|| {
        // SAFETY: a null address lets the kernel choose where to attach, so
        // no existing mapping of ours can be replaced.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if addr as isize == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(addr)
        }
    })?;
    let mapping = Mapping::from_shmat(addr.cast(), len, access);
    if populate {
        // On failure the mapping drops here, detaching.
        mapping.populate()?;
    }
    Ok(mapping)
}

/// Marks segment `id` for removal: its key is free at once, the memory goes
/// when the last process detaches.
pub fn remove(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no buffer.
    cvt(unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
}

/// Every SysV segment this process can see.
pub fn list() -> io::Result<Vec<ShmEntry>> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm")?;
    Ok(parse_list(&text))
}

fn parse_list(text: &str) -> Vec<ShmEntry> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split_whitespace().collect();
    let (Some(key_col), Some(id_col)) = (
        columns.iter().position(|&c| c == "key"),
        columns.iter().position(|&c| c == "shmid"),
    ) else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(ShmEntry {
                key: fields.get(key_col)?.parse().ok()?,
                id: fields.get(id_col)?.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_listing_by_column_name() {
        let text = "       key      shmid perms       size  cpid\n\
                    1234 7 600 4096 99\n\
                    -5 8 600 4096 99\n\
                    garbage\n";
        assert_eq!(
            parse_list(text),
            vec![ShmEntry { key: 1234, id: 7 }, ShmEntry { key: -5, id: 8 }]
        );
        assert!(parse_list("").is_empty());
        assert!(parse_list("nothing here\n1 2\n").is_empty());
    }

    #[test]
    fn path_key_matches_ftok_layout() {
        let key = key_from_path(Path::new("/"), 0x41).unwrap();
        assert_eq!((key as u32) >> 24, 0x41);
    }
}
