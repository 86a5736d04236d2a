//! Segments and the futex handshake across real processes: each test
//! re-runs this binary as a child in a role (see `common::spawn_child`), or
//! forks.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use common::{Cleanup, child_role, eventually, spawn_child, unique_posix, unique_sysv};
use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment, SegmentError};
use ipcring::sync::{Deadline, WaitStrategy, WaitWord};

const LIMIT: Duration = Duration::from_secs(20);

fn address_from_env() -> Address {
    std::env::var("SEGMENT").unwrap().parse().unwrap()
}

#[test]
fn child_opens_what_parent_created() {
    if let Some(role) = child_role() {
        assert_eq!(role, "reader");
        let segment = Segment::open(&address_from_env(), &OpenOptions::new()).unwrap();
        let info = segment.info();
        let parent: u32 = std::env::var("PARENT").unwrap().parse().unwrap();
        assert_eq!(info.creator_pid, parent);
        assert_eq!(
            segment
                .view::<AtomicU64>(0)
                .unwrap()
                .load(Ordering::Acquire),
            0xfeed
        );
        segment
            .view::<AtomicU64>(8)
            .unwrap()
            .store(0xbeef, Ordering::Release);
        return;
    }
    for address in [unique_posix("xopen"), unique_sysv()] {
        let _cleanup = Cleanup(address.clone());
        let segment = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
        segment
            .view::<AtomicU64>(0)
            .unwrap()
            .store(0xfeed, Ordering::Release);
        let child = spawn_child(
            "child_opens_what_parent_created",
            "reader",
            &[
                ("SEGMENT", address.to_string()),
                ("PARENT", std::process::id().to_string()),
            ],
        );
        child.wait_success(LIMIT);
        assert_eq!(
            segment
                .view::<AtomicU64>(8)
                .unwrap()
                .load(Ordering::Acquire),
            0xbeef
        );
        // The child deregistered when it dropped its handle.
        assert_eq!(segment.participants().len(), 1);
    }
}

#[test]
fn parent_wakes_a_child_sleeping_on_the_futex() {
    if child_role().is_some() {
        let segment = Segment::open(&address_from_env(), &OpenOptions::new()).unwrap();
        let word: &WaitWord = segment.view(0).unwrap();
        let flag: &AtomicU32 = segment.view(64).unwrap();
        // Park: straight to the futex, so the parent sees us asleep. Acquire
        // pairs with the parent's Release store of the flag.
        let deadline = Deadline::after(LIMIT);
        assert!(word.wait_until(WaitStrategy::Park, Some(deadline), || {
            flag.load(Ordering::Acquire) == 1
        }));
        return;
    }
    let address = unique_posix("futex");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
    let word: &WaitWord = segment.view(0).unwrap();
    let flag: &AtomicU32 = segment.view(64).unwrap();
    let child = spawn_child(
        "parent_wakes_a_child_sleeping_on_the_futex",
        "sleeper",
        &[("SEGMENT", address.to_string())],
    );
    eventually(LIMIT, "the child to announce it sleeps", || {
        word.sleepers() == 1
    });
    flag.store(1, Ordering::Release);
    assert!(
        word.notify_all(),
        "a sleeper was announced, so the notifier must call futex_wake"
    );
    child.wait_success(LIMIT);
    assert_eq!(word.sleepers(), 0);
}

#[test]
fn killed_child_is_reported_dead_and_reaped() {
    if child_role().is_some() {
        let segment = Segment::open(&address_from_env(), &OpenOptions::new()).unwrap();
        segment
            .view::<AtomicU32>(0)
            .unwrap()
            .store(1, Ordering::Release);
        // Stay attached until killed.
        std::thread::sleep(LIMIT * 2);
        return;
    }
    let address = unique_sysv();
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
    let mut child = spawn_child(
        "killed_child_is_reported_dead_and_reaped",
        "victim",
        &[("SEGMENT", address.to_string())],
    );
    let child_pid = child.pid();
    eventually(LIMIT, "the child to attach", || {
        segment
            .view::<AtomicU32>(0)
            .unwrap()
            .load(Ordering::Acquire)
            == 1
    });
    let find = |segment: &Segment| {
        segment
            .participants()
            .into_iter()
            .find(|p| p.pid == child_pid)
    };
    assert!(find(&segment).unwrap().alive);

    child.child().kill().unwrap();
    // Dead while still a zombie (not yet waited for) ...
    eventually(LIMIT, "the zombie to be reported dead", || {
        !find(&segment).unwrap().alive
    });
    child.wait_code(LIMIT);
    // ... and once reaped by the kernel too. It never deregistered.
    assert!(!find(&segment).unwrap().alive);
    assert!(
        Segment::inspect(&address)
            .unwrap()
            .participants
            .iter()
            .any(|p| !p.alive)
    );
    assert_eq!(segment.reap_dead_participants().unwrap(), 1);
    assert!(find(&segment).is_none());
    assert_eq!(segment.participants().len(), 1);
}

#[test]
fn exclusive_create_race_has_exactly_one_winner() {
    const CREATED: i32 = 0;
    const LOST: i32 = 3;
    if child_role().is_some() {
        let address = address_from_env();
        let start_at: u128 = std::env::var("START_AT_MS").unwrap().parse().unwrap();
        let now = || {
            std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .unwrap()
                .as_millis()
        };
        while now() < start_at {
            std::hint::spin_loop();
        }
        let options = CreateOptions::new(4096).register(false);
        match Segment::create(&address, &options) {
            Ok(_) => std::process::exit(CREATED),
            Err(SegmentError::AlreadyExists(_)) => std::process::exit(LOST),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    for address in [unique_posix("race"), unique_sysv()] {
        let _cleanup = Cleanup(address.clone());
        let start_at = std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .unwrap()
            .as_millis()
            + 300;
        let mut children: Vec<_> = (0..4)
            .map(|_| {
                spawn_child(
                    "exclusive_create_race_has_exactly_one_winner",
                    "racer",
                    &[
                        ("SEGMENT", address.to_string()),
                        ("START_AT_MS", start_at.to_string()),
                    ],
                )
            })
            .collect();
        let codes: Vec<_> = children.iter_mut().map(|c| c.wait_code(LIMIT)).collect();
        assert_eq!(
            codes.iter().filter(|&&c| c == Some(CREATED)).count(),
            1,
            "{codes:?}"
        );
        assert_eq!(
            codes.iter().filter(|&&c| c == Some(LOST)).count(),
            3,
            "{codes:?}"
        );
        // The winner's segment is complete.
        assert!(Segment::inspect(&address).is_ok());
    }
}

#[test]
fn memfd_is_inherited_by_a_spawned_child() {
    if child_role().is_some() {
        let fd: i32 = std::env::var("SEGMENT_FD").unwrap().parse().unwrap();
        let segment = Segment::open_inherited(fd, &OpenOptions::new()).unwrap();
        assert_eq!(
            segment
                .view::<AtomicU64>(0)
                .unwrap()
                .load(Ordering::Acquire),
            41
        );
        segment
            .view::<AtomicU64>(0)
            .unwrap()
            .store(42, Ordering::Release);
        return;
    }
    let segment = Segment::create_anonymous(&CreateOptions::new(4096)).unwrap();
    segment
        .view::<AtomicU64>(0)
        .unwrap()
        .store(41, Ordering::Release);
    let inheritable = segment.inheritable_fd().unwrap();
    let child = spawn_child(
        "memfd_is_inherited_by_a_spawned_child",
        "heir",
        &[("SEGMENT_FD", inheritable.as_raw_fd().to_string())],
    );
    drop(inheritable);
    child.wait_success(LIMIT);
    assert_eq!(
        segment
            .view::<AtomicU64>(0)
            .unwrap()
            .load(Ordering::Acquire),
        42
    );
}

#[test]
fn memfd_travels_over_a_unix_socket() {
    if child_role().is_some() {
        let stream = UnixStream::connect(std::env::var("SOCKET").unwrap()).unwrap();
        let segment = Segment::recv_fd(&stream, &OpenOptions::new()).unwrap();
        assert_eq!(
            segment
                .view::<AtomicU64>(0)
                .unwrap()
                .load(Ordering::Acquire),
            7
        );
        segment
            .view::<AtomicU64>(0)
            .unwrap()
            .store(8, Ordering::Release);
        return;
    }
    let dir = std::env::temp_dir().join(format!("ipcring-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = common::RemoveFile(dir.join("s"));
    let path = dir.join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let segment = Segment::create_anonymous(&CreateOptions::new(4096)).unwrap();
    segment
        .view::<AtomicU64>(0)
        .unwrap()
        .store(7, Ordering::Release);
    // The child does not inherit the memfd (it is close-on-exec): it gets it
    // only through the socket.
    let child = spawn_child(
        "memfd_travels_over_a_unix_socket",
        "receiver",
        &[("SOCKET", path.display().to_string())],
    );
    let (stream, _) = listener.accept().unwrap();
    segment.send_fd(&stream).unwrap();
    child.wait_success(LIMIT);
    assert_eq!(
        segment
            .view::<AtomicU64>(0)
            .unwrap()
            .load(Ordering::Acquire),
        8
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn forked_child_shares_the_mapping_and_wakes_the_parent() {
    let segment = Segment::create_anonymous(&CreateOptions::new(4096)).unwrap();
    let word: &WaitWord = segment.view(0).unwrap();
    let value: &AtomicU64 = segment.view(64).unwrap();
    // SAFETY: the child only does async-signal-safe work: atomic stores, a
    // futex syscall and _exit; it allocates nothing and takes no lock.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Give the parent time to park, then wake it.
        // SAFETY: usleep and _exit are async-signal-safe.
        unsafe { libc::usleep(50_000) };
        value.store(123, Ordering::Release);
        word.notify_all();
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    let deadline = Deadline::after(LIMIT);
    assert!(word.wait_until(WaitStrategy::Park, Some(deadline), || {
        value.load(Ordering::Acquire) == 123
    }));
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is writable.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    // The child's copy of the registration did not free the parent's slot.
    assert_eq!(segment.participants().len(), 1);
}
