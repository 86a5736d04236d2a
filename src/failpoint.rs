//! Failpoints: named steps inside ring and channel operations where a test
//! makes the calling thread stop for good, as if its process died exactly
//! there. Compiled only with the `failpoints` cargo feature, which the
//! project's own tests enable; a normal build has no trace of them.
//!
//! Two ways to arm one:
//!
//! - **A whole process**, for cross-process tests: the environment variable
//!   `IPCRING_FAILPOINT=NAME` (or `NAME@N` for the N-th hit, counted from 1)
//!   makes the process stop itself with SIGSTOP when it reaches `NAME`. The
//!   parent sees it stopped (`waitpid` with `WUNTRACED`) and SIGKILLs it
//!   there, or SIGCONTs it to show that a stopped peer is not repaired
//!   behind its back: the operation then carries on normally.
//! - **One thread**, for in-process and loom models: [`abandon_at`] makes
//!   the calling thread's next pass through `NAME` return at once, taking no
//!   further step. The test then treats that thread as dead: it must
//!   `mem::forget` the thread's handles so that no drop runs for them.

/// Every failpoint, by operation.
pub const NAMES: &[&str] = &[
    "mpmc.push.announced",
    "mpmc.push.claimed",
    "mpmc.push.written",
    "mpmc.pop.announced",
    "mpmc.pop.claimed",
    "mpmc.pop.read",
    "record.reserve.announced",
    "record.reserve.claimed",
    "record.reserve.padded",
    "record.write",
    "record.commit",
    "record.consume",
    "record.release.marked",
    "record.release.zeroed",
    "queue.send.copied",
    "queue.recv.copied",
    "queue.loan.taken",
    "queue.borrow.held",
    "stream.write.locked",
    "stream.write.copying",
    "stream.write.copied",
    "stream.write.published",
    "stream.read.locked",
    "stream.read.copying",
    "stream.read.copied",
    "stream.read.consumed",
    "journal.staged",
    "journal.committed",
    "journal.applied",
    "channel.attach.claimed",
    "channel.detach.freed",
    "channel.reap.marked",
    "channel.reap.repaired",
];

#[cfg(loom)]
loom::thread_local! {
    static ABANDON_AT: std::cell::Cell<Option<&'static str>> = std::cell::Cell::new(None);
}

#[cfg(not(loom))]
thread_local! {
    static ABANDON_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Makes the calling thread's next pass through failpoint `name` return at
/// once, as if the thread died there.
pub fn abandon_at(name: &'static str) {
    debug_assert!(NAMES.contains(&name), "unknown failpoint {name}");
    ABANDON_AT.with(|cell| cell.set(Some(name)));
}

/// Called at each failpoint: true if the operation must stop here.
#[doc(hidden)]
pub fn hit(name: &'static str) -> bool {
    if ABANDON_AT.with(|cell| cell.get() == Some(name)) {
        ABANDON_AT.with(|cell| cell.set(None));
        return true;
    }
    #[cfg(not(loom))]
    process::hit(name);
    false
}

#[cfg(not(loom))]
mod process {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The armed name and the hit that stops, from `IPCRING_FAILPOINT`.
    /// Read without allocating, so that a failpoint on a path that must not
    /// allocate (see `tests/no_alloc.rs`) does not.
    fn armed() -> Option<&'static (&'static [u8], u64)> {
        static ARMED: OnceLock<Option<(&'static [u8], u64)>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let value = crate::sys::process::env_bytes(c"IPCRING_FAILPOINT")?;
                match value.iter().position(|&b| b == b'@') {
                    Some(at) => {
                        let nth = std::str::from_utf8(&value[at + 1..]).ok()?.parse().ok()?;
                        Some((&value[..at], nth))
                    }
                    None => Some((value, 1)),
                }
            })
            .as_ref()
    }

    pub(super) fn hit(name: &'static str) {
        static HITS: AtomicU64 = AtomicU64::new(0);
        let Some((armed, nth)) = armed() else {
            return;
        };
        // Relaxed: a count within this process only.
        if *armed == name.as_bytes() && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth {
            crate::sys::process::stop_self();
        }
    }
}
