//! Crash behaviour across real processes: a child stops itself at a named
//! step of an operation (of a channel, or of a byte stream) (a failpoint: `IPCRING_FAILPOINT=NAME`), the parent
//! sees it stopped and SIGKILLs it exactly there, then checks what the
//! survivors see. docs/crash-behavior.md is the matrix these tests drive.
//! The same stop without the kill (SIGCONT later) shows that a stopped peer
//! is never repaired behind its back.
#![cfg(feature = "failpoints")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::io::Write;

use common::{ChildGuard, Cleanup, child_role, spawn_child, unique_posix};
use ipcring::channel::{
    ChannelOptions, RecvTimeoutError, TryRecvError, mpmc, records, spsc, stats, stream,
};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{Address, OpenOptions, Segment};

const LIMIT: Duration = Duration::from_secs(10);
/// How long survivors may take to notice a death and repair after it. The
/// design bound is 200 ms (a 100 ms wait slice plus a 50 ms reap interval);
/// the tests allow more so that a loaded machine does not fail them, and
/// print what they measured.
const REPAIR_LIMIT: Duration = Duration::from_secs(2);

fn address_from_env() -> Address {
    std::env::var("CHANNEL").unwrap().parse().unwrap()
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = &stat[stat.rfind(')')? + 2..];
            after.chars().next()
        })
        == Some('T')
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory effects; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// Starts `test` again as `role`, armed to stop at `failpoint`, and waits
/// until it has stopped there.
fn stopped_at(test: &str, role: &str, failpoint: &str, address: &Address) -> ChildGuard {
    let mut child = spawn_child(
        test,
        role,
        &[
            ("CHANNEL", address.to_string()),
            ("IPCRING_FAILPOINT", failpoint.to_string()),
        ],
    );
    let pid = child.pid();
    let started = Instant::now();
    while !is_stopped(pid) {
        if let Some(status) = child.child().try_wait().unwrap() {
            panic!("{role} exited ({status}) before reaching {failpoint}");
        }
        assert!(
            started.elapsed() < LIMIT,
            "{role} never reached {failpoint}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

/// SIGKILLs a stopped child and reaps it.
fn kill(mut child: ChildGuard) {
    signal(child.pid(), libc::SIGKILL);
    child.wait_code(LIMIT);
}

fn channel_stats(address: &Address) -> ipcring::channel::ChannelStats {
    let segment = Segment::open(address, &OpenOptions::new().read_only()).unwrap();
    stats(&segment).unwrap()
}

const MPMC_PUSH: [&str; 3] = [
    "mpmc.push.announced",
    "mpmc.push.claimed",
    "mpmc.push.written",
];

/// An MPMC sender killed at each step of a send: the receiver gets what
/// the live sender sent, never the dead one's unpublished item, within the
/// repair bound; a claim that was made is counted as repaired; fresh
/// endpoints work afterwards.
#[test]
fn mpmc_sender_killed_at_each_step() {
    if let Some(role) = child_role() {
        assert_eq!(role, "sender");
        let mut tx = mpmc::Sender::<u64>::open(&address_from_env()).unwrap();
        tx.send(1000).unwrap();
        return;
    }
    for failpoint in MPMC_PUSH {
        let address = unique_posix("crash-mpmc-tx");
        let _cleanup = Cleanup(address.clone());
        let mut rx = mpmc::Receiver::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
        let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
        let child = stopped_at(
            "mpmc_sender_killed_at_each_step",
            "sender",
            failpoint,
            &address,
        );
        tx.send(1).unwrap();
        // The receiver is already asleep, stuck behind the claim, when the
        // sender dies.
        let receiving = std::thread::spawn(move || {
            let got = rx.recv_timeout(LIMIT);
            (got, Instant::now(), rx)
        });
        std::thread::sleep(Duration::from_millis(250));
        kill(child);
        let killed = Instant::now();
        let (got, at, mut rx) = receiving.join().unwrap();
        assert_eq!(got, Ok(1), "{failpoint}");
        let took = at.saturating_duration_since(killed);
        assert!(took < REPAIR_LIMIT, "{failpoint}: {took:?}");
        eprintln!(
            "{failpoint}: the blocked receiver got past the dead claim {took:?} after the kill"
        );
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{failpoint}");
        let claimed = failpoint != "mpmc.push.announced";
        assert_eq!(channel_stats(&address).repairs, u64::from(claimed));
        assert_eq!(channel_stats(&address).losses, 0);
        // `ipcring stat` shows the same counters.
        let stat = common::ipcring_cli()
            .args(["stat", &address.to_string(), "--json"])
            .output()
            .unwrap();
        assert!(stat.status.success());
        let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
        assert_eq!(stat["repairs"], u64::from(claimed), "{failpoint}");
        assert_eq!(stat["losses"], 0, "{failpoint}");
        drop((rx, tx));
        let mut fresh_tx = mpmc::Sender::<u64>::open(&address).unwrap();
        let mut fresh_rx = mpmc::Receiver::<u64>::open(&address).unwrap();
        for i in 0..10 {
            fresh_tx.send(i).unwrap();
            assert_eq!(fresh_rx.recv_timeout(LIMIT), Ok(i));
        }
    }
}

/// An MPMC receiver killed at each step of a receive: an item it had
/// claimed is dropped and counted as lost (at most once), nothing else is
/// lost or repeated, and the ring fills up again.
#[test]
fn mpmc_receiver_killed_at_each_step() {
    if let Some(role) = child_role() {
        assert_eq!(role, "receiver");
        let mut rx = mpmc::Receiver::<u64>::open(&address_from_env()).unwrap();
        let _ = rx.recv();
        return;
    }
    for failpoint in ["mpmc.pop.announced", "mpmc.pop.claimed", "mpmc.pop.read"] {
        let address = unique_posix("crash-mpmc-rx");
        let _cleanup = Cleanup(address.clone());
        let mut tx = mpmc::Sender::<u64>::create(&address, 2, &ChannelOptions::new()).unwrap();
        let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
        tx.send(7).unwrap();
        tx.send(8).unwrap();
        let child = stopped_at(
            "mpmc_receiver_killed_at_each_step",
            "receiver",
            failpoint,
            &address,
        );
        kill(child);
        // The ring was full; the sender gets room once the dead receiver's
        // slot is repaired (or at once, if it had claimed nothing and we
        // receive first).
        let claimed = failpoint != "mpmc.pop.announced";
        let mut received = Vec::new();
        if !claimed {
            received.push(rx.recv_timeout(LIMIT).unwrap());
        }
        let killed = Instant::now();
        tx.send_timeout(9, REPAIR_LIMIT).unwrap();
        eprintln!(
            "{failpoint}: the sender had room {:?} after the kill",
            killed.elapsed()
        );
        while let Ok(item) = rx.try_recv() {
            received.push(item);
        }
        let expected: &[u64] = if claimed { &[8, 9] } else { &[7, 8, 9] };
        assert_eq!(received, expected, "{failpoint}");
        let stats = channel_stats(&address);
        assert_eq!(stats.losses, u64::from(claimed), "{failpoint}");
        assert_eq!(stats.repairs, u64::from(claimed), "{failpoint}");
    }
}

const RECORD_SEND: [&str; 5] = [
    "record.reserve.announced",
    "record.reserve.claimed",
    "record.reserve.padded",
    "record.write",
    "record.commit",
];

/// A many-producer record sender killed at each step of a send, with and
/// without a pad before its record: the receiver passes over the dead
/// reservation and gets the live sender's record whole.
#[test]
fn record_sender_killed_at_each_step() {
    if let Some(role) = child_role() {
        assert_eq!(role, "sender");
        let mut tx = records::Sender::open(&address_from_env()).unwrap();
        tx.send(&[0xdd; 40]).unwrap();
        return;
    }
    for failpoint in RECORD_SEND {
        for lead in [0usize, 224] {
            let address = unique_posix("crash-rec-tx");
            let _cleanup = Cleanup(address.clone());
            let options = ChannelOptions::new();
            let mut rx =
                records::Receiver::create(&address, 256, ProducerMode::Many, &options).unwrap();
            let mut tx = records::Sender::open(&address).unwrap();
            let mut out = Vec::new();
            // `lead` bytes of records first, so the next one needs a pad.
            for len in if lead > 0 { vec![92, 92, 8] } else { vec![] } {
                tx.send(&vec![1; len]).unwrap();
                assert_eq!(rx.recv_into(&mut out).unwrap(), len);
            }
            let child = stopped_at(
                "record_sender_killed_at_each_step",
                "sender",
                failpoint,
                &address,
            );
            tx.send(b"after").unwrap();
            kill(child);
            let killed = Instant::now();
            let view = rx.recv_timeout(REPAIR_LIMIT).unwrap();
            assert_eq!(view.to_vec(), b"after", "{failpoint} lead {lead}");
            drop(view);
            eprintln!(
                "{failpoint} (lead {lead}): the receiver got past the dead reservation {:?} after the kill",
                killed.elapsed()
            );
            assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
            let claimed = failpoint != "record.reserve.announced";
            assert_eq!(channel_stats(&address).repairs, u64::from(claimed));
            drop((rx, tx));
            let mut fresh_tx = records::Sender::open(&address).unwrap();
            let mut fresh_rx = records::Receiver::open(&address).unwrap();
            for i in 0..20u8 {
                fresh_tx.send(&[i; 33]).unwrap();
                assert_eq!(fresh_rx.recv_into(&mut out).unwrap(), 33);
                assert_eq!(out, [i; 33]);
            }
        }
    }
}

/// A record receiver killed at each step of receiving and releasing: its
/// successor gets the record again if the release had not begun (at least
/// once), and the next one if it had (at most once for the one it held).
#[test]
fn record_receiver_killed_at_each_step() {
    if let Some(role) = child_role() {
        assert_eq!(role, "receiver");
        let mut rx = records::Receiver::open(&address_from_env()).unwrap();
        let mut out = Vec::new();
        let _ = rx.recv_into(&mut out);
        return;
    }
    for (failpoint, expected) in [
        ("record.consume", &[b"one", b"two"][..]),
        ("record.release.marked", &[b"two"][..]),
        ("record.release.zeroed", &[b"two"][..]),
    ] {
        let address = unique_posix("crash-rec-rx");
        let _cleanup = Cleanup(address.clone());
        let options = ChannelOptions::new();
        let mut tx = records::Sender::create(&address, 256, ProducerMode::Many, &options).unwrap();
        tx.send(b"one").unwrap();
        tx.send(b"two").unwrap();
        let child = stopped_at(
            "record_receiver_killed_at_each_step",
            "receiver",
            failpoint,
            &address,
        );
        kill(child);
        // The successor takes over the dead receiver's role.
        let mut rx = records::Receiver::open(&address).unwrap();
        let mut got = Vec::new();
        let mut out = Vec::new();
        while let Ok(len) = rx.try_recv_into(&mut out) {
            got.push(out[..len].to_vec());
        }
        let expected: Vec<Vec<u8>> = expected.iter().map(|r| r.to_vec()).collect();
        assert_eq!(got, expected, "{failpoint}");
    }
}

/// Runs `f` on a thread and fails the test if it has not returned within
/// `limit`: for blocking calls without a timeout.
fn returns_within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result
        .recv_timeout(limit)
        .expect("a blocking call did not return")
}

/// A sender killed between the steps of attaching, and one killed between
/// the steps of leaving: a receiver blocked with no timeout still learns
/// that every sender is gone.
#[test]
fn sender_killed_while_attaching_or_leaving_still_disconnects() {
    if let Some(role) = child_role() {
        let tx = mpmc::Sender::<u64>::open(&address_from_env()).unwrap();
        assert_eq!(role, "sender");
        drop(tx);
        return;
    }
    for failpoint in ["channel.attach.claimed", "channel.detach.freed"] {
        let address = unique_posix("crash-attach");
        let _cleanup = Cleanup(address.clone());
        let rx = mpmc::Receiver::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
        let child = stopped_at(
            "sender_killed_while_attaching_or_leaving_still_disconnects",
            "sender",
            failpoint,
            &address,
        );
        kill(child);
        let mut rx = rx;
        let result = returns_within(LIMIT, move || rx.recv());
        assert_eq!(
            result,
            Err(ipcring::channel::RecvError::Disconnected),
            "{failpoint}"
        );
    }
}

/// A survivor killed while reaping a dead sender (after marking its slot,
/// and after repairing its claim): the next survivor takes the reap over,
/// and the channel works on.
#[test]
fn reaper_killed_mid_reap_is_taken_over() {
    if let Some(role) = child_role() {
        let address = address_from_env();
        match role.as_str() {
            "sender" => {
                let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
                tx.send(1000).unwrap();
            }
            "reaper" => {
                // Stuck behind the dead sender's claim, it reaps.
                let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
                let _ = rx.recv_timeout(LIMIT);
            }
            _ => unreachable!(),
        }
        return;
    }
    for failpoint in ["channel.reap.marked", "channel.reap.repaired"] {
        let address = unique_posix("crash-reap");
        let _cleanup = Cleanup(address.clone());
        let mut tx = mpmc::Sender::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
        let dead = stopped_at(
            "reaper_killed_mid_reap_is_taken_over",
            "sender",
            "mpmc.push.claimed",
            &address,
        );
        tx.send(1).unwrap();
        kill(dead);
        let reaper = stopped_at(
            "reaper_killed_mid_reap_is_taken_over",
            "reaper",
            failpoint,
            &address,
        );
        kill(reaper);
        let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
        assert_eq!(rx.recv_timeout(REPAIR_LIMIT), Ok(1), "{failpoint}");
        assert_eq!(channel_stats(&address).repairs, 1, "{failpoint}");
    }
}

/// A sender stopped (not killed) in the middle of a send is alive: its
/// claim is not repaired while it is stopped, and when it continues its
/// item arrives whole and in its place.
#[test]
fn stopped_sender_is_not_repaired_behind_its_back() {
    if let Some(role) = child_role() {
        let address = address_from_env();
        match role.as_str() {
            "mpmc" => {
                let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
                tx.send(1000).unwrap();
            }
            "records" => {
                let mut tx = records::Sender::open(&address).unwrap();
                tx.send(&[0xee; 64]).unwrap();
            }
            _ => unreachable!(),
        }
        return;
    }
    let test = "stopped_sender_is_not_repaired_behind_its_back";
    // MPMC, stopped between claiming and publishing.
    let address = unique_posix("crash-stop-mpmc");
    let _cleanup = Cleanup(address.clone());
    let mut rx = mpmc::Receiver::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
    let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
    let mut child = stopped_at(test, "mpmc", "mpmc.push.written", &address);
    tx.send(1).unwrap();
    // Longer than several wait slices and reap intervals.
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(600)),
        Err(RecvTimeoutError::Timeout)
    );
    signal(child.pid(), libc::SIGCONT);
    assert_eq!(rx.recv_timeout(LIMIT), Ok(1000));
    assert_eq!(rx.recv_timeout(LIMIT), Ok(1));
    assert_eq!(child.wait_code(LIMIT), Some(0));
    assert_eq!(channel_stats(&address).repairs, 0);

    // Records, stopped while writing the payload.
    let address = unique_posix("crash-stop-rec");
    let _cleanup = Cleanup(address.clone());
    let options = ChannelOptions::new();
    let mut rx = records::Receiver::create(&address, 256, ProducerMode::Many, &options).unwrap();
    let mut tx = records::Sender::open(&address).unwrap();
    let mut child = stopped_at(test, "records", "record.write", &address);
    tx.send(b"after").unwrap();
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(600)),
        Err(RecvTimeoutError::Timeout)
    ));
    signal(child.pid(), libc::SIGCONT);
    assert_eq!(rx.recv_timeout(LIMIT).unwrap().to_vec(), [0xee; 64]);
    assert_eq!(rx.recv_timeout(LIMIT).unwrap().to_vec(), b"after");
    assert_eq!(child.wait_code(LIMIT), Some(0));
    assert_eq!(channel_stats(&address).repairs, 0);
}

/// A live holder whose pid check would call it dead (as a process in
/// another pid namespace can look) keeps its exclusive role: liveness comes
/// from the kernel-kept lock on the segment's file.
#[test]
fn a_live_holder_that_looks_dead_by_pid_keeps_its_role() {
    if child_role().is_some() {
        let _tx = spsc::Sender::<u64>::open(&address_from_env()).unwrap();
        std::thread::sleep(LIMIT * 2);
        return;
    }
    let address = unique_posix("crash-alive");
    let _cleanup = Cleanup(address.clone());
    let rx = spsc::Receiver::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
    let mut child = spawn_child(
        "a_live_holder_that_looks_dead_by_pid_keeps_its_role",
        "holder",
        &[("CHANNEL", address.to_string())],
    );
    // The producer table's slot 0 is the 8-byte word after `ready` and
    // `presence`, at offset 16 of the user area.
    let slot = rx.segment().view::<AtomicU64>(16).unwrap();
    common::eventually(LIMIT, "the holder to attach", || {
        slot.load(Ordering::Acquire) >> 32 == u64::from(child.pid())
    });
    // Keep the pid, change the start time: by /proc it is another process.
    slot.fetch_xor(0xffff, Ordering::AcqRel);
    assert!(matches!(
        spsc::Sender::<u64>::open(&address),
        Err(ipcring::channel::ChannelError::RoleTaken { .. })
    ));
    signal(child.pid(), libc::SIGKILL);
    child.wait_code(LIMIT);
    // Dead now: the role is taken over.
    let mut tx = spsc::Sender::<u64>::open(&address).unwrap();
    tx.send(5).unwrap();
}

/// The presence hints scribbled to zero under a receiver blocked with no
/// timeout, then the only sender killed: the receiver still returns.
#[test]
fn scribbled_presence_still_disconnects_a_blocked_receiver() {
    if child_role().is_some() {
        let _tx = mpmc::Sender::<u64>::open(&address_from_env()).unwrap();
        std::thread::sleep(LIMIT * 2);
        return;
    }
    let address = unique_posix("crash-presence");
    let _cleanup = Cleanup(address.clone());
    let mut rx = mpmc::Receiver::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
    let mut child = spawn_child(
        "scribbled_presence_still_disconnects_a_blocked_receiver",
        "sender",
        &[("CHANNEL", address.to_string())],
    );
    let producers_presence = rx.segment().view::<AtomicU64>(8).unwrap();
    common::eventually(LIMIT, "the sender to attach", || {
        producers_presence.load(Ordering::Acquire) != 0
    });
    let segment = Segment::open(&address, &OpenOptions::new()).unwrap();
    let blocked = std::thread::spawn(move || rx.recv());
    std::thread::sleep(Duration::from_millis(50));
    // Producers' and consumers' presence words.
    for offset in [8, 264] {
        segment
            .view::<AtomicU64>(offset)
            .unwrap()
            .store(0, Ordering::Release);
    }
    signal(child.pid(), libc::SIGKILL);
    child.wait_code(LIMIT);
    let started = Instant::now();
    while !blocked.is_finished() {
        assert!(started.elapsed() < LIMIT, "the receiver stayed blocked");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        blocked.join().unwrap(),
        Err(ipcring::channel::RecvError::Disconnected)
    );
}

// Byte streams (`channel::stream`): a writer or reader killed at each step
// of a write or read, holding its side's lock; see "Byte stream" in
// docs/crash-behavior.md.

const STREAM_WRITE: [&str; 4] = [
    "stream.write.locked",
    "stream.write.copying",
    "stream.write.copied",
    "stream.write.published",
];

const STREAM_READ: [&str; 4] = [
    "stream.read.locked",
    "stream.read.copying",
    "stream.read.copied",
    "stream.read.consumed",
];

/// Everything waiting in `reader` now, without waiting for more.
fn drain(reader: &mut stream::Reader) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.try_read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A writer killed at each step of a write, holding the writer lock: a
/// second writer blocked on that lock gets it back within the repair bound,
/// the dead writer's bytes are there whole if it had published them and
/// absent otherwise, never torn, and fresh endpoints work.
#[test]
fn stream_writer_killed_at_each_step() {
    if let Some(role) = child_role() {
        assert_eq!(role, "writer");
        let mut writer = stream::Writer::open(&address_from_env()).unwrap();
        std::io::Write::write_all(&mut writer, &[b'D'; 1000]).unwrap();
        return;
    }
    for failpoint in STREAM_WRITE {
        let address = unique_posix("crash-stream-tx");
        let _cleanup = Cleanup(address.clone());
        let page = ipcring::segment::page_size();
        let mut reader = stream::Reader::create(&address, page, &ChannelOptions::new()).unwrap();
        let mut writer = stream::Writer::open(&address).unwrap();
        let child = stopped_at(
            "stream_writer_killed_at_each_step",
            "writer",
            failpoint,
            &address,
        );
        // The survivor is waiting for the lock when the holder dies.
        let writing = std::thread::spawn(move || {
            let result = writer.write_timeout(&[b'A'; 1000], LIMIT);
            (result, Instant::now(), writer)
        });
        std::thread::sleep(Duration::from_millis(250));
        kill(child);
        let killed = Instant::now();
        let (result, at, mut writer) = writing.join().unwrap();
        assert_eq!(result.unwrap(), 1000, "{failpoint}");
        let took = at.saturating_duration_since(killed);
        assert!(took < REPAIR_LIMIT, "{failpoint}: {took:?}");
        eprintln!("{failpoint}: the blocked writer got the lock {took:?} after the kill");
        let published = failpoint == "stream.write.published";
        let mut expected = Vec::new();
        if published {
            expected.extend_from_slice(&[b'D'; 1000]);
        }
        expected.extend_from_slice(&[b'A'; 1000]);
        assert!(
            drain(&mut reader) == expected,
            "{failpoint}: torn or lost bytes"
        );
        assert_eq!(reader.stats().repairs, 1, "{failpoint}");
        assert_eq!(channel_stats(&address).repairs, 1, "{failpoint}");
        // `ipcring stat` shows the same count.
        let stat = common::ipcring_cli()
            .args(["stat", &address.to_string(), "--json"])
            .output()
            .unwrap();
        let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
        assert_eq!(stat["repairs"], 1, "{failpoint}");
        drop(writer.write_all(b"x"));
        let mut fresh = stream::Writer::open(&address).unwrap();
        std::io::Write::write_all(&mut fresh, b"fresh").unwrap();
        assert_eq!(drain(&mut reader), b"xfresh", "{failpoint}");
    }
}

/// A reader killed at each step of a read, holding the reader lock: a
/// second reader blocked on that lock gets it back, and reads the bytes
/// the dead one had copied again unless it had consumed them.
#[test]
fn stream_reader_killed_at_each_step() {
    if let Some(role) = child_role() {
        assert_eq!(role, "reader");
        let mut reader = stream::Reader::open(&address_from_env()).unwrap();
        let _ = std::io::Read::read(&mut reader, &mut [0; 600]);
        return;
    }
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    for failpoint in STREAM_READ {
        let address = unique_posix("crash-stream-rx");
        let _cleanup = Cleanup(address.clone());
        let page = ipcring::segment::page_size();
        let mut writer = stream::Writer::create(&address, page, &ChannelOptions::new()).unwrap();
        let mut reader = stream::Reader::open(&address).unwrap();
        std::io::Write::write_all(&mut writer, &data).unwrap();
        let child = stopped_at(
            "stream_reader_killed_at_each_step",
            "reader",
            failpoint,
            &address,
        );
        let reading = std::thread::spawn(move || {
            let mut got = vec![0; 1000];
            let result = reader.read_timeout(&mut got, LIMIT);
            (result.map(|n| got[..n].to_vec()), Instant::now(), reader)
        });
        std::thread::sleep(Duration::from_millis(250));
        kill(child);
        let killed = Instant::now();
        let (got, at, mut reader) = reading.join().unwrap();
        let took = at.saturating_duration_since(killed);
        assert!(took < REPAIR_LIMIT, "{failpoint}: {took:?}");
        eprintln!("{failpoint}: the blocked reader got the lock {took:?} after the kill");
        let consumed = failpoint == "stream.read.consumed";
        let mut got = got.unwrap();
        got.extend(drain(&mut reader));
        let expected = if consumed { &data[600..] } else { &data[..] };
        assert_eq!(got, expected, "{failpoint}");
        assert_eq!(channel_stats(&address).repairs, 1, "{failpoint}");
        // The stream goes on: all of it has room again.
        std::io::Write::write_all(&mut writer, &vec![7; page]).unwrap();
        let mut fresh = stream::Reader::open(&address).unwrap();
        assert_eq!(drain(&mut fresh), vec![7; page], "{failpoint}");
    }
}

/// Writers and readers SIGKILLed between operations (not holding a lock):
/// every blocked reader sees the end of the stream once the last writer is
/// found dead, and a blocked writer gets `BrokenPipe` once the last reader
/// is.
#[test]
fn stream_endpoints_killed_between_operations_end_the_stream() {
    if let Some(role) = child_role() {
        let address = address_from_env();
        match role.as_str() {
            "writer" => {
                let mut writer = stream::Writer::open(&address).unwrap();
                std::io::Write::write_all(&mut writer, b"last words").unwrap();
                // Stop here for the parent to kill.
                // SAFETY: raise has no memory effects.
                unsafe { libc::raise(libc::SIGSTOP) };
            }
            "reader" => {
                let _reader = stream::Reader::open(&address).unwrap();
                // SAFETY: as above.
                unsafe { libc::raise(libc::SIGSTOP) };
            }
            _ => unreachable!(),
        }
        return;
    }
    let test = "stream_endpoints_killed_between_operations_end_the_stream";
    let wait_stopped = |child: &mut ChildGuard| {
        let started = Instant::now();
        while !is_stopped(child.pid()) {
            assert!(started.elapsed() < LIMIT, "the child never stopped");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let page = ipcring::segment::page_size();

    let address = unique_posix("crash-stream-eof");
    let _cleanup = Cleanup(address.clone());
    let readers: Vec<_> = (0..3)
        .map(|_| stream::Reader::create(&address, page, &ChannelOptions::new()))
        .take(1)
        .chain((0..2).map(|_| stream::Reader::open(&address)))
        .map(Result::unwrap)
        .collect();
    let mut child = spawn_child(test, "writer", &[("CHANNEL", address.to_string())]);
    wait_stopped(&mut child);
    let blocked: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                std::io::Read::read_to_end(&mut reader, &mut got).map(|_| got)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(250));
    kill(child);
    let killed = Instant::now();
    let mut all = Vec::new();
    for reader in blocked {
        all.extend(returns_within(REPAIR_LIMIT, move || reader.join().unwrap()).unwrap());
    }
    assert_eq!(
        all, b"last words",
        "one reader got them, and all saw the end"
    );
    eprintln!(
        "three blocked readers saw the end {:?} after the kill",
        killed.elapsed()
    );

    let address = unique_posix("crash-stream-epipe");
    let _cleanup = Cleanup(address.clone());
    let mut writer = stream::Writer::create(&address, page, &ChannelOptions::new()).unwrap();
    let mut child = spawn_child(test, "reader", &[("CHANNEL", address.to_string())]);
    wait_stopped(&mut child);
    std::io::Write::write_all(&mut writer, &vec![1; page]).unwrap();
    let blocked = std::thread::spawn(move || std::io::Write::write(&mut writer, b"more"));
    std::thread::sleep(Duration::from_millis(250));
    kill(child);
    let result = returns_within(REPAIR_LIMIT, move || blocked.join().unwrap());
    assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
}

/// A writer killed while attaching (slot claimed, not yet counted as
/// attached): a reader waiting for its first writer is not told the stream
/// ended, since no writer came; it goes on waiting, and a writer that
/// attaches afterwards is read to its end.
#[test]
fn stream_writer_killed_while_attaching_leaves_the_reader_waiting_for_one() {
    if let Some(role) = child_role() {
        assert_eq!(role, "writer");
        let _writer = stream::Writer::open(&address_from_env()).unwrap();
        return;
    }
    let address = unique_posix("crash-stream-attach");
    let _cleanup = Cleanup(address.clone());
    let page = ipcring::segment::page_size();
    let mut reader = stream::Reader::create(&address, page, &ChannelOptions::new()).unwrap();
    let child = stopped_at(
        "stream_writer_killed_while_attaching_leaves_the_reader_waiting_for_one",
        "writer",
        "channel.attach.claimed",
        &address,
    );
    kill(child);
    let error = reader
        .read_timeout(&mut [0; 8], Duration::from_millis(400))
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    let mut writer = stream::Writer::open(&address).unwrap();
    writer.write_all(b"late").unwrap();
    drop(writer);
    let mut got = Vec::new();
    returns_within(REPAIR_LIMIT, move || {
        std::io::Read::read_to_end(&mut reader, &mut got).map(|_| got)
    })
    .map(|got| assert_eq!(got, b"late"))
    .unwrap();
}

/// A reaper killed mid-reap of a writer that died holding the writer lock:
/// the next reaper takes the reap over and the lock comes back.
#[test]
fn stream_reaper_killed_mid_reap_is_taken_over() {
    if let Some(role) = child_role() {
        let address = address_from_env();
        let mut writer = stream::Writer::open(&address).unwrap();
        match role.as_str() {
            "writer" => std::io::Write::write_all(&mut writer, b"dead").unwrap(),
            // Stuck behind the dead writer's lock, it reaps.
            "reaper" => drop(writer.write_timeout(b"reaper", LIMIT)),
            _ => unreachable!(),
        }
        return;
    }
    let test = "stream_reaper_killed_mid_reap_is_taken_over";
    for failpoint in ["channel.reap.marked", "channel.reap.repaired"] {
        let address = unique_posix("crash-stream-reap");
        let _cleanup = Cleanup(address.clone());
        let page = ipcring::segment::page_size();
        let mut reader = stream::Reader::create(&address, page, &ChannelOptions::new()).unwrap();
        let dead = stopped_at(test, "writer", "stream.write.copying", &address);
        kill(dead);
        let reaper = stopped_at(test, "reaper", failpoint, &address);
        kill(reaper);
        let mut writer = stream::Writer::open(&address).unwrap();
        writer.write_timeout(b"alive", REPAIR_LIMIT).unwrap();
        // The reaper died after its repair: the lock was back, and nothing
        // it wrote (it never got the lock in time to) is there.
        let got = drain(&mut reader);
        assert!(
            got == b"alive" || got == b"reaperalive",
            "{failpoint}: {got:?}"
        );
        assert!(channel_stats(&address).repairs >= 1, "{failpoint}");
    }
}

/// A writer stopped (not killed) holding the lock mid-copy is alive: the
/// others wait (and time out) instead of taking its lock, and when it
/// resumes its write arrives whole, before theirs.
#[test]
fn stopped_stream_writer_is_not_repaired_behind_its_back() {
    if let Some(role) = child_role() {
        assert_eq!(role, "writer");
        let mut writer = stream::Writer::open(&address_from_env()).unwrap();
        std::io::Write::write_all(&mut writer, &[b'S'; 1000]).unwrap();
        return;
    }
    let address = unique_posix("crash-stream-stop");
    let _cleanup = Cleanup(address.clone());
    let page = ipcring::segment::page_size();
    let mut reader = stream::Reader::create(&address, page, &ChannelOptions::new()).unwrap();
    let mut writer = stream::Writer::open(&address).unwrap();
    let mut child = stopped_at(
        "stopped_stream_writer_is_not_repaired_behind_its_back",
        "writer",
        "stream.write.copying",
        &address,
    );
    let error = writer
        .write_timeout(b"mine", Duration::from_millis(600))
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(
        reader
            .read_timeout(&mut [0; 8], Duration::from_millis(200))
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::TimedOut
    );
    signal(child.pid(), libc::SIGCONT);
    assert_eq!(child.wait_code(LIMIT), Some(0));
    writer.write_timeout(b"mine", LIMIT).unwrap();
    let mut expected = vec![b'S'; 1000];
    expected.extend_from_slice(b"mine");
    assert!(
        drain(&mut reader) == expected,
        "the stopped write arrived whole, first"
    );
    assert_eq!(channel_stats(&address).repairs, 0);
}
