//! What the configuration service needs of the KV store: snapshot reads at a version and
//! FoundationDB-style optimistic commits (every key read is a read conflict range, so a
//! commit fails with `Conflict` when anything it read moved). [`RouterStore`] is the
//! replicated store; unit tests use an in-memory one.

use std::time::Duration;

use crate::executor::{Event, KeyRange, Mutation};
use crate::executor::{KeyValue, KvReader, RangePage};
use crate::router::{PrimaryRouter, Result, RouterError};

/// One stored key, as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_version: u64,
}

impl From<KeyValue> for Stored {
    fn from(kv: KeyValue) -> Stored {
        Stored {
            key: kv.key,
            value: kv.value,
            mod_version: kv.mod_version,
        }
    }
}

pub trait Store: Send + Sync {
    /// A linearizable read version.
    fn read_version(&self) -> Result<u64>;
    fn get(&self, key: &[u8], version: u64) -> Result<Option<Stored>>;
    /// Up to `limit` keys of [start, end) at `version`, ascending (descending if `reverse`).
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
        version: u64,
    ) -> Result<Vec<Stored>>;
    /// Applies `mutations` unless a key in `reads` was written after `read_version`
    /// (`RouterError::Conflict`). Returns the commit version.
    fn commit(
        &self,
        read_version: u64,
        mutations: Vec<Mutation>,
        reads: Vec<KeyRange>,
    ) -> Result<u64>;
    /// The change events of [start, end) from `from_version`, waiting up to `timeout` for
    /// one; and the version to continue from.
    fn watch(
        &self,
        start: &[u8],
        end: &[u8],
        from_version: u64,
        timeout: Duration,
    ) -> Result<(Vec<Event>, u64)>;
    /// Entries larger than this are canonicalized and diffed without a parsed tree
    /// (`limits.document_tree_bytes_max`).
    fn document_tree_bytes_max(&self) -> usize {
        crate::executor::document::TREE_BYTES_MAX_DEFAULT
    }
}

/// The replicated store, called from a blocking thread (the Thrift handlers run on
/// tokio's blocking pool).
pub struct RouterStore {
    router: PrimaryRouter,
    runtime: tokio::runtime::Handle,
}

impl RouterStore {
    pub fn new(router: PrimaryRouter, runtime: tokio::runtime::Handle) -> RouterStore {
        RouterStore { router, runtime }
    }
}

impl Store for RouterStore {
    fn read_version(&self) -> Result<u64> {
        self.runtime.block_on(self.router.read_version())
    }

    fn document_tree_bytes_max(&self) -> usize {
        self.router.limits().document_tree_bytes_max
    }

    fn get(&self, key: &[u8], version: u64) -> Result<Option<Stored>> {
        let (kv, _) = self.runtime.block_on(self.router.get(key, Some(version)))?;
        Ok(kv.map(Stored::from))
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
        version: u64,
    ) -> Result<Vec<Stored>> {
        let range = KeyRange {
            start: start.to_vec(),
            end: end.to_vec(),
        };
        scan_pages(limit, |want, continuation| {
            let read = (self.router).get_range(&range, want, reverse, Some(version), continuation);
            Ok(self.runtime.block_on(read)?.0)
        })
    }

    fn commit(
        &self,
        read_version: u64,
        mutations: Vec<Mutation>,
        reads: Vec<KeyRange>,
    ) -> Result<u64> {
        let commit = self.router.commit(read_version, mutations, reads, None);
        Ok(self.runtime.block_on(commit)?.version)
    }

    fn watch(
        &self,
        start: &[u8],
        end: &[u8],
        from_version: u64,
        timeout: Duration,
    ) -> Result<(Vec<Event>, u64)> {
        let range = KeyRange {
            start: start.to_vec(),
            end: end.to_vec(),
        };
        let page = (self.runtime).block_on(self.router.watch(&range, from_version, timeout))?;
        Ok((page.events, page.next_version))
    }
}

/// Up to `limit` keys from pages that `page(want, continuation)` reads.
fn scan_pages(
    limit: usize,
    mut page: impl FnMut(usize, Option<Vec<u8>>) -> Result<RangePage>,
) -> Result<Vec<Stored>> {
    let mut out = Vec::new();
    let mut continuation = None;
    while out.len() < limit {
        let read = page(limit - out.len(), continuation)?;
        out.extend(read.kvs.into_iter().map(Stored::from));
        if !read.more || read.continuation.is_none() {
            break;
        }
        continuation = read.continuation;
    }
    out.truncate(limit);
    Ok(out)
}

/// This replica's applied state, read without a quorum round: for the checks the API
/// server makes of every KV call (a token, its principal, its grants). Not linearizable,
/// and read-only: `commit` and `watch` are refused.
pub struct LocalStore {
    reader: KvReader,
}

impl LocalStore {
    pub fn new(reader: KvReader) -> LocalStore {
        LocalStore { reader }
    }
}

fn local_error(error: crate::executor::Error) -> RouterError {
    RouterError::Unavailable {
        message: format!("this replica cannot read its applied state: {error}"),
        retry_after_ms: 100,
    }
}

impl Store for LocalStore {
    fn read_version(&self) -> Result<u64> {
        Ok(self.reader.applied().current_version)
    }

    fn get(&self, key: &[u8], version: u64) -> Result<Option<Stored>> {
        let kv = self.reader.get(key, version).map_err(local_error)?;
        Ok(kv.map(Stored::from))
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
        version: u64,
    ) -> Result<Vec<Stored>> {
        let range = KeyRange {
            start: start.to_vec(),
            end: end.to_vec(),
        };
        scan_pages(limit, |want, continuation| {
            (self.reader)
                .get_range(&range, want, reverse, version, continuation)
                .map_err(local_error)
        })
    }

    fn commit(&self, _: u64, _: Vec<Mutation>, _: Vec<KeyRange>) -> Result<u64> {
        Err(RouterError::Internal("the local store is read-only".into()))
    }

    fn watch(&self, _: &[u8], _: &[u8], _: u64, _: Duration) -> Result<(Vec<Event>, u64)> {
        Err(RouterError::Internal(
            "the local store does not watch".into(),
        ))
    }
}

/// An in-memory multi-version store with the same commit rule, for unit tests.
#[cfg(test)]
pub mod memory {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::executor::EventKind;
    use crate::router::RouterError;

    #[derive(Default)]
    pub struct MemoryStore {
        inner: Mutex<Inner>,
    }

    /// A key's versions, oldest first: (version, value or None for a delete).
    type Versions = Vec<(u64, Option<Vec<u8>>)>;

    #[derive(Default)]
    struct Inner {
        version: u64,
        /// key -> (version, value or None for a delete), oldest first.
        keys: BTreeMap<Vec<u8>, Versions>,
        /// The bytes of values and patches committed so far: what a log would carry.
        logged_bytes: u64,
        /// The most mutations one commit held.
        mutations_max: usize,
    }

    impl MemoryStore {
        /// The bytes of values and patches committed so far.
        pub fn logged_bytes(&self) -> u64 {
            self.inner.lock().unwrap().logged_bytes
        }

        /// The most mutations one commit held.
        pub fn mutations_max(&self) -> usize {
            self.inner.lock().unwrap().mutations_max
        }
    }

    impl Inner {
        fn at(&self, key: &[u8], version: u64) -> Option<Stored> {
            let versions = self.keys.get(key)?;
            let (mod_version, value) = versions.iter().rev().find(|(v, _)| *v <= version)?;
            value.as_ref().map(|value| Stored {
                key: key.to_vec(),
                value: value.clone(),
                mod_version: *mod_version,
            })
        }
    }

    fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
        key >= start && (end.is_empty() || key < end)
    }

    fn apply_all(inner: &mut Inner, version: u64, mutations: Vec<Mutation>) -> Result<()> {
        inner.mutations_max = inner.mutations_max.max(mutations.len());
        for mutation in mutations {
            inner.logged_bytes += match &mutation {
                Mutation::Set { value, .. } => value.len() as u64,
                Mutation::SetPatched { patch, .. } => patch.len() as u64,
                _ => 0,
            };
            match mutation {
                Mutation::Set { key, value } => inner
                    .keys
                    .entry(key)
                    .or_default()
                    .push((version, Some(value))),
                Mutation::Clear { key } => inner.keys.entry(key).or_default().push((version, None)),
                Mutation::ClearRange { start, end } => {
                    let live: Vec<Vec<u8>> = (inner.keys.iter())
                        .filter(|(k, _)| in_range(k, &start, &end))
                        .filter(|(_, versions)| matches!(versions.last(), Some((_, Some(_)))))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in live {
                        inner.keys.entry(key).or_default().push((version, None));
                    }
                }
                Mutation::Copy { key, from } => {
                    let value = inner.at(&from, version).map(|s| s.value);
                    let value = value.ok_or(RouterError::InvalidArgument(
                        "copy from a key that holds no value".into(),
                    ))?;
                    inner
                        .keys
                        .entry(key)
                        .or_default()
                        .push((version, Some(value)))
                }
                Mutation::SetPatched { key, base, patch } => {
                    let base = inner.at(&base, version).map(|s| s.value);
                    let base = base.ok_or(RouterError::InvalidArgument(
                        "patch of a key that holds no value".into(),
                    ))?;
                    // The executor's function and refusal.
                    let value = crate::executor::document::apply_json_patch(&base, &patch)
                        .map_err(RouterError::Document)?;
                    inner
                        .keys
                        .entry(key)
                        .or_default()
                        .push((version, Some(value)))
                }
                other => panic!("the memory store does not take {other:?}"),
            }
        }
        Ok(())
    }

    impl Store for MemoryStore {
        fn read_version(&self) -> Result<u64> {
            Ok(self.inner.lock().unwrap().version)
        }

        fn get(&self, key: &[u8], version: u64) -> Result<Option<Stored>> {
            Ok(self.inner.lock().unwrap().at(key, version))
        }

        fn scan(
            &self,
            start: &[u8],
            end: &[u8],
            limit: usize,
            reverse: bool,
            version: u64,
        ) -> Result<Vec<Stored>> {
            let inner = self.inner.lock().unwrap();
            let keys = inner.keys.keys().filter(|k| in_range(k, start, end));
            let found = keys.filter_map(|k| inner.at(k, version));
            Ok(match reverse {
                false => found.take(limit).collect(),
                true => {
                    let mut all: Vec<Stored> = found.collect();
                    all.reverse();
                    all.truncate(limit);
                    all
                }
            })
        }

        fn commit(
            &self,
            read_version: u64,
            mutations: Vec<Mutation>,
            reads: Vec<KeyRange>,
        ) -> Result<u64> {
            let mut inner = self.inner.lock().unwrap();
            for (key, versions) in &inner.keys {
                let written_after = versions.last().is_some_and(|(v, _)| *v > read_version);
                if written_after && reads.iter().any(|r| in_range(key, &r.start, &r.end)) {
                    return Err(RouterError::Conflict { key: key.clone() });
                }
            }
            // All or nothing, as in the executor: a rejected mutation undoes the others.
            let before = inner.keys.clone();
            let version = inner.version + 1;
            let applied = apply_all(&mut inner, version, mutations);
            match applied {
                Ok(()) => inner.version = version,
                Err(error) => {
                    inner.keys = before;
                    return Err(error);
                }
            }
            Ok(version)
        }

        fn watch(
            &self,
            start: &[u8],
            end: &[u8],
            from_version: u64,
            _timeout: Duration,
        ) -> Result<(Vec<Event>, u64)> {
            let inner = self.inner.lock().unwrap();
            let mut events = Vec::new();
            for (key, versions) in inner.keys.iter().filter(|(k, _)| in_range(k, start, end)) {
                for (version, value) in versions.iter().filter(|(v, _)| *v >= from_version) {
                    events.push(Event {
                        kind: match value {
                            Some(_) => EventKind::Put,
                            None => EventKind::Delete,
                        },
                        key: key.clone(),
                        value: value.clone(),
                        version: *version,
                        patch: None,
                    });
                }
            }
            events.sort_by(|a, b| (a.version, &a.key).cmp(&(b.version, &b.key)));
            Ok((events, inner.version + 1))
        }
    }
}
