//! The request limits every replica enforces before anything is proposed. Each one that is
//! hit gives `LimitExceeded` naming it.

use serde::{Deserialize, Serialize};

use super::{Result, RouterError};
use crate::executor::{Compare, KeyRange, Mutation, SessionId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes in a key (also range bounds and compare keys). Keys are never empty.
    pub key_bytes_max: usize,
    /// Bytes in a value.
    pub value_bytes_max: usize,
    /// Mutations in one commit, or in one branch of a txn.
    pub mutations_per_txn_max: usize,
    /// Read conflict ranges in one commit.
    pub read_conflict_ranges_max: usize,
    /// Compares in one txn.
    pub compares_per_txn_max: usize,
    /// Bytes of one encoded command (a whole commit or txn).
    pub command_bytes_max: usize,
    /// Bytes in a session's client id.
    pub client_id_bytes_max: usize,
    /// Longest watch long-poll; longer requested timeouts are shortened to it.
    pub watch_timeout_ms_max: u64,
    /// Bytes of snapshot file in one `readSnapshot` reply; larger requests get this many.
    pub snapshot_chunk_bytes_max: usize,
    /// Encoded commands of at least this many bytes go into the log and over the peer links
    /// zstd-compressed (when that makes them smaller). Not a limit on clients: they always
    /// send and receive plain bytes. A value above `command_bytes_max` turns it off.
    pub compress_command_bytes_min: usize,
    /// Bytes in one `uploadChunk` and in one `getValueRange` reply: how a value larger
    /// than a comfortable frame travels in pieces. Neither exceeds `value_bytes_max`
    /// either, so a chunk always fits in a command and a frame.
    pub chunk_bytes_max: usize,
    /// A staged upload that receives no chunk for this long is reclaimed (its proposer's
    /// clock, carried in the log).
    pub upload_ttl_ms: u64,
    /// JSON documents larger than this are put in canonical form and diffed against the
    /// version they replace by scanning their bytes, never parsed into a tree (which takes
    /// about 40 times a document's size) by the replica that takes the write. A diff found
    /// that way holds only `replace` operations; below this size a tree finds any patch.
    pub document_tree_bytes_max: usize,
}

/// The largest `value_bytes_max` a node accepts. Every bound a value passes on its way
/// (command, slot, WAL record, peer frame) is derived from it with room to spare, and the
/// largest of them stays well inside a frame length's 31 bits.
pub const VALUE_BYTES_MAX_LIMIT: usize = 512 << 20;

/// The largest `command_bytes_max` a node accepts (a value of `VALUE_BYTES_MAX_LIMIT`, its
/// key and a transaction's envelope fit).
pub const COMMAND_BYTES_MAX_LIMIT: usize = VALUE_BYTES_MAX_LIMIT + (16 << 20);

/// What a request or reply carrying one full-size key and value holds besides them (message
/// and field headers, a session, versions), rounded up generously: a full-size `put` and
/// `get` reply fit in a Thrift frame of `key_bytes_max + value_bytes_max` plus this.
pub const VALUE_FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

/// What a `readSnapshot` reply carries besides its data (message header, field headers,
/// `totalBytes`), rounded up generously: a chunk plus this must fit in one Thrift frame.
pub const SNAPSHOT_CHUNK_REPLY_OVERHEAD_BYTES: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 10 * 1024,
            value_bytes_max: 128 * 1024 * 1024,
            mutations_per_txn_max: 10_000,
            read_conflict_ranges_max: 10_000,
            compares_per_txn_max: 1_000,
            command_bytes_max: 144 * 1024 * 1024,
            client_id_bytes_max: 256,
            watch_timeout_ms_max: 60_000,
            snapshot_chunk_bytes_max: 4 * 1024 * 1024,
            compress_command_bytes_min: 4096,
            chunk_bytes_max: 4 * 1024 * 1024,
            upload_ttl_ms: 3_600_000,
            document_tree_bytes_max: crate::executor::document::TREE_BYTES_MAX_DEFAULT,
        }
    }
}

fn exceeded(limit: &'static str, actual: usize, maximum: usize) -> RouterError {
    RouterError::LimitExceeded {
        limit,
        actual: actual as u64,
        maximum: maximum as u64,
    }
}

fn at_most(limit: &'static str, actual: usize, maximum: usize) -> Result<()> {
    if actual > maximum {
        return Err(exceeded(limit, actual, maximum));
    }
    Ok(())
}

impl Limits {
    /// Every limit positive, a full-size key and value fit in one command, and a full
    /// snapshot chunk in the largest Thrift frame.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("key_bytes_max", self.key_bytes_max),
            ("value_bytes_max", self.value_bytes_max),
            ("mutations_per_txn_max", self.mutations_per_txn_max),
            ("read_conflict_ranges_max", self.read_conflict_ranges_max),
            ("compares_per_txn_max", self.compares_per_txn_max),
            ("command_bytes_max", self.command_bytes_max),
            ("client_id_bytes_max", self.client_id_bytes_max),
            ("watch_timeout_ms_max", self.watch_timeout_ms_max as usize),
            ("snapshot_chunk_bytes_max", self.snapshot_chunk_bytes_max),
            ("chunk_bytes_max", self.chunk_bytes_max),
            ("upload_ttl_ms", self.upload_ttl_ms as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("limits.{name} must be positive"));
        }
        if self.value_bytes_max > VALUE_BYTES_MAX_LIMIT {
            return Err(format!(
                "limits.value_bytes_max ({}) must not exceed {VALUE_BYTES_MAX_LIMIT}",
                self.value_bytes_max
            ));
        }
        if self.command_bytes_max > COMMAND_BYTES_MAX_LIMIT {
            return Err(format!(
                "limits.command_bytes_max ({}) must not exceed {COMMAND_BYTES_MAX_LIMIT}",
                self.command_bytes_max
            ));
        }
        if self.key_bytes_max + self.value_bytes_max + 1024 > self.command_bytes_max {
            return Err(format!(
                "limits.command_bytes_max ({}) must exceed key_bytes_max + value_bytes_max + 1024",
                self.command_bytes_max
            ));
        }
        self.check_snapshot_chunk_fits(crate::api::FRAME_BYTES_MAX_LIMIT)?;
        self.check_values_fit(crate::api::FRAME_BYTES_MAX_LIMIT)
    }

    /// A request with a full-size key and value (a `put`), and a reply with them (a `get`),
    /// fit in a frame of `frame_bytes_max`. `validate` checks it against the largest frame
    /// Thrift allows; a node checks it against its `[server].frame_bytes_max` too.
    pub fn check_values_fit(&self, frame_bytes_max: u32) -> std::result::Result<(), String> {
        let frame_bytes = (self.key_bytes_max)
            .saturating_add(self.value_bytes_max)
            .saturating_add(VALUE_FRAME_OVERHEAD_BYTES);
        if frame_bytes > frame_bytes_max as usize {
            return Err(format!(
                "limits.key_bytes_max + value_bytes_max ({}) + {VALUE_FRAME_OVERHEAD_BYTES} \
                 must not exceed the frame limit ({frame_bytes_max}): a full-size put could \
                 not be sent",
                self.key_bytes_max + self.value_bytes_max
            ));
        }
        Ok(())
    }

    /// A full snapshot chunk and its reply's overhead fit in a frame of `frame_bytes_max`.
    /// `validate` checks it against the largest frame Thrift allows; a node checks it
    /// against its configured `[server].frame_bytes_max` too.
    pub fn check_snapshot_chunk_fits(
        &self,
        frame_bytes_max: u32,
    ) -> std::result::Result<(), String> {
        let reply_bytes = self
            .snapshot_chunk_bytes_max
            .saturating_add(SNAPSHOT_CHUNK_REPLY_OVERHEAD_BYTES);
        if reply_bytes > frame_bytes_max as usize {
            return Err(format!(
                "limits.snapshot_chunk_bytes_max ({}) + {SNAPSHOT_CHUNK_REPLY_OVERHEAD_BYTES} \
                 must not exceed the frame limit ({frame_bytes_max})",
                self.snapshot_chunk_bytes_max
            ));
        }
        Ok(())
    }

    /// The bytes a `readSnapshot` asking for `requested` gets: positive, capped at
    /// `snapshot_chunk_bytes_max`.
    pub fn snapshot_chunk_bytes(&self, requested: usize) -> Result<usize> {
        if requested == 0 {
            return Err(RouterError::InvalidArgument(
                "maxBytes must be positive".into(),
            ));
        }
        Ok(requested.min(self.snapshot_chunk_bytes_max))
    }

    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(RouterError::InvalidArgument("keys are never empty".into()));
        }
        at_most("key_bytes_max", key.len(), self.key_bytes_max)
    }

    /// Range bounds may be empty (the start or end of the key space).
    fn check_bound(&self, bound: &[u8]) -> Result<()> {
        at_most("key_bytes_max", bound.len(), self.key_bytes_max)
    }

    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        at_most("value_bytes_max", value.len(), self.value_bytes_max)
    }

    pub fn check_range(&self, range: &KeyRange) -> Result<()> {
        self.check_bound(&range.start)?;
        self.check_bound(&range.end)?;
        if range.is_inverted() {
            return Err(RouterError::InvalidArgument(
                "range start_key is after end_key".into(),
            ));
        }
        Ok(())
    }

    pub fn check_ranges(&self, limit: &'static str, ranges: &[KeyRange]) -> Result<()> {
        at_most(limit, ranges.len(), self.read_conflict_ranges_max)?;
        ranges.iter().try_for_each(|range| self.check_range(range))
    }

    pub fn check_mutations(&self, mutations: &[Mutation]) -> Result<()> {
        let count = mutations.len();
        at_most("mutations_per_txn_max", count, self.mutations_per_txn_max)?;
        for mutation in mutations {
            match mutation {
                Mutation::Set { key, value }
                | Mutation::SetVersionstampedKey { key, value }
                | Mutation::SetVersionstampedValue { key, value } => {
                    self.check_key(key)?;
                    self.check_value(value)?;
                }
                Mutation::Add { key, param } => {
                    self.check_key(key)?;
                    self.check_value(param)?;
                }
                Mutation::Clear { key }
                | Mutation::SetUpload { key, .. }
                | Mutation::SetUploadDocument { key, .. } => self.check_key(key)?,
                Mutation::Copy { key, from } => {
                    self.check_key(key)?;
                    self.check_key(from)?;
                }
                Mutation::SetPatched { key, base, patch } => {
                    self.check_key(key)?;
                    self.check_key(base)?;
                    self.check_value(patch)?;
                }
                Mutation::ClearRange { start, end } => self.check_range(&KeyRange {
                    start: start.clone(),
                    end: end.clone(),
                })?,
            }
        }
        Ok(())
    }

    pub fn check_compares(&self, compares: &[Compare]) -> Result<()> {
        at_most(
            "compares_per_txn_max",
            compares.len(),
            self.compares_per_txn_max,
        )?;
        for compare in compares {
            self.check_key(&compare.key)?;
            if let Some(value) = &compare.value {
                self.check_value(value)?;
            }
        }
        Ok(())
    }

    pub fn check_session(&self, session: &SessionId) -> Result<()> {
        if session.client_id.is_empty() {
            return Err(RouterError::InvalidArgument(
                "session client_id is empty".into(),
            ));
        }
        if session.request_id < 1 {
            return Err(RouterError::InvalidArgument(
                "session request_id must be positive".into(),
            ));
        }
        if session.client_id.starts_with('\0') {
            return Err(RouterError::InvalidArgument(
                "session client_ids starting with a NUL byte are the replicas' own".into(),
            ));
        }
        let bytes = session.client_id.len();
        at_most("client_id_bytes_max", bytes, self.client_id_bytes_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_named_when_hit() {
        let limits = Limits {
            key_bytes_max: 4,
            value_bytes_max: 8,
            mutations_per_txn_max: 1,
            ..Limits::default()
        };
        let named = |result: Result<()>| match result {
            Err(RouterError::LimitExceeded { limit, .. }) => limit,
            other => panic!("expected LimitExceeded, got {other:?}"),
        };
        assert_eq!(named(limits.check_key(b"12345")), "key_bytes_max");
        assert_eq!(named(limits.check_value(&[0; 9])), "value_bytes_max");
        let set = |key: &[u8]| Mutation::Set {
            key: key.to_vec(),
            value: vec![],
        };
        assert_eq!(
            named(limits.check_mutations(&[set(b"a"), set(b"b")])),
            "mutations_per_txn_max"
        );
        assert!(limits.check_key(b"1234").is_ok());
        assert!(matches!(
            limits.check_key(b""),
            Err(RouterError::InvalidArgument(_))
        ));
    }

    #[test]
    fn defaults_are_valid_and_zero_is_not() {
        Limits::default().validate().unwrap();
        let zero = Limits {
            value_bytes_max: 0,
            ..Limits::default()
        };
        assert!(zero.validate().unwrap_err().contains("value_bytes_max"));
        let zero_chunk = Limits {
            snapshot_chunk_bytes_max: 0,
            ..Limits::default()
        };
        let error = zero_chunk.validate().unwrap_err();
        assert!(error.contains("snapshot_chunk_bytes_max"), "{error}");
    }

    #[test]
    fn a_snapshot_chunk_must_fit_in_a_frame() {
        let limits = Limits::default();
        assert_eq!(limits.snapshot_chunk_bytes_max, 4 * 1024 * 1024);
        let frame = (limits.snapshot_chunk_bytes_max + SNAPSHOT_CHUNK_REPLY_OVERHEAD_BYTES) as u32;
        assert!(limits.check_snapshot_chunk_fits(frame).is_ok());
        let error = limits.check_snapshot_chunk_fits(frame - 1).unwrap_err();
        assert!(error.contains("snapshot_chunk_bytes_max"), "{error}");
        let huge = Limits {
            snapshot_chunk_bytes_max: i32::MAX as usize,
            ..Limits::default()
        };
        assert!(huge.validate().unwrap_err().contains("frame limit"));
    }

    #[test]
    fn snapshot_chunk_requests_are_positive_and_capped() {
        let limits = Limits {
            snapshot_chunk_bytes_max: 100,
            ..Limits::default()
        };
        assert_eq!(limits.snapshot_chunk_bytes(1), Ok(1));
        assert_eq!(limits.snapshot_chunk_bytes(100), Ok(100));
        assert_eq!(limits.snapshot_chunk_bytes(usize::MAX), Ok(100));
        assert!(matches!(
            limits.snapshot_chunk_bytes(0),
            Err(RouterError::InvalidArgument(_))
        ));
    }
}
