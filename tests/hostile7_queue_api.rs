//! A careless or hostile caller of the message queue and datagram API:
//! extreme parameters, zero-size buffers, huge timeouts, more handles
//! than a queue takes, kinds mixed up, and `open_or_create` raced with
//! different parameters from several processes. Typed errors or correct
//! results; every call bounded.

mod common;
mod hostile_support;

use std::time::Duration;

use common::{Cleanup, unique_posix};
use hostile_support::{Victim, bounded, env, role};
use ipcring::channel::datagram::{Mailbox, Port, PortSender};
use ipcring::channel::queue::{
    Queue, QueueConfig, QueueOpenError, QueueRecvError, QueueSendError, Receive, Select,
};
use ipcring::channel::{ChannelError, ChannelOptions, mpmc, records, spsc};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::Address;

const LIMIT: Duration = Duration::from_secs(10);

/// Configurations no queue may have: each refused with a typed error,
/// never a panic, an overflow or an attempt to map a terabyte.
#[test]
fn impossible_configurations_are_refused() {
    let address = unique_posix("h7-cfg");
    let _cleanup = Cleanup(address.clone());
    let base = QueueConfig::new(4, 64);
    let bad = [
        QueueConfig::new(usize::MAX, 1),
        QueueConfig::new((1 << 20) + 1, 1),
        QueueConfig::new(1, (1 << 24) + 1),
        QueueConfig::new(1, usize::MAX),
        QueueConfig::new(1 << 20, 1 << 24),
        base.priorities(0),
        base.priorities(31),
        base.priorities(65),
        base.priorities(u32::MAX),
        base.max_bytes(0),
        base.max_bytes(63),
        base.max_bytes(usize::MAX),
        base.max_bytes((1 << 40) + 1),
    ];
    for config in bad {
        let created = bounded(LIMIT, {
            let address = address.clone();
            move || Queue::create(&address, &config, &ChannelOptions::new()).map(|_| ())
        })
        .expect_returned("create");
        assert!(created.is_err(), "{config:?} was accepted");
        assert!(
            !std::path::Path::new("/dev/shm")
                .join(format!("ipcring.{address}"))
                .exists(),
            "{config:?} left a file"
        );
    }
    // The smallest legal ones work: zero-byte messages, a rendezvous of
    // zero-byte messages, 64 priorities.
    for config in [
        QueueConfig::new(1, 0),
        QueueConfig::new(0, 0),
        QueueConfig::new(2, 8).priorities(64),
    ] {
        let mut q = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
        if config.max_msgs != 0 {
            q.try_send(&[], u64::MAX, config.priorities - 1).unwrap();
            let got = q.try_recv(Select::Type(u64::MAX), &mut []).unwrap();
            assert_eq!((got.len, got.priority), (0, config.priorities - 1));
        }
        Queue::remove(&address).unwrap();
    }
}

/// Extreme arguments to every call of a working queue.
#[test]
fn extreme_arguments_give_typed_errors() {
    let address = unique_posix("h7-args");
    let _cleanup = Cleanup(address.clone());
    let mut q = Queue::create(&address, &QueueConfig::new(4, 16), &ChannelOptions::new()).unwrap();
    let mut empty: [u8; 0] = [];
    assert_eq!(q.try_send(b"x", 0, 0), Err(QueueSendError::InvalidType));
    assert!(matches!(
        q.try_send(b"x", 1, u32::MAX),
        Err(QueueSendError::InvalidPriority { .. })
    ));
    assert!(matches!(
        q.try_send(&[0; 17], 1, 0),
        Err(QueueSendError::TooLarge { len: 17, max: 16 })
    ));
    assert!(matches!(
        q.try_loan(usize::MAX).map(|_| ()),
        Err(QueueSendError::TooLarge { .. })
    ));
    // Huge timeouts with work to do return at once.
    q.send_timeout(b"abc", u64::MAX, 31, Duration::MAX).unwrap();
    assert_eq!(
        q.peek(Select::Any, 0, &mut empty),
        Err(QueueRecvError::TooLarge {
            len: 3,
            capacity: 0
        })
    );
    assert_eq!(
        q.try_recv(Select::Any, &mut empty),
        Err(QueueRecvError::TooLarge {
            len: 3,
            capacity: 0
        })
    );
    let got = q
        .receive(&Receive::new(Select::Any).truncate(true), &mut empty)
        .unwrap();
    assert_eq!((got.len, got.copied, got.mtype), (3, 0, u64::MAX));
    for i in 1..=3u64 {
        q.send(&[i as u8], i, 0).unwrap();
    }
    let mut buf = [0u8; 16];
    for select in [
        Select::Any,
        Select::Type(0),
        Select::Type(u64::MAX),
        Select::TypeAtMost(0),
        Select::TypeAtMost(u64::MAX),
        Select::ExceptType(0),
        Select::ExceptType(u64::MAX),
    ] {
        for nth in [0, 2, 3, usize::MAX] {
            let peeked = q.peek(select, nth, &mut buf);
            assert!(
                matches!(peeked, Ok(_) | Err(QueueRecvError::NoMessage)),
                "{select:?} {nth}: {peeked:?}"
            );
        }
    }
    assert_eq!(
        q.peek(Select::Any, 3, &mut buf),
        Err(QueueRecvError::NoMessage)
    );
    assert_eq!(
        q.peek(Select::TypeAtMost(u64::MAX), 2, &mut buf)
            .unwrap()
            .mtype,
        3
    );
    let got = q
        .recv_timeout(Select::TypeAtMost(u64::MAX), &mut buf, Duration::MAX)
        .unwrap();
    assert_eq!(got.mtype, 1);
    {
        let message = q
            .recv_in_place_timeout(Select::ExceptType(3), Duration::MAX)
            .unwrap();
        let mut out = [0u8; 4];
        assert_eq!(message.read_at(usize::MAX, &mut out), 0);
        assert_eq!(message.read_at(1, &mut out), 0);
        assert_eq!(message.read_at(0, &mut out), 1);
    }
    {
        let mut loan = q.loan_timeout(0, Duration::MAX).unwrap();
        assert_eq!(loan.write_at(usize::MAX, b"zz"), 0);
        assert_eq!(loan.write_at(0, b"zz"), 0);
        assert_eq!(loan.send(0, 0), Err(QueueSendError::InvalidType));
    }
    {
        let mut loan = q.try_loan(16).unwrap();
        assert_eq!(loan.write_at(15, b"overflow"), 1);
        assert!(matches!(
            loan.send(1, 32),
            Err(QueueSendError::InvalidPriority { .. })
        ));
    }
    // Only message 3 is left; the refused loans gave their blocks back.
    let stats = q.stats();
    assert_eq!((stats.count, stats.bytes), (1, 1), "{stats:?}");
    for _ in 0..3 {
        q.try_send(b"f", 1, 0).unwrap();
    }
    assert_eq!(q.try_send(b"f", 1, 0), Err(QueueSendError::Full));
}

/// 31 handles attach; the 32nd gets a typed error, and a slot freed is
/// taken again.
#[test]
fn more_handles_than_a_queue_takes() {
    let address = unique_posix("h7-handles");
    let _cleanup = Cleanup(address.clone());
    let mut handles =
        vec![Queue::create(&address, &QueueConfig::new(4, 16), &ChannelOptions::new()).unwrap()];
    for _ in 1..31 {
        handles.push(Queue::open(&address).unwrap());
    }
    for _ in 0..3 {
        assert!(matches!(
            Queue::open(&address),
            Err(QueueOpenError::Channel(
                ChannelError::TooManyEndpoints { .. }
            ))
        ));
    }
    assert!(matches!(
        Mailbox::open(&address),
        Err(QueueOpenError::Channel(
            ChannelError::TooManyEndpoints { .. }
        ))
    ));
    handles[7].send(b"seven", 7, 0).unwrap();
    handles.remove(7);
    let mut late = Queue::open(&address).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(late.try_recv(Select::Type(7), &mut buf).unwrap().len, 5);
}

/// Every kind opened as every other: a typed refusal, and the segment is
/// left as it was.
#[test]
fn kinds_mixed_up_are_refused() {
    let options = ChannelOptions::new();
    let queue_at = unique_posix("h7-kind-q");
    let mpmc_at = unique_posix("h7-kind-m");
    let records_at = unique_posix("h7-kind-r");
    let port_at = unique_posix("h7-kind-p");
    let _c = [
        Cleanup(queue_at.clone()),
        Cleanup(mpmc_at.clone()),
        Cleanup(records_at.clone()),
        Cleanup(port_at.clone()),
    ];
    let mut q = Queue::create(&queue_at, &QueueConfig::new(4, 16), &options).unwrap();
    q.send(b"stay", 1, 0).unwrap();
    let _m = mpmc::Sender::<u64>::create(&mpmc_at, 4, &options).unwrap();
    let _r = records::Sender::create(&records_at, 256, ProducerMode::Single, &options).unwrap();
    let _p = Port::bind(&port_at, 256, &options).unwrap();
    for other in [&mpmc_at, &records_at, &port_at] {
        assert!(Queue::open(other).is_err(), "queue on {other}");
        assert!(Mailbox::open(other).is_err(), "mailbox on {other}");
        assert!(
            Queue::open_or_create(other, &QueueConfig::new(4, 16), &options).is_err(),
            "queue open_or_create on {other}"
        );
        assert!(Queue::remove(other).is_err(), "queue remove of {other}");
    }
    assert!(PortSender::connect(&queue_at).is_err());
    assert!(
        PortSender::connect(&records_at).is_err(),
        "one-sender records"
    );
    assert!(records::Sender::open(&queue_at).is_err());
    assert!(records::Receiver::open(&queue_at).is_err());
    assert!(mpmc::Receiver::<u64>::open(&queue_at).is_err());
    assert!(spsc::Receiver::<u64>::open(&queue_at).is_err());
    assert!(
        mpmc::Receiver::<u64>::open_or_create(&queue_at, 4, &options).is_err(),
        "mpmc open_or_create over a queue"
    );
    assert!(
        Port::bind(&queue_at, 256, &options).is_err(),
        "port over a queue"
    );
    // The queue is untouched.
    let mut buf = [0u8; 16];
    assert_eq!(q.try_recv(Select::Any, &mut buf).unwrap().len, 4);
}

/// Several processes race `open_or_create` on one name with different
/// capacities: exactly one creates, every other gets `Incompatible` (or
/// the queue, if it asked for the same), never another error.
#[test]
fn open_or_create_raced_with_different_parameters() {
    if let Some(role) = role() {
        let address: Address = env("QUEUE").parse().unwrap();
        let capacity: usize = role.parse().unwrap();
        // Start together.
        while !std::path::Path::new(&env("GO")).exists() {
            std::thread::sleep(Duration::from_micros(200));
        }
        let outcome = match Queue::open_or_create(
            &address,
            &QueueConfig::new(capacity, 32),
            &ChannelOptions::new(),
        ) {
            Ok((_, true)) => "created".to_owned(),
            Ok((_, false)) => "opened".to_owned(),
            Err(QueueOpenError::Incompatible { .. }) => "incompatible".to_owned(),
            Err(e) => format!("error: {e:?}"),
        };
        std::fs::write(env("RESULT"), outcome).unwrap();
        return;
    }
    for round in 0..5 {
        let address = unique_posix("h7-race");
        let _cleanup = Cleanup(address.clone());
        let dir = std::env::temp_dir().join(format!("h7-race-{}-{round}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let go = dir.join("go");
        let capacities = [4usize, 5, 6, 4, 7, 4];
        let mut victims: Vec<Victim> = capacities
            .iter()
            .enumerate()
            .map(|(i, capacity)| {
                Victim::spawn_with(
                    "open_or_create_raced_with_different_parameters",
                    &capacity.to_string(),
                    None,
                    &[
                        ("QUEUE", address.to_string()),
                        ("GO", go.display().to_string()),
                        ("RESULT", dir.join(i.to_string()).display().to_string()),
                    ],
                    false,
                )
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(&go, "go").unwrap();
        for victim in &mut victims {
            assert!(victim.wait_exit(LIMIT).is_some(), "a racer hung");
        }
        let outcomes: Vec<String> = (0..capacities.len())
            .map(|i| std::fs::read_to_string(dir.join(i.to_string())).unwrap_or_default())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            outcomes.iter().filter(|o| *o == "created").count(),
            1,
            "{outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .all(|o| ["created", "opened", "incompatible"].contains(&o.as_str())),
            "{outcomes:?}"
        );
    }
}

/// Removing a queue while handles are blocked in every kind of wait ends
/// each of them with `Removed`.
#[test]
fn remove_while_others_wait_in_every_call() {
    let address = unique_posix("h7-remove");
    let _cleanup = Cleanup(address.clone());
    let mut full =
        Queue::create(&address, &QueueConfig::new(1, 8), &ChannelOptions::new()).unwrap();
    full.send(b"full", 9, 0).unwrap();
    let rendezvous_at = unique_posix("h7-remove-rdv");
    let _cleanup2 = Cleanup(rendezvous_at.clone());
    let _rdv = Queue::create(
        &rendezvous_at,
        &QueueConfig::new(0, 8),
        &ChannelOptions::new(),
    )
    .unwrap();
    let mut waits = Vec::new();
    for call in ["recv", "send", "loan", "in-place", "rendezvous"] {
        let at = if call == "rendezvous" {
            rendezvous_at.clone()
        } else {
            address.clone()
        };
        let mut q = Queue::open(&at).unwrap();
        waits.push((
            call,
            hostile_support::Pending::start(call, move || {
                let mut buf = [0u8; 8];
                match call {
                    "recv" => format!("{:?}", q.recv(Select::Type(1), &mut buf)),
                    "send" => format!("{:?}", q.send(b"more", 1, 0)),
                    "loan" => format!("{:?}", q.loan(1).map(|_| ())),
                    "in-place" => format!("{:?}", q.recv_in_place(Select::Type(2)).map(|_| ())),
                    _ => format!("{:?}", q.send(b"meet", 1, 0)),
                }
            }),
        ));
    }
    std::thread::sleep(Duration::from_millis(200));
    Queue::remove(&address).unwrap();
    Queue::remove(&rendezvous_at).unwrap();
    for (call, wait) in waits {
        let got = wait.finish(LIMIT).expect_returned(call);
        assert!(got.contains("Removed"), "{call}: {got}");
    }
}
