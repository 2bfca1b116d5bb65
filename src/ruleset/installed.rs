//! What is installed: the `nat` table as `iptables-save -t nat` prints it.

use super::{OWN_PREFIX, Rule};

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
            } else if let Some((chain, spec)) = line
                .strip_prefix("-A ")
                .and_then(|rest| rest.split_once(' '))
            {
                installed.rules.push(Rule::new(chain, spec));
            }
        }
        installed
    }

    /// Our chains (those named `APPMESH_*`) present in the table.
    pub fn own_chains(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with(OWN_PREFIX))
    }

    /// Rules inside one chain, in order.
    pub fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Rule> {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    /// Rules outside our chains that jump into one of ours, whatever their match: the AWS
    /// tools' jumps and ours alike.
    pub fn jumps_into_own_chains(&self) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .filter(|r| !r.chain.starts_with(OWN_PREFIX) && r.own_target().is_some())
    }

    /// True when nothing of ours is installed.
    pub fn is_clean(&self) -> bool {
        self.own_chains().next().is_none() && self.jumps_into_own_chains().next().is_none()
    }
}
