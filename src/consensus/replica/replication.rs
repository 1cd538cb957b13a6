//! Phase 2 (accept/accepted), commit propagation and catch-up.

use std::collections::BTreeSet;

use super::{Replica, CATCH_UP_RETRY_TICKS};
use crate::consensus::durable::{Entry, Record};
use crate::consensus::message::MessageBody;
use crate::consensus::types::{Ballot, NodeId, Role, Slot, Value};

impl Replica {
    pub(super) fn can_flush_pending(&self) -> bool {
        self.lead.as_ref().is_some_and(|lead| {
            !lead.pending.is_empty()
                && lead.recovery.is_none()
                && !self.stalled_on_membership()
                && self.inflight_slots(lead.next_slot) < self.config.inflight_slots_max
        })
    }

    fn inflight_slots(&self, next_slot: Slot) -> u64 {
        next_slot - 1 - self.commit_index
    }

    /// Pack queued commands into new slots while the pipeline has room.
    pub(super) fn maybe_flush_pending(&mut self) {
        let mut proposals = Vec::new();
        while self.can_flush_pending() {
            let slot_bytes_max = self.config.slot_bytes_max;
            let lead = self.lead_mut();
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            while let Some(command) = lead.pending.front() {
                if !batch.is_empty() && batch_bytes + command.len() > slot_bytes_max {
                    break;
                }
                batch_bytes += command.len();
                batch.push(lead.pending.pop_front().expect("front exists"));
            }
            lead.pending_bytes -= batch_bytes;
            let slot = lead.next_slot;
            lead.next_slot += 1;
            let value = Value::Commands(batch);
            self.accept_own(slot, value.clone());
            proposals.push((slot, value));
        }
        self.send_accepts(proposals);
    }

    /// The leader accepts its own proposal; its vote counts once that is durable.
    pub(super) fn accept_own(&mut self, slot: Slot, value: Value) {
        let id = self.id();
        let ballot = self.lead_mut().ballot;
        self.lead_mut().votes.insert(slot, BTreeSet::new());
        let entry = Entry {
            ballot,
            value: value.clone(),
            chosen: false,
        };
        self.put_entry(slot, entry);
        self.records.push(Record::Accept {
            slot,
            ballot,
            value,
        });
        self.send_vote(id, ballot, vec![slot]);
    }

    fn send_vote(&mut self, to: NodeId, ballot: Ballot, slots: Vec<Slot>) {
        let body = MessageBody::Accepted { ballot, slots };
        if self.config.bugs.accepted_before_persist {
            self.send(to, body);
        } else {
            self.send_persisted(to, body);
        }
    }

    /// Phase 2a to every peer, in messages of about `slot_bytes_max` each.
    pub(super) fn send_accepts(&mut self, proposals: Vec<(Slot, Value)>) {
        let peers = self.peers();
        for chunk in self.chunk_by_bytes(proposals, self.config.slot_bytes_max) {
            for &peer in &peers {
                self.send_accept(peer, chunk.clone());
            }
        }
    }

    fn send_accept(&mut self, to: NodeId, entries: Vec<(Slot, Value)>) {
        // Recovery can commit this leader's own removal, after which it no longer leads.
        let Some(ballot) = self.lead.as_ref().map(|lead| lead.ballot) else {
            return;
        };
        let commit_index = self.commit_index;
        self.send(
            to,
            MessageBody::Accept {
                ballot,
                entries,
                commit_index,
            },
        );
    }

    fn chunk_by_bytes(
        &self,
        entries: Vec<(Slot, Value)>,
        bytes_max: usize,
    ) -> Vec<Vec<(Slot, Value)>> {
        let mut chunks: Vec<Vec<(Slot, Value)>> = Vec::new();
        let mut chunk_bytes = 0;
        for (slot, value) in entries {
            let bytes = value.payload_bytes();
            match chunks.last_mut() {
                Some(chunk) if chunk_bytes + bytes <= bytes_max => chunk.push((slot, value)),
                _ => {
                    chunk_bytes = 0;
                    chunks.push(vec![(slot, value)]);
                }
            }
            chunk_bytes += bytes;
        }
        chunks
    }

    /// Messages may be lost: resend each unchosen slot to the peers that have not voted for it.
    pub(super) fn retransmit_accepts(&mut self) {
        let peers = self.peers();
        for peer in peers {
            let lead = self
                .lead
                .as_ref()
                .expect("retransmitting without leadership");
            let missing: Vec<(Slot, Value)> = lead
                .votes
                .iter()
                .filter(|(_, voters)| !voters.contains(&peer))
                .map(|(&slot, _)| (slot, self.log[&slot].value.clone()))
                .collect();
            let chunks = self.chunk_by_bytes(missing, self.config.catch_up_bytes_max);
            if let Some(first) = chunks.into_iter().next() {
                self.send_accept(peer, first);
            }
        }
    }

    pub(super) fn handle_accept(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        entries: Vec<(Slot, Value)>,
        commit_index: Slot,
    ) {
        if !self.observe_leader(from, ballot) {
            return;
        }
        let mut voted = Vec::new();
        let mut below_compacted = false;
        for (slot, value) in entries {
            if slot <= self.compacted {
                // Chosen and in our snapshot; we cannot compare values, so no vote. The
                // leader is behind us: tell it (below).
                below_compacted = true;
                continue;
            }
            let chosen = self.log.get(&slot).is_some_and(|entry| entry.chosen);
            // A value we know is chosen gets our vote only if the leader proposes that same
            // value; any other comes from a leader that has not caught up and gets no help.
            if chosen && self.log[&slot].value != value {
                continue;
            }
            // Even then the vote is recorded at the new ballot: Phase 1 must never hear a
            // lower ballot from us than one we voted at.
            let entry = Entry {
                ballot,
                value: value.clone(),
                chosen,
            };
            self.put_entry(slot, entry);
            self.records.push(Record::Accept {
                slot,
                ballot,
                value,
            });
            voted.push(slot);
        }
        // A learner keeps the values (to learn what is chosen) but votes for none.
        if !voted.is_empty() && self.is_voter() {
            self.send_vote(from, ballot, voted);
        }
        if below_compacted {
            let upto = self.compacted;
            self.send(from, MessageBody::Compacted { upto });
        }
        self.maybe_learn_commit(from, ballot, commit_index);
    }

    pub(super) fn handle_accepted(&mut self, from: NodeId, ballot: Ballot, slots: &[Slot]) {
        let quorum = self.vote_quorum();
        let counts = self.counts_vote(from);
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if lead.ballot != ballot {
            return;
        }
        if from != self.config.id {
            lead.heard.insert(from);
        }
        if !counts {
            return; // a learner's, or a removed replica's: it chooses nothing
        }
        let mut chosen = Vec::new();
        for slot in slots {
            let Some(voters) = lead.votes.get_mut(slot) else {
                continue;
            };
            voters.insert(from);
            if voters.len() >= quorum {
                lead.votes.remove(slot);
                chosen.push(*slot);
            }
        }
        for slot in chosen {
            self.log
                .get_mut(&slot)
                .expect("voted slot is in the log")
                .chosen = true;
        }
        self.advance_commit();
        self.maybe_recover();
    }

    /// Move the commit index over every contiguous chosen slot.
    pub(super) fn advance_commit(&mut self) {
        let before = self.commit_index;
        while self
            .log
            .get(&(self.commit_index + 1))
            .is_some_and(|entry| entry.chosen)
        {
            self.commit_index += 1;
        }
        if self.commit_index > before {
            self.after_commit();
        }
        if self.commit_index > before && self.lead.is_some() {
            self.maybe_start_read_round();
        }
    }

    /// A leader at `ballot` says everything up to `leader_commit` is chosen. A slot we accepted
    /// at that same ballot holds the leader's value, which is then the chosen one; anything else
    /// must be fetched.
    pub(super) fn maybe_learn_commit(
        &mut self,
        leader: NodeId,
        ballot: Ballot,
        leader_commit: Slot,
    ) {
        self.leader_commit_seen = self.leader_commit_seen.max(leader_commit);
        while self.commit_index < leader_commit {
            let slot = self.commit_index + 1;
            match self.log.get_mut(&slot) {
                Some(entry) if entry.chosen || entry.ballot == ballot => {
                    entry.chosen = true;
                    self.commit_index = slot;
                }
                _ => break,
            }
        }
        self.advance_commit();
        if self.commit_index < self.leader_commit_seen {
            self.maybe_request_catch_up(leader);
        }
    }

    pub(super) fn maybe_request_catch_up(&mut self, to: NodeId) {
        if self
            .catch_up_elapsed
            .is_some_and(|elapsed| elapsed < CATCH_UP_RETRY_TICKS)
        {
            return;
        }
        self.catch_up_elapsed = Some(0);
        let from_slot = self.commit_index + 1;
        self.send(to, MessageBody::CatchUpRequest { from_slot });
    }

    pub(super) fn handle_catch_up_request(&mut self, from: NodeId, from_slot: Slot) {
        if from_slot <= self.compacted {
            let upto = self.compacted;
            self.send(from, MessageBody::Compacted { upto });
            return;
        }
        if from_slot > self.commit_index {
            return;
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        for (&slot, entry) in self.log.range(from_slot.max(1)..=self.commit_index) {
            if !entries.is_empty()
                && bytes + entry.value.payload_bytes() > self.config.catch_up_bytes_max
            {
                break;
            }
            bytes += entry.value.payload_bytes();
            entries.push((slot, entry.value.clone()));
        }
        if !entries.is_empty() {
            self.send(from, MessageBody::CatchUp { entries });
        }
    }

    pub(super) fn handle_catch_up(&mut self, from: NodeId, entries: Vec<(Slot, Value)>) {
        // A leader never asks; this answers a request from before it led. Its Phase 1 already
        // recovered every chosen value, so the reply has nothing it needs.
        if self.lead.is_some() {
            return;
        }
        self.catch_up_elapsed = None;
        for (slot, value) in entries {
            self.learn_chosen(slot, value);
        }
        self.advance_commit();
        if self.commit_index < self.leader_commit_seen {
            self.maybe_request_catch_up(from);
        }
        self.maybe_finish_pre_vote();
        self.maybe_become_leader();
    }

    /// A peer has compacted its log up to `upto`. Below it, this replica can only catch up
    /// with that peer's snapshot. A leader or candidate behind it steps down first: the
    /// slots it lacks may be chosen, and it cannot recover them from this peer.
    pub(super) fn handle_compacted(&mut self, from: NodeId, upto: Slot) {
        if upto <= self.commit_index {
            return;
        }
        if self.role != Role::Follower {
            self.become_follower(None);
            self.reset_election_timer();
        }
        self.want_snapshot(from, upto);
    }

    /// Record that `value` is chosen for `slot`.
    pub(super) fn learn_chosen(&mut self, slot: Slot, value: Value) {
        if slot <= self.compacted {
            return; // in the snapshot
        }
        if let Some(entry) = self.log.get(&slot) {
            if entry.chosen {
                assert_eq!(
                    entry.value, value,
                    "slot {slot} learned chosen with a different value"
                );
                return;
            }
        }
        if let Some(lead) = self.lead.as_mut() {
            if lead.votes.remove(&slot).is_some() {
                // Paxos: a leader's proposal above the chosen ballot carries the chosen value.
                assert_eq!(
                    self.log[&slot].value, value,
                    "leader proposed a value other than the chosen one at slot {slot}"
                );
            }
        }
        let ballot = self
            .log
            .get(&slot)
            .map_or(Ballot::ZERO, |entry| entry.ballot);
        let entry = Entry {
            ballot,
            value: value.clone(),
            chosen: true,
        };
        self.put_entry(slot, entry);
        self.records.push(Record::Chosen { slot, value });
    }
}
