//! Peers SIGKILLed at every named step of their operation (a child stops
//! itself at a failpoint, the test kills it there), on MPMC and
//! many-sender record channels. After each death the survivors and fresh
//! endpoints must keep working within a short time, and nothing committed
//! may be lost or repeated beyond the documented rule: an MPMC item held
//! by a dying receiver may be lost (and is counted in `stats().losses`); a
//! record held by a dying receiver is delivered again.
#![cfg(feature = "failpoints")]

mod common;
mod hostile_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cleanup, unique_posix};
use hostile_support::{Pending, Victim, env, role, run_role};
use ipcring::channel::{ChannelOptions, RecvTimeoutError, mpmc, records};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::Address;

/// How long a child may take to reach its failpoint.
const REACH: Duration = Duration::from_secs(20);
/// How soon after a death the survivors must exchange an item.
const RECOVERY: Duration = Duration::from_millis(200);
/// A bound on every single survivor operation, so nothing waits forever.
const OP: Duration = Duration::from_secs(3);
/// How long a survivor is left blocked behind the stopped victim before
/// the victim is killed.
const BLOCKED_BEFORE_KILL: Duration = Duration::from_millis(300);

const MPMC_SLOTS: usize = 4;
/// What a victim sender sends.
const VICTIM_ITEM: u64 = 0xdead_0000;
/// What the test sends before a victim receiver takes it.
const HELD_ITEM: u64 = 0xbeef_0000;

fn address_from_env() -> Address {
    env("SEGMENT").parse().unwrap()
}

/// The role that reaches `point`, for MPMC and record channels alike.
fn role_for(point: &str) -> &'static str {
    match point {
        p if p.starts_with("mpmc.push") => "send",
        p if p.starts_with("record.reserve") || p == "record.write" || p == "record.commit" => {
            "send"
        }
        p if p.starts_with("mpmc.pop") => "recv",
        "record.consume" | "record.release.marked" | "record.release.zeroed" => "recv",
        "channel.attach.claimed" => "attach",
        "channel.detach.freed" => "detach",
        "channel.reap.marked" | "channel.reap.repaired" => "reap",
        other => panic!("no role reaches {other}"),
    }
}

fn mpmc_child(role: &str) {
    let address = address_from_env();
    match role {
        "send" | "attach" => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            tx.send(VICTIM_ITEM).unwrap();
        }
        "detach" => {
            let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
            tx.send(VICTIM_ITEM).unwrap();
            drop(tx);
        }
        "recv" => {
            let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
            assert_eq!(rx.recv_timeout(REACH).unwrap(), HELD_ITEM);
        }
        // Attaching reaps the dead sender the test left behind.
        "reap" => drop(mpmc::Sender::<u64>::open(&address).unwrap()),
        other => panic!("unknown role {other}"),
    }
}

/// Counts of each item received.
type Tally = BTreeMap<u64, u32>;

fn receive_one(rx: &mut mpmc::Receiver<u64>, tally: &mut Tally) -> Result<u64, RecvTimeoutError> {
    let item = rx.recv_timeout(OP)?;
    *tally.entry(item).or_default() += 1;
    Ok(item)
}

/// Kills an MPMC peer stopped at `point`, then checks the survivors.
fn mpmc_kill_at(test: &str, point: &str) -> Result<Duration, String> {
    let address = unique_posix("kill-mpmc");
    let _cleanup = Cleanup(address.clone());
    let options = ChannelOptions::new();
    let mut rx = mpmc::Receiver::<u64>::create(&address, MPMC_SLOTS, &options).unwrap();
    let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
    let envs = [("SEGMENT", address.to_string())];
    let role = role_for(point);
    if role == "recv" {
        tx.send(HELD_ITEM).unwrap();
    }
    if role == "reap" {
        // A sender that dies holding a claim, for the victim to reap.
        let mut dead = Victim::spawn(test, "send", Some("mpmc.push.claimed"), &envs);
        dead.wait_stopped(REACH)?;
        dead.kill();
    }
    let mut victim = Victim::spawn(test, role, Some(point), &envs);
    victim.wait_stopped(REACH)?;
    // An item sent while the victim is stopped, and a receiver blocked
    // waiting for it (behind the victim's claim, if it holds one).
    tx.send_timeout(1, OP)
        .map_err(|e| format!("send while the victim is stopped: {e:?}"))?;
    let mut pending = Pending::start("first receive", move || {
        let mut tally = Tally::new();
        let result = loop {
            match receive_one(&mut rx, &mut tally) {
                Ok(1) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        (rx, tally, result, Instant::now())
    });
    std::thread::sleep(BLOCKED_BEFORE_KILL);
    // While it is stopped the victim is alive: a claim it holds must
    // still block the receiver, unrepaired.
    let passed_early = pending.is_done();
    let stats_early = tx.stats();
    let killed = Instant::now();
    victim.kill();
    let (mut rx, mut tally, result, received) =
        pending.finish(OP * 2).expect_returned("the first receive");
    result.map_err(|e| format!("first receive after the kill: {e:?} ({tally:?})"))?;
    let recovery = received.saturating_duration_since(killed);
    let holds_claim = matches!(
        point,
        "mpmc.push.claimed" | "mpmc.push.written" | "channel.reap.marked"
    );
    if holds_claim && (passed_early || stats_early.repairs != 0) {
        return Err(format!(
            "the receiver got past the stopped (live) victim's claim before it was killed \
             (repairs {})",
            stats_early.repairs
        ));
    }
    // Several laps of the ring through the dead claim's slot.
    for item in 2..=(4 * MPMC_SLOTS as u64) {
        tx.send_timeout(item, OP)
            .map_err(|e| format!("send {item}: {e:?}"))?;
        receive_one(&mut rx, &mut tally).map_err(|e| format!("receive: {e:?} ({tally:?})"))?;
    }
    // Fresh endpoints on both sides.
    let mut fresh_tx = mpmc::Sender::<u64>::open(&address).map_err(|e| format!("{e}"))?;
    let mut fresh_rx = mpmc::Receiver::<u64>::open(&address).map_err(|e| format!("{e}"))?;
    fresh_tx
        .send_timeout(1000, OP)
        .map_err(|e| format!("fresh send: {e:?}"))?;
    receive_one(&mut fresh_rx, &mut tally).map_err(|e| format!("fresh receive: {e:?}"))?;
    while let Ok(item) = rx.try_recv() {
        *tally.entry(item).or_default() += 1;
    }

    let mut problems = Vec::new();
    for item in (1..=(4 * MPMC_SLOTS as u64)).chain([1000]) {
        if tally.remove(&item) != Some(1) {
            problems.push(format!("item {item} not received exactly once"));
        }
    }
    let losses = rx.stats().losses;
    let held = tally.remove(&HELD_ITEM).unwrap_or(0);
    match (role, point) {
        ("recv", "mpmc.pop.announced") => {
            if held != 1 || losses != 0 {
                problems.push(format!(
                    "an item the dead receiver never claimed: received {held} times, losses {losses}"
                ));
            }
        }
        ("recv", _) => {
            if held + losses as u32 != 1 || held > 1 {
                problems.push(format!(
                    "the dead receiver's item: received {held} times, losses {losses}"
                ));
            }
        }
        _ => {
            if held != 0 || losses != 0 {
                problems.push(format!("unexpected: held {held}, losses {losses}"));
            }
        }
    }
    let victim_items = tally.remove(&VICTIM_ITEM).unwrap_or(0);
    let committed = role == "detach";
    if victim_items > 1 || (committed && victim_items != 1) {
        problems.push(format!(
            "the victim's item received {victim_items} times (committed: {committed})"
        ));
    }
    if !tally.is_empty() {
        problems.push(format!("items nobody sent: {tally:?}"));
    }
    if !problems.is_empty() {
        problems.push(format!("stats {:?}", rx.stats()));
    }
    if problems.is_empty() {
        Ok(recovery)
    } else {
        Err(problems.join("; "))
    }
}

const MPMC_POINTS: &[&str] = &[
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
];

/// Runs `check` for each point; fails listing each point that broke, and
/// each whose survivors took longer than [`RECOVERY`].
fn every_point(points: &[&str], mut check: impl FnMut(&str) -> Result<Duration, String>) {
    let mut failures = Vec::new();
    let mut slow = Vec::new();
    // HOSTILE_POINT=NAME runs one point only, to replay it.
    let only = std::env::var("HOSTILE_POINT").ok();
    for point in points {
        if only.as_deref().is_some_and(|only| only != *point) {
            continue;
        }
        match check(point) {
            Ok(recovery) => {
                eprintln!("{point}: survivors exchanged an item {recovery:?} after the kill");
                if recovery > RECOVERY {
                    slow.push(format!("{point}: {recovery:?}"));
                }
            }
            Err(problem) => {
                eprintln!("{point}: {problem}");
                failures.push(format!("{point}: {problem}"));
            }
        }
    }
    assert!(failures.is_empty(), "broken:\n{}", failures.join("\n"));
    assert!(
        slow.is_empty(),
        "survivors slower than {RECOVERY:?}:\n{}",
        slow.join("\n")
    );
}

#[test]
fn mpmc_survives_a_peer_killed_at_every_failpoint() {
    if let Some(role) = role() {
        return run_role(|| mpmc_child(&role));
    }
    every_point(MPMC_POINTS, |point| {
        mpmc_kill_at("mpmc_survives_a_peer_killed_at_every_failpoint", point)
    });
}

// ---------------------------------------------------------------------------
// Many-sender record channels.

const RECORD_BYTES: usize = 512;

/// A record whose every byte says who sent it and which it is, so a torn
/// or mixed-up record shows.
fn record(sender: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = sender ^ (seq as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(7);
    }
    if len >= 5 {
        bytes[0] = sender;
        bytes[1..5].copy_from_slice(&seq.to_le_bytes());
    }
    bytes
}

const VICTIM: u8 = 0xee;
const SURVIVOR: u8 = 0x11;
/// The victim's record is large enough that, after the first survivor
/// record, it needs a pad to the end of the buffer.
const VICTIM_LEN: usize = 100;
const FIRST_LEN: usize = 240;
const SECOND_LEN: usize = 150;

fn records_child(role: &str) {
    let address = address_from_env();
    match role {
        "send" | "attach" => {
            let mut tx = records::Sender::open(&address).unwrap();
            tx.send(&record(VICTIM, 0, VICTIM_LEN)).unwrap();
        }
        "detach" => {
            let mut tx = records::Sender::open(&address).unwrap();
            tx.send(&record(VICTIM, 0, VICTIM_LEN)).unwrap();
            drop(tx);
        }
        "recv" => {
            let mut rx = records::Receiver::open(&address).unwrap();
            let view = rx.recv_timeout(REACH).unwrap();
            assert_eq!(view.to_vec(), record(SURVIVOR, 0, FIRST_LEN));
        }
        "reap" => drop(records::Sender::open(&address).unwrap()),
        other => panic!("unknown role {other}"),
    }
}

/// Checks one received record: a survivor record in order, or the
/// victim's, whole.
fn judge(bytes: &[u8], next: &mut u32, victim_seen: &mut u32) -> Result<(), String> {
    match bytes.first() {
        Some(&SURVIVOR) if bytes.len() >= 5 => {
            let seq = u32::from_le_bytes(bytes[1..5].try_into().unwrap());
            let len = survivor_len(seq);
            if bytes != record(SURVIVOR, seq, len) {
                return Err(format!("survivor record {seq} is torn"));
            }
            if seq != *next {
                return Err(format!("survivor record {seq} arrived, expected {next}"));
            }
            *next += 1;
            Ok(())
        }
        Some(&VICTIM) => {
            if bytes != record(VICTIM, 0, VICTIM_LEN) {
                return Err("the victim's record is torn".to_owned());
            }
            *victim_seen += 1;
            Ok(())
        }
        _ => Err(format!(
            "a record nobody sent: {} bytes {:?}",
            bytes.len(),
            &bytes[..bytes.len().min(16)]
        )),
    }
}

/// Survivor record lengths: varied, so the buffer wraps at many offsets.
fn survivor_len(seq: u32) -> usize {
    if seq == 0 {
        FIRST_LEN
    } else if seq == 1 {
        SECOND_LEN
    } else {
        [5, 40, 64, 100, 117, 8, 13, 90][seq as usize % 8]
    }
}

fn records_kill_at(test: &str, point: &str) -> Result<Duration, String> {
    let address = unique_posix("kill-recm");
    let _cleanup = Cleanup(address.clone());
    let options = ChannelOptions::new();
    let envs = [("SEGMENT", address.to_string())];
    let role = role_for(point);
    let mut tx =
        records::Sender::create(&address, RECORD_BYTES, ProducerMode::Many, &options).unwrap();
    let mut next_seq: u32;
    let mut expected_next = 0u32;
    let mut victim_seen = 0u32;
    let mut out = Vec::new();
    let mut rx = None;
    if role == "recv" {
        // The victim receiver takes record 0.
        tx.send(&record(SURVIVOR, 0, FIRST_LEN)).unwrap();
        next_seq = 1;
    } else {
        let mut receiver = records::Receiver::open(&address).unwrap();
        // Records 0 and 1 move the tail so that the victim's record needs
        // a pad.
        for seq in 0..2 {
            tx.send(&record(SURVIVOR, seq, survivor_len(seq))).unwrap();
            receiver.recv_into(&mut out).unwrap();
            judge(&out, &mut expected_next, &mut victim_seen)?;
        }
        next_seq = 2;
        rx = Some(receiver);
    }
    if role == "reap" {
        let mut dead = Victim::spawn(test, "send", Some("record.write"), &envs);
        dead.wait_stopped(REACH)?;
        dead.kill();
    }
    let mut victim = Victim::spawn(test, role, Some(point), &envs);
    victim.wait_stopped(REACH)?;
    if point.starts_with("record.release") {
        // The victim had record 0 and was releasing it: it was delivered.
        expected_next = 1;
    }
    // A record sent while the victim is stopped, and a receiver blocked
    // waiting for it (behind the victim's reservation, if it holds one).
    let first = next_seq;
    tx.send_timeout(&record(SURVIVOR, first, survivor_len(first)), OP)
        .map_err(|e| format!("send while the victim is stopped: {e:?}"))?;
    next_seq += 1;
    let takeover = address.clone();
    let mut pending = Pending::start("first receive", move || {
        let mut rx = match rx {
            Some(rx) => rx,
            None => {
                // Takes the role over once the dead receiver is found dead.
                let started = Instant::now();
                loop {
                    match records::Receiver::open(&takeover) {
                        Ok(rx) => break rx,
                        Err(_) if started.elapsed() < OP => {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        Err(e) => return Err(format!("take over: {e}")),
                    }
                }
            }
        };
        let mut seen = 0;
        while expected_next <= first {
            let view = rx.recv_timeout(OP).map_err(|e| format!("receive: {e:?}"))?;
            judge(&view.to_vec(), &mut expected_next, &mut seen)?;
        }
        Ok((rx, expected_next, seen, Instant::now()))
    });
    std::thread::sleep(BLOCKED_BEFORE_KILL);
    // While it is stopped the victim is alive: a reservation it holds
    // must still block the receiver, and its receiver role must not be
    // taken over.
    let passed_early = pending.is_done();
    let repairs_early = tx.stats().repairs;
    let killed = Instant::now();
    victim.kill();
    let (mut rx, next_expected, seen, received) = pending
        .finish(OP * 2)
        .expect_returned("the first receive")?;
    expected_next = next_expected;
    victim_seen += seen;
    let receive = |rx: &mut records::Receiver, expected_next: &mut u32, victim_seen: &mut u32| {
        let view = rx.recv_timeout(OP).map_err(|e| format!("receive: {e:?}"))?;
        judge(&view.to_vec(), expected_next, victim_seen)
    };
    let recovery = received.saturating_duration_since(killed);
    let blocks = matches!(
        point,
        "record.reserve.claimed"
            | "record.reserve.padded"
            | "record.write"
            | "record.commit"
            | "channel.reap.marked"
    ) || role == "recv";
    if blocks && (passed_early || repairs_early != 0) {
        return Err(format!(
            "got past the stopped (live) victim before it was killed (repairs {repairs_early})"
        ));
    }
    // Many laps of the buffer.
    for _ in 0..40 {
        tx.send_timeout(&record(SURVIVOR, next_seq, survivor_len(next_seq)), OP)
            .map_err(|e| format!("send {next_seq}: {e:?}"))?;
        next_seq += 1;
        while expected_next < next_seq {
            receive(&mut rx, &mut expected_next, &mut victim_seen)?;
        }
    }
    // A fresh sender.
    let mut fresh = records::Sender::open(&address).map_err(|e| format!("fresh sender: {e}"))?;
    fresh
        .send_timeout(&record(SURVIVOR, next_seq, survivor_len(next_seq)), OP)
        .map_err(|e| format!("fresh send: {e:?}"))?;
    next_seq += 1;
    while expected_next < next_seq {
        receive(&mut rx, &mut expected_next, &mut victim_seen)?;
    }
    match rx.try_recv() {
        Err(ipcring::channel::TryRecvError::Empty) => {}
        other => return Err(format!("left over: {:?}", other.map(|v| v.len()))),
    }
    let committed = role == "detach";
    if victim_seen > 1 || (committed && victim_seen != 1) {
        return Err(format!(
            "the victim's record arrived {victim_seen} times (committed: {committed})"
        ));
    }
    Ok(recovery)
}

const RECORD_POINTS: &[&str] = &[
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
];

#[test]
fn many_sender_records_survive_a_peer_killed_at_every_failpoint() {
    if let Some(role) = role() {
        return run_role(|| records_child(&role));
    }
    every_point(RECORD_POINTS, |point| {
        records_kill_at(
            "many_sender_records_survive_a_peer_killed_at_every_failpoint",
            point,
        )
    });
}

/// A receiver dies holding an item; then reapers die in the middle of
/// repairing it, one after another. The item is lost once, and counted
/// once; everything else arrives once.
fn mpmc_reapers_die_repairing(test: &str, point: &str, reapers: usize) -> Result<(), String> {
    let address = unique_posix("kill-reapers");
    let _cleanup = Cleanup(address.clone());
    let envs = [("SEGMENT", address.to_string())];
    let mut rx =
        mpmc::Receiver::<u64>::create(&address, MPMC_SLOTS, &ChannelOptions::new()).unwrap();
    let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
    tx.send(HELD_ITEM).unwrap();
    let mut dead = Victim::spawn(test, "recv", Some("mpmc.pop.claimed"), &envs);
    dead.wait_stopped(REACH)?;
    dead.kill();
    for _ in 0..reapers {
        let mut reaper = Victim::spawn(test, "reap", Some(point), &envs);
        reaper.wait_stopped(REACH)?;
        reaper.kill();
    }
    let mut tally = Tally::new();
    for item in 1..=(4 * MPMC_SLOTS as u64) {
        tx.send_timeout(item, OP)
            .map_err(|e| format!("send {item}: {e:?}"))?;
        receive_one(&mut rx, &mut tally).map_err(|e| format!("receive: {e:?}"))?;
    }
    while let Ok(item) = rx.try_recv() {
        *tally.entry(item).or_default() += 1;
    }
    let stats = rx.stats();
    let held = tally.remove(&HELD_ITEM).unwrap_or(0);
    let all_once = (1..=(4 * MPMC_SLOTS as u64)).all(|item| tally.remove(&item) == Some(1));
    if held != 0 || stats.losses != 1 || !all_once || !tally.is_empty() {
        return Err(format!(
            "held item received {held} times, {stats:?}, others once: {all_once}, extra {tally:?}"
        ));
    }
    Ok(())
}

#[test]
fn mpmc_reapers_killed_while_repairing_a_dead_receiver_lose_its_item_once() {
    if let Some(role) = role() {
        return run_role(|| mpmc_child(&role));
    }
    let test = "mpmc_reapers_killed_while_repairing_a_dead_receiver_lose_its_item_once";
    let mut failures = Vec::new();
    for point in ["channel.reap.marked", "channel.reap.repaired"] {
        for reapers in [1, 2] {
            if let Err(problem) = mpmc_reapers_die_repairing(test, point, reapers) {
                failures.push(format!("{point} x{reapers}: {problem}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_receiver_killed_while_parked_leaves_no_sleeper_behind() {
    if role().is_some() {
        let address = address_from_env();
        let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
        rx.set_wait_strategy(ipcring::sync::WaitStrategy::Park);
        let _ = rx.recv();
        return;
    }
    let test = "a_receiver_killed_while_parked_leaves_no_sleeper_behind";
    let address = unique_posix("kill-parked");
    let _cleanup = Cleanup(address.clone());
    let mut tx = mpmc::Sender::<u64>::create(&address, 64, &ChannelOptions::new()).unwrap();
    let segment = ipcring::segment::Segment::open(
        &address,
        &ipcring::segment::OpenOptions::new().register(false),
    )
    .unwrap();
    let sleepers = || {
        hostile_support::peek(&segment, hostile_support::layout::RING_DATA_READY + 8) & 0xffff_ffff
    };
    let mut parked = Victim::spawn_with(
        test,
        "park",
        None,
        &[("SEGMENT", address.to_string())],
        false,
    );
    let started = Instant::now();
    while sleepers() == 0 {
        assert!(started.elapsed() < REACH, "the receiver never parked");
        std::thread::sleep(Duration::from_millis(5));
    }
    parked.kill();
    // The death is noticed (a fresh receiver reaps it) and traffic flows.
    let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
    for item in 0..1000 {
        tx.send_timeout(item, OP).unwrap();
        assert_eq!(rx.recv_timeout(OP).unwrap(), item);
    }
    assert_eq!(
        sleepers(),
        0,
        "a dead receiver still counts as asleep: each send now makes a futex_wake syscall"
    );
}
