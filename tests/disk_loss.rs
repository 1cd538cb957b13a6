//! A replica whose data directory is gone, restarted with its old config, must not cost an
//! acknowledged write: on real processes, the scenario that lost one before replicas had an
//! identity on disk, and the re-admission of the replica by the documented commands.

mod support;

use std::time::Duration;

use paxkv::api::gen::paxkv::{GetRequest, PutRequest, Unavailable};
use paxkv::api::TPaxkvSyncClient;
use support::{Deadline, Retrying, ServerCluster};

const CALLS: Duration = Duration::from_secs(30);
const REFUSED_WITHIN: Duration = Duration::from_secs(20);
/// How long a write is tried, and must fail, on the replica that was down and the empty one.
const NO_QUORUM_FOR: Duration = Duration::from_secs(8);

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest::new(key.as_bytes().to_vec(), value.as_bytes().to_vec(), None)
}

#[test]
fn a_replica_that_lost_its_disk_waits_as_a_learner_and_the_acknowledged_write_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::start(dir.path());
    let leader = cluster.leader(0);
    let down = (leader + 1) % 3;
    let wiped = (leader + 2) % 3;
    let wiped_id = wiped as i32 + 1;

    // One follower is down; a put is acknowledged by the leader and the other follower.
    cluster.kill9(down);
    let mut client = Retrying::new(cluster.endpoints[leader], CALLS);
    let version = client.call(|c| c.put(put("acknowledged", "v1")));

    // That follower's disk is replaced, and the old leader is down for a while.
    cluster.kill9(wiped);
    std::fs::remove_dir_all(cluster.data_dir(wiped)).unwrap();
    cluster.kill9(leader);

    // The operator restarts both followers with their old configs. The wiped one starts as
    // a new incarnation that neither votes nor promises: the two elect nobody, and a write
    // sent to them is not acknowledged.
    cluster.start_server_as(down, false);
    cluster.start_server_as(wiped, false);
    let mut client = Retrying::new(cluster.endpoints[down], NO_QUORUM_FOR);
    let refused = client.try_call(|c| c.put(put("lost?", "no")));
    let error = refused.expect_err("two replicas, one of them empty, acknowledged a write");
    assert!(
        support::user_error::<Unavailable>(&error).is_some(),
        "{}",
        support::describe(&error)
    );
    let log = cluster.servers[wiped].as_ref().unwrap().log_tail(40);
    assert!(
        log.contains("joins the cluster as a new incarnation"),
        "{log}"
    );

    // The old leader returns: with the follower that was down it is a quorum, and both hold
    // the acknowledged write at its version.
    cluster.start_server_as(leader, false);
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

    // The wiped replica is not healthy, and the leader lists it as waiting to be added at
    // its new incarnation, while the membership still names its old one.
    let own = Retrying::new(cluster.endpoints[wiped], CALLS).call(|c| c.status());
    assert!(!own.healthy, "{own:?}");
    let listed = wait_for(|| {
        let list = client.call(|c| c.admin_member_list());
        (!list.candidates.is_empty()).then_some(list)
    });
    let candidate = &listed.candidates[0];
    assert_eq!(candidate.id, wiped_id, "{listed:?}");
    assert!(candidate.incarnation > 1, "{listed:?}");
    let old = listed.members.iter().find(|m| m.id == wiped_id).unwrap();
    assert_eq!((old.kind.as_str(), old.incarnation), ("voter", 1));

    // Re-admitted by the documented commands: add (the new incarnation replaces the old
    // voter), then promote once it has caught up.
    let endpoint = cluster.endpoints[down].to_string();
    let wiped_arg = wiped_id.to_string();
    let added = paxkv_cli(&[
        "admin",
        "member",
        "add",
        &wiped_arg,
        "--endpoint",
        &endpoint,
    ]);
    assert!(added.contains(&format!("{wiped_id}    learner")), "{added}");
    let promote = ["admin", "member", "promote", &wiped_arg, "--wait", "30"];
    let promoted = paxkv_cli(&[&promote[..], &["--endpoint", &endpoint]].concat());
    let line = (promoted.lines())
        .find(|line| line.starts_with(&format!("{wiped_id} ")))
        .unwrap_or_else(|| panic!("{promoted}"));
    assert!(
        line.contains("voter")
            && line.contains(&candidate.incarnation.to_string())
            // Added without an address, it keeps none: each replica's config names it.
            && line.contains("(config)"),
        "{line}"
    );

    // Once every replica knows the promotion committed (status on the replica itself shows
    // it a voter, and healthy), it votes, and holds the data: with the leader down, it and
    // the other replica serve the acknowledged write and take new ones. (Before that, the
    // membership that governs the promotion has two voters and tolerates no failure.)
    let mut watching = Retrying::new(cluster.endpoints[wiped], CALLS);
    wait_for(|| {
        let status = watching.call(|c| c.status());
        let own = status.replicas.iter().find(|r| r.id == wiped_id)?;
        let voter = own.member.as_deref() == Some("voter")
            && own.incarnation == Some(candidate.incarnation);
        (voter && status.healthy && status.replicas.iter().all(|r| r.reachable)).then_some(())
    });
    let leader_now = cluster.leader(down);
    cluster.kill9(leader_now);
    let survivor = [leader, down, wiped]
        .into_iter()
        .find(|&i| i != leader_now && i != wiped);
    for i in [wiped, survivor.unwrap()] {
        let mut client = Retrying::new(cluster.endpoints[i], CALLS);
        let request = GetRequest::new(b"acknowledged".to_vec(), None);
        let kv = client.call(|c| c.get(request.clone())).kv.expect("present");
        assert_eq!((kv.value, kv.mod_version), (b"v1".to_vec(), version));
        let after = GetRequest::new(b"after".to_vec(), None);
        let kv = client.call(|c| c.get(after.clone())).kv.expect("present");
        assert_eq!((kv.value, kv.mod_version), (b"v2".to_vec(), next));
    }
    let mut client = Retrying::new(cluster.endpoints[wiped], CALLS);
    let third = client.call(|c| c.put(put("third", "v3")));
    assert!(third > next);
    // Status names every replica at the incarnation the membership has for it.
    let status = client.call(|c| c.status());
    let entry = status.replicas.iter().find(|r| r.id == wiped_id).unwrap();
    assert_eq!(entry.member.as_deref(), Some("voter"), "{entry:?}");
    assert_eq!(entry.incarnation, Some(candidate.incarnation), "{entry:?}");
    assert_eq!(
        entry.running_incarnation,
        Some(candidate.incarnation),
        "{entry:?}"
    );
}

/// Runs `paxkv ARGS`, which must succeed; returns its stdout.
fn paxkv_cli(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_paxkv"))
        .args(args)
        .output()
        .expect("run paxkv");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "paxkv {args:?}: {stdout}{stderr}");
    stdout
}

/// Polls `f` until it returns something (within `CALLS`).
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Deadline::after(CALLS);
    loop {
        if let Some(found) = f() {
            return found;
        }
        assert!(!deadline.passed(), "gave up waiting");
        std::thread::sleep(Duration::from_millis(100));
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
