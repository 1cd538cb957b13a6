//! Group commit: many threads append, one fdatasync makes all their records durable.

use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::Result;
use crate::wal::{SegmentInfo, Wal, WalOptions};
use crate::Lsn;

/// A `Wal` shared between threads, with leader/follower group commit. Cloning is cheap
/// and every clone is the same log.
///
/// `sync_to(lsn)` returns at once if `lsn` is durable; waits if a sync is running; and
/// otherwise makes the caller the leader: it flushes the buffer under the lock, notes the
/// last written lsn, fdatasyncs *without* the lock (appenders keep going meanwhile),
/// publishes the new durable lsn and wakes everyone. Whoever is still not covered leads
/// the next round. A failed fdatasync is reported to every caller whose record it
/// covered (`SyncFailed`) and poisons the WAL for everyone after (`Poisoned`).
#[derive(Clone)]
pub struct SharedWal {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Signalled whenever a sync ends, successfully or not.
    sync_ended: Condvar,
}

struct State {
    wal: Wal,
    sync_in_progress: bool,
}

impl SharedWal {
    pub fn new(wal: Wal) -> SharedWal {
        let state = State {
            wal,
            sync_in_progress: false,
        };
        let inner = Inner {
            state: Mutex::new(state),
            sync_ended: Condvar::new(),
        };
        SharedWal {
            inner: Arc::new(inner),
        }
    }

    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<SharedWal> {
        Ok(SharedWal::new(Wal::open(dir, options)?))
    }

    /// Appends without waiting for durability; see `Wal::append`.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn> {
        self.lock().wal.append(payload)
    }

    /// Appends and returns once the record is durable.
    pub fn append_durable(&self, payload: &[u8]) -> Result<Lsn> {
        let lsn = self.append(payload)?;
        self.sync_to(lsn)?;
        Ok(lsn)
    }

    /// Returns once every record up to `lsn` is durable, or with the error that stopped it.
    pub fn sync_to(&self, lsn: Lsn) -> Result<()> {
        let mut state = self.lock();
        if lsn >= state.wal.next_lsn() {
            return Err(state.wal.out_of_range(lsn));
        }
        loop {
            if lsn <= state.wal.durable_lsn() {
                return Ok(());
            }
            if let Some(error) = state.wal.sync_failure_for(lsn) {
                return Err(error);
            }
            if !state.sync_in_progress {
                break;
            }
            state = self.wait(state);
        }
        self.lead_sync(state)?;
        Ok(())
    }

    /// Syncs everything appended so far; returns the durable lsn.
    pub fn sync(&self) -> Result<Lsn> {
        let lsn = self.lock().wal.next_lsn() - 1;
        self.sync_to(lsn)?;
        Ok(self.durable_lsn())
    }

    fn lead_sync(&self, mut state: MutexGuard<'_, State>) -> Result<Lsn> {
        let ticket = state.wal.begin_sync()?;
        state.sync_in_progress = true;
        drop(state);
        let leader = LeaderGuard { inner: &self.inner };
        let outcome = ticket.sync();
        std::mem::forget(leader);
        let mut state = self.lock();
        state.sync_in_progress = false;
        let result = state.wal.finish_sync(ticket, outcome);
        self.inner.sync_ended.notify_all();
        result
    }

    /// See `Wal::read`. Holds the lock for the whole read.
    pub fn read(&self, range: impl RangeBounds<Lsn>) -> Result<Vec<(Lsn, Vec<u8>)>> {
        self.lock().wal.read(range)
    }

    /// See `Wal::truncate_suffix`. Waits for a running sync first, so that the sync never
    /// publishes a durable lsn for records that are gone.
    pub fn truncate_suffix(&self, from: Lsn) -> Result<()> {
        let mut state = self.lock();
        while state.sync_in_progress {
            state = self.wait(state);
        }
        state.wal.truncate_suffix(from)
    }

    /// See `Wal::compact_prefix`. Never touches the active segment, so it can run beside a
    /// sync.
    pub fn compact_prefix(&self, upto: Lsn) -> Result<()> {
        self.lock().wal.compact_prefix(upto)
    }

    pub fn first_lsn(&self) -> Lsn {
        self.lock().wal.first_lsn()
    }

    pub fn next_lsn(&self) -> Lsn {
        self.lock().wal.next_lsn()
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.lock().wal.durable_lsn()
    }

    /// fdatasync calls made so far; with group commit, fewer than durable appends.
    pub fn syncs_total(&self) -> u64 {
        self.lock().wal.syncs_total()
    }

    pub fn is_poisoned(&self) -> bool {
        self.lock().wal.is_poisoned()
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.lock().wal.segments()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock may have left the index half updated.
        self.inner
            .state
            .lock()
            .expect("a thread panicked inside the wal")
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.inner
            .sync_ended
            .wait(state)
            .expect("a thread panicked inside the wal")
    }
}

/// If the leader unwinds out of fdatasync, frees the followers instead of leaving them
/// waiting for a sync that will never end; one of them leads the next round.
struct LeaderGuard<'a> {
    inner: &'a Inner,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.inner.state.lock() {
            state.sync_in_progress = false;
        }
        self.inner.sync_ended.notify_all();
    }
}
