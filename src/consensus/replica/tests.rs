//! Protocol tests. Section references are to Lamport, "Paxos Made Simple" (2001), and to the
//! multi-Paxos refinements in docs/consensus.md.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::consensus::*;

/// A synchronous cluster: instant delivery, instant fsync, links that can be cut.
struct Harness {
    replicas: BTreeMap<NodeId, Replica>,
    wal: BTreeMap<NodeId, Vec<Record>>,
    applied: BTreeMap<NodeId, Vec<(Slot, Value)>>,
    reads: BTreeMap<NodeId, Vec<ReadState>>,
    queue: VecDeque<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
    wanted_snapshots: BTreeMap<NodeId, SnapshotWanted>,
}

fn config(id: NodeId, n: u32) -> Config {
    let mut config = Config::new(id, (1..=n).collect());
    config.heartbeat_interval_ticks = 1;
    config.election_timeout_ticks = 10;
    config
}

fn command(byte: u8) -> Vec<u8> {
    vec![byte; 4]
}

impl Harness {
    fn new(n: u32) -> Harness {
        Harness::with(n, |id| config(id, n))
    }

    fn with(n: u32, config_for: impl Fn(NodeId) -> Config) -> Harness {
        let replicas = (1..=n)
            .map(|id| (id, Replica::new(config_for(id), u64::from(id)).unwrap()))
            .collect();
        Harness {
            replicas,
            wal: BTreeMap::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            wanted_snapshots: BTreeMap::new(),
        }
    }

    fn replica(&mut self, id: NodeId) -> &mut Replica {
        self.replicas.get_mut(&id).unwrap()
    }

    fn drive(&mut self, id: NodeId) {
        let Some(replica) = self.replicas.get_mut(&id) else {
            return;
        };
        while replica.has_ready() {
            let ready = replica.ready();
            self.queue.extend(ready.messages.iter().cloned());
            self.wal
                .entry(id)
                .or_default()
                .extend(ready.records.iter().cloned());
            self.queue.extend(ready.persisted_messages.iter().cloned());
            self.applied
                .entry(id)
                .or_default()
                .extend(ready.committed.iter().cloned());
            self.reads
                .entry(id)
                .or_default()
                .extend(ready.read_states.iter().copied());
            if let Some(wanted) = ready.snapshot_wanted {
                self.wanted_snapshots.insert(id, wanted);
            }
            replica.advance(ready);
            replica.invariants();
        }
    }

    fn deliver_all(&mut self) {
        let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
        for id in &ids {
            self.drive(*id);
        }
        while let Some(message) = self.queue.pop_front() {
            if self.cut.contains(&(message.from, message.to)) {
                continue;
            }
            let to = message.to;
            if let Some(replica) = self.replicas.get_mut(&to) {
                replica.step(message);
                replica.invariants();
                self.drive(to);
            }
        }
    }

    fn tick(&mut self, id: NodeId) {
        if let Some(replica) = self.replicas.get_mut(&id) {
            replica.tick();
            replica.invariants();
        }
        self.deliver_all();
    }

    fn tick_all(&mut self, ticks: u32) {
        let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
        for _ in 0..ticks {
            for &id in &ids {
                self.tick(id);
            }
        }
    }

    /// Tick only `id` until it leads: its timer fires first, so it wins.
    fn elect(&mut self, id: NodeId) {
        for _ in 0..100 {
            if self.replica(id).role() == Role::Leader {
                return;
            }
            self.tick(id);
        }
        panic!("replica {id} did not become leader");
    }

    /// Proposes each command in turn at `leader`, delivering everything after each.
    fn propose_each(&mut self, leader: NodeId, bytes: std::ops::Range<u8>) {
        for byte in bytes {
            self.replica(leader).propose(command(byte)).unwrap();
            self.deliver_all();
        }
    }

    fn isolate(&mut self, id: NodeId) {
        for &other in self.replicas.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn applied_commands(&self, id: NodeId) -> Vec<Vec<u8>> {
        let applied = self.applied.get(&id).cloned().unwrap_or_default();
        applied
            .iter()
            .flat_map(|(_, value)| value.commands().to_vec())
            .collect()
    }
}

#[test]
fn single_replica_elects_itself_and_commits() {
    let mut h = Harness::new(1);
    h.elect(1);
    h.replica(1).propose(command(1)).unwrap();
    h.deliver_all();
    assert_eq!(h.applied_commands(1), vec![command(1)]);
}

#[test]
fn three_replicas_agree_on_every_slot() {
    let mut h = Harness::new(3);
    h.elect(2);
    h.propose_each(2, 0..20);
    h.tick_all(3);
    let expected: Vec<Vec<u8>> = (0..20).map(command).collect();
    for id in 1..=3 {
        assert_eq!(h.applied_commands(id), expected, "replica {id}");
    }
}

#[test]
fn proposals_between_readies_share_a_slot_up_to_slot_bytes_max() {
    let mut h = Harness::with(3, |id| {
        let mut c = config(id, 3);
        c.slot_bytes_max = 8;
        c
    });
    h.elect(1);
    let before = h.replica(1).commit_index();
    for byte in 0..4 {
        h.replica(1).propose(command(byte)).unwrap();
    }
    h.deliver_all();
    h.tick_all(2);
    // Four 4-byte commands, 8 bytes a slot: two slots.
    assert_eq!(h.replica(1).commit_index(), before + 2);
    assert_eq!(h.applied_commands(3).len(), 4);
}

#[test]
fn propose_errors_are_typed() {
    let mut h = Harness::with(3, |id| {
        let mut c = config(id, 3);
        c.slot_bytes_max = 8;
        c.pending_bytes_max = 8;
        c
    });
    assert_eq!(
        h.replica(1).propose(command(1)),
        Err(Error::NotLeader { leader: None })
    );
    h.elect(1);
    assert_eq!(
        h.replica(2).propose(command(1)),
        Err(Error::NotLeader { leader: Some(1) })
    );
    let too_large = h.replica(1).propose(vec![0; 9]);
    assert!(matches!(
        too_large,
        Err(Error::CommandTooLarge {
            command_bytes: 9,
            ..
        })
    ));
    h.replica(1).propose(command(1)).unwrap();
    h.replica(1).propose(command(2)).unwrap();
    let full = h.replica(1).propose(command(3));
    assert!(matches!(full, Err(Error::ProposalQueueFull { .. })));
}

#[test]
fn leader_keeps_at_most_inflight_slots_max_unchosen() {
    let mut h = Harness::with(3, |id| {
        let mut c = config(id, 3);
        c.slot_bytes_max = 4;
        c.inflight_slots_max = 2;
        c
    });
    h.elect(1);
    h.isolate(1);
    let before = h.replica(1).commit_index();
    for byte in 0..5 {
        h.replica(1).propose(command(byte)).unwrap();
    }
    h.deliver_all();
    let records = h.wal[&1]
        .iter()
        .filter(|r| matches!(r, Record::Accept { slot, .. } if *slot > before));
    assert_eq!(records.count(), 2, "only two slots may be in flight");
}

/// Paxos Made Simple §2.2, P2c: a new leader proposes the value accepted at the highest
/// ballot among a quorum of promises.
#[test]
fn phase1_adopts_the_value_with_the_highest_ballot() {
    let low = Value::Commands(vec![command(1)]);
    let high = Value::Commands(vec![command(2)]);
    let accepted = |ballot: Ballot, value: &Value| {
        DurableState::from_records(&[Record::Accept {
            slot: 1,
            ballot,
            value: value.clone(),
        }])
    };
    // The candidate's own accepted value is the older one; the quorum is {1, 2}.
    let states = [
        (1, accepted(Ballot::new(1, 2), &low)),
        (2, accepted(Ballot::new(2, 3), &high)),
        (3, DurableState::default()),
    ];
    let mut h = Harness::new(3);
    for (id, state) in states {
        let replica = Replica::restore(config(id, 3), 9, state, 0).unwrap();
        h.replicas.insert(id, replica);
    }
    h.cut.insert((3, 1));
    h.elect(1);
    h.cut.clear();
    h.tick_all(2);
    for id in 1..=3 {
        assert_eq!(h.applied[&id][0], (1, high.clone()), "replica {id}");
    }
}

/// Multi-Paxos: a slot no acceptor in the quorum knows of is filled with a no-op, so the log
/// has no holes and later slots can be applied.
#[test]
fn phase1_fills_holes_with_noops() {
    let value = Value::Commands(vec![command(7)]);
    let ballot = Ballot::new(1, 2);
    let state = DurableState::from_records(&[Record::Accept {
        slot: 3,
        ballot,
        value: value.clone(),
    }]);
    let mut h = Harness::new(3);
    h.replicas
        .insert(2, Replica::restore(config(2, 3), 2, state, 0).unwrap());
    h.elect(1);
    h.tick_all(2);
    let applied = &h.applied[&1];
    assert_eq!(applied[0], (1, Value::Noop));
    assert_eq!(applied[1], (2, Value::Noop));
    assert_eq!(applied[2], (3, value));
}

/// Durable before sent: a promise and a vote are handed out only as persisted messages, in
/// the same Ready as the records they depend on.
#[test]
fn promise_and_vote_wait_for_their_records() {
    let mut follower = Replica::new(config(2, 3), 1).unwrap();
    let bootstrap = follower.ready(); // records the bootstrap membership
    assert!(matches!(
        bootstrap.records[..],
        [Record::Membership { upto: 0, .. }]
    ));
    follower.advance(bootstrap);
    let ballot = Ballot::new(5, 1);
    follower.step(Message {
        from: 1,
        incarnation: 1,
        to: 2,
        body: MessageBody::Prepare {
            ballot,
            from_slot: 1,
        },
    });
    let ready = follower.ready();
    assert!(ready.messages.is_empty());
    assert_eq!(ready.records, vec![Record::Promise { ballot }]);
    assert!(matches!(
        ready.persisted_messages[0].body,
        MessageBody::Promise { .. }
    ));
    follower.advance(ready);

    let entries = vec![(1, Value::Noop)];
    let accept = MessageBody::Accept {
        ballot,
        entries,
        commit_index: 0,
    };
    follower.step(Message {
        from: 1,
        incarnation: 1,
        to: 2,
        body: accept,
    });
    let ready = follower.ready();
    assert!(ready.messages.is_empty());
    assert!(matches!(ready.records[0], Record::Accept { slot: 1, .. }));
    assert!(matches!(
        ready.persisted_messages[0].body,
        MessageBody::Accepted { .. }
    ));
}

/// Paxos Made Simple §2.2: an acceptor that votes for (ballot, value) must report at least
/// that ballot in any later promise, even for a slot it already knows is chosen.
#[test]
fn vote_for_a_known_chosen_value_is_recorded_at_the_new_ballot() {
    let value = Value::Commands(vec![command(1)]);
    let state = DurableState::from_records(&[Record::Chosen {
        slot: 1,
        value: value.clone(),
    }]);
    let mut acceptor = Replica::restore(config(2, 3), 1, state, 0).unwrap();
    let ballot = Ballot::new(4, 1);
    let entries = vec![(1, value.clone())];
    let accept = MessageBody::Accept {
        ballot,
        entries,
        commit_index: 0,
    };
    acceptor.step(Message {
        from: 1,
        incarnation: 1,
        to: 2,
        body: accept,
    });
    let ready = acceptor.ready();
    assert!(ready.records.contains(&Record::Accept {
        slot: 1,
        ballot,
        value
    }));
    assert!(matches!(
        ready.persisted_messages[0].body,
        MessageBody::Accepted { .. }
    ));
    let other = Value::Commands(vec![command(2)]);
    let stale = MessageBody::Accept {
        ballot,
        entries: vec![(1, other)],
        commit_index: 0,
    };
    acceptor.advance(ready);
    acceptor.step(Message {
        from: 1,
        incarnation: 1,
        to: 2,
        body: stale,
    });
    let ready = acceptor.ready();
    assert!(
        ready.persisted_messages.is_empty(),
        "voted for a value other than the chosen one"
    );
}

/// Paxos Made Simple §2.2, P1a: an acceptor refuses a ballot below its promise, and the
/// proposer learns of the higher one and stands down.
#[test]
fn stale_leader_is_refused_and_steps_down() {
    let mut h = Harness::new(3);
    h.elect(1);
    h.isolate(1);
    for _ in 0..40 {
        h.tick(2);
        h.tick(3);
    }
    let new_leader = [2, 3]
        .into_iter()
        .find(|&id| h.replica(id).role() == Role::Leader);
    let new_leader = new_leader.expect("the majority side elects a leader");
    h.cut.clear();
    h.replica(1).propose(command(9)).unwrap();
    h.deliver_all();
    assert_eq!(h.replica(1).role(), Role::Follower);
    assert_eq!(h.replica(new_leader).role(), Role::Leader);
    assert!(!h.applied_commands(new_leader).contains(&command(9)));
}

/// Pre-vote: a replica cut off from the cluster keeps losing its pre-vote and so never raises
/// its ballot; when it returns it does not depose the healthy leader.
#[test]
fn rejoining_replica_does_not_depose_a_healthy_leader() {
    let mut h = Harness::new(3);
    h.elect(1);
    let ballot = h.replica(1).promised();
    h.isolate(3);
    for _ in 0..100 {
        h.tick(3);
        h.tick(1);
        h.tick(2);
    }
    assert_eq!(
        h.replica(3).promised(),
        ballot,
        "isolated replica raised its ballot"
    );
    h.cut.clear();
    h.tick_all(50);
    assert_eq!(h.replica(1).role(), Role::Leader);
    assert_eq!(h.replica(1).promised(), ballot);
    assert_eq!(h.replica(3).leader(), Some(1));
}

/// Check-quorum: a leader that hears from no quorum for an election timeout steps down.
#[test]
fn leader_without_a_quorum_steps_down() {
    let mut h = Harness::new(3);
    h.elect(1);
    h.isolate(1);
    for _ in 0..30 {
        h.tick(1);
    }
    assert_ne!(h.replica(1).role(), Role::Leader);
    assert!(matches!(
        h.replica(1).read_index(1),
        Err(Error::NotLeader { .. })
    ));
}

#[test]
fn lagging_replica_fetches_chosen_slots() {
    let mut h = Harness::with(3, |id| {
        let mut c = config(id, 3);
        c.catch_up_bytes_max = 8;
        c
    });
    h.elect(1);
    h.isolate(3);
    h.propose_each(1, 0..10);
    assert!(h.applied_commands(3).is_empty());
    h.cut.clear();
    h.tick_all(20);
    assert_eq!(h.applied_commands(3), h.applied_commands(1));
    let learned = h.wal[&3]
        .iter()
        .filter(|r| matches!(r, Record::Chosen { .. }))
        .count();
    assert!(
        learned >= 10,
        "expected catch-up to deliver chosen records, saw {learned}"
    );
}

#[test]
fn restarted_replica_recovers_its_promise_log_and_commit() {
    let mut h = Harness::new(3);
    h.elect(1);
    h.propose_each(1, 0..5);
    h.tick_all(2);
    let before = (h.replica(2).promised(), h.replica(2).commit_index());
    let state = DurableState::from_records(&h.wal[&2]);
    let applied = h.applied[&2].len() as Slot;
    let restored = Replica::restore(config(2, 3), 99, state, applied).unwrap();
    restored.invariants();
    assert_eq!((restored.promised(), restored.commit_index()), before);
    h.replicas.insert(2, restored);
    h.replica(1).propose(command(42)).unwrap();
    h.deliver_all();
    h.tick_all(2);
    assert_eq!(h.applied_commands(2).last(), Some(&command(42)));
}

/// Read index: the answer waits for a quorum to confirm the leadership, and reads that arrive
/// together share one confirmation round.
#[test]
fn read_index_waits_for_a_quorum_and_batches() {
    let mut h = Harness::new(3);
    h.elect(1);
    h.replica(1).propose(command(1)).unwrap();
    h.deliver_all();
    let commit = h.replica(1).commit_index();
    h.cut.insert((2, 1));
    h.cut.insert((3, 1));
    for context in 0..10 {
        h.replica(1).read_index(context).unwrap();
    }
    h.deliver_all();
    assert!(
        h.reads.get(&1).is_none_or(Vec::is_empty),
        "read answered without a quorum"
    );
    h.cut.clear();
    h.tick_all(1);
    let reads = &h.reads[&1];
    assert_eq!(reads.len(), 10);
    assert!(reads.iter().all(|read| read.index == commit));
}

#[test]
fn five_replicas_survive_two_failures() {
    let mut h = Harness::new(5);
    h.elect(1);
    h.isolate(4);
    h.isolate(5);
    h.replica(1).propose(command(1)).unwrap();
    h.deliver_all();
    assert_eq!(h.applied_commands(1), vec![command(1)]);
    h.isolate(3);
    h.replica(1).propose(command(2)).unwrap();
    h.deliver_all();
    assert_eq!(
        h.applied_commands(1),
        vec![command(1)],
        "committed without a quorum"
    );
}

#[test]
fn invalid_configs_are_refused() {
    let mut c = config(4, 3);
    assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
    c = config(1, 3);
    c.members = vec![1, 1, 2];
    assert!(c.validate().is_err());
    c = config(1, 3);
    c.election_timeout_ticks = 2;
    assert!(c.validate().is_err());
}

impl Harness {
    /// Every replica snapshots its applied state and compacts its log below it.
    fn compact_all(&mut self) {
        for replica in self.replicas.values_mut() {
            let applied = replica.applied();
            replica.compact(applied);
        }
        self.deliver_all();
    }

    /// What `id`'s driver would do with a wanted snapshot: copy the peer's applied state
    /// up to the peer's compacted slot, and tell the core.
    fn install_from(&mut self, id: NodeId, from: NodeId) -> Slot {
        let upto = self.replicas[&from].compacted();
        let state: Vec<(Slot, Value)> = (self.applied[&from].iter())
            .filter(|(slot, _)| *slot <= upto)
            .cloned()
            .collect();
        self.applied.insert(id, state);
        assert!(self.replica(id).install_snapshot(upto));
        self.replica(id).invariants();
        self.deliver_all();
        upto
    }

    fn wanted(&mut self, id: NodeId) -> Option<SnapshotWanted> {
        self.wanted_snapshots.remove(&id)
    }
}

#[test]
fn compaction_drops_the_log_and_its_record_alone_restores_the_replica() {
    let mut h = Harness::new(3);
    h.elect(1);
    h.propose_each(1, 0..10);
    h.tick_all(2);
    h.compact_all();
    let compacted = h.replica(2).compacted();
    assert_eq!(compacted, h.replica(2).commit_index());
    assert_eq!(h.replica(2).log_slots(), 0);
    // The WAL once the segments before the Compacted record are gone.
    let wal = &h.wal[&2];
    let at = wal
        .iter()
        .rposition(|record| matches!(record, Record::Compacted { .. }))
        .expect("a Compacted record");
    let state = DurableState::from_records(&wal[at..]);
    assert_eq!(state.compacted, compacted);
    assert_eq!(state.commit_index, compacted);
    assert_eq!(state.promised, h.replica(2).promised());
    let applied = h.applied[&2].len() as Slot;
    let restored = Replica::restore(config(2, 3), 7, state, applied).unwrap();
    restored.invariants();
    h.replicas.insert(2, restored);
    h.replica(1).propose(command(42)).unwrap();
    h.deliver_all();
    h.tick_all(2);
    assert_eq!(h.applied_commands(2).last(), Some(&command(42)));
}

#[test]
fn replica_behind_a_compacted_log_installs_a_snapshot_and_follows_again() {
    let mut h = Harness::new(3);
    h.elect(1);
    h.isolate(3);
    h.propose_each(1, 0..10);
    h.tick_all(2);
    h.compact_all();
    h.cut.clear();
    h.tick_all(3);
    let wanted = h.wanted(3).expect("replica 3 asks for a snapshot");
    assert_eq!(wanted.upto, h.replica(1).compacted());
    let upto = h.install_from(3, wanted.from);
    assert_eq!(h.replica(3).commit_index(), upto);
    h.replica(1).propose(command(99)).unwrap();
    h.deliver_all();
    h.tick_all(3);
    assert_eq!(h.applied_commands(3), h.applied_commands(1));
    assert_eq!(h.applied_commands(3).last(), Some(&command(99)));
}

/// A candidate behind an acceptor's compaction must not lead: the slots it lacks may be
/// chosen, and only the acceptor's snapshot has their values. With the check disabled
/// (`lead_past_compacted`) it leads; then only the acceptors' refusal to vote for slots
/// they compacted (the second guard, below) stops it from overwriting them.
#[test]
fn candidate_behind_an_acceptors_compaction_does_not_lead() {
    for bug in [false, true] {
        let mut h = Harness::with(3, |id| {
            let mut c = config(id, 3);
            c.bugs.lead_past_compacted = bug;
            c
        });
        h.elect(1);
        h.isolate(3);
        h.propose_each(1, 0..5);
        h.tick_all(2);
        h.compact_all();
        // Replica 1 is gone; 3 comes back and runs Phase 1 straight away.
        h.replicas.remove(&1);
        h.cut.clear();
        h.replica(3).start_phase1(1_000);
        h.deliver_all();
        if bug {
            assert_eq!(h.replica(3).role(), Role::Leader);
            // Its proposal lands in compacted slot 1; replica 2 will not vote for it and
            // says why, so replica 3 steps down and asks for the snapshot.
            h.replica(3).propose(command(200)).unwrap();
            h.deliver_all();
            assert_eq!(h.replica(3).commit_index(), 0);
            assert_ne!(h.replica(3).role(), Role::Leader);
            assert!(h.wanted(3).is_some());
        } else {
            assert_ne!(h.replica(3).role(), Role::Leader);
            let wanted = h.wanted(3).expect("a snapshot is wanted");
            assert_eq!((wanted.from, wanted.upto), (2, h.replica(2).compacted()));
        }
    }
}

#[test]
fn restore_takes_a_state_machine_ahead_of_the_wal_as_installed_and_refuses_one_behind() {
    let state = DurableState::default();
    let restored = Replica::restore(config(1, 3), 1, state, 50).unwrap();
    restored.invariants();
    assert_eq!(
        (
            restored.compacted(),
            restored.commit_index(),
            restored.applied()
        ),
        (50, 50, 50)
    );
    let state = DurableState::from_records(&[Record::Compacted {
        upto: 40,
        promised: Ballot::new(2, 2),
    }]);
    assert_eq!(
        Replica::restore(config(1, 3), 1, state, 39).err(),
        Some(Error::StateMachineBehind {
            applied: 39,
            compacted: 40
        })
    );
}

/// A Ready still in flight may hand out slots a snapshot covers: installing one then would
/// apply them twice (the simulator found this), so the core refuses.
#[test]
#[should_panic(expected = "snapshot installed while a Ready is in flight")]
fn snapshot_install_with_a_ready_in_flight_panics() {
    let mut h = Harness::new(1);
    h.elect(1);
    h.replica(1).propose(command(1)).unwrap();
    let _in_flight = h.replica(1).ready();
    h.replica(1).install_snapshot(10);
}
