//! Message-oriented kernel transports, each between two real processes:
//! `uds-dgram` (a Unix datagram socket pair), `sysv-msg` (one System V
//! message queue, a message type per direction), `posix-mq` (two POSIX
//! message queues) and `eventfd` (a shared memfd buffer per direction, an
//! eventfd to say it is full). Each send and each receive is one call, so
//! their throughput rows move one message per call.
//!
//! What the kernel does not release by itself when the child dies (a
//! `msgrcv`, a datagram `recv`) is released by the row's abort hook.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipcring::platform::{
    PosixMessageQueue, SystemDeadline, SysvMessage, SysvMessageQueue, eventfd, monotonic_ns,
};
use ipcring::segment::{CreateOptions, Segment};

use crate::bench::link::{Echo, PingPongTransport, Stop};
use crate::bench::process::{Inherited, Spawner};

/// Owner-only, as the objects a program makes for itself should be.
const MODE: u32 = 0o600;

/// `uds-dgram`: one datagram per message over a connected socket pair.
pub struct UnixDgram;

struct Datagrams(UnixDatagram);

impl PingPongTransport for UnixDgram {
    fn supports(&self, size: usize) -> Result<(), String> {
        // The largest datagram follows the socket buffer sizes
        // (`net.core.wmem_default`): try one.
        let (a, b) = UnixDatagram::pair().map_err(|e| format!("socketpair: {e}"))?;
        a.send(&vec![0; size])
            .map_err(|e| format!("a {size}-byte datagram: {e}"))?;
        let mut buffer = vec![0; size];
        b.recv(&mut buffer)
            .map_err(|e| format!("a {size}-byte datagram: {e}"))
            .map(drop)
    }

    fn parent(&self, mut spawner: Spawner<'_>, _size: usize) -> Result<Box<dyn Echo>, String> {
        let (ours, theirs) = UnixDatagram::pair().map_err(|e| format!("uds-dgram: {e}"))?;
        let theirs_too = theirs.try_clone().map_err(|e| format!("uds-dgram: {e}"))?;
        spawner.stdio(OwnedFd::from(theirs), OwnedFd::from(theirs_too));
        // A datagram socket does not see its peer die: shutting our end
        // down makes a blocked `recv` return 0 and a blocked `send` fail.
        let release = ours.try_clone().map_err(|e| format!("uds-dgram: {e}"))?;
        spawner.on_abort(move || {
            let _ = release.shutdown(Shutdown::Both);
        });
        spawner.spawn()?;
        Ok(Box::new(Datagrams(ours)))
    }

    fn child(&self, inherited: &Inherited, _size: usize) -> Result<Box<dyn Echo>, String> {
        let (stdin, _stdout) = inherited.stdio_pipes()?;
        Ok(Box::new(Datagrams(UnixDatagram::from(OwnedFd::from(
            stdin,
        )))))
    }
}

impl Echo for Datagrams {
    fn send(&mut self, message: &[u8], _stop: &Stop) -> Result<(), String> {
        match self.0.send(message) {
            Ok(n) if n == message.len() => Ok(()),
            Ok(n) => Err(format!("uds-dgram: sent {n} of {} bytes", message.len())),
            Err(e) => Err(format!("uds-dgram: {e}")),
        }
    }

    fn recv(&mut self, buffer: &mut [u8], _stop: &Stop) -> Result<(), String> {
        match self.0.recv(buffer) {
            Ok(n) if n == buffer.len() => Ok(()),
            Ok(0) => Err("uds-dgram: the socket was shut down".to_owned()),
            Ok(n) => Err(format!("uds-dgram: received {n} of {} bytes", buffer.len())),
            Err(e) => Err(format!("uds-dgram: {e}")),
        }
    }
}

/// `sysv-msg`: one private System V queue; the parent sends type 1, the
/// child type 2. Removed (`IPC_RMID`) when the parent's end goes, and at
/// once if the row is aborted.
pub struct SysvMsg;

const TO_CHILD: i64 = 1;
const TO_PARENT: i64 = 2;

struct SysvEnd {
    queue: SysvMessageQueue,
    send_kind: i64,
    recv_kind: i64,
    /// The kernel's message buffer (type word, then payload).
    message: SysvMessage,
    /// The parent's end removes the queue.
    owner: bool,
}

fn read_proc_limit(path: &str) -> Result<usize, String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| format!("cannot read {path}"))
}

impl PingPongTransport for SysvMsg {
    fn supports(&self, size: usize) -> Result<(), String> {
        let max = SysvMessageQueue::max_message_size()
            .map_err(|e| format!("cannot read kernel.msgmax: {e}"))?;
        if size > max {
            return Err(format!("kernel.msgmax is {max} bytes"));
        }
        // Both directions share the queue, whose byte limit is msgmnb.
        let queue_bytes = read_proc_limit("/proc/sys/kernel/msgmnb")?;
        if size > queue_bytes {
            return Err(format!("kernel.msgmnb is {queue_bytes} bytes"));
        }
        let probe = SysvMessageQueue::create_private(MODE).map_err(|e| format!("msgget: {e}"))?;
        probe.remove().map_err(|e| format!("msgctl(IPC_RMID): {e}"))
    }

    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let queue = SysvMessageQueue::create_private(MODE).map_err(|e| format!("msgget: {e}"))?;
        let end = SysvEnd {
            queue,
            send_kind: TO_CHILD,
            recv_kind: TO_PARENT,
            message: SysvMessage::new(size),
            owner: true,
        };
        spawner.share_name(&queue.id().to_string());
        // Removal wakes a blocked msgsnd or msgrcv with EIDRM.
        spawner.on_abort(move || {
            let _ = queue.remove();
        });
        spawner.spawn()?;
        Ok(Box::new(end))
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String> {
        let id = inherited
            .name()?
            .parse()
            .map_err(|e| format!("sysv-msg: queue id: {e}"))?;
        Ok(Box::new(SysvEnd {
            queue: SysvMessageQueue::from_id(id),
            send_kind: TO_PARENT,
            recv_kind: TO_CHILD,
            message: SysvMessage::new(size),
            owner: false,
        }))
    }
}

impl Echo for SysvEnd {
    fn send(&mut self, message: &[u8], _stop: &Stop) -> Result<(), String> {
        self.message.payload_mut().copy_from_slice(message);
        self.queue
            .send(self.send_kind, &mut self.message)
            .map_err(|e| format!("msgsnd: {e}"))
    }

    fn recv(&mut self, buffer: &mut [u8], _stop: &Stop) -> Result<(), String> {
        self.queue
            .receive(self.recv_kind, &mut self.message)
            .map_err(|e| format!("msgrcv: {e}"))?;
        let payload = self.message.payload();
        if payload.len() != buffer.len() {
            return Err(format!(
                "msgrcv: {} of {} bytes",
                payload.len(),
                buffer.len()
            ));
        }
        buffer.copy_from_slice(payload);
        Ok(())
    }
}

impl Drop for SysvEnd {
    fn drop(&mut self) {
        if self.owner {
            let _ = self.queue.remove();
        }
    }
}

/// `posix-mq`: two queues with unique names, one per direction. The child
/// unlinks both names as soon as it has them open, and the parent unlinks
/// them again when its end goes, so no name outlives the row.
pub struct PosixMq;

/// Queued messages per queue: within the default `fs.mqueue.msg_max` (10).
const MQ_DEPTH: usize = 8;

struct MqEnd {
    to_peer: PosixMessageQueue,
    from_peer: PosixMessageQueue,
    /// Computed once: the calls then cost no clock read.
    deadline: SystemDeadline,
    /// The parent's end unlinks the names again on drop.
    _names: Option<MqNames>,
}

/// Unlinks a row's queue names on drop; a name already gone is fine.
struct MqNames([CString; 2]);

impl Drop for MqNames {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = PosixMessageQueue::unlink(name);
        }
    }
}

fn mq_names(base: &str) -> Result<[CString; 2], String> {
    let name = |suffix| {
        CString::new(format!("/{base}-{suffix}")).map_err(|_| "a queue name holds a NUL".to_owned())
    };
    Ok([name("down")?, name("up")?])
}

fn mq_depth() -> usize {
    PosixMessageQueue::max_messages().map_or(MQ_DEPTH, |max| max.clamp(1, MQ_DEPTH))
}

impl PingPongTransport for PosixMq {
    fn supports(&self, size: usize) -> Result<(), String> {
        if let Ok(max) = PosixMessageQueue::max_message_size()
            && size > max
        {
            return Err(format!("fs.mqueue.msgsize_max is {max} bytes"));
        }
        let base = format!(
            "ipcring-bench-probe-{}-{}",
            std::process::id(),
            monotonic_ns()
        );
        let [name, _] = mq_names(&base)?;
        let probe = PosixMessageQueue::create(&name, mq_depth(), size, MODE)
            .map_err(|e| format!("mq_open: {e}"))?;
        drop(probe);
        PosixMessageQueue::unlink(&name).map_err(|e| format!("mq_unlink: {e}"))
    }

    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let base = format!("ipcring-bench-{}-{}", std::process::id(), monotonic_ns());
        let names = mq_names(&base)?;
        let create = |name| {
            PosixMessageQueue::create(name, mq_depth(), size, MODE)
                .map_err(|e| format!("mq_open: {e}"))
        };
        // The guard exists before the first queue, so every path unlinks.
        let guard = MqNames(names.clone());
        let end = MqEnd {
            to_peer: create(&names[0])?,
            from_peer: create(&names[1])?,
            deadline: SystemDeadline::after(spawner.stop().remaining()),
            _names: Some(guard),
        };
        // A queue does not see its peer die: on abort, a zeroed message
        // wakes our receive, and fails the round's check.
        let wake = PosixMessageQueue::open(&names[1]).map_err(|e| format!("mq_open: {e}"))?;
        spawner.on_abort(move || {
            let _ = wake.send(
                &vec![0; size],
                SystemDeadline::after(Duration::from_millis(10)),
            );
        });
        spawner.share_name(&base);
        spawner.spawn()?;
        Ok(Box::new(end))
    }

    fn child(&self, inherited: &Inherited, _size: usize) -> Result<Box<dyn Echo>, String> {
        let names = mq_names(inherited.name()?)?;
        let open = |name| PosixMessageQueue::open(name).map_err(|e| format!("mq_open: {e}"));
        let end = MqEnd {
            from_peer: open(&names[0])?,
            to_peer: open(&names[1])?,
            deadline: SystemDeadline::after(inherited.timeout()),
            _names: None,
        };
        for name in &names {
            let _ = PosixMessageQueue::unlink(name);
        }
        Ok(Box::new(end))
    }
}

impl Echo for MqEnd {
    fn send(&mut self, message: &[u8], _stop: &Stop) -> Result<(), String> {
        self.to_peer
            .send(message, self.deadline)
            .map_err(|e| format!("mq_send: {e}"))
    }

    fn recv(&mut self, buffer: &mut [u8], _stop: &Stop) -> Result<(), String> {
        let n = self
            .from_peer
            .receive(buffer, self.deadline)
            .map_err(|e| format!("mq_receive: {e}"))?;
        if n != buffer.len() {
            return Err(format!("mq_receive: {n} of {} bytes", buffer.len()));
        }
        Ok(())
    }
}

/// `eventfd`: the payload goes through a shared memfd buffer, one per
/// direction; an eventfd per direction only says "a message is in the
/// buffer" (the receiver blocks in `read`). The receiver then counts the
/// message as taken in the buffer's header, which a sender with a second
/// message to send waits for by polling (ping-pong never waits there).
pub struct EventFd;

/// Per direction, at `direction * stride`:
///
/// | offset | field     | unit / range                          | written by    |
/// |--------|-----------|---------------------------------------|---------------|
/// | 0      | `taken`   | messages the receiver has copied out  | receiver only |
/// | 64     | payload   | one message, `size` bytes             | sender only, while `taken` equals messages sent |
const TAKEN: usize = 0;
const PAYLOAD: usize = 64;

fn stride(size: usize) -> usize {
    (PAYLOAD + size).next_multiple_of(64)
}

struct EventEnd {
    segment: Segment,
    /// Offsets of the two directions' areas.
    outbound: usize,
    inbound: usize,
    ready_out: File,
    ready_in: File,
    sent: u64,
    received: u64,
}

impl PingPongTransport for EventFd {
    fn parent(&self, mut spawner: Spawner<'_>, size: usize) -> Result<Box<dyn Echo>, String> {
        let segment = Segment::create_anonymous(&CreateOptions::new(2 * stride(size)))
            .map_err(|e| format!("eventfd segment: {e}"))?;
        let down = eventfd().map_err(|e| format!("eventfd: {e}"))?;
        let up = eventfd().map_err(|e| format!("eventfd: {e}"))?;
        let child_down = down.try_clone().map_err(|e| format!("eventfd: {e}"))?;
        let child_up = up.try_clone().map_err(|e| format!("eventfd: {e}"))?;
        spawner.share_segment(&segment)?;
        // The child reads `down` as its stdin and signals on `up`, its
        // stdout.
        spawner.stdio(OwnedFd::from(child_down), OwnedFd::from(child_up));
        // An eventfd does not see its peer die: a signal on our inbound
        // counter wakes our read, and the empty buffer fails the check.
        let mut wake = up.try_clone().map_err(|e| format!("eventfd: {e}"))?;
        spawner.on_abort(move || {
            let _ = wake.write_all(&1u64.to_ne_bytes());
        });
        spawner.spawn()?;
        Ok(Box::new(EventEnd {
            segment,
            outbound: 0,
            inbound: stride(size),
            ready_out: down,
            ready_in: up,
            sent: 0,
            received: 0,
        }))
    }

    fn child(&self, inherited: &Inherited, size: usize) -> Result<Box<dyn Echo>, String> {
        let (down, up) = inherited.stdio_pipes()?;
        Ok(Box::new(EventEnd {
            segment: inherited.segment(0)?,
            outbound: stride(size),
            inbound: 0,
            ready_out: up,
            ready_in: down,
            sent: 0,
            received: 0,
        }))
    }
}

impl EventEnd {
    fn taken(&self, area: usize) -> Result<&AtomicU64, String> {
        self.segment
            .view(area + TAKEN)
            .map_err(|e| format!("eventfd buffer: {e}"))
    }

    /// The payload bytes of `area`, checked against the segment's length.
    fn payload(&self, area: usize, len: usize) -> Result<*mut u8, String> {
        let start = area + PAYLOAD;
        if start + len > self.segment.user_len() {
            return Err("eventfd: message larger than its buffer".to_owned());
        }
        // SAFETY: `start + len` is inside the user area (checked above).
        Ok(unsafe { self.segment.user_ptr().add(start) })
    }
}

impl Echo for EventEnd {
    fn send(&mut self, message: &[u8], stop: &Stop) -> Result<(), String> {
        let taken = self.taken(self.outbound)?;
        let sent = self.sent;
        // Acquire: pairs with the receiver's Release store of `taken`, so
        // its copy-out of the previous message is done before we overwrite.
        if taken.load(Ordering::Acquire) != sent {
            stop.spin_until(|| (taken.load(Ordering::Acquire) == sent).then_some(()))?;
        }
        let payload = self.payload(self.outbound, message.len())?;
        // SAFETY: the buffer is ours to write: the receiver copied the last
        // message out (`taken == sent`) and reads again only after the
        // eventfd signal below; `payload` has room for `message` (checked).
        unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), payload, message.len()) };
        self.sent += 1;
        // The eventfd write orders the copy before the peer's read of the
        // counter (the kernel's locks are full barriers).
        self.ready_out
            .write_all(&1u64.to_ne_bytes())
            .map_err(|e| format!("eventfd: {e}"))
    }

    fn recv(&mut self, buffer: &mut [u8], _stop: &Stop) -> Result<(), String> {
        let mut count = [0; 8];
        self.ready_in
            .read_exact(&mut count)
            .map_err(|e| format!("eventfd: {e}"))?;
        let payload = self.payload(self.inbound, buffer.len())?;
        // SAFETY: the sender wrote the message before its eventfd signal,
        // which our read returned, and writes again only after `taken`
        // below; `payload` spans `buffer.len()` bytes of the segment.
        unsafe { std::ptr::copy_nonoverlapping(payload, buffer.as_mut_ptr(), buffer.len()) };
        self.received += 1;
        // Release: pairs with the sender's Acquire load in `send`.
        self.taken(self.inbound)?
            .store(self.received, Ordering::Release);
        Ok(())
    }
}
