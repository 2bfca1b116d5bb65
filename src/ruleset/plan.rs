//! Planning: the rules a [`ProxyConfig`] asks for. Small configurations give exactly the
//! App Mesh CNI plugin's rules; long exclusion lists move into ipsets so that every new
//! connection pays one lookup instead of walking one rule per entry.

use std::fmt::Display;

use super::{EGRESS_CHAIN, Family, INGRESS_CHAIN, IpSet, Rule, Ruleset, SetKind};
use crate::config::{Ipv6Mode, ProxyConfig};

/// Thresholds above which a list is matched through an ipset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// More ignored networks than this (per family, after de-duplication) use a set.
    pub max_listed_networks: usize,
    /// More `multiport` rules than this for the ignored ports use a set.
    pub max_multiport_rules: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        // Measured in BENCHMARKS.md: a few dozen RETURN rules cost nothing noticeable; beyond
        // that the per-connection walk grows linearly.
        PlanOptions {
            max_listed_networks: 32,
            max_multiport_rules: 4,
        }
    }
}

/// The ruleset of one family.
pub fn plan(config: &ProxyConfig, family: Family, options: PlanOptions) -> Ruleset {
    let mut ruleset = Ruleset::empty(family);
    if family == Family::Ipv6 && config.ipv6 == Ipv6Mode::Off {
        return ruleset;
    }

    if let Some(ingress) = &config.ingress {
        ruleset.chains.push(INGRESS_CHAIN.to_owned());
        for ports in ingress.app_ports.multiport_chunks() {
            ruleset.rules.push(Rule::new(
                INGRESS_CHAIN,
                format!(
                    "-p tcp -m multiport --dports {ports} -j REDIRECT --to-ports {}",
                    ingress.proxy_port
                ),
            ));
        }
        // Only connections from elsewhere: the proxy's own connections to the app are local.
        ruleset.jumps.push(Rule::new(
            "PREROUTING",
            format!("-p tcp -m addrtype ! --src-type LOCAL -j {INGRESS_CHAIN}"),
        ));
    }

    ruleset.chains.push(EGRESS_CHAIN.to_owned());
    let egress = |spec: String| Rule::new(EGRESS_CHAIN, spec);
    if let Some(uid) = config.ignored_uid {
        ruleset
            .rules
            .push(egress(format!("-m owner --uid-owner {uid} -j RETURN")));
    }
    if let Some(gid) = config.ignored_gid {
        ruleset
            .rules
            .push(egress(format!("-m owner --gid-owner {gid} -j RETURN")));
    }

    let port_chunks = config.egress_ignored_ports.multiport_chunks();
    if port_chunks.len() > options.max_multiport_rules {
        let set = IpSet {
            name: format!("APPMESH_IGNORED_PORT{}", family.suffix()),
            kind: SetKind::Ports,
            family,
            members: config
                .egress_ignored_ports
                .ranges()
                .iter()
                .map(|r| {
                    if r.first == r.last {
                        r.first.to_string()
                    } else {
                        format!("{}-{}", r.first, r.last)
                    }
                })
                .collect(),
        };
        ruleset.rules.push(egress(format!(
            "-p tcp -m set --match-set {} dst -j RETURN",
            set.name
        )));
        ruleset.sets.push(set);
    } else {
        for ports in port_chunks {
            ruleset.rules.push(egress(format!(
                "-p tcp -m multiport --dports {ports} -j RETURN"
            )));
        }
    }

    let destinations = &config.egress_ignored_destinations;
    let listed_count = match family {
        Family::Ipv4 => destinations.ipv4.len(),
        Family::Ipv6 => destinations.ipv6.len(),
    };
    if listed_count > options.max_listed_networks {
        let members = match family {
            Family::Ipv4 => set_members(&destinations.aggregated_ipv4(), "/32"),
            Family::Ipv6 => set_members(&destinations.aggregated_ipv6(), "/128"),
        };
        let set = IpSet {
            name: format!("APPMESH_IGNORED_NET{}", family.suffix()),
            kind: SetKind::Networks,
            family,
            members,
        };
        ruleset.rules.push(egress(format!(
            "-p tcp -m set --match-set {} dst -j RETURN",
            set.name
        )));
        ruleset.sets.push(set);
    } else {
        let listed = match family {
            Family::Ipv4 => texts(&destinations.listed_ipv4()),
            Family::Ipv6 => texts(&destinations.listed_ipv6()),
        };
        for net in listed {
            ruleset
                .rules
                .push(egress(format!("-d {net} -p tcp -j RETURN")));
        }
    }

    ruleset.rules.push(egress(format!(
        "-p tcp -j REDIRECT --to-ports {}",
        config.proxy_egress_port
    )));
    // Connections to this namespace's own addresses (loopback included) stay local.
    ruleset.jumps.push(Rule::new(
        "OUTPUT",
        format!("-p tcp -m addrtype ! --dst-type LOCAL -j {EGRESS_CHAIN}"),
    ));
    ruleset
}

fn texts<T: Display>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// Networks as `ipset save` prints them: a host network (`host_suffix`, the family's full
/// prefix) as its bare address. Per family: an IPv6 /32 is a network, not a host.
fn set_members<N: Display>(nets: &[N], host_suffix: &str) -> Vec<String> {
    nets.iter()
        .map(|net| {
            let text = net.to_string();
            match text.strip_suffix(host_suffix) {
                Some(host) => host.to_owned(),
                None => text,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_members_write_only_full_prefixes_of_the_family_as_bare_hosts() {
        let v6: Vec<ipnet::Ipv6Net> = ["fd00:ec2::/32", "fd00:ec2::254/128"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(set_members(&v6, "/128"), ["fd00:ec2::/32", "fd00:ec2::254"]);
        let v4: Vec<ipnet::Ipv4Net> = ["10.0.0.1/32", "10.0.0.0/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(set_members(&v4, "/32"), ["10.0.0.1", "10.0.0.0/8"]);
    }
}
