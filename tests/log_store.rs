//! The consensus core over the real WAL: records written through `LogStore` on disk, a crash
//! that loses what was not synced, and a restart that recovers the replica.

use paxkv::consensus::{Config, Message, Replica, Role, Slot, Value};
use paxkv::replica::LogStore;
use paxkv_wal::WalOptions;

/// One replica driven as the service drives it, persisting through a real WAL.
struct Node {
    replica: Replica,
    store: LogStore,
    applied: Vec<(Slot, Value)>,
}

impl Node {
    fn open(dir: &std::path::Path, applied: Vec<(Slot, Value)>) -> Node {
        Node::open_with(dir, applied, WalOptions::default())
    }

    fn open_with(dir: &std::path::Path, applied: Vec<(Slot, Value)>, wal: WalOptions) -> Node {
        let (store, state) = LogStore::open(dir, wal).unwrap();
        let config = Config::new(1, vec![1]);
        let replica = Replica::restore(config, 7, state, applied.len() as Slot).unwrap();
        Node {
            replica,
            store,
            applied,
        }
    }

    /// Take Readies until none is left. With `sync` false, records are written but never
    /// made durable, and nothing that depends on them happens: the crash window.
    fn drive(&mut self, sync: bool) {
        while self.replica.has_ready() {
            let ready = self.replica.ready();
            assert!(ready.messages.is_empty(), "a single replica has no peers");
            let compacted = self.store.append(&ready.records).unwrap();
            if !sync {
                return;
            }
            self.store.sync().unwrap();
            if let Some(lsn) = compacted {
                self.store.compact_before(lsn).unwrap();
            }
            let to_self: Vec<Message> = ready.persisted_messages.clone();
            self.applied.extend(ready.committed.iter().cloned());
            self.replica.advance(ready);
            for message in to_self {
                self.replica.step(message);
            }
        }
    }

    fn elect(&mut self) {
        for _ in 0..100 {
            if self.replica.role() == Role::Leader {
                return;
            }
            self.replica.tick();
            self.drive(true);
        }
        panic!("single replica did not elect itself");
    }
}

fn command(i: u32) -> Vec<u8> {
    format!("command {i}").into_bytes()
}

#[test]
fn restart_recovers_every_synced_command_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), Vec::new());
    node.elect();
    for i in 0..50 {
        node.replica.propose(command(i)).unwrap();
        node.drive(true);
    }
    assert_eq!(node.applied.len(), 50);
    let applied = node.applied.clone();
    drop(node);

    let mut node = Node::open(dir.path(), applied.clone());
    assert_eq!(node.replica.commit_index(), 50);
    assert_eq!(
        node.replica.entry(50).unwrap().value,
        Value::Commands(vec![command(49)])
    );
    node.elect();
    node.replica.propose(command(50)).unwrap();
    node.drive(true);
    assert_eq!(node.applied.len(), 51);
    assert_eq!(node.applied[..50], applied[..]);
}

#[test]
fn records_never_synced_are_lost_and_nothing_depended_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), Vec::new());
    node.elect();
    node.replica.propose(command(1)).unwrap();
    node.drive(true);
    node.replica.propose(command(2)).unwrap();
    node.drive(false);
    let applied = node.applied.clone();
    assert_eq!(applied.len(), 1, "the unsynced command must not be applied");
    drop(node);

    let (_, state) = LogStore::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(state.commit_index, 1);
    assert_eq!(state.log[&1].value, Value::Commands(vec![command(1)]));
    assert!(
        !state.log.contains_key(&2),
        "an unsynced accept survived a crash"
    );
}

#[test]
fn compaction_removes_old_segments_and_a_restart_rebuilds_the_kept_log() {
    let dir = tempfile::tempdir().unwrap();
    let wal = WalOptions {
        segment_bytes_max: 1024,
        ..WalOptions::default()
    };
    let mut node = Node::open_with(dir.path(), Vec::new(), wal.clone());
    node.elect();
    for i in 0..200 {
        node.replica.propose(command(i)).unwrap();
        node.drive(true);
    }
    let segments_before = node.store.wal().segments().len();
    node.replica.compact(150);
    node.drive(true);
    let first_lsn = node.store.wal().first_lsn();
    assert!(first_lsn > 1, "no segment was removed");
    assert!(node.store.wal().segments().len() < segments_before / 2);
    let applied = node.applied.clone();
    drop(node);

    let (_, state) = LogStore::open(dir.path(), wal.clone()).unwrap();
    assert_eq!((state.compacted, state.commit_index), (150, 200));
    assert!(state.log.keys().all(|&slot| slot > 150));
    assert_eq!(state.log[&200].value, Value::Commands(vec![command(199)]));
    // A state machine that has the snapshot (all 200 applied) restarts and goes on.
    let mut node = Node::open_with(dir.path(), applied.clone(), wal.clone());
    node.elect();
    node.replica.propose(command(200)).unwrap();
    node.drive(true);
    assert_eq!(node.applied.len(), 201);
    drop(node);
    // One behind the compacted prefix cannot: those slots are gone from the log.
    let (_, state) = LogStore::open(dir.path(), wal).unwrap();
    let behind = Replica::restore(Config::new(1, vec![1]), 7, state, 100);
    assert!(
        behind.is_err(),
        "a state machine behind the compaction was accepted"
    );
}
