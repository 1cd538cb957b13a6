//! Safety checks over everything the simulated cluster does. Each returns a description of
//! the first violation it sees.

use std::collections::{BTreeMap, BTreeSet};

use crate::consensus::{Ballot, DurableState, Message, MessageBody, NodeId, Slot, Value};

/// A command's identity: the first eight bytes of its payload.
pub type CommandId = u64;

pub fn command_id(command: &[u8]) -> Option<CommandId> {
    let bytes: [u8; 8] = command.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[derive(Debug, Default)]
pub struct Checker {
    /// The first value any replica applied at each slot.
    chosen: BTreeMap<Slot, Value>,
    /// Commands clients have submitted.
    proposed: BTreeSet<CommandId>,
    /// Commands acknowledged to clients, with the slot they were applied at.
    acknowledged: BTreeMap<CommandId, Slot>,
    /// Highest slot of any acknowledged command: reads invoked later must see at least this.
    acknowledged_slot_max: Slot,
    /// Last slot each replica applied; survives its crashes like the state machine does.
    applied: BTreeMap<NodeId, Slot>,
    /// What each replica has told others it promised and voted for, since it last started.
    sent: BTreeMap<NodeId, SentByAcceptor>,
    /// The value proposed for each (ballot, slot), from every Accept ever sent.
    proposals: BTreeMap<(Ballot, Slot), Value>,
    /// The first violation seen while watching messages go by.
    violation: Option<String>,
}

#[derive(Debug, Default)]
struct SentByAcceptor {
    promised: Ballot,
    votes: BTreeMap<Slot, Ballot>,
}

pub type Verdict = std::result::Result<(), String>;

impl Checker {
    pub fn on_propose(&mut self, command: CommandId) {
        self.proposed.insert(command);
    }

    /// (a) agreement, (b) validity and (d) in-order, exactly-once apply.
    pub fn on_apply(&mut self, node: NodeId, slot: Slot, value: &Value) -> Verdict {
        let applied = self.applied.entry(node).or_insert(0);
        if slot != *applied + 1 {
            return Err(format!(
                "order: replica {node} applied slot {slot} right after slot {applied}"
            ));
        }
        *applied = slot;
        for command in value.commands() {
            let known = command_id(command).is_some_and(|id| self.proposed.contains(&id));
            if !known {
                return Err(format!(
                    "validity: replica {node} applied a command nobody proposed at slot {slot}"
                ));
            }
        }
        match self.chosen.get(&slot) {
            Some(first) if first != value => Err(format!(
                "agreement: replica {node} applied {} at slot {slot}, another applied {}",
                describe(value),
                describe(first)
            )),
            Some(_) => Ok(()),
            None => {
                self.chosen.insert(slot, value.clone());
                Ok(())
            }
        }
    }

    /// (d) with snapshots: a replica installs a snapshot at `slot` instead of applying up to
    /// it. Every slot it skips must be one some replica applied, in order, already (the
    /// snapshot's source did, and its applies were checked).
    pub fn on_install(&mut self, node: NodeId, slot: Slot) -> Verdict {
        let applied = self.applied.entry(node).or_insert(0);
        if slot <= *applied {
            return Err(format!(
                "order: replica {node} installed a snapshot at slot {slot} after applying {applied}"
            ));
        }
        if let Some(missing) = (*applied + 1..=slot).find(|s| !self.chosen.contains_key(s)) {
            return Err(format!(
                "snapshot: replica {node} installed one at slot {slot}, but nobody applied slot {missing}"
            ));
        }
        *applied = slot;
        Ok(())
    }

    /// A replica lost its disk and comes back as a new member incarnation: its state
    /// machine starts over, and what the old incarnation promised no longer binds it
    /// (no quorum counts the new incarnation until a membership change admits it).
    pub fn on_disk_loss(&mut self, node: NodeId) {
        self.applied.insert(node, 0);
        self.sent.remove(&node);
    }

    pub fn on_acknowledge(&mut self, command: CommandId, slot: Slot) {
        self.acknowledged.entry(command).or_insert(slot);
        self.acknowledged_slot_max = self.acknowledged_slot_max.max(slot);
    }

    pub fn is_acknowledged(&self, command: CommandId) -> bool {
        self.acknowledged.contains_key(&command)
    }

    /// What a read invoked now must observe.
    pub fn read_floor(&self) -> Slot {
        self.acknowledged_slot_max
    }

    /// (e) a read index covers every write acknowledged before the read was invoked.
    pub fn on_read(&self, node: NodeId, index: Slot, floor: Slot) -> Verdict {
        if index < floor {
            return Err(format!(
                "linearizable read: replica {node} gave read index {index}, but slot {floor} was acknowledged before the read began"
            ));
        }
        Ok(())
    }

    /// Remember promises, votes and proposals as they leave a replica, checking (g) ballot
    /// uniqueness: one ballot proposes at most one value per slot, across the proposer's
    /// crashes. Followers rely on it to learn what is chosen.
    pub fn on_send(&mut self, message: &Message) {
        if let MessageBody::Accept {
            ballot, entries, ..
        } = &message.body
        {
            for (slot, value) in entries {
                let first = self
                    .proposals
                    .entry((*ballot, *slot))
                    .or_insert_with(|| value.clone());
                if first != value && self.violation.is_none() {
                    self.violation = Some(format!(
                        "ballot uniqueness: ballot {ballot} proposed {} and {} for slot {slot}",
                        describe(first),
                        describe(value)
                    ));
                }
            }
        }
        let sent = self.sent.entry(message.from).or_default();
        match &message.body {
            MessageBody::Promise { ballot, .. } => sent.promised = sent.promised.max(*ballot),
            MessageBody::Accepted { ballot, slots } => {
                for &slot in slots {
                    let voted = sent.votes.entry(slot).or_default();
                    *voted = (*voted).max(*ballot);
                }
            }
            _ => {}
        }
    }

    /// (f) acceptor memory: what survives a crash still holds every promise and vote the
    /// replica sent. Paxos is only safe if acceptors never forget.
    pub fn on_crash(&mut self, node: NodeId, durable: &DurableState) -> Verdict {
        let sent = self.sent.remove(&node).unwrap_or_default();
        if durable.promised < sent.promised {
            return Err(format!(
                "acceptor memory: replica {node} promised ballot {} but after a crash remembers only {}",
                sent.promised, durable.promised
            ));
        }
        for (slot, ballot) in sent.votes {
            if slot <= durable.compacted {
                // Chosen, and held by the replica's snapshot instead of its log.
                continue;
            }
            let kept = durable.log.get(&slot);
            if !kept.is_some_and(|entry| entry.chosen || entry.ballot >= ballot) {
                return Err(format!(
                    "acceptor memory: replica {node} voted for slot {slot} at ballot {ballot} but forgot it in a crash"
                ));
            }
        }
        Ok(())
    }

    /// A violation seen in `on_send`, reported once.
    pub fn take_violation(&mut self) -> Verdict {
        match self.violation.take() {
            Some(violation) => Err(violation),
            None => Ok(()),
        }
    }

    pub fn applied(&self, node: NodeId) -> Slot {
        self.applied.get(&node).copied().unwrap_or(0)
    }

    /// (c) durability: every acknowledged command is in the chosen log where it was
    /// acknowledged, and every replica in `nodes` has applied past it.
    pub fn check_durability(&self, nodes: &BTreeSet<NodeId>) -> Verdict {
        for (&command, &slot) in &self.acknowledged {
            let value = self.chosen.get(&slot);
            let present = value.is_some_and(|value| {
                value
                    .commands()
                    .iter()
                    .any(|c| command_id(c) == Some(command))
            });
            if !present {
                return Err(format!(
                    "durability: command {command:#x} acknowledged at slot {slot} is not there"
                ));
            }
            for &node in nodes {
                if self.applied(node) < slot {
                    return Err(format!(
                        "durability: replica {node} never applied acknowledged slot {slot}"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.len()
    }

    pub fn chosen_count(&self) -> usize {
        self.chosen.len()
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Noop => "no-op".to_string(),
        Value::Commands(commands) => {
            let ids: Vec<String> = commands
                .iter()
                .map(|c| command_id(c).map_or("?".into(), |id| format!("{id:#x}")))
                .collect();
            format!("[{}]", ids.join(","))
        }
        Value::Membership(membership) => format!("membership {membership}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(id: u64) -> Value {
        Value::Commands(vec![id.to_le_bytes().to_vec()])
    }

    fn checker_with(ids: &[u64]) -> Checker {
        let mut checker = Checker::default();
        for &id in ids {
            checker.on_propose(id);
        }
        checker
    }

    #[test]
    fn agreement_violation_is_caught() {
        let mut checker = checker_with(&[1, 2]);
        checker.on_apply(1, 1, &value(1)).unwrap();
        let verdict = checker.on_apply(2, 1, &value(2));
        assert!(verdict.unwrap_err().starts_with("agreement"));
    }

    #[test]
    fn unproposed_command_is_caught() {
        let mut checker = checker_with(&[1]);
        let verdict = checker.on_apply(1, 1, &value(9));
        assert!(verdict.unwrap_err().starts_with("validity"));
    }

    #[test]
    fn skipped_or_repeated_slot_is_caught() {
        let mut checker = checker_with(&[1, 2]);
        checker.on_apply(1, 1, &value(1)).unwrap();
        assert!(checker
            .on_apply(1, 3, &value(2))
            .unwrap_err()
            .starts_with("order"));
        let mut checker = checker_with(&[1]);
        checker.on_apply(1, 1, &value(1)).unwrap();
        assert!(checker
            .on_apply(1, 1, &value(1))
            .unwrap_err()
            .starts_with("order"));
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        let mut checker = checker_with(&[1, 2]);
        checker.on_apply(1, 1, &value(2)).unwrap();
        checker.on_acknowledge(1, 1);
        let nodes = BTreeSet::from([1]);
        assert!(checker
            .check_durability(&nodes)
            .unwrap_err()
            .starts_with("durability"));
    }

    #[test]
    fn replica_that_never_applies_an_acknowledged_slot_is_caught() {
        let mut checker = checker_with(&[1]);
        checker.on_apply(1, 1, &value(1)).unwrap();
        checker.on_acknowledge(1, 1);
        assert!(checker.check_durability(&BTreeSet::from([1])).is_ok());
        assert!(checker.check_durability(&BTreeSet::from([1, 2])).is_err());
    }

    #[test]
    fn forgotten_promise_or_vote_is_caught() {
        let promise = Message {
            from: 1,
            incarnation: 1,
            to: 2,
            body: MessageBody::Promise {
                ballot: Ballot::new(3, 2),
                from_slot: 1,
                entries: vec![],
                compacted: 0,
            },
        };
        let mut checker = Checker::default();
        checker.on_send(&promise);
        let verdict = checker.on_crash(1, &DurableState::default());
        assert!(verdict.unwrap_err().starts_with("acceptor memory"));

        let vote = Message {
            from: 1,
            incarnation: 1,
            to: 2,
            body: MessageBody::Accepted {
                ballot: Ballot::new(3, 2),
                slots: vec![4],
            },
        };
        let mut checker = Checker::default();
        checker.on_send(&vote);
        let mut durable = DurableState {
            promised: Ballot::new(3, 2),
            ..DurableState::default()
        };
        assert!(checker.on_crash(1, &durable).is_err());
        checker.on_send(&vote);
        let entry = crate::consensus::Entry {
            ballot: Ballot::new(3, 2),
            value: Value::Noop,
            chosen: false,
        };
        durable.log.insert(4, entry);
        assert!(checker.on_crash(1, &durable).is_ok());
    }

    #[test]
    fn ballot_proposing_two_values_for_a_slot_is_caught() {
        let accept = |id: u64| Message {
            from: 1,
            incarnation: 1,
            to: 2,
            body: MessageBody::Accept {
                ballot: Ballot::new(3, 1),
                entries: vec![(5, value(id))],
                commit_index: 0,
            },
        };
        let mut checker = checker_with(&[1, 2]);
        checker.on_send(&accept(1));
        checker.on_send(&accept(1));
        assert!(checker.take_violation().is_ok());
        checker.on_send(&accept(2));
        assert!(checker
            .take_violation()
            .unwrap_err()
            .starts_with("ballot uniqueness"));
    }

    #[test]
    fn stale_read_is_caught() {
        let mut checker = checker_with(&[1]);
        checker.on_apply(1, 1, &value(1)).unwrap();
        checker.on_acknowledge(1, 1);
        let floor = checker.read_floor();
        assert!(checker.on_read(2, 0, floor).is_err());
        assert!(checker.on_read(2, 1, floor).is_ok());
    }
}
