use super::Slot;

/// Errors the executor returns to its driver and to readers. Programmer errors (a gap in
/// the applied slots) panic instead. Per-command failures are not errors: they are
/// deterministic `WriteOutcome`s, because every replica must decide them the same way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Exactly-once: the slot was applied before (maybe before a restart). Nothing changed.
    #[error("slot {slot} already applied (applied_slot {applied_slot})")]
    AlreadyApplied { slot: Slot, applied_slot: Slot },
    /// The read version was garbage collected. Retry with a newer read version.
    #[error("read version {read_version} is older than oldest_version {oldest_version}")]
    TooOld {
        read_version: u64,
        oldest_version: u64,
    },
    /// This replica has not applied the read version yet. Try again later (or elsewhere).
    #[error("read version {read_version} is ahead of current_version {current_version}")]
    NotYetApplied {
        read_version: u64,
        current_version: u64,
    },
    /// The change log below `oldest_version` was garbage collected. Re-read and re-watch.
    #[error("change log compacted below oldest_version {oldest_version}")]
    Compacted { oldest_version: u64 },
    #[error("command of {command_bytes} bytes exceeds command_bytes_max {command_bytes_max}")]
    CommandTooLarge {
        command_bytes: usize,
        command_bytes_max: usize,
    },
    #[error("malformed command: {0}")]
    MalformedCommand(String),
    /// A bad argument from a reader: an inverted range, a foreign continuation token.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("invalid executor options: {0}")]
    InvalidOptions(String),
    /// Bytes on disk that this layout cannot have written.
    #[error("corrupt executor state: {0}")]
    Corrupt(String),
    /// The executor was dropped (its replica stopped) while a reader waited on it.
    #[error("the executor has stopped")]
    Closed,
    #[error("i/o: {0}")]
    Io(String),
    /// Replacing `ACTIVE` failed part way: which database it names is not known until the
    /// next open.
    #[error("switching to the installed snapshot: {0}")]
    InstallInterrupted(String),
    #[error("rocksdb: {0}")]
    Storage(#[from] rocksdb::Error),
    /// A test fault point fired (see `KvStoreExecutor::crash_before_write`).
    #[cfg(test)]
    #[error("fault injected: {0}")]
    FaultInjected(&'static str),
}

pub type Result<T> = std::result::Result<T, Error>;
