//! A queue reaper killed in the middle of its repair. The reaper takes the
//! lock *as the dead handle's token*, so the next reaper, which takes the
//! dead reaper's mark over, finds that token holding the lock and repairs it
//! the same way: the journal replayed or discarded, the dead handle's block
//! freed exactly once, the counts exact.
#![cfg(feature = "failpoints")]

mod common;

use std::time::{Duration, Instant};

use common::{ChildGuard, Cleanup, child_role, spawn_child, unique_posix};
use ipcring::channel::ChannelOptions;
use ipcring::channel::queue::{self, Queue, QueueConfig, QueueStats, Select};
use ipcring::segment::{Address, OpenOptions, Segment};

const LIMIT: Duration = Duration::from_secs(10);
const REPAIR_LIMIT: Duration = Duration::from_secs(2);
const TEST: &str = "a_reaper_killed_mid_reclaim_is_finished_by_the_next";

fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat[stat.rfind(')')? + 2..].chars().next())
        == Some('T')
}

fn stopped_at(role: &str, failpoint: &str, address: &Address) -> ChildGuard {
    let mut child = spawn_child(
        TEST,
        role,
        &[
            ("QUEUE", address.to_string()),
            ("IPCRING_FAILPOINT", failpoint.to_string()),
        ],
    );
    let started = Instant::now();
    while !is_stopped(child.pid()) {
        if let Some(status) = child.child().try_wait().unwrap() {
            panic!("{role} exited ({status}) before reaching {failpoint}");
        }
        assert!(
            started.elapsed() < LIMIT,
            "{role} never reached {failpoint}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

fn kill(mut child: ChildGuard) {
    // SAFETY: kill has no memory effects; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(child.pid() as i32, libc::SIGKILL) }, 0);
    child.wait_code(LIMIT);
}

fn stats_of(address: &Address) -> QueueStats {
    let segment = Segment::open(address, &OpenOptions::new().read_only()).unwrap();
    queue::stats(&segment).unwrap()
}

/// A loaner dies holding a block; a reaper (a handle attaching, which reaps
/// before it claims a slot) dies at each step of the journal commit that
/// frees that block, holding the lock as the loaner's token; a survivor
/// then gets both blocks, and the counts are exact.
#[test]
fn a_reaper_killed_mid_reclaim_is_finished_by_the_next() {
    if let Some(role) = child_role() {
        let address: Address = std::env::var("QUEUE").unwrap().parse().unwrap();
        let mut q = Queue::open(&address).unwrap();
        assert_eq!(role, "loaner", "the reaper stops inside `open`");
        let loan = q.try_loan(8).unwrap();
        drop(loan);
        return;
    }
    for step in ["journal.staged", "journal.committed", "journal.applied"] {
        let address = unique_posix("r7-reaper");
        let _cleanup = Cleanup(address.clone());
        let mut q =
            Queue::create(&address, &QueueConfig::new(2, 16), &ChannelOptions::new()).unwrap();
        kill(stopped_at("loaner", "queue.loan.taken", &address));
        assert_eq!(stats_of(&address).bytes, 8);
        // The reaper's first journal commit is the one freeing the loan.
        kill(stopped_at("reaper", step, &address));
        // The reaper stopped holding the lock: until it applied its journal
        // the loan's bytes are still reserved.
        let stats = stats_of(&address);
        let applied = step == "journal.applied";
        assert_eq!(
            (stats.count, stats.bytes),
            (0, if applied { 0 } else { 8 }),
            "{step}"
        );

        q.send_timeout(b"one", 1, 0, REPAIR_LIMIT)
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        q.try_send(b"two", 1, 0)
            .unwrap_or_else(|e| panic!("{step}: the loaned block was not freed: {e}"));
        let mut buf = [0u8; 16];
        for expected in [&b"one"[..], b"two"] {
            let got = q.try_recv(Select::Any, &mut buf).unwrap();
            assert_eq!(&buf[..got.len], expected, "{step}");
        }
        let stats = stats_of(&address);
        assert_eq!(
            (stats.count, stats.bytes, stats.losses),
            (0, 0, 0),
            "{step}"
        );
        // One repair for the block (the dead reaper's, replayed, or the
        // survivor's own) and one for taking the lock back.
        assert_eq!(stats.repairs, 2, "{step}");
        // Both blocks are free: two loans fit, a third does not.
        let mut a = Queue::open(&address).unwrap();
        let mut b = Queue::open(&address).unwrap();
        let first = a.try_loan(8).unwrap();
        let second = b.try_loan(8).unwrap();
        assert!(q.try_loan(1).is_err(), "{step}");
        drop((first, second));
    }
}
