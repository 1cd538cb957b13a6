//! Every write, sync and directory change the WAL makes goes through here, so fault points
//! sit on the exact system calls and nowhere else.
//!
//! Fault points (compiled in with the `failpoints` feature, configured with `fail::cfg`):
//! - `wal::write`: `return` fails the write having written nothing; `return(torn)` writes
//!   the first half of the bytes and then fails, as a crash mid-write would leave them.
//! - `wal::fsync`: `return` makes fdatasync of a segment fail.
//! - `wal::create_segment`: `return` fails creating a new segment file.
//! - `wal::dir_sync`: `return` makes fsync of the WAL directory fail.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{io_error, Result};
use crate::format;
use crate::Lsn;

/// `Some(argument)` when the fault point `name` is configured to `return`.
#[cfg(feature = "failpoints")]
fn fault(name: &str) -> Option<Option<String>> {
    fail::eval(name, |argument| argument)
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
fn fault(_name: &str) -> Option<Option<String>> {
    None
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

/// Writes all of `bytes` at `offset`. Positional writes keep no cursor, so truncation
/// cannot leave a stale one behind.
pub fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    if let Some(argument) = fault("wal::write") {
        if argument.as_deref() == Some("torn") {
            let half = bytes.len() / 2;
            file.write_all_at(&bytes[..half], offset)?;
        }
        return Err(injected("write"));
    }
    file.write_all_at(bytes, offset)
}

/// fdatasync: the data and the size, not the timestamps.
pub fn sync_data(file: &File) -> io::Result<()> {
    if fault("wal::fsync").is_some() {
        return Err(injected("fdatasync"));
    }
    file.sync_data()
}

/// Makes creations, renames and removals of directory entries durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    if fault("wal::dir_sync").is_some() {
        return Err(io_error(
            "fsync directory",
            dir,
            injected("directory fsync"),
        ));
    }
    let handle = File::open(dir).map_err(|e| io_error("open directory", dir, e))?;
    handle
        .sync_all()
        .map_err(|e| io_error("fsync directory", dir, e))
}

pub fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format::segment_file_name(first_lsn))
}

/// Creates the segment that starts at `first_lsn` with its header already durable, so a
/// segment file never exists without a complete header: the header goes to a temporary
/// name, is synced, and is renamed into place. The caller syncs the directory afterwards.
/// On error nothing visible has changed (a stray temporary file is removed on open).
pub fn create_segment_file(dir: &Path, first_lsn: Lsn) -> Result<(File, PathBuf)> {
    let path = segment_path(dir, first_lsn);
    let temporary = dir.join(format::temporary_file_name(first_lsn));
    if fault("wal::create_segment").is_some() {
        return Err(io_error(
            "create segment",
            &temporary,
            injected("segment create"),
        ));
    }
    let created = write_segment_header(&temporary, first_lsn);
    let file = match created {
        Ok(file) => file,
        Err(e) => {
            // Best effort: open() removes temporaries anyway.
            let _ = fs::remove_file(&temporary);
            return Err(e);
        }
    };
    fs::rename(&temporary, &path).map_err(|e| io_error("rename segment", &path, e))?;
    Ok((file, path))
}

fn write_segment_header(path: &Path, first_lsn: Lsn) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io_error("create segment", path, e))?;
    let header = format::encode_segment_header(first_lsn);
    write_at(&file, &header, 0).map_err(|e| io_error("write segment header", path, e))?;
    sync_data(&file).map_err(|e| io_error("fdatasync segment header", path, e))?;
    Ok(file)
}

pub fn open_segment_for_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_error("open segment", path, e))
}

pub fn open_segment_for_read(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| io_error("open segment", path, e))
}

/// Removes a segment file. The caller syncs the directory after each removal, so that a
/// crash between two removals never leaves a gap in the middle of the log.
pub fn remove_segment_file(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| io_error("remove segment", path, e))
}
