//! The planner on its own: configurations in (read and validated as a user's would be),
//! the model's rules out, compared exactly in the model's neutral spelling.

use std::ffi::OsString;

use super::*;
use crate::config::ALWAYS_IGNORED_IPS;
use crate::config::sources::env::parse_env;
use crate::config::validate;

/// The configuration the environment variables `vars` give.
fn config(vars: &[(&str, &str)]) -> ProxyConfig {
    let raw = parse_env(
        vars.iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value))),
    )
    .expect("our variables");
    validate(&raw).expect("a valid configuration").0
}

/// The seed's shape: the App Mesh variables a Kubernetes pod gets.
fn seed() -> ProxyConfig {
    config(&[
        ("APPMESH_IGNORE_UID", "1337"),
        ("APPMESH_ENVOY_INGRESS_PORT", "15000"),
        ("APPMESH_ENVOY_EGRESS_PORT", "15001"),
        ("APPMESH_APP_PORTS", "9080"),
        ("APPMESH_EGRESS_IGNORED_IP", "203.0.113.9,10.9.0.0/16"),
        ("APPMESH_EGRESS_IGNORED_PORTS", "5432"),
    ])
}

/// An egress-only configuration: no ingress port, no AppPorts; the proxy's UID is 1337.
fn egress_only(extra: &[(&str, &str)]) -> ProxyConfig {
    let mut vars = vec![
        ("APPMESH_ENVOY_EGRESS_PORT", "15001"),
        ("APPMESH_IGNORE_UID", "1337"),
    ];
    vars.extend_from_slice(extra);
    config(&vars)
}

fn spelled(rules: &[Rule]) -> Vec<String> {
    rules.iter().map(ToString::to_string).collect()
}

const IPTABLES: PlanOptions = PlanOptions {
    max_listed_networks: 32,
    max_port_rules: 4,
    port_list_slots: Some(15),
};
/// The native backend's options: every list a set, no limit on a port list.
const NATIVE: PlanOptions = PlanOptions {
    max_listed_networks: 0,
    max_port_rules: 1,
    port_list_slots: None,
};

#[test]
fn each_backend_says_what_its_matches_hold() {
    use crate::backend::{BackendKind, by_kind};
    for kind in [BackendKind::IptablesNft, BackendKind::IptablesLegacy] {
        assert_eq!(by_kind(kind).plan_options(), IPTABLES, "{kind}");
    }
    assert_eq!(by_kind(BackendKind::Nftables).plan_options(), NATIVE);
}

#[test]
fn the_seed_gives_the_app_mesh_rules_for_ipv4() {
    let ruleset = plan(&seed(), Family::Ipv4, IPTABLES);
    assert_eq!(ruleset.family, Family::Ipv4);
    assert_eq!(ruleset.chains, vec![INGRESS_CHAIN, EGRESS_CHAIN]);
    assert_eq!(
        spelled(&ruleset.rules),
        vec![
            "APPMESH_INGRESS: tcp dport=9080 => redirect :15000",
            "APPMESH_EGRESS: uid=1337 => return",
            "APPMESH_EGRESS: tcp dport=5432,22 => return",
            "APPMESH_EGRESS: daddr=203.0.113.9/32 tcp => return",
            "APPMESH_EGRESS: daddr=10.9.0.0/16 tcp => return",
            "APPMESH_EGRESS: daddr=169.254.170.2/32 tcp => return",
            "APPMESH_EGRESS: daddr=169.254.169.254/32 tcp => return",
            "APPMESH_EGRESS: daddr=169.254.170.23/32 tcp => return",
            "APPMESH_EGRESS: tcp => redirect :15001",
        ]
    );
    assert_eq!(
        spelled(&ruleset.jumps),
        vec![
            "PREROUTING: tcp saddr-local=false => APPMESH_INGRESS",
            "OUTPUT: tcp daddr-local=false => APPMESH_EGRESS",
        ]
    );
    assert!(ruleset.sets.is_empty());
}

#[test]
fn ipv6_gets_only_ipv6_destinations_and_the_same_ports() {
    let ruleset = plan(&seed(), Family::Ipv6, IPTABLES);
    assert_eq!(ruleset.family, Family::Ipv6);
    assert_eq!(
        spelled(&ruleset.rules),
        vec![
            "APPMESH_INGRESS: tcp dport=9080 => redirect :15000",
            "APPMESH_EGRESS: uid=1337 => return",
            "APPMESH_EGRESS: tcp dport=5432,22 => return",
            "APPMESH_EGRESS: daddr=fd00:ec2::23/128 tcp => return",
            "APPMESH_EGRESS: daddr=fd00:ec2::254/128 tcp => return",
            "APPMESH_EGRESS: tcp => redirect :15001",
        ]
    );
    assert_eq!(ruleset.jumps, plan(&seed(), Family::Ipv4, IPTABLES).jumps);
}

#[test]
fn an_ipv6_destination_is_planned_for_ipv6_only() {
    let config = egress_only(&[("APPMESH_EGRESS_IGNORED_IP", "2001:db8:ff:1::/64")]);
    let v4 = spelled(&plan(&config, Family::Ipv4, IPTABLES).rules);
    let v6 = spelled(&plan(&config, Family::Ipv6, IPTABLES).rules);
    let network = "APPMESH_EGRESS: daddr=2001:db8:ff:1::/64 tcp => return".to_owned();
    assert!(!v4.contains(&network), "{v4:?}");
    assert_eq!(v6[2], network, "after uid and ports: {v6:?}");
}

#[test]
fn ipv6_off_plans_an_empty_ipv6_ruleset_and_leaves_ipv4_alone() {
    let mut config = seed();
    let ipv4 = plan(&config, Family::Ipv4, IPTABLES);
    config.ipv6 = Ipv6Mode::Off;
    assert_eq!(
        plan(&config, Family::Ipv6, IPTABLES),
        Ruleset::empty(Family::Ipv6)
    );
    assert_eq!(plan(&config, Family::Ipv4, IPTABLES), ipv4);
}

#[test]
fn egress_only_has_no_ingress_chain_and_no_prerouting_jump() {
    let ruleset = plan(&egress_only(&[]), Family::Ipv4, IPTABLES);
    assert_eq!(ruleset.chains, vec![EGRESS_CHAIN]);
    assert_eq!(
        spelled(&ruleset.rules),
        vec![
            "APPMESH_EGRESS: uid=1337 => return",
            "APPMESH_EGRESS: tcp dport=22 => return",
            "APPMESH_EGRESS: daddr=169.254.170.2/32 tcp => return",
            "APPMESH_EGRESS: daddr=169.254.169.254/32 tcp => return",
            "APPMESH_EGRESS: daddr=169.254.170.23/32 tcp => return",
            "APPMESH_EGRESS: tcp => redirect :15001",
        ]
    );
    assert_eq!(
        spelled(&ruleset.jumps),
        vec!["OUTPUT: tcp daddr-local=false => APPMESH_EGRESS"]
    );
}

#[test]
fn a_gid_alone_gives_one_gid_return_and_no_uid_rule() {
    let gid_only = config(&[
        ("APPMESH_ENVOY_EGRESS_PORT", "15001"),
        ("APPMESH_IGNORE_GID", "1338"),
    ]);
    let ruleset = plan(&gid_only, Family::Ipv4, IPTABLES);
    assert_eq!(
        ruleset.rules[0].to_string(),
        "APPMESH_EGRESS: gid=1338 => return"
    );
    assert_eq!(
        ruleset
            .rules
            .iter()
            .filter(|r| r
                .matches
                .iter()
                .any(|m| matches!(m, Match::OwnerUid(_) | Match::OwnerGid(_))))
            .count(),
        1
    );
}

#[test]
fn uid_comes_before_gid() {
    let ruleset = plan(
        &egress_only(&[
            ("APPMESH_IGNORE_UID", "1337"),
            ("APPMESH_IGNORE_GID", "1338"),
        ]),
        Family::Ipv4,
        IPTABLES,
    );
    assert_eq!(
        spelled(&ruleset.rules[..2]),
        vec![
            "APPMESH_EGRESS: uid=1337 => return",
            "APPMESH_EGRESS: gid=1338 => return"
        ]
    );
}

#[test]
fn port_ranges_keep_their_order_and_take_two_multiport_slots() {
    // 14 single ports take 14 of a list's 15 slots; the range needs two, so it opens a
    // second list, which port 22 (always ignored, last) joins.
    let config = egress_only(&[(
        "APPMESH_EGRESS_IGNORED_PORTS",
        "5000,5001,5002,5003,5004,5005,5006,5007,5008,5009,5010,5011,5012,5013,6000-6010",
    )]);
    let ruleset = plan(&config, Family::Ipv4, IPTABLES);
    assert_eq!(
        spelled(&ruleset.rules[1..3]),
        vec![
            "APPMESH_EGRESS: tcp dport=5000,5001,5002,5003,5004,5005,5006,5007,5008,5009,5010,5011,5012,5013 => return",
            "APPMESH_EGRESS: tcp dport=6000:6010,22 => return",
        ]
    );
}

#[test]
fn app_port_ranges_are_redirected_as_ranges() {
    let config = config(&[
        ("APPMESH_ENVOY_INGRESS_PORT", "15000"),
        ("APPMESH_ENVOY_EGRESS_PORT", "15001"),
        ("APPMESH_APP_PORTS", "8000-8080,9443"),
        ("APPMESH_IGNORE_UID", "1337"),
    ]);
    let ruleset = plan(&config, Family::Ipv4, IPTABLES);
    assert_eq!(
        ruleset.rules[0].to_string(),
        "APPMESH_INGRESS: tcp dport=8000:8080,9443 => redirect :15000"
    );
}

#[test]
fn more_port_lists_than_allowed_become_one_set_of_merged_ports() {
    // 70 single ports (and 22) need five 15-slot lists: more than four, so a set.
    let ports: Vec<String> = (5000..5070).map(|p| p.to_string()).collect();
    let ports = ports.join(",");
    let config = egress_only(&[("APPMESH_EGRESS_IGNORED_PORTS", &ports)]);
    let ruleset = plan(&config, Family::Ipv4, IPTABLES);
    assert_eq!(ruleset.sets.len(), 1);
    let set = &ruleset.sets[0];
    assert_eq!(set.family, Family::Ipv4);
    assert_eq!(
        set.members,
        SetMembers::Ports(vec![
            PortRange::single(22),
            PortRange {
                first: 5000,
                last: 5069
            }
        ])
    );
    assert_eq!(
        ruleset.rules[1].to_string(),
        format!("APPMESH_EGRESS: tcp dst@{} => return", set.name)
    );
    assert_eq!(
        ruleset.rules.len(),
        1 + 1 + 3 + 1,
        "uid, the set, three metadata IPs, redirect"
    );

    // Four lists stay lists.
    let ports: Vec<String> = (5000..5059).map(|p| p.to_string()).collect();
    let ports = ports.join(",");
    let config = egress_only(&[("APPMESH_EGRESS_IGNORED_PORTS", &ports)]);
    let ruleset = plan(&config, Family::Ipv4, IPTABLES);
    assert!(ruleset.sets.is_empty());
    assert_eq!(
        ruleset
            .rules
            .iter()
            .filter(|r| r
                .matches
                .iter()
                .any(|m| matches!(m, Match::DestinationPorts(_))))
            .count(),
        4
    );
}

#[test]
fn more_networks_than_allowed_become_one_aggregated_set_per_family() {
    // 40 /24s that aggregate into five /21s.
    let networks: Vec<String> = (0..40).map(|i| format!("10.0.{i}.0/24")).collect();
    let networks = networks.join(",");
    let config = egress_only(&[("APPMESH_EGRESS_IGNORED_IP", &networks)]);
    let ruleset = plan(&config, Family::Ipv4, IPTABLES);
    assert_eq!(ruleset.sets.len(), 1);
    let SetMembers::Networks(Networks::V4(nets)) = &ruleset.sets[0].members else {
        panic!("expected an IPv4 network set: {:?}", ruleset.sets[0]);
    };
    let spelled_nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
    assert_eq!(
        spelled_nets,
        vec![
            "10.0.0.0/19",
            "10.0.32.0/21",
            "169.254.169.254/32",
            "169.254.170.2/32",
            "169.254.170.23/32"
        ]
    );
    // IPv6 has only the two always-ignored addresses: listed, no set.
    let v6 = plan(&config, Family::Ipv6, IPTABLES);
    assert!(v6.sets.is_empty());
}

#[test]
fn always_ignored_port_and_metadata_addresses_are_in_every_plan() {
    for config in [seed(), egress_only(&[])] {
        for family in Family::BOTH {
            let rules = spelled(&plan(&config, family, IPTABLES).rules);
            assert!(
                rules
                    .iter()
                    .any(|r| r.starts_with("APPMESH_EGRESS: tcp dport=")
                        && r.contains("22 => return")),
                "{family}: {rules:?}"
            );
            for ip in ALWAYS_IGNORED_IPS {
                let same_family = ip.contains(':') == (family == Family::Ipv6);
                let prefix = if same_family && family == Family::Ipv6 {
                    128
                } else {
                    32
                };
                let rule = format!("APPMESH_EGRESS: daddr={ip}/{prefix} tcp => return");
                assert_eq!(
                    rules.contains(&rule),
                    same_family,
                    "{family} {ip}: {rules:?}"
                );
            }
        }
    }
}

#[test]
fn without_a_port_list_limit_all_ports_go_in_one_match() {
    let config = egress_only(&[(
        "APPMESH_EGRESS_IGNORED_PORTS",
        "5000,5001,5002,5003,5004,5005,5006,5007,5008,5009,5010,5011,5012,6000-6010",
    )]);
    let options = PlanOptions {
        port_list_slots: None,
        ..IPTABLES
    };
    let ruleset = plan(&config, Family::Ipv4, options);
    assert_eq!(
        ruleset.rules[1].to_string(),
        "APPMESH_EGRESS: tcp dport=5000,5001,5002,5003,5004,5005,5006,5007,5008,5009,5010,5011,5012,6000:6010,22 => return"
    );
}

#[test]
fn the_native_options_put_every_list_in_a_set() {
    let ruleset = plan(&seed(), Family::Ipv4, NATIVE);
    assert_eq!(ruleset.sets.len(), 1, "{:?}", ruleset.sets);
    let names: Vec<&str> = ruleset.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        spelled(&ruleset.rules),
        vec![
            "APPMESH_INGRESS: tcp dport=9080 => redirect :15000".to_owned(),
            "APPMESH_EGRESS: uid=1337 => return".to_owned(),
            "APPMESH_EGRESS: tcp dport=5432,22 => return".to_owned(),
            format!("APPMESH_EGRESS: tcp dst@{} => return", names[0]),
            "APPMESH_EGRESS: tcp => redirect :15001".to_owned(),
        ]
    );
}

#[test]
fn set_names_follow_their_content() {
    let one = egress_only(&[("APPMESH_EGRESS_IGNORED_IP", "10.1.0.0/16")]);
    let other = egress_only(&[("APPMESH_EGRESS_IGNORED_IP", "10.2.0.0/16")]);
    let name = |config: &ProxyConfig| plan(config, Family::Ipv4, NATIVE).sets[0].name.clone();
    assert_eq!(name(&one), name(&one.clone()));
    assert_ne!(name(&one), name(&other));
}

#[test]
fn overlapping_and_adjacent_port_ranges_merge_for_a_set() {
    let r = |first, last| PortRange { first, last };
    assert_eq!(
        merged_ports(&[
            r(1005, 1020),
            r(1000, 1010),
            r(1021, 1021),
            r(22, 22),
            r(2000, 2001)
        ]),
        vec![r(22, 22), r(1000, 1021), r(2000, 2001)]
    );
}

/// The include list's rules and sets for `networks` (the proxy's user 1337, port 15001).
fn included(networks: &[String], options: PlanOptions) -> Ruleset {
    let mut c = egress_only(&[]);
    let mut list = crate::config::mesh::IncludedDestinations::default();
    for net in networks {
        match net.parse().expect("a network") {
            IpNet::V4(n) => list.ipv4.push(n),
            IpNet::V6(n) => list.ipv6.push(n),
        }
    }
    c.mesh.egress_included = Some(list);
    plan(&c, Family::Ipv4, options)
}

fn redirects(ruleset: &Ruleset) -> Vec<&Rule> {
    ruleset
        .rules
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Redirect(15001)))
        .collect()
}

#[test]
fn an_include_list_longer_than_the_threshold_is_one_set_lookup() {
    let nets = |n: usize| -> Vec<String> { (0..n).map(|i| format!("10.{i}.0.0/16")).collect() };
    // At the threshold: one rule per network, no set.
    let at = included(&nets(32), IPTABLES);
    assert_eq!(redirects(&at).len(), 32);
    assert!(at.sets.is_empty());
    // One over: one rule, its set holding the list merged.
    let over = included(&nets(33), IPTABLES);
    let rules = redirects(&over);
    assert_eq!(rules.len(), 1);
    let [set] = over.sets.as_slice() else {
        panic!("one set: {:?}", over.sets)
    };
    assert_eq!(set.purpose, SetPurpose::Included);
    assert!(
        set.name.starts_with("APPMESH_INCLUDED_NET4_"),
        "{}",
        set.name
    );
    assert_eq!(
        rules[0].matches,
        vec![Match::Tcp, Match::DestinationInSet(set.name.clone())]
    );
    // Adjacent /16s merge: 10.0.0.0/16 .. 10.32.0.0/16 is 10.0.0.0/11 and 10.32.0.0/16.
    assert_eq!(set.members.len(), 2);
    // The exclusions still come first.
    let first_redirect = over.rules.iter().position(|r| r == rules[0]).unwrap();
    assert!(
        over.rules[..first_redirect]
            .iter()
            .any(|r| r.verdict == Verdict::Return)
    );
    // A whole family among them is no address test: one rule, no set.
    let mut whole = nets(40);
    whole.push("0.0.0.0/0".into());
    let whole = included(&whole, IPTABLES);
    assert_eq!(
        spelled(&redirects(&whole).into_iter().cloned().collect::<Vec<_>>()).len(),
        1
    );
    assert!(whole.sets.is_empty());
    // Natively every list of networks is a set, as ignored ones are.
    let native = included(&nets(1), NATIVE);
    assert_eq!(redirects(&native).len(), 1);
    assert!(
        native
            .sets
            .iter()
            .any(|s| s.purpose == SetPurpose::Included)
    );
}

#[test]
fn without_an_include_list_no_included_set_is_planned() {
    for options in [IPTABLES, NATIVE] {
        let ruleset = plan(&seed(), Family::Ipv4, options);
        assert!(
            ruleset
                .sets
                .iter()
                .all(|s| s.purpose == SetPurpose::Ignored)
        );
    }
}
