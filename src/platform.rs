//! Process placement helpers for benchmarks and latency-sensitive users.
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
