//! The driver's half of snapshots: taking them off the consensus thread, compacting the log
//! and WAL below them, and fetching and installing a peer's when the leader has compacted
//! slots this replica still needs.
//!
//! - Taking: every `interval_slots` applied slots or `interval_wal_bytes` of WAL (or on
//!   request), a job thread checkpoints the state machine and packs the checkpoint into a
//!   snapshot file. The driver thread goes on with heartbeats, proposals and applies
//!   meanwhile; when the job reports, the core compacts up to the snapshot's slot, and once
//!   the next Ready's `Record::Compacted` is durable the WAL segments before it are removed.
//! - Fetching: a Ready's `snapshot_wanted` names a peer that has compacted what this replica
//!   lacks. A tokio task fetches that peer's newest snapshot (resuming a partial one),
//!   verifies and unpacks it; the driver installs it in the machine and then in the core,
//!   between Readies, and replays the log tail from there.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use super::{Driver, DriverError, Input, InstallInterrupted, Reply, StateMachine};
use crate::consensus::{Slot, SnapshotWanted};
use crate::snapshot::{file, stream, Catalog, SharedCatalog, SnapshotError, SnapshotInfo};

/// How many times in a row a fetch may fail without receiving a byte before the driver
/// gives up on it (the core asks again when a peer next reports its compaction).
const FETCH_ATTEMPTS_WITHOUT_PROGRESS: u32 = 5;
const FETCH_BACKOFF_MIN_MS: u64 = 100;
const FETCH_BACKOFF_MAX_MS: u64 = 2_000;

/// What the driver tracks of its snapshots.
pub(super) struct Snapshots {
    pub(super) catalog: Option<SharedCatalog>,
    /// A job thread is taking one.
    taking: bool,
    /// Forced snapshots waiting for one that covers their slot.
    waiting: Vec<(Slot, Reply<SnapshotInfo>)>,
    /// The slot of the newest snapshot taken or installed.
    last_slot: Slot,
    /// WAL bytes appended when it was taken.
    wal_bytes_at_last: u64,
    /// After a failure, no new job before this tick.
    retry_at: u64,
    /// A fetch is running for a snapshot at or after this slot.
    fetching: Option<Slot>,
    /// Set when an install failed half way: the driver stops.
    pub(super) fatal: Option<String>,
}

impl Snapshots {
    pub(super) fn new(catalog: Option<Catalog>) -> Snapshots {
        let last_slot = catalog
            .as_ref()
            .and_then(|catalog| catalog.latest().map(|info| info.slot))
            .unwrap_or(0);
        Snapshots {
            catalog: catalog.map(Catalog::shared),
            taking: false,
            waiting: Vec::new(),
            last_slot,
            wal_bytes_at_last: 0,
            retry_at: 0,
            fetching: None,
            fatal: None,
        }
    }

    pub(super) fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }

    /// The WAL bytes appended so far count from here (after the restatement that follows
    /// a compaction, which must not count towards the next snapshot).
    pub(super) fn wal_bytes_counted_from(&mut self, appended_bytes: u64) {
        self.wal_bytes_at_last = appended_bytes;
    }

    pub(super) fn take_waiting(&mut self) -> Vec<(Slot, Reply<SnapshotInfo>)> {
        std::mem::take(&mut self.waiting)
    }

    /// The newest file's slot, 0 if none: read after every round of Readies.
    pub(super) fn latest_slot(&self) -> Slot {
        let Some(catalog) = &self.catalog else {
            return 0;
        };
        let catalog = catalog.lock().expect("catalog lock");
        catalog.latest().map_or(0, |info| info.slot)
    }

    pub(super) fn latest(&self) -> Option<SnapshotInfo> {
        let catalog = self.catalog.as_ref()?.lock().expect("catalog lock");
        catalog.latest().cloned()
    }
}

/// The result of a job or a fetch, as it reaches the driver.
pub(super) type Taken = Result<SnapshotInfo, String>;
pub(super) type Fetched = Result<(SnapshotInfo, PathBuf), String>;

impl<M: StateMachine> Driver<M> {
    /// After every round of Readies: start a snapshot if one is due.
    pub(super) fn maybe_start_snapshot(&mut self) {
        let options = &self.options.snapshot;
        let snapshots = &self.snapshots;
        if snapshots.catalog.is_none() || snapshots.taking || self.ticks < snapshots.retry_at {
            return;
        }
        let applied = self.machine.applied_slot();
        if applied <= snapshots.last_slot {
            return;
        }
        let slots = applied - snapshots.last_slot;
        let wal_bytes = self.store.appended_bytes() - snapshots.wal_bytes_at_last;
        // A replica whose log is compacted past its newest file (it crashed right after an
        // install) could not send what it compacted: take one now.
        let uncovered = snapshots.last_slot < self.replica.compacted();
        let due = uncovered
            || (options.interval_slots > 0 && slots >= options.interval_slots)
            || (options.interval_wal_bytes > 0 && wal_bytes >= options.interval_wal_bytes)
            || !snapshots.waiting.is_empty();
        if due {
            self.start_snapshot();
        }
    }

    fn start_snapshot(&mut self) {
        let Some(catalog) = self.snapshots.catalog.clone() else {
            return;
        };
        let Some(checkpointer) = self.machine.checkpointer() else {
            self.snapshots.catalog = None;
            return;
        };
        let (checkpoint, dir) = {
            let catalog = catalog.lock().expect("catalog lock");
            (catalog.checkpoint_dir(), catalog.dir().to_path_buf())
        };
        let inputs = self.inputs.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("paxkv-snapshot-{}", self.id))
            .spawn(move || {
                let started = super::metrics_now();
                let taken = (|| -> Result<SnapshotInfo, String> {
                    if checkpoint.exists() {
                        fs::remove_dir_all(&checkpoint).map_err(|e| e.to_string())?;
                    }
                    let (slot, version) = checkpointer(&checkpoint).map_err(|e| e.to_string())?;
                    let out = dir.join(format!("snap-{slot:020}.pxs"));
                    let info = file::pack(&checkpoint, slot, version, &out);
                    let _ = fs::remove_dir_all(&checkpoint);
                    info.map_err(|e| e.to_string())
                })();
                let elapsed = started.elapsed();
                let _ = inputs.send(Input::SnapshotTaken { taken, elapsed });
            });
        match spawned {
            Ok(_) => self.snapshots.taking = true,
            Err(error) => self.on_snapshot_taken(Err(error.to_string()), Duration::ZERO),
        }
    }

    pub(super) fn on_snapshot_taken(&mut self, taken: Taken, elapsed: Duration) {
        self.snapshots.taking = false;
        let metrics = &self.options.metrics;
        let info = match taken {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(replica = self.id, %error, "taking a snapshot failed");
                metrics.snapshot_failures.inc();
                let retry = self.options.snapshot.retry_ms;
                self.snapshots.retry_at = self.deadline(retry);
                for (_, reply) in std::mem::take(&mut self.snapshots.waiting) {
                    let message = format!("taking the snapshot failed: {error}");
                    let _ = reply.send(Err(DriverError::Rejected(message)));
                }
                return;
            }
        };
        metrics.snapshots.inc();
        metrics.snapshot_duration.observe(elapsed.as_secs_f64());
        tracing::info!(
            replica = self.id,
            slot = info.slot,
            bytes = info.bytes,
            seconds = elapsed.as_secs_f64(),
            "snapshot taken"
        );
        self.add_to_catalog(info.clone());
        // The job's checkpoint holds only applied slots, so the core has applied them too.
        self.replica
            .compact(self.compact_upto(info.slot).min(self.replica.applied()));
        self.answer_snapshot_requests(&info);
    }

    /// Answers the forced snapshots that `info` covers.
    fn answer_snapshot_requests(&mut self, info: &SnapshotInfo) {
        let (covered, waiting) = std::mem::take(&mut self.snapshots.waiting)
            .into_iter()
            .partition(|(min_slot, _)| *min_slot <= info.slot);
        self.snapshots.waiting = waiting;
        for (_, reply) in covered {
            let _ = reply.send(Ok(info.clone()));
        }
    }

    /// Below a snapshot at `slot`, the log keeps the last `retain_slots` slots, and no more
    /// than `retain_bytes` of commands, for followers a little behind.
    fn compact_upto(&self, slot: Slot) -> Slot {
        let options = &self.options.snapshot;
        let lowest = slot.saturating_sub(options.retain_slots);
        let mut bytes = 0u64;
        for kept in (lowest + 1..=slot).rev() {
            let entry = self.replica.entry(kept);
            let commands = entry.map_or(&[][..], |entry| entry.value.commands());
            bytes += commands
                .iter()
                .map(|command| command.len() as u64)
                .sum::<u64>();
            if bytes > options.retain_bytes {
                return kept;
            }
        }
        lowest
    }

    fn add_to_catalog(&mut self, info: SnapshotInfo) {
        self.snapshots.last_slot = self.snapshots.last_slot.max(info.slot);
        self.snapshots.wal_bytes_at_last = self.store.appended_bytes();
        let Some(catalog) = &self.snapshots.catalog else {
            return;
        };
        let mut catalog = catalog.lock().expect("catalog lock");
        catalog.insert(info);
        if let Err(error) = catalog.retain_newest(self.options.snapshot.keep) {
            tracing::warn!(replica = self.id, %error, "removing old snapshots");
        }
    }

    /// A snapshot of every slot up to `min_slot` at least (a read index), for
    /// `ReplicaHandle::snapshot`: the newest if it covers what is applied, else a new one.
    pub(super) fn on_snapshot_request(&mut self, min_slot: Slot, reply: Reply<SnapshotInfo>) {
        if self.snapshots.catalog.is_none() {
            let message = "this replica takes no snapshots".to_string();
            let _ = reply.send(Err(DriverError::Rejected(message)));
            return;
        }
        if let Some(latest) = self.snapshots.latest() {
            if latest.slot >= min_slot.max(self.machine.applied_slot()) {
                let _ = reply.send(Ok(latest));
                return;
            }
        }
        self.snapshots.waiting.push((min_slot, reply));
        self.snapshots.retry_at = 0;
        if !self.snapshots.taking {
            self.start_snapshot();
        }
    }

    /// A Ready said a peer compacted slots this replica lacks: fetch its snapshot.
    pub(super) fn on_snapshot_wanted(&mut self, wanted: SnapshotWanted) {
        let Some(catalog) = self.snapshots.catalog.clone() else {
            tracing::warn!(
                replica = self.id,
                "a snapshot is needed but this replica takes none"
            );
            return;
        };
        // One fetch at a time: it takes the peer's newest snapshot, and if that is still
        // not enough the core asks again after the install.
        if self.snapshots.fetching.is_some() {
            return;
        }
        let Some(address) = self.transport.address(wanted.from) else {
            return;
        };
        let Some(staging) = self.machine.staging_dir() else {
            return;
        };
        self.snapshots.fetching = Some(wanted.upto);
        tracing::info!(
            replica = self.id,
            from = wanted.from,
            upto = wanted.upto,
            "fetching a snapshot"
        );
        let me = self.id;
        let options = self.options.snapshot.stream.clone();
        let frame_bytes_max = self.options.transport.peer_frame_bytes_max;
        let metrics = self.options.metrics.clone();
        let inputs = self.inputs.clone();
        let mut shutdown = self.shutdown.clone();
        let fetch = async move {
            let mut failures = 0;
            let mut backoff_ms = FETCH_BACKOFF_MIN_MS;
            let fetched = loop {
                let before = metrics.snapshot_received_bytes.get();
                let attempt = stream::fetch(
                    address,
                    me,
                    wanted.upto,
                    &catalog,
                    &options,
                    frame_bytes_max,
                    &metrics,
                );
                match attempt.await {
                    Ok(info) => break Ok(info),
                    Err(error) => {
                        // A file that fails verification is no progress: the sender's copy
                        // may be bad, and fetching it again would not end.
                        let corrupt = matches!(
                            error,
                            stream::FetchError::Snapshot(SnapshotError::Corrupt(_))
                        );
                        let received = metrics.snapshot_received_bytes.get() > before;
                        let progressed = received && !corrupt;
                        failures = if progressed { 1 } else { failures + 1 };
                        tracing::info!(replica = me, %error, "snapshot fetch interrupted");
                        if failures >= FETCH_ATTEMPTS_WITHOUT_PROGRESS {
                            break Err(error.to_string());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(FETCH_BACKOFF_MAX_MS);
            };
            let fetched: Fetched = match fetched {
                Err(error) => Err(error),
                Ok(info) => tokio::task::spawn_blocking(move || {
                    if staging.exists() {
                        fs::remove_dir_all(&staging).map_err(|e| e.to_string())?;
                    }
                    file::unpack(&info.path, &staging).map_err(|e| e.to_string())?;
                    Ok((info, staging))
                })
                .await
                .unwrap_or_else(|error| Err(error.to_string())),
            };
            // Blocks only while the driver's queue is full; the driver drains it.
            let _ = tokio::task::spawn_blocking(move || {
                inputs.send(Input::SnapshotFetched { fetched })
            })
            .await;
        };
        self.runtime.spawn(async move {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {}
                _ = fetch => {}
            }
        });
    }

    /// Installs a fetched snapshot: in the machine (atomically), then in the core. Called
    /// between Readies, as the core requires.
    pub(super) fn on_snapshot_fetched(&mut self, fetched: Fetched) {
        self.snapshots.fetching = None;
        let metrics = self.options.metrics.clone();
        let (info, staged) = match fetched {
            Ok(fetched) => fetched,
            Err(error) => {
                tracing::warn!(replica = self.id, %error, "fetching a snapshot failed");
                metrics.snapshot_failures.inc();
                return;
            }
        };
        if info.slot <= self.machine.applied_slot() {
            let _ = fs::remove_dir_all(&staged);
            let _ = fs::remove_file(&info.path);
            return;
        }
        let slot = match self.machine.install_checkpoint(&staged) {
            Ok(slot) => slot,
            Err(error) if error.is::<InstallInterrupted>() => {
                metrics.snapshot_failures.inc();
                self.snapshots.fatal = Some(error.to_string());
                return;
            }
            Err(error) => {
                tracing::warn!(replica = self.id, %error, "installing a snapshot failed");
                metrics.snapshot_failures.inc();
                let _ = fs::remove_dir_all(&staged);
                // Fetched again from scratch next time, not resumed into the same failure.
                let _ = fs::remove_file(&info.path);
                return;
            }
        };
        let membership = match self.machine.membership() {
            Ok(membership) => membership,
            Err(error) => {
                // The new state is installed but unreadable: stop, as for a failed apply.
                self.snapshots.fatal = Some(format!("reading the installed membership: {error}"));
                return;
            }
        };
        self.replica.install_snapshot_with(slot, membership);
        self.restart_digests(slot);
        let kept = if slot == info.slot {
            metrics.snapshot_installs.inc();
            tracing::info!(replica = self.id, slot, "snapshot installed");
            // Keep the file: this replica can send it on.
            self.snapshots.catalog.as_ref().and_then(|catalog| {
                let path = catalog.lock().expect("catalog lock").path_for(info.slot);
                fs::rename(&info.path, &path).ok()?;
                crate::snapshot::sync_dir(path.parent()?).ok()?;
                Some(SnapshotInfo {
                    path,
                    ..info.clone()
                })
            })
        } else {
            // The machine holds the checkpoint now; the file that named another slot goes.
            let file_slot = info.slot;
            tracing::warn!(
                replica = self.id,
                slot,
                file_slot,
                "snapshot file names another slot"
            );
            metrics.snapshot_failures.inc();
            None
        };
        match kept {
            Some(kept) => {
                self.add_to_catalog(kept.clone());
                self.answer_snapshot_requests(&kept);
            }
            None => {
                let _ = fs::remove_file(&info.path);
                self.snapshots.last_slot = slot;
            }
        }
        self.answer_reads_applied(slot);
    }
}
