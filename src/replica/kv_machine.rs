//! The RocksDB executor as the driver's state machine.

use std::path::{Path, PathBuf};

use super::driver::{ApplyError, Checkpointer, InstallInterrupted, StateMachine};
use crate::consensus::{Membership, Slot};
use crate::executor::{Error, KvStoreExecutor, WriteOutcome};

impl StateMachine for KvStoreExecutor {
    type Outcome = WriteOutcome;

    fn applied_slot(&self) -> Slot {
        KvStoreExecutor::applied_slot(self)
    }

    fn apply_slot(
        &mut self,
        slot: Slot,
        commands: &[&[u8]],
    ) -> Result<Vec<WriteOutcome>, ApplyError> {
        Ok(KvStoreExecutor::apply_slot(self, slot, commands)?)
    }

    fn apply_membership(&mut self, slot: Slot, membership: &Membership) -> Result<(), ApplyError> {
        // JSON: stable across builds, and readable in a backup.
        let encoded = serde_json::to_vec(membership)?;
        Ok(KvStoreExecutor::apply_membership(self, slot, &encoded)?)
    }

    fn digest(&self) -> Option<(Slot, [u8; 16])> {
        let digest = KvStoreExecutor::digest(self);
        Some((digest.base, digest.value))
    }

    fn seed_membership(&mut self, membership: &Membership) -> Result<(), ApplyError> {
        let encoded = serde_json::to_vec(membership)?;
        Ok(KvStoreExecutor::seed_membership(self, &encoded)?)
    }

    fn membership(&self) -> Result<Option<Membership>, ApplyError> {
        match KvStoreExecutor::membership(self)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        }
    }

    fn checkpointer(&mut self) -> Option<Checkpointer> {
        let checkpoint = KvStoreExecutor::checkpointer(self);
        Some(Box::new(move |dir: &Path| Ok(checkpoint(dir)?)))
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        Some(KvStoreExecutor::staging_dir(self))
    }

    fn install_checkpoint(&mut self, staged: &Path) -> Result<Slot, ApplyError> {
        match KvStoreExecutor::install_checkpoint(self, staged) {
            Ok(slot) => Ok(slot),
            Err(Error::InstallInterrupted(reason)) => Err(Box::new(InstallInterrupted(reason))),
            Err(error) => Err(Box::new(error)),
        }
    }
}
