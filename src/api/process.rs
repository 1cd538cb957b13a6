//! Runs one decoded frame through the generated processor. Blocking: the handler may wait on
//! the replicated store, so the server calls this from `tokio::task::spawn_blocking`.
use thrift::protocol::{TBinaryOutputProtocol, TCompactOutputProtocol, TOutputProtocol};
use thrift::server::TProcessor;

use super::bounded::BoundedInputProtocol;
use super::codec::{self, Protocol, FRAME_HEADER_BYTES};
use super::error::{Error, Result};

/// Processes the call in `body` and returns the framed reply (length prefix included), or
/// `None` if the processor wrote nothing.
///
/// A frame that does not decode is an error even when the generated processor has already
/// written an exception reply for it (it does so when the arguments, not the header, fail):
/// the reply is dropped and the caller closes the connection. A well-formed call to an
/// unknown method is not an error: the processor replies with an `UNKNOWN_METHOD`
/// TApplicationException and the connection goes on.
pub fn process_frame<P>(
    processor: &P,
    body: Vec<u8>,
    protocol: Protocol,
    frame_bytes_max: u32,
) -> Result<Option<Vec<u8>>>
where
    P: TProcessor + ?Sized,
{
    let mut input = BoundedInputProtocol::new(body, protocol);
    let mut reply = codec::reply_buffer();
    let processed = {
        let mut output: Box<dyn TOutputProtocol + '_> = match protocol {
            Protocol::Binary => Box::new(TBinaryOutputProtocol::new(&mut reply, true)),
            Protocol::Compact => Box::new(TCompactOutputProtocol::new(&mut reply)),
        };
        processor.process(&mut input, &mut *output)
    };
    if let Some(reason) = input.take_decode_error() {
        return Err(Error::Decode { reason });
    }
    processed.map_err(Error::Process)?;
    if reply.len() == FRAME_HEADER_BYTES {
        return Ok(None);
    }
    codec::seal_frame(&mut reply, frame_bytes_max)?;
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrift::protocol::{
        TBinaryInputProtocol, TInputProtocol, TMessageIdentifier, TMessageType,
    };
    use thrift::{ApplicationError, ApplicationErrorKind};

    const FRAME_BYTES_MAX: u32 = 1 << 20;

    /// Echoes the call's i32 argument back; the smallest processor that reads arguments.
    struct EchoProcessor;

    impl TProcessor for EchoProcessor {
        fn process(
            &self,
            input: &mut dyn TInputProtocol,
            output: &mut dyn TOutputProtocol,
        ) -> thrift::Result<()> {
            let call = input.read_message_begin()?;
            if call.name != "echo" {
                let error = ApplicationError::new(ApplicationErrorKind::UnknownMethod, "no");
                let reply = TMessageIdentifier::new(
                    call.name,
                    TMessageType::Exception,
                    call.sequence_number,
                );
                output.write_message_begin(&reply)?;
                thrift::Error::write_application_error_to_out_protocol(&error, output)?;
                return output.write_message_end();
            }
            // Like the generated code: an argument that fails to decode is answered with an
            // exception and the processor returns Ok.
            let value = match input.read_i32() {
                Ok(value) => value,
                Err(_) => {
                    let error = ApplicationError::new(ApplicationErrorKind::Unknown, "bad");
                    return thrift::Error::write_application_error_to_out_protocol(&error, output);
                }
            };
            let reply = TMessageIdentifier::new("echo", TMessageType::Reply, call.sequence_number);
            output.write_message_begin(&reply)?;
            output.write_i32(value)?;
            output.write_message_end()
        }
    }

    fn call(name: &str, argument: Option<i32>) -> Vec<u8> {
        let mut body = Vec::new();
        let mut output = TBinaryOutputProtocol::new(&mut body, true);
        let identifier = TMessageIdentifier::new(name, TMessageType::Call, 9);
        output.write_message_begin(&identifier).unwrap();
        if let Some(argument) = argument {
            output.write_i32(argument).unwrap();
        }
        body
    }

    #[test]
    fn reply_is_framed_in_the_callers_protocol() {
        let reply = process_frame(
            &EchoProcessor,
            call("echo", Some(42)),
            Protocol::Binary,
            FRAME_BYTES_MAX,
        )
        .unwrap()
        .unwrap();
        let length = codec::frame_length(reply[..4].try_into().unwrap(), FRAME_BYTES_MAX).unwrap();
        assert_eq!(length, reply.len() - FRAME_HEADER_BYTES);
        let mut input = TBinaryInputProtocol::new(&reply[FRAME_HEADER_BYTES..], true);
        let identifier = input.read_message_begin().unwrap();
        assert_eq!(identifier.message_type, TMessageType::Reply);
        assert_eq!(identifier.sequence_number, 9);
        assert_eq!(input.read_i32().unwrap(), 42);
    }

    #[test]
    fn argument_decode_failure_is_an_error_despite_the_exception_reply() {
        let result = process_frame(
            &EchoProcessor,
            call("echo", None),
            Protocol::Binary,
            FRAME_BYTES_MAX,
        );
        assert!(matches!(result, Err(Error::Decode { .. })), "{result:?}");
    }

    #[test]
    fn unknown_method_gets_an_exception_reply() {
        let reply = process_frame(
            &EchoProcessor,
            call("nope", None),
            Protocol::Binary,
            FRAME_BYTES_MAX,
        )
        .unwrap()
        .unwrap();
        let mut input = TBinaryInputProtocol::new(&reply[FRAME_HEADER_BYTES..], true);
        assert_eq!(
            input.read_message_begin().unwrap().message_type,
            TMessageType::Exception
        );
    }

    #[test]
    fn reply_over_frame_bytes_max_is_an_error() {
        let result = process_frame(&EchoProcessor, call("echo", Some(1)), Protocol::Binary, 8);
        assert!(
            matches!(result, Err(Error::ReplyTooLarge { .. })),
            "{result:?}"
        );
    }
}
