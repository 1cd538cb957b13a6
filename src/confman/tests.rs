//! The configuration service over an in-memory store: the workflow, the permission table
//! of docs/config-service.md, stale publishes, rebases, schemas and the audit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::access::Role;
use super::change::State;
use super::model::KvAccess;
use super::store::memory::MemoryStore;
use super::*;

struct Fixture {
    confman: Confman,
    store: Arc<MemoryStore>,
    root: String,
}

impl Fixture {
    fn new() -> Fixture {
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        let clock: Clock = Arc::new(move || clock.fetch_add(1, Ordering::SeqCst));
        let store = Arc::new(MemoryStore::default());
        let confman = Confman::new(store.clone(), clock);
        let root = new_root_token();
        assert!(confman.bootstrap_root(&root).unwrap());
        assert!(!confman.bootstrap_root(&new_root_token()).unwrap());
        Fixture {
            confman,
            store,
            root,
        }
    }

    fn root(&self) -> Option<&str> {
        Some(&self.root)
    }

    /// A principal with `roles` on `ns` (none: no grant), and its token.
    fn principal(&self, name: &str, grants: &[(&str, Role)]) -> String {
        self.confman
            .create_principal(self.root(), name, "user", "")
            .unwrap();
        for (ns, role) in grants {
            (self.confman)
                .set_role(self.root(), ns, name, *role, true)
                .unwrap();
        }
        (self.confman)
            .create_token(self.root(), name, "test", None)
            .unwrap()
            .token
    }

    fn namespace(&self, path: &str, approvals: u32) {
        (self.confman)
            .create_namespace(
                self.root(),
                path,
                NamespaceSettings {
                    approvals_required: Some(approvals),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    /// Publishes `value` at ns:key by emergency, as root.
    fn publish(&self, ns: &str, key: &str, value: &str) -> ChangeView {
        let change = (self.confman)
            .create_change(self.root(), "seed", "", &[put(ns, key, value)])
            .unwrap();
        (self.confman)
            .publish_change(self.root(), change.record.id, true, Some("seed"))
            .unwrap()
    }
}

fn put(ns: &str, key: &str, value: &str) -> EditInput {
    EditInput {
        ns: ns.to_string(),
        key: key.to_string(),
        kind: EditKind::Put,
        value: Some(value.as_bytes().to_vec()),
        content_type: None,
    }
}

fn patch(ns: &str, key: &str, patch: &str) -> EditInput {
    EditInput {
        kind: EditKind::Patch,
        ..put(ns, key, patch)
    }
}

fn value(fixture: &Fixture, ns: &str, key: &str) -> serde_json::Value {
    let entry = (fixture.confman)
        .get_entry(fixture.root(), ns, key, None, None)
        .unwrap();
    serde_json::from_slice(&entry.value.unwrap()).unwrap()
}

#[test]
fn the_workflow_from_draft_to_published() {
    let f = Fixture::new();
    f.namespace("/svc", 1);
    let author = f.principal("alice", &[("/svc", Role::Editor)]);
    let approver = f.principal("bob", &[("/svc", Role::Approver)]);
    let publisher = f.principal("carol", &[("/", Role::Publisher)]);
    let c = &f.confman;
    let change = c
        .create_change(
            Some(&author),
            "web port",
            "",
            &[put("/svc", "web", r#"{"port":80}"#)],
        )
        .unwrap();
    let id = change.record.id;
    assert_eq!(change.record.state, State::Draft);
    assert_eq!(change.record.edits[0].base_revision, 0);
    // Not reviewable yet, and never by its author.
    assert!(matches!(
        c.approve_change(Some(&approver), id, "ok"),
        Err(Error::InvalidTransition { .. })
    ));
    c.submit_change(Some(&author), id).unwrap();
    assert!(matches!(
        c.approve_change(Some(&author), id, "mine"),
        Err(Error::InvalidTransition {
            action: "approve",
            ..
        })
    ));
    assert!(matches!(
        c.publish_change(Some(&publisher), id, false, None),
        Err(Error::InvalidTransition {
            state: "in_review",
            ..
        })
    ));
    let approved = c.approve_change(Some(&approver), id, "lgtm").unwrap();
    assert_eq!(approved.record.state, State::Approved);
    let published = c.publish_change(Some(&publisher), id, false, None).unwrap();
    assert_eq!(published.record.state, State::Published);
    let entry = c
        .get_entry(Some(&author), "/svc", "web", None, None)
        .unwrap();
    assert_eq!(entry.value.as_deref(), Some(&br#"{"port":80}"#[..]));
    assert_eq!(entry.revision.revision, 1);
    assert_eq!(entry.revision.change_id, id);
    assert_eq!(entry.revision.author, "alice");
    assert_eq!(entry.revision.approvers, vec!["bob".to_string()]);
    assert_eq!(entry.revision.published_by, "carol");
    assert_eq!(entry.published_version, published.version);
    // Published is final.
    assert!(matches!(
        c.edit_change(Some(&author), id, &[put("/svc", "web", "{}")], &[]),
        Err(Error::InvalidTransition {
            state: "published",
            ..
        })
    ));
    // A second revision by patch; history, old revisions and diffs.
    let second = c
        .create_change(
            Some(&author),
            "port",
            "",
            &[patch(
                "/svc",
                "web",
                r#"[{"op":"replace","path":"/port","value":8080}]"#,
            )],
        )
        .unwrap();
    c.submit_change(Some(&author), second.record.id).unwrap();
    c.approve_change(Some(&approver), second.record.id, "")
        .unwrap();
    c.publish_change(Some(&publisher), second.record.id, false, None)
        .unwrap();
    assert_eq!(value(&f, "/svc", "web"), serde_json::json!({"port": 8080}));
    let history = c
        .entry_history(Some(&author), "/svc", "web", 10, None)
        .unwrap();
    let revisions: Vec<u64> = history.iter().map(|(r, _)| r.revision).collect();
    assert_eq!(revisions, vec![2, 1]);
    let old = c
        .get_entry(Some(&author), "/svc", "web", Some(1), None)
        .unwrap();
    assert_eq!(old.value.as_deref(), Some(&br#"{"port":80}"#[..]));
    // A read at the store version of the first publish sees revision 1.
    let then = c
        .get_entry(Some(&author), "/svc", "web", None, Some(published.version))
        .unwrap();
    assert_eq!(then.revision.revision, 1);
    let (json_patch, text) = c.diff_entry(Some(&author), "/svc", "web", 1, None).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&json_patch).unwrap(),
        serde_json::json!([{"op": "replace", "path": "/port", "value": 8080}])
    );
    assert!(text.contains("+  \"port\": 8080"), "{text}");
}

#[test]
fn a_change_needs_approvers_of_every_namespace_it_touches() {
    let f = Fixture::new();
    f.namespace("/a", 1);
    f.namespace("/b", 2);
    let author = f.principal("author", &[("/", Role::Editor)]);
    let a1 = f.principal("a1", &[("/a", Role::Approver)]);
    let b1 = f.principal("b1", &[("/b", Role::Approver)]);
    let b2 = f.principal("b2", &[("/b", Role::Approver)]);
    let c = &f.confman;
    let edits = [put("/a", "x", "1"), put("/b", "y", "2")];
    let id = c
        .create_change(Some(&author), "two", "", &edits)
        .unwrap()
        .record
        .id;
    c.submit_change(Some(&author), id).unwrap();
    let state = |token: &str| c.approve_change(Some(token), id, "").unwrap().record.state;
    assert_eq!(state(&a1), State::InReview);
    assert_eq!(state(&b1), State::InReview);
    assert_eq!(state(&b2), State::Approved);
    // An edit sends it back to draft without approvals.
    let edited = c
        .edit_change(Some(&author), id, &[put("/a", "x", "3")], &[])
        .unwrap();
    assert_eq!(edited.record.state, State::Draft);
    assert!(edited.record.approvers().is_empty());
}

#[test]
fn a_stale_publish_writes_nothing_and_rebase_merges_different_paths() {
    let f = Fixture::new();
    f.namespace("/svc", 0);
    f.publish("/svc", "db", r#"{"host":"a","port":1,"pool":{"size":5}}"#);
    let author = f.principal("author", &[("/", Role::Admin)]);
    let c = &f.confman;
    let ours = c
        .create_change(
            Some(&author),
            "host",
            "",
            &[patch(
                "/svc",
                "db",
                r#"[{"op":"replace","path":"/host","value":"b"}]"#,
            )],
        )
        .unwrap();
    f.publish("/svc", "db", r#"{"host":"a","port":2,"pool":{"size":5}}"#);
    c.submit_change(Some(&author), ours.record.id).unwrap();
    match c.publish_change(Some(&author), ours.record.id, false, None) {
        Err(Error::Stale { moved, .. }) => {
            assert_eq!(moved.len(), 1);
            assert_eq!((moved[0].base_revision, moved[0].current_revision), (1, 2));
        }
        other => panic!("expected Stale, got {other:?}"),
    }
    assert_eq!(value(&f, "/svc", "db")["host"], "a");
    let rebased = c.rebase_change(Some(&author), ours.record.id).unwrap();
    assert!(rebased.conflicts.is_empty(), "{:?}", rebased.conflicts);
    assert_eq!(rebased.change.record.edits[0].base_revision, 2);
    c.submit_change(Some(&author), ours.record.id).unwrap();
    c.publish_change(Some(&author), ours.record.id, false, None)
        .unwrap();
    assert_eq!(
        value(&f, "/svc", "db"),
        serde_json::json!({"host": "b", "port": 2, "pool": {"size": 5}})
    );
    // The same path changed on both sides: a conflict, and nothing changes.
    let clash = c
        .create_change(
            Some(&author),
            "size",
            "",
            &[patch(
                "/svc",
                "db",
                r#"[{"op":"replace","path":"/pool/size","value":9}]"#,
            )],
        )
        .unwrap();
    f.publish("/svc", "db", r#"{"host":"b","port":2,"pool":{"size":7}}"#);
    let outcome = c.rebase_change(Some(&author), clash.record.id).unwrap();
    assert_eq!(outcome.conflicts.len(), 1);
    assert_eq!(outcome.conflicts[0].pointer, "/pool/size");
    let still = c.get_change(Some(&author), clash.record.id).unwrap();
    assert_eq!(still.record.edits[0].base_revision, 3);
}

#[test]
fn schemas_are_checked_at_save_and_at_publish() {
    let f = Fixture::new();
    let schema = br#"{"type":"object","properties":{"port":{"type":"integer","maximum":65535}}}"#;
    (f.confman)
        .create_namespace(
            f.root(),
            "/svc",
            NamespaceSettings {
                schema: Some(schema),
                approvals_required: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
    let c = &f.confman;
    match c.create_change(
        f.root(),
        "bad",
        "",
        &[put("/svc", "web", r#"{"port":70000}"#)],
    ) {
        Err(Error::SchemaViolation {
            pointer, rule, key, ..
        }) => {
            assert_eq!(
                (pointer.as_str(), rule.as_str(), key.as_str()),
                ("/port", "maximum", "web")
            );
        }
        other => panic!("{other:?}"),
    }
    let ok = c
        .create_change(f.root(), "ok", "", &[put("/svc", "web", r#"{"port":70}"#)])
        .unwrap();
    // The schema tightens after the save: publishing checks again.
    let tighter = br#"{"type":"object","properties":{"port":{"type":"integer","minimum":1024}}}"#;
    let tighter = NamespaceSettings {
        schema: Some(tighter),
        ..Default::default()
    };
    c.update_namespace(f.root(), "/svc", tighter).unwrap();
    c.submit_change(f.root(), ok.record.id).unwrap();
    assert!(matches!(
        c.publish_change(f.root(), ok.record.id, false, None),
        Err(Error::SchemaViolation { .. })
    ));
    // Invalid JSON is InvalidArgument with the offset.
    match c.create_change(f.root(), "junk", "", &[put("/svc", "web", r#"{"port": }"#)]) {
        Err(Error::Invalid(message)) => assert!(message.contains("offset 9"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tokens_are_revocable_expire_and_die_with_their_principal() {
    let f = Fixture::new();
    let token = f.principal("svc", &[]);
    let c = &f.confman;
    assert_eq!(c.authenticate(&token).unwrap().principal, "svc");
    assert!(matches!(c.whoami(None), Err(Error::Unauthenticated(_))));
    assert!(matches!(
        c.authenticate("pxt_0000000000000000_00"),
        Err(Error::Unauthenticated(_))
    ));
    let forged = format!(
        "{}{}",
        &token[..token.len() - 1],
        if token.ends_with('0') { "1" } else { "0" }
    );
    assert!(matches!(
        c.authenticate(&forged),
        Err(Error::Unauthenticated(_))
    ));
    let id = c.authenticate(&token).unwrap().token_id;
    c.revoke_token(Some(&token), &id).unwrap();
    assert!(matches!(
        c.authenticate(&token),
        Err(Error::Unauthenticated(_))
    ));
    let short = c.create_token(f.root(), "svc", "short", Some(0)).unwrap();
    assert!(matches!(
        c.authenticate(&short.token),
        Err(Error::Unauthenticated(_))
    ));
    let other = c.create_token(f.root(), "svc", "", None).unwrap();
    c.disable_principal(f.root(), "svc").unwrap();
    assert!(matches!(
        c.authenticate(&other.token),
        Err(Error::Unauthenticated(_))
    ));
    // Only hashes are stored.
    let listed = c.list_tokens(f.root(), "svc").unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|t| t.hash.is_empty()));
}

#[test]
fn publish_and_denials_are_audited() {
    let f = Fixture::new();
    f.namespace("/svc", 0);
    let reader = f.principal("reader", &[("/svc", Role::Reader)]);
    let c = &f.confman;
    let published = f.publish("/svc", "web", "{}");
    assert!(matches!(
        c.create_change(Some(&reader), "no", "", &[put("/svc", "web", "1")]),
        Err(Error::PermissionDenied { .. })
    ));
    let filter = AuditFilter {
        namespace: Some("/svc".into()),
        ..AuditFilter::default()
    };
    let (events, _) = c.query_audit(f.root(), &filter, 100, None).unwrap();
    let actions: Vec<(&str, &str)> = (events.iter())
        .map(|e| (e.record.action.as_str(), e.record.outcome.as_str()))
        .collect();
    assert!(
        actions.contains(&("change.emergency_publish", "ok")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("change.create", "denied")),
        "{actions:?}"
    );
    let by_change = AuditFilter {
        change_id: Some(published.record.id),
        ..AuditFilter::default()
    };
    let (events, _) = c.query_audit(f.root(), &by_change, 100, None).unwrap();
    assert_eq!(events.len(), 2, "create and publish");
    // Paging returns every event once.
    let (first, next) = c
        .query_audit(f.root(), &AuditFilter::default(), 2, None)
        .unwrap();
    let (rest, _) =
        (c.query_audit(f.root(), &AuditFilter::default(), 1000, next.as_deref())).unwrap();
    let (all, _) = c
        .query_audit(f.root(), &AuditFilter::default(), 1000, None)
        .unwrap();
    assert_eq!(first.len() + rest.len(), all.len());
}

#[test]
fn revert_restores_the_revisions_before_a_change() {
    let f = Fixture::new();
    f.namespace("/svc", 0);
    f.publish("/svc", "a", r#"{"v":1}"#);
    let second = f.publish("/svc", "a", r#"{"v":2}"#);
    let c = &f.confman;
    let revert = c.revert_change(f.root(), second.record.id, None).unwrap();
    c.submit_change(f.root(), revert.record.id).unwrap();
    c.publish_change(f.root(), revert.record.id, false, None)
        .unwrap();
    assert_eq!(value(&f, "/svc", "a"), serde_json::json!({"v": 1}));
    let first = c.entry_history(f.root(), "/svc", "a", 10, None).unwrap();
    assert_eq!(first[0].0.revision, 3);
}

#[test]
fn namespaces_list_page_and_delete_only_when_empty() {
    let f = Fixture::new();
    for path in ["/a", "/a/x", "/a/y", "/a/y/z", "/ab"] {
        f.namespace(path, 1);
    }
    let c = &f.confman;
    let names = |recursive, limit, after: Option<&str>| {
        let (list, next) = c
            .list_namespaces(f.root(), "/a", recursive, limit, after)
            .unwrap();
        (
            list.into_iter()
                .map(|n| keys::display_path(&n.path))
                .collect::<Vec<_>>(),
            next,
        )
    };
    assert_eq!(names(false, 100, None).0, vec!["/a/x", "/a/y"]);
    assert_eq!(names(true, 100, None).0, vec!["/a/x", "/a/y", "/a/y/z"]);
    let (page, next) = names(true, 2, None);
    assert_eq!(page, vec!["/a/x", "/a/y"]);
    assert_eq!(names(true, 2, next.as_deref()).0, vec!["/a/y/z"]);
    assert!(matches!(
        c.delete_namespace(f.root(), "/a/y"),
        Err(Error::Invalid(_))
    ));
    c.delete_namespace(f.root(), "/a/y/z").unwrap();
    f.publish("/a/y", "k", "1");
    assert!(matches!(
        c.delete_namespace(f.root(), "/a/y"),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        c.create_namespace(f.root(), "/nope/child", Default::default()),
        Err(Error::NotFound {
            what: "namespace",
            ..
        })
    ));
}

#[test]
fn a_watch_sees_each_published_change_once_with_its_values() {
    let f = Fixture::new();
    f.namespace("/w", 0);
    f.namespace("/w/sub", 0);
    f.namespace("/other", 0);
    let c = &f.confman;
    let start = c.store.read_version().unwrap() + 1;
    let change = c
        .create_change(
            f.root(),
            "two",
            "",
            &[put("/w", "a", "1"), put("/w/sub", "b", "2")],
        )
        .unwrap();
    let published = c
        .publish_change(f.root(), change.record.id, true, Some("test"))
        .unwrap();
    f.publish("/other", "c", "3");
    let (events, next) = c
        .watch_config(f.root(), "/w", start, Duration::from_millis(10), false)
        .unwrap();
    let seen: Vec<(String, String, u64)> = (events.iter())
        .map(|e| (keys::display_path(&e.ns), e.key.clone(), e.version))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("/w".to_string(), "a".to_string(), published.version),
            ("/w/sub".to_string(), "b".to_string(), published.version),
        ]
    );
    assert_eq!(events[1].value.as_deref(), Some(&b"2"[..]));
    let (again, _) = c
        .watch_config(f.root(), "/w", next, Duration::from_millis(10), false)
        .unwrap();
    assert!(again.is_empty());
}

/// The rows of the permission table in docs/config-service.md: (call, allowed per role).
fn documented_permissions() -> Vec<(String, [bool; 5])> {
    let doc = include_str!("../../docs/config-service.md");
    let table = doc
        .split("<!-- permissions:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- permissions:end -->").next())
        .expect("docs/config-service.md has the permissions table");
    let mut rows = Vec::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 6, "{line}");
        let allowed = |cell: &str| match cell {
            "yes" => true,
            "no" => false,
            other => panic!("cell {other:?} in {line}"),
        };
        let roles = [1, 2, 3, 4, 5].map(|i| allowed(cells[i]));
        rows.push((cells[0].replace('`', ""), roles));
    }
    rows
}

/// Runs `call` as a principal holding `role` on `/` who authored nothing. Ok(()) when
/// allowed; Err(true) when PermissionDenied; panics on any other error, since every call
/// is set up to succeed when permitted.
fn run_call(call: &str, role: Role) -> Result<()> {
    let f = Fixture::new();
    f.namespace("/m", 1);
    f.namespace("/m/empty", 1);
    f.publish("/m", "e", r#"{"a":1}"#);
    let author = f.principal("author", &[("/", Role::Admin)]);
    let me = f.principal("me", &[("/", role)]);
    f.principal("other", &[]);
    let c = &f.confman;
    let t = Some(me.as_str());
    let draft = c
        .create_change(Some(&author), "draft", "", &[put("/m", "e", r#"{"a":2}"#)])
        .unwrap()
        .record
        .id;
    let in_review = c
        .create_change(Some(&author), "review", "", &[put("/m", "f", "1")])
        .unwrap()
        .record
        .id;
    c.submit_change(Some(&author), in_review).unwrap();
    let approved = c
        .create_change(Some(&author), "approved", "", &[put("/m", "g", "1")])
        .unwrap()
        .record
        .id;
    c.submit_change(Some(&author), approved).unwrap();
    c.approve_change(f.root(), approved, "").unwrap();
    let published = f.publish("/m", "h", "1").record.id;
    let other_token = c
        .create_token(f.root(), "other", "", None)
        .unwrap()
        .token_id;
    let forever = Duration::from_millis(1);
    match call {
        "describeNamespace" => c.describe_namespace(t, "/m").map(drop),
        "listNamespaces" => c.list_namespaces(t, "/m", true, 10, None).map(drop),
        "createNamespace" => c
            .create_namespace(t, "/m/new", Default::default())
            .map(drop),
        "updateNamespace" => {
            let settings = NamespaceSettings {
                description: Some("d"),
                ..Default::default()
            };
            c.update_namespace(t, "/m", settings).map(drop)
        }
        "addToGroup" => c.set_group(t, "other", "sre", true).map(drop),
        "removeFromGroup" => c.set_group(t, "other", "sre", false).map(drop),
        "deleteNamespace" => c.delete_namespace(t, "/m/empty"),
        "grantRole" => c.set_role(t, "/m", "other", Role::Reader, true).map(drop),
        "revokeRole" => c.set_role(t, "/m", "author", Role::Admin, false).map(drop),
        "getEntry" => c.get_entry(t, "/m", "e", None, None).map(drop),
        "listEntries" => c
            .list_entries(t, "/m", true, 10, None, None, true)
            .map(drop),
        "entryHistory" => c.entry_history(t, "/m", "e", 10, None).map(drop),
        "diffEntry" => c.diff_entry(t, "/m", "e", 0, None).map(drop),
        "watchConfig" => c.watch_config(t, "/m", 1, forever, false).map(drop),
        "createChange" => c
            .create_change(t, "x", "", &[put("/m", "x", "1")])
            .map(drop),
        "editChange" => c
            .edit_change(t, draft, &[put("/m", "x", "1")], &[])
            .map(drop),
        "getChange" => c.get_change(t, draft).map(drop),
        "submitChange" => c.submit_change(t, draft).map(drop),
        "approveChange" => c.approve_change(t, in_review, "").map(drop),
        "rejectChange" => c.reject_change(t, in_review, "").map(drop),
        "abandonChange" => c.abandon_change(t, draft).map(drop),
        "rebaseChange" => c.rebase_change(t, draft).map(drop),
        "publishChange" => c.publish_change(t, approved, false, None).map(drop),
        "publishChange (emergency)" => c.publish_change(t, draft, true, Some("r")).map(drop),
        "revertChange" => c.revert_change(t, published, None).map(drop),
        "queryAudit" => c
            .query_audit(t, &AuditFilter::default(), 10, None)
            .map(drop),
        "createPrincipal" => c.create_principal(t, "new", "service", "").map(drop),
        "listPrincipals" => c.list_principals(t).map(drop),
        "disablePrincipal" => c.disable_principal(t, "other").map(drop),
        "createToken (for another principal)" => c.create_token(t, "other", "", None).map(drop),
        "listTokens (of another principal)" => c.list_tokens(t, "other").map(drop),
        "revokeToken (of another principal)" => c.revoke_token(t, &other_token).map(drop),
        "grantKv" => c
            .set_kv_grant(t, "other", b"app/", Some(KvAccess::Read))
            .map(drop),
        "revokeKv" => c.set_kv_grant(t, "other", b"app/", None).map(drop),
        "importHistory" => c
            .import_history(
                t,
                &[ImportedRevision {
                    namespace: "/m".into(),
                    key: "e".into(),
                    author: "A U Thor".into(),
                    email: "a@example.com".into(),
                    authored_at_ms: 1,
                    commit: "0".repeat(40),
                    subject: "s".into(),
                }],
            )
            .map(drop),
        other => panic!("the permission table names {other:?}, which this test does not run"),
    }
}

#[test]
fn every_call_as_every_role_is_allowed_or_denied_as_documented() {
    let rows = documented_permissions();
    assert!(rows.len() >= 30, "{} rows", rows.len());
    for (call, allowed) in rows {
        for (role, allowed) in Role::ALL.into_iter().zip(allowed) {
            match (run_call(&call, role), allowed) {
                (Ok(()), true) | (Err(Error::PermissionDenied { .. }), false) => {}
                (outcome, _) => panic!(
                    "{call} as {}: documented {}, got {outcome:?}",
                    role.name(),
                    if allowed { "allowed" } else { "denied" }
                ),
            }
        }
    }
}

/// A large entry goes into the log once, whole, at its first draft; an edit of a few fields
/// logs a patch, and a publish logs neither value nor patch.
#[test]
fn large_entries_are_logged_once_and_edits_as_patches() {
    let f = Fixture::new();
    f.namespace("/big", 0);
    let services: Vec<serde_json::Value> = (0..2_000)
        .map(|i| serde_json::json!({ "name": format!("svc-{i}"), "port": 8000 + i, "tags": ["a", "b"] }))
        .collect();
    let mut doc = serde_json::json!({ "version": 1, "services": services });
    let text = doc.to_string();
    let c = &f.confman;
    let logged = || f.store.logged_bytes();

    let before = logged();
    let change = c
        .create_change(f.root(), "first", "", &[put("/big", "routes", &text)])
        .unwrap();
    let drafted = logged() - before;
    assert!(
        drafted >= text.len() as u64,
        "the first draft logs the value: {drafted}"
    );
    let before = logged();
    c.publish_change(f.root(), change.record.id, true, Some("seed"))
        .unwrap();
    let published = logged() - before;
    assert!(published < 4_096, "a publish logs {published} bytes");
    assert_eq!(value(&f, "/big", "routes"), doc);

    // A put of the whole document with three fields changed, then a patch on top.
    doc["version"] = 2.into();
    doc["services"][7]["port"] = 1.into();
    doc["services"][1999]["tags"][1] = "c".into();
    let before = logged();
    let change = c
        .create_change(
            f.root(),
            "edit",
            "",
            &[put("/big", "routes", &doc.to_string())],
        )
        .unwrap();
    let id = change.record.id;
    let edited = logged() - before;
    assert!(edited < 4_096, "a three-field put logs {edited} bytes");
    let before = logged();
    let ops = r#"[{"op":"replace","path":"/services/0/name","value":"zero"}]"#;
    c.edit_change(f.root(), id, &[patch("/big", "routes", ops)], &[])
        .unwrap();
    let patched = logged() - before;
    assert!(patched < 4_096, "a patch logs {patched} bytes");
    doc["services"][0]["name"] = "zero".into();
    c.publish_change(f.root(), id, true, Some("edit")).unwrap();
    assert_eq!(value(&f, "/big", "routes"), doc);
    let entry = c.get_entry(f.root(), "/big", "routes", None, None).unwrap();
    assert_eq!(
        entry.value.unwrap(),
        crate::executor::document::canonical(&doc)
    );
    // The first revision is still whole.
    let first = c
        .get_entry(f.root(), "/big", "routes", Some(1), None)
        .unwrap();
    assert_eq!(first.value.unwrap(), text.as_bytes());
}

/// With an approver group, only approvals from its members count, recounted at publish.
#[test]
fn an_approver_group_counts_only_its_members() {
    let f = Fixture::new();
    let settings = NamespaceSettings {
        approvals_required: Some(1),
        approver_group: Some("payments"),
        ..Default::default()
    };
    let c = &f.confman;
    let ns = c.create_namespace(f.root(), "/pay", settings).unwrap();
    assert_eq!(ns.approver_group.as_deref(), Some("payments"));
    let author = f.principal("alice", &[("/pay", Role::Editor)]);
    let outsider = f.principal("bob", &[("/pay", Role::Approver)]);
    let member = f.principal("carol", &[("/pay", Role::Approver)]);
    let publisher = f.principal("dan", &[("/pay", Role::Publisher)]);
    let carol = c.set_group(f.root(), "carol", "payments", true).unwrap();
    assert!(carol.groups.contains("payments"));
    assert!(matches!(
        c.set_group(f.root(), "carol", "not a name", true),
        Err(Error::Invalid(_))
    ));

    let id = (c.create_change(Some(&author), "fee", "", &[put("/pay", "fee", "1")]))
        .unwrap()
        .record
        .id;
    c.submit_change(Some(&author), id).unwrap();
    let after_bob = c.approve_change(Some(&outsider), id, "ok").unwrap();
    assert_eq!(after_bob.record.state, State::InReview);
    assert!(matches!(
        c.publish_change(Some(&publisher), id, false, None),
        Err(Error::InvalidTransition { .. })
    ));
    let after_carol = c.approve_change(Some(&member), id, "ok").unwrap();
    assert_eq!(after_carol.record.state, State::Approved);
    // Out of the group before the publish: the approvals are recounted and fall short.
    c.set_group(f.root(), "carol", "payments", false).unwrap();
    assert!(matches!(
        c.publish_change(Some(&publisher), id, false, None),
        Err(Error::InvalidTransition { .. })
    ));
    c.set_group(f.root(), "carol", "payments", true).unwrap();
    c.publish_change(Some(&publisher), id, false, None).unwrap();
    assert_eq!(value(&f, "/pay", "fee"), serde_json::json!(1));

    // An empty group name on update removes the group.
    let cleared = NamespaceSettings {
        approver_group: Some(""),
        ..Default::default()
    };
    let ns = c.update_namespace(f.root(), "/pay", cleared).unwrap();
    assert_eq!(ns.approver_group, None);
}

/// A create retried with its client token creates one change; the token is the caller's,
/// and another request with it is refused.
#[test]
fn a_create_retried_with_its_client_token_creates_one_change() {
    let f = Fixture::new();
    f.namespace("/svc", 1);
    let alice = f.principal("alice", &[("/svc", Role::Editor)]);
    let bob = f.principal("bob", &[("/svc", Role::Editor)]);
    let c = &f.confman;
    let edits = [put("/svc", "web", r#"{"port":80}"#)];
    let first = (c.create_change_once(Some(&alice), Some("t-1"), "web", "", &edits)).unwrap();
    let again = (c.create_change_once(Some(&alice), Some("t-1"), "web", "", &edits)).unwrap();
    assert_eq!(again.record, first.record);
    assert_eq!(again.version, first.version);
    let listed = c.list_changes(f.root(), None, None, 100, None).unwrap();
    assert_eq!(listed.0.len(), 1, "{listed:?}");
    // Another title with the same token is refused; another principal's token is its own.
    assert!(matches!(
        c.create_change_once(Some(&alice), Some("t-1"), "other", "", &edits),
        Err(Error::Invalid(_))
    ));
    let other_edits = [put("/svc", "web", r#"{"port":81}"#)];
    assert!(matches!(
        c.create_change_once(Some(&alice), Some("t-1"), "web", "", &other_edits),
        Err(Error::Invalid(_))
    ));
    let bobs = (c.create_change_once(Some(&bob), Some("t-1"), "web", "", &edits)).unwrap();
    assert_ne!(bobs.record.id, first.record.id);
    assert!(matches!(
        c.create_change_once(Some(&alice), Some("no spaces"), "web", "", &edits),
        Err(Error::Invalid(_))
    ));
}

/// A change of EDITS_MAX entries publishes in one commit within the default
/// `mutations_per_txn_max`, and leaves none of its draft values behind.
#[test]
fn the_largest_change_publishes_within_the_mutation_limit() {
    let f = Fixture::new();
    f.namespace("/many", 0);
    let edits: Vec<EditInput> = (0..changes::EDITS_MAX)
        .map(|i| put("/many", &format!("e{i}"), &format!("{{\"i\":{i}}}")))
        .collect();
    let c = &f.confman;
    let id = (c.create_change(f.root(), "many", "", &edits))
        .unwrap()
        .record
        .id;
    c.submit_change(f.root(), id).unwrap();
    c.publish_change(f.root(), id, false, None).unwrap();
    let limit = crate::router::Limits::default().mutations_per_txn_max;
    let published = f.store.mutations_max();
    assert!(published <= limit, "{published} mutations, limit {limit}");
    assert_eq!(
        value(&f, "/many", "e2999"),
        serde_json::json!({ "i": 2999 })
    );
    let drafts = keys::change_values(id);
    let left = f
        .store
        .scan(&drafts, &keys::prefix_end(&drafts), 10, false, u64::MAX);
    assert!(
        left.unwrap().is_empty(),
        "draft values left after the publish"
    );
}

/// A watch that asks for patches gets, for a large JSON entry, the patch from the previous
/// revision (which turns it into the new value), and the first revision whole.
#[test]
fn a_watch_asking_for_patches_gets_them_for_large_entries() {
    let f = Fixture::new();
    f.namespace("/wp", 0);
    let c = &f.confman;
    f.publish("/wp", "small", "1");
    let items: Vec<serde_json::Value> = (0..500).map(|i| serde_json::json!({ "i": i })).collect();
    let mut doc = serde_json::json!({ "v": 1, "items": items });
    let first = f.publish("/wp", "big", &doc.to_string());
    doc["v"] = 2.into();
    doc["items"][3]["i"] = "three".into();
    f.publish("/wp", "big", &doc.to_string());
    f.publish("/wp", "small", "2");
    let (events, _) = c
        .watch_config(
            f.root(),
            "/wp",
            first.version,
            Duration::from_millis(10),
            true,
        )
        .unwrap();
    let big: Vec<&ConfigEvent> = events.iter().filter(|e| e.key == "big").collect();
    assert_eq!(big.len(), 2);
    assert!(
        big[0].patch.is_none() && big[0].value.is_some(),
        "revision 1 is whole"
    );
    let patch = big[1].patch.as_ref().expect("revision 2 as a patch");
    assert!(big[1].value.is_none());
    let patched =
        crate::executor::document::apply_json_patch(big[0].value.as_ref().unwrap(), patch).unwrap();
    assert_eq!(patched, crate::executor::document::canonical(&doc));
    // A small entry is sent whole; without `patches`, every event holds its value.
    let small = events.iter().find(|e| e.key == "small").unwrap();
    assert_eq!(small.value.as_deref(), Some(&b"2"[..]));
    let (plain, _) = c
        .watch_config(
            f.root(),
            "/wp",
            first.version,
            Duration::from_millis(10),
            false,
        )
        .unwrap();
    assert!(plain.iter().all(|e| e.value.is_some() && e.patch.is_none()));
}

/// Only a JSON entry takes a patch: an opaque value is refused, not spliced.
#[test]
fn a_patch_of_an_entry_that_is_not_json_is_refused() {
    let f = Fixture::new();
    f.namespace("/raw", 0);
    let c = &f.confman;
    let text = EditInput {
        content_type: Some("text/plain".into()),
        ..put("/raw", "note", r#"{"a":1,junk}"#)
    };
    let id = c
        .create_change(f.root(), "note", "", &[text])
        .unwrap()
        .record
        .id;
    c.publish_change(f.root(), id, true, Some("seed")).unwrap();
    let ops = r#"[{"op":"replace","path":"/a","value":2}]"#;
    let refused = c.create_change(f.root(), "patch", "", &[patch("/raw", "note", ops)]);
    assert!(
        matches!(&refused, Err(Error::Invalid(m)) if m.contains("not JSON")),
        "{refused:?}"
    );
}
