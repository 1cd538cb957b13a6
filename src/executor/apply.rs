//! Applying the commands of one slot. Reads go through three layers, newest first: the
//! command's own staged writes, the slot's overlay (writes of earlier commands in the slot,
//! which are only in the batch), and RocksDB as of before the slot.

use std::collections::BTreeMap;
use std::ops::Bound;

use rocksdb::{DBRawIterator, WriteBatch, DB};

use super::command::{
    decode_record, encode_record, Compare, DocumentBody, Event, EventKind, KeyRange, KvCommand,
    Mutation, SessionId, WriteOutcome, WriteRequest,
};
use super::document::{self, DocumentReason, DocumentRefusal, PatchFormat};
use super::error::{Error, Result};
use super::keys::{self, SessionRecord, Versioned, CF_CHANGES, CF_SESSIONS};
use super::mutation::{evaluate_compare, little_endian_add, place_versionstamp};
use super::read::{scan_newest, seek_visible, ScanEnd};
use super::{cf, data_cf, ExecutorOptions};

/// Why a command stopped early: a deterministic outcome, or a storage failure that must
/// abort the whole slot.
enum Abort {
    Outcome(WriteOutcome),
    Store(Error),
}

impl From<Error> for Abort {
    fn from(error: Error) -> Self {
        Abort::Store(error)
    }
}

type Step<T> = std::result::Result<T, Abort>;

fn rejected(reason: impl Into<String>) -> WriteOutcome {
    WriteOutcome::Rejected {
        reason: reason.into(),
    }
}

fn reject(reason: impl Into<String>) -> Abort {
    Abort::Outcome(rejected(reason))
}

fn refused(refusal: DocumentRefusal) -> Abort {
    Abort::Outcome(WriteOutcome::DocumentRefused(refusal))
}

/// One command's writes before they are versioned. A BTreeMap: last write per key wins
/// (as in a FoundationDB transaction) and flush order is key order on every replica.
#[derive(Default)]
struct Staged {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

pub(super) struct SlotApplier<'a> {
    db: &'a DB,
    options: &'a ExecutorOptions,
    /// The data column family as of before the slot.
    iter: DBRawIterator<'a>,
    batch: WriteBatch,
    /// The newest write of each key written earlier in this slot.
    overlay: BTreeMap<Vec<u8>, Versioned>,
    sessions: BTreeMap<String, SessionRecord>,
    /// User keys the current command scanned, against `command_keys_scanned_max`.
    keys_scanned: usize,
    current_version: u64,
    /// Fixed for the slot: this slot's GC runs after its commands.
    oldest_version: u64,
}

impl<'a> SlotApplier<'a> {
    pub fn new(
        db: &'a DB,
        options: &'a ExecutorOptions,
        current_version: u64,
        oldest_version: u64,
    ) -> Self {
        SlotApplier {
            db,
            options,
            iter: db.raw_iterator_cf(data_cf(db)),
            batch: WriteBatch::default(),
            overlay: BTreeMap::new(),
            sessions: BTreeMap::new(),
            keys_scanned: 0,
            current_version,
            oldest_version,
        }
    }

    /// The batch holding the slot's writes, and the version after the slot.
    pub fn finish(self) -> (WriteBatch, u64) {
        (self.batch, self.current_version)
    }

    /// Err only for storage failures; everything about the command itself is an outcome.
    pub fn apply_command(&mut self, bytes: &[u8]) -> Result<WriteOutcome> {
        let command = match super::command::decode(bytes, self.options.command_bytes_max) {
            Ok(command) => command,
            // Fixed reasons, not the decoder's message, so that replicas running different
            // builds still agree byte for byte.
            Err(Error::CommandTooLarge {
                command_bytes,
                command_bytes_max,
            }) => {
                return Ok(rejected(format!(
                    "command of {command_bytes} bytes exceeds command_bytes_max {command_bytes_max}"
                )))
            }
            Err(_) => return Ok(rejected("malformed command")),
        };
        let KvCommand::Write { session, request } = command;
        self.keys_scanned = 0;
        if let Some(session) = &session {
            if let Some(record) = self.session_record(&session.client_id)? {
                if session.request_id == record.request_id {
                    return Ok(record.outcome);
                }
                if session.request_id < record.request_id {
                    return Ok(rejected("superseded"));
                }
            }
        }
        let outcome = match self.execute(request) {
            Ok(outcome) | Err(Abort::Outcome(outcome)) => outcome,
            Err(Abort::Store(error)) => return Err(error),
        };
        if let Some(session) = session {
            // A moved base wrote nothing: the proposer sends the write again under the
            // same session, which must then apply rather than repeat this outcome.
            if !matches!(outcome, WriteOutcome::BaseMoved { .. }) {
                self.record_session(session, &outcome);
            }
        }
        Ok(outcome)
    }

    fn execute(&mut self, request: WriteRequest) -> Step<WriteOutcome> {
        match request {
            WriteRequest::Put { key, value } => self.commit(vec![Mutation::Set { key, value }]),
            WriteRequest::Delete { key } => self.commit(vec![Mutation::Clear { key }]),
            WriteRequest::DeleteRange { start, end } => {
                self.commit(vec![Mutation::ClearRange { start, end }])
            }
            WriteRequest::Commit {
                read_version,
                mutations,
                read_conflict_ranges,
            } => {
                self.check_read_version(read_version)?;
                self.check_conflicts(read_version, &read_conflict_ranges)?;
                if mutations.is_empty() {
                    // A read-only commit validates its reads and takes no version: its
                    // reads hold at the current version. Its versionstamp is not unique.
                    let version = self.current_version;
                    return Ok(WriteOutcome::Committed {
                        version,
                        versionstamp: keys::versionstamp(version),
                    });
                }
                self.commit(mutations)
            }
            WriteRequest::Txn {
                compares,
                success,
                failure,
            } => {
                let succeeded = self.evaluate_compares(&compares)?;
                let branch = if succeeded { success } else { failure };
                // Only a branch that writes takes a version (etcd: the header revision).
                let version = match branch.is_empty() {
                    true => self.current_version,
                    false => self.write_mutations(branch)?,
                };
                Ok(WriteOutcome::Txn { succeeded, version })
            }
            WriteRequest::PutDocument {
                key,
                body,
                expected_version,
            } => {
                let (current_version, current) = self.document_at(&key, expected_version)?;
                let value = match body {
                    DocumentBody::Full(value) => value,
                    DocumentBody::Delta {
                        base_version,
                        patch,
                    } => {
                        let Some(base) = current.filter(|_| base_version == current_version) else {
                            return Err(Abort::Outcome(WriteOutcome::BaseMoved {
                                current_version,
                            }));
                        };
                        self.patched(&base, PatchFormat::JsonPatch, &patch)?
                    }
                };
                self.commit(vec![Mutation::Set { key, value }])
            }
            WriteRequest::PatchDocument {
                key,
                format,
                patch,
                expected_version,
            } => {
                let (_, current) = self.document_at(&key, expected_version)?;
                let Some(base) = current else {
                    let message = format!("key \"{}\" holds no document", key.escape_ascii());
                    return Err(refused(DocumentRefusal::new(
                        DocumentReason::NoDocument,
                        message,
                    )));
                };
                let value = self.patched(&base, format, &patch)?;
                self.commit(vec![Mutation::Set { key, value }])
            }
        }
    }

    /// The key's mod_version (0: absent) and value, refused unless the version is
    /// `expected_version` (when given).
    fn document_at(
        &mut self,
        key: &[u8],
        expected_version: Option<u64>,
    ) -> Step<(u64, Option<Vec<u8>>)> {
        let newest = self.newest(key)?;
        let live = newest.as_ref().and_then(Versioned::live);
        let current_version = live.map_or(0, |live| live.mod_version);
        if let Some(expected) = expected_version.filter(|&e| e != current_version) {
            let refusal = DocumentRefusal::version_mismatch(key, expected, current_version);
            return Err(refused(refusal));
        }
        let value = live.and_then(|live| live.value.clone());
        Ok((current_version, value))
    }

    /// `base` patched, within `value_bytes_max`.
    fn patched(&self, base: &[u8], format: PatchFormat, patch: &[u8]) -> Step<Vec<u8>> {
        let value = document::apply(base, format, patch).map_err(refused)?;
        let value_bytes_max = self.options.value_bytes_max;
        if value.len() > value_bytes_max {
            let message = format!(
                "the patched document of {} bytes exceeds value_bytes_max {value_bytes_max}",
                value.len()
            );
            return Err(refused(DocumentRefusal::new(
                DocumentReason::TooLarge,
                message,
            )));
        }
        Ok(value)
    }

    fn commit(&mut self, mutations: Vec<Mutation>) -> Step<WriteOutcome> {
        let version = self.write_mutations(mutations)?;
        Ok(WriteOutcome::Committed {
            version,
            versionstamp: keys::versionstamp(version),
        })
    }

    fn check_read_version(&self, read_version: u64) -> Step<()> {
        if read_version < self.oldest_version {
            return Err(Abort::Outcome(WriteOutcome::TooOld {
                read_version,
                oldest_version: self.oldest_version,
            }));
        }
        if read_version > self.current_version {
            return Err(reject(format!(
                "read_version {read_version} is ahead of current version {}",
                self.current_version
            )));
        }
        Ok(())
    }

    /// Conflict if any key in the ranges was written (or cleared) after `read_version`.
    /// Reports the smallest such key of the first conflicting range.
    fn check_conflicts(&mut self, read_version: u64, ranges: &[KeyRange]) -> Step<()> {
        if let Some(range) = ranges.iter().find(|range| range.is_inverted()) {
            return Err(reject(format!("inverted read conflict range {range:?}")));
        }
        if read_version >= self.current_version {
            return Ok(()); // Nothing newer exists.
        }
        for range in ranges {
            let in_overlay = overlay_range(&self.overlay, range)
                .find(|(_, newest)| newest.mod_version > read_version)
                .map(|(key, _)| key.clone());
            let mut in_db = None;
            let keys_scanned_max = self.options.command_keys_scanned_max;
            let end = scan_newest(
                &mut self.iter,
                range,
                &mut self.keys_scanned,
                keys_scanned_max,
                |key, newest| {
                    let conflict = newest.mod_version > read_version;
                    if conflict {
                        in_db = Some(key.to_vec());
                    }
                    !conflict
                },
            )?;
            if end == ScanEnd::BudgetExhausted {
                return Err(budget_exhausted(keys_scanned_max));
            }
            let conflict = match (in_overlay, in_db) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(key) = conflict {
                return Err(Abort::Outcome(WriteOutcome::Conflict { key }));
            }
        }
        Ok(())
    }

    /// Evaluates every compare (so a malformed one rejects the Txn whatever the others
    /// say) and returns whether all hold.
    fn evaluate_compares(&mut self, compares: &[Compare]) -> Step<bool> {
        let mut all_hold = true;
        for compare in compares {
            let newest = self.newest(&compare.key)?;
            all_hold &= evaluate_compare(compare, newest.as_ref()).map_err(reject)?;
        }
        Ok(all_hold)
    }

    /// Stages the mutations, versions them with the next version and returns it.
    fn write_mutations(&mut self, mutations: Vec<Mutation>) -> Step<u64> {
        let version = self
            .current_version
            .checked_add(1)
            .expect("version overflow");
        let stamp = keys::versionstamp(version);
        let mut staged = Staged::default();
        for mutation in mutations {
            self.stage(&mut staged, mutation, &stamp)?;
        }
        self.flush(staged, version)?;
        self.current_version = version;
        Ok(version)
    }

    fn stage(&mut self, staged: &mut Staged, mutation: Mutation, stamp: &[u8; 10]) -> Step<()> {
        match mutation {
            Mutation::Set { key, value } => {
                staged.writes.insert(key, Some(value));
            }
            Mutation::Clear { key } => {
                staged.writes.insert(key, None);
            }
            Mutation::ClearRange { start, end } => {
                self.stage_clear_range(staged, KeyRange { start, end })?
            }
            Mutation::Add { key, param } => {
                let existing = match staged.writes.get(&key) {
                    Some(write) => write.clone(),
                    None => self.newest(&key)?.and_then(|newest| newest.value),
                };
                let sum = little_endian_add(existing.as_deref(), &param);
                staged.writes.insert(key, Some(sum));
            }
            Mutation::SetVersionstampedKey { key, value } => {
                let key = place_versionstamp(&key, stamp).map_err(reject)?;
                staged.writes.insert(key, Some(value));
            }
            Mutation::SetVersionstampedValue { key, value } => {
                let value = place_versionstamp(&value, stamp).map_err(reject)?;
                staged.writes.insert(key, Some(value));
            }
        }
        Ok(())
    }

    /// Stages a clear of every key that may be live in the range: keys in RocksDB, in the
    /// overlay, and staged by this command. Clears of absent keys vanish in `flush`.
    fn stage_clear_range(&mut self, staged: &mut Staged, range: KeyRange) -> Step<()> {
        if range.is_inverted() {
            return Err(reject(format!("inverted clear range {range:?}")));
        }
        let mut keys = Vec::new();
        let keys_scanned_max = self.options.command_keys_scanned_max;
        let end = scan_newest(
            &mut self.iter,
            &range,
            &mut self.keys_scanned,
            keys_scanned_max,
            |key, newest| {
                if newest.value.is_some() {
                    keys.push(key.to_vec());
                }
                true
            },
        )?;
        if end == ScanEnd::BudgetExhausted {
            return Err(budget_exhausted(keys_scanned_max));
        }
        keys.extend(overlay_range(&self.overlay, &range).map(|(key, _)| key.clone()));
        for key in keys {
            staged.writes.insert(key, None);
        }
        if let Some(bounds) = bounds(&range) {
            for (_, write) in staged.writes.range_mut::<Vec<u8>, _>(bounds) {
                *write = None;
            }
        }
        Ok(())
    }

    /// Versions the staged writes: data entries, the change-log entry, the overlay.
    fn flush(&mut self, staged: Staged, version: u64) -> Result<()> {
        let data = data_cf(self.db);
        let mut events = Vec::new();
        for (key, write) in staged.writes {
            let before = self.newest(&key)?;
            let before_live = before.as_ref().and_then(Versioned::live);
            let after = match (write, before_live) {
                (None, None) => continue, // Clearing an absent key changes nothing.
                (None, Some(_)) => Versioned {
                    mod_version: version,
                    create_version: 0,
                    value: None,
                },
                (Some(value), live) => Versioned {
                    mod_version: version,
                    create_version: live.map_or(version, |live| live.create_version),
                    value: Some(value),
                },
            };
            let encoded = keys::encode_value(after.value.as_deref(), after.create_version);
            self.batch
                .put_cf(data, keys::data_key(&key, version), encoded);
            events.push(Event {
                kind: if after.value.is_some() {
                    EventKind::Put
                } else {
                    EventKind::Delete
                },
                key: key.clone(),
                value: after.value.clone(),
                version,
            });
            self.overlay.insert(key, after);
        }
        if !events.is_empty() {
            let changes = cf(self.db, CF_CHANGES);
            self.batch
                .put_cf(changes, keys::version_key(version), encode_record(&events));
        }
        Ok(())
    }

    /// The newest state of `key` including earlier commands of this slot; a tombstone is
    /// returned as such (its mod_version matters to conflict checks).
    fn newest(&mut self, key: &[u8]) -> Result<Option<Versioned>> {
        if let Some(newest) = self.overlay.get(key) {
            return Ok(Some(newest.clone()));
        }
        seek_visible(&mut self.iter, key, u64::MAX)
    }

    fn session_record(&self, client_id: &str) -> Result<Option<SessionRecord>> {
        if let Some(record) = self.sessions.get(client_id) {
            return Ok(Some(record.clone()));
        }
        let stored = self
            .db
            .get_cf(cf(self.db, CF_SESSIONS), client_id.as_bytes())?;
        stored
            .map(|bytes| decode_record(&bytes, "session record"))
            .transpose()
    }

    fn record_session(&mut self, session: SessionId, outcome: &WriteOutcome) {
        let record = SessionRecord {
            request_id: session.request_id,
            outcome: outcome.clone(),
        };
        let sessions = cf(self.db, CF_SESSIONS);
        self.batch.put_cf(
            sessions,
            session.client_id.as_bytes(),
            encode_record(&record),
        );
        self.sessions.insert(session.client_id, record);
    }
}

fn budget_exhausted(keys_scanned_max: usize) -> Abort {
    reject(format!(
        "command scans more than command_keys_scanned_max {keys_scanned_max} keys"
    ))
}

type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// `range` as BTreeMap bounds; None when it is empty, because BTreeMap::range panics on
/// some empty bounds.
fn bounds(range: &KeyRange) -> Option<KeyBounds> {
    if range.end.is_empty() {
        return Some((Bound::Included(range.start.clone()), Bound::Unbounded));
    }
    (range.start < range.end).then(|| {
        (
            Bound::Included(range.start.clone()),
            Bound::Excluded(range.end.clone()),
        )
    })
}

fn overlay_range<'o>(
    overlay: &'o BTreeMap<Vec<u8>, Versioned>,
    range: &KeyRange,
) -> impl Iterator<Item = (&'o Vec<u8>, &'o Versioned)> {
    bounds(range)
        .into_iter()
        .flat_map(move |bounds| overlay.range::<Vec<u8>, _>(bounds))
}
