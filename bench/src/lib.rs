//! `paxkv bench`: a closed-loop load generator. Each client is one thread that issues one
//! operation, waits for its answer, and issues the next; latencies go into a per-client
//! HDR histogram, merged at the end into one [`Report`].
//!
//! The engine is generic over a [`Target`], which makes connections and the clients that
//! use them. `paxkv::bench::PaxkvTarget` (in the server crate) speaks Thrift to paxkv; the
//! `paxkv-bench-etcd` binary (`bench-etcd/`) implements the same trait for etcd, so both run
//! the very same loop; [`FsyncTarget`] and [`TcpRttTarget`] measure the floors (a disk
//! flush, a loopback round trip) through that loop too.
//!
//! This crate has no server code and no RocksDB, so the etcd binary can use it without
//! building either.
//!
//! ```
//! use paxkv_bench::{run, BenchConfig, Stop, TcpRttTarget, Workload};
//!
//! let mut config = BenchConfig::new(Workload::TcpRtt, Vec::new());
//! config.stop = Stop::Ops(100);
//! let report = run(&TcpRttTarget::start()?, &config)?;
//! assert_eq!(report.ops, 100);
//! println!("{}", report.to_json());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
mod args;
mod engine;
mod keys;
mod local;
mod report;

use std::time::Duration;

pub use args::{
    execute, fail, BenchArgs, ProtocolArg, TargetKind, EXIT_INVALID, EXIT_OUTPUT, EXIT_UNAVAILABLE,
};
pub use engine::{cas_key, data_key, run};
pub use keys::{Distribution, KeyChooser, Rng, Zipfian, ZIPFIAN_THETA};
pub use local::{FsyncTarget, TcpRttTarget};
pub use report::{
    latency_histogram, ErrorTally, Errors, Report, RunInfo, LATENCY_US_MAX, REPORT_FIELDS,
};

/// What each client does in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Put a random key.
    Put,
    /// Linearizable get of a random key.
    Get,
    /// Get at a read version taken at the start and refreshed periodically.
    SnapshotGet,
    /// Read two keys at one read version, then write both, failing on a read conflict.
    Txn,
    /// Increment a counter with a compare-and-set on its value.
    Cas,
    /// Put with large values (`--value-size`, 1 MiB by default).
    Large,
    /// 3-field RFC 6902 edits of one JSON document of about `--value-size` bytes (50 MB by
    /// default), written once before the run; reports the bytes the log carried per edit.
    DocEdit,
    /// YCSB A: 50 % linearizable reads, 50 % updates.
    YcsbA,
    /// YCSB B: 95 % reads, 5 % updates.
    YcsbB,
    /// YCSB C: reads only.
    YcsbC,
    /// Local floor: append 4 KiB to a file in `--dir` and fdatasync it.
    Fsync,
    /// Local floor: a small message echoed over a loopback TCP connection.
    TcpRtt,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::SnapshotGet => "snapshot-get",
            Workload::Txn => "txn",
            Workload::Cas => "cas",
            Workload::Large => "large",
            Workload::DocEdit => "doc-edit",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::Fsync => "fsync",
            Workload::TcpRtt => "tcp-rtt",
        }
    }

    /// The share of reads in a read/update mix; `None` for the single-operation workloads.
    pub fn read_fraction(self) -> Option<f64> {
        match self {
            Workload::YcsbA => Some(0.50),
            Workload::YcsbB => Some(0.95),
            Workload::YcsbC => Some(1.00),
            _ => None,
        }
    }

    /// Workloads that read the data keys want them to exist first.
    pub fn preloads_by_default(self) -> bool {
        matches!(
            self,
            Workload::Get
                | Workload::SnapshotGet
                | Workload::Txn
                | Workload::YcsbA
                | Workload::YcsbB
                | Workload::YcsbC
        )
    }

    /// Measured on this machine, not against a server.
    pub fn is_local(self) -> bool {
        matches!(self, Workload::Fsync | Workload::TcpRtt)
    }

    pub fn default_value_size(self) -> usize {
        match self {
            Workload::Large => 1 << 20,
            Workload::DocEdit => 50_000_000,
            Workload::Fsync => 4096,
            Workload::TcpRtt => 64,
            _ => 256,
        }
    }
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long of measuring (the warm-up comes on top).
    After(Duration),
    /// After this many measured operations (successful, conflicted or failed), in total over
    /// all clients.
    Ops(u64),
}

/// Everything a run needs; [`BenchArgs`] builds one from the command line.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub workload: Workload,
    /// Client `i` uses connection `i % connections`, and connection `j` goes to endpoint
    /// `j % endpoints.len()`.
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub connections: usize,
    pub stop: Stop,
    /// Operations in this first stretch are run but not counted.
    pub warmup: Duration,
    /// Data keys are `data_key(0)` .. `data_key(key_space - 1)`.
    pub key_space: u64,
    pub value_size: usize,
    pub distribution: Distribution,
    /// Write every data key before the run.
    pub preload: bool,
    /// `cas` increments `cas_key(0)` .. `cas_key(cas_keys - 1)`.
    pub cas_keys: u64,
    /// `snapshot-get` takes a new read version after this long; `None`: never.
    pub snapshot_refresh: Option<Duration>,
    pub seed: u64,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Named in the report: `binary`, `compact`, `grpc`, `local`.
    pub protocol_name: String,
}

impl BenchConfig {
    /// The defaults of the command line, for `workload` against `endpoints`.
    pub fn new(workload: Workload, endpoints: Vec<String>) -> BenchConfig {
        BenchConfig {
            workload,
            endpoints,
            clients: 1,
            connections: 1,
            stop: Stop::After(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            key_space: 10_000,
            value_size: workload.default_value_size(),
            distribution: Distribution::Uniform,
            preload: workload.preloads_by_default(),
            cas_keys: 16,
            snapshot_refresh: Some(Duration::from_secs(1)),
            seed: 1,
            progress: false,
            protocol_name: "binary".into(),
        }
    }

    /// Settings that cannot run, as a message naming the flag.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: &str| Err(BenchError::Invalid(message.to_string()));
        if self.endpoints.is_empty() && !self.workload.is_local() {
            return invalid("--endpoints: give at least one");
        }
        if self.clients == 0 || self.connections == 0 {
            return invalid("--clients and --connections must be at least 1");
        }
        if self.connections > self.clients {
            return invalid("--connections must not exceed --clients");
        }
        if self.key_space == 0 || self.cas_keys == 0 {
            return invalid("--key-space and --cas-keys must be at least 1");
        }
        if self.workload == Workload::Txn && self.key_space < 2 {
            return invalid("--workload txn needs --key-space of at least 2");
        }
        if self.workload.is_local() && self.clients != 1 {
            return invalid("the fsync and tcp-rtt floors run with --clients 1");
        }
        match self.stop {
            Stop::After(duration) if duration.is_zero() => invalid("--duration must be positive"),
            Stop::Ops(0) => invalid("--ops must be at least 1"),
            _ => Ok(()),
        }
    }
}

/// The kinds an operation's failure is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No leader, or the outcome is unknown; the server asks to retry.
    Unavailable,
    /// A configured server limit (value_bytes_max, a frame or request size, ...).
    LimitExceeded,
    InvalidArgument,
    /// A read version older than the retained history (or, on etcd, a compacted revision).
    TooOld,
    Internal,
    /// The connection failed or was closed; the next operation reconnects.
    Transport,
    /// A malformed reply, or any other protocol-level failure.
    Protocol,
    /// The target does not implement this operation.
    Unsupported,
    Io,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::TooOld => "too_old",
            ErrorKind::Internal => "internal",
            ErrorKind::Transport => "transport",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Io => "io",
        }
    }

    /// Errors after which the client pauses before its next operation, so a server that is
    /// down is not hammered in a tight loop.
    pub fn pauses(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Transport)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operation's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl OpError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> OpError {
        OpError {
            kind,
            message: message.into(),
        }
    }

    pub fn unsupported(operation: &str, target: &str) -> OpError {
        OpError::new(
            ErrorKind::Unsupported,
            format!("{target} does not run {operation}"),
        )
    }
}

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: OpError },
    #[error("preloading {keys} keys failed: {source}")]
    Preload { keys: u64, source: OpError },
}

pub type Result<T> = std::result::Result<T, BenchError>;

/// How an operation that got an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A transaction's read conflict, or a compare-and-set whose compare no longer held.
    Conflict,
}

/// The operations a workload is made of, on one client. One call at a time.
pub trait BenchClient: Send {
    fn put(&mut self, key: &[u8], value: &[u8]) -> std::result::Result<(), OpError>;

    /// Writes many pairs, atomically or not, in as few calls as the target allows (preload).
    fn put_batch(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> std::result::Result<(), OpError>;

    /// Linearizable read.
    fn get(&mut self, key: &[u8]) -> std::result::Result<(), OpError>;

    /// A version (revision) that reads with [`BenchClient::get_at`] can use.
    fn read_version(&mut self) -> std::result::Result<i64, OpError>;

    fn get_at(&mut self, key: &[u8], version: i64) -> std::result::Result<(), OpError>;

    /// Reads both keys at one read version, then writes `value` to both, on the condition
    /// that neither was written since that version.
    fn txn(&mut self, keys: [&[u8]; 2], value: &[u8]) -> std::result::Result<Outcome, OpError>;

    /// Reads the decimal counter at `key` (absent is 0) and sets it to one more, on the
    /// condition that it still holds what was read.
    fn cas_increment(&mut self, key: &[u8]) -> std::result::Result<Outcome, OpError>;

    /// Writes the JSON document `json` to `key` (the doc-edit workload's setup).
    fn put_document(&mut self, _key: &[u8], _json: &[u8]) -> std::result::Result<(), OpError> {
        Err(OpError::new(ErrorKind::Unsupported, "no JSON documents"))
    }

    /// Applies the RFC 6902 `patch` to the document at `key`; returns the bytes the
    /// target's log carried for it.
    fn patch_document(&mut self, _key: &[u8], _patch: &[u8]) -> std::result::Result<u64, OpError> {
        Err(OpError::new(ErrorKind::Unsupported, "no JSON documents"))
    }
}

/// Where load goes: connections to endpoints, and clients that use them.
pub trait Target: Sync {
    /// Shared by the clients that [`Target::client`] makes on it.
    type Connection: Send + Sync;
    type Client: BenchClient;

    /// Named in the report: `paxkv`, `etcd`, `local`.
    fn name(&self) -> &'static str;

    fn connect(&self, endpoint: &str) -> std::result::Result<Self::Connection, OpError>;

    fn client(
        &self,
        connection: &std::sync::Arc<Self::Connection>,
    ) -> std::result::Result<Self::Client, OpError>;

    /// The most pairs [`BenchClient::put_batch`] sends in one call.
    fn batch_pairs_max(&self) -> usize;
}
