//! Recovery on a real 3-process cluster with frequent snapshots: a replica killed with
//! kill -9 while the others write and compact past it comes back through a snapshot
//! transfer, and a whole cluster killed with kill -9 restarts from RocksDB and compacted
//! WALs without losing an acknowledged write.

mod support;

use std::path::Path;
use std::time::Duration;

use paxkv::api::gen::paxkv::{GetRequest, PutRequest};
use paxkv::api::TPaxkvSyncClient;
use support::{snapshot_slots, Deadline, Retrying, ServerCluster};

const CALLS: Duration = Duration::from_secs(30);
/// Small enough that a few hundred writes compact the log several times.
const SNAPSHOTS: &str =
    "[snapshot]\ninterval_slots = 100\nretain_slots = 20\ntransfer_bytes_per_sec = 8388608\n";

fn put(client: &mut Retrying, key: &str, value: &str) {
    let request = || PutRequest::new(key.as_bytes().to_vec(), value.as_bytes().to_vec(), None);
    client.call(|c| c.put(request()));
}

fn get(client: &mut Retrying, key: &str) -> Option<Vec<u8>> {
    let request = || GetRequest::new(key.as_bytes().to_vec(), None);
    client.call(|c| c.get(request())).kv.map(|kv| kv.value)
}

fn wal_segments(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("wal")).map_or(0, |entries| entries.count())
}

fn applied_slot(client: &mut Retrying, replica: usize) -> i64 {
    let status = client.call(|c| c.status());
    status.replicas[replica].applied_slot
}

#[test]
fn a_replica_behind_the_compacted_log_catches_up_by_snapshot_and_all_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::start_with(dir.path(), SNAPSHOTS);
    let leader = cluster.leader(0);
    let behind = (leader + 1) % 3;
    let mut client = Retrying::new(cluster.endpoints[leader], CALLS);
    for n in 0..50 {
        put(&mut client, &format!("early/{n:03}"), &format!("e{n}"));
    }
    cluster.kill9(behind);
    for n in 0..600 {
        put(&mut client, &format!("late/{n:03}"), &format!("l{n}"));
    }
    // The others compacted past everything the stopped replica has.
    let snapshots = snapshot_slots(&cluster.data_dir(leader));
    assert!(
        snapshots.last().is_some_and(|&slot| slot > 300),
        "the leader holds snapshots {snapshots:?}"
    );
    let stopped_snapshots = snapshot_slots(&cluster.data_dir(behind));
    cluster.start_server(behind);
    cluster.wait_ready();
    let mut lagging = Retrying::new(cluster.endpoints[behind], CALLS);
    // Linearizable reads on the restarted replica: served from its own state once it has
    // applied the leader's read index, so this passes only once it has caught up.
    for n in (0..50).step_by(7) {
        let got = get(&mut lagging, &format!("early/{n:03}"));
        assert_eq!(got, Some(format!("e{n}").into_bytes()));
    }
    for n in (0..600).step_by(37) {
        let got = get(&mut lagging, &format!("late/{n:03}"));
        assert_eq!(got, Some(format!("l{n}").into_bytes()), "late/{n:03}");
    }
    let log = std::fs::read_to_string(cluster.dir.join(format!("node{}.log", behind + 1)));
    let log = log.unwrap_or_default();
    assert!(
        log.contains("snapshot installed"),
        "the restarted replica caught up without a snapshot (it had {stopped_snapshots:?})"
    );
    // It goes on taking writes, and its own snapshots, from there.
    for n in 0..150 {
        put(&mut lagging, &format!("after/{n:03}"), "a");
    }
    let deadline = Deadline::after(CALLS);
    while applied_slot(&mut client, behind) < applied_slot(&mut client, leader) {
        assert!(!deadline.passed(), "the restarted replica does not keep up");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..3 {
        assert!(
            wal_segments(&cluster.data_dir(i)) > 0,
            "replica {i} has no WAL left"
        );
    }

    // Every replica killed at once, then restarted on its own data.
    for i in 0..3 {
        cluster.kill9(i);
    }
    for i in 0..3 {
        cluster.start_server(i);
    }
    cluster.wait_ready();
    for i in 0..3 {
        let mut client = Retrying::new(cluster.endpoints[i], CALLS);
        assert_eq!(get(&mut client, "early/049"), Some(b"e49".to_vec()));
        assert_eq!(get(&mut client, "late/599"), Some(b"l599".to_vec()));
        assert_eq!(get(&mut client, "after/149"), Some(b"a".to_vec()));
    }
}
