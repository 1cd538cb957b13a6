//! The on-disk layout. Pure functions over bytes, no I/O, so every check is testable alone.
//!
//! ```text
//! segment file  = segment header | frame*
//! segment header (24 B) = magic "PAXKVWAL" | version u32 | first_lsn u64 | crc32c(previous 20 B) u32
//! frame (12 B + payload) = payload_bytes u32 | payload_crc u32 | header_crc u32 | payload
//!   payload_crc = crc32c(payload_bytes as 4 LE bytes ++ payload)
//!   header_crc  = crc32c(first 8 bytes of the frame)
//! ```
//! All integers are little-endian.

use crate::Lsn;

pub const SEGMENT_MAGIC: [u8; 8] = *b"PAXKVWAL";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: u64 = 24;
pub const FRAME_HEADER_BYTES: u64 = 12;

/// Why a segment header or frame was rejected; becomes `WalError::Corrupt::reason`.
pub type Reason = &'static str;

pub fn encode_segment_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    assert!(first_lsn >= 1, "lsns start at 1");
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Returns the segment's first lsn. Checks the checksum before trusting any field.
pub fn decode_segment_header(header: &[u8; SEGMENT_HEADER_BYTES as usize]) -> Result<Lsn, Reason> {
    if crc32c::crc32c(&header[0..20]) != read_u32(header, 20) {
        return Err("segment header checksum mismatch");
    }
    if header[0..8] != SEGMENT_MAGIC {
        return Err("segment header magic mismatch");
    }
    if read_u32(header, 8) != SEGMENT_VERSION {
        return Err("unsupported segment version");
    }
    let first_lsn = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    if first_lsn == 0 {
        return Err("segment header first lsn is 0");
    }
    Ok(first_lsn)
}

/// Bytes a payload of `payload_bytes` occupies on disk.
pub fn frame_bytes(payload_bytes: u64) -> u64 {
    FRAME_HEADER_BYTES + payload_bytes
}

/// Appends the frame for `payload` to `out`. The caller has checked `record_bytes_max`,
/// which is a u32, so the length always fits.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let payload_bytes =
        u32::try_from(payload.len()).expect("payload length checked against record_bytes_max");
    let length = payload_bytes.to_le_bytes();
    let payload_crc = crc32c::crc32c_append(crc32c::crc32c(&length), payload);
    let mut header = [0u8; FRAME_HEADER_BYTES as usize];
    header[0..4].copy_from_slice(&length);
    header[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[0..8]);
    header[8..12].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// A frame header whose own checksum matched, so its length can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_bytes: u32,
    pub payload_crc: u32,
}

pub fn decode_frame_header(
    header: &[u8; FRAME_HEADER_BYTES as usize],
) -> Result<FrameHeader, Reason> {
    // The length gets its own checksum so that a flipped length bit is caught before the
    // length is used: otherwise a corrupt length pointing past end-of-file would look exactly
    // like a record torn by a crash and durable records after it would be cut off.
    if crc32c::crc32c(&header[0..8]) != read_u32(header, 8) {
        return Err("frame header checksum mismatch");
    }
    Ok(FrameHeader {
        payload_bytes: read_u32(header, 0),
        payload_crc: read_u32(header, 4),
    })
}

pub fn verify_payload(header: FrameHeader, payload: &[u8]) -> Result<(), Reason> {
    assert_eq!(payload.len() as u64, u64::from(header.payload_bytes));
    let length = header.payload_bytes.to_le_bytes();
    if crc32c::crc32c_append(crc32c::crc32c(&length), payload) != header.payload_crc {
        return Err("payload checksum mismatch");
    }
    Ok(())
}

/// `00000000000000000001.wal`: the first lsn, zero-padded so names sort like lsns.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.wal")
}

pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Name of the file a segment is written under before its header is durable.
pub fn temporary_file_name(first_lsn: Lsn) -> String {
    format!("{}.tmp", segment_file_name(first_lsn))
}

pub fn is_temporary_file_name(name: &str) -> bool {
    name.strip_suffix(".tmp")
        .and_then(parse_segment_file_name)
        .is_some()
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
        out
    }

    fn header_of(frame: &[u8]) -> [u8; 12] {
        frame[..12].try_into().unwrap()
    }

    #[test]
    fn frame_round_trips() {
        for payload in [&b""[..], b"x", b"hello world", &[0u8; 300]] {
            let bytes = frame(payload);
            assert_eq!(bytes.len() as u64, frame_bytes(payload.len() as u64));
            let header = decode_frame_header(&header_of(&bytes)).unwrap();
            assert_eq!(header.payload_bytes as usize, payload.len());
            verify_payload(header, &bytes[12..]).unwrap();
        }
    }

    #[test]
    fn every_single_byte_flip_in_a_frame_is_caught() {
        let bytes = frame(b"some payload bytes");
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            let caught = match decode_frame_header(&header_of(&bad)) {
                Err(_) => true,
                Ok(header) => verify_payload(header, &bad[12..]).is_err(),
            };
            assert!(caught, "flip at byte {at} not detected");
        }
    }

    #[test]
    fn zeroed_frame_header_is_invalid() {
        // So a zero-filled tail is never mistaken for an empty record.
        assert!(decode_frame_header(&[0u8; 12]).is_err());
    }

    #[test]
    fn segment_header_round_trips_and_catches_flips() {
        let header = encode_segment_header(42);
        assert_eq!(decode_segment_header(&header), Ok(42));
        for at in 0..header.len() {
            let mut bad = header;
            bad[at] ^= 0x80;
            assert!(
                decode_segment_header(&bad).is_err(),
                "flip at byte {at} not detected"
            );
        }
    }

    #[test]
    fn segment_file_names_sort_like_lsns() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_file_name("00000000000000000001.wal"), Some(1));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("1.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.wal"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000001.wal.tmp"),
            None
        );
        assert!(is_temporary_file_name("00000000000000000001.wal.tmp"));
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}
