//! The native nf_tables core (`meshinit::nftables`) against the real kernel, in namespaces
//! the tests create. The `nft` program is the independent observer (`nft -j list table`),
//! real connections prove the semantics. Needs root (skips outside CI without it; fails
//! in CI). The library runs on a thread that entered the namespace (`run_inside`).

mod common;

use std::time::{Duration, Instant};

use common::scene::Scene;
use common::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use meshinit::backend::nftables::{ActiveFamilies, TABLE_NAME, plan_table, render_table};
use meshinit::config::{
    IgnoredDestinations, IngressConfig, Ipv6Mode, PortList, PortRange, ProxyConfig,
    sources::env::parse_env, validate,
};
use meshinit::ruleset::{Family, Match, plan};
use nftables_netlink::model::{KeyRange, KeyType, Set};
use nftables_netlink::{
    BatchOutcome, Change, CommitReport, Deletion, NftConnection, NftError, Table, TableFamily,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;

/// The seed configuration of nftables-facts.md.
const SEED_ENV: &str = "APPMESH_IGNORE_UID=1337
APPMESH_ENVOY_INGRESS_PORT=15000
APPMESH_ENVOY_EGRESS_PORT=15001
APPMESH_APP_PORTS=9080
APPMESH_ENABLE_IPV6=1";

/// What `nft -f` makes of the seed ruleset, written as nft would: the observer's reference.
/// (Hash sets are declared with their size, as meshinit sends them: see `encode::new_set`.)
const SEED_NFT: &str = "table inet meshinit {
  set ignored_ipv4 { type ipv4_addr; size 3; elements = { 169.254.170.2, 169.254.169.254, 169.254.170.23 }; }
  set ignored_ipv6 { type ipv6_addr; size 2; elements = { fd00:ec2::23, fd00:ec2::254 }; }
  chain output { type nat hook output priority -100; policy accept;
    meta l4proto != tcp return; fib daddr type local return; meta skuid 1337 return;
    tcp dport 22 return; ip daddr @ignored_ipv4 return; ip6 daddr @ignored_ipv6 return;
    meta l4proto tcp redirect to :15001; }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    fib saddr type local return; tcp dport 9080 redirect to :15000; }
}
";

const TRAFFIC_ENV: &str = include_str!("configs/traffic.env");

fn config_from_env(text: &str) -> ProxyConfig {
    let vars = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.into(), v.into()));
    validate(&parse_env(vars).expect("valid variables"))
        .expect("valid config")
        .0
}

fn connection() -> NftConnection {
    NftConnection::open().unwrap_or_else(|e| panic!("cannot open nf_tables netlink: {e}"))
}

fn commit_in(ns: &TestNetns, table: &Table) -> CommitReport {
    ns.run_inside(|| {
        connection()
            .commit(table)
            .unwrap_or_else(|e| panic!("commit failed: {e}"))
    })
}

fn read_in(ns: &TestNetns) -> Option<Table> {
    ns.run_inside(|| {
        connection()
            .read_table(TABLE_NAME)
            .unwrap_or_else(|e| panic!("read failed: {e}"))
            .table
    })
}

/// `nft -j list table inet meshinit` without metainfo and handles (which differ between
/// namespaces), as a JSON value.
fn nft_json(ns: &TestNetns) -> Value {
    let text = ns.run_checked("nft", &["-j", "list", "table", "inet", TABLE_NAME]);
    let mut json: Value = serde_json::from_str(&text).expect("nft -j prints JSON");
    let items = json["nftables"].as_array_mut().expect("nftables array");
    items.retain(|item| item.get("metainfo").is_none());
    for item in items.iter_mut() {
        if let Some(object) = item.as_object_mut().and_then(|o| o.values_mut().next()) {
            object.as_object_mut().map(|o| o.remove("handle"));
        }
    }
    json
}

/// The elements of set NAME as nft reports them, as inclusive key ranges.
fn nft_set_ranges(json: &Value, name: &str, key: KeyType) -> Vec<KeyRange> {
    let set = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|item| item.get("set").filter(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("nft lists no set {name}: {json}"));
    let parse_key = |v: &Value| -> u128 {
        match key {
            KeyType::InetService => v.as_u64().expect("port number") as u128,
            KeyType::Ipv4Addr => {
                u32::from(v.as_str().unwrap().parse::<std::net::Ipv4Addr>().unwrap()) as u128
            }
            KeyType::Ipv6Addr => {
                u128::from(v.as_str().unwrap().parse::<std::net::Ipv6Addr>().unwrap())
            }
        }
    };
    let Some(elements) = set.get("elem").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut ranges: Vec<KeyRange> = elements
        .iter()
        .map(|element| {
            if let Some(prefix) = element.get("prefix") {
                let net: IpNet = format!("{}/{}", prefix["addr"].as_str().unwrap(), prefix["len"])
                    .parse()
                    .unwrap();
                match net {
                    IpNet::V4(n) => KeyRange::from_ipv4_net(n),
                    IpNet::V6(n) => KeyRange::from_ipv6_net(n),
                }
            } else if let Some(range) = element.get("range") {
                KeyRange {
                    first: parse_key(&range[0]),
                    last: parse_key(&range[1]),
                }
            } else {
                KeyRange::single(parse_key(element))
            }
        })
        .collect();
    ranges.sort();
    ranges
}

#[test]
fn seed_table_equals_what_nft_makes_of_the_same_ruleset() {
    if !require_root() {
        return;
    }
    let ours = TestNetns::new("nft-ours");
    let table = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Both);
    assert_eq!(commit_in(&ours, &table).change, Change::Created);

    let reference = TestNetns::new("nft-ref");
    reference.run_checked_with_stdin("nft", &["-f", "-"], SEED_NFT);
    assert_eq!(
        nft_json(&ours),
        nft_json(&reference),
        "nft lists our table differently from the reference ruleset:\n{}",
        ours.run_checked("nft", &["list", "ruleset"])
    );
    // What nft wrote decodes into the very model we planned.
    assert_eq!(read_in(&reference), Some(table));
}

#[test]
fn ipv4_only_table_equals_nft_reference_too() {
    if !require_root() {
        return;
    }
    let ours = TestNetns::new("nft-ours4");
    let table = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Ipv4Only);
    commit_in(&ours, &table);
    let reference = TestNetns::new("nft-ref4");
    let text = SEED_NFT
        .replace(
            "  set ignored_ipv6 { type ipv6_addr; size 2; elements = { fd00:ec2::23, fd00:ec2::254 }; }\n",
            "",
        )
        .replace(" ip6 daddr @ignored_ipv6 return;", "")
        .replace(
            "policy accept;\n",
            "policy accept;\n    meta nfproto ipv6 return;",
        );
    reference.run_checked_with_stdin("nft", &["-f", "-"], &text);
    assert_eq!(nft_json(&ours), nft_json(&reference));
}

#[test]
fn traffic_follows_the_config_over_ipv4_and_ipv6() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let table = plan_table(&config_from_env(TRAFFIC_ENV), ActiveFamilies::Both);
    commit_in(&scene.net.app, &table);
    scene.assert_configured_traffic_in(true);
}

/// The renderer takes any ruleset of the one model, not only the shapes the native
/// backend's own plan options produce: planned as for iptables (short lists as one rule per
/// network, including a /25 that needs a prefix mask, ports split over several rules), the
/// table it renders routes the same.
#[test]
fn rulesets_planned_as_for_iptables_render_to_the_same_traffic() {
    if !require_root() {
        return;
    }
    let config = config_from_env(TRAFFIC_ENV);
    let options = meshinit::backend::iptables::render::PLAN_OPTIONS;
    let (v4, v6) = (
        plan(&config, Family::Ipv4, options),
        plan(&config, Family::Ipv6, options),
    );
    let network_rules = v4
        .rules
        .iter()
        .filter(|r| {
            r.matches
                .iter()
                .any(|m| matches!(m, Match::DestinationNetwork(_)))
        })
        .count();
    let port_rules = v4
        .rules
        .iter()
        .filter(|r| {
            r.matches
                .iter()
                .any(|m| matches!(m, Match::DestinationPorts(_)))
        })
        .count();
    assert!(network_rules >= 2 && port_rules >= 2, "{v4:#?}");
    let table = render_table(&v4, Some(&v6));
    // Each port list is one set; networks stay one rule each.
    let names: Vec<&str> = table.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["app_ports", "ignored_ports", "ignored_ports_2"]);

    let scene = Scene::new();
    commit_in(&scene.net.app, &table);
    let listed = scene
        .net
        .app
        .run_checked("nft", &["list", "table", "inet", TABLE_NAME]);
    assert!(
        listed.contains("ip daddr 203.0.113.128/25 return"),
        "{listed}"
    );
    scene.assert_configured_traffic_in(true);
}

#[test]
fn ipv4_only_table_leaves_ipv6_traffic_alone() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let table = plan_table(&config_from_env(TRAFFIC_ENV), ActiveFamilies::Ipv4Only);
    commit_in(&scene.net.app, &table);
    scene.assert_configured_traffic_in(false);
}

#[test]
fn committing_the_same_table_again_sends_nothing() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-idem");
    let table = plan_table(&config_from_env(TRAFFIC_ENV), ActiveFamilies::Both);
    assert_eq!(commit_in(&ns, &table).change, Change::Created);
    let handles_before = ns.run_checked("nft", &["-a", "list", "table", "inet", TABLE_NAME]);
    let (genid_before, report, genid_after) = ns.run_inside(|| {
        let mut c = connection();
        let before = c.generation().unwrap();
        let report = c.commit(&table).unwrap();
        (before, report, c.generation().unwrap())
    });
    assert_eq!(report.change, Change::Unchanged);
    assert_eq!(genid_before, genid_after, "a transaction was committed");
    assert_eq!(
        handles_before,
        ns.run_checked("nft", &["-a", "list", "table", "inet", TABLE_NAME])
    );
}

#[test]
fn a_different_table_is_replaced_in_one_transaction() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-repl");
    let first = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Both);
    let second = plan_table(&config_from_env(TRAFFIC_ENV), ActiveFamilies::Both);
    commit_in(&ns, &first);
    let (genid_before, report, genid_after) = ns.run_inside(|| {
        let mut c = connection();
        let before = c.generation().unwrap();
        let report = c.commit(&second).unwrap();
        (before, report, c.generation().unwrap())
    });
    assert_eq!(report.change, Change::Replaced);
    assert_eq!(
        genid_after,
        genid_before.wrapping_add(1),
        "not one transaction"
    );
    assert_eq!(read_in(&ns), Some(second));
    let listed = ns.run_checked("nft", &["list", "table", "inet", TABLE_NAME]);
    assert!(listed.contains("@app_ports redirect to :15000"), "{listed}");
}

#[test]
fn a_batch_planned_on_a_stale_generation_is_refused_and_commit_retries() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-genid");
    let table = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Both);
    ns.run_inside(|| {
        let mut c = connection();
        let stale = c.generation().unwrap();
        // Another writer (nft, a child process of this thread, so in this namespace).
        let status = std::process::Command::new("nft")
            .args(["add", "table", "ip", "intruder"])
            .status()
            .unwrap();
        assert!(status.success());
        let outcome = c
            .send(stale, |batch| batch.add_table(&table))
            .expect("a stale batch is not an error");
        assert!(matches!(outcome, BatchOutcome::Stale), "{outcome:?}");
        assert_eq!(
            c.read_table(TABLE_NAME).unwrap().table,
            None,
            "stale batch applied"
        );

        // commit: the writer strikes between the first read and its batch; the second
        // attempt reads afresh and succeeds.
        let report = c
            .commit_observed(&table, |attempt| {
                if attempt == 1 {
                    let status = std::process::Command::new("nft")
                        .args(["add", "table", "ip", "intruder2"])
                        .status()
                        .unwrap();
                    assert!(status.success());
                }
            })
            .unwrap();
        assert_eq!(
            report,
            CommitReport {
                change: Change::Created,
                attempts: 2
            }
        );
        // A writer that never stops: retries until the deadline, then a typed error.
        c.retry_until(Instant::now() + Duration::from_millis(300));
        let mut n = 0;
        let error = c
            .commit_observed(
                &plan_table(&config_from_env(TRAFFIC_ENV), ActiveFamilies::Both),
                |_| {
                    n += 1;
                    let status = std::process::Command::new("nft")
                        .args(["add", "table", "ip", &format!("busy{n}")])
                        .status()
                        .unwrap();
                    assert!(status.success());
                },
            )
            .unwrap_err();
        assert!(
            matches!(error, NftError::GenerationChanged { attempts, .. } if attempts == n),
            "{error}"
        );
        assert!(n >= 5, "at least 5 attempts whatever the deadline: {n}");
        assert!(
            error.to_string().contains("another program kept changing"),
            "{error}"
        );
        let said = meshinit::backend::netfilter::kernel_error(error).to_string();
        assert!(
            said.contains("another program kept changing") && said.contains("--lock-timeout"),
            "{said}"
        );
    });
    assert_eq!(
        read_in(&ns),
        Some(table),
        "the failed commits changed the table"
    );
}

#[test]
fn delete_table_is_idempotent() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-del");
    let table = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Both);
    ns.run_inside(|| {
        let mut c = connection();
        assert_eq!(c.delete_table(TABLE_NAME).unwrap(), Deletion::WasAbsent);
        c.commit(&table).unwrap();
        assert_eq!(c.delete_table(TABLE_NAME).unwrap(), Deletion::Deleted);
        assert_eq!(c.delete_table(TABLE_NAME).unwrap(), Deletion::WasAbsent);
    });
    assert_eq!(ns.run_checked("nft", &["list", "tables"]).trim(), "");
}

#[test]
fn without_cap_net_admin_the_error_says_permission_denied() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-perm");
    let table = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Both);
    let error = ns.run_inside(|| {
        // SAFETY: plain syscall on this (short-lived) thread only.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 1000, 1000, 1000) };
        assert_eq!(rc, 0);
        NftConnection::open()
            .and_then(|mut c| c.commit(&table))
            .unwrap_err()
    });
    assert!(
        matches!(error, NftError::PermissionDenied { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("CAP_NET_ADMIN"), "{error}");
    assert_eq!(read_in(&ns), None);
}

#[test]
fn iptables_nft_rules_are_listed_with_handles_and_deleted_in_our_batch() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-migr");
    ns.run_checked_with_stdin(
        "iptables-nft-restore",
        &[],
        "*nat\n:APPMESH_EGRESS - [0:0]\n-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001\n\
         -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS\n\
         -A OUTPUT -p udp -j RETURN\nCOMMIT\n",
    );
    let table = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Both);
    ns.run_inside(|| {
        let mut c = connection();
        let genid = c.generation().unwrap();
        let rules = c.dump_rules(TableFamily::Ipv4, "nat").unwrap().unwrap();
        let chains = c
            .dump_chains(TableFamily::Ipv4, Some("nat"))
            .unwrap()
            .unwrap();
        // The jump into APPMESH_EGRESS (a compat `addrtype` match and an immediate jump).
        let jump = rules
            .iter()
            .find(|r| {
                r.chain == "OUTPUT"
                    && r.rule.exprs.iter().any(|e| {
                        matches!(e, nftables_netlink::model::Expr::Immediate {
                            data: nftables_netlink::model::ImmediateData::Verdict(
                                nftables_netlink::model::Verdict::Jump(target)),
                            ..
                        } if target == "APPMESH_EGRESS")
                    })
            })
            .expect("jump rule listed");
        let own: Vec<_> = rules
            .iter()
            .filter(|r| r.chain == "APPMESH_EGRESS")
            .collect();
        assert_eq!(own.len(), 1);
        let chain = chains.iter().find(|c| c.name == "APPMESH_EGRESS").unwrap();
        let outcome = c
            .send(genid, |batch| {
                batch.delete_rule(TableFamily::Ipv4, "nat", "OUTPUT", jump.handle);
                batch.delete_rule(TableFamily::Ipv4, "nat", "APPMESH_EGRESS", own[0].handle);
                batch.delete_chain(TableFamily::Ipv4, "nat", chain.handle);
                batch.add_table(&table);
            })
            .unwrap();
        assert!(matches!(outcome, BatchOutcome::Committed));
    });
    let saved = ns.run_checked("iptables-nft-save", &["-t", "nat"]);
    assert!(!saved.contains("APPMESH"), "{saved}");
    assert!(saved.contains("-A OUTPUT -p udp -j RETURN"), "{saved}");
    assert_eq!(read_in(&ns), Some(table));
}

#[test]
fn a_refused_message_is_named_and_nothing_is_applied() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-refuse");
    let table = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Both);
    let error = ns.run_inside(|| {
        let mut c = connection();
        let genid = c.generation().unwrap();
        // Deleting a rule that does not exist fails the whole batch.
        c.send(genid, |batch| {
            batch.add_table(&table);
            batch.delete_rule(TableFamily::Inet, TABLE_NAME, "output", 999_999);
        })
        .unwrap_err()
    });
    match &error {
        NftError::Refused { message, source } => {
            assert!(
                message.contains("delete rule inet meshinit output handle 999999"),
                "{error}"
            );
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(read_in(&ns), None, "a refused batch left something behind");
}

// ---- round trip over generated configurations ----

fn port_range() -> impl Strategy<Value = PortRange> + Clone {
    prop_oneof![
        (1u16..=65535).prop_map(PortRange::single),
        (1u16..=65535, 0u16..2000).prop_map(|(first, len)| PortRange {
            first,
            last: first.saturating_add(len),
        }),
    ]
}

fn ipv4_net() -> impl Strategy<Value = IpNet> + Clone {
    prop_oneof![
        any::<u32>().prop_map(|a| IpNet::V4(Ipv4Net::new(a.into(), 32).unwrap())),
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(a.into(), len).unwrap().trunc())),
    ]
}

fn ipv6_net() -> impl Strategy<Value = IpNet> + Clone {
    prop_oneof![
        any::<u128>().prop_map(|a| IpNet::V6(Ipv6Net::new(a.into(), 128).unwrap())),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(a.into(), len).unwrap().trunc())),
    ]
}

/// Sizes spread over 0..N with a bias to the small end and some in the thousands.
fn sized<T: std::fmt::Debug>(
    element: impl Strategy<Value = T> + Clone,
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![
        prop::collection::vec(element.clone(), 0..8),
        prop::collection::vec(element.clone(), 0..200),
        prop::collection::vec(element, 0..max),
    ]
}

fn generated_config() -> impl Strategy<Value = (ProxyConfig, bool)> {
    (
        sized(port_range(), 600),
        sized(port_range(), 600),
        sized(ipv4_net(), 4000),
        sized(ipv6_net(), 3000),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(app, ignored, v4, v6, uid, gid, ingress, both)| {
            let mut ignored = PortList::from_ranges(ignored);
            ignored.push(PortRange::single(22));
            let app = PortList::from_ranges(app);
            let config = ProxyConfig {
                ignored_uid: uid,
                ignored_gid: gid,
                proxy_egress_port: 15001,
                ingress: (ingress && !app.is_empty()).then_some(IngressConfig {
                    proxy_port: 15000,
                    app_ports: app,
                }),
                egress_ignored_ports: ignored,
                egress_ignored_destinations: IgnoredDestinations::from_networks(
                    v4.into_iter().chain(v6),
                ),
                ipv6: Ipv6Mode::Auto,
                mesh: Default::default(),
                verify: false,
            };
            (config, both)
        })
}

/// Commits `table`, reads it back over netlink and through `nft -j`: both equal the model.
fn assert_round_trip(ns: &TestNetns, table: &Table) {
    commit_in(ns, table);
    let read = read_in(ns).expect("table present");
    assert_eq!(read.chains, table.chains);
    assert_eq!(read.sets.len(), table.sets.len());
    let json = nft_json(ns);
    for (ours, theirs) in table.sets.iter().zip(&read.sets) {
        assert_eq!(
            ours, theirs,
            "set {} differs after the round trip",
            ours.name
        );
        assert_eq!(
            nft_set_ranges(&json, &ours.name, ours.key),
            ours.elements(),
            "nft sees set {} differently",
            ours.name
        );
    }
}

#[test]
fn generated_tables_round_trip_through_the_kernel() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-prop");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        rng_seed: proptest_seed(),
        ..ProptestConfig::default()
    });
    runner
        .run(&generated_config(), |(config, both)| {
            let families = if both {
                ActiveFamilies::Both
            } else {
                ActiveFamilies::Ipv4Only
            };
            assert_round_trip(&ns, &plan_table(&config, families));
            Ok(())
        })
        .unwrap();
}

#[test]
fn ranges_at_the_ends_of_the_key_space_round_trip() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-edge");
    let mut config = config_from_env(SEED_ENV);
    for net in [
        "0.0.0.0/1",
        "255.255.255.0/24",
        "10.0.0.0/8",
        "11.0.0.0/8",
        "::/1",
        "ffff::/16",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
    ] {
        config
            .egress_ignored_destinations
            .push(net.parse::<IpNet>().unwrap());
    }
    config.egress_ignored_ports = PortList::from_ranges([
        PortRange {
            first: 1,
            last: 100,
        },
        PortRange::single(22),
        PortRange {
            first: 65000,
            last: 65535,
        },
    ]);
    let table = plan_table(&config, ActiveFamilies::Both);
    assert_round_trip(&ns, &table);
    // Everything ignored: one range covering the whole key space.
    config.egress_ignored_destinations =
        IgnoredDestinations::from_networks(["0.0.0.0/0", "::/0"].map(|n| n.parse().unwrap()));
    assert_round_trip(&ns, &plan_table(&config, ActiveFamilies::Both));
    let all = Set::ipv4_networks("x", &["0.0.0.0/0".parse().unwrap()]);
    assert_eq!(
        all.elements(),
        &[KeyRange {
            first: 0,
            last: 0xffff_ffff
        }]
    );
}

/// Drift compares the snapshot it is given: status reads the table once, and a change after
/// that read is the next status's to see. (The native drift used to read the table a second
/// time and ignore the snapshot; then this test saw the deleted table as drift.)
#[test]
fn drift_compares_the_snapshot_it_was_given() {
    use meshinit::backend::{BackendKind, Desired, FamilyPlan, Scope, TimeBudget, by_kind};
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-snapshot");
    let config = config_from_env(SEED_ENV);
    let backend = by_kind(BackendKind::Nftables);
    let budget = TimeBudget::starting_now(Duration::from_secs(30));
    let desired = Desired {
        families: Family::BOTH
            .iter()
            .map(|f| {
                let ruleset = plan(&config, *f, backend.plan_options());
                (*f, FamilyPlan::Program(ruleset))
            })
            .collect(),
        ipv6: config.ipv6,
    };
    let backend = backend.as_ref();
    let drift_now = |snapshot| {
        ns.run_inside(|| backend.drift(snapshot, &desired, &budget))
            .expect("drift")
    };
    let read_now = || {
        ns.run_inside(|| backend.read(Scope::Planned(&desired), &budget))
            .expect("read")
    };
    ns.run_inside(|| backend.converge(&desired, &budget, false))
        .expect("apply");
    let snapshot = read_now();
    assert!(!snapshot.is_clean());
    ns.run_checked("nft", &["delete", "table", "inet", TABLE_NAME]);
    let drift = drift_now(&snapshot);
    assert_eq!(drift.len(), 2);
    assert!(drift.iter().all(|(_, d)| d.is_empty()), "{drift:?}");
    // A new snapshot sees the table gone, in both families.
    let gone = read_now();
    assert!(gone.is_clean());
    let drift = drift_now(&gone);
    assert_eq!(drift.len(), 2);
    assert!(
        drift.iter().all(|(_, d)| !d.missing.is_empty()),
        "{drift:?}"
    );
}

#[test]
fn drift_and_foreign_content_in_our_table_are_seen_and_replaced() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-drift");
    let table = plan_table(&config_from_env(TRAFFIC_ENV), ActiveFamilies::Both);
    commit_in(&ns, &table);
    // Drift: an extra rule and a removed element; status-style comparison sees both.
    ns.run_checked(
        "nft",
        &["insert", "rule", "inet", TABLE_NAME, "output", "counter"],
    );
    ns.run_checked(
        "nft",
        &[
            "delete",
            "element",
            "inet",
            TABLE_NAME,
            "ignored_ports",
            "{ 22 }",
        ],
    );
    let drifted = read_in(&ns).expect("table present");
    assert_ne!(drifted.chain("output"), table.chain("output"));
    assert_eq!(
        drifted.chain("output").unwrap().rules[0].exprs,
        vec![nftables_netlink::model::Expr::Counter]
    );
    assert_ne!(drifted.set("ignored_ports"), table.set("ignored_ports"));
    assert_eq!(commit_in(&ns, &table).change, Change::Replaced);
    assert_eq!(read_in(&ns), Some(table.clone()));

    // Something the model has no words for (a concatenated set key): still replaced.
    ns.run_checked(
        "nft",
        &[
            "add",
            "set",
            "inet",
            TABLE_NAME,
            "odd",
            "{ type ipv4_addr . inet_service; }",
        ],
    );
    assert_eq!(commit_in(&ns, &table).change, Change::Replaced);
    assert_eq!(read_in(&ns), Some(table));
}

#[test]
fn twenty_concurrent_commits_of_two_configs_leave_exactly_one_complete_table() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-race");
    let a = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Both);
    let b = plan_table(&config_from_env(TRAFFIC_ENV), ActiveFamilies::Both);
    let results: Vec<Result<CommitReport, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..20)
            .map(|i| {
                let (ns, table) = (&ns, if i % 2 == 0 { &a } else { &b });
                scope.spawn(move || {
                    ns.run_inside(|| {
                        NftConnection::open()
                            .and_then(|mut c| c.commit(table))
                            .map_err(|e| e.to_string())
                    })
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let final_table = read_in(&ns).expect("a table is installed");
    assert!(final_table == a || final_table == b, "a mixed table");
    for result in &results {
        match result {
            Ok(_) => {}
            // Losing every race is allowed, as a typed error; nothing else is.
            Err(e) => assert!(e.contains("kept changing"), "{e}"),
        }
    }
    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        succeeded >= 10,
        "only {succeeded} of 20 commits succeeded: {results:?}"
    );
    // Exactly one table named meshinit, and nft agrees with our reading.
    let tables = ns.run_checked("nft", &["list", "tables"]);
    assert_eq!(tables.trim(), "table inet meshinit");
}

#[test]
fn commit_racing_delete_ends_with_all_or_nothing() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft-race2");
    let table = plan_table(&config_from_env(TRAFFIC_ENV), ActiveFamilies::Both);
    for _ in 0..5 {
        std::thread::scope(|scope| {
            let committer =
                scope.spawn(|| ns.run_inside(|| connection().commit(&table).map(|_| ())));
            let deleter =
                scope.spawn(|| ns.run_inside(|| connection().delete_table(TABLE_NAME).map(|_| ())));
            committer.join().unwrap().unwrap();
            deleter.join().unwrap().unwrap();
        });
        let installed = read_in(&ns);
        assert!(
            installed.is_none() || installed.as_ref() == Some(&table),
            "neither all nor nothing: {installed:?}"
        );
    }
}

/// Commits to nf_tables in the calling thread's namespace about `per_second` times a second
/// (a table added and deleted: one generation each) until `stop`; returns how many.
fn foreign_writer(per_second: u32, stop: &std::sync::atomic::AtomicBool) -> u32 {
    use std::sync::atomic::Ordering;
    let mut c = connection();
    let table = Table::new("busy_writer", Vec::new(), Vec::new());
    let period = Duration::from_secs(1) / per_second;
    let mut next = Instant::now();
    let mut commits = 0;
    while !stop.load(Ordering::Relaxed) {
        let genid = c.generation().unwrap();
        let outcome = c
            .send(genid, |batch| {
                batch.add_table(&table);
                batch.delete_table(TableFamily::Inet, "busy_writer");
            })
            .unwrap();
        if matches!(outcome, BatchOutcome::Committed) {
            commits += 1;
        }
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    commits
}

#[test]
fn applies_and_status_succeed_under_a_foreign_writer_committing_1000_times_a_second() {
    if !require_root() {
        return;
    }
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let ns = TestNetns::new("nft-busy");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        // A thread started by one inside the namespace is in the namespace too.
        ns.run_inside(move || std::thread::spawn(move || foreign_writer(1000, &stop)))
    };
    let started = Instant::now();
    // Long enough that reading the table back takes longer than the writer's gaps.
    let ips: String = (0..9_000u32)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect::<Vec<_>>()
        .join(",");
    let configs = [
        [
            "--egress-ignored-ports",
            "8080,9090",
            "--egress-ignored-ips",
            &ips,
        ],
        [
            "--egress-ignored-ports",
            "8081-8089",
            "--egress-ignored-ips",
            &ips,
        ],
    ];
    let runs = 30;
    let mut succeeded = 0;
    let mut failures = Vec::new();
    for i in 0..runs {
        let mut args = vec![
            "apply",
            "--backend",
            "nftables",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            // Retries last until the budget runs out. Here an apply needs a few attempts;
            // under an emulated CPU (the VM tests) reading 9,000 elements back takes many
            // writer gaps, so most attempts are overtaken: the budget gives it room.
            "--lock-timeout",
            "60s",
        ];
        args.extend(configs[i % 2]);
        let output = meshinit(&ns, &args);
        if output.status.success() {
            succeeded += 1;
        } else {
            failures.push(stderr(&output));
        }
        args[0] = "status";
        let status = meshinit(&ns, &args);
        if !status.status.success() {
            failures.push(format!("status: {}{}", stdout(&status), stderr(&status)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().unwrap();
    let rate = f64::from(commits) / started.elapsed().as_secs_f64();
    println!(
        "{succeeded} of {runs} applies (and their status) succeeded beside a writer \
         committing {rate:.0} times a second ({} commits per apply and status)",
        commits / runs as u32
    );
    // What makes the race is how often the writer commits while an apply reads and
    // commits, not its rate alone: under an emulated CPU it commits more slowly, but each
    // apply lasts far longer.
    let per_run = commits / runs as u32;
    assert!(
        per_run >= 20,
        "the writer was too slow to matter: {per_run} commits per apply and status \
         ({rate:.0}/s)"
    );
    assert_eq!(succeeded, runs, "{failures:#?}");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn clean_removes_the_table_under_a_foreign_writer() {
    if !require_root() {
        return;
    }
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let ns = TestNetns::new("nft-busyclean");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        ns.run_inside(move || std::thread::spawn(move || foreign_writer(5000, &stop)))
    };
    let ips: String = (0..9_000u32)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect::<Vec<_>>()
        .join(",");
    let apply = [
        "apply",
        "--backend",
        "nftables",
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-ignored-ips",
        &ips,
    ];
    let mut left = Vec::new();
    for round in 0..20 {
        assert_exit(&meshinit(&ns, &apply), 0);
        let clean = meshinit(&ns, &["clean"]);
        assert_exit(&clean, 0);
        if ns
            .run_checked("nft", &["list", "tables"])
            .contains("inet meshinit\n")
        {
            left.push(round);
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(left.is_empty(), "clean left the table in rounds {left:?}");
}
