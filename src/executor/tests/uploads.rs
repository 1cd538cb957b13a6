//! Uploads: chunks staged slot by slot, committed atomically, read by range, reclaimed.

use super::*;
use crate::executor::blob::{UploadId, CF_BLOBS, CF_UPLOADS};

const A: UploadId = [0xA; 16];
const B: UploadId = [0xB; 16];

fn chunk(upload: UploadId, offset: u64, data: &[u8], now_ms: u64) -> KvCommand {
    write(WriteRequest::UploadChunk {
        upload,
        offset,
        data: data.to_vec(),
        now_ms,
        ttl_ms: 1_000,
    })
}

fn set_upload(key: &[u8], upload: UploadId, bytes: u64) -> Mutation {
    Mutation::SetUpload {
        key: key.to_vec(),
        upload,
        bytes,
    }
}

fn staged_bytes(outcome: &WriteOutcome) -> u64 {
    match outcome {
        WriteOutcome::Staged { bytes, .. } => *bytes,
        other => panic!("not staged: {other:?}"),
    }
}

fn entries(node: &mut Node, family: &str) -> usize {
    node.dump()
        .iter()
        .filter(|(name, _, _)| *name == family)
        .count()
}

/// 3 chunks of unequal size, one slot each.
fn stage_abc(node: &mut Node, upload: UploadId) -> Vec<u8> {
    let parts: [&[u8]; 3] = [b"0123456789", b"abc", b"ABCDEFGHIJKLMNOP"];
    let mut offset = 0;
    for part in parts {
        let outcome = node.apply_one(chunk(upload, offset, part, 10));
        offset += part.len() as u64;
        assert_eq!(staged_bytes(&outcome), offset);
    }
    parts.concat()
}

#[test]
fn a_committed_upload_reads_whole_by_range_and_in_watch_events_and_is_consumed() {
    let mut node = Node::new(options());
    let value = stage_abc(&mut node, A);
    // Staged bytes are invisible and take no version.
    assert_eq!(node.executor().current_version(), 0);
    assert_eq!(node.reader().uploads().unwrap().count, 1);
    let outcome = node.apply_one(txn(vec![], vec![set_upload(b"big", A, 29)], vec![]));
    let version = version_of(&outcome);
    assert_eq!(node.latest(b"big").unwrap().value, value);
    for (offset, length) in [
        (0, 29),
        (5, 10),
        (9, 2),
        (13, 100),
        (28, 1),
        (29, 5),
        (40, 1),
    ] {
        let got = node
            .reader()
            .get_value_range(b"big", version, offset, length);
        let got = got.unwrap().unwrap();
        let end = (offset + length).min(29) as usize;
        let want = &value[(offset as usize).min(29)..end];
        assert_eq!(
            (got.data.as_slice(), got.total_bytes),
            (want, 29),
            "{offset}+{length}"
        );
    }
    let page = node.reader().watch_events(&range(b"", b""), 1, 10).unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].kind, EventKind::Put);
    assert_eq!(page.events[0].value.as_deref(), Some(value.as_slice()));
    // Consumed: a second commit of the same upload is refused, and nothing is staged.
    let again = node.apply_one(txn(vec![], vec![set_upload(b"other", A, 29)], vec![]));
    assert!(is_rejected(&again), "{again:?}");
    assert_eq!(node.reader().uploads().unwrap().count, 0);
    assert_eq!(entries(&mut node, CF_UPLOADS), 0);
    // Survives a restart, and small values read by range too.
    node.reopen();
    assert_eq!(node.latest(b"big").unwrap().value, value);
    node.apply_one(put(b"small", b"hello"));
    let small = node.reader().get_value_range(b"small", version + 1, 1, 3);
    assert_eq!(small.unwrap().unwrap().data, b"ell");
}

#[test]
fn chunks_must_follow_one_another_and_stay_within_the_limits() {
    let mut node = Node::new(ExecutorOptions {
        value_bytes_max: 20,
        uploads_max: 2,
        ..options()
    });
    let unknown = node.apply_one(chunk(A, 5, b"x", 10));
    assert!(is_rejected(&unknown), "{unknown:?}");
    node.apply_one(chunk(A, 0, b"0123456789", 10));
    let WriteOutcome::Rejected { reason } = node.apply_one(chunk(A, 3, b"x", 10)) else {
        panic!("a gap or overlap is refused");
    };
    assert!(reason.contains("starts at offset 10"), "{reason}");
    let too_big = node.apply_one(chunk(A, 10, &[b'z'; 11], 10));
    assert!(is_rejected(&too_big), "{too_big:?}");
    assert_eq!(
        staged_bytes(&node.apply_one(chunk(A, 10, &[b'z'; 10], 10))),
        20
    );
    node.apply_one(chunk(B, 0, b"b", 10));
    let third = node.apply_one(chunk([0xC; 16], 0, b"c", 10));
    assert!(is_rejected(&third), "uploads_max: {third:?}");
    // A wrong size is refused and the upload stays staged.
    let wrong = node.apply_one(txn(vec![], vec![set_upload(b"k", A, 19)], vec![]));
    assert!(is_rejected(&wrong), "{wrong:?}");
    let twice = txn(
        vec![],
        vec![set_upload(b"k", A, 20), set_upload(b"j", A, 20)],
        vec![],
    );
    assert!(is_rejected(&node.apply_one(twice)));
    assert_eq!(node.reader().uploads().unwrap().count, 2);
}

#[test]
fn a_transaction_of_uploads_is_all_or_nothing() {
    let mut node = Node::new(options());
    let a = stage_abc(&mut node, A);
    node.apply_one(chunk(B, 0, b"second", 10));
    node.apply_one(put(b"guard", b"1"));
    let compare = Compare {
        key: b"guard".to_vec(),
        target: CompareTarget::Value,
        op: CompareOp::Equal,
        value: Some(b"2".to_vec()),
        version: None,
        exists: None,
    };
    let both = vec![
        set_upload(b"a", A, 29),
        set_upload(b"b", B, 6),
        set(b"m", b"manifest"),
    ];
    let failed = node.apply_one(txn(vec![compare.clone()], both.clone(), vec![]));
    assert!(matches!(
        failed,
        WriteOutcome::Txn {
            succeeded: false,
            ..
        }
    ));
    assert_eq!((node.latest(b"a"), node.latest(b"b")), (None, None));
    assert_eq!(node.reader().uploads().unwrap().count, 2);
    node.apply_one(put(b"guard", b"2"));
    let done = node.apply_one(txn(vec![compare], both, vec![]));
    let version = version_of(&done);
    for (key, value) in [
        (&b"a"[..], a.as_slice()),
        (b"b", b"second"),
        (b"m", b"manifest"),
    ] {
        let kv = node.latest(key).unwrap();
        assert_eq!((kv.value.as_slice(), kv.mod_version), (value, version));
    }
    assert_eq!(node.reader().uploads().unwrap().count, 0);
}

#[test]
fn a_blob_written_in_the_same_slot_is_read_by_later_commands() {
    let mut node = Node::new(options());
    let compare = Compare {
        key: b"k".to_vec(),
        target: CompareTarget::Value,
        op: CompareOp::Equal,
        value: Some(b"hello world".to_vec()),
        version: None,
        exists: None,
    };
    let outcomes = node.apply(&[
        chunk(A, 0, b"hello ", 10),
        chunk(A, 6, b"world", 10),
        txn(vec![], vec![set_upload(b"k", A, 11)], vec![]),
        txn(vec![compare], vec![set(b"seen", b"yes")], vec![]),
        txn(vec![], vec![add(b"k", &[1])], vec![]),
    ]);
    assert!(
        matches!(
            outcomes[3],
            WriteOutcome::Txn {
                succeeded: true,
                ..
            }
        ),
        "{outcomes:?}"
    );
    assert_eq!(node.latest(b"seen").unwrap().value, b"yes");
    // ADD reads the blob's first byte ('h' + 1) and writes a plain value.
    assert_eq!(node.latest(b"k").unwrap().value, b"i");
}

#[test]
fn chunks_go_with_the_last_version_that_refers_to_them() {
    let mut node = Node::new(ExecutorOptions {
        retention_versions: 1,
        ..options()
    });
    stage_abc(&mut node, A);
    node.apply_one(txn(vec![], vec![set_upload(b"k", A, 29)], vec![]));
    assert_eq!(entries(&mut node, CF_BLOBS), 3);
    // Overwritten in the same command: the upload's bytes belong to nothing and go.
    node.apply_one(chunk(B, 0, b"doomed", 10));
    node.apply_one(txn(
        vec![],
        vec![set_upload(b"j", B, 6), set(b"j", b"plain")],
        vec![],
    ));
    assert_eq!(node.latest(b"j").unwrap().value, b"plain");
    node.apply_one(put(b"k", b"new"));
    for i in 0..20u8 {
        node.apply_one(put(b"filler", &[i]));
    }
    assert_eq!(entries(&mut node, CF_BLOBS), 0, "{:?}", node.dump());
    assert_eq!(entries(&mut node, CF_UPLOADS), 0);
}

#[test]
fn uploads_expire_by_the_upload_clock_and_abort_drops_them() {
    let mut node = Node::new(options());
    node.apply_one(chunk(A, 0, b"aaaa", 1_000)); // expires at 2_000
    node.apply_one(chunk(B, 0, b"bbbb", 1_500)); // expires at 2_500
    let early = node.apply_one(write(WriteRequest::ReclaimUploads { now_ms: 1_900 }));
    assert_eq!(early, WriteOutcome::UploadsDropped { count: 0 });
    // A clock that goes back moves nothing.
    node.apply_one(chunk(B, 4, b"b", 100));
    let reclaimed = node.apply_one(write(WriteRequest::ReclaimUploads { now_ms: 2_001 }));
    assert_eq!(reclaimed, WriteOutcome::UploadsDropped { count: 1 });
    let gone = node.apply_one(chunk(A, 4, b"a", 2_001));
    assert!(is_rejected(&gone), "{gone:?}");
    let aborted = node.apply_one(write(WriteRequest::AbortUpload { upload: B }));
    assert_eq!(aborted, WriteOutcome::UploadsDropped { count: 1 });
    let again = node.apply_one(write(WriteRequest::AbortUpload { upload: B }));
    assert_eq!(again, WriteOutcome::UploadsDropped { count: 0 });
    assert_eq!(entries(&mut node, CF_BLOBS), 0);
    assert_eq!(entries(&mut node, CF_UPLOADS), 0);
}

#[test]
fn replicas_applying_the_same_upload_slots_hold_the_same_bytes() {
    let slots = vec![
        vec![chunk(A, 0, b"first ", 5), chunk(B, 0, b"other", 5)],
        vec![chunk(A, 6, b"second", 6)],
        vec![
            txn(vec![], vec![set_upload(b"k", A, 12)], vec![]),
            put(b"k2", b"v"),
        ],
        vec![write(WriteRequest::ReclaimUploads { now_ms: 10_000 })],
    ];
    let mut nodes = [Node::new(options()), Node::new(options())];
    for node in &mut nodes {
        for slot in &slots {
            node.apply(slot);
        }
    }
    let [a, b] = &mut nodes;
    assert_eq!(a.dump(), b.dump());
    assert_eq!(a.executor().digest(), b.executor().digest());
    assert_eq!(entries(a, CF_UPLOADS), 0);
}

#[test]
fn blobs_and_staged_uploads_travel_in_checkpoints() {
    let mut leader = Node::new(options());
    let value = stage_abc(&mut leader, A);
    leader.apply_one(txn(vec![], vec![set_upload(b"k", A, 29)], vec![]));
    leader.apply_one(chunk(B, 0, b"half", 10));
    // Flushed, so the chunks are in blob files rather than the memtable.
    let db = &leader.executor().db;
    db.flush_cf(cf(db, CF_BLOBS)).unwrap();
    let mut follower = Node::new(options());
    install_checkpoint_of(&mut leader, &mut follower);
    assert_eq!(follower.latest(b"k").unwrap().value, value);
    // The staged upload goes on from where it stood.
    let outcome = follower.apply_one(chunk(B, 4, b"-done", 10));
    assert_eq!(staged_bytes(&outcome), 9);
    leader.apply_one(chunk(B, 4, b"-done", 10));
    assert_eq!(follower.executor().digest(), leader.executor().digest());
    follower.reopen();
    assert_eq!(follower.latest(b"k").unwrap().value, value);
}

#[test]
fn an_upload_committed_as_a_document_is_edited_in_place_and_its_chunks_still_go() {
    let mut node = Node::new(ExecutorOptions {
        retention_versions: 1,
        ..options()
    });
    let parts: [&[u8]; 2] = [br#"{"name":"billing","#, br#""replicas":3}"#];
    let mut offset = 0;
    for part in parts {
        node.apply_one(chunk(A, offset, part, 10));
        offset += part.len() as u64;
    }
    let commit = Mutation::SetUploadDocument {
        key: b"d".to_vec(),
        upload: A,
        bytes: offset,
    };
    node.apply_one(txn(vec![], vec![commit], vec![]));
    let stored = node.latest(b"d").unwrap();
    assert_eq!(stored.value, parts.concat());
    assert!(stored.document, "a document upload is stored as a document");
    // A plain upload is not.
    node.apply_one(chunk(B, 0, b"[1]", 10));
    node.apply_one(txn(vec![], vec![set_upload(b"p", B, 3)], vec![]));
    assert!(!node.latest(b"p").unwrap().document);

    node.apply_one(patch_document(
        b"d",
        PatchFormat::JsonPatch,
        br#"[{"op":"replace","path":"/replicas","value":5}]"#,
    ));
    let edited = node.latest(b"d").unwrap();
    assert_eq!(edited.value, br#"{"name":"billing","replicas":5}"#);
    assert!(edited.document);
    for i in 0..20u8 {
        node.apply_one(put(b"filler", &[i]));
    }
    node.apply_one(put(b"p", b"gone"));
    for i in 0..20u8 {
        node.apply_one(put(b"filler", &[i]));
    }
    assert_eq!(entries(&mut node, CF_BLOBS), 0, "{:?}", node.dump());
}
