//! The fault and debug hooks of `chaos` builds, on real 3-process clusters (`paxkv server`,
//! one replica per process, so a fault point set over HTTP hits one replica alone):
//! `/debug/failpoints` on the metrics endpoint, `[debug] unsafe_local_reads` and
//! `[debug] unsafe_skip_fsync`, and divergence detection catching a replica made to apply
//! wrongly (`executor::apply_wrongly`).

// Without the feature these tests would compile to nothing and pass unseen.
#[cfg(not(feature = "chaos"))]
compile_error!(
    "tests/chaos_hooks.rs tests the hooks of the chaos feature: run the tests with \
     --all-features (scripts/test.sh does)"
);

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use paxkv::api::gen::paxkv::{GetRequest, PutRequest, Unavailable};
use paxkv::api::TPaxkvSyncClient;
use support::{
    client, describe, http_get, http_request, sample, user_error, wait_ready, Deadline, Process,
    Retrying,
};

const READY: Duration = Duration::from_secs(30);
const CALLS: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// Short, so that a read that cannot reach its read point gives up quickly.
const REQUEST_TIMEOUT_MS: u64 = 2_000;

const LOCAL_READS: &str = "[debug]\nunsafe_local_reads = true\n";
const SKIP_FSYNC: &str = "[debug]\nunsafe_skip_fsync = true\n";

/// Three `paxkv server` processes, each with a metrics endpoint.
struct Servers {
    dir: PathBuf,
    endpoints: Vec<SocketAddr>,
    peers: Vec<SocketAddr>,
    metrics: Vec<SocketAddr>,
    servers: Vec<Option<Process>>,
}

impl Servers {
    fn new(dir: &Path) -> Servers {
        let addrs = support::free_addrs(9);
        Servers {
            dir: dir.to_path_buf(),
            endpoints: addrs[..3].to_vec(),
            peers: addrs[3..6].to_vec(),
            metrics: addrs[6..].to_vec(),
            servers: vec![None, None, None],
        }
    }

    /// Writes replica `i`'s config, with `extra` TOML appended (a `[debug]` table, or "").
    fn configure(&self, i: usize, extra: &str) {
        let members: Vec<String> = (self.peers.iter().enumerate())
            .map(|(i, peer)| format!("  {{ id = {}, peer_addr = \"{peer}\" }},", i + 1))
            .collect();
        let config = format!(
            "id = {}\ndata_dir = \"{}\"\nthrift_addr = \"{}\"\nauth.enabled = false\nmetrics_addr = \"{}\"\n\
             members = [\n{}\n]\n[timing]\nrequest_timeout_ms = {REQUEST_TIMEOUT_MS}\n{extra}",
            i + 1,
            self.dir.join(format!("node{}", i + 1)).display(),
            self.endpoints[i],
            self.metrics[i],
            members.join("\n"),
        );
        std::fs::write(self.config_path(i), config).unwrap();
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}.toml", i + 1))
    }

    fn start(&mut self, i: usize) {
        let config = self.config_path(i);
        let log = self.dir.join(format!("node{}.log", i + 1));
        let args = [
            "server".as_ref(),
            "--bootstrap".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ];
        self.servers[i] = Some(Process::spawn(&args, &log));
    }

    fn wait_ready(&mut self, i: usize) {
        let server = self.servers[i].as_mut().expect("started");
        wait_ready(self.endpoints[i], READY, std::slice::from_mut(server));
    }

    fn kill9(&mut self, i: usize) {
        self.servers[i].take().expect("running").kill9();
    }

    /// The replica (index) that leads, as replica `via` sees it.
    fn leader(&self, via: usize) -> usize {
        let status = Retrying::new(self.endpoints[via], CALLS).call(|c| c.status());
        status.leader.expect("ready clusters have a leader") as usize - 1
    }

    /// Sets fault point `name` of replica `i`'s process to `actions`.
    fn fault(&self, i: usize, name: &str, actions: &str) {
        let path = format!("/debug/failpoints/{name}");
        let (code, body) = http_request(self.metrics[i], "PUT", &path, actions).unwrap();
        assert_eq!(code, 200, "PUT {path} {actions:?}: {body}");
    }

    fn log_tail(&self, i: usize) -> String {
        (self.servers[i].as_ref()).map_or(String::new(), |s| s.log_tail(support::LOG_TAIL_LINES))
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest::new(key.as_bytes().to_vec(), value.as_bytes().to_vec(), None)
}

/// The value of `key` by one `get` on `endpoint` (a linearizable read, unless the replica
/// reads locally), and its read version.
fn get(endpoint: SocketAddr, key: &str) -> thrift::Result<(Option<String>, i64)> {
    let got = client(endpoint).get(GetRequest::new(key.as_bytes().to_vec(), None))?;
    let value = got.kv.map(|kv| String::from_utf8(kv.value).unwrap());
    Ok((value, got.read_version))
}

/// Polls `get` until `key` reads `value` on `endpoint`.
fn wait_for_value(endpoint: SocketAddr, key: &str, value: &str) {
    let deadline = Deadline::after(CALLS);
    loop {
        let got = Retrying::new(endpoint, CALLS).call(|c| {
            let got = c.get(GetRequest::new(key.as_bytes().to_vec(), None))?;
            Ok(got.kv.map(|kv| kv.value))
        });
        if got.as_deref() == Some(value.as_bytes()) {
            return;
        }
        assert!(!deadline.passed(), "{endpoint}: {key} never read {value}");
        std::thread::sleep(POLL);
    }
}

/// Replica 3 answers `get` from its own applied state. With its WAL fsync paused it lags,
/// so after a write is acknowledged it still answers the value before it, which a
/// linearizable read on replica 2 never does. The same replica without the setting, in the
/// same state, refuses to answer instead (Unavailable after the request timeout).
///
/// Why this is deterministic, not a race the test usually wins: `pause` blocks replica 3's
/// driver thread in the first fdatasync it makes after the pause is set, and the driver
/// persists a slot's accept before it can apply that slot (and applies on that same
/// thread). The write is sent after the pause is set, so replica 3 cannot apply it, however
/// the messages are timed. Replicas 1 and 2 are a quorum without it, so the write commits.
#[test]
fn unsafe_local_reads_answer_stale_where_a_linearizable_read_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Servers::new(dir.path());
    cluster.configure(0, "");
    cluster.configure(1, "");
    cluster.configure(2, LOCAL_READS);
    // 1 and 2 elect a leader before 3 starts, so 3 normally follows; if it led, the write
    // below would wait out an election of 1 or 2, with the same outcome.
    cluster.start(0);
    cluster.start(1);
    cluster.wait_ready(0);
    cluster.start(2);
    cluster.wait_ready(2);
    let [one, two, three] = [0, 1, 2].map(|i| cluster.endpoints[i]);
    let log = cluster.log_tail(2);
    assert!(log.contains("UNSAFE DEBUG SETTING ON"), "{log}");

    let mut writer = Retrying::new(one, CALLS);
    writer.call(|c| c.put(put("k", "v1")));
    wait_for_value(three, "k", "v1");
    cluster.fault(2, "wal::fsync", "pause");
    let (_, listed) = http_get(cluster.metrics[2], "/debug/failpoints").unwrap();
    assert_eq!(listed, "wal::fsync=pause\n");

    let version = writer.call(|c| c.put(put("k", "v2")));
    let (linearizable, _) = get(two, "k").unwrap();
    assert_eq!(linearizable.as_deref(), Some("v2"));
    let (stale, stale_version) = get(three, "k").unwrap();
    assert_eq!(stale.as_deref(), Some("v1"), "replica 3 read locally");
    assert!(stale_version < version, "{stale_version} >= {version}");
    let read_version = client(three).get_read_version().unwrap();
    assert!(read_version < version, "getReadVersion is local too");

    // Resumed, it catches up: local reads follow what it applies.
    cluster.fault(2, "wal::fsync", "off");
    wait_for_value(three, "k", "v2");

    // The control: replica 3 without the setting, paused the same way.
    cluster.kill9(2);
    cluster.configure(2, "");
    cluster.start(2);
    cluster.wait_ready(2);
    wait_for_value(three, "k", "v2");
    cluster.fault(2, "wal::fsync", "pause");
    writer.call(|c| c.put(put("k", "v3")));
    match get(three, "k") {
        Err(error) => assert!(
            user_error::<Unavailable>(&error).is_some(),
            "{}",
            describe(&error)
        ),
        Ok(answer) => panic!("a paused replica answered a linearizable read: {answer:?}"),
    }
    cluster.fault(2, "wal::fsync", "off");
    wait_for_value(three, "k", "v3");
}

/// `wal::fsync` = `return` on a replica that does not lead: its WAL poisons on the next
/// write and its driver stops, /ready says so, the other two go on committing, and after a
/// restart (the fault point dies with the process) it has every acknowledged write.
///
/// Replica 3 runs with `unsafe_skip_fsync` and gets the same fault point: it never calls
/// fdatasync while acknowledging, so it stays up; if it did not, the cluster would have no
/// quorum and the writes would fail.
#[test]
fn a_failed_fsync_stops_its_replica_the_others_go_on_and_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Servers::new(dir.path());
    cluster.configure(0, "");
    cluster.configure(1, "");
    cluster.configure(2, SKIP_FSYNC);
    for i in 0..3 {
        cluster.start(i);
    }
    for i in 0..3 {
        cluster.wait_ready(i);
    }
    check_failpoint_requests(cluster.metrics[0]);
    let target = match cluster.leader(0) {
        0 => 1,
        _ => 0,
    };
    let skipping = 2;
    cluster.fault(skipping, "wal::fsync", "return");
    cluster.fault(target, "wal::fsync", "return");

    let mut writer = Retrying::new(cluster.endpoints[skipping], CALLS);
    let mut acknowledged = Vec::new();
    let mut write = |writer: &mut Retrying, i: usize| {
        let (key, value) = (format!("key{i:03}"), format!("value{i}"));
        writer.call(|c| c.put(put(&key, &value)));
        acknowledged.push((key, value));
    };
    for i in 0..20 {
        write(&mut writer, i);
    }
    let ready = wait_for_ready_code(cluster.metrics[target], 503);
    assert!(ready.contains("this replica has stopped"), "{ready}");
    let status = client(cluster.endpoints[target]).status().unwrap();
    assert!(!status.healthy, "{status:?}");
    let own = status.replicas.iter().find(|r| r.id as usize == target + 1);
    assert_eq!(own.map(|r| r.role.as_str()), Some("stopped"), "{status:?}");
    let log = std::fs::read_to_string(dir.path().join(format!("node{}.log", target + 1)));
    assert!(log.unwrap().contains("injected fdatasync failure"));
    // Stopped, and the cluster does not need it.
    for i in 20..40 {
        write(&mut writer, i);
    }
    let (code, ready) = http_get(cluster.metrics[skipping], "/ready").unwrap();
    assert_eq!(code, 200, "{ready}");
    let scrape = http_get(cluster.metrics[skipping], "/metrics").unwrap().1;
    let fsyncs = sample(&scrape, "paxkv_wal_fsync_duration_seconds_count", &[]);
    let appends = sample(&scrape, "paxkv_wal_append_duration_seconds_count", &[]);
    assert_eq!(fsyncs, Some(0.0), "unsafe_skip_fsync made fsyncs");
    assert!(appends.unwrap_or(0.0) >= 40.0, "{appends:?}");

    cluster.kill9(target);
    cluster.start(target);
    cluster.wait_ready(target);
    let mut reader = Retrying::new(cluster.endpoints[target], CALLS);
    for (key, value) in &acknowledged {
        let got = reader.call(|c| c.get(GetRequest::new(key.as_bytes().to_vec(), None)));
        let got = got.kv.map(|kv| kv.value);
        assert_eq!(
            got.as_deref(),
            Some(value.as_bytes()),
            "{key} after restart"
        );
    }
}

/// A replica made to apply its slots wrongly (one extra record per slot: a state no other
/// replica has) is found out by comparing state digests: it stops, names the first slot it
/// applied wrongly, raises `paxkv_divergence_detected`, and refuses to start again; the
/// two others report it and keep serving. Without the fault point the same writes leave
/// every gauge at 0 while comparisons run, so the check is not one that never fires.
#[test]
fn a_replica_that_applies_wrongly_is_caught_stopped_and_kept_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Servers::new(dir.path());
    for i in 0..3 {
        cluster.configure(i, "");
        cluster.start(i);
    }
    for i in 0..3 {
        cluster.wait_ready(i);
    }
    let wrong = (cluster.leader(0) + 1) % 3;
    let mut writer = Retrying::new(cluster.endpoints[(wrong + 1) % 3], CALLS);
    for i in 0..20 {
        writer.call(|c| c.put(put(&format!("before{i}"), "v")));
    }
    // Comparisons run and agree: every replica compares slots with its peers once a second.
    let deadline = Deadline::after(READY);
    for i in 0..3 {
        loop {
            let scrape = http_get(cluster.metrics[i], "/metrics").unwrap().1;
            let compared = sample(&scrape, "paxkv_digest_comparisons_total", &[]);
            if compared.unwrap_or(0.0) >= 20.0 {
                assert_eq!(sample(&scrape, "paxkv_divergence_detected", &[]), Some(0.0));
                assert_eq!(sample(&scrape, "paxkv_divergent_peers", &[]), Some(0.0));
                break;
            }
            assert!(
                !deadline.passed(),
                "replica {i} compared no digests: {scrape}"
            );
            std::thread::sleep(POLL);
        }
    }

    cluster.fault(wrong, "executor::apply_wrongly", "return");
    for i in 0..5 {
        writer.call(|c| c.put(put(&format!("after{i}"), "v")));
    }
    // A loaded replica may first answer 503 for a slow peer ("no quorum"): wait for the
    // answer that says it stopped.
    let ready = wait_for_ready(cluster.metrics[wrong], 503, "this replica has stopped");
    assert!(ready.contains("this replica has stopped"), "{ready}");
    let scrape = http_get(cluster.metrics[wrong], "/metrics").unwrap().1;
    assert_eq!(sample(&scrape, "paxkv_divergence_detected", &[]), Some(1.0));
    let first = sample(&scrape, "paxkv_divergence_first_slot", &[]).unwrap();
    let log = cluster.log_tail(wrong);
    assert!(
        log.contains("diverged: this replica's applied state differs"),
        "{log}"
    );
    assert!(log.contains(&format!("first at slot {first}")), "{log}");
    // The others say which replica differs, and go on serving.
    let others: Vec<usize> = (0..3).filter(|&i| i != wrong).collect();
    for &i in &others {
        let deadline = Deadline::after(READY);
        loop {
            let scrape = http_get(cluster.metrics[i], "/metrics").unwrap().1;
            if sample(&scrape, "paxkv_divergent_peers", &[]) == Some(1.0) {
                assert_eq!(sample(&scrape, "paxkv_divergence_detected", &[]), Some(0.0));
                break;
            }
            assert!(
                !deadline.passed(),
                "replica {i} did not report the divergence"
            );
            std::thread::sleep(POLL);
        }
        let log = cluster.log_tail(i);
        let named = format!("the applied state of replica {} differs", wrong + 1);
        assert!(log.contains(&named), "{log}");
    }
    writer.call(|c| c.put(put("still", "serving")));
    // Restarted, it refuses to start: it must be rebuilt.
    cluster.kill9(wrong);
    cluster.start(wrong);
    let mut refused = cluster.servers[wrong].take().unwrap();
    let status = refused
        .wait_exit(READY)
        .expect("a diverged replica refuses to start");
    assert!(!status.success());
    assert!(refused.log_tail(20).contains("diverged from its peers"));
}

/// The route's answers to requests that set nothing: an unknown name, an action `fail`
/// cannot parse, and a fault point set and removed again.
fn check_failpoint_requests(metrics: SocketAddr) {
    let request = |method: &str, name: &str, body: &str| {
        let path = format!("/debug/failpoints/{name}");
        http_request(metrics, method, &path, body).unwrap()
    };
    let (code, body) = request("PUT", "wal::fsnyc", "return");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("wal::fsync"), "names the real ones: {body}");
    let (code, body) = request("PUT", "wal::write", "explode");
    assert_eq!(code, 400, "{body}");
    assert_eq!(request("PUT", "wal::write", "sleep(1)").0, 200);
    let listed = http_get(metrics, "/debug/failpoints").unwrap();
    assert_eq!(listed, (200, "wal::write=sleep(1)\n".to_string()));
    assert_eq!(request("DELETE", "wal::write", "").0, 200);
    assert_eq!(
        http_get(metrics, "/debug/failpoints").unwrap(),
        (200, String::new())
    );
}

/// Polls `/ready` until it answers `code`; returns the body.
fn wait_for_ready_code(metrics: SocketAddr, code: u16) -> String {
    wait_for_ready(metrics, code, "")
}

/// Polls /ready until it answers `code` with a body containing `saying`.
fn wait_for_ready(metrics: SocketAddr, code: u16, saying: &str) -> String {
    let deadline = Deadline::after(READY);
    loop {
        let answer = http_get(metrics, "/ready");
        if let Ok((answered, body)) = &answer {
            if *answered == code && body.contains(saying) {
                return body.clone();
            }
        }
        assert!(
            !deadline.passed(),
            "/ready never {code} {saying:?}: {answer:?}"
        );
        std::thread::sleep(POLL);
    }
}
