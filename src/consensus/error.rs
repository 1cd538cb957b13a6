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
    #[error("invalid consensus config: {0}")]
    InvalidConfig(String),
}

pub type Result<T> = std::result::Result<T, Error>;
