//! The nemesis: faults on distinct replicas, at most (n - 1) / 2 of them faulty at once
//! (one at a time with 3 replicas, two with 5), each healed on its own schedule, so a
//! majority is always either running or about to be again.
//!
//! - `kill`: SIGKILL a replica (the leader or one at random), keep it down for a while,
//!   restart it on the same data directory.
//! - `pause`: SIGSTOP a replica (the leader or one at random) for longer than the election
//!   timeout, then SIGCONT. Its clients' calls hang until their timeout.
//! - `disk` (four kinds; the first three through the replica's fault points):
//!   - `disk-stall`: `wal::fsync` = `pause` blocks the replica's driver in its next
//!     fdatasync for longer than the election timeout, then `off` lets it go on;
//!   - `disk-fsync`: `wal::fsync` = `return` fails its next fdatasync, which stops the
//!     replica; after a while it is killed and restarted (a fault point dies with its
//!     process);
//!   - `disk-torn`: `wal::write` = `return(torn)` writes half of its next WAL write and
//!     fails, which stops the replica; then killed and restarted, it recovers a WAL with a
//!     torn tail;
//!   - `disk-loss`: SIGKILL the replica and delete its data directory, as a failed disk
//!     replaced by an empty one; at the heal it starts on the empty directory (without
//!     `--bootstrap`), joins as a new incarnation, and is added and promoted again through
//!     the other replicas (`READMIT_TIMEOUT` at most). Until then the membership has one
//!     voter fewer, so nothing else is faulty meanwhile with 3 replicas. A replica that
//!     forgot what it promised and voted anyway would lose acknowledged writes here.
//! - `partition` (four kinds, through the cluster's link proxies):
//!   - `partition-isolate`: every link to and from the replica is cut (a minority of one;
//!     on the leader, an isolated leader);
//!   - `partition-one-way`: the links from the replica are cut, the links to it pass: it
//!     hears the others, they do not hear it;
//!   - `partition-slow`: every link to and from the replica delays what it carries by
//!     `SLOW_LINK_DELAY` (about half the shortest election timeout), so a message and its
//!     answer take twice that, without cutting anything;
//!   - `partition-split`: the replicas split into a minority and a majority side (2 | 3
//!     with 5 replicas), the leader on a random side, every link between the sides cut.
//!     With 3 replicas that is a minority of one, `partition-isolate`, and it is recorded
//!     as such. Its minority side counts as faulty, so with 5 replicas it runs alone.
//! - `link` (two kinds, through the proxies, on connections that stay open):
//!   - `link-lossy`: every link to and from the replica drops each frame with probability
//!     `LOSSY_LINK_LOSS`;
//!   - `link-reorder`: every link to and from the replica holds a frame back, with
//!     probability `REORDERING_LINK_PROBABILITY`, and sends it after the next one.
//!
//! Where faults overlap on a link (two replicas isolated, say, share the links between
//! them), the link has every fault of every active fault that touches it, and healing one
//! leaves the others' in place.
use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, DivergenceReading, NodeState};
use crate::error::{ChaosError, Result};
use crate::history::Clock;
use crate::proxy::{LinkCounts, LinkFaults};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Kill,
    Pause,
    DiskStall,
    DiskFsync,
    DiskTorn,
    DiskLoss,
    PartitionIsolate,
    PartitionOneWay,
    PartitionSlow,
    PartitionSplit,
    LinkLossy,
    LinkReorder,
}

impl FaultKind {
    pub const IMPLEMENTED: [FaultKind; 12] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::DiskStall,
        FaultKind::DiskFsync,
        FaultKind::DiskTorn,
        FaultKind::DiskLoss,
        FaultKind::PartitionIsolate,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionSlow,
        FaultKind::PartitionSplit,
        FaultKind::LinkLossy,
        FaultKind::LinkReorder,
    ];
    pub const DISK: [FaultKind; 4] = [
        FaultKind::DiskStall,
        FaultKind::DiskFsync,
        FaultKind::DiskTorn,
        FaultKind::DiskLoss,
    ];
    pub const PARTITION: [FaultKind; 4] = [
        FaultKind::PartitionIsolate,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionSlow,
        FaultKind::PartitionSplit,
    ];
    pub const LINK: [FaultKind; 2] = [FaultKind::LinkLossy, FaultKind::LinkReorder];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::DiskStall => "disk-stall",
            FaultKind::DiskFsync => "disk-fsync",
            FaultKind::DiskTorn => "disk-torn",
            FaultKind::DiskLoss => "disk-loss",
            FaultKind::PartitionIsolate => "partition-isolate",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::PartitionSlow => "partition-slow",
            FaultKind::PartitionSplit => "partition-split",
            FaultKind::LinkLossy => "link-lossy",
            FaultKind::LinkReorder => "link-reorder",
        }
    }

    /// The fault point and the actions that inject a disk fault.
    fn failpoint(self) -> Option<(&'static str, &'static str)> {
        match self {
            FaultKind::DiskStall => Some(("wal::fsync", "pause")),
            FaultKind::DiskFsync => Some(("wal::fsync", "return")),
            FaultKind::DiskTorn => Some(("wal::write", "return(torn)")),
            _ => None,
        }
    }

    /// The fault acts through the link proxies only.
    fn on_links(self) -> bool {
        matches!(
            self,
            FaultKind::PartitionIsolate
                | FaultKind::PartitionOneWay
                | FaultKind::PartitionSlow
                | FaultKind::PartitionSplit
                | FaultKind::LinkLossy
                | FaultKind::LinkReorder
        )
    }
}

/// Parses `kill,pause`, `disk` (its four kinds), `partition` (its four), `link` (its two),
/// `all` (every implemented fault) or `none`.
pub fn parse(list: &str) -> Result<Vec<FaultKind>> {
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let found = match name {
            "all" => FaultKind::IMPLEMENTED.to_vec(),
            "disk" => FaultKind::DISK.to_vec(),
            "partition" => FaultKind::PARTITION.to_vec(),
            "link" => FaultKind::LINK.to_vec(),
            "none" => Vec::new(),
            _ => match FaultKind::IMPLEMENTED.iter().find(|k| k.name() == name) {
                Some(kind) => vec![*kind],
                None => {
                    let names: Vec<&str> =
                        FaultKind::IMPLEMENTED.iter().map(|k| k.name()).collect();
                    return Err(ChaosError::UnknownNemesis {
                        name: name.into(),
                        implemented: format!(
                            "{} (or disk, partition, link, all, none)",
                            names.join(", ")
                        ),
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
/// The probability that a `link-lossy` link drops a frame.
pub const LOSSY_LINK_LOSS: f64 = 0.2;
/// The probability that a `link-reorder` link holds a frame back behind the next one.
pub const REORDERING_LINK_PROBABILITY: f64 = 0.2;
/// The longest a replica that lost its disk may take to be a voter again at its heal
/// (started, added, caught up by snapshot, promoted).
pub const READMIT_TIMEOUT: Duration = Duration::from_secs(90);

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
    /// The replica it hit (for a split, the first of the minority side).
    pub node: u32,
    /// Every replica it made faulty: `node` alone, or a split's minority side.
    #[serde(default)]
    pub nodes: Vec<u32>,
    /// The leader (as a majority reported it when the fault was chosen) was among `nodes`.
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
    /// In the order they started.
    pub faults: Vec<Fault>,
    pub crashes: Vec<Crash>,
    /// What the link proxies did to the frames over the whole run.
    #[serde(default)]
    pub links: LinkCounts,
    /// Each running replica's divergence gauges once the run is over.
    #[serde(default)]
    pub divergence: Vec<DivergenceReading>,
}

/// A fault in progress.
struct Active {
    kind: FaultKind,
    nodes: Vec<u32>,
    was_leader: bool,
    start: Duration,
    end_at: Duration,
}

impl Active {
    /// What this fault does to the link from `from` to `to`.
    fn link_faults(&self, from: u32, to: u32) -> LinkFaults {
        let (from_in, to_in) = (self.nodes.contains(&from), self.nodes.contains(&to));
        let either = from_in || to_in;
        let none = LinkFaults::default();
        match self.kind {
            FaultKind::PartitionIsolate => LinkFaults {
                cut: either,
                ..none
            },
            FaultKind::PartitionOneWay => LinkFaults {
                cut: from_in,
                ..none
            },
            FaultKind::PartitionSplit => LinkFaults {
                cut: from_in != to_in,
                ..none
            },
            FaultKind::PartitionSlow if either => LinkFaults {
                delay: SLOW_LINK_DELAY,
                ..none
            },
            FaultKind::LinkLossy if either => LinkFaults {
                loss: LOSSY_LINK_LOSS,
                ..none
            },
            FaultKind::LinkReorder if either => LinkFaults {
                reorder: REORDERING_LINK_PROBABILITY,
                ..none
            },
            _ => none,
        }
    }

    fn finish(self, clock: Clock) -> Fault {
        Fault {
            kind: self.kind,
            node: self.nodes[0],
            nodes: self.nodes,
            was_leader: self.was_leader,
            start_ms: millis(self.start),
            end_ms: millis(clock.elapsed()),
        }
    }
}

/// What the nemesis keeps between its steps.
struct State {
    active: Vec<Active>,
    log: NemesisLog,
    /// Faults started, to take the kinds in turn.
    started: usize,
    /// When the next fault may start; `None` while it waits for a fault to heal first.
    next_start: Option<Duration>,
    faulty_max: usize,
}

impl State {
    fn faulty(&self) -> BTreeSet<u32> {
        (self.active.iter())
            .flat_map(|a| a.nodes.iter().copied())
            .collect()
    }
}

/// Injects faults of `kinds`, in turn, on random targets, until `until` (time since the run
/// started), then heals the cluster. Each fault starts after a quiet period following the
/// one before (or, when no replica is free for it, following the next heal), and lasts its
/// own random length. Crashed replicas are recorded and restarted.
pub fn run(
    cluster: &mut Cluster,
    kinds: &[FaultKind],
    schedule: &Schedule,
    rng: &mut StdRng,
    clock: Clock,
    until: Duration,
) -> Result<NemesisLog> {
    let mut state = State {
        active: Vec::new(),
        log: NemesisLog::default(),
        started: 0,
        next_start: (!kinds.is_empty()).then(|| clock.elapsed() + quiet(schedule, rng)),
        faulty_max: (cluster.ids().len() - 1) / 2,
    };
    loop {
        let next_end = state.active.iter().map(|a| a.end_at).min();
        let wake = [state.next_start, next_end].into_iter().flatten().min();
        let wake = wake.unwrap_or(Duration::MAX);
        let in_time = sleep_until(cluster, &mut state.log, clock, wake, until)?;
        heal_due(cluster, &mut state, schedule, rng, clock, in_time)?;
        if !in_time {
            break;
        }
        if state.next_start.is_some_and(|at| clock.elapsed() >= at) {
            maybe_start(cluster, &mut state, kinds, schedule, rng, clock)?;
        }
    }
    cluster.heal()?;
    state.log.links = cluster.link_counts();
    let mut log = state.log;
    log.faults.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    Ok(log)
}

fn quiet(schedule: &Schedule, rng: &mut StdRng) -> Duration {
    rng.gen_range(schedule.quiet_min..=schedule.quiet_max)
}

/// Heals the faults whose time is up (every one, once `in_time` is false). A heal lets a
/// fault that waited for a free replica start after a quiet period.
fn heal_due(
    cluster: &mut Cluster,
    state: &mut State,
    schedule: &Schedule,
    rng: &mut StdRng,
    clock: Clock,
    in_time: bool,
) -> Result<()> {
    let now = clock.elapsed();
    let due = |a: &Active| !in_time || a.end_at <= now;
    while let Some(index) = state.active.iter().position(due) {
        let fault = state.active.remove(index);
        progress(clock, "heal", &fault);
        heal(cluster, &fault, &state.active)?;
        progress(clock, "healed", &fault);
        state.log.faults.push(fault.finish(clock));
        if state.next_start.is_none() {
            state.next_start = Some(clock.elapsed() + quiet(schedule, rng));
        }
    }
    Ok(())
}

/// Starts the next kind's fault if enough replicas are free of faults for it; otherwise
/// waits for a heal.
fn maybe_start(
    cluster: &mut Cluster,
    state: &mut State,
    kinds: &[FaultKind],
    schedule: &Schedule,
    rng: &mut StdRng,
    clock: Clock,
) -> Result<()> {
    let replicas = cluster.ids().len();
    let mut kind = kinds[state.started % kinds.len()];
    if kind == FaultKind::PartitionSplit && replicas == 3 {
        kind = FaultKind::PartitionIsolate; // a minority of one: the same fault
    }
    let width = match kind {
        FaultKind::PartitionSplit => (replicas - 1) / 2,
        _ => 1,
    };
    let faulty = state.faulty();
    if faulty.len() + width > state.faulty_max {
        state.next_start = None;
        return Ok(());
    }
    let Some((nodes, was_leader)) = choose_targets(cluster, rng, &faulty, width) else {
        state.next_start = Some(clock.elapsed() + quiet(schedule, rng));
        return Ok(());
    };
    let start = clock.elapsed();
    let length = rng.gen_range(schedule.fault_min..=schedule.fault_max);
    let fault = Active {
        kind,
        nodes,
        was_leader,
        start,
        end_at: start + length,
    };
    state.started += 1;
    state.next_start = Some(start + quiet(schedule, rng));
    progress(clock, "inject", &fault);
    inject(cluster, &fault, &state.active)?;
    state.active.push(fault);
    Ok(())
}

fn inject(cluster: &mut Cluster, fault: &Active, others: &[Active]) -> Result<()> {
    let node = fault.nodes[0];
    match (fault.kind, fault.kind.failpoint()) {
        (FaultKind::Kill, _) => cluster.kill9(node),
        (FaultKind::Pause, _) => cluster.pause(node),
        (FaultKind::DiskLoss, _) => cluster.lose_disk(node),
        (kind, _) if kind.on_links() => {
            apply_links(cluster, others.iter().chain([fault]));
            Ok(())
        }
        (_, Some((name, actions))) => cluster.failpoint(node, name, actions),
        (_, None) => unreachable!("every disk fault has a fault point"),
    }
}

/// Ends the fault (`others` are those still active). A replica a disk fault stopped is
/// killed and restarted (if it crashed instead, `sleep_until` restarted it already, and
/// this restarts it once more).
fn heal(cluster: &mut Cluster, fault: &Active, others: &[Active]) -> Result<()> {
    let node = fault.nodes[0];
    match fault.kind {
        FaultKind::Kill => cluster.restart(node),
        FaultKind::Pause => cluster.resume(node),
        FaultKind::DiskStall => cluster.failpoint(node, "wal::fsync", "off"),
        FaultKind::DiskLoss => cluster.readmit(node, READMIT_TIMEOUT),
        FaultKind::DiskFsync | FaultKind::DiskTorn => {
            cluster.kill9(node)?;
            cluster.restart(node)
        }
        _ => {
            apply_links(cluster, others.iter());
            Ok(())
        }
    }
}

/// Sets every link to the union of what the `active` faults do to it.
fn apply_links<'a>(cluster: &Cluster, active: impl Iterator<Item = &'a Active> + Clone) {
    for (from, to) in cluster.links() {
        cluster.set_link_faults(from, to, union_on_link(active.clone(), from, to));
    }
}

fn union_on_link<'a>(active: impl Iterator<Item = &'a Active>, from: u32, to: u32) -> LinkFaults {
    (active.map(|a| a.link_faults(from, to))).fold(LinkFaults::default(), LinkFaults::union)
}

/// `width` running replicas free of faults: the first is the leader half the time (when a
/// majority names one and it is free); whether the leader is among them. None if too few
/// replicas are free.
fn choose_targets(
    cluster: &Cluster,
    rng: &mut StdRng,
    faulty: &BTreeSet<u32>,
    width: usize,
) -> Option<(Vec<u32>, bool)> {
    let leader = cluster.leader().ok().filter(|l| !faulty.contains(l));
    let mut free: Vec<u32> = (cluster.ids().into_iter())
        .filter(|id| !faulty.contains(id) && cluster.state(*id) == NodeState::Running)
        .collect();
    if free.len() < width {
        return None;
    }
    free.shuffle(rng);
    if let Some(leader) = leader.filter(|_| rng.gen_bool(0.5)) {
        free.retain(|&id| id != leader);
        free.insert(0, leader);
    } else if let Some(leader) = leader {
        // Not the leader's turn: it stays out (a split puts it on the majority side).
        free.retain(|&id| id != leader);
    }
    free.truncate(width);
    if free.len() < width {
        return None;
    }
    let was_leader = leader.is_some_and(|l| free.contains(&l));
    Some((free, was_leader))
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

/// One line on stderr per step of a fault, so a long run shows where it is.
fn progress(clock: Clock, step: &str, fault: &Active) {
    let leader = if fault.was_leader {
        " (the leader)"
    } else {
        ""
    };
    eprintln!(
        "{:9.1} s  {step:<6} {} on replica {:?}{leader}",
        clock.elapsed().as_secs_f64(),
        fault.kind.name(),
        fault.nodes
    );
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
        assert_eq!(parse("link").unwrap(), FaultKind::LINK.to_vec());
        assert!(parse("all").unwrap().contains(&FaultKind::LinkReorder));
    }

    fn active(kind: FaultKind, nodes: &[u32]) -> Active {
        Active {
            kind,
            nodes: nodes.to_vec(),
            was_leader: false,
            start: Duration::ZERO,
            end_at: Duration::ZERO,
        }
    }

    #[test]
    fn a_link_has_the_union_of_the_faults_on_it_and_keeps_the_others_when_one_heals() {
        let isolated = [
            active(FaultKind::PartitionIsolate, &[1]),
            active(FaultKind::PartitionIsolate, &[2]),
        ];
        assert!(union_on_link(isolated.iter(), 1, 2).cut);
        // Replica 1 healed: the link between 1 and 2 stays cut for 2, 1 and 3 talk again.
        assert!(union_on_link(isolated[1..].iter(), 1, 2).cut);
        assert!(union_on_link(isolated[1..].iter(), 2, 1).cut);
        assert!(!union_on_link(isolated[1..].iter(), 1, 3).cut);

        let lossy_and_slow = [
            active(FaultKind::LinkLossy, &[1]),
            active(FaultKind::PartitionSlow, &[2]),
        ];
        let both = union_on_link(lossy_and_slow.iter(), 2, 1);
        assert_eq!(both.loss, LOSSY_LINK_LOSS);
        assert_eq!(both.delay, SLOW_LINK_DELAY);
        assert!(!both.cut);
        assert_eq!(
            union_on_link(lossy_and_slow.iter(), 3, 4),
            LinkFaults::default()
        );

        // One way: only the replica's outbound links. A split: only links across it.
        let one_way = [active(FaultKind::PartitionOneWay, &[3])];
        assert!(union_on_link(one_way.iter(), 3, 1).cut);
        assert!(!union_on_link(one_way.iter(), 1, 3).cut);
        let split = [active(FaultKind::PartitionSplit, &[1, 4])];
        assert!(union_on_link(split.iter(), 1, 2).cut);
        assert!(union_on_link(split.iter(), 5, 4).cut);
        assert!(!union_on_link(split.iter(), 1, 4).cut);
        assert!(!union_on_link(split.iter(), 2, 3).cut);
        let reorder = union_on_link([active(FaultKind::LinkReorder, &[5])].iter(), 5, 1);
        assert_eq!(reorder.reorder, REORDERING_LINK_PROBABILITY);
    }

    #[test]
    fn faults_outlast_the_election_timeout() {
        let schedule = Schedule::for_election_timeout(Duration::from_millis(400));
        assert!(schedule.fault_min > Duration::from_millis(400));
        assert!(schedule.fault_max >= schedule.fault_min);
    }
}
