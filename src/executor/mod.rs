//! `KvStoreExecutor`: the deterministic state machine that applies committed log slots to
//! RocksDB exactly once, keeping multiple versions of every key (MVCC).
//!
//! The driver hands it each committed slot in order, starting after `applied_slot()`:
//!
//! ```ignore
//! let mut executor = KvStoreExecutor::open(dir, ExecutorOptions::default())?;
//! for (slot, commands) in log.committed_from(executor.applied_slot() + 1) {
//!     let commands: Vec<&[u8]> = commands.iter().map(Vec::as_slice).collect();
//!     let outcomes = executor.apply_slot(slot, &commands)?; // one outcome per command
//!     reply_to_waiting_clients(slot, outcomes);
//! }
//! executor.persist()?; // only then may the log be truncated up to applied_slot()
//! ```
//!
//! Each slot is one RocksDB `WriteBatch` across all column families (data, change log,
//! sessions, meta), so a crash leaves all of a slot or none of it, and `applied_slot` in
//! the same batch makes re-application after a restart a refused no-op. Writes are not
//! fsynced by default: the consensus log is the durable record and is replayed from
//! `applied_slot() + 1` after a crash (see `persist` and `ExecutorOptions::sync_writes`).
//!
//! Determinism: the bytes written depend only on the slots applied and on the options
//! marked "state-affecting" below, which must therefore be equal on every replica. No
//! clock, no randomness, no hash-order iteration.
//!
//! Versions: every command that writes gets the next version (a counter in meta). Reads
//! name a version; versions older than `oldest_version()` are garbage collected a bounded
//! number of keys per slot. Sessions make client retries exactly-once; the session table
//! grows with the number of distinct client ids and is never trimmed (a client that
//! reappears after any pause must still find its last outcome), so client ids must be
//! long-lived and few, e.g. one per client process.

mod apply;
pub mod blob;
pub mod canonical;
pub mod command;
pub mod digest;
pub mod document;
pub mod error;
mod gc;
mod keys;
mod mutation;
mod read;
mod reader;
mod snapshot;
mod watch;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use rocksdb::{ColumnFamily, WriteBatch, WriteOptions, DB};
use tokio::sync::watch as notify;

pub use command::{
    compress, decode, encode, is_compressed, Compare, CompareOp, CompareTarget, DocumentBody,
    DocumentReason, DocumentRefusal, Event, EventKind, KeyRange, KvCommand, Mutation, PatchFormat,
    SessionId, WriteOutcome, WriteRequest,
};
pub use error::{Error, Result};
pub use read::{KeyValue, RangePage, ValueRange};
pub use reader::{Applied, KvReader, UploadsStaged};
pub use snapshot::{read_checkpoint, Checkpointer};
pub use watch::WatchPage;

use keys::{
    decode_u64, CF_DATA, CF_META, COLUMN_FAMILIES, LAYOUT_VERSION, META_APPLIED_SLOT,
    META_CURRENT_VERSION, META_DIGEST, META_DIGEST_BASE, META_GC_CURSOR, META_GC_PASS, META_LAYOUT,
    META_MEMBERSHIP, META_OLDEST_VERSION,
};

/// A position in the replicated log. Slot 1 is the first; slot 0 means "none".
pub type Slot = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorOptions {
    /// State-affecting. How many versions stay readable behind the current one.
    pub retention_versions: u64,
    /// State-affecting. User keys the garbage collector visits per applied slot.
    pub gc_keys_per_slot_max: usize,
    /// State-affecting. Larger commands are `Rejected`.
    pub command_bytes_max: usize,
    /// State-affecting. A document patch whose result is larger is refused (`TooLarge`).
    pub value_bytes_max: usize,
    /// State-affecting. User keys one command may scan for `ClearRange`/`DeleteRange`
    /// expansion and read-conflict checks; beyond it the command is `Rejected` (clear
    /// huge ranges in chunks).
    pub command_keys_scanned_max: usize,
    /// Key-values per `get_range` page; larger (or zero) limits are capped to it.
    pub range_items_max: usize,
    /// User keys one `get_range` page may examine (tombstoned keys included) before it
    /// returns early with a continuation.
    pub range_keys_scanned_max: usize,
    /// Events per `watch_events` page; larger (or zero) limits are capped to it.
    pub watch_events_max: usize,
    /// Change-log versions one `watch_events` page may examine before it returns early.
    pub watch_versions_scanned_max: usize,
    /// State-affecting. Uploads staged at once; a chunk that would start another is
    /// `Rejected`.
    pub uploads_max: usize,
    /// fsync every slot. Off by default: the consensus log replays what a crash lost.
    pub sync_writes: bool,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            retention_versions: 1_000_000,
            gc_keys_per_slot_max: 256,
            command_bytes_max: 1024 * 1024,
            value_bytes_max: 1024 * 1024,
            command_keys_scanned_max: 100_000,
            range_items_max: 10_000,
            range_keys_scanned_max: 100_000,
            watch_events_max: 10_000,
            watch_versions_scanned_max: 100_000,
            uploads_max: 64,
            sync_writes: false,
        }
    }
}

impl ExecutorOptions {
    fn validate(&self) -> Result<()> {
        let positive = [
            ("gc_keys_per_slot_max", self.gc_keys_per_slot_max),
            ("command_bytes_max", self.command_bytes_max),
            ("value_bytes_max", self.value_bytes_max),
            ("command_keys_scanned_max", self.command_keys_scanned_max),
            ("range_items_max", self.range_items_max),
            ("range_keys_scanned_max", self.range_keys_scanned_max),
            ("watch_events_max", self.watch_events_max),
            (
                "watch_versions_scanned_max",
                self.watch_versions_scanned_max,
            ),
            ("uploads_max", self.uploads_max),
        ];
        match positive.iter().find(|(_, value)| *value == 0) {
            Some((name, _)) => Err(Error::InvalidOptions(format!("{name} must be positive"))),
            None => Ok(()),
        }
    }
}

pub struct KvStoreExecutor {
    db: Arc<DB>,
    /// The database readers use; replaced with `db` when a snapshot is installed.
    cell: Arc<snapshot::DbCell>,
    /// The executor's directory, and the database directory in it that `ACTIVE` names.
    root: PathBuf,
    active: PathBuf,
    /// Database directories replaced by an installed snapshot, removed once no reader
    /// holds them open.
    retired: Vec<(PathBuf, Weak<DB>)>,
    options: Arc<ExecutorOptions>,
    /// Publishes `Applied` after every slot, for readers waiting on a version.
    applied: notify::Sender<Applied>,
    applied_slot: Slot,
    current_version: u64,
    oldest_version: u64,
    gc: gc::GcState,
    digest: digest::StateDigest,
    /// Fault point: build the next slot's batch, then fail before writing it.
    #[cfg(test)]
    crash_before_write: bool,
}

impl KvStoreExecutor {
    /// Opens (or creates) the executor's state under `root`: the database directory that
    /// `root/ACTIVE` names (see `install_checkpoint`).
    pub fn open(root: impl AsRef<Path>, options: ExecutorOptions) -> Result<Self> {
        options.validate()?;
        let root = root.as_ref().to_path_buf();
        let active = snapshot::prepare_root(&root)?;
        let opened = open_db(&active)?;
        let (applied, _) = notify::channel(Applied {
            slot: opened.applied_slot,
            current_version: opened.current_version,
            oldest_version: opened.oldest_version,
        });
        let db = Arc::new(opened.db);
        let executor = KvStoreExecutor {
            cell: Arc::new(snapshot::DbCell::new(Arc::clone(&db))),
            db,
            root,
            active,
            retired: Vec::new(),
            options: Arc::new(options),
            applied,
            applied_slot: opened.applied_slot,
            current_version: opened.current_version,
            oldest_version: opened.oldest_version,
            gc: opened.gc,
            digest: opened.digest,
            #[cfg(test)]
            crash_before_write: false,
        };
        executor.invariants();
        Ok(executor)
    }

    pub fn applied_slot(&self) -> Slot {
        self.applied_slot
    }

    /// A read handle for other threads; reads through it never block applying.
    pub fn reader(&self) -> KvReader {
        KvReader {
            db: Arc::clone(&self.cell),
            options: Arc::clone(&self.options),
            applied: self.applied.subscribe(),
        }
    }

    /// The version of the newest write; 0 before the first.
    pub fn current_version(&self) -> u64 {
        self.current_version
    }

    /// Reads at versions below this fail with `TooOld`; it never decreases and never
    /// passes `current_version()`.
    pub fn oldest_version(&self) -> u64 {
        self.oldest_version
    }

    /// Applies every command of `slot` in order, atomically, and returns one outcome per
    /// command. Errors leave the executor and the database as they were.
    ///
    /// Panics if `slot` skips ahead of `applied_slot() + 1`: a gap is a driver bug.
    pub fn apply_slot(&mut self, slot: Slot, commands: &[&[u8]]) -> Result<Vec<WriteOutcome>> {
        self.apply_slot_with(slot, commands, None)
    }

    /// Applies a slot that holds a membership instead of commands: records `membership`
    /// (opaque bytes, the driver's encoding) with the slot, in the same batch, so the
    /// machine, its snapshots and its backups know which membership governs the slots
    /// after the applied one.
    pub fn apply_membership(&mut self, slot: Slot, membership: &[u8]) -> Result<()> {
        self.apply_slot_with(slot, &[], Some(membership))
            .map(|_| ())
    }

    /// Replaces the recorded membership at the applied slot, durably, outside any slot:
    /// for a new cluster created from restored data only (see
    /// `StateMachine::seed_membership`).
    pub fn seed_membership(&mut self, membership: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META), META_MEMBERSHIP, membership);
        let mut write_options = WriteOptions::default();
        write_options.set_sync(true);
        Ok(self.db.write_opt(batch, &write_options)?)
    }

    /// The state digest at `applied_slot()`: equal on two replicas at the same slot (and the
    /// same chain base) exactly when they wrote the same bytes for every slot since.
    pub fn digest(&self) -> digest::StateDigest {
        self.digest
    }

    /// The membership recorded by the last `apply_membership`, or in the installed
    /// snapshot; `None` if none was.
    pub fn membership(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(cf(&self.db, CF_META), META_MEMBERSHIP)?)
    }

    fn apply_slot_with(
        &mut self,
        slot: Slot,
        commands: &[&[u8]],
        membership: Option<&[u8]>,
    ) -> Result<Vec<WriteOutcome>> {
        if slot <= self.applied_slot {
            return Err(Error::AlreadyApplied {
                slot,
                applied_slot: self.applied_slot,
            });
        }
        let next_slot = self.applied_slot.checked_add(1).expect("slot overflow");
        assert_eq!(
            slot, next_slot,
            "gap in applied slots: applied {}",
            self.applied_slot
        );

        let mut applier = apply::SlotApplier::new(
            &self.db,
            &self.options,
            self.current_version,
            self.oldest_version,
        );
        let mut outcomes = Vec::with_capacity(commands.len());
        for command in commands {
            outcomes.push(applier.apply_command(command)?);
        }
        let (mut batch, current_version) = applier.finish();
        assert!(
            current_version >= self.current_version,
            "version went backwards"
        );

        let oldest_version = next_oldest_version(
            self.oldest_version,
            current_version,
            self.options.retention_versions,
        );
        let gc = gc::step(
            &self.db,
            &mut batch,
            &self.gc,
            self.options.gc_keys_per_slot_max,
            oldest_version,
        )?;
        if oldest_version > self.oldest_version {
            gc::trim_change_log(&self.db, &mut batch, self.oldest_version, oldest_version);
        }
        put_meta(
            &self.db,
            &mut batch,
            slot,
            current_version,
            oldest_version,
            &gc,
        );
        if let Some(membership) = membership {
            batch.put_cf(cf(&self.db, CF_META), META_MEMBERSHIP, membership);
        }
        #[cfg(feature = "chaos")]
        if fail::eval("executor::apply_wrongly", |_| ()).is_some() && !commands.is_empty() {
            // A deliberate divergence for the chaos suite: one record no other replica writes.
            batch.put_cf(
                cf(&self.db, CF_META),
                b"chaos_divergence",
                slot.to_be_bytes(),
            );
        }
        // Everything the slot writes, then the digest of it (which the digest cannot cover).
        let digest = self.digest.next(slot, batch.data());
        batch.put_cf(cf(&self.db, CF_META), META_DIGEST, digest.value);
        self.write(batch)?;

        self.applied_slot = slot;
        self.current_version = current_version;
        self.oldest_version = oldest_version;
        self.gc = gc;
        self.digest = digest;
        self.invariants();
        self.applied.send_replace(Applied {
            slot,
            current_version,
            oldest_version,
        });
        Ok(outcomes)
    }

    /// Makes every applied slot durable (syncs the RocksDB WAL). After it returns, the
    /// driver may truncate its log up to `applied_slot()`.
    pub fn persist(&self) -> Result<()> {
        Ok(self.db.flush_wal(true)?)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        #[cfg(test)]
        if self.crash_before_write {
            return Err(Error::FaultInjected(
                "crash before the slot's batch is written",
            ));
        }
        let mut write_options = WriteOptions::default();
        write_options.set_sync(self.options.sync_writes);
        Ok(self.db.write_opt(batch, &write_options)?)
    }

    fn invariants(&self) {
        assert!(
            self.oldest_version <= self.current_version,
            "oldest_version {} ahead of current_version {}",
            self.oldest_version,
            self.current_version
        );
    }
}

/// current - retention (0 until there are more versions than that: version 0 is the empty
/// database, and a transaction that read it must still be able to commit or conflict),
/// never above the current version, so that a read at the current version is never
/// TooOld. Monotonic even if `retention_versions` grows across restarts: collected
/// versions cannot come back.
fn next_oldest_version(previous: u64, current_version: u64, retention_versions: u64) -> u64 {
    let window_start = current_version.saturating_sub(retention_versions);
    previous.max(window_start.min(current_version))
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .expect("the database is opened with every column family")
}

fn initialize_meta(db: &DB) -> Result<()> {
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(db, CF_META), META_LAYOUT, LAYOUT_VERSION.to_be_bytes());
    put_meta(db, &mut batch, 0, 0, 0, &gc::GcState::default());
    let mut write_options = WriteOptions::default();
    write_options.set_sync(true);
    Ok(db.write_opt(batch, &write_options)?)
}

fn put_meta(
    db: &DB,
    batch: &mut WriteBatch,
    slot: Slot,
    current_version: u64,
    oldest_version: u64,
    gc: &gc::GcState,
) {
    let meta = cf(db, CF_META);
    batch.put_cf(meta, META_APPLIED_SLOT, slot.to_be_bytes());
    batch.put_cf(meta, META_CURRENT_VERSION, current_version.to_be_bytes());
    batch.put_cf(meta, META_OLDEST_VERSION, oldest_version.to_be_bytes());
    batch.put_cf(meta, META_GC_CURSOR, &gc.cursor);
    batch.put_cf(meta, META_GC_PASS, gc.encode_pass());
}

/// The data column family, for the submodules.
fn data_cf(db: &DB) -> &ColumnFamily {
    cf(db, CF_DATA)
}

/// A database and the state its meta column family holds.
struct Opened {
    db: DB,
    applied_slot: Slot,
    current_version: u64,
    oldest_version: u64,
    gc: gc::GcState,
    digest: digest::StateDigest,
}

fn db_options() -> rocksdb::Options {
    let mut db_options = rocksdb::Options::default();
    db_options.create_if_missing(true);
    db_options.create_missing_column_families(true);
    // Belt and braces for cross-family atomicity should the WAL ever be disabled.
    db_options.set_atomic_flush(true);
    // LZ4 where data is fresh and rewritten soon (flushes, upper levels); zstd in the
    // bottommost level, where nearly all of it ends up (RocksDB sizes levels dynamically):
    // a better ratio on JSON, paid once per compaction rather than on every write.
    db_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    db_options.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
    db_options
}

/// The blobs column family holds upload chunks of up to `chunk_bytes_max` each: in RocksDB's
/// blob files (written once at flush, never rewritten by compaction, whose files are
/// garbage-collected as chunks are deleted), zstd-compressed, with a small memtable so
/// that chunks do not pile up in memory before they are flushed.
fn blobs_options() -> rocksdb::Options {
    let mut options = db_options();
    options.set_enable_blob_files(true);
    options.set_min_blob_size(0);
    options.set_blob_compression_type(rocksdb::DBCompressionType::Zstd);
    options.set_enable_blob_gc(true);
    options.set_write_buffer_size(BLOBS_WRITE_BUFFER_BYTES);
    options
}

const BLOBS_WRITE_BUFFER_BYTES: usize = 16 << 20;

/// Values of the data column family at least this large live in blob files too, so that
/// compaction moves a reference instead of rewriting a document of many megabytes, and a
/// read of one fetches it without reading a block around it. zstd-compressed: written
/// once (by a background flush), where JSON configuration shrinks about sixfold.
const DATA_BLOB_BYTES_MIN: u64 = 1 << 20;

fn data_options() -> rocksdb::Options {
    let mut options = db_options();
    options.set_enable_blob_files(true);
    options.set_min_blob_size(DATA_BLOB_BYTES_MIN);
    options.set_blob_compression_type(rocksdb::DBCompressionType::Zstd);
    options.set_enable_blob_gc(true);
    options
}

fn open_db(path: &Path) -> Result<Opened> {
    let families = COLUMN_FAMILIES.iter().map(|&name| {
        let options = match name {
            keys::CF_BLOBS => blobs_options(),
            keys::CF_DATA => data_options(),
            _ => db_options(),
        };
        rocksdb::ColumnFamilyDescriptor::new(name, options)
    });
    let db = DB::open_cf_descriptors(&db_options(), path, families)?;
    let meta = cf(&db, CF_META);
    let layout = db.get_cf(meta, META_LAYOUT)?;
    if layout.is_none() {
        initialize_meta(&db)?;
    } else if decode_u64(layout.as_deref().unwrap_or_default(), "layout")? != LAYOUT_VERSION {
        return Err(Error::Corrupt(format!(
            "layout is not version {LAYOUT_VERSION}"
        )));
    }
    let applied_slot = meta_u64(&db, META_APPLIED_SLOT)?;
    let current_version = meta_u64(&db, META_CURRENT_VERSION)?;
    let oldest_version = meta_u64(&db, META_OLDEST_VERSION)?;
    let gc_cursor = db.get_cf(meta, META_GC_CURSOR)?.unwrap_or_default();
    let gc = gc::GcState::decode(gc_cursor, db.get_cf(meta, META_GC_PASS)?.as_deref())?;
    let digest = match db.get_cf(meta, META_DIGEST)? {
        Some(value) => digest::StateDigest::decode(&value, meta_u64(&db, META_DIGEST_BASE)?)?,
        // A database from before digests: its chain starts here, written with the next slot.
        None => {
            let started = digest::StateDigest::start(applied_slot);
            let mut batch = WriteBatch::default();
            batch.put_cf(meta, META_DIGEST_BASE, applied_slot.to_be_bytes());
            batch.put_cf(meta, META_DIGEST, started.value);
            db.write(batch)?;
            started
        }
    };
    Ok(Opened {
        db,
        applied_slot,
        current_version,
        oldest_version,
        gc,
        digest,
    })
}

/// A number the meta column family must hold.
fn meta_u64(db: &DB, name: &[u8]) -> Result<u64> {
    let bytes = db.get_cf(cf(db, CF_META), name)?;
    let bytes = bytes.ok_or_else(|| Error::Corrupt(format!("meta key {name:?} missing")))?;
    decode_u64(&bytes, "meta")
}
