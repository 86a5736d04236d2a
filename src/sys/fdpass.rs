//! Passing a file descriptor over a Unix socket (`SCM_RIGHTS`).

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::retry_eintr;

/// The one data byte that carries the descriptor: stream sockets need at
/// least one byte of payload for the control message to travel.
const TAG: u8 = b'S';

/// Room for up to four descriptors; we send one, and close any extra a
/// misbehaving peer attaches.
const MAX_FDS: usize = 4;

#[repr(C)]
union ControlBuffer {
    buf: [u8; cmsg_space(MAX_FDS)],
    _align: libc::cmsghdr,
}

const fn cmsg_space(fds: usize) -> usize {
    // CMSG_SPACE is not const in libc; this is its definition for Linux.
    let align = size_of::<usize>();
    let header = (size_of::<libc::cmsghdr>() + align - 1) & !(align - 1);
    let data = (fds * size_of::<RawFd>() + align - 1) & !(align - 1);
    header + data
}

/// Sends `fd` over `socket`.
pub fn send_fd(socket: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut tag = TAG;
    let mut iov = libc::iovec {
        iov_base: (&mut tag as *mut u8).cast(),
        iov_len: 1,
    };
    let mut control = ControlBuffer {
        buf: [0; cmsg_space(MAX_FDS)],
    };
    let space = cmsg_space(1);
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive
    // every use of `msg`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `buf` is the active field of the union (it was initialised).
    msg.msg_control = unsafe { control.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` writable bytes aligned for
    // cmsghdr, so CMSG_FIRSTHDR is non-null and the header and one fd fit.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
    }
    let sent = retry_eintr(|| {
        // SAFETY: `msg` and everything it points to are valid for the call.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n)
        }
    })?;
    if sent != 1 {
        return Err(io::Error::from(io::ErrorKind::WriteZero));
    }
    Ok(())
}

/// Receives one descriptor sent with [`send_fd`]; it arrives close-on-exec.
pub fn recv_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    let mut tag = MaybeUninit::<u8>::uninit();
    let mut iov = libc::iovec {
        iov_base: tag.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = ControlBuffer {
        buf: [0; cmsg_space(MAX_FDS)],
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive
    // every use of `msg`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `buf` is the active field of the union (it was initialised).
    msg.msg_control = unsafe { control.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = cmsg_space(MAX_FDS) as _;
    let received = retry_eintr(|| {
        // SAFETY: `msg` describes writable buffers that outlive the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n)
        }
    })?;
    // Take ownership of every descriptor first, so that none leaks on the
    // error paths below.
    let mut fds = Vec::new();
    // SAFETY: recvmsg filled `msg_controllen` bytes of the control buffer
    // with well-formed cmsg headers; the CMSG_* walk stays inside them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let header = data.offset_from(cmsg.cast::<u8>()) as usize;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(header) / size_of::<RawFd>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // Each descriptor was just installed in our table for us.
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if received == 0 {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    let fd = fds.pop();
    match fd {
        Some(fd) if fds.is_empty() && msg.msg_flags & libc::MSG_CTRUNC == 0 => Ok(fd),
        // None, several, or truncated: not a message from `send_fd`.
        _ => Err(io::Error::from(io::ErrorKind::InvalidData)),
    }
}
