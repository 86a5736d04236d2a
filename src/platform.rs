//! Process-wide settings: thread placement for benchmarks and
//! latency-sensitive users, signal dispositions; and the clocks, CPU-time
//! counters and kernel IPC objects that comparisons with ipcring need.
//!
//! ```
//! let cpus = ipcring::platform::allowed_cpus().unwrap();
//! assert!(!cpus.is_empty());
//! ipcring::platform::pin_current_thread(cpus[0]).unwrap();
//! ```

use std::io;

/// Pins the calling thread to one CPU (`sched_setaffinity`).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    crate::sys::affinity::pin_current_thread(cpu)
}

/// Restores the default SIGPIPE action, for command-line tools whose output
/// may go into a pipe that closes early (`ipcring ls | head`).
pub fn default_sigpipe() {
    crate::sys::process::default_sigpipe();
}

/// The CPUs the calling thread may run on (`sched_getaffinity`).
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    crate::sys::affinity::allowed_cpus()
}

/// How many file-backed mappings (POSIX and memfd segments) the SIGBUS
/// handler protects at once. A segment mapped while all are taken works
/// normally but unprotected: a truncation of its file kills the process.
pub const MAX_PROTECTED_MAPPINGS: usize = crate::sys::sigbus::CAPACITY;

/// Setting this environment variable (to any value) before the first
/// segment is mapped has the effect of [`disable_sigbus_handler`].
pub const NO_SIGBUS_HANDLER_VAR: &str = crate::sys::sigbus::OPT_OUT_VAR;

/// Keeps ipcring from installing its SIGBUS handler; call it before the
/// first segment is created or opened. Returns `true` if the handler is not
/// and will not be installed, `false` if it is already in place (it then
/// stays).
///
/// The first file-backed segment a process maps installs a process-wide
/// SIGBUS handler. A named POSIX segment is a file that anyone with write
/// access can truncate while it is mapped; the next access to a lost page
/// would kill the process with SIGBUS. The handler instead replaces the
/// segment's mapping with zeros and marks it broken
/// ([`Segment::is_broken`](crate::segment::Segment::is_broken)). A fault
/// anywhere else is passed to the handler installed before ours, or gets the
/// default action, as if ipcring were not there. Opt out if the program
/// manages SIGBUS itself in a way that cannot chain (a runtime that
/// replaces handlers without calling the previous one, say); its segments
/// are then unprotected.
///
/// ```
/// // Before any segment exists in this process:
/// if ipcring::platform::disable_sigbus_handler() {
///     // A truncated segment now kills the process, as plain mmap would.
/// }
/// ```
pub fn disable_sigbus_handler() -> bool {
    crate::sys::sigbus::disable()
}

// CPU time used so far by the calling thread or the whole process: what a
// measured operation cost beyond the wall clock.
pub use crate::sys::usage::{CpuTime, process_cpu_time, thread_cpu_ns, thread_cpu_time};

// The kernel's own IPC mechanisms (named FIFOs, eventfd, System V and
// POSIX message queues), for programs that compare ipcring with them, as
// `ipcring bench` does. The library never uses them itself.
pub use crate::sys::kernel_ipc::{
    FifoEnd, PosixMessageQueue, SystemDeadline, SysvMessage, SysvMessageQueue, create_fifo,
    eventfd, open_fifo_nonblocking,
};

/// Nanoseconds on `CLOCK_MONOTONIC`. Every process on the host reads the
/// same clock, so a stamp one process puts in a message can be subtracted
/// from this in another (one-way latency).
///
/// ```
/// let earlier = ipcring::platform::monotonic_ns();
/// assert!(ipcring::platform::monotonic_ns() >= earlier);
/// ```
pub fn monotonic_ns() -> u64 {
    crate::sys::time::monotonic_ns()
}
