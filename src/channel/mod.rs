//! Channels: the endpoints users hold, over rings in shared segments.
//!
//! This module owns what users see: senders and receivers with role checks,
//! disconnection (a peer that leaves, or dies without leaving), typed
//! per-operation errors, and the try / blocking / timed forms of each
//! operation. It must never touch ring memory except through the `ring`
//! API, nor call the OS except through `segment`.
//!
//! A channel segment's user area starts with an [`Endpoints`] table (one
//! page), and the ring follows:
//!
//! | offset | field                 | written by | meaning |
//! |--------|-----------------------|------------|---------|
//! | 0      | `ready`               | creator    | [`READY`] once the ring is initialised |
//! | 8      | `producers.presence`  | producers, reapers | bit 63: someone attached once; bits 0–30: a hint of the taken slots |
//! | 16     | `producers.slots`     | each producer its own | 31 × [`ProcessIdentity`] words, 0 = free |
//! | 264    | `consumers.presence`  | consumers, reapers | as for producers |
//! | 272    | `consumers.slots`     | each consumer its own | as for producers |
//! | 520    | `producer_departures` | leaving producers, reapers | producers that left or were reaped, ever (wraps) |
//! | 528    | `consumer_departures` | leaving consumers, reapers | as for producers |
//! | 4096   | ring                  | the ring's rules | see `ring::spsc`, `ring::mpmc` |
//!
//! The departure counters came after the rest: a segment made before them
//! reads zeros there, which is a valid start.
//!
//! An endpoint's peers have *left* when nobody of the other side is
//! attached and one of them left (or was found dead) after this endpoint
//! attached: each endpoint records the other side's departure counter when
//! it attaches, and compares. So a peer that left in an earlier run does
//! not disconnect a new endpoint, which waits for a new peer instead, as a
//! FIFO's reader waits for a writer. One exception keeps a finished
//! sender's messages meaningful: a receiver that attaches while no sender
//! is attached but the ring holds messages takes those senders as its
//! peers, so it drains the messages and is then disconnected.
//!
//! Leaving frees the slot at once; a process that dies without leaving is
//! found by a reaper: any endpoint that finds the ring full or empty checks
//! the other side's slots against `/proc` (at most every 50 ms), and a
//! blocked endpoint waits in slices of at most 100 ms, checking between
//! them. So a blocked peer notices a killed process within about 150 ms.
//! At the same moments an endpoint with nobody on the other side checks
//! that its segment's name still leads to its segment; once it does not,
//! no peer can join, and the endpoint's operations end with `Removed`
//! instead of waiting forever.

mod counters;
pub mod datagram;
pub mod error;
pub mod mpmc;
pub mod queue;
pub mod records;
pub mod spsc;
pub mod stream;
#[cfg(feature = "serde")]
pub mod typed;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use counters::{Change, Changes, Counters, counters};
pub use error::{
    ChannelError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};

use crate::ring::{Corruption, Region, Repair, RingError, RingStats, Side};
use crate::segment::{
    Address, CreateOptions, LivenessLock, MIN_LIVENESS_KEY, Mismatch, OpenOptions, ProcessIdentity,
    Segment, SegmentError, Shareable,
};
use crate::sync::{Deadline, WaitStrategy};

/// Where the ring starts in a channel segment's user area.
pub const RING_OFFSET: usize = 4096;
/// Endpoint slots per side.
pub const MAX_ENDPOINTS: usize = 31;
/// `Endpoints::ready` once the creator has initialised the ring ("RINGREDY").
pub const READY: u64 = u64::from_le_bytes(*b"RINGREDY");

/// How long a blocked endpoint sleeps before checking for dead peers.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// How often an endpoint that finds the ring full or empty checks `/proc`.
const REAP_INTERVAL: Duration = Duration::from_millis(50);

/// `presence`: someone attached once (set by every claim, and restored by
/// reapers that find a taken slot).
const EVER: u64 = 1 << 63;
/// `presence`: a hint of which slots are taken, bit `i` for slot `i`.
const HINT_MASK: u64 = (1 << MAX_ENDPOINTS) - 1;
/// A slot word with this bit set is being reaped; the other bits are the
/// reaper's process identity (identities never use bit 63: pids are below
/// 2^22).
const REAPING: u64 = 1 << 63;

fn bit(index: usize) -> u64 {
    1 << index
}

/// One side's table.
///
/// The slots are the truth: a slot holds the identity of the process whose
/// endpoint claimed it (with one compare-exchange), or a reaper's mark. The
/// `presence` word only caches it, so that the per-send disconnection check
/// is one load: a claim sets its bit after taking the slot and a leave
/// clears it after freeing the slot. A process killed between the two steps
/// leaves the hint wrong in one direction or the other, and both are safe:
/// a hint that says "nobody" is confirmed against the slots before anyone is
/// told the side is gone, and a stale bit is cleared by the next reaper.
#[repr(C)]
#[derive(Debug)]
pub struct RoleTable {
    presence: AtomicU64,
    slots: [AtomicU64; MAX_ENDPOINTS],
}

/// The endpoint tables at the start of a channel segment.
#[repr(C)]
#[derive(Debug)]
pub struct Endpoints {
    ready: AtomicU64,
    producers: RoleTable,
    consumers: RoleTable,
    /// Producers that left or were reaped, ever; bumped by whoever frees a
    /// producer slot, while the slot still holds the leaver (or the
    /// reaper's mark), so a kill between the two steps is repaired by the
    /// next reaper, which bumps it again. Only compared for change.
    producer_departures: AtomicU64,
    /// As `producer_departures`, for consumers.
    consumer_departures: AtomicU64,
}

// SAFETY: #[repr(C)] aggregates of AtomicU64 and nothing else.
unsafe impl Shareable for RoleTable {}
// SAFETY: as above.
unsafe impl Shareable for Endpoints {}

/// What an endpoint watches of the other side: its table, its departure
/// counter, and what the counter held when the endpoint attached.
#[derive(Clone, Copy)]
pub(crate) struct PeerWatch<'a> {
    table: &'a RoleTable,
    departures: &'a AtomicU64,
    seen: u64,
    /// A receiver that found a finished sender's messages at attach.
    inherited: bool,
}

impl PeerWatch<'_> {
    /// Nobody of the other side is attached now, and one of them left
    /// after we attached (or we inherited a finished sender's messages).
    #[inline]
    pub(crate) fn is_gone(&self) -> bool {
        // Acquire: pairs with the Release `fetch_and` in `vacate`, so what
        // the last endpoint published before leaving is visible to us.
        let presence = self.table.presence.load(Ordering::Acquire);
        if presence & EVER == 0 || presence & HINT_MASK != 0 {
            return false;
        }
        self.left_since_attach()
    }

    #[cold]
    fn left_since_attach(&self) -> bool {
        // Relaxed: a first look only; the answer is read again below.
        if !self.inherited && self.departures.load(Ordering::Relaxed) == self.seen {
            return false;
        }
        if !self.table.confirm_empty() {
            return false;
        }
        // Relaxed: `confirm_empty` read every slot free with Acquire, and
        // whoever freed one bumped the counter before its Release CAS, so
        // that bump is visible here.
        self.inherited || self.departures.load(Ordering::Relaxed) != self.seen
    }

    /// Nobody of the other side is attached now, whether or not anyone
    /// ever was.
    fn is_empty(&self) -> bool {
        self.table.confirm_empty()
    }
}

impl RoleTable {
    /// The hint says nobody is here: check the slots themselves.
    #[cold]
    fn confirm_empty(&self) -> bool {
        for (index, slot) in self.slots.iter().enumerate() {
            // Acquire: pairs with the Release CAS in `vacate`.
            if slot.load(Ordering::Acquire) != 0 {
                // A claim that has not set its bit yet, or a bit a reaper's
                // race cleared: put it back.
                self.presence.fetch_or(bit(index), Ordering::Relaxed);
                return false;
            }
        }
        true
    }

    /// Takes slot `index` if it holds `expected` (0: free).
    fn claim(&self, index: usize, expected: u64, identity: u64) -> bool {
        let Some(slot) = self.slots.get(index) else {
            return false;
        };
        // Acquire: pairs with the Release CAS in `vacate`, so a successor
        // sees what its predecessor (or the reaper that repaired after it)
        // did.
        if slot
            .compare_exchange(expected, identity, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        failpoint!("channel.attach.claimed", true);
        // Relaxed: the hint publishes nothing; the slot is the truth.
        self.presence.fetch_or(EVER | bit(index), Ordering::Relaxed);
        true
    }

    /// Frees slot `index` if it holds `current`; true if this call freed it.
    fn vacate(&self, index: usize, current: u64) -> bool {
        let Some(slot) = self.slots.get(index) else {
            return false;
        };
        // Release: pairs with the Acquire in `claim` and `confirm_empty`:
        // everything this endpoint (or reaper) did happens before the slot
        // is free.
        if slot
            .compare_exchange(current, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        failpoint!("channel.detach.freed", true);
        // Release: pairs with the Acquire load in `is_gone`.
        self.presence.fetch_and(!bit(index), Ordering::Release);
        true
    }

    /// Clears hint bits of slots that are free: left by a process killed
    /// between freeing its slot and clearing its bit.
    fn tidy_hint(&self) {
        let presence = self.presence.load(Ordering::Relaxed);
        for (index, slot) in self.slots.iter().enumerate() {
            if presence & bit(index) != 0 && slot.load(Ordering::Relaxed) == 0 {
                // Release: as in `vacate`. A claim racing with this may lose
                // its bit; `confirm_empty` puts it back.
                self.presence.fetch_and(!bit(index), Ordering::Release);
            }
        }
    }
}

/// Which side an endpoint is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }

    fn side(self) -> Side {
        match self {
            Role::Producer => Side::Producer,
            Role::Consumer => Side::Consumer,
        }
    }
}

/// Options for creating a channel segment.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    mode: u32,
    strategy: WaitStrategy,
    owned: bool,
    prefault: bool,
    lock_memory: bool,
    huge_pages: bool,
}

impl Default for ChannelOptions {
    fn default() -> ChannelOptions {
        ChannelOptions {
            mode: 0o600,
            strategy: WaitStrategy::default(),
            owned: false,
            prefault: false,
            lock_memory: false,
            huge_pages: false,
        }
    }
}

impl ChannelOptions {
    /// Owner-only segment, spin-then-park waiting.
    pub fn new() -> ChannelOptions {
        ChannelOptions::default()
    }

    /// Permission bits of a created segment.
    pub fn mode(mut self, mode: u32) -> ChannelOptions {
        self.mode = mode;
        self
    }

    /// How the endpoint waits in blocking operations.
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> ChannelOptions {
        self.strategy = strategy;
        self
    }

    /// Whether a created channel belongs to the endpoint that creates it
    /// (default: persistent). An owned channel's name is removed when its
    /// creating endpoint drops; endpoints already attached keep working
    /// (a receiver drains what was sent), but no new one can find it. If
    /// the creator dies instead, `segment::remove_stale()` (or
    /// `ipcring rm --stale`) removes it. With `open_or_create`, only the
    /// call that creates the channel owns it. See
    /// [`CreateOptions::owned`].
    pub fn owned(mut self, owned: bool) -> ChannelOptions {
        self.owned = owned;
        self
    }

    /// Whether this endpoint's mapping of the segment has every page
    /// faulted in before it is returned, when it creates the channel and
    /// when `open_or_create` opens it. See [`CreateOptions::prefault`].
    /// An endpoint made by `open` or `attach` asks with
    /// [`OpenOptions::prefault`] on the segment it attaches.
    pub fn prefault(mut self, prefault: bool) -> ChannelOptions {
        self.prefault = prefault;
        self
    }

    /// Whether this endpoint's mapping of the segment is locked in memory,
    /// when it creates the channel and when `open_or_create` opens it;
    /// fails with [`SegmentError::LockFailed`] if `RLIMIT_MEMLOCK` does
    /// not allow it. A byte stream also locks the second mapping of its
    /// data (twice its capacity more); a `create` that fails there removes
    /// the name it made. See [`CreateOptions::lock_memory`]; for `open` or
    /// `attach`, [`OpenOptions::lock_memory`].
    pub fn lock_memory(mut self, lock: bool) -> ChannelOptions {
        self.lock_memory = lock;
        self
    }

    /// Whether a created channel's segment takes its memory from the huge
    /// page pool: anonymous and SysV segments only, and not byte streams
    /// (`Unsupported`). Its ring keeps the capacity asked for; the segment
    /// is rounded up to whole huge pages. See [`CreateOptions::huge_pages`].
    pub fn huge_pages(mut self, huge_pages: bool) -> ChannelOptions {
        self.huge_pages = huge_pages;
        self
    }

    /// How this endpoint maps a segment it opens.
    pub(crate) fn open_options(&self) -> OpenOptions {
        OpenOptions::new()
            .prefault(self.prefault)
            .lock_memory(self.lock_memory)
    }
}

/// Creates a segment (named, or anonymous when `address` is `None`) with
/// room for endpoint tables and a ring of `ring_bytes`, lets `init` build
/// the ring, then publishes it.
pub(crate) fn create_segment(
    address: Option<&Address>,
    kind: u32,
    ring_bytes: usize,
    options: &ChannelOptions,
    init: impl FnOnce(Region) -> Result<(), crate::ring::RingError>,
) -> Result<Segment, ChannelError> {
    let size = RING_OFFSET
        .checked_add(ring_bytes)
        .ok_or(SegmentError::InvalidOptions {
            reason: "the ring is too large",
        })?;
    let create = CreateOptions::new(size)
        .kind(kind)
        .mode(options.mode)
        .owned(options.owned)
        .prefault(options.prefault)
        .lock_memory(options.lock_memory)
        .huge_pages(options.huge_pages)
        .register(true);
    let segment = match address {
        Some(address) => Segment::create(address, &create)?,
        None => Segment::create_anonymous(&create)?,
    };
    let made = ring_region(&segment).and_then(|region| Ok(init(region)?));
    if let Err(e) = made {
        if let Some(address) = address {
            let _ = Segment::remove(address);
        }
        return Err(e);
    }
    let endpoints: &Endpoints = segment.view(0)?;
    // Release: pairs with the Acquire load in `wait_ready`: the ring's
    // initialisation happens before any endpoint attaches.
    endpoints.ready.store(READY, Ordering::Release);
    Ok(segment)
}

/// The ring's part of a channel segment.
fn ring_region(segment: &Segment) -> Result<Region, ChannelError> {
    let len = segment
        .user_len()
        .checked_sub(RING_OFFSET)
        .ok_or(SegmentError::InvalidOptions {
            reason: "the segment is too small for a channel",
        })?;
    let ptr = NonNull::new(segment.user_ptr().wrapping_add(RING_OFFSET)).ok_or(
        SegmentError::InvalidOptions {
            reason: "the segment has no user area",
        },
    )?;
    // SAFETY: the range lies inside the segment's user area, which stays
    // mapped while the segment lives; every endpoint keeps its segment
    // alive as long as its ring handle, and reaches the ring only through
    // ring handles.
    Ok(unsafe { Region::new(ptr, len) })
}

/// Opens a named channel segment of `kind`.
pub(crate) fn open_segment(address: &Address, kind: u32) -> Result<Segment, ChannelError> {
    open_segment_with(address, kind, &ChannelOptions::new())
}

/// Opens a named channel segment of `kind`, mapped as `options` ask.
pub(crate) fn open_segment_with(
    address: &Address,
    kind: u32,
    options: &ChannelOptions,
) -> Result<Segment, ChannelError> {
    Ok(Segment::open(address, &options.open_options().kind(kind))?)
}

/// How long an opener waits for the creator to publish the ring.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(1);

/// Opens a named segment with `open` (which is given the time left),
/// retrying while the name does not exist, until `deadline`; `Timeout`
/// then. Other errors are returned at once.
pub(crate) fn open_within(
    timeout: Duration,
    deadline: Deadline,
    open: impl Fn(Duration) -> Result<Segment, SegmentError>,
) -> Result<Segment, ChannelError> {
    let mut pause = Duration::from_micros(500);
    loop {
        match open(deadline.remaining()) {
            Ok(segment) => return Ok(segment),
            Err(SegmentError::NotFound(_)) if !deadline.has_passed() => {
                std::thread::sleep(pause.min(deadline.remaining()));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(SegmentError::NotFound(_) | SegmentError::NotReady { .. }) => {
                return Err(ChannelError::Timeout { waited: timeout });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What `open_timeout` reports when the ring was not published in time.
pub(crate) fn timeout_if_not_ready(e: ChannelError, timeout: Duration) -> ChannelError {
    match e {
        ChannelError::NotReady => ChannelError::Timeout { waited: timeout },
        other => other,
    }
}

/// Creates a named channel segment with `create`, or opens the existing
/// one with `open`; returns it and whether this call created it. Bounded:
/// each lap means another process removed the name between our two calls.
pub(crate) fn create_or_open(
    address: &Address,
    create: impl Fn() -> Result<Segment, ChannelError>,
    open: impl Fn() -> Result<Segment, ChannelError>,
) -> Result<(Segment, bool), ChannelError> {
    for _ in 0..16 {
        match create() {
            Ok(segment) => return Ok((segment, true)),
            Err(ChannelError::Segment(SegmentError::AlreadyExists(_))) => {}
            Err(e) => return Err(e),
        }
        match open() {
            Ok(segment) => return Ok((segment, false)),
            Err(ChannelError::Segment(SegmentError::NotFound(_))) => {}
            Err(e) => return Err(as_incompatible(e)),
        }
    }
    Err(SegmentError::NotFound(address.to_string()).into())
}

/// The error `open_or_create` reports when the existing channel is of
/// another kind or item type: `Incompatible`, naming the field.
pub(crate) fn as_incompatible(e: ChannelError) -> ChannelError {
    match e {
        ChannelError::Segment(SegmentError::Incompatible(Mismatch::Kind { found, expected })) => {
            ChannelError::Incompatible {
                field: "channel kind",
                found: found.into(),
                expected: expected.into(),
            }
        }
        ChannelError::Ring(RingError::Incompatible {
            field,
            found,
            expected,
        }) => ChannelError::Incompatible {
            field,
            found,
            expected,
        },
        other => other,
    }
}

/// `Incompatible` unless the existing channel's `field` is what
/// `open_or_create` asked for (`None`: this call created it, or `open`).
pub(crate) fn expect_same(
    field: &'static str,
    found: u64,
    expected: Option<u64>,
) -> Result<(), ChannelError> {
    match expected {
        Some(expected) if expected != found => Err(ChannelError::Incompatible {
            field,
            found,
            expected,
        }),
        _ => Ok(()),
    }
}

/// What a channel's ring offers the endpoint layer for repairing the claims
/// of dead endpoints (rings with many writers; see `ring::claims`).
pub(crate) trait ClaimRepair: Send {
    /// What claimer `id` on `side` last announced.
    fn claim_record(&self, side: Side, id: u8) -> u64;
    /// Repairs the claim `record` of dead claimer `id` on `side`.
    fn repair(&self, side: Side, id: u8, record: u64) -> Repair;
    /// Repairs and losses so far.
    fn stats(&self) -> RingStats;
}

/// What operations report once the segment's file was truncated under us.
pub const TRUNCATED: Corruption = Corruption {
    field: "segment file truncated",
    value: 0,
};

/// Repair and loss counts of a channel, kept in its ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Claims of dead endpoints that survivors repaired.
    pub repairs: u64,
    /// Items dropped because the receiver holding them died (MPMC only; at
    /// most once delivery for those).
    pub losses: u64,
}

/// The repair and loss counts of the channel in `segment`, read without
/// attaching (a read-only segment will do); zeros for a channel whose ring
/// keeps none (SPSC, which has nothing to repair).
pub fn stats(segment: &Segment) -> Result<ChannelStats, ChannelError> {
    let stats = crate::ring::ring_stats(&ring_region(segment)?).unwrap_or_default();
    Ok(ChannelStats {
        repairs: stats.repairs,
        losses: stats.losses,
    })
}

/// What every endpoint holds: its segment, its slot, how it waits.
pub(crate) struct Endpoint {
    tables: NonNull<Endpoints>,
    role: Role,
    /// Our slot; `usize::MAX` until claimed.
    slot: usize,
    identity: u64,
    pid: u32,
    strategy: WaitStrategy,
    next_reap: Instant,
    /// Repairs dead endpoints' claims; `None` for rings without claims.
    repairer: Option<Box<dyn ClaimRepair>>,
    /// The kernel-kept sign that our slot's holder lives (file-backed
    /// segments); released when we leave, or by the kernel when we die.
    liveness: Option<LivenessLock>,
    /// The ring's magic word as it was at attach; `check_intact` compares.
    ring_magic: u64,
    /// The segment's file was found shorter than our mapping.
    cut_short: bool,
    /// The other side's departure counter when we attached.
    peer_departures_seen: u64,
    /// A receiver that found a finished sender's messages at attach: those
    /// senders count as its peers, gone once it has drained them.
    inherited: bool,
    /// At the last check, nobody was on the other side and the segment's
    /// name no longer led to it.
    orphaned: bool,
    // Last: the tables and the repairer point into its mapping.
    segment: Segment,
}

/// What an endpoint knows of the other side, at the slow path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerState {
    /// Attached, or not yet come: wait.
    Present,
    /// Left (or died) since we attached: disconnected.
    Gone,
    /// Nobody is attached and the name no longer leads here: nobody can
    /// come.
    Removed,
}

/// The liveness-lock key of `role`'s slot `index`: keys from 1024 belong to
/// the channel layer, 64 per side.
fn liveness_key(role: Role, index: usize) -> u32 {
    let side = match role {
        Role::Producer => 0,
        Role::Consumer => 1,
    };
    MIN_LIVENESS_KEY + side * 64 + index as u32
}

// SAFETY: the table pointer targets the segment's mapping, which the
// endpoint owns and which may be used from any thread; all accesses are
// atomic.
unsafe impl Send for Endpoint {}

impl Endpoint {
    /// Waits for the ring to be published, repairs what dead endpoints
    /// left, then claims a slot on `role`'s side: slot 0 only (taking it
    /// over from a dead holder) if `exclusive`. `repairer` makes the ring's
    /// repair handle, if the ring has claims.
    ///
    /// `repairer` runs before the slot is claimed, so it is also where a
    /// kind checks the ring (item type, capacity): a refused attach never
    /// holds a slot, and so never counts as a departure.
    pub(crate) fn attach(
        segment: Segment,
        role: Role,
        exclusive: bool,
        strategy: WaitStrategy,
        ready_by: Deadline,
        repairer: impl FnOnce(Region) -> Result<Option<Box<dyn ClaimRepair>>, ChannelError>,
    ) -> Result<(Endpoint, Region), ChannelError> {
        let view: &Endpoints = segment.view(0)?;
        let region = ring_region(&segment)?;
        wait_ready(view, ready_by)?;
        let repairer = repairer(region)?;
        let identity = ProcessIdentity::current()?.to_word();
        // Kept as a pointer: the endpoint owns the segment it points into.
        let tables = NonNull::from(view);
        let mut endpoint = Endpoint {
            tables,
            role,
            slot: usize::MAX,
            identity,
            pid: std::process::id(),
            strategy,
            next_reap: Instant::now(),
            repairer,
            liveness: None,
            ring_magic: 0,
            cut_short: false,
            peer_departures_seen: 0,
            inherited: false,
            orphaned: false,
            segment,
        };
        endpoint.ring_magic = endpoint.read_ring_magic();
        // A fresh endpoint first clears what dead ones left, so that it
        // (and everyone else) is not stuck behind their claims.
        endpoint.reap(Role::Producer);
        endpoint.reap(Role::Consumer);
        // After the reaps: peers that died before we came, found dead just
        // now, left before we attached.
        let other = match role {
            Role::Producer => Role::Consumer,
            Role::Consumer => Role::Producer,
        };
        // Relaxed: the reaps above bumped it (if they freed anything) in
        // this thread; departures by others are ordered by the slot loads
        // in `PeerWatch::left_since_attach`.
        endpoint.peer_departures_seen = endpoint.departures(other).load(Ordering::Relaxed);
        endpoint.slot = if exclusive {
            endpoint.claim_exclusive()?
        } else {
            endpoint.claim_any()?
        };
        Ok((endpoint, region))
    }

    fn tables(&self) -> &Endpoints {
        // SAFETY: points into `self.segment`'s mapping, alive as long as self.
        unsafe { self.tables.as_ref() }
    }

    /// `role`'s departure counter.
    fn departures(&self, role: Role) -> &AtomicU64 {
        match role {
            Role::Producer => &self.tables().producer_departures,
            Role::Consumer => &self.tables().consumer_departures,
        }
    }

    /// Counts a departure from `role`: called by whoever frees one of its
    /// slots, just before the Release CAS that frees it.
    fn count_departure(&self, role: Role) {
        // Relaxed: published by the Release CAS in `vacate` that follows.
        self.departures(role).fetch_add(1, Ordering::Relaxed);
    }

    /// For a receiver just attached: `has_messages` says whether the ring
    /// held messages. If it did while no sender was attached, they were
    /// left by senders that finished, and those count as this receiver's
    /// peers: it drains them, then is disconnected.
    pub(crate) fn note_leftovers(&mut self, has_messages: bool) {
        if self.role == Role::Consumer && has_messages && self.peers().is_empty() {
            self.inherited = true;
        }
    }

    fn read_ring_magic(&self) -> u64 {
        // Relaxed: compared with itself only; a scribbled value shows.
        self.segment
            .view::<AtomicU64>(RING_OFFSET)
            .map_or(0, |magic| magic.load(Ordering::Relaxed))
    }

    /// Whether the memory this endpoint works in is still the channel's:
    /// the segment's file was not truncated under us, and the table's
    /// `ready` word and the ring's magic still hold what they held at
    /// attach (a file truncated and grown back reads zeros there). The slow
    /// paths and every wait slice call it, so that a blocked call ends with
    /// `Corrupted` instead of waiting on memory nobody else sees.
    #[cold]
    pub(crate) fn check_intact(&self) -> Result<(), Corruption> {
        if self.cut_short || self.segment.is_broken() {
            return Err(TRUNCATED);
        }
        // Relaxed: a validity check of words written once at creation.
        let ready = self.tables().ready.load(Ordering::Relaxed);
        if ready != READY {
            return Err(Corruption {
                field: "channel ready word",
                value: ready,
            });
        }
        let magic = self.read_ring_magic();
        if magic != self.ring_magic {
            return Err(Corruption {
                field: "ring magic",
                value: magic,
            });
        }
        Ok(())
    }

    /// Whether the segment's file was truncated under us: after a fast-path
    /// operation, whose effect then went to private memory. One load of a
    /// process-wide flag until some segment breaks.
    #[inline]
    pub(crate) fn truncated(&self) -> bool {
        self.segment.is_broken()
    }

    /// Our slot index, which is also our claimer id in the ring.
    pub(crate) fn id(&self) -> u8 {
        self.slot as u8
    }

    /// The other side, as this endpoint watches it.
    pub(crate) fn peers(&self) -> PeerWatch<'_> {
        let tables = self.tables();
        let (table, departures) = match self.role {
            Role::Producer => (&tables.consumers, &tables.consumer_departures),
            Role::Consumer => (&tables.producers, &tables.producer_departures),
        };
        PeerWatch {
            table,
            departures,
            seen: self.peer_departures_seen,
            inherited: self.inherited,
        }
    }

    /// Whether some endpoint of the other side holds a slot now (alive or
    /// not yet found dead).
    pub(crate) fn peers_present(&self) -> bool {
        // Acquire (in `confirm_empty`): pairs with the Release CAS in
        // `vacate`, as the other loads of slots do.
        !self.peers().is_empty()
    }

    /// The fast check: nobody of the other side is there, and one left
    /// since we attached.
    #[inline]
    pub(crate) fn peer_gone(&self) -> bool {
        self.peers().is_gone()
    }

    /// Whether the other side has left, after the slow check.
    pub(crate) fn peer_gone_or_dead(&mut self) -> bool {
        self.peer_state() == PeerState::Gone
    }

    /// The slow check, when the ring is full or empty (at most every
    /// 50 ms): reaps dead endpoints on both sides, repairing their claims,
    /// so that neither a dead peer nor a dead fellow endpoint can wedge us;
    /// and, with nobody on the other side, checks that a new peer could
    /// still find the segment by its name.
    #[cold]
    pub(crate) fn peer_state(&mut self) -> PeerState {
        let now = Instant::now();
        if now >= self.next_reap {
            self.next_reap = now + REAP_INTERVAL;
            self.reap(Role::Producer);
            self.reap(Role::Consumer);
            // A file cut short past the pages we touch while waiting would
            // otherwise go unnoticed until a later access faults.
            self.cut_short |= !self.segment.file_intact();
            // A failed check never strands us: only a name seen gone counts.
            self.orphaned =
                self.peers().is_empty() && !self.segment.is_still_named().unwrap_or(true);
        }
        let peers = self.peers();
        if peers.is_gone() {
            PeerState::Gone
        } else if self.orphaned && peers.is_empty() {
            PeerState::Removed
        } else {
            PeerState::Present
        }
    }

    /// Frees the slots of `role`'s dead endpoints, repairing their claims
    /// first; returns how many.
    fn reap(&self, role: Role) -> usize {
        let table = select(self.tables(), role);
        let mut reaped = 0;
        let mut taken = false;
        for index in 0..MAX_ENDPOINTS {
            let word = table.slots[index].load(Ordering::Relaxed);
            if word == 0 {
                continue;
            }
            taken = true;
            if role == self.role && index == self.slot {
                continue;
            }
            if self.reap_slot(role, index, word) {
                reaped += 1;
            }
        }
        if taken {
            // Someone attached, whatever a scribbled `presence` says.
            // Relaxed: a hint; the slots are the truth.
            table.presence.fetch_or(EVER, Ordering::Relaxed);
        }
        table.tidy_hint();
        reaped
    }

    /// Whether the holder of `role`'s slot `index`, whose word is `word`,
    /// is alive: by its liveness lock where the segment has a file (the
    /// kernel drops it when the holder dies, whatever its pid namespace),
    /// else (SysV) by its pid and start time.
    ///
    /// A lock is taken before the slot is claimed and released after it is
    /// freed, so a claimed slot whose lock nobody holds has a dead holder.
    /// The converse may err for a moment, on the safe side: a process about
    /// to claim the slot holds the lock before its claim succeeds or fails.
    fn holder_alive(&self, role: Role, index: usize, word: u64) -> bool {
        match self.segment.liveness_held(liveness_key(role, index)) {
            Ok(Some(held)) => held,
            // No file (SysV), or the check itself failed: never call a
            // process dead on a failed check; the pid check errs the same way.
            Ok(None) | Err(_) => {
                ProcessIdentity::from_word(word).is_some_and(|holder| holder.is_alive())
            }
        }
    }

    /// Takes the liveness lock for our side's slot `index`, before claiming
    /// it. `Ok(None)`: someone holds it exclusively for now, try another.
    fn lock_slot(&self, index: usize) -> Result<Option<Option<LivenessLock>>, ChannelError> {
        match self.segment.lock_liveness(liveness_key(self.role, index)) {
            Ok(lock) => Ok(Some(lock)),
            Err(SegmentError::LivenessKeyBusy { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reaps one slot whose word was `word`, if its holder (or the reaper
    /// that marked it) is dead: mark it with our identity, repair the dead
    /// holder's claim, free it. True if this call freed it.
    ///
    /// The mark makes us the only live repairer, and keeps the slot (and so
    /// the claim record of the same index) from being reused until the
    /// repair is done. A reaper that dies leaves its mark, which the next
    /// reaper takes over.
    fn reap_slot(&self, role: Role, index: usize, word: u64) -> bool {
        let table = select(self.tables(), role);
        let dead = if word & REAPING != 0 {
            !ProcessIdentity::from_word(word & !REAPING).is_some_and(|reaper| reaper.is_alive())
        } else {
            !self.holder_alive(role, index, word)
        };
        if !dead {
            return false;
        }
        let mark = self.identity | REAPING;
        // Acquire: pairs with the Release CAS in `vacate` by whoever freed
        // the slot before the dead holder claimed it; the record we read
        // next is checked against our mark anyway.
        if table.slots[index]
            .compare_exchange(word, mark, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        failpoint!("channel.reap.marked", false);
        if let Some(repairer) = &self.repairer {
            let side = role.side();
            let id = index as u8;
            let record = repairer.claim_record(side, id);
            // The record is the dead holder's only while our mark stands.
            if table.slots[index].load(Ordering::Acquire) != mark {
                return false;
            }
            repairer.repair(side, id, record);
        }
        failpoint!("channel.reap.repaired", false);
        self.count_departure(role);
        table.vacate(index, mark)
    }

    /// Claims slot 0 of our side, taking it over from a dead holder.
    fn claim_exclusive(&mut self) -> Result<usize, ChannelError> {
        let table = select(self.tables(), self.role);
        // A live reaper may hold the slot for a moment; give it a second.
        let deadline = Deadline::after(Duration::from_secs(1));
        while !deadline.has_passed() {
            let holder = table.slots[0].load(Ordering::Relaxed);
            if holder == 0 {
                // Lock first: from the claim on, others judge us by it.
                let Some(lock) = self.lock_slot(0)? else {
                    std::thread::yield_now();
                    continue;
                };
                if table.claim(0, 0, self.identity) {
                    self.liveness = lock;
                    return Ok(0);
                }
                continue;
            }
            if holder & REAPING == 0 && self.holder_alive(self.role, 0, holder) {
                return Err(ChannelError::RoleTaken {
                    role: self.role.name(),
                    pid: ProcessIdentity::from_word(holder).map_or(0, |p| p.pid()),
                });
            }
            // A dead holder, or a reaper at work: reap (or let it finish).
            if !self.reap_slot(self.role, 0, holder) {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        // Lost every race for a second: others keep taking and leaving the
        // slot, or a reaper is stuck (stopped) in the middle of it.
        let holder = table.slots[0].load(Ordering::Relaxed) & !REAPING;
        Err(ChannelError::RoleTaken {
            role: self.role.name(),
            pid: ProcessIdentity::from_word(holder).map_or(0, |p| p.pid()),
        })
    }

    /// Claims any free slot of our side.
    fn claim_any(&mut self) -> Result<usize, ChannelError> {
        let table = select(self.tables(), self.role);
        for attempt in 0..2 {
            for index in 0..MAX_ENDPOINTS {
                if table.slots[index].load(Ordering::Relaxed) != 0 {
                    continue;
                }
                // Lock first: from the claim on, others judge us by it.
                let Some(lock) = self.lock_slot(index)? else {
                    continue;
                };
                if table.claim(index, 0, self.identity) {
                    self.liveness = lock;
                    return Ok(index);
                }
            }
            if attempt == 0 {
                self.reap(self.role);
            }
        }
        Err(ChannelError::TooManyEndpoints {
            role: self.role.name(),
            capacity: MAX_ENDPOINTS,
        })
    }

    /// Repairs and losses counted in the ring.
    pub(crate) fn stats(&self) -> ChannelStats {
        let stats = self
            .repairer
            .as_ref()
            .map_or(RingStats::default(), |repairer| repairer.stats());
        ChannelStats {
            repairs: stats.repairs,
            losses: stats.losses,
        }
    }

    /// The next wait slice, or `None` once `deadline` has passed.
    pub(crate) fn slice(&self, deadline: Option<Deadline>) -> Option<Deadline> {
        let slice = Deadline::after(WAIT_SLICE);
        match deadline {
            None => Some(slice),
            Some(deadline) if deadline.has_passed() => None,
            Some(deadline) => Some(slice.min(deadline)),
        }
    }

    pub(crate) fn strategy(&self) -> WaitStrategy {
        self.strategy
    }

    pub(crate) fn set_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Leaves the table. Callers wake the other side afterwards.
    pub(crate) fn leave(&mut self) {
        // A forked child holds a copy of this endpoint; only the process
        // that claimed the slot frees it.
        if std::process::id() == self.pid && self.slot < MAX_ENDPOINTS {
            self.count_departure(self.role);
            let table = select(self.tables(), self.role);
            if !table.vacate(self.slot, self.identity) {
                // Our slot no longer holds us (scribbled over): still tell
                // the others that someone was here and is gone, or a
                // zeroed `presence` word would hide our leaving for good.
                // Relaxed, then Release: as in `claim` and `vacate`.
                table.presence.fetch_or(EVER, Ordering::Relaxed);
                table.presence.fetch_and(!bit(self.slot), Ordering::Release);
            }
            // Released after the slot is free, never before: a claimed slot
            // without its lock means a dead holder.
            self.liveness = None;
        }
    }
}

impl Drop for Endpoint {
    /// Leaves the table if the owner has not already: an endpoint whose
    /// attach failed after claiming its slot must not hold the role.
    fn drop(&mut self) {
        self.leave();
    }
}

fn select(tables: &Endpoints, role: Role) -> &RoleTable {
    match role {
        Role::Producer => &tables.producers,
        Role::Consumer => &tables.consumers,
    }
}

fn wait_ready(tables: &Endpoints, deadline: Deadline) -> Result<(), ChannelError> {
    // Acquire: pairs with the Release store in `create_segment`.
    while tables.ready.load(Ordering::Acquire) != READY {
        if deadline.has_passed() {
            return Err(ChannelError::NotReady);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// What every endpoint type shares: its accessors, and leaving on drop
/// (freeing its slot, then waking the other side with `$wake` so a blocked
/// peer sees the departure at once).
macro_rules! endpoint_common {
    ($end:ident $(<$t:ident>)?, $wake:ident $(, $before_leaving:ident)?) => {
        impl$(<$t: $crate::ring::Pod>)? $end$(<$t>)? {
            /// Whether the other side has left entirely (or was found dead).
            /// Items it sent may still wait to be received.
            pub fn is_disconnected(&mut self) -> bool {
                self.endpoint.peer_gone_or_dead()
            }

            /// How blocking operations wait.
            pub fn set_wait_strategy(&mut self, strategy: $crate::sync::WaitStrategy) {
                self.endpoint.set_strategy(strategy);
            }

            /// The segment, e.g. to send a memfd to another process.
            pub fn segment(&self) -> &$crate::segment::Segment {
                self.endpoint.segment()
            }

            /// Claims of dead endpoints repaired in this channel, and items
            /// lost with a receiver that died holding them.
            pub fn stats(&self) -> $crate::channel::ChannelStats {
                self.endpoint.stats()
            }
        }

        impl$(<$t: $crate::ring::Pod>)? Drop for $end$(<$t>)? {
            fn drop(&mut self) {
                // Whatever the ring must finish first (a leaked grant to
                // publish), while our slot still protects it.
                $(self.ring.$before_leaving();)?
                self.endpoint.leave();
                self.ring.$wake();
            }
        }
    };
}

pub(crate) use endpoint_common;

/// A ring's producing end, as the send loops need it.
pub(crate) trait PushEnd<T> {
    /// `Ok`, or the item back with whether the ring was corrupt.
    fn push(&mut self, item: T) -> Result<(), (T, bool)>;
    fn wait_space(
        &mut self,
        strategy: WaitStrategy,
        until: Deadline,
        stop: &mut dyn FnMut() -> bool,
    );
}

/// A ring's consuming end, as the receive loops need it.
pub(crate) trait PopEnd<T> {
    fn pop(&mut self) -> Result<Option<T>, crate::ring::Corruption>;
    fn wait_data(
        &mut self,
        strategy: WaitStrategy,
        until: Deadline,
        stop: &mut dyn FnMut() -> bool,
    );
}

/// One try: full is `Full`, a departed receiver side is `Disconnected`.
#[inline]
pub(crate) fn try_send<T: Copy>(
    ring: &mut impl PushEnd<T>,
    endpoint: &mut Endpoint,
    item: T,
) -> Result<(), TrySendError<T>> {
    if endpoint.peer_gone() {
        return Err(TrySendError::Disconnected(item));
    }
    match ring.push(item) {
        // Pushed into private zeros if the file was truncated: not sent.
        Ok(()) if endpoint.truncated() => Err(TrySendError::Corrupted(item)),
        Ok(()) => Ok(()),
        Err((item, true)) => Err(TrySendError::Corrupted(item)),
        Err((item, false)) => full_or_gone(endpoint, item),
    }
}

#[cold]
fn full_or_gone<T>(endpoint: &mut Endpoint, item: T) -> Result<(), TrySendError<T>> {
    if endpoint.check_intact().is_err() {
        return Err(TrySendError::Corrupted(item));
    }
    match endpoint.peer_state() {
        PeerState::Present => Err(TrySendError::Full(item)),
        PeerState::Gone => Err(TrySendError::Disconnected(item)),
        PeerState::Removed => Err(TrySendError::Removed(item)),
    }
}

/// How many clock-free polls a blocking call makes before it reads the
/// clock (for deadlines and the reaper): a peer that answers within a few
/// hundred nanoseconds is met here, at the cost of a load per poll.
fn clock_free_polls(strategy: WaitStrategy) -> u32 {
    match strategy {
        WaitStrategy::BusySpin => 1024,
        WaitStrategy::SpinThenPark { spins, .. } => spins.min(1024),
        WaitStrategy::Park => 0,
    }
}

/// Sends, waiting for room for `timeout` (or forever).
pub(crate) fn send<T: Copy>(
    ring: &mut impl PushEnd<T>,
    endpoint: &mut Endpoint,
    mut item: T,
    timeout: Option<Duration>,
) -> Result<(), SendTimeoutError<T>> {
    if endpoint.peer_gone() {
        return Err(SendTimeoutError::Disconnected(item));
    }
    for _ in 0..clock_free_polls(endpoint.strategy()) {
        match ring.push(item) {
            Ok(()) if endpoint.truncated() => return Err(SendTimeoutError::Corrupted(item)),
            Ok(()) => return Ok(()),
            Err((back, true)) => return Err(SendTimeoutError::Corrupted(back)),
            Err((back, false)) => item = back,
        }
        std::hint::spin_loop();
    }
    let deadline = timeout.map(Deadline::after);
    loop {
        match try_send(ring, endpoint, item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => item = back,
            Err(TrySendError::Disconnected(back)) => {
                return Err(SendTimeoutError::Disconnected(back));
            }
            Err(TrySendError::Removed(back)) => return Err(SendTimeoutError::Removed(back)),
            Err(TrySendError::Corrupted(back)) => return Err(SendTimeoutError::Corrupted(back)),
        }
        let Some(until) = endpoint.slice(deadline) else {
            return Err(SendTimeoutError::Timeout(item));
        };
        let peers = endpoint.peers();
        let mut stop = || peers.is_gone();
        ring.wait_space(endpoint.strategy(), until, &mut stop);
    }
}

/// A popped item, unless the file was truncated under us: then it came
/// from private zeros.
#[inline]
fn received<T>(endpoint: &Endpoint, item: T) -> Result<T, TryRecvError> {
    if endpoint.truncated() {
        return Err(TryRecvError::Corrupted(TRUNCATED));
    }
    Ok(item)
}

/// One try. An empty ring whose senders have all left reports
/// `Disconnected` only after a last look, so nothing sent is lost.
#[inline]
pub(crate) fn try_recv<T>(
    ring: &mut impl PopEnd<T>,
    endpoint: &mut Endpoint,
) -> Result<T, TryRecvError> {
    if let Some(item) = ring.pop()? {
        return received(endpoint, item);
    }
    empty_or_gone(ring, endpoint)
}

#[cold]
fn empty_or_gone<T>(ring: &mut impl PopEnd<T>, endpoint: &mut Endpoint) -> Result<T, TryRecvError> {
    endpoint.check_intact()?;
    let end = match endpoint.peer_state() {
        PeerState::Present => return Err(TryRecvError::Empty),
        PeerState::Gone => TryRecvError::Disconnected,
        PeerState::Removed => TryRecvError::Removed,
    };
    // The last sender's leaving (Release) was seen (Acquire): everything it
    // pushed is visible now.
    match ring.pop()? {
        Some(item) => received(endpoint, item),
        None => Err(end),
    }
}

/// Receives, waiting for `timeout` (or forever).
pub(crate) fn recv<T>(
    ring: &mut impl PopEnd<T>,
    endpoint: &mut Endpoint,
    timeout: Option<Duration>,
) -> Result<T, RecvTimeoutError> {
    for _ in 0..clock_free_polls(endpoint.strategy()) {
        if let Some(item) = ring.pop()? {
            return received(endpoint, item).map_err(|_| RecvTimeoutError::Corrupted(TRUNCATED));
        }
        std::hint::spin_loop();
    }
    let deadline = timeout.map(Deadline::after);
    loop {
        match try_recv(ring, endpoint) {
            Ok(item) => return Ok(item),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Removed) => return Err(RecvTimeoutError::Removed),
            Err(TryRecvError::Corrupted(c)) => return Err(RecvTimeoutError::Corrupted(c)),
        }
        let Some(until) = endpoint.slice(deadline) else {
            return Err(RecvTimeoutError::Timeout);
        };
        let peers = endpoint.peers();
        let mut stop = || peers.is_gone();
        ring.wait_data(endpoint.strategy(), until, &mut stop);
    }
}

pub(crate) fn blocking_send_error<T>(e: SendTimeoutError<T>) -> SendError<T> {
    match e {
        SendTimeoutError::Disconnected(t) => SendError::Disconnected(t),
        SendTimeoutError::Removed(t) => SendError::Removed(t),
        // Without a deadline there is no timeout; keep the item either way.
        SendTimeoutError::Corrupted(t) | SendTimeoutError::Timeout(t) => SendError::Corrupted(t),
    }
}

pub(crate) fn blocking_recv_error(e: RecvTimeoutError) -> RecvError {
    match e {
        RecvTimeoutError::Corrupted(c) => RecvError::Corrupted(c),
        RecvTimeoutError::Removed => RecvError::Removed,
        RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout => RecvError::Disconnected,
    }
}
