//! Watches: each watcher long-polls one key range, resuming from the `next_version` of its
//! last successful poll (also after a failed poll or a reconnect to another replica). Its
//! stream of events, all polls joined, must:
//!
//! - resume exactly where the previous successful poll ended (no skipped window);
//! - keep each poll's events within `[from_version, next_version)`;
//! - have strictly increasing versions (no duplicates, no reordering);
//! - contain every acknowledged register write to the range whose version lies in the
//!   window it covered, with that write's key and value (no gaps);
//! - contain nothing that no write produced (no phantoms): an event at an acknowledged
//!   write's version must be that write, and any other must match a write whose outcome is
//!   unknown.
//!
//! The writes come from the register workload's `Write` and successful `Cas` operations.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Verdict;
use crate::history::{Call, Operation, Outcome, Reply, WatchedEvent};

/// Problems listed per watcher, at most.
const PROBLEMS_LISTED_MAX: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherResult {
    pub watcher: u32,
    pub verdict: Verdict,
    pub polls_ok: usize,
    pub polls_failed: usize,
    pub events: usize,
    /// The window of versions the stream covered: `[from, to)`.
    pub from_version: i64,
    pub to_version: i64,
    /// Acknowledged writes in the window that the stream must contain.
    pub writes_expected: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub phantoms: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResult {
    pub verdict: Verdict,
    pub watchers: Vec<WatcherResult>,
}

/// A register write as the watch checker sees it.
#[derive(Clone, Debug)]
struct Write {
    key: String,
    value: i64,
    /// `None` when its outcome is unknown.
    version: Option<i64>,
}

pub fn check(operations: &[Operation]) -> WatchResult {
    let writes = collect_writes(operations);
    let mut polls: BTreeMap<u32, Vec<&Operation>> = BTreeMap::new();
    for operation in operations {
        if let Call::Watch { watcher, .. } = operation.call {
            polls.entry(watcher).or_default().push(operation);
        }
    }
    let watchers: Vec<WatcherResult> = (polls.into_iter())
        .map(|(watcher, polls)| check_watcher(watcher, &polls, &writes))
        .collect();
    let nothing = Verdict::Unknown("no watch polls".into());
    let start = if watchers.is_empty() {
        nothing
    } else {
        Verdict::Valid
    };
    let verdict = watchers.iter().fold(start, |worst, w| {
        let labelled = match &w.verdict {
            Verdict::Valid => Verdict::Valid,
            Verdict::Violation(why) => Verdict::Violation(format!("watcher {}: {why}", w.watcher)),
            Verdict::Unknown(why) => Verdict::Unknown(format!("watcher {}: {why}", w.watcher)),
        };
        worst.worst(labelled)
    });
    WatchResult { verdict, watchers }
}

fn collect_writes(operations: &[Operation]) -> Vec<Write> {
    let mut writes = Vec::new();
    for operation in operations {
        let (key, value) = match &operation.call {
            Call::Write { key, value } => (key, *value),
            Call::Cas { key, to, .. } => (key, *to),
            _ => continue,
        };
        let version = match &operation.outcome {
            Outcome::Fail(_) => continue,
            Outcome::Ok(Reply::Cas {
                succeeded: false, ..
            }) => continue,
            Outcome::Ok(Reply::Cas { version, .. }) | Outcome::Ok(Reply::Written { version }) => {
                Some(*version)
            }
            Outcome::Ok(_) | Outcome::Unknown(_) => None,
        };
        writes.push(Write {
            key: key.clone(),
            value,
            version,
        });
    }
    writes
}

/// A watcher's stream, joined from its polls in order.
struct Stream<'a> {
    range: (String, String),
    from_version: i64,
    to_version: i64,
    events: Vec<&'a WatchedEvent>,
    polls_ok: usize,
    polls_failed: usize,
    problems: Vec<String>,
}

fn join_polls<'a>(polls: &[&'a Operation]) -> Option<Stream<'a>> {
    let Call::Watch {
        start_key,
        end_key,
        from_version,
        ..
    } = &polls.first()?.call
    else {
        return None;
    };
    let mut stream = Stream {
        range: (start_key.clone(), end_key.clone()),
        from_version: *from_version,
        to_version: *from_version,
        events: Vec::new(),
        polls_ok: 0,
        polls_failed: 0,
        problems: Vec::new(),
    };
    for poll in polls {
        let Call::Watch { from_version, .. } = poll.call else {
            continue;
        };
        let Some(Reply::Watched {
            events,
            next_version,
        }) = poll.reply()
        else {
            stream.polls_failed += 1;
            continue;
        };
        stream.polls_ok += 1;
        if from_version != stream.to_version {
            stream.problems.push(format!(
                "op {} resumed from {from_version}, not {}",
                poll.id, stream.to_version
            ));
        }
        for event in events {
            if event.version < from_version || event.version >= *next_version {
                stream.problems.push(format!(
                    "op {}: event at {} outside [{from_version}, {next_version})",
                    poll.id, event.version
                ));
            }
        }
        stream.events.extend(events.iter());
        stream.to_version = stream.to_version.max(*next_version);
    }
    Some(stream)
}

fn check_watcher(watcher: u32, polls: &[&Operation], writes: &[Write]) -> WatcherResult {
    let mut result = WatcherResult {
        watcher,
        verdict: Verdict::Valid,
        polls_ok: 0,
        polls_failed: 0,
        events: 0,
        from_version: 0,
        to_version: 0,
        writes_expected: 0,
        missing: 0,
        duplicates: 0,
        phantoms: 0,
        problems: Vec::new(),
    };
    let Some(stream) = join_polls(polls) else {
        result.verdict = Verdict::Unknown("no polls".into());
        return result;
    };
    result.polls_ok = stream.polls_ok;
    result.polls_failed = stream.polls_failed;
    result.events = stream.events.len();
    result.from_version = stream.from_version;
    result.to_version = stream.to_version;
    let mut problems = stream.problems.clone();
    let in_range: Vec<&Write> = (writes.iter())
        .filter(|w| {
            stream.range.0 <= w.key && (stream.range.1.is_empty() || w.key < stream.range.1)
        })
        .collect();
    result.duplicates = count_unordered(&stream, &mut problems);
    result.phantoms = count_phantoms(&stream, &in_range, &mut problems);
    let expected: Vec<&Write> = (in_range.iter().copied())
        .filter(|w| {
            w.version
                .is_some_and(|v| v >= stream.from_version && v < stream.to_version)
        })
        .collect();
    result.writes_expected = expected.len();
    let seen: BTreeMap<i64, &WatchedEvent> =
        stream.events.iter().map(|e| (e.version, *e)).collect();
    for write in expected {
        let version = write.version.expect("expected writes are acknowledged");
        if !seen.contains_key(&version) {
            result.missing += 1;
            problems.push(format!(
                "missing {}={} at {version}",
                write.key, write.value
            ));
        }
    }
    result.verdict = verdict_of(&result, &stream, &in_range, problems.len());
    problems.truncate(PROBLEMS_LISTED_MAX);
    result.problems = problems;
    result
}

fn count_unordered(stream: &Stream, problems: &mut Vec<String>) -> usize {
    let mut unordered = 0;
    for pair in stream.events.windows(2) {
        if pair[1].version <= pair[0].version {
            unordered += 1;
            problems.push(format!(
                "version {} after {}: repeated or out of order",
                pair[1].version, pair[0].version
            ));
        }
    }
    unordered
}

fn count_phantoms(stream: &Stream, writes: &[&Write], problems: &mut Vec<String>) -> usize {
    let by_version: BTreeMap<i64, &Write> = (writes.iter())
        .filter_map(|w| w.version.map(|v| (v, *w)))
        .collect();
    let mut phantoms = 0;
    for event in &stream.events {
        let matches = |w: &Write| Some(w.value) == event.value && w.key == event.key;
        let produced = match by_version.get(&event.version) {
            Some(write) => matches(write),
            None => writes.iter().any(|w| w.version.is_none() && matches(w)),
        };
        if !produced {
            phantoms += 1;
            problems.push(format!(
                "event {}={:?} at {} matches no write",
                event.key, event.value, event.version
            ));
        }
    }
    phantoms
}

fn verdict_of(
    result: &WatcherResult,
    stream: &Stream,
    writes: &[&Write],
    problems: usize,
) -> Verdict {
    if problems > 0 {
        return Verdict::Violation(format!(
            "{problems} problems: {} missing, {} repeated or out of order, {} phantoms",
            result.missing, result.duplicates, result.phantoms
        ));
    }
    let last_acknowledged = writes.iter().filter_map(|w| w.version).max().unwrap_or(0);
    if last_acknowledged >= stream.to_version {
        return Verdict::Unknown(format!(
            "the stream ends at {} but writes were acknowledged up to {last_acknowledged}",
            stream.to_version
        ));
    }
    Verdict::Valid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use crate::history::{Event, History};

    fn poll(from_version: i64) -> Call {
        Call::Watch {
            watcher: 0,
            start_key: "reg/".into(),
            end_key: "reg0".into(),
            from_version,
        }
    }
    fn event(key: &str, value: i64, version: i64) -> WatchedEvent {
        WatchedEvent {
            key: key.into(),
            value: Some(value),
            version,
        }
    }
    fn watched(events: Vec<WatchedEvent>, next_version: i64) -> Reply {
        Reply::Watched {
            events,
            next_version,
        }
    }

    /// Writes reg/a=1 at version 5 and reg/b=2 at 7 (acknowledged), reg/a=3 (unknown), and
    /// other/x=4 at 6 (outside the range).
    fn writes() -> Vec<Event> {
        vec![
            invoke(1, 0, write("reg/a", 1)),
            ok(1, 1, write("reg/a", 1), Reply::Written { version: 5 }),
            invoke(1, 2, write("other/x", 4)),
            ok(1, 3, write("other/x", 4), Reply::Written { version: 6 }),
            invoke(1, 4, write("reg/b", 2)),
            ok(1, 5, write("reg/b", 2), Reply::Written { version: 7 }),
            invoke(2, 6, write("reg/a", 3)),
            info(2, 7, write("reg/a", 3)),
        ]
    }

    fn run(polls: Vec<Event>) -> WatchResult {
        let mut events = writes();
        events.extend(polls);
        check(&History { events }.operations().unwrap())
    }

    #[test]
    fn a_stream_resumed_across_a_failed_poll_with_every_write_is_valid() {
        let result = run(vec![
            invoke(9, 10, poll(1)),
            ok(9, 11, poll(1), watched(vec![event("reg/a", 1, 5)], 6)),
            invoke(9, 12, poll(6)),
            info(9, 13, poll(6)),
            invoke(10, 14, poll(6)),
            ok(
                10,
                15,
                poll(6),
                watched(vec![event("reg/b", 2, 7), event("reg/a", 3, 8)], 9),
            ),
        ]);
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
        let w = &result.watchers[0];
        assert_eq!((w.polls_ok, w.polls_failed, w.writes_expected), (2, 1, 2));
    }

    #[test]
    fn a_missing_acknowledged_write_is_a_gap() {
        let result = run(vec![
            invoke(9, 10, poll(1)),
            ok(9, 11, poll(1), watched(vec![event("reg/a", 1, 5)], 9)),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
        assert_eq!(result.watchers[0].missing, 1);
    }

    #[test]
    fn a_resume_that_skips_a_window_is_a_violation() {
        let result = run(vec![
            invoke(9, 10, poll(1)),
            ok(9, 11, poll(1), watched(vec![event("reg/a", 1, 5)], 6)),
            invoke(9, 12, poll(8)),
            ok(9, 13, poll(8), watched(vec![], 9)),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
        assert!(result.watchers[0].problems[0].contains("resumed from 8"));
    }

    #[test]
    fn a_repeated_event_is_a_violation() {
        let result = run(vec![
            invoke(9, 10, poll(1)),
            ok(9, 11, poll(1), watched(vec![event("reg/a", 1, 5)], 6)),
            invoke(9, 12, poll(6)),
            ok(
                9,
                13,
                poll(6),
                watched(vec![event("reg/a", 1, 5), event("reg/b", 2, 7)], 8),
            ),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
        assert!(result.watchers[0].duplicates >= 1);
    }

    #[test]
    fn an_event_no_write_produced_is_a_phantom() {
        let result = run(vec![
            invoke(9, 10, poll(1)),
            ok(
                9,
                11,
                poll(1),
                watched(
                    vec![
                        event("reg/a", 1, 5),
                        event("reg/b", 99, 7),
                        event("reg/c", 1, 8),
                    ],
                    9,
                ),
            ),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
        assert_eq!(result.watchers[0].phantoms, 2);
    }

    #[test]
    fn a_stream_that_stops_short_of_the_writes_is_unknown() {
        let result = run(vec![
            invoke(9, 10, poll(1)),
            ok(9, 11, poll(1), watched(vec![event("reg/a", 1, 5)], 6)),
        ]);
        assert!(matches!(result.verdict, Verdict::Unknown(_)), "{result:?}");
    }
}
