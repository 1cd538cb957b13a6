// The paxkv client API. Generated code is committed (src/api/gen/ for Rust); regenerate it
// with thrift/gen.sh (Apache Thrift 0.17.0). Transport: framed; protocol: binary or compact.
//
// Versions: every commit gets a version, an i64 that only grows. A read at version V sees
// every commit with version <= V and nothing after. Keys and values are bytes.

namespace rs paxkv
namespace py paxkv
namespace go paxkv
namespace java io.paxkv.thrift
namespace cpp paxkv

// ---------------------------------------------------------------------------------------
// Errors. Every exception carries a code, so a client can switch on it.

enum ErrorCode {
  INVALID_ARGUMENT = 1,
  LIMIT_EXCEEDED = 2,
  CONFLICT = 3,
  TOO_OLD = 4,
  COMPACTED = 5,
  UNAVAILABLE = 6,
  INTERNAL = 7,
  SNAPSHOT_GONE = 8,
  MEMBERSHIP_REFUSED = 9,
  DOCUMENT = 10,
  UNAUTHENTICATED = 11,
  PERMISSION_DENIED = 12,
  NOT_FOUND = 13,
  ALREADY_EXISTS = 14,
  INVALID_TRANSITION = 15,
  SCHEMA_VIOLATION = 16,
  STALE = 17,
}

// The request is malformed (for example an empty key, or begin > end). For input that is
// not JSON (a document, a patch), `offset` is the byte at which parsing failed.
exception InvalidArgument {
  1: required ErrorCode code = ErrorCode.INVALID_ARGUMENT,
  2: required string message,
  3: optional i64 offset,
}

// A configured limit was exceeded; `limit` names it (key_bytes_max, value_bytes_max,
// mutations_per_txn_max, command_bytes_max, ...). A frame over frame_bytes_max cannot be
// parsed, so it closes the connection instead.
exception LimitExceeded {
  1: required ErrorCode code = ErrorCode.LIMIT_EXCEEDED,
  2: required string limit,
  3: required i64 actual,
  4: required i64 maximum,
  5: required string message,
}

// A read conflict range of a transaction was written after its read version. Retry the
// whole transaction with a new read version.
exception Conflict {
  1: required ErrorCode code = ErrorCode.CONFLICT,
  2: required string message,
  3: optional binary conflicting_key,
}

// The read version is older than the retained history. Get a new read version.
exception TooOld {
  1: required ErrorCode code = ErrorCode.TOO_OLD,
  2: required i64 read_version,
  3: required i64 oldest_version,
  4: required string message,
}

// A watch asked for history older than what is retained. Re-read, then watch from the new
// version.
exception Compacted {
  1: required ErrorCode code = ErrorCode.COMPACTED,
  2: required i64 from_version,
  3: required i64 oldest_version,
  4: required string message,
}

// No leader could be reached in time (an election is running, or no quorum), or the
// leader changed before the outcome was known. `message` says which: a write may have been
// applied unless it says nothing was proposed. Retry after retry_after_ms; retrying a write
// with the same session applies it exactly once.
exception Unavailable {
  1: required ErrorCode code = ErrorCode.UNAVAILABLE,
  2: required string message,
  3: required i32 retry_after_ms,
}

exception InternalError {
  1: required ErrorCode code = ErrorCode.INTERNAL,
  2: required string message,
}

// The replica no longer holds snapshot `slot` (a newer one replaced it). A download of it
// cannot continue: take a new snapshot (adminSnapshot) and start over.
exception SnapshotGone {
  1: required ErrorCode code = ErrorCode.SNAPSHOT_GONE,
  2: required i64 slot,
  3: required string message,
}

// A membership request was not carried out. `reason` is one of: NO_LEADER (nothing was
// proposed), OUTCOME_UNKNOWN (proposed, but leadership changed before it committed: list
// the members to see), CHANGE_IN_PROGRESS (one change at a time), WOULD_LOSE_QUORUM,
// UNKNOWN_MEMBER, ALREADY_MEMBER, ALREADY_VOTER, NOT_VOTER, LAST_VOTER, TOO_MANY_MEMBERS,
// TOO_MANY_VOTER_CHANGES, MEMBER_BEHIND (the learner or transfer target has not caught up),
// NOT_CONNECTED (add without an incarnation, of a replica that has not connected to the
// leader), ADDRESS_REQUIRED (add of a new id without a peer address), INVALID.
exception MembershipRefused {
  1: required ErrorCode code = ErrorCode.MEMBERSHIP_REFUSED,
  2: required string reason,
  3: required string message,
}

// A document write, patch or read was not carried out; nothing was written. `reason` is
// one of: VERSION_MISMATCH (expected_version is not the key's mod_version, which is
// `current_version`; 0 when the key is absent), NO_DOCUMENT (a patch of an absent key),
// NOT_A_DOCUMENT (the key's value is not JSON), TEST_FAILED (an RFC 6902 `test` operation
// did not hold; `operation` is its index), PATCH_FAILED (an operation could not be applied,
// for example a path that does not exist; `operation` is its index), NO_SUCH_PATH (a
// getDocument pointer names nothing in the document).
exception DocumentError {
  1: required ErrorCode code = ErrorCode.DOCUMENT,
  2: required string reason,
  3: required string message,
  4: optional i32 operation,
  5: optional i64 current_version,
}

// The call needs a principal: authenticate first (Confman.authenticate, on the same
// connection), with a token that is valid (not revoked, not expired, of a principal that
// is not disabled). The KV API asks for one only when the server has `auth.enabled`.
exception Unauthenticated {
  1: required ErrorCode code = ErrorCode.UNAUTHENTICATED,
  2: required string message,
}

// The principal lacks `permission` on `ns`. Config calls: read, draft, approve, publish,
// admin or root, on namespace `ns` and every namespace above it. KV calls: kv_read or
// kv_write on the keys `ns` names (docs/api.md, "Access control"), or root.
exception PermissionDenied {
  1: required ErrorCode code = ErrorCode.PERMISSION_DENIED,
  2: required string permission,
  3: required string ns,
  4: required string message,
}

// ---------------------------------------------------------------------------------------
// Data.

struct KeyValue {
  1: required binary key,
  2: required binary value,
  // Version of the commit that last wrote this key.
  3: required i64 mod_version,
  // Version of the commit that created it (since it last did not exist).
  4: required i64 create_version,
}

// [start_key, end_key): end_key is exclusive. An empty end_key means "to the end of the key
// space". (`begin` and `end` are reserved words in some Thrift target languages.)
struct KeyRange {
  1: required binary start_key,
  2: required binary end_key,
}

// Identifies a write for exactly-once retries: a retried write with the same client_id and
// request_id is applied at most once and returns the original result. request_id must grow
// per client_id, one request at a time: only the latest is remembered, and an older one is
// rejected (InvalidArgument "superseded").
struct Session {
  1: required string client_id,
  2: required i64 request_id,
}

struct GetResult {
  1: optional KeyValue kv,
  2: required i64 read_version,
}

struct RangeResult {
  1: required list<KeyValue> kvs,
  // More keys remain in the range: call again with `continuation`.
  2: required bool more,
  3: optional binary continuation,
  // Pass this back as read_version when paging, for one consistent snapshot.
  4: required i64 read_version,
}

enum MutationType {
  SET = 1,
  CLEAR = 2,
  // Clears [key, end_key).
  CLEAR_RANGE = 3,
  // Adds `value` (a little-endian two's-complement integer) to the current value, which is
  // treated as 0 if absent and zero-extended or truncated to value's width.
  ADD = 4,
  // `key` holds a 10-byte placeholder at the offset given by its last 4 bytes (u32
  // little-endian, stripped): it is replaced with the commit's versionstamp.
  SET_VERSIONSTAMPED_KEY = 5,
  // Same, within `value`.
  SET_VERSIONSTAMPED_VALUE = 6,
}

struct Mutation {
  1: required MutationType type,
  2: required binary key,
  3: optional binary value,
  4: optional binary end_key,
}

struct CommitRequest {
  1: required i64 read_version,
  2: required list<Mutation> mutations,
  3: required list<KeyRange> read_conflict_ranges,
  4: optional Session session,
}

struct CommitResult {
  1: required i64 version,
  // 10 bytes: 8-byte big-endian commit version, 2-byte big-endian order within it.
  2: required binary versionstamp,
}

enum CompareTarget {
  // Compare the value (absent keys compare as absent: only NOT_EQUAL matches them).
  VALUE = 1,
  // Compare mod_version (0 when absent).
  MOD_VERSION = 2,
  // Compare create_version (0 when absent).
  CREATE_VERSION = 3,
  // EQUAL with exists = true/false.
  EXISTS = 4,
}

enum CompareOp {
  EQUAL = 1,
  NOT_EQUAL = 2,
  LESS = 3,
  GREATER = 4,
}

struct Compare {
  1: required binary key,
  2: required CompareTarget target,
  3: required CompareOp op,
  4: optional binary value,
  5: optional i64 version,
  6: optional bool exists,
}

// etcd-style conditional write: every compare is evaluated at apply time, atomically; if
// all hold, `success` is applied, otherwise `failure`.
struct TxnRequest {
  1: required list<Compare> compares,
  2: required list<Mutation> success,
  3: required list<Mutation> failure,
  4: optional Session session,
}

struct TxnResult {
  1: required bool succeeded,
  2: required i64 version,
}

enum EventType {
  PUT = 1,
  DELETE = 2,
}

enum PatchFormat {
  // RFC 6902: a JSON array of operations (add, remove, replace, move, copy, test), applied
  // all or nothing; a failed `test` is DocumentError TEST_FAILED.
  JSON_PATCH = 1,
  // RFC 7396: a JSON value merged into the document (null removes a member).
  MERGE_PATCH = 2,
}

struct Event {
  1: required EventType type,
  2: required binary key,
  // The new value of a PUT. Absent for a DELETE, and for a document write the log carried
  // as a patch when the watch asked for patches (then `patch` is set instead).
  3: optional binary value,
  4: required i64 version,
  // With WatchRequest.patches, for a document write the log carried as a patch (a
  // putDocument delta, or a patchDocument): the patch that turns the key's previous value
  // (its value at the previous event of this key) into the new one.
  5: optional binary patch,
  6: optional PatchFormat patch_format,
}

struct WatchResult {
  // Every change to the range with version >= from_version, in version order, up to a
  // server-side batch limit.
  1: required list<Event> events,
  // Watch again from here to continue with no gap and no duplicate.
  2: required i64 next_version,
}

struct ReplicaStatus {
  1: required i32 id,
  2: required string peer_address,
  3: required string role,
  4: required i64 committed_slot,
  5: required i64 applied_slot,
  6: required bool reachable,
  // What the membership the answering replica knows committed makes of this one: "voter",
  // "learner" (receives the log, counts in no quorum) or "none" (not a member).
  7: optional string member,
  // Its member incarnation (one life of its data directory), where it is a member.
  8: optional i64 incarnation,
  // The incarnation the replica itself runs, where it answered. Unlike `incarnation`: a
  // replica that lost its disk (or is new), not yet added by an operator.
  9: optional i64 running_incarnation,
}

// One member of the committed membership.
struct Member {
  1: required i32 id,
  // "voter" or "learner" (receives the log, counts in no quorum).
  2: required string kind,
  3: required i64 incarnation,
  // Its peer address; empty for a bootstrap member (each replica's config names it).
  4: required string peer_address,
  // Its committed slot as the leader last heard it; absent if not heard.
  5: optional i64 committed_slot,
}

// A replica that connected to the leader with an incarnation no member has: a new one, or
// one that lost its disk, waiting to be added.
struct Candidate {
  1: required i32 id,
  2: required i64 incarnation,
}

// The committed membership, as the leader knows it.
struct Membership {
  1: required list<Member> members,
  2: optional i32 leader,
  3: required i64 committed_slot,
  4: required list<Candidate> candidates,
}

struct MemberAddRequest {
  1: required i32 id,
  // ip:port. Default: the address the membership or the leader's config has for `id`.
  2: optional string peer_address,
  // Default: the incarnation the replica announced when it connected to the leader.
  3: optional i64 incarnation,
}

struct Status {
  1: required list<ReplicaStatus> replicas,
  2: optional i32 leader,
  3: required string ballot,
  4: required i64 version,
  5: required bool healthy,
  // The cluster's name (`cluster_name`, fixed when the cluster was created).
  6: optional string cluster,
}

// One snapshot file: a replica's whole key-value state at one log slot.
struct SnapshotInfo {
  // Every log slot up to this one is applied in the snapshot, none after.
  1: required i64 slot,
  // The KV version at that slot: every commit with version <= it is inside.
  2: required i64 version,
  // Size of the snapshot file.
  3: required i64 bytes,
  // CRC32C of the whole file but its last four bytes, which hold it (0 ..= 2^32 - 1).
  4: required i64 checksum,
  // The replica that holds the file; readSnapshot must go to this replica.
  5: required i32 replica,
}

// Bytes of a snapshot file from `offset`.
struct SnapshotChunk {
  // At most min(maxBytes, snapshot_chunk_bytes_max) bytes. Empty at offset == totalBytes:
  // the end of the file.
  1: required binary data,
  2: required i64 totalBytes,
}

// ---------------------------------------------------------------------------------------
// Requests. Each call takes one request struct, so fields can be added compatibly.

struct GetRequest {
  1: required binary key,
  // Absent: a linearizable read. Present: a snapshot read at this version.
  2: optional i64 read_version,
}

struct GetRangeRequest {
  1: required KeyRange range,
  // At most this many pairs (the server also caps it); 0 means the server's cap.
  2: required i32 limit,
  3: required bool reverse,
  4: optional i64 read_version,
  // From a previous page's RangeResult.
  5: optional binary continuation,
}

struct PutRequest {
  1: required binary key,
  2: required binary value,
  3: optional Session session,
}

struct DeleteRequest {
  1: required binary key,
  2: optional Session session,
}

struct DeleteRangeRequest {
  1: required KeyRange range,
  2: optional Session session,
}

// A JSON document (RFC 8259) for `key`. It is stored in canonical form: the same members in
// the same order, no insignificant whitespace, numbers to every digit as written (an
// exponent gains its sign: 1e3 is kept as 1e+3), strings as written (escapes resolved). When the key holds a document already and an RFC 6902 patch from it
// is less than half the new document's size, the log carries the patch and the version it
// applies to instead of the whole document (DocumentWriteResult.delta).
struct PutDocumentRequest {
  1: required binary key,
  2: required binary json,
  // Write only if the key's mod_version is this (0: only if the key is absent), else
  // DocumentError VERSION_MISMATCH.
  3: optional i64 expected_version,
  4: optional Session session,
}


struct PatchDocumentRequest {
  1: required binary key,
  2: required binary patch,
  3: required PatchFormat format,
  // Apply only if the key's mod_version is this, else DocumentError VERSION_MISMATCH.
  4: optional i64 expected_version,
  5: optional Session session,
}

struct DocumentWriteResult {
  // The commit version.
  1: required i64 version,
  // The log carried a patch against the previous version rather than the whole document.
  2: required bool delta,
  // Bytes the log carries for this write (after zstd compression, when it applies).
  3: required i64 logged_bytes,
}

struct GetDocumentRequest {
  1: required binary key,
  // An RFC 6901 JSON Pointer ("/services/0/name"): only that part of the document is
  // returned. Absent or "": the whole document.
  2: optional string pointer,
  // Absent: a linearizable read. Present: a snapshot read at this version.
  3: optional i64 read_version,
}

struct DocumentResult {
  // The document (or the part `pointer` names) in canonical form; absent if the key is.
  1: optional binary json,
  2: required i64 mod_version,
  3: required i64 create_version,
  4: required i64 read_version,
}

// Large values in pieces (docs/api.md, "Large values"). An upload is staged chunk by
// chunk, each chunk its own log entry, and becomes the value of a key only when committed;
// readers never see part of it. An upload that receives no chunk for limits.upload_ttl_ms
// is reclaimed.
struct UploadChunkRequest {
  // Absent or empty for the first chunk (offset 0): the replica starts an upload and
  // returns its id. Otherwise the id UploadChunkResult returned: 32 hexadecimal digits.
  1: optional string upload_id,
  // Where the chunk starts: 0, then the bytes_staged the previous chunk returned. Any
  // other offset is InvalidArgument naming the one expected, so a client that lost a reply
  // resumes from there.
  2: required i64 offset,
  // At most limits.chunk_bytes_max bytes; the upload in all at most value_bytes_max.
  3: required binary data,
  4: optional Session session,
}

struct UploadChunkResult {
  1: required string upload_id,
  2: required i64 bytes_staged,
  // Milliseconds since the epoch (the clock of the replica that proposed the chunk) after
  // which the upload is reclaimed unless another chunk comes first.
  3: required i64 expires_at_ms,
}

struct UploadCommit {
  1: required binary key,
  2: required string upload_id,
  // The upload's size (the last bytes_staged): a check that nothing is missing.
  3: required i64 bytes,
  // Commit only if the key's mod_version is this (0: only if the key is absent).
  4: optional i64 expected_version,
  // The upload is one JSON document: it is validated (InvalidArgument with the byte
  // offset if it is not JSON) and stored in canonical form, as putDocument stores one, so
  // that patchDocument edits it in place. An upload already canonical is committed as it
  // is; another is first written again, canonical, by the replica taking the call.
  5: optional bool document,
}

struct CommitUploadsRequest {
  // Each upload becomes the value of its key, all in one transaction with `mutations`:
  // all of it or none of it. Each upload is committed once; it is then no longer staged.
  1: required list<UploadCommit> uploads,
  2: optional list<Mutation> mutations,
  3: optional Session session,
}

struct CommitUploadsResult {
  // False: an expected_version did not hold, nothing was written and the uploads are
  // still staged.
  1: required bool committed,
  // The commit version (the current version when not committed).
  2: required i64 version,
}

struct AbortUploadRequest {
  1: required string upload_id,
  2: optional Session session,
}

struct GetValueRangeRequest {
  1: required binary key,
  // Bytes from `offset` (at most limits.chunk_bytes_max; fewer at the value's end).
  2: required i64 offset,
  3: required i32 length,
  // Absent: a linearizable read. Present: a snapshot read at this version; read the rest
  // of a value at the read_version of its first range to get one consistent value.
  4: optional i64 read_version,
}

struct ValueRangeResult {
  // Absent if the key is.
  1: optional binary data,
  // The size of the whole value.
  2: required i64 total_bytes,
  3: required i64 mod_version,
  4: required i64 create_version,
  5: required i64 read_version,
}

struct WatchRequest {
  1: required KeyRange range,
  2: required i64 from_version,
  3: required i32 timeout_ms,
  // Events of document writes the log carried as patches carry the patch instead of the
  // whole new value: a consumer of a 50 MB document receives the few operations of an edit.
  4: optional bool patches,
}

struct ReadSnapshotRequest {
  // SnapshotInfo.slot of the file to read.
  1: required i64 slot,
  // 0 ..= SnapshotInfo.bytes.
  2: required i64 offset,
  // Positive; the server also caps it at snapshot_chunk_bytes_max.
  3: required i32 maxBytes,
}

// ---------------------------------------------------------------------------------------
// The service. Any replica accepts any call; writes are forwarded to the leader. Reads
// without read_version are linearizable: the replica gets a read index from the leader and
// reads locally once it has applied it. Reads with one are snapshot reads that any replica
// serves once it has applied that version.

service Paxkv {
  GetResult get(1: GetRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 3: TooOld too_old,
            4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  RangeResult getRange(1: GetRangeRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 3: TooOld too_old,
            4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Returns the commit version.
  i64 put(1: PutRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit,
            4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // `delete` is a reserved word in Thrift IDL.
  i64 deleteKey(1: DeleteRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit,
            4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  i64 deleteRange(1: DeleteRangeRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit,
            4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // A linearizable read version for a transaction's snapshot reads.
  i64 getReadVersion()
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  CommitResult commit(1: CommitRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 3: TooOld too_old,
            4: Unavailable unavailable, 5: InternalError internal, 6: Conflict conflict,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  TxnResult txn(1: TxnRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit,
            4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Long poll: returns as soon as there is at least one event, or after timeout_ms with none
  // (or earlier with none when it scanned its per-call budget of history: continue from
  // next_version).
  WatchResult watch(1: WatchRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 4: Unavailable unavailable,
            5: InternalError internal, 7: Compacted compacted,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  Status status()
    throws (5: InternalError internal),

  // The replica that takes the call snapshots its state now, after a linearizable read
  // point (so the snapshot holds every write acknowledged before the call), and returns
  // once the file is durable. Read it with readSnapshot on the same replica.
  SnapshotInfo adminSnapshot()
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Membership (docs/operations.md, "Membership"). Any replica takes these calls and hands
  // them to the leader; one change at a time, each answered once committed, with the
  // membership then committed.
  Membership adminMemberList()
    throws (4: Unavailable unavailable, 5: InternalError internal,
            9: MembershipRefused refused,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Adds a learner: it receives the log (or a snapshot) and counts in no quorum. A new
  // incarnation of a member (a replica that lost its disk) replaces it: one voter fewer.
  Membership adminMemberAdd(1: MemberAddRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable,
            5: InternalError internal, 9: MembershipRefused refused,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // A learner that has caught up becomes a voter.
  Membership adminMemberPromote(1: i32 id)
    throws (4: Unavailable unavailable, 5: InternalError internal,
            9: MembershipRefused refused,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  Membership adminMemberRemove(1: i32 id)
    throws (4: Unavailable unavailable, 5: InternalError internal,
            9: MembershipRefused refused,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Asks the leader to hand leadership to voter `id` once it has caught up; returns when
  // asked, not when the new leader is elected (watch status for that).
  Membership adminTransferLeader(1: i32 id)
    throws (4: Unavailable unavailable, 5: InternalError internal,
            9: MembershipRefused refused,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // JSON documents (docs/api.md, "Documents").
  DocumentWriteResult putDocument(1: PutDocumentRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 4: Unavailable unavailable,
            5: InternalError internal, 10: DocumentError document,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Edits a document in place: the log carries the patch, never the document.
  DocumentWriteResult patchDocument(1: PatchDocumentRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 4: Unavailable unavailable,
            5: InternalError internal, 10: DocumentError document,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  DocumentResult getDocument(1: GetDocumentRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 3: TooOld too_old,
            4: Unavailable unavailable, 5: InternalError internal,
            10: DocumentError document,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Large values in pieces (docs/api.md, "Large values").
  UploadChunkResult uploadChunk(1: UploadChunkRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 4: Unavailable unavailable,
            5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  CommitUploadsResult commitUploads(1: CommitUploadsRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 4: Unavailable unavailable,
            5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Returns whether the upload was staged (false: committed, aborted or expired already).
  bool abortUpload(1: AbortUploadRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable,
            5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  ValueRangeResult getValueRange(1: GetValueRangeRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 3: TooOld too_old,
            4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Bytes of this replica's snapshot file `slot` from `offset`. An offset beyond the file
  // is InvalidArgument; a file this replica no longer holds is SnapshotGone.
  SnapshotChunk readSnapshot(1: ReadSnapshotRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            8: SnapshotGone snapshot_gone,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),
}

// ---------------------------------------------------------------------------------------
// The configuration service (docs/config-service.md): namespaces, principals and roles,
// change sets reviewed and published as one transaction, audit, history and watch. Served
// on the same port as Paxkv (the method names differ); a connection authenticates once
// with `authenticate`, and every later call on it acts as that principal.

// `what` is principal, token, namespace, entry, revision or change.
exception NotFound {
  1: required ErrorCode code = ErrorCode.NOT_FOUND,
  2: required string what,
  3: required string name,
  4: required string message,
}

exception AlreadyExists {
  1: required ErrorCode code = ErrorCode.ALREADY_EXISTS,
  2: required string what,
  3: required string name,
  4: required string message,
}

// `action` is not allowed on a change set in `state` (or not by this principal: the author
// approving their own change is one).
exception InvalidTransition {
  1: required ErrorCode code = ErrorCode.INVALID_TRANSITION,
  2: required i64 change_id,
  3: required string state,
  4: required string action,
  5: required string message,
}

// An entry does not match its namespace's JSON Schema: `pointer` is where in the entry,
// `rule` the schema keyword that failed (with its schema path in `message`).
exception SchemaViolation {
  1: required ErrorCode code = ErrorCode.SCHEMA_VIOLATION,
  2: required string ns,
  3: required string key,
  4: required string pointer,
  5: required string rule,
  6: required string message,
}

struct MovedEntry {
  1: required string ns,
  2: required string key,
  3: required i64 base_revision,
  4: required i64 current_revision,
}

// The change set's entries moved since it was based: nothing was published. rebaseChange
// re-bases it onto the current revisions.
exception Stale {
  1: required ErrorCode code = ErrorCode.STALE,
  2: required i64 change_id,
  3: required list<MovedEntry> moved,
  4: required string message,
}

struct AuthResult {
  1: required string principal,
  2: required string token_id,
  3: optional i64 expires_at_ms,
  4: required bool root,
}

struct Principal {
  1: required string name,
  // "user" or "service".
  2: required string kind,
  3: required string description,
  4: required bool disabled,
  5: required i64 created_at_ms,
  6: required string created_by,
  7: required bool root,
  // What the principal may do through the raw KV API (docs/api.md, "Access control").
  8: optional list<KvGrant> kv_grants,
  // The groups it belongs to (a namespace's approver group counts only its members).
  9: optional list<string> groups,
}

struct GroupMembership {
  1: required string principal,
  2: required string group,
}

// Access to the user keys that start with `prefix` (empty: every user key) through the
// raw KV API: "read", or "readwrite".
struct KvGrant {
  1: required binary prefix,
  2: required string access,
}

// An imported entry's last commit in the repository it came from.
struct ImportedRevision {
  1: required string ns,
  2: required string key,
  3: required string author,
  4: required string email,
  5: required i64 authored_at_ms,
  6: required string commit,
  7: required string subject,
}

struct KvGrantRequest {
  1: required string principal,
  2: required binary prefix,
  // "read" or "readwrite"; ignored by revokeKv.
  3: optional string access,
}

struct CreatePrincipalRequest {
  1: required string name,
  2: required string kind,
  3: optional string description,
}

struct CreateTokenRequest {
  1: required string principal,
  2: optional string description,
  // The token stops working this long after it is created; none: never.
  3: optional i64 ttl_seconds,
}

// `token` is shown once: only its hash is stored.
struct TokenCreated {
  1: required string token_id,
  2: required string token,
  3: optional i64 expires_at_ms,
}

struct TokenInfo {
  1: required string token_id,
  2: required string principal,
  3: required string description,
  4: required i64 created_at_ms,
  5: optional i64 expires_at_ms,
  6: required bool revoked,
}

// `role` is one of reader, editor, approver, publisher, admin; a grant on a namespace holds
// in its whole subtree.
struct Grant {
  1: required string ns,
  2: required string principal,
  3: required string role,
}

struct Namespace {
  1: required string path,
  2: required string description,
  // A JSON Schema (draft 2020-12) every entry of the namespace must match; none: any JSON.
  3: optional binary schema,
  // Approvals a change needs from approvers of this namespace before it is published.
  4: required i32 approvals_required,
  5: required i64 created_at_ms,
  6: required string created_by,
  7: required list<Grant> grants,
  // When set, approvals count for this namespace only from members of this group.
  8: optional string approver_group,
}

struct CreateNamespaceRequest {
  1: required string path,
  2: optional string description,
  3: optional binary schema,
  4: optional i32 approvals_required,
  5: optional string approver_group,
}

// Fields left out are unchanged; an empty `schema` or `approver_group` removes it.
struct UpdateNamespaceRequest {
  1: required string path,
  2: optional string description,
  3: optional binary schema,
  4: optional i32 approvals_required,
  5: optional string approver_group,
}

struct ListNamespacesRequest {
  1: required string path,
  2: required bool recursive,
  3: required i32 limit,
  4: optional string continuation,
}

struct NamespaceList {
  1: required list<Namespace> namespaces,
  2: optional string continuation,
}

struct Entry {
  1: required string ns,
  2: required string key,
  // The JSON document (or bytes, by content_type); absent in listings without values.
  3: optional binary value,
  4: required string content_type,
  // Counts the entry's published revisions from 1.
  5: required i64 revision,
  6: required i64 change_id,
  7: required string author,
  8: required list<string> approvers,
  9: required i64 published_at_ms,
  // The store version the entry was read at.
  10: required i64 read_version,
}

// The newest revision, or `revision`; linearizable unless `read_version` is given.
struct GetEntryRequest {
  1: required string ns,
  2: required string key,
  3: optional i64 revision,
  4: optional i64 read_version,
}

struct ListEntriesRequest {
  1: required string ns,
  2: required bool recursive,
  3: required i32 limit,
  4: optional string continuation,
  5: optional i64 read_version,
  6: required bool values,
}

struct EntryList {
  1: required list<Entry> entries,
  2: optional string continuation,
  3: required i64 read_version,
}

struct EntryRevision {
  1: required i64 revision,
  2: required i64 change_id,
  3: required string author,
  4: required list<string> approvers,
  5: required i64 published_at_ms,
  6: required bool deleted,
  7: required bool emergency,
  8: required string published_by,
}

struct HistoryRequest {
  1: required string ns,
  2: required string key,
  3: required i32 limit,
  // Newest first, from the revision below this one; none: from the newest.
  4: optional i64 before_revision,
}

// Revision 0 is the entry before it existed (null); to_revision none: the newest.
struct DiffRequest {
  1: required string ns,
  2: required string key,
  3: required i64 from_revision,
  4: optional i64 to_revision,
}

struct DiffResult {
  // RFC 6902, from the first revision to the second.
  1: required binary json_patch,
  // A unified diff of the two revisions pretty-printed.
  2: required string text,
}

enum EditOp {
  // `value` is the whole new entry.
  PUT = 1,
  // `value` is an RFC 6902 patch of the published entry.
  PATCH = 2,
  DELETE = 3,
}

struct Edit {
  1: required string ns,
  2: required string key,
  3: required EditOp op,
  4: optional binary value,
  // "application/json" (default) or any other type for opaque bytes (PUT only).
  5: optional string content_type,
}

struct EntryRef {
  1: required string ns,
  2: required string key,
}

// One entry a change set writes. `value` is what publishing writes (a PATCH is applied
// when the edit is saved); `base_revision` the published revision it was based on (0: the
// entry did not exist).
struct ChangeEdit {
  1: required string ns,
  2: required string key,
  3: required EditOp op,
  4: required i64 base_revision,
  5: optional binary value,
  6: required string content_type,
}

struct Review {
  1: required string principal,
  // "approve" or "reject".
  2: required string verdict,
  3: required string comment,
  4: required i64 at_ms,
}

struct ChangeSet {
  1: required i64 id,
  2: required string title,
  3: required string description,
  4: required string author,
  // draft, in_review, approved, published, rejected, abandoned.
  5: required string state,
  6: required list<ChangeEdit> edits,
  // Approvals of the current submission, and rejections.
  7: required list<Review> reviews,
  8: required i64 created_at_ms,
  9: required i64 updated_at_ms,
  10: optional i64 published_version,
  11: optional i64 published_at_ms,
  12: optional string published_by,
  13: required bool emergency,
  14: optional string reason,
}

struct CreateChangeRequest {
  1: required string title,
  2: optional string description,
  3: optional list<Edit> edits,
  // Makes the call safe to retry: a second call by the same principal with the same
  // token (1 to 255 letters, digits, '.', '_', '-') creates nothing and returns the change
  // the first created. The CLI sends a random one and retries on Unavailable.
  4: optional string client_token,
}

// Adds edits (replacing any earlier edit of the same entry) and drops the entries in
// `drop`. An edit of a change in review sends it back to draft and drops its approvals.
struct EditChangeRequest {
  1: required i64 change_id,
  2: required list<Edit> edits,
  3: optional list<EntryRef> drop,
}

struct ReviewRequest {
  1: required i64 change_id,
  2: optional string comment,
}

// `emergency`: an admin of every namespace touched publishes without review; `reason` is
// then required and the audit marks it.
struct PublishRequest {
  1: required i64 change_id,
  2: required bool emergency,
  3: optional string reason,
}

struct PublishResult {
  1: required ChangeSet change,
  // The store version every entry of the change was written at.
  2: required i64 version,
}

struct RebaseConflict {
  1: required string ns,
  2: required string key,
  // The JSON pointer both the change and the published entry changed.
  3: required string pointer,
  4: required string message,
}

// With conflicts nothing was changed.
struct RebaseResult {
  1: required ChangeSet change,
  2: required list<RebaseConflict> conflicts,
}

struct ListChangesRequest {
  1: optional string state,
  2: optional string author,
  3: required i32 limit,
  // Newest first, from the change below this id; none: from the newest.
  4: optional i64 before_id,
}

struct ChangeList {
  1: required list<ChangeSet> changes,
  2: optional i64 next_before_id,
}

// A new draft that restores every entry `change_id` published to its revision before it.
struct RevertRequest {
  1: required i64 change_id,
  2: optional string title,
}

struct AuditEvent {
  1: required string id,
  2: required i64 at_ms,
  3: required string actor,
  4: required string action,
  // "ok" or "denied".
  5: required string outcome,
  // Namespaces, entries ("/ns:key"), principals, tokens the action touched.
  6: required list<string> targets,
  7: optional i64 change_id,
  // JSON: revisions before and after, the permission denied, the reason, ...
  8: required string detail,
}

// Every filter given must match; `entry` is "/namespace:key".
struct AuditQuery {
  1: optional string ns,
  2: optional string entry,
  3: optional string actor,
  4: optional i64 change_id,
  5: optional i64 from_ms,
  6: optional i64 to_ms,
  7: required i32 limit,
  8: optional string continuation,
}

struct AuditPage {
  1: required list<AuditEvent> events,
  2: optional string continuation,
}

struct ConfigEvent {
  1: required string ns,
  2: required string key,
  3: required i64 revision,
  4: required i64 change_id,
  5: required i64 version,
  6: required bool deleted,
  // The value; absent for a deletion, and when `patch` stands for it.
  7: optional binary value,
  8: required string content_type,
  // Asked for with `patches`: the RFC 6902 patch that turns revision - 1's value into this
  // revision's (sent for JSON values of at least 4 KiB when under half their size).
  9: optional binary patch,
}

struct WatchConfigRequest {
  1: required string ns,
  2: required i64 from_version,
  3: required i64 timeout_ms,
  // Send a large JSON entry's new revision as a patch of the previous one when smaller.
  4: optional bool patches,
}

struct WatchConfigResult {
  // Published changes of the subtree, in version order; all entries of one change share
  // one version.
  1: required list<ConfigEvent> events,
  2: required i64 next_version,
}

service Confman {
  AuthResult authenticate(1: string token)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated),

  Principal whoami()
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated),

  Principal createPrincipal(1: CreatePrincipalRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            14: AlreadyExists exists),

  list<Principal> listPrincipals()
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Disables a principal: its tokens stop working. Root cannot be disabled.
  Principal disablePrincipal(1: string name)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  TokenCreated createToken(1: CreateTokenRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  list<TokenInfo> listTokens(1: string principal)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  TokenInfo revokeToken(1: string token_id)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  Namespace grantRole(1: Grant grant)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  Namespace revokeRole(1: Grant grant)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  // Gives a principal read or readwrite access to a key prefix of the raw KV API
  // (replacing what it had on exactly that prefix); needs admin on /.
  Principal grantKv(1: KvGrantRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  // Takes away the principal's grant on exactly that prefix.
  Principal revokeKv(1: KvGrantRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  // Adds a principal to a group; needs admin on /.
  Principal addToGroup(1: GroupMembership membership)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  // Takes a principal out of a group; needs admin on /.
  Principal removeFromGroup(1: GroupMembership membership)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  Namespace createNamespace(1: CreateNamespaceRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found, 14: AlreadyExists exists, 16: SchemaViolation schema),

  Namespace updateNamespace(1: UpdateNamespaceRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found, 16: SchemaViolation schema),

  Namespace describeNamespace(1: string path)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  NamespaceList listNamespaces(1: ListNamespacesRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  // Only an empty namespace (no entries, no child namespaces) can be deleted.
  void deleteNamespace(1: string path)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  Entry getEntry(1: GetEntryRequest request)
    throws (1: InvalidArgument invalid, 3: TooOld too_old, 4: Unavailable unavailable,
            5: InternalError internal, 11: Unauthenticated unauthenticated,
            12: PermissionDenied denied, 13: NotFound not_found),

  EntryList listEntries(1: ListEntriesRequest request)
    throws (1: InvalidArgument invalid, 3: TooOld too_old, 4: Unavailable unavailable,
            5: InternalError internal, 11: Unauthenticated unauthenticated,
            12: PermissionDenied denied, 13: NotFound not_found),

  list<EntryRevision> entryHistory(1: HistoryRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  DiffResult diffEntry(1: DiffRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  ChangeSet createChange(1: CreateChangeRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 4: Unavailable unavailable,
            5: InternalError internal, 11: Unauthenticated unauthenticated,
            12: PermissionDenied denied, 13: NotFound not_found,
            16: SchemaViolation schema),

  ChangeSet editChange(1: EditChangeRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 4: Unavailable unavailable,
            5: InternalError internal, 11: Unauthenticated unauthenticated,
            12: PermissionDenied denied, 13: NotFound not_found,
            15: InvalidTransition transition, 16: SchemaViolation schema),

  ChangeSet getChange(1: i64 change_id)
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  ChangeList listChanges(1: ListChangesRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated),

  ChangeSet submitChange(1: i64 change_id)
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found, 15: InvalidTransition transition),

  ChangeSet approveChange(1: ReviewRequest request)
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found, 15: InvalidTransition transition),

  ChangeSet rejectChange(1: ReviewRequest request)
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found, 15: InvalidTransition transition),

  ChangeSet abandonChange(1: i64 change_id)
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found, 15: InvalidTransition transition),

  RebaseResult rebaseChange(1: i64 change_id)
    throws (4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found, 15: InvalidTransition transition,
            16: SchemaViolation schema),

  // One transaction: every entry, the change's state and the audit, or nothing.
  PublishResult publishChange(1: PublishRequest request)
    throws (1: InvalidArgument invalid, 2: LimitExceeded limit, 4: Unavailable unavailable,
            5: InternalError internal, 11: Unauthenticated unauthenticated,
            12: PermissionDenied denied, 13: NotFound not_found,
            15: InvalidTransition transition, 16: SchemaViolation schema, 17: Stale stale),

  ChangeSet revertChange(1: RevertRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found, 15: InvalidTransition transition),

  AuditPage queryAudit(1: AuditQuery query)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied),

  // Records where imported entries came from (`paxkv import` from a git checkout) as audit
  // events `import.history`, at most 1000 per call; needs admin on each namespace. Returns
  // how many were recorded.
  i32 importHistory(1: list<ImportedRevision> revisions)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            11: Unauthenticated unauthenticated, 12: PermissionDenied denied,
            13: NotFound not_found),

  // Long poll, like Paxkv.watch: published changes of the namespace's subtree from
  // from_version; continue from next_version with no gap and no duplicate.
  WatchConfigResult watchConfig(1: WatchConfigRequest request)
    throws (1: InvalidArgument invalid, 4: Unavailable unavailable, 5: InternalError internal,
            7: Compacted compacted, 11: Unauthenticated unauthenticated,
            12: PermissionDenied denied, 13: NotFound not_found),
}
