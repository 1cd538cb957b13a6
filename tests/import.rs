//! `paxkv import` and `paxkv export` on three real `paxkv server` processes, from a real
//! `git` repository built here: a generated tree of 2,000 JSON files three levels deep and
//! two files over 10 MB, committed by two authors. A tree with a file that is not JSON is
//! refused before anything is published; the import publishes everything, a second run
//! finds everything identical, an edit is imported alone; the export gives back every
//! file's JSON value; and each entry's last git author is in the audit. A one-field edit
//! of a large file reaches `paxkv config watch --patches` as a patch.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use paxkv::api::gen::paxkv::{AuditQuery, ListEntriesRequest, NotFound, TConfmanSyncClient};
use paxkv::api::{connect_config, Protocol};
use support::{user_error, Deadline, ServerCluster};

const SMALL_FILES: usize = 2000;
const LARGE_BYTES: usize = 10_500_000;

fn git(dir: &Path, args: &[&str], author: &str) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", author)
        .env(
            "GIT_AUTHOR_EMAIL",
            format!("{}@example.com", author.to_lowercase()),
        )
        .env("GIT_COMMITTER_NAME", author)
        .env("GIT_COMMITTER_EMAIL", "ci@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A service's config, as a platform team writes it.
fn small(i: usize) -> String {
    serde_json::json!({
        "service": format!("svc-{i}"),
        "replicas": i % 7 + 1,
        "ports": [8000 + i % 100, 9000 + i % 50],
        "labels": {"team": format!("team-{}", i % 13), "tier": (["web", "batch"][i % 2])},
        "limits": {"cpu": "500m", "memory": format!("{}Mi", 128 * (i % 4 + 1))},
    })
    .to_string()
}

fn large(seed: usize) -> String {
    let mut routes = Vec::new();
    let mut bytes = 0;
    let mut i = 0;
    while bytes < LARGE_BYTES {
        let route = serde_json::json!({
            "id": format!("{seed:04}-{i:08}"),
            "path": format!("/api/v{}/resource/{i}", i % 3),
            "upstream": format!("10.{}.{}.{}:8080", i % 250, (i / 250) % 250, seed),
            "timeout_ms": 100 + i % 900,
        });
        bytes += route.to_string().len() + 1;
        routes.push(route);
        i += 1;
    }
    serde_json::to_string_pretty(&serde_json::json!({"routes": routes})).unwrap()
}

/// tree/region-R/cluster-C/svc-N.json and two large files.
fn write_tree(tree: &Path) {
    for i in 0..SMALL_FILES {
        let dir = tree.join(format!("region-{}/cluster-{}", i % 4, i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("svc-{i}.json")), small(i)).unwrap();
    }
    std::fs::create_dir_all(tree.join("edge")).unwrap();
    std::fs::write(tree.join("edge/routes-a.json"), large(1)).unwrap();
    std::fs::write(tree.join("edge/routes-b.json"), large(2)).unwrap();
    std::fs::write(tree.join("README.md"), "not imported").unwrap();
}

fn paxkv(args: &[&str], endpoint: &str, token: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paxkv"))
        .args(args)
        .args(["--endpoint", endpoint, "--token", token, "--json"])
        .output()
        .unwrap()
}

/// The child's output once it exits; killed (by its PID) and failed after `limit`.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Deadline::after(limit);
    while child.try_wait().unwrap().is_none() {
        if deadline.passed() {
            child.kill().unwrap();
            panic!("the watch saw nothing within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn summary(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON summary")
}

/// Every `*.json` file under `dir`, by relative path, as JSON values.
fn json_files(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == ".git" {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                out.insert(relative, value);
            }
        }
    }
    out
}

#[test]
fn a_git_tree_imports_in_batches_resumes_and_exports_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("cluster")).unwrap();
    let cluster = ServerCluster::start(&dir.path().join("cluster"));
    let root = cluster.root_token();
    let endpoint = cluster.endpoints[1].to_string();
    let tree = dir.path().join("repo");
    std::fs::create_dir_all(&tree).unwrap();
    write_tree(&tree);
    git(&tree, &["init", "-q"], "Alice");
    git(&tree, &["add", "-A"], "Alice");
    git(
        &tree,
        &["commit", "-q", "-m", "the config as it was"],
        "Alice",
    );
    std::fs::write(tree.join("region-1/cluster-1/svc-1.json"), small(100_001)).unwrap();
    git(
        &tree,
        &["commit", "-q", "-am", "svc-1: more replicas"],
        "Bob",
    );

    // A file that is not JSON stops the import before anything is published.
    std::fs::write(tree.join("region-0/broken.json"), "{\"a\": 1,,}").unwrap();
    let out = paxkv(
        &["import", tree.to_str().unwrap(), "--into", "/cfg"],
        &endpoint,
        &root,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("region-0/broken.json: not JSON at byte 8"),
        "{stderr}"
    );
    let mut config = connect_config(&*endpoint, Protocol::Binary, Some(&root)).unwrap();
    let absent = config.describe_namespace("/cfg".to_string()).unwrap_err();
    assert!(user_error::<NotFound>(&absent).is_some(), "{absent:?}");
    std::fs::remove_file(tree.join("region-0/broken.json")).unwrap();

    let import = |extra: &[&str]| {
        let mut args = vec!["import", tree.to_str().unwrap(), "--into", "/cfg"];
        args.extend_from_slice(extra);
        summary(&paxkv(&args, &endpoint, &root))
    };
    let files = SMALL_FILES + 2;
    let first = import(&["--batch-entries", "700"]);
    assert_eq!(first["files"], files);
    assert_eq!(first["imported"], files, "{first}");
    assert_eq!(first["other_files"], 1);
    // 2,000 small files in batches of 700, the two large ones over 32 MiB together.
    assert!(first["changes"].as_array().unwrap().len() >= 3, "{first}");
    eprintln!(
        "import: {} files, {} bytes in {:.1} s: {:.0} files/s, {:.1} MB/s",
        first["files"],
        first["imported_bytes"],
        first["seconds"].as_f64().unwrap(),
        first["files_per_second"].as_f64().unwrap(),
        first["mb_per_second"].as_f64().unwrap()
    );

    // Again: nothing differs, nothing is published.
    let again = import(&[]);
    assert_eq!(again["imported"], 0, "{again}");
    assert_eq!(again["identical"], files);
    assert_eq!(again["changes"].as_array().unwrap().len(), 0);
    // One edit: that file alone.
    std::fs::write(tree.join("region-2/cluster-2/svc-2.json"), small(200_002)).unwrap();
    let edited = import(&[]);
    assert_eq!(edited["imported"], 1, "{edited}");

    // A one-field edit of a 10 MB file reaches a watch that asks for patches as a patch.
    let routes_path = tree.join("edge/routes-a.json");
    let mut routes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&routes_path).unwrap()).unwrap();
    let before = routes.clone();
    routes["routes"][7]["timeout_ms"] = 1.into();
    std::fs::write(&routes_path, serde_json::to_vec_pretty(&routes).unwrap()).unwrap();
    let list = ListEntriesRequest::new("/cfg/edge".to_string(), false, 1, None, None, false);
    let from = config.list_entries(list).unwrap().read_version + 1;
    let watcher = Command::new(env!("CARGO_BIN_EXE_paxkv"))
        .args(["config", "watch", "/cfg/edge", "--patches", "--count", "1"])
        .args(["--from", &from.to_string(), "--timeout-ms", "1000"])
        .args(["--endpoint", &endpoint, "--token", &root, "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let edited = import(&[]);
    assert_eq!(edited["imported"], 1, "{edited}");
    let watched = wait_output(watcher, Duration::from_secs(60));
    let event: serde_json::Value = serde_json::from_slice(&watched.stdout).unwrap();
    assert_eq!(event["key"], "routes-a.json", "{event}");
    assert!(event["value"].is_null(), "the value came whole");
    let patch = serde_json::to_vec(&event["patch"]).unwrap();
    assert!(patch.len() < 1_000, "a patch of {} bytes", patch.len());
    let canonical = serde_json::to_vec(&before).unwrap();
    let patched = paxkv::executor::document::apply_json_patch(&canonical, &patch).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&patched).unwrap(),
        routes
    );

    // The export gives back every file's JSON value.
    let out_dir = dir.path().join("export");
    let exported = summary(&paxkv(
        &["export", "/cfg", out_dir.to_str().unwrap()],
        &endpoint,
        &root,
    ));
    assert_eq!(exported["files"], files);
    let (wanted, got) = (json_files(&tree), json_files(&out_dir));
    assert_eq!(wanted.len(), files);
    assert!(wanted == got, "the export differs from the tree");

    // Each entry's last commit is in the audit.
    let mut history = |entry: &str| {
        let query = AuditQuery::new(None, entry.to_string(), None, None, None, None, 100, None);
        let page = config.query_audit(query).unwrap();
        (page.events.into_iter())
            .filter(|event| event.action == "import.history")
            .map(|event| serde_json::from_str::<serde_json::Value>(&event.detail).unwrap())
            .collect::<Vec<_>>()
    };
    let bob = history("/cfg/region-1/cluster-1:svc-1.json");
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(bob[0]["author"], "Bob");
    assert_eq!(bob[0]["subject"], "svc-1: more replicas");
    let alice = history("/cfg/edge:routes-a.json");
    assert_eq!(alice[0]["author"], "Alice");
    assert_eq!(alice[0]["email"], "alice@example.com");
}
