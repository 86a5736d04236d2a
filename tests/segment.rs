//! Segment behaviour within one process: life cycle, options, errors, and
//! headers damaged the way a faulty or hostile peer could damage them.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cleanup, RemoveFile, unique_posix, unique_sysv};
use ipcring::segment::{
    Address, BackingKind, CreateOptions, HEADER_SIZE, LAYOUT_VERSION, MAX_PARTICIPANTS, Mismatch,
    OpenOptions, Segment, SegmentError,
};

fn shm_path(address: &Address) -> PathBuf {
    match address {
        Address::Posix(name) => PathBuf::from("/dev/shm").join(name.file_name()),
        Address::SysV(_) => unreachable!("only POSIX segments have a path"),
    }
}

fn quick_open() -> OpenOptions {
    OpenOptions::new().timeout(Duration::from_millis(50))
}

#[test]
fn create_open_share_and_remove_both_named_backings() {
    for address in [unique_posix("life"), unique_sysv()] {
        let _cleanup = Cleanup(address.clone());
        let created = Segment::create(&address, &CreateOptions::new(10_000).kind(7)).unwrap();
        assert_eq!(created.user_len(), 10_000);
        assert_eq!(
            created.user_ptr() as usize % 4096,
            0,
            "user area is page-aligned"
        );
        created
            .view::<AtomicU64>(8)
            .unwrap()
            .store(99, Ordering::Release);

        let opened = Segment::open(&address, &OpenOptions::new().kind(7)).unwrap();
        assert_eq!(
            opened.view::<AtomicU64>(8).unwrap().load(Ordering::Acquire),
            99
        );
        let info = opened.info();
        assert_eq!(info.address.as_ref(), Some(&address));
        assert_eq!(info.kind, 7);
        assert_eq!(info.user_size, 10_000);
        assert_eq!(info.total_size, (HEADER_SIZE + 10_000) as u64);
        assert_eq!(info.creator_pid, std::process::id());
        assert_eq!(info.participants.len(), 2);
        assert!(info.participants.iter().all(|p| p.alive));
        let expected_backing = match address {
            Address::Posix(_) => BackingKind::Posix,
            Address::SysV(_) => BackingKind::SysV,
        };
        assert_eq!(info.backing, expected_backing);

        drop(opened);
        assert_eq!(created.participants().len(), 1, "drop deregisters");
        Segment::remove(&address).unwrap();
        assert!(matches!(
            Segment::open(&address, &quick_open()),
            Err(SegmentError::NotFound(_))
        ));
        // The mapping outlives the name.
        assert_eq!(
            created
                .view::<AtomicU64>(8)
                .unwrap()
                .load(Ordering::Acquire),
            99
        );
    }
}

#[test]
fn exclusive_create_open_missing_and_remove_missing_are_typed() {
    for address in [unique_posix("excl"), unique_sysv()] {
        let _cleanup = Cleanup(address.clone());
        assert!(matches!(
            Segment::open(&address, &quick_open()),
            Err(SegmentError::NotFound(_))
        ));
        assert!(matches!(
            Segment::remove(&address),
            Err(SegmentError::NotFound(_))
        ));
        let _first = Segment::create(&address, &CreateOptions::new(64)).unwrap();
        assert!(matches!(
            Segment::create(&address, &CreateOptions::new(64)),
            Err(SegmentError::AlreadyExists(_))
        ));
    }
}

#[test]
fn open_or_create_creates_once() {
    let address = unique_posix("ooc");
    let _cleanup = Cleanup(address.clone());
    let options = CreateOptions::new(128);
    let (_a, created_a) = Segment::open_or_create(&address, &options, &OpenOptions::new()).unwrap();
    let (_b, created_b) = Segment::open_or_create(&address, &options, &OpenOptions::new()).unwrap();
    assert!(created_a);
    assert!(!created_b);
}

#[test]
fn default_mode_is_owner_only_and_explicit_mode_ignores_umask() {
    let address = unique_posix("mode");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(64)).unwrap();
    let on_disk = std::fs::metadata(shm_path(&address))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(on_disk, 0o600);
    assert_eq!(segment.info().mode, 0o600);
    drop(segment);
    Segment::remove(&address).unwrap();

    // 0o666 survives a typical umask of 022 exactly.
    let segment = Segment::create(&address, &CreateOptions::new(64).mode(0o666)).unwrap();
    let on_disk = std::fs::metadata(shm_path(&address))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(on_disk, 0o666);
    drop(segment);

    let sysv = unique_sysv();
    let _cleanup_sysv = Cleanup(sysv.clone());
    let segment = Segment::create(&sysv, &CreateOptions::new(64)).unwrap();
    assert_eq!(segment.info().mode, 0o600);
    assert_eq!(segment.info().owner_uid, segment.info().creator_uid);
}

#[test]
fn invalid_options_are_refused_before_touching_the_os() {
    let address = unique_posix("opts");
    let _cleanup = Cleanup(address.clone());
    for options in [
        CreateOptions::new(0),
        CreateOptions::new(usize::MAX),
        CreateOptions::new(64).mode(0o1777),
    ] {
        assert!(matches!(
            Segment::create(&address, &options),
            Err(SegmentError::InvalidOptions { .. })
        ));
    }
    assert!(!shm_path(&address).exists());
}

#[test]
fn views_are_bounds_and_alignment_checked() {
    let address = unique_posix("view");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(64)).unwrap();
    assert!(segment.view::<AtomicU64>(56).is_ok());
    assert!(segment.view::<AtomicU64>(57).is_err(), "misaligned");
    assert!(segment.view::<AtomicU64>(64).is_err(), "past the end");
    assert!(
        segment.view::<AtomicU64>(usize::MAX - 3).is_err(),
        "overflow"
    );
    assert!(segment.view::<[AtomicU32; 16]>(0).is_ok());
    assert!(segment.view::<[AtomicU32; 17]>(0).is_err());
}

#[test]
fn read_only_inspection_neither_registers_nor_writes() {
    let address = unique_posix("ro");
    let _cleanup = Cleanup(address.clone());
    let segment = Segment::create(&address, &CreateOptions::new(64)).unwrap();
    let info = Segment::inspect(&address).unwrap();
    assert_eq!(info.participants.len(), 1);
    let ro = Segment::open(&address, &OpenOptions::new().read_only()).unwrap();
    assert!(matches!(
        ro.view::<AtomicU32>(0),
        Err(SegmentError::ReadOnly)
    ));
    assert!(matches!(
        ro.reap_dead_participants(),
        Err(SegmentError::ReadOnly)
    ));
    assert_eq!(segment.participants().len(), 1);
}

#[test]
fn participants_table_fills_up_with_a_typed_error() {
    let address = unique_posix("full");
    let _cleanup = Cleanup(address.clone());
    let _creator = Segment::create(&address, &CreateOptions::new(64)).unwrap();
    let mut handles = Vec::new();
    for _ in 1..MAX_PARTICIPANTS {
        handles.push(Segment::open(&address, &OpenOptions::new()).unwrap());
    }
    assert!(matches!(
        Segment::open(&address, &OpenOptions::new()),
        Err(SegmentError::TooManyParticipants { .. })
    ));
    // An observer that does not register still gets in.
    assert!(Segment::open(&address, &OpenOptions::new().register(false)).is_ok());
    handles.pop();
    assert!(Segment::open(&address, &OpenOptions::new()).is_ok());
}

#[test]
fn anonymous_segments_are_sealed_memfds() {
    let segment = Segment::create_anonymous(&CreateOptions::new(4096)).unwrap();
    let info = segment.info();
    assert_eq!(info.backing, BackingKind::Memfd);
    assert_eq!(info.address, None);
    assert_eq!(info.mode, 0o600);
    assert!(matches!(
        segment.unlink(),
        Err(SegmentError::WrongBacking(_))
    ));
    // Reopen through a duplicate descriptor, as a receiver would.
    let fd = segment.inheritable_fd().unwrap();
    let again = Segment::from_fd(fd, &OpenOptions::new()).unwrap();
    again
        .view::<AtomicU32>(0)
        .unwrap()
        .store(5, Ordering::Release);
    assert_eq!(
        segment
            .view::<AtomicU32>(0)
            .unwrap()
            .load(Ordering::Acquire),
        5
    );
    assert_eq!(segment.participants().len(), 2);
}

#[test]
fn an_unsealed_descriptor_is_refused() {
    let address = unique_posix("unsealed");
    let _cleanup = Cleanup(address.clone());
    let _segment = Segment::create(&address, &CreateOptions::new(64)).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(&address))
        .unwrap();
    assert!(matches!(
        Segment::from_fd(OwnedFd::from(file), &OpenOptions::new()),
        Err(SegmentError::Incompatible(Mismatch::NotSealed))
    ));
    assert!(Segment::open_inherited(-1, &OpenOptions::new()).is_err());
    assert!(Segment::open_inherited(987_654, &OpenOptions::new()).is_err());
}

#[test]
fn names_and_addresses_are_validated() {
    assert!(matches!(
        "bad name".parse::<Address>(),
        Err(SegmentError::InvalidAddress { .. })
    ));
    assert!("sysv:0".parse::<Address>().is_err());
    assert!(
        ipcring::segment::SysvKey::from_path(std::path::Path::new("/no/such/path"), 1).is_err()
    );
    let key = ipcring::segment::SysvKey::from_path(std::path::Path::new("/"), 1).unwrap();
    assert_eq!(
        key,
        ipcring::segment::SysvKey::from_path(std::path::Path::new("/"), 1).unwrap()
    );
}

/// Makes `/dev/shm/ipcring.NAME` by hand with `bytes`, as a faulty or
/// hostile program could.
fn hand_made(address: &Address, bytes: &[u8]) -> RemoveFile {
    let path = shm_path(address);
    std::fs::write(&path, bytes).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_mode(0o600);
    std::fs::set_permissions(&path, perms).unwrap();
    RemoveFile(path)
}

/// Overwrites `bytes` at `offset` of an existing segment's file.
fn scribble(address: &Address, offset: u64, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(address))
        .unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

fn open_err(address: &Address) -> SegmentError {
    match Segment::open(address, &quick_open()) {
        Ok(_) => panic!("a damaged segment opened"),
        Err(e) => e,
    }
}

#[test]
fn damaged_headers_give_typed_errors() {
    // (offset, bytes, check)
    type Check = fn(&SegmentError) -> bool;
    let cases: [(u64, Vec<u8>, Check); 10] = [
        (0, b"NOTOURS!".to_vec(), |e| {
            matches!(e, SegmentError::Incompatible(Mismatch::Magic { .. }))
        }),
        (8, 99u32.to_le_bytes().to_vec(), |e| {
            matches!(
                e,
                SegmentError::Incompatible(Mismatch::Version {
                    found: 99,
                    expected: LAYOUT_VERSION
                })
            )
        }),
        (16, 1u64.to_le_bytes().to_vec(), |e| {
            matches!(
                e,
                SegmentError::Incompatible(Mismatch::Size { header: 1, .. })
            )
        }),
        (24, 5u64.to_le_bytes().to_vec(), |e| {
            matches!(
                e,
                SegmentError::Corrupted {
                    field: "user_size",
                    value: 5
                }
            )
        }),
        (32, 64u32.to_le_bytes().to_vec(), |e| {
            matches!(
                e,
                SegmentError::Corrupted {
                    field: "header_size",
                    ..
                }
            )
        }),
        (36, 9u32.to_le_bytes().to_vec(), |e| {
            matches!(
                e,
                SegmentError::Corrupted {
                    field: "participants_capacity",
                    ..
                }
            )
        }),
        (56, 0xdead_beefu32.to_le_bytes().to_vec(), |e| {
            matches!(
                e,
                SegmentError::Corrupted {
                    field: "init_state",
                    ..
                }
            )
        }),
        // A valid code, but not this object's backing (it is POSIX).
        (60, 2u32.to_le_bytes().to_vec(), |e| {
            matches!(
                e,
                SegmentError::Corrupted {
                    field: "backing",
                    value: 2
                }
            )
        }),
        (60, 77u32.to_le_bytes().to_vec(), |e| {
            matches!(
                e,
                SegmentError::Corrupted {
                    field: "backing",
                    value: 77
                }
            )
        }),
        // A flag this layout does not define.
        (64, 2u32.to_le_bytes().to_vec(), |e| {
            matches!(
                e,
                SegmentError::Corrupted {
                    field: "flags",
                    value: 2
                }
            )
        }),
    ];
    for (offset, bytes, check) in cases {
        let address = unique_posix("damaged");
        let _cleanup = Cleanup(address.clone());
        drop(Segment::create(&address, &CreateOptions::new(256).register(false)).unwrap());
        scribble(&address, offset, &bytes);
        let err = open_err(&address);
        assert!(check(&err), "offset {offset}: unexpected {err:?}");
        // Inspection reports the same, and the name can still be removed.
        assert!(Segment::inspect(&address).is_err());
    }
}

#[test]
fn kind_mismatch_is_incompatible() {
    let address = unique_posix("kind");
    let _cleanup = Cleanup(address.clone());
    let _segment = Segment::create(&address, &CreateOptions::new(64).kind(3)).unwrap();
    assert!(matches!(
        Segment::open(&address, &OpenOptions::new().kind(4)),
        Err(SegmentError::Incompatible(Mismatch::Kind {
            found: 3,
            expected: 4
        }))
    ));
}

#[test]
fn short_empty_and_unfinished_objects_never_fault() {
    // Shorter than a header: refused before mapping.
    let address = unique_posix("short");
    let _file = hand_made(&address, &[0xff; 100]);
    assert!(matches!(
        open_err(&address),
        SegmentError::Incompatible(Mismatch::TooSmall { size: 100, .. })
    ));

    // Zero length, or sized but never initialised: our creators name a
    // segment only once it is complete, so these will never be ready.
    let address = unique_posix("empty");
    let _file = hand_made(&address, &[]);
    assert!(matches!(open_err(&address), SegmentError::Abandoned { .. }));
    let address = unique_posix("unfinished");
    let _file = hand_made(&address, &vec![0; HEADER_SIZE + 64]);
    assert!(matches!(open_err(&address), SegmentError::Abandoned { .. }));

    // A segment truncated after creation: the header's size no longer
    // matches, and we refuse it instead of mapping past the end.
    let address = unique_posix("truncated");
    let _cleanup = Cleanup(address.clone());
    drop(Segment::create(&address, &CreateOptions::new(8192).register(false)).unwrap());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(&address))
        .unwrap();
    file.set_len(HEADER_SIZE as u64 + 10).unwrap();
    assert!(matches!(
        open_err(&address),
        SegmentError::Incompatible(Mismatch::Size { .. })
    ));
}

#[test]
fn random_headers_never_panic() {
    // A small deterministic generator: this is a smoke test; the fuzz target
    // explores further.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let address = unique_posix("random");
    let path = shm_path(&address);
    let _file = RemoveFile(path.clone());
    for round in 0..200 {
        let len = [
            0usize,
            1,
            64,
            HEADER_SIZE - 1,
            HEADER_SIZE,
            HEADER_SIZE + 64,
        ][round % 6];
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Make some rounds look nearly right, to get past the first checks.
        if round % 3 == 0 && len >= 64 {
            bytes[..8].copy_from_slice(b"IPCRING\0");
            bytes[56..60].copy_from_slice(b"REDY");
        }
        std::fs::write(&path, &bytes).unwrap();
        let result = Segment::open(&address, &OpenOptions::new().timeout(Duration::ZERO));
        assert!(result.is_err(), "round {round}: random bytes opened");
    }
}

#[test]
fn a_fifo_in_dev_shm_is_refused_without_blocking() {
    let address = unique_posix("fifo");
    let path = shm_path(&address);
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let _file = RemoveFile(path);
    let started = Instant::now();
    assert!(matches!(
        Segment::inspect(&address),
        Err(SegmentError::Incompatible(Mismatch::NotRegularFile))
    ));
    assert!(matches!(
        Segment::open(&address, &quick_open()),
        Err(SegmentError::Incompatible(Mismatch::NotRegularFile))
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    // And `list` reports it instead of hanging.
    let listed = ipcring::segment::list().unwrap();
    assert!(
        listed
            .iter()
            .any(|l| l.address == address && l.info.is_err())
    );
}

#[test]
fn a_foreign_sysv_segment_is_never_removed() {
    let Address::SysV(key) = unique_sysv() else {
        unreachable!()
    };
    // A foreign program's segment: zero-filled, no header of ours.
    // SAFETY: plain syscalls with integer arguments.
    let id = unsafe { libc::shmget(key.get(), 8192, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    assert!(id >= 0);
    struct Rmid(i32);
    impl Drop for Rmid {
        fn drop(&mut self) {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
    let _rmid = Rmid(id);
    let address = Address::SysV(key);
    // Its creator (this process) lives: it could be one of ours still being
    // initialised, so open and remove wait for a header, then give up.
    assert!(matches!(
        Segment::open(&address, &quick_open()),
        Err(SegmentError::NotReady { .. })
    ));
    let started = Instant::now();
    assert!(matches!(
        Segment::remove(&address),
        Err(SegmentError::NotReady { .. })
    ));
    assert!(started.elapsed() >= ipcring::segment::REMOVE_WAIT);
    // With a foreign magic it is refused at once.
    // SAFETY: a null address lets the kernel choose; the segment is 8192
    // bytes, so the first 8 are ours to write; we detach right after.
    unsafe {
        let addr = libc::shmat(id, std::ptr::null(), 0);
        assert_ne!(addr as isize, -1);
        addr.cast::<u64>().write(0x1234_5678);
        libc::shmdt(addr);
    }
    assert!(matches!(
        Segment::remove(&address),
        Err(SegmentError::Incompatible(Mismatch::Magic {
            found: 0x1234_5678
        }))
    ));
    // Still there.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::shmget(key.get(), 0, 0) }, id);
    // Not listed as ours either.
    let listed = ipcring::segment::list().unwrap();
    assert!(listed.iter().all(|l| l.address != address));
}

/// Creates a SysV segment the raw way and exits without writing a header,
/// as a creator killed between `shmget` and its first write leaves it;
/// `SCRIBBLE` writes one byte past the magic first.
fn create_blank_sysv_and_exit() {
    let key: i32 = std::env::var("SYSV_KEY").unwrap().parse().unwrap();
    // SAFETY: plain syscall with integer arguments.
    let id = unsafe { libc::shmget(key, 8192, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    assert!(id >= 0);
    if std::env::var("SCRIBBLE").is_ok() {
        // SAFETY: the segment is 8192 bytes; byte 200 lies within it.
        unsafe {
            let addr = libc::shmat(id, std::ptr::null(), 0);
            assert_ne!(addr as isize, -1);
            addr.cast::<u8>().add(200).write(1);
            libc::shmdt(addr);
        }
    }
}

#[test]
fn a_sysv_segment_abandoned_before_its_header_is_removable() {
    const NAME: &str = "a_sysv_segment_abandoned_before_its_header_is_removable";
    if common::child_role().is_some() {
        return create_blank_sysv_and_exit();
    }
    let address = unique_sysv();
    let Address::SysV(key) = address else {
        unreachable!()
    };
    let _cleanup = common::RemoveSysvKey(key.get());
    let env = [("SYSV_KEY", key.get().to_string())];
    common::spawn_child(NAME, "abandon", &env).wait_success(Duration::from_secs(20));

    // Another process still attached: perhaps a program using the zeros.
    // SAFETY: plain syscalls; the address is detached below.
    let id = unsafe { libc::shmget(key.get(), 0, 0) };
    // SAFETY: as above.
    let attached = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
    assert_ne!(attached as isize, -1);
    assert!(matches!(
        Segment::remove(&address),
        Err(SegmentError::NotReady { .. })
    ));
    // SAFETY: attached above, detached once.
    unsafe { libc::shmdt(attached) };

    // Blank, creator dead, no one attached: removed, and the key is free.
    Segment::remove(&address).unwrap();
    drop(Segment::create(&address, &CreateOptions::new(64)).unwrap());
    Segment::remove(&address).unwrap();

    // Not blank: not provably ours, so left alone.
    let env = [
        ("SYSV_KEY", key.get().to_string()),
        ("SCRIBBLE", String::new()),
    ];
    common::spawn_child(NAME, "abandon", &env).wait_success(Duration::from_secs(20));
    assert!(matches!(
        Segment::remove(&address),
        Err(SegmentError::Incompatible(Mismatch::Magic { found: 0 }))
    ));
}

#[test]
fn a_stale_handle_never_unlinks_a_newer_segment() {
    for address in [unique_posix("stale"), unique_sysv()] {
        let _cleanup = Cleanup(address.clone());
        let old = Segment::create(&address, &CreateOptions::new(64).kind(1)).unwrap();
        Segment::remove(&address).unwrap();
        assert!(matches!(old.unlink(), Err(SegmentError::NotFound(_))));
        let new = Segment::create(&address, &CreateOptions::new(64).kind(2)).unwrap();
        assert!(
            matches!(old.unlink(), Err(SegmentError::NotFound(_))),
            "{address}"
        );
        assert_eq!(Segment::inspect(&address).unwrap().kind, 2);
        // The current handle removes its own name.
        new.unlink().unwrap();
        assert!(matches!(new.unlink(), Err(SegmentError::NotFound(_))));
        assert!(matches!(
            Segment::inspect(&address),
            Err(SegmentError::NotFound(_))
        ));
    }
}

/// One racing process: random operations on one name, each of which may
/// fail only with the errors its documentation lists.
fn race(address: &Address, seed: u64) {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let create = CreateOptions::new(256);
    let open = OpenOptions::new().timeout(Duration::from_millis(50));
    let mut held = Vec::new();
    for round in 0..RACE_ROUNDS {
        let outcome = match next() % 6 {
            0 => Segment::create(address, &create).map(|s| held.push(s)),
            1 => Segment::open(address, &open).map(|s| held.push(s)),
            2 => Segment::open_or_create(address, &create, &open).map(|(s, _)| held.push(s)),
            3 => Segment::remove(address),
            4 => held
                .pop()
                .map_or(Ok(()), |segment: Segment| segment.unlink()),
            _ => {
                held.clear();
                Ok(())
            }
        };
        match outcome {
            Ok(())
            | Err(
                SegmentError::AlreadyExists(_)
                | SegmentError::NotFound(_)
                | SegmentError::NotReady { .. },
            ) => {}
            Err(e) => panic!("round {round} at {address}: undocumented error {e:?}"),
        }
        if held.len() > 3 {
            held.remove(0);
        }
    }
}

const RACE_ROUNDS: usize = 500;

#[test]
fn racing_processes_see_only_documented_errors() {
    const NAME: &str = "racing_processes_see_only_documented_errors";
    if common::child_role().is_some() {
        let address: Address = std::env::var("SEGMENT").unwrap().parse().unwrap();
        let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
        return race(&address, seed);
    }
    for address in [unique_posix("race"), unique_sysv()] {
        let _cleanup = Cleanup(address.clone());
        let racers: Vec<_> = (1..=3u64)
            .map(|i| {
                common::spawn_child(
                    NAME,
                    "racer",
                    &[
                        ("SEGMENT", address.to_string()),
                        ("SEED", (i * 0x9e37_79b9).to_string()),
                    ],
                )
            })
            .collect();
        for racer in racers {
            racer.wait_success(Duration::from_secs(120));
        }
    }
}

/// The uid and gid a child drops to when a test needs another user.
const NOBODY: u32 = 65534;

#[test]
fn a_segment_of_another_owner_is_refused_unless_allowed() {
    const NAME: &str = "a_segment_of_another_owner_is_refused_unless_allowed";
    if common::child_role().is_some() {
        // Group first: once the uid is dropped, setgid is no longer allowed.
        // SAFETY: plain syscalls with integer arguments.
        assert_eq!(unsafe { libc::setgid(NOBODY) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setuid(NOBODY) }, 0);
        for var in ["POSIX", "SYSV"] {
            let address: Address = std::env::var(var).unwrap().parse().unwrap();
            drop(Segment::create(&address, &CreateOptions::new(64).mode(0o666)).unwrap());
        }
        return;
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: creating a segment as another user needs root");
        return;
    }
    let posix = unique_posix("foreign");
    let sysv = unique_sysv();
    let _cleanup = (Cleanup(posix.clone()), Cleanup(sysv.clone()));
    common::spawn_child(
        NAME,
        "create-as-nobody",
        &[("POSIX", posix.to_string()), ("SYSV", sysv.to_string())],
    )
    .wait_success(Duration::from_secs(20));

    for address in [&posix, &sysv] {
        // The mode (0666) would let us in; the owner does not.
        match Segment::open(address, &quick_open()) {
            Err(SegmentError::ForeignOwner {
                owner_uid: NOBODY,
                our_uid: 0,
                ..
            }) => {}
            other => panic!("{address}: expected ForeignOwner, got {other:?}"),
        }
        let opened = Segment::open(address, &quick_open().allow_foreign_owner(true)).unwrap();
        assert_eq!(opened.info().owner_uid, NOBODY);
        assert_eq!(opened.info().creator_uid, NOBODY);
        // Inspection reads any owner's segment.
        assert_eq!(Segment::inspect(address).unwrap().owner_uid, NOBODY);
        // A name squatted by another user is not silently joined.
        assert!(matches!(
            Segment::open_or_create(address, &CreateOptions::new(64), &quick_open()),
            Err(SegmentError::ForeignOwner { .. })
        ));
    }
}

/// A long open timeout, to show that an abandoned segment is reported
/// without waiting for it.
const PATIENT: Duration = Duration::from_secs(10);

/// Opens with a long timeout; returns the error and how long it took.
fn patient_open_err(address: &Address) -> (SegmentError, Duration) {
    let started = Instant::now();
    match Segment::open(address, &OpenOptions::new().timeout(PATIENT)) {
        Ok(_) => panic!("{address}: a half-initialised segment opened"),
        Err(e) => (e, started.elapsed()),
    }
}

#[test]
fn half_initialised_posix_objects_are_abandoned_at_once_and_removable() {
    let magic_only = {
        let mut bytes = vec![0; HEADER_SIZE + 64];
        bytes[..8].copy_from_slice(b"IPCRING\0");
        bytes
    };
    for bytes in [Vec::new(), vec![0; HEADER_SIZE + 64], magic_only] {
        let address = unique_posix("half");
        let _file = hand_made(&address, &bytes);
        let (error, took) = patient_open_err(&address);
        assert!(
            matches!(error, SegmentError::Abandoned { .. }),
            "{} bytes: {error:?}",
            bytes.len()
        );
        assert!(took < Duration::from_secs(1), "took {took:?}");
        Segment::remove(&address).unwrap();
    }
}

#[test]
fn an_unready_memfd_is_abandoned_at_once() {
    // SAFETY: a NUL-terminated name; the flags are valid.
    let fd = unsafe { libc::memfd_create(c"t-unready".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0);
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let file = std::fs::File::from(fd);
    file.set_len((HEADER_SIZE + 64) as u64).unwrap();
    // SAFETY: plain fcntl on a descriptor we own.
    let sealed = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK,
        )
    };
    assert_eq!(sealed, 0);
    let started = Instant::now();
    let opened = Segment::from_fd(OwnedFd::from(file), &OpenOptions::new().timeout(PATIENT));
    assert!(matches!(opened, Err(SegmentError::Abandoned { .. })));
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Creates a SysV segment the raw way and exits having written `MAGIC_ONLY`
/// bytes or none: a creator that died before marking it ready.
fn create_half_sysv_and_exit() {
    let key: i32 = std::env::var("SYSV_KEY").unwrap().parse().unwrap();
    // SAFETY: plain syscall with integer arguments.
    let id = unsafe { libc::shmget(key, 8192, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    assert!(id >= 0);
    if std::env::var("MAGIC_ONLY").is_ok() {
        // SAFETY: the segment is 8192 bytes; its first 8 are written, then
        // it is detached.
        unsafe {
            let addr = libc::shmat(id, std::ptr::null(), 0);
            assert_ne!(addr as isize, -1);
            addr.cast::<[u8; 8]>().write(*b"IPCRING\0");
            libc::shmdt(addr);
        }
    }
}

#[test]
fn a_sysv_segment_whose_creator_died_is_abandoned_at_once_and_removable() {
    const NAME: &str = "a_sysv_segment_whose_creator_died_is_abandoned_at_once_and_removable";
    if common::child_role().is_some() {
        return create_half_sysv_and_exit();
    }
    for magic_only in [false, true] {
        let address = unique_sysv();
        let Address::SysV(key) = address else {
            unreachable!()
        };
        let _cleanup = common::RemoveSysvKey(key.get());
        let mut env = vec![("SYSV_KEY", key.get().to_string())];
        if magic_only {
            env.push(("MAGIC_ONLY", String::new()));
        }
        common::spawn_child(NAME, "half-create", &env).wait_success(Duration::from_secs(20));
        let (error, took) = patient_open_err(&address);
        assert!(matches!(error, SegmentError::Abandoned { .. }), "{error:?}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        Segment::remove(&address).unwrap();
        drop(Segment::create(&address, &CreateOptions::new(64)).unwrap());
        Segment::remove(&address).unwrap();
    }
}

/// Creates and removes segments at two addresses until killed.
fn create_and_remove_until_killed(posix: &Address, sysv: &Address) {
    let create = CreateOptions::new(1 << 20);
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        for address in [posix, sysv] {
            drop(Segment::create(address, &create).unwrap());
            Segment::remove(address).unwrap();
        }
    }
}

#[test]
fn a_creator_killed_at_any_moment_leaves_nothing_half_usable() {
    const NAME: &str = "a_creator_killed_at_any_moment_leaves_nothing_half_usable";
    let posix_var = |key| std::env::var(key).unwrap().parse::<Address>().unwrap();
    if common::child_role().is_some() {
        return create_and_remove_until_killed(&posix_var("POSIX"), &posix_var("SYSV"));
    }
    let posix = unique_posix("killed");
    let sysv = unique_sysv();
    let _cleanup = (Cleanup(posix.clone()), Cleanup(sysv.clone()));
    let env = [("POSIX", posix.to_string()), ("SYSV", sysv.to_string())];
    let mut abandoned_sysv = 0;
    for round in 0..12u64 {
        let mut child = common::spawn_child(NAME, "creator", &env);
        std::thread::sleep(Duration::from_millis(20 + (round * 7) % 30));
        child.child().kill().unwrap();
        child.wait_code(Duration::from_secs(20));
        // POSIX: named only once complete, so the name is absent or ready.
        match Segment::open(&posix, &OpenOptions::new().timeout(PATIENT)) {
            Ok(_) | Err(SegmentError::NotFound(_)) => {}
            Err(e) => panic!("round {round}: POSIX left {e:?}"),
        }
        // SysV: absent, ready, or abandoned (reported at once, removable).
        let started = Instant::now();
        match Segment::open(&sysv, &OpenOptions::new().timeout(PATIENT)) {
            Ok(_) | Err(SegmentError::NotFound(_)) => {}
            Err(SegmentError::Abandoned { .. }) => {
                assert!(started.elapsed() < Duration::from_secs(1));
                abandoned_sysv += 1;
            }
            Err(e) => panic!("round {round}: SysV left {e:?}"),
        }
        for address in [&posix, &sysv] {
            match Segment::remove(address) {
                Ok(()) | Err(SegmentError::NotFound(_)) => {}
                Err(e) => panic!("round {round}: removing {address}: {e:?}"),
            }
        }
    }
    eprintln!("{abandoned_sysv} of 12 kills left a SysV segment half-initialised");
}
