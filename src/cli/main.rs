//! `ipcring`: inspect and remove ipcring segments, create channels and move
//! bytes through streams, and run a two-process demo.

mod bench;
mod demo;
mod inspect;
mod interrupt;
mod queue_cmd;
mod stream_cmd;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ipcring",
    version,
    about = "Lock-free shared-memory IPC: inspect segments, create channels, move bytes, run the demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every ipcring segment (POSIX and SysV) visible to this user.
    Ls {
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one segment in detail: header fields and participants; or,
    /// with --watch, a channel's traffic every interval.
    Stat {
        /// A POSIX name (`orders`) or a SysV key (`sysv:0x1234`).
        name: String,
        /// Print JSON instead of text: one object, or with --watch one
        /// object per line per refresh.
        #[arg(long)]
        json: bool,
        /// Refresh until Ctrl-C or SIGTERM (status 0): messages/s,
        /// bytes/s, futex calls/s, repairs and losses, from the channel's
        /// shared memory. Exits 1 if the channel is removed meanwhile.
        #[arg(long)]
        watch: bool,
        /// With --watch: time between refreshes, at least 10ms (`500ms`,
        /// `2s`; default 1s).
        #[arg(long, value_name = "DUR", requires = "watch", value_parser = watch::parse_interval)]
        interval: Option<std::time::Duration>,
        /// With --watch: stop after N refreshes.
        #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Remove segments by name or key, or every stale one.
    Rm {
        /// POSIX names or SysV keys, as `ls` prints them.
        #[arg(required_unless_present = "stale")]
        names: Vec<String>,
        /// Remove only what is stale (abandoned before initialisation, or
        /// owned by a creator that is gone), among NAMES or, without NAMES,
        /// among every segment of this user. Persistent segments are kept.
        #[arg(long)]
        stale: bool,
    },
    /// Copy stdin into a byte stream until stdin ends, like `> fifo`.
    Write {
        /// The stream's name.
        name: String,
    },
    /// Copy a byte stream to stdout until every writer has gone, like
    /// `< fifo`; waits for a first writer if none has come yet.
    Read {
        /// The stream's name.
        name: String,
    },
    /// Two processes ping-pong through a segment, once per wait strategy.
    Demo {
        /// Round trips per strategy (1 to 10 million).
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        round_trips: u64,
    },
    /// The child side of `demo` (started by `demo` itself).
    #[command(hide = true)]
    DemoChild { name: String, strategy: String },
    /// Round-trip latency and throughput of ipcring, pipes and in-process
    /// queues, measured in one run.
    Bench(bench::BenchArgs),
    /// The child side of one `bench` row (started by `bench` itself).
    #[command(hide = true)]
    BenchChild(bench::ChildArgs),
    /// Create a channel segment (queue, datagram mailbox or byte stream),
    /// persistent until `ipcring rm`.
    Create(queue_cmd::CreateArgs),
    /// Send messages to a queue (each argument, or each stdin line, is one).
    Send(queue_cmd::SendArgs),
    /// Receive messages from a queue, one per output line.
    Recv(queue_cmd::RecvArgs),
}

fn main() -> ExitCode {
    ipcring::platform::default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Create(args) => return queue_cmd::exit(queue_cmd::create(&args)),
        Command::Send(args) => return queue_cmd::exit(queue_cmd::send(&args)),
        Command::Recv(args) => return queue_cmd::exit(queue_cmd::recv(&args)),
        Command::Ls { json } => inspect::ls(json),
        Command::Stat {
            name,
            json,
            watch: true,
            interval,
            count,
        } => {
            // Not through the signal handling below: a watch creates
            // nothing, and SIGINT or SIGTERM is how it is meant to end, with
            // status 0.
            let interval = interval.unwrap_or(watch::DEFAULT_INTERVAL);
            return watch::run(&name, json, interval, count);
        }
        Command::Stat { name, json, .. } => inspect::stat(&name, json),
        Command::Rm { names, stale } => {
            if stale {
                inspect::rm_stale(&names)
            } else {
                inspect::rm(&names)
            }
        }
        Command::Write { name } => stream_cmd::write(&name),
        Command::Read { name } => stream_cmd::read(&name),
        Command::Demo { round_trips } => demo::run(round_trips),
        Command::DemoChild { name, strategy } => demo::child(&name, &strategy),
        Command::Bench(args) => bench::run(&args),
        Command::BenchChild(args) => bench::child(&args),
    };
    if let Some(signal) = interrupt::received() {
        // Whatever the command created is gone now: end as the signal would.
        if let Err(message) = &result {
            eprintln!("ipcring: {message}");
        }
        interrupt::end_as_signalled(signal);
        return ExitCode::FAILURE;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ipcring: {message}");
            ExitCode::FAILURE
        }
    }
}
