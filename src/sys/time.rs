//! Clocks: `CLOCK_MONOTONIC` for deadlines, `CLOCK_REALTIME` for timestamps.

use std::time::Duration;

/// A point on `CLOCK_MONOTONIC`, in nanoseconds since an unspecified start.
///
/// It is the clock the kernel uses for absolute `FUTEX_WAIT_BITSET`
/// timeouts, so a deadline computed here can be handed to the futex as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonotonicTime {
    nanos: u64,
}

impl MonotonicTime {
    /// The current time.
    pub fn now() -> MonotonicTime {
        MonotonicTime {
            nanos: clock_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// `self + duration`, saturating far in the future.
    pub fn saturating_add(self, duration: Duration) -> MonotonicTime {
        let add = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        MonotonicTime {
            nanos: self.nanos.saturating_add(add),
        }
    }

    /// Time left until `self`, or zero if it has passed.
    pub fn saturating_duration_since(self, earlier: MonotonicTime) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    #[cfg(not(loom))]
    pub(crate) fn to_timespec(self) -> libc::timespec {
        // A u64 of nanoseconds is at most ~584 years of seconds, which fits
        // time_t; tv_nsec is < 1e9 and fits c_long.
        libc::timespec {
            tv_sec: (self.nanos / 1_000_000_000) as libc::time_t,
            tv_nsec: (self.nanos % 1_000_000_000) as libc::c_long,
        }
    }
}

/// Nanoseconds on `CLOCK_MONOTONIC`, since an unspecified start that every
/// process on the host shares: a stamp taken in one process can be
/// compared with the clock in another.
#[cfg(not(loom))]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
#[cfg(not(loom))]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks always exist on
    // Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
