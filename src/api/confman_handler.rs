//! `ConfmanHandler`: the `Confman` Thrift service over [`crate::confman::Confman`].
//! Converts the wire types and turns every error into the exception the IDL declares.
//! The principal is the connection's: `authenticate` sets its token (see `session`).

use std::time::Duration;

use thrift::Error as ThriftError;

use super::gen::paxkv::{self as wire, ConfmanSyncHandler, ErrorCode};
use super::handler::{exception_of, outcome, Declares};
use super::session;
use crate::confman::access::Role;
use crate::confman::change::State;
use crate::confman::model::{
    self, ChangeRecord, KvAccess, NamespaceRecord, Op, RevisionRecord, Verdict,
};
use crate::confman::{
    self, keys, AuditFilter, ChangeView, Confman, EditInput, EditKind, Error, NamespaceSettings,
};
use crate::metrics::ApiMetrics;

type Wire<T> = thrift::Result<T>;

/// Router errors a config call may pass through: bad input, limits, versions too old,
/// compacted watches, unavailability.
const STORE: Declares = Declares {
    conflict: false,
    too_old: true,
    compacted: true,
    invalid: true,
    limit: true,
    snapshot_gone: false,
    document: false,
};

pub struct ConfmanHandler {
    confman: Confman,
    metrics: ApiMetrics,
}

impl ConfmanHandler {
    pub fn new(confman: Confman) -> ConfmanHandler {
        ConfmanHandler {
            confman,
            metrics: ApiMetrics::unregistered(),
        }
    }

    pub fn with_metrics(mut self, metrics: ApiMetrics) -> ConfmanHandler {
        self.metrics = metrics;
        self
    }

    fn observed<T>(
        &self,
        method: &'static str,
        call: impl FnOnce(Option<&str>) -> Wire<T>,
    ) -> Wire<T> {
        let timer = (self.metrics.request_duration)
            .with_label_values(&[method])
            .start_timer();
        let token = session::token();
        let result = call(token.as_deref());
        timer.observe_duration();
        (self.metrics.requests)
            .with_label_values(&[method, outcome(&result)])
            .inc();
        result
    }
}

fn user(exception: impl std::error::Error + Send + Sync + 'static) -> ThriftError {
    ThriftError::User(Box::new(exception))
}

fn invalid(message: impl Into<String>) -> ThriftError {
    user(wire::InvalidArgument::new(
        ErrorCode::INVALID_ARGUMENT,
        message.into(),
        None,
    ))
}

/// The typed exception for a config service error.
pub(super) fn wire_error(error: Error) -> ThriftError {
    let message = error.to_string();
    match error {
        Error::Invalid(message) => invalid(message),
        Error::Unauthenticated(message) => user(wire::Unauthenticated {
            code: ErrorCode::UNAUTHENTICATED,
            message,
        }),
        Error::PermissionDenied {
            permission,
            namespace,
            ..
        } => user(wire::PermissionDenied {
            code: ErrorCode::PERMISSION_DENIED,
            permission: permission.name().to_string(),
            ns: namespace,
            message,
        }),
        Error::NotFound { what, name } => user(wire::NotFound {
            code: ErrorCode::NOT_FOUND,
            what: what.to_string(),
            name,
            message,
        }),
        Error::AlreadyExists { what, name } => user(wire::AlreadyExists {
            code: ErrorCode::ALREADY_EXISTS,
            what: what.to_string(),
            name,
            message,
        }),
        Error::InvalidTransition {
            change_id,
            state,
            action,
            ..
        } => user(wire::InvalidTransition {
            code: ErrorCode::INVALID_TRANSITION,
            change_id: wire_u64(change_id),
            state: state.to_string(),
            action: action.to_string(),
            message,
        }),
        Error::SchemaViolation {
            namespace,
            key,
            pointer,
            rule,
            ..
        } => user(wire::SchemaViolation {
            code: ErrorCode::SCHEMA_VIOLATION,
            ns: namespace,
            key,
            pointer,
            rule,
            message,
        }),
        Error::Stale { change_id, moved } => user(wire::Stale {
            code: ErrorCode::STALE,
            change_id: wire_u64(change_id),
            moved: (moved.into_iter())
                .map(|m| wire::MovedEntry {
                    ns: m.ns,
                    key: m.key,
                    base_revision: wire_u64(m.base_revision),
                    current_revision: wire_u64(m.current_revision),
                })
                .collect(),
            message,
        }),
        Error::Store(error) => exception_of(error, STORE),
        Error::Internal(message) => user(wire::InternalError::new(ErrorCode::INTERNAL, message)),
    }
}

fn wire_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64, name: &str) -> Wire<u64> {
    u64::try_from(value).map_err(|_| invalid(format!("{name} must not be negative")))
}

fn optional_unsigned(value: Option<i64>, name: &str) -> Wire<Option<u64>> {
    value.map(|v| unsigned(v, name)).transpose()
}

/// A namespace's settings from the fields both the create and the update request have.
fn settings<'a>(
    description: &'a Option<String>,
    schema: &'a Option<Vec<u8>>,
    approvals_required: Option<i32>,
    approver_group: &'a Option<String>,
) -> Wire<NamespaceSettings<'a>> {
    let approvals_required = (approvals_required.map(u32::try_from).transpose())
        .map_err(|_| invalid("approvals_required must not be negative"))?;
    Ok(NamespaceSettings {
        description: description.as_deref(),
        schema: schema.as_deref(),
        approvals_required,
        approver_group: approver_group.as_deref(),
    })
}

fn namespace(record: NamespaceRecord) -> wire::Namespace {
    let path = keys::display_path(&record.path);
    let grants = (record.grants.iter())
        .flat_map(|(principal, roles)| {
            let path = path.clone();
            roles.iter().map(move |role| wire::Grant {
                ns: path.clone(),
                principal: principal.clone(),
                role: role.name().to_string(),
            })
        })
        .collect();
    wire::Namespace {
        path,
        description: record.description,
        schema: record.schema.map(String::into_bytes),
        approvals_required: i32::try_from(record.approvals_required).unwrap_or(i32::MAX),
        created_at_ms: wire_u64(record.created_at_ms),
        created_by: record.created_by,
        grants,
        approver_group: record.approver_group,
    }
}

fn principal(record: model::PrincipalRecord) -> wire::Principal {
    wire::Principal {
        name: record.name,
        kind: record.kind,
        description: record.description,
        disabled: record.disabled,
        created_at_ms: wire_u64(record.created_at_ms),
        created_by: record.created_by,
        root: record.root,
        kv_grants: Some(
            (record.kv_grants.iter())
                .map(|grant| {
                    Box::new(wire::KvGrant {
                        prefix: confman::parse_hex(&grant.prefix_hex).unwrap_or_default(),
                        access: grant.access.name().to_string(),
                    })
                })
                .collect(),
        ),
        groups: Some(record.groups.into_iter().collect()),
    }
}

fn token_info(record: model::TokenRecord) -> wire::TokenInfo {
    wire::TokenInfo {
        token_id: record.id,
        principal: record.principal,
        description: record.description,
        created_at_ms: wire_u64(record.created_at_ms),
        expires_at_ms: record.expires_at_ms.map(wire_u64),
        revoked: record.revoked,
    }
}

fn revision(record: &RevisionRecord) -> wire::EntryRevision {
    wire::EntryRevision {
        revision: wire_u64(record.revision),
        change_id: wire_u64(record.change_id),
        author: record.author.clone(),
        approvers: record.approvers.clone(),
        published_at_ms: wire_u64(record.published_at_ms),
        deleted: record.deleted,
        emergency: record.emergency,
        published_by: record.published_by.clone(),
    }
}

fn entry(view: confman::EntryView) -> wire::Entry {
    wire::Entry {
        ns: keys::display_path(&view.ns),
        key: view.key,
        value: view.value,
        content_type: view.revision.content_type.clone(),
        revision: wire_u64(view.revision.revision),
        change_id: wire_u64(view.revision.change_id),
        author: view.revision.author.clone(),
        approvers: view.revision.approvers.clone(),
        published_at_ms: wire_u64(view.revision.published_at_ms),
        read_version: wire_u64(view.read_version),
    }
}

fn change_set(view: ChangeView) -> wire::ChangeSet {
    let ChangeView {
        record,
        version,
        values,
    } = view;
    let ChangeRecord {
        id,
        title,
        description,
        author,
        state,
        edits,
        reviews,
        created_at_ms,
        updated_at_ms,
        published_at_ms,
        published_by,
        emergency,
        reason,
    } = record;
    let edits = (edits.into_iter().zip(values))
        .map(|(edit, value)| wire::ChangeEdit {
            ns: keys::display_path(&edit.ns),
            key: edit.key,
            op: match (edit.op, edit.patched) {
                (Op::Delete, _) => wire::EditOp::DELETE,
                (Op::Put, true) => wire::EditOp::PATCH,
                (Op::Put, false) => wire::EditOp::PUT,
            },
            base_revision: wire_u64(edit.base_revision),
            value,
            content_type: edit.content_type,
        })
        .collect();
    let reviews = (reviews.into_iter())
        .map(|review| wire::Review {
            principal: review.principal,
            verdict: match review.verdict {
                Verdict::Approve => "approve".to_string(),
                Verdict::Reject => "reject".to_string(),
            },
            comment: review.comment,
            at_ms: wire_u64(review.at_ms),
        })
        .collect();
    wire::ChangeSet {
        id: wire_u64(id),
        title,
        description,
        author,
        state: state.name().to_string(),
        edits,
        reviews,
        created_at_ms: wire_u64(created_at_ms),
        updated_at_ms: wire_u64(updated_at_ms),
        published_version: (state == State::Published).then_some(wire_u64(version)),
        published_at_ms: published_at_ms.map(wire_u64),
        published_by,
        emergency,
        reason,
    }
}

fn edits(edits: Vec<wire::Edit>) -> Wire<Vec<EditInput>> {
    (edits.into_iter())
        .map(|edit| {
            let kind = match edit.op {
                wire::EditOp::PUT => EditKind::Put,
                wire::EditOp::PATCH => EditKind::Patch,
                wire::EditOp::DELETE => EditKind::Delete,
                other => return Err(invalid(format!("unknown edit op {}", other.0))),
            };
            Ok(EditInput {
                ns: edit.ns,
                key: edit.key,
                kind,
                value: edit.value,
                content_type: edit.content_type,
            })
        })
        .collect()
}

fn role(name: &str) -> Wire<Role> {
    Role::parse(name).ok_or_else(|| {
        invalid(format!(
            "role {name:?} is not one of reader, editor, approver, publisher, admin"
        ))
    })
}

impl ConfmanSyncHandler for ConfmanHandler {
    fn handle_authenticate(&self, token: String) -> Wire<wire::AuthResult> {
        self.observed("authenticate", |_| {
            let info = self.confman.authenticate(&token).map_err(wire_error)?;
            session::set_token(Some(token.trim().to_string()));
            Ok(wire::AuthResult {
                principal: info.principal,
                token_id: info.token_id,
                expires_at_ms: info.expires_at_ms.map(wire_u64),
                root: info.root,
            })
        })
    }

    fn handle_whoami(&self) -> Wire<wire::Principal> {
        self.observed("whoami", |t| {
            Ok(principal(self.confman.whoami(t).map_err(wire_error)?))
        })
    }

    fn handle_create_principal(&self, r: wire::CreatePrincipalRequest) -> Wire<wire::Principal> {
        self.observed("createPrincipal", |t| {
            let description = r.description.unwrap_or_default();
            let created = self
                .confman
                .create_principal(t, &r.name, &r.kind, &description);
            Ok(principal(created.map_err(wire_error)?))
        })
    }

    fn handle_list_principals(&self) -> Wire<Vec<wire::Principal>> {
        self.observed("listPrincipals", |t| {
            let listed = self.confman.list_principals(t).map_err(wire_error)?;
            Ok(listed.into_iter().map(principal).collect())
        })
    }

    fn handle_disable_principal(&self, name: String) -> Wire<wire::Principal> {
        self.observed("disablePrincipal", |t| {
            Ok(principal(
                self.confman
                    .disable_principal(t, &name)
                    .map_err(wire_error)?,
            ))
        })
    }

    fn handle_create_token(&self, r: wire::CreateTokenRequest) -> Wire<wire::TokenCreated> {
        self.observed("createToken", |t| {
            let ttl = optional_unsigned(r.ttl_seconds, "ttl_seconds")?;
            let description = r.description.unwrap_or_default();
            let created = (self.confman)
                .create_token(t, &r.principal, &description, ttl)
                .map_err(wire_error)?;
            Ok(wire::TokenCreated {
                token_id: created.token_id,
                token: created.token,
                expires_at_ms: created.expires_at_ms.map(wire_u64),
            })
        })
    }

    fn handle_list_tokens(&self, of: String) -> Wire<Vec<wire::TokenInfo>> {
        self.observed("listTokens", |t| {
            let listed = self.confman.list_tokens(t, &of).map_err(wire_error)?;
            Ok(listed.into_iter().map(token_info).collect())
        })
    }

    fn handle_revoke_token(&self, id: String) -> Wire<wire::TokenInfo> {
        self.observed("revokeToken", |t| {
            Ok(token_info(
                self.confman.revoke_token(t, &id).map_err(wire_error)?,
            ))
        })
    }

    fn handle_grant_role(&self, grant: wire::Grant) -> Wire<wire::Namespace> {
        self.observed("grantRole", |t| {
            let role = role(&grant.role)?;
            let set = (self.confman).set_role(t, &grant.ns, &grant.principal, role, true);
            Ok(namespace(set.map_err(wire_error)?))
        })
    }

    fn handle_revoke_role(&self, grant: wire::Grant) -> Wire<wire::Namespace> {
        self.observed("revokeRole", |t| {
            let role = role(&grant.role)?;
            let set = (self.confman).set_role(t, &grant.ns, &grant.principal, role, false);
            Ok(namespace(set.map_err(wire_error)?))
        })
    }

    fn handle_grant_kv(&self, r: wire::KvGrantRequest) -> Wire<wire::Principal> {
        self.observed("grantKv", |t| {
            let name = r.access.as_deref().unwrap_or_default();
            let access = KvAccess::parse(name)
                .ok_or_else(|| invalid(format!("KV access {name:?} is not read or readwrite")))?;
            let set = (self.confman).set_kv_grant(t, &r.principal, &r.prefix, Some(access));
            Ok(principal(set.map_err(wire_error)?))
        })
    }

    fn handle_revoke_kv(&self, r: wire::KvGrantRequest) -> Wire<wire::Principal> {
        self.observed("revokeKv", |t| {
            let set = (self.confman).set_kv_grant(t, &r.principal, &r.prefix, None);
            Ok(principal(set.map_err(wire_error)?))
        })
    }

    fn handle_add_to_group(&self, m: wire::GroupMembership) -> Wire<wire::Principal> {
        self.observed("addToGroup", |t| {
            let set = (self.confman).set_group(t, &m.principal, &m.group, true);
            Ok(principal(set.map_err(wire_error)?))
        })
    }

    fn handle_remove_from_group(&self, m: wire::GroupMembership) -> Wire<wire::Principal> {
        self.observed("removeFromGroup", |t| {
            let set = (self.confman).set_group(t, &m.principal, &m.group, false);
            Ok(principal(set.map_err(wire_error)?))
        })
    }

    fn handle_create_namespace(&self, r: wire::CreateNamespaceRequest) -> Wire<wire::Namespace> {
        self.observed("createNamespace", |t| {
            let settings = settings(
                &r.description,
                &r.schema,
                r.approvals_required,
                &r.approver_group,
            )?;
            let created = (self.confman).create_namespace(t, &r.path, settings);
            Ok(namespace(created.map_err(wire_error)?))
        })
    }

    fn handle_update_namespace(&self, r: wire::UpdateNamespaceRequest) -> Wire<wire::Namespace> {
        self.observed("updateNamespace", |t| {
            let settings = settings(
                &r.description,
                &r.schema,
                r.approvals_required,
                &r.approver_group,
            )?;
            let updated = (self.confman).update_namespace(t, &r.path, settings);
            Ok(namespace(updated.map_err(wire_error)?))
        })
    }

    fn handle_describe_namespace(&self, path: String) -> Wire<wire::Namespace> {
        self.observed("describeNamespace", |t| {
            Ok(namespace(
                self.confman
                    .describe_namespace(t, &path)
                    .map_err(wire_error)?,
            ))
        })
    }

    fn handle_list_namespaces(&self, r: wire::ListNamespacesRequest) -> Wire<wire::NamespaceList> {
        self.observed("listNamespaces", |t| {
            let (list, continuation) = (self.confman)
                .list_namespaces(
                    t,
                    &r.path,
                    r.recursive,
                    i64::from(r.limit),
                    r.continuation.as_deref(),
                )
                .map_err(wire_error)?;
            Ok(wire::NamespaceList {
                namespaces: list.into_iter().map(namespace).collect(),
                continuation,
            })
        })
    }

    fn handle_delete_namespace(&self, path: String) -> Wire<()> {
        self.observed("deleteNamespace", |t| {
            self.confman.delete_namespace(t, &path).map_err(wire_error)
        })
    }

    fn handle_get_entry(&self, r: wire::GetEntryRequest) -> Wire<wire::Entry> {
        self.observed("getEntry", |t| {
            let revision = optional_unsigned(r.revision, "revision")?;
            let read_version = optional_unsigned(r.read_version, "read_version")?;
            let got = (self.confman).get_entry(t, &r.ns, &r.key, revision, read_version);
            Ok(entry(got.map_err(wire_error)?))
        })
    }

    fn handle_list_entries(&self, r: wire::ListEntriesRequest) -> Wire<wire::EntryList> {
        self.observed("listEntries", |t| {
            let read_version = optional_unsigned(r.read_version, "read_version")?;
            let (list, continuation, version) = (self.confman)
                .list_entries(
                    t,
                    &r.ns,
                    r.recursive,
                    i64::from(r.limit),
                    r.continuation.as_deref(),
                    read_version,
                    r.values,
                )
                .map_err(wire_error)?;
            Ok(wire::EntryList {
                entries: list.into_iter().map(entry).collect(),
                continuation,
                read_version: wire_u64(version),
            })
        })
    }

    fn handle_entry_history(&self, r: wire::HistoryRequest) -> Wire<Vec<wire::EntryRevision>> {
        self.observed("entryHistory", |t| {
            let before = optional_unsigned(r.before_revision, "before_revision")?;
            let history = (self.confman)
                .entry_history(t, &r.ns, &r.key, i64::from(r.limit), before)
                .map_err(wire_error)?;
            Ok(history.iter().map(|(record, _)| revision(record)).collect())
        })
    }

    fn handle_diff_entry(&self, r: wire::DiffRequest) -> Wire<wire::DiffResult> {
        self.observed("diffEntry", |t| {
            let from = unsigned(r.from_revision, "from_revision")?;
            let to = optional_unsigned(r.to_revision, "to_revision")?;
            let (json_patch, text) = (self.confman)
                .diff_entry(t, &r.ns, &r.key, from, to)
                .map_err(wire_error)?;
            Ok(wire::DiffResult { json_patch, text })
        })
    }

    fn handle_create_change(&self, r: wire::CreateChangeRequest) -> Wire<wire::ChangeSet> {
        self.observed("createChange", |t| {
            let edits = edits(r.edits.unwrap_or_default())?;
            let description = r.description.unwrap_or_default();
            let client_token = r.client_token.as_deref();
            let created =
                (self.confman).create_change_once(t, client_token, &r.title, &description, &edits);
            Ok(change_set(created.map_err(wire_error)?))
        })
    }

    fn handle_edit_change(&self, r: wire::EditChangeRequest) -> Wire<wire::ChangeSet> {
        self.observed("editChange", |t| {
            let id = unsigned(r.change_id, "change_id")?;
            let edits = edits(r.edits)?;
            let drop: Vec<(String, String)> = (r.drop.unwrap_or_default().into_iter())
                .map(|entry| (entry.ns, entry.key))
                .collect();
            let edited = self.confman.edit_change(t, id, &edits, &drop);
            Ok(change_set(edited.map_err(wire_error)?))
        })
    }

    fn handle_get_change(&self, change_id: i64) -> Wire<wire::ChangeSet> {
        self.observed("getChange", |t| {
            let id = unsigned(change_id, "change_id")?;
            Ok(change_set(
                self.confman.get_change(t, id).map_err(wire_error)?,
            ))
        })
    }

    fn handle_list_changes(&self, r: wire::ListChangesRequest) -> Wire<wire::ChangeList> {
        self.observed("listChanges", |t| {
            let state =
                match r.state.as_deref() {
                    None | Some("") => None,
                    Some(name) => Some(State::parse(name).ok_or_else(|| {
                        invalid(format!("state {name:?} is not a change-set state"))
                    })?),
                };
            let before = optional_unsigned(r.before_id, "before_id")?;
            let (changes, next) = (self.confman)
                .list_changes(t, state, r.author.as_deref(), i64::from(r.limit), before)
                .map_err(wire_error)?;
            Ok(wire::ChangeList {
                changes: changes.into_iter().map(change_set).collect(),
                next_before_id: next.map(wire_u64),
            })
        })
    }

    fn handle_submit_change(&self, change_id: i64) -> Wire<wire::ChangeSet> {
        self.observed("submitChange", |t| {
            let id = unsigned(change_id, "change_id")?;
            Ok(change_set(
                self.confman.submit_change(t, id).map_err(wire_error)?,
            ))
        })
    }

    fn handle_approve_change(&self, r: wire::ReviewRequest) -> Wire<wire::ChangeSet> {
        self.observed("approveChange", |t| {
            let id = unsigned(r.change_id, "change_id")?;
            let comment = r.comment.unwrap_or_default();
            let approved = self.confman.approve_change(t, id, &comment);
            Ok(change_set(approved.map_err(wire_error)?))
        })
    }

    fn handle_reject_change(&self, r: wire::ReviewRequest) -> Wire<wire::ChangeSet> {
        self.observed("rejectChange", |t| {
            let id = unsigned(r.change_id, "change_id")?;
            let comment = r.comment.unwrap_or_default();
            let rejected = self.confman.reject_change(t, id, &comment);
            Ok(change_set(rejected.map_err(wire_error)?))
        })
    }

    fn handle_abandon_change(&self, change_id: i64) -> Wire<wire::ChangeSet> {
        self.observed("abandonChange", |t| {
            let id = unsigned(change_id, "change_id")?;
            Ok(change_set(
                self.confman.abandon_change(t, id).map_err(wire_error)?,
            ))
        })
    }

    fn handle_rebase_change(&self, change_id: i64) -> Wire<wire::RebaseResult> {
        self.observed("rebaseChange", |t| {
            let id = unsigned(change_id, "change_id")?;
            let outcome = self.confman.rebase_change(t, id).map_err(wire_error)?;
            Ok(wire::RebaseResult {
                change: change_set(outcome.change),
                conflicts: (outcome.conflicts.into_iter())
                    .map(|c| wire::RebaseConflict {
                        ns: c.ns,
                        key: c.key,
                        pointer: c.pointer,
                        message: c.message,
                    })
                    .collect(),
            })
        })
    }

    fn handle_publish_change(&self, r: wire::PublishRequest) -> Wire<wire::PublishResult> {
        self.observed("publishChange", |t| {
            let id = unsigned(r.change_id, "change_id")?;
            let published = (self.confman)
                .publish_change(t, id, r.emergency, r.reason.as_deref())
                .map_err(wire_error)?;
            let version = wire_u64(published.version);
            Ok(wire::PublishResult {
                change: change_set(published),
                version,
            })
        })
    }

    fn handle_revert_change(&self, r: wire::RevertRequest) -> Wire<wire::ChangeSet> {
        self.observed("revertChange", |t| {
            let id = unsigned(r.change_id, "change_id")?;
            let reverted = self.confman.revert_change(t, id, r.title.as_deref());
            Ok(change_set(reverted.map_err(wire_error)?))
        })
    }

    fn handle_import_history(&self, revisions: Vec<wire::ImportedRevision>) -> Wire<i32> {
        self.observed("importHistory", |t| {
            let revisions = (revisions.into_iter())
                .map(|r| {
                    Ok(confman::ImportedRevision {
                        namespace: r.ns,
                        key: r.key,
                        author: r.author,
                        email: r.email,
                        authored_at_ms: u64::try_from(r.authored_at_ms)
                            .map_err(|_| invalid("authored_at_ms must not be negative"))?,
                        commit: r.commit,
                        subject: r.subject,
                    })
                })
                .collect::<Wire<Vec<_>>>()?;
            let recorded = self.confman.import_history(t, &revisions);
            Ok(i32::try_from(recorded.map_err(wire_error)?).unwrap_or(i32::MAX))
        })
    }

    fn handle_query_audit(&self, q: wire::AuditQuery) -> Wire<wire::AuditPage> {
        self.observed("queryAudit", |t| {
            let filter = AuditFilter {
                namespace: q.ns,
                entry: q.entry,
                actor: q.actor,
                change_id: optional_unsigned(q.change_id, "change_id")?,
                from_ms: optional_unsigned(q.from_ms, "from_ms")?,
                to_ms: optional_unsigned(q.to_ms, "to_ms")?,
            };
            let (events, continuation) = (self.confman)
                .query_audit(t, &filter, i64::from(q.limit), q.continuation.as_deref())
                .map_err(wire_error)?;
            let events = (events.into_iter())
                .map(|view| wire::AuditEvent {
                    id: view.id,
                    at_ms: wire_u64(view.record.at_ms),
                    actor: view.record.actor,
                    action: view.record.action,
                    outcome: view.record.outcome,
                    targets: view.record.targets,
                    change_id: view.record.change_id.map(wire_u64),
                    detail: view.record.detail.to_string(),
                })
                .collect();
            Ok(wire::AuditPage {
                events,
                continuation,
            })
        })
    }

    fn handle_watch_config(&self, r: wire::WatchConfigRequest) -> Wire<wire::WatchConfigResult> {
        self.observed("watchConfig", |t| {
            let from = unsigned(r.from_version, "from_version")?;
            let timeout = Duration::from_millis(unsigned(r.timeout_ms, "timeout_ms")?);
            let (events, next) = (self.confman)
                .watch_config(t, &r.ns, from, timeout, r.patches.unwrap_or(false))
                .map_err(wire_error)?;
            let events = (events.into_iter())
                .map(|event| wire::ConfigEvent {
                    ns: keys::display_path(&event.ns),
                    key: event.key,
                    revision: wire_u64(event.revision.revision),
                    change_id: wire_u64(event.revision.change_id),
                    version: wire_u64(event.version),
                    deleted: event.revision.deleted,
                    value: event.value,
                    content_type: event.revision.content_type,
                    patch: event.patch,
                })
                .collect();
            Ok(wire::WatchConfigResult {
                events,
                next_version: wire_u64(next),
            })
        })
    }
}
