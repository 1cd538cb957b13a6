//! STAND-IN for the snapshot module: its signatures, every call failing, nothing faked. // STAND-IN
//! Dropped whole when the real module is merged (rustfmt skips it, see lib.rs).       // STAND-IN
use std::path::{Path, PathBuf};                                                         // STAND-IN
                                                                                        // STAND-IN
#[derive(Clone, Debug, PartialEq, Eq)]                                                  // STAND-IN
pub struct SnapshotInfo {                                                               // STAND-IN
    pub slot: u64,                                                                      // STAND-IN
    pub version: u64,                                                                   // STAND-IN
    pub bytes: u64,                                                                     // STAND-IN
    pub checksum: u32,                                                                  // STAND-IN
    pub path: PathBuf,                                                                  // STAND-IN
}                                                                                       // STAND-IN
                                                                                        // STAND-IN
#[derive(Debug, thiserror::Error)]                                                      // STAND-IN
pub enum SnapshotError {                                                                // STAND-IN
    #[error("snapshot i/o: {0}")]                                                       // STAND-IN
    Io(#[from] std::io::Error),                                                         // STAND-IN
    #[error("snapshot file corrupt: {0}")]                                              // STAND-IN
    Corrupt(String),                                                                    // STAND-IN
    #[error("data directory {0} is in use (it holds a replica's state)")]               // STAND-IN
    DataDirInUse(String),                                                               // STAND-IN
}                                                                                       // STAND-IN
                                                                                        // STAND-IN
fn not_built() -> SnapshotError {                                                       // STAND-IN
    let kind = std::io::ErrorKind::Unsupported;                                         // STAND-IN
    SnapshotError::Io(std::io::Error::new(kind, "snapshots are not built in this stand-in")) // STAND-IN
}                                                                                       // STAND-IN
                                                                                        // STAND-IN
pub fn verify_file(path: &Path) -> Result<SnapshotInfo, SnapshotError> {                // STAND-IN
    let _ = path;                                                                       // STAND-IN
    Err(not_built())                                                                    // STAND-IN
}                                                                                       // STAND-IN
                                                                                        // STAND-IN
pub fn restore(file: &Path, data_dir: &Path) -> Result<SnapshotInfo, SnapshotError> {   // STAND-IN
    let _ = (file, data_dir);                                                           // STAND-IN
    Err(not_built())                                                                    // STAND-IN
}                                                                                       // STAND-IN
