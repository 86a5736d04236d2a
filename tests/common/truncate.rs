//! Truncating a named segment's file from another process, as any process
//! with write access to /dev/shm can, for tests of what the mapping
//! processes see afterwards.

use std::ffi::CString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use ipcring::segment::Address;

/// The file behind a POSIX segment.
pub fn segment_file(address: &Address) -> PathBuf {
    match address {
        Address::Posix(name) => PathBuf::from("/dev/shm").join(name.file_name()),
        Address::SysV(_) => panic!("a SysV segment has no file to truncate"),
    }
}

/// Sets the size of the file behind the POSIX segment at `address` to `len`
/// bytes from a forked child process, and waits for the child. Pass 0 to
/// truncate; pass the original size afterwards to regrow it (with zeros).
///
/// It works from any test binary and while other threads (and blocked
/// endpoints) run: the child calls only async-signal-safe functions.
pub fn truncate_segment_file_from_child(address: &Address, len: u64) {
    let path = CString::new(segment_file(address).into_os_string().into_vec()).unwrap();
    let len = libc::off_t::try_from(len).unwrap();
    // SAFETY: the child runs only open, ftruncate and _exit, which are
    // async-signal-safe, so forking a multi-threaded process is sound.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: `path` is a NUL-terminated string the child inherited.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        // SAFETY: plain syscall; a bad descriptor only fails.
        let status = if fd < 0 || unsafe { libc::ftruncate(fd, len) } != 0 {
            1
        } else {
            0
        };
        // SAFETY: _exit ends the child without running the parent's
        // destructors or atexit handlers.
        unsafe { libc::_exit(status) };
    }
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our child and `status` is writable.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::Interrupted,
            "waitpid: {error}"
        );
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child could not truncate {path:?} to {len} bytes (status {status:#x})"
    );
}
