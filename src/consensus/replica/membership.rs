//! Membership in the core: which membership governs a slot, who counts in a quorum, and
//! the one-change-at-a-time rule. See docs/consensus.md, "Membership changes".

use std::collections::BTreeSet;

use super::Replica;
use crate::consensus::durable::{Entry, Record};
use crate::consensus::error::{Error, Result};
use crate::consensus::membership::{Membership, MembershipChange};
use crate::consensus::message::MessageBody;
use crate::consensus::types::{Ballot, NodeId, Role, Slot, Value};

/// The membership of a replica that knows none yet (it joins, and learns it from the log).
static NO_MEMBERSHIP: Membership = Membership {
    members: std::collections::BTreeMap::new(),
};

impl Replica {
    /// This replica's member incarnation.
    pub fn incarnation(&self) -> u64 {
        self.config.incarnation
    }

    /// The membership that governs the slot after the commit index: the one every quorum
    /// of this replica is counted in.
    pub fn committed_membership(&self) -> &Membership {
        self.membership_before(self.commit_index + 1)
    }

    /// The newest membership in the log, committed or not.
    pub fn latest_membership(&self) -> &Membership {
        self.membership_before(Slot::MAX)
    }

    /// Whether this replica votes: it is a voter, at its own incarnation, in the committed
    /// or the newest membership. A replica that lost its disk is neither.
    pub fn is_voter(&self) -> bool {
        let (id, incarnation) = (self.id(), self.incarnation());
        self.committed_membership().is_voter_at(id, incarnation)
            || self.latest_membership().is_voter_at(id, incarnation)
    }

    /// As leader: each member's committed slot as last heard (its own too), for
    /// operators; `None` elsewhere.
    pub fn member_progress(&self) -> Option<std::collections::BTreeMap<NodeId, Slot>> {
        let lead = self.lead.as_ref()?;
        let mut progress = lead.peer_commit.clone();
        progress.insert(self.id(), self.commit_index);
        Some(progress)
    }

    /// Messages dropped so far because their sender's incarnation is not the member's.
    pub fn refused_messages(&self) -> u64 {
        self.refused_messages
    }

    /// The membership governing `slot`: the newest base or membership slot before it.
    pub(super) fn membership_before(&self, slot: Slot) -> &Membership {
        let base = self.bases.range(..slot).next_back();
        let logged = self.membership_slots.range(..slot).next_back().copied();
        match (base, logged) {
            (Some((&at, _)), Some(logged)) if logged > at => self.logged_membership(logged),
            (None, Some(logged)) => self.logged_membership(logged),
            (Some((_, membership)), _) => membership,
            (None, None) => &NO_MEMBERSHIP,
        }
    }

    fn logged_membership(&self, slot: Slot) -> &Membership {
        let entry = &self.log[&slot];
        (entry.value.membership()).expect("membership slot holds a membership")
    }

    pub(super) fn bootstrap_membership(&self) -> Membership {
        let own = (self.id(), self.incarnation());
        Membership::bootstrap(self.config.members.iter().map(|&id| {
            let incarnation = if id == own.0 { own.1 } else { 1 };
            (id, incarnation, String::new())
        }))
    }

    /// Record, durably, that `membership` governs the slots after `upto`.
    pub(super) fn set_base(&mut self, upto: Slot, membership: Membership) {
        self.records.push(Record::Membership {
            upto,
            membership: membership.clone(),
        });
        self.bases.insert(upto, membership);
    }

    /// Every log write goes through here, to keep the index of membership slots.
    pub(super) fn put_entry(&mut self, slot: Slot, entry: Entry) {
        match entry.value {
            Value::Membership(_) => self.membership_slots.insert(slot),
            _ => self.membership_slots.remove(&slot),
        };
        self.log.insert(slot, entry);
    }

    /// A message from `from` is taken unless this replica knows `from` at another
    /// incarnation. Unknown senders are taken (a replica that joins knows nobody yet):
    /// what they send counts in no quorum, because only voters are counted.
    pub(super) fn admits(&self, from: NodeId, incarnation: u64) -> bool {
        [self.committed_membership(), self.latest_membership()]
            .into_iter()
            .all(|membership| {
                membership
                    .get(from)
                    .is_none_or(|m| m.incarnation == incarnation)
            })
    }

    /// What this replica may still take from a sender it knows at another incarnation: the
    /// sender may be a newer incarnation admitted by a change this replica has not learned
    /// yet, and refusing it for ever would keep this replica behind for ever. Values known
    /// chosen are the same whoever reports them, so a catch-up is taken, and a heartbeat
    /// from ahead is answered by asking for one; nothing from such a sender counts as a
    /// vote, a promise or an acceptance.
    pub(super) fn learn_despite_refusal(&mut self, from: NodeId, body: &MessageBody) {
        match body {
            MessageBody::CatchUp { entries } => self.handle_catch_up(from, entries.clone()),
            MessageBody::Heartbeat { commit_index, .. }
            | MessageBody::Accept { commit_index, .. }
                if *commit_index > self.commit_index && self.lead.is_none() =>
            {
                self.leader_commit_seen = self.leader_commit_seen.max(*commit_index);
                self.maybe_request_catch_up(from);
            }
            MessageBody::Compacted { upto } => self.handle_compacted(from, *upto),
            _ => {}
        }
    }

    /// Every other member of the committed and the newest membership, learners included.
    pub(super) fn peers(&self) -> Vec<NodeId> {
        let mut peers: BTreeSet<NodeId> = BTreeSet::new();
        for membership in [self.committed_membership(), self.latest_membership()] {
            peers.extend(membership.members.keys().copied());
        }
        peers.remove(&self.id());
        peers.into_iter().collect()
    }

    /// The membership whose voters choose the slots a leader has in flight. Every one of
    /// them is governed by the committed membership: nothing is proposed past a membership
    /// slot until it commits.
    fn counting_membership(&self) -> &Membership {
        if self.config.bugs.config_before_commit {
            return self.latest_membership();
        }
        self.committed_membership()
    }

    /// Votes that choose an in-flight slot.
    pub(super) fn vote_quorum(&self) -> usize {
        if self.config.bugs.quorum_of_one {
            return 1;
        }
        self.counting_membership().quorum()
    }

    /// Whether a vote from `from` counts towards `vote_quorum`.
    pub(super) fn counts_vote(&self, from: NodeId) -> bool {
        self.config.bugs.removed_vote_counted || self.counting_membership().is_voter(from)
    }

    /// Whether `ids` hold a quorum of voters of `membership`.
    pub(super) fn quorum_in<'a>(
        &self,
        membership: &Membership,
        ids: impl IntoIterator<Item = &'a NodeId>,
    ) -> bool {
        let ids: Vec<&NodeId> = ids.into_iter().collect();
        if self.config.bugs.quorum_of_one {
            return !ids.is_empty();
        }
        if self.config.bugs.removed_vote_counted {
            return ids.len() >= membership.quorum();
        }
        membership.has_quorum(ids)
    }

    /// Whether `ids` confirm this leadership: a quorum of the committed membership and of
    /// the newest (they differ while a change is in flight, and a new leader may come from
    /// either).
    pub(super) fn confirms_leadership(&self, ids: &BTreeSet<NodeId>) -> bool {
        self.quorum_in(self.committed_membership(), ids)
            && self.quorum_in(self.latest_membership(), ids)
    }

    /// The first membership slot a leader proposed that is not committed yet.
    pub(super) fn membership_in_flight(&self) -> Option<Slot> {
        let next_slot = self.lead.as_ref()?.next_slot;
        let range = self.commit_index + 1..next_slot;
        self.membership_slots.range(range).next().copied()
    }

    /// Whether a leader must hold back proposals past an uncommitted membership change.
    pub(super) fn stalled_on_membership(&self) -> bool {
        let bugs = self.config.bugs;
        let unsafe_order = bugs.config_before_commit || bugs.two_changes_in_flight;
        !unsafe_order && self.membership_in_flight().is_some()
    }

    /// Propose a membership change (leader only). One at a time: refused while another is
    /// uncommitted or while this leader still recovers the log. A change of the voters is
    /// refused unless the new voters this leader heard from lately make a quorum of the new
    /// membership, and a promotion unless the learner has caught up to within
    /// `inflight_slots_max` slots. Returns the slot it was proposed at; it takes effect for
    /// the slots after it once that slot commits.
    pub fn propose_membership(&mut self, change: MembershipChange) -> Result<Slot> {
        let Some(lead) = self.lead.as_ref() else {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        };
        if !self.config.bugs.two_changes_in_flight {
            if let Some(slot) = self.membership_in_flight() {
                return Err(Error::ChangeInProgress { slot });
            }
            if lead.recovery.is_some() {
                return Err(Error::ChangeInProgress {
                    slot: lead.next_slot,
                });
            }
        }
        let current = self.latest_membership();
        let next = current.changed(&change)?;
        if let MembershipChange::Promote { id } = change {
            self.check_caught_up(id)?;
        }
        if current.voter_difference(&next) > 0 {
            let mut reachable: BTreeSet<NodeId> =
                lead.heard.union(&lead.heard_before).copied().collect();
            reachable.insert(self.id());
            let voters = reachable.iter().filter(|&&id| next.is_voter(id)).count();
            if voters < next.quorum() {
                return Err(Error::WouldLoseQuorum {
                    reachable: voters,
                    quorum: next.quorum(),
                });
            }
        }
        let lead = self.lead_mut();
        let slot = lead.next_slot;
        lead.next_slot += 1;
        let value = Value::Membership(next);
        self.accept_own(slot, value.clone());
        self.send_accepts(vec![(slot, value)]);
        Ok(slot)
    }

    fn check_caught_up(&self, id: NodeId) -> Result<()> {
        let lead = self.lead.as_ref().expect("checked by the caller");
        // Its progress counts only if it was heard lately: a learner that lost its disk comes
        // back as another incarnation, whose messages are refused, and the commit index the
        // old one reported is stale.
        let heard = lead.heard.contains(&id) || lead.heard_before.contains(&id);
        let commit = match heard {
            true => lead.peer_commit.get(&id).copied().unwrap_or(0),
            false => 0,
        };
        let lag_max = self.config.inflight_slots_max;
        if !heard || commit + lag_max < self.commit_index {
            return Err(Error::MemberBehind {
                id,
                commit,
                leader_commit: self.commit_index,
            });
        }
        Ok(())
    }

    /// Hand leadership to voter `to` once it has caught up: it starts Phase 1 at once, and
    /// its higher ballot makes this leader step down.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<()> {
        let Some(lead) = self.lead.as_ref() else {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        };
        if !self.committed_membership().is_voter(to) || to == self.id() {
            return Err(Error::NotVoter(to));
        }
        let commit = lead.peer_commit.get(&to).copied().unwrap_or(0);
        if commit < self.commit_index {
            return Err(Error::MemberBehind {
                id: to,
                commit,
                leader_commit: self.commit_index,
            });
        }
        let ballot = lead.ballot;
        self.send(to, MessageBody::TimeoutNow { ballot });
        Ok(())
    }

    pub(super) fn handle_timeout_now(&mut self, from: NodeId, ballot: Ballot) {
        if ballot < self.promised || self.leader != Some(from) || !self.is_voter() {
            return;
        }
        self.become_follower(None);
        let round = self.highest_round.max(self.promised.round) + 1;
        self.start_phase1(round);
    }

    /// After the commit index moved: a leader the committed membership no longer counts
    /// as a voter steps down (it committed its own removal).
    pub(super) fn after_commit(&mut self) {
        if self.role == Role::Leader && !self.is_voter() {
            // Tell the voters the change is committed before going: they count quorums
            // in the committed membership, and a removed leader answers no heartbeat.
            self.broadcast_heartbeat();
            self.become_follower(None);
            self.reset_election_timer();
        }
    }
}
