//! paxkv-chaos: runs a real 3-process paxkv cluster on loopback, drives it with concurrent
//! Thrift clients that record every operation in a [`history::History`], injects process
//! faults (kill -9 and restart, SIGSTOP/SIGCONT pauses), disk faults (through the
//! servers' fault points) and network faults (through a proxy per peer link), and checks
//! the history afterwards. It can switch a known bug on in the servers, to show the
//! checkers catch it.
//!
//! ```text
//! cluster::Cluster::start      3 x `paxkv server --config nodeN.toml`, waits for a leader
//! workload::run                client threads record invoke/ok/fail/info per call
//! nemesis::run                 one fault at a time, healed before the next
//! check::*                     registers (linearizability), bank, set, watch
//! report::Report               ops by outcome, faults, unavailability, verdicts
//! ```
//!
//! See docs/chaos.md for what is covered and what is not built yet.
pub mod check;
pub mod client;
pub mod cluster;
pub mod error;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod run;
pub mod workload;
