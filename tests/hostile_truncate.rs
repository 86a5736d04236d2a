//! A co-tenant with write access to /dev/shm truncates a channel's file
//! (to zero, to half, or to zero and back) while endpoints are blocked in
//! it or sending in a loop. Nobody may die of SIGBUS; blocked calls should
//! end with an error (any typed one) within a bounded time.
//!
//! The blocked endpoints run in child processes, so that a SIGBUS the
//! library fails to catch shows as a child killed by a signal.

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use common::truncate::truncate_segment_file_from_child;
use common::{Cleanup, unique_posix};
use hostile_support::{Exit, Victim, env, role};
use ipcring::channel::{ChannelOptions, mpmc, records, spsc};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::Address;

/// How long a blocked call may take to end after the truncation.
const NOTICE: Duration = Duration::from_secs(2);
/// And after its peer has left as well.
const AFTER_LEAVE: Duration = Duration::from_secs(2);
const SLOTS: usize = 4;
const RECORD_BYTES: usize = 256;

const KINDS: [&str; 4] = ["spsc", "mpmc", "recs", "recm"];

fn address_from_env() -> Address {
    env("SEGMENT").parse().unwrap()
}

fn report(text: String) {
    std::fs::write(env("RESULT"), text).unwrap();
}

fn ready() {
    std::fs::write(env("READY"), "ready").unwrap();
}

/// A child: opens its endpoint and blocks in one call; reports what the
/// call returned.
fn blocked_child(role: &str) {
    let address = address_from_env();
    let (kind, call) = role.split_once('-').unwrap();
    let outcome = match (kind, call) {
        ("spsc", "recv") => {
            let mut rx = spsc::Receiver::<u64>::open(&address).unwrap();
            ready();
            format!("{:?}", rx.recv())
        }
        ("spsc", "send") => {
            let mut tx = spsc::Sender::<u64>::open(&address).unwrap();
            while tx.try_send(1).is_ok() {}
            ready();
            format!("{:?}", tx.send(2))
        }
        ("mpmc", "recv") => {
            let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
            ready();
            format!("{:?}", rx.recv())
        }
        ("mpmc", "send") => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            while tx.try_send(1).is_ok() {}
            ready();
            format!("{:?}", tx.send(2))
        }
        (_, "recv") => {
            let mut rx = records::Receiver::open(&address).unwrap();
            ready();
            format!("{:?}", rx.recv().map(|view| view.len()))
        }
        (_, "send") => {
            let mut tx = records::Sender::open(&address).unwrap();
            while tx.try_send(&[1; 40]).is_ok() {}
            ready();
            format!("{:?}", tx.send(&[2; 40]))
        }
        other => panic!("unknown role {other:?}"),
    };
    report(outcome);
}

/// The test's endpoint on the other side; it keeps that side alive until
/// dropped.
type Peer = Box<dyn std::any::Any>;

fn create(kind: &str, call: &str, address: &Address) -> Peer {
    let options = ChannelOptions::new();
    let recv = call == "recv";
    match kind {
        "spsc" if recv => Box::new(spsc::Sender::<u64>::create(address, SLOTS, &options).unwrap()),
        "spsc" => Box::new(spsc::Receiver::<u64>::create(address, SLOTS, &options).unwrap()),
        "mpmc" if recv => Box::new(mpmc::Sender::<u64>::create(address, SLOTS, &options).unwrap()),
        "mpmc" => Box::new(mpmc::Receiver::<u64>::create(address, SLOTS, &options).unwrap()),
        _ => {
            let mode = if kind == "recs" {
                ProducerMode::Single
            } else {
                ProducerMode::Many
            };
            if recv {
                Box::new(records::Sender::create(address, RECORD_BYTES, mode, &options).unwrap())
            } else {
                Box::new(records::Receiver::create(address, RECORD_BYTES, mode, &options).unwrap())
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    /// `ftruncate` to 0.
    ToZero,
    /// To half the file.
    ToHalf,
    /// To 0 and straight back to the original size.
    ZeroThenRegrow,
}

fn file_len(address: &Address) -> u64 {
    std::fs::metadata(common::truncate::segment_file(address))
        .unwrap()
        .len()
}

fn cut(address: &Address, how: Cut) {
    let len = file_len(address);
    match how {
        Cut::ToZero => truncate_segment_file_from_child(address, 0),
        Cut::ToHalf => truncate_segment_file_from_child(address, len / 2),
        Cut::ZeroThenRegrow => {
            truncate_segment_file_from_child(address, 0);
            truncate_segment_file_from_child(address, len);
        }
    }
}

fn wait_file(path: &std::path::Path, limit: Duration) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return Some(text);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// One blocked call, one cut; returns a problem if it crashed, panicked or
/// never returned.
fn scenario(test: &str, kind: &str, call: &str, how: Cut) -> Result<String, String> {
    let address = unique_posix("trunc-block");
    let _cleanup = Cleanup(address.clone());
    let tag = format!("{}-{}", std::process::id(), address);
    let ready_file = std::env::temp_dir().join(format!("hostile-ready-{tag}"));
    let result_file = std::env::temp_dir().join(format!("hostile-result-{tag}"));
    let _r1 = common::RemoveFile(ready_file.clone());
    let _r2 = common::RemoveFile(result_file.clone());
    let peer = create(kind, call, &address);
    let mut child = Victim::spawn_with(
        test,
        &format!("{kind}-{call}"),
        None,
        &[
            ("SEGMENT", address.to_string()),
            ("READY", ready_file.display().to_string()),
            ("RESULT", result_file.display().to_string()),
        ],
        false,
    );
    wait_file(&ready_file, Duration::from_secs(20)).ok_or("the child never got ready")?;
    std::thread::sleep(Duration::from_millis(200));
    cut(&address, how);
    if let Some(exit) = child.wait_exit(NOTICE) {
        let returned = std::fs::read_to_string(&result_file).unwrap_or_default();
        return match exit {
            Exit::Code(0) => Ok(format!("returned {returned}")),
            other => Err(format!("the blocked child ended with {other:?}")),
        };
    }
    drop(peer);
    match child.wait_exit(AFTER_LEAVE) {
        Some(Exit::Code(0)) => {
            let returned = std::fs::read_to_string(&result_file).unwrap_or_default();
            Err(format!(
                "returned ({returned}) only after its peer left, and not on its own"
            ))
        }
        Some(other) => Err(format!("the blocked child ended with {other:?}")),
        None => Err("still blocked after the truncation and its peer leaving".to_owned()),
    }
}

fn check_all(test: &str, how: Cut) {
    let mut failures = Vec::new();
    for kind in KINDS {
        for call in ["recv", "send"] {
            match scenario(test, kind, call, how) {
                Ok(text) => eprintln!("{how:?}: {kind} blocked in {call}: {text}"),
                Err(problem) => {
                    eprintln!("{how:?}: {kind} blocked in {call}: {problem}");
                    failures.push(format!("{kind} {call}: {problem}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{how:?}: blocked calls that did not end:\n{}",
        failures.join("\n")
    );
}

#[test]
fn truncating_to_zero_ends_blocked_calls() {
    if let Some(role) = role() {
        return blocked_child(&role);
    }
    check_all("truncating_to_zero_ends_blocked_calls", Cut::ToZero);
}

#[test]
fn truncating_to_half_ends_blocked_calls() {
    if let Some(role) = role() {
        return blocked_child(&role);
    }
    check_all("truncating_to_half_ends_blocked_calls", Cut::ToHalf);
}

#[test]
fn truncate_then_regrow_ends_blocked_calls() {
    if let Some(role) = role() {
        return blocked_child(&role);
    }
    check_all(
        "truncate_then_regrow_ends_blocked_calls",
        Cut::ZeroThenRegrow,
    );
}

// ---------------------------------------------------------------------------
// Endpoints sending and receiving in a loop while the file is cut.

fn looping_child(role: &str) {
    let address = address_from_env();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut ok = 0u64;
    let mut last_error = None;
    match role {
        "mpmc-send" => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            ready();
            while Instant::now() < deadline {
                match tx.send_timeout(ok, Duration::from_millis(20)) {
                    Ok(()) => ok += 1,
                    Err(e) => last_error = Some(format!("{e:?}")),
                }
            }
        }
        "mpmc-recv" => {
            let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
            ready();
            while Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(_) => ok += 1,
                    Err(e) => last_error = Some(format!("{e:?}")),
                }
            }
        }
        "recm-send" => {
            let mut tx = records::Sender::open(&address).unwrap();
            ready();
            while Instant::now() < deadline {
                match tx.send_timeout(&[7; 33], Duration::from_millis(20)) {
                    Ok(()) => ok += 1,
                    Err(e) => last_error = Some(format!("{e:?}")),
                }
            }
        }
        "recm-recv" => {
            let mut rx = records::Receiver::open(&address).unwrap();
            ready();
            while Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(view) => {
                        assert_eq!(view.to_vec(), [7; 33], "a torn record");
                        ok += 1;
                    }
                    Err(e) => last_error = Some(format!("{e:?}")),
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
    report(format!("{ok} ok, last error {last_error:?}"));
}

#[test]
fn endpoints_in_a_loop_survive_truncation() {
    if let Some(role) = role() {
        return looping_child(&role);
    }
    let test = "endpoints_in_a_loop_survive_truncation";
    let mut failures = Vec::new();
    for kind in ["mpmc", "recm"] {
        for how in [Cut::ToZero, Cut::ToHalf, Cut::ZeroThenRegrow] {
            let address = unique_posix("trunc-loop");
            let _cleanup = Cleanup(address.clone());
            let options = ChannelOptions::new();
            let _segment = if kind == "mpmc" {
                mpmc::create_segment::<u64>(Some(&address), 64, &options).unwrap()
            } else {
                records::create_segment(Some(&address), 4096, ProducerMode::Many, &options).unwrap()
            };
            let mut children = Vec::new();
            for call in ["send", "recv"] {
                let tag = format!("{}-{address}-{call}", std::process::id());
                let ready_file = std::env::temp_dir().join(format!("hostile-ready-{tag}"));
                let result_file = std::env::temp_dir().join(format!("hostile-result-{tag}"));
                let child = Victim::spawn_with(
                    test,
                    &format!("{kind}-{call}"),
                    None,
                    &[
                        ("SEGMENT", address.to_string()),
                        ("READY", ready_file.display().to_string()),
                        ("RESULT", result_file.display().to_string()),
                    ],
                    false,
                );
                children.push((
                    call,
                    child,
                    common::RemoveFile(ready_file),
                    common::RemoveFile(result_file),
                ));
            }
            for (_, _, ready_file, _) in &children {
                wait_file(&ready_file.0, Duration::from_secs(20)).expect("child not ready");
            }
            std::thread::sleep(Duration::from_millis(300));
            cut(&address, how);
            for (call, mut child, _, result_file) in children {
                let exit = child.wait_exit(Duration::from_secs(10));
                let text = std::fs::read_to_string(&result_file.0).unwrap_or_default();
                eprintln!("{kind} {how:?} {call}: {exit:?}: {text}");
                if exit != Some(Exit::Code(0)) {
                    failures.push(format!("{kind} {how:?} {call}: {exit:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// One operation of an endpoint, reporting what it returned.
type Call = Box<dyn FnMut() -> String>;

#[test]
fn a_send_into_a_truncated_channel_is_not_reported_as_sent() {
    let mut problems = Vec::new();
    for kind in ["spsc", "mpmc", "recm"] {
        let address = unique_posix("trunc-send");
        let _cleanup = Cleanup(address.clone());
        let options = ChannelOptions::new();
        // Two endpoints of this process, each with its own mapping.
        let (mut send, mut recv): (Call, Call) = match kind {
            "spsc" => {
                let mut rx = spsc::Receiver::<u64>::create(&address, SLOTS, &options).unwrap();
                let mut tx = spsc::Sender::<u64>::open(&address).unwrap();
                (
                    Box::new(move || {
                        format!("{:?}", tx.send_timeout(7, Duration::from_millis(300)))
                    }),
                    Box::new(move || format!("{:?}", rx.recv_timeout(Duration::from_millis(300)))),
                )
            }
            "mpmc" => {
                let mut rx = mpmc::Receiver::<u64>::create(&address, SLOTS, &options).unwrap();
                let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
                (
                    Box::new(move || {
                        format!("{:?}", tx.send_timeout(7, Duration::from_millis(300)))
                    }),
                    Box::new(move || format!("{:?}", rx.recv_timeout(Duration::from_millis(300)))),
                )
            }
            _ => {
                let mut rx =
                    records::Receiver::create(&address, RECORD_BYTES, ProducerMode::Many, &options)
                        .unwrap();
                let mut tx = records::Sender::open(&address).unwrap();
                (
                    Box::new(move || {
                        format!("{:?}", tx.send_timeout(&[7; 8], Duration::from_millis(300)))
                    }),
                    Box::new(move || {
                        format!(
                            "{:?}",
                            rx.recv_timeout(Duration::from_millis(300))
                                .map(|v| v.to_vec())
                        )
                    }),
                )
            }
        };
        truncate_segment_file_from_child(&address, 0);
        let sent = send();
        let received = recv();
        eprintln!("{kind}: after truncation, send: {sent}; receive: {received}");
        if sent.starts_with("Ok") {
            problems.push(format!(
                "{kind}: send reported Ok, and the receiver got {received}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
