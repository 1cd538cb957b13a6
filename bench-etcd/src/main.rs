//! `paxkv-bench-etcd`: the load generator of `paxkv bench` against etcd's gRPC API, with the
//! same flags. `paxkv bench --target etcd ...` runs this binary; it can also run alone:
//!
//! ```text
//! paxkv-bench-etcd --target etcd --endpoints 127.0.0.1:2379 --workload put --clients 64 --json
//! ```
//!
//! Each `--connections` entry is one gRPC channel (one HTTP/2 connection) to one endpoint;
//! clients that share a channel multiplex their calls over it, as etcd's own clients do.
//! Calls are made from the engine's client threads with `Handle::block_on` on one runtime
//! that drives every channel.
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, Error, GetOptions, GetResponse, KvClient, Txn,
    TxnOp,
};
use paxkv_bench::{
    execute, fail, BenchArgs, BenchClient, ErrorKind, OpError, Outcome, Target, EXIT_INVALID,
};
use tokio::runtime::{Handle, Runtime};

/// etcd's default --max-txn-ops: a preload batch is one Txn of at most this many puts.
const TXN_OPS_MAX: usize = 128;
/// Replies up to this size are accepted (gRPC's default of 4 MiB would cut off large gets).
const REPLY_BYTES_MAX: usize = 256 << 20;
/// A connection that cannot be made in this long fails the run.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Threads of the runtime that drives the gRPC channels.
const RUNTIME_THREADS: usize = 2;
/// Read to learn a current revision; never written.
const REVISION_PROBE_KEY: &[u8] = b"bench/revision-probe";

#[derive(Parser, Debug)]
#[command(
    name = "paxkv-bench-etcd",
    version,
    about = "paxkv bench against etcd (same flags)"
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.args.workload.is_local() {
        return fail(
            EXIT_INVALID,
            "the fsync and tcp-rtt floors run in `paxkv bench`, not against etcd",
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(EXIT_INVALID, &format!("starting the runtime: {error}")),
    };
    execute(&EtcdTarget { runtime }, &cli.args, "grpc")
}

struct EtcdTarget {
    runtime: Runtime,
}

impl Target for EtcdTarget {
    type Connection = KvClient;
    type Client = EtcdClient;

    fn name(&self) -> &'static str {
        "etcd"
    }

    fn connect(&self, endpoint: &str) -> Result<KvClient, OpError> {
        let options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
        let client = self
            .runtime
            .block_on(Client::connect([endpoint], Some(options)))
            .map_err(|e| op_error(&e))?;
        Ok(client
            .kv_client()
            .max_decoding_message_size(REPLY_BYTES_MAX)
            .max_encoding_message_size(REPLY_BYTES_MAX))
    }

    fn client(&self, connection: &Arc<KvClient>) -> Result<EtcdClient, OpError> {
        // A clone shares the channel (and its HTTP/2 connection).
        Ok(EtcdClient {
            kv: KvClient::clone(connection),
            runtime: self.runtime.handle().clone(),
        })
    }

    fn batch_pairs_max(&self) -> usize {
        TXN_OPS_MAX
    }
}

struct EtcdClient {
    kv: KvClient,
    runtime: Handle,
}

impl EtcdClient {
    /// A linearizable get (etcd's default, serializable = false), or one at `revision`.
    fn get_response(&mut self, key: &[u8], revision: Option<i64>) -> Result<GetResponse, OpError> {
        let options = revision.map(|revision| GetOptions::new().with_revision(revision));
        self.runtime
            .block_on(self.kv.get(key, options))
            .map_err(|e| op_error(&e))
    }

    fn run_txn(&mut self, txn: Txn) -> Result<bool, OpError> {
        self.runtime
            .block_on(self.kv.txn(txn))
            .map(|response| response.succeeded())
            .map_err(|e| op_error(&e))
    }
}

fn revision_of(response: &GetResponse) -> Result<i64, OpError> {
    response
        .header()
        .map(|header| header.revision())
        .ok_or_else(|| OpError::new(ErrorKind::Protocol, "a range reply without a header"))
}

/// The key's mod_revision, 0 when absent (what etcd compares an absent key's against).
fn mod_revision_of(response: &GetResponse) -> i64 {
    response.kvs().first().map_or(0, |kv| kv.mod_revision())
}

fn outcome(succeeded: bool) -> Outcome {
    if succeeded {
        Outcome::Done
    } else {
        Outcome::Conflict
    }
}

impl BenchClient for EtcdClient {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.runtime
            .block_on(self.kv.put(key, value, None))
            .map(drop)
            .map_err(|e| op_error(&e))
    }

    fn put_batch(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), OpError> {
        let puts: Vec<TxnOp> = pairs
            .iter()
            .map(|(key, value)| TxnOp::put(key.as_slice(), value.as_slice(), None))
            .collect();
        self.run_txn(Txn::new().and_then(puts)).map(drop)
    }

    fn get(&mut self, key: &[u8]) -> Result<(), OpError> {
        self.get_response(key, None).map(drop)
    }

    fn read_version(&mut self) -> Result<i64, OpError> {
        let response = self.get_response(REVISION_PROBE_KEY, None)?;
        revision_of(&response)
    }

    fn get_at(&mut self, key: &[u8], version: i64) -> Result<(), OpError> {
        self.get_response(key, Some(version)).map(drop)
    }

    /// A linearizable get of the first key (its header revision is the read version), a
    /// get of the second at that revision, and a Txn that writes both if neither key's
    /// mod_revision changed: three calls.
    fn txn(&mut self, keys: [&[u8]; 2], value: &[u8]) -> Result<Outcome, OpError> {
        let first = self.get_response(keys[0], None)?;
        let revision = revision_of(&first)?;
        let second = self.get_response(keys[1], Some(revision))?;
        let txn = Txn::new()
            .when([
                Compare::mod_revision(keys[0], CompareOp::Equal, mod_revision_of(&first)),
                Compare::mod_revision(keys[1], CompareOp::Equal, mod_revision_of(&second)),
            ])
            .and_then([
                TxnOp::put(keys[0], value, None),
                TxnOp::put(keys[1], value, None),
            ]);
        self.run_txn(txn).map(outcome)
    }

    /// A linearizable get, then a Txn comparing the value read (or, for an absent key,
    /// version 0): two calls.
    fn cas_increment(&mut self, key: &[u8]) -> Result<Outcome, OpError> {
        let response = self.get_response(key, None)?;
        let current = response.kvs().first().map(|kv| kv.value().to_vec());
        let count = parse_counter(current.as_deref());
        let compare = match current {
            Some(value) => Compare::value(key, CompareOp::Equal, value),
            None => Compare::version(key, CompareOp::Equal, 0),
        };
        let next = (count + 1).to_string();
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, next, None)]);
        self.run_txn(txn).map(outcome)
    }
}

/// Decimal text, absent or unparsable as 0 (the same rule as the paxkv target).
fn parse_counter(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

/// Sorts etcd's failures into the report's kinds; the message keeps etcd's own words.
fn op_error(error: &Error) -> OpError {
    match error {
        Error::GRpcStatus(status) => {
            let message = format!("{:?}: {}", status.code(), status.message());
            OpError::new(status_kind(status.code(), status.message()), message)
        }
        Error::TransportError(e) => OpError::new(ErrorKind::Transport, e.to_string()),
        Error::IoError(e) => OpError::new(ErrorKind::Transport, e.to_string()),
        Error::InvalidArgs(e) => OpError::new(ErrorKind::InvalidArgument, e.clone()),
        other => OpError::new(ErrorKind::Protocol, other.to_string()),
    }
}

fn status_kind(code: tonic::Code, message: &str) -> ErrorKind {
    use tonic::Code;
    // etcd says "etcdserver: request is too large" (InvalidArgument) past
    // --max-request-bytes; gRPC says ResourceExhausted past a message size limit.
    if message.contains("too large") || code == Code::ResourceExhausted {
        return ErrorKind::LimitExceeded;
    }
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted => ErrorKind::Unavailable,
        Code::OutOfRange => ErrorKind::TooOld,
        Code::InvalidArgument | Code::FailedPrecondition => ErrorKind::InvalidArgument,
        Code::Internal | Code::Unknown | Code::DataLoss => ErrorKind::Internal,
        _ => ErrorKind::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_requests_count_as_limit_exceeded() {
        let kind = status_kind(
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large",
        );
        assert_eq!(kind, ErrorKind::LimitExceeded);
        assert_eq!(
            status_kind(tonic::Code::Unavailable, "leader changed"),
            ErrorKind::Unavailable
        );
        assert_eq!(
            status_kind(
                tonic::Code::OutOfRange,
                "mvcc: required revision has been compacted"
            ),
            ErrorKind::TooOld
        );
    }

    #[test]
    fn counters_parse_as_decimal() {
        assert_eq!(parse_counter(None), 0);
        assert_eq!(parse_counter(Some(b"12")), 12);
    }
}
