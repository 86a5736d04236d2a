//! Stale segments: owned segments whose creator is gone and segments
//! abandoned before initialisation are removed; persistent ones never are.
//! Creators die for real (SIGKILL), in child processes.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{ChildGuard, Cleanup, ROLE_VAR, child_role, eventually, spawn_child};
use common::{unique_posix, unique_sysv};
use ipcring::segment::{
    Address, CreateOptions, HEADER_SIZE, OpenOptions, Removed, Segment, StaleReason,
    remove_stale_where,
};

const LIMIT: Duration = Duration::from_secs(20);

fn shm_path(address: &Address) -> std::path::PathBuf {
    match address {
        Address::Posix(name) => std::path::Path::new("/dev/shm").join(name.file_name()),
        Address::SysV(_) => unreachable!("only POSIX segments have a path"),
    }
}

/// Writes a POSIX object by hand: what a creator that died half-way (in
/// an older layout, or a foreign writer) leaves.
fn hand_made(address: &Address, bytes: &[u8]) {
    let path = shm_path(address);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Child: creates each segment named in `SEGMENTS` (`owned:ADDRESS` or
/// `persistent:ADDRESS`, comma-separated), says so, and waits to be killed.
/// `MAGIC_ONLY=KEY` instead makes a SysV segment that carries our magic and
/// is never marked ready, and exits; `BLANK=KEY` one that is all zeros.
fn child() {
    if let Ok(key) = std::env::var("BLANK") {
        // SAFETY: plain syscall with integer arguments.
        let id = unsafe { libc::shmget(key.parse().unwrap(), 8192, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0);
        return;
    }
    if let Ok(key) = std::env::var("MAGIC_ONLY") {
        let key: i32 = key.parse().unwrap();
        // SAFETY: plain syscall with integer arguments.
        let id = unsafe { libc::shmget(key, 8192, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        assert!(id >= 0);
        // SAFETY: the segment is 8192 bytes; its first 8 are written, then
        // it is detached.
        unsafe {
            let addr = libc::shmat(id, std::ptr::null(), 0);
            assert_ne!(addr as isize, -1);
            addr.cast::<[u8; 8]>().write(*b"IPCRING\0");
            libc::shmdt(addr);
        }
        return;
    }
    if std::env::var("AS_NOBODY").is_ok() {
        // Group first: once the uid is dropped, setgid is no longer allowed.
        // SAFETY: plain syscalls with integer arguments.
        assert_eq!(unsafe { libc::setgid(65534) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setuid(65534) }, 0);
    }
    let mut held = Vec::new();
    for spec in std::env::var("SEGMENTS").unwrap().split(',') {
        let (lifetime, address) = spec.split_once(':').unwrap();
        let address: Address = address.parse().unwrap();
        let options = CreateOptions::new(4096).owned(lifetime == "owned");
        held.push(Segment::create(&address, &options).unwrap());
    }
    // Release: pairs with the Acquire load in `created_by_child`.
    held[0]
        .view::<AtomicU32>(0)
        .unwrap()
        .store(1, Ordering::Release);
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts a child that creates `segments` and is then SIGKILLed, so that
/// nothing of it runs on exit. Returns its pid.
fn created_by_killed_child(test_name: &str, segments: &[(&str, &Address)]) -> u32 {
    created_by_killed_child_as(test_name, segments, false)
}

/// The same, the child running as uid and gid 65534 if `as_nobody`.
fn created_by_killed_child_as(
    test_name: &str,
    segments: &[(&str, &Address)],
    as_nobody: bool,
) -> u32 {
    let spec = segments
        .iter()
        .map(|(lifetime, address)| format!("{lifetime}:{address}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut env = vec![("SEGMENTS", spec)];
    if as_nobody {
        env.push(("AS_NOBODY", String::new()));
    }
    let mut child = spawn_child(test_name, "creator", &env);
    let first = segments[0].1;
    let probe = OpenOptions::new().register(false).allow_foreign_owner(true);
    eventually(LIMIT, "the child to create its segments", || {
        Segment::open(first, &probe).is_ok_and(|segment| {
            segment
                .view::<AtomicU32>(0)
                .unwrap()
                .load(Ordering::Acquire)
                == 1
        })
    });
    let pid = child.pid();
    child.child().kill().unwrap();
    child.wait_code(LIMIT);
    pid
}

fn exists(address: &Address) -> bool {
    match address {
        Address::Posix(_) => shm_path(address).exists(),
        // SAFETY: plain syscall with integer arguments.
        Address::SysV(key) => (unsafe { libc::shmget(key.get(), 0, 0) }) >= 0,
    }
}

#[test]
fn only_abandoned_segments_and_those_of_gone_owners_are_removed() {
    const NAME: &str = "only_abandoned_segments_and_those_of_gone_owners_are_removed";
    if child_role().is_some() {
        return child();
    }
    let owned_dead = [unique_posix("owned-dead"), unique_sysv()];
    let persistent_dead = [unique_posix("kept-dead"), unique_sysv()];
    let owned_live = [unique_posix("owned-live"), unique_sysv()];
    let persistent_live = [unique_posix("kept-live"), unique_sysv()];
    let others = unique_posix("owned-dead-nobody");
    let empty = unique_posix("abandoned-empty");
    let unready = unique_posix("abandoned-zeros");
    let magic_only = unique_sysv();
    let blank_sysv = unique_sysv();
    let all: Vec<Address> = owned_dead
        .iter()
        .chain(&persistent_dead)
        .chain(&owned_live)
        .chain(&persistent_live)
        .chain([&others, &empty, &unready, &magic_only, &blank_sysv])
        .cloned()
        .collect();
    let _cleanup: Vec<Cleanup> = all
        .iter()
        .filter(|a| **a != blank_sysv)
        .cloned()
        .map(Cleanup)
        .collect();

    let creator_pid = created_by_killed_child(
        NAME,
        &[
            ("owned", &owned_dead[0]),
            ("owned", &owned_dead[1]),
            ("persistent", &persistent_dead[0]),
            ("persistent", &persistent_dead[1]),
        ],
    );
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        created_by_killed_child_as(NAME, &[("owned", &others)], true);
    } else {
        eprintln!("not checking another user's segment: that needs root");
    }
    let _live: Vec<Segment> = owned_live
        .iter()
        .map(|a| Segment::create(a, &CreateOptions::new(4096).owned(true)).unwrap())
        .chain(
            persistent_live
                .iter()
                .map(|a| Segment::create(a, &CreateOptions::new(4096)).unwrap()),
        )
        .collect();
    hand_made(&empty, &[]);
    hand_made(&unready, &vec![0; HEADER_SIZE + 64]);
    let Address::SysV(key) = &magic_only else {
        unreachable!()
    };
    spawn_child(NAME, "magic-only", &[("MAGIC_ONLY", key.get().to_string())]).wait_success(LIMIT);
    let Address::SysV(key) = &blank_sysv else {
        unreachable!()
    };
    // Blank, its creator dead: maybe another program's, so never swept.
    let _blank_cleanup = common::RemoveSysvKey(key.get());
    spawn_child(NAME, "blank", &[("BLANK", key.get().to_string())]).wait_success(LIMIT);

    // What `ls` and `stat` report about the owned ones.
    for address in &owned_dead {
        let info = Segment::inspect(address).unwrap();
        assert!(info.owned);
        assert_eq!(info.creator_alive, Some(false), "{address}");
    }
    for address in &owned_live {
        assert_eq!(Segment::inspect(address).unwrap().creator_alive, Some(true));
    }
    assert_eq!(
        Segment::inspect(&persistent_dead[0]).unwrap().creator_alive,
        None
    );

    let removed: BTreeMap<String, StaleReason> = remove_stale_where(|a| all.contains(a))
        .unwrap()
        .into_iter()
        .map(|Removed { address, reason }| (address.to_string(), reason))
        .collect();
    let mut expected = BTreeMap::new();
    for address in &owned_dead {
        expected.insert(
            address.to_string(),
            StaleReason::CreatorGone { creator_pid },
        );
    }
    for address in [&empty, &unready, &magic_only] {
        expected.insert(address.to_string(), StaleReason::Abandoned);
    }
    assert_eq!(removed, expected);
    for address in &all {
        assert_eq!(
            exists(address),
            !expected.contains_key(&address.to_string()),
            "{address}"
        );
    }
    // A second sweep finds nothing more.
    assert!(remove_stale_where(|a| all.contains(a)).unwrap().is_empty());
}

#[test]
fn dropping_the_creators_handle_removes_an_owned_segment() {
    for address in [unique_posix("owned-drop"), unique_sysv()] {
        let _cleanup = Cleanup(address.clone());
        let creator = Segment::create(&address, &CreateOptions::new(4096).owned(true)).unwrap();
        let other = Segment::open(&address, &OpenOptions::new()).unwrap();
        assert_eq!(other.info().creator_alive, Some(true));
        // Another handle's drop leaves it.
        drop(other);
        assert!(exists(&address));
        drop(creator);
        assert!(!exists(&address), "{address}");
    }
}

/// Whether this machine lets us start a process in new IPC and mount
/// namespaces with `unshare(1)`.
fn namespaces_available() -> Result<(), String> {
    let status = Command::new("unshare")
        .args(["--ipc", "--mount", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("unshare --ipc --mount failed ({status})")),
        Err(e) => Err(format!("unshare(1) cannot run: {e}")),
    }
}

/// In a private IPC namespace and a private /dev/shm: a whole sweep, by the
/// library and by `ipcring rm --stale`, sees only what this test made.
fn sweep_everything_in_a_private_namespace(test_name: &str) {
    let tmpfs = std::ffi::CString::new("tmpfs").unwrap();
    let target = std::ffi::CString::new("/dev/shm").unwrap();
    let data = std::ffi::CString::new("mode=1777").unwrap();
    // SAFETY: all strings are NUL-terminated and outlive the call; the
    // mount is private to this process's own mount namespace.
    let mounted = unsafe {
        libc::mount(
            tmpfs.as_ptr(),
            target.as_ptr(),
            tmpfs.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(mounted, 0, "{}", std::io::Error::last_os_error());

    let owned_dead = [unique_posix("ns-owned"), unique_sysv()];
    let kept = [unique_posix("ns-kept"), unique_sysv()];
    created_by_killed_child(
        test_name,
        &[
            ("owned", &owned_dead[0]),
            ("owned", &owned_dead[1]),
            ("persistent", &kept[0]),
            ("persistent", &kept[1]),
        ],
    );
    let removed: Vec<Address> = ipcring::segment::remove_stale()
        .unwrap()
        .into_iter()
        .map(|removed| removed.address)
        .collect();
    assert_eq!(removed, owned_dead);

    let abandoned = unique_posix("ns-abandoned");
    hand_made(&abandoned, &[]);
    let output = common::ipcring_cli()
        .args(["rm", "--stale"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text,
        format!("removed {abandoned}: abandoned before its creator initialised it\n")
    );
    let output = common::ipcring_cli()
        .args(["rm", "--stale"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "nothing stale\n");
    assert!(kept.iter().all(exists));
}

#[test]
fn a_whole_sweep_removes_only_the_stale() {
    const NAME: &str = "a_whole_sweep_removes_only_the_stale";
    match child_role().as_deref() {
        Some("sweeper") => return sweep_everything_in_a_private_namespace(NAME),
        Some(_) => return child(),
        None => {}
    }
    if let Err(reason) = namespaces_available() {
        eprintln!("skipped: {reason}");
        return;
    }
    // Everything it creates dies with its namespaces.
    let exe = std::env::current_exe().unwrap();
    let sweeper = Command::new("unshare")
        .args(["--ipc", "--mount"])
        .arg(exe)
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, "sweeper")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard(Some(sweeper)).wait_success(Duration::from_secs(60));
}
