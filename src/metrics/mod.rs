//! Metrics of one node, in the Prometheus text format.
//!
//! Every node has its own [`Registry`]: `paxkv dev` runs three nodes in one process, so a
//! process-wide default registry would mix them up. Every series also carries the constant
//! label `replica` (the node's id), so series stay apart wherever they end up.
//!
//! The consensus core records nothing (it has no clock and does no I/O). What is measured
//! is measured around it: the driver times the WAL and the state machine and follows the
//! core's status; the router counts conflicts and watches; the Thrift handler and server
//! count requests and connections; the HTTP endpoint ([`http`]) reads RocksDB's sizes at
//! scrape time; a sampler ([`peers`]) asks the other replicas how far they have applied and
//! whether a quorum answers.
//!
//! Names follow Prometheus conventions: the `paxkv_` prefix, the unit last (`_seconds`,
//! `_bytes`, `_slots`, `_commands`), `_total` on counters. docs/operations.md lists them.
//!
//! Each group of metrics (`ReplicaMetrics`, `ApiMetrics`, ...) is a set of cheap clones of
//! registered handles; a component built without a node gets an unregistered group
//! (`unregistered()`) that records into nothing anyone reads.

#[cfg(feature = "chaos")]
pub mod failpoints;
pub mod http;
pub mod peers;

use std::fmt;

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::consensus::NodeId;
use crate::executor::KvReader;

/// Shortest latency bucket, and how many doublings above it: 50 µs .. ~3.3 s.
const LATENCY_BUCKET_MIN_SECONDS: f64 = 0.000_05;
const LATENCY_BUCKETS: usize = 17;
/// Commands-per-slot buckets: 1, 2, 4, .. 8192.
const SLOT_COMMANDS_BUCKETS: usize = 14;

/// The RocksDB properties sampled at scrape time (summed over the column families).
pub const ROCKSDB_LIVE_DATA: &str = "rocksdb.estimate-live-data-size";
pub const ROCKSDB_SST_FILES: &str = "rocksdb.total-sst-files-size";
pub const ROCKSDB_PENDING_COMPACTION: &str = "rocksdb.estimate-pending-compaction-bytes";

/// All metrics of one node, and the registry they are gathered from.
pub struct Metrics {
    registry: Registry,
    pub replica: ReplicaMetrics,
    pub api: ApiMetrics,
    pub router: RouterMetrics,
    pub peers: PeerMetrics,
    pub config: ConfigMetrics,
    storage: StorageMetrics,
}

impl Metrics {
    /// A fresh registry whose series all carry `replica="<id>"`.
    pub fn new(replica: NodeId) -> Metrics {
        let labels = [("replica".to_string(), replica.to_string())].into();
        let registry = Registry::new_custom(None, Some(labels)).expect("a valid const label");
        Metrics {
            replica: ReplicaMetrics::new(&registry),
            api: ApiMetrics::new(&registry),
            router: RouterMetrics::new(&registry),
            peers: PeerMetrics::new(&registry),
            config: ConfigMetrics::new(&registry),
            storage: StorageMetrics::new(&registry),
            registry,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Reads RocksDB's size estimates into their gauges. A property that cannot be read
    /// leaves its gauge at the last value read.
    pub fn sample_storage(&self, reader: &KvReader) {
        let gauges = [
            (ROCKSDB_LIVE_DATA, &self.storage.live_data_bytes),
            (ROCKSDB_SST_FILES, &self.storage.sst_files_bytes),
            (
                ROCKSDB_PENDING_COMPACTION,
                &self.storage.pending_compaction_bytes,
            ),
        ];
        for (property, gauge) in gauges {
            match reader.property_sum(property) {
                Ok(bytes) => gauge.set(saturating_i64(bytes)),
                Err(error) => tracing::debug!(property, %error, "reading a RocksDB property"),
            }
        }
    }

    /// Every series of the registry in the text exposition format.
    pub fn encode(&self) -> String {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

/// What the replica driver records.
#[derive(Clone)]
pub struct ReplicaMetrics {
    /// Commands this replica's clients proposed (through this replica, to whichever leads).
    pub proposals: IntCounter,
    /// Client commands applied to the state machine here (every replica applies them all).
    pub commits: IntCounter,
    /// From a client's proposal to its outcome, on the replica that took it.
    pub commit_duration: Histogram,
    /// Commands in each applied slot that holds commands (no-op slots are not counted).
    pub slot_commands: Histogram,
    /// Applying one slot to the state machine.
    pub apply_duration: Histogram,
    /// Appending one Ready's records to the WAL (no fsync).
    pub wal_append_duration: Histogram,
    /// One WAL fsync (fdatasync), covering every record appended since the last one.
    pub wal_fsync_duration: Histogram,
    pub leader_changes: IntCounter,
    pub ballot_round: IntGauge,
    pub leader_id: IntGauge,
    pub is_leader: IntGauge,
    pub commit_index: IntGauge,
    pub applied_slot: IntGauge,
    /// The slot of this replica's newest snapshot file.
    pub snapshot_slot: IntGauge,
    /// The slot below which this replica's log (and WAL) is compacted.
    pub compacted_slot: IntGauge,
    /// Snapshots taken here, and how long each took (checkpoint and packing).
    pub snapshots: IntCounter,
    pub snapshot_duration: Histogram,
    /// Snapshots that failed to be taken, fetched or installed.
    pub snapshot_failures: IntCounter,
    /// Snapshots fetched from a peer and installed.
    pub snapshot_installs: IntCounter,
    /// Snapshot bytes this replica sent to peers, and received from them.
    pub snapshot_sent_bytes: IntCounter,
    pub snapshot_received_bytes: IntCounter,
    /// Voters and learners of the membership this replica knows committed.
    pub membership_voters: IntGauge,
    pub membership_learners: IntGauge,
    /// Consensus messages dropped because their sender is a member at another incarnation
    /// (a replica that lost its disk, or an impostor).
    pub refused_messages: IntCounter,
    /// 1 once this replica found its applied state differs from a majority's (it stopped).
    pub divergence_detected: IntGauge,
    /// Peers this replica found differing from a majority, and the first slot at which a
    /// difference was seen (0: none).
    pub divergent_peers: IntGauge,
    pub divergence_first_slot: IntGauge,
    /// Slots whose digest this replica compared with a peer's.
    pub digest_comparisons: IntCounter,
}

impl ReplicaMetrics {
    fn new(registry: &Registry) -> ReplicaMetrics {
        ReplicaMetrics {
            proposals: counter(
                registry,
                "paxkv_proposals_total",
                "Commands proposed by this replica's clients",
            ),
            commits: counter(
                registry,
                "paxkv_commits_total",
                "Client commands applied to this replica's state machine",
            ),
            commit_duration: histogram(
                registry,
                "paxkv_commit_duration_seconds",
                "From a client's proposal to its applied outcome, on the replica the client called",
                latency_buckets(),
            ),
            slot_commands: histogram(
                registry,
                "paxkv_slot_commands",
                "Commands per applied slot (batch size; no-op slots excluded)",
                exponential_buckets(1.0, 2.0, SLOT_COMMANDS_BUCKETS).expect("valid buckets"),
            ),
            apply_duration: histogram(
                registry,
                "paxkv_apply_duration_seconds",
                "Applying one slot to the RocksDB state machine",
                latency_buckets(),
            ),
            wal_append_duration: histogram(
                registry,
                "paxkv_wal_append_duration_seconds",
                "Appending one batch of consensus records to the WAL, before fsync",
                latency_buckets(),
            ),
            wal_fsync_duration: histogram(
                registry,
                "paxkv_wal_fsync_duration_seconds",
                "One WAL fsync (fdatasync), covering everything appended since the last",
                latency_buckets(),
            ),
            leader_changes: counter(
                registry,
                "paxkv_leader_changes_total",
                "Times this replica saw a new leader or a new ballot of its leader",
            ),
            ballot_round: gauge(
                registry,
                "paxkv_ballot_round",
                "Round of the highest ballot this replica has promised",
            ),
            leader_id: gauge(
                registry,
                "paxkv_leader_id",
                "The replica this one believes leads; 0 when it knows none",
            ),
            is_leader: gauge(registry, "paxkv_is_leader", "1 while this replica leads"),
            commit_index: gauge(
                registry,
                "paxkv_commit_index",
                "Highest slot this replica knows is chosen, with all before it",
            ),
            applied_slot: gauge(
                registry,
                "paxkv_applied_slot",
                "Highest slot applied to this replica's state machine",
            ),
            snapshot_slot: gauge(
                registry,
                "paxkv_snapshot_slot",
                "Slot of this replica's newest snapshot file; 0 before the first",
            ),
            compacted_slot: gauge(
                registry,
                "paxkv_compacted_slot",
                "Slot up to which this replica's log and WAL are compacted",
            ),
            snapshots: counter(
                registry,
                "paxkv_snapshots_total",
                "Snapshots this replica took",
            ),
            snapshot_duration: histogram(
                registry,
                "paxkv_snapshot_duration_seconds",
                "Taking one snapshot: checkpoint, pack and fsync, off the consensus thread",
                exponential_buckets(0.01, 2.0, 14).expect("valid buckets"),
            ),
            snapshot_failures: counter(
                registry,
                "paxkv_snapshot_failures_total",
                "Snapshots that failed to be taken, fetched or installed here",
            ),
            snapshot_installs: counter(
                registry,
                "paxkv_snapshot_installs_total",
                "Snapshots fetched from a peer and installed here",
            ),
            snapshot_sent_bytes: counter(
                registry,
                "paxkv_snapshot_sent_bytes_total",
                "Snapshot file bytes this replica sent to peers",
            ),
            snapshot_received_bytes: counter(
                registry,
                "paxkv_snapshot_received_bytes_total",
                "Snapshot file bytes this replica received from peers",
            ),
            membership_voters: gauge(
                registry,
                "paxkv_membership_voters",
                "Voters of the membership this replica knows committed",
            ),
            membership_learners: gauge(
                registry,
                "paxkv_membership_learners",
                "Learners (non-voting members) of the membership this replica knows committed",
            ),
            refused_messages: counter(
                registry,
                "paxkv_consensus_messages_refused_total",
                "Consensus messages dropped: their sender is a member at another incarnation",
            ),
            divergence_detected: gauge(
                registry,
                "paxkv_divergence_detected",
                "1 if this replica's applied state differs from a majority of replicas' (it stopped)",
            ),
            divergent_peers: gauge(
                registry,
                "paxkv_divergent_peers",
                "Peers whose applied state differs from a majority's, as this replica compared",
            ),
            divergence_first_slot: gauge(
                registry,
                "paxkv_divergence_first_slot",
                "The first log slot at which a difference of applied state was seen; 0 if none",
            ),
            digest_comparisons: counter(
                registry,
                "paxkv_digest_comparisons_total",
                "Applied slots whose state digest this replica compared with a peer's",
            ),
        }
    }

    /// Registered nowhere: for a driver run without a node (tests, tools).
    pub fn unregistered() -> ReplicaMetrics {
        ReplicaMetrics::new(&Registry::new())
    }
}

impl fmt::Debug for ReplicaMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaMetrics").finish_non_exhaustive()
    }
}

/// What the Thrift handler and server record.
#[derive(Clone)]
pub struct ApiMetrics {
    /// By `method` (the IDL's name) and `outcome`: `ok`, or the exception's name in snake
    /// case (`unavailable`, `conflict`, ...), or `error` for a failure that is none of them.
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub connections_open: IntGauge,
}

impl ApiMetrics {
    fn new(registry: &Registry) -> ApiMetrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "paxkv_thrift_requests_total",
                "Thrift calls answered, by method and outcome",
            ),
            &["method", "outcome"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "paxkv_thrift_request_duration_seconds",
                "Time spent in the handler per Thrift call, by method",
            )
            .buckets(latency_buckets()),
            &["method"],
        )
        .expect("valid metric");
        ApiMetrics {
            requests: register(registry, requests),
            request_duration: register(registry, request_duration),
            connections_open: gauge(
                registry,
                "paxkv_connections_open",
                "Open Thrift client connections",
            ),
        }
    }

    pub fn unregistered() -> ApiMetrics {
        ApiMetrics::new(&Registry::new())
    }
}

/// What the configuration service records.
#[derive(Clone)]
pub struct ConfigMetrics {
    /// Audit events committed, by `action` (`change.publish`, `grant.add`, ...) and
    /// `outcome` (`ok`, or `denied` for a call refused for a missing permission).
    pub events: IntCounterVec,
    /// Calls whose optimistic transaction conflicted with another and ran again.
    pub conflicts: IntCounter,
    /// Bytes the service's commits put into the log, by `form`: `whole` (values and
    /// records) or `patch` (entry edits carried as RFC 6902 patches of their base).
    pub log_bytes: IntCounterVec,
    /// Entries per published change set.
    pub publish_entries: Histogram,
    /// `authenticate` calls, by `outcome`: `ok` or `refused`.
    pub authentications: IntCounterVec,
}

impl ConfigMetrics {
    fn new(registry: &Registry) -> ConfigMetrics {
        ConfigMetrics {
            events: counter_vec(
                registry,
                "paxkv_config_events_total",
                "Configuration-service audit events committed, by action and outcome",
                &["action", "outcome"],
            ),
            conflicts: counter(
                registry,
                "paxkv_config_conflicts_total",
                "Configuration-service calls run again after a transaction conflict",
            ),
            log_bytes: counter_vec(
                registry,
                "paxkv_config_log_bytes_total",
                "Bytes configuration-service commits put into the log, whole or as patches",
                &["form"],
            ),
            publish_entries: histogram(
                registry,
                "paxkv_config_publish_entries",
                "Entries per published change set",
                (0..14).map(|i| f64::from(1u32 << i)).collect(),
            ),
            authentications: counter_vec(
                registry,
                "paxkv_config_authentications_total",
                "Configuration-service authenticate calls, by outcome",
                &["outcome"],
            ),
        }
        .with_series()
    }

    pub fn unregistered() -> ConfigMetrics {
        ConfigMetrics::new(&Registry::new())
    }

    /// The change-set actions, so that their series exist (at 0) from the start.
    pub const CHANGE_ACTIONS: [&'static str; 9] = [
        "change.create",
        "change.edit",
        "change.submit",
        "change.approve",
        "change.reject",
        "change.abandon",
        "change.rebase",
        "change.publish",
        "change.emergency_publish",
    ];

    fn with_series(self) -> ConfigMetrics {
        for action in ConfigMetrics::CHANGE_ACTIONS {
            self.events.with_label_values(&[action, "ok"]);
        }
        for form in ["whole", "patch"] {
            self.log_bytes.with_label_values(&[form]);
        }
        for outcome in ["ok", "refused"] {
            self.authentications.with_label_values(&[outcome]);
        }
        self
    }
}

/// What the router records.
#[derive(Clone)]
pub struct RouterMetrics {
    /// Commits (FoundationDB style) refused because a read conflict range was written.
    pub txn_conflicts: IntCounter,
    pub watches_open: IntGauge,
    /// Bytes of the commands this replica's clients proposed, encoded, before compression.
    pub command_bytes: IntCounter,
    /// The same commands' bytes as the log and the peer links carry them.
    pub command_logged_bytes: IntCounter,
    /// Commands that went into the log zstd-compressed.
    pub commands_compressed: IntCounter,
    /// Document writes by how the log carried them: `full`, `delta` (a patch from the
    /// previous version) or `patch` (the client's own).
    pub document_writes: IntCounterVec,
    /// Delta writes sent again because another write moved their base first.
    pub document_base_moved: IntCounter,
    /// Sessions this replica created for writes that came without one (`router::sessions`).
    pub internal_sessions: IntGauge,
    /// Document uploads this replica wrote again in canonical form before committing them.
    pub document_uploads_restaged: IntCounter,
    /// Bytes staged by this replica's clients' upload chunks.
    pub upload_chunk_bytes: IntCounter,
    /// Uploads this replica's clients committed to keys.
    pub uploads_committed: IntCounter,
    /// Expired uploads this replica reclaimed while it led.
    pub uploads_reclaimed: IntCounter,
    /// Uploads staged in the store, and their bytes (as of this replica's applied state).
    pub uploads_staged: IntGauge,
    pub upload_staged_bytes: IntGauge,
}

impl RouterMetrics {
    fn new(registry: &Registry) -> RouterMetrics {
        RouterMetrics {
            txn_conflicts: counter(
                registry,
                "paxkv_txn_conflicts_total",
                "Commits of this replica's clients that failed with a conflict",
            ),
            watches_open: gauge(
                registry,
                "paxkv_watches_open",
                "Watch long polls waiting on this replica",
            ),
            command_bytes: counter(
                registry,
                "paxkv_command_bytes_total",
                "Bytes of the commands this replica's clients proposed, before compression",
            ),
            command_logged_bytes: counter(
                registry,
                "paxkv_command_logged_bytes_total",
                "Bytes of the same commands as the log and peer links carry them",
            ),
            commands_compressed: counter(
                registry,
                "paxkv_commands_compressed_total",
                "Commands proposed zstd-compressed (at least limits.compress_command_bytes_min)",
            ),
            document_writes: counter_vec(
                registry,
                "paxkv_document_writes_total",
                "Document writes of this replica's clients, by how the log carried them",
                &["form"],
            ),
            document_base_moved: counter(
                registry,
                "paxkv_document_base_moved_total",
                "Document deltas sent again because a concurrent write moved their base",
            ),
            internal_sessions: gauge(
                registry,
                "paxkv_internal_sessions",
                "Sessions this replica process created for writes sent without one",
            ),
            document_uploads_restaged: counter(
                registry,
                "paxkv_document_uploads_restaged_total",
                "Document uploads staged again in canonical form before their commit",
            ),
            upload_chunk_bytes: counter(
                registry,
                "paxkv_upload_chunk_bytes_total",
                "Bytes of upload chunks this replica's clients staged",
            ),
            uploads_committed: counter(
                registry,
                "paxkv_uploads_committed_total",
                "Uploads this replica's clients committed as values",
            ),
            uploads_reclaimed: counter(
                registry,
                "paxkv_uploads_reclaimed_total",
                "Expired uploads reclaimed by this replica's proposals while it led",
            ),
            uploads_staged: gauge(
                registry,
                "paxkv_uploads_staged",
                "Uploads staged and not yet committed, aborted or reclaimed",
            ),
            upload_staged_bytes: gauge(
                registry,
                "paxkv_upload_staged_bytes",
                "Bytes of the uploads staged and not yet committed, aborted or reclaimed",
            ),
        }
    }

    pub fn unregistered() -> RouterMetrics {
        RouterMetrics::new(&Registry::new())
    }
}

/// Why an inbound peer connection was refused: `cluster` (it named another cluster) or
/// `member` (it named no member, or opened with something else).
#[derive(Clone)]
pub struct RefusedConnections(pub IntCounterVec);

impl RefusedConnections {
    pub const REASONS: [&'static str; 2] = ["cluster", "member"];

    pub fn unregistered() -> RefusedConnections {
        let opts = Opts::new(
            "paxkv_peer_connections_refused_total",
            "Inbound peer connections refused, by reason",
        );
        RefusedConnections(IntCounterVec::new(opts, &["reason"]).expect("valid metric"))
    }

    pub fn count(&self, reason: &str) {
        self.0.with_label_values(&[reason]).inc();
    }

    pub fn get(&self, reason: &str) -> u64 {
        self.0.with_label_values(&[reason]).get()
    }
}

impl std::fmt::Debug for RefusedConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusedConnections")
    }
}

/// What the peer sampler records, by `peer` (its id).
#[derive(Clone)]
pub struct PeerMetrics {
    /// This replica's commit index minus the slot the peer last reported applied. Absent
    /// while the peer does not answer.
    pub lag_slots: IntGaugeVec,
    /// 1 if the peer answered the last status request, 0 if not.
    pub up: IntGaugeVec,
    /// 1 if the last round of status requests found this replica ready (as `/ready`).
    pub ready: IntGauge,
    /// Inbound peer connections refused: from another cluster, or from no member.
    pub refused: RefusedConnections,
}

impl PeerMetrics {
    fn new(registry: &Registry) -> PeerMetrics {
        let lag_slots = IntGaugeVec::new(
            Opts::new(
                "paxkv_peer_lag_slots",
                "This replica's commit index minus the peer's applied slot, sampled every second",
            ),
            &["peer"],
        )
        .expect("valid metric");
        let up = IntGaugeVec::new(
            Opts::new(
                "paxkv_peer_up",
                "1 if the peer answered the last status request",
            ),
            &["peer"],
        )
        .expect("valid metric");
        let refused = RefusedConnections::unregistered();
        // Both series from the start, so a rate over them is 0 rather than absent.
        for reason in RefusedConnections::REASONS {
            refused.0.with_label_values(&[reason]);
        }
        PeerMetrics {
            refused: RefusedConnections(register(registry, refused.0)),
            lag_slots: register(registry, lag_slots),
            up: register(registry, up),
            ready: gauge(
                registry,
                "paxkv_ready",
                "1 if this replica was ready (as /ready) at the last peer sample, every second",
            ),
        }
    }
}

struct StorageMetrics {
    live_data_bytes: IntGauge,
    sst_files_bytes: IntGauge,
    pending_compaction_bytes: IntGauge,
}

impl StorageMetrics {
    fn new(registry: &Registry) -> StorageMetrics {
        StorageMetrics {
            live_data_bytes: gauge(registry, "paxkv_rocksdb_live_data_bytes",
                "RocksDB's estimate of live data (rocksdb.estimate-live-data-size)"),
            sst_files_bytes: gauge(registry, "paxkv_rocksdb_sst_files_bytes",
                "Bytes in RocksDB's SST files (rocksdb.total-sst-files-size)"),
            pending_compaction_bytes: gauge(registry, "paxkv_rocksdb_pending_compaction_bytes",
                "Bytes RocksDB estimates compaction must rewrite (rocksdb.estimate-pending-compaction-bytes)"),
        }
    }
}

/// Holds a gauge one higher for as long as it lives (an open connection, a waiting watch).
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn latency_buckets() -> Vec<f64> {
    exponential_buckets(LATENCY_BUCKET_MIN_SECONDS, 2.0, LATENCY_BUCKETS).expect("valid buckets")
}

/// Registers a collector, returning the handle to record with. Names are fixed in this
/// module, so a duplicate is a programming error.
fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique within a registry");
    collector
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(registry, vec)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(registry, Histogram::with_opts(opts).expect("valid metric"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_carries_the_replica_label_and_a_paxkv_name() {
        let metrics = Metrics::new(7);
        metrics.replica.commits.inc_by(3);
        metrics.api.requests.with_label_values(&["put", "ok"]).inc();
        let text = metrics.encode();
        assert!(
            text.contains("paxkv_commits_total{replica=\"7\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"paxkv_thrift_requests_total{method="put",outcome="ok",replica="7"} 1"#
            ),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("paxkv_"), "{line}");
            assert!(line.contains("replica=\"7\""), "{line}");
        }
    }

    #[test]
    fn nodes_in_one_process_keep_separate_registries() {
        let (one, two) = (Metrics::new(1), Metrics::new(2));
        one.replica.proposals.inc();
        assert!(one
            .encode()
            .contains("paxkv_proposals_total{replica=\"1\"} 1"));
        assert!(two
            .encode()
            .contains("paxkv_proposals_total{replica=\"2\"} 0"));
    }

    #[test]
    fn a_gauge_guard_counts_while_it_lives() {
        let metrics = Metrics::new(1);
        let gauge = &metrics.router.watches_open;
        let first = GaugeGuard::new(gauge);
        let second = GaugeGuard::new(gauge);
        assert_eq!(gauge.get(), 2);
        drop(first);
        assert_eq!(gauge.get(), 1);
        drop(second);
        assert_eq!(gauge.get(), 0);
    }
}
