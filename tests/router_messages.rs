//! One real replica driver, with its peer played by the test over real TCP: a router reply
//! that does not carry this run's incarnation (a reply meant for an earlier run of a
//! restarted replica, whose contexts restarted at 1) must not answer a request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use paxkv::consensus::{Ballot, Message, MessageBody, NodeId, Slot};
use paxkv::replica::{self, ApplyError, DriverOptions, StateMachine};
use paxkv::wire::{
    encode_frame, read_frame, PeerFrame, PeerMessage, RouterMessage, DEFAULT_CLUSTER,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const FRAME_BYTES_MAX: u32 = 1 << 20;
const FAKE: NodeId = 2;

/// Applies nothing but no-ops: this test never commits a command.
struct Empty {
    applied: Slot,
}

impl StateMachine for Empty {
    type Outcome = Slot;
    fn applied_slot(&self) -> Slot {
        self.applied
    }
    fn apply_slot(&mut self, slot: Slot, commands: &[&[u8]]) -> Result<Vec<Slot>, ApplyError> {
        self.applied = slot;
        Ok(vec![slot; commands.len()])
    }
}

/// Plays replica 2, the leader: heartbeats replica 1 every 20 ms, forwards what replica 1
/// sends it to `inbox`, and sends whatever router message arrives on `outbox`.
async fn fake_leader(
    listener: TcpListener,
    replica: SocketAddr,
    inbox: mpsc::UnboundedSender<PeerMessage>,
    mut outbox: mpsc::UnboundedReceiver<RouterMessage>,
) {
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        while let Ok(frame) = read_frame(&mut stream, FRAME_BYTES_MAX).await {
            if let PeerFrame::Peer(message) = frame {
                let _ = inbox.send(message);
            }
        }
    });
    let mut stream = TcpStream::connect(replica).await.unwrap();
    let send = |frame: PeerFrame| encode_frame(&frame, FRAME_BYTES_MAX).unwrap();
    stream
        .write_all(&send(PeerFrame::Hello {
            from: FAKE,
            cluster: DEFAULT_CLUSTER.to_string(),
            incarnation: 1,
        }))
        .await
        .unwrap();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    loop {
        let frame = tokio::select! {
            _ = ticker.tick() => PeerFrame::Peer(PeerMessage::Consensus(Message {
                from: FAKE,
                incarnation: 1,
                to: 1,
                body: MessageBody::Heartbeat {
                    ballot: Ballot::new(5, FAKE),
                    commit_index: 0,
                    read_round: 0,
                },
            })),
            body = outbox.recv() => match body {
                Some(body) => PeerFrame::Peer(PeerMessage::Router { from: FAKE, to: 1, body }),
                None => return,
            },
        };
        if stream.write_all(&send(frame)).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_index_reply_for_another_run_is_ignored() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peers = BTreeMap::from([
        (1, listener.local_addr().unwrap()),
        (FAKE, fake.local_addr().unwrap()),
        (3, dead.local_addr().unwrap()),
    ]);
    drop(dead);
    let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
    let (outbox, outbox_rx) = mpsc::unbounded_channel();
    tokio::spawn(fake_leader(fake, peers[&1], inbox_tx, outbox_rx));

    let dir = tempfile::tempdir().unwrap();
    let options = DriverOptions::new(1, vec![1, 2, 3]);
    let node = replica::start(listener, peers, dir.path(), Empty { applied: 0 }, options).unwrap();
    for _ in 0..250 {
        if node.handle.status().leader == Some(FAKE) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.handle.status().leader, Some(FAKE));

    let handle = node.handle.clone();
    let mut read = tokio::spawn(async move { handle.read_index().await });
    let (incarnation, context) = loop {
        let message = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("the follower forwards its read to the leader")
            .unwrap();
        if let PeerMessage::Router {
            body:
                RouterMessage::ReadIndex {
                    incarnation,
                    context,
                },
            ..
        } = message
        {
            break (incarnation, context);
        }
    };

    // A reply for another run of replica 1, with the same context: ignored.
    let stale = RouterMessage::ReadIndexReply {
        incarnation: incarnation.wrapping_add(1),
        context,
        index: 0,
    };
    outbox.send(stale).unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), &mut read).await;
    assert!(early.is_err(), "a stale reply answered the read: {early:?}");

    let reply = RouterMessage::ReadIndexReply {
        incarnation,
        context,
        index: 0,
    };
    outbox.send(reply).unwrap();
    let index = tokio::time::timeout(Duration::from_secs(5), read).await;
    assert_eq!(index.unwrap().unwrap(), Ok(0));
    node.stop();
}
