//! The wire types of the state machine: the commands the log carries, the outcomes the
//! executor returns, and the change events it records. Encoded with bincode 1.3 in
//! fixed-width little-endian form so that the bytes are the same on every platform.

use bincode::Options;
use serde::{Deserialize, Serialize};

pub use super::blob::UploadId;
pub use super::document::{DocumentReason, DocumentRefusal, PatchFormat};
use super::error::{Error, Result};

/// Identifies one client request across retries, so that a retry after a leader change
/// returns the original outcome instead of applying twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionId {
    pub client_id: String,
    pub request_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Write {
        session: Option<SessionId>,
        request: WriteRequest,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteRequest {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// [start, end); an empty `end` means to the end of the key space.
    DeleteRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    /// An optimistic transaction (FoundationDB style): fails with `Conflict` if any key in
    /// `read_conflict_ranges` was written after `read_version`.
    Commit {
        read_version: u64,
        mutations: Vec<Mutation>,
        read_conflict_ranges: Vec<KeyRange>,
    },
    /// A compare-and-swap transaction (etcd style).
    Txn {
        compares: Vec<Compare>,
        success: Vec<Mutation>,
        failure: Vec<Mutation>,
    },
    /// A JSON document for `key`: applied only when the key's mod_version is
    /// `expected_version` (0: absent), if given.
    PutDocument {
        key: Vec<u8>,
        body: DocumentBody,
        expected_version: Option<u64>,
    },
    /// `patch` applied to the document `key` holds, at `expected_version` if given.
    PatchDocument {
        key: Vec<u8>,
        format: PatchFormat,
        patch: Vec<u8>,
        expected_version: Option<u64>,
    },
    /// Stages `data` at `offset` of `upload` (offset 0 starts it; every other chunk must
    /// start where the staged bytes end). `now_ms` is the proposer's clock: it advances
    /// the upload clock, and the upload expires `ttl_ms` after it unless another chunk
    /// comes first. Takes no version: staged bytes are invisible until committed with
    /// `Mutation::SetUpload`.
    UploadChunk {
        upload: UploadId,
        offset: u64,
        data: Vec<u8>,
        now_ms: u64,
        ttl_ms: u64,
    },
    /// Drops a staged upload and its chunks.
    AbortUpload {
        upload: UploadId,
    },
    /// Advances the upload clock to `now_ms` (the proposer's clock), reclaiming every
    /// upload that expired by then.
    ReclaimUploads {
        now_ms: u64,
    },
}

/// How the log carries a document write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocumentBody {
    /// The whole document, canonical.
    Full(Vec<u8>),
    /// An RFC 6902 patch from the key's value at `base_version`; if the key has moved on,
    /// nothing is written (`BaseMoved`) and the proposer tries again.
    Delta { base_version: u64, patch: Vec<u8> },
}

/// [start, end); an empty `end` means to the end of the key space.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl KeyRange {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    pub fn is_inverted(&self) -> bool {
        !self.end.is_empty() && self.start > self.end
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Clear {
        key: Vec<u8>,
    },
    /// [start, end); an empty `end` means to the end of the key space.
    ClearRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    /// FoundationDB ADD: little-endian add, wrapping at the width of `param`.
    Add {
        key: Vec<u8>,
        param: Vec<u8>,
    },
    /// The last 4 bytes of `key` are a little-endian u32 offset (stripped) at which the
    /// 10-byte versionstamp is written.
    SetVersionstampedKey {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// As `SetVersionstampedKey`, for the value.
    SetVersionstampedValue {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// The staged upload becomes the value of `key`; `bytes` must be its staged size.
    /// The upload is consumed: committed once, it cannot be committed again.
    SetUpload {
        key: Vec<u8>,
        upload: UploadId,
        bytes: u64,
    },
    /// `key` takes the value `from` holds, after the command's earlier mutations; the
    /// command is rejected if `from` holds none. The log carries two keys, not the value.
    Copy {
        key: Vec<u8>,
        from: Vec<u8>,
    },
    /// `key` takes the value `base` holds (after the command's earlier mutations) with
    /// the RFC 6902 `patch` applied by `document::apply_json_patch`; rejected if `base`
    /// holds nothing or the patch fails. That function splices `replace` operations into
    /// the bytes, which is the patched document only for a canonical base: the proposer
    /// names only bases it wrote in canonical form, checks the result with the same
    /// function, and lists `base` among the read conflict ranges, so every replica
    /// patches the bytes the proposer saw.
    SetPatched {
        key: Vec<u8>,
        base: Vec<u8>,
        patch: Vec<u8>,
    },
    /// As `SetUpload`, and the value is a canonical JSON document (`document::canonical`),
    /// which `patchDocument` edits in place. The proposer read the staged bytes and found
    /// them canonical; `bytes` pins them, since staged bytes are only ever appended to.
    SetUploadDocument {
        key: Vec<u8>,
        upload: UploadId,
        bytes: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value,
    ModVersion,
    CreateVersion,
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// `value` is read for `Value`, `version` for `ModVersion`/`CreateVersion`, `exists` for
/// `Exists`; a compare missing its operand rejects the whole `Txn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Vec<u8>,
    pub target: CompareTarget,
    pub op: CompareOp,
    pub value: Option<Vec<u8>>,
    pub version: Option<u64>,
    pub exists: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    Committed {
        version: u64,
        versionstamp: [u8; 10],
    },
    /// `version` is the new version if the chosen branch wrote, else the current version.
    Txn {
        succeeded: bool,
        version: u64,
    },
    Conflict {
        key: Vec<u8>,
    },
    TooOld {
        read_version: u64,
        oldest_version: u64,
    },
    Rejected {
        reason: String,
    },
    /// A document write or patch that did not apply; nothing was written.
    DocumentRefused(DocumentRefusal),
    /// A `Delta` whose base is no longer the key's newest version (`current_version`).
    /// Nothing was written and no session records it, so its proposer may send the write
    /// again, with a fresh base, under the same session.
    BaseMoved {
        current_version: u64,
    },
    /// An upload chunk was staged: the upload now holds `bytes` bytes and expires at
    /// upload clock `expires_at_ms` unless another chunk comes first.
    Staged {
        upload: UploadId,
        bytes: u64,
        expires_at_ms: u64,
    },
    /// Uploads dropped by `AbortUpload` (0 or 1) or `ReclaimUploads`.
    UploadsDropped {
        count: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
    /// A put whose value is stored as a blob: the event's value is its `BlobRef`, and the
    /// change-log reader turns it into a `Put` with the bytes.
    PutBlob,
    /// A document write the log carried as a patch: the stored value is
    /// `encode_record(&(format, patch))`, and the change-log reader turns it into a `Put`
    /// with the value (read from the data at the event's version) and `patch` set.
    PutPatched,
    /// A put whose value the event does not repeat: the change-log reader takes it from
    /// the data at the event's version (kept as long as the event is) and turns the event
    /// into a `Put`. Every put is recorded so; `Put` events with the value inline are
    /// those of databases written before.
    PutRef,
}

/// One key's change at one version, as recorded in the change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub key: Vec<u8>,
    /// The new value for `Put`; `None` for `Delete`.
    pub value: Option<Vec<u8>>,
    pub version: u64,
    /// For a document write the log carried as a patch (a delta, or `patchDocument`): the
    /// patch, which turns the key's previous value into `value`. Not stored in this field:
    /// the change-log reader fills it in from a `PutPatched` event.
    #[serde(skip)]
    pub patch: Option<(PatchFormat, Vec<u8>)>,
}

/// The one bincode configuration of the wire: fixed-width little-endian integers, a byte
/// limit so that a hostile length prefix cannot allocate, and no trailing garbage.
fn wire_options(bytes_max: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(bytes_max)
        .reject_trailing_bytes()
}

pub fn encode(command: &KvCommand, command_bytes_max: usize) -> Result<Vec<u8>> {
    let command_bytes = wire_options(u64::MAX)
        .serialized_size(command)
        .map_err(|e| Error::MalformedCommand(e.to_string()))?;
    let command_bytes = usize::try_from(command_bytes).unwrap_or(usize::MAX);
    if command_bytes > command_bytes_max {
        return Err(Error::CommandTooLarge {
            command_bytes,
            command_bytes_max,
        });
    }
    wire_options(command_bytes_max as u64)
        .serialize(command)
        .map_err(|e| Error::MalformedCommand(e.to_string()))
}

/// The first four bytes of every zstd frame. A command encoded by `encode` never starts
/// with them: its first four bytes are the little-endian index of its `KvCommand` variant.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// zstd's default level: about 3x on JSON configuration at several hundred MB/s on one core
/// (docs/benchmarks.md), so compressing costs less than the log, network and fsync it saves.
const COMMAND_ZSTD_LEVEL: i32 = 3;

/// `encoded` (from `encode`) as the log and the peer links carry it: one zstd frame when
/// it is at least `compress_bytes_min` bytes and compressing makes it smaller, else as it
/// is. `decode` takes either form, so logs written before compression still apply.
pub fn compress(encoded: Vec<u8>, compress_bytes_min: usize) -> Vec<u8> {
    if encoded.len() < compress_bytes_min {
        return encoded;
    }
    // With a checksum of the content, so damage shows as an error, never as another command.
    let compressed = zstd::bulk::Compressor::new(COMMAND_ZSTD_LEVEL).and_then(|mut zstd| {
        zstd.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
        zstd.compress(&encoded)
    });
    match compressed {
        Ok(compressed) if compressed.len() < encoded.len() => compressed,
        _ => encoded,
    }
}

/// Whether `bytes` (a logged command) is zstd-compressed.
pub fn is_compressed(bytes: &[u8]) -> bool {
    bytes.starts_with(&ZSTD_MAGIC)
}

pub fn decode(bytes: &[u8], command_bytes_max: usize) -> Result<KvCommand> {
    if bytes.len() > command_bytes_max {
        return Err(Error::CommandTooLarge {
            command_bytes: bytes.len(),
            command_bytes_max,
        });
    }
    if is_compressed(bytes) {
        let plain = decompress(bytes, command_bytes_max)?;
        return decode_plain(&plain, command_bytes_max);
    }
    decode_plain(bytes, command_bytes_max)
}

/// The frame's declared size bounds the allocation before anything is decompressed, so a
/// hostile frame cannot claim more than `command_bytes_max`; a frame without a declared
/// size, or whose content differs from it, is malformed.
fn decompress(bytes: &[u8], command_bytes_max: usize) -> Result<Vec<u8>> {
    let malformed = |why: &str| Error::MalformedCommand(format!("compressed command: {why}"));
    let declared = match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(declared)) => declared,
        Ok(None) => return Err(malformed("no content size")),
        Err(_) => return Err(malformed("bad frame header")),
    };
    let declared = usize::try_from(declared).unwrap_or(usize::MAX);
    if declared > command_bytes_max {
        return Err(Error::CommandTooLarge {
            command_bytes: declared,
            command_bytes_max,
        });
    }
    let mut plain = vec![0; declared];
    match zstd::bulk::decompress_to_buffer(bytes, &mut plain) {
        Ok(written) if written == declared => Ok(plain),
        Ok(_) => Err(malformed("content shorter than declared")),
        Err(error) => Err(malformed(&error.to_string())),
    }
}

fn decode_plain(bytes: &[u8], command_bytes_max: usize) -> Result<KvCommand> {
    wire_options(command_bytes_max as u64)
        .deserialize(bytes)
        .map_err(|e| Error::MalformedCommand(e.to_string()))
}

/// Records the executor wrote itself (events, sessions). Same encoding as the wire; no
/// limit because the bytes come from our own disk, and a decode failure means corruption.
pub(super) fn encode_record<T: Serialize>(record: &T) -> Vec<u8> {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .serialize(record)
        .expect("serializing an in-memory record cannot fail")
}

pub(super) fn decode_record<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .deserialize(bytes)
        .map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8]) -> KvCommand {
        KvCommand::Write {
            session: None,
            request: WriteRequest::Put {
                key: key.to_vec(),
                value: b"v".to_vec(),
            },
        }
    }

    #[test]
    fn round_trip() {
        let command = put(b"k");
        let bytes = encode(&command, 1024).unwrap();
        assert_eq!(decode(&bytes, 1024).unwrap(), command);
    }

    #[test]
    fn large_commands_travel_compressed_and_decode_either_way() {
        let json = br#"{"service":"billing","replicas":3,"region":"us-east-1"},"#.repeat(200);
        let command = KvCommand::Write {
            session: None,
            request: WriteRequest::Put {
                key: b"config/billing".to_vec(),
                value: json,
            },
        };
        let plain = encode(&command, 1 << 20).unwrap();
        assert!(!is_compressed(&plain));
        // Below the threshold: as it is.
        assert_eq!(compress(plain.clone(), plain.len() + 1), plain);
        let logged = compress(plain.clone(), 4096);
        assert!(is_compressed(&logged));
        assert!(logged.len() * 10 < plain.len(), "{} bytes", logged.len());
        assert_eq!(decode(&logged, 1 << 20).unwrap(), command);
        assert_eq!(decode(&plain, 1 << 20).unwrap(), command);
        // Bytes that do not shrink never grow.
        let noise: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let small = encode(&put(&noise), 1 << 20).unwrap();
        assert!(compress(small.clone(), 16).len() <= small.len());
    }

    #[test]
    fn a_compressed_command_over_the_limit_or_damaged_is_refused_before_it_is_inflated() {
        let command = put(&[b'a'; 100_000]);
        let logged = compress(encode(&command, 1 << 20).unwrap(), 1024);
        assert!(logged.len() < 1000);
        // The declared size counts, not the compressed one.
        assert!(matches!(
            decode(&logged, 50_000),
            Err(Error::CommandTooLarge { command_bytes, .. }) if command_bytes > 100_000
        ));
        let mut damaged = logged.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xFF;
        assert!(matches!(
            decode(&damaged, 1 << 20),
            Err(Error::MalformedCommand(_))
        ));
        assert!(matches!(
            decode(&logged[..logged.len() / 2], 1 << 20),
            Err(Error::MalformedCommand(_))
        ));
        assert!(matches!(
            decode(&ZSTD_MAGIC, 1 << 20),
            Err(Error::MalformedCommand(_))
        ));
    }

    #[test]
    fn limits_and_garbage_are_errors() {
        let bytes = encode(&put(&[7; 100]), 1024).unwrap();
        assert!(matches!(
            encode(&put(&[7; 100]), 50),
            Err(Error::CommandTooLarge { .. })
        ));
        assert!(matches!(
            decode(&bytes, 50),
            Err(Error::CommandTooLarge { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode(&trailing, 1024),
            Err(Error::MalformedCommand(_))
        ));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1], 1024),
            Err(Error::MalformedCommand(_))
        ));
        // A length prefix claiming 2^60 bytes must fail on the limit, not allocate.
        let mut hostile = vec![0u8; 4]; // variant Write
        hostile.push(0); // session None
        hostile.extend_from_slice(&0u32.to_le_bytes()); // request Put
        hostile.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(
            decode(&hostile, 1024),
            Err(Error::MalformedCommand(_))
        ));
    }
}
