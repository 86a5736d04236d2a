//! Shared (not process-private) futexes.
//!
//! The words live in shared memory that several processes map, so the
//! operations never carry `FUTEX_PRIVATE_FLAG`: the kernel must key the wait
//! queue on the physical page, not on this process's address.

use std::io;
use std::sync::atomic::AtomicU32;

use super::time::MonotonicTime;

/// Sleeps while `*futex == expected`, until woken, interrupted by a signal
/// (retried), or `deadline` (absolute, `CLOCK_MONOTONIC`) passes.
///
/// Returns `false` only if the deadline passed; `true` means "woken, or the
/// value had already changed, or a spurious wakeup", and the caller re-checks
/// its condition in every case.
pub fn futex_wait(futex: &AtomicU32, expected: u32, deadline: Option<MonotonicTime>) -> bool {
    let timespec = deadline.map(MonotonicTime::to_timespec);
    let timeout_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
    loop {
        // FUTEX_WAIT_BITSET takes an absolute timeout on CLOCK_MONOTONIC
        // (no FUTEX_CLOCK_REALTIME), so EINTR can retry with the same value.
        // SAFETY: `futex` is a live AtomicU32, so its address is valid and
        // 4-aligned for the whole call; `timeout_ptr` is null or points to
        // `timespec`, which outlives the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_futex,
                futex.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                timeout_ptr,
                std::ptr::null::<u32>(),
                // The kernel reads val3 as a u32; passing libc's i32 -1
                // through the varargs is a type mismatch (Miri reports it).
                libc::FUTEX_BITSET_MATCH_ANY as u32,
            )
        };
        if ret >= 0 {
            return true;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => return false,
            // EAGAIN: the value was not `expected`. Anything else cannot
            // happen with a valid aligned address; the caller re-checks.
            _ => return true,
        }
    }
}

/// Wakes at most `count` waiters sleeping on `futex`; returns how many woke.
pub fn futex_wake(futex: &AtomicU32, count: u32) -> usize {
    // The kernel takes the count as an int; more than i32::MAX means all.
    let count = count.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `futex` is a live AtomicU32; FUTEX_WAKE only uses its address
    // as a key and never dereferences it beyond that.
    let ret = unsafe { libc::syscall(libc::SYS_futex, futex.as_ptr(), libc::FUTEX_WAKE, count) };
    usize::try_from(ret).unwrap_or(0)
}
