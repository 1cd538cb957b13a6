//! A real 3-process cluster: `paxkv server --config nodeN.toml` on free loopback ports,
//! driven over Thrift. Leader kills are `kill -9` of the leader's PID.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    EventType, GetRangeRequest, GetRequest, KeyRange, PutRequest, Session, WatchRequest,
};
use paxkv::api::{connect, Protocol, TPaxkvSyncClient};
use support::{describe, is_retryable, Retrying, ServerCluster};

const CALLS: Duration = Duration::from_secs(30);

type Cluster = ServerCluster;

fn put(key: &str, value: &str, session: Option<Session>) -> PutRequest {
    PutRequest::new(key.as_bytes().to_vec(), value.as_bytes().to_vec(), session)
}

fn get_value(client: &mut Retrying, key: &str) -> Option<Vec<u8>> {
    let request = || GetRequest::new(key.as_bytes().to_vec(), None);
    let got = client.call(|c| c.get(request()));
    got.kv.map(|kv| kv.value)
}

fn range(start: &str, end: &str) -> KeyRange {
    KeyRange::new(start.as_bytes().to_vec(), end.as_bytes().to_vec())
}

#[test]
fn writes_on_any_node_are_read_linearizably_on_every_node_and_ranges_page() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    let mut clients: Vec<Retrying> = (cluster.endpoints.iter())
        .map(|&e| Retrying::new(e, CALLS))
        .collect();
    for (i, writer) in (0..3).enumerate() {
        let key = format!("node/{i}");
        clients[writer].call(|c| c.put(put(&key, &format!("from {writer}"), None)));
        for (reader, client) in clients.iter_mut().enumerate() {
            let value = get_value(client, &key);
            let expected = format!("from {writer}").into_bytes();
            assert_eq!(value, Some(expected), "replica {reader} missed {key}");
        }
    }
    for n in 0..25 {
        let key = format!("page/{n:02}");
        clients[n % 3].call(|c| c.put(put(&key, "v", None)));
    }
    // Page through on a follower with limit 10: 10 + 10 + 5, one read version throughout.
    let follower = (cluster.leader(0) + 1) % 3;
    let mut keys = Vec::new();
    let (mut continuation, mut read_version) = (None, None);
    let mut pages = 0;
    loop {
        let request = GetRangeRequest::new(
            range("page/", "page0"),
            10,
            false,
            read_version,
            continuation.clone(),
        );
        let page = clients[follower].call(|c| c.get_range(request.clone()));
        pages += 1;
        read_version = Some(page.read_version);
        keys.extend(
            page.kvs
                .iter()
                .map(|kv| String::from_utf8(kv.key.clone()).unwrap()),
        );
        if !page.more {
            break;
        }
        continuation = page.continuation;
    }
    let expected: Vec<String> = (0..25).map(|n| format!("page/{n:02}")).collect();
    assert_eq!(keys, expected);
    assert_eq!(pages, 3);
}

#[test]
fn kill_9_of_the_leader_elects_a_new_one_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let old = cluster.leader(0);
    let survivor = (old + 1) % 3;
    let mut client = Retrying::new(cluster.endpoints[survivor], CALLS);
    for n in 0..20 {
        client.call(|c| c.put(put(&format!("before/{n}"), "v", None)));
    }
    cluster.kill9(old);
    // Sessions make the retried writes exactly-once across the failover.
    for n in 0..20 {
        let session = Session::new("failover-writer".into(), n + 1);
        let key = format!("after/{n}");
        client.call(|c| c.put(put(&key, "v", Some(session.clone()))));
    }
    let new = cluster.leader(survivor);
    assert_ne!(new, old, "the killed replica cannot lead");
    for n in 0..20 {
        assert!(get_value(&mut client, &format!("before/{n}")).is_some());
        assert!(get_value(&mut client, &format!("after/{n}")).is_some());
    }
    // The killed replica comes back and catches up: a linearizable read on it sees all.
    cluster.start_server(old);
    cluster.wait_ready();
    let mut back = Retrying::new(cluster.endpoints[old], CALLS);
    assert_eq!(get_value(&mut back, "after/19"), Some(b"v".to_vec()));
}

#[test]
fn every_acknowledged_write_survives_kill_9_of_all_three_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let mut acknowledged = Vec::new();
    for n in 0..60 {
        let i = n % 3;
        let key = format!("durable/{n:03}");
        let version = Retrying::new(cluster.endpoints[i], CALLS)
            .call(|c| c.put(put(&key, &format!("value {n}"), None)));
        acknowledged.push((key, version));
    }
    for i in 0..3 {
        cluster.kill9(i);
    }
    for i in 0..3 {
        cluster.start_server(i);
    }
    cluster.wait_ready();
    for (i, endpoint) in cluster.endpoints.clone().into_iter().enumerate() {
        let mut client = Retrying::new(endpoint, CALLS);
        for (n, (key, version)) in acknowledged.iter().enumerate() {
            let request = GetRequest::new(key.as_bytes().to_vec(), None);
            let got = client.call(|c| c.get(request.clone()));
            let kv = got
                .kv
                .unwrap_or_else(|| panic!("replica {i} lost acknowledged {key}"));
            assert_eq!(kv.value, format!("value {n}").into_bytes());
            assert_eq!(kv.mod_version, *version);
        }
    }
}

/// A watcher on one replica sees every change of its range once, in version order, while
/// the leader is killed mid-stream; it reconnects elsewhere and resumes from the last
/// version it saw.
#[test]
fn watch_across_a_leader_kill_sees_every_event_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let leader = cluster.leader(0);
    let endpoints = cluster.endpoints.clone();
    // Watch through the leader, so the kill also breaks the watcher's connection.
    let watch_order: Vec<SocketAddr> = (0..3).map(|k| endpoints[(leader + k) % 3]).collect();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        thread::spawn(move || watch_until(&watch_order, &done))
    };
    let writer_endpoint = endpoints[(leader + 1) % 3];
    let mut writer = Retrying::new(writer_endpoint, CALLS);
    let mut acknowledged = Vec::new();
    for n in 0..40 {
        if n == 20 {
            cluster.kill9(leader);
        }
        let session = Session::new("watch-writer".into(), n + 1);
        let key = format!("w/{n:02}");
        let version = writer.call(|c| c.put(put(&key, &n.to_string(), Some(session.clone()))));
        acknowledged.push((key, version));
    }
    let last_version = acknowledged.last().unwrap().1;
    thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::SeqCst);
    let events = watcher.join().unwrap();
    let versions: Vec<i64> = events.iter().map(|(_, v)| *v).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "events out of order or repeated: {versions:?}"
    );
    for (key, version) in &acknowledged {
        assert!(
            events.contains(&(key.clone(), *version)),
            "watch missed {key}@{version}; saw {events:?}"
        );
    }
    assert!(versions.last().copied().unwrap_or(0) >= last_version);
}

/// Long-polls `range w/` from version 1, moving to the next endpoint when one fails.
fn watch_until(endpoints: &[SocketAddr], done: &AtomicBool) -> Vec<(String, i64)> {
    let mut events = Vec::new();
    let mut from_version = 1;
    let mut which = 0;
    let mut client = None;
    while !done.load(Ordering::SeqCst) {
        let endpoint = endpoints[which % endpoints.len()];
        let connected = match client.as_mut() {
            Some(client) => client,
            None => match connect(endpoint, Protocol::Binary) {
                Ok(c) => client.insert(c),
                Err(_) => {
                    which += 1;
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let request = WatchRequest::new(range("w/", "w0"), from_version, 200, None);
        match connected.watch(request) {
            Ok(page) => {
                for event in page.events {
                    assert_eq!(event.type_, EventType::PUT);
                    events.push((String::from_utf8(event.key).unwrap(), event.version));
                }
                from_version = page.next_version;
            }
            Err(error) if is_retryable(&error) => {
                client = None;
                which += 1;
                thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("watch failed: {}", describe(&error)),
        }
    }
    events
}

#[test]
fn an_invalid_setting_stops_the_server_at_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = "id = 4\ndata_dir = \"d\"\nthrift_addr = \"127.0.0.1:1\"\n\
                members = [ { id = 1, peer_addr = \"127.0.0.1:2\" } ]\n";
    let stderr = server_refuses(dir.path(), text);
    assert!(stderr.contains("invalid setting id"), "{stderr}");

    let text = text
        .replace("id = 4", "id = 1")
        .replace("127.0.0.1:1\"", "nowhere\"");
    let stderr = server_refuses(dir.path(), &text);
    assert!(stderr.contains("thrift_addr"), "{stderr}");
}

/// Runs `paxkv server` on a config of `text`, expects exit code 2, returns its stderr.
fn server_refuses(dir: &Path, text: &str) -> String {
    let config = dir.join("bad.toml");
    std::fs::write(&config, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_paxkv"))
        .args(["server", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    String::from_utf8_lossy(&output.stderr).into_owned()
}
