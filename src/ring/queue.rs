//! A message queue over raw memory: variable-size messages with a type and
//! a priority, selected by priority or by type, under one
//! [`JournalLock`].
//!
//! This module owns the structure and its algorithm: blocks, the free list,
//! one FIFO list per priority found through a bitmap, the counts and the
//! statistics. It makes no OS call and knows no names: the caller passes
//! its pid, the time and its lock token, and does the waiting (see
//! `channel::queue`).
//!
//! Selection by type, peeking and byte accounting need a consistent view
//! of many words at once, which the lock-free rings cannot give across
//! many senders and receivers; so every operation runs under the lock, and
//! every shared word it changes goes through the lock's redo journal. A
//! holder killed at any instruction leaves either the whole update or none
//! of it (the reaper replays a committed journal), so the counts never
//! drift after a kill.
//!
//! Layout (`region` offsets; the header is [`QueueHeader`]):
//!
//! | offset | field | written by | meaning |
//! |---|---|---|---|
//! | 0 | `info` | creator | [`RingInfo`], magic `MSGQUEUE`; `capacity` = blocks, `slot_size` = block stride |
//! | 40 | `config` | creator | max messages, max bytes, max message size, priorities, blocks, creation time |
//! | 88 | `lock` | lock holder, reaper | [`JournalLock`] and its journal |
//! | 512 | state words | lock holder (journaled) | free head, bitmap, count, bytes, sequence, epochs, stats, repairs, losses |
//! | ... | `in_hand` | lock holder, token owner | 65 words: 1 while token `t` holds a received message it has not returned yet |
//! | ... | `heads`, `tails` | lock holder (journaled) | 64 list ends, block index or `NIL` |
//! | ... | `data_ready`, `space_ready` | all | [`WaitWord`]s: receivers, senders |
//! | ... | `bytes_sent` | lock holder (journaled) | payload bytes sent, ever (wraps); in what was padding before, so a queue made before it reads 0 there |
//! | [`blocks_offset`] | blocks | see below | `blocks` × (64-byte header + `max_msg` rounded up to 8) |
//!
//! A block's header is 8 words: `next` (list link or `NIL`), `type`,
//! `meta` (`priority << 32 | len`), sender pid, send time (ns since the
//! epoch), `owner` (0, or a token with [`LOANED`] or [`BORROWED`]), `seq`
//! (the send's sequence number, 0 once received), one spare. A free or
//! queued block has owner 0.

use std::ptr::NonNull;

use super::bytes::ByteBuf;
use super::journal::{JournalFull, JournalLock, Released, Transaction};
use super::{Corruption, Region, RingCounters, RingError, RingInfo, check_region};
use crate::sync::shim::{AtomicU64, Ordering};
use crate::sync::{Deadline, WaitStrategy, WaitWord};

/// The queue's magic word ("MSGQUEUE").
pub const MAGIC: u64 = u64::from_le_bytes(*b"MSGQUEUE");
/// The fewest priorities a queue may have (POSIX's `MQ_PRIO_MAX` minimum).
pub const MIN_PRIORITIES: u32 = 32;
/// The most priorities: one bitmap word finds the highest non-empty list.
pub const MAX_PRIORITIES: u32 = 64;
/// The largest message size a queue may be created with (16 MiB).
pub const MAX_MESSAGE_LIMIT: usize = 1 << 24;
/// The most blocks (messages) a queue may hold.
pub const MAX_BLOCKS: usize = 1 << 20;
/// The most bytes a queue's blocks may take in all (1 TiB).
pub const MAX_QUEUE_BYTES: usize = 1 << 40;
/// Blocks of a rendezvous (zero-capacity) queue: one per possible handle
/// (31), so every blocked sender has one.
pub const RENDEZVOUS_BLOCKS: usize = 31;
/// Owner-word flag: the block is loaned to the token for writing.
pub const LOANED: u64 = 1 << 32;
/// Owner-word flag: the block was received by the token and is being read
/// in place.
pub const BORROWED: u64 = 2 << 32;

/// Journal tag of a send.
pub const TAG_SEND: u64 = 1;
/// Journal tag of a receive.
pub const TAG_RECEIVE: u64 = 2;
/// Journal tag of a loan.
pub const TAG_LOAN: u64 = 3;
/// Journal tag of freeing a loaned or borrowed block.
pub const TAG_FREE: u64 = 4;
/// Journal tag of a withdrawn rendezvous message.
pub const TAG_WITHDRAW: u64 = 5;
/// Journal tag of a repair after a death.
pub const TAG_REPAIR: u64 = 6;

/// No block.
const NIL: u64 = u64::MAX;
const BLOCK_HEADER: usize = 64;
const NEXT: usize = 0;
const TYPE: usize = 1;
const META: usize = 2;
const PID: usize = 3;
const TIME: usize = 4;
const OWNER: usize = 5;
const SEQ: usize = 6;
const TOKEN_MASK: u64 = 0xffff_ffff;
const TOKENS: usize = 65;

/// The creator's parameters, as stored.
#[repr(C)]
#[derive(Debug)]
struct StoredConfig {
    max_msgs: AtomicU64,
    max_bytes: AtomicU64,
    max_msg: AtomicU64,
    priorities: AtomicU64,
    blocks: AtomicU64,
    created_ns: AtomicU64,
}

/// The queue's header in shared memory (see the module's table). Every
/// state word is changed only by the lock holder through the journal,
/// except `removed` (set once, by whoever removes the queue) and `in_hand`
/// (cleared by its own token after unlocking).
///
/// ```
/// use ipcring::ring::queue::{blocks_offset, QueueHeader};
/// assert!(std::mem::size_of::<QueueHeader>() <= blocks_offset());
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct QueueHeader {
    info: RingInfo,
    config: StoredConfig,
    lock: JournalLock,
    /// First free block, or `NIL`.
    free_head: AtomicU64,
    /// Bit `p` set: the list of priority `p` is not empty.
    bitmap: AtomicU64,
    /// Messages queued.
    count: AtomicU64,
    /// Bytes queued, plus bytes of loaned blocks (reserved at loan).
    bytes: AtomicU64,
    /// The next send's sequence number (from 1).
    next_seq: AtomicU64,
    /// Sends committed: receivers wait for it to change.
    sent: AtomicU64,
    /// Blocks freed (received or given back): senders wait for it to change.
    freed: AtomicU64,
    /// Messages received.
    received: AtomicU64,
    /// Nonzero once the queue was removed.
    removed: AtomicU64,
    last_send_pid: AtomicU64,
    last_send_ns: AtomicU64,
    last_recv_pid: AtomicU64,
    last_recv_ns: AtomicU64,
    /// Blocks and deliveries of dead endpoints repaired.
    repairs: AtomicU64,
    /// Messages lost with a receiver that died holding them.
    losses: AtomicU64,
    in_hand: [AtomicU64; TOKENS],
    heads: [AtomicU64; MAX_PRIORITIES as usize],
    tails: [AtomicU64; MAX_PRIORITIES as usize],
    data_ready: WaitWord,
    space_ready: WaitWord,
    /// Payload bytes sent, ever (wraps): journaled with `sent`, one entry
    /// more in a transaction that has about ten. It sits in what was the
    /// padding before the blocks (see the assertion below), so the layout
    /// is unchanged and a queue made before it reads 0 here; a library
    /// without it sends without counting, which only makes the total low.
    bytes_sent: AtomicU64,
}

// `bytes_sent` came after the rest: it must stay inside the padding that
// queues made before it already had, or the blocks would move.
const _: () = assert!(std::mem::offset_of!(QueueHeader, bytes_sent) + 8 <= 2240);
const _: () = assert!(std::mem::size_of::<QueueHeader>().next_multiple_of(64) == 2240);

/// A queue's parameters, fixed at creation.
///
/// ```
/// use ipcring::ring::HeapRegion;
/// use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
///
/// let config = QueueConfig { max_msgs: 2, max_bytes: 16, max_msg: 8, priorities: 32 };
/// let heap = HeapRegion::new(MessageQueue::required_size(&config)?)?;
/// // SAFETY: fresh memory, used only through this handle.
/// let queue = unsafe {
///     MessageQueue::init(heap.region(), &config, 0)?;
///     MessageQueue::attach(heap.region())?
/// };
/// assert_eq!(queue.config(), config);
/// assert_eq!(config.blocks(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Messages the queue holds; 0 makes a rendezvous queue.
    pub max_msgs: usize,
    /// Bytes the queued messages may take in all (SysV `msg_qbytes`).
    pub max_bytes: usize,
    /// The largest message.
    pub max_msg: usize,
    /// Priorities `0..priorities`, from [`MIN_PRIORITIES`] to
    /// [`MAX_PRIORITIES`].
    pub priorities: u32,
}

impl QueueConfig {
    /// Blocks the queue needs: one per message, or [`RENDEZVOUS_BLOCKS`].
    pub fn blocks(&self) -> usize {
        if self.max_msgs == 0 {
            RENDEZVOUS_BLOCKS
        } else {
            self.max_msgs
        }
    }

    fn stride(&self) -> usize {
        BLOCK_HEADER + self.max_msg.next_multiple_of(8)
    }

    /// Checks the parameters against the queue's limits.
    pub fn validate(&self) -> Result<(), RingError> {
        let invalid = |capacity, reason| Err(RingError::InvalidCapacity { capacity, reason });
        if self.max_msgs > MAX_BLOCKS {
            return invalid(self.max_msgs, "more than 2^20 messages");
        }
        if self.max_msg > MAX_MESSAGE_LIMIT {
            return invalid(self.max_msg, "messages larger than 16 MiB");
        }
        if !(MIN_PRIORITIES..=MAX_PRIORITIES).contains(&self.priorities) {
            return invalid(self.priorities as usize, "priorities must be 32 to 64");
        }
        if self.max_bytes < self.max_msg {
            return invalid(
                self.max_bytes,
                "max bytes below the largest message: it could never be sent",
            );
        }
        if self.max_bytes > MAX_QUEUE_BYTES {
            return invalid(self.max_bytes, "max bytes above 1 TiB");
        }
        Ok(())
    }
}

/// Where the blocks start.
pub fn blocks_offset() -> usize {
    std::mem::size_of::<QueueHeader>().next_multiple_of(64)
}

/// How messages are chosen by a receive or a peek.
///
/// ```
/// use ipcring::ring::HeapRegion;
/// use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
///
/// let config = QueueConfig { max_msgs: 2, max_bytes: 16, max_msg: 8, priorities: 32 };
/// let heap = HeapRegion::new(MessageQueue::required_size(&config)?)?;
/// // SAFETY: fresh memory, used only through this handle.
/// let queue = unsafe {
///     MessageQueue::init(heap.region(), &config, 0)?;
///     MessageQueue::attach(heap.region())?
/// };
/// let mut locked = queue.try_lock(1).unwrap();
/// locked.send(b"a", 4, 0, 1, 0)?;
/// locked.send(b"b", 2, 0, 1, 0)?;
/// assert_eq!(locked.find(Select::TypeAtMost(3), 0)?.unwrap().mtype, 2);
/// assert_eq!(locked.find(Select::ExceptType(4), 0)?.unwrap().mtype, 2);
/// assert!(locked.find(Select::Type(9), 0)?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The highest priority, oldest first within it. O(1).
    Any,
    /// The first message of exactly this type, in receive order. O(n).
    Type(u64),
    /// The lowest type not above this one (SysV's negative `msgtyp`), the
    /// first of that type in receive order. O(n).
    TypeAtMost(u64),
    /// The first message of any type but this one (`MSG_EXCEPT`). O(n).
    ExceptType(u64),
}

impl Select {
    fn matches(self, mtype: u64) -> bool {
        match self {
            Select::Any => true,
            Select::Type(t) => mtype == t,
            Select::TypeAtMost(t) => mtype <= t,
            Select::ExceptType(t) => mtype != t,
        }
    }
}

/// A queued message found by [`Locked::find`].
///
/// ```
/// use ipcring::ring::HeapRegion;
/// use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
///
/// let config = QueueConfig { max_msgs: 2, max_bytes: 16, max_msg: 8, priorities: 32 };
/// let heap = HeapRegion::new(MessageQueue::required_size(&config)?)?;
/// // SAFETY: fresh memory, used only through this handle.
/// let queue = unsafe {
///     MessageQueue::init(heap.region(), &config, 0)?;
///     MessageQueue::attach(heap.region())?
/// };
/// let mut locked = queue.try_lock(1).unwrap();
/// locked.send(b"abc", 4, 1, 77, 0)?;
/// let found = locked.find(Select::Any, 0)?.unwrap();
/// assert_eq!((found.mtype, found.priority, found.len, found.sender_pid), (4, 1, 3, 77));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    index: u64,
    /// The block before it in its list, or `NIL`.
    prev: u64,
    /// Its type.
    pub mtype: u64,
    /// Its priority.
    pub priority: u32,
    /// Its length in bytes.
    pub len: usize,
    /// Its sender's pid.
    pub sender_pid: u32,
}

impl Found {
    /// The block holding the message.
    pub fn index(&self) -> u64 {
        self.index
    }
}

/// Why a queue operation did not happen. The queue is unchanged.
///
/// ```
/// use ipcring::ring::HeapRegion;
/// use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
///
/// let config = QueueConfig { max_msgs: 2, max_bytes: 16, max_msg: 8, priorities: 32 };
/// let heap = HeapRegion::new(MessageQueue::required_size(&config)?)?;
/// // SAFETY: fresh memory, used only through this handle.
/// let queue = unsafe {
///     MessageQueue::init(heap.region(), &config, 0)?;
///     MessageQueue::attach(heap.region())?
/// };
/// use ipcring::ring::queue::QueueOpError;
/// let mut locked = queue.try_lock(1).unwrap();
/// assert_eq!(locked.send(b"x", 0, 0, 1, 0), Err(QueueOpError::InvalidType));
/// assert_eq!(locked.send(&[0; 9], 1, 0, 1, 0), Err(QueueOpError::TooLarge { len: 9, max: 8 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueOpError {
    /// No free block, or not enough bytes left.
    #[error("the queue is full")]
    Full,
    /// The message is larger than the queue's maximum.
    #[error("a message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The queue's maximum.
        max: usize,
    },
    /// Type 0 (types start at 1).
    #[error("message type 0 is invalid (types start at 1)")]
    InvalidType,
    /// A priority at or above the queue's number of priorities.
    #[error("priority {priority} is out of range (0 to {})", .priorities - 1)]
    InvalidPriority {
        /// The priority given.
        priority: u32,
        /// The queue's number of priorities.
        priorities: u32,
    },
    /// The queue was removed.
    #[error("the queue was removed")]
    Removed,
    /// The queue's memory holds impossible values.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

impl From<JournalFull> for QueueOpError {
    fn from(_: JournalFull) -> QueueOpError {
        QueueOpError::Corrupted(Corruption {
            field: "journal overflow",
            value: 0,
        })
    }
}

/// A queue's statistics, as `msqid_ds` has them, with repair counts.
///
/// ```
/// use ipcring::ring::HeapRegion;
/// use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
///
/// let config = QueueConfig { max_msgs: 2, max_bytes: 16, max_msg: 8, priorities: 32 };
/// let heap = HeapRegion::new(MessageQueue::required_size(&config)?)?;
/// // SAFETY: fresh memory, used only through this handle.
/// let queue = unsafe {
///     MessageQueue::init(heap.region(), &config, 0)?;
///     MessageQueue::attach(heap.region())?
/// };
/// queue.try_lock(1).unwrap().send(b"abc", 1, 0, 42, 1000)?;
/// let stats = queue.stats();
/// assert_eq!((stats.count, stats.bytes, stats.last_send_pid, stats.last_send_ns), (1, 3, 42, 1000));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// New figures may be added, so the struct is `#[non_exhaustive]`: read
/// its fields, or start from `QueueStats::default()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Messages queued (`msg_qnum`).
    pub count: u64,
    /// Bytes queued, with bytes of loaned blocks (`msg_cbytes`).
    pub bytes: u64,
    /// Capacity in messages; 0 for a rendezvous queue.
    pub max_msgs: u64,
    /// Capacity in bytes (`msg_qbytes`).
    pub max_bytes: u64,
    /// The largest message.
    pub max_msg: u64,
    /// Priorities `0..priorities`.
    pub priorities: u64,
    /// Pid of the last sender (`msg_lspid`), 0 if none.
    pub last_send_pid: u64,
    /// Time of the last send, ns since the Unix epoch (`msg_stime`).
    pub last_send_ns: u64,
    /// Pid of the last receiver (`msg_lrpid`), 0 if none.
    pub last_recv_pid: u64,
    /// Time of the last receive, ns since the Unix epoch (`msg_rtime`).
    pub last_recv_ns: u64,
    /// Creation time, ns since the Unix epoch (`msg_ctime`).
    pub created_ns: u64,
    /// Messages sent in all.
    pub sent: u64,
    /// Messages received in all.
    pub received: u64,
    /// Payload bytes sent in all (wraps; 0 in a queue made by a library
    /// that did not count them).
    pub bytes_sent: u64,
    /// Blocks and deliveries of dead endpoints repaired.
    pub repairs: u64,
    /// Messages lost with a receiver that died holding them.
    pub losses: u64,
    /// Whether the queue was removed.
    pub removed: bool,
}

/// What [`QueueHandle::reclaim`] did for a dead (or returning) token.
///
/// ```
/// use ipcring::ring::HeapRegion;
/// use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
///
/// let config = QueueConfig { max_msgs: 2, max_bytes: 16, max_msg: 8, priorities: 32 };
/// let heap = HeapRegion::new(MessageQueue::required_size(&config)?)?;
/// // SAFETY: fresh memory, used only through this handle.
/// let queue = unsafe {
///     MessageQueue::init(heap.region(), &config, 0)?;
///     MessageQueue::attach(heap.region())?
/// };
/// use ipcring::sync::{Deadline, WaitStrategy};
/// use std::time::Duration;
/// let mut locked = queue.try_lock(5).unwrap();
/// locked.loan(4)?;
/// // Token 5 dies holding the lock and a loaned block.
/// std::mem::forget(locked);
/// let deadline = Deadline::after(Duration::from_secs(1));
/// let reclaimed = queue.reclaim(5, WaitStrategy::Park, deadline)?.unwrap();
/// assert_eq!((reclaimed.freed, reclaimed.lost, reclaimed.held_lock), (1, 0, true));
/// assert_eq!(queue.stats().bytes, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Blocks it held that went back to the free list.
    pub freed: u64,
    /// Messages it had received but not returned, now counted as lost.
    pub lost: u64,
    /// Whether it held the lock when it died.
    pub held_lock: bool,
}

/// A handle on a queue in a region. Cheap to copy; every operation goes
/// through [`QueueHandle::try_lock`] or [`QueueHandle::lock`].
///
/// ```
/// use ipcring::ring::HeapRegion;
/// use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
///
/// let config = QueueConfig { max_msgs: 4, max_bytes: 64, max_msg: 16, priorities: 32 };
/// let heap = HeapRegion::new(MessageQueue::required_size(&config)?)?;
/// // SAFETY: fresh memory, used only through this handle.
/// let queue = unsafe {
///     MessageQueue::init(heap.region(), &config, 0)?;
///     MessageQueue::attach(heap.region())?
/// };
/// let mut locked = queue.try_lock(1).unwrap();
/// locked.send(b"hi", 7, 3, 1, 0)?;
/// let found = locked.find(Select::Type(7), 0)?.unwrap();
/// let mut out = [0u8; 16];
/// locked.receive(&found, &mut out, 1, 0, false)?;
/// assert_eq!(&out[..found.len], b"hi");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy)]
pub struct QueueHandle {
    region: Region,
    header: NonNull<QueueHeader>,
    blocks: ByteBuf,
    config: QueueConfig,
    block_count: usize,
    stride: usize,
}

impl std::fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueHandle")
            .field("config", &self.config)
            .field("blocks", &self.block_count)
            .finish_non_exhaustive()
    }
}

// SAFETY: the handle points at shared memory reached only through atomics;
// the region's owner keeps it mapped while handles live (Region's contract).
unsafe impl Send for QueueHandle {}

/// Creating and attaching queues.
///
/// ```
/// use ipcring::ring::HeapRegion;
/// use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
///
/// let config = QueueConfig { max_msgs: 2, max_bytes: 16, max_msg: 8, priorities: 32 };
/// let heap = HeapRegion::new(MessageQueue::required_size(&config)?)?;
/// // SAFETY: fresh memory, used only through this handle.
/// let queue = unsafe {
///     MessageQueue::init(heap.region(), &config, 0)?;
///     MessageQueue::attach(heap.region())?
/// };
/// assert_eq!(queue.stats().count, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MessageQueue;

impl MessageQueue {
    /// Bytes a region needs for a queue with `config`.
    pub fn required_size(config: &QueueConfig) -> Result<usize, RingError> {
        config.validate()?;
        config
            .blocks()
            .checked_mul(config.stride())
            .and_then(|b| b.checked_add(blocks_offset()))
            .filter(|&total| total <= MAX_QUEUE_BYTES + blocks_offset())
            .ok_or(RingError::InvalidCapacity {
                capacity: config.max_msgs,
                reason: "the queue would not fit in memory",
            })
    }

    /// Writes an empty queue into `region`; `created_ns` is the creation
    /// time to report.
    ///
    /// # Safety
    ///
    /// `region` must be valid for the queue's size and not yet shared.
    pub unsafe fn init(
        region: Region,
        config: &QueueConfig,
        created_ns: u64,
    ) -> Result<(), RingError> {
        let need = MessageQueue::required_size(config)?;
        check_region(&region, need, 64)?;
        let blocks = config.blocks();
        let header = region.as_ptr().cast::<QueueHeader>();
        // SAFETY: the region is large and aligned enough (checked), not
        // shared yet, and every field written is an atomic or a WaitWord,
        // valid for any bytes; we initialise each field in place.
        unsafe {
            std::ptr::addr_of_mut!((*header).info).write(RingInfo::new(
                MAGIC,
                blocks as u64,
                config.stride() as u64,
                8,
                0,
            ));
            std::ptr::addr_of_mut!((*header).config).write(StoredConfig {
                max_msgs: AtomicU64::new(config.max_msgs as u64),
                max_bytes: AtomicU64::new(config.max_bytes as u64),
                max_msg: AtomicU64::new(config.max_msg as u64),
                priorities: AtomicU64::new(u64::from(config.priorities)),
                blocks: AtomicU64::new(blocks as u64),
                created_ns: AtomicU64::new(created_ns),
            });
            std::ptr::addr_of_mut!((*header).data_ready).write(WaitWord::new());
            std::ptr::addr_of_mut!((*header).space_ready).write(WaitWord::new());
        }
        // SAFETY: the lock's bytes are part of the unshared header.
        unsafe { JournalLock::init(&region, std::mem::offset_of!(QueueHeader, lock))? };
        // SAFETY: as above; the fields are now initialised atomics.
        let header = unsafe { &*header };
        for word in [
            &header.bitmap,
            &header.count,
            &header.bytes,
            &header.sent,
            &header.freed,
            &header.received,
            &header.removed,
            &header.last_send_pid,
            &header.last_send_ns,
            &header.last_recv_pid,
            &header.last_recv_ns,
            &header.repairs,
            &header.losses,
            &header.bytes_sent,
        ] {
            word.store(0, Ordering::Relaxed);
        }
        header.next_seq.store(1, Ordering::Relaxed);
        header.free_head.store(0, Ordering::Relaxed);
        for word in &header.in_hand {
            word.store(0, Ordering::Relaxed);
        }
        for word in header.heads.iter().chain(&header.tails) {
            word.store(NIL, Ordering::Relaxed);
        }
        let handle = QueueHandle::new(region, *config, blocks)?;
        for index in 0..blocks {
            let next = if index + 1 == blocks {
                NIL
            } else {
                index as u64 + 1
            };
            let words = handle.block(index as u64);
            for (i, word) in words.iter().enumerate() {
                word.store(if i == NEXT { next } else { 0 }, Ordering::Relaxed);
            }
        }
        // Relaxed: the layer above publishes the region (the channel's
        // Release store of `ready`).
        Ok(())
    }

    /// Attaches to the queue in `region`, validating its parameters against
    /// the region's size. The parameters are read once here and trusted
    /// from then on, whatever the memory later says.
    ///
    /// # Safety
    ///
    /// `region` must hold a queue made by [`MessageQueue::init`] (or any
    /// bytes: they are validated) and satisfy [`Region::new`]'s contract
    /// while the handle lives.
    pub unsafe fn attach(region: Region) -> Result<QueueHandle, RingError> {
        check_region(&region, blocks_offset(), 64)?;
        // SAFETY: large and aligned enough (checked), atomics only.
        let header = unsafe { &*region.as_ptr().cast::<QueueHeader>() };
        let config = read_config(&header.config)?;
        let (capacity, _) = header.info.check(MAGIC, config.stride() as u64, 8)?;
        // Relaxed: written once by the creator before publication.
        let blocks = header.config.blocks.load(Ordering::Relaxed);
        if blocks != config.blocks() as u64 || capacity != blocks {
            return Err(Corruption {
                field: "queue blocks",
                value: blocks,
            }
            .into());
        }
        let need = MessageQueue::required_size(&config)?;
        if need > region.len() {
            return Err(RingError::TooSmall {
                need,
                have: region.len(),
            });
        }
        QueueHandle::new(region, config, blocks as usize)
    }
}

fn read_config(stored: &StoredConfig) -> Result<QueueConfig, RingError> {
    // Relaxed: written once by the creator before publication.
    let load = |w: &AtomicU64| w.load(Ordering::Relaxed);
    let bad = |field, value| RingError::Corrupted(Corruption { field, value });
    let to_usize = |field, value: u64| usize::try_from(value).map_err(|_| bad(field, value));
    let config = QueueConfig {
        max_msgs: to_usize("queue max messages", load(&stored.max_msgs))?,
        max_bytes: to_usize("queue max bytes", load(&stored.max_bytes))?,
        max_msg: to_usize("queue max message", load(&stored.max_msg))?,
        priorities: u32::try_from(load(&stored.priorities))
            .map_err(|_| bad("queue priorities", load(&stored.priorities)))?,
    };
    config
        .validate()
        .map_err(|_| bad("queue parameters", config.max_msgs as u64))?;
    Ok(config)
}

/// The statistics of the queue at the start of `region`, read without
/// attaching (a read-only mapping will do); `None` if it holds no queue.
pub fn queue_stats(region: &Region) -> Option<QueueStats> {
    if region.len() < blocks_offset() || region.as_ptr() as usize % 64 != 0 {
        return None;
    }
    // SAFETY: large and aligned enough (checked), atomics only; we only load.
    let header = unsafe { &*region.as_ptr().cast::<QueueHeader>() };
    // Relaxed: the creator published the region before anyone could find it.
    if header.info.magic.load(Ordering::Relaxed) != MAGIC {
        return None;
    }
    Some(stats_of(header))
}

/// The totals of the queue at the start of `region`: sends and their
/// payload bytes, the futex calls of its two wait words and its lock's,
/// repairs and losses. Loads only.
pub(crate) fn counters_of(region: &Region) -> Option<RingCounters> {
    let stats = queue_stats(region)?;
    // SAFETY: `queue_stats` checked size, alignment and magic; atomics
    // only, and we only load.
    let header = unsafe { &*region.as_ptr().cast::<QueueHeader>() };
    let futex_calls = header
        .data_ready
        .futex_calls()
        .wrapping_add(header.space_ready.futex_calls())
        .wrapping_add(header.lock.futex_calls());
    Some(RingCounters {
        items: Some(stats.sent),
        bytes: Some(stats.bytes_sent),
        futex_calls,
        repairs: stats.repairs,
        losses: stats.losses,
    })
}

fn stats_of(header: &QueueHeader) -> QueueStats {
    // Acquire: pairs with the journal's Release stores in `apply`, so the
    // figures are each a committed value (not a consistent snapshot).
    let load = |w: &AtomicU64| w.load(Ordering::Acquire);
    QueueStats {
        count: load(&header.count),
        bytes: load(&header.bytes),
        max_msgs: load(&header.config.max_msgs),
        max_bytes: load(&header.config.max_bytes),
        max_msg: load(&header.config.max_msg),
        priorities: load(&header.config.priorities),
        last_send_pid: load(&header.last_send_pid),
        last_send_ns: load(&header.last_send_ns),
        last_recv_pid: load(&header.last_recv_pid),
        last_recv_ns: load(&header.last_recv_ns),
        created_ns: load(&header.config.created_ns),
        sent: load(&header.sent),
        received: load(&header.received),
        bytes_sent: load(&header.bytes_sent),
        repairs: load(&header.repairs),
        losses: load(&header.losses),
        removed: load(&header.removed) != 0,
    }
}

impl QueueHandle {
    fn new(
        region: Region,
        config: QueueConfig,
        block_count: usize,
    ) -> Result<QueueHandle, RingError> {
        let stride = config.stride();
        let len = block_count * stride;
        let words = NonNull::new(
            region
                .as_ptr()
                .wrapping_add(blocks_offset())
                .cast::<AtomicU64>(),
        )
        .ok_or(RingError::Misaligned { align: 64 })?;
        // SAFETY: `len` bytes of blocks lie inside the region (the callers
        // checked the region against `required_size`), 8-aligned, and are
        // reached only through queue handles.
        let blocks = unsafe { ByteBuf::new(words, len) };
        Ok(QueueHandle {
            region,
            header: region.ptr.cast(),
            blocks,
            config,
            block_count,
            stride,
        })
    }

    fn header(&self) -> &QueueHeader {
        // SAFETY: attach checked size and alignment; atomics only; the
        // region outlives the handle (its contract).
        unsafe { self.header.as_ref() }
    }

    fn lock_word(&self) -> &JournalLock {
        &self.header().lock
    }

    /// The parameters read at attach.
    pub fn config(&self) -> QueueConfig {
        self.config
    }

    /// The header words of block `index` (which must be below the block
    /// count: callers check indices read from memory first).
    fn block(&self, index: u64) -> &[AtomicU64; 8] {
        self.blocks.words8(index as usize * self.stride)
    }

    fn payload_offset(&self, index: u64) -> usize {
        index as usize * self.stride + BLOCK_HEADER
    }

    /// Takes the lock for `token` if it is free.
    #[inline]
    pub fn try_lock(&self, token: u64) -> Option<Locked<'_>> {
        self.lock_word()
            .try_lock(token)
            .then(|| Locked { queue: self, token })
    }

    /// Takes the lock, waiting until `deadline`.
    pub fn lock(
        &self,
        token: u64,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
    ) -> Option<Locked<'_>> {
        self.lock_word()
            .lock(token, strategy, deadline)
            .then(|| Locked { queue: self, token })
    }

    /// Frees the lock if its word holds `token` although the caller, the
    /// only one acting under `token`, does not hold it (a scribble); true
    /// if it did. The journal is not replayed: no update of ours was under
    /// way.
    pub fn release_unheld(&self, token: u64) -> bool {
        self.lock_word().unlock(token).is_ok()
    }

    /// The lock holder's token, 0 if free (a hint).
    pub fn lock_holder(&self) -> u64 {
        self.lock_word().holder()
    }

    /// Current statistics.
    pub fn stats(&self) -> QueueStats {
        stats_of(self.header())
    }

    /// Whether the queue was removed.
    #[inline]
    pub fn is_removed(&self) -> bool {
        // Acquire: pairs with the Release store in `mark_removed`.
        self.header().removed.load(Ordering::Acquire) != 0
    }

    /// Marks the queue removed and wakes every waiter.
    pub fn mark_removed(&self) {
        // Release: pairs with the Acquire load in `is_removed`.
        self.header().removed.store(1, Ordering::Release);
        self.wake_all();
    }

    /// Wakes every sleeping sender and receiver.
    pub fn wake_all(&self) {
        self.header().data_ready.notify_all();
        self.header().space_ready.notify_all();
    }

    /// Wakes receivers, if any sleep (after a send).
    #[inline]
    pub fn wake_receivers(&self) {
        self.header().data_ready.notify_all();
    }

    /// Wakes senders, if any sleep (after a receive or a free).
    #[inline]
    pub fn wake_senders(&self) {
        self.header().space_ready.notify_all();
    }

    /// The send epoch: changes whenever a send commits.
    #[inline]
    pub fn sent_epoch(&self) -> u64 {
        // Acquire: pairs with the journal's Release store of `sent`.
        self.header().sent.load(Ordering::Acquire)
    }

    /// The free epoch: changes whenever a block is freed or taken.
    #[inline]
    pub fn freed_epoch(&self) -> u64 {
        // Acquire: pairs with the journal's Release store of `freed`.
        self.header().freed.load(Ordering::Acquire)
    }

    /// Waits until the send epoch differs from `seen`, the queue is
    /// removed, `stop` says so, or `deadline` passes.
    pub fn wait_for_send(
        &self,
        seen: u64,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) {
        self.header().data_ready.wait_until(strategy, deadline, || {
            self.sent_epoch() != seen || self.is_removed() || stop()
        });
    }

    /// Waits until the free epoch differs from `seen` (or as above).
    pub fn wait_for_free(
        &self,
        seen: u64,
        strategy: WaitStrategy,
        deadline: Option<Deadline>,
        mut stop: impl FnMut() -> bool,
    ) {
        self.header()
            .space_ready
            .wait_until(strategy, deadline, || {
                self.freed_epoch() != seen || self.is_removed() || stop()
            });
    }

    /// Whether the message sent as `seq` in block `index` was taken by a
    /// receiver (its sequence word changed).
    pub fn taken(&self, index: u64, seq: u64) -> bool {
        if index >= self.block_count as u64 {
            return true;
        }
        // Acquire: pairs with the journal's Release store of the block's
        // `seq` in the receive.
        self.block(index)[SEQ].load(Ordering::Acquire) != seq
    }

    /// Token `token`'s in-hand word.
    fn in_hand(&self, token: u64) -> &AtomicU64 {
        &self.header().in_hand[(token as usize) % TOKENS]
    }

    /// Clears `token`'s in-hand mark once its received message was
    /// returned to the caller. Only `token`'s owner calls it.
    #[inline]
    pub fn returned(&self, token: u64) {
        // Relaxed: only this token's owner writes it outside the lock, and
        // a reaper touches it only after the owner died.
        self.in_hand(token).store(0, Ordering::Relaxed);
    }

    /// Repairs what `token`, whose owner died (or is attaching again under
    /// it), left: releases the lock if it held it (replaying a committed
    /// update), then frees the blocks it had loaned or borrowed and counts
    /// a message it had received but not returned as lost.
    ///
    /// The caller must be the only one acting for `token` (the reaper's
    /// mark on its endpoint slot, or the endpoint that holds the slot).
    /// The lock is taken as `token`, so a reaper that dies in here is
    /// repaired the same way by the next. `None` if the lock could not be
    /// had by `deadline` (another holder): the blocks are then reclaimed
    /// when the token is next attached.
    pub fn reclaim(
        &self,
        token: u64,
        strategy: WaitStrategy,
        deadline: Deadline,
    ) -> Result<Option<Reclaimed>, Corruption> {
        let mut outcome = Reclaimed {
            held_lock: self.lock_word().release_dead(&self.region, token)? != Released::NotHeld,
            ..Reclaimed::default()
        };
        let Some(mut locked) = self.lock(token, strategy, Some(deadline)) else {
            return Ok(None);
        };
        locked.reclaim_locked(&mut outcome)?;
        drop(locked);
        if outcome.freed > 0 {
            self.wake_senders();
        }
        Ok(Some(outcome))
    }

    /// Copies `dst.len()` bytes of block `index`'s payload from `offset`.
    fn read_payload(&self, index: u64, offset: usize, dst: &mut [u8]) {
        read_unaligned(&self.blocks, self.payload_offset(index), offset, dst);
    }

    /// Copies `src` into block `index`'s payload at `offset`.
    fn write_payload(&self, index: u64, offset: usize, src: &[u8]) {
        write_unaligned(&self.blocks, self.payload_offset(index), offset, src);
    }

    /// Reads from a block this token holds (loaned or borrowed): `offset`
    /// and `dst` within `len`, the block's length (checked by the caller).
    pub fn read_held(&self, index: u64, offset: usize, dst: &mut [u8]) {
        if index < self.block_count as u64
            && offset
                .checked_add(dst.len())
                .is_some_and(|end| end <= self.config.max_msg)
        {
            self.read_payload(index, offset, dst);
        }
    }

    /// Writes into a block this token holds loaned (bounds as above).
    pub fn write_held(&self, index: u64, offset: usize, src: &[u8]) {
        if index < self.block_count as u64
            && offset
                .checked_add(src.len())
                .is_some_and(|end| end <= self.config.max_msg)
        {
            self.write_payload(index, offset, src);
        }
    }
}

/// The lock, held by one token; released on drop. Every operation leaves
/// the queue unchanged if it returns an error.
///
/// ```
/// use ipcring::ring::HeapRegion;
/// use ipcring::ring::queue::{MessageQueue, QueueConfig, Select};
///
/// let config = QueueConfig { max_msgs: 2, max_bytes: 16, max_msg: 8, priorities: 32 };
/// let heap = HeapRegion::new(MessageQueue::required_size(&config)?)?;
/// // SAFETY: fresh memory, used only through this handle.
/// let queue = unsafe {
///     MessageQueue::init(heap.region(), &config, 0)?;
///     MessageQueue::attach(heap.region())?
/// };
/// let locked = queue.try_lock(1).unwrap();
/// assert!(queue.try_lock(2).is_none());
/// drop(locked);
/// assert!(queue.try_lock(2).is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Locked<'a> {
    queue: &'a QueueHandle,
    token: u64,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // A scribbled lock word is left as it is; the next operation
        // reports it.
        let _ = self.queue.lock_word().unlock(self.token);
    }
}

fn corrupted(field: &'static str, value: u64) -> QueueOpError {
    QueueOpError::Corrupted(Corruption { field, value })
}

impl Locked<'_> {
    fn header(&self) -> &QueueHeader {
        self.queue.header()
    }

    fn tx(&self) -> Transaction<'_> {
        self.queue.lock_word().transaction(&self.queue.region)
    }

    /// An index read from memory: a block, or `NIL` if `nil_ok`.
    fn check_index(
        &self,
        field: &'static str,
        index: u64,
        nil_ok: bool,
    ) -> Result<u64, QueueOpError> {
        if index < self.queue.block_count as u64 || (nil_ok && index == NIL) {
            Ok(index)
        } else {
            Err(corrupted(field, index))
        }
    }

    fn load(word: &AtomicU64) -> u64 {
        // Relaxed: under the lock, whose Acquire CAS ordered every earlier
        // holder's (and replay's) writes before us.
        word.load(Ordering::Relaxed)
    }

    /// Checks a message's parameters.
    fn check_message(&self, len: usize, mtype: u64, priority: u32) -> Result<(), QueueOpError> {
        if len > self.queue.config.max_msg {
            return Err(QueueOpError::TooLarge {
                len,
                max: self.queue.config.max_msg,
            });
        }
        if mtype == 0 {
            return Err(QueueOpError::InvalidType);
        }
        if priority >= self.queue.config.priorities {
            return Err(QueueOpError::InvalidPriority {
                priority,
                priorities: self.queue.config.priorities,
            });
        }
        Ok(())
    }

    /// The first free block and the one after it, if `extra_bytes` more
    /// fit under the byte limit.
    fn take_free(&self, extra_bytes: usize) -> Result<(u64, u64), QueueOpError> {
        let header = self.header();
        let bytes = Self::load(&header.bytes);
        let max_bytes = self.queue.config.max_bytes as u64;
        if bytes > max_bytes {
            // Every send and loan checks the limit: no run leaves more.
            return Err(corrupted("queue bytes", bytes));
        }
        let free = self.check_index("queue free head", Self::load(&header.free_head), true)?;
        if free == NIL || bytes + extra_bytes as u64 > max_bytes {
            self.check_room_accounting(free)?;
            return Err(QueueOpError::Full);
        }
        let next = self.check_index(
            "queue free link",
            Self::load(&self.queue.block(free)[NEXT]),
            true,
        )?;
        Ok((free, next))
    }

    /// Before reporting the queue full: if nothing is queued, or the free
    /// list is empty while blocks are neither queued nor held, the room
    /// words must agree with the blocks' owner words, or the queue would
    /// stay full for ever with nobody to empty it (a scribble). O(blocks),
    /// and only on those two suspicious cases: a queue full of messages
    /// costs nothing more.
    fn check_room_accounting(&self, free: u64) -> Result<(), QueueOpError> {
        let header = self.header();
        let count = Self::load(&header.count);
        let blocks = self.queue.block_count as u64;
        if count > blocks {
            return Err(corrupted("queue count", count));
        }
        if count != 0 && !(free == NIL && count < blocks) {
            return Ok(());
        }
        let (mut held, mut lent_bytes) = (0u64, 0u64);
        for index in 0..blocks {
            let block = self.queue.block(index);
            let owner = Self::load(&block[OWNER]);
            if owner & !TOKEN_MASK != 0 {
                held += 1;
                if owner & !TOKEN_MASK == LOANED {
                    lent_bytes += Self::load(&block[META]) & TOKEN_MASK;
                }
            }
        }
        if free == NIL && count + held < blocks {
            return Err(corrupted("queue free list", free));
        }
        let bytes = Self::load(&header.bytes);
        if count == 0 && bytes != lent_bytes {
            return Err(corrupted("queue bytes", bytes));
        }
        Ok(())
    }

    /// Stages linking block `index` at the tail of priority `priority`.
    fn stage_link(
        &self,
        tx: &mut Transaction<'_>,
        index: u64,
        priority: u32,
    ) -> Result<(), QueueOpError> {
        let header = self.header();
        let p = priority as usize;
        let head = self.check_index("queue list head", Self::load(&header.heads[p]), true)?;
        tx.set(&self.queue.block(index)[NEXT], NIL)?;
        if head == NIL {
            tx.set(&header.heads[p], index)?;
            tx.set(&header.bitmap, Self::load(&header.bitmap) | 1 << p)?;
        } else {
            let tail = self.check_index("queue list tail", Self::load(&header.tails[p]), false)?;
            tx.set(&self.queue.block(tail)[NEXT], index)?;
        }
        tx.set(&header.tails[p], index)?;
        Ok(())
    }

    /// Stages the statistics of a send of `len` bytes.
    fn stage_sent(
        &self,
        tx: &mut Transaction<'_>,
        len: usize,
        pid: u32,
        now_ns: u64,
    ) -> Result<(), QueueOpError> {
        let header = self.header();
        let count = Self::load(&header.count);
        tx.set(&header.count, count.wrapping_add(1))?;
        tx.set(&header.sent, Self::load(&header.sent).wrapping_add(1))?;
        tx.set(
            &header.bytes_sent,
            Self::load(&header.bytes_sent).wrapping_add(len as u64),
        )?;
        tx.set(&header.last_send_pid, u64::from(pid))?;
        tx.set(&header.last_send_ns, now_ns)?;
        Ok(())
    }

    /// Sends `payload` with `mtype` and `priority`, as process `pid` at
    /// `now_ns`. Returns the block and the send's sequence number.
    pub fn send(
        &mut self,
        payload: &[u8],
        mtype: u64,
        priority: u32,
        pid: u32,
        now_ns: u64,
    ) -> Result<(u64, u64), QueueOpError> {
        if self.queue.is_removed() {
            return Err(QueueOpError::Removed);
        }
        self.check_message(payload.len(), mtype, priority)?;
        let (index, next_free) = self.take_free(payload.len())?;
        let header = self.header();
        // The block is still on the free list, where nobody reads payloads
        // or these header words: a holder that dies here left nothing.
        self.queue.write_payload(index, 0, payload);
        let seq = Self::load(&header.next_seq);
        self.write_block_header(index, mtype, priority, payload.len(), pid, now_ns, seq);
        failpoint!("queue.send.copied", Err(QueueOpError::Full));
        let mut tx = self.tx();
        tx.set(&header.free_head, next_free)?;
        self.stage_link(&mut tx, index, priority)?;
        tx.set(
            &header.bytes,
            Self::load(&header.bytes) + payload.len() as u64,
        )?;
        tx.set(&header.next_seq, seq.wrapping_add(1).max(1))?;
        self.stage_sent(&mut tx, payload.len(), pid, now_ns)?;
        tx.commit(TAG_SEND)?;
        Ok((index, seq))
    }

    #[allow(clippy::too_many_arguments)]
    fn write_block_header(
        &self,
        index: u64,
        mtype: u64,
        priority: u32,
        len: usize,
        pid: u32,
        now_ns: u64,
        seq: u64,
    ) {
        let block = self.queue.block(index);
        // Relaxed: published by the journal commit (Release stores) that
        // links the block, and read only under the lock.
        block[TYPE].store(mtype, Ordering::Relaxed);
        block[META].store(u64::from(priority) << 32 | len as u64, Ordering::Relaxed);
        block[PID].store(u64::from(pid), Ordering::Relaxed);
        block[TIME].store(now_ns, Ordering::Relaxed);
        block[SEQ].store(seq, Ordering::Relaxed);
    }

    /// Reads and checks a queued block's header.
    fn found(&self, index: u64, prev: u64, list: u32) -> Result<Found, QueueOpError> {
        let block = self.queue.block(index);
        let meta = Self::load(&block[META]);
        let priority = (meta >> 32) as u32;
        let len = (meta & TOKEN_MASK) as usize;
        if priority != list || len > self.queue.config.max_msg {
            return Err(corrupted("queue block meta", meta));
        }
        Ok(Found {
            index,
            prev,
            mtype: Self::load(&block[TYPE]),
            priority,
            len,
            sender_pid: Self::load(&block[PID]) as u32,
        })
    }

    /// The `nth` message (from 0) that `select` would receive, in receive
    /// order: priority from high to low, oldest first within a priority
    /// (for [`Select::TypeAtMost`]: by type, then receive order). O(1) for
    /// `Select::Any` with `nth` 0, else O(queued messages).
    pub fn find(&self, select: Select, nth: usize) -> Result<Option<Found>, QueueOpError> {
        let header = self.header();
        let bitmap = Self::load(&header.bitmap);
        let priorities = self.queue.config.priorities;
        if priorities < 64 && bitmap >> priorities != 0 {
            return Err(corrupted("queue bitmap", bitmap));
        }
        let mut steps = 0usize;
        let mut ranked: Vec<(u64, Found)> = Vec::new();
        let mut best: Option<Found> = None;
        let mut seen = 0usize;
        let mut remaining = bitmap;
        while remaining != 0 {
            let p = 63 - remaining.leading_zeros();
            remaining &= !(1u64 << p);
            let mut prev = NIL;
            let mut index = self.check_index(
                "queue list head",
                Self::load(&header.heads[p as usize]),
                true,
            )?;
            while index != NIL {
                steps += 1;
                if steps > self.queue.block_count {
                    return Err(corrupted("queue list cycle", index));
                }
                let found = self.found(index, prev, p)?;
                if select.matches(found.mtype) {
                    match select {
                        Select::TypeAtMost(_) if nth == 0 => {
                            if best.is_none_or(|b| found.mtype < b.mtype) {
                                best = Some(found);
                            }
                        }
                        Select::TypeAtMost(_) => ranked.push((found.mtype, found)),
                        _ => {
                            if seen == nth {
                                return Ok(Some(found));
                            }
                            seen += 1;
                        }
                    }
                }
                prev = index;
                index = self.check_index(
                    "queue list link",
                    Self::load(&self.queue.block(index)[NEXT]),
                    true,
                )?;
            }
        }
        if nth == 0 {
            return Ok(best);
        }
        // Stable: equal types keep receive order.
        ranked.sort_by_key(|(mtype, _)| *mtype);
        Ok(ranked.get(nth).map(|(_, found)| *found))
    }

    /// Checks that `found` still names a queued message where `find` saw
    /// it. A `Found` is plain data that a caller can keep past the lock it
    /// was found under; by then another handle may have received that
    /// message and its block be free or lent, and unlinking it again would
    /// put a free block on a priority list. O(1): the link into the block,
    /// its owner, sequence, type and meta.
    fn check_found(&self, found: &Found) -> Result<(), QueueOpError> {
        let stale = |value| Err(corrupted("queue found message no longer queued", value));
        let index = self.check_index("queue found block", found.index, false)?;
        if found.priority >= self.queue.config.priorities {
            return stale(u64::from(found.priority));
        }
        let link = if found.prev == NIL {
            &self.header().heads[found.priority as usize]
        } else {
            let prev = self.check_index("queue found block", found.prev, false)?;
            &self.queue.block(prev)[NEXT]
        };
        let block = self.queue.block(index);
        let meta = u64::from(found.priority) << 32 | found.len as u64;
        if Self::load(link) != index
            || Self::load(&block[OWNER]) != 0
            || Self::load(&block[SEQ]) == 0
            || Self::load(&block[META]) != meta
            || Self::load(&block[TYPE]) != found.mtype
        {
            return stale(index);
        }
        Ok(())
    }

    /// Copies the payload of a message found under this lock into `dst`
    /// (up to `dst.len()` bytes); returns how many were copied.
    pub fn peek(&self, found: &Found, dst: &mut [u8]) -> usize {
        let n = found.len.min(dst.len());
        self.queue.read_payload(found.index, 0, &mut dst[..n]);
        n
    }

    /// Receives the message `found` (found under this same lock): copies
    /// up to `dst.len()` bytes of it into `dst`, then unlinks it and frees
    /// its block, or hands the block to this token to read in place
    /// (`borrow`). A copying receive marks the token's in-hand word, which
    /// the caller clears with [`QueueHandle::returned`] once the message is
    /// returned; a reaper counts a mark left by a dead token as a loss.
    pub fn receive(
        &mut self,
        found: &Found,
        dst: &mut [u8],
        pid: u32,
        now_ns: u64,
        borrow: bool,
    ) -> Result<(), QueueOpError> {
        if self.queue.is_removed() {
            return Err(QueueOpError::Removed);
        }
        self.check_found(found)?;
        if !borrow {
            // Still queued: a receiver dying while copying leaves it for the
            // next (at least once).
            self.peek(found, dst);
        }
        failpoint!("queue.recv.copied", Err(QueueOpError::Full));
        let header = self.header();
        let index = found.index;
        let p = found.priority as usize;
        let next = self.check_index(
            "queue list link",
            Self::load(&self.queue.block(index)[NEXT]),
            true,
        )?;
        let mut tx = self.tx();
        if found.prev == NIL {
            tx.set(&header.heads[p], next)?;
            if next == NIL {
                tx.set(&header.bitmap, Self::load(&header.bitmap) & !(1u64 << p))?;
            }
        } else {
            tx.set(&self.queue.block(found.prev)[NEXT], next)?;
        }
        if next == NIL {
            tx.set(&header.tails[p], found.prev)?;
        }
        let block = self.queue.block(index);
        tx.set(&block[SEQ], 0)?;
        if borrow {
            tx.set(&block[NEXT], NIL)?;
            tx.set(&block[OWNER], self.token | BORROWED)?;
        } else {
            tx.set(&block[NEXT], Self::load(&header.free_head))?;
            tx.set(&header.free_head, index)?;
            tx.set(&header.freed, Self::load(&header.freed).wrapping_add(1))?;
            tx.set(self.queue.in_hand(self.token), 1)?;
        }
        let count = Self::load(&header.count);
        let bytes = Self::load(&header.bytes);
        if count == 0 || bytes < found.len as u64 {
            return Err(corrupted("queue count", count));
        }
        tx.set(&header.count, count - 1)?;
        tx.set(&header.bytes, bytes - found.len as u64)?;
        tx.set(
            &header.received,
            Self::load(&header.received).wrapping_add(1),
        )?;
        tx.set(&header.last_recv_pid, u64::from(pid))?;
        tx.set(&header.last_recv_ns, now_ns)?;
        tx.commit(TAG_RECEIVE)?;
        Ok(())
    }

    /// Takes a free block for this token to write `len` bytes into, and
    /// reserves those bytes. Returns the block.
    pub fn loan(&mut self, len: usize) -> Result<u64, QueueOpError> {
        if self.queue.is_removed() {
            return Err(QueueOpError::Removed);
        }
        if len > self.queue.config.max_msg {
            return Err(QueueOpError::TooLarge {
                len,
                max: self.queue.config.max_msg,
            });
        }
        let (index, next_free) = self.take_free(len)?;
        let header = self.header();
        let block = self.queue.block(index);
        let mut tx = self.tx();
        tx.set(&header.free_head, next_free)?;
        tx.set(&block[NEXT], NIL)?;
        tx.set(&block[OWNER], self.token | LOANED)?;
        tx.set(&block[META], len as u64)?;
        tx.set(&header.bytes, Self::load(&header.bytes) + len as u64)?;
        tx.set(&header.freed, Self::load(&header.freed).wrapping_add(1))?;
        tx.commit(TAG_LOAN)?;
        Ok(index)
    }

    /// The owner word of a block this token claims to hold.
    fn check_held(&self, index: u64, flag: u64) -> Result<u64, QueueOpError> {
        let index = self.check_index("queue held block", index, false)?;
        let owner = Self::load(&self.queue.block(index)[OWNER]);
        if owner != self.token | flag {
            return Err(corrupted("queue block owner", owner));
        }
        Ok(Self::load(&self.queue.block(index)[META]) & TOKEN_MASK)
    }

    /// Sends block `index`, loaned to this token, as a message of
    /// `mtype` and `priority`; returns its sequence number.
    pub fn send_loaned(
        &mut self,
        index: u64,
        mtype: u64,
        priority: u32,
        pid: u32,
        now_ns: u64,
    ) -> Result<u64, QueueOpError> {
        if self.queue.is_removed() {
            return Err(QueueOpError::Removed);
        }
        let len = self.check_held(index, LOANED)? as usize;
        self.check_message(len, mtype, priority)?;
        let header = self.header();
        let seq = Self::load(&header.next_seq);
        self.write_block_header(index, mtype, priority, len, pid, now_ns, seq);
        let mut tx = self.tx();
        tx.set(&self.queue.block(index)[OWNER], 0)?;
        self.stage_link(&mut tx, index, priority)?;
        tx.set(&header.next_seq, seq.wrapping_add(1).max(1))?;
        self.stage_sent(&mut tx, len, pid, now_ns)?;
        tx.commit(TAG_SEND)?;
        Ok(seq)
    }

    /// Gives back block `index`, loaned (unsent: its reserved bytes are
    /// released) or borrowed by this token.
    pub fn free_held(&mut self, index: u64) -> Result<(), QueueOpError> {
        let index = self.check_index("queue held block", index, false)?;
        let owner = Self::load(&self.queue.block(index)[OWNER]);
        let mut tx = self.tx();
        if owner == self.token | LOANED {
            let len = Self::load(&self.queue.block(index)[META]) & TOKEN_MASK;
            let bytes = Self::load(&self.header().bytes);
            tx.set(&self.header().bytes, bytes.saturating_sub(len))?;
        } else if owner != self.token | BORROWED {
            return Err(corrupted("queue block owner", owner));
        }
        self.stage_free(&mut tx, index)?;
        tx.commit(TAG_FREE)?;
        Ok(())
    }

    fn stage_free(&self, tx: &mut Transaction<'_>, index: u64) -> Result<(), QueueOpError> {
        let header = self.header();
        let block = self.queue.block(index);
        tx.set(&block[OWNER], 0)?;
        tx.set(&block[SEQ], 0)?;
        tx.set(&block[NEXT], Self::load(&header.free_head))?;
        tx.set(&header.free_head, index)?;
        tx.set(&header.freed, Self::load(&header.freed).wrapping_add(1))?;
        Ok(())
    }

    /// Takes back the message sent as `seq` in block `index` if no
    /// receiver took it yet (a rendezvous send that timed out). True if
    /// withdrawn; false if it was taken meanwhile.
    pub fn withdraw(&mut self, index: u64, seq: u64) -> Result<bool, QueueOpError> {
        let index = self.check_index("queue sent block", index, false)?;
        if Self::load(&self.queue.block(index)[SEQ]) != seq {
            return Ok(false);
        }
        let meta = Self::load(&self.queue.block(index)[META]);
        let priority = (meta >> 32) as u32;
        if priority >= self.queue.config.priorities {
            return Err(corrupted("queue block meta", meta));
        }
        // Find its predecessor in its list.
        let header = self.header();
        let mut prev = NIL;
        let mut at = self.check_index(
            "queue list head",
            Self::load(&header.heads[priority as usize]),
            true,
        )?;
        let mut steps = 0;
        while at != index {
            steps += 1;
            if at == NIL || steps > self.queue.block_count {
                // Queued with our sequence yet not in its list.
                return Err(corrupted("queue list", index));
            }
            prev = at;
            at = self.check_index(
                "queue list link",
                Self::load(&self.queue.block(at)[NEXT]),
                true,
            )?;
        }
        let found = self.found(index, prev, priority)?;
        let next = self.check_index(
            "queue list link",
            Self::load(&self.queue.block(index)[NEXT]),
            true,
        )?;
        let mut tx = self.tx();
        let p = priority as usize;
        if prev == NIL {
            tx.set(&header.heads[p], next)?;
            if next == NIL {
                tx.set(&header.bitmap, Self::load(&header.bitmap) & !(1u64 << p))?;
            }
        } else {
            tx.set(&self.queue.block(prev)[NEXT], next)?;
        }
        if next == NIL {
            tx.set(&header.tails[p], prev)?;
        }
        let count = Self::load(&header.count);
        let bytes = Self::load(&header.bytes);
        if count == 0 || bytes < found.len as u64 {
            return Err(corrupted("queue count", count));
        }
        tx.set(&header.count, count - 1)?;
        tx.set(&header.bytes, bytes - found.len as u64)?;
        self.stage_free(&mut tx, index)?;
        tx.commit(TAG_WITHDRAW)?;
        Ok(true)
    }

    /// The body of [`QueueHandle::reclaim`], under the lock.
    fn reclaim_locked(&mut self, outcome: &mut Reclaimed) -> Result<(), Corruption> {
        let as_corruption = |e: QueueOpError| match e {
            QueueOpError::Corrupted(c) => c,
            _ => Corruption {
                field: "queue reclaim",
                value: 0,
            },
        };
        let header = self.header();
        if outcome.held_lock {
            // Taking the lock back from a dead holder is a repair too.
            let mut tx = self.tx();
            tx.set(&header.repairs, Self::load(&header.repairs).wrapping_add(1))
                .map_err(|e| as_corruption(e.into()))?;
            tx.commit(TAG_REPAIR)?;
        }
        for index in 0..self.queue.block_count as u64 {
            let owner = Self::load(&self.queue.block(index)[OWNER]);
            if owner & TOKEN_MASK != self.token || owner & !TOKEN_MASK == 0 {
                continue;
            }
            let mut tx = self.tx();
            if owner & !TOKEN_MASK == LOANED {
                let len = Self::load(&self.queue.block(index)[META]) & TOKEN_MASK;
                tx.set(&header.bytes, Self::load(&header.bytes).saturating_sub(len))
                    .map_err(|e| as_corruption(e.into()))?;
            } else {
                tx.set(&header.losses, Self::load(&header.losses).wrapping_add(1))
                    .map_err(|e| as_corruption(e.into()))?;
                outcome.lost += 1;
            }
            tx.set(&header.repairs, Self::load(&header.repairs).wrapping_add(1))
                .map_err(|e| as_corruption(e.into()))?;
            self.stage_free(&mut tx, index).map_err(as_corruption)?;
            tx.commit(TAG_REPAIR)?;
            outcome.freed += 1;
        }
        let in_hand = self.queue.in_hand(self.token);
        if Self::load(in_hand) != 0 {
            let mut tx = self.tx();
            let staged = (|| {
                tx.set(in_hand, 0)?;
                tx.set(&header.losses, Self::load(&header.losses).wrapping_add(1))?;
                tx.set(&header.repairs, Self::load(&header.repairs).wrapping_add(1))
            })();
            staged.map_err(|e| as_corruption(e.into()))?;
            tx.commit(TAG_REPAIR)?;
            outcome.lost += 1;
        }
        Ok(())
    }
}

/// Copies `src` to byte `offset` of the payload at `base` (8-aligned),
/// merging partial first and last words.
fn write_unaligned(buffer: &ByteBuf, base: usize, offset: usize, src: &[u8]) {
    if src.is_empty() {
        return;
    }
    let misalign = offset % 8;
    let aligned = base + offset - misalign;
    if misalign == 0 {
        buffer.write(aligned, src);
        return;
    }
    let head = (8 - misalign).min(src.len());
    let mut word = [0u8; 8];
    buffer.read(aligned, &mut word);
    word[misalign..misalign + head].copy_from_slice(&src[..head]);
    buffer.write(aligned, &word);
    if src.len() > head {
        buffer.write(aligned + 8, &src[head..]);
    }
}

/// Copies from byte `offset` of the payload at `base` into `dst`.
fn read_unaligned(buffer: &ByteBuf, base: usize, offset: usize, dst: &mut [u8]) {
    if dst.is_empty() {
        return;
    }
    let misalign = offset % 8;
    let aligned = base + offset - misalign;
    if misalign == 0 {
        buffer.read(aligned, dst);
        return;
    }
    let head = (8 - misalign).min(dst.len());
    let mut word = [0u8; 8];
    buffer.read(aligned, &mut word);
    dst[..head].copy_from_slice(&word[misalign..misalign + head]);
    if dst.len() > head {
        buffer.read(aligned + 8, &mut dst[head..]);
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, not(loom)))]
mod review7_tests;
