//! Datagrams: messages of variable size with their boundaries kept, sent
//! to a **port** (one receiver, many senders) or a **mailbox** (many
//! senders, competing receivers).
//!
//! - A [`Port`] is bound by its receiver, which owns the name: when the
//!   receiver drops (or dies and is swept by `remove_stale`), the name goes,
//!   and connected senders get `Disconnected`. Senders [`PortSender::connect`]
//!   to it. It is a many-sender record channel
//!   ([`records`]), so a datagram is received whole and in
//!   order per sender, and a sender killed at any step leaves the port
//!   usable (docs/crash-behavior.md). Datagrams still queued when the
//!   receiver goes are dropped with the port: binding the name again
//!   starts an empty one.
//! - A [`Mailbox`] is a message queue used with one priority and one type
//!   ([`queue`](super::queue)): any number of processes send and receive,
//!   each datagram goes to exactly one receiver, and the mailbox persists
//!   until removed.
//!
//! Both offer the blocking, nonblocking (`try_`) and timed forms, zero-copy
//! sending (a loan written in place, then sent) and receiving (a borrowed
//! view read in place), and batches.
//!
//! ```
//! use ipcring::channel::ChannelOptions;
//! use ipcring::channel::datagram::{Port, PortSender};
//! use ipcring::segment::Address;
//!
//! let address: Address = format!("doc-port-{}", std::process::id()).parse()?;
//! let mut port = Port::bind(&address, 1 << 16, &ChannelOptions::new())?;
//! let mut tx = PortSender::connect(&address)?;
//! tx.send(b"ping")?;
//! assert_eq!(tx.try_send_batch(&[b"a".as_slice(), b"bc"])?, 2);
//! let mut buf = [0u8; 64];
//! let n = port.recv(&mut buf)?;
//! assert_eq!(&buf[..n], b"ping");
//! let mut batch = Vec::new();
//! assert_eq!(port.try_recv_batch(&mut batch, 8)?, 2);
//! assert_eq!(batch, [b"a".to_vec(), b"bc".to_vec()]);
//! drop(port); // the port owns its name: it is gone now
//! assert!(PortSender::connect(&address).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use super::queue::{
    InPlace, Loan, Queue, QueueConfig, QueueOpenError, QueueRecvError, QueueSendError, Select,
};
use super::records::{self, RecordRecvError, RecordSendError};
use super::{ChannelError, ChannelOptions, RecvError, TryRecvError};
use crate::ring::record::{ProducerMode, RecordGrant, RecordView};
use crate::segment::{Address, Segment, SegmentError};

/// The receiving end of a port: binds the name and owns it.
pub struct Port {
    receiver: records::Receiver,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("max_datagram", &self.receiver.max_record())
            .finish_non_exhaustive()
    }
}

impl Port {
    /// Binds a port at `address` with a `capacity`-byte buffer (a power of
    /// two; the largest datagram is about half of it). The name belongs to
    /// this port and is removed when it drops. A name left by a port whose
    /// receiver died is taken over; one held by a live port fails with
    /// `AlreadyExists`.
    pub fn bind(
        address: &Address,
        capacity: usize,
        options: &ChannelOptions,
    ) -> Result<Port, ChannelError> {
        let options = options.clone().owned(true);
        match records::Receiver::create(address, capacity, ProducerMode::Many, &options) {
            Err(ChannelError::Segment(SegmentError::AlreadyExists(_))) => {
                // A stale port (its owner died) is swept; a live one stays.
                let _ = crate::segment::remove_stale_where(|a| a == address);
                records::Receiver::create(address, capacity, ProducerMode::Many, &options)
            }
            other => other,
        }
        .map(|receiver| Port { receiver })
    }

    /// Binds an anonymous port (a memfd segment). Hand its segment to
    /// senders (`port.segment().inheritable_fd()`, or `send_fd`), who
    /// attach with [`PortSender::attach`].
    pub fn bind_anonymous(capacity: usize, options: &ChannelOptions) -> Result<Port, ChannelError> {
        let segment = records::create_segment(None, capacity, ProducerMode::Many, options)?;
        let receiver = records::Receiver::attach(segment)?;
        Ok(Port { receiver })
    }

    /// The port's segment.
    pub fn segment(&self) -> &Segment {
        self.receiver.segment()
    }

    /// The largest datagram this port carries.
    pub fn max_datagram(&self) -> usize {
        self.receiver.max_record()
    }

    /// Receives a datagram into `buf`, returning its length; waits while
    /// none is queued. Once every sender that connected has gone and the
    /// datagrams are drained, receives report `Disconnected` until a
    /// sender connects again. A datagram longer than `buf` is not truncated: it
    /// stays queued and the error reports its length.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecordRecvError> {
        self.receiver.recv_slice(buf)
    }

    /// [`recv`](Port::recv) without waiting: `Empty` if none is queued.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, RecordRecvError> {
        self.receiver.try_recv_slice(buf)
    }

    /// [`recv`](Port::recv), waiting at most `timeout`.
    pub fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecordRecvError> {
        self.receiver.recv_slice_timeout(buf, timeout)
    }

    /// Receives a datagram in place (zero-copy): the view is read where the
    /// sender wrote it and released on drop.
    pub fn recv_borrowed(&mut self) -> Result<RecordView<'_>, RecvError> {
        self.receiver.recv()
    }

    /// [`recv_borrowed`](Port::recv_borrowed) without waiting.
    pub fn try_recv_borrowed(&mut self) -> Result<RecordView<'_>, TryRecvError> {
        self.receiver.try_recv()
    }

    /// Appends up to `max` queued datagrams to `out` without waiting;
    /// returns how many, or `Empty` if none was queued.
    pub fn try_recv_batch(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> Result<usize, TryRecvError> {
        let mut taken = 0;
        while taken < max {
            let mut datagram = Vec::new();
            match self.receiver.try_recv_into(&mut datagram) {
                Ok(_) => {
                    out.push(datagram);
                    taken += 1;
                }
                Err(TryRecvError::Empty) if taken > 0 => break,
                Err(e) if taken == 0 => return Err(e),
                // Something went wrong after some were taken: report
                // those; the next call reports the error.
                Err(_) => break,
            }
        }
        Ok(taken)
    }

    /// Waits for one datagram, then appends it and up to `max - 1` more
    /// that are already queued to `out`; returns how many.
    pub fn recv_batch(&mut self, out: &mut Vec<Vec<u8>>, max: usize) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        let mut first = Vec::new();
        self.receiver.recv_into(&mut first)?;
        out.push(first);
        Ok(1 + self.try_recv_batch(out, max - 1).unwrap_or(0))
    }

    /// The record channel underneath, for what this type does not wrap
    /// (statistics, the wait strategy).
    pub fn records(&mut self) -> &mut records::Receiver {
        &mut self.receiver
    }
}

/// A sending end of a port.
pub struct PortSender {
    sender: records::Sender,
}

impl std::fmt::Debug for PortSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortSender")
            .field("max_datagram", &self.sender.max_record())
            .finish_non_exhaustive()
    }
}

impl PortSender {
    /// Connects to the port bound at `address`: `NotFound` if none is.
    pub fn connect(address: &Address) -> Result<PortSender, ChannelError> {
        let sender = records::Sender::open(address)?;
        PortSender::checked(sender)
    }

    /// Connects, waiting up to `timeout` for the port to be bound.
    pub fn connect_timeout(
        address: &Address,
        timeout: Duration,
    ) -> Result<PortSender, ChannelError> {
        let sender = records::Sender::open_timeout(address, timeout)?;
        PortSender::checked(sender)
    }

    /// Connects to an anonymous port's segment (from
    /// [`Port::bind_anonymous`], inherited or received over a socket).
    pub fn attach(segment: Segment) -> Result<PortSender, ChannelError> {
        PortSender::checked(records::Sender::attach(segment)?)
    }

    fn checked(sender: records::Sender) -> Result<PortSender, ChannelError> {
        if sender.segment().kind() != records::KIND_MANY {
            return Err(ChannelError::Incompatible {
                field: "producer mode",
                found: 0,
                expected: 1,
            });
        }
        Ok(PortSender { sender })
    }

    /// The largest datagram the port carries.
    pub fn max_datagram(&self) -> usize {
        self.sender.max_record()
    }

    /// Sends a datagram, waiting while the port is full.
    pub fn send(&mut self, datagram: &[u8]) -> Result<(), RecordSendError> {
        self.sender.send(datagram)
    }

    /// Sends without waiting: `Full` if there is no room now.
    pub fn try_send(&mut self, datagram: &[u8]) -> Result<(), RecordSendError> {
        self.sender.try_send(datagram)
    }

    /// Sends, waiting at most `timeout` for room.
    pub fn send_timeout(
        &mut self,
        datagram: &[u8],
        timeout: Duration,
    ) -> Result<(), RecordSendError> {
        self.sender.send_timeout(datagram, timeout)
    }

    /// Sends as many of `datagrams`, in order, as fit now; returns how
    /// many. `Full` (or any other error) only if not even the first went.
    pub fn try_send_batch(&mut self, datagrams: &[&[u8]]) -> Result<usize, RecordSendError> {
        for (sent, datagram) in datagrams.iter().enumerate() {
            if let Err(e) = self.sender.try_send(datagram) {
                return if sent == 0 { Err(e) } else { Ok(sent) };
            }
        }
        Ok(datagrams.len())
    }

    /// Sends every datagram in order, waiting for room as needed. On an
    /// error, the count sent so far comes with it.
    pub fn send_batch(&mut self, datagrams: &[&[u8]]) -> Result<usize, (usize, RecordSendError)> {
        for (sent, datagram) in datagrams.iter().enumerate() {
            self.sender.send(datagram).map_err(|e| (sent, e))?;
        }
        Ok(datagrams.len())
    }

    /// Loans room for a `len`-byte datagram to write in place (zero-copy),
    /// waiting while the port is full; `commit` the grant to send it.
    pub fn loan(&mut self, len: usize) -> Result<RecordGrant<'_>, RecordSendError> {
        self.sender.reserve(len)
    }

    /// [`loan`](PortSender::loan) without waiting.
    pub fn try_loan(&mut self, len: usize) -> Result<RecordGrant<'_>, RecordSendError> {
        self.sender.try_reserve(len)
    }

    /// [`loan`](PortSender::loan), waiting at most `timeout`.
    pub fn loan_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<RecordGrant<'_>, RecordSendError> {
        self.sender.reserve_timeout(len, timeout)
    }

    /// The record channel underneath.
    pub fn records(&mut self) -> &mut records::Sender {
        &mut self.sender
    }
}

/// The type every mailbox datagram carries in the queue underneath.
const MAILBOX_TYPE: u64 = 1;

/// A mailbox: a named, persistent datagram channel that any number of
/// processes send to and receive from, each datagram going to exactly one
/// receiver, oldest first. Every handle both sends and receives (up to 31
/// handles at once).
///
/// ```
/// use ipcring::channel::ChannelOptions;
/// use ipcring::channel::datagram::Mailbox;
///
/// let address = format!("doc-mailbox-{}", std::process::id()).parse()?;
/// let mut producer = Mailbox::create(&address, 64, 1024, &ChannelOptions::new())?;
/// let mut worker = Mailbox::open(&address)?;
/// producer.send(b"job 1")?;
/// let mut loan = producer.loan(5)?; // written in place, then sent
/// loan.write_at(0, b"job 2");
/// loan.send()?;
/// let mut buf = [0u8; 1024];
/// let n = worker.recv(&mut buf)?;
/// assert_eq!(&buf[..n], b"job 1");
/// let job = worker.recv_borrowed()?; // read in place, freed on drop
/// assert_eq!(job.to_vec(), b"job 2");
/// drop(job);
/// Mailbox::remove(&address)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Mailbox {
    queue: Queue,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("config", &self.queue.config())
            .finish_non_exhaustive()
    }
}

/// A datagram being written in a mailbox's memory; [`send`](MailboxLoan::send)
/// queues it, dropping it unsent frees the room.
pub struct MailboxLoan<'a>(Loan<'a>);

impl std::fmt::Debug for MailboxLoan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxLoan")
            .field("len", &self.0.len())
            .finish()
    }
}

impl MailboxLoan<'_> {
    /// The datagram's length, fixed when it was loaned.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the datagram is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Copies `src` in at `offset`; returns how many bytes fit.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> usize {
        self.0.write_at(offset, src)
    }

    /// Queues the datagram.
    pub fn send(self) -> Result<(), QueueSendError> {
        self.0.send(MAILBOX_TYPE, 0)
    }
}

impl Mailbox {
    fn config(capacity: usize, max_datagram: usize) -> QueueConfig {
        QueueConfig::new(capacity, max_datagram)
    }

    /// Creates a mailbox for `capacity` datagrams of at most
    /// `max_datagram` bytes each, and opens a handle to it.
    pub fn create(
        address: &Address,
        capacity: usize,
        max_datagram: usize,
        options: &ChannelOptions,
    ) -> Result<Mailbox, QueueOpenError> {
        Queue::create(address, &Mailbox::config(capacity, max_datagram), options)
            .map(|queue| Mailbox { queue })
    }

    /// Opens a handle to an existing mailbox.
    pub fn open(address: &Address) -> Result<Mailbox, QueueOpenError> {
        Queue::open(address).map(|queue| Mailbox { queue })
    }

    /// Opens the mailbox, creating it if it does not exist; an existing one
    /// created with another capacity or size is `Incompatible`.
    pub fn open_or_create(
        address: &Address,
        capacity: usize,
        max_datagram: usize,
        options: &ChannelOptions,
    ) -> Result<Mailbox, QueueOpenError> {
        Queue::open_or_create(address, &Mailbox::config(capacity, max_datagram), options)
            .map(|(queue, _)| Mailbox { queue })
    }

    /// A handle to a mailbox segment (named, SysV or memfd).
    pub fn attach(segment: Segment) -> Result<Mailbox, QueueOpenError> {
        Queue::attach(segment).map(|queue| Mailbox { queue })
    }

    /// Removes the mailbox's name; handles blocked on it wake with
    /// `Removed`, as do later operations on existing handles.
    pub fn remove(address: &Address) -> Result<(), QueueOpenError> {
        Queue::remove(address)
    }

    /// The largest datagram.
    pub fn max_datagram(&self) -> usize {
        self.queue.config().max_msg
    }

    /// Sends a datagram, waiting while the mailbox is full.
    pub fn send(&mut self, datagram: &[u8]) -> Result<(), QueueSendError> {
        self.queue.send(datagram, MAILBOX_TYPE, 0)
    }

    /// Sends without waiting: `Full` if there is no room now.
    pub fn try_send(&mut self, datagram: &[u8]) -> Result<(), QueueSendError> {
        self.queue.try_send(datagram, MAILBOX_TYPE, 0)
    }

    /// Sends, waiting at most `timeout` for room.
    pub fn send_timeout(
        &mut self,
        datagram: &[u8],
        timeout: Duration,
    ) -> Result<(), QueueSendError> {
        self.queue.send_timeout(datagram, MAILBOX_TYPE, 0, timeout)
    }

    /// Sends as many of `datagrams`, in order, as fit now; returns how
    /// many. An error only if not even the first went.
    pub fn try_send_batch(&mut self, datagrams: &[&[u8]]) -> Result<usize, QueueSendError> {
        for (sent, datagram) in datagrams.iter().enumerate() {
            if let Err(e) = self.try_send(datagram) {
                return if sent == 0 { Err(e) } else { Ok(sent) };
            }
        }
        Ok(datagrams.len())
    }

    /// Sends every datagram in order, waiting for room as needed; on an
    /// error, the count sent so far comes with it.
    pub fn send_batch(&mut self, datagrams: &[&[u8]]) -> Result<usize, (usize, QueueSendError)> {
        for (sent, datagram) in datagrams.iter().enumerate() {
            self.send(datagram).map_err(|e| (sent, e))?;
        }
        Ok(datagrams.len())
    }

    /// Loans room for a `len`-byte datagram to write in place, waiting
    /// while the mailbox is full.
    pub fn loan(&mut self, len: usize) -> Result<MailboxLoan<'_>, QueueSendError> {
        self.queue.loan(len).map(MailboxLoan)
    }

    /// [`loan`](Mailbox::loan) without waiting.
    pub fn try_loan(&mut self, len: usize) -> Result<MailboxLoan<'_>, QueueSendError> {
        self.queue.try_loan(len).map(MailboxLoan)
    }

    /// [`loan`](Mailbox::loan), waiting at most `timeout`.
    pub fn loan_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<MailboxLoan<'_>, QueueSendError> {
        self.queue.loan_timeout(len, timeout).map(MailboxLoan)
    }

    /// Receives the oldest datagram into `buf`, returning its length;
    /// waits while none is queued. A datagram longer than `buf` stays
    /// queued and the error (`TooLarge`) reports its length.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, QueueRecvError> {
        self.queue.recv(Select::Any, buf).map(|r| r.len)
    }

    /// [`recv`](Mailbox::recv) without waiting: `NoMessage` if none.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, QueueRecvError> {
        self.queue.try_recv(Select::Any, buf).map(|r| r.len)
    }

    /// [`recv`](Mailbox::recv), waiting at most `timeout`.
    pub fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, QueueRecvError> {
        self.queue
            .recv_timeout(Select::Any, buf, timeout)
            .map(|r| r.len)
    }

    /// Receives the oldest datagram in place: the view reads it where the
    /// sender wrote it and frees it on drop. A handle killed while holding
    /// one loses it (counted in the queue's `losses`).
    pub fn recv_borrowed(&mut self) -> Result<InPlace<'_>, QueueRecvError> {
        self.queue.recv_in_place(Select::Any)
    }

    /// [`recv_borrowed`](Mailbox::recv_borrowed) without waiting.
    pub fn try_recv_borrowed(&mut self) -> Result<InPlace<'_>, QueueRecvError> {
        self.queue.try_recv_in_place(Select::Any)
    }

    /// Appends up to `max` queued datagrams to `out` without waiting;
    /// returns how many, or `NoMessage` if none was queued.
    pub fn try_recv_batch(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> Result<usize, QueueRecvError> {
        let mut taken = 0;
        while taken < max {
            match self.queue.try_recv_in_place(Select::Any) {
                Ok(datagram) => {
                    out.push(datagram.to_vec());
                    taken += 1;
                }
                Err(e) if taken == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(taken)
    }

    /// Waits for one datagram, then appends it and up to `max - 1` more
    /// already queued to `out`; returns how many.
    pub fn recv_batch(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> Result<usize, QueueRecvError> {
        if max == 0 {
            return Ok(0);
        }
        out.push(self.queue.recv_in_place(Select::Any)?.to_vec());
        Ok(1 + self.try_recv_batch(out, max - 1).unwrap_or(0))
    }

    /// The queue underneath (statistics, peek, the wait strategy).
    pub fn queue(&mut self) -> &mut Queue {
        &mut self.queue
    }
}
