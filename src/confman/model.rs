//! The records the configuration service stores, as JSON (small, and readable by an
//! operator who dumps the system prefix of a backup). Entry values and edit values are
//! stored as they are, in keys of their own.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::access::Role;
use super::change::State;

pub const JSON: &str = "application/json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRecord {
    pub name: String,
    /// "user" or "service".
    pub kind: String,
    pub description: String,
    pub disabled: bool,
    pub created_at_ms: u64,
    pub created_by: String,
    /// Holds every permission everywhere; only the bootstrapped principal.
    pub root: bool,
    /// What the principal may do through the raw KV API (when the server has
    /// `auth.enabled`); absent in records written before there were KV grants.
    #[serde(default)]
    pub kv_grants: Vec<KvGrant>,
    /// The groups the principal belongs to; a namespace may count approvals only from
    /// the members of one (`NamespaceRecord::approver_group`).
    #[serde(default)]
    pub groups: BTreeSet<String>,
}

/// Access to the user keys that start with `prefix` through the raw KV API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvGrant {
    /// The key prefix, hex (keys are bytes); empty for every user key.
    pub prefix_hex: String,
    pub access: KvAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvAccess {
    Read,
    ReadWrite,
}

impl KvAccess {
    pub fn name(self) -> &'static str {
        match self {
            KvAccess::Read => "read",
            KvAccess::ReadWrite => "readwrite",
        }
    }

    pub fn parse(name: &str) -> Option<KvAccess> {
        [KvAccess::Read, KvAccess::ReadWrite]
            .into_iter()
            .find(|access| access.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub principal: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    pub description: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// Stored form (trailing slash).
    pub path: String,
    pub description: String,
    /// A JSON Schema (draft 2020-12), as JSON text.
    pub schema: Option<String>,
    pub approvals_required: u32,
    pub created_at_ms: u64,
    pub created_by: String,
    pub grants: BTreeMap<String, BTreeSet<Role>>,
    /// When set, an approval counts for this namespace only from a member of this group
    /// who also approves here.
    #[serde(default)]
    pub approver_group: Option<String>,
}

/// An entry's published revision: the newest in its meta key, every one in its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionRecord {
    pub revision: u64,
    pub change_id: u64,
    pub author: String,
    pub approvers: Vec<String>,
    pub published_at_ms: u64,
    pub published_by: String,
    pub deleted: bool,
    pub emergency: bool,
    pub content_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Put,
    Delete,
}

/// One entry a change set writes; its value is in `keys::change_value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditRecord {
    /// Stored form.
    pub ns: String,
    pub key: String,
    pub op: Op,
    /// The revision it was based on (0: the entry did not exist).
    pub base_revision: u64,
    pub content_type: String,
    /// What the caller sent was a patch (shown as such; the value is the patched entry).
    pub patched: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRecord {
    pub principal: String,
    pub verdict: Verdict,
    pub comment: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub id: u64,
    pub title: String,
    pub description: String,
    pub author: String,
    pub state: State,
    pub edits: Vec<EditRecord>,
    pub reviews: Vec<ReviewRecord>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub published_at_ms: Option<u64>,
    pub published_by: Option<String>,
    pub emergency: bool,
    pub reason: Option<String>,
}

impl ChangeRecord {
    /// Every namespace the change touches (stored form), in order.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.edits.iter().map(|edit| edit.ns.clone()).collect()
    }

    pub fn approvers(&self) -> Vec<String> {
        (self.reviews.iter())
            .filter(|review| review.verdict == Verdict::Approve)
            .map(|review| review.principal.clone())
            .collect()
    }

    pub fn edit_index(&self, ns: &str, key: &str) -> Option<usize> {
        (self.edits.iter()).position(|edit| edit.ns == ns && edit.key == key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    /// "ok" or "denied".
    pub outcome: String,
    pub targets: Vec<String>,
    pub change_id: Option<u64>,
    pub detail: serde_json::Value,
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialize")
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|error| format!("corrupt {what} record: {error}"))
}

/// How an entry is named in audit targets and messages: `/ns:key`.
pub fn entry_name(stored_ns: &str, key: &str) -> String {
    format!("{}:{key}", super::keys::display_path(stored_ns))
}

/// What a `createChange` with a client token created: a retry of the call with the same
/// token returns this change instead of creating another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTokenRecord {
    pub change_id: u64,
    pub title: String,
    /// Of the whole request (title, description, edits).
    pub request_sha256: String,
}
