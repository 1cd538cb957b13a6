//! The replica: a deterministic multi-Paxos state machine. See the module docs for the driver
//! loop and docs/consensus.md for the protocol.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::config::Config;
use super::durable::{prune_bases, DurableState, Entry, Record};
use super::error::{Error, Result};
use super::membership::Membership;
use super::message::{Message, MessageBody, PromisedEntry};
use super::ready::{ReadState, Ready, SnapshotWanted, SoftState};
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
    /// Slots up to here are in a durable snapshot of the state machine and gone from `log`.
    compacted: Slot,
    /// Memberships that govern the slots after their key (bootstrap, compaction, install).
    bases: BTreeMap<Slot, Membership>,
    /// Slots of `log` that hold a membership value.
    membership_slots: BTreeSet<Slot>,

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
    /// A snapshot this replica needs, reported in the next Ready.
    snapshot_wanted: Option<SnapshotWanted>,

    // Outbox, drained by `ready`.
    records: Vec<Record>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    soft_reported: SoftState,
    ready_number: u64,
    advanced_number: u64,
    /// Messages dropped because the sender's incarnation is not the member's.
    refused_messages: u64,
}

struct PreVote {
    round: u64,
    granted: BTreeSet<NodeId>,
}

/// Promises of one ballot, by acceptor, each by slot.
type Promises = BTreeMap<NodeId, BTreeMap<Slot, PromisedEntry>>;

struct Phase1 {
    ballot: Ballot,
    from_slot: Slot,
    promises: Promises,
}

/// A new leader re-proposes what its Phase 1 found, slot by slot, so that each slot is
/// recovered with a quorum of the membership that governs it (see `maybe_recover`).
struct Recovery {
    from_slot: Slot,
    promises: Promises,
    /// Voters a `Prepare` went to since the last heartbeat.
    prepared: BTreeSet<NodeId>,
}

struct Leadership {
    ballot: Ballot,
    next_slot: Slot,
    /// Until Phase 1's findings are all re-proposed; nothing new is proposed meanwhile.
    recovery: Option<Recovery>,
    /// Last slot recovered in Phase 1. Reads wait until it is committed: only then does this
    /// leader's commit index cover everything chosen before it took over.
    recovered_upto: Slot,
    /// Votes for proposed slots not yet chosen.
    votes: BTreeMap<Slot, BTreeSet<NodeId>>,
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    /// Peers heard from since the last check-quorum, and in the period before it.
    heard: BTreeSet<NodeId>,
    heard_before: BTreeSet<NodeId>,
    /// The commit index each peer last acknowledged (learners included).
    peer_commit: BTreeMap<NodeId, Slot>,
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

    /// `restore` for a state machine that does not record memberships.
    pub fn restore(
        config: Config,
        seed: u64,
        state: DurableState,
        applied: Slot,
    ) -> Result<Replica> {
        Replica::restore_machine(config, seed, state, applied, None)
    }

    /// A replica recovering from `state` (rebuilt from its WAL) whose state machine has applied
    /// every slot up to `applied`. Committed slots after `applied` are handed out again.
    ///
    /// A state machine ahead of the WAL's commit index holds a snapshot the WAL does not know
    /// of yet (installed just before a crash, or restored from a backup): the replica takes
    /// it as installed. One behind the WAL's compacted prefix lost slots nobody here can give
    /// back, and is refused. `machine_membership` is the membership the state machine
    /// recorded at `applied` (it matters when the machine is ahead of the WAL).
    ///
    /// A WAL that names no membership takes `config.members` as the bootstrap one; with
    /// none there either, the replica knows no membership and is a learner until the log
    /// (or a snapshot) tells it otherwise.
    pub fn restore_machine(
        config: Config,
        seed: u64,
        state: DurableState,
        applied: Slot,
        machine_membership: Option<Membership>,
    ) -> Result<Replica> {
        config.validate()?;
        if applied < state.compacted {
            return Err(Error::StateMachineBehind {
                applied,
                compacted: state.compacted,
            });
        }
        let soft = SoftState {
            role: Role::Follower,
            leader: None,
            ballot: state.promised,
        };
        let mut replica = Replica {
            rng: Rng::new(seed),
            promised: state.promised,
            highest_round: state.promised.round,
            membership_slots: (state.log.iter())
                .filter(|(_, entry)| entry.value.membership().is_some())
                .map(|(&slot, _)| slot)
                .collect(),
            log: state.log,
            commit_index: state.commit_index,
            compacted: state.compacted,
            bases: state.bases,
            commit_recorded: state.commit_index,
            applied: applied.min(state.commit_index),
            role: Role::Follower,
            leader: None,
            election_elapsed: 0,
            election_timeout: config.election_timeout_ticks,
            pre_vote: None,
            phase1: None,
            lead: None,
            leader_commit_seen: state.commit_index,
            catch_up_elapsed: None,
            snapshot_wanted: None,
            records: Vec::new(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            soft_reported: soft,
            ready_number: 0,
            advanced_number: 0,
            refused_messages: 0,
            config,
        };
        replica.reset_election_timer();
        // A WAL with no membership record is new, or was written before memberships were
        // logged (when the config's list was the only one): either way that list governs.
        // Every compaction since restates the bases after its `Compacted` record, so a
        // replica that compacted keeps what it learned.
        if replica.bases.is_empty() && !replica.config.members.is_empty() {
            let membership = replica.bootstrap_membership();
            replica.set_base(0, membership);
        }
        if applied > replica.commit_index {
            replica.install_snapshot_with(applied, machine_membership);
        } else if replica.compacted > 0 {
            // The WAL's last restatement may have been torn by the crash, and the driver may
            // remove what comes before it once a later one is durable: restate the log
            // first, so every restatement a later replay starts from is whole or followed
            // by a whole one (see `durable::Replay`).
            replica.drop_prefix(replica.compacted);
        }
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

    /// Slots up to here are covered by a snapshot and no longer in the log.
    pub fn compacted(&self) -> Slot {
        self.compacted
    }

    /// Slots the in-memory log holds (what compaction lets it drop).
    pub fn log_slots(&self) -> usize {
        self.log.len()
    }

    /// The state machine holds a durable snapshot of every slot up to `upto` (at most the
    /// applied slot): drop them from the log. The next Ready's records restate what the log
    /// keeps, after a `Record::Compacted`; once they are durable, every WAL record before
    /// that one may be removed.
    pub fn compact(&mut self, upto: Slot) {
        assert!(
            upto <= self.applied,
            "compacting up to {upto} beyond the applied slot {}",
            self.applied
        );
        if upto <= self.compacted {
            return;
        }
        self.drop_prefix(upto);
    }

    /// The driver replaced the state machine with a snapshot of every slot up to `upto`
    /// (fetched from a peer). The log forgets those slots, the commit index covers them,
    /// and application resumes after `upto`. Returns false, changing nothing, for a
    /// snapshot no newer than what is applied.
    ///
    /// Every Ready taken must be advanced first: a Ready still in flight may hand out slots
    /// the snapshot covers, which would then be applied twice.
    pub fn install_snapshot(&mut self, upto: Slot) -> bool {
        self.install_snapshot_with(upto, None)
    }

    /// `install_snapshot` of a snapshot that recorded `membership` at `upto`. Without it,
    /// the membership this replica knows for the slot after `upto` is kept.
    pub fn install_snapshot_with(&mut self, upto: Slot, membership: Option<Membership>) -> bool {
        assert_eq!(
            self.ready_number, self.advanced_number,
            "snapshot installed while a Ready is in flight"
        );
        if upto <= self.applied {
            return false;
        }
        if self.lead.is_some() {
            // Slots this leadership has in flight may be inside the snapshot: start over.
            self.become_follower(None);
            self.reset_election_timer();
        }
        self.commit_index = self.commit_index.max(upto);
        self.commit_recorded = self.commit_recorded.max(upto);
        self.leader_commit_seen = self.leader_commit_seen.max(upto);
        self.applied = upto;
        if let Some(membership) = membership {
            self.set_base(upto, membership);
        }
        self.drop_prefix(upto);
        if self
            .snapshot_wanted
            .is_some_and(|wanted| wanted.upto <= upto)
        {
            self.snapshot_wanted = None;
        }
        self.advance_commit();
        true
    }

    /// Forget slots up to `upto` and restate, durably, what the log keeps.
    fn drop_prefix(&mut self, upto: Slot) {
        // The membership slots about to be forgotten: their effect becomes a base.
        let membership = self.membership_before(upto + 1).clone();
        self.set_base(upto, membership);
        self.log = self.log.split_off(&(upto + 1));
        self.membership_slots = self.membership_slots.split_off(&(upto + 1));
        self.compacted = upto;
        prune_bases(&mut self.bases, upto);
        let promised = self.promised;
        self.records.push(Record::Compacted { upto, promised });
        if self.config.bugs.compact_without_restating {
            return;
        }
        for (&upto, membership) in &self.bases {
            self.records.push(Record::Membership {
                upto,
                membership: membership.clone(),
            });
        }
        for (&slot, entry) in &self.log {
            let record = match entry.chosen {
                true => Record::Chosen {
                    slot,
                    value: entry.value.clone(),
                },
                false => Record::Accept {
                    slot,
                    ballot: entry.ballot,
                    value: entry.value.clone(),
                },
            };
            self.records.push(record);
        }
        if self.commit_recorded > upto {
            self.records.push(Record::Commit {
                upto: self.commit_recorded,
            });
        }
    }

    /// Note that this replica needs a snapshot covering `upto` from `from`.
    fn want_snapshot(&mut self, from: NodeId, upto: Slot) {
        if upto <= self.commit_index {
            return;
        }
        if self.snapshot_wanted.is_none_or(|wanted| wanted.upto < upto) {
            self.snapshot_wanted = Some(SnapshotWanted { from, upto });
        }
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
        if message.to != self.id() {
            return;
        }
        if from != self.id() && !self.admits(from, message.incarnation) {
            self.refused_messages += 1;
            self.learn_despite_refusal(from, &message.body);
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
                ballot,
                entries,
                compacted,
                ..
            } => self.handle_promise(from, ballot, entries, compacted),
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
                ballot,
                read_round,
                commit_index,
            } => self.handle_heartbeat_ack(from, ballot, read_round, commit_index),
            MessageBody::CatchUpRequest { from_slot } => {
                self.handle_catch_up_request(from, from_slot)
            }
            MessageBody::CatchUp { entries } => self.handle_catch_up(from, entries),
            MessageBody::Compacted { upto } => self.handle_compacted(from, upto),
            MessageBody::TimeoutNow { ballot } => self.handle_timeout_now(from, ballot),
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
            || self.snapshot_wanted.is_some()
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
            snapshot_wanted: self.snapshot_wanted.take(),
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

    fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            from: self.id(),
            incarnation: self.incarnation(),
            to,
            body,
        }
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        self.messages.push(message);
    }

    /// Send once the records queued so far are durable.
    fn send_persisted(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        self.persisted_messages.push(message);
    }

    fn broadcast(&mut self, body: MessageBody) {
        let peers = self.peers();
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
        assert!(
            self.log
                .keys()
                .next()
                .is_none_or(|&first| first > self.compacted),
            "log holds a compacted slot"
        );
        assert!(self.compacted <= self.applied, "compacted beyond applied");
        for (slot, entry) in self.log.range(self.commit_index + 1..) {
            if !entry.chosen {
                assert!(
                    entry.ballot <= self.promised,
                    "slot {slot} accepted above the promise"
                );
            }
        }
        if self.commit_index > self.compacted {
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
            lead.recovery.is_some() || last < lead.next_slot,
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
                voters.len() < self.vote_quorum(),
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
mod membership;
mod reads;
mod replication;
#[cfg(test)]
mod tests;
