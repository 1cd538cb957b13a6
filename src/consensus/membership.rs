//! Cluster membership: which replicas vote, which only learn, and the one rule every change
//! keeps. A membership lives in the log as a `Value::Membership` slot; the membership that
//! governs slot `t` is the one in the latest membership slot before `t` (or the base one a
//! bootstrap or a snapshot set). See docs/consensus.md, "Membership changes".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::NodeId;

/// One replica of the membership. `incarnation` names one life of the replica's disk: a
/// replica that lost its data comes back with a new incarnation and is not this member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub incarnation: u64,
    /// Counts in quorums. A learner receives the log but never votes.
    pub voter: bool,
    /// Its peer address (`host:port`), for the driver's transport; the core ignores it.
    pub addr: String,
}

impl Member {
    /// `voter` or `learner`, as status and logs name it.
    pub fn kind(&self) -> &'static str {
        if self.voter {
            "voter"
        } else {
            "learner"
        }
    }
}

/// Every replica of the cluster, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
}

/// A change an operator asks for. Each keeps the voters of the new membership within one
/// replica of the old one (see `Membership::check_successor`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// A new learner. A voter of the same id but another incarnation (a replica that lost
    /// its disk) is replaced by it: that removes one voter.
    AddLearner {
        id: NodeId,
        incarnation: u64,
        addr: String,
    },
    /// A learner becomes a voter.
    Promote { id: NodeId },
    /// A voter or learner leaves.
    Remove { id: NodeId },
}

/// Why a change cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("replica {0} is not a member")]
    UnknownMember(NodeId),
    #[error("replica {id} is already a member with incarnation {incarnation}")]
    AlreadyMember { id: NodeId, incarnation: u64 },
    #[error("replica {0} is already a voter")]
    AlreadyVoter(NodeId),
    #[error("the last voter cannot be removed")]
    LastVoter,
    #[error("the voters would change by {0} replicas; one change may add or remove one")]
    TooManyVoterChanges(usize),
    #[error("at most {max} members are supported")]
    TooManyMembers { max: usize },
}

/// Members beyond this are refused (quorums are small sets in every message).
pub const MEMBERS_MAX: usize = 15;

impl Membership {
    /// The first membership of a new cluster: every replica a voter, at incarnation 1 unless
    /// given.
    pub fn bootstrap(members: impl IntoIterator<Item = (NodeId, u64, String)>) -> Membership {
        let members = members
            .into_iter()
            .map(|(id, incarnation, addr)| {
                let member = Member {
                    incarnation,
                    voter: true,
                    addr,
                };
                (id, member)
            })
            .collect();
        Membership { members }
    }

    /// Voters named by id only, at incarnation 1 (tests and the simulator).
    pub fn of_voters(ids: &[NodeId]) -> Membership {
        Membership::bootstrap(ids.iter().map(|&id| (id, 1, String::new())))
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        (self.members.iter())
            .filter(|(_, member)| member.voter)
            .map(|(&id, _)| id)
    }

    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }

    /// Votes needed among the voters (a majority).
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }

    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|member| member.voter)
    }

    /// Whether `id` at `incarnation` is a voter here.
    pub fn is_voter_at(&self, id: NodeId, incarnation: u64) -> bool {
        (self.members.get(&id)).is_some_and(|m| m.voter && m.incarnation == incarnation)
    }

    /// Whether the voters among `ids` make a quorum.
    pub fn has_quorum<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> bool {
        let votes = ids.into_iter().filter(|&&id| self.is_voter(id)).count();
        votes >= self.quorum()
    }

    /// The membership `change` makes of this one.
    pub fn changed(&self, change: &MembershipChange) -> Result<Membership, MembershipError> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner {
                id,
                incarnation,
                addr,
            } => {
                if let Some(member) = self.members.get(id) {
                    if member.incarnation == *incarnation {
                        return Err(MembershipError::AlreadyMember {
                            id: *id,
                            incarnation: *incarnation,
                        });
                    }
                }
                let member = Member {
                    incarnation: *incarnation,
                    voter: false,
                    addr: addr.clone(),
                };
                next.members.insert(*id, member);
            }
            MembershipChange::Promote { id } => {
                let member = next.members.get_mut(id);
                let member = member.ok_or(MembershipError::UnknownMember(*id))?;
                if member.voter {
                    return Err(MembershipError::AlreadyVoter(*id));
                }
                member.voter = true;
            }
            MembershipChange::Remove { id } => {
                if next.members.remove(id).is_none() {
                    return Err(MembershipError::UnknownMember(*id));
                }
            }
        }
        self.check_successor(&next)?;
        Ok(next)
    }

    /// The rule that makes a change safe without joint consensus (Raft's single-server
    /// change, Ongaro's thesis §4.1): the voters, as (id, incarnation) pairs, differ by at
    /// most one, so every majority of the old voters meets every majority of the new.
    pub fn check_successor(&self, next: &Membership) -> Result<(), MembershipError> {
        if next.members.len() > MEMBERS_MAX {
            return Err(MembershipError::TooManyMembers { max: MEMBERS_MAX });
        }
        if next.voter_count() == 0 {
            return Err(MembershipError::LastVoter);
        }
        let changed = self.voter_difference(next);
        if changed > 1 {
            return Err(MembershipError::TooManyVoterChanges(changed));
        }
        Ok(())
    }

    /// How many (id, incarnation) voters one has and the other lacks.
    pub fn voter_difference(&self, other: &Membership) -> usize {
        let voters = |m: &Membership| -> Vec<(NodeId, u64)> {
            (m.members.iter())
                .filter(|(_, member)| member.voter)
                .map(|(&id, member)| (id, member.incarnation))
                .collect()
        };
        let (ours, theirs) = (voters(self), voters(other));
        let only_ours = ours.iter().filter(|v| !theirs.contains(v)).count();
        let only_theirs = theirs.iter().filter(|v| !ours.contains(v)).count();
        only_ours + only_theirs
    }
}

impl std::fmt::Display for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (id, member) in &self.members {
            if !first {
                write!(f, " ")?;
            }
            first = false;
            write!(f, "{id}:{}@{}", member.kind(), member.incarnation)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_moves_the_voters_by_at_most_one() {
        let three = Membership::of_voters(&[1, 2, 3]);
        let add = MembershipChange::AddLearner {
            id: 4,
            incarnation: 7,
            addr: "a".into(),
        };
        let with_learner = three.changed(&add).unwrap();
        assert_eq!(with_learner.voter_count(), 3);
        let four = (with_learner.changed(&MembershipChange::Promote { id: 4 })).unwrap();
        assert_eq!(four.quorum(), 3);
        let back = four.changed(&MembershipChange::Remove { id: 1 }).unwrap();
        assert_eq!(back.voters().collect::<Vec<_>>(), vec![2, 3, 4]);
        // Two voters at once is refused.
        assert_eq!(
            three.check_successor(&Membership::of_voters(&[1, 2, 3, 4, 5])),
            Err(MembershipError::TooManyVoterChanges(2))
        );
        // A new incarnation of a voter replaces it: one voter removed.
        let replaced = three
            .changed(&MembershipChange::AddLearner {
                id: 3,
                incarnation: 9,
                addr: "b".into(),
            })
            .unwrap();
        assert_eq!(replaced.voters().collect::<Vec<_>>(), vec![1, 2]);
        assert!(!replaced.is_voter_at(3, 1));
        let again = replaced
            .changed(&MembershipChange::Promote { id: 3 })
            .unwrap();
        assert!(again.is_voter_at(3, 9));
    }

    #[test]
    fn refusals_are_typed() {
        let one = Membership::of_voters(&[1]);
        assert_eq!(
            one.changed(&MembershipChange::Remove { id: 1 }),
            Err(MembershipError::LastVoter)
        );
        assert_eq!(
            one.changed(&MembershipChange::Promote { id: 2 }),
            Err(MembershipError::UnknownMember(2))
        );
        assert_eq!(
            one.changed(&MembershipChange::Promote { id: 1 }),
            Err(MembershipError::AlreadyVoter(1))
        );
    }
}
