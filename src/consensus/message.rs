//! Messages replicas exchange. The transport frames them (bincode) and may lose, duplicate,
//! delay or reorder them; the protocol is safe under all of that.

use serde::{Deserialize, Serialize};

use super::types::{Ballot, NodeId, Slot, Value};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    /// The sender's member incarnation. A replica drops a message whose sender it knows
    /// at another incarnation: that is a replica that lost its disk, or an impostor.
    pub incarnation: u64,
    pub to: NodeId,
    pub body: MessageBody,
}

/// A slot's state as reported by an acceptor in Phase 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromisedEntry {
    pub slot: Slot,
    pub ballot: Ballot,
    pub value: Value,
    /// The acceptor knows this value is chosen; the candidate may take it as committed.
    pub chosen: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Would you vote for me if I ran Phase 1 with a ballot of this round? Changes no state.
    PreVote { round: u64, commit_index: Slot },
    PreVoteReply {
        round: u64,
        granted: bool,
        /// The replier's promised round, so a replica that was away learns how high to go.
        promised_round: u64,
    },
    /// Phase 1a, covering every slot from `from_slot` on.
    Prepare { ballot: Ballot, from_slot: Slot },
    /// Phase 1b. Sent only once the promise is durable.
    Promise {
        ballot: Ballot,
        from_slot: Slot,
        entries: Vec<PromisedEntry>,
        /// The acceptor holds no entries up to here (they are in its snapshot, all chosen).
        /// A candidate whose commit index is below it cannot recover those slots from this
        /// promise and must not lead before it installs a snapshot.
        compacted: Slot,
    },
    /// The receiver has promised or accepted a higher ballot than the sender's.
    Nack { ballot: Ballot, promised: Ballot },
    /// Phase 2a for a run of slots; carries the leader's commit index.
    Accept {
        ballot: Ballot,
        entries: Vec<(Slot, Value)>,
        commit_index: Slot,
    },
    /// Phase 2b. Sent only once the accepted values are durable.
    Accepted { ballot: Ballot, slots: Vec<Slot> },
    /// Leadership liveness, commit propagation, and read-index confirmation rounds.
    Heartbeat {
        ballot: Ballot,
        commit_index: Slot,
        read_round: u64,
    },
    HeartbeatAck {
        ballot: Ballot,
        read_round: u64,
        commit_index: Slot,
    },
    /// A replica that is behind asks for chosen values from `from_slot` on.
    CatchUpRequest { from_slot: Slot },
    /// Chosen values, in slot order, starting at the requested slot.
    CatchUp { entries: Vec<(Slot, Value)> },
    /// The sender no longer holds the log up to `upto` (a snapshot covers it): a replica
    /// whose commit index is below it needs the sender's snapshot.
    Compacted { upto: Slot },
    /// Leader transfer: the leader asks a caught-up voter to start Phase 1 now.
    TimeoutNow { ballot: Ballot },
}

impl MessageBody {
    /// A short name for logs and fault schedules.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "pre_vote",
            MessageBody::PreVoteReply { .. } => "pre_vote_reply",
            MessageBody::Prepare { .. } => "prepare",
            MessageBody::Promise { .. } => "promise",
            MessageBody::Nack { .. } => "nack",
            MessageBody::Accept { .. } => "accept",
            MessageBody::Accepted { .. } => "accepted",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatAck { .. } => "heartbeat_ack",
            MessageBody::CatchUpRequest { .. } => "catch_up_request",
            MessageBody::CatchUp { .. } => "catch_up",
            MessageBody::Compacted { .. } => "compacted",
            MessageBody::TimeoutNow { .. } => "timeout_now",
        }
    }
}
