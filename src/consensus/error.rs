use super::types::NodeId;

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
}

pub type Result<T> = std::result::Result<T, Error>;
