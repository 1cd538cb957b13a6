//! The simulated network: per-message loss, duplication and delay (which reorders), and
//! directed link cuts for partitions.

use std::collections::BTreeSet;

use crate::consensus::{NodeId, Rng};

#[derive(Clone, Debug)]
pub struct LinkFaults {
    /// Out of 1,000 messages, how many are lost.
    pub drop_per_mille: u64,
    /// Out of 1,000 messages, how many arrive twice.
    pub duplicate_per_mille: u64,
    pub delay_min_us: u64,
    pub delay_max_us: u64,
}

impl LinkFaults {
    pub fn healthy() -> LinkFaults {
        LinkFaults {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            delay_min_us: 100,
            delay_max_us: 1_000,
        }
    }
}

#[derive(Debug)]
pub struct Network {
    pub faults: LinkFaults,
    /// Directed links that deliver nothing: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    pub fn new(faults: LinkFaults) -> Network {
        Network {
            faults,
            cut: BTreeSet::new(),
        }
    }

    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub fn heal_all(&mut self) {
        self.cut.clear();
    }

    /// Reconnect every link among `nodes`, keeping cuts to anyone else.
    pub fn heal_among(&mut self, nodes: &BTreeSet<NodeId>) {
        self.cut
            .retain(|(from, to)| !(nodes.contains(from) && nodes.contains(to)));
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Delivery delays for one message: none if it is lost, two if duplicated.
    pub fn delays(&self, rng: &mut Rng, from: NodeId, to: NodeId) -> Vec<u64> {
        if self.is_cut(from, to) || rng.chance(self.faults.drop_per_mille, 1_000) {
            return Vec::new();
        }
        let mut delays = vec![self.delay(rng)];
        if rng.chance(self.faults.duplicate_per_mille, 1_000) {
            delays.push(self.delay(rng));
        }
        delays
    }

    pub fn delay(&self, rng: &mut Rng) -> u64 {
        rng.between(self.faults.delay_min_us, self.faults.delay_max_us)
    }
}
