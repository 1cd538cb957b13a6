//! Shared by the chaos crate's integration tests; each test binary uses part of it.
#![allow(dead_code)]
use std::path::PathBuf;
use std::time::Duration;

use paxkv_chaos::check::linearizable::SEARCH_STEPS_MAX;
use paxkv_chaos::cluster::Timing;
use paxkv_chaos::nemesis::FaultKind;
use paxkv_chaos::report::Report;
use paxkv_chaos::run::{run, RunOptions};
use paxkv_chaos::workload::Clients;

/// The `paxkv` binary in the profile directory above this test's `deps/`.
///
/// It is not built from here: a nested `cargo build -p paxkv` resolves features for that
/// package alone, so it would rebuild the binary other tests of the same run are using,
/// without the workspace's features. `scripts/test.sh` builds it first with the rest of the
/// workspace (`cargo build --release --workspace --all-targets --all-features`).
pub fn paxkv_binary() -> PathBuf {
    let me = std::env::current_exe().expect("current_exe");
    let deps = me.parent().expect("deps/");
    let binary = deps.parent().expect("the profile directory").join("paxkv");
    assert!(
        binary.exists(),
        "{} is missing: build it first with \
         cargo build --release --workspace --all-targets --all-features",
        binary.display()
    );
    binary
}

/// Options for a run of `secs` seconds under `nemesis` with the default clients and timing,
/// writing to `out`.
pub fn run_options(
    secs: u64,
    nemesis: &[FaultKind],
    seed: u64,
    out: &std::path::Path,
) -> RunOptions {
    RunOptions {
        time: Duration::from_secs(secs),
        replicas: 3,
        nemesis: nemesis.to_vec(),
        seed,
        binary: paxkv_binary(),
        out: out.to_path_buf(),
        clients: Clients::default(),
        ops_per_client_max: 100_000,
        timing: Timing::default(),
        search_steps_max: SEARCH_STEPS_MAX,
        bugs: Vec::new(),
    }
}

/// A 25 s run of 3 replicas under every fault in `kinds`, each at least once (the nemesis
/// takes them in turn: 20 s is room for three at their longest, 3 s quiet and 3.6 s of
/// fault each), must end with no violation, no lost write, no crash, every checker valid,
/// and real traffic.
pub fn assert_a_run_under_stays_valid(kinds: &[FaultKind], seed: u64) -> Report {
    assert_a_valid_run(25, 3, kinds, kinds, seed)
}

/// A run of `secs` seconds on `replicas` replicas under `kinds`, with at least one fault of
/// each kind in `required`, must end with no violation, no lost write, no crash, every
/// checker valid, and real traffic. Its output is kept when it fails (the path is in the
/// summary), removed when it passes.
pub fn assert_a_valid_run(
    secs: u64,
    replicas: usize,
    kinds: &[FaultKind],
    required: &[FaultKind],
    seed: u64,
) -> Report {
    let out = tempfile::Builder::new()
        .prefix("paxkv-chaos-run-")
        .tempdir()
        .unwrap()
        .keep();
    let options = RunOptions {
        replicas,
        ..run_options(secs, kinds, seed, &out)
    };
    let report = run(&options).unwrap_or_else(|e| panic!("run failed: {e}"));
    let summary = report.summary();
    println!("{summary}");
    for kind in required {
        let count = report.faults_by_kind.get(kind.name()).copied();
        assert!(count.unwrap_or(0) >= 1, "no {}:\n{summary}", kind.name());
    }
    assert!(report.crashes.is_empty(), "{summary}");
    assert_eq!(report.violations, 0, "{summary}");
    assert_eq!(report.lost_writes, 0, "{summary}");
    for (name, verdict) in report.checks.verdicts() {
        assert!(verdict.is_valid(), "{name} is not valid:\n{summary}");
    }
    assert!(report.ops["register"].ok >= 100, "{summary}");
    assert!(report.checks.set.adds_ok >= 100, "{summary}");
    assert!(report.checks.documents.adds_ok >= 20, "{summary}");
    std::fs::remove_dir_all(&out).unwrap();
    report
}
