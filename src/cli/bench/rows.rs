//! The rows of `ipcring bench`: what each measures, with which transport
//! and message size, in the order the table shows them.
//!
//! To add a transport: implement `PingPongTransport` (and, if it has a
//! better way to stream than one message per call, `ThroughputTransport`)
//! in `transports/`, then add it to [`TWO_WAY`] or to [`rows`] below.

use ipcring::sync::WaitStrategy;

use super::link::{OneAtATime, PingPongTransport, ThreadTransport, ThroughputTransport};
use super::message::{PACED_SIZE, SIZES};
use super::transports::hw_limit::HwLimit;
use super::transports::iceoryx2::{Iceoryx2, Qos};
use super::transports::ipcring::{MpmcPingPong, MpmcStream, SpscPingPong, SpscStream};
use super::transports::kernel::{EventFd, PosixMq, SysvMsg, UnixDgram};
use super::transports::messages::{QueuePingPong, RecordPingPong};
use super::transports::queues::{CrossbeamArrayQueue, Rtrb};
use super::transports::stream::{Kind, Stream};

/// How a row's waiting side passes the time: ipcring's wait strategies
/// (`BusySpin`, `SpinThenPark`, `Park`), or `Null` for transports that do
/// their own waiting (the kernel, or polling for the queues).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Spin,
    Hybrid,
    Park,
    Null,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::Hybrid => "hybrid",
            Mode::Park => "park",
            Mode::Null => "null",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// One message each way per iteration; every round trip is timed.
    PingPong,
    /// Messages flow one way as fast as the transport takes them.
    Throughput,
    /// Messages flow one way at `rate` per second; each one's latency is
    /// timed from when it was meant to be sent.
    Paced { rate: u64 },
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::PingPong => "pingpong",
            Scenario::Throughput => "throughput",
            Scenario::Paced { .. } => "paced",
        }
    }

    pub fn rate(self) -> Option<u64> {
        match self {
            Scenario::Paced { rate } => Some(rate),
            _ => None,
        }
    }
}

/// The paced rates, in messages per second.
pub const PACED_RATES: [u64; 3] = [1_000, 10_000, 100_000];

/// Where a row's two sides run and what they do.
#[derive(Clone, Copy)]
pub enum Setup {
    /// Parent and child process exchange messages (ping-pong, paced).
    TwoWay(&'static dyn PingPongTransport),
    /// The parent process streams messages to the child.
    Throughput(&'static dyn ThroughputTransport),
    /// One thread streams 8-byte items to another in this process.
    ThreadThroughput(&'static dyn ThreadTransport),
}

/// What a side pays per message when it has to wait, which sets how many
/// iterations a row needs to finish in reasonable time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    /// Shared memory, polled: tens to hundreds of nanoseconds.
    Light,
    /// A syscall or a wake-up per message: microseconds.
    Heavy,
}

pub struct Row {
    /// The name in the table and the JSON (`hw-limit`, `pipe`, ...).
    pub transport: &'static str,
    pub mode: Mode,
    pub scenario: Scenario,
    /// Bytes per message.
    pub size: usize,
    pub setup: Setup,
    pub weight: Weight,
    /// Whether it waits through ipcring's futex handshake, so that futex
    /// calls per message mean something.
    pub futex: bool,
}

impl Row {
    /// Names the row for `--only` and `bench-child`; unique in [`rows`]:
    /// `transport/mode/scenario/size`, with the rate in the scenario of
    /// paced rows (`pipe/null/paced-10000/64`).
    pub fn id(&self) -> String {
        let scenario = match self.scenario {
            Scenario::Paced { rate } => format!("paced-{rate}"),
            other => other.as_str().to_owned(),
        };
        format!(
            "{}/{}/{}/{}",
            self.transport,
            self.mode.as_str(),
            scenario,
            self.size
        )
    }
}

const HYBRID: WaitStrategy = WaitStrategy::SpinThenPark {
    spins: WaitStrategy::DEFAULT_SPINS,
    yields: WaitStrategy::DEFAULT_YIELDS,
};

static SPSC_SPIN: SpscPingPong = SpscPingPong(WaitStrategy::BusySpin);
static SPSC_HYBRID: SpscPingPong = SpscPingPong(HYBRID);
static SPSC_PARK: SpscPingPong = SpscPingPong(WaitStrategy::Park);
static MPMC_HYBRID: MpmcPingPong = MpmcPingPong(HYBRID);
static RECORDS_HYBRID: RecordPingPong = RecordPingPong(HYBRID);
static QUEUE_HYBRID: QueuePingPong = QueuePingPong(HYBRID);
static PIPE: Stream = Stream(Kind::Pipe);
static FIFO: Stream = Stream(Kind::Fifo);
static UDS_STREAM: Stream = Stream(Kind::UnixStream);
static ICEORYX2: Iceoryx2 = Iceoryx2(Qos::Latest);

/// A two-way transport, its row name and mode, its weight, and whether it
/// waits through ipcring's futex handshake.
type TwoWay = (
    &'static str,
    Mode,
    &'static dyn PingPongTransport,
    Weight,
    bool,
);

/// Every two-way transport measured at every size, in table order.
static TWO_WAY: &[TwoWay] = &[
    ("ipcring-spsc", Mode::Spin, &SPSC_SPIN, Weight::Light, true),
    (
        "ipcring-spsc",
        Mode::Hybrid,
        &SPSC_HYBRID,
        Weight::Light,
        true,
    ),
    ("ipcring-spsc", Mode::Park, &SPSC_PARK, Weight::Heavy, true),
    (
        "ipcring-mpmc",
        Mode::Hybrid,
        &MPMC_HYBRID,
        Weight::Light,
        true,
    ),
    (
        "ipcring-records",
        Mode::Hybrid,
        &RECORDS_HYBRID,
        Weight::Light,
        true,
    ),
    (
        "ipcring-queue",
        Mode::Hybrid,
        &QUEUE_HYBRID,
        Weight::Light,
        true,
    ),
    ("pipe", Mode::Null, &PIPE, Weight::Heavy, false),
    ("fifo", Mode::Null, &FIFO, Weight::Heavy, false),
    ("uds-stream", Mode::Null, &UDS_STREAM, Weight::Heavy, false),
    ("uds-dgram", Mode::Null, &UnixDgram, Weight::Heavy, false),
    ("sysv-msg", Mode::Null, &SysvMsg, Weight::Heavy, false),
    ("posix-mq", Mode::Null, &PosixMq, Weight::Heavy, false),
    ("eventfd", Mode::Null, &EventFd, Weight::Heavy, false),
    ("iceoryx2", Mode::Spin, &ICEORYX2, Weight::Light, false),
];

/// The transports of the paced scenario: the pipe baseline, ipcring SPSC
/// in each wait strategy, and the cheap kernel ones.
const PACED: [&str; 4] = ["ipcring-spsc", "pipe", "uds-stream", "eventfd"];

/// Throughput rows of the message transports move one message per call.
static DGRAM_ONE: OneAtATime = OneAtATime(&UnixDgram);
static SYSV_ONE: OneAtATime = OneAtATime(&SysvMsg);
static MQ_ONE: OneAtATime = OneAtATime(&PosixMq);
static EVENTFD_ONE: OneAtATime = OneAtATime(&EventFd);
static ICEORYX2_ONE: OneAtATime = OneAtATime(&Iceoryx2(Qos::Every));

/// Throughput transports measured at every size.
static ONE_WAY: &[(&str, Mode, &dyn ThroughputTransport, Weight, bool)] = &[
    ("ipcring-spsc", Mode::Spin, &SpscStream, Weight::Light, true),
    ("pipe", Mode::Null, &PIPE, Weight::Light, false),
    ("fifo", Mode::Null, &FIFO, Weight::Light, false),
    ("uds-stream", Mode::Null, &UDS_STREAM, Weight::Light, false),
    ("uds-dgram", Mode::Null, &DGRAM_ONE, Weight::Heavy, false),
    ("sysv-msg", Mode::Null, &SYSV_ONE, Weight::Heavy, false),
    ("posix-mq", Mode::Null, &MQ_ONE, Weight::Heavy, false),
    ("eventfd", Mode::Null, &EVENTFD_ONE, Weight::Heavy, false),
    ("iceoryx2", Mode::Spin, &ICEORYX2_ONE, Weight::Heavy, false),
];

/// Every row, in table order. Ratios are computed after all rows ran, so
/// the order is only presentation.
pub fn rows() -> Vec<Row> {
    let mut rows = vec![Row {
        transport: "hw-limit",
        mode: Mode::Spin,
        scenario: Scenario::PingPong,
        size: 8,
        setup: Setup::TwoWay(&HwLimit),
        weight: Weight::Light,
        futex: false,
    }];
    for size in SIZES {
        for &(transport, mode, link, weight, futex) in TWO_WAY {
            rows.push(Row {
                transport,
                mode,
                scenario: Scenario::PingPong,
                size,
                setup: Setup::TwoWay(link),
                weight,
                futex,
            });
        }
    }
    for size in SIZES {
        for &(transport, mode, link, weight, futex) in ONE_WAY {
            rows.push(Row {
                transport,
                mode,
                scenario: Scenario::Throughput,
                size,
                setup: Setup::Throughput(link),
                weight,
                futex,
            });
        }
    }
    rows.push(Row {
        transport: "ipcring-mpmc",
        mode: Mode::Spin,
        scenario: Scenario::Throughput,
        size: 8,
        setup: Setup::Throughput(&MpmcStream),
        weight: Weight::Light,
        futex: true,
    });
    for (transport, link) in [
        ("rtrb", &Rtrb as &dyn ThreadTransport),
        ("crossbeam-arrayqueue", &CrossbeamArrayQueue),
    ] {
        rows.push(Row {
            transport,
            mode: Mode::Null,
            scenario: Scenario::Throughput,
            size: 8,
            setup: Setup::ThreadThroughput(link),
            weight: Weight::Light,
            futex: false,
        });
    }
    for rate in PACED_RATES {
        for &(transport, mode, link, _, futex) in TWO_WAY {
            if PACED.contains(&transport) {
                rows.push(Row {
                    transport,
                    mode,
                    scenario: Scenario::Paced { rate },
                    size: PACED_SIZE,
                    setup: Setup::TwoWay(link),
                    weight: Weight::Heavy,
                    futex,
                });
            }
        }
    }
    rows
}

/// Whether `id` matches `pattern`: a glob (`*` any run of characters, `?`
/// one) when it holds either, a substring otherwise.
pub fn matches(pattern: &str, id: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return id.contains(pattern);
    }
    fn glob(pattern: &[char], text: &[char]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some('*'), _) => {
                glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
            }
            (Some('?'), Some(_)) => glob(&pattern[1..], &text[1..]),
            (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
            _ => false,
        }
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = id.chars().collect();
    glob(&pattern, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<String> = rows().iter().map(Row::id).collect();
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count);
    }

    #[test]
    fn patterns_match_as_substring_or_glob() {
        assert!(matches("pipe", "pipe/null/pingpong/8"));
        assert!(matches("pipe/*/8", "pipe/null/pingpong/8"));
        assert!(!matches("pipe/*/8", "pipe/null/pingpong/64"));
        assert!(matches("*spsc?spin*", "ipcring-spsc/spin/throughput/8"));
        assert!(!matches("fifo", "pipe/null/pingpong/8"));
    }
}
