//! The one error type of the WAL layer.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::Lsn;

/// Everything that can go wrong in the WAL. Programmer errors (broken internal invariants)
/// panic instead; these are the operating errors a caller has to handle.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file system call failed. `op` names what the WAL was doing.
    #[error("wal {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The bytes on disk are not what the WAL wrote, in a place where a crash cannot explain
    /// it. Recovery refuses to guess: nothing is dropped silently.
    #[error("corrupt wal segment {} at byte {offset}: {reason}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The payload is larger than `WalOptions::record_bytes_max`. Nothing was written.
    #[error("record of {bytes} bytes exceeds record_bytes_max {record_bytes_max}")]
    RecordTooLarge { bytes: u64, record_bytes_max: u32 },

    /// The lsn is outside what the operation accepts (for reads: below the first retained
    /// lsn; for truncation: outside `[first_lsn, next_lsn]`; for syncs: not yet appended).
    #[error("lsn {lsn} is out of range: retained log is [{first_lsn}, {next_lsn})")]
    LsnOutOfRange {
        lsn: Lsn,
        first_lsn: Lsn,
        next_lsn: Lsn,
    },

    /// The fdatasync that was to make every record up to `lsn` durable failed. Those records
    /// may or may not be on disk; the WAL is poisoned from now on.
    #[error("fdatasync covering lsn {lsn} failed: {source}")]
    SyncFailed {
        lsn: Lsn,
        #[source]
        source: Arc<io::Error>,
    },

    /// An earlier write or fdatasync failed, so the file's state is unknown and the WAL
    /// refuses to write (fsync errors are not retryable: the kernel may have dropped the
    /// dirty pages). Reopen the WAL to recover from what is on disk.
    #[error("wal refuses writes after an earlier failure: {cause}")]
    Poisoned { cause: String },

    /// `WalOptions` that cannot work, e.g. a segment too small for one frame.
    #[error("invalid wal options: {reason}")]
    InvalidOptions { reason: String },
}

pub type Result<T> = std::result::Result<T, WalError>;

/// Wraps an `io::Error` with what was being done and to which file.
pub(crate) fn io_error(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
    WalError::Io {
        op,
        path: path.into(),
        source,
    }
}

pub(crate) fn corrupt(
    path: impl Into<PathBuf>,
    offset: u64,
    reason: impl Into<String>,
) -> WalError {
    WalError::Corrupt {
        path: path.into(),
        offset,
        reason: reason.into(),
    }
}
