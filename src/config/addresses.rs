//! Egress-ignored destinations: addresses and CIDRs of both families, normalised, with the
//! metadata endpoints that must never go through the proxy always included.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{ConfigError, quote};

/// Destinations that are always excluded from egress redirection: the ECS task metadata and
/// credentials endpoint, EC2 IMDS, EKS Pod Identity, and their IPv6 forms. Sending these
/// through the proxy breaks credentials, so they are not optional.
pub const ALWAYS_IGNORED_IPS: [&str; 5] = [
    "169.254.170.2",
    "169.254.169.254",
    "169.254.170.23",
    "fd00:ec2::23",
    "fd00:ec2::254",
];

/// Egress-ignored destinations split by family, each list in the user's order followed by
/// the always-ignored endpoints, without exact duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredDestinations {
    pub ipv4: Vec<Ipv4Net>,
    pub ipv6: Vec<Ipv6Net>,
}

impl IgnoredDestinations {
    /// Builds the lists, dropping exact duplicates in linear time (lists can be 10,000 long).
    /// Each family is kept (and deduplicated) in its own type: 5 bytes an IPv4 entry, not the
    /// 18 of an `IpNet`, which matters at 100,000 entries.
    pub fn from_networks(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let (mut seen_v4, mut seen_v6) = (HashSet::new(), HashSet::new());
        let mut destinations = IgnoredDestinations::default();
        for net in nets {
            match net {
                IpNet::V4(net) if seen_v4.insert(net) => destinations.ipv4.push(net),
                IpNet::V6(net) if seen_v6.insert(net) => destinations.ipv6.push(net),
                _ => {}
            }
        }
        destinations
    }

    /// Adds one network unless it is already listed.
    pub fn push(&mut self, net: IpNet) {
        match net {
            IpNet::V4(net) if !self.ipv4.contains(&net) => self.ipv4.push(net),
            IpNet::V6(net) if !self.ipv6.contains(&net) => self.ipv6.push(net),
            _ => {}
        }
    }

    /// The IPv4 list without entries covered by another one, in order: what is rendered
    /// as one RETURN rule each. Quadratic, so meant for short lists.
    pub fn listed_ipv4(&self) -> Vec<Ipv4Net> {
        without_covered(&self.ipv4)
    }

    pub fn listed_ipv6(&self) -> Vec<Ipv6Net> {
        without_covered(&self.ipv6)
    }

    /// The list merged into the fewest CIDRs (overlapping and adjacent ones joined), which
    /// is what a set-based match loads.
    pub fn aggregated_ipv4(&self) -> Vec<Ipv4Net> {
        Ipv4Net::aggregate(&self.ipv4)
    }

    pub fn aggregated_ipv6(&self) -> Vec<Ipv6Net> {
        Ipv6Net::aggregate(&self.ipv6)
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.ipv4.iter().any(|n| n.contains(&a)),
            IpAddr::V6(a) => self.ipv6.iter().any(|n| n.contains(&a)),
        }
    }
}

trait Covers: Copy {
    fn covers(&self, other: &Self) -> bool;
}
impl Covers for Ipv4Net {
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
}
impl Covers for Ipv6Net {
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
}

fn without_covered<N: Covers>(nets: &[N]) -> Vec<N> {
    let mut kept: Vec<N> = Vec::new();
    for net in nets {
        if kept.iter().any(|existing| existing.covers(net)) {
            continue;
        }
        kept.retain(|existing| !net.covers(existing));
        kept.push(*net);
    }
    kept
}

/// What parsing one item gave: the network, and a warning when it was rewritten (host bits
/// cleared, an IPv4-mapped IPv6 address turned into its IPv4 form).
#[derive(Debug)]
pub struct ParsedNet {
    pub net: IpNet,
    pub warning: Option<String>,
}

/// Parses `10.0.0.1`, `10.0.0.0/8`, `fd00::1`, `2001:db8::/32`. Host bits set under the
/// prefix (`10.0.0.1/8`) are cleared with a warning, as the user evidently meant the network.
/// An IPv4-mapped IPv6 address or network (`::ffff:10.0.0.1`, `::ffff:10.0.0.0/104`) never
/// appears in IPv6 traffic (a dual-stack socket sends IPv4 packets to it), so it becomes its
/// IPv4 form, with a warning.
pub fn parse_ignored_ip(
    property: &str,
    verbatim: &str,
    item: &str,
) -> Result<ParsedNet, ConfigError> {
    let bad = || {
        ConfigError::new(
            property,
            Some(verbatim),
            format!(
                "{} is not an IP address or CIDR (e.g. 10.0.0.0/8, 169.254.169.254, fd00:ec2::254)",
                quote(item)
            ),
        )
    };
    // Only the characters of the address grammar: nothing else can reach the rules.
    let grammatical = item
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':' || b == b'/');
    if item.is_empty() || !grammatical {
        return Err(bad());
    }
    let (net, host_bits_set) = match item.parse::<IpAddr>() {
        Ok(addr) => (IpNet::from(addr), false),
        Err(_) => {
            let net: IpNet = item.parse().map_err(|_| bad())?;
            (net.trunc(), net.trunc() != net)
        }
    };
    let mut notes = Vec::new();
    if host_bits_set {
        notes.push(format!("has host bits set; using {net}"));
    }
    let net = match ipv4_mapped(net) {
        Some(v4) => {
            notes.push(format!(
                "is an IPv4-mapped IPv6 address, which IPv6 traffic never carries (IPv4 \
                 connections, dual-stack sockets included, are IPv4 packets); using {v4}"
            ));
            IpNet::V4(v4)
        }
        None => net,
    };
    let warning =
        (!notes.is_empty()).then(|| format!("{property}: {} {}", quote(item), notes.join("; ")));
    Ok(ParsedNet { net, warning })
}

/// The IPv4 network an IPv6 network inside `::ffff:0:0/96` stands for.
fn ipv4_mapped(net: IpNet) -> Option<Ipv4Net> {
    let IpNet::V6(v6) = net else { return None };
    let v4 = v6.addr().to_ipv4_mapped()?;
    let prefix = v6.prefix_len().checked_sub(96)?;
    Ipv4Net::new(v4, prefix).ok()
}

/// The families for which `destinations` together cover every address (`0.0.0.0/0`, `::/0`,
/// or halves that add up to it): ignoring them would turn egress redirection off.
pub fn whole_families_covered(destinations: &IgnoredDestinations) -> Vec<&'static str> {
    let mut covered = Vec::new();
    if destinations
        .aggregated_ipv4()
        .iter()
        .any(|n| n.prefix_len() == 0)
    {
        covered.push("IPv4");
    }
    if destinations
        .aggregated_ipv6()
        .iter()
        .any(|n| n.prefix_len() == 0)
    {
        covered.push("IPv6");
    }
    covered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared_with_a_warning() {
        let parsed = parse_ignored_ip("EgressIgnoredIPs", "v", "10.1.2.3/8").unwrap();
        assert_eq!(parsed.net.to_string(), "10.0.0.0/8");
        assert!(parsed.warning.unwrap().contains("host bits"));
        let parsed = parse_ignored_ip("EgressIgnoredIPs", "v", "2001:db8::1/32").unwrap();
        assert_eq!(parsed.net.to_string(), "2001:db8::/32");
    }

    #[test]
    fn ipv4_mapped_addresses_become_ipv4_with_a_warning() {
        let parsed = parse_ignored_ip("P", "v", "::ffff:10.1.2.3").unwrap();
        assert_eq!(parsed.net.to_string(), "10.1.2.3/32");
        assert!(parsed.warning.unwrap().contains("IPv4-mapped"));
        let parsed = parse_ignored_ip("P", "v", "::ffff:10.1.2.3/104").unwrap();
        assert_eq!(parsed.net.to_string(), "10.0.0.0/8");
        // Wider than the mapped block: an ordinary IPv6 network.
        let parsed = parse_ignored_ip("P", "v", "::/64").unwrap();
        assert_eq!(parsed.net.to_string(), "::/64");
    }

    #[test]
    fn whole_families_are_detected_also_from_halves() {
        let nets = |items: &[&str]| {
            IgnoredDestinations::from_networks(items.iter().map(|i| i.parse::<IpNet>().unwrap()))
        };
        assert_eq!(whole_families_covered(&nets(&["0.0.0.0/0"])), ["IPv4"]);
        assert_eq!(
            whole_families_covered(&nets(&["0.0.0.0/1", "128.0.0.0/1", "::/0"])),
            ["IPv4", "IPv6"]
        );
        assert!(whole_families_covered(&nets(&["0.0.0.0/1", "::/1"])).is_empty());
    }

    #[test]
    fn addresses_become_host_networks() {
        let parsed = parse_ignored_ip("P", "v", "169.254.169.254").unwrap();
        assert_eq!(parsed.net.to_string(), "169.254.169.254/32");
        assert!(parsed.warning.is_none());
    }

    #[test]
    fn anything_outside_the_grammar_is_rejected() {
        for bad in [
            "10.0.0.1 -j ACCEPT",
            "10.0.0.1\n",
            "1.2.3.4;",
            "10.0.0.0/33",
            "::g",
            "",
            "host.example",
        ] {
            let e = parse_ignored_ip("EgressIgnoredIPs", bad, bad).unwrap_err();
            assert!(
                e.message.contains("is not an IP address or CIDR"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn covered_entries_collapse_and_aggregation_merges_adjacent_networks() {
        let d = IgnoredDestinations::from_networks(
            ["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5/32", "10.0.0.0/25"]
                .map(|n| n.parse::<IpNet>().unwrap()),
        );
        assert_eq!(d.ipv4.len(), 3);
        assert_eq!(d.listed_ipv4().len(), 2);
        assert_eq!(
            d.aggregated_ipv4(),
            vec!["10.0.0.0/24".parse::<Ipv4Net>().unwrap()]
        );
    }
}
