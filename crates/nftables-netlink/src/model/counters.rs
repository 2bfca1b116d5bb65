//! What the counters of a table's rules have counted, as one dump read them. Kept beside
//! the table, not in it: counts change with every packet, so they never make two tables
//! differ (a rule's `counter` expression is [`Expr::Counter`](super::Expr::Counter),
//! whatever it holds).

use std::collections::BTreeMap;

/// The values of one `counter` expression (`NFTA_COUNTER_PACKETS`, `NFTA_COUNTER_BYTES`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub packets: u64,
    pub bytes: u64,
}

/// Per chain, per rule (in the chain's order), the values of the rule's counter
/// expressions (in the rule's order; empty for a rule without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCounters {
    chains: BTreeMap<String, Vec<Vec<CounterValues>>>,
}

impl TableCounters {
    /// Appends the next rule of `chain` with its counters.
    pub fn push_rule(&mut self, chain: &str, counters: Vec<CounterValues>) {
        self.chains
            .entry(chain.to_owned())
            .or_default()
            .push(counters);
    }

    /// The counters of rule `index` (0-based, in chain order) of `chain`; empty when it
    /// has none or there is no such rule.
    pub fn rule(&self, chain: &str, index: usize) -> &[CounterValues] {
        self.chains
            .get(chain)
            .and_then(|rules| rules.get(index))
            .map_or(&[], Vec::as_slice)
    }
}
