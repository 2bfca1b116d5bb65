//! Rendering: the `inet meshinit` table for the rulesets the one model plans
//! ([`crate::ruleset::plan`]), so the native backend and the iptables ones decide nothing
//! differently. One table holds both families:
//!
//! - each of our chains becomes the base chain of the hook it is entered from; the jump's
//!   conditions become guards that return first (`fib daddr type local return`), since a
//!   hook chain cannot be "jumped into only when";
//! - a rule both families have is written once; a rule only one has is limited to its
//!   family (`ip daddr @ignored_ipv4` is by itself);
//! - sets get names by what they hold (`ignored_ipv4`, `included_ipv4`, `ignored_ports`,
//!   `app_ports`) and are shared where both families hold the same;
//! - with IPv6 not programmed, IPv6 packets leave each chain first.
//!
//! `nft`'s conventions are kept so `nft list` reads it back as it would write it: a match
//! on the transport header or a port redirect carries its `meta l4proto tcp` dependency.

use crate::config::ProxyConfig;
use crate::ruleset::{
    self, EGRESS_CHAIN, Family, INGRESS_CHAIN, IpSet, Match, Networks, OUTPUT_CHAIN,
    PREROUTING_CHAIN, Ruleset, SetMembers, SetPurpose,
};
use nftables_netlink::model::KeyRange;
use nftables_netlink::model::{
    BaseChain, Chain, ChainType, CmpOp, Expr, Hook, IPPROTO_TCP, MetaKey, NFPROTO_IPV4,
    NFPROTO_IPV6, PayloadBase, Policy, RTN_LOCAL, Register, Rule, Set, Table, Verdict, fib_flags,
};

/// The table meshinit owns, in the `inet` family (IPv4 and IPv6 in one transaction).
pub const TABLE_NAME: &str = "meshinit";

/// A port range as an `inet_service` key range (sets of ports, `Set::ports`).
impl From<crate::config::PortRange> for KeyRange {
    fn from(ports: crate::config::PortRange) -> KeyRange {
        KeyRange::from_ports(ports.first, ports.last)
    }
}

pub const PREROUTING_BASE_CHAIN: &str = "prerouting";
pub const OUTPUT_BASE_CHAIN: &str = "output";
pub const APP_PORTS_SET: &str = "app_ports";
pub const IGNORED_PORTS_SET: &str = "ignored_ports";
pub const IGNORED_IPV4_SET: &str = "ignored_ipv4";
pub const IGNORED_IPV6_SET: &str = "ignored_ipv6";
/// A long egress include list.
pub const INCLUDED_IPV4_SET: &str = "included_ipv4";
pub const INCLUDED_IPV6_SET: &str = "included_ipv6";
/// nft's `dstnat` priority; the output chain uses the same number (`-100`).
pub const NAT_DSTNAT_PRIORITY: i32 = -100;

/// The table for the IPv4 ruleset and, when IPv6 is programmed, the IPv6 one (`None` or
/// an empty ruleset: IPv6 traffic passes untouched). A pure function.
pub fn render_table(ipv4: &Ruleset, ipv6: Option<&Ruleset>) -> Table {
    let ipv6 = ipv6.filter(|r| **r != Ruleset::empty(Family::Ipv6));
    let mut sets = SetNames::default();
    let mut chains = Vec::new();
    for own_chain in &ipv4.chains {
        let Some(jump) = ipv4
            .jumps
            .iter()
            .find(|j| j.jump_target() == Some(own_chain))
        else {
            continue;
        };
        let Some((name, hook)) = base_chain_for(&jump.chain) else {
            continue;
        };
        // The jump's conditions: one that a single compare negates becomes a guard that
        // returns ("return unless it holds"); any other is added to every rule instead.
        let (guards, carried): (Vec<&Match>, Vec<&Match>) =
            jump.matches.iter().partition(|m| negated(m).is_some());
        let with_carried = |ruleset: &Ruleset| -> Vec<ruleset::Rule> {
            chain_rules(ruleset, own_chain)
                .map(|r| {
                    let mut rule = r.clone();
                    let own = std::mem::take(&mut rule.matches);
                    rule.matches = carried.iter().map(|m| (*m).clone()).chain(own).collect();
                    rule
                })
                .collect()
        };
        let v4 = with_carried(ipv4);
        let v6 = ipv6.map(with_carried).unwrap_or_default();
        let mut rules = Vec::new();
        if ipv6.is_none() {
            rules.push(ipv6_passes_rule());
        }
        // A TCP guard is left out only for a chain of one rule that checks TCP itself
        // (prerouting); otherwise one guard spares every later rule the test.
        let lone_tcp_rule = v4.len().max(v6.len()) == 1
            && v4
                .iter()
                .chain(&v6)
                .all(|r| r.matches.contains(&Match::Tcp));
        let mut tcp_guarded = false;
        for condition in guards {
            if *condition == Match::Tcp {
                if lone_tcp_rule {
                    continue;
                }
                tcp_guarded = true;
            }
            let mut exprs = negated(condition).unwrap_or_default();
            exprs.push(Expr::verdict(Verdict::Return));
            rules.push(Rule::new(exprs));
        }
        let context = ChainContext {
            own_chain,
            tcp_guarded,
        };
        let v4: Vec<Rendered> = v4
            .iter()
            .map(|r| render_rule(r, ipv4, &context, &mut sets))
            .collect();
        let v6: Vec<Rendered> = match ipv6 {
            Some(ruleset) => v6
                .iter()
                .map(|r| render_rule(r, ruleset, &context, &mut sets))
                .collect(),
            None => Vec::new(),
        };
        rules.extend(merge_families(v4, v6, ipv6.is_some()));
        chains.push(Chain {
            name: name.to_owned(),
            base: Some(BaseChain {
                chain_type: ChainType::Nat,
                hook,
                priority: NAT_DSTNAT_PRIORITY,
                policy: Policy::Accept,
            }),
            rules,
        });
    }
    if ipv4.drop_invalid || ipv6.is_some_and(|r| r.drop_invalid) {
        chains.push(invalid_drop_chain(ipv6.is_none()));
    }
    chains.extend(super::render_zones::zone_chains(ipv4, ipv6));
    Table::new(TABLE_NAME, sets.sets, chains)
}

pub const INVALID_BASE_CHAIN: &str = "drop_invalid";
/// nft's `mangle` priority: before dstnat, as the iptables backends' mangle PREROUTING.
pub const MANGLE_PRIORITY: i32 = -150;

/// `ct state invalid drop` in a filter chain on prerouting: packets conntrack marks INVALID
/// never pass nat, so without it they reach the app un-rewritten (see
/// `crate::config::mesh`).
fn invalid_drop_chain(ipv6_passes: bool) -> Chain {
    let mut rules = Vec::new();
    if ipv6_passes {
        rules.push(ipv6_passes_rule());
    }
    let mut exprs = ct_state();
    exprs.push(Expr::Bitwise {
        sreg: Register::R1,
        dreg: Register::R1,
        len: 4,
        mask: CT_STATE_INVALID_BIT.to_ne_bytes().to_vec(),
        xor: vec![0; 4],
    });
    exprs.push(Expr::cmp(CmpOp::Neq, [0u8; 4]));
    exprs.push(Expr::verdict(Verdict::Drop));
    rules.push(Rule::new(exprs));
    Chain {
        name: INVALID_BASE_CHAIN.to_owned(),
        base: Some(BaseChain {
            chain_type: ChainType::Filter,
            hook: Hook::Prerouting,
            priority: MANGLE_PRIORITY,
            policy: Policy::Accept,
        }),
        rules,
    }
}

/// `NF_CT_STATE_INVALID_BIT`.
const CT_STATE_INVALID_BIT: u32 = 1;

/// `ct state` into register 1. The model has no `ct` expression, so it is written as the
/// kernel dumps it (NFTA_CT_DREG, NFTA_CT_KEY = NFT_CT_STATE, both big-endian), which is
/// also how it reads back.
fn ct_state() -> Vec<Expr> {
    const NFTA_CT_DREG: u16 = 1;
    const NFTA_CT_KEY: u16 = 2;
    const NFT_CT_STATE: u32 = 0;
    let mut data = Vec::new();
    for (kind, value) in [(NFTA_CT_DREG, 1u32), (NFTA_CT_KEY, NFT_CT_STATE)] {
        data.extend_from_slice(&8u16.to_ne_bytes());
        data.extend_from_slice(&kind.to_ne_bytes());
        data.extend_from_slice(&value.to_be_bytes());
    }
    vec![Expr::Other {
        name: "ct".to_owned(),
        data,
    }]
}

/// `meta nfproto ipv6 return`: the first rule of each chain when IPv6 is not programmed.
pub fn ipv6_passes_rule() -> Rule {
    Rule::new(vec![
        Expr::meta(MetaKey::NfProto),
        Expr::cmp(CmpOp::Eq, [NFPROTO_IPV6]),
        Expr::verdict(Verdict::Return),
    ])
}

/// The base chain (name and hook) standing for the built-in chain a jump is in.
fn base_chain_for(builtin: &str) -> Option<(&'static str, Hook)> {
    match builtin {
        PREROUTING_CHAIN => Some((PREROUTING_BASE_CHAIN, Hook::Prerouting)),
        OUTPUT_CHAIN => Some((OUTPUT_BASE_CHAIN, Hook::Output)),
        _ => None,
    }
}

fn chain_rules<'a>(
    ruleset: &'a Ruleset,
    chain: &'a str,
) -> impl Iterator<Item = &'a ruleset::Rule> + 'a {
    ruleset.rules.iter().filter(move |r| r.chain == chain)
}

/// What a rule's rendering depends on besides the rule.
struct ChainContext<'a> {
    own_chain: &'a str,
    /// Non-TCP packets have already left the chain.
    tcp_guarded: bool,
}

/// A rendered rule and whether it only concerns one family by itself.
struct Rendered {
    rule: Rule,
    family_specific: bool,
}

fn render_rule(
    rule: &ruleset::Rule,
    ruleset: &Ruleset,
    context: &ChainContext,
    sets: &mut SetNames,
) -> Rendered {
    let holds_ports = |m: &Match| match m {
        Match::DestinationPorts(_) => true,
        Match::DestinationInSet(name) => {
            set_of(ruleset, name).is_some_and(|s| matches!(s.members, SetMembers::Ports(_)))
        }
        _ => false,
    };
    let is_network = |m: &Match| match m {
        Match::DestinationNetwork(_) => true,
        Match::DestinationInSet(name) => {
            set_of(ruleset, name).is_some_and(|s| matches!(s.members, SetMembers::Networks(_)))
        }
        _ => false,
    };
    // After the chain's TCP guard a TCP test is only written where nft writes it: as the
    // dependency of a port match or of a port redirect.
    let keeps_tcp = !context.tcp_guarded
        || matches!(rule.verdict, ruleset::Verdict::Redirect(_))
        || rule.matches.iter().any(holds_ports);
    let mut exprs = Vec::new();
    for condition in &rule.matches {
        if *condition != Match::Tcp || keeps_tcp {
            exprs.extend(condition_exprs(condition, ruleset, context, sets));
        }
    }
    match &rule.verdict {
        ruleset::Verdict::Return => exprs.push(Expr::verdict(Verdict::Return)),
        ruleset::Verdict::Redirect(port) => exprs.extend(Expr::redirect_to_port(*port)),
        // The planner only jumps from the built-in chains, which become base chains.
        ruleset::Verdict::Jump(target) => exprs.push(Expr::verdict(Verdict::Jump(target.clone()))),
    }
    Rendered {
        rule: Rule::new(exprs),
        family_specific: rule.matches.iter().any(is_network),
    }
}

fn set_of<'a>(ruleset: &'a Ruleset, name: &str) -> Option<&'a IpSet> {
    ruleset.sets.iter().find(|s| s.name == name)
}

/// The expressions that match `condition`.
fn condition_exprs(
    condition: &Match,
    ruleset: &Ruleset,
    context: &ChainContext,
    sets: &mut SetNames,
) -> Vec<Expr> {
    match condition {
        Match::Tcp => vec![
            Expr::meta(MetaKey::L4Proto),
            Expr::cmp(CmpOp::Eq, [IPPROTO_TCP]),
        ],
        Match::Udp => vec![
            Expr::meta(MetaKey::L4Proto),
            Expr::cmp(CmpOp::Eq, [IPPROTO_UDP]),
        ],
        Match::OwnerUid(uid) => vec![
            Expr::meta(MetaKey::SkUid),
            Expr::cmp(CmpOp::Eq, uid.to_ne_bytes()),
        ],
        Match::OwnerGid(gid) => vec![
            Expr::meta(MetaKey::SkGid),
            Expr::cmp(CmpOp::Eq, gid.to_ne_bytes()),
        ],
        Match::DestinationPorts(ranges) => {
            let mut exprs = vec![Expr::payload(PayloadBase::Transport, 2, 2)];
            match ranges.as_slice() {
                [single] if single.first == single.last => {
                    exprs.push(Expr::cmp(CmpOp::Eq, single.first.to_be_bytes()));
                }
                ranges => {
                    let set = Set::ports(ports_set_name(context.own_chain), ranges);
                    exprs.push(Expr::lookup(&sets.add(set)));
                }
            }
            exprs
        }
        Match::DestinationNetwork(net) => {
            let (nfproto, offset, bytes, prefix) = match net {
                ipnet::IpNet::V4(n) => (
                    NFPROTO_IPV4,
                    16,
                    n.network().octets().to_vec(),
                    n.prefix_len(),
                ),
                ipnet::IpNet::V6(n) => (
                    NFPROTO_IPV6,
                    24,
                    n.network().octets().to_vec(),
                    n.prefix_len(),
                ),
            };
            let mut exprs = family_check(nfproto);
            exprs.push(Expr::payload(
                PayloadBase::Network,
                offset,
                bytes.len() as u32,
            ));
            if usize::from(prefix) < 8 * bytes.len() {
                exprs.push(Expr::Bitwise {
                    sreg: Register::R1,
                    dreg: Register::R1,
                    len: bytes.len() as u32,
                    mask: prefix_mask(prefix, bytes.len()),
                    xor: vec![0; bytes.len()],
                });
            }
            exprs.push(Expr::cmp(CmpOp::Eq, bytes));
            exprs
        }
        Match::DestinationInSet(name) => match set_of(ruleset, name) {
            Some(IpSet {
                members: SetMembers::Networks(nets),
                purpose,
                ..
            }) => {
                let (v4_name, v6_name) = match purpose {
                    SetPurpose::Ignored => (IGNORED_IPV4_SET, IGNORED_IPV6_SET),
                    SetPurpose::Included => (INCLUDED_IPV4_SET, INCLUDED_IPV6_SET),
                };
                let (set, nfproto, offset, len) = match nets {
                    Networks::V4(nets) => (Set::ipv4_networks(v4_name, nets), NFPROTO_IPV4, 16, 4),
                    Networks::V6(nets) => (Set::ipv6_networks(v6_name, nets), NFPROTO_IPV6, 24, 16),
                };
                let mut exprs = family_check(nfproto);
                exprs.push(Expr::payload(PayloadBase::Network, offset, len));
                exprs.push(Expr::lookup(&sets.add(set)));
                exprs
            }
            Some(IpSet {
                members: SetMembers::Ports(ports),
                ..
            }) => {
                let set = Set::ports(ports_set_name(context.own_chain), ports);
                vec![
                    Expr::payload(PayloadBase::Transport, 2, 2),
                    Expr::lookup(&sets.add(set)),
                ]
            }
            // A rule naming a set its ruleset lacks matches nothing (no packet has family
            // 0); the planner never writes one.
            None => family_check(0),
        },
        Match::DestinationIsLocal(local) => addr_type(fib_flags::DADDR, *local),
        Match::SourceIsLocal(local) => addr_type(fib_flags::SADDR, *local),
        Match::InInterface(name) => interface_name(META_IIFNAME, name),
        Match::OutInterface(name) => interface_name(META_OIFNAME, name),
    }
}

const IPPROTO_UDP: u8 = 17;

/// `meta iifname` / `meta oifname` (`NFT_META_IIFNAME`, `NFT_META_OIFNAME`).
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;

/// An exact interface name, compared as nft writes it: padded with NULs to `IFNAMSIZ`.
fn interface_name(key: u32, name: &str) -> Vec<Expr> {
    let mut padded = name.as_bytes().to_vec();
    padded.resize(16, 0);
    vec![
        Expr::meta(MetaKey::Other(key)),
        Expr::cmp(CmpOp::Eq, padded),
    ]
}

/// The expressions matching when `condition` does not hold, for the conditions a single
/// compare negates.
fn negated(condition: &Match) -> Option<Vec<Expr>> {
    Some(match condition {
        Match::Tcp => vec![
            Expr::meta(MetaKey::L4Proto),
            Expr::cmp(CmpOp::Neq, [IPPROTO_TCP]),
        ],
        Match::DestinationIsLocal(local) => addr_type(fib_flags::DADDR, !local),
        Match::SourceIsLocal(local) => addr_type(fib_flags::SADDR, !local),
        Match::OwnerUid(uid) => vec![
            Expr::meta(MetaKey::SkUid),
            Expr::cmp(CmpOp::Neq, uid.to_ne_bytes()),
        ],
        Match::OwnerGid(gid) => vec![
            Expr::meta(MetaKey::SkGid),
            Expr::cmp(CmpOp::Neq, gid.to_ne_bytes()),
        ],
        Match::Udp
        | Match::DestinationPorts(_)
        | Match::DestinationNetwork(_)
        | Match::DestinationInSet(_)
        | Match::InInterface(_)
        | Match::OutInterface(_) => {
            return None;
        }
    })
}

fn addr_type(flags: u32, local: bool) -> Vec<Expr> {
    let op = if local { CmpOp::Eq } else { CmpOp::Neq };
    vec![
        Expr::fib_addr_type(flags),
        Expr::cmp(op, RTN_LOCAL.to_ne_bytes()),
    ]
}

pub(super) fn family_check(nfproto: u8) -> Vec<Expr> {
    vec![
        Expr::meta(MetaKey::NfProto),
        Expr::cmp(CmpOp::Eq, [nfproto]),
    ]
}

fn prefix_mask(prefix: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let bits = usize::from(prefix).saturating_sub(8 * i).min(8);
            (0xff_u16 << (8 - bits)) as u8
        })
        .collect()
}

fn ports_set_name(own_chain: &str) -> &'static str {
    if own_chain == INGRESS_CHAIN {
        APP_PORTS_SET
    } else {
        debug_assert_eq!(own_chain, EGRESS_CHAIN);
        IGNORED_PORTS_SET
    }
}

/// The table's sets by name: an equal set asked for twice (both families) is one set; a
/// different one under a taken name gets a numbered name.
#[derive(Default)]
struct SetNames {
    sets: Vec<Set>,
}

impl SetNames {
    fn add(&mut self, mut set: Set) -> String {
        let base = set.name.clone();
        let mut n = 1;
        while let Some(existing) = self.sets.iter().find(|s| s.name == set.name) {
            if *existing == set {
                return set.name;
            }
            n += 1;
            set.name = format!("{base}_{n}");
        }
        let name = set.name.clone();
        self.sets.push(set);
        name
    }
}

/// One chain's rules for both families: rules the two have in common (in the same order)
/// once, each family's own in between, limited to that family unless they are by
/// themselves (an address match is).
fn merge_families(v4: Vec<Rendered>, v6: Vec<Rendered>, ipv6: bool) -> Vec<Rule> {
    if !ipv6 {
        return v4.into_iter().map(|r| r.rule).collect();
    }
    let common = longest_common_subsequence(&v4, &v6);
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    for (ci, cj) in common.into_iter().chain([(v4.len(), v6.len())]) {
        for r in &v4[i..ci] {
            out.push(limited_to(r, NFPROTO_IPV4));
        }
        for r in &v6[j..cj] {
            out.push(limited_to(r, NFPROTO_IPV6));
        }
        if ci < v4.len() {
            out.push(v4[ci].rule.clone());
        }
        (i, j) = (ci + 1, cj + 1);
    }
    out
}

fn limited_to(rendered: &Rendered, nfproto: u8) -> Rule {
    if rendered.family_specific {
        return rendered.rule.clone();
    }
    let mut exprs = family_check(nfproto);
    exprs.extend(rendered.rule.exprs.iter().cloned());
    Rule::new(exprs)
}

/// Index pairs of the longest common subsequence of equal, family-independent rules.
/// Chains hold a handful of rules, so the quadratic table costs nothing.
fn longest_common_subsequence(a: &[Rendered], b: &[Rendered]) -> Vec<(usize, usize)> {
    let same =
        |x: &Rendered, y: &Rendered| !x.family_specific && !y.family_specific && x.rule == y.rule;
    let mut lengths = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lengths[i][j] = if same(&a[i], &b[j]) {
                lengths[i + 1][j + 1] + 1
            } else {
                lengths[i + 1][j].max(lengths[i][j + 1])
            };
        }
    }
    let mut pairs = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if same(&a[i], &b[j]) {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if lengths[i + 1][j] >= lengths[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    pairs
}

/// How the one model plans for this table: a list of any length is one match (a set when it
/// has more than one entry), and ignored networks are always a set.
pub const PLAN_OPTIONS: ruleset::PlanOptions = ruleset::PlanOptions {
    max_listed_networks: 0,
    max_port_rules: 1,
    port_list_slots: None,
};

/// The families whose traffic the table redirects: the caller decides (from the IPv6 mode
/// and what the namespace has) and passes the decision down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveFamilies {
    /// IPv6 traffic passes untouched.
    Ipv4Only,
    Both,
}

/// The table for `config`: the one model's rulesets ([`PLAN_OPTIONS`]) rendered. A pure
/// function.
pub fn plan_table(config: &ProxyConfig, families: ActiveFamilies) -> Table {
    let ipv4 = ruleset::plan(config, Family::Ipv4, PLAN_OPTIONS);
    let ipv6 = (families == ActiveFamilies::Both)
        .then(|| ruleset::plan(config, Family::Ipv6, PLAN_OPTIONS));
    render_table(&ipv4, ipv6.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IgnoredDestinations, IngressConfig, Ipv6Mode, PortList, PortRange};
    use nftables_netlink::model::{KeyRange, KeyType, Register};

    fn seed() -> ProxyConfig {
        ProxyConfig {
            ignored_uid: Some(1337),
            ignored_gid: None,
            proxy_egress_port: 15001,
            ingress: Some(IngressConfig {
                proxy_port: 15000,
                app_ports: PortList::from_ranges([PortRange::single(9080)]),
            }),
            egress_ignored_ports: PortList::from_ranges([PortRange::single(22)]),
            egress_ignored_destinations: IgnoredDestinations::from_networks(
                crate::config::ALWAYS_IGNORED_IPS
                    .map(|ip| ip.parse::<std::net::IpAddr>().unwrap().into()),
            ),
            ipv6: Ipv6Mode::Auto,
            mesh: Default::default(),
            verify: false,
        }
    }

    #[test]
    fn the_seed_config_plans_the_bytecode_nft_generates() {
        let table = plan_table(&seed(), ActiveFamilies::Both);
        assert_eq!(table.name, "meshinit");
        let names: Vec<&str> = table.sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [IGNORED_IPV4_SET, IGNORED_IPV6_SET]);
        assert!(!table.set(IGNORED_IPV4_SET).unwrap().interval);
        assert_eq!(table.set(IGNORED_IPV4_SET).unwrap().elements().len(), 3);

        let pre = table.chain(PREROUTING_BASE_CHAIN).unwrap();
        assert_eq!(pre.rules.len(), 2);
        assert_eq!(
            pre.rules[1].exprs,
            vec![
                Expr::meta(MetaKey::L4Proto),
                Expr::cmp(CmpOp::Eq, [6]),
                Expr::payload(PayloadBase::Transport, 2, 2),
                Expr::cmp(CmpOp::Eq, [0x23, 0x78]),
                Expr::Immediate {
                    dreg: Register::R1,
                    data: nftables_netlink::model::ImmediateData::Value(vec![0x3a, 0x98]),
                },
                Expr::Redir {
                    reg_proto_min: Some(Register::R1),
                    flags: 2,
                },
            ]
        );
        let out = table.chain(OUTPUT_BASE_CHAIN).unwrap();
        // l4proto, fib, uid, port 22, ipv4 set, ipv6 set, redirect
        assert_eq!(out.rules.len(), 7);
        assert_eq!(
            out.rules[2].exprs[1],
            Expr::cmp(CmpOp::Eq, 1337u32.to_ne_bytes())
        );
        assert_eq!(out.rules[3].exprs[3], Expr::cmp(CmpOp::Eq, [0, 22]));
    }

    #[test]
    fn adjacent_addresses_are_one_range_of_an_interval_set() {
        // The model merges what it loads into a set (as the iptables backends' hash:net
        // does), so two neighbours are one range: an interval set of one element.
        let mut config = seed();
        for ip in ["10.0.0.0", "10.0.0.1"] {
            config
                .egress_ignored_destinations
                .push(ip.parse::<std::net::IpAddr>().unwrap().into());
        }
        let table = plan_table(&config, ActiveFamilies::Both);
        let v4 = table.set(IGNORED_IPV4_SET).unwrap();
        assert!(v4.interval);
        assert!(v4.elements().contains(&nftables_netlink::model::KeyRange {
            first: 0x0a00_0000,
            last: 0x0a00_0001
        }));
    }

    #[test]
    fn an_empty_ipv6_ruleset_is_ipv4_only() {
        let mut config = seed();
        config.ipv6 = Ipv6Mode::Off;
        let v4 = ruleset::plan(&config, Family::Ipv4, PLAN_OPTIONS);
        let v6 = ruleset::plan(&config, Family::Ipv6, PLAN_OPTIONS);
        assert_eq!(
            render_table(&v4, Some(&v6)),
            plan_table(&seed(), ActiveFamilies::Ipv4Only)
        );
    }

    #[test]
    fn ipv4_only_returns_ipv6_first_and_has_no_ipv6_set() {
        let table = plan_table(&seed(), ActiveFamilies::Ipv4Only);
        assert!(table.set(IGNORED_IPV6_SET).is_none());
        for chain in &table.chains {
            assert_eq!(
                chain.rules[0].exprs,
                vec![
                    Expr::meta(MetaKey::NfProto),
                    Expr::cmp(CmpOp::Eq, [NFPROTO_IPV6]),
                    Expr::verdict(Verdict::Return)
                ]
            );
        }
    }

    #[test]
    fn long_lists_become_sets_of_the_right_layout() {
        let mut config = seed();
        config.ingress = None;
        config.ignored_gid = Some(2000);
        config.egress_ignored_ports =
            PortList::from_ranges((0..100u16).map(|i| PortRange::single(1000 + 2 * i)).chain([
                PortRange {
                    first: 5000,
                    last: 6000,
                },
            ]));
        config
            .egress_ignored_destinations
            .push("10.0.0.0/8".parse().unwrap());
        let table = plan_table(&config, ActiveFamilies::Both);
        assert!(table.chain(PREROUTING_BASE_CHAIN).is_none());
        let ports = table.set(IGNORED_PORTS_SET).unwrap();
        assert!(ports.interval);
        assert_eq!(ports.key, KeyType::InetService);
        assert_eq!(ports.elements().len(), 101);
        let v4 = table.set(IGNORED_IPV4_SET).unwrap();
        assert!(v4.interval);
        assert!(v4.elements().contains(&KeyRange {
            first: 0x0a00_0000,
            last: 0x0aff_ffff
        }));
        // v6 keeps only single addresses: a hash set.
        assert!(!table.set(IGNORED_IPV6_SET).unwrap().interval);
    }
}
