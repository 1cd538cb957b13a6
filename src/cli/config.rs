//! The configuration service's verbs: `ns`, `config`, `change`, `audit`, `user`, `token`,
//! `grant`, `whoami`. Each authenticates the connection with the token from `--token`,
//! `PAXKV_TOKEN`, or the token file (`PAXKV_TOKEN_FILE`, else `~/.config/paxkv/token`,
//! which `paxkv dev` writes). `--json` prints one JSON value for scripts.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use paxkv::api::gen::paxkv::{
    self as wire, AlreadyExists, InvalidTransition, NotFound, PermissionDenied, SchemaViolation,
    Stale, TConfmanSyncClient, Unauthenticated,
};
use paxkv::api::{connect_config, ConfigClient};
use serde_json::{json, Value};

use super::backup::{random_hex, with_retries};
use super::{ConnectionArgs, Failure, EXIT_SUCCESS};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

impl ConfigArgs {
    pub(super) fn client(&self) -> Result<ConfigClient, Failure> {
        let token = self.connection.token().map(|(token, _)| token);
        let endpoint = self.connection.endpoint.as_str();
        connect_config(endpoint, self.connection.protocol(), token.as_deref()).map_err(|error| {
            match error {
                thrift::Error::User(_) => Failure::from(error),
                other => Failure::Unavailable(format!("cannot connect to {endpoint}: {other}")),
            }
        })
    }

    /// `print`, building the JSON only when it is printed: a change's JSON parses every
    /// value it holds, which for a 50 MB entry costs seconds.
    pub(super) fn print_lazy(
        &self,
        value: impl FnOnce() -> Value,
        line: impl FnOnce() -> String,
    ) -> Result<u8, Failure> {
        match self.json {
            true => emit(value().to_string()),
            false => emit(line()),
        }
    }

    pub(super) fn print(
        &self,
        value: Value,
        line: impl FnOnce(&Value) -> String,
    ) -> Result<u8, Failure> {
        match self.json {
            true => emit(value.to_string()),
            false => emit(line(&value)),
        }
    }
}

fn emit(text: String) -> Result<u8, Failure> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(EXIT_SUCCESS)
}

/// The failure for a configuration service exception, if it is one.
pub(super) fn typed_failure(
    user: &(dyn std::error::Error + Send + Sync + 'static),
) -> Option<Failure> {
    if let Some(e) = user.downcast_ref::<Unauthenticated>() {
        return Some(Failure::Denied(format!("Unauthenticated: {}", e.message)));
    }
    if let Some(e) = user.downcast_ref::<PermissionDenied>() {
        return Some(Failure::Denied(format!(
            "PermissionDenied: {} needed on {}",
            e.permission, e.ns
        )));
    }
    if let Some(e) = user.downcast_ref::<NotFound>() {
        return Some(Failure::NotFound(format!("NotFound: {}", e.message)));
    }
    if let Some(e) = user.downcast_ref::<AlreadyExists>() {
        return Some(Failure::Refused(format!("AlreadyExists: {}", e.message)));
    }
    if let Some(e) = user.downcast_ref::<InvalidTransition>() {
        return Some(Failure::Refused(format!(
            "InvalidTransition: {}",
            e.message
        )));
    }
    if let Some(e) = user.downcast_ref::<SchemaViolation>() {
        return Some(Failure::Refused(format!(
            "SchemaViolation: {}:{} at {:?} ({}): {}",
            e.ns, e.key, e.pointer, e.rule, e.message
        )));
    }
    if let Some(e) = user.downcast_ref::<Stale>() {
        let moved: Vec<String> = (e.moved.iter())
            .map(|m| {
                format!(
                    "{}:{} (based on r{}, now r{})",
                    m.ns, m.key, m.base_revision, m.current_revision
                )
            })
            .collect();
        return Some(Failure::Refused(format!(
            "Stale: change {} is based on old revisions of {}; rebase it",
            e.change_id,
            moved.join(", ")
        )));
    }
    None
}

// ---------------------------------------------------------------------------------------
// Namespaces.

#[derive(Subcommand, Debug)]
pub enum NsCommand {
    /// Create a namespace (its parent must exist).
    Create {
        path: String,
        #[arg(long, default_value = "")]
        description: String,
        /// A JSON Schema (draft 2020-12) file for its entries.
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
        /// Approvals a change needs from this namespace's approvers.
        #[arg(long, value_name = "N")]
        approvals: Option<i32>,
        /// Count approvals only from members of GROUP (`paxkv grant group`).
        #[arg(long, value_name = "GROUP")]
        approver_group: Option<String>,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Change a namespace's description, schema (an empty file removes it) or approvals.
    Update {
        path: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
        #[arg(long, value_name = "N")]
        approvals: Option<i32>,
        /// Count approvals only from members of GROUP; "" removes the group.
        #[arg(long, value_name = "GROUP")]
        approver_group: Option<String>,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Print a namespace: settings, schema and grants.
    Describe {
        path: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// List the namespaces below PATH (its children, or all with --recursive).
    List {
        #[arg(default_value = "/")]
        path: String,
        #[arg(long, short)]
        recursive: bool,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Delete an empty namespace.
    Delete {
        path: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
}

fn namespace_json(ns: &wire::Namespace) -> Value {
    let grants: Vec<Value> = (ns.grants.iter())
        .map(|g| json!({"principal": g.principal, "role": g.role}))
        .collect();
    json!({
        "path": ns.path,
        "description": ns.description,
        "schema": ns.schema.as_ref().map(|s| serde_json::from_slice::<Value>(s).unwrap_or(Value::Null)),
        "approvals_required": ns.approvals_required,
        "approver_group": ns.approver_group,
        "created_at_ms": ns.created_at_ms,
        "created_by": ns.created_by,
        "grants": grants,
    })
}

/// `config watch`: long polls from `from` (default: after the current version), each
/// retried with a fresh connection while the answer is `Unavailable` or the connection is
/// lost (up to `CALL_ATTEMPTS` in a row); a watch resumes from the version it reached,
/// with no gap and no duplicate.
fn watch(
    args: &ConfigArgs,
    ns: String,
    from: Option<i64>,
    count: Option<u64>,
    patches: bool,
    timeout_ms: i64,
) -> Result<u8, Failure> {
    use std::io::Write;
    let mut client = args.client()?;
    let mut from = match from {
        Some(from) => from,
        None => {
            let request = wire::ListEntriesRequest {
                ns: ns.clone(),
                recursive: false,
                limit: 1,
                continuation: None,
                read_version: None,
                values: false,
            };
            client.list_entries(request)?.read_version + 1
        }
    };
    let mut remaining = count.unwrap_or(u64::MAX);
    let mut out = std::io::stdout().lock();
    while remaining > 0 {
        let request = wire::WatchConfigRequest {
            ns: ns.clone(),
            from_version: from,
            timeout_ms,
            patches: Some(patches),
        };
        let page = with_retries(
            CALL_ATTEMPTS,
            || args.client(),
            &mut client,
            |client| client.watch_config(request.clone()),
        )?;
        for event in page
            .events
            .iter()
            .take(usize::try_from(remaining).unwrap_or(usize::MAX))
        {
            let line = match args.json {
                true => config_event_json(event).to_string(),
                false => config_event_line(event),
            };
            writeln!(out, "{line}")?;
            remaining -= 1;
        }
        out.flush()?;
        from = page.next_version;
    }
    Ok(EXIT_SUCCESS)
}

fn config_event_json(event: &wire::ConfigEvent) -> Value {
    let text = |bytes: &Option<Vec<u8>>| {
        (bytes.as_ref()).map(|b| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null))
    };
    json!({
        "ns": event.ns, "key": event.key, "revision": event.revision,
        "change_id": event.change_id, "version": event.version, "deleted": event.deleted,
        "content_type": event.content_type, "value": text(&event.value),
        "patch": text(&event.patch),
    })
}

fn config_event_line(event: &wire::ConfigEvent) -> String {
    let (verb, body) = match (&event.patch, &event.value) {
        _ if event.deleted => ("DELETE", None),
        (Some(patch), _) => ("PATCH", Some(patch)),
        (None, value) => ("PUT", value.as_ref()),
    };
    let head = format!(
        "{verb} {}:{} revision={} change={} version={}",
        event.ns, event.key, event.revision, event.change_id, event.version
    );
    match body {
        Some(body) => format!("{head} {}", String::from_utf8_lossy(body)),
        None => head,
    }
}

/// Attempts in a row of a call that met `Unavailable` or a lost connection.
const CALL_ATTEMPTS: u32 = 10;

/// `createChange` with a random client token, reconnecting and calling again with the
/// same token while the answer is `Unavailable` or the connection is lost: the server
/// creates the change once however many attempts reach it.
pub(super) fn create_change(
    args: &ConfigArgs,
    client: &mut ConfigClient,
    mut request: wire::CreateChangeRequest,
) -> Result<wire::ChangeSet, Failure> {
    if request.client_token.is_none() {
        request.client_token = Some(format!("cli-{}", random_hex::<16>()?));
    }
    with_retries(
        CALL_ATTEMPTS,
        || args.client(),
        client,
        |client| client.create_change(request.clone()),
    )
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|error| Failure::Local(format!("{}: {error}", path.display())))
}

pub(super) fn ns(command: NsCommand) -> Result<u8, Failure> {
    match command {
        NsCommand::Create {
            path,
            description,
            schema,
            approvals,
            approver_group,
            args,
        } => {
            let schema = schema.as_ref().map(read_file).transpose()?;
            let request = wire::CreateNamespaceRequest {
                path,
                description: Some(description),
                schema,
                approvals_required: approvals,
                approver_group,
            };
            let ns = args.client()?.create_namespace(request)?;
            args.print(namespace_json(&ns), |_| format!("OK namespace {}", ns.path))
        }
        NsCommand::Update {
            path,
            description,
            schema,
            approvals,
            approver_group,
            args,
        } => {
            let schema = schema.as_ref().map(read_file).transpose()?;
            let request = wire::UpdateNamespaceRequest {
                path,
                description,
                schema,
                approvals_required: approvals,
                approver_group,
            };
            let ns = args.client()?.update_namespace(request)?;
            args.print(namespace_json(&ns), |_| format!("OK namespace {}", ns.path))
        }
        NsCommand::Describe { path, args } => {
            let ns = args.client()?.describe_namespace(path)?;
            args.print(namespace_json(&ns), |v| {
                serde_json::to_string_pretty(v).unwrap_or_default()
            })
        }
        NsCommand::List {
            path,
            recursive,
            args,
        } => {
            let mut client = args.client()?;
            let mut all = Vec::new();
            let mut continuation = None;
            loop {
                let request = wire::ListNamespacesRequest {
                    path: path.clone(),
                    recursive,
                    limit: 1000,
                    continuation,
                };
                let page = client.list_namespaces(request)?;
                all.extend(page.namespaces);
                continuation = page.continuation;
                if continuation.is_none() {
                    break;
                }
            }
            let value = Value::Array(all.iter().map(namespace_json).collect());
            args.print(value, |_| {
                (all.iter())
                    .map(|ns| format!("{}\t{}", ns.path, ns.description))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        NsCommand::Delete { path, args } => {
            args.client()?.delete_namespace(path.clone())?;
            args.print(json!({"deleted": path}), |_| format!("OK deleted {path}"))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entries.

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print a published entry's value (the newest, or --revision N, or at --version V).
    Get {
        ns: String,
        key: String,
        #[arg(long)]
        revision: Option<i64>,
        #[arg(long)]
        version: Option<i64>,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Open a draft change that puts VALUE (JSON; @FILE reads a file) at NS:KEY, or add
    /// the edit to --change ID. Prints the change id.
    Put {
        ns: String,
        key: String,
        value: String,
        #[arg(long, value_name = "ID")]
        change: Option<i64>,
        #[arg(long, default_value = "")]
        title: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// List the entries of a namespace (or its subtree with --recursive).
    List {
        ns: String,
        #[arg(long, short)]
        recursive: bool,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Follow the published changes of a namespace's subtree: one line per entry revision
    /// (`PUT`, `PATCH` or `DELETE`, the entry, revision, change and version, then the value
    /// or patch), or with --json one object per line. Reconnects after a lost connection.
    Watch {
        ns: String,
        /// First store version to report (default: the next commit after now).
        #[arg(long, value_name = "V")]
        from: Option<i64>,
        /// Exit after this many events (default: run until interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// A large JSON entry's new revision as the RFC 6902 patch from the previous one,
        /// when that is smaller.
        #[arg(long)]
        patches: bool,
        /// How long each long poll waits on the server.
        #[arg(long, value_name = "MS", default_value_t = 5_000)]
        timeout_ms: i64,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Every published revision of an entry, newest first.
    History {
        ns: String,
        key: String,
        #[arg(long, default_value_t = 100)]
        limit: i32,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// The diff from revision FROM (0: before it existed) to TO (default: the newest).
    Diff {
        ns: String,
        key: String,
        from: i64,
        to: Option<i64>,
        #[command(flatten)]
        args: ConfigArgs,
    },
}

fn entry_json(entry: &wire::Entry) -> Value {
    json!({
        "ns": entry.ns,
        "key": entry.key,
        "revision": entry.revision,
        "change_id": entry.change_id,
        "author": entry.author,
        "approvers": entry.approvers,
        "published_at_ms": entry.published_at_ms,
        "content_type": entry.content_type,
        "read_version": entry.read_version,
        "value": entry.value.as_ref().map(|v| serde_json::from_slice::<Value>(v)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(v).into_owned()))),
    })
}

/// VALUE, or the file named by @VALUE.
fn value_arg(value: &str) -> Result<Vec<u8>, Failure> {
    match value.strip_prefix('@') {
        Some(path) => read_file(&PathBuf::from(path)),
        None => Ok(value.as_bytes().to_vec()),
    }
}

pub(super) fn config(command: ConfigCommand) -> Result<u8, Failure> {
    match command {
        ConfigCommand::Get {
            ns,
            key,
            revision,
            version,
            args,
        } => {
            let request = wire::GetEntryRequest {
                ns,
                key,
                revision,
                read_version: version,
            };
            let entry = args.client()?.get_entry(request)?;
            args.print(entry_json(&entry), |_| {
                String::from_utf8_lossy(entry.value.as_deref().unwrap_or_default()).into_owned()
            })
        }
        ConfigCommand::Put {
            ns,
            key,
            value,
            change,
            title,
            args,
        } => {
            let edit = wire::Edit {
                ns: ns.clone(),
                key: key.clone(),
                op: wire::EditOp::PUT,
                value: Some(value_arg(&value)?),
                content_type: None,
            };
            let mut client = args.client()?;
            let change = match change {
                Some(id) => client.edit_change(wire::EditChangeRequest {
                    change_id: id,
                    edits: vec![edit],
                    drop: None,
                })?,
                None => create_change(
                    &args,
                    &mut client,
                    wire::CreateChangeRequest {
                        title: match title.is_empty() {
                            true => format!("put {ns}:{key}"),
                            false => title,
                        },
                        description: None,
                        edits: Some(vec![edit]),
                        client_token: None,
                    },
                )?,
            };
            let id = change.id;
            args.print_lazy(
                || change_json(&change),
                || format!("OK change {id} ({})", change.state),
            )
        }
        ConfigCommand::List {
            ns,
            recursive,
            args,
        } => {
            let mut client = args.client()?;
            let mut all = Vec::new();
            let mut continuation = None;
            let mut read_version = None;
            loop {
                let request = wire::ListEntriesRequest {
                    ns: ns.clone(),
                    recursive,
                    limit: 1000,
                    continuation,
                    read_version,
                    values: false,
                };
                let page = client.list_entries(request)?;
                read_version = Some(page.read_version);
                all.extend(page.entries);
                continuation = page.continuation;
                if continuation.is_none() {
                    break;
                }
            }
            let value = Value::Array(all.iter().map(entry_json).collect());
            args.print(value, |_| {
                (all.iter())
                    .map(|e| {
                        format!(
                            "{}:{}\tr{}\tchange {}",
                            e.ns, e.key, e.revision, e.change_id
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ConfigCommand::Watch {
            ns,
            from,
            count,
            patches,
            timeout_ms,
            args,
        } => watch(&args, ns, from, count, patches, timeout_ms),
        ConfigCommand::History {
            ns,
            key,
            limit,
            args,
        } => {
            let request = wire::HistoryRequest {
                ns,
                key,
                limit,
                before_revision: None,
            };
            let history = args.client()?.entry_history(request)?;
            let value: Vec<Value> = (history.iter())
                .map(|r| {
                    json!({
                        "revision": r.revision, "change_id": r.change_id, "author": r.author,
                        "approvers": r.approvers, "published_at_ms": r.published_at_ms,
                        "published_by": r.published_by, "deleted": r.deleted,
                        "emergency": r.emergency,
                    })
                })
                .collect();
            args.print(Value::Array(value), |_| {
                (history.iter())
                    .map(|r| {
                        format!(
                            "r{}\tchange {}\tauthor {}\tapproved by {}\tpublished by {} at {}{}{}",
                            r.revision,
                            r.change_id,
                            r.author,
                            r.approvers.join(","),
                            r.published_by,
                            r.published_at_ms,
                            if r.deleted { "\tdeleted" } else { "" },
                            if r.emergency { "\temergency" } else { "" },
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ConfigCommand::Diff {
            ns,
            key,
            from,
            to,
            args,
        } => {
            let request = wire::DiffRequest {
                ns,
                key,
                from_revision: from,
                to_revision: to,
            };
            let diff = args.client()?.diff_entry(request)?;
            let patch: Value = serde_json::from_slice(&diff.json_patch).unwrap_or(Value::Null);
            args.print(json!({"json_patch": patch, "text": diff.text}), |_| {
                diff.text.trim_end().to_string()
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Change sets.

#[derive(Args, Debug)]
pub struct EditArgs {
    /// Put NS:KEY=VALUE (JSON; =@FILE reads a file). Repeatable.
    #[arg(long = "put", value_name = "NS:KEY=VALUE")]
    puts: Vec<String>,
    /// Patch NS:KEY=PATCH (RFC 6902; =@FILE reads a file). Repeatable.
    #[arg(long = "patch", value_name = "NS:KEY=PATCH")]
    patches: Vec<String>,
    /// Delete NS:KEY. Repeatable.
    #[arg(long = "delete", value_name = "NS:KEY")]
    deletes: Vec<String>,
}

fn entry_ref(spec: &str) -> Result<(String, String), Failure> {
    let (ns, key) = spec
        .rsplit_once(':')
        .ok_or_else(|| Failure::Invalid(format!("{spec:?} is not NS:KEY")))?;
    Ok((ns.to_string(), key.to_string()))
}

impl EditArgs {
    fn edits(&self) -> Result<Vec<wire::Edit>, Failure> {
        let mut edits = Vec::new();
        for (specs, op) in [
            (&self.puts, wire::EditOp::PUT),
            (&self.patches, wire::EditOp::PATCH),
        ] {
            for spec in specs {
                let (target, value) = spec
                    .split_once('=')
                    .ok_or_else(|| Failure::Invalid(format!("{spec:?} is not NS:KEY=VALUE")))?;
                let (ns, key) = entry_ref(target)?;
                edits.push(wire::Edit {
                    ns,
                    key,
                    op,
                    value: Some(value_arg(value)?),
                    content_type: None,
                });
            }
        }
        for spec in &self.deletes {
            let (ns, key) = entry_ref(spec)?;
            edits.push(wire::Edit {
                ns,
                key,
                op: wire::EditOp::DELETE,
                value: None,
                content_type: None,
            });
        }
        Ok(edits)
    }
}

#[derive(Subcommand, Debug)]
pub enum ChangeCommand {
    /// Open a draft change set.
    Create {
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        edits: EditArgs,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Add edits (a change in review goes back to draft) or --drop NS:KEY.
    Edit {
        id: i64,
        #[command(flatten)]
        edits: EditArgs,
        #[arg(long = "drop", value_name = "NS:KEY")]
        drops: Vec<String>,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Send a draft to review.
    Submit {
        id: i64,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Approve a change in review (never your own).
    Approve {
        id: i64,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Reject a change in review, with a comment.
    Reject {
        id: i64,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Abandon a change.
    Abandon {
        id: i64,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Re-base a change onto the current revisions (prints conflicts, if any; exit 8).
    Rebase {
        id: i64,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Publish an approved change, all entries in one transaction; --emergency (admin)
    /// skips review and needs --reason.
    Publish {
        id: i64,
        #[arg(long)]
        emergency: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Open a draft that restores what a published change wrote.
    Revert {
        id: i64,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Print a change with its edits and reviews.
    Show {
        id: i64,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// List changes, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        author: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i32,
        #[command(flatten)]
        args: ConfigArgs,
    },
}

fn change_json(change: &wire::ChangeSet) -> Value {
    let edits: Vec<Value> = (change.edits.iter())
        .map(|e| {
            json!({
                "ns": e.ns, "key": e.key,
                "op": match e.op { wire::EditOp::DELETE => "delete", wire::EditOp::PATCH => "patch", _ => "put" },
                "base_revision": e.base_revision,
                "value": e.value.as_ref().map(|v| serde_json::from_slice::<Value>(v).unwrap_or(Value::Null)),
            })
        })
        .collect();
    let reviews: Vec<Value> = (change.reviews.iter())
        .map(|r| json!({"principal": r.principal, "verdict": r.verdict, "comment": r.comment, "at_ms": r.at_ms}))
        .collect();
    json!({
        "id": change.id, "title": change.title, "description": change.description,
        "author": change.author, "state": change.state, "edits": edits, "reviews": reviews,
        "created_at_ms": change.created_at_ms, "updated_at_ms": change.updated_at_ms,
        "published_version": change.published_version, "published_by": change.published_by,
        "emergency": change.emergency, "reason": change.reason,
    })
}

fn change_lines(change: &wire::ChangeSet) -> String {
    let mut lines = vec![format!(
        "change {}: {} [{}] by {}",
        change.id, change.title, change.state, change.author
    )];
    for edit in &change.edits {
        let op = match edit.op {
            wire::EditOp::DELETE => "delete",
            wire::EditOp::PATCH => "patch",
            _ => "put",
        };
        lines.push(format!(
            "  {op} {}:{} (base r{})",
            edit.ns, edit.key, edit.base_revision
        ));
    }
    for review in &change.reviews {
        lines.push(format!(
            "  {} by {}: {}",
            review.verdict, review.principal, review.comment
        ));
    }
    if let Some(version) = change.published_version {
        lines.push(format!("  published at version {version}"));
    }
    lines.join("\n")
}

pub(super) fn change(command: ChangeCommand) -> Result<u8, Failure> {
    let (change, args) = match command {
        ChangeCommand::Create {
            title,
            description,
            edits,
            args,
        } => {
            let request = wire::CreateChangeRequest {
                title,
                description: Some(description),
                edits: Some(edits.edits()?),
                client_token: None,
            };
            let mut client = args.client()?;
            (create_change(&args, &mut client, request)?, args)
        }
        ChangeCommand::Edit {
            id,
            edits,
            drops,
            args,
        } => {
            let drop = (drops.iter())
                .map(|spec| entry_ref(spec).map(|(ns, key)| wire::EntryRef { ns, key }))
                .collect::<Result<Vec<_>, _>>()?;
            let request = wire::EditChangeRequest {
                change_id: id,
                edits: edits.edits()?,
                drop: Some(drop),
            };
            (args.client()?.edit_change(request)?, args)
        }
        ChangeCommand::Submit { id, args } => (args.client()?.submit_change(id)?, args),
        ChangeCommand::Approve { id, comment, args } => {
            let request = wire::ReviewRequest {
                change_id: id,
                comment: Some(comment),
            };
            (args.client()?.approve_change(request)?, args)
        }
        ChangeCommand::Reject { id, comment, args } => {
            let request = wire::ReviewRequest {
                change_id: id,
                comment: Some(comment),
            };
            (args.client()?.reject_change(request)?, args)
        }
        ChangeCommand::Abandon { id, args } => (args.client()?.abandon_change(id)?, args),
        ChangeCommand::Rebase { id, args } => {
            let outcome = args.client()?.rebase_change(id)?;
            if !outcome.conflicts.is_empty() {
                let lines: Vec<String> = (outcome.conflicts.iter())
                    .map(|c| format!("{}:{} at {:?}: {}", c.ns, c.key, c.pointer, c.message))
                    .collect();
                return Err(Failure::Refused(format!(
                    "rebase of change {id} conflicts: {}",
                    lines.join("; ")
                )));
            }
            (outcome.change, args)
        }
        ChangeCommand::Publish {
            id,
            emergency,
            reason,
            args,
        } => {
            let request = wire::PublishRequest {
                change_id: id,
                emergency,
                reason,
            };
            (args.client()?.publish_change(request)?.change, args)
        }
        ChangeCommand::Revert { id, args } => {
            let request = wire::RevertRequest {
                change_id: id,
                title: None,
            };
            (args.client()?.revert_change(request)?, args)
        }
        ChangeCommand::Show { id, args } => (args.client()?.get_change(id)?, args),
        ChangeCommand::List {
            state,
            author,
            limit,
            args,
        } => {
            let request = wire::ListChangesRequest {
                state,
                author,
                limit,
                before_id: None,
            };
            let list = args.client()?.list_changes(request)?;
            let value = Value::Array(list.changes.iter().map(change_json).collect());
            return args.print(value, |_| {
                (list.changes.iter())
                    .map(|c| format!("{}\t{}\t{}\t{}", c.id, c.state, c.author, c.title))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    };
    args.print_lazy(|| change_json(&change), || change_lines(&change))
}

// ---------------------------------------------------------------------------------------
// Audit, principals, tokens, grants.

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Events touching this namespace or anything below it.
    #[arg(long)]
    namespace: Option<String>,
    /// Events of one entry: /NS:KEY.
    #[arg(long)]
    entry: Option<String>,
    #[arg(long)]
    actor: Option<String>,
    #[arg(long)]
    change: Option<i64>,
    /// From this time (ms since the epoch).
    #[arg(long)]
    from_ms: Option<i64>,
    /// Up to this time (ms since the epoch), inclusive.
    #[arg(long)]
    to_ms: Option<i64>,
    #[arg(long, default_value_t = 100)]
    limit: i32,
    #[command(flatten)]
    args: ConfigArgs,
}

pub(super) fn audit(a: AuditArgs) -> Result<u8, Failure> {
    let query = wire::AuditQuery {
        ns: a.namespace,
        entry: a.entry,
        actor: a.actor,
        change_id: a.change,
        from_ms: a.from_ms,
        to_ms: a.to_ms,
        limit: a.limit,
        continuation: None,
    };
    let page = a.args.client()?.query_audit(query)?;
    let value: Vec<Value> = (page.events.iter())
        .map(|e| {
            json!({
                "id": e.id, "at_ms": e.at_ms, "actor": e.actor, "action": e.action,
                "outcome": e.outcome, "targets": e.targets, "change_id": e.change_id,
                "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null),
            })
        })
        .collect();
    a.args.print(Value::Array(value), |_| {
        (page.events.iter())
            .map(|e| {
                format!(
                    "{}\t{}\t{}\t{}\t{}{}",
                    e.at_ms,
                    e.actor,
                    e.action,
                    e.outcome,
                    e.targets.join(","),
                    e.change_id
                        .map(|id| format!("\tchange {id}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a principal (a user, or with --service a service account).
    Create {
        name: String,
        #[arg(long)]
        service: bool,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    List {
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Disable a principal: its tokens stop working.
    Disable {
        name: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
}

fn principal_json(p: &wire::Principal) -> Value {
    let kv_grants: Vec<Value> = (p.kv_grants.iter().flatten())
        .map(|g| json!({"prefix": String::from_utf8_lossy(&g.prefix), "access": g.access}))
        .collect();
    json!({"name": p.name, "kind": p.kind, "description": p.description, "disabled": p.disabled,
           "root": p.root, "created_at_ms": p.created_at_ms, "created_by": p.created_by,
           "kv_grants": kv_grants, "groups": p.groups.clone().unwrap_or_default()})
}

pub(super) fn user(command: UserCommand) -> Result<u8, Failure> {
    match command {
        UserCommand::Create {
            name,
            service,
            description,
            args,
        } => {
            let request = wire::CreatePrincipalRequest {
                name,
                kind: if service { "service" } else { "user" }.to_string(),
                description: Some(description),
            };
            let p = args.client()?.create_principal(request)?;
            args.print(principal_json(&p), |_| {
                format!("OK principal {} ({})", p.name, p.kind)
            })
        }
        UserCommand::List { args } => {
            let list = args.client()?.list_principals()?;
            let value = Value::Array(list.iter().map(principal_json).collect());
            args.print(value, |_| {
                (list.iter())
                    .map(|p| {
                        format!(
                            "{}\t{}{}",
                            p.name,
                            p.kind,
                            if p.disabled { "\tdisabled" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        UserCommand::Disable { name, args } => {
            let p = args.client()?.disable_principal(name)?;
            args.print(principal_json(&p), |_| format!("OK disabled {}", p.name))
        }
    }
}

pub(super) fn whoami(args: ConfigArgs) -> Result<u8, Failure> {
    let p = args.client()?.whoami()?;
    args.print(principal_json(&p), |_| {
        format!(
            "{} ({}{})",
            p.name,
            p.kind,
            if p.root { ", root" } else { "" }
        )
    })
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for PRINCIPAL; prints it once (only its hash is stored).
    Create {
        principal: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Expires this many seconds after creation.
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<i64>,
        #[command(flatten)]
        args: ConfigArgs,
    },
    List {
        principal: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    Revoke {
        id: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
}

pub(super) fn token(command: TokenCommand) -> Result<u8, Failure> {
    match command {
        TokenCommand::Create {
            principal,
            description,
            ttl,
            args,
        } => {
            let request = wire::CreateTokenRequest {
                principal,
                description: Some(description),
                ttl_seconds: ttl,
            };
            let t = args.client()?.create_token(request)?;
            args.print(
                json!({"token_id": t.token_id, "token": t.token, "expires_at_ms": t.expires_at_ms}),
                |_| t.token.clone(),
            )
        }
        TokenCommand::List { principal, args } => {
            let list = args.client()?.list_tokens(principal)?;
            let value: Vec<Value> = (list.iter())
                .map(|t| {
                    json!({"token_id": t.token_id, "principal": t.principal,
                    "description": t.description, "created_at_ms": t.created_at_ms,
                    "expires_at_ms": t.expires_at_ms, "revoked": t.revoked})
                })
                .collect();
            args.print(Value::Array(value), |_| {
                (list.iter())
                    .map(|t| {
                        format!(
                            "{}\t{}{}",
                            t.token_id,
                            t.description,
                            if t.revoked { "\trevoked" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        TokenCommand::Revoke { id, args } => {
            let t = args.client()?.revoke_token(id)?;
            args.print(json!({"revoked": t.token_id}), |_| {
                format!("OK revoked {}", t.token_id)
            })
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum GrantCommand {
    /// Grant ROLE (reader, editor, approver, publisher, admin) on NS to PRINCIPAL.
    Add {
        ns: String,
        principal: String,
        role: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    Remove {
        ns: String,
        principal: String,
        role: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Give PRINCIPAL access to the raw KV API's keys that start with PREFIX ("" for every
    /// user key): read, or readwrite. Needs admin on /.
    Kv {
        principal: String,
        prefix: String,
        #[arg(value_parser = ["read", "readwrite"])]
        access: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Take away PRINCIPAL's KV grant on exactly PREFIX.
    KvRemove {
        principal: String,
        prefix: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Add PRINCIPAL to GROUP (a namespace's `--approver-group`). Needs admin on /.
    Group {
        principal: String,
        group: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Take PRINCIPAL out of GROUP.
    GroupRemove {
        principal: String,
        group: String,
        #[command(flatten)]
        args: ConfigArgs,
    },
}

fn group(principal: String, group: String, add: bool, args: ConfigArgs) -> Result<u8, Failure> {
    let membership = wire::GroupMembership { principal, group };
    let mut client = args.client()?;
    let p = match add {
        true => client.add_to_group(membership)?,
        false => client.remove_from_group(membership)?,
    };
    args.print(principal_json(&p), |_| format!("OK {}", p.name))
}

fn kv_grant(
    principal: String,
    prefix: String,
    access: Option<String>,
    args: ConfigArgs,
) -> Result<u8, Failure> {
    let request = wire::KvGrantRequest {
        principal,
        prefix: prefix.into_bytes(),
        access: access.clone(),
    };
    let mut client = args.client()?;
    let p = match access {
        Some(_) => client.grant_kv(request)?,
        None => client.revoke_kv(request)?,
    };
    args.print(principal_json(&p), |_| format!("OK {}", p.name))
}

pub(super) fn grant(command: GrantCommand) -> Result<u8, Failure> {
    let (add, ns, principal, role, args) = match command {
        GrantCommand::Kv {
            principal,
            prefix,
            access,
            args,
        } => return kv_grant(principal, prefix, Some(access), args),
        GrantCommand::KvRemove {
            principal,
            prefix,
            args,
        } => return kv_grant(principal, prefix, None, args),
        GrantCommand::Group {
            principal,
            group: name,
            args,
        } => return group(principal, name, true, args),
        GrantCommand::GroupRemove {
            principal,
            group: name,
            args,
        } => return group(principal, name, false, args),
        GrantCommand::Add {
            ns,
            principal,
            role,
            args,
        } => (true, ns, principal, role, args),
        GrantCommand::Remove {
            ns,
            principal,
            role,
            args,
        } => (false, ns, principal, role, args),
    };
    let grant = wire::Grant {
        ns,
        principal,
        role,
    };
    let mut client = args.client()?;
    let ns = match add {
        true => client.grant_role(grant)?,
        false => client.revoke_role(grant)?,
    };
    args.print(namespace_json(&ns), |_| format!("OK {}", ns.path))
}
