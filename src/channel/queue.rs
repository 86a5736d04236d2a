//! A message queue in the manner of POSIX `mq_*` and SysV `msg*`, over
//! [`ring::queue`](crate::ring::queue): variable-size messages, each with
//! a type (from 1) and a priority, received by priority or selected by
//! type, by any number of handles in any number of processes, each message
//! to exactly one receiver.
//!
//! This module owns the endpoints: names, attaching, waiting (blocking,
//! non-blocking and timed forms), rendezvous, removal, and the reaping of
//! dead handles. The structure itself lives in the ring layer.
//!
//! Every handle can send and receive (like an `mqd_t`); a queue takes up
//! to 31 handles at a time. Waiting for the queue's lock, for room or for
//! a message happens in slices of at most 100 ms, and between slices the
//! handle reaps dead handles (releasing the lock from a dead holder and
//! taking back its blocks), so a death never wedges the survivors.
//!
//! ```
//! use ipcring::channel::ChannelOptions;
//! use ipcring::channel::queue::{Queue, QueueConfig, Select};
//!
//! let address = format!("doc-queue-{}", std::process::id()).parse()?;
//! let mut queue = Queue::create(&address, &QueueConfig::new(16, 256), &ChannelOptions::new())?;
//! queue.send(b"low", 1, 0)?;
//! queue.send(b"urgent", 2, 9)?;
//! let mut buf = [0u8; 256];
//! let got = queue.recv(Select::Any, &mut buf)?;
//! assert_eq!((got.mtype, got.priority, &buf[..got.len]), (2, 9, &b"urgent"[..]));
//! let got = queue.try_recv(Select::Type(1), &mut buf)?;
//! assert_eq!(&buf[..got.len], b"low");
//! Queue::remove(&address)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, SystemTime};

use super::{ChannelError, ChannelOptions, Endpoint, Role};
use crate::ring::journal::owner_token;
use crate::ring::queue::{Found, Locked, MessageQueue, QueueHandle, QueueOpError};
use crate::ring::{Corruption, Region, Repair, RingStats, Side};
use crate::segment::{Address, OpenOptions, Segment, SegmentError};
use crate::sync::{Deadline, WaitStrategy};

pub use crate::ring::queue::{QueueConfig, QueueStats, Select};

/// The segment kind of a message queue ("MSGQ").
pub const KIND: u32 = u32::from_le_bytes(*b"MSGQ");

/// How long a reaper tries for the lock to take back a dead handle's
/// blocks before leaving them to the next holder of its slot.
const REPAIR_LOCK_WAIT: Duration = Duration::from_millis(200);

impl QueueConfig {
    /// `max_msgs` messages (0: a rendezvous queue) of at most `max_msg`
    /// bytes each; room for every block at full size
    /// (`max_bytes = blocks * max_msg`, so a rendezvous queue's senders
    /// never wait on each other for bytes) and 32 priorities.
    pub fn new(max_msgs: usize, max_msg: usize) -> QueueConfig {
        let blocks = if max_msgs == 0 {
            crate::ring::queue::RENDEZVOUS_BLOCKS
        } else {
            max_msgs
        };
        QueueConfig {
            max_msgs,
            max_bytes: blocks.saturating_mul(max_msg),
            max_msg,
            priorities: crate::ring::queue::MIN_PRIORITIES,
        }
    }

    /// The byte capacity (SysV `msg_qbytes`): the queued messages' bytes
    /// never exceed it.
    pub fn max_bytes(mut self, max_bytes: usize) -> QueueConfig {
        self.max_bytes = max_bytes;
        self
    }

    /// The number of priorities, 32 to 64: priorities are `0..priorities`.
    pub fn priorities(mut self, priorities: u32) -> QueueConfig {
        self.priorities = priorities;
        self
    }
}

/// Why a queue could not be created, opened or removed.
///
/// ```
/// use ipcring::channel::ChannelOptions;
/// use ipcring::channel::queue::*;
///
/// let address = format!("doc-queue-openerr-{}", std::process::id()).parse()?;
/// let mut queue = Queue::create(&address, &QueueConfig::new(1, 8), &ChannelOptions::new())?;
/// let other = QueueConfig::new(2, 8);
/// let opened = Queue::open_or_create(&address, &other, &ChannelOptions::new());
/// assert!(matches!(opened, Err(QueueOpenError::Incompatible { field: "max_msgs", .. })));
/// Queue::remove(&address)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueOpenError {
    /// The segment or its endpoints could not be set up.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// `open_or_create` found a queue created with other parameters.
    #[error("the existing queue's {field} is {found}, asked for {expected}")]
    Incompatible {
        /// `"max_msgs"`, `"max_bytes"`, `"max_msg"` or `"priorities"`.
        field: &'static str,
        /// The existing queue's value.
        found: u64,
        /// The value asked for.
        expected: u64,
    },
}

impl From<SegmentError> for QueueOpenError {
    fn from(e: SegmentError) -> QueueOpenError {
        QueueOpenError::Channel(e.into())
    }
}

/// Why a message was not sent. Nothing was queued (except after a
/// rendezvous send's `Removed`: see [`Queue::send`]).
///
/// ```
/// use ipcring::channel::ChannelOptions;
/// use ipcring::channel::queue::*;
///
/// let address = format!("doc-queue-senderr-{}", std::process::id()).parse()?;
/// let mut queue = Queue::create(&address, &QueueConfig::new(1, 8), &ChannelOptions::new())?;
/// queue.try_send(b"one", 1, 0)?;
/// assert_eq!(queue.try_send(b"two", 1, 0), Err(QueueSendError::Full));
/// assert_eq!(queue.try_send(b"x", 1, 32), Err(QueueSendError::InvalidPriority { priority: 32, priorities: 32 }));
/// Queue::remove(&address)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueSendError {
    /// No room now (non-blocking forms); for a rendezvous queue: no
    /// receiver took the message at once.
    #[error("the queue is full")]
    Full,
    /// Still no room (or, rendezvous, no receiver) when the timeout passed.
    #[error("timed out")]
    Timeout,
    /// Larger than the queue's maximum message size.
    #[error("a message of {len} bytes exceeds the queue's maximum of {max}")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The queue's maximum.
        max: usize,
    },
    /// Type 0: types start at 1.
    #[error("message type 0 is invalid (types start at 1)")]
    InvalidType,
    /// A priority outside `0..priorities`.
    #[error("priority {priority} is out of range (the queue has {priorities})")]
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

/// Why no message was received. The queue is unchanged.
///
/// ```
/// use ipcring::channel::ChannelOptions;
/// use ipcring::channel::queue::*;
///
/// let address = format!("doc-queue-recverr-{}", std::process::id()).parse()?;
/// let mut queue = Queue::create(&address, &QueueConfig::new(1, 8), &ChannelOptions::new())?;
/// let mut buf = [0u8; 8];
/// assert_eq!(queue.try_recv(Select::Any, &mut buf), Err(QueueRecvError::NoMessage));
/// let waited = queue.recv_timeout(Select::Any, &mut buf, std::time::Duration::from_millis(1));
/// assert_eq!(waited, Err(QueueRecvError::Timeout));
/// Queue::remove(&address)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueRecvError {
    /// No message matches now (non-blocking forms, and peeks).
    #[error("no matching message")]
    NoMessage,
    /// Still no matching message when the timeout passed.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The selected message is longer than the buffer; it stays queued.
    /// Receive into a larger buffer, or with [`Receive::truncate`].
    #[error("the message has {len} bytes, the buffer {capacity}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The buffer's length.
        capacity: usize,
    },
    /// The queue was removed.
    #[error("the queue was removed")]
    Removed,
    /// The queue's memory holds impossible values.
    #[error(transparent)]
    Corrupted(#[from] Corruption),
}

/// What a receive or peek found.
///
/// ```
/// use ipcring::channel::ChannelOptions;
/// use ipcring::channel::queue::*;
///
/// let address = format!("doc-queue-received-{}", std::process::id()).parse()?;
/// let mut queue = Queue::create(&address, &QueueConfig::new(1, 8), &ChannelOptions::new())?;
/// queue.send(b"12345678", 3, 1)?;
/// let mut short = [0u8; 4];
/// let got = queue.receive(&Receive::new(Select::Any).truncate(true), &mut short)?;
/// assert_eq!((got.mtype, got.priority, got.len, got.copied), (3, 1, 8, 4));
/// assert!(got.truncated());
/// Queue::remove(&address)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The message's type.
    pub mtype: u64,
    /// Its priority.
    pub priority: u32,
    /// Its length as sent.
    pub len: usize,
    /// Bytes copied into the buffer: `len`, or fewer after a truncating
    /// receive.
    pub copied: usize,
    /// The sender's pid.
    pub sender_pid: u32,
}

impl Received {
    /// Whether the buffer got fewer bytes than the message had.
    pub fn truncated(&self) -> bool {
        self.copied < self.len
    }
}

/// How a receive selects and waits: the general form behind
/// `try_recv`, `recv` and `recv_timeout`.
///
/// ```
/// use std::time::Duration;
/// use ipcring::channel::queue::{Receive, Select};
///
/// let receive = Receive::new(Select::TypeAtMost(10))
///     .timeout(Duration::from_millis(50))
///     .truncate(true);
/// # let _ = receive;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Receive {
    select: Select,
    wait: Wait,
    truncate: bool,
}

#[derive(Clone, Copy, Debug)]
enum Wait {
    No,
    For(Option<Duration>),
}

impl Receive {
    /// Selects with `select`, waits as long as it takes, refuses to
    /// truncate.
    pub fn new(select: Select) -> Receive {
        Receive {
            select,
            wait: Wait::For(None),
            truncate: false,
        }
    }

    /// Never wait: no match is [`QueueRecvError::NoMessage`].
    pub fn nonblocking(mut self) -> Receive {
        self.wait = Wait::No;
        self
    }

    /// Wait at most `timeout` (any size: a huge one waits forever).
    pub fn timeout(mut self, timeout: Duration) -> Receive {
        self.wait = Wait::For(Some(timeout));
        self
    }

    /// Copy what fits of a message longer than the buffer, drop the rest,
    /// and report its full length (`MSG_NOERROR`), instead of
    /// [`QueueRecvError::TooLarge`].
    pub fn truncate(mut self, truncate: bool) -> Receive {
        self.truncate = truncate;
        self
    }
}

/// What went wrong while waiting (shared by sends and receives).
enum Stopped {
    Timeout,
    Removed,
    Corrupted(Corruption),
}

impl From<Stopped> for QueueSendError {
    fn from(s: Stopped) -> QueueSendError {
        match s {
            Stopped::Timeout => QueueSendError::Timeout,
            Stopped::Removed => QueueSendError::Removed,
            Stopped::Corrupted(c) => QueueSendError::Corrupted(c),
        }
    }
}

impl From<Stopped> for QueueRecvError {
    fn from(s: Stopped) -> QueueRecvError {
        match s {
            Stopped::Timeout => QueueRecvError::Timeout,
            Stopped::Removed => QueueRecvError::Removed,
            Stopped::Corrupted(c) => QueueRecvError::Corrupted(c),
        }
    }
}

impl From<QueueOpError> for QueueSendError {
    fn from(e: QueueOpError) -> QueueSendError {
        match e {
            QueueOpError::Full => QueueSendError::Full,
            QueueOpError::TooLarge { len, max } => QueueSendError::TooLarge { len, max },
            QueueOpError::InvalidType => QueueSendError::InvalidType,
            QueueOpError::InvalidPriority {
                priority,
                priorities,
            } => QueueSendError::InvalidPriority {
                priority,
                priorities,
            },
            QueueOpError::Removed => QueueSendError::Removed,
            QueueOpError::Corrupted(c) => QueueSendError::Corrupted(c),
        }
    }
}

impl From<QueueOpError> for QueueRecvError {
    fn from(e: QueueOpError) -> QueueRecvError {
        match e {
            QueueOpError::Removed => QueueRecvError::Removed,
            QueueOpError::Corrupted(c) => QueueRecvError::Corrupted(c),
            // A receive never fails for room, size, type or priority.
            QueueOpError::Full
            | QueueOpError::TooLarge { .. }
            | QueueOpError::InvalidType
            | QueueOpError::InvalidPriority { .. } => QueueRecvError::Corrupted(Corruption {
                field: "unexpected queue error in a receive",
                value: 0,
            }),
        }
    }
}

/// Creates a queue segment without attaching; `None` makes it anonymous
/// (memfd).
pub fn create_segment(
    address: Option<&Address>,
    config: &QueueConfig,
    options: &ChannelOptions,
) -> Result<Segment, ChannelError> {
    let bytes = MessageQueue::required_size(config)?;
    let created = now_ns();
    super::create_segment(address, KIND, bytes, options, |region| {
        // SAFETY: the segment is new and its queue not published yet.
        unsafe { MessageQueue::init(region, config, created) }
    })
}

/// The statistics of the queue in `segment`, read without attaching (a
/// read-only segment will do).
pub fn stats(segment: &Segment) -> Result<QueueStats, ChannelError> {
    if segment.kind() != KIND {
        return Err(SegmentError::Incompatible(crate::segment::Mismatch::Kind {
            found: segment.kind(),
            expected: KIND,
        })
        .into());
    }
    let region = super::ring_region(segment)?;
    crate::ring::queue::queue_stats(&region).ok_or_else(|| {
        crate::ring::RingError::Corrupted(Corruption {
            field: "queue magic",
            value: 0,
        })
        .into()
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The repair handle: takes back what a dead handle left (the lock, its
/// blocks, a message it had received but not returned).
struct Repairer(QueueHandle);

impl super::ClaimRepair for Repairer {
    fn claim_record(&self, _side: Side, _id: u8) -> u64 {
        // The queue keeps its claims in block owner words and the lock.
        0
    }

    fn repair(&self, side: Side, id: u8, _record: u64) -> Repair {
        let deadline = Deadline::after(REPAIR_LOCK_WAIT);
        match self
            .0
            .reclaim(owner_token(side, id), WaitStrategy::default(), deadline)
        {
            Ok(Some(r)) if r.lost > 0 => Repair::Lost,
            Ok(Some(r)) if r.freed > 0 || r.held_lock => Repair::Skipped,
            _ => Repair::Nothing,
        }
    }

    fn stats(&self) -> RingStats {
        let stats = self.0.stats();
        RingStats {
            repairs: stats.repairs,
            losses: stats.losses,
        }
    }
}

fn attach_ring(region: Region) -> Result<QueueHandle, ChannelError> {
    // SAFETY: the region lies in the segment the endpoint owns, which
    // outlives every handle made from it (the endpoint drops the repairer
    // first, and `Queue` keeps its handle next to the endpoint).
    Ok(unsafe { MessageQueue::attach(region)? })
}

/// A handle on a message queue: sends and receives (like an `mqd_t`).
/// Dropping it leaves the queue as it is.
///
/// ```
/// use ipcring::channel::ChannelOptions;
/// use ipcring::channel::queue::{Queue, QueueConfig, QueueRecvError, Select};
///
/// let address = format!("doc-queue-handle-{}", std::process::id()).parse()?;
/// let mut a = Queue::create(&address, &QueueConfig::new(4, 64), &ChannelOptions::new())?;
/// let mut b = Queue::open(&address)?;
/// a.send(b"ping", 5, 0)?;
/// let mut buf = [0u8; 2];
/// assert_eq!(
///     b.try_recv(Select::Any, &mut buf),
///     Err(QueueRecvError::TooLarge { len: 4, capacity: 2 })
/// );
/// let mut buf = [0u8; 64];
/// assert_eq!(b.peek(Select::Any, 0, &mut buf)?.len, 4);
/// assert_eq!(b.try_recv(Select::Type(5), &mut buf)?.len, 4);
/// assert_eq!(b.try_recv(Select::Any, &mut buf), Err(QueueRecvError::NoMessage));
/// Queue::remove(&address)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue {
    queue: QueueHandle,
    token: u64,
    pid: u32,
    /// A loan or borrow was made: check for leaked blocks when dropped.
    held_blocks: bool,
    // Last: the queue handle points into its segment.
    endpoint: Endpoint,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("config", &self.queue.config())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Creates a named queue (failing if the name is taken) and attaches.
    pub fn create(
        address: &Address,
        config: &QueueConfig,
        options: &ChannelOptions,
    ) -> Result<Queue, QueueOpenError> {
        let segment = create_segment(Some(address), config, options)?;
        Queue::attach_with(segment, options.strategy)
    }

    /// Opens an existing named queue.
    pub fn open(address: &Address) -> Result<Queue, QueueOpenError> {
        Queue::attach(super::open_segment(address, KIND)?)
    }

    /// Opens the named queue if it exists, else creates it; returns the
    /// handle and whether this call created it. An existing queue is
    /// accepted only if its `max_msgs`, `max_bytes`, `max_msg` and
    /// `priorities` equal `config`'s; otherwise
    /// [`QueueOpenError::Incompatible`] names the first that differs.
    /// Permissions and wait strategy are not compared. Only a call that
    /// creates the queue applies `options`' mode, ownership and huge
    /// pages; prefaulting and memory locking apply either way.
    pub fn open_or_create(
        address: &Address,
        config: &QueueConfig,
        options: &ChannelOptions,
    ) -> Result<(Queue, bool), QueueOpenError> {
        let mut last = None;
        // Bounded: each lap means another process removed the queue
        // between our create and our open.
        for _ in 0..16 {
            match Queue::create(address, config, options) {
                Ok(queue) => return Ok((queue, true)),
                Err(QueueOpenError::Channel(ChannelError::Segment(
                    SegmentError::AlreadyExists(_),
                ))) => {}
                Err(e) => return Err(e),
            }
            let opened = super::open_segment_with(address, KIND, options)
                .map_err(QueueOpenError::from)
                .and_then(Queue::attach);
            match opened {
                Ok(mut queue) => {
                    queue.set_wait_strategy(options.strategy);
                    check_same(&queue.config(), config)?;
                    return Ok((queue, false));
                }
                Err(
                    e @ QueueOpenError::Channel(ChannelError::Segment(SegmentError::NotFound(_))),
                ) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| SegmentError::NotFound(address.to_string()).into()))
    }

    /// Attaches to a queue segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Queue, QueueOpenError> {
        Queue::attach_with(segment, WaitStrategy::default())
    }

    fn attach_with(segment: Segment, strategy: WaitStrategy) -> Result<Queue, QueueOpenError> {
        if segment.kind() != KIND {
            return Err(SegmentError::Incompatible(crate::segment::Mismatch::Kind {
                found: segment.kind(),
                expected: KIND,
            })
            .into());
        }
        let (endpoint, region) = Endpoint::attach(
            segment,
            Role::Producer,
            false,
            strategy,
            Deadline::after(super::READY_WAIT),
            |region| {
                Ok(Some(
                    Box::new(Repairer(attach_ring(region)?)) as Box<dyn super::ClaimRepair>
                ))
            },
        )?;
        let queue = attach_ring(region)?;
        let token = owner_token(Side::Producer, endpoint.id());
        // Whatever an earlier holder of our slot left that its reaper could
        // not take back (it found the lock busy) is ours to take back now.
        let _ = queue.reclaim(token, strategy, Deadline::after(REPAIR_LOCK_WAIT));
        Ok(Queue {
            queue,
            token,
            pid: std::process::id(),
            held_blocks: false,
            endpoint,
        })
    }

    /// Removes the named queue: its name disappears at once (POSIX
    /// `mq_unlink`), and every handle, blocked or not, gets
    /// [`QueueSendError::Removed`] / [`QueueRecvError::Removed`] from then
    /// on. The memory goes when the last handle is dropped.
    ///
    /// A name that holds another kind of segment is left alone
    /// (`Incompatible`); a queue whose memory cannot be read is still
    /// unlinked.
    pub fn remove(address: &Address) -> Result<(), QueueOpenError> {
        let options = OpenOptions::new()
            .kind(KIND)
            .register(false)
            .timeout(Duration::ZERO);
        match Segment::open(address, &options) {
            Ok(segment) => {
                if let Ok(queue) = super::ring_region(&segment).and_then(attach_ring) {
                    queue.mark_removed();
                }
            }
            Err(e @ SegmentError::Incompatible(crate::segment::Mismatch::Kind { .. })) => {
                return Err(e.into());
            }
            Err(_) => {}
        }
        Segment::remove(address)?;
        Ok(())
    }

    /// Removes this handle's queue, as [`Queue::remove`] does by name (an
    /// anonymous queue is only marked removed).
    pub fn remove_queue(&self) -> Result<(), QueueOpenError> {
        self.queue.mark_removed();
        match self.endpoint.segment().unlink() {
            Ok(()) | Err(SegmentError::WrongBacking(_)) | Err(SegmentError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The queue's parameters.
    pub fn config(&self) -> QueueConfig {
        self.queue.config()
    }

    /// Statistics: counts, last sender and receiver, repairs and losses.
    pub fn stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// The segment, e.g. to send a memfd to another process.
    pub fn segment(&self) -> &Segment {
        self.endpoint.segment()
    }

    /// How blocking operations wait.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.endpoint.set_strategy(strategy);
    }

    /// Takes the lock, reaping dead handles between wait slices (a dead
    /// holder is released by the reaper).
    fn lock<'q>(
        queue: &'q QueueHandle,
        endpoint: &mut Endpoint,
        token: u64,
        deadline: Option<Deadline>,
    ) -> Result<Locked<'q>, Stopped> {
        if endpoint.truncated() {
            return Err(Stopped::Corrupted(super::TRUNCATED));
        }
        if let Some(locked) = queue.try_lock(token) {
            return Ok(locked);
        }
        Queue::lock_slow(queue, endpoint, token, deadline)
    }

    /// `Corrupted` if the segment's file was found cut short during the
    /// last operation: its reads and writes then went to private zero
    /// pages (the SIGBUS handler's), so whatever it did or found is not
    /// the queue's, and must not be reported as done.
    fn intact(&self) -> Result<(), Corruption> {
        if self.endpoint.truncated() {
            Err(super::TRUNCATED)
        } else {
            Ok(())
        }
    }

    #[cold]
    fn lock_slow<'q>(
        queue: &'q QueueHandle,
        endpoint: &mut Endpoint,
        token: u64,
        deadline: Option<Deadline>,
    ) -> Result<Locked<'q>, Stopped> {
        loop {
            endpoint.check_intact().map_err(Stopped::Corrupted)?;
            endpoint.peer_gone_or_dead();
            let Some(until) = endpoint.slice(deadline) else {
                return Err(Stopped::Timeout);
            };
            if let Some(locked) = queue.lock(token, endpoint.strategy(), Some(until)) {
                return Ok(locked);
            }
            // Every holder is a token from 1 to 64: anything else was
            // written by no handle, and nobody would ever release it.
            let holder = queue.lock_holder();
            // Our own token, while we wait for the lock: nobody else acts
            // under it while our slot is ours, so the word was scribbled.
            // Free it, or everyone would wait for ever. (A forked child
            // shares its parent's token: it must not.)
            if holder == token && std::process::id() == endpoint.pid && queue.release_unheld(token)
            {
                return Err(Stopped::Corrupted(Corruption {
                    field: "queue lock holder",
                    value: holder,
                }));
            }
            if holder > 64 {
                return Err(Stopped::Corrupted(Corruption {
                    field: "queue lock holder",
                    value: holder,
                }));
            }
        }
    }

    /// Waits one slice for `changed` (or removal), then reaps.
    fn wait_slice(
        &mut self,
        deadline: Option<Deadline>,
        wait: impl FnOnce(&QueueHandle, WaitStrategy, Deadline),
    ) -> Result<(), Stopped> {
        let Some(until) = self.endpoint.slice(deadline) else {
            return Err(Stopped::Timeout);
        };
        wait(&self.queue, self.endpoint.strategy(), until);
        if self.queue.is_removed() {
            return Err(Stopped::Removed);
        }
        self.endpoint.check_intact().map_err(Stopped::Corrupted)?;
        self.endpoint.peer_gone_or_dead();
        Ok(())
    }

    fn check_message(&self, len: usize, mtype: u64, priority: u32) -> Result<(), QueueSendError> {
        let config = self.queue.config();
        if len > config.max_msg {
            return Err(QueueSendError::TooLarge {
                len,
                max: config.max_msg,
            });
        }
        if mtype == 0 {
            return Err(QueueSendError::InvalidType);
        }
        if priority >= config.priorities {
            return Err(QueueSendError::InvalidPriority {
                priority,
                priorities: config.priorities,
            });
        }
        Ok(())
    }

    /// Sends without waiting for room: [`QueueSendError::Full`] if there is
    /// none. On a rendezvous queue the message is withdrawn again unless a
    /// receiver takes it while we look.
    pub fn try_send(
        &mut self,
        payload: &[u8],
        mtype: u64,
        priority: u32,
    ) -> Result<(), QueueSendError> {
        self.send_within(payload, mtype, priority, Wait::No)
    }

    /// Sends, waiting for room as long as it takes; on a rendezvous queue,
    /// returns once a receiver has taken the message.
    ///
    /// Types start at 1; priorities are `0..priorities`. A message too
    /// large, of type 0 or of a priority out of range is refused and
    /// nothing is queued. `Removed` after a rendezvous message was queued
    /// leaves it in the removed queue, where handles still attached can no
    /// longer receive it.
    pub fn send(
        &mut self,
        payload: &[u8],
        mtype: u64,
        priority: u32,
    ) -> Result<(), QueueSendError> {
        self.send_within(payload, mtype, priority, Wait::For(None))
    }

    /// Sends, waiting at most `timeout` for room (rendezvous: for a
    /// receiver to take it; if none did, the message is withdrawn).
    pub fn send_timeout(
        &mut self,
        payload: &[u8],
        mtype: u64,
        priority: u32,
        timeout: Duration,
    ) -> Result<(), QueueSendError> {
        self.send_within(payload, mtype, priority, Wait::For(Some(timeout)))
    }

    fn send_within(
        &mut self,
        payload: &[u8],
        mtype: u64,
        priority: u32,
        wait: Wait,
    ) -> Result<(), QueueSendError> {
        self.check_message(payload.len(), mtype, priority)?;
        let deadline = deadline(wait);
        let queue = self.queue;
        loop {
            let seen = queue.freed_epoch();
            let mut locked = Queue::lock(&queue, &mut self.endpoint, self.token, deadline)?;
            let sent = locked.send(payload, mtype, priority, self.pid, now_ns());
            drop(locked);
            self.intact()?;
            match sent {
                Ok((index, seq)) => {
                    queue.wake_receivers();
                    return self.rendezvous(index, seq, wait, deadline);
                }
                Err(QueueOpError::Full) if matches!(wait, Wait::For(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.wait_slice(deadline, |queue, strategy, until| {
                queue.wait_for_free(seen, strategy, Some(until), || false)
            })?;
        }
    }

    /// On a rendezvous queue, waits until the message sent as `seq` in
    /// block `index` is taken; withdraws it if the wait ends first.
    fn rendezvous(
        &mut self,
        index: u64,
        seq: u64,
        wait: Wait,
        deadline: Option<Deadline>,
    ) -> Result<(), QueueSendError> {
        if self.queue.config().max_msgs != 0 {
            return Ok(());
        }
        let queue = self.queue;
        let ended = loop {
            if queue.taken(index, seq) {
                return Ok(());
            }
            if queue.is_removed() {
                return Err(QueueSendError::Removed);
            }
            if matches!(wait, Wait::No) {
                break QueueSendError::Full;
            }
            let waited = self.wait_slice(deadline, |queue, strategy, until| {
                queue.wait_for_free(queue.freed_epoch(), strategy, Some(until), || {
                    queue.taken(index, seq)
                })
            });
            match waited {
                Ok(()) => {}
                Err(Stopped::Timeout) => break QueueSendError::Timeout,
                Err(e) => return Err(e.into()),
            }
        };
        // Take it back unless a receiver took it meanwhile: then it is sent.
        let mut locked = Queue::lock(&queue, &mut self.endpoint, self.token, None)?;
        let withdrawn = locked.withdraw(index, seq)?;
        drop(locked);
        if withdrawn {
            queue.wake_senders();
            Err(ended)
        } else {
            Ok(())
        }
    }

    /// Receives the message `select` picks without waiting:
    /// [`QueueRecvError::NoMessage`] if none matches.
    pub fn try_recv(&mut self, select: Select, buf: &mut [u8]) -> Result<Received, QueueRecvError> {
        self.receive(&Receive::new(select).nonblocking(), buf)
    }

    /// Receives the message `select` picks, waiting as long as it takes.
    pub fn recv(&mut self, select: Select, buf: &mut [u8]) -> Result<Received, QueueRecvError> {
        self.receive(&Receive::new(select), buf)
    }

    /// Receives the message `select` picks, waiting at most `timeout`.
    pub fn recv_timeout(
        &mut self,
        select: Select,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<Received, QueueRecvError> {
        self.receive(&Receive::new(select).timeout(timeout), buf)
    }

    /// Receives as `receive` says. A message longer than `buf` stays
    /// queued with [`QueueRecvError::TooLarge`], unless `receive`
    /// truncates: then what fits is copied and [`Received::len`] reports
    /// the original length.
    ///
    /// Cost: [`Select::Any`] takes the head of the highest non-empty
    /// priority, O(1); the type selections walk the queue in receive
    /// order, O(queued messages), under the lock.
    pub fn receive(
        &mut self,
        receive: &Receive,
        buf: &mut [u8],
    ) -> Result<Received, QueueRecvError> {
        let (found, copied) = self.take(receive, Some(buf))?;
        Ok(received(&found, copied))
    }

    /// Finds, checks and takes a message: copies it into `buf`, or (`None`)
    /// hands its block to us to read in place.
    fn take(
        &mut self,
        receive: &Receive,
        mut buf: Option<&mut [u8]>,
    ) -> Result<(Found, usize), QueueRecvError> {
        let deadline = deadline(receive.wait);
        let queue = self.queue;
        loop {
            if queue.is_removed() {
                return Err(QueueRecvError::Removed);
            }
            let seen = queue.sent_epoch();
            let mut locked = Queue::lock(&queue, &mut self.endpoint, self.token, deadline)?;
            if let Some(found) = locked.find(receive.select, 0)? {
                let borrow = buf.is_none();
                let out: &mut [u8] = match buf.as_deref_mut() {
                    Some(out) => out,
                    None => &mut [],
                };
                if !borrow && found.len > out.len() && !receive.truncate {
                    return Err(QueueRecvError::TooLarge {
                        len: found.len,
                        capacity: out.len(),
                    });
                }
                let fits = found.len.min(out.len());
                locked.receive(&found, &mut out[..fits], self.pid, now_ns(), borrow)?;
                let copied = if borrow { found.len } else { fits };
                drop(locked);
                self.intact()?;
                if !borrow {
                    queue.returned(self.token);
                }
                queue.wake_senders();
                return Ok((found, copied));
            }
            drop(locked);
            self.intact()?;
            if matches!(receive.wait, Wait::No) {
                return Err(QueueRecvError::NoMessage);
            }
            self.wait_slice(deadline, |queue, strategy, until| {
                queue.wait_for_send(seen, strategy, Some(until), || false)
            })?;
        }
    }

    /// Copies the `nth` message (from 0) that `select` would receive, in
    /// receive order, without removing it; [`QueueRecvError::NoMessage`]
    /// if there are fewer. For [`Select::TypeAtMost`] the order is by type,
    /// then receive order. O(n) except for the first message of
    /// [`Select::Any`].
    pub fn peek(
        &mut self,
        select: Select,
        nth: usize,
        buf: &mut [u8],
    ) -> Result<Received, QueueRecvError> {
        let queue = self.queue;
        if queue.is_removed() {
            return Err(QueueRecvError::Removed);
        }
        let locked = Queue::lock(&queue, &mut self.endpoint, self.token, None)?;
        let found = match locked.find(select, nth) {
            Ok(Some(found)) => found,
            other => {
                drop(locked);
                self.intact()?;
                return Err(other.map_or_else(Into::into, |_| QueueRecvError::NoMessage));
            }
        };
        if found.len > buf.len() {
            return Err(QueueRecvError::TooLarge {
                len: found.len,
                capacity: buf.len(),
            });
        }
        let copied = locked.peek(&found, buf);
        drop(locked);
        self.intact()?;
        Ok(received(&found, copied))
    }

    /// Receives without waiting, leaving the message in its block to read
    /// in place; the block is freed when the guard drops. If this process
    /// dies holding the guard, a survivor frees the block and counts the
    /// message as lost.
    pub fn try_recv_in_place(&mut self, select: Select) -> Result<InPlace<'_>, QueueRecvError> {
        self.recv_in_place_with(&Receive::new(select).nonblocking())
    }

    /// As [`Queue::try_recv_in_place`], waiting as long as it takes.
    pub fn recv_in_place(&mut self, select: Select) -> Result<InPlace<'_>, QueueRecvError> {
        self.recv_in_place_with(&Receive::new(select))
    }

    /// As [`Queue::try_recv_in_place`], waiting at most `timeout`.
    pub fn recv_in_place_timeout(
        &mut self,
        select: Select,
        timeout: Duration,
    ) -> Result<InPlace<'_>, QueueRecvError> {
        self.recv_in_place_with(&Receive::new(select).timeout(timeout))
    }

    fn recv_in_place_with(&mut self, receive: &Receive) -> Result<InPlace<'_>, QueueRecvError> {
        self.held_blocks = true;
        let (found, _) = self.take(receive, None)?;
        Ok(InPlace { queue: self, found })
    }

    /// Lends a free block of `len` bytes to write a message into in place,
    /// without waiting ([`QueueSendError::Full`] if there is no block or
    /// no room for `len` bytes). The bytes count as queued from now on;
    /// dropping the loan unsent gives them back. If this process dies
    /// holding the loan, a survivor frees the block.
    pub fn try_loan(&mut self, len: usize) -> Result<Loan<'_>, QueueSendError> {
        self.loan_within(len, Wait::No)
    }

    /// As [`Queue::try_loan`], waiting for room as long as it takes.
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_>, QueueSendError> {
        self.loan_within(len, Wait::For(None))
    }

    /// As [`Queue::try_loan`], waiting at most `timeout`.
    pub fn loan_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<Loan<'_>, QueueSendError> {
        self.loan_within(len, Wait::For(Some(timeout)))
    }

    fn loan_within(&mut self, len: usize, wait: Wait) -> Result<Loan<'_>, QueueSendError> {
        self.check_message(len, 1, 0)?;
        self.held_blocks = true;
        let deadline = deadline(wait);
        let queue = self.queue;
        loop {
            let seen = queue.freed_epoch();
            let mut locked = Queue::lock(&queue, &mut self.endpoint, self.token, deadline)?;
            let loaned = locked.loan(len);
            drop(locked);
            self.intact()?;
            match loaned {
                Ok(index) => {
                    // Lent and unlocked: the block is ours alone.
                    failpoint!("queue.loan.taken", Err(QueueSendError::Full));
                    return Ok(Loan {
                        queue: self,
                        index,
                        len,
                        wait,
                        done: false,
                    });
                }
                Err(QueueOpError::Full) if matches!(wait, Wait::For(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.wait_slice(deadline, |queue, strategy, until| {
                queue.wait_for_free(seen, strategy, Some(until), || false)
            })?;
        }
    }

    /// Gives back a block this handle holds, waiting for the lock as long
    /// as it takes (the lock is never held for long, and dead holders are
    /// reaped meanwhile).
    fn free_held(&mut self, index: u64) {
        let queue = self.queue;
        if let Ok(mut locked) = Queue::lock(&queue, &mut self.endpoint, self.token, None) {
            // A damaged owner word leaves the block to the reaper.
            let _ = locked.free_held(index);
        }
        queue.wake_senders();
    }
}

fn deadline(wait: Wait) -> Option<Deadline> {
    match wait {
        Wait::No | Wait::For(None) => None,
        Wait::For(Some(timeout)) => Some(Deadline::after(timeout)),
    }
}

fn received(found: &Found, copied: usize) -> Received {
    Received {
        mtype: found.mtype,
        priority: found.priority,
        len: found.len,
        copied,
        sender_pid: found.sender_pid,
    }
}

fn check_same(found: &QueueConfig, asked: &QueueConfig) -> Result<(), QueueOpenError> {
    for (field, found, expected) in [
        ("max_msgs", found.max_msgs as u64, asked.max_msgs as u64),
        ("max_bytes", found.max_bytes as u64, asked.max_bytes as u64),
        ("max_msg", found.max_msg as u64, asked.max_msg as u64),
        (
            "priorities",
            u64::from(found.priorities),
            u64::from(asked.priorities),
        ),
    ] {
        if found != expected {
            return Err(QueueOpenError::Incompatible {
                field,
                found,
                expected,
            });
        }
    }
    Ok(())
}

impl Drop for Queue {
    fn drop(&mut self) {
        if self.held_blocks {
            // A leaked loan or in-place receive (`mem::forget`) holds a
            // block under our token: give it back while the token is ours.
            let _ = self.queue.reclaim(
                self.token,
                self.endpoint.strategy(),
                Deadline::after(REPAIR_LOCK_WAIT),
            );
        }
        self.endpoint.leave();
    }
}

/// A message received in place: read it with [`InPlace::read_at`]; its
/// block is freed when the guard drops.
///
/// ```
/// use ipcring::channel::ChannelOptions;
/// use ipcring::channel::queue::{Queue, QueueConfig, Select};
///
/// let address = format!("doc-queue-inplace-{}", std::process::id()).parse()?;
/// let mut queue = Queue::create(&address, &QueueConfig::new(4, 64), &ChannelOptions::new())?;
/// queue.send(b"in place", 3, 1)?;
/// let message = queue.try_recv_in_place(Select::Any)?;
/// assert_eq!((message.mtype(), message.priority(), message.len()), (3, 1, 8));
/// assert_eq!(message.to_vec(), b"in place");
/// drop(message);
/// Queue::remove(&address)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct InPlace<'a> {
    queue: &'a mut Queue,
    found: Found,
}

impl InPlace<'_> {
    /// The message's type.
    pub fn mtype(&self) -> u64 {
        self.found.mtype
    }

    /// Its priority.
    pub fn priority(&self) -> u32 {
        self.found.priority
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.found.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.found.len == 0
    }

    /// Copies bytes from `offset` into `dst`; returns how many (fewer at
    /// the end of the message).
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> usize {
        let n = self.found.len.saturating_sub(offset).min(dst.len());
        self.queue
            .queue
            .read_held(self.found.index(), offset, &mut dst[..n]);
        n
    }

    /// The whole message, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.found.len];
        self.read_at(0, &mut out);
        out
    }
}

impl Drop for InPlace<'_> {
    fn drop(&mut self) {
        failpoint!("queue.borrow.held");
        self.queue.free_held(self.found.index());
    }
}

/// A block lent for writing a message in place; [`Loan::send`] queues it,
/// dropping it gives the block back.
///
/// ```
/// use ipcring::channel::ChannelOptions;
/// use ipcring::channel::queue::{Queue, QueueConfig, Select};
///
/// let address = format!("doc-queue-loan-{}", std::process::id()).parse()?;
/// let mut queue = Queue::create(&address, &QueueConfig::new(4, 64), &ChannelOptions::new())?;
/// let mut loan = queue.try_loan(5)?;
/// loan.write_at(0, b"he");
/// loan.write_at(2, b"llo");
/// loan.send(7, 0)?;
/// let mut buf = [0u8; 64];
/// let got = queue.try_recv(Select::Type(7), &mut buf)?;
/// assert_eq!(&buf[..got.len], b"hello");
/// Queue::remove(&address)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Loan<'a> {
    queue: &'a mut Queue,
    index: u64,
    len: usize,
    wait: Wait,
    /// Sent (or given back by `send`): the drop does nothing.
    done: bool,
}

impl Loan<'_> {
    /// The message's length, fixed when it was lent.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `src` at `offset`; returns how many bytes fit.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> usize {
        let n = self.len.saturating_sub(offset).min(src.len());
        self.queue.queue.write_held(self.index, offset, &src[..n]);
        n
    }

    /// Queues the message with `mtype` and `priority`. An invalid type or
    /// priority gives the block back and queues nothing. On a rendezvous
    /// queue, waits for a receiver as the loan did for room.
    pub fn send(mut self, mtype: u64, priority: u32) -> Result<(), QueueSendError> {
        // From here on the block is either queued or freed here, never by
        // the guard's drop.
        self.done = true;
        let (index, wait) = (self.index, self.wait);
        let queue = &mut *self.queue;
        if let Err(e) = queue.check_message(0, mtype, priority) {
            queue.free_held(index);
            return Err(e);
        }
        let handle = queue.queue;
        let sent = match Queue::lock(&handle, &mut queue.endpoint, queue.token, None) {
            Ok(mut locked) => locked.send_loaned(index, mtype, priority, queue.pid, now_ns()),
            Err(e) => {
                queue.free_held(index);
                return Err(e.into());
            }
        };
        queue.intact()?;
        match sent {
            Ok(seq) => {
                handle.wake_receivers();
                queue.rendezvous(index, seq, wait, deadline(wait))
            }
            Err(e) => {
                queue.free_held(index);
                Err(e.into())
            }
        }
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.queue.free_held(self.index);
        }
    }
}
