//! What this replica learns by asking its peers: replication lag per peer, and readiness.
//!
//! The consensus core does not track what each peer has acknowledged (a leader counts
//! votes per slot, not a match index per peer), so the lag is measured from outside it:
//! every `PEER_SAMPLE_INTERVAL_MS` this replica asks each peer for its status over the peer
//! channel, and records its own commit index minus the slot the peer reports applied. On
//! the leader that is how far each follower's state machine trails what is chosen; on a
//! follower it is relative to that follower's own (possibly older) commit index, and a peer
//! ahead of it shows 0.
//!
//! The same answers decide `paxkv_ready`, by the rule `/ready` uses
//! ([`super::http::readiness`]).

use std::time::Duration;

use super::http::readiness_of;
use super::{saturating_i64, PeerMetrics};
use crate::consensus::NodeId;
use crate::replica::{PeerStatus, ReplicaHandle};

/// How often each peer is asked for its status.
pub const PEER_SAMPLE_INTERVAL_MS: u64 = 1_000;

/// Samples forever; the caller aborts the task to stop it.
pub async fn sample_peers<O: Send + 'static>(
    handle: ReplicaHandle<O>,
    peers: Vec<NodeId>,
    metrics: PeerMetrics,
) {
    let interval = Duration::from_millis(PEER_SAMPLE_INTERVAL_MS);
    loop {
        let mut answers = Vec::with_capacity(peers.len());
        for &peer in &peers {
            // Bounded by the driver's `status_timeout_ms`.
            let answer = handle.peer_status(peer).await.ok();
            record_lag(&handle, peer, answer.as_ref(), &metrics);
            answers.push((peer, answer));
        }
        record_ready(&handle, &answers, &metrics);
        tokio::time::sleep(interval).await;
    }
}

fn record_lag<O: Send + 'static>(
    handle: &ReplicaHandle<O>,
    peer: NodeId,
    answer: Option<&PeerStatus>,
    metrics: &PeerMetrics,
) {
    let label = peer.to_string();
    let Some(status) = answer else {
        metrics.up.with_label_values(&[&label]).set(0);
        // A stale lag would look like a healthy one: no value while it is unknown.
        let _ = metrics.lag_slots.remove_label_values(&[&label]);
        return;
    };
    let lag = (handle.status().commit_index).saturating_sub(status.applied_slot);
    metrics.up.with_label_values(&[&label]).set(1);
    let lag_slots = metrics.lag_slots.with_label_values(&[&label]);
    lag_slots.set(saturating_i64(lag));
}

fn record_ready<O: Send + 'static>(
    handle: &ReplicaHandle<O>,
    answers: &[(NodeId, Option<PeerStatus>)],
    metrics: &PeerMetrics,
) {
    let own = handle.status();
    let own_peer_status = own.to_peer_status();
    let mut members: Vec<(NodeId, Option<&PeerStatus>)> =
        answers.iter().map(|(id, s)| (*id, s.as_ref())).collect();
    members.push((own.id, Some(&own_peer_status)));
    let ballot = own.ballot.to_string();
    let ready = readiness_of(own.id, own.leader, &ballot, &members).is_ok();
    metrics.ready.set(i64::from(ready));
}
