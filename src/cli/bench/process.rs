//! Running a row across two processes: the parent re-executes this binary
//! as `ipcring bench-child <row> ...`, hands it what it must inherit (memfd
//! segments by descriptor number; pipes, sockets or eventfds as its stdin
//! and stdout; a name for objects it opens by name), and watches it, so
//! that a child that dies or hangs fails the row instead of hanging the
//! bench. A transport whose blocked calls a dead peer cannot end registers
//! an abort hook that the watchdog runs.
//!
//! Every segment the bench shares is an anonymous memfd: it has no name to
//! leave behind, and the kernel frees it when the last process holding it
//! exits, however the bench ends. Named objects (FIFOs, message queues)
//! belong to guards in the parent's end that remove them when the row
//! ends, on any path, including Ctrl-C.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use ipcring::segment::{CreateOptions, OpenOptions, Segment};

use super::link::{CONTROL_SIZE, Control, Stop};

/// How often the watchdog looks at the child. It shares the parent's CPU,
/// so each look briefly preempts the measuring thread: rarely enough to
/// stay below p99.9, often enough that a dead child fails the row at once.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
/// How long a child that served its row may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Starts a row's child. A transport adds what the child must inherit,
/// then calls [`Spawner::spawn`] once.
pub struct Spawner<'a> {
    command: Command,
    /// Held open until the child has its copies.
    inheritable: Vec<OwnedFd>,
    slot: &'a mut ChildSlot,
    stop: &'a Stop,
}

impl<'a> Spawner<'a> {
    fn new(
        mut command: Command,
        control: &Segment,
        slot: &'a mut ChildSlot,
        stop: &'a Stop,
    ) -> Result<Self, String> {
        // The child's stdout is never a terminal or the bench's output: a
        // stray print must not corrupt `--json`. Transports may replace it.
        command.stdin(Stdio::null()).stdout(Stdio::null());
        let mut spawner = Spawner {
            command,
            inheritable: Vec::new(),
            slot,
            stop,
        };
        let fd = spawner.inheritable_fd(control)?;
        spawner.command.arg("--control-fd").arg(fd.to_string());
        Ok(spawner)
    }

    /// Lets the child open `segment`, which must be anonymous (memfd), as
    /// `Inherited::segment(n)`, where n counts these calls from 0.
    pub fn share_segment(&mut self, segment: &Segment) -> Result<(), String> {
        let fd = self.inheritable_fd(segment)?;
        self.command.arg("--segment-fd").arg(fd.to_string());
        Ok(())
    }

    /// Connects the child's stdin and stdout to two fresh pipes; the
    /// parent's ends are the spawned child's `stdin` and `stdout`.
    pub fn pipe_stdio(&mut self) {
        self.command.stdin(Stdio::piped()).stdout(Stdio::piped());
    }

    /// Makes `stdin` and `stdout` the child's standard input and output
    /// (sockets, eventfds: anything the child reads and writes as files).
    pub fn stdio(&mut self, stdin: OwnedFd, stdout: OwnedFd) {
        self.command.stdin(stdin).stdout(stdout);
    }

    /// Hands the child a name (a path, a queue name or id), which it reads
    /// back with `Inherited::name`.
    pub fn share_name(&mut self, name: &str) {
        self.command.arg("--name").arg(name);
    }

    /// What to run if the row is aborted (the child died, the deadline
    /// passed), to free the parent from a call that would block forever.
    pub fn on_abort(&self, release: impl FnOnce() + Send + 'static) {
        self.stop.on_abort(release);
    }

    /// The row's stop, for a transport that waits for its child while it
    /// connects.
    pub fn stop(&self) -> &Stop {
        self.stop
    }

    pub fn spawn(mut self) -> Result<&'a mut Child, String> {
        let child = self
            .command
            .spawn()
            .map_err(|e| format!("starting the child: {e}"))?;
        self.inheritable.clear();
        Ok(self.slot.0.insert(child))
    }

    fn inheritable_fd(&mut self, segment: &Segment) -> Result<RawFd, String> {
        let fd = segment
            .inheritable_fd()
            .map_err(|e| format!("sharing a segment with the child: {e}"))?;
        let raw = fd.as_raw_fd();
        self.inheritable.push(fd);
        Ok(raw)
    }
}

/// What a child inherited from its parent, as its transport asks for it.
pub struct Inherited {
    segment_fds: Vec<RawFd>,
    name: Option<String>,
    timeout: Duration,
}

impl Inherited {
    pub fn new(segment_fds: Vec<RawFd>, name: Option<String>, timeout: Duration) -> Inherited {
        Inherited {
            segment_fds,
            name,
            timeout,
        }
    }

    /// How long the child's row may take in all.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The name the parent shared (`Spawner::share_name`).
    pub fn name(&self) -> Result<&str, String> {
        self.name
            .as_deref()
            .ok_or_else(|| "the parent shared no name".to_owned())
    }

    /// The `index`th segment the parent shared (`Spawner::share_segment`).
    pub fn segment(&self, index: usize) -> Result<Segment, String> {
        self.segment_with(index, &OpenOptions::new())
    }

    /// [`Inherited::segment`], opened with `options` (prefault, lock).
    pub fn segment_with(&self, index: usize, options: &OpenOptions) -> Result<Segment, String> {
        let fd = *self
            .segment_fds
            .get(index)
            .ok_or_else(|| format!("the parent shared no segment number {index}"))?;
        Segment::open_inherited(fd, options)
            .map_err(|e| format!("opening the inherited segment: {e}"))
    }

    /// The pipes set up by `Spawner::pipe_stdio`: (from the parent, to the
    /// parent). They bypass std's buffered stdout, so every write reaches
    /// the pipe at once.
    pub fn stdio_pipes(&self) -> Result<(File, File), String> {
        let duplicate = |fd: std::os::fd::BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map(File::from)
                .map_err(|e| format!("duplicating stdio: {e}"))
        };
        Ok((
            duplicate(io::stdin().as_fd())?,
            duplicate(io::stdout().as_fd())?,
        ))
    }
}

/// Holds a row's child, and kills it if the row ends early, on any path.
#[derive(Default)]
struct ChildSlot(Option<Child>);

impl Drop for ChildSlot {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && !matches!(child.try_wait(), Ok(Some(_)))
        {
            kill(child);
        }
    }
}

/// The parent's side of a two-process row: creates the control block,
/// lets `connect` start the child and return the parent's end, then runs
/// `drive` on it under the watchdog.
pub fn run_parent<End, T>(
    command: Command,
    stop: Stop,
    connect: impl FnOnce(Spawner<'_>) -> Result<End, String>,
    drive: impl FnOnce(&mut End, Control<'_>, &Stop) -> Result<T, String>,
) -> Result<T, String> {
    let control_segment = Segment::create_anonymous(&CreateOptions::new(CONTROL_SIZE))
        .map_err(|e| format!("control block: {e}"))?;
    let control = Control::in_segment(&control_segment)?;
    let mut slot = ChildSlot::default();
    let mut end = connect(Spawner::new(command, &control_segment, &mut slot, &stop)?)?;
    let child = slot
        .0
        .as_mut()
        .ok_or("the transport did not start its child")?;
    supervise(child, &stop, || drive(&mut end, control, &stop))
}

/// The child's side of a two-process row.
pub fn run_child<End>(
    control_fd: RawFd,
    inherited: &Inherited,
    stop: Stop,
    open: impl FnOnce(&Inherited) -> Result<End, String>,
    serve: impl FnOnce(&mut End, Control<'_>, &Stop) -> Result<(), String>,
) -> Result<(), String> {
    let control_segment = Segment::open_inherited(control_fd, &OpenOptions::new())
        .map_err(|e| format!("control block: {e}"))?;
    let control = Control::in_segment(&control_segment)?;
    let mut end = open(inherited)?;
    serve(&mut end, control, &stop)
}

/// How the child's life ended, as the watchdog saw it.
enum ChildEnd {
    Exited(ExitStatus),
    KilledAtDeadline,
    KilledAfterParentFailed,
    KilledAfterGrace,
    Interrupted,
}

/// Runs `parent_side` while a watchdog thread watches `child`. A child
/// that exits raises `stop`'s abort flag, so the parent stops waiting for
/// it; a child still running at the deadline is killed.
fn supervise<T>(
    child: &mut Child,
    stop: &Stop,
    parent_side: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let (finished, finished_rx) = mpsc::channel();
    let (result, child_end) = thread::scope(|scope| {
        let watchdog = scope.spawn(move || watch(child, stop, finished_rx));
        let result = parent_side();
        // The watchdog may have returned already (the child exited).
        let _ = finished.send(result.is_ok());
        let child_end = watchdog
            .join()
            .unwrap_or_else(|_| Err("the watchdog panicked".to_owned()));
        (result, child_end)
    });
    match (result, child_end?) {
        (_, ChildEnd::KilledAtDeadline) => Err(format!(
            "the row did not finish within {:?}; killed the child",
            stop.timeout()
        )),
        (_, ChildEnd::KilledAfterGrace) => Err(format!(
            "the child served its row but did not exit within {EXIT_GRACE:?}; killed it"
        )),
        (result, ChildEnd::KilledAfterParentFailed) => result,
        (_, ChildEnd::Interrupted) => Err("interrupted".to_owned()),
        (Ok(measured), ChildEnd::Exited(status)) if status.success() => Ok(measured),
        (Ok(_), ChildEnd::Exited(status)) => Err(format!("the child failed ({status})")),
        (Err(e), ChildEnd::Exited(status)) if !status.success() => {
            Err(format!("{e}; the child failed ({status})"))
        }
        (Err(e), ChildEnd::Exited(_)) => Err(e),
    }
}

fn watch(child: &mut Child, stop: &Stop, finished: Receiver<bool>) -> Result<ChildEnd, String> {
    let status_error = |e| format!("waiting for the child: {e}");
    let parent_succeeded = loop {
        match finished.recv_timeout(WATCH_INTERVAL) {
            Ok(succeeded) => break succeeded,
            Err(RecvTimeoutError::Disconnected) => break false,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = child.try_wait().map_err(status_error)? {
            stop.abort();
            return Ok(ChildEnd::Exited(status));
        }
        if crate::interrupt::received().is_some() {
            // Ctrl-C: end the row so the guards of what it created run.
            stop.abort();
            kill(child);
            return Ok(ChildEnd::Interrupted);
        }
        if stop.deadline_passed() {
            stop.abort();
            kill(child);
            return Ok(ChildEnd::KilledAtDeadline);
        }
    };
    if !parent_succeeded {
        stop.abort();
        if let Some(status) = child.try_wait().map_err(status_error)? {
            return Ok(ChildEnd::Exited(status));
        }
        // The child may be waiting for messages that will never come.
        kill(child);
        return Ok(ChildEnd::KilledAfterParentFailed);
    }
    let grace = Stop::after(EXIT_GRACE);
    loop {
        if let Some(status) = child.try_wait().map_err(status_error)? {
            return Ok(ChildEnd::Exited(status));
        }
        if grace.deadline_passed() {
            kill(child);
            return Ok(ChildEnd::KilledAfterGrace);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
