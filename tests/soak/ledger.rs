//! The side channel: what each child did, kept where a kill cannot undo
//! it. It is a plain shared segment, apart from the channel under test,
//! that no library code writes (its users do not register in it). Every
//! entry is one aligned 64-bit word written with one atomic store or
//! read-modify-write, so a child killed at any moment leaves each word
//! either before or after its update, never half-written.
//!
//! | words | what | written by |
//! |-------|------|------------|
//! | 0..8  | header: magic, sizes, the stop and drain flags | the test process |
//! | then `producers` × 8 | one [`ProducerEntry`] per producer incarnation | that producer |
//! | then `consumers` × 16 | one [`ConsumerEntry`] per consumer incarnation | that consumer |
//! | then `producers` × `max_seq / 64` | one bit per message: received | consumers (`fetch_or`) |
//!
//! Relaxed throughout: every word stands for itself. The test process
//! reads a child's words to judge it only after that child has exited and
//! been reaped (and `waitpid` orders everything the child did before it);
//! while children run it reads them only as progress hints.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment};

use super::message::Stamp;

const MAGIC: u64 = u64::from_le_bytes(*b"SOAKLDGR");
const HEADER_WORDS: usize = 8;
const PRODUCER_WORDS: usize = 8;
const CONSUMER_WORDS: usize = 16;
/// Duplicate keys a consumer entry keeps (it counts all of them).
pub const DUPLICATE_SLOTS: usize = 4;

/// Where a producer is in its life.
pub mod producer_phase {
    pub const NOT_STARTED: u64 = 0;
    pub const ATTACHING: u64 = 1;
    /// Inside `send` (or a reserve-write-commit) of message `sent`.
    pub const SENDING: u64 = 2;
    pub const DONE: u64 = 3;
    pub const FAILED: u64 = 4;
    /// Holding a reservation for message `sent`: reserved, not committed.
    pub const GRANTED: u64 = 5;
}

/// Where a consumer is in its life.
pub mod consumer_phase {
    pub const NOT_STARTED: u64 = 0;
    pub const ATTACHING: u64 = 1;
    /// Inside `recv`: a message may be on its way out of the channel.
    pub const RECEIVING: u64 = 2;
    /// A message is in hand (or still held in the ring) and not yet
    /// recorded or released.
    pub const HOLDING: u64 = 3;
    /// Between messages: nothing in hand.
    pub const IDLE: u64 = 4;
    pub const DONE: u64 = 5;
    pub const FAILED: u64 = 6;
}

pub fn phase_name(consumer: bool, phase: u64) -> &'static str {
    let names: &[&str] = if consumer {
        &[
            "not started",
            "attaching",
            "receiving",
            "holding",
            "idle",
            "done",
            "failed",
        ]
    } else {
        &[
            "not started",
            "attaching",
            "sending",
            "done",
            "failed",
            "holding a reservation",
        ]
    };
    names.get(phase as usize).copied().unwrap_or("?")
}

/// The shared ledger of one soak run.
pub struct Ledger {
    segment: Segment,
    producers: usize,
    consumers: usize,
    max_seq: u32,
    bitmap_words: usize,
}

impl Ledger {
    /// Creates a ledger for up to `producers` and `consumers` incarnations,
    /// each producer sending fewer than `max_seq` messages.
    pub fn create(address: &Address, producers: usize, consumers: usize, max_seq: u32) -> Ledger {
        let bitmap_words = (max_seq as usize).div_ceil(64);
        let words = HEADER_WORDS
            + producers * PRODUCER_WORDS
            + consumers * CONSUMER_WORDS
            + producers * bitmap_words;
        let options = CreateOptions::new(words * 8).register(false);
        let segment = Segment::create(address, &options).expect("create the ledger");
        let ledger = Ledger {
            segment,
            producers,
            consumers,
            max_seq,
            bitmap_words,
        };
        ledger.word(1).store(producers as u64, Relaxed);
        ledger.word(2).store(consumers as u64, Relaxed);
        ledger.word(3).store(u64::from(max_seq), Relaxed);
        ledger.word(0).store(MAGIC, Relaxed);
        ledger
    }

    /// Opens the ledger a test process created.
    pub fn open(address: &Address) -> Ledger {
        let options = OpenOptions::new().register(false);
        let segment = Segment::open(address, &options).expect("open the ledger");
        let read = |index: usize| {
            segment
                .view::<AtomicU64>(index * 8)
                .expect("ledger header")
                .load(Relaxed)
        };
        assert_eq!(read(0), MAGIC, "not a soak ledger");
        let (producers, consumers, max_seq) = (read(1), read(2), read(3));
        Ledger {
            producers: producers as usize,
            consumers: consumers as usize,
            max_seq: max_seq as u32,
            bitmap_words: (max_seq as usize).div_ceil(64),
            segment,
        }
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        self.segment
            .view::<AtomicU64>(index * 8)
            .expect("a ledger word in bounds")
    }

    pub fn producer_capacity(&self) -> usize {
        self.producers
    }

    pub fn consumer_capacity(&self) -> usize {
        self.consumers
    }

    /// Messages one producer may send (it retires at this many).
    pub fn max_seq(&self) -> u32 {
        self.max_seq
    }

    /// Producers stop sending once this is set.
    pub fn stop_flag(&self) -> &AtomicU64 {
        self.word(4)
    }

    /// Consumers leave once this is set and the channel looks empty.
    pub fn drain_flag(&self) -> &AtomicU64 {
        self.word(5)
    }

    pub fn producer(&self, id: usize) -> ProducerEntry<'_> {
        assert!(id < self.producers, "producer {id} beyond the ledger");
        ProducerEntry {
            ledger: self,
            base: HEADER_WORDS + id * PRODUCER_WORDS,
        }
    }

    pub fn consumer(&self, id: usize) -> ConsumerEntry<'_> {
        assert!(id < self.consumers, "consumer {id} beyond the ledger");
        ConsumerEntry {
            ledger: self,
            base: HEADER_WORDS + self.producers * PRODUCER_WORDS + id * CONSUMER_WORDS,
        }
    }

    fn bit(&self, stamp: Stamp) -> Option<(&AtomicU64, u64)> {
        let producer = stamp.producer as usize;
        let seq = stamp.seq as usize;
        if producer >= self.producers || seq >= self.bitmap_words * 64 {
            return None;
        }
        let base = HEADER_WORDS
            + self.producers * PRODUCER_WORDS
            + self.consumers * CONSUMER_WORDS
            + producer * self.bitmap_words;
        Some((self.word(base + seq / 64), 1 << (seq % 64)))
    }

    /// Records `stamp` as received: `Some(true)` the first time,
    /// `Some(false)` for a repeat, `None` if no producer could have sent it.
    pub fn mark_received(&self, stamp: Stamp) -> Option<bool> {
        let (word, bit) = self.bit(stamp)?;
        // One atomic read-modify-write: of two consumers receiving the same
        // message, exactly one sees the bit clear.
        Some(word.fetch_or(bit, Relaxed) & bit == 0)
    }

    pub fn was_received(&self, stamp: Stamp) -> bool {
        self.bit(stamp)
            .is_some_and(|(word, bit)| word.load(Relaxed) & bit != 0)
    }

    /// The highest sequence number of `producer` marked received, if any.
    pub fn highest_received(&self, producer: u32) -> Option<u32> {
        (0..self.bitmap_words).rev().find_map(|index| {
            let (word, _) = self.bit(Stamp {
                producer,
                seq: (index * 64) as u32,
            })?;
            let bits = word.load(Relaxed);
            (bits != 0).then(|| (index * 64 + 63 - bits.leading_zeros() as usize) as u32)
        })
    }
}

/// One producer incarnation's words.
pub struct ProducerEntry<'a> {
    ledger: &'a Ledger,
    base: usize,
}

impl ProducerEntry<'_> {
    pub fn pid(&self) -> &AtomicU64 {
        self.ledger.word(self.base)
    }

    /// One of [`producer_phase`].
    pub fn phase(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 1)
    }

    /// Sends that returned `Ok`: messages `0..sent` were committed. Stored
    /// after each `Ok`, so a kill right after one leaves it one short.
    pub fn sent(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 2)
    }
}

/// One consumer incarnation's words.
pub struct ConsumerEntry<'a> {
    ledger: &'a Ledger,
    base: usize,
}

impl ConsumerEntry<'_> {
    pub fn pid(&self) -> &AtomicU64 {
        self.ledger.word(self.base)
    }

    /// One of [`consumer_phase`].
    pub fn phase(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 1)
    }

    /// Messages received, repeats included.
    pub fn received(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 2)
    }

    /// Messages that failed to verify.
    pub fn torn(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 3)
    }

    /// The first torn message, packed by `Torn::to_word`.
    pub fn first_torn(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 4)
    }

    /// Messages received that some consumer had already received.
    pub fn duplicates(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 5)
    }

    /// The first `DUPLICATE_SLOTS` repeated keys, each `key + 1` (0: none).
    pub fn duplicate(&self, index: usize) -> &AtomicU64 {
        assert!(index < DUPLICATE_SLOTS);
        self.ledger.word(self.base + 6 + index)
    }

    /// Messages of one producer that came after a later one of it.
    pub fn out_of_order(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 10)
    }

    /// The first out-of-order message's key + 1 (0: none).
    pub fn first_out_of_order(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 11)
    }

    /// The key + 1 of the message in hand (0: none): set before it is
    /// marked received, cleared after it is released.
    pub fn holding(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 12)
    }

    /// The key + 1 of the last message received (0: none).
    pub fn last(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 13)
    }

    /// Messages naming a producer that does not exist.
    pub fn strays(&self) -> &AtomicU64 {
        self.ledger.word(self.base + 14)
    }
}
