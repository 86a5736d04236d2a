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
use super::transports::ipcring::{
    MpmcOneByOne, MpmcPingPong, SpscChunks, SpscOneByOne, SpscPingPong,
};
use super::transports::kernel::{EventFd, PosixMq, SysvMsg, UnixDgram};
use super::transports::messages::{DatagramLink, Depth, QueueLink, RecordLink};
use super::transports::queues::{CrossbeamArrayQueue, Rtrb, RtrbChunks};
use super::transports::residency::{Residency, ResidentSpsc};
use super::transports::stream::{Kind, RingStream, Stream};

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
    /// Ping-pong over the ring's first lap after the child attached, with
    /// no warm-up: every round trip uses slots not touched since.
    FirstLap,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::PingPong => "pingpong",
            Scenario::Throughput => "throughput",
            Scenario::Paced { .. } => "paced",
            Scenario::FirstLap => "first-lap",
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
    /// A syscall, a wake-up or a 64 KiB copy per message: microseconds.
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
static MPMC_SPIN: MpmcPingPong = MpmcPingPong(WaitStrategy::BusySpin);
static MPMC_HYBRID: MpmcPingPong = MpmcPingPong(HYBRID);
static MPMC_PARK: MpmcPingPong = MpmcPingPong(WaitStrategy::Park);
static RECORDS_SPIN: RecordLink = RecordLink(WaitStrategy::BusySpin, Depth::PingPong);
static RECORDS_HYBRID: RecordLink = RecordLink(HYBRID, Depth::PingPong);
static RECORDS_PARK: RecordLink = RecordLink(WaitStrategy::Park, Depth::PingPong);
static DATAGRAM_SPIN: DatagramLink = DatagramLink(WaitStrategy::BusySpin, Depth::PingPong);
static DATAGRAM_HYBRID: DatagramLink = DatagramLink(HYBRID, Depth::PingPong);
static DATAGRAM_PARK: DatagramLink = DatagramLink(WaitStrategy::Park, Depth::PingPong);
static QUEUE_SPIN: QueueLink = QueueLink(WaitStrategy::BusySpin, Depth::PingPong);
static QUEUE_HYBRID: QueueLink = QueueLink(HYBRID, Depth::PingPong);
static QUEUE_PARK: QueueLink = QueueLink(WaitStrategy::Park, Depth::PingPong);
static STREAM_SPIN: RingStream = RingStream(WaitStrategy::BusySpin);
static STREAM_HYBRID: RingStream = RingStream(HYBRID);
static STREAM_PARK: RingStream = RingStream(WaitStrategy::Park);
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

/// Every two-way transport measured at every size, in table order: each
/// ipcring channel in each wait strategy (the byte stream last, beside the
/// kernel's), then the kernel's transports.
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
    ("ipcring-mpmc", Mode::Spin, &MPMC_SPIN, Weight::Light, true),
    (
        "ipcring-mpmc",
        Mode::Hybrid,
        &MPMC_HYBRID,
        Weight::Light,
        true,
    ),
    ("ipcring-mpmc", Mode::Park, &MPMC_PARK, Weight::Heavy, true),
    (
        "ipcring-records",
        Mode::Spin,
        &RECORDS_SPIN,
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
        "ipcring-records",
        Mode::Park,
        &RECORDS_PARK,
        Weight::Heavy,
        true,
    ),
    (
        "ipcring-datagram",
        Mode::Spin,
        &DATAGRAM_SPIN,
        Weight::Light,
        true,
    ),
    (
        "ipcring-datagram",
        Mode::Hybrid,
        &DATAGRAM_HYBRID,
        Weight::Light,
        true,
    ),
    (
        "ipcring-datagram",
        Mode::Park,
        &DATAGRAM_PARK,
        Weight::Heavy,
        true,
    ),
    (
        "ipcring-queue",
        Mode::Spin,
        &QUEUE_SPIN,
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
    (
        "ipcring-queue",
        Mode::Park,
        &QUEUE_PARK,
        Weight::Heavy,
        true,
    ),
    (
        "ipcring-stream",
        Mode::Spin,
        &STREAM_SPIN,
        Weight::Light,
        true,
    ),
    (
        "ipcring-stream",
        Mode::Hybrid,
        &STREAM_HYBRID,
        Weight::Light,
        true,
    ),
    (
        "ipcring-stream",
        Mode::Park,
        &STREAM_PARK,
        Weight::Heavy,
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

/// SPSC ping-pong (busy-spin, so no wake-up blurs the page faults) with
/// each set of residency options, for the steady and first-lap rows.
static RESIDENT: &[(&str, ResidentSpsc, ResidentSpsc)] = &[
    (
        "ipcring-spsc",
        resident(Residency::NONE, false),
        resident(Residency::NONE, true),
    ),
    (
        "ipcring-spsc-populate",
        resident(Residency::PREFAULT, false),
        resident(Residency::PREFAULT, true),
    ),
    (
        "ipcring-spsc-mlock",
        resident(Residency::PREFAULT_LOCK, false),
        resident(Residency::PREFAULT_LOCK, true),
    ),
    (
        "ipcring-spsc-huge",
        resident(Residency::HUGE_PAGES, false),
        resident(Residency::HUGE_PAGES, true),
    ),
];

const fn resident(residency: Residency, first_lap: bool) -> ResidentSpsc {
    ResidentSpsc {
        strategy: WaitStrategy::BusySpin,
        residency,
        first_lap,
    }
}

/// Sizes of the residency rows: the SPSC payload sizes.
const RESIDENT_SIZES: [usize; 3] = [8, 64, 1024];

/// A ping-pong message this large costs microseconds to copy, however the
/// sides wait: its rows run as many round trips as a syscall's.
const LARGE_MESSAGE: usize = 64 * 1024;

/// The transports of the paced scenario, in every mode [`TWO_WAY`] has
/// for them but busy-spin, which only ipcring SPSC keeps: a spinning
/// receiver costs a core at any rate, and one row per rate shows it. The
/// pipe is the baseline; park-only is there to compare its CPU per message
/// with the pipe's, the default (hybrid) its latency.
const PACED: &[&str] = &[
    "ipcring-spsc",
    "ipcring-mpmc",
    "ipcring-records",
    "ipcring-datagram",
    "ipcring-queue",
    "ipcring-stream",
    "pipe",
    "uds-stream",
    "eventfd",
];

fn paced(transport: &str, mode: Mode) -> bool {
    PACED.contains(&transport) && (mode != Mode::Spin || transport == "ipcring-spsc")
}

/// Throughput rows of the message transports move one message per call,
/// through their blocking calls in their wait strategy, from rings that
/// hold a throughput ring's worth.
static RECORDS_ONE: OneAtATime = OneAtATime(&RecordLink(HYBRID, Depth::Stream));
static DATAGRAM_ONE: OneAtATime = OneAtATime(&DatagramLink(HYBRID, Depth::Stream));
static QUEUE_ONE: OneAtATime = OneAtATime(&QueueLink(HYBRID, Depth::Stream));
static DGRAM_ONE: OneAtATime = OneAtATime(&UnixDgram);
static SYSV_ONE: OneAtATime = OneAtATime(&SysvMsg);
static MQ_ONE: OneAtATime = OneAtATime(&PosixMq);
static EVENTFD_ONE: OneAtATime = OneAtATime(&EventFd);
static SPSC_ONE_SPIN: SpscOneByOne = SpscOneByOne(WaitStrategy::BusySpin);
static SPSC_ONE_HYBRID: SpscOneByOne = SpscOneByOne(HYBRID);
static MPMC_ONE_SPIN: MpmcOneByOne = MpmcOneByOne(WaitStrategy::BusySpin);
static MPMC_ONE_HYBRID: MpmcOneByOne = MpmcOneByOne(HYBRID);
static ICEORYX2_ONE: OneAtATime = OneAtATime(&Iceoryx2(Qos::Every));

/// Throughput transports measured at every size: every ipcring channel in
/// its default (hybrid) strategy, one message per call (the byte streams:
/// up to 4 KiB per call, as a pipe is written); SPSC and MPMC also
/// polling (spin), as the in-process queues are used; SPSC's chunk API,
/// named apart; then the kernel's.
static ONE_WAY: &[(&str, Mode, &dyn ThroughputTransport, Weight, bool)] = &[
    (
        "ipcring-spsc",
        Mode::Spin,
        &SPSC_ONE_SPIN,
        Weight::Light,
        true,
    ),
    (
        "ipcring-spsc",
        Mode::Hybrid,
        &SPSC_ONE_HYBRID,
        Weight::Light,
        true,
    ),
    (
        "ipcring-spsc-chunk",
        Mode::Spin,
        &SpscChunks,
        Weight::Light,
        true,
    ),
    (
        "ipcring-mpmc",
        Mode::Spin,
        &MPMC_ONE_SPIN,
        Weight::Light,
        true,
    ),
    (
        "ipcring-mpmc",
        Mode::Hybrid,
        &MPMC_ONE_HYBRID,
        Weight::Light,
        true,
    ),
    (
        "ipcring-records",
        Mode::Hybrid,
        &RECORDS_ONE,
        Weight::Light,
        true,
    ),
    (
        "ipcring-datagram",
        Mode::Hybrid,
        &DATAGRAM_ONE,
        Weight::Light,
        true,
    ),
    (
        "ipcring-queue",
        Mode::Hybrid,
        &QUEUE_ONE,
        Weight::Heavy,
        true,
    ),
    (
        "ipcring-stream",
        Mode::Hybrid,
        &STREAM_HYBRID,
        Weight::Light,
        true,
    ),
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
                weight: if size >= LARGE_MESSAGE {
                    Weight::Heavy
                } else {
                    weight
                },
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
    for (transport, link) in [
        ("rtrb", &Rtrb as &dyn ThreadTransport),
        ("rtrb-chunk", &RtrbChunks),
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
    for size in RESIDENT_SIZES {
        for (transport, steady, first_lap) in RESIDENT {
            // Plain busy-spin SPSC ping-pong is already in TWO_WAY.
            let scenarios: &[(Scenario, &'static ResidentSpsc)] = if *transport == "ipcring-spsc" {
                &[(Scenario::FirstLap, first_lap)]
            } else {
                &[
                    (Scenario::PingPong, steady),
                    (Scenario::FirstLap, first_lap),
                ]
            };
            for &(scenario, link) in scenarios {
                rows.push(Row {
                    transport,
                    mode: Mode::Spin,
                    scenario,
                    size,
                    setup: Setup::TwoWay(link),
                    weight: Weight::Light,
                    futex: true,
                });
            }
        }
    }
    for rate in PACED_RATES {
        for &(transport, mode, link, _, futex) in TWO_WAY {
            if paced(transport, mode) {
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
