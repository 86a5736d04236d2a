//! Replays a channel segment left by endpoints that died mid-operation,
//! then damaged in its endpoint tables and ring, and runs every channel
//! operation on it with fresh endpoints: each must return a value or a
//! typed error, never panic or hang.
//!
//! Shared by the `channel_image` fuzz target and `tests/fuzz_regressions.rs`.
//! The library must be built with its `failpoints` feature.
//!
//! The segment is an anonymous memfd; every endpoint gets its own mapping
//! of it, as a process would. A process's death is what a survivor can see
//! of it: its endpoint slot holds the identity of a process that is gone.
//! So an endpoint "dies" by running an operation on a thread of its own
//! with a failpoint armed (the operation stops there), after which its
//! slot, if it still holds our identity, is given a dead identity and the
//! endpoint is dropped; its drop then finds the slot not its own and
//! leaves it. Nothing is forgotten, so no descriptor or mapping leaks.
//!
//! The input, byte by byte (missing bytes read as zero):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | kind (`% 4`): SPSC of `u64`, MPMC of `u32`, records with one sender, with many |
//! | 1 | capacity: 1 to 8 items, or a 64 to 512-byte record buffer |
//! | 2 | waits: strategy (bits 0-1), timeout (bits 2-3) |
//! | 3 | script length, 0 to 12 steps |
//! | 4.. | the script: two bytes per step, operation and argument |
//! | rest | damage, four bytes per change: area, offset low, offset high, byte |
//!
//! Damage marked "late" is applied only once the fresh endpoints have
//! attached: a peer may scribble at any time, and attaching validates only
//! what it sees then.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipcring::channel::{self, ChannelOptions, RING_OFFSET, mpmc, records, spsc};
use ipcring::failpoint::abandon_at;
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{OpenOptions, ProcessIdentity, Segment};
use ipcring::sync::WaitStrategy;

/// Endpoints per side the script keeps at once.
const MAX_SCRIPT_ENDPOINTS: usize = 3;
/// Operations on the damaged image, at most.
const MAX_OPERATIONS: usize = 64;
/// Blocking calls per replay, and how many of them wait their whole
/// timeout (see `Waits::blocking_left`).
const BLOCKING_CALLS: u32 = 4;
const FULL_WAITS: u32 = 2;
/// A blocking call that returns this long after its timeout hangs.
const OVERRUN: Duration = Duration::from_secs(2);

/// The endpoint tables (see `channel::Endpoints`): the ready word, then per
/// side a presence word and 31 slots.
const TABLES_LEN: usize = 8 + 2 * (8 + 31 * 8);
const PRODUCER_SLOTS: usize = 16;
const CONSUMER_SLOTS: usize = 8 + 256 + 8;
const SLOTS_PER_SIDE: usize = 31;
/// A slot word being reaped has this bit set (`channel::REAPING`).
const REAPING: u64 = 1 << 63;
/// The identity of a process that is gone: pid 0 never runs.
const DEAD: u64 = 0x5eed;

/// The ring's header and claim table, as in the ring layer.
const LINE: usize = 128;
const RING_HEADER_LINES: usize = 5;
const CLAIM_LINES: usize = 1 + 32 + 32;

struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Spsc,
    Mpmc,
    Records(ProducerMode),
}

/// One endpoint of any kind.
enum End {
    SpscTx(spsc::Sender<u64>),
    SpscRx(spsc::Receiver<u64>),
    MpmcTx(mpmc::Sender<u32>),
    MpmcRx(mpmc::Receiver<u32>),
    RecordTx(records::Sender),
    RecordRx(records::Receiver),
}

/// What the probe's blocking calls use.
#[derive(Debug)]
struct Waits {
    strategy: WaitStrategy,
    timeout: Duration,
    /// Blocking calls left. The first ones wait the whole timeout, the
    /// next a zero one (still through the deadline checks), and after
    /// that the probe makes the non-blocking call instead: each blocking
    /// call polls a thousand times before it reads the clock, and a replay
    /// should take a millisecond or so, not tens.
    blocking_left: Cell<u32>,
}

impl Waits {
    fn new(byte: u8) -> Waits {
        let strategy = match byte & 3 {
            0 => WaitStrategy::BusySpin,
            1 => WaitStrategy::SpinThenPark {
                spins: 16,
                yields: 1,
            },
            2 => WaitStrategy::Park,
            _ => WaitStrategy::default(),
        };
        let timeout = [0, 100, 1_000, 3_000][usize::from(byte >> 2 & 3)];
        Waits {
            strategy,
            timeout: Duration::from_micros(timeout),
            blocking_left: Cell::new(BLOCKING_CALLS),
        }
    }

    /// Runs a blocking call with a timeout and checks it returns in time;
    /// `None` without calling once the budget is spent.
    fn run<R>(&self, call: impl FnOnce(Duration) -> R) -> Option<R> {
        let left = self.blocking_left.get().checked_sub(1)?;
        self.blocking_left.set(left);
        let timeout = if left >= BLOCKING_CALLS - FULL_WAITS {
            self.timeout
        } else {
            Duration::ZERO
        };
        let started = Instant::now();
        let result = call(timeout);
        let took = started.elapsed();
        assert!(
            took <= timeout + OVERRUN,
            "a call with a {timeout:?} timeout took {took:?}"
        );
        Some(result)
    }
}

/// The segment's table words and user area, reached through raw pointers
/// into the creator's mapping.
struct Image<'a> {
    segment: &'a Segment,
}

impl Image<'_> {
    /// The slot word of `index` on one side.
    fn slot(&self, producers: bool, index: usize) -> &AtomicU64 {
        let base = if producers {
            PRODUCER_SLOTS
        } else {
            CONSUMER_SLOTS
        };
        assert!(index < SLOTS_PER_SIDE && base + 8 * SLOTS_PER_SIDE <= self.segment.user_len());
        // SAFETY: in the user area (checked above), 8-aligned (the area is
        // page-aligned and the offset a multiple of 8), and the area lives
        // as long as the segment; shared words are reached atomically.
        unsafe {
            &*self
                .segment
                .user_ptr()
                .add(base + 8 * index)
                .cast::<AtomicU64>()
        }
    }

    fn side(&self, producers: bool) -> [u64; SLOTS_PER_SIDE] {
        std::array::from_fn(|index| self.slot(producers, index).load(Ordering::Relaxed))
    }

    /// Makes every slot of ours that `keep` does not name look dead: a
    /// holder's word gets a dead identity, a reaper's mark a dead reaper.
    fn bury(&self, ours: u64, keep: &[(bool, usize)]) {
        for producers in [true, false] {
            for index in 0..SLOTS_PER_SIDE {
                if keep.contains(&(producers, index)) {
                    continue;
                }
                let slot = self.slot(producers, index);
                let _ = slot.compare_exchange(ours, DEAD, Ordering::Relaxed, Ordering::Relaxed);
                let _ = slot.compare_exchange(
                    ours | REAPING,
                    DEAD | REAPING,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Changes bytes of the user area: the changes that are `late` or not.
    /// Four bytes per change: an area (bits 0-1; bit 6: late; bit 7: store
    /// the byte rather than xor it in), a 16-bit offset within it, and the
    /// byte. The areas are the endpoint tables,
    /// the ring's header words, its claim table, and the whole user area.
    /// The tables' `ready` word is left alone: an endpoint that finds it
    /// unset waits a second for the creator, by design, which would only
    /// slow the fuzzer down.
    fn damage(&self, damage: &[u8], late: bool) {
        let len = self.segment.user_len();
        let changes = damage
            .chunks_exact(4)
            .filter(|change| (change[0] & 0x40 != 0) == late);
        for change in changes {
            let (area, offset, byte) = (
                change[0],
                usize::from(u16::from_le_bytes([change[1], change[2]])),
                change[3],
            );
            let at = match area & 3 {
                0 => 8 + offset % (TABLES_LEN - 8),
                1 => {
                    let line = offset % RING_HEADER_LINES;
                    RING_OFFSET + line * LINE + (offset >> 8) % if line == 0 { 40 } else { 8 }
                }
                2 => {
                    let line = offset % CLAIM_LINES;
                    RING_OFFSET
                        + RING_HEADER_LINES * LINE
                        + line * LINE
                        + (offset >> 8) % if line == 0 { 16 } else { 8 }
                }
                _ => 8 + offset % (len - 8),
            };
            if at >= len {
                // The claim table of an SPSC ring, which has none.
                continue;
            }
            // SAFETY: `at` is inside the user area (checked above), which
            // the creator's handle keeps mapped; every endpoint here is idle
            // while the image is changed.
            unsafe {
                let target = self.segment.user_ptr().add(at);
                if area & 0x80 != 0 {
                    target.write(byte);
                } else {
                    target.write(target.read() ^ byte);
                }
            }
        }
    }
}

impl End {
    fn attach(kind: Kind, sender: bool, segment: Segment) -> Option<End> {
        let end = match (kind, sender) {
            (Kind::Spsc, true) => End::SpscTx(spsc::Sender::attach(segment).ok()?),
            (Kind::Spsc, false) => End::SpscRx(spsc::Receiver::attach(segment).ok()?),
            (Kind::Mpmc, true) => End::MpmcTx(mpmc::Sender::attach(segment).ok()?),
            (Kind::Mpmc, false) => End::MpmcRx(mpmc::Receiver::attach(segment).ok()?),
            (Kind::Records(_), true) => End::RecordTx(records::Sender::attach(segment).ok()?),
            (Kind::Records(_), false) => End::RecordRx(records::Receiver::attach(segment).ok()?),
        };
        Some(end)
    }

    fn is_sender(&self) -> bool {
        matches!(self, End::SpscTx(_) | End::MpmcTx(_) | End::RecordTx(_))
    }

    /// One non-blocking operation, the script's unit of work.
    fn step(&mut self, argument: u8) {
        let mut out = Vec::new();
        match self {
            End::SpscTx(tx) => {
                let _ = tx.try_send(u64::from(argument));
            }
            End::SpscRx(rx) => {
                let _ = rx.try_recv();
            }
            End::MpmcTx(tx) => {
                let _ = tx.try_send(u32::from(argument));
            }
            End::MpmcRx(rx) => {
                let _ = rx.try_recv();
            }
            End::RecordTx(tx) => {
                let len = usize::from(argument) % (tx.max_record() + 1);
                let _ = tx.try_send(&vec![argument; len]);
            }
            End::RecordRx(rx) => {
                let _ = rx.try_recv_into(&mut out);
            }
        }
    }

    /// Operation `i` of the probe: every kind of call, blocking ones with
    /// a short timeout.
    fn probe(&mut self, i: usize, step: u8, waits: &Waits) {
        let value = step.wrapping_add(i as u8);
        let mut out = Vec::new();
        match self {
            End::SpscTx(tx) => match step % 6 {
                0 | 1 => {
                    let _ = tx.try_send(u64::from(value));
                }
                2 => {
                    if waits
                        .run(|timeout| tx.send_timeout(u64::from(value), timeout))
                        .is_none()
                    {
                        let _ = tx.try_send(u64::from(value));
                    }
                }
                3 => {
                    let _ = tx.try_send_slice(&[1, 2, 3][..usize::from(value % 4)]);
                }
                4 => {
                    if let Ok(mut chunk) = tx.write_chunk_up_to(usize::from(value % 4)) {
                        chunk.fill_from_slice(&[7; 3]);
                        chunk.commit_all();
                    }
                    let _ = tx.free_slots();
                }
                _ => {
                    let _ = tx.is_disconnected();
                    let _ = tx.stats();
                }
            },
            End::SpscRx(rx) => match step % 6 {
                0 | 1 => {
                    let _ = rx.try_recv();
                }
                2 => {
                    if waits.run(|timeout| rx.recv_timeout(timeout)).is_none() {
                        let _ = rx.try_recv();
                    }
                }
                3 => {
                    let _ = rx.try_recv_slice(&mut [0; 3][..usize::from(value % 4)]);
                }
                4 => {
                    if let Ok(chunk) = rx.read_chunk_up_to(usize::from(value % 4)) {
                        let _ = chunk.get(0);
                        chunk.commit_all();
                    }
                    let _ = rx.ready_items();
                }
                _ => {
                    let _ = rx.is_disconnected();
                    let _ = rx.stats();
                }
            },
            End::MpmcTx(tx) => match step % 4 {
                0 | 1 => {
                    let _ = tx.try_send(u32::from(value));
                }
                2 => {
                    if waits
                        .run(|timeout| tx.send_timeout(u32::from(value), timeout))
                        .is_none()
                    {
                        let _ = tx.try_send(u32::from(value));
                    }
                }
                _ => {
                    let _ = tx.is_disconnected();
                    let _ = tx.stats();
                }
            },
            End::MpmcRx(rx) => match step % 4 {
                0 | 1 => {
                    let _ = rx.try_recv();
                }
                2 => {
                    if waits.run(|timeout| rx.recv_timeout(timeout)).is_none() {
                        let _ = rx.try_recv();
                    }
                }
                _ => {
                    let _ = rx.is_disconnected();
                    let _ = rx.stats();
                }
            },
            End::RecordTx(tx) => {
                let max = tx.max_record();
                let len = usize::from(value) % (max + 1);
                match step % 5 {
                    0 | 1 => {
                        let _ = tx.try_send(&vec![value; len]);
                    }
                    2 => {
                        let record = vec![value; len];
                        if waits
                            .run(|timeout| tx.send_timeout(&record, timeout))
                            .is_none()
                        {
                            let _ = tx.try_send(&record);
                        }
                    }
                    3 => {
                        if let Ok(mut grant) = tx.try_reserve(len) {
                            grant.write_at(0, &[value; 16]);
                            if value & 1 == 0 {
                                grant.commit();
                            }
                        }
                        let _ = tx.try_send(&vec![0; max + 1]);
                    }
                    _ => {
                        let _ = tx.is_disconnected();
                        let _ = tx.stats();
                    }
                }
            }
            End::RecordRx(rx) => {
                let max = rx.max_record();
                match step % 5 {
                    0 | 1 => {
                        if let Ok(len) = rx.try_recv_into(&mut out) {
                            assert!(len <= max && len == out.len());
                        }
                    }
                    2 => {
                        let received = waits.run(|timeout| {
                            rx.recv_timeout(timeout).map(|view| {
                                assert!(view.len() <= max);
                                view.to_vec()
                            })
                        });
                        if received.is_none() {
                            let _ = rx.try_recv_into(&mut out);
                        }
                    }
                    3 => {
                        if let Ok(view) = rx.try_recv() {
                            assert!(view.len() <= max);
                            let _ = view.to_vec();
                        }
                    }
                    _ => {
                        let _ = rx.is_disconnected();
                        let _ = rx.stats();
                    }
                }
            }
        }
    }

    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        match self {
            End::SpscTx(end) => end.set_wait_strategy(strategy),
            End::SpscRx(end) => end.set_wait_strategy(strategy),
            End::MpmcTx(end) => end.set_wait_strategy(strategy),
            End::MpmcRx(end) => end.set_wait_strategy(strategy),
            End::RecordTx(end) => end.set_wait_strategy(strategy),
            End::RecordRx(end) => end.set_wait_strategy(strategy),
        }
    }

    fn segment(&self) -> &Segment {
        match self {
            End::SpscTx(end) => end.segment(),
            End::SpscRx(end) => end.segment(),
            End::MpmcTx(end) => end.segment(),
            End::MpmcRx(end) => end.segment(),
            End::RecordTx(end) => end.segment(),
            End::RecordRx(end) => end.segment(),
        }
    }
}

/// Where a script endpoint may stop, by what it was doing.
const SENDER_POINTS: [&str; 8] = [
    "mpmc.push.announced",
    "mpmc.push.claimed",
    "mpmc.push.written",
    "record.reserve.announced",
    "record.reserve.claimed",
    "record.reserve.padded",
    "record.write",
    "record.commit",
];
const RECEIVER_POINTS: [&str; 6] = [
    "mpmc.pop.announced",
    "mpmc.pop.claimed",
    "mpmc.pop.read",
    "record.consume",
    "record.release.marked",
    "record.release.zeroed",
];
/// Where an attaching endpoint may stop: having claimed its slot, or while
/// reaping a dead one.
const ATTACH_POINTS: [&str; 3] = [
    "channel.attach.claimed",
    "channel.reap.marked",
    "channel.reap.repaired",
];

/// Runs `operation` on a thread whose next pass through `point` returns
/// at once. Joined, not scoped: `join` returns only once the thread has
/// exited, its thread-local destructors included, so the leak checker
/// never catches them midway.
fn stopped_at<R: Send + 'static>(
    point: &'static str,
    operation: impl FnOnce() -> R + Send + 'static,
) -> R {
    let thread = std::thread::spawn(move || {
        abandon_at(point);
        operation()
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A new mapping of the segment, as another process would open it.
fn reopen(segment: &Segment) -> Option<Segment> {
    let fd = segment.inheritable_fd().ok()?;
    Segment::from_fd(fd, &OpenOptions::new()).ok()
}

/// Replays one input.
pub fn replay(input: &[u8]) {
    let mut input = Input { bytes: input };
    let kind = match input.byte() % 4 {
        0 => Kind::Spsc,
        1 => Kind::Mpmc,
        2 => Kind::Records(ProducerMode::Single),
        _ => Kind::Records(ProducerMode::Many),
    };
    let size = input.byte();
    let waits = Waits::new(input.byte());
    let steps = usize::from(input.byte() % 13);
    let script = input.take(2 * steps);
    let damage = input.bytes;
    let options = ChannelOptions::new();
    let capacity = 1 + usize::from(size % 8);
    let created = match kind {
        Kind::Spsc => spsc::create_segment::<u64>(None, capacity, &options),
        Kind::Mpmc => mpmc::create_segment::<u32>(None, capacity, &options),
        Kind::Records(mode) => records::create_segment(None, 64 << (size % 4), mode, &options),
    };
    let segment = created.expect("an anonymous channel segment");
    let ours = ProcessIdentity::current().expect("our identity").to_word();
    let image = Image { segment: &segment };

    // The script: endpoints attach, work, leave, and die.
    let mut ends: Vec<(End, (bool, usize))> = Vec::new();
    for step in script.chunks_exact(2) {
        let (operation, argument) = (step[0], step[1]);
        let sender = argument & 0x80 != 0;
        let chosen = if ends.is_empty() {
            None
        } else {
            Some(usize::from(argument) % ends.len())
        };
        match operation % 8 {
            0 | 1 => {
                let count = ends
                    .iter()
                    .filter(|(end, _)| end.is_sender() == sender)
                    .count();
                if count >= MAX_SCRIPT_ENDPOINTS {
                    continue;
                }
                let before = image.side(sender);
                let Some(mapping) = reopen(&segment) else {
                    continue;
                };
                if let Some(end) = End::attach(kind, sender, mapping) {
                    let after = image.side(sender);
                    if let Some(index) =
                        (0..SLOTS_PER_SIDE).find(|&i| after[i] == ours && before[i] != ours)
                    {
                        ends.push((end, (sender, index)));
                    }
                }
            }
            2 | 3 => {
                if let Some(chosen) = chosen {
                    ends[chosen].0.step(argument);
                }
            }
            4 => {
                // Leaves.
                if let Some(chosen) = chosen {
                    drop(ends.swap_remove(chosen));
                }
            }
            5 => {
                // Dies part-way through an operation.
                let Some(chosen) = chosen else {
                    continue;
                };
                let (mut end, _) = ends.swap_remove(chosen);
                let point = if end.is_sender() {
                    SENDER_POINTS[usize::from(argument) % SENDER_POINTS.len()]
                } else {
                    RECEIVER_POINTS[usize::from(argument) % RECEIVER_POINTS.len()]
                };
                let end = stopped_at(point, move || {
                    end.step(argument);
                    end
                });
                bury(&image, ours, &ends, end);
            }
            6 => {
                // Dies attaching: having claimed its slot, or reaping.
                let point = ATTACH_POINTS[usize::from(argument) % ATTACH_POINTS.len()];
                let Some(mapping) = reopen(&segment) else {
                    continue;
                };
                let end = stopped_at(point, move || End::attach(kind, sender, mapping));
                if let Some(end) = end {
                    bury(&image, ours, &ends, end);
                } else {
                    bury_marks(&image, ours, &ends);
                }
            }
            _ => {
                // Dies leaving: its slot is freed, its presence bit not yet
                // cleared.
                if let Some(chosen) = chosen {
                    let (end, _) = ends.swap_remove(chosen);
                    stopped_at("channel.detach.freed", move || drop(end));
                }
            }
        }
    }

    // Whoever is left dies now, between operations.
    let all: Vec<End> = ends.drain(..).map(|(end, _)| end).collect();
    image.bury(ours, &[]);
    drop(all);
    image.damage(damage, false);

    // Fresh endpoints on the damaged image, a receiver first so that
    // senders find a peer.
    let _ = channel::stats(&segment);
    let mut fresh: Vec<End> = Vec::new();
    for sender in [false, true, true] {
        if let Some(end) = reopen(&segment).and_then(|mapping| End::attach(kind, sender, mapping)) {
            fresh.push(end);
        }
    }
    // A peer may scribble at any time: what attaching validated may be
    // wrong by the time the endpoints work (and reap).
    image.damage(damage, true);
    for end in &mut fresh {
        end.set_wait_strategy(waits.strategy);
        let _ = channel::stats(end.segment());
    }
    if !fresh.is_empty() {
        for i in 0..MAX_OPERATIONS {
            let step = match script.len() {
                0 => i as u8,
                n => script[i % n].wrapping_add(i as u8),
            };
            let count = fresh.len();
            fresh[(i + usize::from(step)) % count].probe(i, step, &waits);
        }
    }
    // Leaving in turn, each wakes the others' sleepers; nothing remains.
    drop(fresh);
    let _ = channel::stats(&segment);
}

/// Buries a dead endpoint: its slot (and any reaper's mark it left) get a
/// dead identity, then it is dropped, which leaves its slot as it is.
fn bury(image: &Image<'_>, ours: u64, live: &[(End, (bool, usize))], dead: End) {
    bury_marks(image, ours, live);
    drop(dead);
}

/// Gives every slot of ours that no live endpoint holds a dead identity.
fn bury_marks(image: &Image<'_>, ours: u64, live: &[(End, (bool, usize))]) {
    let keep: Vec<(bool, usize)> = live.iter().map(|(_, slot)| *slot).collect();
    image.bury(ours, &keep);
}

/// Descriptors this process has open, to check that a replay leaks none.
pub fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count())
}
