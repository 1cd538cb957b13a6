//! A 1,000-entry publish is one transaction: `kill -9` of the leader while it is in flight
//! leaves every replica with all of it or none of it, and the change's state agrees with
//! its entries. Three real `paxkv server` processes; the kill lands at several delays
//! after the publish is sent (before it reaches the leader, while it is being replicated,
//! after it committed).

mod support;

use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    CreateChangeRequest, CreateNamespaceRequest, Edit, EditOp, GetEntryRequest, ListEntriesRequest,
    PublishRequest, TConfmanSyncClient,
};
use paxkv::api::{connect_config, ConfigClient, Protocol};
use support::{describe, is_retryable, Deadline, ServerCluster};

const ENTRIES: usize = 1000;
const VALUE_BYTES: usize = 8 * 1024;
const SETTLE: Duration = Duration::from_secs(30);

/// `call` again while it fails the way a leader change makes calls fail.
fn retry<T>(timeout: Duration, mut call: impl FnMut() -> thrift::Result<T>) -> T {
    let deadline = Deadline::after(timeout);
    loop {
        match call() {
            Ok(value) => return value,
            Err(error) if !deadline.passed() && is_retryable(&error) => {
                thread::sleep(Duration::from_millis(100));
            }
            Err(error) => panic!("{}", describe(&error)),
        }
    }
}

fn config(cluster: &ServerCluster, i: usize, token: &str) -> ConfigClient {
    connect_config(cluster.endpoints[i], Protocol::Binary, Some(token)).unwrap()
}

/// Entries of `ns` whose value carries `marker`, read at one version through replica `i`.
fn entries_with(client: &mut ConfigClient, ns: &str, marker: &str) -> thrift::Result<usize> {
    let (mut count, mut continuation, mut version) = (0, None, None);
    loop {
        let page = client.list_entries(ListEntriesRequest {
            ns: ns.to_string(),
            recursive: false,
            limit: 1000,
            continuation,
            read_version: version,
            values: true,
        })?;
        version = Some(page.read_version);
        let marked = (page.entries.iter()).filter(|e| {
            e.value
                .as_deref()
                .is_some_and(|v| v.starts_with(marker.as_bytes()))
        });
        count += marked.count();
        match page.continuation {
            Some(next) if !next.is_empty() => continuation = Some(next),
            _ => return Ok(count),
        }
    }
}

#[test]
fn a_killed_leader_leaves_a_large_publish_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::start(dir.path());
    let root = cluster.root_token();
    let mut admin = config(&cluster, 0, &root);
    admin
        .create_namespace(CreateNamespaceRequest::new(
            "/p".to_string(),
            None,
            None,
            None,
            None,
        ))
        .unwrap();
    for (round, delay_ms) in [0u64, 15, 40, 80, 150].into_iter().enumerate() {
        let marker = format!("\"round-{round}");
        let edits: Vec<Edit> = (0..ENTRIES)
            .map(|i| {
                let filler = "x".repeat(VALUE_BYTES);
                Edit::new(
                    "/p".to_string(),
                    format!("e{i:04}"),
                    EditOp::PUT,
                    format!("{marker}-{i}-{filler}\"").into_bytes(),
                    None,
                )
            })
            .collect();
        let leader = cluster.leader(0);
        let via = (leader + 1) % 3;
        let mut client = retry(SETTLE, || {
            connect_config(cluster.endpoints[via], Protocol::Binary, Some(&root))
        });
        let change = retry(SETTLE, || {
            // The client token makes the retry safe: one draft, however many attempts.
            client.create_change(CreateChangeRequest::new(
                format!("round {round}"),
                None,
                Some(edits.clone()),
                Some(format!("round-{round}")),
            ))
        });
        let publisher = thread::spawn(move || {
            client.publish_change(PublishRequest::new(
                change.id,
                true,
                "crash test".to_string(),
            ))
        });
        thread::sleep(Duration::from_millis(delay_ms));
        cluster.kill9(leader);
        let answered = publisher.join().unwrap();
        cluster.start_server(leader);
        cluster.wait_ready();

        // Every replica: all or none, and the change's state says which.
        let mut seen = Vec::new();
        for i in 0..3 {
            let deadline = Deadline::after(SETTLE);
            let (count, state) = loop {
                let mut reader = config(&cluster, i, &root);
                let read = entries_with(&mut reader, "/p", &marker)
                    .and_then(|count| Ok((count, reader.get_change(change.id)?.state)));
                match read {
                    Ok(read) => break read,
                    Err(error) if !deadline.passed() => {
                        eprintln!("replica {i}: {error:?}; again");
                        thread::sleep(Duration::from_millis(100));
                    }
                    Err(error) => panic!("replica {i}: {error:?}"),
                }
            };
            assert!(
                count == 0 || count == ENTRIES,
                "round {round} (kill after {delay_ms} ms): replica {i} holds {count} of \
                 {ENTRIES} entries"
            );
            assert_eq!(
                state == "published",
                count == ENTRIES,
                "round {round}: the change is {state} with {count} entries published"
            );
            seen.push(count);
        }
        assert!(
            seen.iter().all(|&c| c == seen[0]),
            "replicas differ: {seen:?}"
        );
        if answered.is_ok() {
            assert_eq!(seen[0], ENTRIES, "an acknowledged publish is all there");
        }
        eprintln!(
            "round {round}: kill after {delay_ms} ms: publish {}, {} entries on every replica",
            if answered.is_ok() {
                "acknowledged"
            } else {
                "not acknowledged"
            },
            seen[0]
        );
        // A publish that did not land can be published now, whole.
        if seen[0] == 0 {
            let published = retry(SETTLE, || {
                admin = config(&cluster, 0, &root);
                admin.publish_change(PublishRequest::new(change.id, true, "again".to_string()))
            });
            assert_eq!(published.change.state, "published");
            let mut reader = config(&cluster, 2, &root);
            assert_eq!(entries_with(&mut reader, "/p", &marker).unwrap(), ENTRIES);
        }
        let mut reader = config(&cluster, 1, &root);
        let last = reader
            .get_entry(GetEntryRequest::new(
                "/p".to_string(),
                "e0999".to_string(),
                None,
                None,
            ))
            .unwrap();
        assert!(last.value.unwrap().starts_with(marker.as_bytes()));
    }
}
