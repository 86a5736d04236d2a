//! `ipcring bench`'s residency rows where the system will not give what
//! they ask: a locked-memory limit too low for the rings (and no
//! CAP_IPC_LOCK), and huge pages absent or too few. Such a row is skipped
//! with the reason; it never fails the run or crashes it.

use std::os::unix::process::CommandExt;
use std::process::Command;

use serde_json::Value;

const CAP_IPC_LOCK: u32 = 14;

/// The bench, `--smoke --json` over the rows `only` selects.
fn bench(only: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipcring"));
    command.args(["bench", "--smoke", "--json", "--no-pin", "--only", only]);
    command
}

/// Makes `command` run with RLIMIT_MEMLOCK at `bytes` and without
/// CAP_IPC_LOCK, as an ordinary user runs.
fn without_room_to_lock(command: &mut Command, bytes: u64) {
    // SAFETY: the closure runs in the forked child before exec and makes
    // only system calls (setrlimit, prctl, capget, capset), which are
    // async-signal-safe; it touches no lock or allocation.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Root regains every capability of the bounding set at exec:
            // take it out of that set first. Without the right to (not
            // root), there was nothing to drop.
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                CAP_IPC_LOCK as libc::c_ulong,
                0,
                0,
                0,
            );
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            #[repr(C)]
            struct CapHeader {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct CapData {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let mut header = CapHeader {
                version: 0x2008_0522,
                pid: 0,
            };
            let empty = CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            };
            let mut data = [empty; 2];
            if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) == 0 {
                data[0].inheritable &= !(1 << CAP_IPC_LOCK);
                data[0].effective &= !(1 << CAP_IPC_LOCK);
                data[0].permitted &= !(1 << CAP_IPC_LOCK);
                libc::syscall(libc::SYS_capset, &mut header, data.as_ptr());
            }
            Ok(())
        });
    }
}

/// Runs `command`; it must exit 0 with a JSON report on stdout.
fn report(mut command: Command) -> Value {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "a row that cannot have its memory must be skipped, not fail the run: {stderr}\n{stdout}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Every row `report` has, measured or skipped; the skipped ones with
/// their reasons.
fn rows(report: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let measured = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_owned())
        .collect();
    let skipped = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|skip| {
            (
                skip["row"].as_str().unwrap().to_owned(),
                skip["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (measured, skipped)
}

/// With 1 MiB of locked memory and no CAP_IPC_LOCK, the mlock row whose
/// rings take 4 MiB each way is skipped with the limit as its reason, and
/// the run succeeds.
#[test]
fn an_mlock_row_beyond_rlimit_memlock_is_skipped_with_the_reason() {
    let row = "ipcring-spsc-mlock/spin/first-lap/1024";
    let mut command = bench(row);
    without_room_to_lock(&mut command, 1 << 20);
    let report = report(command);
    let (measured, skipped) = rows(&report);
    assert!(measured.is_empty(), "{report}");
    assert_eq!(skipped.len(), 1, "{report}");
    let (id, reason) = &skipped[0];
    assert_eq!(id, row);
    assert!(!reason.starts_with("failed"), "{reason}");
    assert!(reason.contains("RLIMIT_MEMLOCK"), "{reason}");
}

/// The huge page rows that need the most pages: measured where the pool
/// holds them, otherwise skipped with a reason about huge pages (none
/// reserved, or too few for these rings), never failed.
#[test]
fn huge_page_rows_the_pool_cannot_hold_are_skipped_with_the_reason() {
    let report = report(bench("ipcring-spsc-huge/spin/first-lap/1024"));
    let (measured, skipped) = rows(&report);
    assert_eq!(measured.len() + skipped.len(), 1, "{report}");
    for (_, reason) in &skipped {
        assert!(!reason.starts_with("failed"), "{reason}");
        assert!(reason.contains("huge pages"), "{reason}");
    }
}
