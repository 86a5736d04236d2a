//! The `ipcring` command line: ls, stat, rm and the demo, run as a user
//! would run them.

#[path = "../../../tests/common/mod.rs"]
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

/// Child roles for the stale tests: `attach` opens SEGMENT, `own` creates
/// it owned; both say so in the user area and wait to be killed.
fn attach_or_own_until_killed(role: &str) {
    let address: ipcring::segment::Address = std::env::var("SEGMENT").unwrap().parse().unwrap();
    let segment = if role == "own" {
        Segment::create(&address, &CreateOptions::new(64).owned(true)).unwrap()
    } else {
        Segment::open(&address, &ipcring::segment::OpenOptions::new()).unwrap()
    };
    // Release: pairs with the Acquire load in `killed_after`.
    segment
        .view::<std::sync::atomic::AtomicU32>(0)
        .unwrap()
        .store(1, std::sync::atomic::Ordering::Release);
    std::thread::sleep(std::time::Duration::from_secs(60));
}

/// Runs a child in `role` on `address`, waits for its signal, kills it.
fn killed_after(test_name: &str, role: &str, address: &ipcring::segment::Address) -> u32 {
    let mut child = common::spawn_child(test_name, role, &[("SEGMENT", address.to_string())]);
    common::eventually(std::time::Duration::from_secs(20), "the child", || {
        Segment::open(
            address,
            &ipcring::segment::OpenOptions::new().register(false),
        )
        .is_ok_and(|s| {
            s.view::<std::sync::atomic::AtomicU32>(0)
                .unwrap()
                .load(std::sync::atomic::Ordering::Acquire)
                == 1
        })
    });
    let pid = child.pid();
    child.child().kill().unwrap();
    child.wait_code(std::time::Duration::from_secs(20));
    pid
}

#[test]
fn ls_counts_live_and_dead_participants_and_rm_stale_keeps_persistent_data() {
    const NAME: &str = "ls_counts_live_and_dead_participants_and_rm_stale_keeps_persistent_data";
    if let Some(role) = common::child_role() {
        return attach_or_own_until_killed(&role);
    }
    let persistent = unique_posix("cli-kept");
    let owned = unique_posix("cli-owned");
    let _c1 = Cleanup(persistent.clone());
    let _c2 = Cleanup(owned.clone());
    let _segment = Segment::create(&persistent, &CreateOptions::new(64)).unwrap();
    killed_after(NAME, "attach", &persistent);
    let creator_pid = killed_after(NAME, "own", &owned);

    let listed = stdout_json(&ipcring(&["ls", "--json"]));
    let item = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["name"] == persistent.to_string())
        .unwrap();
    assert_eq!(item["participants_alive"], 1);
    assert_eq!(item["participants_dead"], 1);
    assert_eq!(item["owned"], false);
    let item = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["name"] == owned.to_string())
        .unwrap();
    assert_eq!(
        (
            item["participants_alive"].clone(),
            item["participants_dead"].clone()
        ),
        (0.into(), 1.into())
    );
    assert_eq!(item["owned"], true);
    assert_eq!(item["creator_alive"], false);
    let table = String::from_utf8(ipcring(&["ls"]).stdout).unwrap();
    let row = table
        .lines()
        .find(|line| line.starts_with(&persistent.to_string()))
        .unwrap();
    assert!(row.split_whitespace().any(|cell| cell == "1/1"), "{row}");
    let stat = String::from_utf8(ipcring(&["stat", &owned.to_string()]).stdout).unwrap();
    assert!(
        stat.contains("owned by its creator, which is gone"),
        "{stat}"
    );
    let stat = String::from_utf8(ipcring(&["stat", &persistent.to_string()]).stdout).unwrap();
    assert!(stat.contains("lifetime:       persistent"), "{stat}");

    let output = ipcring(&["rm", "--stale", &persistent.to_string()]);
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "nothing stale\n");
    let output = ipcring(&["rm", "--stale", &persistent.to_string(), &owned.to_string()]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("removed {owned}: owned by its creator (pid {creator_pid}), which is gone\n")
    );
    assert!(Segment::inspect(&persistent).is_ok());
    assert!(Segment::inspect(&owned).is_err());
}

#[test]
fn demo_removes_its_segment_and_child_on_sigint_and_sigterm() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::Duration;

    for signal in [libc::SIGINT, libc::SIGTERM] {
        let demo = Command::new(env!("CARGO_BIN_EXE_ipcring"))
            .args(["demo", "--round-trips", "10000000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = demo.id();
        let mut demo = common::ChildGuard(Some(demo));
        let address: ipcring::segment::Address = format!("demo-{pid}").parse().unwrap();
        let _cleanup = Cleanup(address.clone());
        let path = std::path::Path::new("/dev/shm").join(format!("ipcring.demo-{pid}"));
        let children = format!("/proc/{pid}/task/{pid}/children");
        let mut child_pid = None;
        common::eventually(Duration::from_secs(20), "the demo's child", || {
            child_pid = std::fs::read_to_string(&children)
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse::<i32>().ok());
            child_pid.is_some()
        });
        assert!(path.exists());
        // Into the round trips.
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: plain syscall on our own child.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
        let mut status = None;
        common::eventually(Duration::from_secs(20), "the demo to exit", || {
            status = demo.child().try_wait().unwrap();
            status.is_some()
        });
        demo.0 = None;
        // It ends as the signal would have ended it, after cleaning up.
        assert_eq!(status.unwrap().signal(), Some(signal));
        assert!(!path.exists(), "signal {signal} left {}", path.display());
        let child_pid = child_pid.unwrap();
        // SAFETY: signal 0 only checks whether the process exists.
        let child_alive = unsafe { libc::kill(child_pid, 0) } == 0;
        assert!(!child_alive, "the demo's child {child_pid} outlived it");
    }
}
