//! The verdict on a finished run: from the ledger and the kill log, what
//! was committed and what was received, judged by the channel's rules.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::ledger::{DUPLICATE_SLOTS, Ledger};
use super::message::Stamp;

/// When a message may reach consumers more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedeliveryRule {
    /// Never: each message is received at most once (MPMC: a popped item
    /// has left the ring).
    Never,
    /// Only the message a killed consumer was holding, and only once per
    /// such kill: a record consumer that dies before it releases a record
    /// leaves it for its successor. A consumer killed while releasing must
    /// not cause a repeat (at most once per record).
    HeldByKilledConsumer,
}

/// How many committed messages may never be received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossBound {
    /// One per consumer kill: each killed consumer may take one message
    /// with it (popped from the channel, not yet recorded). The bound
    /// until the channels report their own losses.
    OnePerConsumerKill,
    /// What the channel reports lost (its `stats().losses`), plus one per
    /// consumer killed with a message on its way out or in hand.
    Reported(u64),
}

/// What the channel promises; set per channel kind.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub redelivery: RedeliveryRule,
    /// Each consumer receives each producer's messages in sequence order.
    pub per_producer_order: bool,
}

/// What the kills did, as the test process saw it at each kill.
#[derive(Debug, Default)]
pub struct KillLog {
    pub producer_kills: u64,
    /// Producers killed inside `send`.
    pub producer_kills_sending: u64,
    /// Producers killed holding a reservation (reserved, not committed).
    pub producer_kills_granted: u64,
    pub consumer_kills: u64,
    /// Consumers killed inside `recv`: a message may have been on its way.
    pub consumer_kills_receiving: u64,
    /// Consumers killed with a message in hand: taken from the channel (or
    /// held in it) and not yet recorded or released.
    pub consumer_kills_holding: u64,
    /// The keys of messages killed consumers were holding, with how many
    /// kills held each.
    pub held: HashMap<u64, u64>,
}

impl KillLog {
    pub fn total(&self) -> u64 {
        self.producer_kills + self.consumer_kills
    }
}

/// The run's figures and every rule it broke.
#[derive(Debug, Default)]
pub struct Verdict {
    pub committed: u64,
    pub received: u64,
    pub missing: u64,
    pub allowed_missing: u64,
    pub redelivered: u64,
    pub failures: Vec<String>,
}

impl Verdict {
    pub fn summary(&self) -> String {
        format!(
            "{} committed, {} received, {} missing (at most {} allowed), {} redelivered",
            self.committed, self.received, self.missing, self.allowed_missing, self.redelivered
        )
    }
}

/// How many examples of one failure to list.
const EXAMPLES: usize = 5;

/// Judges `producers` and `consumers` incarnations of `ledger`, all of
/// which must have exited.
pub fn judge(
    ledger: &Ledger,
    producers: usize,
    consumers: usize,
    kills: &KillLog,
    rules: Rules,
    losses: LossBound,
) -> Verdict {
    let mut verdict = Verdict::default();
    let mut failures = Vec::new();

    // Consumer-side findings.
    let mut torn = 0;
    let mut strays = 0;
    let mut duplicates = 0;
    let mut repeated: HashMap<u64, u64> = HashMap::new();
    let mut unlisted_duplicates = 0;
    for id in 0..consumers {
        let entry = ledger.consumer(id);
        verdict.received += entry.received().load(Relaxed);
        let n = entry.torn().load(Relaxed);
        if n > 0 {
            torn += n;
            let word = entry.first_torn().load(Relaxed);
            failures.push(format!(
                "consumer {id} received {n} torn message(s); the first claimed producer {} seq {} and was {} bytes",
                word >> 48,
                (word >> 16) & 0xffff_ffff,
                word & 0xffff
            ));
        }
        strays += entry.strays().load(Relaxed);
        let n = entry.out_of_order().load(Relaxed);
        if n > 0 && rules.per_producer_order {
            let first = Stamp::from_key(entry.first_out_of_order().load(Relaxed) - 1);
            failures.push(format!(
                "consumer {id} received {n} message(s) out of their producer's order; the first: {first}"
            ));
        }
        let n = entry.duplicates().load(Relaxed);
        duplicates += n;
        for slot in 0..DUPLICATE_SLOTS.min(n as usize) {
            let key = entry.duplicate(slot).load(Relaxed) - 1;
            *repeated.entry(key).or_default() += 1;
        }
        unlisted_duplicates += n.saturating_sub(DUPLICATE_SLOTS as u64);
    }
    if torn > 0 {
        failures.push(format!("{torn} torn message(s) in all"));
    }
    if strays > 0 {
        failures.push(format!(
            "{strays} message(s) verified but named a producer that never existed"
        ));
    }

    // Repeats, by the channel's rule.
    verdict.redelivered = duplicates;
    match rules.redelivery {
        RedeliveryRule::Never if duplicates > 0 => {
            let examples: Vec<String> = repeated
                .keys()
                .take(EXAMPLES)
                .map(|&key| Stamp::from_key(key).to_string())
                .collect();
            failures.push(format!(
                "{duplicates} message(s) received twice (this channel never redelivers), e.g. {}",
                examples.join(", ")
            ));
        }
        RedeliveryRule::Never => {}
        RedeliveryRule::HeldByKilledConsumer => {
            if unlisted_duplicates > 0 {
                failures.push(format!(
                    "{unlisted_duplicates} repeat(s) beyond the {DUPLICATE_SLOTS} a consumer lists: \
                     more than a successor can inherit"
                ));
            }
            for (&key, &times) in &repeated {
                let allowed = kills.held.get(&key).copied().unwrap_or(0);
                if times > allowed {
                    failures.push(format!(
                        "{} received {} extra time(s), but killed consumers held it {allowed} time(s)",
                        Stamp::from_key(key),
                        times
                    ));
                }
            }
        }
    }

    // Producer side: every committed message received; nothing beyond the
    // one a producer may have had in flight.
    let mut missing_examples = Vec::new();
    let mut phantoms = Vec::new();
    for id in 0..producers {
        let sent = ledger.producer(id).sent().load(Relaxed);
        verdict.committed += sent;
        for seq in 0..sent as u32 {
            let stamp = Stamp {
                producer: id as u32,
                seq,
            };
            if !ledger.was_received(stamp) {
                verdict.missing += 1;
                if missing_examples.len() < EXAMPLES {
                    missing_examples.push(stamp.to_string());
                }
            }
        }
        // `sent` itself may have been delivered: its producer was killed
        // between the send returning and the ledger store.
        if let Some(highest) = ledger.highest_received(id as u32) {
            if u64::from(highest) > sent {
                phantoms.push(format!(
                    "producer {id} committed {sent} but seq {highest} was received"
                ));
            }
        }
    }
    verdict.allowed_missing = match losses {
        LossBound::OnePerConsumerKill => kills.consumer_kills,
        LossBound::Reported(losses) => {
            losses + kills.consumer_kills_receiving + kills.consumer_kills_holding
        }
    };
    if verdict.missing > verdict.allowed_missing {
        failures.push(format!(
            "{} committed message(s) never received, more than the {} allowed ({:?}); e.g. {}",
            verdict.missing,
            verdict.allowed_missing,
            losses,
            missing_examples.join(", ")
        ));
    }
    if !phantoms.is_empty() {
        failures.push(format!(
            "messages received that were never sent: {}",
            phantoms.join("; ")
        ));
    }
    verdict.failures = failures;
    verdict
}

/// Renders the kill log for a report.
pub fn describe_kills(kills: &KillLog) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "{} kills: {} producers ({} inside send, {} holding a reservation), {} consumers ({} inside recv, {} holding a message)",
        kills.total(),
        kills.producer_kills,
        kills.producer_kills_sending,
        kills.producer_kills_granted,
        kills.consumer_kills,
        kills.consumer_kills_receiving,
        kills.consumer_kills_holding
    );
    text
}
