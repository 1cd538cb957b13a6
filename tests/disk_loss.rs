//! A replica whose data directory is gone, restarted with its old config, must not cost an
//! acknowledged write: on real processes, the scenario that lost one before replicas had an
//! identity on disk.

mod support;

use std::time::Duration;

use paxkv::api::gen::paxkv::{GetRequest, PutRequest};
use paxkv::api::TPaxkvSyncClient;
use support::{Deadline, Retrying, ServerCluster};

const CALLS: Duration = Duration::from_secs(30);
const REFUSED_WITHIN: Duration = Duration::from_secs(20);

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest::new(key.as_bytes().to_vec(), value.as_bytes().to_vec(), None)
}

#[test]
fn a_replica_that_lost_its_disk_is_refused_and_the_acknowledged_write_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::start(dir.path());
    let leader = cluster.leader(0);
    let down = (leader + 1) % 3;
    let wiped = (leader + 2) % 3;

    // One follower is down; a put is acknowledged by the leader and the other follower.
    cluster.kill9(down);
    let mut client = Retrying::new(cluster.endpoints[leader], CALLS);
    let version = client.call(|c| c.put(put("acknowledged", "v1")));

    // That follower's disk is replaced, and the old leader is down for a while.
    cluster.kill9(wiped);
    std::fs::remove_dir_all(cluster.data_dir(wiped)).unwrap();
    cluster.kill9(leader);

    // The operator restarts both followers with their old configs. The wiped one refuses
    // to start as a member instead of electing a leader with the one that was down.
    cluster.start_server_as(down, false);
    cluster.start_server_as(wiped, false);
    let mut refused = cluster.take_server(wiped).unwrap();
    let status = refused
        .wait_exit(REFUSED_WITHIN)
        .expect("a replica with an empty data directory must not start without --bootstrap");
    assert!(!status.success(), "{status:?}");
    let log = refused.log_tail(20);
    assert!(
        log.contains("holds no state and --bootstrap was not given"),
        "the refusal says why: {log}"
    );
    assert!(
        !paxkv::node::identity::has_state(&cluster.data_dir(wiped)),
        "the refused replica wrote no state"
    );

    // The old leader returns: with the follower that was down it is a quorum, and both hold
    // the acknowledged write at its version.
    cluster.start_server_as(leader, false);
    cluster.wait_ready();
    for i in [leader, down] {
        let mut client = Retrying::new(cluster.endpoints[i], CALLS);
        let request = GetRequest::new(b"acknowledged".to_vec(), None);
        let kv = client
            .call(|c| c.get(request.clone()))
            .kv
            .unwrap_or_else(|| panic!("replica {i} lost the acknowledged write"));
        assert_eq!(kv.value, b"v1".to_vec());
        assert_eq!(kv.mod_version, version);
    }
    // And the next write gets a version of its own.
    let mut client = Retrying::new(cluster.endpoints[down], CALLS);
    let next = client.call(|c| c.put(put("after", "v2")));
    assert!(next > version, "{next} after {version}");
    // The status names the cluster, and every replica a voter at the incarnation it was
    // created with: the refused one was never re-admitted as anything else.
    let status = client.call(|c| c.status());
    assert_eq!(status.cluster.as_deref(), Some("paxkv"));
    for replica in &status.replicas {
        assert_eq!(replica.member.as_deref(), Some("voter"), "{replica:?}");
        assert_eq!(replica.incarnation, Some(1), "{replica:?}");
    }
}

#[test]
fn a_replica_configured_for_another_cluster_is_refused_at_start_and_by_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::start(dir.path());
    let leader = cluster.leader(0);
    let other = (leader + 1) % 3;
    let mut client = Retrying::new(cluster.endpoints[leader], CALLS);
    client.call(|c| c.put(put("prod-key", "v1")));

    // Its config now names another cluster: the directory it finds belongs to this one.
    cluster.kill9(other);
    let config = dir.path().join(format!("node{}.toml", other + 1));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("cluster_name = \"staging\"\n{text}")).unwrap();
    cluster.start_server_as(other, true);
    let mut refused = cluster.take_server(other).unwrap();
    let status = refused.wait_exit(REFUSED_WITHIN).expect("refused at start");
    assert!(!status.success(), "{status:?}");
    let log = refused.log_tail(20);
    assert!(
        log.contains("belongs to cluster \"paxkv\", but the config's cluster_name is \"staging\""),
        "{log}"
    );

    // A new replica of that other cluster, given the same peer addresses, is refused by
    // every replica it reaches, and so learns nothing of this cluster.
    std::fs::rename(cluster.data_dir(other), dir.path().join("moved")).unwrap();
    cluster.start_server_as(other, true);
    for i in [leader, (leader + 2) % 3] {
        let log = dir.path().join(format!("node{}.log", i + 1));
        let deadline = Deadline::after(REFUSED_WITHIN);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("refused a peer connection") && text.contains("\"staging\"") {
                break;
            }
            assert!(
                !deadline.passed(),
                "replica {} did not refuse the other cluster:\n{text}",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // This cluster keeps serving with its two replicas.
    let mut client = Retrying::new(cluster.endpoints[leader], CALLS);
    client.call(|c| c.put(put("prod-key", "v2")));
}
