//! Helpers for the integration tests that run the `paxkv` binary: free loopback ports, a
//! child process that is always killed (by its PID, never by name), a `paxkv dev` cluster,
//! and Thrift calls that wait out elections and restarts.
//!
//! Use from a test file with `mod support;`.
// Each test file uses a different subset.
#![allow(dead_code)]

use std::error::Error;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use paxkv::api::gen::paxkv::{Status, Unavailable};
use paxkv::api::{connect, Client, Protocol, TPaxkvSyncClient};

/// Lines of a server's log shown when a test gives up on it.
pub const LOG_TAIL_LINES: usize = 60;

const POLL_INTERVAL: Duration = Duration::from_millis(20);
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(10);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------
// Ports.

/// A loopback port that was free a moment ago (the OS picked it). Another process can take
/// it before the test binds it; that race is accepted.
pub fn free_port() -> u16 {
    free_addrs(1)[0].port()
}

/// `count` distinct free loopback addresses: all listeners are held until every port is
/// picked, so the OS cannot hand out the same port twice.
pub fn free_addrs(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("local_addr"))
        .collect()
}

/// Comma-separated, the way the `paxkv` flags take address lists.
pub fn join_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------
// Time.

/// A wall-clock deadline. The workspace bans `Instant::now` for the deterministic core; a
/// test that waits on real processes has nothing but wall time to wait on.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    #[allow(clippy::disallowed_methods)]
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now() + timeout)
    }

    #[allow(clippy::disallowed_methods)]
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

// ---------------------------------------------------------------------------------------
// Processes.

/// A running `paxkv` binary with stdout and stderr in a log file. Dropping it kills it
/// (SIGKILL to its PID) and reaps it.
pub struct Process {
    child: Child,
    log: PathBuf,
    /// Set by `kill9`, so an exit that the test caused is not reported as a crash.
    killed: bool,
}

impl Process {
    /// Starts `paxkv ARGS...` (the binary Cargo built for this test), logging to `log`.
    pub fn spawn<S: AsRef<OsStr>>(args: &[S], log: &Path) -> Process {
        let stdout = File::create(log).unwrap_or_else(|e| panic!("create {log:?}: {e}"));
        let stderr = stdout.try_clone().expect("clone the log file handle");
        let child = Command::new(env!("CARGO_BIN_EXE_paxkv"))
            .args(args)
            .env("RUST_BACKTRACE", "1")
            // `paxkv dev` writes the root token for the CLI: next to the log, not in $HOME.
            .env("PAXKV_TOKEN_FILE", log.with_extension("token"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn the paxkv binary");
        Process {
            child,
            log: log.to_path_buf(),
            killed: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILL, then reap: the process is gone when this returns.
    pub fn kill9(&mut self) {
        self.killed = true;
        // `Child::kill` is SIGKILL on Unix, and does nothing to a child already reaped, so a
        // reused PID is never signalled.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT (what Ctrl-C sends), for a graceful shutdown. Does not wait.
    pub fn interrupt(&mut self) {
        if self.try_exit_status().is_some() {
            return; // Already reaped: the PID may belong to someone else now.
        }
        let status = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status()
            .expect("run kill -INT");
        assert!(status.success(), "kill -INT {} failed", self.pid());
    }

    /// The exit status if the process exits within `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Deadline::after(timeout);
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if deadline.passed() {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on the child")
    }

    /// Panics, with the log, if the process exited without the test killing it.
    pub fn assert_running(&mut self) {
        if self.killed {
            return;
        }
        if let Some(status) = self.try_exit_status() {
            panic!(
                "paxkv (pid {}) exited unexpectedly with {status}\n{}",
                self.pid(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }

    /// The last `lines` lines of the log, headed by its path.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("({e})"));
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- last {lines} lines of {:?} ---\n{tail}\n---", self.log)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// A dev cluster: three replicas in one process.

pub struct DevCluster {
    pub process: Process,
    /// The Thrift endpoints, one per replica.
    pub endpoints: Vec<SocketAddr>,
    pub peers: Vec<SocketAddr>,
    /// The HTTP metrics endpoints, one per replica.
    pub metrics: Vec<SocketAddr>,
    pub data_dir: PathBuf,
}

/// Starts `paxkv dev` with three replicas on free loopback ports, its data under
/// `dir/data` and its log in `dir/paxkv-dev.log`. Does not wait: see [`DevCluster::wait_ready`].
pub fn dev(dir: &Path) -> DevCluster {
    let addrs = free_addrs(9);
    let (endpoints, peers, metrics) = (
        addrs[..3].to_vec(),
        addrs[3..6].to_vec(),
        addrs[6..].to_vec(),
    );
    let data_dir = dir.join("data");
    let args = dev_args(&data_dir, &endpoints, &peers, &metrics);
    let process = Process::spawn(&args, &dir.join("paxkv-dev.log"));
    DevCluster {
        process,
        endpoints,
        peers,
        metrics,
        data_dir,
    }
}

fn dev_args(
    data_dir: &Path,
    endpoints: &[SocketAddr],
    peers: &[SocketAddr],
    metrics: &[SocketAddr],
) -> Vec<OsString> {
    vec![
        "dev".into(),
        "--data-dir".into(),
        data_dir.into(),
        "--thrift-addrs".into(),
        join_addrs(endpoints).into(),
        "--peer-addrs".into(),
        join_addrs(peers).into(),
        "--metrics-addrs".into(),
        join_addrs(metrics).into(),
    ]
}

impl DevCluster {
    /// The `paxkv dev` command line of this cluster (to start it again on the same ports).
    pub fn args(&self) -> Vec<OsString> {
        dev_args(&self.data_dir, &self.endpoints, &self.peers, &self.metrics)
    }

    /// Waits until every endpoint reports a healthy cluster with a leader.
    pub fn wait_ready(&mut self, timeout: Duration) -> Status {
        let endpoints = self.endpoints.clone();
        let servers = std::slice::from_mut(&mut self.process);
        let mut last = None;
        for endpoint in endpoints {
            last = Some(wait_ready(endpoint, timeout, servers));
        }
        last.expect("a dev cluster has endpoints")
    }

    pub fn client(&self, replica: usize) -> Client {
        client(self.endpoints[replica])
    }
}

/// Polls `status()` on `endpoint` until it says `healthy` with a leader, and returns that
/// status. Panics, with the logs of `servers`, on timeout or if one of them exits on its own.
pub fn wait_ready(endpoint: SocketAddr, timeout: Duration, servers: &mut [Process]) -> Status {
    let deadline = Deadline::after(timeout);
    loop {
        servers.iter_mut().for_each(Process::assert_running);
        let last = match connect(endpoint, Protocol::Binary).and_then(|mut c| c.status()) {
            Ok(status) if status.healthy && status.leader.is_some() => return status,
            Ok(status) => format!("not ready: {status:?}"),
            Err(error) => describe(&error),
        };
        if deadline.passed() {
            let logs: Vec<String> = servers.iter().map(|s| s.log_tail(LOG_TAIL_LINES)).collect();
            panic!(
                "{endpoint} not ready after {timeout:?}; last: {last}\n{}",
                logs.join("\n")
            );
        }
        thread::sleep(POLL_INTERVAL * 5);
    }
}

// ---------------------------------------------------------------------------------------
// Calls.

/// A binary-protocol client; panics if it cannot connect.
pub fn client(endpoint: SocketAddr) -> Client {
    connect(endpoint, Protocol::Binary).unwrap_or_else(|e| panic!("connect to {endpoint}: {e:?}"))
}

/// The IDL exception inside `error`, if it is one of type `E`.
pub fn user_error<E: Error + 'static>(error: &thrift::Error) -> Option<&E> {
    match error {
        thrift::Error::User(user) => user.downcast_ref::<E>(),
        _ => None,
    }
}

/// Worth retrying: the connection failed (the server is restarting, or closed it), or the
/// server said `Unavailable` (no leader yet).
pub fn is_retryable(error: &thrift::Error) -> bool {
    matches!(error, thrift::Error::Transport(_)) || user_error::<Unavailable>(error).is_some()
}

/// One line for any thrift error, including the typed exception's fields (the thrift
/// crate's own `Display` shows neither).
pub fn describe(error: &thrift::Error) -> String {
    match error {
        thrift::Error::Transport(e) => format!("transport: {e}: {}", e.message),
        thrift::Error::Protocol(e) => format!("protocol: {e}: {}", e.message),
        thrift::Error::Application(e) => format!("application: {e}: {}", e.message),
        thrift::Error::User(user) => format!("{user:?}"),
    }
}

/// Calls on one endpoint that ride out elections and restarts: a transport error drops the
/// connection (the next attempt reconnects), `Unavailable` waits, both are retried until the
/// timeout. Other errors, the typed exceptions a test may be checking for, are returned.
///
/// A retried write may have been applied by the attempt that failed; give it a `Session`
/// where applying it twice would matter.
pub struct Retrying {
    endpoint: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
    client: Option<Client>,
}

impl Retrying {
    pub fn new(endpoint: SocketAddr, timeout: Duration) -> Retrying {
        Retrying::with_protocol(endpoint, Protocol::Binary, timeout)
    }

    pub fn with_protocol(endpoint: SocketAddr, protocol: Protocol, timeout: Duration) -> Retrying {
        Retrying {
            endpoint,
            protocol,
            timeout,
            client: None,
        }
    }

    /// `f`'s result, or its first error that is not retryable, or the last retryable error
    /// once the timeout has passed.
    pub fn try_call<T>(
        &mut self,
        mut f: impl FnMut(&mut Client) -> thrift::Result<T>,
    ) -> thrift::Result<T> {
        let deadline = Deadline::after(self.timeout);
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            match self.attempt(&mut f) {
                Err(error) if is_retryable(&error) && !deadline.passed() => {
                    thread::sleep(pause_for(&error, backoff));
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
                result => return result,
            }
        }
    }

    /// `f`'s result; panics on any error that outlasts the retries.
    pub fn call<T>(&mut self, f: impl FnMut(&mut Client) -> thrift::Result<T>) -> T {
        let (endpoint, timeout) = (self.endpoint, self.timeout);
        self.try_call(f).unwrap_or_else(|e| {
            panic!(
                "call to {endpoint} failed (retried {timeout:?}): {}",
                describe(&e)
            )
        })
    }

    fn attempt<T>(
        &mut self,
        f: &mut impl FnMut(&mut Client) -> thrift::Result<T>,
    ) -> thrift::Result<T> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(connect(self.endpoint, self.protocol)?),
        };
        let result = f(client);
        if matches!(result, Err(thrift::Error::Transport(_))) {
            // A half-read reply may be left on the stream: only a new connection is safe.
            self.client = None;
        }
        result
    }
}

/// The server's `retry_after_ms` for `Unavailable` (capped), else the backoff.
fn pause_for(error: &thrift::Error, backoff: Duration) -> Duration {
    match user_error::<Unavailable>(error) {
        Some(unavailable) => {
            let asked = u64::try_from(unavailable.retry_after_ms).unwrap_or(0);
            Duration::from_millis(asked).clamp(RETRY_BACKOFF_MIN, RETRY_BACKOFF_MAX)
        }
        None => backoff,
    }
}

/// [`Retrying::call`] on a fresh connection to `endpoint`.
pub fn retry<T>(
    endpoint: SocketAddr,
    timeout: Duration,
    f: impl FnMut(&mut Client) -> thrift::Result<T>,
) -> T {
    Retrying::new(endpoint, timeout).call(f)
}

// ---------------------------------------------------------------------------------------
// HTTP: the metrics endpoint and Prometheus's API.

/// `GET path` on `addr` over HTTP/1.1 with `Connection: close`: the status code and the
/// body, de-chunked if the server chunked it. Enough for /metrics, /health, /ready and
/// Prometheus's JSON API.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, "")
}

/// [`http_get`] with any method and a plain-text body (sent when not empty).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let length = body.len();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {length}\r\n\r\n{body}"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what}: {response:?}"),
        )
    };
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no header end"))?;
    let code = (head.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The body of a chunked transfer: hex size line, data, CRLF, until a 0-size chunk.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the first sample of `name` (exactly; not `name_bucket` etc.) whose labels
/// include every one of `labels`, in a text-format scrape.
pub fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, l)) => (n, l),
                None => (series, ""),
            };
            let wanted = labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            (series_name == name && wanted).then(|| value.parse().ok())?
        })
        .next()
}

// ---------------------------------------------------------------------------------------
// A cluster of `paxkv server` processes.

const CLUSTER_READY: Duration = Duration::from_secs(30);
const CLUSTER_CALLS: Duration = Duration::from_secs(30);

/// `paxkv server --config nodeN.toml` processes on free loopback ports, each with its own
/// data directory under `dir`; `extra` is appended to every node's TOML (e.g. a `[snapshot]`
/// table).
pub struct ServerCluster {
    pub dir: PathBuf,
    pub endpoints: Vec<SocketAddr>,
    pub servers: Vec<Option<Process>>,
    peers: Vec<SocketAddr>,
}

impl ServerCluster {
    pub fn start(dir: &Path) -> ServerCluster {
        ServerCluster::start_with(dir, "")
    }

    pub fn start_with(dir: &Path, extra: &str) -> ServerCluster {
        let cluster = ServerCluster::configure(dir, extra);
        cluster.start_all()
    }

    /// Writes the configs and starts nothing.
    pub fn configure(dir: &Path, extra: &str) -> ServerCluster {
        ServerCluster::configure_growable(dir, extra, 3)
    }

    /// Configs for three replicas that create the cluster, and for `total - 3` more that
    /// may join it later (each of those lists the first three and itself, as
    /// docs/operations.md says a joining replica's config does). Starts nothing.
    pub fn configure_growable(dir: &Path, extra: &str, total: usize) -> ServerCluster {
        assert!(total >= 3);
        let addrs = free_addrs(2 * total);
        let (endpoints, peers) = (addrs[..total].to_vec(), addrs[total..].to_vec());
        let member = |i: usize| format!("  {{ id = {}, peer_addr = \"{}\" }},", i + 1, peers[i]);
        for (i, endpoint) in endpoints.iter().enumerate() {
            let id = i + 1;
            let mut members: Vec<String> = (0..3).map(member).collect();
            if i >= 3 {
                members.push(member(i));
            }
            // The KV API without tokens, unless `extra` has an `[auth]` table of its own.
            let auth = match extra.contains("[auth]") {
                true => "",
                false => "auth.enabled = false\n",
            };
            let config = format!(
                "id = {id}\ndata_dir = \"{}\"\nthrift_addr = \"{endpoint}\"\n{auth}members = [\n{}\n]\n{extra}\n",
                dir.join(format!("node{id}")).display(),
                members.join("\n")
            );
            std::fs::write(dir.join(format!("node{id}.toml")), config).unwrap();
        }
        ServerCluster {
            dir: dir.to_path_buf(),
            endpoints,
            servers: (0..total).map(|_| None).collect(),
            peers,
        }
    }

    /// Replica `i`'s peer address.
    pub fn peer_addr(&self, i: usize) -> SocketAddr {
        self.peers[i]
    }

    /// Replica `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}", i + 1))
    }

    pub fn start_all(mut self) -> ServerCluster {
        for i in 0..3 {
            self.start_server(i);
        }
        self.wait_ready();
        self
    }

    /// Starts replica `i` with `--bootstrap` (which its own directory ignores once it holds
    /// state).
    pub fn start_server(&mut self, i: usize) {
        self.start_server_as(i, true);
    }

    /// Starts replica `i`, with `--bootstrap` or without.
    pub fn start_server_as(&mut self, i: usize, bootstrap: bool) {
        let config = self.dir.join(format!("node{}.toml", i + 1));
        let log = self.dir.join(format!("node{}.log", i + 1));
        let mut args = vec!["server".as_ref(), "--config".as_ref(), config.as_os_str()];
        if bootstrap {
            args.push("--bootstrap".as_ref());
        }
        self.servers[i] = Some(Process::spawn(&args, &log));
    }

    /// Replica `i`'s process, which the cluster no longer waits on or stops.
    pub fn take_server(&mut self, i: usize) -> Option<Process> {
        self.servers[i].take()
    }

    pub fn wait_ready(&mut self) {
        let live: Vec<usize> = (0..self.servers.len())
            .filter(|&i| self.servers[i].is_some())
            .collect();
        for i in live {
            let endpoint = self.endpoints[i];
            let server = self.servers[i].as_mut().unwrap();
            wait_ready(endpoint, CLUSTER_READY, std::slice::from_mut(server));
        }
    }

    /// The index of the replica that leads, as replica `via` sees it.
    pub fn leader(&self, via: usize) -> usize {
        let status = Retrying::new(self.endpoints[via], CLUSTER_CALLS).call(|c| c.status());
        status.leader.expect("ready clusters have a leader") as usize - 1
    }

    pub fn kill9(&mut self, i: usize) {
        self.servers[i].take().expect("running").kill9();
    }

    /// The root token (from replica 1's `root-token`), once replica 1 has created root.
    pub fn root_token(&self) -> String {
        let path = self.data_dir(0).join("root-token");
        let token = std::fs::read_to_string(&path).expect("root-token of the bootstrap member");
        let token = token.trim().to_string();
        let deadline = Deadline::after(CLUSTER_READY);
        let endpoint = self.endpoints[0];
        while paxkv::api::connect_config(endpoint, Protocol::Binary, Some(&token)).is_err() {
            assert!(
                !deadline.passed(),
                "root was not created within {CLUSTER_READY:?}"
            );
            thread::sleep(POLL_INTERVAL);
        }
        token
    }
}

/// Snapshot files in a replica's data directory, by slot.
pub fn snapshot_slots(data_dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("snapshots")) else {
        return Vec::new();
    };
    let mut slots: Vec<u64> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("snap-")?
                .strip_suffix(".pxs")?
                .parse()
                .ok()
        })
        .collect();
    slots.sort();
    slots
}
