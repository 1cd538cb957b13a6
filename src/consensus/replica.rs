//! The replica: a deterministic multi-Paxos state machine. See the module docs for the driver
//! loop and docs/consensus.md for the protocol.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::config::Config;
use super::durable::{DurableState, Entry, Record};
use super::error::{Error, Result};
use super::message::{Message, MessageBody, PromisedEntry};
use super::ready::{ReadState, Ready, SoftState};
use super::rng::Rng;
use super::types::{Ballot, NodeId, Role, Slot};

/// Ticks a catch-up request may stay unanswered before it is sent again.
const CATCH_UP_RETRY_TICKS: u32 = 4;

pub struct Replica {
    config: Config,
    rng: Rng,

    // Mirror of the durable state (plus records not yet handed to the driver).
    promised: Ballot,
    log: BTreeMap<Slot, Entry>,
    commit_index: Slot,

    /// Highest slot handed to the driver in `Ready::committed`.
    applied: Slot,
    /// Highest commit index already put in a `Record::Commit`.
    commit_recorded: Slot,

    role: Role,
    leader: Option<NodeId>,
    /// Highest ballot round seen anywhere, so the next ballot can be higher.
    highest_round: u64,
    election_elapsed: u32,
    election_timeout: u32,
    pre_vote: Option<PreVote>,
    phase1: Option<Phase1>,
    lead: Option<Leadership>,

    /// Highest commit index any leader has told us of; we are behind while below it.
    leader_commit_seen: Slot,
    catch_up_elapsed: Option<u32>,

    // Outbox, drained by `ready`.
    records: Vec<Record>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    soft_reported: SoftState,
    ready_number: u64,
    advanced_number: u64,
}

struct PreVote {
    round: u64,
    granted: BTreeSet<NodeId>,
}

struct Phase1 {
    ballot: Ballot,
    promises: BTreeMap<NodeId, Vec<PromisedEntry>>,
}

struct Leadership {
    ballot: Ballot,
    next_slot: Slot,
    /// Last slot recovered in Phase 1. Reads wait until it is committed: only then does this
    /// leader's commit index cover everything chosen before it took over.
    recovered_upto: Slot,
    /// Votes for proposed slots not yet chosen.
    votes: BTreeMap<Slot, BTreeSet<NodeId>>,
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    /// Peers heard from since the last check-quorum.
    heard: BTreeSet<NodeId>,
    heartbeat_elapsed: u32,
    quorum_elapsed: u32,
    read_round: u64,
    read_acks: BTreeSet<NodeId>,
    /// Reads waiting for `read_acks` to reach a quorum.
    reads_confirming: Vec<ReadState>,
    /// Reads that arrived while a round was running; they go in the next round.
    reads_waiting: Vec<u64>,
}

impl Replica {
    /// A replica with empty durable state.
    pub fn new(config: Config, seed: u64) -> Result<Replica> {
        Replica::restore(config, seed, DurableState::default(), 0)
    }

    /// A replica recovering from `state` (rebuilt from its WAL) whose state machine has applied
    /// every slot up to `applied`. Committed slots after `applied` are handed out again.
    pub fn restore(
        config: Config,
        seed: u64,
        state: DurableState,
        applied: Slot,
    ) -> Result<Replica> {
        config.validate()?;
        assert!(
            applied <= state.commit_index,
            "applied slot {applied} is beyond the durable commit index {}",
            state.commit_index
        );
        let soft = SoftState {
            role: Role::Follower,
            leader: None,
            ballot: state.promised,
        };
        let mut replica = Replica {
            rng: Rng::new(seed),
            promised: state.promised,
            highest_round: state.promised.round,
            log: state.log,
            commit_index: state.commit_index,
            commit_recorded: state.commit_index,
            applied,
            role: Role::Follower,
            leader: None,
            election_elapsed: 0,
            election_timeout: config.election_timeout_ticks,
            pre_vote: None,
            phase1: None,
            lead: None,
            leader_commit_seen: state.commit_index,
            catch_up_elapsed: None,
            records: Vec::new(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            soft_reported: soft,
            ready_number: 0,
            advanced_number: 0,
            config,
        };
        replica.reset_election_timer();
        // Slots learned chosen after the last commit record may extend the prefix.
        replica.advance_commit();
        Ok(replica)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn promised(&self) -> Ballot {
        self.promised
    }

    pub fn commit_index(&self) -> Slot {
        self.commit_index
    }

    /// Highest slot handed to the driver to apply.
    pub fn applied(&self) -> Slot {
        self.applied
    }

    pub fn entry(&self, slot: Slot) -> Option<&Entry> {
        self.log.get(&slot)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Advance logical time by one tick.
    pub fn tick(&mut self) {
        if let Some(elapsed) = self.catch_up_elapsed.as_mut() {
            *elapsed += 1;
        }
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Queue a client command. Only the leader accepts; it packs queued commands into slots when
    /// the driver next takes a `Ready`, so commands arriving together share one slot and fsync.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<()> {
        let leader = self.leader;
        let slot_bytes_max = self.config.slot_bytes_max;
        let pending_bytes_max = self.config.pending_bytes_max;
        let Some(lead) = self.lead.as_mut() else {
            return Err(Error::NotLeader { leader });
        };
        if command.len() > slot_bytes_max {
            return Err(Error::CommandTooLarge {
                command_bytes: command.len(),
                slot_bytes_max,
            });
        }
        if lead.pending_bytes + command.len() > pending_bytes_max {
            return Err(Error::ProposalQueueFull {
                pending_bytes: lead.pending_bytes,
                command_bytes: command.len(),
            });
        }
        lead.pending_bytes += command.len();
        lead.pending.push_back(command);
        Ok(())
    }

    /// Ask for a linearizable read point. Only the leader answers; the answer comes back as a
    /// `ReadState` with the same `context` once a quorum has confirmed this leadership.
    /// Concurrent requests share one confirmation round.
    pub fn read_index(&mut self, context: u64) -> Result<()> {
        if self.lead.is_none() {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if self.config.bugs.read_without_quorum {
            let index = self.commit_index;
            self.read_states.push(ReadState { context, index });
            return Ok(());
        }
        self.lead_mut().reads_waiting.push(context);
        self.maybe_start_read_round();
        Ok(())
    }

    /// Handle one inbound message.
    pub fn step(&mut self, message: Message) {
        let from = message.from;
        if message.to != self.id() || !self.config.members.contains(&from) {
            return;
        }
        match message.body {
            MessageBody::PreVote {
                round,
                commit_index,
            } => self.handle_pre_vote(from, round, commit_index),
            MessageBody::PreVoteReply {
                round,
                granted,
                promised_round,
            } => self.handle_pre_vote_reply(from, round, granted, promised_round),
            MessageBody::Prepare { ballot, from_slot } => {
                self.handle_prepare(from, ballot, from_slot)
            }
            MessageBody::Promise {
                ballot, entries, ..
            } => self.handle_promise(from, ballot, entries),
            MessageBody::Nack { ballot, promised } => self.handle_nack(ballot, promised),
            MessageBody::Accept {
                ballot,
                entries,
                commit_index,
            } => self.handle_accept(from, ballot, entries, commit_index),
            MessageBody::Accepted { ballot, slots } => self.handle_accepted(from, ballot, &slots),
            MessageBody::Heartbeat {
                ballot,
                commit_index,
                read_round,
            } => self.handle_heartbeat(from, ballot, commit_index, read_round),
            MessageBody::HeartbeatAck {
                ballot, read_round, ..
            } => self.handle_heartbeat_ack(from, ballot, read_round),
            MessageBody::CatchUpRequest { from_slot } => {
                self.handle_catch_up_request(from, from_slot)
            }
            MessageBody::CatchUp { entries } => self.handle_catch_up(from, entries),
        }
    }

    pub fn has_ready(&self) -> bool {
        !self.records.is_empty()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || self.commit_index > self.applied
            || self.commit_index > self.commit_recorded
            || self.soft_state() != self.soft_reported
            || self.can_flush_pending()
    }

    /// Take the work accumulated since the last call. See [`Ready`] for the order to do it in.
    pub fn ready(&mut self) -> Ready {
        self.maybe_flush_pending();
        if self.commit_index > self.commit_recorded {
            self.records.push(Record::Commit {
                upto: self.commit_index,
            });
            self.commit_recorded = self.commit_index;
        }
        let committed = (self.applied + 1..=self.commit_index)
            .map(|slot| (slot, self.log[&slot].value.clone()))
            .collect();
        self.applied = self.commit_index;
        let soft = self.soft_state();
        let soft_state = (soft != self.soft_reported).then_some(soft);
        self.soft_reported = soft;
        self.ready_number += 1;
        Ready {
            number: self.ready_number,
            soft_state,
            messages: std::mem::take(&mut self.messages),
            records: std::mem::take(&mut self.records),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed,
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// Acknowledge that every step of `ready` is done. Readies are advanced in order.
    pub fn advance(&mut self, ready: Ready) {
        assert_eq!(
            ready.number,
            self.advanced_number + 1,
            "Ready advanced out of order"
        );
        self.advanced_number = ready.number;
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            ballot: self.promised,
        }
    }

    fn quorum(&self) -> usize {
        self.config.quorum()
    }

    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let id = self.id();
        self.config
            .members
            .iter()
            .copied()
            .filter(move |&m| m != id)
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let from = self.id();
        self.messages.push(Message { from, to, body });
    }

    /// Send once the records queued so far are durable.
    fn send_persisted(&mut self, to: NodeId, body: MessageBody) {
        let from = self.id();
        self.persisted_messages.push(Message { from, to, body });
    }

    fn broadcast(&mut self, body: MessageBody) {
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            self.send(peer, body.clone());
        }
    }

    fn lead_mut(&mut self) -> &mut Leadership {
        self.lead
            .as_mut()
            .expect("leader state on a replica that is not leading")
    }

    fn reset_election_timer(&mut self) {
        let base = u64::from(self.config.election_timeout_ticks);
        self.election_elapsed = 0;
        self.election_timeout =
            u32::try_from(base + self.rng.below(base)).expect("timeout fits u32");
    }

    /// Raise the promise to `ballot`, recording it durably.
    fn promise(&mut self, ballot: Ballot) {
        assert!(ballot >= self.promised, "promise may only rise");
        self.highest_round = self.highest_round.max(ballot.round);
        if ballot > self.promised {
            self.promised = ballot;
            self.records.push(Record::Promise { ballot });
        }
    }

    fn become_follower(&mut self, leader: Option<NodeId>) {
        self.role = Role::Follower;
        self.leader = leader;
        self.pre_vote = None;
        self.phase1 = None;
        // Pending proposals and reads are dropped; the driver sees the role change in the
        // next Ready's soft state and fails or redirects what it was waiting on.
        self.lead = None;
    }

    /// The leader's view of `from`'s message at `ballot`: refuse it if we promised higher,
    /// otherwise follow `from`. Returns whether the message may be acted on.
    fn observe_leader(&mut self, from: NodeId, ballot: Ballot) -> bool {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, MessageBody::Nack { ballot, promised });
            return false;
        }
        self.promise(ballot);
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(Some(from));
        }
        self.reset_election_timer();
        true
    }
}

impl Replica {
    /// Internal consistency, checked after every step and tick in tests and the simulator.
    /// Each assert names one condition so a failure says exactly what broke.
    pub fn invariants(&self) {
        for (slot, entry) in self.log.range(self.commit_index + 1..) {
            if !entry.chosen {
                assert!(
                    entry.ballot <= self.promised,
                    "slot {slot} accepted above the promise"
                );
            }
        }
        if self.commit_index > 0 {
            let top = self.log.get(&self.commit_index);
            assert!(
                top.is_some_and(|entry| entry.chosen),
                "commit index slot is not chosen"
            );
        }
        let next = self.log.get(&(self.commit_index + 1));
        assert!(
            !next.is_some_and(|entry| entry.chosen),
            "commit index stopped before a chosen slot"
        );
        assert!(self.applied <= self.commit_index, "applied beyond commit");
        assert!(
            self.commit_recorded <= self.commit_index,
            "recorded commit beyond commit"
        );
        assert_eq!(
            self.role == Role::Leader,
            self.lead.is_some(),
            "leader state without leading"
        );
        assert_eq!(
            self.role == Role::Candidate,
            self.phase1.is_some(),
            "phase 1 state without candidacy"
        );
        assert_eq!(
            self.role == Role::PreCandidate,
            self.pre_vote.is_some(),
            "pre-vote state without pre-candidacy"
        );
        if let Some(phase1) = &self.phase1 {
            assert_eq!(
                phase1.ballot, self.promised,
                "candidate promised a ballot other than its own"
            );
        }
        if let Some(lead) = &self.lead {
            self.leader_invariants(lead);
        }
    }

    fn leader_invariants(&self, lead: &Leadership) {
        assert_eq!(self.leader, Some(self.id()), "leader does not name itself");
        assert_eq!(
            lead.ballot, self.promised,
            "leader promised a ballot other than its own"
        );
        assert_eq!(
            lead.ballot.node,
            self.id(),
            "leader runs another node's ballot"
        );
        assert!(
            lead.pending_bytes <= self.config.pending_bytes_max,
            "pending bytes above limit"
        );
        let last = self.log.keys().next_back().copied().unwrap_or(0);
        assert!(
            last < lead.next_slot,
            "log holds a slot the leader has not assigned"
        );
        assert!(
            lead.recovered_upto < lead.next_slot,
            "recovered slots not below next slot"
        );
        for (slot, voters) in &lead.votes {
            assert!(
                *slot > self.commit_index,
                "votes kept for committed slot {slot}"
            );
            assert!(
                voters.len() < self.quorum(),
                "slot {slot} has a quorum but is not chosen"
            );
            let entry = &self.log[slot];
            assert!(!entry.chosen, "votes kept for chosen slot {slot}");
            assert_eq!(
                entry.ballot, lead.ballot,
                "slot {slot} in flight at another ballot"
            );
        }
        if !lead.reads_confirming.is_empty() {
            assert!(
                lead.read_acks.contains(&self.id()),
                "read round without own ack"
            );
        }
    }
}

mod election;
mod reads;
mod replication;
#[cfg(test)]
mod tests;
