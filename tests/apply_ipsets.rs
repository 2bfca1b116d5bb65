//! `meshinit apply` with exclusion lists too long for chains: ipsets, proven with real
//! connections, kept by a re-apply and removed by `clean`.
//! Needs root (skips outside CI without it; fails in CI).

mod common;

use common::scene::*;
use common::*;

#[test]
fn long_exclusion_lists_use_sets_that_clean_removes() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    // 2,000 ignored /32s around 203.0.113.200 (deep in the list), and 100 ignored ports.
    let mut ips: Vec<String> = (0..2000u32)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    ips.insert(1500, "203.0.113.200".into());
    let ports: Vec<String> = (0..100).map(|i| (20000 + i * 3).to_string()).collect();
    let ips = ips.join(",");
    let ports = format!("{},5015", ports.join(","));
    let args = [
        "apply",
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-ignored-ips",
        &ips,
        "--egress-ignored-ports",
        &ports,
        // ipsets are the iptables backends' way with long lists.
        "--backend",
        "iptables-nft",
    ];
    assert_exit(&meshinit(app, &args), 0);
    let rules = nat_state(app, "nft");
    assert!(
        rules.contains("--match-set APPMESH_IGNORED_NET4_"),
        "{rules}"
    );
    assert!(
        rules.lines().count() < 40,
        "long lists must not become long chains:\n{rules}"
    );
    assert_direct(
        &scene.connect_from_app("203.0.113.200:80", APP_USER),
        &scene.remote_80,
    );
    assert_direct(
        &scene.connect_from_app("203.0.113.7:5015", APP_USER),
        &scene.remote_5015,
    );
    assert_direct(
        &scene.connect_from_app("169.254.169.254:80", APP_USER),
        &scene.remote_80,
    );
    assert_redirected(
        &scene.connect_from_app("203.0.113.7:80", APP_USER),
        &scene.egress_proxy,
        addr("203.0.113.7:80"),
    );
    let mut status_args = args.to_vec();
    status_args[0] = "status";
    assert_exit(&meshinit(app, &status_args), 0);
    // Re-apply changes nothing; clean removes the sets too.
    assert_exit(&meshinit(app, &args), 0);
    assert_eq!(rules, nat_state(app, "nft"));
    assert_exit(&meshinit(app, &["clean"]), 0);
    let sets = app.run_checked("ipset", &["list", "-n"]);
    assert!(!sets.contains("APPMESH"), "sets left behind: {sets}");
    scene.assert_direct_traffic();
}

/// The networks of the long include list: every other /29 of 203.0.113.0/24 and of
/// 198.51.100.0/24 (32 networks, not adjacent so none merge) and 192.0.2.0/29: 33, one
/// more than a list kept as rules.
fn long_include_list() -> Vec<String> {
    let mut nets: Vec<String> = ["203.0.113", "198.51.100"]
        .iter()
        .flat_map(|prefix| (0..16).map(move |i| format!("{prefix}.{}/29", i * 16)))
        .collect();
    nets.push("192.0.2.0/29".into());
    nets
}

/// A long egress include list is one set lookup on every backend (an ipset, a set in the
/// native table): destinations at the edges of its networks are redirected, the first
/// address past them is not, an ignored address inside it still wins, IPv6 (a short list)
/// keeps its rules, and clean removes the set.
fn long_include_list_uses_a_set(backend: &str) {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    let edges_in = [
        "203.0.113.0",
        "203.0.113.7",
        "203.0.113.240",
        "203.0.113.247",
    ];
    let edges_out = [
        "203.0.113.8",
        "203.0.113.15",
        "203.0.113.248",
        "203.0.113.239",
    ];
    let ignored_inside = "203.0.113.244";
    // 203.0.113.7 is one of the scene's addresses already.
    let new_addresses = edges_in.iter().chain(&edges_out).chain([&ignored_inside]);
    for ip in new_addresses.filter(|ip| **ip != "203.0.113.7") {
        scene.net.peer.add_address(ip.parse().unwrap());
    }
    let included = format!("{},2001:db8:ff::/64", long_include_list().join(","));
    let args = [
        "apply",
        "--backend",
        backend,
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-included-ips",
        &included,
        "--egress-ignored-ips",
        ignored_inside,
    ];
    assert_exit(&meshinit(app, &args), 0);
    if backend == "nftables" {
        let table = app.run_checked("nft", &["list", "table", "inet", "meshinit"]);
        assert!(table.contains("ip daddr @included_ipv4"), "{table}");
        assert!(
            !table.contains("daddr 203.0.113.16/29"),
            "one rule per network:\n{table}"
        );
    } else {
        let rules = nat_state(app, backend.trim_start_matches("iptables-"));
        assert!(
            rules.contains("--match-set APPMESH_INCLUDED_NET4_"),
            "{rules}"
        );
        assert!(rules.contains("-d 2001:db8:ff::/64"), "{rules}");
        assert!(
            rules.lines().count() < 30,
            "a long include list must not become a long chain:\n{rules}"
        );
    }
    for ip in edges_in {
        let destination = format!("{ip}:80");
        assert_redirected(
            &scene.connect_from_app(&destination, APP_USER),
            &scene.egress_proxy,
            addr(&destination),
        );
    }
    for ip in edges_out.iter().chain([&ignored_inside]) {
        assert_direct(
            &scene.connect_from_app(&format!("{ip}:80"), APP_USER),
            &scene.remote_80,
        );
    }
    assert_redirected(
        &scene.connect_from_app("[2001:db8:ff::7]:80", APP_USER),
        &scene.egress_proxy,
        addr("[2001:db8:ff::7]:80"),
    );
    assert_direct(
        &scene.connect_from_app("[2001:db8:ff:1::7]:80", APP_USER),
        &scene.remote_80,
    );
    let mut status_args = args.to_vec();
    status_args[0] = "status";
    assert_exit(&meshinit(app, &status_args), 0);
    assert_exit(&meshinit(app, &["clean"]), 0);
    if backend != "nftables" {
        let sets = app.run_checked("ipset", &["list", "-n"]);
        assert!(!sets.contains("APPMESH"), "sets left behind: {sets}");
    }
    scene.assert_direct_traffic();
}

#[test]
fn long_include_list_uses_a_set_with_native_nftables() {
    long_include_list_uses_a_set("nftables");
}

#[test]
fn long_include_list_uses_a_set_with_iptables_nft() {
    long_include_list_uses_a_set("iptables-nft");
}

#[test]
fn long_include_list_uses_a_set_with_iptables_legacy() {
    long_include_list_uses_a_set("iptables-legacy");
}
