//! Backup and restore end to end: `paxkv backup` of a running `paxkv dev` cluster, `paxkv
//! restore` of the file into three fresh data directories, and a new 3-process cluster
//! (`paxkv server`) started on them that serves the keys and takes new writes. Also: a
//! corrupted backup is refused by `restore` with a typed error, `restore` refuses a data
//! directory that holds state, and the Thrift calls behind `backup` (adminSnapshot,
//! readSnapshot) serve a whole file and name a snapshot that is gone.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    ErrorCode, GetRequest, InvalidArgument, PutRequest, ReadSnapshotRequest, SnapshotGone,
};
use paxkv::api::TPaxkvSyncClient;
use support::{user_error, wait_ready, DevCluster, Process, Retrying};

const READY: Duration = Duration::from_secs(30);
const CALLS: Duration = Duration::from_secs(30);

/// The exit statuses of docs/cli.md this file checks.
const EXIT_INVALID: i32 = 2;
const EXIT_VERIFY: i32 = 6;

const KEYS: usize = 200;

fn paxkv(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paxkv"))
        .args(args)
        .output()
        .expect("run the paxkv binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `paxkv ARGS` that must succeed; its stdout.
fn paxkv_ok(args: &[&std::ffi::OsStr]) -> String {
    let output = paxkv(args);
    assert!(
        output.status.success(),
        "paxkv {args:?} failed with {}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The value of `name=` in a `name=value ...` line.
fn field(line: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    (line.split_whitespace())
        .find_map(|word| word.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        .to_string()
}

fn start_dev(dir: &Path) -> DevCluster {
    let mut dev = support::dev(dir);
    dev.wait_ready(READY);
    dev
}

fn write_keys(endpoint: SocketAddr, prefix: &str, count: usize) -> Vec<i64> {
    let mut client = Retrying::new(endpoint, CALLS);
    (0..count)
        .map(|n| {
            let put = PutRequest::new(key(prefix, n), value(prefix, n), None);
            client.call(|c| c.put(put.clone()))
        })
        .collect()
}

fn key(prefix: &str, n: usize) -> Vec<u8> {
    format!("{prefix}/{n:04}").into_bytes()
}

fn value(prefix: &str, n: usize) -> Vec<u8> {
    format!("value of {prefix} {n}").into_bytes()
}

fn assert_keys(endpoint: SocketAddr, prefix: &str, count: usize) {
    let mut client = Retrying::new(endpoint, CALLS);
    for n in 0..count {
        let request = GetRequest::new(key(prefix, n), None);
        let got = client.call(|c| c.get(request.clone())).kv;
        assert_eq!(
            got.map(|kv| kv.value),
            Some(value(prefix, n)),
            "{prefix}/{n} on {endpoint}"
        );
    }
}

/// `paxkv backup` of the replica at `endpoint` to `out`: its stdout line.
fn backup(endpoint: SocketAddr, out: &Path) -> String {
    let endpoint = endpoint.to_string();
    paxkv_ok(&[
        "backup".as_ref(),
        "--endpoint".as_ref(),
        endpoint.as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ])
}

fn restore(input: &Path, data_dir: &Path) -> Output {
    paxkv(&[
        "restore".as_ref(),
        "--in".as_ref(),
        input.as_os_str(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ])
}

/// Three `paxkv server` processes on fresh loopback ports, replica N with data in
/// `data_dirs[N - 1]`.
struct Cluster {
    endpoints: Vec<SocketAddr>,
    servers: Vec<Process>,
}

impl Cluster {
    fn start(dir: &Path, data_dirs: &[PathBuf]) -> Cluster {
        let addrs = support::free_addrs(6);
        let (endpoints, peers) = (addrs[..3].to_vec(), addrs[3..].to_vec());
        let members: Vec<String> = (peers.iter().enumerate())
            .map(|(i, peer)| format!("  {{ id = {}, peer_addr = \"{peer}\" }},", i + 1))
            .collect();
        let mut servers = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let id = i + 1;
            let config = format!(
                "id = {id}\ndata_dir = \"{}\"\nthrift_addr = \"{endpoint}\"\nauth.enabled = false\nmembers = [\n{}\n]\n",
                data_dirs[i].display(),
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
            servers.push(Process::spawn(&args, &dir.join(format!("node{id}.log"))));
        }
        let mut cluster = Cluster { endpoints, servers };
        for i in 0..3 {
            wait_ready(cluster.endpoints[i], READY, &mut cluster.servers);
        }
        cluster
    }
}

#[test]
fn a_backup_restored_into_three_fresh_replicas_serves_its_keys_and_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    let versions = write_keys(dev.endpoints[0], "before", KEYS);
    let file = dir.path().join("cluster.pxs");
    // From a follower or the leader alike: the snapshot follows a linearizable read point.
    let line = backup(dev.endpoints[1], &file);
    assert!(line.starts_with("OK "), "{line}");
    let backup_version: i64 = field(&line, "version").parse().unwrap();
    let bytes: u64 = field(&line, "bytes").parse().unwrap();
    assert!(
        backup_version >= *versions.last().unwrap(),
        "every acknowledged write is inside: {line}"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), bytes);
    assert!(!dir.path().join("cluster.pxs.partial").exists());
    drop(dev);

    let data_dirs: Vec<PathBuf> = (1..=3)
        .map(|id| dir.path().join(format!("restored/node{id}")))
        .collect();
    for data_dir in &data_dirs {
        let output = restore(&file, data_dir);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let stdout = text(&output.stdout);
        assert_eq!(field(&stdout, "slot"), field(&line, "slot"), "{stdout}");
        assert_eq!(field(&stdout, "checksum"), field(&line, "checksum"));
        assert!(text(&output.stderr).contains("EVERY replica"));
    }

    let cluster = Cluster::start(dir.path(), &data_dirs);
    for &endpoint in &cluster.endpoints {
        assert_keys(endpoint, "before", KEYS);
    }
    let after = write_keys(cluster.endpoints[2], "after", 50);
    assert!(
        after[0] > backup_version,
        "new versions follow the snapshot's"
    );
    for &endpoint in &cluster.endpoints {
        assert_keys(endpoint, "after", 50);
        assert_keys(endpoint, "before", KEYS);
    }
}

#[test]
fn a_corrupted_backup_is_refused_by_restore_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    write_keys(dev.endpoints[0], "k", KEYS);
    let file = dir.path().join("good.pxs");
    backup(dev.endpoints[0], &file);
    drop(dev);

    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let corrupt = dir.path().join("corrupt.pxs");
    std::fs::write(&corrupt, &bytes).unwrap();
    let data_dir = dir.path().join("never-seeded");
    let output = restore(&corrupt, &data_dir);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_VERIFY), "{stderr}");
    assert!(
        stderr.starts_with("paxkv: verification failed:"),
        "{stderr}"
    );
    assert!(stderr.contains("corrupt"), "{stderr}");
    let seeded = std::fs::read_dir(&data_dir).map_or(0, |entries| entries.count());
    assert_eq!(seeded, 0, "nothing was seeded from a corrupt file");

    // The untouched file still restores.
    let output = restore(&file, &dir.path().join("seeded"));
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn restore_refuses_a_data_dir_that_holds_a_replicas_state() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    write_keys(dev.endpoints[0], "k", 10);
    let file = dir.path().join("b.pxs");
    backup(dev.endpoints[0], &file);
    let used = dev.data_dir.join("replica_1");
    drop(dev);
    let output = restore(&file, &used);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_INVALID), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn admin_snapshot_names_a_file_that_read_snapshot_serves_whole() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    let versions = write_keys(dev.endpoints[0], "k", KEYS);
    let mut client = Retrying::new(dev.endpoints[2], CALLS);
    let info = client.call(|c| c.admin_snapshot());
    assert_eq!(info.replica, 3, "the replica that took the call holds it");
    assert!(info.version >= *versions.last().unwrap());
    let mut read = Vec::new();
    loop {
        let request = ReadSnapshotRequest::new(info.slot, read.len() as i64, 64 * 1024);
        let chunk = client.call(|c| c.read_snapshot(request.clone()));
        assert_eq!(chunk.total_bytes, info.bytes);
        assert!(chunk.data.len() <= 64 * 1024);
        if chunk.data.is_empty() {
            break;
        }
        read.extend_from_slice(&chunk.data);
    }
    assert_eq!(read.len() as i64, info.bytes);
    // The checksum covers every byte but the last four, which hold it.
    let (body, stored) = read.split_at(read.len() - 4);
    assert_eq!(i64::from(crc32c::crc32c(body)), info.checksum);
    assert_eq!(stored, (info.checksum as u32).to_le_bytes());

    let beyond = ReadSnapshotRequest::new(info.slot, info.bytes + 1, 16);
    let error = client
        .try_call(|c| c.read_snapshot(beyond.clone()))
        .unwrap_err();
    assert!(user_error::<InvalidArgument>(&error).is_some(), "{error:?}");
    let absent = ReadSnapshotRequest::new(info.slot + 1_000_000, 0, 16);
    let error = client
        .try_call(|c| c.read_snapshot(absent.clone()))
        .unwrap_err();
    let gone = user_error::<SnapshotGone>(&error).expect("SnapshotGone");
    assert_eq!(gone.code, ErrorCode::SNAPSHOT_GONE);
    assert_eq!(gone.slot, info.slot + 1_000_000);
}

/// Runs on any build: the refusal comes before any call.
#[test]
fn backup_keeps_an_existing_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("existing.pxs");
    std::fs::write(&out, b"an older backup").unwrap();
    let output = paxkv(&[
        "backup".as_ref(),
        "--endpoint".as_ref(),
        "127.0.0.1:1".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_INVALID), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), b"an older backup");
}
