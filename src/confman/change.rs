//! The change-set state machine: which action takes a change set from which state to
//! which. Who may act is checked elsewhere (`access`); this is only the shape.
//!
//! ```text
//!   draft --submit--> in_review --approve (enough)--> approved --publish--> published
//!     ^                  |  |                           |  |
//!     +------edit--------+  +--reject--> rejected <-----+  |
//!     +------edit / rebase (drops approvals)---------------+
//!   draft | in_review | approved --abandon--> abandoned
//!   draft | in_review | approved --emergency publish (admin, with a reason)--> published
//! ```
//! `published`, `rejected` and `abandoned` are final: a rejected change is not reopened,
//! its author creates a new one (the rejection and its comment stay on record).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Draft,
    InReview,
    Approved,
    Published,
    Rejected,
    Abandoned,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Draft,
        State::InReview,
        State::Approved,
        State::Published,
        State::Rejected,
        State::Abandoned,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Draft => "draft",
            State::InReview => "in_review",
            State::Approved => "approved",
            State::Published => "published",
            State::Rejected => "rejected",
            State::Abandoned => "abandoned",
        }
    }

    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.name() == name)
    }

    pub fn is_final(self) -> bool {
        matches!(self, State::Published | State::Rejected | State::Abandoned)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Edit,
    Submit,
    Approve,
    Reject,
    Abandon,
    Rebase,
    Publish,
    EmergencyPublish,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Edit,
        Action::Submit,
        Action::Approve,
        Action::Reject,
        Action::Abandon,
        Action::Rebase,
        Action::Publish,
        Action::EmergencyPublish,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Edit => "edit",
            Action::Submit => "submit",
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Abandon => "abandon",
            Action::Rebase => "rebase",
            Action::Publish => "publish",
            Action::EmergencyPublish => "emergency_publish",
        }
    }
}

/// The state `action` leads to from `state`, or None when it is not allowed there. An
/// approval leaves a change in review; the caller moves it to `approved` once every
/// namespace it touches has enough approvals.
pub fn next(state: State, action: Action) -> Option<State> {
    use Action as A;
    use State as S;
    match (state, action) {
        (S::Published | S::Rejected | S::Abandoned, _) => None,
        (_, A::Edit | A::Rebase) => Some(S::Draft),
        (_, A::Abandon) => Some(S::Abandoned),
        (_, A::EmergencyPublish) => Some(S::Published),
        (S::Draft, A::Submit) => Some(S::InReview),
        (S::Draft, A::Approve | A::Reject | A::Publish) => None,
        (S::InReview | S::Approved, A::Submit) => None,
        (S::InReview, A::Approve) => Some(S::InReview),
        (S::Approved, A::Approve) => Some(S::Approved),
        (S::InReview | S::Approved, A::Reject) => Some(S::Rejected),
        (S::InReview, A::Publish) => None,
        (S::Approved, A::Publish) => Some(S::Published),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (state, action) pair, written out: the expected state, or None for refused.
    #[test]
    fn every_transition_is_allowed_or_refused_as_designed() {
        use Action as A;
        use State as S;
        let table: &[(S, A, Option<S>)] = &[
            (S::Draft, A::Edit, Some(S::Draft)),
            (S::Draft, A::Submit, Some(S::InReview)),
            (S::Draft, A::Approve, None),
            (S::Draft, A::Reject, None),
            (S::Draft, A::Abandon, Some(S::Abandoned)),
            (S::Draft, A::Rebase, Some(S::Draft)),
            (S::Draft, A::Publish, None),
            (S::Draft, A::EmergencyPublish, Some(S::Published)),
            (S::InReview, A::Edit, Some(S::Draft)),
            (S::InReview, A::Submit, None),
            (S::InReview, A::Approve, Some(S::InReview)),
            (S::InReview, A::Reject, Some(S::Rejected)),
            (S::InReview, A::Abandon, Some(S::Abandoned)),
            (S::InReview, A::Rebase, Some(S::Draft)),
            (S::InReview, A::Publish, None),
            (S::InReview, A::EmergencyPublish, Some(S::Published)),
            (S::Approved, A::Edit, Some(S::Draft)),
            (S::Approved, A::Submit, None),
            (S::Approved, A::Approve, Some(S::Approved)),
            (S::Approved, A::Reject, Some(S::Rejected)),
            (S::Approved, A::Abandon, Some(S::Abandoned)),
            (S::Approved, A::Rebase, Some(S::Draft)),
            (S::Approved, A::Publish, Some(S::Published)),
            (S::Approved, A::EmergencyPublish, Some(S::Published)),
        ];
        assert_eq!(table.len(), 24);
        for &(state, action, expected) in table {
            assert_eq!(next(state, action), expected, "{state:?} --{action:?}-->");
        }
        for state in [S::Published, S::Rejected, S::Abandoned] {
            assert!(state.is_final());
            for action in Action::ALL {
                assert_eq!(next(state, action), None, "{state:?} is final");
            }
        }
    }

    #[test]
    fn state_names_round_trip() {
        for state in State::ALL {
            assert_eq!(State::parse(state.name()), Some(state));
        }
        assert_eq!(State::parse("merged"), None);
    }
}
