//! A deterministic simulator of a whole cluster, running the real consensus core.
//!
//! One thread, one seeded PRNG and a simulated clock drive N replicas, a simulated WAL per
//! replica (a crash keeps what was synced and any prefix of what was not), a network that
//! drops, duplicates, delays and reorders, partitions of every shape, crashes, restarts and
//! long pauses. Clients propose writes and ask for linearizable read points throughout.
//!
//! A run has two phases. In the safety phase faults fire on the seed's schedule while the
//! checkers watch: (a) agreement, (b) validity, (c) durability of acknowledged writes,
//! (d) in-order exactly-once apply, and (e) read indexes that cover every earlier
//! acknowledged write, (f) acceptor memory: a crash never takes back a promise or a vote
//! a replica already sent, and (g) ballot uniqueness: no ballot ever proposes two values for
//! one slot. In the liveness phase a quorum is healed and the cluster must finish
//! every outstanding write and bring the healed replicas level within a bounded time.
//!
//! Everything about a run follows from its seed, so a failure is replayed exactly with
//! `cargo run --release -- sim --seed N` (add `--trace` to see every event).

mod checker;
mod cluster;
mod faults;
mod network;
#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::consensus::InjectedBugs;

pub use checker::Checker;

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub bugs: InjectedBugs,
    /// Simulated time with faults firing.
    pub safety_us: u64,
    /// Simulated time the healed cluster has to finish.
    pub liveness_us: u64,
    /// Print every event to stderr.
    pub trace: bool,
    /// Check (f) at every crash. Turned off only to show the end-to-end checks also catch the
    /// damage a forgetful acceptor does.
    pub check_acceptor_memory: bool,
}

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            bugs: InjectedBugs::default(),
            safety_us: 10_000_000,
            liveness_us: 20_000_000,
            trace: false,
            check_acceptor_memory: true,
        }
    }

    /// The command that reruns exactly this simulation.
    pub fn replay_command(&self) -> String {
        let mut command = format!("cargo run --release -- sim --seed {}", self.seed);
        for bug in bug_names(&self.bugs) {
            command.push_str(&format!(" --bug {bug}"));
        }
        if !self.check_acceptor_memory {
            command.push_str(" --no-acceptor-memory-check");
        }
        if self.safety_us != SimOptions::new(0).safety_us {
            command.push_str(&format!(" --safety-ms {}", self.safety_us / 1_000));
        }
        command.push_str(" --trace");
        command
    }
}

/// The names `--bug` takes, and the flags they set.
pub const BUGS: &[&str] = &[
    "promise_before_persist",
    "accepted_before_persist",
    "skip_adopt_highest",
    "quorum_of_one",
    "read_without_quorum",
    "compact_without_restating",
    "empty_replica_votes",
    "config_before_commit",
    "two_changes_in_flight",
    "removed_vote_counted",
];

pub fn set_bug(bugs: &mut InjectedBugs, name: &str) -> Result<(), String> {
    match name {
        "promise_before_persist" => bugs.promise_before_persist = true,
        "accepted_before_persist" => bugs.accepted_before_persist = true,
        "skip_adopt_highest" => bugs.skip_adopt_highest = true,
        "quorum_of_one" => bugs.quorum_of_one = true,
        "read_without_quorum" => bugs.read_without_quorum = true,
        "compact_without_restating" => bugs.compact_without_restating = true,
        "empty_replica_votes" => bugs.empty_replica_votes = true,
        "config_before_commit" => bugs.config_before_commit = true,
        "two_changes_in_flight" => bugs.two_changes_in_flight = true,
        "removed_vote_counted" => bugs.removed_vote_counted = true,
        other => return Err(format!("unknown bug {other:?}; known: {}", BUGS.join(", "))),
    }
    Ok(())
}

fn bug_names(bugs: &InjectedBugs) -> Vec<&'static str> {
    let flags = [
        bugs.promise_before_persist,
        bugs.accepted_before_persist,
        bugs.skip_adopt_highest,
        bugs.quorum_of_one,
        bugs.read_without_quorum,
        bugs.compact_without_restating,
        bugs.empty_replica_votes,
        bugs.config_before_commit,
        bugs.two_changes_in_flight,
        bugs.removed_vote_counted,
    ];
    BUGS.iter()
        .zip(flags)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect()
}

#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    pub nodes: u32,
    pub events: u64,
    pub faults: usize,
    pub chosen: usize,
    pub acknowledged: usize,
    pub simulated_us: u64,
}

#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub violation: String,
    pub plan: String,
    pub fault_log: Vec<String>,
    pub replay: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed: {}",
            self.seed, self.violation
        )?;
        writeln!(f, "plan: {}", self.plan)?;
        writeln!(f, "faults injected:")?;
        for line in &self.fault_log {
            writeln!(f, "  {line}")?;
        }
        write!(f, "replay: {}", self.replay)
    }
}

/// Run one seed. A panic in the core (a failed assertion) is a failure like any other.
pub fn run(options: &SimOptions) -> Result<SimReport, SimFailure> {
    let mut sim = cluster::Sim::new(options.clone());
    let outcome = catch_unwind(AssertUnwindSafe(|| sim.run()));
    let violation = match outcome {
        Ok(Ok(report)) => return Ok(report),
        Ok(Err(violation)) => violation,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            format!("panic in replica code: {message}")
        }
    };
    Err(SimFailure::from_sim(&sim, options, violation))
}

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct SweepSummary {
    pub seeds: u64,
    pub events: u64,
    pub chosen: u64,
    pub acknowledged: u64,
    pub faults: u64,
    pub failures: Vec<SimFailure>,
}

/// Run seeds `first..first + count` on `threads` threads, building each run's options with
/// `options_for`. Stops early once `failures_max` failures are found.
pub fn sweep(
    first: u64,
    count: u64,
    threads: usize,
    failures_max: usize,
    options_for: impl Fn(u64) -> SimOptions + Sync,
) -> SweepSummary {
    let next = std::sync::atomic::AtomicU64::new(first);
    let summary = std::sync::Mutex::new(SweepSummary::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= first + count {
                    return;
                }
                if summary.lock().unwrap().failures.len() >= failures_max {
                    return;
                }
                let outcome = run(&options_for(seed));
                let mut summary = summary.lock().unwrap();
                summary.seeds += 1;
                match outcome {
                    Ok(report) => {
                        summary.events += report.events;
                        summary.chosen += report.chosen as u64;
                        summary.acknowledged += report.acknowledged as u64;
                        summary.faults += report.faults as u64;
                    }
                    Err(failure) => summary.failures.push(failure),
                }
            });
        }
    });
    let mut summary = summary.into_inner().unwrap();
    summary.failures.sort_by_key(|failure| failure.seed);
    summary
}
