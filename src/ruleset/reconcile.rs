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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawSettings, validate};
    use crate::ruleset::{EGRESS_CHAIN, Family, PlanOptions, plan};

    fn seed_ruleset() -> Ruleset {
        let raw = RawSettings {
            ignored_uid: RawSettings::scalar("IgnoredUID", "1337"),
            proxy_egress_port: RawSettings::scalar("ProxyEgressPort", "15001"),
            proxy_ingress_port: RawSettings::scalar("ProxyIngressPort", "15000"),
            app_ports: RawSettings::list("AppPorts", "9080"),
            ..Default::default()
        };
        let (config, _) = validate(&raw).unwrap();
        plan(&config, Family::Ipv4, PlanOptions::default())
    }

    /// What `iptables-save -t nat` prints once `ruleset` is installed on an empty table.
    fn saved(ruleset: &Ruleset, extra: &[&str]) -> String {
        let mut text = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
        for chain in &ruleset.chains {
            text += &format!(":{chain} - [0:0]\n");
        }
        for line in extra {
            text += &format!("{line}\n");
        }
        for rule in ruleset.jumps.iter().chain(&ruleset.rules) {
            text += &format!("{rule}\n");
        }
        text + "COMMIT\n"
    }

    #[test]
    fn an_installed_ruleset_needs_no_transaction() {
        let desired = seed_ruleset();
        let installed = InstalledNat::parse(&saved(&desired, &[]));
        assert!(diff(&desired, &installed).is_empty());
        assert_eq!(reconcile_payload(&desired, &installed), None);
    }

    #[test]
    fn an_empty_table_gets_the_whole_ruleset() {
        let desired = seed_ruleset();
        let installed = InstalledNat::parse("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        let payload = reconcile_payload(&desired, &installed).unwrap();
        assert!(!payload.contains("-D "), "{payload}");
        for rule in desired.rules.iter().chain(&desired.jumps) {
            assert!(payload.contains(&rule.to_string()), "{payload}");
        }
    }

    #[test]
    fn stale_and_duplicate_jumps_are_deleted_and_foreign_rules_kept() {
        let desired = seed_ruleset();
        let installed = InstalledNat::parse(&saved(
            &desired,
            &[
                ":APPMESH_OTHER - [0:0]",
                ":FOREIGN - [0:0]",
                "-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
                "-A OUTPUT -j APPMESH_EGRESS",
                "-A OUTPUT -p tcp -j APPMESH_OTHER",
                "-A OUTPUT -p udp -j FOREIGN",
                "-A APPMESH_OTHER -j RETURN",
            ],
        ));
        let drift = diff(&desired, &installed);
        assert!(
            drift
                .unexpected
                .contains(&"-A OUTPUT -j APPMESH_EGRESS".to_owned()),
            "{drift:?}"
        );
        let payload = reconcile_payload(&desired, &installed).unwrap();
        assert_eq!(
            payload
                .matches("-D OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS")
                .count(),
            1,
            "exactly the duplicate goes: {payload}"
        );
        assert!(
            payload.contains("-D OUTPUT -j APPMESH_EGRESS\n"),
            "{payload}"
        );
        // A chain named like ours but not ours, and its jump, are someone else's.
        assert!(!payload.contains("APPMESH_OTHER"), "{payload}");
        assert!(!payload.contains("FOREIGN"), "{payload}");
        // The kept jump is not added again.
        assert!(!payload.contains("-A OUTPUT"), "{payload}");
    }

    #[test]
    fn a_chain_of_ours_no_longer_wanted_goes_after_its_jumps() {
        let with_ingress = seed_ruleset();
        let mut egress_only = with_ingress.clone();
        egress_only.chains.retain(|c| c == EGRESS_CHAIN);
        egress_only.rules.retain(|r| r.chain == EGRESS_CHAIN);
        egress_only.jumps.retain(|j| j.chain == "OUTPUT");
        let installed = InstalledNat::parse(&saved(&with_ingress, &[]));
        let drift = diff(&egress_only, &installed);
        assert!(
            drift.unexpected.contains(&":APPMESH_INGRESS".to_owned()),
            "{drift:?}"
        );
        let payload = reconcile_payload(&egress_only, &installed).unwrap();
        assert!(payload.contains(":APPMESH_INGRESS - [0:0]\n"), "{payload}");
        assert!(
            payload.find("-D PREROUTING").unwrap() < payload.find("-X APPMESH_INGRESS").unwrap(),
            "{payload}"
        );
    }

    #[test]
    fn clean_converges_to_nothing_of_ours() {
        let installed =
            InstalledNat::parse(&saved(&seed_ruleset(), &["-A OUTPUT -p udp -j ACCEPT"]));
        let payload = reconcile_payload(&Ruleset::empty(Family::Ipv4), &installed).unwrap();
        assert!(payload.contains("-X APPMESH_EGRESS") && payload.contains("-X APPMESH_INGRESS"));
        assert!(payload.contains("-D PREROUTING") && payload.contains("-D OUTPUT -p tcp"));
        assert!(!payload.contains("-A "), "{payload}");
        assert!(!payload.contains("udp"), "{payload}");
    }

    #[test]
    fn a_reordered_chain_is_drift() {
        let desired = seed_ruleset();
        let mut reordered = desired.clone();
        reordered.rules.swap(1, 2);
        let installed = InstalledNat::parse(&saved(&reordered, &[]));
        let drift = diff(&desired, &installed);
        assert_eq!(drift.misordered_chains, vec!["APPMESH_EGRESS".to_owned()]);
        assert!(reconcile_payload(&desired, &installed).is_some());
    }
}
