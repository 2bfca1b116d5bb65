//! Which probes verify makes: the destinations, users, ports and samples that exercise each
//! exclusion of the configuration. Pure: tested without root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::Serialize;

use super::check::{CheckKind, CheckResult, Evidence, Identity, Status};
use crate::config::mesh::{DNS_PORT, DnsScope};
use crate::config::settings::{Property, Vocabulary};
use crate::config::{ALWAYS_IGNORED_IPS, ALWAYS_IGNORED_PORT, ProxyConfig};
use crate::ruleset::{Family, zones};

/// ones; a range contributes its first and last port).
pub const MAX_IGNORED_PORT_PROBES: usize = 16;
/// At most this many ignored destinations are probed per family (the metadata endpoints
/// first, then one address of each configured network).
pub const MAX_IGNORED_DESTINATION_PROBES: usize = 16;

/// Documentation-only addresses (RFC 5737, RFC 3849, RFC 9637): they exist nowhere, so a
/// connection to one that is not redirected goes nowhere either.
const TEST_NET_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(203, 0, 113, 1),
];
const TEST_NET_V6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 1),
];
/// Whether `ip` is one of the documentation addresses verify sends egress probes to.
pub fn is_test_destination(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => TEST_NET_V4.contains(&v4),
        IpAddr::V6(v6) => TEST_NET_V6.contains(&v6),
    }
}

/// Ports tried, in order, for a connection that the rules should redirect.
const ORDINARY_PORT_CANDIDATES: [u16; 5] = [80, 443, 8080, 8443, 9000];
/// Where the search for an ordinary (not ignored) user or group starts: a typical
/// application user, never root, never the proxy's.
const ORDINARY_ID_START: u32 = 1000;

/// Which proxy port a verify listener stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    Egress,
    Ingress,
}

/// One listening socket to open: a role's port in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSpec {
    pub role: ListenerRole,
    pub family: Family,
    pub port: u16,
}

/// What a probe should observe when the rules work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// Reaches verify's egress listener without NAT (the loopback self-test).
    AnswersDirectly,
    /// Reaches verify's egress listener with the original destination intact.
    RedirectedToEgress,
    /// Does not reach any of verify's listeners.
    NotRedirected,
}

/// One connection to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub kind: CheckKind,
    pub family: Family,
    pub destination: SocketAddr,
    pub identity: Identity,
    pub expectation: Expectation,
}

impl Probe {
    /// A check result for this probe that could not be decided by a connection.
    pub fn unprobed(&self, status: Status, reason: String) -> CheckResult {
        CheckResult {
            check: self.kind,
            family: self.family,
            evidence: Evidence::Connection,
            status,
            destination: Some(self.destination),
            identity: Some(self.identity),
            observed: None,
            reason,
        }
    }

    pub fn attempt(&self) -> String {
        format!(
            "egress as uid {} gid {} to {}",
            self.identity.uid, self.identity.gid, self.destination
        )
    }
}

/// A user and a group that no exclusion rule matches: the application's stand-in.
pub fn ordinary_identity(config: &ProxyConfig) -> Identity {
    let first_not = |excluded: Option<u32>| {
        (ORDINARY_ID_START..)
            .find(|id| Some(*id) != excluded)
            .unwrap_or(ORDINARY_ID_START)
    };
    Identity {
        uid: first_not(config.ignored_uid),
        gid: first_not(config.ignored_gid),
    }
}

/// A destination port that is neither egress-ignored nor a proxy port, or `None` when the
/// configuration ignores every port.
pub fn ordinary_port(config: &ProxyConfig) -> Option<u16> {
    let ingress_port = config.ingress.as_ref().map(|i| i.proxy_port);
    let usable = |port: &u16| {
        !config.egress_ignored_ports.contains(*port)
            && *port != config.proxy_egress_port
            && Some(*port) != ingress_port
    };
    ORDINARY_PORT_CANDIDATES
        .into_iter()
        .find(usable)
        .or_else(|| (1..=u16::MAX).find(usable))
}

/// TEST-NET addresses of `family` that are not egress-ignored, in order of preference.
pub fn test_destination_candidates(config: &ProxyConfig, family: Family) -> Vec<IpAddr> {
    let all: Vec<IpAddr> = match family {
        Family::Ipv4 => TEST_NET_V4.iter().map(|a| IpAddr::V4(*a)).collect(),
        Family::Ipv6 => TEST_NET_V6.iter().map(|a| IpAddr::V6(*a)).collect(),
    };
    let included = |a: &IpAddr| {
        config
            .mesh
            .egress_included
            .as_ref()
            .is_none_or(|i| i.contains(*a))
    };
    let mut candidates: Vec<IpAddr> = all
        .into_iter()
        .filter(|a| !config.egress_ignored_destinations.contains(*a) && included(a))
        .collect();
    // With an include list, only its destinations are redirected: probe inside it.
    if let Some(list) = &config.mesh.egress_included {
        candidates.extend(
            list.networks(family)
                .map(sample_address)
                .filter(|a| !config.egress_ignored_destinations.contains(*a)),
        );
    }
    candidates
}

/// The transport of a DNS probe: DNS capture redirects both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsTransport {
    Udp,
    Tcp,
}

impl DnsTransport {
    pub fn name(self) -> &'static str {
        match self {
            DnsTransport::Udp => "UDP",
            DnsTransport::Tcp => "TCP",
        }
    }
}

/// One DNS query to send (into verify's sink, so it never leaves the namespace) and where
/// conntrack must show it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsProbe {
    pub family: Family,
    pub transport: DnsTransport,
    /// A resolver in the capture's scope, port 53.
    pub destination: SocketAddr,
    pub identity: Identity,
    /// `Some(port)`: must be redirected to the proxy's DNS port; `None`: the proxy's own
    /// query, which must reach the resolver untouched.
    pub redirected_to: Option<u16>,
    /// The conntrack zone the DNS zone rules put this flow in (0 when none applies).
    pub zone: u16,
}

impl DnsProbe {
    pub fn attempt(&self) -> String {
        format!(
            "a DNS query over {} as uid {} gid {} to {}",
            self.transport.name(),
            self.identity.uid,
            self.identity.gid,
            self.destination
        )
    }

    /// A check result for this probe decided without sending it.
    pub fn unprobed(&self, status: Status, reason: String) -> CheckResult {
        CheckResult {
            check: CheckKind::DnsCapture,
            family: self.family,
            evidence: Evidence::Connection,
            status,
            destination: Some(self.destination),
            identity: Some(self.identity),
            observed: None,
            reason,
        }
    }
}

/// The resolvers a DNS probe of `family` may go to, in order of preference: TEST-NET
/// addresses when every resolver is captured (nothing there answers), else the resolvers
/// of resolv.conf read at apply time (the probe goes into verify's sink, never to them).
pub fn dns_destination_candidates(config: &ProxyConfig, family: Family) -> Vec<IpAddr> {
    let Some(dns) = &config.mesh.dns else {
        return Vec::new();
    };
    match dns.scope {
        DnsScope::All => match family {
            Family::Ipv4 => TEST_NET_V4.iter().map(|a| IpAddr::V4(*a)).collect(),
            Family::Ipv6 => TEST_NET_V6.iter().map(|a| IpAddr::V6(*a)).collect(),
        },
        DnsScope::ResolvConf => distinct(
            dns.resolvers
                .iter()
                .copied()
                .filter(|a| a.is_ipv4() == (family == Family::Ipv4)),
        ),
    }
}

/// The DNS probes at `resolver`: UDP and TCP from an ordinary user (redirected to the
/// proxy's DNS port) and from the proxy's user (or group), which must not be.
pub fn dns_probes(config: &ProxyConfig, family: Family, resolver: IpAddr) -> Vec<DnsProbe> {
    let Some(dns) = &config.mesh.dns else {
        return Vec::new();
    };
    let ordinary = ordinary_identity(config);
    let proxy = match (config.ignored_uid, config.ignored_gid) {
        (Some(uid), _) => Some(Identity {
            uid,
            gid: ordinary.gid,
        }),
        (None, Some(gid)) => Some(Identity {
            uid: ordinary.uid,
            gid,
        }),
        (None, None) => None,
    };
    let mut probes = Vec::new();
    for transport in [DnsTransport::Udp, DnsTransport::Tcp] {
        // The zone rules match UDP only: the app's queries go to APP_ZONE, the proxy's
        // to UPSTREAM_ZONE (ruleset::zones).
        let zone = |app| match (transport, app) {
            (DnsTransport::Tcp, _) => 0,
            (DnsTransport::Udp, true) => zones::APP_ZONE,
            (DnsTransport::Udp, false) => zones::UPSTREAM_ZONE,
        };
        probes.push(DnsProbe {
            family,
            transport,
            destination: SocketAddr::new(resolver, DNS_PORT),
            identity: ordinary,
            redirected_to: Some(dns.proxy_port),
            zone: zone(true),
        });
        if let Some(proxy) = proxy {
            probes.push(DnsProbe {
                family,
                transport,
                destination: SocketAddr::new(resolver, DNS_PORT),
                identity: proxy,
                redirected_to: None,
                zone: zone(false),
            });
        }
    }
    probes
}

/// A TEST-NET address of `family` outside the include list, when there is one: a
/// connection there must not be redirected.
pub fn not_included_destination(config: &ProxyConfig, family: Family) -> Option<IpAddr> {
    let list = config.mesh.egress_included.as_ref()?;
    let all: Vec<IpAddr> = match family {
        Family::Ipv4 => TEST_NET_V4.iter().map(|a| IpAddr::V4(*a)).collect(),
        Family::Ipv6 => TEST_NET_V6.iter().map(|a| IpAddr::V6(*a)).collect(),
    };
    all.into_iter().find(|a| !list.contains(*a))
}

/// A sample of the egress-ignored ports: 22 first, then the configured ports (a range's
/// first and last), at most [`MAX_IGNORED_PORT_PROBES`] spread evenly over the list (its
/// first and last included); and how many there were in all.
pub fn sampled_ignored_ports(config: &ProxyConfig) -> (Vec<u16>, usize) {
    let configured = config
        .egress_ignored_ports
        .ranges()
        .iter()
        .flat_map(|range| [range.first, range.last]);
    let all = distinct(std::iter::once(ALWAYS_IGNORED_PORT).chain(configured));
    let total = all.len();
    (spread(all, 1, MAX_IGNORED_PORT_PROBES), total)
}

/// `items` without repeats, in their first order (linear: lists run to 10,000s).
fn distinct<T: Copy + Eq + std::hash::Hash>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(*item))
        .collect()
}

/// At most `max` of `items`: the first `keep` always, then the rest spread evenly, first and
/// last included, so a set missing its tail is caught as well as one missing its head.
fn spread<T: Copy>(items: Vec<T>, keep: usize, max: usize) -> Vec<T> {
    if items.len() <= max {
        return items;
    }
    let keep = keep.min(max);
    let (head, rest) = items.split_at(keep);
    let slots = max - keep;
    let mut sample = head.to_vec();
    match slots {
        0 => {}
        1 => sample.extend(rest.first()),
        _ => sample.extend((0..slots).filter_map(|i| rest.get(i * (rest.len() - 1) / (slots - 1)))),
    }
    sample
}

/// A sample of the egress-ignored destinations of `family`: the always-ignored metadata
/// endpoints first, then one address in each configured network, at most
/// [`MAX_IGNORED_DESTINATION_PROBES`] spread evenly over the list (first and last
/// included); and how many networks there were in all.
pub fn sampled_ignored_destinations(config: &ProxyConfig, family: Family) -> (Vec<IpAddr>, usize) {
    let always: Vec<IpAddr> = ALWAYS_IGNORED_IPS
        .iter()
        .filter_map(|text| text.parse::<IpAddr>().ok())
        .filter(|addr| addr.is_ipv4() == (family == Family::Ipv4))
        .filter(|addr| config.egress_ignored_destinations.contains(*addr))
        .collect();
    let configured: Vec<IpAddr> = match family {
        Family::Ipv4 => config
            .egress_ignored_destinations
            .ipv4
            .iter()
            .map(|n| sample_address(IpNet::V4(*n)))
            .collect(),
        Family::Ipv6 => config
            .egress_ignored_destinations
            .ipv6
            .iter()
            .map(|n| sample_address(IpNet::V6(*n)))
            .collect(),
    };
    // Outside an include list is as direct as an ignored destination; kept with the
    // always-ignored ones.
    let outside = not_included_destination(config, family);
    let always_count = always.len() + usize::from(outside.is_some());
    let all = distinct(always.into_iter().chain(outside).chain(configured));
    let total = all.len();
    (
        spread(all, always_count, MAX_IGNORED_DESTINATION_PROBES),
        total,
    )
}

/// The first host of a network (the address itself for a /32, /31, /128 or /127), so a
/// probe goes to a plausible host rather than a network address.
fn sample_address(net: IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) if n.prefix_len() < 31 => {
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).saturating_add(1)))
        }
        IpNet::V6(n) if n.prefix_len() < 127 => {
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).saturating_add(1)))
        }
        other => other.network(),
    }
}

/// One entry of the plan: a connection to make, or a verdict known without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    Probe(Probe),
    Decided(CheckResult),
}

/// The checks of one family that go to `test_destination:port` (the redirect, then the
/// user, group and port exclusions), in report order. An exclusion the configuration does
/// not have is listed as not applicable.
pub fn checks_at_test_destination(
    config: &ProxyConfig,
    family: Family,
    test_destination: IpAddr,
    port: u16,
) -> Vec<Planned> {
    let ordinary = ordinary_identity(config);
    let probe = |kind, port, identity, expectation| {
        Planned::Probe(Probe {
            kind,
            family,
            destination: SocketAddr::new(test_destination, port),
            identity,
            expectation,
        })
    };
    let not_configured = |kind, property: &str| {
        Planned::Decided(CheckResult {
            check: kind,
            family,
            evidence: Evidence::None,
            status: Status::NotApplicable,
            destination: None,
            identity: None,
            observed: None,
            reason: format!("no {property} configured, so nothing is exempted by it"),
        })
    };
    let mut planned = vec![probe(
        CheckKind::EgressRedirect,
        port,
        ordinary,
        Expectation::RedirectedToEgress,
    )];
    planned.push(match config.ignored_uid {
        Some(uid) => probe(
            CheckKind::IgnoredUid,
            port,
            Identity {
                uid,
                gid: ordinary.gid,
            },
            Expectation::NotRedirected,
        ),
        None => not_configured(
            CheckKind::IgnoredUid,
            Vocabulary::Ecs.name(Property::IgnoredUid),
        ),
    });
    planned.push(match config.ignored_gid {
        Some(gid) => probe(
            CheckKind::IgnoredGid,
            port,
            Identity {
                uid: ordinary.uid,
                gid,
            },
            Expectation::NotRedirected,
        ),
        None => not_configured(
            CheckKind::IgnoredGid,
            Vocabulary::Ecs.name(Property::IgnoredGid),
        ),
    });
    for ignored in sampled_ignored_ports(config).0 {
        planned.push(probe(
            CheckKind::IgnoredPort,
            ignored,
            ordinary,
            Expectation::NotRedirected,
        ));
    }
    planned
}

/// The probes of one family that go to egress-ignored destinations.
pub fn probes_to_ignored_destinations(
    config: &ProxyConfig,
    family: Family,
    port: u16,
) -> Vec<Probe> {
    let ordinary = ordinary_identity(config);
    sampled_ignored_destinations(config, family)
        .0
        .into_iter()
        .map(|addr| Probe {
            kind: CheckKind::IgnoredDestination,
            family,
            destination: SocketAddr::new(addr, port),
            identity: ordinary,
            expectation: Expectation::NotRedirected,
        })
        .collect()
}

/// The loopback self-test: verify's egress listener answers, unredirected, as `identity`.
pub fn listener_probe(config: &ProxyConfig, family: Family) -> Probe {
    let loopback: IpAddr = match family {
        Family::Ipv4 => Ipv4Addr::LOCALHOST.into(),
        Family::Ipv6 => Ipv6Addr::LOCALHOST.into(),
    };
    Probe {
        kind: CheckKind::Listener,
        family,
        destination: SocketAddr::new(loopback, config.proxy_egress_port),
        identity: ordinary_identity(config),
        expectation: Expectation::AnswersDirectly,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PortList, PortRange};
    use crate::verify::test_fixture::config;

    #[test]
    fn the_ordinary_user_is_neither_the_ignored_uid_nor_in_the_ignored_gid() {
        let identity = ordinary_identity(&config());
        assert_eq!(
            identity,
            Identity {
                uid: 1000,
                gid: 1001
            }
        );
    }

    #[test]
    fn the_ordinary_port_skips_ignored_and_proxy_ports() {
        let mut c = config();
        assert_eq!(ordinary_port(&c), Some(80));
        c.egress_ignored_ports = PortList::from_ranges([PortRange {
            first: 1,
            last: 15000,
        }]);
        assert_eq!(ordinary_port(&c), Some(15002));
        c.egress_ignored_ports = PortList::from_ranges([PortRange {
            first: 1,
            last: 65535,
        }]);
        assert_eq!(ordinary_port(&c), None);
    }

    #[test]
    fn ignored_ports_are_sampled_with_22_first_and_range_ends() {
        let (ports, total) = sampled_ignored_ports(&config());
        assert_eq!(ports, vec![22, 5432, 8000, 8010]);
        assert_eq!(total, 4);
        let mut c = config();
        c.egress_ignored_ports = PortList::from_ranges((2000..2040).map(PortRange::single));
        let (ports, total) = sampled_ignored_ports(&c);
        assert_eq!(ports.len(), MAX_IGNORED_PORT_PROBES);
        assert_eq!(ports[0], 22);
        assert_eq!(total, 41);
    }

    #[test]
    fn long_lists_are_sampled_evenly_with_their_first_and_last() {
        let sample = spread((0..100).collect(), 1, 6);
        assert_eq!(sample, vec![0, 1, 25, 50, 74, 99]);
        let mut c = config();
        c.egress_ignored_ports = PortList::from_ranges((2000..2040).map(PortRange::single));
        let (ports, _) = sampled_ignored_ports(&c);
        assert_eq!(ports.first(), Some(&22));
        assert_eq!(ports.last(), Some(&2039));
    }

    #[test]
    fn ignored_destinations_start_with_the_metadata_endpoints() {
        let (v4, total) = sampled_ignored_destinations(&config(), Family::Ipv4);
        let v4: Vec<String> = v4.iter().map(ToString::to_string).collect();
        assert_eq!(
            v4,
            [
                "169.254.170.2",
                "169.254.169.254",
                "169.254.170.23",
                "10.9.0.1",
                "203.0.113.9"
            ]
        );
        assert_eq!(total, 5);
        let (v6, _) = sampled_ignored_destinations(&config(), Family::Ipv6);
        let v6: Vec<String> = v6.iter().map(ToString::to_string).collect();
        assert_eq!(v6, ["fd00:ec2::23", "fd00:ec2::254"]);
    }

    #[test]
    fn test_destinations_avoid_ignored_networks() {
        let mut c = config();
        assert_eq!(
            test_destination_candidates(&c, Family::Ipv4)[0].to_string(),
            "192.0.2.1"
        );
        c.egress_ignored_destinations
            .push("192.0.2.0/24".parse().unwrap());
        assert_eq!(
            test_destination_candidates(&c, Family::Ipv4)[0].to_string(),
            "198.51.100.1"
        );
        c.egress_ignored_destinations
            .push("0.0.0.0/0".parse().unwrap());
        assert!(test_destination_candidates(&c, Family::Ipv4).is_empty());
        assert_eq!(
            test_destination_candidates(&c, Family::Ipv6)[0].to_string(),
            "2001:db8::1"
        );
    }

    #[test]
    fn an_unconfigured_exclusion_is_listed_as_not_applicable_in_place() {
        let mut c = config();
        c.ignored_gid = None;
        let planned =
            checks_at_test_destination(&c, Family::Ipv4, "192.0.2.1".parse().unwrap(), 80);
        let Planned::Decided(gid) = &planned[2] else {
            panic!("expected the IgnoredGID entry third: {planned:?}");
        };
        assert_eq!(
            (gid.check, gid.status),
            (CheckKind::IgnoredGid, Status::NotApplicable)
        );
    }

    #[test]
    fn probes_cover_the_user_group_and_port_exclusions() {
        let planned =
            checks_at_test_destination(&config(), Family::Ipv4, "192.0.2.1".parse().unwrap(), 80);
        let probes: Vec<Probe> = planned
            .iter()
            .filter_map(|p| match p {
                Planned::Probe(probe) => Some(*probe),
                Planned::Decided(_) => None,
            })
            .collect();
        assert_eq!(probes.len(), planned.len());
        let kinds: Vec<&str> = probes.iter().map(|p| p.kind.name()).collect();
        assert_eq!(
            kinds,
            [
                "egress-redirect",
                "ignored-uid",
                "ignored-gid",
                "ignored-port",
                "ignored-port",
                "ignored-port",
                "ignored-port"
            ]
        );
        assert_eq!(
            probes[1].identity,
            Identity {
                uid: 1337,
                gid: 1001
            }
        );
        assert_eq!(
            probes[2].identity,
            Identity {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(probes[3].destination.to_string(), "192.0.2.1:22");
    }
}
