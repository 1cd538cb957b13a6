//! Client threads. Each holds its own Thrift connection to one replica, its home (moving to
//! the next when the connection fails, and back home a while later), issues one call at a
//! time and records it in the history, until the run's deadline, a stop flag, or its
//! operation bound.
//!
//! Workloads:
//! - registers: read, write and compare-and-set on a few keys (`reg/N`), with values no
//!   other write uses, so the checker can tell writes apart;
//! - bank: transfers between accounts (`bank/N`) in optimistic transactions (snapshot read
//!   at a read version, commit with a read conflict range over all accounts), and reads of
//!   all accounts in one snapshot;
//! - set: adds of distinct elements (one key each under `set/`) and reads of the whole set;
//! - watch: long polls on the register range, resuming from the last `next_version`;
//! - documents: adds of distinct elements to the `items` arrays of JSON documents under
//!   `doc/` (the clients share two at a time), as RFC 6902 patches or as whole documents
//!   written back at the version read (which the server logs as deltas) or as uploads of
//!   small chunks committed at the version read, and reads of every document in one
//!   snapshot;
//! - publish: change sets of the configuration service, each adding one entry to every
//!   namespace of `/chaos` and published in one transaction, and reads of all of them at
//!   one version (checked as a set, and that no read shows a change set in part).
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    AlreadyExists, CreateChangeRequest, CreateNamespaceRequest, Edit, EditOp, ListEntriesRequest,
    PublishRequest, TConfmanSyncClient,
};
use paxkv::api::gen::paxkv::{CommitUploadsRequest, UploadChunkRequest, UploadCommit};
use paxkv::api::gen::paxkv::{
    Compare, CompareOp, CompareTarget, DocumentError, GetDocumentRequest, GetRangeRequest,
    GetRequest, KeyRange, KeyValue, Mutation, MutationType, PatchDocumentRequest, PatchFormat,
    PutDocumentRequest, PutRequest, TxnRequest, WatchRequest,
};
use paxkv::api::{config_client_on, Client, ConfigClient, Protocol, TPaxkvSyncClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{classify, connect, Failure};
use crate::history::{Call, Clock, Recorder, Reply, WatchedEvent};

/// Register keys `reg/0` .. : few, so clients contend on each.
pub const REGISTER_KEYS: u32 = 3;
pub const REGISTER_START: &str = "reg/";
pub const REGISTER_END: &str = "reg0";
pub const ACCOUNTS: usize = 5;
pub const ACCOUNT_BALANCE_START: i64 = 100;
const BANK_START: &str = "bank/";
const BANK_END: &str = "bank0";
const TRANSFER_AMOUNT_MAX: i64 = 20;
const SET_START: &str = "set/";
const SET_END: &str = "set0";
/// One call in this many is a set read.
const SET_READ_ONE_IN: u32 = 100;
/// Pages of one set read, at most (the server caps a page).
const SET_READ_PAGES_MAX: usize = 10_000;
const DOC_START: &str = "doc/";
const DOC_END: &str = "doc0";
/// Each client's adds number 1, 2, ...; add `n` goes to document
/// `doc/<n / DOC_ADDS_PER_GENERATION>/<n % 2>`, so every client writes the same two
/// documents at a time (they contend) and documents stay small (a few KiB) however long
/// the run.
const DOC_ADDS_PER_GENERATION: u64 = 400;
/// One call in this many is a read of every document.
const DOC_READ_ONE_IN: u32 = 50;
/// One add in this many reads the document and writes it back whole.
const DOC_WHOLE_ONE_IN: u32 = 3;
/// One whole write in this many goes as an upload, in chunks of this many bytes (so that
/// even a small document travels in several).
const DOC_UPLOAD_ONE_IN: u32 = 2;
const DOC_UPLOAD_CHUNK_BYTES: usize = 512;
/// A watch long poll's server-side timeout.
const WATCH_POLL_MS: i32 = 500;
/// Pause after a call failed, when the server gave no hint.
const FAILURE_PAUSE: Duration = Duration::from_millis(50);
/// Pause after a failed connect, before trying the next replica.
const CONNECT_PAUSE: Duration = Duration::from_millis(100);
/// How long a client stays on another replica before it reconnects to its home. Without the
/// return, every kill moves the killed replica's clients on to the next one for good; after a
/// few kills all clients sit on one replica, and pausing it holds every call for the whole
/// pause (the call timeout outlasts it) while the other two serve no one.
pub const AWAY_FROM_HOME_MAX: Duration = Duration::from_secs(1);

/// What every client thread shares.
#[derive(Clone)]
pub struct Shared {
    pub endpoints: Vec<SocketAddr>,
    /// The configuration service's root token (the publish workload runs only with one).
    pub config_token: Option<String>,
    pub recorder: Recorder,
    /// Timeout of connecting, and of each call's reply.
    pub call_timeout: Duration,
    /// Clients stop issuing calls at this time since the run started.
    pub deadline: Duration,
    pub stop: Arc<AtomicBool>,
    /// Calls per client thread, at most.
    pub ops_per_client_max: u64,
}

impl Shared {
    fn done(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.recorder.clock().elapsed() >= self.deadline
    }
}

/// A connection to a home replica that moves to the next replica when it fails, and goes
/// back home after `away_max` on another, so the clients stay spread over the replicas.
pub struct Connection {
    endpoints: Vec<SocketAddr>,
    home: usize,
    next: usize,
    client: Option<Client>,
    timeout: Duration,
    away_max: Duration,
    /// Since when the open connection is to a replica other than home.
    away_since: Option<Clock>,
}

impl Connection {
    pub fn new(endpoints: Vec<SocketAddr>, home: usize, timeout: Duration) -> Connection {
        Connection::with_away_max(endpoints, home, timeout, AWAY_FROM_HOME_MAX)
    }

    pub fn with_away_max(
        endpoints: Vec<SocketAddr>,
        home: usize,
        timeout: Duration,
        away_max: Duration,
    ) -> Connection {
        let home = home % endpoints.len();
        Connection {
            endpoints,
            home,
            next: home,
            client: None,
            timeout,
            away_max,
            away_since: None,
        }
    }

    /// The replica `client` uses (or connects to next).
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoints[self.next % self.endpoints.len()]
    }

    /// The open client, connecting to the current replica if needed, or to home when it has
    /// been away long enough.
    pub fn client(&mut self) -> Option<&mut Client> {
        if self
            .away_since
            .is_some_and(|away| away.elapsed() >= self.away_max)
        {
            self.client = None;
            self.away_since = None;
            self.next = self.home;
        }
        if self.client.is_none() {
            match connect(self.endpoint(), self.timeout) {
                Ok(client) => {
                    self.client = Some(client);
                    let away = self.next % self.endpoints.len() != self.home;
                    self.away_since = away.then(Clock::start);
                }
                Err(_) => {
                    self.rotate();
                    thread::sleep(CONNECT_PAUSE);
                    return None;
                }
            }
        }
        self.client.as_mut()
    }

    /// Drops the connection; the next `client` connects to the next replica.
    pub fn rotate(&mut self) {
        self.client = None;
        self.away_since = None;
        self.next += 1;
    }
}

/// A workload's client: picks its next call, and executes one.
trait Workload: Send {
    fn next_call(&mut self, rng: &mut StdRng) -> Call;
    fn execute(&mut self, client: &mut Client, call: &Call) -> Result<Reply, CallError>;
    /// Learns from a completed call (for example the last value seen).
    fn on_reply(&mut self, _call: &Call, _reply: &Reply) {}
}

pub enum CallError {
    Thrift(thrift::Error),
    /// Decided by the client, with no effect (for example insufficient funds).
    Refused(String),
}

impl From<thrift::Error> for CallError {
    fn from(error: thrift::Error) -> CallError {
        CallError::Thrift(error)
    }
}

/// One client thread: `thread` numbers it among `threads`, for process ids and values.
pub struct ClientId {
    pub thread: u32,
    pub threads: u32,
}

fn run_client(shared: Shared, id: ClientId, seed: u64, mut workload: impl Workload) {
    let mut rng = StdRng::seed_from_u64(seed ^ u64::from(id.thread).wrapping_mul(0x9e37_79b9));
    let first = usize::try_from(id.thread).expect("u32 fits");
    let mut connection = Connection::new(shared.endpoints.clone(), first, shared.call_timeout);
    let mut process = u64::from(id.thread);
    let mut calls = 0;
    while !shared.done() && calls < shared.ops_per_client_max {
        let Some(client) = connection.client() else {
            continue;
        };
        let call = workload.next_call(&mut rng);
        calls += 1;
        shared.recorder.invoke(process, &call);
        match workload.execute(client, &call) {
            Ok(reply) => {
                workload.on_reply(&call, &reply);
                shared.recorder.ok(process, &call, reply);
            }
            Err(error) => {
                let failure = failure_of(error);
                record_failure(&shared, &mut process, &id, &call, &failure);
                if failure.reconnect {
                    connection.rotate();
                }
                thread::sleep(failure.pause.unwrap_or(FAILURE_PAUSE));
            }
        }
    }
}

pub fn failure_of(error: CallError) -> Failure {
    match error {
        CallError::Thrift(error) => classify(&error),
        CallError::Refused(why) => Failure::refused(why),
    }
}

/// Records a failed call; after an unknown outcome the thread continues as a new process,
/// since the old one's call may still be in flight.
fn record_failure(shared: &Shared, process: &mut u64, id: &ClientId, call: &Call, f: &Failure) {
    if f.definite {
        shared.recorder.fail(*process, call, f.message.clone());
    } else {
        shared.recorder.info(*process, call, f.message.clone());
        *process += u64::from(id.threads);
    }
}

/// Spawns one workload's client thread.
fn spawn(
    name: String,
    shared: &Shared,
    id: ClientId,
    seed: u64,
    workload: impl Workload + 'static,
) -> JoinHandle<()> {
    let shared = shared.clone();
    thread::Builder::new()
        .name(name)
        .spawn(move || run_client(shared, id, seed, workload))
        .expect("spawn a client thread")
}

// ---------------------------------------------------------------------------------------
// Registers.

pub fn register_key(n: u32) -> String {
    format!("{REGISTER_START}{n}")
}

pub struct Registers {
    thread: u32,
    counter: i64,
    /// The last value this client saw in each key.
    last_seen: Vec<Option<i64>>,
}

impl Registers {
    pub fn new(thread: u32) -> Registers {
        Registers {
            thread,
            counter: 0,
            last_seen: vec![None; REGISTER_KEYS as usize],
        }
    }

    /// A value no other write uses: the thread in the high digits, a counter below.
    fn fresh_value(&mut self) -> i64 {
        self.counter += 1;
        (i64::from(self.thread) + 1) * 1_000_000_000 + self.counter
    }
}

impl Workload for Registers {
    fn next_call(&mut self, rng: &mut StdRng) -> Call {
        let n = rng.gen_range(0..REGISTER_KEYS);
        let key = register_key(n);
        let roll = rng.gen_range(0..10);
        let last = self.last_seen[n as usize];
        match (roll, last) {
            (0..=3, _) => Call::Read { key },
            (4..=6, Some(from)) => Call::Cas {
                key,
                from,
                to: self.fresh_value(),
            },
            _ => Call::Write {
                key,
                value: self.fresh_value(),
            },
        }
    }

    fn execute(&mut self, client: &mut Client, call: &Call) -> Result<Reply, CallError> {
        match call {
            Call::Read { key } => {
                let got = client.get(GetRequest::new(key.clone().into_bytes(), None))?;
                let value = got.kv.map(|kv| parse_i64(&kv.value)).transpose()?;
                Ok(Reply::Read { value })
            }
            Call::Write { key, value } => {
                let request = PutRequest::new(key.clone().into_bytes(), encode(*value), None);
                let version = client.put(request)?;
                Ok(Reply::Written { version })
            }
            Call::Cas { key, from, to } => {
                let compare = Compare::new(
                    key.clone().into_bytes(),
                    CompareTarget::VALUE,
                    CompareOp::EQUAL,
                    encode(*from),
                    None,
                    None,
                );
                let set = set_mutation(key, *to);
                let result = client.txn(TxnRequest::new(vec![compare], vec![set], vec![], None))?;
                Ok(Reply::Cas {
                    succeeded: result.succeeded,
                    version: result.version,
                })
            }
            other => panic!("not a register call: {other:?}"),
        }
    }

    fn on_reply(&mut self, call: &Call, reply: &Reply) {
        let (key, seen) = match (call, reply) {
            (Call::Read { key }, Reply::Read { value }) => (key, *value),
            (Call::Write { key, value }, _) => (key, Some(*value)),
            (
                Call::Cas { key, to, .. },
                Reply::Cas {
                    succeeded: true, ..
                },
            ) => (key, Some(*to)),
            _ => return,
        };
        let n: usize = key[REGISTER_START.len()..].parse().expect("reg/N");
        self.last_seen[n] = seen;
    }
}

// ---------------------------------------------------------------------------------------
// Bank.

pub fn account_key(n: usize) -> String {
    format!("{BANK_START}{n}")
}

fn bank_range() -> KeyRange {
    KeyRange::new(BANK_START.into(), BANK_END.into())
}

/// Every account's balance in one snapshot: at `read_version`, or linearizable if `None`.
fn read_balances(client: &mut Client, read_version: Option<i64>) -> Result<Vec<i64>, CallError> {
    let request = GetRangeRequest::new(bank_range(), 0, false, read_version, None);
    let page = client.get_range(request)?;
    if page.more {
        return Err(CallError::Refused("bank range did not fit one page".into()));
    }
    page.kvs.iter().map(|kv| parse_i64(&kv.value)).collect()
}

/// Every account in one snapshot: at a fresh read version, or a linearizable range read.
pub fn bank_read(client: &mut Client, at_read_version: bool) -> Result<Reply, CallError> {
    let read_version = match at_read_version {
        true => Some(client.get_read_version()?),
        false => None,
    };
    let balances = read_balances(client, read_version)?;
    Ok(Reply::Balances { balances })
}

pub struct Bank;

impl Workload for Bank {
    fn next_call(&mut self, rng: &mut StdRng) -> Call {
        if rng.gen_bool(0.5) {
            return Call::BankRead {
                at_read_version: rng.gen_bool(0.5),
            };
        }
        let from = rng.gen_range(0..ACCOUNTS);
        let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
        Call::Transfer {
            from,
            to,
            amount: rng.gen_range(1..=TRANSFER_AMOUNT_MAX),
        }
    }

    fn execute(&mut self, client: &mut Client, call: &Call) -> Result<Reply, CallError> {
        match call {
            Call::BankRead { at_read_version } => bank_read(client, *at_read_version),
            Call::Transfer { from, to, amount } => transfer(client, *from, *to, *amount),
            other => panic!("not a bank call: {other:?}"),
        }
    }
}

/// Reads both balances at a read version and commits the new ones with a read conflict
/// range over all accounts: a concurrent transfer makes the commit fail with `Conflict`.
fn transfer(client: &mut Client, from: usize, to: usize, amount: i64) -> Result<Reply, CallError> {
    let read_version = client.get_read_version()?;
    let balances = read_balances(client, Some(read_version))?;
    if balances.len() != ACCOUNTS {
        return Err(CallError::Refused(format!(
            "read {} accounts",
            balances.len()
        )));
    }
    if balances[from] < amount {
        return Err(CallError::Refused("insufficient funds".into()));
    }
    let mutations = vec![
        set_mutation(&account_key(from), balances[from] - amount),
        set_mutation(&account_key(to), balances[to] + amount),
    ];
    let request = paxkv::api::gen::paxkv::CommitRequest::new(
        read_version,
        mutations,
        vec![bank_range()],
        None,
    );
    let committed = client.commit(request)?;
    Ok(Reply::Written {
        version: committed.version,
    })
}

/// The bank's starting balances in one commit.
pub fn bank_init(client: &mut Client) -> Result<Reply, CallError> {
    let mutations = (0..ACCOUNTS)
        .map(|n| set_mutation(&account_key(n), ACCOUNT_BALANCE_START))
        .collect();
    let read_version = client.get_read_version()?;
    let request = paxkv::api::gen::paxkv::CommitRequest::new(read_version, mutations, vec![], None);
    let committed = client.commit(request)?;
    Ok(Reply::Written {
        version: committed.version,
    })
}

pub fn bank_init_call() -> Call {
    Call::BankInit {
        balances: vec![ACCOUNT_BALANCE_START; ACCOUNTS],
    }
}

// ---------------------------------------------------------------------------------------
// Set.

pub struct Set {
    thread: u32,
    counter: u64,
}

impl Set {
    pub fn new(thread: u32) -> Set {
        Set { thread, counter: 0 }
    }
}

fn element_key(element: u64) -> String {
    format!("{SET_START}{element:020}")
}

/// Every pair in `[start, end)` in one snapshot (the first page's read version is kept for
/// the rest), each handed to `each`.
fn read_range_snapshot(
    client: &mut Client,
    (start, end): (&str, &str),
    what: &str,
    mut each: impl FnMut(&KeyValue) -> Result<(), CallError>,
) -> Result<(), CallError> {
    let range = KeyRange::new(start.into(), end.into());
    let (mut read_version, mut continuation) = (None, None);
    for _ in 0..SET_READ_PAGES_MAX {
        let request = GetRangeRequest::new(range.clone(), 0, false, read_version, continuation);
        let page = client.get_range(request)?;
        page.kvs.iter().try_for_each(&mut each)?;
        if !page.more {
            return Ok(());
        }
        read_version = Some(page.read_version);
        continuation = page.continuation;
    }
    Err(CallError::Refused(format!(
        "{what} read exceeded its page bound"
    )))
}

/// The whole set in one snapshot.
pub fn read_set(client: &mut Client) -> Result<Vec<u64>, CallError> {
    let mut elements = Vec::new();
    read_range_snapshot(client, (SET_START, SET_END), "set", |kv| {
        let text = String::from_utf8_lossy(&kv.key[SET_START.len()..]).into_owned();
        elements.push(text.parse().map_err(|_| bad_value(&kv.key))?);
        Ok(())
    })?;
    Ok(elements)
}

impl Workload for Set {
    fn next_call(&mut self, rng: &mut StdRng) -> Call {
        // Each read returns the whole set, so reads are rare: they dominate the history.
        if rng.gen_ratio(1, SET_READ_ONE_IN) {
            return Call::SetRead;
        }
        self.counter += 1;
        Call::SetAdd {
            element: (u64::from(self.thread) + 1) * 1_000_000_000 + self.counter,
        }
    }

    fn execute(&mut self, client: &mut Client, call: &Call) -> Result<Reply, CallError> {
        match call {
            Call::SetAdd { element } => {
                let key = element_key(*element).into_bytes();
                let version = client.put(PutRequest::new(key, b"1".to_vec(), None))?;
                Ok(Reply::Written { version })
            }
            Call::SetRead => Ok(Reply::Elements {
                elements: read_set(client)?,
            }),
            other => panic!("not a set call: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Documents.

pub struct Documents {
    thread: u32,
    counter: u64,
}

impl Documents {
    pub fn new(thread: u32) -> Documents {
        Documents { thread, counter: 0 }
    }
}

fn doc_key(add: u64) -> Vec<u8> {
    let generation = add / DOC_ADDS_PER_GENERATION;
    format!("{DOC_START}{generation:010}/{}", add % 2).into_bytes()
}

/// The elements of a document's `items`.
fn doc_items(json: &[u8]) -> Result<Vec<u64>, CallError> {
    let document: serde_json::Value = serde_json::from_slice(json).map_err(|_| bad_value(json))?;
    let items = document["items"]
        .as_array()
        .ok_or_else(|| bad_value(json))?;
    (items.iter())
        .map(|item| item.as_u64().ok_or_else(|| bad_value(json)))
        .collect()
}

fn doc_json(items: &[u64]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "items": items })).expect("serializes")
}

/// Adds `element` to document `key` as an RFC 6902 patch; a document that does not exist
/// yet is created holding it (only if it still does not).
fn doc_patch_add(client: &mut Client, key: Vec<u8>, element: u64) -> Result<Reply, CallError> {
    let patch = format!(r#"[{{"op":"add","path":"/items/-","value":{element}}}]"#);
    let request = PatchDocumentRequest::new(
        key.clone(),
        patch.into_bytes(),
        PatchFormat::JSON_PATCH,
        None,
        None,
    );
    match client.patch_document(request) {
        Ok(written) => Ok(Reply::Written {
            version: written.version,
        }),
        Err(thrift::Error::User(user))
            if user
                .downcast_ref::<DocumentError>()
                .is_some_and(|e| e.reason == "NO_DOCUMENT") =>
        {
            let create = PutDocumentRequest::new(key, doc_json(&[element]), Some(0), None);
            let written = client.put_document(create)?;
            Ok(Reply::Written {
                version: written.version,
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// Document `key` as read now with `element` appended to its items (a new document if
/// there is none), and the version read (0: absent).
fn doc_with(client: &mut Client, key: &[u8], element: u64) -> Result<(Vec<u8>, i64), CallError> {
    let read = client.get_document(GetDocumentRequest::new(key.to_vec(), None, None))?;
    let mut items = match &read.json {
        Some(json) => doc_items(json)?,
        None => Vec::new(),
    };
    items.push(element);
    Ok((doc_json(&items), read.mod_version))
}

/// Reads document `key`, appends `element`, and writes it back whole at the version read.
fn doc_whole_add(client: &mut Client, key: Vec<u8>, element: u64) -> Result<Reply, CallError> {
    let (json, mod_version) = doc_with(client, &key, element)?;
    let put = PutDocumentRequest::new(key, json, Some(mod_version), None);
    let written = client.put_document(put)?;
    Ok(Reply::Written {
        version: written.version,
    })
}

/// Reads document `key`, appends `element`, and writes it back as an upload of small
/// chunks committed as a document, only if the key is still at the version read. Half of
/// them are indented, so the replica taking the commit stages them again in canonical form.
/// A commit whose version no longer holds wrote nothing (a definite failure); the upload it
/// leaves is reclaimed.
fn doc_upload_add(client: &mut Client, key: Vec<u8>, element: u64) -> Result<Reply, CallError> {
    let (mut json, mod_version) = doc_with(client, &key, element)?;
    if element % 2 == 1 {
        let value: serde_json::Value = serde_json::from_slice(&json).expect("our own JSON");
        json = serde_json::to_vec_pretty(&value).expect("serializes");
    }
    let mut upload_id = None;
    let mut offset = 0i64;
    for chunk in json.chunks(DOC_UPLOAD_CHUNK_BYTES) {
        let request = UploadChunkRequest::new(upload_id.clone(), offset, chunk.to_vec(), None);
        let staged = client.upload_chunk(request)?;
        upload_id = Some(staged.upload_id);
        offset = staged.bytes_staged;
    }
    let upload_id = upload_id.expect("a document has at least one byte");
    let commit = UploadCommit::new(key, upload_id, offset, Some(mod_version), Some(true));
    let committed = client.commit_uploads(CommitUploadsRequest::new(vec![commit], None, None))?;
    if !committed.committed {
        return Err(CallError::Refused(
            "the document moved before the upload committed".into(),
        ));
    }
    Ok(Reply::Written {
        version: committed.version,
    })
}

/// Every document's items, in one snapshot.
pub fn read_documents(client: &mut Client) -> Result<Vec<u64>, CallError> {
    let mut elements = Vec::new();
    read_range_snapshot(client, (DOC_START, DOC_END), "documents", |kv| {
        elements.extend(doc_items(&kv.value)?);
        Ok(())
    })?;
    Ok(elements)
}

impl Workload for Documents {
    fn next_call(&mut self, rng: &mut StdRng) -> Call {
        if rng.gen_ratio(1, DOC_READ_ONE_IN) {
            return Call::DocRead;
        }
        self.counter += 1;
        let whole = rng.gen_ratio(1, DOC_WHOLE_ONE_IN);
        Call::DocAdd {
            element: (u64::from(self.thread) + 1) * 1_000_000_000 + self.counter,
            whole,
            upload: whole && rng.gen_ratio(1, DOC_UPLOAD_ONE_IN),
        }
    }

    fn execute(&mut self, client: &mut Client, call: &Call) -> Result<Reply, CallError> {
        match call {
            Call::DocAdd {
                element,
                whole,
                upload,
            } => {
                let key = doc_key(element % 1_000_000_000);
                match (whole, upload) {
                    (_, true) => doc_upload_add(client, key, *element),
                    (false, false) => doc_patch_add(client, key, *element),
                    (true, false) => doc_whole_add(client, key, *element),
                }
            }
            Call::DocRead => Ok(Reply::Elements {
                elements: read_documents(client)?,
            }),
            other => panic!("not a documents call: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Watch.

/// A watcher on the register range. It stops once told to and it has passed `drain_to`
/// (a version every acknowledged write is at or below).
pub struct Watcher {
    watcher: u32,
    from_version: i64,
    drain_to: Arc<AtomicI64>,
}

impl Watcher {
    /// Streams from version 1 unless `run_watcher` starts it elsewhere.
    pub fn new(watcher: u32, drain_to: Arc<AtomicI64>) -> Watcher {
        Watcher {
            watcher,
            from_version: 1,
            drain_to,
        }
    }

    fn drained(&self) -> bool {
        self.from_version > self.drain_to.load(Ordering::SeqCst)
    }
}

impl Workload for Watcher {
    fn next_call(&mut self, _rng: &mut StdRng) -> Call {
        Call::Watch {
            watcher: self.watcher,
            start_key: REGISTER_START.into(),
            end_key: REGISTER_END.into(),
            from_version: self.from_version,
        }
    }

    fn execute(&mut self, client: &mut Client, call: &Call) -> Result<Reply, CallError> {
        let Call::Watch {
            start_key,
            end_key,
            from_version,
            ..
        } = call
        else {
            panic!("not a watch call: {call:?}");
        };
        let range = KeyRange::new(start_key.clone().into_bytes(), end_key.clone().into_bytes());
        let page = client.watch(WatchRequest::new(range, *from_version, WATCH_POLL_MS, None))?;
        let events = (page.events.iter())
            .map(|e| {
                Ok(WatchedEvent {
                    key: String::from_utf8_lossy(&e.key).into_owned(),
                    value: e.value.as_deref().map(parse_i64).transpose()?,
                    version: e.version,
                })
            })
            .collect::<Result<Vec<_>, CallError>>()?;
        Ok(Reply::Watched {
            events,
            next_version: page.next_version,
        })
    }

    fn on_reply(&mut self, _call: &Call, reply: &Reply) {
        if let Reply::Watched { next_version, .. } = reply {
            self.from_version = *next_version;
        }
    }
}

/// When a watcher starts streaming.
#[derive(Clone, Copy, Debug)]
pub enum WatchStart {
    /// From this version, at once.
    Version(i64),
    /// At this time since the run started, from a read version taken then (mid-stream,
    /// while writes go on).
    LatestAt(Duration),
}

/// Waits until `at`, then takes a read version (not recorded: it changes nothing).
fn latest_version_at(shared: &Shared, connection: &mut Connection, at: Duration) -> Option<i64> {
    let clock = shared.recorder.clock();
    while clock.elapsed() < at {
        thread::sleep(FAILURE_PAUSE);
    }
    while clock.elapsed() < shared.deadline {
        let Some(client) = connection.client() else {
            continue;
        };
        match client.get_read_version() {
            Ok(version) => return Some(version),
            Err(_) => connection.rotate(),
        }
        thread::sleep(FAILURE_PAUSE);
    }
    None
}

/// Runs a watcher until `shared.stop` is set and it has drained, or `shared.deadline`
/// (which for watchers should leave time to drain after the writers stop).
fn run_watcher(shared: Shared, id: ClientId, start: WatchStart, mut watcher: Watcher) {
    let clock = shared.recorder.clock();
    let first = usize::try_from(id.thread).expect("u32 fits");
    let mut connection = Connection::new(shared.endpoints.clone(), first, shared.call_timeout);
    watcher.from_version = match start {
        WatchStart::Version(version) => version,
        WatchStart::LatestAt(at) => match latest_version_at(&shared, &mut connection, at) {
            Some(version) => version,
            None => return,
        },
    };
    let mut process = u64::from(id.thread);
    let mut rng = StdRng::seed_from_u64(u64::from(id.thread));
    while clock.elapsed() < shared.deadline {
        if shared.stop.load(Ordering::SeqCst) && watcher.drained() {
            break;
        }
        let Some(client) = connection.client() else {
            continue;
        };
        let call = watcher.next_call(&mut rng);
        shared.recorder.invoke(process, &call);
        match watcher.execute(client, &call) {
            Ok(reply) => {
                watcher.on_reply(&call, &reply);
                shared.recorder.ok(process, &call, reply);
            }
            Err(error) => {
                let failure = failure_of(error);
                record_failure(&shared, &mut process, &id, &call, &failure);
                // A failed poll moves to another replica, so the stream resumes there.
                connection.rotate();
                thread::sleep(failure.pause.unwrap_or(FAILURE_PAUSE));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Publish.

/// The namespace the publish workload works in, and the namespaces below it that each of
/// its change sets adds one entry to.
pub const PUBLISH_ROOT: &str = "/chaos";
pub const PUBLISH_NAMESPACES: [&str; 3] = ["/chaos/a", "/chaos/b", "/chaos/c"];
/// One call in this many is a read of every publish entry.
const PUBLISH_READ_ONE_IN: u32 = 20;
/// Entries one listing page asks for.
const PUBLISH_PAGE: i32 = 1000;

/// A configuration-service connection of its own, authenticated with the root token, that
/// moves to the next replica when a call fails.
pub struct ConfigConnection {
    endpoints: Vec<SocketAddr>,
    next: usize,
    timeout: Duration,
    token: String,
    client: Option<ConfigClient>,
}

impl ConfigConnection {
    pub fn new(
        endpoints: &[SocketAddr],
        first: usize,
        timeout: Duration,
        token: String,
    ) -> ConfigConnection {
        ConfigConnection {
            endpoints: endpoints.to_vec(),
            next: first,
            timeout,
            token,
            client: None,
        }
    }

    fn open(&self) -> thrift::Result<ConfigClient> {
        let endpoint = self.endpoints[self.next % self.endpoints.len()];
        let stream = std::net::TcpStream::connect_timeout(&endpoint, self.timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut client = config_client_on(stream, Protocol::Binary)?;
        client.authenticate(self.token.clone())?;
        Ok(client)
    }

    /// Runs `call`; after a failure the next call connects to the next replica.
    pub fn call<T>(
        &mut self,
        call: impl FnOnce(&mut ConfigClient) -> thrift::Result<T>,
    ) -> Result<T, CallError> {
        if self.client.is_none() {
            match self.open() {
                Ok(client) => self.client = Some(client),
                Err(error) => {
                    self.next += 1;
                    return Err(error.into());
                }
            }
        }
        let client = self.client.as_mut().expect("connected above");
        call(client).map_err(|error| {
            self.client = None;
            self.next += 1;
            error.into()
        })
    }
}

/// Creates the publish workload's namespaces (those that exist already are left alone).
pub fn publish_init(config: &mut ConfigConnection) -> Result<Reply, CallError> {
    for path in std::iter::once(PUBLISH_ROOT).chain(PUBLISH_NAMESPACES) {
        let request = CreateNamespaceRequest::new(path.to_string(), None, None, None, None);
        match config.call(|c| c.create_namespace(request)) {
            Ok(_) => {}
            Err(CallError::Thrift(thrift::Error::User(user)))
                if user.downcast_ref::<AlreadyExists>().is_some() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Reply::Written { version: 0 })
}

/// One change set adding `e<element>` to every publish namespace, published (as an
/// emergency publish: the workload's only principal is root, who may not approve its own
/// change) in one transaction.
fn publish(config: &mut ConfigConnection, element: u64) -> Result<Reply, CallError> {
    let edits = (PUBLISH_NAMESPACES.iter())
        .map(|ns| {
            let value = element.to_string().into_bytes();
            Edit::new(
                ns.to_string(),
                format!("e{element}"),
                EditOp::PUT,
                value,
                None,
            )
        })
        .collect();
    let create = CreateChangeRequest::new(
        format!("chaos {element}"),
        None,
        Some(edits),
        Some(format!("chaos-{element}")),
    );
    // A draft publishes nothing: however creating it failed, no entry changed.
    let change = match config.call(|c| c.create_change(create)) {
        Ok(change) => change,
        Err(CallError::Thrift(error)) => {
            return Err(CallError::Refused(format!(
                "createChange failed, nothing published: {}",
                crate::client::describe(&error)
            )))
        }
        Err(error) => return Err(error),
    };
    let request = PublishRequest::new(change.id, true, "chaos publish workload".to_string());
    let published = config.call(|c| c.publish_change(request))?;
    Ok(Reply::Written {
        version: published.version,
    })
}

/// Every publish entry, at one version: the elements in every namespace, and those in
/// only some.
pub fn read_published(config: &mut ConfigConnection) -> Result<Reply, CallError> {
    let mut counts: std::collections::BTreeMap<u64, usize> = Default::default();
    let (mut continuation, mut version) = (None, None);
    loop {
        let request = ListEntriesRequest::new(
            PUBLISH_ROOT.to_string(),
            true,
            PUBLISH_PAGE,
            continuation.take(),
            version,
            false,
        );
        let page = config.call(|c| c.list_entries(request))?;
        version = Some(page.read_version);
        for entry in page.entries {
            let element = (entry.key.strip_prefix('e'))
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| bad_value(entry.key.as_bytes()))?;
            *counts.entry(element).or_default() += 1;
        }
        match page.continuation {
            Some(next) if !next.is_empty() => continuation = Some(next),
            _ => break,
        }
    }
    let whole = |count: &usize| *count == PUBLISH_NAMESPACES.len();
    Ok(Reply::Published {
        elements: (counts.iter())
            .filter(|(_, c)| whole(c))
            .map(|(e, _)| *e)
            .collect(),
        partial: (counts.iter())
            .filter(|(_, c)| !whole(c))
            .map(|(e, _)| *e)
            .collect(),
    })
}

pub struct Publisher {
    thread: u32,
    counter: u64,
    config: ConfigConnection,
}

impl Publisher {
    pub fn new(thread: u32, config: ConfigConnection) -> Publisher {
        Publisher {
            thread,
            counter: 0,
            config,
        }
    }
}

impl Workload for Publisher {
    fn next_call(&mut self, rng: &mut StdRng) -> Call {
        if rng.gen_ratio(1, PUBLISH_READ_ONE_IN) {
            return Call::PublishRead;
        }
        self.counter += 1;
        Call::Publish {
            element: (u64::from(self.thread) + 1) * 1_000_000_000 + self.counter,
        }
    }

    fn execute(&mut self, _: &mut Client, call: &Call) -> Result<Reply, CallError> {
        match call {
            Call::Publish { element } => publish(&mut self.config, *element),
            Call::PublishRead => read_published(&mut self.config),
            other => panic!("not a publish call: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Starting them all.

/// Client threads per workload.
#[derive(Clone, Debug)]
pub struct Clients {
    pub registers: u32,
    pub bank: u32,
    pub set: u32,
    pub watchers: u32,
    pub documents: u32,
    pub publish: u32,
}

impl Default for Clients {
    fn default() -> Clients {
        Clients {
            registers: 5,
            bank: 3,
            set: 2,
            watchers: 2,
            documents: 2,
            publish: 1,
        }
    }
}

impl Clients {
    pub fn total(&self) -> u32 {
        self.registers + self.bank + self.set + self.watchers + self.documents + self.publish
    }
}

/// Started client threads: the writers end at the shared deadline; the watchers are
/// joined separately, after they drained.
pub struct Running {
    pub writers: Vec<JoinHandle<()>>,
    pub watchers: Vec<JoinHandle<()>>,
}

/// Starts every client thread. Watcher `n` starts as `watch_starts[n]` says (the last
/// entry for the rest) and runs until `watch_shared.stop` is set and it passed `drain_to`,
/// or its deadline.
pub fn start(
    shared: &Shared,
    watch_shared: &Shared,
    clients: &Clients,
    seed: u64,
    watch_starts: &[WatchStart],
    drain_to: &Arc<AtomicI64>,
) -> Running {
    let threads = clients.total();
    let mut thread = 0;
    let mut next_id = || {
        thread += 1;
        ClientId {
            thread: thread - 1,
            threads,
        }
    };
    let mut writers = Vec::new();
    for n in 0..clients.registers {
        let id = next_id();
        let workload = Registers::new(id.thread);
        writers.push(spawn(format!("registers-{n}"), shared, id, seed, workload));
    }
    for n in 0..clients.bank {
        writers.push(spawn(format!("bank-{n}"), shared, next_id(), seed, Bank));
    }
    for n in 0..clients.set {
        let id = next_id();
        let workload = Set::new(id.thread);
        writers.push(spawn(format!("set-{n}"), shared, id, seed, workload));
    }
    for n in 0..clients.documents {
        let id = next_id();
        let workload = Documents::new(id.thread);
        writers.push(spawn(format!("documents-{n}"), shared, id, seed, workload));
    }
    for n in 0..clients.publish {
        let id = next_id();
        let Some(token) = shared.config_token.clone() else {
            continue;
        };
        let first = usize::try_from(id.thread).expect("u32 fits");
        let config = ConfigConnection::new(&shared.endpoints, first, shared.call_timeout, token);
        let workload = Publisher::new(id.thread, config);
        writers.push(spawn(format!("publish-{n}"), shared, id, seed, workload));
    }
    let watchers = (0..clients.watchers)
        .map(|n| {
            let (id, shared) = (next_id(), watch_shared.clone());
            let index = usize::try_from(n).expect("u32 fits");
            let begin = watch_starts[index.min(watch_starts.len() - 1)];
            let watcher = Watcher::new(n, drain_to.clone());
            thread::Builder::new()
                .name(format!("watch-{n}"))
                .spawn(move || run_watcher(shared, id, begin, watcher))
                .expect("spawn a watcher thread")
        })
        .collect();
    Running { writers, watchers }
}

// ---------------------------------------------------------------------------------------
// Encoding.

fn encode(value: i64) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn set_mutation(key: &str, value: i64) -> Mutation {
    Mutation::new(
        MutationType::SET,
        key.as_bytes().to_vec(),
        encode(value),
        None,
    )
}

fn parse_i64(bytes: &[u8]) -> Result<i64, CallError> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad_value(bytes))?;
    text.parse().map_err(|_| bad_value(bytes))
}

/// A value the workload never writes: the server returned something else.
fn bad_value(bytes: &[u8]) -> CallError {
    CallError::Refused(format!(
        "unparsable value {:?}",
        bytes.escape_ascii().to_string()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const TIMEOUT: Duration = Duration::from_secs(2);
    const AWAY_MAX: Duration = Duration::from_millis(200);

    #[test]
    fn a_client_that_left_its_dead_home_returns_once_home_is_back() {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let endpoints: Vec<SocketAddr> =
            listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut listeners = listeners.into_iter();
        drop(listeners.next());
        let _others: Vec<TcpListener> = listeners.collect();

        let mut connection = Connection::with_away_max(endpoints.clone(), 3, TIMEOUT, AWAY_MAX);
        assert_eq!(
            connection.endpoint(),
            endpoints[0],
            "home is thread modulo replicas"
        );
        assert!(connection.client().is_none(), "home is down");
        assert!(connection.client().is_some());
        assert_eq!(
            connection.endpoint(),
            endpoints[1],
            "moved on to the next replica"
        );

        let _home = TcpListener::bind(endpoints[0]).unwrap();
        assert!(connection.client().is_some());
        assert_eq!(
            connection.endpoint(),
            endpoints[1],
            "stays a while on the next one"
        );
        thread::sleep(AWAY_MAX);
        assert!(connection.client().is_some());
        assert_eq!(
            connection.endpoint(),
            endpoints[0],
            "back home after away_max"
        );
        thread::sleep(AWAY_MAX);
        assert!(connection.client().is_some());
        assert_eq!(
            connection.endpoint(),
            endpoints[0],
            "home is not left again"
        );
    }

    #[test]
    fn clients_spread_over_the_replicas_again_after_kills_moved_them() {
        // Ten clients, as a run has; each kill below moves the killed replica's clients on.
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let endpoints: Vec<SocketAddr> =
            listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut connections: Vec<Connection> = (0..10)
            .map(|home| Connection::with_away_max(endpoints.clone(), home, TIMEOUT, AWAY_MAX))
            .collect();
        for connection in &mut connections {
            assert!(connection.client().is_some());
        }
        for killed in [1, 2] {
            for connection in &mut connections {
                if connection.endpoint() == endpoints[killed] {
                    connection.rotate();
                }
                assert!(connection.client().is_some());
            }
        }
        let on = |connections: &[Connection], i: usize| {
            connections
                .iter()
                .filter(|c| c.endpoint() == endpoints[i])
                .count()
        };
        assert_eq!(
            on(&connections, 0),
            10,
            "two kills put every client on one replica"
        );
        thread::sleep(AWAY_MAX);
        for connection in &mut connections {
            assert!(connection.client().is_some());
        }
        let spread: Vec<usize> = (0..3).map(|i| on(&connections, i)).collect();
        assert_eq!(spread, [4, 3, 3], "each client is back on its home");
    }
}
