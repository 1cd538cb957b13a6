//! Disk faults through the replicas' fault points, and the suite against a server with a
//! known bug: the same runner, workloads and checkers as a real check, so a run that
//! reports a planted bug shows that a run reporting none had the means to see one.
mod support;

use std::process::Command;

use paxkv_chaos::nemesis::FaultKind;

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

/// Every disk fault through a fault point (a stall longer than the election timeout, a failed fsync that stops
/// the replica, a torn WAL write that stops it), each on the leader or a random replica,
/// the stopped ones restarted: no violation, no lost write, no crash.
///
/// 25 s leaves the nemesis 20 s, enough for three faults at their longest (3 s quiet and
/// 3.6 s of fault each), so every kind happens once at least: they are taken in turn.
#[test]
fn disk_faults_leave_no_violation_and_lose_no_acknowledged_write() {
    let kinds = [
        FaultKind::DiskStall,
        FaultKind::DiskFsync,
        FaultKind::DiskTorn,
    ];
    support::assert_a_run_under_stays_valid(&kinds, 20_261_203);
}

/// A replica's data directory deleted under it (the leader or a random one), then the
/// replica started on the empty directory, added at its new incarnation and promoted while
/// the clients run: no violation, no lost write, no crash, and every replica's digests
/// agree at the end. Before a replica without state stopped answering Prepare and Accept,
/// this lost acknowledged writes.
#[test]
fn a_replica_that_loses_its_disk_is_readmitted_and_nothing_acknowledged_is_lost() {
    let kinds = [FaultKind::DiskLoss];
    let report = support::assert_a_valid_run(30, 3, &kinds, &kinds, 20_261_207);
    assert!(
        report.faults_by_kind["disk-loss"] >= 2,
        "{}",
        report.summary()
    );
    assert_eq!(report.divergence.len(), 3, "{}", report.summary());
}
