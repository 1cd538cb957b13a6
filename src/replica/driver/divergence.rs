//! Divergence detection, like etcd's corruption check: every replica keeps the state
//! digest of each slot it applied lately (its state machine chains one per slot, see
//! `executor::digest`), sends its newest ones to every peer once a second, and compares
//! what peers send with its own for the same slots. Apply is deterministic, so equal logs
//! give equal digests; a difference means a replica applied something differently (a bug,
//! a bad disk, memory corruption).
//!
//! Who is wrong is decided by majority, from the chain: a digest that matches at slot `s`
//! matches at every slot before, one that differs at `s` differs at every slot after. A
//! replica that differs at slot `s` from peers that with it are a majority of the members
//! stops (its driver stops, so it serves, votes and answers nothing), naming the first
//! differing slot it saw; the others log the peer that differs. It stays stopped: rebuild
//! it as a replica that lost its disk (docs/operations.md, "Replacing a failed machine").

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Driver, StateMachine};
use crate::consensus::{NodeId, Slot};
use crate::metrics::saturating_i64;
use crate::wire::RouterMessage;

/// A state digest: see `StateMachine::digest`.
pub type Digest = [u8; 16];

/// Digests kept, newest last: a peer up to this many slots behind or ahead is compared.
const KEPT: usize = 4_096;
/// Digests sent in one report: the newest ones.
const REPORTED: usize = 256;
/// Ticks between reports (1 s at the service's 10 ms tick).
pub(super) const REPORT_EVERY_TICKS: u64 = 100;

#[derive(Default)]
pub(super) struct Divergence {
    /// The chain base of the digests (see `executor::digest`); peers with another base
    /// are not compared.
    base: Slot,
    /// (slot, digest), consecutive slots, newest last.
    kept: VecDeque<(Slot, Digest)>,
    /// Per peer: the highest slot at which its digest matched this replica's.
    matched: BTreeMap<NodeId, Slot>,
    /// Per peer: the lowest slot at which its digest differed, and whether the slot before
    /// it was seen to match (so it is the first differing slot).
    differed: BTreeMap<NodeId, (Slot, bool)>,
    /// Peers already reported as differing from a majority.
    reported: BTreeSet<NodeId>,
}

impl Divergence {
    /// The digest after `slot` was applied.
    pub(super) fn record(&mut self, slot: Slot, (base, digest): (Slot, Digest)) {
        if base != self.base || self.kept.back().is_some_and(|&(last, _)| last + 1 != slot) {
            // A new chain (a snapshot was installed, or the machine started one).
            self.kept.clear();
            self.base = base;
        }
        self.kept.push_back((slot, digest));
        if self.kept.len() > KEPT {
            self.kept.pop_front();
        }
    }

    /// After a snapshot install: the chain goes on from the snapshot's digest.
    pub(super) fn restart(&mut self, slot: Slot, digest: (Slot, Digest)) {
        self.kept.clear();
        self.base = digest.0;
        self.kept.push_back((slot, digest.1));
    }

    fn own(&self, slot: Slot) -> Option<&Digest> {
        let &(first, _) = self.kept.front()?;
        let index = usize::try_from(slot.checked_sub(first)?).ok()?;
        self.kept.get(index).map(|(_, digest)| digest)
    }

    /// The newest `REPORTED` digests: (base, first slot, digests).
    fn report(&self) -> Option<(Slot, Slot, Vec<Digest>)> {
        let skip = self.kept.len().saturating_sub(REPORTED);
        let &(first, _) = self.kept.get(skip)?;
        let digests = self.kept.iter().skip(skip).map(|(_, d)| *d).collect();
        Some((self.base, first, digests))
    }

    /// Compares a peer's digests with this replica's; returns how many slots were compared.
    fn compare(&mut self, peer: NodeId, base: Slot, first: Slot, digests: &[Digest]) -> u64 {
        if base != self.base {
            return 0;
        }
        let mut compared = 0;
        let mut previous_matched = false;
        for (offset, theirs) in digests.iter().enumerate() {
            let slot = first + offset as Slot;
            let Some(ours) = self.own(slot) else {
                previous_matched = false;
                continue;
            };
            compared += 1;
            if ours == theirs {
                let matched = self.matched.entry(peer).or_insert(slot);
                *matched = (*matched).max(slot);
                previous_matched = true;
                // Chains never meet again once apart: a peer that differed earlier and
                // matches now was rebuilt.
                if self
                    .differed
                    .get(&peer)
                    .is_some_and(|&(differed, _)| differed < slot)
                {
                    self.differed.remove(&peer);
                    self.reported.remove(&peer);
                }
            } else {
                let exact = previous_matched || self.matched.get(&peer) == Some(&(slot - 1));
                let known = self.differed.entry(peer).or_insert((slot, exact));
                if slot < known.0 || (slot == known.0 && exact) {
                    *known = (slot, exact);
                }
                break;
            }
        }
        compared
    }
}

/// What the comparisons so far say.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Agreed,
    /// These peers differ from a majority that includes this replica.
    PeersDiffer(Vec<NodeId>),
    /// This replica differs from a majority: (slot, the first differing slot seen, exact).
    Diverged(Slot, Slot, bool),
}

impl Divergence {
    /// `members`: how many replicas the membership has (this one included).
    fn verdict(&self, members: usize) -> Verdict {
        let majority = members / 2 + 1;
        // The slot every differing peer differs at (chains never re-converge).
        let Some(at) = self.differed.values().map(|&(slot, _)| slot).max() else {
            return Verdict::Agreed;
        };
        let differing: Vec<NodeId> = self.differed.keys().copied().collect();
        let agreeing = 1
            + (self.matched.iter())
                .filter(|&(peer, &slot)| slot >= at && !self.differed.contains_key(peer))
                .count();
        if differing.len() >= majority {
            let (first, exact) = (self.differed.values())
                .min_by_key(|&&(slot, exact)| (slot, !exact))
                .copied()
                .expect("some differ");
            return Verdict::Diverged(at, first, exact);
        }
        if agreeing >= majority {
            return Verdict::PeersDiffer(differing);
        }
        Verdict::Agreed
    }
}

impl<M: StateMachine> Driver<M> {
    /// After a slot was applied.
    pub(super) fn record_digest(&mut self, slot: Slot) {
        if let Some(digest) = self.machine.digest() {
            self.divergence.record(slot, digest);
        }
    }

    /// After a snapshot was installed.
    pub(super) fn restart_digests(&mut self, slot: Slot) {
        if let Some(digest) = self.machine.digest() {
            self.divergence.restart(slot, digest);
        }
    }

    /// Every `REPORT_EVERY_TICKS`: the newest digests to every peer.
    pub(super) fn report_digests(&self) {
        let Some((base, first, digests)) = self.divergence.report() else {
            return;
        };
        for &peer in self.peer_addrs.keys().filter(|&&peer| peer != self.id) {
            let body = RouterMessage::Digests {
                base,
                first,
                digests: digests.clone(),
            };
            self.send_router(peer, body);
        }
    }

    pub(super) fn on_digests(&mut self, from: NodeId, base: Slot, first: Slot, digests: &[Digest]) {
        let members = self.replica.committed_membership().members.len();
        if !self
            .replica
            .committed_membership()
            .members
            .contains_key(&from)
        {
            return;
        }
        let compared = self.divergence.compare(from, base, first, digests);
        let metrics = &self.options.metrics;
        metrics.digest_comparisons.inc_by(compared);
        match self.divergence.verdict(members.max(1)) {
            Verdict::Agreed => {}
            Verdict::PeersDiffer(peers) => {
                metrics
                    .divergent_peers
                    .set(saturating_i64(peers.len() as u64));
                for peer in peers {
                    if self.divergence.reported.insert(peer) {
                        let (slot, exact) = self.divergence.differed[&peer];
                        metrics.divergence_first_slot.set(saturating_i64(slot));
                        let first = describe_first(slot, exact);
                        tracing::error!(
                            replica = self.id,
                            peer,
                            "the applied state of replica {peer} differs from a majority's, {first}"
                        );
                    }
                }
            }
            Verdict::Diverged(at, first, exact) => {
                metrics.divergence_detected.set(1);
                metrics.divergence_first_slot.set(saturating_i64(first));
                let first = describe_first(first, exact);
                let reason = format!(
                    "diverged: this replica's applied state differs from a majority of the \
                     {members} replicas' at slot {at}, {first}; it stops so as to serve \
                     nothing wrong. Rebuild it as a replica that lost its disk \
                     (docs/operations.md, Replacing a failed machine)"
                );
                if let Some(path) = &self.options.divergence_marker {
                    if let Err(error) = write_marker(path, &reason) {
                        let path = path.display();
                        tracing::error!(replica = self.id, %error, "writing {path}");
                    }
                }
                // A last report, so the peers see this replica's differing digests even
                // when it found out before its next report was due.
                self.report_digests();
                self.snapshots.fatal = Some(reason);
            }
        }
    }
}

/// Writes `reason` to `path` and fsyncs it and its directory, so the next start refuses.
fn write_marker(path: &std::path::Path, reason: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(reason.as_bytes())?;
    file.sync_all()?;
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn describe_first(slot: Slot, exact: bool) -> String {
    match exact {
        true => format!("first at slot {slot}"),
        false => format!("first at or before slot {slot} (the earliest compared)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(divergence: &mut Divergence, slots: std::ops::RangeInclusive<Slot>, salt: u8) {
        for slot in slots {
            let mut digest = [salt; 16];
            digest[..8].copy_from_slice(&slot.to_be_bytes());
            divergence.record(slot, (0, digest));
        }
    }

    fn digests(slots: std::ops::RangeInclusive<Slot>, salt_from: Slot, salt: u8) -> Vec<Digest> {
        slots
            .map(|slot| {
                let mut digest = [if slot >= salt_from { salt } else { 0 }; 16];
                digest[..8].copy_from_slice(&slot.to_be_bytes());
                digest
            })
            .collect()
    }

    #[test]
    fn the_odd_one_out_is_told_by_majority_and_names_the_first_differing_slot() {
        // This replica applied slot 10 on differently: every slot from 10 differs.
        let mut wrong = Divergence::default();
        chain(&mut wrong, 1..=9, 0);
        chain(&mut wrong, 10..=20, 7);
        let right = digests(1..=20, Slot::MAX, 0);
        assert_eq!(
            wrong.compare(2, 0, 1, &right),
            10,
            "compared up to the first difference"
        );
        assert_eq!(
            wrong.verdict(3),
            Verdict::Agreed,
            "one peer of two: undecided"
        );
        wrong.compare(3, 0, 5, &right[4..]);
        assert_eq!(wrong.verdict(3), Verdict::Diverged(10, 10, true));

        // A right replica hears the wrong one and a right one.
        let mut right_one = Divergence::default();
        chain(&mut right_one, 1..=20, 0);
        right_one.compare(1, 0, 1, &digests(1..=20, 10, 7));
        right_one.compare(3, 0, 12, &right[11..]);
        assert_eq!(right_one.verdict(3), Verdict::PeersDiffer(vec![1]));
        // Another chain base is not compared.
        assert_eq!(right_one.compare(4, 99, 1, &right), 0);
        // Rebuilt, the wrong one matches again: it no longer counts as differing.
        right_one.compare(1, 0, 15, &right[14..]);
        assert_eq!(right_one.verdict(3), Verdict::Agreed);
    }

    #[test]
    fn a_difference_before_the_slots_compared_is_named_as_at_or_before() {
        let mut ours = Divergence::default();
        chain(&mut ours, 1..=5000, 0);
        let theirs = digests(4000..=5000, 0, 9);
        ours.compare(2, 0, 4000, &theirs);
        assert_eq!(ours.differed[&2], (4000, false));
        assert_eq!(ours.kept.len(), KEPT);
        let (_, first, reported) = ours.report().unwrap();
        assert_eq!(
            (first, reported.len()),
            (5000 - REPORTED as Slot + 1, REPORTED)
        );
    }
}
