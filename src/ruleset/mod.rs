//! The NAT ruleset a [`ProxyConfig`](crate::config::ProxyConfig) asks for, per address
//! family, as data: chains, typed rules ([`Rule`]: matches and a verdict) and the sets long
//! lists live in. Backends render it and read what is installed back into the same types.

mod diff;
mod installed;
mod plan;
mod rule;
pub mod sets;
pub mod spelling;
pub mod zones;

use std::fmt;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::PortRange;

pub use diff::{Drift, RuleDiff, diff};
pub use installed::{InstalledRule, InstalledTable};
pub use plan::{PlanOptions, plan};
pub use rule::{Match, Rule, Verdict};

pub const INGRESS_CHAIN: &str = "APPMESH_INGRESS";
pub const EGRESS_CHAIN: &str = "APPMESH_EGRESS";
/// The only chains meshinit owns (the AWS App Mesh tools use the same two names). Another
/// chain named `APPMESH_*` is someone else's and is never flushed or deleted.
pub const OWN_CHAINS: [&str; 2] = [INGRESS_CHAIN, EGRESS_CHAIN];
/// The hooks our chains are entered from: inbound connections before routing, and
/// connections made by local processes.
pub const PREROUTING_CHAIN: &str = "PREROUTING";
pub const OUTPUT_CHAIN: &str = "OUTPUT";

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

/// What kind of set a long exclusion list is loaded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// Destination networks: one lookup per distinct prefix length.
    Networks,
    /// Destination ports: a constant-time lookup.
    Ports,
}

/// The members of a set, merged (no overlapping or adjacent entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetMembers {
    Networks(Networks),
    Ports(Vec<PortRange>),
}

/// One family's networks in that family's own type: 5 bytes an IPv4 network instead of the
/// 18 of an `IpNet`, which counts when a set holds 100,000 of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Networks {
    V4(Vec<Ipv4Net>),
    V6(Vec<Ipv6Net>),
}

impl Networks {
    pub fn len(&self) -> usize {
        match self {
            Networks::V4(nets) => nets.len(),
            Networks::V6(nets) => nets.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = IpNet> + '_ {
        let (v4, v6): (&[Ipv4Net], &[Ipv6Net]) = match self {
            Networks::V4(nets) => (nets, &[]),
            Networks::V6(nets) => (&[], nets),
        };
        v4.iter()
            .map(|n| IpNet::V4(*n))
            .chain(v6.iter().map(|n| IpNet::V6(*n)))
    }
}

impl SetMembers {
    pub fn kind(&self) -> SetKind {
        match self {
            SetMembers::Networks(_) => SetKind::Networks,
            SetMembers::Ports(_) => SetKind::Ports,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            SetMembers::Networks(nets) => nets.len(),
            SetMembers::Ports(ports) => ports.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a set's list is for: it names the set (iptables' ipset, the native table's set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetPurpose {
    /// An exclusion list (ignored destinations or ports): its rule returns.
    Ignored,
    /// The egress include list: its rule redirects.
    Included,
}

/// A set holding a long list, matched by a [`Match::DestinationInSet`] rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// Named after its purpose and content (see [`sets`]).
    pub name: String,
    pub family: Family,
    pub purpose: SetPurpose,
    pub members: SetMembers,
}

impl IpSet {
    pub fn kind(&self) -> SetKind {
        self.members.kind()
    }
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
    /// Inbound packets conntrack marks INVALID are dropped before routing (outside the nat
    /// table, which never sees them: see `crate::config::mesh`).
    pub drop_invalid: bool,
    /// Conntrack zone rules for DNS capture (see [`zones`]), outside the nat table.
    pub dns_zones: Vec<zones::ZoneRule>,
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
            drop_invalid: false,
            dns_zones: Vec::new(),
        }
    }
}
