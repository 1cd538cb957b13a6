//! A real Prometheus server (Debian's /usr/bin/prometheus) scrapes a real 3-process
//! cluster with the shipped config/prometheus.yml: all three targets come up, and the
//! commit counter it stores rises while a client writes through Thrift, and every query of
//! the Grafana dashboard is valid PromQL with data behind it.
//!
//! Prometheus is not optional here: scripts/setup.sh installs it, and without it this test
//! fails saying so.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::{PutDocumentRequest, PutRequest};
use paxkv::api::TPaxkvSyncClient;
use support::{free_addrs, free_port, http_get, wait_ready, Deadline, Process, Retrying};

const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Each wait of this test (a node ready, Prometheus ready, targets up, the counter rising).
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);
/// The target addresses as config/prometheus.yml writes them, for node 1, 2, 3.
const SHIPPED_TARGETS: [&str; 3] = ["127.0.0.1:9191", "127.0.0.1:9192", "127.0.0.1:9193"];

/// A Prometheus server; dropping it kills it (SIGKILL to its PID) and reaps it.
struct PrometheusServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl PrometheusServer {
    fn start(dir: &Path, config: &Path) -> PrometheusServer {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install Debian's `prometheus` package \
             (scripts/setup.sh does)"
        );
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join("prometheus.log");
        let stdout = std::fs::File::create(&log).unwrap();
        let stderr = stdout.try_clone().unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn prometheus");
        PrometheusServer { child, addr, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Polls `path` on its HTTP API until `done` accepts the parsed JSON answer.
    fn wait_for<T>(
        &mut self,
        what: &str,
        path: &str,
        mut done: impl FnMut(&serde_json::Value) -> Option<T>,
    ) -> T {
        let deadline = Deadline::after(WAIT);
        let mut last = String::new();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited with {status}\n{}", self.log_tail());
            }
            if let Ok((200, body)) = http_get(self.addr, path) {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if let Some(found) = done(&json) {
                    return found;
                }
                last = body;
            }
            if deadline.passed() {
                panic!(
                    "{what}: not within {WAIT:?}; last answer {last}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Node {
    thrift: SocketAddr,
    metrics: SocketAddr,
    process: Process,
}

/// Three `paxkv server` processes on free loopback ports, each with a metrics endpoint.
fn start_cluster(dir: &Path) -> Vec<Node> {
    let addrs = free_addrs(9);
    let (thrift, peers, metrics) = (&addrs[..3], &addrs[3..6], &addrs[6..]);
    let members: Vec<String> = (peers.iter().enumerate())
        .map(|(i, peer)| format!("  {{ id = {}, peer_addr = \"{peer}\" }},", i + 1))
        .collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let id = i + 1;
            let config = format!(
                "id = {id}\ndata_dir = \"{}\"\nthrift_addr = \"{}\"\nauth.enabled = false\nmetrics_addr = \"{}\"\n\
                 members = [\n{}\n]\n",
                dir.join(format!("node{id}")).display(),
                thrift[i],
                metrics[i],
                members.join("\n")
            );
            let path = dir.join(format!("node{id}.toml"));
            std::fs::write(&path, config).unwrap();
            let args = [
                "server".as_ref(),
                "--bootstrap".as_ref(),
                "--config".as_ref(),
                path.as_os_str(),
            ];
            let process = Process::spawn(&args, &dir.join(format!("node{id}.log")));
            Node {
                thrift: thrift[i],
                metrics: metrics[i],
                process,
            }
        })
        .collect();
    for node in &mut nodes {
        wait_ready(node.thrift, WAIT, std::slice::from_mut(&mut node.process));
    }
    nodes
}

/// config/prometheus.yml with its three targets replaced by `targets`, as the file's
/// header comment describes.
fn prometheus_config(dir: &Path, targets: &[SocketAddr]) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prometheus.yml");
    let mut text = std::fs::read_to_string(&shipped).unwrap();
    for (shipped_target, target) in SHIPPED_TARGETS.iter().zip(targets) {
        let quoted = format!("\"{shipped_target}\"");
        assert_eq!(
            text.matches(&quoted).count(),
            1,
            "{shipped_target} once in {shipped:?}"
        );
        text = text.replace(&quoted, &format!("\"{target}\""));
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The scalar of an instant query's single-element vector answer.
fn single_value(answer: &serde_json::Value) -> Option<f64> {
    let result = answer["data"]["result"].as_array()?;
    let value = result.first()?["value"][1].as_str()?;
    value.parse().ok()
}

/// The percent-encoded form of a PromQL expression, for a query string.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Writes through Thrift until told to stop; returns how many puts it made.
fn start_writer(endpoint: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut client = Retrying::new(endpoint, WAIT);
        // One refused call (keys are never empty), so the dashboard's error panel has data.
        let empty_key = PutRequest::new(Vec::new(), b"v".to_vec(), None);
        assert!(client.try_call(|c| c.put(empty_key.clone())).is_err());
        let deadline = Deadline::after(WAIT * 3);
        let mut puts = 0;
        while !stop.load(Ordering::Relaxed) && !deadline.passed() {
            let request = PutRequest::new(format!("k/{puts}").into_bytes(), b"v".to_vec(), None);
            client.call(|c| c.put(request.clone()));
            // And a document, so the document panel has data.
            let json = format!(r#"{{"puts":{puts}}}"#).into_bytes();
            let document = PutDocumentRequest::new(b"doc".to_vec(), json, None, None);
            client.call(|c| c.put_document(document.clone()));
            puts += 1;
        }
        puts
    })
}

/// Every query of docs/grafana-dashboard.json, with Grafana's variables filled in, is
/// PromQL that this Prometheus accepts and answers with data.
fn check_dashboard_queries(prometheus: &mut PrometheusServer) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json");
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&board, &mut exprs);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    for expr in exprs {
        let query = expr
            .replace("$__rate_interval", "10s")
            .replace("$job", "paxkv");
        let path = format!("/api/v1/query?query={}", encode(&query));
        let (code, body) = http_get(prometheus.addr, &path).unwrap();
        assert_eq!(code, 200, "{query}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{query}: {body}");
        // A rate needs two scrapes of a series; the error counter's first may be recent.
        prometheus.wait_for(&format!("data for {query}"), &path, |answer| {
            let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
            (series > 0).then_some(())
        });
    }
}

fn collect_exprs(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_str()) {
                    ("expr", Some(expr)) => found.push(expr.to_string()),
                    _ => collect_exprs(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, found)),
        _ => {}
    }
}

#[test]
fn prometheus_scrapes_every_node_and_sees_commits_rise_while_a_client_writes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path());
    let targets: Vec<SocketAddr> = nodes.iter().map(|n| n.metrics).collect();
    let config = prometheus_config(dir.path(), &targets);
    let mut prometheus = PrometheusServer::start(dir.path(), &config);

    prometheus.wait_for("all three targets up", "/api/v1/targets", |answer| {
        let active = answer["data"]["activeTargets"].as_array()?;
        let up = active.iter().filter(|t| t["health"] == "up").count();
        let jobs = active.iter().all(|t| t["labels"]["job"] == "paxkv");
        (active.len() == 3 && up == 3 && jobs).then_some(())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(nodes[0].thrift, stop.clone());
    let query = format!("/api/v1/query?query={}", encode("sum(paxkv_commits_total)"));
    let first = prometheus.wait_for("commits recorded", &query, |answer| {
        single_value(answer).filter(|&commits| commits > 0.0)
    });
    let later = prometheus.wait_for("commits rising", &query, |answer| {
        single_value(answer).filter(|&commits| commits > first)
    });
    stop.store(true, Ordering::Relaxed);
    let puts = writer.join().expect("the writer thread");
    assert!(
        puts > 0 && later > first,
        "{first} then {later} after {puts} puts"
    );
    println!("Prometheus saw sum(paxkv_commits_total) rise from {first} to {later}; {puts} puts");
    check_dashboard_queries(&mut prometheus);
    drop(prometheus);
    drop(nodes);
}
