//! The kernel's own IPC objects, which ipcring is measured against: named
//! FIFOs, eventfd, System V message queues and POSIX message queues.
//!
//! The library never uses them to move messages; they exist so that a
//! comparison (`ipcring bench`) can run every mechanism through the same
//! layer that owns all libc calls. Each wrapper does one syscall, retries
//! `EINTR` where the call can be retried, and reports errors as
//! [`io::Error`].

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::{cvt, retry_eintr};

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Creates a named FIFO at `path` with permission bits `mode` (narrowed by
/// the umask), as `mkfifo(3)` does.
pub fn create_fifo(path: &Path, mode: u32) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::mkfifo(path.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// Which end of a FIFO to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FifoEnd {
    /// `O_RDONLY`.
    Read,
    /// `O_WRONLY`.
    Write,
}

/// Opens one end of the FIFO at `path` without waiting for the other end
/// (a plain `open` blocks until a peer opens it). `Ok(None)` means the
/// write end was asked for and no process has the read end open yet
/// (`ENXIO`); try again later. The file returned is blocking.
///
/// A read end opened this way reads end-of-file until a writer comes, so
/// read from it only once the peer said it has opened its end.
pub fn open_fifo_nonblocking(path: &Path, end: FifoEnd) -> io::Result<Option<File>> {
    let mut options = std::fs::OpenOptions::new();
    match end {
        FifoEnd::Read => options.read(true),
        FifoEnd::Write => options.write(true),
    };
    let file = match options.custom_flags(libc::O_NONBLOCK).open(path) {
        Ok(file) => file,
        Err(e) if end == FifoEnd::Write && e.raw_os_error() == Some(libc::ENXIO) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL on a descriptor we own; no memory is passed.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    Ok(Some(file))
}

/// A new eventfd counter starting at 0 (close-on-exec, blocking, not in
/// semaphore mode): a `write` of 8 native-endian bytes adds to the counter,
/// a `read` of 8 bytes waits until it is non-zero, returns it and resets it.
///
/// ```
/// use std::io::{Read, Write};
///
/// let mut counter = ipcring::platform::eventfd().unwrap();
/// counter.write_all(&1u64.to_ne_bytes()).unwrap();
/// let mut value = [0; 8];
/// counter.read_exact(&mut value).unwrap();
/// assert_eq!(u64::from_ne_bytes(value), 1);
/// ```
pub fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reads a number from a `/proc/sys` file such as
/// `/proc/sys/kernel/msgmax`.
pub fn read_limit(path: &str) -> io::Result<u64> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// A System V message queue (`msgget`, `msgsnd`, `msgrcv`), named by its
/// id. Dropping it does not remove the queue: the process that created it
/// calls [`remove`](Self::remove), once, when everyone is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysvMessageQueue {
    id: i32,
}

/// One System V message: the type word `msgsnd` and `msgrcv` expect,
/// followed by up to `capacity` payload bytes, in one buffer so that a
/// send or receive copies the payload once, as a C program would.
pub struct SysvMessage {
    /// `words[0]` is the message type (a C `long`); the payload follows.
    words: Vec<libc::c_long>,
    capacity: usize,
    len: usize,
}

impl SysvMessage {
    /// A zeroed message of `capacity` bytes, all of them in use.
    pub fn new(capacity: usize) -> SysvMessage {
        let word = size_of::<libc::c_long>();
        SysvMessage {
            words: vec![0; 1 + capacity.div_ceil(word)],
            capacity,
            len: capacity,
        }
    }

    /// The payload bytes in use.
    pub fn payload(&self) -> &[u8] {
        // SAFETY: `words` holds 1 + ceil(capacity / word) longs, so the
        // `capacity` bytes after the first long are inside it, and `len` is
        // at most `capacity`; u8 has no alignment or validity constraints.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().add(1).cast::<u8>(), self.len) }
    }

    /// The payload bytes in use, for writing.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `payload`; `&mut self` makes the borrow unique.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr().add(1).cast::<u8>(), self.len)
        }
    }

    /// The message type (positive), as sent or received.
    // A no-op where `c_long` is 64 bits, a widening on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    pub fn kind(&self) -> i64 {
        i64::from(self.words[0])
    }
}

/// A message type as the kernel's C `long` (32 bits on 32-bit targets).
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn message_type(kind: i64) -> io::Result<libc::c_long> {
    libc::c_long::try_from(kind).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl SysvMessageQueue {
    /// Creates a new private queue (`IPC_PRIVATE`): no key, so no name to
    /// collide with; other processes use it by its id.
    pub fn create_private(mode: u32) -> io::Result<SysvMessageQueue> {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as libc::c_int;
        // SAFETY: msgget takes no pointers.
        let id = cvt(unsafe { libc::msgget(libc::IPC_PRIVATE, flags) })?;
        Ok(SysvMessageQueue { id })
    }

    /// The queue with this id (made by [`create_private`](Self::create_private)
    /// in another process).
    pub fn from_id(id: i32) -> SysvMessageQueue {
        SysvMessageQueue { id }
    }

    /// The id another process passes to [`from_id`](Self::from_id).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The largest message the kernel takes, in bytes (`msgmax`).
    pub fn max_message_size() -> io::Result<usize> {
        read_limit("/proc/sys/kernel/msgmax").map(|n| n as usize)
    }

    /// Sends `message` with type `kind` (positive), waiting while the
    /// queue is full. Fails with `EIDRM` if the queue is removed meanwhile.
    pub fn send(&self, kind: i64, message: &mut SysvMessage) -> io::Result<()> {
        let kind = message_type(kind)?;
        if kind <= 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        message.words[0] = kind;
        let len = message.len;
        retry_eintr(|| {
            // SAFETY: `words` starts with the type long and holds `len`
            // payload bytes after it, which is what msgsnd reads.
            cvt(unsafe { libc::msgsnd(self.id, message.words.as_ptr().cast(), len, 0) })
        })
        .map(drop)
    }

    /// Receives the first message of type `kind` into `message`, waiting
    /// while there is none; its payload length becomes what was received.
    /// A longer message fails with `E2BIG` (and stays queued).
    pub fn receive(&self, kind: i64, message: &mut SysvMessage) -> io::Result<()> {
        let capacity = message.capacity;
        let kind = message_type(kind)?;
        let received = retry_eintr(|| {
            // SAFETY: `words` has room for the type long and `capacity`
            // payload bytes, the most msgrcv writes.
            let n = unsafe {
                libc::msgrcv(
                    self.id,
                    message.words.as_mut_ptr().cast(),
                    capacity,
                    kind,
                    0,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })?;
        message.len = received.min(capacity);
        Ok(())
    }

    /// Removes the queue at once (`IPC_RMID`): waiting senders and
    /// receivers fail with `EIDRM`, and queued messages are lost.
    pub fn remove(&self) -> io::Result<()> {
        // SAFETY: IPC_RMID reads no buffer.
        cvt(unsafe { libc::msgctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
    }

    /// Whether a queue with this id exists (`IPC_STAT`).
    pub fn exists(&self) -> bool {
        // SAFETY: an all-zero msqid_ds is a valid value for this C struct.
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is writable and is the struct IPC_STAT fills.
        unsafe { libc::msgctl(self.id, libc::IPC_STAT, &mut ds) == 0 }
    }
}

/// A POSIX message queue descriptor (`mq_open`); closed on drop. The name
/// stays until [`PosixMessageQueue::unlink`].
#[derive(Debug)]
pub struct PosixMessageQueue {
    mqd: libc::mqd_t,
}

impl PosixMessageQueue {
    /// Creates the queue `name` (one leading `/`, no other), exclusively,
    /// for messages of up to `message_size` bytes, at most `max_messages`
    /// queued, opened for reading and writing. Fails with `EINVAL` or
    /// `EMSGSIZE` above the limits in `/proc/sys/fs/mqueue`, `ENOSYS`
    /// without kernel support.
    pub fn create(
        name: &CStr,
        max_messages: usize,
        message_size: usize,
        mode: u32,
    ) -> io::Result<PosixMessageQueue> {
        // SAFETY: an all-zero mq_attr is a valid value for this C struct.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = max_messages as _;
        attr.mq_msgsize = message_size as _;
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC;
        // SAFETY: `name` is NUL-terminated and `attr` initialised; both
        // outlive the call. With O_CREAT, mq_open reads the mode and the
        // attributes from its variadic arguments.
        let mqd = unsafe {
            libc::mq_open(
                name.as_ptr(),
                flags,
                mode as libc::mode_t,
                &attr as *const libc::mq_attr,
            )
        };
        cvt(mqd)?;
        Ok(PosixMessageQueue { mqd })
    }

    /// Opens the existing queue `name` for reading and writing.
    pub fn open(name: &CStr) -> io::Result<PosixMessageQueue> {
        // SAFETY: `name` is NUL-terminated and outlives the call.
        let mqd = unsafe { libc::mq_open(name.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        cvt(mqd)?;
        Ok(PosixMessageQueue { mqd })
    }

    /// Removes the name; open descriptors keep working.
    pub fn unlink(name: &CStr) -> io::Result<()> {
        // SAFETY: `name` is NUL-terminated and outlives the call.
        cvt(unsafe { libc::mq_unlink(name.as_ptr()) }).map(drop)
    }

    /// The largest message size an unprivileged process may ask for
    /// (`/proc/sys/fs/mqueue/msgsize_max`).
    pub fn max_message_size() -> io::Result<usize> {
        read_limit("/proc/sys/fs/mqueue/msgsize_max").map(|n| n as usize)
    }

    /// The most queued messages an unprivileged process may ask for
    /// (`/proc/sys/fs/mqueue/msg_max`).
    pub fn max_messages() -> io::Result<usize> {
        read_limit("/proc/sys/fs/mqueue/msg_max").map(|n| n as usize)
    }

    /// Sends `payload` (priority 0), waiting while the queue is full, but
    /// not past `deadline` (`ETIMEDOUT`): a peer that died would otherwise
    /// leave us waiting forever.
    pub fn send(&self, payload: &[u8], deadline: SystemDeadline) -> io::Result<()> {
        retry_eintr(|| {
            // SAFETY: `payload` is readable for its length; the timespec
            // outlives the call.
            cvt(unsafe {
                libc::mq_timedsend(
                    self.mqd,
                    payload.as_ptr().cast(),
                    payload.len(),
                    0,
                    &deadline.0,
                )
            })
        })
        .map(drop)
    }

    /// Receives the oldest message into `buffer`, which must hold the
    /// queue's message size (`EMSGSIZE` otherwise), waiting while the
    /// queue is empty but not past `deadline`; returns its length.
    pub fn receive(&self, buffer: &mut [u8], deadline: SystemDeadline) -> io::Result<usize> {
        retry_eintr(|| {
            // SAFETY: `buffer` is writable for its length, which is what we
            // pass; a null priority pointer is allowed.
            let n = unsafe {
                libc::mq_timedreceive(
                    self.mqd,
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    std::ptr::null_mut(),
                    &deadline.0,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    }
}

impl Drop for PosixMessageQueue {
    fn drop(&mut self) {
        // SAFETY: `mqd` is ours and closed only here.
        unsafe { libc::mq_close(self.mqd) };
    }
}

/// An absolute `CLOCK_REALTIME` deadline, as the POSIX message queue calls
/// take it. Computed once and reused, so a call costs no clock read.
#[derive(Clone, Copy, Debug)]
pub struct SystemDeadline(libc::timespec);

impl SystemDeadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> SystemDeadline {
        let at = super::time::realtime_ns()
            .saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64);
        SystemDeadline(libc::timespec {
            tv_sec: (at / 1_000_000_000) as libc::time_t,
            tv_nsec: (at % 1_000_000_000) as libc::c_long,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn unique(tag: &str) -> String {
        format!(
            "ipcring-test-{tag}-{}-{}",
            std::process::id(),
            super::super::time::realtime_ns()
        )
    }

    #[test]
    fn fifo_write_end_waits_for_a_reader() {
        let dir = std::env::temp_dir().join(unique("fifo"));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("f");
        create_fifo(&path, 0o600).unwrap();
        assert!(
            open_fifo_nonblocking(&path, FifoEnd::Write)
                .unwrap()
                .is_none()
        );
        let mut reader = open_fifo_nonblocking(&path, FifoEnd::Read)
            .unwrap()
            .unwrap();
        let mut writer = open_fifo_nonblocking(&path, FifoEnd::Write)
            .unwrap()
            .unwrap();
        writer.write_all(b"abc").unwrap();
        let mut got = [0; 3];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abc");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn eventfd_adds_and_resets() {
        let mut counter = eventfd().unwrap();
        counter.write_all(&2u64.to_ne_bytes()).unwrap();
        counter.write_all(&3u64.to_ne_bytes()).unwrap();
        let mut value = [0; 8];
        counter.read_exact(&mut value).unwrap();
        assert_eq!(u64::from_ne_bytes(value), 5);
    }

    #[test]
    fn sysv_queue_round_trip_and_removal() {
        let queue = match SysvMessageQueue::create_private(0o600) {
            Ok(queue) => queue,
            // Kernels built without SysV IPC, or a sandbox that forbids it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => return,
            Err(e) => panic!("msgget: {e}"),
        };
        let mut out = SysvMessage::new(16);
        out.payload_mut().copy_from_slice(&[7; 16]);
        queue.send(2, &mut out).unwrap();
        let mut back = SysvMessage::new(16);
        queue.receive(2, &mut back).unwrap();
        assert_eq!(back.payload(), &[7; 16]);
        assert_eq!(back.kind(), 2);
        assert!(queue.send(0, &mut out).is_err());
        assert!(queue.exists());
        queue.remove().unwrap();
        assert!(!queue.exists());
        assert!(queue.receive(2, &mut back).is_err());
    }

    #[test]
    fn posix_queue_round_trip_and_unlink() {
        let name = CString::new(format!("/{}", unique("mq"))).unwrap();
        let queue = match PosixMessageQueue::create(&name, 4, 64, 0o600) {
            Ok(queue) => queue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => return,
            Err(e) => panic!("mq_open: {e}"),
        };
        let other = PosixMessageQueue::open(&name).unwrap();
        PosixMessageQueue::unlink(&name).unwrap();
        assert!(PosixMessageQueue::open(&name).is_err());
        let deadline = SystemDeadline::after(Duration::from_secs(5));
        queue.send(b"hello", deadline).unwrap();
        let mut buffer = [0; 64];
        assert_eq!(other.receive(&mut buffer, deadline).unwrap(), 5);
        assert_eq!(&buffer[..5], b"hello");
        let soon = SystemDeadline::after(Duration::from_millis(1));
        let timed_out = other.receive(&mut buffer, soon).unwrap_err();
        assert_eq!(timed_out.raw_os_error(), Some(libc::ETIMEDOUT));
    }
}
