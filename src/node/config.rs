//! A node's settings: a TOML file, overridden by `PAXKV_*` environment variables (nested
//! keys joined by `__`, e.g. `PAXKV_LIMITS__KEY_BYTES_MAX=4096`). Every field but `id`,
//! `data_dir`, `thrift_addr` and `members` has a default. An invalid setting fails at start
//! with a message naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::ServerLimits;
use crate::consensus::NodeId;
use crate::router::Limits;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This replica's id; must be one of `members`.
    pub id: NodeId,
    /// Holds `kv/` (RocksDB), `wal/` (the consensus log) and `snapshots/`.
    pub data_dir: PathBuf,
    /// Where this node serves the Thrift API.
    pub thrift_addr: SocketAddr,
    /// Where this node serves HTTP `/metrics`, `/health` and `/ready`, or `"off"` (the
    /// default) for no endpoint. A string, so that `PAXKV_METRICS_ADDR=off` can turn off
    /// what a file turned on; [`NodeConfig::metrics_socket_addr`] parses it.
    #[serde(default = "metrics_off")]
    pub metrics_addr: String,
    /// Names the cluster; written into the data directory's `IDENTITY` when the cluster is
    /// created and required of every peer connection. Give every cluster its own (like
    /// etcd's `initial-cluster-token`), so a replica pointed at another cluster's peers is
    /// refused. Cannot change once the cluster exists.
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// The replicas of the cluster, this one included. Creating the cluster
    /// (`--bootstrap`), this list is its first membership; after that the membership lives
    /// in the log (`paxkv admin member ...`), and the list only tells a replica where its
    /// peers are until it has learned the membership (a replica that joins lists the
    /// running members and itself).
    pub members: Vec<Member>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub snapshot: SnapshotSettings,
    #[serde(default)]
    pub auth: AuthSettings,
    /// Log filter (`tracing` syntax, e.g. "info" or "paxkv=debug"); `RUST_LOG` wins.
    #[serde(default = "default_log")]
    pub log: String,
    /// Settings that break guarantees on purpose, to prove a checker can see it. Only a
    /// build with the `chaos` feature starts with any of them on.
    #[serde(default)]
    pub debug: DebugSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: NodeId,
    /// Where the replica listens for its peers.
    pub peer_addr: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub connections_max: usize,
    /// Largest Thrift frame accepted or sent; a larger one closes its connection.
    pub frame_bytes_max: u32,
    pub requests_inflight_max: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let limits = ServerLimits::default();
        ServerSettings {
            connections_max: limits.connections_max,
            frame_bytes_max: limits.frame_bytes_max,
            requests_inflight_max: limits.requests_inflight_max,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    pub tick_ms: u64,
    pub heartbeat_interval_ticks: u32,
    /// Followers start an election after between 1 and 2 times this many silent ticks.
    pub election_timeout_ticks: u32,
    /// How long a request waits for a leader and its answer before `Unavailable`.
    pub request_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick_ms: 10,
            heartbeat_interval_ticks: 2,
            election_timeout_ticks: 20,
            request_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// Versions kept readable behind the newest; must be equal on every replica.
    pub retention_versions: u64,
    /// Uploads staged at once (a chunk that would start another is refused); must be
    /// equal on every replica.
    pub uploads_max: usize,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            retention_versions: 1_000_000,
            uploads_max: 64,
        }
    }
}

/// `[auth]`: who may use the raw KV API. The configuration service always asks for a
/// token; this is about the KV calls (docs/api.md, "Access control").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// On (the default): every KV call needs a connection authenticated with a token whose
    /// principal holds a grant on the keys it touches (root holds all). Off: any client
    /// reads and writes every user key, and the replica logs a warning at every start.
    /// The system key space is closed to the KV API either way.
    pub enabled: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings { enabled: true }
    }
}

/// `[snapshot]`: when a replica snapshots its state and compacts its log, and how
/// snapshots travel to a replica that fell behind the leader's compacted log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSettings {
    /// Take a snapshot after this many applied slots since the last (0: not by slots).
    pub interval_slots: u64,
    /// Take a snapshot after this many WAL bytes since the last (0: not by bytes).
    pub interval_wal_bytes: u64,
    /// Slots kept in the log below a new snapshot, for followers a little behind.
    pub retain_slots: u64,
    /// And at most this many bytes of commands.
    pub retain_bytes: u64,
    /// Snapshot files kept in `snapshots/`.
    pub keep: usize,
    /// What one replica sends of snapshots per second, over all its transfers.
    pub transfer_bytes_per_sec: u64,
    /// Transfers one replica sends at once.
    pub transfer_streams_max: usize,
    /// Bytes per transfer frame; below `peer_frame_bytes_max`.
    pub transfer_chunk_bytes: usize,
    /// A transfer that carries nothing for this long is broken off and resumed.
    pub transfer_idle_timeout_ms: u64,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        let options = crate::replica::SnapshotOptions::default();
        SnapshotSettings {
            interval_slots: options.interval_slots,
            interval_wal_bytes: options.interval_wal_bytes,
            retain_slots: options.retain_slots,
            retain_bytes: options.retain_bytes,
            keep: options.keep,
            transfer_bytes_per_sec: options.stream.transfer_bytes_per_sec,
            transfer_streams_max: options.stream.transfer_streams_max,
            transfer_chunk_bytes: options.stream.transfer_chunk_bytes,
            transfer_idle_timeout_ms: options.stream.idle_timeout_ms,
        }
    }
}

impl SnapshotSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("snapshot.keep", self.keep as u64),
            (
                "snapshot.transfer_bytes_per_sec",
                self.transfer_bytes_per_sec,
            ),
            (
                "snapshot.transfer_streams_max",
                self.transfer_streams_max as u64,
            ),
            (
                "snapshot.transfer_chunk_bytes",
                self.transfer_chunk_bytes as u64,
            ),
            (
                "snapshot.transfer_idle_timeout_ms",
                self.transfer_idle_timeout_ms,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(invalid(name, "must be positive"));
        }
        // A data frame must fit a peer frame (512 MiB) with room for its header.
        if self.transfer_chunk_bytes > 64 << 20 {
            return Err(invalid(
                "snapshot.transfer_chunk_bytes",
                "must be at most 64 MiB",
            ));
        }
        // Paced to the rate, a frame of every stream at once must arrive well within the
        // idle timeout, or every transfer is broken off between two frames.
        let frames_ms = (self.transfer_chunk_bytes as u64)
            .saturating_mul(self.transfer_streams_max as u64)
            .saturating_mul(1000)
            / self.transfer_bytes_per_sec;
        if frames_ms.saturating_mul(2) > self.transfer_idle_timeout_ms {
            return Err(invalid(
                "snapshot.transfer_idle_timeout_ms",
                format!(
                    "must be at least twice the {frames_ms} ms that transfer_streams_max frames \
                     of transfer_chunk_bytes take at transfer_bytes_per_sec"
                ),
            ));
        }
        Ok(())
    }
}

/// `[debug]`: each one, when on, gives up a guarantee. See docs/operations.md.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugSettings {
    /// Linearizable reads (`get`, `getRange`, `getReadVersion` without a version) are
    /// served from this replica's applied state without a read index: a lagging replica
    /// answers with stale data.
    pub unsafe_local_reads: bool,
    /// The driver acknowledges WAL records written to the page cache without fdatasync:
    /// they survive `kill -9`, not a power loss.
    pub unsafe_skip_fsync: bool,
}

impl DebugSettings {
    /// The names of the settings that are on, as a config file spells them.
    pub fn unsafe_settings(&self) -> Vec<&'static str> {
        let settings = [
            ("debug.unsafe_local_reads", self.unsafe_local_reads),
            ("debug.unsafe_skip_fsync", self.unsafe_skip_fsync),
        ];
        (settings.into_iter())
            .filter(|(_, on)| *on)
            .map(|(name, _)| name)
            .collect()
    }

    /// Refuses any unsafe setting unless this is a `chaos` build (`chaos_build`, passed in
    /// so that both answers can be tested from one build).
    pub fn validate(&self, chaos_build: bool) -> Result<(), ConfigError> {
        match self.unsafe_settings().first() {
            Some(setting) if !chaos_build => Err(invalid(
                setting,
                "gives up a consistency or durability guarantee on purpose; only a build \
                 with the `chaos` feature accepts it",
            )),
            _ => Ok(()),
        }
    }
}

fn default_cluster_name() -> String {
    crate::wire::DEFAULT_CLUSTER.to_string()
}

/// Longest `cluster_name`.
const CLUSTER_NAME_BYTES_MAX: usize = 64;

fn check_cluster_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > CLUSTER_NAME_BYTES_MAX || !name.chars().all(allowed) {
        return Err(format!(
            "{name:?}: use 1 to {CLUSTER_NAME_BYTES_MAX} letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

fn default_log() -> String {
    "info".to_string()
}

/// The `metrics_addr` that serves no endpoint.
pub const METRICS_OFF: &str = "off";

fn metrics_off() -> String {
    METRICS_OFF.to_string()
}

/// `metrics_addr` parsed: `None` for "off".
pub fn parse_metrics_addr(value: &str) -> Result<Option<SocketAddr>, String> {
    if value == METRICS_OFF {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{value:?} is neither an address like 127.0.0.1:9191 nor \"off\""))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_string(),
        reason: reason.into(),
    }
}

/// Variables of the client (the CLI's token), which are no settings of a node.
pub const CLIENT_VARIABLES: &[&str] = &["PAXKV_TOKEN", "PAXKV_TOKEN_FILE"];

/// The process environment without the client's variables.
fn server_environment() -> config::Map<String, String> {
    std::env::vars()
        .filter(|(name, _)| !CLIENT_VARIABLES.contains(&name.as_str()))
        .collect()
}

impl NodeConfig {
    /// Loads `path` with `PAXKV_*` overrides, then validates.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let node = NodeConfig::read(path)?;
        node.validate()?;
        Ok(node)
    }

    /// `path` with `PAXKV_*` overrides, not validated.
    fn read(path: &Path) -> Result<NodeConfig, ConfigError> {
        let settings = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("PAXKV")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(server_environment())),
            )
            .build()?;
        Ok(settings.try_deserialize()?)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_cluster_name(&self.cluster_name).map_err(|reason| invalid("cluster_name", reason))?;
        let ids: BTreeSet<NodeId> = self.members.iter().map(|m| m.id).collect();
        if ids.len() != self.members.len() {
            return Err(invalid("members", "two members share an id"));
        }
        let addrs: BTreeSet<SocketAddr> = self.members.iter().map(|m| m.peer_addr).collect();
        if addrs.len() != self.members.len() {
            return Err(invalid("members", "two members share a peer_addr"));
        }
        if !ids.contains(&self.id) {
            return Err(invalid(
                "id",
                format!("{} is not among members {ids:?}", self.id),
            ));
        }
        self.limits
            .validate()
            .map_err(|reason| invalid("limits", reason))?;
        self.server_limits()
            .check()
            .map_err(|error| invalid("server", error.to_string()))?;
        // A readSnapshot reply is sent whole, in one frame.
        self.limits
            .check_snapshot_chunk_fits(self.server.frame_bytes_max)
            .map_err(|reason| invalid("limits.snapshot_chunk_bytes_max", reason))?;
        // Every value the API accepts can be sent to it and read back.
        self.limits
            .check_values_fit(self.server.frame_bytes_max)
            .map_err(|reason| invalid("server.frame_bytes_max", reason))?;
        let timing = &self.timing;
        if timing.tick_ms == 0 || timing.heartbeat_interval_ticks == 0 {
            return Err(invalid(
                "timing",
                "tick_ms and heartbeat_interval_ticks must be positive",
            ));
        }
        if timing.election_timeout_ticks <= 2 * timing.heartbeat_interval_ticks {
            return Err(invalid(
                "timing.election_timeout_ticks",
                "must exceed twice heartbeat_interval_ticks",
            ));
        }
        if timing.request_timeout_ms == 0 {
            return Err(invalid("timing.request_timeout_ms", "must be positive"));
        }
        if self.storage.uploads_max == 0 {
            return Err(invalid("storage.uploads_max", "must be positive"));
        }
        if self.storage.retention_versions == 0 {
            return Err(invalid("storage.retention_versions", "must be positive"));
        }
        self.snapshot.validate()?;
        parse_metrics_addr(&self.metrics_addr).map_err(|reason| invalid("metrics_addr", reason))?;
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|error| invalid("log", error.to_string()))?;
        self.debug.validate(cfg!(feature = "chaos"))
    }

    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            connections_max: self.server.connections_max,
            frame_bytes_max: self.server.frame_bytes_max,
            requests_inflight_max: self.server.requests_inflight_max,
        }
    }

    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.members.iter().map(|m| (m.id, m.peer_addr)).collect()
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peers()[&self.id]
    }

    /// Where to serve metrics, if anywhere. Panics on an address `validate` refuses.
    pub fn metrics_socket_addr(&self) -> Option<SocketAddr> {
        parse_metrics_addr(&self.metrics_addr)
            .unwrap_or_else(|reason| panic!("metrics_addr was not validated: {reason}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"
id = 2
data_dir = "data/node2"
thrift_addr = "127.0.0.1:9092"
members = [
  { id = 1, peer_addr = "127.0.0.1:6001" },
  { id = 2, peer_addr = "127.0.0.1:6002" },
  { id = 3, peer_addr = "127.0.0.1:6003" },
]
[limits]
key_bytes_max = 2048
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn loads_with_defaults() {
        let (_dir, path) = write(NODE);
        let node = NodeConfig::load(&path).unwrap();
        assert_eq!(node.id, 2);
        assert_eq!(node.limits.key_bytes_max, 2048);
        assert_eq!(
            node.limits.value_bytes_max,
            Limits::default().value_bytes_max
        );
        assert_eq!(node.peer_addr(), "127.0.0.1:6002".parse().unwrap());
        assert_eq!(node.timing, Timing::default());
    }

    #[test]
    fn environment_overrides_the_file() {
        let (_dir, path) = write(NODE);
        // Each test runs in its own process under nextest; the variables die with it.
        std::env::set_var("PAXKV_LIMITS__VALUE_BYTES_MAX", "4096");
        std::env::set_var("PAXKV_THRIFT_ADDR", "127.0.0.1:19999");
        let node = NodeConfig::load(&path);
        std::env::remove_var("PAXKV_LIMITS__VALUE_BYTES_MAX");
        std::env::remove_var("PAXKV_THRIFT_ADDR");
        let node = node.unwrap();
        assert_eq!(node.limits.value_bytes_max, 4096);
        assert_eq!(node.thrift_addr, "127.0.0.1:19999".parse().unwrap());
        assert_eq!(
            node.limits.key_bytes_max, 2048,
            "the file's other settings stay"
        );
    }

    #[test]
    fn invalid_settings_are_named() {
        let (_dir, path) = write(&NODE.replace("id = 2\n", "id = 7\n"));
        let error = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("invalid setting id"), "{error}");

        let (_dir, path) = write(&NODE.replace("key_bytes_max = 2048", "key_bytes_max = 0"));
        let error = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("key_bytes_max"), "{error}");

        let small_frames = format!("{NODE}[server]\nframe_bytes_max = 1048576\n");
        let (_dir, path) = write(&small_frames);
        let error = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("invalid setting limits.snapshot_chunk_bytes_max"),
            "{error}"
        );
        let chunk =
            "key_bytes_max = 2048\nsnapshot_chunk_bytes_max = 65536\nvalue_bytes_max = 524288";
        let (_dir, path) = write(&format!(
            "{}[server]\nframe_bytes_max = 1048576\n",
            NODE.replace("key_bytes_max = 2048", chunk)
        ));
        let node = NodeConfig::load(&path).unwrap();
        assert_eq!(node.limits.snapshot_chunk_bytes_max, 65536);

        // A value the frames could not carry, or beyond what any bound is derived for.
        let (_dir, path) = write(&format!(
            "{}[server]\nframe_bytes_max = 1048576\n",
            NODE.replace(
                "key_bytes_max = 2048",
                "key_bytes_max = 2048\nsnapshot_chunk_bytes_max = 65536"
            )
        ));
        let error = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("invalid setting server.frame_bytes_max"),
            "{error}"
        );
        let huge =
            "key_bytes_max = 2048\nvalue_bytes_max = 1073741824\ncommand_bytes_max = 1100000000";
        let (_dir, path) = write(&NODE.replace("key_bytes_max = 2048", huge));
        let error = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("value_bytes_max"), "{error}");
        let large =
            "key_bytes_max = 2048\nvalue_bytes_max = 268435456\ncommand_bytes_max = 270000000";
        let (_dir, path) = write(&format!(
            "{}[server]\nframe_bytes_max = 280000000\n",
            NODE.replace("key_bytes_max = 2048", large)
        ));
        let node = NodeConfig::load(&path).unwrap();
        assert_eq!(node.limits.value_bytes_max, 256 << 20);

        // 2 streams of 1 MiB frames at 100 kB/s: over 20 s between frames, against 5 s.
        let slow = format!("{NODE}[snapshot]\ntransfer_bytes_per_sec = 100000\n");
        let (_dir, path) = write(&slow);
        let error = NodeConfig::load(&path).unwrap_err().to_string();
        let named = "invalid setting snapshot.transfer_idle_timeout_ms";
        assert!(error.contains(named), "{error}");
        let (_dir, path) = write(&format!("{slow}transfer_idle_timeout_ms = 60000\n"));
        assert!(NodeConfig::load(&path).is_ok());

        let (_dir, path) = write(&NODE.replace("key_bytes_max = 2048", "key_bytes = 1"));
        let error = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("key_bytes"), "{error}");

        let bad_metrics = NODE.replace("id = 2\n", "id = 2\nmetrics_addr = \"localhost\"\n");
        let (_dir, path) = write(&bad_metrics);
        let error = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("invalid setting metrics_addr"), "{error}");

        let (_dir, path) = write(&NODE.replace("id = 2\n", "id = 2\nlog = \"paxkv=loud\"\n"));
        let error = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("invalid setting log"), "{error}");
    }

    #[test]
    fn unsafe_debug_settings_start_only_in_chaos_builds() {
        let (_dir, path) = write(NODE);
        let node = NodeConfig::load(&path).unwrap();
        assert_eq!(node.debug, DebugSettings::default());
        assert!(node.debug.unsafe_settings().is_empty());

        let text = format!("{NODE}[debug]\nunsafe_skip_fsync = true\n");
        let (_dir, path) = write(&text);
        // Each test runs in its own process under nextest; the variable dies with it.
        std::env::set_var("PAXKV_DEBUG__UNSAFE_LOCAL_READS", "true");
        let node = NodeConfig::read(&path);
        std::env::remove_var("PAXKV_DEBUG__UNSAFE_LOCAL_READS");
        let node = node.unwrap();
        assert!(node.debug.unsafe_local_reads && node.debug.unsafe_skip_fsync);

        let error = node.debug.validate(false).unwrap_err().to_string();
        assert!(
            error.contains("invalid setting debug.unsafe_local_reads"),
            "{error}"
        );
        assert!(error.contains("`chaos` feature"), "{error}");
        let only_fsync = DebugSettings {
            unsafe_skip_fsync: true,
            ..DebugSettings::default()
        };
        let error = only_fsync.validate(false).unwrap_err().to_string();
        assert!(
            error.contains("invalid setting debug.unsafe_skip_fsync"),
            "{error}"
        );
        assert!(node.debug.validate(true).is_ok());
        assert!(DebugSettings::default().validate(false).is_ok());
        // What this build does at load.
        assert_eq!(node.validate().is_ok(), cfg!(feature = "chaos"));
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        let (_dir, path) = write(NODE);
        let node = NodeConfig::load(&path).unwrap();
        assert_eq!(node.metrics_addr, METRICS_OFF);
        assert_eq!(node.metrics_socket_addr(), None);
        let on = NODE.replace("id = 2\n", "id = 2\nmetrics_addr = \"127.0.0.1:9192\"\n");
        let (_dir, path) = write(&on);
        let node = NodeConfig::load(&path).unwrap();
        assert_eq!(
            node.metrics_socket_addr(),
            Some("127.0.0.1:9192".parse().unwrap())
        );
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// The configs in config/ load, and form one cluster.
    #[test]
    fn shipped_node_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let nodes: Vec<NodeConfig> = (1..=3)
            .map(|i| NodeConfig::load(&root.join(format!("node{i}.toml"))).unwrap())
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            assert_eq!(node.id as usize, i + 1);
            let metrics = format!("127.0.0.1:{}", 9191 + i);
            assert_eq!(node.metrics_socket_addr(), Some(metrics.parse().unwrap()));
            assert_eq!(node.members, nodes[0].members);
            assert_eq!(node.limits, Limits::default());
            assert_eq!(node.timing, Timing::default());
        }
    }
}
