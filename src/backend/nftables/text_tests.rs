//! The nft-words printer ([`nftables_netlink::text`]) on meshinit's own planned table.

use nftables_netlink::text::{diff, table_lines};

use super::counters;
use super::render::{ActiveFamilies, plan_table};

fn seed(egress: &str) -> crate::config::ProxyConfig {
    use crate::config::settings::{Property, Vocabulary};
    use crate::config::{RawSettings, validate};
    let raw = RawSettings::spelled(
        Vocabulary::Ecs,
        [
            (Property::IgnoredUid, "1337"),
            (Property::ProxyEgressPort, egress),
            (Property::ProxyIngressPort, "15000"),
            (Property::AppPorts, "9080"),
            (Property::EgressIgnoredIps, "10.0.0.0/8"),
        ],
    );
    validate(&raw).unwrap().0
}

#[test]
fn rules_read_as_nft_writes_them() {
    let table = counters::counted(plan_table(&seed("15001"), ActiveFamilies::Both));
    let lines = table_lines(&table);
    for wanted in [
        "chain output: meta l4proto != tcp counter return",
        "chain output: fib daddr type local counter return",
        "chain output: meta skuid 1337 counter return",
        "chain output: meta l4proto tcp tcp dport 22 counter return",
        "chain output: meta nfproto ipv4 ip daddr @ignored_ipv4 counter return",
        "chain output: meta l4proto tcp counter redirect to :15001",
        "chain prerouting: meta l4proto tcp tcp dport 9080 counter redirect to :15000",
    ] {
        assert!(
            lines.iter().any(|l| l == wanted),
            "{wanted:?} not in {lines:#?}"
        );
    }
}

#[test]
fn a_changed_rule_is_one_line_removed_and_one_added() {
    let lines = |port| table_lines(&plan_table(&seed(port), ActiveFamilies::Both));
    assert_eq!(
        diff(&lines("15001"), &lines("15002")),
        [
            "- chain output: meta l4proto tcp redirect to :15001",
            "+ chain output: meta l4proto tcp redirect to :15002"
        ]
    );
    assert!(diff(&lines("15001"), &lines("15001")).is_empty());
}
