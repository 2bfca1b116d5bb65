//! Turns merged [`RawSettings`] into a [`ProxyConfig`], collecting every problem at once so
//! the user can fix them in one go.

use super::addresses::{
    ALWAYS_IGNORED_IPS, IgnoredDestinations, parse_ignored_ip, whole_families_covered,
};
use super::mesh::{
    ALL_PORTS, DnsCapture, DnsScope, IncludedDestinations, MeshOptions, interface_name_problem,
};
use super::ports::{PortList, PortRange, parse_port, parse_port_range};
use super::settings::{Property, RawSettings, Setting, trim_value};
use super::{ALWAYS_IGNORED_PORT, IngressConfig, Ipv6Mode, ProxyConfig};
use crate::error::{ConfigError, quote};
use ipnet::IpNet;

/// Entries of a list named one by one in a message before the rest are only counted.
const NAMED_ENTRIES: usize = 3;

/// The validated config and the warnings (e.g. host bits cleared) to log.
pub fn validate(raw: &RawSettings) -> Result<(ProxyConfig, Vec<String>), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let name = |property| raw.name_of(property);

    let ignored_uid = id(raw.get(Property::IgnoredUid), "user", &mut errors);
    let ignored_gid = id(raw.get(Property::IgnoredGid), "group", &mut errors);
    if raw.get(Property::IgnoredUid).is_none() && raw.get(Property::IgnoredGid).is_none() {
        errors.push(ConfigError::new(
            name(Property::IgnoredUid),
            None,
            format!(
                "missing: set {} or {} (or both) to the proxy's user/group (e.g. 1337), or \
                 the proxy's own traffic loops back into it",
                name(Property::IgnoredUid),
                name(Property::IgnoredGid)
            ),
        ));
    }

    let egress_port = match raw.get(Property::ProxyEgressPort) {
        Some(s) => single_port(s, &mut errors),
        None => {
            errors.push(ConfigError::new(
                name(Property::ProxyEgressPort),
                None,
                "missing: set it to the proxy's egress listener port (e.g. 15001)",
            ));
            None
        }
    };

    let ingress_port = raw
        .get(Property::ProxyIngressPort)
        .and_then(|s| single_port(s, &mut errors));
    // `*`: every port; the ports captured are worked out below, once the proxy's are known.
    let all_ports = raw
        .get(Property::AppPorts)
        .is_some_and(|s| s.list().items().eq([ALL_PORTS]));
    let app_ports = raw.get(Property::AppPorts).map(|s| {
        if all_ports {
            PortList::from_ranges([PortRange {
                first: 1,
                last: u16::MAX,
            }])
        } else {
            port_list(s, &mut errors)
        }
    });
    let app_ports_given = app_ports.as_ref().is_some_and(|p| !p.is_empty());
    let mut ingress = match (raw.get(Property::ProxyIngressPort), app_ports_given) {
        (Some(port), false) => {
            errors.push(ConfigError::new(
                &port.property,
                Some(&port.value),
                format!(
                    "is set but {} is empty: give both (inbound redirection) or neither \
                     (egress only)",
                    name(Property::AppPorts)
                ),
            ));
            None
        }
        (None, true) => {
            let app = raw.get(Property::AppPorts).expect("app ports given");
            errors.push(ConfigError::new(
                &app.property,
                Some(&app.value),
                format!(
                    "is set but {} is not: give both (inbound redirection) or neither \
                     (egress only)",
                    name(Property::ProxyIngressPort)
                ),
            ));
            None
        }
        _ => match (ingress_port, app_ports) {
            (Some(proxy_port), Some(app_ports)) => Some(IngressConfig {
                proxy_port,
                app_ports,
            }),
            _ => None,
        },
    };

    if let (Some(ingress), Some(egress)) = (&ingress, egress_port)
        && ingress.proxy_port == egress
    {
        let s = raw
            .get(Property::ProxyIngressPort)
            .expect("ingress port given");
        errors.push(ConfigError::new(
            &s.property,
            Some(&s.value),
            format!(
                "equals {}: the proxy needs distinct ingress and egress ports",
                name(Property::ProxyEgressPort)
            ),
        ));
    }
    let mut mesh = MeshOptions::default();
    let ingress_ignored = raw
        .get(Property::IngressIgnoredPorts)
        .map(|s| port_list(s, &mut errors))
        .unwrap_or_default();
    if all_ports && let Some(ingress) = &mut ingress {
        let mut never = ingress_ignored;
        // The proxy's own listeners (its DNS one too) are never captured, so nothing loops.
        // A bad DNS port is reported with the DNS settings below.
        let dns_port = raw
            .get(Property::ProxyDnsPort)
            .and_then(|s| parse_port(&s.property, &s.value, trim_value(&s.value)).ok());
        for port in [Some(ingress.proxy_port), egress_port, dns_port]
            .into_iter()
            .flatten()
        {
            never.push(PortRange::single(port));
        }
        ingress.app_ports = PortList::from_ranges(complement(never.ranges()));
        if ingress.app_ports.is_empty() {
            let s = raw.get(Property::IngressIgnoredPorts).expect("ports given");
            errors.push(ConfigError::new(
                &s.property,
                Some(&s.value),
                "covers every port: with AppPorts * nothing inbound would be captured",
            ));
        }
        mesh.ingress_all_ports = true;
        mesh.ingress_ignored_ports = never;
    } else if !ingress_ignored.is_empty() {
        let s = raw.get(Property::IngressIgnoredPorts).expect("ports given");
        errors.push(ConfigError::new(
            &s.property,
            Some(&s.value),
            format!(
                "is only used with {} * (every inbound port): with listed app ports, \
                 leave the ports out of that list instead",
                name(Property::AppPorts)
            ),
        ));
    }
    if let Some(ingress) = ingress.as_ref().filter(|_| !all_ports) {
        let app = raw.get(Property::AppPorts).expect("app ports given");
        let proxy_ports = [Some(ingress.proxy_port), egress_port];
        for port in proxy_ports.into_iter().flatten() {
            if ingress.app_ports.contains(port) {
                errors.push(ConfigError::new(
                    &app.property,
                    Some(&app.value),
                    format!(
                        "contains the proxy port {port}: redirecting the proxy's own listener \
                         to itself would loop; remove it"
                    ),
                ));
            }
        }
    }

    let mut egress_ignored_ports = raw
        .get(Property::EgressIgnoredPorts)
        .map(|s| port_list(s, &mut errors))
        .unwrap_or_default();
    egress_ignored_ports.push(PortRange::single(ALWAYS_IGNORED_PORT));
    if let Some(setting) = raw.get(Property::EgressIgnoredPorts)
        && covers_every_port(egress_ignored_ports.ranges())
    {
        errors.push(ConfigError::new(
            &setting.property,
            Some(&setting.value),
            "covers every port (1-65535, with the always-ignored 22), which would turn egress \
             redirection off: list only the destination ports that must bypass the proxy; to \
             exempt a program's traffic entirely, run it as the proxy's user or group \
             (IgnoredUID/IgnoredGID)"
                .to_owned(),
        ));
    }

    let mut destinations = IgnoredDestinations::default();
    if let Some(setting) = raw.get(Property::EgressIgnoredIps) {
        let (property, verbatim) = (&setting.property, &setting.value);
        let mut bad = Vec::new();
        let mut notes = Vec::new();
        // Parsed straight into the per-family lists: no list of every entry in between.
        destinations =
            IgnoredDestinations::from_networks(setting.list().items().filter_map(|item| {
                match parse_ignored_ip(property, verbatim, item) {
                    Ok(parsed) => {
                        notes.extend(parsed.warning);
                        Some(parsed.net)
                    }
                    Err(e) => {
                        bad.push(e.message);
                        None
                    }
                }
            }));
        errors.extend(list_error(property, verbatim, bad));
        warnings.extend(summarized(notes));
        for family in whole_families_covered(&destinations) {
            errors.push(ConfigError::new(
                property,
                Some(verbatim),
                whole_family_message(family, raw),
            ));
        }
    }
    for ip in ALWAYS_IGNORED_IPS {
        let net = parse_ignored_ip("built-in", ip, ip).expect("built-in addresses parse");
        destinations.push(net.net);
    }

    let ipv6 = match raw.get(Property::Ipv6) {
        None => Ipv6Mode::Auto,
        Some(s) => ipv6_mode(s).unwrap_or_else(|e| {
            errors.push(e);
            Ipv6Mode::Auto
        }),
    };

    mesh.egress_included = included_destinations(raw, &mut errors, &mut warnings);
    mesh.ignored_interfaces = interfaces(raw, &mut errors);
    if let Some(s) = raw.get(Property::DropInvalid) {
        mesh.drop_invalid = switch(s).unwrap_or_else(|e| {
            errors.push(e);
            false
        });
    }

    mesh.dns = dns_capture(raw, egress_port, ingress.as_ref(), &mut errors);

    let verify = match raw.get(Property::Verify) {
        None => false,
        Some(s) => switch(s).unwrap_or_else(|e| {
            errors.push(e);
            false
        }),
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    let config = ProxyConfig {
        ignored_uid,
        ignored_gid,
        proxy_egress_port: egress_port.expect("no errors means the egress port parsed"),
        ingress,
        egress_ignored_ports,
        egress_ignored_destinations: destinations,
        ipv6,
        mesh,
        verify,
    };
    Ok((config, warnings))
}

/// The ports from 1 to 65535 not in `taken`.
fn complement(taken: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = taken.to_vec();
    sorted.sort();
    let mut free = Vec::new();
    let mut next: u32 = 1;
    for range in sorted {
        if u32::from(range.first) > next {
            free.push(PortRange {
                first: next as u16,
                last: range.first - 1,
            });
        }
        next = next.max(u32::from(range.last) + 1);
    }
    if next <= u32::from(u16::MAX) {
        free.push(PortRange {
            first: next as u16,
            last: u16::MAX,
        });
    }
    free
}

/// The include list, `None` when not given or empty (an empty value is unset everywhere).
fn included_destinations(
    raw: &RawSettings,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<IncludedDestinations> {
    let setting = raw.get(Property::EgressIncludedIps)?;
    let (property, verbatim) = (&setting.property, &setting.value);
    let mut included = IncludedDestinations::default();
    let (mut bad, mut notes) = (Vec::new(), Vec::new());
    for item in setting.list().items() {
        match parse_ignored_ip(property, verbatim, item) {
            Ok(parsed) => {
                notes.extend(parsed.warning);
                match parsed.net {
                    IpNet::V4(net) if !included.ipv4.contains(&net) => included.ipv4.push(net),
                    IpNet::V6(net) if !included.ipv6.contains(&net) => included.ipv6.push(net),
                    _ => {}
                }
            }
            Err(e) => bad.push(e.message),
        }
    }
    errors.extend(list_error(property, verbatim, bad));
    warnings.extend(summarized(notes));
    (!included.ipv4.is_empty() || !included.ipv6.is_empty()).then_some(included)
}

fn interfaces(raw: &RawSettings, errors: &mut Vec<ConfigError>) -> Vec<String> {
    let Some(setting) = raw.get(Property::IgnoredInterfaces) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    let mut bad = Vec::new();
    for item in setting.list().items() {
        match interface_name_problem(item) {
            Some(problem) => bad.push(problem),
            None if !names.iter().any(|n| n == item) => names.push(item.to_owned()),
            None => {}
        }
    }
    errors.extend(list_error(&setting.property, &setting.value, bad));
    names
}

/// DNS capture, when a proxy DNS port is given.
fn dns_capture(
    raw: &RawSettings,
    egress_port: Option<u16>,
    ingress: Option<&IngressConfig>,
    errors: &mut Vec<ConfigError>,
) -> Option<DnsCapture> {
    let scope = match raw.get(Property::DnsCapture) {
        None => DnsScope::All,
        Some(s) => match trim_value(&s.value).to_ascii_lowercase().as_str() {
            "all" => DnsScope::All,
            "resolv.conf" | "resolv-conf" => DnsScope::ResolvConf,
            _ => {
                errors.push(ConfigError::new(
                    &s.property,
                    Some(&s.value),
                    "is not a DNS capture scope: use all (every resolver) or resolv.conf (the \
                     resolvers of the namespace's /etc/resolv.conf)",
                ));
                DnsScope::All
            }
        },
    };
    let Some(setting) = raw.get(Property::ProxyDnsPort) else {
        if let Some(s) = raw.get(Property::DnsCapture) {
            errors.push(ConfigError::new(
                &s.property,
                Some(&s.value),
                format!(
                    "needs {}: the port of the proxy's DNS listener (e.g. 15053)",
                    raw.name_of(Property::ProxyDnsPort)
                ),
            ));
        }
        return None;
    };
    let port = single_port(setting, errors)?;
    let proxy_ports = [egress_port, ingress.map(|i| i.proxy_port)];
    if proxy_ports.contains(&Some(port)) {
        errors.push(ConfigError::new(
            &setting.property,
            Some(&setting.value),
            "is one of the proxy's TCP listener ports: DNS needs a listener of its own",
        ));
    }
    Some(DnsCapture {
        proxy_port: port,
        scope,
        resolvers: Vec::new(),
    })
}

/// An on/off setting.
fn switch(s: &Setting<String>) -> Result<bool, ConfigError> {
    match trim_value(&s.value).to_ascii_lowercase().as_str() {
        "true" | "1" | "on" => Ok(true),
        "false" | "0" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            &s.property,
            Some(&s.value),
            format!(
                "{} is not on or off: use true or false (1/on, 0/off)",
                quote(&s.value)
            ),
        )),
    }
}

/// Why ignoring every address of a family is refused, and what to do instead.
fn whole_family_message(family: &str, raw: &RawSettings) -> String {
    let instead = if family == "IPv6" {
        format!(
            "to keep IPv6 connections away from the proxy, turn IPv6 off instead ({} off)",
            raw.name_of(Property::Ipv6)
        )
    } else {
        "list only the destinations that must bypass the proxy (e.g. 10.0.0.0/8); a proxy \
         that must see no outbound IPv4 traffic needs no egress rules at all"
            .to_owned()
    };
    format!(
        "covers every {family} address: it would turn egress redirection off for {family}, \
         which is almost certainly not what you want; {instead}"
    )
}

/// One error for all the bad entries of one list: the first few named, the rest counted.
fn list_error(property: &str, verbatim: &str, problems: Vec<String>) -> Option<ConfigError> {
    let message = summarized(problems)?;
    Some(ConfigError::new(property, Some(verbatim), message))
}

/// The messages about the entries of one list as one line, or nothing when there are none.
fn summarized(messages: Vec<String>) -> Option<String> {
    let count = messages.len();
    let mut line = messages
        .into_iter()
        .take(NAMED_ENTRIES)
        .collect::<Vec<_>>()
        .join("; ");
    if line.is_empty() {
        return None;
    }
    if count > NAMED_ENTRIES {
        line.push_str(&format!("; and {} more like these", count - NAMED_ENTRIES));
    }
    Some(line)
}

fn id(setting: Option<&Setting<String>>, kind: &str, errors: &mut Vec<ConfigError>) -> Option<u32> {
    let s = setting?;
    let text = trim_value(&s.value);
    let parsed = if !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit())
    {
        text.parse::<u32>().ok().filter(|&id| id != u32::MAX)
    } else {
        None
    };
    if parsed.is_none() {
        errors.push(ConfigError::new(
            &s.property,
            Some(&s.value),
            format!("is not a numeric {kind} ID (0-4294967294); names are not resolved here"),
        ));
    }
    parsed
}

fn single_port(s: &Setting<String>, errors: &mut Vec<ConfigError>) -> Option<u16> {
    parse_port(&s.property, &s.value, trim_value(&s.value))
        .map_err(|e| errors.push(e))
        .ok()
}

fn port_list(s: &Setting<String>, errors: &mut Vec<ConfigError>) -> PortList {
    let mut ranges = Vec::new();
    let mut bad = Vec::new();
    for item in s.list().items() {
        match parse_port_range(&s.property, &s.value, item) {
            Ok(range) => ranges.push(range),
            Err(e) => bad.push(e.message),
        }
    }
    errors.extend(list_error(&s.property, &s.value, bad));
    PortList::from_ranges(ranges)
}

fn ipv6_mode(s: &Setting<String>) -> Result<Ipv6Mode, ConfigError> {
    // 1/true mean "auto", not "on": a node with IPv6 disabled must never fail the pod.
    match trim_value(&s.value).to_ascii_lowercase().as_str() {
        "auto" | "1" | "true" => Ok(Ipv6Mode::Auto),
        "on" => Ok(Ipv6Mode::On),
        "off" | "0" | "false" => Ok(Ipv6Mode::Off),
        _ => Err(ConfigError::new(
            &s.property,
            Some(&s.value),
            format!(
                "{} is not an IPv6 mode: use auto, on or off (1/true = auto, 0/false = off)",
                quote(&s.value)
            ),
        )),
    }
}

/// Whether `ranges` together hold every port 1-65535 (one range or a union of them).
fn covers_every_port(ranges: &[PortRange]) -> bool {
    let mut sorted: Vec<(u32, u32)> = ranges
        .iter()
        .map(|r| (u32::from(r.first), u32::from(r.last)))
        .collect();
    sorted.sort_unstable();
    let mut next_uncovered = 1u32;
    for (first, last) in sorted {
        if first > next_uncovered {
            return false;
        }
        next_uncovered = next_uncovered.max(last + 1);
    }
    next_uncovered > 65535
}
