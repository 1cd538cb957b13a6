//! `KvReader`: reads from any thread while the driver thread applies. Each read takes a
//! RocksDB snapshot and reads the version window from the meta column family inside that
//! same snapshot, so the window and the data always agree.

use std::sync::Arc;

use rocksdb::DB;
use tokio::sync::watch;

use super::blob::{UploadRecord, CF_UPLOADS};
use super::command::{decode_record, KeyRange};
use super::error::{Error, Result};
use super::keys::{
    decode_u64, CF_META, COLUMN_FAMILIES, META_CURRENT_VERSION, META_OLDEST_VERSION,
};
use super::read::View;
use super::{cf, ExecutorOptions, KeyValue, RangePage, Slot, ValueRange, WatchPage};

/// Uploads being staged, as `KvReader::uploads` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadsStaged {
    pub count: u64,
    pub bytes: u64,
    pub first_expiry_ms: Option<u64>,
}

/// Where the executor stands after its last applied slot; published after every slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub slot: Slot,
    pub current_version: u64,
    pub oldest_version: u64,
}

/// A cheap, cloneable read handle on the executor's database.
#[derive(Clone)]
pub struct KvReader {
    pub(super) db: Arc<super::snapshot::DbCell>,
    pub(super) options: Arc<ExecutorOptions>,
    pub(super) applied: watch::Receiver<Applied>,
}

impl KvReader {
    /// The position after the last applied slot.
    pub fn applied(&self) -> Applied {
        *self.applied.borrow()
    }

    /// Resolves once the executor has applied `slot` (or at once if it has).
    pub async fn wait_for_slot(&self, slot: Slot) -> Result<Applied> {
        self.wait_until(|applied| applied.slot >= slot).await
    }

    /// Resolves once the executor has applied version `version` (or at once if it has).
    pub async fn wait_for_version(&self, version: u64) -> Result<Applied> {
        self.wait_until(|applied| applied.current_version >= version)
            .await
    }

    /// Resolves at the next applied slot that writes a version after `version`.
    pub async fn wait_for_version_after(&self, version: u64) -> Result<Applied> {
        self.wait_until(|applied| applied.current_version > version)
            .await
    }

    async fn wait_until(&self, done: impl FnMut(&Applied) -> bool) -> Result<Applied> {
        let mut applied = self.applied.clone();
        let result = applied.wait_for(done).await.map(|applied| *applied);
        result.map_err(|_| Error::Closed)
    }

    pub fn get(&self, key: &[u8], read_version: u64) -> Result<Option<KeyValue>> {
        let db = self.db.current();
        let got = self.view(&db)?.get(key, read_version);
        got
    }

    pub fn get_value_range(
        &self,
        key: &[u8],
        read_version: u64,
        offset: u64,
        length: u64,
    ) -> Result<Option<ValueRange>> {
        let db = self.db.current();
        let got = self
            .view(&db)?
            .get_value_range(key, read_version, offset, length);
        got
    }

    /// The bytes staged so far in `upload`, as of the last applied slot; None if it is
    /// not staged (never started, committed, aborted or expired).
    pub fn staged_upload(&self, upload: &super::blob::UploadId) -> Result<Option<Vec<u8>>> {
        let db = self.db.current();
        let staged = self.view(&db)?.staged_upload(upload);
        staged
    }

    /// The highest request id recorded in the session table for a client id starting
    /// with `prefix`, as of the last applied slot (0 if none).
    pub fn session_request_id_max(&self, prefix: &str) -> Result<i64> {
        let db = self.db.current();
        let mut iter = db.raw_iterator_cf(cf(&db, super::keys::CF_SESSIONS));
        iter.seek(prefix.as_bytes());
        let mut highest = 0;
        while let Some(key) = iter.key() {
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let value = iter.value().expect("a valid iterator has a value");
            let record: super::keys::SessionRecord = decode_record(value, "session record")?;
            highest = highest.max(record.request_id);
            iter.next();
        }
        iter.status()?;
        Ok(highest)
    }

    /// The uploads staged as of the last applied slot (count and bytes), and the earliest
    /// expiry among them (upload clock time; None with none staged).
    pub fn uploads(&self) -> Result<UploadsStaged> {
        let db = self.db.current();
        let mut staged = UploadsStaged::default();
        let mut iter = db.raw_iterator_cf(cf(&db, CF_UPLOADS));
        iter.seek_to_first();
        while let Some(value) = iter.value() {
            let record: UploadRecord = decode_record(value, "upload record")?;
            staged.count += 1;
            staged.bytes += record.bytes;
            staged.first_expiry_ms = Some(
                staged
                    .first_expiry_ms
                    .map_or(record.expires_at_ms, |e| e.min(record.expires_at_ms)),
            );
            iter.next();
        }
        iter.status()?;
        Ok(staged)
    }

    pub fn get_range(
        &self,
        range: &KeyRange,
        limit: usize,
        reverse: bool,
        read_version: u64,
        continuation: Option<Vec<u8>>,
    ) -> Result<RangePage> {
        let db = self.db.current();
        let page = self
            .view(&db)?
            .get_range(range, limit, reverse, read_version, continuation);
        page
    }

    pub fn watch_events(
        &self,
        range: &KeyRange,
        from_version: u64,
        events_max: usize,
    ) -> Result<WatchPage> {
        let db = self.db.current();
        let page = self
            .view(&db)?
            .watch_events(range, from_version, events_max);
        page
    }

    /// An integer RocksDB property (e.g. `rocksdb.estimate-live-data-size`) summed over the
    /// store's column families; a family that lacks it counts 0.
    pub fn property_sum(&self, name: &str) -> Result<u64> {
        let mut sum = 0u64;
        let db = self.db.current();
        for family in COLUMN_FAMILIES {
            let value = db.property_int_value_cf(cf(&db, family), name)?;
            sum = sum.saturating_add(value.unwrap_or(0));
        }
        Ok(sum)
    }

    /// A snapshot, with the version window stored in it.
    fn view<'a>(&'a self, db: &'a DB) -> Result<View<'a>> {
        let snapshot = db.snapshot();
        let meta = cf(db, CF_META);
        let read = |name: &[u8]| -> Result<u64> {
            let bytes = snapshot
                .get_cf(meta, name)?
                .ok_or_else(|| Error::Corrupt(format!("meta key {name:?} missing")))?;
            decode_u64(&bytes, "meta")
        };
        let oldest_version = read(META_OLDEST_VERSION)?;
        let current_version = read(META_CURRENT_VERSION)?;
        Ok(View {
            db,
            snapshot,
            options: &self.options,
            oldest_version,
            current_version,
        })
    }
}
