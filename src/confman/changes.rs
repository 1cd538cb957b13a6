//! Change sets: edits of any number of entries in any namespaces, reviewed, then published
//! as one transaction.
//!
//! A change records, per entry, the published revision it was based on. Publishing
//! writes every entry's new revision, the change's state and the audit event in one
//! commit, after checking (at the commit's read version, with every key read a conflict
//! range) that each entry is still at its base revision: otherwise `Stale`, and nothing.

use std::collections::BTreeSet;

use serde_json::Value;

use super::access::Permission;
use super::change::{self, Action, State};
use super::model::{
    self, ChangeRecord, ClientTokenRecord, EditRecord, Op, PrincipalRecord, ReviewRecord,
    RevisionRecord, Verdict, JSON,
};
use super::namespaces::{entry_value, revision_record};
use super::principals::principal;
use super::{check_name, keys, page_limit, schema, stored, Caller, Confman, Error, Result, Tx};
use crate::executor::document;

/// Entries one change set may edit: publishing writes three keys per entry, and one
/// commit takes `mutations_per_txn_max` (10,000 by default).
pub const EDITS_MAX: usize = 3000;

/// Title length at most, in bytes.
pub const TITLE_BYTES_MAX: usize = 256;

/// How an edit arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditKind {
    Put,
    /// An RFC 6902 patch of the entry as the change has it (or as published).
    Patch,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditInput {
    /// As users write it.
    pub ns: String,
    pub key: String,
    pub kind: EditKind,
    pub value: Option<Vec<u8>>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeView {
    pub record: ChangeRecord,
    /// The store version the change was last written at: for a published change, the
    /// version its entries were published at.
    pub version: u64,
    /// The value each edit writes (None for a delete, or when not asked for).
    pub values: Vec<Option<Vec<u8>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Display form.
    pub ns: String,
    pub key: String,
    pub base_revision: u64,
    pub current_revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebaseConflict {
    pub ns: String,
    pub key: String,
    pub pointer: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebaseOutcome {
    pub change: ChangeView,
    pub conflicts: Vec<RebaseConflict>,
}

impl Confman {
    pub fn create_change(
        &self,
        token: Option<&str>,
        title: &str,
        description: &str,
        edits: &[EditInput],
    ) -> Result<ChangeView> {
        self.create_change_once(token, None, title, description, edits)
    }

    /// `create_change`, at most once per `client_token` of the caller: a call with a token
    /// the caller used before creates nothing and returns the change that call created
    /// (as it is now), so a client may retry a call whose reply it lost.
    pub fn create_change_once(
        &self,
        token: Option<&str>,
        client_token: Option<&str>,
        title: &str,
        description: &str,
        edits: &[EditInput],
    ) -> Result<ChangeView> {
        check_title(title)?;
        if let Some(client_token) = client_token {
            check_name("client token", client_token)?;
        }
        let digest = match client_token {
            Some(_) => request_digest(title, description, edits),
            None => String::new(),
        };
        let mut replayed = false;
        let (mut view, version) = self.write(token, "change.create", |tx, caller| {
            replayed = false;
            let token_key = client_token.map(|ct| keys::client_token(&caller.name, ct));
            if let Some(token_key) = &token_key {
                let earlier = tx.record::<ClientTokenRecord>(token_key, "client token")?;
                if let Some((earlier, _)) = earlier {
                    if earlier.title != title || earlier.request_sha256 != digest {
                        return Err(Error::Invalid(format!(
                            "client token {:?} already created change {} from another request",
                            client_token.unwrap_or_default(),
                            earlier.change_id
                        )));
                    }
                    let (record, version) = load(tx, earlier.change_id)?;
                    // The values go back only to a caller who may still read them.
                    for ns in record.namespaces() {
                        tx.require(caller, Permission::Read, &ns)?;
                    }
                    let values = change_values(tx, &record)?;
                    replayed = true;
                    return Ok(ChangeView {
                        record,
                        version,
                        values,
                    });
                }
            }
            let id = next_change_id(tx)?;
            if let Some(token_key) = token_key {
                let record = ClientTokenRecord {
                    change_id: id,
                    title: title.to_string(),
                    request_sha256: digest.clone(),
                };
                tx.set_record(token_key, &record);
            }
            let mut record = ChangeRecord {
                id,
                title: title.to_string(),
                description: description.to_string(),
                author: caller.name.clone(),
                state: State::Draft,
                edits: Vec::new(),
                reviews: Vec::new(),
                created_at_ms: tx.now_ms,
                updated_at_ms: tx.now_ms,
                published_at_ms: None,
                published_by: None,
                emergency: false,
                reason: None,
            };
            tx.denied_change = Some(id);
            let values = apply_edits(tx, caller, &mut record, edits, &[])?;
            tx.set_record(keys::change(id), &record);
            tx.audit(
                caller,
                "change.create",
                targets(&record),
                Some(id),
                serde_json::json!({ "title": title, "edits": record.edits.len() }),
            );
            Ok(ChangeView {
                record,
                version: 0,
                values,
            })
        })?;
        if !replayed {
            view.version = version;
        }
        Ok(view)
    }

    /// Adds or replaces edits and drops entries. A change in review (or approved) goes
    /// back to draft and loses its approvals.
    pub fn edit_change(
        &self,
        token: Option<&str>,
        id: u64,
        edits: &[EditInput],
        drop: &[(String, String)],
    ) -> Result<ChangeView> {
        let (mut view, version) = self.write(token, "change.edit", |tx, caller| {
            tx.denied_change = Some(id);
            let (mut record, _) = load(tx, id)?;
            transition(&record, Action::Edit)?;
            for ns in record.namespaces() {
                tx.require(caller, Permission::Draft, &ns)?;
            }
            let drop = (drop.iter())
                .map(|(ns, key)| Ok((stored(ns)?, key.clone())))
                .collect::<Result<Vec<_>>>()?;
            apply_edits(tx, caller, &mut record, edits, &drop)?;
            record.state = State::Draft;
            record
                .reviews
                .retain(|review| review.verdict != Verdict::Approve);
            record.updated_at_ms = tx.now_ms;
            tx.set_record(keys::change(id), &record);
            tx.audit(
                caller,
                "change.edit",
                targets(&record),
                Some(id),
                serde_json::json!({ "edits": edits.len(), "dropped": drop.len() }),
            );
            let values = change_values(tx, &record)?;
            Ok(ChangeView {
                record,
                version: 0,
                values,
            })
        })?;
        view.version = version;
        Ok(view)
    }

    /// The change with the value of every edit. Its author, or a principal who may read
    /// every namespace it touches.
    pub fn get_change(&self, token: Option<&str>, id: u64) -> Result<ChangeView> {
        self.read(token, |tx, caller| {
            let (record, version) = load(tx, id)?;
            if record.author != caller.name {
                for ns in record.namespaces() {
                    tx.require(caller, Permission::Read, &ns)?;
                }
            }
            let values = change_values(tx, &record)?;
            Ok(ChangeView {
                record,
                version,
                values,
            })
        })
    }

    /// Changes newest first, below `before_id` if given, filtered by state and author;
    /// without values. Returns the id to continue below.
    pub fn list_changes(
        &self,
        token: Option<&str>,
        state: Option<State>,
        author: Option<&str>,
        limit: i64,
        before_id: Option<u64>,
    ) -> Result<(Vec<ChangeView>, Option<u64>)> {
        let limit = page_limit(limit)?;
        self.read(token, |tx, _caller| {
            let start = keys::changes();
            let mut end = match before_id {
                Some(before) => keys::change(before),
                None => keys::prefix_end(&start),
            };
            let mut out = Vec::new();
            loop {
                let page = tx.scan_at(&start, &end, limit + 1, true, tx.version)?;
                let exhausted = page.len() <= limit;
                for stored in &page {
                    let record: ChangeRecord =
                        model::decode(&stored.value, "change").map_err(Error::Internal)?;
                    let wanted = state.is_none_or(|s| s == record.state)
                        && author.is_none_or(|a| a == record.author);
                    if !wanted {
                        continue;
                    }
                    if out.len() == limit {
                        let next = out.last().map(|view: &ChangeView| view.record.id);
                        return Ok((out, next));
                    }
                    out.push(ChangeView {
                        values: vec![None; record.edits.len()],
                        record,
                        version: stored.mod_version,
                    });
                }
                match (exhausted, page.last()) {
                    (false, Some(stored)) => end = stored.key.clone(),
                    _ => return Ok((out, None)),
                }
            }
        })
    }

    /// Sends a draft to review: its author, or an editor of every namespace it touches.
    /// A change whose namespaces require no approvals is approved at once.
    pub fn submit_change(&self, token: Option<&str>, id: u64) -> Result<ChangeView> {
        self.transition_change(
            token,
            id,
            Action::Submit,
            "change.submit",
            |tx, caller, record| {
                if record.author != caller.name {
                    for ns in record.namespaces() {
                        tx.require(caller, Permission::Draft, &ns)?;
                    }
                }
                if record.edits.is_empty() {
                    return Err(Error::InvalidTransition {
                        change_id: record.id,
                        state: record.state.name(),
                        action: Action::Submit.name(),
                        message: "the change has no edits".into(),
                    });
                }
                record.state = match approvals_met(tx, record)? {
                    true => State::Approved,
                    false => State::InReview,
                };
                Ok(serde_json::json!({}))
            },
        )
    }

    /// Approves a change in review: by a principal who approves at least one namespace it
    /// touches, never its author. It is approved once every namespace it touches has as
    /// many approvals from its approvers as it requires.
    pub fn approve_change(
        &self,
        token: Option<&str>,
        id: u64,
        comment: &str,
    ) -> Result<ChangeView> {
        self.review(token, id, comment, Verdict::Approve)
    }

    /// Rejects a change in review (final), with a comment.
    pub fn reject_change(&self, token: Option<&str>, id: u64, comment: &str) -> Result<ChangeView> {
        self.review(token, id, comment, Verdict::Reject)
    }

    fn review(
        &self,
        token: Option<&str>,
        id: u64,
        comment: &str,
        verdict: Verdict,
    ) -> Result<ChangeView> {
        let (action, audit) = match verdict {
            Verdict::Approve => (Action::Approve, "change.approve"),
            Verdict::Reject => (Action::Reject, "change.reject"),
        };
        self.transition_change(token, id, action, audit, |tx, caller, record| {
            if record.author == caller.name {
                return Err(Error::InvalidTransition {
                    change_id: record.id,
                    state: record.state.name(),
                    action: action.name(),
                    message: "the author of a change may not review it".into(),
                });
            }
            let namespaces = record.namespaces();
            let mut reviews_any = false;
            for ns in &namespaces {
                if tx
                    .roles(&caller.name, caller.root, ns)?
                    .hold(Permission::Approve)
                {
                    reviews_any = true;
                }
            }
            if !reviews_any {
                let first = namespaces
                    .iter()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| "/".into());
                return Err(Error::PermissionDenied {
                    principal: caller.name.clone(),
                    permission: Permission::Approve,
                    namespace: keys::display_path(&first),
                });
            }
            record
                .reviews
                .retain(|review| review.principal != caller.name);
            record.reviews.push(ReviewRecord {
                principal: caller.name.clone(),
                verdict,
                comment: comment.to_string(),
                at_ms: tx.now_ms,
            });
            if verdict == Verdict::Approve && approvals_met(tx, record)? {
                record.state = State::Approved;
            }
            Ok(serde_json::json!({ "comment": comment, "approvals": record.approvers() }))
        })
    }

    /// Abandons a change (final): its author, or an admin of every namespace it touches.
    pub fn abandon_change(&self, token: Option<&str>, id: u64) -> Result<ChangeView> {
        self.transition_change(
            token,
            id,
            Action::Abandon,
            "change.abandon",
            |tx, caller, record| {
                if record.author != caller.name {
                    for ns in record.namespaces() {
                        tx.require(caller, Permission::Admin, &ns)?;
                    }
                }
                Ok(serde_json::json!({}))
            },
        )
    }

    /// Runs one state transition of change `id`: `body` checks who may, may change the
    /// record further and returns the audit detail.
    fn transition_change(
        &self,
        token: Option<&str>,
        id: u64,
        action: Action,
        audit: &str,
        mut body: impl FnMut(&mut Tx<'_>, &Caller, &mut ChangeRecord) -> Result<Value>,
    ) -> Result<ChangeView> {
        let (mut view, version) = self.write(token, audit, |tx, caller| {
            tx.denied_change = Some(id);
            let (mut record, _) = load(tx, id)?;
            let next = transition(&record, action)?;
            let before = record.state;
            record.state = next;
            let detail = body(tx, caller, &mut record)?;
            record.updated_at_ms = tx.now_ms;
            tx.set_record(keys::change(id), &record);
            tx.audit(
                caller,
                audit,
                targets(&record),
                Some(id),
                serde_json::json!({
                    "state": { "before": before.name(), "after": record.state.name() },
                    "detail": detail,
                }),
            );
            let values = vec![None; record.edits.len()];
            Ok(ChangeView {
                record,
                version: 0,
                values,
            })
        })?;
        view.version = version;
        Ok(view)
    }

    /// Re-bases every edit whose entry moved onto its current revision: a put becomes a
    /// three-way merge (its own changes applied to the current entry), conflicting when
    /// both changed the same JSON pointer (or the same array). With conflicts nothing is
    /// changed; else the change goes back to draft without approvals.
    pub fn rebase_change(&self, token: Option<&str>, id: u64) -> Result<RebaseOutcome> {
        let (mut outcome, version) = self.write(token, "change.rebase", |tx, caller| {
            tx.denied_change = Some(id);
            let (mut record, version) = load(tx, id)?;
            transition(&record, Action::Rebase)?;
            for ns in record.namespaces() {
                tx.require(caller, Permission::Draft, &ns)?;
            }
            let mut conflicts = Vec::new();
            let mut rebased = Vec::new();
            for (index, edit) in record.edits.iter().enumerate() {
                let current = current_revision(tx, &edit.ns, &edit.key)?;
                if current.0 == edit.base_revision {
                    continue;
                }
                match rebase_edit(tx, id, edit, &current) {
                    Ok(value) => rebased.push((index, current.0, value)),
                    Err((pointer, message)) => conflicts.push(RebaseConflict {
                        ns: keys::display_path(&edit.ns),
                        key: edit.key.clone(),
                        pointer,
                        message,
                    }),
                }
            }
            if !conflicts.is_empty() {
                let values = vec![None; record.edits.len()];
                let change = ChangeView {
                    record,
                    version,
                    values,
                };
                return Ok(RebaseOutcome { change, conflicts });
            }
            for (index, base, value) in rebased {
                let edit = &mut record.edits[index];
                edit.base_revision = base;
                if let Some(value) = value {
                    check_schema(tx, &edit.ns, &edit.key, &edit.content_type, &value)?;
                    let key = keys::change_value(id, &edit.ns, &edit.key);
                    match tx.get(&key)?.map(|stored| stored.value) {
                        Some(ours) if ours == value => {} // Already in place.
                        Some(ours) => {
                            let name = edit.key.clone();
                            match canonical_and_delta(tx, &edit.ns, &name, &value, Some(&ours))? {
                                (_, Some(patch)) => tx.set_patched(key.clone(), key, patch),
                                (_, None) => tx.set(key, value),
                            }
                        }
                        None => tx.set(key, value),
                    }
                }
            }
            record.state = State::Draft;
            record
                .reviews
                .retain(|review| review.verdict != Verdict::Approve);
            record.updated_at_ms = tx.now_ms;
            tx.set_record(keys::change(id), &record);
            tx.audit(
                caller,
                "change.rebase",
                targets(&record),
                Some(id),
                serde_json::json!({}),
            );
            let values = change_values(tx, &record)?;
            let change = ChangeView {
                record,
                version: 0,
                values,
            };
            Ok(RebaseOutcome {
                change,
                conflicts: Vec::new(),
            })
        })?;
        if outcome.conflicts.is_empty() {
            outcome.change.version = version;
        }
        Ok(outcome)
    }

    /// Publishes an approved change (or, `emergency`, any open one, by an admin of every
    /// namespace it touches, with a reason): every entry, the change's state and the
    /// audit event in one commit, or nothing. Returns the change and the commit version.
    pub fn publish_change(
        &self,
        token: Option<&str>,
        id: u64,
        emergency: bool,
        reason: Option<&str>,
    ) -> Result<ChangeView> {
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if emergency && reason.is_none() {
            return Err(Error::Invalid("an emergency publish needs a reason".into()));
        }
        let audit = match emergency {
            true => "change.emergency_publish",
            false => "change.publish",
        };
        let (mut view, version) = self.write(token, audit, |tx, caller| {
            tx.denied_change = Some(id);
            let (mut record, _) = load(tx, id)?;
            let action = match emergency {
                true => Action::EmergencyPublish,
                false => Action::Publish,
            };
            transition(&record, action)?;
            let permission = match emergency {
                true => Permission::Admin,
                false => Permission::Publish,
            };
            for ns in record.namespaces() {
                tx.require(caller, permission, &ns)?;
            }
            if !emergency && !approvals_met(tx, &record)? {
                return Err(Error::InvalidTransition {
                    change_id: id,
                    state: record.state.name(),
                    action: action.name(),
                    message: "its approvals no longer suffice (an approver lost the role, or \
                              a namespace now requires more)"
                        .into(),
                });
            }
            let mut moved = Vec::new();
            let mut currents = Vec::with_capacity(record.edits.len());
            for edit in &record.edits {
                let current = current_revision(tx, &edit.ns, &edit.key)?;
                if current.0 != edit.base_revision {
                    moved.push(Moved {
                        ns: keys::display_path(&edit.ns),
                        key: edit.key.clone(),
                        base_revision: edit.base_revision,
                        current_revision: current.0,
                    });
                }
                currents.push(current.0);
            }
            if !moved.is_empty() {
                return Err(Error::Stale {
                    change_id: id,
                    moved,
                });
            }
            let approvers = record.approvers();
            let mut published = Vec::with_capacity(record.edits.len());
            for (edit, current) in record.edits.iter().zip(currents) {
                let revision = current + 1;
                let change_value = keys::change_value(id, &edit.ns, &edit.key);
                if edit.op == Op::Put {
                    let value = tx.get(&change_value)?.ok_or_else(|| {
                        Error::Internal(format!("change {id} has no value for {}", edit.key))
                    })?;
                    check_schema(tx, &edit.ns, &edit.key, &edit.content_type, &value.value)?;
                    // The draft already put the value in the log: publish moves it.
                    let published = keys::value(&edit.ns, &edit.key, revision);
                    tx.copy(published, change_value);
                }
                let entry = RevisionRecord {
                    revision,
                    change_id: id,
                    author: record.author.clone(),
                    approvers: approvers.clone(),
                    published_at_ms: tx.now_ms,
                    published_by: caller.name.clone(),
                    deleted: edit.op == Op::Delete,
                    emergency,
                    content_type: edit.content_type.clone(),
                };
                tx.set_record(keys::meta(&edit.ns, &edit.key), &entry);
                tx.set_record(keys::history(&edit.ns, &edit.key, revision), &entry);
                published.push(serde_json::json!({
                    "entry": model::entry_name(&edit.ns, &edit.key),
                    "before": current,
                    "after": revision,
                    "op": edit.op,
                }));
            }
            // After the copies, which read them: one mutation for all of them, so that a
            // publish takes three per entry (value, meta, history) and EDITS_MAX entries
            // fit in `mutations_per_txn_max`.
            tx.clear_prefix(&keys::change_values(id));
            let before = record.state;
            record.state = State::Published;
            record.published_at_ms = Some(tx.now_ms);
            record.published_by = Some(caller.name.clone());
            record.emergency = emergency;
            record.reason = reason.map(str::to_string);
            record.updated_at_ms = tx.now_ms;
            tx.set_record(keys::change(id), &record);
            tx.audit(
                caller,
                audit,
                targets(&record),
                Some(id),
                serde_json::json!({
                    "state": { "before": before.name(), "after": "published" },
                    "entries": published,
                    "emergency": emergency,
                    "reason": reason,
                }),
            );
            let values = vec![None; record.edits.len()];
            Ok(ChangeView {
                record,
                version: 0,
                values,
            })
        })?;
        view.version = version;
        let entries = view.record.edits.len() as f64;
        self.metrics.publish_entries.observe(entries);
        Ok(view)
    }

    /// A new draft that restores every entry published change `id` wrote to its revision
    /// before it (deleting entries it created), based on the current revisions.
    pub fn revert_change(
        &self,
        token: Option<&str>,
        id: u64,
        title: Option<&str>,
    ) -> Result<ChangeView> {
        let (edits, default_title) = self.read(token, |tx, caller| {
            let (record, _) = load(tx, id)?;
            if record.state != State::Published {
                return Err(Error::InvalidTransition {
                    change_id: id,
                    state: record.state.name(),
                    action: "revert",
                    message: "only a published change can be reverted".into(),
                });
            }
            let mut edits = Vec::new();
            for edit in &record.edits {
                tx.require(caller, Permission::Draft, &edit.ns)?;
                let start = keys::histories(&edit.ns, &edit.key);
                let end = keys::prefix_end(&start);
                let history = tx.scan_at(&start, &end, usize::MAX, true, tx.version)?;
                let records = (history.iter())
                    .map(revision_record)
                    .collect::<Result<Vec<_>>>()?;
                let Some(at) = records.iter().position(|r| r.change_id == id) else {
                    continue;
                };
                let live_now = records.first().is_some_and(|r| !r.deleted);
                let prior = records.get(at + 1).filter(|r| !r.deleted);
                let input = match prior {
                    Some(prior) => EditInput {
                        ns: keys::display_path(&edit.ns),
                        key: edit.key.clone(),
                        kind: EditKind::Put,
                        value: entry_value(tx, &edit.ns, &edit.key, prior, tx.version)?,
                        content_type: Some(prior.content_type.clone()),
                    },
                    None if live_now => EditInput {
                        ns: keys::display_path(&edit.ns),
                        key: edit.key.clone(),
                        kind: EditKind::Delete,
                        value: None,
                        content_type: None,
                    },
                    None => continue,
                };
                edits.push(input);
            }
            Ok((edits, format!("Revert change {id}: {}", record.title)))
        })?;
        let title = title.map(str::to_string).unwrap_or(default_title);
        let title: String = title.chars().take(TITLE_BYTES_MAX / 4).collect();
        let description = format!("Restores the entries change {id} published.");
        self.create_change(token, &title, &description, &edits)
    }
}

fn check_title(title: &str) -> Result<()> {
    if title.trim().is_empty() || title.len() > TITLE_BYTES_MAX {
        return Err(Error::Invalid(format!(
            "a change's title must be 1 to {TITLE_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

fn next_change_id(tx: &mut Tx<'_>) -> Result<u64> {
    let last = match tx.get(&keys::change_sequence())? {
        None => 0,
        Some(stored) => {
            let bytes: [u8; 8] = (stored.value.as_slice().try_into())
                .map_err(|_| Error::Internal("change sequence is not 8 bytes".into()))?;
            u64::from_be_bytes(bytes)
        }
    };
    let id = last + 1;
    tx.set(keys::change_sequence(), id.to_be_bytes().to_vec());
    Ok(id)
}

fn load(tx: &mut Tx<'_>, id: u64) -> Result<(ChangeRecord, u64)> {
    tx.record::<ChangeRecord>(&keys::change(id), "change")?
        .ok_or(Error::NotFound {
            what: "change",
            name: id.to_string(),
        })
}

fn transition(record: &ChangeRecord, action: Action) -> Result<State> {
    change::next(record.state, action).ok_or_else(|| Error::InvalidTransition {
        change_id: record.id,
        state: record.state.name(),
        action: action.name(),
        message: match record.state.is_final() {
            true => format!("a {} change is final", record.state.name()),
            false => format!(
                "{} is not allowed on a change in {}",
                action.name(),
                record.state.name()
            ),
        },
    })
}

fn targets(record: &ChangeRecord) -> Vec<String> {
    let mut out: Vec<String> = (record.edits.iter())
        .map(|edit| model::entry_name(&edit.ns, &edit.key))
        .collect();
    out.extend(record.namespaces().iter().map(|ns| keys::display_path(ns)));
    out
}

/// The entry's published revision now (0: never published) and its record.
fn current_revision(tx: &mut Tx<'_>, ns: &str, key: &str) -> Result<(u64, Option<RevisionRecord>)> {
    match tx.get(&keys::meta(ns, key))? {
        None => Ok((0, None)),
        Some(stored) => {
            let record = revision_record(&stored)?;
            Ok((record.revision, Some(record)))
        }
    }
}

fn is_json(content_type: &str) -> bool {
    content_type == JSON || content_type.ends_with("+json")
}

fn check_schema(
    tx: &mut Tx<'_>,
    ns: &str,
    key: &str,
    content_type: &str,
    value: &[u8],
) -> Result<()> {
    let record = tx.namespace(ns)?;
    let Some(schema_text) = record.schema else {
        return Ok(());
    };
    if !is_json(content_type) {
        return Err(Error::Invalid(format!(
            "{} has a schema, so its entries must be JSON, not {content_type}",
            keys::display_path(ns)
        )));
    }
    let value: Value = serde_json::from_slice(value)
        .map_err(|error| Error::Internal(format!("a stored JSON entry does not parse: {error}")))?;
    schema::check(&schema_text, &value, &keys::display_path(ns), key)
}

fn parse_json(ns: &str, key: &str, bytes: &[u8]) -> Result<Value> {
    document::parse(bytes).map_err(|error| invalid_json(ns, key, error))
}

fn invalid_json(ns: &str, key: &str, error: document::InvalidJson) -> Error {
    Error::Invalid(format!(
        "{}: {error} (byte offset {})",
        model::entry_name(ns, key),
        error.offset
    ))
}

/// Applies `edits` and `drop` to the record, writing edit values; returns the value of
/// every edit after.
fn apply_edits(
    tx: &mut Tx<'_>,
    caller: &Caller,
    record: &mut ChangeRecord,
    edits: &[EditInput],
    drop: &[(String, String)],
) -> Result<Vec<Option<Vec<u8>>>> {
    for (ns, key) in drop {
        if let Some(index) = record.edit_index(ns, key) {
            record.edits.remove(index);
            tx.clear(keys::change_value(record.id, ns, key));
        }
    }
    let mut written: Vec<(String, String, Option<Vec<u8>>)> = Vec::new();
    for edit in edits {
        let ns = stored(&edit.ns)?;
        check_name("entry key", &edit.key)?;
        tx.require(caller, Permission::Draft, &ns)?;
        let (current, live) = current_revision(tx, &ns, &edit.key)?;
        let live = live.filter(|r| !r.deleted);
        let index = record.edit_index(&ns, &edit.key);
        let base_revision = index.map_or(current, |i| record.edits[i].base_revision);
        let value_key = keys::change_value(record.id, &ns, &edit.key);
        // What the change holds for the entry before this edit, and the key holding it
        // (this call's earlier write, the change's stored value, or the published one).
        // Whether that value is JSON: only JSON values are stored canonical, which
        // patches (`document::apply_json_patch`) need.
        let pending_json = match index {
            Some(i) => is_json(&record.edits[i].content_type),
            None => live.as_ref().is_some_and(|r| is_json(&r.content_type)),
        };
        let pending = match index.map(|i| record.edits[i].op) {
            Some(Op::Put) => match written.iter().rev().find(|w| w.0 == ns && w.1 == edit.key) {
                Some((_, _, value)) => value.clone().map(|v| (value_key.clone(), v)),
                None => tx.get(&value_key)?.map(|s| (value_key.clone(), s.value)),
            },
            Some(Op::Delete) => None,
            None => match &live {
                Some(record) => entry_value(tx, &ns, &edit.key, record, tx.version)?
                    .map(|v| (keys::value(&ns, &edit.key, record.revision), v)),
                None => None,
            },
        };
        // An RFC 6902 patch from `pending` to the new value, when smaller.
        let mut delta = None;
        let (op, value, content_type, patched) = match edit.kind {
            EditKind::Put => {
                let bytes = edit.value.as_deref().ok_or_else(|| {
                    Error::Invalid(format!(
                        "a put of {} needs a value",
                        model::entry_name(&ns, &edit.key)
                    ))
                })?;
                let content_type = edit.content_type.clone().unwrap_or_else(|| JSON.into());
                let value = match is_json(&content_type) {
                    true => {
                        let base = (pending.as_ref())
                            .filter(|_| pending_json)
                            .map(|(_, base)| base.as_slice());
                        let (value, patch) = canonical_and_delta(tx, &ns, &edit.key, bytes, base)?;
                        delta = patch;
                        value
                    }
                    false => bytes.to_vec(),
                };
                (Op::Put, Some(value), content_type, false)
            }
            EditKind::Patch => {
                let patch = edit.value.as_deref().ok_or_else(|| {
                    Error::Invalid(format!(
                        "a patch of {} needs a patch",
                        model::entry_name(&ns, &edit.key)
                    ))
                })?;
                let Some((_, base)) = &pending else {
                    return Err(Error::NotFound {
                        what: "entry",
                        name: model::entry_name(&ns, &edit.key),
                    });
                };
                if !pending_json {
                    return Err(Error::Invalid(format!(
                        "{} is not JSON, so it cannot be patched",
                        model::entry_name(&ns, &edit.key)
                    )));
                }
                // The function the executor applies the patch with (if it goes into the
                // log as one), so the value here is the one every replica writes.
                let patched = document::apply_json_patch(base, patch).map_err(|refusal| {
                    Error::Invalid(format!(
                        "{}: {}",
                        model::entry_name(&ns, &edit.key),
                        refusal.message
                    ))
                })?;
                if patch.len() < patched.len() / 2 {
                    delta = Some(patch.to_vec());
                }
                (Op::Put, Some(patched), JSON.to_string(), true)
            }
            EditKind::Delete => {
                if live.is_none() {
                    // Deleting what the change itself created only drops that edit.
                    if let Some(index) = index {
                        record.edits.remove(index);
                        tx.clear(value_key);
                        continue;
                    }
                    return Err(Error::NotFound {
                        what: "entry",
                        name: model::entry_name(&ns, &edit.key),
                    });
                }
                (Op::Delete, None, JSON.to_string(), false)
            }
        };
        if let Some(value) = &value {
            check_schema(tx, &ns, &edit.key, &content_type, value)?;
            match (delta, pending) {
                (Some(patch), Some((base, _))) => tx.set_patched(value_key, base, patch),
                _ => tx.set(value_key, value.clone()),
            }
        } else {
            tx.clear(value_key);
        }
        let edit_record = EditRecord {
            ns: ns.clone(),
            key: edit.key.clone(),
            op,
            base_revision,
            content_type,
            patched,
        };
        match index {
            Some(index) => record.edits[index] = edit_record,
            None => record.edits.push(edit_record),
        }
        written.push((ns, edit.key.clone(), value));
        if record.edits.len() > EDITS_MAX {
            return Err(Error::Invalid(format!(
                "a change may edit at most {EDITS_MAX} entries"
            )));
        }
    }
    change_values_with(tx, record, &written)
}

/// The SHA-256 of a `createChange` request, so that a client token's retry can be told
/// from another request reusing the token.
fn request_digest(title: &str, description: &str, edits: &[EditInput]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(title.as_bytes());
    field(description.as_bytes());
    for edit in edits {
        let kind: &[u8] = match edit.kind {
            EditKind::Put => b"put",
            EditKind::Patch => b"patch",
            EditKind::Delete => b"delete",
        };
        field(edit.ns.as_bytes());
        field(edit.key.as_bytes());
        field(kind);
        field(edit.value.as_deref().unwrap_or_default());
        field(edit.content_type.as_deref().unwrap_or_default().as_bytes());
    }
    super::hex(&hash.finalize())
}

/// Values below this go into the log whole: a patch would save too little to pay for the
/// diff.
const DELTA_MIN_BYTES: usize = 4096;

/// The canonical form of the JSON `bytes` put into an entry and, when `base` (what the
/// entry held) makes one worth it, the patch to log instead (`document::delta`). For a large
/// document the base is parsed on a second thread while `bytes` is, and both parsed trees
/// are freed on a thread of their own: each costs about as much as the parse. A document
/// over the store's `document_tree_bytes_max` is never parsed into a tree: it is put in
/// canonical form in one pass and diffed by scanning (`document::NewDocument`).
fn canonical_and_delta(
    tx: &Tx<'_>,
    ns: &str,
    key: &str,
    bytes: &[u8],
    base: Option<&[u8]>,
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let tree_bytes_max = tx.document_tree_bytes_max();
    if bytes.len() > tree_bytes_max {
        let mut new = document::NewDocument::parse(bytes, tree_bytes_max)
            .map_err(|error| invalid_json(ns, key, error))?;
        // Stored JSON entries are canonical.
        let patch = base.and_then(|base| new.delta_from(base, true));
        super::drop_later(new.take_tree());
        return Ok((new.canonical, patch));
    }
    let Some(base) = base.filter(|_| bytes.len() >= DELTA_MIN_BYTES) else {
        return Ok((document::canonical(&parse_json(ns, key, bytes)?), None));
    };
    let (base_value, new) = super::parse_beside(base, || parse_json(ns, key, bytes));
    let new = new?;
    let value = document::canonical(&new);
    let patch = base_value
        .as_ref()
        // Stored JSON entries are canonical.
        .and_then(|base_value| document::delta(base, true, base_value, &new, &value));
    super::drop_later((new, base_value));
    Ok((value, patch))
}

fn change_values(tx: &mut Tx<'_>, record: &ChangeRecord) -> Result<Vec<Option<Vec<u8>>>> {
    change_values_with(tx, record, &[])
}

/// Each edit's value: from `written` (this call's writes, not yet committed) or stored.
fn change_values_with(
    tx: &mut Tx<'_>,
    record: &ChangeRecord,
    written: &[(String, String, Option<Vec<u8>>)],
) -> Result<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::with_capacity(record.edits.len());
    for edit in &record.edits {
        if edit.op == Op::Delete {
            out.push(None);
            continue;
        }
        let fresh = written
            .iter()
            .rev()
            .find(|w| w.0 == edit.ns && w.1 == edit.key);
        let value = match fresh {
            Some((_, _, value)) => value.clone(),
            None => (tx.get(&keys::change_value(record.id, &edit.ns, &edit.key))?)
                .map(|stored| stored.value),
        };
        out.push(value);
    }
    Ok(out)
}

/// Whether every namespace the change touches has its required approvals from
/// principals who approve there.
fn approvals_met(tx: &mut Tx<'_>, record: &ChangeRecord) -> Result<bool> {
    let approvers = record.approvers();
    let mut roots = BTreeSet::new();
    for approver in &approvers {
        let principal = tx.record::<PrincipalRecord>(&keys::principal(approver), "principal")?;
        if principal.is_some_and(|(p, _)| p.root && !p.disabled) {
            roots.insert(approver.clone());
        }
    }
    for ns in record.namespaces() {
        let namespace = tx.namespace(&ns)?;
        let required = namespace.approvals_required as usize;
        let mut have = 0;
        for approver in &approvers {
            let root = roots.contains(approver);
            if !tx.roles(approver, root, &ns)?.hold(Permission::Approve) {
                continue;
            }
            // A group binds root too: its approval counts only if root is a member.
            if let Some(group) = &namespace.approver_group {
                let member = match principal(tx, approver) {
                    Ok(principal) => principal.groups.contains(group),
                    Err(Error::NotFound { .. }) => false,
                    Err(error) => return Err(error),
                };
                if !member {
                    continue;
                }
            }
            have += 1;
        }
        if have < required {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The edit's value re-based onto the entry's current revision (None for a delete), or
/// the conflict (pointer, message).
fn rebase_edit(
    tx: &mut Tx<'_>,
    id: u64,
    edit: &EditRecord,
    current: &(u64, Option<RevisionRecord>),
) -> std::result::Result<Option<Vec<u8>>, (String, String)> {
    let internal = |error: Error| (String::new(), error.to_string());
    let whole = |message: &str| Err((String::new(), message.to_string()));
    let theirs_record = current.1.as_ref().filter(|r| !r.deleted);
    match edit.op {
        Op::Delete => whole("the entry this change deletes was changed since"),
        Op::Put if edit.base_revision == 0 => match theirs_record {
            Some(_) => whole("the entry this change creates was created since"),
            None => {
                let value = tx.get(&keys::change_value(id, &edit.ns, &edit.key));
                Ok(value.map_err(internal)?.map(|s| s.value))
            }
        },
        Op::Put => {
            let Some(theirs_record) = theirs_record else {
                return whole("the entry this change edits was deleted since");
            };
            if !is_json(&edit.content_type) || !is_json(&theirs_record.content_type) {
                return whole("the entry is not JSON, so it cannot be merged");
            }
            let base_key = keys::history(&edit.ns, &edit.key, edit.base_revision);
            let base_record = tx.get_at(&base_key, tx.version).map_err(internal)?;
            let base_record =
                base_record.ok_or_else(|| internal(Error::Internal("no base".into())))?;
            let base_record = revision_record(&base_record).map_err(internal)?;
            let version = tx.version;
            let base = entry_value(tx, &edit.ns, &edit.key, &base_record, version);
            let theirs = entry_value(tx, &edit.ns, &edit.key, theirs_record, version);
            let ours = tx.get(&keys::change_value(id, &edit.ns, &edit.key));
            let parse = |bytes: Option<Vec<u8>>| -> std::result::Result<Value, (String, String)> {
                let bytes = bytes.unwrap_or_else(|| b"null".to_vec());
                serde_json::from_slice(&bytes).map_err(|e| (String::new(), e.to_string()))
            };
            let base = parse(base.map_err(internal)?)?;
            let theirs = parse(theirs.map_err(internal)?)?;
            let ours = parse(ours.map_err(internal)?.map(|s| s.value))?;
            merge(&base, &ours, &theirs).map(|merged| Some(document::canonical(&merged)))
        }
    }
}

/// Applies the changes from `base` to `ours` onto `theirs`, unless both changed the same
/// place: one pointer at or below the other, or the same array (whose indices the other
/// side's changes shift).
pub(super) fn merge(
    base: &Value,
    ours: &Value,
    theirs: &Value,
) -> std::result::Result<Value, (String, String)> {
    let our_patch = json_patch::diff(base, ours);
    let their_patch = json_patch::diff(base, theirs);
    for ours_op in &our_patch.0 {
        for theirs_op in &their_patch.0 {
            if ours_op == theirs_op {
                continue; // both made the same change
            }
            let (a, b) = (ours_op.path().as_str(), theirs_op.path().as_str());
            let nested = |x: &str, y: &str| x == y || y.starts_with(&format!("{x}/"));
            let same_array = array_of(base, a).is_some() && array_of(base, a) == array_of(base, b);
            if nested(a, b) || nested(b, a) || same_array {
                let at = if a.len() <= b.len() { a } else { b };
                return Err((
                    at.to_string(),
                    format!("the change and the published entry both changed {at:?}"),
                ));
            }
        }
    }
    let mut merged = theirs.clone();
    let identical: Vec<_> = (our_patch.0.into_iter())
        .filter(|op| !their_patch.0.contains(op))
        .collect();
    json_patch::patch(&mut merged, &identical).map_err(|error| {
        let at = error.path.to_string();
        (
            at.clone(),
            format!("the change no longer applies at {at:?}"),
        )
    })?;
    Ok(merged)
}

/// The pointer of the innermost array (in `base`) that `pointer` goes through.
fn array_of(base: &Value, pointer: &str) -> Option<String> {
    let mut found = None;
    let mut at = String::new();
    let mut value = base;
    for token in pointer.split('/').skip(1) {
        if value.is_array() {
            found = Some(at.clone());
        }
        let unescaped = token.replace("~1", "/").replace("~0", "~");
        value = match value {
            Value::Object(map) => match map.get(&unescaped) {
                Some(v) => v,
                None => break,
            },
            Value::Array(items) => match unescaped.parse::<usize>().ok().and_then(|i| items.get(i))
            {
                Some(v) => v,
                None => break,
            },
            _ => break,
        };
        at.push('/');
        at.push_str(token);
    }
    found
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn different_paths_merge_and_the_same_path_conflicts() {
        let base = json!({"a": 1, "b": {"c": 2}, "list": [1, 2, 3]});
        let ours = json!({"a": 10, "b": {"c": 2}, "list": [1, 2, 3]});
        let theirs = json!({"a": 1, "b": {"c": 20}, "list": [1, 2, 3]});
        assert_eq!(
            merge(&base, &ours, &theirs).unwrap(),
            json!({"a": 10, "b": {"c": 20}, "list": [1, 2, 3]})
        );
        let clash = json!({"a": 11, "b": {"c": 2}, "list": [1, 2, 3]});
        let (pointer, _) = merge(&base, &ours, &clash).unwrap_err();
        assert_eq!(pointer, "/a");
        // A parent replaced on one side, a child edited on the other.
        let parent = json!({"a": 1, "b": 5, "list": [1, 2, 3]});
        let child = json!({"a": 1, "b": {"c": 3}, "list": [1, 2, 3]});
        assert_eq!(merge(&base, &parent, &child).unwrap_err().0, "/b");
        // Two edits of one array conflict: indices shift.
        let push = json!({"a": 1, "b": {"c": 2}, "list": [1, 2, 3, 4]});
        let edit = json!({"a": 1, "b": {"c": 2}, "list": [0, 2, 3]});
        assert!(merge(&base, &push, &edit).is_err());
        // The same change on both sides is no conflict.
        assert_eq!(merge(&base, &ours, &ours).unwrap(), ours);
    }
}
