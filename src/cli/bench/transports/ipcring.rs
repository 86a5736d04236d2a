//! ipcring's fixed-slot rows: ping-pong over two SPSC or two MPMC channels
//! (one each way) in a wait strategy, and one-way throughput over an SPSC
//! or MPMC channel one item per call, and over an SPSC channel with the
//! chunk API. Every channel lives in an anonymous segment the child
//! inherits.
//!
//! A message of N bytes is one item of type [`Payload`] (N / 8 words), so
//! a slot holds exactly one message. In ping-pong and paced rows the link
//! traits hand messages over as bytes, so each side copies between its
//! byte buffer and the item once more than a kernel transport does: the
//! figures for large messages are on the cautious side. Throughput rows
//! write and check the item itself, as the in-process queues' rows do.

use std::ops::Range;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use ipcring::channel::{
    ChannelOptions, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError, mpmc, spsc,
};
use ipcring::segment::Segment;
use ipcring::sync::WaitStrategy;

use crate::bench::link::{Consumer, Echo, PingPongTransport, Producer, Stop, ThroughputTransport};
use crate::bench::message;
use crate::bench::process::{Inherited, Spawner};

/// Slots per direction for ping-pong and paced rows: ping-pong keeps at
/// most one message in flight; a paced sender that gets this far ahead
/// waits, and the wait shows in the latencies.
pub(super) const PINGPONG_CAPACITY: usize = 64;
/// Bytes of slots in a throughput ring (32 KiB of 8-byte items, as before
/// sizes were measured); at least [`MIN_STREAM_SLOTS`] slots.
const STREAM_BYTES: usize = 32 * 1024;
const MIN_STREAM_SLOTS: usize = 8;
/// Bytes per chunk in the SPSC chunk row (256 8-byte items).
const CHUNK_BYTES: usize = 2048;
/// How long one blocking call may wait before the bench checks its stop.
const SLICE: Duration = Duration::from_millis(50);

/// One message of `W` 64-bit words, moved as one channel item.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Payload<const W: usize>([u64; W]);

// SAFETY: a transparent wrapper of an array of u64: every bit pattern is a
// valid value (including all zeros), it has no padding, and it holds no
// pointers.
unsafe impl<const W: usize> Zeroable for Payload<W> {}
// SAFETY: as above; `Copy` and `'static` hold.
unsafe impl<const W: usize> Pod for Payload<W> {}

/// The message sizes with a payload type: fixed slots hold one message
/// each. A 64 KiB item type is left out: the compiler spends minutes on
/// by-value moves of an 8192-word array, and large messages are what the
/// record channels are for (rows for them come later).
const PAYLOAD_SIZES: [usize; 3] = [8, 64, 1024];

pub(super) fn payload_supported(size: usize) -> Result<(), String> {
    if PAYLOAD_SIZES.contains(&size) {
        Ok(())
    } else {
        Err(format!(
            "fixed-slot rows are built for {PAYLOAD_SIZES:?}-byte items only (one message per slot)"
        ))
    }
}

/// Calls `$body` with `$T` set to the payload type for `$size` bytes (one
/// of [`PAYLOAD_SIZES`]).
macro_rules! with_payload {
    ($size:expr, $T:ident => $body:expr) => {
        match $size {
            8 => {
                type $T = $crate::bench::transports::ipcring::Payload<1>;
                $body
            }
            64 => {
                type $T = $crate::bench::transports::ipcring::Payload<8>;
                $body
            }
            1024 => {
                type $T = $crate::bench::transports::ipcring::Payload<128>;
                $body
            }
            other => Err(format!("no ipcring payload type of {other} bytes")),
        }
    };
}
pub(super) use with_payload;

fn options(strategy: WaitStrategy) -> ChannelOptions {
    ChannelOptions::new().wait_strategy(strategy)
}

fn stream_capacity(size: usize) -> usize {
    (STREAM_BYTES / size)
        .max(MIN_STREAM_SLOTS)
        .next_power_of_two()
}

fn chunk_items(size: usize) -> usize {
    (CHUNK_BYTES / size).max(1)
}

/// Ping-pong over SPSC channels with one wait strategy on both sides.
pub struct SpscPingPong(pub WaitStrategy);

/// Ping-pong over MPMC channels (one sender and one receiver each way).
pub struct MpmcPingPong(pub WaitStrategy);

pub(super) struct SpscEcho<T: Pod> {
    tx: spsc::Sender<T>,
    rx: spsc::Receiver<T>,
}

struct MpmcEcho<T: Pod> {
    tx: mpmc::Sender<T>,
    rx: mpmc::Receiver<T>,
}

/// The same echo over either channel kind: block in slices, checking the
/// bench's stop between them.
macro_rules! echo {
    ($echo:ident, $name:literal) => {
        impl<T: Pod> Echo for $echo<T> {
            fn send(&mut self, message: &[u8], stop: &Stop) -> Result<(), String> {
                let mut item: T = bytemuck::pod_read_unaligned(message);
                loop {
                    match self.tx.send_timeout(item, SLICE) {
                        Ok(()) => return Ok(()),
                        Err(SendTimeoutError::Timeout(back)) => item = back,
                        Err(e) => return Err(format!(concat!($name, " send: {}"), e)),
                    }
                    stop.check()?;
                }
            }

            fn recv(&mut self, buffer: &mut [u8], stop: &Stop) -> Result<(), String> {
                loop {
                    match self.rx.recv_timeout(SLICE) {
                        Ok(item) => {
                            buffer.copy_from_slice(bytemuck::bytes_of(&item));
                            return Ok(());
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(e) => return Err(format!(concat!($name, " recv: {}"), e)),
                    }
                    stop.check()?;
                }
            }
        }
    };
}

echo!(SpscEcho, "ipcring-spsc");
echo!(MpmcEcho, "ipcring-mpmc");

/// Makes a segment per direction and hands both to the child.
pub(super) fn two_segments(
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
    fn supports(&self, size: usize) -> Result<(), String> {
        payload_supported(size)
    }

    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        with_payload!(size, T => {
            let make = || {
                spsc::create_segment::<T>(None, PINGPONG_CAPACITY, &options(self.0))
                    .map_err(|e| format!("ipcring-spsc segment: {e}"))
            };
            let (down, up) = two_segments(make, &mut spawner)?;
            let echo = spsc_echo::<T>(down, up, self.0)?;
            spawner.spawn()?;
            Ok(Box::new(echo) as Box<dyn Echo>)
        })
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String> {
        with_payload!(size, T => {
            let echo = spsc_echo::<T>(inherited.segment(1)?, inherited.segment(0)?, self.0)?;
            Ok(Box::new(echo) as Box<dyn Echo>)
        })
    }
}

/// Sends on `out`, receives on `back`.
pub(super) fn spsc_echo<T: Pod>(
    out: Segment,
    back: Segment,
    strategy: WaitStrategy,
) -> Result<SpscEcho<T>, String> {
    let mut tx = spsc::Sender::attach(out).map_err(|e| format!("ipcring-spsc sender: {e}"))?;
    let mut rx = spsc::Receiver::attach(back).map_err(|e| format!("ipcring-spsc receiver: {e}"))?;
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    Ok(SpscEcho { tx, rx })
}

impl PingPongTransport for MpmcPingPong {
    fn supports(&self, size: usize) -> Result<(), String> {
        payload_supported(size)
    }

    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        with_payload!(size, T => {
            let make = || {
                mpmc::create_segment::<T>(None, PINGPONG_CAPACITY, &options(self.0))
                    .map_err(|e| format!("ipcring-mpmc segment: {e}"))
            };
            let (down, up) = two_segments(make, &mut spawner)?;
            let echo = mpmc_echo::<T>(down, up, self.0)?;
            spawner.spawn()?;
            Ok(Box::new(echo) as Box<dyn Echo>)
        })
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String> {
        with_payload!(size, T => {
            let echo = mpmc_echo::<T>(inherited.segment(1)?, inherited.segment(0)?, self.0)?;
            Ok(Box::new(echo) as Box<dyn Echo>)
        })
    }
}

fn mpmc_echo<T: Pod>(
    out: Segment,
    back: Segment,
    strategy: WaitStrategy,
) -> Result<MpmcEcho<T>, String> {
    let mut tx = mpmc::Sender::attach(out).map_err(|e| format!("ipcring-mpmc sender: {e}"))?;
    let mut rx = mpmc::Receiver::attach(back).map_err(|e| format!("ipcring-mpmc receiver: {e}"))?;
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    Ok(MpmcEcho { tx, rx })
}

/// One-way stream through an SPSC channel, moved in chunks of up to
/// [`CHUNK_BYTES`] with the chunk API (one copy into and one out of the
/// slots, across the wrap); both sides poll (busy-spin). Its row is named
/// `ipcring-spsc-chunk`, to be compared with `rtrb-chunk`.
pub struct SpscChunks;

/// One end of an SPSC stream with its staging buffer, allocated once.
struct ChunkEnd<E, T> {
    end: E,
    batch: Vec<T>,
}

impl ThroughputTransport for SpscChunks {
    fn supports(&self, size: usize) -> Result<(), String> {
        payload_supported(size)
    }

    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Producer>, String> {
        with_payload!(size, T => {
            let segment = spsc::create_segment::<T>(
                None,
                stream_capacity(size),
                &options(WaitStrategy::BusySpin),
            )
            .map_err(|e| format!("ipcring-spsc segment: {e}"))?;
            spawner.share_segment(&segment)?;
            let tx = spsc::Sender::<T>::attach(segment)
                .map_err(|e| format!("ipcring-spsc sender: {e}"))?;
            spawner.spawn()?;
            Ok(Box::new(ChunkEnd {
                end: tx,
                batch: vec![T::zeroed(); chunk_items(size)],
            }) as Box<dyn Producer>)
        })
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Consumer>, String> {
        with_payload!(size, T => {
            let rx = spsc::Receiver::<T>::attach(inherited.segment(0)?)
                .map_err(|e| format!("ipcring-spsc receiver: {e}"))?;
            Ok(Box::new(ChunkEnd {
                end: rx,
                batch: vec![T::zeroed(); chunk_items(size)],
            }) as Box<dyn Consumer>)
        })
    }
}

impl<T: Pod> Producer for ChunkEnd<spsc::Sender<T>, T> {
    fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        let mut next = items.start;
        while next < items.end {
            let want = self.batch.len().min((items.end - next) as usize);
            let tx = &mut self.end;
            let mut chunk = match tx.write_chunk_up_to(want) {
                Ok(chunk) if !chunk.is_empty() => chunk,
                Ok(_) => {
                    stop.spin_until(|| tx.free_slots().ok().filter(|&n| n > 0))?;
                    continue;
                }
                Err(e) => return Err(format!("ipcring-spsc chunk: {e}")),
            };
            let n = chunk.len();
            for (i, item) in self.batch[..n].iter_mut().enumerate() {
                message::fill(bytemuck::bytes_of_mut(item), next + i as u64, 0);
            }
            // One copy straight into the ring's slots, across the wrap.
            chunk.fill_from_slice(&self.batch[..n]);
            chunk.commit_all();
            next += n as u64;
        }
        Ok(())
    }
}

impl<T: Pod> Consumer for ChunkEnd<spsc::Receiver<T>, T> {
    fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
        let mut expected = items.start;
        while expected < items.end {
            let want = self.batch.len().min((items.end - expected) as usize);
            let rx = &mut self.end;
            let chunk = match rx.read_chunk_up_to(want) {
                Ok(chunk) if !chunk.is_empty() => chunk,
                Ok(_) => {
                    stop.spin_until(|| rx.ready_items().ok().filter(|&n| n > 0))?;
                    continue;
                }
                Err(e) => return Err(format!("ipcring-spsc chunk: {e}")),
            };
            let n = chunk.len();
            chunk.copy_to_slice(&mut self.batch[..n]);
            chunk.commit(n);
            for item in &self.batch[..n] {
                message::check_seq(bytemuck::bytes_of(item), expected)?;
                expected += 1;
            }
        }
        Ok(())
    }
}

/// One-way stream through an SPSC channel, one item per call, as rtrb's
/// row pushes and pops. `BusySpin` polls `try_send` and `try_recv`, as
/// the in-process rows do; any other strategy blocks in `send_timeout` and
/// `recv_timeout` and waits in that strategy.
pub struct SpscOneByOne(pub WaitStrategy);

/// [`SpscOneByOne`] over an MPMC channel with one sender and one receiver,
/// as crossbeam's `ArrayQueue` row is used.
pub struct MpmcOneByOne(pub WaitStrategy);

/// One end of a one-by-one stream: the channel endpoint, and whether it
/// polls (`BusySpin`) or blocks.
struct OneByOneEnd<E> {
    end: E,
    poll: bool,
}

/// The same throughput transport over either channel kind, with a ring of
/// [`stream_capacity`] slots.
macro_rules! one_by_one {
    ($transport:ident, $module:ident, $name:literal) => {
        impl ThroughputTransport for $transport {
            fn supports(&self, size: usize) -> Result<(), String> {
                payload_supported(size)
            }

            fn parent(
                &self,
                mut spawner: Spawner<'_>,
                size: usize,
            ) -> Result<Box<dyn Producer>, String> {
                with_payload!(size, T => {
                    let segment =
                        $module::create_segment::<T>(None, stream_capacity(size), &options(self.0))
                            .map_err(|e| format!(concat!($name, " segment: {}"), e))?;
                    spawner.share_segment(&segment)?;
                    let mut tx = $module::Sender::<T>::attach(segment)
                        .map_err(|e| format!(concat!($name, " sender: {}"), e))?;
                    tx.set_wait_strategy(self.0);
                    spawner.spawn()?;
                    Ok(Box::new(OneByOneEnd {
                        end: tx,
                        poll: self.0 == WaitStrategy::BusySpin,
                    }) as Box<dyn Producer>)
                })
            }

            fn child(
                &self,
                inherited: &Inherited,
                size: usize,
            ) -> Result<Box<dyn Consumer>, String> {
                with_payload!(size, T => {
                    let mut rx = $module::Receiver::<T>::attach(inherited.segment(0)?)
                        .map_err(|e| format!(concat!($name, " receiver: {}"), e))?;
                    rx.set_wait_strategy(self.0);
                    Ok(Box::new(OneByOneEnd {
                        end: rx,
                        poll: self.0 == WaitStrategy::BusySpin,
                    }) as Box<dyn Consumer>)
                })
            }
        }

        impl<T: Pod> Producer for OneByOneEnd<$module::Sender<T>> {
            fn produce(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
                let error = |e: &dyn std::fmt::Display| format!(concat!($name, " send: {}"), e);
                for seq in items {
                    let mut item = T::zeroed();
                    message::fill(bytemuck::bytes_of_mut(&mut item), seq, 0);
                    if self.poll {
                        let tx = &mut self.end;
                        // Refilled whenever `try_send` hands the item back,
                        // so `take` always finds it.
                        let mut pending = Some(item);
                        stop.spin_until(|| match tx.try_send(pending.take()?) {
                            Ok(()) => Some(Ok(())),
                            Err(TrySendError::Full(back)) => {
                                pending = Some(back);
                                None
                            }
                            Err(e) => Some(Err(error(&e))),
                        })??;
                        continue;
                    }
                    loop {
                        match self.end.send_timeout(item, SLICE) {
                            Ok(()) => break,
                            Err(SendTimeoutError::Timeout(back)) => item = back,
                            Err(e) => return Err(error(&e)),
                        }
                        stop.check()?;
                    }
                }
                Ok(())
            }
        }

        impl<T: Pod> Consumer for OneByOneEnd<$module::Receiver<T>> {
            fn consume(&mut self, items: Range<u64>, stop: &Stop) -> Result<(), String> {
                let error = |e: &dyn std::fmt::Display| format!(concat!($name, " recv: {}"), e);
                for expected in items {
                    let item = if self.poll {
                        let rx = &mut self.end;
                        stop.spin_until(|| match rx.try_recv() {
                            Ok(item) => Some(Ok(item)),
                            Err(TryRecvError::Empty) => None,
                            Err(e) => Some(Err(error(&e))),
                        })??
                    } else {
                        loop {
                            match self.end.recv_timeout(SLICE) {
                                Ok(item) => break item,
                                Err(RecvTimeoutError::Timeout) => {}
                                Err(e) => return Err(error(&e)),
                            }
                            stop.check()?;
                        }
                    };
                    message::check_seq(bytemuck::bytes_of(&item), expected)?;
                }
                Ok(())
            }
        }
    };
}

one_by_one!(SpscOneByOne, spsc, "ipcring-spsc");
one_by_one!(MpmcOneByOne, mpmc, "ipcring-mpmc");
