//! `PrimaryRouter`: the store as a client sees it, on any replica. Every request is
//! checked against the configured limits, then:
//!
//! - writes are proposed through the replica's driver, which sends them to the leader
//!   (see `replica::driver::router`) and answers when the command is applied;
//! - linearizable reads take a read index from the leader (many concurrent reads share one
//!   quorum round there), wait until this replica has applied it, and read locally;
//! - reads at an explicit version are served by this replica once it has applied that
//!   version;
//! - watches long-poll this replica's change log;
//! - snapshots are taken and read on this replica (`snapshots`).
//!
//! A debug setting ([`PrimaryRouter::with_unsafe_local_reads`]) makes linearizable reads
//! local, and so not linearizable; only `chaos` builds accept it.
//!
//! While no leader is known a request waits up to the driver's `request_timeout_ms`, then
//! fails with `Unavailable` carrying a retry hint.

mod limits;
mod snapshots;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub use limits::{Limits, SNAPSHOT_CHUNK_REPLY_OVERHEAD_BYTES};
pub use snapshots::SnapshotChunk;

use crate::consensus::{Membership, NodeId};
use crate::executor::{
    self, Compare, KeyRange, KeyValue, KvCommand, KvReader, Mutation, RangePage, SessionId,
    WatchPage, WriteOutcome, WriteRequest,
};
use crate::metrics::{GaugeGuard, RouterMetrics};
use crate::replica::{role_name, DriverError, PeerStatus, ReplicaHandle};

/// Errors a client sees; each maps to one typed Thrift exception.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{actual} is over {limit} ({maximum})")]
    LimitExceeded {
        limit: &'static str,
        actual: u64,
        maximum: u64,
    },
    #[error("conflict on key \"{}\"", key.escape_ascii())]
    Conflict { key: Vec<u8> },
    #[error("read version {read_version} is older than the oldest retained {oldest_version}")]
    TooOld {
        read_version: u64,
        oldest_version: u64,
    },
    #[error("history from version {from_version} is compacted; oldest is {oldest_version}")]
    Compacted {
        from_version: u64,
        oldest_version: u64,
    },
    #[error("unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after_ms: u32,
    },
    #[error("internal error: {0}")]
    Internal(String),
    /// This replica no longer holds snapshot `slot` (a newer one replaced it).
    #[error(
        "snapshot {slot} is gone from this replica (a newer snapshot replaced it): take a \
         new snapshot and start over"
    )]
    SnapshotGone { slot: u64 },
    /// A membership request was not carried out (its reason is typed).
    #[error("membership request refused ({}): {}", .0.reason.name(), .0.message)]
    MembershipRefused(crate::wire::AdminRefusal),
}

pub type Result<T> = std::result::Result<T, RouterError>;

/// One member of the cluster as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub peer_address: SocketAddr,
    pub status: Option<PeerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub members: Vec<MemberStatus>,
    pub leader: Option<NodeId>,
    pub ballot: String,
    pub version: u64,
    /// A leader is known, a majority of members answered, and the membership names this
    /// replica at the incarnation it runs.
    pub healthy: bool,
    /// The cluster's name, and the membership the answering replica knows committed.
    pub cluster: String,
    pub membership: Membership,
}

/// A write's result: the commit version, and the 10-byte versionstamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub version: u64,
    pub versionstamp: [u8; 10],
}

#[derive(Clone)]
pub struct PrimaryRouter {
    handle: ReplicaHandle<WriteOutcome>,
    reader: KvReader,
    peers: BTreeMap<NodeId, SocketAddr>,
    limits: Limits,
    /// How long a read at an explicit version waits for this replica to apply it.
    request_timeout: Duration,
    /// The retry hint given with `Unavailable`: about one election.
    retry_after_ms: u32,
    metrics: RouterMetrics,
    /// Debug only (`[debug] unsafe_local_reads`): linearizable reads skip the read index.
    unsafe_local_reads: bool,
}

impl PrimaryRouter {
    pub fn new(
        handle: ReplicaHandle<WriteOutcome>,
        reader: KvReader,
        peers: BTreeMap<NodeId, SocketAddr>,
        limits: Limits,
        request_timeout: Duration,
        retry_after_ms: u32,
    ) -> PrimaryRouter {
        PrimaryRouter {
            handle,
            reader,
            peers,
            limits,
            request_timeout,
            retry_after_ms,
            metrics: RouterMetrics::unregistered(),
            unsafe_local_reads: false,
        }
    }

    /// Serves linearizable reads from this replica's applied state, without asking the
    /// leader: stale on a replica that lags. Breaks linearizability on purpose, so that a
    /// checker can be shown to catch it.
    /// Only a chaos build obeys it: elsewhere the setting is ignored.
    pub fn with_unsafe_local_reads(mut self, on: bool) -> PrimaryRouter {
        self.unsafe_local_reads = cfg!(feature = "chaos") && on;
        self
    }

    /// Records conflicts and open watches in `metrics` (a node's registry).
    pub fn with_metrics(mut self, metrics: RouterMetrics) -> PrimaryRouter {
        self.metrics = metrics;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub async fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        session: Option<SessionId>,
    ) -> Result<Committed> {
        self.limits.check_key(&key)?;
        self.limits.check_value(&value)?;
        let outcome = self
            .write(session, WriteRequest::Put { key, value })
            .await?;
        committed(outcome)
    }

    pub async fn delete(&self, key: Vec<u8>, session: Option<SessionId>) -> Result<Committed> {
        self.limits.check_key(&key)?;
        committed(self.write(session, WriteRequest::Delete { key }).await?)
    }

    pub async fn delete_range(
        &self,
        range: KeyRange,
        session: Option<SessionId>,
    ) -> Result<Committed> {
        self.limits.check_range(&range)?;
        let request = WriteRequest::DeleteRange {
            start: range.start,
            end: range.end,
        };
        committed(self.write(session, request).await?)
    }

    /// A FoundationDB-style commit: `Conflict` if a read conflict range was written after
    /// `read_version`.
    pub async fn commit(
        &self,
        read_version: u64,
        mutations: Vec<Mutation>,
        read_conflict_ranges: Vec<KeyRange>,
        session: Option<SessionId>,
    ) -> Result<Committed> {
        self.limits.check_mutations(&mutations)?;
        self.limits
            .check_ranges("read_conflict_ranges_max", &read_conflict_ranges)?;
        let request = WriteRequest::Commit {
            read_version,
            mutations,
            read_conflict_ranges,
        };
        let result = committed(self.write(session, request).await?);
        if matches!(result, Err(RouterError::Conflict { .. })) {
            self.metrics.txn_conflicts.inc();
        }
        result
    }

    /// An etcd-style conditional write. Returns whether the compares held, and the version.
    pub async fn txn(
        &self,
        compares: Vec<Compare>,
        success: Vec<Mutation>,
        failure: Vec<Mutation>,
        session: Option<SessionId>,
    ) -> Result<(bool, u64)> {
        self.limits.check_compares(&compares)?;
        self.limits.check_mutations(&success)?;
        self.limits.check_mutations(&failure)?;
        let request = WriteRequest::Txn {
            compares,
            success,
            failure,
        };
        match self.write(session, request).await? {
            WriteOutcome::Txn { succeeded, version } => Ok((succeeded, version)),
            other => Err(unexpected(other)),
        }
    }

    async fn write(
        &self,
        session: Option<SessionId>,
        request: WriteRequest,
    ) -> Result<WriteOutcome> {
        if let Some(session) = &session {
            self.limits.check_session(session)?;
        }
        let retry_safe = session.is_some();
        let command = KvCommand::Write { session, request };
        let bytes =
            executor::encode(&command, self.limits.command_bytes_max).map_err(
                |error| match error {
                    executor::Error::CommandTooLarge { command_bytes, .. } => {
                        RouterError::LimitExceeded {
                            limit: "command_bytes_max",
                            actual: command_bytes as u64,
                            maximum: self.limits.command_bytes_max as u64,
                        }
                    }
                    other => RouterError::InvalidArgument(other.to_string()),
                },
            )?;
        let outcome = self.handle.propose(bytes, retry_safe).await;
        outcome.map_err(|error| self.driver_error(error))
    }

    /// A linearizable read version: every write acknowledged before this call is visible
    /// at it.
    pub async fn read_version(&self) -> Result<u64> {
        if self.unsafe_local_reads {
            return Ok(self.reader.applied().current_version);
        }
        // The driver fails the read index itself after request_timeout; the wait for this
        // replica to apply it (it may be partitioned or far behind) is bounded here.
        let read = async {
            let index = self.handle.read_index().await;
            let index = index.map_err(|error| self.driver_error(error))?;
            let applied = self.reader.wait_for_slot(index).await;
            Ok(applied.map_err(|e| self.executor_error(e))?.current_version)
        };
        match tokio::time::timeout(self.request_timeout, read).await {
            Ok(version) => version,
            Err(_) => Err(self.unavailable(
                "this replica did not reach the read point within the request timeout",
            )),
        }
    }

    /// The version to read at: the given one once this replica has applied it, or a
    /// linearizable one.
    async fn version_for_read(&self, read_version: Option<u64>) -> Result<u64> {
        let Some(version) = read_version else {
            return self.read_version().await;
        };
        if self.reader.applied().current_version >= version {
            return Ok(version);
        }
        let waited = tokio::time::timeout(
            self.request_timeout.min(Duration::from_millis(500)),
            self.reader.wait_for_version(version),
        )
        .await;
        if let Ok(applied) = waited {
            applied.map_err(|e| self.executor_error(e))?;
            return Ok(version);
        }
        // Not applied here: is it a version the cluster has committed at all?
        let latest = self.read_version().await?;
        if latest < version {
            return Err(RouterError::InvalidArgument(format!(
                "read version {version} is ahead of the latest committed version {latest}"
            )));
        }
        Ok(version)
    }

    pub async fn get(
        &self,
        key: &[u8],
        read_version: Option<u64>,
    ) -> Result<(Option<KeyValue>, u64)> {
        self.limits.check_key(key)?;
        let version = self.version_for_read(read_version).await?;
        let value = self.reader.get(key, version);
        Ok((value.map_err(|e| self.executor_error(e))?, version))
    }

    pub async fn get_range(
        &self,
        range: &KeyRange,
        limit: usize,
        reverse: bool,
        read_version: Option<u64>,
        continuation: Option<Vec<u8>>,
    ) -> Result<(RangePage, u64)> {
        self.limits.check_range(range)?;
        let version = self.version_for_read(read_version).await?;
        let page = self
            .reader
            .get_range(range, limit, reverse, version, continuation);
        Ok((page.map_err(|e| self.executor_error(e))?, version))
    }

    /// Long poll: the events of `range` from `from_version`, as soon as there is at least
    /// one, or none after `timeout` (capped to `watch_timeout_ms_max`).
    pub async fn watch(
        &self,
        range: &KeyRange,
        from_version: u64,
        timeout: Duration,
    ) -> Result<WatchPage> {
        self.limits.check_range(range)?;
        let _open = GaugeGuard::new(&self.metrics.watches_open);
        let timeout = timeout.min(Duration::from_millis(self.limits.watch_timeout_ms_max));
        let from_version = from_version.max(1);
        let polled = tokio::time::timeout(timeout, self.poll_events(range, from_version)).await;
        let page = match polled {
            Ok(page) => page,
            // Nothing yet: resume from where the change log stands now.
            Err(_) => {
                let page = self.reader.watch_events(range, from_version, 0);
                page.map_err(|e| self.executor_error(e))
            }
        };
        page.map_err(|error| match error {
            RouterError::Compacted { oldest_version, .. } => RouterError::Compacted {
                from_version,
                oldest_version,
            },
            other => other,
        })
    }

    async fn poll_events(&self, range: &KeyRange, from_version: u64) -> Result<WatchPage> {
        let mut from = from_version;
        loop {
            let page = self.reader.watch_events(range, from, 0);
            let page = page.map_err(|e| self.executor_error(e))?;
            // Events, or a scan that ran out of budget before the newest version: either
            // way the caller resumes from next_version without re-scanning.
            let behind = page.next_version <= self.reader.applied().current_version;
            if !page.events.is_empty() || behind {
                return Ok(page);
            }
            // Every version below next_version was examined: wait for a newer one.
            from = page.next_version;
            let waited = self.reader.wait_for_version(from).await;
            waited.map_err(|e| self.executor_error(e))?;
        }
    }

    /// Every member's own view, asked over the peer channel; unreachable ones have none.
    pub async fn status(&self) -> ClusterStatus {
        let own = self.handle.status();
        // The members the driver connects to now; the config's list until it knows them.
        let peers = match own.peers.is_empty() {
            true => self.peers.clone(),
            false => own.peers.clone(),
        };
        let mut asking = tokio::task::JoinSet::new();
        for (&id, &peer_address) in &peers {
            let handle = self.handle.clone();
            asking.spawn(async move {
                let status = handle.peer_status(id).await.ok();
                MemberStatus {
                    id,
                    peer_address,
                    status,
                }
            });
        }
        let mut members = asking.join_all().await;
        members.sort_by_key(|member| member.id);
        let answered = members.iter().filter(|m| m.status.is_some()).count();
        ClusterStatus {
            members,
            leader: own.leader,
            ballot: own.ballot.to_string(),
            version: self.reader.applied().current_version,
            // A replica the membership does not name at its incarnation (it lost its disk,
            // or is new) is not healthy until an operator adds it.
            healthy: own.leader.is_some()
                && own.stopped.is_none()
                && answered * 2 > peers.len()
                && (own.membership.get(own.id)).is_some_and(|m| m.incarnation == own.incarnation),
            cluster: own.cluster,
            membership: own.membership,
        }
    }

    pub fn id(&self) -> NodeId {
        self.handle.id()
    }

    /// An operator's membership request, carried out by the leader (see
    /// `replica::driver`'s admin module).
    pub async fn admin(
        &self,
        request: crate::wire::AdminRequest,
    ) -> Result<crate::wire::MembershipView> {
        match self.handle.admin(request).await {
            Ok(Ok(view)) => Ok(view),
            Ok(Err(refusal)) => Err(RouterError::MembershipRefused(refusal)),
            Err(error) => Err(self.driver_error(error)),
        }
    }

    pub fn role(&self) -> String {
        role_name(self.handle.status().role)
    }

    fn unavailable(&self, message: impl Into<String>) -> RouterError {
        RouterError::Unavailable {
            message: message.into(),
            retry_after_ms: self.retry_after_ms,
        }
    }

    fn driver_error(&self, error: DriverError) -> RouterError {
        match error {
            DriverError::Busy(reason) => self.unavailable(format!("busy: {reason}")),
            DriverError::NoLeader => {
                self.unavailable("no leader within the request timeout; nothing was applied")
            }
            DriverError::OutcomeUnknown => self.unavailable(
                "leadership changed or the leader is unreachable: the write may or may not \
                 have been applied (retry with the same session to apply it exactly once)",
            ),
            DriverError::Rejected(reason) => RouterError::InvalidArgument(reason),
            DriverError::PeerUnreachable(peer) => {
                self.unavailable(format!("peer {peer} unreachable"))
            }
            DriverError::Stopped(reason) => self.unavailable(format!("replica stopped: {reason}")),
        }
    }

    fn executor_error(&self, error: executor::Error) -> RouterError {
        match error {
            executor::Error::TooOld {
                read_version,
                oldest_version,
            } => RouterError::TooOld {
                read_version,
                oldest_version,
            },
            executor::Error::Compacted { oldest_version } => RouterError::Compacted {
                from_version: 0,
                oldest_version,
            },
            executor::Error::InvalidArgument(message) => RouterError::InvalidArgument(message),
            executor::Error::NotYetApplied { .. } => self.unavailable(error.to_string()),
            executor::Error::Closed => self.unavailable("the replica has stopped"),
            other => RouterError::Internal(other.to_string()),
        }
    }
}

fn committed(outcome: WriteOutcome) -> Result<Committed> {
    match outcome {
        WriteOutcome::Committed {
            version,
            versionstamp,
        } => Ok(Committed {
            version,
            versionstamp,
        }),
        WriteOutcome::Conflict { key } => Err(RouterError::Conflict { key }),
        WriteOutcome::TooOld {
            read_version,
            oldest_version,
        } => Err(RouterError::TooOld {
            read_version,
            oldest_version,
        }),
        WriteOutcome::Rejected { reason } => Err(RouterError::InvalidArgument(reason)),
        other @ WriteOutcome::Txn { .. } => Err(unexpected(other)),
    }
}

fn unexpected(outcome: WriteOutcome) -> RouterError {
    match outcome {
        WriteOutcome::Rejected { reason } => RouterError::InvalidArgument(reason),
        other => RouterError::Internal(format!("unexpected outcome {other:?}")),
    }
}
