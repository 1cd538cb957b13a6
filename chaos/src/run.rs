//! One chaos run, start to end:
//!
//! 1. start the cluster and wait for a leader;
//! 2. write the bank's starting balances;
//! 3. start the client threads; the nemesis injects faults until the last few seconds,
//!    then heals the cluster, and the clients run on until the deadline;
//! 4. after the writers stop: a final set read and bank read, and the watchers drain up to
//!    a read version every acknowledged write lies at or below;
//! 5. save the history, check it, and save the report.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use paxkv::api::TPaxkvSyncClient;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::cluster::{Cluster, InjectedBug, Setup, Timing};
use crate::error::{ChaosError, Result};
use crate::history::{Call, Clock, History, Recorder, Reply};
use crate::nemesis::{self, FaultKind, NemesisLog, Schedule};
use crate::report::{Report, RunInfo};
use crate::workload::{self, CallError, Clients, ConfigConnection, Connection, Shared, WatchStart};

/// How long the cluster may take to elect a leader, at start and after healing.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the setup and final calls are retried.
const FINAL_CALLS_TIMEOUT: Duration = Duration::from_secs(30);
/// The quiet tail at the end of the run with no faults: at most this long.
const TAIL_MAX: Duration = Duration::from_secs(5);
/// Extra time the watchers get after the deadline to reach the final version.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Process ids for the runner's own calls, above any client thread's.
const RUNNER_PROCESS_BASE: u64 = 1 << 40;
/// Added to the server's request timeout to time out a client's call.
const CALL_TIMEOUT_MARGIN: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub time: Duration,
    /// 3 or 5.
    pub replicas: usize,
    pub nemesis: Vec<FaultKind>,
    pub seed: u64,
    pub binary: PathBuf,
    pub out: PathBuf,
    pub clients: Clients,
    pub ops_per_client_max: u64,
    pub timing: Timing,
    pub search_steps_max: u64,
    /// Known bugs switched on in every replica (none for a real check of paxkv).
    pub bugs: Vec<InjectedBug>,
}

pub fn run(options: &RunOptions) -> Result<Report> {
    let dir = options.out.join("cluster");
    std::fs::create_dir_all(&dir).map_err(|source| ChaosError::File {
        path: dir.clone(),
        source,
    })?;
    let setup = Setup {
        replicas: options.replicas,
        timing: options.timing.clone(),
        bugs: options.bugs.clone(),
        // The proxies' frame faults get their own stream of the run's seed.
        seed: crate::proxy::derive_seed(options.seed, u64::from(u32::MAX)),
    };
    let mut cluster = Cluster::start_with(&options.binary, &dir, &setup, READY_TIMEOUT)?;
    let recorder = Recorder::new(Clock::start());
    let call_timeout =
        Duration::from_millis(options.timing.request_timeout_ms) + CALL_TIMEOUT_MARGIN;
    let token = match options.clients.publish {
        0 => None,
        _ => Some(cluster.root_token()?),
    };
    let mut runner = Runner {
        endpoints: Connection::new(cluster.endpoints(), 0, call_timeout),
        config: (token.clone())
            .map(|token| ConfigConnection::new(&cluster.endpoints(), 0, call_timeout, token)),
        recorder: recorder.clone(),
        process: RUNNER_PROCESS_BASE,
    };
    let init = workload::bank_init_call();
    runner.call_until_ok(&init, workload::bank_init)?;
    runner.config_call_until_ok(&Call::PublishInit, workload::publish_init)?;
    let driven = drive(
        options,
        &mut cluster,
        &recorder,
        call_timeout,
        &mut runner,
        token,
    );
    // Saved even when the run failed part way, so what happened can be checked.
    let history = recorder.history();
    history.save(&options.out.join("history.json"))?;
    let mut log = driven?;
    // Every replica compared state digests with its peers throughout; a difference shows
    // in its gauges even where no client read the state it made wrong.
    log.divergence = cluster.divergence();
    let info = RunInfo {
        seed: options.seed,
        time_s: recorder.clock().elapsed().as_secs_f64(),
        nemesis: options
            .nemesis
            .iter()
            .map(|k| k.name().to_string())
            .collect(),
        out_dir: options.out.display().to_string(),
        injected_bugs: options.bugs.iter().map(|b| b.name().to_string()).collect(),
        replicas: options.replicas,
    };
    let report = Report::new(&history, options.search_steps_max, Some(info), log)?;
    report.save(&options.out.join("report.json"))?;
    Ok(report)
}

/// Steps 3 and 4: clients and nemesis, then the final reads and the watchers' drain.
fn drive(
    options: &RunOptions,
    cluster: &mut Cluster,
    recorder: &Recorder,
    call_timeout: Duration,
    runner: &mut Runner,
    config_token: Option<String>,
) -> Result<NemesisLog> {
    let clock = recorder.clock();
    let start = clock.elapsed();
    let shared = Shared {
        endpoints: cluster.endpoints(),
        config_token,
        recorder: recorder.clone(),
        call_timeout,
        deadline: start + options.time,
        stop: Arc::new(AtomicBool::new(false)),
        ops_per_client_max: options.ops_per_client_max,
    };
    let watch_shared = Shared {
        deadline: shared.deadline + DRAIN_TIMEOUT,
        stop: Arc::new(AtomicBool::new(false)),
        ..shared.clone()
    };
    let drain_to = Arc::new(AtomicI64::new(i64::MAX));
    // Watcher 0 streams from the first version; the others join a third into the run.
    let watch_starts = [
        WatchStart::Version(1),
        WatchStart::LatestAt(start + options.time / 3),
    ];
    let running = workload::start(
        &shared,
        &watch_shared,
        &options.clients,
        options.seed,
        &watch_starts,
        &drain_to,
    );
    let tail = TAIL_MAX.min(options.time / 4);
    let mut rng = StdRng::seed_from_u64(options.seed);
    let schedule = Schedule::for_election_timeout(options.timing.election_timeout_max());
    let until = start + options.time - tail;
    let nemesis = nemesis::run(cluster, &options.nemesis, &schedule, &mut rng, clock, until);
    if nemesis.is_err() {
        shared.stop.store(true, Ordering::SeqCst);
    }
    for writer in running.writers {
        writer.join().expect("a writer thread panicked");
    }
    let finished = nemesis.and_then(|log| finish(cluster, runner).map(|drain| (log, drain)));
    // On an error the watchers stop at once (every version is past i64::MIN).
    let drain = finished.as_ref().map_or(i64::MIN, |(_, drain)| *drain);
    drain_to.store(drain, Ordering::SeqCst);
    watch_shared.stop.store(true, Ordering::SeqCst);
    for watcher in running.watchers {
        watcher.join().expect("a watcher thread panicked");
    }
    finished.map(|(log, _)| log)
}

/// Step 4 once the writers stopped: a leader, the final set, documents and bank reads, and the
/// version the watchers must pass (every acknowledged write lies at or below it).
fn finish(cluster: &mut Cluster, runner: &mut Runner) -> Result<i64> {
    cluster.wait_for_leader(READY_TIMEOUT)?;
    runner.call_until_ok(&Call::SetRead, |client| {
        Ok(Reply::Elements {
            elements: workload::read_set(client)?,
        })
    })?;
    runner.call_until_ok(&Call::DocRead, |client| {
        Ok(Reply::Elements {
            elements: workload::read_documents(client)?,
        })
    })?;
    runner.config_call_until_ok(&Call::PublishRead, workload::read_published)?;
    let final_read = Call::BankRead {
        at_read_version: true,
    };
    runner.call_until_ok(&final_read, |client| workload::bank_read(client, true))?;
    runner.read_version()
}

/// The runner's own calls (setup and final reads), recorded like a client's, retried on
/// the next replica until one succeeds.
struct Runner {
    endpoints: Connection,
    /// For the publish workload's setup and final read; None when it does not run.
    config: Option<ConfigConnection>,
    recorder: Recorder,
    process: u64,
}

impl Runner {
    fn call_until_ok(
        &mut self,
        call: &Call,
        mut execute: impl FnMut(&mut paxkv::api::Client) -> std::result::Result<Reply, CallError>,
    ) -> Result<Reply> {
        let clock = Clock::start();
        let mut last = String::from("no attempt");
        while clock.elapsed() < FINAL_CALLS_TIMEOUT {
            let Some(client) = self.endpoints.client() else {
                continue;
            };
            self.recorder.invoke(self.process, call);
            let failure = match execute(client) {
                Ok(reply) => {
                    self.recorder.ok(self.process, call, reply.clone());
                    return Ok(reply);
                }
                Err(error) => workload::failure_of(error),
            };
            if failure.definite {
                self.recorder
                    .fail(self.process, call, failure.message.clone());
            } else {
                self.recorder
                    .info(self.process, call, failure.message.clone());
                self.process += 1;
            }
            last = failure.message;
            self.endpoints.rotate();
            thread::sleep(failure.pause.unwrap_or(Duration::from_millis(100)));
        }
        Err(ChaosError::Setup(format!("{call:?}: {last}")))
    }

    /// As `call_until_ok`, on the configuration service (nothing, without the publish
    /// workload).
    fn config_call_until_ok(
        &mut self,
        call: &Call,
        mut execute: impl FnMut(&mut ConfigConnection) -> std::result::Result<Reply, CallError>,
    ) -> Result<()> {
        let Some(mut config) = self.config.take() else {
            return Ok(());
        };
        let done = self.call_until_ok(call, |_| execute(&mut config));
        self.config = Some(config);
        done.map(drop)
    }

    /// A linearizable read version (not part of the history: it changes nothing).
    fn read_version(&mut self) -> Result<i64> {
        let clock = Clock::start();
        let mut last = String::from("no attempt");
        while clock.elapsed() < FINAL_CALLS_TIMEOUT {
            let Some(client) = self.endpoints.client() else {
                continue;
            };
            match client.get_read_version() {
                Ok(version) => return Ok(version),
                Err(error) => last = crate::client::describe(&error),
            }
            self.endpoints.rotate();
            thread::sleep(Duration::from_millis(100));
        }
        Err(ChaosError::Setup(format!("get_read_version: {last}")))
    }
}

/// Checks a saved history alone, as `paxkv-chaos check --history FILE` does.
pub fn check_file(path: &std::path::Path, search_steps_max: u64) -> Result<Report> {
    let history = History::load(path)?;
    Report::new(&history, search_steps_max, None, NemesisLog::default())
}
