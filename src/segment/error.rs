//! Typed errors of segment operations.

use std::io;
use std::time::Duration;

/// Why a segment could not be created, opened, inspected or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The name or key is not acceptable.
    #[error("invalid segment address {input:?}: {reason}")]
    InvalidAddress {
        /// What was given.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A size or option is out of range.
    #[error("invalid segment options: {reason}")]
    InvalidOptions {
        /// Which limit was broken.
        reason: &'static str,
    },
    /// No segment by that name or key.
    #[error("no segment {0}")]
    NotFound(String),
    /// An exclusive create found the name or key taken.
    #[error("segment {0} already exists")]
    AlreadyExists(String),
    /// The OS refused access (mode or owner).
    #[error("permission denied for segment {0}")]
    PermissionDenied(String),
    /// The segment belongs to another user. Whoever owns it controls its
    /// bytes and its size, so it is refused unless the opener trusts that
    /// owner (`OpenOptions::allow_foreign_owner`).
    #[error("segment {segment} is owned by uid {owner_uid}, not by this process's uid {our_uid}")]
    ForeignOwner {
        /// The segment's name or key.
        segment: String,
        /// Its owner, as the OS reports it.
        owner_uid: u32,
        /// Our effective uid.
        our_uid: u32,
    },
    /// The object is not an ipcring segment of a layout we can use.
    #[error("incompatible segment: {0}")]
    Incompatible(Mismatch),
    /// The header holds a value no creator writes: someone overwrote it.
    #[error("corrupted segment: {field} holds {value:#x}")]
    Corrupted {
        /// The header field.
        field: &'static str,
        /// What it holds.
        value: u64,
    },
    /// A SysV segment's header was still unwritten when we gave up
    /// waiting: its creator still runs (or, for `remove` of a blank segment
    /// whose creator died, other processes are still attached to it).
    #[error("segment not ready after waiting {waited:?}: its header is not written yet")]
    NotReady {
        /// How long we waited.
        waited: Duration,
    },
    /// The segment will never be ready: its creator died before marking
    /// it so (SysV: `shm_cpid` no longer runs), or, for a POSIX name or a
    /// memfd, which this library makes visible only once complete, whoever
    /// made it never finished. Remove it.
    #[error("segment {segment} was abandoned before its creator finished initialising it")]
    Abandoned {
        /// The segment's name or key (`memfd` for an anonymous one).
        segment: String,
    },
    /// Every participant slot is taken by a live process.
    #[error("the participants table is full ({capacity} live processes attached)")]
    TooManyParticipants {
        /// The table's size.
        capacity: usize,
    },
    /// Another process holds this liveness key exclusively: one that is
    /// freeing the slot of a dead participant (for a moment), or one that
    /// does not follow the protocol.
    #[error("liveness key {key} is held exclusively by another process")]
    LivenessKeyBusy {
        /// The key.
        key: u32,
    },
    /// The operation needs to write, and the segment was opened read-only.
    #[error("the segment was opened read-only")]
    ReadOnly,
    /// The operation applies to another backing (an fd of a named segment,
    /// say).
    #[error("operation not available for a {0} segment")]
    WrongBacking(&'static str),
    /// This library does not offer the combination asked for (huge pages
    /// for a named POSIX segment, say).
    #[error("unsupported: {reason}")]
    Unsupported {
        /// What is not offered.
        reason: &'static str,
    },
    /// The mapping could not be locked in memory
    /// ([`CreateOptions::lock_memory`](super::CreateOptions::lock_memory),
    /// [`OpenOptions::lock_memory`](super::OpenOptions::lock_memory)):
    /// usually `RLIMIT_MEMLOCK` is smaller than the mapping and the process
    /// lacks `CAP_IPC_LOCK` (`EPERM` with a limit of 0, `ENOMEM` otherwise).
    /// Nothing was left behind: a segment being created was removed.
    #[error(
        "could not lock {bytes} bytes in memory (RLIMIT_MEMLOCK: {}): {source}; \
         raise the limit (`ulimit -l`, systemd's LimitMEMLOCK=) or grant CAP_IPC_LOCK",
        describe_limit(.limit)
    )]
    LockFailed {
        /// Bytes of the mapping we tried to lock.
        bytes: u64,
        /// The `RLIMIT_MEMLOCK` soft limit in bytes at the time; `None` if
        /// unlimited (or unreadable).
        limit: Option<u64>,
        /// The error `mlock` returned.
        #[source]
        source: io::Error,
    },
    /// Huge pages were asked for
    /// ([`CreateOptions::huge_pages`](super::CreateOptions::huge_pages))
    /// and the system cannot supply them. Nothing was left behind.
    #[error("huge pages unavailable: {reason}")]
    HugePagesUnavailable {
        /// Why, and what to do about it.
        reason: HugePagesReason,
    },
    /// Any other OS error.
    #[error("{op}: {source}")]
    Io {
        /// The call that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// What differs between an object and what we expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// The first 8 bytes are not our magic: not an ipcring segment.
    #[error("magic {found:#018x} is not ipcring's")]
    Magic {
        /// The bytes found, little-endian.
        found: u64,
    },
    /// Another version of the layout.
    #[error("layout version {found}, this library reads {expected}")]
    Version {
        /// In the segment.
        found: u32,
        /// What we read.
        expected: u32,
    },
    /// Another kind of content than the opener asked for.
    #[error("content kind {found}, expected {expected}")]
    Kind {
        /// In the segment.
        found: u32,
        /// Asked for.
        expected: u32,
    },
    /// The header's size disagrees with the object's.
    #[error("header says {header} bytes, the object has {actual}")]
    Size {
        /// Recorded in the header.
        header: u64,
        /// Reported by the OS.
        actual: u64,
    },
    /// The object cannot even hold a header.
    #[error("{size} bytes is smaller than the {min}-byte header")]
    TooSmall {
        /// The object's size.
        size: u64,
        /// The header's size.
        min: u64,
    },
    /// The name is not a regular file (a FIFO or device someone put in
    /// /dev/shm).
    #[error("not a regular shared-memory file")]
    NotRegularFile,
    /// A memfd that is not sealed against shrinking: its owner could make
    /// our mapping fault, so we refuse it.
    #[error("the memfd is not sealed against shrinking")]
    NotSealed,
}

/// Why a segment with huge pages could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HugePagesReason {
    /// The kernel offers no huge pages: `/proc/meminfo` has no
    /// `Hugepagesize` (a kernel built without hugetlbfs), or
    /// `memfd_create(MFD_HUGETLB)` is refused.
    #[error("this kernel offers no huge pages (built without hugetlbfs)")]
    NotSupported,
    /// The huge page pool could not supply the segment's pages: usually
    /// none are reserved (`vm.nr_hugepages` is 0) or others hold them.
    #[error(
        "{op} failed ({}): {needed} huge page(s) of {page_size} bytes needed, \
         {available} of the pool's {total} available; reserve more with \
         `sysctl vm.nr_hugepages={}`",
        std::io::Error::from_raw_os_error(*.errno),
        suggested_pool(*.total, *.needed, *.available)
    )]
    PoolTooSmall {
        /// The call that failed.
        op: &'static str,
        /// Its errno (`ENOMEM`, `ENOSPC` or `EINVAL`).
        errno: i32,
        /// The huge page size in bytes (`Hugepagesize`).
        page_size: u64,
        /// Pages the segment needs.
        needed: u64,
        /// Pages in the pool (`HugePages_Total`), read after the failure.
        total: u64,
        /// Pages neither in use nor reserved (`HugePages_Free` minus
        /// `HugePages_Rsvd`), read after the failure.
        available: u64,
    },
    /// `shmget(SHM_HUGETLB)` refused the caller (`EPERM`): SysV huge pages
    /// need `CAP_IPC_LOCK`, membership of the group `vm.hugetlb_shm_group`
    /// names, or an `RLIMIT_MEMLOCK` covering the segment.
    #[error(
        "shmget(SHM_HUGETLB) was refused: it needs CAP_IPC_LOCK, membership of the group \
         in vm.hugetlb_shm_group, or an RLIMIT_MEMLOCK covering the segment"
    )]
    NotPermitted,
}

/// The pool size that would leave `needed` pages available.
fn suggested_pool(total: u64, needed: u64, available: u64) -> u64 {
    total.saturating_add(needed.saturating_sub(available))
}

fn describe_limit(limit: &Option<u64>) -> String {
    match limit {
        Some(bytes) => format!("{bytes} bytes"),
        None => "unlimited".to_owned(),
    }
}

impl SegmentError {
    /// Maps an OS error to the typed variant when there is one.
    pub(crate) fn from_os(
        op: &'static str,
        what: impl ToString,
        source: io::Error,
    ) -> SegmentError {
        match source.kind() {
            io::ErrorKind::NotFound => SegmentError::NotFound(what.to_string()),
            io::ErrorKind::AlreadyExists => SegmentError::AlreadyExists(what.to_string()),
            io::ErrorKind::PermissionDenied => SegmentError::PermissionDenied(what.to_string()),
            _ => SegmentError::Io { op, source },
        }
    }
}

impl From<Mismatch> for SegmentError {
    fn from(mismatch: Mismatch) -> SegmentError {
        SegmentError::Incompatible(mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_pool_names_the_reservation_that_would_do() {
        let error = SegmentError::HugePagesUnavailable {
            reason: HugePagesReason::PoolTooSmall {
                op: "shmget",
                errno: 12,
                page_size: 2 << 20,
                needed: 3,
                total: 4,
                available: 1,
            },
        };
        let message = error.to_string();
        assert!(message.contains("sysctl vm.nr_hugepages=6"), "{message}");
        assert!(message.starts_with("huge pages unavailable: shmget failed"));
        // A pool with room suggests what it holds (another process got
        // there first).
        assert_eq!(suggested_pool(4, 3, 5), 4);
    }

    #[test]
    fn a_failed_lock_names_the_limit() {
        let lock_failed = |limit| SegmentError::LockFailed {
            bytes: 8192,
            limit,
            source: io::Error::from_raw_os_error(12),
        };
        let message = lock_failed(Some(4096)).to_string();
        assert!(message.contains("8192 bytes"), "{message}");
        assert!(message.contains("RLIMIT_MEMLOCK: 4096 bytes"), "{message}");
        assert!(lock_failed(None).to_string().contains("unlimited"));
    }
}
