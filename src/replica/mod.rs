//! The replica driver's pieces: today the durable log that stores consensus records in the
//! WAL.

pub mod log_store;

pub use log_store::{LogStore, LogStoreError};
