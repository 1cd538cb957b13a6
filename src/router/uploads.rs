//! Large values in pieces: uploads staged chunk by chunk (each chunk its own command and
//! slot), committed to keys by one small transaction, and read back by byte ranges. See
//! `executor::blob` for how they are stored and why each is exactly once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{unexpected, PrimaryRouter, Result, RouterError};
use crate::executor::blob::{self, UploadId};
use crate::executor::document;
use crate::executor::{Compare, CompareOp, CompareTarget, Mutation, SessionId, ValueRange};
use crate::executor::{WriteOutcome, WriteRequest};

/// Where an upload stands after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStaged {
    pub upload: UploadId,
    pub bytes: u64,
    /// Milliseconds since the epoch after which the upload is reclaimed, unless another
    /// chunk comes first.
    pub expires_at_ms: u64,
}

/// One staged upload to commit as the value of `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadCommit {
    pub key: Vec<u8>,
    pub upload: UploadId,
    /// The upload's size, as its last chunk reported it.
    pub bytes: u64,
    /// Commit only if the key's mod_version is this (0: only if absent).
    pub expected_version: Option<u64>,
    /// The upload is a JSON document, to be stored canonical (`Mutation::SetUploadDocument`).
    pub document: bool,
}

/// How often the reclaimer looks for expired uploads (and samples the staged-upload
/// gauges), at most.
const RECLAIM_INTERVAL_MAX: Duration = Duration::from_secs(5);
const RECLAIM_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// The proposer's wall clock, which the log then carries: upload expiry is the one thing
/// a replica's clock decides, and it decides it where the command is proposed.
#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH);
    elapsed.map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A new upload's id: 16 bytes from the operating system's random source, chosen by the
/// replica that takes the first chunk and carried in the log.
fn new_upload_id() -> Result<UploadId> {
    let mut upload = [0; blob::UPLOAD_ID_BYTES];
    getrandom::getrandom(&mut upload)
        .map_err(|e| RouterError::Internal(format!("no random upload id: {e}")))?;
    Ok(upload)
}

impl PrimaryRouter {
    /// Stages `data` at `offset` of an upload; `upload` None starts one (offset 0).
    pub async fn upload_chunk(
        &self,
        upload: Option<UploadId>,
        offset: u64,
        data: Vec<u8>,
        session: Option<SessionId>,
    ) -> Result<UploadStaged> {
        let limits = &self.limits;
        if data.len() > limits.chunk_bytes_max {
            return Err(RouterError::LimitExceeded {
                limit: "chunk_bytes_max",
                actual: data.len() as u64,
                maximum: limits.chunk_bytes_max as u64,
            });
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > limits.value_bytes_max as u64 {
            return Err(RouterError::LimitExceeded {
                limit: "value_bytes_max",
                actual: end,
                maximum: limits.value_bytes_max as u64,
            });
        }
        let upload = match upload {
            // Ids are the replicas' to choose, so no client can start an upload under an
            // id it knows (one it aborted, say): staged bytes are only ever appended to.
            Some(_) if offset == 0 => {
                return Err(RouterError::InvalidArgument(
                    "offset 0 starts a new upload: send it without an upload id".into(),
                ))
            }
            Some(upload) => upload,
            None if offset == 0 => new_upload_id()?,
            None => {
                return Err(RouterError::InvalidArgument(
                    "a new upload starts at offset 0".into(),
                ))
            }
        };
        let bytes = data.len() as u64;
        let request = WriteRequest::UploadChunk {
            upload,
            offset,
            data,
            now_ms: now_ms(),
            ttl_ms: limits.upload_ttl_ms,
        };
        match self.write(session, request).await? {
            WriteOutcome::Staged {
                upload,
                bytes: staged,
                expires_at_ms,
            } => {
                self.metrics.upload_chunk_bytes.inc_by(bytes);
                Ok(UploadStaged {
                    upload,
                    bytes: staged,
                    expires_at_ms,
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Commits every upload to its key, with `mutations` besides, in one transaction:
    /// all or nothing. Returns false (nothing written, the uploads still staged) when an
    /// expected version does not hold; else true and the commit version.
    pub async fn commit_uploads(
        &self,
        uploads: Vec<UploadCommit>,
        mutations: Vec<Mutation>,
        session: Option<SessionId>,
    ) -> Result<(bool, u64)> {
        if uploads.is_empty() {
            return Err(RouterError::InvalidArgument(
                "commitUploads names no upload".into(),
            ));
        }
        let mut uploads = uploads;
        // (original, its canonical copy) for each document upload staged again.
        let mut restaged = Vec::new();
        for commit in uploads.iter_mut().filter(|commit| commit.document) {
            match self.canonical_upload(commit).await {
                Ok(Some(original)) => restaged.push((original, commit.upload)),
                Ok(None) => {}
                Err(error) => {
                    self.drop_copies(&restaged).await;
                    return Err(error);
                }
            }
        }
        let compares: Vec<Compare> = (uploads.iter())
            .filter_map(|commit| {
                commit.expected_version.map(|version| Compare {
                    key: commit.key.clone(),
                    target: CompareTarget::ModVersion,
                    op: CompareOp::Equal,
                    value: None,
                    version: Some(version),
                    exists: None,
                })
            })
            .collect();
        let mut success: Vec<Mutation> = (uploads.into_iter())
            .map(|commit| match commit.document {
                false => Mutation::SetUpload {
                    key: commit.key,
                    upload: commit.upload,
                    bytes: commit.bytes,
                },
                true => Mutation::SetUploadDocument {
                    key: commit.key,
                    upload: commit.upload,
                    bytes: commit.bytes,
                },
            })
            .collect();
        let committed = success.len() as u64;
        let documents = (success.iter())
            .filter(|m| matches!(m, Mutation::SetUploadDocument { .. }))
            .count() as u64;
        success.extend(mutations);
        let result = self.txn(compares, success, Vec::new(), session).await;
        // A copy not committed (a compare failed, the call failed, or a session's retry got
        // the first call's answer) holds nothing anyone needs; a committed one is no longer
        // staged, and its abort does nothing.
        self.drop_copies(&restaged).await;
        let result = result?;
        if result.0 {
            self.metrics.uploads_committed.inc_by(committed);
            (self.metrics.document_writes.with_label_values(&["upload"])).inc_by(documents);
            // The originals written again in canonical form are not needed either.
            for (original, _) in &restaged {
                let _ = self.abort_upload(*original, None).await;
            }
        }
        Ok(result)
    }

    /// Aborts the canonical copies `canonical_upload` staged (best effort: one left behind
    /// is reclaimed after `upload_ttl_ms`).
    async fn drop_copies(&self, restaged: &[(UploadId, UploadId)]) {
        for (_, copy) in restaged {
            let _ = self.abort_upload(*copy, None).await;
        }
    }

    /// Makes `commit` name a canonical JSON upload: reads the upload as this replica holds
    /// it once every write acknowledged before is applied here, and validates it. If it is
    /// not canonical, stages its canonical form as a new upload, which `commit` then names,
    /// and returns the original. An upload that is not staged (perhaps committed by this
    /// very call, whose reply was lost) is left for the executor: a session's retry gets
    /// the first answer, anything else is rejected there.
    async fn canonical_upload(&self, commit: &mut UploadCommit) -> Result<Option<UploadId>> {
        self.version_for_read(None).await?;
        let staged = self.reader.staged_upload(&commit.upload);
        let Some(bytes) = staged.map_err(|e| self.executor_error(e))? else {
            return Ok(None);
        };
        if bytes.len() as u64 != commit.bytes {
            return Err(RouterError::InvalidArgument(format!(
                "upload {} holds {} bytes here, not {}",
                blob::hex(&commit.upload),
                bytes.len(),
                commit.bytes
            )));
        }
        let new = document::NewDocument::parse(&bytes, self.limits.document_tree_bytes_max)
            .map_err(RouterError::InvalidJson)?;
        if new.canonical == bytes {
            return Ok(None);
        }
        drop(bytes);
        self.limits.check_value(&new.canonical)?;
        let original = commit.upload;
        let mut upload = None;
        let mut offset = 0;
        for piece in new.canonical.chunks(self.limits.chunk_bytes_max) {
            match self
                .upload_chunk(upload, offset, piece.to_vec(), None)
                .await
            {
                Ok(staged) => {
                    upload = Some(staged.upload);
                    offset = staged.bytes;
                }
                Err(error) => {
                    // The part staged holds nothing anyone needs.
                    if let Some(partial) = upload {
                        let _ = self.abort_upload(partial, None).await;
                    }
                    return Err(error);
                }
            }
        }
        commit.upload = upload.expect("a JSON document is never empty");
        commit.bytes = offset;
        self.metrics.document_uploads_restaged.inc();
        Ok(Some(original))
    }

    /// Drops a staged upload; false if there was none (already committed, aborted or
    /// expired).
    pub async fn abort_upload(&self, upload: UploadId, session: Option<SessionId>) -> Result<bool> {
        match self
            .write(session, WriteRequest::AbortUpload { upload })
            .await?
        {
            WriteOutcome::UploadsDropped { count } => Ok(count > 0),
            other => Err(unexpected(other)),
        }
    }

    /// `length` bytes (at most `chunk_bytes_max`) of `key`'s value from `offset`, and the
    /// version read at: linearizable, or at `read_version`. Read the rest of a value at
    /// the returned version to get one consistent value.
    pub async fn get_value_range(
        &self,
        key: &[u8],
        offset: u64,
        length: u64,
        read_version: Option<u64>,
    ) -> Result<(Option<ValueRange>, u64)> {
        self.limits.check_key(key)?;
        let length = length.min(self.limits.chunk_bytes_max as u64);
        let version = self.version_for_read(read_version).await?;
        let range = self.reader.get_value_range(key, version, offset, length);
        Ok((range.map_err(|e| self.executor_error(e))?, version))
    }

    /// Runs until the replica stops: while this replica leads, proposes `ReclaimUploads`
    /// whenever a staged upload has expired, so abandoned uploads go even when no other
    /// upload comes to move the upload clock.
    pub async fn reclaim_uploads(self) {
        let interval = Duration::from_millis(self.limits.upload_ttl_ms / 4)
            .clamp(RECLAIM_INTERVAL_MIN, RECLAIM_INTERVAL_MAX);
        loop {
            tokio::time::sleep(interval).await;
            if let Ok(staged) = self.reader.uploads() {
                self.metrics.uploads_staged.set(staged.count as i64);
                self.metrics.upload_staged_bytes.set(staged.bytes as i64);
                let now = now_ms();
                let expired = staged.first_expiry_ms.is_some_and(|expiry| expiry < now);
                if expired && self.role() == "leader" {
                    let request = WriteRequest::ReclaimUploads { now_ms: now };
                    if let Ok(WriteOutcome::UploadsDropped { count }) =
                        self.write(None, request).await
                    {
                        self.metrics.uploads_reclaimed.inc_by(u64::from(count));
                        tracing::info!(count, "reclaimed expired uploads");
                    }
                }
            }
        }
    }
}
