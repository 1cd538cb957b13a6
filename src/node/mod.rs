//! Running paxkv: one node (a replica, its Thrift server and its HTTP metrics endpoint) per
//! `NodeConfig`, and the `dev` layout of three nodes in one process.

pub mod config;
pub mod identity;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::{ConfigError, Member, NodeConfig, METRICS_OFF};

use crate::api::{self, ConfmanHandler, KvAndConfig, KvHandler};
use crate::confman::{self, store::LocalStore, store::RouterStore, Confman};
use crate::consensus::Config;
use crate::executor::ExecutorOptions;
use crate::metrics::{self, Metrics};
use crate::replica::{DriverOptions, ReplicatedKvStore, StoreError};
use crate::router::PrimaryRouter;
use crate::snapshot::stream;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("binding the peer listener on {addr}: {error}")]
    BindPeer {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("binding the Thrift listener on {addr}: {error}")]
    BindThrift { addr: SocketAddr, error: api::Error },
    #[error("binding the metrics endpoint (metrics_addr) on {addr}: {error}")]
    BindMetrics {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("creating data directory {path}: {error}")]
    DataDir { path: String, error: std::io::Error },
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Thrift server: {0}")]
    Server(#[from] api::Error),
}

/// Written into `data_dir` by a replica whose applied state diverged from a majority's;
/// a start that finds it refuses.
pub const DIVERGED_FILE: &str = "DIVERGED";

/// The root principal's token, written (mode 0600) into the data directory of the
/// bootstrap member with the smallest id when it creates the cluster; that replica creates
/// the root principal with it once the cluster runs. Read it, keep it, delete the file.
pub const ROOT_TOKEN_FILE: &str = "root-token";

/// How long the root bootstrap waits between attempts while the cluster has no leader.
const ROOT_BOOTSTRAP_RETRY_MS: u64 = 500;

/// How long stopping waits for the metrics endpoint's open requests.
const METRICS_STOP_TIMEOUT_MS: u64 = 1_000;

/// A started node: its store, router and metrics; `serve` runs its Thrift server and its
/// metrics endpoint.
pub struct Node {
    pub config: NodeConfig,
    pub store: ReplicatedKvStore,
    pub router: PrimaryRouter,
    pub metrics: Arc<Metrics>,
    thrift: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl Node {
    /// Opens the replica's data, binds both listeners and starts the replica. Call within
    /// a tokio runtime. A data directory with no consensus log starts a new cluster with
    /// `bootstrap`, and without it joins an existing one as a learner; see [`identity`].
    pub async fn start(config: NodeConfig, bootstrap: bool) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|error| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            error,
        })?;
        let (identity, opened) =
            identity::open(&config.data_dir, config.id, &config.cluster_name, bootstrap)?;
        tracing::info!(
            replica = identity.node_id,
            incarnation = identity.incarnation,
            cluster = identity.cluster,
            ?opened,
            "data directory {}",
            config.data_dir.display()
        );
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
        let metrics_listener = match config.metrics_socket_addr() {
            None => None,
            Some(addr) => Some(
                (metrics::http::bind(addr).await)
                    .map_err(|error| NodeError::BindMetrics { addr, error })?,
            ),
        };
        if identity.joined && opened != identity::Opened::Known {
            tracing::warn!(
                replica = identity.node_id,
                incarnation = identity.incarnation,
                "this replica has no consensus log of its own, so it joins the cluster as a \
                 new incarnation that neither votes nor promises: once running, add it with \
                 `paxkv admin member add {}` and, when it has caught up, promote it",
                identity.node_id
            );
        }
        let metrics = Arc::new(Metrics::new(config.id));
        let unsafe_debug = honoured_debug_settings(&config);
        let mut driver = driver_options(&config);
        driver.consensus.incarnation = identity.incarnation;
        driver.transport.incarnation = identity.incarnation;
        if identity.joined {
            // Its membership is the cluster's, learned from the log.
            driver.consensus.members = Vec::new();
        }
        driver.bootstrap = opened == identity::Opened::Bootstrapped;
        let smallest = config.members.iter().map(|m| m.id).min();
        if driver.bootstrap && smallest == Some(config.id) {
            write_root_token(&config.data_dir).map_err(|error| NodeError::DataDir {
                path: config.data_dir.join(ROOT_TOKEN_FILE).display().to_string(),
                error,
            })?;
        }
        driver.divergence_marker = Some(config.data_dir.join(DIVERGED_FILE));
        driver.transport.cluster = identity.cluster.clone();
        driver.transport.refused = metrics.peers.refused.clone();
        driver.snapshot.stream.cluster = identity.cluster.clone();
        driver.metrics = metrics.replica.clone();
        driver.unsafe_skip_fsync = unsafe_debug.unsafe_skip_fsync;
        let store = ReplicatedKvStore::start(
            peers,
            config.peers(),
            &config.data_dir,
            executor_options(&config),
            driver,
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
        )
        .with_metrics(metrics.router.clone())
        .with_unsafe_local_reads(unsafe_debug.unsafe_local_reads);
        Ok(Node {
            config,
            store,
            router,
            metrics,
            thrift,
            metrics_listener,
        })
    }

    /// Serves the Thrift API and the metrics endpoint until `shutdown` resolves and the
    /// calls in flight finish, then stops the replica.
    pub async fn serve(self, shutdown: impl Future) -> Result<(), NodeError> {
        let Node {
            config,
            store,
            router,
            metrics,
            thrift,
            metrics_listener,
        } = self;
        let mut handler = KvHandler::new(router.clone(), tokio::runtime::Handle::current())
            .with_metrics(metrics.api.clone());
        if config.auth.enabled {
            let local = Arc::new(LocalStore::new(store.reader()));
            handler = handler.with_auth(Confman::new(local, confman::system_clock()));
        } else {
            tracing::warn!(
                replica = config.id,
                "auth.enabled = false: the KV API serves every client without a token \
                 (every user key is readable and writable by anyone who reaches this port)"
            );
        }
        let config_store = Arc::new(RouterStore::new(
            router.clone(),
            tokio::runtime::Handle::current(),
        ));
        let confman = Confman::new(config_store, confman::system_clock())
            .with_metrics(metrics.config.clone());
        let root_bootstrap = tokio::spawn(bootstrap_root(
            confman.clone(),
            config.data_dir.join(ROOT_TOKEN_FILE),
        ));
        let services = KvAndConfig {
            kv: api::PaxkvSyncProcessor::new(Arc::new(handler)),
            config: api::ConfmanSyncProcessor::new(
                ConfmanHandler::new(confman).with_metrics(metrics.api.clone()),
            ),
        };
        let peers = (config.members.iter().map(|m| m.id))
            .filter(|&id| id != config.id)
            .collect();
        // Peer status requests only for someone who reads the answers.
        let sampler = metrics_listener.is_some().then(|| {
            let sampling =
                metrics::peers::sample_peers(store.handle(), peers, metrics.peers.clone());
            tokio::spawn(sampling)
        });
        let reclaimer = tokio::spawn(router.clone().reclaim_uploads());
        let (stop_http, stopped_http) = tokio::sync::oneshot::channel::<()>();
        let http = metrics_listener.map(|listener| {
            let endpoint = metrics::http::Endpoint::new(metrics.clone(), router, store.reader());
            tokio::spawn(serve_http(listener, endpoint, stopped_http))
        });
        let limits = config.server_limits();
        let connections = metrics.api.connections_open.clone();
        let served = api::serve_counted(thrift, Arc::new(services), limits, connections, shutdown);
        let served = served.await;
        root_bootstrap.abort();
        if let Some(sampler) = sampler {
            sampler.abort();
        }
        reclaimer.abort();
        let _ = stop_http.send(());
        if let Some(http) = http {
            let timeout = Duration::from_millis(METRICS_STOP_TIMEOUT_MS);
            let _ = tokio::time::timeout(timeout, http).await;
        }
        // Joining the driver thread blocks: do it off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || store.stop()).await;
        Ok(served?)
    }
}

/// Writes a new root token into `data_dir`, durably, readable by its owner only.
fn write_root_token(data_dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(ROOT_TOKEN_FILE);
    // One left by a start that stopped before the cluster ran is kept: it is the token.
    let mut file = match (std::fs::OpenOptions::new().write(true).create_new(true))
        .mode(0o600)
        .open(&path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(error),
    };
    writeln!(file, "{}", confman::new_root_token())?;
    file.sync_all()?;
    std::fs::File::open(data_dir)?.sync_all()?;
    tracing::warn!(
        "created the root principal's token in {}: keep it somewhere safe and delete the file",
        path.display()
    );
    Ok(())
}

/// The root token this replica's data directory holds, if any.
pub fn read_root_token(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(ROOT_TOKEN_FILE)).ok()?;
    Some(text.trim().to_string()).filter(|token| !token.is_empty())
}

/// Creates the root principal with the token in `path`, once the cluster can commit
/// (nothing happens if the file is absent or root exists already).
async fn bootstrap_root(confman: Confman, path: std::path::PathBuf) {
    let Some(token) = path.parent().and_then(read_root_token) else {
        return;
    };
    loop {
        let (confman, token) = (confman.clone(), token.clone());
        let attempt = tokio::task::spawn_blocking(move || confman.bootstrap_root(&token)).await;
        match attempt {
            Ok(Ok(true)) => {
                tracing::info!("created the root principal");
                return;
            }
            Ok(Ok(false)) => return,
            Ok(Err(error)) => tracing::debug!(%error, "root bootstrap: retrying"),
            Err(error) => {
                tracing::warn!(%error, "root bootstrap failed");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(ROOT_BOOTSTRAP_RETRY_MS)).await;
    }
}

/// The `[debug]` settings this build acts on: all of them in a `chaos` build, none
/// otherwise (validation refuses them there; a config built in code is not validated).
/// Each one that is on is logged as a warning, since it breaks a guarantee.
fn honoured_debug_settings(config: &NodeConfig) -> config::DebugSettings {
    if !cfg!(feature = "chaos") {
        return config::DebugSettings::default();
    }
    tracing::warn!(
        replica = config.id,
        "built with the chaos feature: the [debug] settings are accepted and the WAL's fault \
         points can be set over /debug/failpoints; not a build to deploy"
    );
    for setting in config.debug.unsafe_settings() {
        tracing::warn!(
            replica = config.id,
            setting,
            "UNSAFE DEBUG SETTING ON: this replica gives up a consistency or durability \
             guarantee on purpose; never run it with data you want to keep"
        );
    }
    config.debug.clone()
}

/// The metrics endpoint until `stop` fires (or its sender is dropped).
async fn serve_http(
    listener: TcpListener,
    endpoint: metrics::http::Endpoint,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let shutdown = async move {
        let _ = stop.await;
    };
    if let Err(error) = metrics::http::run(listener, endpoint, shutdown).await {
        tracing::error!(%error, "metrics endpoint failed");
    }
}

/// The executor's state-affecting options derive from the config, so they are equal on
/// every replica configured alike.
fn executor_options(config: &NodeConfig) -> ExecutorOptions {
    ExecutorOptions {
        retention_versions: config.storage.retention_versions,
        // Above the router's limit, so the executor's own check never decides first.
        command_bytes_max: config.limits.command_bytes_max + 64 * 1024,
        value_bytes_max: config.limits.value_bytes_max,
        uploads_max: config.storage.uploads_max,
        ..ExecutorOptions::default()
    }
}

fn driver_options(config: &NodeConfig) -> DriverOptions {
    let members = config.members.iter().map(|m| m.id).collect();
    let mut consensus = Config::new(config.id, members);
    consensus.heartbeat_interval_ticks = config.timing.heartbeat_interval_ticks;
    consensus.election_timeout_ticks = config.timing.election_timeout_ticks;
    // Every bound a command passes derives from command_bytes_max (itself at least a
    // full-size key and value), so any write the API accepts can be committed, logged,
    // replicated and caught up: a slot holds one command and its envelope; the proposal
    // queue two slots; a WAL record one slot; a peer frame one slot (an Accept, a catch-up
    // reply, which sends at least one slot whatever catch_up_bytes_max says).
    let slot_bytes = config.limits.command_bytes_max + 128 * 1024;
    consensus.slot_bytes_max = consensus.slot_bytes_max.max(slot_bytes);
    consensus.pending_bytes_max = (consensus.pending_bytes_max).max(2 * consensus.slot_bytes_max);
    let mut options = DriverOptions::new(config.id, Vec::new());
    let record_bytes = u32::try_from(consensus.slot_bytes_max + 64 * 1024)
        .expect("command_bytes_max is validated far below 4 GiB");
    options.wal.record_bytes_max = options.wal.record_bytes_max.max(record_bytes);
    options.transport.peer_frame_bytes_max =
        (options.transport.peer_frame_bytes_max).max(record_bytes + (1 << 20));
    options.consensus = consensus;
    options.tick_ms = config.timing.tick_ms;
    options.request_timeout_ms = config.timing.request_timeout_ms;
    let snapshot = &config.snapshot;
    options.snapshot.interval_slots = snapshot.interval_slots;
    options.snapshot.interval_wal_bytes = snapshot.interval_wal_bytes;
    options.snapshot.retain_slots = snapshot.retain_slots;
    options.snapshot.retain_bytes = snapshot.retain_bytes;
    options.snapshot.keep = snapshot.keep;
    options.snapshot.stream = stream::StreamOptions {
        transfer_bytes_per_sec: snapshot.transfer_bytes_per_sec,
        transfer_streams_max: snapshot.transfer_streams_max,
        transfer_chunk_bytes: snapshot.transfer_chunk_bytes,
        idle_timeout_ms: snapshot.transfer_idle_timeout_ms,
        cluster: config.cluster_name.clone(),
    };
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
            cluster_name: "paxkv-dev".to_string(),
            members: members.clone(),
            limits: Default::default(),
            server: Default::default(),
            timing: Default::default(),
            storage: Default::default(),
            snapshot: Default::default(),
            // Loopback only, one command to start: `paxkv dev --auth` turns it on.
            auth: config::AuthSettings { enabled: false },
            log: "info".to_string(),
            metrics_addr: METRICS_OFF.to_string(),
            debug: Default::default(),
        })
        .collect()
}

/// Gives the `dev` configs their metrics endpoints: `["off"]` for none, else one address
/// per replica. The error names the `--metrics-addrs` flag.
pub fn set_dev_metrics_addrs(configs: &mut [NodeConfig], addrs: &[String]) -> Result<(), String> {
    if addrs == [METRICS_OFF] {
        return Ok(());
    }
    if addrs.len() != configs.len() {
        return Err(format!(
            "--metrics-addrs: give {} addresses, or \"off\"",
            configs.len()
        ));
    }
    for (config, addr) in configs.iter_mut().zip(addrs) {
        config::parse_metrics_addr(addr).map_err(|reason| format!("--metrics-addrs: {reason}"))?;
        config.metrics_addr = addr.clone();
    }
    Ok(())
}
