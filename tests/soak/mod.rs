//! Soak tests of the many-writer channels across real processes: the
//! children (this test binary re-run in a role), the side channel they
//! record into, the message format, the checker, and the driver that runs
//! it all from the test process.

#![allow(dead_code)]

pub mod check;
pub mod diag;
pub mod driver;
pub mod ledger;
pub mod message;
pub mod rng;
pub mod roles;

use std::sync::{Mutex, MutexGuard};

/// Which channel a soak runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// `channel::mpmc` of [`message::Item`].
    Mpmc,
    /// `channel::records` with `ProducerMode::Many`.
    Records,
}

impl ChannelKind {
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Mpmc => "MPMC channel",
            ChannelKind::Records => "many-producer record channel",
        }
    }
}

/// Runs soaks of one test binary one at a time: they share two cores
/// with everything else, and their stall watchdogs assume they get them.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SOAKS: Mutex<()> = Mutex::new(());
    // A soak that failed poisons the lock; the next may still run.
    SOAKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
