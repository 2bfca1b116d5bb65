//! Planning: the rules a [`ProxyConfig`] asks for. Small configurations give exactly the
//! App Mesh CNI plugin's rules; long exclusion lists (and a long egress include list) move
//! into sets so that every new connection pays one lookup instead of walking one rule per
//! entry.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::zones::{ZoneOwner, plan_zones};
use super::{
    EGRESS_CHAIN, Family, INGRESS_CHAIN, IpSet, Match, Networks, OUTPUT_CHAIN, PREROUTING_CHAIN,
    Rule, Ruleset, SetMembers, SetPurpose, Verdict, sets,
};
use crate::config::mesh::{DNS_PORT, DnsScope};
use crate::config::{Ipv6Mode, PortRange, ProxyConfig};

/// What a backend can express, and thresholds above which a list is matched through a set.
/// There is no default: each backend says what its matches hold (`Backend::plan_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// More ignored networks than this (per family, after de-duplication) use a set.
    pub max_listed_networks: usize,
    /// More port-list rules than this for the ignored ports use a set.
    pub max_port_rules: usize,
    /// How many slots one port-list match holds (a range takes two), if limited.
    pub port_list_slots: Option<usize>,
}

/// The ruleset of one family.
pub fn plan(config: &ProxyConfig, family: Family, options: PlanOptions) -> Ruleset {
    let mut ruleset = Ruleset::empty(family);
    if family == Family::Ipv6 && config.ipv6 == Ipv6Mode::Off {
        return ruleset;
    }

    let mesh = &config.mesh;
    ruleset.drop_invalid = mesh.drop_invalid;
    if let Some(ingress) = &config.ingress {
        ruleset.chains.push(INGRESS_CHAIN.to_owned());
        for name in &mesh.ignored_interfaces {
            ruleset.rules.push(Rule::new(
                INGRESS_CHAIN,
                vec![Match::InInterface(name.clone())],
                Verdict::Return,
            ));
        }
        if mesh.ingress_all_ports {
            // Every port: the few never captured leave first, then one rule takes the rest.
            for ports in port_lists(mesh.ingress_ignored_ports.ranges(), options) {
                ruleset.rules.push(Rule::new(
                    INGRESS_CHAIN,
                    vec![Match::Tcp, Match::DestinationPorts(ports)],
                    Verdict::Return,
                ));
            }
            ruleset.rules.push(Rule::new(
                INGRESS_CHAIN,
                vec![Match::Tcp],
                Verdict::Redirect(ingress.proxy_port),
            ));
        } else {
            for ports in port_lists(ingress.app_ports.ranges(), options) {
                ruleset.rules.push(Rule::new(
                    INGRESS_CHAIN,
                    vec![Match::Tcp, Match::DestinationPorts(ports)],
                    Verdict::Redirect(ingress.proxy_port),
                ));
            }
        }
        // Only connections from elsewhere: the proxy's own connections to the app are local.
        ruleset.jumps.push(Rule::new(
            PREROUTING_CHAIN,
            vec![Match::Tcp, Match::SourceIsLocal(false)],
            Verdict::Jump(INGRESS_CHAIN.to_owned()),
        ));
    }

    ruleset.chains.push(EGRESS_CHAIN.to_owned());
    let egress_return = |matches| Rule::new(EGRESS_CHAIN, matches, Verdict::Return);
    if let Some(uid) = config.ignored_uid {
        ruleset
            .rules
            .push(egress_return(vec![Match::OwnerUid(uid)]));
    }
    if let Some(gid) = config.ignored_gid {
        ruleset
            .rules
            .push(egress_return(vec![Match::OwnerGid(gid)]));
    }
    for name in &mesh.ignored_interfaces {
        ruleset
            .rules
            .push(egress_return(vec![Match::OutInterface(name.clone())]));
    }
    // DNS after the proxy's own traffic has left, before the exclusions: a resolver
    // among the ignored destinations is still captured when DNS capture is asked for.
    if let Some(dns) = &mesh.dns {
        let owners: Vec<ZoneOwner> = config
            .ignored_uid
            .map(ZoneOwner::Uid)
            .into_iter()
            .chain(config.ignored_gid.map(ZoneOwner::Gid))
            .collect();
        ruleset.dns_zones = plan_zones(dns, &owners, family);
        let resolvers: Vec<Option<IpNet>> = match dns.scope {
            DnsScope::All => vec![None],
            DnsScope::ResolvConf => dns
                .resolvers
                .iter()
                .filter(|a| a.is_ipv4() == (family == Family::Ipv4))
                .map(|a| Some(IpNet::from(*a)))
                .collect(),
        };
        for protocol in [Match::Udp, Match::Tcp] {
            for resolver in &resolvers {
                let mut matches: Vec<Match> = resolver
                    .iter()
                    .map(|n| Match::DestinationNetwork(*n))
                    .collect();
                matches.push(protocol.clone());
                matches.push(Match::DestinationPorts(vec![PortRange::single(DNS_PORT)]));
                ruleset.rules.push(Rule::new(
                    EGRESS_CHAIN,
                    matches,
                    Verdict::Redirect(dns.proxy_port),
                ));
            }
        }
    }

    let ports = config.egress_ignored_ports.ranges();
    let port_rules = port_lists(ports, options);
    if port_rules.len() > options.max_port_rules {
        let members = SetMembers::Ports(merged_ports(ports));
        let set = new_set(family, members);
        ruleset.rules.push(egress_return(vec![
            Match::Tcp,
            Match::DestinationInSet(set.name.clone()),
        ]));
        ruleset.sets.push(set);
    } else {
        for ports in port_rules {
            ruleset.rules.push(egress_return(vec![
                Match::Tcp,
                Match::DestinationPorts(ports),
            ]));
        }
    }

    let destinations = &config.egress_ignored_destinations;
    let listed_count = match family {
        Family::Ipv4 => destinations.ipv4.len(),
        Family::Ipv6 => destinations.ipv6.len(),
    };
    if listed_count > options.max_listed_networks {
        let merged = match family {
            Family::Ipv4 => Networks::V4(destinations.aggregated_ipv4()),
            Family::Ipv6 => Networks::V6(destinations.aggregated_ipv6()),
        };
        let set = new_set(family, SetMembers::Networks(merged));
        ruleset.rules.push(egress_return(vec![
            Match::Tcp,
            Match::DestinationInSet(set.name.clone()),
        ]));
        ruleset.sets.push(set);
    } else {
        let listed: Vec<IpNet> = match family {
            Family::Ipv4 => destinations
                .listed_ipv4()
                .into_iter()
                .map(IpNet::V4)
                .collect(),
            Family::Ipv6 => destinations
                .listed_ipv6()
                .into_iter()
                .map(IpNet::V6)
                .collect(),
        };
        for net in listed {
            ruleset.rules.push(egress_return(vec![
                Match::DestinationNetwork(net),
                Match::Tcp,
            ]));
        }
    }

    match &mesh.egress_included {
        None => ruleset.rules.push(Rule::new(
            EGRESS_CHAIN,
            vec![Match::Tcp],
            Verdict::Redirect(config.proxy_egress_port),
        )),
        // Only the listed destinations reach the redirect; the exclusions above still win.
        Some(included) => {
            let listed: Vec<IpNet> = match family {
                Family::Ipv4 => without_covered(&included.ipv4, IpNet::V4),
                Family::Ipv6 => without_covered(&included.ipv6, IpNet::V6),
            };
            let whole_family = listed.iter().any(|net| net.prefix_len() == 0);
            if listed.len() > options.max_listed_networks && !whole_family {
                // A long list is one set lookup, as a long ignored list is (same threshold).
                let merged = match family {
                    Family::Ipv4 => Networks::V4(Ipv4Net::aggregate(&included.ipv4)),
                    Family::Ipv6 => Networks::V6(Ipv6Net::aggregate(&included.ipv6)),
                };
                let set = new_set_for(SetPurpose::Included, family, SetMembers::Networks(merged));
                ruleset.rules.push(Rule::new(
                    EGRESS_CHAIN,
                    vec![Match::Tcp, Match::DestinationInSet(set.name.clone())],
                    Verdict::Redirect(config.proxy_egress_port),
                ));
                ruleset.sets.push(set);
            } else {
                for net in listed {
                    // A whole family is no address test at all (iptables-save drops
                    // `-d ::/0`).
                    let matches = if net.prefix_len() == 0 {
                        vec![Match::Tcp]
                    } else {
                        vec![Match::DestinationNetwork(net), Match::Tcp]
                    };
                    ruleset.rules.push(Rule::new(
                        EGRESS_CHAIN,
                        matches,
                        Verdict::Redirect(config.proxy_egress_port),
                    ));
                }
            }
        }
    }
    // Connections to this namespace's own addresses (loopback included) stay local. With
    // DNS capture, UDP enters too (every other rule of the chain matches TCP only).
    let mut jump = vec![Match::Tcp, Match::DestinationIsLocal(false)];
    if mesh.dns.is_some() {
        jump.remove(0);
    }
    ruleset.jumps.push(Rule::new(
        OUTPUT_CHAIN,
        jump,
        Verdict::Jump(EGRESS_CHAIN.to_owned()),
    ));
    ruleset
}

/// The networks in order without those another one covers.
fn without_covered<N: Copy + PartialEq>(nets: &[N], to_net: fn(N) -> IpNet) -> Vec<IpNet> {
    let all: Vec<IpNet> = nets.iter().map(|n| to_net(*n)).collect();
    all.iter()
        .enumerate()
        .filter(|(i, net)| {
            !all.iter()
                .enumerate()
                .any(|(j, other)| j != *i && other != *net && other.contains(*net))
        })
        .map(|(_, net)| *net)
        .collect()
}

fn new_set(family: Family, members: SetMembers) -> IpSet {
    new_set_for(SetPurpose::Ignored, family, members)
}

fn new_set_for(purpose: SetPurpose, family: Family, members: SetMembers) -> IpSet {
    IpSet {
        name: sets::versioned_name(purpose, members.kind(), family, &members),
        family,
        purpose,
        members,
    }
}

/// Splits a port list into lists the backend can hold in one match; never truncates (the
/// AWS plugin kept only the first 15 ports).
fn port_lists(ranges: &[PortRange], options: PlanOptions) -> Vec<Vec<PortRange>> {
    let Some(slots_per_list) = options.port_list_slots else {
        return if ranges.is_empty() {
            Vec::new()
        } else {
            vec![ranges.to_vec()]
        };
    };
    let mut lists: Vec<Vec<PortRange>> = Vec::new();
    let mut slots = 0;
    for range in ranges {
        if lists.is_empty() || slots + range.multiport_slots() > slots_per_list {
            lists.push(Vec::new());
            slots = 0;
        }
        slots += range.multiport_slots();
        lists.last_mut().expect("pushed above").push(*range);
    }
    lists
}

/// Ranges sorted, with overlapping and adjacent ones joined: what a set holds.
fn merged_ports(ranges: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut merged: Vec<PortRange> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(range.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(range.last);
            }
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests;
