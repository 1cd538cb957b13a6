//! The `paxkv bench` command line, shared by `paxkv` and `paxkv-bench-etcd` (which parses
//! the very same flags). Exit codes: 0 the run completed (its errors are in the report), 2
//! invalid settings, 4 cannot connect or the preload failed, 5 cannot write the result.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{run, BenchConfig, BenchError, Distribution, Stop, Target, Workload};

pub const EXIT_INVALID: u8 = 2;
/// Could not connect, or the preload failed.
pub const EXIT_UNAVAILABLE: u8 = 4;
pub const EXIT_OUTPUT: u8 = 5;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Paxkv,
    Etcd,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolArg {
    Binary,
    Compact,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to load: paxkv over Thrift, or etcd (runs `paxkv-bench-etcd`).
    #[arg(long, value_enum, default_value_t = TargetKind::Paxkv)]
    pub target: TargetKind,
    /// One endpoint (default 127.0.0.1:9091 for paxkv, 127.0.0.1:2379 for etcd).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "endpoints")]
    pub endpoint: Option<String>,
    /// Several endpoints; connections are spread over them round-robin.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Closed-loop clients, one thread each.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Connections the clients share round-robin (default: one per client).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Seconds to measure for (after the warm-up).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10.0,
        conflicts_with = "ops"
    )]
    pub duration: f64,
    /// Stop after this many measured operations instead of after --duration.
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,
    /// Seconds of load before measuring starts.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub warmup: f64,
    /// Data keys are bench/key/000000000000 .. (N - 1).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub key_space: u64,
    /// Value bytes (default 256; 1 MiB for large, 4 KiB for fsync, 64 for tcp-rtt).
    #[arg(long, value_name = "BYTES")]
    pub value_size: Option<usize>,
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Write every data key before measuring (default: true for the read workloads and
    /// txn, false otherwise).
    #[arg(long, value_name = "BOOL")]
    pub preload: Option<bool>,
    /// Counters of the cas workload: bench/cas/000000 .. (N - 1).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub cas_keys: u64,
    /// snapshot-get takes a new read version this often (0: once, at the start).
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    pub snapshot_refresh_ms: u64,
    /// Seeds the key choice of every client.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Thrift protocol (paxkv only).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Binary)]
    pub protocol: ProtocolArg,
    /// Directory for the fsync workload's probe file (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the result as one JSON object on stdout (the summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress lines and no summary on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    pub fn endpoints(&self) -> Vec<String> {
        if let Some(endpoint) = &self.endpoint {
            return vec![endpoint.clone()];
        }
        if !self.endpoints.is_empty() {
            return self.endpoints.clone();
        }
        let default = match self.target {
            TargetKind::Paxkv => "127.0.0.1:9091",
            TargetKind::Etcd => "127.0.0.1:2379",
        };
        vec![default.to_string()]
    }

    pub fn config(&self, protocol_name: &str) -> Result<BenchConfig, BenchError> {
        let seconds = |flag: &str, secs: f64| {
            Duration::try_from_secs_f64(secs)
                .map_err(|_| BenchError::Invalid(format!("{flag}: {secs} is not a duration")))
        };
        let endpoints = if self.workload.is_local() {
            Vec::new()
        } else {
            self.endpoints()
        };
        let mut config = BenchConfig::new(self.workload, endpoints);
        config.clients = self.clients;
        config.connections = self.connections.unwrap_or(self.clients);
        config.stop = match self.ops {
            Some(ops) => Stop::Ops(ops),
            None => Stop::After(seconds("--duration", self.duration)?),
        };
        config.warmup = seconds("--warmup", self.warmup)?;
        config.key_space = self.key_space;
        config.value_size = self
            .value_size
            .unwrap_or(self.workload.default_value_size());
        config.distribution = self.distribution;
        config.preload = self.preload.unwrap_or(self.workload.preloads_by_default());
        config.cas_keys = self.cas_keys;
        config.snapshot_refresh =
            (self.snapshot_refresh_ms > 0).then(|| Duration::from_millis(self.snapshot_refresh_ms));
        config.seed = self.seed;
        config.progress = !self.quiet;
        config.protocol_name = protocol_name.to_string();
        Ok(config)
    }
}

/// Runs `args` against `target` and prints the result: JSON on stdout with `--json`, the
/// summary on stdout without it (on stderr with it, unless `--quiet`).
pub fn execute<T: Target>(target: &T, args: &BenchArgs, protocol_name: &str) -> ExitCode {
    let report = match args
        .config(protocol_name)
        .and_then(|config| run(target, &config))
    {
        Ok(report) => report,
        Err(error @ BenchError::Invalid(_)) => return fail(EXIT_INVALID, &error.to_string()),
        Err(error) => return fail(EXIT_UNAVAILABLE, &error.to_string()),
    };
    let mut stdout = std::io::stdout().lock();
    let written = if args.json {
        if !args.quiet {
            eprint!("{}", report.summary());
        }
        writeln!(stdout, "{}", report.to_json())
    } else {
        write!(stdout, "{}", report.summary())
    };
    match written.and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(EXIT_OUTPUT, &format!("writing the result: {error}")),
    }
}

/// Prints `message` as the one line of a failed run and returns `code`.
pub fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("paxkv bench: {message}");
    ExitCode::from(code)
}
