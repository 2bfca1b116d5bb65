//! `status --counters`: how many connections each planned rule has decided since it was
//! written, in the user's terms. NAT rules see only the first packet of a connection, so a
//! rule's packet count is its connection count.

use serde::Serialize;

use nftables_netlink::NftConnection;
use nftables_netlink::model::{Expr, Rule as NftRule, Table, TableCounters};
use nftables_netlink::text::rule_text;

use crate::backend::BackendKind;
use crate::backend::iptables::{IptablesTools, render};
use crate::backend::netfilter;
use crate::backend::nftables::TABLE_NAME;
use crate::backend::program::{self, TimeBudget};
use crate::error::{Error, Result};
use crate::ruleset::{
    EGRESS_CHAIN, Family, INGRESS_CHAIN, Match, Rule, Ruleset, SetMembers, Verdict,
};

/// One planned rule and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    /// `None`: one rule serving both families (the native table writes a rule both
    /// families share once).
    pub family: Option<Family>,
    pub chain: String,
    /// The rule in the backend's syntax.
    pub rule: String,
    /// What the rule is, in the user's terms ("ignored ports 5432").
    pub description: String,
    /// Connections (first packets) it matched; `None` when the rule is not installed.
    pub connections: Option<u64>,
    /// Bytes of those first packets.
    pub bytes: Option<u64>,
}

impl RuleCount {
    /// "ignored ports 5432: 120 connections".
    pub fn line(&self) -> String {
        match self.connections {
            Some(1) => format!("{}: 1 connection", self.description),
            Some(n) => format!("{}: {n} connections", self.description),
            None => format!("{}: not installed", self.description),
        }
    }
}

/// What `rule` does, in the user's terms.
pub fn describe(rule: &Rule, ruleset: &Ruleset) -> String {
    let ports = |ports: &[crate::config::PortRange]| {
        ports
            .iter()
            .map(|p| {
                if p.first == p.last {
                    p.first.to_string()
                } else {
                    format!("{}-{}", p.first, p.last)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let set = |name: &str| ruleset.sets.iter().find(|s| s.name == name);
    if let Verdict::Jump(target) = &rule.verdict {
        return match target.as_str() {
            EGRESS_CHAIN => "outbound TCP to other hosts, entering the egress rules".to_owned(),
            INGRESS_CHAIN => "inbound TCP from elsewhere, entering the ingress rules".to_owned(),
            other => format!("entering {other}"),
        };
    }
    let key = rule.matches.iter().find(|m| !matches!(m, Match::Tcp));
    let what = match key {
        Some(Match::OwnerUid(uid)) => format!("proxy's uid {uid} (IgnoredUID)"),
        Some(Match::OwnerGid(gid)) => format!("proxy's gid {gid} (IgnoredGID)"),
        Some(Match::DestinationPorts(list)) if rule.chain == INGRESS_CHAIN => {
            format!("app ports {}", ports(list))
        }
        Some(Match::DestinationPorts(list)) => format!("ignored ports {}", ports(list)),
        Some(Match::DestinationNetwork(net)) => format!("ignored destination {net}"),
        Some(Match::DestinationInSet(name)) => match set(name).map(|s| &s.members) {
            Some(SetMembers::Ports(list)) => format!("ignored ports (set of {})", list.len()),
            Some(SetMembers::Networks(nets)) => {
                format!("ignored destinations (set of {} networks)", nets.len())
            }
            None => format!("set {name}"),
        },
        _ if rule.chain == EGRESS_CHAIN => "other outbound TCP".to_owned(),
        _ => "inbound TCP".to_owned(),
    };
    match rule.verdict {
        Verdict::Redirect(port) => format!("{what}, redirected to {port}"),
        _ => format!("{what}, not redirected"),
    }
}

/// The counters of `ruleset`'s rules (the jumps first, then our chains' rules) as an
/// iptables backend holds them.
pub fn iptables_counts(
    kind: BackendKind,
    ruleset: &Ruleset,
    budget: &TimeBudget,
) -> Result<Vec<RuleCount>> {
    let tools = IptablesTools::find(kind, ruleset.family)?;
    let output = program::run(&tools.save, &["-c", "-t", "nat"], None, budget)?;
    let saved = String::from_utf8(output.stdout)
        .map_err(|_| Error::Other(format!("{} printed non-UTF-8 output", tools.save.display())))?;
    Ok(match_counters(ruleset, &counted_lines(&saved)))
}

/// The counters of `ruleset`'s rules in `kind`.
pub fn counts(kind: BackendKind, ruleset: &Ruleset, budget: &TimeBudget) -> Result<Vec<RuleCount>> {
    match kind {
        BackendKind::Nftables => unreachable!("the native table is counted once: native_counts"),
        _ => iptables_counts(kind, ruleset, budget),
    }
}

/// The counters of every rule of the native table, read over netlink like everything
/// else the native backend does (no `nft` needed); none when there is no table.
pub fn native_counts() -> Result<Vec<RuleCount>> {
    let snapshot = NftConnection::open()
        .and_then(|mut connection| connection.read_table(TABLE_NAME))
        .map_err(netfilter::kernel_error)?;
    Ok(snapshot
        .table
        .map(|table| native_counted_rules(&table, &snapshot.counters))
        .unwrap_or_default())
}

/// Each counted rule of the native table, with its chain, spelled as `nft list` spells it
/// (the counter left out) and described in the user's terms.
pub fn native_counted_rules(table: &Table, counters: &TableCounters) -> Vec<RuleCount> {
    let mut counts = Vec::new();
    for chain in &table.chains {
        for (index, rule) in chain.rules.iter().enumerate() {
            let Some(counted) = counters.rule(&chain.name, index).first() else {
                continue;
            };
            let uncounted = NftRule::new(
                rule.exprs
                    .iter()
                    .filter(|e| **e != Expr::Counter)
                    .cloned()
                    .collect(),
            );
            let rule = as_nft_lists(&rule_text(&uncounted));
            counts.push(RuleCount {
                family: if rule.contains("ip6 ") || rule.starts_with("meta nfproto ipv6") {
                    Some(Family::Ipv6)
                } else if rule.contains("ip daddr") {
                    Some(Family::Ipv4)
                } else {
                    None
                },
                description: describe_nft(&chain.name, &rule),
                chain: chain.name.clone(),
                rule,
                connections: Some(counted.packets),
                bytes: Some(counted.bytes),
            });
        }
    }
    counts
}

/// A rule as `nft list` spells it: without the protocol a match implies (`nft` leaves out
/// `meta l4proto tcp` before `tcp dport`, `meta nfproto ipv4` before `ip daddr`).
fn as_nft_lists(text: &str) -> String {
    let mut text = text.to_owned();
    for (implied, by) in [
        ("meta l4proto tcp ", "tcp "),
        ("meta nfproto ipv4 ", "ip "),
        ("meta nfproto ipv6 ", "ip6 "),
    ] {
        let doubled = format!("{implied}{by}");
        if let Some(at) = text.find(&doubled) {
            text.replace_range(at..at + implied.len(), "");
        }
    }
    text
}

/// What a native rule (nft syntax, counter left out) does, in the user's terms.
fn describe_nft(chain: &str, rule: &str) -> String {
    let rule = rule.strip_prefix("meta l4proto tcp ").unwrap_or(rule);
    let redirect = rule
        .rsplit_once(" redirect to :")
        .or(rule.strip_prefix("redirect to :").map(|port| ("", port)));
    let (condition, action) = match redirect {
        Some((condition, port)) => (condition, format!("redirected to {port}")),
        None => (
            rule.strip_suffix(" return").unwrap_or(rule),
            "not redirected".to_owned(),
        ),
    };
    let members = |text: &str| match text.strip_prefix('@') {
        Some(set) => format!("(set {set})"),
        None => text.to_owned(),
    };
    let what = if condition.is_empty() {
        "other outbound TCP".to_owned()
    } else if let Some(uid) = condition.strip_prefix("meta skuid ") {
        format!("proxy's uid {uid} (IgnoredUID)")
    } else if let Some(gid) = condition.strip_prefix("meta skgid ") {
        format!("proxy's gid {gid} (IgnoredGID)")
    } else if let Some(ports) = condition.strip_prefix("tcp dport ") {
        if chain == "prerouting" {
            format!("app ports {}", members(ports))
        } else {
            format!("ignored ports {}", members(ports))
        }
    } else if let Some(nets) = condition
        .strip_prefix("ip daddr ")
        .or(condition.strip_prefix("ip6 daddr "))
    {
        format!("ignored destinations {}", members(nets))
    } else {
        match condition {
            "meta l4proto != tcp" => "not TCP".to_owned(),
            "fib daddr type local" => "to a local address".to_owned(),
            "fib saddr type local" => "from this namespace".to_owned(),
            "meta nfproto ipv6" => "IPv6 (not programmed)".to_owned(),
            other => other.to_owned(),
        }
    };
    format!("{what}, {action}")
}

/// `[packets:bytes] -A ...` lines of `iptables-save -c`, as (line, packets, bytes).
pub fn counted_lines(saved: &str) -> Vec<(String, u64, u64)> {
    saved
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix('[')?;
            let (counts, rule) = rest.split_once("] ")?;
            let (packets, bytes) = counts.split_once(':')?;
            Some((rule.to_owned(), packets.parse().ok()?, bytes.parse().ok()?))
        })
        .collect()
}

/// Each planned rule with the counters of the installed line that spells it (each
/// installed line counted once).
fn match_counters(ruleset: &Ruleset, installed: &[(String, u64, u64)]) -> Vec<RuleCount> {
    let mut used = vec![false; installed.len()];
    ruleset
        .jumps
        .iter()
        .chain(&ruleset.rules)
        .map(|rule| {
            let text = render::line(rule);
            let found = installed
                .iter()
                .enumerate()
                .find(|(i, (line, ..))| !used[*i] && *line == text);
            let (connections, bytes) = match found {
                Some((i, (_, packets, bytes))) => {
                    used[i] = true;
                    (Some(*packets), Some(*bytes))
                }
                None => (None, None),
            };
            RuleCount {
                family: Some(ruleset.family),
                chain: rule.chain.clone(),
                rule: text,
                description: describe(rule, ruleset),
                connections,
                bytes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProxyConfig, RawSettings, validate};
    use crate::ruleset::plan;

    fn config() -> ProxyConfig {
        use crate::config::settings::{Property, Vocabulary};
        let raw = RawSettings::spelled(
            Vocabulary::Ecs,
            [
                (Property::IgnoredUid, "1337"),
                (Property::ProxyEgressPort, "15001"),
                (Property::EgressIgnoredPorts, "5432"),
            ],
        );
        validate(&raw).unwrap().0
    }

    #[test]
    fn native_rules_are_counted_spelled_as_nft_lists_them_and_described() {
        use crate::backend::nftables::{ActiveFamilies, counters, plan_table};
        use nftables_netlink::model::CounterValues;
        let table = counters::counted(plan_table(&config(), ActiveFamilies::Both));
        let mut values = TableCounters::default();
        for chain in &table.chains {
            for (i, _) in chain.rules.iter().enumerate() {
                let n = i as u64 + if chain.name == "output" { 0 } else { 100 };
                values.push_rule(
                    &chain.name,
                    vec![CounterValues {
                        packets: n,
                        bytes: 60 * n,
                    }],
                );
            }
        }
        let lines: Vec<String> = native_counted_rules(&table, &values)
            .iter()
            .map(|c| format!("{} {:?} [{}] {}", c.chain, c.family, c.rule, c.line()))
            .collect();
        assert_eq!(
            lines,
            [
                "output None [meta l4proto != tcp return] not TCP, not redirected: 0 connections",
                "output None [fib daddr type local return] to a local address, not redirected: 1 \
                 connection",
                "output None [meta skuid 1337 return] proxy's uid 1337 (IgnoredUID), not \
                 redirected: 2 connections",
                "output None [tcp dport @ignored_ports return] ignored ports (set \
                 ignored_ports), not redirected: 3 connections",
                "output Some(Ipv4) [ip daddr @ignored_ipv4 return] ignored destinations (set \
                 ignored_ipv4), not redirected: 4 connections",
                "output Some(Ipv6) [ip6 daddr @ignored_ipv6 return] ignored destinations (set \
                 ignored_ipv6), not redirected: 5 connections",
                "output None [meta l4proto tcp redirect to :15001] other outbound TCP, \
                 redirected to 15001: 6 connections",
            ]
        );
    }

    #[test]
    fn counters_are_read_per_planned_rule_in_user_terms() {
        let ruleset = plan(&config(), Family::Ipv4, render::PLAN_OPTIONS);
        let saved = "*nat\n:OUTPUT ACCEPT [7:420]\n:APPMESH_EGRESS - [0:0]\n\
            [5:300] -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS\n\
            [1:60] -A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN\n\
            [120:7200] -A APPMESH_EGRESS -p tcp -m multiport --dports 5432,22 -j RETURN\n\
            [4:240] -A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n";
        let counts = match_counters(&ruleset, &counted_lines(saved));
        let lines: Vec<String> = counts.iter().map(RuleCount::line).collect();
        assert_eq!(
            lines,
            [
                "outbound TCP to other hosts, entering the egress rules: 5 connections",
                "proxy's uid 1337 (IgnoredUID), not redirected: 1 connection",
                "ignored ports 5432,22, not redirected: 120 connections",
                "ignored destination 169.254.170.2/32, not redirected: not installed",
                "ignored destination 169.254.169.254/32, not redirected: not installed",
                "ignored destination 169.254.170.23/32, not redirected: not installed",
                "other outbound TCP, redirected to 15001: 4 connections",
            ]
        );
    }
}
