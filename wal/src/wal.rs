//! The single-owner log: appends, syncs, reads, truncation and compaction.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk;
use crate::error::{corrupt, io_error, Result, WalError};
use crate::format::{self, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::recovery;
use crate::segment::Segment;
use crate::Lsn;

/// Appended bytes are buffered in memory and written to the file once this many are
/// waiting, or at the next sync, whichever comes first.
pub const WRITE_BUFFER_BYTES_MAX: usize = 1 << 20;

/// Limits of a WAL. Both are checked on every append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is started when the next frame would push the active segment past
    /// this size. A segment always takes at least one record, however large.
    pub segment_bytes_max: u64,
    /// Largest payload `append` accepts; larger ones get `WalError::RecordTooLarge`.
    pub record_bytes_max: u32,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes_max: 64 << 20,
            record_bytes_max: 256 << 20,
        }
    }
}

impl WalOptions {
    fn validate(&self) -> Result<()> {
        let floor_bytes = SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES;
        if self.segment_bytes_max < floor_bytes {
            let reason = format!(
                "segment_bytes_max {} < {floor_bytes}",
                self.segment_bytes_max
            );
            return Err(WalError::InvalidOptions { reason });
        }
        Ok(())
    }
}

/// One segment file as seen from outside, for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub first_lsn: Lsn,
    /// One past the segment's last record.
    pub next_lsn: Lsn,
    /// Logical length, including appended bytes not yet written to the file.
    pub bytes: u64,
    /// Length known to be on stable storage: all of it for every segment but the last.
    pub durable_bytes: u64,
}

/// The segment appends go to.
struct Active {
    first_lsn: Lsn,
    /// Shared with a group-commit leader that syncs it without holding the WAL's lock.
    file: Arc<File>,
    /// Bytes of the segment written to the file; the rest are in `buffer`.
    written_bytes: u64,
    /// Bytes of the segment known to be durable.
    synced_bytes: u64,
    buffer: Vec<u8>,
}

impl Active {
    fn new(first_lsn: Lsn, file: File, bytes: u64) -> Active {
        Active {
            first_lsn,
            file: Arc::new(file),
            written_bytes: bytes,
            synced_bytes: bytes,
            buffer: Vec::new(),
        }
    }
}

/// Why the WAL refuses to write.
struct Poison {
    cause: String,
    /// The highest lsn a failed fdatasync was to make durable, and its error: callers
    /// waiting for those records get this error rather than a generic `Poisoned`.
    failed_sync: Option<(Lsn, Arc<io::Error>)>,
}

/// What a sync has to do, taken under the lock and carried out without it.
pub(crate) struct SyncTicket {
    file: Arc<File>,
    segment_first_lsn: Lsn,
    lsn: Lsn,
    bytes: u64,
}

impl SyncTicket {
    pub(crate) fn sync(&self) -> io::Result<()> {
        disk::sync_data(&self.file)
    }
}

/// A segmented, checksummed write-ahead log owned by one thread. See the crate docs.
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Oldest first; the last one is the active segment.
    segments: VecDeque<Segment>,
    active: Active,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    syncs_total: u64,
    poison: Option<Poison>,
}

impl Wal {
    /// Opens the WAL in `dir`, creating the directory if missing, and recovers: cuts a torn
    /// tail off the last segment, fails with `Corrupt` on anything a crash cannot explain.
    /// Everything recovered is durable when this returns.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<Wal> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        create_dir(&dir)?;
        let recovered = recovery::recover(&dir, &options)?;
        let last = recovered
            .segments
            .back()
            .expect("recovery yields a segment");
        let active = Active::new(last.first_lsn, recovered.active_file, last.bytes);
        let next_lsn = last.next_lsn();
        let wal = Wal {
            dir,
            options,
            segments: recovered.segments,
            active,
            next_lsn,
            durable_lsn: next_lsn - 1,
            syncs_total: 0,
            poison: None,
        };
        wal.invariants_full();
        Ok(wal)
    }

    /// Appends a record and returns its lsn. The record is buffered: it is durable only
    /// after a `sync` that returns an lsn at least this one.
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn> {
        self.check_writable()?;
        let payload_bytes = payload.len() as u64;
        if payload_bytes > u64::from(self.options.record_bytes_max) {
            return Err(WalError::RecordTooLarge {
                bytes: payload_bytes,
                record_bytes_max: self.options.record_bytes_max,
            });
        }
        let frame_bytes = format::frame_bytes(payload_bytes);
        if self.needs_rollover(frame_bytes) {
            self.rollover()?;
        }
        let lsn = self.next_lsn;
        let segment = self
            .segments
            .back_mut()
            .expect("a segment is always active");
        segment.offsets.push(segment.bytes);
        segment.bytes += frame_bytes;
        format::encode_frame(payload, &mut self.active.buffer);
        self.next_lsn += 1;
        if self.active.buffer.len() >= WRITE_BUFFER_BYTES_MAX {
            self.write_buffer()?;
        }
        self.invariants();
        Ok(lsn)
    }

    /// Writes buffered records to the file without fdatasync: they survive the process
    /// dying, not the machine. `sync` does this itself.
    pub fn flush(&mut self) -> Result<()> {
        self.check_writable()?;
        self.write_buffer()
    }

    /// Writes buffered records and fdatasyncs the active segment; returns the durable lsn.
    /// An fdatasync failure poisons the WAL: the kernel may have dropped the pages, so
    /// retrying could report success for data that is gone.
    pub fn sync(&mut self) -> Result<Lsn> {
        self.check_writable()?;
        if self.durable_lsn + 1 == self.next_lsn {
            return Ok(self.durable_lsn);
        }
        let ticket = self.begin_sync()?;
        let outcome = ticket.sync();
        self.finish_sync(ticket, outcome)
    }

    /// Records in `range`, read from disk (or from the write buffer for records not yet
    /// written) with every checksum verified. The end is clamped to `next_lsn()`; a start
    /// below `first_lsn()` is `LsnOutOfRange`, since those records were compacted away.
    pub fn read(&self, range: impl RangeBounds<Lsn>) -> Result<Vec<(Lsn, Vec<u8>)>> {
        self.iter(range)?.collect()
    }

    /// Like `read`, one record at a time. The iterator ends after the first error.
    pub fn iter(&self, range: impl RangeBounds<Lsn>) -> Result<Iter<'_>> {
        self.check_readable()?;
        let (start, end) = self.resolve_range(range)?;
        Ok(Iter {
            wal: self,
            next: start,
            end,
            open: None,
        })
    }

    /// Removes every record with lsn >= `from`; the next append gets `from`. Durable when
    /// this returns. `from` must be in `[first_lsn(), next_lsn()]`.
    pub fn truncate_suffix(&mut self, from: Lsn) -> Result<()> {
        self.check_writable()?;
        if from < self.first_lsn() || from > self.next_lsn {
            return Err(self.out_of_range(from));
        }
        if from == self.next_lsn {
            return Ok(());
        }
        self.write_buffer()?;
        let result = self.truncate_suffix_on_disk(from);
        if let Err(error) = &result {
            // Segments may be half removed: only a reopen knows what is on disk now.
            self.poison(format!("truncate_suffix failed: {error}"));
        }
        self.invariants_full();
        result
    }

    /// Removes whole segments all of whose records are below `upto`; never the active one.
    /// Durable when this returns. `first_lsn()` then reports the first retained lsn.
    pub fn compact_prefix(&mut self, upto: Lsn) -> Result<()> {
        self.check_writable()?;
        while self.segments.len() > 1 && self.segments[0].next_lsn() <= upto {
            // Oldest first, each removal durable before the next: a crash leaves a
            // shorter prefix removed, never a hole.
            disk::remove_segment_file(&self.segments[0].path)?;
            self.segments.pop_front();
            if let Err(error) = disk::sync_dir(&self.dir) {
                self.poison(format!("directory fsync failed: {error}"));
                return Err(error);
            }
        }
        self.invariants_full();
        Ok(())
    }

    /// The first retained lsn (records below it were compacted away).
    pub fn first_lsn(&self) -> Lsn {
        self.segments
            .front()
            .expect("a segment is always active")
            .first_lsn
    }

    /// The lsn the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The last lsn known to be on stable storage (0 if none).
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// fdatasync calls made to make records durable (syncs and segment rollovers).
    pub fn syncs_total(&self) -> u64 {
        self.syncs_total
    }

    /// Whether an earlier failure made the WAL refuse writes.
    pub fn is_poisoned(&self) -> bool {
        self.poison.is_some()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &WalOptions {
        &self.options
    }

    /// The segment files, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let last = self.segments.len() - 1;
        let info = |(index, segment): (usize, &Segment)| SegmentInfo {
            path: segment.path.clone(),
            first_lsn: segment.first_lsn,
            next_lsn: segment.next_lsn(),
            bytes: segment.bytes,
            durable_bytes: if index == last {
                self.active.synced_bytes
            } else {
                segment.bytes
            },
        };
        self.segments.iter().enumerate().map(info).collect()
    }
}

/// Writing, syncing, rollover and poisoning.
impl Wal {
    fn check_writable(&self) -> Result<()> {
        match &self.poison {
            Some(poison) => Err(WalError::Poisoned {
                cause: poison.cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Reads are refused too once poisoned: the index may describe bytes that never
    /// reached the file.
    fn check_readable(&self) -> Result<()> {
        self.check_writable()
    }

    fn poison(&mut self, cause: String) {
        if self.poison.is_none() {
            self.poison = Some(Poison {
                cause,
                failed_sync: None,
            });
        }
    }

    fn fail_sync(&mut self, lsn: Lsn, error: io::Error) -> WalError {
        let source = Arc::new(error);
        self.poison(format!("fdatasync failed: {source}"));
        let poison = self.poison.as_mut().expect("just poisoned");
        if poison
            .failed_sync
            .as_ref()
            .is_none_or(|(covered, _)| *covered < lsn)
        {
            poison.failed_sync = Some((lsn, Arc::clone(&source)));
        }
        WalError::SyncFailed { lsn, source }
    }

    /// `None` if `lsn` is durable or may still become so; otherwise the error its caller
    /// gets: the failed fdatasync's own error if that sync covered `lsn`.
    pub(crate) fn sync_failure_for(&self, lsn: Lsn) -> Option<WalError> {
        if lsn <= self.durable_lsn {
            return None;
        }
        let poison = self.poison.as_ref()?;
        match &poison.failed_sync {
            Some((covered, source)) if lsn <= *covered => Some(WalError::SyncFailed {
                lsn: *covered,
                source: Arc::clone(source),
            }),
            _ => Some(WalError::Poisoned {
                cause: poison.cause.clone(),
            }),
        }
    }

    pub(crate) fn out_of_range(&self, lsn: Lsn) -> WalError {
        WalError::LsnOutOfRange {
            lsn,
            first_lsn: self.first_lsn(),
            next_lsn: self.next_lsn,
        }
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .back()
            .expect("a segment is always active")
            .path
            .clone()
    }

    /// Writes the buffer to the file. A failed write leaves an unknown prefix of it in the
    /// file, so the WAL is poisoned: appending after it would put good frames behind a bad
    /// one, which recovery must call corruption.
    fn write_buffer(&mut self) -> Result<()> {
        if self.active.buffer.is_empty() {
            return Ok(());
        }
        let written = disk::write_at(
            &self.active.file,
            &self.active.buffer,
            self.active.written_bytes,
        );
        if let Err(source) = written {
            let error = io_error("write", self.active_path(), source);
            self.poison(error.to_string());
            return Err(error);
        }
        self.active.written_bytes += self.active.buffer.len() as u64;
        self.active.buffer.clear();
        // One huge record must not pin its memory for the life of the WAL.
        self.active.buffer.shrink_to(WRITE_BUFFER_BYTES_MAX);
        Ok(())
    }

    /// Flushes and describes the sync to run. With `finish_sync`, lets a group-commit
    /// leader fdatasync without holding the lock appenders need.
    pub(crate) fn begin_sync(&mut self) -> Result<SyncTicket> {
        self.check_writable()?;
        self.write_buffer()?;
        Ok(SyncTicket {
            file: Arc::clone(&self.active.file),
            segment_first_lsn: self.active.first_lsn,
            lsn: self.next_lsn - 1,
            bytes: self.active.written_bytes,
        })
    }

    pub(crate) fn finish_sync(
        &mut self,
        ticket: SyncTicket,
        outcome: io::Result<()>,
    ) -> Result<Lsn> {
        assert!(ticket.lsn < self.next_lsn, "log truncated during a sync");
        if let Err(error) = outcome {
            return Err(self.fail_sync(ticket.lsn, error));
        }
        self.syncs_total += 1;
        // A rollover meanwhile synced the ticket's segment in full and moved on.
        if ticket.segment_first_lsn == self.active.first_lsn {
            self.active.synced_bytes = self.active.synced_bytes.max(ticket.bytes);
        }
        self.durable_lsn = self.durable_lsn.max(ticket.lsn);
        self.invariants();
        Ok(self.durable_lsn)
    }

    fn needs_rollover(&self, frame_bytes: u64) -> bool {
        let segment = self.segments.back().expect("a segment is always active");
        !segment.offsets.is_empty() && segment.bytes + frame_bytes > self.options.segment_bytes_max
    }

    /// Seals the active segment and starts the next one. The sealed segment is synced in
    /// full first: recovery treats a bad frame in any segment but the last as corruption,
    /// which is only sound if no earlier segment can have an unsynced tail.
    fn rollover(&mut self) -> Result<()> {
        self.write_buffer()?;
        let lsn = self.next_lsn - 1;
        if let Err(error) = disk::sync_data(&self.active.file) {
            return Err(self.fail_sync(lsn, error));
        }
        self.syncs_total += 1;
        self.active.synced_bytes = self.active.written_bytes;
        self.durable_lsn = lsn;
        // A failed create changes nothing visible, so the append may be retried.
        let (file, path) = disk::create_segment_file(&self.dir, self.next_lsn)?;
        if let Err(error) = disk::sync_dir(&self.dir) {
            self.poison(format!("directory fsync failed: {error}"));
            return Err(error);
        }
        self.segments.push_back(Segment::empty(self.next_lsn, path));
        self.active = Active::new(self.next_lsn, file, SEGMENT_HEADER_BYTES);
        Ok(())
    }

    fn truncate_suffix_on_disk(&mut self, from: Lsn) -> Result<()> {
        // Newest first, each removal durable before the next: a crash leaves a longer
        // log than asked for, never a hole.
        while self.segments.back().expect("segment").first_lsn > from {
            let removed = self.segments.pop_back().expect("segment");
            disk::remove_segment_file(&removed.path)?;
            disk::sync_dir(&self.dir)?;
        }
        let segment = self
            .segments
            .back_mut()
            .expect("from >= first_lsn keeps one segment");
        let (offset, _) = segment.frame_range(from);
        segment
            .offsets
            .truncate((from - segment.first_lsn) as usize);
        segment.bytes = offset;
        let (first_lsn, path) = (segment.first_lsn, segment.path.clone());
        if self.active.first_lsn != first_lsn {
            let file = disk::open_segment_for_append(&path)?;
            self.active = Active::new(first_lsn, file, offset);
        }
        self.active
            .file
            .set_len(offset)
            .map_err(|e| io_error("truncate segment", &path, e))?;
        disk::sync_data(&self.active.file).map_err(|e| io_error("fdatasync segment", &path, e))?;
        self.active.buffer.clear();
        self.active.written_bytes = offset;
        self.active.synced_bytes = offset;
        self.next_lsn = from;
        self.durable_lsn = self.durable_lsn.min(from - 1);
        Ok(())
    }
}

/// Reading.
impl Wal {
    fn resolve_range(&self, range: impl RangeBounds<Lsn>) -> Result<(Lsn, Lsn)> {
        let start = match range.start_bound() {
            Bound::Included(&lsn) => lsn,
            Bound::Excluded(&lsn) => lsn.saturating_add(1),
            Bound::Unbounded => self.first_lsn(),
        };
        let end = match range.end_bound() {
            Bound::Included(&lsn) => lsn.saturating_add(1),
            Bound::Excluded(&lsn) => lsn,
            Bound::Unbounded => self.next_lsn,
        };
        if start < self.first_lsn() {
            return Err(self.out_of_range(start));
        }
        Ok((start, end.min(self.next_lsn).max(start)))
    }

    fn segment_index(&self, lsn: Lsn) -> usize {
        let after = self
            .segments
            .partition_point(|segment| segment.first_lsn <= lsn);
        assert!(after > 0, "lsn {lsn} below first segment");
        after - 1
    }

    fn segment_file(&self, index: usize) -> Result<Arc<File>> {
        if index + 1 == self.segments.len() {
            return Ok(Arc::clone(&self.active.file));
        }
        let file = disk::open_segment_for_read(&self.segments[index].path)?;
        Ok(Arc::new(file))
    }

    fn read_record(&self, index: usize, file: &File, lsn: Lsn) -> Result<Vec<u8>> {
        let segment = &self.segments[index];
        let (offset, end) = segment.frame_range(lsn);
        let frame_bytes = (end - offset) as usize;
        let is_active = index + 1 == self.segments.len();
        if is_active && offset >= self.active.written_bytes {
            let start = (offset - self.active.written_bytes) as usize;
            let frame = self.active.buffer[start..start + frame_bytes].to_vec();
            return decode_frame(&segment.path, offset, frame);
        }
        let mut frame = vec![0u8; frame_bytes];
        file.read_exact_at(&mut frame, offset)
            .map_err(|e| io_error("read segment", &segment.path, e))?;
        decode_frame(&segment.path, offset, frame)
    }
}

/// Verifies a frame read back against both checksums and the index; returns the payload.
fn decode_frame(path: &Path, offset: u64, mut frame: Vec<u8>) -> Result<Vec<u8>> {
    let header_bytes: &[u8; FRAME_HEADER_BYTES as usize] = frame[..FRAME_HEADER_BYTES as usize]
        .try_into()
        .expect("frame holds a header");
    let header = format::decode_frame_header(header_bytes)
        .map_err(|reason| corrupt(path, offset, reason))?;
    if format::frame_bytes(u64::from(header.payload_bytes)) != frame.len() as u64 {
        return Err(corrupt(
            path,
            offset,
            "frame length disagrees with the index",
        ));
    }
    let payload = frame.split_off(FRAME_HEADER_BYTES as usize);
    format::verify_payload(header, &payload).map_err(|reason| corrupt(path, offset, reason))?;
    Ok(payload)
}

fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, e))?;
    // The new directory's own entry must survive a crash too.
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => disk::sync_dir(parent),
        _ => Ok(()),
    }
}

/// Invariants, checked after every mutation: O(1) ones always, full scans in debug builds.
impl Wal {
    fn invariants(&self) {
        let last = self.segments.back().expect("a segment is always active");
        assert_eq!(
            self.active.first_lsn, last.first_lsn,
            "active file is not the last segment"
        );
        assert_eq!(
            self.next_lsn,
            last.next_lsn(),
            "next_lsn disagrees with the index"
        );
        assert!(self.durable_lsn < self.next_lsn, "durable lsn past the log");
        assert!(
            self.active.synced_bytes <= self.active.written_bytes,
            "synced past written"
        );
        let buffered_bytes = self.active.buffer.len() as u64;
        assert_eq!(
            self.active.written_bytes + buffered_bytes,
            last.bytes,
            "buffer disagrees with index"
        );
    }

    fn invariants_full(&self) {
        if self.poison.is_some() {
            return;
        }
        self.invariants();
        if !cfg!(debug_assertions) {
            return;
        }
        for (index, segment) in self.segments.iter().enumerate() {
            let is_last = index + 1 == self.segments.len();
            assert!(
                is_last || !segment.offsets.is_empty(),
                "empty sealed segment"
            );
            assert!(segment.offsets.windows(2).all(|pair| pair[0] < pair[1]));
            if let Some(next) = self.segments.get(index + 1) {
                assert_eq!(
                    segment.next_lsn(),
                    next.first_lsn,
                    "lsn gap between segments"
                );
            }
        }
    }
}

/// Records of a range, read one at a time. Returned by `Wal::iter`.
pub struct Iter<'a> {
    wal: &'a Wal,
    next: Lsn,
    end: Lsn,
    /// The segment file being read, kept open across records.
    open: Option<(usize, Arc<File>)>,
}

impl Iter<'_> {
    fn read_one(&mut self, lsn: Lsn) -> Result<Vec<u8>> {
        let index = self.wal.segment_index(lsn);
        let file = match &self.open {
            Some((open_index, file)) if *open_index == index => Arc::clone(file),
            _ => {
                let file = self.wal.segment_file(index)?;
                self.open = Some((index, Arc::clone(&file)));
                file
            }
        };
        self.wal.read_record(index, &file, lsn)
    }
}

impl Iterator for Iter<'_> {
    type Item = Result<(Lsn, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let lsn = self.next;
        let result = self.read_one(lsn);
        self.next = if result.is_ok() { lsn + 1 } else { self.end };
        Some(result.map(|payload| (lsn, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(segment_bytes_max: u64) -> WalOptions {
        WalOptions {
            segment_bytes_max,
            record_bytes_max: 1024,
        }
    }

    fn payload(lsn: Lsn) -> Vec<u8> {
        format!("record {lsn}").into_bytes()
    }

    fn append_many(wal: &mut Wal, count: u64) {
        for _ in 0..count {
            let lsn = wal.next_lsn();
            assert_eq!(wal.append(&payload(lsn)).unwrap(), lsn);
        }
    }

    fn assert_records(wal: &Wal, first: Lsn, next: Lsn) {
        let records = wal.read(..).unwrap();
        let expected: Vec<_> = (first..next).map(|lsn| (lsn, payload(lsn))).collect();
        assert_eq!(records, expected);
    }

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn lsns_start_at_one_and_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(4096)).unwrap();
        assert_eq!(
            (wal.first_lsn(), wal.next_lsn(), wal.durable_lsn()),
            (1, 1, 0)
        );
        assert_eq!(wal.append(b"").unwrap(), 1);
        assert_eq!(wal.append(b"two").unwrap(), 2);
        assert_eq!(wal.durable_lsn(), 0);
        assert_eq!(
            wal.read(..).unwrap(),
            vec![(1, vec![]), (2, b"two".to_vec())]
        );
        assert_eq!(wal.sync().unwrap(), 2);
        assert_eq!(wal.syncs_total(), 1);
        assert_eq!(wal.sync().unwrap(), 2, "nothing new to sync");
        assert_eq!(wal.syncs_total(), 1);
        assert_eq!(
            wal.read(..).unwrap(),
            vec![(1, vec![]), (2, b"two".to_vec())]
        );
    }

    #[test]
    fn record_larger_than_limit_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(4096)).unwrap();
        wal.append(&[7u8; 1024]).unwrap();
        let error = wal.append(&[7u8; 1025]).unwrap_err();
        assert!(matches!(
            error,
            WalError::RecordTooLarge {
                bytes: 1025,
                record_bytes_max: 1024
            }
        ));
        assert_eq!(wal.next_lsn(), 2);
        assert!(!wal.is_poisoned());
    }

    #[test]
    fn invalid_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = Wal::open(dir.path(), options(10)).err().unwrap();
        assert!(matches!(error, WalError::InvalidOptions { .. }));
    }

    #[test]
    fn rollover_starts_named_segments_within_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        append_many(&mut wal, 20);
        // 24-byte header, 20-byte frames ("record N" + 12): three frames per segment.
        let segments = wal.segments();
        assert_eq!(segments.len(), 7);
        for pair in segments.windows(2) {
            assert_eq!(pair[0].next_lsn, pair[1].first_lsn);
            assert!(pair[0].bytes <= 100);
            assert_eq!(
                pair[0].durable_bytes, pair[0].bytes,
                "sealed segments are synced"
            );
        }
        assert_eq!(file_names(dir.path())[0], "00000000000000000001.wal");
        assert_eq!(file_names(dir.path())[1], "00000000000000000004.wal");
        // Each rollover synced the segment it sealed.
        assert_eq!(wal.durable_lsn(), 18);
        assert_eq!(wal.syncs_total(), 6);
        assert_records(&wal, 1, 21);
    }

    #[test]
    fn oversized_record_gets_a_segment_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        wal.append(b"small").unwrap();
        wal.append(&[1u8; 500]).unwrap();
        wal.append(b"small").unwrap();
        let segments = wal.segments();
        assert_eq!(segments.len(), 3);
        assert_eq!(segments[1].bytes, 24 + 12 + 500);
        assert_eq!(wal.read(2..3).unwrap(), vec![(2, vec![1u8; 500])]);
    }

    #[test]
    fn read_ranges_follow_range_bounds_and_clamp_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        append_many(&mut wal, 10);
        let lsns = |records: Vec<(Lsn, Vec<u8>)>| {
            records.into_iter().map(|(lsn, _)| lsn).collect::<Vec<_>>()
        };
        assert_eq!(lsns(wal.read(3..6).unwrap()), vec![3, 4, 5]);
        assert_eq!(lsns(wal.read(3..=6).unwrap()), vec![3, 4, 5, 6]);
        assert_eq!(lsns(wal.read(9..).unwrap()), vec![9, 10]);
        assert_eq!(lsns(wal.read(..3).unwrap()), vec![1, 2]);
        assert_eq!(lsns(wal.read(8..100).unwrap()), vec![8, 9, 10]);
        assert_eq!(lsns(wal.read(11..).unwrap()), Vec::<Lsn>::new());
        let reversed = (Bound::Included(6), Bound::Excluded(3));
        assert_eq!(lsns(wal.read(reversed).unwrap()), Vec::<Lsn>::new());
        let range = (Bound::Excluded(4), Bound::Excluded(7));
        assert_eq!(lsns(wal.read(range).unwrap()), vec![5, 6]);
        assert!(matches!(
            wal.read(0..),
            Err(WalError::LsnOutOfRange { lsn: 0, .. })
        ));
        let mut iter = wal.iter(2..4).unwrap();
        assert_eq!(iter.next().unwrap().unwrap(), (2, payload(2)));
        assert_eq!(iter.next().unwrap().unwrap(), (3, payload(3)));
        assert!(iter.next().is_none());
    }

    #[test]
    fn reads_cover_written_and_buffered_records() {
        let dir = tempfile::tempdir().unwrap();
        let big = WalOptions {
            segment_bytes_max: 64 << 20,
            record_bytes_max: 1 << 20,
        };
        let mut wal = Wal::open(dir.path(), big).unwrap();
        let record = vec![3u8; 300 << 10];
        for _ in 0..5 {
            wal.append(&record).unwrap();
        }
        // The write buffer overflowed, so some records are in the file, some in memory.
        assert!(wal.active.written_bytes > SEGMENT_HEADER_BYTES);
        assert!(!wal.active.buffer.is_empty());
        let records = wal.read(..).unwrap();
        assert_eq!(records.len(), 5);
        assert!(records.iter().all(|(_, payload)| *payload == record));
    }

    #[test]
    fn reopen_recovers_synced_records_and_continues_lsns() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        append_many(&mut wal, 10);
        wal.sync().unwrap();
        drop(wal);
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        assert_eq!(
            (wal.first_lsn(), wal.next_lsn(), wal.durable_lsn()),
            (1, 11, 10)
        );
        assert_records(&wal, 1, 11);
        append_many(&mut wal, 5);
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), options(100)).unwrap();
        assert_records(&wal, 1, 16);
    }

    #[test]
    fn truncate_suffix_inside_the_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(4096)).unwrap();
        append_many(&mut wal, 10);
        wal.sync().unwrap();
        wal.truncate_suffix(7).unwrap();
        assert_eq!((wal.next_lsn(), wal.durable_lsn()), (7, 6));
        assert_records(&wal, 1, 7);
        assert_eq!(wal.append(b"new seven").unwrap(), 7);
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), options(4096)).unwrap();
        assert_eq!(
            wal.read(6..).unwrap(),
            vec![(6, payload(6)), (7, b"new seven".to_vec())]
        );
    }

    #[test]
    fn truncate_suffix_across_segments_removes_later_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        append_many(&mut wal, 20);
        // lsn 5 is the second record of the second segment [4, 7).
        wal.truncate_suffix(5).unwrap();
        assert_eq!(wal.segments().len(), 2);
        assert_eq!(file_names(dir.path()).len(), 2);
        assert_records(&wal, 1, 5);
        append_many(&mut wal, 10);
        assert_records(&wal, 1, 15);
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), options(100)).unwrap();
        assert_records(&wal, 1, 15);
    }

    #[test]
    fn truncate_suffix_at_a_segment_start_and_of_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        append_many(&mut wal, 9);
        wal.truncate_suffix(4).unwrap();
        assert_eq!(
            wal.segments().len(),
            2,
            "segment starting at 4 stays, empty"
        );
        assert_records(&wal, 1, 4);
        wal.truncate_suffix(1).unwrap();
        assert_eq!(
            (wal.first_lsn(), wal.next_lsn(), wal.durable_lsn()),
            (1, 1, 0)
        );
        assert_eq!(wal.read(..).unwrap(), vec![]);
        append_many(&mut wal, 3);
        drop(wal);
        // Nothing was synced after the truncation, so nothing may come back but a prefix.
        let wal = Wal::open(dir.path(), options(100)).unwrap();
        assert!(wal.next_lsn() <= 4);
    }

    #[test]
    fn truncate_suffix_checks_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        append_many(&mut wal, 5);
        wal.truncate_suffix(6).unwrap();
        assert_eq!(wal.next_lsn(), 6);
        assert!(matches!(
            wal.truncate_suffix(7),
            Err(WalError::LsnOutOfRange { lsn: 7, .. })
        ));
        assert!(matches!(
            wal.truncate_suffix(0),
            Err(WalError::LsnOutOfRange { lsn: 0, .. })
        ));
        assert!(!wal.is_poisoned());
    }

    #[test]
    fn compact_prefix_removes_only_whole_sealed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        append_many(&mut wal, 10); // segments [1,4) [4,7) [7,10) [10,11)
        wal.compact_prefix(6).unwrap();
        assert_eq!(wal.first_lsn(), 4, "[4,7) holds 6, so it stays");
        wal.compact_prefix(7).unwrap();
        assert_eq!(wal.first_lsn(), 7);
        assert_records(&wal, 7, 11);
        assert!(matches!(wal.read(6..), Err(WalError::LsnOutOfRange { .. })));
        wal.compact_prefix(1000).unwrap();
        assert_eq!(wal.first_lsn(), 10, "never the active segment");
        assert_eq!(file_names(dir.path()), vec!["00000000000000000010.wal"]);
        wal.sync().unwrap();
        drop(wal);
        let mut wal = Wal::open(dir.path(), options(100)).unwrap();
        assert_eq!((wal.first_lsn(), wal.next_lsn()), (10, 11));
        assert_records(&wal, 10, 11);
        assert!(matches!(
            wal.truncate_suffix(9),
            Err(WalError::LsnOutOfRange { .. })
        ));
        wal.truncate_suffix(10).unwrap();
        assert_eq!((wal.first_lsn(), wal.next_lsn()), (10, 10));
    }

    #[test]
    fn open_creates_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("wal");
        let mut wal = Wal::open(&nested, options(4096)).unwrap();
        wal.append(b"x").unwrap();
        wal.sync().unwrap();
        assert_eq!(file_names(&nested), vec!["00000000000000000001.wal"]);
    }
}
