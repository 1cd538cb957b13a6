//! The verdicts of every checker on one history, and the report of a run: operations by
//! outcome, faults, windows without any successful call, and the problems found.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::check::bank::{self, BankResult};
use crate::check::linearizable::{self, RegisterResult};
use crate::check::set::{self, SetResult};
use crate::check::watch::{self, WatchResult};
use crate::check::Verdict;
use crate::cluster::DivergenceReading;
use crate::error::{ChaosError, Result};
use crate::history::{Call, History, Operation, Outcome};
use crate::nemesis::{Crash, Fault, FaultKind, NemesisLog};
use crate::proxy::LinkCounts;

/// A stretch longer than this with no successful call counts as unavailable.
pub const UNAVAILABLE_GAP_MS_MIN: f64 = 1_000.0;
/// What the workload writes down when the server returns a value it never wrote.
const UNPARSABLE: &str = "unparsable value";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    pub registers: RegisterResult,
    pub bank: BankResult,
    pub set: SetResult,
    pub watch: WatchResult,
    /// The documents workload, checked as a set (`check::set::check_documents`).
    #[serde(default = "no_documents")]
    pub documents: SetResult,
    /// The publish workload, checked as a set and for change sets seen in part.
    #[serde(default = "no_publish")]
    pub publish: SetResult,
}

/// A history saved before the publish workload existed has none to check.
fn no_publish() -> SetResult {
    set::check_publish(&[])
}

/// A history saved before the documents workload existed has none to check.
fn no_documents() -> SetResult {
    set::check_documents(&[])
}

impl Checks {
    pub fn run(operations: &[Operation], search_steps_max: u64) -> Checks {
        Checks {
            registers: linearizable::check(operations, search_steps_max),
            bank: bank::check(operations),
            set: set::check(operations),
            watch: watch::check(operations),
            documents: set::check_documents(operations),
            publish: set::check_publish(operations),
        }
    }

    pub fn verdicts(&self) -> [(&'static str, &Verdict); 6] {
        [
            ("registers (linearizable)", &self.registers.verdict),
            ("bank", &self.bank.verdict),
            ("set", &self.set.verdict),
            ("watch", &self.watch.verdict),
            ("documents", &self.documents.verdict),
            ("publish", &self.publish.verdict),
        ]
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub from_ms: f64,
    pub to_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The run's settings; absent when checking a saved history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
    /// `total`, and one entry per workload.
    pub ops: BTreeMap<String, Counts>,
    /// In the order they started; with 5 replicas two may overlap.
    pub faults: Vec<Fault>,
    pub faults_by_kind: BTreeMap<String, usize>,
    /// The most faults in progress at one moment.
    #[serde(default)]
    pub concurrent_faults_max: usize,
    /// How long two or more faults were in progress at once, in all.
    #[serde(default)]
    pub concurrent_faults_ms: f64,
    pub crashes: Vec<Crash>,
    /// Frames the peer link proxies forwarded, dropped and held back.
    #[serde(default)]
    pub links: LinkCounts,
    /// Each running replica's divergence gauges at the end (none when checking a saved
    /// history): a replica that diverged, or names a peer that did, is a violation.
    #[serde(default)]
    pub divergence: Vec<DivergenceReading>,
    pub unavailable: Vec<Window>,
    /// The longest time between two successful calls (watch polls left out).
    pub longest_gap_ms: f64,
    /// The writes in flight when a leader was killed, and how soon they were answered.
    #[serde(default)]
    pub leader_kills: LeaderKills,
    pub unparsable_replies: usize,
    pub checks: Checks,
    /// Acknowledged set adds missing from the final read.
    pub lost_writes: usize,
    pub violations: usize,
    /// Checkers that could not decide.
    pub unknown: usize,
    /// One line per violation (checker verdicts, crashes, divergence, unparsable replies).
    pub problems: Vec<String>,
}

/// Writes sent before a leader was killed with -9 and not answered by then: how long after
/// the kill their answers came (an acknowledgement or a definite refusal), and how many
/// ended unknown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaderKills {
    pub kills: usize,
    pub in_flight: usize,
    /// Ended unknown because the client's connection was to the replica killed.
    pub connection_lost: usize,
    /// Ended unknown otherwise: a replica that lived on could not tell.
    pub unknown: usize,
    pub answered_p50_ms: f64,
    pub answered_p99_ms: f64,
    pub answered_max_ms: f64,
}

impl LeaderKills {
    fn new(operations: &[Operation], faults: &[Fault]) -> LeaderKills {
        let writes = |op: &&Operation| {
            matches!(
                op.call,
                Call::Write { .. }
                    | Call::Cas { .. }
                    | Call::Transfer { .. }
                    | Call::SetAdd { .. }
                    | Call::DocAdd { .. }
                    | Call::Publish { .. }
            )
        };
        let kills: Vec<f64> = (faults.iter())
            .filter(|fault| fault.kind == FaultKind::Kill && fault.was_leader)
            .map(|fault| fault.start_ms)
            .collect();
        let mut answered = Vec::new();
        let mut in_flight = 0;
        let mut unknown = 0;
        let mut connection_lost = 0;
        for op in operations.iter().filter(writes) {
            let invoke_ms = op.invoke_ns as f64 / 1e6;
            // Calls the run's end cut off say nothing about a kill.
            let Some(ended_ms) = op.ended_ns.map(|ns| ns as f64 / 1e6) else {
                continue;
            };
            let Some(kill) = (kills.iter()).find(|&&kill| invoke_ms < kill && ended_ms > kill)
            else {
                continue;
            };
            in_flight += 1;
            match &op.outcome {
                Outcome::Unknown(why) if why.starts_with("transport") => connection_lost += 1,
                Outcome::Unknown(_) => unknown += 1,
                _ => answered.push(ended_ms - kill),
            }
        }
        answered.sort_by(f64::total_cmp);
        let at = |p: f64| match answered.len() {
            0 => 0.0,
            n => answered[((n - 1) as f64 * p).round() as usize],
        };
        LeaderKills {
            kills: kills.len(),
            in_flight,
            connection_lost,
            unknown,
            answered_p50_ms: at(0.5),
            answered_p99_ms: at(0.99),
            answered_max_ms: answered.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub seed: u64,
    pub time_s: f64,
    pub nemesis: Vec<String>,
    pub out_dir: String,
    /// Known bugs switched on in the replicas (`--inject-bug`).
    #[serde(default)]
    pub injected_bugs: Vec<String>,
    #[serde(default = "replicas_default")]
    pub replicas: usize,
}

fn replicas_default() -> usize {
    crate::cluster::REPLICAS_DEFAULT
}

impl Report {
    pub fn new(
        history: &History,
        search_steps_max: u64,
        run: Option<RunInfo>,
        nemesis: NemesisLog,
    ) -> Result<Report> {
        let NemesisLog {
            faults,
            crashes,
            links,
            divergence,
        } = nemesis;
        let operations = history.operations()?;
        let checks = Checks::run(&operations, search_steps_max);
        let mut faults_by_kind = BTreeMap::new();
        for fault in &faults {
            *faults_by_kind
                .entry(fault.kind.name().to_string())
                .or_insert(0) += 1;
        }
        let unparsable_replies = (operations.iter())
            .filter(|op| matches!(&op.outcome, Outcome::Fail(why) if why.contains(UNPARSABLE)))
            .count();
        let mut problems: Vec<String> = (checks.verdicts().iter())
            .filter_map(|(name, verdict)| match verdict {
                Verdict::Violation(why) => Some(format!("{name}: {why}")),
                _ => None,
            })
            .collect();
        problems.extend(crashes.iter().map(|c| {
            format!(
                "replica {} crashed ({}) at {:.0} ms",
                c.node, c.status, c.at_ms
            )
        }));
        for reading in &divergence {
            let node = reading.node;
            if reading.detected {
                problems.push(format!("replica {node} found its applied state diverged"));
            }
            if reading.divergent_peers > 0.0 {
                let peers = reading.divergent_peers;
                problems.push(format!("replica {node} names {peers} divergent peers"));
            }
            if let Some(error) = &reading.error {
                problems.push(format!("replica {node}: divergence gauges unread: {error}"));
            }
        }
        if unparsable_replies > 0 {
            problems.push(format!(
                "{unparsable_replies} replies held values never written"
            ));
        }
        let unknown = (checks.verdicts().iter())
            .filter(|(_, v)| matches!(v, Verdict::Unknown(_)))
            .count();
        let (concurrent_faults_max, concurrent_faults_ms) = overlap(&faults);
        let leader_kills = LeaderKills::new(&operations, &faults);
        Ok(Report {
            run,
            ops: count_ops(&operations),
            faults,
            faults_by_kind,
            concurrent_faults_max,
            concurrent_faults_ms,
            crashes,
            links,
            divergence,
            unavailable: unavailable_windows(&operations, UNAVAILABLE_GAP_MS_MIN),
            longest_gap_ms: (unavailable_windows(&operations, 0.0).iter())
                .fold(0.0, |longest, w| f64::max(longest, w.to_ms - w.from_ms)),
            leader_kills,
            unparsable_replies,
            lost_writes: checks.set.lost + checks.documents.lost + checks.publish.lost,
            violations: problems.len(),
            unknown,
            problems,
            checks,
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| ChaosError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::write(path, text).map_err(|source| ChaosError::File {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if let Some(run) = &self.run {
            let nemesis = run.nemesis.join(",");
            let _ = writeln!(
                out,
                "run: {:.1} s, {} replicas, seed {}, nemesis [{nemesis}], output in {}",
                run.time_s, run.replicas, run.seed, run.out_dir
            );
            if !run.injected_bugs.is_empty() {
                let bugs = run.injected_bugs.join(",");
                let _ = writeln!(out, "injected bugs: [{bugs}] (a violation is expected)");
            }
        }
        for (name, c) in &self.ops {
            let _ = writeln!(
                out,
                "ops {name:>9}: {:>6} ok {:>5} fail {:>5} info",
                c.ok, c.fail, c.info
            );
        }
        self.write_faults(&mut out);
        self.write_availability(&mut out);
        self.write_checks(&mut out);
        out
    }

    fn write_faults(&self, out: &mut String) {
        if self.run.is_none() {
            return; // A saved history holds the clients' calls, not the faults.
        }
        let kinds: Vec<String> = (self.faults_by_kind.iter())
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        let leader = self.faults.iter().filter(|f| f.was_leader).count();
        let _ = writeln!(
            out,
            "faults: {} ({}; {leader} on the leader; at most {} at once, {:.0} ms with two \
             or more), crashes: {}",
            self.faults.len(),
            kinds.join(", "),
            self.concurrent_faults_max,
            self.concurrent_faults_ms,
            self.crashes.len()
        );
        let links = &self.links;
        if links.dropped + links.reordered + links.oversized > 0 {
            let _ = writeln!(
                out,
                "peer frames: {} through the proxies, {} dropped, {} held back behind the \
                 next, {} oversized (passed unparsed)",
                links.frames, links.dropped, links.reordered, links.oversized
            );
        }
    }

    fn write_availability(&self, out: &mut String) {
        let total_ms = (self.unavailable.iter()).fold(0.0, |sum, w| sum + w.to_ms - w.from_ms);
        let _ = writeln!(
            out,
            "unavailable (no successful call for over {UNAVAILABLE_GAP_MS_MIN:.0} ms): {} windows, \
             {total_ms:.0} ms in all; longest gap between successful calls {:.0} ms",
            self.unavailable.len(),
            self.longest_gap_ms
        );
        let kills = &self.leader_kills;
        if kills.kills > 0 {
            let _ = writeln!(
                out,
                "writes in flight at the {} kills of a leader: {}; answered after the kill in \
                 p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} lost their connection to the \
                 replica killed; {} unknown from the others",
                kills.kills,
                kills.in_flight,
                kills.answered_p50_ms,
                kills.answered_p99_ms,
                kills.answered_max_ms,
                kills.connection_lost,
                kills.unknown
            );
        }
    }

    fn write_checks(&self, out: &mut String) {
        for (name, verdict) in self.checks.verdicts() {
            let detail = match verdict {
                Verdict::Valid => String::new(),
                Verdict::Violation(why) | Verdict::Unknown(why) => format!(": {why}"),
            };
            let _ = writeln!(out, "check {name}: {}{detail}", verdict.label());
        }
        let _ = writeln!(
            out,
            "violations: {}, lost acknowledged writes: {}, undecided checks: {}",
            self.violations, self.lost_writes, self.unknown
        );
        if !self.divergence.is_empty() {
            let diverged = (self.divergence.iter()).filter(|r| r.detected).count();
            let naming = (self.divergence.iter())
                .filter(|r| r.divergent_peers > 0.0)
                .count();
            let _ = writeln!(
                out,
                "divergence: {} replicas read, {diverged} diverged, {naming} name a divergent peer",
                self.divergence.len()
            );
        }
        for problem in &self.problems {
            let _ = writeln!(out, "  {problem}");
        }
        for key in &self.checks.registers.keys {
            for line in &key.witness {
                let _ = writeln!(out, "  {}: {line}", key.key);
            }
        }
    }
}

fn workload_name(call: &Call) -> String {
    serde_json::to_value(call.workload())
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn count_ops(operations: &[Operation]) -> BTreeMap<String, Counts> {
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    for operation in operations {
        for name in ["total".to_string(), workload_name(&operation.call)] {
            let entry = counts.entry(name).or_default();
            match operation.outcome {
                Outcome::Ok(_) => entry.ok += 1,
                Outcome::Fail(_) => entry.fail += 1,
                Outcome::Unknown(_) => entry.info += 1,
            }
        }
    }
    counts
}

/// The most faults in progress at one moment, and how long two or more were, in ms. A fault
/// that ends at the moment another starts does not overlap it.
fn overlap(faults: &[Fault]) -> (usize, f64) {
    // Ends before starts at the same time.
    let mut edges: Vec<(f64, i32)> = (faults.iter())
        .flat_map(|f| [(f.start_ms, 1), (f.end_ms, -1)])
        .collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut current, mut most, mut overlapped, mut since) = (0i32, 0i32, 0.0, 0.0);
    for (at, step) in edges {
        if current >= 2 {
            overlapped += at - since;
        }
        current += step;
        most = most.max(current);
        since = at;
    }
    (usize::try_from(most).unwrap_or(0), overlapped)
}

/// Gaps longer than `gap_ms_min` between successful calls, from the first invoke. Watch
/// polls are left out: a replica serves them from its own log, without a leader, so they
/// say nothing about availability.
fn unavailable_windows(operations: &[Operation], gap_ms_min: f64) -> Vec<Window> {
    let counted = |op: &&Operation| !matches!(op.call, Call::Watch { .. });
    let Some(first) = operations
        .iter()
        .filter(counted)
        .map(|op| op.invoke_ns)
        .min()
    else {
        return Vec::new();
    };
    let mut done: Vec<u64> = (operations.iter().filter(counted))
        .filter(|op| op.is_ok())
        .filter_map(|op| op.complete_ns)
        .collect();
    done.sort_unstable();
    let mut windows = Vec::new();
    let mut last = first;
    for time in done {
        let (from_ms, to_ms) = (last as f64 / 1e6, time as f64 / 1e6);
        if to_ms - from_ms > gap_ms_min {
            windows.push(Window { from_ms, to_ms });
        }
        last = time;
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use crate::history::Reply;

    #[test]
    fn gaps_without_success_are_windows_and_violations_are_counted() {
        let read = Call::Read {
            key: "reg/0".into(),
        };
        let second = 2_500_000_000;
        let history = history(vec![
            invoke(1, 0, read.clone()),
            ok(1, 1_000, read.clone(), Reply::Read { value: None }),
            invoke(1, 2_000, read.clone()),
            ok(1, second, read.clone(), Reply::Read { value: Some(7) }),
        ]);
        let report = Report::new(&history, 1_000, None, NemesisLog::default()).unwrap();
        assert_eq!(report.unavailable.len(), 1);
        assert!(
            (report.longest_gap_ms - 2_499.998).abs() < 0.01,
            "{report:?}"
        );
        assert_eq!(report.ops["total"].ok, 2);
        assert_eq!(report.ops["register"].ok, 2);
        // Reading 7 that nobody wrote is a register violation.
        assert!(report.checks.registers.verdict.is_violation());
        assert!(report.violations >= 1, "{report:?}");
        assert!(report.summary().contains("VIOLATION"));
    }

    #[test]
    fn a_replica_that_diverged_or_names_one_that_did_is_a_violation() {
        let reading = |node, detected, divergent_peers, error: Option<&str>| DivergenceReading {
            node,
            detected,
            divergent_peers,
            error: error.map(str::to_string),
        };
        let clean = NemesisLog {
            divergence: vec![reading(1, false, 0.0, None), reading(2, false, 0.0, None)],
            ..NemesisLog::default()
        };
        let report = Report::new(&history(Vec::new()), 1_000, None, clean).unwrap();
        assert_eq!(report.violations, 0, "{report:?}");
        assert!(report
            .summary()
            .contains("divergence: 2 replicas read, 0 diverged, 0 name"));
        let diverged = NemesisLog {
            divergence: vec![
                reading(1, true, 0.0, None),
                reading(2, false, 1.0, None),
                reading(3, false, 0.0, Some("refused")),
            ],
            ..NemesisLog::default()
        };
        let report = Report::new(&history(Vec::new()), 1_000, None, diverged).unwrap();
        assert_eq!(report.violations, 3, "{report:?}");
        assert!(report.problems[0].contains("replica 1 found its applied state diverged"));
        assert!(report.problems[1].contains("replica 2 names 1 divergent peers"));
    }

    fn fault(start_ms: f64, end_ms: f64) -> Fault {
        Fault {
            kind: crate::nemesis::FaultKind::Pause,
            node: 1,
            nodes: vec![1],
            was_leader: false,
            start_ms,
            end_ms,
        }
    }

    #[test]
    fn overlapping_faults_are_counted_with_the_time_they_overlap() {
        assert_eq!(overlap(&[]), (0, 0.0));
        // One after the other, touching: never two at once.
        assert_eq!(overlap(&[fault(0.0, 10.0), fault(10.0, 20.0)]), (1, 0.0));
        // 5..10 two at once, 6..8 three.
        let faults = [fault(0.0, 10.0), fault(5.0, 20.0), fault(6.0, 8.0)];
        assert_eq!(overlap(&faults), (3, 5.0));
        // Order of the list does not matter, and it is in the report.
        let history = history(vec![]);
        let log = NemesisLog {
            faults: vec![fault(30.0, 40.0), fault(0.0, 35.0)],
            ..NemesisLog::default()
        };
        let report = Report::new(&history, 1_000, None, log).unwrap();
        assert_eq!(report.concurrent_faults_max, 2);
        assert_eq!(report.concurrent_faults_ms, 5.0);
    }
}
