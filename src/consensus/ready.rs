use super::durable::Record;
use super::message::Message;
use super::types::{Ballot, NodeId, Role, Slot, Value};

/// Who leads, as this replica sees it. Reported in a [`Ready`] whenever it changes, so the
/// driver can fail or redirect requests it was holding for an old leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub leader: Option<NodeId>,
    pub ballot: Ballot,
}

/// A read-index request confirmed: once this replica has applied `index`, a read of local
/// state is linearizable with respect to every write acknowledged before `read_index` was
/// called with `context`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub context: u64,
    pub index: Slot,
}

/// This replica is behind a peer's compacted log: it needs a snapshot covering at least
/// `upto`, which `from` has. The driver fetches one, installs it in the state machine, and
/// then calls `Replica::install_snapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotWanted {
    pub from: NodeId,
    pub upto: Slot,
}

/// Work for the driver, taken by value with `Replica::ready` and returned with
/// `Replica::advance`. The order is the contract:
/// 1. send `messages` (they do not depend on `records`);
/// 2. append `records` to the WAL and make them durable;
/// 3. only then send `persisted_messages` (some may be addressed to this replica itself:
///    deliver those with `step`);
/// 4. apply `committed` in order, after step 2;
/// 5. `advance(ready)`.
///
/// `snapshot_wanted` asks for a snapshot (see [`SnapshotWanted`]); fetching it is the
/// driver's business and takes as long as it takes, outside this order.
#[derive(Debug, Default)]
#[must_use = "a Ready carries work that must be done and then advanced"]
pub struct Ready {
    pub number: u64,
    pub soft_state: Option<SoftState>,
    pub messages: Vec<Message>,
    pub records: Vec<Record>,
    pub persisted_messages: Vec<Message>,
    pub committed: Vec<(Slot, Value)>,
    pub read_states: Vec<ReadState>,
    pub snapshot_wanted: Option<SnapshotWanted>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.messages.is_empty()
            && self.records.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && self.snapshot_wanted.is_none()
    }
}
