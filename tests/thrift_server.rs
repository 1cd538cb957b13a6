//! The Thrift server over real sockets on 127.0.0.1, with an in-memory test handler standing
//! in for the replicated store: round trips in both protocols, typed exceptions, hostile
//! frames (absurd lengths, garbage, absurd container sizes), unknown methods, many
//! connections at once, and graceful shutdown.
//!
//! A counting global allocator records the largest single allocation, so "rejected without
//! allocating" is checked, not assumed.
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    CommitRequest, CommitResult, DeleteRangeRequest, DeleteRequest, ErrorCode, GetRangeRequest,
    GetRequest, GetResult, InternalError, InvalidArgument, KeyValue, LimitExceeded,
    MemberAddRequest, Membership, PutRequest, RangeResult, ReadSnapshotRequest, SnapshotChunk,
    SnapshotGone, SnapshotInfo, Status, TxnRequest, TxnResult, WatchRequest, WatchResult,
};
use paxkv::api::{
    bind, connect, run, Client, PaxkvSyncHandler, Protocol, ServerLimits, TPaxkvSyncClient,
};
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TFieldIdentifier, TInputProtocol, TListIdentifier, TMessageIdentifier, TMessageType,
    TOutputProtocol, TStructIdentifier, TType,
};
use thrift::ApplicationErrorKind;

// ---------------------------------------------------------------------------------------
// Allocation tracking.

struct TrackingAllocator;

static LARGEST_ALLOCATION_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only records sizes.
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION_BYTES.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(pointer, layout, new_size)
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout)
    }
}

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

/// No test here sends more than a few KiB, so any allocation this large came from trusting a
/// size on the wire.
const ALLOCATION_BYTES_SUSPICIOUS: usize = 64 * 1024 * 1024;

fn assert_no_huge_allocation() {
    let largest = LARGEST_ALLOCATION_BYTES.load(Ordering::Relaxed);
    assert!(
        largest < ALLOCATION_BYTES_SUSPICIOUS,
        "largest allocation was {largest} bytes"
    );
}

// ---------------------------------------------------------------------------------------
// The test handler: an in-memory map standing in for the replicated store.

/// Keys longer than this get `LimitExceeded`, so the typed-exception path can be tested.
const KEY_BYTES_MAX: usize = 16;

/// A put of this key waits at the gate (if one is set), so shutdown can be tested with a
/// call in flight.
const SLOW_KEY: &[u8] = b"slow";

/// A put of this key panics in the handler.
const PANIC_KEY: &[u8] = b"panic";

#[derive(Default)]
struct MemoryHandler {
    state: Mutex<MemoryState>,
    slow_gate: Mutex<Option<SlowGate>>,
}

#[derive(Default)]
struct MemoryState {
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    version: i64,
}

struct SlowGate {
    started: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

fn user_error(error: impl std::error::Error + Send + Sync + 'static) -> thrift::Error {
    thrift::Error::User(Box::new(error))
}

fn unsupported<T>(call: &str) -> thrift::Result<T> {
    let message = format!("{call} is not supported by the test handler");
    Err(user_error(InternalError::new(ErrorCode::INTERNAL, message)))
}

fn check_key(key: &[u8]) -> thrift::Result<()> {
    if key.is_empty() {
        let message = "key is empty".to_owned();
        return Err(user_error(InvalidArgument::new(
            ErrorCode::INVALID_ARGUMENT,
            message,
            None,
        )));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(user_error(LimitExceeded::new(
            ErrorCode::LIMIT_EXCEEDED,
            "key_bytes_max".to_owned(),
            key.len() as i64,
            KEY_BYTES_MAX as i64,
            format!("key of {} bytes exceeds key_bytes_max", key.len()),
        )));
    }
    Ok(())
}

impl MemoryHandler {
    fn wait_if_slow(&self, key: &[u8]) {
        if key != SLOW_KEY {
            return;
        }
        let gate = self.slow_gate.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.started.send(()).unwrap();
            gate.release.recv().unwrap();
        }
    }

    fn puts(&self) -> i64 {
        self.state.lock().unwrap().version
    }
}

impl PaxkvSyncHandler for MemoryHandler {
    fn handle_get(&self, request: GetRequest) -> thrift::Result<GetResult> {
        check_key(&request.key)?;
        let state = self.state.lock().unwrap();
        let kv = state.kvs.get(&request.key).cloned();
        Ok(GetResult::new(kv, state.version))
    }
    fn handle_get_range(&self, _: GetRangeRequest) -> thrift::Result<RangeResult> {
        unsupported("getRange")
    }
    fn handle_put(&self, request: PutRequest) -> thrift::Result<i64> {
        check_key(&request.key)?;
        assert_ne!(request.key, PANIC_KEY, "the test handler panics on request");
        self.wait_if_slow(&request.key);
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        let version = state.version;
        let create_version = match state.kvs.get(&request.key) {
            Some(kv) => kv.create_version,
            None => version,
        };
        let kv = KeyValue::new(request.key.clone(), request.value, version, create_version);
        state.kvs.insert(request.key, kv);
        Ok(version)
    }
    fn handle_delete_key(&self, _: DeleteRequest) -> thrift::Result<i64> {
        unsupported("deleteKey")
    }
    fn handle_put_document(
        &self,
        _: paxkv::api::gen::paxkv::PutDocumentRequest,
    ) -> thrift::Result<paxkv::api::gen::paxkv::DocumentWriteResult> {
        unsupported("putDocument")
    }
    fn handle_patch_document(
        &self,
        _: paxkv::api::gen::paxkv::PatchDocumentRequest,
    ) -> thrift::Result<paxkv::api::gen::paxkv::DocumentWriteResult> {
        unsupported("patchDocument")
    }
    fn handle_get_document(
        &self,
        _: paxkv::api::gen::paxkv::GetDocumentRequest,
    ) -> thrift::Result<paxkv::api::gen::paxkv::DocumentResult> {
        unsupported("getDocument")
    }
    fn handle_upload_chunk(
        &self,
        _: paxkv::api::gen::paxkv::UploadChunkRequest,
    ) -> thrift::Result<paxkv::api::gen::paxkv::UploadChunkResult> {
        unsupported("uploadChunk")
    }
    fn handle_commit_uploads(
        &self,
        _: paxkv::api::gen::paxkv::CommitUploadsRequest,
    ) -> thrift::Result<paxkv::api::gen::paxkv::CommitUploadsResult> {
        unsupported("commitUploads")
    }
    fn handle_abort_upload(
        &self,
        _: paxkv::api::gen::paxkv::AbortUploadRequest,
    ) -> thrift::Result<bool> {
        unsupported("abortUpload")
    }
    fn handle_get_value_range(
        &self,
        _: paxkv::api::gen::paxkv::GetValueRangeRequest,
    ) -> thrift::Result<paxkv::api::gen::paxkv::ValueRangeResult> {
        unsupported("getValueRange")
    }
    fn handle_delete_range(&self, _: DeleteRangeRequest) -> thrift::Result<i64> {
        unsupported("deleteRange")
    }
    fn handle_get_read_version(&self) -> thrift::Result<i64> {
        Ok(self.state.lock().unwrap().version)
    }
    fn handle_commit(&self, _: CommitRequest) -> thrift::Result<CommitResult> {
        unsupported("commit")
    }
    fn handle_txn(&self, _: TxnRequest) -> thrift::Result<TxnResult> {
        unsupported("txn")
    }
    fn handle_watch(&self, _: WatchRequest) -> thrift::Result<WatchResult> {
        unsupported("watch")
    }
    fn handle_status(&self) -> thrift::Result<Status> {
        unsupported("status")
    }
    fn handle_admin_snapshot(&self) -> thrift::Result<SnapshotInfo> {
        unsupported("adminSnapshot")
    }
    fn handle_admin_member_list(&self) -> thrift::Result<Membership> {
        unsupported("adminMemberList")
    }
    fn handle_admin_member_add(&self, _: MemberAddRequest) -> thrift::Result<Membership> {
        unsupported("adminMemberAdd")
    }
    fn handle_admin_member_promote(&self, _: i32) -> thrift::Result<Membership> {
        unsupported("adminMemberPromote")
    }
    fn handle_admin_member_remove(&self, _: i32) -> thrift::Result<Membership> {
        unsupported("adminMemberRemove")
    }
    fn handle_admin_transfer_leader(&self, _: i32) -> thrift::Result<Membership> {
        unsupported("adminTransferLeader")
    }
    /// Serves SNAPSHOT_BYTES as snapshot SNAPSHOT_SLOT; any other slot is gone.
    fn handle_read_snapshot(&self, request: ReadSnapshotRequest) -> thrift::Result<SnapshotChunk> {
        if request.slot != SNAPSHOT_SLOT {
            let message = format!("snapshot {} is gone", request.slot);
            let gone = SnapshotGone::new(ErrorCode::SNAPSHOT_GONE, request.slot, message);
            return Err(user_error(gone));
        }
        let start = usize::try_from(request.offset)
            .unwrap()
            .min(SNAPSHOT_BYTES.len());
        let end = (start + usize::try_from(request.max_bytes).unwrap()).min(SNAPSHOT_BYTES.len());
        let total_bytes = SNAPSHOT_BYTES.len() as i64;
        Ok(SnapshotChunk::new(
            SNAPSHOT_BYTES[start..end].to_vec(),
            total_bytes,
        ))
    }
}

/// The one snapshot the test handler holds.
const SNAPSHOT_SLOT: i64 = 9;
const SNAPSHOT_BYTES: &[u8] = b"a stand-in snapshot file, read in chunks";

// ---------------------------------------------------------------------------------------
// A server on its own runtime, on a free port.

/// Generous bound on anything a test waits for, so a hang fails instead of stalling CI.
const WAIT_MAX: Duration = Duration::from_secs(30);

struct TestServer {
    address: SocketAddr,
    handler: Arc<MemoryHandler>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<paxkv::api::Result<()>>,
}

impl TestServer {
    fn start() -> TestServer {
        let handler = Arc::new(MemoryHandler::default());
        let (address_tx, address_rx) = mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let server_handler = Arc::clone(&handler);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let result = runtime.block_on(async move {
                let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
                address_tx.send(listener.local_addr().unwrap()).unwrap();
                let shutdown = async {
                    let _ = shutdown_rx.await;
                };
                run(listener, server_handler, ServerLimits::default(), shutdown).await
            });
            let _ = done_tx.send(result);
        });
        TestServer {
            address: address_rx.recv_timeout(WAIT_MAX).unwrap(),
            handler,
            shutdown: Some(shutdown_tx),
            done: done_rx,
        }
    }

    fn client(&self, protocol: Protocol) -> Client {
        connect(self.address, protocol).unwrap()
    }

    fn raw(&self) -> TcpStream {
        let stream = TcpStream::connect(self.address).unwrap();
        stream.set_read_timeout(Some(WAIT_MAX)).unwrap();
        // The thrift crate's framed writer sends the length and the body in two writes;
        // with Nagle on, the second waits for a delayed ACK.
        stream.set_nodelay(true).unwrap();
        stream
    }

    fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Shuts down and returns what `run` returned.
    fn stop(mut self) -> paxkv::api::Result<()> {
        self.begin_shutdown();
        self.done
            .recv_timeout(WAIT_MAX)
            .expect("run returns after shutdown")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

// ---------------------------------------------------------------------------------------
// Hand-built frames, for what a well-behaved client never sends.

fn output_protocol<'a>(protocol: Protocol, body: &'a mut Vec<u8>) -> Box<dyn TOutputProtocol + 'a> {
    match protocol {
        Protocol::Binary => Box::new(TBinaryOutputProtocol::new(body, true)),
        Protocol::Compact => Box::new(TCompactOutputProtocol::new(body)),
    }
}

/// A framed call of `method` whose argument struct is written by `write_arguments`.
fn call_frame(
    protocol: Protocol,
    method: &str,
    write_arguments: impl FnOnce(&mut dyn TOutputProtocol),
) -> Vec<u8> {
    let mut body = Vec::new();
    {
        let mut output = output_protocol(protocol, &mut body);
        let call = TMessageIdentifier::new(method, TMessageType::Call, 7);
        output.write_message_begin(&call).unwrap();
        output
            .write_struct_begin(&TStructIdentifier::new("args"))
            .unwrap();
        write_arguments(&mut *output);
        output.write_field_stop().unwrap();
        output.write_struct_end().unwrap();
        output.write_message_end().unwrap();
    }
    framed(&body)
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Reads one reply frame, or `None` if the server closed the connection instead.
fn read_reply(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if is_closed(&error) => return None,
        Err(error) => panic!("reading a reply failed: {error}"),
    }
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).unwrap();
    Some(body)
}

fn is_closed(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        error.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted
    )
}

/// Sends `bytes` and asserts the server closes the connection without replying.
fn assert_closed_without_reply(server: &TestServer, bytes: &[u8]) {
    let mut stream = server.raw();
    stream.write_all(bytes).unwrap();
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => {}
        Err(error) if is_closed(&error) => {}
        Err(error) => panic!("expected the server to close the connection: {error}"),
    }
    assert!(received.is_empty(), "expected no reply, got {received:?}");
}

fn put(client: &mut Client, key: &[u8], value: &[u8]) -> thrift::Result<i64> {
    client.put(PutRequest::new(key.to_vec(), value.to_vec(), None))
}

fn get_value(client: &mut Client, key: &[u8]) -> Option<Vec<u8>> {
    let result = client.get(GetRequest::new(key.to_vec(), None)).unwrap();
    result.kv.map(|kv| kv.value)
}

/// Asserts that `client` (possibly opened before something went wrong) still works.
fn assert_serves(client: &mut Client, key: &[u8]) {
    put(client, key, b"still here").unwrap();
    assert_eq!(get_value(client, key).as_deref(), Some(&b"still here"[..]));
}

// ---------------------------------------------------------------------------------------
// Tests.

#[test]
fn put_then_get_round_trips_in_binary_and_compact() {
    let server = TestServer::start();
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let mut client = server.client(protocol);
        let key = format!("{protocol:?}").into_bytes();
        let version = put(&mut client, &key, b"v1").unwrap();
        let result = client.get(GetRequest::new(key.clone(), None)).unwrap();
        let kv = result.kv.expect("the key was just put");
        assert_eq!((kv.key, kv.value), (key.clone(), b"v1".to_vec()));
        assert_eq!((kv.mod_version, kv.create_version), (version, version));
        assert_eq!(result.read_version, version);
        assert_eq!(get_value(&mut client, b"absent"), None);
    }
    server.stop().unwrap();
}

#[test]
fn typed_exceptions_arrive_with_their_fields() {
    let server = TestServer::start();
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let mut client = server.client(protocol);
        let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
        match put(&mut client, &long_key, b"v") {
            Err(thrift::Error::User(error)) => {
                let error = error
                    .downcast_ref::<LimitExceeded>()
                    .expect("LimitExceeded");
                assert_eq!(error.code, ErrorCode::LIMIT_EXCEEDED);
                assert_eq!(error.limit, "key_bytes_max");
                assert_eq!((error.actual, error.maximum), (17, 16));
                assert!(error.message.contains("17 bytes"), "{}", error.message);
            }
            other => panic!("{protocol:?}: expected LimitExceeded, got {other:?}"),
        }
        match client.get(GetRequest::new(Vec::new(), None)) {
            Err(thrift::Error::User(error)) => {
                let error = error
                    .downcast_ref::<InvalidArgument>()
                    .expect("InvalidArgument");
                assert_eq!(error.code, ErrorCode::INVALID_ARGUMENT);
            }
            other => panic!("{protocol:?}: expected InvalidArgument, got {other:?}"),
        }
        // The connection survives a typed exception.
        assert_serves(&mut client, b"after-exception");
    }
    server.stop().unwrap();
}

#[test]
fn snapshot_chunks_and_snapshot_gone_cross_the_wire_in_both_protocols() {
    let server = TestServer::start();
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let mut client = server.client(protocol);
        let mut read = Vec::new();
        loop {
            let request = ReadSnapshotRequest::new(SNAPSHOT_SLOT, read.len() as i64, 7);
            let chunk = client.read_snapshot(request).unwrap();
            assert_eq!(chunk.total_bytes, SNAPSHOT_BYTES.len() as i64);
            if chunk.data.is_empty() {
                break;
            }
            read.extend_from_slice(&chunk.data);
        }
        assert_eq!(read, SNAPSHOT_BYTES);
        match client.read_snapshot(ReadSnapshotRequest::new(SNAPSHOT_SLOT + 1, 0, 7)) {
            Err(thrift::Error::User(error)) => {
                let gone = error.downcast_ref::<SnapshotGone>().expect("SnapshotGone");
                assert_eq!(gone.code, ErrorCode::SNAPSHOT_GONE);
                assert_eq!(gone.slot, SNAPSHOT_SLOT + 1);
            }
            other => panic!("{protocol:?}: expected SnapshotGone, got {other:?}"),
        }
        assert_serves(&mut client, b"after-gone");
    }
    server.stop().unwrap();
}

#[test]
fn absurd_frame_lengths_close_only_that_connection_without_allocating() {
    let server = TestServer::start();
    let mut bystander = server.client(Protocol::Binary);
    // i32::MAX (over the 256 MiB default), negative, and zero.
    for header in [[0x7f, 0xff, 0xff, 0xff], [0x80, 0, 0, 0], [0, 0, 0, 0]] {
        assert_closed_without_reply(&server, &header);
    }
    assert_no_huge_allocation();
    assert_serves(&mut bystander, b"bystander");
    assert_serves(&mut server.client(Protocol::Compact), b"newcomer");
    server.stop().unwrap();
}

#[test]
fn handler_panic_closes_only_that_connection() {
    let server = TestServer::start();
    let mut bystander = server.client(Protocol::Binary);
    let mut client = server.client(Protocol::Binary);
    match put(&mut client, PANIC_KEY, b"v") {
        Err(thrift::Error::Transport(_)) => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
    assert_serves(&mut bystander, b"bystander");
    server.stop().unwrap();
}

#[test]
fn unknown_protocol_closes_the_connection() {
    let server = TestServer::start();
    // A non-strict binary message starts with the name length (0x00...), JSON with '['.
    assert_closed_without_reply(&server, &framed(&[0, 0, 0, 3, b'p', b'u', b't', 1]));
    assert_closed_without_reply(&server, &framed(b"[1,\"put\",1,7,{}]"));
    assert_serves(&mut server.client(Protocol::Binary), b"after-unknown");
    server.stop().unwrap();
}

/// A seeded xorshift, so a failure names its input.
fn random_bytes(seed: u64, count: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn malformed_frame_closes_that_connection_and_no_other() {
    let server = TestServer::start();
    let mut bystander = server.client(Protocol::Binary);
    for seed in 1..=16 {
        let mut body = vec![0x80, 0x01];
        body.extend(random_bytes(seed, 64));
        assert_closed_without_reply(&server, &framed(&body));
        assert_serves(&mut bystander, format!("bystander-{seed}").as_bytes());
    }
    assert_no_huge_allocation();
    server.stop().unwrap();
}

#[test]
fn garbage_arguments_never_take_the_server_down() {
    let server = TestServer::start();
    // A valid call header followed by random bytes: the frame either fails to decode (the
    // connection is closed) or happens to decode to a call that the generated processor
    // rejects with an exception (say, a field stop before the required argument).
    for seed in 1..=64 {
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let mut body = Vec::new();
            let call = TMessageIdentifier::new("put", TMessageType::Call, 7);
            output_protocol(protocol, &mut body)
                .write_message_begin(&call)
                .unwrap();
            body.extend(random_bytes(seed, 48));
            let mut stream = server.raw();
            stream.write_all(&framed(&body)).unwrap();
            if let Some(reply) = read_reply(&mut stream) {
                let mut input = input_protocol(protocol, &reply);
                let message_type = input.read_message_begin().unwrap().message_type;
                assert_eq!(message_type, TMessageType::Exception, "seed {seed}");
            }
        }
    }
    assert_no_huge_allocation();
    assert_serves(&mut server.client(Protocol::Compact), b"after-garbage");
    server.stop().unwrap();
}

fn input_protocol(protocol: Protocol, body: &[u8]) -> Box<dyn TInputProtocol + '_> {
    match protocol {
        Protocol::Binary => Box::new(TBinaryInputProtocol::new(body, true)),
        Protocol::Compact => Box::new(TCompactInputProtocol::new(body)),
    }
}

#[test]
fn unknown_method_gets_an_application_exception_and_the_connection_goes_on() {
    let server = TestServer::start();
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let mut stream = server.raw();
        stream
            .write_all(&call_frame(protocol, "frobnicate", |_| {}))
            .unwrap();
        let reply = read_reply(&mut stream).expect("an exception reply, not a close");
        let mut input = input_protocol(protocol, &reply);
        let identifier = input.read_message_begin().unwrap();
        assert_eq!(identifier.name, "frobnicate");
        assert_eq!(identifier.message_type, TMessageType::Exception);
        assert_eq!(identifier.sequence_number, 7);
        let error = thrift::Error::read_application_error_from_in_protocol(&mut *input).unwrap();
        assert_eq!(error.kind, ApplicationErrorKind::UnknownMethod);
        drop(input);
        // The same connection, now driven by the generated client.
        let mut client = client_on(stream, protocol);
        assert_serves(&mut client, format!("same-{protocol:?}").as_bytes());
    }
    server.stop().unwrap();
}

#[test]
fn missing_required_argument_gets_an_application_exception() {
    let server = TestServer::start();
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let mut stream = server.raw();
        // put() with an empty argument struct: well-formed, but `request` is required.
        stream
            .write_all(&call_frame(protocol, "put", |_| {}))
            .unwrap();
        let reply = read_reply(&mut stream).expect("an exception reply, not a close");
        let mut input = input_protocol(protocol, &reply);
        let identifier = input.read_message_begin().unwrap();
        assert_eq!(identifier.message_type, TMessageType::Exception);
        let error = thrift::Error::read_application_error_from_in_protocol(&mut *input).unwrap();
        assert!(error.message.contains("request"), "{}", error.message);
        drop(input);
        let mut client = client_on(stream, protocol);
        assert_serves(&mut client, format!("req-{protocol:?}").as_bytes());
    }
    server.stop().unwrap();
}

/// The generated client on an already open stream.
fn client_on(stream: TcpStream, protocol: Protocol) -> Client {
    paxkv::api::client_on(stream, protocol).unwrap()
}

#[test]
fn huge_claimed_sizes_in_a_small_frame_are_rejected_without_allocating() {
    let server = TestServer::start();
    let mut bystander = server.client(Protocol::Binary);
    for protocol in [Protocol::Binary, Protocol::Compact] {
        // commit(CommitRequest { read_version: 5, mutations: <list of 2^31-1 structs> })
        let huge_list = call_frame(protocol, "commit", |output| {
            let request = TFieldIdentifier::new("request", TType::Struct, 1);
            output.write_field_begin(&request).unwrap();
            output
                .write_struct_begin(&TStructIdentifier::new("CommitRequest"))
                .unwrap();
            output
                .write_field_begin(&TFieldIdentifier::new("read_version", TType::I64, 1))
                .unwrap();
            output.write_i64(5).unwrap();
            output.write_field_end().unwrap();
            output
                .write_field_begin(&TFieldIdentifier::new("mutations", TType::List, 2))
                .unwrap();
            output
                .write_list_begin(&TListIdentifier::new(TType::Struct, i32::MAX))
                .unwrap();
        });
        assert!(huge_list.len() < 64, "{} bytes", huge_list.len());
        assert_closed_without_reply(&server, &huge_list);
        // put(PutRequest { key: <binary claiming 2^31-1 bytes> })
        let huge_key = call_frame(protocol, "put", |output| {
            let request = TFieldIdentifier::new("request", TType::Struct, 1);
            output.write_field_begin(&request).unwrap();
            output
                .write_struct_begin(&TStructIdentifier::new("PutRequest"))
                .unwrap();
            output
                .write_field_begin(&TFieldIdentifier::new("key", TType::String, 1))
                .unwrap();
            output.write_i32(i32::MAX).unwrap();
        });
        assert_closed_without_reply(&server, &huge_key);
    }
    assert_no_huge_allocation();
    assert_serves(&mut bystander, b"bystander");
    server.stop().unwrap();
}

/// Connections open at once. Client and server share this process, so it needs twice this
/// many file descriptors (`ulimit -n` is 20,000 on the project's machines).
const CONCURRENT_CLIENTS: usize = 1_000;
const CLIENT_THREADS: usize = 4;

#[test]
fn many_concurrent_connections_are_served() {
    let server = TestServer::start();
    let address = server.address;
    // Every client connects, then all wait until all 1,000 are connected, then each makes
    // one call: the server holds them all open at once.
    let all_connected = Arc::new(Barrier::new(CLIENT_THREADS));
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|thread| {
            let all_connected = Arc::clone(&all_connected);
            std::thread::spawn(move || {
                let per_thread = CONCURRENT_CLIENTS / CLIENT_THREADS;
                let protocol = [Protocol::Binary, Protocol::Compact][thread % 2];
                let mut clients: Vec<Client> = (0..per_thread)
                    .map(|_| connect(address, protocol).unwrap())
                    .collect();
                all_connected.wait();
                for (index, client) in clients.iter_mut().enumerate() {
                    let key = format!("c{thread}-{index}").into_bytes();
                    put(client, &key, b"v").unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(server.handler.puts(), CONCURRENT_CLIENTS as i64);
    server.stop().unwrap();
}

#[test]
fn shutdown_finishes_the_call_in_flight_then_returns() {
    let mut server = TestServer::start();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    *server.handler.slow_gate.lock().unwrap() = Some(SlowGate {
        started: started_tx,
        release: release_rx,
    });
    let mut idle = server.client(Protocol::Binary);
    assert_serves(&mut idle, b"idle");
    let mut slow = server.client(Protocol::Compact);
    let in_flight = std::thread::spawn(move || put(&mut slow, SLOW_KEY, b"v"));
    started_rx.recv_timeout(WAIT_MAX).unwrap();

    server.begin_shutdown();
    wait_until_refused(server.address);
    // Draining: the call is held in the handler, so run cannot have returned yet.
    assert!(
        server.done.try_recv().is_err(),
        "run returned with a call in flight"
    );

    release_tx.send(()).unwrap();
    let version = in_flight
        .join()
        .unwrap()
        .expect("the call in flight gets its reply");
    assert_eq!(version, 2);
    server
        .done
        .recv_timeout(WAIT_MAX)
        .expect("run returns")
        .unwrap();
    // The idle connection was closed by shutdown.
    assert!(put(&mut idle, b"idle", b"late").is_err());
}

/// Waits until connecting to `address` is refused: the listener has been closed.
fn wait_until_refused(address: SocketAddr) {
    let poll = Duration::from_millis(10);
    for _ in 0..WAIT_MAX.as_millis() / poll.as_millis() {
        if TcpStream::connect(address).is_err() {
            return;
        }
        std::thread::sleep(poll);
    }
    panic!("{address} still accepts connections after shutdown began");
}
