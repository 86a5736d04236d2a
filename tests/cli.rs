//! The `ipcring` command line: ls, stat, rm and the demo, run as a user
//! would run them.

mod common;

use std::process::{Command, Output};

use common::{Cleanup, unique_posix, unique_sysv};
use ipcring::segment::{CreateOptions, Segment};
use serde_json::Value;

fn ipcring(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipcring"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn ls_and_stat_show_both_named_backings() {
    let posix = unique_posix("cli-ls");
    let sysv = unique_sysv();
    let _c1 = Cleanup(posix.clone());
    let _c2 = Cleanup(sysv.clone());
    let _a = Segment::create(&posix, &CreateOptions::new(1000).kind(5)).unwrap();
    let _b = Segment::create(&sysv, &CreateOptions::new(2000)).unwrap();

    let listed = stdout_json(&ipcring(&["ls", "--json"]));
    let find = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from ls: {listed}"))
    };
    let item = find(&posix.to_string());
    assert_eq!(item["backing"], "posix");
    assert_eq!(item["kind"], 5);
    assert_eq!(item["user_size"], 1000);
    assert_eq!(item["mode"], "0600");
    assert_eq!(item["creator_pid"], std::process::id());
    assert_eq!(item["participants"][0]["alive"], true);
    let item = find(&sysv.to_string());
    assert_eq!(item["backing"], "sysv");
    assert_eq!(item["user_size"], 2000);

    let table = ipcring(&["ls"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("NAME"));
    assert!(text.contains(&posix.to_string()) && text.contains(&sysv.to_string()));

    let stat = stdout_json(&ipcring(&["stat", &sysv.to_string(), "--json"]));
    assert_eq!(stat["name"], sysv.to_string());
    assert_eq!(stat["total_size"], 4096 + 2000);
    let text = ipcring(&["stat", &posix.to_string()]);
    assert!(
        String::from_utf8(text.stdout)
            .unwrap()
            .contains("participants:   1 alive, 0 dead")
    );
}

#[test]
fn rm_removes_and_reports_missing_names_with_exit_code_1() {
    let present = unique_posix("cli-rm");
    let sysv = unique_sysv();
    let missing = unique_posix("cli-missing");
    let _c1 = Cleanup(present.clone());
    let _c2 = Cleanup(sysv.clone());
    drop(Segment::create(&present, &CreateOptions::new(64)).unwrap());
    drop(Segment::create(&sysv, &CreateOptions::new(64)).unwrap());

    let ok = ipcring(&["rm", &present.to_string(), &sysv.to_string()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(Segment::inspect(&present).is_err());
    assert!(Segment::inspect(&sysv).is_err());

    let failed = ipcring(&["rm", &missing.to_string()]);
    assert_eq!(failed.status.code(), Some(1));
    let message = String::from_utf8(failed.stderr).unwrap();
    assert!(
        message.contains("no segment") && message.contains(&missing.to_string()),
        "{message}"
    );
}

#[test]
fn bad_input_gives_exit_code_and_message_not_a_panic() {
    for args in [
        vec!["stat", "bad name"],
        vec!["stat", "sysv:nothex"],
        vec!["rm", "sysv:0"],
        vec!["stat", "never-created-name-xyz"],
    ] {
        let output = ipcring(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let message = String::from_utf8(output.stderr).unwrap();
        assert!(message.starts_with("ipcring: "), "{args:?}: {message}");
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
    // Usage errors are clap's: exit code 2.
    assert_eq!(ipcring(&["rm"]).status.code(), Some(2));
    assert_eq!(
        ipcring(&["demo", "--round-trips", "0"]).status.code(),
        Some(2)
    );
}

#[test]
fn demo_runs_two_processes_and_cleans_up() {
    let output = ipcring(&["demo", "--round-trips", "300"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    for strategy in ["busy-spin", "spin-then-park", "park"] {
        assert!(text.contains(strategy), "{text}");
    }
    let name = text
        .split("/dev/shm/")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap();
    assert!(
        !std::path::Path::new("/dev/shm").join(name).exists(),
        "demo left {name}"
    );
}

#[test]
fn rm_removes_a_sysv_segment_abandoned_before_its_header() {
    if common::child_role().is_some() {
        // A creator killed between shmget and its first write leaves this.
        let key: i32 = std::env::var("SYSV_KEY").unwrap().parse().unwrap();
        // SAFETY: plain syscall with integer arguments.
        let id = unsafe { libc::shmget(key, 8192, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        assert!(id >= 0);
        return;
    }
    let address = unique_sysv();
    let _cleanup = Cleanup(address.clone());
    let ipcring::segment::Address::SysV(key) = &address else {
        unreachable!()
    };
    common::spawn_child(
        "rm_removes_a_sysv_segment_abandoned_before_its_header",
        "abandon",
        &[("SYSV_KEY", key.get().to_string())],
    )
    .wait_success(std::time::Duration::from_secs(20));
    let output = ipcring(&["rm", &address.to_string()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // SAFETY: plain syscall with integer arguments.
    assert_eq!(unsafe { libc::shmget(key.get(), 0, 0) }, -1, "still there");
}
