use super::membership::MembershipError;
use super::types::{NodeId, Slot};

/// Errors the core returns to its driver. Programmer errors panic instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Only the leader takes proposals and read-index requests. Try the hinted leader.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The proposal queue is full. Try again later.
    #[error(
        "proposal queue full: {pending_bytes} + {command_bytes} bytes exceeds pending_bytes_max"
    )]
    ProposalQueueFull {
        pending_bytes: usize,
        command_bytes: usize,
    },
    #[error("command of {command_bytes} bytes exceeds slot_bytes_max {slot_bytes_max}")]
    CommandTooLarge {
        command_bytes: usize,
        slot_bytes_max: usize,
    },
    /// The state machine lost slots the WAL no longer holds: it is behind the compacted
    /// prefix, so the replica cannot rebuild them.
    #[error(
        "the state machine has applied slot {applied}, but the WAL was compacted up to slot \
         {compacted}: restore this replica from a snapshot"
    )]
    StateMachineBehind { applied: u64, compacted: u64 },
    #[error("invalid consensus config: {0}")]
    InvalidConfig(String),
    /// One membership change at a time: the last one (at `slot`) is not committed yet, or
    /// a new leader has not finished recovering the log. Try again later.
    #[error("a membership change is in progress (slot {slot}); try again once it commits")]
    ChangeInProgress { slot: Slot },
    #[error("invalid membership change: {0}")]
    Membership(#[from] MembershipError),
    /// The new voters would not make a quorum of the replicas this leader hears from.
    #[error(
        "the change would lose quorum: {reachable} of the new membership's voters answer, \
         {quorum} are needed"
    )]
    WouldLoseQuorum { reachable: usize, quorum: usize },
    /// A learner is promoted (or leadership transferred) only once it has caught up.
    #[error("replica {id} is behind: it has committed slot {commit}, the leader {leader_commit}")]
    MemberBehind {
        id: NodeId,
        commit: Slot,
        leader_commit: Slot,
    },
    #[error("replica {0} is not a voter")]
    NotVoter(NodeId),
}

pub type Result<T> = std::result::Result<T, Error>;
