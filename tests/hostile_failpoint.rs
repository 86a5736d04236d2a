//! The failpoint machinery itself: a child armed with
//! `IPCRING_FAILPOINT=NAME` must stop exactly at `NAME`, so that a test can
//! kill it there. It stops itself with `kill(getpid(), SIGSTOP)`, a signal
//! to the whole process, which Linux hands to the main thread; the thread
//! that hit the failpoint runs on until the group stop reaches it. In a
//! libtest child the test runs on a thread of its own, so the "stopped"
//! child has often finished the step it was meant to die before.
#![cfg(feature = "failpoints")]

mod common;
mod hostile_support;

use std::time::Duration;

use common::{Cleanup, unique_posix};
use hostile_support::{Victim, env, layout, peek, role, run_role};
use ipcring::channel::{ChannelOptions, mpmc};
use ipcring::segment::{Address, OpenOptions, Segment};

const HELD_ITEM: u64 = 0xbeef;

fn child() {
    let address: Address = env("SEGMENT").parse().unwrap();
    let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), HELD_ITEM);
}

/// Stops a receiver at `mpmc.pop.announced` (before its claim on `head`)
/// and reports whether it had claimed anyway (`head` moved), or never
/// stopped at all.
fn overran(test: &str, forked: bool) -> bool {
    let address = unique_posix("fp-late");
    let _cleanup = Cleanup(address.clone());
    let mut tx = mpmc::Sender::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
    tx.send(HELD_ITEM).unwrap();
    let segment = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
    let head_before = peek(&segment, layout::RING_HEAD);
    let mut victim = Victim::spawn_with(
        test,
        "recv",
        Some("mpmc.pop.announced"),
        &[("SEGMENT", address.to_string())],
        forked,
    );
    if let Err(why) = victim.wait_stopped(Duration::from_secs(20)) {
        // Ran through the failpoint and on to the end of its role.
        eprintln!("not stopped at all: {why}");
        return true;
    }
    let head_after = peek(&segment, layout::RING_HEAD);
    victim.kill();
    head_after != head_before
}

#[test]
fn a_failpoint_stops_a_libtest_child_before_the_next_step() {
    if role().is_some() {
        // Run on libtest's test thread, as any project test's child would.
        return child();
    }
    let runs = 10;
    let late = (0..runs)
        .filter(|_| {
            overran(
                "a_failpoint_stops_a_libtest_child_before_the_next_step",
                false,
            )
        })
        .count();
    assert_eq!(
        late, 0,
        "{late} of {runs} children stopped at mpmc.pop.announced had already claimed the item"
    );
}

#[test]
fn a_failpoint_stops_a_single_threaded_process_before_the_next_step() {
    if role().is_some() {
        return run_role(child);
    }
    let runs = 10;
    let late = (0..runs)
        .filter(|_| {
            overran(
                "a_failpoint_stops_a_single_threaded_process_before_the_next_step",
                true,
            )
        })
        .count();
    assert_eq!(late, 0, "{late} of {runs} forked children overran");
}
