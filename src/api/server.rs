//! The Thrift server shell, after tokio-rs/mini-redis: a listener bounded by a connection
//! semaphore, one task per connection, calls run on the blocking pool bounded by a second
//! semaphore, and graceful shutdown by dropping senders.
//!
//! Shutdown: when `shutdown` resolves the listener stops accepting and drops the broadcast
//! sender; each connection finishes the call it is processing (its reply is written), then
//! sees the closed channel and returns. Every connection task holds a clone of an mpsc
//! sender, so `run` knows all of them are gone when its receiver yields `None`.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use thrift::server::TProcessor;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tracing::{debug, error, info, warn};

use super::codec::Protocol;
use super::codec::FRAME_BYTES_MAX_LIMIT;
use super::connection::{Connection, Frame};
use super::error::{Error, Result};
use super::gen::paxkv as gen;
use super::gen::paxkv::{
    CommitRequest, CommitResult, DeleteRangeRequest, DeleteRequest, GetRangeRequest, GetRequest,
    GetResult, MemberAddRequest, Membership, PaxkvSyncHandler, PaxkvSyncProcessor, PutRequest,
    RangeResult, ReadSnapshotRequest, SnapshotChunk, SnapshotInfo, Status, TxnRequest, TxnResult,
    WatchRequest, WatchResult,
};
use super::process::process_frame;
use super::session;
use crate::metrics::GaugeGuard;

/// Connections the kernel queues for `accept`, for `bind`. tokio's own `TcpListener::bind`
/// uses 128, and a burst of clients beyond that sees its SYNs dropped and retried a second or
/// more later. (The kernel caps it at `net.core.somaxconn`.)
const LISTEN_BACKLOG_CONNECTIONS: u32 = 1024;

/// Accept failures are retried with exponential backoff this many times before `run` gives
/// up (the first wait is 1 s, then 2 s, 4 s, ...).
const ACCEPT_RETRIES_MAX: u32 = 6;

/// The server's bounds. Each one turns overload into a wait or a closed connection, never
/// into unbounded memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections; the listener stops accepting while this many are open.
    pub connections_max: usize,
    /// Largest frame body accepted or sent. A request announcing more closes its connection.
    pub frame_bytes_max: u32,
    /// Calls being processed at once across all connections; further calls wait for a slot.
    /// (They also wait if tokio's blocking pool, 512 threads by default, is smaller.)
    pub requests_inflight_max: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            connections_max: 10_000,
            frame_bytes_max: 256 * 1024 * 1024,
            requests_inflight_max: 512,
        }
    }
}

impl ServerLimits {
    /// Checks every limit is in its range (a zero would deadlock the server).
    pub fn check(&self) -> Result<()> {
        let permits_max = Semaphore::MAX_PERMITS as u64;
        check_limit(
            "connections_max",
            self.connections_max as u64,
            1,
            permits_max,
        )?;
        check_limit(
            "frame_bytes_max",
            u64::from(self.frame_bytes_max),
            1,
            u64::from(FRAME_BYTES_MAX_LIMIT),
        )?;
        check_limit(
            "requests_inflight_max",
            self.requests_inflight_max as u64,
            1,
            permits_max,
        )
    }
}

fn check_limit(limit: &'static str, value: u64, minimum: u64, maximum: u64) -> Result<()> {
    if (minimum..=maximum).contains(&value) {
        return Ok(());
    }
    Err(Error::LimitInvalid {
        limit,
        value,
        minimum,
        maximum,
    })
}

/// Binds a listener for `run` with a listen backlog of 1,024 connections, so bursts of new
/// clients are queued rather than dropped. Must be called inside a tokio runtime.
pub fn bind(address: SocketAddr) -> Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Lets a restarted server bind at once while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    Ok(socket.listen(LISTEN_BACKLOG_CONNECTIONS)?)
}

/// Serves the paxkv Thrift API on `listener` until `shutdown` resolves, then waits for the
/// calls in flight to finish and returns.
///
/// Returns an error if `limits` are invalid (before serving) or if accepting keeps failing
/// (after draining the open connections).
pub async fn run<H>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: ServerLimits,
    shutdown: impl Future,
) -> Result<()>
where
    H: PaxkvSyncHandler + Send + Sync + 'static,
{
    let uncounted = IntGauge::new("connections_open", "unregistered").expect("valid gauge");
    run_counted(listener, handler, limits, uncounted, shutdown).await
}

/// [`run`], keeping `connections_open` at the number of open client connections.
pub async fn run_counted<H>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: ServerLimits,
    connections_open: IntGauge,
    shutdown: impl Future,
) -> Result<()>
where
    H: PaxkvSyncHandler + Send + Sync + 'static,
{
    limits.check()?;
    let processor = Arc::new(PaxkvSyncProcessor::new(handler));
    serve_counted(listener, processor, limits, connections_open, shutdown).await
}

/// What a server serves: the processor of each method. A processor serves every method
/// it is given; [`KvAndConfig`] serves both services of the IDL on one port.
pub trait Services: Send + Sync + 'static {
    fn processor(&self, method: &str) -> &dyn TProcessor;
}

impl<P: TProcessor + Send + Sync + 'static> Services for P {
    fn processor(&self, _method: &str) -> &dyn TProcessor {
        self
    }
}

/// The methods of the `Confman` service (the IDL's names); every other method is
/// `Paxkv`'s. A test checks this list against the IDL.
pub const CONFMAN_METHODS: &[&str] = &[
    "authenticate",
    "whoami",
    "createPrincipal",
    "listPrincipals",
    "disablePrincipal",
    "createToken",
    "listTokens",
    "revokeToken",
    "grantRole",
    "revokeRole",
    "grantKv",
    "revokeKv",
    "addToGroup",
    "removeFromGroup",
    "createNamespace",
    "updateNamespace",
    "describeNamespace",
    "listNamespaces",
    "deleteNamespace",
    "getEntry",
    "listEntries",
    "entryHistory",
    "diffEntry",
    "createChange",
    "editChange",
    "getChange",
    "listChanges",
    "submitChange",
    "approveChange",
    "rejectChange",
    "abandonChange",
    "rebaseChange",
    "publishChange",
    "revertChange",
    "queryAudit",
    "importHistory",
    "watchConfig",
];

/// Both services on one port, told apart by method name.
pub struct KvAndConfig<K: PaxkvSyncHandler, C: gen::ConfmanSyncHandler> {
    pub kv: PaxkvSyncProcessor<K>,
    pub config: gen::ConfmanSyncProcessor<C>,
}

impl<K, C> Services for KvAndConfig<K, C>
where
    K: PaxkvSyncHandler + Send + Sync + 'static,
    C: gen::ConfmanSyncHandler + Send + Sync + 'static,
{
    fn processor(&self, method: &str) -> &dyn TProcessor {
        match CONFMAN_METHODS.contains(&method) {
            true => &self.config,
            false => &self.kv,
        }
    }
}

/// Serves `services` on `listener` like [`run_counted`].
pub async fn serve_counted<S: Services>(
    listener: TcpListener,
    processor: Arc<S>,
    limits: ServerLimits,
    connections_open: IntGauge,
    shutdown: impl Future,
) -> Result<()> {
    limits.check()?;
    let (notify_shutdown, _) = broadcast::channel(1);
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel(1);
    let mut server = Listener {
        listener,
        processor,
        limits,
        connections: Arc::new(Semaphore::new(limits.connections_max)),
        requests_inflight: Arc::new(Semaphore::new(limits.requests_inflight_max)),
        connections_open,
        notify_shutdown,
        shutdown_complete_tx,
    };
    let result = tokio::select! {
        result = server.run() => result,
        _ = shutdown => {
            info!("shutting down: no new connections, finishing calls in flight");
            Ok(())
        }
    };
    let Listener {
        listener,
        notify_shutdown,
        shutdown_complete_tx,
        ..
    } = server;
    // Close the socket now, so clients arriving during the drain are refused rather than
    // left waiting in the backlog.
    drop(listener);
    drop(notify_shutdown);
    drop(shutdown_complete_tx);
    // Resolves once every connection task has dropped its sender.
    let _ = shutdown_complete_rx.recv().await;
    info!("shut down");
    result
}

struct Listener<P> {
    listener: TcpListener,
    processor: Arc<P>,
    limits: ServerLimits,
    connections: Arc<Semaphore>,
    requests_inflight: Arc<Semaphore>,
    connections_open: IntGauge,
    notify_shutdown: broadcast::Sender<()>,
    shutdown_complete_tx: mpsc::Sender<()>,
}

impl<P> Listener<P>
where
    P: Services,
{
    /// Accepts connections until accepting fails for good. Only returns on error.
    async fn run(&mut self) -> Result<()> {
        info!(address = ?self.listener.local_addr().ok(), "serving the Thrift API");
        loop {
            // Wait for a connection slot before accepting, so a full server leaves new
            // clients in the kernel's backlog instead of accepting and dropping them.
            let permit = Arc::clone(&self.connections)
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed");
            let (socket, peer) = self.accept().await?;
            let open = GaugeGuard::new(&self.connections_open);
            // Replies are written whole; Nagle would only delay them.
            if let Err(error) = socket.set_nodelay(true) {
                debug!(%peer, %error, "set_nodelay failed");
            }
            let mut handler = ConnectionHandler {
                connection: Connection::new(socket, self.limits.frame_bytes_max),
                processor: Arc::clone(&self.processor),
                requests_inflight: Arc::clone(&self.requests_inflight),
                frame_bytes_max: self.limits.frame_bytes_max,
                token: None,
                shutdown: Shutdown::new(self.notify_shutdown.subscribe()),
                _shutdown_complete: self.shutdown_complete_tx.clone(),
            };
            tokio::spawn(async move {
                if let Err(error) = handler.run().await {
                    log_connection_error(peer, &error);
                }
                drop(open);
                drop(permit);
            });
        }
    }

    /// Accepts one connection, backing off on errors (for example running out of file
    /// descriptors) in the hope they pass.
    async fn accept(&mut self) -> Result<(TcpStream, SocketAddr)> {
        let mut backoff = Duration::from_secs(1);
        let mut retries = 0;
        loop {
            match self.listener.accept().await {
                Ok(accepted) => return Ok(accepted),
                // One client gave up before we accepted it: nothing wrong with the listener.
                Err(error) if is_per_connection(&error) => {
                    debug!(%error, "a connection was lost before accept");
                }
                Err(error) if retries < ACCEPT_RETRIES_MAX => {
                    warn!(%error, ?backoff, "accept failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    retries += 1;
                }
                Err(error) => {
                    error!(%error, "accept failed; giving up");
                    return Err(error.into());
                }
            }
        }
    }
}

fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset};
    matches!(error.kind(), ConnectionAborted | ConnectionReset)
}

/// A peer that broke the protocol is worth a warning; one that hung up is not.
fn log_connection_error(peer: SocketAddr, error: &Error) {
    match error {
        Error::Io(error) => debug!(%peer, %error, "connection closed"),
        _ => warn!(%peer, %error, "closing connection"),
    }
}

struct ConnectionHandler<P, S> {
    connection: Connection<S>,
    processor: Arc<P>,
    requests_inflight: Arc<Semaphore>,
    frame_bytes_max: u32,
    /// The token this connection authenticated with (`authenticate`).
    token: Option<String>,
    shutdown: Shutdown,
    /// Never used: dropping it tells `run` this connection is done.
    _shutdown_complete: mpsc::Sender<()>,
}

impl<P, S> ConnectionHandler<P, S>
where
    P: Services,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// Serves calls one at a time until the peer hangs up, breaks the protocol, or the server
    /// shuts down. A call already read is always answered before shutdown closes it.
    async fn run(&mut self) -> Result<()> {
        while !self.shutdown.is_shutdown() {
            let frame = tokio::select! {
                // Shutdown first, so a pipelined call is not started after shutdown began.
                biased;
                _ = self.shutdown.recv() => return Ok(()),
                frame = self.connection.read_frame() => frame?,
            };
            let Some(frame) = frame else {
                return Ok(());
            };
            if let Some(reply) = self.handle_frame(frame).await? {
                self.connection.write_frame(&reply).await?;
            }
        }
        Ok(())
    }

    /// Runs the call on the blocking pool (the handler may block on the replicated store),
    /// once one of the `requests_inflight_max` slots is free.
    async fn handle_frame(&mut self, frame: Frame) -> Result<Option<Vec<u8>>> {
        let permit = Arc::clone(&self.requests_inflight)
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed");
        let processor = Arc::clone(&self.processor);
        let frame_bytes_max = self.frame_bytes_max;
        let token = self.token.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let method = peek_method(&frame.body, frame.protocol).unwrap_or_default();
            let processor = processor.processor(&method);
            session::run_with(token, || {
                process_frame(processor, frame.body, frame.protocol, frame_bytes_max)
            })
        });
        match task.await {
            Ok((result, token)) => {
                self.token = token;
                result
            }
            Err(join_error) => Err(Error::HandlerPanicked(join_error.to_string())),
        }
    }
}

/// The method a call frame names, read from its message header alone (never allocating
/// what a hostile length claims: the name must lie within the frame).
fn peek_method(body: &[u8], protocol: Protocol) -> Option<String> {
    let (length, at) = match protocol {
        // Strict binary: version and type (4 bytes), name length (i32, big-endian), name.
        Protocol::Binary => {
            let length = i32::from_be_bytes(body.get(4..8)?.try_into().ok()?);
            (usize::try_from(length).ok()?, 8)
        }
        // Compact: protocol id, version and type, sequence id (varint), name length
        // (varint), name.
        Protocol::Compact => {
            let mut at = 2;
            let mut varint = || -> Option<u64> {
                let mut value = 0u64;
                for shift in (0..64).step_by(7) {
                    let byte = *body.get(at)?;
                    at += 1;
                    value |= u64::from(byte & 0x7F) << shift;
                    if byte & 0x80 == 0 {
                        return Some(value);
                    }
                }
                None
            };
            varint()?;
            let length = usize::try_from(varint()?).ok()?;
            (length, at)
        }
    };
    let name = body.get(at..at.checked_add(length)?)?;
    String::from_utf8(name.to_vec()).ok()
}

/// Listens for the server's shutdown signal: the broadcast sender being dropped.
struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    fn new(notify: broadcast::Receiver<()>) -> Self {
        Self {
            is_shutdown: false,
            notify,
        }
    }

    fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // Nothing is ever sent: the only outcome is `Closed`, when the sender is dropped.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}

/// Lets `run` take the handler as an `Arc` (the generated processor owns its handler, and a
/// caller usually wants to keep a reference to its store too).
impl<H: PaxkvSyncHandler + ?Sized> PaxkvSyncHandler for Arc<H> {
    fn handle_get(&self, request: GetRequest) -> thrift::Result<GetResult> {
        (**self).handle_get(request)
    }
    fn handle_get_range(&self, request: GetRangeRequest) -> thrift::Result<RangeResult> {
        (**self).handle_get_range(request)
    }
    fn handle_put(&self, request: PutRequest) -> thrift::Result<i64> {
        (**self).handle_put(request)
    }
    fn handle_put_document(
        &self,
        request: gen::PutDocumentRequest,
    ) -> thrift::Result<gen::DocumentWriteResult> {
        (**self).handle_put_document(request)
    }
    fn handle_patch_document(
        &self,
        request: gen::PatchDocumentRequest,
    ) -> thrift::Result<gen::DocumentWriteResult> {
        (**self).handle_patch_document(request)
    }
    fn handle_get_document(
        &self,
        request: gen::GetDocumentRequest,
    ) -> thrift::Result<gen::DocumentResult> {
        (**self).handle_get_document(request)
    }
    fn handle_upload_chunk(
        &self,
        request: gen::UploadChunkRequest,
    ) -> thrift::Result<gen::UploadChunkResult> {
        (**self).handle_upload_chunk(request)
    }
    fn handle_commit_uploads(
        &self,
        request: gen::CommitUploadsRequest,
    ) -> thrift::Result<gen::CommitUploadsResult> {
        (**self).handle_commit_uploads(request)
    }
    fn handle_abort_upload(&self, request: gen::AbortUploadRequest) -> thrift::Result<bool> {
        (**self).handle_abort_upload(request)
    }
    fn handle_get_value_range(
        &self,
        request: gen::GetValueRangeRequest,
    ) -> thrift::Result<gen::ValueRangeResult> {
        (**self).handle_get_value_range(request)
    }
    fn handle_delete_key(&self, request: DeleteRequest) -> thrift::Result<i64> {
        (**self).handle_delete_key(request)
    }
    fn handle_delete_range(&self, request: DeleteRangeRequest) -> thrift::Result<i64> {
        (**self).handle_delete_range(request)
    }
    fn handle_get_read_version(&self) -> thrift::Result<i64> {
        (**self).handle_get_read_version()
    }
    fn handle_commit(&self, request: CommitRequest) -> thrift::Result<CommitResult> {
        (**self).handle_commit(request)
    }
    fn handle_txn(&self, request: TxnRequest) -> thrift::Result<TxnResult> {
        (**self).handle_txn(request)
    }
    fn handle_watch(&self, request: WatchRequest) -> thrift::Result<WatchResult> {
        (**self).handle_watch(request)
    }
    fn handle_status(&self) -> thrift::Result<Status> {
        (**self).handle_status()
    }
    fn handle_admin_snapshot(&self) -> thrift::Result<SnapshotInfo> {
        (**self).handle_admin_snapshot()
    }
    fn handle_read_snapshot(&self, request: ReadSnapshotRequest) -> thrift::Result<SnapshotChunk> {
        (**self).handle_read_snapshot(request)
    }
    fn handle_admin_member_list(&self) -> thrift::Result<Membership> {
        (**self).handle_admin_member_list()
    }
    fn handle_admin_member_add(&self, request: MemberAddRequest) -> thrift::Result<Membership> {
        (**self).handle_admin_member_add(request)
    }
    fn handle_admin_member_promote(&self, id: i32) -> thrift::Result<Membership> {
        (**self).handle_admin_member_promote(id)
    }
    fn handle_admin_member_remove(&self, id: i32) -> thrift::Result<Membership> {
        (**self).handle_admin_member_remove(id)
    }
    fn handle_admin_transfer_leader(&self, id: i32) -> thrift::Result<Membership> {
        (**self).handle_admin_transfer_leader(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confman_methods_are_the_idls() {
        let idl = include_str!("../../thrift/paxkv.thrift");
        let service = idl
            .split("service Confman {")
            .nth(1)
            .expect("the Confman service");
        let mut methods = Vec::new();
        for line in service.lines() {
            let line = line.trim();
            let Some(open) = line.find('(') else { continue };
            if line.starts_with("throws") || line.starts_with("//") || line.is_empty() {
                continue;
            }
            let name = line[..open].split_whitespace().last().unwrap_or_default();
            methods.push(name.to_string());
        }
        assert_eq!(methods, CONFMAN_METHODS);
        let paxkv = idl.split("service Paxkv {").nth(1).unwrap();
        let paxkv = paxkv.split("service Confman").next().unwrap();
        for method in CONFMAN_METHODS {
            assert!(
                !paxkv.contains(&format!(" {method}(")),
                "{method} is in both services"
            );
        }
    }

    #[test]
    fn the_method_name_is_read_from_the_header_without_trusting_its_length() {
        let mut binary = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 3];
        binary.extend_from_slice(b"get");
        assert_eq!(
            peek_method(&binary, Protocol::Binary).as_deref(),
            Some("get")
        );
        let huge = [0x80, 0x01, 0x00, 0x01, 0x7f, 0xff, 0xff, 0xff, b'g'];
        assert_eq!(peek_method(&huge, Protocol::Binary), None);
        let compact = [0x82, 0x21, 0x05, 0x04, b'p', b'u', b't', b's'];
        assert_eq!(
            peek_method(&compact, Protocol::Compact).as_deref(),
            Some("puts")
        );
        assert_eq!(peek_method(&[0x82], Protocol::Compact), None);
    }

    #[test]
    fn default_limits_are_the_documented_ones_and_valid() {
        let limits = ServerLimits::default();
        assert_eq!(limits.connections_max, 10_000);
        assert_eq!(limits.frame_bytes_max, 268_435_456);
        assert_eq!(limits.requests_inflight_max, 512);
        limits.check().unwrap();
    }

    #[test]
    fn zero_limits_are_rejected() {
        let zero_connections = ServerLimits {
            connections_max: 0,
            ..ServerLimits::default()
        };
        let zero_frame = ServerLimits {
            frame_bytes_max: 0,
            ..ServerLimits::default()
        };
        let zero_inflight = ServerLimits {
            requests_inflight_max: 0,
            ..ServerLimits::default()
        };
        for (limits, name) in [
            (zero_connections, "connections_max"),
            (zero_frame, "frame_bytes_max"),
            (zero_inflight, "requests_inflight_max"),
        ] {
            match limits.check() {
                Err(Error::LimitInvalid { limit, .. }) => assert_eq!(limit, name),
                other => panic!("{name}: expected LimitInvalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn frame_bytes_max_above_i32_max_is_rejected() {
        let limits = ServerLimits {
            frame_bytes_max: u32::MAX,
            ..ServerLimits::default()
        };
        assert!(matches!(limits.check(), Err(Error::LimitInvalid { .. })));
    }
}
