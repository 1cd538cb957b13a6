//! `KvHandler`: the Thrift API served by a `PrimaryRouter`. Converts the wire types, checks
//! what only the wire can get wrong (negative versions, unknown enum values), and turns
//! every router error into the exception the IDL declares for that method.
//!
//! The generated processor calls handlers synchronously; the server runs each call on
//! tokio's blocking pool, so a handler blocks on the router's futures there.

use std::time::Duration;

use thrift::Error as ThriftError;

use super::confman_handler::wire_error;
use super::gen::paxkv::{
    self as wire, CommitRequest, CommitResult, Compacted, Conflict, DeleteRangeRequest,
    DeleteRequest, ErrorCode, GetRangeRequest, GetRequest, GetResult, InternalError,
    InvalidArgument, LimitExceeded, PaxkvSyncHandler, PutRequest, RangeResult, ReadSnapshotRequest,
    SnapshotChunk, SnapshotGone, SnapshotInfo, Status, TooOld, TxnRequest, TxnResult, Unavailable,
    WatchRequest, WatchResult,
};
use super::gen::paxkv::{
    AbortUploadRequest, CommitUploadsRequest, CommitUploadsResult, GetValueRangeRequest,
    UploadChunkRequest, UploadChunkResult, ValueRangeResult,
};
use super::gen::paxkv::{Candidate, MemberAddRequest, Membership, MembershipRefused};
use super::gen::paxkv::{
    DocumentError, DocumentResult, DocumentWriteResult, GetDocumentRequest, PatchDocumentRequest,
    PutDocumentRequest,
};
use super::session;
use crate::confman::{self, Confman, KvCaller};
use crate::executor::blob::{self, UploadId};
use crate::executor::{
    Compare, CompareOp, CompareTarget, EventKind, KeyRange, KeyValue, Mutation, PatchFormat,
    SessionId,
};
use crate::metrics::ApiMetrics;
use crate::router::{DocumentWritten, PrimaryRouter, RouterError, UploadCommit};
use crate::wire::{AdminRequest, MembershipView};

/// Which exceptions a method declares, so an undeclared one becomes `InternalError`
/// instead of an opaque application error.
#[derive(Clone, Copy)]
pub(super) struct Declares {
    pub conflict: bool,
    pub too_old: bool,
    pub compacted: bool,
    pub invalid: bool,
    pub limit: bool,
    pub snapshot_gone: bool,
    pub document: bool,
}

const WRITE: Declares = Declares {
    conflict: false,
    too_old: false,
    compacted: false,
    invalid: true,
    limit: true,
    snapshot_gone: false,
    document: false,
};
const READ: Declares = Declares {
    too_old: true,
    ..WRITE
};
const COMMIT: Declares = Declares {
    conflict: true,
    too_old: true,
    ..WRITE
};
const WATCH: Declares = Declares {
    compacted: true,
    ..WRITE
};
const READ_VERSION: Declares = Declares {
    invalid: false,
    limit: false,
    ..WRITE
};
const ADMIN_SNAPSHOT: Declares = READ_VERSION;
const DOCUMENT_WRITE: Declares = Declares {
    document: true,
    ..WRITE
};
const DOCUMENT_READ: Declares = Declares {
    document: true,
    ..READ
};
const READ_SNAPSHOT: Declares = Declares {
    limit: false,
    snapshot_gone: true,
    ..WRITE
};

pub struct KvHandler {
    router: PrimaryRouter,
    runtime: tokio::runtime::Handle,
    metrics: ApiMetrics,
    /// With `auth.enabled`: checks each call's token and grants (docs/api.md, "Access
    /// control") against this replica's applied state.
    auth: Option<Confman>,
}

impl KvHandler {
    /// `runtime` runs the router's futures; the handler must be called outside it (the
    /// server calls it on the blocking pool).
    pub fn new(router: PrimaryRouter, runtime: tokio::runtime::Handle) -> KvHandler {
        KvHandler {
            router,
            runtime,
            metrics: ApiMetrics::unregistered(),
            auth: None,
        }
    }

    /// Every call then needs the token of a principal with a grant on the keys it touches
    /// (`confman` reads tokens and grants from this replica's applied state).
    pub fn with_auth(mut self, confman: Confman) -> KvHandler {
        self.auth = Some(confman);
        self
    }

    /// Refuses the call unless its connection's principal passes `check` (every call
    /// passes when the server does not check access).
    fn allow(&self, check: impl FnOnce(&KvCaller) -> confman::Result<()>) -> Wire<()> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let token = session::token();
        let caller = auth.kv_caller(token.as_deref()).map_err(wire_error)?;
        check(&caller).map_err(wire_error)
    }

    /// Counts and times every call in `metrics` (a node's registry).
    pub fn with_metrics(mut self, metrics: ApiMetrics) -> KvHandler {
        self.metrics = metrics;
        self
    }

    /// Runs one call, counting it by method and outcome and timing it by method.
    fn observed<T>(&self, method: &'static str, call: impl FnOnce() -> Wire<T>) -> Wire<T> {
        let timer = (self.metrics.request_duration)
            .with_label_values(&[method])
            .start_timer();
        let result = call();
        timer.observe_duration();
        (self.metrics.requests)
            .with_label_values(&[method, outcome(&result)])
            .inc();
        result
    }

    fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }
}

type Wire<T> = thrift::Result<T>;

/// One method per call, named as in the IDL; the trait below wraps each in `observed`.
impl KvHandler {
    fn get(&self, request: GetRequest) -> Wire<GetResult> {
        let read_version = optional_version(request.read_version, "read_version")?;
        user_key(&request.key)?;
        self.allow(|c| c.require_key(&request.key, false))?;
        let got = self.block_on(self.router.get(&request.key, read_version));
        let (kv, version) = got.map_err(|e| exception(e, READ))?;
        Ok(GetResult::new(kv.map(key_value), to_wire(version)))
    }

    fn get_range(&self, request: GetRangeRequest) -> Wire<RangeResult> {
        let read_version = optional_version(request.read_version, "read_version")?;
        let limit =
            usize::try_from(request.limit).map_err(|_| invalid("limit must not be negative"))?;
        let range = key_range(request.range)?;
        self.allow(|c| c.require_range(&range.start, &range.end, false))?;
        let read = self.router.get_range(
            &range,
            limit,
            request.reverse,
            read_version,
            request.continuation,
        );
        let (page, version) = self.block_on(read).map_err(|e| exception(e, READ))?;
        let kvs = page.kvs.into_iter().map(key_value).collect();
        Ok(RangeResult::new(
            kvs,
            page.more,
            page.continuation,
            to_wire(version),
        ))
    }

    fn put(&self, request: PutRequest) -> Wire<i64> {
        let session = session(request.session);
        user_key(&request.key)?;
        self.allow(|c| c.require_key(&request.key, true))?;
        let put = self.router.put(request.key, request.value, session);
        let committed = self.block_on(put).map_err(|e| exception(e, WRITE))?;
        Ok(to_wire(committed.version))
    }

    fn put_document(&self, request: PutDocumentRequest) -> Wire<DocumentWriteResult> {
        let expected = optional_version(request.expected_version, "expected_version")?;
        let session = session(request.session);
        user_key(&request.key)?;
        self.allow(|c| c.require_key(&request.key, true))?;
        let put = (self.router).put_document(request.key, request.json, expected, session);
        let written = self
            .block_on(put)
            .map_err(|e| exception(e, DOCUMENT_WRITE))?;
        Ok(document_written(written))
    }

    fn patch_document(&self, request: PatchDocumentRequest) -> Wire<DocumentWriteResult> {
        let expected = optional_version(request.expected_version, "expected_version")?;
        let format = match request.format {
            wire::PatchFormat::JSON_PATCH => PatchFormat::JsonPatch,
            wire::PatchFormat::MERGE_PATCH => PatchFormat::MergePatch,
            other => return Err(invalid(format!("unknown patch format {}", other.0))),
        };
        let session = session(request.session);
        user_key(&request.key)?;
        self.allow(|c| c.require_key(&request.key, true))?;
        let patch =
            (self.router).patch_document(request.key, format, &request.patch, expected, session);
        let written = self
            .block_on(patch)
            .map_err(|e| exception(e, DOCUMENT_WRITE))?;
        Ok(document_written(written))
    }

    fn get_document(&self, request: GetDocumentRequest) -> Wire<DocumentResult> {
        let read_version = optional_version(request.read_version, "read_version")?;
        let pointer = request.pointer.unwrap_or_default();
        user_key(&request.key)?;
        self.allow(|c| c.require_key(&request.key, false))?;
        let read = self
            .router
            .get_document(&request.key, &pointer, read_version);
        let read = self
            .block_on(read)
            .map_err(|e| exception(e, DOCUMENT_READ))?;
        Ok(DocumentResult::new(
            read.json,
            to_wire(read.mod_version),
            to_wire(read.create_version),
            to_wire(read.read_version),
        ))
    }

    fn upload_chunk(&self, request: UploadChunkRequest) -> Wire<UploadChunkResult> {
        let upload = match request.upload_id.as_deref() {
            None | Some("") => None,
            Some(id) => Some(upload_id(id)?),
        };
        let offset = version(request.offset, "offset")?;
        let session = session(request.session);
        self.allow(KvCaller::require_writer)?;
        let chunk = (self.router).upload_chunk(upload, offset, request.data, session);
        let staged = self.block_on(chunk).map_err(|e| exception(e, WRITE))?;
        Ok(UploadChunkResult::new(
            blob::hex(&staged.upload),
            to_wire(staged.bytes),
            saturating_i64(staged.expires_at_ms),
        ))
    }

    fn commit_uploads(&self, request: CommitUploadsRequest) -> Wire<CommitUploadsResult> {
        let uploads = (request.uploads.into_iter())
            .map(|commit| {
                user_key(&commit.key)?;
                Ok(UploadCommit {
                    key: commit.key,
                    upload: upload_id(&commit.upload_id)?,
                    bytes: version(commit.bytes, "bytes")?,
                    expected_version: optional_version(
                        commit.expected_version,
                        "expected_version",
                    )?,
                    document: commit.document.unwrap_or(false),
                })
            })
            .collect::<Wire<Vec<_>>>()?;
        let extra = mutations(request.mutations.unwrap_or_default())?;
        self.allow(|c| {
            (uploads.iter()).try_for_each(|upload| c.require_key(&upload.key, true))?;
            c.require_ranges(&written_ranges(&extra), true)
        })?;
        let session = session(request.session);
        let commit = self.router.commit_uploads(uploads, extra, session);
        let (committed, version) = self.block_on(commit).map_err(|e| exception(e, WRITE))?;
        Ok(CommitUploadsResult::new(committed, to_wire(version)))
    }

    fn abort_upload(&self, request: AbortUploadRequest) -> Wire<bool> {
        let upload = upload_id(&request.upload_id)?;
        self.allow(KvCaller::require_writer)?;
        let abort = self.router.abort_upload(upload, session(request.session));
        self.block_on(abort).map_err(|e| exception(e, WRITE))
    }

    fn get_value_range(&self, request: GetValueRangeRequest) -> Wire<ValueRangeResult> {
        let read_version = optional_version(request.read_version, "read_version")?;
        let offset = version(request.offset, "offset")?;
        let length =
            u64::try_from(request.length).map_err(|_| invalid("length must not be negative"))?;
        user_key(&request.key)?;
        self.allow(|c| c.require_key(&request.key, false))?;
        let read = (self.router).get_value_range(&request.key, offset, length, read_version);
        let (range, read_version) = self.block_on(read).map_err(|e| exception(e, READ))?;
        Ok(match range {
            Some(range) => ValueRangeResult::new(
                range.data,
                to_wire(range.total_bytes),
                to_wire(range.mod_version),
                to_wire(range.create_version),
                to_wire(read_version),
            ),
            None => ValueRangeResult::new(None, 0, 0, 0, to_wire(read_version)),
        })
    }

    fn delete_key(&self, request: DeleteRequest) -> Wire<i64> {
        let session = session(request.session);
        user_key(&request.key)?;
        self.allow(|c| c.require_key(&request.key, true))?;
        let delete = self.router.delete(request.key, session);
        let committed = self.block_on(delete).map_err(|e| exception(e, WRITE))?;
        Ok(to_wire(committed.version))
    }

    fn delete_range(&self, request: DeleteRangeRequest) -> Wire<i64> {
        let session = session(request.session);
        let range = key_range(request.range)?;
        self.allow(|c| c.require_range(&range.start, &range.end, true))?;
        let delete = self.router.delete_range(range, session);
        let committed = self.block_on(delete).map_err(|e| exception(e, WRITE))?;
        Ok(to_wire(committed.version))
    }

    fn get_read_version(&self) -> Wire<i64> {
        self.allow(KvCaller::require_any)?;
        let version = self.block_on(self.router.read_version());
        Ok(to_wire(version.map_err(|e| exception(e, READ_VERSION))?))
    }

    fn commit(&self, request: CommitRequest) -> Wire<CommitResult> {
        let read_version = version(request.read_version, "read_version")?;
        let session = session(request.session);
        let mutations = mutations(request.mutations)?;
        // A conflict range reveals nothing and writes nothing: taken as it is.
        let ranges = (request.read_conflict_ranges.into_iter()).map(|range| KeyRange {
            start: range.start_key,
            end: range.end_key,
        });
        let ranges: Vec<KeyRange> = ranges.collect();
        // A conflict range tells whether its keys moved: a read of them.
        self.allow(|c| {
            c.require_ranges(&written_ranges(&mutations), true)?;
            c.require_ranges(&readable(&ranges), false)
        })?;
        let commit = self.router.commit(read_version, mutations, ranges, session);
        let committed = self.block_on(commit).map_err(|e| exception(e, COMMIT))?;
        Ok(CommitResult::new(
            to_wire(committed.version),
            committed.versionstamp.to_vec(),
        ))
    }

    fn txn(&self, request: TxnRequest) -> Wire<TxnResult> {
        let session = session(request.session);
        let compares = request.compares.into_iter().map(compare);
        let compares = compares.collect::<Wire<Vec<Compare>>>()?;
        let success = mutations(request.success)?;
        let failure = mutations(request.failure)?;
        self.allow(|c| {
            (compares.iter()).try_for_each(|compare| c.require_key(&compare.key, false))?;
            c.require_ranges(&written_ranges(&success), true)?;
            c.require_ranges(&written_ranges(&failure), true)
        })?;
        let txn = self.router.txn(compares, success, failure, session);
        let (succeeded, version) = self.block_on(txn).map_err(|e| exception(e, WRITE))?;
        Ok(TxnResult::new(succeeded, to_wire(version)))
    }

    fn watch(&self, request: WatchRequest) -> Wire<WatchResult> {
        let from_version = version(request.from_version, "from_version")?;
        let timeout_ms = u64::try_from(request.timeout_ms)
            .map_err(|_| invalid("timeout_ms must not be negative"))?;
        let range = key_range(request.range)?;
        self.allow(|c| c.require_range(&range.start, &range.end, false))?;
        let patches = request.patches.unwrap_or(false);
        let watch = self
            .router
            .watch(&range, from_version, Duration::from_millis(timeout_ms));
        let page = self.block_on(watch).map_err(|e| exception(e, WATCH))?;
        let events = page.events.into_iter().map(|event| {
            let kind = match event.kind {
                EventKind::Put | EventKind::PutBlob | EventKind::PutPatched | EventKind::PutRef => {
                    wire::EventType::PUT
                }
                EventKind::Delete => wire::EventType::DELETE,
            };
            let (value, patch, format) = match event.patch.filter(|_| patches) {
                Some((format, patch)) => (None, Some(patch), Some(wire_patch_format(format))),
                None => (event.value, None, None),
            };
            let version = to_wire(event.version);
            wire::Event::new(kind, event.key, value, version, patch, format)
        });
        Ok(WatchResult::new(
            events.collect(),
            to_wire(page.next_version),
        ))
    }

    fn admin(&self, request: AdminRequest) -> Wire<Membership> {
        self.allow(KvCaller::require_root)?;
        let answered = self.block_on(self.router.admin(request));
        answered.map(membership).map_err(|error| match error {
            RouterError::MembershipRefused(refusal) => user(MembershipRefused::new(
                ErrorCode::MEMBERSHIP_REFUSED,
                refusal.reason.name().to_string(),
                refusal.message,
            )),
            other => exception(other, ADMIN_SNAPSHOT),
        })
    }

    fn admin_member_add(&self, request: MemberAddRequest) -> Wire<Membership> {
        let id = node_id(request.id, "id")?;
        let incarnation = match request.incarnation {
            None => None,
            Some(incarnation) => Some(
                u64::try_from(incarnation)
                    .ok()
                    .filter(|&incarnation| incarnation > 0)
                    .ok_or_else(|| invalid("incarnation must be positive"))?,
            ),
        };
        let addr = request.peer_address;
        self.admin(AdminRequest::Add {
            id,
            addr,
            incarnation,
        })
    }

    fn status(&self) -> Wire<Status> {
        let status = self.block_on(self.router.status());
        let membership = &status.membership;
        let replicas = status.members.into_iter().map(|member| {
            let (role, committed, applied) = match &member.status {
                Some(s) => (s.role.clone(), s.commit_index, s.applied_slot),
                None => ("unreachable".to_string(), 0, 0),
            };
            let known = membership.get(member.id);
            let kind = known.map_or("none", |m| m.kind());
            wire::ReplicaStatus::new(
                member.id as i32,
                member.peer_address.to_string(),
                role,
                to_wire(committed),
                to_wire(applied),
                member.status.is_some(),
                kind.to_string(),
                known.map(|m| to_wire(m.incarnation)),
                member.status.as_ref().map(|s| to_wire(s.incarnation)),
            )
        });
        Ok(Status::new(
            replicas.collect(),
            status.leader.map(|leader| leader as i32),
            status.ballot,
            to_wire(status.version),
            status.healthy,
            status.cluster,
        ))
    }

    fn admin_snapshot(&self) -> Wire<SnapshotInfo> {
        self.allow(KvCaller::require_root)?;
        let taken = self.block_on(self.router.snapshot());
        let info = taken.map_err(|e| exception(e, ADMIN_SNAPSHOT))?;
        Ok(SnapshotInfo::new(
            to_wire(info.slot),
            to_wire(info.version),
            to_wire(info.bytes),
            i64::from(info.checksum),
            self.router.id() as i32,
        ))
    }

    fn read_snapshot(&self, request: ReadSnapshotRequest) -> Wire<SnapshotChunk> {
        self.allow(KvCaller::require_root)?;
        let slot = version(request.slot, "slot")?;
        let offset = version(request.offset, "offset")?;
        let max_bytes = usize::try_from(request.max_bytes)
            .map_err(|_| invalid("maxBytes must not be negative"))?;
        // File i/o, on the blocking pool like every call.
        let chunk = self.router.read_snapshot(slot, offset, max_bytes);
        let chunk = chunk.map_err(|e| exception(e, READ_SNAPSHOT))?;
        Ok(SnapshotChunk::new(chunk.data, to_wire(chunk.total_bytes)))
    }
}

impl PaxkvSyncHandler for KvHandler {
    fn handle_get(&self, request: GetRequest) -> Wire<GetResult> {
        self.observed("get", || self.get(request))
    }
    fn handle_get_range(&self, request: GetRangeRequest) -> Wire<RangeResult> {
        self.observed("get_range", || self.get_range(request))
    }
    fn handle_put(&self, request: PutRequest) -> Wire<i64> {
        self.observed("put", || self.put(request))
    }
    fn handle_put_document(&self, request: PutDocumentRequest) -> Wire<DocumentWriteResult> {
        self.observed("put_document", || self.put_document(request))
    }
    fn handle_patch_document(&self, request: PatchDocumentRequest) -> Wire<DocumentWriteResult> {
        self.observed("patch_document", || self.patch_document(request))
    }
    fn handle_get_document(&self, request: GetDocumentRequest) -> Wire<DocumentResult> {
        self.observed("get_document", || self.get_document(request))
    }
    fn handle_upload_chunk(&self, request: UploadChunkRequest) -> Wire<UploadChunkResult> {
        self.observed("upload_chunk", || self.upload_chunk(request))
    }
    fn handle_commit_uploads(&self, request: CommitUploadsRequest) -> Wire<CommitUploadsResult> {
        self.observed("commit_uploads", || self.commit_uploads(request))
    }
    fn handle_abort_upload(&self, request: AbortUploadRequest) -> Wire<bool> {
        self.observed("abort_upload", || self.abort_upload(request))
    }
    fn handle_get_value_range(&self, request: GetValueRangeRequest) -> Wire<ValueRangeResult> {
        self.observed("get_value_range", || self.get_value_range(request))
    }
    fn handle_delete_key(&self, request: DeleteRequest) -> Wire<i64> {
        self.observed("delete_key", || self.delete_key(request))
    }
    fn handle_delete_range(&self, request: DeleteRangeRequest) -> Wire<i64> {
        self.observed("delete_range", || self.delete_range(request))
    }
    fn handle_get_read_version(&self) -> Wire<i64> {
        self.observed("get_read_version", || self.get_read_version())
    }
    fn handle_commit(&self, request: CommitRequest) -> Wire<CommitResult> {
        self.observed("commit", || self.commit(request))
    }
    fn handle_txn(&self, request: TxnRequest) -> Wire<TxnResult> {
        self.observed("txn", || self.txn(request))
    }
    fn handle_watch(&self, request: WatchRequest) -> Wire<WatchResult> {
        self.observed("watch", || self.watch(request))
    }
    fn handle_status(&self) -> Wire<Status> {
        self.observed("status", || self.status())
    }
    fn handle_admin_snapshot(&self) -> Wire<SnapshotInfo> {
        self.observed("admin_snapshot", || self.admin_snapshot())
    }
    fn handle_read_snapshot(&self, request: ReadSnapshotRequest) -> Wire<SnapshotChunk> {
        self.observed("read_snapshot", || self.read_snapshot(request))
    }
    fn handle_admin_member_list(&self) -> Wire<Membership> {
        self.observed("admin_member_list", || self.admin(AdminRequest::List))
    }
    fn handle_admin_member_add(&self, request: MemberAddRequest) -> Wire<Membership> {
        self.observed("admin_member_add", || self.admin_member_add(request))
    }
    fn handle_admin_member_promote(&self, id: i32) -> Wire<Membership> {
        self.observed("admin_member_promote", || {
            self.admin(AdminRequest::Promote {
                id: node_id(id, "id")?,
            })
        })
    }
    fn handle_admin_member_remove(&self, id: i32) -> Wire<Membership> {
        self.observed("admin_member_remove", || {
            self.admin(AdminRequest::Remove {
                id: node_id(id, "id")?,
            })
        })
    }
    fn handle_admin_transfer_leader(&self, id: i32) -> Wire<Membership> {
        self.observed("admin_transfer_leader", || {
            self.admin(AdminRequest::TransferLeader {
                to: node_id(id, "id")?,
            })
        })
    }
}

/// A replica id from the wire: positive.
fn node_id(id: i32, field: &str) -> Wire<crate::consensus::NodeId> {
    u32::try_from(id)
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| invalid(format!("{field} must be a positive replica id, not {id}")))
}

/// The leader's view of the membership, for the wire.
fn membership(view: MembershipView) -> Membership {
    let members = view.membership.members.iter().map(|(&id, member)| {
        wire::Member::new(
            id as i32,
            member.kind().to_string(),
            to_wire(member.incarnation),
            member.addr.clone(),
            view.progress.get(&id).map(|&slot| to_wire(slot)),
        )
    });
    let candidates = (view.candidates.iter())
        .map(|&(id, incarnation)| Candidate::new(id as i32, to_wire(incarnation)));
    Membership::new(
        members.collect(),
        view.leader.map(|leader| leader as i32),
        to_wire(view.commit_index),
        candidates.collect(),
    )
}

/// A call's outcome label: `ok`, the declared exception in snake case, or `error`.
pub(super) fn outcome<T>(result: &Wire<T>) -> &'static str {
    let user = match result {
        Ok(_) => return "ok",
        Err(ThriftError::User(user)) => user,
        Err(_) => return "error",
    };
    if user.is::<InvalidArgument>() {
        "invalid_argument"
    } else if user.is::<LimitExceeded>() {
        "limit_exceeded"
    } else if user.is::<Conflict>() {
        "conflict"
    } else if user.is::<TooOld>() {
        "too_old"
    } else if user.is::<Compacted>() {
        "compacted"
    } else if user.is::<Unavailable>() {
        "unavailable"
    } else if user.is::<MembershipRefused>() {
        "membership_refused"
    } else if user.is::<InternalError>() {
        "internal_error"
    } else if user.is::<SnapshotGone>() {
        "snapshot_gone"
    } else if user.is::<DocumentError>() {
        "document_error"
    } else if user.is::<wire::Unauthenticated>() {
        "unauthenticated"
    } else if user.is::<wire::PermissionDenied>() {
        "permission_denied"
    } else if user.is::<wire::NotFound>() {
        "not_found"
    } else if user.is::<wire::AlreadyExists>() {
        "already_exists"
    } else if user.is::<wire::InvalidTransition>() {
        "invalid_transition"
    } else if user.is::<wire::SchemaViolation>() {
        "schema_violation"
    } else if user.is::<wire::Stale>() {
        "stale"
    } else {
        "error"
    }
}

fn document_written(written: DocumentWritten) -> DocumentWriteResult {
    DocumentWriteResult::new(
        to_wire(written.version),
        written.delta,
        saturating_i64(written.logged_bytes),
    )
}

fn to_wire(value: u64) -> i64 {
    i64::try_from(value).expect("versions and slots stay below 2^63")
}

fn invalid(message: impl Into<String>) -> ThriftError {
    user(InvalidArgument::new(
        ErrorCode::INVALID_ARGUMENT,
        message.into(),
        None,
    ))
}

fn user(exception: impl std::error::Error + Send + Sync + 'static) -> ThriftError {
    ThriftError::User(Box::new(exception))
}

fn version(value: i64, name: &str) -> Wire<u64> {
    u64::try_from(value).map_err(|_| invalid(format!("{name} must not be negative")))
}

fn optional_version(value: Option<i64>, name: &str) -> Wire<Option<u64>> {
    value.map(|v| version(v, name)).transpose()
}

fn wire_patch_format(format: PatchFormat) -> wire::PatchFormat {
    match format {
        PatchFormat::JsonPatch => wire::PatchFormat::JSON_PATCH,
        PatchFormat::MergePatch => wire::PatchFormat::MERGE_PATCH,
    }
}

fn upload_id(text: &str) -> Wire<UploadId> {
    blob::parse_upload_id(text)
        .ok_or_else(|| invalid(format!("upload_id {text:?} is not 32 hexadecimal digits")))
}

fn session(session: Option<wire::Session>) -> Option<SessionId> {
    session.map(|s| SessionId {
        client_id: s.client_id,
        request_id: s.request_id,
    })
}

/// The raw KV API's key space ends below `0xFF`: keys from there on are the system key
/// space the configuration service keeps its state in, which only it reads and writes.
fn user_key(key: &[u8]) -> Wire<()> {
    if key.first() == Some(&confman::keys::SYSTEM_BYTE) {
        return Err(invalid(
            "keys starting with byte 0xFF are the system key space: the configuration \
             service's, not readable or writable through the KV API",
        ));
    }
    Ok(())
}

/// A range cut at the end of the user key space (an empty end, or one past `0xFF`, ends
/// there); a range starting in the system key space is refused.
fn key_range(range: wire::KeyRange) -> Wire<KeyRange> {
    user_range(range.start_key, range.end_key)
}

fn user_range(start: Vec<u8>, end: Vec<u8>) -> Wire<KeyRange> {
    user_key(&start)?;
    let system = [confman::keys::SYSTEM_BYTE];
    let end = match end.is_empty() || end.as_slice() > &system[..] {
        true => system.to_vec(),
        false => end,
    };
    Ok(KeyRange { start, end })
}

/// The keys `mutations` may write, as ranges.
fn written_ranges(mutations: &[Mutation]) -> Vec<KeyRange> {
    let one = |key: &[u8]| {
        let mut end = key.to_vec();
        end.push(0);
        KeyRange {
            start: key.to_vec(),
            end,
        }
    };
    (mutations.iter())
        .map(|mutation| match mutation {
            Mutation::Set { key, .. }
            | Mutation::Clear { key }
            | Mutation::Add { key, .. }
            | Mutation::SetVersionstampedValue { key, .. }
            | Mutation::SetUpload { key, .. }
            | Mutation::SetUploadDocument { key, .. }
            // The wire has neither (only the configuration service proposes them); were
            // it to, their source keys would also need reading.
            | Mutation::Copy { key, .. }
            | Mutation::SetPatched { key, .. } => one(key),
            Mutation::ClearRange { start, end } => readable(&[KeyRange {
                start: start.clone(),
                end: end.clone(),
            }])
            .remove(0),
            Mutation::SetVersionstampedKey { key, .. } => confman::versionstamped_range(key),
        })
        .collect()
}

/// Ranges as a grant check sees them: an empty end is the end of the user key space.
fn readable(ranges: &[KeyRange]) -> Vec<KeyRange> {
    (ranges.iter())
        .map(|range| KeyRange {
            start: range.start.clone(),
            end: match range.end.is_empty() {
                true => vec![confman::keys::SYSTEM_BYTE],
                false => range.end.clone(),
            },
        })
        .collect()
}

fn key_value(kv: KeyValue) -> wire::KeyValue {
    wire::KeyValue::new(
        kv.key,
        kv.value,
        to_wire(kv.mod_version),
        to_wire(kv.create_version),
    )
}

fn mutations(mutations: Vec<wire::Mutation>) -> Wire<Vec<Mutation>> {
    mutations.into_iter().map(mutation).collect()
}

fn mutation(m: wire::Mutation) -> Wire<Mutation> {
    if m.type_ != wire::MutationType::CLEAR_RANGE {
        user_key(&m.key)?;
    }
    let value = |v: Option<Vec<u8>>| v.ok_or_else(|| invalid("this mutation needs a value"));
    Ok(match m.type_ {
        wire::MutationType::SET => Mutation::Set {
            key: m.key,
            value: value(m.value)?,
        },
        wire::MutationType::CLEAR => Mutation::Clear { key: m.key },
        wire::MutationType::CLEAR_RANGE => {
            let range = user_range(m.key, m.end_key.unwrap_or_default())?;
            Mutation::ClearRange {
                start: range.start,
                end: range.end,
            }
        }
        wire::MutationType::ADD => Mutation::Add {
            key: m.key,
            param: value(m.value)?,
        },
        wire::MutationType::SET_VERSIONSTAMPED_KEY => Mutation::SetVersionstampedKey {
            key: m.key,
            value: value(m.value)?,
        },
        wire::MutationType::SET_VERSIONSTAMPED_VALUE => Mutation::SetVersionstampedValue {
            key: m.key,
            value: value(m.value)?,
        },
        other => return Err(invalid(format!("unknown mutation type {}", other.0))),
    })
}

fn compare(c: wire::Compare) -> Wire<Compare> {
    user_key(&c.key)?;
    let target = match c.target {
        wire::CompareTarget::VALUE => CompareTarget::Value,
        wire::CompareTarget::MOD_VERSION => CompareTarget::ModVersion,
        wire::CompareTarget::CREATE_VERSION => CompareTarget::CreateVersion,
        wire::CompareTarget::EXISTS => CompareTarget::Exists,
        other => return Err(invalid(format!("unknown compare target {}", other.0))),
    };
    let op = match c.op {
        wire::CompareOp::EQUAL => CompareOp::Equal,
        wire::CompareOp::NOT_EQUAL => CompareOp::NotEqual,
        wire::CompareOp::LESS => CompareOp::Less,
        wire::CompareOp::GREATER => CompareOp::Greater,
        other => return Err(invalid(format!("unknown compare op {}", other.0))),
    };
    Ok(Compare {
        key: c.key,
        target,
        op,
        value: c.value,
        version: optional_version(c.version, "compare version")?,
        exists: c.exists,
    })
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The typed exception for `error`, or `InternalError` where the method does not declare it.
pub(super) fn exception_of(error: RouterError, declares: Declares) -> ThriftError {
    exception(error, declares)
}

fn exception(error: RouterError, declares: Declares) -> ThriftError {
    let message = error.to_string();
    match error {
        RouterError::InvalidArgument(message) if declares.invalid => invalid(message),
        RouterError::InvalidJson(json) if declares.invalid => user(InvalidArgument::new(
            ErrorCode::INVALID_ARGUMENT,
            message,
            saturating_i64(json.offset),
        )),
        RouterError::Document(refusal) if declares.document => user(DocumentError::new(
            ErrorCode::DOCUMENT,
            refusal.reason.name().to_string(),
            refusal.message,
            refusal
                .operation
                .map(|op| i32::try_from(op).unwrap_or(i32::MAX)),
            refusal.current_version.map(saturating_i64),
        )),
        RouterError::LimitExceeded {
            limit,
            actual,
            maximum,
        } if declares.limit => user(LimitExceeded::new(
            ErrorCode::LIMIT_EXCEEDED,
            limit.to_string(),
            saturating_i64(actual),
            saturating_i64(maximum),
            message,
        )),
        RouterError::Conflict { key } if declares.conflict => {
            user(Conflict::new(ErrorCode::CONFLICT, message, key))
        }
        RouterError::TooOld {
            read_version,
            oldest_version,
        } if declares.too_old => user(TooOld::new(
            ErrorCode::TOO_OLD,
            saturating_i64(read_version),
            saturating_i64(oldest_version),
            message,
        )),
        RouterError::Compacted {
            from_version,
            oldest_version,
        } if declares.compacted => user(Compacted::new(
            ErrorCode::COMPACTED,
            saturating_i64(from_version),
            saturating_i64(oldest_version),
            message,
        )),
        RouterError::Unavailable {
            message,
            retry_after_ms,
        } => user(Unavailable::new(
            ErrorCode::UNAVAILABLE,
            message,
            i32::try_from(retry_after_ms).unwrap_or(i32::MAX),
        )),
        RouterError::SnapshotGone { slot } if declares.snapshot_gone => user(SnapshotGone::new(
            ErrorCode::SNAPSHOT_GONE,
            saturating_i64(slot),
            message,
        )),
        _ => user(InternalError::new(ErrorCode::INTERNAL, message)),
    }
}
