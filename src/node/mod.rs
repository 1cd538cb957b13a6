//! Running paxkv: one node (a replica and its Thrift server) per `NodeConfig`, and the
//! `dev` layout of three nodes in one process.

pub mod config;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::{ConfigError, Member, NodeConfig};

use crate::api::{self, KvHandler};
use crate::consensus::Config;
use crate::executor::ExecutorOptions;
use crate::replica::{DriverOptions, ReplicatedKvStore, StoreError};
use crate::router::PrimaryRouter;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("binding the peer listener on {addr}: {error}")]
    BindPeer {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("binding the Thrift listener on {addr}: {error}")]
    BindThrift { addr: SocketAddr, error: api::Error },
    #[error("creating data directory {path}: {error}")]
    DataDir { path: String, error: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Thrift server: {0}")]
    Server(#[from] api::Error),
}

/// A started node: its store and router; `serve` runs its Thrift server.
pub struct Node {
    pub config: NodeConfig,
    pub store: ReplicatedKvStore,
    pub router: PrimaryRouter,
    thrift: TcpListener,
}

impl Node {
    /// Opens the replica's data, binds both listeners and starts the replica. Call within
    /// a tokio runtime.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|error| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            error,
        })?;
        let peer_addr = config.peer_addr();
        let peers = TcpListener::bind(peer_addr)
            .await
            .map_err(|error| NodeError::BindPeer {
                addr: peer_addr,
                error,
            })?;
        let thrift = api::bind(config.thrift_addr).map_err(|error| NodeError::BindThrift {
            addr: config.thrift_addr,
            error,
        })?;
        let store = ReplicatedKvStore::start(
            peers,
            config.peers(),
            &config.data_dir,
            executor_options(&config),
            driver_options(&config),
        )?;
        let timing = &config.timing;
        let election_ms = u64::from(timing.election_timeout_ticks) * timing.tick_ms;
        let router = PrimaryRouter::new(
            store.handle(),
            store.reader(),
            config.peers(),
            config.limits.clone(),
            Duration::from_millis(timing.request_timeout_ms),
            u32::try_from(election_ms).unwrap_or(u32::MAX),
        );
        Ok(Node {
            config,
            store,
            router,
            thrift,
        })
    }

    /// Serves the Thrift API until `shutdown` resolves and the calls in flight finish,
    /// then stops the replica.
    pub async fn serve(self, shutdown: impl Future) -> Result<(), NodeError> {
        let handler = Arc::new(KvHandler::new(
            self.router.clone(),
            tokio::runtime::Handle::current(),
        ));
        let limits = self.config.server_limits();
        let served = api::run(self.thrift, handler, limits, shutdown).await;
        // Joining the driver thread blocks: do it off the runtime's workers.
        let store = self.store;
        let _ = tokio::task::spawn_blocking(move || store.stop()).await;
        Ok(served?)
    }
}

/// The executor's state-affecting options derive from the config, so they are equal on
/// every replica configured alike.
fn executor_options(config: &NodeConfig) -> ExecutorOptions {
    ExecutorOptions {
        retention_versions: config.storage.retention_versions,
        // Above the router's limit, so the executor's own check never decides first.
        command_bytes_max: config.limits.command_bytes_max + 64 * 1024,
        ..ExecutorOptions::default()
    }
}

fn driver_options(config: &NodeConfig) -> DriverOptions {
    let members = config.members.iter().map(|m| m.id).collect();
    let mut consensus = Config::new(config.id, members);
    consensus.heartbeat_interval_ticks = config.timing.heartbeat_interval_ticks;
    consensus.election_timeout_ticks = config.timing.election_timeout_ticks;
    // One command (plus its envelope) must fit in a slot.
    consensus.slot_bytes_max = consensus
        .slot_bytes_max
        .max(config.limits.command_bytes_max + 128 * 1024);
    let mut options = DriverOptions::new(config.id, Vec::new());
    options.consensus = consensus;
    options.tick_ms = config.timing.tick_ms;
    options.request_timeout_ms = config.timing.request_timeout_ms;
    options
}

/// The configs of `paxkv dev`: replicas 1..=n with data under `data_dir/replica_N`.
pub fn dev_configs(
    data_dir: &Path,
    thrift_addrs: &[SocketAddr],
    peer_addrs: &[SocketAddr],
) -> Vec<NodeConfig> {
    assert_eq!(
        thrift_addrs.len(),
        peer_addrs.len(),
        "one Thrift address per replica"
    );
    let members: Vec<Member> = (peer_addrs.iter().enumerate())
        .map(|(i, &peer_addr)| Member {
            id: i as u32 + 1,
            peer_addr,
        })
        .collect();
    (members.iter().zip(thrift_addrs))
        .map(|(member, &thrift_addr)| NodeConfig {
            id: member.id,
            data_dir: data_dir.join(format!("replica_{}", member.id)),
            thrift_addr,
            members: members.clone(),
            limits: Default::default(),
            server: Default::default(),
            timing: Default::default(),
            storage: Default::default(),
            log: "info".to_string(),
        })
        .collect()
}
