//! Errors of the Thrift API layer: the server shell and its frame codec.
use thiserror::Error;

/// Why a connection was closed or the server stopped.
///
/// All but `LimitInvalid` (and an `Io` error from accepting) concern one connection: the
/// server logs it, closes that connection and keeps serving everyone else.
#[derive(Debug, Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),

    /// The 4-byte frame header claims a length outside `1..=frame_bytes_max`. Nothing of the
    /// claimed size was allocated.
    #[error("frame length {length} is outside 1..={frame_bytes_max} bytes")]
    FrameLength { length: i32, frame_bytes_max: u32 },

    /// The frame starts with neither a strict binary (0x80) nor a compact (0x82) header.
    #[error(
        "frame starts with 0x{first_byte:02x}: neither strict binary (0x80) nor compact (0x82)"
    )]
    ProtocolUnknown { first_byte: u8 },

    /// The frame could not be decoded as a Thrift call. No reply is sent.
    #[error("frame failed to decode: {reason}")]
    Decode { reason: String },

    /// The reply does not fit in one frame. The handler should have capped its result.
    #[error("reply of {reply_bytes} bytes exceeds frame_bytes_max ({frame_bytes_max} bytes)")]
    ReplyTooLarge {
        reply_bytes: usize,
        frame_bytes_max: u32,
    },

    /// The processor failed after decoding (it could not write its reply).
    #[error("processing the call failed: {0}")]
    Process(thrift::Error),

    /// The handler panicked while serving a call; the connection is closed because the client
    /// is owed a reply we cannot give.
    #[error("handler panicked: {0}")]
    HandlerPanicked(String),

    /// A `ServerLimits` field is out of its allowed range (a configuration mistake).
    #[error("limit {limit} = {value} is outside {minimum}..={maximum}")]
    LimitInvalid {
        limit: &'static str,
        value: u64,
        minimum: u64,
        maximum: u64,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
