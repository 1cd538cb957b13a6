//! The history of a run: every client operation as an invoke event followed by one
//! completion (ok, fail or info), with monotonic timestamps, in the order they happened.
//!
//! Outcomes follow Jepsen's convention:
//! - `Ok`: the operation took effect and the reply is what the server said.
//! - `Fail`: it definitely did not take effect (the server said so).
//! - `Info`: the outcome is unknown (a timeout, a dropped connection, "may or may not have
//!   been applied"). It may take effect at any point after its invoke, or never.
//!
//! A process has at most one operation open. After an `Info` the client thread continues
//! under a new process id, because the old operation may still be in flight forever.
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{ChaosError, Result};

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// A linearizable read of one register.
    Read { key: String },
    /// Sets a register to a value no other write uses.
    Write { key: String, value: i64 },
    /// Sets a register to `to` if it holds `from`.
    Cas { key: String, from: i64, to: i64 },
    /// Writes the bank's starting balances (one commit) before the workload starts.
    BankInit { balances: Vec<i64> },
    /// Moves `amount` from one account to another in one optimistic transaction.
    Transfer { from: usize, to: usize, amount: i64 },
    /// Reads every account in one snapshot (at a read version, or linearizably).
    BankRead { at_read_version: bool },
    /// Adds one element (a key of its own) to the set.
    SetAdd { element: u64 },
    /// Reads the whole set in one snapshot.
    SetRead,
    /// Adds one element to the `items` array of a JSON document (`doc/N`): with an RFC 6902
    /// patch, or (`whole`) by reading the document and writing it back whole at the version
    /// read, which the server logs as a delta from it, or (`upload`) by writing it back as
    /// an upload of small chunks committed at the version read.
    DocAdd {
        element: u64,
        whole: bool,
        #[serde(default)]
        upload: bool,
    },
    /// Reads every document in one snapshot; the elements of all their `items`.
    DocRead,
    /// Creates the configuration service's namespaces of the publish workload.
    PublishInit,
    /// Publishes one change set that adds entry `e<element>` to each of the publish
    /// workload's namespaces, in one transaction.
    Publish { element: u64 },
    /// Lists every publish entry at one version.
    PublishRead,
    /// One long poll of a watcher on `[start_key, end_key)` from `from_version`.
    Watch {
        watcher: u32,
        start_key: String,
        end_key: String,
        from_version: i64,
    },
}

impl Call {
    /// The workload this call belongs to, for counting.
    pub fn workload(&self) -> Workload {
        match self {
            Call::Read { .. } | Call::Write { .. } | Call::Cas { .. } => Workload::Register,
            Call::BankInit { .. } | Call::Transfer { .. } | Call::BankRead { .. } => Workload::Bank,
            Call::SetAdd { .. } | Call::SetRead => Workload::Set,
            Call::DocAdd { .. } | Call::DocRead => Workload::Documents,
            Call::PublishInit | Call::Publish { .. } | Call::PublishRead => Workload::Publish,
            Call::Watch { .. } => Workload::Watch,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    Register,
    Bank,
    Set,
    Watch,
    Documents,
    Publish,
}

/// One change a watcher received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedEvent {
    pub key: String,
    /// `None` for a delete.
    pub value: Option<i64>,
    pub version: i64,
}

/// What the server answered to an `Ok` call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Reply {
    Read {
        value: Option<i64>,
    },
    /// A write's commit version.
    Written {
        version: i64,
    },
    Cas {
        succeeded: bool,
        version: i64,
    },
    Balances {
        balances: Vec<i64>,
    },
    Elements {
        elements: Vec<u64>,
    },
    Watched {
        events: Vec<WatchedEvent>,
        next_version: i64,
    },
    /// A publish read: the elements whose entries are in every namespace, and those in
    /// some but not all (a change set seen in part).
    Published {
        elements: Vec<u64>,
        partial: Vec<u64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub process: u64,
    pub kind: EventKind,
    /// Nanoseconds since the run started, from a monotonic clock.
    pub time_ns: u64,
    pub call: Call,
    /// Present on `Ok` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    /// Why a call failed or has an unknown outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub events: Vec<Event>,
}

/// How one operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(Reply),
    Fail(String),
    /// Unknown: an `Info` completion, or no completion at all before the history ended.
    Unknown(String),
}

/// An invoke paired with its completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Position in [`History::operations`], stable for reports.
    pub id: usize,
    pub process: u64,
    pub call: Call,
    pub invoke_ns: u64,
    /// `None` when the outcome is unknown: it may take effect at any time after invoke.
    pub complete_ns: Option<u64>,
    /// When the client stopped waiting (any completion, unknown ones too); `None` if it
    /// never did before the history ended.
    pub ended_ns: Option<u64>,
    pub outcome: Outcome,
}

impl Operation {
    pub fn reply(&self) -> Option<&Reply> {
        match &self.outcome {
            Outcome::Ok(reply) => Some(reply),
            _ => None,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown(_))
    }
}

impl History {
    /// Pairs every invoke with its process's next completion, in invoke order. A completion
    /// with no open invoke, a second invoke on an open process, or a completion whose call
    /// differs from its invoke makes the history malformed.
    pub fn operations(&self) -> Result<Vec<Operation>> {
        let mut open: std::collections::BTreeMap<u64, usize> = Default::default();
        let mut operations: Vec<Operation> = Vec::new();
        for (index, event) in self.events.iter().enumerate() {
            let malformed = |why: &str| ChaosError::MalformedHistory {
                index,
                reason: format!("process {}: {why}", event.process),
            };
            if event.kind == EventKind::Invoke {
                if open.contains_key(&event.process) {
                    return Err(malformed("invoked while an operation is open"));
                }
                open.insert(event.process, operations.len());
                operations.push(Operation {
                    id: operations.len(),
                    process: event.process,
                    call: event.call.clone(),
                    invoke_ns: event.time_ns,
                    complete_ns: None,
                    ended_ns: None,
                    outcome: Outcome::Unknown("never completed".into()),
                });
                continue;
            }
            let id = open
                .remove(&event.process)
                .ok_or_else(|| malformed("completion with no open invoke"))?;
            let operation = &mut operations[id];
            if operation.call != event.call {
                return Err(malformed("completion does not match its invoke"));
            }
            let why = || event.error.clone().unwrap_or_default();
            operation.outcome = match (event.kind, &event.reply) {
                (EventKind::Ok, Some(reply)) => Outcome::Ok(reply.clone()),
                (EventKind::Ok, None) => return Err(malformed("ok without a reply")),
                (EventKind::Fail, _) => Outcome::Fail(why()),
                _ => Outcome::Unknown(why()),
            };
            if !operation.is_unknown() {
                operation.complete_ns = Some(event.time_ns);
            }
            operation.ended_ns = Some(event.time_ns);
        }
        Ok(operations)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| ChaosError::File {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = BufWriter::new(File::create(path).map_err(io)?);
        serde_json::to_writer(&mut writer, self).map_err(|e| ChaosError::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        writer.flush().map_err(io)
    }

    pub fn load(path: &Path) -> Result<History> {
        let file = File::open(path).map_err(|source| ChaosError::File {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_reader(BufReader::new(file)).map_err(|e| ChaosError::Json {
            path: path.to_path_buf(),
            source: e,
        })
    }
}

/// A monotonic clock that starts at zero when the run starts.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    // The workspace bans `Instant::now` to keep the consensus core deterministic; a run
    // against real processes has nothing but wall time, and this is its one reading of it.
    #[allow(clippy::disallowed_methods)]
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Appends events from many client threads. The timestamp is taken under the lock, so the
/// event order and the time order agree.
#[derive(Clone)]
pub struct Recorder {
    clock: Clock,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    pub fn new(clock: Clock) -> Recorder {
        Recorder {
            clock,
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn invoke(&self, process: u64, call: &Call) {
        self.push(process, EventKind::Invoke, call, None, None);
    }

    pub fn ok(&self, process: u64, call: &Call, reply: Reply) {
        self.push(process, EventKind::Ok, call, Some(reply), None);
    }

    pub fn fail(&self, process: u64, call: &Call, error: String) {
        self.push(process, EventKind::Fail, call, None, Some(error));
    }

    pub fn info(&self, process: u64, call: &Call, error: String) {
        self.push(process, EventKind::Info, call, None, Some(error));
    }

    fn push(
        &self,
        process: u64,
        kind: EventKind,
        call: &Call,
        reply: Option<Reply>,
        error: Option<String>,
    ) {
        let mut events = self.events.lock().expect("a client thread panicked");
        events.push(Event {
            process,
            kind,
            time_ns: self.clock.now_ns(),
            call: call.clone(),
            reply,
            error,
        });
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        History {
            events: self
                .events
                .lock()
                .expect("a client thread panicked")
                .clone(),
        }
    }
}

/// Test helpers: build histories by hand with explicit times.
#[cfg(test)]
pub mod build {
    use super::*;

    pub fn write(key: &str, value: i64) -> Call {
        Call::Write {
            key: key.into(),
            value,
        }
    }

    pub fn invoke(process: u64, time_ns: u64, call: Call) -> Event {
        Event {
            process,
            kind: EventKind::Invoke,
            time_ns,
            call,
            reply: None,
            error: None,
        }
    }

    pub fn ok(process: u64, time_ns: u64, call: Call, reply: Reply) -> Event {
        Event {
            kind: EventKind::Ok,
            reply: Some(reply),
            ..invoke(process, time_ns, call)
        }
    }

    pub fn fail(process: u64, time_ns: u64, call: Call) -> Event {
        Event {
            kind: EventKind::Fail,
            error: Some("failed".into()),
            ..invoke(process, time_ns, call)
        }
    }

    pub fn info(process: u64, time_ns: u64, call: Call) -> Event {
        Event {
            kind: EventKind::Info,
            error: Some("timed out".into()),
            ..invoke(process, time_ns, call)
        }
    }

    pub fn history(events: Vec<Event>) -> History {
        History { events }
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn operations_pair_invokes_with_completions_per_process() {
        let history = history(vec![
            invoke(1, 10, write("a", 1)),
            invoke(2, 11, write("a", 2)),
            fail(2, 12, write("a", 2)),
            ok(1, 13, write("a", 1), Reply::Written { version: 5 }),
            invoke(3, 14, write("a", 3)),
            info(3, 15, write("a", 3)),
            invoke(4, 16, write("a", 4)),
        ]);
        let ops = history.operations().unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[0].complete_ns, Some(13));
        assert_eq!(ops[0].reply(), Some(&Reply::Written { version: 5 }));
        assert_eq!(ops[1].outcome, Outcome::Fail("failed".into()));
        assert!(ops[2].is_unknown());
        assert_eq!(ops[2].complete_ns, None, "unknown ops never return");
        assert!(
            ops[3].is_unknown(),
            "an op still open at the end is unknown"
        );
    }

    #[test]
    fn malformed_histories_are_refused() {
        let twice = history(vec![
            invoke(1, 1, write("a", 1)),
            invoke(1, 2, write("a", 2)),
        ]);
        assert!(twice.operations().is_err());
        let orphan = history(vec![ok(1, 1, write("a", 1), Reply::Written { version: 1 })]);
        assert!(orphan.operations().is_err());
        let mismatch = history(vec![invoke(1, 1, write("a", 1)), fail(1, 2, write("a", 2))]);
        assert!(mismatch.operations().is_err());
    }

    #[test]
    fn a_history_survives_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        let history = history(vec![
            invoke(1, 1, Call::SetAdd { element: 7 }),
            ok(
                1,
                2,
                Call::SetAdd { element: 7 },
                Reply::Written { version: 3 },
            ),
            invoke(2, 3, Call::SetRead),
            info(2, 4, Call::SetRead),
        ]);
        history.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), history);
    }
}
