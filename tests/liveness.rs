//! Kernel-kept liveness: open-file-description locks on segments with a
//! file, checked across real processes (killed, forked, in another pid
//! namespace), and the pid check as the SysV fallback.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{
    ChildGuard, Cleanup, ROLE_VAR, child_role, eventually, spawn_child, unique_posix, unique_sysv,
};
use ipcring::segment::{
    Address, CreateOptions, LIVENESS_LOCK_BASE, MIN_LIVENESS_KEY, OpenOptions, Participant,
    ProcessIdentity, Segment, SegmentError,
};

const LIMIT: Duration = Duration::from_secs(20);
/// A key of the layer above, as a channel endpoint would take.
const KEY: u32 = MIN_LIVENESS_KEY + 5;
/// Where a child stores its own pid (as it sees it) once it holds its locks.
const READY_AT: usize = 0;
/// Offset of the participants table in the header, and a slot's size.
const TABLE_AT: u64 = 128;
const SLOT_SIZE: u64 = 16;

/// A holder child: opens the segment (by name, or by an inherited memfd
/// number), registers, takes `KEY`, says so, and sleeps until killed (or
/// for a bounded time, so an orphan never lingers).
fn hold_until_killed() {
    let options = OpenOptions::new();
    let segment = match std::env::var("MEMFD") {
        Ok(fd) => Segment::open_inherited(fd.parse().unwrap(), &options).unwrap(),
        Err(_) => {
            let address: Address = std::env::var("SEGMENT").unwrap().parse().unwrap();
            Segment::open(&address, &options).unwrap()
        }
    };
    let _lock = segment.lock_liveness(KEY).unwrap().unwrap();
    // Release: pairs with the parent's Acquire load in `wait_for_holder`.
    segment
        .view::<AtomicU32>(READY_AT)
        .unwrap()
        .store(std::process::id(), Ordering::Release);
    std::thread::sleep(Duration::from_secs(60));
}

/// Waits until the child has registered and taken its lock; returns the
/// pid it recorded.
fn wait_for_holder(segment: &Segment) -> u32 {
    let ready = segment.view::<AtomicU32>(READY_AT).unwrap();
    eventually(LIMIT, "the child to take its locks", || {
        ready.load(Ordering::Acquire) != 0
    });
    ready.load(Ordering::Acquire)
}

/// Waits until no description holds `key`. Not immediate in general: a
/// child that another test thread is forking (before its exec) briefly
/// holds every descriptor of this process.
fn eventually_released(segment: &Segment, key: u32) {
    eventually(LIMIT, "the liveness lock to be released", || {
        segment.liveness_held(key).unwrap() == Some(false)
    });
}

fn participant(segment: &Segment, pid: u32) -> Participant {
    segment
        .participants()
        .into_iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not in {:?}", segment.participants()))
}

fn shm_path(address: &Address) -> std::path::PathBuf {
    match address {
        Address::Posix(name) => std::path::Path::new("/dev/shm").join(name.file_name()),
        Address::SysV(_) => unreachable!("only POSIX segments have a path"),
    }
}

/// A file through which the test can write the header as any process with
/// write access could.
struct Backdoor(std::fs::File);

impl Backdoor {
    fn identity(&self, slot: usize) -> u64 {
        let mut word = [0u8; 8];
        self.0
            .read_exact_at(&mut word, TABLE_AT + SLOT_SIZE * slot as u64)
            .unwrap();
        u64::from_le_bytes(word)
    }

    fn set_identity(&self, slot: usize, word: u64) {
        self.0
            .write_all_at(&word.to_le_bytes(), TABLE_AT + SLOT_SIZE * slot as u64)
            .unwrap();
    }
}

/// A POSIX segment and a memfd segment, each with a holder child, handed
/// to `check`.
fn with_each_file_backing(test_name: &str, mut check: impl FnMut(&Segment, Backdoor, ChildGuard)) {
    let address = unique_posix("live");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(&address))
        .unwrap();
    let child = spawn_child(test_name, "hold", &[("SEGMENT", address.to_string())]);
    check(&segment, Backdoor(file), child);

    let segment = Segment::create_anonymous(&CreateOptions::new(4096)).unwrap();
    let inherited = segment.inheritable_fd().unwrap();
    let child = spawn_child(
        test_name,
        "hold",
        &[("MEMFD", inherited.as_raw_fd().to_string())],
    );
    drop(inherited);
    let file = std::fs::File::from(segment.inheritable_fd().unwrap());
    check(&segment, Backdoor(file), child);
}

#[test]
fn a_holder_is_alive_until_killed() {
    if child_role().is_some() {
        return hold_until_killed();
    }
    with_each_file_backing("a_holder_is_alive_until_killed", |segment, _, mut child| {
        assert_eq!(segment.liveness_held(KEY).unwrap(), Some(false));
        let pid = wait_for_holder(segment);
        assert_eq!(pid, child.pid());
        assert_eq!(segment.liveness_held(KEY).unwrap(), Some(true));
        let slot = participant(segment, pid).slot;
        assert!(participant(segment, pid).alive);
        assert_eq!(segment.liveness_held(slot as u32).unwrap(), Some(true));
        assert_eq!(segment.reap_dead_participants().unwrap(), 0);

        child.child().kill().unwrap();
        child.wait_code(LIMIT);
        assert_eq!(segment.liveness_held(KEY).unwrap(), Some(false));
        assert_eq!(segment.liveness_held(slot as u32).unwrap(), Some(false));
        assert!(!participant(segment, pid).alive);
        assert_eq!(segment.reap_dead_participants().unwrap(), 1);
        assert!(segment.participants().iter().all(|p| p.pid != pid));
    });
}

#[test]
fn the_lock_outweighs_an_identity_the_pid_check_calls_dead() {
    if child_role().is_some() {
        return hold_until_killed();
    }
    with_each_file_backing(
        "the_lock_outweighs_an_identity_the_pid_check_calls_dead",
        |segment, backdoor, mut child| {
            let pid = wait_for_holder(segment);
            let slot = participant(segment, pid).slot;
            // The same pid with another start time, as a process in another
            // pid namespace (or a pid the kernel reused) would read.
            let word = backdoor.identity(slot);
            assert_eq!(word >> 32, u64::from(pid));
            let misleading = word ^ 0xffff;
            backdoor.set_identity(slot, misleading);
            let identity = ProcessIdentity::from_word(misleading).unwrap();
            assert!(!identity.is_alive(), "the pid check must say dead here");

            assert!(participant(segment, pid).alive);
            assert_eq!(segment.reap_dead_participants().unwrap(), 0);
            assert_eq!(backdoor.identity(slot), misleading, "not reaped");

            child.child().kill().unwrap();
            child.wait_code(LIMIT);
            assert!(!participant(segment, pid).alive);
            assert_eq!(segment.reap_dead_participants().unwrap(), 1);
            assert_eq!(backdoor.identity(slot), 0);
        },
    );
}

#[test]
fn sysv_has_no_locks_and_falls_back_to_the_pid_check() {
    if child_role().is_some() {
        let address: Address = std::env::var("SEGMENT").unwrap().parse().unwrap();
        let segment = Segment::open(&address, &OpenOptions::new()).unwrap();
        assert!(segment.lock_liveness(KEY).unwrap().is_none());
        // Release: pairs with the parent's Acquire load in `wait_for_holder`.
        segment
            .view::<AtomicU32>(READY_AT)
            .unwrap()
            .store(std::process::id(), Ordering::Release);
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let address = unique_sysv();
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
    assert!(segment.lock_liveness(KEY).unwrap().is_none());
    assert_eq!(segment.liveness_held(KEY).unwrap(), None);
    assert_eq!(segment.liveness_held(0).unwrap(), None);

    let mut child = spawn_child(
        "sysv_has_no_locks_and_falls_back_to_the_pid_check",
        "hold",
        &[("SEGMENT", address.to_string())],
    );
    let pid = wait_for_holder(&segment);
    assert!(participant(&segment, pid).alive);
    child.child().kill().unwrap();
    child.wait_code(LIMIT);
    assert!(!participant(&segment, pid).alive);
    assert_eq!(segment.reap_dead_participants().unwrap(), 1);
}

#[test]
fn keys_below_1024_belong_to_the_segment() {
    let segment = Segment::create_anonymous(&CreateOptions::new(4096)).unwrap();
    for key in [0, 1, 127, 128, MIN_LIVENESS_KEY - 1] {
        assert!(matches!(
            segment.lock_liveness(key),
            Err(SegmentError::InvalidOptions { .. })
        ));
    }
    // The creator's own registration holds key 0.
    assert_eq!(segment.participants()[0].slot, 0);
    assert_eq!(segment.liveness_held(0).unwrap(), Some(true));
    assert_eq!(segment.liveness_held(1).unwrap(), Some(false));
    assert!(segment.lock_liveness(u32::MAX).unwrap().is_some());
}

#[test]
fn every_lock_in_one_process_is_seen_and_released_on_its_own() {
    let address = unique_posix("live-local");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
    let other = Segment::open(&address, &OpenOptions::new()).unwrap();
    let first = segment.lock_liveness(KEY).unwrap().unwrap();
    let second = other.lock_liveness(KEY).unwrap().unwrap();
    assert_eq!(first.key(), KEY);
    // Each handle sees the other's lock, and its own (locks live on
    // descriptions of their own, never on the main descriptor).
    assert_eq!(segment.liveness_held(KEY).unwrap(), Some(true));
    drop(first);
    assert_eq!(segment.liveness_held(KEY).unwrap(), Some(true));
    drop(second);
    eventually_released(&other, KEY);
    // Both handles registered, each under its own slot's lock.
    let slots: Vec<usize> = segment.participants().iter().map(|p| p.slot).collect();
    assert_eq!(slots, vec![0, 1]);
    assert_eq!(segment.liveness_held(1).unwrap(), Some(true));
    drop(other);
    eventually_released(&segment, 1);
    assert_eq!(segment.participants().len(), 1);
}

#[test]
fn locks_follow_the_file_not_its_name() {
    let address = unique_posix("live-name");
    let _cleanup = Cleanup(address.clone());
    let old = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
    Segment::remove(&address).unwrap();
    // The name is gone: the lock is still taken on the old file.
    let lock = old.lock_liveness(KEY).unwrap().unwrap();
    assert_eq!(old.liveness_held(KEY).unwrap(), Some(true));
    // A new segment under the same name shares none of it.
    let new = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
    assert_eq!(new.liveness_held(KEY).unwrap(), Some(false));
    let new_lock = new.lock_liveness(KEY).unwrap().unwrap();
    drop(lock);
    eventually_released(&old, KEY);
    assert_eq!(new.liveness_held(KEY).unwrap(), Some(true));
    drop(new_lock);
}

/// Takes an exclusive OFD lock on `key`'s byte through `file`, as a reaper
/// does while it frees a dead participant's slot.
fn lock_exclusively(file: &std::fs::File, key: u32) -> bool {
    // SAFETY: an all-zero flock is valid; l_pid must be 0 for OFD locks.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = (LIVENESS_LOCK_BASE + u64::from(key)) as libc::off_t;
    lock.l_len = 1;
    // SAFETY: `lock` is a valid flock for the call; the descriptor is open.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) == 0 }
}

#[test]
fn a_registrant_skips_a_slot_being_reaped() {
    let address = unique_posix("live-reap");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
    let reaper = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(&address))
        .unwrap();
    // The creator holds slot 0: its key cannot be taken exclusively.
    assert!(!lock_exclusively(&reaper, 0));
    assert!(lock_exclusively(&reaper, 1));
    let opened = Segment::open(&address, &OpenOptions::new()).unwrap();
    let slots: Vec<usize> = opened.participants().iter().map(|p| p.slot).collect();
    assert_eq!(slots, vec![0, 2], "slot 1 is skipped while held");
    // A key held exclusively reads as held, and cannot be locked shared.
    assert_eq!(segment.liveness_held(1).unwrap(), Some(true));
    assert!(lock_exclusively(&reaper, KEY));
    assert!(matches!(
        segment.lock_liveness(KEY),
        Err(SegmentError::LivenessKeyBusy { key: KEY })
    ));
}

#[test]
fn a_forked_child_keeps_the_lock_and_an_exec_does_not() {
    const NAME: &str = "a_forked_child_keeps_the_lock_and_an_exec_does_not";
    match child_role().as_deref() {
        Some("sleep") => std::thread::sleep(Duration::from_secs(60)),
        // Forking in a process that runs this test alone: a fork in the
        // main test process would copy other tests' locks too.
        Some(_) => fork_and_check(NAME),
        None => spawn_child(NAME, "forker", &[]).wait_success(LIMIT),
    }
}

fn fork_and_check(test_name: &str) {
    let segment = Segment::create_anonymous(&CreateOptions::new(4096)).unwrap();
    let lock = segment.lock_liveness(KEY).unwrap().unwrap();

    // A child started with exec does not inherit the lock's descriptor.
    let execed = spawn_child(test_name, "sleep", &[]);

    // SAFETY: the child calls only async-signal-safe functions (pause)
    // until it is killed.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        loop {
            // SAFETY: pause is async-signal-safe; the parent kills us.
            unsafe { libc::pause() };
        }
    }
    struct Reap(libc::pid_t);
    impl Drop for Reap {
        fn drop(&mut self) {
            // SAFETY: plain syscalls on our own child.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
    let forked = Reap(pid);

    drop(lock);
    // The forked child shares the description: still held.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(segment.liveness_held(KEY).unwrap(), Some(true));
    drop(forked);
    // Both are gone; the exec'd child still runs, without it.
    assert_eq!(segment.liveness_held(KEY).unwrap(), Some(false));
    drop(execed);
}

/// Whether this machine lets us start a process in new pid and mount
/// namespaces with `unshare(1)`.
fn namespaces_available() -> Result<(), String> {
    let status = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("unshare --pid --mount-proc failed ({status})")),
        Err(e) => Err(format!("unshare(1) cannot run: {e}")),
    }
}

#[test]
fn a_holder_in_another_pid_namespace_is_alive() {
    if child_role().is_some() {
        return hold_until_killed();
    }
    if let Err(reason) = namespaces_available() {
        eprintln!("skipped: {reason}");
        return;
    }
    let address = unique_posix("live-ns");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
    // The child is pid 1 of a new pid namespace, with its own /proc: the
    // identity it records names a pid that, here, is another process.
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(exe)
        .args([
            "a_holder_in_another_pid_namespace_is_alive",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_VAR, "hold")
        .env("SEGMENT", address.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(Some(child));
    let pid = wait_for_holder(&segment);
    assert_eq!(pid, 1, "pid 1 of its namespace");
    let holder = segment
        .participants()
        .into_iter()
        .find(|p| p.slot != 0)
        .unwrap();
    assert_eq!(holder.pid, 1);
    assert!(holder.alive, "alive by its lock");
    let backdoor = Backdoor(std::fs::File::open(shm_path(&address)).unwrap());
    let identity = ProcessIdentity::from_word(backdoor.identity(holder.slot)).unwrap();
    assert!(
        !identity.is_alive(),
        "from here, the pid check calls the holder dead"
    );
    assert_eq!(segment.liveness_held(KEY).unwrap(), Some(true));
    assert_eq!(segment.reap_dead_participants().unwrap(), 0);

    // Killing unshare(1) kills its child (--kill-child), and with it the
    // namespace.
    child.child().kill().unwrap();
    child.wait_code(LIMIT);
    eventually(LIMIT, "the namespace to die", || {
        segment.liveness_held(KEY).unwrap() == Some(false)
    });
    assert!(!participant(&segment, 1).alive);
    assert_eq!(segment.reap_dead_participants().unwrap(), 1);
}
