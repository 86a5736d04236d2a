//! The `ipcring` command line against what a careless or malicious
//! co-tenant leaves in /dev/shm and types at it: foreign and damaged files
//! under our prefix, FIFOs, directories, symlinks, sparse giants, damaged
//! headers, foreign SysV segments, weird names and huge numbers. Every
//! error must be a clear line per failure and a non-zero exit; a panic
//! (exit code 101), a signal or a hang is a failure.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/hostile_support/mod.rs"]
mod hostile_support;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Cleanup, RemoveFile, RemoveSysvKey, unique_posix, unique_sysv};
use hostile_support::Rng;
use ipcring::segment::{Address, CreateOptions, Segment};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `ipcring` with `args`, killing it after [`LIMIT`].
fn ipcring<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    // Read the pipes while it runs (its output may exceed a pipe's buffer).
    match hostile_support::bounded(LIMIT, move || child.wait_with_output().unwrap()) {
        hostile_support::Outcome::Returned(output) => output,
        _ => {
            // SAFETY: our child, not reaped (its waiter is still blocked).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("ipcring {shown:?} hung");
        }
    }
}

/// A failure description if `output` is a panic, a signal, or an error
/// without a clear message; `None` if it is a success or a clean error.
fn judge(what: &str, output: &Output) -> Option<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        None => Some(format!("{what}: killed by a signal ({:?})", output.status)),
        Some(101) => Some(format!("{what}: panicked: {stderr}")),
        Some(0) => None,
        Some(_) => {
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                Some(format!("{what}: failed without a message"))
            } else if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
                Some(format!("{what}: {stderr}"))
            } else {
                None
            }
        }
    }
}

fn shm_path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from("/dev/shm").join(format!("ipcring.{name}"))
}

/// Planted names, each with whether `rm --stale` must remove it (`None`
/// where either is fine), and the guards that remove them.
type Planted = (Vec<(String, Option<bool>)>, Vec<RemovePath>, Vec<Cleanup>);

/// Removes a file, FIFO, symlink or empty directory we planted.
struct RemovePath(std::path::PathBuf);

impl Drop for RemovePath {
    fn drop(&mut self) {
        if std::fs::remove_file(&self.0).is_err() {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
}

/// Hostile objects under our prefix.
fn plant_hostile_files(tag: &str) -> Planted {
    let mut names = Vec::new();
    let mut guards = Vec::new();
    let mut cleanups = Vec::new();
    let mut plant = |suffix: &str, stale: bool, make: &dyn Fn(&std::path::Path)| {
        let name = format!("t-{tag}-{suffix}");
        let path = shm_path(&name);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&path);
        make(&path);
        guards.push(RemovePath(path));
        names.push((name, Some(stale)));
    };
    let mut rng = Rng(7);
    let random: Vec<u8> = (0..8192).map(|_| rng.next() as u8).collect();
    plant("random", false, &|p| std::fs::write(p, &random).unwrap());
    plant("empty", true, &|p| std::fs::write(p, b"").unwrap());
    plant("fifo", false, &|p| {
        let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    });
    plant("dir", false, &|p| std::fs::create_dir(p).unwrap());
    plant("symlink", false, &|p| {
        std::os::unix::fs::symlink("/etc/hostname", p).unwrap()
    });
    plant("small", false, &|p| {
        std::fs::write(p, vec![0u8; 4095]).unwrap()
    });
    plant("sparse-terabyte", true, &|p| {
        let file = std::fs::File::create(p).unwrap();
        file.set_len(1 << 40).unwrap();
    });
    // Blank, so abandoned by the documented rule, though `stat` calls its
    // size impossible.
    plant("too-big", true, &|p| {
        let file = std::fs::File::create(p).unwrap();
        file.set_len((1 << 40) + 8192).unwrap();
    });
    plant("magic-only", true, &|p| {
        let mut bytes = vec![0u8; 8192];
        bytes[..8].copy_from_slice(b"IPCRING\0");
        std::fs::write(p, bytes).unwrap();
    });
    plant("unreadable", false, &|p| {
        std::fs::write(p, &random).unwrap();
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    });
    // Real segments whose headers were scribbled over, keeping the magic
    // and the ready mark so that they pass the first checks.
    for seed in 0..12u64 {
        let name = format!("t-{tag}-damaged-{seed}");
        let address: Address = name.parse().unwrap();
        drop(Segment::create(&address, &CreateOptions::new(8192)).unwrap());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(shm_path(&name))
            .unwrap();
        let mut rng = Rng(seed);
        let mut header: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        header[..8].copy_from_slice(b"IPCRING\0");
        header[56..60].copy_from_slice(b"REDY");
        if seed % 3 != 0 {
            // Plausible fields, damaged participants and creator.
            header[8..12].copy_from_slice(&3u32.to_le_bytes());
            header[16..24].copy_from_slice(&(4096u64 + 8192).to_le_bytes());
            header[24..32].copy_from_slice(&8192u64.to_le_bytes());
            header[32..36].copy_from_slice(&4096u32.to_le_bytes());
            header[36..40].copy_from_slice(&128u32.to_le_bytes());
            header[60..64].copy_from_slice(&1u32.to_le_bytes());
            header[64..68].copy_from_slice(&((seed % 2) as u32).to_le_bytes());
            header[68..72].fill(0);
            header[80..128].fill(0);
        }
        file.write_all_at(&header, 0).unwrap();
        cleanups.push(Cleanup(address));
        // Plausible, owned and with no creator lock: stale. Random
        // headers: see `rm_stale_keeps_segments_it_cannot_validate`.
        let stale = (seed % 3 != 0).then_some(seed % 2 == 1);
        names.push((name, stale));
    }
    (names, guards, cleanups)
}

#[test]
fn stat_ls_and_rm_stale_stay_calm_over_hostile_files() {
    let tag = format!("hcli{}", std::process::id());
    let (names, _guards, _cleanups) = plant_hostile_files(&tag);
    let mut failures = Vec::new();
    for (name, _) in &names {
        for json in [false, true] {
            let mut args = vec!["stat", name.as_str()];
            if json {
                args.push("--json");
            }
            let output = ipcring(&args);
            failures.extend(judge(&format!("stat {name} (json {json})"), &output));
            if output.status.success()
                && json
                && serde_json::from_slice::<serde_json::Value>(&output.stdout).is_err()
            {
                failures.push(format!("stat --json {name}: not JSON"));
            }
        }
    }
    let listed = ipcring(&["ls"]);
    failures.extend(judge("ls", &listed));
    if !listed.status.success() {
        failures.push(format!(
            "ls failed: {}",
            String::from_utf8_lossy(&listed.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&listed.stdout);
    for (name, _) in &names {
        if !text
            .lines()
            .any(|line| line.split_whitespace().next() == Some(name))
        {
            failures.push(format!("ls does not show {name}"));
        }
    }
    let json = ipcring(&["ls", "--json"]);
    failures.extend(judge("ls --json", &json));
    if serde_json::from_slice::<serde_json::Value>(&json.stdout).is_err() {
        failures.push("ls --json: not JSON".to_owned());
    }
    // rm --stale, one name at a time: removes only what is stale.
    for (name, stale) in &names {
        let output = ipcring(&["rm", "--stale", name.as_str()]);
        failures.extend(judge(&format!("rm --stale {name}"), &output));
        let exists = std::fs::symlink_metadata(shm_path(name)).is_ok();
        if let Some(stale) = stale.filter(|&stale| stale == exists) {
            failures.push(format!(
                "rm --stale {name}: {} (stale: {stale}); said {}",
                if exists { "kept" } else { "removed" },
                String::from_utf8_lossy(&output.stdout).trim()
            ));
        }
    }
    // Plain rm removes every name under our prefix, whatever it holds.
    for (name, _) in &names {
        let output = ipcring(&["rm", name.as_str()]);
        failures.extend(judge(&format!("rm {name}"), &output));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn weird_names_and_numbers_get_one_clear_error() {
    let long = "a".repeat(201);
    let mut failures = Vec::new();
    let names: Vec<std::ffi::OsString> = [
        "",
        ".",
        "..",
        "../../etc/passwd",
        "/dev/shm/../../etc/passwd",
        "a/b",
        long.as_str(),
        "sysv:",
        "sysv:0",
        "sysv:0x",
        "sysv:0x1ffffffff",
        "sysv:99999999999999999999",
        "sysv:-0",
        "sysv:+5",
        "sysv: 5",
        "ipcring.ipcring.x",
        "ipcring.",
        "/",
        "\u{202e}gnp.exe",
        "name\nwith-newline",
        "nul",
        "-",
    ]
    .iter()
    .map(|s| std::ffi::OsString::from(*s))
    .chain([std::ffi::OsStr::from_bytes(b"bad\xff\xfeutf8").to_owned()])
    .collect();
    for name in &names {
        for command in ["stat", "rm"] {
            let output = ipcring(&[std::ffi::OsStr::new(command), name.as_os_str()]);
            let what = format!("{command} {name:?}");
            failures.extend(judge(&what, &output));
            if output.status.success() {
                failures.push(format!("{what}: succeeded"));
            }
        }
        let output = ipcring(&[
            std::ffi::OsStr::new("rm"),
            std::ffi::OsStr::new("--stale"),
            name.as_os_str(),
        ]);
        failures.extend(judge(&format!("rm --stale {name:?}"), &output));
    }
    for args in [
        vec!["demo", "--round-trips", "0"],
        vec!["demo", "--round-trips", "-1"],
        vec!["demo", "--round-trips", "99999999999999999999999999"],
        vec!["demo", "--round-trips", "10000001"],
        vec!["bench", "--cpus", "99999999999999999999,1"],
        vec!["bench", "--cpus", "1"],
        vec!["bench", "--cpus", "0,0,0"],
        vec!["bench", "--cpus", "1", "--no-pin"],
        vec!["stat"],
        vec!["rm"],
        vec!["frobnicate"],
    ] {
        let output = ipcring(&args);
        failures.extend(judge(&format!("{args:?}"), &output));
        if output.status.success() {
            failures.push(format!("{args:?}: succeeded"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A SysV segment another program made, full of its own bytes.
fn foreign_sysv(bytes: &[u8]) -> (i32, RemoveSysvKey) {
    let Address::SysV(key) = unique_sysv() else {
        unreachable!()
    };
    let key = key.get();
    // SAFETY: plain syscalls; the attachment is written through a raw
    // pointer within its size, then detached.
    unsafe {
        let id = libc::shmget(key, bytes.len(), libc::IPC_CREAT | libc::IPC_EXCL | 0o600);
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        let at = libc::shmat(id, std::ptr::null(), 0);
        assert_ne!(at as isize, -1);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), at.cast::<u8>(), bytes.len());
        libc::shmdt(at);
    }
    (key, RemoveSysvKey(key))
}

fn sysv_exists(key: i32) -> bool {
    // SAFETY: a lookup only.
    unsafe { libc::shmget(key, 0, 0) >= 0 }
}

#[test]
fn foreign_sysv_segments_are_refused_and_kept() {
    let mut failures = Vec::new();
    let mut rng = Rng(11);
    let random: Vec<u8> = (0..8192).map(|_| rng.next() as u8).collect();
    let mut magic_only = vec![0u8; 8192];
    magic_only[..8].copy_from_slice(b"IPCRING\0");
    let zeros = vec![0u8; 8192];
    for (what, bytes, removable) in [
        ("random", &random, false),
        // Ours, abandoned (its creator, the test, is alive: not ready yet).
        ("magic-only", &magic_only, true),
        // Blank: another program's, or ours not yet written; the creator
        // (this test) lives, so `rm` waits and leaves it.
        ("zeros", &zeros, false),
    ] {
        let (key, _guard) = foreign_sysv(bytes);
        let name = format!("sysv:{:#x}", key as u32);
        let output = ipcring(&["stat", name.as_str()]);
        failures.extend(judge(&format!("stat {what}"), &output));
        let output = ipcring(&["rm", "--stale", name.as_str()]);
        failures.extend(judge(&format!("rm --stale {what}"), &output));
        if !sysv_exists(key) {
            failures.push(format!("rm --stale removed the {what} SysV segment"));
            continue;
        }
        let output = ipcring(&["rm", name.as_str()]);
        failures.extend(judge(&format!("rm {what}"), &output));
        if sysv_exists(key) == removable {
            failures.push(format!(
                "rm of the {what} SysV segment: {} it",
                if removable { "kept" } else { "removed" }
            ));
        }
    }
    let listed = ipcring(&["ls", "--json"]);
    failures.extend(judge("ls --json", &listed));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rm_stale_keeps_an_owned_segment_whose_creator_is_stopped() {
    if let Some(role) = hostile_support::role() {
        let address: Address = hostile_support::env("SEGMENT").parse().unwrap();
        let _segment = Segment::create(&address, &CreateOptions::new(4096).owned(true)).unwrap();
        std::fs::write(hostile_support::env("READY"), "ready").unwrap();
        // SAFETY: stops this process until the test continues or kills it.
        unsafe { libc::raise(libc::SIGSTOP) };
        let _ = role;
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let address = unique_posix("stale-stopped");
    let _cleanup = Cleanup(address.clone());
    let ready = std::env::temp_dir().join(format!("hostile-cli-{}", std::process::id()));
    let _remove = RemoveFile(ready.clone());
    let mut creator = hostile_support::Victim::spawn_with(
        "rm_stale_keeps_an_owned_segment_whose_creator_is_stopped",
        "creator",
        None,
        &[
            ("SEGMENT", address.to_string()),
            ("READY", ready.display().to_string()),
        ],
        false,
    );
    creator.wait_stopped(LIMIT).unwrap();
    let output = ipcring(&["rm", "--stale"]);
    assert!(judge("rm --stale", &output).is_none());
    assert!(
        Segment::inspect(&address).is_ok(),
        "rm --stale removed the owned segment of a live (stopped) creator: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    creator.kill();
    let output = ipcring(&["rm", "--stale", &address.to_string()]);
    assert!(judge("rm --stale", &output).is_none());
    assert!(
        Segment::inspect(&address).is_err(),
        "the dead creator's segment stayed"
    );
    let _ = std::io::stderr().flush();
}

#[test]
fn rm_stale_keeps_segments_it_cannot_validate() {
    let mut failures = Vec::new();
    // (what, layout version, flags): a segment of a later layout whose
    // flags this version does not know; flags bit 0 happens to be set.
    for (what, version, flags) in [
        ("a later layout version", 4u32, 1u32),
        ("unknown flag bits", 3, 0xffff_ffff),
        (
            "a version and flags from random bytes",
            0x9e37_79b9,
            0x7f4a_7c15,
        ),
    ] {
        let address = unique_posix("stale-unvalidated");
        let _cleanup = Cleanup(address.clone());
        drop(Segment::create(&address, &CreateOptions::new(4096)).unwrap());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(shm_path(&address.to_string()))
            .unwrap();
        file.write_all_at(&version.to_le_bytes(), 8).unwrap();
        file.write_all_at(&flags.to_le_bytes(), 64).unwrap();
        let stat = ipcring(&["stat", &address.to_string()]);
        let removed = ipcring(&["rm", "--stale", &address.to_string()]);
        let exists = std::fs::metadata(shm_path(&address.to_string())).is_ok();
        eprintln!(
            "{what}: stat says {:?}; rm --stale says {:?}",
            String::from_utf8_lossy(&stat.stderr).trim(),
            String::from_utf8_lossy(&removed.stdout).trim()
        );
        if !exists {
            failures.push(format!(
                "{what}: removed, though stat cannot read it ({})",
                String::from_utf8_lossy(&stat.stderr).trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn stat_and_ls_survive_a_file_resized_under_them() {
    let address = unique_posix("cli-resize");
    let _cleanup = Cleanup(address.clone());
    drop(Segment::create(&address, &CreateOptions::new(1 << 20)).unwrap());
    let path = shm_path(&address.to_string());
    let full = std::fs::metadata(&path).unwrap().len();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(3);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
                    let len = [0, 4096, full / 2, full, full + 4096][rng.below(5) as usize];
                    let _ = file.set_len(len);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let mut failures = Vec::new();
    for round in 0..40 {
        let args: &[&str] = match round % 3 {
            0 => &["stat", &address.to_string()],
            1 => &["stat", "--json", &address.to_string()],
            _ => &["ls"],
        };
        let output = ipcring(args);
        failures.extend(judge(&format!("{args:?}"), &output));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
