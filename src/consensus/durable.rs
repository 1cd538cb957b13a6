//! Durable state: the records the core asks the driver to persist, and the fold that rebuilds
//! a replica's state from them after a restart. The driver stores records in the WAL in the
//! order given; replaying them through [`DurableState::apply`] yields what the core had.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::membership::Membership;
use super::types::{Ballot, Slot, Value};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The replica promised not to accept anything below this ballot.
    Promise { ballot: Ballot },
    /// The replica accepted `value` for `slot` at `ballot` (which implies a promise of `ballot`).
    Accept {
        slot: Slot,
        ballot: Ballot,
        value: Value,
    },
    /// The replica learned that `value` is chosen for `slot`.
    Chosen { slot: Slot, value: Value },
    /// Every slot up to `upto` is chosen and present in the log.
    Commit { upto: Slot },
    /// Every slot up to `upto` is applied in a durable snapshot of the state machine, so the
    /// log forgets them; `promised` restates the promise so far. The records that follow it
    /// restate every slot above `upto` the log still holds, so once they are durable every
    /// WAL record before this one may be removed. Records before it that are still in the
    /// WAL are harmless: replay folds them first and this one then drops what it covers.
    Compacted { upto: Slot, promised: Ballot },
    /// `membership` governs the slots after `upto` (until a membership slot after `upto`).
    /// Written at bootstrap (`upto` 0), at a snapshot install, and on both sides of every
    /// `Compacted` record (the log forgets the membership slots it covers): the one before
    /// survives a crash that tears the restatement, the ones after survive the removal of
    /// every record before the `Compacted` once the restatement is durable.
    Membership { upto: Slot, membership: Membership },
}

/// One slot as an acceptor knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The ballot the value was accepted at; `Ballot::ZERO` when learned as chosen directly.
    pub ballot: Ballot,
    pub value: Value,
    pub chosen: bool,
}

/// Everything a replica must remember across a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    pub promised: Ballot,
    pub log: BTreeMap<Slot, Entry>,
    pub commit_index: Slot,
    /// Slots up to here are in a snapshot and absent from `log`.
    pub compacted: Slot,
    /// Memberships known to govern the slots after their key (see `Record::Membership`);
    /// none kept below the one that governs the slot after `compacted`.
    pub bases: BTreeMap<Slot, Membership>,
}

impl DurableState {
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> DurableState {
        DurableState::from_retained(records, false)
    }

    /// The state the records a WAL retains describe; see [`Replay`].
    pub fn from_retained<'a>(
        records: impl IntoIterator<Item = &'a Record>,
        prefix_removed: bool,
    ) -> DurableState {
        let mut replay = Replay::new(prefix_removed);
        for record in records {
            replay.push(record);
        }
        replay.finish()
    }

    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Promise { ballot } => self.promised = self.promised.max(*ballot),
            Record::Accept {
                slot,
                ballot,
                value,
            } => self.apply_accept(*slot, *ballot, value),
            Record::Chosen { slot, value } => self.apply_chosen(*slot, value),
            Record::Commit { upto } => self.apply_commit(*upto),
            Record::Compacted { upto, promised } => self.apply_compacted(*upto, *promised),
            Record::Membership { upto, membership } => {
                self.bases.insert(*upto, membership.clone());
                prune_bases(&mut self.bases, self.compacted);
            }
        }
    }

    fn apply_compacted(&mut self, upto: Slot, promised: Ballot) {
        self.promised = self.promised.max(promised);
        if upto <= self.compacted {
            return;
        }
        self.log = self.log.split_off(&(upto + 1));
        self.compacted = upto;
        self.commit_index = self.commit_index.max(upto);
        prune_bases(&mut self.bases, upto);
    }

    fn apply_accept(&mut self, slot: Slot, ballot: Ballot, value: &Value) {
        self.promised = self.promised.max(ballot);
        if slot <= self.compacted {
            return; // in the snapshot already
        }
        match self.log.get(&slot) {
            // A chosen value never changes; Paxos guarantees later ballots carry the same one.
            Some(entry) if entry.chosen => assert_eq!(
                &entry.value, value,
                "accept record for chosen slot {slot} carries a different value"
            ),
            Some(entry) if entry.ballot > ballot => {}
            _ => {
                let entry = Entry {
                    ballot,
                    value: value.clone(),
                    chosen: false,
                };
                self.log.insert(slot, entry);
            }
        }
    }

    fn apply_chosen(&mut self, slot: Slot, value: &Value) {
        if slot <= self.compacted {
            return;
        }
        let entry = self.log.entry(slot).or_insert_with(|| Entry {
            ballot: Ballot::ZERO,
            value: value.clone(),
            chosen: true,
        });
        if entry.chosen {
            assert_eq!(
                &entry.value, value,
                "slot {slot} recorded chosen twice with different values"
            );
        }
        entry.value = value.clone();
        entry.chosen = true;
    }

    fn apply_commit(&mut self, upto: Slot) {
        for slot in self.commit_index + 1..=upto {
            let entry = self.log.get_mut(&slot);
            let entry = entry
                .unwrap_or_else(|| panic!("commit record up to {upto} but slot {slot} is missing"));
            entry.chosen = true;
        }
        self.commit_index = self.commit_index.max(upto);
    }
}

/// Drops the memberships no slot after `compacted` can be governed by: every one below the
/// newest at or below `compacted`.
pub fn prune_bases(bases: &mut BTreeMap<Slot, Membership>, compacted: Slot) {
    if let Some((&floor, _)) = bases.range(..=compacted).next_back() {
        *bases = bases.split_off(&floor);
    }
}

/// Replays a WAL into a `DurableState`. A driver removes WAL records only from the front and
/// only once a `Record::Compacted` after them is durable, but in whole segments, so the
/// retained records may begin with some from before a `Compacted`, whose earlier history is
/// gone: a `Commit` among them can name slots whose records were removed. With
/// `prefix_removed`, until the first `Compacted` a `Commit` therefore only marks the slots it
/// finds as chosen, and the other records apply as usual (an acceptor keeps every vote it
/// cast). The first `Compacted` then sets the commit index. If a crash tore its
/// restatement, what the tear lost is in the restatement the next run writes first
/// (`Replica::restore`), before anything that depends on it.
pub struct Replay {
    state: DurableState,
    before_compacted: bool,
}

impl Replay {
    pub fn new(prefix_removed: bool) -> Replay {
        Replay {
            state: DurableState::default(),
            before_compacted: prefix_removed,
        }
    }

    pub fn push(&mut self, record: &Record) {
        match record {
            Record::Commit { upto } if self.before_compacted => {
                for entry in self.state.log.range_mut(..=upto).map(|(_, entry)| entry) {
                    entry.chosen = true;
                }
            }
            Record::Compacted { .. } => {
                self.before_compacted = false;
                self.state.apply(record);
            }
            _ => self.state.apply(record),
        }
    }

    pub fn finish(self) -> DurableState {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(byte: u8) -> Value {
        Value::Commands(vec![vec![byte]])
    }

    #[test]
    fn higher_ballot_accept_replaces_lower() {
        let b1 = Ballot::new(1, 1);
        let b2 = Ballot::new(2, 2);
        let state = DurableState::from_records(&[
            Record::Accept {
                slot: 1,
                ballot: b2,
                value: value(2),
            },
            Record::Accept {
                slot: 1,
                ballot: b1,
                value: value(1),
            },
        ]);
        assert_eq!(state.log[&1].value, value(2));
        assert_eq!(state.promised, b2);
    }

    #[test]
    fn commit_marks_prefix_chosen() {
        let b = Ballot::new(1, 1);
        let state = DurableState::from_records(&[
            Record::Promise { ballot: b },
            Record::Accept {
                slot: 1,
                ballot: b,
                value: value(1),
            },
            Record::Chosen {
                slot: 2,
                value: value(2),
            },
            Record::Commit { upto: 2 },
        ]);
        assert_eq!(state.commit_index, 2);
        assert!(state.log.values().all(|entry| entry.chosen));
    }

    #[test]
    fn compacted_drops_covered_slots_and_keeps_the_rest() {
        let b1 = Ballot::new(1, 1);
        let b2 = Ballot::new(2, 2);
        let accept = |slot, ballot| Record::Accept {
            slot,
            ballot,
            value: value(slot as u8),
        };
        let state = DurableState::from_records(&[
            accept(1, b1),
            accept(2, b1),
            accept(3, b1),
            Record::Commit { upto: 2 },
            Record::Compacted {
                upto: 2,
                promised: b2,
            },
            // A late record for a compacted slot changes nothing.
            accept(1, b2),
        ]);
        assert_eq!(state.compacted, 2);
        assert_eq!(state.commit_index, 2);
        assert_eq!(state.promised, b2);
        assert_eq!(state.log.keys().copied().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn compacted_alone_rebuilds_the_state_its_restatement_gives() {
        let b = Ballot::new(3, 1);
        // What is left once the segments before the Compacted record are removed.
        let state = DurableState::from_records(&[
            Record::Compacted {
                upto: 10,
                promised: b,
            },
            Record::Chosen {
                slot: 11,
                value: value(11),
            },
            Record::Accept {
                slot: 12,
                ballot: b,
                value: value(12),
            },
            Record::Commit { upto: 11 },
        ]);
        assert_eq!(state.compacted, 10);
        assert_eq!(state.commit_index, 11);
        assert_eq!(state.promised, b);
        assert!(state.log[&11].chosen);
        assert!(!state.log[&12].chosen);
    }

    #[test]
    #[should_panic(expected = "different values")]
    fn chosen_value_cannot_change() {
        DurableState::from_records(&[
            Record::Chosen {
                slot: 1,
                value: value(1),
            },
            Record::Chosen {
                slot: 1,
                value: value(2),
            },
        ]);
    }
}
