//! Bad input through the library's own API: absurd capacities, lengths,
//! offsets, timeouts and wait strategies. Each call must return (a typed
//! error or a value) promptly, never panic or run for much longer than it
//! was asked to.

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use common::{Cleanup, unique_posix};
use hostile_support::{Outcome, bounded};
use ipcring::channel::{ChannelOptions, RecvTimeoutError, mpmc, records, spsc};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{CreateOptions, Segment};
use ipcring::sync::WaitStrategy;

const LIMIT: Duration = Duration::from_secs(10);

fn no_panic<T: Send + 'static>(what: &str, call: impl FnOnce() -> T + Send + 'static) -> T {
    match bounded(LIMIT, call) {
        Outcome::Returned(value) => value,
        Outcome::Panicked(message) => panic!("{what}: panicked: {message}"),
        Outcome::Hung => panic!("{what}: did not return within {LIMIT:?}"),
    }
}

#[test]
fn absurd_sizes_and_lengths_are_refused_with_typed_errors() {
    let options = ChannelOptions::new();
    for capacity in [0usize, 1 << 41, 1 << 62, usize::MAX] {
        let address = unique_posix("api-cap");
        let _cleanup = Cleanup(address.clone());
        let a = address.clone();
        let o = options.clone();
        assert!(no_panic("spsc capacity", move || {
            spsc::Sender::<u64>::create(&a, capacity, &o).is_err()
        }));
        let a = address.clone();
        let o = options.clone();
        assert!(no_panic("mpmc capacity", move || {
            mpmc::Sender::<u64>::create(&a, capacity, &o).is_err()
        }));
        let a = address.clone();
        let o = options.clone();
        assert!(no_panic("record capacity", move || {
            records::Sender::create(&a, capacity, ProducerMode::Many, &o).is_err()
        }));
    }
    for size in [0usize, usize::MAX, usize::MAX - 4095, 1 << 41] {
        let address = unique_posix("api-size");
        let _cleanup = Cleanup(address.clone());
        assert!(no_panic("segment size", move || {
            Segment::create(&address, &CreateOptions::new(size)).is_err()
        }));
    }
    let address = unique_posix("api-len");
    let _cleanup = Cleanup(address.clone());
    no_panic("record lengths and offsets", move || {
        let mut tx = records::Sender::create(&address, 256, ProducerMode::Many, &options).unwrap();
        let mut rx = records::Receiver::open(&address).unwrap();
        assert!(tx.try_reserve(usize::MAX).is_err());
        assert!(tx.try_send(&vec![0; 1 << 20]).is_err());
        {
            let mut grant = tx.try_reserve(16).unwrap();
            assert_eq!(grant.write_at(usize::MAX, b"x"), 0);
            assert_eq!(grant.write_at(15, b"abc"), 1);
            assert_eq!(grant.write_at(16, b"abc"), 0);
            grant.commit();
        }
        let view = rx.recv().unwrap();
        let mut out = [0u8; 4];
        assert_eq!(view.read_at(usize::MAX, &mut out), 0);
        assert_eq!(view.read_at(15, &mut out), 1);
    });
    let address = unique_posix("api-chunk");
    let _cleanup = Cleanup(address.clone());
    no_panic("chunks", move || {
        let mut tx = spsc::Sender::<u64>::create(&address, 8, &ChannelOptions::new()).unwrap();
        let mut rx = spsc::Receiver::<u64>::open(&address).unwrap();
        assert!(tx.write_chunk(usize::MAX).is_err());
        assert!(tx.write_chunk_up_to(usize::MAX).is_ok());
        assert!(rx.read_chunk(usize::MAX).is_err());
        assert_eq!(tx.try_send_slice(&[]).unwrap(), 0);
        assert_eq!(rx.try_recv_slice(&mut []).unwrap(), 0);
    });
}

#[test]
fn huge_timeouts_are_fine() {
    let address = unique_posix("api-timeout");
    let _cleanup = Cleanup(address.clone());
    let mut tx = mpmc::Sender::<u64>::create(&address, 2, &ChannelOptions::new()).unwrap();
    let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
    tx.send_timeout(1, Duration::MAX).unwrap();
    assert_eq!(rx.recv_timeout(Duration::MAX).unwrap(), 1);
    assert_eq!(
        rx.recv_timeout(Duration::ZERO),
        Err(RecvTimeoutError::Timeout)
    );
}

/// How long `recv_timeout(10 ms)` on an empty channel takes under
/// `strategy`.
fn timed_wait(strategy: WaitStrategy) -> Outcome<Duration> {
    let address = unique_posix("api-strategy");
    let _cleanup = Cleanup(address.clone());
    let tx = mpmc::Sender::<u64>::create(&address, 2, &ChannelOptions::new()).unwrap();
    let mut rx = mpmc::Receiver::<u64>::open(&address).unwrap();
    rx.set_wait_strategy(strategy);
    bounded(LIMIT, move || {
        // The sender stays, so the channel stays connected, for as long
        // as the wait runs.
        let _tx = tx;
        let started = Instant::now();
        let result = rx.recv_timeout(Duration::from_millis(10));
        assert_eq!(result, Err(RecvTimeoutError::Timeout));
        started.elapsed()
    })
}

#[test]
fn a_timed_receive_keeps_its_timeout_whatever_the_wait_strategy() {
    let mut failures = Vec::new();
    for strategy in [
        WaitStrategy::BusySpin,
        WaitStrategy::Park,
        WaitStrategy::default(),
        WaitStrategy::SpinThenPark {
            spins: 200_000_000,
            yields: 0,
        },
        WaitStrategy::SpinThenPark {
            spins: 0,
            yields: 2_000_000,
        },
        WaitStrategy::SpinThenPark {
            spins: u32::MAX,
            yields: u32::MAX,
        },
    ] {
        let outcome = timed_wait(strategy);
        eprintln!("{strategy:?}: recv_timeout(10ms) -> {outcome:?}");
        match outcome {
            Outcome::Returned(took) if took < Duration::from_millis(500) => {}
            other => failures.push(format!("{strategy:?}: {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "recv_timeout(10ms) overran:\n{}",
        failures.join("\n")
    );
}
