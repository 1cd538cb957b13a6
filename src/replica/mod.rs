//! The replica driver: the consensus core run against the real WAL, real TCP peers and a
//! state machine, on its own thread.

pub mod driver;
mod kv_machine;
pub mod kv_store;
pub mod log_store;
pub mod transport;

pub use crate::wire::PeerStatus;
pub use driver::{
    role_name, start, ApplyError, Checkpointer, DriverError, DriverOptions, InstallInterrupted,
    ReplicaHandle, ReplicaNode, ReplicaStatus, SnapshotOptions, StartError, StateMachine,
};
pub use kv_store::{ReplicatedKvStore, StoreError};
pub use log_store::{LogStore, LogStoreError};
pub use transport::{Transport, TransportOptions};
