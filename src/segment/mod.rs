//! A mapped shared-memory region with a validated header.
//!
//! This module owns naming (POSIX names, SysV keys, anonymous memfds), the
//! life cycle of segments (create, open, remove), the header at offset 0 and
//! the participants table. It hands the layer above a raw, page-aligned user
//! area and never learns what is stored there: no rings, no messages.
//!
//! ```
//! use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! let address: Address = format!("doc-example-{}", std::process::id()).parse()?;
//! let created = Segment::create(&address, &CreateOptions::new(4096))?;
//! created.view::<AtomicU64>(0)?.store(42, Ordering::Release);
//!
//! let opened = Segment::open(&address, &OpenOptions::new())?;
//! assert_eq!(opened.view::<AtomicU64>(0)?.load(Ordering::Acquire), 42);
//! assert_eq!(opened.info().participants.len(), 2);
//! Segment::remove(&address)?;
//! # Ok::<(), ipcring::segment::SegmentError>(())
//! ```

mod address;
mod error;
mod header;
mod liveness;
mod participants;
mod stale;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{
    AtomicI32, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize,
};
use std::time::Duration;

pub use address::{Address, MAX_NAME_LEN, POSIX_PREFIX, PosixName, SysvKey};
pub use error::{HugePagesReason, Mismatch, SegmentError};
pub use header::{BackingKind, HEADER_SIZE, LAYOUT_VERSION, MAX_PARTICIPANTS};
pub use liveness::{LIVENESS_LOCK_BASE, LivenessLock, MIN_LIVENESS_KEY};
pub use participants::{Participant, ProcessIdentity};
pub use stale::{Removed, StaleReason, remove_stale, remove_stale_where};

use crate::sync::{Deadline, WaitWord};
use crate::sys::map::{Access, Mapping, MirroredMapping};
use crate::sys::{self, memfd, memory, shm, sysv};
use header::{Header, HeaderFields, Readiness, Validated};

/// The largest user area we create (1 TiB): far beyond any ring, and small
/// enough that sizes never overflow `off_t` or `isize`.
pub const MAX_USER_SIZE: usize = 1 << 40;

/// The system's page size: the unit of [`Segment::map_mirrored`] ranges.
pub fn page_size() -> usize {
    crate::sys::map::page_size()
}

/// A range of a segment's user area mapped twice, back to back (see
/// [`Segment::map_mirrored`]): byte `i` of the range is at `as_ptr() + i`
/// and at `as_ptr() + len() + i`, so any `len()` bytes starting anywhere
/// in the first copy are contiguous in memory.
///
/// It has its own mapping of the segment's file, valid for as long as it
/// lives (whether or not the `Segment` does). Like the user area, other
/// processes may write any byte of it at any time: reach it only through
/// atomics or raw-pointer copies.
#[derive(Debug)]
pub struct MirroredMap {
    mapping: MirroredMapping,
}

impl MirroredMap {
    /// The first byte of the first copy (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.mapping.as_ptr()
    }

    /// Bytes in one copy (the reserved address space is twice this).
    pub fn len(&self) -> usize {
        self.mapping.len()
    }

    /// Whether the range is empty (never: `map_mirrored` refuses that).
    pub fn is_empty(&self) -> bool {
        self.mapping.len() == 0
    }

    /// Whether the segment's file was truncated under this mapping and an
    /// access faulted: both copies then hold private zeros that are no
    /// longer the same memory, and nothing written reaches other
    /// processes. One load of a process-wide flag until some mapping
    /// breaks. As for [`Segment::is_broken`], a file shrunk and grown back
    /// before we touched it is not seen here.
    #[inline]
    pub fn is_broken(&self) -> bool {
        sys::sigbus::any_broken() && self.mapping.is_broken()
    }
}

/// How to create a segment.
///
/// ```
/// use ipcring::segment::{CreateOptions, Segment, SegmentError};
///
/// // Every page mapped in before the first message, and kept in memory.
/// let options = CreateOptions::new(1 << 16).prefault(true).lock_memory(true);
/// match Segment::create_anonymous(&options) {
///     Ok(segment) => assert_eq!(segment.user_len(), 1 << 16),
///     // RLIMIT_MEMLOCK too small, and no CAP_IPC_LOCK.
///     Err(SegmentError::LockFailed { .. }) => {}
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), SegmentError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CreateOptions {
    user_size: usize,
    mode: u32,
    kind: u32,
    register: bool,
    owned: bool,
    residency: Residency,
    huge_pages: bool,
}

/// What a process asks of its own mapping: faulted in at once, locked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Residency {
    prefault: bool,
    lock: bool,
}

impl CreateOptions {
    /// A segment with `user_size` bytes after the header, mode 0600, kind 0,
    /// and the creator registered as a participant.
    pub fn new(user_size: usize) -> CreateOptions {
        CreateOptions {
            user_size,
            mode: 0o600,
            kind: 0,
            register: true,
            owned: false,
            residency: Residency::default(),
            huge_pages: false,
        }
    }

    /// Permission bits (at most 0o777), applied exactly, whatever the umask.
    pub fn mode(mut self, mode: u32) -> CreateOptions {
        self.mode = mode;
        self
    }

    /// The content kind recorded in the header; openers may insist on it.
    pub fn kind(mut self, kind: u32) -> CreateOptions {
        self.kind = kind;
        self
    }

    /// Whether the creator registers in the participants table.
    pub fn register(mut self, register: bool) -> CreateOptions {
        self.register = register;
        self
    }

    /// Whether the segment belongs to the creator's handle rather than
    /// persisting (the default). An owned segment is recorded as such in
    /// its header; dropping the creator's handle removes its name, and if
    /// the creator dies instead, [`remove_stale`] removes it. Whether the
    /// creator is gone is judged by a liveness lock its handle holds (POSIX,
    /// memfd), or by its pid and start time (SysV).
    pub fn owned(mut self, owned: bool) -> CreateOptions {
        self.owned = owned;
        self
    }

    /// Whether to fault every page of the creator's mapping in while
    /// creating (`MAP_POPULATE`; for SysV, whose `shmat` has no such flag,
    /// `MADV_POPULATE_WRITE`), so that the creator's first accesses take no
    /// page faults. Each process maps the segment itself: openers ask with
    /// [`OpenOptions::prefault`]. Default: off.
    pub fn prefault(mut self, prefault: bool) -> CreateOptions {
        self.residency.prefault = prefault;
        self
    }

    /// Whether to lock the creator's mapping in memory (`mlock`), so that
    /// its pages are never swapped out while this handle maps them.
    /// Locking faults every page in, as [`prefault`](Self::prefault) does.
    /// The whole object is locked, header included, and counts against
    /// `RLIMIT_MEMLOCK` unless the process has `CAP_IPC_LOCK`; when it does
    /// not fit, creation fails with [`SegmentError::LockFailed`] and
    /// leaves no segment behind. Openers ask with
    /// [`OpenOptions::lock_memory`]. Default: off.
    pub fn lock_memory(mut self, lock: bool) -> CreateOptions {
        self.residency.lock = lock;
        self
    }

    /// Whether the segment's memory comes from the huge page pool: a
    /// `MFD_HUGETLB` memfd for [`Segment::create_anonymous`], `SHM_HUGETLB`
    /// for a SysV key. Named POSIX segments do not offer it
    /// ([`SegmentError::Unsupported`]).
    ///
    /// The object's size is rounded up to whole huge pages (the default
    /// size, `Hugepagesize` in /proc/meminfo), and the user area grows to
    /// fill them: [`Segment::user_len`] says what you got. The pages are
    /// taken from the pool while creating (allocated for a memfd, reserved
    /// by `shmget` for SysV); if it cannot supply them, creation fails with
    /// [`SegmentError::HugePagesUnavailable`], which says how many pages
    /// to reserve, and leaves nothing behind.
    /// [`Segment::map_mirrored`] is `Unsupported` on such a segment.
    /// Default: off.
    pub fn huge_pages(mut self, huge_pages: bool) -> CreateOptions {
        self.huge_pages = huge_pages;
        self
    }

    /// The object's size: header and user area, in whole huge pages if
    /// asked for; and then the huge page pool as it is before we take
    /// from it (for the error, should it be too small).
    fn object_size(&self) -> Result<(usize, Option<memory::HugePagePool>), SegmentError> {
        let total = self.total_size()?;
        if !self.huge_pages {
            return Ok((total, None));
        }
        let pool = huge_page_pool()?;
        let page = usize::try_from(pool.page_size).unwrap_or(usize::MAX);
        let size = total
            .checked_next_multiple_of(page)
            .filter(|&size| size <= HEADER_SIZE + MAX_USER_SIZE)
            .ok_or(SegmentError::InvalidOptions {
                reason: "user_size rounded up to whole huge pages exceeds 1 TiB",
            })?;
        Ok((size, Some(pool)))
    }

    fn total_size(&self) -> Result<usize, SegmentError> {
        if self.user_size == 0 || self.user_size > MAX_USER_SIZE {
            return Err(SegmentError::InvalidOptions {
                reason: "user_size must be between 1 byte and 1 TiB",
            });
        }
        if self.mode > 0o777 {
            return Err(SegmentError::InvalidOptions {
                reason: "mode holds bits beyond 0o777",
            });
        }
        Ok(HEADER_SIZE + self.user_size)
    }
}

/// How to open an existing segment.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    kind: Option<u32>,
    timeout: Duration,
    register: bool,
    access: Access,
    allow_foreign_owner: bool,
    residency: Residency,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Any kind, wait up to 1 s for a creator that is still initialising,
    /// register as a participant, read and write, and only a segment our
    /// effective uid owns.
    pub fn new() -> OpenOptions {
        OpenOptions {
            kind: None,
            timeout: Duration::from_secs(1),
            register: true,
            access: Access::ReadWrite,
            allow_foreign_owner: false,
            residency: Residency::default(),
        }
    }

    /// Refuse (with `Incompatible`) a segment of another content kind.
    pub fn kind(mut self, kind: u32) -> OpenOptions {
        self.kind = Some(kind);
        self
    }

    /// How long to wait for a SysV segment whose creator is still
    /// initialising it before failing with `NotReady`. (A POSIX name or a
    /// memfd becomes visible only once complete; an unready one, or a SysV
    /// one whose creator died, is `Abandoned` at once.)
    pub fn timeout(mut self, timeout: Duration) -> OpenOptions {
        self.timeout = timeout;
        self
    }

    /// Whether to register in the participants table.
    pub fn register(mut self, register: bool) -> OpenOptions {
        self.register = register;
        self
    }

    /// Whether to open a named segment owned by another user (the file's
    /// `st_uid`, or SysV `shm_perm.uid`, differs from our effective uid).
    /// Refused by default with `ForeignOwner`, whatever the mode allows:
    /// whoever created the name first controls the segment's bytes and
    /// size, so opening it trusts that user. Descriptors (`from_fd`,
    /// `recv_fd`, `open_inherited`) are not checked: they come from a
    /// process the caller chose to deal with.
    pub fn allow_foreign_owner(mut self, allow: bool) -> OpenOptions {
        self.allow_foreign_owner = allow;
        self
    }

    /// Whether to fault every page of this process's mapping in while
    /// opening (`MADV_POPULATE_WRITE`, or `_READ` for a read-only opener),
    /// so that its first accesses take no page faults. The pages are
    /// faulted in once the header is validated: an object that is not one
    /// of our segments is refused without being faulted in. Default: off.
    pub fn prefault(mut self, prefault: bool) -> OpenOptions {
        self.residency.prefault = prefault;
        self
    }

    /// Whether to lock this process's mapping in memory (`mlock`) for as
    /// long as the handle lives; see [`CreateOptions::lock_memory`]. The
    /// lock is taken once the header is validated and before registering;
    /// if it fails ([`SegmentError::LockFailed`]) the segment is left as it
    /// was. Default: off.
    pub fn lock_memory(mut self, lock: bool) -> OpenOptions {
        self.residency.lock = lock;
        self
    }

    /// Map read-only and do not register: for inspection.
    pub fn read_only(mut self) -> OpenOptions {
        self.access = Access::ReadOnly;
        self.register = false;
        self
    }
}

/// Everything the header and the OS say about a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its name or key; `None` for an anonymous memfd.
    pub address: Option<Address>,
    /// The OS object behind it.
    pub backing: BackingKind,
    /// The content kind its creator recorded.
    pub kind: u32,
    /// The header layout version.
    pub layout_version: u32,
    /// Bytes of the whole object, header included.
    pub total_size: u64,
    /// Bytes of the user area.
    pub user_size: u64,
    /// Permission bits as the OS reports them now.
    pub mode: u32,
    /// Owner as the OS reports it now.
    pub owner_uid: u32,
    /// Pid of the creating process.
    pub creator_pid: u32,
    /// Whether it was created owned by its creator
    /// ([`CreateOptions::owned`]).
    pub owned: bool,
    /// For an owned segment, whether its creator's handle is still open
    /// (POSIX, memfd) or its creator still runs (SysV); `None` if not owned.
    pub creator_alive: Option<bool>,
    /// Uid of the creating process.
    pub creator_uid: u32,
    /// Creation time, ns since the Unix epoch.
    pub created_realtime_ns: u64,
    /// The registered processes.
    pub participants: Vec<Participant>,
}

/// One entry of [`list`].
#[derive(Debug)]
pub struct Listing {
    /// The segment's name or key.
    pub address: Address,
    /// Its details, or why they could not be read.
    pub info: Result<SegmentInfo, SegmentError>,
}

/// Types that may be viewed in shared memory through `&T`: made only of
/// atomics, so every bit pattern is a valid value and every access is an
/// atomic operation, whatever another process writes concurrently.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` or `#[repr(transparent)]` aggregates of
/// atomics (or other `Shareable` types) with no other fields.
pub unsafe trait Shareable: Sync {}

// SAFETY: each is a single atomic integer: valid for any bits, accessed
// only by atomic operations.
unsafe impl Shareable for AtomicU8 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicU16 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicU32 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicU64 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicI32 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicI64 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicUsize {}
// SAFETY: WaitWord is #[repr(C)] with two AtomicU32 fields and an AtomicU64, nothing else.
unsafe impl Shareable for WaitWord {}
// SAFETY: an array of Shareable elements has no other bytes.
unsafe impl<T: Shareable, const N: usize> Shareable for [T; N] {}

#[derive(Debug)]
enum Backing {
    Posix { name: PosixName, fd: OwnedFd },
    SysV { key: SysvKey, id: i32 },
    Memfd { fd: OwnedFd },
}

impl Backing {
    /// The name or key for messages; `memfd` if anonymous.
    fn describe(&self) -> String {
        match self {
            Backing::Posix { name, .. } => Address::Posix(name.clone()).to_string(),
            Backing::SysV { key, .. } => Address::SysV(*key).to_string(),
            Backing::Memfd { .. } => "memfd".to_owned(),
        }
    }
}

#[derive(Debug)]
struct Registration {
    index: usize,
    identity: u64,
    pid: u32,
    /// The liveness lock for key `index`, taken before the claim; `None`
    /// for SysV. Held, never read; dropped after the slot is freed.
    _lock: Option<LivenessLock>,
}

/// A mapped, validated shared-memory segment.
///
/// Dropping it unmaps the memory and leaves the participants table; it does
/// not remove the segment (see [`Segment::remove`] and [`Segment::unlink`]).
#[derive(Debug)]
pub struct Segment {
    mapping: Mapping,
    backing: Backing,
    access: Access,
    /// Asked of `mapping` (and so of mirrored maps made from it).
    residency: Residency,
    validated: Validated,
    registration: Option<Registration>,
    creator: Option<CreatorHandle>,
}

/// What the creator's handle of an owned segment holds.
#[derive(Debug)]
struct CreatorHandle {
    /// Only the creating process removes the name on drop, not a forked
    /// child holding a copy.
    pid: u32,
    /// The creator liveness lock (POSIX, memfd); held, never read.
    _lock: Option<LivenessLock>,
}

impl Segment {
    /// Creates a named segment; fails with `AlreadyExists` if the name or
    /// key is taken. Of several processes racing, exactly one succeeds.
    ///
    /// A POSIX segment is built unnamed and named only once complete, so
    /// no one ever sees it half-initialised. A SysV key exists from
    /// `shmget` on; openers wait for its header (or, if its creator died,
    /// report it `Abandoned`).
    pub fn create(address: &Address, options: &CreateOptions) -> Result<Segment, SegmentError> {
        options.total_size()?;
        if options.huge_pages && matches!(address, Address::Posix(_)) {
            return Err(SegmentError::Unsupported {
                reason: "huge pages for a named POSIX segment; use a SysV key or an anonymous segment",
            });
        }
        let (total, pool) = options.object_size()?;
        match address {
            Address::Posix(name) => create_posix(name, total, options),
            Address::SysV(key) => create_sysv(*key, total, pool, options),
        }
    }

    /// Opens an existing named segment and validates its header.
    pub fn open(address: &Address, options: &OpenOptions) -> Result<Segment, SegmentError> {
        let deadline = Deadline::after(options.timeout);
        match address {
            Address::Posix(name) => open_posix(name, options, deadline),
            Address::SysV(key) => open_sysv(*key, options, deadline),
        }
    }

    /// Opens the segment if it exists, otherwise creates it. Returns the
    /// segment and whether this call created it.
    pub fn open_or_create(
        address: &Address,
        create: &CreateOptions,
        open: &OpenOptions,
    ) -> Result<(Segment, bool), SegmentError> {
        // Bounded: each lap means another process created or removed the
        // segment between our two calls.
        let mut last_error = None;
        for _ in 0..16 {
            match Segment::create(address, create) {
                Ok(segment) => return Ok((segment, true)),
                Err(SegmentError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
            match Segment::open(address, open) {
                Ok(segment) => return Ok((segment, false)),
                Err(e @ SegmentError::NotFound(_)) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| SegmentError::NotFound(address.to_string())))
    }

    /// Removes a named segment: its name is gone at once, the memory when
    /// the last process unmaps it.
    ///
    /// A POSIX name is removed whatever it holds (it carries our prefix).
    /// A SysV key is removed only if its segment carries our magic, or was
    /// abandoned before any header was written: every header byte zero, its
    /// creator (`shm_cpid`) no longer running, and no process attached. A
    /// segment whose header is still zero while its creator lives may be
    /// one of ours being initialised, or another program's: we wait up to
    /// [`REMOVE_WAIT`] for a header, then fail with `NotReady` and leave it.
    /// A foreign segment is never destroyed by mistake.
    ///
    /// Errors: `NotFound` if there is nothing to remove (including when
    /// another process removed it first), `NotReady`, `Incompatible` for a
    /// foreign SysV segment, `PermissionDenied`.
    pub fn remove(address: &Address) -> Result<(), SegmentError> {
        match address {
            Address::Posix(name) => {
                let c_name = posix_c_name(name);
                shm::unlink(&c_name).map_err(|e| SegmentError::from_os("shm_unlink", address, e))
            }
            Address::SysV(key) => remove_sysv(*key),
        }
    }

    /// Reads a named segment's details without registering or writing,
    /// whoever owns it.
    pub fn inspect(address: &Address) -> Result<SegmentInfo, SegmentError> {
        let options = OpenOptions::new()
            .read_only()
            .allow_foreign_owner(true)
            .timeout(Duration::ZERO);
        Segment::open(address, &options).map(|segment| segment.info())
    }

    /// Creates an anonymous segment backed by a memfd, sealed against
    /// shrinking and growing. Share it with a child (see
    /// [`Segment::inheritable_fd`]) or send it over a Unix socket
    /// ([`Segment::send_fd`]).
    ///
    /// With [`CreateOptions::huge_pages`] the memfd is on hugetlbfs
    /// (`MFD_HUGETLB`), and its pages are allocated here.
    pub fn create_anonymous(options: &CreateOptions) -> Result<Segment, SegmentError> {
        let (total, pool) = options.object_size()?;
        let fd = memfd::create("ipcring-anon", pool.is_some()).map_err(|source| {
            if pool.is_some() && source.kind() == std::io::ErrorKind::InvalidInput {
                SegmentError::HugePagesUnavailable {
                    reason: HugePagesReason::NotSupported,
                }
            } else {
                SegmentError::Io {
                    op: "memfd_create",
                    source,
                }
            }
        })?;
        let io = |op| move |source| SegmentError::Io { op, source };
        // Where the huge page pool runs short: sizing (in principle),
        // allocating, or mapping.
        let sized = |op| {
            move |source| match pool {
                Some(pool) => huge_pages_error(op, total, pool, source),
                None => SegmentError::Io { op, source },
            }
        };
        shm::fchmod(&fd, options.mode).map_err(io("fchmod"))?;
        shm::set_len(&fd, total as u64).map_err(sized("ftruncate"))?;
        shm::reserve(&fd, total as u64).map_err(sized("posix_fallocate"))?;
        memfd::add_seals(&fd, memfd::SIZE_SEALS).map_err(io("fcntl(F_ADD_SEALS)"))?;
        let mapping =
            Mapping::map_fd_with(&fd, total, Access::ReadWrite, options.residency.prefault)
                .map_err(sized("mmap"))?;
        Segment::initialize(mapping, Backing::Memfd { fd }, BackingKind::Memfd, options)
    }

    /// Opens a segment from a memfd (received or inherited). The memfd must
    /// be sealed against shrinking, so that no one can make our mapping fault.
    pub fn from_fd(fd: OwnedFd, options: &OpenOptions) -> Result<Segment, SegmentError> {
        let io = |op| move |source| SegmentError::Io { op, source };
        let seals = memfd::seals(&fd).map_err(io("fcntl(F_GET_SEALS)"))?;
        if seals & memfd::SEAL_SHRINK == 0 {
            return Err(Mismatch::NotSealed.into());
        }
        let size = shm::fstat(&fd).map_err(io("fstat"))?.size;
        check_min_size(size)?;
        // Not populated yet: see `attach`.
        let mapping = Mapping::map_fd(&fd, size as usize, options.access).map_err(io("mmap"))?;
        let deadline = Deadline::after(options.timeout);
        // A memfd is shared only once its creator has initialised it: an
        // unready one will stay so.
        let creator_gone = || true;
        Segment::attach(
            mapping,
            Backing::Memfd { fd },
            size,
            options,
            deadline,
            creator_gone,
        )
    }

    /// Opens a segment from a descriptor number inherited from a parent
    /// (see [`Segment::inheritable_fd`]). The number is duplicated, not
    /// taken: the original stays open.
    pub fn open_inherited(fd: RawFd, options: &OpenOptions) -> Result<Segment, SegmentError> {
        let fd = memfd::dup_raw(fd).map_err(|source| SegmentError::Io {
            op: "fcntl(F_DUPFD_CLOEXEC)",
            source,
        })?;
        Segment::from_fd(fd, options)
    }

    /// Receives a segment sent with [`Segment::send_fd`].
    pub fn recv_fd(socket: &UnixStream, options: &OpenOptions) -> Result<Segment, SegmentError> {
        let fd = sys::fdpass::recv_fd(socket).map_err(|source| SegmentError::Io {
            op: "recvmsg(SCM_RIGHTS)",
            source,
        })?;
        Segment::from_fd(fd, options)
    }

    /// Sends this anonymous segment's memfd over a Unix socket.
    pub fn send_fd(&self, socket: &UnixStream) -> Result<(), SegmentError> {
        let fd = self.memfd()?;
        sys::fdpass::send_fd(socket, fd).map_err(|source| SegmentError::Io {
            op: "sendmsg(SCM_RIGHTS)",
            source,
        })
    }

    /// A duplicate of this anonymous segment's memfd without close-on-exec:
    /// a child spawned while it is open inherits it under the same number
    /// (`as_raw_fd`), and opens it with [`Segment::open_inherited`]. Drop it
    /// once the child is spawned.
    pub fn inheritable_fd(&self) -> Result<OwnedFd, SegmentError> {
        memfd::dup_inheritable(self.memfd()?).map_err(|source| SegmentError::Io {
            op: "fcntl(F_DUPFD)",
            source,
        })
    }

    /// Another handle on this anonymous segment, as [`Segment::from_fd`]
    /// makes from a close-on-exec duplicate of its memfd: for a second
    /// endpoint in this process (a pipe's two ends, say) without a
    /// descriptor that a child spawned meanwhile could inherit.
    pub fn reopen(&self, options: &OpenOptions) -> Result<Segment, SegmentError> {
        let fd = self
            .memfd()?
            .try_clone_to_owned()
            .map_err(|source| SegmentError::Io {
                op: "fcntl(F_DUPFD_CLOEXEC)",
                source,
            })?;
        Segment::from_fd(fd, options)
    }

    /// Maps `len` bytes of the user area from `offset` a second time, twice
    /// and back to back, so that a ring buffer there can be reached across
    /// its end with one contiguous access (see [`MirroredMap`]).
    ///
    /// The range must lie in the user area, and both `len` and the range's
    /// offset in the file (`HEADER_SIZE + offset`) must be multiples of
    /// [`page_size`]; otherwise `InvalidOptions`. A SysV segment cannot be
    /// mapped by file offset (`shmat` maps it whole): `WrongBacking`. The
    /// new mapping is registered with the SIGBUS handler like the
    /// segment's own, so a truncated file breaks it instead of killing the
    /// process. It is read-only if the segment was opened read-only. It
    /// is populated and locked if the segment's own mapping was asked to be
    /// ([`OpenOptions::prefault`], [`OpenOptions::lock_memory`]; a lock
    /// that fails is `LockFailed`). A segment on huge pages is
    /// `Unsupported`.
    ///
    /// ```
    /// use ipcring::segment::{CreateOptions, HEADER_SIZE, Segment, page_size};
    ///
    /// let page = page_size();
    /// // The first page boundary of the file inside the user area.
    /// let offset = page - HEADER_SIZE % page;
    /// let segment = Segment::create_anonymous(&CreateOptions::new(offset + page))?;
    /// let mirror = segment.map_mirrored(offset, page)?;
    /// let base = mirror.as_ptr();
    /// // SAFETY: nobody else has this anonymous segment, and every access
    /// // stays within the 2 * page bytes of the mirror.
    /// unsafe {
    ///     // Written across the end of the first copy...
    ///     base.add(page - 2).copy_from_nonoverlapping(b"wrap".as_ptr(), 4);
    ///     // ...the last two bytes land at the start.
    ///     assert_eq!([base.read(), base.add(1).read()], *b"ap");
    /// }
    /// # Ok::<(), ipcring::segment::SegmentError>(())
    /// ```
    pub fn map_mirrored(&self, offset: usize, len: usize) -> Result<MirroredMap, SegmentError> {
        let Some(fd) = self.file() else {
            return Err(SegmentError::WrongBacking("sysv"));
        };
        let on_huge_pages = memory::hugetlbfs_page_size(fd)
            .map_err(|source| SegmentError::Io {
                op: "fstatfs",
                source,
            })?
            .is_some();
        if on_huge_pages {
            // The header's single small page puts the user area off any
            // huge page boundary.
            return Err(SegmentError::Unsupported {
                reason: "mirrored maps of a segment on huge pages",
            });
        }
        let page = page_size();
        let fits = offset
            .checked_add(len)
            .is_some_and(|end| end <= self.user_len());
        if !fits || len == 0 {
            return Err(SegmentError::InvalidOptions {
                reason: "a mirrored range must be a non-empty part of the user area",
            });
        }
        let file_offset = HEADER_SIZE + offset;
        if file_offset % page != 0 || len % page != 0 {
            return Err(SegmentError::InvalidOptions {
                reason: "a mirrored range must start and end on page boundaries",
            });
        }
        let mapping = MirroredMapping::map_fd(
            fd,
            file_offset as u64,
            len,
            self.access,
            self.residency.prefault,
        )
        .map_err(|source| SegmentError::Io {
            op: "mmap (mirrored)",
            source,
        })?;
        if self.residency.lock {
            mapping
                .lock()
                .map_err(|source| lock_failed(2 * len, source))?;
        }
        Ok(MirroredMap { mapping })
    }

    /// Removes this segment's name (POSIX) or id (SysV), if it still has
    /// one: `NotFound` if it was removed already, and (POSIX) if its name
    /// now belongs to a newer object, which is left alone. An anonymous
    /// segment has no name to remove (`WrongBacking`).
    ///
    /// For POSIX the name is checked (device and inode of what it opens
    /// against our descriptor) and then unlinked; Linux has no "unlink if
    /// it is still this file". So one window remains: if, between the two
    /// steps, another process removes the name *and* creates a new segment
    /// under it, that new segment's name is removed (its memory lives on
    /// while mapped). A SysV id cannot be reused while we are attached, so
    /// SysV has no such window.
    pub fn unlink(&self) -> Result<(), SegmentError> {
        match &self.backing {
            Backing::Posix { name, fd } => unlink_if_same(name, fd.as_fd()),
            Backing::SysV { key, id } => {
                let address = Address::SysV(*key);
                // A removed segment we still map keeps its id, with its key
                // reset to IPC_PRIVATE (0).
                let stat =
                    sysv::stat(*id).map_err(|e| sysv_error("shmctl(IPC_STAT)", &address, e))?;
                if stat.key != key.get() {
                    return Err(SegmentError::NotFound(address.to_string()));
                }
                sysv::remove(*id).map_err(|e| sysv_error("shmctl(IPC_RMID)", &address, e))
            }
            Backing::Memfd { .. } => Err(SegmentError::WrongBacking("memfd")),
        }
    }

    /// Whether this segment's name (POSIX) or key (SysV) still leads to
    /// this very segment: `false` once it was removed, or now names another
    /// object (POSIX: compared by device and inode, as [`Segment::unlink`]
    /// does; SysV: a removed segment's key reads as private). An anonymous
    /// segment has no name to lose and is always `true`. An endpoint waiting
    /// for a peer asks this: no new peer can find a segment whose name is
    /// gone. Two or three system calls: keep it off fast paths.
    pub fn is_still_named(&self) -> Result<bool, SegmentError> {
        match &self.backing {
            Backing::Posix { name, fd } => {
                let address = Address::Posix(name.clone());
                let io = |op| move |source| SegmentError::Io { op, source };
                let ours = shm::fstat(fd).map_err(io("fstat"))?;
                let named = match shm::open(&posix_c_name(name), false) {
                    Ok(named) => named,
                    Err(e) => {
                        return match SegmentError::from_os("shm_open", &address, e) {
                            SegmentError::NotFound(_) => Ok(false),
                            other => Err(other),
                        };
                    }
                };
                let named = shm::fstat(&named).map_err(io("fstat"))?;
                Ok((named.dev, named.ino) == (ours.dev, ours.ino))
            }
            Backing::SysV { key, id } => match sysv::stat(*id) {
                Ok(stat) => Ok(stat.key == key.get()),
                Err(e) if sysv::is_removed(&e) => Ok(false),
                Err(e) => Err(sysv_error("shmctl(IPC_STAT)", &Address::SysV(*key), e)),
            },
            Backing::Memfd { .. } => Ok(true),
        }
    }

    /// The segment's name or key; `None` if anonymous.
    pub fn address(&self) -> Option<Address> {
        match &self.backing {
            Backing::Posix { name, .. } => Some(Address::Posix(name.clone())),
            Backing::SysV { key, .. } => Some(Address::SysV(*key)),
            Backing::Memfd { .. } => None,
        }
    }

    /// The content kind recorded by the creator.
    pub fn kind(&self) -> u32 {
        self.validated.kind
    }

    /// The first byte of the user area (page-aligned).
    ///
    /// Other processes may write any byte of it at any time: read and write
    /// it only through atomics or raw-pointer copies, never through `&[u8]`.
    pub fn user_ptr(&self) -> *mut u8 {
        // The mapping is at least HEADER_SIZE + user_size bytes (validated).
        self.mapping.as_ptr().wrapping_add(HEADER_SIZE)
    }

    /// Bytes in the user area.
    pub fn user_len(&self) -> usize {
        self.validated.user_size as usize
    }

    /// Whether the segment's file was truncated under us: an access faulted,
    /// and the whole mapping now reads zeros that no other process sees. The
    /// layer above must stop using it and report an error.
    ///
    /// It turns true at the first access after the truncation, not before.
    /// A file shrunk and grown back before we touched it is not detected
    /// here: the memory reads zeros, and only re-validating its contents
    /// tells. See [`platform::disable_sigbus_handler`](crate::platform::disable_sigbus_handler)
    /// for the handler behind this; SysV segments cannot be truncated.
    #[inline]
    pub fn is_broken(&self) -> bool {
        // Nothing broke in this process yet: one load, for fast paths.
        sys::sigbus::any_broken() && self.mapping.is_broken()
    }

    /// Whether the file behind the segment is still at least as large as
    /// our mapping (always true for SysV, which cannot shrink). A file cut
    /// short is found here even before we touch a lost page. One `fstat`:
    /// keep it off fast paths.
    pub fn file_intact(&self) -> bool {
        match self.file() {
            Some(fd) => shm::fstat(fd).map_or(true, |st| st.size >= self.mapping.len() as u64),
            None => true,
        }
    }

    /// A shared reference to a `T` made of atomics at `offset` in the user
    /// area, checked for bounds and alignment.
    pub fn view<T: Shareable>(&self, offset: usize) -> Result<&T, SegmentError> {
        if self.access == Access::ReadOnly {
            return Err(SegmentError::ReadOnly);
        }
        let size = std::mem::size_of::<T>();
        let fits = offset
            .checked_add(size)
            .is_some_and(|end| end <= self.user_len());
        // The user area is page-aligned, so the offset decides alignment.
        if !fits || offset % std::mem::align_of::<T>() != 0 {
            return Err(SegmentError::InvalidOptions {
                reason: "view out of the user area or misaligned",
            });
        }
        // SAFETY: the range [offset, offset + size) lies inside the mapped
        // user area, which lives as long as `self`; the address is aligned
        // for T; T is Shareable, so any bytes are a valid T and every access
        // through &T is atomic; and the mapping is writable.
        Ok(unsafe { &*self.user_ptr().add(offset).cast::<T>() })
    }

    /// The processes registered in the participants table, with liveness:
    /// the liveness lock of their slot for POSIX and memfd segments, pid and
    /// start time for SysV.
    pub fn participants(&self) -> Vec<Participant> {
        let table = &self.header().participants;
        match self.file() {
            Some(main) => participants::list(table, &mut FileLiveness::probing(main)),
            None => participants::list(table, &mut participants::ByProcessIdentity),
        }
    }

    /// Frees the table slots of processes that are gone; returns how many.
    pub fn reap_dead_participants(&self) -> Result<usize, SegmentError> {
        if self.access == Access::ReadOnly {
            return Err(SegmentError::ReadOnly);
        }
        let table = &self.header().participants;
        Ok(match self.file() {
            Some(main) => {
                let description = liveness::new_description(main, true)?;
                participants::reap(table, &mut FileLiveness::locking(main, description.as_fd()))
            }
            None => participants::reap(table, &mut participants::ByProcessIdentity),
        })
    }

    /// Takes the liveness lock for `key`: a shared open-file-description
    /// lock on the byte at offset [`LIVENESS_LOCK_BASE`] + `key` of the
    /// segment's file, through a fresh open file description of that file
    /// (so it does not matter whether its name was removed or now names
    /// another object).
    ///
    /// The kernel releases the lock when the process dies, whatever its pid
    /// namespace, so [`Segment::liveness_held`] in any process tells a live
    /// holder from a dead one. Dropping the guard releases it too. A child
    /// forked while it is held shares it: the lock then lasts until both
    /// are gone.
    ///
    /// Keys from [`MIN_LIVENESS_KEY`] (1024) up belong to the layer above;
    /// smaller ones are refused with `InvalidOptions` (keys
    /// `0..MAX_PARTICIPANTS` are the participants table's). Returns
    /// `Ok(None)` for a SysV segment, which has no file to lock; and
    /// `LivenessKeyBusy` if another description holds the key exclusively.
    pub fn lock_liveness(&self, key: u32) -> Result<Option<LivenessLock>, SegmentError> {
        if key < MIN_LIVENESS_KEY {
            return Err(SegmentError::InvalidOptions {
                reason: "liveness keys below 1024 belong to the segment layer",
            });
        }
        self.file()
            .map(|main| liveness::acquire(main, key))
            .transpose()
    }

    /// Whether any process (this one included, through another
    /// [`LivenessLock`]) holds the liveness lock for `key`: `F_OFD_GETLK`
    /// through the segment's main descriptor, which never holds liveness
    /// locks itself. Any key may be asked, the participants table's too.
    /// `Ok(None)` for a SysV segment.
    pub fn liveness_held(&self, key: u32) -> Result<Option<bool>, SegmentError> {
        self.file()
            .map(|main| liveness::is_held(main, key))
            .transpose()
    }

    /// Everything the header and the OS say about this segment.
    pub fn info(&self) -> SegmentInfo {
        let (mode, owner_uid) = match &self.backing {
            Backing::Posix { fd, .. } | Backing::Memfd { fd } => shm::fstat(fd)
                .map(|st| (st.mode, st.uid))
                .unwrap_or((0, u32::MAX)),
            Backing::SysV { id, .. } => sysv::stat(*id)
                .map(|st| (st.mode, st.uid))
                .unwrap_or((0, u32::MAX)),
        };
        let v = &self.validated;
        let owned = v.flags & header::FLAG_OWNED != 0;
        SegmentInfo {
            address: self.address(),
            backing: v.backing,
            kind: v.kind,
            layout_version: v.layout_version,
            total_size: v.total_size,
            user_size: v.user_size,
            mode,
            owner_uid,
            creator_pid: v.creator_pid,
            owned,
            creator_alive: owned.then(|| self.creator_alive()),
            creator_uid: v.creator_uid,
            created_realtime_ns: v.created_realtime_ns,
            participants: self.participants(),
        }
    }

    fn header(&self) -> &Header {
        header_of(&self.mapping)
    }

    /// Whether the creator's handle (POSIX, memfd) or process (SysV) lives.
    /// Meaningful for owned segments only: others have no creator lock.
    fn creator_alive(&self) -> bool {
        match self.file() {
            // A failed probe counts as alive: never call a live creator gone.
            Some(main) => liveness::is_held(main, liveness::CREATOR_KEY).unwrap_or(true),
            None => ProcessIdentity::from_word(self.validated.creator_identity)
                .is_some_and(ProcessIdentity::is_alive),
        }
    }

    /// The main descriptor of a backing with a file (POSIX, memfd). It
    /// never holds liveness locks, so probes through it see everyone's.
    fn file(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::Posix { fd, .. } | Backing::Memfd { fd } => Some(fd.as_fd()),
            Backing::SysV { .. } => None,
        }
    }

    fn memfd(&self) -> Result<BorrowedFd<'_>, SegmentError> {
        match &self.backing {
            Backing::Memfd { fd } => Ok(fd.as_fd()),
            Backing::Posix { .. } => Err(SegmentError::WrongBacking("posix")),
            Backing::SysV { .. } => Err(SegmentError::WrongBacking("sysv")),
        }
    }

    /// Writes the header of a freshly created, zero-filled mapping.
    fn initialize(
        mapping: Mapping,
        backing: Backing,
        backing_kind: BackingKind,
        options: &CreateOptions,
    ) -> Result<Segment, SegmentError> {
        // Before the header is written, so that a failure leaves nothing an
        // opener could mistake for a segment (our callers remove the object).
        if options.residency.lock {
            lock_mapping(&mapping)?;
        }
        let creator = if options.owned {
            // Taken before the header is published, so no one sees an owned
            // segment without its creator's lock while the creator lives.
            let lock = match &backing {
                Backing::Posix { fd, .. } | Backing::Memfd { fd } => {
                    Some(liveness::acquire(fd.as_fd(), liveness::CREATOR_KEY)?)
                }
                Backing::SysV { .. } => None,
            };
            Some(CreatorHandle {
                pid: sys::process::pid(),
                _lock: lock,
            })
        } else {
            None
        };
        let fields = HeaderFields {
            kind: options.kind,
            total_size: mapping.len() as u64,
            backing: backing_kind,
            created_realtime_ns: sys::time::realtime_ns(),
            creator_pid: sys::process::pid(),
            creator_uid: sys::process::uid(),
            // Needed to judge an owned SysV segment's creator; otherwise
            // only informative, and not worth failing a create for.
            creator_identity: if options.owned {
                participants::own_identity()?
            } else {
                participants::own_identity().unwrap_or(0)
            },
            flags: if options.owned { header::FLAG_OWNED } else { 0 },
        };
        header_of(&mapping).initialize(&fields);
        let validated =
            header_of(&mapping).validate(fields.total_size, backing_kind, Some(options.kind))?;
        let mut segment = Segment {
            mapping,
            backing,
            access: Access::ReadWrite,
            residency: options.residency,
            validated,
            registration: None,
            creator,
        };
        if options.register {
            segment.register()?;
        }
        Ok(segment)
    }

    /// Waits for the creator to publish the header, validates it, and
    /// registers. An unready header whose creator is gone is `Abandoned` at
    /// once.
    fn attach(
        mapping: Mapping,
        backing: Backing,
        actual_size: u64,
        options: &OpenOptions,
        deadline: Deadline,
        creator_gone: impl Fn() -> bool,
    ) -> Result<Segment, SegmentError> {
        let header = header_of(&mapping);
        let mut pause = Duration::from_micros(50);
        loop {
            match header.readiness()? {
                Readiness::Ready => break,
                // Re-check readiness after the creator is seen gone: it may
                // have published just before dying.
                Readiness::NotYet if creator_gone() => {
                    if let Readiness::Ready = header.readiness()? {
                        break;
                    }
                    // Our creators write the magic first: zeros there and
                    // anything elsewhere were not written by one.
                    if !header.is_ours() && !header.is_blank() {
                        return Err(Mismatch::Magic { found: 0 }.into());
                    }
                    return Err(SegmentError::Abandoned {
                        segment: backing.describe(),
                    });
                }
                Readiness::NotYet if deadline.has_passed() => {
                    return Err(SegmentError::NotReady {
                        waited: options.timeout,
                    });
                }
                Readiness::NotYet => {
                    std::thread::sleep(pause.min(deadline.remaining()));
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
            }
        }
        let actual_backing = match backing {
            Backing::Posix { .. } => BackingKind::Posix,
            Backing::SysV { .. } => BackingKind::SysV,
            Backing::Memfd { .. } => BackingKind::Memfd,
        };
        let validated = header.validate(actual_size, actual_backing, options.kind)?;
        // Only once the segment is known to be ours, and before we register:
        // until then the object may be anyone's, up to 1 TiB and sparse, and
        // faulting it in would allocate all of it for a segment we refuse.
        if options.residency.lock {
            // Faults every page in as well.
            lock_mapping(&mapping)?;
        } else if options.residency.prefault {
            mapping.populate().map_err(|source| SegmentError::Io {
                op: "madvise(MADV_POPULATE)",
                source,
            })?;
        }
        let mut segment = Segment {
            mapping,
            backing,
            access: options.access,
            residency: options.residency,
            validated,
            registration: None,
            creator: None,
        };
        if options.register && options.access == Access::ReadWrite {
            segment.register()?;
        }
        Ok(segment)
    }

    fn register(&mut self) -> Result<(), SegmentError> {
        let identity = participants::own_identity()?;
        let table = &self.header().participants;
        let full = SegmentError::TooManyParticipants {
            capacity: MAX_PARTICIPANTS,
        };
        let (index, lock) = match self.file() {
            Some(main) => {
                // One description of our own: it takes the shared lock of
                // the slot we claim (before the claim), and the exclusive
                // locks of slots it reaps when the table is full.
                let description = liveness::new_description(main, true)?;
                let mut liveness = FileLiveness::locking(main, description.as_fd());
                let index = match participants::register(table, identity, &mut liveness)? {
                    Some(index) => index,
                    None => {
                        participants::reap(table, &mut liveness);
                        participants::register(table, identity, &mut liveness)?.ok_or(full)?
                    }
                };
                (index, Some(liveness::held(description, index as u32)))
            }
            None => {
                let by_pid = &mut participants::ByProcessIdentity;
                let index = match participants::register(table, identity, by_pid)? {
                    Some(index) => index,
                    None => {
                        participants::reap(table, by_pid);
                        participants::register(table, identity, by_pid)?.ok_or(full)?
                    }
                };
                (index, None)
            }
        };
        self.registration = Some(Registration {
            index,
            identity,
            pid: sys::process::pid(),
            _lock: lock,
        });
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // A forked child holds a copy of the parent's registration; only the
        // process that registered may free the slot.
        // An owned segment goes with its creator's handle. Errors (the name
        // was removed or reused already) leave nothing to do.
        if let Some(creator) = self.creator.take() {
            if creator.pid == sys::process::pid() {
                let _ = self.unlink();
            }
        }
        // The slot is freed before its liveness lock goes (with `reg`), so
        // no one sees a claimed slot without a lock while we live.
        if let Some(reg) = self.registration.take() {
            if reg.pid == sys::process::pid() {
                participants::deregister(&self.header().participants, reg.index, reg.identity);
            }
        }
    }
}

/// Liveness of participants of a segment with a file: slot `i` is alive
/// while someone holds the liveness lock for key `i`.
struct FileLiveness<'a> {
    main: BorrowedFd<'a>,
    /// A description of our own, for taking locks; `None` when only probing.
    description: Option<BorrowedFd<'a>>,
}

impl<'a> FileLiveness<'a> {
    fn probing(main: BorrowedFd<'a>) -> FileLiveness<'a> {
        FileLiveness {
            main,
            description: None,
        }
    }

    /// `description` must be a fresh, writable description of `main`'s
    /// file: reaping takes exclusive locks through it.
    fn locking(main: BorrowedFd<'a>, description: BorrowedFd<'a>) -> FileLiveness<'a> {
        FileLiveness {
            main,
            description: Some(description),
        }
    }
}

impl participants::Liveness for FileLiveness<'_> {
    fn reserve(&mut self, index: usize) -> Result<bool, SegmentError> {
        match self.description {
            Some(description) => liveness::try_share(description, index as u32),
            None => Ok(false),
        }
    }

    fn release(&mut self, index: usize) {
        if let Some(description) = self.description {
            liveness::release(description, index as u32);
        }
    }

    fn is_alive(&mut self, index: usize, _word: u64) -> bool {
        // A failed probe counts as alive: never report (or free) a live
        // process as dead because a call failed.
        liveness::is_held(self.main, index as u32).unwrap_or(true)
    }

    fn hold_if_dead(&mut self, index: usize, _word: u64) -> bool {
        self.description
            .is_some_and(|description| liveness::try_exclude(description, index as u32))
    }
}

/// Unlinks `name` if it still names the file behind `fd`; `NotFound` if it
/// names nothing or another file. See [`Segment::unlink`] for the window
/// that remains between the check and the unlink.
fn unlink_if_same(name: &PosixName, fd: BorrowedFd<'_>) -> Result<(), SegmentError> {
    let address = Address::Posix(name.clone());
    let c_name = posix_c_name(name);
    let io = |op| move |source| SegmentError::Io { op, source };
    let ours = shm::fstat(fd).map_err(io("fstat"))?;
    let named =
        shm::open(&c_name, false).map_err(|e| SegmentError::from_os("shm_open", &address, e))?;
    let named = shm::fstat(&named).map_err(io("fstat"))?;
    if (named.dev, named.ino) != (ours.dev, ours.ino) {
        return Err(SegmentError::NotFound(address.to_string()));
    }
    shm::unlink(&c_name).map_err(|e| SegmentError::from_os("shm_unlink", &address, e))
}

/// How long [`Segment::remove`] waits for the creator of a SysV segment
/// whose header is still blank to write it.
pub const REMOVE_WAIT: Duration = Duration::from_secs(1);

/// Whether the kernel-recorded creator of a SysV segment is gone. A pid of
/// 0 (a creator outside our pid namespace) is never judged gone, and a
/// reused pid looks alive: both err on the side of leaving the segment.
fn sysv_creator_gone(creator_pid: u32) -> bool {
    creator_pid != 0 && !sys::process::pid_exists(creator_pid)
}

/// Whether SysV segment `id` has a blank header (false if it cannot be
/// read).
fn sysv_is_blank(id: i32) -> bool {
    sysv::stat(id)
        .ok()
        .filter(|stat| stat.size >= HEADER_SIZE as u64)
        .and_then(|_| sysv::attach(id, HEADER_SIZE, Access::ReadOnly).ok())
        .is_some_and(|mapping| header_of(&mapping).is_blank())
}

/// What `remove_sysv` found at a key.
enum SysvVerdict {
    /// It carries our magic.
    Ours,
    /// Blank header, creator gone: remove it if no one is attached.
    Abandoned,
    /// Blank header, creator alive: it may still write one.
    Wait,
}

fn remove_sysv(key: SysvKey) -> Result<(), SegmentError> {
    let address = Address::SysV(key);
    let deadline = Deadline::after(REMOVE_WAIT);
    let mut pause = Duration::from_micros(50);
    loop {
        // Looked up afresh on each lap: the key may have been removed and
        // taken again meanwhile.
        let id =
            sysv::lookup(key.get()).map_err(|e| SegmentError::from_os("shmget", &address, e))?;
        let stat = sysv::stat(id).map_err(|e| sysv_error("shmctl(IPC_STAT)", &address, e))?;
        if stat.size < HEADER_SIZE as u64 {
            return Err(Mismatch::TooSmall {
                size: stat.size,
                min: HEADER_SIZE as u64,
            }
            .into());
        }
        let verdict = {
            let mapping = sysv::attach(id, HEADER_SIZE, Access::ReadOnly)
                .map_err(|e| sysv_error("shmat", &address, e))?;
            let header = header_of(&mapping);
            if header.is_ours() {
                SysvVerdict::Ours
            } else {
                match header.readiness() {
                    Err(e @ SegmentError::Incompatible(_)) => return Err(e),
                    Ok(Readiness::NotYet) if !sysv_creator_gone(stat.creator_pid) => {
                        SysvVerdict::Wait
                    }
                    Ok(Readiness::NotYet) if header.is_blank() => SysvVerdict::Abandoned,
                    // Zeros where our magic belongs, and something else
                    // elsewhere: not ours.
                    _ => return Err(Mismatch::Magic { found: 0 }.into()),
                }
            }
        };
        let remove = match verdict {
            SysvVerdict::Ours => true,
            // Counted after our own mapping is gone. One attached may be an
            // opener about to give up, or a program using the zeros.
            SysvVerdict::Abandoned => {
                sysv::stat(id)
                    .map_err(|e| sysv_error("shmctl(IPC_STAT)", &address, e))?
                    .attachments
                    == 0
            }
            SysvVerdict::Wait => false,
        };
        if remove {
            return sysv::remove(id).map_err(|e| sysv_error("shmctl(IPC_RMID)", &address, e));
        }
        if deadline.has_passed() {
            return Err(SegmentError::NotReady {
                waited: REMOVE_WAIT,
            });
        }
        std::thread::sleep(pause.min(deadline.remaining()));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Every POSIX and SysV ipcring segment this process can see. Anonymous
/// memfd segments have no system-wide name and are not listed.
pub fn list() -> Result<Vec<Listing>, SegmentError> {
    let mut listings = Vec::new();
    let names = shm::list(POSIX_PREFIX).map_err(|source| SegmentError::Io {
        op: "read /dev/shm",
        source,
    })?;
    for file_name in names {
        let Ok(name) = PosixName::new(&file_name[POSIX_PREFIX.len()..]) else {
            continue;
        };
        let address = Address::Posix(name);
        let info = Segment::inspect(&address);
        listings.push(Listing { address, info });
    }
    // Without /proc/sysvipc (some containers) there are no SysV segments
    // to list; the POSIX ones still are.
    let entries = sysv::list().unwrap_or_default();
    for entry in entries {
        let Ok(key) = SysvKey::new(entry.key) else {
            continue;
        };
        let address = Address::SysV(key);
        let info = Segment::inspect(&address);
        // SysV has no names: a segment is ours only if its header says so.
        // A blank one whose creator died may be another program's.
        let foreign = matches!(
            info,
            Err(
                SegmentError::Incompatible(Mismatch::Magic { .. } | Mismatch::TooSmall { .. })
                    | SegmentError::NotReady { .. }
                    | SegmentError::PermissionDenied(_)
                    | SegmentError::NotFound(_)
            )
        ) || (matches!(info, Err(SegmentError::Abandoned { .. }))
            && sysv_is_blank(entry.id));
        if !foreign {
            listings.push(Listing { address, info });
        }
    }
    Ok(listings)
}

fn header_of(mapping: &Mapping) -> &Header {
    debug_assert!(mapping.len() >= HEADER_SIZE);
    // SAFETY: every caller checked that the mapping holds at least
    // HEADER_SIZE >= size_of::<Header>() bytes; it is page-aligned; Header is
    // made only of atomics, so any bytes are a valid Header and all access is
    // atomic; and the reference lives no longer than the mapping.
    unsafe { &*mapping.as_ptr().cast::<Header>() }
}

/// Maps an error on a SysV id we just looked up: removed in between reads
/// as `NotFound`.
fn sysv_error(op: &'static str, address: &Address, source: std::io::Error) -> SegmentError {
    if sysv::is_removed(&source) {
        SegmentError::NotFound(address.to_string())
    } else {
        SegmentError::from_os(op, address, source)
    }
}

/// Refuses a named segment another user owns, unless the opener allows it.
fn check_owner(
    address: &Address,
    owner_uid: u32,
    options: &OpenOptions,
) -> Result<(), SegmentError> {
    let our_uid = sys::process::euid();
    if owner_uid == our_uid || options.allow_foreign_owner {
        return Ok(());
    }
    Err(SegmentError::ForeignOwner {
        segment: address.to_string(),
        owner_uid,
        our_uid,
    })
}

fn check_min_size(size: u64) -> Result<(), SegmentError> {
    if size < HEADER_SIZE as u64 {
        return Err(Mismatch::TooSmall {
            size,
            min: HEADER_SIZE as u64,
        }
        .into());
    }
    if size > (HEADER_SIZE + MAX_USER_SIZE) as u64 {
        return Err(SegmentError::Corrupted {
            field: "object size",
            value: size,
        });
    }
    Ok(())
}

fn posix_c_name(name: &PosixName) -> std::ffi::CString {
    // A validated PosixName holds no NUL.
    shm::c_name(&name.file_name()).unwrap_or_default()
}

/// The default huge page pool; `NotSupported` if the kernel has none.
fn huge_page_pool() -> Result<memory::HugePagePool, SegmentError> {
    memory::huge_page_pool()
        .map_err(|source| SegmentError::Io {
            op: "read /proc/meminfo",
            source,
        })?
        .ok_or(SegmentError::HugePagesUnavailable {
            reason: HugePagesReason::NotSupported,
        })
}

/// The error for `op` failing while a segment of `total` bytes takes its
/// pages from the huge page `pool` (as it was before we asked): `ENOMEM`,
/// `ENOSPC` and `EINVAL` there mean the pool is short (hugetlbfs reports
/// it as each of them, depending on the call).
fn huge_pages_error(
    op: &'static str,
    total: usize,
    pool: memory::HugePagePool,
    source: std::io::Error,
) -> SegmentError {
    use std::io::ErrorKind;
    let short = matches!(
        source.kind(),
        ErrorKind::OutOfMemory | ErrorKind::StorageFull | ErrorKind::InvalidInput
    );
    if !short {
        return SegmentError::Io { op, source };
    }
    SegmentError::HugePagesUnavailable {
        reason: HugePagesReason::PoolTooSmall {
            op,
            errno: source.raw_os_error().unwrap_or(0),
            page_size: pool.page_size,
            needed: (total as u64).div_ceil(pool.page_size),
            total: pool.total,
            available: pool.available,
        },
    }
}

/// `mlock`s a segment's mapping.
fn lock_mapping(mapping: &Mapping) -> Result<(), SegmentError> {
    mapping
        .lock()
        .map_err(|source| lock_failed(mapping.len(), source))
}

fn lock_failed(bytes: usize, source: std::io::Error) -> SegmentError {
    SegmentError::LockFailed {
        bytes: bytes as u64,
        // Read after the failure, for the message; unreadable counts as
        // unlimited, which cannot have been the cause.
        limit: memory::memlock_limit().ok().flatten(),
        source,
    }
}

/// Runs a cleanup unless disarmed: removes a half-created object when
/// creation fails after the OS object exists.
struct RemoveOnError<F: FnMut()> {
    cleanup: Option<F>,
}

impl<F: FnMut()> RemoveOnError<F> {
    fn new(cleanup: F) -> Self {
        RemoveOnError {
            cleanup: Some(cleanup),
        }
    }

    fn disarm(mut self) {
        self.cleanup = None;
    }
}

impl<F: FnMut()> Drop for RemoveOnError<F> {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.as_mut() {
            cleanup();
        }
    }
}

fn create_posix(
    name: &PosixName,
    total: usize,
    options: &CreateOptions,
) -> Result<Segment, SegmentError> {
    let address = Address::Posix(name.clone());
    let c_name = posix_c_name(name);
    // Only a hint (the name may be taken before we publish), but it spares
    // a racing loser from allocating the whole segment first.
    if shm::name_exists(&c_name) {
        return Err(SegmentError::AlreadyExists(address.to_string()));
    }
    // Built unnamed and named only once complete: a creator that dies
    // half-way leaves nothing under the name, and no opener ever waits for
    // one.
    let io = |op| move |source| SegmentError::Io { op, source };
    let fd = shm::create_unnamed(options.mode).map_err(io("open(O_TMPFILE) in /dev/shm"))?;
    shm::set_len(&fd, total as u64).map_err(io("ftruncate"))?;
    shm::reserve(&fd, total as u64).map_err(io("posix_fallocate"))?;
    let mapping = Mapping::map_fd_with(&fd, total, Access::ReadWrite, options.residency.prefault)
        .map_err(io("mmap"))?;
    let backing = Backing::Posix {
        name: name.clone(),
        fd,
    };
    let segment = Segment::initialize(mapping, backing, BackingKind::Posix, options)?;
    let Backing::Posix { fd, .. } = &segment.backing else {
        unreachable!("built as POSIX above")
    };
    shm::publish(fd, &c_name).map_err(|e| SegmentError::from_os("linkat", &address, e))?;
    Ok(segment)
}

/// `pool` is the huge page pool before creating, if `options` ask for
/// huge pages.
fn create_sysv(
    key: SysvKey,
    total: usize,
    pool: Option<memory::HugePagePool>,
    options: &CreateOptions,
) -> Result<Segment, SegmentError> {
    let address = Address::SysV(key);
    let id = sysv::create_exclusive(key.get(), total, options.mode, pool.is_some()).map_err(
        |e| match (e.kind(), pool) {
            // EPERM: not the caller's key (that is EEXIST), but SHM_HUGETLB.
            (std::io::ErrorKind::PermissionDenied, Some(_)) => SegmentError::HugePagesUnavailable {
                reason: HugePagesReason::NotPermitted,
            },
            // shmget reserves the pages, and says ENOMEM if it cannot.
            (std::io::ErrorKind::OutOfMemory, Some(pool)) => {
                huge_pages_error("shmget", total, pool, e)
            }
            _ => SegmentError::from_os("shmget", &address, e),
        },
    )?;
    let guard = RemoveOnError::new(|| {
        let _ = sysv::remove(id);
    });
    let mapping = sysv::attach_with(id, total, Access::ReadWrite, options.residency.prefault)
        .map_err(|e| sysv_error("shmat", &address, e))?;
    let segment = Segment::initialize(
        mapping,
        Backing::SysV { key, id },
        BackingKind::SysV,
        options,
    )?;
    guard.disarm();
    Ok(segment)
}

fn open_posix(
    name: &PosixName,
    options: &OpenOptions,
    deadline: Deadline,
) -> Result<Segment, SegmentError> {
    let address = Address::Posix(name.clone());
    let c_name = posix_c_name(name);
    let fd = shm::open(&c_name, options.access == Access::ReadWrite)
        .map_err(|e| SegmentError::from_os("shm_open", &address, e))?;
    let io = |op| move |source| SegmentError::Io { op, source };
    let stat = shm::fstat(&fd).map_err(io("fstat"))?;
    if !stat.regular {
        return Err(Mismatch::NotRegularFile.into());
    }
    check_owner(&address, stat.uid, options)?;
    // Our creators name a segment only once it is complete (see
    // `create_posix`): an empty or unready object will stay so.
    let size = stat.size;
    if size == 0 {
        return Err(SegmentError::Abandoned {
            segment: address.to_string(),
        });
    }
    check_min_size(size)?;
    // Not populated yet: see `Segment::attach`.
    let mapping = Mapping::map_fd(&fd, size as usize, options.access).map_err(io("mmap"))?;
    let backing = Backing::Posix {
        name: name.clone(),
        fd,
    };
    Segment::attach(mapping, backing, size, options, deadline, || true)
}

fn open_sysv(
    key: SysvKey,
    options: &OpenOptions,
    deadline: Deadline,
) -> Result<Segment, SegmentError> {
    let address = Address::SysV(key);
    let id = sysv::lookup(key.get()).map_err(|e| SegmentError::from_os("shmget", &address, e))?;
    let stat = sysv::stat(id).map_err(|e| sysv_error("shmctl(IPC_STAT)", &address, e))?;
    check_owner(&address, stat.uid, options)?;
    let size = stat.size;
    check_min_size(size)?;
    // Not populated yet: see `Segment::attach`.
    let mapping = sysv::attach(id, size as usize, options.access)
        .map_err(|e| sysv_error("shmat", &address, e))?;
    let creator_gone = || sysv_creator_gone(stat.creator_pid);
    Segment::attach(
        mapping,
        Backing::SysV { key, id },
        size,
        options,
        deadline,
        creator_gone,
    )
}
