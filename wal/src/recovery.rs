//! Rebuilding the index from the directory on open, and deciding what a bad frame means.
//!
//! The rule: a crash can only damage bytes written after the last fdatasync, and every
//! segment but the last was fdatasynced in full before the next one was created. So:
//! - In the last segment, a frame that runs past end-of-file (fewer than 12 header bytes
//!   left, or a valid header whose payload is longer than what is left) is a torn write
//!   and is cut off, together with everything after it.
//! - In the last segment, a frame that fails a checksum is cut off only if it and
//!   everything after it are zero bytes: a region the file system extended with zeros but
//!   never wrote (we never preallocate, but file systems may persist a size before data).
//! - Anything else is `Corrupt`: a complete frame with a bad checksum (the bytes were
//!   written whole, so a crash cannot explain them), a bad frame followed by non-zero
//!   bytes, any bad or short frame in an earlier segment, a bad segment header, or a gap
//!   or overlap in lsns between segments.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::disk;
use crate::error::{corrupt, io_error, Result};
use crate::format;
use crate::segment::{self, Scan, Segment, StopCause};
use crate::{Lsn, WalOptions};

pub struct Recovered {
    pub segments: VecDeque<Segment>,
    /// The last segment, opened for appending, cut to its last good frame and synced.
    pub active_file: File,
}

pub fn recover(dir: &Path, options: &WalOptions) -> Result<Recovered> {
    let found = list_segments(dir)?;
    if found.is_empty() {
        let (active_file, path) = disk::create_segment_file(dir, 1)?;
        disk::sync_dir(dir)?;
        let segments = VecDeque::from([Segment::empty(1, path)]);
        return Ok(Recovered {
            segments,
            active_file,
        });
    }
    let mut segments: VecDeque<Segment> = VecDeque::with_capacity(found.len());
    for (index, (name_lsn, path)) in found.iter().enumerate() {
        let is_last = index + 1 == found.len();
        let scan = segment::scan_segment(path, *name_lsn, options.record_bytes_max)?;
        check_continuity(segments.back(), &scan.segment)?;
        judge_stop(&scan, is_last)?;
        segments.push_back(scan.segment);
    }
    let last = segments.back().expect("found at least one segment");
    let active_file = open_active(last)?;
    Ok(Recovered {
        segments,
        active_file,
    })
}

/// Segment files in lsn order. Removes temporaries left by a crash during segment
/// creation: their rename never happened, so nothing refers to them.
fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("list directory", dir, e))?;
    let mut found = Vec::new();
    let mut removed_temporary = false;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list directory", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if format::is_temporary_file_name(&name) {
            fs::remove_file(entry.path())
                .map_err(|e| io_error("remove temporary", entry.path(), e))?;
            removed_temporary = true;
        } else if let Some(lsn) = format::parse_segment_file_name(&name) {
            found.push((lsn, entry.path()));
        }
    }
    if removed_temporary {
        disk::sync_dir(dir)?;
    }
    found.sort_unstable_by_key(|(lsn, _)| *lsn);
    Ok(found)
}

fn check_continuity(previous: Option<&Segment>, segment: &Segment) -> Result<()> {
    let Some(previous) = previous else {
        return Ok(());
    };
    if previous.next_lsn() != segment.first_lsn {
        let reason = format!(
            "lsn discontinuity: previous segment ends before lsn {}, this one starts at {}",
            previous.next_lsn(),
            segment.first_lsn
        );
        return Err(corrupt(&segment.path, 0, reason));
    }
    Ok(())
}

/// Ok if the scan stopped nowhere, or at a tail a crash can explain; `Corrupt` otherwise.
fn judge_stop(scan: &Scan, is_last: bool) -> Result<()> {
    let Some(stop) = &scan.stop else {
        return Ok(());
    };
    let path = &scan.segment.path;
    match (is_last, stop.cause) {
        (false, StopCause::Incomplete(reason) | StopCause::Invalid(reason)) => {
            let reason = format!("{reason} in a segment that is not the last one");
            Err(corrupt(path, stop.offset, reason))
        }
        (true, StopCause::Incomplete(_)) => Ok(()),
        (true, StopCause::Invalid(reason)) => {
            if segment::is_zero_from(path, stop.offset, scan.file_bytes)? {
                return Ok(());
            }
            let reason = format!("{reason}, and the frame is complete or followed by more data");
            Err(corrupt(path, stop.offset, reason))
        }
    }
}

/// Opens the last segment for appending, cuts off a torn tail and makes what remains
/// durable: it may have been written by a process that died before syncing.
fn open_active(last: &Segment) -> Result<File> {
    let file = disk::open_segment_for_append(&last.path)?;
    let file_bytes = file
        .metadata()
        .map_err(|e| io_error("stat segment", &last.path, e))?
        .len();
    assert!(file_bytes >= last.bytes, "scan read past end-of-file");
    if file_bytes > last.bytes {
        file.set_len(last.bytes)
            .map_err(|e| io_error("truncate torn tail", &last.path, e))?;
    }
    disk::sync_data(&file).map_err(|e| io_error("fdatasync segment", &last.path, e))?;
    Ok(file)
}
