//! A follower killed while the others go on writing, restarted, and the leader paused soon
//! after: the two running replicas must elect a leader and serve writes again within a few
//! election timeouts, though the restarted one is thousands of slots behind and catching up.
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::PutRequest;
use paxkv::api::TPaxkvSyncClient;
use paxkv_chaos::client::connect;
use paxkv_chaos::cluster::{Cluster, Timing};
use paxkv_chaos::history::Clock;

const READY: Duration = Duration::from_secs(30);
const WRITERS: usize = 8;
const WRITER_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Short, so a probe stuck on a forward to the paused leader gives way to the next one.
const PROBE_CALL_TIMEOUT: Duration = Duration::from_millis(500);
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
const DOWN: Duration = Duration::from_secs(5);
/// Restart to pause: the restarted replica is still catching up (the chaos run's stalls
/// began 1.5 to 2.5 s after a restart).
const RESTART_TO_PAUSE: Duration = Duration::from_millis(1_500);
const PAUSED: Duration = Duration::from_secs(8);
/// Generous for a loaded 2-core machine: ten of the longest election timeouts.
const ELECTION_TIMEOUTS_TO_RECOVER: u32 = 10;
/// The restarted replica must have missed at least this many writes.
const MISSED_WRITES_MIN: u64 = 2_000;

/// Writes through `endpoint` until `stop`, counting successes.
fn writer(
    endpoint: SocketAddr,
    tag: usize,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut client) = connect(endpoint, WRITER_CALL_TIMEOUT) else {
                thread::sleep(PROBE_INTERVAL);
                continue;
            };
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("w{tag}-{}", n % 512).into_bytes();
                if client
                    .put(PutRequest::new(key, vec![b'x'; 64], None))
                    .is_err()
                {
                    break;
                }
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

fn put_once(endpoint: SocketAddr) -> Result<(), String> {
    let mut client = connect(endpoint, PROBE_CALL_TIMEOUT).map_err(|e| e.to_string())?;
    let request = PutRequest::new(b"probe".to_vec(), b"v".to_vec(), None);
    client
        .put(request)
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

/// How long after `since` a write through `endpoint` first succeeds, trying until `limit`.
fn first_write(endpoint: SocketAddr, since: Clock, limit: Duration) -> Option<Duration> {
    while since.elapsed() < limit {
        if put_once(endpoint).is_ok() {
            return Some(since.elapsed());
        }
        thread::sleep(PROBE_INTERVAL);
    }
    None
}

#[test]
fn a_restarted_follower_and_the_other_elect_a_leader_while_the_leader_is_paused() {
    let dir = tempfile::tempdir().unwrap();
    let timing = Timing::default();
    let mut cluster = Cluster::start(&support::paxkv_binary(), dir.path(), &timing, READY).unwrap();
    let leader = cluster.wait_for_leader(READY).unwrap();
    let ids = cluster.ids();
    let followers: Vec<u32> = ids.iter().copied().filter(|&id| id != leader).collect();
    let (behind, current) = (followers[0], followers[1]);
    let endpoints = cluster.endpoints();
    let endpoint = |id: u32| endpoints[usize::try_from(id - 1).unwrap()];

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|tag| {
            let to = [leader, current][tag % 2];
            writer(endpoint(to), tag, stop.clone(), ok.clone())
        })
        .collect();
    cluster.kill9(behind).unwrap();
    let before = ok.load(Ordering::Relaxed);
    thread::sleep(DOWN);
    let missed = ok.load(Ordering::Relaxed) - before;
    assert!(
        missed >= MISSED_WRITES_MIN,
        "only {missed} writes while replica {behind} was down"
    );
    cluster.restart(behind).unwrap();
    thread::sleep(RESTART_TO_PAUSE);
    cluster.pause(leader).unwrap();
    let paused = Clock::start();

    let bound = timing.election_timeout_max() * ELECTION_TIMEOUTS_TO_RECOVER;
    let via_current = first_write(endpoint(current), paused, PAUSED);
    let via_behind = first_write(endpoint(behind), paused, PAUSED);
    thread::sleep(PAUSED.saturating_sub(paused.elapsed()));
    cluster.resume(leader).unwrap();
    stop.store(true, Ordering::Relaxed);
    for handle in writers {
        handle.join().unwrap();
    }
    eprintln!(
        "{missed} writes missed by replica {behind}; with replica {leader} paused, first \
         write via {current} after {via_current:?}, via {behind} after {via_behind:?}"
    );
    for (id, recovered) in [(current, via_current), (behind, via_behind)] {
        let recovered = recovered.unwrap_or_else(|| {
            panic!("no write through replica {id} in the {PAUSED:?} the leader was paused")
        });
        assert!(
            recovered <= bound,
            "first write through replica {id} after {recovered:?}, beyond {bound:?}"
        );
    }
    assert!(cluster.take_crashed().is_empty());
}
