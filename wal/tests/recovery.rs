//! Recovery: which damage `Wal::open` cuts off as a torn tail and which it calls corruption.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use paxkv_wal::{Lsn, Wal, WalError, WalOptions, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};

/// Every payload is 20 bytes, so every frame is 32 and offsets are easy to compute.
const PAYLOAD_BYTES: u64 = 20;
const FRAME_BYTES: u64 = FRAME_HEADER_BYTES + PAYLOAD_BYTES;

fn payload(lsn: Lsn) -> Vec<u8> {
    let bytes = format!("record-{lsn:013}").into_bytes();
    assert_eq!(bytes.len() as u64, PAYLOAD_BYTES);
    bytes
}

/// Room for `records_per_segment` frames after the segment header.
fn options(records_per_segment: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max: SEGMENT_HEADER_BYTES + records_per_segment * FRAME_BYTES,
        record_bytes_max: 1024,
    }
}

/// Writes `count` synced records and closes the WAL; returns its segment paths.
fn write_log(dir: &Path, records_per_segment: u64, count: u64) -> Vec<PathBuf> {
    let mut wal = Wal::open(dir, options(records_per_segment)).unwrap();
    for lsn in 1..=count {
        assert_eq!(wal.append(&payload(lsn)).unwrap(), lsn);
    }
    wal.sync().unwrap();
    wal.segments()
        .into_iter()
        .map(|segment| segment.path)
        .collect()
}

fn frame_offset(index_in_segment: u64) -> u64 {
    SEGMENT_HEADER_BYTES + index_in_segment * FRAME_BYTES
}

fn assert_records(wal: &Wal, first: Lsn, next: Lsn) {
    let expected: Vec<_> = (first..next).map(|lsn| (lsn, payload(lsn))).collect();
    assert_eq!(wal.read(..).unwrap(), expected);
    assert_eq!(wal.next_lsn(), next);
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn expect_corrupt(dir: &Path, records_per_segment: u64) -> (PathBuf, u64, String) {
    match Wal::open(dir, options(records_per_segment)) {
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(wal) => panic!("expected Corrupt, opened with next lsn {}", wal.next_lsn()),
    }
}

#[test]
fn torn_last_record_is_cut_at_every_byte_offset() {
    // Two segments, so the tail cut happens in a segment that follows a sealed one.
    for cut in frame_offset(1)..frame_offset(2) {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_log(dir.path(), 3, 5);
        let last = paths.last().unwrap();
        set_len(last, cut);
        let mut wal = Wal::open(dir.path(), options(3)).unwrap();
        assert_records(&wal, 1, 5);
        assert_eq!(wal.durable_lsn(), 4);
        assert_eq!(
            fs::metadata(last).unwrap().len(),
            frame_offset(1),
            "cut {cut}"
        );
        // The log continues where the torn record was.
        assert_eq!(wal.append(&payload(5)).unwrap(), 5);
        wal.sync().unwrap();
        drop(wal);
        assert_records(&Wal::open(dir.path(), options(3)).unwrap(), 1, 6);
    }
}

#[test]
fn torn_tail_down_to_an_empty_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 3, 4);
    set_len(&paths[1], SEGMENT_HEADER_BYTES + 5);
    let wal = Wal::open(dir.path(), options(3)).unwrap();
    assert_records(&wal, 1, 4);
}

#[test]
fn flipped_byte_in_a_middle_record_is_corrupt() {
    let middle = frame_offset(2);
    for offset in middle..middle + FRAME_BYTES {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_log(dir.path(), 10, 5);
        flip_byte(&paths[0], offset);
        let (path, corrupt_offset, _) = expect_corrupt(dir.path(), 10);
        assert_eq!(path, paths[0]);
        assert_eq!(corrupt_offset, middle, "flip at {offset}");
    }
}

#[test]
fn flipped_byte_in_the_last_complete_record_is_corrupt() {
    // The frame was written whole, so a crash cannot explain a bad checksum: refusing
    // beats silently dropping a record that was reported durable.
    let last = frame_offset(4);
    for offset in last..last + FRAME_BYTES {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_log(dir.path(), 10, 5);
        flip_byte(&paths[0], offset);
        let (path, corrupt_offset, _) = expect_corrupt(dir.path(), 10);
        assert_eq!(
            (path, corrupt_offset),
            (paths[0].clone(), last),
            "flip at {offset}"
        );
    }
}

#[test]
fn flipped_byte_in_an_earlier_segment_is_corrupt() {
    // Including the last record of the sealed segment, which nothing follows in its file.
    for index in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_log(dir.path(), 3, 8);
        flip_byte(&paths[1], frame_offset(index) + 15);
        let (path, offset, _) = expect_corrupt(dir.path(), 3);
        assert_eq!((path, offset), (paths[1].clone(), frame_offset(index)));
    }
}

#[test]
fn short_earlier_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 3, 8);
    set_len(&paths[0], frame_offset(2) + 7);
    let (path, offset, reason) = expect_corrupt(dir.path(), 3);
    assert_eq!((path, offset), (paths[0].clone(), frame_offset(2)));
    assert!(reason.contains("not the last"), "{reason}");
}

#[test]
fn flipped_segment_header_is_corrupt() {
    for offset in 0..SEGMENT_HEADER_BYTES {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_log(dir.path(), 3, 5);
        flip_byte(&paths[1], offset);
        let (path, corrupt_offset, _) = expect_corrupt(dir.path(), 3);
        assert_eq!((path, corrupt_offset), (paths[1].clone(), 0));
    }
}

#[test]
fn segment_shorter_than_its_header_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 3, 4);
    set_len(&paths[1], SEGMENT_HEADER_BYTES - 1);
    let (path, offset, _) = expect_corrupt(dir.path(), 3);
    assert_eq!((path, offset), (paths[1].clone(), 0));
}

#[test]
fn missing_middle_segment_is_an_lsn_gap() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 3, 10);
    fs::remove_file(&paths[1]).unwrap();
    let (path, offset, reason) = expect_corrupt(dir.path(), 3);
    assert_eq!((path, offset), (paths[2].clone(), 0));
    assert!(reason.contains("discontinuity"), "{reason}");
}

#[test]
fn zero_filled_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10, 5);
    append_bytes(&paths[0], &[0u8; 4096]);
    let wal = Wal::open(dir.path(), options(10)).unwrap();
    assert_records(&wal, 1, 6);
    assert_eq!(fs::metadata(&paths[0]).unwrap().len(), frame_offset(5));
}

#[test]
fn zero_filled_tail_shorter_than_a_frame_header_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10, 5);
    append_bytes(&paths[0], &[0u8; 5]);
    assert_records(&Wal::open(dir.path(), options(10)).unwrap(), 1, 6);
}

#[test]
fn zeros_followed_by_a_valid_frame_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10, 5);
    let bytes = fs::read(&paths[0]).unwrap();
    let valid_frame = &bytes[frame_offset(4) as usize..];
    append_bytes(&paths[0], &[0u8; 64]);
    append_bytes(&paths[0], valid_frame);
    let (path, offset, _) = expect_corrupt(dir.path(), 10);
    assert_eq!((path, offset), (paths[0].clone(), frame_offset(5)));
}

#[test]
fn garbage_after_the_last_record_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10, 5);
    append_bytes(&paths[0], &[0xab; 40]);
    let (_, offset, _) = expect_corrupt(dir.path(), 10);
    assert_eq!(offset, frame_offset(5));
}

#[test]
fn stray_temporary_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3, 5);
    let temporary = dir.path().join("00000000000000000006.wal.tmp");
    fs::write(&temporary, b"half a header").unwrap();
    let wal = Wal::open(dir.path(), options(3)).unwrap();
    assert_records(&wal, 1, 6);
    assert!(!temporary.exists());
}
