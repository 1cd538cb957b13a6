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
pub mod sessions;
mod snapshots;
mod uploads;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub use limits::{Limits, SNAPSHOT_CHUNK_REPLY_OVERHEAD_BYTES};
pub use snapshots::SnapshotChunk;
pub use uploads::{UploadCommit, UploadStaged};

use crate::consensus::{Membership, NodeId};
use crate::executor::document::{self, InvalidJson};
use crate::executor::{
    self, Compare, DocumentBody, DocumentRefusal, KeyRange, KeyValue, KvCommand, KvReader,
    Mutation, PatchFormat, RangePage, SessionId, WatchPage, WriteOutcome, WriteRequest,
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
    /// A document or patch that is not JSON (InvalidArgument, with the offset).
    #[error("{0}")]
    InvalidJson(InvalidJson),
    /// A document write, patch or read was not carried out (its reason is typed).
    #[error("document refused ({}): {}", .0.reason.name(), .0.message)]
    Document(DocumentRefusal),
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

/// A document write's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentWritten {
    pub version: u64,
    /// The log carried a patch from the previous version, not the whole document.
    pub delta: bool,
    /// Bytes the log carried for the write (compressed, when it was).
    pub logged_bytes: u64,
}

/// A document as `get_document` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRead {
    /// The document, or the part the pointer names; None when the key is absent.
    pub json: Option<Vec<u8>>,
    pub mod_version: u64,
    pub create_version: u64,
    pub read_version: u64,
}

/// How many times a document write is sent as a delta before it goes whole: each retry
/// follows a concurrent write to the same key that moved its base.
const DELTA_ATTEMPTS: usize = 3;

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
    /// Sessions for writes that come without one (`sessions`).
    internal_sessions: sessions::InternalSessions,
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
        let replica = u64::from(handle.id());
        // A replica that cannot read its own table still starts above the clock.
        let recorded = (reader.session_request_id_max(&sessions::prefix(replica))).unwrap_or(0);
        let internal_sessions =
            sessions::InternalSessions::new(replica, sessions::request_id_floor(recorded));
        PrimaryRouter {
            reader,
            peers,
            limits,
            request_timeout,
            retry_after_ms,
            metrics: RouterMetrics::unregistered(),
            unsafe_local_reads: false,
            internal_sessions,
            handle,
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

    /// Writes the JSON document `json` (validated, stored canonical). When the key holds
    /// a document on this replica and an RFC 6902 patch from it is less than half the new
    /// document, the log carries the patch and its base version; should the key have moved
    /// on by the time it applies, nothing is written and the write is sent again from the
    /// new base (whole, after `DELTA_ATTEMPTS`).
    pub async fn put_document(
        &self,
        key: Vec<u8>,
        json: Vec<u8>,
        expected_version: Option<u64>,
        session: Option<SessionId>,
    ) -> Result<DocumentWritten> {
        self.limits.check_key(&key)?;
        self.limits.check_value(&json)?;
        let mut new = document::NewDocument::parse(&json, self.limits.document_tree_bytes_max)
            .map_err(RouterError::InvalidJson)?;
        // Only the canonical form is needed from here on.
        drop(json);
        self.limits.check_value(&new.canonical)?;
        for attempt in 1..=DELTA_ATTEMPTS + 1 {
            let delta = match attempt <= DELTA_ATTEMPTS {
                true => self.delta_from_local(&key, &new)?,
                false => None,
            };
            let (body, delta) = match delta {
                Some((base_version, patch)) => (
                    DocumentBody::Delta {
                        base_version,
                        patch,
                    },
                    true,
                ),
                // A whole write never meets a moved base, so this is the last attempt.
                None => (
                    DocumentBody::Full(std::mem::take(&mut new.canonical)),
                    false,
                ),
            };
            let request = WriteRequest::PutDocument {
                key: key.clone(),
                body,
                expected_version,
            };
            let (outcome, logged_bytes) = self.write_logged(session.clone(), request).await?;
            match outcome {
                WriteOutcome::BaseMoved { .. } => {
                    self.metrics.document_base_moved.inc();
                    continue;
                }
                outcome => {
                    let version = committed(outcome)?.version;
                    let form = if delta { "delta" } else { "full" };
                    self.metrics
                        .document_writes
                        .with_label_values(&[form])
                        .inc();
                    return Ok(DocumentWritten {
                        version,
                        delta,
                        logged_bytes,
                    });
                }
            }
        }
        unreachable!("the last attempt is a full write, which never meets a moved base")
    }

    /// The key's newest version on this replica and the patch from it to `new`, when that
    /// is worth sending (see `NewDocument::delta_from`). Not a linearizable read, and need
    /// not be: the executor applies the patch only if the key is still at that version.
    fn delta_from_local(
        &self,
        key: &[u8],
        new: &document::NewDocument,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        let applied = self.reader.applied().current_version;
        let current = self.reader.get(key, applied);
        let Some(current) = current.map_err(|e| self.executor_error(e))? else {
            return Ok(None);
        };
        let patch = new.delta_from(&current.value, current.document);
        Ok(patch.map(|patch| (current.mod_version, patch)))
    }

    /// Applies `patch` (RFC 6902 or RFC 7396) to the document `key` holds; the log carries
    /// the patch alone.
    pub async fn patch_document(
        &self,
        key: Vec<u8>,
        format: PatchFormat,
        patch: &[u8],
        expected_version: Option<u64>,
        session: Option<SessionId>,
    ) -> Result<DocumentWritten> {
        self.limits.check_key(&key)?;
        self.limits.check_value(patch)?;
        let value = document::parse(patch).map_err(RouterError::InvalidJson)?;
        if format == PatchFormat::JsonPatch {
            document::json_patch_operations(value.clone())
                .map_err(|message| RouterError::InvalidArgument(format!("patch: {message}")))?;
        }
        let request = WriteRequest::PatchDocument {
            key,
            format,
            patch: document::canonical(&value),
            expected_version,
        };
        let (outcome, logged_bytes) = self.write_logged(session, request).await?;
        let version = committed(outcome)?.version;
        self.metrics
            .document_writes
            .with_label_values(&["patch"])
            .inc();
        Ok(DocumentWritten {
            version,
            delta: true,
            logged_bytes,
        })
    }

    /// The document `key` holds, or the part RFC 6901 `pointer` names.
    pub async fn get_document(
        &self,
        key: &[u8],
        pointer: &str,
        read_version: Option<u64>,
    ) -> Result<DocumentRead> {
        let (kv, read_version) = self.get(key, read_version).await?;
        let Some(kv) = kv else {
            return Ok(DocumentRead {
                json: None,
                mod_version: 0,
                create_version: 0,
                read_version,
            });
        };
        // A canonical document's part is found by scanning it, without parsing 100 MB for
        // one field; any other value, or a pointer the scan cannot resolve, is parsed.
        let located = (kv.document && pointer.starts_with('/'))
            .then(|| document::locate(&kv.value, pointer))
            .flatten();
        let json = match located {
            Some(span) => kv.value[span].to_vec(),
            None => document::select(&kv.value, pointer).map_err(RouterError::Document)?,
        };
        Ok(DocumentRead {
            json: Some(json),
            mod_version: kv.mod_version,
            create_version: kv.create_version,
            read_version,
        })
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
        Ok(self.write_logged(session, request).await?.0)
    }

    /// `write`, and the bytes the log carried for it.
    async fn write_logged(
        &self,
        session: Option<SessionId>,
        request: WriteRequest,
    ) -> Result<(WriteOutcome, u64)> {
        if let Some(session) = &session {
            self.limits.check_session(session)?;
        }
        if session.is_none() && !self.internal_sessions.synced() {
            self.sync_internal_sessions().await;
        }
        // Every write carries a session, so the driver may send it to a new leader again.
        let lent = session.is_none().then(|| self.internal_sessions.lend());
        let session = session.or_else(|| lent.as_ref().map(sessions::Lent::session));
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
        // The encoding holds everything from here on: a large value is not kept twice
        // while the write waits.
        drop(command);
        let plain_bytes = bytes.len();
        let bytes = executor::compress(bytes, self.limits.compress_command_bytes_min);
        self.metrics.command_bytes.inc_by(plain_bytes as u64);
        self.metrics.command_logged_bytes.inc_by(bytes.len() as u64);
        if executor::is_compressed(&bytes) {
            self.metrics.commands_compressed.inc();
        }
        let logged_bytes = bytes.len() as u64;
        if lent.is_some() {
            let created = self.internal_sessions.created();
            self.metrics.internal_sessions.set(created as i64);
        }
        let outcome = self.handle.propose(bytes, true).await;
        drop(lent);
        Ok((
            outcome.map_err(|error| self.driver_error(error))?,
            logged_bytes,
        ))
    }

    /// Before the first write without a session: once this replica has caught up with the
    /// leader, raises the internal sessions' request ids above every one it has applied (see
    /// `sessions`). A failure leaves it for the next write; the ids already stand above the
    /// clock and what the replica knew at start.
    async fn sync_internal_sessions(&self) {
        if self.version_for_read(None).await.is_err() {
            return;
        }
        let prefix = sessions::prefix(u64::from(self.handle.id()));
        if let Ok(recorded) = self.reader.session_request_id_max(&prefix) {
            self.internal_sessions.raise_floor(recorded);
        }
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
        // A document call, or a commit's `SetPatched`.
        WriteOutcome::DocumentRefused(refusal) => Err(RouterError::Document(refusal)),
        other => Err(unexpected(other)),
    }
}

fn unexpected(outcome: WriteOutcome) -> RouterError {
    match outcome {
        WriteOutcome::Rejected { reason } => RouterError::InvalidArgument(reason),
        other => RouterError::Internal(format!("unexpected outcome {other:?}")),
    }
}
