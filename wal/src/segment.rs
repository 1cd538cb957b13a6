//! One segment file: its in-memory index and the scan that rebuilds the index on open.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::disk;
use crate::error::{corrupt, io_error, Result};
use crate::format::{self, FrameHeader, Reason, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::Lsn;

/// Read buffer for scanning a segment on open; large enough that a scan is sequential I/O.
const SCAN_BUFFER_BYTES: usize = 1 << 20;

/// Where each record of a segment lives, so reads seek straight to it.
#[derive(Debug)]
pub struct Segment {
    pub first_lsn: Lsn,
    pub path: PathBuf,
    /// Byte offset of each record's frame; `offsets[i]` holds lsn `first_lsn + i`.
    pub offsets: Vec<u64>,
    /// Length of the segment: header plus every frame, including bytes still buffered.
    pub bytes: u64,
}

impl Segment {
    pub fn empty(first_lsn: Lsn, path: PathBuf) -> Segment {
        Segment {
            first_lsn,
            path,
            offsets: Vec::new(),
            bytes: SEGMENT_HEADER_BYTES,
        }
    }

    /// The lsn one past this segment's last record.
    pub fn next_lsn(&self) -> Lsn {
        self.first_lsn + self.offsets.len() as u64
    }

    /// Byte range `[start, end)` of the frame holding `lsn`.
    pub fn frame_range(&self, lsn: Lsn) -> (u64, u64) {
        assert!(
            lsn >= self.first_lsn,
            "lsn {lsn} before segment {}",
            self.first_lsn
        );
        assert!(
            lsn < self.next_lsn(),
            "lsn {lsn} past segment end {}",
            self.next_lsn()
        );
        let index = (lsn - self.first_lsn) as usize;
        let start = self.offsets[index];
        let end = self.offsets.get(index + 1).copied().unwrap_or(self.bytes);
        (start, end)
    }
}

/// Why a scan stopped before the end of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// The frame ends past end-of-file: what a crash in the middle of a write leaves.
    Incomplete(Reason),
    /// The frame is all there but fails a check.
    Invalid(Reason),
}

#[derive(Debug)]
pub struct Stop {
    pub offset: u64,
    pub cause: StopCause,
}

/// What a segment holds: every record before the first bad frame, and that frame, if any.
#[derive(Debug)]
pub struct Scan {
    pub segment: Segment,
    pub file_bytes: u64,
    pub stop: Option<Stop>,
}

enum FrameScan {
    End,
    Record(u64),
    Stop(StopCause),
}

/// Reads the segment front to back, verifying every checksum. Judging a stop (torn tail or
/// corruption) is left to the caller, which knows whether this is the last segment.
pub fn scan_segment(path: &Path, name_lsn: Lsn, record_bytes_max: u32) -> Result<Scan> {
    let file = disk::open_segment_for_read(path)?;
    let file_bytes = file
        .metadata()
        .map_err(|e| io_error("stat segment", path, e))?
        .len();
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
    let first_lsn = read_segment_header(&mut reader, path, name_lsn, file_bytes)?;
    let mut segment = Segment::empty(first_lsn, path.to_path_buf());
    let mut payload = Vec::new();
    loop {
        let scanned = scan_frame(
            &mut reader,
            segment.bytes,
            file_bytes,
            record_bytes_max,
            &mut payload,
        )
        .map_err(|e| io_error("read segment", path, e))?;
        match scanned {
            FrameScan::End => break,
            FrameScan::Record(frame_bytes) => {
                segment.offsets.push(segment.bytes);
                segment.bytes += frame_bytes;
            }
            FrameScan::Stop(cause) => {
                let stop = Stop {
                    offset: segment.bytes,
                    cause,
                };
                return Ok(Scan {
                    segment,
                    file_bytes,
                    stop: Some(stop),
                });
            }
        }
    }
    Ok(Scan {
        segment,
        file_bytes,
        stop: None,
    })
}

fn read_segment_header(
    reader: &mut BufReader<File>,
    path: &Path,
    name_lsn: Lsn,
    file_bytes: u64,
) -> Result<Lsn> {
    // Segments are renamed into place only once their header is durable, so a short or bad
    // header is never a torn write.
    if file_bytes < SEGMENT_HEADER_BYTES {
        return Err(corrupt(path, 0, "segment shorter than its header"));
    }
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    reader
        .read_exact(&mut header)
        .map_err(|e| io_error("read segment", path, e))?;
    let first_lsn =
        format::decode_segment_header(&header).map_err(|reason| corrupt(path, 0, reason))?;
    if first_lsn != name_lsn {
        let reason =
            format!("segment header says first lsn {first_lsn}, file name says {name_lsn}");
        return Err(corrupt(path, 0, reason));
    }
    Ok(first_lsn)
}

fn scan_frame(
    reader: &mut BufReader<File>,
    offset: u64,
    file_bytes: u64,
    record_bytes_max: u32,
    payload: &mut Vec<u8>,
) -> io::Result<FrameScan> {
    let remaining_bytes = file_bytes - offset;
    if remaining_bytes == 0 {
        return Ok(FrameScan::End);
    }
    if remaining_bytes < FRAME_HEADER_BYTES {
        return Ok(FrameScan::Stop(StopCause::Incomplete(
            "frame header cut short",
        )));
    }
    let mut header_bytes = [0u8; FRAME_HEADER_BYTES as usize];
    reader.read_exact(&mut header_bytes)?;
    let header: FrameHeader = match format::decode_frame_header(&header_bytes) {
        Ok(header) => header,
        Err(reason) => return Ok(FrameScan::Stop(StopCause::Invalid(reason))),
    };
    // Checked before allocating: the limit bounds the memory a scan can ask for.
    if header.payload_bytes > record_bytes_max {
        return Ok(FrameScan::Stop(StopCause::Invalid(
            "frame length exceeds record_bytes_max",
        )));
    }
    let frame_bytes = format::frame_bytes(u64::from(header.payload_bytes));
    if frame_bytes > remaining_bytes {
        return Ok(FrameScan::Stop(StopCause::Incomplete("payload cut short")));
    }
    payload.resize(header.payload_bytes as usize, 0);
    reader.read_exact(payload)?;
    if let Err(reason) = format::verify_payload(header, payload) {
        return Ok(FrameScan::Stop(StopCause::Invalid(reason)));
    }
    Ok(FrameScan::Record(frame_bytes))
}

/// True if every byte of the file from `offset` to `file_bytes` is zero.
pub fn is_zero_from(path: &Path, offset: u64, file_bytes: u64) -> Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut file = disk::open_segment_for_read(path)?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_error("seek segment", path, e))?;
    let mut reader = file.take(file_bytes - offset);
    let mut chunk = vec![0u8; SCAN_BUFFER_BYTES];
    loop {
        let read_bytes = reader
            .read(&mut chunk)
            .map_err(|e| io_error("read segment", path, e))?;
        if read_bytes == 0 {
            return Ok(true);
        }
        if chunk[..read_bytes].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}
