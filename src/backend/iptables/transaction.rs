//! Committing one transaction per family so that a failure leaves both families as they
//! were: every payload is tested (`iptables-restore --test`) before any is committed when
//! more than one family changes, and if a commit still fails, the families that did commit
//! are converged back to what they held before. A fresh install skips the test: nothing of
//! ours was there, so its undo is exact, and a new pod pays two processes instead of four.

use tracing::{error, warn};

use super::tools::IptablesTools;
use crate::backend::TimeBudget;
use crate::error::Result;
use crate::ruleset::Family;

/// One family's change: the payload that makes it, and the payload that undoes it.
#[derive(Debug)]
pub struct FamilyTransaction<'a> {
    pub tools: &'a IptablesTools,
    pub payload: String,
    /// `None` when there is nothing to undo (the payload only removes what a failed run may
    /// leave removed).
    pub undo: Option<String>,
}

impl FamilyTransaction<'_> {
    fn family(&self) -> Family {
        self.tools.family
    }
}

/// Runs `job` for each transaction at the same time (the tables are independent, so two
/// transactions cost about one) and returns the results in order.
fn side_by_side<'a, T: Sync>(
    items: &'a [T],
    job: impl Fn(&'a T) -> Result<()> + Sync,
) -> Vec<Result<()>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|item| s.spawn(|| job(item))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("transaction thread does not panic"))
            .collect()
    })
}

/// Commits every transaction, or none: see the module documentation. `test_first` may be
/// false only where every undo is exact (a fresh install: undoing removes what was added).
pub fn commit_all(
    transactions: &[FamilyTransaction<'_>],
    budget: &TimeBudget,
    test_first: bool,
) -> Result<()> {
    if test_first && transactions.len() > 1 {
        for result in side_by_side(transactions, |t| t.tools.test(&t.payload, budget)) {
            result?;
        }
    }
    let results = side_by_side(transactions, |t| t.tools.restore(&t.payload, budget));
    let Some(failed) = results.iter().position(Result::is_err) else {
        return Ok(());
    };
    for (transaction, result) in transactions.iter().zip(&results) {
        if result.is_err() {
            continue;
        }
        let Some(undo) = &transaction.undo else {
            continue;
        };
        let family = transaction.family();
        match transaction.tools.restore(undo, &TimeBudget::for_undo()) {
            Ok(()) => warn!(
                %family,
                failed_family = %transactions[failed].family(),
                "undid the {family} change because the other family's transaction failed"
            ),
            Err(e) => error!(
                %family,
                error = %e,
                "could not undo the {family} change after the other family failed; run \
                 apply again to converge"
            ),
        }
    }
    results
        .into_iter()
        .find(Result::is_err)
        .expect("one failed")
}
