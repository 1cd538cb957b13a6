//! Large values in pieces through three `paxkv server` processes (real RocksDB, real
//! sockets, real fsync): a 100 MB file goes up with `paxkv put --file` through a follower
//! and comes back byte-identical with `paxkv get --out` from every replica, while each
//! replica's peak RSS stays under 512 MiB; killing the leader with -9 in the middle of an
//! upload leaves the old value (never a part), the upload goes on through another replica
//! and commits whole; an abandoned upload is reclaimed after its TTL; a replica that was
//! down catches up and serves the new value.

mod support;

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    CommitUploadsRequest, GetRequest, GetValueRangeRequest, InvalidArgument, PutRequest, Session,
    UploadChunkRequest, UploadCommit,
};
use paxkv::api::TPaxkvSyncClient;
use support::{snapshot_slots, user_error, Deadline, Retrying, ServerCluster};

const CALLS: Duration = Duration::from_secs(30);
/// The bound the large-values issue sets per replica.
const PEAK_RSS_MAX: u64 = 512 << 20;

/// Incompressible bytes (xorshift), so neither the log's nor RocksDB's zstd hides them.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn cli(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_paxkv"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "paxkv {args:?}: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The process's peak resident set (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn a_100_mb_value_goes_up_and_down_in_chunks_through_the_cli_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::start(dir.path());
    let follower = (cluster.leader(0) + 1) % 3;
    let input = dir.path().join("value.bin");
    std::fs::write(&input, noise(100_000_000, 7)).unwrap();

    let endpoint = cluster.endpoints[follower].to_string();
    let put = cli(&[
        "put",
        "big",
        "--file",
        input.to_str().unwrap(),
        "--endpoint",
        &endpoint,
    ]);
    assert!(put.starts_with("OK version="), "{put}");
    for (i, endpoint) in cluster.endpoints.clone().iter().enumerate() {
        let output = dir.path().join(format!("out{i}.bin"));
        let got = cli(&[
            "get",
            "big",
            "--out",
            output.to_str().unwrap(),
            "--endpoint",
            &endpoint.to_string(),
        ]);
        assert!(got.starts_with("OK bytes=100000000 "), "{got}");
        assert!(
            same_file(&input, &output),
            "replica {i} returned other bytes"
        );
    }
    check_peaks(&mut cluster, "a 100 MB value", true);
}

fn session(request_id: i64) -> Option<Session> {
    Some(Session::new("uploads-test".into(), request_id))
}

/// Stages `data` from `offset` in 1 MB chunks; returns the upload id and the new end.
fn stage(
    client: &mut Retrying,
    upload: Option<String>,
    offset: usize,
    data: &[u8],
    request_id: &mut i64,
) -> (String, usize) {
    let mut upload = upload;
    let mut offset = offset;
    for chunk in data.chunks(1_000_000) {
        *request_id += 1;
        let request = UploadChunkRequest::new(
            upload.clone(),
            offset as i64,
            chunk.to_vec(),
            session(*request_id),
        );
        let staged = client.call(|c| c.upload_chunk(request.clone()));
        upload = Some(staged.upload_id);
        offset = staged.bytes_staged as usize;
    }
    (upload.unwrap(), offset)
}

#[test]
fn a_leader_killed_mid_upload_leaves_the_old_value_and_the_upload_goes_on_and_abandoned_ones_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::start_with(dir.path(), "[limits]\nupload_ttl_ms = 3000\n");
    let leader = cluster.leader(0);
    let via = (leader + 1) % 3;
    let mut client = Retrying::new(cluster.endpoints[via], CALLS);
    let mut request_id = 0;
    request_id += 1;
    let put = PutRequest::new(b"big".to_vec(), b"old".to_vec(), session(request_id));
    client.call(|c| c.put(put.clone()));

    let value = noise(12_000_000, 3);
    let (upload, staged) = stage(&mut client, None, 0, &value[..5_000_000], &mut request_id);
    cluster.kill9(leader);
    // Readers see the old value whole while the upload is staged.
    let read = GetRequest::new(b"big".to_vec(), None);
    assert_eq!(
        client.call(|c| c.get(read.clone())).kv.unwrap().value,
        b"old"
    );
    // What was staged survived the leader: the upload goes on through the new one.
    let (upload, staged) = stage(
        &mut client,
        Some(upload),
        staged,
        &value[staged..],
        &mut request_id,
    );
    assert_eq!(staged, value.len());
    request_id += 1;
    let commit = UploadCommit::new(b"big".to_vec(), upload, staged as i64, None, None);
    let commit = CommitUploadsRequest::new(vec![commit], None, session(request_id));
    let committed = client.call(|c| c.commit_uploads(commit.clone()));
    assert!(committed.committed);

    // An upload nobody finishes is reclaimed once its TTL has passed.
    let (abandoned, end) = stage(&mut client, None, 0, &value[..10], &mut request_id);
    let deadline = Deadline::after(Duration::from_secs(20));
    loop {
        request_id += 1;
        let chunk = UploadChunkRequest::new(
            Some(abandoned.clone()),
            end as i64 + 1, // never the right offset: only asks whether it is staged
            b"x".to_vec(),
            session(request_id),
        );
        let error = client
            .try_call(|c| c.upload_chunk(chunk.clone()))
            .unwrap_err();
        let invalid = user_error::<InvalidArgument>(&error).expect("InvalidArgument");
        if invalid.message.contains("is not staged") {
            break;
        }
        assert!(
            invalid.message.contains("starts at offset 10"),
            "{}",
            invalid.message
        );
        assert!(
            !deadline.passed(),
            "the abandoned upload was never reclaimed"
        );
        thread::sleep(Duration::from_millis(250));
    }

    // The killed leader comes back, catches up, and serves the new value by ranges.
    cluster.start_server(leader);
    let mut late = Retrying::new(cluster.endpoints[leader], CALLS);
    let mut got = Vec::new();
    while got.len() < value.len() {
        let request = GetValueRangeRequest::new(
            b"big".to_vec(),
            got.len() as i64,
            4_000_000,
            Some(committed.version),
        );
        let range = late.call(|c| c.get_value_range(request.clone()));
        assert_eq!(range.total_bytes as usize, value.len());
        got.extend_from_slice(&range.data.unwrap());
    }
    assert!(got == value, "the restarted replica returned other bytes");
    let whole = GetRequest::new(b"big".to_vec(), Some(committed.version));
    assert!(late.call(|c| c.get(whole.clone())).kv.unwrap().value == value);
}

#[test]
fn a_replica_that_missed_large_uploads_catches_up_and_serves_them() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = "[snapshot]\ninterval_slots = 60\nretain_slots = 10\nretain_bytes = 1048576\n";
    let mut cluster = ServerCluster::start_with(dir.path(), snapshots);
    let leader = cluster.leader(0);
    let behind = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut client = Retrying::new(cluster.endpoints[leader], CALLS);
    let mut request_id = 0;
    cluster.kill9(behind);

    // Three 6 MB values as uploads (6 chunk slots each), then small writes until both live
    // replicas have snapshotted, and compacted, well past the stopped one. A snapshot file
    // appears before its replica compacts the log; a replica takes its next snapshot only
    // after that, so the one before the newest is known to be compacted below.
    let values: Vec<Vec<u8>> = (0..3).map(|i| noise(6_000_000, 10 + i)).collect();
    let mut version = 0;
    for (i, value) in values.iter().enumerate() {
        let (upload, bytes) = stage(&mut client, None, 0, value, &mut request_id);
        request_id += 1;
        let key = format!("large/{i}").into_bytes();
        let commit = UploadCommit::new(key, upload, bytes as i64, None, None);
        let commit = CommitUploadsRequest::new(vec![commit], None, session(request_id));
        version = client.call(|c| c.commit_uploads(commit.clone())).version;
    }
    let deadline = Deadline::after(CALLS);
    let mut n = 0;
    while [leader, other].iter().any(|&i| {
        let slots = snapshot_slots(&cluster.data_dir(i));
        slots.iter().rev().nth(1).is_none_or(|&slot| slot < 80)
    }) {
        assert!(!deadline.passed(), "no compaction past slot 80");
        let put = PutRequest::new(format!("small/{n}").into_bytes(), b"v".to_vec(), None);
        client.call(|c| c.put(put.clone()));
        n += 1;
    }

    cluster.start_server(behind);
    let mut late = Retrying::new(cluster.endpoints[behind], CALLS);
    for (i, value) in values.iter().enumerate() {
        let key = format!("large/{i}").into_bytes();
        let read = GetRequest::new(key.clone(), Some(version));
        assert!(
            late.call(|c| c.get(read.clone())).kv.unwrap().value == *value,
            "large/{i}"
        );
        let range = GetValueRangeRequest::new(key, 2_500_000, 1_000_000, Some(version));
        let range = late.call(|c| c.get_value_range(range.clone()));
        assert!(range.data.unwrap() == value[2_500_000..3_500_000]);
    }
    // The leader compacted its log below what the restarted replica holds, so this is
    // usually a snapshot install; a replica can also get the slots it lacks from a peer
    // that still holds them, which is as good.
    let log = std::fs::read_to_string(cluster.dir.join(format!("node{}.log", behind + 1)));
    let installed = log.unwrap_or_default().contains("snapshot installed");
    eprintln!("caught up by snapshot: {installed}");
}

/// A JSON document of about `len` bytes as people write them: indented, services with
/// names, ports, ids and tags. Written as text, so the test holds no tree of it.
fn pretty_document(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 4096);
    out.extend_from_slice(b"{\n  \"region\": \"us-east-1\",\n  \"services\": [\n");
    let mut i = 0u64;
    while out.len() < len {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let service = format!(
            "    {{\n      \"name\": \"svc-{i}\",\n      \"port\": {},\n      \"id\": \"{id:016x}-{:08x}\",\n      \"weight\": {}.{:02},\n      \"tags\": [\"tier-{}\", \"team-{}\"]\n    }}",
            8000 + i % 1000,
            i as u32,
            i % 7,
            i % 100,
            i % 3,
            i % 40
        );
        out.extend_from_slice(service.as_bytes());
        i += 1;
    }
    out.extend_from_slice(b"\n  ]\n}\n");
    out
}

/// Each replica's peak RSS so far, printed; with `bounded`, each must be under the bound.
fn check_peaks(cluster: &mut ServerCluster, what: &str, bounded: bool) {
    for (i, server) in cluster.servers.iter_mut().enumerate() {
        let server = server.as_mut().unwrap();
        server.assert_running();
        let peak = peak_rss(server.pid());
        eprintln!("{what}: replica {i}: peak RSS {} MiB", peak >> 20);
        assert!(
            !bounded || peak < PEAK_RSS_MAX,
            "{what}: replica {i}: peak RSS {} MiB",
            peak >> 20
        );
    }
}

/// Reads `cfg` whole from every replica (or only the first) and compares it to `expected`.
fn read_back(cluster: &ServerCluster, dir: &Path, expected: &[u8], every: bool) {
    let count = if every { cluster.endpoints.len() } else { 1 };
    for (i, endpoint) in cluster.endpoints.iter().take(count).enumerate() {
        let endpoint = endpoint.to_string();
        let output = dir.join(format!("doc{i}.json"));
        let out = output.to_str().unwrap();
        let got = cli(&["get", "cfg", "--out", out, "--endpoint", &endpoint]);
        assert!(got.starts_with("OK bytes="), "{got}");
        assert!(
            std::fs::read(&output).unwrap() == expected,
            "replica {i} returned other bytes"
        );
        std::fs::remove_file(&output).unwrap();
    }
}

/// Puts the 100 MB document at `input` as `cfg` through a follower (`extra` arguments say
/// how) and reads it back from every replica, each replica's peak RSS staying under the
/// bound; then edits two fields in place and reads the edit back (by pointer from every
/// replica, whole from one).
fn put_read_back_and_edit(dir: &Path, input: &Path, canonical: &[u8], extra: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cluster = ServerCluster::start(dir);
    let follower = (cluster.leader(0) + 1) % 3;
    let endpoint = cluster.endpoints[follower].to_string();
    let path = input.to_str().unwrap();
    let what = extra.first().copied().unwrap_or("upload");
    let mut args = vec!["doc", "put", "cfg", "--file", path, "--endpoint", &endpoint];
    args.extend_from_slice(extra);
    let put = cli(&args);
    assert!(
        put.starts_with("OK version=") && put.contains("delta=false"),
        "{put}"
    );
    read_back(&cluster, dir, canonical, true);
    check_peaks(&mut cluster, &format!("{what}, put and read back"), true);

    let edit = r#"[{"op":"replace","path":"/services/12345/port","value":1},
                   {"op":"replace","path":"/region","value":"eu-west-1"}]"#;
    let patched = cli(&["doc", "patch", "cfg", edit, "--endpoint", &endpoint]);
    let logged: u64 = (patched.split("logged_bytes=").nth(1).unwrap().trim())
        .parse()
        .unwrap();
    assert!(logged < 1024, "an edit of two fields logged {logged} bytes");
    let expected = {
        let text = std::str::from_utf8(canonical).unwrap();
        let service = r#"{"name":"svc-12345","port":8345,"#;
        assert!(text.contains(service));
        text.replacen(service, r#"{"name":"svc-12345","port":1,"#, 1)
            .replacen(r#""region":"us-east-1""#, r#""region":"eu-west-1""#, 1)
            .into_bytes()
    };
    for endpoint in &cluster.endpoints {
        let endpoint = endpoint.to_string();
        let pointer = "/services/12345";
        let part = cli(&[
            "doc",
            "get",
            "cfg",
            "--pointer",
            pointer,
            "--endpoint",
            &endpoint,
        ]);
        assert!(
            part.starts_with(r#"{"name":"svc-12345","port":1,"#),
            "{part}"
        );
    }
    read_back(&cluster, dir, &expected, false);
    // A second whole version written: RocksDB may hold both in memtables until they flush.
    check_peaks(&mut cluster, &format!("{what}, after the edit"), false);
}

#[test]
fn a_100_mb_document_goes_up_whole_or_as_an_upload_is_stored_canonical_and_edited_in_place_in_bounded_memory(
) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("doc.json");
    let pretty = pretty_document(100_000_000);
    std::fs::write(&input, &pretty).unwrap();
    let canonical = paxkv::executor::canonical::canonicalize(&pretty)
        .unwrap()
        .unwrap();
    drop(pretty);
    // As an upload of chunks, committed as a document.
    let uploaded = dir.path().join("uploaded");
    put_read_back_and_edit(&uploaded, &input, &canonical, &[]);
    // In one putDocument call: no parsed tree on any replica.
    let whole = dir.path().join("whole");
    let one_call = ["--upload-above", "1000000000"];
    put_read_back_and_edit(&whole, &input, &canonical, &one_call);
}

#[test]
fn a_document_upload_is_validated_and_one_not_canonical_is_written_again_canonical() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ServerCluster::start(dir.path());
    let mut client = Retrying::new(cluster.endpoints[0], CALLS);
    let mut request_id = 0;
    let commit = |client: &mut Retrying, key: &[u8], upload: &str, bytes: usize, id: i64| {
        let commit = UploadCommit::new(
            key.to_vec(),
            upload.to_string(),
            bytes as i64,
            None,
            Some(true),
        );
        let request = CommitUploadsRequest::new(vec![commit], None, session(id));
        client.try_call(|c| c.commit_uploads(request.clone()))
    };

    // Not JSON: refused with the offset, and the upload is still staged.
    let broken = b"{\"a\": [1, 2,, 3]}";
    let (upload, end) = stage(&mut client, None, 0, broken, &mut request_id);
    request_id += 1;
    let error = commit(&mut client, b"bad", &upload, end, request_id).unwrap_err();
    let invalid = user_error::<InvalidArgument>(&error).expect("InvalidArgument");
    assert!(invalid.message.contains("byte 12"), "{}", invalid.message);
    // The same upload commits as a plain value.
    request_id += 1;
    let plain = UploadCommit::new(b"bad".to_vec(), upload.clone(), end as i64, None, None);
    let request = CommitUploadsRequest::new(vec![plain], None, session(request_id));
    assert!(client.call(|c| c.commit_uploads(request.clone())).committed);

    // Indented, escaped, with an exponent: stored as putDocument stores it.
    let text = "{\n  \"name\": \"caf\\u00e9\",\n  \"limits\": [1E3, 2.50]\n}\n";
    let (upload, end) = stage(&mut client, None, 0, text.as_bytes(), &mut request_id);
    request_id += 1;
    let result = commit(&mut client, b"doc", &upload, end, request_id).unwrap();
    assert!(result.committed);
    let got = client.call(|c| c.get(GetRequest::new(b"doc".to_vec(), None)));
    assert_eq!(
        got.kv.unwrap().value,
        "{\"name\":\"café\",\"limits\":[1e+3,2.50]}".as_bytes()
    );
    // The original upload went with the commit: it cannot be committed again.
    request_id += 1;
    let again = UploadCommit::new(b"other".to_vec(), upload, end as i64, None, None);
    let request = CommitUploadsRequest::new(vec![again], None, session(request_id));
    assert!(client
        .try_call(|c| c.commit_uploads(request.clone()))
        .is_err());
}
