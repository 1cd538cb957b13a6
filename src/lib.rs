//! paxkv: a replicated, transactional key-value store on multi-Paxos.
pub mod api;
pub mod bench;
pub mod confman;
pub mod consensus;
pub mod executor;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod router;
pub mod sim;
pub mod snapshot;
pub mod wire;
