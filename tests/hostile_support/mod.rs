//! Helpers for the hostile tests: bounded waits that turn a hang or a
//! panic into a report, child processes stopped at a failpoint and then
//! killed or continued, and scribbling over a segment with atomic stores.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipcring::segment::Segment;

/// What a bounded call did.
#[derive(Debug)]
pub enum Outcome<T> {
    /// It returned this.
    Returned(T),
    /// It panicked with this message (a debug-build overflow included).
    Panicked(String),
    /// It was still running when the limit passed. Its thread is left
    /// behind; the test fails anyway, and the process ends with it.
    Hung,
}

impl<T> Outcome<T> {
    /// The value, or a test failure naming `what`.
    pub fn expect_returned(self, what: &str) -> T {
        match self {
            Outcome::Returned(value) => value,
            Outcome::Panicked(message) => panic!("{what}: panicked: {message}"),
            Outcome::Hung => panic!("{what}: still blocked after the limit (hang)"),
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(non-string panic)".to_owned()
    }
}

/// A call running on a thread of its own, to be collected within a limit.
pub struct Pending<T> {
    receiver: mpsc::Receiver<Result<T, String>>,
    started: Instant,
    /// What it returned, once seen by `is_done`.
    done: Option<Result<T, String>>,
}

impl<T: Send + 'static> Pending<T> {
    /// Starts `call` on a new thread.
    pub fn start(name: &str, call: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
                    .map_err(panic_message);
                let _ = sender.send(result);
            })
            .unwrap();
        Pending {
            receiver,
            started: Instant::now(),
            done: None,
        }
    }

    /// Whether it has returned yet, without waiting.
    pub fn is_done(&mut self) -> bool {
        if self.done.is_none() {
            self.done = self.receiver.try_recv().ok();
        }
        self.done.is_some()
    }

    /// What it returned, if it has, without waiting.
    pub fn poll(&mut self) -> Option<Outcome<T>> {
        if !self.is_done() {
            return None;
        }
        match self.done.take() {
            Some(Ok(value)) => Some(Outcome::Returned(value)),
            Some(Err(message)) => Some(Outcome::Panicked(message)),
            None => None,
        }
    }

    /// Waits until `limit` after it started.
    pub fn finish(mut self, limit: Duration) -> Outcome<T> {
        let left = limit.saturating_sub(self.started.elapsed());
        let result = match self.done.take() {
            Some(done) => Ok(done),
            None => self.receiver.recv_timeout(left),
        };
        match result {
            Ok(Ok(value)) => Outcome::Returned(value),
            Ok(Err(message)) => Outcome::Panicked(message),
            Err(_) => Outcome::Hung,
        }
    }
}

/// Runs `call` on its own thread and waits for it at most `limit`.
pub fn bounded<T: Send + 'static>(
    limit: Duration,
    call: impl FnOnce() -> T + Send + 'static,
) -> Outcome<T> {
    Pending::start("bounded", call).finish(limit)
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    fn from_status(status: i32) -> Exit {
        if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else {
            Exit::Signal(libc::WTERMSIG(status))
        }
    }
}

/// A child process of this test binary, running one role, that the test
/// may find stopped at a failpoint, kill there or continue. Dropping it
/// kills and reaps it.
///
/// A failpoint stops its process with `kill(getpid(), SIGSTOP)`. In a
/// process with several threads that signal is taken by the main thread,
/// and the thread that hit the failpoint runs on for tens of microseconds
/// before the stop reaches it: far enough to finish the operation (see
/// `hostile_failpoint.rs`). A libtest child always has two threads. So by
/// default the role runs in a grandchild forked from the test thread, which
/// has one thread and stops exactly at the failpoint; the child in between
/// ([`run_role`]) waits for it, and stops itself when it stops.
pub struct Victim {
    /// The process the test spawned.
    pid: libc::pid_t,
    /// Kept only so the handle lives; waited for with `waitpid` directly,
    /// since `std` cannot see a stopped child.
    _child: Child,
    exited: Option<Exit>,
    /// The single-threaded grandchild that runs the role, if forked.
    pidfile: Option<std::path::PathBuf>,
    grandchild: Option<libc::pid_t>,
}

/// The environment variable that carries a child's role.
pub const ROLE_VAR: &str = "IPCRING_TEST_ROLE";
/// Where the child in between writes its grandchild's pid.
const PIDFILE_VAR: &str = "HOSTILE_PIDFILE";

/// This process's role, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// An environment variable of a child.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// Runs a child's role: directly, or, if the test asked for a forked
/// grandchild, there. Call it first thing in the child, before anything
/// reaches a failpoint (the failpoint setting is read once per process).
/// In the forked case it never returns: the process ends with the
/// grandchild's status.
pub fn run_role(role: impl FnOnce()) {
    let Ok(pidfile) = std::env::var(PIDFILE_VAR) else {
        return role();
    };
    // SAFETY: the grandchild runs only this test's role code and then
    // _exits; the other thread of this process (libtest's main thread)
    // only waits for this one, so it holds no lock the role needs.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(role));
        // SAFETY: ends the grandchild without running libtest's code.
        unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 101 }) };
    }
    std::fs::write(&pidfile, pid.to_string()).unwrap();
    loop {
        let mut status = 0;
        // SAFETY: our own child; `status` is writable.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
        if waited != pid {
            continue;
        }
        if libc::WIFSTOPPED(status) {
            // The grandchild is at its failpoint: tell the test by stopping
            // too. (Late by a few microseconds, which does not matter here.)
            // SAFETY: signals this process only.
            unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
            continue;
        }
        let code = match Exit::from_status(status) {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        };
        std::process::exit(code);
    }
}

static PIDFILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Victim {
    /// Re-runs this test binary, only `test_name`, as `role`, with
    /// `failpoint` armed (`NAME` or `NAME@N`) if given; the role runs in a
    /// single-threaded grandchild (see the type's documentation).
    pub fn spawn(
        test_name: &str,
        role: &str,
        failpoint: Option<&str>,
        envs: &[(&str, String)],
    ) -> Victim {
        Victim::spawn_with(test_name, role, failpoint, envs, true)
    }

    /// As [`spawn`](Self::spawn), choosing whether the role runs in a
    /// forked grandchild or in the libtest child itself.
    pub fn spawn_with(
        test_name: &str,
        role: &str,
        failpoint: Option<&str>,
        envs: &[(&str, String)],
        forked: bool,
    ) -> Victim {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                test_name,
                "--exact",
                "--nocapture",
                "--include-ignored",
                "--test-threads=1",
            ])
            .env(ROLE_VAR, role)
            .env_remove("IPCRING_FAILPOINT")
            .env_remove(PIDFILE_VAR)
            .stdout(Stdio::null());
        if let Some(point) = failpoint {
            command.env("IPCRING_FAILPOINT", point);
        }
        for (key, value) in envs {
            command.env(key, value);
        }
        let pidfile = forked.then(|| {
            let n = PIDFILES.fetch_add(1, Ordering::Relaxed);
            std::env::temp_dir().join(format!("hostile-{}-{n}.pid", std::process::id()))
        });
        if let Some(path) = &pidfile {
            let _ = std::fs::remove_file(path);
            command.env(PIDFILE_VAR, path);
        }
        let mut victim = Victim::from_command(command);
        victim.pidfile = pidfile;
        victim
    }

    /// Starts `command` as a victim.
    pub fn from_command(mut command: Command) -> Victim {
        // A victim killed on purpose writes no core file.
        // SAFETY: prctl only changes a flag of the child, and is
        // async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_DUMPABLE, 0);
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        Victim {
            pid: child.id() as libc::pid_t,
            _child: child,
            exited: None,
            pidfile: None,
            grandchild: None,
        }
    }

    /// The process that runs the role.
    pub fn pid(&mut self) -> u32 {
        self.role_pid(Duration::from_secs(20)).unwrap_or(self.pid) as u32
    }

    /// The grandchild's pid once the child has written it.
    fn role_pid(&mut self, limit: Duration) -> Option<libc::pid_t> {
        let path = self.pidfile.as_ref()?;
        if self.grandchild.is_none() {
            let started = Instant::now();
            while started.elapsed() < limit {
                if let Some(pid) = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                {
                    self.grandchild = Some(pid);
                    break;
                }
                if self.exited.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.grandchild
    }

    /// Waits until the role stops (it reached its failpoint); an error if
    /// it exits first or does neither within `limit`.
    pub fn wait_stopped(&mut self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(exit) = self.exited {
                return Err(format!("exited ({exit:?}) without stopping"));
            }
            let mut status = 0;
            // SAFETY: our own child; `status` is writable.
            let waited =
                unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG | libc::WUNTRACED) };
            if waited == self.pid {
                if libc::WIFSTOPPED(status) {
                    if self.pidfile.is_some() && self.role_pid(limit).is_none() {
                        return Err("stopped without naming its grandchild".to_owned());
                    }
                    return Ok(());
                }
                let exit = Exit::from_status(status);
                self.exited = Some(exit);
                return Err(format!("exited ({exit:?}) without stopping"));
            }
            if started.elapsed() > limit {
                return Err(format!("neither stopped nor exited within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILLs the role's process where it stands and reaps it (and the
    /// child in between).
    pub fn kill(&mut self) {
        if self.exited.is_some() {
            return;
        }
        match self.grandchild {
            Some(grandchild) => {
                // SAFETY: our grandchild, whose parent (our stopped child)
                // has not reaped it, so the pid is still its.
                unsafe { libc::kill(grandchild, libc::SIGKILL) };
                // The child in between reaps it and exits.
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(self.pid, libc::SIGCONT) };
                if self.wait_exit(Duration::from_secs(10)).is_none() {
                    // SAFETY: as above.
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    self.reap_blocking();
                }
            }
            None => {
                // SAFETY: our own child, not yet reaped, so the pid is ours.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                self.reap_blocking();
            }
        }
    }

    /// Continues a stopped role.
    pub fn cont(&mut self) {
        if let Some(grandchild) = self.grandchild {
            // SAFETY: our grandchild, not yet reaped (its parent waits).
            unsafe { libc::kill(grandchild, libc::SIGCONT) };
        }
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }

    fn reap_blocking(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: our own child; `status` is writable.
            let waited = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if waited == self.pid && !libc::WIFSTOPPED(status) && !libc::WIFCONTINUED(status) {
                self.exited = Some(Exit::from_status(status));
                return;
            }
            if waited < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                self.exited = Some(Exit::Signal(0));
                return;
            }
        }
    }

    /// Waits for the child to exit (stops are passed over); `None` if it
    /// still runs after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Exit> {
        let started = Instant::now();
        loop {
            if let Some(exit) = self.exited {
                return Some(exit);
            }
            let mut status = 0;
            // SAFETY: our own child; `status` is writable.
            let waited = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if waited == self.pid {
                self.exited = Some(Exit::from_status(status));
                continue;
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if self.exited.is_none() {
            if self.pidfile.is_some() {
                if let Some(grandchild) = self.role_pid(Duration::from_millis(100)) {
                    // SAFETY: our grandchild; its parent has not exited, so
                    // it has not been reaped.
                    unsafe { libc::kill(grandchild, libc::SIGKILL) };
                }
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(self.pid, libc::SIGCONT) };
                // It reaps the grandchild and exits.
                let _ = self.wait_exit(Duration::from_secs(5));
            }
            if self.exited.is_none() {
                // SAFETY: our own child, not yet reaped.
                unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                    libc::kill(self.pid, libc::SIGCONT);
                }
                self.reap_blocking();
            }
        }
        if let Some(path) = &self.pidfile {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A small seeded generator (SplitMix64): scribbles are replayable.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Stores `value` into the 8-byte word at `offset` of the user area, as a
/// peer could (an atomic store, so this test races no one unsoundly).
pub fn poke(segment: &Segment, offset: usize, value: u64) {
    segment
        .view::<AtomicU64>(offset)
        .unwrap()
        .store(value, Ordering::SeqCst);
}

/// Loads the word at `offset` of the user area.
pub fn peek(segment: &Segment, offset: usize) -> u64 {
    segment
        .view::<AtomicU64>(offset)
        .unwrap()
        .load(Ordering::SeqCst)
}

/// Fills `len` bytes from `offset` of the user area with `byte`.
pub fn fill(segment: &Segment, offset: usize, len: usize, byte: u8) {
    for at in offset..offset + len {
        segment
            .view::<AtomicU8>(at)
            .unwrap()
            .store(byte, Ordering::SeqCst);
    }
}

/// Overwrites `len` bytes from `offset` (both multiples of 8) with random
/// words.
pub fn scribble(segment: &Segment, offset: usize, len: usize, rng: &mut Rng) {
    for at in (offset..offset + len).step_by(8) {
        poke(segment, at, rng.next());
    }
}

/// Where the parts of a channel segment's user area start.
pub mod layout {
    /// The endpoint tables.
    pub const ENDPOINTS: usize = 0;
    /// `ready`, then the producers' presence word and 31 slots.
    pub const PRODUCER_PRESENCE: usize = 8;
    pub const PRODUCER_SLOTS: usize = 16;
    pub const CONSUMER_PRESENCE: usize = 264;
    pub const CONSUMER_SLOTS: usize = 272;
    /// The ring.
    pub const RING: usize = 4096;
    pub const RING_TAIL: usize = RING + 128;
    pub const RING_HEAD: usize = RING + 256;
    pub const RING_DATA_READY: usize = RING + 384;
    pub const RING_SPACE_READY: usize = RING + 512;
    /// Claim records of MPMC and record rings.
    pub const CLAIMS: usize = RING + 640;
    /// MPMC slots and the record buffer.
    pub const SLOTS: usize = RING + 8960;
    /// SPSC slots.
    pub const SPSC_SLOTS: usize = RING + 640;
}
