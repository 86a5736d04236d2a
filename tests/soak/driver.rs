//! The test process's side of a soak: creates the channel and the ledger,
//! keeps the children running (killing and replacing them on a seeded
//! schedule), watches that messages keep moving, stops and drains the
//! children, checks that a fresh pair of endpoints still works, and judges
//! the ledger. Every failure panics with a report that names the channel,
//! what was stuck and the seed; the guards then kill and reap every child
//! and remove both segments.

use std::fmt::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ipcring::channel::{ChannelOptions, mpmc, records};
use ipcring::ring::record::ProducerMode;
use ipcring::segment::{Address, Segment};

use super::ChannelKind;
use super::check::{self, KillLog, LossBound, Rules, Verdict};
use super::ledger::{Ledger, consumer_phase, phase_name, producer_phase};
use super::message::{Item, Stamp};
use super::rng::SplitMix64;
use super::roles::{self, CHANNEL_VAR, ID_VAR, LEDGER_VAR, PARENT_VAR, Tally};
use crate::common::{ChildGuard, Cleanup, spawn_child, unique_posix};

/// MPMC ring slots: small, so the ring wraps and fills often.
const MPMC_CAPACITY: usize = 64;
/// Record ring bytes: room for about twenty of the largest soak records.
const RECORD_CAPACITY: usize = 1 << 15;
/// How long producers and then consumers get to finish once told to.
const WIND_DOWN: Duration = Duration::from_secs(10);
/// Messages each producer must send after the last kill (and consumers
/// receive, per producer) before the soak winds down.
const SETTLE_MESSAGES: u64 = 200;
/// Producer ledger entries held back from the kill phase, so that the
/// settle check after it can still replace producers that retire: on a
/// fast machine producers retire by the thousand, and a settle with none
/// left running could never see traffic.
const SETTLE_RESERVE: usize = 256;
/// Kills a failure report lists: the last ones, and the ones just before
/// messages stopped moving.
const KILLS_LISTED: usize = 4;

/// A soak to run.
pub struct Plan {
    pub kind: ChannelKind,
    /// The `#[test]` function: children re-run it in their role.
    pub test_name: &'static str,
    /// Producer and consumer processes kept running.
    pub producers: usize,
    pub consumers: usize,
    /// Kills to perform; 0 for a load soak without kills.
    pub kills: u64,
    /// The mean pause between kills; each is drawn from 0 to twice this.
    pub mean_kill_interval: Duration,
    /// Messages a producer sends before it leaves: in a kill soak it is
    /// then replaced; in a load soak the run ends when all have left.
    pub messages_per_producer: u32,
    pub seed: u64,
    pub rules: Rules,
    /// The channel's own count of messages it lost repairing after dead
    /// peers, read after the run; `None` while the channel keeps none.
    pub reported_losses: fn(&Address) -> Option<u64>,
    /// A failure if no message moves this long while producers are alive.
    pub stall_limit: Duration,
    /// How to re-run this soak with the same schedule, for reports.
    pub replay: String,
}

/// What a passing soak did.
pub struct Outcome {
    pub verdict: Verdict,
    pub kills: KillLog,
    pub elapsed: Duration,
    pub producers_started: usize,
    pub consumers_started: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

struct Running {
    guard: ChildGuard,
    role: Role,
    id: usize,
}

/// The children; dropping it kills and reaps every one still running.
struct Pool {
    test_name: &'static str,
    env: Vec<(&'static str, String)>,
    running: Vec<Running>,
}

impl Pool {
    fn spawn(&mut self, role: Role, id: usize) {
        let mut env = self.env.clone();
        env.push((ID_VAR, id.to_string()));
        let guard = spawn_child(self.test_name, role.name(), &env);
        self.running.push(Running { guard, role, id });
    }

    fn count(&self, role: Role) -> usize {
        self.running.iter().filter(|r| r.role == role).count()
    }

    /// SIGKILLs child `index` and reaps it. The status tells whether the
    /// kill took it or it had already exited on its own.
    fn kill(&mut self, index: usize) -> (Running, ExitStatus) {
        let mut victim = self.running.swap_remove(index);
        let child = victim.guard.child();
        child.kill().expect("SIGKILL a child");
        let status = child.wait().expect("reap a killed child");
        victim.guard.0 = None;
        (victim, status)
    }

    /// Reaps the children that have exited.
    fn reap(&mut self) -> Vec<(Running, ExitStatus)> {
        let mut exited = Vec::new();
        let mut index = 0;
        while index < self.running.len() {
            let status = self.running[index]
                .guard
                .child()
                .try_wait()
                .expect("poll a child");
            match status {
                Some(status) => {
                    let mut done = self.running.swap_remove(index);
                    done.guard.0 = None;
                    exited.push((done, status));
                }
                None => index += 1,
            }
        }
        exited
    }
}

/// Everything a report needs, gathered as the run goes.
struct Run<'a> {
    plan: &'a Plan,
    channel: Segment,
    address: Address,
    ledger: Ledger,
    pool: Pool,
    rng: SplitMix64,
    started: Instant,
    next_producer: usize,
    next_consumer: usize,
    kills: KillLog,
    /// Every kill: when (since `started`) and what it hit.
    kill_history: Vec<(Duration, String)>,
    /// The watchdog's measure of motion and when it last changed.
    last_motion: (u64, Instant),
    /// Messages received, and when that last changed: a channel wedged at
    /// a hole stops delivering first, while producers fill what room is left.
    last_delivery: (u64, Instant),
    retired: u64,
    /// The ledger has no entry left for another producer (outside the
    /// settle reserve while kills go on).
    out_of_ids: bool,
    /// Producer entries that may be handed out now: all but the settle
    /// reserve until the kills end, then all.
    producer_limit: usize,
}

impl Run<'_> {
    fn spawn(&mut self, role: Role) -> bool {
        let id = match role {
            Role::Producer if self.next_producer < self.producer_limit => {
                self.next_producer += 1;
                self.next_producer - 1
            }
            Role::Consumer if self.next_consumer < self.ledger.consumer_capacity() => {
                self.next_consumer += 1;
                self.next_consumer - 1
            }
            _ => return false,
        };
        self.pool.spawn(role, id);
        true
    }

    fn sent(&self) -> u64 {
        (0..self.next_producer)
            .map(|id| self.ledger.producer(id).sent().load(Relaxed))
            .sum()
    }

    fn received(&self) -> u64 {
        (0..self.next_consumer)
            .map(|id| self.ledger.consumer(id).received().load(Relaxed))
            .sum()
    }

    /// Messages sent and received so far: the watchdog's measure of motion.
    fn motion(&self) -> u64 {
        self.sent() + self.received()
    }

    /// Handles a child that exited on its own during the soak: a producer
    /// that sent all it had to is replaced (in a kill soak); anything else
    /// fails the run.
    fn exited(&mut self, done: Running, status: ExitStatus) {
        if done.role == Role::Producer && status.success() {
            self.retired += 1;
            if self.plan.kills > 0 && !self.spawn(Role::Producer) {
                self.out_of_ids = true;
            }
        } else {
            self.fail(&format!(
                "{} {} exited on its own with {status} (its panic message is above)",
                done.role.name(),
                done.id
            ));
        }
    }

    /// Fails the run if nothing was sent or received for the stall limit
    /// while producers were alive.
    fn watch_for_stall(&mut self) {
        let now = Instant::now();
        let received = self.received();
        if received != self.last_delivery.0 {
            self.last_delivery = (received, now);
        }
        let motion = self.motion();
        if motion != self.last_motion.0 {
            self.last_motion = (motion, now);
            return;
        }
        let still = now.duration_since(self.last_motion.1);
        let producers = self.pool.count(Role::Producer);
        if still >= self.plan.stall_limit && producers > 0 {
            self.fail(&format!(
                "wedged: no message sent or received for {:.1} s while {producers} producers were alive",
                still.as_secs_f64()
            ));
        }
    }

    fn kill_one(&mut self) {
        let index = self.rng.below(self.pool.running.len() as u64) as usize;
        let (victim, status) = self.pool.kill(index);
        if status.signal() != Some(libc::SIGKILL) {
            // It exited between the last reap and the kill.
            self.exited(victim, status);
            return;
        }
        let at = self.started.elapsed().as_secs_f64();
        let what = match victim.role {
            Role::Producer => {
                let entry = self.ledger.producer(victim.id);
                let phase = entry.phase().load(Relaxed);
                let sent = entry.sent().load(Relaxed);
                self.kills.producer_kills += 1;
                let doing = match phase {
                    producer_phase::SENDING => {
                        self.kills.producer_kills_sending += 1;
                        format!("while sending seq {sent}")
                    }
                    producer_phase::GRANTED => {
                        self.kills.producer_kills_granted += 1;
                        format!("holding a reservation for seq {sent}")
                    }
                    _ => phase_name(false, phase).to_string(),
                };
                format!(
                    "{at:.3}s producer {} (pid {}) killed {doing}, {sent} sent",
                    victim.id,
                    entry.pid().load(Relaxed),
                )
            }
            Role::Consumer => {
                let entry = self.ledger.consumer(victim.id);
                let phase = entry.phase().load(Relaxed);
                let holding = entry.holding().load(Relaxed);
                self.kills.consumer_kills += 1;
                if phase == consumer_phase::RECEIVING {
                    self.kills.consumer_kills_receiving += 1;
                } else if phase == consumer_phase::HOLDING {
                    self.kills.consumer_kills_holding += 1;
                }
                if holding != 0 {
                    *self.kills.held.entry(holding - 1).or_default() += 1;
                }
                format!(
                    "{at:.3}s consumer {} (pid {}) killed {}{}, {} received",
                    victim.id,
                    entry.pid().load(Relaxed),
                    phase_name(true, phase),
                    if holding != 0 {
                        format!(" {}", Stamp::from_key(holding - 1))
                    } else {
                        String::new()
                    },
                    entry.received().load(Relaxed)
                )
            }
        };
        self.kill_history.push((self.started.elapsed(), what));
        self.spawn(victim.role);
    }

    /// Panics with a report: `headline`, the seed, the kills, every child
    /// still running and the channel's shared state.
    fn fail(&self, headline: &str) -> ! {
        let plan = self.plan;
        let mut text = String::new();
        let _ = writeln!(text, "soak of the {} FAILED: {headline}", plan.kind.name());
        if plan.kills > 0 {
            let _ = writeln!(
                text,
                "  seed {:#x}; replay the kill schedule: {}",
                plan.seed, plan.replay
            );
        } else {
            let _ = writeln!(text, "  rerun: {}", plan.replay);
        }
        let _ = writeln!(
            text,
            "  after {:.1} s: {} of {} planned; {} producers retired",
            self.started.elapsed().as_secs_f64(),
            check::describe_kills(&self.kills),
            plan.kills,
            self.retired
        );
        let _ = writeln!(
            text,
            "  {} messages committed, {} received, by {} producer and {} consumer processes",
            self.sent(),
            self.received(),
            self.next_producer,
            self.next_consumer
        );
        if !self.kill_history.is_empty() {
            let stalled_at = self.last_delivery.1.duration_since(self.started);
            let before_stall = self
                .kill_history
                .iter()
                .rposition(|(at, _)| *at <= stalled_at)
                .map_or(0, |last| last + 1);
            let _ = writeln!(
                text,
                "  messages last received {:.3} s into the run (last sent or received {:.3} s); the kills just before:",
                stalled_at.as_secs_f64(),
                self.last_motion
                    .1
                    .duration_since(self.started)
                    .as_secs_f64()
            );
            let first = before_stall.saturating_sub(KILLS_LISTED);
            for (_, kill) in &self.kill_history[first..before_stall] {
                let _ = writeln!(text, "    {kill}");
            }
            let last = self.kill_history.len();
            let first = last.saturating_sub(KILLS_LISTED).max(before_stall);
            if first < last {
                let _ = writeln!(text, "  the last kills:");
                for (_, kill) in &self.kill_history[first..] {
                    let _ = writeln!(text, "    {kill}");
                }
            }
        }
        if self.pool.running.is_empty() {
            let _ = writeln!(text, "  children running: none");
        } else {
            let _ = writeln!(text, "  children running:");
        }
        for running in &self.pool.running {
            let line = match running.role {
                Role::Producer => {
                    let entry = self.ledger.producer(running.id);
                    format!(
                        "producer {} (pid {}): {}, {} sent",
                        running.id,
                        running.guard.pid(),
                        phase_name(false, entry.phase().load(Relaxed)),
                        entry.sent().load(Relaxed)
                    )
                }
                Role::Consumer => {
                    let entry = self.ledger.consumer(running.id);
                    let last = entry.last().load(Relaxed);
                    format!(
                        "consumer {} (pid {}): {}, {} received, last {}",
                        running.id,
                        running.guard.pid(),
                        phase_name(true, entry.phase().load(Relaxed)),
                        entry.received().load(Relaxed),
                        if last == 0 {
                            "none".to_string()
                        } else {
                            Stamp::from_key(last - 1).to_string()
                        }
                    )
                }
            };
            let _ = writeln!(text, "    {line}");
        }
        let _ = writeln!(text, "  channel:");
        let _ = write!(text, "{}", super::diag::describe(&self.channel, plan.kind));
        panic!("{text}");
    }
}

fn create_channel(kind: ChannelKind, address: &Address) -> Segment {
    let options = ChannelOptions::new();
    match kind {
        ChannelKind::Mpmc => mpmc::create_segment::<Item>(Some(address), MPMC_CAPACITY, &options),
        ChannelKind::Records => {
            records::create_segment(Some(address), RECORD_CAPACITY, ProducerMode::Many, &options)
        }
    }
    .expect("create the channel")
}

/// Runs `plan`; panics with a report on any failure.
pub fn run(plan: &Plan) -> Outcome {
    let address = unique_posix("soak");
    let _channel_cleanup = Cleanup(address.clone());
    let ledger_address = unique_posix("soak-ledger");
    let _ledger_cleanup = Cleanup(ledger_address.clone());
    let channel = create_channel(plan.kind, &address);
    // Room for every incarnation: the first ones, one replacement per
    // kill, and producers that retire (plenty: each sends thousands, and a
    // fast machine retires a few hundred a second), plus the final check's
    // receiver. The ledger is sparse: entries never handed out cost no
    // memory.
    let replacements = if plan.kills > 0 {
        8192 + SETTLE_RESERVE
    } else {
        0
    };
    let producer_capacity = plan.producers + plan.kills as usize + replacements;
    let producer_limit = producer_capacity - if plan.kills > 0 { SETTLE_RESERVE } else { 0 };
    let ledger = Ledger::create(
        &ledger_address,
        producer_capacity,
        plan.consumers + plan.kills as usize + 1,
        plan.messages_per_producer,
    );
    let pool = Pool {
        test_name: plan.test_name,
        env: vec![
            (CHANNEL_VAR, address.to_string()),
            (LEDGER_VAR, ledger_address.to_string()),
            (PARENT_VAR, std::process::id().to_string()),
        ],
        running: Vec::new(),
    };
    let mut run = Run {
        plan,
        channel,
        address,
        ledger,
        pool,
        rng: SplitMix64::new(plan.seed ^ plan.kind as u64),
        started: Instant::now(),
        next_producer: 0,
        next_consumer: 0,
        kills: KillLog::default(),
        kill_history: Vec::new(),
        last_motion: (0, Instant::now()),
        last_delivery: (0, Instant::now()),
        retired: 0,
        out_of_ids: false,
        producer_limit,
    };
    for _ in 0..plan.consumers {
        run.spawn(Role::Consumer);
    }
    for _ in 0..plan.producers {
        run.spawn(Role::Producer);
    }

    // The soak: kill and replace on schedule, watch for a stall.
    let pause = |rng: &mut SplitMix64| {
        let mean = plan.mean_kill_interval.as_micros() as u64;
        Duration::from_micros(rng.below(2 * mean + 1))
    };
    let mut next_kill = Instant::now() + pause(&mut run.rng);
    loop {
        let killing = run.kills.total() < plan.kills && !run.out_of_ids;
        if !killing && (plan.kills > 0 || run.pool.count(Role::Producer) == 0) {
            break;
        }
        for (done, status) in run.pool.reap() {
            run.exited(done, status);
        }
        let now = Instant::now();
        if killing && now >= next_kill && !run.pool.running.is_empty() {
            run.kill_one();
            next_kill = Instant::now() + pause(&mut run.rng);
        }
        run.watch_for_stall();
        std::thread::sleep(Duration::from_millis(1));
    }
    if run.out_of_ids {
        eprintln!("  (the ledger ran out of producer entries: the kills ended early)");
    }
    // The settle check may use the reserve. A producer that retired
    // without a successor when the kills ran out of entries gets one now,
    // so that the settle check sees every producer slot in use.
    run.producer_limit = run.ledger.producer_capacity();
    while plan.kills > 0 && run.pool.count(Role::Producer) < plan.producers {
        if !run.spawn(Role::Producer) {
            break;
        }
    }
    if plan.kills > 0 {
        settle(&mut run);
    }

    // Wind down: producers stop, then consumers drain what is left.
    run.ledger.stop_flag().store(1, Relaxed);
    wind_down(&mut run, Role::Producer, "producers did not stop");
    run.ledger.drain_flag().store(1, Relaxed);
    wind_down(
        &mut run,
        Role::Consumer,
        "consumers did not drain and leave",
    );

    // The channel must still work for newcomers.
    let fresh = run.next_consumer;
    run.next_consumer += 1;
    let mut tally = Tally::new(&run.ledger, fresh);
    if let Err(why) = roles::fresh_pair_exchange(plan.kind, &run.address, &mut tally) {
        run.fail(&format!("after the soak, {why}"));
    }

    let losses = match (plan.reported_losses)(&run.address) {
        Some(losses) => LossBound::Reported(losses),
        None => LossBound::OnePerConsumerKill,
    };
    let verdict = check::judge(
        &run.ledger,
        run.next_producer,
        run.next_consumer,
        &run.kills,
        plan.rules,
        losses,
    );
    if !verdict.failures.is_empty() {
        let mut headline = format!("{}:", verdict.summary());
        for failure in &verdict.failures {
            let _ = write!(headline, "\n  - {failure}");
        }
        run.fail(&headline);
    }
    Outcome {
        verdict,
        elapsed: run.started.elapsed(),
        producers_started: run.next_producer,
        consumers_started: run.next_consumer - 1,
        kills: std::mem::take(&mut run.kills),
    }
}

/// After the last kill, the channel must carry traffic again: every
/// producer then running sends more, and consumers receive as much. A
/// channel wedged by the last kills fails here (the watchdog, while
/// nothing moves), as does one where some producer alone is stuck.
fn settle(run: &mut Run<'_>) {
    let plan = run.plan;
    let started = Instant::now();
    let sent = |run: &Run<'_>, id: usize| run.ledger.producer(id).sent().load(Relaxed);
    let mut waiting: Vec<(usize, u64)> = run
        .pool
        .running
        .iter()
        .filter(|r| r.role == Role::Producer)
        .map(|r| (r.id, sent(run, r.id)))
        .collect();
    let received_before = run.received();
    loop {
        for (done, status) in run.pool.reap() {
            // Retired: it sent all it had to, and has a successor.
            waiting.retain(|&(id, _)| id != done.id);
            run.exited(done, status);
        }
        waiting.retain(|&(id, before)| sent(run, id) < before + SETTLE_MESSAGES);
        if waiting.is_empty()
            && run.received() >= received_before + SETTLE_MESSAGES * plan.producers as u64
        {
            return;
        }
        run.watch_for_stall();
        let now = Instant::now();
        if now.duration_since(started) >= 2 * plan.stall_limit {
            let stuck: Vec<String> = waiting
                .iter()
                .map(|&(id, before)| {
                    format!(
                        "producer {id} ({} sent, {before} at the last kill)",
                        sent(run, id)
                    )
                })
                .collect();
            let limit = (2 * plan.stall_limit).as_secs_f64();
            if stuck.is_empty() {
                run.fail(&format!(
                    "after the last kill, consumers received {} messages in {limit:.1} s, short of the {} the settle check asks for",
                    run.received() - received_before,
                    SETTLE_MESSAGES * plan.producers as u64
                ));
            }
            run.fail(&format!(
                "after the last kill, some producers made no headway in {limit:.1} s while messages moved: {}",
                stuck.join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for every child of `role` to exit cleanly.
fn wind_down(run: &mut Run<'_>, role: Role, what: &str) {
    let deadline = Instant::now() + WIND_DOWN;
    while run.pool.count(role) > 0 {
        for (done, status) in run.pool.reap() {
            if !status.success() {
                run.fail(&format!(
                    "{} {} exited with {status} while winding down",
                    done.role.name(),
                    done.id
                ));
            }
        }
        if Instant::now() >= deadline {
            run.fail(&format!("{what} within {WIND_DOWN:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
