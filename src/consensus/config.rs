//! Settings of one replica's core. Times are in logical ticks; the driver decides how long a
//! tick is (the service uses 10 ms).

use super::error::{Error, Result};
use super::types::NodeId;

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// This replica's member incarnation: one life of its disk (see `Member`).
    pub incarnation: u64,
    /// The bootstrap membership, all voters: used only when the durable state names none
    /// (a new cluster, or a WAL from before memberships were recorded). Empty for a replica
    /// that joins an existing cluster: it learns the membership from the log.
    pub members: Vec<NodeId>,
    pub heartbeat_interval_ticks: u32,
    /// A follower waits between this and twice this without hearing a leader before it
    /// starts an election; a leader steps down after this long without hearing a quorum.
    pub election_timeout_ticks: u32,
    /// Slots a leader may have proposed but not yet seen chosen (the Phase 2 pipeline).
    pub inflight_slots_max: u64,
    /// Payload bytes packed into one slot. A single command larger than this is refused.
    pub slot_bytes_max: usize,
    /// Payload bytes of proposals waiting for a slot; beyond it `propose` pushes back.
    pub pending_bytes_max: usize,
    /// Payload bytes in one catch-up reply (at least one slot is always sent).
    pub catch_up_bytes_max: usize,
    /// Deliberate protocol bugs, for proving the simulator catches them. Never set in service.
    pub bugs: InjectedBugs,
}

/// Known-bad behaviours the simulator must detect. Each is off unless a test turns it on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// Send Phase 1b promises before the promise is durable.
    pub promise_before_persist: bool,
    /// Send Phase 2b votes before the accepted value is durable.
    pub accepted_before_persist: bool,
    /// In Phase 1, ignore values other acceptors accepted instead of adopting the highest.
    pub skip_adopt_highest: bool,
    /// Count one vote as a quorum whatever the cluster size.
    pub quorum_of_one: bool,
    /// Answer read-index requests at once, without confirming leadership with a quorum.
    pub read_without_quorum: bool,
    /// In Phase 1, count a promise from an acceptor that compacted slots this candidate has
    /// not committed, as if the promise reported all it knows.
    pub lead_past_compacted: bool,
    /// When compacting, write the `Compacted` record without restating the log above it,
    /// so removing the WAL before it forgets accepted values.
    pub compact_without_restating: bool,
    /// A replica restarted with an empty disk keeps its identity and votes as if it had
    /// never promised anything (the simulator obeys it when it wipes a replica's disk).
    pub empty_replica_votes: bool,
    /// Count quorums with the newest membership in the log, committed or not, and propose
    /// past an uncommitted membership change.
    pub config_before_commit: bool,
    /// Let a leader propose a membership change while another is uncommitted, and propose
    /// past it.
    pub two_changes_in_flight: bool,
    /// Count the votes of any replica the leader hears from, voter or not.
    pub removed_vote_counted: bool,
}

impl Config {
    /// Defaults for a replica `id` in a cluster of `members`.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Config {
        Config {
            id,
            incarnation: 1,
            members,
            heartbeat_interval_ticks: 2,
            election_timeout_ticks: 20,
            inflight_slots_max: 64,
            slot_bytes_max: 4 << 20,
            pending_bytes_max: 64 << 20,
            catch_up_bytes_max: 8 << 20,
            bugs: InjectedBugs::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidConfig(reason));
        let mut sorted = self.members.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.members.len() {
            return invalid(format!("members {:?} contain duplicates", self.members));
        }
        if !self.members.is_empty() && !self.members.contains(&self.id) {
            return invalid(format!(
                "id {} is not among members {:?}",
                self.id, self.members
            ));
        }
        if self.members.len() > super::membership::MEMBERS_MAX {
            return invalid(format!(
                "{} members; at most 15 are supported",
                self.members.len()
            ));
        }
        if self.heartbeat_interval_ticks == 0 {
            return invalid("heartbeat_interval_ticks must be at least 1".into());
        }
        if self.election_timeout_ticks <= 2 * self.heartbeat_interval_ticks {
            return invalid(format!(
                "election_timeout_ticks ({}) must exceed twice heartbeat_interval_ticks ({})",
                self.election_timeout_ticks, self.heartbeat_interval_ticks
            ));
        }
        if self.inflight_slots_max == 0 {
            return invalid("inflight_slots_max must be at least 1".into());
        }
        if self.slot_bytes_max == 0 || self.pending_bytes_max < self.slot_bytes_max {
            return invalid("need 0 < slot_bytes_max <= pending_bytes_max".into());
        }
        Ok(())
    }
}
