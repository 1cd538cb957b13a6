//! Audit queries. Events are written by the calls themselves, in their own commit (a
//! denied call: in a commit of its own); nothing in any API changes or deletes one.

use super::access::Permission;
use super::model::{self, AuditRecord};
use super::{keys, page_limit, stored, Confman, Error, Result};

/// What to look for; every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// A namespace (as users write it): events touching it or anything below it.
    pub namespace: Option<String>,
    /// "/ns:key".
    pub entry: Option<String>,
    pub actor: Option<String>,
    pub change_id: Option<u64>,
    pub from_ms: Option<u64>,
    /// Inclusive.
    pub to_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditView {
    pub id: String,
    pub record: AuditRecord,
}

impl AuditFilter {
    fn matches(&self, record: &AuditRecord, namespace: Option<&str>) -> bool {
        let touches_namespace = |ns: &str| {
            record.targets.iter().any(|target| {
                let path = target.split(':').next().unwrap_or(target);
                ns == "/" && path.starts_with('/')
                    || path == ns
                    || path.starts_with(&format!("{ns}/"))
            })
        };
        namespace.is_none_or(touches_namespace)
            && (self.entry.as_ref()).is_none_or(|e| record.targets.contains(e))
            && (self.actor.as_ref()).is_none_or(|a| &record.actor == a)
            && self.change_id.is_none_or(|id| record.change_id == Some(id))
    }
}

impl Confman {
    /// Audit events oldest first, after `continuation` (an event id). Needs admin on the
    /// namespace filtered by (or the entry's namespace), else on `/`.
    pub fn query_audit(
        &self,
        token: Option<&str>,
        filter: &AuditFilter,
        limit: i64,
        continuation: Option<&str>,
    ) -> Result<(Vec<AuditView>, Option<String>)> {
        let limit = page_limit(limit)?;
        let scope = match (&filter.namespace, &filter.entry) {
            (Some(ns), _) => stored(ns)?,
            (None, Some(entry)) => {
                let (ns, _) = entry
                    .rsplit_once(':')
                    .ok_or_else(|| Error::Invalid("entry is not /ns:key".into()))?;
                stored(ns)?
            }
            (None, None) => "/".to_string(),
        };
        let namespace = filter
            .namespace
            .as_ref()
            .map(|_| keys::display_path(&scope));
        let start = match continuation {
            Some(id) => {
                let mut key = keys::audit_key_of_id(id)
                    .ok_or_else(|| Error::Invalid(format!("{id:?} is not an audit event id")))?;
                key.push(0);
                key
            }
            None => keys::audits_from(filter.from_ms.unwrap_or(0)),
        };
        let end = match filter.to_ms {
            Some(to) => keys::audits_from(to.saturating_add(1)),
            None => keys::prefix_end(&keys::audits()),
        };
        self.read(token, |tx, caller| {
            tx.require(caller, Permission::Admin, &scope)?;
            let mut out = Vec::new();
            let mut from = start.clone();
            loop {
                let page = tx.scan_at(&from, &end, limit + 1, false, tx.version)?;
                let exhausted = page.len() <= limit;
                for stored in &page {
                    let record: AuditRecord =
                        model::decode(&stored.value, "audit").map_err(Error::Internal)?;
                    if !filter.matches(&record, namespace.as_deref()) {
                        continue;
                    }
                    if out.len() == limit {
                        let next = out.last().map(|view: &AuditView| view.id.clone());
                        return Ok((out, next));
                    }
                    out.push(AuditView {
                        id: keys::audit_id(&stored.key),
                        record,
                    });
                }
                match (exhausted, page.last()) {
                    (false, Some(stored)) => {
                        from = stored.key.clone();
                        from.push(0);
                    }
                    _ => return Ok((out, None)),
                }
            }
        })
    }
}

/// Where one imported entry came from: its last commit in the repository it was imported
/// from (`git log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRevision {
    /// A namespace, as users write it.
    pub namespace: String,
    pub key: String,
    pub author: String,
    pub email: String,
    pub authored_at_ms: u64,
    pub commit: String,
    pub subject: String,
}

/// Revisions one `import_history` call records at most.
pub const IMPORTED_REVISIONS_MAX: usize = 1000;

impl Confman {
    /// Records imported history as audit events (`import.history`, one per entry, the
    /// caller as actor and the original author, time and commit in the detail). Needs admin
    /// on each entry's namespace, which must exist.
    pub fn import_history(
        &self,
        token: Option<&str>,
        revisions: &[ImportedRevision],
    ) -> Result<usize> {
        if revisions.len() > IMPORTED_REVISIONS_MAX {
            return Err(Error::Invalid(format!(
                "at most {IMPORTED_REVISIONS_MAX} imported revisions per call, not {}",
                revisions.len()
            )));
        }
        let mut namespaces = Vec::new();
        for revision in revisions {
            super::check_name("entry key", &revision.key)?;
            namespaces.push(stored(&revision.namespace)?);
        }
        let written = self.write(token, "import.history", |tx, caller| {
            let mut checked = std::collections::BTreeSet::new();
            for (revision, ns) in revisions.iter().zip(&namespaces) {
                if checked.insert(ns.clone()) {
                    tx.require(caller, Permission::Admin, ns)?;
                }
                let target = format!("{}:{}", keys::display_path(ns), revision.key);
                tx.audit(
                    caller,
                    "import.history",
                    vec![target],
                    None,
                    serde_json::json!({
                        "author": revision.author,
                        "email": revision.email,
                        "authored_at_ms": revision.authored_at_ms,
                        "commit": revision.commit,
                        "subject": revision.subject,
                    }),
                );
            }
            Ok(revisions.len())
        });
        Ok(written?.0)
    }
}
