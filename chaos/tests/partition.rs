//! Network partitions through the cluster's link proxies: an isolated leader is replaced
//! and rejoins, a one-way cut leader too, and a chaos run under both kinds stays valid.
mod support;

use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::PutRequest;
use paxkv::api::TPaxkvSyncClient;
use paxkv_chaos::client::connect;
use paxkv_chaos::cluster::{Cluster, Timing};
use paxkv_chaos::history::Clock;
use paxkv_chaos::nemesis::FaultKind;

const READY: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until a majority names a leader other than `old`.
fn wait_for_new_leader(cluster: &mut Cluster, old: u32) -> u32 {
    let clock = Clock::start();
    loop {
        let leader = cluster.wait_for_leader(READY).unwrap();
        if leader != old {
            return leader;
        }
        assert!(clock.elapsed() < READY, "{old} still leads");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A put through replica `id`, retried until it succeeds.
fn put_through(cluster: &Cluster, id: u32, key: &str) {
    let endpoint = cluster.endpoints()[usize::try_from(id).unwrap() - 1];
    let clock = Clock::start();
    loop {
        let request = PutRequest::new(key.as_bytes().to_vec(), b"v".to_vec(), None);
        let result = connect(endpoint, CALL_TIMEOUT).and_then(|mut c| c.put(request));
        match result {
            Ok(_) => return,
            Err(error) => assert!(
                clock.elapsed() < READY,
                "put through {id} kept failing: {error}"
            ),
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cut_off_leader_is_replaced_and_rejoins_once_healed() {
    let dir = tempfile::tempdir().unwrap();
    let binary = support::paxkv_binary();
    let mut cluster = Cluster::start(&binary, dir.path(), &Timing::default(), READY).unwrap();
    let first = cluster.wait_for_leader(READY).unwrap();

    // Isolated both ways: the other two are a majority and elect one of themselves.
    for other in cluster.ids().into_iter().filter(|&o| o != first) {
        cluster.set_link_cut(first, other, true);
        cluster.set_link_cut(other, first, true);
    }
    assert_eq!(cluster.cut_links().len(), 4);
    let second = wait_for_new_leader(&mut cluster, first);
    put_through(&cluster, second, "isolated");
    cluster.heal_links();
    assert!(cluster.cut_links().is_empty());
    put_through(&cluster, first, "healed");

    // Cut one way: the others no longer hear the leader (it still hears them).
    let second = cluster.wait_for_leader(READY).unwrap();
    for other in cluster.ids().into_iter().filter(|&o| o != second) {
        cluster.set_link_cut(second, other, true);
    }
    let third = wait_for_new_leader(&mut cluster, second);
    put_through(&cluster, third, "one-way");
    cluster.heal_links();
    put_through(&cluster, second, "healed again");
    assert!(cluster.take_crashed().is_empty());
}

/// Every partition kind of one replica, each on the leader or a random replica, healed
/// before the next fault: no violation, no lost write, no crash. 25 s leaves the nemesis
/// 20 s, enough for three faults at their longest (3 s quiet, 3.6 s of fault), one of each
/// kind. (`partition-split` is `partition-isolate` with 3 replicas; the 5-replica run in
/// five_replicas.rs has it.)
#[test]
fn partitions_leave_no_violation_and_lose_no_acknowledged_write() {
    let kinds = [
        FaultKind::PartitionIsolate,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionSlow,
    ];
    support::assert_a_run_under_stays_valid(&kinds, 20_261_204);
}
