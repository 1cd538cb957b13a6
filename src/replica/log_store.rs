//! Consensus records in the WAL: each `Record` is one WAL record, bincode-encoded. Opening the
//! store replays the WAL into the `DurableState` a replica restarts from.

use std::path::Path;

use bincode::Options;
use paxkv_wal::{Lsn, Wal, WalError, WalOptions};

use crate::consensus::{DurableState, Record};

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

pub struct LogStore {
    wal: Wal,
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
        let mut state = DurableState::default();
        let codec = codec(wal.options().record_bytes_max);
        for item in wal.iter(..)? {
            let (lsn, bytes) = item?;
            let record: Record = codec
                .deserialize(&bytes)
                .map_err(|source| LogStoreError::Decode { lsn, source })?;
            state.apply(&record);
        }
        Ok((LogStore { wal }, state))
    }

    /// Append a Ready's records; they are durable after the next `sync`.
    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        let codec = codec(self.wal.options().record_bytes_max);
        for record in records {
            let bytes = codec.serialize(record).map_err(LogStoreError::Encode)?;
            self.wal.append(&bytes)?;
        }
        Ok(())
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
