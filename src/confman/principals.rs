//! Principals, their tokens, and role grants on namespaces.
//!
//! A token is `pxt_<id>_<secret>`: the id (16 hex digits) names its record, the secret
//! (64 hex digits, 32 random bytes) is stored only as its SHA-256. The token is shown once,
//! when it is created.

use std::collections::BTreeSet;

use super::access::{Permission, Role};
use super::model::{NamespaceRecord, PrincipalRecord, TokenRecord};
use super::{check_name, hash_secret, hex, keys, random_bytes, stored, Caller, Confman, Error};
use super::{Result, Tx};

/// The principal bootstrapped with a new cluster: it holds every permission.
pub const ROOT: &str = "root";

const TOKEN_PREFIX: &str = "pxt_";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    pub principal: String,
    pub token_id: String,
    pub expires_at_ms: Option<u64>,
    pub root: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCreated {
    pub token_id: String,
    /// The whole token; only its hash is stored.
    pub token: String,
    pub expires_at_ms: Option<u64>,
}

pub(super) fn split_token(token: &str) -> Result<(&str, &str)> {
    let malformed = || Error::Unauthenticated("the token is not a paxkv token".into());
    let rest = token
        .trim()
        .strip_prefix(TOKEN_PREFIX)
        .ok_or_else(malformed)?;
    let (id, secret) = rest.split_once('_').ok_or_else(malformed)?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(id, 16) || !hex(secret, 64) {
        return Err(malformed());
    }
    Ok((id, secret))
}

/// A new random token: (id, whole token, hash of its secret).
pub(super) fn new_token() -> (String, String, String) {
    let id = hex(&random_bytes::<8>());
    let secret = hex(&random_bytes::<32>());
    let token = format!("{TOKEN_PREFIX}{id}_{secret}");
    (id, token, hash_secret(&secret))
}

/// A token for the root principal, to be given to `bootstrap_root` (created where the
/// cluster is created, so that it can be shown there).
pub fn new_root_token() -> String {
    new_token().1
}

impl Confman {
    /// Creates the root principal with `token` and the root namespace, once: if root
    /// exists, nothing is written. Returns whether it created them.
    pub fn bootstrap_root(&self, token: &str) -> Result<bool> {
        let (id, secret) = split_token(token)?;
        let (id, hash) = (id.to_string(), hash_secret(secret));
        for _ in 0..super::CONFLICT_ATTEMPTS {
            let version = self.store.read_version()?;
            let mut tx = Tx::new(&*self.store, version, (self.clock)());
            if tx.get(&keys::principal(ROOT))?.is_some() {
                return Ok(false);
            }
            let root = PrincipalRecord {
                name: ROOT.to_string(),
                kind: "user".to_string(),
                description: "created with the cluster; holds every permission".to_string(),
                disabled: false,
                created_at_ms: tx.now_ms,
                created_by: ROOT.to_string(),
                root: true,
                kv_grants: Vec::new(),
                groups: BTreeSet::new(),
            };
            tx.set_record(keys::principal(ROOT), &root);
            tx.set_record(
                keys::token(&id),
                &TokenRecord {
                    id: id.clone(),
                    principal: ROOT.to_string(),
                    hash: hash.clone(),
                    description: "root token, created with the cluster".to_string(),
                    created_at_ms: tx.now_ms,
                    expires_at_ms: None,
                    revoked: false,
                },
            );
            if tx.get(&keys::namespace("/"))?.is_none() {
                tx.set_record(
                    keys::namespace("/"),
                    &NamespaceRecord {
                        path: "/".to_string(),
                        description: "the root namespace".to_string(),
                        schema: None,
                        approvals_required: 1,
                        created_at_ms: tx.now_ms,
                        created_by: ROOT.to_string(),
                        grants: Default::default(),
                        approver_group: None,
                    },
                );
            }
            let caller = Caller {
                name: ROOT.to_string(),
                root: true,
                token_id: id.clone(),
            };
            tx.audit(
                &caller,
                "cluster.bootstrap",
                vec![
                    format!("principal:{ROOT}"),
                    format!("token:{id}"),
                    "/".into(),
                ],
                None,
                serde_json::json!({}),
            );
            let (mutations, reads) = tx.finish();
            match self.store.commit(version, mutations, reads) {
                Ok(_) => return Ok(true),
                Err(crate::router::RouterError::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Internal("root bootstrap kept conflicting".into()))
    }

    pub fn authenticate(&self, token: &str) -> Result<AuthInfo> {
        let authenticated = self.read(Some(token), |tx, caller| {
            let (record, _) = tx
                .record::<TokenRecord>(&keys::token(&caller.token_id), "token")?
                .ok_or_else(|| Error::Internal("token vanished".into()))?;
            Ok(AuthInfo {
                principal: caller.name.clone(),
                token_id: caller.token_id.clone(),
                expires_at_ms: record.expires_at_ms,
                root: caller.root,
            })
        });
        let outcome = match &authenticated {
            Ok(_) => "ok",
            Err(Error::Unauthenticated(_)) => "refused",
            Err(_) => "error",
        };
        (self.metrics.authentications)
            .with_label_values(&[outcome])
            .inc();
        authenticated
    }

    pub fn whoami(&self, token: Option<&str>) -> Result<PrincipalRecord> {
        self.read(token, |tx, caller| principal(tx, &caller.name))
    }

    pub fn create_principal(
        &self,
        token: Option<&str>,
        name: &str,
        kind: &str,
        description: &str,
    ) -> Result<PrincipalRecord> {
        check_name("principal name", name)?;
        if !matches!(kind, "user" | "service") {
            return Err(Error::Invalid(format!(
                "principal kind {kind:?} is not user or service"
            )));
        }
        let created = self.write(token, "principal.create", |tx, caller| {
            tx.require(caller, Permission::Admin, "/")?;
            if tx.get(&keys::principal(name))?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "principal",
                    name: name.to_string(),
                });
            }
            let record = PrincipalRecord {
                name: name.to_string(),
                kind: kind.to_string(),
                description: description.to_string(),
                disabled: false,
                created_at_ms: tx.now_ms,
                created_by: caller.name.clone(),
                root: false,
                kv_grants: Vec::new(),
                groups: BTreeSet::new(),
            };
            tx.set_record(keys::principal(name), &record);
            tx.audit(
                caller,
                "principal.create",
                vec![format!("principal:{name}")],
                None,
                serde_json::json!({ "kind": kind }),
            );
            Ok(record)
        });
        Ok(created?.0)
    }

    pub fn list_principals(&self, token: Option<&str>) -> Result<Vec<PrincipalRecord>> {
        self.read(token, |tx, caller| {
            tx.require(caller, Permission::Admin, "/")?;
            let start = keys::principals();
            let end = keys::prefix_end(&start);
            let found = tx.scan(&start, &end, usize::MAX, false)?;
            (found.iter())
                .map(|stored| super::model::decode(&stored.value, "principal"))
                .collect::<std::result::Result<_, _>>()
                .map_err(Error::Internal)
        })
    }

    pub fn disable_principal(&self, token: Option<&str>, name: &str) -> Result<PrincipalRecord> {
        let disabled = self.write(token, "principal.disable", |tx, caller| {
            tx.require(caller, Permission::Admin, "/")?;
            let mut record = principal(tx, name)?;
            if record.root {
                return Err(Error::Invalid(
                    "the root principal cannot be disabled".into(),
                ));
            }
            if !record.disabled {
                record.disabled = true;
                tx.set_record(keys::principal(name), &record);
                tx.audit(
                    caller,
                    "principal.disable",
                    vec![format!("principal:{name}")],
                    None,
                    serde_json::json!({}),
                );
            }
            Ok(record)
        });
        Ok(disabled?.0)
    }

    /// A principal creates its own tokens; an admin of `/` creates anyone's.
    pub fn create_token(
        &self,
        token: Option<&str>,
        for_principal: &str,
        description: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<TokenCreated> {
        let created = self.write(token, "token.create", |tx, caller| {
            if caller.name != for_principal {
                tx.require(caller, Permission::Admin, "/")?;
            }
            let owner = principal(tx, for_principal)?;
            if owner.disabled {
                return Err(Error::Invalid(format!(
                    "principal {for_principal} is disabled"
                )));
            }
            let (id, whole, hash) = new_token();
            let expires_at_ms = ttl_seconds.map(|s| tx.now_ms.saturating_add(s * 1000));
            let record = TokenRecord {
                id: id.clone(),
                principal: for_principal.to_string(),
                hash,
                description: description.to_string(),
                created_at_ms: tx.now_ms,
                expires_at_ms,
                revoked: false,
            };
            tx.set_record(keys::token(&id), &record);
            tx.audit(
                caller,
                "token.create",
                vec![format!("principal:{for_principal}"), format!("token:{id}")],
                None,
                serde_json::json!({ "expires_at_ms": expires_at_ms }),
            );
            Ok(TokenCreated {
                token_id: id,
                token: whole,
                expires_at_ms,
            })
        });
        Ok(created?.0)
    }

    pub fn list_tokens(&self, token: Option<&str>, of: &str) -> Result<Vec<TokenRecord>> {
        self.read(token, |tx, caller| {
            if caller.name != of {
                tx.require(caller, Permission::Admin, "/")?;
            }
            let start = keys::tokens();
            let end = keys::prefix_end(&start);
            let mut out = Vec::new();
            for stored in tx.scan(&start, &end, usize::MAX, false)? {
                let record: TokenRecord =
                    super::model::decode(&stored.value, "token").map_err(Error::Internal)?;
                if record.principal == of {
                    out.push(TokenRecord {
                        hash: String::new(),
                        ..record
                    });
                }
            }
            Ok(out)
        })
    }

    pub fn revoke_token(&self, token: Option<&str>, id: &str) -> Result<TokenRecord> {
        let revoked = self.write(token, "token.revoke", |tx, caller| {
            let not_found = || Error::NotFound {
                what: "token",
                name: id.to_string(),
            };
            let (mut record, _) = tx
                .record::<TokenRecord>(&keys::token(id), "token")?
                .ok_or_else(not_found)?;
            if record.principal != caller.name {
                tx.require(caller, Permission::Admin, "/")?;
            }
            if !record.revoked {
                record.revoked = true;
                tx.set_record(keys::token(id), &record);
                tx.audit(
                    caller,
                    "token.revoke",
                    vec![
                        format!("principal:{}", record.principal),
                        format!("token:{id}"),
                    ],
                    None,
                    serde_json::json!({}),
                );
            }
            Ok(TokenRecord {
                hash: String::new(),
                ..record
            })
        });
        Ok(revoked?.0)
    }

    /// Adds the principal to `group` (or with `member` false takes it out); needs admin
    /// on `/`. A namespace with an approver group counts approvals from its members only.
    pub fn set_group(
        &self,
        token: Option<&str>,
        principal_name: &str,
        group: &str,
        member: bool,
    ) -> Result<PrincipalRecord> {
        check_name("group", group)?;
        let action = if member { "group.add" } else { "group.remove" };
        let changed = self.write(token, action, |tx, caller| {
            tx.require(caller, Permission::Admin, "/")?;
            let mut record = principal(tx, principal_name)?;
            let changed = match member {
                true => record.groups.insert(group.to_string()),
                false => record.groups.remove(group),
            };
            if changed {
                let detail = serde_json::json!({ "group": group });
                save_principal(tx, caller, action, &record, detail);
            }
            Ok(record)
        });
        Ok(changed?.0)
    }

    /// Grants (or with `grant` false, revokes) `role` on a namespace; needs admin there.
    pub fn set_role(
        &self,
        token: Option<&str>,
        path: &str,
        principal_name: &str,
        role: Role,
        grant: bool,
    ) -> Result<NamespaceRecord> {
        let ns = stored(path)?;
        let action = if grant { "grant.add" } else { "grant.remove" };
        let changed = self.write(token, action, |tx, caller| {
            tx.require(caller, Permission::Admin, &ns)?;
            principal(tx, principal_name)?;
            let mut record = tx.namespace(&ns)?;
            let roles = record.grants.entry(principal_name.to_string()).or_default();
            let changed = match grant {
                true => roles.insert(role),
                false => roles.remove(&role),
            };
            record
                .grants
                .retain(|_, roles: &mut BTreeSet<Role>| !roles.is_empty());
            if changed {
                tx.set_record(keys::namespace(&ns), &record);
                tx.audit(
                    caller,
                    action,
                    vec![
                        keys::display_path(&ns),
                        format!("principal:{principal_name}"),
                    ],
                    None,
                    serde_json::json!({ "role": role.name() }),
                );
            }
            Ok(record)
        });
        Ok(changed?.0)
    }
}

/// Writes a changed principal record with its audit event.
pub(super) fn save_principal(
    tx: &mut Tx<'_>,
    caller: &Caller,
    action: &str,
    record: &PrincipalRecord,
    detail: serde_json::Value,
) {
    tx.set_record(keys::principal(&record.name), record);
    let target = vec![format!("principal:{}", record.name)];
    tx.audit(caller, action, target, None, detail);
}

pub(super) fn principal(tx: &mut Tx<'_>, name: &str) -> Result<PrincipalRecord> {
    match tx.record::<PrincipalRecord>(&keys::principal(name), "principal")? {
        Some((record, _)) => Ok(record),
        None => Err(Error::NotFound {
            what: "principal",
            name: name.to_string(),
        }),
    }
}
