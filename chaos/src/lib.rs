//! paxkv-chaos: runs a real paxkv cluster of 3 or 5 processes on loopback, drives it with
//! concurrent Thrift clients that record every operation in a [`history::History`], injects
//! process faults (kill -9 and restart, SIGSTOP/SIGCONT pauses), disk faults (through the
//! servers' fault points) and network faults (cut, slow, lossy and reordering links and
//! majority/minority splits, through a frame-aware proxy per peer link), and checks the
//! history afterwards. It can switch a known bug on in the servers, to show the
//! checkers catch it.
//!
//! ```text
//! cluster::Cluster::start_with n x `paxkv server --config nodeN.toml`, waits for a leader
//! workload::run                client threads record invoke/ok/fail/info per call
//! nemesis::run                 faults on at most (n - 1) / 2 replicas at once, each healed
//!                              on its own schedule
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
