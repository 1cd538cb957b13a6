//! `ReplicatedKvStore`: one replica of the key-value store. The RocksDB executor applies
//! what the consensus log commits; the driver thread owns both; readers share the database
//! through `KvReader` snapshots.
//!
//! On disk, under the replica's data directory: `kv/` (RocksDB, see `executor::snapshot`),
//! `wal/` (the consensus log) and `snapshots/` (snapshot files, see `snapshot`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use super::driver::{self, DriverOptions, ReplicaHandle, ReplicaNode, StartError};
use crate::consensus::NodeId;
use crate::executor::{self, ExecutorOptions, KvReader, KvStoreExecutor, WriteOutcome};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the key-value database: {0}")]
    Executor(#[from] executor::Error),
    #[error("starting the replica: {0}")]
    Replica(#[from] StartError),
}

pub struct ReplicatedKvStore {
    node: ReplicaNode<WriteOutcome>,
    reader: KvReader,
    executor_options: ExecutorOptions,
}

impl ReplicatedKvStore {
    /// Opens (or creates) the replica's state under `data_dir` and starts it. Call within a
    /// tokio runtime.
    pub fn start(
        listener: TcpListener,
        peers: BTreeMap<NodeId, SocketAddr>,
        data_dir: &Path,
        executor_options: ExecutorOptions,
        driver_options: DriverOptions,
    ) -> Result<ReplicatedKvStore, StoreError> {
        let executor = KvStoreExecutor::open(data_dir.join("kv"), executor_options.clone())?;
        let reader = executor.reader();
        let mut driver_options = driver_options;
        driver_options.snapshot.dir = Some(data_dir.join("snapshots"));
        let node = driver::start(
            listener,
            peers,
            &data_dir.join("wal"),
            executor,
            driver_options,
        )?;
        Ok(ReplicatedKvStore {
            node,
            reader,
            executor_options,
        })
    }

    pub fn handle(&self) -> ReplicaHandle<WriteOutcome> {
        self.node.handle.clone()
    }

    pub fn reader(&self) -> KvReader {
        self.reader.clone()
    }

    pub fn executor_options(&self) -> &ExecutorOptions {
        &self.executor_options
    }

    /// Stops the driver thread and the peer transport.
    pub fn stop(self) {
        self.node.stop();
    }
}
