//! The multi-Paxos core: a deterministic state machine with no I/O.
//!
//! A [`Replica`] never touches a clock, a socket, a disk or an unseeded random number. Time
//! arrives as [`Replica::tick`], messages as [`Replica::step`], commands as
//! [`Replica::propose`]; everything it wants done comes out in a [`Ready`]. That is what lets
//! the simulator in `crate::sim` run the real code through crashes and partitions and replay
//! any run from its seed.
//!
//! The driver loop (the tokio service and the simulator both look like this):
//!
//! ```
//! use paxkv::consensus::{Config, DurableState, Record, Replica, Value};
//!
//! let mut wal: Vec<Record> = Vec::new(); // stands in for paxkv-wal
//! let mut replica = Replica::new(Config::new(1, vec![1]), 42).unwrap();
//! let mut applied: Vec<(u64, Value)> = Vec::new();
//! let mut proposed = false;
//! for _ in 0..100 {
//!     replica.tick();
//!     if replica.leader() == Some(1) && !proposed {
//!         replica.propose(b"set x=1".to_vec()).unwrap();
//!         proposed = true;
//!     }
//!     while replica.has_ready() {
//!         let ready = replica.ready();
//!         // 1. messages that need no durability go out at once (none: one replica).
//!         assert!(ready.messages.is_empty());
//!         // 2. persist, then fsync, before anything that depends on it.
//!         wal.extend(ready.records.iter().cloned());
//!         // 3. messages that must follow durability; ones to ourselves go back in.
//!         for message in ready.persisted_messages.iter().cloned() {
//!             replica.step(message);
//!         }
//!         // 4. apply what is committed, in slot order.
//!         applied.extend(ready.committed.iter().cloned());
//!         replica.advance(ready);
//!     }
//! }
//! assert_eq!(applied, vec![(1, Value::Commands(vec![b"set x=1".to_vec()]))]);
//! // What the WAL holds rebuilds the same state after a crash.
//! let recovered = DurableState::from_records(&wal);
//! assert_eq!(recovered.commit_index, 1);
//! ```
//!
//! After a crash the driver replays the WAL through [`DurableState::from_records`] and hands
//! the result, with the slot its state machine last applied, to [`Replica::restore`].

pub mod config;
pub mod durable;
pub mod error;
pub mod membership;
pub mod message;
pub mod ready;
pub mod replica;
pub mod rng;
pub mod types;

pub use config::{Config, InjectedBugs};
pub use durable::{DurableState, Entry, Record, Replay};
pub use error::{Error, Result};
pub use membership::{Member, Membership, MembershipChange, MembershipError};
pub use message::{Message, MessageBody, PromisedEntry};
pub use ready::{ReadState, Ready, SnapshotWanted, SoftState};
pub use replica::Replica;
pub use rng::Rng;
pub use types::{Ballot, NodeId, Role, Slot, Value};
