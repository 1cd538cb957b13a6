//! What a run measured: counts, throughput, latency percentiles, errors by kind; printed as
//! one JSON object or as a human summary.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::ErrorKind;

/// Latencies are recorded in microseconds up to this (an hour); a slower call is clamped.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits the histogram keeps (0.1 % relative error).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram with the bounds every client uses, so they can be merged.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("the latency bounds are valid")
}

/// The errors of one kind: how many, and the first one's message (they tend to repeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorTally {
    pub count: u64,
    pub example: String,
}

/// Errors by kind. A BTreeMap, so the report lists kinds in a stable order.
pub type Errors = BTreeMap<ErrorKind, ErrorTally>;

/// Adds one error of `kind` to `errors`.
pub fn tally(errors: &mut Errors, kind: ErrorKind, message: &str) {
    errors
        .entry(kind)
        .or_insert_with(|| ErrorTally {
            count: 0,
            example: message.to_string(),
        })
        .count += 1;
}

/// Adds every count of `other` to `errors`.
pub fn merge_errors(errors: &mut Errors, other: Errors) {
    for (kind, tally) in other {
        let entry = errors.entry(kind).or_insert(ErrorTally {
            count: 0,
            example: tally.example,
        });
        entry.count += tally.count;
    }
}

/// The settings a report echoes, so a JSON line stands on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub target: String,
    pub workload: String,
    pub clients: usize,
    pub connections: usize,
    pub endpoints: Vec<String>,
    pub protocol: String,
    pub distribution: String,
    pub key_space: u64,
    pub value_size: usize,
}

/// The fields every `--json` report carries, whatever else it adds.
pub const REPORT_FIELDS: &[&str] = &[
    "ops_per_sec",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "errors",
    "ops",
    "workload",
    "clients",
    "target",
    "duration_s",
    "conflicts",
];

/// One run's result. `ops` counts operations that succeeded (a committed transaction, a
/// successful increment, a put, a read); `conflicts` those that ran to the end but lost a
/// race (a transaction's `Conflict`, a compare that no longer held); `errors` the rest.
/// Latencies are those of the successful operations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub info: RunInfo,
    /// Measured time (after the warm-up), in seconds.
    pub duration_s: f64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub conflicts: u64,
    pub errors: u64,
    pub errors_by_kind: Errors,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Operations finished over the whole load phase, warm-up included.
    pub load_ops: u64,
    /// CPU seconds the load generator used over the load phase: with `load_ops`, its own
    /// cost per operation, to tell apart from the server's.
    pub client_cpu_s: f64,
    /// doc-edit: bytes the log carried per measured edit, as the target reported them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logged_bytes_per_op: Option<f64>,
}

impl Report {
    pub fn new(
        info: RunInfo,
        duration_s: f64,
        latencies: &Histogram<u64>,
        conflicts: u64,
        errors_by_kind: Errors,
    ) -> Report {
        let ops = latencies.len();
        let at = |quantile: f64| {
            if ops == 0 {
                0
            } else {
                latencies.value_at_quantile(quantile)
            }
        };
        Report {
            info,
            duration_s,
            ops,
            ops_per_sec: if duration_s > 0.0 {
                ops as f64 / duration_s
            } else {
                0.0
            },
            conflicts,
            errors: errors_by_kind.values().map(|tally| tally.count).sum(),
            errors_by_kind,
            mean_us: if ops == 0 { 0.0 } else { latencies.mean() },
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: if ops == 0 { 0 } else { latencies.max() },
            load_ops: ops + conflicts,
            client_cpu_s: 0.0,
            logged_bytes_per_op: None,
        }
    }

    /// One JSON object carrying at least [`REPORT_FIELDS`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let info = &self.info;
        let mut text = String::new();
        if info.endpoints.is_empty() {
            let _ = writeln!(
                text,
                "{} {}: {} B per operation",
                info.target, info.workload, info.value_size
            );
        } else {
            let _ = writeln!(
                text,
                "{} {}: {} clients on {} connections to {}, {} keys ({}), values of {} B",
                info.target,
                info.workload,
                info.clients,
                info.connections,
                info.endpoints.join(","),
                info.key_space,
                info.distribution,
                info.value_size
            );
        }
        let _ = writeln!(
            text,
            "ops {} in {:.2}s: {:.0} ops/s; conflicts {}; errors {}",
            self.ops, self.duration_s, self.ops_per_sec, self.conflicts, self.errors
        );
        let _ = writeln!(
            text,
            "latency us: mean {:.0} p50 {} p90 {} p99 {} p999 {} max {}",
            self.mean_us, self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        );
        if let Some(logged) = self.logged_bytes_per_op {
            let _ = writeln!(text, "log bytes per operation: {logged:.0}");
        }
        for (kind, tally) in &self.errors_by_kind {
            let _ = writeln!(text, "  {kind}: {} (first: {})", tally.count, tally.example);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            target: "paxkv".into(),
            workload: "put".into(),
            clients: 4,
            connections: 4,
            endpoints: vec!["127.0.0.1:9091".into()],
            protocol: "binary".into(),
            distribution: "uniform".into(),
            key_space: 100,
            value_size: 256,
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut latencies = latency_histogram();
        for us in 1..=1_000 {
            latencies.record(us).unwrap();
        }
        let report = Report::new(info(), 2.0, &latencies, 0, Errors::new());
        assert_eq!(report.ops, 1_000);
        assert_eq!(report.ops_per_sec, 500.0);
        assert_eq!(report.p50_us, 500);
        assert_eq!(report.p90_us, 900);
        assert_eq!(report.p99_us, 990);
        assert_eq!(report.p999_us, 999);
        assert_eq!(report.max_us, 1_000);
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        let report = Report::new(info(), 0.0, &latency_histogram(), 0, Errors::new());
        assert_eq!(
            (report.ops, report.p50_us, report.max_us, report.ops_per_sec),
            (0, 0, 0, 0.0)
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let mut latencies = latency_histogram();
        latencies.record(250).unwrap();
        let mut errors = Errors::new();
        tally(&mut errors, ErrorKind::Unavailable, "no leader");
        tally(&mut errors, ErrorKind::Unavailable, "no leader again");
        tally(&mut errors, ErrorKind::LimitExceeded, "value_bytes_max");
        let report = Report::new(info(), 1.0, &latencies, 3, errors);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        for &field in REPORT_FIELDS {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
        assert_eq!(json["errors"], 3);
        assert_eq!(json["conflicts"], 3);
        assert_eq!(json["ops"], 1);
        assert_eq!(json["target"], "paxkv");
        assert_eq!(json["errors_by_kind"]["unavailable"]["count"], 2);
        assert_eq!(
            json["errors_by_kind"]["unavailable"]["example"],
            "no leader"
        );
        assert_eq!(json["errors_by_kind"]["limit_exceeded"]["count"], 1);
    }

    #[test]
    fn merging_errors_adds_counts_and_keeps_an_example() {
        let mut a = Errors::new();
        tally(&mut a, ErrorKind::Transport, "reset");
        let mut b = Errors::new();
        tally(&mut b, ErrorKind::Transport, "refused");
        tally(&mut b, ErrorKind::TooOld, "old");
        merge_errors(&mut a, b);
        assert_eq!(a[&ErrorKind::Transport].count, 2);
        assert_eq!(a[&ErrorKind::Transport].example, "reset");
        assert_eq!(a[&ErrorKind::TooOld].count, 1);
    }
}
