//! `meshinit apply` / `clean` / `status` against what a namespace already holds: re-apply,
//! foreign rules, the AWS plugin's rules, a half-installed ruleset, the other backend, drift
//! reports, and what a re-apply or a dry run sends, read back with `iptables-save`.
//! Needs root (skips outside CI without it; fails in CI).

mod common;

use common::scene::*;
use common::*;

#[test]
fn reapply_is_byte_identical_and_foreign_rules_survive_apply_and_clean() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        reapply_and_clean_beside_foreign_rules(backend);
    }
}

/// Everything the backend's own program shows: the whole nf_tables ruleset for the native
/// backend, both families' nat tables for the iptables ones.
fn whole_state(ns: &TestNetns, backend: &str) -> String {
    match backend {
        "nftables" => ns.run_checked("nft", &["list", "ruleset"]),
        "iptables-nft" => nat_state(ns, "nft"),
        _ => nat_state(ns, "legacy"),
    }
}

fn reapply_and_clean_beside_foreign_rules(backend: &str) {
    let scene = Scene::new();
    let app = &scene.net.app;
    // Someone else's chain and rules, in the nat table and elsewhere, in the backend's own
    // tables (iptables-nft's beside the native one: what a node holds).
    let foreign = if backend == "iptables-legacy" {
        "iptables-legacy"
    } else {
        "iptables-nft"
    };
    app.run_checked_with_stdin(
        &format!("{foreign}-restore"),
        &["--noflush"],
        "*nat\n:FOREIGN_CHAIN - [0:0]\n-A FOREIGN_CHAIN -p udp -j RETURN\n\
         -A OUTPUT -p udp --dport 53 -j FOREIGN_CHAIN\n-A PREROUTING -p udp -j ACCEPT\nCOMMIT\n\
         *filter\n-A INPUT -p tcp --dport 9999 -j ACCEPT\nCOMMIT\n",
    );
    let foreign_before = app.run_checked(&format!("{foreign}-save"), &[]);

    let apply = with_backend(&["apply", ECS_CONFIG], backend);
    assert_exit(&meshinit(app, &apply), 0);
    let first = whole_state(app, backend);
    assert_exit(&meshinit(app, &apply), 0);
    assert_eq!(
        first,
        whole_state(app, backend),
        "{backend}: re-apply changed the rules"
    );
    assert!(first.contains("FOREIGN_CHAIN"), "{backend}: {first}");
    if backend != "nftables" {
        assert_eq!(first.matches("-j APPMESH_EGRESS").count(), 2, "{first}");
    }
    assert_only_backend_holds_ours(app, backend, 15001);
    scene.assert_configured_traffic();
    assert_exit(
        &meshinit(app, &with_backend(&["status", ECS_CONFIG], backend)),
        0,
    );

    assert_exit(&meshinit(app, &with_backend(&["clean"], backend)), 0);
    assert_exit(&meshinit(app, &["clean"]), 0);
    let after = app.run_checked(&format!("{foreign}-save"), &[]);
    // Without comments and chain counters (legacy counts the policy's packets).
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.split_once(" [") {
                Some((chain, _)) if l.starts_with(':') => format!("{chain}\n"),
                _ => format!("{l}\n"),
            })
            .collect()
    };
    assert_eq!(
        strip(&foreign_before),
        strip(&after),
        "{backend}: clean changed foreign rules"
    );
    for any in BACKENDS {
        assert_eq!(
            our_rules(app, any),
            "",
            "{backend}: clean left rules in {any}"
        );
    }
    scene.assert_direct_traffic();
    // Status says absent (exit 1) once cleaned.
    let status = meshinit(app, &with_backend(&["status", ECS_CONFIG], backend));
    assert_exit(&status, 1);
    assert!(String::from_utf8_lossy(&status.stdout).contains("absent"));
}

#[test]
fn apply_replaces_the_aws_plugin_rules_and_an_older_config() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    // What the App Mesh CNI plugin leaves: one iptables process per rule, its own spelling.
    for rule in [
        "-t nat -N APPMESH_INGRESS",
        "-t nat -A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-port 15500",
        "-t nat -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
        "-t nat -N APPMESH_EGRESS",
        "-t nat -A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
        "-t nat -A APPMESH_EGRESS -p tcp -m multiport --dports 22 -j RETURN",
        "-t nat -A APPMESH_EGRESS -p tcp -d 169.254.170.2,169.254.169.254 -j RETURN",
        "-t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to 15501",
        "-t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
        // A stray duplicate jump and a jump with another match, as a crash-looping init leaves.
        "-t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
        "-t nat -I OUTPUT -p tcp -j APPMESH_EGRESS",
        // Named like ours but not one of the two chains meshinit owns: someone else's.
        "-t nat -N APPMESH_OLD",
        "-t nat -A OUTPUT -p tcp --dport 1 -j APPMESH_OLD",
    ] {
        app.iptables("iptables-nft", rule);
    }
    let status = meshinit(app, &["status", ECS_CONFIG]);
    assert_exit(&status, 1);
    assert!(String::from_utf8_lossy(&status.stdout).contains("unexpected"));

    // `auto` keeps iptables-nft, which holds chains named as ours, and says so.
    let output = meshinit(app, &["apply", ECS_CONFIG]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("iptables-nft holds meshinit's chains here: keeping it"),
        "{}",
        stderr(&output)
    );
    assert_exit(&meshinit(app, &["status", ECS_CONFIG]), 0);
    let replaced = nat_state(app, "nft");
    let (foreign, ours): (Vec<&str>, Vec<&str>) =
        replaced.lines().partition(|l| l.contains("APPMESH_OLD"));
    assert_eq!(
        foreign,
        [
            ":APPMESH_OLD - [0:0]",
            "-A OUTPUT -p tcp -m tcp --dport 1 -j APPMESH_OLD"
        ]
    );

    // Otherwise exactly what a fresh namespace gets.
    let fresh = TestNetns::new("fresh");
    let apply = ["apply", ECS_CONFIG, "--backend", "iptables-nft"];
    assert_exit(&meshinit(&fresh, &apply), 0);
    assert_eq!(
        ours.iter().map(|l| format!("{l}\n")).collect::<String>(),
        nat_state(&fresh, "nft")
    );
    scene.assert_configured_traffic();
}

#[test]
fn auto_uses_legacy_when_legacy_already_holds_rules() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    app.iptables("iptables-legacy", "-t nat -A POSTROUTING -p udp -j RETURN");
    let output = meshinit(app, &["apply", ECS_CONFIG]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("iptables-legacy already holds rules"),
        "{}",
        stderr(&output)
    );
    let legacy = nat_state(app, "legacy");
    assert!(legacy.contains("-j APPMESH_EGRESS"), "{legacy}");
    assert!(
        legacy.contains("-A POSTROUTING -p udp -j RETURN"),
        "{legacy}"
    );
    assert!(
        !nat_state(app, "nft").contains("APPMESH"),
        "nft must stay empty"
    );
    scene.assert_configured_traffic();
    assert_exit(&meshinit(app, &["clean"]), 0);
    assert!(!nat_state(app, "legacy").contains("APPMESH"));
    scene.assert_direct_traffic();
}

#[test]
fn auto_picks_native_in_a_fresh_namespace_and_keeps_iptables_nft_where_it_holds_ours() {
    if !require_root() {
        return;
    }
    let fresh = TestNetns::new("autofresh");
    let output = meshinit(&fresh, &["apply", ECS_CONFIG]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("backend=nftables"),
        "{}",
        stderr(&output)
    );
    assert_only_backend_holds_ours(&fresh, "nftables", 15001);
    assert_exit(&meshinit(&fresh, &["status", ECS_CONFIG]), 0);

    let ns = TestNetns::new("autokeep");
    let apply = ["apply", ECS_CONFIG, "--backend", "iptables-nft"];
    assert_exit(&meshinit(&ns, &apply), 0);
    let output = meshinit(&ns, &["apply", ECS_CONFIG]);
    assert_exit(&output, 0);
    let log = stderr(&output);
    assert!(
        log.contains("iptables-nft holds meshinit's chains here: keeping it")
            && log.contains("`--backend nftables` moves them"),
        "{log}"
    );
    assert_only_backend_holds_ours(&ns, "iptables-nft", 15001);
    assert_exit(&meshinit(&ns, &["status", ECS_CONFIG]), 0);
    // Asked for, the native backend takes them over; `auto` then stays with it.
    assert_exit(
        &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", "nftables"]),
        0,
    );
    assert_only_backend_holds_ours(&ns, "nftables", 15001);
    let output = meshinit(&ns, &["apply", ECS_CONFIG]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("backend=nftables"),
        "{}",
        stderr(&output)
    );
    assert_only_backend_holds_ours(&ns, "nftables", 15001);
}

#[test]
fn dry_run_prints_the_payload_and_changes_nothing() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("dryrun");
    let before = nat_state(&ns, "nft");
    let dry_run = [
        "apply",
        ECS_CONFIG,
        "--dry-run",
        "--backend",
        "iptables-nft",
    ];
    let output = meshinit(&ns, &dry_run);
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS"));
    assert!(stdout.contains("COMMIT"));
    assert_eq!(before, nat_state(&ns, "nft"));
}

#[test]
fn status_json_reports_drift_precisely() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("statusjson");
    let apply = ["apply", ECS_CONFIG, "--backend", "iptables-nft"];
    assert_exit(&meshinit(&ns, &apply), 0);
    // Tamper: drop the proxy-user exemption, the loop that takes pods down.
    ns.iptables(
        "iptables-nft",
        "-t nat -D APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
    );
    let output = meshinit(&ns, &["status", ECS_CONFIG, "--json"]);
    assert_exit(&output, 1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["in_sync"], false);
    assert_eq!(report["backend"], "nft");
    let v4 = &report["families"][0];
    assert_eq!(v4["family"], "ipv4");
    assert_eq!(
        v4["missing"][0],
        "-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN"
    );
    assert_eq!(
        report["families"][1]["missing"].as_array().unwrap().len(),
        0
    );
}

#[test]
fn switching_ipv6_off_removes_the_ipv6_rules() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        let scene = Scene::new();
        let app = &scene.net.app;
        let v6 = "[2001:db8:ff::7]:80";
        let v4 = "203.0.113.7:80";
        assert_exit(
            &meshinit(app, &with_backend(&["apply", ECS_CONFIG], backend)),
            0,
        );
        assert_redirected(
            &scene.connect_from_app(v6, APP_USER),
            &scene.egress_proxy,
            addr(v6),
        );
        let ipv6_off = with_backend(&["apply", ECS_CONFIG, "--ipv6", "off"], backend);
        assert_exit(&meshinit(app, &ipv6_off), 0);
        // IPv6 goes where it was sent; IPv4 still through the proxy.
        assert_direct(&scene.connect_from_app(v6, APP_USER), &scene.remote_80);
        assert_redirected(
            &scene.connect_from_app(v4, APP_USER),
            &scene.egress_proxy,
            addr(v4),
        );
        if let Some(program) = backend.strip_prefix("iptables-") {
            let v6_rules = app.run_checked(&format!("ip6tables-{program}-save"), &["-t", "nat"]);
            assert!(!v6_rules.contains("APPMESH"), "{backend}: {v6_rules}");
            let v4_rules = app.run_checked(&format!("iptables-{program}-save"), &["-t", "nat"]);
            assert!(v4_rules.contains("APPMESH_EGRESS"), "{backend}: {v4_rules}");
        }
        let status = with_backend(&["status", ECS_CONFIG, "--ipv6", "off"], backend);
        assert_exit(&meshinit(app, &status), 0);
    }
}

#[test]
fn a_half_installed_aws_ruleset_is_replaced_exactly() {
    if !require_root() {
        return;
    }
    // The AWS plugin creates the ingress chain first: a crash leaves it without the egress one.
    for config in [
        vec!["apply", ECS_CONFIG],
        vec![
            "apply",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
        ],
    ] {
        let ns = TestNetns::new("halfaws");
        for rule in [
            "-t nat -N APPMESH_INGRESS",
            "-t nat -A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-port 15500",
            "-t nat -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
        ] {
            ns.iptables("iptables-nft", rule);
        }
        assert_exit(&meshinit(&ns, &config), 0);
        let mut status = config.clone();
        status[0] = "status";
        assert_exit(&meshinit(&ns, &status), 0);
        assert!(
            !nat_state(&ns, "nft").contains("15500"),
            "{}",
            nat_state(&ns, "nft")
        );
    }
}

/// Each family's nat table as `{iptables,ip6tables}-BACKEND-save -c` prints it, packet and
/// byte counters included, without the timestamped comment lines.
fn nat_tables_with_counters(ns: &TestNetns, backend: &str) -> [(String, String); 2] {
    ["iptables", "ip6tables"].map(|family| {
        let save = ns.run_checked(&format!("{family}-{backend}-save"), &["-c", "-t", "nat"]);
        let table = save
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        (family.to_owned(), table)
    })
}

#[test]
fn reapply_sends_nothing_so_rule_counters_survive() {
    if !require_root() {
        return;
    }
    for backend in ["nft", "legacy"] {
        let scene = Scene::new();
        let app = &scene.net.app;
        let apply = ["apply", ECS_CONFIG, "--backend", backend];
        assert_exit(&meshinit(app, &apply), 0);
        // Connections through the jumps, the exemptions and both redirects count packets
        // in the rules they cross, in both families.
        scene.assert_configured_traffic();
        let before = nat_tables_with_counters(app, backend);
        for (family, table) in &before {
            let counted = table
                .lines()
                .filter(|l| l.contains("APPMESH") && l.starts_with('[') && !l.starts_with("[0:0]"));
            assert!(
                counted.count() >= 3,
                "{backend} {family}: the traffic left too few counters to compare:\n{table}"
            );
        }
        // A re-apply that rewrote our chains, even with the same rules, would zero them.
        assert_exit(&meshinit(app, &apply), 0);
        assert_eq!(
            nat_tables_with_counters(app, backend),
            before,
            "{backend}: re-applying the same config changed the rules or their counters"
        );
    }
}
