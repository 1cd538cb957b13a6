//! Snapshots: a replica's whole key-value state at one applied slot, as one file.
//!
//! A snapshot lets a replica compact its WAL below the slot it covers, lets a replica that
//! fell behind the leader's compacted log catch up (the file is streamed to it over the peer
//! port and installed atomically), and is what `paxkv backup` writes and `paxkv restore`
//! seeds a new cluster from.
//!
//! On disk, under a replica's data directory:
//! - `snapshots/snap-<slot>.pxs`: the newest local snapshot (older ones are removed once a
//!   newer one is durable); `snapshots/incoming-<slot>.pxs` while one is being received.
//! - `KV_CURRENT` names the RocksDB directory in use (`kv`, or `kv-<slot>` after an
//!   install); a directory it does not name is left over from a crash and removed at start.
//!
//! The file format is in [`file`]; the peer stream in [`stream`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod dirs;
pub mod file;
pub mod stream;

/// A position in the replicated log.
pub type Slot = u64;

/// A complete, verified snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Every slot up to this one is applied in the snapshot, none after.
    pub slot: Slot,
    /// The executor's current version at `slot` (the newest version a read can name).
    pub version: u64,
    /// Length of the file.
    pub bytes: u64,
    /// The file's checksum (see [`file`]), equal on every copy of the same snapshot.
    pub checksum: u32,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot i/o on {path}: {error}")]
    Io {
        path: String,
        error: std::io::Error,
    },
    /// The file is damaged or not a snapshot: the reason names what failed where.
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("snapshot database: {0}")]
    Db(String),
    #[error("snapshot transfer: {0}")]
    Transfer(String),
    #[error("no snapshot is available")]
    Unavailable,
}

pub type Result<T> = std::result::Result<T, SnapshotError>;

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |error| SnapshotError::Io {
        path: path.display().to_string(),
        error,
    }
}
