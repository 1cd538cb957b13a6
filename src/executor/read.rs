//! Snapshot reads at a version, and the key scans the applier shares with them.

use rocksdb::{DBRawIterator, SnapshotWithThreadMode, DB};

use super::blob::{self, BlobRef};
use super::command::KeyRange;
use super::error::{Error, Result};
use super::keys::{self, Versioned};
use super::ExecutorOptions;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_version: u64,
    pub create_version: u64,
    /// The value is a canonical JSON document (written by a document call).
    pub document: bool,
}

/// Part of one value, as `get_value_range` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRange {
    pub data: Vec<u8>,
    /// The size of the whole value.
    pub total_bytes: u64,
    pub mod_version: u64,
    pub create_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePage {
    /// Ascending key order, or descending when `reverse`.
    pub kvs: Vec<KeyValue>,
    /// The range may hold more keys: pass `continuation` back to read them. A page may be
    /// short (even empty) with `more` set when it hit `range_keys_scanned_max`.
    pub more: bool,
    /// Opaque; valid only with the same range, direction and read version.
    pub continuation: Option<Vec<u8>>,
}

const CONTINUE_FORWARD: u8 = b'F';
const CONTINUE_REVERSE: u8 = b'R';

/// One consistent view of the database for reads: a RocksDB snapshot, and the version
/// window that was current in it. The applier and the garbage collector may go on writing;
/// nothing they write after the snapshot is seen, so a read can never see half a slot or
/// a version the collector removed mid-read.
pub(super) struct View<'a> {
    pub(super) db: &'a DB,
    pub(super) snapshot: SnapshotWithThreadMode<'a, DB>,
    pub(super) options: &'a ExecutorOptions,
    pub(super) oldest_version: u64,
    pub(super) current_version: u64,
}

impl View<'_> {
    pub(super) fn iterator(&self, column_family: &str) -> DBRawIterator<'_> {
        self.snapshot
            .raw_iterator_cf(super::cf(self.db, column_family))
    }

    /// The newest value of `key` at a version <= `read_version`.
    pub fn get(&self, key: &[u8], read_version: u64) -> Result<Option<KeyValue>> {
        self.check_read_version(read_version)?;
        let mut iter = self.iterator(super::keys::CF_DATA);
        let visible = seek_visible(&mut iter, key, read_version)?;
        match visible {
            Some(visible) => self.key_value(key.to_vec(), visible),
            None => Ok(None),
        }
    }

    /// `length` bytes of `key`'s value from `offset` (fewer at its end) as of
    /// `read_version`; None when the key is absent. A value stored as a blob is read
    /// chunk by chunk: only the chunks that hold the range.
    pub fn get_value_range(
        &self,
        key: &[u8],
        read_version: u64,
        offset: u64,
        length: u64,
    ) -> Result<Option<ValueRange>> {
        self.check_read_version(read_version)?;
        let mut iter = self.iterator(super::keys::CF_DATA);
        let Some(visible) = seek_visible(&mut iter, key, read_version)? else {
            return Ok(None);
        };
        let Some(value) = visible.value else {
            return Ok(None);
        };
        let (data, total_bytes) = match visible.blob {
            Some(blob) => {
                let mut chunks = self.iterator(super::keys::CF_BLOBS);
                (
                    blob::read(&mut chunks, &blob, offset, length, &[])?,
                    blob.bytes,
                )
            }
            None => {
                let total = value.len() as u64;
                let start = offset.min(total) as usize;
                let end = offset.saturating_add(length).min(total) as usize;
                (value[start..end].to_vec(), total)
            }
        };
        Ok(Some(ValueRange {
            data,
            total_bytes,
            mod_version: visible.mod_version,
            create_version: visible.create_version,
        }))
    }

    /// `visible` as a client sees it (None for a tombstone), with a blob's bytes read.
    fn key_value(&self, key: Vec<u8>, visible: Versioned) -> Result<Option<KeyValue>> {
        let Some(value) = visible.value else {
            return Ok(None);
        };
        let value = match visible.blob {
            Some(blob) => self.blob_bytes(&blob)?,
            None => value,
        };
        Ok(Some(KeyValue {
            key,
            value,
            mod_version: visible.mod_version,
            create_version: visible.create_version,
            document: visible.document,
        }))
    }

    /// The bytes staged in `upload` and their count; None if it is not staged.
    pub fn staged_upload(&self, upload: &blob::UploadId) -> Result<Option<Vec<u8>>> {
        let mut records = self.iterator(blob::CF_UPLOADS);
        records.seek(upload);
        let record = match records.key() {
            Some(key) if key == upload.as_slice() => {
                let value = records.value().expect("a valid iterator has a value");
                super::command::decode_record::<blob::UploadRecord>(value, "upload record")?
            }
            _ => {
                records.status()?;
                return Ok(None);
            }
        };
        let blob = BlobRef {
            upload: *upload,
            bytes: record.bytes,
        };
        self.blob_bytes(&blob).map(Some)
    }

    pub(super) fn blob_bytes(&self, blob: &BlobRef) -> Result<Vec<u8>> {
        let mut chunks = self.iterator(super::keys::CF_BLOBS);
        blob::read(&mut chunks, blob, 0, blob.bytes, &[])
    }

    /// One page of the live keys in `range` (empty `end`: no upper bound) as of
    /// `read_version`. `limit` is capped to `range_items_max`; 0 means the cap.
    pub fn get_range(
        &self,
        range: &KeyRange,
        limit: usize,
        reverse: bool,
        read_version: u64,
        continuation: Option<Vec<u8>>,
    ) -> Result<RangePage> {
        self.check_read_version(read_version)?;
        let (start, end) = (range.start.as_slice(), range.end.as_slice());
        if range.is_inverted() {
            return Err(Error::InvalidArgument(format!("inverted range {range:?}")));
        }
        let resume = continuation
            .map(|token| parse_continuation(&token, reverse, range))
            .transpose()?;
        let items_max = self.options.range_items_max;
        let limit = if limit == 0 {
            items_max
        } else {
            limit.min(items_max)
        };
        let mut iter = self.iterator(super::keys::CF_DATA);
        match (reverse, resume) {
            (false, resume) => iter.seek(keys::escape(resume.as_deref().unwrap_or(start))),
            // Resume is inclusive: the newest entry at or before past_key(resume).
            (true, Some(resume)) => iter.seek_for_prev(keys::past_key(&resume)),
            (true, None) if end.is_empty() => iter.seek_to_last(),
            (true, None) => iter.seek_for_prev(keys::escape(end)),
        }
        self.collect_page(&mut iter, range, reverse, limit, read_version)
    }

    /// Walks user keys from the iterator's position (one seek to the visible version and
    /// one to the next key each), bounded by `range_keys_scanned_max`.
    fn collect_page(
        &self,
        iter: &mut DBRawIterator<'_>,
        range: &KeyRange,
        reverse: bool,
        limit: usize,
        read_version: u64,
    ) -> Result<RangePage> {
        let mut kvs = Vec::new();
        let mut keys_scanned = 0usize;
        loop {
            let Some(data_key) = iter.key() else {
                iter.status()?;
                return Ok(RangePage {
                    kvs,
                    more: false,
                    continuation: None,
                });
            };
            let (key, _) = keys::split_data_key(data_key)?;
            let in_range = if reverse {
                key >= range.start
            } else {
                range.contains(&key)
            };
            if !in_range {
                return Ok(RangePage {
                    kvs,
                    more: false,
                    continuation: None,
                });
            }
            if keys_scanned == self.options.range_keys_scanned_max {
                return Ok(continue_at(kvs, reverse, key));
            }
            keys_scanned += 1;
            let visible = seek_visible(iter, &key, read_version)?;
            let kv = match visible {
                Some(visible) => self.key_value(key.clone(), visible)?,
                None => None,
            };
            if let Some(kv) = kv {
                if kvs.len() == limit {
                    return Ok(continue_at(kvs, reverse, key));
                }
                kvs.push(kv);
            }
            match reverse {
                false => iter.seek(keys::past_key(&key)),
                // Every entry of a smaller key sorts below escape(key); all of key's above.
                true => iter.seek_for_prev(keys::escape(&key)),
            }
        }
    }

    pub(super) fn check_read_version(&self, read_version: u64) -> Result<()> {
        if read_version < self.oldest_version {
            return Err(Error::TooOld {
                read_version,
                oldest_version: self.oldest_version,
            });
        }
        if read_version > self.current_version {
            return Err(Error::NotYetApplied {
                read_version,
                current_version: self.current_version,
            });
        }
        Ok(())
    }
}

/// A page that stopped before `next_key`, which the next page examines first.
fn continue_at(kvs: Vec<KeyValue>, reverse: bool, next_key: Vec<u8>) -> RangePage {
    let mut token = vec![if reverse {
        CONTINUE_REVERSE
    } else {
        CONTINUE_FORWARD
    }];
    token.extend_from_slice(&next_key);
    RangePage {
        kvs,
        more: true,
        continuation: Some(token),
    }
}

fn parse_continuation(token: &[u8], reverse: bool, range: &KeyRange) -> Result<Vec<u8>> {
    let direction = if reverse {
        CONTINUE_REVERSE
    } else {
        CONTINUE_FORWARD
    };
    match token.split_first() {
        Some((&tag, key)) if tag == direction && range.contains(key) => Ok(key.to_vec()),
        _ => Err(Error::InvalidArgument(
            "continuation is not from this range and direction".into(),
        )),
    }
}

/// The newest stored version of `key` at or below `read_version`, tombstones included.
/// Leaves the iterator somewhere inside or just past `key`.
pub(super) fn seek_visible(
    iter: &mut DBRawIterator<'_>,
    key: &[u8],
    read_version: u64,
) -> Result<Option<Versioned>> {
    seek_decoded(iter, key, read_version, keys::decode_value)
}

/// `seek_visible` without copying the value's bytes (`value` is empty when live).
pub(super) fn seek_visible_header(
    iter: &mut DBRawIterator<'_>,
    key: &[u8],
    read_version: u64,
) -> Result<Option<Versioned>> {
    seek_decoded(iter, key, read_version, keys::decode_header)
}

fn seek_decoded(
    iter: &mut DBRawIterator<'_>,
    key: &[u8],
    read_version: u64,
    decode: fn(&[u8], u64) -> Result<Versioned>,
) -> Result<Option<Versioned>> {
    iter.seek(keys::data_key(key, read_version));
    let Some(data_key) = iter.key() else {
        iter.status()?;
        return Ok(None);
    };
    if !keys::is_version_of(data_key, &keys::escape(key)) {
        return Ok(None);
    }
    let (_, version) = keys::split_data_key(data_key)?;
    let value = iter.value().expect("a valid iterator has a value");
    Ok(Some(decode(value, version)?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanEnd {
    /// Every key of the range was visited.
    Finished,
    /// The visitor asked to stop.
    Stopped,
    /// `keys_scanned` reached `keys_scanned_max` before the range ended.
    BudgetExhausted,
}

/// Visits every user key in `range` that has any stored version, with its newest one
/// (tombstones included), while `visit` returns true. `keys_scanned` accumulates across
/// calls so that one command's scans share one budget.
pub(super) fn scan_newest(
    iter: &mut DBRawIterator<'_>,
    range: &KeyRange,
    keys_scanned: &mut usize,
    keys_scanned_max: usize,
    mut visit: impl FnMut(&[u8], &Versioned) -> bool,
) -> Result<ScanEnd> {
    iter.seek(keys::escape(&range.start));
    loop {
        let Some(data_key) = iter.key() else {
            iter.status()?;
            return Ok(ScanEnd::Finished);
        };
        let (key, version) = keys::split_data_key(data_key)?;
        if !range.contains(&key) {
            return Ok(ScanEnd::Finished);
        }
        if *keys_scanned >= keys_scanned_max {
            return Ok(ScanEnd::BudgetExhausted);
        }
        *keys_scanned += 1;
        // The first entry of a user key is its newest version.
        let newest =
            keys::decode_value(iter.value().expect("a valid iterator has a value"), version)?;
        if !visit(&key, &newest) {
            return Ok(ScanEnd::Stopped);
        }
        iter.seek(keys::past_key(&key));
    }
}
