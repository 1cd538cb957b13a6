//! Read index: a leader confirms with a quorum that it still leads before it answers a read
//! with its commit index. Reads that arrive together share one confirmation round.

use std::collections::BTreeSet;

use super::Replica;
use crate::consensus::ready::ReadState;

impl Replica {
    pub(super) fn maybe_start_read_round(&mut self) {
        let commit_index = self.commit_index;
        let id = self.id();
        let lead = self.lead_mut();
        if !lead.reads_confirming.is_empty() || lead.reads_waiting.is_empty() {
            return;
        }
        if lead.recovery.is_some() {
            return;
        }
        // Until the recovered slots are committed, our commit index may miss values chosen
        // under an earlier leader.
        if commit_index < lead.recovered_upto {
            return;
        }
        lead.read_round += 1;
        lead.read_acks = BTreeSet::from([id]);
        lead.reads_confirming = lead
            .reads_waiting
            .drain(..)
            .map(|context| ReadState {
                context,
                index: commit_index,
            })
            .collect();
        self.broadcast_heartbeat();
        self.maybe_confirm_reads();
    }

    pub(super) fn maybe_confirm_reads(&mut self) {
        let acks = &self.lead.as_ref().expect("leading").read_acks;
        if !self.confirms_leadership(acks) {
            return;
        }
        let lead = self.lead_mut();
        let confirmed: Vec<ReadState> = lead.reads_confirming.drain(..).collect();
        self.read_states.extend(confirmed);
        self.maybe_start_read_round();
    }
}
