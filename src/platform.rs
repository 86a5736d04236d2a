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

/// The CPUs the calling thread may run on (`sched_getaffinity`).
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    crate::sys::affinity::allowed_cpus()
}
