//! The message queue through its public API: sizes, limits, types and
//! priorities, the selection modes, truncation, peeks, waiting, rendezvous,
//! statistics, removal, in-place forms and open-or-create, within one
//! process and across real child processes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cleanup, child_role, spawn_child, unique_posix, unique_sysv};
use ipcring::channel::queue::{
    self, Queue, QueueConfig, QueueOpenError, QueueRecvError, QueueSendError, Receive, Select,
};
use ipcring::channel::{ChannelError, ChannelOptions};
use ipcring::ring::RingError;
use ipcring::segment::{Address, OpenOptions, Segment, SegmentError};

const LIMIT: Duration = Duration::from_secs(20);

fn new_queue(tag: &str, config: QueueConfig) -> (Cleanup, Queue, Address) {
    let address = unique_posix(tag);
    let cleanup = Cleanup(address.clone());
    let queue = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
    (cleanup, queue, address)
}

fn recv_vec(queue: &mut Queue, select: Select) -> Result<(u64, u32, Vec<u8>), QueueRecvError> {
    let mut buf = vec![0; queue.config().max_msg];
    let got = queue.try_recv(select, &mut buf)?;
    buf.truncate(got.len);
    Ok((got.mtype, got.priority, buf))
}

#[test]
fn variable_sizes_up_to_the_maximum_and_zero_length() {
    let (_c, mut q, _) = new_queue("q-sizes", QueueConfig::new(8, 100));
    for len in [0usize, 1, 7, 8, 9, 99, 100] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
        q.try_send(&payload, 1, 0).unwrap();
        assert_eq!(recv_vec(&mut q, Select::Any).unwrap().2, payload, "{len}");
    }
    let before = q.stats();
    assert_eq!(
        q.try_send(&[0; 101], 1, 0),
        Err(QueueSendError::TooLarge { len: 101, max: 100 })
    );
    assert_eq!(
        q.send(&[0; 101], 1, 0),
        Err(QueueSendError::TooLarge { len: 101, max: 100 })
    );
    assert_eq!(q.stats(), before, "a refused send changes nothing");
}

#[test]
fn capacity_is_bounded_in_messages_and_in_bytes() {
    let config = QueueConfig::new(3, 10).max_bytes(12);
    let (_c, mut q, _) = new_queue("q-capacity", config);
    q.try_send(&[1; 10], 1, 0).unwrap();
    assert_eq!(
        q.try_send(&[1; 3], 1, 0),
        Err(QueueSendError::Full),
        "bytes"
    );
    let started = Instant::now();
    assert_eq!(
        q.send_timeout(&[1; 3], 1, 0, Duration::from_millis(30)),
        Err(QueueSendError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(30));
    q.try_send(&[1; 2], 1, 0).unwrap();
    q.try_send(&[], 1, 0).unwrap();
    assert_eq!(q.try_send(&[], 1, 0), Err(QueueSendError::Full), "messages");
    let stats = q.stats();
    assert_eq!((stats.count, stats.bytes), (3, 12));
    recv_vec(&mut q, Select::Any).unwrap();
    q.try_send(&[], 1, 0).unwrap();
}

#[test]
fn types_and_priorities_are_checked() {
    let config = QueueConfig::new(4, 8).priorities(40);
    let (_c, mut q, _) = new_queue("q-typeprio", config);
    assert_eq!(q.try_send(b"x", 0, 0), Err(QueueSendError::InvalidType));
    assert_eq!(
        q.try_send(b"x", 1, 40),
        Err(QueueSendError::InvalidPriority {
            priority: 40,
            priorities: 40
        })
    );
    q.try_send(b"x", u64::MAX, 39).unwrap();
    let mut buf = [0u8; 8];
    let got = q.try_recv(Select::Any, &mut buf).unwrap();
    assert_eq!(
        (got.mtype, got.priority, got.len, got.copied),
        (u64::MAX, 39, 1, 1)
    );
    assert_eq!(q.stats().count, 0);
    for bad in [31u32, 65] {
        let address = unique_posix("q-badprio");
        let _c = Cleanup(address.clone());
        let made = Queue::create(
            &address,
            &QueueConfig::new(4, 8).priorities(bad),
            &ChannelOptions::new(),
        );
        assert!(
            matches!(
                made,
                Err(QueueOpenError::Channel(ChannelError::Ring(
                    RingError::InvalidCapacity { .. }
                )))
            ),
            "{bad}: {made:?}"
        );
    }
    for config in [
        QueueConfig::new(1 << 21, 8),
        QueueConfig::new(8, 1 << 25),
        QueueConfig::new(4, 8).max_bytes(7),
    ] {
        let address = unique_posix("q-absurd");
        let _c = Cleanup(address.clone());
        let made = Queue::create(&address, &config, &ChannelOptions::new());
        assert!(matches!(
            made,
            Err(QueueOpenError::Channel(ChannelError::Ring(
                RingError::InvalidCapacity { .. }
            )))
        ));
        assert!(matches!(
            Segment::open(&address, &OpenOptions::new()),
            Err(SegmentError::NotFound(_))
        ));
    }
}

#[test]
fn priority_order_then_fifo_and_the_type_selections() {
    let (_c, mut q, _) = new_queue("q-select", QueueConfig::new(16, 8));
    // (payload, type, priority)
    for (payload, mtype, prio) in [
        (b"a", 5, 0),
        (b"b", 3, 0),
        (b"c", 9, 4),
        (b"d", 3, 4),
        (b"e", 2, 0),
        (b"f", 7, 31),
    ] {
        q.try_send(payload, mtype, prio).unwrap();
    }
    // Receive order: f(7,31) c(9,4) d(3,4) a(5,0) b(3,0) e(2,0).
    assert_eq!(recv_vec(&mut q, Select::Type(3)).unwrap().2, b"d");
    assert_eq!(
        recv_vec(&mut q, Select::Type(4)),
        Err(QueueRecvError::NoMessage)
    );
    assert_eq!(
        recv_vec(&mut q, Select::TypeAtMost(4)).unwrap().2,
        b"e",
        "lowest type <= 4"
    );
    assert_eq!(recv_vec(&mut q, Select::ExceptType(7)).unwrap().2, b"c");
    assert_eq!(
        recv_vec(&mut q, Select::TypeAtMost(1)),
        Err(QueueRecvError::NoMessage)
    );
    let order: Vec<Vec<u8>> =
        std::iter::from_fn(|| recv_vec(&mut q, Select::Any).ok().map(|m| m.2)).collect();
    assert_eq!(order, [b"f".to_vec(), b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(
        recv_vec(&mut q, Select::Any),
        Err(QueueRecvError::NoMessage)
    );
}

#[test]
fn a_short_buffer_is_refused_or_truncated_never_silently() {
    let (_c, mut q, _) = new_queue("q-trunc", QueueConfig::new(4, 64));
    q.try_send(b"0123456789", 2, 1).unwrap();
    let mut small = [0u8; 4];
    let before = q.stats();
    assert_eq!(
        q.try_recv(Select::Any, &mut small),
        Err(QueueRecvError::TooLarge {
            len: 10,
            capacity: 4
        })
    );
    assert_eq!(q.stats(), before, "the message stays queued");
    let got = q
        .receive(
            &Receive::new(Select::Any).nonblocking().truncate(true),
            &mut small,
        )
        .unwrap();
    assert_eq!((got.len, got.copied, got.truncated()), (10, 4, true));
    assert_eq!(&small, b"0123");
    assert_eq!(q.stats().count, 0);
}

#[test]
fn peek_shows_the_nth_message_without_removing_it() {
    let (_c, mut q, _) = new_queue("q-peek", QueueConfig::new(8, 8));
    for (i, prio) in [0u32, 2, 1].into_iter().enumerate() {
        q.try_send(&[i as u8], 10 + i as u64, prio).unwrap();
    }
    let mut buf = [0u8; 8];
    let peeked: Vec<(u8, u64)> = (0..3)
        .map(|n| {
            let got = q.peek(Select::Any, n, &mut buf).unwrap();
            (buf[0], got.mtype)
        })
        .collect();
    assert_eq!(peeked, [(1, 11), (2, 12), (0, 10)]);
    assert_eq!(
        q.peek(Select::Any, 3, &mut buf),
        Err(QueueRecvError::NoMessage)
    );
    assert_eq!(q.peek(Select::Type(12), 0, &mut buf).unwrap().priority, 1);
    assert_eq!(
        q.peek(Select::Any, 0, &mut [0u8; 0]),
        Err(QueueRecvError::TooLarge {
            len: 1,
            capacity: 0
        })
    );
    assert_eq!(q.stats().count, 3);
}

#[test]
fn blocking_and_timed_receives_wake_on_a_send_and_huge_timeouts_wait() {
    let (_c, mut q, address) = new_queue("q-block", QueueConfig::new(4, 8));
    let sender = std::thread::spawn(move || {
        let mut q = Queue::open(&address).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        q.send(b"late", 3, 0).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        q.send(b"later", 4, 0).unwrap();
        q
    });
    let mut buf = [0u8; 8];
    // A receiver waiting for type 4 is not satisfied by type 3.
    let got = q
        .recv_timeout(Select::Type(4), &mut buf, Duration::MAX)
        .unwrap();
    assert_eq!(&buf[..got.len], b"later");
    let got = q.recv(Select::Any, &mut buf).unwrap();
    assert_eq!(&buf[..got.len], b"late");
    let started = Instant::now();
    assert_eq!(
        q.recv_timeout(Select::Any, &mut buf, Duration::from_millis(40)),
        Err(QueueRecvError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(40));
    drop(sender.join().unwrap());
}

#[test]
fn a_blocked_sender_gets_room_when_a_message_is_received() {
    let (_c, mut q, address) = new_queue("q-room", QueueConfig::new(1, 8));
    q.send(b"1", 1, 0).unwrap();
    let receiver = std::thread::spawn(move || {
        let mut q = Queue::open(&address).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = [0u8; 8];
        q.recv(Select::Any, &mut buf).unwrap();
        q
    });
    q.send_timeout(b"2", 1, 0, Duration::MAX).unwrap();
    drop(receiver.join().unwrap());
    assert_eq!(q.stats().count, 1);
}

#[test]
fn rendezvous_send_returns_once_a_receiver_took_it() {
    let (_c, mut q, address) = new_queue("q-rdv", QueueConfig::new(0, 16));
    let took = Arc::new(AtomicBool::new(false));
    let took_here = took.clone();
    let receiver_address = address.clone();
    let receiver = std::thread::spawn(move || {
        let mut q = Queue::open(&receiver_address).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut buf = [0u8; 16];
        let got = q.recv(Select::Any, &mut buf).unwrap();
        took_here.store(true, Ordering::SeqCst);
        assert_eq!(&buf[..got.len], b"meet");
        q
    });
    q.send(b"meet", 1, 0).unwrap();
    // The receive committed before the send returned.
    assert_eq!(q.stats().received, 1);
    let rx = receiver.join().unwrap();
    assert!(took.load(Ordering::SeqCst));
    drop(rx);
    // Several senders wait at once, each for its own receive.
    let senders: Vec<_> = (0..3u8)
        .map(|i| {
            let address = address.clone();
            std::thread::spawn(move || {
                let mut q = Queue::open(&address).unwrap();
                q.send_timeout(&[i], 1, 0, LIMIT).unwrap();
                q
            })
        })
        .collect();
    let mut buf = [0u8; 16];
    let mut got: Vec<u8> = (0..3)
        .map(|_| {
            q.recv_timeout(Select::Any, &mut buf, LIMIT).unwrap();
            buf[0]
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
    for sender in senders {
        drop(sender.join().unwrap());
    }
    // Nobody receives: the message is withdrawn on timeout.
    assert_eq!(
        q.send_timeout(b"alone", 1, 0, Duration::from_millis(30)),
        Err(QueueSendError::Timeout)
    );
    assert_eq!(q.try_send(b"alone", 1, 0), Err(QueueSendError::Full));
    let stats = q.stats();
    assert_eq!((stats.count, stats.bytes, stats.sent), (0, 0, 6));
}

#[test]
fn statistics_like_msqid_ds_and_readable_without_attaching() {
    let (_c, mut q, address) = new_queue("q-stats", QueueConfig::new(4, 32).max_bytes(100));
    let created = q.stats().created_ns;
    assert!(created > 0);
    q.send(b"hello", 1, 0).unwrap();
    q.send(b"world!", 1, 0).unwrap();
    let mut buf = [0u8; 32];
    q.recv(Select::Any, &mut buf).unwrap();
    let stats = q.stats();
    let pid = u64::from(std::process::id());
    assert_eq!(
        (
            stats.count,
            stats.bytes,
            stats.max_msgs,
            stats.max_bytes,
            stats.max_msg,
            stats.priorities
        ),
        (1, 6, 4, 100, 32, 32)
    );
    assert_eq!((stats.last_send_pid, stats.last_recv_pid), (pid, pid));
    assert!(stats.last_send_ns >= created && stats.last_recv_ns >= stats.last_send_ns);
    assert_eq!(
        (stats.sent, stats.received, stats.repairs, stats.losses),
        (2, 1, 0, 0)
    );
    let segment = Segment::open(&address, &OpenOptions::new().read_only()).unwrap();
    assert_eq!(queue::stats(&segment).unwrap(), stats);
}

#[test]
fn remove_wakes_blocked_peers_and_ends_every_handle() {
    let (_c, mut q, address) = new_queue("q-remove", QueueConfig::new(1, 8));
    let waiting = {
        let address = address.clone();
        std::thread::spawn(move || {
            let mut q = Queue::open(&address).unwrap();
            let mut buf = [0u8; 8];
            q.recv(Select::Type(9), &mut buf)
        })
    };
    q.send(b"x", 1, 0).unwrap();
    let full = {
        let address = address.clone();
        std::thread::spawn(move || Queue::open(&address).unwrap().send(b"y", 1, 0))
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    Queue::remove(&address).unwrap();
    assert_eq!(waiting.join().unwrap(), Err(QueueRecvError::Removed));
    assert_eq!(full.join().unwrap(), Err(QueueSendError::Removed));
    eprintln!(
        "blocked peers saw the removal within {:?}",
        started.elapsed()
    );
    assert_eq!(q.try_send(b"z", 1, 0), Err(QueueSendError::Removed));
    let mut buf = [0u8; 8];
    assert_eq!(
        q.try_recv(Select::Any, &mut buf),
        Err(QueueRecvError::Removed)
    );
    assert!(q.stats().removed);
    assert!(matches!(
        Queue::open(&address),
        Err(QueueOpenError::Channel(ChannelError::Segment(
            SegmentError::NotFound(_)
        )))
    ));
    // The name is free for a new queue.
    let mut fresh =
        Queue::create(&address, &QueueConfig::new(1, 8), &ChannelOptions::new()).unwrap();
    fresh.try_send(b"new", 1, 0).unwrap();
    fresh.remove_queue().unwrap();
    assert_eq!(fresh.try_send(b"z", 1, 0), Err(QueueSendError::Removed));
}

#[test]
fn open_or_create_matches_parameters_or_names_the_difference() {
    let address = unique_posix("q-ooc");
    let _c = Cleanup(address.clone());
    let config = QueueConfig::new(8, 64);
    let options = ChannelOptions::new();
    let (mut a, created) = Queue::open_or_create(&address, &config, &options).unwrap();
    assert!(created);
    let (mut b, created) = Queue::open_or_create(&address, &config, &options).unwrap();
    assert!(!created);
    a.send(b"shared", 1, 0).unwrap();
    assert_eq!(recv_vec(&mut b, Select::Any).unwrap().2, b"shared");
    for (other, field) in [
        (QueueConfig::new(9, 64), "max_msgs"),
        (config.max_bytes(100), "max_bytes"),
        (
            QueueConfig::new(8, 64).max_bytes(512).priorities(33),
            "priorities",
        ),
    ] {
        match Queue::open_or_create(&address, &other, &options) {
            Err(QueueOpenError::Incompatible { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Another kind of segment under the name.
    let records = unique_posix("q-ooc-rec");
    let _c2 = Cleanup(records.clone());
    let _r = ipcring::channel::mpmc::Sender::<u64>::create(&records, 4, &options).unwrap();
    assert!(matches!(
        Queue::open_or_create(&records, &config, &options),
        Err(QueueOpenError::Channel(ChannelError::Segment(
            SegmentError::Incompatible(_)
        )))
    ));
}

#[test]
fn loans_and_in_place_receives() {
    let (_c, mut q, address) = new_queue("q-zero-copy", QueueConfig::new(2, 32).max_bytes(40));
    let mut other = Queue::open(&address).unwrap();
    let mut loan = q.try_loan(20).unwrap();
    assert_eq!(loan.write_at(0, b"0123456789"), 10);
    assert_eq!(loan.write_at(10, b"abcdefghijXYZ"), 10, "only what fits");
    loan.send(4, 2).unwrap();
    // A loan reserves its bytes; dropping it unsent gives them back.
    let loan = q.try_loan(20).unwrap();
    assert_eq!(other.try_send(&[0; 1], 1, 0), Err(QueueSendError::Full));
    drop(loan);
    assert_eq!(q.stats().bytes, 20);
    assert!(matches!(
        q.try_loan(33),
        Err(QueueSendError::TooLarge { len: 33, max: 32 })
    ));
    // An invalid type frees the loan and queues nothing.
    let loan = q.try_loan(1).unwrap();
    assert_eq!(loan.send(0, 0), Err(QueueSendError::InvalidType));
    assert_eq!(q.stats().count, 1);
    let message = q.try_recv_in_place(Select::Type(4)).unwrap();
    assert_eq!(
        (message.mtype(), message.priority(), message.len()),
        (4, 2, 20)
    );
    let mut part = [0u8; 6];
    assert_eq!(message.read_at(8, &mut part), 6);
    assert_eq!(&part, b"89abcd");
    assert_eq!(message.read_at(18, &mut part), 2);
    assert_eq!(message.to_vec(), b"0123456789abcdefghij");
    drop(message);
    let stats = q.stats();
    assert_eq!((stats.count, stats.bytes, stats.received), (0, 0, 1));
    q.try_send(&[1; 20], 1, 0).unwrap();
    q.try_send(&[1; 20], 1, 0).unwrap();
    assert!(matches!(
        q.try_recv_in_place(Select::Type(99)),
        Err(QueueRecvError::NoMessage)
    ));
}

#[test]
fn sysv_and_anonymous_queues() {
    let address = unique_sysv();
    let _c = Cleanup(address.clone());
    let mut a = Queue::create(&address, &QueueConfig::new(4, 8), &ChannelOptions::new()).unwrap();
    let mut b = Queue::open(&address).unwrap();
    a.send(b"sysv", 1, 0).unwrap();
    assert_eq!(recv_vec(&mut b, Select::Any).unwrap().2, b"sysv");
    let segment =
        queue::create_segment(None, &QueueConfig::new(4, 8), &ChannelOptions::new()).unwrap();
    let mut anon = Queue::attach(segment).unwrap();
    anon.send(b"memfd", 1, 0).unwrap();
    assert_eq!(recv_vec(&mut anon, Select::Any).unwrap().2, b"memfd");
}

fn address_from_env() -> Address {
    std::env::var("QUEUE").unwrap().parse().unwrap()
}

/// Several receiver processes compete: each message reaches exactly one.
#[test]
fn competing_receivers_in_other_processes_get_each_message_once() {
    const MESSAGES: u64 = 600;
    if let Some(role) = child_role() {
        assert_eq!(role, "receiver");
        let mut q = Queue::open(&address_from_env()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        loop {
            match q.recv_timeout(Select::Any, &mut buf, LIMIT) {
                Ok(m) if m.mtype == 2 => break,
                Ok(_) => got.push(u64::from_le_bytes(buf)),
                Err(e) => panic!("{e}"),
            }
        }
        let out = std::env::var("OUT").unwrap();
        std::fs::write(
            out,
            got.iter().map(|n| format!("{n}\n")).collect::<String>(),
        )
        .unwrap();
        return;
    }
    let (_c, mut q, address) = new_queue("q-compete", QueueConfig::new(16, 8));
    let dir = std::env::temp_dir();
    let outs: Vec<_> = (0..3)
        .map(|i| dir.join(format!("ipcring-q-compete-{}-{i}", std::process::id())))
        .collect();
    let children: Vec<_> = outs
        .iter()
        .map(|out| {
            spawn_child(
                "competing_receivers_in_other_processes_get_each_message_once",
                "receiver",
                &[
                    ("QUEUE", address.to_string()),
                    ("OUT", out.display().to_string()),
                ],
            )
        })
        .collect();
    for n in 0..MESSAGES {
        q.send_timeout(&n.to_le_bytes(), 1, (n % 3) as u32, LIMIT)
            .unwrap();
    }
    for _ in 0..3 {
        q.send_timeout(&[0; 8], 2, 0, LIMIT).unwrap();
    }
    for child in children {
        child.wait_success(LIMIT);
    }
    let mut all: Vec<u64> = Vec::new();
    for out in &outs {
        let text = std::fs::read_to_string(out).unwrap();
        let _ = std::fs::remove_file(out);
        all.extend(text.lines().map(|l| l.parse::<u64>().unwrap()));
    }
    all.sort_unstable();
    assert_eq!(all, (0..MESSAGES).collect::<Vec<_>>());
    let stats = q.stats();
    assert_eq!(
        (stats.count, stats.sent, stats.received),
        (0, MESSAGES + 3, MESSAGES + 3)
    );
}

/// Any bytes in the queue's memory: every operation ends, with a result or
/// a typed error, never a panic or a hang (bounded walks, checked
/// indices); a lock word no handle could have written is `Corrupted`.
#[test]
fn scribbled_memory_gives_typed_errors_never_a_panic_or_hang() {
    use std::sync::atomic::AtomicU64;
    const QUEUE: usize = ipcring::channel::RING_OFFSET;
    const LOCK_HOLDER: usize = QUEUE + 88;
    let config = QueueConfig::new(8, 24);
    let (_c, mut q, address) = new_queue("q-scribble", config);
    let mut segment = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
    let words = segment.user_len() / 8;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut corrupted = 0;
    let short = Duration::from_millis(5);
    for round in 0..300 {
        for i in 0..4 {
            q.try_send(&[i; 5], 1 + u64::from(i), u32::from(i)).ok();
        }
        // Scribble a few words of the queue (never the endpoint table, the
        // magic, or the parameters read at attach).
        for _ in 0..1 + round % 4 {
            let index = (QUEUE + 88) / 8 + (next() as usize % (words - (QUEUE + 88) / 8));
            if index * 8 == LOCK_HOLDER {
                continue;
            }
            let value = match next() % 4 {
                0 => 0,
                1 => u64::MAX,
                2 => next() % 16,
                _ => next(),
            };
            segment
                .view::<AtomicU64>(index * 8)
                .unwrap()
                .store(value, Ordering::Relaxed);
        }
        let mut buf = [0u8; 24];
        let results = [
            q.try_send(b"abc", 1, 0).err().map(|e| e.to_string()),
            q.send_timeout(b"abc", 2, 1, short)
                .err()
                .map(|e| e.to_string()),
            q.try_recv(Select::Any, &mut buf)
                .err()
                .map(|e| e.to_string()),
            q.recv_timeout(Select::TypeAtMost(3), &mut buf, short)
                .err()
                .map(|e| e.to_string()),
            q.peek(Select::ExceptType(2), 1, &mut buf)
                .err()
                .map(|e| e.to_string()),
            q.try_recv_in_place(Select::Type(3))
                .err()
                .map(|e| e.to_string()),
            q.try_loan(4).err().map(|e| e.to_string()),
        ];
        corrupted += results
            .iter()
            .flatten()
            .filter(|e| e.contains("corrupted"))
            .count();
        if round % 50 == 49 {
            // Start over from a fresh queue now and then.
            drop(q);
            Queue::remove(&address).unwrap();
            q = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
            segment = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
        }
    }
    eprintln!("{corrupted} operations reported corrupted memory");
    assert!(corrupted > 0);
    // The queue was re-created: map the current one.
    let segment = Segment::open(&address, &OpenOptions::new().register(false)).unwrap();
    segment
        .view::<AtomicU64>(LOCK_HOLDER)
        .unwrap()
        .store(12345, Ordering::Relaxed);
    assert!(matches!(
        q.try_send(b"x", 1, 0),
        Err(QueueSendError::Corrupted(_))
    ));
    let mut buf = [0u8; 24];
    assert!(matches!(
        q.recv(Select::Any, &mut buf),
        Err(QueueRecvError::Corrupted(_))
    ));
}

#[test]
fn remove_leaves_other_kinds_alone() {
    let address = unique_posix("q-rm-other");
    let _c = Cleanup(address.clone());
    let _tx =
        ipcring::channel::mpmc::Sender::<u64>::create(&address, 4, &ChannelOptions::new()).unwrap();
    assert!(matches!(
        Queue::remove(&address),
        Err(QueueOpenError::Channel(ChannelError::Segment(
            SegmentError::Incompatible(_)
        )))
    ));
    assert!(Segment::inspect(&address).is_ok());
    assert!(matches!(
        Queue::remove(&unique_posix("q-rm-missing")),
        Err(QueueOpenError::Channel(ChannelError::Segment(
            SegmentError::NotFound(_)
        )))
    ));
}
