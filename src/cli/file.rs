//! `paxkv put KEY --file PATH` and `paxkv get KEY --out PATH`: values of any size up to
//! `value_bytes_max`, sent as an upload of chunks and read back by byte ranges, so neither
//! side holds one frame of the whole value (docs/api.md, "Large values").

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use paxkv::api::gen::paxkv::{
    CommitUploadsRequest, GetValueRangeRequest, PutRequest, Session, UploadChunkRequest,
    UploadCommit,
};
use paxkv::api::{Client, TPaxkvSyncClient};

use super::backup::{local, partial_path, sync_parent, Partial};
use super::{ConnectionArgs, Failure, Outcome, SessionArgs, EXIT_NEGATIVE, EXIT_SUCCESS};

/// A value at least this large shows a progress bar (on a terminal).
const PROGRESS_BYTES_MIN: u64 = 4 << 20;
/// Attempts of one call that found the cluster unavailable or lost its connection.
const ATTEMPTS: u32 = 10;

fn progress(total: u64, verb: &str) -> ProgressBar {
    if total < PROGRESS_BYTES_MIN {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!(
        "{verb} [{{bar:40}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} eta {{eta}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `backup::with_retries` on a KV connection, up to `ATTEMPTS` in a row: with a session,
/// so a write applies once.
fn with_retries<T>(
    connection: &ConnectionArgs,
    client: &mut Client,
    call: impl FnMut(&mut Client) -> thrift::Result<T>,
) -> Result<T, Failure> {
    super::backup::with_retries(ATTEMPTS, || connection.connect(), client, call)
}

/// A session for every call of one upload: the given client id, or a new one.
fn upload_session(session: &SessionArgs) -> Result<(String, i64), Failure> {
    if let Some(Session {
        client_id,
        request_id,
    }) = session.session()
    {
        return Ok((client_id, request_id));
    }
    Ok((
        format!("paxkv-cli-upload-{}", super::backup::random_hex::<8>()?),
        1,
    ))
}

/// `put KEY --file PATH`: a file up to one chunk goes as one put; a larger one as an
/// upload, committed at the end. Prints `OK version=N`.
pub fn put_file(
    key: String,
    path: &Path,
    chunk_bytes: usize,
    session: &SessionArgs,
    connection: &ConnectionArgs,
) -> Outcome {
    let open =
        |error: io::Error| Failure::Invalid(format!("cannot read {}: {error}", path.display()));
    let mut file = File::open(path).map_err(open)?;
    let total = file.metadata().map_err(open)?.len();
    if total <= chunk_bytes as u64 {
        let mut client = connection.connect()?;
        let (client_id, request_id) = upload_session(session)?;
        let session = Some(Session::new(client_id, request_id));
        let mut value = Vec::with_capacity(total as usize);
        file.read_to_end(&mut value).map_err(open)?;
        let version = with_retries(connection, &mut client, |client| {
            let request = PutRequest::new(key.clone().into_bytes(), value.clone(), session.clone());
            client.put(request)
        })?;
        writeln!(io::stdout().lock(), "OK version={version}")?;
        return Ok(EXIT_SUCCESS);
    }
    let upload = Upload {
        key,
        total,
        chunk_bytes,
        document: false,
        expected_version: None,
    };
    let version = upload
        .send(&mut file, session, connection)
        .map_err(|e| match e {
            UploadFailure::Read(error) => open(error),
            UploadFailure::Call(failure) => failure,
        })?;
    // Without an expected version a commit is never refused.
    let version = version.ok_or_else(|| Failure::Server("the commit was refused".into()))?;
    writeln!(io::stdout().lock(), "OK version={version}")?;
    Ok(EXIT_SUCCESS)
}

/// One value sent as an upload of chunks and committed to its key.
pub struct Upload {
    pub key: String,
    pub total: u64,
    pub chunk_bytes: usize,
    /// Commit it as a JSON document (`UploadCommit.document`).
    pub document: bool,
    pub expected_version: Option<i64>,
}

pub enum UploadFailure {
    /// The source could not be read.
    Read(io::Error),
    Call(Failure),
}

impl From<Failure> for UploadFailure {
    fn from(failure: Failure) -> UploadFailure {
        UploadFailure::Call(failure)
    }
}

impl Upload {
    /// Stages `total` bytes of `source` chunk by chunk (a progress bar for a large one on
    /// a terminal), every call with a session and retried, then commits; the commit
    /// version. `Ok(None)` from the commit: `expected_version` did not hold.
    pub fn send(
        &self,
        source: &mut dyn Read,
        session: &SessionArgs,
        connection: &ConnectionArgs,
    ) -> Result<Option<i64>, UploadFailure> {
        let mut client = connection.connect()?;
        let (client_id, mut request_id) = upload_session(session)?;
        let mut next_session = || {
            let session = Session::new(client_id.clone(), request_id);
            request_id += 1;
            Some(session)
        };
        let bar = progress(self.total, "upload");
        let mut upload_id: Option<String> = None;
        let mut offset = 0u64;
        let mut chunk = vec![0u8; self.chunk_bytes];
        while offset < self.total {
            let want = (self.chunk_bytes as u64).min(self.total - offset) as usize;
            source
                .read_exact(&mut chunk[..want])
                .map_err(UploadFailure::Read)?;
            let session = next_session();
            let staged = with_retries(connection, &mut client, |client| {
                let request = UploadChunkRequest::new(
                    upload_id.clone(),
                    offset as i64,
                    chunk[..want].to_vec(),
                    session.clone(),
                );
                client.upload_chunk(request)
            })?;
            upload_id = Some(staged.upload_id);
            offset = staged.bytes_staged as u64;
            bar.set_position(offset);
        }
        bar.finish_and_clear();
        let Some(upload_id) = upload_id else {
            return Err(Failure::Invalid("an upload needs at least one byte".into()).into());
        };
        let session = next_session();
        let result = with_retries(connection, &mut client, |client| {
            let commit = UploadCommit::new(
                self.key.clone().into_bytes(),
                upload_id.clone(),
                self.total as i64,
                self.expected_version,
                Some(self.document),
            );
            let request = CommitUploadsRequest::new(vec![commit], None, session.clone());
            client.commit_uploads(request)
        })?;
        Ok(result.committed.then_some(result.version))
    }
}

/// `get KEY --out PATH`: the value read range by range, all at the version of the first
/// range (one consistent value), written to PATH through a temporary file that is synced
/// and renamed into place. Exit 1 if the key is absent.
pub fn get_file(
    key: String,
    path: &Path,
    version: Option<i64>,
    chunk_bytes: usize,
    connection: &ConnectionArgs,
) -> Outcome {
    let mut client = connection.connect()?;
    // Removed on any failure, as `backup`'s download is.
    let mut partial = Partial {
        path: partial_path(path),
        published: false,
    };
    let mut out = File::create(&partial.path).map_err(local("creating", &partial.path))?;
    let mut read_version = version;
    let mut offset = 0u64;
    let mut bar: Option<ProgressBar> = None;
    loop {
        let range = with_retries(connection, &mut client, |client| {
            let request = GetValueRangeRequest::new(
                key.clone().into_bytes(),
                offset as i64,
                chunk_bytes as i32,
                read_version,
            );
            client.get_value_range(request)
        })?;
        let Some(data) = range.data else {
            eprintln!("paxkv: not found (read_version={})", range.read_version);
            return Ok(EXIT_NEGATIVE);
        };
        read_version = Some(range.read_version);
        let total = range.total_bytes as u64;
        let bar = bar.get_or_insert_with(|| progress(total, "download"));
        out.write_all(&data)
            .map_err(|e| local("writing", &partial.path)(e))?;
        offset += data.len() as u64;
        bar.set_position(offset);
        if offset >= total || data.is_empty() {
            bar.finish_and_clear();
            break;
        }
    }
    out.sync_all().map_err(local("fsyncing", &partial.path))?;
    drop(out);
    fs::rename(&partial.path, path).map_err(local("renaming to", path))?;
    partial.published = true;
    sync_parent(path)?;
    writeln!(
        io::stdout().lock(),
        "OK bytes={offset} read_version={}",
        read_version.unwrap_or_default()
    )?;
    Ok(EXIT_SUCCESS)
}
