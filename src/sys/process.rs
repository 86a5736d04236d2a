//! Process identity and liveness.

use std::io;

/// This process's id.
pub fn pid() -> u32 {
    std::process::id()
}

/// This process's real user id.
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// This process's effective user id: whose rights the kernel checks, and
/// whom the objects it creates belong to.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// What `/proc/PID/stat` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// The one-letter state (`R`, `S`, `Z`, ...).
    pub state: u8,
    /// Start time in clock ticks after boot; with the pid it names one
    /// process for the life of the machine.
    pub start_ticks: u64,
}

/// Reads `/proc/PID/stat`. `Ok(None)` means no such process. It allocates
/// nothing (stack buffers only), so liveness checks on a channel's slow
/// path keep the no-allocation promise.
pub fn proc_stat(pid: u32) -> io::Result<Option<ProcStat>> {
    use std::io::{Read, Write};
    let mut path = [0u8; 32];
    let path_len = {
        let mut cursor = &mut path[..];
        write!(cursor, "/proc/{pid}/stat")?;
        32 - cursor.len()
    };
    let path = std::str::from_utf8(&path[..path_len])
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The fields we need (up to the 22nd) come within the first few hundred
    // bytes; a longer line is cut, which the parser tolerates.
    let mut text = [0u8; 1024];
    let mut len = 0;
    while len < text.len() {
        match file.read(&mut text[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The process exited between the open and the read.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(parse_stat(&text[..len]))
}

/// Parses the fields after the command name, which may itself hold spaces
/// and parentheses, so we split after the *last* `)`.
fn parse_stat(text: &[u8]) -> Option<ProcStat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the state; field 22 is starttime: 19 fields after state.
    let state = *fields.next()?.as_bytes().first()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// Whether the process `pid` that started at `start_ticks` (low 32 bits
/// compared) is still running. A zombie counts as dead: it runs no code and
/// will never touch the segment again.
pub fn is_alive(pid: u32, start_ticks_low: u32) -> bool {
    match proc_stat(pid) {
        Ok(Some(stat)) => {
            stat.start_ticks as u32 == start_ticks_low && !matches!(stat.state, b'Z' | b'X' | b'x')
        }
        // No /proc entry: gone, unless /proc hides other users' processes
        // (hidepid), which kill(pid, 0) sees through. That fallback cannot
        // tell a reused pid, but it never calls a live process dead.
        Ok(None) | Err(_) => signal_probe(pid),
    }
}

/// Whether some process with this pid runs (not a zombie). It cannot tell
/// a reused pid from the original: use it only where calling a dead
/// process alive is the safe mistake.
pub fn pid_exists(pid: u32) -> bool {
    match proc_stat(pid) {
        Ok(Some(stat)) => !matches!(stat.state, b'Z' | b'X' | b'x'),
        Ok(None) | Err(_) => signal_probe(pid),
    }
}

/// Restores the default action for SIGPIPE (the Rust runtime ignores it),
/// so that a command-line tool writing into a closed pipe ends quietly, as
/// `ls | head` expects, instead of failing on EPIPE.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler
    // and has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn signal_probe(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 performs only the permission and existence check.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The value of environment variable `name`, without allocating. Read it
/// before other threads may change the environment (we read it once).
#[cfg(feature = "failpoints")]
pub fn env_bytes(name: &std::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv returns null or a NUL-terminated string that stays
    // valid until the environment is changed; we read it once, at the first
    // failpoint, and the tests that arm failpoints never change it.
    unsafe {
        let value = libc::getenv(name.as_ptr());
        (!value.is_null()).then(|| std::ffi::CStr::from_ptr(value).to_bytes())
    }
}

/// Stops this process with SIGSTOP (a failpoint hit in a test child), so
/// that the parent can SIGKILL it at exactly this step or SIGCONT it.
#[cfg(feature = "failpoints")]
pub fn stop_self() {
    // SAFETY: raise with a valid signal number has no memory effects; the
    // call returns once the process is continued. raise directs the signal
    // at this thread (unlike kill on our pid, which may pick another thread
    // and let this one run on for a moment), so we stop right here.
    unsafe { libc::raise(libc::SIGSTOP) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = b"1234 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, b'S');
        assert_eq!(stat.start_ticks, 987654);
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(parse_stat(b"1234 (x) S 1 2"), None);
        assert_eq!(parse_stat(b"no paren"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn self_is_alive_and_reused_start_is_not() {
        let start = proc_stat(pid()).unwrap().unwrap().start_ticks;
        assert!(start > 0);
        assert!(is_alive(pid(), start as u32));
        assert!(!is_alive(pid(), (start as u32).wrapping_add(1)));
    }

    #[test]
    fn missing_pid_is_dead() {
        // Above the kernel's pid_max (at most 2^22).
        assert!(!is_alive(1 << 30, 0));
    }
}
