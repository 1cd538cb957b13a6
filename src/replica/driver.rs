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
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::log_store::{LogStore, LogStoreError};
use super::transport::{Deliver, Transport, TransportOptions};
use crate::consensus::{
    self, Ballot, Config, Membership, NodeId, ReadState, Ready, Replica, Role, Slot, Value,
};
use crate::metrics::{saturating_i64, ReplicaMetrics};
use crate::snapshot::{stream, Catalog, SharedCatalog, SnapshotInfo};
use crate::wire::{AdminRefusal, AdminRequest, MembershipView, PeerMessage, PeerStatus};
use paxkv_wal::WalOptions;

mod admin;
mod divergence;
mod router;
mod snapshots;

/// What the log is applied to. Applying must be deterministic, and the machine must keep
/// its applied slot durable together with the data (so `applied_slot` survives a crash).
/// Outcomes are serializable because a leader reports the outcome of a forwarded command
/// to the replica that forwarded it.
pub trait StateMachine: Send + 'static {
    type Outcome: Send + Serialize + DeserializeOwned + 'static;
    fn applied_slot(&self) -> Slot;
    /// Apply every command of `slot` (none for a no-op), returning one outcome per command.
    /// An error (the disk failed) stops the replica: it must not go on without the slot.
    fn apply_slot(
        &mut self,
        slot: Slot,
        commands: &[&[u8]],
    ) -> Result<Vec<Self::Outcome>, ApplyError>;

    /// Apply a slot that holds `membership` instead of commands, recording it durably with
    /// the slot (so a snapshot of the machine carries it; see `membership`). The default
    /// applies an empty slot and records nothing.
    fn apply_membership(&mut self, slot: Slot, membership: &Membership) -> Result<(), ApplyError> {
        let _ = membership;
        self.apply_slot(slot, &[]).map(|_| ())
    }

    /// The digest of the machine's state at `applied_slot` and the slot its chain starts
    /// after, if it keeps one: equal on replicas that applied the same slots the same way
    /// (see `driver::divergence`).
    fn digest(&self) -> Option<(Slot, divergence::Digest)> {
        None
    }

    /// Record `membership` at the applied slot without applying a slot: only when a new
    /// cluster is created from restored data (every replica seeds the same bootstrap
    /// membership), so its snapshots stop naming the cluster the backup came from.
    fn seed_membership(&mut self, membership: &Membership) -> Result<(), ApplyError> {
        let _ = membership;
        Ok(())
    }

    /// The membership recorded by the last `apply_membership` (or carried in by an
    /// installed snapshot): the one governing the slots after `applied_slot`. `None` if
    /// the machine records none.
    fn membership(&self) -> Result<Option<Membership>, ApplyError> {
        Ok(None)
    }

    /// Something to run on another thread that writes a consistent checkpoint of the
    /// machine into a new directory, makes the live state durable through the
    /// checkpoint's slot, and returns that slot and the machine's version there. `None`: the
    /// machine takes no snapshots (and the log is never compacted).
    fn checkpointer(&mut self) -> Option<Checkpointer> {
        None
    }

    /// Where a snapshot from a peer is unpacked before `install_checkpoint`.
    fn staging_dir(&self) -> Option<PathBuf> {
        None
    }

    /// Replace the whole machine, atomically, with the checkpoint unpacked in `staged`;
    /// returns its applied slot. A crash meanwhile must leave the old state usable. An
    /// error is `InstallInterrupted` if the switch may have reached the disk.
    fn install_checkpoint(&mut self, staged: &Path) -> Result<Slot, ApplyError> {
        let _ = staged;
        Err("this state machine installs no snapshots".into())
    }
}

/// See `StateMachine::checkpointer`.
pub type Checkpointer = Box<dyn FnOnce(&Path) -> Result<(Slot, u64), ApplyError> + Send>;

/// When a replica snapshots, and how snapshots travel between replicas.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    /// Where the snapshot files live (`None`: this replica takes none and never compacts).
    pub dir: Option<PathBuf>,
    /// Take one after this many applied slots since the last (0: never by slots).
    pub interval_slots: u64,
    /// Take one after this many WAL bytes since the last (0: never by bytes).
    pub interval_wal_bytes: u64,
    /// Slots kept in the log below a new snapshot, so that a follower a little behind
    /// catches up from the log rather than by a snapshot transfer.
    pub retain_slots: u64,
    /// And at most this many bytes of commands.
    pub retain_bytes: u64,
    /// Snapshot files kept.
    pub keep: usize,
    /// After a failed snapshot, how long before the next try.
    pub retry_ms: u64,
    pub stream: stream::StreamOptions,
}

impl Default for SnapshotOptions {
    fn default() -> SnapshotOptions {
        SnapshotOptions {
            dir: None,
            interval_slots: 100_000,
            interval_wal_bytes: 128 << 20,
            retain_slots: 10_000,
            retain_bytes: 32 << 20,
            keep: 2,
            retry_ms: 5_000,
            stream: stream::StreamOptions::default(),
        }
    }
}

/// Why a state machine could not apply a slot.
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

/// An `install_checkpoint` error after which the machine's state on disk is not known (the
/// switch to the new state may or may not have reached the disk): the replica stops, and
/// its next start finds out which.
#[derive(Debug, thiserror::Error)]
#[error("a snapshot install was interrupted: {0}")]
pub struct InstallInterrupted(pub String);

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
    /// How long a proposal or read waits for a leader and its answer before it fails
    /// with `NoLeader` or `OutcomeUnknown`.
    pub request_timeout_ms: u64,
    /// How long a `peer_status` call waits for the peer.
    pub status_timeout_ms: u64,
    /// Commands other replicas forwarded to this leader and not yet applied; beyond it
    /// forwarded proposals are refused as busy.
    pub forwarded_max: usize,
    /// Where the driver records what it measures; unregistered unless a node passes its own.
    pub metrics: ReplicaMetrics,
    /// Debug only (`[debug] unsafe_skip_fsync`): records are acknowledged once written to
    /// the page cache, without fdatasync. Breaks durability on power loss, on purpose.
    pub unsafe_skip_fsync: bool,
    pub snapshot: SnapshotOptions,
    /// This start creates the cluster (`--bootstrap`): the consensus config's members are
    /// the membership, whatever a restored state machine recorded.
    pub bootstrap: bool,
    /// Where a replica whose state diverged from a majority's writes why, fsynced, before
    /// it stops; a start that finds the file refuses (`StartError::Diverged`). `None`: no
    /// file.
    pub divergence_marker: Option<PathBuf>,
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
            request_timeout_ms: 5_000,
            status_timeout_ms: 500,
            forwarded_max: 65_536,
            metrics: ReplicaMetrics::unregistered(),
            unsafe_skip_fsync: false,
            snapshot: SnapshotOptions::default(),
            bootstrap: false,
            divergence_marker: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// Queues are full. Try again later.
    #[error("replica busy: {0}")]
    Busy(String),
    /// No leader took the request within `request_timeout_ms`: nothing was proposed.
    #[error("no leader within the request timeout; nothing was proposed")]
    NoLeader,
    /// The command was proposed but its outcome was not learned in time (leadership
    /// changed, or the leader became unreachable): it may or may not commit. Retry with the
    /// same session to learn which, exactly once.
    #[error("the outcome is unknown: leadership changed or the leader is unreachable")]
    OutcomeUnknown,
    #[error("command rejected: {0}")]
    Rejected(String),
    #[error("peer {0} did not answer")]
    PeerUnreachable(NodeId),
    #[error("replica stopped: {0}")]
    Stopped(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
    #[error(transparent)]
    Consensus(#[from] consensus::Error),
    #[error("opening the snapshot directory: {0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("spawning the driver thread: {0}")]
    Spawn(std::io::Error),
    #[error("reading the state machine's membership: {0}")]
    Machine(ApplyError),
    #[error(
        "{path} says this replica's applied state diverged from its peers' ({reason}). It \
         must not serve: rebuild it as a replica that lost its disk (docs/operations.md, \
         Replacing a failed machine)"
    )]
    Diverged { path: String, reason: String },
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
    /// The log holds no slot up to here (a snapshot covers them).
    pub compacted: Slot,
    /// The newest snapshot file's slot; 0 if none.
    pub snapshot_slot: Slot,
    pub stopped: Option<String>,
    /// The cluster this replica belongs to.
    pub cluster: String,
    /// The membership that governs the slot after `commit_index`, as this replica knows it.
    pub membership: Membership,
    /// Every member's peer address (this replica's too), as the transport uses them.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// This replica's member incarnation (its `IDENTITY`).
    pub incarnation: u64,
}

impl ReplicaStatus {
    pub fn to_peer_status(&self) -> PeerStatus {
        PeerStatus {
            role: match &self.stopped {
                Some(_) => "stopped".to_string(),
                None => role_name(self.role),
            },
            leader: self.leader,
            ballot: self.ballot.to_string(),
            commit_index: self.commit_index,
            applied_slot: self.applied_slot,
            incarnation: self.incarnation,
        }
    }
}

pub fn role_name(role: Option<Role>) -> String {
    match role {
        None => "starting",
        Some(Role::Follower) => "follower",
        Some(Role::PreCandidate) => "pre-candidate",
        Some(Role::Candidate) => "candidate",
        Some(Role::Leader) => "leader",
    }
    .to_string()
}

/// Wraps every proposed command so the replica that took it from a client can match it
/// when it commits, on its own apply or on the leader's report. `incarnation` tells this
/// run of the replica from earlier ones, whose sequences restarted at 1.
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: NodeId,
    incarnation: u64,
    sequence: u64,
    command: Vec<u8>,
}

fn envelope_codec() -> impl Options + Copy {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}

enum Input<O> {
    Peer(PeerMessage),
    Propose {
        command: Vec<u8>,
        retry_safe: bool,
        reply: Reply<O>,
    },
    ReadIndex {
        reply: Reply<Slot>,
    },
    PeerStatus {
        peer: NodeId,
        reply: Reply<PeerStatus>,
    },
    Snapshot {
        min_slot: Slot,
        reply: Reply<SnapshotInfo>,
    },
    SnapshotTaken {
        taken: snapshots::Taken,
        elapsed: Duration,
    },
    SnapshotFetched {
        fetched: snapshots::Fetched,
    },
    Admin {
        request: AdminRequest,
        reply: admin::AdminReply,
    },
    Stop,
}

/// Handle to a running replica. Clone it freely.
pub struct ReplicaHandle<O> {
    id: NodeId,
    inputs: SyncSender<Input<O>>,
    status: Arc<Mutex<ReplicaStatus>>,
    catalog: Option<SharedCatalog>,
}

impl<O> Clone for ReplicaHandle<O> {
    fn clone(&self) -> Self {
        ReplicaHandle {
            id: self.id,
            inputs: self.inputs.clone(),
            status: self.status.clone(),
            catalog: self.catalog.clone(),
        }
    }
}

impl<O: Send + 'static> ReplicaHandle<O> {
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Propose `command` through whichever replica leads (this one, or the leader it is
    /// forwarded to); resolves with its outcome once it is applied. `retry_safe` says the
    /// command may be proposed twice (it carries a session, so a second copy is a no-op):
    /// then a leader change re-sends it to the new leader instead of waiting to learn
    /// whether the old leader got it chosen.
    pub async fn propose(&self, command: Vec<u8>, retry_safe: bool) -> Result<O, DriverError> {
        let (reply, outcome) = oneshot::channel();
        self.enqueue(Input::Propose {
            command,
            retry_safe,
            reply,
        })?;
        outcome.await.map_err(|_| stopped())?
    }

    /// A linearizable read point: resolves once the leader had a quorum confirm its
    /// leadership after this call began, and this replica has applied the returned slot.
    /// Reads of local state after that are linearizable. Works on any replica: followers
    /// ask the leader for the index.
    pub async fn read_index(&self) -> Result<Slot, DriverError> {
        let (reply, index) = oneshot::channel();
        self.enqueue(Input::ReadIndex { reply })?;
        index.await.map_err(|_| stopped())?
    }

    /// Asks replica `peer` for its status over the peer channel.
    pub async fn peer_status(&self, peer: NodeId) -> Result<PeerStatus, DriverError> {
        if peer == self.id {
            return Ok(self.status().to_peer_status());
        }
        let (reply, status) = oneshot::channel();
        self.enqueue(Input::PeerStatus { peer, reply })?;
        status.await.map_err(|_| stopped())?
    }

    pub fn status(&self) -> ReplicaStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Takes a snapshot now, after a linearizable read point (so it holds every write
    /// acknowledged before the call), and resolves once its file is durable. If the newest
    /// snapshot already covers everything applied, that one.
    pub async fn snapshot(&self) -> Result<SnapshotInfo, DriverError> {
        let min_slot = self.read_index().await?;
        let (reply, info) = oneshot::channel();
        self.enqueue(Input::Snapshot { min_slot, reply })?;
        info.await.map_err(|_| stopped())?
    }

    /// The snapshot file `slot` this replica still holds, if any.
    pub fn snapshot_file(&self, slot: Slot) -> Option<SnapshotInfo> {
        let catalog = self.catalog.as_ref()?.lock().expect("catalog lock");
        catalog.get(slot).cloned()
    }

    /// Carries out an operator's membership request through the leader (see
    /// `driver::admin`). The outer error: the request did not reach the driver.
    pub async fn admin(
        &self,
        request: AdminRequest,
    ) -> Result<Result<MembershipView, AdminRefusal>, DriverError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Input::Admin { request, reply })?;
        answer.await.map_err(|_| stopped())
    }

    /// This replica's newest snapshot file, if any.
    pub fn latest_snapshot(&self) -> Option<SnapshotInfo> {
        let catalog = self.catalog.as_ref()?.lock().expect("catalog lock");
        catalog.latest().cloned()
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
        // Blocks while the input queue is full (the driver keeps draining it); fails at once
        // if the driver has already stopped.
        let _ = self.handle.inputs.send(Input::Stop);
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
    if let Some(path) = &options.divergence_marker {
        if let Ok(reason) = std::fs::read_to_string(path) {
            return Err(StartError::Diverged {
                path: path.display().to_string(),
                reason: reason.trim().to_string(),
            });
        }
    }
    let (store, state) = LogStore::open(data_dir, options.wal.clone())?;
    let incarnation = seed(id);
    // A new cluster from restored data takes its membership from the config, not from the
    // cluster the backup came from.
    let mut machine = machine;
    let recorded = machine.membership().map_err(StartError::Machine)?;
    let machine_membership = match options.bootstrap {
        true => None,
        false => recorded.clone(),
    };
    let replica = Replica::restore_machine(
        options.consensus.clone(),
        incarnation,
        state,
        machine.applied_slot(),
        machine_membership,
    )?;
    if options.bootstrap && recorded.is_some() {
        let bootstrap = replica.committed_membership().clone();
        machine
            .seed_membership(&bootstrap)
            .map_err(StartError::Machine)?;
    }
    let (inputs, receiver) = mpsc::sync_channel(options.inputs_queued_max);
    let message_inputs = inputs.clone();
    let deliver: Deliver = Arc::new(move |message| {
        // A full queue drops the message, as a lossy network would.
        let _ = message_inputs.try_send(Input::Peer(message));
    });
    let (stop_transport, transport_shutdown) = watch::channel(false);
    let catalog = match &options.snapshot.dir {
        Some(dir) => Some(Catalog::open(dir)?),
        None => None,
    };
    let snapshots = snapshots::Snapshots::new(catalog);
    let sender = snapshots.catalog.clone().map(|catalog| {
        let stream = options.snapshot.stream.clone();
        stream::Sender::new(catalog, stream, options.metrics.clone())
    });
    let bootstrap_addrs = peers.clone();
    let transport = Transport::start(
        id,
        listener,
        peers,
        deliver,
        options.transport.clone(),
        transport_shutdown.clone(),
        sender,
    );
    let status = Arc::new(Mutex::new(ReplicaStatus {
        id,
        cluster: options.transport.cluster.clone(),
        peers: bootstrap_addrs.clone(),
        incarnation: options.consensus.incarnation,
        // The membership is filled in by the driver's first publish_status, which also sets
        // its gauges.
        ..ReplicaStatus::default()
    }));
    let catalog = snapshots.catalog.clone();
    let mut divergence = divergence::Divergence::default();
    if let Some(digest) = machine.digest() {
        divergence.restart(machine.applied_slot(), digest);
    }
    let driver = Driver {
        divergence,
        id,
        incarnation,
        snapshots,
        inputs: inputs.clone(),
        runtime: tokio::runtime::Handle::current(),
        shutdown: transport_shutdown,
        replica,
        store,
        machine,
        transport,
        options,
        status: status.clone(),
        ticks: 0,
        next_sequence: 1,
        leadership: None,
        last_leadership: None,
        proposals: BTreeMap::new(),
        reads: BTreeMap::new(),
        reads_waiting_apply: BTreeMap::new(),
        forwarded: BTreeMap::new(),
        forwarded_reads: BTreeMap::new(),
        status_requests: BTreeMap::new(),
        admin_requests: BTreeMap::new(),
        admin_committing: Vec::new(),
        peer_addrs: bootstrap_addrs.clone(),
        bootstrap_addrs,
    };
    let thread = std::thread::Builder::new()
        .name(format!("paxkv-replica-{id}"))
        .spawn(move || driver.run(receiver))
        .map_err(StartError::Spawn)?;
    let handle = ReplicaHandle {
        id,
        inputs,
        status,
        catalog,
    };
    Ok(ReplicaNode {
        handle,
        thread: Some(thread),
        stop_transport,
    })
}

/// Seeds the core's election timeouts and names this run of the replica (its envelope
/// incarnation); distinct per replica and per start.
fn seed(id: NodeId) -> u64 {
    // Wall time only seeds timeouts and tells runs apart; no decision depends on its value.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    now ^ (u64::from(id) << 56)
}

type Reply<T> = oneshot::Sender<Result<T, DriverError>>;

/// Where a request of this replica's clients went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// No leader known yet (or the leader refused it): sent again on the next tick.
    Waiting,
    /// Proposed to (or read from) this replica's own core.
    Local,
    /// Sent to this peer, believed to lead.
    Forwarded(NodeId),
}

struct Proposal<O> {
    reply: Reply<O>,
    envelope: Vec<u8>,
    retry_safe: bool,
    /// In ticks.
    deadline: u64,
    route: Route,
    /// Copies sent to a core (this one, or a leader's) that were not refused: while any
    /// is, the proposal may be chosen even if it is waiting again now.
    copies: u32,
    /// For the commit latency metric only.
    proposed_at: Instant,
}

struct PendingRead {
    reply: Reply<Slot>,
    deadline: u64,
    route: Route,
}

type StatusRequest = (Reply<PeerStatus>, u64, NodeId);

/// Identifies a command across replicas: (origin, incarnation, sequence).
type CommandId = (NodeId, u64, u64);

struct Driver<M: StateMachine> {
    id: NodeId,
    incarnation: u64,
    snapshots: snapshots::Snapshots,
    /// The driver's own queue, for its snapshot job and fetch to report to.
    inputs: SyncSender<Input<M::Outcome>>,
    runtime: tokio::runtime::Handle,
    /// Turns true when the replica stops; ends a snapshot fetch.
    shutdown: watch::Receiver<bool>,
    replica: Replica,
    store: LogStore,
    machine: M,
    transport: Transport,
    options: DriverOptions,
    status: Arc<Mutex<ReplicaStatus>>,
    /// Logical time: ticks since start. Deadlines are in ticks.
    ticks: u64,
    next_sequence: u64,
    /// The leader and its ballot as of the last Ready, to notice changes.
    leadership: Option<(NodeId, Ballot)>,
    /// The last leader known (never reset to none), to count leader changes.
    last_leadership: Option<(NodeId, Ballot)>,
    /// This replica's clients' proposals, by sequence.
    proposals: BTreeMap<u64, Proposal<M::Outcome>>,
    /// This replica's clients' reads, by context.
    reads: BTreeMap<u64, PendingRead>,
    reads_waiting_apply: BTreeMap<Slot, Vec<Reply<Slot>>>,
    /// As leader: commands forwarded by peers, to report their outcomes; value: deadline.
    forwarded: BTreeMap<CommandId, u64>,
    /// As leader: read-index requests of peers, by this core's context:
    /// (peer, its incarnation, its context). At most `forwarded_max`.
    forwarded_reads: BTreeMap<u64, (NodeId, u64, u64)>,
    /// `peer_status` calls waiting for their peer, by context: (reply, deadline, peer).
    status_requests: BTreeMap<u64, StatusRequest>,
    /// This replica's operators' membership requests, by context.
    admin_requests: BTreeMap<u64, admin::PendingAdmin>,
    /// As leader: membership changes proposed and not yet committed.
    admin_committing: Vec<admin::Committing>,
    /// The peers the transport connects to now (this replica included).
    peer_addrs: BTreeMap<NodeId, SocketAddr>,
    /// The config's members: the addresses of members the membership names none for.
    bootstrap_addrs: BTreeMap<NodeId, SocketAddr>,
    /// Digests of the state applied lately, compared with peers'.
    divergence: divergence::Divergence,
}

impl<M: StateMachine> Driver<M> {
    fn run(mut self, inputs: mpsc::Receiver<Input<M::Outcome>>) {
        let tick = Duration::from_millis(self.options.tick_ms);
        // Wall time becomes logical ticks here and nowhere else.
        #[allow(clippy::disallowed_methods)]
        let mut next_tick = Instant::now() + tick;
        self.publish_status();
        loop {
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            let first = match inputs.recv_timeout(next_tick.saturating_duration_since(now)) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return self.stop(HANDLES_DROPPED),
            };
            let more = std::iter::from_fn(|| inputs.try_recv().ok());
            for input in first
                .into_iter()
                .chain(more)
                .take(self.options.inputs_per_ready_max)
            {
                if !self.on_input(input) {
                    return self.stop(STOP_REQUESTED);
                }
                if let Some(reason) = self.snapshots.take_fatal() {
                    return self.stop(&reason);
                }
            }
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            if now >= next_tick {
                self.on_tick();
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
            Input::Peer(PeerMessage::Consensus(message)) => self.replica.step(message),
            Input::Peer(PeerMessage::Router { from, body, .. }) => self.on_router(from, body),
            Input::Propose {
                command,
                retry_safe,
                reply,
            } => self.on_propose(command, retry_safe, reply),
            Input::ReadIndex { reply } => self.on_read_index(reply),
            Input::PeerStatus { peer, reply } => self.on_peer_status(peer, reply),
            Input::Snapshot { min_slot, reply } => self.on_snapshot_request(min_slot, reply),
            Input::SnapshotTaken { taken, elapsed } => self.on_snapshot_taken(taken, elapsed),
            Input::SnapshotFetched { fetched } => self.on_snapshot_fetched(fetched),
            Input::Admin { request, reply } => self.on_admin(request, reply),
            Input::Stop => return false,
        }
        true
    }

    fn on_tick(&mut self) {
        self.replica.tick();
        self.ticks += 1;
        self.expire_requests();
        self.dispatch_waiting();
        self.tick_admin();
        if self.ticks % divergence::REPORT_EVERY_TICKS == 0 {
            self.report_digests();
        }
    }

    fn deadline(&self, timeout_ms: u64) -> u64 {
        self.ticks + timeout_ms.div_ceil(self.options.tick_ms.max(1))
    }

    fn take_sequence(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    fn on_propose(&mut self, command: Vec<u8>, retry_safe: bool, reply: Reply<M::Outcome>) {
        let sequence = self.take_sequence();
        let envelope = Envelope {
            origin: self.id,
            incarnation: self.incarnation,
            sequence,
            command,
        };
        let envelope = envelope_codec()
            .serialize(&envelope)
            .expect("envelope encodes");
        let proposal = Proposal {
            reply,
            envelope,
            retry_safe,
            deadline: self.deadline(self.options.request_timeout_ms),
            route: Route::Waiting,
            copies: 0,
            proposed_at: metrics_now(),
        };
        self.options.metrics.proposals.inc();
        self.proposals.insert(sequence, proposal);
        self.dispatch_proposal(sequence);
    }

    fn on_read_index(&mut self, reply: Reply<Slot>) {
        let context = self.take_sequence();
        let read = PendingRead {
            reply,
            deadline: self.deadline(self.options.request_timeout_ms),
            route: Route::Waiting,
        };
        self.reads.insert(context, read);
        self.dispatch_read(context);
    }

    /// The Ready loop; an error (a failed WAL write or fsync) stops the replica.
    fn drive(&mut self) -> Result<(), String> {
        while self.replica.has_ready() {
            let ready = self.replica.ready();
            self.handle_ready(ready)?;
        }
        self.maybe_start_snapshot();
        self.answer_admin_committed();
        self.refresh_peers();
        self.publish_status();
        Ok(())
    }

    fn handle_ready(&mut self, mut ready: Ready) -> Result<(), String> {
        for message in std::mem::take(&mut ready.messages) {
            self.transport.send(PeerMessage::Consensus(message));
        }
        if !ready.records.is_empty() {
            self.persist(&ready.records)?;
        }
        for message in std::mem::take(&mut ready.persisted_messages) {
            if message.to == self.id {
                self.replica.step(message);
            } else {
                self.transport.send(PeerMessage::Consensus(message));
            }
        }
        for (slot, value) in std::mem::take(&mut ready.committed) {
            self.apply(slot, &value)
                .map_err(|error| format!("applying slot {slot}: {error}"))?;
        }
        for read in std::mem::take(&mut ready.read_states) {
            self.on_read_state(read);
        }
        if ready.soft_state.is_some() {
            self.on_leader_maybe_changed();
        }
        if let Some(wanted) = ready.snapshot_wanted.take() {
            self.on_snapshot_wanted(wanted);
        }
        self.replica.advance(ready);
        Ok(())
    }

    /// Appends and fsyncs, timing each step.
    fn persist(&mut self, records: &[consensus::Record]) -> Result<(), String> {
        let metrics = &self.options.metrics;
        let started = metrics_now();
        let compacted = self.store.append(records).map_err(|e| e.to_string())?;
        let appended = metrics_now();
        metrics
            .wal_append_duration
            .observe((appended - started).as_secs_f64());
        // Only a chaos build obeys it, whoever set the option.
        if cfg!(feature = "chaos") && self.options.unsafe_skip_fsync {
            // The fsync histogram stays empty, so a scrape shows that nothing was synced.
            self.store.flush().map_err(|e| e.to_string())?;
        } else {
            self.store.sync().map_err(|e| e.to_string())?;
            metrics
                .wal_fsync_duration
                .observe(appended.elapsed().as_secs_f64());
        }
        // The records after the Compacted one restate what the log keeps, durably now:
        // what came before them is no longer needed.
        if let Some(lsn) = compacted {
            self.store.compact_before(lsn).map_err(|e| e.to_string())?;
            let appended = self.store.appended_bytes();
            self.snapshots.wal_bytes_counted_from(appended);
        }
        Ok(())
    }

    fn apply(&mut self, slot: Slot, value: &Value) -> Result<(), ApplyError> {
        if let Value::Membership(membership) = value {
            self.machine.apply_membership(slot, membership)?;
            self.record_digest(slot);
            self.answer_reads_applied(slot);
            return Ok(());
        }
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
        let started = metrics_now();
        let outcomes = self.machine.apply_slot(slot, &commands)?;
        self.record_digest(slot);
        self.record_applied(started, commands.len());
        assert_eq!(outcomes.len(), envelopes.len(), "one outcome per command");
        for (envelope, outcome) in envelopes.iter().zip(outcomes) {
            self.on_applied(envelope, outcome);
        }
        self.answer_reads_applied(slot);
        Ok(())
    }

    /// Answers the reads that waited for `slot` (or an earlier one) to be applied.
    fn answer_reads_applied(&mut self, slot: Slot) {
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
    }

    fn record_applied(&self, started: Instant, commands: usize) {
        let metrics = &self.options.metrics;
        metrics
            .apply_duration
            .observe(started.elapsed().as_secs_f64());
        if commands > 0 {
            metrics.slot_commands.observe(commands as f64);
            metrics.commits.inc_by(commands as u64);
        }
    }

    /// Answers whoever waits on an applied command: this replica's client, or the peer
    /// that forwarded it here.
    fn on_applied(&mut self, envelope: &Envelope, outcome: M::Outcome) {
        if envelope.origin == self.id && envelope.incarnation == self.incarnation {
            if let Some(proposal) = self.proposals.remove(&envelope.sequence) {
                self.answer_proposal(proposal, Ok(outcome));
            }
            return;
        }
        let id = (envelope.origin, envelope.incarnation, envelope.sequence);
        if self.forwarded.remove(&id).is_some() {
            self.send_outcome(envelope, &outcome);
        }
    }

    /// A read index is ready: answer once this replica has applied up to it.
    fn on_read_state(&mut self, read: ReadState) {
        if let Some((peer, incarnation, context)) = self.forwarded_reads.remove(&read.context) {
            self.send_read_index_reply(peer, incarnation, context, read.index);
            return;
        }
        self.on_read_index_known(read.context, read.index);
    }

    fn on_read_index_known(&mut self, context: u64, index: Slot) {
        let Some(read) = self.reads.remove(&context) else {
            return;
        };
        if self.machine.applied_slot() >= index {
            let _ = read.reply.send(Ok(index));
        } else {
            self.reads_waiting_apply
                .entry(index)
                .or_default()
                .push(read.reply);
        }
    }

    /// A proposal of this replica's client got its outcome: the end of its commit latency.
    fn answer_proposal(
        &self,
        proposal: Proposal<M::Outcome>,
        outcome: Result<M::Outcome, DriverError>,
    ) {
        let elapsed = proposal.proposed_at.elapsed().as_secs_f64();
        self.options.metrics.commit_duration.observe(elapsed);
        let _ = proposal.reply.send(outcome);
    }

    fn publish_status(&self) {
        let soft = self.replica.soft_state();
        let commit_index = self.replica.commit_index();
        let applied_slot = self.machine.applied_slot();
        let metrics = &self.options.metrics;
        metrics.ballot_round.set(saturating_i64(soft.ballot.round));
        metrics.leader_id.set(i64::from(soft.leader.unwrap_or(0)));
        metrics.is_leader.set(i64::from(soft.role == Role::Leader));
        metrics.commit_index.set(saturating_i64(commit_index));
        metrics.applied_slot.set(saturating_i64(applied_slot));
        let compacted = self.replica.compacted();
        let snapshot_slot = self.snapshots.latest_slot();
        metrics.compacted_slot.set(saturating_i64(compacted));
        metrics.snapshot_slot.set(saturating_i64(snapshot_slot));
        let mut status = self.status.lock().expect("status lock");
        status.role = Some(soft.role);
        status.leader = soft.leader;
        status.ballot = soft.ballot;
        status.commit_index = commit_index;
        status.applied_slot = applied_slot;
        status.compacted = compacted;
        status.snapshot_slot = snapshot_slot;
        let membership = self.replica.committed_membership();
        if status.membership != *membership {
            status.membership = membership.clone();
            let voters = membership.voter_count();
            let learners = membership.members.len() - voters;
            metrics.membership_voters.set(saturating_i64(voters as u64));
            metrics
                .membership_learners
                .set(saturating_i64(learners as u64));
            tracing::info!(replica = self.id, %membership, "committed membership");
        }
        let refused = self.replica.refused_messages();
        let counted = metrics.refused_messages.get();
        if refused > counted {
            metrics.refused_messages.inc_by(refused - counted);
            // At 1, 2, 4, 8, ... refusals: a sender that keeps trying is logged, not flooded.
            if (counted + 1..=refused).any(u64::is_power_of_two) {
                tracing::warn!(
                    replica = self.id,
                    refused,
                    "consensus messages from a member at another incarnation refused so far"
                );
            }
        }
    }

    fn stop(mut self, reason: &str) {
        match reason {
            STOP_REQUESTED | HANDLES_DROPPED => {
                tracing::info!(replica = self.id, reason, "replica driver stopping")
            }
            _ => tracing::error!(replica = self.id, reason, "replica driver stopping"),
        }
        let error = DriverError::Stopped(reason.to_string());
        for (_, proposal) in std::mem::take(&mut self.proposals) {
            let error = match proposal.copies > 0 {
                true => DriverError::OutcomeUnknown,
                false => error.clone(),
            };
            let _ = proposal.reply.send(Err(error));
        }
        for (_, read) in std::mem::take(&mut self.reads) {
            let _ = read.reply.send(Err(error.clone()));
        }
        for reply in std::mem::take(&mut self.reads_waiting_apply)
            .into_values()
            .flatten()
        {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, (reply, _, _)) in std::mem::take(&mut self.status_requests) {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in self.snapshots.take_waiting() {
            let _ = reply.send(Err(error.clone()));
        }
        self.status.lock().expect("status lock").stopped = Some(reason.to_string());
    }
}

/// The stop reasons of a replica stopped on purpose; any other reason is a failure.
const STOP_REQUESTED: &str = "stopped";
const HANDLES_DROPPED: &str = "all handles dropped";

/// Wall time for metrics only: no decision of the driver depends on it.
#[allow(clippy::disallowed_methods)]
fn metrics_now() -> Instant {
    Instant::now()
}

fn driver_error(error: consensus::Error) -> DriverError {
    match error {
        consensus::Error::NotLeader { .. } => DriverError::NoLeader,
        consensus::Error::ProposalQueueFull { .. } => DriverError::Busy(error.to_string()),
        other => DriverError::Rejected(other.to_string()),
    }
}
