//! Group commit: concurrent durable appends share fdatasyncs and all come back on reopen.

use std::collections::BTreeMap;
use std::thread;

use paxkv_wal::{Lsn, SharedWal, Wal, WalError, WalOptions};

const THREADS: usize = 16;
const APPENDS_PER_THREAD: usize = 100;

fn options() -> WalOptions {
    WalOptions {
        // Small enough that rollovers happen while other threads wait for a sync.
        segment_bytes_max: 16 << 10,
        record_bytes_max: 1024,
    }
}

fn payload(thread: usize, index: usize) -> Vec<u8> {
    format!("thread {thread} append {index}").into_bytes()
}

#[test]
fn concurrent_durable_appends_are_consecutive_and_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SharedWal::open(dir.path(), options()).unwrap();
    let writers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let wal = wal.clone();
            thread::spawn(move || {
                let mut appended = Vec::with_capacity(APPENDS_PER_THREAD);
                for index in 0..APPENDS_PER_THREAD {
                    let lsn = wal.append_durable(&payload(thread, index)).unwrap();
                    // Told durable means durable now, not eventually.
                    assert!(wal.durable_lsn() >= lsn);
                    appended.push((lsn, payload(thread, index)));
                }
                appended
            })
        })
        .collect();
    let mut appended: BTreeMap<Lsn, Vec<u8>> = BTreeMap::new();
    for writer in writers {
        let records = writer.join().unwrap();
        assert!(
            records.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "one thread's lsns increase"
        );
        for (lsn, payload) in records {
            assert!(
                appended.insert(lsn, payload).is_none(),
                "lsn {lsn} handed out twice"
            );
        }
    }
    let total = (THREADS * APPENDS_PER_THREAD) as u64;
    assert_eq!(
        appended.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let syncs = wal.syncs_total();
    assert!(
        syncs < total,
        "{syncs} fdatasyncs for {total} appends: no grouping"
    );
    assert!(wal.segments().len() > 1, "test meant to cover rollovers");
    drop(wal);

    let reopened = Wal::open(dir.path(), options()).unwrap();
    let recovered: BTreeMap<Lsn, Vec<u8>> = reopened.read(..).unwrap().into_iter().collect();
    assert_eq!(recovered, appended);
}

#[test]
fn sync_to_a_durable_lsn_returns_without_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SharedWal::open(dir.path(), options()).unwrap();
    let lsn = wal.append_durable(b"one").unwrap();
    let syncs = wal.syncs_total();
    wal.sync_to(lsn).unwrap();
    wal.sync_to(0).unwrap();
    assert_eq!(wal.syncs_total(), syncs);
    assert!(matches!(
        wal.sync_to(lsn + 1),
        Err(WalError::LsnOutOfRange { .. })
    ));
    let second = wal.append(b"two").unwrap();
    assert_eq!(wal.durable_lsn(), lsn);
    assert_eq!(wal.sync().unwrap(), second);
}

#[test]
fn shared_truncate_and_compact_keep_lsns_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SharedWal::open(
        dir.path(),
        WalOptions {
            segment_bytes_max: 128,
            record_bytes_max: 64,
        },
    )
    .unwrap();
    for index in 0..20 {
        wal.append(&payload(0, index)).unwrap();
    }
    wal.sync().unwrap();
    wal.truncate_suffix(15).unwrap();
    assert_eq!((wal.next_lsn(), wal.durable_lsn()), (15, 14));
    wal.compact_prefix(10).unwrap();
    assert!(wal.first_lsn() > 1 && wal.first_lsn() <= 10);
    let records = wal.read(wal.first_lsn()..).unwrap();
    assert_eq!(records.last().unwrap().0, 14);
}
