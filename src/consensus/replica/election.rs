//! Leadership: pre-vote, Phase 1 (prepare/promise), heartbeats and check-quorum.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Leadership, Phase1, PreVote, Replica};
use crate::consensus::message::{MessageBody, PromisedEntry};
use crate::consensus::types::{Ballot, NodeId, Role, Slot, Value};

impl Replica {
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            self.start_pre_vote();
        }
    }

    pub(super) fn tick_leader(&mut self) {
        let heartbeat_interval = self.config.heartbeat_interval_ticks;
        let election_timeout = self.config.election_timeout_ticks;
        let quorum = self.quorum();
        let lead = self.lead_mut();
        lead.heartbeat_elapsed += 1;
        lead.quorum_elapsed += 1;
        // Check-quorum: a leader that has not heard from a quorum in an election timeout may be
        // on the wrong side of a partition. Stepping down lets the majority side elect a leader
        // that pre-vote would otherwise refuse while peers still believe in this one.
        if lead.quorum_elapsed >= election_timeout {
            let heard = lead.heard.len() + 1;
            lead.heard.clear();
            lead.quorum_elapsed = 0;
            if heard < quorum {
                self.become_follower(None);
                self.reset_election_timer();
                return;
            }
        }
        if lead.heartbeat_elapsed >= heartbeat_interval {
            self.broadcast_heartbeat();
            self.retransmit_accepts();
        }
    }

    /// Ask peers whether they would vote, without raising any ballot (pre-vote). A replica cut
    /// off from the cluster keeps failing this and so never disturbs a healthy leader.
    fn start_pre_vote(&mut self) {
        self.reset_election_timer();
        self.become_follower(None);
        self.role = Role::PreCandidate;
        let round = self.highest_round.max(self.promised.round) + 1;
        let mut granted = BTreeSet::new();
        granted.insert(self.id());
        self.pre_vote = Some(PreVote { round, granted });
        let commit_index = self.commit_index;
        self.broadcast(MessageBody::PreVote {
            round,
            commit_index,
        });
        self.maybe_finish_pre_vote();
    }

    /// Whether this replica currently hears a live leader (itself included).
    fn hears_leader(&self) -> bool {
        self.role == Role::Leader
            || (self.leader.is_some() && self.election_elapsed < self.config.election_timeout_ticks)
    }

    pub(super) fn handle_pre_vote(&mut self, from: NodeId, round: u64, commit_index: Slot) {
        // Prefer candidates that know at least as much as we do: it keeps Phase 1 short. The
        // round is not compared: the reply tells the candidate how high its ballot must go.
        let granted = commit_index >= self.commit_index && !self.hears_leader();
        let promised_round = self.promised.round;
        self.send(
            from,
            MessageBody::PreVoteReply {
                round,
                granted,
                promised_round,
            },
        );
    }

    pub(super) fn handle_pre_vote_reply(
        &mut self,
        from: NodeId,
        round: u64,
        granted: bool,
        promised_round: u64,
    ) {
        self.highest_round = self.highest_round.max(promised_round);
        let Some(pre_vote) = self.pre_vote.as_mut() else {
            return;
        };
        if pre_vote.round != round || !granted {
            return;
        }
        pre_vote.granted.insert(from);
        self.maybe_finish_pre_vote();
    }

    fn maybe_finish_pre_vote(&mut self) {
        let quorum = self.quorum();
        let Some(pre_vote) = self.pre_vote.as_ref() else {
            return;
        };
        if pre_vote.granted.len() >= quorum {
            let round = pre_vote.round;
            self.start_phase1(round);
        }
    }

    /// Phase 1a: one prepare covering every slot from the first one we do not know is chosen.
    pub(super) fn start_phase1(&mut self, round: u64) {
        let round = round
            .max(self.highest_round + 1)
            .max(self.promised.round + 1);
        let ballot = Ballot::new(round, self.id());
        self.pre_vote = None;
        self.role = Role::Candidate;
        self.leader = None;
        self.promise(ballot);
        self.phase1 = Some(Phase1 {
            ballot,
            promises: BTreeMap::new(),
        });
        self.reset_election_timer();
        let from_slot = self.commit_index + 1;
        // A ballot must never be used twice. Were Prepare sent before our Promise record is
        // durable, a crash could bring us back below `ballot` to run it again and propose
        // other values under it. (Pre-vote replies carrying the promised round already make
        // that unlikely: this makes it impossible.)
        let prepare = MessageBody::Prepare { ballot, from_slot };
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            self.send_persisted(peer, prepare.clone());
        }
        let id = self.id();
        self.send_promise(id, ballot, from_slot);
    }

    pub(super) fn handle_prepare(&mut self, from: NodeId, ballot: Ballot, from_slot: Slot) {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, MessageBody::Nack { ballot, promised });
            return;
        }
        if ballot > self.promised {
            self.promise(ballot);
            self.become_follower(None);
        }
        self.reset_election_timer();
        self.send_promise(from, ballot, from_slot);
    }

    /// Phase 1b: report every slot from `from_slot` on, once the promise is durable. Slots
    /// up to `compacted` are not in the log; the promise says so.
    fn send_promise(&mut self, to: NodeId, ballot: Ballot, from_slot: Slot) {
        let compacted = self.compacted;
        let entries = self
            .log
            .range(from_slot.max(compacted + 1)..)
            .map(|(&slot, entry)| PromisedEntry {
                slot,
                ballot: entry.ballot,
                value: entry.value.clone(),
                chosen: entry.chosen,
            })
            .collect();
        let body = MessageBody::Promise {
            ballot,
            from_slot,
            entries,
            compacted,
        };
        if self.config.bugs.promise_before_persist {
            self.send(to, body);
        } else {
            self.send_persisted(to, body);
        }
    }

    pub(super) fn handle_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        entries: Vec<PromisedEntry>,
        compacted: Slot,
    ) {
        let quorum = self.quorum();
        let Some(phase1) = self.phase1.as_ref() else {
            return;
        };
        if phase1.ballot != ballot {
            return;
        }
        if compacted > self.commit_index && !self.config.bugs.lead_past_compacted {
            // The acceptor dropped slots we have not committed: some may be chosen with a
            // value only its snapshot holds, and this promise cannot tell us which. Leading
            // without them could overwrite a chosen value, so give up and fetch the snapshot.
            self.become_follower(None);
            self.reset_election_timer();
            self.want_snapshot(from, compacted);
            return;
        }
        let phase1 = self.phase1.as_mut().expect("checked above");
        phase1.promises.insert(from, entries);
        if phase1.promises.len() >= quorum {
            self.become_leader();
        }
    }

    /// Merge the promises: per slot, a value some acceptor knows is chosen, else the value
    /// accepted at the highest ballot.
    fn merge_promises(&self, phase1: Phase1) -> BTreeMap<Slot, PromisedEntry> {
        let mut merged: BTreeMap<Slot, PromisedEntry> = BTreeMap::new();
        for (node, entries) in phase1.promises {
            if self.config.bugs.skip_adopt_highest && node != self.id() {
                continue;
            }
            for entry in entries {
                if entry.slot <= self.commit_index {
                    continue;
                }
                let Some(current) = merged.get(&entry.slot) else {
                    merged.insert(entry.slot, entry);
                    continue;
                };
                if current.chosen && entry.chosen {
                    assert_eq!(
                        current.value, entry.value,
                        "two acceptors report different chosen values for slot {}",
                        entry.slot
                    );
                } else if entry.chosen || (!current.chosen && entry.ballot > current.ballot) {
                    merged.insert(entry.slot, entry);
                }
            }
        }
        merged
    }

    fn become_leader(&mut self) {
        let phase1 = self.phase1.take().expect("becoming leader without Phase 1");
        let ballot = phase1.ballot;
        let mut merged = self.merge_promises(phase1);
        // Our own log may have grown since our promise (catch-up replies keep arriving).
        let own_last = self.log.keys().next_back().copied().unwrap_or(0);
        let merged_last = merged.keys().next_back().copied().unwrap_or(0);
        let recovered_upto = merged_last.max(own_last).max(self.commit_index);
        self.role = Role::Leader;
        self.leader = Some(self.id());
        self.lead = Some(Leadership {
            ballot,
            next_slot: recovered_upto + 1,
            recovered_upto,
            votes: BTreeMap::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            heard: BTreeSet::new(),
            heartbeat_elapsed: 0,
            quorum_elapsed: 0,
            read_round: 0,
            read_acks: BTreeSet::new(),
            reads_confirming: Vec::new(),
            reads_waiting: Vec::new(),
        });
        // Re-propose everything not known chosen, with our ballot; fill holes with no-ops.
        let mut proposals = Vec::new();
        for slot in self.commit_index + 1..=recovered_upto {
            if self.log.get(&slot).is_some_and(|entry| entry.chosen) {
                continue;
            }
            match merged.remove(&slot) {
                Some(entry) if entry.chosen => self.learn_chosen(slot, entry.value),
                Some(entry) => proposals.push((slot, entry.value)),
                None => proposals.push((slot, Value::Noop)),
            }
        }
        for (slot, value) in proposals.iter().cloned() {
            self.accept_own(slot, value);
        }
        self.send_accepts(proposals);
        self.advance_commit();
        self.broadcast_heartbeat();
    }

    pub(super) fn handle_nack(&mut self, ballot: Ballot, promised: Ballot) {
        self.highest_round = self.highest_round.max(promised.round);
        let own = match self.role {
            Role::Leader => self.lead.as_ref().map(|lead| lead.ballot),
            Role::Candidate => self.phase1.as_ref().map(|phase1| phase1.ballot),
            _ => None,
        };
        if own == Some(ballot) && promised > ballot {
            self.become_follower(None);
            self.reset_election_timer();
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let commit_index = self.commit_index;
        let lead = self.lead_mut();
        lead.heartbeat_elapsed = 0;
        let ballot = lead.ballot;
        let read_round = lead.read_round;
        self.broadcast(MessageBody::Heartbeat {
            ballot,
            commit_index,
            read_round,
        });
    }

    pub(super) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        commit_index: Slot,
        read_round: u64,
    ) {
        if !self.observe_leader(from, ballot) {
            return;
        }
        let own_commit = self.commit_index;
        self.send(
            from,
            MessageBody::HeartbeatAck {
                ballot,
                read_round,
                commit_index: own_commit,
            },
        );
        self.maybe_learn_commit(from, ballot, commit_index);
    }

    pub(super) fn handle_heartbeat_ack(&mut self, from: NodeId, ballot: Ballot, read_round: u64) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if lead.ballot != ballot {
            return;
        }
        lead.heard.insert(from);
        if read_round == lead.read_round && !lead.reads_confirming.is_empty() {
            lead.read_acks.insert(from);
            self.maybe_confirm_reads();
        }
    }
}
