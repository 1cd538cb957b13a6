//! Linearizability of registers (read, write, compare-and-set), each key checked on its own.
//!
//! The search is Wing and Gong's, with Lowe's memoization, as Porcupine implements it: walk
//! a list of call and return entries in time order; at a call, try to linearize that
//! operation now (apply it to the model state) unless the pair (set of linearized
//! operations, state) was already explored; at a return whose operation is not yet
//! linearized, undo the most recent choice. The history is linearizable when every entry
//! has been consumed, and not when a return is reached with nothing left to undo.
//!
//! Outcomes: a failed operation did not happen and is left out. An operation with an
//! unknown outcome may take effect at any point after its invoke, or not at all: its return
//! is placed at +infinity, so it never forces the search. An unknown read constrains
//! nothing and is left out.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{describe, Verdict};
use crate::history::{Call, Operation, Outcome, Reply};

/// Search steps per key before giving up with `Unknown`.
pub const SEARCH_STEPS_MAX: u64 = 20_000_000;
/// Operations listed in a violation's witness, at most.
const WITNESS_OPS_MAX: usize = 12;

/// A register operation reduced to what the model needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    /// A read that returned this value (`None`: the key was absent).
    Read(Option<i64>),
    Write(i64),
    /// `succeeded` is `None` when the outcome is unknown: it may have held or not.
    Cas {
        from: i64,
        to: i64,
        succeeded: Option<bool>,
    },
}

/// The register model: the state after applying `input` to `state`, or `None` if `input`
/// cannot have happened in `state`.
fn step(state: Option<i64>, input: Input) -> Option<Option<i64>> {
    match input {
        Input::Read(value) => (value == state).then_some(state),
        Input::Write(value) => Some(Some(value)),
        Input::Cas {
            from,
            to,
            succeeded,
        } => {
            let holds = state == Some(from);
            match succeeded {
                Some(succeeded) if succeeded != holds => None,
                _ if holds => Some(Some(to)),
                _ => Some(state),
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyResult {
    pub key: String,
    pub operations: usize,
    pub steps: u64,
    pub verdict: Verdict,
    /// On a violation: the operations involved (the one that could not be placed, the last
    /// ones placed before it, and those concurrent with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witness: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResult {
    pub verdict: Verdict,
    pub keys: Vec<KeyResult>,
}

/// Checks every key's register operations with a budget of `steps_max` search steps each.
pub fn check(operations: &[Operation], steps_max: u64) -> RegisterResult {
    let mut by_key: BTreeMap<String, Vec<&Operation>> = BTreeMap::new();
    for operation in operations {
        if let Some(key) = register_key(&operation.call) {
            by_key.entry(key.to_string()).or_default().push(operation);
        }
    }
    let keys: Vec<KeyResult> = (by_key.into_iter())
        .map(|(key, ops)| check_key(key, &ops, steps_max))
        .collect();
    let nothing = Verdict::Unknown("no register operations".into());
    let start = if keys.is_empty() {
        nothing
    } else {
        Verdict::Valid
    };
    let verdict = keys.iter().fold(start, |worst, key| {
        let labelled = match &key.verdict {
            Verdict::Valid => Verdict::Valid,
            Verdict::Violation(why) => Verdict::Violation(format!("key {}: {why}", key.key)),
            Verdict::Unknown(why) => Verdict::Unknown(format!("key {}: {why}", key.key)),
        };
        worst.worst(labelled)
    });
    RegisterResult { verdict, keys }
}

fn register_key(call: &Call) -> Option<&str> {
    match call {
        Call::Read { key } | Call::Write { key, .. } | Call::Cas { key, .. } => Some(key),
        _ => None,
    }
}

/// The model input of an operation, or `None` when it is left out of the search.
fn input(operation: &Operation) -> Option<Input> {
    let reply = match &operation.outcome {
        Outcome::Fail(_) => return None,
        Outcome::Unknown(_) => None,
        Outcome::Ok(reply) => Some(reply),
    };
    match (&operation.call, reply) {
        (Call::Read { .. }, Some(Reply::Read { value })) => Some(Input::Read(*value)),
        (Call::Read { .. }, _) => None,
        (Call::Write { value, .. }, _) => Some(Input::Write(*value)),
        (Call::Cas { from, to, .. }, reply) => Some(Input::Cas {
            from: *from,
            to: *to,
            succeeded: match reply {
                Some(Reply::Cas { succeeded, .. }) => Some(*succeeded),
                _ => None,
            },
        }),
        _ => None,
    }
}

fn check_key(key: String, operations: &[&Operation], steps_max: u64) -> KeyResult {
    let included: Vec<(&Operation, Input)> = (operations.iter())
        .filter_map(|op| input(op).map(|input| (*op, input)))
        .collect();
    let mut search = Search::new(&included);
    let outcome = search.run(steps_max);
    let (verdict, witness) = match outcome {
        SearchOutcome::Linearizable => (Verdict::Valid, Vec::new()),
        SearchOutcome::BudgetSpent => (
            Verdict::Unknown(format!("search budget of {steps_max} steps spent")),
            Vec::new(),
        ),
        SearchOutcome::NotLinearizable => search.witness(&included),
    };
    KeyResult {
        key,
        operations: included.len(),
        steps: search.steps,
        verdict,
        witness,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SearchOutcome {
    Linearizable,
    NotLinearizable,
    BudgetSpent,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    op: usize,
    is_call: bool,
}

/// Which operations are linearized, one bit each.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(bits: usize) -> Bitset {
        Bitset(vec![0; bits.div_ceil(64)])
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }
}

/// The deepest point the search reached before it had to undo: the evidence of a
/// violation.
#[derive(Clone, Debug, Default)]
struct Deepest {
    linearized: Vec<usize>,
    blocked: usize,
    state: Option<i64>,
}

/// The entry list is doubly linked over indices; index `head` is the sentinel.
struct Search {
    entries: Vec<Entry>,
    inputs: Vec<Input>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Index of each operation's return entry.
    return_of: Vec<usize>,
    head: usize,
    steps: u64,
    deepest: Deepest,
}

impl Search {
    fn new(operations: &[(&Operation, Input)]) -> Search {
        // (time, call before return at equal times, op): calls first is the permissive tie.
        let mut timed: Vec<(u64, u8, usize)> = Vec::with_capacity(operations.len() * 2);
        for (op, (operation, _)) in operations.iter().enumerate() {
            timed.push((operation.invoke_ns, 0, op));
            timed.push((operation.complete_ns.unwrap_or(u64::MAX), 1, op));
        }
        timed.sort_unstable();
        let entries: Vec<Entry> = (timed.iter())
            .map(|&(_, kind, op)| Entry {
                op,
                is_call: kind == 0,
            })
            .collect();
        let head = entries.len();
        let mut return_of = vec![0; operations.len()];
        for (index, entry) in entries.iter().enumerate() {
            if !entry.is_call {
                return_of[entry.op] = index;
            }
        }
        let count = entries.len() + 1;
        Search {
            next: (0..count).map(|i| (i + 1) % count).collect(),
            prev: (0..count).map(|i| (i + count - 1) % count).collect(),
            inputs: operations.iter().map(|(_, input)| *input).collect(),
            entries,
            return_of,
            head,
            steps: 0,
            deepest: Deepest::default(),
        }
    }

    fn unlink(&mut self, index: usize) {
        let (prev, next) = (self.prev[index], self.next[index]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Undoes `unlink(index)`; valid in the reverse order of the unlinks.
    fn relink(&mut self, index: usize) {
        let (prev, next) = (self.prev[index], self.next[index]);
        self.next[prev] = index;
        self.prev[next] = index;
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.return_of[self.entries[call].op]);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.return_of[self.entries[call].op]);
        self.relink(call);
    }

    // The memo only answers membership; its iteration order is never observed.
    #[allow(clippy::disallowed_types)]
    fn run(&mut self, steps_max: u64) -> SearchOutcome {
        let mut explored: std::collections::HashSet<(Bitset, Option<i64>)> = Default::default();
        let mut linearized = Bitset::new(self.inputs.len());
        let mut stack: Vec<(usize, Option<i64>)> = Vec::new();
        let mut state: Option<i64> = None;
        let mut entry = self.next[self.head];
        while self.next[self.head] != self.head {
            self.steps += 1;
            if self.steps > steps_max {
                return SearchOutcome::BudgetSpent;
            }
            let Entry { op, is_call } = self.entries[entry];
            if is_call {
                if let Some(after) = step(state, self.inputs[op]) {
                    linearized.set(op);
                    if explored.insert((linearized.clone(), after)) {
                        stack.push((entry, state));
                        state = after;
                        self.lift(entry);
                        entry = self.next[self.head];
                        continue;
                    }
                    linearized.clear(op);
                }
                entry = self.next[entry];
                continue;
            }
            self.note_depth(&stack, op, state);
            let Some((call, before)) = stack.pop() else {
                return SearchOutcome::NotLinearizable;
            };
            linearized.clear(self.entries[call].op);
            state = before;
            self.unlift(call);
            entry = self.next[call];
        }
        SearchOutcome::Linearizable
    }

    fn note_depth(&mut self, stack: &[(usize, Option<i64>)], blocked: usize, state: Option<i64>) {
        if stack.len() >= self.deepest.linearized.len() {
            self.deepest = Deepest {
                linearized: stack
                    .iter()
                    .map(|&(call, _)| self.entries[call].op)
                    .collect(),
                blocked,
                state,
            };
        }
    }

    /// The violation's evidence: the operation that could not be placed at the deepest
    /// point, the state there, the last operations placed before it, and every operation
    /// concurrent with it that was not placed.
    fn witness(&self, operations: &[(&Operation, Input)]) -> (Verdict, Vec<String>) {
        let Deepest {
            linearized,
            blocked,
            state,
        } = &self.deepest;
        let blocked_op = operations[*blocked].0;
        let why = format!(
            "not linearizable: after {} operations in order the register holds {state:?}, and \
             op {} cannot take effect before it returns",
            linearized.len(),
            blocked_op.id
        );
        let mut witness = vec![format!("cannot be placed: {}", describe(blocked_op))];
        let placed_tail = linearized.len().saturating_sub(3);
        for &op in &linearized[placed_tail..] {
            witness.push(format!("placed before it: {}", describe(operations[op].0)));
        }
        let end = blocked_op.complete_ns.unwrap_or(u64::MAX);
        for (op, (operation, _)) in operations.iter().enumerate() {
            let overlaps = operation.invoke_ns <= end
                && operation.complete_ns.unwrap_or(u64::MAX) >= blocked_op.invoke_ns;
            if overlaps && op != *blocked && !linearized.contains(&op) {
                witness.push(format!("concurrent with it: {}", describe(operation)));
            }
        }
        witness.truncate(WITNESS_OPS_MAX);
        (Verdict::Violation(why), witness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use crate::history::{Event, History};

    fn read(key: &str) -> Call {
        Call::Read { key: key.into() }
    }
    fn cas(key: &str, from: i64, to: i64) -> Call {
        Call::Cas {
            key: key.into(),
            from,
            to,
        }
    }
    fn got(value: Option<i64>) -> Reply {
        Reply::Read { value }
    }
    fn written() -> Reply {
        Reply::Written { version: 1 }
    }
    fn cas_reply(succeeded: bool) -> Reply {
        Reply::Cas {
            succeeded,
            version: 1,
        }
    }

    fn verdict(events: Vec<Event>) -> RegisterResult {
        let ops = History { events }.operations().unwrap();
        check(&ops, SEARCH_STEPS_MAX)
    }

    #[test]
    fn sequential_reads_see_the_last_write() {
        let result = verdict(vec![
            invoke(1, 0, read("a")),
            ok(1, 1, read("a"), got(None)),
            invoke(1, 2, write("a", 1)),
            ok(1, 3, write("a", 1), written()),
            invoke(2, 4, read("a")),
            ok(2, 5, read("a"), got(Some(1))),
            invoke(2, 6, cas("a", 1, 2)),
            ok(2, 7, cas("a", 1, 2), cas_reply(true)),
            invoke(1, 8, cas("a", 1, 3)),
            ok(1, 9, cas("a", 1, 3), cas_reply(false)),
            invoke(1, 10, read("a")),
            ok(1, 11, read("a"), got(Some(2))),
        ]);
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        let result = verdict(vec![
            invoke(1, 0, write("a", 1)),
            ok(1, 1, write("a", 1), written()),
            invoke(1, 2, write("a", 2)),
            ok(1, 3, write("a", 2), written()),
            invoke(2, 4, read("a")),
            ok(2, 5, read("a"), got(Some(1))),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
        let key = &result.keys[0];
        assert_eq!(key.key, "a");
        assert!(key.witness[0].contains("op 2"), "{:?}", key.witness);
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        let result = verdict(vec![
            invoke(1, 0, write("a", 1)),
            invoke(2, 1, read("a")),
            invoke(3, 2, read("a")),
            ok(2, 3, read("a"), got(Some(1))),
            ok(3, 4, read("a"), got(None)),
            ok(1, 5, write("a", 1), written()),
        ]);
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
    }

    #[test]
    fn reads_that_flip_back_are_a_violation_even_when_concurrent_with_the_write() {
        // Once a read saw 1, a read that starts after it finished cannot see the old value.
        let result = verdict(vec![
            invoke(1, 0, write("a", 1)),
            invoke(2, 1, read("a")),
            ok(2, 2, read("a"), got(Some(1))),
            invoke(3, 3, read("a")),
            ok(3, 4, read("a"), got(None)),
            ok(1, 5, write("a", 1), written()),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
    }

    #[test]
    fn an_unknown_write_may_take_effect_long_after_its_invoke_or_never() {
        let later = verdict(vec![
            invoke(1, 0, write("a", 1)),
            info(1, 1, write("a", 1)),
            invoke(2, 2, read("a")),
            ok(2, 3, read("a"), got(None)),
            invoke(2, 4, read("a")),
            ok(2, 5, read("a"), got(Some(1))),
        ]);
        assert_eq!(later.verdict, Verdict::Valid, "{later:?}");
        let never = verdict(vec![
            invoke(1, 0, write("a", 1)),
            info(1, 1, write("a", 1)),
            invoke(2, 2, read("a")),
            ok(2, 3, read("a"), got(None)),
        ]);
        assert_eq!(never.verdict, Verdict::Valid, "{never:?}");
    }

    #[test]
    fn an_unknown_write_cannot_take_effect_before_its_invoke() {
        let result = verdict(vec![
            invoke(2, 0, read("a")),
            ok(2, 1, read("a"), got(Some(1))),
            invoke(1, 2, write("a", 1)),
            info(1, 3, write("a", 1)),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
    }

    #[test]
    fn a_failed_write_did_not_happen() {
        let result = verdict(vec![
            invoke(1, 0, write("a", 1)),
            fail(1, 1, write("a", 1)),
            invoke(2, 2, read("a")),
            ok(2, 3, read("a"), got(Some(1))),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
    }

    #[test]
    fn two_successful_cas_from_the_same_value_is_a_violation() {
        let result = verdict(vec![
            invoke(1, 0, write("a", 1)),
            ok(1, 1, write("a", 1), written()),
            invoke(1, 2, cas("a", 1, 2)),
            invoke(2, 2, cas("a", 1, 3)),
            ok(1, 3, cas("a", 1, 2), cas_reply(true)),
            ok(2, 4, cas("a", 1, 3), cas_reply(true)),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
    }

    #[test]
    fn a_failed_compare_needs_another_value_at_that_point() {
        let valid = verdict(vec![
            invoke(1, 0, write("a", 1)),
            ok(1, 1, write("a", 1), written()),
            invoke(2, 2, cas("a", 1, 2)),
            invoke(1, 2, write("a", 5)),
            ok(2, 3, cas("a", 1, 2), cas_reply(false)),
            ok(1, 4, write("a", 5), written()),
        ]);
        assert_eq!(valid.verdict, Verdict::Valid, "{valid:?}");
        let violation = verdict(vec![
            invoke(1, 0, write("a", 1)),
            ok(1, 1, write("a", 1), written()),
            invoke(2, 2, cas("a", 1, 2)),
            ok(2, 3, cas("a", 1, 2), cas_reply(false)),
            invoke(1, 4, read("a")),
            ok(1, 5, read("a"), got(Some(1))),
        ]);
        assert!(violation.verdict.is_violation(), "{violation:?}");
    }

    #[test]
    fn keys_are_checked_independently() {
        let result = verdict(vec![
            invoke(1, 0, write("a", 1)),
            ok(1, 1, write("a", 1), written()),
            invoke(1, 2, read("b")),
            ok(1, 3, read("b"), got(None)),
            invoke(1, 4, read("b")),
            ok(1, 5, read("b"), got(Some(1))),
        ]);
        assert!(result.verdict.is_violation(), "{result:?}");
        assert_eq!(result.keys[0].verdict, Verdict::Valid);
        assert!(result.keys[1].verdict.is_violation());
    }

    #[test]
    fn a_spent_budget_is_unknown_not_valid_or_violation() {
        let events = vec![
            invoke(1, 0, write("a", 1)),
            ok(1, 1, write("a", 1), written()),
            invoke(2, 2, read("a")),
            ok(2, 3, read("a"), got(Some(1))),
        ];
        let ops = History { events }.operations().unwrap();
        let result = check(&ops, 1);
        assert!(matches!(result.verdict, Verdict::Unknown(_)), "{result:?}");
    }

    #[test]
    fn many_concurrent_clients_with_unknowns_stay_within_budget() {
        // 8 clients, 400 rounds: each round every client writes a fresh value or reads, all
        // overlapping; one in ten writes has an unknown outcome.
        let mut events = Vec::new();
        let mut time = 0;
        let mut value = None;
        let mut process_of = [0u64, 1, 2, 3, 4, 5, 6, 7];
        for round in 0..400i64 {
            let calls: Vec<Call> = (0..8i64)
                .map(|c| match c % 3 {
                    0 => write("k", round * 8 + c),
                    _ => read("k"),
                })
                .collect();
            for (c, call) in calls.iter().enumerate() {
                events.push(invoke(process_of[c], time, call.clone()));
                time += 1;
            }
            for (c, call) in calls.iter().enumerate() {
                let event = match call {
                    Call::Write { value: v, .. } if round % 10 == 0 => {
                        let e = info(process_of[c], time, call.clone());
                        value = Some(*v);
                        process_of[c] += 8;
                        e
                    }
                    Call::Write { value: v, .. } => {
                        value = Some(*v);
                        ok(process_of[c], time, call.clone(), written())
                    }
                    _ => ok(process_of[c], time, call.clone(), got(value)),
                };
                events.push(event);
                time += 1;
            }
        }
        let result = verdict(events);
        assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.keys[0].steps);
    }
}
