//! `paxkv bench` end to end: the real binary against a real `paxkv dev` cluster, and against
//! a real single-member etcd (`/usr/bin/etcd`, installed by scripts/setup.sh; the etcd test
//! fails rather than skips without it, and needs `paxkv-bench-etcd` built next to `paxkv`,
//! which scripts/test.sh does).
mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::{dev, free_addrs, join_addrs, Deadline};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const ETCD_BINARY: &str = "/usr/bin/etcd";
/// Operations per workload run: enough to mix, few enough to keep the file under seconds.
const OPS: u64 = 200;
const CLIENTS: &str = "4";
const CAS_KEYS: u64 = 4;

fn paxkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paxkv"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the paxkv binary")
}

/// Runs `paxkv bench ARGS --json --quiet`, checks it succeeded, and returns its JSON.
fn bench(args: &[&str]) -> Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--quiet"]);
    let output = paxkv(&all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "paxkv {all:?} exited {}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    let json: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    for &field in paxkv::bench::REPORT_FIELDS {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }
    json
}

fn count(json: &Value, field: &str) -> u64 {
    json[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a count: {json}"))
}

/// Runs one workload for [`OPS`] operations and checks the counts add up with no errors.
fn run_workload(target: &str, endpoints: &str, workload: &str) -> Value {
    let ops = OPS.to_string();
    let cas_keys = CAS_KEYS.to_string();
    let json = bench(&[
        "--target",
        target,
        "--endpoints",
        endpoints,
        "--workload",
        workload,
        "--ops",
        &ops,
        "--clients",
        CLIENTS,
        "--key-space",
        "100",
        "--cas-keys",
        &cas_keys,
    ]);
    assert_eq!(json["workload"], workload, "{json}");
    assert_eq!(json["target"], target, "{json}");
    assert_eq!(json["clients"], 4, "{json}");
    assert_eq!(count(&json, "errors"), 0, "{json}");
    assert_eq!(
        count(&json, "ops") + count(&json, "conflicts"),
        OPS,
        "{json}"
    );
    if workload == "put" || workload.starts_with("ycsb") {
        assert_eq!(
            count(&json, "ops"),
            OPS,
            "only txn and cas can conflict: {json}"
        );
    }
    assert!(json["ops_per_sec"].as_f64().unwrap() > 0.0, "{json}");
    assert!(count(&json, "p50_us") <= count(&json, "max_us"), "{json}");
    json
}

/// A cas counter read back with `paxkv get` (absent is 0).
fn paxkv_counter(endpoint: &str, index: u64) -> u64 {
    let key = format!("bench/cas/{index:06}");
    let output = paxkv(&["get", &key, "--endpoint", endpoint]);
    match output.status.code() {
        Some(0) => String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap(),
        Some(1) => 0,
        _ => panic!("paxkv get {key}: {output:?}"),
    }
}

#[test]
fn workloads_against_a_dev_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = dev(dir.path());
    cluster.wait_ready(READY_TIMEOUT);
    let endpoints = join_addrs(&cluster.endpoints);
    for workload in ["put", "txn", "ycsb-a"] {
        run_workload("paxkv", &endpoints, workload);
    }
    // 3-field edits of a 2 MB document: a few hundred bytes of log each, whatever its size.
    let edits = bench(&[
        "--endpoint",
        &cluster.endpoints[0].to_string(),
        "--workload",
        "doc-edit",
        "--value-size",
        "2000000",
        "--ops",
        "5",
    ]);
    assert_eq!(count(&edits, "ops"), 5, "{edits}");
    let logged = edits["logged_bytes_per_op"].as_f64().unwrap();
    assert!(logged > 100.0 && logged < 1024.0, "{edits}");
    let cas = run_workload("paxkv", &endpoints, "cas");
    let first = cluster.endpoints[0].to_string();
    let total: u64 = (0..CAS_KEYS).map(|i| paxkv_counter(&first, i)).sum();
    assert_eq!(
        total,
        count(&cas, "ops"),
        "each successful increment adds one: {cas}"
    );
    cluster.process.assert_running();
}

#[test]
fn an_oversized_value_is_reported_as_limit_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = dev(dir.path());
    cluster.wait_ready(READY_TIMEOUT);
    let endpoint = cluster.endpoints[0].to_string();
    // Over the default value_bytes_max of 128 MiB.
    let json = bench(&[
        "--endpoint",
        &endpoint,
        "--workload",
        "large",
        "--value-size",
        "134217729",
        "--ops",
        "3",
    ]);
    assert_eq!(count(&json, "ops"), 0, "{json}");
    assert_eq!(count(&json, "errors"), 3, "{json}");
    let limit = &json["errors_by_kind"]["limit_exceeded"];
    assert_eq!(limit["count"], 3, "{json}");
    assert!(
        limit["example"]
            .as_str()
            .unwrap()
            .contains("value_bytes_max"),
        "{json}"
    );
}

#[test]
fn the_local_floors_measure() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let fsync = bench(&["--workload", "fsync", "--dir", dir_arg, "--ops", "20"]);
    assert_eq!(
        (count(&fsync, "ops"), count(&fsync, "errors")),
        (20, 0),
        "{fsync}"
    );
    assert!(count(&fsync, "p50_us") > 0, "{fsync}");
    let rtt = bench(&["--workload", "tcp-rtt", "--ops", "500"]);
    assert_eq!(
        (count(&rtt, "ops"), count(&rtt, "errors")),
        (500, 0),
        "{rtt}"
    );
}

/// A single-member etcd on free loopback ports; killed by PID when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        assert!(
            Path::new(ETCD_BINARY).is_file(),
            "{ETCD_BINARY} is missing: scripts/setup.sh installs Debian's etcd-server"
        );
        let addrs = free_addrs(2);
        let (client, peer) = (
            format!("http://{}", addrs[0]),
            format!("http://{}", addrs[1]),
        );
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new(ETCD_BINARY)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        Etcd {
            child,
            endpoint: addrs[0].to_string(),
        }
    }

    /// Waits until a one-operation bench run succeeds.
    fn wait_ready(&mut self, dir: &Path) {
        let deadline = Deadline::after(READY_TIMEOUT);
        loop {
            let output = paxkv(&[
                "bench",
                "--target",
                "etcd",
                "--endpoint",
                &self.endpoint,
                "--ops",
                "1",
                "--quiet",
                "--json",
            ]);
            let json: Option<Value> = serde_json::from_slice(&output.stdout).ok();
            if output.status.success() && json.is_some_and(|j| j["ops"] == 1) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("etcd exited with {status}: {}", etcd_log(dir));
            }
            if deadline.passed() {
                panic!("etcd not ready: {output:?}\n{}", etcd_log(dir));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

fn etcd_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SIGKILL by PID, then reap.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn workloads_against_a_real_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    etcd.wait_ready(dir.path());
    let endpoint = etcd.endpoint.clone();
    for workload in ["put", "get", "snapshot-get", "txn", "ycsb-a"] {
        run_workload("etcd", &endpoint, workload);
    }
    let cas = run_workload("etcd", &endpoint, "cas");
    let total: u64 = (0..CAS_KEYS).map(|i| etcd_counter(&endpoint, i)).sum();
    assert_eq!(
        total,
        count(&cas, "ops"),
        "each successful increment adds one: {cas}"
    );
}

/// A cas counter read back through etcd's JSON gateway (`POST /v3/kv/range`), independent of
/// the gRPC client under test; absent is 0.
fn etcd_counter(endpoint: &str, index: u64) -> u64 {
    use std::io::{Read, Write};
    let key = format!("bench/cas/{index:06}");
    let body = format!("{{\"key\":\"{}\"}}", base64_encode(key.as_bytes()));
    let mut stream = std::net::TcpStream::connect(endpoint).unwrap();
    write!(
        stream,
        "POST /v3/kv/range HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, json) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{reply}");
    let json: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {reply}"));
    match json["kvs"][0]["value"].as_str() {
        Some(value) => String::from_utf8(base64_decode(value))
            .unwrap()
            .parse()
            .unwrap(),
        None => 0,
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().take_while(|&c| c != b'=') {
        let value = BASE64.iter().position(|&b| b == c).expect("base64") as u32;
        bits = bits << 6 | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[test]
fn base64_round_trips() {
    for text in ["", "a", "ab", "abc", "bench/cas/000001"] {
        assert_eq!(
            base64_decode(&base64_encode(text.as_bytes())),
            text.as_bytes()
        );
    }
    assert_eq!(base64_encode(b"ab"), "YWI=");
}
