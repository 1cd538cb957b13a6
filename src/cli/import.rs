//! `paxkv import DIR --into /NS` and `paxkv export /NS DIR`: a directory tree of JSON
//! files (a git checkout) into namespaces and entries, and back.
//!
//! Import checks every file first: a file that is not JSON, or whose name cannot be an
//! entry key or namespace segment, stops it before anything is published (unless
//! `--skip-invalid`). It then creates the namespaces that are missing and publishes the
//! files that differ from the published entries, in change sets of bounded size (each one
//! transaction, published as an emergency publish with the import as its reason, so the
//! audit says who imported what). Running it again skips every entry already identical, so
//! an import that stopped resumes where it stopped. In a git checkout, each imported
//! entry's last commit (author, email, time, subject) is recorded with `importHistory`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use paxkv::api::gen::paxkv::{
    self as wire, GetEntryRequest, ListEntriesRequest, ListNamespacesRequest, NotFound,
    TConfmanSyncClient,
};
use paxkv::api::ConfigClient;
use paxkv::confman::keys::{is_name, DEPTH_MAX};
use paxkv::confman::IMPORTED_REVISIONS_MAX;
use serde_json::json;

use super::config::ConfigArgs;
use super::{Failure, EXIT_SUCCESS};

/// Problems shown when a tree does not check, at most.
const PROBLEMS_SHOWN: usize = 20;
/// Entries one listing page asks for.
const PAGE: i32 = 1000;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The directory tree: directories become namespaces, `*.json` files entries.
    dir: PathBuf,
    /// The namespace the tree goes into (created if missing; its parent must exist).
    #[arg(long, value_name = "/NS")]
    into: String,
    /// Entries per change set, at most (the server takes at most 3000).
    #[arg(long, value_name = "N", default_value_t = 500)]
    batch_entries: usize,
    /// Bytes of values per change set, at most (a larger file goes alone).
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    batch_bytes: u64,
    /// Leave out the files that do not check, instead of stopping.
    #[arg(long)]
    skip_invalid: bool,
    #[command(flatten)]
    args: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The namespace whose subtree is written.
    ns: String,
    /// Where: created if missing; files already there are overwritten.
    dir: PathBuf,
    #[command(flatten)]
    args: ConfigArgs,
}

/// One `*.json` file of the tree.
#[derive(Debug, Clone)]
struct Found {
    /// Namespace segments below the target.
    segments: Vec<String>,
    key: String,
    /// Relative to the tree, with '/'.
    relative: String,
    path: PathBuf,
    bytes: u64,
}

#[derive(Debug, Default)]
struct Tree {
    files: Vec<Found>,
    /// Every directory below the target (segments), files or not.
    directories: BTreeSet<Vec<String>>,
    problems: Vec<String>,
    /// Files that are not `*.json`.
    other_files: usize,
}

/// Walks `dir` (leaving out `.git`), checking names and JSON.
fn scan(dir: &Path) -> Result<Tree, Failure> {
    let mut tree = Tree::default();
    let mut pending = vec![(dir.to_path_buf(), Vec::<String>::new())];
    while let Some((path, segments)) = pending.pop() {
        let entries = fs::read_dir(&path)
            .map_err(|e| Failure::Local(format!("cannot read {}: {e}", path.display())))?;
        let mut entries: Vec<_> = entries.filter_map(|entry| entry.ok()).collect();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| Failure::Local(format!("{}: {e}", child.display())))?;
            let relative = (segments.iter().cloned())
                .chain([name.clone()])
                .collect::<Vec<_>>()
                .join("/");
            if kind.is_dir() {
                if name == ".git" {
                    continue;
                }
                if !is_name(&name) {
                    tree.problems.push(format!(
                        "{relative}/: a namespace segment must be letters, digits, '.', '_' or '-'"
                    ));
                    continue;
                }
                let mut below = segments.clone();
                below.push(name);
                if below.len() + 1 > DEPTH_MAX {
                    tree.problems
                        .push(format!("{relative}/: deeper than {DEPTH_MAX} namespaces"));
                    continue;
                }
                tree.directories.insert(below.clone());
                pending.push((child, below));
                continue;
            }
            if !kind.is_file() || !name.ends_with(".json") {
                tree.other_files += 1;
                continue;
            }
            if !is_name(&name) {
                tree.problems.push(format!(
                    "{relative}: an entry key must be letters, digits, '.', '_' or '-'"
                ));
                continue;
            }
            let data = fs::read(&child)
                .map_err(|e| Failure::Local(format!("cannot read {}: {e}", child.display())))?;
            if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&data) {
                let offset = byte_offset(&data, error.line(), error.column());
                tree.problems
                    .push(format!("{relative}: not JSON at byte {offset}: {error}"));
                continue;
            }
            tree.files.push(Found {
                segments: segments.clone(),
                key: name,
                relative,
                path: child,
                bytes: data.len() as u64,
            });
        }
    }
    tree.files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(tree)
}

/// The byte offset of serde_json's line and column (both from 1).
fn byte_offset(data: &[u8], line: usize, column: usize) -> usize {
    let line_start = match line {
        0 | 1 => 0,
        _ => (data.iter().enumerate())
            .filter(|(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(data.len(), |(i, _)| i + 1),
    };
    (line_start + column.saturating_sub(1)).min(data.len())
}

fn namespace_path(into: &str, segments: &[String]) -> String {
    let base = into.trim_end_matches('/');
    match segments.is_empty() {
        true if base.is_empty() => "/".to_string(),
        true => base.to_string(),
        false => format!("{base}/{}", segments.join("/")),
    }
}

/// A git commit, as the import records it.
#[derive(Debug, Clone)]
struct Commit {
    sha: String,
    author: String,
    email: String,
    at_ms: u64,
    subject: String,
}

/// HEAD, and each file's last commit (paths relative to the tree).
type History = (String, BTreeMap<String, Commit>);

/// The history of the checkout at `dir`; None outside a checkout.
fn git_history(dir: &Path) -> Result<Option<History>, Failure> {
    let inside = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .output();
    match inside {
        Ok(out) if out.status.success() => {}
        _ => return Ok(None),
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "core.quotepath=off",
            "log",
            "--relative",
            "--name-only",
            "--format=%x00%H%x1f%an%x1f%ae%x1f%at%x1f%s",
            "--",
            ".",
        ])
        .output()
        .map_err(|e| Failure::Local(format!("git log in {}: {e}", dir.display())))?;
    if !out.status.success() {
        // A repository without commits: nothing to record.
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut last = BTreeMap::new();
    let mut head = None;
    for record in text.split('\0').filter(|r| !r.trim().is_empty()) {
        let mut lines = record.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('\x1f').collect();
        let [sha, author, email, at, subject] = header[..] else {
            continue;
        };
        let commit = Commit {
            sha: sha.to_string(),
            author: author.to_string(),
            email: email.to_string(),
            at_ms: at.parse::<u64>().unwrap_or(0).saturating_mul(1000),
            subject: subject.to_string(),
        };
        head.get_or_insert_with(|| commit.sha.clone());
        for path in lines.filter(|line| !line.is_empty()) {
            // Newest first: the first commit naming a path is its last.
            last.entry(path.to_string())
                .or_insert_with(|| commit.clone());
        }
    }
    Ok(head.map(|head| (head, last)))
}

fn progress(total: u64, files: usize) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("0/{files} files"));
    bar
}

fn is_not_found(error: &thrift::Error) -> bool {
    matches!(error, thrift::Error::User(user) if user.downcast_ref::<NotFound>().is_some())
}

/// Creates the namespaces of `paths` that do not exist, parents first; returns how many.
fn ensure_namespaces(client: &mut ConfigClient, paths: &[String]) -> Result<usize, Failure> {
    let mut created = 0;
    for path in paths {
        match client.describe_namespace(path.clone()) {
            Ok(_) => continue,
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
        client.create_namespace(wire::CreateNamespaceRequest {
            path: path.clone(),
            description: Some("created by paxkv import".to_string()),
            schema: None,
            approvals_required: None,
            approver_group: None,
        })?;
        created += 1;
    }
    Ok(created)
}

/// The published keys of namespace `ns` (not below it).
fn published_keys(client: &mut ConfigClient, ns: &str) -> Result<BTreeSet<String>, Failure> {
    let mut keys = BTreeSet::new();
    let mut continuation = None;
    loop {
        let page = client.list_entries(ListEntriesRequest {
            ns: ns.to_string(),
            recursive: false,
            limit: PAGE,
            continuation,
            read_version: None,
            values: false,
        })?;
        keys.extend(page.entries.into_iter().map(|entry| entry.key));
        match page.continuation {
            Some(next) if !next.is_empty() => continuation = Some(next),
            _ => return Ok(keys),
        }
    }
}

/// Whether the published value of `ns`:`key` is the same JSON value as `data`.
fn identical(client: &mut ConfigClient, ns: &str, key: &str, data: &[u8]) -> Result<bool, Failure> {
    let entry = client.get_entry(GetEntryRequest {
        ns: ns.to_string(),
        key: key.to_string(),
        revision: None,
        read_version: None,
    })?;
    let Some(value) = entry.value else {
        return Ok(false);
    };
    if value == data {
        return Ok(true);
    }
    let parse = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).ok();
    let published = parse(&value);
    Ok(published.is_some() && published == parse(data))
}

struct Batch {
    edits: Vec<wire::Edit>,
    files: Vec<Found>,
    bytes: u64,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            edits: Vec::new(),
            files: Vec::new(),
            bytes: 0,
        }
    }
}

/// Publishes one batch as one change set, then records its files' git history.
fn publish(
    args: &ConfigArgs,
    client: &mut ConfigClient,
    batch: Batch,
    number: usize,
    origin: &str,
    into: &str,
    history: Option<&BTreeMap<String, Commit>>,
) -> Result<i64, Failure> {
    let title = format!("import {origin}: batch {number}");
    let request = wire::CreateChangeRequest {
        title: title.clone(),
        description: Some(format!(
            "{} entries imported by paxkv import",
            batch.files.len()
        )),
        edits: Some(batch.edits),
        client_token: None,
    };
    let change = super::config::create_change(args, client, request)?;
    let published = client.publish_change(wire::PublishRequest {
        change_id: change.id,
        emergency: true,
        reason: Some(format!("paxkv import of {origin}")),
    });
    let published = match published {
        Ok(published) => published,
        Err(error) => {
            // Leave no draft behind; the next run imports these files again.
            let _ = client.abandon_change(change.id);
            return Err(error.into());
        }
    };
    if let Some(history) = history {
        let revisions: Vec<wire::ImportedRevision> = (batch.files.iter())
            .filter_map(|file| {
                let commit = history.get(&file.relative)?;
                Some(wire::ImportedRevision {
                    ns: namespace_path(into, &file.segments),
                    key: file.key.clone(),
                    author: commit.author.clone(),
                    email: commit.email.clone(),
                    authored_at_ms: i64::try_from(commit.at_ms).unwrap_or(i64::MAX),
                    commit: commit.sha.clone(),
                    subject: commit.subject.clone(),
                })
            })
            .collect();
        for chunk in revisions.chunks(IMPORTED_REVISIONS_MAX) {
            client.import_history(chunk.to_vec())?;
        }
    }
    Ok(published.change.id)
}

pub(super) fn import(a: ImportArgs) -> Result<u8, Failure> {
    #[allow(clippy::disallowed_methods)] // a rate for the user, not a decision
    let started = std::time::Instant::now();
    if a.batch_entries == 0 || a.batch_bytes == 0 {
        return Err(Failure::Invalid(
            "--batch-entries and --batch-bytes must be positive".into(),
        ));
    }
    let tree = scan(&a.dir)?;
    if !tree.problems.is_empty() && !a.skip_invalid {
        let mut message = format!(
            "{} files or directories of {} cannot be imported; nothing was published \
             (--skip-invalid leaves them out):",
            tree.problems.len(),
            a.dir.display()
        );
        for problem in tree.problems.iter().take(PROBLEMS_SHOWN) {
            message.push_str(&format!("\n  {problem}"));
        }
        if tree.problems.len() > PROBLEMS_SHOWN {
            message.push_str(&format!(
                "\n  ... and {} more",
                tree.problems.len() - PROBLEMS_SHOWN
            ));
        }
        return Err(Failure::Invalid(message));
    }
    let git = git_history(&a.dir)?;
    let origin = match &git {
        Some((head, _)) => format!("{}@{}", a.dir.display(), &head[..head.len().min(12)]),
        None => a.dir.display().to_string(),
    };
    let history = git.as_ref().map(|(_, history)| history);

    let mut client = a.args.client()?;
    let mut namespaces = vec![namespace_path(&a.into, &[])];
    namespaces.extend((tree.directories.iter()).map(|segments| namespace_path(&a.into, segments)));
    let created = ensure_namespaces(&mut client, &namespaces)?;

    let total_bytes: u64 = tree.files.iter().map(|file| file.bytes).sum();
    let bar = progress(total_bytes, tree.files.len());
    let mut published_in: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut batch, mut batches, mut imported, mut imported_bytes, mut identical_files) =
        (Batch::new(), 0usize, 0usize, 0u64, 0usize);
    let mut changes = Vec::new();
    for (done, file) in tree.files.iter().enumerate() {
        let ns = namespace_path(&a.into, &file.segments);
        if !published_in.contains_key(&ns) {
            let keys = published_keys(&mut client, &ns)?;
            published_in.insert(ns.clone(), keys);
        }
        let data = fs::read(&file.path)
            .map_err(|e| Failure::Local(format!("cannot read {}: {e}", file.path.display())))?;
        let exists = published_in[&ns].contains(&file.key);
        if exists && identical(&mut client, &ns, &file.key, &data)? {
            identical_files += 1;
        } else {
            if !batch.files.is_empty()
                && (batch.files.len() >= a.batch_entries
                    || batch.bytes + data.len() as u64 > a.batch_bytes)
            {
                batches += 1;
                let full = std::mem::replace(&mut batch, Batch::new());
                changes.push(publish(
                    &a.args,
                    &mut client,
                    full,
                    batches,
                    &origin,
                    &a.into,
                    history,
                )?);
            }
            imported += 1;
            imported_bytes += data.len() as u64;
            batch.bytes += data.len() as u64;
            batch.edits.push(wire::Edit {
                ns,
                key: file.key.clone(),
                op: wire::EditOp::PUT,
                value: Some(data),
                content_type: None,
            });
            batch.files.push(file.clone());
        }
        bar.inc(file.bytes);
        bar.set_message(format!("{}/{} files", done + 1, tree.files.len()));
    }
    if !batch.files.is_empty() {
        batches += 1;
        changes.push(publish(
            &a.args,
            &mut client,
            batch,
            batches,
            &origin,
            &a.into,
            history,
        )?);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let summary = json!({
        "into": a.into,
        "files": tree.files.len(),
        "imported": imported,
        "imported_bytes": imported_bytes,
        "identical": identical_files,
        "skipped_invalid": tree.problems.len(),
        "other_files": tree.other_files,
        "namespaces_created": created,
        "changes": changes,
        "git_head": git.as_ref().map(|(head, _)| head.clone()),
        "seconds": seconds,
        "files_per_second": tree.files.len() as f64 / seconds.max(1e-9),
        "mb_per_second": total_bytes as f64 / 1e6 / seconds.max(1e-9),
    });
    a.args.print(summary, |s| {
        format!(
            "imported {} of {} files ({} bytes) into {} in {} change sets; {} identical, \
             {} invalid left out, {} namespaces created; {:.1} s ({:.0} files/s, {:.1} MB/s)",
            s["imported"],
            s["files"],
            s["imported_bytes"],
            a.into,
            batches,
            s["identical"],
            s["skipped_invalid"],
            s["namespaces_created"],
            seconds,
            s["files_per_second"].as_f64().unwrap_or_default(),
            s["mb_per_second"].as_f64().unwrap_or_default(),
        )
    })?;
    Ok(EXIT_SUCCESS)
}

/// Every namespace of the subtree of `root`, `root` included.
fn subtree(client: &mut ConfigClient, root: &str) -> Result<Vec<String>, Failure> {
    let described = client.describe_namespace(root.to_string())?;
    let mut paths = vec![described.path];
    let mut continuation = None;
    loop {
        let page = client.list_namespaces(ListNamespacesRequest {
            path: root.to_string(),
            recursive: true,
            limit: PAGE,
            continuation,
        })?;
        paths.extend(page.namespaces.into_iter().map(|ns| ns.path));
        match page.continuation {
            Some(next) if !next.is_empty() => continuation = Some(next),
            _ => return Ok(paths),
        }
    }
}

pub(super) fn export(a: ExportArgs) -> Result<u8, Failure> {
    #[allow(clippy::disallowed_methods)] // a rate for the user, not a decision
    let started = std::time::Instant::now();
    let mut client = a.args.client()?;
    let namespaces = subtree(&mut client, &a.ns)?;
    let root = namespaces[0].trim_end_matches('/').to_string();
    let (mut files, mut bytes) = (0usize, 0u64);
    let bar = ProgressBar::new_spinner();
    for ns in &namespaces {
        let relative = ns.strip_prefix(&root).unwrap_or(ns).trim_start_matches('/');
        let dir = a.dir.join(relative);
        fs::create_dir_all(&dir)
            .map_err(|e| Failure::Local(format!("cannot create {}: {e}", dir.display())))?;
        for key in published_keys(&mut client, ns)? {
            let entry = client.get_entry(GetEntryRequest {
                ns: ns.clone(),
                key: key.clone(),
                revision: None,
                read_version: None,
            })?;
            let value = entry.value.unwrap_or_default();
            let path = dir.join(&key);
            fs::write(&path, &value)
                .map_err(|e| Failure::Local(format!("cannot write {}: {e}", path.display())))?;
            files += 1;
            bytes += value.len() as u64;
            bar.set_message(format!("{files} files, {bytes} bytes"));
            bar.tick();
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let summary = json!({"ns": a.ns, "dir": a.dir, "namespaces": namespaces.len(),
                         "files": files, "bytes": bytes, "seconds": seconds});
    a.args.print(summary, |_| {
        format!(
            "exported {files} entries ({bytes} bytes) of {} namespaces into {} in {seconds:.1} s",
            namespaces.len(),
            a.dir.display()
        )
    })?;
    Ok(EXIT_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_bytes_from_the_start_of_the_file() {
        let data = b"{\n  \"a\": 1,\n  x\n}";
        let error = serde_json::from_slice::<serde::de::IgnoredAny>(data).unwrap_err();
        let offset = byte_offset(data, error.line(), error.column());
        assert_eq!(data[offset], b'x', "offset {offset} of {error}");
        assert_eq!(byte_offset(b"[1,", 1, 3), 2);
    }

    #[test]
    fn namespaces_of_segments() {
        assert_eq!(namespace_path("/cfg", &[]), "/cfg");
        assert_eq!(
            namespace_path("/cfg/", &["a".into(), "b".into()]),
            "/cfg/a/b"
        );
        assert_eq!(namespace_path("/", &["a".into()]), "/a");
        assert_eq!(namespace_path("/", &[]), "/");
    }

    #[test]
    fn a_tree_with_a_bad_file_or_name_reports_each_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("svc/a")).unwrap();
        fs::create_dir_all(dir.path().join("bad dir")).unwrap();
        fs::create_dir_all(dir.path().join(".git")).unwrap();
        fs::write(dir.path().join("svc/a/ok.json"), r#"{"k": [1, 2]}"#).unwrap();
        fs::write(dir.path().join("svc/broken.json"), "{\"k\": ]").unwrap();
        fs::write(dir.path().join("svc/notes.txt"), "hi").unwrap();
        fs::write(dir.path().join(".git/config.json"), "not json").unwrap();
        let tree = scan(dir.path()).unwrap();
        assert_eq!(tree.files.len(), 1);
        assert_eq!(tree.files[0].relative, "svc/a/ok.json");
        assert_eq!(tree.files[0].segments, vec!["svc", "a"]);
        assert_eq!(tree.other_files, 1);
        assert_eq!(tree.problems.len(), 2, "{:?}", tree.problems);
        assert!(
            tree.problems[0].starts_with("bad dir/"),
            "{:?}",
            tree.problems
        );
        assert!(
            tree.problems[1].starts_with("svc/broken.json: not JSON at byte 6"),
            "{:?}",
            tree.problems
        );
    }
}
