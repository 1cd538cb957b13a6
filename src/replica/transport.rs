//! Peer transport: TCP between replicas, carrying the frames of `crate::wire`. Outbound,
//! one task per peer reconnects with backoff and drains a bounded queue; a full queue drops
//! the message (consensus tolerates loss), so a dead peer never grows memory. The peers follow
//! the committed membership (`set_peers`). Inbound, every connection opens with `Hello`
//! naming a member, the cluster and the sender's incarnation; one from another cluster or
//! from no member is refused, logged and counted, and the incarnations announced are kept
//! for operators adding a replica.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::consensus::NodeId;
use crate::metrics::RefusedConnections;
use crate::snapshot::stream;
use crate::wire::{
    encode_frame, read_frame, PeerFrame, PeerMessage, Result, TransportError, DEFAULT_CLUSTER,
};

#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Messages queued per peer; beyond it new messages to that peer are dropped.
    pub peer_queue_messages_max: usize,
    /// Largest frame accepted from a peer. Must exceed the largest consensus message
    /// (a slot is at most `slot_bytes_max`; catch-up replies at most `catch_up_bytes_max`).
    pub peer_frame_bytes_max: u32,
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// The cluster this replica belongs to (its `IDENTITY`): sent in every `Hello`, and
    /// required of every connection accepted.
    pub cluster: String,
    /// This replica's member incarnation (its `IDENTITY`), sent in every `Hello`.
    pub incarnation: u64,
    /// Counts connections refused, by `reason`; unregistered unless a node passes its own.
    pub refused: RefusedConnections,
}

impl Default for TransportOptions {
    fn default() -> TransportOptions {
        TransportOptions {
            peer_queue_messages_max: 4_096,
            peer_frame_bytes_max: 512 << 20,
            reconnect_backoff_min_ms: 20,
            reconnect_backoff_max_ms: 1_000,
            cluster: DEFAULT_CLUSTER.to_string(),
            incarnation: 1,
            refused: RefusedConnections::unregistered(),
        }
    }
}

/// Where inbound peer messages go.
pub type Deliver = Arc<dyn Fn(PeerMessage) + Send + Sync>;

/// Handle for sending to peers. Cheap to clone. The peers change with the membership
/// (`set_peers`).
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

struct Shared {
    id: NodeId,
    options: TransportOptions,
    runtime: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
    /// Each peer's address and the queue its link task drains.
    links: RwLock<BTreeMap<NodeId, (SocketAddr, mpsc::Sender<PeerMessage>)>>,
    /// Who may open a connection to this replica (its peers), shared with the inbound side.
    members: Arc<RwLock<BTreeSet<NodeId>>>,
    /// The incarnation each replica announced in its latest `Hello`, member or not.
    seen: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    dropped: AtomicU64,
}

impl Transport {
    /// Start accepting on `listener` and connecting to every peer in `peers` (this replica
    /// excluded). Tasks run until `shutdown` turns true. Snapshot fetches are served by
    /// `snapshots`, or refused without it.
    pub fn start(
        id: NodeId,
        listener: TcpListener,
        peers: BTreeMap<NodeId, SocketAddr>,
        deliver: Deliver,
        options: TransportOptions,
        shutdown: watch::Receiver<bool>,
        snapshots: Option<stream::Sender>,
    ) -> Transport {
        let members = Arc::new(RwLock::new(BTreeSet::new()));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let inbound = Inbound {
            members: members.clone(),
            seen: seen.clone(),
            cluster: options.cluster.clone(),
            refused: options.refused.clone(),
            deliver,
            snapshots,
            frame_bytes_max: options.peer_frame_bytes_max,
        };
        let accept_shutdown = shutdown.clone();
        let transport = Transport {
            shared: Arc::new(Shared {
                id,
                options,
                runtime: tokio::runtime::Handle::current(),
                shutdown,
                links: RwLock::new(BTreeMap::new()),
                members,
                seen,
                dropped: AtomicU64::new(0),
            }),
        };
        transport.set_peers(peers);
        // Only once the members are known: a peer that connects at once is judged against
        // them, not refused as a stranger because the set was still empty.
        tokio::spawn(accept_loop(listener, Arc::new(inbound), accept_shutdown));
        transport
    }

    /// Make `peers` (this replica, if named, excluded) the replicas this one connects to
    /// and accepts connections from. A link to a peer that left, or moved, closes.
    pub fn set_peers(&self, peers: BTreeMap<NodeId, SocketAddr>) {
        let shared = &self.shared;
        let mut links = shared.links.write().expect("links lock");
        // Dropping a link's sender closes its queue, which ends its task.
        links.retain(|peer, (address, _)| peers.get(peer) == Some(address));
        for (&peer, &address) in peers.iter().filter(|(&peer, _)| peer != shared.id) {
            if links.contains_key(&peer) {
                continue;
            }
            let (sender, receiver) = mpsc::channel(shared.options.peer_queue_messages_max);
            let link = Link {
                id: shared.id,
                address,
                options: shared.options.clone(),
            };
            shared
                .runtime
                .spawn(link.run(receiver, shared.shutdown.clone()));
            links.insert(peer, (address, sender));
        }
        let members = peers.keys().copied().filter(|&peer| peer != shared.id);
        *shared.members.write().expect("members lock") = members.collect();
    }

    /// Where `peer` listens (or its link proxy does).
    pub fn address(&self, peer: NodeId) -> Option<SocketAddr> {
        let links = self.shared.links.read().expect("links lock");
        links.get(&peer).map(|(address, _)| *address)
    }

    /// Every peer and its address.
    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        let links = self.shared.links.read().expect("links lock");
        (links.iter())
            .map(|(&peer, (address, _))| (peer, *address))
            .collect()
    }

    /// The incarnation `peer` announced when it last connected, member or not.
    pub fn seen_incarnation(&self, peer: NodeId) -> Option<u64> {
        self.shared
            .seen
            .lock()
            .expect("seen lock")
            .get(&peer)
            .copied()
    }

    /// Every replica that connected, with the incarnation it announced last.
    pub fn seen(&self) -> BTreeMap<NodeId, u64> {
        self.shared.seen.lock().expect("seen lock").clone()
    }

    /// Queue a message for its peer; drops it if that peer's queue is full.
    pub fn send(&self, message: PeerMessage) {
        let links = self.shared.links.read().expect("links lock");
        let Some((_, queue)) = links.get(&message.to()) else {
            return;
        };
        if queue.try_send(message).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages dropped because a peer's queue was full or its link had stopped.
    pub fn dropped_total(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

struct Link {
    id: NodeId,
    address: SocketAddr,
    options: TransportOptions,
}

impl Link {
    async fn run(
        self,
        mut queue: mpsc::Receiver<PeerMessage>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff_ms = self.options.reconnect_backoff_min_ms;
        loop {
            let attempt = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                attempt = self.connect_and_send(&mut queue) => attempt,
            };
            match attempt {
                Ok(()) => return,
                Err(error) => {
                    tracing::debug!(peer = %self.address, %error, "peer link down; reconnecting");
                }
            }
            // The peer left the membership (or moved) while this link was down.
            if queue.is_closed() {
                return;
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
            }
            backoff_ms = (backoff_ms * 2).min(self.options.reconnect_backoff_max_ms);
        }
    }

    fn hello(&self) -> PeerFrame {
        PeerFrame::Hello {
            from: self.id,
            cluster: self.options.cluster.clone(),
            incarnation: self.options.incarnation,
        }
    }

    /// Returns Ok only when the queue is closed (the replica is stopping, or the peer left).
    async fn connect_and_send(&self, queue: &mut mpsc::Receiver<PeerMessage>) -> Result<()> {
        let stream = TcpStream::connect(self.address).await?;
        stream.set_nodelay(true)?;
        let mut writer = BufWriter::new(stream);
        let max = self.options.peer_frame_bytes_max;
        writer.write_all(&encode_frame(&self.hello(), max)?).await?;
        writer.flush().await?;
        while let Some(message) = queue.recv().await {
            write_message(&mut writer, message, max).await?;
            // Batch what is already queued into one flush.
            while let Ok(message) = queue.try_recv() {
                write_message(&mut writer, message, max).await?;
            }
            writer.flush().await?;
        }
        Ok(())
    }
}

async fn write_message(
    writer: &mut BufWriter<TcpStream>,
    message: PeerMessage,
    max: u32,
) -> Result<()> {
    match encode_frame(&PeerFrame::Peer(message), max) {
        Ok(frame) => writer.write_all(&frame).await?,
        // One oversized message is dropped like a lost one; the link stays up.
        Err(error @ TransportError::FrameTooLarge { .. }) => {
            tracing::warn!(%error, "dropping an oversized peer message");
        }
        Err(error) => return Err(error),
    }
    Ok(())
}

/// What an inbound connection needs.
struct Inbound {
    members: Arc<RwLock<BTreeSet<NodeId>>>,
    seen: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    cluster: String,
    refused: RefusedConnections,
    deliver: Deliver,
    snapshots: Option<stream::Sender>,
    frame_bytes_max: u32,
}

async fn accept_loop(
    listener: TcpListener,
    inbound: Arc<Inbound>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, remote)) = accepted else {
            continue;
        };
        let (inbound, mut shutdown) = (inbound.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {}
                result = serve_inbound(stream, &inbound) => match result {
                    Err(TransportError::Refused { reason, detail }) => {
                        inbound.refused.count(reason);
                        tracing::warn!(%remote, reason, "refused a peer connection: {detail}");
                    }
                    Err(error) => {
                        tracing::debug!(%remote, %error, "inbound peer connection closed");
                    }
                    Ok(()) => {}
                }
            }
        });
    }
}

impl Inbound {
    /// A connection opens with `Hello` or `SnapshotFetch` from a member of this cluster:
    /// returns that member.
    fn check(&self, first: &PeerFrame) -> Result<NodeId> {
        let refused = |reason, detail: String| Err(TransportError::Refused { reason, detail });
        let (from, cluster) = match first {
            PeerFrame::Hello {
                from,
                cluster,
                incarnation,
            } => {
                if *cluster == self.cluster {
                    let mut seen = self.seen.lock().expect("seen lock");
                    seen.insert(*from, *incarnation);
                }
                (*from, cluster)
            }
            PeerFrame::SnapshotFetch { from, cluster, .. } => (*from, cluster),
            other => return refused("member", format!("it opened with {}", other.kind())),
        };
        if *cluster != self.cluster {
            let detail = format!(
                "replica {from} belongs to cluster {cluster:?}, this replica to {:?}",
                self.cluster
            );
            return refused("cluster", detail);
        }
        if !self.members.read().expect("members lock").contains(&from) {
            return refused("member", format!("replica {from} is not a member"));
        }
        Ok(from)
    }
}

async fn serve_inbound(mut stream: TcpStream, inbound: &Inbound) -> Result<()> {
    stream.set_nodelay(true)?;
    let max = inbound.frame_bytes_max;
    let first = read_frame(&mut stream, max).await?;
    let from = inbound.check(&first)?;
    if let PeerFrame::SnapshotFetch { min_slot, .. } = first {
        let Some(snapshots) = &inbound.snapshots else {
            return Err(TransportError::Protocol(format!(
                "replica {from} asked for a snapshot; this replica sends none"
            )));
        };
        return snapshots.serve(stream, min_slot, max).await;
    }
    loop {
        match read_frame(&mut stream, max).await? {
            PeerFrame::Peer(message) if message.from() == from => (inbound.deliver)(message),
            other => {
                return Err(TransportError::Protocol(format!(
                    "unexpected frame from {from}: {}",
                    other.kind()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{Ballot, Message, MessageBody};
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn messages_reach_the_peer_and_a_dead_peer_queue_stays_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_address = dead.local_addr().unwrap();
        drop(dead);
        let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peers = BTreeMap::from([
            (1, listener.local_addr().unwrap()),
            (2, dead_address),
            (3, other.local_addr().unwrap()),
        ]);
        let (stop, shutdown) = watch::channel(false);
        let (delivered, mut inbox) = mpsc::unbounded_channel();
        let deliver: Deliver = Arc::new(move |message| {
            let _ = delivered.send(message);
        });
        let options = TransportOptions {
            peer_queue_messages_max: 8,
            ..TransportOptions::default()
        };
        let receiving = Transport::start(
            1,
            listener,
            peers.clone(),
            deliver,
            options.clone(),
            shutdown.clone(),
            None,
        );
        let noop: Deliver = Arc::new(|_| {});
        let sending = Transport::start(3, other, peers, noop, options, shutdown, None);
        let heartbeat = |to| {
            PeerMessage::Consensus(Message {
                from: 3,
                incarnation: 1,
                to,
                body: MessageBody::Heartbeat {
                    ballot: Ballot::new(1, 3),
                    commit_index: 0,
                    read_round: 0,
                },
            })
        };
        sending.send(heartbeat(1));
        let got = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await;
        assert_eq!(got.unwrap().unwrap(), heartbeat(1));
        for _ in 0..100 {
            sending.send(heartbeat(2));
        }
        assert!(
            sending.dropped_total() >= 90,
            "dead peer's queue grew past its bound"
        );
        assert_eq!(receiving.dropped_total(), 0);
        stop.send(true).unwrap();
    }

    #[tokio::test]
    async fn a_peer_of_another_cluster_or_no_member_is_refused_and_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let (delivered, mut inbox) = mpsc::unbounded_channel();
        let deliver: Deliver = Arc::new(move |message| {
            let _ = delivered.send(message);
        });
        let ours = TransportOptions {
            cluster: "prod".to_string(),
            ..TransportOptions::default()
        };
        let peers = BTreeMap::from([(1, address), (3, "127.0.0.1:1".parse().unwrap())]);
        let receiving = Transport::start(
            1,
            listener,
            peers,
            deliver,
            ours.clone(),
            shutdown.clone(),
            None,
        );
        let heartbeat = |from| {
            PeerMessage::Consensus(Message {
                from,
                incarnation: 1,
                to: 1,
                body: MessageBody::Heartbeat {
                    ballot: Ballot::new(1, from),
                    commit_index: 0,
                    read_round: 0,
                },
            })
        };
        // Replica 3 of another cluster, and replica 9 of this one (not a member).
        let cases = [(3, "staging", "cluster"), (9, "prod", "member")];
        for (from, cluster, reason) in cases {
            let mut stream = TcpStream::connect(address).await.unwrap();
            let hello = PeerFrame::Hello {
                from,
                cluster: cluster.to_string(),
                incarnation: 1,
            };
            stream
                .write_all(&encode_frame(&hello, 1 << 20).unwrap())
                .await
                .unwrap();
            let frame = encode_frame(&PeerFrame::Peer(heartbeat(from)), 1 << 20).unwrap();
            let _ = stream.write_all(&frame).await;
            // The receiver closes the connection without reading on.
            let mut rest = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest));
            assert!(closed.await.is_ok(), "a refused connection is closed");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while ours.refused.get(reason) == 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(ours.refused.get(reason), 1, "{reason}");
        }
        // A member of this cluster is taken.
        let mut stream = TcpStream::connect(address).await.unwrap();
        let hello = PeerFrame::Hello {
            from: 3,
            cluster: "prod".to_string(),
            incarnation: 7,
        };
        stream
            .write_all(&encode_frame(&hello, 1 << 20).unwrap())
            .await
            .unwrap();
        let frame = encode_frame(&PeerFrame::Peer(heartbeat(3)), 1 << 20).unwrap();
        stream.write_all(&frame).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await;
        assert_eq!(got.unwrap().unwrap(), heartbeat(3));
        assert!(inbox.try_recv().is_err(), "nothing refused was delivered");
        // What each replica of this cluster announced is remembered, members or not.
        assert_eq!(receiving.seen(), BTreeMap::from([(3, 7), (9, 1)]));
        // A replica that joins the membership is taken from then on.
        let mut peers = receiving.peers();
        peers.insert(9, "127.0.0.1:1".parse().unwrap());
        receiving.set_peers(peers);
        let mut stream = TcpStream::connect(address).await.unwrap();
        let hello = PeerFrame::Hello {
            from: 9,
            cluster: "prod".to_string(),
            incarnation: 1,
        };
        stream
            .write_all(&encode_frame(&hello, 1 << 20).unwrap())
            .await
            .unwrap();
        let frame = encode_frame(&PeerFrame::Peer(heartbeat(9)), 1 << 20).unwrap();
        stream.write_all(&frame).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await;
        assert_eq!(got.unwrap().unwrap(), heartbeat(9));
        drop(receiving);
        stop.send(true).unwrap();
    }
}
