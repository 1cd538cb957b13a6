//! Access to the raw KV API: prefix-scoped grants (`read` or `readwrite`), kept in the
//! principal's record, as etcd's auth grants roles key ranges. The root principal reads and
//! writes every user key. No grant reaches the system key space: the KV API refuses it to
//! every caller, so the configuration service's workflow cannot be bypassed.
//!
//! The API server checks a call against its replica's applied state ([`KvCaller`] from a
//! [`Confman`] over a [`super::store::LocalStore`]): no quorum round per call. A grant or a
//! revocation is therefore in force at a replica once that replica has applied it (at the
//! leader: once it commits), as etcd checks auth against its local auth store.

use super::access::Permission;
use super::model::{KvAccess, KvGrant, PrincipalRecord};
use super::principals::principal;
use super::{hex, keys, Caller, Confman, Error, Result};
use crate::executor::KeyRange;

/// The principal of a KV call and what it may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCaller {
    pub name: String,
    pub root: bool,
    grants: Vec<(Vec<u8>, KvAccess)>,
}

impl KvCaller {
    /// Root, or any grant: a principal with no KV grant gets nothing from the KV API.
    pub fn require_any(&self) -> Result<()> {
        if self.root || !self.grants.is_empty() {
            return Ok(());
        }
        Err(self.denied(Permission::KvRead, "any key".to_string()))
    }

    /// Root, or a `readwrite` grant: staging an upload (whose keys are checked when it is
    /// committed).
    pub fn require_writer(&self) -> Result<()> {
        if self.root || (self.grants.iter()).any(|(_, access)| *access == KvAccess::ReadWrite) {
            return Ok(());
        }
        Err(self.denied(Permission::KvWrite, "any key".to_string()))
    }

    pub fn require_root(&self) -> Result<()> {
        match self.root {
            true => Ok(()),
            false => Err(self.denied(Permission::Root, "the cluster".to_string())),
        }
    }

    pub fn require_key(&self, key: &[u8], write: bool) -> Result<()> {
        let mut end = key.to_vec();
        end.push(0);
        self.require_range(key, &end, write)
    }

    /// Every key of [start, end) must lie under one grant (`readwrite` for a write).
    pub fn require_range(&self, start: &[u8], end: &[u8], write: bool) -> Result<()> {
        if self.root {
            return Ok(());
        }
        let covered = self.grants.iter().any(|(prefix, access)| {
            (!write || *access == KvAccess::ReadWrite)
                && start.starts_with(prefix)
                && end <= prefix_end(prefix).as_slice()
        });
        if covered {
            return Ok(());
        }
        let permission = match write {
            true => Permission::KvWrite,
            false => Permission::KvRead,
        };
        Err(self.denied(permission, describe_range(start, end)))
    }

    pub fn require_ranges(&self, ranges: &[KeyRange], write: bool) -> Result<()> {
        (ranges.iter()).try_for_each(|range| self.require_range(&range.start, &range.end, write))
    }

    fn denied(&self, permission: Permission, what: String) -> Error {
        Error::PermissionDenied {
            principal: self.name.clone(),
            permission,
            namespace: what,
        }
    }
}

/// The first key after every key that starts with `prefix` (the end of user keys for the
/// empty prefix, which grants every user key).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match keys::prefix_end(prefix) {
        end if end.is_empty() => vec![keys::SYSTEM_BYTE],
        end => end,
    }
}

/// The keys a versionstamped-key template can become: those that start with the bytes
/// before its stamp offset (the last 4 bytes of the template are the offset).
pub fn versionstamped_range(template: &[u8]) -> KeyRange {
    let fixed = match template.len().checked_sub(4) {
        None => template,
        Some(body) => {
            let mut offset = [0u8; 4];
            offset.copy_from_slice(&template[body..]);
            let offset = usize::try_from(u32::from_le_bytes(offset)).unwrap_or(usize::MAX);
            &template[..offset.min(body)]
        }
    };
    KeyRange {
        start: fixed.to_vec(),
        end: prefix_end(fixed),
    }
}

/// A range as the error names it: printable keys as they are, others in hex.
fn describe_range(start: &[u8], end: &[u8]) -> String {
    let show = |key: &[u8]| match std::str::from_utf8(key) {
        Ok(text) if text.chars().all(|c| !c.is_control()) => format!("{text:?}"),
        _ => format!("0x{}", hex(key)),
    };
    let mut next = start.to_vec();
    next.push(0);
    if end == next.as_slice() {
        return format!("key {}", show(start));
    }
    format!("keys [{}, {})", show(start), show(end))
}

fn grant_view(grant: &KvGrant) -> Result<(Vec<u8>, KvAccess)> {
    let prefix = parse_hex(&grant.prefix_hex)
        .ok_or_else(|| Error::Internal(format!("bad KV grant prefix {:?}", grant.prefix_hex)))?;
    Ok((prefix, grant.access))
}

pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Confman {
    /// The caller of a KV call, from `token` (checked as for every config call).
    pub fn kv_caller(&self, token: Option<&str>) -> Result<KvCaller> {
        self.read(token, |tx, caller| {
            let record = principal(tx, &caller.name)?;
            let grants = record.kv_grants.iter().map(grant_view);
            Ok(KvCaller {
                name: caller.name.clone(),
                root: caller.root,
                grants: grants.collect::<Result<_>>()?,
            })
        })
    }

    /// Gives `principal` `access` to the user keys under `prefix` (replacing the access it
    /// had on exactly that prefix), or with `access` None takes it away. Needs admin on
    /// `/`, as every change to a principal does.
    pub fn set_kv_grant(
        &self,
        token: Option<&str>,
        principal_name: &str,
        prefix: &[u8],
        access: Option<KvAccess>,
    ) -> Result<PrincipalRecord> {
        if prefix.first() == Some(&keys::SYSTEM_BYTE) {
            return Err(Error::Invalid(
                "a KV grant cannot reach the system key space (keys starting with 0xFF)".into(),
            ));
        }
        let action = match access {
            Some(_) => "kv.grant",
            None => "kv.revoke",
        };
        let prefix_hex = hex(prefix);
        let changed = self.write(token, action, |tx, caller: &Caller| {
            tx.require(caller, Permission::Admin, "/")?;
            let mut record = principal(tx, principal_name)?;
            let before = record.kv_grants.clone();
            record
                .kv_grants
                .retain(|grant| grant.prefix_hex != prefix_hex);
            if let Some(access) = access {
                record.kv_grants.push(KvGrant {
                    prefix_hex: prefix_hex.clone(),
                    access,
                });
                record
                    .kv_grants
                    .sort_by(|a, b| a.prefix_hex.cmp(&b.prefix_hex));
            }
            if record.kv_grants != before {
                let detail = serde_json::json!({
                    "prefix_hex": prefix_hex,
                    "access": access.map(KvAccess::name),
                });
                super::principals::save_principal(tx, caller, action, &record, detail);
            }
            Ok(record)
        });
        Ok(changed?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(grants: &[(&[u8], KvAccess)]) -> KvCaller {
        KvCaller {
            name: "app".into(),
            root: false,
            grants: grants.iter().map(|(p, a)| (p.to_vec(), *a)).collect(),
        }
    }

    #[test]
    fn a_grant_covers_exactly_the_keys_under_its_prefix() {
        let app = caller(&[(b"app/", KvAccess::ReadWrite), (b"shared/", KvAccess::Read)]);
        assert!(app.require_key(b"app/x", true).is_ok());
        assert!(app.require_key(b"app/", true).is_ok());
        assert!(app.require_key(b"app", false).is_err());
        assert!(app.require_key(b"apq", false).is_err());
        assert!(app.require_key(b"shared/a", false).is_ok());
        assert!(app.require_key(b"shared/a", true).is_err());
        assert!(app.require_range(b"app/", b"app0", false).is_ok());
        assert!(app.require_range(b"app/a", b"app/b", true).is_ok());
        // One key past the prefix is outside it.
        assert!(app.require_range(b"app/", b"app1", false).is_err());
        assert!(app.require_range(b"a", b"z", false).is_err());
        assert!(app.require_root().is_err());
        assert!(app.require_any().is_ok());
        assert!(caller(&[]).require_any().is_err());
        let error = app.require_key(b"other", true).unwrap_err();
        assert_eq!(
            error.to_string(),
            "permission denied: app lacks kv_write on key \"other\""
        );
    }

    #[test]
    fn the_empty_prefix_grants_every_user_key_and_root_holds_all() {
        let all = caller(&[(b"", KvAccess::Read)]);
        assert!(all.require_range(b"", &[keys::SYSTEM_BYTE], false).is_ok());
        assert!(all.require_range(b"", &[keys::SYSTEM_BYTE], true).is_err());
        let root = KvCaller {
            root: true,
            ..caller(&[])
        };
        assert!(root.require_range(b"", &[keys::SYSTEM_BYTE], true).is_ok());
        assert!(root.require_root().is_ok());
    }

    #[test]
    fn prefix_ends_and_versionstamp_templates() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xFF]), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![keys::SYSTEM_BYTE]);
        let mut template = b"log/..........".to_vec();
        template.extend_from_slice(&4u32.to_le_bytes());
        assert_eq!(versionstamped_range(&template).start, b"log/".to_vec());
        let mut beyond = b"x/".to_vec();
        beyond.extend_from_slice(&99u32.to_le_bytes());
        assert_eq!(versionstamped_range(&beyond).start, b"x/".to_vec());
        assert_eq!(parse_hex("61ff"), Some(vec![0x61, 0xFF]));
        assert_eq!(parse_hex("6"), None);
    }
}
