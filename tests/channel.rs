//! Channels across real processes: ordering, exactly-once delivery,
//! disconnection (leaving and dying), role checks, timeouts, and memfd
//! channels shared with a child.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Cleanup, child_role, spawn_child, unique_posix, unique_sysv};
use ipcring::channel::{
    ChannelError, ChannelOptions, RecvError, RecvTimeoutError, SendError, TryRecvError,
    TrySendError, mpmc, spsc,
};
use ipcring::segment::{Address, OpenOptions, Segment};

const LIMIT: Duration = Duration::from_secs(60);

fn address_from_env() -> Address {
    std::env::var("SEGMENT").unwrap().parse().unwrap()
}

#[test]
fn spsc_ten_million_items_arrive_in_order() {
    const COUNT: u64 = 10_000_000;
    if child_role().is_some() {
        let mut tx = spsc::Sender::<u64>::open(&address_from_env()).unwrap();
        let mut next = 0u64;
        let mut batch = [0u64; 256];
        while next < COUNT {
            let n = batch.len().min((COUNT - next) as usize);
            for (i, slot) in batch[..n].iter_mut().enumerate() {
                *slot = next + i as u64;
            }
            let mut sent = 0;
            while sent < n {
                let k = tx.try_send_slice(&batch[sent..n]).unwrap();
                if k == 0 {
                    // Full: block for room with one item.
                    tx.send(batch[sent]).unwrap();
                    sent += 1;
                } else {
                    sent += k;
                }
            }
            next += n as u64;
        }
        return;
    }
    let address = unique_posix("spsc10m");
    let _cleanup = Cleanup(address.clone());
    let mut rx = spsc::Receiver::<u64>::create(&address, 4096, &ChannelOptions::new()).unwrap();
    let child = spawn_child(
        "spsc_ten_million_items_arrive_in_order",
        "producer",
        &[("SEGMENT", address.to_string())],
    );
    let mut expected = 0u64;
    let mut buffer = [0u64; 512];
    loop {
        match rx.try_recv_slice(&mut buffer) {
            Ok(0) => match rx.recv() {
                Ok(item) => {
                    assert_eq!(item, expected);
                    expected += 1;
                }
                Err(RecvError::Disconnected) => break,
                Err(e) => panic!("{e:?}"),
            },
            Ok(n) => {
                for &item in &buffer[..n] {
                    assert_eq!(item, expected);
                    expected += 1;
                }
            }
            Err(TryRecvError::Disconnected) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(expected, COUNT, "every item, in order, then Disconnected");
    child.wait_success(LIMIT);
}

#[test]
fn mpmc_producer_and_consumer_processes_deliver_each_item_exactly_once() {
    const PRODUCERS: u64 = 3;
    const PER_PRODUCER: u64 = 100_000;
    match child_role().as_deref() {
        Some("producer") => {
            let id: u64 = std::env::var("ID").unwrap().parse().unwrap();
            let mut tx = mpmc::Sender::<u64>::open(&address_from_env()).unwrap();
            // Wait until every producer is attached, so the consumers see
            // Disconnected only when all of them have finished.
            let go: u64 = std::env::var("GO").unwrap().parse().unwrap();
            while (std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .unwrap()
                .as_millis() as u64)
                < go
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            for i in 0..PER_PRODUCER {
                tx.send((id << 32) | i).unwrap();
            }
            return;
        }
        Some("consumer") => {
            let mut rx = mpmc::Receiver::<u64>::open(&address_from_env()).unwrap();
            let mut out = std::fs::File::create(std::env::var("OUT").unwrap()).unwrap();
            loop {
                match rx.recv() {
                    Ok(item) => out.write_all(&item.to_le_bytes()).unwrap(),
                    Err(RecvError::Disconnected) => return,
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        _ => {}
    }
    let address = unique_posix("mpmcx");
    let _cleanup = Cleanup(address.clone());
    // The parent holds a sender until all children attached, so that the
    // consumers cannot see the producer side empty before it starts.
    let holder = mpmc::Sender::<u64>::create(&address, 1000, &ChannelOptions::new()).unwrap();
    let dir = std::env::temp_dir().join(format!("ipcring-mpmc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let go = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .unwrap()
        .as_millis() as u64
        + 500;
    let consumers: Vec<_> = (0..2)
        .map(|c| {
            let out = dir.join(format!("c{c}"));
            let child = spawn_child(
                "mpmc_producer_and_consumer_processes_deliver_each_item_exactly_once",
                "consumer",
                &[
                    ("SEGMENT", address.to_string()),
                    ("OUT", out.display().to_string()),
                ],
            );
            (child, out)
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            spawn_child(
                "mpmc_producer_and_consumer_processes_deliver_each_item_exactly_once",
                "producer",
                &[
                    ("SEGMENT", address.to_string()),
                    ("ID", id.to_string()),
                    ("GO", go.to_string()),
                ],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    drop(holder);
    for producer in producers {
        producer.wait_success(LIMIT);
    }
    let mut all = Vec::new();
    for (consumer, out) in consumers {
        consumer.wait_success(LIMIT);
        let bytes = std::fs::read(&out).unwrap();
        all.extend(
            bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap())),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    all.sort_unstable();
    let expected: Vec<u64> = (0..PRODUCERS)
        .flat_map(|p| (0..PER_PRODUCER).map(move |i| (p << 32) | i))
        .collect();
    assert_eq!(all.len(), expected.len(), "lost or duplicated items");
    assert!(all == expected, "every item exactly once");
}

#[test]
fn blocked_receiver_notices_a_killed_sender() {
    if child_role().is_some() {
        let mut tx = spsc::Sender::<u64>::open(&address_from_env()).unwrap();
        tx.send(1).unwrap();
        std::thread::sleep(LIMIT * 2);
        return;
    }
    let address = unique_sysv();
    let _cleanup = Cleanup(address.clone());
    let mut rx = spsc::Receiver::<u64>::create(&address, 16, &ChannelOptions::new()).unwrap();
    let mut child = spawn_child(
        "blocked_receiver_notices_a_killed_sender",
        "victim",
        &[("SEGMENT", address.to_string())],
    );
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 1);
    let pid = child.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let killed_at = Instant::now();
        // SAFETY: `pid` is our live child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        killed_at
    });
    // Blocks: the sender is alive and quiet, until it is killed.
    let result = rx.recv_timeout(LIMIT);
    let noticed = Instant::now();
    let killed_at = killer.join().unwrap();
    assert_eq!(result, Err(RecvTimeoutError::Disconnected));
    let delay = noticed.duration_since(killed_at);
    eprintln!("killed sender noticed after {delay:?}");
    assert!(delay < Duration::from_secs(2), "noticed after {delay:?}");
    child.wait_code(LIMIT);
}

#[test]
fn blocked_sender_notices_a_killed_receiver() {
    if child_role().is_some() {
        let _rx = spsc::Receiver::<u64>::open(&address_from_env()).unwrap();
        std::thread::sleep(LIMIT * 2);
        return;
    }
    let address = unique_posix("killrx");
    let _cleanup = Cleanup(address.clone());
    let mut tx = spsc::Sender::<u64>::create(&address, 2, &ChannelOptions::new()).unwrap();
    let mut child = spawn_child(
        "blocked_sender_notices_a_killed_receiver",
        "victim",
        &[("SEGMENT", address.to_string())],
    );
    // Full, with a live receiver that never reads.
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
    let pid = child.pid();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: `pid` is our live child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    assert!(matches!(tx.send(3), Err(SendError::Disconnected(3))));
    child.wait_code(LIMIT);
}

#[test]
fn spsc_roles_are_exclusive_until_the_holder_leaves_or_dies() {
    match child_role().as_deref() {
        Some("second") => {
            let err = spsc::Sender::<u64>::open(&address_from_env())
                .err()
                .unwrap();
            assert!(
                matches!(
                    err,
                    ChannelError::RoleTaken {
                        role: "producer",
                        ..
                    }
                ),
                "{err:?}"
            );
            return;
        }
        Some("holder") => {
            let _tx = spsc::Sender::<u64>::open(&address_from_env()).unwrap();
            std::io::stdout().flush().unwrap();
            std::thread::sleep(LIMIT * 2);
            return;
        }
        _ => {}
    }
    let address = unique_posix("roles");
    let _cleanup = Cleanup(address.clone());
    let _rx = spsc::Receiver::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
    assert!(matches!(
        spsc::Receiver::<u64>::open(&address),
        Err(ChannelError::RoleTaken {
            role: "consumer",
            ..
        })
    ));
    let tx = spsc::Sender::<u64>::open(&address).unwrap();
    let test = "spsc_roles_are_exclusive_until_the_holder_leaves_or_dies";
    spawn_child(test, "second", &[("SEGMENT", address.to_string())]).wait_success(LIMIT);
    drop(tx);
    // Free again once the holder left.
    let tx = spsc::Sender::<u64>::open(&address).unwrap();
    drop(tx);
    // A holder that dies is taken over.
    let mut holder = spawn_child(test, "holder", &[("SEGMENT", address.to_string())]);
    common::eventually(LIMIT, "the holder to attach", || {
        matches!(
            spsc::Sender::<u64>::open(&address),
            Err(ChannelError::RoleTaken { .. })
        )
    });
    holder.child().kill().unwrap();
    holder.wait_code(LIMIT);
    assert!(spsc::Sender::<u64>::open(&address).is_ok());
}

#[test]
fn try_and_timed_forms_report_empty_full_and_timeout() {
    let address = unique_posix("forms");
    let _cleanup = Cleanup(address.clone());
    let mut tx = spsc::Sender::<u32>::create(&address, 2, &ChannelOptions::new()).unwrap();
    let mut rx = spsc::Receiver::<u32>::open(&address).unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    let started = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(150)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
    assert!(matches!(
        tx.send_timeout(3, Duration::from_millis(50)),
        Err(ipcring::channel::SendTimeoutError::Timeout(3))
    ));
    assert_eq!(rx.try_recv(), Ok(1));
    drop(rx);
    // The receiver left: sends fail at once, the item comes back.
    assert!(matches!(tx.try_send(4), Err(TrySendError::Disconnected(4))));
    assert!(tx.is_disconnected());
}

#[test]
fn receiver_drains_before_disconnected() {
    let address = unique_posix("drain");
    let _cleanup = Cleanup(address.clone());
    let mut tx = mpmc::Sender::<u32>::create(&address, 8, &ChannelOptions::new()).unwrap();
    let mut rx = mpmc::Receiver::<u32>::open(&address).unwrap();
    // Before any sender has come, an empty channel is just empty.
    for i in 0..5 {
        tx.send(i).unwrap();
    }
    drop(tx);
    for i in 0..5 {
        assert_eq!(rx.try_recv(), Ok(i));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
fn memfd_channel_shared_with_a_child() {
    if child_role().is_some() {
        let fd: i32 = std::env::var("SEGMENT_FD").unwrap().parse().unwrap();
        let segment = Segment::open_inherited(fd, &OpenOptions::new()).unwrap();
        let mut tx = spsc::Sender::<[u8; 16]>::attach(segment).unwrap();
        for i in 0..1000u32 {
            let mut item = [0u8; 16];
            item[..4].copy_from_slice(&i.to_le_bytes());
            tx.send(item).unwrap();
        }
        return;
    }
    let segment = spsc::create_segment::<[u8; 16]>(None, 64, &ChannelOptions::new()).unwrap();
    let inheritable = segment.inheritable_fd().unwrap();
    let mut rx = spsc::Receiver::<[u8; 16]>::attach(segment).unwrap();
    let child = spawn_child(
        "memfd_channel_shared_with_a_child",
        "sender",
        &[(
            "SEGMENT_FD",
            std::os::fd::AsRawFd::as_raw_fd(&inheritable).to_string(),
        )],
    );
    drop(inheritable);
    for i in 0..1000u32 {
        let item = rx.recv().unwrap();
        assert_eq!(&item[..4], &i.to_le_bytes());
    }
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    child.wait_success(LIMIT);
}

#[test]
fn wrong_item_type_or_kind_is_refused() {
    let address = unique_posix("types");
    let _cleanup = Cleanup(address.clone());
    let _tx = spsc::Sender::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
    assert!(matches!(
        spsc::Receiver::<u32>::open(&address),
        Err(ChannelError::Ring(_))
    ));
    assert!(matches!(
        mpmc::Receiver::<u64>::open(&address),
        Err(ChannelError::Segment(_))
    ));
    assert!(matches!(
        spsc::Sender::<u64>::create(&address, 8, &ChannelOptions::new()),
        Err(ChannelError::Segment(_))
    ));
    assert!(spsc::create_segment::<u64>(None, 0, &ChannelOptions::new()).is_err());
}

// Regressions from a review of the channel layer.

#[test]
fn a_failed_attach_frees_the_role_it_claimed() {
    let address = unique_posix("leak");
    let _cleanup = Cleanup(address.clone());
    let _rx = spsc::Receiver::<u64>::create(&address, 16, &ChannelOptions::new()).unwrap();
    // The wrong item type fails after the role slot was claimed ...
    assert!(matches!(
        spsc::Sender::<u32>::open(&address),
        Err(ChannelError::Ring(_))
    ));
    // ... and the slot is free again.
    assert!(spsc::Sender::<u64>::open(&address).is_ok());

    let address = unique_posix("leakm");
    let _cleanup = Cleanup(address.clone());
    let mut rx = mpmc::Receiver::<u64>::create(&address, 16, &ChannelOptions::new()).unwrap();
    assert!(mpmc::Sender::<[u64; 2]>::open(&address).is_err());
    let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
    tx.send(1).unwrap();
    drop(tx);
    assert_eq!(rx.recv_timeout(LIMIT), Ok(1));
    assert_eq!(rx.recv_timeout(LIMIT), Err(RecvTimeoutError::Disconnected));
}

#[test]
fn mpmc_checks_the_item_size_not_just_the_slot_size() {
    let address = unique_posix("itemsize");
    let _cleanup = Cleanup(address.clone());
    let _rx = mpmc::Receiver::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
    // u32 and u64 both fit a 16-byte slot; the item size tells them apart.
    assert!(matches!(
        mpmc::Sender::<u32>::open(&address),
        Err(ChannelError::Ring(_))
    ));
    assert!(mpmc::Sender::<u64>::open(&address).is_ok());
}
