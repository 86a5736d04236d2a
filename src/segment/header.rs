//! The header at offset 0 of every segment, and its validation.
//!
//! | offset | size | field                   | unit / range                  | written by |
//! |--------|------|-------------------------|-------------------------------|------------|
//! | 0      | 8    | `magic`                 | `b"IPCRING\0"` little-endian  | creator, first |
//! | 8      | 4    | `layout_version`        | [`LAYOUT_VERSION`] (3)        | creator |
//! | 12     | 4    | `kind`                  | content kind, chosen by the creator's layer | creator |
//! | 16     | 8    | `total_size`            | bytes of the whole object     | creator |
//! | 24     | 8    | `user_size`             | bytes after the header        | creator |
//! | 32     | 4    | `header_size`           | [`HEADER_SIZE`]               | creator |
//! | 36     | 4    | `participants_capacity` | [`MAX_PARTICIPANTS`]          | creator |
//! | 40     | 8    | `created_realtime_ns`   | ns since the Unix epoch       | creator |
//! | 48     | 4    | `creator_pid`           | pid                           | creator |
//! | 52     | 4    | `creator_uid`           | uid                           | creator |
//! | 56     | 4    | `init_state`            | 0 = not ready, [`INIT_READY`] | creator, last |
//! | 60     | 4    | `backing`               | 1 POSIX, 2 SysV, 3 memfd      | creator |
//! | 64     | 4    | `flags`                 | bit 0 [`FLAG_OWNED`]; other bits 0 | creator |
//! | 68     | 4    | reserved                | zero                          | nobody |
//! | 72     | 8    | `creator_identity`      | the creator's [`ProcessIdentity`](super::ProcessIdentity) word (pid and start time) | creator |
//! | 80     | 48   | reserved                | zero                          | nobody |
//! | 128    | 2048 | participants table      | 128 slots of 16 bytes         | each attached process, its own slot |
//! | 2176   | 1920 | padding                 | zero                          | nobody |
//! | 4096   | ...  | user area               | `user_size` bytes             | the layer above |
//!
//! Every field is an atomic: the segment is shared with processes we do not
//! trust, so no plain reference to its bytes may exist. The creator writes
//! `magic` first, then all fields, then stores `init_state = INIT_READY`
//! with Release; an opener loads `init_state` with Acquire before reading
//! the rest. Magic first: a header with our magic and no READY is ours,
//! left half-written by a creator that is still at it or died, and a header
//! without our magic holds nothing our creator wrote.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use super::error::{Mismatch, SegmentError};
use super::participants::ParticipantSlot;

/// `b"IPCRING\0"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"IPCRING\0");
/// The layout this library writes and reads. Version 2: in segments with
/// a file, a participant slot is claimed only by a process holding that
/// slot's liveness lock, and a claimed slot whose lock nobody holds is
/// dead. A version-1 library would look dead to us, and we to it.
/// Version 3: a [`WaitWord`](crate::sync::WaitWord)'s sleeper count is a
/// 64-bit `generation << 32 | count` at offset 8 (it was a 32-bit count at
/// offset 4), so a version-2 library would sleep where we never look.
/// Still version 3: offset 4 of a `WaitWord`, reserved and zero before,
/// now counts the futex syscalls made on the word. Nothing reads it to
/// decide anything, so a library that leaves it at zero shares a segment
/// with one that counts in it.
pub const LAYOUT_VERSION: u32 = 3;
/// Bytes before the user area: one page, so the user area is page-aligned.
pub const HEADER_SIZE: usize = 4096;
/// Slots in the participants table.
pub const MAX_PARTICIPANTS: usize = 128;
/// `init_state` once the header is complete ("REDY").
pub const INIT_READY: u32 = u32::from_le_bytes(*b"REDY");
/// `init_state` of fresh memory.
pub const INIT_EMPTY: u32 = 0;
/// `flags` bit: the segment belongs to its creator's handle, and is stale
/// once the creator is gone.
pub(crate) const FLAG_OWNED: u32 = 1;
/// Every `flags` bit this layout defines.
const KNOWN_FLAGS: u32 = FLAG_OWNED;

/// Which OS object backs a segment, as recorded in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackingKind {
    /// `shm_open`.
    Posix,
    /// `shmget`.
    SysV,
    /// `memfd_create`.
    Memfd,
}

impl BackingKind {
    fn code(self) -> u32 {
        match self {
            BackingKind::Posix => 1,
            BackingKind::SysV => 2,
            BackingKind::Memfd => 3,
        }
    }

    fn from_code(code: u32) -> Option<BackingKind> {
        match code {
            1 => Some(BackingKind::Posix),
            2 => Some(BackingKind::SysV),
            3 => Some(BackingKind::Memfd),
            _ => None,
        }
    }

    /// A lowercase name (`posix`, `sysv`, `memfd`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackingKind::Posix => "posix",
            BackingKind::SysV => "sysv",
            BackingKind::Memfd => "memfd",
        }
    }
}

#[repr(C)]
pub(crate) struct Header {
    magic: AtomicU64,
    layout_version: AtomicU32,
    kind: AtomicU32,
    total_size: AtomicU64,
    user_size: AtomicU64,
    header_size: AtomicU32,
    participants_capacity: AtomicU32,
    created_realtime_ns: AtomicU64,
    creator_pid: AtomicU32,
    creator_uid: AtomicU32,
    pub(super) init_state: AtomicU32,
    backing: AtomicU32,
    flags: AtomicU32,
    _reserved_word: AtomicU32,
    creator_identity: AtomicU64,
    _reserved: [AtomicU64; 6],
    pub(super) participants: [ParticipantSlot; MAX_PARTICIPANTS],
}

const _: () = {
    assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);
    assert!(std::mem::offset_of!(Header, init_state) == 56);
    assert!(std::mem::offset_of!(Header, flags) == 64);
    assert!(std::mem::offset_of!(Header, creator_identity) == 72);
    assert!(std::mem::offset_of!(Header, participants) == 128);
    assert!(std::mem::size_of::<Header>() == 128 + 16 * MAX_PARTICIPANTS);
};

/// What the creator records.
pub(crate) struct HeaderFields {
    pub kind: u32,
    pub total_size: u64,
    pub backing: BackingKind,
    pub created_realtime_ns: u64,
    pub creator_pid: u32,
    pub creator_uid: u32,
    pub creator_identity: u64,
    pub flags: u32,
}

/// What a validated header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Validated {
    pub kind: u32,
    pub layout_version: u32,
    pub total_size: u64,
    pub user_size: u64,
    pub backing: BackingKind,
    pub created_realtime_ns: u64,
    pub creator_pid: u32,
    pub creator_uid: u32,
    pub creator_identity: u64,
    pub flags: u32,
}

/// Where an opener stands while the creator may still be writing.
pub(crate) enum Readiness {
    Ready,
    NotYet,
}

impl Header {
    /// Fills a fresh (zeroed) header and publishes it.
    pub fn initialize(&self, fields: &HeaderFields) {
        // Relaxed: nobody reads these before the Release store below.
        self.magic.store(MAGIC, Ordering::Relaxed);
        self.layout_version.store(LAYOUT_VERSION, Ordering::Relaxed);
        self.kind.store(fields.kind, Ordering::Relaxed);
        self.total_size.store(fields.total_size, Ordering::Relaxed);
        self.user_size
            .store(fields.total_size - HEADER_SIZE as u64, Ordering::Relaxed);
        self.header_size
            .store(HEADER_SIZE as u32, Ordering::Relaxed);
        self.participants_capacity
            .store(MAX_PARTICIPANTS as u32, Ordering::Relaxed);
        self.created_realtime_ns
            .store(fields.created_realtime_ns, Ordering::Relaxed);
        self.creator_pid
            .store(fields.creator_pid, Ordering::Relaxed);
        self.creator_uid
            .store(fields.creator_uid, Ordering::Relaxed);
        self.backing.store(fields.backing.code(), Ordering::Relaxed);
        self.flags.store(fields.flags, Ordering::Relaxed);
        self.creator_identity
            .store(fields.creator_identity, Ordering::Relaxed);
        // Release: pairs with the Acquire load of `init_state` in
        // `readiness`, so an opener that sees READY sees every field above.
        self.init_state.store(INIT_READY, Ordering::Release);
    }

    /// Whether the header is published; `Err` if it cannot be ours.
    pub fn readiness(&self) -> Result<Readiness, SegmentError> {
        // `init_state` first: once it reads READY, the fence below makes the
        // magic (written before it) visible. The load is Relaxed plus a
        // fence rather than an Acquire load, because inspection maps the
        // segment read-only.
        let state = self.init_state.load(Ordering::Relaxed);
        // Acquire: pairs with the Release store of `init_state` in
        // `initialize`, through the load above.
        fence(Ordering::Acquire);
        let magic = self.magic.load(Ordering::Relaxed);
        match (state, magic) {
            (INIT_READY, MAGIC) => Ok(Readiness::Ready),
            // Fresh memory, or the creator is between its writes.
            (INIT_EMPTY, 0 | MAGIC) => Ok(Readiness::NotYet),
            (_, 0 | MAGIC) => Err(SegmentError::Corrupted {
                field: "init_state",
                value: u64::from(state),
            }),
            (_, found) => Err(Mismatch::Magic { found }.into()),
        }
    }

    /// Whether the object carries our magic (whatever its state).
    pub fn is_ours(&self) -> bool {
        self.magic.load(Ordering::Relaxed) == MAGIC
    }

    /// Whether every header field, the participants table included, is
    /// zero: fresh memory no creator has written to.
    pub fn is_blank(&self) -> bool {
        let words = [
            self.magic.load(Ordering::Relaxed),
            u64::from(self.layout_version.load(Ordering::Relaxed)),
            u64::from(self.kind.load(Ordering::Relaxed)),
            self.total_size.load(Ordering::Relaxed),
            self.user_size.load(Ordering::Relaxed),
            u64::from(self.header_size.load(Ordering::Relaxed)),
            u64::from(self.participants_capacity.load(Ordering::Relaxed)),
            self.created_realtime_ns.load(Ordering::Relaxed),
            u64::from(self.creator_pid.load(Ordering::Relaxed)),
            u64::from(self.creator_uid.load(Ordering::Relaxed)),
            u64::from(self.init_state.load(Ordering::Relaxed)),
            u64::from(self.backing.load(Ordering::Relaxed)),
            u64::from(self.flags.load(Ordering::Relaxed)),
            u64::from(self._reserved_word.load(Ordering::Relaxed)),
            self.creator_identity.load(Ordering::Relaxed),
        ];
        words.iter().all(|&word| word == 0)
            && self
                ._reserved
                .iter()
                .all(|word| word.load(Ordering::Relaxed) == 0)
            && self.participants.iter().all(ParticipantSlot::is_blank)
    }

    /// Checks a published header against the object's real size and the
    /// kind the opener expects. Every field is treated as untrusted.
    pub fn validate(
        &self,
        actual_size: u64,
        actual_backing: BackingKind,
        expected_kind: Option<u32>,
    ) -> Result<Validated, SegmentError> {
        let layout_version = self.layout_version.load(Ordering::Relaxed);
        if layout_version != LAYOUT_VERSION {
            return Err(Mismatch::Version {
                found: layout_version,
                expected: LAYOUT_VERSION,
            }
            .into());
        }
        let header_size = self.header_size.load(Ordering::Relaxed);
        if header_size as usize != HEADER_SIZE {
            return Err(SegmentError::Corrupted {
                field: "header_size",
                value: u64::from(header_size),
            });
        }
        let capacity = self.participants_capacity.load(Ordering::Relaxed);
        if capacity as usize != MAX_PARTICIPANTS {
            return Err(SegmentError::Corrupted {
                field: "participants_capacity",
                value: u64::from(capacity),
            });
        }
        let total_size = self.total_size.load(Ordering::Relaxed);
        if total_size != actual_size {
            return Err(Mismatch::Size {
                header: total_size,
                actual: actual_size,
            }
            .into());
        }
        let user_size = self.user_size.load(Ordering::Relaxed);
        if Some(user_size) != total_size.checked_sub(HEADER_SIZE as u64) {
            return Err(SegmentError::Corrupted {
                field: "user_size",
                value: user_size,
            });
        }
        let backing_code = self.backing.load(Ordering::Relaxed);
        let backing = BackingKind::from_code(backing_code)
            .filter(|&backing| backing == actual_backing)
            .ok_or(SegmentError::Corrupted {
                field: "backing",
                value: u64::from(backing_code),
            })?;
        let flags = self.flags.load(Ordering::Relaxed);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(SegmentError::Corrupted {
                field: "flags",
                value: u64::from(flags),
            });
        }
        let kind = self.kind.load(Ordering::Relaxed);
        if let Some(expected) = expected_kind {
            if kind != expected {
                return Err(Mismatch::Kind {
                    found: kind,
                    expected,
                }
                .into());
            }
        }
        Ok(Validated {
            kind,
            layout_version,
            total_size,
            user_size,
            backing,
            created_realtime_ns: self.created_realtime_ns.load(Ordering::Relaxed),
            creator_pid: self.creator_pid.load(Ordering::Relaxed),
            creator_uid: self.creator_uid.load(Ordering::Relaxed),
            creator_identity: self.creator_identity.load(Ordering::Relaxed),
            flags,
        })
    }

    /// The `flags` word, unchecked: for a header not (yet) validated.
    pub fn raw_flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    /// The creator's identity word, unchecked.
    pub fn raw_creator_identity(&self) -> u64 {
        self.creator_identity.load(Ordering::Relaxed)
    }

    /// The creator's pid, unchecked.
    pub fn raw_creator_pid(&self) -> u32 {
        self.creator_pid.load(Ordering::Relaxed)
    }
}
