//! The client verbs of the `paxkv` binary (`put`, `get`, `del`, `range`, `txn`, `watch`,
//! `status`, `admin snapshot`, `admin member ...`, `backup`): each is one or a few blocking
//! Thrift calls through [`paxkv::api::connect`]; and `restore`, which seeds a data
//! directory from a backup.
//!
//! Exit codes are part of the interface (docs/cli.md): 0 success, 1 a negative answer (key
//! absent, txn compares false), 2 usage or invalid argument, 3 a typed server error, 4
//! unavailable or cannot connect, 5 cannot write the output, 6 a snapshot file failed
//! verification, 7 a local file operation of `backup` or `restore` failed, 8 a membership
//! request was refused. Every failure prints one line to stderr.
mod backup;
mod config;
mod doc;
mod file;
mod import;
mod member;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use paxkv::api::gen::paxkv::{
    Compacted, Compare, CompareOp, CompareTarget, Conflict, DeleteRangeRequest, DeleteRequest,
    DocumentError, Event, EventType, GetRangeRequest, GetRequest, InternalError, InvalidArgument,
    KeyRange, KeyValue, LimitExceeded, MembershipRefused, Mutation, MutationType, PatchFormat,
    PutRequest, ReplicaStatus, Session, SnapshotGone, Status, TooOld, TxnRequest, Unavailable,
    WatchRequest,
};
use paxkv::api::{connect, connect_as, Client, Protocol, TPaxkvSyncClient};

const EXIT_SUCCESS: u8 = 0;
/// The answer is "no": `get` found no key, `txn` compares did not all hold.
const EXIT_NEGATIVE: u8 = 1;
/// Bad command line (clap uses 2 as well), or the server's `InvalidArgument`.
const EXIT_INVALID: u8 = 2;
const EXIT_SERVER_ERROR: u8 = 3;
/// No connection, a lost connection, `Unavailable`, or `status` reporting unhealthy.
const EXIT_UNAVAILABLE: u8 = 4;
const EXIT_OUTPUT: u8 = 5;
/// A snapshot file failed verification: `backup`'s download, or `restore`'s input.
const EXIT_VERIFY: u8 = 6;
/// A local file operation of `backup` or `restore` failed (create, write, fsync, rename).
const EXIT_LOCAL: u8 = 7;
/// A request was refused: `MembershipRefused` (other than for want of a leader), or
/// `DocumentError` (a version mismatch, a failed test, a patch that does not apply).
const EXIT_REFUSED: u8 = 8;
/// The configuration service refused the caller: `Unauthenticated` (no or a bad token)
/// or `PermissionDenied`.
const EXIT_DENIED: u8 = 9;

/// A watch reconnects after a lost connection, or retries after `Unavailable`, waiting
/// between attempts from this ...
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ... doubling up to this.
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The token file: `PAXKV_TOKEN_FILE`, else `~/.config/paxkv/token`.
pub fn token_file() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("PAXKV_TOKEN_FILE") {
        return Some(std::path::PathBuf::from(path));
    }
    let home = std::env::var_os("HOME")?;
    Some(std::path::PathBuf::from(home).join(".config/paxkv/token"))
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Set KEY to VALUE; prints `OK version=N`.
    Put(PutArgs),
    /// Print the value of KEY; exit 1 if it is absent.
    Get(GetArgs),
    /// Delete KEY, or with --range every key in [START, END); prints `OK version=N`.
    Del(DelArgs),
    /// Print the pairs in [START, END) as `key<TAB>value` lines.
    Range(RangeArgs),
    /// Conditional write: if every --if holds apply the --then writes, else the --else ones.
    Txn(TxnArgs),
    /// Print every change to a key range as it happens.
    Watch(WatchArgs),
    /// Print the cluster's replicas, leader and health; exit 4 if unhealthy.
    Status(StatusArgs),
    /// JSON documents: write, patch (RFC 6902 or RFC 7396) and read them (by JSON Pointer).
    #[command(subcommand)]
    Doc(doc::DocCommand),
    /// Administrative calls to one replica.
    #[command(subcommand)]
    Admin(backup::AdminCommand),
    /// Snapshot the replica at --endpoint now and download the snapshot, verified, to --out.
    Backup(backup::BackupArgs),
    /// Seed a new replica's data directory from a backup file.
    Restore(backup::RestoreArgs),
    /// Configuration namespaces: create, update, describe, list, delete.
    #[command(subcommand)]
    Ns(config::NsCommand),
    /// Published configuration entries: get, list, history, diff; put opens a change.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Change sets: create, edit, submit, approve, reject, abandon, rebase, publish,
    /// revert, show, list.
    #[command(subcommand)]
    Change(config::ChangeCommand),
    /// The configuration service's audit trail.
    Audit(config::AuditArgs),
    /// Principals (users and service accounts).
    #[command(subcommand)]
    User(config::UserCommand),
    /// API tokens of principals.
    #[command(subcommand)]
    Token(config::TokenCommand),
    /// Roles on namespaces, and grants on the raw KV API.
    #[command(subcommand)]
    Grant(config::GrantCommand),
    /// Print the principal this token authenticates.
    Whoami(config::ConfigArgs),
    /// Import a directory tree of JSON files (a git checkout) into a namespace.
    Import(import::ImportArgs),
    /// Write a namespace's subtree out as a directory tree of files.
    Export(import::ExportArgs),
}

/// Runs one client verb and returns the process exit code (see the module doc).
pub fn run(command: ClientCommand) -> ExitCode {
    let result = match command {
        ClientCommand::Put(args) => put(args),
        ClientCommand::Get(args) => get(args),
        ClientCommand::Del(args) => del(args),
        ClientCommand::Range(args) => range(args),
        ClientCommand::Txn(args) => txn(args),
        ClientCommand::Watch(args) => watch(args),
        ClientCommand::Status(args) => status(args),
        ClientCommand::Doc(command) => doc::doc(command),
        ClientCommand::Admin(command) => backup::admin(command),
        ClientCommand::Backup(args) => backup::backup(args),
        ClientCommand::Restore(args) => backup::restore(args),
        ClientCommand::Ns(command) => config::ns(command),
        ClientCommand::Config(command) => config::config(command),
        ClientCommand::Change(command) => config::change(command),
        ClientCommand::Audit(args) => config::audit(args),
        ClientCommand::User(command) => config::user(command),
        ClientCommand::Token(command) => config::token(command),
        ClientCommand::Grant(command) => config::grant(command),
        ClientCommand::Whoami(args) => config::whoami(args),
        ClientCommand::Import(args) => import::import(args),
        ClientCommand::Export(args) => import::export(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            if let Some(line) = failure.report_line() {
                eprintln!("paxkv: {line}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Arguments.

#[derive(Args, Debug)]
pub struct ConnectionArgs {
    /// The Thrift address of any replica.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9091")]
    endpoint: String,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Binary)]
    protocol: ProtocolArg,
    /// The token to authenticate with (default: $PAXKV_TOKEN, then the token file:
    /// $PAXKV_TOKEN_FILE, else ~/.config/paxkv/token, which `paxkv dev` writes).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

/// Where a token came from: one given (`--token`, `PAXKV_TOKEN`) must be valid; one found
/// in the token file is only tried, since it may be another cluster's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Given,
    File,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ProtocolArg {
    Binary,
    Compact,
}

/// An exactly-once session: a retried write with the same pair is applied at most once.
#[derive(Args, Debug)]
pub struct SessionArgs {
    /// Session client id (needs --request-id).
    #[arg(long, value_name = "ID", requires = "request_id")]
    client_id: Option<String>,
    /// Session request id, growing per client id (needs --client-id).
    #[arg(long, value_name = "N", requires = "client_id")]
    request_id: Option<i64>,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    key: String,
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    value: Option<String>,
    /// The value is this file's bytes, sent in chunks when it is larger than one (with a
    /// progress bar on a terminal for anything over 4 MiB).
    #[arg(long, value_name = "PATH")]
    file: Option<std::path::PathBuf>,
    /// Bytes per chunk of --file (at most the server's limits.chunk_bytes_max).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHUNK_BYTES)]
    chunk_bytes: usize,
    #[command(flatten)]
    session: SessionArgs,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    key: String,
    /// Snapshot read at this version instead of a linearizable read.
    #[arg(long, value_name = "V")]
    version: Option<i64>,
    /// Also print `mod_version=N create_version=N read_version=N` on a second line.
    #[arg(short, long)]
    verbose: bool,
    /// Print the value as lowercase hex.
    #[arg(long)]
    hex: bool,
    /// Write the value to this file instead, read range by range at one version (with a
    /// progress bar on a terminal for anything over 4 MiB); prints `OK bytes=N
    /// read_version=N`.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["hex", "verbose"])]
    out: Option<std::path::PathBuf>,
    /// Bytes per range read of --out (the server caps it at limits.chunk_bytes_max).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHUNK_BYTES)]
    chunk_bytes: usize,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// The server's default limits.chunk_bytes_max.
const DEFAULT_CHUNK_BYTES: usize = 4 << 20;

#[derive(Args, Debug)]
pub struct DelArgs {
    #[arg(required_unless_present = "range", conflicts_with = "range")]
    key: Option<String>,
    /// Delete [START, END) instead of one key; an empty END means to the end of the key space.
    #[arg(long, num_args = 2, value_names = ["START", "END"])]
    range: Option<Vec<String>>,
    #[command(flatten)]
    session: SessionArgs,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// A key range given as START [END] or as --prefix START.
#[derive(Args, Debug)]
pub struct RangeSpec {
    start: String,
    /// Exclusive end; absent or empty means to the end of the key space.
    #[arg(conflicts_with = "prefix")]
    end: Option<String>,
    /// Every key that starts with START.
    #[arg(long)]
    prefix: bool,
}

#[derive(Args, Debug)]
pub struct RangeArgs {
    #[command(flatten)]
    range: RangeSpec,
    /// Stop after this many pairs (default: all).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Descending key order.
    #[arg(long)]
    reverse: bool,
    /// Read at this version (default: a linearizable read; every page uses one snapshot).
    #[arg(long, value_name = "V")]
    version: Option<i64>,
    /// Print keys only.
    #[arg(long)]
    keys_only: bool,
    /// Print keys and values as lowercase hex.
    #[arg(long)]
    hex: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// A compare: `value(K) OP V`, `mod_version(K) OP N` (alias `version`),
    /// `create_version(K) OP N`, `exists(K)`, `!exists(K)`; OP is =, !=, <, >.
    #[arg(long = "if", value_name = "COMPARE")]
    compares: Vec<String>,
    /// A write applied if every compare holds: `put K V`, `del K`, `del START END`.
    #[arg(long = "then", value_name = "WRITE")]
    success: Vec<String>,
    /// A write applied otherwise (same forms as --then).
    #[arg(long = "else", value_name = "WRITE")]
    failure: Vec<String>,
    #[command(flatten)]
    session: SessionArgs,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    range: RangeSpec,
    /// First version to report (default: the next commit after now).
    #[arg(long, value_name = "V")]
    from: Option<i64>,
    /// How long each long poll waits on the server.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    timeout_ms: i32,
    /// Exit after this many events (default: run until interrupted).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Give up after this long of failed reconnects or `Unavailable` in a row.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    retry_ms: u64,
    /// Print keys and values as lowercase hex.
    #[arg(long)]
    hex: bool,
    /// For document writes the log carried as patches, print `PATCH key format patch
    /// version` (format `json-patch` or `merge-patch`) instead of the whole new value.
    #[arg(long)]
    patches: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
}

impl ConnectionArgs {
    fn protocol(&self) -> Protocol {
        match self.protocol {
            ProtocolArg::Binary => Protocol::Binary,
            ProtocolArg::Compact => Protocol::Compact,
        }
    }

    fn token(&self) -> Option<(String, TokenSource)> {
        let from_env = std::env::var("PAXKV_TOKEN").ok().filter(|t| !t.is_empty());
        if let Some(token) = self.token.clone().or(from_env) {
            return Some((token, TokenSource::Given));
        }
        let text = std::fs::read_to_string(token_file()?).ok()?;
        let token = text.trim().to_string();
        (!token.is_empty()).then_some((token, TokenSource::File))
    }

    /// A KV client, its connection authenticated when there is a token. A token from the
    /// token file that the server refuses is dropped (with a warning): a server without
    /// `auth.enabled` serves the call anyway, and one with it says Unauthenticated.
    fn connect(&self) -> Result<Client, Failure> {
        let endpoint = self.endpoint.as_str();
        let unreachable = |error: thrift::Error| {
            let reason = match &error {
                thrift::Error::Transport(error) => with_message(error, &error.message),
                other => other.to_string(),
            };
            Failure::Unavailable(format!("cannot connect to {endpoint}: {reason}"))
        };
        let token = self.token();
        let as_token = token.as_ref().map(|(token, _)| token.as_str());
        match connect_as(endpoint, self.protocol(), as_token) {
            Ok(client) => Ok(client),
            Err(thrift::Error::User(refused)) => match token {
                Some((_, TokenSource::File)) => {
                    let file = token_file().unwrap_or_default();
                    eprintln!(
                        "warning: the token in {} was refused ({}); calling without one",
                        file.display(),
                        typed_failure(&*refused)
                    );
                    connect(endpoint, self.protocol()).map_err(unreachable)
                }
                _ => Err(typed_failure(&*refused)),
            },
            Err(other) => Err(unreachable(other)),
        }
    }
}

impl SessionArgs {
    fn session(&self) -> Option<Session> {
        // clap's `requires` makes the two present together.
        let client_id = self.client_id.clone()?;
        Some(Session::new(client_id, self.request_id?))
    }
}

impl RangeSpec {
    fn key_range(&self) -> KeyRange {
        let start = self.start.as_bytes().to_vec();
        let end = match (&self.end, self.prefix) {
            (_, true) => prefix_end(&start),
            (Some(end), false) => end.as_bytes().to_vec(),
            (None, false) => Vec::new(),
        };
        KeyRange::new(start, end)
    }
}

/// The smallest key after every key that starts with `prefix`, or empty (the end of the key
/// space) when there is none (`prefix` is empty or all 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    end
}

// ---------------------------------------------------------------------------------------
// Failures and their exit codes.

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Server(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("{0}")]
    Local(String),
    #[error("{0}")]
    Refused(String),
    /// Unauthenticated or PermissionDenied.
    #[error("{0}")]
    Denied(String),
    /// The configuration service has no such thing.
    #[error("{0}")]
    NotFound(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Invalid(_) => EXIT_INVALID,
            Failure::Server(_) => EXIT_SERVER_ERROR,
            Failure::Unavailable(_) => EXIT_UNAVAILABLE,
            // The reader went away (`paxkv watch ... | head`): that is how such a pipe ends.
            Failure::Output(error) if error.kind() == io::ErrorKind::BrokenPipe => EXIT_SUCCESS,
            Failure::Output(_) => EXIT_OUTPUT,
            Failure::Verify(_) => EXIT_VERIFY,
            Failure::Local(_) => EXIT_LOCAL,
            Failure::Refused(_) => EXIT_REFUSED,
            Failure::Denied(_) => EXIT_DENIED,
            Failure::NotFound(_) => EXIT_NEGATIVE,
        }
    }

    /// The same failure, its line followed by `context`.
    fn with_context(self, context: String) -> Failure {
        match self {
            Failure::Invalid(line) => Failure::Invalid(format!("{line}; {context}")),
            Failure::Server(line) => Failure::Server(format!("{line}; {context}")),
            Failure::Unavailable(line) => Failure::Unavailable(format!("{line}; {context}")),
            Failure::Verify(line) => Failure::Verify(format!("{line}; {context}")),
            Failure::Local(line) => Failure::Local(format!("{line}; {context}")),
            Failure::Refused(line) => Failure::Refused(format!("{line}; {context}")),
            Failure::Denied(line) => Failure::Denied(format!("{line}; {context}")),
            Failure::NotFound(line) => Failure::NotFound(format!("{line}; {context}")),
            output @ Failure::Output(_) => output,
        }
    }

    fn report_line(&self) -> Option<String> {
        match self {
            Failure::Output(error) if error.kind() == io::ErrorKind::BrokenPipe => None,
            other => Some(other.to_string()),
        }
    }
}

impl From<thrift::Error> for Failure {
    fn from(error: thrift::Error) -> Self {
        match error {
            thrift::Error::User(user) => typed_failure(&*user),
            thrift::Error::Transport(error) => Failure::Unavailable(format!(
                "connection lost: {}",
                with_message(&error, &error.message)
            )),
            thrift::Error::Protocol(error) => Failure::Server(format!(
                "protocol error: {}",
                with_message(&error, &error.message)
            )),
            thrift::Error::Application(error) => Failure::Server(format!(
                "application error: {}",
                with_message(&error, &error.message)
            )),
        }
    }
}

/// The thrift crate's errors display only their kind ("not open"); the message says why
/// ("Connection refused (os error 111)").
fn with_message(kind: &dyn std::fmt::Display, message: &str) -> String {
    if message.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {message}")
    }
}

/// One line naming the IDL exception and its fields.
fn typed_failure(user: &(dyn std::error::Error + Send + Sync + 'static)) -> Failure {
    if let Some(failure) = config::typed_failure(user) {
        return failure;
    }
    if let Some(e) = user.downcast_ref::<InvalidArgument>() {
        return Failure::Invalid(format!("InvalidArgument: {}", e.message));
    }
    if let Some(e) = user.downcast_ref::<Unavailable>() {
        return Failure::Unavailable(format!(
            "Unavailable: {} (retry after {} ms)",
            e.message, e.retry_after_ms
        ));
    }
    if let Some(e) = user.downcast_ref::<DocumentError>() {
        let mut line = format!("DocumentError {}: {}", e.reason, e.message);
        if let Some(version) = e.current_version {
            let _ = write!(line, " (current_version={version})");
        }
        return Failure::Refused(line);
    }
    if let Some(e) = user.downcast_ref::<MembershipRefused>() {
        let line = format!("MembershipRefused {}: {}", e.reason, e.message);
        return match e.reason.as_str() {
            "NO_LEADER" | "OUTCOME_UNKNOWN" => Failure::Unavailable(line),
            _ => Failure::Refused(line),
        };
    }
    Failure::Server(server_error_line(user))
}

fn server_error_line(user: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    if let Some(e) = user.downcast_ref::<LimitExceeded>() {
        let (limit, actual, maximum) = (&e.limit, e.actual, e.maximum);
        return format!(
            "LimitExceeded: {limit} ({actual} > {maximum}): {}",
            e.message
        );
    }
    if let Some(e) = user.downcast_ref::<Conflict>() {
        let key = e.conflicting_key.as_deref().map(escape).unwrap_or_default();
        return format!("Conflict: {} (key {key})", e.message);
    }
    if let Some(e) = user.downcast_ref::<TooOld>() {
        let (read, oldest) = (e.read_version, e.oldest_version);
        return format!(
            "TooOld: read_version {read} < oldest {oldest}: {}",
            e.message
        );
    }
    if let Some(e) = user.downcast_ref::<Compacted>() {
        let (from, oldest) = (e.from_version, e.oldest_version);
        return format!(
            "Compacted: from_version {from} < oldest {oldest}: {}",
            e.message
        );
    }
    if let Some(e) = user.downcast_ref::<InternalError>() {
        return format!("InternalError: {}", e.message);
    }
    if let Some(e) = user.downcast_ref::<SnapshotGone>() {
        return format!("SnapshotGone: snapshot {}: {}", e.slot, e.message);
    }
    format!("unexpected server error: {user}")
}

// ---------------------------------------------------------------------------------------
// Verbs.

/// The exit code of a verb that ran (a negative answer is not a failure), or a failure.
type Outcome<T = u8> = Result<T, Failure>;

fn check_chunk_bytes(chunk_bytes: usize) -> Result<(), Failure> {
    if chunk_bytes == 0 || chunk_bytes > i32::MAX as usize {
        return Err(Failure::Invalid(
            "--chunk-bytes must be from 1 to 2^31 - 1".into(),
        ));
    }
    Ok(())
}

fn put(args: PutArgs) -> Outcome {
    check_chunk_bytes(args.chunk_bytes)?;
    if let Some(path) = &args.file {
        return file::put_file(
            args.key,
            path,
            args.chunk_bytes,
            &args.session,
            &args.connection,
        );
    }
    let mut client = args.connection.connect()?;
    let value = args.value.expect("clap requires VALUE unless --file");
    let request = PutRequest::new(
        args.key.into_bytes(),
        value.into_bytes(),
        args.session.session(),
    );
    let version = client.put(request)?;
    writeln!(io::stdout().lock(), "OK version={version}")?;
    Ok(EXIT_SUCCESS)
}

fn get(args: GetArgs) -> Outcome {
    check_chunk_bytes(args.chunk_bytes)?;
    if let Some(path) = &args.out {
        return file::get_file(
            args.key,
            path,
            args.version,
            args.chunk_bytes,
            &args.connection,
        );
    }
    let mut client = args.connection.connect()?;
    let result = client.get(GetRequest::new(args.key.into_bytes(), args.version))?;
    let Some(kv) = result.kv else {
        eprintln!("paxkv: not found (read_version={})", result.read_version);
        return Ok(EXIT_NEGATIVE);
    };
    let mut out = io::stdout().lock();
    write_bytes(&mut out, &kv.value, args.hex)?;
    writeln!(out)?;
    if args.verbose {
        writeln!(
            out,
            "mod_version={} create_version={} read_version={}",
            kv.mod_version, kv.create_version, result.read_version
        )?;
    }
    Ok(EXIT_SUCCESS)
}

fn del(args: DelArgs) -> Outcome {
    let mut client = args.connection.connect()?;
    let session = args.session.session();
    let version = match (args.range, args.key) {
        (Some(range), _) => {
            let [start, end] = <[String; 2]>::try_from(range).expect("clap takes two values");
            let range = KeyRange::new(start.into_bytes(), end.into_bytes());
            client.delete_range(DeleteRangeRequest::new(range, session))?
        }
        (None, Some(key)) => client.delete_key(DeleteRequest::new(key.into_bytes(), session))?,
        (None, None) => unreachable!("clap requires KEY unless --range"),
    };
    writeln!(io::stdout().lock(), "OK version={version}")?;
    Ok(EXIT_SUCCESS)
}

fn range(args: RangeArgs) -> Outcome {
    let mut client = args.connection.connect()?;
    let mut out = io::stdout().lock();
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    let mut read_version = args.version;
    let mut continuation = None;
    while remaining > 0 {
        // 0 asks for the server's page cap.
        let limit = if args.limit.is_some() {
            i32::try_from(remaining).unwrap_or(i32::MAX)
        } else {
            0
        };
        let request = GetRangeRequest::new(
            args.range.key_range(),
            limit,
            args.reverse,
            read_version,
            continuation.take(),
        );
        let page = client.get_range(request)?;
        for kv in page
            .kvs
            .iter()
            .take(usize::try_from(remaining).unwrap_or(usize::MAX))
        {
            write_pair(&mut out, kv, &args)?;
            remaining -= 1;
        }
        read_version = Some(page.read_version);
        if !page.more {
            break;
        }
        let Some(next) = page.continuation else {
            return Err(Failure::Server(
                "getRange said more but sent no continuation".into(),
            ));
        };
        continuation = Some(next);
    }
    Ok(EXIT_SUCCESS)
}

fn write_pair(out: &mut impl Write, kv: &KeyValue, args: &RangeArgs) -> io::Result<()> {
    write_bytes(out, &kv.key, args.hex)?;
    if !args.keys_only {
        out.write_all(b"\t")?;
        write_bytes(out, &kv.value, args.hex)?;
    }
    out.write_all(b"\n")
}

fn txn(args: TxnArgs) -> Outcome {
    let request = parse_txn(&args).map_err(Failure::Invalid)?;
    let mut client = args.connection.connect()?;
    let result = client.txn(request)?;
    let word = if result.succeeded {
        "SUCCEEDED"
    } else {
        "FAILED"
    };
    writeln!(io::stdout().lock(), "{word} version={}", result.version)?;
    Ok(if result.succeeded {
        EXIT_SUCCESS
    } else {
        EXIT_NEGATIVE
    })
}

fn parse_txn(args: &TxnArgs) -> Result<TxnRequest, String> {
    let compares = args
        .compares
        .iter()
        .map(|text| parse_compare(text).map_err(|error| format!("--if {text:?}: {error}")))
        .collect::<Result<_, _>>()?;
    let writes = |texts: &[String], flag: &str| {
        texts
            .iter()
            .map(|text| parse_write(text).map_err(|error| format!("{flag} {text:?}: {error}")))
            .collect::<Result<Vec<_>, _>>()
    };
    let success = writes(&args.success, "--then")?;
    let failure = writes(&args.failure, "--else")?;
    Ok(TxnRequest::new(
        compares,
        success,
        failure,
        args.session.session(),
    ))
}

fn watch(args: WatchArgs) -> Outcome {
    let mut calls = Reconnecting::new(&args.connection, Duration::from_millis(args.retry_ms))?;
    let mut from = match args.from {
        Some(version) => version,
        None => calls.call(|client| client.get_read_version())? + 1,
    };
    let mut remaining = args.count.unwrap_or(u64::MAX);
    let range = args.range.key_range();
    let mut out = io::stdout().lock();
    while remaining > 0 {
        let patches = args.patches.then_some(true);
        let request = WatchRequest::new(range.clone(), from, args.timeout_ms, patches);
        let batch = calls.call(|client| client.watch(request.clone()))?;
        for event in batch
            .events
            .iter()
            .take(usize::try_from(remaining).unwrap_or(usize::MAX))
        {
            write_event(&mut out, event, args.hex)?;
            remaining -= 1;
        }
        out.flush()?;
        from = batch.next_version;
    }
    Ok(EXIT_SUCCESS)
}

fn write_event(out: &mut impl Write, event: &Event, hex: bool) -> io::Result<()> {
    let is_put = event.type_ == EventType::PUT;
    if let (true, Some(patch)) = (is_put, &event.patch) {
        out.write_all(b"PATCH ")?;
        write_bytes(out, &event.key, hex)?;
        let format = match event.patch_format {
            Some(PatchFormat::MERGE_PATCH) => "merge-patch",
            _ => "json-patch",
        };
        write!(out, " {format} ")?;
        write_bytes(out, patch, hex)?;
        return writeln!(out, " {}", event.version);
    }
    out.write_all(if is_put { b"PUT " } else { b"DELETE " })?;
    write_bytes(out, &event.key, hex)?;
    if is_put {
        out.write_all(b" ")?;
        write_bytes(out, event.value.as_deref().unwrap_or_default(), hex)?;
    }
    writeln!(out, " {}", event.version)
}

fn status(args: StatusArgs) -> Outcome {
    let mut client = args.connection.connect()?;
    let status = client.status()?;
    io::stdout()
        .lock()
        .write_all(format_status(&status).as_bytes())?;
    Ok(if status.healthy {
        EXIT_SUCCESS
    } else {
        EXIT_UNAVAILABLE
    })
}

fn format_status(status: &Status) -> String {
    let leader = status
        .leader
        .map_or("none".to_string(), |id| id.to_string());
    let yes_no = |flag: bool| if flag { "yes" } else { "no" };
    let mut text = String::new();
    if let Some(cluster) = &status.cluster {
        let _ = writeln!(text, "cluster: {cluster}");
    }
    let _ = writeln!(text, "leader:  {leader}");
    let _ = writeln!(text, "ballot:  {}", status.ballot);
    let _ = writeln!(text, "version: {}", status.version);
    let _ = writeln!(text, "healthy: {}", yes_no(status.healthy));
    let column = |min: usize, field: fn(&ReplicaStatus) -> usize| {
        status.replicas.iter().map(field).fold(min, usize::max)
    };
    let width = column("ADDRESS".len(), |replica| replica.peer_address.len());
    let role_width = column(10, |replica| replica.role.len());
    let members: Vec<String> = status.replicas.iter().map(member_column).collect();
    let member_width = members.iter().map(String::len).fold(9, usize::max);
    let _ = writeln!(
        text,
        "\n{:<4} {:<width$} {:<role_width$} {:<member_width$} {:>10} {:>10} REACHABLE",
        "ID", "ADDRESS", "ROLE", "MEMBER", "COMMITTED", "APPLIED"
    );
    for (replica, member) in status.replicas.iter().zip(members) {
        let _ = writeln!(
            text,
            "{:<4} {:<width$} {:<role_width$} {:<member_width$} {:>10} {:>10} {}",
            replica.id,
            replica.peer_address,
            replica.role,
            member,
            replica.committed_slot,
            replica.applied_slot,
            yes_no(replica.reachable)
        );
    }
    text
}

/// "voter@1": how the committed membership counts a replica, at which incarnation. One that
/// runs another incarnation (it lost its disk, or is new) waits to be added: "waiting@N".
fn member_column(replica: &ReplicaStatus) -> String {
    match (
        &replica.member,
        replica.incarnation,
        replica.running_incarnation,
    ) {
        (_, named, Some(running)) if named != Some(running) => format!("waiting@{running}"),
        (Some(kind), Some(incarnation), _) => format!("{kind}@{incarnation}"),
        (Some(kind), None, _) => kind.clone(),
        (None, _, _) => "?".to_string(),
    }
}

/// Raw bytes, or lowercase hex.
fn write_bytes(out: &mut impl Write, bytes: &[u8], hex: bool) -> io::Result<()> {
    if !hex {
        return out.write_all(bytes);
    }
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    out.write_all(text.as_bytes())
}

/// Bytes for an error message: printable ASCII as is, the rest as `\xHH`.
fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&byte| byte.escape_ascii())
        .map(char::from)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Reconnecting calls (watch).

/// Makes calls on one connection, reconnecting after a transport error and waiting after
/// `Unavailable`, until `retry_for` of waiting in a row has passed. Only the waits are
/// counted, not the time the attempts themselves take.
struct Reconnecting<'a> {
    connection: &'a ConnectionArgs,
    client: Option<Client>,
    retry_for: Duration,
}

impl<'a> Reconnecting<'a> {
    /// Connects once up front, so a wrong endpoint fails at once rather than after retrying.
    fn new(connection: &'a ConnectionArgs, retry_for: Duration) -> Result<Self, Failure> {
        let client = Some(connection.connect()?);
        Ok(Reconnecting {
            connection,
            client,
            retry_for,
        })
    }

    fn call<T>(&mut self, mut f: impl FnMut(&mut Client) -> thrift::Result<T>) -> Outcome<T> {
        let mut waited = Duration::ZERO;
        let mut backoff = WATCH_BACKOFF_MIN;
        loop {
            let failure = match self.attempt(&mut f) {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let Failure::Unavailable(line) = &failure else {
                return Err(failure);
            };
            if waited >= self.retry_for {
                return Err(Failure::Unavailable(format!(
                    "{line}; gave up after {} ms of retrying",
                    waited.as_millis()
                )));
            }
            eprintln!("paxkv: {line}; retrying in {} ms", backoff.as_millis());
            thread::sleep(backoff);
            waited += backoff;
            backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
        }
    }

    fn attempt<T>(&mut self, f: &mut impl FnMut(&mut Client) -> thrift::Result<T>) -> Outcome<T> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(self.connection.connect()?),
        };
        let result = f(client);
        if matches!(result, Err(thrift::Error::Transport(_))) {
            // The stream may be mid-message: only a new connection is safe to use.
            self.client = None;
        }
        Ok(result?)
    }
}

// ---------------------------------------------------------------------------------------
// The txn expression language.
//
// A word is either bare (a run of characters up to whitespace or one of the stop
// characters) or double-quoted with escapes \" \\ \n \t \xHH, which allows any bytes,
// spaces and stop characters. An empty quoted word "" is an empty value.

struct Scanner<'a> {
    rest: &'a str,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner { rest: text }
    }

    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn at_end(&mut self) -> bool {
        self.skip_space();
        self.rest.is_empty()
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected {token:?} at {:?}", self.rest))
        }
    }

    /// A bare or quoted word; a bare word stops at whitespace or any of `stops`.
    fn word(&mut self, stops: &[char]) -> Result<Vec<u8>, String> {
        self.skip_space();
        if self.eat("\"") {
            return self.quoted();
        }
        let length = self
            .rest
            .find(|c: char| c.is_whitespace() || c == '"' || stops.contains(&c))
            .unwrap_or(self.rest.len());
        if length == 0 {
            return Err(format!("expected a word at {:?}", self.rest));
        }
        let (word, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(word.as_bytes().to_vec())
    }

    /// The rest of a quoted word, after its opening quote.
    fn quoted(&mut self) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        let mut chars = self.rest.char_indices();
        while let Some((index, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[index + 1..];
                    return Ok(bytes);
                }
                '\\' => bytes.push(unescape(&mut chars)?),
                c => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        Err("unterminated quote".into())
    }
}

fn unescape(chars: &mut std::str::CharIndices<'_>) -> Result<u8, String> {
    let mut next = || chars.next().map(|(_, c)| c);
    match next() {
        Some('"') => Ok(b'"'),
        Some('\\') => Ok(b'\\'),
        Some('n') => Ok(b'\n'),
        Some('t') => Ok(b'\t'),
        Some('x') => {
            let digits: String = [next(), next()].into_iter().flatten().collect();
            u8::from_str_radix(&digits, 16)
                .ok()
                .filter(|_| digits.len() == 2)
                .ok_or_else(|| format!("bad escape \\x{digits}: needs two hex digits"))
        }
        Some(other) => Err(format!("unknown escape \\{other}")),
        None => Err("unterminated escape".into()),
    }
}

const COMPARE_OPS: [(&str, CompareOp); 5] = [
    ("!=", CompareOp::NOT_EQUAL),
    ("==", CompareOp::EQUAL),
    ("=", CompareOp::EQUAL),
    ("<", CompareOp::LESS),
    (">", CompareOp::GREATER),
];

/// `value(K) OP V`, `mod_version(K) OP N` (alias `version`), `create_version(K) OP N`,
/// `exists(K)`, `!exists(K)`.
fn parse_compare(text: &str) -> Result<Compare, String> {
    let mut scanner = Scanner::new(text);
    let negated = scanner.eat("!");
    let function = String::from_utf8(scanner.word(&['(', ')', '!', '=', '<', '>'])?)
        .expect("a bare word of a &str is UTF-8");
    scanner.expect("(")?;
    let key = scanner.word(&[')'])?;
    scanner.expect(")")?;
    let compare = match (function.as_str(), negated) {
        ("exists", _) => Compare::new(
            key,
            CompareTarget::EXISTS,
            CompareOp::EQUAL,
            None,
            None,
            !negated,
        ),
        (_, true) => return Err("only exists() can be negated with !".into()),
        ("value", false) => {
            let op = parse_op(&mut scanner)?;
            let value = scanner.word(&[])?;
            Compare::new(key, CompareTarget::VALUE, op, value, None, None)
        }
        ("mod_version" | "version", false) => {
            version_compare(&mut scanner, key, CompareTarget::MOD_VERSION)?
        }
        ("create_version", false) => {
            version_compare(&mut scanner, key, CompareTarget::CREATE_VERSION)?
        }
        (other, false) => {
            return Err(format!(
            "unknown function {other:?}: use value, mod_version, version, create_version or exists"
        ))
        }
    };
    if !scanner.at_end() {
        return Err(format!("unexpected {:?} at the end", scanner.rest));
    }
    Ok(compare)
}

fn version_compare(
    scanner: &mut Scanner<'_>,
    key: Vec<u8>,
    target: CompareTarget,
) -> Result<Compare, String> {
    let op = parse_op(scanner)?;
    let word = scanner.word(&[])?;
    let version = std::str::from_utf8(&word)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| format!("{:?} is not a version number", escape(&word)))?;
    Ok(Compare::new(key, target, op, None, version, None))
}

fn parse_op(scanner: &mut Scanner<'_>) -> Result<CompareOp, String> {
    COMPARE_OPS
        .iter()
        .find(|(token, _)| scanner.eat(token))
        .map(|&(_, op)| op)
        .ok_or_else(|| format!("expected one of = != < > at {:?}", scanner.rest))
}

/// `put K V`, `del K`, `del START END` (clears [START, END); an empty END, `""`, means to
/// the end of the key space).
fn parse_write(text: &str) -> Result<Mutation, String> {
    let mut scanner = Scanner::new(text);
    let mut words = Vec::new();
    while !scanner.at_end() {
        words.push(scanner.word(&[])?);
    }
    let mut words = words.into_iter();
    let verb = words.next().ok_or("empty write")?;
    let operands: Vec<Vec<u8>> = words.collect();
    match (verb.as_slice(), <[Vec<u8>; 2]>::try_from(operands)) {
        (b"put", Ok([key, value])) => Ok(Mutation::new(MutationType::SET, key, value, None)),
        (b"del", Ok([start, end])) => {
            Ok(Mutation::new(MutationType::CLEAR_RANGE, start, None, end))
        }
        (b"del", Err(operands)) if operands.len() == 1 => {
            let key = operands.into_iter().next().expect("one operand");
            Ok(Mutation::new(MutationType::CLEAR, key, None, None))
        }
        (b"put", _) => Err("expected put KEY VALUE".into()),
        (b"del", _) => Err("expected del KEY or del START END".into()),
        (other, _) => Err(format!("unknown write {:?}: use put or del", escape(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(key: &[u8], target: CompareTarget, op: CompareOp) -> Compare {
        Compare::new(key.to_vec(), target, op, None, None, None)
    }

    #[test]
    fn value_compares_with_every_operator() {
        let cases = [
            ("value(k) = v", CompareOp::EQUAL),
            ("value(k) == v", CompareOp::EQUAL),
            ("value(k) != v", CompareOp::NOT_EQUAL),
            ("value(k) < v", CompareOp::LESS),
            ("value(k)>v", CompareOp::GREATER),
        ];
        for (text, op) in cases {
            let mut expected = compare(b"k", CompareTarget::VALUE, op);
            expected.value = Some(b"v".to_vec());
            assert_eq!(parse_compare(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn version_compares_parse_numbers() {
        let mut expected = compare(b"k", CompareTarget::MOD_VERSION, CompareOp::EQUAL);
        expected.version = Some(3);
        assert_eq!(parse_compare("version(k) = 3"), Ok(expected.clone()));
        assert_eq!(parse_compare(" mod_version( k )=3 "), Ok(expected));
        let mut expected = compare(b"k", CompareTarget::CREATE_VERSION, CompareOp::LESS);
        expected.version = Some(-1);
        assert_eq!(parse_compare("create_version(k) < -1"), Ok(expected));
        assert!(parse_compare("version(k) = three").is_err());
        assert!(parse_compare("version(k) = 99999999999999999999").is_err());
    }

    #[test]
    fn exists_and_not_exists() {
        let mut expected = compare(b"k", CompareTarget::EXISTS, CompareOp::EQUAL);
        expected.exists = Some(true);
        assert_eq!(parse_compare("exists(k)"), Ok(expected.clone()));
        expected.exists = Some(false);
        assert_eq!(parse_compare("!exists(k)"), Ok(expected.clone()));
        assert_eq!(parse_compare("! exists (k)"), Ok(expected));
        assert!(parse_compare("!value(k) = v").is_err());
        assert!(parse_compare("exists(k) = v").is_err());
    }

    #[test]
    fn quoted_words_carry_spaces_stops_and_escapes() {
        let parsed = parse_compare(r#"value("a key)") = "x \"y\"\t\x00\xff""#).unwrap();
        assert_eq!(parsed.key, b"a key)".to_vec());
        assert_eq!(parsed.value, Some(b"x \"y\"\t\x00\xff".to_vec()));
        let parsed = parse_compare(r#"value(k) = """#).unwrap();
        assert_eq!(parsed.value, Some(Vec::new()));
        // Non-ASCII text is its UTF-8 bytes, bare or quoted.
        let parsed = parse_compare("value(ключ) = \"é\"").unwrap();
        assert_eq!(parsed.key, "ключ".as_bytes().to_vec());
        assert_eq!(parsed.value, Some("é".as_bytes().to_vec()));
    }

    #[test]
    fn malformed_compares_are_rejected() {
        for text in [
            "",
            "value",
            "value(k)",
            "value(k) =",
            "value(k) ~ v",
            "value(k = v",
            "value() = v",
            "value(k) = v w",
            "size(k) = 1",
            r#"value("k) = v"#,
            r#"value(k) = "\q""#,
            r#"value(k) = "\x4""#,
            r#"value(k) = "\xzz""#,
        ] {
            assert!(parse_compare(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn writes_parse() {
        assert_eq!(
            parse_write("put k v"),
            Ok(Mutation::new(
                MutationType::SET,
                b"k".to_vec(),
                b"v".to_vec(),
                None
            ))
        );
        assert_eq!(
            parse_write(r#"put "a b" "c=d e""#),
            Ok(Mutation::new(
                MutationType::SET,
                b"a b".to_vec(),
                b"c=d e".to_vec(),
                None
            ))
        );
        assert_eq!(
            parse_write("del k"),
            Ok(Mutation::new(
                MutationType::CLEAR,
                b"k".to_vec(),
                None,
                None
            ))
        );
        assert_eq!(
            parse_write(r#"del a """#),
            Ok(Mutation::new(
                MutationType::CLEAR_RANGE,
                b"a".to_vec(),
                None,
                Vec::new()
            ))
        );
        for text in [
            "",
            "put k",
            "put k v w",
            "del",
            "del a b c",
            "get k",
            "put \"k v",
        ] {
            assert!(parse_write(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn txn_errors_name_the_flag_and_text() {
        let args = TxnArgs {
            compares: vec!["value(k) = v".into()],
            success: vec!["put k w".into()],
            failure: vec!["frobnicate k".into()],
            session: SessionArgs {
                client_id: None,
                request_id: None,
            },
            connection: ConnectionArgs {
                endpoint: String::new(),
                protocol: ProtocolArg::Binary,
                token: None,
            },
        };
        let error = parse_txn(&args).unwrap_err();
        assert!(
            error.starts_with("--else \"frobnicate k\": unknown write"),
            "{error}"
        );
    }

    #[test]
    fn status_columns_line_up() {
        let replicas = vec![
            ReplicaStatus::new(
                1,
                "127.0.0.1:6001".into(),
                "leader".into(),
                7,
                7,
                true,
                "voter".to_string(),
                1,
                1,
            ),
            ReplicaStatus::new(
                2,
                "10.0.0.2:6002".into(),
                "pre-candidate".into(),
                7,
                6,
                false,
                "learner".to_string(),
                3,
                None,
            ),
            // Lost its disk: it runs another incarnation than the member's.
            ReplicaStatus::new(
                4,
                "10.0.0.4:6004".into(),
                "follower".into(),
                0,
                0,
                true,
                "voter".to_string(),
                1,
                1765031405123456789,
            ),
            // From a server that does not report membership.
            ReplicaStatus::new(
                3,
                "10.0.0.3:6003".into(),
                "follower".into(),
                7,
                7,
                true,
                None,
                None,
                None,
            ),
        ];
        let status = Status::new(replicas, None, "2.1".into(), 5, false, "prod".to_string());
        let text = format_status(&status);
        let head = "cluster: prod\nleader:  none\nballot:  2.1\nversion: 5\nhealthy: no\n\n";
        assert!(text.starts_with(head), "{text}");
        let table: Vec<&str> = text.lines().skip(6).collect();
        assert_eq!(table.len(), 5, "{text}");
        assert!(table[1].contains(" voter@1 "), "{text}");
        assert!(table[2].contains(" learner@3 "), "{text}");
        assert!(table[3].contains(" waiting@1765031405123456789 "), "{text}");
        assert!(table[4].contains(" ? "), "{text}");
        let reachable_column = |line: &str| line.rfind(' ').unwrap();
        assert!(table
            .iter()
            .all(|line| reachable_column(line) == reachable_column(table[0])));
        assert!(table[2].ends_with(" 7          6 no"), "{text}");
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
        assert_eq!(prefix_end(b""), Vec::<u8>::new());
    }

    #[test]
    fn the_command_line_parses_into_verbs() {
        use clap::Parser;

        #[derive(Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            command: ClientCommand,
        }
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace());
        let Ok(Cli {
            command: ClientCommand::Del(del),
        }) = parse("paxkv del --range a b --endpoint h:1")
        else {
            panic!("del --range did not parse");
        };
        assert_eq!(del.range, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(del.key, None);
        assert_eq!(del.connection.endpoint, "h:1");
        assert!(parse("paxkv del").is_err());
        assert!(parse("paxkv del k --range a b").is_err());
        assert!(parse("paxkv put k v --client-id c").is_err());
        assert!(parse("paxkv put k v --client-id c --request-id 1").is_ok());
        assert!(parse("paxkv range a b --prefix").is_err());
        assert!(parse("paxkv watch a --protocol compact --count 2").is_ok());
        let txn = Cli::try_parse_from([
            "paxkv",
            "txn",
            "--if",
            "exists(k)",
            "--then",
            "put k v",
            "--else",
            "del k",
        ]);
        let Ok(Cli {
            command: ClientCommand::Txn(txn),
        }) = txn
        else {
            panic!("txn did not parse");
        };
        assert_eq!(txn.compares, ["exists(k)"]);
        assert_eq!(txn.success, ["put k v"]);
        assert_eq!(txn.failure, ["del k"]);
    }
}
