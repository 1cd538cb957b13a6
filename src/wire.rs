//! The peer wire format: what replicas send each other, and its framing. Each frame is a
//! big-endian u32 length and a bincode `PeerFrame`. Shared by the peer transport
//! (`replica::transport`) and snapshot transfers (`snapshot::stream`), which sit above it.

use std::collections::BTreeMap;

use bincode::Options;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::consensus::{Membership, Message, NodeId, Slot};

/// The cluster name of a node whose config names none.
pub const DEFAULT_CLUSTER: &str = "paxkv";

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerFrame {
    Hello {
        from: NodeId,
        cluster: String,
        /// The sender's member incarnation (its `IDENTITY`): a replica that lost its disk
        /// comes back with another, and waits for an operator to re-admit it.
        incarnation: u64,
    },
    Peer(PeerMessage),
    /// Opens a snapshot transfer instead of `Hello` (see `snapshot::stream`).
    SnapshotFetch {
        from: NodeId,
        min_slot: Slot,
        cluster: String,
    },
    SnapshotOffer {
        slot: Slot,
        version: u64,
        bytes: u64,
        checksum: u32,
    },
    SnapshotUnavailable {
        reason: String,
    },
    SnapshotRead {
        offset: u64,
    },
    SnapshotData {
        offset: u64,
        data: Vec<u8>,
        checksum: u32,
    },
}

/// What replicas send each other: the consensus protocol, and the router's requests to the
/// leader (see `replica::driver`): proposals and read-index requests forwarded from any replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    Consensus(Message),
    Router {
        from: NodeId,
        to: NodeId,
        body: RouterMessage,
    },
}

impl PeerFrame {
    /// The frame's kind, for errors (a data frame's bytes are not worth printing).
    pub fn kind(&self) -> &'static str {
        match self {
            PeerFrame::Hello { .. } => "Hello",
            PeerFrame::Peer(_) => "Peer",
            PeerFrame::SnapshotFetch { .. } => "SnapshotFetch",
            PeerFrame::SnapshotOffer { .. } => "SnapshotOffer",
            PeerFrame::SnapshotUnavailable { .. } => "SnapshotUnavailable",
            PeerFrame::SnapshotRead { .. } => "SnapshotRead",
            PeerFrame::SnapshotData { .. } => "SnapshotData",
        }
    }
}

impl PeerMessage {
    pub fn from(&self) -> NodeId {
        match self {
            PeerMessage::Consensus(message) => message.from,
            PeerMessage::Router { from, .. } => *from,
        }
    }

    pub fn to(&self) -> NodeId {
        match self {
            PeerMessage::Consensus(message) => message.to,
            PeerMessage::Router { to, .. } => *to,
        }
    }
}

/// Why the leader did not take a forwarded request. Nothing was proposed, so the sender
/// may send it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    NotLeader { leader: Option<NodeId> },
    Busy(String),
    Rejected(String),
}

/// Requests name the sender's `incarnation` (this run of it) and replies echo it, so that a
/// reply meant for an earlier run of a restarted replica, whose sequences and contexts
/// restarted at 1, is recognized and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouterMessage {
    /// Propose `envelope` (it names its origin, incarnation and sequence) on the sender's
    /// behalf.
    Propose { sequence: u64, envelope: Vec<u8> },
    ProposeRefused {
        incarnation: u64,
        sequence: u64,
        refusal: Refusal,
    },
    /// The forwarded command's outcome, as the leader applied it.
    Outcome {
        incarnation: u64,
        sequence: u64,
        outcome: Vec<u8>,
    },
    /// A read index for the sender: answered once a quorum confirmed the leadership.
    ReadIndex { incarnation: u64, context: u64 },
    ReadIndexRefused {
        incarnation: u64,
        context: u64,
        refusal: Refusal,
    },
    ReadIndexReply {
        incarnation: u64,
        context: u64,
        index: Slot,
    },
    /// The receiver's own status, for `status()` calls served elsewhere.
    Status { incarnation: u64, context: u64 },
    StatusReply {
        incarnation: u64,
        context: u64,
        status: PeerStatus,
    },
    /// An operator's membership request, for the leader to carry out.
    Admin {
        incarnation: u64,
        context: u64,
        request: AdminRequest,
    },
    AdminReply {
        incarnation: u64,
        context: u64,
        result: std::result::Result<MembershipView, AdminRefusal>,
    },
    /// The sender's newest state digests, one per slot from `first` (see
    /// `replica::driver::divergence`); `base` names the chain they belong to.
    Digests {
        base: Slot,
        first: Slot,
        digests: Vec<[u8; 16]>,
    },
}

/// What an operator asks of the membership (`paxkv admin member ...`). The leader carries
/// out each one; a change answers once it has committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The committed membership, as the leader knows it.
    List,
    /// Add replica `id` as a learner. Without `incarnation`, the one the replica announced
    /// when it connected to the leader (it must be running); without `addr`, the address
    /// the membership or the leader's config has for `id`.
    Add {
        id: NodeId,
        addr: Option<String>,
        incarnation: Option<u64>,
    },
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
    TransferLeader {
        to: NodeId,
    },
}

/// The leader's answer to an `AdminRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    pub leader: Option<NodeId>,
    pub commit_index: Slot,
    /// The committed membership.
    pub membership: Membership,
    /// Each member's committed slot as the leader last heard it (the leader's own too).
    pub progress: BTreeMap<NodeId, Slot>,
    /// Replicas that connected to the leader with an incarnation no member has: new
    /// replicas, or ones that lost their disk, waiting to be added. (id, incarnation).
    pub candidates: Vec<(NodeId, u64)>,
}

/// Why a membership request was not carried out. Nothing changed unless the reason is
/// `OutcomeUnknown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AdminRefusal {
    pub reason: AdminReason,
    pub message: String,
}

/// The typed reasons of an `AdminRefusal`; `name()` is what clients switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReason {
    /// No leader answered in time; nothing was proposed.
    NoLeader,
    /// The change was proposed but leadership changed before it committed: list the
    /// members to see whether it took effect.
    OutcomeUnknown,
    ChangeInProgress,
    WouldLoseQuorum,
    UnknownMember,
    AlreadyMember,
    AlreadyVoter,
    NotVoter,
    LastVoter,
    TooManyMembers,
    TooManyVoterChanges,
    /// The learner (or the transfer's target) has not caught up with the leader.
    MemberBehind,
    /// `Add` without an incarnation for a replica that has not connected to the leader.
    NotConnected,
    /// `Add` of a new id without a peer address.
    AddressRequired,
    /// The request does not make sense (a peer address that does not parse, ...).
    Invalid,
}

impl AdminReason {
    pub fn name(self) -> &'static str {
        match self {
            AdminReason::NoLeader => "NO_LEADER",
            AdminReason::OutcomeUnknown => "OUTCOME_UNKNOWN",
            AdminReason::ChangeInProgress => "CHANGE_IN_PROGRESS",
            AdminReason::WouldLoseQuorum => "WOULD_LOSE_QUORUM",
            AdminReason::UnknownMember => "UNKNOWN_MEMBER",
            AdminReason::AlreadyMember => "ALREADY_MEMBER",
            AdminReason::AlreadyVoter => "ALREADY_VOTER",
            AdminReason::NotVoter => "NOT_VOTER",
            AdminReason::LastVoter => "LAST_VOTER",
            AdminReason::TooManyMembers => "TOO_MANY_MEMBERS",
            AdminReason::TooManyVoterChanges => "TOO_MANY_VOTER_CHANGES",
            AdminReason::MemberBehind => "MEMBER_BEHIND",
            AdminReason::NotConnected => "NOT_CONNECTED",
            AdminReason::AddressRequired => "ADDRESS_REQUIRED",
            AdminReason::Invalid => "INVALID",
        }
    }
}

impl AdminRefusal {
    pub fn new(reason: AdminReason, message: impl Into<String>) -> AdminRefusal {
        AdminRefusal {
            reason,
            message: message.into(),
        }
    }
}

/// One replica's view of itself, as reported to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub role: String,
    pub leader: Option<NodeId>,
    pub ballot: String,
    pub commit_index: Slot,
    pub applied_slot: Slot,
    /// Its member incarnation (its `IDENTITY`).
    pub incarnation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer frame of {bytes} bytes exceeds peer_frame_bytes_max {max}")]
    FrameTooLarge { bytes: u32, max: u32 },
    #[error("peer frame does not decode: {0}")]
    Decode(bincode::Error),
    #[error("peer protocol: {0}")]
    Protocol(String),
    #[error("peer connection refused ({reason}): {detail}")]
    Refused {
        reason: &'static str,
        detail: String,
    },
}

pub type Result<T> = std::result::Result<T, TransportError>;

fn codec(frame_bytes_max: u32) -> impl Options + Copy {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(u64::from(frame_bytes_max))
}

pub fn encode_frame(frame: &PeerFrame, frame_bytes_max: u32) -> Result<Vec<u8>> {
    let body = codec(frame_bytes_max)
        .serialize(frame)
        .map_err(TransportError::Decode)?;
    let bytes = u32::try_from(body.len()).unwrap_or(u32::MAX);
    if bytes > frame_bytes_max {
        return Err(TransportError::FrameTooLarge {
            bytes,
            max: frame_bytes_max,
        });
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&bytes.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Read one frame, checking its length before allocating for it.
pub async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    frame_bytes_max: u32,
) -> Result<PeerFrame> {
    let bytes = reader.read_u32().await?;
    if bytes > frame_bytes_max {
        return Err(TransportError::FrameTooLarge {
            bytes,
            max: frame_bytes_max,
        });
    }
    let mut body = vec![0; bytes as usize];
    reader.read_exact(&mut body).await?;
    codec(frame_bytes_max)
        .deserialize(&body)
        .map_err(TransportError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{Ballot, MessageBody};

    #[tokio::test]
    async fn frames_round_trip_and_oversized_lengths_are_refused_before_allocating() {
        let message = Message {
            from: 1,
            incarnation: 1,
            to: 2,
            body: MessageBody::Heartbeat {
                ballot: Ballot::new(3, 1),
                commit_index: 9,
                read_round: 0,
            },
        };
        let router = PeerMessage::Router {
            from: 1,
            to: 2,
            body: RouterMessage::ReadIndexReply {
                incarnation: 3,
                context: 7,
                index: 41,
            },
        };
        for message in [PeerMessage::Consensus(message), router] {
            let frame = encode_frame(&PeerFrame::Peer(message.clone()), 1 << 20).unwrap();
            let mut reader = &frame[..];
            match read_frame(&mut reader, 1 << 20).await.unwrap() {
                PeerFrame::Peer(decoded) => assert_eq!(decoded, message),
                other => panic!("decoded {other:?}"),
            }
        }
        let huge = u32::MAX.to_be_bytes();
        let mut reader = &huge[..];
        let error = read_frame(&mut reader, 1 << 20).await.unwrap_err();
        assert!(matches!(error, TransportError::FrameTooLarge { .. }));
    }
}
