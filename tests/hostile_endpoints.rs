//! Exhausting what a channel or a process has room for: endpoint slots,
//! and the SIGBUS handler's table of protected mappings.

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use common::{Cleanup, unique_posix};
use hostile_support::{Exit, Victim, env, role};
use ipcring::channel::{ChannelError, ChannelOptions, MAX_ENDPOINTS, mpmc, records};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{Address, CreateOptions, OpenOptions, Segment};

const LIMIT: Duration = Duration::from_secs(20);

fn address_from_env() -> Address {
    env("SEGMENT").parse().unwrap()
}

/// Opens `MAX_ENDPOINTS` endpoints of one kind and side, says so, and
/// waits to be killed.
fn hold_all(role: &str) {
    let address = address_from_env();
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    for _ in 0..MAX_ENDPOINTS {
        let endpoint: Box<dyn std::any::Any> = match role {
            "mpmc-senders" => Box::new(mpmc::Sender::<u64>::open(&address).unwrap()),
            "mpmc-receivers" => Box::new(mpmc::Receiver::<u64>::open(&address).unwrap()),
            "record-senders" => Box::new(records::Sender::open(&address).unwrap()),
            other => panic!("unknown role {other}"),
        };
        held.push(endpoint);
    }
    std::fs::write(env("READY"), "ready").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// Tries to attach one more endpoint of `role`'s kind and side.
fn attach_one(role: &str, address: &Address) -> Result<Box<dyn std::any::Any>, ChannelError> {
    Ok(match role {
        "mpmc-senders" => Box::new(mpmc::Sender::<u64>::open(address)?),
        "mpmc-receivers" => Box::new(mpmc::Receiver::<u64>::open(address)?),
        _ => Box::new(records::Sender::open(address)?),
    })
}

#[test]
fn endpoint_slots_fill_refuse_and_come_back_after_their_holders_die() {
    if let Some(role) = role() {
        return hold_all(&role);
    }
    let test = "endpoint_slots_fill_refuse_and_come_back_after_their_holders_die";
    for role in ["mpmc-senders", "mpmc-receivers", "record-senders"] {
        let address = unique_posix("slots");
        let _cleanup = Cleanup(address.clone());
        let options = ChannelOptions::new();
        // The test's own endpoint is on the other side.
        let mut mpmc_tx = None;
        let mut mpmc_rx = None;
        let mut rec_rx = None;
        match role {
            "mpmc-senders" => {
                mpmc_rx = Some(mpmc::Receiver::<u64>::create(&address, 8, &options).unwrap())
            }
            "mpmc-receivers" => {
                mpmc_tx = Some(mpmc::Sender::<u64>::create(&address, 8, &options).unwrap())
            }
            _ => {
                rec_rx = Some(
                    records::Receiver::create(&address, 1024, ProducerMode::Many, &options)
                        .unwrap(),
                )
            }
        }
        let ready =
            std::env::temp_dir().join(format!("hostile-slots-{}-{address}", std::process::id()));
        let _remove = common::RemoveFile(ready.clone());
        let mut holder = Victim::spawn_with(
            test,
            role,
            None,
            &[
                ("SEGMENT", address.to_string()),
                ("READY", ready.display().to_string()),
            ],
            false,
        );
        let started = Instant::now();
        while !ready.exists() {
            assert!(
                started.elapsed() < LIMIT,
                "{role}: the holder never got ready"
            );
            assert!(
                holder.wait_exit(Duration::ZERO).is_none(),
                "{role}: the holder died"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        match attach_one(role, &address) {
            Err(ChannelError::TooManyEndpoints { capacity, .. }) => {
                assert_eq!(capacity, MAX_ENDPOINTS)
            }
            Err(e) => panic!("{role}: the 32nd attach failed with {e}"),
            Ok(_) => panic!("{role}: a 32nd endpoint was attached"),
        }
        holder.kill();
        // All 31 holders are dead: their slots come back.
        let mut again = Vec::new();
        for n in 0..MAX_ENDPOINTS {
            again.push(
                attach_one(role, &address)
                    .unwrap_or_else(|e| panic!("{role}: attach {n} after the holders died: {e}")),
            );
        }
        assert!(matches!(
            attach_one(role, &address),
            Err(ChannelError::TooManyEndpoints { .. })
        ));
        // And the channel still works both ways.
        match role {
            "mpmc-senders" => {
                let tx = again[30].downcast_mut::<mpmc::Sender<u64>>().unwrap();
                tx.send_timeout(5, LIMIT).unwrap();
                assert_eq!(mpmc_rx.as_mut().unwrap().recv_timeout(LIMIT).unwrap(), 5);
            }
            "mpmc-receivers" => {
                mpmc_tx.as_mut().unwrap().send_timeout(5, LIMIT).unwrap();
                let rx = again[30].downcast_mut::<mpmc::Receiver<u64>>().unwrap();
                assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 5);
            }
            _ => {
                let tx = again[30].downcast_mut::<records::Sender>().unwrap();
                tx.send_timeout(b"five", LIMIT).unwrap();
                let view = rec_rx.as_mut().unwrap().recv_timeout(LIMIT).unwrap();
                assert_eq!(view.to_vec(), b"five");
            }
        }
    }
}

/// Maps the segment `count` times, has a forked child truncate its file,
/// then touches the last mapping.
fn map_many_then_truncate(count: usize) {
    let address = address_from_env();
    let mut handles = Vec::new();
    for _ in 0..count {
        handles.push(Segment::open(&address, &OpenOptions::new().register(false)).unwrap());
    }
    common::truncate::truncate_segment_file_from_child(&address, 0);
    for segment in handles.iter().rev().take(8) {
        // SAFETY: the user area is mapped for `user_len` bytes; a volatile
        // read of its first byte.
        let byte = unsafe { std::ptr::read_volatile(segment.user_ptr()) };
        assert_eq!(byte, 0);
        assert!(segment.is_broken());
    }
}

#[test]
#[ignore = "known limit (docs/crash-behavior.md): past 1024 mappings in one process, a truncation is not survived"]
fn a_process_with_many_mappings_survives_truncation() {
    if let Some(role) = role() {
        let count: usize = role.parse().unwrap();
        return map_many_then_truncate(count);
    }
    let test = "a_process_with_many_mappings_survives_truncation";
    let mut failures = Vec::new();
    for count in [1000usize, 1100] {
        let address = unique_posix("many-maps");
        let _cleanup = Cleanup(address.clone());
        let _segment = Segment::create(&address, &CreateOptions::new(4096)).unwrap();
        let mut child = Victim::spawn_with(
            test,
            &count.to_string(),
            None,
            &[("SEGMENT", address.to_string())],
            false,
        );
        let exit = child.wait_exit(Duration::from_secs(60));
        eprintln!("{count} mappings of a truncated file: {exit:?}");
        if exit != Some(Exit::Code(0)) {
            failures.push(format!("{count} mappings: {exit:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "a process that maps many segments died of a truncation: {failures:?}"
    );
}
