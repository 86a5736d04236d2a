//! In a Rust program the SIGBUS disposition ours replaces is std's
//! stack-overflow handler, which, for any signal outside a guard page,
//! resets SIGBUS to SIG_DFL and returns. Forwarding a *sent* SIGBUS to it
//! therefore uninstalls our handler for good: the process survives that
//! signal (as it would without us), but the next truncation of a mapped
//! segment kills it, although `protect` still reports the range protected.

mod common;

use std::time::{Duration, Instant};

use common::truncate::truncate_segment_file_from_child;
use common::{ChildGuard, Cleanup, ROLE_VAR, child_role, unique_posix};
use ipcring::segment::{Address, CreateOptions, Segment};

const USER_SIZE: usize = 64 * 1024;
/// Exit code of a child that found our handler gone after a sent SIGBUS.
const DISPOSITION_CHANGED: i32 = 4;

/// Runs this test binary's `test_name` as `role` (ignored tests included,
/// as this one is until its finding is fixed).
fn spawn_role(test_name: &str, role: &str, envs: &[(&str, String)]) -> ChildGuard {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            test_name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(ROLE_VAR, role)
        .stdout(std::process::Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    ChildGuard(Some(command.spawn().unwrap()))
}

fn sigbus_disposition() -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is a valid value of this C struct.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `action` is writable.
    let ret = unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut action) };
    assert_eq!(ret, 0);
    action.sa_sigaction
}

#[test]
fn a_sent_sigbus_leaves_the_protection_in_place() {
    if child_role().is_some() {
        let std_handler = sigbus_disposition();
        assert!(
            std_handler != libc::SIG_DFL && std_handler != libc::SIG_IGN,
            "std's handler is in place"
        );
        let address: Address = std::env::var("SEGMENT").unwrap().parse().unwrap();
        let segment = Segment::create(&address, &CreateOptions::new(USER_SIZE)).unwrap();
        let ours = sigbus_disposition();
        assert_ne!(ours, std_handler, "our handler is installed");
        // Someone sends us a SIGBUS (kill -BUS); we survive it, as we
        // would without ipcring.
        // SAFETY: raise has no preconditions.
        unsafe { libc::raise(libc::SIGBUS) };
        let after = sigbus_disposition();
        if child_role().as_deref() == Some("check") {
            // Survived the raise; say whether our handler is still there.
            std::process::exit(if after == ours {
                0
            } else {
                DISPOSITION_CHANGED
            });
        }
        // Now the file is truncated and we touch the segment.
        truncate_segment_file_from_child(&address, 0);
        // SAFETY: the user area is mapped and USER_SIZE bytes long; the
        // read faults, which the handler should turn into zeros.
        let byte = unsafe { segment.user_ptr().add(USER_SIZE - 1).read_volatile() };
        assert_eq!(byte, 0);
        assert!(segment.is_broken());
        assert_eq!(after, ours, "the disposition changed after a sent SIGBUS");
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let mut outcomes = Vec::new();
    for role in ["check", "touch"] {
        let address = unique_posix("review-sigbus");
        let _cleanup = Cleanup(address.clone());
        let mut child = spawn_role(
            "a_sent_sigbus_leaves_the_protection_in_place",
            role,
            &[("SEGMENT", address.to_string())],
        );
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.child().try_wait().unwrap() {
                child.0 = None;
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "child hangs");
            std::thread::sleep(Duration::from_millis(5));
        };
        outcomes.push((role, status.code(), status.signal()));
    }
    // Observed: ("check", Some(4), None): the raise was survived and our
    // handler is gone; ("touch", None, Some(7)): killed by the truncation.
    assert_eq!(
        outcomes,
        [("check", Some(0), None), ("touch", Some(0), None)],
        "exit code {DISPOSITION_CHANGED}: SIGBUS reset after a sent signal"
    );
}
