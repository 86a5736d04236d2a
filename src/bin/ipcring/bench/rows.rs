//! The rows of `ipcring bench`: what each measures and with which
//! transport, in the order the table shows them.

use super::link::{PingPongTransport, ThreadTransport, ThroughputTransport};
use ipcring::sync::WaitStrategy;

use super::transports::hw_limit::HwLimit;
use super::transports::ipcring::{MpmcPingPong, MpmcStream, SpscPingPong, SpscStream};
use super::transports::pipe::{PipePingPong, PipeStream};
use super::transports::queues::{CrossbeamArrayQueue, Rtrb};

/// Every message and item is one `u64`.
pub const MSG_SIZE: usize = size_of::<u64>();

/// How a row's waiting side passes the time: ipcring's wait strategies
/// (`BusySpin`, `SpinThenPark`, `Park`), or `Null` for transports that do
/// their own waiting (the kernel for pipes, polling for the queues).
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
    /// Items flow one way as fast as the transport takes them.
    Throughput,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::PingPong => "pingpong",
            Scenario::Throughput => "throughput",
        }
    }
}

/// Where a row's two sides run and what they do.
#[derive(Clone, Copy)]
pub enum Setup {
    /// Parent and child process bounce messages.
    PingPong(&'static dyn PingPongTransport),
    /// The parent process streams items to the child.
    Throughput(&'static dyn ThroughputTransport),
    /// One thread streams items to another in this process.
    ThreadThroughput(&'static dyn ThreadTransport),
}

pub struct Row {
    /// The name in the table and the JSON (`hw-limit`, `pipe`, ...).
    pub transport: &'static str,
    pub mode: Mode,
    pub setup: Setup,
}

impl Row {
    pub fn scenario(&self) -> Scenario {
        match self.setup {
            Setup::PingPong(_) => Scenario::PingPong,
            Setup::Throughput(_) | Setup::ThreadThroughput(_) => Scenario::Throughput,
        }
    }

    /// Names the row on `bench-child`'s command line; unique in [`ROWS`].
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.transport,
            self.mode.as_str(),
            self.scenario().as_str()
        )
    }
}

/// Every row, in table order. Ratios are computed after all rows ran, so
/// the order is only presentation.
pub static ROWS: &[Row] = &[
    Row {
        transport: "hw-limit",
        mode: Mode::Spin,
        setup: Setup::PingPong(&HwLimit),
    },
    Row {
        transport: "ipcring-spsc",
        mode: Mode::Spin,
        setup: Setup::PingPong(&SpscPingPong(WaitStrategy::BusySpin)),
    },
    Row {
        transport: "ipcring-spsc",
        mode: Mode::Hybrid,
        setup: Setup::PingPong(&SpscPingPong(WaitStrategy::SpinThenPark {
            spins: WaitStrategy::DEFAULT_SPINS,
            yields: WaitStrategy::DEFAULT_YIELDS,
        })),
    },
    Row {
        transport: "ipcring-spsc",
        mode: Mode::Park,
        setup: Setup::PingPong(&SpscPingPong(WaitStrategy::Park)),
    },
    Row {
        transport: "ipcring-mpmc",
        mode: Mode::Hybrid,
        setup: Setup::PingPong(&MpmcPingPong(WaitStrategy::SpinThenPark {
            spins: WaitStrategy::DEFAULT_SPINS,
            yields: WaitStrategy::DEFAULT_YIELDS,
        })),
    },
    Row {
        transport: "pipe",
        mode: Mode::Null,
        setup: Setup::PingPong(&PipePingPong),
    },
    Row {
        transport: "ipcring-spsc",
        mode: Mode::Spin,
        setup: Setup::Throughput(&SpscStream),
    },
    Row {
        transport: "ipcring-mpmc",
        mode: Mode::Spin,
        setup: Setup::Throughput(&MpmcStream),
    },
    Row {
        transport: "pipe",
        mode: Mode::Null,
        setup: Setup::Throughput(&PipeStream),
    },
    Row {
        transport: "rtrb",
        mode: Mode::Null,
        setup: Setup::ThreadThroughput(&Rtrb),
    },
    Row {
        transport: "crossbeam-arrayqueue",
        mode: Mode::Null,
        setup: Setup::ThreadThroughput(&CrossbeamArrayQueue),
    },
];
