//! Datagram ports across processes: boundaries kept (zero-length too),
//! owned names, a dead owner's name taken over, no silent truncation,
//! batches, zero-copy loans and borrowed receives, and anonymous ports
//! handed to a child; mailboxes with competing receiver processes.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use common::{Cleanup, child_role, spawn_child, unique_posix};
use ipcring::channel::datagram::{Mailbox, Port, PortSender};
use ipcring::channel::queue::{QueueRecvError, QueueSendError};
use ipcring::channel::records::{RecordRecvError, RecordSendError};
use ipcring::channel::{ChannelError, ChannelOptions, TryRecvError};
use ipcring::segment::{Address, OpenOptions, Segment, SegmentError};

const LIMIT: Duration = Duration::from_secs(60);

fn address_from_env() -> Address {
    std::env::var("SEGMENT").unwrap().parse().unwrap()
}

/// Datagram `i` of a sender: `i % 300` bytes (zero-length included), each
/// byte derived from `i` and its position.
fn datagram(sender: u64, i: u64) -> Vec<u8> {
    (0..(i % 300) as usize)
        .map(|at| (sender * 31 + i * 7 + at as u64) as u8)
        .collect()
}

const SENT: u64 = 2000;

#[test]
fn boundaries_are_kept_between_processes() {
    if let Some(role) = child_role() {
        let sender: u64 = role.parse().unwrap();
        let mut tx = PortSender::connect_timeout(&address_from_env(), LIMIT).unwrap();
        for i in 0..SENT {
            let mut message = sender.to_le_bytes().to_vec();
            message.extend(i.to_le_bytes());
            message.extend(datagram(sender, i));
            tx.send(&message).unwrap();
        }
        return;
    }
    let address = unique_posix("dgram-bounds");
    let _cleanup = Cleanup(address.clone());
    let mut port = Port::bind(&address, 1 << 14, &ChannelOptions::new()).unwrap();
    // A port is disconnected once every sender that came has gone: hold
    // one, so that a child that finishes before the others connect does
    // not end the test early.
    let keeper = PortSender::connect(&address).unwrap();
    let children: Vec<_> = (0..3)
        .map(|s| {
            spawn_child(
                "boundaries_are_kept_between_processes",
                &s.to_string(),
                &[("SEGMENT", address.to_string())],
            )
        })
        .collect();
    let mut next = [0u64; 3];
    let mut buf = vec![0u8; port.max_datagram()];
    for _ in 0..3 * SENT {
        let n = port.recv_timeout(&mut buf, LIMIT).unwrap();
        let sender = u64::from_le_bytes(buf[..8].try_into().unwrap());
        let i = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        assert_eq!(i, next[sender as usize], "in order per sender");
        next[sender as usize] += 1;
        assert_eq!(&buf[16..n], datagram(sender, i), "datagram {i} whole");
    }
    for child in children {
        child.wait_success(LIMIT);
    }
    drop(keeper);
    assert_eq!(
        port.try_recv(&mut buf),
        Err(RecordRecvError::Disconnected),
        "every sender gone and nothing left"
    );
}

#[test]
fn a_port_owns_its_name() {
    let address = unique_posix("dgram-owned");
    let _cleanup = Cleanup(address.clone());
    let port = Port::bind(&address, 4096, &ChannelOptions::new()).unwrap();
    let mut tx = PortSender::connect(&address).unwrap();
    assert!(
        matches!(
            Port::bind(&address, 4096, &ChannelOptions::new()),
            Err(ChannelError::Segment(SegmentError::AlreadyExists(_)))
        ),
        "a live port keeps its name"
    );
    drop(port);
    assert!(matches!(
        PortSender::connect(&address),
        Err(ChannelError::Segment(SegmentError::NotFound(_)))
    ));
    assert_eq!(tx.try_send(b"late"), Err(RecordSendError::Disconnected));
}

#[test]
fn a_dead_owners_name_is_taken_over() {
    if child_role().is_some() {
        let _port = Port::bind(&address_from_env(), 4096, &ChannelOptions::new()).unwrap();
        std::thread::sleep(LIMIT);
        return;
    }
    let address = unique_posix("dgram-dead-owner");
    let _cleanup = Cleanup(address.clone());
    let mut child = spawn_child(
        "a_dead_owners_name_is_taken_over",
        "owner",
        &[("SEGMENT", address.to_string())],
    );
    common::eventually(LIMIT, "the child bound the port", || {
        PortSender::connect(&address).is_ok()
    });
    child.child().kill().unwrap();
    child.wait_code(LIMIT);
    let mut port = Port::bind(&address, 4096, &ChannelOptions::new()).unwrap();
    let mut tx = PortSender::connect(&address).unwrap();
    tx.send(b"new owner").unwrap();
    let mut buf = [0u8; 64];
    let n = port.recv_timeout(&mut buf, LIMIT).unwrap();
    assert_eq!(&buf[..n], b"new owner");
}

#[test]
fn small_buffers_never_truncate() {
    let address = unique_posix("dgram-small");
    let _cleanup = Cleanup(address.clone());
    let mut port = Port::bind(&address, 4096, &ChannelOptions::new()).unwrap();
    let mut tx = PortSender::connect(&address).unwrap();
    tx.send(b"twelve bytes").unwrap();
    let mut small = [0u8; 4];
    assert!(matches!(
        port.try_recv(&mut small),
        Err(RecordRecvError::BufferTooSmall { len: 12, .. })
    ));
    let mut big = [0u8; 16];
    assert_eq!(port.try_recv(&mut big), Ok(12), "still queued, whole");
    assert_eq!(&big[..12], b"twelve bytes");
    assert_eq!(port.try_recv(&mut big), Err(RecordRecvError::Empty));
    assert_eq!(
        port.recv_timeout(&mut big, Duration::from_millis(20)),
        Err(RecordRecvError::Timeout)
    );
    let too_big = vec![0u8; port.max_datagram() + 1];
    assert!(matches!(
        tx.try_send(&too_big),
        Err(RecordSendError::TooLarge { .. })
    ));
}

#[test]
fn batches_loans_and_borrowed_receives() {
    let address = unique_posix("dgram-batch");
    let _cleanup = Cleanup(address.clone());
    let mut port = Port::bind(&address, 4096, &ChannelOptions::new()).unwrap();
    let mut tx = PortSender::connect(&address).unwrap();
    let mut batch = Vec::new();
    assert_eq!(port.try_recv_batch(&mut batch, 4), Err(TryRecvError::Empty));
    // More than fit: a prefix goes.
    let big = vec![7u8; 1000];
    let many: Vec<&[u8]> = (0..10).map(|_| big.as_slice()).collect();
    let sent = tx.try_send_batch(&many).unwrap();
    assert!((1..10).contains(&sent), "sent {sent}");
    assert_eq!(port.recv_batch(&mut batch, 100).unwrap(), sent);
    assert!(batch.iter().all(|d| d == &big));
    assert_eq!(tx.send_batch(&[b"x", b"", b"yz"]), Ok(3));
    batch.clear();
    assert_eq!(port.try_recv_batch(&mut batch, 2), Ok(2));
    assert_eq!(batch, [b"x".to_vec(), Vec::new()]);
    assert_eq!(port.try_recv_batch(&mut batch, 2), Ok(1));

    // Zero-copy both ways.
    let mut grant = tx.loan(5).unwrap();
    grant.write_at(0, b"hello");
    grant.commit();
    let view = port.recv_borrowed().unwrap();
    assert_eq!(view.to_vec(), b"hello");
    drop(view);
    assert!(matches!(port.try_recv_borrowed(), Err(TryRecvError::Empty)));
}

#[test]
fn an_anonymous_port_is_handed_to_a_child() {
    if child_role().is_some() {
        let fd: i32 = std::env::var("PORT_FD").unwrap().parse().unwrap();
        let segment = Segment::open_inherited(fd, &OpenOptions::new()).unwrap();
        let mut tx = PortSender::attach(segment).unwrap();
        for i in 0..100u32 {
            tx.send(&i.to_le_bytes()).unwrap();
        }
        return;
    }
    let mut port = Port::bind_anonymous(4096, &ChannelOptions::new()).unwrap();
    let fd: OwnedFd = port.segment().inheritable_fd().unwrap();
    let child = spawn_child(
        "an_anonymous_port_is_handed_to_a_child",
        "sender",
        &[("PORT_FD", fd.as_raw_fd().to_string())],
    );
    drop(fd);
    let mut buf = [0u8; 4];
    for i in 0..100u32 {
        assert_eq!(port.recv_timeout(&mut buf, LIMIT), Ok(4));
        assert_eq!(u32::from_le_bytes(buf), i);
    }
    child.wait_success(LIMIT);
}

const MAILBOX_SENT: u32 = 3000;

#[test]
fn a_mailbox_gives_each_datagram_to_one_of_its_receivers() {
    if let Some(role) = child_role() {
        let mut mailbox = Mailbox::open(&address_from_env()).unwrap();
        let mut out = std::fs::File::create(role).unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = mailbox.recv_timeout(&mut buf, LIMIT).unwrap();
            if n == 0 {
                break; // the end marker, one per receiver
            }
            use std::io::Write;
            writeln!(out, "{}", u32::from_le_bytes(buf[..4].try_into().unwrap())).unwrap();
        }
        return;
    }
    let address = unique_posix("dgram-mailbox");
    let _cleanup = Cleanup(address.clone());
    let mut mailbox = Mailbox::create(&address, 32, 64, &ChannelOptions::new()).unwrap();
    let dir = std::env::temp_dir().join(format!("ipcring-mailbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct RemoveDir(std::path::PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _dir = RemoveDir(dir.clone());
    let files: Vec<_> = (0..3).map(|i| dir.join(format!("r{i}"))).collect();
    let children: Vec<_> = files
        .iter()
        .map(|file| {
            spawn_child(
                "a_mailbox_gives_each_datagram_to_one_of_its_receivers",
                file.to_str().unwrap(),
                &[("SEGMENT", address.to_string())],
            )
        })
        .collect();
    for i in 0..MAILBOX_SENT {
        let mut datagram = i.to_le_bytes().to_vec();
        datagram.extend(std::iter::repeat_n(i as u8, (i % 40) as usize));
        mailbox.send_timeout(&datagram, LIMIT).unwrap();
    }
    for _ in 0..3 {
        mailbox.send_timeout(b"", LIMIT).unwrap();
    }
    for child in children {
        child.wait_success(LIMIT);
    }
    let mut seen: Vec<u32> = files
        .iter()
        .flat_map(|file| {
            std::fs::read_to_string(file)
                .unwrap()
                .lines()
                .map(|line| line.parse().unwrap())
                .collect::<Vec<u32>>()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..MAILBOX_SENT).collect::<Vec<_>>(),
        "each exactly once"
    );
}

#[test]
fn a_mailbox_persists_until_removed() {
    let address = unique_posix("dgram-mailbox-life");
    let _cleanup = Cleanup(address.clone());
    let mut first = Mailbox::create(&address, 4, 16, &ChannelOptions::new()).unwrap();
    first.send(b"kept").unwrap();
    first.send(b"").unwrap();
    drop(first);
    let mut later = Mailbox::open_or_create(&address, 4, 16, &ChannelOptions::new()).unwrap();
    let mut small = [0u8; 2];
    assert!(matches!(
        later.try_recv(&mut small),
        Err(QueueRecvError::TooLarge { len: 4, .. })
    ));
    let mut batch = Vec::new();
    assert_eq!(later.try_recv_batch(&mut batch, 8), Ok(2));
    assert_eq!(batch, [b"kept".to_vec(), Vec::new()]);
    assert!(matches!(
        later.try_recv(&mut small),
        Err(QueueRecvError::NoMessage)
    ));
    assert!(matches!(
        later.recv_timeout(&mut small, Duration::from_millis(20)),
        Err(QueueRecvError::Timeout)
    ));
    assert!(matches!(
        later.try_send(&[0u8; 17]),
        Err(QueueSendError::TooLarge { .. })
    ));
    assert_eq!(later.try_send_batch(&[b"1", b"2", b"3", b"4", b"5"]), Ok(4));
    assert!(matches!(later.try_send(b"6"), Err(QueueSendError::Full)));
    Mailbox::remove(&address).unwrap();
    assert!(matches!(later.try_send(b"7"), Err(QueueSendError::Removed)));
}

/// A sender with no receiver attached yet: its messages wait in the
/// channel until it is full, then `Full`; the first receiver gets them all.
#[test]
fn sends_before_any_receiver_are_kept_until_full() {
    use ipcring::channel::{TrySendError, spsc};
    let address = unique_posix("dgram-no-receiver");
    let _cleanup = Cleanup(address.clone());
    let mut tx = spsc::Sender::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
    let mut sent = 0;
    while tx.try_send(sent).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 8);
    assert_eq!(tx.try_send(99), Err(TrySendError::Full(99)));
    let mut rx = spsc::Receiver::<u64>::open(&address).unwrap();
    for i in 0..8 {
        assert_eq!(rx.try_recv(), Ok(i));
    }
    let mailbox_address = unique_mailbox(&address);
    let _cleanup_mailbox = Cleanup(mailbox_address.clone());
    let mut mailbox = Mailbox::create(&mailbox_address, 2, 8, &ChannelOptions::new()).unwrap();
    mailbox.try_send(b"1").unwrap();
    mailbox.try_send(b"2").unwrap();
    assert!(matches!(mailbox.try_send(b"3"), Err(QueueSendError::Full)));
}

fn unique_mailbox(base: &Address) -> Address {
    format!("{base}-mb").parse().unwrap()
}

/// A port is disconnected once its senders have all gone and it is
/// drained, and receives again when a sender connects later.
#[test]
fn a_port_is_disconnected_between_senders() {
    let address = unique_posix("dgram-between");
    let _cleanup = Cleanup(address.clone());
    let mut port = Port::bind(&address, 4096, &ChannelOptions::new()).unwrap();
    let mut buf = [0u8; 16];
    let mut first = PortSender::connect(&address).unwrap();
    first.send(b"one").unwrap();
    drop(first);
    assert_eq!(port.try_recv(&mut buf), Ok(3));
    assert_eq!(port.try_recv(&mut buf), Err(RecordRecvError::Disconnected));
    let mut second = PortSender::connect(&address).unwrap();
    second.send(b"two").unwrap();
    assert_eq!(port.recv_timeout(&mut buf, LIMIT), Ok(3));
    assert_eq!(&buf[..3], b"two");
}
