//! Channels whose segment file another process truncates (or truncates and
//! grows back) while endpoints are blocked or sending: nobody dies of
//! SIGBUS, blocked calls end with `Corrupted`, and sends that would go to
//! memory nobody else sees report `Corrupted` instead of `Ok`.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::truncate::truncate_segment_file_from_child;
use common::{Cleanup, unique_posix};
use ipcring::channel::{ChannelOptions, RecvError, TrySendError, mpmc, records, spsc};
use ipcring::ring::record::ProducerMode;

const LIMIT: Duration = Duration::from_secs(5);

/// Runs `f` on a thread; fails the test if it does not return in time.
fn returns_within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result
        .recv_timeout(LIMIT)
        .expect("a blocked call never returned")
}

fn segment_size(address: &ipcring::segment::Address) -> u64 {
    std::fs::metadata(common::truncate::segment_file(address))
        .unwrap()
        .len()
}

#[test]
fn blocked_receivers_end_with_corrupted_when_the_file_is_truncated() {
    for regrow in [false, true] {
        // MPMC.
        let address = unique_posix("trunc-mpmc");
        let _cleanup = Cleanup(address.clone());
        let mut rx = mpmc::Receiver::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
        let mut tx = mpmc::Sender::<u64>::open(&address).unwrap();
        let size = segment_size(&address);
        let handle = std::thread::spawn(move || rx.recv());
        std::thread::sleep(Duration::from_millis(150));
        truncate_segment_file_from_child(&address, 0);
        if regrow {
            truncate_segment_file_from_child(&address, size);
        }
        let result = returns_within(move || handle.join().unwrap());
        assert!(
            matches!(result, Err(RecvError::Corrupted(_))),
            "regrow {regrow}: {result:?}"
        );
        // The sender learns too. Truncated: at once, instead of "sending"
        // into private zeros. Grown back: the fast path cannot tell zeros
        // from an empty ring, so sends succeed (into the shared, zeroed
        // file) until the ring looks full and the slow path re-validates.
        let mut accepted = 0;
        let error = loop {
            match tx.try_send(1) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted <= 8, "regrow {regrow}: sends never stopped");
        };
        if regrow {
            // The receiver that ended with Corrupted has left, which its
            // leaving marks even in zeroed tables: Disconnected will do.
            assert!(
                matches!(
                    error,
                    TrySendError::Corrupted(1) | TrySendError::Disconnected(1)
                ),
                "regrow: {error:?}"
            );
        } else {
            assert!(matches!(error, TrySendError::Corrupted(1)), "{error:?}");
            assert_eq!(accepted, 0);
        }

        // A many-sender record channel.
        let address = unique_posix("trunc-rec");
        let _cleanup = Cleanup(address.clone());
        let options = ChannelOptions::new();
        let mut rx =
            records::Receiver::create(&address, 1024, ProducerMode::Many, &options).unwrap();
        let mut tx = records::Sender::open(&address).unwrap();
        let size = segment_size(&address);
        let handle = std::thread::spawn(move || rx.recv().map(|view| view.len()));
        std::thread::sleep(Duration::from_millis(150));
        truncate_segment_file_from_child(&address, 0);
        if regrow {
            truncate_segment_file_from_child(&address, size);
        }
        let result = returns_within(move || handle.join().unwrap());
        assert!(
            matches!(result, Err(RecvError::Corrupted(_))),
            "regrow {regrow}: {result:?}"
        );
        let mut accepted = 0;
        let error = loop {
            match tx.try_send(b"lost?") {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            assert!(
                accepted <= 1024 / 16,
                "regrow {regrow}: sends never stopped"
            );
        };
        if regrow {
            assert!(
                matches!(
                    error,
                    records::RecordSendError::Corrupted(_) | records::RecordSendError::Disconnected
                ),
                "regrow: {error}"
            );
        } else {
            assert!(
                matches!(error, records::RecordSendError::Corrupted(_)),
                "{error}"
            );
            assert_eq!(accepted, 0);
        }

        // SPSC, blocked with the default strategy.
        let address = unique_posix("trunc-spsc");
        let _cleanup = Cleanup(address.clone());
        let mut rx = spsc::Receiver::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
        let _tx = spsc::Sender::<u64>::open(&address).unwrap();
        let size = segment_size(&address);
        let handle = std::thread::spawn(move || rx.recv());
        std::thread::sleep(Duration::from_millis(150));
        truncate_segment_file_from_child(&address, 0);
        if regrow {
            truncate_segment_file_from_child(&address, size);
        }
        let result = returns_within(move || handle.join().unwrap());
        assert!(
            matches!(result, Err(RecvError::Corrupted(_))),
            "regrow {regrow}: {result:?}"
        );
    }
}

#[test]
fn a_sender_in_a_loop_stops_with_corrupted_when_the_file_is_truncated() {
    let address = unique_posix("trunc-loop");
    let _cleanup = Cleanup(address.clone());
    let mut tx = mpmc::Sender::<u64>::create(&address, 1024, &ChannelOptions::new()).unwrap();
    let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
    let sender = std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0u64;
        loop {
            match tx.send_timeout(sent, Duration::from_millis(10)) {
                Ok(()) => sent += 1,
                Err(ipcring::channel::SendTimeoutError::Timeout(_)) => {}
                Err(e) => return (sent, format!("{e}")),
            }
            assert!(started.elapsed() < LIMIT, "the sender never stopped");
        }
    });
    let mut received = 0;
    while received < 1000 {
        if rx.try_recv().is_ok() {
            received += 1;
        }
    }
    truncate_segment_file_from_child(&address, 0);
    let (sent, error) = returns_within(move || sender.join().unwrap());
    assert!(sent >= 1000);
    assert!(error.contains("corrupted"), "{error}");
    assert!(matches!(
        rx.try_recv(),
        Err(ipcring::channel::TryRecvError::Corrupted(_))
    ));
    assert!(rx.segment().is_broken());
}

/// Byte streams map their data area a second time, twice (the mirror). A
/// file truncated under both mappings, or only under the data area (so
/// that only the mirror's pages are lost), ends blocked reads and every
/// later read, write and window with `InvalidData`, and nobody dies of
/// SIGBUS.
#[test]
fn streams_report_a_truncated_file_under_the_mirror() {
    use std::io::{ErrorKind, Read, Write};

    use ipcring::channel::stream;

    let page = ipcring::segment::page_size();
    let capacity = 4 * page;
    for keep_control in [true, false] {
        let address = unique_posix("trunc-stream");
        let _cleanup = Cleanup(address.clone());
        let mut reader =
            stream::Reader::create(&address, capacity, &ChannelOptions::new()).unwrap();
        let mut writer = stream::Writer::open(&address).unwrap();
        writer.write_all(&vec![1; page]).unwrap();
        let mut sink = vec![0; page];
        reader.read_exact(&mut sink).unwrap();
        // The data area is the last `capacity` bytes of the file.
        let cut = if keep_control {
            segment_size(&address) - capacity as u64
        } else {
            0
        };
        let blocked = std::thread::spawn(move || {
            let result = reader.read(&mut [0; 64]);
            (result, reader)
        });
        std::thread::sleep(Duration::from_millis(150));
        truncate_segment_file_from_child(&address, cut);
        let (result, mut reader) = returns_within(move || blocked.join().unwrap());
        assert_eq!(
            result.unwrap_err().kind(),
            ErrorKind::InvalidData,
            "cut at {cut}"
        );
        // The writer touches the lost pages through its mirror: the fault
        // is repaired with zeros, and the write reports it.
        let error = writer.write(&[2; 100]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData, "cut at {cut}");
        let error = match writer.try_write_window(1) {
            Ok(mut window) => {
                window.copy_from(0, b"zeros");
                window.commit(5).unwrap_err()
            }
            Err(e) => e,
        };
        assert_eq!(error.kind(), ErrorKind::InvalidData, "cut at {cut}");
        let error = reader.try_read(&mut [0; 64]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData, "cut at {cut}");
        if keep_control {
            // The segment's own mapping never touched a lost page: the
            // mirror's registration with the SIGBUS handler caught it.
            assert!(!writer.segment().is_broken());
        }
    }
}
