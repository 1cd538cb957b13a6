//! A blocking client for Rust callers (the CLI, tests): the thrift crate's own TCP channel
//! and framed transports, in either protocol the server speaks.
use std::net::{TcpStream, ToSocketAddrs};

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol,
};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport, TIoChannel, TTcpChannel};

use super::codec::Protocol;
use super::gen::paxkv::{ConfmanSyncClient, PaxkvSyncClient};

/// A connected paxkv client. Call it through the generated `TPaxkvSyncClient` trait (for
/// example `client.put(request)`); one call at a time, each waits for its reply.
pub type Client = PaxkvSyncClient<Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>>;

/// Connects to a paxkv server over TCP with framed transport and `protocol`.
///
/// No timeouts are set: a call waits as long as the server takes.
pub fn connect<A: ToSocketAddrs>(address: A, protocol: Protocol) -> thrift::Result<Client> {
    let stream = TcpStream::connect(address)?;
    // Calls are small request/reply exchanges; Nagle would delay each by a round trip.
    stream.set_nodelay(true)?;
    client_on(stream, protocol)
}

/// Connects as [`connect`] does; with `token`, first authenticates the connection (with
/// `Confman.authenticate`, on the same stream), so that a server with `auth.enabled`
/// serves its KV calls as that token's principal.
pub fn connect_as<A: ToSocketAddrs>(
    address: A,
    protocol: Protocol,
    token: Option<&str>,
) -> thrift::Result<Client> {
    use super::gen::paxkv::TConfmanSyncClient;
    let stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    if let Some(token) = token {
        // Framed reads take exactly one frame: nothing of a later reply is left behind.
        let (input, output) = framed_protocols(stream.try_clone()?, protocol)?;
        ConfmanSyncClient::new(input, output).authenticate(token.to_string())?;
    }
    client_on(stream, protocol)
}

/// A client on an already open stream (framed transport, the given protocol).
pub fn client_on(stream: TcpStream, protocol: Protocol) -> thrift::Result<Client> {
    let (input, output) = framed_protocols(stream, protocol)?;
    Ok(PaxkvSyncClient::new(input, output))
}

type Protocols = (
    Box<dyn TInputProtocol + Send>,
    Box<dyn TOutputProtocol + Send>,
);

/// The framed input and output protocols of `stream`, for either service's client.
fn framed_protocols(stream: TcpStream, protocol: Protocol) -> thrift::Result<Protocols> {
    let (read_half, write_half) = TTcpChannel::with_stream(stream).split()?;
    let read = TFramedReadTransport::new(read_half);
    let write = TFramedWriteTransport::new(write_half);
    Ok(match protocol {
        Protocol::Binary => (
            Box::new(TBinaryInputProtocol::new(read, true)),
            Box::new(TBinaryOutputProtocol::new(write, true)),
        ),
        Protocol::Compact => (
            Box::new(TCompactInputProtocol::new(read)),
            Box::new(TCompactOutputProtocol::new(write)),
        ),
    })
}

/// A connected client of the configuration service (`Confman`), on the same port.
pub type ConfigClient =
    ConfmanSyncClient<Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>>;

/// A configuration-service client on an already open stream.
pub fn config_client_on(stream: TcpStream, protocol: Protocol) -> thrift::Result<ConfigClient> {
    let (input, output) = framed_protocols(stream, protocol)?;
    Ok(ConfmanSyncClient::new(input, output))
}

/// Connects to the configuration service; with `token`, authenticates the connection.
pub fn connect_config<A: ToSocketAddrs>(
    address: A,
    protocol: Protocol,
    token: Option<&str>,
) -> thrift::Result<ConfigClient> {
    use super::gen::paxkv::TConfmanSyncClient;
    let stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let (input, output) = framed_protocols(stream, protocol)?;
    let mut client = ConfmanSyncClient::new(input, output);
    if let Some(token) = token {
        client.authenticate(token.to_string())?;
    }
    Ok(client)
}
