//! paxkv-chaos: fault injection against a real paxkv cluster, with history checkers.
//!
//! See docs/chaos.md for what is covered and what is not built yet.
pub mod check;
pub mod client;
pub mod cluster;
pub mod error;
pub mod history;
