//! Append-only set: each add writes one element; reads return the whole set.
//!
//! - Lost writes: an acknowledged add missing from the final read (the last successful
//!   read, which must start after every add has finished or failed).
//! - Stale reads: reads are linearizable, so an add acknowledged before a read started must
//!   be in that read.
//! - Phantoms: an element in any read that no add ever tried to write, or whose add
//!   definitely failed.
//!
//! Adds with unknown outcome may be present or absent anywhere.
//!
//! The documents workload is checked the same way (`check_documents`): its adds append to
//! the `items` of JSON documents, its reads read every document in one snapshot. There an
//! element that appears twice is also a violation (`duplicates`): no add is
//! retried, so only an add applied twice, or a patch applied to the wrong base, repeats one.
//!
//! So is the publish workload (`check_publish`): each add is one change set that adds an
//! entry to each of several namespaces, published in one transaction; each read lists them
//! all at one version. There a read that shows a change set in some namespaces but not all
//! is also a violation (`torn`): a publish is all or nothing.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Verdict;
use crate::history::{Call, Operation, Outcome, Reply};

/// Elements listed per kind of problem, at most.
const ELEMENTS_LISTED_MAX: usize = 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetResult {
    pub verdict: Verdict,
    pub adds_ok: usize,
    pub adds_failed: usize,
    pub adds_unknown: usize,
    /// Unknown adds the final read shows: they took effect.
    pub unknown_present: usize,
    pub final_read_size: usize,
    pub lost: usize,
    pub stale_reads: usize,
    pub phantoms: usize,
    /// Reads that hold one element twice (documents only: set keys cannot repeat).
    #[serde(default)]
    pub duplicates: usize,
    /// Reads that show a change set in part (publish only).
    #[serde(default)]
    pub torn: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_elements: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phantom_elements: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witness: Vec<String>,
}

struct Add {
    outcome: AddOutcome,
    complete_ns: Option<u64>,
}

#[derive(PartialEq, Eq)]
enum AddOutcome {
    Ok,
    Failed,
    Unknown,
}

/// Which workload's adds and reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Set,
    Documents,
    Publish,
}

impl Kind {
    /// What a verdict calls this workload's reads.
    fn name(self) -> &'static str {
        match self {
            Kind::Set => "set",
            Kind::Documents => "documents",
            Kind::Publish => "publish",
        }
    }

    fn add(self, call: &Call) -> Option<u64> {
        match (self, call) {
            (Kind::Set, Call::SetAdd { element }) => Some(*element),
            (Kind::Documents, Call::DocAdd { element, .. }) => Some(*element),
            (Kind::Publish, Call::Publish { element }) => Some(*element),
            _ => None,
        }
    }

    fn read(self, operation: &Operation) -> Option<&Vec<u64>> {
        match (self, &operation.call, operation.reply()) {
            (Kind::Set, Call::SetRead, Some(Reply::Elements { elements })) => Some(elements),
            (Kind::Documents, Call::DocRead, Some(Reply::Elements { elements })) => Some(elements),
            (Kind::Publish, Call::PublishRead, Some(Reply::Published { elements, .. })) => {
                Some(elements)
            }
            _ => None,
        }
    }
}

pub fn check(operations: &[Operation]) -> SetResult {
    check_kind(operations, Kind::Set)
}

pub fn check_documents(operations: &[Operation]) -> SetResult {
    check_kind(operations, Kind::Documents)
}

pub fn check_publish(operations: &[Operation]) -> SetResult {
    let mut result = check_kind(operations, Kind::Publish);
    for operation in operations {
        let Some(Reply::Published { partial, .. }) = operation.reply() else {
            continue;
        };
        if let Some(element) = partial.first() {
            result.torn += 1;
            if result.witness.len() < ELEMENTS_LISTED_MAX {
                result.witness.push(format!(
                    "read op {} shows the change set of {element} in part",
                    operation.id
                ));
            }
        }
    }
    result.verdict = result.verdict.clone().worst(summary(&result));
    result
}

fn check_kind(operations: &[Operation], kind: Kind) -> SetResult {
    let adds = collect_adds(operations, kind);
    let reads: Vec<(&Operation, &Vec<u64>)> = (operations.iter())
        .filter_map(|op| kind.read(op).map(|elements| (op, elements)))
        .collect();
    let count = |outcome: AddOutcome| adds.values().filter(|a| a.outcome == outcome).count();
    let mut result = SetResult {
        verdict: Verdict::Valid,
        adds_ok: count(AddOutcome::Ok),
        adds_failed: count(AddOutcome::Failed),
        adds_unknown: count(AddOutcome::Unknown),
        unknown_present: 0,
        final_read_size: 0,
        lost: 0,
        stale_reads: 0,
        phantoms: 0,
        duplicates: 0,
        torn: 0,
        lost_elements: Vec::new(),
        phantom_elements: Vec::new(),
        witness: Vec::new(),
    };
    check_phantoms_and_staleness(&adds, &reads, &mut result);
    check_final_read(operations, kind, &adds, &reads, &mut result);
    result.verdict = result.verdict.clone().worst(summary(&result));
    result
}

fn collect_adds(operations: &[Operation], kind: Kind) -> BTreeMap<u64, Add> {
    let mut adds = BTreeMap::new();
    for operation in operations {
        let Some(element) = kind.add(&operation.call) else {
            continue;
        };
        let outcome = match operation.outcome {
            Outcome::Ok(_) => AddOutcome::Ok,
            Outcome::Fail(_) => AddOutcome::Failed,
            Outcome::Unknown(_) => AddOutcome::Unknown,
        };
        let complete_ns = operation.complete_ns;
        adds.insert(
            element,
            Add {
                outcome,
                complete_ns,
            },
        );
    }
    adds
}

fn check_phantoms_and_staleness(
    adds: &BTreeMap<u64, Add>,
    reads: &[(&Operation, &Vec<u64>)],
    result: &mut SetResult,
) {
    let mut phantoms = BTreeSet::new();
    for (read, elements) in reads {
        let present: BTreeSet<u64> = elements.iter().copied().collect();
        if present.len() < elements.len() {
            // One element twice: the set workload's keys cannot repeat, a document's can.
            let mut seen = BTreeSet::new();
            let twice = elements.iter().find(|element| !seen.insert(**element));
            if let Some(&element) = twice {
                result.duplicates += 1;
                if result.witness.len() < ELEMENTS_LISTED_MAX {
                    result
                        .witness
                        .push(format!("read op {} holds {element} twice", read.id));
                }
            }
        }
        for element in &present {
            let never = adds
                .get(element)
                .is_none_or(|a| a.outcome == AddOutcome::Failed);
            if never {
                phantoms.insert(*element);
            }
        }
        let missing = adds.iter().find(|(element, add)| {
            add.outcome == AddOutcome::Ok
                && add.complete_ns.is_some_and(|done| done < read.invoke_ns)
                && !present.contains(element)
        });
        if let Some((element, _)) = missing {
            result.stale_reads += 1;
            if result.witness.len() < ELEMENTS_LISTED_MAX {
                result.witness.push(format!(
                    "read op {} misses {element}, acknowledged before it started",
                    read.id
                ));
            }
        }
    }
    result.phantoms = phantoms.len();
    result.phantom_elements = phantoms.into_iter().take(ELEMENTS_LISTED_MAX).collect();
}

fn check_final_read(
    operations: &[Operation],
    kind: Kind,
    adds: &BTreeMap<u64, Add>,
    reads: &[(&Operation, &Vec<u64>)],
    result: &mut SetResult,
) {
    let Some((last, elements)) = reads.last() else {
        result.verdict = Verdict::Unknown(format!("no successful {} read", kind.name()));
        return;
    };
    let adds_end = (operations.iter())
        .filter(|op| kind.add(&op.call).is_some())
        .filter_map(|op| op.complete_ns)
        .max()
        .unwrap_or(0);
    if last.invoke_ns < adds_end {
        result.verdict = Verdict::Unknown(format!(
            "the last {} read started before every add had finished",
            kind.name()
        ));
        return;
    }
    let present: BTreeSet<u64> = elements.iter().copied().collect();
    result.final_read_size = present.len();
    let lost: Vec<u64> = (adds.iter())
        .filter(|(element, add)| add.outcome == AddOutcome::Ok && !present.contains(element))
        .map(|(element, _)| *element)
        .collect();
    result.lost = lost.len();
    result.lost_elements = lost.into_iter().take(ELEMENTS_LISTED_MAX).collect();
    result.unknown_present = (adds.iter())
        .filter(|(element, add)| add.outcome == AddOutcome::Unknown && present.contains(element))
        .count();
}

fn summary(result: &SetResult) -> Verdict {
    let mut problems = Vec::new();
    if result.lost > 0 {
        problems.push(format!("{} acknowledged adds lost", result.lost));
    }
    if result.stale_reads > 0 {
        problems.push(format!("{} stale reads", result.stale_reads));
    }
    if result.phantoms > 0 {
        problems.push(format!("{} elements never added", result.phantoms));
    }
    if result.duplicates > 0 {
        problems.push(format!("{} reads hold an element twice", result.duplicates));
    }
    if result.torn > 0 {
        problems.push(format!("{} reads show a change set in part", result.torn));
    }
    match problems.is_empty() {
        true => Verdict::Valid,
        false => Verdict::Violation(problems.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use crate::history::{Event, History};

    fn add(element: u64) -> Call {
        Call::SetAdd { element }
    }
    fn added() -> Reply {
        Reply::Written { version: 1 }
    }
    fn elements(elements: &[u64]) -> Reply {
        Reply::Elements {
            elements: elements.to_vec(),
        }
    }

    /// Adds 1 (ok), 2 (failed), 3 (unknown), then a final read of `final_read`.
    fn history_with_final(final_read: &[u64]) -> Vec<Event> {
        vec![
            invoke(1, 0, add(1)),
            ok(1, 1, add(1), added()),
            invoke(1, 2, add(2)),
            fail(1, 3, add(2)),
            invoke(1, 4, add(3)),
            info(1, 5, add(3)),
            invoke(2, 10, Call::SetRead),
            ok(2, 11, Call::SetRead, elements(final_read)),
        ]
    }

    fn run(events: Vec<Event>) -> SetResult {
        check(&History { events }.operations().unwrap())
    }

    #[test]
    fn unknown_adds_may_be_present_or_absent() {
        for final_read in [&[1][..], &[1, 3]] {
            let result = run(history_with_final(final_read));
            assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
            assert_eq!(result.lost, 0);
        }
        assert_eq!(run(history_with_final(&[1, 3])).unknown_present, 1);
    }

    #[test]
    fn an_acknowledged_add_missing_from_the_final_read_is_lost() {
        let result = run(history_with_final(&[3]));
        assert!(result.verdict.is_violation(), "{result:?}");
        assert_eq!(result.lost, 1);
        assert_eq!(result.lost_elements, vec![1]);
    }

    #[test]
    fn a_failed_or_never_added_element_in_a_read_is_a_phantom() {
        let result = run(history_with_final(&[1, 2, 9]));
        assert!(result.verdict.is_violation(), "{result:?}");
        assert_eq!(result.phantom_elements, vec![2, 9]);
    }

    #[test]
    fn a_read_missing_an_earlier_acknowledged_add_is_stale() {
        let mut events = vec![
            invoke(1, 0, add(1)),
            ok(1, 1, add(1), added()),
            invoke(2, 2, Call::SetRead),
            ok(2, 3, Call::SetRead, elements(&[])),
        ];
        events.extend([
            invoke(2, 4, Call::SetRead),
            ok(2, 5, Call::SetRead, elements(&[1])),
        ]);
        let result = run(events);
        assert!(result.verdict.is_violation(), "{result:?}");
        assert_eq!((result.stale_reads, result.lost), (1, 0));
    }

    #[test]
    fn a_read_concurrent_with_an_add_may_miss_it() {
        let events = vec![
            invoke(1, 0, add(1)),
            invoke(2, 1, Call::SetRead),
            ok(2, 2, Call::SetRead, elements(&[])),
            ok(1, 3, add(1), added()),
            invoke(2, 4, Call::SetRead),
            ok(2, 5, Call::SetRead, elements(&[1])),
        ];
        assert_eq!(run(events).verdict, Verdict::Valid);
    }

    #[test]
    fn a_publish_read_showing_a_change_set_in_part_is_torn() {
        let publish = Call::Publish { element: 7 };
        let read = |elements: &[u64], partial: &[u64]| Reply::Published {
            elements: elements.to_vec(),
            partial: partial.to_vec(),
        };
        let events = |middle: Reply| {
            vec![
                invoke(1, 0, publish.clone()),
                invoke(2, 1, Call::PublishRead),
                ok(2, 2, Call::PublishRead, middle),
                ok(1, 3, publish.clone(), added()),
                invoke(2, 4, Call::PublishRead),
                ok(2, 5, Call::PublishRead, read(&[7], &[])),
            ]
        };
        let check = |events| check_publish(&History { events }.operations().unwrap());
        assert_eq!(check(events(read(&[], &[]))).verdict, Verdict::Valid);
        let torn = check(events(read(&[], &[7])));
        assert!(torn.verdict.is_violation(), "{torn:?}");
        assert_eq!(torn.torn, 1);
        // And an acknowledged publish missing at the end is lost, as in the set.
        let mut lost = events(read(&[], &[]));
        lost[5] = ok(2, 5, Call::PublishRead, read(&[], &[]));
        assert_eq!(check(lost).lost, 1);
    }

    #[test]
    fn without_a_final_read_after_the_adds_the_verdict_is_unknown() {
        let events = vec![
            invoke(2, 0, Call::SetRead),
            invoke(1, 1, add(1)),
            ok(2, 2, Call::SetRead, elements(&[])),
            ok(1, 3, add(1), added()),
        ];
        assert!(matches!(run(events).verdict, Verdict::Unknown(_)));
    }
}
