//! Replication lag per peer, as this replica can honestly see it.
//!
//! The consensus core does not track what each peer has acknowledged (a leader counts
//! votes per slot, not a match index per peer), so the lag is measured from outside it:
//! every `PEER_SAMPLE_INTERVAL_MS` this replica asks each peer for its status over the peer
//! channel, and records its own commit index minus the slot the peer reports applied. On
//! the leader that is how far each follower's state machine trails what is chosen; on a
//! follower it is relative to that follower's own (possibly older) commit index, and a peer
//! ahead of it shows 0.

use std::time::Duration;

use super::{saturating_i64, PeerMetrics};
use crate::consensus::NodeId;
use crate::replica::ReplicaHandle;

/// How often each peer is asked for its status.
pub const PEER_SAMPLE_INTERVAL_MS: u64 = 1_000;

/// Samples forever; the caller aborts the task to stop it.
pub async fn sample_peer_lag<O: Send + 'static>(
    handle: ReplicaHandle<O>,
    peers: Vec<NodeId>,
    metrics: PeerMetrics,
) {
    let interval = Duration::from_millis(PEER_SAMPLE_INTERVAL_MS);
    loop {
        for &peer in &peers {
            sample_one(&handle, peer, &metrics).await;
        }
        tokio::time::sleep(interval).await;
    }
}

async fn sample_one<O: Send + 'static>(
    handle: &ReplicaHandle<O>,
    peer: NodeId,
    metrics: &PeerMetrics,
) {
    let label = peer.to_string();
    // The status call is bounded by the driver's `status_timeout_ms`.
    match handle.peer_status(peer).await {
        Ok(status) => {
            let committed = handle.status().commit_index;
            let lag = committed.saturating_sub(status.applied_slot);
            metrics.up.with_label_values(&[&label]).set(1);
            metrics
                .lag_slots
                .with_label_values(&[&label])
                .set(saturating_i64(lag));
        }
        Err(_) => {
            metrics.up.with_label_values(&[&label]).set(0);
            // A stale lag would look like a healthy one: no value while it is unknown.
            let _ = metrics.lag_slots.remove_label_values(&[&label]);
        }
    }
}
