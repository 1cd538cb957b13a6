//! The driver's half of request routing: any replica takes any proposal or read and
//! sends it to the leader over the peer channel, so clients never see "not leader".
//!
//! - A proposal goes to the local core if this replica leads, else to the leader as
//!   `Propose`. The leader reports the outcome when it applies the command (`Outcome`);
//!   this replica's own apply of the same slot answers too, whichever comes first.
//! - A read asks the leader for a read index (`ReadIndex`); the answer is usable once this
//!   replica has applied up to it.
//! - With no leader known, requests wait (re-sent every tick) until `request_timeout_ms`.
//! - A refusal (the peer does not lead, or is full) means nothing was proposed, so the
//!   request is sent again. A leader change re-sends reads, and proposals that are
//!   `retry_safe`; other proposals wait to be matched by apply until their deadline, then
//!   fail with `OutcomeUnknown`.

use bincode::Options;

use super::{
    driver_error, envelope_codec, Driver, DriverError, Envelope, Reply, Route, StateMachine,
};
use crate::consensus::{Ballot, NodeId, Role, Slot};
use crate::wire::{PeerMessage, PeerStatus, Refusal, RouterMessage};

/// Where requests go now.
pub(super) enum Target {
    Local,
    Peer(NodeId),
    Unknown,
}

impl<M: StateMachine> Driver<M> {
    /// A leader this replica has no link to (it committed its own removal, and no new one
    /// is elected yet) is no target: what would be sent to it waits for the next leader.
    pub(super) fn target(&self) -> Target {
        let soft = self.replica.soft_state();
        match soft.leader {
            Some(leader) if leader == self.id && soft.role == Role::Leader => Target::Local,
            Some(leader) if leader != self.id && self.peer_addrs.contains_key(&leader) => {
                Target::Peer(leader)
            }
            _ => Target::Unknown,
        }
    }

    pub(super) fn send_router(&self, to: NodeId, body: RouterMessage) {
        self.transport.send(PeerMessage::Router {
            from: self.id,
            to,
            body,
        });
    }

    pub(super) fn dispatch_proposal(&mut self, sequence: u64) {
        let Some(envelope) = self.proposals.get(&sequence).map(|p| p.envelope.clone()) else {
            return;
        };
        let route = match self.target() {
            Target::Unknown => Route::Waiting,
            Target::Peer(leader) => {
                self.send_router(leader, RouterMessage::Propose { sequence, envelope });
                Route::Forwarded(leader)
            }
            Target::Local => match self.replica.propose(envelope) {
                Ok(()) => Route::Local,
                Err(crate::consensus::Error::NotLeader { .. }) => Route::Waiting,
                Err(error) => return self.fail_proposal(sequence, driver_error(error)),
            },
        };
        let proposal = self.proposals.get_mut(&sequence).expect("present");
        proposal.copies += u32::from(route != Route::Waiting);
        proposal.route = route;
    }

    pub(super) fn dispatch_read(&mut self, context: u64) {
        let target = self.target();
        let route = match target {
            Target::Unknown => Route::Waiting,
            Target::Peer(leader) => {
                let incarnation = self.incarnation;
                self.send_router(
                    leader,
                    RouterMessage::ReadIndex {
                        incarnation,
                        context,
                    },
                );
                Route::Forwarded(leader)
            }
            Target::Local => match self.replica.read_index(context) {
                Ok(()) => Route::Local,
                Err(crate::consensus::Error::NotLeader { .. }) => Route::Waiting,
                Err(error) => {
                    if let Some(read) = self.reads.remove(&context) {
                        let _ = read.reply.send(Err(driver_error(error)));
                    }
                    return;
                }
            },
        };
        if let Some(read) = self.reads.get_mut(&context) {
            read.route = route;
        }
    }

    /// Every tick: send again what waits for a leader.
    pub(super) fn dispatch_waiting(&mut self) {
        if matches!(self.target(), Target::Unknown) {
            return;
        }
        let waiting = |route: &Route| *route == Route::Waiting;
        let proposals: Vec<u64> = (self.proposals.iter())
            .filter(|(_, p)| waiting(&p.route))
            .map(|(&s, _)| s)
            .collect();
        for sequence in proposals {
            self.dispatch_proposal(sequence);
        }
        let reads: Vec<u64> = (self.reads.iter())
            .filter(|(_, r)| waiting(&r.route))
            .map(|(&c, _)| c)
            .collect();
        for context in reads {
            self.dispatch_read(context);
        }
    }

    /// After a Ready with a new soft state: if the leadership changed (another leader, or
    /// the same one at a new ballot: it dropped what it held when it stepped down), what was
    /// sent under the old one is sent again where that is safe.
    pub(super) fn on_leader_maybe_changed(&mut self) {
        let soft = self.replica.soft_state();
        let leadership: Option<(NodeId, Ballot)> = soft.leader.map(|l| (l, soft.ballot));
        if leadership == self.leadership {
            return;
        }
        self.leadership = leadership;
        self.on_leadership_noticed(leadership);
        // Everything sent under the old leadership is stale.
        let stale = |route: &Route| *route != Route::Waiting;
        let proposals: Vec<u64> = (self.proposals.iter())
            .filter(|(_, p)| p.retry_safe && stale(&p.route))
            .map(|(&s, _)| s)
            .collect();
        for sequence in proposals {
            self.dispatch_proposal(sequence);
        }
        let reads: Vec<u64> = (self.reads.iter())
            .filter(|(_, r)| stale(&r.route))
            .map(|(&c, _)| c)
            .collect();
        for context in reads {
            self.dispatch_read(context);
        }
        if !matches!(self.target(), Target::Local) {
            self.refuse_forwarded_reads();
        }
    }

    /// Logs a change of leadership, and counts it if it differs from the last one known
    /// (losing sight of a leader and finding it again at the same ballot is no change).
    fn on_leadership_noticed(&mut self, leadership: Option<(NodeId, Ballot)>) {
        let Some((leader, ballot)) = leadership else {
            tracing::info!(replica = self.id, "no leader known");
            return;
        };
        if self.last_leadership.replace((leader, ballot)) != Some((leader, ballot)) {
            self.options.metrics.leader_changes.inc();
        }
        let ballot = ballot.to_string();
        tracing::info!(replica = self.id, leader, %ballot, "leader changed");
    }

    /// No longer leader: peers waiting on this core's read index must ask the new one.
    fn refuse_forwarded_reads(&mut self) {
        let leader = self.replica.leader();
        for (_, (peer, incarnation, context)) in std::mem::take(&mut self.forwarded_reads) {
            let refusal = Refusal::NotLeader { leader };
            let body = RouterMessage::ReadIndexRefused {
                incarnation,
                context,
                refusal,
            };
            self.send_router(peer, body);
        }
    }

    /// Fails a proposal; one that may have reached a core reports an unknown outcome, as
    /// it may still be chosen.
    pub(super) fn fail_proposal(&mut self, sequence: u64, error: DriverError) {
        let Some(proposal) = self.proposals.remove(&sequence) else {
            return;
        };
        let error = match proposal.copies > 0 {
            true => DriverError::OutcomeUnknown,
            false => error,
        };
        let _ = proposal.reply.send(Err(error));
    }

    /// Every tick: fail what waited too long.
    pub(super) fn expire_requests(&mut self) {
        let now = self.ticks;
        let expired: Vec<u64> = (self.proposals.iter())
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&s, _)| s)
            .collect();
        for sequence in expired {
            // A refused forward was never proposed; anything else sent may yet be chosen.
            self.fail_proposal(sequence, DriverError::NoLeader);
        }
        let expired: Vec<u64> = (self.reads.iter())
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&c, _)| c)
            .collect();
        for context in expired {
            let read = self.reads.remove(&context).expect("present");
            let _ = read.reply.send(Err(DriverError::NoLeader));
        }
        let expired: Vec<u64> = (self.status_requests.iter())
            .filter(|(_, (_, deadline, _))| *deadline <= now)
            .map(|(&c, _)| c)
            .collect();
        for context in expired {
            let (reply, _, peer) = self.status_requests.remove(&context).expect("present");
            let _ = reply.send(Err(DriverError::PeerUnreachable(peer)));
        }
        self.forwarded.retain(|_, deadline| *deadline > now);
    }

    pub(super) fn on_router(&mut self, from: NodeId, body: RouterMessage) {
        let own = self.incarnation;
        match body {
            RouterMessage::Propose { sequence, envelope } => {
                self.on_forwarded_propose(from, sequence, envelope)
            }
            RouterMessage::ReadIndex {
                incarnation,
                context,
            } => self.on_forwarded_read(from, incarnation, context),
            RouterMessage::Status {
                incarnation,
                context,
            } => {
                let status = self.status.lock().expect("status lock").to_peer_status();
                let body = RouterMessage::StatusReply {
                    incarnation,
                    context,
                    status,
                };
                self.send_router(from, body);
            }
            RouterMessage::Admin {
                incarnation,
                context,
                request,
            } => self.on_admin_request(from, incarnation, context, request),
            RouterMessage::Digests {
                base,
                first,
                digests,
            } => self.on_digests(from, base, first, &digests),
            // Replies: only for this run of this replica.
            RouterMessage::ProposeRefused { incarnation, .. }
            | RouterMessage::AdminReply { incarnation, .. }
            | RouterMessage::Outcome { incarnation, .. }
            | RouterMessage::ReadIndexRefused { incarnation, .. }
            | RouterMessage::ReadIndexReply { incarnation, .. }
            | RouterMessage::StatusReply { incarnation, .. }
                if incarnation != own => {}
            RouterMessage::ProposeRefused {
                sequence, refusal, ..
            } => self.on_propose_refused(from, sequence, refusal),
            RouterMessage::Outcome {
                sequence, outcome, ..
            } => self.on_forwarded_outcome(sequence, &outcome),
            RouterMessage::ReadIndexRefused {
                context, refusal, ..
            } => self.on_read_refused(from, context, refusal),
            // From any leader this run asked (the read may have been re-sent since): its
            // read point came after the read began, so it is valid.
            RouterMessage::ReadIndexReply { context, index, .. } => {
                self.on_read_index_known(context, index)
            }
            RouterMessage::AdminReply {
                context, result, ..
            } => self.on_admin_reply(from, context, result),
            RouterMessage::StatusReply {
                context, status, ..
            } => {
                if let Some((reply, _, _)) = self.status_requests.remove(&context) {
                    let _ = reply.send(Ok(status));
                }
            }
        }
    }

    /// As leader: propose a peer's command, remembering to report its outcome.
    fn on_forwarded_propose(&mut self, from: NodeId, sequence: u64, envelope: Vec<u8>) {
        let decoded: Result<Envelope, _> = envelope_codec().deserialize(&envelope);
        let incarnation = decoded.as_ref().map_or(0, |e| e.incarnation);
        let refusal = match decoded {
            Err(error) => Some(Refusal::Rejected(format!("malformed envelope: {error}"))),
            Ok(e) if e.origin != from || e.sequence != sequence => Some(Refusal::Rejected(
                "envelope does not match its sender".into(),
            )),
            Ok(_) if self.forwarded.len() >= self.options.forwarded_max => {
                Some(Refusal::Busy("forwarded commands at forwarded_max".into()))
            }
            Ok(e) => {
                let id = (e.origin, e.incarnation, e.sequence);
                match self.replica.propose(envelope) {
                    Ok(()) => {
                        let deadline = self.deadline(self.options.request_timeout_ms);
                        self.forwarded.insert(id, deadline);
                        None
                    }
                    Err(crate::consensus::Error::NotLeader { leader }) => {
                        Some(Refusal::NotLeader { leader })
                    }
                    Err(error @ crate::consensus::Error::ProposalQueueFull { .. }) => {
                        Some(Refusal::Busy(error.to_string()))
                    }
                    Err(error) => Some(Refusal::Rejected(error.to_string())),
                }
            }
        };
        if let Some(refusal) = refusal {
            let body = RouterMessage::ProposeRefused {
                incarnation,
                sequence,
                refusal,
            };
            self.send_router(from, body);
        }
    }

    /// A refusal from the peer the proposal was last sent to: that copy was not proposed.
    fn on_propose_refused(&mut self, from: NodeId, sequence: u64, refusal: Refusal) {
        let Some(proposal) = self.proposals.get_mut(&sequence) else {
            return;
        };
        if proposal.route != Route::Forwarded(from) {
            return; // already sent elsewhere since
        }
        // That copy was not proposed; another one sent before it may have been.
        proposal.copies = proposal.copies.saturating_sub(1);
        let error = match refusal {
            // Sent again on the next tick, to whoever leads by then.
            Refusal::NotLeader { .. } => {
                proposal.route = Route::Waiting;
                return;
            }
            Refusal::Busy(reason) => DriverError::Busy(reason),
            Refusal::Rejected(reason) => DriverError::Rejected(reason),
        };
        self.fail_proposal(sequence, error);
    }

    pub(super) fn send_outcome(&self, envelope: &Envelope, outcome: &M::Outcome) {
        let outcome = envelope_codec()
            .serialize(outcome)
            .expect("outcomes encode");
        let body = RouterMessage::Outcome {
            incarnation: envelope.incarnation,
            sequence: envelope.sequence,
            outcome,
        };
        self.send_router(envelope.origin, body);
    }

    fn on_forwarded_outcome(&mut self, sequence: u64, outcome: &[u8]) {
        if !self.proposals.contains_key(&sequence) {
            return;
        }
        let proposal = self.proposals.remove(&sequence).expect("present");
        let outcome = envelope_codec()
            .deserialize(outcome)
            .map_err(|error| DriverError::Rejected(format!("undecodable outcome: {error}")));
        self.answer_proposal(proposal, outcome);
    }

    /// As leader: start a read index on a peer's behalf.
    fn on_forwarded_read(&mut self, from: NodeId, incarnation: u64, context: u64) {
        let refusal = if self.forwarded_reads.len() >= self.options.forwarded_max {
            Refusal::Busy("forwarded reads at forwarded_max".into())
        } else {
            let local = self.take_sequence();
            match self.replica.read_index(local) {
                Ok(()) => {
                    self.forwarded_reads
                        .insert(local, (from, incarnation, context));
                    return;
                }
                Err(crate::consensus::Error::NotLeader { leader }) => Refusal::NotLeader { leader },
                Err(error) => Refusal::Busy(error.to_string()),
            }
        };
        let body = RouterMessage::ReadIndexRefused {
            incarnation,
            context,
            refusal,
        };
        self.send_router(from, body);
    }

    pub(super) fn send_read_index_reply(
        &self,
        peer: NodeId,
        incarnation: u64,
        context: u64,
        index: Slot,
    ) {
        let body = RouterMessage::ReadIndexReply {
            incarnation,
            context,
            index,
        };
        self.send_router(peer, body);
    }

    fn on_read_refused(&mut self, from: NodeId, context: u64, refusal: Refusal) {
        let Some(read) = self.reads.get_mut(&context) else {
            return;
        };
        if read.route != Route::Forwarded(from) {
            return; // already sent elsewhere since
        }
        let error = match refusal {
            Refusal::NotLeader { .. } => {
                read.route = Route::Waiting;
                return;
            }
            Refusal::Busy(reason) => DriverError::Busy(reason),
            Refusal::Rejected(reason) => DriverError::Rejected(reason),
        };
        let read = self.reads.remove(&context).expect("present");
        let _ = read.reply.send(Err(error));
    }

    pub(super) fn on_peer_status(&mut self, peer: NodeId, reply: Reply<PeerStatus>) {
        let context = self.take_sequence();
        let deadline = self.deadline(self.options.status_timeout_ms);
        self.status_requests
            .insert(context, (reply, deadline, peer));
        let incarnation = self.incarnation;
        let body = RouterMessage::Status {
            incarnation,
            context,
        };
        self.send_router(peer, body);
    }
}
