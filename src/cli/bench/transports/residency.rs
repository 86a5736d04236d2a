//! SPSC ping-pong with the segment residency options: memory prefaulted
//! (`MAP_POPULATE`), locked (`mlock`) or on huge pages, on both sides.
//!
//! Two kinds of row use it. Steady rows run the usual ping-pong, warm-up
//! included, to show what the options do to the tail (p99.9, max) once
//! every page has been touched. First-lap rows measure the ring's first
//! lap after the child attached, with no warm-up: each round trip lands in
//! slots neither side's mapping has used yet, so the child's page faults
//! (and the kernel's zeroing of untouched pages, where the creator has not
//! written them) fall inside the timed rounds unless the options took them
//! up front.

use ipcring::channel::{ChannelOptions, spsc};
use ipcring::segment::OpenOptions;
use ipcring::sync::WaitStrategy;

use super::ipcring::{PINGPONG_CAPACITY, payload_supported, spsc_echo, with_payload};
use crate::bench::link::{Echo, PingPongTransport};
use crate::bench::process::{Inherited, Spawner};

/// Round trips in a first-lap row, and so the slots of its rings: at
/// 1 KiB messages, 4 MiB each way.
pub const FIRST_LAP_ROUNDS: usize = 4096;

/// What both sides ask of their mappings.
#[derive(Clone, Copy, Debug)]
pub struct Residency {
    pub prefault: bool,
    pub lock: bool,
    pub huge_pages: bool,
}

impl Residency {
    pub const NONE: Residency = Residency {
        prefault: false,
        lock: false,
        huge_pages: false,
    };
    pub const PREFAULT: Residency = Residency {
        prefault: true,
        ..Residency::NONE
    };
    pub const PREFAULT_LOCK: Residency = Residency {
        prefault: true,
        lock: true,
        huge_pages: false,
    };
    pub const HUGE_PAGES: Residency = Residency {
        prefault: true,
        lock: false,
        huge_pages: true,
    };

    fn channel_options(self, strategy: WaitStrategy) -> ChannelOptions {
        ChannelOptions::new()
            .wait_strategy(strategy)
            .prefault(self.prefault)
            .lock_memory(self.lock)
            .huge_pages(self.huge_pages)
    }

    fn open_options(self) -> OpenOptions {
        OpenOptions::new()
            .prefault(self.prefault)
            .lock_memory(self.lock)
    }
}

/// SPSC ping-pong, one channel each way, created and opened with
/// `residency`; `first_lap` sizes the rings for a first-lap row.
pub struct ResidentSpsc {
    pub strategy: WaitStrategy,
    pub residency: Residency,
    pub first_lap: bool,
}

impl ResidentSpsc {
    fn capacity(&self) -> usize {
        if self.first_lap {
            FIRST_LAP_ROUNDS
        } else {
            PINGPONG_CAPACITY
        }
    }
}

impl PingPongTransport for ResidentSpsc {
    fn supports(&self, size: usize) -> Result<(), String> {
        payload_supported(size)?;
        if !(self.residency.huge_pages || self.residency.lock) {
            return Ok(());
        }
        // Both rings made as the row makes them, then dropped: a huge page
        // pool too small for them, or a locked-memory limit too low, skips
        // the row with the reason instead of failing it half-way (a
        // one-page probe passes where a 4 MiB ring does not). The child
        // maps and locks the same two segments, within the same limits.
        let options = self.residency.channel_options(self.strategy);
        with_payload!(size, T => {
            let make = || spsc::create_segment::<T>(None, self.capacity(), &options);
            make()
                .and_then(|down| make().map(|up| drop((down, up))))
                .map_err(|e| e.to_string())
        })
    }

    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let options = self.residency.channel_options(self.strategy);
        with_payload!(size, T => {
            let make = || {
                spsc::create_segment::<T>(None, self.capacity(), &options)
                    .map_err(|e| format!("ipcring-spsc segment: {e}"))
            };
            let down = make()?;
            let up = make()?;
            spawner.share_segment(&down)?;
            spawner.share_segment(&up)?;
            let echo = spsc_echo::<T>(down, up, self.strategy)?;
            spawner.spawn()?;
            Ok(Box::new(echo) as Box<dyn Echo>)
        })
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String> {
        let options = self.residency.open_options();
        with_payload!(size, T => {
            let echo = spsc_echo::<T>(
                inherited.segment_with(1, &options)?,
                inherited.segment_with(0, &options)?,
                self.strategy,
            )?;
            Ok(Box::new(echo) as Box<dyn Echo>)
        })
    }
}
