//! Bank: transfers move money between accounts in transactions, so every snapshot read of
//! all accounts must show the starting total, and no account may ever go negative.
//!
//! The total and the number of accounts come from the history's one successful
//! `BankInit`; a read taken in a snapshot that is not atomic with respect to transfers
//! (a torn read, or a transfer applied halfway) shows a different sum.
use serde::{Deserialize, Serialize};

use super::{describe, Verdict};
use crate::history::{Call, Operation, Reply};

/// Bad reads listed in the result, at most.
const BAD_READS_LISTED_MAX: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankResult {
    pub verdict: Verdict,
    pub total: i64,
    pub accounts: usize,
    pub reads_ok: usize,
    pub transfers_ok: usize,
    pub bad_reads: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witness: Vec<String>,
}

pub fn check(operations: &[Operation]) -> BankResult {
    let init = operations
        .iter()
        .find_map(|op| match (&op.call, op.reply()) {
            (Call::BankInit { balances }, Some(_)) => Some(balances.clone()),
            _ => None,
        });
    let transfers_ok = (operations.iter())
        .filter(|op| matches!(op.call, Call::Transfer { .. }) && op.is_ok())
        .count();
    let Some(init) = init else {
        return BankResult {
            verdict: Verdict::Unknown("no acknowledged BankInit in the history".into()),
            total: 0,
            accounts: 0,
            reads_ok: 0,
            transfers_ok,
            bad_reads: 0,
            witness: Vec::new(),
        };
    };
    let total: i64 = init.iter().sum();
    let mut reads_ok = 0;
    let mut witness = Vec::new();
    let mut bad_reads = 0;
    for operation in operations {
        let Some(Reply::Balances { balances }) = operation.reply() else {
            continue;
        };
        reads_ok += 1;
        if let Some(problem) = read_problem(balances, init.len(), total) {
            bad_reads += 1;
            if witness.len() < BAD_READS_LISTED_MAX {
                witness.push(format!("{problem}: {}", describe(operation)));
            }
        }
    }
    let verdict = match bad_reads {
        0 => Verdict::Valid,
        n => Verdict::Violation(format!("{n} of {reads_ok} reads are wrong")),
    };
    BankResult {
        verdict,
        total,
        accounts: init.len(),
        reads_ok,
        transfers_ok,
        bad_reads,
        witness,
    }
}

fn read_problem(balances: &[i64], accounts: usize, total: i64) -> Option<String> {
    if balances.len() != accounts {
        return Some(format!("{} accounts, not {accounts}", balances.len()));
    }
    let sum: i64 = balances.iter().sum();
    if sum != total {
        return Some(format!("sum {sum}, not {total}"));
    }
    let negative = balances.iter().position(|&b| b < 0)?;
    Some(format!("account {negative} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use crate::history::Event;

    const INIT: [i64; 3] = [10, 10, 10];

    fn with_reads(reads: &[Vec<i64>]) -> Vec<Event> {
        let init = Call::BankInit {
            balances: INIT.to_vec(),
        };
        let transfer = Call::Transfer {
            from: 0,
            to: 1,
            amount: 5,
        };
        let mut events = vec![
            invoke(1, 0, init.clone()),
            ok(1, 1, init, Reply::Written { version: 1 }),
            invoke(1, 2, transfer.clone()),
            ok(1, 3, transfer, Reply::Written { version: 2 }),
        ];
        let read = Call::BankRead {
            at_read_version: true,
        };
        for (n, balances) in reads.iter().enumerate() {
            let time = 10 + 2 * n as u64;
            events.push(invoke(2, time, read.clone()));
            let balances = balances.clone();
            events.push(ok(2, time + 1, read.clone(), Reply::Balances { balances }));
        }
        events
    }

    fn run(events: Vec<Event>) -> BankResult {
        check(&crate::history::History { events }.operations().unwrap())
    }

    #[test]
    fn reads_that_sum_to_the_total_are_valid() {
        let result = run(with_reads(&[vec![10, 10, 10], vec![5, 15, 10]]));
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
        assert_eq!(
            (result.total, result.reads_ok, result.transfers_ok),
            (30, 2, 1)
        );
    }

    #[test]
    fn a_torn_read_is_a_violation() {
        // Half a transfer: the debit is visible, the credit is not.
        let result = run(with_reads(&[vec![10, 10, 10], vec![5, 10, 10]]));
        assert!(result.verdict.is_violation(), "{result:?}");
        assert_eq!(result.bad_reads, 1);
        assert!(result.witness[0].contains("sum 25"), "{:?}", result.witness);
    }

    #[test]
    fn a_negative_balance_is_a_violation_even_with_the_right_sum() {
        let result = run(with_reads(&[vec![-5, 25, 10]]));
        assert!(result.verdict.is_violation(), "{result:?}");
        assert!(
            result.witness[0].contains("negative"),
            "{:?}",
            result.witness
        );
    }

    #[test]
    fn a_read_missing_an_account_is_a_violation() {
        let result = run(with_reads(&[vec![20, 10]]));
        assert!(result.verdict.is_violation(), "{result:?}");
    }

    #[test]
    fn without_an_init_the_verdict_is_unknown() {
        let mut events = with_reads(&[vec![10, 10, 10]]);
        events.drain(..2);
        assert!(matches!(run(events).verdict, Verdict::Unknown(_)));
    }
}
