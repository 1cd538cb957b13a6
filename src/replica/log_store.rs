//! Consensus records in the WAL: each `Record` is one WAL record, bincode-encoded. Opening the
//! store replays the WAL into the `DurableState` a replica restarts from.

use std::path::Path;

use bincode::Options;
use paxkv_wal::{Lsn, Wal, WalError, WalOptions};

use crate::consensus::{DurableState, Record, Replay};

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A record passed its checksum but does not decode: written by an incompatible version.
    #[error("WAL record {lsn} does not decode as a consensus record: {source}")]
    Decode { lsn: Lsn, source: bincode::Error },
    #[error("consensus record does not encode: {0}")]
    Encode(bincode::Error),
}

pub type Result<T> = std::result::Result<T, LogStoreError>;

/// The lsn of the first record of a WAL nothing was ever removed from.
const FIRST_LSN: Lsn = 1;

pub struct LogStore {
    wal: Wal,
    /// Record bytes appended since open, for the snapshot interval.
    appended_bytes: u64,
}

fn codec(record_bytes_max: u32) -> impl Options + Copy {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(u64::from(record_bytes_max))
}

impl LogStore {
    /// Open (recovering the WAL) and return the state its records describe.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(LogStore, DurableState)> {
        let wal = Wal::open(dir, options)?;
        let codec = codec(wal.options().record_bytes_max);
        // See `Replay` for what a WAL whose front was removed replays differently.
        let mut replay = Replay::new(wal.first_lsn() > FIRST_LSN);
        for item in wal.iter(..)? {
            let (lsn, bytes) = item?;
            let record: Record = codec
                .deserialize(&bytes)
                .map_err(|source| LogStoreError::Decode { lsn, source })?;
            replay.push(&record);
        }
        let state = replay.finish();
        Ok((
            LogStore {
                wal,
                appended_bytes: 0,
            },
            state,
        ))
    }

    /// Append a Ready's records; they are durable after the next `sync`. Returns the lsn
    /// of the last `Record::Compacted` among them: once it is durable, every record before
    /// it may go (`compact_before`).
    pub fn append(&mut self, records: &[Record]) -> Result<Option<Lsn>> {
        let codec = codec(self.wal.options().record_bytes_max);
        let mut compacted = None;
        for record in records {
            let bytes = codec.serialize(record).map_err(LogStoreError::Encode)?;
            let lsn = self.wal.append(&bytes)?;
            self.appended_bytes += bytes.len() as u64;
            if matches!(record, Record::Compacted { .. }) {
                compacted = Some(lsn);
            }
        }
        Ok(compacted)
    }

    /// Removes the WAL segments that hold only records before `lsn` (a durable
    /// `Record::Compacted` that restates what the log keeps).
    pub fn compact_before(&mut self, lsn: Lsn) -> Result<()> {
        self.wal.compact_prefix(lsn)?;
        Ok(())
    }

    /// Record bytes appended since open.
    pub fn appended_bytes(&self) -> u64 {
        self.appended_bytes
    }

    /// One fdatasync for everything appended so far.
    pub fn sync(&mut self) -> Result<()> {
        self.wal.sync()?;
        Ok(())
    }

    /// Writes everything appended so far to the file without fdatasync: it survives the
    /// process dying, not the machine losing power.
    pub fn flush(&mut self) -> Result<()> {
        self.wal.flush()?;
        Ok(())
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }
}
