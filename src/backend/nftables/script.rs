//! The native table as an nft script: what `render --backend nftables` and `apply
//! --dry-run` print, in the syntax `nft -f` loads (and `nft -c -f` checks). Pure. Rules are
//! spelled by the printer `status --show` diffs with ([`nftables_netlink::text`]), so one
//! spelling serves both; this module adds the table, its sets and its chains around them.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use nftables_netlink::model::{Expr, KeyRange, KeyType, Policy, Set, Table, TableCounters};
use nftables_netlink::text::{rule_text, rule_text_counted};

/// `table inet NAME { sets; chains }` as nft writes it, one statement a line.
pub fn script(table: &Table) -> String {
    write(table, None)
}

/// An installed table as `nft list` shows it, from a netlink read (no `nft` needed):
/// [`script`] with what each counter has counted (`counter packets 3 bytes 180`). A rule
/// holding an expression meshinit has no words for is a `#` comment naming it, so the
/// listing still loads with `nft -f`.
pub fn listing(table: &Table, counters: &TableCounters) -> String {
    write(table, Some(counters))
}

fn write(table: &Table, counters: Option<&TableCounters>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table inet {} {{", table.name);
    for (i, set) in table.sets.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&set_block(set));
    }
    for chain in &table.chains {
        if !out.ends_with("{\n") {
            out.push('\n');
        }
        let _ = writeln!(out, "\tchain {} {{", chain.name);
        if let Some(base) = &chain.base {
            let policy = match base.policy {
                Policy::Accept => "accept",
                Policy::Drop => "drop",
            };
            let _ = writeln!(
                out,
                "\t\ttype {} hook {} priority {}; policy {policy};",
                base.chain_type.name(),
                format!("{:?}", base.hook).to_lowercase(),
                base.priority
            );
        }
        for (index, rule) in chain.rules.iter().enumerate() {
            let text = match counters {
                Some(counters) => rule_text_counted(rule, counters.rule(&chain.name, index)),
                None => rule_text(rule),
            };
            if counters.is_some() && rule.exprs.iter().any(|e| matches!(e, Expr::Other { .. })) {
                let _ = writeln!(out, "\t\t# a rule meshinit has no words for: {text}");
            } else {
                let _ = writeln!(out, "\t\t{text}");
            }
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// One set: its type, `flags interval` or the size meshinit declares a hash set with (so
/// the kernel builds the same table), and its elements.
fn set_block(set: &Set) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\tset {} {{", set.name);
    let _ = writeln!(out, "\t\ttype {}", type_name(set.key));
    if set.interval {
        out.push_str("\t\tflags interval\n");
    } else {
        let _ = writeln!(out, "\t\tsize {}", set.elements().len().max(1));
    }
    if !set.elements().is_empty() {
        let elements: Vec<String> = set
            .elements()
            .iter()
            .map(|range| element(set.key, *range))
            .collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
    }
    out.push_str("\t}\n");
    out
}

fn type_name(key: KeyType) -> &'static str {
    match key {
        KeyType::Ipv4Addr => "ipv4_addr",
        KeyType::Ipv6Addr => "ipv6_addr",
        KeyType::InetService => "inet_service",
    }
}

/// An element: a key, or `first-last` for a range.
fn element(key: KeyType, range: KeyRange) -> String {
    let one = |value: u128| match key {
        KeyType::Ipv4Addr => Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX)).to_string(),
        KeyType::Ipv6Addr => Ipv6Addr::from(value).to_string(),
        KeyType::InetService => value.to_string(),
    };
    if range.is_single() {
        one(range.first)
    } else {
        format!("{}-{}", one(range.first), one(range.last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::nftables::{ActiveFamilies, counters, plan_table};
    use nftables_netlink::model::{KeyRange, Set};

    #[test]
    fn the_seed_table_reads_as_nft_writes_it() {
        use crate::config::settings::{Property, Vocabulary};
        use crate::config::{RawSettings, validate};
        let raw = RawSettings::spelled(
            Vocabulary::Ecs,
            [
                (Property::IgnoredUid, "1337"),
                (Property::ProxyEgressPort, "15001"),
                (Property::ProxyIngressPort, "15000"),
                (Property::AppPorts, "9080"),
            ],
        );
        let config = validate(&raw).unwrap().0;
        let table = counters::counted(plan_table(&config, ActiveFamilies::Both));
        assert_eq!(
            script(&table),
            "table inet meshinit {
\tset ignored_ipv4 {
\t\ttype ipv4_addr
\t\tsize 3
\t\telements = { 169.254.169.254, 169.254.170.2, 169.254.170.23 }
\t}

\tset ignored_ipv6 {
\t\ttype ipv6_addr
\t\tsize 2
\t\telements = { fd00:ec2::23, fd00:ec2::254 }
\t}

\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tmeta l4proto != tcp counter return
\t\tfib daddr type local counter return
\t\tmeta skuid 1337 counter return
\t\tmeta l4proto tcp tcp dport 22 counter return
\t\tmeta nfproto ipv4 ip daddr @ignored_ipv4 counter return
\t\tmeta nfproto ipv6 ip6 daddr @ignored_ipv6 counter return
\t\tmeta l4proto tcp counter redirect to :15001
\t}

\tchain prerouting {
\t\ttype nat hook prerouting priority -100; policy accept;
\t\tfib saddr type local counter return
\t\tmeta l4proto tcp tcp dport 9080 counter redirect to :15000
\t}
}
"
        );
    }

    #[test]
    fn ranges_are_first_dash_last_in_an_interval_set() {
        let set = Set::new(
            "ignored_ports",
            KeyType::InetService,
            [
                KeyRange {
                    first: 8000,
                    last: 8002,
                },
                KeyRange::single(22),
            ],
        );
        assert_eq!(
            set_block(&set),
            "\tset ignored_ports {\n\t\ttype inet_service\n\t\tflags interval\n\t\t\
             elements = { 22, 8000-8002 }\n\t}\n"
        );
    }
}
