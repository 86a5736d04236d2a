//! Helpers shared by the integration tests: unique names, cleanup guards,
//! and child processes that re-run this test binary in a role.
#![allow(dead_code)]

pub mod truncate;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipcring::segment::{Address, Segment, SegmentError, SysvKey};

/// The environment variable that tells a re-executed test binary which
/// role to play.
pub const ROLE_VAR: &str = "IPCRING_TEST_ROLE";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A POSIX address no other test (or test run) uses.
pub fn unique_posix(tag: &str) -> Address {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t-{tag}-{}-{n}", std::process::id())
        .parse()
        .unwrap()
}

/// A SysV key no other test uses: the pid and a counter, in a range of
/// keys whose top byte marks them as ours (0x49, 'I').
pub fn unique_sysv() -> Address {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let key = 0x4900_0000u32 | ((std::process::id() & 0xffff) << 8) | (n & 0xff);
    Address::SysV(SysvKey::new(key as i32).unwrap())
}

/// Removes the segment when dropped, so a failing test leaves nothing.
pub struct Cleanup(pub Address);

impl Drop for Cleanup {
    fn drop(&mut self) {
        match Segment::remove(&self.0) {
            Ok(()) | Err(SegmentError::NotFound(_)) => {}
            Err(e) => eprintln!("cleanup of {}: {e}", self.0),
        }
    }
}

/// Removes whatever SysV segment holds a key, ours or not: for segments a
/// test made by hand, which `Segment::remove` may rightly refuse.
pub struct RemoveSysvKey(pub i32);

impl Drop for RemoveSysvKey {
    fn drop(&mut self) {
        // SAFETY: plain syscalls; IPC_RMID takes no buffer.
        unsafe {
            let id = libc::shmget(self.0, 0, 0);
            if id >= 0 {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
}

/// Removes a /dev/shm file we made by hand.
pub struct RemoveFile(pub std::path::PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The role this process plays, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// Starts this test binary again, running only `test_name`, as `role`.
pub fn spawn_child(test_name: &str, role: &str, envs: &[(&str, String)]) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        // The child's own test summary would read like ours; its panics
        // still reach stderr.
        .stdout(std::process::Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    ChildGuard(Some(command.spawn().unwrap()))
}

/// Kills and reaps the child if the test ends before it does.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// Waits for the child, failing the test after `limit`.
    pub fn wait_success(mut self, limit: Duration) {
        let code = self.wait_code(limit);
        assert_eq!(code, Some(0), "child failed");
    }

    /// Waits for the child's exit code, failing the test after `limit`.
    pub fn wait_code(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        let child = self.0.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.0 = None;
                return status.code();
            }
            assert!(
                started.elapsed() < limit,
                "child still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `condition` until it holds, failing the test after `limit`.
pub fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A command running the `ipcring` command line.
///
/// The command line is its own package in the workspace, so only its own
/// tests get `CARGO_BIN_EXE_ipcring`. The library's tests find the binary
/// beside their own (a workspace test run builds both into one target
/// directory), and build it there first when a run of the library's tests
/// alone has not.
pub fn ipcring_cli() -> Command {
    if let Some(path) = option_env!("CARGO_BIN_EXE_ipcring") {
        return Command::new(path);
    }
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let path = BUILT.get_or_init(|| {
        let test = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/<test> -> target/<profile>/ipcring
        let profile_dir = test
            .parent()
            .and_then(|deps| deps.parent())
            .expect("the test binary sits in target/<profile>/deps");
        let binary = profile_dir.join("ipcring");
        if !binary.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "ipcring-cli", "--bin", "ipcring"]);
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo to build the command line");
            assert!(status.success(), "building the ipcring command line failed");
        }
        binary
    });
    Command::new(path)
}

/// What /proc/self/smaps says about the mapping that holds one address.
#[derive(Debug)]
pub struct MappingStats {
    /// Bytes of the mapping (its address range).
    pub size: u64,
    /// Bytes of it mapped in our page tables (`Rss`); huge pages count
    /// in `hugetlb` instead.
    pub resident: u64,
    /// Bytes of huge pages mapped (`Shared_Hugetlb` + `Private_Hugetlb`).
    pub hugetlb: u64,
    /// Our proportional share of its locked bytes (`Locked`).
    pub locked: u64,
    /// The page size backing it (`KernelPageSize`).
    pub page_size: u64,
    /// Whether it is `mlock`ed (`lo` in `VmFlags`).
    pub lock_flag: bool,
}

/// The smaps entry of the mapping that holds `addr`.
pub fn mapping_stats(addr: *const u8) -> MappingStats {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let addr = addr as u64;
    let mut found: Option<MappingStats> = None;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().and_then(|range| {
            let (start, end) = range.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        });
        if let Some((start, end)) = range {
            if found.is_some() {
                break;
            }
            if (start..end).contains(&addr) {
                found = Some(MappingStats {
                    size: end - start,
                    resident: 0,
                    hugetlb: 0,
                    locked: 0,
                    page_size: 0,
                    lock_flag: false,
                });
            }
            continue;
        }
        let Some(stats) = found.as_mut() else {
            continue;
        };
        let kb = |rest: &str| -> u64 {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap()
                * 1024
        };
        if let Some(rest) = line.strip_prefix("Rss:") {
            stats.resident = kb(rest);
        } else if let Some(rest) = line
            .strip_prefix("Shared_Hugetlb:")
            .or_else(|| line.strip_prefix("Private_Hugetlb:"))
        {
            stats.hugetlb += kb(rest);
        } else if let Some(rest) = line.strip_prefix("Locked:") {
            stats.locked = kb(rest);
        } else if let Some(rest) = line.strip_prefix("KernelPageSize:") {
            stats.page_size = kb(rest);
        } else if let Some(rest) = line.strip_prefix("VmFlags:") {
            stats.lock_flag = rest.split_whitespace().any(|flag| flag == "lo");
        }
    }
    found.unwrap_or_else(|| panic!("no mapping holds {addr:#x}"))
}

/// Removes capability `cap` (below 32) from this thread's effective,
/// permitted and inheritable sets: what a test does to act as a process
/// without, say, `CAP_IPC_LOCK`. Capabilities belong to a thread, so the
/// caller acts from this one.
pub fn drop_capability(cap: u32) {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: a header and two data structs, as version 3 of capget takes.
    let got = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(got, 0, "capget");
    data[0].effective &= !(1 << cap);
    data[0].permitted &= !(1 << cap);
    data[0].inheritable &= !(1 << cap);
    // SAFETY: as above; dropping a capability needs no privilege.
    let set = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(set, 0, "capset");
}
