//! Operators' membership requests (`paxkv admin member ...`). Any replica takes one and
//! hands it to the leader over the peer channel (`RouterMessage::Admin`), as it does
//! proposals; the leader proposes the change to its core and answers once the change has
//! committed, with the membership then committed.
//!
//! - With no leader known, a request waits (tried again every tick) until
//!   `request_timeout_ms`, then fails with `NoLeader`: nothing was proposed.
//! - A leader that loses its leadership before the change commits answers
//!   `OutcomeUnknown`: the change may still commit. Listing the members tells.
//! - Refusals of the core (one change at a time, quorum, caught up, ...) are typed
//!   (`AdminReason`) and change nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::sync::oneshot;

use super::router::Target;
use super::{Driver, StateMachine};
use crate::consensus::{self, MembershipChange, MembershipError, NodeId, Role, Slot};
use crate::wire::{AdminReason, AdminRefusal, AdminRequest, MembershipView, RouterMessage};

pub(super) type AdminReply = oneshot::Sender<Result<MembershipView, AdminRefusal>>;

/// A request of this replica's operator, until its answer.
pub(super) struct PendingAdmin {
    request: AdminRequest,
    reply: AdminReply,
    /// In ticks.
    deadline: u64,
    /// The leader it was sent to, if it was; `None`: waiting for one.
    sent_to: Option<NodeId>,
}

/// Who waits for a change this leader proposed.
pub(super) enum AdminWaiter {
    Local(AdminReply),
    Peer {
        peer: NodeId,
        incarnation: u64,
        context: u64,
    },
}

/// A change this leader proposed at `slot`, not yet committed.
pub(super) struct Committing {
    slot: Slot,
    waiter: AdminWaiter,
    deadline: u64,
}

fn refusal(reason: AdminReason, message: impl Into<String>) -> AdminRefusal {
    AdminRefusal::new(reason, message)
}

fn no_leader() -> AdminRefusal {
    refusal(
        AdminReason::NoLeader,
        "no leader within the request timeout; nothing was proposed",
    )
}

/// The core's refusal, typed for operators.
fn core_refusal(error: consensus::Error) -> AdminRefusal {
    let reason = match &error {
        consensus::Error::NotLeader { .. } => AdminReason::NoLeader,
        consensus::Error::ChangeInProgress { .. } => AdminReason::ChangeInProgress,
        consensus::Error::WouldLoseQuorum { .. } => AdminReason::WouldLoseQuorum,
        consensus::Error::MemberBehind { .. } => AdminReason::MemberBehind,
        consensus::Error::NotVoter(_) => AdminReason::NotVoter,
        consensus::Error::Membership(error) => match error {
            MembershipError::UnknownMember(_) => AdminReason::UnknownMember,
            MembershipError::AlreadyMember { .. } => AdminReason::AlreadyMember,
            MembershipError::AlreadyVoter(_) => AdminReason::AlreadyVoter,
            MembershipError::LastVoter => AdminReason::LastVoter,
            MembershipError::TooManyVoterChanges(_) => AdminReason::TooManyVoterChanges,
            MembershipError::TooManyMembers { .. } => AdminReason::TooManyMembers,
        },
        _ => AdminReason::Invalid,
    };
    refusal(reason, error.to_string())
}

impl<M: StateMachine> Driver<M> {
    pub(super) fn on_admin(&mut self, request: AdminRequest, reply: AdminReply) {
        let context = self.take_sequence();
        let pending = PendingAdmin {
            request,
            reply,
            deadline: self.deadline(self.options.request_timeout_ms),
            sent_to: None,
        };
        self.admin_requests.insert(context, pending);
        self.dispatch_admin(context);
    }

    /// Sends a waiting request to the leader, or carries it out if this replica leads.
    fn dispatch_admin(&mut self, context: u64) {
        let target = self.target();
        let Some(pending) = self.admin_requests.get_mut(&context) else {
            return;
        };
        match target {
            Target::Local => {
                let pending = self.admin_requests.remove(&context).expect("present");
                self.carry_out(pending.request, AdminWaiter::Local(pending.reply));
            }
            Target::Peer(leader) => {
                pending.sent_to = Some(leader);
                let body = RouterMessage::Admin {
                    incarnation: self.incarnation,
                    context,
                    request: pending.request.clone(),
                };
                self.send_router(leader, body);
            }
            Target::Unknown => {}
        }
    }

    /// Every tick: send what waits for a leader, fail what waited too long.
    pub(super) fn tick_admin(&mut self) {
        let now = self.ticks;
        let expired: Vec<u64> = (self.admin_requests.iter())
            .filter(|(_, pending)| pending.deadline <= now)
            .map(|(&context, _)| context)
            .collect();
        for context in expired {
            let pending = self.admin_requests.remove(&context).expect("present");
            let error = match (&pending.sent_to, &pending.request) {
                // A read, or a request no leader took: nothing changed.
                (None, _) | (_, AdminRequest::List) => no_leader(),
                (Some(leader), _) => refusal(
                    AdminReason::OutcomeUnknown,
                    format!(
                        "leader {leader} did not answer in time: the change may or may not \
                         take effect; list the members to see"
                    ),
                ),
            };
            let _ = pending.reply.send(Err(error));
        }
        let waiting: Vec<u64> = (self.admin_requests.iter())
            .filter(|(_, pending)| pending.sent_to.is_none())
            .map(|(&context, _)| context)
            .collect();
        for context in waiting {
            self.dispatch_admin(context);
        }
        let overdue = (self.admin_committing.iter()).any(|c| c.deadline <= now);
        if overdue {
            let (expired, kept) = std::mem::take(&mut self.admin_committing)
                .into_iter()
                .partition(|c| c.deadline <= now);
            self.admin_committing = kept;
            for committing in expired {
                self.answer_admin(committing.waiter, Err(outcome_unknown(committing.slot)));
            }
        }
    }

    pub(super) fn on_admin_request(
        &mut self,
        from: NodeId,
        incarnation: u64,
        context: u64,
        request: AdminRequest,
    ) {
        let waiter = AdminWaiter::Peer {
            peer: from,
            incarnation,
            context,
        };
        if self.replica.role() != Role::Leader {
            return self.answer_admin(waiter, Err(no_leader()));
        }
        self.carry_out(request, waiter);
    }

    pub(super) fn on_admin_reply(
        &mut self,
        from: NodeId,
        context: u64,
        result: Result<MembershipView, AdminRefusal>,
    ) {
        let Some(pending) = self.admin_requests.remove(&context) else {
            return;
        };
        match result {
            // That replica no longer leads and proposed nothing: try the next leader.
            Err(refused) if refused.reason == AdminReason::NoLeader => {
                tracing::debug!(replica = self.id, from, "admin request refused; retrying");
                let pending = PendingAdmin {
                    sent_to: None,
                    ..pending
                };
                self.admin_requests.insert(context, pending);
            }
            result => {
                let _ = pending.reply.send(result);
            }
        }
    }

    /// As leader: carry out `request` for `waiter`.
    fn carry_out(&mut self, request: AdminRequest, waiter: AdminWaiter) {
        let proposed = match request {
            AdminRequest::List => return self.answer_admin(waiter, Ok(self.membership_view())),
            AdminRequest::TransferLeader { to } => {
                let result = (self.replica.transfer_leadership(to))
                    .map(|()| self.membership_view())
                    .map_err(core_refusal);
                if result.is_ok() {
                    tracing::info!(replica = self.id, to, "handing leadership over");
                }
                return self.answer_admin(waiter, result);
            }
            AdminRequest::Add {
                id,
                addr,
                incarnation,
            } => self.propose_add(id, addr, incarnation),
            AdminRequest::Promote { id } => self.propose_change(MembershipChange::Promote { id }),
            AdminRequest::Remove { id } => self.propose_change(MembershipChange::Remove { id }),
        };
        match proposed {
            Ok(slot) => {
                let deadline = self.deadline(self.options.request_timeout_ms);
                self.admin_committing.push(Committing {
                    slot,
                    waiter,
                    deadline,
                });
            }
            Err(refused) => self.answer_admin(waiter, Err(refused)),
        }
    }

    fn propose_change(&mut self, change: MembershipChange) -> Result<Slot, AdminRefusal> {
        let description = format!("{change:?}");
        let slot = self
            .replica
            .propose_membership(change)
            .map_err(core_refusal)?;
        tracing::info!(
            replica = self.id,
            slot,
            change = description,
            "membership change proposed"
        );
        Ok(slot)
    }

    /// `Add`: the incarnation the replica announced unless given, and the address the
    /// membership or the bootstrap list has for it unless given.
    fn propose_add(
        &mut self,
        id: NodeId,
        addr: Option<String>,
        incarnation: Option<u64>,
    ) -> Result<Slot, AdminRefusal> {
        let known = self.replica.latest_membership().get(id).cloned();
        let incarnation = match incarnation {
            Some(incarnation) => incarnation,
            None => self.transport.seen_incarnation(id).ok_or_else(|| {
                refusal(
                    AdminReason::NotConnected,
                    format!(
                        "replica {id} has not connected to the leader (replica {}): start it \
                         (with this cluster's members in its config) and try again, or name \
                         its incarnation",
                        self.id
                    ),
                )
            })?,
        };
        let addr = match addr {
            Some(addr) => {
                addr.parse::<SocketAddr>().map_err(|error| {
                    let message = format!("peer address {addr:?} is not ip:port: {error}");
                    refusal(AdminReason::Invalid, message)
                })?;
                addr
            }
            None => (known.map(|member| member.addr))
                .filter(|addr| !addr.is_empty())
                // In this replica's config: the empty address, so that every replica uses the
                // one its own config names (each may reach it by another route).
                .or_else(|| self.bootstrap_addrs.contains_key(&id).then(String::new))
                .ok_or_else(|| {
                    let message = format!("replica {id} is new: give its peer address");
                    refusal(AdminReason::AddressRequired, message)
                })?,
        };
        self.propose_change(MembershipChange::AddLearner {
            id,
            incarnation,
            addr,
        })
    }

    /// After every Ready: answer the changes that committed, and those a lost leadership
    /// left undecided.
    pub(super) fn answer_admin_committed(&mut self) {
        if self.admin_committing.is_empty() {
            return;
        }
        let commit_index = self.replica.commit_index();
        let leads = self.replica.role() == Role::Leader;
        for committing in std::mem::take(&mut self.admin_committing) {
            if committing.slot <= commit_index {
                let view = self.membership_view();
                self.answer_admin(committing.waiter, Ok(view));
            } else if !leads {
                self.answer_admin(committing.waiter, Err(outcome_unknown(committing.slot)));
            } else {
                self.admin_committing.push(committing);
            }
        }
    }

    fn answer_admin(&self, waiter: AdminWaiter, result: Result<MembershipView, AdminRefusal>) {
        match waiter {
            AdminWaiter::Local(reply) => {
                let _ = reply.send(result);
            }
            AdminWaiter::Peer {
                peer,
                incarnation,
                context,
            } => {
                let body = RouterMessage::AdminReply {
                    incarnation,
                    context,
                    result,
                };
                self.send_router(peer, body);
            }
        }
    }

    /// The committed membership as this replica (the leader) knows it.
    fn membership_view(&self) -> MembershipView {
        let membership = self.replica.committed_membership().clone();
        let candidates = (self.transport.seen().into_iter())
            .filter(|&(id, incarnation)| {
                (membership.get(id)).is_none_or(|member| member.incarnation != incarnation)
            })
            .collect();
        MembershipView {
            leader: self.replica.leader(),
            commit_index: self.replica.commit_index(),
            progress: self.replica.member_progress().unwrap_or_default(),
            membership,
            candidates,
        }
    }

    /// After every Ready: the transport connects to every member of the committed and the
    /// newest membership, at the address the membership names (or the bootstrap list's).
    /// A replica that knows no membership yet (it joins) keeps the bootstrap list.
    pub(super) fn refresh_peers(&mut self) {
        let committed = self.replica.committed_membership();
        let latest = self.replica.latest_membership();
        let mut peers = BTreeMap::new();
        if committed.is_empty() && latest.is_empty() {
            peers = self.bootstrap_addrs.clone();
        }
        for membership in [committed, latest] {
            for (&id, member) in &membership.members {
                let parsed = member.addr.parse::<SocketAddr>().ok();
                if let Some(addr) = parsed.or_else(|| self.bootstrap_addrs.get(&id).copied()) {
                    peers.insert(id, addr);
                }
            }
        }
        if peers != self.peer_addrs {
            tracing::info!(replica = self.id, ?peers, "peer addresses");
            self.transport.set_peers(peers.clone());
            self.status.lock().expect("status lock").peers = peers.clone();
            self.peer_addrs = peers;
        }
    }
}

fn outcome_unknown(slot: Slot) -> AdminRefusal {
    refusal(
        AdminReason::OutcomeUnknown,
        format!(
            "leadership changed before the change at slot {slot} committed: it may or may \
             not take effect; list the members to see"
        ),
    )
}
