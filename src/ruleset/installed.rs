//! What is installed: the `nat` table as `iptables-save -t nat` prints it.

use super::{Rule, Ruleset, is_own_chain};

/// The parts of an installed `nat` table that concern us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledNat {
    /// Every chain declared in the table (built-in and user-defined).
    pub chains: Vec<String>,
    /// Every rule, in table order.
    pub rules: Vec<Rule>,
}

impl InstalledNat {
    /// Parses the output of `iptables-save -t nat` (other tables, if present, are skipped).
    pub fn parse(save_output: &str) -> Self {
        let mut installed = InstalledNat::default();
        let mut in_nat = false;
        for line in save_output.lines() {
            let line = line.trim_end();
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if !in_nat || line.starts_with('#') {
                continue;
            } else if let Some(declaration) = line.strip_prefix(':') {
                if let Some(name) = declaration.split(' ').next() {
                    installed.chains.push(name.to_owned());
                }
            } else if let Some(rule) = without_counters(line).strip_prefix("-A ") {
                // A bare `-A CHAIN` (no match, no target) has no spec.
                let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                installed.rules.push(Rule::new(chain, spec));
            }
        }
        installed
    }

    /// Our chains (`APPMESH_INGRESS`, `APPMESH_EGRESS`) present in the table.
    pub fn own_chains(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .map(String::as_str)
            .filter(|c| is_own_chain(c))
    }

    /// Rules inside one chain, in order.
    pub fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Rule> {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    /// Rules outside our chains that jump or go into one of ours, whatever their match: the
    /// AWS tools' jumps, ours, and hand-made ones alike.
    pub fn jumps_into_own_chains(&self) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .filter(|r| !is_own_chain(&r.chain) && r.own_target().is_some())
    }

    /// The part of this table that is ours, as a ruleset: what a rollback converges back to.
    pub fn own_ruleset(&self, family: super::Family) -> Ruleset {
        let chains: Vec<String> = self.own_chains().map(str::to_owned).collect();
        Ruleset {
            family,
            rules: self
                .rules
                .iter()
                .filter(|r| is_own_chain(&r.chain))
                .cloned()
                .collect(),
            jumps: self.jumps_into_own_chains().cloned().collect(),
            chains,
            sets: Vec::new(),
        }
    }

    /// The table as it is once `ruleset` is installed in a table holding nothing of ours.
    pub fn holding(ruleset: &Ruleset) -> Self {
        InstalledNat {
            chains: ruleset.chains.clone(),
            rules: ruleset
                .rules
                .iter()
                .chain(&ruleset.jumps)
                .cloned()
                .collect(),
        }
    }

    /// Every set any rule of this table matches (ours or not).
    pub fn matched_sets(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().flat_map(Rule::matched_sets)
    }

    /// True when nothing of ours is installed.
    pub fn is_clean(&self) -> bool {
        self.own_chains().next().is_none() && self.jumps_into_own_chains().next().is_none()
    }
}

/// A rule line without the `[packets:bytes]` prefix `iptables-save -c` prints.
fn without_counters(line: &str) -> &str {
    match line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((counters, rule)) if counters.bytes().all(|b| b.is_ascii_digit() || b == b':') => rule,
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_bare_jumps_and_foreign_appmesh_chains_are_told_apart() {
        let installed = InstalledNat::parse(
            "*nat\n:OUTPUT ACCEPT [0:0]\n:APPMESH_EGRESS - [0:0]\n:APPMESH_OTHER - [0:0]\n\
             [3:180] -A OUTPUT -p udp -j APPMESH_EGRESS\n-A OUTPUT -j APPMESH_EGRESS\n\
             -A OUTPUT -g APPMESH_EGRESS\n-A OUTPUT -j APPMESH_OTHER\n-A APPMESH_OTHER\nCOMMIT\n",
        );
        assert_eq!(
            installed.own_chains().collect::<Vec<_>>(),
            ["APPMESH_EGRESS"]
        );
        let jumps: Vec<String> = installed
            .jumps_into_own_chains()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            jumps,
            [
                "-A OUTPUT -p udp -j APPMESH_EGRESS",
                "-A OUTPUT -j APPMESH_EGRESS",
                "-A OUTPUT -g APPMESH_EGRESS"
            ]
        );
        assert!(installed.rules.iter().any(|r| r.chain == "APPMESH_OTHER"));
    }
}
