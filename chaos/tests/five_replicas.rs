//! A 5-replica cluster under every fault, two replicas faulty at once at times.
mod support;

use paxkv_chaos::nemesis::FaultKind;

/// 30 s of every workload on 5 replicas with `--nemesis all`: the nemesis runs faults on
/// up to two distinct replicas at once, each healed on its own schedule. There must be a
/// moment with two faults in progress, never more than two, and no violation, no lost
/// write, no crash, every checker valid.
#[test]
fn five_replicas_with_two_faults_at_once_leave_no_violation() {
    let report = support::assert_a_valid_run(30, 5, &FaultKind::IMPLEMENTED, &[], 20_261_206);
    let summary = report.summary();
    assert_eq!(report.concurrent_faults_max, 2, "{summary}");
    assert!(report.concurrent_faults_ms > 0.0, "{summary}");
    // Every fault's replicas are distinct from those of any fault overlapping it.
    for (i, a) in report.faults.iter().enumerate() {
        for b in &report.faults[i + 1..] {
            if a.start_ms < b.end_ms && b.start_ms < a.end_ms {
                assert!(
                    a.nodes.iter().all(|n| !b.nodes.contains(n)),
                    "{a:?} and {b:?} overlap on a replica"
                );
            }
        }
    }
}
