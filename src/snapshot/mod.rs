//! Snapshots: a replica's state machine at an applied slot, as one checksummed file.
//!
//! A replica takes one every `[snapshot] interval_slots` applied slots or
//! `interval_wal_bytes` of WAL (a RocksDB checkpoint on a background thread, packed by
//! `file::pack`), then compacts its log and WAL below it. A replica that needs slots a
//! leader has compacted fetches the leader's newest snapshot file (`stream`), unpacks it
//! and installs it (`KvStoreExecutor::install_checkpoint`), then replays the log tail.
//! `paxkv backup` downloads the same file; `restore` seeds a new data directory from it.
//!
//! On disk, under a replica's data directory: `snapshots/snap-<slot>.pxs` (the newest
//! `keep`), `snapshots/incoming-<slot>.pxs` while one is fetched (kept across restarts, so
//! a fetch resumes), `snapshots/.checkpoint` while one is taken.

pub mod file;
pub mod stream;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::executor::{ExecutorOptions, KvStoreExecutor};

/// A log slot (see `consensus::Slot`).
pub type Slot = u64;

/// One snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Every log slot up to it is inside.
    pub slot: Slot,
    /// The key-value version at that slot.
    pub version: u64,
    /// The file's size.
    pub bytes: u64,
    /// CRC32C of the whole file but its last four bytes, which hold it.
    pub checksum: u32,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot file corrupt: {0}")]
    Corrupt(String),
    #[error("data directory {0} is in use (it holds a replica's state)")]
    DataDirInUse(String),
    #[error("the snapshot does not open as a key-value database: {0}")]
    Executor(#[from] crate::executor::Error),
}

/// Reads and checks the whole file (header, every chunk's checksum, the whole-file CRC32C).
pub fn verify_file(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    file::verify(path)
}

/// Seeds a new replica's data directory from a snapshot file, which is verified first:
/// `kv/` becomes the snapshot's database and `snapshots/` holds a copy of the file, so the
/// replica can send it to others. Refuses a directory that already holds a replica's state.
///
/// Seed every replica of the new cluster (a majority at least) before starting any: a
/// majority of empty replicas could elect a leader that knows nothing of the snapshot.
pub fn restore(snapshot: &Path, data_dir: &Path) -> Result<SnapshotInfo, SnapshotError> {
    let info = verify_file(snapshot)?;
    for part in ["kv", "wal", "snapshots"] {
        let path = data_dir.join(part);
        if path.exists() && fs::read_dir(&path)?.next().is_some() {
            return Err(SnapshotError::DataDirInUse(data_dir.display().to_string()));
        }
    }
    fs::create_dir_all(data_dir)?;
    let mut executor = KvStoreExecutor::open(data_dir.join("kv"), ExecutorOptions::default())?;
    let staged = executor.staging_dir();
    file::unpack(snapshot, &staged)?;
    let slot = executor.install_checkpoint(&staged)?;
    if slot != info.slot {
        return Err(SnapshotError::Corrupt(format!(
            "the header names slot {} but the database holds slot {slot}",
            info.slot
        )));
    }
    let catalog = Catalog::open(&data_dir.join("snapshots"))?;
    let copy = catalog.path_for(info.slot);
    let temporary = copy.with_extension("tmp");
    fs::copy(snapshot, &temporary)?;
    File::open(&temporary)?.sync_all()?;
    fs::rename(&temporary, &copy)?;
    sync_dir(catalog.dir())?;
    Ok(SnapshotInfo { path: copy, ..info })
}

/// The snapshot files a replica holds, newest last. Shared by its driver (which adds and
/// removes), its transport (which sends them) and its handle.
#[derive(Debug)]
pub struct Catalog {
    dir: PathBuf,
    snapshots: BTreeMap<Slot, SnapshotInfo>,
}

pub type SharedCatalog = Arc<Mutex<Catalog>>;

impl Catalog {
    /// Opens `dir` (created if missing), removing what an interrupted snapshot left.
    pub fn open(dir: &Path) -> Result<Catalog, SnapshotError> {
        fs::create_dir_all(dir)?;
        let mut snapshots = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            // `.checkpoint` and RocksDB's `.checkpoint.tmp` while it builds one are
            // directories; a packed file being written is `snap-*.pxs.tmp`.
            if name.starts_with(".checkpoint") || name.ends_with(".tmp") {
                match entry.file_type()?.is_dir() {
                    true => fs::remove_dir_all(&path)?,
                    false => fs::remove_file(&path)?,
                }
            } else if let Some(slot) = parse_name(&name, "snap-") {
                match read_header(&path) {
                    Ok(info) if info.slot == slot => {
                        snapshots.insert(slot, info);
                    }
                    // Only a file that is not a snapshot goes; other errors are the disk's.
                    Ok(_) | Err(SnapshotError::Corrupt(_)) => {
                        tracing::warn!(path = %path.display(), "removing an unreadable snapshot");
                        fs::remove_file(&path)?;
                    }
                    Err(SnapshotError::Io(error))
                        if error.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        tracing::warn!(path = %path.display(), "removing a truncated snapshot");
                        fs::remove_file(&path)?;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        sync_dir(dir)?;
        Ok(Catalog {
            dir: dir.to_path_buf(),
            snapshots,
        })
    }

    pub fn shared(self) -> SharedCatalog {
        Arc::new(Mutex::new(self))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_for(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("snap-{slot:020}.pxs"))
    }

    /// Where a snapshot fetched from a peer is written until it is complete.
    pub fn incoming_path(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("incoming-{slot:020}.pxs"))
    }

    /// The fetches left behind, by slot.
    pub fn incoming(&self) -> Vec<(Slot, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let names = entries.filter_map(|entry| entry.ok()).filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            parse_name(&name, "incoming-").map(|slot| (slot, entry.path()))
        });
        names.collect()
    }

    /// Where a checkpoint is taken before it is packed.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join(".checkpoint")
    }

    pub fn latest(&self) -> Option<&SnapshotInfo> {
        self.snapshots.values().next_back()
    }

    pub fn get(&self, slot: Slot) -> Option<&SnapshotInfo> {
        self.snapshots.get(&slot)
    }

    pub fn insert(&mut self, info: SnapshotInfo) {
        self.snapshots.insert(info.slot, info);
    }

    /// Removes all but the newest `keep` files (one at least). A file being sent stays
    /// readable to its sender until it closes it.
    pub fn retain_newest(&mut self, keep: usize) -> std::io::Result<()> {
        while self.snapshots.len() > keep.max(1) {
            let (_, oldest) = self.snapshots.pop_first().expect("not empty");
            fs::remove_file(&oldest.path)?;
        }
        sync_dir(&self.dir)
    }
}

fn parse_name(name: &str, prefix: &str) -> Option<Slot> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(".pxs")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// The header's slot and version, the size and the stored checksum, without reading the
/// rest (a file this replica wrote and fsynced; receivers verify it whole).
pub fn read_header(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    let mut file = File::open(path)?;
    let bytes = file.metadata()?.len();
    let mut header = [0u8; 28];
    file.read_exact(&mut header)?;
    if &header[..8] != b"PAXKVSNP" || bytes < 40 {
        return Err(SnapshotError::Corrupt(format!(
            "{}: bad header",
            path.display()
        )));
    }
    let slot = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    let version = u64::from_le_bytes(header[20..28].try_into().expect("8 bytes"));
    file.seek(SeekFrom::End(-4))?;
    let mut checksum = [0u8; 4];
    file.read_exact(&mut checksum)?;
    Ok(SnapshotInfo {
        slot,
        version,
        bytes,
        checksum: u32::from_le_bytes(checksum),
        path: path.to_path_buf(),
    })
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_removes_what_an_interrupted_snapshot_left_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = dir.path().join("snapshots");
        // A checkpoint being taken (RocksDB builds it in `.checkpoint.tmp`) and a file being
        // packed, when the process was killed.
        for leftover in [".checkpoint", ".checkpoint.tmp"] {
            fs::create_dir_all(snapshots.join(leftover)).unwrap();
            fs::write(snapshots.join(leftover).join("000001.sst"), b"x").unwrap();
        }
        let checkpoint = dir.path().join("source");
        fs::create_dir(&checkpoint).unwrap();
        fs::write(checkpoint.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
        let catalog = Catalog::open(&snapshots).unwrap();
        let info = file::pack(&checkpoint, 12, 3, &catalog.path_for(12)).unwrap();
        fs::write(snapshots.join("snap-00000000000000000013.pxs.tmp"), b"half").unwrap();
        let incoming = catalog.incoming_path(20);
        fs::write(&incoming, b"partial").unwrap();

        let catalog = Catalog::open(&snapshots).unwrap();
        let mut names: Vec<String> = fs::read_dir(&snapshots)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expected = [
            "incoming-00000000000000000020.pxs",
            "snap-00000000000000000012.pxs",
        ];
        assert_eq!(names, expected);
        assert_eq!(catalog.latest(), Some(&info));
        assert_eq!(catalog.incoming(), vec![(20, incoming)]);
    }
}
