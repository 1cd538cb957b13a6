//! The chaos cluster runner on real processes: leader election, pause and kill of the
//! leader, restart, and teardown by PID.
mod support;

use std::path::Path;
use std::time::Duration;

use paxkv_chaos::cluster::{Cluster, NodeState, Timing};

const READY: Duration = Duration::from_secs(30);

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn pausing_or_killing_the_leader_elects_another_and_drop_reaps_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(
        &support::paxkv_binary(),
        dir.path(),
        &Timing::default(),
        READY,
    )
    .unwrap();
    let first = cluster.wait_for_leader(READY).unwrap();

    cluster.pause(first).unwrap();
    assert_eq!(cluster.state(first), NodeState::Paused);
    let second = cluster.wait_for_leader(READY).unwrap();
    assert_ne!(second, first, "a stopped replica cannot stay leader");
    assert!(cluster.pause(first).is_err(), "already paused");
    cluster.resume(first).unwrap();

    let pid = cluster.pid(second).unwrap();
    cluster.kill9(second).unwrap();
    assert!(!process_exists(pid), "kill9 reaps the process");
    assert_eq!(cluster.state(second), NodeState::Killed);
    let third = cluster.wait_for_leader(READY).unwrap();
    assert_ne!(third, second);
    assert!(
        cluster.resume(second).is_err(),
        "a killed replica cannot resume"
    );

    cluster.heal().unwrap();
    assert!(cluster
        .ids()
        .iter()
        .all(|&id| cluster.state(id) == NodeState::Running));
    cluster.wait_for_leader(READY).unwrap();
    assert!(cluster.take_crashed().is_empty());

    // A paused replica is torn down too.
    cluster.pause(first).unwrap();
    let pids: Vec<u32> = cluster
        .ids()
        .iter()
        .filter_map(|&id| cluster.pid(id))
        .collect();
    assert_eq!(pids.len(), 3);
    drop(cluster);
    for pid in pids {
        assert!(!process_exists(pid), "pid {pid} survived the drop");
    }
}
