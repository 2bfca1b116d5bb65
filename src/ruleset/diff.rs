//! How an installed table differs from a desired ruleset, as values: which chains and rules
//! are missing, which installed rules of ours are not wanted (stale, duplicate, or of a shape
//! meshinit never writes), and which of our chains hold the right rules in the wrong order.

use std::collections::HashSet;

use serde::Serialize;

use super::{InstalledRule, InstalledTable, Rule, Ruleset};

/// The differences, typed; empty when in sync.
#[derive(Debug, Default)]
pub struct RuleDiff<'a> {
    pub missing_chains: Vec<&'a str>,
    pub unexpected_chains: Vec<&'a str>,
    /// Desired rules (in our chains, or jumps) that are not installed.
    pub missing: Vec<&'a Rule>,
    /// Installed rules of ours (in our chains, or jumps into them) that are not desired.
    pub unexpected: Vec<&'a InstalledRule>,
    /// Our chains holding the right rules in the wrong order.
    pub misordered_chains: Vec<&'a str>,
}

impl RuleDiff<'_> {
    pub fn is_empty(&self) -> bool {
        self.missing_chains.is_empty()
            && self.unexpected_chains.is_empty()
            && self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.misordered_chains.is_empty()
    }
}

/// How the installed rules differ from the desired ones, in one backend's spelling, for
/// people and `--json` (empty = in sync).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Desired lines that are not installed.
    pub missing: Vec<String>,
    /// Installed lines of ours that are not desired (including duplicate jumps).
    pub unexpected: Vec<String>,
    /// Our chains hold the right rules in the wrong order.
    pub misordered_chains: Vec<String>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misordered_chains.is_empty()
    }

    /// One line per difference, for people (`status`, CNI CHECK's details).
    pub fn lines(&self) -> Vec<String> {
        let missing = self.missing.iter().map(|l| format!("missing {l}"));
        let unexpected = self.unexpected.iter().map(|l| format!("unexpected {l}"));
        let misordered = self
            .misordered_chains
            .iter()
            .map(|c| format!("{c} out of order"));
        missing.chain(unexpected).chain(misordered).collect()
    }
}

/// Compares the installed table with the desired ruleset.
pub fn diff<'a>(desired: &'a Ruleset, installed: &'a InstalledTable) -> RuleDiff<'a> {
    let mut out = RuleDiff::default();
    let installed_chains: HashSet<&str> = installed.own_chains().collect();
    for chain in &desired.chains {
        if !installed_chains.contains(chain.as_str()) {
            out.missing_chains.push(chain);
        }
    }
    for chain in installed.own_chains() {
        if !desired.chains.iter().any(|c| c == chain) {
            out.unexpected_chains.push(chain);
        }
    }
    for chain in installed.own_chains() {
        let want: Vec<&Rule> = desired.rules.iter().filter(|r| r.chain == chain).collect();
        let have: Vec<&InstalledRule> = installed.rules_in(chain).collect();
        compare_lists(&want, &have, &mut out);
        let same_members = want.len() == have.len()
            && want
                .iter()
                .all(|w| have.iter().any(|h| h.rule.as_ref() == Some(*w)));
        let same_order = want
            .iter()
            .zip(&have)
            .all(|(w, h)| h.rule.as_ref() == Some(*w));
        if same_members && !same_order {
            out.misordered_chains.push(chain);
        }
    }
    for chain in &desired.chains {
        if !installed_chains.contains(chain.as_str()) {
            out.missing
                .extend(desired.rules.iter().filter(|r| &r.chain == chain));
        }
    }
    let want: Vec<&Rule> = desired.jumps.iter().collect();
    let have: Vec<&InstalledRule> = installed.jumps_into_own_chains().collect();
    compare_lists(&want, &have, &mut out);
    out
}

/// Multiset difference: each desired rule must be installed exactly once, in its chain.
fn compare_lists<'a>(want: &[&'a Rule], have: &[&'a InstalledRule], out: &mut RuleDiff<'a>) {
    let mut remaining: Vec<&InstalledRule> = have.to_vec();
    for rule in want {
        let found = remaining
            .iter()
            .position(|h| h.chain == rule.chain && h.rule.as_ref() == Some(*rule));
        match found {
            Some(i) => {
                remaining.remove(i);
            }
            None => out.missing.push(rule),
        }
    }
    out.unexpected.extend(remaining);
}
