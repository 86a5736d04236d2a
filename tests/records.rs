//! Record channels across real processes: boundaries kept, every record
//! whole and in order per sender, disconnection, size limits and roles.

mod common;

use std::time::Duration;

use common::{Cleanup, child_role, spawn_child, unique_posix};
use ipcring::channel::records::{Receiver, RecordRecvError, RecordSendError, Sender};
use ipcring::channel::{ChannelError, ChannelOptions, RecvError, RecvTimeoutError, TryRecvError};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::Address;

const LIMIT: Duration = Duration::from_secs(60);
const PER_SENDER: u32 = 20_000;

fn address_from_env() -> Address {
    std::env::var("SEGMENT").unwrap().parse().unwrap()
}

/// Record `i` of sender `id`: its index, then at least one copy of `id`;
/// 5 to `max - 1` bytes, so it is never taken for the maximal record.
fn record(id: u8, i: u32, max: usize) -> Vec<u8> {
    let len = 5 + (i as usize * 37) % (max - 5);
    let mut bytes = vec![id; len];
    bytes[..4].copy_from_slice(&i.to_le_bytes());
    bytes
}

fn run_sender(id: u8) {
    let mut tx = Sender::open(&address_from_env()).unwrap();
    let max = tx.max_record();
    for i in 0..PER_SENDER {
        tx.send(&record(id, i, max)).unwrap();
    }
    // An empty record and a maximal one keep their boundaries too.
    tx.send(&[]).unwrap();
    tx.send(&vec![id; max]).unwrap();
}

fn receive_all(rx: &mut Receiver, senders: u8) {
    let max = rx.max_record();
    let mut next = vec![0u32; senders as usize];
    let mut tails = vec![0u8; senders as usize];
    let mut out = Vec::new();
    let mut empty = 0;
    loop {
        match rx.recv_into(&mut out) {
            Ok(0) => empty += 1,
            Ok(len) if len == max => {
                let id = out[0] as usize;
                assert!(out.iter().all(|&b| b as usize == id));
                assert_eq!(next[id], PER_SENDER, "the maximal record comes last");
                tails[id] += 1;
            }
            Ok(_) => {
                let i = u32::from_le_bytes(out[..4].try_into().unwrap());
                let id = out.last().copied().unwrap_or(0);
                assert_eq!(out, record(id, i, max), "a record arrived damaged");
                assert_eq!(
                    i, next[id as usize],
                    "records of one sender arrive in order"
                );
                next[id as usize] += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(next.iter().all(|&n| n == PER_SENDER), "{next:?}");
    assert!(tails.iter().all(|&t| t == 1), "{tails:?}");
    assert_eq!(empty, senders as usize, "one empty record per sender");
}

#[test]
fn single_sender_records_cross_processes_whole_and_in_order() {
    if child_role().is_some() {
        run_sender(0);
        return;
    }
    let address = unique_posix("rec1");
    let _cleanup = Cleanup(address.clone());
    let mut rx =
        Receiver::create(&address, 4096, ProducerMode::Single, &ChannelOptions::new()).unwrap();
    let child = spawn_child(
        "single_sender_records_cross_processes_whole_and_in_order",
        "sender",
        &[("SEGMENT", address.to_string())],
    );
    receive_all(&mut rx, 1);
    child.wait_success(LIMIT);
}

#[test]
fn many_sender_processes_share_one_record_channel() {
    if child_role().is_some() {
        run_sender(std::env::var("ID").unwrap().parse().unwrap());
        return;
    }
    let address = unique_posix("recm");
    let _cleanup = Cleanup(address.clone());
    let mut rx =
        Receiver::create(&address, 4096, ProducerMode::Many, &ChannelOptions::new()).unwrap();
    // Hold a sender until both children attached, so the receiver cannot
    // see the sender side empty before they start.
    let holder = Sender::open(&address).unwrap();
    let children: Vec<_> = (0..2u8)
        .map(|id| {
            spawn_child(
                "many_sender_processes_share_one_record_channel",
                "sender",
                &[("SEGMENT", address.to_string()), ("ID", id.to_string())],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(holder);
    receive_all(&mut rx, 2);
    for child in children {
        child.wait_success(LIMIT);
    }
}

#[test]
fn limits_roles_and_timeouts() {
    let address = unique_posix("reclim");
    let _cleanup = Cleanup(address.clone());
    let mut tx =
        Sender::create(&address, 256, ProducerMode::Single, &ChannelOptions::new()).unwrap();
    assert_eq!(tx.max_record(), 120);
    assert_eq!(
        tx.try_send(&[0; 121]),
        Err(RecordSendError::TooLarge { len: 121, max: 120 })
    );
    assert!(matches!(
        Sender::open(&address),
        Err(ChannelError::RoleTaken {
            role: "producer",
            ..
        })
    ));
    let mut rx = Receiver::open(&address).unwrap();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    ));
    tx.try_send(&[1; 100]).unwrap();
    tx.try_send(&[1; 100]).unwrap();
    assert_eq!(tx.try_send(&[2; 100]), Err(RecordSendError::Full));
    assert_eq!(
        tx.send_timeout(&[2; 100], Duration::from_millis(20)),
        Err(RecordSendError::Timeout)
    );
    // A grant dropped uncommitted delivers nothing.
    drop(rx.try_recv().unwrap());
    drop(rx.try_recv().unwrap());
    drop(tx.try_reserve(10).unwrap());
    let mut grant = tx.try_reserve(3).unwrap();
    grant.write_at(0, b"abc");
    grant.commit();
    assert_eq!(rx.try_recv().unwrap().to_vec(), b"abc");
    drop(tx);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
    let mut tx = Sender::open(&address).unwrap();
    drop(rx);
    assert_eq!(tx.try_send(b"x"), Err(RecordSendError::Disconnected));
}

#[test]
fn blocking_reserve_and_receiving_into_a_buffer() {
    if child_role().is_some() {
        let mut rx = Receiver::open(&address_from_env()).unwrap();
        let mut buffer = [0u8; 4];
        // Too small: refused, and the record stays for a larger buffer.
        assert_eq!(
            rx.recv_slice_timeout(&mut buffer, LIMIT),
            Err(RecordRecvError::BufferTooSmall {
                len: 100,
                capacity: 4
            })
        );
        let mut large = [0u8; 120];
        assert_eq!(rx.recv_slice(&mut large), Ok(100));
        assert_eq!(large[..100], [7; 100]);
        // Only now is there room for the sender's waiting reservation.
        for fill in [8, 9] {
            assert_eq!(rx.recv_slice_timeout(&mut large, LIMIT), Ok(100));
            assert_eq!(large[..100], [fill; 100]);
        }
        assert_eq!(rx.recv_slice(&mut buffer), Ok(3));
        assert_eq!(&buffer[..3], b"end");
        assert_eq!(
            rx.recv_slice(&mut buffer),
            Err(RecordRecvError::Disconnected)
        );
        return;
    }
    let address = unique_posix("reserve");
    let _cleanup = Cleanup(address.clone());
    let mut tx =
        Sender::create(&address, 256, ProducerMode::Single, &ChannelOptions::new()).unwrap();
    for fill in [7, 8] {
        let mut grant = tx.reserve(100).unwrap();
        assert_eq!(grant.write_at(0, &[fill; 100]), 100);
        grant.commit();
    }
    // Room for two 100-byte records only.
    assert!(matches!(
        tx.reserve_timeout(100, Duration::from_millis(20)),
        Err(RecordSendError::Timeout)
    ));
    assert!(matches!(
        tx.reserve(121),
        Err(RecordSendError::TooLarge { len: 121, max: 120 })
    ));
    let child = spawn_child(
        "blocking_reserve_and_receiving_into_a_buffer",
        "receiver",
        &[("SEGMENT", address.to_string())],
    );
    // Waits until the child has taken the first record.
    let mut grant = tx.reserve_timeout(100, LIMIT).unwrap();
    grant.write_at(0, &[9; 100]);
    grant.commit();
    let mut grant = tx.reserve(3).unwrap();
    grant.write_at(0, b"end");
    grant.commit();
    drop(tx);
    child.wait_success(LIMIT);
}

#[test]
fn a_view_copies_into_a_buffer_only_if_it_fits() {
    let address = unique_posix("copyto");
    let _cleanup = Cleanup(address.clone());
    let mut tx =
        Sender::create(&address, 256, ProducerMode::Single, &ChannelOptions::new()).unwrap();
    let mut rx = Receiver::open(&address).unwrap();
    tx.send(b"hello").unwrap();
    let view = rx.recv().unwrap();
    let mut small = [0u8; 4];
    assert_eq!(
        view.copy_to(&mut small),
        Err(ipcring::ring::record::BufferTooSmall {
            len: 5,
            capacity: 4
        })
    );
    assert_eq!(small, [0; 4], "nothing copied");
    let mut exact = [0u8; 5];
    assert_eq!(view.copy_to(&mut exact), Ok(5));
    assert_eq!(&exact, b"hello");
    assert_eq!(view.to_vec(), b"hello");
    drop(view);
    assert_eq!(rx.try_recv_slice(&mut exact), Err(RecordRecvError::Empty));
}
