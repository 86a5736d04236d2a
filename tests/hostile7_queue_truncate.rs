//! A co-tenant truncates a message queue's file under its handles. The
//! promise for every channel: no SIGBUS, and no operation reports success
//! for work that went into memory nobody else sees; blocked calls end
//! with `Corrupted` within a bounded time.
//!
//! Each case runs in a child process, so that a SIGBUS the library fails
//! to catch shows as a child killed by a signal rather than killing the
//! whole test binary.

mod common;
mod hostile_support;

use std::time::Duration;

use common::truncate::truncate_segment_file_from_child;
use common::{Cleanup, unique_posix};
use hostile_support::{Exit, Victim, env, role};
use ipcring::channel::ChannelOptions;
use ipcring::channel::datagram::Mailbox;
use ipcring::channel::queue::{Queue, QueueConfig, Select};
use ipcring::segment::Address;

const LIMIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(300);

fn is_truncated_error(text: &str) -> bool {
    text.contains("Corrupted") || text.contains("Removed")
}

/// In a child: a queue with two handles (each its own mapping), a message
/// queued, then the file cut to `len`; every operation afterwards must
/// report an error, never `Ok`.
fn truncated_queue_child() {
    let address: Address = env("SEGMENT").parse().unwrap();
    let len: u64 = env("CUT").parse().unwrap();
    let config = QueueConfig::new(4, 64);
    let mut a = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
    let mut b = Queue::open(&address).unwrap();
    a.send(b"before", 1, 0).unwrap();
    truncate_segment_file_from_child(&address, len);
    let mut buf = [0u8; 64];
    let mut problems = Vec::new();
    let mut check = |what: &str, result: String| {
        eprintln!("{what}: {result}");
        if !is_truncated_error(&result) {
            problems.push(format!("{what}: {result}"));
        }
    };
    check("try_send", format!("{:?}", a.try_send(b"x", 1, 0)));
    check(
        "send_timeout",
        format!("{:?}", a.send_timeout(b"x", 1, 0, SHORT)),
    );
    check(
        "try_recv",
        format!("{:?}", b.try_recv(Select::Any, &mut buf)),
    );
    check(
        "recv_timeout",
        format!("{:?}", b.recv_timeout(Select::Any, &mut buf, SHORT)),
    );
    check("peek", format!("{:?}", b.peek(Select::Any, 0, &mut buf)));
    check(
        "loan",
        format!(
            "{:?}",
            a.try_loan(3).map(|mut loan| {
                loan.write_at(0, b"abc");
                loan.send(1, 0)
            })
        ),
    );
    check(
        "in place",
        format!("{:?}", b.try_recv_in_place(Select::Any).map(|m| m.to_vec())),
    );
    drop((a, b));
    let mut mailbox = Mailbox::open(&address);
    if let Ok(mailbox) = mailbox.as_mut() {
        check("mailbox send", format!("{:?}", mailbox.try_send(b"m")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn run_cut(test: &str, len: u64) {
    let address = unique_posix("h7-qtrunc");
    let _cleanup = Cleanup(address.clone());
    let mut child = Victim::spawn_with(
        test,
        "child",
        None,
        &[("SEGMENT", address.to_string()), ("CUT", len.to_string())],
        false,
    );
    let exit = child.wait_exit(LIMIT);
    assert_eq!(
        exit,
        Some(Exit::Code(0)),
        "the child failed (see its stderr)"
    );
}

/// After the file is cut to nothing, every queue operation says so.
#[test]
fn queue_operations_after_truncation_to_zero_report_it() {
    if role().is_some() {
        return truncated_queue_child();
    }
    run_cut("queue_operations_after_truncation_to_zero_report_it", 0);
}

/// Cut to one page: the endpoint tables survive, the queue does not.
#[test]
fn queue_operations_after_truncation_to_one_page_report_it() {
    if role().is_some() {
        return truncated_queue_child();
    }
    run_cut(
        "queue_operations_after_truncation_to_one_page_report_it",
        4096,
    );
}

/// A receiver blocked with no timeout in a truncated queue ends with an
/// error instead of waiting for ever.
#[test]
fn a_blocked_queue_receiver_ends_after_truncation() {
    let address = unique_posix("h7-qtrunc-blocked");
    let _cleanup = Cleanup(address.clone());
    let config = QueueConfig::new(2, 16);
    let mut a = Queue::create(&address, &config, &ChannelOptions::new()).unwrap();
    let mut b = Queue::open(&address).unwrap();
    a.send(b"1", 1, 0).unwrap();
    a.send(b"2", 1, 0).unwrap();
    let receiver = hostile_support::Pending::start("blocked-recv", move || {
        let mut buf = [0u8; 16];
        format!("{:?}", b.recv(Select::Type(9), &mut buf))
    });
    let sender = hostile_support::Pending::start("blocked-send", move || {
        format!("{:?}", a.send(b"3", 1, 0))
    });
    std::thread::sleep(Duration::from_millis(200));
    truncate_segment_file_from_child(&address, 0);
    let got = receiver.finish(LIMIT).expect_returned("blocked recv");
    let sent = sender.finish(LIMIT).expect_returned("blocked send");
    assert!(got.contains("Corrupted"), "recv: {got}");
    assert!(sent.contains("Corrupted"), "send: {sent}");
}
