//! `ipcring bench`: round-trip latency and one-way throughput of several
//! transports, measured in one run on one CPU placement, so the rows can
//! be compared with each other.
//!
//! - `rows.rs` lists the rows; `transports/` holds what each one measures.
//! - `link.rs` is the contract a transport fulfils; `drivers.rs` holds the
//!   two measurement loops every row shares.
//! - `process.rs` starts a row's child (this binary, as `bench-child`),
//!   shares memfd segments and pipes with it, and kills it if it hangs.
//! - `report.rs` prints the table or the JSON.
//!
//! This module never calls the OS except through `ipcring` and std.

mod drivers;
mod link;
mod process;
mod report;
mod rows;
mod transports;

use std::io::IsTerminal;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use ipcring::platform::{allowed_cpus, pin_current_thread};

use drivers::{Counts, Measurement};
use link::{LocalControl, Stop, ThreadTransport};
use process::Inherited;
use report::{Machine, Placement, RowResult};
use rows::{ROWS, Row, Scenario, Setup};

/// Capacity of the in-process queues, in items (32 KiB): deep enough that
/// the two sides rarely wait for each other, small enough to stay in cache.
const QUEUE_CAPACITY: usize = 4096;
/// `--smoke` divides every count by this, for tests of the command itself.
const SMOKE_DIVISOR: u64 = 100;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Run 10 times fewer iterations: 20,000 round trips per ping-pong row,
    /// 2 million items per throughput row (default 200,000 and 20 million).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Pin the parent (and an in-process row's first thread) to CPU A, the
    /// child (and second thread) to CPU B [default: the first two CPUs this
    /// process may use].
    #[arg(long, value_name = "A,B", value_parser = parse_cpu_pair, conflicts_with = "no_pin")]
    cpus: Option<(usize, usize)>,
    /// Leave placement to the scheduler.
    #[arg(long)]
    no_pin: bool,
    /// Divide every count by 100; for tests of the command itself.
    #[arg(long, hide = true)]
    smoke: bool,
}

/// The child's side of one row; `bench` passes all of it.
#[derive(clap::Args)]
pub struct ChildArgs {
    /// The row's id (`Row::id`).
    row: String,
    #[arg(long)]
    cpu: Option<usize>,
    #[arg(long)]
    warmup: u64,
    #[arg(long)]
    measured: u64,
    #[arg(long)]
    timeout_ms: u64,
    #[arg(long)]
    control_fd: RawFd,
    #[arg(long)]
    segment_fd: Vec<RawFd>,
}

fn parse_cpu_pair(text: &str) -> Result<(usize, usize), String> {
    let (parent, child) = text
        .split_once(',')
        .ok_or("expected two CPU numbers, A,B")?;
    let cpu = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|e| format!("{s:?} is not a CPU number: {e}"))
    };
    let (parent, child) = (cpu(parent)?, cpu(child)?);
    if parent == child {
        // Two busy-polling sides on one CPU take turns a scheduler tick at
        // a time: the rows would measure the scheduler.
        return Err("the two CPUs must differ".to_owned());
    }
    Ok((parent, child))
}

/// Iteration counts and time limits for one run.
struct Plan {
    name: &'static str,
    pingpong: Counts,
    throughput: Counts,
    /// Per row. A dead child is noticed within the watchdog interval; this
    /// only bounds a hung one, so it is generous.
    timeout: Duration,
    placement: Placement,
    exe: PathBuf,
}

impl Plan {
    fn new(args: &BenchArgs, placement: Placement) -> Result<Plan, String> {
        let (name, round_trips, items, timeout) = if args.quick {
            ("quick", 20_000, 2_000_000, Duration::from_secs(30))
        } else {
            ("full", 200_000, 20_000_000, Duration::from_secs(120))
        };
        let divisor = if args.smoke { SMOKE_DIVISOR } else { 1 };
        let counts = |measured: u64| {
            let measured = measured / divisor;
            Counts {
                // 10% warm-up: page faults, cache misses and the first
                // wake-ups land here, not in the figures.
                warmup: measured / 10,
                measured,
            }
        };
        Ok(Plan {
            name: if args.smoke { "smoke" } else { name },
            pingpong: counts(round_trips),
            throughput: counts(items),
            timeout,
            placement,
            exe: std::env::current_exe().map_err(|e| format!("bench: finding our binary: {e}"))?,
        })
    }

    /// A fresh deadline for one row's parent side (or first thread).
    fn stop(&self) -> Stop {
        Stop::after(self.timeout).yielding(self.placement.child_cpu().is_none())
    }

    fn counts(&self, scenario: Scenario) -> Counts {
        match scenario {
            Scenario::PingPong => self.pingpong,
            Scenario::Throughput => self.throughput,
        }
    }

    /// `ipcring bench-child <row> ...`; the spawner adds the descriptors.
    fn child_command(&self, row: &Row) -> Command {
        let counts = self.counts(row.scenario());
        let mut command = Command::new(&self.exe);
        command
            .arg("bench-child")
            .arg(row.id())
            .args(["--warmup", &counts.warmup.to_string()])
            .args(["--measured", &counts.measured.to_string()])
            .args(["--timeout-ms", &self.timeout.as_millis().to_string()]);
        if let Some(cpu) = self.placement.child_cpu() {
            command.args(["--cpu", &cpu.to_string()]);
        }
        command
    }

    fn heading(&self) -> String {
        format!(
            "ipcring bench ({}): {} round trips per ping-pong row, {} items per throughput row\n\
             {}-byte messages; the pipe throughput row writes {} items per call",
            self.name,
            report::thousands(self.pingpong.measured),
            report::thousands(self.throughput.measured),
            rows::MSG_SIZE,
            transports::pipe::BATCH_ITEMS,
        )
    }
}

fn placement(args: &BenchArgs, allowed: &[usize]) -> Result<Placement, String> {
    if args.no_pin {
        return Ok(Placement::Unpinned("--no-pin".to_owned()));
    }
    let (parent, child) = match (args.cpus, allowed) {
        (Some((parent, child)), _) => {
            if let Some(cpu) = [parent, child]
                .into_iter()
                .find(|cpu| !allowed.contains(cpu))
            {
                return Err(format!(
                    "bench: --cpus: CPU {cpu} is not one this process may use ({allowed:?})"
                ));
            }
            (parent, child)
        }
        (None, [parent, child, ..]) => (*parent, *child),
        (None, _) => {
            let only = allowed.first().map_or("none".to_owned(), usize::to_string);
            return Ok(Placement::Unpinned(format!(
                "only CPU {only} is allowed, so both sides share it"
            )));
        }
    };
    Ok(Placement::Pinned { parent, child })
}

fn pin(cpu: Option<usize>) -> Result<(), String> {
    match cpu {
        Some(cpu) => pin_current_thread(cpu).map_err(|e| format!("pinning to CPU {cpu}: {e}")),
        None => Ok(()),
    }
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    let allowed = allowed_cpus().map_err(|e| format!("bench: reading the CPU mask: {e}"))?;
    let placement = placement(args, &allowed)?;
    // Pinned before anything starts, so the watchdogs and the in-process
    // rows' first threads inherit the same CPU.
    if let Placement::Pinned { parent, .. } = placement {
        pin(Some(parent)).map_err(|e| format!("bench: {e}"))?;
    }
    let machine = Machine::detect(allowed.len(), placement.clone());
    let plan = Plan::new(args, placement)?;
    let show_progress = std::io::stderr().is_terminal();

    let mut results = Vec::with_capacity(ROWS.len());
    for (index, row) in ROWS.iter().enumerate() {
        if show_progress {
            eprintln!("[{}/{}] {}", index + 1, ROWS.len(), row.id());
        }
        let measurement = run_row(row, &plan).map_err(|e| format!("bench: {}: {e}", row.id()))?;
        results.push(RowResult { row, measurement });
    }

    if args.json {
        println!("{}", report::json(&machine, &results));
    } else {
        print!("{}", report::table(&machine, &plan.heading(), &results));
    }
    Ok(())
}

fn run_row(row: &Row, plan: &Plan) -> Result<Measurement, String> {
    let counts = plan.counts(row.scenario());
    match row.setup {
        Setup::PingPong(transport) => process::run_parent(
            plan.child_command(row),
            plan.stop(),
            |spawner| transport.parent(spawner),
            |end, control, stop| drivers::drive_pingpong(end.as_mut(), control, counts, stop),
        ),
        Setup::Throughput(transport) => process::run_parent(
            plan.child_command(row),
            plan.stop(),
            |spawner| transport.parent(spawner),
            |end, control, stop| drivers::drive_throughput(end.as_mut(), control, counts, stop),
        ),
        Setup::ThreadThroughput(transport) => run_in_threads(transport, plan, counts),
    }
}

/// An in-process row: this thread produces and measures, a second thread,
/// placed where a child process would be, consumes.
fn run_in_threads(
    transport: &dyn ThreadTransport,
    plan: &Plan,
    counts: Counts,
) -> Result<Measurement, String> {
    let (mut producer, mut consumer) = transport.pair(QUEUE_CAPACITY);
    let local_control = LocalControl::default();
    let control = local_control.control();
    let stop = &plan.stop();
    let consumer_cpu = plan.placement.child_cpu();
    thread::scope(|scope| {
        let consumer_thread = scope.spawn(move || {
            let served = pin(consumer_cpu)
                .and_then(|()| drivers::serve_throughput(consumer.as_mut(), control, counts, stop));
            if served.is_err() {
                stop.abort();
            }
            served
        });
        let measured = drivers::drive_throughput(producer.as_mut(), control, counts, stop);
        if measured.is_err() {
            stop.abort();
        }
        let served = consumer_thread
            .join()
            .unwrap_or_else(|_| Err("panicked".to_owned()));
        match (measured, served) {
            (Ok(measurement), Ok(())) => Ok(measurement),
            (Ok(_), Err(consumer_error)) => Err(format!("consumer thread: {consumer_error}")),
            (Err(producer_error), Ok(())) => Err(producer_error),
            (Err(producer_error), Err(consumer_error)) => Err(format!(
                "{producer_error}; consumer thread: {consumer_error}"
            )),
        }
    })
}

/// `ipcring bench-child`: the child's side of one row.
pub fn child(args: &ChildArgs) -> Result<(), String> {
    let row = ROWS
        .iter()
        .find(|row| row.id() == args.row)
        .ok_or_else(|| format!("bench-child: no row {:?}", args.row))?;
    let counts = Counts {
        warmup: args.warmup,
        measured: args.measured,
    };
    // A child whose parent vanished gives up at the same deadline.
    let stop = Stop::after(Duration::from_millis(args.timeout_ms)).yielding(args.cpu.is_none());
    let inherited = Inherited::new(args.segment_fd.clone());
    let served = pin(args.cpu).and_then(|()| match row.setup {
        Setup::PingPong(transport) => process::run_child(
            args.control_fd,
            &inherited,
            stop,
            |inherited| transport.child(inherited),
            |end, control, stop| drivers::serve_pingpong(end.as_mut(), control, stop),
        ),
        Setup::Throughput(transport) => process::run_child(
            args.control_fd,
            &inherited,
            stop,
            |inherited| transport.child(inherited),
            |end, control, stop| drivers::serve_throughput(end.as_mut(), control, counts, stop),
        ),
        Setup::ThreadThroughput(_) => Err("this row runs in one process".to_owned()),
    });
    served.map_err(|e| format!("bench-child {}: {e}", row.id()))
}
