//! A segmented, checksummed, group-commit write-ahead log of byte records.
//!
//! Records are opaque byte strings numbered by a [`Lsn`]: consecutive `u64`s, the first
//! record ever is 1. The log lives in one directory as a series of segment files.
//!
//! # Usage
//!
//! ```
//! use paxkv_wal::{SharedWal, Wal, WalOptions};
//!
//! # fn main() -> paxkv_wal::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut wal = Wal::open(dir.path(), WalOptions::default())?;
//! let first = wal.append(b"put x 1")?;
//! let second = wal.append(b"put y 2")?;
//! assert_eq!(wal.sync()?, second); // both durable after one fdatasync
//! assert_eq!(wal.read(first..=second)?[1], (second, b"put y 2".to_vec()));
//!
//! wal.truncate_suffix(second)?; // drop a conflicting suffix; `second` is reused
//! assert_eq!(wal.next_lsn(), second);
//! drop(wal);
//!
//! // Group commit: each caller blocks until its record is durable, and concurrent
//! // callers share fdatasyncs.
//! let wal = SharedWal::open(dir.path(), WalOptions::default())?;
//! let writers: Vec<_> = (0..4)
//!     .map(|i| {
//!         let wal = wal.clone();
//!         std::thread::spawn(move || wal.append_durable(format!("put k{i} v").as_bytes()))
//!     })
//!     .collect();
//! for writer in writers {
//!     let lsn = writer.join().unwrap()?;
//!     assert!(lsn <= wal.durable_lsn());
//! }
//! assert_eq!(wal.read(..)?.len(), 5);
//! # Ok(())
//! # }
//! ```
//!
//! # On-disk format
//!
//! Segment files are named after the first lsn they hold, zero-padded to 20 digits
//! (`00000000000000000001.wal`), so names sort like lsns. Each starts with a 24-byte
//! header: magic `PAXKVWAL`, format version (u32), first lsn (u64) and a CRC32C of those.
//! Frames follow back to back:
//!
//! ```text
//! payload_bytes u32 | payload_crc u32 | header_crc u32 | payload
//! payload_crc = crc32c(payload_bytes as 4 LE bytes ++ payload)
//! header_crc  = crc32c(payload_bytes ++ payload_crc)
//! ```
//!
//! All integers are little-endian. The header checksum exists so that a corrupt length is
//! caught *before* it is used: otherwise a length flipped to point past end-of-file would
//! look just like a torn write and recovery would cut off durable records behind it.
//!
//! A new segment is started when the next frame would take the active one past
//! [`WalOptions::segment_bytes_max`]. Before that, the active segment is fdatasynced in
//! full; the new segment's header is written to a temporary file, fdatasynced, renamed into
//! place and the directory fsynced. So every segment but the last is complete on disk, and
//! no segment file ever exists without a whole header. Removing segments (compaction,
//! truncation) fsyncs the directory after each file, in an order that never leaves a gap.
//!
//! # Recovery
//!
//! [`Wal::open`] scans every segment, verifying every checksum, and:
//! - cuts off a **torn tail** of the last segment: a final frame that runs past
//!   end-of-file (a short header or a short payload), which is what a crash in the middle
//!   of a write leaves. The file is truncated there and fdatasynced.
//! - cuts off a **zero-filled tail** of the last segment: a frame that fails its checksum
//!   where it and everything after it are zero bytes (a file system persisted the size
//!   but not the data). A zeroed frame header never passes its checksum, so this region is
//!   never read as records.
//! - fails with [`WalError::Corrupt`] naming the file and byte offset for everything else:
//!   a complete frame with a bad checksum (even as the very last frame: the bytes were all
//!   written, so a crash does not explain them), a bad frame followed by any non-zero
//!   byte, a short or bad frame in any segment but the last, a bad segment header, or a
//!   gap between segments' lsns. Nothing is dropped silently.
//!
//! What was recovered is fdatasynced before `open` returns, so
//! [`durable_lsn`](Wal::durable_lsn) starts at the last recovered lsn. Stray temporary
//! files from an interrupted segment creation are removed.
//!
//! # Durability and errors
//!
//! [`Wal::append`] buffers (up to [`WRITE_BUFFER_BYTES_MAX`]); a record is durable once
//! [`Wal::sync`] has returned an lsn at least its own, or [`Wal::durable_lsn`] covers it
//! (rollovers sync too). Dropping a `Wal` writes nothing: buffered records are lost, as in
//! a crash, so sync before closing. If a write or an fdatasync fails, the WAL is
//! **poisoned** and refuses every further read and write with [`WalError::Poisoned`]:
//! after a failed fdatasync the kernel may have dropped the dirty pages, so a retry that
//! succeeds would claim durability for data that is gone (as PostgreSQL learned). Reopen
//! the directory to continue from what is really on disk. A failed segment creation before
//! its rename changes nothing and does not poison.
//!
//! # Group commit
//!
//! [`SharedWal`] wraps a `Wal` in a mutex and a condition variable. Its contract:
//! [`append_durable`](SharedWal::append_durable) (or `append` then
//! [`sync_to`](SharedWal::sync_to)) returns `Ok` only when the record is durable; it
//! returns at once if it already is; a caller that finds a sync running waits for it; a
//! caller that finds none becomes the leader, flushes the buffer under the lock and runs
//! fdatasync without it, so other threads append meanwhile and are covered by the next
//! round. Every caller whose record a failed fdatasync covered gets that failure
//! ([`WalError::SyncFailed`]); later callers get `Poisoned`.
//! [`syncs_total`](SharedWal::syncs_total) counts fdatasyncs. The one fdatasync that does
//! run under the lock is a rollover's, once per segment.
//!
//! # Fault injection
//!
//! With the `failpoints` feature, the [`fail`](https://docs.rs/fail) crate's fault points
//! `wal::write` (`return`, or `return(torn)` to write half the bytes and then fail),
//! `wal::fsync`, `wal::create_segment` and `wal::dir_sync` sit on the matching system
//! calls. Without the feature they compile to nothing.
//!
//! # Not provided
//!
//! No lock against two processes opening one directory, and no preallocation.

mod disk;
mod error;
mod format;
mod recovery;
mod segment;
mod shared;
mod wal;

pub use error::{Result, WalError};
pub use format::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
pub use shared::SharedWal;
pub use wal::{Iter, SegmentInfo, Wal, WalOptions, WRITE_BUFFER_BYTES_MAX};

/// Log sequence number: the number of a record, not a byte offset. The first record is 1.
pub type Lsn = u64;
