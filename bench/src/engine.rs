//! The closed loop: connect, preload, run the clients, print progress, merge the results.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::keys::{KeyChooser, Rng};
use super::report::{self, latency_histogram, Errors, Report, RunInfo};
use super::{
    BenchClient, BenchConfig, BenchError, OpError, Outcome, Result, Stop, Target, Workload,
};

/// A client that just failed with `Unavailable` or a transport error waits this long before
/// its next operation.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Preload runs on at most this many connections at once.
const PRELOAD_THREADS_MAX: usize = 16;
/// A preload batch carries at most this many bytes of keys and values (well under paxkv's
/// default command_bytes_max of 4 MiB and etcd's max-request-bytes of 1.5 MiB).
const PRELOAD_BATCH_BYTES_MAX: usize = 512 * 1024;
/// A preload batch that fails with a retryable error is tried this many times in all.
const PRELOAD_ATTEMPTS_MAX: u32 = 20;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The key of data key `index`: fixed width, so keys sort by index.
pub fn data_key(index: u64) -> Vec<u8> {
    format!("bench/key/{index:012}").into_bytes()
}

/// The key of counter `index` of the `cas` workload.
pub fn cas_key(index: u64) -> Vec<u8> {
    format!("bench/cas/{index:06}").into_bytes()
}

/// The one place the load generator reads the wall clock: measuring it is the point.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Runs `config` against `target` and returns what it measured.
pub fn run<T: Target>(target: &T, config: &BenchConfig) -> Result<Report> {
    config.validate()?;
    let connections = connect_all(target, config)?;
    if config.preload {
        preload(target, &connections, config)?;
    }
    if config.workload == Workload::DocEdit {
        write_document(target, &connections[0], config)?;
    }
    let chooser = KeyChooser::new(config.distribution, config.key_space);
    let mut clients = Vec::with_capacity(config.clients);
    for index in 0..config.clients {
        let connection = &connections[index % connections.len()];
        let client = target
            .client(connection)
            .map_err(|source| BenchError::Connect {
                endpoint: endpoint_of(config, index % connections.len()),
                source,
            })?;
        clients.push(client);
    }
    let cpu_at_start = process_cpu_seconds();
    let started = now();
    let shared = Shared {
        measure_start: started + config.warmup,
        load_ops: AtomicU64::new(0),
        claimed: AtomicU64::new(0),
        ops: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        logged_bytes: AtomicU64::new(0),
    };
    let results = thread::scope(|scope| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(index, client)| {
                let run = ClientRun::new(client, config, &shared, chooser.clone(), index);
                scope.spawn(move || run.run())
            })
            .collect();
        if config.progress {
            scope.spawn(|| print_progress(&shared));
        }
        let results: Vec<ClientResult> = handles
            .into_iter()
            .map(|handle| handle.join().expect("a bench client panicked"))
            .collect();
        shared.finished.store(true, Ordering::Release);
        results
    });
    let mut report = merge(target, config, &shared, results);
    report.load_ops = shared.load_ops.load(Ordering::Relaxed);
    if config.workload == Workload::DocEdit && report.ops > 0 {
        let logged = shared.logged_bytes.load(Ordering::Relaxed);
        report.logged_bytes_per_op = Some(logged as f64 / report.ops as f64);
    }
    report.client_cpu_s = match (cpu_at_start, process_cpu_seconds()) {
        (Some(before), Some(after)) => after - before,
        _ => 0.0,
    };
    Ok(report)
}

/// The doc-edit workload's document: about `value_size` bytes of JSON configuration
/// (services with names, ports, replicas and regions), so that an edit's three `/port`
/// paths exist.
pub fn doc_edit_document(value_size: usize) -> (Vec<u8>, u64) {
    let service = |i: u64| {
        format!(
            r#"{{"name":"service-{i:06}","port":{},"replicas":{},"regions":["us-east-1","eu-west-1"],"owner":"team-{}"}}"#,
            8000 + i % 50_000,
            1 + i % 5,
            i % 97
        )
    };
    let mut json = String::from(r#"{"owner":"platform","services":["#);
    let mut services = 0u64;
    while json.len() < value_size || services == 0 {
        if services > 0 {
            json.push(',');
        }
        json.push_str(&service(services));
        services += 1;
    }
    json.push_str("]}");
    (json.into_bytes(), services)
}

pub const DOC_EDIT_KEY: &[u8] = b"bench/doc";

fn write_document<T: Target>(
    target: &T,
    connection: &Arc<T::Connection>,
    config: &BenchConfig,
) -> Result<()> {
    let (json, _) = doc_edit_document(config.value_size);
    let mut client = target
        .client(connection)
        .map_err(|source| BenchError::Connect {
            endpoint: endpoint_of(config, 0),
            source,
        })?;
    client
        .put_document(DOC_EDIT_KEY, &json)
        .map_err(|source| BenchError::Preload { keys: 1, source })
}

fn endpoint_of(config: &BenchConfig, connection: usize) -> String {
    if config.endpoints.is_empty() {
        return "local".to_string();
    }
    config.endpoints[connection % config.endpoints.len()].clone()
}

fn connect_all<T: Target>(target: &T, config: &BenchConfig) -> Result<Vec<Arc<T::Connection>>> {
    (0..config.connections)
        .map(|index| {
            let endpoint = endpoint_of(config, index);
            target
                .connect(&endpoint)
                .map(Arc::new)
                .map_err(|source| BenchError::Connect { endpoint, source })
        })
        .collect()
}

/// Writes every data key, in batches, spread over up to [`PRELOAD_THREADS_MAX`] connections.
fn preload<T: Target>(
    target: &T,
    connections: &[Arc<T::Connection>],
    config: &BenchConfig,
) -> Result<()> {
    let pair_bytes = data_key(0).len() + config.value_size;
    let batch = (PRELOAD_BATCH_BYTES_MAX / pair_bytes.max(1)).clamp(1, target.batch_pairs_max());
    let threads = connections.len().min(PRELOAD_THREADS_MAX) as u64;
    let value = vec![b'p'; config.value_size];
    let failure = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let connection = &connections[thread as usize];
                let value = &value;
                scope.spawn(move || -> std::result::Result<(), OpError> {
                    let mut client = target.client(connection)?;
                    // Thread t writes keys t, t + threads, t + 2 * threads, ...
                    let keys: Vec<u64> = (thread..config.key_space)
                        .step_by(threads as usize)
                        .collect();
                    for chunk in keys.chunks(batch) {
                        let pairs: Vec<(Vec<u8>, Vec<u8>)> = chunk
                            .iter()
                            .map(|&k| (data_key(k), value.clone()))
                            .collect();
                        put_batch_retrying(&mut client, &pairs)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a preload thread panicked"))
            .find_map(std::result::Result::err)
    });
    match failure {
        Some(source) => Err(BenchError::Preload {
            keys: config.key_space,
            source,
        }),
        None => Ok(()),
    }
}

fn put_batch_retrying<C: BenchClient>(
    client: &mut C,
    pairs: &[(Vec<u8>, Vec<u8>)],
) -> std::result::Result<(), OpError> {
    let mut attempt = 1;
    loop {
        match client.put_batch(pairs) {
            Err(error) if error.kind.pauses() && attempt < PRELOAD_ATTEMPTS_MAX => {
                attempt += 1;
                thread::sleep(ERROR_PAUSE * attempt);
            }
            result => return result,
        }
    }
}

/// Counters every client adds to, and the progress printer reads.
struct Shared {
    measure_start: Instant,
    /// Operations finished, warm-up included (whatever their outcome).
    load_ops: AtomicU64,
    /// Measured operations started, in `Stop::Ops` mode.
    claimed: AtomicU64,
    ops: AtomicU64,
    conflicts: AtomicU64,
    errors: AtomicU64,
    finished: AtomicBool,
    /// doc-edit: bytes the log carried for the measured edits.
    logged_bytes: AtomicU64,
}

struct ClientResult {
    latencies: Histogram<u64>,
    conflicts: u64,
    errors: Errors,
    finished_at: Instant,
}

/// One client thread's state.
struct ClientRun<'a, C> {
    client: C,
    config: &'a BenchConfig,
    shared: &'a Shared,
    chooser: KeyChooser,
    rng: Rng,
    value: Vec<u8>,
    /// `snapshot-get`'s read version and when it was taken.
    snapshot: Option<(i64, Instant)>,
    /// doc-edit: services in the document, and the log bytes of the last edit.
    doc_services: u64,
    logged: u64,
    latencies: Histogram<u64>,
    conflicts: u64,
    errors: Errors,
}

impl<'a, C: BenchClient> ClientRun<'a, C> {
    fn new(
        client: C,
        config: &'a BenchConfig,
        shared: &'a Shared,
        chooser: KeyChooser,
        index: usize,
    ) -> Self {
        ClientRun {
            client,
            config,
            shared,
            chooser,
            // Distinct, reproducible streams per client.
            rng: Rng::new(config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            value: vec![b'v'; config.value_size],
            snapshot: None,
            doc_services: match config.workload {
                Workload::DocEdit => doc_edit_document(config.value_size).1,
                _ => 0,
            },
            logged: 0,
            latencies: latency_histogram(),
            conflicts: 0,
            errors: Errors::new(),
        }
    }

    fn run(mut self) -> ClientResult {
        let end = match self.config.stop {
            Stop::After(duration) => Some(self.shared.measure_start + duration),
            Stop::Ops(_) => None,
        };
        loop {
            let started = now();
            let measuring = started >= self.shared.measure_start;
            if end.is_some_and(|end| started >= end) || (measuring && !self.claim()) {
                break;
            }
            let result = self.prepare().and_then(|()| {
                let started = now();
                self.step().map(|outcome| (outcome, started.elapsed()))
            });
            self.shared.load_ops.fetch_add(1, Ordering::Relaxed);
            if measuring {
                if result.is_ok() {
                    let logged = std::mem::take(&mut self.logged);
                    self.shared
                        .logged_bytes
                        .fetch_add(logged, Ordering::Relaxed);
                }
                self.record(result);
            } else if let Err(error) = result {
                self.maybe_pause(&error);
            }
        }
        ClientResult {
            latencies: self.latencies,
            conflicts: self.conflicts,
            errors: self.errors,
            finished_at: now(),
        }
    }

    /// In `Stop::Ops` mode, takes one of the operations left; false when none are.
    fn claim(&self) -> bool {
        match self.config.stop {
            Stop::Ops(total) => self.shared.claimed.fetch_add(1, Ordering::Relaxed) < total,
            Stop::After(_) => true,
        }
    }

    fn record(&mut self, result: std::result::Result<(Outcome, Duration), OpError>) {
        match result {
            Ok((Outcome::Done, took)) => {
                let us = (took.as_micros() as u64).clamp(1, report::LATENCY_US_MAX);
                self.latencies.record(us).expect("clamped into the bounds");
                self.shared.ops.fetch_add(1, Ordering::Relaxed);
            }
            Ok((Outcome::Conflict, _)) => {
                self.conflicts += 1;
                self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                report::tally(&mut self.errors, error.kind, &error.message);
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                self.maybe_pause(&error);
            }
        }
    }

    fn maybe_pause(&self, error: &OpError) {
        if error.kind.pauses() {
            thread::sleep(ERROR_PAUSE);
        }
    }

    /// Untimed work before an operation: `snapshot-get` refreshes its read version.
    fn prepare(&mut self) -> std::result::Result<(), OpError> {
        if self.config.workload != Workload::SnapshotGet {
            return Ok(());
        }
        let stale = match (self.snapshot, self.config.snapshot_refresh) {
            (None, _) => true,
            (Some((_, taken)), Some(refresh)) => taken.elapsed() >= refresh,
            (Some(_), None) => false,
        };
        if stale {
            self.snapshot = Some((self.client.read_version()?, now()));
        }
        Ok(())
    }

    /// One operation of the workload.
    fn step(&mut self) -> std::result::Result<Outcome, OpError> {
        let workload = self.config.workload;
        if let Some(reads) = workload.read_fraction() {
            let key = data_key(self.chooser.next(&mut self.rng));
            if self.rng.next_f64() < reads {
                return self.client.get(&key).map(|()| Outcome::Done);
            }
            return self.client.put(&key, &self.value).map(|()| Outcome::Done);
        }
        match workload {
            Workload::Get => {
                let key = data_key(self.chooser.next(&mut self.rng));
                self.client.get(&key).map(|()| Outcome::Done)
            }
            Workload::SnapshotGet => {
                let key = data_key(self.chooser.next(&mut self.rng));
                let (version, _) = self.snapshot.expect("prepare took a read version");
                self.client.get_at(&key, version).map(|()| Outcome::Done)
            }
            Workload::Txn => {
                let (first, second) = self.two_keys();
                self.client.txn([&first, &second], &self.value)
            }
            Workload::Cas => {
                let key = cas_key(self.rng.below(self.config.cas_keys));
                self.client.cas_increment(&key)
            }
            Workload::DocEdit => {
                let services = self.doc_services;
                let ops: Vec<String> = (0..3)
                    .map(|_| {
                        let at = self.rng.below(services);
                        let port = 1024 + self.rng.below(60_000);
                        format!(r#"{{"op":"replace","path":"/services/{at}/port","value":{port}}}"#)
                    })
                    .collect();
                let patch = format!("[{}]", ops.join(","));
                let logged = self.client.patch_document(DOC_EDIT_KEY, patch.as_bytes())?;
                self.logged = logged;
                Ok(Outcome::Done)
            }
            // Put, Large, and the local floors (whose clients treat a put as their probe).
            _ => {
                let key = data_key(self.chooser.next(&mut self.rng));
                self.client.put(&key, &self.value).map(|()| Outcome::Done)
            }
        }
    }

    /// Two distinct data keys (the key space has at least two, see `validate`).
    fn two_keys(&mut self) -> (Vec<u8>, Vec<u8>) {
        let first = self.chooser.next(&mut self.rng);
        let mut second = self.chooser.next(&mut self.rng);
        while second == first {
            // A zipfian chooser may insist on the hot key: step off it deterministically.
            second =
                (second + 1 + self.rng.below(self.config.key_space - 1)) % self.config.key_space;
        }
        (data_key(first), data_key(second))
    }
}

/// CPU time (user + system) this process has used, from `/proc/self/stat`; `None` where
/// that file is not there or not as expected.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name (which may hold spaces): utime and stime
    // are fields 14 and 15 of the line, 12 and 13 after it.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture it supports.
    Some(ticks as f64 / 100.0)
}

/// A line to stderr every second: cumulative rate, last-second rate, counts.
fn print_progress(shared: &Shared) {
    let started = now();
    let mut last_ops = 0;
    let mut next = started + PROGRESS_INTERVAL;
    while !shared.finished.load(Ordering::Acquire) {
        let wait = next.saturating_duration_since(now());
        // Short sleeps, so the printer notices the end of a short run promptly.
        thread::sleep(wait.min(Duration::from_millis(50)));
        if now() < next {
            continue;
        }
        next += PROGRESS_INTERVAL;
        let at = now();
        let ops = shared.ops.load(Ordering::Relaxed);
        let (conflicts, errors) = (
            shared.conflicts.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
        );
        if at < shared.measure_start {
            eprintln!("bench: {:>4.0}s warming up", (at - started).as_secs_f64());
            continue;
        }
        let measured = (at - shared.measure_start).as_secs_f64().max(1e-9);
        eprintln!(
            "bench: {:>4.0}s {:>10.0} ops/s so far ({:.0} in the last second), {ops} ops, {conflicts} conflicts, {errors} errors",
            (at - started).as_secs_f64(),
            ops as f64 / measured,
            (ops - last_ops) as f64 / PROGRESS_INTERVAL.as_secs_f64(),
        );
        last_ops = ops;
    }
}

fn merge<T: Target>(
    target: &T,
    config: &BenchConfig,
    shared: &Shared,
    results: Vec<ClientResult>,
) -> Report {
    let mut latencies = latency_histogram();
    let mut errors = Errors::new();
    let mut conflicts = 0;
    let mut finished = shared.measure_start;
    for result in results {
        latencies
            .add(&result.latencies)
            .expect("every client's histogram has the same bounds");
        report::merge_errors(&mut errors, result.errors);
        conflicts += result.conflicts;
        finished = finished.max(result.finished_at);
    }
    let info = RunInfo {
        target: target.name().to_string(),
        workload: config.workload.name().to_string(),
        clients: config.clients,
        connections: config.connections,
        endpoints: config.endpoints.clone(),
        protocol: config.protocol_name.clone(),
        distribution: config.distribution.name().to_string(),
        key_space: config.key_space,
        value_size: config.value_size,
    };
    let duration_s = (finished - shared.measure_start).as_secs_f64();
    Report::new(info, duration_s, &latencies, conflicts, errors)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::Distribution;
    use super::*;

    /// A target in memory: counts what the workload asks for.
    #[derive(Default)]
    struct Counting {
        calls: Mutex<Calls>,
    }

    #[derive(Default, Debug, Clone)]
    struct Calls {
        puts: u64,
        gets: u64,
        gets_at: u64,
        read_versions: u64,
        txns: u64,
        cas: u64,
        batched: u64,
    }

    struct CountingClient(Arc<Counting>);

    impl BenchClient for CountingClient {
        fn put(&mut self, _: &[u8], _: &[u8]) -> std::result::Result<(), OpError> {
            self.0.calls.lock().unwrap().puts += 1;
            Ok(())
        }
        fn put_batch(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> std::result::Result<(), OpError> {
            self.0.calls.lock().unwrap().batched += pairs.len() as u64;
            Ok(())
        }
        fn get(&mut self, _: &[u8]) -> std::result::Result<(), OpError> {
            self.0.calls.lock().unwrap().gets += 1;
            Ok(())
        }
        fn read_version(&mut self) -> std::result::Result<i64, OpError> {
            self.0.calls.lock().unwrap().read_versions += 1;
            Ok(7)
        }
        fn get_at(&mut self, _: &[u8], version: i64) -> std::result::Result<(), OpError> {
            assert_eq!(version, 7);
            self.0.calls.lock().unwrap().gets_at += 1;
            Ok(())
        }
        fn txn(&mut self, keys: [&[u8]; 2], _: &[u8]) -> std::result::Result<Outcome, OpError> {
            assert_ne!(keys[0], keys[1]);
            let mut calls = self.0.calls.lock().unwrap();
            calls.txns += 1;
            // Every third transaction conflicts.
            Ok(if calls.txns % 3 == 0 {
                Outcome::Conflict
            } else {
                Outcome::Done
            })
        }
        fn cas_increment(&mut self, _: &[u8]) -> std::result::Result<Outcome, OpError> {
            let mut calls = self.0.calls.lock().unwrap();
            calls.cas += 1;
            if calls.cas % 5 == 0 {
                return Err(OpError::new(super::super::ErrorKind::Unavailable, "test"));
            }
            Ok(Outcome::Done)
        }
    }

    struct CountingTarget(Arc<Counting>);

    impl Target for CountingTarget {
        type Connection = ();
        type Client = CountingClient;
        fn name(&self) -> &'static str {
            "counting"
        }
        fn connect(&self, _: &str) -> std::result::Result<(), OpError> {
            Ok(())
        }
        fn client(&self, _: &Arc<()>) -> std::result::Result<CountingClient, OpError> {
            Ok(CountingClient(self.0.clone()))
        }
        fn batch_pairs_max(&self) -> usize {
            100
        }
    }

    fn run_ops(workload: Workload, ops: u64) -> (Report, Calls) {
        let counting = Arc::new(Counting::default());
        let mut config = BenchConfig::new(workload, vec!["memory".into()]);
        config.clients = 4;
        config.connections = 2;
        config.stop = Stop::Ops(ops);
        config.key_space = 1_000;
        let report = run(&CountingTarget(counting.clone()), &config).unwrap();
        let calls = counting.calls.lock().unwrap().clone();
        (report, calls)
    }

    #[test]
    fn ops_mode_runs_exactly_that_many_operations() {
        let (report, calls) = run_ops(Workload::Put, 1_000);
        assert_eq!(report.ops, 1_000);
        assert_eq!(calls.puts, 1_000);
        assert_eq!(calls.batched, 0, "put does not preload");
    }

    #[test]
    fn read_workloads_preload_every_key() {
        let (report, calls) = run_ops(Workload::Get, 500);
        assert_eq!(calls.batched, 1_000);
        assert_eq!((report.ops, calls.gets), (500, 500));
    }

    #[test]
    fn ycsb_mixes_have_their_read_share() {
        for (workload, expected) in [
            (Workload::YcsbA, 0.50),
            (Workload::YcsbB, 0.95),
            (Workload::YcsbC, 1.00),
        ] {
            let (report, calls) = run_ops(workload, 20_000);
            assert_eq!(calls.gets + calls.puts, 20_000);
            assert_eq!(report.ops, 20_000);
            let share = calls.gets as f64 / 20_000.0;
            assert!((share - expected).abs() < 0.015, "{workload:?}: {share}");
        }
    }

    #[test]
    fn conflicts_and_errors_are_counted_apart_from_ops() {
        let (report, calls) = run_ops(Workload::Txn, 300);
        assert_eq!(calls.txns, 300);
        assert_eq!((report.ops, report.conflicts, report.errors), (200, 100, 0));
        let (report, _) = run_ops(Workload::Cas, 100);
        assert_eq!((report.ops, report.errors), (80, 20));
        assert_eq!(
            report.errors_by_kind[&super::super::ErrorKind::Unavailable].count,
            20
        );
    }

    #[test]
    fn snapshot_get_reads_at_a_version_it_took() {
        let (report, calls) = run_ops(Workload::SnapshotGet, 400);
        assert_eq!((report.ops, calls.gets_at), (400, 400));
        // At most one per client: the refresh interval (1 s) is longer than the run, and a
        // client that found no operation left never took one.
        assert!((1..=4).contains(&calls.read_versions), "{calls:?}");
    }

    #[test]
    fn duration_mode_stops_on_time() {
        let counting = Arc::new(Counting::default());
        let mut config = BenchConfig::new(Workload::Put, vec!["memory".into()]);
        config.stop = Stop::After(Duration::from_millis(200));
        config.distribution = Distribution::Zipfian;
        let report = run(&CountingTarget(counting), &config).unwrap();
        assert!(report.ops > 0);
        assert!(
            report.duration_s >= 0.2 && report.duration_s < 2.0,
            "{}",
            report.duration_s
        );
    }

    #[test]
    fn cpu_time_is_read_and_grows() {
        let before = process_cpu_seconds().expect("/proc/self/stat on Linux");
        // Spin until the count moves (a tick is 10 ms of CPU), for at most 5 s of wall time.
        let spin = now();
        let mut after = before;
        while after <= before && spin.elapsed() < Duration::from_secs(5) {
            std::hint::black_box((0..10_000u64).sum::<u64>());
            after = process_cpu_seconds().unwrap();
        }
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let mut config = BenchConfig::new(Workload::Put, vec!["memory".into()]);
        config.clients = 2;
        config.connections = 3;
        assert!(matches!(config.validate(), Err(BenchError::Invalid(_))));
        let mut config = BenchConfig::new(Workload::Txn, vec!["memory".into()]);
        config.key_space = 1;
        assert!(matches!(config.validate(), Err(BenchError::Invalid(_))));
    }
}
