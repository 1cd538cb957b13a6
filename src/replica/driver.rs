//! The replica driver: one OS thread that owns the consensus core, its WAL and the state
//! machine, and runs the Ready loop. Everything that arrives (peer messages, proposals,
//! read-index requests) goes through one bounded channel, so the thread handles inputs in
//! batches: all inputs that queued up while it was fsyncing share the next Ready, and so the
//! next fsync (group commit).
//!
//! A thread rather than a tokio task because fdatasync blocks, and the core must see its
//! inputs one at a time anyway. Time enters only here: wall time becomes ticks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bincode::Options;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::log_store::{LogStore, LogStoreError};
use super::transport::{Deliver, Transport, TransportOptions};
use crate::consensus::{
    self, Ballot, Config, Message, NodeId, ReadState, Ready, Replica, Role, Slot, Value,
};
use paxkv_wal::WalOptions;

/// What the log is applied to. Applying must be deterministic, and the machine must keep
/// its applied slot durable together with the data (so `applied_slot` survives a crash).
pub trait StateMachine: Send + 'static {
    type Outcome: Send + 'static;
    fn applied_slot(&self) -> Slot;
    /// Apply every command of `slot` (none for a no-op), returning one outcome per command.
    /// An error (the disk failed) stops the replica: it must not go on without the slot.
    fn apply_slot(
        &mut self,
        slot: Slot,
        commands: &[&[u8]],
    ) -> Result<Vec<Self::Outcome>, ApplyError>;
}

/// Why a state machine could not apply a slot.
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Debug)]
pub struct DriverOptions {
    pub tick_ms: u64,
    pub consensus: Config,
    pub wal: WalOptions,
    pub transport: TransportOptions,
    /// Inputs queued for the driver thread; beyond it proposals get `Busy` and peer
    /// messages are dropped.
    pub inputs_queued_max: usize,
    /// Inputs handled before the next Ready is taken.
    pub inputs_per_ready_max: usize,
}

impl DriverOptions {
    pub fn new(id: NodeId, members: Vec<NodeId>) -> DriverOptions {
        DriverOptions {
            tick_ms: 10,
            consensus: Config::new(id, members),
            wal: WalOptions::default(),
            transport: TransportOptions::default(),
            inputs_queued_max: 65_536,
            inputs_per_ready_max: 4_096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Queues are full. Try again later.
    #[error("replica busy: {0}")]
    Busy(String),
    /// Leadership changed before the command's slot was known chosen: it may or may not
    /// commit. Retry with the same session to learn which, exactly once.
    #[error("leadership lost; the outcome is unknown")]
    OutcomeUnknown,
    #[error("command rejected: {0}")]
    Rejected(String),
    #[error("replica stopped: {0}")]
    Stopped(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
    #[error(transparent)]
    Consensus(#[from] consensus::Error),
    #[error("spawning the driver thread: {0}")]
    Spawn(std::io::Error),
}

/// A replica's view of itself, refreshed after every Ready.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub id: NodeId,
    pub role: Option<Role>,
    pub leader: Option<NodeId>,
    pub ballot: Ballot,
    pub commit_index: Slot,
    pub applied_slot: Slot,
    pub stopped: Option<String>,
}

/// Wraps every proposed command so the proposing replica can match it when it commits.
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: NodeId,
    sequence: u64,
    command: Vec<u8>,
}

fn envelope_codec() -> impl Options + Copy {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}

enum Input<O> {
    Message(Message),
    Propose {
        command: Vec<u8>,
        reply: oneshot::Sender<Result<O, DriverError>>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<Slot, DriverError>>,
    },
    Stop,
}

/// Handle to a running replica. Clone it freely.
pub struct ReplicaHandle<O> {
    id: NodeId,
    inputs: SyncSender<Input<O>>,
    status: Arc<Mutex<ReplicaStatus>>,
}

impl<O> Clone for ReplicaHandle<O> {
    fn clone(&self) -> Self {
        ReplicaHandle {
            id: self.id,
            inputs: self.inputs.clone(),
            status: self.status.clone(),
        }
    }
}

impl<O: Send + 'static> ReplicaHandle<O> {
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Propose `command`; resolves with its outcome once it is applied on this replica.
    pub async fn propose(&self, command: Vec<u8>) -> Result<O, DriverError> {
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Input::Propose { command, reply })?;
        outcome.await.map_err(|_| stopped())?
    }

    /// A linearizable read point: resolves once a quorum confirmed this replica's leadership
    /// and the replica has applied the returned slot. Reads of local state after that are
    /// linearizable.
    pub async fn read_index(&self) -> Result<Slot, DriverError> {
        let (reply, index) = oneshot::channel();
        self.enqueue(Input::ReadIndex { reply })?;
        index.await.map_err(|_| stopped())?
    }

    pub fn status(&self) -> ReplicaStatus {
        self.status.lock().expect("status lock").clone()
    }

    fn enqueue(&self, input: Input<O>) -> Result<(), DriverError> {
        match self.inputs.try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(DriverError::Busy("driver input queue full".into())),
            Err(TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }
}

fn stopped() -> DriverError {
    DriverError::Stopped("the replica's driver has stopped".into())
}

/// A started replica: its handle, and what is needed to stop it.
pub struct ReplicaNode<O> {
    pub handle: ReplicaHandle<O>,
    thread: Option<JoinHandle<()>>,
    stop_transport: watch::Sender<bool>,
}

impl<O> ReplicaNode<O> {
    /// Stop the driver thread and the transport, and wait for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.handle.inputs.try_send(Input::Stop);
        let _ = self.stop_transport.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<O> Drop for ReplicaNode<O> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start replica `options.consensus.id`: recover from the WAL in `data_dir`, listen for
/// peers on `listener`, connect to `peers`, and run. Call within a tokio runtime.
pub fn start<M: StateMachine>(
    listener: TcpListener,
    peers: BTreeMap<NodeId, SocketAddr>,
    data_dir: &Path,
    machine: M,
    options: DriverOptions,
) -> Result<ReplicaNode<M::Outcome>, StartError> {
    let id = options.consensus.id;
    let (store, state) = LogStore::open(data_dir, options.wal.clone())?;
    let replica = Replica::restore(
        options.consensus.clone(),
        seed(id),
        state,
        machine.applied_slot(),
    )?;
    let (inputs, receiver) = mpsc::sync_channel(options.inputs_queued_max);
    let message_inputs = inputs.clone();
    let deliver: Deliver = Arc::new(move |message| {
        // A full queue drops the message, as a lossy network would.
        let _ = message_inputs.try_send(Input::Message(message));
    });
    let (stop_transport, transport_shutdown) = watch::channel(false);
    let transport = Transport::start(
        id,
        listener,
        peers,
        deliver,
        options.transport.clone(),
        transport_shutdown,
    );
    let status = Arc::new(Mutex::new(ReplicaStatus {
        id,
        ..ReplicaStatus::default()
    }));
    let driver = Driver {
        id,
        replica,
        store,
        machine,
        transport,
        options,
        status: status.clone(),
        next_sequence: 1,
        proposals: BTreeMap::new(),
        reads: BTreeMap::new(),
        reads_waiting_apply: BTreeMap::new(),
        was_leader: false,
    };
    let thread = std::thread::Builder::new()
        .name(format!("paxkv-replica-{id}"))
        .spawn(move || driver.run(receiver))
        .map_err(StartError::Spawn)?;
    let handle = ReplicaHandle { id, inputs, status };
    Ok(ReplicaNode {
        handle,
        thread: Some(thread),
        stop_transport,
    })
}

/// The core's randomness is only for election timeouts; distinct per replica and per start.
fn seed(id: NodeId) -> u64 {
    // Wall time only seeds election timeouts; no decision depends on its value.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    now ^ (u64::from(id) << 56)
}

type Reply<T> = oneshot::Sender<Result<T, DriverError>>;

struct Driver<M: StateMachine> {
    id: NodeId,
    replica: Replica,
    store: LogStore,
    machine: M,
    transport: Transport,
    options: DriverOptions,
    status: Arc<Mutex<ReplicaStatus>>,
    next_sequence: u64,
    proposals: BTreeMap<u64, Reply<M::Outcome>>,
    reads: BTreeMap<u64, Reply<Slot>>,
    reads_waiting_apply: BTreeMap<Slot, Vec<Reply<Slot>>>,
    was_leader: bool,
}

impl<M: StateMachine> Driver<M> {
    fn run(mut self, inputs: mpsc::Receiver<Input<M::Outcome>>) {
        let tick = Duration::from_millis(self.options.tick_ms);
        // Wall time becomes logical ticks here and nowhere else.
        #[allow(clippy::disallowed_methods)]
        let mut next_tick = Instant::now() + tick;
        loop {
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            let first = match inputs.recv_timeout(next_tick.saturating_duration_since(now)) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return self.stop("all handles dropped"),
            };
            let more = std::iter::from_fn(|| inputs.try_recv().ok());
            for input in first
                .into_iter()
                .chain(more)
                .take(self.options.inputs_per_ready_max)
            {
                if !self.on_input(input) {
                    return self.stop("stopped");
                }
            }
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            if now >= next_tick {
                self.replica.tick();
                next_tick += tick;
                if next_tick < now {
                    next_tick = now + tick; // fell behind (a long fsync): do not burst ticks
                }
            }
            if let Err(error) = self.drive() {
                return self.stop(&error);
            }
        }
    }

    /// Returns false when the driver must stop.
    fn on_input(&mut self, input: Input<M::Outcome>) -> bool {
        match input {
            Input::Message(message) => self.replica.step(message),
            Input::Propose { command, reply } => self.on_propose(command, reply),
            Input::ReadIndex { reply } => self.on_read_index(reply),
            Input::Stop => return false,
        }
        true
    }

    fn on_propose(&mut self, command: Vec<u8>, reply: Reply<M::Outcome>) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let envelope = Envelope {
            origin: self.id,
            sequence,
            command,
        };
        let bytes = envelope_codec()
            .serialize(&envelope)
            .expect("envelope encodes");
        match self.replica.propose(bytes) {
            Ok(()) => {
                self.proposals.insert(sequence, reply);
            }
            Err(error) => {
                let _ = reply.send(Err(driver_error(error)));
            }
        }
    }

    fn on_read_index(&mut self, reply: Reply<Slot>) {
        let context = self.next_sequence;
        self.next_sequence += 1;
        match self.replica.read_index(context) {
            Ok(()) => {
                self.reads.insert(context, reply);
            }
            Err(error) => {
                let _ = reply.send(Err(driver_error(error)));
            }
        }
    }

    /// The Ready loop; an error (a failed WAL write or fsync) stops the replica.
    fn drive(&mut self) -> Result<(), String> {
        while self.replica.has_ready() {
            let ready = self.replica.ready();
            self.handle_ready(ready)?;
        }
        self.publish_status();
        Ok(())
    }

    fn handle_ready(&mut self, mut ready: Ready) -> Result<(), String> {
        for message in std::mem::take(&mut ready.messages) {
            self.transport.send(message);
        }
        if !ready.records.is_empty() {
            self.store
                .append(&ready.records)
                .map_err(|e| e.to_string())?;
            self.store.sync().map_err(|e| e.to_string())?;
        }
        for message in std::mem::take(&mut ready.persisted_messages) {
            if message.to == self.id {
                self.replica.step(message);
            } else {
                self.transport.send(message);
            }
        }
        for (slot, value) in std::mem::take(&mut ready.committed) {
            self.apply(slot, &value)
                .map_err(|error| format!("applying slot {slot}: {error}"))?;
        }
        for read in std::mem::take(&mut ready.read_states) {
            self.on_read_state(read);
        }
        if let Some(soft) = ready.soft_state {
            self.on_soft_state(soft.role == Role::Leader);
        }
        self.replica.advance(ready);
        Ok(())
    }

    fn apply(&mut self, slot: Slot, value: &Value) -> Result<(), ApplyError> {
        let envelopes: Vec<Envelope> = value
            .commands()
            .iter()
            .map(|bytes| {
                envelope_codec().deserialize(bytes).unwrap_or_else(|error| {
                    panic!("slot {slot} holds a command that is not an envelope: {error}")
                })
            })
            .collect();
        let commands: Vec<&[u8]> = envelopes.iter().map(|e| e.command.as_slice()).collect();
        let outcomes = self.machine.apply_slot(slot, &commands)?;
        assert_eq!(outcomes.len(), envelopes.len(), "one outcome per command");
        for (envelope, outcome) in envelopes.iter().zip(outcomes) {
            if envelope.origin != self.id {
                continue;
            }
            if let Some(reply) = self.proposals.remove(&envelope.sequence) {
                let _ = reply.send(Ok(outcome));
            }
        }
        let ready_reads: Vec<Slot> = self
            .reads_waiting_apply
            .range(..=slot)
            .map(|(&s, _)| s)
            .collect();
        for index in ready_reads {
            for reply in self.reads_waiting_apply.remove(&index).unwrap_or_default() {
                let _ = reply.send(Ok(index));
            }
        }
        Ok(())
    }

    fn on_read_state(&mut self, read: ReadState) {
        let Some(reply) = self.reads.remove(&read.context) else {
            return;
        };
        if self.machine.applied_slot() >= read.index {
            let _ = reply.send(Ok(read.index));
        } else {
            self.reads_waiting_apply
                .entry(read.index)
                .or_default()
                .push(reply);
        }
    }

    /// On losing leadership, whatever was waiting on it can no longer be answered here.
    fn on_soft_state(&mut self, is_leader: bool) {
        if self.was_leader && !is_leader {
            for (_, reply) in std::mem::take(&mut self.proposals) {
                let _ = reply.send(Err(DriverError::OutcomeUnknown));
            }
            let leader = self.replica.leader();
            for (_, reply) in std::mem::take(&mut self.reads) {
                let _ = reply.send(Err(DriverError::NotLeader { leader }));
            }
        }
        self.was_leader = is_leader;
    }

    fn publish_status(&self) {
        let soft = self.replica.soft_state();
        let mut status = self.status.lock().expect("status lock");
        status.role = Some(soft.role);
        status.leader = soft.leader;
        status.ballot = soft.ballot;
        status.commit_index = self.replica.commit_index();
        status.applied_slot = self.machine.applied_slot();
    }

    fn stop(mut self, reason: &str) {
        tracing::info!(replica = self.id, reason, "replica driver stopping");
        let error = DriverError::Stopped(reason.to_string());
        for (_, reply) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in std::mem::take(&mut self.reads) {
            let _ = reply.send(Err(error.clone()));
        }
        for reply in std::mem::take(&mut self.reads_waiting_apply)
            .into_values()
            .flatten()
        {
            let _ = reply.send(Err(error.clone()));
        }
        self.status.lock().expect("status lock").stopped = Some(reason.to_string());
    }
}

fn driver_error(error: consensus::Error) -> DriverError {
    match error {
        consensus::Error::NotLeader { leader } => DriverError::NotLeader { leader },
        consensus::Error::ProposalQueueFull { .. } => DriverError::Busy(error.to_string()),
        other => DriverError::Rejected(other.to_string()),
    }
}
