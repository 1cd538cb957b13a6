//! `paxkv doc put|patch|get`: JSON documents (docs/api.md, "Documents").

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use paxkv::api::gen::paxkv::{
    DocumentWriteResult, GetDocumentRequest, PatchDocumentRequest, PatchFormat, PutDocumentRequest,
};
use paxkv::api::TPaxkvSyncClient;

use super::{ConnectionArgs, Failure, Outcome, SessionArgs, EXIT_NEGATIVE, EXIT_SUCCESS};

#[derive(Subcommand, Debug)]
pub enum DocCommand {
    /// Write the JSON document (JSON, --file PATH, or - for stdin) to KEY; prints
    /// `OK version=N delta=BOOL logged_bytes=N`.
    Put(DocPutArgs),
    /// Apply an RFC 6902 patch (or with --merge an RFC 7396 merge patch) to KEY's document.
    Patch(DocPatchArgs),
    /// Print KEY's document, or with --pointer the part it names; exit 1 if KEY is absent.
    Get(DocGetArgs),
}

/// JSON given inline, from a file, or from stdin.
#[derive(Args, Debug)]
pub struct JsonInput {
    /// The JSON itself; `-` reads stdin.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    json: Option<String>,
    /// Read the JSON from this file.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

impl JsonInput {
    fn bytes(&self) -> Result<Vec<u8>, Failure> {
        match (&self.json, &self.file) {
            (_, Some(path)) => fs::read(path).map_err(|error| {
                Failure::Invalid(format!("cannot read {}: {error}", path.display()))
            }),
            (Some(json), None) if json == "-" => {
                let mut bytes = Vec::new();
                io::stdin()
                    .read_to_end(&mut bytes)
                    .map_err(|error| Failure::Invalid(format!("cannot read stdin: {error}")))?;
                Ok(bytes)
            }
            (Some(json), None) => Ok(json.clone().into_bytes()),
            (None, None) => unreachable!("clap requires JSON unless --file"),
        }
    }
}

#[derive(Args, Debug)]
pub struct DocPutArgs {
    key: String,
    #[command(flatten)]
    input: JsonInput,
    /// Write only if KEY is at this version (0: only if KEY is absent).
    #[arg(long, value_name = "V")]
    expect_version: Option<i64>,
    /// A document larger than this goes as an upload of 4 MiB chunks, committed as a
    /// document (never one large frame; the log carries it whole); a smaller one as one
    /// call, which sends a delta when it pays.
    #[arg(long, value_name = "BYTES", default_value_t = UPLOAD_ABOVE_DEFAULT)]
    upload_above: usize,
    #[command(flatten)]
    session: SessionArgs,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct DocPatchArgs {
    key: String,
    #[command(flatten)]
    input: JsonInput,
    /// The patch is an RFC 7396 merge patch, not an RFC 6902 list of operations.
    #[arg(long)]
    merge: bool,
    /// Apply only if KEY is at this version.
    #[arg(long, value_name = "V")]
    expect_version: Option<i64>,
    #[command(flatten)]
    session: SessionArgs,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct DocGetArgs {
    key: String,
    /// An RFC 6901 JSON Pointer (`/services/0/port`): print only that part.
    #[arg(long, value_name = "POINTER")]
    pointer: Option<String>,
    /// Snapshot read at this version instead of a linearizable read.
    #[arg(long, value_name = "V")]
    version: Option<i64>,
    /// Indent the output (the stored form has no whitespace).
    #[arg(long)]
    pretty: bool,
    /// Also print `mod_version=N create_version=N read_version=N` on a second line.
    #[arg(short, long)]
    verbose: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
}

pub fn doc(command: DocCommand) -> Outcome {
    match command {
        DocCommand::Put(args) => put(args),
        DocCommand::Patch(args) => patch(args),
        DocCommand::Get(args) => get(args),
    }
}

/// `doc put --upload-above`'s default.
const UPLOAD_ABOVE_DEFAULT: usize = 32 << 20;
/// The chunks of a document upload (the server's default `limits.chunk_bytes_max`).
const UPLOAD_CHUNK_BYTES: usize = 4 << 20;

fn put(args: DocPutArgs) -> Outcome {
    let json = args.input.bytes()?;
    if json.len() > args.upload_above {
        return put_as_upload(args, json);
    }
    let mut client = args.connection.connect()?;
    let request = PutDocumentRequest::new(
        args.key.into_bytes(),
        json,
        args.expect_version,
        args.session.session(),
    );
    written(client.put_document(request)?)
}

/// A large document: put in canonical form here (so the server need not write it again),
/// then sent as an upload and committed as a document. Prints what `put` prints, where
/// `logged_bytes` is the canonical document's size: the log carried it whole, in chunks
/// (compressed, which this does not see).
fn put_as_upload(args: DocPutArgs, json: Vec<u8>) -> Outcome {
    let canonical = match paxkv::executor::canonical::canonicalize(&json) {
        Ok(Some(canonical)) => canonical,
        // A member named twice: the server's parse decides which value it keeps.
        Ok(None) => json,
        Err(error) => return Err(Failure::Invalid(format!("not a JSON document: {error}"))),
    };
    let upload = super::file::Upload {
        key: args.key,
        total: canonical.len() as u64,
        chunk_bytes: UPLOAD_CHUNK_BYTES,
        document: true,
        expected_version: args.expect_version,
    };
    let sent = upload.send(&mut canonical.as_slice(), &args.session, &args.connection);
    let version = sent.map_err(|failure| match failure {
        super::file::UploadFailure::Read(error) => Failure::Invalid(error.to_string()),
        super::file::UploadFailure::Call(failure) => failure,
    })?;
    let Some(version) = version else {
        eprintln!("paxkv: not written: the key is not at the expected version");
        return Ok(EXIT_NEGATIVE);
    };
    let logged = canonical.len();
    writeln!(
        io::stdout().lock(),
        "OK version={version} delta=false logged_bytes={logged}"
    )?;
    Ok(EXIT_SUCCESS)
}

fn patch(args: DocPatchArgs) -> Outcome {
    let patch = args.input.bytes()?;
    let format = match args.merge {
        true => PatchFormat::MERGE_PATCH,
        false => PatchFormat::JSON_PATCH,
    };
    let mut client = args.connection.connect()?;
    let request = PatchDocumentRequest::new(
        args.key.into_bytes(),
        patch,
        format,
        args.expect_version,
        args.session.session(),
    );
    written(client.patch_document(request)?)
}

fn written(result: DocumentWriteResult) -> Outcome {
    writeln!(
        io::stdout().lock(),
        "OK version={} delta={} logged_bytes={}",
        result.version,
        result.delta,
        result.logged_bytes
    )?;
    Ok(EXIT_SUCCESS)
}

fn get(args: DocGetArgs) -> Outcome {
    let mut client = args.connection.connect()?;
    let request = GetDocumentRequest::new(args.key.into_bytes(), args.pointer, args.version);
    let result = client.get_document(request)?;
    let Some(json) = result.json else {
        eprintln!("paxkv: not found (read_version={})", result.read_version);
        return Ok(EXIT_NEGATIVE);
    };
    let mut out = io::stdout().lock();
    if args.pretty {
        let value: serde_json::Value = serde_json::from_slice(&json)
            .map_err(|error| Failure::Server(format!("the server sent invalid JSON: {error}")))?;
        serde_json::to_writer_pretty(&mut out, &value).map_err(io::Error::from)?;
    } else {
        out.write_all(&json)?;
    }
    writeln!(out)?;
    if args.verbose {
        writeln!(
            out,
            "mod_version={} create_version={} read_version={}",
            result.mod_version, result.create_version, result.read_version
        )?;
    }
    Ok(EXIT_SUCCESS)
}
