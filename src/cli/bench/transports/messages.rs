//! ipcring's variable-size message channels in ping-pong and paced rows:
//! the record channel (what a datagram port is), the message queue, and a
//! mailbox (the queue used with one type). Each direction is its own
//! anonymous segment that the child inherits; every size the bench knows
//! fits, since these channels carry bytes, not a fixed item type.

use std::time::Duration;

use ipcring::channel::queue::{Queue, QueueConfig, QueueRecvError, QueueSendError, Select};
use ipcring::channel::records::{self, RecordRecvError, RecordSendError};
use ipcring::channel::{ChannelOptions, queue};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::Segment;
use ipcring::sync::WaitStrategy;

use crate::bench::link::{Echo, PingPongTransport, Stop};
use crate::bench::process::{Inherited, Spawner};

use super::ipcring::two_segments;

/// How long one blocking call may wait before the bench checks its stop.
const SLICE: Duration = Duration::from_millis(50);
/// Messages a queue direction holds; ping-pong keeps one in flight, a
/// paced sender this far ahead waits and the wait shows in its latencies.
const QUEUE_MESSAGES: usize = 64;

fn options(strategy: WaitStrategy) -> ChannelOptions {
    ChannelOptions::new().wait_strategy(strategy)
}

/// A record buffer with room for 64 messages of `size` bytes (and their
/// headers), a power of two.
fn record_capacity(size: usize) -> usize {
    (64 * (size + 16)).next_power_of_two().max(4096)
}

/// Ping-pong over two record channels (one sender each).
pub struct RecordPingPong(pub WaitStrategy);

/// Ping-pong over two message queues.
pub struct QueuePingPong(pub WaitStrategy);

struct RecordEcho {
    tx: records::Sender,
    rx: records::Receiver,
}

struct QueueEcho {
    tx: Queue,
    rx: Queue,
}

impl Echo for RecordEcho {
    fn send(&mut self, message: &[u8], stop: &Stop) -> Result<(), String> {
        loop {
            match self.tx.send_timeout(message, SLICE) {
                Ok(()) => return Ok(()),
                Err(RecordSendError::Timeout) => {}
                Err(e) => return Err(format!("ipcring-records send: {e}")),
            }
            stop.check()?;
        }
    }

    fn recv(&mut self, buffer: &mut [u8], stop: &Stop) -> Result<(), String> {
        loop {
            match self.rx.recv_slice_timeout(buffer, SLICE) {
                Ok(len) if len == buffer.len() => return Ok(()),
                Ok(len) => return Err(format!("ipcring-records recv: {len} bytes")),
                Err(RecordRecvError::Timeout) => {}
                Err(e) => return Err(format!("ipcring-records recv: {e}")),
            }
            stop.check()?;
        }
    }
}

impl Echo for QueueEcho {
    fn send(&mut self, message: &[u8], stop: &Stop) -> Result<(), String> {
        loop {
            match self.tx.send_timeout(message, 1, 0, SLICE) {
                Ok(()) => return Ok(()),
                Err(QueueSendError::Timeout) => {}
                Err(e) => return Err(format!("ipcring-queue send: {e}")),
            }
            stop.check()?;
        }
    }

    fn recv(&mut self, buffer: &mut [u8], stop: &Stop) -> Result<(), String> {
        loop {
            match self.rx.recv_timeout(Select::Any, buffer, SLICE) {
                Ok(received) if received.len == buffer.len() => return Ok(()),
                Ok(received) => {
                    return Err(format!("ipcring-queue recv: {} bytes", received.len));
                }
                Err(QueueRecvError::Timeout) => {}
                Err(e) => return Err(format!("ipcring-queue recv: {e}")),
            }
            stop.check()?;
        }
    }
}

fn record_echo(out: Segment, back: Segment, strategy: WaitStrategy) -> Result<RecordEcho, String> {
    let mut tx =
        records::Sender::attach(out).map_err(|e| format!("ipcring-records sender: {e}"))?;
    let mut rx =
        records::Receiver::attach(back).map_err(|e| format!("ipcring-records receiver: {e}"))?;
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    Ok(RecordEcho { tx, rx })
}

fn queue_echo(out: Segment, back: Segment, strategy: WaitStrategy) -> Result<QueueEcho, String> {
    let mut tx = Queue::attach(out).map_err(|e| format!("ipcring-queue: {e}"))?;
    let mut rx = Queue::attach(back).map_err(|e| format!("ipcring-queue: {e}"))?;
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    Ok(QueueEcho { tx, rx })
}

impl PingPongTransport for RecordPingPong {
    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let make = || {
            records::create_segment(
                None,
                record_capacity(size),
                ProducerMode::Single,
                &options(self.0),
            )
            .map_err(|e| format!("ipcring-records segment: {e}"))
        };
        let (down, up) = two_segments(make, &mut spawner)?;
        let echo = record_echo(down, up, self.0)?;
        spawner.spawn()?;
        Ok(Box::new(echo))
    }

    fn child(&self, inherited: &Inherited, _size: usize) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(record_echo(
            inherited.segment(1)?,
            inherited.segment(0)?,
            self.0,
        )?))
    }
}

impl PingPongTransport for QueuePingPong {
    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let config = QueueConfig::new(QUEUE_MESSAGES, size);
        let make = || {
            queue::create_segment(None, &config, &options(self.0))
                .map_err(|e| format!("ipcring-queue segment: {e}"))
        };
        let (down, up) = two_segments(make, &mut spawner)?;
        let echo = queue_echo(down, up, self.0)?;
        spawner.spawn()?;
        Ok(Box::new(echo))
    }

    fn child(&self, inherited: &Inherited, _size: usize) -> Result<Box<dyn Echo>, String> {
        Ok(Box::new(queue_echo(
            inherited.segment(1)?,
            inherited.segment(0)?,
            self.0,
        )?))
    }
}
