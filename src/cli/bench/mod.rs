//! `ipcring bench`: round-trip latency, one-way throughput and paced
//! one-way latency of ipcring and the kernel's IPC mechanisms, at several
//! message sizes, measured in one run on one CPU placement, so the rows can
//! be compared with each other; with the CPU time and futex calls each
//! message cost.
//!
//! - `rows.rs` lists the rows; `transports/` holds what each one measures.
//! - `message.rs` is what every message carries and how it is checked.
//! - `link.rs` is the contract a transport fulfils; `drivers.rs` holds the
//!   measurement loops every row shares.
//! - `process.rs` starts a row's child (this binary, as `bench-child`),
//!   shares memfd segments, descriptors and names with it, and kills it if
//!   it hangs.
//! - `machine.rs` describes the machine; `report.rs` prints the table or
//!   the JSON; `svg.rs` draws the charts of `--svg`.
//!
//! This module never calls the OS except through `ipcring` and std.

mod drivers;
mod link;
mod machine;
mod message;
mod process;
mod report;
mod rows;
mod svg;
mod transports;

use std::io::{IsTerminal, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use ipcring::platform::{allowed_cpus, pin_current_thread};

use drivers::{Counts, Measurement};
use link::{LocalControl, Stop, ThreadTransport};
use machine::{Machine, Placement};
use process::Inherited;
use report::{RowResult, Skipped};
use rows::{Row, Scenario, Setup, Weight};
use transports::residency::FIRST_LAP_ROUNDS;

/// Capacity of the in-process queues, in items (32 KiB): deep enough that
/// the two sides rarely wait for each other, small enough to stay in cache.
const QUEUE_CAPACITY: usize = 4096;
/// `--smoke` divides every count by this, for tests of the command itself.
const SMOKE_DIVISOR: u64 = 100;
/// The fewest measured iterations of any row, whatever the divisors.
const MIN_MEASURED: u64 = 10;

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
    /// Run only the rows whose id (`transport/mode/scenario/size`, as
    /// `pipe/null/pingpong/64` or `ipcring-spsc/park/paced-10000/64`)
    /// contains PATTERN, or matches it as a glob when it holds `*` or `?`.
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
    /// Also write the results as charts to FILE (SVG): p50 round trips
    /// with p99 whiskers, throughput, and latency against the paced rate.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Print the ids of the rows (those `--only` selects), one a line, in
    /// table order, and measure nothing.
    #[arg(long, conflicts_with_all = ["json", "svg"])]
    list: bool,
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
    #[arg(long)]
    name: Option<String>,
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
    /// 1 for a full run, 10 for `--quick`, times 100 for `--smoke`.
    divisor: u64,
    /// Per row. A dead child is noticed within the watchdog interval; this
    /// only bounds a hung one, so it is generous.
    timeout: Duration,
    placement: Placement,
    exe: PathBuf,
}

impl Plan {
    fn new(args: &BenchArgs, placement: Placement) -> Result<Plan, String> {
        let (name, divisor, timeout) = if args.quick {
            ("quick", 10, Duration::from_secs(30))
        } else {
            ("full", 1, Duration::from_secs(120))
        };
        let smoke = if args.smoke { SMOKE_DIVISOR } else { 1 };
        Ok(Plan {
            name: if args.smoke { "smoke" } else { name },
            divisor: divisor * smoke,
            timeout,
            placement,
            exe: std::env::current_exe().map_err(|e| format!("bench: finding our binary: {e}"))?,
        })
    }

    /// A fresh deadline for one row's parent side (or first thread).
    fn stop(&self) -> Stop {
        Stop::after(self.timeout).yielding(self.placement.child_cpu().is_none())
    }

    /// Iterations of a full run: enough for a p99.9 and for throughput
    /// to settle, scaled so that no row takes more than a few seconds.
    fn full_count(row: &Row) -> u64 {
        let size = row.size as u64;
        match (row.scenario, row.weight) {
            (Scenario::PingPong, Weight::Light) => 200_000,
            (Scenario::PingPong, Weight::Heavy) => 20_000,
            // 160 MB: 20 million 8-byte items.
            (Scenario::Throughput, Weight::Light) => (160_000_000 / size).max(2_000),
            (Scenario::Throughput, Weight::Heavy) => {
                (256 * 1024 * 1024 / size).clamp(2_000, 200_000)
            }
            // Two seconds at the rate.
            (Scenario::Paced { rate }, _) => rate * 2,
            // One lap of the ring, which is sized for it.
            (Scenario::FirstLap, _) => FIRST_LAP_ROUNDS as u64,
        }
    }

    fn counts(&self, row: &Row) -> Counts {
        let measured = (Self::full_count(row) / self.divisor).max(MIN_MEASURED);
        // 10% warm-up: page faults, cache misses and the first wake-ups
        // land here, not in the figures. First-lap rows measure exactly
        // those, so they have none.
        let warmup = match row.scenario {
            Scenario::FirstLap => 0,
            _ => (measured / 10).max(1),
        };
        Counts { warmup, measured }
    }

    /// `ipcring bench-child <row> ...`; the spawner adds the descriptors.
    fn child_command(&self, row: &Row) -> Command {
        let counts = self.counts(row);
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
            "ipcring bench ({}): ping-pong round trips, one-way throughput and paced one-way latency\n\
             message sizes {} bytes; paced rows send {}-byte messages at {} msg/s",
            self.name,
            message::SIZES.map(|s| s.to_string()).join(", "),
            message::PACED_SIZE,
            rows::PACED_RATES.map(report::thousands).join(", "),
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
            // Two sides that poll on one CPU take turns a scheduler tick at
            // a time: every spinning row would crawl into its timeout.
            let only = allowed.first().map_or("none".to_owned(), usize::to_string);
            return Err(format!(
                "bench: only CPU {only} is available to this process (taskset or a cgroup \
                 limit?); the two sides need a CPU each: allow two CPUs, or run with --no-pin \
                 to let them share one (spinning rows then measure the scheduler)"
            ));
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
    let all_rows = rows::rows();
    let selected: Vec<&Row> = all_rows
        .iter()
        .filter(|row| {
            args.only
                .as_deref()
                .is_none_or(|pattern| rows::matches(pattern, &row.id()))
        })
        .collect();
    if selected.is_empty() {
        return Err(format!(
            "bench: no row matches --only {:?}; rows are named like pipe/null/pingpong/64",
            args.only.as_deref().unwrap_or_default()
        ));
    }
    if args.list {
        for row in selected {
            println!("{}", row.id());
        }
        return Ok(());
    }
    let allowed = allowed_cpus().map_err(|e| format!("bench: reading the CPU mask: {e}"))?;
    let placement = placement(args, &allowed)?;
    // FIFOs and message queues have names: Ctrl-C must let their guards run.
    crate::interrupt::install().map_err(|e| format!("bench: {e}"))?;
    // Pinned before anything starts, so the watchdogs and the in-process
    // rows' first threads inherit the same CPU.
    if let Placement::Pinned { parent, .. } = placement {
        pin(Some(parent)).map_err(|e| format!("bench: {e}"))?;
    }
    let machine = Machine::detect(allowed.len(), placement.clone());
    // The table repeats it at its top; the JSON carries it in `warnings`.
    if let Some(warning) = machine.busy_warning() {
        eprintln!("ipcring bench: warning: {warning}");
    }
    let plan = Plan::new(args, placement)?;
    let mut progress = Progress::new(selected.len());

    let started = Instant::now();
    let mut results = Vec::with_capacity(selected.len());
    let mut skipped = Vec::new();
    let mut failures = 0;
    for row in selected {
        progress.show(&row.id());
        match supports(row) {
            Err(reason) => skipped.push(Skipped {
                row: row.id(),
                reason,
            }),
            Ok(()) => match run_row(row, &plan) {
                Ok(measurement) => results.push(RowResult { row, measurement }),
                Err(e) => {
                    failures += 1;
                    skipped.push(Skipped {
                        row: row.id(),
                        reason: format!("failed: {e}"),
                    });
                }
            },
        }
        if let Some(signal) = crate::interrupt::received() {
            progress.clear();
            return Err(format!("bench: interrupted by signal {signal}"));
        }
    }
    progress.clear();

    if args.json {
        println!("{}", report::json(&machine, &results, &skipped));
    } else {
        print!(
            "{}",
            report::table(
                &machine,
                &plan.heading(),
                &results,
                &skipped,
                started.elapsed()
            )
        );
    }
    // After stdout, so a chart that cannot be written costs no results.
    let chart = args.svg.as_deref().map_or(Ok(()), |path| {
        let title = format!("ipcring bench ({})", plan.name);
        svg::write(path, &title, &machine, &results, &skipped)
    });
    let failed = match failures {
        0 => Ok(()),
        n => Err(format!(
            "bench: {n} row{} failed (listed as skipped)",
            if n == 1 { "" } else { "s" }
        )),
    };
    match (failed, chart) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(failed), Err(chart)) => Err(format!("{failed}; {chart}")),
    }
}

/// Whether a row can run here; the reason if not.
fn supports(row: &Row) -> Result<(), String> {
    match row.setup {
        Setup::TwoWay(transport) => transport.supports(row.size),
        Setup::Throughput(transport) => transport.supports(row.size),
        Setup::ThreadThroughput(_) => Ok(()),
    }
}

/// One line on stderr naming the row being measured, rewritten in place;
/// only when stderr is a terminal, so logs and pipes stay clean.
struct Progress {
    total: usize,
    done: usize,
    on: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            on: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, id: &str) {
        self.done += 1;
        if self.on {
            let mut stderr = std::io::stderr();
            let _ = write!(stderr, "\r\x1b[K[{}/{}] {id}", self.done, self.total);
            let _ = stderr.flush();
        }
    }

    fn clear(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

fn run_row(row: &Row, plan: &Plan) -> Result<Measurement, String> {
    let counts = plan.counts(row);
    let size = row.size;
    match (row.setup, row.scenario) {
        (Setup::TwoWay(transport), Scenario::Paced { rate }) => process::run_parent(
            plan.child_command(row),
            plan.stop(),
            |spawner| transport.parent(spawner, size),
            |end, control, stop| {
                drivers::drive_paced(end.as_mut(), control, counts, size, rate, stop)
            },
        ),
        (Setup::TwoWay(transport), _) => process::run_parent(
            plan.child_command(row),
            plan.stop(),
            |spawner| transport.parent(spawner, size),
            |end, control, stop| drivers::drive_pingpong(end.as_mut(), control, counts, size, stop),
        ),
        (Setup::Throughput(transport), _) => process::run_parent(
            plan.child_command(row),
            plan.stop(),
            |spawner| transport.parent(spawner, size),
            |end, control, stop| drivers::drive_throughput(end.as_mut(), control, counts, stop),
        ),
        (Setup::ThreadThroughput(transport), _) => run_in_threads(transport, plan, counts),
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
    let all_rows = rows::rows();
    let row = all_rows
        .iter()
        .find(|row| row.id() == args.row)
        .ok_or_else(|| format!("bench-child: no row {:?}", args.row))?;
    let counts = Counts {
        warmup: args.warmup,
        measured: args.measured,
    };
    let size = row.size;
    let timeout = Duration::from_millis(args.timeout_ms);
    // A child whose parent vanished gives up at the same deadline.
    let stop = Stop::after(timeout).yielding(args.cpu.is_none());
    let inherited = Inherited::new(args.segment_fd.clone(), args.name.clone(), timeout);
    let served = pin(args.cpu).and_then(|()| match (row.setup, row.scenario) {
        (Setup::TwoWay(transport), Scenario::Paced { .. }) => process::run_child(
            args.control_fd,
            &inherited,
            stop,
            |inherited| transport.child(inherited, size),
            |end, control, stop| drivers::serve_paced(end.as_mut(), control, counts, size, stop),
        ),
        (Setup::TwoWay(transport), _) => process::run_child(
            args.control_fd,
            &inherited,
            stop,
            |inherited| transport.child(inherited, size),
            |end, control, stop| drivers::serve_pingpong(end.as_mut(), control, size, stop),
        ),
        (Setup::Throughput(transport), _) => process::run_child(
            args.control_fd,
            &inherited,
            stop,
            |inherited| transport.child(inherited, size),
            |end, control, stop| drivers::serve_throughput(end.as_mut(), control, counts, stop),
        ),
        (Setup::ThreadThroughput(_), _) => Err("this row runs in one process".to_owned()),
    });
    served.map_err(|e| format!("bench-child {}: {e}", row.id()))
}
