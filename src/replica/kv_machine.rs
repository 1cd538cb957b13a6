//! The RocksDB executor as the driver's state machine.

use super::driver::{ApplyError, StateMachine};
use crate::consensus::Slot;
use crate::executor::{KvStoreExecutor, WriteOutcome};

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
}
