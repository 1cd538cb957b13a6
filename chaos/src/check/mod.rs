//! Checkers: each reads a history's operations and returns a verdict with its evidence.
//!
//! `Valid` means the checker found nothing wrong; `Violation` means the history proves the
//! property false; `Unknown` means the checker could not decide (its search budget ran out,
//! or the history lacks what it needs, such as a final read). Unknown is never reported as
//! valid.
use serde::{Deserialize, Serialize};

pub mod bank;
pub mod linearizable;
pub mod set;
pub mod watch;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    Valid,
    Violation(String),
    Unknown(String),
}

impl Verdict {
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::Violation(_))
    }

    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid)
    }

    /// The worse of two verdicts: any violation beats unknown, which beats valid.
    pub fn worst(self, other: Verdict) -> Verdict {
        match (&self, &other) {
            (Verdict::Violation(_), _) => self,
            (_, Verdict::Violation(_)) => other,
            (Verdict::Unknown(_), _) => self,
            (_, Verdict::Unknown(_)) => other,
            _ => Verdict::Valid,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Violation(_) => "VIOLATION",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// One line for an operation in a witness: process, call, outcome and interval in ms.
pub fn describe(operation: &crate::history::Operation) -> String {
    use crate::history::Outcome;
    let outcome = match &operation.outcome {
        Outcome::Ok(reply) => format!("ok {reply:?}"),
        Outcome::Fail(why) => format!("fail ({why})"),
        Outcome::Unknown(why) => format!("unknown ({why})"),
    };
    let end = match operation.complete_ns {
        Some(ns) => format!("{:.3}", ns as f64 / 1e6),
        None => "inf".into(),
    };
    format!(
        "op {} p{} {:?} -> {outcome} [{:.3} ms .. {end} ms]",
        operation.id,
        operation.process,
        operation.call,
        operation.invoke_ns as f64 / 1e6
    )
}
