//! `paxkv dev` (three replicas in one process) driven over Thrift: transactions that
//! conflict, a counter under contention, exactly-once retries, and bad input that gets a
//! typed error while the server keeps serving.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    CommitRequest, Compare, CompareOp, CompareTarget, Conflict, GetRequest, KeyRange,
    LimitExceeded, Mutation, MutationType, PutRequest, Session, TxnRequest,
};
use paxkv::api::{Client, TPaxkvSyncClient};
use support::{describe, user_error, DevCluster, Retrying};
use thrift::protocol::{TBinaryOutputProtocol, TMessageIdentifier, TMessageType, TOutputProtocol};

const READY: Duration = Duration::from_secs(30);
const CALLS: Duration = Duration::from_secs(30);

fn start(dir: &std::path::Path) -> DevCluster {
    let mut dev = support::dev(dir);
    dev.wait_ready(READY);
    dev
}

fn set(key: &[u8], value: &[u8]) -> Mutation {
    Mutation::new(MutationType::SET, key.to_vec(), value.to_vec(), None)
}

fn point(key: &[u8]) -> KeyRange {
    let mut end = key.to_vec();
    end.push(0);
    KeyRange::new(key.to_vec(), end)
}

/// Two transactions each read the key the other writes, from the same read version:
/// exactly one may commit (the other would not be serializable).
#[test]
fn of_two_transactions_that_read_each_others_writes_exactly_one_commits() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start(dir.path());
    for round in 0..10 {
        let (a, b) = (
            format!("a/{round}").into_bytes(),
            format!("b/{round}").into_bytes(),
        );
        let barrier = Arc::new(Barrier::new(2));
        let outcomes: Vec<_> = [(a.clone(), b.clone(), 0), (b, a, 1)]
            .into_iter()
            .map(|(read, write, replica)| {
                let endpoint = dev.endpoints[replica];
                let barrier = barrier.clone();
                thread::spawn(move || {
                    let mut client = Retrying::new(endpoint, CALLS);
                    let read_version = client.call(|c| c.get_read_version());
                    let request = GetRequest::new(read.clone(), read_version);
                    assert!(client.call(|c| c.get(request.clone())).kv.is_none());
                    barrier.wait();
                    let commit = CommitRequest::new(
                        read_version,
                        vec![set(&write, b"x")],
                        vec![point(&read)],
                        None,
                    );
                    client.try_call(|c| c.commit(commit.clone()))
                })
            })
            .collect();
        let results: Vec<_> = outcomes.into_iter().map(|t| t.join().unwrap()).collect();
        let committed = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(committed, 1, "round {round}: {results:?}");
        let conflict = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(
            user_error::<Conflict>(conflict).is_some(),
            "the loser must get Conflict, got {}",
            describe(conflict)
        );
    }
}

/// 20 clients, spread over the three replicas, increment one counter by compare-and-swap
/// on its mod_version. The final value equals the number of successful swaps.
#[test]
fn twenty_clients_incrementing_by_cas_lose_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start(dir.path());
    let key = b"counter".to_vec();
    let attempts_per_client = 15;
    let workers: Vec<_> = (0..20)
        .map(|n| {
            let endpoint = dev.endpoints[n % 3];
            let key = key.clone();
            thread::spawn(move || {
                let mut client = Retrying::new(endpoint, CALLS);
                let mut successes = 0u64;
                for _ in 0..attempts_per_client {
                    let got = client.call(|c| c.get(GetRequest::new(key.clone(), None)));
                    let (value, version) = match got.kv {
                        Some(kv) => (decode(&kv.value), kv.mod_version),
                        None => (0, 0),
                    };
                    let compare = Compare::new(
                        key.clone(),
                        CompareTarget::MOD_VERSION,
                        CompareOp::EQUAL,
                        None,
                        version,
                        None,
                    );
                    let next = (value + 1).to_string().into_bytes();
                    let txn = TxnRequest::new(vec![compare], vec![set(&key, &next)], vec![], None);
                    if client.call(|c| c.txn(txn.clone())).succeeded {
                        successes += 1;
                    }
                }
                successes
            })
        })
        .collect();
    let successes: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let mut client = Retrying::new(dev.endpoints[1], CALLS);
    let got = client.call(|c| c.get(GetRequest::new(key.clone(), None)));
    let value = decode(&got.kv.expect("counter exists").value);
    assert!(successes > 0);
    assert_eq!(value, successes, "lost or duplicated increments");
}

fn decode(value: &[u8]) -> u64 {
    String::from_utf8(value.to_vec()).unwrap().parse().unwrap()
}

/// A write retried with its session is applied once and answered with the first result.
#[test]
fn a_retried_write_with_the_same_session_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start(dir.path());
    let session = Session::new("retrying-client".into(), 7);
    let put = |value: &[u8]| PutRequest::new(b"once".to_vec(), value.to_vec(), session.clone());
    let mut first = Retrying::new(dev.endpoints[0], CALLS);
    let version = first.call(|c| c.put(put(b"first")));
    // The retry arrives through another replica, as after a failover.
    let mut second = Retrying::new(dev.endpoints[2], CALLS);
    assert_eq!(second.call(|c| c.put(put(b"retry"))), version);
    let got = second.call(|c| c.get(GetRequest::new(b"once".to_vec(), None)));
    let kv = got.kv.unwrap();
    assert_eq!(kv.value, b"first");
    assert_eq!(kv.mod_version, version);
}

#[test]
fn bad_input_gets_a_typed_error_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start(dir.path());
    let endpoint = dev.endpoints[0];
    let mut client = support::client(endpoint);

    let oversized = PutRequest::new(vec![b'k'; 10 * 1024 + 1], b"v".to_vec(), None);
    let error = client.put(oversized).unwrap_err();
    let limit = user_error::<LimitExceeded>(&error)
        .unwrap_or_else(|| panic!("expected LimitExceeded, got {}", describe(&error)));
    assert_eq!(limit.limit, "key_bytes_max");
    assert_eq!(limit.maximum, 10 * 1024);
    assert_serves(&mut client, b"after-oversized");

    // Over the default value_bytes_max of 128 MiB.
    let big_value = PutRequest::new(b"k".to_vec(), vec![0; (128 << 20) + 1], None);
    let error = client.put(big_value).unwrap_err();
    assert_eq!(
        user_error::<LimitExceeded>(&error).unwrap().limit,
        "value_bytes_max"
    );

    // A well-formed call to a method the server does not have: an exception reply, and the
    // same connection goes on.
    let mut stream = TcpStream::connect(endpoint).unwrap();
    stream.set_read_timeout(Some(CALLS)).unwrap();
    stream.write_all(&unknown_method_frame()).unwrap();
    let reply = read_frame(&mut stream).expect("a reply to the unknown method");
    // Binary protocol, strict: version 0x8001, then message type 3 (exception).
    assert_eq!(reply[..4], [0x80, 0x01, 0x00, 0x03]);
    stream.write_all(&unknown_method_frame()).unwrap();
    assert!(
        read_frame(&mut stream).is_some(),
        "connection closed after unknown method"
    );

    // A malformed frame closes that connection only.
    let mut bad = TcpStream::connect(endpoint).unwrap();
    bad.set_read_timeout(Some(CALLS)).unwrap();
    let mut garbage = 12u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0x80, 0x01, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
    bad.write_all(&garbage).unwrap();
    assert!(
        read_frame(&mut bad).is_none(),
        "malformed frame must close the connection"
    );
    // An absurd frame length: closed without reading (or allocating) it.
    let mut absurd = TcpStream::connect(endpoint).unwrap();
    absurd.set_read_timeout(Some(CALLS)).unwrap();
    absurd.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(read_frame(&mut absurd).is_none());

    assert_serves(&mut client, b"after-garbage");
    assert_serves(&mut support::client(dev.endpoints[1]), b"other-replica");
}

fn assert_serves(client: &mut Client, key: &[u8]) {
    let put = PutRequest::new(key.to_vec(), b"ok".to_vec(), None);
    client
        .put(put)
        .unwrap_or_else(|e| panic!("server stopped serving: {}", describe(&e)));
    let got = client.get(GetRequest::new(key.to_vec(), None)).unwrap();
    assert_eq!(got.kv.unwrap().value, b"ok");
}

fn unknown_method_frame() -> Vec<u8> {
    let mut body = Vec::new();
    {
        let mut output = TBinaryOutputProtocol::new(&mut body, true);
        let call = TMessageIdentifier::new("noSuchMethod", TMessageType::Call, 1);
        output.write_message_begin(&call).unwrap();
        output
            .write_struct_begin(&thrift::protocol::TStructIdentifier::new("args"))
            .unwrap();
        output.write_field_stop().unwrap();
        output.write_struct_end().unwrap();
        output.write_message_end().unwrap();
    }
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// One framed reply body, or None if the server closed the connection.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut length = [0; 4];
    stream.read_exact(&mut length).ok()?;
    let mut body = vec![0; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

/// Ctrl-C stops `paxkv dev` cleanly (exit 0, "stopped cleanly"), and a restart on the same
/// data directory keeps every write and elects a leader again.
#[test]
fn ctrl_c_stops_dev_cleanly_and_a_restart_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = start(dir.path());
    let mut versions = Vec::new();
    for n in 0..30 {
        let put = PutRequest::new(format!("keep/{n}").into_bytes(), b"v".to_vec(), None);
        versions.push(Retrying::new(dev.endpoints[n % 3], CALLS).call(|c| c.put(put.clone())));
    }
    // The leader announcement is polled; let it appear before stopping.
    let deadline = support::Deadline::after(READY);
    let log_path = dev.process.log_path().to_path_buf();
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains("leads")
        && !deadline.passed()
    {
        thread::sleep(Duration::from_millis(20));
    }
    dev.process.interrupt();
    let status = dev.process.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "dev did not exit cleanly on SIGINT: {status:?}\n{}",
        dev.process.log_tail(support::LOG_TAIL_LINES)
    );
    let log = std::fs::read_to_string(dev.process.log_path()).unwrap();
    assert!(
        log.contains("replica"),
        "dev printed where it listens: {log}"
    );
    assert!(log.contains("leads"), "dev printed who leads: {log}");
    assert!(log.contains("stopped cleanly"), "{log}");

    dev.process = support::Process::spawn(&dev.args(), &dir.path().join("paxkv-dev-2.log"));
    dev.wait_ready(READY);
    let mut client = Retrying::new(dev.endpoints[2], CALLS);
    for (n, version) in versions.iter().enumerate() {
        let request = GetRequest::new(format!("keep/{n}").into_bytes(), None);
        let kv = client.call(|c| c.get(request.clone())).kv;
        assert_eq!(kv.map(|kv| kv.mod_version), Some(*version), "keep/{n} lost");
    }
}
