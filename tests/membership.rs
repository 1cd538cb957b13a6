//! Membership changes on real processes, by the calls `paxkv admin member` makes: grow a
//! cluster from three replicas to five and back, with every refusal typed.

mod support;

use std::time::Duration;

use paxkv::api::gen::paxkv::{
    GetRequest, MemberAddRequest, Membership, MembershipRefused, PutRequest,
};
use paxkv::api::TPaxkvSyncClient;
use support::{Deadline, Retrying, ServerCluster};

const CALLS: Duration = Duration::from_secs(30);

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest::new(key.as_bytes().to_vec(), value.as_bytes().to_vec(), None)
}

/// The refusal's reason, or a panic if the call did something else.
fn refused<T: std::fmt::Debug>(result: thrift::Result<T>) -> String {
    let error = result.expect_err("refused");
    let refusal = support::user_error::<MembershipRefused>(&error)
        .unwrap_or_else(|| panic!("{}", support::describe(&error)));
    refusal.reason.clone()
}

fn kinds(membership: &Membership) -> Vec<(i32, String)> {
    (membership.members.iter())
        .map(|m| (m.id, m.kind.clone()))
        .collect()
}

/// Promotes `id`, asking again while it is still catching up.
/// `call`, tried again while it is refused for `reason` (a state a moment will end), up to
/// `CALLS`; any other error fails the test.
fn until_not_refused(
    client: &mut Retrying,
    reason: &str,
    mut call: impl FnMut(&mut paxkv::api::Client) -> thrift::Result<Membership>,
) -> Membership {
    let deadline = Deadline::after(CALLS);
    loop {
        match client.try_call(&mut call) {
            Ok(membership) => return membership,
            Err(error) if !deadline.passed() => {
                let refusal = support::user_error::<MembershipRefused>(&error);
                assert!(
                    refusal.is_some_and(|r| r.reason == reason),
                    "{}",
                    support::describe(&error)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => panic!("{}", support::describe(&error)),
        }
    }
}

/// Promotes `id` once it has caught up.
fn promote(client: &mut Retrying, id: i32) -> Membership {
    until_not_refused(client, "MEMBER_BEHIND", |c| c.admin_member_promote(id))
}

/// Adds `id` once it has connected to the leader (it was just started).
fn add(client: &mut Retrying, cluster: &ServerCluster, id: i32) -> Membership {
    let addr = cluster.peer_addr(id as usize - 1).to_string();
    let request = MemberAddRequest::new(id, Some(addr), None);
    until_not_refused(client, "NOT_CONNECTED", |c| {
        c.admin_member_add(request.clone())
    })
}

/// Removes `id` once the leader hears enough of the voters that remain (replicas just
/// restarted answer it a moment after they are ready).
fn remove(client: &mut Retrying, id: i32) -> Membership {
    until_not_refused(client, "WOULD_LOSE_QUORUM", |c| c.admin_member_remove(id))
}

#[test]
fn a_cluster_grows_from_three_to_five_and_back_one_change_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::configure_growable(dir.path(), "", 5);
    for i in 0..3 {
        cluster.start_server(i);
    }
    cluster.wait_ready();
    let mut client = Retrying::new(cluster.endpoints[0], CALLS);
    let before = client.call(|c| c.put(put("before", "1")));

    // Refusals, each typed, each changing nothing.
    assert_eq!(
        refused(client.try_call(|c| c.admin_member_promote(9))),
        "UNKNOWN_MEMBER"
    );
    assert_eq!(
        refused(client.try_call(|c| c.admin_member_promote(1))),
        "ALREADY_VOTER"
    );
    let unknown = MemberAddRequest::new(9, Some("127.0.0.1:1".to_string()), None);
    let reason = refused(client.try_call(|c| c.admin_member_add(unknown.clone())));
    assert_eq!(reason, "NOT_CONNECTED");
    let no_address = MemberAddRequest::new(9, None, Some(5));
    let reason = refused(client.try_call(|c| c.admin_member_add(no_address.clone())));
    assert_eq!(reason, "ADDRESS_REQUIRED");

    // Two new replicas start with empty directories and join as they are added.
    cluster.start_server_as(3, false);
    cluster.start_server_as(4, false);
    let with_learner = add(&mut client, &cluster, 4);
    assert!(kinds(&with_learner).contains(&(4, "learner".to_string())));
    let four = promote(&mut client, 4);
    assert!(kinds(&four).contains(&(4, "voter".to_string())));
    add(&mut client, &cluster, 5);
    let five = promote(&mut client, 5);
    assert_eq!(
        kinds(&five),
        (1..=5)
            .map(|id| (id, "voter".to_string()))
            .collect::<Vec<_>>()
    );
    assert!(five.candidates.is_empty(), "{five:?}");
    cluster.wait_ready();

    // Five voters tolerate two down: the old leader and one more.
    let leader = cluster.leader(0);
    let other = (0..3).find(|&i| i != leader).unwrap();
    cluster.kill9(leader);
    cluster.kill9(other);
    let alive: Vec<usize> = (0..5).filter(|&i| i != leader && i != other).collect();
    let mut client = Retrying::new(cluster.endpoints[alive[0]], CALLS);
    let during = client.call(|c| c.put(put("two-down", "2")));
    assert!(during > before);
    // Removing a voter that answers would leave two of four voters that answer: refused.
    let reason = refused(client.try_call(|c| c.admin_member_remove(alive[1] as i32 + 1)));
    assert_eq!(reason, "WOULD_LOSE_QUORUM");
    cluster.start_server_as(leader, false);
    cluster.start_server_as(other, false);
    cluster.wait_ready();

    // And back to three: remove the two that joined, one at a time.
    let mut client = Retrying::new(cluster.endpoints[0], CALLS);
    remove(&mut client, 5);
    let three = remove(&mut client, 4);
    assert_eq!(
        kinds(&three),
        (1..=3)
            .map(|id| (id, "voter".to_string()))
            .collect::<Vec<_>>()
    );
    cluster.kill9(3);
    cluster.kill9(4);
    // The three serve everything written while there were five.
    for i in 0..3 {
        let mut client = Retrying::new(cluster.endpoints[i], CALLS);
        for (key, version) in [("before", before), ("two-down", during)] {
            let request = GetRequest::new(key.as_bytes().to_vec(), None);
            let kv = client.call(|c| c.get(request.clone())).kv.expect(key);
            assert_eq!(kv.mod_version, version, "replica {i} {key}");
        }
    }
    let last = client.call(|c| c.put(put("after", "3")));
    assert!(last > during);
    // Leadership moves where it is asked to.
    let leader = cluster.leader(0);
    let target = (leader + 1) % 3;
    let deadline = Deadline::after(CALLS);
    while cluster.leader(0) != target {
        // MEMBER_BEHIND until the target has heard the newest commit; then it is asked.
        let _ = client.try_call(|c| c.admin_transfer_leader(target as i32 + 1));
        assert!(
            !deadline.passed(),
            "leadership did not move to {}",
            target + 1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A leader that removes itself answers the change, steps down, and what is sent next
/// through a replica that still believes in it waits for the next leader instead of going
/// to a replica it no longer has a link to.
#[test]
fn a_leader_removes_itself_and_the_next_requests_find_the_next_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::start(dir.path());
    let leader = cluster.leader(0);
    let via = (leader + 1) % 3;
    let mut client = Retrying::new(cluster.endpoints[via], CALLS);
    let two = client.call(|c| c.admin_member_remove(leader as i32 + 1));
    assert_eq!(two.members.len(), 2, "{two:?}");
    // At once, before the others have elected anyone: a membership call and a write.
    let listed = client.call(|c| c.admin_member_list());
    assert_eq!(kinds(&listed), kinds(&two));
    assert_ne!(listed.leader, Some(leader as i32 + 1));
    let version = client.call(|c| c.put(put("after", "removal")));
    let other = (leader + 2) % 3;
    let mut reader = Retrying::new(cluster.endpoints[other], CALLS);
    let request = GetRequest::new(b"after".to_vec(), None);
    assert_eq!(
        reader
            .call(|c| c.get(request.clone()))
            .kv
            .unwrap()
            .mod_version,
        version
    );
    cluster.kill9(leader);
}
