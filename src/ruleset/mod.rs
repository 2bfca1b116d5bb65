//! The NAT ruleset a [`ProxyConfig`] asks for, per address family, in the exact form
//! `iptables-save` prints it, so what we install and what we read back compare as text.

mod installed;
mod plan;
mod reconcile;
mod render;
mod rule_words;
pub mod sets;

use std::fmt;

pub use installed::InstalledNat;
pub use plan::{PlanOptions, plan};
pub use reconcile::{Drift, diff, reconcile_payload};
pub use render::{fresh_install_payload, render_restore};

/// Every chain and set meshinit (or the AWS App Mesh tools) creates starts with this; not
/// everything that starts with it is ours (see [`is_own_chain`] and [`sets::is_own_set`]).
pub const OWN_PREFIX: &str = "APPMESH_";
pub const INGRESS_CHAIN: &str = "APPMESH_INGRESS";
pub const EGRESS_CHAIN: &str = "APPMESH_EGRESS";
/// The only chains meshinit owns (the AWS App Mesh tools use the same two names). Another
/// chain named `APPMESH_*` is someone else's and is never flushed or deleted.
pub const OWN_CHAINS: [&str; 2] = [INGRESS_CHAIN, EGRESS_CHAIN];

/// Whether meshinit owns the chain `name`.
pub fn is_own_chain(name: &str) -> bool {
    OWN_CHAINS.contains(&name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The `ipset` family name.
    pub fn ipset_family(self) -> &'static str {
        match self {
            Family::Ipv4 => "inet",
            Family::Ipv6 => "inet6",
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Family::Ipv4 => "4",
            Family::Ipv6 => "6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// One `-A CHAIN SPEC` line, with SPEC as `iptables-save` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub chain: String,
    pub spec: String,
}

impl Rule {
    pub fn new(chain: &str, spec: impl Into<String>) -> Self {
        Rule {
            chain: chain.to_owned(),
            spec: spec.into(),
        }
    }

    /// The chain this rule jumps or goes to (`-j`/`--jump`, `-g`/`--goto`), when it is one
    /// of ours, whatever else the rule matches (comments and quoted words included).
    pub fn own_target(&self) -> Option<&str> {
        let target = rule_words::target(&self.spec)?;
        is_own_chain(target).then_some(target)
    }

    /// The sets this rule matches with `-m set --match-set NAME`.
    pub fn matched_sets(&self) -> Vec<&str> {
        rule_words::match_sets(&self.spec)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.spec.is_empty() {
            write!(f, "-A {}", self.chain)
        } else {
            write!(f, "-A {} {}", self.chain, self.spec)
        }
    }
}

/// What kind of ipset a long exclusion list is loaded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// Destination networks (`hash:net`): one lookup per distinct prefix length.
    Networks,
    /// Destination ports (`bitmap:port`): a constant-time lookup.
    Ports,
}

/// An ipset holding a long exclusion list, referenced by a `-m set` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub name: String,
    pub kind: SetKind,
    pub family: Family,
    /// Members as `ipset save` prints them (`10.0.0.0/8`, `1000-2000`).
    pub members: Vec<String>,
}

/// The NAT rules of one family: our chains with their rules, the jumps into them from the
/// built-in chains, and any sets the rules match against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub family: Family,
    /// Our chains, in creation order.
    pub chains: Vec<String>,
    /// The rules inside our chains, in order.
    pub rules: Vec<Rule>,
    /// The rules in built-in chains that enter ours.
    pub jumps: Vec<Rule>,
    pub sets: Vec<IpSet>,
}

impl Ruleset {
    /// The ruleset that installs nothing: what `clean` converges to.
    pub fn empty(family: Family) -> Self {
        Ruleset {
            family,
            chains: Vec::new(),
            rules: Vec::new(),
            jumps: Vec::new(),
            sets: Vec::new(),
        }
    }
}
