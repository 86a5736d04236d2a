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
