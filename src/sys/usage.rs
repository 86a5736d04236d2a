//! CPU time consumed so far (`getrusage`), for measuring what an operation
//! costs beyond the wall clock.

use std::io;
use std::time::Duration;

use super::cvt;

/// CPU time spent in user space and in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuTime {
    /// Time spent running user-space code.
    pub user: Duration,
    /// Time the kernel spent on the caller's behalf (syscalls, faults).
    pub system: Duration,
}

impl CpuTime {
    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The time spent since `earlier`, saturating at zero.
    pub fn saturating_sub(&self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

fn usage(who: libc::c_int) -> io::Result<CpuTime> {
    // SAFETY: an all-zero rusage is a valid value for this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is writable and is the struct getrusage fills.
    cvt(unsafe { libc::getrusage(who, &mut usage) })?;
    let duration = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec.max(0) as u64)
            + Duration::from_micros(tv.tv_usec.clamp(0, 999_999) as u64)
    };
    Ok(CpuTime {
        user: duration(usage.ru_utime),
        system: duration(usage.ru_stime),
    })
}

/// CPU time of the calling thread (`RUSAGE_THREAD`).
///
/// ```
/// let before = ipcring::platform::thread_cpu_time().unwrap();
/// let after = ipcring::platform::thread_cpu_time().unwrap();
/// assert!(after.total() >= before.total());
/// ```
pub fn thread_cpu_time() -> io::Result<CpuTime> {
    usage(libc::RUSAGE_THREAD)
}

/// CPU time of the calling thread in nanoseconds, exact to the moment of
/// the call (`CLOCK_THREAD_CPUTIME_ID`). `getrusage` lags by up to a
/// scheduler tick for a thread that has not been switched out since, which
/// hides the cost of a short busy loop.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the thread CPU clock
    // exists on every Linux since 2.6.12, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec.max(0) as u64)
}

/// CPU time of the whole process, all threads (`RUSAGE_SELF`).
pub fn process_cpu_time() -> io::Result<CpuTime> {
    usage(libc::RUSAGE_SELF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = thread_cpu_time().unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        // Bounded by CPU time, not wall time: other processes may hold the
        // CPU for most of a wall-clock interval.
        let spent = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let spent = thread_cpu_time().unwrap().saturating_sub(before);
            if spent.total() >= Duration::from_millis(2) || started.elapsed().as_secs() >= 10 {
                break spent;
            }
        };
        assert!(spent.total() >= Duration::from_millis(2), "{spent:?}");
        assert!(process_cpu_time().unwrap().total() >= spent.total());
        let exact = thread_cpu_ns();
        assert!(
            exact >= before.total().as_nanos() as u64 + 2_000_000,
            "{exact}"
        );
    }
}
