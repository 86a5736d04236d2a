//! ipcring's own rows: ping-pong over two SPSC channels (one each way) in
//! each wait strategy, over two MPMC channels, and one-way throughput over
//! an SPSC channel with the zero-copy chunk API. Every channel lives in an
//! anonymous segment the child inherits.

use std::ops::Range;
use std::time::Duration;

use ipcring::channel::{
    ChannelOptions, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError, mpmc, spsc,
};
use ipcring::segment::Segment;
use ipcring::sync::WaitStrategy;

use super::check_item;
use crate::bench::link::{Consumer, Echo, PingPongTransport, Producer, Stop, ThroughputTransport};
use crate::bench::process::{Inherited, Spawner};

/// Slots per direction: ping-pong keeps at most one item in flight.
const PINGPONG_CAPACITY: usize = 64;
/// Slots for the throughput row.
const STREAM_CAPACITY: usize = 4096;
/// Items per chunk in the throughput row.
const CHUNK: usize = 256;
/// How long one blocking call may wait before the bench checks its stop.
const SLICE: Duration = Duration::from_millis(50);

fn options(strategy: WaitStrategy) -> ChannelOptions {
    ChannelOptions::new().wait_strategy(strategy)
}

/// Ping-pong over SPSC channels with one wait strategy on both sides.
pub struct SpscPingPong(pub WaitStrategy);

/// Ping-pong over MPMC channels (one sender and one receiver each way).
pub struct MpmcPingPong(pub WaitStrategy);

struct SpscEcho {
    tx: spsc::Sender<u64>,
    rx: spsc::Receiver<u64>,
}

struct MpmcEcho {
    tx: mpmc::Sender<u64>,
    rx: mpmc::Receiver<u64>,
}

/// The same echo over either channel kind: block in slices, checking the
/// bench's stop between them.
macro_rules! echo {
    ($echo:ident, $name:literal) => {
        impl Echo for $echo {
            fn send(&mut self, value: u64, stop: &Stop) -> Result<(), String> {
                let mut value = value;
                loop {
                    match self.tx.send_timeout(value, SLICE) {
                        Ok(()) => return Ok(()),
                        Err(SendTimeoutError::Timeout(back)) => value = back,
                        Err(e) => return Err(format!(concat!($name, " send: {}"), e)),
                    }
                    stop.check()?;
                }
            }

            fn recv(&mut self, stop: &Stop) -> Result<u64, String> {
                loop {
                    match self.rx.recv_timeout(SLICE) {
                        Ok(value) => return Ok(value),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(e) => return Err(format!(concat!($name, " recv: {}"), e)),
                    }
                    stop.check()?;
                }
            }
        }
    };
}

fn two_segments(
    make: impl Fn() -> Result<Segment, String>,
    spawner: &mut Spawner<'_>,
) -> Result<(Segment, Segment), String> {
    let down = make()?;
    let up = make()?;
    spawner.share_segment(&down)?;
    spawner.share_segment(&up)?;
    Ok((down, up))
}

impl PingPongTransport for SpscPingPong {
    fn parent(&self, mut spawner: Spawner<'_>) -> Result<Box<dyn Echo>, String> {
        let make = || {
            spsc::create_segment::<u64>(None, PINGPONG_CAPACITY, &options(self.0))
                .map_err(|e| format!("ipcring-spsc segment: {e}"))
        };
        let (down, up) = two_segments(make, &mut spawner)?;
        let echo = spsc_echo(down, up, self.0)?;
        spawner.spawn()?;
        Ok(Box::new(echo))
    }

    fn child(&self, inherited: &Inherited) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(spsc_echo(
            inherited.segment(1)?,
            inherited.segment(0)?,
            self.0,
        )?))
    }
}

/// Sends on `out`, receives on `back`.
fn spsc_echo(out: Segment, back: Segment, strategy: WaitStrategy) -> Result<SpscEcho, String> {
    let mut tx = spsc::Sender::attach(out).map_err(|e| format!("ipcring-spsc sender: {e}"))?;
    let mut rx = spsc::Receiver::attach(back).map_err(|e| format!("ipcring-spsc receiver: {e}"))?;
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    Ok(SpscEcho { tx, rx })
}

impl PingPongTransport for MpmcPingPong {
    fn parent(&self, mut spawner: Spawner<'_>) -> Result<Box<dyn Echo>, String> {
        let make = || {
            mpmc::create_segment::<u64>(None, PINGPONG_CAPACITY, &options(self.0))
                .map_err(|e| format!("ipcring-mpmc segment: {e}"))
        };
        let (down, up) = two_segments(make, &mut spawner)?;
        let echo = mpmc_echo(down, up, self.0)?;
        spawner.spawn()?;
        Ok(Box::new(echo))
    }

    fn child(&self, inherited: &Inherited) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(mpmc_echo(
            inherited.segment(1)?,
            inherited.segment(0)?,
            self.0,
        )?))
    }
}

fn mpmc_echo(out: Segment, back: Segment, strategy: WaitStrategy) -> Result<MpmcEcho, String> {
    let mut tx = mpmc::Sender::attach(out).map_err(|e| format!("ipcring-mpmc sender: {e}"))?;
    let mut rx = mpmc::Receiver::attach(back).map_err(|e| format!("ipcring-mpmc receiver: {e}"))?;
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    Ok(MpmcEcho { tx, rx })
}

echo!(SpscEcho, "ipcring-spsc");
echo!(MpmcEcho, "ipcring-mpmc");

/// One-way stream of `u64`s through an SPSC channel, moved in chunks of up
/// to 256 with the chunk API (one copy into and out of the slots, across
/// the wrap); both sides poll (busy-spin).
pub struct SpscStream;

impl ThroughputTransport for SpscStream {
    fn parent(&self, mut spawner: Spawner<'_>) -> Result<Box<dyn Producer>, String> {
        let segment =
            spsc::create_segment::<u64>(None, STREAM_CAPACITY, &options(WaitStrategy::BusySpin))
                .map_err(|e| format!("ipcring-spsc segment: {e}"))?;
        spawner.share_segment(&segment)?;
        let tx = spsc::Sender::attach(segment).map_err(|e| format!("ipcring-spsc sender: {e}"))?;
        spawner.spawn()?;
        Ok(Box::new(tx))
    }

    fn child(&self, inherited: &Inherited) -> Result<Box<dyn Consumer>, String> {
        let rx = spsc::Receiver::attach(inherited.segment(0)?)
            .map_err(|e| format!("ipcring-spsc receiver: {e}"))?;
        Ok(Box::new(rx))
    }
}

impl Producer for spsc::Sender<u64> {
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        let mut next = items.start;
        while next < items.end {
            let want = CHUNK.min((items.end - next) as usize);
            let mut chunk = match self.write_chunk_up_to(want) {
                Ok(chunk) if !chunk.is_empty() => chunk,
                Ok(_) => {
                    stop.spin_until(|| self.free_slots().ok().filter(|&n| n > 0))?;
                    continue;
                }
                Err(e) => return Err(format!("ipcring-spsc chunk: {e}")),
            };
            let n = chunk.len();
            let mut batch = [0u64; CHUNK];
            for (i, slot) in batch[..n].iter_mut().enumerate() {
                *slot = next + i as u64;
            }
            // One copy straight into the ring's slots, across the wrap.
            chunk.fill_from_slice(&batch[..n]);
            chunk.commit_all();
            next += n as u64;
        }
        Ok(())
    }
}

impl Consumer for spsc::Receiver<u64> {
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        let mut expected = items.start;
        while expected < items.end {
            let chunk = match self.read_chunk_up_to(CHUNK) {
                Ok(chunk) if !chunk.is_empty() => chunk,
                Ok(_) => {
                    stop.spin_until(|| self.ready_items().ok().filter(|&n| n > 0))?;
                    continue;
                }
                Err(e) => return Err(format!("ipcring-spsc chunk: {e}")),
            };
            let n = chunk.len();
            let mut batch = [0u64; CHUNK];
            chunk.copy_to_slice(&mut batch[..n]);
            for &item in &batch[..n] {
                check_item(expected, item)?;
                expected += 1;
            }
            chunk.commit(n);
        }
        Ok(())
    }
}

/// One-way stream of `u64`s through an MPMC channel with one sender and
/// one receiver, one item per call (as `ArrayQueue` is used); both poll.
pub struct MpmcStream;

impl ThroughputTransport for MpmcStream {
    fn parent(&self, mut spawner: Spawner<'_>) -> Result<Box<dyn Producer>, String> {
        let segment =
            mpmc::create_segment::<u64>(None, STREAM_CAPACITY, &options(WaitStrategy::BusySpin))
                .map_err(|e| format!("ipcring-mpmc segment: {e}"))?;
        spawner.share_segment(&segment)?;
        let tx = mpmc::Sender::attach(segment).map_err(|e| format!("ipcring-mpmc sender: {e}"))?;
        spawner.spawn()?;
        Ok(Box::new(tx))
    }

    fn child(&self, inherited: &Inherited) -> Result<Box<dyn Consumer>, String> {
        let rx = mpmc::Receiver::attach(inherited.segment(0)?)
            .map_err(|e| format!("ipcring-mpmc receiver: {e}"))?;
        Ok(Box::new(rx))
    }
}

impl Producer for mpmc::Sender<u64> {
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        for item in items {
            let mut item = item;
            loop {
                match self.try_send(item) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => item = back,
                    Err(e) => return Err(format!("ipcring-mpmc send: {e}")),
                }
                stop.spin_until(|| Some(()))?;
            }
        }
        Ok(())
    }
}

impl Consumer for mpmc::Receiver<u64> {
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        for expected in items {
            let received = loop {
                match self.try_recv() {
                    Ok(item) => break item,
                    Err(TryRecvError::Empty) => stop.check()?,
                    Err(e) => return Err(format!("ipcring-mpmc recv: {e}")),
                }
            };
            check_item(expected, received)?;
        }
        Ok(())
    }
}
