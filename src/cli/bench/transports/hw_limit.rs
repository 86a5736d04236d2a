//! `hw-limit`: the floor under every cross-process row. Two processes
//! bounce a counter through two cache lines of a shared segment, both
//! busy-polling: no ring, no wake-up protocol, no copy. Whatever ipcring
//! adds shows as the distance to this row.

use std::sync::atomic::{AtomicU64, Ordering};

use ipcring::segment::{CreateOptions, Segment};

use crate::bench::link::{Echo, PingPongTransport, Stop};
use crate::bench::process::{Inherited, Spawner};

/// Written by the parent only.
const PARENT_TO_CHILD: usize = 0;
/// Written by the child only. 128 bytes from the other cell rather than
/// 64: adjacent-line prefetchers fetch 128-byte pairs, which would make the
/// two sides' lines contend.
const CHILD_TO_PARENT: usize = 128;
const SEGMENT_SIZE: usize = 4096;

pub struct HwLimit;

impl PingPongTransport for HwLimit {
    fn parent(&self, mut spawner: Spawner<'_>, _size: usize) -> Result<Box<dyn Echo>, String> {
        let segment = Segment::create_anonymous(&CreateOptions::new(SEGMENT_SIZE))
            .map_err(|e| format!("hw-limit segment: {e}"))?;
        spawner.share_segment(&segment)?;
        spawner.spawn()?;
        Ok(Box::new(Cells::new(
            segment,
            PARENT_TO_CHILD,
            CHILD_TO_PARENT,
        )))
    }

    fn child(&self, inherited: &Inherited, _size: usize) -> Result<Box<dyn Echo>, String> {
        let segment = inherited.segment(0)?;
        Ok(Box::new(Cells::new(
            segment,
            CHILD_TO_PARENT,
            PARENT_TO_CHILD,
        )))
    }
}

/// One side's pair of cells: it stores to `outbound` only and loads from
/// `inbound` only, so each cache line moves one way.
struct Cells {
    segment: Segment,
    outbound: usize,
    inbound: usize,
    last_received: u64,
}

impl Cells {
    fn new(segment: Segment, outbound: usize, inbound: usize) -> Cells {
        Cells {
            segment,
            outbound,
            inbound,
            // A fresh segment is zero-filled, and rounds start at 1.
            last_received: 0,
        }
    }

    /// The cell is looked up per call, not kept, because a reference into
    /// the segment cannot live beside the segment it borrows from; the
    /// lookup is an inlined bounds check, a few ns against a round trip.
    fn cell(&self, offset: usize) -> Result<&AtomicU64, String> {
        self.segment
            .view(offset)
            .map_err(|e| format!("hw-limit cell: {e}"))
    }
}

// Release and Acquire rather than Relaxed, although the counter carries no
// other data: a ring publishes its index this way, so the floor pays the
// same fences a ring must (none on x86, real barriers on Arm).
// The row runs with 8-byte messages only: the message is the counter.
impl Echo for Cells {
    fn send(&mut self, message: &[u8], _stop: &Stop) -> Result<(), String> {
        let value = u64::from_ne_bytes(
            message
                .try_into()
                .map_err(|_| "hw-limit carries 8-byte messages only")?,
        );
        // Release: pairs with the peer's Acquire load in `recv`.
        self.cell(self.outbound)?.store(value, Ordering::Release);
        Ok(())
    }

    fn recv(&mut self, buffer: &mut [u8], stop: &Stop) -> Result<(), String> {
        let inbound = self.cell(self.inbound)?;
        let last = self.last_received;
        let value = stop.spin_until(|| {
            // Acquire: pairs with the peer's Release store in `send`.
            let value = inbound.load(Ordering::Acquire);
            (value != last).then_some(value)
        })?;
        self.last_received = value;
        let buffer: &mut [u8; 8] = buffer
            .try_into()
            .map_err(|_| "hw-limit carries 8-byte messages only")?;
        *buffer = value.to_ne_bytes();
        Ok(())
    }
}
