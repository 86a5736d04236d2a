//! Crash-safety soak of the many-writer channels: producer and consumer
//! processes are SIGKILLed at random moments and replaced by fresh ones
//! that attach to the same channel, and the channel must neither tear,
//! repeat, lose, reorder nor wedge.
//!
//! Two soaks, run one after the other: an MPMC channel of `Pod` items
//! (3 producer and 3 consumer processes) and a many-producer record
//! channel of variable-length records (3 producers, 1 receiver: a
//! replacement receiver attaches after the old one dies; every other
//! record is written in place through a reservation). Every message
//! carries its producer, a per-producer sequence number, its length and a
//! checksum over all of it. Children record what they did in a ledger
//! segment the kills cannot corrupt (see `soak/ledger.rs`): a producer
//! stores how many sends returned `Ok` after each one, a consumer sets one
//! bit per message received. The checks (see `soak/check.rs`):
//!
//! - no torn message (length and checksum verify);
//! - no repeat, except as the channel's redelivery rule allows
//!   ([`MPMC_REDELIVERY`], [`RECORDS_REDELIVERY`]);
//! - every message a producer saw succeed is received, except at most one
//!   per consumer kill (or what the channel reports lost, through
//!   [`channel_reported_losses`]), and nothing beyond what was sent;
//! - each consumer receives each producer's messages in order;
//! - no stall: if nothing is sent or received for 5 s while producers are
//!   alive (during the kills, or after the last one, when every producer
//!   must send again), the soak fails with a dump of the children, the
//!   kills around the stall, the ring's positions and the seed;
//! - afterwards a fresh sender and receiver attach and exchange a message,
//!   and the receiver is told when that sender leaves.
//!
//! Run: `cargo test --test kill_soak -- --nocapture`: 900 kills, 600 on
//! the MPMC channel and 300 on the record channel, in about half a minute
//! on two cores. Long variant: `IPCRING_SOAK_KILLS=2000` (or any other
//! total, split the same way), about twice as long. Each run prints its seed, and a failure prints the
//! command that replays it: `IPCRING_SOAK_SEED=0x…` repeats the kill
//! schedule (which child, after which pause), though not the processes'
//! own timing.

mod common;
mod soak;

use std::time::Duration;

use common::{Cleanup, child_role, unique_posix};
use ipcring::segment::Address;
use soak::ChannelKind;
use soak::check::{self, KillLog, LossBound, RedeliveryRule, Rules};
use soak::driver::{self, Plan};
use soak::ledger::Ledger;
use soak::message::{self, Stamp};
use soak::roles::{self, Tally};

/// MPMC: a popped item has left the ring; nothing is ever received twice.
const MPMC_REDELIVERY: RedeliveryRule = RedeliveryRule::Never;
/// Record channel: a receiver that dies holding a record (before it
/// releases it) leaves it to its successor, which receives it again; one
/// that dies while releasing must not cause a repeat (docs/crash-behavior.md).
const RECORDS_REDELIVERY: RedeliveryRule = RedeliveryRule::HeldByKilledConsumer;

/// Kills in all by default, across the two channel kinds.
const DEFAULT_KILLS: u64 = 900;
const STALL_LIMIT: Duration = Duration::from_secs(5);

/// What the channel itself counts as lost while repairing after a dead
/// peer (`channel::stats`, read without attaching). The checker allows
/// exactly those, plus one per consumer killed with a message on its way
/// out of the library (popped from the ring, not yet returned or recorded:
/// that message died with its process, as it would with any queue).
fn channel_reported_losses(address: &Address) -> Option<u64> {
    let options = ipcring::segment::OpenOptions::new().read_only();
    let segment = ipcring::segment::Segment::open(address, &options).ok()?;
    ipcring::channel::stats(&segment)
        .ok()
        .map(|stats| stats.losses)
}

/// The total number of kills (`IPCRING_SOAK_KILLS`, or the default), and
/// this channel's share: two thirds for MPMC, whose claim-to-publish
/// windows last tens of nanoseconds and so are hit more rarely than a
/// record sender's reservation, which spans the writing of the record.
fn kills(kind: ChannelKind) -> (u64, u64) {
    let total = match std::env::var("IPCRING_SOAK_KILLS") {
        Ok(total) => total
            .trim()
            .parse::<u64>()
            .expect("IPCRING_SOAK_KILLS is a number of kills"),
        Err(_) => DEFAULT_KILLS,
    };
    let mpmc = total.div_ceil(3) * 2;
    let share = match kind {
        ChannelKind::Mpmc => mpmc,
        ChannelKind::Records => total.saturating_sub(mpmc).max(1),
    };
    (total, share)
}

fn kill_soak(kind: ChannelKind, test_name: &'static str, redelivery: RedeliveryRule) {
    if let Some(role) = child_role() {
        roles::run_child(kind, &role);
        return;
    }
    let _alone = soak::one_at_a_time();
    let seed = soak::rng::seed_from_env("IPCRING_SOAK_SEED");
    let (total_kills, kills) = kills(kind);
    let (producers, consumers) = match kind {
        ChannelKind::Mpmc => (3, 3),
        ChannelKind::Records => (3, 1),
    };
    println!(
        "kill soak of the {}: seed {seed:#x}, {kills} kills, {producers} producers, {consumers} consumers",
        kind.name()
    );
    let plan = Plan {
        kind,
        test_name,
        producers,
        consumers,
        kills,
        // A child lives about a tenth of a second: long enough to be
        // caught mid-traffic far more often than mid-start-up.
        mean_kill_interval: Duration::from_millis(20),
        // Producers that live long enough retire and are replaced, which
        // bounds the ledger's bitmap.
        messages_per_producer: 1 << 14,
        seed,
        rules: Rules {
            redelivery,
            // Both rings hand out positions in order, and one consumer
            // claims increasing positions: each consumer sees a producer's
            // messages in the order they were sent.
            per_producer_order: true,
        },
        reported_losses: channel_reported_losses,
        stall_limit: STALL_LIMIT,
        replay: format!(
            "IPCRING_SOAK_SEED={seed:#x} IPCRING_SOAK_KILLS={total_kills} cargo test --test kill_soak {test_name} -- --nocapture"
        ),
    };
    let outcome = driver::run(&plan);
    println!(
        "kill soak of the {} passed in {:.1} s: {}; {} producer and {} consumer processes; {}",
        kind.name(),
        outcome.elapsed.as_secs_f64(),
        check::describe_kills(&outcome.kills),
        outcome.producers_started,
        outcome.consumers_started,
        outcome.verdict.summary()
    );
}

#[test]
fn mpmc_channel_survives_random_kills() {
    kill_soak(
        ChannelKind::Mpmc,
        "mpmc_channel_survives_random_kills",
        MPMC_REDELIVERY,
    );
}

#[test]
fn many_producer_record_channel_survives_random_kills() {
    kill_soak(
        ChannelKind::Records,
        "many_producer_record_channel_survives_random_kills",
        RECORDS_REDELIVERY,
    );
}

/// The checker fails a run for each kind of violation, and lets through
/// exactly what its rules allow.
#[test]
fn checker_reports_every_kind_of_violation() {
    let address = unique_posix("soak-check");
    let _cleanup = Cleanup(address.clone());
    let ledger = Ledger::create(&address, 2, 2, 64);
    let message = |producer, seq| {
        let mut bytes = vec![0; 40];
        message::encode(Stamp { producer, seq }, &mut bytes);
        bytes
    };
    let rules = |redelivery| Rules {
        redelivery,
        per_producer_order: true,
    };
    let judge = |kills: &KillLog, redelivery, losses| {
        check::judge(&ledger, 2, 2, kills, rules(redelivery), losses)
    };
    let none = KillLog::default();

    // A clean run: producer 0 sent 10, producer 1 sent 3, all received
    // once, in order, over two consumers.
    ledger
        .producer(0)
        .sent()
        .store(10, std::sync::atomic::Ordering::Relaxed);
    ledger
        .producer(1)
        .sent()
        .store(3, std::sync::atomic::Ordering::Relaxed);
    let mut first = Tally::new(&ledger, 0);
    let mut second = Tally::new(&ledger, 1);
    for seq in 0..10 {
        let tally = if seq % 3 == 0 {
            &mut second
        } else {
            &mut first
        };
        tally.take(&message(0, seq));
        tally.released();
    }
    for seq in 0..3 {
        first.take(&message(1, seq));
    }
    let clean = judge(&none, RedeliveryRule::Never, LossBound::OnePerConsumerKill);
    assert!(clean.failures.is_empty(), "{:?}", clean.failures);
    assert_eq!(
        (clean.committed, clean.received, clean.missing),
        (13, 13, 0)
    );

    // Producer 0's in-flight message (seq 10) may arrive; seq 11 may not.
    first.take(&message(0, 10));
    assert!(
        judge(&none, RedeliveryRule::Never, LossBound::OnePerConsumerKill)
            .failures
            .is_empty()
    );
    first.take(&message(0, 12));
    let phantom = judge(&none, RedeliveryRule::Never, LossBound::OnePerConsumerKill);
    assert!(
        phantom.failures.iter().any(|f| f.contains("never sent")),
        "{phantom:?}"
    );

    // A repeat: refused by `Never`; under `HeldByKilledConsumer` allowed
    // only for a message a killed consumer held, once per such kill.
    let address2 = unique_posix("soak-check");
    let _cleanup2 = Cleanup(address2.clone());
    let ledger = Ledger::create(&address2, 1, 2, 64);
    let judge = |kills: &KillLog, redelivery, losses| {
        check::judge(&ledger, 1, 2, kills, rules(redelivery), losses)
    };
    ledger
        .producer(0)
        .sent()
        .store(4, std::sync::atomic::Ordering::Relaxed);
    let mut first = Tally::new(&ledger, 0);
    let mut second = Tally::new(&ledger, 1).quiet();
    for seq in 0..4 {
        first.take(&message(0, seq));
    }
    second.take(&message(0, 3));
    let repeat = judge(&none, RedeliveryRule::Never, LossBound::OnePerConsumerKill);
    assert!(
        repeat.failures.iter().any(|f| f.contains("received twice")),
        "{repeat:?}"
    );
    let unheld = judge(
        &none,
        RedeliveryRule::HeldByKilledConsumer,
        LossBound::OnePerConsumerKill,
    );
    assert!(
        unheld.failures.iter().any(|f| f.contains("extra time")),
        "{unheld:?}"
    );
    let mut held = KillLog {
        consumer_kills: 1,
        ..KillLog::default()
    };
    held.held.insert(
        Stamp {
            producer: 0,
            seq: 3,
        }
        .key(),
        1,
    );
    let allowed = judge(
        &held,
        RedeliveryRule::HeldByKilledConsumer,
        LossBound::OnePerConsumerKill,
    );
    assert!(allowed.failures.is_empty(), "{:?}", allowed.failures);

    // Torn and reordered messages.
    let mut torn = message(0, 2);
    torn[20] ^= 1;
    second.take(&torn);
    let judged = judge(
        &held,
        RedeliveryRule::HeldByKilledConsumer,
        LossBound::OnePerConsumerKill,
    );
    assert!(
        judged.failures.iter().any(|f| f.contains("torn")),
        "{judged:?}"
    );

    let address3 = unique_posix("soak-check");
    let _cleanup3 = Cleanup(address3.clone());
    let ledger = Ledger::create(&address3, 1, 1, 64);
    ledger
        .producer(0)
        .sent()
        .store(3, std::sync::atomic::Ordering::Relaxed);
    let mut tally = Tally::new(&ledger, 0);
    for seq in [0, 2, 1] {
        tally.take(&message(0, seq));
    }
    let judged = check::judge(
        &ledger,
        1,
        1,
        &none,
        rules(RedeliveryRule::Never),
        LossBound::OnePerConsumerKill,
    );
    assert!(
        judged
            .failures
            .iter()
            .any(|f| f.contains("out of their producer's order")),
        "{judged:?}"
    );

    // Losses: one per consumer kill by default; exactly the reported
    // ones (plus kills with a message in hand) once the channel counts.
    let address4 = unique_posix("soak-check");
    let _cleanup4 = Cleanup(address4.clone());
    let ledger = Ledger::create(&address4, 1, 1, 64);
    ledger
        .producer(0)
        .sent()
        .store(5, std::sync::atomic::Ordering::Relaxed);
    let mut tally = Tally::new(&ledger, 0);
    for seq in [0, 1, 4] {
        tally.take(&message(0, seq));
    }
    let judge = |kills: &KillLog, losses| {
        check::judge(&ledger, 1, 1, kills, rules(RedeliveryRule::Never), losses)
    };
    let lost = judge(&none, LossBound::OnePerConsumerKill);
    assert_eq!(lost.missing, 2);
    assert!(
        lost.failures.iter().any(|f| f.contains("never received")),
        "{lost:?}"
    );
    let two_kills = KillLog {
        consumer_kills: 2,
        ..KillLog::default()
    };
    assert!(
        judge(&two_kills, LossBound::OnePerConsumerKill)
            .failures
            .is_empty()
    );
    assert!(
        !judge(&two_kills, LossBound::Reported(1))
            .failures
            .is_empty()
    );
    assert!(
        judge(&two_kills, LossBound::Reported(2))
            .failures
            .is_empty()
    );
}
