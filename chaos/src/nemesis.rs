//! The nemesis: one process fault at a time, each healed before the next, so a majority is
//! always either running or about to be again.
//!
//! - `kill`: SIGKILL a replica (the leader or one at random), keep it down for a while,
//!   restart it on the same data directory.
//! - `pause`: SIGSTOP a replica (the leader or one at random) for longer than the election
//!   timeout, then SIGCONT. Its clients' calls hang until their timeout.
//! - `disk` (three kinds, through the replica's fault points):
//!   - `disk-stall`: `wal::fsync` = `pause` blocks the replica's driver in its next
//!     fdatasync for longer than the election timeout, then `off` lets it go on;
//!   - `disk-fsync`: `wal::fsync` = `return` fails its next fdatasync, which stops the
//!     replica; after a while it is killed and restarted (a fault point dies with its
//!     process);
//!   - `disk-torn`: `wal::write` = `return(torn)` writes half of its next WAL write and
//!     fails, which stops the replica; then killed and restarted, it recovers a WAL with a
//!     torn tail.
//! - `partition` (two kinds, through the cluster's link proxies):
//!   - `partition-isolate`: every link to and from the replica is cut (with 3 replicas,
//!     a minority of one against a majority of two; on the leader, an isolated leader);
//!   - `partition-one-way`: the links from the replica are cut, the links to it pass: it
//!     hears the others, they do not hear it;
//!   - `partition-slow`: every link to and from the replica delays what it carries by
//!     `SLOW_LINK_DELAY` (about half the shortest election timeout), so a message and its
//!     answer take twice that, without cutting anything.
use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, NodeState};
use crate::error::{ChaosError, Result};
use crate::history::Clock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Kill,
    Pause,
    DiskStall,
    DiskFsync,
    DiskTorn,
    PartitionIsolate,
    PartitionOneWay,
    PartitionSlow,
}

impl FaultKind {
    pub const IMPLEMENTED: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::DiskStall,
        FaultKind::DiskFsync,
        FaultKind::DiskTorn,
        FaultKind::PartitionIsolate,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionSlow,
    ];
    pub const DISK: [FaultKind; 3] = [
        FaultKind::DiskStall,
        FaultKind::DiskFsync,
        FaultKind::DiskTorn,
    ];
    pub const PARTITION: [FaultKind; 3] = [
        FaultKind::PartitionIsolate,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionSlow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::DiskStall => "disk-stall",
            FaultKind::DiskFsync => "disk-fsync",
            FaultKind::DiskTorn => "disk-torn",
            FaultKind::PartitionIsolate => "partition-isolate",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::PartitionSlow => "partition-slow",
        }
    }

    /// The fault point and the actions that inject a disk fault.
    fn failpoint(self) -> Option<(&'static str, &'static str)> {
        match self {
            FaultKind::Kill
            | FaultKind::Pause
            | FaultKind::PartitionIsolate
            | FaultKind::PartitionOneWay
            | FaultKind::PartitionSlow => None,
            FaultKind::DiskStall => Some(("wal::fsync", "pause")),
            FaultKind::DiskFsync => Some(("wal::fsync", "return")),
            FaultKind::DiskTorn => Some(("wal::write", "return(torn)")),
        }
    }
}

/// Parses `kill,pause`, `disk` (its three kinds), `partition` (its three), `all` (every implemented fault) or
/// `none`.
pub fn parse(list: &str) -> Result<Vec<FaultKind>> {
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let found = match name {
            "all" => FaultKind::IMPLEMENTED.to_vec(),
            "disk" => FaultKind::DISK.to_vec(),
            "partition" => FaultKind::PARTITION.to_vec(),
            "none" => Vec::new(),
            _ => match FaultKind::IMPLEMENTED.iter().find(|k| k.name() == name) {
                Some(kind) => vec![*kind],
                None => {
                    let names: Vec<&str> =
                        FaultKind::IMPLEMENTED.iter().map(|k| k.name()).collect();
                    return Err(ChaosError::UnknownNemesis {
                        name: name.into(),
                        implemented: format!("{} (or all, none)", names.join(", ")),
                    });
                }
            },
        };
        kinds.extend(found);
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// What `partition-slow` adds to each of the replica's links: with the default timing
/// (10 ms ticks, 20-tick election timeout) about half the shortest election timeout.
pub const SLOW_LINK_DELAY: Duration = Duration::from_millis(100);

/// How long the nemesis waits between faults and how long each lasts.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub quiet_min: Duration,
    pub quiet_max: Duration,
    pub fault_min: Duration,
    pub fault_max: Duration,
}

impl Schedule {
    /// Faults last from `fault_min` (above the longest election timeout, so a paused or
    /// killed leader is replaced) to three times that.
    pub fn for_election_timeout(election_timeout_max: Duration) -> Schedule {
        let fault_min = (election_timeout_max * 3).max(Duration::from_millis(1_000));
        Schedule {
            quiet_min: Duration::from_millis(1_000),
            quiet_max: Duration::from_millis(3_000),
            fault_min,
            fault_max: fault_min * 3,
        }
    }
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub node: u32,
    /// The replica led (as a majority reported) when it was chosen.
    pub was_leader: bool,
    pub start_ms: f64,
    pub end_ms: f64,
}

/// A replica that exited without being killed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Crash {
    pub node: u32,
    pub status: String,
    pub at_ms: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NemesisLog {
    pub faults: Vec<Fault>,
    pub crashes: Vec<Crash>,
}

/// Injects faults of `kinds`, in turn, on random targets, until `until` (time since the run started), then heals the
/// cluster. Crashed replicas are recorded and restarted.
pub fn run(
    cluster: &mut Cluster,
    kinds: &[FaultKind],
    schedule: &Schedule,
    rng: &mut StdRng,
    clock: Clock,
    until: Duration,
) -> Result<NemesisLog> {
    let mut log = NemesisLog::default();
    loop {
        let quiet = rng.gen_range(schedule.quiet_min..=schedule.quiet_max);
        if !sleep_until(cluster, &mut log, clock, clock.elapsed() + quiet, until)? {
            break;
        }
        // In turn, so a short run still sees every kind.
        let Some(&kind) = kinds.get(log.faults.len() % kinds.len().max(1)) else {
            continue;
        };
        let (node, was_leader) = choose_target(cluster, rng);
        let start = clock.elapsed();
        inject(cluster, kind, node)?;
        let length = rng.gen_range(schedule.fault_min..=schedule.fault_max);
        sleep_until(cluster, &mut log, clock, start + length, Duration::MAX)?;
        heal(cluster, kind, node)?;
        log.faults.push(Fault {
            kind,
            node,
            was_leader,
            start_ms: millis(start),
            end_ms: millis(clock.elapsed()),
        });
    }
    cluster.heal()?;
    Ok(log)
}

fn inject(cluster: &mut Cluster, kind: FaultKind, node: u32) -> Result<()> {
    match (kind, kind.failpoint()) {
        (FaultKind::Kill, _) => cluster.kill9(node),
        (FaultKind::Pause, _) => cluster.pause(node),
        (FaultKind::PartitionIsolate, _) => {
            for other in cluster.ids().into_iter().filter(|&o| o != node) {
                cluster.set_link_cut(node, other, true);
                cluster.set_link_cut(other, node, true);
            }
            Ok(())
        }
        (FaultKind::PartitionOneWay, _) => {
            for other in cluster.ids().into_iter().filter(|&o| o != node) {
                cluster.set_link_cut(node, other, true);
            }
            Ok(())
        }
        (FaultKind::PartitionSlow, _) => {
            for other in cluster.ids().into_iter().filter(|&o| o != node) {
                cluster.set_link_delay(node, other, SLOW_LINK_DELAY);
                cluster.set_link_delay(other, node, SLOW_LINK_DELAY);
            }
            Ok(())
        }
        (_, Some((name, actions))) => cluster.failpoint(node, name, actions),
        (_, None) => unreachable!("every disk fault has a fault point"),
    }
}

/// Ends the fault. A replica a disk fault stopped is killed and restarted (if it crashed
/// instead, `sleep_until` restarted it already, and this restarts it once more).
fn heal(cluster: &mut Cluster, kind: FaultKind, node: u32) -> Result<()> {
    match kind {
        FaultKind::Kill => cluster.restart(node),
        FaultKind::Pause => cluster.resume(node),
        FaultKind::DiskStall => cluster.failpoint(node, "wal::fsync", "off"),
        FaultKind::PartitionIsolate | FaultKind::PartitionOneWay | FaultKind::PartitionSlow => {
            cluster.heal_links();
            Ok(())
        }
        FaultKind::DiskFsync | FaultKind::DiskTorn => {
            cluster.kill9(node)?;
            cluster.restart(node)
        }
    }
}

/// The leader half the time (when a majority names one), else any running replica.
fn choose_target(cluster: &Cluster, rng: &mut StdRng) -> (u32, bool) {
    let leader = cluster.leader().ok();
    if let Some(leader) = leader.filter(|_| rng.gen_bool(0.5)) {
        return (leader, true);
    }
    let running: Vec<u32> = (cluster.ids().into_iter())
        .filter(|&id| cluster.state(id) == NodeState::Running)
        .collect();
    let node = *running
        .choose(rng)
        .expect("healed between faults: all are running");
    (node, Some(node) == leader)
}

/// Sleeps until `wake` in short steps, restarting crashed replicas as it goes. Returns
/// false, early, if `limit` comes first.
fn sleep_until(
    cluster: &mut Cluster,
    log: &mut NemesisLog,
    clock: Clock,
    wake: Duration,
    limit: Duration,
) -> Result<bool> {
    const STEP: Duration = Duration::from_millis(50);
    loop {
        for (node, status) in cluster.take_crashed() {
            let at_ms = millis(clock.elapsed());
            log.crashes.push(Crash {
                node,
                status,
                at_ms,
            });
            cluster.restart(node)?;
        }
        let now = clock.elapsed();
        if now >= limit {
            return Ok(false);
        }
        if now >= wake {
            return Ok(true);
        }
        thread::sleep(STEP.min(wake - now));
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_list_the_implemented() {
        assert_eq!(parse("kill").unwrap(), vec![FaultKind::Kill]);
        assert_eq!(
            parse("pause, kill").unwrap(),
            vec![FaultKind::Kill, FaultKind::Pause]
        );
        assert_eq!(parse("all").unwrap(), FaultKind::IMPLEMENTED.to_vec());
        assert!(parse("none").unwrap().is_empty());
        let error = parse("kill,flood").unwrap_err().to_string();
        assert!(error.contains("\"flood\""), "{error}");
        assert!(error.contains("kill, pause, disk-stall"), "{error}");
        assert_eq!(parse("disk").unwrap(), FaultKind::DISK.to_vec());
        assert_eq!(parse("partition").unwrap(), FaultKind::PARTITION.to_vec());
    }

    #[test]
    fn faults_outlast_the_election_timeout() {
        let schedule = Schedule::for_election_timeout(Duration::from_millis(400));
        assert!(schedule.fault_min > Duration::from_millis(400));
        assert!(schedule.fault_max >= schedule.fault_min);
    }
}
