//! What verify probes and what each observation means. Pure: choosing destinations, users
//! and samples, and judging observations, do no I/O and are tested without root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::probe::{ListenerRole, Observation};
use super::report::{CheckResult, Evidence, Status};
use super::scope::Inspected;
use crate::config::{ALWAYS_IGNORED_IPS, ALWAYS_IGNORED_PORT, ProxyConfig};
use crate::ruleset::{EGRESS_CHAIN, Family, INGRESS_CHAIN};

/// At most this many ignored ports are probed per family (22 first, then the configured
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
/// Ports tried, in order, for a connection that the rules should redirect.
const ORDINARY_PORT_CANDIDATES: [u16; 5] = [80, 443, 8080, 8443, 9000];
/// Where the search for an ordinary (not ignored) user or group starts: a typical
/// application user, never root, never the proxy's.
const ORDINARY_ID_START: u32 = 1000;

/// What a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// Whether a family is checked at all.
    Family,
    /// Verify's own listener answers over loopback (the precondition of every probe).
    Listener,
    /// An ordinary user's connection reaches ProxyEgressPort with its destination intact.
    EgressRedirect,
    /// The proxy's user is not redirected.
    IgnoredUid,
    /// The proxy's group is not redirected.
    IgnoredGid,
    /// Egress-ignored ports are not redirected.
    IgnoredPort,
    /// Egress-ignored destinations are not redirected.
    IgnoredDestination,
    /// The ingress rules are installed as rendered (rule inspection, not traffic).
    IngressRules,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Family => "family",
            CheckKind::Listener => "listener",
            CheckKind::EgressRedirect => "egress-redirect",
            CheckKind::IgnoredUid => "ignored-uid",
            CheckKind::IgnoredGid => "ignored-gid",
            CheckKind::IgnoredPort => "ignored-port",
            CheckKind::IgnoredDestination => "ignored-destination",
            CheckKind::IngressRules => "ingress-rules",
        }
    }
}

/// The user and group a probe connects as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
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
    fn attempt(&self) -> String {
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
    all.into_iter()
        .filter(|a| !config.egress_ignored_destinations.contains(*a))
        .collect()
}

/// A sample of the egress-ignored ports: 22 first, then the configured ports (a range's
/// first and last), at most [`MAX_IGNORED_PORT_PROBES`]; and how many there were in all.
pub fn sampled_ignored_ports(config: &ProxyConfig) -> (Vec<u16>, usize) {
    let mut all = vec![ALWAYS_IGNORED_PORT];
    for range in config.egress_ignored_ports.ranges() {
        for port in [range.first, range.last] {
            if !all.contains(&port) {
                all.push(port);
            }
        }
    }
    let total = all.len();
    all.truncate(MAX_IGNORED_PORT_PROBES);
    (all, total)
}

/// A sample of the egress-ignored destinations of `family`: the always-ignored metadata
/// endpoints first, then one address in each configured network, at most
/// [`MAX_IGNORED_DESTINATION_PROBES`]; and how many networks there were in all.
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
    let mut all: Vec<IpAddr> = Vec::new();
    for addr in always.into_iter().chain(configured) {
        if !all.contains(&addr) {
            all.push(addr);
        }
    }
    let total = all.len();
    all.truncate(MAX_IGNORED_DESTINATION_PROBES);
    (all, total)
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
        None => not_configured(CheckKind::IgnoredUid, "IgnoredUID"),
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
        None => not_configured(CheckKind::IgnoredGid, "IgnoredGID"),
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

/// What judging needs besides the probe and what it observed.
#[derive(Debug, Clone, Copy)]
pub struct Judging<'a> {
    pub proxy_egress_port: u16,
    pub proxy_ingress_port: Option<u16>,
    /// How long each probe had.
    pub window: Duration,
    /// What the installed rules say, appended to a failure to point at the cause.
    pub rules_hint: Option<&'a str>,
}

/// A check result for `probe` that could not be decided by a connection.
pub fn unprobed(probe: &Probe, status: Status, reason: String) -> CheckResult {
    CheckResult {
        check: probe.kind,
        family: probe.family,
        evidence: Evidence::Connection,
        status,
        destination: Some(probe.destination),
        identity: Some(probe.identity),
        observed: None,
        reason,
    }
}

/// Turns what a probe observed into a verdict and a reason that says what happened and,
/// for a failure, what it means.
pub fn judge(probe: &Probe, observation: &Observation, judging: &Judging) -> CheckResult {
    let (status, reason) = verdict(probe, observation, judging);
    let reason = match (status, judging.rules_hint) {
        (Status::Fail, Some(hint)) => format!("{reason}; {hint}"),
        _ => reason,
    };
    CheckResult {
        observed: Some(observation.tag().to_owned()),
        ..unprobed(probe, status, reason)
    }
}

fn verdict(probe: &Probe, observation: &Observation, judging: &Judging) -> (Status, String) {
    let egress_port = judging.proxy_egress_port;
    let attempt = probe.attempt();
    if let Observation::NotRun(why) = observation {
        return (
            Status::CouldNotRun,
            format!("{attempt} could not be made: {why}"),
        );
    }
    match probe.expectation {
        Expectation::AnswersDirectly => match observation {
            Observation::ReachedListener {
                role: ListenerRole::Egress,
                ..
            } => (
                Status::Pass,
                format!(
                    "verify's stand-in for the proxy on ProxyEgressPort {egress_port} answers at {}",
                    probe.destination
                ),
            ),
            other => (
                Status::CouldNotRun,
                format!(
                    "verify's own listener did not answer at {} ({}): loopback is down or \
                     unusable in this namespace, and REDIRECT delivers to loopback, so no \
                     connection of this family can be checked; bring `lo` up (CNI: the \
                     loopback plugin) and verify again",
                    probe.destination,
                    describe(other, judging, false)
                ),
            ),
        },
        Expectation::RedirectedToEgress => match observation {
            Observation::ReachedListener {
                role: ListenerRole::Egress,
                original_dst,
            } => match original_dst {
                Some(original) if *original == probe.destination => (
                    Status::Pass,
                    format!(
                        "{attempt} was redirected to ProxyEgressPort {egress_port} with its \
                         original destination intact (SO_ORIGINAL_DST {original})"
                    ),
                ),
                Some(original) => (
                    Status::Fail,
                    format!(
                        "{attempt} reached ProxyEgressPort {egress_port}, but SO_ORIGINAL_DST \
                         says {original}: the proxy would forward it to the wrong place"
                    ),
                ),
                None => (
                    Status::Fail,
                    format!(
                        "{attempt} reached ProxyEgressPort {egress_port}, but SO_ORIGINAL_DST \
                         has no record of where it was going: the proxy could not forward it"
                    ),
                ),
            },
            Observation::ReachedListener {
                role: ListenerRole::Ingress,
                ..
            } => (
                Status::Fail,
                format!(
                    "{attempt} landed on ProxyIngressPort {} instead of ProxyEgressPort \
                     {egress_port}: the egress REDIRECT points at the wrong port",
                    judging.proxy_ingress_port.unwrap_or_default()
                ),
            ),
            other => (
                Status::Fail,
                format!(
                    "{attempt} was not redirected to ProxyEgressPort {egress_port}: {}",
                    describe(other, judging, true)
                ),
            ),
        },
        Expectation::NotRedirected => match observation {
            Observation::ReachedListener { role, .. } => {
                let port = match role {
                    ListenerRole::Egress => format!("ProxyEgressPort {egress_port}"),
                    ListenerRole::Ingress => {
                        format!(
                            "ProxyIngressPort {}",
                            judging.proxy_ingress_port.unwrap_or_default()
                        )
                    }
                };
                (
                    Status::Fail,
                    format!("{attempt} was redirected to {port}: {}", consequence(probe)),
                )
            }
            other => (
                Status::Pass,
                format!(
                    "{attempt} was not redirected: {}",
                    describe(other, judging, true)
                ),
            ),
        },
    }
}

/// Why a connection that should not have been redirected matters.
fn consequence(probe: &Probe) -> String {
    match probe.kind {
        CheckKind::IgnoredUid => format!(
            "the IgnoredUID rule is missing or does not match uid {} — the proxy's own \
             connections would be sent back into it, and traffic would loop",
            probe.identity.uid
        ),
        CheckKind::IgnoredGid => format!(
            "the IgnoredGID rule is missing or does not match gid {} — the proxy's own \
             connections would be sent back into it, and traffic would loop",
            probe.identity.gid
        ),
        CheckKind::IgnoredPort => format!(
            "port {} is egress-ignored but its traffic goes to the proxy",
            probe.destination.port()
        ),
        CheckKind::IgnoredDestination => format!(
            "{} is egress-ignored but its traffic goes to the proxy (metadata and credential \
             endpoints must be reached directly)",
            probe.destination.ip()
        ),
        _ => "it should have been left alone".to_owned(),
    }
}

/// What a connection that did not reach verify's listener did instead.
fn describe(observation: &Observation, judging: &Judging, probe_context: bool) -> String {
    match observation {
        Observation::ReachedListener { role, .. } => {
            format!("it reached verify's {role:?} listener")
        }
        Observation::OtherServer { reply } if reply.is_empty() => {
            "it connected to a server that is not verify's listener (a direct connection)"
                .to_owned()
        }
        Observation::OtherServer { reply } => format!(
            "it connected to a server that is not verify's listener (a direct connection; it \
             answered {:?})",
            reply.chars().take(40).collect::<String>()
        ),
        Observation::Refused => {
            "the connection was refused (nothing listens where it went)".to_owned()
        }
        Observation::Unreachable(e) => {
            format!("it left the namespace and came back unreachable ({e})")
        }
        Observation::NoAnswer => format!(
            "no answer within {}{}",
            humantime::format_duration(judging.window),
            if probe_context {
                " (a redirected connection reaches verify's listener at once)"
            } else {
                ""
            }
        ),
        Observation::ConnectError(e) => format!("connect failed: {e}"),
        Observation::NotRun(e) => format!("not made: {e}"),
    }
}

/// What the installed egress rules of a family say, to explain a failed probe: absent,
/// not jumped into, different from the configuration, or as configured (then something
/// else intercepts the traffic).
pub fn egress_rules_hint(family: Family, inspected: &Inspected) -> String {
    let installed = &inspected.table;
    let foreign_redirects: Vec<String> = installed
        .rules
        .iter()
        .filter(|r| !crate::ruleset::is_own_chain(&r.chain) && r.redirects())
        .take(2)
        .map(|r| format!("-A {} {}", r.chain, r.text))
        .collect();
    let foreign = if foreign_redirects.is_empty() {
        String::new()
    } else {
        format!(
            "; other rules redirect: `{}`",
            foreign_redirects.join("`, `")
        )
    };
    if !installed.chains.iter().any(|c| c == EGRESS_CHAIN) {
        return format!(
            "the {family} nat table holds no {EGRESS_CHAIN} chain: meshinit's egress rules are \
             not installed in this namespace{foreign}"
        );
    }
    if !installed
        .jumps_into_own_chains()
        .any(|j| j.own_target() == Some(EGRESS_CHAIN))
    {
        return format!("{EGRESS_CHAIN} exists but no built-in chain jumps into it{foreign}");
    }
    let drift = &inspected.egress_drift;
    let mentions_egress = |line: &String| line.contains(EGRESS_CHAIN);
    let missing: Vec<&String> = drift
        .missing
        .iter()
        .filter(|l| mentions_egress(l))
        .take(3)
        .collect();
    let unexpected: Vec<&String> = drift
        .unexpected
        .iter()
        .filter(|l| mentions_egress(l))
        .take(3)
        .collect();
    if missing.is_empty()
        && unexpected.is_empty()
        && !drift.misordered_chains.iter().any(|c| c == EGRESS_CHAIN)
    {
        return format!(
            "the {EGRESS_CHAIN} rules read back as configured, so something else handles this \
             traffic first: another rule ahead of the jump, or rules in the other iptables \
             backend{foreign}"
        );
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing `{}`", join(&missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected `{}`", join(&unexpected)));
    }
    if parts.is_empty() {
        parts.push(format!("{EGRESS_CHAIN} holds its rules in the wrong order"));
    }
    format!(
        "the installed {family} egress rules differ from the configuration: {}{foreign}",
        parts.join("; ")
    )
}

fn join(lines: &[&String]) -> String {
    lines
        .iter()
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join("`, `")
}

/// The ingress check, by rule inspection: from inside the namespace a connection is
/// locally generated and never traverses PREROUTING (and the rendered jump excludes local
/// sources), so ingress redirection cannot be proven with traffic here.
pub fn inspect_ingress(
    config: &ProxyConfig,
    family: Family,
    installed: Result<&Inspected, &str>,
) -> CheckResult {
    let result = |status, reason: String| CheckResult {
        check: CheckKind::IngressRules,
        family,
        evidence: Evidence::Rules,
        status,
        destination: None,
        identity: None,
        observed: None,
        reason,
    };
    const UNPROVABLE: &str = "connections made from inside the namespace do not traverse \
                              PREROUTING, so only the rules can be checked here; prove ingress \
                              with a connection from another host or namespace";
    let Some(ingress) = &config.ingress else {
        return result(
            Status::NotApplicable,
            "no ProxyIngressPort/AppPorts configured: egress only".to_owned(),
        );
    };
    let installed = match installed {
        Ok(installed) => installed,
        Err(why) => {
            return result(
                Status::CouldNotRun,
                format!("the {family} nat table could not be read ({why}), and {UNPROVABLE}"),
            );
        }
    };
    let ports: Vec<String> = ingress
        .app_ports
        .ranges()
        .iter()
        .map(ToString::to_string)
        .collect();
    let ports = ports.join(",");
    let has_chain = installed.table.chains.iter().any(|c| c == INGRESS_CHAIN);
    let has_jump = installed
        .table
        .jumps_into_own_chains()
        .any(|j| j.own_target() == Some(INGRESS_CHAIN));
    if !has_chain && !has_jump {
        return result(
            Status::Fail,
            format!(
                "the {family} nat table holds no {INGRESS_CHAIN} chain and nothing \
                 jumps to one: inbound connections to AppPorts {ports} would reach the application \
                 directly instead of ProxyIngressPort {}",
                ingress.proxy_port
            ),
        );
    }
    let drift = &installed.ingress_drift;
    let mentions_ingress = |line: &&String| line.contains(INGRESS_CHAIN);
    let missing: Vec<&String> = drift.missing.iter().filter(mentions_ingress).collect();
    let unexpected: Vec<&String> = drift.unexpected.iter().filter(mentions_ingress).collect();
    let misordered = drift.misordered_chains.iter().any(|c| c == INGRESS_CHAIN);
    if missing.is_empty() && unexpected.is_empty() && !misordered {
        return result(
            Status::Pass,
            format!(
                "{INGRESS_CHAIN} redirects AppPorts {ports} to ProxyIngressPort {} \
                 and PREROUTING jumps into it for non-local sources, as rendered; {UNPROVABLE}",
                ingress.proxy_port
            ),
        );
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing `{}`", join(&missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected `{}`", join(&unexpected)));
    }
    if misordered {
        parts.push(format!(
            "{INGRESS_CHAIN} holds its rules in the wrong order"
        ));
    }
    result(
        Status::Fail,
        format!(
            "the {family} ingress rules differ from the configuration, so inbound \
             connections to the AppPorts would not reach ProxyIngressPort {} as configured: {}",
            ingress.proxy_port,
            parts.join("; ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::backend::iptables::IptablesBackend;
    use crate::backend::iptables::parse::installed_table;
    use crate::backend::iptables::render::render_restore;
    use crate::config::{IgnoredDestinations, IngressConfig, Ipv6Mode, PortList, PortRange};
    use crate::ruleset::{PlanOptions, plan};
    use crate::verify::scope::inspect;

    fn config() -> ProxyConfig {
        let mut destinations = IgnoredDestinations::default();
        for text in ["10.9.0.0/16", "203.0.113.9"]
            .into_iter()
            .chain(ALWAYS_IGNORED_IPS)
        {
            destinations.push(
                crate::config::addresses::parse_ignored_ip("P", text, text)
                    .unwrap()
                    .net,
            );
        }
        ProxyConfig {
            ignored_uid: Some(1337),
            ignored_gid: Some(1000),
            proxy_egress_port: 15001,
            ingress: Some(IngressConfig {
                proxy_port: 15000,
                app_ports: PortList::from_ranges([PortRange::single(9080)]),
            }),
            egress_ignored_ports: PortList::from_ranges([
                PortRange::single(5432),
                PortRange {
                    first: 8000,
                    last: 8010,
                },
                PortRange::single(22),
            ]),
            egress_ignored_destinations: destinations,
            ipv6: Ipv6Mode::Auto,
        }
    }

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

    fn judging() -> Judging<'static> {
        Judging {
            proxy_egress_port: 15001,
            proxy_ingress_port: Some(15000),
            window: Duration::from_millis(500),
            rules_hint: Some("HINT"),
        }
    }

    fn probe(kind: CheckKind, expectation: Expectation) -> Probe {
        Probe {
            kind,
            family: Family::Ipv4,
            destination: "192.0.2.1:80".parse().unwrap(),
            identity: Identity {
                uid: 1337,
                gid: 1001,
            },
            expectation,
        }
    }

    #[test]
    fn a_redirect_passes_only_with_the_original_destination_intact() {
        let p = probe(CheckKind::EgressRedirect, Expectation::RedirectedToEgress);
        let reached = |original: Option<&str>| Observation::ReachedListener {
            role: ListenerRole::Egress,
            original_dst: original.map(|o| o.parse().unwrap()),
        };
        assert_eq!(
            judge(&p, &reached(Some("192.0.2.1:80")), &judging()).status,
            Status::Pass
        );
        let wrong = judge(&p, &reached(Some("192.0.2.1:81")), &judging());
        assert_eq!(wrong.status, Status::Fail);
        assert!(
            wrong.reason.contains("SO_ORIGINAL_DST says 192.0.2.1:81"),
            "{}",
            wrong.reason
        );
        assert_eq!(judge(&p, &reached(None), &judging()).status, Status::Fail);
        let ingress = Observation::ReachedListener {
            role: ListenerRole::Ingress,
            original_dst: None,
        };
        let misdirected = judge(&p, &ingress, &judging());
        assert!(
            misdirected
                .reason
                .contains("ProxyIngressPort 15000 instead of ProxyEgressPort 15001")
        );
        let missed = judge(&p, &Observation::NoAnswer, &judging());
        assert_eq!(missed.status, Status::Fail);
        assert!(
            missed.reason.starts_with("egress as uid 1337 gid 1001 to 192.0.2.1:80 was not redirected to ProxyEgressPort 15001: no answer within 500ms"),
            "{}",
            missed.reason
        );
        assert!(
            missed.reason.ends_with("at once); HINT"),
            "{}",
            missed.reason
        );
    }

    #[test]
    fn a_redirected_proxy_user_is_reported_as_a_loop() {
        let p = probe(CheckKind::IgnoredUid, Expectation::NotRedirected);
        let reached = Observation::ReachedListener {
            role: ListenerRole::Egress,
            original_dst: Some("192.0.2.1:80".parse().unwrap()),
        };
        let result = judge(&p, &reached, &judging());
        assert_eq!(result.status, Status::Fail);
        assert!(
            result
                .reason
                .contains("IgnoredUID rule is missing or does not match uid 1337")
        );
        assert!(result.reason.contains("loop"));
        for direct in [
            Observation::NoAnswer,
            Observation::Refused,
            Observation::OtherServer {
                reply: String::new(),
            },
        ] {
            let result = judge(&p, &direct, &judging());
            assert_eq!(result.status, Status::Pass, "{direct:?}");
            assert!(!result.reason.contains("HINT"));
        }
    }

    #[test]
    fn a_probe_that_could_not_be_made_is_not_a_pass() {
        for expectation in [Expectation::NotRedirected, Expectation::RedirectedToEgress] {
            let p = probe(CheckKind::IgnoredUid, expectation);
            let result = judge(
                &p,
                &Observation::NotRun("cannot switch to uid 1337: EPERM".into()),
                &judging(),
            );
            assert_eq!(result.status, Status::CouldNotRun);
        }
        let listener = judge(
            &probe(CheckKind::Listener, Expectation::AnswersDirectly),
            &Observation::Unreachable("Network is unreachable".into()),
            &judging(),
        );
        assert_eq!(listener.status, Status::CouldNotRun);
        assert!(listener.reason.contains("loopback is down"));
    }

    /// What verify makes of an `iptables-save` text, for configuration `c`.
    fn inspected(c: &ProxyConfig, saved: &str) -> Inspected {
        let backend = IptablesBackend::new(BackendKind::IptablesNft);
        inspect(&backend, c, Family::Ipv4, installed_table(saved))
    }

    fn rendered(c: &ProxyConfig) -> String {
        render_restore(&plan(c, Family::Ipv4, PlanOptions::default()))
    }

    #[test]
    fn hints_say_whether_the_egress_rules_are_installed_and_as_configured() {
        let c = config();
        let none = inspected(&c, "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        assert!(egress_rules_hint(Family::Ipv4, &none).contains("holds no APPMESH_EGRESS chain"));
        let full = rendered(&c);
        let installed = inspected(&c, &full);
        assert!(egress_rules_hint(Family::Ipv4, &installed).contains("read back as configured"));
        let without_uid: String = full
            .lines()
            .filter(|l| !l.contains("--uid-owner"))
            .map(|l| format!("{l}\n"))
            .collect();
        let hint = egress_rules_hint(Family::Ipv4, &inspected(&c, &without_uid));
        assert!(
            hint.contains("missing `-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN`"),
            "{hint}"
        );
    }

    #[test]
    fn ingress_is_checked_by_rule_inspection_and_says_so() {
        let c = config();
        let full = rendered(&c);
        let pass = inspect_ingress(&c, Family::Ipv4, Ok(&inspected(&c, &full)));
        assert_eq!(
            (pass.status, pass.evidence),
            (Status::Pass, Evidence::Rules)
        );
        assert!(pass.reason.contains("do not traverse PREROUTING"));
        let no_jump: String = full
            .lines()
            .filter(|l| !l.starts_with("-A PREROUTING"))
            .map(|l| format!("{l}\n"))
            .collect();
        let fail = inspect_ingress(&c, Family::Ipv4, Ok(&inspected(&c, &no_jump)));
        assert_eq!(fail.status, Status::Fail);
        assert!(
            fail.reason.contains("missing `-A PREROUTING"),
            "{}",
            fail.reason
        );
        let unread = inspect_ingress(&c, Family::Ipv4, Err("iptables-nft-save is not installed"));
        assert_eq!(unread.status, Status::CouldNotRun);
        let mut egress_only = c.clone();
        egress_only.ingress = None;
        assert_eq!(
            inspect_ingress(&egress_only, Family::Ipv4, Err("x")).status,
            Status::NotApplicable
        );
    }
}
