//! Reads and writes frames on one byte stream. Generic over the stream so tests can drive it
//! with an in-memory duplex pipe instead of a socket.
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::codec::{self, Protocol, FRAME_HEADER_BYTES};
use super::error::Result;

/// One frame read off the wire: its body (without the length prefix) and its protocol.
#[derive(Debug)]
pub struct Frame {
    pub body: Vec<u8>,
    pub protocol: Protocol,
}

pub struct Connection<S> {
    stream: BufReader<S>,
    frame_bytes_max: u32,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(stream: S, frame_bytes_max: u32) -> Self {
        Self {
            stream: BufReader::new(stream),
            frame_bytes_max,
        }
    }

    /// Reads the next frame. `Ok(None)` means the peer closed the connection between frames;
    /// a close in the middle of a frame is an error.
    ///
    /// Not cancel-safe (a partly read frame is lost), which is fine: the only thing that
    /// cancels it is shutdown, and then the connection is closed anyway.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>> {
        if self.stream.fill_buf().await?.is_empty() {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.stream.read_exact(&mut header).await?;
        // Checked before anything of the claimed size is allocated.
        let length = codec::frame_length(header, self.frame_bytes_max)?;
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        let protocol = codec::detect_protocol(&body)?;
        Ok(Some(Frame { body, protocol }))
    }

    /// Writes a sealed frame (length prefix included, see `codec::seal_frame`).
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        self.stream.get_mut().write_all(frame).await?;
        self.stream.get_mut().flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Error;

    const FRAME_BYTES_MAX: u32 = 64;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
    }

    #[test]
    fn reads_frames_until_clean_eof() {
        runtime().block_on(async {
            let (client, server) = tokio::io::duplex(1024);
            let mut connection = Connection::new(server, FRAME_BYTES_MAX);
            let mut client = client;
            client.write_all(&[0, 0, 0, 2, 0x80, 0x01]).await.unwrap();
            client.write_all(&[0, 0, 0, 1, 0x82]).await.unwrap();
            drop(client);
            let first = connection.read_frame().await.unwrap().unwrap();
            assert_eq!(
                (first.body, first.protocol),
                (vec![0x80, 0x01], Protocol::Binary)
            );
            let second = connection.read_frame().await.unwrap().unwrap();
            assert_eq!(second.protocol, Protocol::Compact);
            assert!(connection.read_frame().await.unwrap().is_none());
        });
    }

    /// Writes `bytes`, hangs up, and returns the error reading a frame gives.
    async fn read_error(bytes: &[u8]) -> Error {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut connection = Connection::new(server, FRAME_BYTES_MAX);
        client.write_all(bytes).await.unwrap();
        drop(client);
        connection.read_frame().await.unwrap_err()
    }

    #[test]
    fn rejects_bad_length_unknown_protocol_and_truncation() {
        runtime().block_on(async {
            let error = read_error(&[0x7f, 0xff, 0xff, 0xff]).await;
            assert!(
                matches!(
                    error,
                    Error::FrameLength {
                        length: i32::MAX,
                        ..
                    }
                ),
                "{error}"
            );
            let error = read_error(&[0, 0, 0, 0]).await;
            assert!(
                matches!(error, Error::FrameLength { length: 0, .. }),
                "{error}"
            );
            let error = read_error(&[0, 0, 0, 1, 0x00]).await;
            assert!(
                matches!(error, Error::ProtocolUnknown { first_byte: 0 }),
                "{error}"
            );
            let error = read_error(&[0, 0, 0, 9, 0x80]).await;
            assert!(
                matches!(&error, Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
            );
            let error = read_error(&[0, 0]).await;
            assert!(
                matches!(&error, Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
            );
        });
    }
}
