//! The HTTP endpoint of real nodes: `/metrics` counts what clients did, `/health` and
//! `/ready` answer with the right codes, a bad `metrics_addr` stops the node at start, and
//! every metric the Grafana dashboard (docs/grafana-dashboard.json) plots is exported.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    CommitRequest, Conflict, GetRequest, KeyRange, Mutation, MutationType, PutDocumentRequest,
    PutRequest,
};
use paxkv::api::{Protocol, TPaxkvSyncClient};
use support::{
    describe, free_addrs, http_get, sample, user_error, Deadline, DevCluster, Process, Retrying,
};

const READY: Duration = Duration::from_secs(30);
const CALLS: Duration = Duration::from_secs(30);
const PUTS: usize = 25;

/// A ready dev cluster whose root principal exists (its creation is one proposal, which
/// the counts below must not race).
fn start_dev(dir: &Path) -> DevCluster {
    let mut dev = support::dev(dir);
    dev.wait_ready(READY);
    let token = std::fs::read_to_string(dev.data_dir.join("replica_1/root-token"))
        .expect("the root token of a new dev cluster");
    let deadline = Deadline::after(READY);
    let endpoint = dev.endpoints[0];
    while paxkv::api::connect_config(endpoint, Protocol::Binary, Some(token.trim())).is_err() {
        assert!(!deadline.passed(), "root was not created within {READY:?}");
        thread::sleep(Duration::from_millis(50));
    }
    dev
}

fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("{addr}: {e}"));
    assert_eq!(code, 200, "/metrics on {addr}: {body}");
    body
}

/// Polls `path` on `addr` until it answers `code`; panics with the last answer after `READY`.
fn wait_for_code(addr: SocketAddr, path: &str, code: u16) -> String {
    let deadline = Deadline::after(READY);
    loop {
        let answer = http_get(addr, path);
        match &answer {
            Ok((got, body)) if *got == code => return body.clone(),
            _ if deadline.passed() => panic!("{path} on {addr}: wanted {code}, last {answer:?}"),
            _ => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Polls `/metrics` on `addr` until `done` holds for it; returns that scrape.
fn wait_for_scrape(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Deadline::after(READY);
    loop {
        let text = scrape(addr);
        if done(&text) {
            return text;
        }
        assert!(!deadline.passed(), "{what} on {addr} never held:\n{text}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn put(key: &str) -> PutRequest {
    PutRequest::new(key.as_bytes().to_vec(), b"v".to_vec(), None)
}

fn point(key: &[u8]) -> KeyRange {
    let mut end = key.to_vec();
    end.push(0);
    KeyRange::new(key.to_vec(), end)
}

#[test]
fn health_ready_and_metrics_count_what_clients_did() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    for &addr in &dev.metrics {
        assert_eq!(
            http_get(addr, "/health").unwrap(),
            (200, "ok\n".to_string())
        );
        assert_eq!(wait_for_code(addr, "/ready", 200), "ready\n");
        assert_eq!(http_get(addr, "/no-such-page").unwrap().0, 404);
    }

    let mut client = dev.client(0);
    for n in 0..PUTS {
        let request = put(&format!("counted/{n}"));
        client
            .put(request)
            .unwrap_or_else(|e| panic!("put {n} on a ready cluster: {}", describe(&e)));
    }
    let read_version = client.get_read_version().unwrap();
    client.put(put("conflicted")).unwrap();
    let set = Mutation::new(MutationType::SET, b"other".to_vec(), b"x".to_vec(), None);
    let stale = CommitRequest::new(read_version, vec![set], vec![point(b"conflicted")], None);
    let error = client.commit(stale).unwrap_err();
    assert!(
        user_error::<Conflict>(&error).is_some(),
        "{}",
        describe(&error)
    );

    let text = scrape(dev.metrics[0]);
    let puts = [("method", "put"), ("outcome", "ok")];
    let counted = sample(&text, "paxkv_thrift_requests_total", &puts);
    assert_eq!(counted, Some(PUTS as f64 + 1.0), "{text}");
    let put_timings = sample(
        &text,
        "paxkv_thrift_request_duration_seconds_count",
        &puts[..1],
    );
    assert_eq!(put_timings, Some(PUTS as f64 + 1.0), "{text}");
    let conflicts = [("method", "commit"), ("outcome", "conflict")];
    assert_eq!(
        sample(&text, "paxkv_thrift_requests_total", &conflicts),
        Some(1.0)
    );
    assert_eq!(sample(&text, "paxkv_txn_conflicts_total", &[]), Some(1.0));
    // The puts, the conflicted commit's put, and the root principal's creation.
    assert_eq!(
        sample(&text, "paxkv_proposals_total", &[]),
        Some(PUTS as f64 + 3.0)
    );
    assert_eq!(
        sample(&text, "paxkv_connections_open", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "paxkv_watches_open", &[]), Some(0.0));
    let replica = [("replica", "1")];
    assert!(sample(&text, "paxkv_commit_duration_seconds_count", &replica) >= Some(PUTS as f64));

    // Every replica applies every command: the puts, the put that conflicted, the
    // conflicting commit (applied, and refused by the state machine), and the root
    // principal's creation.
    let mut leaders = 0.0;
    for &addr in &dev.metrics {
        let applied = PUTS as f64 + 3.0;
        let text = wait_for_scrape(addr, "all commands applied, and ready", |text| {
            sample(text, "paxkv_commits_total", &[]) == Some(applied)
                && sample(text, "paxkv_ready", &[]) == Some(1.0)
        });
        leaders += sample(&text, "paxkv_is_leader", &[]).unwrap();
        assert!(sample(&text, "paxkv_leader_id", &[]) >= Some(1.0), "{text}");
        assert!(sample(&text, "paxkv_wal_fsync_duration_seconds_count", &[]) > Some(0.0));
        assert!(sample(&text, "paxkv_applied_slot", &[]) > Some(0.0));
    }
    assert_eq!(leaders, 1.0, "exactly one replica leads");
}

/// One replica of three, alone: it serves, but there is no leader, so it is not ready.
#[test]
fn a_replica_without_a_quorum_is_healthy_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(5);
    let (thrift, metrics, peers) = (addrs[0], addrs[1], &addrs[2..]);
    let config = server_config(dir.path(), thrift, &metrics.to_string(), peers);
    let mut server = Process::spawn(
        &[
            "server".as_ref(),
            "--bootstrap".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        &dir.path().join("node1.log"),
    );
    wait_for_code(metrics, "/health", 200);
    let deadline = Deadline::after(Duration::from_secs(2));
    while !deadline.passed() {
        let (code, body) = http_get(metrics, "/ready").unwrap();
        assert_eq!(code, 503, "{body}");
        assert!(body.starts_with("not ready: "), "{body}");
        thread::sleep(Duration::from_millis(200));
    }
    let text = scrape(metrics);
    assert_eq!(sample(&text, "paxkv_ready", &[]), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "paxkv_peer_up", &[("peer", "2")]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "paxkv_peer_lag_slots", &[("peer", "2")]),
        None,
        "{text}"
    );
    server.assert_running();
}

#[test]
fn a_bad_or_taken_metrics_addr_fails_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(4);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for (value, expected) in [
        ("nowhere", "invalid setting metrics_addr"),
        (&taken_addr, "metrics_addr"),
    ] {
        let config = server_config(dir.path(), addrs[0], value, &addrs[1..]);
        let log = dir.path().join("bad.log");
        let args = [
            "server".as_ref(),
            "--bootstrap".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ];
        let mut server = Process::spawn(&args, &log);
        let status = server.wait_exit(READY);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{}",
            server.log_tail(20)
        );
        let output = std::fs::read_to_string(&log).unwrap();
        assert!(output.contains(expected), "{value}: {output}");
    }
    drop(taken);
}

/// Replica 1 of a 3-member cluster on `peers`, serving Thrift on `thrift`.
fn server_config(
    dir: &Path,
    thrift: SocketAddr,
    metrics: &str,
    peers: &[SocketAddr],
) -> std::path::PathBuf {
    let members: Vec<String> = (peers.iter().enumerate())
        .map(|(i, peer)| format!("  {{ id = {}, peer_addr = \"{peer}\" }},", i + 1))
        .collect();
    let text = format!(
        "id = 1\ndata_dir = \"{}\"\nthrift_addr = \"{thrift}\"\nauth.enabled = false\nmetrics_addr = \"{metrics}\"\nmembers = [\n{}\n]\n",
        dir.join("node1").display(),
        members.join("\n")
    );
    let path = dir.join("node1.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------
// The Grafana dashboard.

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

/// Every string under an `expr` key, anywhere in the dashboard.
fn exprs(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => found.push(expr.clone()),
                    _ => exprs(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| exprs(item, found)),
        _ => {}
    }
}

/// The `paxkv_[a-z_]+` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("paxkv_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_is_importable_grafana_json() {
    let board = dashboard();
    assert!(board["schemaVersion"].as_u64() >= Some(36), "schemaVersion");
    let inputs = board["__inputs"].as_array().expect("__inputs");
    assert!(inputs
        .iter()
        .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"));
    let panels = board["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{}",
            panel["title"]
        );
        let mut found = Vec::new();
        exprs(panel, &mut found);
        assert!(!found.is_empty(), "panel {} has no query", panel["title"]);
    }
}

#[test]
fn every_metric_the_dashboard_uses_is_exported() {
    // Every name anywhere in the file: panel queries, and the template variable's query.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json");
    let names = metric_names(&std::fs::read_to_string(path).unwrap());
    assert!(names.len() >= 15, "{names:?}");

    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    let mut client = Retrying::new(dev.endpoints[0], CALLS);
    client.call(|c| c.put(put("dashboard")));
    client.call(|c| c.get(GetRequest::new(b"dashboard".to_vec(), None)));
    let document = PutDocumentRequest::new(b"doc".to_vec(), b"{}".to_vec(), None, None);
    client.call(|c| c.put_document(document.clone()));
    // Labelled series (by method, by peer, by form) exist once something was recorded for them.
    let exported = |text: &str, name: &str| {
        text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(['{', ' ']))
        })
    };
    let text = wait_for_scrape(dev.metrics[0], "every dashboard metric", |text| {
        names.iter().all(|name| exported(text, name))
    });
    let missing: Vec<_> = names.iter().filter(|n| !exported(&text, n)).collect();
    assert!(missing.is_empty(), "{missing:?}");
}
