//! The configuration service: namespaces, principals and roles, change sets reviewed and
//! published as one transaction, audit, history and watch (docs/config-service.md).
//!
//! Everything lives in the replicated KV store under the system prefix [`keys::PREFIX`],
//! which the raw KV API cannot write. Every call is one optimistic transaction: it reads
//! what it needs at a linearizable read version (the caller's token and grants included),
//! decides, and commits its writes with every key it read as a read conflict range, so it
//! commits only if nothing it read has moved; otherwise it runs again from a new version.
//! Calls are therefore serializable, and a check (a permission, a state, a base revision)
//! holds at the version the call's writes commit at. Times and random ids are chosen
//! here, where the command is proposed, and carried in the log, so apply stays
//! deterministic.

pub mod access;
mod audit;
pub mod change;
mod changes;
pub mod keys;
mod kv;
pub mod model;
mod namespaces;
mod principals;
mod schema;
pub mod store;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::executor::{KeyRange, Mutation};
use crate::metrics::ConfigMetrics;
use crate::router::RouterError;
use access::{Permission, Roles};
use model::{AuditRecord, NamespaceRecord, PrincipalRecord, TokenRecord};
use store::{Store, Stored};

pub use audit::{AuditFilter, AuditView, ImportedRevision, IMPORTED_REVISIONS_MAX};
pub use changes::{ChangeView, EditInput, EditKind, Moved, RebaseConflict, RebaseOutcome};
pub use kv::{parse_hex, prefix_end, versionstamped_range, KvCaller};
pub use namespaces::{ConfigEvent, EntryView, NamespaceSettings};
pub use principals::{new_root_token, AuthInfo, TokenCreated, ROOT};

/// How many times a call runs again after a commit conflict before it gives up.
const CONFLICT_ATTEMPTS: usize = 8;

/// Entries a listing, history or audit page returns at most.
pub const PAGE_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {principal} lacks {} on {namespace}", .permission.name())]
    PermissionDenied {
        principal: String,
        permission: Permission,
        /// Display form.
        namespace: String,
    },
    #[error("no such {what}: {name}")]
    NotFound { what: &'static str, name: String },
    #[error("{what} {name} already exists")]
    AlreadyExists { what: &'static str, name: String },
    #[error("change {change_id}: cannot {action} in state {state}: {message}")]
    InvalidTransition {
        change_id: u64,
        state: &'static str,
        action: &'static str,
        message: String,
    },
    #[error("{namespace}:{key} violates its schema at {pointer:?} ({rule}): {message}")]
    SchemaViolation {
        namespace: String,
        key: String,
        pointer: String,
        rule: String,
        message: String,
    },
    #[error("change {change_id} is stale: {} entries moved since it was based", .moved.len())]
    Stale { change_id: u64, moved: Vec<Moved> },
    #[error("{0}")]
    Store(RouterError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RouterError> for Error {
    fn from(error: RouterError) -> Error {
        Error::Store(error)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Who is calling: the principal a token authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub root: bool,
    pub token_id: String,
}

/// The clock calls take their time from (milliseconds since the Unix epoch).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        #[allow(clippy::disallowed_methods)] // the proposer's time, carried in the log
        let now = std::time::SystemTime::now();
        let since = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

/// The configuration service over a store.
#[derive(Clone)]
pub struct Confman {
    store: Arc<dyn Store>,
    clock: Clock,
    metrics: ConfigMetrics,
    /// Patches computed for watches that ask for them.
    patches: Arc<std::sync::Mutex<namespaces::PatchCache>>,
}

/// What the watch patch cache holds at most.
const PATCH_CACHE_BYTES: usize = 64 << 20;

impl Confman {
    pub fn new(store: Arc<dyn Store>, clock: Clock) -> Confman {
        Confman {
            store,
            clock,
            metrics: ConfigMetrics::unregistered(),
            patches: Arc::new(std::sync::Mutex::new(namespaces::PatchCache::new(
                PATCH_CACHE_BYTES,
            ))),
        }
    }

    /// Records into `metrics` (a node's registered group) from now on.
    pub fn with_metrics(mut self, metrics: ConfigMetrics) -> Confman {
        self.metrics = metrics;
        self
    }

    /// Runs a read-only call as the principal of `token`.
    fn read<T>(
        &self,
        token: Option<&str>,
        mut body: impl FnMut(&mut Tx<'_>, &Caller) -> Result<T>,
    ) -> Result<T> {
        let version = self.store.read_version()?;
        let mut tx = Tx::new(&*self.store, version, (self.clock)());
        let caller = tx.authenticate(token)?;
        body(&mut tx, &caller)
    }

    /// Runs a call that writes as the principal of `token`, as one optimistic
    /// transaction, again after a conflict. A call refused for a missing permission is
    /// audited as denied. Returns its result and the commit version (the read version if
    /// it wrote nothing).
    fn write<T>(
        &self,
        token: Option<&str>,
        action: &str,
        mut body: impl FnMut(&mut Tx<'_>, &Caller) -> Result<T>,
    ) -> Result<(T, u64)> {
        for _ in 0..CONFLICT_ATTEMPTS {
            let version = self.store.read_version()?;
            let mut tx = Tx::new(&*self.store, version, (self.clock)());
            let caller = tx.authenticate(token)?;
            let value = match body(&mut tx, &caller) {
                Ok(value) => value,
                Err(error @ Error::PermissionDenied { .. }) => {
                    self.audit_denied(&tx, &caller, action, &error);
                    return Err(error);
                }
                Err(error) => return Err(error),
            };
            if tx.writes.is_empty() && tx.audits.is_empty() {
                return Ok((value, version));
            }
            let actions: Vec<String> = tx.audits.iter().map(|a| a.action.clone()).collect();
            let (mutations, reads) = tx.finish();
            let (whole, patch) = logged_bytes(&mutations);
            match self.store.commit(version, mutations, reads) {
                Ok(committed) => {
                    let metrics = &self.metrics;
                    metrics
                        .log_bytes
                        .with_label_values(&["whole"])
                        .inc_by(whole);
                    metrics
                        .log_bytes
                        .with_label_values(&["patch"])
                        .inc_by(patch);
                    for action in &actions {
                        metrics.events.with_label_values(&[action, "ok"]).inc();
                    }
                    return Ok((value, committed));
                }
                Err(RouterError::Conflict { .. }) => {
                    self.metrics.conflicts.inc();
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Store(RouterError::Unavailable {
            message: format!(
                "{action}: {CONFLICT_ATTEMPTS} attempts conflicted with concurrent calls; \
                 nothing was written"
            ),
            retry_after_ms: 100,
        }))
    }

    /// Records a refused call in its own commit (nothing else of the call is written).
    fn audit_denied(&self, tx: &Tx<'_>, caller: &Caller, action: &str, error: &Error) {
        let Error::PermissionDenied {
            permission,
            namespace,
            ..
        } = error
        else {
            return;
        };
        let record = AuditRecord {
            at_ms: tx.now_ms,
            actor: caller.name.clone(),
            action: action.to_string(),
            outcome: "denied".to_string(),
            targets: vec![namespace.clone()],
            change_id: tx.denied_change,
            detail: serde_json::json!({ "permission": permission.name() }),
        };
        let key = keys::audit(tx.now_ms, &random_bytes(), 0);
        let set = Mutation::Set {
            key,
            value: model::encode(&record),
        };
        match self.store.commit(tx.version, vec![set], Vec::new()) {
            Ok(_) => (self.metrics.events)
                .with_label_values(&[action, "denied"])
                .inc(),
            Err(error) => tracing::warn!(%error, action, "could not audit a denied call"),
        }
    }
}

/// The range holding `key` alone.
fn key_range(key: &[u8]) -> KeyRange {
    let mut end = key.to_vec();
    end.push(0);
    KeyRange {
        start: key.to_vec(),
        end,
    }
}

/// `base` parsed as JSON (None if it is not) on a second thread while `main` runs here:
/// for a large document each parse takes seconds.
fn parse_beside<T>(base: &[u8], main: impl FnOnce() -> T) -> (Option<serde_json::Value>, T) {
    std::thread::scope(|scope| {
        let base = scope.spawn(|| serde_json::from_slice(base).ok());
        let main = main();
        (base.join().ok().flatten(), main)
    })
}

/// Drops `value` on one background thread: freeing the parsed tree of a large JSON
/// document costs about as much as parsing it, and the caller should not wait for it.
/// Inline if that thread cannot be had.
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    type Garbage = Box<dyn Send>;
    static DROPPER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Garbage>>> =
        std::sync::OnceLock::new();
    let dropper = DROPPER.get_or_init(|| {
        let (send, receive) = std::sync::mpsc::channel::<Garbage>();
        let spawned = std::thread::Builder::new()
            .name("confman-drop".into())
            .spawn(move || receive.into_iter().for_each(drop));
        spawned.ok().map(|_| send)
    });
    let garbage: Garbage = Box::new(value);
    if let Some(send) = dropper {
        // A send fails only if the thread is gone; then the value drops here.
        let _ = send.send(garbage);
    }
}

/// The bytes `mutations` put into the log whole (values and records) and as patches.
fn logged_bytes(mutations: &[Mutation]) -> (u64, u64) {
    let (mut whole, mut patch) = (0u64, 0u64);
    for mutation in mutations {
        match mutation {
            Mutation::Set { key, value } => whole += (key.len() + value.len()) as u64,
            Mutation::SetPatched { key, patch: p, .. } => patch += (key.len() + p.len()) as u64,
            _ => {}
        }
    }
    (whole, patch)
}

/// One call's transaction: reads at `version`, recording each as a read conflict range,
/// and the writes it will commit.
pub(crate) struct Tx<'a> {
    store: &'a dyn Store,
    pub version: u64,
    pub now_ms: u64,
    reads: Vec<KeyRange>,
    writes: Vec<Mutation>,
    audits: Vec<AuditRecord>,
    /// The change a denied call was about, for its audit event.
    pub denied_change: Option<u64>,
}

impl<'a> Tx<'a> {
    fn new(store: &'a dyn Store, version: u64, now_ms: u64) -> Tx<'a> {
        Tx {
            store,
            version,
            now_ms,
            reads: Vec::new(),
            writes: Vec::new(),
            audits: Vec::new(),
            denied_change: None,
        }
    }

    /// See `Store::document_tree_bytes_max`.
    pub fn document_tree_bytes_max(&self) -> usize {
        self.store.document_tree_bytes_max()
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Stored>> {
        self.reads.push(key_range(key));
        Ok(self.store.get(key, self.version)?)
    }

    /// A read at another version (history, or a read at a version the caller chose):
    /// not a conflict range, since it cannot move.
    pub fn get_at(&self, key: &[u8], version: u64) -> Result<Option<Stored>> {
        Ok(self.store.get(key, version)?)
    }

    pub fn record<T: for<'de> serde::Deserialize<'de>>(
        &mut self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<(T, u64)>> {
        match self.get(key)? {
            None => Ok(None),
            Some(stored) => Ok(Some((
                model::decode(&stored.value, what).map_err(Error::Internal)?,
                stored.mod_version,
            ))),
        }
    }

    /// Up to `limit` keys of [start, end); the whole range is a read conflict range.
    pub fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Stored>> {
        self.reads.push(KeyRange {
            start: start.to_vec(),
            end: end.to_vec(),
        });
        Ok(self.store.scan(start, end, limit, reverse, self.version)?)
    }

    pub fn scan_at(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
        version: u64,
    ) -> Result<Vec<Stored>> {
        Ok(self.store.scan(start, end, limit, reverse, version)?)
    }

    pub fn set(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push(Mutation::Set { key, value });
    }

    pub fn set_record<T: serde::Serialize>(&mut self, key: Vec<u8>, record: &T) {
        self.set(key, model::encode(record));
    }

    /// `key` takes the value `from` holds when the commit applies (after this call's
    /// earlier writes): the log carries two keys, not the value.
    pub fn copy(&mut self, key: Vec<u8>, from: Vec<u8>) {
        self.writes.push(Mutation::Copy { key, from });
    }

    /// `key` takes `base`'s value patched by the RFC 6902 `patch`, which the caller checked
    /// reproduces the value it means to write. `base` becomes a read conflict range, so the
    /// commit applies only to the bytes the caller diffed against.
    pub fn set_patched(&mut self, key: Vec<u8>, base: Vec<u8>, patch: Vec<u8>) {
        self.reads.push(key_range(&base));
        self.writes.push(Mutation::SetPatched { key, base, patch });
    }

    pub fn clear(&mut self, key: Vec<u8>) {
        self.writes.push(Mutation::Clear { key });
    }

    /// Clears every key that starts with `prefix`, as one mutation.
    pub fn clear_prefix(&mut self, prefix: &[u8]) {
        self.writes.push(Mutation::ClearRange {
            start: prefix.to_vec(),
            end: keys::prefix_end(prefix),
        });
    }

    /// An audit event committed with the call's writes.
    pub fn audit(
        &mut self,
        caller: &Caller,
        action: &str,
        targets: Vec<String>,
        change_id: Option<u64>,
        detail: serde_json::Value,
    ) {
        self.audits.push(AuditRecord {
            at_ms: self.now_ms,
            actor: caller.name.clone(),
            action: action.to_string(),
            outcome: "ok".to_string(),
            targets,
            change_id,
            detail,
        });
    }

    fn finish(mut self) -> (Vec<Mutation>, Vec<KeyRange>) {
        let nonce = random_bytes();
        let audits = std::mem::take(&mut self.audits);
        for (index, record) in audits.iter().enumerate() {
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            let key = keys::audit(self.now_ms, &nonce, index);
            self.set_record(key, record);
        }
        (self.writes, self.reads)
    }

    /// The principal `token` names, checked at this transaction's version.
    fn authenticate(&mut self, token: Option<&str>) -> Result<Caller> {
        let Some(token) = token else {
            return Err(Error::Unauthenticated(
                "this connection has not authenticated: call authenticate(token) first".into(),
            ));
        };
        let (id, secret) = principals::split_token(token)?;
        let invalid = || Error::Unauthenticated("the token is not valid".into());
        let (record, _) = self
            .record::<TokenRecord>(&keys::token(id), "token")?
            .ok_or_else(invalid)?;
        if !constant_time_eq(record.hash.as_bytes(), hash_secret(secret).as_bytes()) {
            return Err(invalid());
        }
        if record.revoked {
            return Err(Error::Unauthenticated(format!("token {id} is revoked")));
        }
        if record.expires_at_ms.is_some_and(|at| at <= self.now_ms) {
            return Err(Error::Unauthenticated(format!("token {id} has expired")));
        }
        let (principal, _) = self
            .record::<PrincipalRecord>(&keys::principal(&record.principal), "principal")?
            .ok_or_else(invalid)?;
        if principal.disabled {
            return Err(Error::Unauthenticated(format!(
                "principal {} is disabled",
                principal.name
            )));
        }
        Ok(Caller {
            name: principal.name,
            root: principal.root,
            token_id: record.id,
        })
    }

    /// The namespace (stored path) and its record; NotFound if it does not exist.
    pub fn namespace(&mut self, stored: &str) -> Result<NamespaceRecord> {
        match self.record::<NamespaceRecord>(&keys::namespace(stored), "namespace")? {
            Some((record, _)) => Ok(record),
            None => Err(Error::NotFound {
                what: "namespace",
                name: keys::display_path(stored),
            }),
        }
    }

    /// What `principal` may do in namespace `stored`: the roles granted on it and on every
    /// namespace above it.
    pub fn roles(&mut self, principal: &str, root: bool, stored: &str) -> Result<Roles> {
        let mut roles = Roles {
            root,
            ..Roles::default()
        };
        for ancestor in keys::ancestors(stored) {
            let record = self.namespace(&ancestor)?;
            if let Some(granted) = record.grants.get(principal) {
                roles.roles.extend(granted.iter().copied());
            }
        }
        Ok(roles)
    }

    /// PermissionDenied unless the caller holds `permission` on namespace `stored`.
    pub fn require(&mut self, caller: &Caller, permission: Permission, stored: &str) -> Result<()> {
        let roles = self.roles(&caller.name, caller.root, stored)?;
        if roles.hold(permission) {
            return Ok(());
        }
        Err(Error::PermissionDenied {
            principal: caller.name.clone(),
            permission,
            namespace: keys::display_path(stored),
        })
    }
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
    bytes
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A namespace path (as users write it) in stored form, or InvalidArgument.
pub(crate) fn stored(path: &str) -> Result<String> {
    keys::stored_path(path).map_err(Error::Invalid)
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if keys::is_name(name) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{what} {name:?} must be 1 to {} letters, digits, '.', '_' or '-'",
        keys::NAME_BYTES_MAX
    )))
}

pub(crate) fn page_limit(limit: i64) -> Result<usize> {
    match usize::try_from(limit) {
        Ok(0) => Ok(100),
        Ok(limit) => Ok(limit.min(PAGE_MAX)),
        Err(_) => Err(Error::Invalid("limit must not be negative".into())),
    }
}

#[cfg(test)]
mod tests;
