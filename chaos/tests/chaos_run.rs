//! The chaos runner end to end: a real 3-process cluster under kill -9 and SIGSTOP faults,
//! and the command line's `check` and argument errors.
mod support;

use std::process::Command;

use paxkv_chaos::check::linearizable::SEARCH_STEPS_MAX;
use paxkv_chaos::history::{Call, Event, EventKind, History, Reply};
use paxkv_chaos::nemesis::FaultKind;
use paxkv_chaos::report::Checks;
use paxkv_chaos::run::run;

#[test]
fn kill_and_pause_leave_no_violation_and_lose_no_acknowledged_write() {
    // Kept when the test fails (its path is in the summary), removed when it passes.
    let dir = tempfile::Builder::new()
        .prefix("paxkv-chaos-test-")
        .tempdir()
        .unwrap();
    let out = dir.keep();
    let options = support::run_options(30, &[FaultKind::Kill, FaultKind::Pause], 20_261_202, &out);
    let report = run(&options).unwrap_or_else(|e| panic!("run failed: {e}"));
    let summary = report.summary();
    println!("{summary}");
    assert!(
        report.faults_by_kind.get("kill").copied().unwrap_or(0) >= 1,
        "{summary}"
    );
    assert!(
        report.faults_by_kind.get("pause").copied().unwrap_or(0) >= 1,
        "{summary}"
    );
    assert_eq!(report.violations, 0, "{summary}");
    assert_eq!(report.lost_writes, 0, "{summary}");
    for (name, verdict) in report.checks.verdicts() {
        assert!(verdict.is_valid(), "{name} is not valid:\n{summary}");
    }
    // Not vacuous: each checker saw real traffic.
    assert!(report.ops["register"].ok >= 100, "{summary}");
    assert!(report.checks.bank.transfers_ok >= 10, "{summary}");
    assert!(report.checks.set.adds_ok >= 100, "{summary}");
    let expected: usize = (report.checks.watch.watchers.iter())
        .map(|w| w.writes_expected)
        .sum();
    assert!(expected >= 100, "{summary}");
    assert!(out.join("report.json").is_file());
    let history = History::load(&out.join("history.json")).unwrap();
    checkers_catch_faults_planted_in(&history);
    std::fs::remove_dir_all(&out).unwrap();
}

/// Plants one fault of each kind in a real history and expects its checker to report it
/// (and the untouched history to stay valid).
fn checkers_catch_faults_planted_in(history: &History) {
    let verdicts = |history: &History| {
        let operations = history.operations().unwrap();
        Checks::run(&operations, SEARCH_STEPS_MAX)
    };
    assert!(verdicts(history).registers.verdict.is_valid());

    let mut stale = history.clone();
    plant_stale_read(&mut stale);
    let registers = verdicts(&stale).registers;
    assert!(registers.verdict.is_violation(), "{:?}", registers.verdict);

    let mut lost = history.clone();
    let acknowledged_adds: Vec<u64> = (lost.events.iter())
        .filter_map(|e| match (&e.call, e.kind) {
            (Call::SetAdd { element }, EventKind::Ok) => Some(*element),
            _ => None,
        })
        .collect();
    let final_read = (lost.events.iter_mut().rev())
        .find(|e| e.kind == EventKind::Ok && e.call == Call::SetRead)
        .unwrap();
    let Some(Reply::Elements { elements }) = &mut final_read.reply else {
        panic!("a set read replies with elements");
    };
    let at = (elements.iter())
        .position(|e| acknowledged_adds.contains(e))
        .unwrap();
    elements.remove(at);
    let set = verdicts(&lost).set;
    assert!(set.verdict.is_violation(), "{set:?}");
    assert_eq!(set.lost, 1);

    // The documents workload: an acknowledged element missing from the final read, and an
    // element that appears twice (a patch applied twice, or to the wrong base).
    let mut lost = history.clone();
    let acknowledged_adds: Vec<u64> = (lost.events.iter())
        .filter_map(|e| match (&e.call, e.kind) {
            (Call::DocAdd { element, .. }, EventKind::Ok) => Some(*element),
            _ => None,
        })
        .collect();
    let final_read = (lost.events.iter_mut().rev())
        .find(|e| e.kind == EventKind::Ok && e.call == Call::DocRead)
        .unwrap();
    let Some(Reply::Elements { elements }) = &mut final_read.reply else {
        panic!("a documents read replies with elements");
    };
    let mut twice = elements.clone();
    let at = (elements.iter())
        .position(|e| acknowledged_adds.contains(e))
        .unwrap();
    elements.remove(at);
    let documents = verdicts(&lost).documents;
    assert!(documents.verdict.is_violation(), "{documents:?}");
    assert_eq!(documents.lost, 1);
    twice.push(twice[0]);
    let mut repeated = history.clone();
    let final_read = (repeated.events.iter_mut().rev())
        .find(|e| e.kind == EventKind::Ok && e.call == Call::DocRead)
        .unwrap();
    final_read.reply = Some(Reply::Elements { elements: twice });
    let documents = verdicts(&repeated).documents;
    assert!(documents.verdict.is_violation(), "{documents:?}");
    assert_eq!(documents.duplicates, 1);

    // The publish workload: an acknowledged change set missing from the final read, and a
    // read that shows one in part.
    let mut lost = history.clone();
    let acknowledged: Vec<u64> = (lost.events.iter())
        .filter_map(|e| match (&e.call, e.kind) {
            (Call::Publish { element }, EventKind::Ok) => Some(*element),
            _ => None,
        })
        .collect();
    let final_read = (lost.events.iter_mut().rev())
        .find(|e| e.kind == EventKind::Ok && e.call == Call::PublishRead)
        .unwrap();
    let Some(Reply::Published { elements, .. }) = &mut final_read.reply else {
        panic!("a publish read replies with elements");
    };
    let at = (elements.iter())
        .position(|e| acknowledged.contains(e))
        .unwrap();
    let element = elements.remove(at);
    let publish = verdicts(&lost).publish;
    assert!(publish.verdict.is_violation(), "{publish:?}");
    assert_eq!(publish.lost, 1);
    let final_read = (lost.events.iter_mut().rev())
        .find(|e| e.kind == EventKind::Ok && e.call == Call::PublishRead)
        .unwrap();
    let Some(Reply::Published { partial, .. }) = &mut final_read.reply else {
        unreachable!();
    };
    partial.push(element);
    let publish = verdicts(&lost).publish;
    assert_eq!((publish.lost, publish.torn), (1, 1), "{publish:?}");

    let mut torn = history.clone();
    let bank_read = (torn.events.iter_mut())
        .find(|e| matches!(e.reply, Some(Reply::Balances { .. })))
        .unwrap();
    let Some(Reply::Balances { balances }) = &mut bank_read.reply else {
        unreachable!();
    };
    balances[0] += 1;
    let bank = verdicts(&torn).bank;
    assert!(bank.verdict.is_violation(), "{bank:?}");

    let mut gap = history.clone();
    let acknowledged: Vec<i64> = (gap.events.iter())
        .filter_map(|e| match (&e.call, &e.reply) {
            (Call::Write { .. }, Some(Reply::Written { version })) => Some(*version),
            (
                Call::Cas { .. },
                Some(Reply::Cas {
                    succeeded: true,
                    version,
                }),
            ) => Some(*version),
            _ => None,
        })
        .collect();
    let (poll, at) = (gap.events.iter_mut())
        .find_map(|e| {
            let Some(Reply::Watched { events, .. }) = &e.reply else {
                return None;
            };
            let at = events
                .iter()
                .position(|w| acknowledged.contains(&w.version))?;
            Some((e, at))
        })
        .unwrap();
    let Some(Reply::Watched { events, .. }) = &mut poll.reply else {
        unreachable!();
    };
    events.remove(at);
    let watch = verdicts(&gap).watch;
    assert!(watch.verdict.is_violation(), "{:?}", watch.verdict);
    assert_eq!(watch.watchers.iter().map(|w| w.missing).sum::<usize>(), 1);
}

/// Makes the last successful read of some key return the value of a write that a later
/// completed write had already replaced before the read started.
fn plant_stale_read(history: &mut History) {
    // Per key: acknowledged writes as (value, invoke, complete), in completion order.
    let mut writes: std::collections::BTreeMap<String, Vec<(i64, u64, u64)>> = Default::default();
    let mut invoked: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut target = None;
    for (index, event) in history.events.iter().enumerate() {
        if event.kind == EventKind::Invoke {
            invoked.insert(event.process, event.time_ns);
            continue;
        }
        let start = invoked[&event.process];
        match (&event.call, &event.reply, event.kind) {
            (Call::Write { key, value }, _, EventKind::Ok) => {
                let entry = writes.entry(key.clone()).or_default();
                entry.push((*value, start, event.time_ns));
            }
            (Call::Read { key }, Some(Reply::Read { .. }), EventKind::Ok) => {
                let Some(list) = writes.get(key) else {
                    continue;
                };
                // An old write, then a newer one invoked after it completed, and both
                // done before this read started.
                let old = list.iter().find(|(_, _, done)| {
                    list.iter().any(|(_, newer_start, newer_done)| {
                        newer_start > done && *newer_done < start
                    })
                });
                if let Some((value, _, _)) = old {
                    target = Some((index, *value));
                }
            }
            _ => {}
        }
    }
    let (index, value) = target.expect("some read follows two sequential writes");
    history.events[index].reply = Some(Reply::Read { value: Some(value) });
}

fn chaos(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_paxkv-chaos"))
        .args(args)
        .output()
        .expect("run paxkv-chaos")
}

fn event(process: u64, kind: EventKind, time_ns: u64, call: &Call, reply: Option<Reply>) -> Event {
    Event {
        process,
        kind,
        time_ns,
        call: call.clone(),
        reply,
        error: None,
    }
}

#[test]
fn check_reruns_a_saved_history_and_exits_nonzero_on_a_violation() {
    let dir = tempfile::tempdir().unwrap();
    let write = Call::Write {
        key: "reg/0".into(),
        value: 1,
    };
    let read = Call::Read {
        key: "reg/0".into(),
    };
    let stale = History {
        events: vec![
            event(1, EventKind::Invoke, 0, &write, None),
            event(
                1,
                EventKind::Ok,
                1,
                &write,
                Some(Reply::Written { version: 2 }),
            ),
            event(2, EventKind::Invoke, 2, &read, None),
            event(
                2,
                EventKind::Ok,
                3,
                &read,
                Some(Reply::Read { value: None }),
            ),
        ],
    };
    let path = dir.path().join("stale.json");
    stale.save(&path).unwrap();
    let output = chaos(&["check", "--history", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("registers (linearizable): VIOLATION"),
        "{stdout}"
    );

    let mut fresh = stale.clone();
    fresh.events[3].reply = Some(Reply::Read { value: Some(1) });
    fresh.save(&path).unwrap();
    let output = chaos(&["check", "--history", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("registers (linearizable): valid"),
        "{stdout}"
    );
}

#[test]
fn an_unknown_nemesis_is_refused_with_the_implemented_ones() {
    let output = chaos(&["--time", "1", "--nemesis", "kill,flood"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown nemesis \"flood\""), "{stderr}");
    assert!(stderr.contains("kill, pause, disk-stall"), "{stderr}");
}

#[test]
fn an_unknown_injected_bug_is_refused_with_the_known_ones() {
    let output = chaos(&["--time", "1", "--inject-bug", "lost-writes"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown injected bug \"lost-writes\""),
        "{stderr}"
    );
    assert!(stderr.contains("known: stale-reads"), "{stderr}");
}

#[test]
fn a_cluster_size_other_than_3_or_5_is_refused() {
    let output = chaos(&["--time", "1", "--replicas", "4"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'4'"), "{stderr}");
    assert!(stderr.contains("[possible values: 3, 5]"), "{stderr}");
}
