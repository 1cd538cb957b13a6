//! Fault injection: failed and torn writes, failed fsyncs, failed segment creation.
//! Run with `cargo test -p paxkv-wal --release --features failpoints`.
//!
//! Fault points are process-global; `FailScenario::setup` holds a global lock until it is
//! dropped, so the tests in this binary run one at a time. No other test binary configures
//! fault points.
#![cfg(feature = "failpoints")]

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use fail::FailScenario;
use paxkv_wal::{Lsn, SharedWal, Wal, WalError, WalOptions};

const WAIT: Duration = Duration::from_secs(10);

fn options(segment_bytes_max: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max,
        record_bytes_max: 1024,
    }
}

fn payload(lsn: Lsn) -> Vec<u8> {
    format!("record {lsn}").into_bytes()
}

fn append_synced(wal: &mut Wal, count: u64) {
    for _ in 0..count {
        let lsn = wal.next_lsn();
        wal.append(&payload(lsn)).unwrap();
    }
    wal.sync().unwrap();
}

fn assert_prefix(wal: &Wal, at_least: Lsn) {
    let records = wal.read(..).unwrap();
    assert!(
        records.len() as u64 >= at_least,
        "lost synced records: {records:?}"
    );
    for (lsn, bytes) in records.iter().take(at_least as usize) {
        assert_eq!(*bytes, payload(*lsn));
    }
}

#[test]
fn fsync_failure_is_returned_and_poisons() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options(4096)).unwrap();
    append_synced(&mut wal, 3);
    wal.append(b"four").unwrap();
    fail::cfg("wal::fsync", "return").unwrap();
    assert!(matches!(
        wal.sync(),
        Err(WalError::SyncFailed { lsn: 4, .. })
    ));
    assert!(wal.is_poisoned());
    assert_eq!(wal.durable_lsn(), 3);
    fail::remove("wal::fsync");
    // Not retryable, even now that fsync would work again.
    assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
    assert!(matches!(
        wal.append(b"five"),
        Err(WalError::Poisoned { .. })
    ));
    assert!(matches!(wal.read(..), Err(WalError::Poisoned { .. })));
    drop(wal);
    assert_prefix(&Wal::open(dir.path(), options(4096)).unwrap(), 3);
    scenario.teardown();
}

#[test]
fn torn_write_is_cut_on_reopen_and_synced_records_remain() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options(4096)).unwrap();
    append_synced(&mut wal, 3);
    // Frames of 22 and 42 bytes: writing half of the 64 tears the second one.
    wal.append(&[4u8; 10]).unwrap();
    wal.append(&[5u8; 30]).unwrap();
    fail::cfg("wal::write", "return(torn)").unwrap();
    assert!(matches!(wal.sync(), Err(WalError::Io { op: "write", .. })));
    assert!(wal.is_poisoned());
    fail::remove("wal::write");
    drop(wal);

    let mut wal = Wal::open(dir.path(), options(4096)).unwrap();
    assert_prefix(&wal, 3);
    assert_eq!(
        wal.read(4..).unwrap(),
        vec![(4, vec![4u8; 10])],
        "the torn record is cut"
    );
    assert_eq!(wal.append(b"five again").unwrap(), 5);
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(Wal::open(dir.path(), options(4096)).unwrap().next_lsn(), 6);
    scenario.teardown();
}

#[test]
fn failed_write_poisons_and_writes_nothing() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options(4096)).unwrap();
    append_synced(&mut wal, 3);
    wal.append(b"four").unwrap();
    fail::cfg("wal::write", "return").unwrap();
    assert!(matches!(wal.flush(), Err(WalError::Io { op: "write", .. })));
    assert!(matches!(
        wal.append(b"five"),
        Err(WalError::Poisoned { .. })
    ));
    fail::remove("wal::write");
    drop(wal);
    let wal = Wal::open(dir.path(), options(4096)).unwrap();
    assert_prefix(&wal, 3);
    assert_eq!(wal.next_lsn(), 4);
    scenario.teardown();
}

#[test]
fn failed_segment_creation_changes_nothing_and_can_be_retried() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    // "record N" frames are 20 bytes: three fit after the 24-byte header.
    let mut wal = Wal::open(dir.path(), options(84)).unwrap();
    append_synced(&mut wal, 3);
    fail::cfg("wal::create_segment", "return").unwrap();
    let error = wal.append(&payload(4)).unwrap_err();
    assert!(
        matches!(
            error,
            WalError::Io {
                op: "create segment",
                ..
            }
        ),
        "{error}"
    );
    assert!(!wal.is_poisoned());
    assert_eq!(wal.next_lsn(), 4);
    fail::remove("wal::create_segment");
    assert_eq!(wal.append(&payload(4)).unwrap(), 4);
    wal.sync().unwrap();
    assert_eq!(wal.segments().len(), 2);
    drop(wal);
    assert_prefix(&Wal::open(dir.path(), options(84)).unwrap(), 4);
    scenario.teardown();
}

#[test]
fn failed_directory_sync_on_rollover_poisons() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options(84)).unwrap();
    append_synced(&mut wal, 3);
    fail::cfg("wal::dir_sync", "return").unwrap();
    assert!(matches!(wal.append(&payload(4)), Err(WalError::Io { .. })));
    assert!(wal.is_poisoned());
    fail::remove("wal::dir_sync");
    drop(wal);
    let mut wal = Wal::open(dir.path(), options(84)).unwrap();
    assert_prefix(&wal, 3);
    assert_eq!(wal.append(&payload(4)).unwrap(), 4);
    scenario.teardown();
}

#[test]
fn fsync_failure_on_rollover_poisons() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options(84)).unwrap();
    append_synced(&mut wal, 2);
    wal.append(&payload(3)).unwrap();
    fail::cfg("wal::fsync", "return").unwrap();
    assert!(matches!(
        wal.append(&payload(4)),
        Err(WalError::SyncFailed { lsn: 3, .. })
    ));
    assert!(wal.is_poisoned());
    fail::remove("wal::fsync");
    drop(wal);
    assert_prefix(&Wal::open(dir.path(), options(84)).unwrap(), 2);
    scenario.teardown();
}

/// Makes the next fdatasync announce itself on the first channel and then block until
/// released through the second.
fn block_next_fsync() -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_sender, entered) = mpsc::channel();
    let (release, release_receiver) = mpsc::channel::<()>();
    let release_receiver = Mutex::new(release_receiver);
    fail::cfg_callback("wal::fsync", move || {
        entered_sender.send(()).unwrap();
        release_receiver.lock().unwrap().recv().unwrap();
    })
    .unwrap();
    (entered, release)
}

/// The leader's fdatasync runs without the lock, and a failed fdatasync reaches every
/// caller whose record it covered.
#[test]
fn group_commit_fsync_runs_unlocked_and_failure_reaches_every_covered_waiter() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let wal = SharedWal::open(dir.path(), options(4096)).unwrap();

    let (entered, release) = block_next_fsync();
    let leader = {
        let wal = wal.clone();
        thread::spawn(move || wal.append_durable(b"one"))
    };
    entered
        .recv_timeout(WAIT)
        .expect("leader reached fdatasync");

    // Appends proceed while the leader is inside fdatasync.
    let (appended_sender, appended) = mpsc::channel();
    let appender = wal.clone();
    thread::spawn(move || {
        let lsns = (
            appender.append(b"two").unwrap(),
            appender.append(b"three").unwrap(),
        );
        appended_sender.send(lsns).unwrap();
    });
    assert_eq!(
        appended
            .recv_timeout(WAIT)
            .expect("append blocked by fdatasync"),
        (2, 3)
    );

    // The next fdatasync, covering lsns 2 and 3, fails.
    fail::cfg("wal::fsync", "return").unwrap();
    let waiters: Vec<_> = [2, 3]
        .into_iter()
        .map(|lsn| {
            let wal = wal.clone();
            thread::spawn(move || wal.sync_to(lsn))
        })
        .collect();
    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap().unwrap(), 1);
    for waiter in waiters {
        let result = waiter.join().unwrap();
        assert!(
            matches!(result, Err(WalError::SyncFailed { lsn: 3, .. })),
            "{result:?}"
        );
    }
    assert!(wal.is_poisoned());
    assert_eq!(wal.durable_lsn(), 1);
    wal.sync_to(1).unwrap();
    assert!(matches!(wal.sync_to(2), Err(WalError::SyncFailed { .. })));
    assert!(matches!(
        wal.append(b"four"),
        Err(WalError::Poisoned { .. })
    ));
    fail::remove("wal::fsync");
    drop(wal);
    let wal = Wal::open(dir.path(), options(4096)).unwrap();
    assert_eq!(wal.read(1..2).unwrap(), vec![(1, b"one".to_vec())]);
    scenario.teardown();
}
