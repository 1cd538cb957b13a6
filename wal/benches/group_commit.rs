//! Group commit throughput next to the raw fdatasync floor of the same file system.
//!
//! `cargo bench -p paxkv-wal` prints a plain table from fixed-duration loops (3 s a case),
//! then criterion statistics for single-writer append latency. Files go to
//! `$PAXKV_BENCH_DIR`, or else the system temp dir; put it on the disk you care about.
//! Run without `--bench` (as `cargo test --benches` does) it only smoke-tests briefly.

// Benchmarks measure wall-clock time; the logical-time rule is for the consensus core.
#![allow(clippy::disallowed_methods)]

use std::env;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use paxkv_wal::{SharedWal, Wal, WalOptions};

const RECORD_BYTES: usize = 256;
const WRITER_COUNTS: [usize; 3] = [1, 8, 64];
const CASE_DURATION: Duration = Duration::from_secs(3);
const SMOKE_DURATION: Duration = Duration::from_millis(50);
/// Keeps the criterion append loop from filling the disk: compact after this many appends.
const APPENDS_PER_COMPACTION_MAX: u64 = 100_000;

fn bench_dir() -> PathBuf {
    env::var_os("PAXKV_BENCH_DIR").map_or_else(env::temp_dir, PathBuf::from)
}

/// Single writer, plain file: write 256 B, fdatasync, repeat. No WAL can beat this per
/// sync; group commit wins by covering many appends with one.
fn fdatasync_floor(dir: &Path, duration: Duration) -> (u64, Duration) {
    // A named file in a fresh directory, like a segment, so both pay the same metadata.
    let file_dir = tempfile::tempdir_in(dir).expect("temp dir");
    let mut file = File::create(file_dir.path().join("floor")).expect("create file");
    let record = [0x5au8; RECORD_BYTES];
    let start = Instant::now();
    let mut syncs = 0u64;
    while start.elapsed() < duration {
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
        syncs += 1;
    }
    (syncs, start.elapsed())
}

struct GroupCommit {
    appends: u64,
    syncs: u64,
    elapsed: Duration,
}

/// `writers` threads each loop `append_durable(256 B)` for `duration`.
fn group_commit(dir: &Path, writers: usize, duration: Duration) -> GroupCommit {
    let wal_dir = tempfile::tempdir_in(dir).expect("temp dir");
    let wal = SharedWal::open(wal_dir.path(), WalOptions::default()).expect("open wal");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (wal, stop) = (wal.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let record = [0xa5u8; RECORD_BYTES];
                let mut appends = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    wal.append_durable(&record).expect("append_durable");
                    appends += 1;
                }
                appends
            })
        })
        .collect();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let appends = handles.into_iter().map(|h| h.join().expect("writer")).sum();
    GroupCommit {
        appends,
        syncs: wal.syncs_total(),
        elapsed: start.elapsed(),
    }
}

fn print_table(dir: &Path, duration: Duration) {
    println!(
        "wal bench dir: {} ({} s per case)",
        dir.display(),
        duration.as_secs_f64()
    );
    print_floor(dir, duration, "fdatasync floor");
    for writers in WRITER_COUNTS {
        let run = group_commit(dir, writers, duration);
        let seconds = run.elapsed.as_secs_f64();
        println!(
            "group commit, {writers} writers, {RECORD_BYTES} B: {:.0} appends/s, {:.1} MB/s, {:.1} appends/sync",
            run.appends as f64 / seconds,
            (run.appends * RECORD_BYTES as u64) as f64 / seconds / 1e6,
            run.appends as f64 / run.syncs.max(1) as f64
        );
    }
    // Shared virtual disks drift: a second floor shows how much within one run.
    print_floor(
        dir,
        duration,
        "fdatasync floor, again after the group commit cases",
    );
}

fn print_floor(dir: &Path, duration: Duration, label: &str) {
    let (syncs, elapsed) = fdatasync_floor(dir, duration);
    let seconds = elapsed.as_secs_f64();
    println!(
        "{label}: {:.0} syncs/s ({:.0} us/sync)",
        syncs as f64 / seconds,
        seconds * 1e6 / syncs.max(1) as f64
    );
}

fn criterion_benches(dir: &Path) {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    let wal_dir = tempfile::tempdir_in(dir).expect("temp dir");
    let options = WalOptions {
        segment_bytes_max: 8 << 20,
        ..WalOptions::default()
    };
    let mut wal = Wal::open(wal_dir.path(), options).expect("open wal");
    let record = [0x3cu8; RECORD_BYTES];
    let mut group = criterion.benchmark_group("wal");
    group.throughput(Throughput::Bytes(RECORD_BYTES as u64));
    group.bench_function("append_buffered_256B", |bencher| {
        bencher.iter(|| {
            let lsn = wal.append(&record).expect("append");
            if lsn % APPENDS_PER_COMPACTION_MAX == 0 {
                wal.compact_prefix(lsn).expect("compact");
            }
        })
    });
    group.bench_function("append_and_sync_256B", |bencher| {
        bencher.iter(|| {
            wal.append(&record).expect("append");
            wal.sync().expect("sync")
        })
    });
    group.finish();
    criterion.final_summary();
}

fn main() {
    let args: Vec<String> = env::args().collect();
    if args.iter().any(|arg| arg == "--list") {
        // A test runner asking for test names: this binary has none.
        return;
    }
    let dir = bench_dir();
    if !args.iter().any(|arg| arg == "--bench") {
        print_table(&dir, SMOKE_DURATION);
        return;
    }
    print_table(&dir, CASE_DURATION);
    criterion_benches(&dir);
}
