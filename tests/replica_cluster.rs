//! Three replicas in one process over real TCP on loopback, each with its own WAL on disk,
//! driven by the real driver threads. The state machine here records what it applies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paxkv::consensus::{NodeId, Role, Slot};
use paxkv::replica::{self, ApplyError, DriverError, DriverOptions, ReplicaNode, StateMachine};

type AppliedSlots = Vec<(Slot, Vec<Vec<u8>>)>;

/// Applied slots, kept in memory: survives "restarts" in this test like RocksDB would.
#[derive(Clone, Default)]
struct Recording {
    applied: Arc<Mutex<AppliedSlots>>,
}

impl StateMachine for Recording {
    type Outcome = Slot;

    fn applied_slot(&self) -> Slot {
        self.applied
            .lock()
            .unwrap()
            .last()
            .map_or(0, |(slot, _)| *slot)
    }

    fn apply_slot(&mut self, slot: Slot, commands: &[&[u8]]) -> Result<Vec<Slot>, ApplyError> {
        let mut applied = self.applied.lock().unwrap();
        let last = applied.last().map_or(0, |(slot, _)| *slot);
        assert_eq!(slot, last + 1, "slots applied out of order");
        applied.push((slot, commands.iter().map(|c| c.to_vec()).collect()));
        Ok(vec![slot; commands.len()])
    }
}

impl Recording {
    fn commands(&self) -> Vec<Vec<u8>> {
        let applied = self.applied.lock().unwrap();
        applied
            .iter()
            .flat_map(|(_, commands)| commands.clone())
            .collect()
    }
}

struct Cluster {
    addresses: BTreeMap<NodeId, SocketAddr>,
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    machines: BTreeMap<NodeId, Recording>,
    nodes: BTreeMap<NodeId, ReplicaNode<Slot>>,
}

impl Cluster {
    async fn start(n: u32) -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(id, listener);
        }
        let addresses = listeners
            .iter()
            .map(|(&id, l)| (id, l.local_addr().unwrap()))
            .collect();
        let mut cluster = Cluster {
            addresses,
            dirs: (1..=n)
                .map(|id| (id, tempfile::tempdir().unwrap()))
                .collect(),
            machines: (1..=n).map(|id| (id, Recording::default())).collect(),
            nodes: BTreeMap::new(),
        };
        for (id, listener) in listeners {
            cluster.launch(id, listener);
        }
        cluster
    }

    fn launch(&mut self, id: NodeId, listener: tokio::net::TcpListener) {
        let members = self.addresses.keys().copied().collect();
        let options = DriverOptions::new(id, members);
        let dir: &Path = self.dirs[&id].path();
        let machine = self.machines[&id].clone();
        let node = replica::start(listener, self.addresses.clone(), dir, machine, options).unwrap();
        self.nodes.insert(id, node);
    }

    async fn restart(&mut self, id: NodeId) {
        let listener = tokio::net::TcpListener::bind(self.addresses[&id])
            .await
            .unwrap();
        self.launch(id, listener);
    }

    async fn leader(&self) -> NodeId {
        for _ in 0..500 {
            for (&id, node) in &self.nodes {
                if node.handle.status().role == Some(Role::Leader) {
                    return id;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader elected within 5 s");
    }

    /// Propose through any live replica (followers forward to the leader), retrying
    /// across elections.
    async fn propose(&self, command: Vec<u8>) -> Slot {
        for attempt in 0..200 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let via = ids[attempt % ids.len()];
            match self.nodes[&via]
                .handle
                .propose(command.clone(), false)
                .await
            {
                Ok(slot) => return slot,
                Err(DriverError::NoLeader | DriverError::OutcomeUnknown) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("propose failed: {error}"),
            }
        }
        panic!("command never committed");
    }

    async fn wait_applied(&self, id: NodeId, commands: usize) {
        for _ in 0..500 {
            if self.machines[&id].commands().len() >= commands {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "replica {id} applied only {} commands",
            self.machines[&id].commands().len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_survive_a_leader_stop_and_a_restart_catches_up() {
    let mut cluster = Cluster::start(3).await;
    let first_leader = cluster.leader().await;
    let mut sent = Vec::new();
    for i in 0..50 {
        let command = format!("first {i}").into_bytes();
        cluster.propose(command.clone()).await;
        sent.push(command);
    }

    cluster.nodes.remove(&first_leader).unwrap().stop();
    let second_leader = cluster.leader().await;
    assert_ne!(second_leader, first_leader);
    for i in 0..50 {
        let command = format!("second {i}").into_bytes();
        cluster.propose(command.clone()).await;
        sent.push(command);
    }

    cluster.restart(first_leader).await;
    for id in 1..=3 {
        cluster.wait_applied(id, sent.len()).await;
        let applied = cluster.machines[&id].commands();
        assert_eq!(applied, sent, "replica {id} applied a different sequence");
    }

    let leader = cluster.leader().await;
    let index = cluster.nodes[&leader].handle.read_index().await.unwrap();
    assert!(
        index >= 100,
        "read index {index} misses acknowledged writes"
    );
    // A follower gets its read index from the leader, and has applied up to it.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let follower_index = cluster.nodes[&follower].handle.read_index().await.unwrap();
    assert!(follower_index >= index, "follower read index went back");
    assert!(cluster.nodes[&follower].handle.status().applied_slot >= follower_index);
}

/// The same cluster with the real RocksDB executor as the state machine: KV commands go
/// through consensus, and every replica's database ends up with the same versions and values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_commands_reach_rocksdb_identically_on_every_replica() {
    use paxkv::executor::{
        self, ExecutorOptions, KvCommand, KvStoreExecutor, WriteOutcome, WriteRequest,
    };

    let mut listeners = BTreeMap::new();
    for id in 1..=3 {
        listeners.insert(
            id,
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        );
    }
    let addresses: BTreeMap<NodeId, SocketAddr> = listeners
        .iter()
        .map(|(&id, l)| (id, l.local_addr().unwrap()))
        .collect();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let dir = root.path().join(format!("replica_{id}"));
        let kv = KvStoreExecutor::open(dir.join("kv"), ExecutorOptions::default()).unwrap();
        let options = DriverOptions::new(id, addresses.keys().copied().collect());
        let node =
            replica::start(listener, addresses.clone(), &dir.join("wal"), kv, options).unwrap();
        nodes.insert(id, node);
    }
    let leader = loop {
        let leading = nodes
            .iter()
            .find(|(_, n)| n.handle.status().role == Some(Role::Leader));
        if let Some((&id, _)) = leading {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut versions = Vec::new();
    for i in 0..20u32 {
        let command = KvCommand::Write {
            session: None,
            request: WriteRequest::Put {
                key: format!("key/{i:02}").into_bytes(),
                value: format!("value {i}").into_bytes(),
            },
        };
        let bytes = executor::encode(&command, 1 << 20).unwrap();
        // Through every replica in turn: followers forward to the leader.
        let via = [1, 2, 3][i as usize % 3];
        match nodes[&via].handle.propose(bytes, false).await.unwrap() {
            WriteOutcome::Committed { version, .. } => versions.push(version),
            other => panic!("put was not committed: {other:?}"),
        }
    }
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions must grow: {versions:?}"
    );
    // A read index covers every acknowledged write (the published status may lag the
    // replies by one Ready, so it cannot serve as the target).
    let index = nodes[&leader].handle.read_index().await.unwrap();
    let mut caught_up = false;
    for _ in 0..500 {
        if nodes
            .values()
            .all(|n| n.handle.status().applied_slot >= index)
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        caught_up,
        "replicas did not apply up to slot {index} within 5 s"
    );
    for node in std::mem::take(&mut nodes).into_values() {
        node.stop();
    }
    let last = *versions.last().unwrap();
    for id in 1..=3 {
        let dir = root.path().join(format!("replica_{id}")).join("kv");
        let kv = KvStoreExecutor::open(dir, ExecutorOptions::default()).unwrap();
        assert_eq!(kv.current_version(), last, "replica {id}");
        for i in 0..20u32 {
            let got = kv
                .reader()
                .get(format!("key/{i:02}").as_bytes(), last)
                .unwrap()
                .unwrap();
            assert_eq!(got.value, format!("value {i}").into_bytes(), "replica {id}");
            assert_eq!(got.mod_version, versions[i as usize], "replica {id}");
        }
    }
}
