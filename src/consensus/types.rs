//! Identifiers and values shared by every part of the protocol.

use serde::{Deserialize, Serialize};

use super::membership::Membership;

/// A replica's identity within its cluster. Fixed for the replica's life.
pub type NodeId = u32;

/// A position in the replicated log. Slot 1 is the first; slot 0 means "none".
pub type Slot = u64;

/// A proposal number. Ordered by round first, then by node, so two replicas never share one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    pub round: u64,
    pub node: NodeId,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot { round: 0, node: 0 };

    pub fn new(round: u64, node: NodeId) -> Ballot {
        Ballot { round, node }
    }
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

/// What a slot holds once chosen: either a batch of opaque client commands, or a no-op that a
/// new leader uses to fill a hole left by its predecessor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    Noop,
    Commands(Vec<Vec<u8>>),
    /// The membership that governs every slot after this one (see `membership`).
    Membership(Membership),
}

/// What one member of a membership value counts for in `slot_bytes_max`.
const MEMBER_BYTES: usize = 64;

impl Value {
    /// Payload bytes carried, the unit `slot_bytes_max` is measured in.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Value::Noop => 0,
            Value::Commands(commands) => commands.iter().map(Vec::len).sum(),
            Value::Membership(membership) => MEMBER_BYTES * membership.members.len(),
        }
    }

    pub fn membership(&self) -> Option<&Membership> {
        match self {
            Value::Membership(membership) => Some(membership),
            _ => None,
        }
    }

    pub fn commands(&self) -> &[Vec<u8>] {
        match self {
            Value::Noop | Value::Membership(_) => &[],
            Value::Commands(commands) => commands,
        }
    }
}

/// The role a replica plays at the moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    /// Asking peers whether an election could succeed, without disturbing anyone (pre-vote).
    PreCandidate,
    /// Running Phase 1 with its own ballot.
    Candidate,
    Leader,
}
