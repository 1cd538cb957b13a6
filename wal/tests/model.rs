//! Model-based tests: random appends, syncs, truncations, compactions and crashes against a
//! `Vec` of records. A crash drops the WAL and cuts every segment anywhere between what was
//! last synced and what reached the file, as a power loss could.

use std::fs::{self, OpenOptions};
use std::path::Path;

use paxkv_wal::{Lsn, SegmentInfo, Wal, WalError, WalOptions};
use proptest::prelude::*;

const RECORD_BYTES_MAX: u32 = 100;

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<u8>),
    /// Write the buffer to the file without syncing: bytes a crash may or may not keep.
    Flush,
    Sync,
    /// Truncate from a point chosen by this number within `[first, next]`.
    TruncateSuffix(u16),
    /// Compact up to a point chosen by this number within `[first, next + 1]`.
    CompactPrefix(u16),
    /// Crash; the number seeds where each file is cut.
    Crash(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Some payloads exceed RECORD_BYTES_MAX on purpose.
        8 => prop::collection::vec(any::<u8>(), 0..=(RECORD_BYTES_MAX as usize + 20)).prop_map(Op::Append),
        2 => Just(Op::Flush),
        3 => Just(Op::Sync),
        1 => any::<u16>().prop_map(Op::TruncateSuffix),
        1 => any::<u16>().prop_map(Op::CompactPrefix),
        1 => any::<u64>().prop_map(Op::Crash),
    ]
}

fn segment_bytes_max() -> impl Strategy<Value = u64> {
    prop_oneof![Just(256u64), Just(512), 256u64..=4096]
}

/// The log as it should be: `records[i]` has lsn `first + i`.
#[derive(Debug)]
struct Model {
    first: Lsn,
    records: Vec<Vec<u8>>,
    /// Every record up to here must survive any crash.
    durable: Lsn,
}

impl Model {
    fn next(&self) -> Lsn {
        self.first + self.records.len() as Lsn
    }

    /// `n` in `[first, first + span)`.
    fn pick(&self, n: u16, span: u64) -> Lsn {
        self.first + u64::from(n) % span
    }
}

/// splitmix64: a tiny seeded generator, so a failing case replays exactly.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn options(segment_bytes_max: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max,
        record_bytes_max: RECORD_BYTES_MAX,
    }
}

fn apply(wal: &mut Wal, model: &mut Model, op: &Op) {
    match op {
        Op::Append(payload) => match wal.append(payload) {
            Ok(lsn) => {
                assert_eq!(lsn, model.next());
                model.records.push(payload.clone());
            }
            Err(WalError::RecordTooLarge { .. }) => {
                assert!(payload.len() > RECORD_BYTES_MAX as usize)
            }
            Err(other) => panic!("append failed: {other}"),
        },
        Op::Flush => wal.flush().unwrap(),
        Op::Sync => {
            model.durable = wal.sync().unwrap();
            assert_eq!(model.durable, model.next() - 1);
        }
        Op::TruncateSuffix(n) => {
            let from = model.pick(*n, model.records.len() as u64 + 1);
            wal.truncate_suffix(from).unwrap();
            model.records.truncate((from - model.first) as usize);
            model.durable = model.durable.min(from - 1);
        }
        Op::CompactPrefix(n) => {
            let upto = model.pick(*n, model.records.len() as u64 + 2);
            wal.compact_prefix(upto).unwrap();
            let first = wal.first_lsn();
            assert!(first >= model.first);
            assert!(
                first <= upto.max(model.first),
                "compacted a record >= {upto}"
            );
            model.records.drain(..(first - model.first) as usize);
            model.first = first;
        }
        Op::Crash(_) => unreachable!("crashes are run by the caller"),
    }
    assert_eq!(wal.next_lsn(), model.next());
    assert!(wal.durable_lsn() >= model.durable);
}

/// Cuts every segment to a random length between its synced and its written length.
fn cut_files(segments: &[SegmentInfo], seed: u64) {
    for (index, segment) in segments.iter().enumerate() {
        let written_bytes = fs::metadata(&segment.path).unwrap().len();
        assert!(written_bytes >= segment.durable_bytes, "{segment:?}");
        let choices = written_bytes - segment.durable_bytes + 1;
        let cut = segment.durable_bytes + mix(seed ^ index as u64) % choices;
        let file = OpenOptions::new().write(true).open(&segment.path).unwrap();
        file.set_len(cut).unwrap();
    }
}

fn crash_and_recover(wal: Wal, model: &mut Model, seed: u64) -> Wal {
    let segments = wal.segments();
    let segment_bytes_max = wal.options().segment_bytes_max;
    let dir = wal.dir().to_path_buf();
    let mut wal = wal;
    if seed & 1 == 1 {
        // The OS got the unsynced records too; the cut below may keep any part of them.
        wal.flush().unwrap();
    }
    drop(wal);
    cut_files(&segments, seed);
    let wal = Wal::open(&dir, options(segment_bytes_max)).unwrap();
    let next = wal.next_lsn();
    assert_eq!(wal.first_lsn(), model.first);
    assert!(
        next > model.durable,
        "lost synced records: next {next}, durable {}",
        model.durable
    );
    assert!(next <= model.next(), "served records never appended");
    model.records.truncate((next - model.first) as usize);
    model.durable = next - 1;
    assert_eq!(wal.durable_lsn(), next - 1);
    assert_log(&wal, model);
    wal
}

fn assert_log(wal: &Wal, model: &Model) {
    let expected: Vec<_> = (model.first..).zip(model.records.iter().cloned()).collect();
    assert_eq!(wal.read(..).unwrap(), expected);
}

fn run(dir: &Path, segment_bytes_max: u64, ops: &[Op]) -> (Wal, Model) {
    let mut wal = Wal::open(dir, options(segment_bytes_max)).unwrap();
    let mut model = Model {
        first: 1,
        records: Vec::new(),
        durable: 0,
    };
    for op in ops {
        match op {
            Op::Crash(seed) => wal = crash_and_recover(wal, &mut model, *seed),
            op => apply(&mut wal, &mut model, op),
        }
    }
    assert_log(&wal, &model);
    (wal, model)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// After any crash the log is a prefix of the model that holds every synced record.
    #[test]
    fn crash_recovery_keeps_every_synced_record(
        segment_bytes_max in segment_bytes_max(),
        ops in prop::collection::vec(op(), 1..60),
        final_seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (wal, mut model) = run(dir.path(), segment_bytes_max, &ops);
        crash_and_recover(wal, &mut model, final_seed);
    }

    /// A flipped byte anywhere in synced data makes open fail with `Corrupt` naming the
    /// file and an offset at or before the flip, never a silently shorter log.
    #[test]
    fn corruption_in_synced_data_is_reported(
        segment_bytes_max in segment_bytes_max(),
        ops in prop::collection::vec(op(), 1..60),
        cut_seed in any::<u64>(),
        where_seed in any::<u64>(),
        mask in 1u8..=255,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = run(dir.path(), segment_bytes_max, &ops);
        let segments = wal.segments();
        if cut_seed & 1 == 1 {
            wal.flush().unwrap();
        }
        drop(wal);
        cut_files(&segments, cut_seed);
        let target = &segments[(mix(where_seed) % segments.len() as u64) as usize];
        let position = mix(where_seed ^ 1) % target.durable_bytes;
        let mut bytes = fs::read(&target.path).unwrap();
        bytes[position as usize] ^= mask;
        fs::write(&target.path, bytes).unwrap();
        match Wal::open(dir.path(), options(segment_bytes_max)) {
            Err(WalError::Corrupt { path, offset, .. }) => {
                prop_assert_eq!(path, target.path.clone());
                prop_assert!(offset <= position, "offset {} > flipped byte {}", offset, position);
            }
            Err(other) => prop_assert!(false, "expected Corrupt, got {}", other),
            Ok(wal) => prop_assert!(false, "opened despite corruption, next lsn {}", wal.next_lsn()),
        }
    }
}
