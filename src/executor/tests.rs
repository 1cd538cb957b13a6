//! Executor tests against a real RocksDB in temporary directories.

use std::collections::BTreeMap;

use rocksdb::IteratorMode;
use tempfile::TempDir;

use super::keys::COLUMN_FAMILIES;
use super::*;

fn options() -> ExecutorOptions {
    ExecutorOptions {
        gc_keys_per_slot_max: 4,
        ..ExecutorOptions::default()
    }
}

/// One executor in its own directory, fed slot after slot.
struct Node {
    dir: TempDir,
    options: ExecutorOptions,
    executor: Option<KvStoreExecutor>,
}

impl Node {
    fn new(options: ExecutorOptions) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let executor = KvStoreExecutor::open(dir.path(), options.clone()).unwrap();
        Node {
            dir,
            options,
            executor: Some(executor),
        }
    }

    fn executor(&mut self) -> &mut KvStoreExecutor {
        self.executor.as_mut().unwrap()
    }

    /// Reads go through the same snapshot reader the server uses.
    fn reader(&mut self) -> KvReader {
        self.executor().reader()
    }

    fn apply(&mut self, commands: &[KvCommand]) -> Vec<WriteOutcome> {
        let encoded: Vec<Vec<u8>> = commands
            .iter()
            .map(|c| encode(c, 1 << 20).unwrap())
            .collect();
        self.apply_raw(&encoded)
    }

    fn apply_raw(&mut self, encoded: &[Vec<u8>]) -> Vec<WriteOutcome> {
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let slot = self.executor().applied_slot() + 1;
        self.executor().apply_slot(slot, &refs).unwrap()
    }

    fn apply_one(&mut self, command: KvCommand) -> WriteOutcome {
        self.apply(&[command]).pop().unwrap()
    }

    fn reopen(&mut self) {
        self.executor = None; // Drops (closes) RocksDB first.
        self.executor = Some(KvStoreExecutor::open(self.dir.path(), self.options.clone()).unwrap());
    }

    fn get(&mut self, key: &[u8], version: u64) -> Option<Vec<u8>> {
        self.reader().get(key, version).unwrap().map(|kv| kv.value)
    }

    fn latest(&mut self, key: &[u8]) -> Option<KeyValue> {
        let version = self.executor().current_version();
        self.reader().get(key, version).unwrap()
    }

    /// Every key and value of every column family.
    fn dump(&mut self) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        let db = &self.executor().db;
        let mut out = Vec::new();
        for name in COLUMN_FAMILIES {
            for item in db.iterator_cf(cf(db, name), IteratorMode::Start) {
                let (key, value) = item.unwrap();
                out.push((name, key.to_vec(), value.to_vec()));
            }
        }
        out
    }

    fn data_entries(&mut self) -> usize {
        self.dump()
            .iter()
            .filter(|(name, _, _)| *name == keys::CF_DATA)
            .count()
    }
}

/// A checkpoint of `from`, installed into `to` as a snapshot from a peer would be.
fn install_checkpoint_of(from: &mut Node, to: &mut Node) {
    let scratch = tempfile::tempdir().unwrap();
    let checkpoint = scratch.path().join("checkpoint");
    let take = from.executor().checkpointer();
    take(&checkpoint).unwrap();
    let staged = to.executor().staging_dir();
    std::fs::rename(&checkpoint, &staged).unwrap();
    to.executor().install_checkpoint(&staged).unwrap();
}

fn write(request: WriteRequest) -> KvCommand {
    KvCommand::Write {
        session: None,
        request,
    }
}

fn put(key: &[u8], value: &[u8]) -> KvCommand {
    write(WriteRequest::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    })
}

fn delete(key: &[u8]) -> KvCommand {
    write(WriteRequest::Delete { key: key.to_vec() })
}

fn delete_range(start: &[u8], end: &[u8]) -> KvCommand {
    write(WriteRequest::DeleteRange {
        start: start.to_vec(),
        end: end.to_vec(),
    })
}

fn range(start: &[u8], end: &[u8]) -> KeyRange {
    KeyRange {
        start: start.to_vec(),
        end: end.to_vec(),
    }
}

fn commit(
    read_version: u64,
    mutations: Vec<Mutation>,
    read_conflict_ranges: Vec<KeyRange>,
) -> KvCommand {
    write(WriteRequest::Commit {
        read_version,
        mutations,
        read_conflict_ranges,
    })
}

fn txn(compares: Vec<Compare>, success: Vec<Mutation>, failure: Vec<Mutation>) -> KvCommand {
    write(WriteRequest::Txn {
        compares,
        success,
        failure,
    })
}

fn set(key: &[u8], value: &[u8]) -> Mutation {
    Mutation::Set {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn add(key: &[u8], param: &[u8]) -> Mutation {
    Mutation::Add {
        key: key.to_vec(),
        param: param.to_vec(),
    }
}

fn with_session(command: KvCommand, client_id: &str, request_id: i64) -> KvCommand {
    let KvCommand::Write { request, .. } = command;
    let session = Some(SessionId {
        client_id: client_id.into(),
        request_id,
    });
    KvCommand::Write { session, request }
}

fn version_of(outcome: &WriteOutcome) -> u64 {
    match outcome {
        WriteOutcome::Committed { version, .. } | WriteOutcome::Txn { version, .. } => *version,
        other => panic!("not a write: {other:?}"),
    }
}

fn is_rejected(outcome: &WriteOutcome) -> bool {
    matches!(outcome, WriteOutcome::Rejected { .. })
}

// ---- exactly once -------------------------------------------------------------------

#[test]
fn reapplying_a_slot_is_refused_and_changes_nothing() {
    let mut node = Node::new(options());
    node.apply(&[put(b"k", b"1")]);
    let before = node.dump();
    let bytes = encode(&put(b"k", b"2"), 1 << 20).unwrap();
    let result = node.executor().apply_slot(1, &[&bytes]);
    assert!(matches!(
        result,
        Err(Error::AlreadyApplied {
            slot: 1,
            applied_slot: 1
        })
    ));
    assert_eq!(node.dump(), before);
    assert_eq!(node.latest(b"k").unwrap().value, b"1");
}

#[test]
#[should_panic(expected = "gap in applied slots")]
fn a_gap_in_slots_panics() {
    let mut node = Node::new(options());
    let _ = node.executor().apply_slot(2, &[]);
}

#[test]
fn crash_before_the_batch_write_leaves_none_of_the_slot() {
    let mut node = Node::new(options());
    node.apply(&[put(b"a", b"1")]);
    let before = node.dump();
    node.executor().crash_before_write = true;
    let slot: Vec<Vec<u8>> = [put(b"a", b"2"), put(b"b", b"1"), delete_range(b"", b"")]
        .iter()
        .map(|c| encode(c, 1 << 20).unwrap())
        .collect();
    let refs: Vec<&[u8]> = slot.iter().map(Vec::as_slice).collect();
    assert!(matches!(
        node.executor().apply_slot(2, &refs),
        Err(Error::FaultInjected(_))
    ));
    assert_eq!(node.executor().applied_slot(), 1);
    node.reopen(); // The "crash": nothing of slot 2 may survive.
    assert_eq!(node.dump(), before);
    assert_eq!(
        (
            node.executor().applied_slot(),
            node.executor().current_version()
        ),
        (1, 1)
    );
    // The driver replays slot 2 from its log, exactly once.
    let outcomes = node.apply_raw(&slot);
    assert_eq!(
        outcomes.iter().map(version_of).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    node.reopen();
    assert_eq!(
        (
            node.executor().applied_slot(),
            node.executor().current_version()
        ),
        (2, 4)
    );
    assert_eq!(node.latest(b"a"), None);
    assert_eq!(node.get(b"a", 2), Some(b"2".to_vec()));
}

#[test]
fn empty_slots_advance_applied_slot_and_survive_reopen() {
    let mut node = Node::new(options());
    node.apply(&[]);
    node.apply(&[put(b"k", b"v")]);
    node.apply(&[]);
    node.reopen();
    assert_eq!(node.executor().applied_slot(), 3);
    assert_eq!(node.executor().current_version(), 1);
    assert_eq!(node.get(b"k", 1), Some(b"v".to_vec()));
}

#[test]
fn undecodable_and_oversized_commands_are_rejected_deterministically() {
    let options = ExecutorOptions {
        command_bytes_max: 64,
        ..options()
    };
    let mut node = Node::new(options);
    let big = encode(&put(b"k", &[1; 100]), 1 << 20).unwrap();
    let good = encode(&put(b"k", b"v"), 1 << 20).unwrap();
    let outcomes = node.apply_raw(&[vec![9, 9, 9], big, good]);
    assert_eq!(
        outcomes[0],
        WriteOutcome::Rejected {
            reason: "malformed command".into()
        }
    );
    assert!(is_rejected(&outcomes[1]));
    assert_eq!(version_of(&outcomes[2]), 1);
}

// ---- reads --------------------------------------------------------------------------

#[test]
fn snapshot_reads_see_the_past() {
    let mut node = Node::new(options());
    node.apply(&[put(b"k", b"1"), put(b"k", b"2")]);
    node.apply(&[delete(b"k")]);
    node.apply(&[put(b"k", b"3")]);
    assert_eq!(node.get(b"k", 1), Some(b"1".to_vec()));
    assert_eq!(node.get(b"k", 2), Some(b"2".to_vec()));
    assert_eq!(node.get(b"k", 3), None);
    let kv = node.reader().get(b"k", 4).unwrap().unwrap();
    assert_eq!((kv.mod_version, kv.create_version), (4, 4)); // Recreated after a delete.
    assert_eq!(
        node.reader().get(b"k", 2).unwrap().unwrap().create_version,
        1
    );
    assert!(matches!(
        node.reader().get(b"k", 5),
        Err(Error::NotYetApplied { .. })
    ));
    // A Delete of an absent key takes a version but writes no tombstone and no event.
    let entries = node.data_entries();
    assert_eq!(version_of(&node.apply_one(delete(b"absent"))), 5);
    assert_eq!(node.data_entries(), entries);
}

fn keys_of(page: &RangePage) -> Vec<Vec<u8>> {
    page.kvs.iter().map(|kv| kv.key.clone()).collect()
}

fn read_all(
    node: &mut Node,
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
    version: u64,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut continuation = None;
    for _ in 0..1000 {
        let page = node
            .reader()
            .get_range(&range(start, end), limit, reverse, version, continuation)
            .unwrap();
        assert!(page.kvs.len() <= limit);
        out.extend(keys_of(&page));
        assert_eq!(page.more, page.continuation.is_some());
        if !page.more {
            return out;
        }
        continuation = page.continuation;
    }
    panic!("range paging did not finish");
}

#[test]
fn range_pages_forward_and_reverse() {
    let mut node = Node::new(ExecutorOptions {
        range_keys_scanned_max: 3,
        ..options()
    });
    let keys: Vec<Vec<u8>> = (0..10u8).map(|i| vec![b'k', b'0' + i]).collect();
    node.apply(&keys.iter().map(|k| put(k, b"v")).collect::<Vec<_>>());
    let v10 = node.executor().current_version();
    node.apply(&[delete(b"k3"), delete(b"k4"), delete(b"k5"), delete(b"k7")]);
    let now = node.executor().current_version();
    let live: Vec<Vec<u8>> = keys
        .iter()
        .filter(|k| !matches!(k[1], b'3' | b'4' | b'5' | b'7'))
        .cloned()
        .collect();
    for limit in [1, 2, 3, 100] {
        assert_eq!(read_all(&mut node, b"k", b"l", limit, false, now), live);
        let reversed: Vec<_> = live.iter().rev().cloned().collect();
        assert_eq!(read_all(&mut node, b"k", b"l", limit, true, now), reversed);
        assert_eq!(read_all(&mut node, b"", b"", limit, false, v10), keys);
    }
    assert_eq!(
        read_all(&mut node, b"k2", b"k8", 2, true, now),
        vec![b"k6".to_vec(), b"k2".to_vec()]
    );
    let page = node
        .reader()
        .get_range(&range(b"k", b"l"), 2, false, now, None)
        .unwrap();
    let wrong_direction =
        node.reader()
            .get_range(&range(b"k", b"l"), 2, true, now, page.continuation);
    assert!(matches!(wrong_direction, Err(Error::InvalidArgument(_))));
    assert!(matches!(
        node.reader()
            .get_range(&range(b"b", b"a"), 2, false, now, None),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn keys_with_zero_bytes_sort_and_read_correctly() {
    let mut node = Node::new(options());
    let keys: [&[u8]; 6] = [b"", b"a", b"a\0", b"a\0\0", b"a\x01", b"ab"];
    // Written in reverse so that order comes from the layout, not from insertion.
    node.apply(
        &keys
            .iter()
            .rev()
            .map(|k| put(k, &[*k, b"!".as_slice()].concat()))
            .collect::<Vec<_>>(),
    );
    let now = node.executor().current_version();
    for key in keys {
        assert_eq!(node.get(key, now), Some([key, b"!".as_slice()].concat()));
    }
    assert_eq!(node.get(b"a\0\0\0", now), None);
    let expected: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    assert_eq!(read_all(&mut node, b"", b"", 2, false, now), expected);
    assert_eq!(
        read_all(&mut node, b"", b"", 2, true, now),
        expected.iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        read_all(&mut node, b"a\0", b"a\x01", 10, false, now),
        vec![b"a\0".to_vec(), b"a\0\0".to_vec()]
    );
    node.apply(&[delete_range(b"a\0", b"a\x01")]);
    let now = node.executor().current_version();
    assert_eq!(
        read_all(&mut node, b"a", b"b", 10, false, now),
        vec![b"a".to_vec(), b"a\x01".to_vec(), b"ab".to_vec()]
    );
}

// ---- transactions -------------------------------------------------------------------

#[test]
fn write_skew_transactions_one_commits_the_other_conflicts() {
    for same_slot in [true, false] {
        let mut node = Node::new(options());
        node.apply(&[put(b"x", b"0"), put(b"y", b"0")]);
        let read_version = node.executor().current_version();
        // T1 reads x and writes y; T2 reads y and writes x.
        let t1 = commit(
            read_version,
            vec![set(b"y", b"1")],
            vec![range(b"x", b"x\0")],
        );
        let t2 = commit(
            read_version,
            vec![set(b"x", b"2")],
            vec![range(b"y", b"y\0")],
        );
        let outcomes = match same_slot {
            true => node.apply(&[t1, t2]),
            false => vec![node.apply_one(t1), node.apply_one(t2)],
        };
        assert!(matches!(
            outcomes[0],
            WriteOutcome::Committed { version: 3, .. }
        ));
        assert_eq!(outcomes[1], WriteOutcome::Conflict { key: b"y".to_vec() });
        assert_eq!(node.latest(b"x").unwrap().value, b"0");
        assert_eq!(node.executor().current_version(), 3);
    }
}

#[test]
fn commit_read_version_bounds_and_deletes_conflict() {
    let mut node = Node::new(ExecutorOptions {
        retention_versions: 3,
        ..options()
    });
    for i in 0..6u8 {
        node.apply(&[put(&[b'k', i], b"v")]);
    }
    assert_eq!(node.executor().oldest_version(), 3);
    let too_old = node.apply_one(commit(2, vec![set(b"z", b"1")], vec![]));
    assert_eq!(
        too_old,
        WriteOutcome::TooOld {
            read_version: 2,
            oldest_version: 3
        }
    );
    assert!(matches!(
        node.reader().get(b"k\x05", 2),
        Err(Error::TooOld {
            oldest_version: 3,
            ..
        })
    ));
    assert!(is_rejected(&node.apply_one(commit(
        7,
        vec![set(b"z", b"1")],
        vec![]
    ))));
    // A delete after the read version conflicts, over an unbounded range too.
    node.apply(&[delete(b"k\x04")]);
    let outcome = node.apply_one(commit(6, vec![set(b"z", b"1")], vec![range(b"k", b"")]));
    assert_eq!(
        outcome,
        WriteOutcome::Conflict {
            key: b"k\x04".to_vec()
        }
    );
    // Read-only commit: validated, takes no version.
    let outcome = node.apply_one(commit(7, vec![], vec![range(b"", b"")]));
    assert!(matches!(
        outcome,
        WriteOutcome::Committed { version: 7, .. }
    ));
    assert_eq!(node.executor().current_version(), 7);
}

#[test]
fn later_commands_in_a_slot_see_earlier_writes() {
    let mut node = Node::new(options());
    node.apply(&[put(b"a", b"1")]);
    let exists = |key: &[u8]| Compare {
        key: key.to_vec(),
        target: CompareTarget::Exists,
        op: CompareOp::Equal,
        value: None,
        version: None,
        exists: Some(true),
    };
    let outcomes = node.apply(&[
        put(b"b", b"1"),
        txn(
            vec![exists(b"b")],
            vec![set(b"c", b"yes")],
            vec![set(b"c", b"no")],
        ),
        write(WriteRequest::Commit {
            read_version: 1,
            mutations: vec![add(b"n", &[1])],
            read_conflict_ranges: vec![KeyRange {
                start: b"b".to_vec(),
                end: b"b\0".to_vec(),
            }],
        }),
        delete_range(b"a", b"c"),
        txn(vec![exists(b"a")], vec![], vec![add(b"n", &[5])]),
        write(WriteRequest::Commit {
            read_version: 5,
            mutations: vec![add(b"n", &[1])],
            read_conflict_ranges: vec![],
        }),
    ]);
    assert_eq!(
        outcomes[1],
        WriteOutcome::Txn {
            succeeded: true,
            version: 3
        }
    );
    assert_eq!(outcomes[2], WriteOutcome::Conflict { key: b"b".to_vec() });
    assert_eq!(version_of(&outcomes[3]), 4);
    assert_eq!(
        outcomes[4],
        WriteOutcome::Txn {
            succeeded: false,
            version: 5
        }
    );
    assert_eq!(version_of(&outcomes[5]), 6);
    assert_eq!(node.latest(b"a"), None);
    assert_eq!(node.latest(b"b"), None);
    assert_eq!(node.latest(b"c").unwrap().value, b"yes");
    assert_eq!(node.latest(b"n").unwrap().value, vec![6]);
}

#[test]
fn commands_scanning_too_many_keys_are_rejected() {
    let mut node = Node::new(ExecutorOptions {
        command_keys_scanned_max: 3,
        ..options()
    });
    node.apply(&(0..4u8).map(|i| put(&[b'k', i], b"v")).collect::<Vec<_>>());
    assert!(is_rejected(&node.apply_one(delete_range(b"k", b"l"))));
    // Clear and conflict scans of one command share the budget.
    let both = commit(
        3,
        vec![Mutation::ClearRange {
            start: b"k\x02".to_vec(),
            end: b"l".to_vec(),
        }],
        vec![range(b"k", b"k\x02")],
    );
    assert!(is_rejected(&node.apply_one(both)));
    assert_eq!(node.executor().current_version(), 4);
    assert_eq!(version_of(&node.apply_one(delete_range(b"k\x01", b"l"))), 5);
    assert_eq!(
        read_all(&mut node, b"", b"", 10, false, 5),
        vec![b"k\x00".to_vec()]
    );
}

#[test]
fn add_is_little_endian_and_wraps_at_the_param_width() {
    let mut node = Node::new(options());
    let outcomes = node.apply(&[
        commit(0, vec![add(b"absent", &[7, 0])], vec![]),
        commit(
            0,
            vec![set(b"w", &[0xFF, 0xFF]), add(b"w", &[1, 0])],
            vec![],
        ),
        commit(
            0,
            vec![set(b"long", &[1, 2, 3]), add(b"long", &[1])],
            vec![],
        ),
        commit(
            0,
            vec![set(b"short", &[0xFF]), add(b"short", &[1, 0, 0, 0])],
            vec![],
        ),
    ]);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, WriteOutcome::Committed { .. })));
    assert_eq!(node.latest(b"absent").unwrap().value, vec![7, 0]);
    assert_eq!(node.latest(b"w").unwrap().value, vec![0, 0]);
    assert_eq!(node.latest(b"long").unwrap().value, vec![2]);
    assert_eq!(node.latest(b"short").unwrap().value, vec![0, 1, 0, 0]);
    // Across slots, through RocksDB rather than the overlay.
    node.apply_one(commit(
        4,
        vec![add(b"short", &u32::MAX.to_le_bytes())],
        vec![],
    ));
    assert_eq!(node.latest(b"short").unwrap().value, 255u32.to_le_bytes());
}

#[test]
fn versionstamped_keys_and_values() {
    let mut node = Node::new(options());
    node.apply(&[put(b"x", b"1")]);
    let mut key = b"log/__________".to_vec();
    key.extend_from_slice(&4u32.to_le_bytes());
    let mut value = b"__________@".to_vec();
    value.extend_from_slice(&0u32.to_le_bytes());
    let outcome = node.apply_one(commit(
        1,
        vec![
            Mutation::SetVersionstampedKey {
                key,
                value: b"v".to_vec(),
            },
            Mutation::SetVersionstampedValue {
                key: b"ptr".to_vec(),
                value,
            },
        ],
        vec![],
    ));
    let WriteOutcome::Committed {
        version: 2,
        versionstamp,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(versionstamp, [0, 0, 0, 0, 0, 0, 0, 2, 0, 0]);
    let stamped_key = [b"log/".as_slice(), versionstamp.as_slice()].concat();
    assert_eq!(node.latest(&stamped_key).unwrap().value, b"v");
    assert_eq!(
        node.latest(b"ptr").unwrap().value,
        [versionstamp.as_slice(), b"@".as_slice()].concat()
    );
    // Out of range: rejected whole, and no version is consumed.
    let mut bad = b"short".to_vec();
    bad.extend_from_slice(&0u32.to_le_bytes());
    let outcome = node.apply_one(commit(
        2,
        vec![
            set(b"q", b"1"),
            Mutation::SetVersionstampedKey {
                key: bad,
                value: vec![],
            },
        ],
        vec![],
    ));
    assert!(is_rejected(&outcome));
    assert_eq!(node.executor().current_version(), 2);
    assert_eq!(node.latest(b"q"), None);
}

#[test]
fn compares_cover_every_target_and_op() {
    use CompareOp::*;
    use CompareTarget::*;
    let mut node = Node::new(options());
    node.apply(&[put(b"k", b"m")]); // create 1
    node.apply(&[put(b"k", b"m")]); // mod 2
    let compare = |key: &str, target, op, operand: u64| Compare {
        key: key.as_bytes().to_vec(),
        target,
        op,
        value: Some(if operand == 0 {
            b"a".to_vec()
        } else if operand == 1 {
            b"m".to_vec()
        } else {
            b"z".to_vec()
        }),
        version: Some(operand),
        exists: Some(operand == 1),
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, CompareTarget, CompareOp, u64, bool)> = vec![
        // Value: "m" against "a" (0), "m" (1), "z" (2); absent: only NotEqual holds.
        ("k", Value, Equal, 1, true), ("k", Value, Equal, 0, false), ("k", Value, NotEqual, 0, true),
        ("k", Value, NotEqual, 1, false), ("k", Value, Less, 2, true), ("k", Value, Less, 1, false),
        ("k", Value, Greater, 0, true), ("k", Value, Greater, 2, false),
        ("no", Value, Equal, 1, false), ("no", Value, NotEqual, 1, true), ("no", Value, Less, 2, false),
        ("no", Value, Greater, 0, false),
        ("k", ModVersion, Equal, 2, true), ("k", ModVersion, NotEqual, 2, false), ("k", ModVersion, Less, 3, true),
        ("k", ModVersion, Greater, 1, true), ("k", ModVersion, Greater, 2, false),
        ("k", CreateVersion, Equal, 1, true), ("k", CreateVersion, Less, 2, true), ("k", CreateVersion, Greater, 1, false),
        ("k", CreateVersion, NotEqual, 2, true),
        ("no", ModVersion, Equal, 0, true), ("no", CreateVersion, Less, 1, true),
        ("k", Exists, Equal, 1, true), ("k", Exists, NotEqual, 1, false), ("no", Exists, Equal, 0, true),
        ("no", Exists, Equal, 1, false), ("no", Exists, NotEqual, 1, true),
    ];
    let mut commands = Vec::new();
    for (key, target, op, operand, _) in &cases {
        commands.push(txn(
            vec![compare(key, *target, *op, *operand)],
            vec![],
            vec![],
        ));
    }
    let outcomes = node.apply(&commands);
    for (case, outcome) in cases.iter().zip(outcomes) {
        assert_eq!(
            outcome,
            WriteOutcome::Txn {
                succeeded: case.4,
                version: 2
            },
            "{case:?}"
        );
    }
    // Several compares must all hold; missing operands and ordered Exists are rejected.
    let both = vec![
        compare("k", Value, Equal, 1),
        compare("k", ModVersion, Equal, 1),
    ];
    assert_eq!(
        node.apply_one(txn(both, vec![set(b"t", b"1")], vec![])),
        WriteOutcome::Txn {
            succeeded: false,
            version: 2
        }
    );
    let missing = Compare {
        value: None,
        ..compare("k", Value, Equal, 1)
    };
    assert!(is_rejected(&node.apply_one(txn(
        vec![missing],
        vec![],
        vec![]
    ))));
    assert!(is_rejected(&node.apply_one(txn(
        vec![compare("k", Exists, Less, 1)],
        vec![],
        vec![]
    ))));
}

// ---- sessions -----------------------------------------------------------------------

#[test]
fn session_retries_return_the_original_outcome() {
    let mut node = Node::new(options());
    let first = node.apply_one(with_session(put(b"k", b"1"), "c1", 5));
    assert_eq!(version_of(&first), 1);
    // A retry, even with a different body, in the same slot and after a reopen.
    let retried = node.apply(&[
        with_session(put(b"k", b"2"), "c1", 5),
        with_session(put(b"k", b"3"), "c1", 5),
    ]);
    assert_eq!(retried, vec![first.clone(), first.clone()]);
    node.reopen();
    assert_eq!(
        node.apply_one(with_session(put(b"k", b"4"), "c1", 5)),
        first
    );
    assert_eq!(node.executor().current_version(), 1);
    assert_eq!(node.latest(b"k").unwrap().value, b"1");
    let superseded = node.apply_one(with_session(put(b"k", b"5"), "c1", 4));
    assert_eq!(
        superseded,
        WriteOutcome::Rejected {
            reason: "superseded".into()
        }
    );
    // A newer request applies; a conflict is remembered like any outcome.
    let outcomes = node.apply(&[
        with_session(put(b"k", b"6"), "c1", 6),
        with_session(
            commit(1, vec![set(b"x", b"1")], vec![range(b"k", b"k\0")]),
            "c2",
            1,
        ),
        with_session(commit(2, vec![set(b"x", b"1")], vec![]), "c2", 1),
    ]);
    assert_eq!(version_of(&outcomes[0]), 2);
    assert_eq!(outcomes[1], WriteOutcome::Conflict { key: b"k".to_vec() });
    assert_eq!(outcomes[2], outcomes[1]);
}

// ---- watch --------------------------------------------------------------------------

fn watch_all(
    node: &mut Node,
    range: &KeyRange,
    from_version: u64,
    events_max: usize,
) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let mut from = from_version;
    loop {
        let page = node.reader().watch_events(range, from, events_max).unwrap();
        assert!(page.next_version > from || page.events.is_empty());
        if let (Some(last), Some(first)) = (events.last(), page.events.first()) {
            assert!(first.version > last.version, "a version split across pages");
        }
        events.extend(page.events.iter().cloned());
        if page.events.is_empty() && page.next_version == node.executor().current_version() + 1 {
            return events;
        }
        from = page.next_version;
    }
}

#[test]
fn watch_pages_events_in_order_without_gaps_or_splits() {
    let mut node = Node::new(ExecutorOptions {
        watch_versions_scanned_max: 2,
        ..options()
    });
    node.apply(&[put(b"a", b"1"), put(b"b", b"1")]); // v1, v2
    node.apply(&[commit(
        2,
        vec![set(b"a", b"2"), set(b"b", b"2"), set(b"c", b"2")],
        vec![],
    )]); // v3
    node.apply(&[put(b"z", b"1"), delete_range(b"a", b"c")]); // v4, v5
    node.apply(&[delete(b"a")]); // v6: absent, no event
    let everything = KeyRange {
        start: vec![],
        end: vec![],
    };
    let all = watch_all(&mut node, &everything, 1, 1);
    let summary: Vec<(u64, EventKind, Vec<u8>)> = all
        .iter()
        .map(|e| (e.version, e.kind, e.key.clone()))
        .collect();
    use EventKind::*;
    assert_eq!(
        summary,
        vec![
            (1, Put, b"a".to_vec()),
            (2, Put, b"b".to_vec()),
            (3, Put, b"a".to_vec()),
            (3, Put, b"b".to_vec()),
            (3, Put, b"c".to_vec()),
            (4, Put, b"z".to_vec()),
            (5, Delete, b"a".to_vec()),
            (5, Delete, b"b".to_vec()),
        ]
    );
    assert_eq!(all[2].value, Some(b"2".to_vec()));
    assert_eq!(all[6].value, None);
    for events_max in [2, 3, 100] {
        assert_eq!(watch_all(&mut node, &everything, 1, events_max), all);
    }
    let only_b = KeyRange {
        start: b"b".to_vec(),
        end: b"c".to_vec(),
    };
    let b_versions: Vec<u64> = watch_all(&mut node, &only_b, 3, 1)
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(b_versions, vec![3, 5]);
    let page = node.reader().watch_events(&everything, 9, 10).unwrap();
    assert_eq!((page.events.len(), page.next_version), (0, 9));
}

#[test]
fn watch_below_oldest_version_is_compacted() {
    let mut node = Node::new(ExecutorOptions {
        retention_versions: 2,
        ..options()
    });
    for i in 0..5u8 {
        node.apply(&[put(b"k", &[i])]);
    }
    assert_eq!(node.executor().oldest_version(), 3);
    let everything = KeyRange {
        start: vec![],
        end: vec![],
    };
    let result = node.reader().watch_events(&everything, 2, 10);
    assert!(matches!(
        result,
        Err(Error::Compacted { oldest_version: 3 })
    ));
    let versions: Vec<u64> = watch_all(&mut node, &everything, 3, 10)
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, vec![3, 4, 5]);
    let logged = node
        .dump()
        .iter()
        .filter(|(name, _, _)| *name == keys::CF_CHANGES)
        .count();
    assert_eq!(logged, 3);
}

#[test]
fn shrinking_retention_across_a_restart_trims_history() {
    let mut node = Node::new(ExecutorOptions {
        retention_versions: 100,
        ..options()
    });
    node.apply(&(0..70u8).map(|i| put(&[i], b"v")).collect::<Vec<_>>());
    assert_eq!(node.executor().oldest_version(), 0);
    node.options.retention_versions = 1;
    node.reopen();
    assert_eq!(node.executor().oldest_version(), 0); // Moves on the next slot only.
    node.apply(&[]);
    assert_eq!(node.executor().oldest_version(), 69);
    let everything = range(b"", b"");
    let result = node.reader().watch_events(&everything, 68, 0);
    assert!(matches!(
        result,
        Err(Error::Compacted { oldest_version: 69 })
    ));
    let logged = node
        .dump()
        .iter()
        .filter(|(name, _, _)| *name == keys::CF_CHANGES)
        .count();
    assert_eq!(logged, 2);
    // Growing it back cannot resurrect collected versions.
    node.options.retention_versions = 1000;
    node.reopen();
    node.apply(&[]);
    assert_eq!(node.executor().oldest_version(), 69);
}

// ---- garbage collection and determinism ---------------------------------------------

#[test]
fn gc_removes_unreachable_versions_and_tombstones() {
    let mut node = Node::new(ExecutorOptions {
        retention_versions: 3,
        gc_keys_per_slot_max: 1,
        ..options()
    });
    for i in 0..40u8 {
        node.apply(&[put(b"hot", &[i])]); // v1..v40
    }
    node.apply(&[put(b"gone", b"1")]); // v41
    node.apply(&[delete(b"gone")]); // v42
    node.apply(&[put(b"hot", b"a"), put(b"hot", b"b"), put(b"hot", b"c")]); // v43..v45
    for _ in 0..4 {
        node.apply(&[]); // No new versions, but the GC cursor moves on.
    }
    assert_eq!(node.executor().oldest_version(), 42);
    // hot keeps v40 (it answers reads at 42) and v43..v45; gone keeps nothing.
    assert_eq!(node.data_entries(), 4);
    assert_eq!(node.get(b"hot", 42), Some(vec![39]));
    assert_eq!(node.get(b"hot", 44), Some(b"b".to_vec()));
    assert_eq!(node.get(b"gone", 42), None);
}

fn determinism_workload() -> Vec<Vec<KvCommand>> {
    let mut slots = Vec::new();
    for round in 0..30u8 {
        let key = [b'k', round % 7];
        slots.push(vec![
            put(&key, &[round]),
            with_session(
                commit(
                    round as u64,
                    vec![add(b"counter", &[1, 0]), set(&[b'j', round % 5], b"x")],
                    vec![range(b"k", b"l")],
                ),
                "c",
                i64::from(round),
            ),
            txn(
                vec![],
                vec![Mutation::ClearRange {
                    start: vec![b'j', round % 3],
                    end: vec![b'j', 4],
                }],
                vec![],
            ),
        ]);
        if round % 4 == 0 {
            slots.push(vec![]);
        }
    }
    slots
}

#[test]
fn same_slots_give_identical_bytes() {
    let options = ExecutorOptions {
        retention_versions: 10,
        gc_keys_per_slot_max: 3,
        ..options()
    };
    let mut nodes = [Node::new(options.clone()), Node::new(options)];
    for slot in determinism_workload() {
        let outcomes: Vec<_> = nodes.iter_mut().map(|node| node.apply(&slot)).collect();
        assert_eq!(outcomes[0], outcomes[1]);
    }
    nodes[1].reopen();
    assert_eq!(nodes[0].dump(), nodes[1].dump());
    assert!(
        nodes[0].executor().oldest_version() > 1,
        "the workload must exercise GC"
    );
}

// ---- property: GC never changes a read inside the retention window -----------------

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    pub enum Op {
        Put(u8, u8),
        Delete(u8),
        ClearRange(u8, u8),
        Add(u8, u8),
    }

    fn key(k: u8) -> Vec<u8> {
        // Includes 0x00 bytes so that escaping is exercised too.
        match k % 4 {
            0 => vec![k],
            1 => vec![k, 0],
            2 => vec![0, k],
            _ => vec![],
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..8u8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (0..8u8).prop_map(Op::Delete),
            1 => (0..8u8, 0..8u8).prop_map(|(a, b)| Op::ClearRange(a.min(b), a.max(b))),
            2 => (0..8u8, any::<u8>()).prop_map(|(k, v)| Op::Add(k, v)),
        ]
    }

    fn command(op: &Op) -> KvCommand {
        match *op {
            Op::Put(k, v) => put(&key(k), &[v]),
            Op::Delete(k) => delete(&key(k)),
            Op::ClearRange(a, b) => delete_range(&[a], &[b]),
            // A Txn without compares always takes its success branch.
            Op::Add(k, v) => txn(vec![], vec![add(&key(k), &[v])], vec![]),
        }
    }

    fn apply_to_model(state: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &Op) {
        match *op {
            Op::Put(k, v) => {
                state.insert(key(k), vec![v]);
            }
            Op::Delete(k) => {
                state.remove(&key(k));
            }
            Op::ClearRange(a, b) => state
                .retain(|k, _| !(k.as_slice() >= [a].as_slice() && k.as_slice() < [b].as_slice())),
            Op::Add(k, v) => {
                let sum = mutation::little_endian_add(state.get(&key(k)).map(Vec::as_slice), &[v]);
                state.insert(key(k), sum);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn gc_keeps_retained_snapshots_exact(
            slots in prop::collection::vec(prop::collection::vec(op(), 0..4), 1..30),
            probes in prop::collection::vec(any::<u64>(), 4),
        ) {
            let options = ExecutorOptions { retention_versions: 4, gc_keys_per_slot_max: 2, ..options() };
            let mut node = Node::new(options);
            // snapshots[v] is the model state after version v.
            let mut snapshots = vec![BTreeMap::new()];
            for ops in &slots {
                let outcomes = node.apply(&ops.iter().map(command).collect::<Vec<_>>());
                for (op, outcome) in ops.iter().zip(&outcomes) {
                    let mut state = snapshots.last().unwrap().clone();
                    apply_to_model(&mut state, op);
                    prop_assert_eq!(version_of(outcome), snapshots.len() as u64);
                    snapshots.push(state);
                }
                let (oldest, now) = (node.executor().oldest_version(), node.executor().current_version());
                for probe in &probes {
                    let version = oldest + probe % (now - oldest + 1);
                    let expected = &snapshots[version as usize];
                    let page = node.reader().get_range(&range(b"", b""), 0, false, version, None).unwrap();
                    let actual: BTreeMap<Vec<u8>, Vec<u8>> = page.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                    prop_assert_eq!(&actual, expected, "range at version {} (oldest {})", version, oldest);
                    for k in 0..8u8 {
                        prop_assert_eq!(node.get(&key(k), version), expected.get(&key(k)).cloned());
                    }
                }
                if oldest > 0 {
                    let too_old = matches!(node.reader().get(b"", oldest - 1), Err(Error::TooOld { .. }));
                    prop_assert!(too_old, "read below oldest_version {} was not TooOld", oldest);
                }
            }
        }
    }
}

/// GC passes run only when oldest_version moves: while it stands still after a complete
/// pass, slots visit no keys; when it moves, one pass collects what became collectible,
/// and the pass state survives a reopen.
#[test]
fn gc_passes_run_only_when_oldest_version_moves() {
    let mut node = Node::new(ExecutorOptions {
        retention_versions: 1_000,
        ..options()
    });
    for i in 0..20u8 {
        node.apply(&[put(&[i], b"v")]);
    }
    assert_eq!(node.executor().oldest_version(), 0);
    assert_eq!(
        node.executor().gc,
        super::gc::GcState::default(),
        "no pass at oldest 0"
    );

    node.options.retention_versions = 5;
    node.reopen();
    for _ in 0..3 {
        node.apply(&[put(b"\x00", b"again")]);
    }
    let oldest = node.executor().oldest_version();
    assert!(oldest > 0);
    // 21 keys at 4 per slot: the pass is under way (or done) at some oldest_version.
    let gc = node.executor().gc.clone();
    assert!(!gc.cursor.is_empty() || gc.clean_oldest > 0, "{gc:?}");
    node.reopen();
    assert_eq!(node.executor().gc, gc, "gc state survives a reopen");
    // Finish passes: each slot writes, so oldest keeps moving and passes keep running;
    // once writes stop moving it, the last pass completes and later empty slots are free.
    for _ in 0..20 {
        node.apply(&[]);
    }
    let settled = node.executor().gc.clone();
    assert!(settled.cursor.is_empty(), "{settled:?}");
    assert_eq!(settled.clean_oldest, node.executor().oldest_version());
}

/// The metrics endpoint's size gauges: RocksDB properties summed over the column families.
#[test]
fn size_properties_sum_over_the_column_families() {
    let mut node = Node::new(options());
    let reader = node.reader();
    assert_eq!(
        reader.property_sum("rocksdb.total-sst-files-size").unwrap(),
        0
    );
    for n in 0..100u32 {
        node.apply_one(put(format!("size/{n}").as_bytes(), &[7; 1024]));
    }
    let db = &node.executor().db;
    for name in COLUMN_FAMILIES {
        db.flush_cf(cf(db, name)).unwrap();
    }
    let sst = reader.property_sum("rocksdb.total-sst-files-size").unwrap();
    assert!(sst > 0, "flushed data is in SST files");
    let live = reader
        .property_sum("rocksdb.estimate-live-data-size")
        .unwrap();
    assert!(live > 0, "live data {live}");
    assert_eq!(reader.property_sum("rocksdb.no-such-property").unwrap(), 0);
}

// ---------------------------------------------------------------------------------------
// Snapshots: checkpoints and installs.

#[test]
fn digests_agree_on_equal_histories_survive_reopen_and_travel_in_checkpoints() {
    let mut a = Node::new(options());
    let mut b = Node::new(options());
    assert_eq!(a.executor().digest(), b.executor().digest());
    for n in 0..20u32 {
        let command = put(format!("k{}", n % 7).as_bytes(), &n.to_be_bytes());
        a.apply_one(command.clone());
        b.apply_one(command);
        assert_eq!(a.executor().digest(), b.executor().digest(), "slot {n}");
    }
    let slot = a.executor().applied_slot() + 1;
    a.executor().apply_membership(slot, b"m").unwrap();
    b.executor().apply_membership(slot, b"m").unwrap();
    assert_eq!(a.executor().digest(), b.executor().digest());
    // One different value: different from then on.
    a.apply_one(put(b"x", b"1"));
    b.apply_one(put(b"x", b"2"));
    a.apply_one(put(b"y", b"1"));
    b.apply_one(put(b"y", b"1"));
    let (da, db) = (a.executor().digest(), b.executor().digest());
    assert_ne!(da.value, db.value);
    a.reopen();
    assert_eq!(a.executor().digest(), da, "persisted with the slot");
    // A checkpoint carries its digest and chain base.
    let scratch = tempfile::tempdir().unwrap();
    let checkpoint = scratch.path().join("checkpoint");
    let take = a.executor().checkpointer();
    take(&checkpoint).unwrap();
    let mut c = Node::new(options());
    let staged = c.executor().staging_dir();
    std::fs::rename(&checkpoint, &staged).unwrap();
    c.executor().install_checkpoint(&staged).unwrap();
    assert_eq!(c.executor().digest(), da);
    a.apply_one(put(b"z", b"1"));
    c.apply_one(put(b"z", b"1"));
    assert_eq!(c.executor().digest(), a.executor().digest());
}

#[test]
fn a_membership_is_applied_with_its_slot_and_travels_in_checkpoints() {
    let mut leader = Node::new(options());
    assert_eq!(leader.executor().membership().unwrap(), None);
    leader.apply_one(put(b"a", b"1"));
    let slot = leader.executor().applied_slot() + 1;
    leader.executor().apply_membership(slot, b"first").unwrap();
    assert_eq!(leader.executor().applied_slot(), slot);
    // Commands after it leave it alone; a later one replaces it.
    leader.apply_one(put(b"b", b"2"));
    assert_eq!(leader.executor().membership().unwrap().unwrap(), b"first");
    let slot = leader.executor().applied_slot() + 1;
    leader.executor().apply_membership(slot, b"second").unwrap();
    // Applying a slot twice is refused, membership or not.
    assert!(leader.executor().apply_membership(slot, b"x").is_err());
    leader.reopen();
    assert_eq!(leader.executor().membership().unwrap().unwrap(), b"second");
    let mut follower = Node::new(options());
    install_checkpoint_of(&mut leader, &mut follower);
    assert_eq!(
        follower.executor().membership().unwrap().unwrap(),
        b"second"
    );
    assert_eq!(follower.dump(), leader.dump());
}

#[test]
fn a_checkpoint_installed_elsewhere_gives_the_same_state_and_readers_follow_the_swap() {
    let mut leader = Node::new(options());
    for n in 0..50u32 {
        leader.apply_one(put(format!("k{n:02}").as_bytes(), &n.to_be_bytes()));
    }
    let scratch = tempfile::tempdir().unwrap();
    let checkpoint = scratch.path().join("checkpoint");
    let take = leader.executor().checkpointer();
    // Applied while the checkpoint is being taken elsewhere: in it or not, never half.
    let (slot, version) = take(&checkpoint).unwrap();
    assert_eq!(slot, leader.executor().applied_slot());
    assert_eq!(version, leader.executor().current_version());
    assert_eq!(read_checkpoint(&checkpoint).unwrap(), (slot, version));

    let mut follower = Node::new(options());
    follower.apply_one(put(b"only-here", b"x"));
    let reader = follower.reader();
    let staged = follower.executor().staging_dir();
    std::fs::rename(&checkpoint, &staged).unwrap();
    assert_eq!(
        follower.executor().install_checkpoint(&staged).unwrap(),
        slot
    );
    assert_eq!(follower.executor().applied_slot(), slot);
    // The reader taken before the install reads the new database.
    assert_eq!(reader.applied().slot, slot);
    let got = reader.get(b"k07", version).unwrap().map(|kv| kv.value);
    assert_eq!(got, Some(7u32.to_be_bytes().to_vec()));
    assert!(reader.get(b"only-here", version).unwrap().is_none());
    assert_eq!(follower.dump(), leader.dump());
    // Both go on identically from there.
    leader.apply_one(put(b"after", b"1"));
    follower.apply_one(put(b"after", b"1"));
    assert_eq!(follower.dump(), leader.dump());
    drop(reader); // it holds the database open
    follower.reopen();
    assert_eq!(follower.executor().applied_slot(), slot + 1);
    assert_eq!(follower.dump(), leader.dump());
    // The replaced database is gone; only the active one and ACTIVE remain.
    let mut names: Vec<String> = std::fs::read_dir(follower.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["ACTIVE".to_string(), format!("db-{slot:020}")]);
}

#[test]
fn an_install_interrupted_before_active_changes_leaves_the_old_state() {
    let mut leader = Node::new(options());
    leader.apply_one(put(b"new", b"state"));
    let scratch = tempfile::tempdir().unwrap();
    let checkpoint = scratch.path().join("checkpoint");
    let take = leader.executor().checkpointer();
    let (slot, _) = take(&checkpoint).unwrap();

    let mut follower = Node::new(options());
    let before = follower.dump();
    // A crash after the checkpoint was moved into place but before ACTIVE named it.
    let moved = follower.dir.path().join(format!("db-{slot:020}"));
    std::fs::rename(&checkpoint, &moved).unwrap();
    follower.reopen();
    assert_eq!(follower.executor().applied_slot(), 0);
    assert_eq!(follower.dump(), before);
    assert!(!moved.exists(), "the unused database was not removed");
    // An install that is not ahead of the applied slot is refused and changes nothing.
    let again = follower.executor().staging_dir();
    let take = follower.executor().checkpointer();
    take(&again).unwrap();
    let error = follower.executor().install_checkpoint(&again).unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error}");
    assert_eq!(follower.dump(), before);
}

// ---- documents ----------------------------------------------------------------------

fn put_document(key: &[u8], body: DocumentBody, expected_version: Option<u64>) -> KvCommand {
    write(WriteRequest::PutDocument {
        key: key.to_vec(),
        body,
        expected_version,
    })
}

fn patch_document(key: &[u8], format: PatchFormat, patch: &[u8]) -> KvCommand {
    write(WriteRequest::PatchDocument {
        key: key.to_vec(),
        format,
        patch: patch.to_vec(),
        expected_version: None,
    })
}

fn full(json: &[u8]) -> DocumentBody {
    DocumentBody::Full(json.to_vec())
}

fn delta(base_version: u64, patch: &[u8]) -> DocumentBody {
    DocumentBody::Delta {
        base_version,
        patch: patch.to_vec(),
    }
}

fn refusal_reason(outcome: &WriteOutcome) -> DocumentReason {
    match outcome {
        WriteOutcome::DocumentRefused(refusal) => refusal.reason,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn a_delta_applies_only_to_its_base_and_a_moved_base_writes_nothing() {
    let mut node = Node::new(options());
    let v1 = node.apply_one(put_document(b"d", full(br#"{"a":1,"b":[1,2]}"#), None));
    assert_eq!(version_of(&v1), 1);
    let replace = br#"[{"op":"replace","path":"/a","value":2}]"#;
    assert_eq!(
        version_of(&node.apply_one(put_document(b"d", delta(1, replace), None))),
        2
    );
    assert_eq!(node.latest(b"d").unwrap().value, br#"{"a":2,"b":[1,2]}"#);

    // Based on version 1, but the key is at 2: nothing written, and the session does not
    // remember it, so the same request applies once sent again with the right base.
    let stale = with_session(put_document(b"d", delta(1, replace), None), "c", 1);
    assert_eq!(
        node.apply_one(stale),
        WriteOutcome::BaseMoved { current_version: 2 }
    );
    assert_eq!(node.executor().current_version(), 2);
    let add = br#"[{"op":"add","path":"/b/-","value":3}]"#;
    let fresh = with_session(put_document(b"d", delta(2, add), None), "c", 1);
    assert_eq!(version_of(&node.apply_one(fresh.clone())), 3);
    assert_eq!(
        version_of(&node.apply_one(fresh)),
        3,
        "a retry returns the outcome"
    );
    assert_eq!(node.latest(b"d").unwrap().value, br#"{"a":2,"b":[1,2,3]}"#);
    // A delta for a key that is gone.
    node.apply_one(delete(b"d"));
    assert_eq!(
        node.apply_one(put_document(b"d", delta(3, add), None)),
        WriteOutcome::BaseMoved { current_version: 0 }
    );
}

#[test]
fn document_writes_check_the_expected_version_and_patches_fail_whole() {
    let mut node = Node::new(options());
    let only_if_absent = put_document(b"d", full(br#"{"n":1}"#), Some(0));
    assert_eq!(version_of(&node.apply_one(only_if_absent.clone())), 1);
    let outcome = node.apply_one(only_if_absent);
    assert_eq!(refusal_reason(&outcome), DocumentReason::VersionMismatch);
    let WriteOutcome::DocumentRefused(refusal) = outcome else {
        unreachable!()
    };
    assert_eq!(refusal.current_version, Some(1));

    let test_fails =
        br#"[{"op":"replace","path":"/n","value":5},{"op":"test","path":"/n","value":1}]"#;
    let outcome = node.apply_one(patch_document(b"d", PatchFormat::JsonPatch, test_fails));
    assert_eq!(refusal_reason(&outcome), DocumentReason::TestFailed);
    assert_eq!(node.latest(b"d").unwrap().value, br#"{"n":1}"#);
    assert_eq!(
        node.executor().current_version(),
        1,
        "a refused patch takes no version"
    );

    let merge = br#"{"n":null,"m":{"x":true}}"#;
    let outcome = node.apply_one(patch_document(b"d", PatchFormat::MergePatch, merge));
    assert_eq!(version_of(&outcome), 2);
    assert_eq!(node.latest(b"d").unwrap().value, br#"{"m":{"x":true}}"#);

    let outcome = node.apply_one(patch_document(b"none", PatchFormat::MergePatch, b"{}"));
    assert_eq!(refusal_reason(&outcome), DocumentReason::NoDocument);
    node.apply_one(put(b"raw", b"\xff not json"));
    let outcome = node.apply_one(patch_document(b"raw", PatchFormat::MergePatch, b"{}"));
    assert_eq!(refusal_reason(&outcome), DocumentReason::NotADocument);
}

#[test]
fn a_patch_that_would_outgrow_value_bytes_max_is_refused() {
    let mut node = Node::new(ExecutorOptions {
        value_bytes_max: 64,
        ..options()
    });
    node.apply_one(put_document(b"d", full(br#"{"a":1}"#), None));
    let big = format!(r#"{{"b":"{}"}}"#, "x".repeat(100));
    let outcome = node.apply_one(patch_document(
        b"d",
        PatchFormat::MergePatch,
        big.as_bytes(),
    ));
    assert_eq!(refusal_reason(&outcome), DocumentReason::TooLarge);
    assert_eq!(node.latest(b"d").unwrap().value, br#"{"a":1}"#);
}

#[test]
fn replicas_applying_the_same_document_log_hold_the_same_bytes() {
    let doc = br#"{"services":[{"name":"a","port":1},{"name":"b","port":2}],"v":1.0}"#;
    let log = [
        put_document(b"d", full(doc), None),
        patch_document(
            b"d",
            PatchFormat::JsonPatch,
            br#"[{"op":"move","from":"/services/0","path":"/services/-"},{"op":"copy","from":"/v","path":"/w"}]"#,
        ),
        put_document(b"d", delta(2, br#"[{"op":"remove","path":"/w"}]"#), None),
        patch_document(b"d", PatchFormat::MergePatch, br#"{"v":2.50}"#),
    ];
    let mut a = Node::new(options());
    let mut b = Node::new(options());
    for command in &log {
        assert_eq!(a.apply_one(command.clone()), b.apply_one(command.clone()));
    }
    assert_eq!(
        a.latest(b"d").unwrap().value,
        br#"{"services":[{"name":"b","port":2},{"name":"a","port":1}],"v":2.50}"#
    );
    assert_eq!(a.dump(), b.dump());
}

#[test]
fn copies_and_patched_sets_read_the_state_before_them_in_the_command() {
    let doc = br#"{"pool":{"size":4,"name":"web"},"tags":["a"]}"#;
    let mut a = Node::new(options());
    let mut b = Node::new(options());
    let patch = br#"[{"op":"replace","path":"/pool/size","value":8}]"#.to_vec();
    let log = [
        put(b"draft", doc),
        // A patch of the draft, a copy of the patched draft, then the draft cleared: the
        // copy sees the patch, and the clear comes after it.
        commit(
            1,
            vec![
                Mutation::SetPatched {
                    key: b"draft".to_vec(),
                    base: b"draft".to_vec(),
                    patch: patch.clone(),
                },
                Mutation::Copy {
                    key: b"r1".to_vec(),
                    from: b"draft".to_vec(),
                },
                Mutation::Clear {
                    key: b"draft".to_vec(),
                },
            ],
            vec![range(b"draft", b"draft\0")],
        ),
        // From a key that holds nothing: the whole command is rejected.
        commit(
            2,
            vec![
                set(b"x", b"1"),
                Mutation::Copy {
                    key: b"r2".to_vec(),
                    from: b"draft".to_vec(),
                },
            ],
            vec![],
        ),
        commit(
            2,
            vec![
                set(b"x", b"1"),
                Mutation::SetPatched {
                    key: b"r2".to_vec(),
                    base: b"r1".to_vec(),
                    patch: br#"[{"op":"test","path":"/pool/size","value":4}]"#.to_vec(),
                },
            ],
            vec![],
        ),
    ];
    let mut outcomes = Vec::new();
    for command in &log {
        let outcome = a.apply_one(command.clone());
        assert_eq!(outcome, b.apply_one(command.clone()));
        outcomes.push(outcome);
    }
    assert_eq!(version_of(&outcomes[1]), 2);
    assert!(is_rejected(&outcomes[2]), "{:?}", outcomes[2]);
    assert!(
        matches!(&outcomes[3], WriteOutcome::DocumentRefused(r) if r.reason == DocumentReason::TestFailed),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(
        a.latest(b"r1").unwrap().value,
        br#"{"pool":{"size":8,"name":"web"},"tags":["a"]}"#
    );
    assert_eq!(a.latest(b"draft"), None);
    assert_eq!(a.latest(b"x"), None);
    assert_eq!(a.latest(b"r2"), None);
    assert_eq!(a.dump(), b.dump());
}

mod uploads;

#[test]
fn watch_events_of_document_writes_carried_as_patches_hold_the_patch() {
    let mut node = Node::new(options());
    node.apply_one(write(WriteRequest::PutDocument {
        key: b"d".to_vec(),
        body: DocumentBody::Full(br#"{"a":1,"b":[1]}"#.to_vec()),
        expected_version: None,
    }));
    let patch = br#"[{"op":"add","path":"/b/-","value":2}]"#.to_vec();
    node.apply_one(write(WriteRequest::PatchDocument {
        key: b"d".to_vec(),
        format: PatchFormat::JsonPatch,
        patch: patch.clone(),
        expected_version: None,
    }));
    let delta = br#"[{"op":"replace","path":"/a","value":5}]"#.to_vec();
    node.apply_one(write(WriteRequest::PutDocument {
        key: b"d".to_vec(),
        body: DocumentBody::Delta {
            base_version: 2,
            patch: delta.clone(),
        },
        expected_version: None,
    }));
    let merge = br#"{"c":true}"#.to_vec();
    node.apply_one(write(WriteRequest::PatchDocument {
        key: b"d".to_vec(),
        format: PatchFormat::MergePatch,
        patch: merge.clone(),
        expected_version: None,
    }));
    let page = node.reader().watch_events(&range(b"", b""), 1, 10).unwrap();
    let seen: Vec<_> = (page.events.iter())
        .map(|e| (e.kind, e.value.clone().unwrap(), e.patch.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (EventKind::Put, br#"{"a":1,"b":[1]}"#.to_vec(), None),
            (
                EventKind::Put,
                br#"{"a":1,"b":[1,2]}"#.to_vec(),
                Some((PatchFormat::JsonPatch, patch))
            ),
            (
                EventKind::Put,
                br#"{"a":5,"b":[1,2]}"#.to_vec(),
                Some((PatchFormat::JsonPatch, delta))
            ),
            (
                EventKind::Put,
                br#"{"a":5,"b":[1,2],"c":true}"#.to_vec(),
                Some((PatchFormat::MergePatch, merge))
            ),
        ]
    );
}
