//! The paxkv client API over Apache Thrift (IDL: `thrift/paxkv.thrift`, see `docs/api.md`).
//!
//! What exists: the generated types ([`gen::paxkv`]), an async server shell ([`run`]) that
//! serves any [`PaxkvSyncHandler`], its frame codec, [`KvHandler`] (the handler backed by a
//! replica's `PrimaryRouter`), and a blocking [`connect`] for Rust callers.
//!
//! Serving (the handler is whatever implements the generated trait):
//!
//! ```no_run
//! use std::sync::Arc;
//! use paxkv::api::{bind, run, PaxkvSyncHandler, ServerLimits};
//!
//! async fn serve<H>(handler: Arc<H>, stop: tokio::sync::oneshot::Receiver<()>) -> paxkv::api::Result<()>
//! where
//!     H: PaxkvSyncHandler + Send + Sync + 'static,
//! {
//!     let listener = bind("127.0.0.1:9091".parse().unwrap())?;
//!     // Serves until `stop` resolves, then lets the calls in flight finish.
//!     run(listener, handler, ServerLimits::default(), stop).await
//! }
//! ```
//!
//! Calling it from Rust:
//!
//! ```no_run
//! use paxkv::api::gen::paxkv::{GetRequest, PutRequest};
//! use paxkv::api::{connect, Protocol, TPaxkvSyncClient};
//!
//! let mut client = connect("127.0.0.1:9091", Protocol::Binary)?;
//! let version = client.put(PutRequest::new(b"k".to_vec(), b"v".to_vec(), None))?;
//! let got = client.get(GetRequest::new(b"k".to_vec(), None))?;
//! assert_eq!(got.kv.map(|kv| kv.value), Some(b"v".to_vec()));
//! # let _ = version;
//! # Ok::<(), thrift::Error>(())
//! ```
mod bounded;
mod client;
mod codec;
mod confman_handler;
mod connection;
mod error;
pub mod gen;
mod handler;
mod process;
mod server;
pub mod session;

pub use bounded::BoundedInputProtocol;
pub use client::{
    client_on, config_client_on, connect, connect_as, connect_config, Client, ConfigClient,
};
pub use codec::{
    detect_protocol, frame_length, Protocol, BINARY_FIRST_BYTE, COMPACT_FIRST_BYTE,
    FRAME_BYTES_MAX_LIMIT, FRAME_HEADER_BYTES,
};
pub use confman_handler::ConfmanHandler;
pub use error::{Error, Result};
pub use gen::paxkv::{
    ConfmanSyncClient, ConfmanSyncProcessor, PaxkvSyncClient, PaxkvSyncHandler, PaxkvSyncProcessor,
    TConfmanSyncClient, TPaxkvSyncClient,
};
pub use handler::KvHandler;
pub use server::{
    bind, run, run_counted, serve_counted, KvAndConfig, ServerLimits, Services, CONFMAN_METHODS,
};
