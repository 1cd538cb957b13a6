//! The executor's side of snapshots: checkpoints taken off the apply thread, and the atomic
//! replacement of the whole database by a checkpoint from another replica.
//!
//! Layout under the executor's directory: `ACTIVE` names the database directory in use
//! (`db-<slot>`, `db-0` at first); `staging/` is where a snapshot is unpacked before it is
//! installed. Installing renames the staged checkpoint to `db-<slot>`, opens it, and only
//! then replaces `ACTIVE` (write to a temporary file, fsync, rename, fsync the directory):
//! a crash at any point leaves `ACTIVE` naming either the old database or the new one,
//! whole. Directories `ACTIVE` does not name are removed at open.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::DB;

use super::keys::{COLUMN_FAMILIES, META_APPLIED_SLOT, META_CURRENT_VERSION};
use super::{meta_u64, open_db, Applied, Error, KvStoreExecutor, Result, Slot};

const ACTIVE: &str = "ACTIVE";
const FIRST_DB: &str = "db-0";
const STAGING: &str = "staging";

/// The database readers read: swapped whole when a snapshot is installed. A read holds
/// its own `Arc`, so it finishes on the database it began on.
pub struct DbCell {
    db: RwLock<Arc<DB>>,
}

impl DbCell {
    pub(super) fn new(db: Arc<DB>) -> DbCell {
        DbCell {
            db: RwLock::new(db),
        }
    }

    pub(super) fn current(&self) -> Arc<DB> {
        Arc::clone(&self.db.read().expect("db cell lock"))
    }

    fn replace(&self, db: Arc<DB>) {
        *self.db.write().expect("db cell lock") = db;
    }
}

/// Takes a checkpoint into a directory that must not exist yet, on whatever thread runs
/// it, and makes the live database durable through the checkpoint's slot; returns the
/// checkpoint's applied slot and version.
pub type Checkpointer = Box<dyn FnOnce(&Path) -> Result<(Slot, u64)> + Send>;

/// Creates `root` if needed and returns the database directory `ACTIVE` names (creating
/// `ACTIVE` for a new executor), after removing directories it does not name.
pub(super) fn prepare_root(root: &Path) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(io_error)?;
    let active = match fs::read_to_string(root.join(ACTIVE)) {
        Ok(name) => name.trim().to_string(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if root.join("CURRENT").exists() {
                return Err(Error::Corrupt(format!(
                    "{} holds a database without an {ACTIVE} file",
                    root.display()
                )));
            }
            write_active(root, FIRST_DB)?;
            FIRST_DB.to_string()
        }
        Err(error) => return Err(io_error(error)),
    };
    if !active.starts_with("db-") || active.contains('/') {
        return Err(Error::Corrupt(format!("{ACTIVE} names {active:?}")));
    }
    for entry in fs::read_dir(root).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = (name.starts_with("db-") && name != active) || name == STAGING;
        if stale && entry.file_type().map_err(io_error)?.is_dir() {
            fs::remove_dir_all(entry.path()).map_err(io_error)?;
        }
    }
    Ok(root.join(active))
}

fn write_active(root: &Path, name: &str) -> Result<()> {
    let temporary = root.join(format!("{ACTIVE}.tmp"));
    let mut file = File::create(&temporary).map_err(io_error)?;
    file.write_all(name.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    fs::rename(&temporary, root.join(ACTIVE)).map_err(io_error)?;
    sync_dir(root)
}

fn sync_dir(dir: &Path) -> Result<()> {
    crate::snapshot::sync_dir(dir).map_err(io_error)
}

fn io_error(error: std::io::Error) -> Error {
    Error::Io(error.to_string())
}

/// The applied slot and version of a checkpoint, opened read-only.
pub fn read_checkpoint(dir: &Path) -> Result<(Slot, u64)> {
    let db = DB::open_cf_for_read_only(&rocksdb::Options::default(), dir, COLUMN_FAMILIES, false)?;
    let slot = meta_u64(&db, META_APPLIED_SLOT)?;
    Ok((slot, meta_u64(&db, META_CURRENT_VERSION)?))
}

impl KvStoreExecutor {
    /// A checkpoint of the database as it will be when the returned closure runs: a
    /// consistent RocksDB checkpoint (SST files hard-linked, memtables flushed), so any
    /// slot applied meanwhile is either wholly in it or not at all.
    pub fn checkpointer(&mut self) -> Checkpointer {
        self.reap_retired();
        let db = Arc::clone(&self.db);
        Box::new(move |dir: &Path| {
            Checkpoint::new(&db)?.create_checkpoint(dir)?;
            // The checkpoint's slots must survive in the live database too before the log
            // below them is compacted: sync the WAL that wrote them.
            db.flush_wal(true)?;
            read_checkpoint(dir)
        })
    }

    /// Where to unpack a snapshot before `install_checkpoint`: on the same filesystem.
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(STAGING)
    }

    /// Replaces the whole database with the checkpoint in `staged` (moved, not copied),
    /// atomically (see the module doc). It must be ahead of the applied slot. Readers see
    /// the new database from their next read. Returns its applied slot.
    pub fn install_checkpoint(&mut self, staged: &Path) -> Result<Slot> {
        let (slot, _) = read_checkpoint(staged)?;
        if slot <= self.applied_slot {
            let _ = fs::remove_dir_all(staged);
            return Err(Error::InvalidArgument(format!(
                "a snapshot at slot {slot} is not ahead of the applied slot {}",
                self.applied_slot
            )));
        }
        let name = format!("db-{slot:020}");
        let dest = self.root.join(&name);
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(io_error)?;
        }
        fs::rename(staged, &dest).map_err(io_error)?;
        sync_dir(&self.root)?;
        let opened = open_db(&dest)?;
        if opened.applied_slot != slot {
            return Err(Error::Corrupt(format!(
                "checkpoint read as slot {slot}, opened as slot {}",
                opened.applied_slot
            )));
        }
        write_active(&self.root, &name)
            .map_err(|error| Error::InstallInterrupted(error.to_string()))?;
        let old = std::mem::replace(&mut self.db, Arc::new(opened.db));
        self.cell.replace(Arc::clone(&self.db));
        let old_dir = std::mem::replace(&mut self.active, dest);
        self.retired.push((old_dir, Arc::downgrade(&old)));
        drop(old);
        self.applied_slot = opened.applied_slot;
        self.current_version = opened.current_version;
        self.oldest_version = opened.oldest_version;
        self.gc = opened.gc;
        self.digest = opened.digest;
        self.invariants();
        self.applied.send_replace(Applied {
            slot,
            current_version: self.current_version,
            oldest_version: self.oldest_version,
        });
        self.reap_retired();
        Ok(slot)
    }

    /// Removes replaced databases no reader holds any more.
    fn reap_retired(&mut self) {
        self.retired.retain(|(dir, db)| {
            if db.strong_count() > 0 {
                return true;
            }
            if let Err(error) = fs::remove_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), %error, "removing a replaced database");
            }
            false
        });
    }
}
