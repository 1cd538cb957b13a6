//! Lossy and reordering peer links: frames dropped or held back behind the next one on
//! connections that stay open, on every link to and from one replica at a time.
mod support;

use paxkv_chaos::nemesis::FaultKind;

/// 25 s of every workload under `link-lossy` and `link-reorder`, in turn, on the leader or
/// a random replica: at least one fault of each kind, frames really dropped and held back,
/// and no violation, no lost write, no crash, every checker valid.
#[test]
fn lossy_and_reordering_links_leave_no_violation_and_lose_no_acknowledged_write() {
    let report = support::assert_a_run_under_stays_valid(&FaultKind::LINK, 20_261_205);
    let summary = report.summary();
    assert!(report.links.dropped >= 10, "{summary}");
    assert!(report.links.reordered >= 10, "{summary}");
    assert_eq!(report.links.oversized, 0, "{summary}");
}
