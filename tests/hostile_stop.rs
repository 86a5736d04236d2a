//! Peers SIGSTOPped in the middle of an operation (at a failpoint) while
//! the others carry on for a second, then continued. A stopped process is
//! alive: its claim must not be repaired behind its back, its receiver role
//! must not be taken over, nothing may tear, and once continued its
//! operation completes and everything arrives exactly once.
#![cfg(feature = "failpoints")]

mod common;
mod hostile_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cleanup, unique_posix};
use hostile_support::{Exit, Victim, env, role, run_role};
use ipcring::channel::{
    ChannelError, ChannelOptions, RecvTimeoutError, SendTimeoutError, mpmc, records,
};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::Address;

const REACH: Duration = Duration::from_secs(20);
const OP: Duration = Duration::from_secs(3);
/// How long the victim stays stopped while the others work.
const STOPPED: Duration = Duration::from_secs(1);

const MPMC_SLOTS: usize = 4;
const VICTIM_ITEM: u64 = 0xdead_0000;
const HELD_ITEM: u64 = 0xbeef_0000;
const EXTRA_ITEM: u64 = 0xe000_0000;

fn address_from_env() -> Address {
    env("SEGMENT").parse().unwrap()
}

/// Where a victim receiver writes what it received.
fn write_result(bytes: &[u8]) {
    std::fs::write(env("RESULT"), bytes).unwrap();
}

fn role_for(point: &str) -> &'static str {
    match point {
        p if p.starts_with("mpmc.push") => "send",
        p if p.starts_with("record.reserve") || p == "record.write" || p == "record.commit" => {
            "send"
        }
        p if p.starts_with("mpmc.pop") => "recv",
        "record.consume" | "record.release.marked" | "record.release.zeroed" => "recv",
        "channel.attach.claimed" => "send",
        "channel.detach.freed" => "detach",
        "channel.reap.marked" | "channel.reap.repaired" => "reap",
        other => panic!("no role reaches {other}"),
    }
}

fn mpmc_child(role: &str) {
    let address = address_from_env();
    match role {
        "send" => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            tx.send_timeout(VICTIM_ITEM, OP).unwrap();
        }
        "detach" => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            tx.send_timeout(VICTIM_ITEM, OP).unwrap();
            drop(tx);
        }
        "recv" => {
            let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
            let item = rx.recv_timeout(REACH).unwrap();
            write_result(&item.to_le_bytes());
        }
        "reap" => drop(mpmc::Sender::<u64>::open(&address).unwrap()),
        other => panic!("unknown role {other}"),
    }
}

fn result_file(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hostile-stop-{}-{tag}", std::process::id()))
}

struct RemoveFile(std::path::PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

type Tally = BTreeMap<u64, u32>;

fn mpmc_stop_at(test: &str, point: &str) -> Result<(), String> {
    let address = unique_posix("stop-mpmc");
    let _cleanup = Cleanup(address.clone());
    let result = result_file(&address.to_string());
    let _remove = RemoveFile(result.clone());
    let envs = [
        ("SEGMENT", address.to_string()),
        ("RESULT", result.display().to_string()),
    ];
    let role = role_for(point);
    let mut rx =
        mpmc::Receiver::<u64>::create(&address, MPMC_SLOTS, &ChannelOptions::new()).unwrap();
    let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
    if role == "recv" {
        tx.send(HELD_ITEM).unwrap();
    }
    // The reaper victim repairs a dead sender's claim: once it goes on.
    let mut expected_repairs = 0;
    if role == "reap" {
        let mut dead = Victim::spawn(test, "send", Some("mpmc.push.claimed"), &envs);
        dead.wait_stopped(REACH)?;
        dead.kill();
        expected_repairs = u64::from(point == "channel.reap.repaired");
    }
    let mut victim = Victim::spawn(test, role, Some(point), &envs);
    victim.wait_stopped(REACH)?;
    let stopped = Instant::now();

    // The others work while the victim is stopped.
    let total = 3 * MPMC_SLOTS as u64;
    let mut next = 1u64;
    let mut tally = Tally::new();
    let mut problems = Vec::new();
    while stopped.elapsed() < STOPPED {
        if next <= total {
            match tx.send_timeout(next, Duration::from_millis(50)) {
                Ok(()) => next += 1,
                Err(SendTimeoutError::Timeout(_)) => {}
                Err(e) => problems.push(format!("send during the stop: {e:?}")),
            }
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(item) => *tally.entry(item).or_default() += 1,
            Err(RecvTimeoutError::Timeout) => {}
            Err(e) => problems.push(format!("receive during the stop: {e:?}")),
        }
    }
    // A fresh endpoint reaps on attach: it must leave the live victim be.
    drop(mpmc::Receiver::<u64>::open(&address).map_err(|e| format!("fresh: {e}"))?);
    let during = rx.stats();
    if during.repairs != expected_repairs || during.losses != 0 {
        problems.push(format!(
            "while the victim was stopped: {during:?}, expected {expected_repairs} repairs"
        ));
    }
    let holds_claim = matches!(
        point,
        "mpmc.push.claimed" | "mpmc.push.written" | "channel.reap.marked"
    );
    if holds_claim && !tally.is_empty() {
        problems.push(format!(
            "received past the stopped victim's claim: {tally:?}"
        ));
    }
    if point.starts_with("mpmc.pop")
        && point != "mpmc.pop.announced"
        && tally.contains_key(&HELD_ITEM)
    {
        problems.push("the item the stopped receiver holds was delivered again".to_owned());
    }

    victim.cont();
    if role == "recv" {
        // Something for a continued receiver whose claim came to nothing.
        tx.send_timeout(EXTRA_ITEM, OP)
            .map_err(|e| format!("send after SIGCONT: {e:?}"))?;
    }
    // Finish: send the rest and receive, until the victim is done too.
    let deadline = Instant::now() + OP;
    let mut victim_exit = None;
    loop {
        // A continued receiver victim gets the first go at the items.
        if role != "recv" || victim_exit.is_some() {
            while let Ok(item) = rx.try_recv() {
                *tally.entry(item).or_default() += 1;
            }
        }
        if next <= total {
            match tx.send_timeout(next, Duration::from_millis(20)) {
                Ok(()) => next += 1,
                Err(SendTimeoutError::Timeout(_)) => {}
                Err(e) => return Err(format!("send {next} after SIGCONT: {e:?}")),
            }
        }
        if victim_exit.is_none() {
            victim_exit = victim.wait_exit(Duration::ZERO);
        }
        if next > total && victim_exit.is_some() {
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "after SIGCONT: sent up to {next} of {total}, victim {victim_exit:?}"
            ));
            break;
        }
    }
    if victim_exit.is_some_and(|exit| exit != Exit::Code(0)) {
        problems.push(format!("the continued victim ended with {victim_exit:?}"));
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(item) => *tally.entry(item).or_default() += 1,
            Err(RecvTimeoutError::Timeout) => break,
            Err(e) => return Err(format!("receive after SIGCONT: {e:?}")),
        }
    }
    if let Ok(bytes) = std::fs::read(&result) {
        let item = u64::from_le_bytes(bytes.try_into().unwrap());
        *tally.entry(item).or_default() += 1;
    }
    for item in 1..=total {
        if tally.remove(&item) != Some(1) {
            problems.push(format!("item {item} not received exactly once"));
        }
    }
    let sent_by_victim = matches!(role, "send" | "detach");
    if sent_by_victim && tally.remove(&VICTIM_ITEM) != Some(1) {
        problems.push("the victim's item not received exactly once".to_owned());
    }
    if role == "recv" && tally.remove(&HELD_ITEM) != Some(1) {
        problems.push("the held item not received exactly once".to_owned());
    }
    if role == "recv" && tally.remove(&EXTRA_ITEM) != Some(1) {
        problems.push("the extra item not received exactly once".to_owned());
    }
    if !tally.is_empty() {
        problems.push(format!("unexpected: {tally:?}"));
    }
    let after = rx.stats();
    if after.repairs != u64::from(role == "reap") || after.losses != 0 {
        problems.push(format!("after: {after:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn every_point(points: &[&str], mut check: impl FnMut(&str) -> Result<(), String>) {
    let only = std::env::var("HOSTILE_POINT").ok();
    let mut failures = Vec::new();
    for point in points {
        if only.as_deref().is_some_and(|only| only != *point) {
            continue;
        }
        match check(point) {
            Ok(()) => eprintln!("{point}: held"),
            Err(problem) => {
                eprintln!("{point}: {problem}");
                failures.push(format!("{point}: {problem}"));
            }
        }
    }
    assert!(failures.is_empty(), "broken:\n{}", failures.join("\n"));
}

#[test]
fn mpmc_peer_stopped_at_each_failpoint_is_left_alone_and_finishes() {
    if let Some(role) = role() {
        return run_role(|| mpmc_child(&role));
    }
    every_point(
        &[
            "mpmc.push.announced",
            "mpmc.push.claimed",
            "mpmc.push.written",
            "mpmc.pop.announced",
            "mpmc.pop.claimed",
            "mpmc.pop.read",
            "channel.attach.claimed",
            "channel.detach.freed",
            "channel.reap.marked",
            "channel.reap.repaired",
        ],
        |point| {
            mpmc_stop_at(
                "mpmc_peer_stopped_at_each_failpoint_is_left_alone_and_finishes",
                point,
            )
        },
    );
}

// ---------------------------------------------------------------------------
// Many-sender record channels.

const RECORD_BYTES: usize = 512;
const VICTIM_LEN: usize = 200;

fn victim_record() -> Vec<u8> {
    (0..VICTIM_LEN).map(|i| (i as u8) ^ 0xa5).collect()
}

fn survivor_record(seq: u32) -> Vec<u8> {
    let len = [24usize, 100, 8, 60, 150][seq as usize % 5];
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(3) ^ seq as u8)
        .collect();
    bytes[..4].copy_from_slice(&seq.to_le_bytes());
    bytes
}

fn records_child(role: &str) {
    let address = address_from_env();
    match role {
        "send" => {
            let mut tx = records::Sender::open(&address).unwrap();
            tx.send_timeout(&victim_record(), OP).unwrap();
        }
        "detach" => {
            let mut tx = records::Sender::open(&address).unwrap();
            tx.send_timeout(&victim_record(), OP).unwrap();
            drop(tx);
        }
        "recv" => {
            let mut rx = records::Receiver::open(&address).unwrap();
            let view = rx.recv_timeout(REACH).unwrap();
            write_result(&view.to_vec());
        }
        "reap" => drop(records::Sender::open(&address).unwrap()),
        other => panic!("unknown role {other}"),
    }
}

fn records_stop_at(test: &str, point: &str) -> Result<(), String> {
    let address = unique_posix("stop-recm");
    let _cleanup = Cleanup(address.clone());
    let result = result_file(&address.to_string());
    let _remove = RemoveFile(result.clone());
    let envs = [
        ("SEGMENT", address.to_string()),
        ("RESULT", result.display().to_string()),
    ];
    let role = role_for(point);
    let mut tx = records::Sender::create(
        &address,
        RECORD_BYTES,
        ProducerMode::Many,
        &ChannelOptions::new(),
    )
    .unwrap();
    let mut next = 0u32;
    let mut rx = None;
    if role == "recv" {
        tx.send(&survivor_record(0)).unwrap();
        next = 1;
    } else {
        rx = Some(records::Receiver::open(&address).unwrap());
    }
    // The reaper victim repairs a dead sender's claim: once it goes on.
    let mut expected_repairs = 0;
    if role == "reap" {
        let mut dead = Victim::spawn(test, "send", Some("record.write"), &envs);
        dead.wait_stopped(REACH)?;
        dead.kill();
        expected_repairs = u64::from(point == "channel.reap.repaired");
    }
    let mut victim = Victim::spawn(test, role, Some(point), &envs);
    victim.wait_stopped(REACH)?;
    let stopped = Instant::now();

    let mut problems = Vec::new();
    let mut received: Vec<Vec<u8>> = Vec::new();
    let total = 30u32;
    while stopped.elapsed() < STOPPED {
        if next < total {
            match tx.send_timeout(&survivor_record(next), Duration::from_millis(50)) {
                Ok(()) => next += 1,
                Err(records::RecordSendError::Timeout) => {}
                Err(e) => problems.push(format!("send during the stop: {e:?}")),
            }
        }
        if let Some(rx) = rx.as_mut() {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(view) => received.push(view.to_vec()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(e) => problems.push(format!("receive during the stop: {e:?}")),
            }
        }
    }
    // A fresh receiver must not take the role of a live (stopped) one.
    if role == "recv" {
        match records::Receiver::open(&address) {
            Err(ChannelError::RoleTaken { .. }) => {}
            Ok(_) => problems.push("took over a stopped, live receiver's role".to_owned()),
            Err(e) => problems.push(format!("fresh receiver: {e}")),
        }
    }
    // A fresh sender reaps on attach: it must leave the live victim be.
    drop(records::Sender::open(&address).map_err(|e| format!("fresh sender: {e}"))?);
    let during = tx.stats();
    if during.repairs != expected_repairs {
        problems.push(format!(
            "while the victim was stopped: {during:?}, expected {expected_repairs} repairs"
        ));
    }
    let holds_reservation = matches!(
        point,
        "record.reserve.claimed"
            | "record.reserve.padded"
            | "record.write"
            | "record.commit"
            | "channel.reap.marked"
    );
    if holds_reservation && !received.is_empty() {
        problems.push(format!(
            "received {} records past the stopped victim's reservation",
            received.len()
        ));
    }

    victim.cont();
    // Finish: send the rest and receive, until the victim is done too. A
    // victim receiver holds the role until it exits.
    let deadline = Instant::now() + OP;
    let mut victim_exit = None;
    loop {
        if rx.is_none() && victim_exit.is_some() {
            rx = Some(records::Receiver::open(&address).map_err(|e| format!("receiver: {e}"))?);
        }
        if let Some(rx) = rx.as_mut() {
            while let Ok(view) = rx.try_recv() {
                received.push(view.to_vec());
            }
        }
        if next < total {
            match tx.send_timeout(&survivor_record(next), Duration::from_millis(20)) {
                Ok(()) => next += 1,
                Err(records::RecordSendError::Timeout) => {}
                // The continued receiver victim left; ours is not there yet.
                Err(records::RecordSendError::Disconnected) if rx.is_none() => {}
                Err(e) => return Err(format!("send {next} after SIGCONT: {e:?}")),
            }
        }
        if victim_exit.is_none() {
            victim_exit = victim.wait_exit(Duration::ZERO);
        }
        if next >= total && rx.is_some() {
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "after SIGCONT: sent up to {next} of {total}, victim {victim_exit:?}"
            ));
            break;
        }
    }
    if victim_exit.is_some_and(|exit| exit != Exit::Code(0)) {
        problems.push(format!("the continued victim ended with {victim_exit:?}"));
    }
    let mut victim_got = std::fs::read(&result).ok();
    if let Some(rx) = rx.as_mut() {
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(view) => received.push(view.to_vec()),
                Err(RecvTimeoutError::Timeout) => break,
                Err(e) => return Err(format!("receive after SIGCONT: {e:?}")),
            }
        }
    }
    // Judge: survivor records in order, each once and whole; the victim's
    // record once and whole if it sent one.
    let mut expected = 0u32;
    let mut victims = 0;
    if let Some(bytes) = victim_got.take() {
        if bytes != survivor_record(0) {
            problems.push("the continued receiver got a torn or wrong record".to_owned());
        }
        expected = 1;
    }
    for bytes in &received {
        if bytes == &victim_record() {
            victims += 1;
        } else if bytes == &survivor_record(expected) {
            expected += 1;
        } else {
            problems.push(format!(
                "unexpected record ({} bytes) where survivor record {expected} was due",
                bytes.len()
            ));
            break;
        }
    }
    if expected != total {
        problems.push(format!(
            "survivor records received up to {expected} of {total}"
        ));
    }
    let sent_by_victim = matches!(role, "send" | "detach");
    if victims != u32::from(sent_by_victim) {
        problems.push(format!("the victim's record arrived {victims} times"));
    }
    let after = tx.stats();
    if after.repairs != u64::from(role == "reap") {
        problems.push(format!("after: {after:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn many_sender_record_peer_stopped_at_each_failpoint_is_left_alone_and_finishes() {
    if let Some(role) = role() {
        return run_role(|| records_child(&role));
    }
    every_point(
        &[
            "record.reserve.announced",
            "record.reserve.claimed",
            "record.reserve.padded",
            "record.write",
            "record.commit",
            "record.consume",
            "record.release.marked",
            "record.release.zeroed",
            "channel.attach.claimed",
            "channel.detach.freed",
            "channel.reap.marked",
            "channel.reap.repaired",
        ],
        |point| {
            records_stop_at(
                "many_sender_record_peer_stopped_at_each_failpoint_is_left_alone_and_finishes",
                point,
            )
        },
    );
}
