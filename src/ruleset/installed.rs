//! What a backend read from the kernel, in the model's terms: the chains that exist, how
//! the kernel enters ours, and every rule, typed where it has a shape the model knows,
//! always with the backend's own text of it (to delete it exactly, and to show it).

use super::{Rule, is_own_chain};

/// One installed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRule {
    pub chain: String,
    /// The rule as the model has it; `None` for shapes meshinit never writes.
    pub rule: Option<Rule>,
    /// The chain it jumps or goes to, whatever its shape.
    pub target: Option<String>,
    /// The sets it matches against, whatever its shape.
    pub sets: Vec<String>,
    /// The backend's spelling of the rule (iptables: the spec after `-A CHAIN`; nf_tables:
    /// `nft`'s words).
    pub text: String,
}

impl InstalledRule {
    /// Whether it redirects connections (a REDIRECT of any shape).
    pub fn redirects(&self) -> bool {
        matches!(
            self.rule.as_ref().map(|r| &r.verdict),
            Some(super::Verdict::Redirect(_))
        ) || self.target.as_deref() == Some("REDIRECT")
    }

    /// The chain it enters, when that is one of ours.
    pub fn own_target(&self) -> Option<&str> {
        self.target.as_deref().filter(|t| is_own_chain(t))
    }
}

/// The parts of an installed NAT table that concern us (one family, one backend).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledTable {
    /// Every chain declared in the table (built-in and user-defined).
    pub chains: Vec<String>,
    /// Every rule, in table order.
    pub rules: Vec<InstalledRule>,
    /// Our chains the kernel enters by themselves, with no jump rule: base chains hooked
    /// into the packet path (the native table's). With iptables, jumps are rules.
    pub hooked: Vec<String>,
}

impl InstalledTable {
    /// Our chains (`APPMESH_INGRESS`, `APPMESH_EGRESS`) present in the table.
    pub fn own_chains(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .map(String::as_str)
            .filter(|c| is_own_chain(c))
    }

    /// Rules inside one chain, in order.
    pub fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a InstalledRule> {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    /// Rules outside our chains that jump or go into one of ours, whatever their match: the
    /// AWS tools' jumps, ours, and hand-made ones alike.
    pub fn jumps_into_own_chains(&self) -> impl Iterator<Item = &InstalledRule> {
        self.rules
            .iter()
            .filter(|r| !is_own_chain(&r.chain) && r.own_target().is_some())
    }

    /// Whether anything enters our chain `chain`: a hook, or a jump or goto from another
    /// chain.
    pub fn enters(&self, chain: &str) -> bool {
        self.hooked.iter().any(|c| c == chain)
            || self
                .jumps_into_own_chains()
                .any(|j| j.own_target() == Some(chain))
    }

    /// Every set any rule of this table matches (ours or not).
    pub fn matched_sets(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.sets.iter().map(String::as_str))
    }

    /// True when nothing of ours is installed.
    pub fn is_clean(&self) -> bool {
        self.own_chains().next().is_none()
            && self.jumps_into_own_chains().next().is_none()
            && self.hooked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{EGRESS_CHAIN, INGRESS_CHAIN};

    #[test]
    fn a_hooked_chain_is_entered_without_a_jump_rule() {
        let table = InstalledTable {
            chains: vec![EGRESS_CHAIN.to_owned()],
            hooked: vec![EGRESS_CHAIN.to_owned()],
            ..InstalledTable::default()
        };
        assert!(table.enters(EGRESS_CHAIN));
        assert!(!table.enters(INGRESS_CHAIN));
        assert!(table.jumps_into_own_chains().next().is_none());
        assert!(!table.is_clean());
    }

    #[test]
    fn a_jump_rule_enters_its_target() {
        let table = InstalledTable {
            chains: vec![INGRESS_CHAIN.to_owned()],
            rules: vec![InstalledRule {
                chain: "PREROUTING".to_owned(),
                rule: None,
                target: Some(INGRESS_CHAIN.to_owned()),
                sets: Vec::new(),
                text: format!("-p tcp -j {INGRESS_CHAIN}"),
            }],
            ..InstalledTable::default()
        };
        assert!(table.enters(INGRESS_CHAIN));
        assert!(!table.enters(EGRESS_CHAIN));
    }
}
