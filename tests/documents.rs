//! JSON documents through `paxkv dev` (three replicas, real RocksDB, real sockets): a
//! document written through one replica reads back byte-identical through every one; a
//! small change of a large document travels as a delta; writers racing on one key through
//! different replicas (so deltas meet moved bases) never leave a wrong document; patches,
//! merge patches and pointers; bad input gets a typed error and the server keeps serving.

mod support;

use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    DocumentError, GetDocumentRequest, GetRequest, InvalidArgument, KeyRange, LimitExceeded,
    PatchDocumentRequest, PatchFormat, PutDocumentRequest, WatchRequest,
};
use paxkv::api::TPaxkvSyncClient;
use serde_json::{json, Value};
use support::{http_get, sample, user_error, Retrying};

const READY: Duration = Duration::from_secs(30);
const CALLS: Duration = Duration::from_secs(30);

/// A generated configuration file: services with ports, replicas, regions and ids.
fn config(services: usize, generation: u64) -> Value {
    let services: Vec<Value> = (0..services)
        .map(|i| {
            json!({
                "name": format!("service-{i:04}"),
                "id": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", i * 2654435761usize % (1 << 32), i % 65536, i % 4096, (i * 7) % 4096, i * 1_000_003),
                "port": 8000 + i,
                "replicas": 1 + i % 5,
                "regions": ["us-east-1", "eu-west-1"],
                "env": {"LOG_LEVEL": "info", "TIMEOUT_MS": 2500},
            })
        })
        .collect();
    json!({"generation": generation, "owner": "platform", "services": services})
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn put_document(key: &[u8], json: &[u8]) -> PutDocumentRequest {
    PutDocumentRequest::new(key.to_vec(), json.to_vec(), None, None)
}

#[test]
fn documents_read_back_identically_everywhere_and_small_edits_travel_as_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = support::dev(dir.path());
    dev.wait_ready(READY);
    let mut first = Retrying::new(dev.endpoints[0], CALLS);

    // Whitespace in, canonical form out.
    let doc = config(2000, 1);
    let pretty = serde_json::to_vec_pretty(&doc).unwrap();
    let canonical = bytes(&doc);
    let written = first.call(|c| c.put_document(put_document(b"cfg/app", &pretty)));
    assert!(!written.delta, "a new key is written whole");
    assert!(
        (written.logged_bytes as usize) < canonical.len() / 3,
        "zstd in the log: {} bytes for a {}-byte document",
        written.logged_bytes,
        canonical.len()
    );
    for &endpoint in &dev.endpoints {
        let mut client = Retrying::new(endpoint, CALLS);
        let request = GetRequest::new(b"cfg/app".to_vec(), Some(written.version));
        let kv = client.call(|c| c.get(request.clone())).kv.unwrap();
        assert_eq!(kv.value, canonical, "replica at {endpoint}");
    }

    // A two-field edit: the log carries a patch, not the document.
    let mut edited = doc.clone();
    edited["services"][1234]["port"] = json!(9999);
    edited["generation"] = json!(2);
    let edit = first.call(|c| c.put_document(put_document(b"cfg/app", &bytes(&edited))));
    assert!(edit.delta);
    assert!(edit.logged_bytes < 1024, "{} bytes", edit.logged_bytes);
    for &endpoint in &dev.endpoints {
        let mut client = Retrying::new(endpoint, CALLS);
        let request = GetDocumentRequest::new(b"cfg/app".to_vec(), None, Some(edit.version));
        let read = client.call(|c| c.get_document(request.clone()));
        assert_eq!(read.json.unwrap(), bytes(&edited), "replica at {endpoint}");
        assert_eq!(read.mod_version, edit.version);
    }

    // A client patch with a test as its condition, and a pointer read.
    let patch = br#"[{"op":"test","path":"/services/1234/port","value":9999},
                     {"op":"replace","path":"/services/7/replicas","value":42}]"#;
    let request = PatchDocumentRequest::new(
        b"cfg/app".to_vec(),
        patch.to_vec(),
        PatchFormat::JSON_PATCH,
        Some(edit.version),
        None,
    );
    let patched = first.call(|c| c.patch_document(request.clone()));
    assert!(patched.logged_bytes < 512, "{}", patched.logged_bytes);
    let pointer = GetDocumentRequest::new(
        b"cfg/app".to_vec(),
        Some("/services/7/replicas".to_string()),
        None,
    );
    let mut third = Retrying::new(dev.endpoints[2], CALLS);
    assert_eq!(
        third
            .call(|c| c.get_document(pointer.clone()))
            .json
            .unwrap(),
        b"42"
    );

    // The same patch again: its expected version is gone.
    let error = first
        .try_call(|c| c.patch_document(request.clone()))
        .unwrap_err();
    let refused = user_error::<DocumentError>(&error).expect("DocumentError");
    assert_eq!(refused.reason, "VERSION_MISMATCH");
    assert_eq!(refused.current_version, Some(patched.version));
    // A merge patch.
    let merge = PatchDocumentRequest::new(
        b"cfg/app".to_vec(),
        br#"{"owner":"sre","services":null}"#.to_vec(),
        PatchFormat::MERGE_PATCH,
        None,
        None,
    );
    first.call(|c| c.patch_document(merge.clone()));
    let whole = GetDocumentRequest::new(b"cfg/app".to_vec(), None, None);
    assert_eq!(
        third.call(|c| c.get_document(whole.clone())).json.unwrap(),
        br#"{"generation":2,"owner":"sre"}"#
    );
    dev.process.assert_running();
}

#[test]
fn writers_racing_on_one_document_through_different_replicas_never_leave_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = support::dev(dir.path());
    dev.wait_ready(READY);
    let base = config(300, 0);
    Retrying::new(dev.endpoints[0], CALLS)
        .call(|c| c.put_document(put_document(b"race", &bytes(&base))));

    // Each writer edits its own service and generation on top of the shared base; a
    // follower's view of the key lags the leader's, so deltas meet moved bases.
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let endpoint = dev.endpoints[writer];
            let base = base.clone();
            thread::spawn(move || {
                let mut client = Retrying::new(endpoint, CALLS);
                let mut acknowledged = Vec::new();
                for round in 0..15u64 {
                    let mut doc = base.clone();
                    doc["generation"] = json!(writer as u64 * 100 + round);
                    doc["services"][writer]["port"] = json!(round);
                    let json = bytes(&doc);
                    let written = client.call(|c| c.put_document(put_document(b"race", &json)));
                    acknowledged.push((written.version, json));
                }
                acknowledged
            })
        })
        .collect();
    let acknowledged: Vec<(i64, Vec<u8>)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(acknowledged.len(), 45);
    let (mut moved, mut deltas) = (0.0, 0.0);
    for &metrics in &dev.metrics {
        let scrape = http_get(metrics, "/metrics").unwrap().1;
        moved += sample(&scrape, "paxkv_document_base_moved_total", &[]).unwrap_or(0.0);
        deltas +=
            sample(&scrape, "paxkv_document_writes_total", &[("form", "delta")]).unwrap_or(0.0);
    }
    // Timing decides how many; what was written is checked below whatever they are.
    println!("{deltas} writes went as deltas; {moved} deltas met a moved base and were sent again");
    assert!(deltas > 0.0, "no write went as a delta");
    for (version, json) in &acknowledged {
        for &endpoint in &dev.endpoints {
            let mut client = Retrying::new(endpoint, CALLS);
            let request = GetRequest::new(b"race".to_vec(), Some(*version));
            let kv = client.call(|c| c.get(request.clone())).kv.unwrap();
            assert_eq!(kv.mod_version, *version);
            assert!(
                kv.value == *json,
                "version {version} at {endpoint} is not what was written"
            );
        }
    }
    dev.process.assert_running();
}

#[test]
fn bad_documents_and_patches_get_typed_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = support::dev(dir.path());
    dev.wait_ready(READY);
    let mut client = Retrying::new(dev.endpoints[1], CALLS);

    let error = client
        .try_call(|c| c.put_document(put_document(b"bad", b"{\"a\": [1, 2,, 3]}")))
        .unwrap_err();
    let invalid = user_error::<InvalidArgument>(&error).expect("InvalidArgument");
    assert_eq!(invalid.offset, Some(12), "{}", invalid.message);

    // Over the default value_bytes_max of 128 MiB.
    let huge = format!("[\"{}\"]", "x".repeat(128 << 20));
    let error = client
        .try_call(|c| c.put_document(put_document(b"bad", huge.as_bytes())))
        .unwrap_err();
    let limit = user_error::<LimitExceeded>(&error).expect("LimitExceeded");
    assert_eq!(limit.limit, "value_bytes_max");

    client.call(|c| c.put_document(put_document(b"doc", br#"{"n":1}"#)));
    let patch = |patch: &[u8]| {
        PatchDocumentRequest::new(
            b"doc".to_vec(),
            patch.to_vec(),
            PatchFormat::JSON_PATCH,
            None,
            None,
        )
    };
    for (body, reason) in [
        (
            &br#"[{"op":"test","path":"/n","value":2}]"#[..],
            "TEST_FAILED",
        ),
        (br#"[{"op":"remove","path":"/missing"}]"#, "PATCH_FAILED"),
    ] {
        let error = client
            .try_call(|c| c.patch_document(patch(body)))
            .unwrap_err();
        let refused = user_error::<DocumentError>(&error).expect("DocumentError");
        assert_eq!(refused.reason, reason, "{}", refused.message);
        assert_eq!(refused.operation, Some(0));
    }
    let error = client
        .try_call(|c| c.patch_document(patch(br#"{"op":"remove"}"#)))
        .unwrap_err();
    assert!(user_error::<InvalidArgument>(&error).is_some(), "{error:?}");
    let missing = PatchDocumentRequest::new(
        b"nope".to_vec(),
        b"{}".to_vec(),
        PatchFormat::MERGE_PATCH,
        None,
        None,
    );
    let error = client
        .try_call(|c| c.patch_document(missing.clone()))
        .unwrap_err();
    assert_eq!(
        user_error::<DocumentError>(&error).unwrap().reason,
        "NO_DOCUMENT"
    );
    let pointer = GetDocumentRequest::new(b"doc".to_vec(), Some("/x/y".into()), None);
    let error = client
        .try_call(|c| c.get_document(pointer.clone()))
        .unwrap_err();
    assert_eq!(
        user_error::<DocumentError>(&error).unwrap().reason,
        "NO_SUCH_PATH"
    );
    let absent = GetDocumentRequest::new(b"nope".to_vec(), None, None);
    assert_eq!(client.call(|c| c.get_document(absent.clone())).json, None);

    // Still serving, and nothing refused was written.
    let read = GetDocumentRequest::new(b"doc".to_vec(), None, None);
    assert_eq!(
        client.call(|c| c.get_document(read.clone())).json.unwrap(),
        br#"{"n":1}"#
    );
    dev.process.assert_running();
}

/// `[limits]` and `[server]` for documents of up to 48 MiB.
const LARGE: &str = "[limits]\nvalue_bytes_max = 50331648\ncommand_bytes_max = 52428800\n";

/// Three `paxkv server` processes configured for large values: a 40 MB document put through
/// a follower reads back byte-identical through every replica; a replica that was down
/// while large documents and deltas were written catches up from the log and serves them.
#[test]
fn large_documents_replicate_and_a_replica_that_missed_them_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = support::ServerCluster::start_with(dir.path(), LARGE);
    cluster.wait_ready();
    let leader = cluster.leader(0);
    let follower = (leader + 1) % 3;
    let down = (leader + 2) % 3;
    let mut client = Retrying::new(cluster.endpoints[follower], CALLS);

    let big = config(240_000, 1);
    let big_bytes = bytes(&big);
    assert!(big_bytes.len() > 40_000_000, "{} bytes", big_bytes.len());
    let written = client.call(|c| c.put_document(put_document(b"big", &big_bytes)));
    for &endpoint in &cluster.endpoints {
        let mut reader = Retrying::new(endpoint, CALLS);
        let request = GetRequest::new(b"big".to_vec(), Some(written.version));
        assert!(reader.call(|c| c.get(request.clone())).kv.unwrap().value == big_bytes);
    }

    // Replica `down` misses a whole document and two edits of the big one.
    cluster.kill9(down);
    let other = config(30_000, 2);
    client.call(|c| c.put_document(put_document(b"other", &bytes(&other))));
    let mut edited = big.clone();
    edited["services"][99_999]["port"] = json!(1);
    let edit = client.call(|c| c.put_document(put_document(b"big", &bytes(&edited))));
    assert!(edit.delta && edit.logged_bytes < 1024, "{edit:?}");
    let patch = br#"[{"op":"replace","path":"/owner","value":"sre"}]"#;
    let request = PatchDocumentRequest::new(
        b"big".to_vec(),
        patch.to_vec(),
        PatchFormat::JSON_PATCH,
        None,
        None,
    );
    let last = client.call(|c| c.patch_document(request.clone()));
    edited["owner"] = json!("sre");

    cluster.start_server(down);
    let mut late = Retrying::new(cluster.endpoints[down], CALLS);
    let read = GetRequest::new(b"big".to_vec(), Some(last.version));
    assert!(late.call(|c| c.get(read.clone())).kv.unwrap().value == bytes(&edited));
    let read = GetRequest::new(b"other".to_vec(), Some(last.version));
    assert!(late.call(|c| c.get(read.clone())).kv.unwrap().value == bytes(&other));
}

/// A watcher that asks for patches receives a document edit's few operations, not the
/// whole document; one that does not, the whole new value.
#[test]
fn watchers_may_receive_document_edits_as_patches() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = support::dev(dir.path());
    dev.wait_ready(READY);
    let mut client = Retrying::new(dev.endpoints[0], CALLS);
    let big = bytes(&config(2_000, 1));
    let first = client.call(|c| c.put_document(put_document(b"w/doc", &big)));
    let patch = br#"[{"op":"replace","path":"/owner","value":"sre"}]"#;
    let request = PatchDocumentRequest::new(
        b"w/doc".to_vec(),
        patch.to_vec(),
        PatchFormat::JSON_PATCH,
        None,
        None,
    );
    let edited = client.call(|c| c.patch_document(request.clone()));
    let range = KeyRange::new(b"w/".to_vec(), b"w0".to_vec());
    let watch = |patches| WatchRequest::new(range.clone(), first.version + 1, 1_000, Some(patches));
    let mut watcher = Retrying::new(dev.endpoints[2], CALLS);
    let with = watcher.call(|c| c.watch(watch(true)));
    let event = &with.events[0];
    assert_eq!(event.version, edited.version);
    assert_eq!(event.value, None);
    assert_eq!(event.patch.as_deref(), Some(patch.as_slice()));
    assert_eq!(event.patch_format, Some(PatchFormat::JSON_PATCH));
    let without = watcher.call(|c| c.watch(watch(false)));
    let mut expected = config(2_000, 1);
    expected["owner"] = json!("sre");
    assert!(without.events[0].value.as_deref() == Some(bytes(&expected).as_slice()));
    assert_eq!(without.events[0].patch, None);
}
