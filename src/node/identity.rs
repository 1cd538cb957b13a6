//! A replica's identity on disk: `data_dir/IDENTITY` names the cluster, the replica id and
//! the incarnation its data belongs to. It is written once, fsynced, when a cluster is created
//! (`--bootstrap`) or when a data directory that holds state but no identity (one from before
//! identities, or one `paxkv restore` seeded) is first opened.
//!
//! What it guards against: a replica whose data directory is gone (a replaced disk) restarted
//! with its old config. Paxos assumes acceptors never forget a promise or a vote; an empty
//! replica that answered as a member could help elect a leader that never saw an acknowledged
//! write. So a replica that finds no consensus log of its own (an empty directory, a
//! directory whose `wal/` is gone, or one `paxkv restore` seeded) without `--bootstrap`
//! *joins*: it takes a new incarnation, which no membership names, and is a learner that
//! neither votes nor promises until an operator adds it (`paxkv admin member add`) and
//! promotes it. `--bootstrap` on such a directory creates a new cluster instead.

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
    /// Members of a bootstrapped cluster start at 1; a replica that joins takes a new one.
    pub incarnation: u64,
    /// This replica joined an existing cluster: the config's members are not its
    /// membership, which it learns from the log.
    #[serde(default)]
    pub joined: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("data directory {path} belongs to replica {found}, not to replica {configured}")]
    WrongReplica {
        path: String,
        found: NodeId,
        configured: NodeId,
    },
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
    /// It was empty, or held only a restored backup, and `--bootstrap` created this
    /// replica of a new cluster.
    Bootstrapped,
    /// It held no consensus log of its own (empty, or a restored backup): the replica
    /// joins an existing cluster at a new incarnation.
    Joined,
    /// Its identity was there but its consensus log was gone: the replica forgot what it
    /// promised, and joins again at a new incarnation.
    LostLog,
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
    let has_log = data_dir.join(WAL_DIR).exists();
    let (identity, opened) = if path.exists() {
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
        if has_log {
            return Ok((identity, Opened::Known));
        }
        let rejoined = Identity {
            incarnation: new_incarnation(identity.incarnation),
            joined: true,
            ..identity
        };
        (rejoined, Opened::LostLog)
    } else {
        let opened = match (has_state(data_dir), has_log, bootstrap) {
            // A directory from before identities: its log is whole.
            (true, true, _) => Opened::Adopted,
            (_, _, true) => Opened::Bootstrapped,
            (_, _, false) => Opened::Joined,
        };
        let joined = opened == Opened::Joined;
        let identity = Identity {
            cluster: cluster.to_string(),
            node_id: id,
            incarnation: if joined { new_incarnation(1) } else { 1 },
            joined,
        };
        (identity, opened)
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

/// An incarnation after `previous` that no other life of any replica has taken: the wall
/// clock in nanoseconds (1 is the bootstrap members').
fn new_incarnation(previous: u64) -> u64 {
    // Wall time only makes the number unique; nothing orders incarnations by it.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    now.max(previous + 1).max(2)
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
    fn an_empty_directory_joins_at_a_new_incarnation_unless_bootstrapped() {
        let dir = tempfile::tempdir().unwrap();
        let (joined, opened) = open(dir.path(), 2, C, false).unwrap();
        assert_eq!(opened, Opened::Joined);
        assert!(joined.joined && joined.incarnation > 1, "{joined:?}");
        // It stays the same replica from then on.
        assert_eq!(
            open(dir.path(), 2, C, false).unwrap(),
            (joined, Opened::Known)
        );
        let dir = tempfile::tempdir().unwrap();
        let (identity, opened) = open(dir.path(), 2, C, true).unwrap();
        assert_eq!(opened, Opened::Bootstrapped);
        assert_eq!(
            identity,
            Identity {
                cluster: C.to_string(),
                node_id: 2,
                incarnation: 1,
                joined: false,
            }
        );
        // From then on the directory is known, with or without the flag.
        assert_eq!(open(dir.path(), 2, C, false).unwrap().1, Opened::Known);
        assert_eq!(open(dir.path(), 2, C, true).unwrap().1, Opened::Known);
    }

    #[test]
    fn a_log_without_an_identity_is_adopted_and_a_restored_backup_joins() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("wal")).unwrap();
        assert_eq!(open(dir.path(), 1, C, false).unwrap().1, Opened::Adopted);
        assert_eq!(open(dir.path(), 1, C, false).unwrap().1, Opened::Known);
        // What `paxkv restore` leaves: state, no log. Its promises are not in it.
        for (bootstrap, expected) in [(false, Opened::Joined), (true, Opened::Bootstrapped)] {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("kv")).unwrap();
            let (identity, opened) = open(dir.path(), 1, C, bootstrap).unwrap();
            assert_eq!(opened, expected);
            assert_eq!(identity.joined, !bootstrap);
        }
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
    fn an_identity_whose_log_is_gone_joins_again_at_a_new_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = open(dir.path(), 1, C, true).unwrap();
        fs::remove_dir_all(dir.path().join(WAL_DIR)).unwrap();
        // --bootstrap does not make it the member it was.
        let (again, opened) = open(dir.path(), 1, C, true).unwrap();
        assert_eq!(opened, Opened::LostLog);
        assert!(again.joined && again.incarnation > first.incarnation);
        assert_eq!(
            open(dir.path(), 1, C, false).unwrap(),
            (again, Opened::Known)
        );
    }

    #[test]
    fn a_damaged_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IDENTITY_FILE), "{\"node_id\": \"x\"}").unwrap();
        let error = open(dir.path(), 1, C, true).unwrap_err();
        assert!(matches!(error, IdentityError::Unreadable { .. }), "{error}");
    }
}
