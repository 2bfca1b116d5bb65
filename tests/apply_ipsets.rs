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
