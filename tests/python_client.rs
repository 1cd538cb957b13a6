//! A Python client, generated from the IDL by the pinned compiler (Apache Thrift 0.17.0),
//! against a real `paxkv dev` cluster: tests/python/client_test.py checks a put/get round
//! trip in both protocols, a transaction conflict, a CAS with `txn`, a watch, typed
//! exceptions, and JSON documents (put, RFC 6902 patch with a test, pointer read).
//!
//! Needs the `thrift` compiler and /usr/bin/python3 with Debian's `python3-thrift` (both
//! installed by scripts/test.sh). Without the Python runtime the test fails and says why.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn python_client_against_a_dev_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    if let Err(reason) = python_has_thrift(dir.path()) {
        panic!("{PYTHON} cannot import thrift ({reason}); apt-get install python3-thrift");
    }
    let generated = generate_python(dir.path());
    let mut cluster = support::dev(dir.path());
    cluster.wait_ready(READY_TIMEOUT);

    let output = run_script(&generated, &cluster.endpoints[0].to_string());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "client_test.py failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}",
        output.status,
        cluster.process.log_tail(support::LOG_TAIL_LINES)
    );
    cluster.process.assert_running();
}

/// The configuration service's workflow from Python (tests/python/config_test.py).
#[test]
fn python_config_service_workflow_against_a_dev_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    if let Err(reason) = python_has_thrift(dir.path()) {
        panic!("{PYTHON} cannot import thrift ({reason}); apt-get install python3-thrift");
    }
    let generated = generate_python(dir.path());
    let mut cluster = support::dev(dir.path());
    cluster.wait_ready(READY_TIMEOUT);
    let root_token = cluster.data_dir.join("replica_1/root-token");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/config_test.py");
    let output = Command::new(PYTHON)
        .arg(&script)
        .arg("--endpoint")
        .arg(cluster.endpoints[0].to_string())
        .arg("--root-token-file")
        .arg(&root_token)
        .env("PYTHONPATH", &generated)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run config_test.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "config_test.py failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}",
        output.status,
        cluster.process.log_tail(support::LOG_TAIL_LINES)
    );
    cluster.process.assert_running();
}

/// Checked from `cwd` outside the repository: there, `thrift/` (the IDL directory) would be
/// imported as an empty namespace package and hide a missing runtime.
fn python_has_thrift(cwd: &Path) -> Result<(), String> {
    let output = Command::new(PYTHON)
        .args(["-c", "import thrift.transport.TTransport"])
        .current_dir(cwd)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// `thrift --gen py -out DIR/gen-py thrift/paxkv.thrift`; returns DIR/gen-py.
fn generate_python(dir: &Path) -> PathBuf {
    let out = dir.join("gen-py");
    std::fs::create_dir(&out).expect("create gen-py");
    let idl = Path::new(env!("CARGO_MANIFEST_DIR")).join("thrift/paxkv.thrift");
    let output = Command::new("thrift")
        .args(["--gen", "py", "-out"])
        .arg(&out)
        .arg(&idl)
        .output()
        .expect("run the thrift compiler (apt-get install thrift-compiler)");
    assert!(
        output.status.success(),
        "thrift --gen py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn run_script(generated: &Path, endpoint: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_test.py");
    Command::new(PYTHON)
        .arg(&script)
        .args(["--endpoint", endpoint])
        .env("PYTHONPATH", generated)
        // Writes no __pycache__ into the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run client_test.py")
}
