//! Reconciling: the one `iptables-restore --noflush` transaction that turns whatever is
//! installed (nothing, an older config of ours, the AWS plugin's rules, a half-applied
//! crash) into exactly the desired ruleset, without touching anyone else's rules. Because the
//! whole transaction commits at once, there is no moment in which traffic bypasses the proxy.

use std::collections::HashSet;
use std::fmt::Write;

use serde::Serialize;

use super::{InstalledNat, Rule, Ruleset};

/// How the installed rules differ from the desired ones (empty = in sync).
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
}

/// Compares the installed `nat` table with the desired ruleset.
pub fn diff(desired: &Ruleset, installed: &InstalledNat) -> Drift {
    let mut drift = Drift::default();
    let installed_chains: HashSet<&str> = installed.own_chains().collect();
    for chain in &desired.chains {
        if !installed_chains.contains(chain.as_str()) {
            drift.missing.push(format!(":{chain}"));
        }
    }
    for chain in installed.own_chains() {
        if !desired.chains.iter().any(|c| c == chain) {
            drift.unexpected.push(format!(":{chain}"));
        }
    }
    for chain in installed.own_chains() {
        let want: Vec<&Rule> = desired.rules.iter().filter(|r| r.chain == chain).collect();
        let have: Vec<&Rule> = installed.rules_in(chain).collect();
        compare_lists(&want, &have, &mut drift);
        let same_members = want.len() == have.len() && want.iter().all(|w| have.contains(w));
        if same_members && want != have {
            drift.misordered_chains.push(chain.to_owned());
        }
    }
    for chain in &desired.chains {
        if !installed_chains.contains(chain.as_str()) {
            for rule in desired.rules.iter().filter(|r| &r.chain == chain) {
                drift.missing.push(rule.to_string());
            }
        }
    }
    let want: Vec<&Rule> = desired.jumps.iter().collect();
    let have: Vec<&Rule> = installed.jumps_into_own_chains().collect();
    compare_lists(&want, &have, &mut drift);
    drift
}

/// Multiset difference: each desired line must appear exactly once.
fn compare_lists(want: &[&Rule], have: &[&Rule], drift: &mut Drift) {
    let mut remaining: Vec<&Rule> = have.to_vec();
    for rule in want {
        match remaining.iter().position(|h| h == rule) {
            Some(i) => {
                remaining.remove(i);
            }
            None => drift.missing.push(rule.to_string()),
        }
    }
    drift
        .unexpected
        .extend(remaining.iter().map(ToString::to_string));
}

/// The `iptables-restore --noflush` payload that converges `installed` to `desired`, or
/// `None` when they already agree (a re-apply then changes nothing, not even counters).
pub fn reconcile_payload(desired: &Ruleset, installed: &InstalledNat) -> Option<String> {
    if diff(desired, installed).is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    // Declaring a chain creates it, or flushes it when it exists.
    for chain in &desired.chains {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let stale: Vec<&str> = installed
        .own_chains()
        .filter(|c| !desired.chains.iter().any(|d| d == c))
        .collect();
    for chain in &stale {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    // Keep the first copy of each desired jump where it stands; delete every other jump into
    // our chains (stale matches, duplicates, jumps to chains we drop).
    let mut kept: Vec<&Rule> = Vec::new();
    for jump in installed.jumps_into_own_chains() {
        let wanted = desired.jumps.contains(jump) && !kept.contains(&jump);
        if wanted {
            kept.push(jump);
        } else {
            let _ = writeln!(out, "-D {} {}", jump.chain, jump.spec);
        }
    }
    for chain in &stale {
        let _ = writeln!(out, "-X {chain}");
    }
    for rule in &desired.rules {
        let _ = writeln!(out, "{rule}");
    }
    for jump in desired.jumps.iter().filter(|j| !kept.contains(j)) {
        let _ = writeln!(out, "{jump}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}
