//! ipcring's variable-size message channels as two-way links, for
//! ping-pong and paced rows and (one message per call) for throughput
//! rows: the record channel, a datagram port (a record channel with many
//! senders, bound by its receiver) and the message queue. Each direction
//! is its own anonymous segment; every size the bench knows fits, since
//! these channels carry bytes, not a fixed item type.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipcring::channel::datagram::{Port, PortSender};
use ipcring::channel::queue::{Queue, QueueConfig, QueueRecvError, QueueSendError, Select};
use ipcring::channel::records::{self, RecordRecvError, RecordSendError};
use ipcring::channel::{ChannelOptions, queue};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{OpenOptions, Segment};
use ipcring::sync::WaitStrategy;

use crate::bench::link::{Echo, PingPongTransport, Stop};
use crate::bench::process::{Inherited, Spawner};

use super::ipcring::two_segments;

/// How long one blocking call may wait before the bench checks its stop.
const SLICE: Duration = Duration::from_millis(50);
/// Messages a direction holds in ping-pong and paced rows: ping-pong keeps
/// one in flight, a paced sender this far ahead waits and the wait shows
/// in its latencies.
const PINGPONG_MESSAGES: usize = 64;
/// Bytes of messages a direction holds in throughput rows, as the
/// fixed-slot rings of `ipcring.rs` hold; at least [`MIN_STREAM_MESSAGES`].
const STREAM_BYTES: usize = 32 * 1024;
const MIN_STREAM_MESSAGES: usize = 8;
/// Room for a record's header in a record buffer.
const RECORD_HEADER: usize = 16;

/// How many messages a direction holds: few for ping-pong and paced rows,
/// a ring's worth for throughput, so that a sender rarely waits for room.
#[derive(Clone, Copy, Debug)]
pub enum Depth {
    PingPong,
    Stream,
}

impl Depth {
    fn messages(self, size: usize) -> usize {
        match self {
            Depth::PingPong => PINGPONG_MESSAGES,
            Depth::Stream => (STREAM_BYTES / size.max(1)).max(MIN_STREAM_MESSAGES),
        }
    }

    /// A record buffer holding [`messages`](Self::messages) of `size`
    /// bytes with their headers, a power of two.
    fn record_capacity(self, size: usize) -> usize {
        (self.messages(size) * (size + RECORD_HEADER))
            .next_power_of_two()
            .max(4096)
    }
}

fn options(strategy: WaitStrategy) -> ChannelOptions {
    ChannelOptions::new().wait_strategy(strategy)
}

/// Two record channels (one sender each), in a wait strategy.
pub struct RecordLink(pub WaitStrategy, pub Depth);

/// Two datagram ports: each side binds the port it receives on and sends
/// to the other's. The parent's port reaches the child by inheritance;
/// the child's comes back over a Unix socket (`SCM_RIGHTS`), as senders
/// of an anonymous port are given it.
pub struct DatagramLink(pub WaitStrategy, pub Depth);

/// Two message queues.
pub struct QueueLink(pub WaitStrategy, pub Depth);

struct RecordEcho {
    tx: records::Sender,
    rx: records::Receiver,
}

struct DatagramEcho {
    tx: PortSender,
    rx: Port,
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

impl Echo for DatagramEcho {
    fn send(&mut self, message: &[u8], stop: &Stop) -> Result<(), String> {
        loop {
            match self.tx.send_timeout(message, SLICE) {
                Ok(()) => return Ok(()),
                Err(RecordSendError::Timeout) => {}
                Err(e) => return Err(format!("ipcring-datagram send: {e}")),
            }
            stop.check()?;
        }
    }

    fn recv(&mut self, buffer: &mut [u8], stop: &Stop) -> Result<(), String> {
        loop {
            match self.rx.recv_timeout(buffer, SLICE) {
                Ok(len) if len == buffer.len() => return Ok(()),
                Ok(len) => return Err(format!("ipcring-datagram recv: {len} bytes")),
                Err(RecordRecvError::Timeout) => {}
                Err(e) => return Err(format!("ipcring-datagram recv: {e}")),
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

impl PingPongTransport for RecordLink {
    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let make = || {
            records::create_segment(
                None,
                self.1.record_capacity(size),
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

impl DatagramLink {
    fn bind(&self, size: usize) -> Result<Port, String> {
        let mut port = Port::bind_anonymous(self.1.record_capacity(size), &options(self.0))
            .map_err(|e| format!("ipcring-datagram port: {e}"))?;
        port.records().set_wait_strategy(self.0);
        Ok(port)
    }

    fn connect(&self, segment: Segment) -> Result<PortSender, String> {
        let mut tx =
            PortSender::attach(segment).map_err(|e| format!("ipcring-datagram sender: {e}"))?;
        tx.records().set_wait_strategy(self.0);
        Ok(tx)
    }
}

impl PingPongTransport for DatagramLink {
    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let rx = self.bind(size)?;
        spawner.share_segment(rx.segment())?;
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("ipcring-datagram socketpair: {e}"))?;
        let theirs_too = theirs
            .try_clone()
            .map_err(|e| format!("ipcring-datagram: {e}"))?;
        spawner.stdio(OwnedFd::from(theirs), OwnedFd::from(theirs_too));
        // The child's port comes back once it is bound; a child that dies
        // first closes the socket, and the deadline bounds a hung one.
        let wait = spawner.stop().remaining().max(Duration::from_millis(1));
        spawner.spawn()?;
        ours.set_read_timeout(Some(wait))
            .map_err(|e| format!("ipcring-datagram: {e}"))?;
        let segment = Segment::recv_fd(&ours, &OpenOptions::new())
            .map_err(|e| format!("ipcring-datagram: receiving the child's port: {e}"))?;
        Ok(Box::new(DatagramEcho {
            tx: self.connect(segment)?,
            rx,
        }))
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String> {
        let (stdin, _stdout) = inherited.stdio_pipes()?;
        let socket = UnixStream::from(OwnedFd::from(stdin));
        let rx = self.bind(size)?;
        rx.segment()
            .send_fd(&socket)
            .map_err(|e| format!("ipcring-datagram: sending our port: {e}"))?;
        Ok(Box::new(DatagramEcho {
            tx: self.connect(inherited.segment(0)?)?,
            rx,
        }))
    }
}

impl PingPongTransport for QueueLink {
    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let config = QueueConfig::new(self.1.messages(size), size);
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
