//! Reconciling: the one `iptables-restore --noflush` transaction that turns whatever is
//! installed (nothing, an older config of ours, the AWS plugin's rules, a half-applied
//! crash) into exactly the desired ruleset, without touching anyone else's rules; the one
//! that undoes it; and the drift in iptables' words. Because each transaction commits at
//! once, there is no moment in which traffic bypasses the proxy.

use std::fmt::Write;

use super::render::line;
use crate::ruleset::{Drift, InstalledRule, InstalledTable, Rule, Ruleset, diff, is_own_chain};

/// The differences between `installed` and `desired`, as iptables lines.
pub fn drift(desired: &Ruleset, installed: &InstalledTable) -> Drift {
    let d = diff(desired, installed);
    let chain = |c: &&str| format!(":{c}");
    Drift {
        missing: d
            .missing_chains
            .iter()
            .map(chain)
            .chain(d.missing.iter().map(|r| line(r)))
            .collect(),
        unexpected: d
            .unexpected_chains
            .iter()
            .map(chain)
            .chain(d.unexpected.iter().map(|r| installed_line(r)))
            .collect(),
        misordered_chains: d.misordered_chains.iter().map(|c| c.to_string()).collect(),
    }
}

/// `-A CHAIN SPEC` of an installed rule, as it was read.
pub fn installed_line(rule: &InstalledRule) -> String {
    if rule.text.is_empty() {
        format!("-A {}", rule.chain)
    } else {
        format!("-A {} {}", rule.chain, rule.text)
    }
}

/// The `iptables-restore --noflush` payload that converges `installed` to `desired`, or
/// `None` when they already agree (a re-apply then changes nothing, not even counters).
pub fn reconcile_payload(desired: &Ruleset, installed: &InstalledTable) -> Option<String> {
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
    // our chains (stale matches, duplicates, shapes we never write, jumps to chains we drop).
    let mut kept: Vec<&Rule> = Vec::new();
    for jump in installed.jumps_into_own_chains() {
        match jump.rule.as_ref() {
            Some(rule) if desired.jumps.contains(rule) && !kept.contains(&rule) => kept.push(rule),
            _ => {
                let _ = writeln!(out, "-D {} {}", jump.chain, jump.text);
            }
        }
    }
    for chain in &stale {
        let _ = writeln!(out, "-X {chain}");
    }
    for rule in &desired.rules {
        let _ = writeln!(out, "{}", line(rule));
    }
    for jump in desired.jumps.iter().filter(|j| !kept.contains(j)) {
        let _ = writeln!(out, "{}", line(jump));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// The payload that takes a table from `after` (installed by a committed transaction) back
/// to our part of `before`, as it was read: our chains refilled with the rules they held, in
/// their own spelling, and the jumps the transaction deleted or added put back or removed.
/// `None` when there is nothing to undo.
pub fn undo_payload(before: &InstalledTable, after: &Ruleset) -> Option<String> {
    let after_table = installed_holding(after);
    let mut out = String::from("*nat\n");
    let before_chains: Vec<&str> = before.own_chains().collect();
    let new_chains: Vec<&String> = after
        .chains
        .iter()
        .filter(|c| !before_chains.contains(&c.as_str()))
        .collect();
    for chain in before_chains
        .iter()
        .copied()
        .chain(new_chains.iter().map(|c| c.as_str()))
    {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    // Jumps of `before` the transaction kept are matched one to one with `after`'s.
    let mut unmatched_before: Vec<&InstalledRule> = before.jumps_into_own_chains().collect();
    for jump in after_table.jumps_into_own_chains() {
        let same = unmatched_before
            .iter()
            .position(|b| b.chain == jump.chain && b.rule == jump.rule && b.rule.is_some());
        match same {
            Some(i) => {
                unmatched_before.remove(i);
            }
            None => {
                let _ = writeln!(out, "-D {} {}", jump.chain, jump.text);
            }
        }
    }
    for chain in &new_chains {
        let _ = writeln!(out, "-X {chain}");
    }
    for rule in before.rules.iter().filter(|r| is_own_chain(&r.chain)) {
        let _ = writeln!(out, "{}", installed_line(rule));
    }
    for jump in unmatched_before {
        let _ = writeln!(out, "{}", installed_line(jump));
    }
    out.push_str("COMMIT\n");
    (out != "*nat\nCOMMIT\n").then_some(out)
}

/// The table as it is once `ruleset` is installed in a table holding nothing of ours.
pub fn installed_holding(ruleset: &Ruleset) -> InstalledTable {
    InstalledTable {
        chains: ruleset.chains.clone(),
        rules: ruleset
            .rules
            .iter()
            .chain(&ruleset.jumps)
            .map(|r| super::parse::installed_rule(&r.chain, &super::render::spec(r)))
            .collect(),
        // iptables enters our chains with jump rules only.
        hooked: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::iptables::parse::installed_table;
    use crate::backend::iptables::render::PLAN_OPTIONS;
    use crate::config::{RawSettings, validate};
    use crate::ruleset::{EGRESS_CHAIN, Family, plan};

    fn seed_ruleset() -> Ruleset {
        use crate::config::settings::{Property, Vocabulary};
        let raw = RawSettings::spelled(
            Vocabulary::Ecs,
            [
                (Property::IgnoredUid, "1337"),
                (Property::ProxyEgressPort, "15001"),
                (Property::ProxyIngressPort, "15000"),
                (Property::AppPorts, "9080"),
            ],
        );
        let (config, _) = validate(&raw).unwrap();
        plan(&config, Family::Ipv4, PLAN_OPTIONS)
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
            text += &format!("{}\n", line(rule));
        }
        text + "COMMIT\n"
    }

    #[test]
    fn an_installed_ruleset_needs_no_transaction() {
        let desired = seed_ruleset();
        let installed = installed_table(&saved(&desired, &[]));
        assert!(drift(&desired, &installed).is_empty());
        assert_eq!(reconcile_payload(&desired, &installed), None);
    }

    #[test]
    fn an_empty_table_gets_the_whole_ruleset() {
        let desired = seed_ruleset();
        let installed = installed_table("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        let payload = reconcile_payload(&desired, &installed).unwrap();
        assert!(!payload.contains("-D "), "{payload}");
        for rule in desired.rules.iter().chain(&desired.jumps) {
            assert!(payload.contains(&line(rule)), "{payload}");
        }
    }

    #[test]
    fn stale_and_duplicate_jumps_are_deleted_and_foreign_rules_kept() {
        let desired = seed_ruleset();
        let installed = installed_table(&saved(
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
        let drift = drift(&desired, &installed);
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
        let installed = installed_table(&saved(&with_ingress, &[]));
        let drift = drift(&egress_only, &installed);
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
        let installed = installed_table(&saved(&seed_ruleset(), &["-A OUTPUT -p udp -j ACCEPT"]));
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
        let installed = installed_table(&saved(&reordered, &[]));
        let drift = drift(&desired, &installed);
        assert_eq!(drift.misordered_chains, vec!["APPMESH_EGRESS".to_owned()]);
        assert!(reconcile_payload(&desired, &installed).is_some());
    }
}

#[cfg(test)]
mod undo_tests {
    use super::*;
    use crate::backend::iptables::parse::installed_table;
    use crate::backend::iptables::render::PLAN_OPTIONS;
    use crate::config::{RawSettings, validate};
    use crate::ruleset::{Family, plan};

    fn ruleset(egress_port: &str) -> Ruleset {
        use crate::config::settings::{Property, Vocabulary};
        let raw = RawSettings::spelled(
            Vocabulary::Ecs,
            [
                (Property::IgnoredUid, "1337"),
                (Property::ProxyEgressPort, egress_port),
            ],
        );
        plan(&validate(&raw).unwrap().0, Family::Ipv4, PLAN_OPTIONS)
    }

    #[test]
    fn undoing_a_change_restores_our_rules_and_jumps_in_their_own_spelling() {
        let before = installed_table(
            "*nat\n:OUTPUT ACCEPT [0:0]\n:APPMESH_EGRESS - [0:0]\n\
             -A OUTPUT -g APPMESH_EGRESS\n-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS\n\
             -A APPMESH_EGRESS -p tcp -m comment --comment \"old\" -j REDIRECT --to-ports 15009\nCOMMIT\n",
        );
        let after = ruleset("15001");
        let undo = undo_payload(&before, &after).unwrap();
        assert_eq!(
            undo,
            "*nat\n:APPMESH_EGRESS - [0:0]\n\
             -A APPMESH_EGRESS -p tcp -m comment --comment \"old\" -j REDIRECT --to-ports 15009\n\
             -A OUTPUT -g APPMESH_EGRESS\nCOMMIT\n"
        );
    }

    #[test]
    fn undoing_a_fresh_install_removes_it() {
        let after = ruleset("15001");
        let undo = undo_payload(&InstalledTable::default(), &after).unwrap();
        assert_eq!(
            undo,
            "*nat\n:APPMESH_EGRESS - [0:0]\n\
             -D OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS\n\
             -X APPMESH_EGRESS\nCOMMIT\n"
        );
    }
}
