//! Load soak of the many-writer channels across processes, without kills:
//! 4 producer and 4 consumer processes on one MPMC channel, and 4
//! producers with one receiver on one many-producer record channel. Every
//! message must arrive exactly once, whole (length and checksum verify),
//! and in its producer's order at each consumer; nothing may stall for
//! 5 s. The children, ledger and checks are the kill soak's (`soak/`).
//!
//! Run: `cargo test --test load_soak -- --nocapture`.

mod common;
mod soak;

use std::time::Duration;

use common::child_role;
use ipcring::segment::Address;
use soak::ChannelKind;
use soak::check::{RedeliveryRule, Rules};
use soak::driver::{self, Plan};

fn no_reported_losses(_address: &Address) -> Option<u64> {
    None
}

fn load_soak(kind: ChannelKind, test_name: &'static str, consumers: usize, per_producer: u32) {
    if let Some(role) = child_role() {
        soak::roles::run_child(kind, &role);
        return;
    }
    let _alone = soak::one_at_a_time();
    const PRODUCERS: usize = 4;
    let plan = Plan {
        kind,
        test_name,
        producers: PRODUCERS,
        consumers,
        kills: 0,
        mean_kill_interval: Duration::ZERO,
        messages_per_producer: per_producer,
        seed: 0,
        rules: Rules {
            redelivery: RedeliveryRule::Never,
            per_producer_order: true,
        },
        reported_losses: no_reported_losses,
        stall_limit: Duration::from_secs(5),
        replay: format!("cargo test --test load_soak {test_name} -- --nocapture"),
    };
    let outcome = driver::run(&plan);
    let verdict = &outcome.verdict;
    assert_eq!(
        verdict.committed,
        PRODUCERS as u64 * u64::from(per_producer),
        "every producer sends all its messages"
    );
    // No kills: nothing may be missing or repeated, and the judge allowed
    // no loss.
    assert_eq!((verdict.missing, verdict.redelivered), (0, 0));
    assert_eq!(verdict.received, verdict.committed);
    println!(
        "load soak of the {} passed in {:.1} s: {PRODUCERS} producer and {consumers} consumer processes, {}",
        kind.name(),
        outcome.elapsed.as_secs_f64(),
        verdict.summary()
    );
}

#[test]
fn mpmc_four_producers_four_consumers_deliver_exactly_once() {
    load_soak(
        ChannelKind::Mpmc,
        "mpmc_four_producers_four_consumers_deliver_exactly_once",
        4,
        200_000,
    );
}

#[test]
fn record_channel_four_producers_one_receiver_deliver_exactly_once() {
    load_soak(
        ChannelKind::Records,
        "record_channel_four_producers_one_receiver_deliver_exactly_once",
        1,
        50_000,
    );
}
