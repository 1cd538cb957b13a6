//! Large values that travel as many log slots: an upload stages chunks, one per command,
//! and a small `SetUpload` mutation makes them the value of a key, atomically with the rest
//! of its transaction.
//!
//! uploads CF: upload id (16 bytes) → encode_record(UploadRecord), while staging
//! blobs CF:   upload id ++ offset u64 BE → the chunk's bytes
//!
//! A committed value keeps its chunks where they were staged: the data entry holds a
//! `BlobRef` (the upload id and the size) instead of the bytes, so committing copies
//! nothing. The upload's record is deleted in the same batch, so an upload is committed at
//! most once; the chunks go when the garbage collector removes the last version that refers
//! to them. An upload that is neither committed nor aborted is reclaimed once the upload
//! clock (the largest proposer time any upload command carried) passes its expiry; the
//! clock, like every other input, comes from the log, so every replica reclaims the same
//! uploads at the same slot.

use serde::{Deserialize, Serialize};

use rocksdb::DBRawIterator;

use super::error::{Error, Result};

pub const CF_UPLOADS: &str = "uploads";
pub const CF_BLOBS: &str = "blobs";
/// The upload clock: the largest `now_ms` an upload command carried (absent: 0).
pub const META_UPLOAD_CLOCK: &[u8] = b"upload_clock";

pub const UPLOAD_ID_BYTES: usize = 16;
pub type UploadId = [u8; UPLOAD_ID_BYTES];

const BLOB_REF_BYTES: usize = UPLOAD_ID_BYTES + 8;

/// An upload being staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Bytes staged so far: the offset the next chunk must start at.
    pub bytes: u64,
    /// Upload clock time after which the upload is reclaimed.
    pub expires_at_ms: u64,
}

/// A committed value stored as the chunks of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobRef {
    pub upload: UploadId,
    pub bytes: u64,
}

impl BlobRef {
    pub fn encode(&self) -> [u8; BLOB_REF_BYTES] {
        let mut out = [0; BLOB_REF_BYTES];
        out[..UPLOAD_ID_BYTES].copy_from_slice(&self.upload);
        out[UPLOAD_ID_BYTES..].copy_from_slice(&self.bytes.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BlobRef> {
        if bytes.len() != BLOB_REF_BYTES {
            return Err(Error::Corrupt(format!(
                "blob reference of {} bytes",
                bytes.len()
            )));
        }
        let mut upload = [0; UPLOAD_ID_BYTES];
        upload.copy_from_slice(&bytes[..UPLOAD_ID_BYTES]);
        let size = u64::from_be_bytes(bytes[UPLOAD_ID_BYTES..].try_into().expect("8 bytes"));
        Ok(BlobRef {
            upload,
            bytes: size,
        })
    }
}

/// The key of the chunk of `upload` that starts at `offset`.
pub fn chunk_key(upload: &UploadId, offset: u64) -> [u8; UPLOAD_ID_BYTES + 8] {
    let mut out = [0; UPLOAD_ID_BYTES + 8];
    out[..UPLOAD_ID_BYTES].copy_from_slice(upload);
    out[UPLOAD_ID_BYTES..].copy_from_slice(&offset.to_be_bytes());
    out
}

/// [start, end) of every chunk key of `upload`, for one range delete.
pub fn chunk_range(upload: &UploadId) -> (Vec<u8>, Vec<u8>) {
    let start = upload.to_vec();
    let mut end = upload.to_vec();
    end.extend_from_slice(&[0xFF; 9]);
    (start, end)
}

fn chunk_offset(key: &[u8], upload: &UploadId) -> Option<u64> {
    let offset = key.strip_prefix(upload.as_slice())?;
    Some(u64::from_be_bytes(offset.try_into().ok()?))
}

/// `length` bytes of the blob from `offset` (fewer at its end), read from `iter` over the
/// blobs column family: only the chunks that hold them are read. Chunks staged by the
/// slot being applied, not yet in the database, come from `pending` (offset order).
pub fn read(
    iter: &mut DBRawIterator<'_>,
    blob: &BlobRef,
    offset: u64,
    length: u64,
    pending: &[(u64, &[u8])],
) -> Result<Vec<u8>> {
    let end = offset.saturating_add(length).min(blob.bytes);
    let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
    if offset >= end {
        return Ok(out);
    }
    let take = |start: u64, chunk: &[u8], out: &mut Vec<u8>| {
        let chunk_end = start + chunk.len() as u64;
        if chunk_end > offset && start < end {
            let from = offset.saturating_sub(start) as usize;
            let to = (end.min(chunk_end) - start) as usize;
            out.extend_from_slice(&chunk[from..to]);
        }
    };
    iter.seek_for_prev(chunk_key(&blob.upload, offset));
    if iter
        .key()
        .and_then(|k| chunk_offset(k, &blob.upload))
        .is_none()
    {
        iter.seek(chunk_key(&blob.upload, 0));
    }
    while let Some(key) = iter.key() {
        let Some(start) = chunk_offset(key, &blob.upload) else {
            break;
        };
        if start >= end {
            break;
        }
        take(
            start,
            iter.value().expect("a valid iterator has a value"),
            &mut out,
        );
        iter.next();
    }
    iter.status()?;
    for &(start, chunk) in pending {
        take(start, chunk, &mut out);
    }
    let wanted = end - offset;
    if out.len() as u64 != wanted {
        return Err(Error::Corrupt(format!(
            "blob {}: {} of {wanted} bytes from offset {offset} found",
            hex(&blob.upload),
            out.len()
        )));
    }
    Ok(out)
}

pub fn hex(upload: &UploadId) -> String {
    upload.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The id written as 32 hexadecimal digits, as clients see it.
pub fn parse_upload_id(text: &str) -> Option<UploadId> {
    if text.len() != UPLOAD_ID_BYTES * 2 || !text.is_ascii() {
        return None;
    }
    let mut upload = [0; UPLOAD_ID_BYTES];
    for (i, byte) in upload.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(upload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_references_round_trip() {
        let upload = [0xAB; UPLOAD_ID_BYTES];
        assert_eq!(parse_upload_id(&hex(&upload)), Some(upload));
        assert_eq!(parse_upload_id("xyz"), None);
        assert_eq!(parse_upload_id(&"g".repeat(32)), None);
        let blob = BlobRef {
            upload,
            bytes: 1 << 40,
        };
        assert_eq!(BlobRef::decode(&blob.encode()).unwrap(), blob);
        assert!(BlobRef::decode(&[0; 3]).is_err());
        let (start, end) = chunk_range(&upload);
        let key = chunk_key(&upload, u64::MAX);
        assert!(start.as_slice() <= key.as_slice() && key.as_slice() < end.as_slice());
        let mut next = upload;
        next[15] += 1;
        assert!(end.as_slice() <= chunk_key(&next, 0).as_slice());
    }
}
