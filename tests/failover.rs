//! The leader of three `paxkv server` processes is killed with -9 while increments are in
//! flight through both followers, some with a client session and some without. Every
//! write without a session carries one of its replica's own, so the followers send the
//! writes they forwarded again to the new leader: each is acknowledged (none ends with an
//! unknown outcome after `request_timeout_ms`) and applied exactly once (the counter equals
//! the increments acknowledged). Prints how long the writes in flight at the kill took to
//! be acknowledged after it, for each kind.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use paxkv::api::gen::paxkv::{
    CommitRequest, GetRequest, Mutation, MutationType, Session, Unavailable,
};
use paxkv::api::TPaxkvSyncClient;
use support::{user_error, Deadline, ServerCluster};

const WRITERS_PER_KIND: usize = 4;
const BEFORE_KILL: Duration = Duration::from_secs(2);
const AFTER_KILL: Duration = Duration::from_secs(3);
/// A client with a session retries a call that failed for this long.
const RETRY_FOR: Duration = Duration::from_secs(20);

/// One increment: when it was sent and when it was acknowledged (None: it was not).
struct Write {
    sent: Instant,
    acked: Option<Instant>,
}

fn increment(key: &[u8], session: Option<Session>) -> CommitRequest {
    let add = Mutation::new(
        MutationType::ADD,
        key.to_vec(),
        1u64.to_le_bytes().to_vec(),
        None,
    );
    CommitRequest::new(0, vec![add], Vec::new(), session)
}

#[allow(clippy::disallowed_methods)] // Wall time is what the measurement is of.
fn now() -> Instant {
    Instant::now()
}

/// Increments `key` through `endpoint` until `stop`. With `session`, a failed call is sent
/// again with the same request id until it succeeds; without one it is counted unknown.
fn writer(
    endpoint: std::net::SocketAddr,
    key: Vec<u8>,
    session: Option<String>,
    stop: Arc<AtomicBool>,
) -> Vec<Write> {
    let mut client = support::client(endpoint);
    let mut writes = Vec::new();
    let mut request_id = 0;
    while !stop.load(Ordering::Relaxed) {
        request_id += 1;
        let session = session.clone().map(|id| Session::new(id, request_id));
        let sent = now();
        let deadline = Deadline::after(RETRY_FOR);
        let acked = loop {
            match client.commit(increment(&key, session.clone())) {
                Ok(_) => break Some(now()),
                Err(error) => {
                    let retry = session.is_some() && !deadline.passed();
                    if !retry {
                        eprintln!("without a session, an increment failed: {error:?}");
                        break None;
                    }
                    if user_error::<Unavailable>(&error).is_none() {
                        // A lost connection: open another.
                        thread::sleep(Duration::from_millis(20));
                        client = support::client(endpoint);
                    }
                }
            }
        };
        writes.push(Write { sent, acked });
    }
    writes
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn writes_in_flight_at_a_leader_kill_are_acknowledged_once_with_or_without_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ServerCluster::start(dir.path());
    let leader = cluster.leader(0);
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (kind, key) in [("session", b"with".to_vec()), ("none", b"without".to_vec())] {
        for w in 0..WRITERS_PER_KIND {
            let endpoint = cluster.endpoints[followers[w % followers.len()]];
            let session = (kind == "session").then(|| format!("failover-test-{w}"));
            let (key, stop) = (key.clone(), stop.clone());
            writers.push((
                kind,
                key.clone(),
                thread::spawn(move || writer(endpoint, key, session, stop)),
            ));
        }
    }
    thread::sleep(BEFORE_KILL);
    let killed = now();
    cluster.kill9(leader);
    thread::sleep(AFTER_KILL);
    stop.store(true, Ordering::Relaxed);

    let reader = cluster.endpoints[followers[0]];
    let mut client = support::client(reader);
    for kind in ["session", "none"] {
        let mut acked = 0u64;
        let mut unknown = 0u64;
        let mut after_kill_ms = Vec::new();
        let mut key = Vec::new();
        for (_, writer_key, handle) in writers.iter_mut().filter(|w| w.0 == kind) {
            key = writer_key.clone();
            let handle = std::mem::replace(handle, thread::spawn(Vec::new));
            for write in handle.join().unwrap() {
                match write.acked {
                    Some(at) => {
                        acked += 1;
                        if write.sent < killed && at > killed {
                            after_kill_ms.push((at - killed).as_secs_f64() * 1e3);
                        }
                    }
                    None => unknown += 1,
                }
            }
        }
        after_kill_ms.sort_by(f64::total_cmp);
        let got = client.get(GetRequest::new(key.clone(), None)).unwrap();
        let value = got.kv.expect("the counter exists").value;
        let counter = u64::from_le_bytes(value[..8].try_into().unwrap());
        eprintln!(
            "{kind}: {acked} increments acknowledged, {unknown} unknown, counter {counter}; \
             {} in flight at the kill, acknowledged after it in p50 {:.0} ms, p99 {:.0} ms, \
             max {:.0} ms",
            after_kill_ms.len(),
            percentile(&after_kill_ms, 0.5),
            percentile(&after_kill_ms, 0.99),
            after_kill_ms.last().copied().unwrap_or(0.0)
        );
        assert_eq!(unknown, 0, "{kind}: writes in flight must not end unknown");
        assert_eq!(
            counter, acked,
            "{kind}: each increment applied exactly once"
        );
        assert!(
            !after_kill_ms.is_empty(),
            "{kind}: no write was in flight at the kill"
        );
    }
}
