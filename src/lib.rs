//! Lock-free shared-memory IPC between processes on one Linux host.
//!
//! The crate is built in layers, each depending only on those below it:
//!
//! | layer       | owns                                                  |
//! |-------------|-------------------------------------------------------|
//! | [`channel`] | the endpoints users hold: SPSC, MPMC and record channels, byte streams, roles, disconnection, repair of dead endpoints' claims |
//! | [`ring`]    | the algorithms over raw memory: SPSC, MPMC, records, byte streams, claim records and repair |
//! | [`segment`] | named (POSIX, SysV) and anonymous (memfd) shared memory with a validated header, a participants table and liveness locks |
//! | [`sync`]    | the futex wait/notify handshake and wait strategies    |
//! | `sys`       | every libc call (private)                              |
//!
//! Shared memory is treated as untrusted: every value read from a segment is
//! validated before use, and a wrong or damaged segment yields a typed
//! error ([`segment::SegmentError`], or `Corrupted` from a channel), never a
//! panic. A process killed at any step of a channel operation leaves a
//! channel the others keep using: see docs/crash-behavior.md.
//!
//! **A SIGBUS handler.** A named POSIX segment is a file that anyone with
//! write access can truncate while we have it mapped, and the next access
//! would kill the process with SIGBUS. So the first file-backed segment a
//! process maps installs a process-wide SIGBUS handler: a fault in one of
//! our segments replaces that segment's memory with zeros and marks it
//! broken ([`segment::Segment::is_broken`]); any other fault goes to the
//! handler installed before ours, or gets the default action. Programs
//! that manage SIGBUS themselves can opt out with
//! [`platform::disable_sigbus_handler`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("ipcring uses futexes, memfd and /proc: it supports Linux only");

/// Marks a step where a test may make the operation stop for good (see
/// [`failpoint`]); `$ret` is what the abandoned operation returns. Expands to
/// nothing without the `failpoints` feature.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            if $crate::failpoint::hit($name) {
                return;
            }
        }
    };
    ($name:literal, $ret:expr) => {
        #[cfg(feature = "failpoints")]
        {
            if $crate::failpoint::hit($name) {
                return $ret;
            }
        }
    };
}

/// The bytemuck crate, re-exported for `#[bytemuck(crate =
/// "ipcring::bytemuck")]` on derived types (see [`Pod`]).
pub use bytemuck;
/// Plain-old-data: what a fixed-size channel carries. Re-exported from
/// bytemuck; with the `derive` feature (on by default) it is also a derive
/// macro. Name this crate's re-export of bytemuck in the derive, so that
/// your crate needs no bytemuck of its own:
///
/// ```
/// #[derive(Clone, Copy, ipcring::Pod, ipcring::Zeroable)]
/// #[bytemuck(crate = "ipcring::bytemuck")]
/// #[repr(C)]
/// struct Order {
///     id: u64,
///     quantity: u32,
///     price_cents: u32,
/// }
/// ```
pub use bytemuck::Pod;
/// All-zero bytes are a valid value: required by [`Pod`]. Re-exported from
/// bytemuck, with its derive macro under the `derive` feature.
pub use bytemuck::Zeroable;

#[cfg(not(loom))]
pub mod channel;
#[cfg(feature = "failpoints")]
pub mod failpoint;
#[cfg(not(loom))]
pub mod platform;
pub mod ring;
#[cfg(not(loom))]
pub mod segment;
pub mod sync;
mod sys;

/// Every Rust example in README.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
