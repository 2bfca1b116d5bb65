//! Planning: the `inet meshinit` table a [`ProxyConfig`] asks for, with the semantics of
//! the iptables ruleset (`crate::ruleset::plan`): the address-type guards, the proxy's
//! UID/GID, the ignored ports and destinations, then the redirect. Lists of any length go
//! into sets; a list of one port is a plain compare, as nft writes it.

use super::model::{
    BaseChain, Chain, ChainType, CmpOp, Expr, Hook, IPPROTO_TCP, MetaKey, NFPROTO_IPV4,
    NFPROTO_IPV6, PayloadBase, Policy, RTN_LOCAL, Rule, Set, TABLE_NAME, Table, Verdict, fib_flags,
};
use crate::config::{PortList, ProxyConfig};

/// The families whose traffic the table redirects: the caller decides (from the IPv6 mode
/// and what the namespace has) and passes the decision down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveFamilies {
    /// IPv6 traffic passes untouched.
    Ipv4Only,
    Both,
}

pub const PREROUTING_CHAIN: &str = "prerouting";
pub const OUTPUT_CHAIN: &str = "output";
pub const APP_PORTS_SET: &str = "app_ports";
pub const IGNORED_PORTS_SET: &str = "ignored_ports";
pub const IGNORED_IPV4_SET: &str = "ignored_ipv4";
pub const IGNORED_IPV6_SET: &str = "ignored_ipv6";
/// nft's `dstnat` priority; the output chain uses the same number (`-100`).
pub const NAT_DSTNAT_PRIORITY: i32 = -100;

/// The table for `config`; a pure function.
pub fn plan_table(config: &ProxyConfig, families: ActiveFamilies) -> Table {
    let mut sets = Vec::new();
    let mut chains = Vec::new();
    // In an inet chain IPv6 packets arrive too: with IPv6 off they leave first.
    let ipv6_passes = |rules: &mut Vec<Rule>| {
        if families == ActiveFamilies::Ipv4Only {
            rules.push(Rule::new(vec![
                Expr::meta(MetaKey::NfProto),
                Expr::cmp(CmpOp::Eq, [NFPROTO_IPV6]),
                Expr::verdict(Verdict::Return),
            ]));
        }
    };

    if let Some(ingress) = &config.ingress {
        let mut rules = Vec::new();
        ipv6_passes(&mut rules);
        // Only connections from elsewhere: the proxy's own connections to the app are local.
        rules.push(Rule::new(vec![
            Expr::fib_addr_type(fib_flags::SADDR),
            Expr::cmp(CmpOp::Eq, RTN_LOCAL.to_ne_bytes()),
            Expr::verdict(Verdict::Return),
        ]));
        let mut redirect = tcp_dport_matches(&ingress.app_ports, APP_PORTS_SET, &mut sets);
        redirect.extend(Expr::redirect_to_port(ingress.proxy_port));
        rules.push(Rule::new(redirect));
        chains.push(nat_chain(PREROUTING_CHAIN, Hook::Prerouting, rules));
    }

    let mut rules = Vec::new();
    ipv6_passes(&mut rules);
    rules.push(Rule::new(vec![
        Expr::meta(MetaKey::L4Proto),
        Expr::cmp(CmpOp::Neq, [IPPROTO_TCP]),
        Expr::verdict(Verdict::Return),
    ]));
    // Connections to this namespace's own addresses (loopback included) stay local.
    rules.push(Rule::new(vec![
        Expr::fib_addr_type(fib_flags::DADDR),
        Expr::cmp(CmpOp::Eq, RTN_LOCAL.to_ne_bytes()),
        Expr::verdict(Verdict::Return),
    ]));
    for (key, id) in [
        (MetaKey::SkUid, config.ignored_uid),
        (MetaKey::SkGid, config.ignored_gid),
    ] {
        if let Some(id) = id {
            rules.push(Rule::new(vec![
                Expr::meta(key),
                Expr::cmp(CmpOp::Eq, id.to_ne_bytes()),
                Expr::verdict(Verdict::Return),
            ]));
        }
    }
    if !config.egress_ignored_ports.is_empty() {
        let mut ports =
            tcp_dport_matches(&config.egress_ignored_ports, IGNORED_PORTS_SET, &mut sets);
        ports.push(Expr::verdict(Verdict::Return));
        rules.push(Rule::new(ports));
    }

    let destinations = &config.egress_ignored_destinations;
    if !destinations.ipv4.is_empty() {
        sets.push(Set::ipv4_networks(IGNORED_IPV4_SET, &destinations.ipv4));
        rules.push(daddr_in_set(NFPROTO_IPV4, 16, 4, IGNORED_IPV4_SET));
    }
    if families == ActiveFamilies::Both && !destinations.ipv6.is_empty() {
        sets.push(Set::ipv6_networks(IGNORED_IPV6_SET, &destinations.ipv6));
        rules.push(daddr_in_set(NFPROTO_IPV6, 24, 16, IGNORED_IPV6_SET));
    }

    let mut redirect = vec![
        Expr::meta(MetaKey::L4Proto),
        Expr::cmp(CmpOp::Eq, [IPPROTO_TCP]),
    ];
    redirect.extend(Expr::redirect_to_port(config.proxy_egress_port));
    rules.push(Rule::new(redirect));
    chains.push(nat_chain(OUTPUT_CHAIN, Hook::Output, rules));

    Table::new(TABLE_NAME, sets, chains)
}

fn nat_chain(name: &str, hook: Hook, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_owned(),
        base: Some(BaseChain {
            chain_type: ChainType::Nat,
            hook,
            priority: NAT_DSTNAT_PRIORITY,
            policy: Policy::Accept,
        }),
        rules,
    }
}

/// `tcp dport PORT` or `tcp dport @SET` (adding the set): the expressions up to the match.
fn tcp_dport_matches(ports: &PortList, set_name: &str, sets: &mut Vec<Set>) -> Vec<Expr> {
    let mut exprs = vec![
        Expr::meta(MetaKey::L4Proto),
        Expr::cmp(CmpOp::Eq, [IPPROTO_TCP]),
        Expr::payload(PayloadBase::Transport, 2, 2),
    ];
    match ports.ranges() {
        [single] if single.first == single.last => {
            exprs.push(Expr::cmp(CmpOp::Eq, single.first.to_be_bytes()));
        }
        ranges => {
            sets.push(Set::ports(set_name, ranges));
            exprs.push(Expr::lookup(set_name));
        }
    }
    exprs
}

/// `ip daddr @SET return` / `ip6 daddr @SET return`: the destination address sits at
/// offset 16 (IPv4) or 24 (IPv6) of the network header.
fn daddr_in_set(nfproto: u8, offset: u32, len: u32, set_name: &str) -> Rule {
    Rule::new(vec![
        Expr::meta(MetaKey::NfProto),
        Expr::cmp(CmpOp::Eq, [nfproto]),
        Expr::payload(PayloadBase::Network, offset, len),
        Expr::lookup(set_name),
        Expr::verdict(Verdict::Return),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IgnoredDestinations, IngressConfig, Ipv6Mode, PortRange};
    use crate::nftables::model::{KeyRange, KeyType, Register};

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

        let pre = table.chain(PREROUTING_CHAIN).unwrap();
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
                    data: crate::nftables::model::ImmediateData::Value(vec![0x3a, 0x98]),
                },
                Expr::Redir {
                    reg_proto_min: Some(Register::R1),
                    flags: 2,
                },
            ]
        );
        let out = table.chain(OUTPUT_CHAIN).unwrap();
        // l4proto, fib, uid, port 22, ipv4 set, ipv6 set, redirect
        assert_eq!(out.rules.len(), 7);
        assert_eq!(
            out.rules[2].exprs[1],
            Expr::cmp(CmpOp::Eq, 1337u32.to_ne_bytes())
        );
        assert_eq!(out.rules[3].exprs[3], Expr::cmp(CmpOp::Eq, [0, 22]));
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
        assert!(table.chain(PREROUTING_CHAIN).is_none());
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
