//! SIGINT and SIGTERM for commands that create named segments.
//!
//! The handler only records which signal came (signal-hook's flag, which is
//! async-signal-safe). The command's loops check [`received`] and return,
//! so the guards that remove what it created run; then [`end_as_signalled`]
//! ends the process the way the signal would have, so a shell sees "killed
//! by SIGINT" (exit status 130) as usual.

use std::sync::atomic::{AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// The signal that came, or 0.
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

/// Routes SIGINT and SIGTERM to the flag instead of ending the process.
/// Call it before creating anything that must be cleaned up.
pub fn install() -> Result<(), String> {
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_usize(signal, &RECEIVED, signal as usize)
            .map_err(|e| format!("installing the signal handler: {e}"))?;
    }
    Ok(())
}

/// The signal received since [`install`], if any.
pub fn received() -> Option<i32> {
    // Relaxed: the flag stands alone; no data is published with it.
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        signal => i32::try_from(signal).ok(),
    }
}

/// Ends the process as `signal`'s default action would, once everything
/// has been cleaned up.
pub fn end_as_signalled(signal: i32) {
    // If this fails the caller exits with an error code instead.
    let _ = signal_hook::low_level::emulate_default_handler(signal);
}
