//! The framed transport's codec: pure functions over bytes, no I/O, no allocation.
//!
//! A frame is a 4-byte big-endian signed length followed by that many bytes of one Thrift
//! message. Every check happens here, before anything is allocated or parsed: the length
//! against `frame_bytes_max`, then the first byte of the body against the two protocols the
//! server speaks.
use super::error::{Error, Result};

/// Bytes of the length prefix in front of every frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// The largest `frame_bytes_max` that can be configured: Thrift frame lengths are signed
/// 32-bit integers on the wire.
pub const FRAME_BYTES_MAX_LIMIT: u32 = i32::MAX as u32;

/// First byte of a strict binary-protocol message (the high byte of version 0x8001).
pub const BINARY_FIRST_BYTE: u8 = 0x80;

/// First byte of a compact-protocol message (its protocol id).
pub const COMPACT_FIRST_BYTE: u8 = 0x82;

/// The Thrift protocols paxkv speaks. The server detects it per frame and replies in kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TBinaryProtocol, strict (messages carry the 0x8001 version header).
    Binary,
    /// TCompactProtocol.
    Compact,
}

/// Checks a frame header and returns the body length it announces.
///
/// A length <= 0 or > `frame_bytes_max` is an error, so a caller never allocates for it.
pub fn frame_length(header: [u8; FRAME_HEADER_BYTES], frame_bytes_max: u32) -> Result<usize> {
    let length = i32::from_be_bytes(header);
    // Non-negative after the first test, so the cast to u32 is exact.
    if length <= 0 || length as u32 > frame_bytes_max {
        return Err(Error::FrameLength {
            length,
            frame_bytes_max,
        });
    }
    Ok(length as usize)
}

/// Tells which protocol a frame body is in from its first byte.
pub fn detect_protocol(body: &[u8]) -> Result<Protocol> {
    // An empty body never gets here (frame_length rejects 0); treat it as an unknown byte
    // rather than panic, so this stays total.
    let first_byte = body.first().copied().unwrap_or(0);
    match first_byte {
        BINARY_FIRST_BYTE => Ok(Protocol::Binary),
        COMPACT_FIRST_BYTE => Ok(Protocol::Compact),
        _ => Err(Error::ProtocolUnknown { first_byte }),
    }
}

/// A buffer for a reply: room for the header, which `seal_frame` fills in once the body has
/// been written after it (so the body is never copied).
pub fn reply_buffer() -> Vec<u8> {
    vec![0; FRAME_HEADER_BYTES]
}

/// Writes the length of the body that follows the header slot into the header slot.
///
/// Fails if the body is larger than `frame_bytes_max`: a peer with the same limit would
/// refuse it, and sending it anyway would only move the failure to the client.
pub fn seal_frame(frame: &mut [u8], frame_bytes_max: u32) -> Result<()> {
    assert!(
        frame.len() >= FRAME_HEADER_BYTES,
        "a frame buffer starts with its header slot (reply_buffer)"
    );
    let body_bytes = frame.len() - FRAME_HEADER_BYTES;
    let length = match u32::try_from(body_bytes) {
        Ok(length) if length <= frame_bytes_max && length <= FRAME_BYTES_MAX_LIMIT => length,
        _ => {
            return Err(Error::ReplyTooLarge {
                reply_bytes: body_bytes,
                frame_bytes_max,
            })
        }
    };
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME_BYTES_MAX: u32 = 1024;

    #[test]
    fn frame_length_accepts_one_to_the_max() {
        assert_eq!(frame_length([0, 0, 0, 1], FRAME_BYTES_MAX).unwrap(), 1);
        assert_eq!(frame_length([0, 0, 4, 0], FRAME_BYTES_MAX).unwrap(), 1024);
    }

    #[test]
    fn frame_length_rejects_zero_negative_and_over_max() {
        for header in [
            [0, 0, 0, 0],
            [0x80, 0, 0, 0],
            [0xff, 0xff, 0xff, 0xff],
            [0, 0, 4, 1],
            [0x7f, 0xff, 0xff, 0xff],
        ] {
            let error = frame_length(header, FRAME_BYTES_MAX).unwrap_err();
            assert!(
                matches!(error, Error::FrameLength { length, frame_bytes_max: FRAME_BYTES_MAX }
                    if length == i32::from_be_bytes(header)),
                "{header:?}: {error}"
            );
        }
    }

    #[test]
    fn frame_length_max_limit_is_i32_max() {
        let length = frame_length([0x7f, 0xff, 0xff, 0xff], FRAME_BYTES_MAX_LIMIT).unwrap();
        assert_eq!(length, i32::MAX as usize);
    }

    #[test]
    fn detect_protocol_by_first_byte() {
        assert_eq!(detect_protocol(&[0x80, 0x01]).unwrap(), Protocol::Binary);
        assert_eq!(detect_protocol(&[0x82, 0x21]).unwrap(), Protocol::Compact);
        for body in [&[0x00, 0x00][..], &[0x81], &[0x7f], &[]] {
            assert!(matches!(
                detect_protocol(body),
                Err(Error::ProtocolUnknown { .. })
            ));
        }
    }

    #[test]
    fn seal_frame_writes_big_endian_length() {
        let mut frame = reply_buffer();
        frame.extend_from_slice(&[7; 300]);
        seal_frame(&mut frame, FRAME_BYTES_MAX).unwrap();
        assert_eq!(frame[..4], [0, 0, 1, 44]);
        assert_eq!(frame_length([0, 0, 1, 44], FRAME_BYTES_MAX).unwrap(), 300);
    }

    #[test]
    fn seal_frame_rejects_body_over_max() {
        let mut frame = reply_buffer();
        frame.resize(FRAME_HEADER_BYTES + FRAME_BYTES_MAX as usize + 1, 0);
        assert!(matches!(
            seal_frame(&mut frame, FRAME_BYTES_MAX),
            Err(Error::ReplyTooLarge {
                reply_bytes: 1025,
                ..
            })
        ));
    }
}
