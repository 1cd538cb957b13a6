//! Forced snapshots and reads of snapshot files, for `paxkv backup`: a client asks one
//! replica to snapshot now, then downloads that replica's file in chunks.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use super::{PrimaryRouter, Result, RouterError};
use crate::replica::DriverError;
use crate::snapshot::SnapshotInfo;

/// Bytes of a snapshot file from some offset, and the file's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub data: Vec<u8>,
    pub total_bytes: u64,
}

impl PrimaryRouter {
    /// Takes a snapshot on this replica now, after a linearizable read point, so it holds
    /// every write acknowledged before the call; resolves once the file is durable.
    pub async fn snapshot(&self) -> Result<SnapshotInfo> {
        let taken = self.handle.snapshot().await;
        taken.map_err(|error| match error {
            // There is no argument to be invalid: the replica could not take it.
            DriverError::Rejected(reason) => {
                RouterError::Internal(format!("the snapshot was refused: {reason}"))
            }
            other => self.driver_error(other),
        })
    }

    /// At most `max_bytes` (capped at `snapshot_chunk_bytes_max`) of this replica's
    /// snapshot file `slot` from `offset`. Blocks on file i/o.
    pub fn read_snapshot(&self, slot: u64, offset: u64, max_bytes: usize) -> Result<SnapshotChunk> {
        let length = self.limits.snapshot_chunk_bytes(max_bytes)?;
        let info = self.handle.snapshot_file(slot);
        let info = info.ok_or(RouterError::SnapshotGone { slot })?;
        read_chunk(&info, offset, length)
    }
}

/// At most `length` bytes of the file `info` names, from `offset` (at most its size).
pub(super) fn read_chunk(info: &SnapshotInfo, offset: u64, length: usize) -> Result<SnapshotChunk> {
    if offset > info.bytes {
        return Err(RouterError::InvalidArgument(format!(
            "offset {offset} is beyond the end of snapshot {} ({} bytes)",
            info.slot, info.bytes
        )));
    }
    let length = (info.bytes - offset).min(length as u64);
    let internal = |error: io::Error| {
        let path = info.path.display();
        RouterError::Internal(format!("reading snapshot file {path}: {error}"))
    };
    let mut file = match File::open(&info.path) {
        // Replaced by a newer snapshot between the lookup and the open.
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(RouterError::SnapshotGone { slot: info.slot })
        }
        opened => opened.map_err(internal)?,
    };
    file.seek(SeekFrom::Start(offset)).map_err(internal)?;
    // `length` is at most snapshot_chunk_bytes_max, so this allocation is bounded.
    let mut data = Vec::with_capacity(length as usize);
    file.take(length).read_to_end(&mut data).map_err(internal)?;
    if (data.len() as u64) < length {
        return Err(RouterError::Internal(format!(
            "snapshot file {} ends at {} bytes, before its recorded {} bytes",
            info.path.display(),
            offset + data.len() as u64,
            info.bytes
        )));
    }
    Ok(SnapshotChunk {
        data,
        total_bytes: info.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, SnapshotInfo) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap-7.pxs");
        std::fs::write(&path, bytes).unwrap();
        let info = SnapshotInfo {
            slot: 7,
            version: 5,
            bytes: bytes.len() as u64,
            checksum: crc32c::crc32c(bytes),
            path,
        };
        (dir, info)
    }

    #[test]
    fn chunks_cover_the_file_and_end_empty_at_its_size() {
        let bytes: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let (_dir, info) = file_of(&bytes);
        let mut read = Vec::new();
        loop {
            let chunk = read_chunk(&info, read.len() as u64, 300).unwrap();
            assert_eq!(chunk.total_bytes, 1000);
            assert!(chunk.data.len() <= 300);
            if chunk.data.is_empty() {
                break;
            }
            read.extend_from_slice(&chunk.data);
        }
        assert_eq!(read, bytes);
        assert_eq!(read_chunk(&info, 900, 300).unwrap().data, bytes[900..]);
    }

    #[test]
    fn an_offset_beyond_the_end_is_invalid() {
        let (_dir, info) = file_of(b"0123456789");
        let error = read_chunk(&info, 11, 4).unwrap_err();
        let RouterError::InvalidArgument(message) = error else {
            panic!("expected InvalidArgument, got {error:?}");
        };
        assert!(message.contains("offset 11"), "{message}");
    }

    #[test]
    fn a_removed_file_is_gone_and_names_its_slot() {
        let (_dir, info) = file_of(b"0123456789");
        std::fs::remove_file(&info.path).unwrap();
        assert_eq!(
            read_chunk(&info, 0, 4),
            Err(RouterError::SnapshotGone { slot: 7 })
        );
        let message = RouterError::SnapshotGone { slot: 7 }.to_string();
        assert!(message.contains("snapshot 7"), "{message}");
    }

    #[test]
    fn a_file_shorter_than_recorded_is_internal() {
        let (_dir, mut info) = file_of(b"0123456789");
        info.bytes = 20;
        assert!(matches!(
            read_chunk(&info, 8, 10),
            Err(RouterError::Internal(_))
        ));
    }
}
