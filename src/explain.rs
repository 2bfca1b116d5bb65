//! Why a connection goes where it goes: one connection walked through the planned
//! [`Ruleset`] (the one every backend renders), the rule that decides it, and the reason in
//! the user's terms: the property, the entry that matched and the source it came from.
//!
//! Pure: answered from the plan, no kernel and no privileges. The walk follows the rules'
//! own matches, so it cannot decide differently from what the backends install; the
//! wording is then looked up in the settings the user wrote.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Serialize;

use crate::config::addresses::parse_ignored_ip;
use crate::config::ports::parse_port_range;
use crate::config::settings::{Property, RawSettings, Setting, Vocabulary};
use crate::config::{ALWAYS_IGNORED_PORT, Ipv6Mode, ProxyConfig};
use crate::ruleset::{
    EGRESS_CHAIN, Family, INGRESS_CHAIN, IpSet, Match, OUTPUT_CHAIN, PREROUTING_CHAIN, Rule,
    Ruleset, SetMembers, Verdict,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A connection from elsewhere to a port of this namespace.
    In,
    /// A connection a process of this namespace makes.
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// The connection asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub direction: Direction,
    pub protocol: Protocol,
    /// Outbound: where it goes. Inbound: the local address and port it arrives at (the
    /// address only gives the family).
    pub destination: SocketAddr,
    /// The connecting process's user and group (outbound); `None` when not given.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Outbound: the destination is one of this namespace's own addresses (loopback always
    /// is). Inbound: the connection comes from this namespace itself.
    pub local: bool,
    /// The interface it goes out through (outbound) or comes in through (inbound); `None`:
    /// not given, then no `IgnoredInterfaces` entry matches it (a local destination goes
    /// out through `lo`).
    pub interface: Option<String>,
}

impl Connection {
    /// The family whose rules see it: an IPv4-mapped IPv6 destination is IPv4 on the wire.
    pub fn family(&self) -> Family {
        match self.wire_ip() {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    fn wire_ip(&self) -> IpAddr {
        match self.destination.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        }
    }

    fn port(&self) -> u16 {
        self.destination.port()
    }

    /// The interface the connection passes: as given, or `lo` for a local destination.
    fn interface(&self) -> Option<&str> {
        match (&self.interface, self.direction) {
            (Some(name), _) => Some(name),
            (None, Direction::Out) if self.is_local_destination() => Some("lo"),
            (None, _) => None,
        }
    }

    fn is_local_destination(&self) -> bool {
        self.local || self.wire_ip().is_loopback()
    }

    /// "outbound TCP to 10.0.0.5:443 as uid 1000 gid 1000".
    pub fn describe(&self) -> String {
        let protocol = match self.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        let mut text = match self.direction {
            Direction::Out => format!("outbound {protocol} to {}", self.destination),
            Direction::In => format!("inbound {protocol} to local port {}", self.port()),
        };
        if self.direction == Direction::Out {
            let id = |kind: &str, id: Option<u32>| match id {
                Some(id) => format!(" {kind} {id}"),
                None => String::new(),
            };
            if self.uid.is_some() || self.gid.is_some() {
                let _ = write!(text, " as{}{}", id("uid", self.uid), id("gid", self.gid));
            }
            if self.local && !self.wire_ip().is_loopback() {
                text.push_str(" (a local address)");
            }
        } else if self.local {
            text.push_str(" from this namespace");
        }
        let _ = write!(text, " ({})", self.family());
        text
    }
}

/// What happens to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to the proxy's listener on this port of the namespace.
    Redirected { port: u16 },
    /// Goes where it was addressed.
    NotRedirected,
}

/// The rule that decides, as it appears in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecidingRule {
    pub chain: String,
    /// 1-based position in its chain (as `iptables -L --line-numbers` counts).
    pub position: usize,
    /// The rule in `iptables-save` form (what `meshinit render` prints); for the installed
    /// native table (`explain --live`), the rule as installed, in nft's words.
    pub rule: String,
    /// Whether the connection matched it (`false`: it was decided by the rule *not*
    /// matching, e.g. the jump into our chain, or by falling off the chain's end).
    pub matched: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub connection: String,
    pub direction: Direction,
    pub protocol: Protocol,
    pub family: Family,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// `None` when no rule of ours sees the connection at all (no chain for it).
    pub decided_by: Option<DecidingRule>,
    /// The outcome and why, in the user's terms, as one sentence.
    pub reason: String,
}

impl Explanation {
    pub fn redirected_to(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Redirected { port } => Some(port),
            Outcome::NotRedirected => None,
        }
    }

    /// The text form: the connection, the verdict with its reason, the deciding rule.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n", self.connection, self.reason);
        match &self.decided_by {
            Some(d) => {
                let how = if d.matched {
                    "matches"
                } else {
                    "does not match"
                };
                let _ = writeln!(
                    text,
                    "rule: {} ({how}; rule {} of {})",
                    d.rule, d.position, d.chain
                );
            }
            None => text.push_str("rule: none of ours sees this connection\n"),
        }
        text
    }
}

/// Where each property's value came from, for the "(from ...)" of a reason.
#[derive(Debug, Clone)]
pub struct Provenance<'a> {
    settings: &'a RawSettings,
    /// The configuration document, if one was read (its path, or "stdin").
    document: Option<String>,
}

impl<'a> Provenance<'a> {
    pub fn new(settings: &'a RawSettings, document: Option<String>) -> Self {
        Provenance { settings, document }
    }

    /// "APPMESH_EGRESS_IGNORED_IP", "--egress-ignored-ips", "EgressIgnoredIPs in task.json".
    /// (just the document when it spells the property as the App Mesh documentation does).
    fn source(&self, property: &str, canonical: &str) -> String {
        use crate::config::properties::{Source, find};
        let from_document =
            find(Source::Flag, property).is_none() && find(Source::Env, property).is_none();
        match (&self.document, from_document) {
            (Some(doc), true) if property == canonical => doc.clone(),
            (Some(doc), true) => format!("{property} in {doc}"),
            _ => property.to_owned(),
        }
    }

    fn scalar(&self, property: Property) -> Option<&'a Setting<String>> {
        self.settings.get(property)
    }

    fn list(&self, property: Property) -> Option<&'a Setting<String>> {
        self.settings
            .get(property)
            .filter(|_| property.spec().kind.is_list())
    }

    /// "(from APPMESH_IGNORE_UID)" for a property the user gave, "" otherwise.
    fn from(&self, property: Property) -> String {
        let given = self
            .scalar(property)
            .map(|s| &s.property)
            .or(self.list(property).map(|s| &s.property));
        match given {
            Some(name) => format!(" (from {})", self.source(name, canonical(property))),
            None => String::new(),
        }
    }

    /// The entry of a port list the user wrote that holds `port`, as written.
    fn port_entry(&self, property: Property, port: u16) -> Option<String> {
        let setting = self.list(property)?;
        setting.list().items().find_map(|item| {
            parse_port_range(&setting.property, "", item)
                .ok()
                .filter(|range| range.contains(port))
                .map(|_| item.to_owned())
        })
    }

    /// The entry of EgressIgnoredIPs the user wrote that holds `ip`, as written.
    fn network_entry(&self, ip: IpAddr) -> Option<String> {
        let setting = self.list(Property::EgressIgnoredIps)?;
        setting.list().items().find_map(|item| {
            parse_ignored_ip(&setting.property, "", item)
                .ok()
                .filter(|parsed| parsed.net.contains(&ip))
                .map(|_| item.to_owned())
        })
    }
}

/// The property's name in the App Mesh (ECS) documentation, which every source maps to.
fn canonical(property: Property) -> &'static str {
    match property {
        Property::Ipv6 => "IPv6",
        other => Vocabulary::Ecs.name(other),
    }
}

/// What the always-ignored destinations are.
fn built_in_destination(ip: IpAddr) -> Option<&'static str> {
    Some(match ip.to_string().as_str() {
        "169.254.170.2" => "the ECS task metadata and credentials endpoint",
        "169.254.169.254" => "the EC2 instance metadata service",
        "169.254.170.23" => "the EKS Pod Identity agent",
        "fd00:ec2::23" => "the EKS Pod Identity agent (IPv6)",
        "fd00:ec2::254" => "the EC2 instance metadata service (IPv6)",
        _ => return None,
    })
}

/// Explains `connection` under `config`, from `ruleset` (the plan of the connection's
/// family, `None` when that family gets no rules).
pub fn explain(
    config: &ProxyConfig,
    ruleset: Option<&Ruleset>,
    provenance: &Provenance<'_>,
    connection: &Connection,
) -> Explanation {
    let family = connection.family();
    let (outcome, decided_by, reason) = match ruleset.filter(|r| r.family == family) {
        None => (
            Outcome::NotRedirected,
            None,
            no_rules_reason(config, provenance, family),
        ),
        Some(ruleset) => Walk {
            config,
            ruleset,
            provenance,
            connection,
        }
        .run(),
    };
    Explanation {
        connection: connection.describe(),
        direction: connection.direction,
        protocol: connection.protocol,
        family,
        outcome,
        decided_by,
        reason,
    }
}

fn no_rules_reason(config: &ProxyConfig, provenance: &Provenance<'_>, family: Family) -> String {
    if family == Family::Ipv6 && config.ipv6 == Ipv6Mode::Off {
        format!(
            "not redirected: IPv6 is off{}, so no IPv6 rules are installed",
            provenance.from(Property::Ipv6)
        )
    } else {
        format!("not redirected: no {family} rules are planned")
    }
}

struct Walk<'a> {
    config: &'a ProxyConfig,
    ruleset: &'a Ruleset,
    provenance: &'a Provenance<'a>,
    connection: &'a Connection,
}

/// Whether one condition holds for the connection.
enum Fact {
    Holds,
    Fails,
}

impl Walk<'_> {
    fn run(&self) -> (Outcome, Option<DecidingRule>, String) {
        let hook = match self.connection.direction {
            Direction::Out => OUTPUT_CHAIN,
            Direction::In => PREROUTING_CHAIN,
        };
        let jumps: Vec<(usize, &Rule)> = self
            .ruleset
            .jumps
            .iter()
            .filter(|r| r.chain == hook)
            .enumerate()
            .collect();
        if jumps.is_empty() {
            let reason = match self.connection.direction {
                Direction::In => format!(
                    "not redirected: inbound redirection is off ({} and {} are not set)",
                    canonical(Property::ProxyIngressPort),
                    canonical(Property::AppPorts)
                ),
                Direction::Out => "not redirected: no outbound rules are planned".to_owned(),
            };
            return (Outcome::NotRedirected, None, reason);
        }
        let mut first_miss = None;
        for (index, jump) in &jumps {
            match self.first_failing(jump) {
                None => {
                    let Some(target) = jump.jump_target() else {
                        continue;
                    };
                    return self.walk_chain(target);
                }
                Some(failed) => {
                    first_miss.get_or_insert((*index, *jump, failed));
                }
            }
        }
        let (index, jump, failed) = first_miss.expect("at least one jump");
        let reason = format!("not redirected: {}", self.why_jump_misses(failed));
        (
            Outcome::NotRedirected,
            Some(deciding(jump, index, false)),
            reason,
        )
    }

    fn walk_chain(&self, chain: &str) -> (Outcome, Option<DecidingRule>, String) {
        let rules: Vec<&Rule> = self
            .ruleset
            .rules
            .iter()
            .filter(|r| r.chain == chain)
            .collect();
        let mut passed: Vec<&Rule> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if self.first_failing(rule).is_some() {
                passed.push(rule);
                continue;
            }
            let decided = Some(deciding(rule, index, true));
            return match &rule.verdict {
                Verdict::Return => (
                    Outcome::NotRedirected,
                    decided,
                    format!("not redirected: {}", self.why_return(rule)),
                ),
                Verdict::Redirect(port) => (
                    Outcome::Redirected { port: *port },
                    decided,
                    self.why_redirect(*port, rule, &passed),
                ),
                Verdict::Jump(next) => self.walk_chain(next),
            };
        }
        // Fell off the end of our chain: back in the built-in chain, nothing else of ours.
        let reason = match chain {
            INGRESS_CHAIN => format!(
                "not redirected: port {} is not in {}{}",
                self.connection.port(),
                canonical(Property::AppPorts),
                self.provenance.from(Property::AppPorts)
            ),
            _ => format!("not redirected: no rule of {chain} matches"),
        };
        let last = rules
            .len()
            .checked_sub(1)
            .map(|i| deciding(rules[i], i, false));
        (Outcome::NotRedirected, last, reason)
    }

    /// The first condition of `rule` the connection does not meet, if any.
    fn first_failing<'r>(&self, rule: &'r Rule) -> Option<&'r Match> {
        rule.matches
            .iter()
            .find(|m| matches!(self.check(m), Fact::Fails))
    }

    fn check(&self, condition: &Match) -> Fact {
        let c = self.connection;
        let ip = c.wire_ip();
        let holds = match condition {
            Match::Tcp => c.protocol == Protocol::Tcp,
            Match::Udp => c.protocol == Protocol::Udp,
            Match::InInterface(name) => c.direction == Direction::In && c.interface() == Some(name),
            Match::OutInterface(name) => {
                c.direction == Direction::Out && c.interface() == Some(name)
            }
            // Owner matches only see local processes' sockets; an unknown ID is taken as
            // an application's, which is the question people ask.
            Match::OwnerUid(uid) => c.direction == Direction::Out && c.uid == Some(*uid),
            Match::OwnerGid(gid) => c.direction == Direction::Out && c.gid == Some(*gid),
            Match::DestinationPorts(ports) => ports.iter().any(|r| r.contains(c.port())),
            Match::DestinationNetwork(net) => net.contains(&ip),
            Match::DestinationInSet(name) => self
                .set(name)
                .is_some_and(|set| set_holds(set, ip, c.port())),
            Match::DestinationIsLocal(local) => c.is_local_destination() == *local,
            Match::SourceIsLocal(local) => {
                let from_here = c.direction == Direction::In && c.local;
                from_here == *local
            }
        };
        if holds { Fact::Holds } else { Fact::Fails }
    }

    fn set(&self, name: &str) -> Option<&IpSet> {
        self.ruleset.sets.iter().find(|s| s.name == name)
    }

    fn why_jump_misses(&self, failed: &Match) -> String {
        let c = self.connection;
        let chain = match c.direction {
            Direction::Out => EGRESS_CHAIN,
            Direction::In => INGRESS_CHAIN,
        };
        match failed {
            Match::Tcp | Match::Udp => {
                format!("only TCP is redirected; a UDP connection never enters {chain}")
            }
            Match::DestinationIsLocal(_) => format!(
                "{} is this namespace's own address{}; connections to local addresses stay \
                 local",
                c.wire_ip(),
                if c.wire_ip().is_loopback() {
                    " (loopback)"
                } else {
                    ""
                }
            ),
            Match::SourceIsLocal(_) => "it comes from this namespace itself; only connections \
                 from elsewhere are redirected inbound (the proxy's own connections to the app \
                 are local)"
                .to_owned(),
            other => format!("it does not meet the jump's condition {other:?}"),
        }
    }

    /// Why a RETURN rule matched: its distinguishing condition, in the user's terms.
    fn why_return(&self, rule: &Rule) -> String {
        let c = self.connection;
        let key = rule.matches.iter().find(|m| !matches!(m, Match::Tcp));
        let p = self.provenance;
        match key {
            Some(Match::OwnerUid(uid)) if self.config.ignored_uid != Some(*uid) => {
                format!(
                    "uid {uid} is ignored by an installed rule that the configuration does not \
                     ask for ({} is {})",
                    canonical(Property::IgnoredUid),
                    self.config
                        .ignored_uid
                        .map_or("not set".to_owned(), |u| u.to_string())
                )
            }
            Some(Match::OwnerGid(gid)) if self.config.ignored_gid != Some(*gid) => {
                format!(
                    "gid {gid} is ignored by an installed rule that the configuration does not \
                     ask for ({} is {})",
                    canonical(Property::IgnoredGid),
                    self.config
                        .ignored_gid
                        .map_or("not set".to_owned(), |g| g.to_string())
                )
            }
            Some(Match::OwnerUid(uid)) => format!(
                "uid {uid} is {} {uid}{}: the proxy's own traffic is never redirected",
                canonical(Property::IgnoredUid),
                p.from(Property::IgnoredUid)
            ),
            Some(Match::OwnerGid(gid)) => format!(
                "gid {gid} is {} {gid}{}: the proxy's own traffic is never redirected",
                canonical(Property::IgnoredGid),
                p.from(Property::IgnoredGid)
            ),
            Some(Match::DestinationPorts(_)) => self.ignored_port_reason(),
            Some(Match::InInterface(name)) | Some(Match::OutInterface(name)) => format!(
                "not redirected: interface {name} is in {}{}; traffic through it is never \
                 captured",
                canonical(Property::IgnoredInterfaces),
                p.from(Property::IgnoredInterfaces)
            ),
            Some(Match::DestinationInSet(name))
                if self
                    .set(name)
                    .is_some_and(|s| matches!(s.members, SetMembers::Ports(_))) =>
            {
                self.ignored_port_reason()
            }
            Some(Match::DestinationNetwork(_)) | Some(Match::DestinationInSet(_)) => {
                let ip = c.wire_ip();
                match p.network_entry(ip) {
                    Some(entry) => format!(
                        "{ip} is in {} as {entry}{}",
                        canonical(Property::EgressIgnoredIps),
                        p.from(Property::EgressIgnoredIps)
                    ),
                    None => match built_in_destination(ip) {
                        Some(what) => format!(
                            "{ip} is always ignored (built in: {what}; sending it through the \
                             proxy breaks credentials)"
                        ),
                        None => format!(
                            "{ip} is ignored by an installed rule that the configuration does \
                             not ask for (it is not in {})",
                            canonical(Property::EgressIgnoredIps)
                        ),
                    },
                }
            }
            // The guards of the native table, read back as rules that return.
            Some(condition @ (Match::Udp | Match::DestinationIsLocal(true)))
            | Some(condition @ Match::SourceIsLocal(true)) => self.why_jump_misses(condition),
            None => format!(
                "every {} connection leaves the chain at this installed rule",
                c.family()
            ),
            _ => format!("it matches {rule}"),
        }
    }

    fn ignored_port_reason(&self) -> String {
        let port = self.connection.port();
        let p = self.provenance;
        match p.port_entry(Property::EgressIgnoredPorts, port) {
            Some(entry) => format!(
                "port {port} is in {} as {entry}{}",
                canonical(Property::EgressIgnoredPorts),
                p.from(Property::EgressIgnoredPorts)
            ),
            None if port == ALWAYS_IGNORED_PORT => {
                format!("port {port} is always ignored (built in, as in ECS: SSH keeps working)")
            }
            None => format!(
                "port {port} is ignored by an installed rule that the configuration does not \
                 ask for (it is not in {})",
                canonical(Property::EgressIgnoredPorts)
            ),
        }
    }

    /// Why a REDIRECT rule decides: for ingress, the app port that matched; for egress,
    /// each exclusion the connection is not in.
    fn why_redirect(&self, port: u16, rule: &Rule, passed: &[&Rule]) -> String {
        let c = self.connection;
        let p = self.provenance;
        if rule.chain == INGRESS_CHAIN {
            let configured = self.config.ingress.as_ref().map(|i| i.proxy_port);
            if configured != Some(port) {
                return format!(
                    "redirected to {port} by an installed rule (the configuration's {} is {})",
                    canonical(Property::ProxyIngressPort),
                    configured.map_or("not set".to_owned(), |p| p.to_string())
                );
            }
            let entry = p
                .port_entry(Property::AppPorts, c.port())
                .unwrap_or_else(|| c.port().to_string());
            return format!(
                "redirected to {port}, the {}{}: port {} is in {} as {entry}{}",
                canonical(Property::ProxyIngressPort),
                p.from(Property::ProxyIngressPort),
                c.port(),
                canonical(Property::AppPorts),
                p.from(Property::AppPorts)
            );
        }
        let mut facts: Vec<String> = Vec::new();
        let mut said = |fact: String| {
            if !facts.contains(&fact) {
                facts.push(fact);
            }
        };
        for rule in passed {
            for condition in &rule.matches {
                match condition {
                    Match::OwnerUid(uid) => said(match c.uid {
                        Some(mine) => format!(
                            "uid {mine} is not {} {uid}",
                            canonical(Property::IgnoredUid)
                        ),
                        None => format!(
                            "no uid given (taken as not {} {uid})",
                            canonical(Property::IgnoredUid)
                        ),
                    }),
                    Match::OwnerGid(gid) => said(match c.gid {
                        Some(mine) => format!(
                            "gid {mine} is not {} {gid}",
                            canonical(Property::IgnoredGid)
                        ),
                        None => format!(
                            "no gid given (taken as not {} {gid})",
                            canonical(Property::IgnoredGid)
                        ),
                    }),
                    Match::DestinationPorts(_) => said(self.not_ignored_port()),
                    Match::DestinationInSet(name)
                        if self
                            .set(name)
                            .is_some_and(|s| matches!(s.members, SetMembers::Ports(_))) =>
                    {
                        said(self.not_ignored_port())
                    }
                    Match::DestinationNetwork(_) | Match::DestinationInSet(_) => {
                        said(self.not_ignored_destination())
                    }
                    _ => {}
                }
            }
        }
        let mut text = if port == self.config.proxy_egress_port {
            format!(
                "redirected to {port}, the {}{}",
                canonical(Property::ProxyEgressPort),
                p.from(Property::ProxyEgressPort)
            )
        } else {
            format!(
                "redirected to {port} by an installed rule (the configuration's {} is {})",
                canonical(Property::ProxyEgressPort),
                self.config.proxy_egress_port
            )
        };
        if !facts.is_empty() {
            let _ = write!(text, ": {}", facts.join("; "));
        }
        text
    }

    fn not_ignored_port(&self) -> String {
        let given = self.provenance.list(Property::EgressIgnoredPorts).is_some();
        if given {
            format!(
                "port {} is not in {}{} nor {ALWAYS_IGNORED_PORT}",
                self.connection.port(),
                canonical(Property::EgressIgnoredPorts),
                self.provenance.from(Property::EgressIgnoredPorts)
            )
        } else {
            format!(
                "port {} is not {ALWAYS_IGNORED_PORT} (always ignored; {} is not set)",
                self.connection.port(),
                canonical(Property::EgressIgnoredPorts)
            )
        }
    }

    fn not_ignored_destination(&self) -> String {
        let ip = self.connection.wire_ip();
        let listed = self.provenance.list(Property::EgressIgnoredIps).is_some();
        if listed {
            format!(
                "{ip} is not in {}{} nor a metadata endpoint",
                canonical(Property::EgressIgnoredIps),
                self.provenance.from(Property::EgressIgnoredIps)
            )
        } else {
            format!(
                "{ip} is not a metadata endpoint ({} is not set)",
                canonical(Property::EgressIgnoredIps)
            )
        }
    }
}

/// The rules of ours an iptables backend holds, as a ruleset `explain` can walk: our
/// chains' rules and the jumps into them, in table order, each in its typed form, with the
/// sets of `planned` they name (a set's name is derived from its content, so an equal name
/// is equal content). Also the rules of ours it could not type (a shape meshinit never
/// writes), which the walk cannot follow.
pub fn installed_ruleset(
    installed: &crate::ruleset::InstalledTable,
    planned: &Ruleset,
) -> (Ruleset, Vec<String>) {
    let mut ruleset = Ruleset::empty(planned.family);
    ruleset.chains = installed.own_chains().map(str::to_owned).collect();
    let mut untyped = Vec::new();
    for rule in &installed.rules {
        let ours = crate::ruleset::is_own_chain(&rule.chain);
        let enters_ours = !ours && rule.own_target().is_some();
        if !ours && !enters_ours {
            continue;
        }
        match &rule.rule {
            Some(typed) if ours => ruleset.rules.push(typed.clone()),
            Some(typed) => ruleset.jumps.push(typed.clone()),
            None => untyped.push(format!("-A {} {}", rule.chain, rule.text)),
        }
    }
    ruleset.sets = planned
        .sets
        .iter()
        .filter(|set| installed.matched_sets().any(|name| name == set.name))
        .cloned()
        .collect();
    (ruleset, untyped)
}

fn set_holds(set: &IpSet, ip: IpAddr, port: u16) -> bool {
    match &set.members {
        SetMembers::Ports(ranges) => ranges.iter().any(|r| r.contains(port)),
        SetMembers::Networks(nets) => nets.iter().any(|n: IpNet| n.contains(&ip)),
    }
}

fn deciding(rule: &Rule, index: usize, matched: bool) -> DecidingRule {
    DecidingRule {
        chain: rule.chain.clone(),
        position: index + 1,
        rule: crate::ruleset::spelling::line(rule),
        matched,
    }
}
