//! The snapshot file: one self-checking file that carries a RocksDB checkpoint.
//!
//! ```text
//! header   "PAXKVSNP" | format u32 | slot u64 | version u64 | files u32
//! file     name_len u16 | name | bytes u64 | chunk* (until `bytes` are covered)
//! chunk    raw_len u32 | packed_len u32 | crc32c(packed) u32 | packed (zstd of raw)
//! trailer  "PAXKVEND"
//! checksum crc32c of every byte before it, u32
//! ```
//!
//! Integers are little-endian. The same bytes are what a leader streams to a replica that
//! fell behind its compacted log and what `paxkv backup` downloads, so each chunk is
//! checked as it is unpacked and the whole file by its last four bytes, which are also the
//! `checksum` a `SnapshotInfo` names.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{sync_dir, SnapshotError, SnapshotInfo};

const MAGIC: &[u8; 8] = b"PAXKVSNP";
const TRAILER: &[u8; 8] = b"PAXKVEND";
const FORMAT: u32 = 1;
/// Raw bytes per chunk.
pub const CHUNK_BYTES: usize = 1 << 20;
/// zstd level: fast; checkpoints of SST files (already LZ4-compressed) gain little more.
const LEVEL: i32 = 1;
const NAME_BYTES_MAX: usize = 255;

/// Writes the checkpoint in `checkpoint` (a directory of plain files) as a snapshot file at
/// `out`, durably: written to a temporary name, fsynced, renamed, directory fsynced.
pub fn pack(
    checkpoint: &Path,
    slot: u64,
    version: u64,
    out: &Path,
) -> Result<SnapshotInfo, SnapshotError> {
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(checkpoint)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            return Err(SnapshotError::Corrupt(format!(
                "checkpoint {} holds a non-file {:?}",
                checkpoint.display(),
                entry.file_name()
            )));
        }
        let name = entry.file_name().into_string().map_err(|name| {
            SnapshotError::Corrupt(format!("checkpoint file name {name:?} is not UTF-8"))
        })?;
        names.push(name);
    }
    names.sort();
    let temporary = temporary_path(out);
    let file = File::create(&temporary)?;
    let mut writer = Checked::new(BufWriter::new(file));
    writer.write_all(MAGIC)?;
    writer.write_all(&FORMAT.to_le_bytes())?;
    writer.write_all(&slot.to_le_bytes())?;
    writer.write_all(&version.to_le_bytes())?;
    writer.write_all(
        &u32::try_from(names.len())
            .expect("files fit u32")
            .to_le_bytes(),
    )?;
    let mut raw = vec![0u8; CHUNK_BYTES];
    for name in &names {
        let mut input = File::open(checkpoint.join(name))?;
        let bytes = input.metadata()?.len();
        writer.write_all(&u16::try_from(name.len()).expect("short name").to_le_bytes())?;
        writer.write_all(name.as_bytes())?;
        writer.write_all(&bytes.to_le_bytes())?;
        let mut left = bytes;
        while left > 0 {
            let take = usize::try_from(left.min(CHUNK_BYTES as u64)).expect("chunk fits usize");
            input.read_exact(&mut raw[..take])?;
            let packed = zstd::bulk::compress(&raw[..take], LEVEL)?;
            writer.write_all(&(take as u32).to_le_bytes())?;
            writer.write_all(&(packed.len() as u32).to_le_bytes())?;
            writer.write_all(&crc32c::crc32c(&packed).to_le_bytes())?;
            writer.write_all(&packed)?;
            left -= take as u64;
        }
    }
    writer.write_all(TRAILER)?;
    let checksum = writer.crc;
    let mut inner = writer.into_inner();
    inner.write_all(&checksum.to_le_bytes())?;
    let file = inner.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    fs::rename(&temporary, out)?;
    sync_dir(out.parent().unwrap_or(Path::new(".")))?;
    Ok(SnapshotInfo {
        slot,
        version,
        bytes,
        checksum,
        path: out.to_path_buf(),
    })
}

/// Reads and checks the whole file: header, every chunk's checksum and decompression, the
/// trailer and the whole-file checksum.
pub fn verify(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    walk(path, None)
}

/// Checks the file as `verify` does and writes the checkpoint it carries into `dest`
/// (created; must not exist), every file and the directory fsynced.
pub fn unpack(path: &Path, dest: &Path) -> Result<SnapshotInfo, SnapshotError> {
    fs::create_dir(dest)?;
    let result = walk(path, Some(dest));
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn walk(path: &Path, dest: Option<&Path>) -> Result<SnapshotInfo, SnapshotError> {
    let file = File::open(path)?;
    let bytes = file.metadata()?.len();
    if bytes < 8 + 4 + 8 + 8 + 4 + 8 + 4 {
        return Err(corrupt(path, "shorter than an empty snapshot"));
    }
    let mut reader = Checked::new(BufReader::new(file).take(bytes - 4));
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(corrupt(path, "not a paxkv snapshot (bad magic)"));
    }
    let format = read_u32(&mut reader)?;
    if format != FORMAT {
        return Err(corrupt(
            path,
            &format!("format {format}, expected {FORMAT}"),
        ));
    }
    let slot = read_u64(&mut reader)?;
    let version = read_u64(&mut reader)?;
    let files = read_u32(&mut reader)?;
    let mut packed = Vec::new();
    for _ in 0..files {
        let name_len = usize::from(read_u16(&mut reader)?);
        if name_len == 0 || name_len > NAME_BYTES_MAX {
            return Err(corrupt(path, "bad file name length"));
        }
        let mut name = vec![0u8; name_len];
        reader.read_exact(&mut name)?;
        let name = String::from_utf8(name).map_err(|_| corrupt(path, "file name not UTF-8"))?;
        if name.contains('/') || name == "." || name == ".." || name.contains('\0') {
            return Err(corrupt(
                path,
                &format!("file name {name:?} is not a plain name"),
            ));
        }
        let file_bytes = read_u64(&mut reader)?;
        let mut output = match dest {
            Some(dest) => Some(BufWriter::new(File::create_new(dest.join(&name))?)),
            None => None,
        };
        let mut left = file_bytes;
        while left > 0 {
            let raw_len = read_u32(&mut reader)? as usize;
            let packed_len = read_u32(&mut reader)? as usize;
            let crc = read_u32(&mut reader)?;
            if raw_len == 0 || raw_len > CHUNK_BYTES || raw_len as u64 > left {
                return Err(corrupt(
                    path,
                    &format!("chunk of {raw_len} bytes in {name}"),
                ));
            }
            if packed_len > zstd::zstd_safe::compress_bound(CHUNK_BYTES) {
                return Err(corrupt(
                    path,
                    &format!("packed chunk of {packed_len} bytes"),
                ));
            }
            packed.resize(packed_len, 0);
            reader.read_exact(&mut packed)?;
            if crc32c::crc32c(&packed) != crc {
                return Err(corrupt(path, &format!("chunk checksum mismatch in {name}")));
            }
            let raw = zstd::bulk::decompress(&packed, raw_len).map_err(|error| {
                corrupt(
                    path,
                    &format!("chunk of {name} does not decompress: {error}"),
                )
            })?;
            if raw.len() != raw_len {
                return Err(corrupt(
                    path,
                    &format!("chunk of {name} decompresses to the wrong size"),
                ));
            }
            if let Some(output) = output.as_mut() {
                output.write_all(&raw)?;
            }
            left -= raw_len as u64;
        }
        if let Some(output) = output {
            let file = output.into_inner().map_err(|error| error.into_error())?;
            file.sync_all()?;
        }
    }
    let mut trailer = [0u8; 8];
    reader.read_exact(&mut trailer)?;
    if &trailer != TRAILER {
        return Err(corrupt(path, "bad trailer"));
    }
    let checksum = reader.crc;
    let mut rest = reader.into_inner();
    let mut extra = [0u8; 1];
    if rest.read(&mut extra)? != 0 {
        return Err(corrupt(path, "bytes after the trailer"));
    }
    let mut buffered = rest.into_inner();
    let mut stored = [0u8; 4];
    buffered.read_exact(&mut stored)?;
    if u32::from_le_bytes(stored) != checksum {
        return Err(corrupt(path, "whole-file checksum mismatch"));
    }
    if let Some(dest) = dest {
        sync_dir(dest)?;
    }
    Ok(SnapshotInfo {
        slot,
        version,
        bytes,
        checksum,
        path: path.to_path_buf(),
    })
}

fn corrupt(path: &Path, what: &str) -> SnapshotError {
    SnapshotError::Corrupt(format!("{}: {what}", path.display()))
}

fn temporary_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    out.with_file_name(name)
}

fn read_u16(reader: &mut impl Read) -> io::Result<u16> {
    let mut bytes = [0u8; 2];
    reader.read_exact(&mut bytes)?;
    Ok(u16::from_le_bytes(bytes))
}

fn read_u32(reader: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64(reader: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    reader.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// A reader or writer that keeps the CRC32C of every byte through it.
struct Checked<T> {
    inner: T,
    crc: u32,
}

impl<T> Checked<T> {
    fn new(inner: T) -> Checked<T> {
        Checked { inner, crc: 0 }
    }

    fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: Write> Write for Checked<T> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, &bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Checked<T> {
    fn read(&mut self, bytes: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, &bytes[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(dir: &Path) -> PathBuf {
        let checkpoint = dir.join("checkpoint");
        fs::create_dir(&checkpoint).unwrap();
        fs::write(checkpoint.join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        fs::write(checkpoint.join("empty.log"), b"").unwrap();
        // Larger than a chunk, and not a multiple of it.
        let big: Vec<u8> = (0..CHUNK_BYTES * 2 + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        fs::write(checkpoint.join("000012.sst"), big).unwrap();
        checkpoint
    }

    #[test]
    fn a_packed_checkpoint_verifies_and_unpacks_to_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        let source = checkpoint(dir.path());
        let out = dir.path().join("snap.pxs");
        let info = pack(&source, 41, 17, &out).unwrap();
        assert_eq!((info.slot, info.version), (41, 17));
        assert_eq!(info.bytes, fs::metadata(&out).unwrap().len());
        assert_eq!(verify(&out).unwrap(), info);
        let dest = dir.path().join("unpacked");
        assert_eq!(unpack(&out, &dest).unwrap(), info);
        for name in ["CURRENT", "empty.log", "000012.sst"] {
            assert_eq!(
                fs::read(dest.join(name)).unwrap(),
                fs::read(source.join(name)).unwrap()
            );
        }
        assert!(!temporary_path(&out).exists());
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("small");
        fs::create_dir(&source).unwrap();
        fs::write(source.join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        fs::write(source.join("000007.sst"), vec![3u8; 3000]).unwrap();
        let out = dir.path().join("snap.pxs");
        pack(&source, 9, 4, &out).unwrap();
        let good = fs::read(&out).unwrap();
        let bad = dir.path().join("bad.pxs");
        for index in 0..good.len() {
            let mut bytes = good.clone();
            bytes[index] ^= 0x20;
            fs::write(&bad, &bytes).unwrap();
            assert!(verify(&bad).is_err(), "a flipped byte {index} passed");
            let dest = dir.path().join(format!("dest-{index}"));
            assert!(unpack(&bad, &dest).is_err());
            assert!(!dest.exists(), "a refused unpack left its directory");
        }
        for length in 0..good.len() {
            fs::write(&bad, &good[..length]).unwrap();
            assert!(verify(&bad).is_err(), "a file cut at {length} passed");
        }
        let mut longer = good.clone();
        longer.push(0);
        fs::write(&bad, &longer).unwrap();
        assert!(verify(&bad).is_err());
    }
}
