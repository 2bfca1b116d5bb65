//! `--backend nftables` through the command line and the CNI mode: the same traffic outcomes
//! as the iptables backends, re-apply that sends nothing, drift, verify, clean, moving
//! between backends, and working with no iptables program at all. The observer is the `nft`
//! program and real connections, never meshinit's own reader. Needs root.

mod common;

use common::scene::*;
use common::*;

const NATIVE: [&str; 2] = ["--backend", "nftables"];

fn with_native<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(NATIVE).collect()
}

/// `nft -a list table inet meshinit` (handles included), or "" when there is none.
fn native_table(ns: &TestNetns) -> String {
    let output = ns
        .command("nft")
        .args(["-a", "list", "table", "inet", "meshinit"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The elements of our set `name` as `nft -j` lists them: `a`, or `a-b` for a range, or
/// `a/len` for a prefix.
fn set_elements(ns: &TestNetns, name: &str) -> Vec<String> {
    let json = ns.run_checked("nft", &["-j", "list", "set", "inet", "meshinit", name]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("nft -j prints JSON");
    let set = value["nftables"]
        .as_array()
        .and_then(|objects| objects.iter().find_map(|o| o.get("set")))
        .unwrap_or_else(|| panic!("no set {name}: {json}"));
    let plain = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    set["elem"]
        .as_array()
        .map(|elements| {
            elements
                .iter()
                .map(|e| {
                    if let Some(range) = e.get("range") {
                        format!("{}-{}", plain(&range[0]), plain(&range[1]))
                    } else if let Some(prefix) = e.get("prefix") {
                        format!("{}/{}", plain(&prefix["addr"]), prefix["len"])
                    } else {
                        plain(e)
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn native_rules_redirect_and_exempt_as_configured_over_ipv4_and_ipv6() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    scene.assert_direct_traffic();
    assert_exit(&meshinit(app, &with_native(&["apply", ECS_CONFIG])), 0);
    let table = native_table(app);
    assert!(table.contains("redirect to :15001"), "{table}");
    // Nothing of iptables: no program ran, no table was made.
    assert!(!nat_state(app, "nft").contains("APPMESH"));
    scene.assert_configured_traffic();
    assert_exit(&meshinit(app, &with_native(&["status", ECS_CONFIG])), 0);
    // Verify stands in for the proxy, so it runs where no proxy listens yet.
    let fresh = NetnsPair::new();
    assert_exit(
        &meshinit(&fresh.app, &with_native(&["apply", ECS_CONFIG, "--verify"])),
        0,
    );
}

#[test]
fn native_reapply_sends_nothing_and_drift_is_seen_and_repaired() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nativeidem");
    // Nothing installed yet: each family says so.
    let status = meshinit(&ns, &with_native(&["status", ECS_CONFIG]));
    assert_exit(&status, 1);
    assert_eq!(
        stdout(&status),
        "IPv4 (nftables): absent\n  missing table inet meshinit\n\
         IPv6 (nftables): absent\n  missing table inet meshinit\n"
    );
    // A dry run prints what the one transaction would hold (the table as `render
    // --backend nftables` prints it), and sends nothing.
    let dry_run = meshinit(&ns, &with_native(&["apply", "--dry-run", ECS_CONFIG]));
    assert_exit(&dry_run, 0);
    let render = meshinit(&ns, &["render", "--backend", "nftables", ECS_CONFIG]);
    assert_exit(&render, 0);
    assert_eq!(
        stdout(&dry_run),
        format!(
            "# one nf_tables transaction (IPv4 + IPv6)\n{}\n",
            stdout(&render)
        )
    );
    assert_eq!(native_table(&ns), "");
    let apply = with_native(&["apply", ECS_CONFIG]);
    assert_exit(&meshinit(&ns, &apply), 0);
    let first = native_table(&ns);
    assert_exit(&meshinit(&ns, &apply), 0);
    assert_eq!(
        first,
        native_table(&ns),
        "re-apply changed the table (handles differ)"
    );

    // Someone removes the proxy user's exemption.
    let handle = first
        .lines()
        .find(|l| l.contains("skuid 1337"))
        .and_then(|l| l.rsplit("# handle ").next())
        .expect("the uid rule has a handle")
        .trim()
        .to_owned();
    ns.run_checked(
        "nft",
        &[
            "delete", "rule", "inet", "meshinit", "output", "handle", &handle,
        ],
    );
    let status = meshinit(&ns, &with_native(&["status", ECS_CONFIG]));
    assert_exit(&status, 1);
    // The chain serves both families, so both see the difference.
    let rules_differ = "  unexpected rules of chain output: 7 installed, 8 planned, \
                        first difference at rule 3\n";
    assert_eq!(
        stdout(&status),
        format!("IPv4 (nftables): drifted\n{rules_differ}IPv6 (nftables): drifted\n{rules_differ}")
    );
    assert_exit(&meshinit(&ns, &apply), 0);
    assert_exit(&meshinit(&ns, &with_native(&["status", ECS_CONFIG])), 0);
}

#[test]
fn long_lists_live_in_native_sets() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    let mut ips: Vec<String> = (0..10_000u32)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    ips.push("203.0.113.200".into());
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
    ];
    assert_exit(&meshinit(app, &with_native(&args)), 0);
    // The 10,000 addresses are contiguous: the interval set holds them as one range.
    assert_eq!(
        set_elements(app, "ignored_ipv4"),
        [
            "10.0.0.0-10.0.39.15",
            "169.254.169.254",
            "169.254.170.2",
            "169.254.170.23",
            "203.0.113.200"
        ]
    );
    let mut expected_ports = vec!["22".to_owned(), "5015".to_owned()];
    expected_ports.extend((0..100).map(|i| (20000 + i * 3).to_string()));
    assert_eq!(set_elements(app, "ignored_ports"), expected_ports);
    // One lookup per set, none of the listed entries as a rule of its own.
    let table = native_table(app);
    let output_rules: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.contains("chain output"))
        .skip(2)
        .take_while(|l| l.trim() != "}")
        .map(|l| l.trim().split(" counter ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        output_rules,
        [
            "meta l4proto != tcp",
            "fib daddr type local",
            "meta skuid 1337",
            "tcp dport @ignored_ports",
            "ip daddr @ignored_ipv4",
            "ip6 daddr @ignored_ipv6",
            "meta l4proto tcp",
        ],
        "{table}"
    );
    assert_direct(
        &scene.connect_from_app("203.0.113.200:80", APP_USER),
        &scene.remote_80,
    );
    assert_direct(
        &scene.connect_from_app("203.0.113.7:5015", APP_USER),
        &scene.remote_5015,
    );
    assert_redirected(
        &scene.connect_from_app("203.0.113.7:80", APP_USER),
        &scene.egress_proxy,
        addr("203.0.113.7:80"),
    );
    assert!(ipset_names(app).is_empty(), "no ipset is needed");
}

#[test]
fn moving_between_backends_leaves_one_set_of_rules() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    assert_exit(
        &meshinit(app, &["apply", ECS_CONFIG, "--backend", "iptables-nft"]),
        0,
    );
    app.iptables("iptables-nft", "-t nat -N FOREIGN");
    app.iptables("iptables-nft", "-t nat -A OUTPUT -p udp -j FOREIGN");
    let to_native = meshinit(app, &with_native(&["apply", ECS_CONFIG]));
    assert_exit(&to_native, 0);
    assert!(
        stderr(&to_native)
            .contains("moved from iptables-nft to table inet meshinit in one transaction"),
        "replaces the iptables-nft rules atomically: {}",
        stderr(&to_native)
    );
    let iptables_left = nat_state(app, "nft");
    assert!(!iptables_left.contains("APPMESH"), "{iptables_left}");
    assert!(
        iptables_left.contains("-A OUTPUT -p udp -j FOREIGN"),
        "someone else's rules stay: {iptables_left}"
    );
    assert!(native_table(app).contains("meshinit"));
    scene.assert_configured_traffic();

    let to_legacy = meshinit(app, &["apply", ECS_CONFIG, "--backend", "iptables-legacy"]);
    assert_exit(&to_legacy, 0);
    assert!(
        stderr(&to_legacy).contains("nftables"),
        "{}",
        stderr(&to_legacy)
    );
    assert_eq!(native_table(app), "");
    scene.assert_configured_traffic();

    assert_exit(&meshinit(app, &with_native(&["apply", ECS_CONFIG])), 0);
    assert_exit(&meshinit(app, &["clean"]), 0);
    assert_eq!(native_table(app), "");
    assert!(!legacy_nat_state(app).contains("APPMESH"));
    scene.assert_direct_traffic();
}

#[test]
fn moving_from_iptables_nft_removes_its_ipsets_too() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nativesets");
    // More networks than iptables lists as rules: they go into an ipset.
    let ips: Vec<String> = (1..=40).map(|i| format!("10.9.0.{i}")).collect();
    let ips = ips.join(",");
    let args = [
        "apply",
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-ignored-ips",
        &ips,
    ];
    assert_exit(&meshinit(&ns, &with_backend(&args, "iptables-nft")), 0);
    let ours = ipset_names(&ns);
    assert!(
        ours.iter().any(|s| s.starts_with("APPMESH_IGNORED_NET4_")),
        "{ours:?}"
    );
    ns.run_checked("ipset", &["create", "APPMESH_FOREIGN", "hash:ip"]);

    assert_exit(&meshinit(&ns, &with_native(&args)), 0);
    assert!(native_table(&ns).contains("10.9.0.40"));
    assert!(!nat_state(&ns, "nft").contains("APPMESH"));
    assert_eq!(
        ipset_names(&ns),
        ["APPMESH_FOREIGN"],
        "our sets went with our rules; someone else's stays"
    );
}

#[test]
fn ipv6_off_leaves_ipv6_traffic_alone() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    assert_exit(
        &meshinit(app, &with_native(&["apply", ECS_CONFIG, "--ipv6", "off"])),
        0,
    );
    assert_redirected(
        &scene.connect_from_app("203.0.113.7:80", APP_USER),
        &scene.egress_proxy,
        addr("203.0.113.7:80"),
    );
    assert_direct(
        &scene.connect_from_app("[2001:db8:ff::7]:80", APP_USER),
        &scene.remote_80,
    );
    // status does not call the family it was told to leave alone "in sync".
    for backend in ["nftables", "iptables-nft"] {
        let args = ["status", ECS_CONFIG, "--ipv6", "off", "--backend", backend];
        if backend != "nftables" {
            assert_exit(
                &meshinit(
                    app,
                    &["apply", ECS_CONFIG, "--ipv6", "off", "--backend", backend],
                ),
                0,
            );
        }
        let status = meshinit(app, &args);
        assert_exit(&status, 0);
        assert_eq!(
            stdout(&status),
            format!(
                "IPv4 ({backend}): in sync\n\
                 IPv6 ({backend}): off (not redirected: IPv6 is off in the configuration)\n"
            )
        );
    }
}

/// Runs meshinit as a CNI plugin with no iptables program on PATH.
fn cni_without_iptables(node: &TestNetns, pod: &TestNetns, command: &str) -> std::process::Output {
    cni_plugin(node, pod, command, Some("/nonexistent"))
        .wait_with_output()
        .unwrap()
}

#[test]
fn cni_add_check_del_need_no_program() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("nativenode");
    let pod = TestNetns::new("nativepod");
    for command in ["ADD", "CHECK"] {
        let output = cni_without_iptables(&node, &pod, command);
        assert!(output.status.success(), "{command}: {}", stderr(&output));
    }
    assert!(native_table(&pod).contains("redirect to :15001"));
    let output = cni_without_iptables(&node, &pod, "DEL");
    assert!(output.status.success(), "DEL: {}", stderr(&output));
    assert_eq!(native_table(&pod), "");
}

#[test]
fn a_dormant_table_is_drift_and_apply_makes_it_active_again() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("dormantnode");
    let pod = TestNetns::new("dormantpod");
    let output = cni_without_iptables(&node, &pod, "ADD");
    assert!(output.status.success(), "ADD: {}", stderr(&output));
    // Every rule of ours off, with one flag.
    pod.run_checked("nft", &["add table inet meshinit { flags dormant; }"]);
    assert!(native_table(&pod).contains("dormant"));
    let check = cni_without_iptables(&node, &pod, "CHECK");
    assert!(
        !check.status.success() && stdout(&check).contains("dormant"),
        "CHECK must fail on a dormant table: {}",
        stdout(&check)
    );

    let config = [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-ingress-port",
        "15000",
        "--app-ports",
        "9080",
    ];
    let ns = TestNetns::new("dormant");
    let apply: Vec<&str> = ["apply"].iter().chain(&config).copied().collect();
    let status: Vec<&str> = ["status"].iter().chain(&config).copied().collect();
    assert_exit(&meshinit(&ns, &with_native(&apply)), 0);
    ns.run_checked("nft", &["add table inet meshinit { flags dormant; }"]);
    let drifted = meshinit(&ns, &with_native(&status));
    assert_exit(&drifted, 1);
    assert!(
        stdout(&drifted).contains("table inet meshinit is dormant"),
        "{}",
        stdout(&drifted)
    );
    assert_exit(&meshinit(&ns, &with_native(&apply)), 0);
    let table = native_table(&ns);
    assert!(
        !table.contains("dormant") && table.contains("redirect to :15001"),
        "{table}"
    );
    assert_exit(&meshinit(&ns, &with_native(&status)), 0);
}

/// Puts what meshinit does not model into its table: a concatenated set, an `ether_addr`
/// set, a rule with an anonymous concatenated set.
fn add_unmodelled_content(ns: &TestNetns) {
    ns.run_checked(
        "nft",
        &["add set inet meshinit pairs { type ipv4_addr . inet_service; elements = { 10.0.0.1 . 80 }; }"],
    );
    ns.run_checked(
        "nft",
        &["add set inet meshinit macs { type ether_addr; elements = { 02:00:00:00:00:01 }; }"],
    );
    ns.run_checked(
        "nft",
        &["add rule inet meshinit output ip daddr . tcp dport { 10.0.0.2 . 443 } return"],
    );
}

#[test]
fn clean_del_and_moving_away_remove_a_table_they_cannot_read() {
    if !require_root() {
        return;
    }
    // clean
    let scene = Scene::new();
    let app = &scene.net.app;
    assert_exit(&meshinit(app, &with_native(&["apply", ECS_CONFIG])), 0);
    add_unmodelled_content(app);
    let status = meshinit(app, &with_native(&["status", ECS_CONFIG]));
    assert_exit(&status, 1);
    assert!(
        stdout(&status).contains("not in the plan"),
        "{}",
        stdout(&status)
    );
    assert_exit(&meshinit(app, &["clean"]), 0);
    assert_eq!(native_table(app), "", "clean removed the table");
    scene.assert_direct_traffic();

    // CNI DEL
    let node = TestNetns::new("unreadnode");
    let pod = TestNetns::new("unreadpod");
    let add = cni_without_iptables(&node, &pod, "ADD");
    assert!(add.status.success(), "ADD: {}", stderr(&add));
    add_unmodelled_content(&pod);
    let del = cni_without_iptables(&node, &pod, "DEL");
    assert!(del.status.success(), "DEL: {}", stderr(&del));
    assert_eq!(native_table(&pod), "", "DEL removed the table");

    // Moving to another backend
    let ns = TestNetns::new("unreadmove");
    assert_exit(&meshinit(&ns, &with_native(&["apply", ECS_CONFIG])), 0);
    add_unmodelled_content(&ns);
    assert_exit(
        &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", "iptables-nft"]),
        0,
    );
    assert_eq!(native_table(&ns), "", "the move removed the native table");
    assert_exit(
        &meshinit(&ns, &["status", ECS_CONFIG, "--backend", "iptables-nft"]),
        0,
    );
    // And apply replaces such a table whole.
    assert_exit(&meshinit(&ns, &with_native(&["apply", ECS_CONFIG])), 0);
    add_unmodelled_content(&ns);
    assert_exit(&meshinit(&ns, &with_native(&["apply", ECS_CONFIG])), 0);
    assert!(!native_table(&ns).contains("pairs"));
    assert_exit(&meshinit(&ns, &with_native(&["status", ECS_CONFIG])), 0);
}

#[test]
fn objects_and_element_comments_in_our_table_are_drift_and_apply_removes_them() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nativeobjects");
    let apply = with_native(&["apply", ECS_CONFIG]);
    let status = with_native(&["status", ECS_CONFIG]);
    assert_exit(&meshinit(&ns, &apply), 0);
    ns.run_checked("nft", &["add counter inet meshinit sneaky"]);
    let drifted = meshinit(&ns, &status);
    assert_exit(&drifted, 1);
    assert!(stdout(&drifted).contains("sneaky"), "{}", stdout(&drifted));
    assert_exit(&meshinit(&ns, &apply), 0);
    assert!(!native_table(&ns).contains("sneaky"));
    assert_exit(&meshinit(&ns, &status), 0);

    ns.run_checked(
        "nft",
        &["delete element inet meshinit ignored_ipv4 { 169.254.170.2 }"],
    );
    ns.run_checked(
        "nft",
        &["add element inet meshinit ignored_ipv4 { 169.254.170.2 comment \"hello\" }"],
    );
    let drifted = meshinit(&ns, &status);
    assert_exit(&drifted, 1);
    assert!(
        stdout(&drifted).contains("ignored_ipv4"),
        "{}",
        stdout(&drifted)
    );
    assert_exit(&meshinit(&ns, &apply), 0);
    assert!(!native_table(&ns).contains("hello"));
    assert_exit(&meshinit(&ns, &status), 0);
}

/// Loads our table back through `nft -f` as `nft list` shows it, with `edit` applied to the
/// listing: nft writes its own set user data (key byte order) as it re-adds the sets.
fn reload_table_with(ns: &TestNetns, edit: impl Fn(&str) -> String) {
    let listing = ns
        .command("nft")
        .args(["list", "table", "inet", "meshinit"])
        .output()
        .unwrap();
    let script = format!(
        "delete table inet meshinit\n{}",
        edit(&String::from_utf8_lossy(&listing.stdout))
    );
    let path = std::env::temp_dir().join(format!("meshinit-reload-{}.nft", std::process::id()));
    std::fs::write(&path, script).unwrap();
    ns.run_checked("nft", &["-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn rule_and_set_comments_in_our_table_are_drift_and_apply_removes_them() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nativecomments");
    let apply = with_native(&["apply", ECS_CONFIG]);
    let status = with_native(&["status", ECS_CONFIG]);
    assert_exit(&meshinit(&ns, &apply), 0);
    // The same table written by nft (with nft's own set user data) is in sync.
    reload_table_with(&ns, str::to_owned);
    assert_exit(&meshinit(&ns, &status), 0);

    reload_table_with(&ns, |listing| {
        listing.replacen(
            "set ignored_ipv4 {",
            "set ignored_ipv4 {\n\t\tcomment \"sneakyset\"",
            1,
        )
    });
    assert!(native_table(&ns).contains("sneakyset"));
    let drifted = meshinit(&ns, &status);
    assert_exit(&drifted, 1);
    assert!(
        stdout(&drifted).contains("sneakyset"),
        "{}",
        stdout(&drifted)
    );
    assert_exit(&meshinit(&ns, &apply), 0);
    assert!(!native_table(&ns).contains("sneakyset"));
    assert_exit(&meshinit(&ns, &status), 0);

    reload_table_with(&ns, |listing| {
        listing.replacen(" return\n", " return comment \"sneakyrule\"\n", 1)
    });
    assert!(native_table(&ns).contains("sneakyrule"));
    let drifted = meshinit(&ns, &status);
    assert_exit(&drifted, 1);
    assert!(
        stdout(&drifted).contains("sneakyrule"),
        "{}",
        stdout(&drifted)
    );
    assert_exit(&meshinit(&ns, &apply), 0);
    assert!(!native_table(&ns).contains("sneakyrule"));
    assert_exit(&meshinit(&ns, &status), 0);
}

#[test]
fn a_flowtable_in_our_table_is_drift_and_apply_removes_it() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nativeflowtable");
    let apply = with_native(&["apply", ECS_CONFIG]);
    let status = with_native(&["status", ECS_CONFIG]);
    assert_exit(&meshinit(&ns, &apply), 0);
    let added = ns
        .command("nft")
        .args([
            "add flowtable inet meshinit sneakyft { hook ingress priority 0; devices = { lo }; }",
        ])
        .output()
        .unwrap();
    if !added.status.success() {
        // A kernel built without nf_flow_table_inet refuses every flowtable (ENOENT): then
        // no writer can put one into our table either.
        let why = String::from_utf8_lossy(&added.stderr);
        assert!(why.contains("No such file"), "nft add flowtable: {why}");
        eprintln!("skipped: this kernel has no inet flowtables ({why})");
        return;
    }
    let drifted = meshinit(&ns, &status);
    assert_exit(&drifted, 1);
    assert!(
        stdout(&drifted).contains("sneakyft"),
        "{}",
        stdout(&drifted)
    );
    assert_exit(&meshinit(&ns, &apply), 0);
    assert!(!native_table(&ns).contains("sneakyft"));
    assert_exit(&meshinit(&ns, &status), 0);
}

#[test]
fn a_table_owned_by_another_process_is_named_and_exit_1() {
    if !require_root() {
        return;
    }
    use std::io::Write;
    use std::process::Stdio;
    let ns = TestNetns::new("nativeowned");
    // `nft -i` keeps its netlink socket open while its stdin is: it owns the table until
    // then.
    let mut owner = ns
        .command("nft")
        .arg("-i")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nft -i starts");
    let mut stdin = owner.stdin.take().unwrap();
    writeln!(stdin, "add table inet meshinit {{ flags owner; }}").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !native_table(&ns).contains("owner") {
        assert!(
            std::time::Instant::now() < deadline,
            "nft never made the table"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let owner_pid = owner.id();
    for args in [
        with_native(&["apply", ECS_CONFIG]),
        vec!["clean"],
        with_native(&["clean"]),
    ] {
        let output = meshinit(&ns, &args);
        assert_exit(&output, 1);
        let message = stderr(&output);
        assert!(
            message.contains("owned by another process")
                && message.contains(&format!("port id {owner_pid}"))
                && !message.contains("CAP_NET_ADMIN"),
            "{args:?}: {message}"
        );
    }
    drop(stdin);
    owner.wait().unwrap();
    assert_exit(&meshinit(&ns, &with_native(&["apply", ECS_CONFIG])), 0);
}

#[test]
fn port_sets_are_interval_sets_that_join_adjacent_ports_and_hold_32768_separate_ones() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nativeports");
    // Adjacent ports join into one range, as docs/configuration.md says sets do.
    let adjacent = [
        "apply",
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-ignored-ports",
        "8000,8001,8002,9000,9001,7000",
    ];
    assert_exit(&meshinit(&ns, &with_native(&adjacent)), 0);
    let table = native_table(&ns);
    assert!(table.contains("flags interval"), "{table}");
    assert_eq!(
        set_elements(&ns, "ignored_ports"),
        ["22", "7000", "8000-8002", "9000-9001"]
    );

    // 32,768 separate ports (every odd one), from a file: more than one argument holds.
    let odd_ports: Vec<String> = (0..32_768u32).map(|i| (2 * i + 1).to_string()).collect();
    let config = serde_json::json!({
        "type": "APPMESH",
        "containerName": "envoy",
        "properties": [
            {"name": "IgnoredUID", "value": "1337"},
            {"name": "ProxyEgressPort", "value": "15001"},
            {"name": "EgressIgnoredPorts", "value": odd_ports.join(",")},
        ],
    });
    let path = std::env::temp_dir().join(format!("meshinit-odd-ports-{}.json", std::process::id()));
    std::fs::write(&path, config.to_string()).unwrap();
    let path_text = path.to_str().unwrap();
    assert_exit(&meshinit(&ns, &with_native(&["apply", path_text])), 0);
    assert_exit(&meshinit(&ns, &with_native(&["status", path_text])), 0);
    let table = native_table(&ns);
    assert!(
        table.contains("flags interval"),
        "{}",
        &table[..table.len().min(400)]
    );
    // Every odd port, separate, except that 22 (always ignored) joins 21 and 23.
    let mut expected: Vec<String> = odd_ports.clone();
    expected.splice(10..12, ["21-23".to_owned()]);
    assert_eq!(set_elements(&ns, "ignored_ports"), expected);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn every_apply_sweeps_stray_ipsets_of_ours_whatever_the_backend() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("straysets");
    let stray = |ns: &TestNetns| {
        // What a kill -9 during a move from iptables can leave: a set of ours no rule uses.
        ns.run_checked(
            "ipset",
            &["create", "APPMESH_IGNORED_NET4_0badcafe", "hash:net"],
        );
        ns.run_checked(
            "ipset",
            &["add", "APPMESH_IGNORED_NET4_0badcafe", "10.1.0.0/16"],
        );
    };
    ns.run_checked("ipset", &["create", "APPMESH_FOREIGN", "hash:ip"]);
    for backend in ["nftables", "iptables-nft", "iptables-legacy", "nftables"] {
        stray(&ns);
        let apply = meshinit(&ns, &["apply", ECS_CONFIG, "--backend", backend]);
        assert_exit(&apply, 0);
        assert_eq!(
            ipset_names(&ns),
            ["APPMESH_FOREIGN"],
            "{backend}: the stray set of ours went, someone else's stays: {}",
            stderr(&apply)
        );
        // Also when the rules were already in place (nothing else to change).
        stray(&ns);
        assert_exit(
            &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", backend]),
            0,
        );
        assert_eq!(
            ipset_names(&ns),
            ["APPMESH_FOREIGN"],
            "{backend}, unchanged rules"
        );
    }
}

#[test]
fn auto_keeps_a_deliberate_move_to_nftables_beside_someone_elses_legacy_rules() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    // Another program keeps legacy NAT rules here.
    app.iptables(
        "iptables-legacy",
        "-t nat -A OUTPUT -p udp --dport 5353 -j RETURN",
    );
    assert_exit(&meshinit(app, &with_native(&["apply", ECS_CONFIG])), 0);
    // The next plain apply (and CNI's auto) keeps the native table the user chose.
    let again = meshinit(app, &["apply", ECS_CONFIG]);
    assert_exit(&again, 0);
    assert!(
        stderr(&again).contains("table inet meshinit already holds"),
        "{}",
        stderr(&again)
    );
    assert!(native_table(app).contains("redirect to :15001"));
    let legacy = legacy_nat_state(app);
    assert!(!legacy.contains("APPMESH"), "{legacy}");
    assert!(
        legacy.contains("--dport 5353 -j RETURN"),
        "theirs stays: {legacy}"
    );
    assert_exit(&meshinit(app, &["status", ECS_CONFIG]), 0);
    scene.assert_configured_traffic();
    // Moving back is explicit.
    assert_exit(
        &meshinit(app, &["apply", ECS_CONFIG, "--backend", "iptables-legacy"]),
        0,
    );
    assert_eq!(native_table(app), "");
    assert!(legacy_nat_state(app).contains("APPMESH_EGRESS"));
}
