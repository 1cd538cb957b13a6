//! Errors of the chaos runner and checkers (operating errors; checker verdicts are not
//! errors, they are results).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{path:?}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("malformed history at event {index}: {reason}")]
    MalformedHistory { index: usize, reason: String },
    #[error("the paxkv binary {0:?} does not exist (build it: cargo build --release --bin paxkv)")]
    NoBinary(PathBuf),
    #[error("start replica {id}: {source}")]
    Spawn { id: u32, source: std::io::Error },
    #[error("replica {id} exited on its own with {status}; log: {log:?}")]
    Exited {
        id: u32,
        status: String,
        log: PathBuf,
    },
    #[error("no leader within {timeout_ms} ms: {last}")]
    NoLeader { timeout_ms: u64, last: String },
    #[error("replica {id} is {state}, cannot {action}")]
    WrongState {
        id: u32,
        state: &'static str,
        action: &'static str,
    },
    #[error("signal {signal} to pid {pid}: {source}")]
    Signal {
        signal: i32,
        pid: u32,
        source: std::io::Error,
    },
    #[error("replica {id}: set fault point {name} to {actions:?}: {reason}")]
    Failpoint {
        id: u32,
        name: String,
        actions: String,
        reason: String,
    },
    #[error("unknown injected bug {name:?}; known: {known}")]
    UnknownBug { name: String, known: String },
    #[error("unknown nemesis {name:?}; implemented: {implemented}")]
    UnknownNemesis { name: String, implemented: String },
    #[error("replica {id} that lost its disk could not be made a voter again: {last}")]
    Readmit { id: u32, last: String },
    #[error("a call of the runner itself (setup or final read) kept failing: {0}")]
    Setup(String),
}

pub type Result<T> = std::result::Result<T, ChaosError>;
