//! A node's HTTP endpoint (axum), on `metrics_addr`:
//!
//! - `GET /metrics`: every series in the Prometheus text format; RocksDB's sizes are read at
//!   this moment.
//! - `GET /health`: 200 `ok` while the process serves.
//! - `GET /ready`: 200 `ready` when this replica knows a leader and a quorum answers, else
//!   503 with the reason as plain text (see [`readiness`]).
//! - `/debug/failpoints`: only in builds with the `chaos` feature (see
//!   [`super::failpoints`]); without it the route does not exist (404).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Metrics;
use crate::consensus::NodeId;
use crate::executor::KvReader;
use crate::replica::PeerStatus;
use crate::router::{ClusterStatus, PrimaryRouter};

/// What the endpoint serves from.
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    pub router: PrimaryRouter,
    pub reader: KvReader,
    /// Each `/ready` asks every peer for its status through the driver's input queue,
    /// which consensus messages share: a flood of checks must not crowd them out.
    ready_checks: Semaphore,
}

/// `/ready` checks answered at once; more get 503 `busy` without asking the peers.
pub const READY_CHECKS_INFLIGHT_MAX: usize = 4;

impl Endpoint {
    pub fn new(metrics: Arc<Metrics>, router: PrimaryRouter, reader: KvReader) -> Endpoint {
        Endpoint {
            metrics,
            router,
            reader,
            ready_checks: Semaphore::new(READY_CHECKS_INFLIGHT_MAX),
        }
    }
}

/// Binds the endpoint's listener (at start, so a bad or taken address fails the node then).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` resolves and the requests in flight are answered.
pub async fn run(
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = ?listener.local_addr().ok(), "serving /metrics, /health, /ready");
    let routes = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready));
    #[cfg(feature = "chaos")]
    let routes = routes.merge(super::failpoints::routes());
    let routes = routes.with_state(Arc::new(endpoint));
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>) -> impl axum::response::IntoResponse {
    // RocksDB answers these properties from memory: cheap enough for the runtime's thread.
    endpoint.metrics.sample_storage(&endpoint.reader);
    let content_type = [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)];
    (content_type, endpoint.metrics.encode())
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(endpoint): State<Arc<Endpoint>>) -> (StatusCode, String) {
    let Ok(_permit) = endpoint.ready_checks.try_acquire() else {
        let busy = format!("busy: {READY_CHECKS_INFLIGHT_MAX} readiness checks in flight\n");
        return (StatusCode::SERVICE_UNAVAILABLE, busy);
    };
    let status = endpoint.router.status().await;
    match readiness(endpoint.router.id(), &status) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// Ready means a write sent to this replica now can commit: its driver runs, it knows a
/// leader, that leader answered over the peer channel that it leads at the ballot this
/// replica knows (so no election has moved past it), and a majority of members answered.
/// A leader keeps leading only while a quorum hears it (check-quorum), so this is a quorum
/// check, as seen from this replica, at the moment of the request.
pub fn readiness(own_id: NodeId, status: &ClusterStatus) -> Result<(), String> {
    admitted(own_id, status)?;
    let members: Vec<(NodeId, Option<&PeerStatus>)> = (status.members.iter())
        .map(|m| (m.id, m.status.as_ref()))
        .collect();
    readiness_of(own_id, status.leader, &status.ballot, &members)
}

/// Whether the committed membership names this replica at the incarnation it runs. One
/// that lost its disk (or is new) serves nothing until an operator adds it.
fn admitted(own_id: NodeId, status: &ClusterStatus) -> Result<(), String> {
    let own = status.members.iter().find(|member| member.id == own_id);
    let Some(running) = own.and_then(|member| member.status.as_ref()) else {
        return Ok(());
    };
    match status.membership.get(own_id) {
        Some(member) if member.incarnation == running.incarnation => Ok(()),
        Some(member) => Err(format!(
            "not admitted: this replica runs incarnation {}, the membership names {} at {}; \
             add it with `paxkv admin member add {own_id}`",
            running.incarnation,
            member.kind(),
            member.incarnation
        )),
        None => Err(format!(
            "not admitted: replica {own_id} (incarnation {}) is not a member; add it with \
             `paxkv admin member add {own_id}`",
            running.incarnation
        )),
    }
}

/// [`readiness`] from its parts: this replica's leader and ballot, and every member's
/// status (this one's included) or `None` where it did not answer.
pub fn readiness_of(
    own_id: NodeId,
    leader: Option<NodeId>,
    ballot: &str,
    members: &[(NodeId, Option<&PeerStatus>)],
) -> Result<(), String> {
    let status_of = |id: NodeId| members.iter().find(|m| m.0 == id).and_then(|m| m.1);
    if status_of(own_id).is_some_and(|s| s.role == "stopped") {
        return Err("this replica has stopped".into());
    }
    let Some(leader) = leader else {
        return Err("no leader known".into());
    };
    let answered = members.iter().filter(|m| m.1.is_some()).count();
    if answered * 2 <= members.len() {
        return Err(format!(
            "{answered} of {} replicas answered: no quorum",
            members.len()
        ));
    }
    let Some(leader_status) = status_of(leader) else {
        return Err(format!("leader {leader} does not answer"));
    };
    if leader_status.role != "leader" {
        return Err(format!(
            "replica {leader} is believed to lead but is {}",
            leader_status.role
        ));
    }
    if leader_status.ballot != ballot {
        return Err(format!(
            "leader {leader} is at ballot {}, this replica at {ballot}",
            leader_status.ballot
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::MemberStatus;

    fn member(id: NodeId, role: Option<&str>, ballot: &str) -> MemberStatus {
        MemberStatus {
            id,
            peer_address: "127.0.0.1:1".parse().unwrap(),
            status: role.map(|role| PeerStatus {
                role: role.to_string(),
                leader: Some(1),
                ballot: ballot.to_string(),
                commit_index: 5,
                applied_slot: 5,
                incarnation: 1,
            }),
        }
    }

    fn cluster(leader: Option<NodeId>, members: Vec<MemberStatus>) -> ClusterStatus {
        ClusterStatus {
            members,
            leader,
            ballot: "3.1".to_string(),
            version: 9,
            healthy: true,
            cluster: "c".to_string(),
            membership: crate::consensus::Membership::of_voters(&[1, 2, 3]),
        }
    }

    #[test]
    fn ready_with_a_current_leader_and_a_quorum() {
        let status = cluster(
            Some(1),
            vec![
                member(1, Some("leader"), "3.1"),
                member(2, Some("follower"), "3.1"),
                member(3, None, ""),
            ],
        );
        assert_eq!(readiness(2, &status), Ok(()));
    }

    #[test]
    fn not_ready_says_why() {
        let reason = |own: NodeId, status: ClusterStatus| readiness(own, &status).unwrap_err();
        let healthy = || {
            vec![
                member(1, Some("leader"), "3.1"),
                member(2, Some("follower"), "3.1"),
                member(3, Some("follower"), "3.1"),
            ]
        };
        assert_eq!(reason(2, cluster(None, healthy())), "no leader known");

        let alone = vec![
            member(1, None, ""),
            member(2, Some("follower"), "3.1"),
            member(3, None, ""),
        ];
        assert!(reason(2, cluster(Some(1), alone)).contains("no quorum"));

        let leader_gone = vec![
            member(1, None, ""),
            member(2, Some("follower"), "3.1"),
            member(3, Some("follower"), "3.1"),
        ];
        assert!(reason(2, cluster(Some(1), leader_gone)).contains("does not answer"));

        let deposed = vec![
            member(1, Some("follower"), "4.3"),
            member(2, Some("follower"), "3.1"),
            member(3, Some("candidate"), "4.3"),
        ];
        assert!(reason(2, cluster(Some(1), deposed)).contains("is follower"));

        let moved_on = vec![
            member(1, Some("leader"), "5.1"),
            member(2, Some("follower"), "3.1"),
            member(3, Some("follower"), "5.1"),
        ];
        assert!(reason(2, cluster(Some(1), moved_on)).contains("ballot 5.1"));

        let mut stopped = healthy();
        stopped[1] = member(2, Some("stopped"), "3.1");
        assert_eq!(
            reason(2, cluster(Some(1), stopped)),
            "this replica has stopped"
        );

        // A replica that lost its disk runs another incarnation than the member's.
        let mut wiped = healthy();
        wiped[1].status.as_mut().unwrap().incarnation = 77;
        let why = reason(2, cluster(Some(1), wiped.clone()));
        assert!(
            why.starts_with("not admitted: this replica runs incarnation 77"),
            "{why}"
        );
        // A new replica is no member at all.
        wiped[1].id = 4;
        let why = reason(4, cluster(Some(1), wiped));
        assert!(
            why.contains("replica 4 (incarnation 77) is not a member"),
            "{why}"
        );
    }
}
