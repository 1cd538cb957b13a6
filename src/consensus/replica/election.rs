//! Leadership: pre-vote, Phase 1 (prepare/promise), heartbeats and check-quorum.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Leadership, Phase1, PreVote, Promises, Recovery, Replica};
use crate::consensus::message::{MessageBody, PromisedEntry};
use crate::consensus::types::{Ballot, NodeId, Role, Slot, Value};

impl Replica {
    pub(super) fn tick_election(&mut self) {
        // The clock runs for a learner too: it tells whether a leader is still heard, and a
        // learner that refused pre-votes for a leader long gone would block an election.
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if !self.is_voter() {
            // A learner, a removed replica, or one that lost its disk never campaigns.
            return;
        }
        if self.election_elapsed >= self.election_timeout {
            self.start_pre_vote();
        }
    }

    pub(super) fn tick_leader(&mut self) {
        let heartbeat_interval = self.config.heartbeat_interval_ticks;
        let election_timeout = self.config.election_timeout_ticks;
        let id = self.id();
        let lead = self.lead_mut();
        lead.heartbeat_elapsed += 1;
        lead.quorum_elapsed += 1;
        // Check-quorum: a leader that has not heard from a quorum in an election timeout may be
        // on the wrong side of a partition. Stepping down lets the majority side elect a leader
        // that pre-vote would otherwise refuse while peers still believe in this one.
        if lead.quorum_elapsed >= election_timeout {
            let mut heard = std::mem::take(&mut lead.heard);
            lead.quorum_elapsed = 0;
            heard.insert(id);
            let confirmed = self.confirms_leadership(&heard);
            self.lead_mut().heard_before = heard;
            if !confirmed {
                self.become_follower(None);
                self.reset_election_timer();
                return;
            }
        }
        let lead = self.lead_mut();
        if lead.heartbeat_elapsed >= heartbeat_interval {
            if let Some(recovery) = lead.recovery.as_mut() {
                recovery.prepared.clear();
            }
            self.broadcast_heartbeat();
            self.retransmit_accepts();
            self.maybe_recover();
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
        if commit_index < self.commit_index {
            // Tell a candidate that is behind what is chosen: it may be the only voter left
            // of a membership change whose commit it missed (the replica that tells it may
            // be the one the change removed), and it cannot count quorums in a membership it
            // does not know is committed.
            self.handle_catch_up_request(from, commit_index + 1);
        }
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

    pub(super) fn maybe_finish_pre_vote(&mut self) {
        let Some(pre_vote) = self.pre_vote.as_ref() else {
            return;
        };
        if self.quorum_in(self.committed_membership(), &pre_vote.granted) {
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
        let from_slot = self.commit_index + 1;
        self.phase1 = Some(Phase1 {
            ballot,
            from_slot,
            promises: BTreeMap::new(),
        });
        self.reset_election_timer();
        // A ballot must never be used twice. Were Prepare sent before our Promise record is
        // durable, a crash could bring us back below `ballot` to run it again and propose
        // other values under it. (Pre-vote replies carrying the promised round already make
        // that unlikely: this makes it impossible.)
        let prepare = MessageBody::Prepare { ballot, from_slot };
        let peers = self.peers();
        for peer in peers {
            self.send_persisted(peer, prepare.clone());
        }
        let id = self.id();
        self.send_promise(id, ballot, from_slot);
    }

    pub(super) fn handle_prepare(&mut self, from: NodeId, ballot: Ballot, from_slot: Slot) {
        if !self.is_voter() {
            // A learner promises nothing (it may have forgotten what it promised). What it
            // knows is chosen it does tell: a candidate that missed the commit of the
            // membership change that removed this replica learns it so.
            self.handle_catch_up_request(from, from_slot);
            // The candidate knows every slot before `from_slot` is chosen: among them may be
            // the promotion that makes this replica a voter it is waiting for.
            if from_slot > self.commit_index + 1 {
                self.leader_commit_seen = self.leader_commit_seen.max(from_slot - 1);
                self.maybe_request_catch_up(from);
            }
            return;
        }
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
        let candidate = self.phase1.as_ref().is_some_and(|p| p.ballot == ballot);
        let recovering = (self.lead.as_ref())
            .is_some_and(|lead| lead.ballot == ballot && lead.recovery.is_some());
        if !candidate && !recovering {
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
        let entries = entries
            .into_iter()
            .map(|entry| (entry.slot, entry))
            .collect();
        if recovering {
            let recovery = self.lead_mut().recovery.as_mut().expect("checked above");
            recovery.promises.insert(from, entries);
            self.maybe_recover();
            return;
        }
        let phase1 = self.phase1.as_mut().expect("checked above");
        phase1.promises.insert(from, entries);
        self.maybe_become_leader();
    }

    /// A candidate leads once a quorum of the membership that governs its first
    /// uncommitted slot has promised (that membership may change while it learns commits).
    pub(super) fn maybe_become_leader(&mut self) {
        let Some(phase1) = self.phase1.as_ref() else {
            return;
        };
        if !self.is_voter() {
            // A catch-up while campaigning showed the committed removal of this replica.
            self.become_follower(None);
            self.reset_election_timer();
            return;
        }
        if self.quorum_in(self.committed_membership(), phase1.promises.keys()) {
            self.become_leader();
        }
    }

    /// What Phase 1 says of `slot`: a value some acceptor knows is chosen, else the value
    /// accepted at the highest ballot. Merging more promises than a quorum is safe: the
    /// highest ballot among any superset of a quorum carries the only value that may be
    /// chosen below this ballot.
    fn merged_entry(&self, promises: &Promises, slot: Slot) -> Option<PromisedEntry> {
        let mut merged: Option<&PromisedEntry> = None;
        for (&node, entries) in promises {
            if self.config.bugs.skip_adopt_highest && node != self.id() {
                continue;
            }
            let Some(entry) = entries.get(&slot) else {
                continue;
            };
            let Some(current) = merged else {
                merged = Some(entry);
                continue;
            };
            if current.chosen && entry.chosen {
                assert_eq!(
                    current.value, entry.value,
                    "two acceptors report different chosen values for slot {slot}"
                );
            } else if entry.chosen || (!current.chosen && entry.ballot > current.ballot) {
                merged = Some(entry);
            }
        }
        merged.cloned()
    }

    fn become_leader(&mut self) {
        let phase1 = self.phase1.take().expect("becoming leader without Phase 1");
        let ballot = phase1.ballot;
        self.role = Role::Leader;
        self.leader = Some(self.id());
        let recovery = Recovery {
            from_slot: phase1.from_slot,
            promises: phase1.promises,
            prepared: BTreeSet::new(),
        };
        self.lead = Some(Leadership {
            ballot,
            next_slot: self.commit_index + 1,
            recovery: Some(recovery),
            recovered_upto: self.commit_index,
            votes: BTreeMap::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            heard: BTreeSet::new(),
            heard_before: BTreeSet::new(),
            peer_commit: BTreeMap::new(),
            heartbeat_elapsed: 0,
            quorum_elapsed: 0,
            read_round: 0,
            read_acks: BTreeSet::new(),
            reads_confirming: Vec::new(),
            reads_waiting: Vec::new(),
        });
        self.maybe_recover();
        // Recovery may have committed this replica's own removal, and it stepped down.
        if self.lead.is_some() {
            self.broadcast_heartbeat();
        }
    }

    /// Re-propose, with this leader's ballot, what Phase 1 found, slot by slot; fill holes
    /// with no-ops. Each slot needs promises from a quorum of the membership that governs
    /// it, which this leader knows once every slot before it is decided: it stops at an
    /// uncommitted membership slot until that commits, and asks the new voters for
    /// promises if it lacks a quorum of them. Recovery ends at the first slot above
    /// everything the promises (and this replica's log) hold.
    pub(super) fn maybe_recover(&mut self) {
        let mut proposals = Vec::new();
        while let Some(lead) = self.lead.as_ref() {
            let Some(recovery) = lead.recovery.as_ref() else {
                break;
            };
            if self.stalled_on_membership() {
                break;
            }
            let slot = lead.next_slot;
            let governing = self.membership_before(slot);
            if !self.quorum_in(governing, recovery.promises.keys()) {
                let missing: Vec<NodeId> = (governing.voters())
                    .filter(|id| !recovery.promises.contains_key(id))
                    .filter(|id| !recovery.prepared.contains(id))
                    .collect();
                self.prepare_more(missing);
                break;
            }
            let reported = (recovery.promises.values())
                .filter_map(|entries| entries.keys().next_back().copied());
            let own = self.log.keys().next_back().copied();
            let last = reported.chain(own).max().unwrap_or(0);
            if slot > last {
                let lead = self.lead_mut();
                lead.recovery = None;
                lead.recovered_upto = slot - 1;
                break;
            }
            let merged = self.merged_entry(&recovery.promises, slot);
            self.lead_mut().next_slot += 1;
            if self.log.get(&slot).is_some_and(|entry| entry.chosen) {
                continue;
            }
            let value = match merged {
                Some(entry) if entry.chosen => {
                    self.learn_chosen(slot, entry.value);
                    self.advance_commit();
                    continue;
                }
                Some(entry) => entry.value,
                None => Value::Noop,
            };
            self.accept_own(slot, value.clone());
            proposals.push((slot, value));
        }
        self.send_accepts(proposals);
        self.advance_commit();
    }

    /// Ask voters of a membership this leader reached in recovery for their promises.
    fn prepare_more(&mut self, voters: Vec<NodeId>) {
        let lead = self.lead_mut();
        let ballot = lead.ballot;
        let recovery = lead.recovery.as_mut().expect("recovering");
        let from_slot = recovery.from_slot;
        recovery.prepared.extend(voters.iter().copied());
        let id = self.id();
        for voter in voters {
            if voter == id {
                continue; // our own promise is in from the start
            }
            self.send(voter, MessageBody::Prepare { ballot, from_slot });
        }
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

    pub(super) fn handle_heartbeat_ack(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        read_round: u64,
        commit_index: Slot,
    ) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if lead.ballot != ballot {
            return;
        }
        lead.heard.insert(from);
        lead.peer_commit.insert(from, commit_index);
        if read_round == lead.read_round && !lead.reads_confirming.is_empty() {
            lead.read_acks.insert(from);
            self.maybe_confirm_reads();
        }
    }
}
