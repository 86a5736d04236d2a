//! What the child processes do: attach to the channel named in the
//! environment, then send or receive until told to stop, writing every
//! step to their ledger entry first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ipcring::channel::records::RecordSendError;
use ipcring::channel::{ChannelError, RecvTimeoutError, SendTimeoutError, mpmc, records};
use ipcring::segment::Address;

use super::ChannelKind;
use super::ledger::{ConsumerEntry, DUPLICATE_SLOTS, Ledger, consumer_phase, producer_phase};
use super::message::{self, Item, Stamp};

/// How long one blocking call waits before the child looks at its flags.
const POLL: Duration = Duration::from_millis(50);

/// The environment a child reads: which channel, which ledger, which entry.
pub const CHANNEL_VAR: &str = "SOAK_CHANNEL";
pub const LEDGER_VAR: &str = "SOAK_LEDGER";
pub const ID_VAR: &str = "SOAK_ID";
pub const PARENT_VAR: &str = "SOAK_PARENT";

/// What one send came to.
enum Sent {
    Ok,
    /// Full, timed out, or no receiver now: try the same message again.
    Again,
    Failed(String),
}

/// What one receive came to.
enum Got {
    Message,
    /// Nothing within the poll interval.
    Nothing,
    /// Nothing, and no sender is attached.
    Disconnected,
    Failed(String),
}

/// Sends one message; a sender that reserves before it writes marks the
/// reservation in `phase` (see `producer_phase::GRANTED`).
trait Outbox {
    fn send(&mut self, stamp: Stamp, phase: &AtomicU64) -> Sent;
}

/// Calls `handle` with the message's bytes while the message is still
/// held (a record view is released only after `handle` returns).
trait Inbox {
    fn recv(&mut self, handle: &mut dyn FnMut(&[u8])) -> Got;
}

struct MpmcOutbox(mpmc::Sender<Item>);

impl Outbox for MpmcOutbox {
    fn send(&mut self, stamp: Stamp, _phase: &AtomicU64) -> Sent {
        match self.0.send_timeout(Item::new(stamp), POLL) {
            Ok(()) => Sent::Ok,
            Err(SendTimeoutError::Timeout(_)) => Sent::Again,
            Err(SendTimeoutError::Disconnected(_)) => {
                // Every receiver is dead or replaced right now.
                std::thread::sleep(Duration::from_millis(1));
                Sent::Again
            }
            Err(e @ (SendTimeoutError::Corrupted(_) | SendTimeoutError::Removed(_))) => {
                Sent::Failed(format!("send: {e}"))
            }
        }
    }
}

struct MpmcInbox(mpmc::Receiver<Item>);

impl Inbox for MpmcInbox {
    fn recv(&mut self, handle: &mut dyn FnMut(&[u8])) -> Got {
        match self.0.recv_timeout(POLL) {
            Ok(item) => {
                handle(item.bytes());
                Got::Message
            }
            Err(RecvTimeoutError::Timeout) => Got::Nothing,
            Err(RecvTimeoutError::Disconnected) => Got::Disconnected,
            Err(e @ (RecvTimeoutError::Corrupted(_) | RecvTimeoutError::Removed)) => {
                Got::Failed(format!("recv: {e}"))
            }
        }
    }
}

struct RecordOutbox {
    sender: records::Sender,
    buffer: Vec<u8>,
}

impl Outbox for RecordOutbox {
    fn send(&mut self, stamp: Stamp, phase: &AtomicU64) -> Sent {
        let max = self.sender.max_record().min(1500);
        let len = message::record_len(stamp, max);
        self.buffer.resize(len, 0);
        // Every other message is made in place, as a zero-copy sender
        // would: reserved first, then produced and written into the grant
        // piece by piece, then committed. A kill between reserve and commit
        // leaves a claimed range only a crash-safe ring can repair.
        if stamp.seq % 2 == 1 {
            match self.sender.try_reserve(len) {
                Ok(mut grant) => {
                    phase.store(producer_phase::GRANTED, Relaxed);
                    message::encode(stamp, &mut self.buffer);
                    let (head, rest) = self.buffer.split_at(message::HEADER_LEN);
                    let (body, sum) = rest.split_at(len - message::MIN_LEN);
                    grant.write_at(0, head);
                    grant.write_at(message::HEADER_LEN, body);
                    grant.write_at(len - message::CHECKSUM_LEN, sum);
                    grant.commit();
                    phase.store(producer_phase::SENDING, Relaxed);
                    return Sent::Ok;
                }
                // No room now: wait for it in `send_timeout` below.
                Err(RecordSendError::Full | RecordSendError::Disconnected) => {}
                Err(e) => return Sent::Failed(format!("reserve: {e}")),
            }
        }
        message::encode(stamp, &mut self.buffer);
        match self.sender.send_timeout(&self.buffer, POLL) {
            Ok(()) => Sent::Ok,
            Err(RecordSendError::Timeout | RecordSendError::Full) => Sent::Again,
            Err(RecordSendError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(1));
                Sent::Again
            }
            Err(e) => Sent::Failed(format!("send: {e}")),
        }
    }
}

struct RecordInbox {
    receiver: records::Receiver,
    buffer: Vec<u8>,
}

impl Inbox for RecordInbox {
    fn recv(&mut self, handle: &mut dyn FnMut(&[u8])) -> Got {
        match self.receiver.recv_timeout(POLL) {
            Ok(view) => {
                self.buffer.resize(view.len(), 0);
                view.read_at(0, &mut self.buffer);
                handle(&self.buffer);
                drop(view);
                Got::Message
            }
            Err(RecvTimeoutError::Timeout) => Got::Nothing,
            Err(RecvTimeoutError::Disconnected) => Got::Disconnected,
            Err(e @ (RecvTimeoutError::Corrupted(_) | RecvTimeoutError::Removed)) => {
                Got::Failed(format!("recv: {e}"))
            }
        }
    }
}

fn open_outbox(kind: ChannelKind, address: &Address) -> Result<Box<dyn Outbox>, ChannelError> {
    Ok(match kind {
        ChannelKind::Mpmc => Box::new(MpmcOutbox(mpmc::Sender::open(address)?)),
        ChannelKind::Records => Box::new(RecordOutbox {
            sender: records::Sender::open(address)?,
            buffer: Vec::new(),
        }),
    })
}

fn open_inbox(kind: ChannelKind, address: &Address) -> Result<Box<dyn Inbox>, ChannelError> {
    Ok(match kind {
        ChannelKind::Mpmc => Box::new(MpmcInbox(mpmc::Receiver::open(address)?)),
        ChannelKind::Records => Box::new(RecordInbox {
            receiver: records::Receiver::open(address)?,
            buffer: Vec::new(),
        }),
    })
}

/// Runs this process as the child `role` ("producer" or "consumer").
pub fn run_child(kind: ChannelKind, role: &str) {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    die_with_parent(var(PARENT_VAR).parse().expect("parent pid"));
    let address: Address = var(CHANNEL_VAR).parse().expect("channel address");
    let ledger = Ledger::open(&var(LEDGER_VAR).parse().expect("ledger address"));
    let id: usize = var(ID_VAR).parse().expect("child id");
    match role {
        "producer" => produce(kind, &address, &ledger, id),
        "consumer" => consume(kind, &address, &ledger, id),
        other => panic!("unknown soak role {other}"),
    }
}

/// Has the kernel kill this process when the test process dies, so that a
/// test killed from outside leaves no child behind.
fn die_with_parent(parent: u32) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no
    // memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The parent may have died before the call above took effect.
    if std::os::unix::process::parent_id() != parent {
        std::process::exit(0);
    }
}

fn produce(kind: ChannelKind, address: &Address, ledger: &Ledger, id: usize) {
    let me = ledger.producer(id);
    me.pid().store(u64::from(std::process::id()), Relaxed);
    me.phase().store(producer_phase::ATTACHING, Relaxed);
    let mut outbox = match open_outbox(kind, address) {
        Ok(outbox) => outbox,
        Err(e) => {
            me.phase().store(producer_phase::FAILED, Relaxed);
            panic!("producer {id}: attach: {e}");
        }
    };
    let stop = || ledger.stop_flag().load(Relaxed) != 0;
    'messages: for seq in 0..ledger.max_seq() {
        if stop() {
            break;
        }
        me.phase().store(producer_phase::SENDING, Relaxed);
        let stamp = Stamp {
            producer: id as u32,
            seq,
        };
        loop {
            match outbox.send(stamp, me.phase()) {
                Sent::Ok => break,
                // Told to stop while the channel had no room: the message
                // was not sent, and `sent` does not count it.
                Sent::Again if stop() => break 'messages,
                Sent::Again => {}
                Sent::Failed(why) => {
                    me.phase().store(producer_phase::FAILED, Relaxed);
                    panic!("producer {id}, {stamp}: {why}");
                }
            }
        }
        me.sent().store(u64::from(seq) + 1, Relaxed);
    }
    me.phase().store(producer_phase::DONE, Relaxed);
}

/// A consumer's bookkeeping: records each message it takes in the ledger
/// (received, repeated, torn or out of order).
pub struct Tally<'a> {
    ledger: &'a Ledger,
    me: ConsumerEntry<'a>,
    id: usize,
    /// Per producer, the highest sequence number received here.
    latest: HashMap<u32, u32>,
    /// Whether torn messages are reported on stderr as they arrive.
    announce: bool,
}

impl<'a> Tally<'a> {
    pub fn new(ledger: &'a Ledger, id: usize) -> Tally<'a> {
        let me = ledger.consumer(id);
        me.pid().store(u64::from(std::process::id()), Relaxed);
        Tally {
            ledger,
            me,
            id,
            latest: HashMap::new(),
            announce: true,
        }
    }

    /// Does not report torn messages on stderr (for tests that make them).
    pub fn quiet(mut self) -> Tally<'a> {
        self.announce = false;
        self
    }

    pub fn entry(&self) -> &ConsumerEntry<'a> {
        &self.me
    }

    /// Records one message, still held in the channel or just taken from it.
    pub fn take(&mut self, bytes: &[u8]) {
        let me = &self.me;
        me.phase().store(consumer_phase::HOLDING, Relaxed);
        let stamp = match message::verify(bytes) {
            Ok(stamp) => stamp,
            Err(torn) => {
                if me.torn().fetch_add(1, Relaxed) == 0 {
                    me.first_torn().store(torn.to_word(), Relaxed);
                }
                if self.announce {
                    eprintln!("consumer {}: torn message: {torn}", self.id);
                }
                return;
            }
        };
        let key = stamp.key() + 1;
        me.holding().store(key, Relaxed);
        match self.ledger.mark_received(stamp) {
            None => {
                me.strays().fetch_add(1, Relaxed);
            }
            Some(false) => {
                let seen = me.duplicates().fetch_add(1, Relaxed) as usize;
                if seen < DUPLICATE_SLOTS {
                    me.duplicate(seen).store(key, Relaxed);
                }
            }
            Some(true) => {
                let latest = self.latest.entry(stamp.producer).or_insert(stamp.seq);
                if *latest > stamp.seq {
                    if me.out_of_order().fetch_add(1, Relaxed) == 0 {
                        me.first_out_of_order().store(key, Relaxed);
                    }
                } else {
                    *latest = stamp.seq;
                }
            }
        }
        me.last().store(key, Relaxed);
        me.received().fetch_add(1, Relaxed);
    }

    /// The message taken last is released: nothing is in hand.
    pub fn released(&self) {
        self.me.holding().store(0, Relaxed);
        self.me.phase().store(consumer_phase::IDLE, Relaxed);
    }
}

fn consume(kind: ChannelKind, address: &Address, ledger: &Ledger, id: usize) {
    let mut tally = Tally::new(ledger, id);
    tally
        .entry()
        .phase()
        .store(consumer_phase::ATTACHING, Relaxed);
    let mut inbox = match open_inbox(kind, address) {
        Ok(inbox) => inbox,
        Err(e) => {
            tally.entry().phase().store(consumer_phase::FAILED, Relaxed);
            panic!("consumer {id}: attach: {e}");
        }
    };
    loop {
        tally
            .entry()
            .phase()
            .store(consumer_phase::RECEIVING, Relaxed);
        match inbox.recv(&mut |bytes| tally.take(bytes)) {
            Got::Message => tally.released(),
            Got::Nothing | Got::Disconnected if ledger.drain_flag().load(Relaxed) != 0 => break,
            // No sender at the moment: the others are being replaced.
            Got::Disconnected => std::thread::sleep(Duration::from_millis(1)),
            Got::Nothing => {}
            Got::Failed(why) => {
                tally.entry().phase().store(consumer_phase::FAILED, Relaxed);
                panic!("consumer {id}: {why}");
            }
        }
    }
    tally.entry().phase().store(consumer_phase::DONE, Relaxed);
}

/// After a soak: a fresh sender and a fresh receiver attach, and the
/// sender's message must reach the receiver; then, the sender gone, the
/// receiver must be told so. Whatever the receiver finds before the
/// sender's message is recorded through `tally` as received late.
pub fn fresh_pair_exchange(
    kind: ChannelKind,
    address: &Address,
    tally: &mut Tally<'_>,
) -> Result<(), String> {
    let mut inbox = open_inbox(kind, address).map_err(|e| format!("a fresh receiver: {e}"))?;
    let mut outbox = open_outbox(kind, address).map_err(|e| format!("a fresh sender: {e}"))?;
    let sentinel = Stamp {
        producer: message::SENTINEL_PRODUCER,
        seq: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match outbox.send(sentinel, &AtomicU64::new(0)) {
            Sent::Ok => break,
            Sent::Again if Instant::now() < deadline => {}
            Sent::Again => return Err("a fresh sender found no room for 5 s".into()),
            Sent::Failed(why) => return Err(format!("a fresh sender: {why}")),
        }
    }
    loop {
        let mut sentinel_seen = false;
        let got = inbox.recv(&mut |bytes| {
            if message::verify(bytes).is_ok_and(|stamp| stamp == sentinel) {
                sentinel_seen = true;
            } else {
                tally.take(bytes);
            }
        });
        match got {
            Got::Message if sentinel_seen => break,
            Got::Message => tally.released(),
            Got::Failed(why) => return Err(format!("a fresh receiver: {why}")),
            Got::Nothing | Got::Disconnected if Instant::now() < deadline => {}
            Got::Nothing | Got::Disconnected => {
                return Err(
                    "a fresh receiver did not get a fresh sender's message within 5 s".into(),
                );
            }
        }
    }
    drop(outbox);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match inbox.recv(&mut |bytes| tally.take(bytes)) {
            Got::Disconnected => return Ok(()),
            Got::Message => tally.released(),
            Got::Failed(why) => return Err(format!("a fresh receiver: {why}")),
            Got::Nothing if Instant::now() < deadline => {}
            Got::Nothing => {
                return Err(
                    "with every sender gone, a fresh receiver still was not told so after 2 s"
                        .into(),
                );
            }
        }
    }
}
