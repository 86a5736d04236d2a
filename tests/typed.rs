//! Typed messages over a record channel, across real processes: values
//! arrive equal and in order, and bytes that are not a `T` are a typed
//! decode error. Needs the `serde` feature.
#![cfg(feature = "serde")]

mod common;

use std::time::Duration;

use common::{Cleanup, child_role, spawn_child, unique_posix};
use ipcring::channel::ChannelOptions;
use ipcring::channel::records;
use ipcring::channel::typed::{Receiver, Sender, TypedRecvError, TypedSendError};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::Address;

const LIMIT: Duration = Duration::from_secs(60);

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
enum Event {
    Tick(u64),
    Named { name: String, tags: Vec<String> },
}

fn event(i: u64) -> Event {
    if i % 3 == 0 {
        Event::Named {
            name: format!("event {i}"),
            tags: (0..i % 5).map(|t| t.to_string()).collect(),
        }
    } else {
        Event::Tick(i)
    }
}

#[test]
fn typed_messages_cross_processes_in_order() {
    if child_role().is_some() {
        let address: Address = std::env::var("SEGMENT").unwrap().parse().unwrap();
        let mut tx = Sender::<Event>::open_timeout(&address, LIMIT).unwrap();
        for i in 0..1000 {
            tx.send_timeout(&event(i), LIMIT).unwrap();
        }
        return;
    }
    let address = unique_posix("typed");
    let _cleanup = Cleanup(address.clone());
    let mut rx =
        Receiver::<Event>::create(&address, 4096, ProducerMode::Single, &ChannelOptions::new())
            .unwrap();
    let child = spawn_child(
        "typed_messages_cross_processes_in_order",
        "sender",
        &[("SEGMENT", address.to_string())],
    );
    for i in 0..1000 {
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), event(i));
    }
    child.wait_success(LIMIT);
    assert!(matches!(rx.recv(), Err(TypedRecvError::Disconnected)));
}

#[test]
fn bytes_that_are_not_the_type_are_a_decode_error() {
    let address = unique_posix("typed-bad");
    let _cleanup = Cleanup(address.clone());
    let mut rx =
        Receiver::<Event>::create(&address, 256, ProducerMode::Many, &ChannelOptions::new())
            .unwrap();
    let mut raw = records::Sender::open(&address).unwrap();
    // Variant 7 does not exist; an empty record is no value at all.
    raw.send(&[7]).unwrap();
    raw.send(&[]).unwrap();
    assert!(matches!(rx.try_recv(), Err(TypedRecvError::Decode(_))));
    assert!(matches!(rx.recv(), Err(TypedRecvError::Decode(_))));
    assert!(matches!(rx.try_recv(), Err(TypedRecvError::Empty)));
    // A message larger than the channel's largest record is refused.
    let mut tx = Sender::<Event>::open(&address).unwrap();
    let huge = Event::Named {
        name: "x".repeat(1000),
        tags: Vec::new(),
    };
    assert!(matches!(
        tx.try_send(&huge),
        Err(TypedSendError::Send(
            records::RecordSendError::TooLarge { .. }
        ))
    ));
    tx.send(&Event::Tick(1)).unwrap();
    assert_eq!(rx.recv().unwrap(), Event::Tick(1));
}
