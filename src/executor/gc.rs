//! Deterministic, bounded garbage collection of versions no read at or above
//! `oldest_version` can see. It runs inside `apply_slot`, into the slot's batch, against
//! the database as of before the slot: the slot's own writes are all newer than anything
//! it deletes, and a version shadowed before the slot stays shadowed after it.

use rocksdb::{DBRawIterator, WriteBatch, DB};

use super::blob::{self, CF_BLOBS};
use super::error::Result;
use super::keys::{self, CF_CHANGES};
use super::{cf, data_cf};

/// Older versions of one key deleted one by one up to this many; beyond it one range
/// delete covers them, so a hot key costs one tombstone per visit. (The walk still reads
/// each doomed version once, for the blobs it may refer to: once per write, amortised.)
/// Point deletes below it because many small range tombstones slow RocksDB reads until
/// compaction.
const POINT_DELETES_PER_KEY_MAX: usize = 8;

/// Change-log versions deleted one by one per slot before one range delete is cheaper.
const CHANGE_LOG_POINT_DELETES_MAX: u64 = 64;

/// Where garbage collection stands; persisted in meta with every slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct GcState {
    /// The user key at which the next step starts (empty: a new pass starts).
    pub cursor: Vec<u8>,
    /// The oldest_version the pass under way started at.
    pub pass_oldest: u64,
    /// Every key was visited at this oldest_version or later by the last complete pass.
    pub clean_oldest: u64,
}

impl GcState {
    pub fn encode_pass(&self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.pass_oldest.to_be_bytes());
        bytes[8..].copy_from_slice(&self.clean_oldest.to_be_bytes());
        bytes
    }

    pub fn decode(cursor: Vec<u8>, pass: Option<&[u8]>) -> Result<GcState> {
        let (pass_oldest, clean_oldest) = match pass {
            None => (0, 0),
            Some(bytes) if bytes.len() == 16 => (
                keys::decode_u64(&bytes[..8], "gc pass")?,
                keys::decode_u64(&bytes[8..], "gc pass")?,
            ),
            Some(_) => return Err(super::Error::Corrupt("gc pass is not 16 bytes".into())),
        };
        Ok(GcState {
            cursor,
            pass_oldest,
            clean_oldest,
        })
    }
}

/// One slot's share of garbage collection. A version becomes collectible only when
/// `oldest_version` passes a newer version of its key (new writes are always above
/// `oldest_version`), so once a whole pass ran at some `oldest_version`, nothing is left to
/// collect until it moves: passes start only then, and otherwise the slot pays nothing.
pub(super) fn step(
    db: &DB,
    batch: &mut WriteBatch,
    state: &GcState,
    keys_max: usize,
    oldest_version: u64,
) -> Result<GcState> {
    let starting = state.cursor.is_empty();
    if starting && oldest_version <= state.clean_oldest {
        return Ok(state.clone());
    }
    let pass_oldest = if starting {
        oldest_version
    } else {
        state.pass_oldest
    };
    let cursor = collect_step(db, batch, &state.cursor, keys_max, oldest_version)?;
    let clean_oldest = if cursor.is_empty() {
        pass_oldest
    } else {
        state.clean_oldest
    };
    Ok(GcState {
        cursor,
        pass_oldest,
        clean_oldest,
    })
}

/// Visits at most `keys_max` user keys from `cursor` and returns where the next step
/// starts (empty: the walk reached the end and starts over).
fn collect_step(
    db: &DB,
    batch: &mut WriteBatch,
    cursor: &[u8],
    keys_max: usize,
    oldest_version: u64,
) -> Result<Vec<u8>> {
    let mut iter = db.raw_iterator_cf(data_cf(db));
    iter.seek(keys::escape(cursor));
    for _ in 0..keys_max {
        let Some(data_key) = iter.key() else {
            iter.status()?;
            return Ok(Vec::new());
        };
        let (key, _) = keys::split_data_key(data_key)?;
        collect_key(db, &mut iter, batch, &key, oldest_version)?;
        iter.seek(keys::past_key(&key));
    }
    match iter.key() {
        Some(data_key) => Ok(keys::split_data_key(data_key)?.0),
        None => {
            iter.status()?;
            Ok(Vec::new())
        }
    }
}

/// Keeps the newest version <= `oldest_version` (it answers reads at `oldest_version`)
/// unless it is a tombstone, and deletes everything older.
fn collect_key(
    db: &DB,
    iter: &mut DBRawIterator<'_>,
    batch: &mut WriteBatch,
    key: &[u8],
    oldest_version: u64,
) -> Result<()> {
    let escaped = keys::escape(key);
    iter.seek(keys::data_key(key, oldest_version));
    let Some(data_key) = iter.key() else {
        return Ok(iter.status()?);
    };
    if !keys::is_version_of(data_key, &escaped) {
        return Ok(()); // Every version is newer than oldest_version.
    }
    let (_, version) = keys::split_data_key(data_key)?;
    let kept = keys::decode_value(iter.value().expect("a valid iterator has a value"), version)?;
    if kept.value.is_some() {
        iter.next();
    }
    let data = data_cf(db);
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    let mut ranged = false;
    while let Some(data_key) = iter
        .key()
        .filter(|data_key| keys::is_version_of(data_key, &escaped))
    {
        // A version stored as a blob takes its chunks with it. The walk goes on past the
        // point deletes only to find those: the versions themselves go in one range.
        let value = iter.value().expect("a valid iterator has a value");
        if let Some(blob) = keys::blob_of(value)? {
            let (start, end) = blob::chunk_range(&blob.upload);
            batch.delete_range_cf(cf(db, CF_BLOBS), start, end);
        }
        if doomed.len() == POINT_DELETES_PER_KEY_MAX && !ranged {
            batch.delete_range_cf(data, doomed[0].as_slice(), keys::past_key(key).as_slice());
            ranged = true;
        }
        if !ranged {
            doomed.push(data_key.to_vec());
        }
        iter.next();
    }
    iter.status()?;
    if !ranged {
        for data_key in doomed {
            batch.delete_cf(data, data_key);
        }
    }
    Ok(())
}

/// Change-log entries below `oldest_version` are no longer watchable. Deleted one by one
/// (the window moves by about the versions of one slot), or with one range delete when it
/// jumps further (a smaller `retention_versions` after a restart), so that the cost stays
/// bounded without leaving a range tombstone per slot.
pub(super) fn trim_change_log(
    db: &DB,
    batch: &mut WriteBatch,
    previous_oldest: u64,
    oldest_version: u64,
) {
    assert!(
        previous_oldest <= oldest_version,
        "oldest_version went backwards"
    );
    let changes = cf(db, CF_CHANGES);
    if oldest_version - previous_oldest > CHANGE_LOG_POINT_DELETES_MAX {
        batch.delete_range_cf(
            changes,
            keys::version_key(0),
            keys::version_key(oldest_version),
        );
        return;
    }
    for version in previous_oldest..oldest_version {
        batch.delete_cf(changes, keys::version_key(version));
    }
}
