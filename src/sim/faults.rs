//! The fault schedule: which faults a seed injects, and when. Targets such as "the leader" are
//! resolved when the fault fires, so the log of executed faults is what gets reported.

use crate::consensus::Rng;

use super::network::LinkFaults;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Node(u32),
    /// Whoever leads when the fault fires (any replica if none does).
    Leader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    /// A random subset cut off from the rest, both ways.
    Split,
    /// The leader cut off from everyone, both ways.
    IsolateLeader,
    /// Random directed links cut one way only.
    OneWay,
    /// Two halves that cannot talk, both able to reach one bridge replica.
    Bridge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Crash {
        target: Target,
        down_us: u64,
    },
    Pause {
        target: Target,
        paused_us: u64,
    },
    Partition {
        kind: Partition,
        lasting_us: u64,
    },
    /// A crash that loses the disk: the replica restarts with nothing, as a new incarnation.
    DiskLoss {
        target: Target,
        down_us: u64,
    },
}

/// Everything a seed decides up front.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Replicas bootstrapped as the first membership.
    pub nodes: u32,
    /// Replicas beyond those that start empty, as joiners an operator may add.
    pub spares: u32,
    /// An operator changes the membership now and then (besides re-admitting replicas
    /// that lost their disk): adds and promotes learners, removes voters and learners.
    pub membership_changes: bool,
    pub links: LinkFaults,
    pub faults: Vec<(u64, Fault)>,
    /// Replica fsync latency range.
    pub fsync_min_us: u64,
    pub fsync_max_us: u64,
    pub heartbeat_interval_ticks: u32,
    pub election_timeout_ticks: u32,
    pub inflight_slots_max: u64,
    pub slot_bytes_max: usize,
    pub catch_up_bytes_max: usize,
    pub clients: u32,
    /// Out of 1,000 Readies that carry records, how many end with the replica crashing right
    /// after it sent that Ready's messages, before the records are durable: the moment where
    /// "durable before sent" matters.
    pub crash_before_fsync_per_mille: u64,
    /// Each replica snapshots its state and compacts its log every this many applied slots
    /// (0: never), and then drops the WAL records before the compaction; a replica behind a
    /// peer's compacted log installs the peer's snapshot after `snapshot_transfer_us`.
    pub snapshot_interval_slots: u64,
    pub snapshot_transfer_us: u64,
}

impl Plan {
    pub fn generate(rng: &mut Rng, safety_us: u64) -> Plan {
        let nodes = match rng.below(10) {
            0 => 1,
            1..=5 => 3,
            6..=8 => 5,
            _ => 7,
        };
        let links = LinkFaults {
            drop_per_mille: [0, 10, 50, 150][rng.below(4) as usize],
            duplicate_per_mille: [0, 10, 50][rng.below(3) as usize],
            delay_min_us: rng.between(50, 500),
            delay_max_us: rng.between(1_000, 20_000),
        };
        let fsync_min_us = rng.between(100, 1_000);
        let spares = rng.below(u64::from(8 - nodes).min(3)) as u32;
        let membership_changes = rng.chance(1, 2);
        let disk_loss = nodes > 1 && rng.chance(1, 2);
        let mut plan = Plan {
            nodes,
            spares,
            membership_changes,
            links,
            faults: Vec::new(),
            fsync_min_us,
            fsync_max_us: fsync_min_us + rng.between(0, 10_000),
            heartbeat_interval_ticks: rng.between(1, 3) as u32,
            election_timeout_ticks: rng.between(10, 20) as u32,
            inflight_slots_max: rng.between(1, 16),
            slot_bytes_max: rng.between(64, 512) as usize,
            catch_up_bytes_max: rng.between(64, 4_096) as usize,
            clients: rng.between(1, 5) as u32,
            crash_before_fsync_per_mille: [0, 2, 10][rng.below(3) as usize],
            snapshot_interval_slots: [0, 3, 10, 40][rng.below(4) as usize],
            snapshot_transfer_us: rng.between(1_000, 200_000),
        };
        plan.faults = Plan::schedule(rng, nodes + spares, disk_loss, safety_us);
        plan
    }

    /// Every replica, bootstrapped or spare.
    pub fn all_nodes(&self) -> u32 {
        self.nodes + self.spares
    }

    fn schedule(rng: &mut Rng, nodes: u32, disk_loss: bool, safety_us: u64) -> Vec<(u64, Fault)> {
        let mean_gap_us = [200_000, 500_000, 1_500_000][rng.below(3) as usize];
        let mut faults = Vec::new();
        let mut at = rng.between(0, mean_gap_us);
        while at < safety_us {
            faults.push((at, Plan::fault(rng, nodes, disk_loss)));
            at += rng.between(mean_gap_us / 4, mean_gap_us * 2);
        }
        faults
    }

    fn fault(rng: &mut Rng, nodes: u32, disk_loss: bool) -> Fault {
        let target = if rng.chance(1, 2) {
            Target::Leader
        } else {
            Target::Node(rng.between(1, u64::from(nodes)) as u32)
        };
        if disk_loss && rng.chance(1, 4) {
            let down_us = rng.between(10_000, 1_000_000);
            return Fault::DiskLoss { target, down_us };
        }
        match rng.below(3) {
            0 => Fault::Crash {
                target,
                down_us: rng.between(10_000, 3_000_000),
            },
            1 => Fault::Pause {
                target,
                paused_us: rng.between(100_000, 3_000_000),
            },
            _ => Fault::Partition {
                kind: [
                    Partition::Split,
                    Partition::IsolateLeader,
                    Partition::OneWay,
                    Partition::Bridge,
                ][rng.below(4) as usize],
                lasting_us: rng.between(100_000, 3_000_000),
            },
        }
    }
}
