//! Namespaces and published entries: create, describe, list, delete; read an entry now, at
//! a store version or at a revision; its history; diffs; and the watch of a subtree.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::access::Permission;
use super::model::{self, NamespaceRecord, RevisionRecord};
use super::store::Stored;
use super::{check_name, keys, page_limit, schema, stored, Confman, Error, Result, Tx};
use crate::executor::{document, EventKind};

/// Approvals a namespace may require at most.
pub const APPROVALS_MAX: u32 = 16;

/// A published entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    /// Stored form.
    pub ns: String,
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub revision: RevisionRecord,
    /// The store version its revision was published at.
    pub published_version: u64,
    pub read_version: u64,
}

/// One published change of an entry, as a watch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEvent {
    pub ns: String,
    pub key: String,
    pub revision: RevisionRecord,
    pub version: u64,
    /// Absent for a deletion, and when `patch` stands for it.
    pub value: Option<Vec<u8>>,
    /// With `patches`: the RFC 6902 patch from the previous revision's value, when that
    /// is worth it (`WATCH_PATCH_MIN_BYTES`, under half the value).
    pub patch: Option<Vec<u8>>,
}

/// Values below this are sent whole even to a watch that asks for patches.
pub const WATCH_PATCH_MIN_BYTES: usize = 4096;

/// Patches computed for watches, by (stored namespace, entry, revision): every watcher of a
/// large entry gets the same patch, diffed once per replica. Bounded by `bytes_max`; the
/// oldest go first. None: no patch is worth sending for that revision.
pub(super) struct PatchCache {
    patches: BTreeMap<(String, String, u64), Option<Vec<u8>>>,
    order: VecDeque<(String, String, u64)>,
    bytes: usize,
    bytes_max: usize,
}

impl PatchCache {
    pub(super) fn new(bytes_max: usize) -> PatchCache {
        PatchCache {
            patches: BTreeMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    fn get(&self, id: &(String, String, u64)) -> Option<Option<Vec<u8>>> {
        self.patches.get(id).cloned()
    }

    fn insert(&mut self, id: (String, String, u64), patch: Option<Vec<u8>>) {
        let size = patch.as_ref().map_or(0, Vec::len);
        if size > self.bytes_max || self.patches.contains_key(&id) {
            return;
        }
        while self.bytes + size > self.bytes_max && self.evict_oldest() {}
        self.bytes += size;
        self.order.push_back(id.clone());
        self.patches.insert(id, patch);
        // Entries for revisions with no patch cost a key each: bound their number too.
        while self.order.len() > 4096 && self.evict_oldest() {}
    }

    /// Whether there was an entry to evict.
    fn evict_oldest(&mut self) -> bool {
        let Some(oldest) = self.order.pop_front() else {
            return false;
        };
        if let Some(Some(dropped)) = self.patches.remove(&oldest) {
            self.bytes -= dropped.len();
        }
        true
    }
}

/// A namespace's settings as a create or an update gives them: what is None is the
/// default (create) or unchanged (update). On update, an empty schema or approver group
/// removes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NamespaceSettings<'a> {
    pub description: Option<&'a str>,
    /// A JSON Schema (draft 2020-12), as JSON text.
    pub schema: Option<&'a [u8]>,
    /// Default 1.
    pub approvals_required: Option<u32>,
    pub approver_group: Option<&'a str>,
}

impl Confman {
    pub fn create_namespace(
        &self,
        token: Option<&str>,
        path: &str,
        settings: NamespaceSettings<'_>,
    ) -> Result<NamespaceRecord> {
        let ns = stored(path)?;
        let Some(parent) = keys::parent(&ns) else {
            return Err(Error::AlreadyExists {
                what: "namespace",
                name: "/".into(),
            });
        };
        let description = settings.description.unwrap_or_default();
        let schema = checked_schema(settings.schema)?;
        let approvals = checked_approvals(settings.approvals_required.unwrap_or(1))?;
        let approver_group = checked_group(settings.approver_group)?.flatten();
        let created = self.write(token, "namespace.create", |tx, caller| {
            tx.require(caller, Permission::Admin, &parent)?;
            if tx.get(&keys::namespace(&ns))?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "namespace",
                    name: keys::display_path(&ns),
                });
            }
            let record = NamespaceRecord {
                path: ns.clone(),
                description: description.to_string(),
                schema: schema.clone(),
                approvals_required: approvals,
                created_at_ms: tx.now_ms,
                created_by: caller.name.clone(),
                grants: Default::default(),
                approver_group: approver_group.clone(),
            };
            tx.set_record(keys::namespace(&ns), &record);
            tx.audit(
                caller,
                "namespace.create",
                vec![keys::display_path(&ns)],
                None,
                serde_json::json!({
                    "approvals_required": approvals,
                    "approver_group": approver_group,
                    "schema": schema.is_some(),
                }),
            );
            Ok(record)
        });
        Ok(created?.0)
    }

    /// Changes the fields given; an empty schema removes it. Entries already published
    /// are not re-checked against a new schema: every later save and publish is.
    pub fn update_namespace(
        &self,
        token: Option<&str>,
        path: &str,
        settings: NamespaceSettings<'_>,
    ) -> Result<NamespaceRecord> {
        let ns = stored(path)?;
        let description = settings.description;
        let schema = match settings.schema {
            None => None,
            Some([]) => Some(None),
            Some(text) => Some(checked_schema(Some(text))?),
        };
        let approvals = (settings.approvals_required.map(checked_approvals)).transpose()?;
        let approver_group = checked_group(settings.approver_group)?;
        let updated = self.write(token, "namespace.update", |tx, caller| {
            tx.require(caller, Permission::Admin, &ns)?;
            let before = tx.namespace(&ns)?;
            let mut record = before.clone();
            if let Some(description) = description {
                record.description = description.to_string();
            }
            if let Some(schema) = &schema {
                record.schema = schema.clone();
            }
            if let Some(approvals) = approvals {
                record.approvals_required = approvals;
            }
            if let Some(group) = &approver_group {
                record.approver_group = group.clone();
            }
            if record != before {
                tx.set_record(keys::namespace(&ns), &record);
                tx.audit(
                    caller,
                    "namespace.update",
                    vec![keys::display_path(&ns)],
                    None,
                    serde_json::json!({
                        "description": description.is_some(),
                        "schema": schema.as_ref().map(|s| s.is_some()),
                        "approvals_required": {
                            "before": before.approvals_required,
                            "after": record.approvals_required,
                        },
                        "approver_group": {
                            "before": before.approver_group,
                            "after": record.approver_group,
                        },
                    }),
                );
            }
            Ok(record)
        });
        Ok(updated?.0)
    }

    pub fn describe_namespace(&self, token: Option<&str>, path: &str) -> Result<NamespaceRecord> {
        let ns = stored(path)?;
        self.read(token, |tx, caller| {
            let record = tx.namespace(&ns)?;
            tx.require(caller, Permission::Read, &ns)?;
            Ok(record)
        })
    }

    /// The namespaces below `path` (its children, or with `recursive` its whole subtree),
    /// in path order, after `continuation` (a path a previous page ended at).
    pub fn list_namespaces(
        &self,
        token: Option<&str>,
        path: &str,
        recursive: bool,
        limit: i64,
        continuation: Option<&str>,
    ) -> Result<(Vec<NamespaceRecord>, Option<String>)> {
        let ns = stored(path)?;
        let limit = page_limit(limit)?;
        let after = continuation.map(stored).transpose()?;
        self.read(token, |tx, caller| {
            tx.namespace(&ns)?;
            tx.require(caller, Permission::Read, &ns)?;
            let prefix = keys::namespaces_below(&ns);
            let mut start = prefix.clone();
            start.push(0);
            if let Some(after) = &after {
                start = keys::namespace(after);
                start.push(0);
            }
            let end = keys::prefix_end(&prefix);
            let depth = ns.matches('/').count();
            let mut out = Vec::new();
            let mut last = None;
            // Scans the subtree in pages, keeping children only unless recursive.
            loop {
                let page = tx.scan_at(&start, &end, limit + 1, false, tx.version)?;
                let exhausted = page.len() <= limit;
                for stored in &page {
                    let record: NamespaceRecord =
                        model::decode(&stored.value, "namespace").map_err(Error::Internal)?;
                    if recursive || record.path.matches('/').count() == depth + 1 {
                        if out.len() == limit {
                            return Ok((out, last));
                        }
                        last = Some(keys::display_path(&record.path));
                        out.push(record);
                    }
                }
                match (exhausted, page.last()) {
                    (false, Some(stored)) => {
                        start = stored.key.clone();
                        start.push(0);
                    }
                    _ => return Ok((out, None)),
                }
            }
        })
    }

    /// Deletes an empty namespace: no live entries, no namespaces below it. The history of
    /// entries once in it stays (audit), and so does their revision count should the
    /// namespace be created again.
    pub fn delete_namespace(&self, token: Option<&str>, path: &str) -> Result<()> {
        let ns = stored(path)?;
        if ns == "/" {
            return Err(Error::Invalid(
                "the root namespace cannot be deleted".into(),
            ));
        }
        self.write(token, "namespace.delete", |tx, caller| {
            tx.namespace(&ns)?;
            tx.require(caller, Permission::Admin, &ns)?;
            let below = keys::namespaces_below(&ns);
            let mut start = below.clone();
            start.push(0);
            if !tx
                .scan(&start, &keys::prefix_end(&below), 1, false)?
                .is_empty()
            {
                return Err(Error::Invalid(format!(
                    "namespace {} has namespaces below it",
                    keys::display_path(&ns)
                )));
            }
            let metas = keys::metas_in(&ns);
            for stored in tx.scan(&metas, &keys::prefix_end(&metas), usize::MAX, false)? {
                let revision: RevisionRecord =
                    model::decode(&stored.value, "revision").map_err(Error::Internal)?;
                if !revision.deleted {
                    return Err(Error::Invalid(format!(
                        "namespace {} still has entries",
                        keys::display_path(&ns)
                    )));
                }
            }
            tx.clear(keys::namespace(&ns));
            tx.audit(
                caller,
                "namespace.delete",
                vec![keys::display_path(&ns)],
                None,
                serde_json::json!({}),
            );
            Ok(())
        })?;
        Ok(())
    }

    /// The entry's newest revision (or `revision`), read at `read_version` or
    /// linearizably. Permissions are checked now, whatever version the entry is read at.
    pub fn get_entry(
        &self,
        token: Option<&str>,
        path: &str,
        key: &str,
        revision: Option<u64>,
        read_version: Option<u64>,
    ) -> Result<EntryView> {
        let ns = stored(path)?;
        check_name("entry key", key)?;
        self.read(token, |tx, caller| {
            tx.require(caller, Permission::Read, &ns)?;
            let version = read_version.unwrap_or(tx.version);
            let not_found = || Error::NotFound {
                what: "entry",
                name: model::entry_name(&ns, key),
            };
            let (record, published_version) = match revision {
                None => {
                    let stored = tx.get_at(&keys::meta(&ns, key), version)?;
                    let stored = stored.ok_or_else(not_found)?;
                    (revision_record(&stored)?, stored.mod_version)
                }
                Some(revision) => {
                    let stored = tx.get_at(&keys::history(&ns, key, revision), version)?;
                    let stored = stored.ok_or_else(|| Error::NotFound {
                        what: "revision",
                        name: format!("{}@{revision}", model::entry_name(&ns, key)),
                    })?;
                    (revision_record(&stored)?, stored.mod_version)
                }
            };
            if record.deleted && revision.is_none() {
                return Err(not_found());
            }
            let value = entry_value(tx, &ns, key, &record, version)?;
            Ok(EntryView {
                ns: ns.clone(),
                key: key.to_string(),
                value,
                revision: record,
                published_version,
                read_version: version,
            })
        })
    }

    /// The live entries of a namespace (or its subtree), in (namespace, key) order, after
    /// `continuation` ("/ns:key" a previous page ended at).
    #[allow(clippy::too_many_arguments)]
    pub fn list_entries(
        &self,
        token: Option<&str>,
        path: &str,
        recursive: bool,
        limit: i64,
        continuation: Option<&str>,
        read_version: Option<u64>,
        values: bool,
    ) -> Result<(Vec<EntryView>, Option<String>, u64)> {
        let ns = stored(path)?;
        let limit = page_limit(limit)?;
        let after = match continuation {
            None => None,
            Some(text) => {
                let (p, k) = text
                    .rsplit_once(':')
                    .ok_or_else(|| Error::Invalid("continuation is not /ns:key".into()))?;
                Some(keys::meta(&stored(p)?, k))
            }
        };
        self.read(token, |tx, caller| {
            tx.namespace(&ns)?;
            tx.require(caller, Permission::Read, &ns)?;
            let version = read_version.unwrap_or(tx.version);
            let prefix = match recursive {
                true => keys::metas_under(&ns),
                false => keys::metas_in(&ns),
            };
            let end = keys::prefix_end(&prefix);
            let mut start = match &after {
                Some(after) => {
                    let mut start = after.clone();
                    start.push(0);
                    start
                }
                None => prefix.clone(),
            };
            let mut out = Vec::new();
            loop {
                let page = tx.scan_at(&start, &end, limit + 1, false, version)?;
                let exhausted = page.len() <= limit;
                for stored in &page {
                    let record = revision_record(stored)?;
                    if record.deleted {
                        continue;
                    }
                    let (entry_ns, key) = keys::split_meta(&stored.key)
                        .ok_or_else(|| Error::Internal("malformed meta key".into()))?;
                    if out.len() == limit {
                        let last: &EntryView = out.last().expect("limit is positive");
                        let next = model::entry_name(&last.ns, &last.key);
                        return Ok((out, Some(next), version));
                    }
                    let value = match values {
                        true => entry_value(tx, &entry_ns, &key, &record, version)?,
                        false => None,
                    };
                    out.push(EntryView {
                        ns: entry_ns,
                        key,
                        value,
                        revision: record,
                        published_version: stored.mod_version,
                        read_version: version,
                    });
                }
                match (exhausted, page.last()) {
                    (false, Some(stored)) => {
                        start = stored.key.clone();
                        start.push(0);
                    }
                    _ => return Ok((out, None, version)),
                }
            }
        })
    }

    /// Published revisions of an entry, newest first, below `before_revision` if given;
    /// each with the store version it was published at.
    pub fn entry_history(
        &self,
        token: Option<&str>,
        path: &str,
        key: &str,
        limit: i64,
        before_revision: Option<u64>,
    ) -> Result<Vec<(RevisionRecord, u64)>> {
        let ns = stored(path)?;
        check_name("entry key", key)?;
        let limit = page_limit(limit)?;
        self.read(token, |tx, caller| {
            tx.require(caller, Permission::Read, &ns)?;
            let start = keys::histories(&ns, key);
            let end = match before_revision {
                Some(before) => keys::history(&ns, key, before),
                None => keys::prefix_end(&start),
            };
            let found = tx.scan_at(&start, &end, limit, true, tx.version)?;
            if found.is_empty() && before_revision.is_none() {
                return Err(Error::NotFound {
                    what: "entry",
                    name: model::entry_name(&ns, key),
                });
            }
            (found.iter())
                .map(|stored| Ok((revision_record(stored)?, stored.mod_version)))
                .collect()
        })
    }

    /// The RFC 6902 patch and a unified text diff from revision `from` (0: before the
    /// entry existed) to revision `to` (None: the newest).
    pub fn diff_entry(
        &self,
        token: Option<&str>,
        path: &str,
        key: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<(Vec<u8>, String)> {
        let ns = stored(path)?;
        check_name("entry key", key)?;
        self.read(token, |tx, caller| {
            tx.require(caller, Permission::Read, &ns)?;
            let newest = match tx.get(&keys::meta(&ns, key))? {
                Some(stored) => revision_record(&stored)?.revision,
                None => {
                    return Err(Error::NotFound {
                        what: "entry",
                        name: model::entry_name(&ns, key),
                    })
                }
            };
            let to = to.unwrap_or(newest);
            let value_of = |tx: &mut Tx<'_>, revision: u64| -> Result<Vec<u8>> {
                if revision == 0 {
                    return Ok(b"null".to_vec());
                }
                let stored = tx.get_at(&keys::history(&ns, key, revision), tx.version)?;
                let stored = stored.ok_or_else(|| Error::NotFound {
                    what: "revision",
                    name: format!("{}@{revision}", model::entry_name(&ns, key)),
                })?;
                let record = revision_record(&stored)?;
                Ok(entry_value(tx, &ns, key, &record, tx.version)?
                    .unwrap_or_else(|| b"null".to_vec()))
            };
            let before = value_of(tx, from)?;
            let after = value_of(tx, to)?;
            let parse = |bytes: &[u8]| {
                serde_json::from_slice::<serde_json::Value>(bytes)
                    .unwrap_or_else(|_| serde_json::Value::String(hex_or_text(bytes)))
            };
            let patch = json_patch::diff(&parse(&before), &parse(&after));
            let patch = serde_json::to_vec(&patch).expect("a patch serializes");
            let text = schema::text_diff(&before, &after, &format!("r{from}"), &format!("r{to}"));
            Ok((patch, text))
        })
    }

    /// Published changes of the subtree of `path` from `from_version`: long polls up to
    /// `timeout` for one. Every entry of one change shares its version, and a page never
    /// splits a version.
    /// The published changes of the subtree `path` from `from_version`, waiting up to
    /// `timeout` for one. With `patches`, a JSON entry's event carries the RFC 6902 patch
    /// from its previous revision instead of the value, when that is worth it.
    pub fn watch_config(
        &self,
        token: Option<&str>,
        path: &str,
        from_version: u64,
        timeout: Duration,
        patches: bool,
    ) -> Result<(Vec<ConfigEvent>, u64)> {
        let ns = stored(path)?;
        self.read(token, |tx, caller| {
            tx.namespace(&ns)?;
            tx.require(caller, Permission::Read, &ns)
        })?;
        let prefix = keys::metas_under(&ns);
        let end = keys::prefix_end(&prefix);
        let (events, next) = self.store.watch(&prefix, &end, from_version, timeout)?;
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            if event.kind == EventKind::Delete {
                continue; // meta keys are never deleted; nothing a consumer needs
            }
            let Some(bytes) = event.value else { continue };
            let record: RevisionRecord =
                model::decode(&bytes, "revision").map_err(Error::Internal)?;
            let (entry_ns, key) = keys::split_meta(&event.key)
                .ok_or_else(|| Error::Internal("malformed meta key".into()))?;
            let value = match record.deleted {
                true => None,
                false => {
                    let value_key = keys::value(&entry_ns, &key, record.revision);
                    self.store.get(&value_key, event.version)?.map(|s| s.value)
                }
            };
            let mut event = ConfigEvent {
                ns: entry_ns,
                key,
                revision: record,
                version: event.version,
                value,
                patch: None,
            };
            if patches {
                event.patch = self.watch_patch(&event)?;
                if event.patch.is_some() {
                    event.value = None;
                }
            }
            out.push(event);
        }
        Ok((out, next))
    }
}

impl Confman {
    /// The patch from the previous revision's value to `event`'s, when the entry is JSON,
    /// the value at least `WATCH_PATCH_MIN_BYTES`, the previous revision not a deletion,
    /// and the patch under half the value and reproducing it exactly.
    fn watch_patch(&self, event: &ConfigEvent) -> Result<Option<Vec<u8>>> {
        let revision = &event.revision;
        let Some(value) = event.value.as_deref() else {
            return Ok(None);
        };
        let json = revision.content_type.starts_with(model::JSON);
        if !json || revision.revision < 2 || value.len() < WATCH_PATCH_MIN_BYTES {
            return Ok(None);
        }
        let id = (event.ns.clone(), event.key.clone(), revision.revision);
        if let Some(cached) = self.patches.lock().expect("patch cache").get(&id) {
            return Ok(cached);
        }
        // Revision values are written once, so any version at or after this one holds it.
        let previous = keys::value(&event.ns, &event.key, revision.revision - 1);
        let patch = match self.store.get(&previous, event.version)? {
            Some(previous) => {
                patch_between(&previous.value, value, self.store.document_tree_bytes_max())
            }
            None => None, // The previous revision deleted the entry.
        };
        (self.patches.lock().expect("patch cache")).insert(id, patch.clone());
        Ok(patch)
    }
}

/// The RFC 6902 patch that `document::apply_json_patch` turns `from` into `to` with, when
/// under half of `to` (`document::delta`; stored JSON values are canonical). Revisions
/// larger than `tree_bytes_max` are diffed by scanning (`document::diff_canonical`).
fn patch_between(from: &[u8], to: &[u8], tree_bytes_max: usize) -> Option<Vec<u8>> {
    if from.len().max(to.len()) > tree_bytes_max {
        return document::diff_canonical(from, to);
    }
    let (from_value, to_value) = super::parse_beside(from, || {
        serde_json::from_slice::<serde_json::Value>(to).ok()
    });
    let patch = match (&from_value, &to_value) {
        (Some(f), Some(t)) => document::delta(from, true, f, t, to),
        _ => None,
    };
    super::drop_later((from_value, to_value));
    patch
}

fn checked_schema(text: Option<&[u8]>) -> Result<Option<String>> {
    match text {
        None | Some([]) => Ok(None),
        Some(text) => {
            let (value, _) = schema::compile(text)?;
            Ok(Some(value.to_string()))
        }
    }
}

/// None: not given; Some(None): removed (an empty name); Some(Some(name)): a valid name.
fn checked_group(group: Option<&str>) -> Result<Option<Option<String>>> {
    match group {
        None => Ok(None),
        Some("") => Ok(Some(None)),
        Some(name) => {
            check_name("group", name)?;
            Ok(Some(Some(name.to_string())))
        }
    }
}

fn checked_approvals(approvals: u32) -> Result<u32> {
    if approvals > APPROVALS_MAX {
        return Err(Error::Invalid(format!(
            "approvals_required {approvals} is over {APPROVALS_MAX}"
        )));
    }
    Ok(approvals)
}

pub(super) fn revision_record(stored: &Stored) -> Result<RevisionRecord> {
    model::decode(&stored.value, "revision").map_err(Error::Internal)
}

/// The value of a revision (None for a deletion).
pub(super) fn entry_value(
    tx: &Tx<'_>,
    ns: &str,
    key: &str,
    record: &RevisionRecord,
    version: u64,
) -> Result<Option<Vec<u8>>> {
    if record.deleted {
        return Ok(None);
    }
    let value_key = keys::value(ns, key, record.revision);
    match tx.get_at(&value_key, version)? {
        Some(stored) => Ok(Some(stored.value)),
        None => Err(Error::Internal(format!(
            "revision {} of {} has no value",
            record.revision,
            model::entry_name(ns, key)
        ))),
    }
}

fn hex_or_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => super::hex(bytes),
    }
}
