//! An input protocol over one in-memory frame that refuses sizes the frame cannot hold.
//!
//! The thrift crate trusts the sizes it reads: generated code calls `Vec::with_capacity(size)`
//! on list, set and map sizes, and the protocols allocate a buffer of the announced length
//! before reading a string or binary. A 20-byte frame could otherwise ask for gigabytes.
//! Every element or byte takes at least one byte on the wire, so no honest size exceeds the
//! bytes left in the frame: `BoundedInputProtocol` checks exactly that (and rejects negative
//! sizes) before anything is allocated, and delegates the rest to the real protocol.
use std::cell::{Cell, Ref, RefCell};
use std::io::{self, Read};
use std::rc::Rc;

use thrift::protocol::{
    TBinaryInputProtocol, TCompactInputProtocol, TFieldIdentifier, TInputProtocol, TListIdentifier,
    TMapIdentifier, TMessageIdentifier, TSetIdentifier, TStructIdentifier,
};
use thrift::{ProtocolError, ProtocolErrorKind};

use super::codec::Protocol;

/// Bytes of a strict binary message header before the method name's length.
const BINARY_VERSION_BYTES: usize = 4;
/// Bytes of a compact message header before the sequence number (protocol id, version+type).
const COMPACT_HEADER_BYTES: usize = 2;
/// A u32 varint takes at most 5 bytes; a longer one is malformed.
const VARINT_U32_BYTES_MAX: usize = 5;

/// One frame and how far into it the protocol has read.
struct Frame {
    bytes: RefCell<Vec<u8>>,
    position: Cell<usize>,
}

impl Frame {
    fn unread(&self) -> Ref<'_, [u8]> {
        Ref::map(self.bytes.borrow(), |bytes| {
            &bytes[self.position.get().min(bytes.len())..]
        })
    }

    /// Frees the frame: what follows a call's arguments is never read, and a large
    /// request (a 100 MB document) should not be held twice while its call runs.
    fn release(&self) {
        *self.bytes.borrow_mut() = Vec::new();
        self.position.set(0);
    }
}

/// The transport the wrapped protocol reads from. It shares the frame with the
/// `BoundedInputProtocol`, which needs the read position to know the bytes remaining.
struct FrameReader {
    frame: Rc<Frame>,
}

impl Read for FrameReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let unread = self.frame.unread();
        let count = unread.len().min(buffer.len());
        buffer[..count].copy_from_slice(&unread[..count]);
        self.frame.position.set(self.frame.position.get() + count);
        Ok(count)
    }
}

/// A `TInputProtocol` over one frame that rejects any size larger than the bytes left.
///
/// It also remembers the first read error: the generated processor answers some decode
/// failures with an exception reply instead of an error, and the server must still be able to
/// tell that the frame did not decode.
pub struct BoundedInputProtocol {
    inner: Box<dyn TInputProtocol>,
    frame: Rc<Frame>,
    protocol: Protocol,
    decode_error: Option<String>,
    /// Structs begun and not ended: back at 0, a call's arguments have all been read.
    struct_depth: usize,
}

impl BoundedInputProtocol {
    /// Reads `frame` (one message body, without the length prefix) in `protocol`.
    pub fn new(frame: Vec<u8>, protocol: Protocol) -> Self {
        let frame = Rc::new(Frame {
            bytes: RefCell::new(frame),
            position: Cell::new(0),
        });
        let reader = FrameReader {
            frame: Rc::clone(&frame),
        };
        let inner: Box<dyn TInputProtocol> = match protocol {
            // Strict: the message must carry the version header (codec::detect_protocol
            // already insisted on its first byte).
            Protocol::Binary => Box::new(TBinaryInputProtocol::new(reader, true)),
            Protocol::Compact => Box::new(TCompactInputProtocol::new(reader)),
        };
        Self {
            inner,
            frame,
            protocol,
            decode_error: None,
            struct_depth: 0,
        }
    }

    /// The first read error seen, if any: the frame did not decode.
    pub fn take_decode_error(&mut self) -> Option<String> {
        self.decode_error.take()
    }

    /// Bytes of the frame not read yet.
    pub fn bytes_remaining(&self) -> usize {
        self.frame.unread().len()
    }

    fn record<T>(&mut self, result: thrift::Result<T>) -> thrift::Result<T> {
        if let Err(error) = &result {
            if self.decode_error.is_none() {
                self.decode_error = Some(describe(error));
            }
        }
        result
    }

    /// Checks a size read from the wire: not negative, and no more than the bytes left after
    /// `prefix_bytes` more of the frame are consumed.
    fn check_size(&mut self, what: &str, size: i64, prefix_bytes: usize) -> thrift::Result<()> {
        let remaining = self.bytes_remaining().saturating_sub(prefix_bytes);
        let result = if size < 0 {
            Err(size_error(
                ProtocolErrorKind::NegativeSize,
                format!("{what} size {size} is negative"),
            ))
        } else if size as u64 > remaining as u64 {
            Err(size_error(
                ProtocolErrorKind::SizeLimit,
                format!("{what} size {size} exceeds the {remaining} bytes left in the frame"),
            ))
        } else {
            Ok(())
        };
        self.record(result)
    }

    /// Checks the length prefix of the string or binary that starts `offset` bytes from here,
    /// before the wrapped protocol allocates a buffer of that length.
    fn check_length_at(&mut self, what: &str, offset: usize) -> thrift::Result<()> {
        let unread = self.frame.unread();
        let peeked = match unread.get(offset..) {
            Some(bytes) => peek_length(self.protocol, bytes),
            // The frame ends first: the wrapped protocol fails on EOF, allocating nothing.
            None => Ok(None),
        };
        drop(unread);
        match peeked {
            Ok(Some((length, prefix_bytes))) => {
                self.check_size(what, length, offset + prefix_bytes)
            }
            Ok(None) => Ok(()),
            Err(message) => self.record(Err(size_error(ProtocolErrorKind::InvalidData, message))),
        }
    }

    /// Where the method name's length prefix starts within the message header.
    fn message_name_offset(&self) -> Option<usize> {
        match self.protocol {
            Protocol::Binary => Some(BINARY_VERSION_BYTES),
            Protocol::Compact => {
                let unread = self.frame.unread();
                let after_header = unread.get(COMPACT_HEADER_BYTES..)?;
                // Sequence number: a varint. Malformed or truncated → the wrapped protocol
                // fails on it before reaching the name, so no check is needed.
                let (_, varint_bytes) = peek_varint_u32(after_header).ok()??;
                Some(COMPACT_HEADER_BYTES + varint_bytes)
            }
        }
    }
}

/// The thrift crate's `Display` drops the message of protocol and transport errors.
fn describe(error: &thrift::Error) -> String {
    match error {
        thrift::Error::Protocol(error) => format!("{error}: {}", error.message),
        thrift::Error::Transport(error) => format!("{error}: {}", error.message),
        other => other.to_string(),
    }
}

fn size_error(kind: ProtocolErrorKind, message: impl Into<String>) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError::new(kind, message))
}

/// Decodes the length prefix at the start of `bytes`: `Ok(None)` if `bytes` end first,
/// otherwise the length and the bytes its prefix takes.
fn peek_length(protocol: Protocol, bytes: &[u8]) -> Result<Option<(i64, usize)>, &'static str> {
    match protocol {
        Protocol::Binary => Ok(bytes
            .first_chunk::<4>()
            .map(|prefix| (i64::from(i32::from_be_bytes(*prefix)), 4))),
        Protocol::Compact => {
            Ok(peek_varint_u32(bytes)?.map(|(value, used)| (i64::from(value), used)))
        }
    }
}

/// Decodes an unsigned LEB128 varint of at most 32 bits at the start of `bytes`.
///
/// Stricter than the thrift crate's reader on purpose (at most 5 bytes, value <= u32::MAX):
/// whatever this accepts, the crate decodes to the same value.
fn peek_varint_u32(bytes: &[u8]) -> Result<Option<(u32, usize)>, &'static str> {
    let mut value: u64 = 0;
    for (index, byte) in bytes.iter().take(VARINT_U32_BYTES_MAX).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let value = u32::try_from(value).map_err(|_| "varint length exceeds u32")?;
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= VARINT_U32_BYTES_MAX {
        Err("varint length longer than 5 bytes")
    } else {
        Ok(None)
    }
}

impl TInputProtocol for BoundedInputProtocol {
    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        // The wrapped protocol reads the method name with its own read_string, which this
        // wrapper cannot intercept, so check the name's length before handing over.
        if let Some(offset) = self.message_name_offset() {
            self.check_length_at("method name", offset)?;
        }
        let result = self.inner.read_message_begin();
        self.record(result)
    }

    fn read_message_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_message_end();
        self.record(result)
    }

    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        let result = self.inner.read_struct_begin();
        self.struct_depth += 1;
        self.record(result)
    }

    /// The end of the outermost struct is the end of a call's arguments (or of the
    /// struct skipped for an unknown method): the frame is freed before the handler runs.
    fn read_struct_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_struct_end();
        self.struct_depth = self.struct_depth.saturating_sub(1);
        if self.struct_depth == 0 && result.is_ok() {
            self.frame.release();
        }
        self.record(result)
    }

    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        let result = self.inner.read_field_begin();
        self.record(result)
    }

    fn read_field_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_field_end();
        self.record(result)
    }

    fn read_bool(&mut self) -> thrift::Result<bool> {
        let result = self.inner.read_bool();
        self.record(result)
    }

    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        self.check_length_at("binary", 0)?;
        let result = self.inner.read_bytes();
        self.record(result)
    }

    fn read_i8(&mut self) -> thrift::Result<i8> {
        let result = self.inner.read_i8();
        self.record(result)
    }

    fn read_i16(&mut self) -> thrift::Result<i16> {
        let result = self.inner.read_i16();
        self.record(result)
    }

    fn read_i32(&mut self) -> thrift::Result<i32> {
        let result = self.inner.read_i32();
        self.record(result)
    }

    fn read_i64(&mut self) -> thrift::Result<i64> {
        let result = self.inner.read_i64();
        self.record(result)
    }

    fn read_double(&mut self) -> thrift::Result<f64> {
        let result = self.inner.read_double();
        self.record(result)
    }

    fn read_string(&mut self) -> thrift::Result<String> {
        self.check_length_at("string", 0)?;
        let result = self.inner.read_string();
        self.record(result)
    }

    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        let result = self.inner.read_list_begin();
        let identifier = self.record(result)?;
        self.check_size("list", i64::from(identifier.size), 0)?;
        Ok(identifier)
    }

    fn read_list_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_list_end();
        self.record(result)
    }

    fn read_set_begin(&mut self) -> thrift::Result<TSetIdentifier> {
        let result = self.inner.read_set_begin();
        let identifier = self.record(result)?;
        self.check_size("set", i64::from(identifier.size), 0)?;
        Ok(identifier)
    }

    fn read_set_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_set_end();
        self.record(result)
    }

    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        let result = self.inner.read_map_begin();
        let identifier = self.record(result)?;
        self.check_size("map", i64::from(identifier.size), 0)?;
        Ok(identifier)
    }

    fn read_map_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_map_end();
        self.record(result)
    }

    fn read_byte(&mut self) -> thrift::Result<u8> {
        let result = self.inner.read_byte();
        self.record(result)
    }

    // `skip` is left to the trait's default, which calls back into the checked methods above
    // (the wrapped protocols do not override it either).
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrift::protocol::{
        TBinaryOutputProtocol, TCompactOutputProtocol, TMessageType, TOutputProtocol, TType,
    };

    /// Writes a message with `write`, in `protocol`, into a frame body.
    fn encode(protocol: Protocol, write: impl FnOnce(&mut dyn TOutputProtocol)) -> Vec<u8> {
        let mut body = Vec::new();
        {
            let mut output: Box<dyn TOutputProtocol + '_> = match protocol {
                Protocol::Binary => Box::new(TBinaryOutputProtocol::new(&mut body, true)),
                Protocol::Compact => Box::new(TCompactOutputProtocol::new(&mut body)),
            };
            write(&mut *output);
        }
        body
    }

    fn message_begin(output: &mut dyn TOutputProtocol) {
        let identifier = TMessageIdentifier::new("commit", TMessageType::Call, 1);
        output.write_message_begin(&identifier).unwrap();
    }

    fn assert_size_error(result: thrift::Result<impl std::fmt::Debug>, kind: ProtocolErrorKind) {
        match result {
            Err(thrift::Error::Protocol(error)) => assert_eq!(error.kind, kind, "{error}"),
            other => panic!("expected a {kind:?} protocol error, got {other:?}"),
        }
    }

    /// Binary-protocol wire ids of element types (`TType as u8` is not the wire id).
    const BINARY_I32: u8 = 8;
    const BINARY_I64: u8 = 10;

    #[test]
    fn honest_message_decodes() {
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let body = encode(protocol, |output| {
                message_begin(output);
                output
                    .write_list_begin(&TListIdentifier::new(TType::I32, 2))
                    .unwrap();
                output.write_i32(7).unwrap();
                output.write_i32(8).unwrap();
                output.write_string("value").unwrap();
            });
            let mut input = BoundedInputProtocol::new(body, protocol);
            assert_eq!(input.read_message_begin().unwrap().name, "commit");
            assert_eq!(input.read_list_begin().unwrap().size, 2);
            assert_eq!(input.read_i32().unwrap(), 7);
            assert_eq!(input.read_i32().unwrap(), 8);
            assert_eq!(input.read_string().unwrap(), "value");
            assert_eq!(input.bytes_remaining(), 0);
            assert_eq!(input.take_decode_error(), None);
        }
    }

    #[test]
    fn the_frame_is_freed_once_the_arguments_are_read() {
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let body = encode(protocol, |output| {
                message_begin(output);
                output
                    .write_struct_begin(&TStructIdentifier::new("args"))
                    .unwrap();
                output
                    .write_struct_begin(&TStructIdentifier::new("request"))
                    .unwrap();
                output.write_struct_end().unwrap();
                output.write_struct_end().unwrap();
                output.write_string("trailing").unwrap();
            });
            let mut input = BoundedInputProtocol::new(body, protocol);
            input.read_message_begin().unwrap();
            input.read_struct_begin().unwrap();
            input.read_struct_begin().unwrap();
            input.read_struct_end().unwrap();
            // Inside the arguments the frame stays.
            assert!(input.bytes_remaining() > 0);
            assert!(input.frame.bytes.borrow().capacity() > 0);
            input.read_struct_end().unwrap();
            assert_eq!(input.bytes_remaining(), 0);
            assert_eq!(input.frame.bytes.borrow().capacity(), 0);
            assert_eq!(input.take_decode_error(), None);
        }
    }

    #[test]
    fn container_size_over_remaining_bytes_is_rejected() {
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let body = encode(protocol, |output| {
                message_begin(output);
                let list = TListIdentifier::new(TType::Struct, i32::MAX);
                output.write_list_begin(&list).unwrap();
                let set = TSetIdentifier::new(TType::I64, 1_000_000);
                output.write_set_begin(&set).unwrap();
                let map = TMapIdentifier::new(TType::String, TType::String, 65_536);
                output.write_map_begin(&map).unwrap();
                output.write_i32(0).unwrap();
            });
            let mut input = BoundedInputProtocol::new(body.clone(), protocol);
            input.read_message_begin().unwrap();
            assert_size_error(input.read_list_begin(), ProtocolErrorKind::SizeLimit);
            assert!(input
                .take_decode_error()
                .unwrap()
                .contains("list size 2147483647"));
            assert_size_error(input.read_set_begin(), ProtocolErrorKind::SizeLimit);
            assert_size_error(input.read_map_begin(), ProtocolErrorKind::SizeLimit);
        }
    }

    #[test]
    fn container_size_equal_to_remaining_bytes_is_allowed() {
        let body = encode(Protocol::Binary, |output| {
            let list = TListIdentifier::new(TType::Bool, 3);
            output.write_list_begin(&list).unwrap();
            for _ in 0..3 {
                output.write_bool(true).unwrap();
            }
        });
        let mut input = BoundedInputProtocol::new(body, Protocol::Binary);
        assert_eq!(input.read_list_begin().unwrap().size, 3);
    }

    #[test]
    fn negative_sizes_are_rejected() {
        // Binary: list header (element type, i32 size) with size -1.
        let body = vec![BINARY_I32, 0xff, 0xff, 0xff, 0xff];
        let mut input = BoundedInputProtocol::new(body, Protocol::Binary);
        assert_size_error(input.read_list_begin(), ProtocolErrorKind::NegativeSize);
        // Binary: string length -1.
        let mut input = BoundedInputProtocol::new(vec![0xff; 8], Protocol::Binary);
        assert_size_error(input.read_string(), ProtocolErrorKind::NegativeSize);
        // Compact: list header 0xF5 (count follows, i32), varint 0xffffffff = -1 as i32.
        let body = vec![0xf5, 0xff, 0xff, 0xff, 0xff, 0x0f];
        let mut input = BoundedInputProtocol::new(body, Protocol::Compact);
        assert_size_error(input.read_list_begin(), ProtocolErrorKind::NegativeSize);
        // Compact: map size varint 0xffffffff.
        let body = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x88];
        let mut input = BoundedInputProtocol::new(body, Protocol::Compact);
        assert_size_error(input.read_map_begin(), ProtocolErrorKind::NegativeSize);
    }

    #[test]
    fn string_and_binary_lengths_over_remaining_bytes_are_rejected() {
        // Binary: length 0x7fffffff, then 3 bytes.
        let body = vec![0x7f, 0xff, 0xff, 0xff, b'a', b'b', b'c'];
        let mut input = BoundedInputProtocol::new(body.clone(), Protocol::Binary);
        assert_size_error(input.read_bytes(), ProtocolErrorKind::SizeLimit);
        let mut input = BoundedInputProtocol::new(body, Protocol::Binary);
        assert_size_error(input.read_string(), ProtocolErrorKind::SizeLimit);
        // Compact: varint 0xffffffff (u32::MAX), which the crate would allocate as 4 GiB.
        let body = vec![0xff, 0xff, 0xff, 0xff, 0x0f, b'a'];
        let mut input = BoundedInputProtocol::new(body, Protocol::Compact);
        assert_size_error(input.read_bytes(), ProtocolErrorKind::SizeLimit);
        // Compact: a 6-byte varint is malformed.
        let body = vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01, b'a'];
        let mut input = BoundedInputProtocol::new(body, Protocol::Compact);
        assert_size_error(input.read_string(), ProtocolErrorKind::InvalidData);
    }

    #[test]
    fn method_name_length_is_checked_before_the_header_is_parsed() {
        // Binary: strict version word (call), then a name length of 0x7fffffff.
        let body = vec![0x80, 0x01, 0x00, 0x01, 0x7f, 0xff, 0xff, 0xff, b'x'];
        let mut input = BoundedInputProtocol::new(body, Protocol::Binary);
        assert_size_error(input.read_message_begin(), ProtocolErrorKind::SizeLimit);
        // Compact: id, version|call, seq varint 1, name length varint 0xffffffff.
        let body = vec![0x82, 0x21, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, b'x'];
        let mut input = BoundedInputProtocol::new(body, Protocol::Compact);
        assert_size_error(input.read_message_begin(), ProtocolErrorKind::SizeLimit);
    }

    #[test]
    fn truncated_frame_fails_on_eof_and_is_recorded() {
        let body = vec![0x00, 0x00, 0x00, 0x05, b'a'];
        let mut input = BoundedInputProtocol::new(body, Protocol::Binary);
        assert!(input.read_string().is_err());
        assert!(input.take_decode_error().is_some());
        let mut input = BoundedInputProtocol::new(vec![0x00, 0x00], Protocol::Binary);
        assert!(input.read_i32().is_err());
        assert!(input.take_decode_error().is_some());
    }

    #[test]
    fn skip_goes_through_the_checks() {
        // A field of type list with an absurd size, skipped as an unknown field would be.
        let body = vec![BINARY_I64, 0x7f, 0xff, 0xff, 0xff, 0x00];
        let mut input = BoundedInputProtocol::new(body, Protocol::Binary);
        assert_size_error(input.skip(TType::List), ProtocolErrorKind::SizeLimit);
    }

    #[test]
    fn peek_varint_u32_matches_leb128() {
        assert_eq!(peek_varint_u32(&[0x00]), Ok(Some((0, 1))));
        assert_eq!(peek_varint_u32(&[0x96, 0x01]), Ok(Some((150, 2))));
        assert_eq!(
            peek_varint_u32(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Ok(Some((u32::MAX, 5)))
        );
        assert_eq!(peek_varint_u32(&[0x80, 0x80]), Ok(None));
        assert!(peek_varint_u32(&[0xff, 0xff, 0xff, 0xff, 0x1f]).is_err());
        assert!(peek_varint_u32(&[0x80; 6]).is_err());
    }
}
