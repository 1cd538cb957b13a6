//! A replica's identity on disk: `data_dir/IDENTITY` names the cluster, the replica id and
//! the incarnation its data belongs to. It is written once, fsynced, when a cluster is created
//! (`--bootstrap`) or when a data directory that holds state but no identity (one from before
//! identities, or one `paxkv restore` seeded) is first opened.
//!
//! What it guards against: a replica whose data directory is gone (a replaced disk) restarted
//! with its old config. Paxos assumes acceptors never forget a promise or a vote; an empty
//! replica that answered as a member could help elect a leader that never saw an acknowledged
//! write. An empty data directory therefore starts only with `--bootstrap`, which creates a
//! new cluster; everything else is refused with [`IdentityError::EmptyDataDir`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::consensus::NodeId;

/// The file's name under `data_dir`.
pub const IDENTITY_FILE: &str = "IDENTITY";

/// The entries that hold a replica's state; any of them means the directory is not new.
const STATE_ENTRIES: &[&str] = &[WAL_DIR, "kv", "snapshots"];

/// The consensus log's directory, which every started replica has.
const WAL_DIR: &str = "wal";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The cluster's name (`cluster_name` when it was created); every peer connection
    /// carries it.
    pub cluster: String,
    pub node_id: NodeId,
    /// One life of this data directory; a replica rebuilt from nothing gets another.
    pub incarnation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "data directory {path} holds no state and --bootstrap was not given. If this replica \
         is new to a running cluster or lost its disk, restarting it as a member could lose \
         acknowledged writes, and re-admitting it is not supported yet: keep the old data \
         directory or restore a backup into every replica. To create a new cluster, start \
         every replica once with --bootstrap"
    )]
    EmptyDataDir { path: String },
    #[error("data directory {path} belongs to replica {found}, not to replica {configured}")]
    WrongReplica {
        path: String,
        found: NodeId,
        configured: NodeId,
    },
    #[error(
        "data directory {path} has an identity but no wal/: its consensus log is gone, and \
         restarting it as a member could lose acknowledged writes. Restore the directory, or \
         treat the replica as one that lost its disk (docs/operations.md, Data layout)"
    )]
    LostLog { path: String },
    #[error(
        "data directory {path} belongs to cluster {found:?}, but the config's cluster_name \
         is {configured:?}"
    )]
    WrongCluster {
        path: String,
        found: String,
        configured: String,
    },
    #[error("identity file {path}: {error}")]
    Unreadable { path: String, error: String },
    #[error("writing identity file {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

/// How a start found the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// It had an identity file for this replica.
    Known,
    /// It held state but no identity file (a directory from before identities, or a
    /// restored backup); one was written.
    Adopted,
    /// It was empty and `--bootstrap` created this replica of a new cluster.
    Bootstrapped,
}

/// Whether `data_dir` holds a replica's state (or an identity).
pub fn has_state(data_dir: &Path) -> bool {
    std::iter::once(IDENTITY_FILE)
        .chain(STATE_ENTRIES.iter().copied())
        .any(|entry| data_dir.join(entry).exists())
}

/// Checks `data_dir` against replica `id`, writing the identity file where it is missing and
/// allowed. The directory must exist.
pub fn open(
    data_dir: &Path,
    id: NodeId,
    cluster: &str,
    bootstrap: bool,
) -> Result<(Identity, Opened), IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    if path.exists() {
        let identity = read(&path)?;
        if identity.node_id != id {
            return Err(IdentityError::WrongReplica {
                path: data_dir.display().to_string(),
                found: identity.node_id,
                configured: id,
            });
        }
        if identity.cluster != cluster {
            return Err(IdentityError::WrongCluster {
                path: data_dir.display().to_string(),
                found: identity.cluster,
                configured: cluster.to_string(),
            });
        }
        if !data_dir.join(WAL_DIR).exists() {
            return Err(IdentityError::LostLog {
                path: data_dir.display().to_string(),
            });
        }
        return Ok((identity, Opened::Known));
    }
    let opened = match (has_state(data_dir), bootstrap) {
        (true, _) => Opened::Adopted,
        (false, true) => Opened::Bootstrapped,
        (false, false) => {
            return Err(IdentityError::EmptyDataDir {
                path: data_dir.display().to_string(),
            })
        }
    };
    let identity = Identity {
        cluster: cluster.to_string(),
        node_id: id,
        incarnation: 1,
    };
    // The log's directory first: an identity without one is a directory that lost its log.
    fs::create_dir_all(data_dir.join(WAL_DIR))
        .and_then(|()| write(data_dir, &identity))
        .map_err(|error| IdentityError::Write {
            path: path.display().to_string(),
            error,
        })?;
    Ok((identity, opened))
}

fn read(path: &Path) -> Result<Identity, IdentityError> {
    let unreadable = |error: String| IdentityError::Unreadable {
        path: path.display().to_string(),
        error,
    };
    let text = fs::read_to_string(path).map_err(|error| unreadable(error.to_string()))?;
    serde_json::from_str(&text).map_err(|error| unreadable(error.to_string()))
}

/// Writes the file beside its final name, fsyncs it, renames it and fsyncs the directory, so
/// a crash leaves either no identity or a whole one.
fn write(data_dir: &Path, identity: &Identity) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(identity).map_err(std::io::Error::other)?;
    let temporary: PathBuf = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, data_dir.join(IDENTITY_FILE))?;
    File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "test-cluster";

    #[test]
    fn another_cluster_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), 1, C, true).unwrap();
        let error = open(dir.path(), 1, "other", true).unwrap_err();
        assert!(
            matches!(&error, IdentityError::WrongCluster { found, .. } if found == C),
            "{error}"
        );
    }

    #[test]
    fn an_empty_directory_needs_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let error = open(dir.path(), 2, C, false).unwrap_err();
        assert!(
            matches!(error, IdentityError::EmptyDataDir { .. }),
            "{error}"
        );
        assert!(!dir.path().join(IDENTITY_FILE).exists());
        let (identity, opened) = open(dir.path(), 2, C, true).unwrap();
        assert_eq!(opened, Opened::Bootstrapped);
        assert_eq!(
            identity,
            Identity {
                cluster: C.to_string(),
                node_id: 2,
                incarnation: 1
            }
        );
        // From then on the directory is known, with or without the flag.
        assert_eq!(open(dir.path(), 2, C, false).unwrap().1, Opened::Known);
        assert_eq!(open(dir.path(), 2, C, true).unwrap().1, Opened::Known);
    }

    #[test]
    fn state_without_an_identity_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("wal")).unwrap();
        assert_eq!(open(dir.path(), 1, C, false).unwrap().1, Opened::Adopted);
        assert_eq!(open(dir.path(), 1, C, false).unwrap().1, Opened::Known);
    }

    #[test]
    fn another_replica_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), 1, C, true).unwrap();
        let error = open(dir.path(), 3, C, true).unwrap_err();
        assert!(
            matches!(
                error,
                IdentityError::WrongReplica {
                    found: 1,
                    configured: 3,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn an_identity_whose_log_is_gone_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), 1, C, true).unwrap();
        fs::remove_dir_all(dir.path().join(WAL_DIR)).unwrap();
        for bootstrap in [false, true] {
            let error = open(dir.path(), 1, C, bootstrap).unwrap_err();
            assert!(matches!(error, IdentityError::LostLog { .. }), "{error}");
        }
    }

    #[test]
    fn a_damaged_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IDENTITY_FILE), "{\"node_id\": \"x\"}").unwrap();
        let error = open(dir.path(), 1, C, true).unwrap_err();
        assert!(matches!(error, IdentityError::Unreadable { .. }), "{error}");
    }
}
