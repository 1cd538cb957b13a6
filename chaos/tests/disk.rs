//! Disk faults through the replicas' fault points, and the suite against a server with a
//! known bug: the same runner, workloads and checkers as a real check, so a run that
//! reports a planted bug shows that a run reporting none had the means to see one.
mod support;

use std::process::Command;
use std::time::Duration;

use paxkv_chaos::check::linearizable::SEARCH_STEPS_MAX;
use paxkv_chaos::cluster::Timing;
use paxkv_chaos::nemesis::FaultKind;
use paxkv_chaos::run::{run, RunOptions};
use paxkv_chaos::workload::Clients;

/// With `unsafe_local_reads` on every replica and `disk-stall` faults, the command line
/// exits 1 and report.json has the register checker's verdict `violation`.
///
/// Why the violation is not left to chance: a stall (`wal::fsync` = `pause`) blocks the
/// replica's driver in its next fdatasync, and a replica persists a slot's accept before it
/// applies it, so the stalled replica applies nothing for the whole stall (over a second)
/// while the other two, a quorum, commit the register writes of the clients on them. The
/// register clients are spread over the replicas, so some read through the stalled one,
/// which answers at once from its own state: values older than writes acknowledged before
/// the read began. (A follower applying a few milliseconds behind the leader already
/// answers stale now and then; the stall makes it certain.) Without the setting such a
/// read waits for a read index and times out instead (tests/chaos_hooks.rs in the server
/// crate shows both sides on one key).
#[test]
fn stale_reads_switched_on_in_the_servers_are_reported_as_a_violation() {
    let dir = tempfile::Builder::new()
        .prefix("paxkv-chaos-bug-")
        .tempdir()
        .unwrap();
    let out = dir.keep();
    let binary = support::paxkv_binary();
    let run = Command::new(env!("CARGO_BIN_EXE_paxkv-chaos"))
        .args([
            "--time",
            "15",
            "--seed",
            "20261202",
            "--nemesis",
            "disk-stall",
        ])
        .args(["--inject-bug", "stale-reads"])
        .arg("--paxkv-bin")
        .arg(&binary)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}{stderr}");
    assert_eq!(run.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("injected bugs: [stale-reads]"), "{stdout}");
    assert!(
        stdout.contains("check registers (linearizable): VIOLATION"),
        "{stdout}"
    );

    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let registers = &report["checks"]["registers"]["verdict"];
    assert_eq!(registers["verdict"], "violation", "{registers}");
    assert!(report["violations"].as_u64().unwrap() >= 1);
    assert!(report["faults_by_kind"]["disk-stall"].as_u64().unwrap() >= 1);
    assert_eq!(report["run"]["injected_bugs"][0], "stale-reads");
    // Nothing else broke: the bug is in reads only.
    assert_eq!(report["lost_writes"], 0, "{text}");
    assert_eq!(report["crashes"].as_array().unwrap().len(), 0, "{text}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// Every disk fault (a stall longer than the election timeout, a failed fsync that stops
/// the replica, a torn WAL write that stops it), each on the leader or a random replica,
/// the stopped ones restarted: no violation, no lost write, no crash.
///
/// 25 s leaves the nemesis 20 s, enough for three faults at their longest (3 s quiet and
/// 3.6 s of fault each), so every kind happens once at least: they are taken in turn.
#[test]
fn disk_faults_leave_no_violation_and_lose_no_acknowledged_write() {
    let dir = tempfile::Builder::new()
        .prefix("paxkv-chaos-disk-")
        .tempdir()
        .unwrap();
    let out = dir.keep();
    let options = RunOptions {
        time: Duration::from_secs(25),
        nemesis: FaultKind::DISK.to_vec(),
        seed: 20_261_203,
        binary: support::paxkv_binary(),
        out: out.clone(),
        clients: Clients::default(),
        ops_per_client_max: 100_000,
        timing: Timing::default(),
        search_steps_max: SEARCH_STEPS_MAX,
        bugs: Vec::new(),
    };
    let report = run(&options).unwrap_or_else(|e| panic!("run failed: {e}"));
    let summary = report.summary();
    println!("{summary}");
    for kind in FaultKind::DISK {
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
    std::fs::remove_dir_all(&out).unwrap();
}
