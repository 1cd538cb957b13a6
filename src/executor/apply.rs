//! Applying the commands of one slot. Reads go through three layers, newest first: the
//! command's own staged writes, the slot's overlay (writes of earlier commands in the slot,
//! which are only in the batch), and RocksDB as of before the slot.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use rocksdb::{DBRawIterator, WriteBatch, DB};

use super::blob::{self, BlobRef, UploadId, UploadRecord, CF_BLOBS, CF_UPLOADS, META_UPLOAD_CLOCK};
use super::command::{
    decode_record, encode_record, Compare, CompareTarget, DocumentBody, Event, EventKind, KeyRange,
    KvCommand, Mutation, SessionId, WriteOutcome, WriteRequest,
};
use super::document::{self, DocumentReason, DocumentRefusal, PatchFormat};
use super::error::{Error, Result};
use super::keys::{self, SessionRecord, Versioned, CF_CHANGES, CF_META, CF_SESSIONS};
use super::mutation::{evaluate_compare, little_endian_add, place_versionstamp};
use super::read::{scan_newest, seek_visible, seek_visible_header, ScanEnd};
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

/// A value a command writes: bytes, or a committed upload's chunks.
#[derive(Clone)]
enum Stored {
    Bytes(Vec<u8>),
    /// A committed upload, and whether it is a canonical JSON document.
    Blob(BlobRef, bool),
}

/// One command's writes before they are versioned. A BTreeMap: last write per key wins
/// (as in a FoundationDB transaction) and flush order is key order on every replica.
#[derive(Default)]
struct Staged {
    writes: BTreeMap<Vec<u8>, Option<Stored>>,
    /// Uploads the command's `SetUpload`s commit (each at most once).
    consumed: BTreeSet<UploadId>,
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
    /// Uploads created, extended or dropped earlier in this slot (None: dropped).
    uploads: BTreeMap<UploadId, Option<UploadRecord>>,
    /// Chunks staged earlier in this slot, which only the batch holds, in offset order.
    slot_chunks: BTreeMap<UploadId, Vec<(u64, Vec<u8>)>>,
    /// The upload clock, once this slot has read or moved it.
    upload_clock: Option<u64>,
    /// The patch the command being applied carried, for its change-log event.
    patch: Option<(PatchFormat, Vec<u8>)>,
    /// The command being applied is a document call: the value it writes is canonical JSON.
    document: bool,
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
            uploads: BTreeMap::new(),
            slot_chunks: BTreeMap::new(),
            upload_clock: None,
            patch: None,
            document: false,
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
        self.patch = None;
        self.document = false;
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
                let (current_version, current, canonical) =
                    self.document_at(&key, expected_version)?;
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
                        let value =
                            self.patched(&base, canonical, PatchFormat::JsonPatch, &patch)?;
                        self.patch = Some((PatchFormat::JsonPatch, patch));
                        value
                    }
                };
                self.document = true;
                self.commit(vec![Mutation::Set { key, value }])
            }
            WriteRequest::PatchDocument {
                key,
                format,
                patch,
                expected_version,
            } => {
                let (_, current, canonical) = self.document_at(&key, expected_version)?;
                let Some(base) = current else {
                    let message = format!("key \"{}\" holds no document", key.escape_ascii());
                    return Err(refused(DocumentRefusal::new(
                        DocumentReason::NoDocument,
                        message,
                    )));
                };
                let value = self.patched(&base, canonical, format, &patch)?;
                drop(base);
                self.patch = Some((format, patch));
                self.document = true;
                self.commit(vec![Mutation::Set { key, value }])
            }
            WriteRequest::UploadChunk {
                upload,
                offset,
                data,
                now_ms,
                ttl_ms,
            } => self.upload_chunk(upload, offset, data, now_ms, ttl_ms),
            WriteRequest::AbortUpload { upload } => {
                let existed = self.pending_upload(&upload)?.is_some();
                if existed {
                    self.drop_upload(&upload);
                }
                Ok(WriteOutcome::UploadsDropped {
                    count: u32::from(existed),
                })
            }
            WriteRequest::ReclaimUploads { now_ms } => {
                let count = self.advance_upload_clock(now_ms)?;
                Ok(WriteOutcome::UploadsDropped { count })
            }
        }
    }

    fn upload_chunk(
        &mut self,
        upload: UploadId,
        offset: u64,
        data: Vec<u8>,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Step<WriteOutcome> {
        self.advance_upload_clock(now_ms)?;
        let clock = self.upload_clock()?;
        let id = blob::hex(&upload);
        let staged = match (self.pending_upload(&upload)?, offset) {
            (None, 0) => {
                let pending = self.pending_uploads()?.len();
                if pending >= self.options.uploads_max {
                    return Err(reject(format!(
                        "{pending} uploads are staged, the most uploads_max {} allows: \
                         commit or abort one, or wait for one to expire",
                        self.options.uploads_max
                    )));
                }
                0
            }
            (None, _) => {
                return Err(reject(format!(
                    "upload {id} is not staged (never started, committed, aborted or expired)"
                )))
            }
            (Some(record), _) if record.bytes != offset => {
                return Err(reject(format!(
                    "upload {id} holds {} bytes: the next chunk starts at offset {}, not {offset}",
                    record.bytes, record.bytes
                )))
            }
            (Some(record), _) => record.bytes,
        };
        let bytes = staged + data.len() as u64;
        let value_bytes_max = self.options.value_bytes_max as u64;
        if bytes > value_bytes_max {
            return Err(reject(format!(
                "upload {id} of {bytes} bytes exceeds value_bytes_max {value_bytes_max}"
            )));
        }
        let record = UploadRecord {
            bytes,
            expires_at_ms: clock.saturating_add(ttl_ms),
        };
        self.batch
            .put_cf(cf(self.db, CF_UPLOADS), upload, encode_record(&record));
        if !data.is_empty() {
            let chunk_key = blob::chunk_key(&upload, offset);
            self.batch.put_cf(cf(self.db, CF_BLOBS), chunk_key, &data);
            self.slot_chunks
                .entry(upload)
                .or_default()
                .push((offset, data));
        }
        self.uploads.insert(upload, Some(record));
        Ok(WriteOutcome::Staged {
            upload,
            bytes,
            expires_at_ms: record.expires_at_ms,
        })
    }

    fn upload_clock(&mut self) -> Result<u64> {
        if let Some(clock) = self.upload_clock {
            return Ok(clock);
        }
        let stored = self.db.get_cf(cf(self.db, CF_META), META_UPLOAD_CLOCK)?;
        let clock = match stored {
            Some(bytes) => keys::decode_u64(&bytes, "upload clock")?,
            None => 0,
        };
        self.upload_clock = Some(clock);
        Ok(clock)
    }

    /// Moves the upload clock to `now_ms` if that is later, and drops every upload that
    /// expired before the clock. Returns how many it dropped.
    fn advance_upload_clock(&mut self, now_ms: u64) -> Result<u32> {
        let clock = self.upload_clock()?;
        if now_ms > clock {
            self.upload_clock = Some(now_ms);
            self.batch.put_cf(
                cf(self.db, CF_META),
                META_UPLOAD_CLOCK,
                now_ms.to_be_bytes(),
            );
        }
        let clock = clock.max(now_ms);
        let expired: Vec<UploadId> = self
            .pending_uploads()?
            .into_iter()
            .filter(|(_, record)| record.expires_at_ms < clock)
            .map(|(upload, _)| upload)
            .collect();
        for upload in &expired {
            self.drop_upload(upload);
        }
        Ok(expired.len() as u32)
    }

    /// The staged uploads as of this point in the slot.
    fn pending_uploads(&self) -> Result<BTreeMap<UploadId, UploadRecord>> {
        let mut pending = BTreeMap::new();
        let mut iter = self.db.raw_iterator_cf(cf(self.db, CF_UPLOADS));
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let upload: UploadId = key
                .try_into()
                .map_err(|_| Error::Corrupt("upload id is not 16 bytes".into()))?;
            pending.insert(upload, decode_record(value, "upload record")?);
            iter.next();
        }
        iter.status()?;
        for (upload, record) in &self.uploads {
            match record {
                Some(record) => pending.insert(*upload, *record),
                None => pending.remove(upload),
            };
        }
        Ok(pending)
    }

    fn pending_upload(&self, upload: &UploadId) -> Result<Option<UploadRecord>> {
        if let Some(record) = self.uploads.get(upload) {
            return Ok(*record);
        }
        let stored = self.db.get_cf(cf(self.db, CF_UPLOADS), upload)?;
        stored
            .map(|bytes| decode_record(&bytes, "upload record"))
            .transpose()
    }

    /// Deletes a staged upload's record and chunks.
    fn drop_upload(&mut self, upload: &UploadId) {
        self.forget_upload(upload);
        let (start, end) = blob::chunk_range(upload);
        self.batch
            .delete_range_cf(cf(self.db, CF_BLOBS), start, end);
        self.slot_chunks.remove(upload);
    }

    /// Deletes a staged upload's record only: its chunks now belong to a value.
    fn forget_upload(&mut self, upload: &UploadId) {
        self.batch.delete_cf(cf(self.db, CF_UPLOADS), upload);
        self.uploads.insert(*upload, None);
    }

    /// `versioned` with a blob's bytes read into `value`.
    fn resolved(&self, mut versioned: Versioned) -> Result<Versioned> {
        if let Some(blob) = versioned.blob.take() {
            versioned.value = Some(self.blob_bytes(&blob)?);
        }
        Ok(versioned)
    }

    fn blob_bytes(&self, blob: &BlobRef) -> Result<Vec<u8>> {
        let pending: Vec<(u64, &[u8])> = (self.slot_chunks.get(&blob.upload))
            .into_iter()
            .flatten()
            .map(|(offset, chunk)| (*offset, chunk.as_slice()))
            .collect();
        let mut iter = self.db.raw_iterator_cf(cf(self.db, CF_BLOBS));
        blob::read(&mut iter, blob, 0, blob.bytes, &pending)
    }

    /// The key's mod_version (0: absent) and value, refused unless the version is
    /// `expected_version` (when given).
    fn document_at(
        &mut self,
        key: &[u8],
        expected_version: Option<u64>,
    ) -> Step<(u64, Option<Vec<u8>>, bool)> {
        let newest = self.newest(key)?.map(|v| self.resolved(v)).transpose()?;
        let live = newest.as_ref().and_then(Versioned::live);
        let current_version = live.map_or(0, |live| live.mod_version);
        if let Some(expected) = expected_version.filter(|&e| e != current_version) {
            let refusal = DocumentRefusal::version_mismatch(key, expected, current_version);
            return Err(refused(refusal));
        }
        let canonical = live.is_some_and(|live| live.document);
        // Moved out, not copied: a large document is held once.
        let value = newest.and_then(|newest| newest.value);
        Ok((current_version, value, canonical))
    }

    /// `base` patched, within `value_bytes_max` (`document::apply_patch`: a canonical
    /// document edited by `replace` operations alone is edited in place, without parsing it).
    fn patched(
        &self,
        base: &[u8],
        canonical: bool,
        format: PatchFormat,
        patch: &[u8],
    ) -> Step<Vec<u8>> {
        let value = document::apply_patch(base, canonical, format, patch).map_err(refused)?;
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
            let mut newest = self.newest(&compare.key)?;
            if compare.target == CompareTarget::Value {
                newest = newest.map(|v| self.resolved(v)).transpose()?;
            }
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
        for upload in std::mem::take(&mut staged.consumed) {
            let committed = (staged.writes.values())
                .any(|write| matches!(write, Some(Stored::Blob(b, _)) if b.upload == upload));
            match committed {
                true => self.forget_upload(&upload),
                // Overwritten later in the same command: its bytes belong to nothing.
                false => self.drop_upload(&upload),
            }
        }
        self.flush(staged, version)?;
        self.current_version = version;
        Ok(version)
    }

    fn stage(&mut self, staged: &mut Staged, mutation: Mutation, stamp: &[u8; 10]) -> Step<()> {
        match mutation {
            Mutation::Set { key, value } => {
                staged.writes.insert(key, Some(Stored::Bytes(value)));
            }
            Mutation::SetUpload { key, upload, bytes } => {
                self.stage_upload(staged, key, upload, bytes, false)?
            }
            Mutation::SetUploadDocument { key, upload, bytes } => {
                self.stage_upload(staged, key, upload, bytes, true)?
            }
            Mutation::Clear { key } => {
                staged.writes.insert(key, None);
            }
            Mutation::ClearRange { start, end } => {
                self.stage_clear_range(staged, KeyRange { start, end })?
            }
            Mutation::Add { key, param } => {
                let existing = self.staged_value(staged, &key)?;
                let sum = little_endian_add(existing.as_deref(), &param);
                staged.writes.insert(key, Some(Stored::Bytes(sum)));
            }
            Mutation::Copy { key, from } => {
                let Some(value) = self.staged_value(staged, &from)? else {
                    return Err(reject(format!(
                        "copy from \"{}\", which holds no value",
                        from.escape_ascii()
                    )));
                };
                staged.writes.insert(key, Some(Stored::Bytes(value)));
            }
            Mutation::SetPatched { key, base, patch } => {
                let Some(value) = self.staged_value(staged, &base)? else {
                    return Err(reject(format!(
                        "patch of \"{}\", which holds no value",
                        base.escape_ascii()
                    )));
                };
                // `document::apply_json_patch`, within value_bytes_max.
                let value = self.patched(&value, true, PatchFormat::JsonPatch, &patch)?;
                staged.writes.insert(key, Some(Stored::Bytes(value)));
            }
            Mutation::SetVersionstampedKey { key, value } => {
                let key = place_versionstamp(&key, stamp).map_err(reject)?;
                staged.writes.insert(key, Some(Stored::Bytes(value)));
            }
            Mutation::SetVersionstampedValue { key, value } => {
                let value = place_versionstamp(&value, stamp).map_err(reject)?;
                staged.writes.insert(key, Some(Stored::Bytes(value)));
            }
        }
        Ok(())
    }

    /// `SetUpload` and `SetUploadDocument`: the staged upload becomes `key`'s value.
    fn stage_upload(
        &mut self,
        staged: &mut Staged,
        key: Vec<u8>,
        upload: UploadId,
        bytes: u64,
        document: bool,
    ) -> Step<()> {
        let id = blob::hex(&upload);
        if !staged.consumed.insert(upload) {
            return Err(reject(format!("upload {id} is committed twice")));
        }
        let Some(record) = self.pending_upload(&upload)? else {
            return Err(reject(format!(
                "upload {id} is not staged (never started, committed, aborted or expired)"
            )));
        };
        if record.bytes != bytes {
            return Err(reject(format!(
                "upload {id} holds {} bytes, not {bytes}",
                record.bytes
            )));
        }
        let blob = BlobRef { upload, bytes };
        staged
            .writes
            .insert(key, Some(Stored::Blob(blob, document)));
        Ok(())
    }
    /// The value of `key` after the mutations staged so far in this command.
    fn staged_value(&mut self, staged: &Staged, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(match staged.writes.get(key) {
            Some(Some(Stored::Bytes(value))) => Some(value.clone()),
            Some(Some(Stored::Blob(blob, _))) => Some(self.blob_bytes(blob)?),
            Some(None) => None,
            None => match self.newest(key)? {
                Some(newest) => self.resolved(newest)?.value,
                None => None,
            },
        })
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
            // Only its versions and liveness matter here: its value is not read.
            let before = self.newest_header(&key)?;
            let before_live = before.as_ref().and_then(Versioned::live);
            let create_version = before_live.map_or(version, |live| live.create_version);
            let after = match (write, before_live) {
                (None, None) => continue, // Clearing an absent key changes nothing.
                (None, Some(_)) => Versioned {
                    mod_version: version,
                    create_version: 0,
                    value: None,
                    blob: None,
                    document: false,
                },
                (Some(Stored::Bytes(value)), _) => Versioned {
                    mod_version: version,
                    create_version,
                    value: Some(value),
                    blob: None,
                    document: self.document,
                },
                (Some(Stored::Blob(blob, document)), _) => Versioned {
                    mod_version: version,
                    create_version,
                    value: Some(Vec::new()),
                    blob: Some(blob),
                    document,
                },
            };
            let (encoded, event) = match (&after.value, &after.blob) {
                (_, Some(blob)) => (
                    keys::encode_blob(blob, after.create_version, after.document),
                    (EventKind::PutBlob, Some(blob.encode().to_vec())),
                ),
                (Some(value), None) => (
                    keys::encode_tagged(Some(value), after.create_version, after.document),
                    match self.patch.take() {
                        // A document write writes one key: the patch is that key's. The
                        // event holds only the patch: the reader takes the value from the
                        // data at the event's version, which it keeps as long as the event.
                        Some((format, patch)) => {
                            (EventKind::PutPatched, Some(encode_record(&(format, patch))))
                        }
                        None => (EventKind::PutRef, None),
                    },
                ),
                (None, None) => (
                    keys::encode_value(None, after.create_version),
                    (EventKind::Delete, None),
                ),
            };
            self.batch
                .put_cf(data, keys::data_key(&key, version), encoded);
            events.push(Event {
                kind: event.0,
                key: key.clone(),
                value: event.1,
                version,
                patch: None,
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

    /// `newest` without the value's bytes (`value` is empty when live): a large value is
    /// not copied to learn its versions.
    fn newest_header(&mut self, key: &[u8]) -> Result<Option<Versioned>> {
        if let Some(newest) = self.overlay.get(key) {
            return Ok(Some(newest.header()));
        }
        seek_visible_header(&mut self.iter, key, u64::MAX)
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
