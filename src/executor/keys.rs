//! The on-disk layout. Everything here is a pure function of its inputs, so that every
//! replica writes the same bytes.
//!
//! data CF:  escape(user_key) ++ TERMINATOR ++ (u64::MAX - version) big-endian
//!           → tag (0 tombstone, 1 value, 2 blob, 3 canonical JSON document, 4 blob of a canonical
//!             JSON document) ++ create_version u64 BE ++ value bytes
//!           (for a blob: its `BlobRef`; the bytes are in the blobs CF, see `blob`)
//! meta CF:  fixed ASCII names → u64 BE (or the raw GC cursor key)
//! changes:  version u64 BE → encode_record(Vec<Event>)
//! sessions: client_id bytes → encode_record(SessionRecord)

use serde::{Deserialize, Serialize};

use super::blob::BlobRef;
use super::command::WriteOutcome;
use super::error::{Error, Result};

pub const CF_DATA: &str = "data";
pub const CF_META: &str = "meta";
pub const CF_CHANGES: &str = "changes";
pub const CF_SESSIONS: &str = "sessions";
pub use super::blob::{CF_BLOBS, CF_UPLOADS};
pub const COLUMN_FAMILIES: [&str; 6] = [
    CF_DATA,
    CF_META,
    CF_CHANGES,
    CF_SESSIONS,
    CF_UPLOADS,
    CF_BLOBS,
];

pub const META_LAYOUT: &[u8] = b"layout";
pub const META_APPLIED_SLOT: &[u8] = b"applied_slot";
pub const META_CURRENT_VERSION: &[u8] = b"current_version";
pub const META_OLDEST_VERSION: &[u8] = b"oldest_version";
/// The user key at which the next GC step starts (empty: the start of the key space).
pub const META_GC_CURSOR: &[u8] = b"gc_cursor";
/// 16 bytes: the oldest_version the current GC pass started at, and the one the last
/// complete pass ran at (absent: both 0).
pub const META_GC_PASS: &[u8] = b"gc_pass";
/// The membership the log named last at `applied_slot`, as the driver encoded it; absent
/// until the first membership slot is applied. Snapshots and backups carry it.
pub const META_MEMBERSHIP: &[u8] = b"membership";
/// The state digest at `applied_slot` (see `digest`), and the slot its chain starts after
/// (0 for a database that applied every slot from the first).
pub const META_DIGEST: &[u8] = b"digest";
pub const META_DIGEST_BASE: &[u8] = b"digest_base";
/// Bumped whenever the bytes below change meaning; open refuses any other value.
pub const LAYOUT_VERSION: u64 = 1;

/// 0x00 0x01 sorts below an escaped 0x00 (0x00 0xFF) and below any other byte, so a key
/// sorts before all of its extensions and the user-key order is preserved.
const TERMINATOR: [u8; 2] = [0x00, 0x01];
/// Sorts above every TERMINATOR ++ version of the same key and below every extension.
const PAST_KEY: [u8; 2] = [0x00, 0x02];
const VERSION_BYTES: usize = 8;
const SUFFIX_BYTES: usize = TERMINATOR.len() + VERSION_BYTES;

const TAG_TOMBSTONE: u8 = 0;
const TAG_VALUE: u8 = 1;
const TAG_BLOB: u8 = 2;
/// A value written by a document call: canonical JSON (`document::canonical`).
const TAG_DOCUMENT: u8 = 3;
/// A blob whose bytes are a canonical JSON document (committed from an upload).
const TAG_DOCUMENT_BLOB: u8 = 4;
const VALUE_HEADER_BYTES: usize = 1 + 8;

/// A stored version of one user key. `value == None` is a tombstone. A value stored as a
/// blob has `blob` set and an empty `value`: read it with `blob::read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub mod_version: u64,
    pub create_version: u64,
    pub value: Option<Vec<u8>>,
    pub blob: Option<BlobRef>,
    /// The value is a canonical JSON document (written by a document call).
    pub document: bool,
}

impl Versioned {
    pub fn live(&self) -> Option<&Versioned> {
        self.value.as_ref().map(|_| self)
    }

    /// This version without its value's bytes: `value` is empty when live.
    pub fn header(&self) -> Versioned {
        Versioned {
            mod_version: self.mod_version,
            create_version: self.create_version,
            value: self.value.as_ref().map(|_| Vec::new()),
            blob: self.blob,
            document: self.document,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub request_id: i64,
    pub outcome: WriteOutcome,
}

/// The encoded form of a user key: every data key of `key` starts with it, and it sorts
/// exactly where `key` sorts among other escaped keys.
pub fn escape(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + SUFFIX_BYTES + 2);
    for &byte in key {
        out.push(byte);
        if byte == 0x00 {
            out.push(0xFF);
        }
    }
    out
}

fn unescape(escaped: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&byte) = bytes.next() {
        out.push(byte);
        if byte == 0x00 && bytes.next() != Some(&0xFF) {
            return Err(Error::Corrupt("data key: unescaped 0x00".into()));
        }
    }
    Ok(out)
}

/// The data key of `key` at `version`.
pub fn data_key(key: &[u8], version: u64) -> Vec<u8> {
    let mut out = escape(key);
    out.extend_from_slice(&TERMINATOR);
    out.extend_from_slice(&(u64::MAX - version).to_be_bytes());
    out
}

/// Sorts after every version of `key` and before the next user key.
pub fn past_key(key: &[u8]) -> Vec<u8> {
    let mut out = escape(key);
    out.extend_from_slice(&PAST_KEY);
    out
}

/// Splits a data key into (user key, version).
pub fn split_data_key(data_key: &[u8]) -> Result<(Vec<u8>, u64)> {
    let Some(escaped_len) = data_key.len().checked_sub(SUFFIX_BYTES) else {
        return Err(Error::Corrupt("data key shorter than its suffix".into()));
    };
    let (escaped, suffix) = data_key.split_at(escaped_len);
    if suffix[..TERMINATOR.len()] != TERMINATOR {
        return Err(Error::Corrupt("data key without terminator".into()));
    }
    let inverted = u64::from_be_bytes(suffix[TERMINATOR.len()..].try_into().expect("8 bytes"));
    Ok((unescape(escaped)?, u64::MAX - inverted))
}

/// True when `data_key` is a version of the user key whose escape is `escaped`.
pub fn is_version_of(data_key: &[u8], escaped: &[u8]) -> bool {
    data_key.len() == escaped.len() + SUFFIX_BYTES
        && data_key.starts_with(escaped)
        && data_key[escaped.len()..escaped.len() + TERMINATOR.len()] == TERMINATOR
}

pub fn encode_value(value: Option<&[u8]>, create_version: u64) -> Vec<u8> {
    encode_tagged(value, create_version, false)
}

/// `encode_value`, tagged as a canonical document when `document`.
pub fn encode_tagged(value: Option<&[u8]>, create_version: u64, document: bool) -> Vec<u8> {
    let body = value.unwrap_or_default();
    let mut out = Vec::with_capacity(VALUE_HEADER_BYTES + body.len());
    out.push(match (value.is_some(), document) {
        (false, _) => TAG_TOMBSTONE,
        (true, false) => TAG_VALUE,
        (true, true) => TAG_DOCUMENT,
    });
    out.extend_from_slice(&create_version.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn encode_blob(blob: &BlobRef, create_version: u64, document: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_HEADER_BYTES + 24);
    out.push(match document {
        false => TAG_BLOB,
        true => TAG_DOCUMENT_BLOB,
    });
    out.extend_from_slice(&create_version.to_be_bytes());
    out.extend_from_slice(&blob.encode());
    out
}

/// The blob a stored data value refers to, if it is one (without decoding the rest).
pub fn blob_of(bytes: &[u8]) -> Result<Option<BlobRef>> {
    match bytes.first() {
        Some(&(TAG_BLOB | TAG_DOCUMENT_BLOB)) => {
            BlobRef::decode(&bytes[VALUE_HEADER_BYTES.min(bytes.len())..]).map(Some)
        }
        _ => Ok(None),
    }
}

/// `decode_value` without copying the value's bytes (`value` is empty when live).
pub fn decode_header(bytes: &[u8], mod_version: u64) -> Result<Versioned> {
    let header = &bytes[..VALUE_HEADER_BYTES.min(bytes.len())];
    let mut versioned = match bytes.first() {
        Some(&(TAG_BLOB | TAG_DOCUMENT_BLOB)) => decode_value(bytes, mod_version)?,
        _ => decode_value(header, mod_version)?,
    };
    if versioned.value.is_some() {
        versioned.value = Some(Vec::new());
    }
    Ok(versioned)
}

pub fn decode_value(bytes: &[u8], mod_version: u64) -> Result<Versioned> {
    if bytes.len() < VALUE_HEADER_BYTES {
        return Err(Error::Corrupt("data value shorter than its header".into()));
    }
    let create_version = u64::from_be_bytes(bytes[1..VALUE_HEADER_BYTES].try_into().expect("8"));
    let body = || Some(bytes[VALUE_HEADER_BYTES..].to_vec());
    let (value, blob) = match bytes[0] {
        TAG_TOMBSTONE => (None, None),
        TAG_VALUE | TAG_DOCUMENT => (body(), None),
        TAG_BLOB | TAG_DOCUMENT_BLOB => (
            Some(Vec::new()),
            Some(BlobRef::decode(&bytes[VALUE_HEADER_BYTES..])?),
        ),
        tag => return Err(Error::Corrupt(format!("data value tag {tag}"))),
    };
    Ok(Versioned {
        mod_version,
        create_version,
        value,
        blob,
        document: matches!(bytes[0], TAG_DOCUMENT | TAG_DOCUMENT_BLOB),
    })
}

pub fn version_key(version: u64) -> [u8; 8] {
    version.to_be_bytes()
}

pub fn decode_u64(bytes: &[u8], what: &str) -> Result<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{what}: {} bytes, want 8", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

/// FoundationDB's 10-byte versionstamp: the commit version then a 2-byte batch order.
/// Every command has its own version, so the batch order is always 0.
pub fn versionstamp(version: u64) -> [u8; 10] {
    let mut stamp = [0u8; 10];
    stamp[..8].copy_from_slice(&version.to_be_bytes());
    stamp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keys_sort_by_user_key_then_newest_first() {
        let keys: [&[u8]; 6] = [b"", b"a", b"a\0", b"a\0\0", b"a\x01", b"ab"];
        let mut encoded = Vec::new();
        for key in keys {
            for version in [9, 5, 1] {
                encoded.push(data_key(key, version));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(sorted, encoded);
        for key in keys {
            assert!(past_key(key) > data_key(key, 0));
            assert!(past_key(key) < data_key(&[key, b"\0".as_slice()].concat(), u64::MAX));
            assert_eq!(
                split_data_key(&data_key(key, 5)).unwrap(),
                (key.to_vec(), 5)
            );
            assert!(is_version_of(&data_key(key, 5), &escape(key)));
        }
        assert!(!is_version_of(&data_key(b"a\0", 5), &escape(b"a")));
    }

    #[test]
    fn values_round_trip() {
        let live = decode_value(&encode_value(Some(b"xy"), 3), 7).unwrap();
        assert_eq!(
            live,
            Versioned {
                mod_version: 7,
                create_version: 3,
                value: Some(b"xy".to_vec()),
                blob: None,
                document: false,
            }
        );
        assert_eq!(decode_value(&encode_value(None, 0), 7).unwrap().value, None);
        let blob = BlobRef {
            upload: [7; 16],
            bytes: 1 << 33,
        };
        let stored = encode_blob(&blob, 3, false);
        assert_eq!(blob_of(&stored).unwrap(), Some(blob));
        let document = encode_blob(&blob, 3, true);
        assert_eq!(blob_of(&document).unwrap(), Some(blob));
        let decoded = decode_value(&document, 9).unwrap();
        assert_eq!(decode_header(&document, 9).unwrap(), decoded);
        let inline = encode_tagged(Some(b"{}"), 4, true);
        let header = decode_header(&inline, 9).unwrap();
        assert_eq!(header.value, Some(Vec::new()));
        assert!(header.document && header.create_version == 4);
        let tombstone = decode_header(&encode_value(None, 4), 9).unwrap();
        assert_eq!(tombstone.value, None);
        assert!(decoded.document && decoded.blob == Some(blob));
        assert!(!decode_value(&stored, 9).unwrap().document);
        assert_eq!(blob_of(&encode_value(Some(b"xy"), 3)).unwrap(), None);
        let decoded = decode_value(&stored, 7).unwrap();
        assert_eq!(
            (decoded.blob, decoded.value),
            (Some(blob), Some(Vec::new()))
        );
        assert!(decode_value(&[1, 2], 7).is_err());
        assert!(split_data_key(b"a\0\x02aaaaaaaa").is_err());
    }
}
