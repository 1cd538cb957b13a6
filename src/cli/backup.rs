//! `paxkv admin snapshot`, `paxkv backup` and `paxkv restore` (`paxkv admin member` is in
//! `member`).
//!
//! A backup asks one replica to snapshot now (`adminSnapshot`), downloads that replica's
//! file in chunks (`readSnapshot`) into `FILE.partial`, resuming from the bytes already
//! written when the connection breaks, fsyncs it, verifies it, and only then renames it to
//! `FILE`. Every failure removes `FILE.partial`, so a failed backup leaves nothing behind.
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use clap::{Args, Subcommand};
use paxkv::api::gen::paxkv::{
    ReadSnapshotRequest, SnapshotChunk, SnapshotGone, SnapshotInfo, Unavailable,
};
use paxkv::api::{connect, Client, TPaxkvSyncClient};
use paxkv::snapshot::{self, SnapshotError};

use super::{ConnectionArgs, Failure, Outcome, EXIT_SUCCESS};

/// Bytes asked for in one `readSnapshot`; the server gives at most its
/// `snapshot_chunk_bytes_max` (4 MiB by default).
const CHUNK_BYTES_REQUESTED: i32 = 4 * 1024 * 1024;

/// After a failed attempt a backup waits from this ...
pub(super) const BACKUP_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ... doubling up to this.
const BACKUP_BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// The replica at --endpoint takes a snapshot now; prints its slot, version, bytes,
    /// checksum and replica.
    Snapshot(AdminSnapshotArgs),
    /// The membership: list it, add, promote or remove a replica, hand leadership over.
    #[command(subcommand)]
    Member(super::member::MemberCommand),
}

#[derive(Args, Debug)]
pub struct AdminSnapshotArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where to write the snapshot file (through FILE.partial).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// Give up after this many failed attempts in a row (a broken connection, Unavailable,
    /// or the snapshot replaced on the server); a chunk received resets the count.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    attempts: u32,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The snapshot file (written by `paxkv backup`).
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// The new replica's data directory; must not hold a replica's state.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

/// A `SnapshotInfo` as the server sent it, checked: no negative field, a 32-bit checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Taken {
    slot: u64,
    version: u64,
    bytes: u64,
    checksum: u32,
    replica: i32,
}

impl Taken {
    fn from_wire(info: &SnapshotInfo) -> Outcome<Taken> {
        let field = |name: &str, value: i64| {
            u64::try_from(value).map_err(|_| {
                Failure::Server(format!("adminSnapshot sent a negative {name} ({value})"))
            })
        };
        let checksum = u32::try_from(info.checksum).map_err(|_| {
            let value = info.checksum;
            Failure::Server(format!("adminSnapshot sent checksum {value}, not a CRC32C"))
        })?;
        Ok(Taken {
            slot: field("slot", info.slot)?,
            version: field("version", info.version)?,
            bytes: field("bytes", info.bytes)?,
            checksum,
            replica: info.replica,
        })
    }
}

/// `slot=N version=N bytes=N checksum=HEX`, the checksum as 8 lowercase hex digits.
fn describe(slot: u64, version: u64, bytes: u64, checksum: u32) -> String {
    format!("slot={slot} version={version} bytes={bytes} checksum={checksum:08x}")
}

fn describe_taken(taken: &Taken) -> String {
    let line = describe(taken.slot, taken.version, taken.bytes, taken.checksum);
    format!("{line} replica={}", taken.replica)
}

// ---------------------------------------------------------------------------------------
// Verbs.

pub fn admin(command: AdminCommand) -> Outcome {
    let args = match command {
        AdminCommand::Snapshot(args) => args,
        AdminCommand::Member(command) => return super::member::member(command),
    };
    let mut client = args.connection.connect()?;
    let taken = Taken::from_wire(&client.admin_snapshot()?)?;
    writeln!(io::stdout().lock(), "{}", describe_taken(&taken))?;
    Ok(EXIT_SUCCESS)
}

pub fn backup(args: BackupArgs) -> Outcome {
    refuse_existing(&args.out, args.force)?;
    // Connects once up front, so a wrong endpoint fails at once rather than after retrying.
    let client = args.connection.connect()?;
    let mut source = Remote {
        connection: &args.connection,
        client: Some(client),
    };
    let retry = Retry::new(args.attempts, BACKUP_BACKOFF_MIN);
    let verify_file: VerifyFile = snapshot::verify_file;
    let taken = download_to(&mut source, &args.out, args.force, retry, verify_file)?;
    let line = describe_taken(&taken);
    writeln!(io::stdout().lock(), "OK {line} file={}", args.out.display())?;
    Ok(EXIT_SUCCESS)
}

pub fn restore(args: RestoreArgs) -> Outcome {
    let info = snapshot::restore(&args.input, &args.data_dir)
        .map_err(|error| restore_failure(&args.input, &args.data_dir, error))?;
    let line = describe(info.slot, info.version, info.bytes, info.checksum);
    let dir = args.data_dir.display();
    writeln!(io::stdout().lock(), "restored {line} into {dir}")?;
    eprintln!(
        "paxkv: to create a cluster from this backup, seed EVERY replica from this same file, \
         then start each with --bootstrap. Started without --bootstrap, a restored replica \
         joins a running cluster as a learner at a new incarnation, and votes only once \
         `paxkv admin member add` and `promote` admit it"
    );
    Ok(EXIT_SUCCESS)
}

fn restore_failure(input: &Path, data_dir: &Path, error: SnapshotError) -> Failure {
    let input = input.display();
    match error {
        SnapshotError::Corrupt(_) => Failure::Verify(format!("{input}: {error}")),
        SnapshotError::DataDirInUse(_) => Failure::Invalid(error.to_string()),
        other => Failure::Local(format!(
            "restoring {input} into {}: {other}",
            data_dir.display()
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The download.

/// Where a download reads from: a replica's Thrift API, or a test's stand-in.
trait SnapshotSource {
    fn take_snapshot(&mut self) -> thrift::Result<SnapshotInfo>;
    fn read(&mut self, request: ReadSnapshotRequest) -> thrift::Result<SnapshotChunk>;
    /// Drops the connection: the stream may be mid-message, so the next call opens a new one.
    fn disconnect(&mut self);
}

/// The replica at one endpoint, reconnecting on demand.
struct Remote<'a> {
    connection: &'a ConnectionArgs,
    client: Option<Client>,
}

impl Remote<'_> {
    fn client(&mut self) -> thrift::Result<&mut Client> {
        if self.client.is_none() {
            let endpoint = self.connection.endpoint.as_str();
            self.client = Some(connect(endpoint, self.connection.protocol())?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}

impl SnapshotSource for Remote<'_> {
    fn take_snapshot(&mut self) -> thrift::Result<SnapshotInfo> {
        self.client()?.admin_snapshot()
    }
    fn read(&mut self, request: ReadSnapshotRequest) -> thrift::Result<SnapshotChunk> {
        self.client()?.read_snapshot(request)
    }
    fn disconnect(&mut self) {
        self.client = None;
    }
}

/// Counts failed attempts in a row and waits between them, doubling the wait.
pub(super) struct Retry {
    attempts: u32,
    failures: u32,
    backoff: Duration,
    backoff_min: Duration,
}

impl Retry {
    pub(super) fn new(attempts: u32, backoff_min: Duration) -> Retry {
        assert!(attempts >= 1, "clap takes --attempts of at least 1");
        Retry {
            attempts,
            failures: 0,
            backoff: backoff_min,
            backoff_min,
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.backoff = self.backoff_min;
    }

    /// Waits before the next attempt, or gives up with `failure` after the last one.
    pub(super) fn failed(&mut self, failure: Failure) -> Outcome<()> {
        self.failures += 1;
        let line = failure.to_string();
        if self.failures >= self.attempts {
            let attempts = self.attempts;
            return Err(failure.with_context(format!("gave up after {attempts} attempts")));
        }
        eprintln!("paxkv: {line}; retrying in {} ms", self.backoff.as_millis());
        thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKUP_BACKOFF_MAX);
        Ok(())
    }
}

/// Runs `call` on `client`, reconnecting (`connect`) and calling again with the same
/// request while the answer is `Unavailable` or the connection is lost, up to `attempts`
/// in a row. The request must be safe to send twice (a session, a client token, a read).
pub(super) fn with_retries<C, T>(
    attempts: u32,
    connect: impl Fn() -> Outcome<C>,
    client: &mut C,
    mut call: impl FnMut(&mut C) -> thrift::Result<T>,
) -> Outcome<T> {
    let mut retry = Retry::new(attempts, BACKUP_BACKOFF_MIN);
    loop {
        match call(client) {
            Err(error) if retryable(&error) => {
                retry.failed(error.into())?;
                if let Ok(fresh) = connect() {
                    *client = fresh;
                }
            }
            result => return Ok(result?),
        }
    }
}

/// `N` random bytes in lowercase hex, for ids a client picks (sessions, client tokens).
pub(super) fn random_hex<const N: usize>() -> Outcome<String> {
    let mut id = [0u8; N];
    getrandom::getrandom(&mut id)
        .map_err(|error| Failure::Local(format!("no random bytes for an id: {error}")))?;
    Ok(id.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Worth another attempt: the connection broke, or the server said `Unavailable`.
pub(super) fn retryable(error: &thrift::Error) -> bool {
    match error {
        thrift::Error::Transport(_) => true,
        thrift::Error::User(user) => user.is::<Unavailable>(),
        _ => false,
    }
}

fn gone(error: &thrift::Error) -> bool {
    matches!(error, thrift::Error::User(user) if user.is::<SnapshotGone>())
}

/// `FILE.partial`, removed on drop unless published.
pub(super) struct Partial {
    pub(super) path: PathBuf,
    pub(super) published: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub(super) fn partial_path(out: &Path) -> PathBuf {
    let mut name = OsString::from(out.as_os_str());
    name.push(".partial");
    PathBuf::from(name)
}

fn refuse_existing(out: &Path, force: bool) -> Outcome<()> {
    if !force && out.exists() {
        return Err(Failure::Invalid(format!(
            "{} exists; use --force to replace it",
            out.display()
        )));
    }
    Ok(())
}

fn writing(error: io::Error) -> Failure {
    Failure::Local(format!("writing the download: {error}"))
}

pub(super) fn local<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> Failure + 'a {
    move |error| Failure::Local(format!("{what} {}: {error}", path.display()))
}

/// Reads a whole snapshot file back and checks it: `snapshot::verify_file`, or a test's.
type VerifyFile = fn(&Path) -> Result<snapshot::SnapshotInfo, SnapshotError>;

/// Downloads a new snapshot into `out` through `out.partial`: fsynced, verified against
/// what the server said it took, then renamed. On any failure `out` is left as it was.
fn download_to(
    source: &mut impl SnapshotSource,
    out: &Path,
    force: bool,
    mut retry: Retry,
    verify_file: VerifyFile,
) -> Outcome<Taken> {
    let mut partial = Partial {
        path: partial_path(out),
        published: false,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial.path)
        .map_err(local("creating", &partial.path))?;
    let taken = download(source, &mut file, &mut retry)?;
    file.sync_all().map_err(local("fsyncing", &partial.path))?;
    drop(file);
    verify(&partial.path, &taken, verify_file)?;
    // Checked again: FILE may have appeared while the download ran.
    refuse_existing(out, force)?;
    fs::rename(&partial.path, out).map_err(local("renaming to", out))?;
    partial.published = true;
    sync_parent(out)?;
    Ok(taken)
}

/// Takes a snapshot and writes all of it to `file`, from its start. A broken connection
/// resumes from the bytes already written; a snapshot replaced on the server starts over
/// with a new one.
fn download(
    source: &mut impl SnapshotSource,
    file: &mut File,
    retry: &mut Retry,
) -> Outcome<Taken> {
    loop {
        let taken = take(source, retry)?;
        file.set_len(0).map_err(writing)?;
        file.seek(SeekFrom::Start(0)).map_err(writing)?;
        match fetch(source, &taken, file, retry)? {
            Fetched::Whole => return Ok(taken),
            Fetched::Gone(failure) => retry.failed(failure)?,
        }
    }
}

fn take(source: &mut impl SnapshotSource, retry: &mut Retry) -> Outcome<Taken> {
    loop {
        match source.take_snapshot() {
            Ok(info) => {
                retry.succeeded();
                return Taken::from_wire(&info);
            }
            Err(error) if retryable(&error) => {
                source.disconnect();
                retry.failed(error.into())?;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

enum Fetched {
    Whole,
    /// The server no longer holds the snapshot: take a new one.
    Gone(Failure),
}

fn fetch(
    source: &mut impl SnapshotSource,
    taken: &Taken,
    file: &mut File,
    retry: &mut Retry,
) -> Outcome<Fetched> {
    let mut written = 0;
    while written < taken.bytes {
        let offset = i64::try_from(written).expect("bytes came as an i64");
        let request = ReadSnapshotRequest::new(taken.slot as i64, offset, CHUNK_BYTES_REQUESTED);
        match source.read(request) {
            Ok(chunk) => {
                retry.succeeded();
                written += append(taken, written, &chunk, file)?;
            }
            Err(error) if gone(&error) => return Ok(Fetched::Gone(error.into())),
            Err(error) if retryable(&error) => {
                source.disconnect();
                retry.failed(error.into())?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Fetched::Whole)
}

/// Writes `chunk`, read at `written`, after checking it is a part of `taken` the server
/// could have sent; returns its length.
fn append(taken: &Taken, written: u64, chunk: &SnapshotChunk, file: &mut File) -> Outcome<u64> {
    let length = chunk.data.len() as u64;
    let bad = |what: String| {
        let slot = taken.slot;
        Err(Failure::Server(format!(
            "readSnapshot of snapshot {slot} at {written}: {what}"
        )))
    };
    if chunk.total_bytes != taken.bytes as i64 {
        let (total, bytes) = (chunk.total_bytes, taken.bytes);
        return bad(format!(
            "totalBytes {total}, but adminSnapshot said {bytes}"
        ));
    }
    if length == 0 {
        return bad(format!("no data before the end ({} bytes)", taken.bytes));
    }
    if length > CHUNK_BYTES_REQUESTED as u64 || written + length > taken.bytes {
        return bad(format!("{length} bytes, more than asked for or left"));
    }
    file.write_all(&chunk.data).map_err(writing)?;
    Ok(length)
}

/// The downloaded file is a whole snapshot, and the one the server said it took.
fn verify(path: &Path, taken: &Taken, verify_file: VerifyFile) -> Outcome<()> {
    let shown = path.display();
    let info = verify_file(path).map_err(|error| match error {
        SnapshotError::Io(error) => Failure::Local(format!("reading back {shown}: {error}")),
        other => Failure::Verify(format!("the downloaded copy {shown}: {other}")),
    })?;
    let got = (info.slot, info.version, info.bytes, info.checksum);
    let expected = (taken.slot, taken.version, taken.bytes, taken.checksum);
    if got != expected {
        return Err(Failure::Verify(format!(
            "the downloaded copy {shown} holds {}, but the server took {}",
            describe(got.0, got.1, got.2, got.3),
            describe(expected.0, expected.1, expected.2, expected.3)
        )));
    }
    Ok(())
}

/// Makes the rename durable.
pub(super) fn sync_parent(path: &Path) -> Outcome<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let directory = File::open(parent).map_err(local("opening", parent))?;
    directory.sync_all().map_err(local("fsyncing", parent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxkv::api::gen::paxkv::{ErrorCode, InvalidArgument};
    use thrift::{TransportError, TransportErrorKind};

    #[derive(Clone, Copy)]
    enum Fault {
        Broken,
        Gone,
        Invalid,
    }

    impl Fault {
        fn error(self) -> thrift::Error {
            match self {
                Fault::Broken => {
                    let kind = TransportErrorKind::EndOfFile;
                    thrift::Error::Transport(TransportError::new(kind, "reset"))
                }
                Fault::Gone => {
                    let gone = SnapshotGone::new(ErrorCode::SNAPSHOT_GONE, 10, "gone".into());
                    thrift::Error::User(Box::new(gone))
                }
                Fault::Invalid => {
                    let message = "bad".to_string();
                    let invalid = InvalidArgument::new(ErrorCode::INVALID_ARGUMENT, message, None);
                    thrift::Error::User(Box::new(invalid))
                }
            }
        }
    }

    use Fault::{Broken, Gone, Invalid};

    /// A source serving snapshots from memory, failing the calls a test scripts.
    struct Scripted {
        snapshots: Vec<Vec<u8>>,
        /// Index into `snapshots` of the one the last take_snapshot returned.
        current: usize,
        /// The call numbers (counting every call, from 0) that fail, and how.
        failures: Vec<(usize, Fault)>,
        calls: usize,
        reads: Vec<(i64, i64)>,
        disconnects: usize,
        chunk_bytes: usize,
    }

    impl Scripted {
        fn new(snapshots: Vec<Vec<u8>>) -> Scripted {
            Scripted {
                snapshots,
                current: 0,
                failures: Vec::new(),
                calls: 0,
                reads: Vec::new(),
                disconnects: 0,
                chunk_bytes: 3,
            }
        }

        fn scripted_failure(&mut self) -> thrift::Result<()> {
            let call = self.calls;
            self.calls += 1;
            match self.failures.iter().find(|(at, _)| *at == call) {
                Some((_, fault)) => Err(fault.error()),
                None => Ok(()),
            }
        }
    }

    impl SnapshotSource for Scripted {
        fn take_snapshot(&mut self) -> thrift::Result<SnapshotInfo> {
            self.scripted_failure()?;
            self.current = self.reads.iter().filter(|(_, offset)| *offset < 0).count();
            self.reads.push((self.current as i64, -1));
            let bytes = &self.snapshots[self.current];
            let (slot, checksum) = (10 + self.current as i64, crc32c::crc32c(bytes));
            let info = SnapshotInfo::new(slot, 7, bytes.len() as i64, checksum.into(), 2);
            Ok(info)
        }
        fn read(&mut self, request: ReadSnapshotRequest) -> thrift::Result<SnapshotChunk> {
            self.scripted_failure()?;
            self.reads.push((request.slot, request.offset));
            let bytes = &self.snapshots[self.current];
            let start = request.offset as usize;
            let end = (start + self.chunk_bytes).min(bytes.len());
            Ok(SnapshotChunk::new(
                bytes[start..end].to_vec(),
                bytes.len() as i64,
            ))
        }
        fn disconnect(&mut self) {
            self.disconnects += 1;
        }
    }

    fn run(source: &mut Scripted, attempts: u32) -> (Outcome<Taken>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("download");
        let mut file = File::create(&path).unwrap();
        let mut retry = Retry::new(attempts, Duration::ZERO);
        let result = download(source, &mut file, &mut retry);
        (result, fs::read(&path).unwrap())
    }

    #[test]
    fn a_download_reads_every_chunk_in_order() {
        let bytes = b"0123456789".to_vec();
        let mut source = Scripted::new(vec![bytes.clone()]);
        let (taken, written) = run(&mut source, 1);
        let taken = taken.unwrap();
        assert_eq!(written, bytes);
        assert_eq!((taken.slot, taken.version, taken.bytes), (10, 7, 10));
        assert_eq!(taken.checksum, crc32c::crc32c(&bytes));
        let offsets: Vec<i64> = source.reads.iter().map(|(_, offset)| *offset).collect();
        assert_eq!(offsets, [-1, 0, 3, 6, 9]);
    }

    #[test]
    fn a_broken_connection_reconnects_and_resumes_where_it_stopped() {
        let bytes = b"0123456789".to_vec();
        let mut source = Scripted::new(vec![bytes.clone()]);
        // Call 0 takes the snapshot; calls 2 and 3 (reads at offset 3) break, twice in a row.
        source.failures = vec![(2, Broken), (3, Broken)];
        let (taken, written) = run(&mut source, 3);
        taken.unwrap();
        assert_eq!(written, bytes);
        assert_eq!(source.disconnects, 2);
        let offsets: Vec<i64> = source.reads.iter().map(|(_, offset)| *offset).collect();
        assert_eq!(
            offsets,
            [-1, 0, 3, 6, 9],
            "resumed at 3, nothing read twice"
        );
    }

    #[test]
    fn attempts_count_failures_in_a_row_and_then_give_up() {
        let mut source = Scripted::new(vec![b"0123456789".to_vec()]);
        source.failures = vec![(2, Broken), (3, Broken), (4, Broken)];
        let (result, _) = run(&mut source, 3);
        let failure = result.unwrap_err();
        assert!(matches!(failure, Failure::Unavailable(_)), "{failure:?}");
        assert!(
            failure.to_string().contains("gave up after 3 attempts"),
            "{failure}"
        );

        // Progress in between resets the count.
        let mut source = Scripted::new(vec![b"0123456789".to_vec()]);
        source.failures = vec![(2, Broken), (3, Broken), (5, Broken), (6, Broken)];
        run(&mut source, 3).0.unwrap();
    }

    #[test]
    fn a_snapshot_gone_on_the_server_starts_over_with_a_new_one() {
        let (first, second) = (b"first snapshot".to_vec(), b"the second".to_vec());
        let mut source = Scripted::new(vec![first, second.clone()]);
        // Call 3 is the read at offset 6 of the first snapshot.
        source.failures = vec![(3, Gone)];
        let (taken, written) = run(&mut source, 2);
        assert_eq!(taken.unwrap().slot, 11);
        assert_eq!(written, second, "the file holds only the new snapshot");
    }

    #[test]
    fn other_server_errors_fail_at_once() {
        let mut source = Scripted::new(vec![b"0123456789".to_vec()]);
        source.failures = vec![(1, Invalid)];
        let (result, _) = run(&mut source, 5);
        assert!(matches!(result, Err(Failure::Invalid(_))));
        assert_eq!(source.calls, 2);
    }

    #[test]
    fn a_chunk_that_cannot_be_part_of_the_snapshot_is_refused() {
        let taken = Taken {
            slot: 4,
            version: 3,
            bytes: 10,
            checksum: 0,
            replica: 1,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("f")).unwrap();
        let chunk = |data: &[u8], total: i64| SnapshotChunk::new(data.to_vec(), total);
        assert_eq!(
            append(&taken, 0, &chunk(b"0123", 10), &mut file).unwrap(),
            4
        );
        for (written, bad) in [
            (4, chunk(b"4567", 11)),
            (4, chunk(b"", 10)),
            (8, chunk(b"890", 10)),
        ] {
            let result = append(&taken, written, &bad, &mut file);
            assert!(matches!(result, Err(Failure::Server(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_wire_info_with_negative_fields_or_a_wide_checksum_is_refused() {
        let ok = SnapshotInfo::new(1, 2, 3, 0xffff_ffff, 1);
        assert_eq!(Taken::from_wire(&ok).unwrap().checksum, u32::MAX);
        for bad in [
            SnapshotInfo::new(-1, 2, 3, 4, 1),
            SnapshotInfo::new(1, 2, -3, 4, 1),
            SnapshotInfo::new(1, 2, 3, 1 << 32, 1),
            SnapshotInfo::new(1, 2, 3, -1, 1),
        ] {
            assert!(matches!(Taken::from_wire(&bad), Err(Failure::Server(_))));
        }
    }

    /// Stands in for `snapshot::verify_file`: a file is "intact" unless its first byte is
    /// `!`, and describes itself as snapshot 10 at version 7, as `Scripted` takes it.
    fn verify_test_file(path: &Path) -> Result<snapshot::SnapshotInfo, SnapshotError> {
        let bytes = fs::read(path)?;
        if bytes.first() == Some(&b'!') {
            return Err(SnapshotError::Corrupt("chunk 0 checksum mismatch".into()));
        }
        Ok(snapshot::SnapshotInfo {
            slot: 10,
            version: 7,
            bytes: bytes.len() as u64,
            checksum: crc32c::crc32c(&bytes),
            path: path.to_path_buf(),
        })
    }

    fn backup_to(out: &Path, snapshot: &[u8], force: bool) -> Outcome<Taken> {
        let mut source = Scripted::new(vec![snapshot.to_vec()]);
        let retry = Retry::new(1, Duration::ZERO);
        download_to(&mut source, out, force, retry, verify_test_file)
    }

    #[test]
    fn a_verified_backup_is_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("backup.pxs");
        let taken = backup_to(&out, b"0123456789", false).unwrap();
        assert_eq!(taken.slot, 10);
        assert_eq!(fs::read(&out).unwrap(), b"0123456789");
        assert!(!partial_path(&out).exists());
        // --force replaces it; without, it is refused and kept.
        backup_to(&out, b"abcdefghij", true).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"abcdefghij");
        let refused = backup_to(&out, b"0123456789", false).unwrap_err();
        assert!(matches!(refused, Failure::Invalid(_)), "{refused:?}");
        assert_eq!(fs::read(&out).unwrap(), b"abcdefghij");
    }

    #[test]
    fn a_backup_that_fails_verification_exits_6_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("backup.pxs");
        let failure = backup_to(&out, b"!corrupt!", false).unwrap_err();
        assert_eq!(failure.exit_code(), 6, "{failure:?}");
        assert!(
            failure.to_string().contains("chunk 0 checksum"),
            "{failure}"
        );
        assert!(!out.exists());
        assert!(!partial_path(&out).exists());

        // An older backup under --force is kept when the new one fails.
        fs::write(&out, b"older").unwrap();
        let failure = backup_to(&out, b"!corrupt!", true).unwrap_err();
        assert_eq!(failure.exit_code(), 6);
        assert_eq!(fs::read(&out).unwrap(), b"older");
    }

    #[test]
    fn a_verified_file_that_is_not_the_snapshot_taken_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("download");
        fs::write(&path, b"0123456789").unwrap();
        let taken = Taken {
            slot: 10,
            version: 7,
            bytes: 10,
            checksum: crc32c::crc32c(b"0123456789"),
            replica: 1,
        };
        verify(&path, &taken, verify_test_file).unwrap();
        for other in [
            Taken { slot: 11, ..taken },
            Taken {
                version: 8,
                ..taken
            },
            Taken {
                checksum: 1,
                ..taken
            },
        ] {
            let failure = verify(&path, &other, verify_test_file).unwrap_err();
            assert_eq!(failure.exit_code(), 6, "{failure:?}");
            assert!(
                failure.to_string().contains("but the server took"),
                "{failure}"
            );
        }
    }

    #[test]
    fn a_failed_backup_leaves_neither_file_nor_partial() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("backup.pxs");
        let mut source = Scripted::new(vec![b"0123456789".to_vec()]);
        source.failures = vec![(2, Broken)];
        let retry = Retry::new(1, Duration::ZERO);
        let result = download_to(&mut source, &out, false, retry, verify_test_file);
        assert!(matches!(result, Err(Failure::Unavailable(_))));
        assert!(!out.exists());
        assert!(!partial_path(&out).exists());
    }

    #[test]
    fn an_existing_file_is_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("backup.pxs");
        fs::write(&out, b"older backup").unwrap();
        let failure = refuse_existing(&out, false).unwrap_err();
        assert!(matches!(failure, Failure::Invalid(_)));
        assert!(failure.to_string().contains("--force"), "{failure}");
        refuse_existing(&out, true).unwrap();
        refuse_existing(&dir.path().join("absent"), false).unwrap();
        assert_eq!(partial_path(&out), dir.path().join("backup.pxs.partial"));
    }

    #[test]
    fn the_verbs_parse_and_attempts_must_be_positive() {
        use clap::Parser;

        #[derive(Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            command: super::super::ClientCommand,
        }
        use super::super::ClientCommand as Verb;
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace()).map(|c| c.command);
        let Ok(Verb::Backup(backup)) = parse("paxkv backup --out b.pxs --endpoint h:1") else {
            panic!("backup did not parse");
        };
        assert_eq!(
            (backup.out, backup.force, backup.attempts),
            ("b.pxs".into(), false, 5)
        );
        assert_eq!(backup.connection.endpoint, "h:1");
        assert!(matches!(
            parse("paxkv backup --out b --force --attempts 1"),
            Ok(Verb::Backup(_))
        ));
        assert!(parse("paxkv backup --out b --attempts 0").is_err());
        assert!(parse("paxkv backup").is_err(), "--out is required");
        let Ok(Verb::Restore(restore)) = parse("paxkv restore --in b.pxs --data-dir d") else {
            panic!("restore did not parse");
        };
        assert_eq!(
            (restore.input, restore.data_dir),
            ("b.pxs".into(), "d".into())
        );
        assert!(parse("paxkv restore --in b.pxs").is_err());
        let admin = parse("paxkv admin snapshot --endpoint h:2");
        let Ok(Verb::Admin(AdminCommand::Snapshot(admin))) = admin else {
            panic!("admin snapshot did not parse");
        };
        assert_eq!(admin.connection.endpoint, "h:2");
        assert!(parse("paxkv admin").is_err());
    }

    #[test]
    fn info_lines_show_the_checksum_as_hex() {
        let taken = Taken {
            slot: 12,
            version: 10,
            bytes: 4096,
            checksum: 0x0a1b2c3d,
            replica: 1,
        };
        assert_eq!(
            describe_taken(&taken),
            "slot=12 version=10 bytes=4096 checksum=0a1b2c3d replica=1"
        );
    }
}
