//! Sessions for writes that come without one, so that every write is safe to send again.
//!
//! A write without a client session takes one of this replica's own: a client id with a
//! reserved prefix that no client may use, and the next request id of that id. With a
//! session the driver may propose a write twice (it sends it again to a new leader instead
//! of waiting out `request_timeout_ms` to learn whether the old one got it chosen), and the
//! executor applies the second copy as a no-op that returns the first one's outcome.
//!
//! The executor keeps one record per client id and applies a request only if its id is
//! above the recorded one, so each internal session carries one write at a time: a pool
//! lends an idle session to each write and takes it back when the write returns. A copy of
//! an earlier request still in flight then finds a higher request id recorded and is
//! refused as superseded, never applied late.
//!
//! The client ids are the same in every run of a replica (`\0replica/ID/K` for the K-th
//! session of the pool), so the session table holds one record per session the pool ever
//! needed at once, however often the replica restarts. Request ids must then rise across
//! runs too: every session draws them from one counter, which starts above the wall clock in
//! microseconds (a run issues fewer requests than it lasts microseconds) and, `GAP` higher
//! still, above the highest request id of these ids the replica has applied: once at start,
//! and again before its first write, when it has caught up with the leader (a replica on a
//! new disk knows nothing at start). A copy of an earlier run's write still in flight then
//! carries a lower id, however the clocks of the two runs compare: the gap is far more than
//! the writes a replica ever has in flight.

use std::sync::{Arc, Mutex};

use crate::executor::SessionId;

/// Client ids of this prefix are the replicas' own; `Limits::check_session` refuses them
/// from clients.
pub const INTERNAL_PREFIX: &str = "\u{0}replica/";

#[derive(Clone)]
pub(super) struct InternalSessions {
    inner: Arc<Mutex<Pool>>,
}

/// How far above the highest recorded request id a run starts.
const GAP: i64 = 1 << 32;

struct Pool {
    /// `INTERNAL_PREFIX` and this replica's id.
    prefix: String,
    /// The floor was raised from the table after catching up with the leader.
    synced: bool,
    idle: Vec<String>,
    created: u64,
    /// The last request id given out.
    request_id: i64,
}

impl InternalSessions {
    /// The pool of replica `replica`, whose request ids start above `request_id_floor`.
    pub(super) fn new(replica: u64, request_id_floor: i64) -> InternalSessions {
        InternalSessions {
            inner: Arc::new(Mutex::new(Pool {
                prefix: prefix(replica),
                synced: false,
                idle: Vec::new(),
                created: 0,
                request_id: request_id_floor,
            })),
        }
    }

    /// An idle session with the next request id, or a new one.
    pub(super) fn lend(&self) -> Lent {
        let mut pool = self.inner.lock().expect("session pool");
        pool.request_id += 1;
        let client_id = match pool.idle.pop() {
            Some(client_id) => client_id,
            None => {
                pool.created += 1;
                format!("{}{}", pool.prefix, pool.created)
            }
        };
        Lent {
            session: Some(SessionId {
                client_id,
                request_id: pool.request_id,
            }),
            pool: self.clone(),
        }
    }

    /// False until `raise_floor` has run once.
    pub(super) fn synced(&self) -> bool {
        self.inner.lock().expect("session pool").synced
    }

    /// Makes every later request id exceed `recorded` (the highest in the table, read once
    /// this replica caught up with the leader) by more than `GAP`.
    pub(super) fn raise_floor(&self, recorded: i64) {
        let mut pool = self.inner.lock().expect("session pool");
        pool.request_id = pool.request_id.max(recorded.saturating_add(GAP));
        pool.synced = true;
    }

    /// Sessions this process created so far: the most writes it had in flight at once.
    pub(super) fn created(&self) -> u64 {
        self.inner.lock().expect("session pool").created
    }
}

/// The client-id prefix of replica `replica`'s internal sessions.
pub(super) fn prefix(replica: u64) -> String {
    format!("{INTERNAL_PREFIX}{replica}/")
}

/// Where a run's request ids start: `GAP` above `recorded` (the highest this replica's
/// sessions have applied, as far as it knows) and above the wall clock in microseconds.
pub(super) fn request_id_floor(recorded: i64) -> i64 {
    #[allow(clippy::disallowed_methods)] // Request ids only need to rise across runs.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let micros = now.map_or(0, |now| {
        i64::try_from(now.as_micros()).unwrap_or(i64::MAX / 2)
    });
    micros.max(recorded.saturating_add(GAP))
}

/// A session lent to one write; back in the pool when dropped.
pub(super) struct Lent {
    session: Option<SessionId>,
    pool: InternalSessions,
}

impl Lent {
    pub(super) fn session(&self) -> SessionId {
        self.session.clone().expect("held until dropped")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let mut pool = self.pool.inner.lock().expect("session pool");
            pool.idle.push(session.client_id);
        }
    }
}

/// True for a client id of the replicas' own sessions.
pub fn is_internal(client_id: &str) -> bool {
    client_id.starts_with(INTERNAL_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_carries_one_write_at_a_time_with_rising_request_ids() {
        let sessions = InternalSessions::new(3, 1000);
        let first = sessions.lend();
        let second = sessions.lend();
        let (a, b) = (first.session(), second.session());
        assert_ne!(
            a.client_id, b.client_id,
            "two writes in flight: two sessions"
        );
        assert!(is_internal(&a.client_id) && a.client_id.starts_with("\u{0}replica/3/"));
        assert_eq!((a.request_id, b.request_id), (1001, 1002));
        drop(first);
        let again = sessions.lend();
        assert_eq!(again.session().client_id, a.client_id);
        assert!(again.session().request_id > b.request_id);
        assert_eq!(sessions.created(), 2);
        assert!(!is_internal("replica/3"));
        // A new run starts above what the last one recorded, and above the clock.
        assert_eq!(request_id_floor(i64::MAX - 1 - GAP), i64::MAX - 1);
        assert!(request_id_floor(0) > 1_700_000_000_000_000);
        // Caught up, it learns of higher ids: every later one is above them by the gap.
        assert!(!sessions.synced());
        sessions.raise_floor(5_000);
        assert!(sessions.synced());
        assert_eq!(sessions.lend().session().request_id, 5_001 + GAP);
        sessions.raise_floor(10);
        assert_eq!(sessions.lend().session().request_id, 5_002 + GAP);
    }
}
