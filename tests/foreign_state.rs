//! Foreign state: meshinit touches only what is its own (the chains `APPMESH_INGRESS` and
//! `APPMESH_EGRESS`, the jumps into them, and the sets it names), and finds every jump into
//! its chains whatever shape `iptables-save` prints it in. Needs root.

mod common;

use common::*;

const ECS_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/configs/traffic-ecs.json"
);
const BACKENDS: [&str; 2] = ["nft", "legacy"];

/// A configuration whose ignored networks are long enough to be matched through a set.
fn long_list_args(egress_port: &str, first_octet: u32) -> Vec<String> {
    let ips: Vec<String> = (0..100u32)
        .map(|i| format!("10.{first_octet}.{}.{}", i / 256, i % 256))
        .collect();
    [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        egress_port,
        "--egress-ignored-ips",
        &ips.join(","),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with_verb<'a>(verb: &'a str, args: &'a [String]) -> Vec<&'a str> {
    std::iter::once(verb)
        .chain(args.iter().map(String::as_str))
        .collect()
}

#[test]
fn jumps_into_our_chains_of_any_shape_are_reported_removed_and_cleaned() {
    if !require_root() {
        return;
    }
    // Shapes iptables-save prints for a jump that meshinit never writes.
    let shapes = [
        "-A OUTPUT -j APPMESH_EGRESS",
        "-A OUTPUT -g APPMESH_EGRESS",
        "-A OUTPUT -p tcp -m comment --comment \"added by hand\" -j APPMESH_EGRESS",
        "-A PREROUTING -j APPMESH_INGRESS",
    ];
    for backend in BACKENDS {
        for shape in shapes {
            let ns = TestNetns::new("shape");
            let apply = ["apply", ECS_CONFIG, "--backend", backend];
            assert_exit(&meshinit(&ns, &apply), 0);
            let installed = nat_state(&ns, backend);
            let family = "iptables";
            ns.run_checked_with_stdin(
                &format!("{family}-{backend}-restore"),
                &["--noflush"],
                &format!("*nat\n{shape}\nCOMMIT\n"),
            );

            let status = meshinit(&ns, &["status", ECS_CONFIG, "--backend", backend]);
            assert_exit(&status, 1);
            assert!(
                stdout(&status).contains("unexpected"),
                "{backend}: status must report `{shape}`:\n{}",
                stdout(&status)
            );

            assert_exit(&meshinit(&ns, &apply), 0);
            assert_eq!(
                installed,
                nat_state(&ns, backend),
                "{backend}: apply must remove `{shape}` and keep everything else"
            );

            ns.run_checked_with_stdin(
                &format!("{family}-{backend}-restore"),
                &["--noflush"],
                &format!("*nat\n{shape}\nCOMMIT\n"),
            );
            let clean = meshinit(&ns, &["clean", "--backend", backend]);
            assert_exit(&clean, 0);
            let after = nat_state(&ns, backend);
            assert!(
                !after.contains("APPMESH"),
                "{backend}: clean left rules behind after `{shape}`:\n{after}"
            );
        }
    }
}

#[test]
fn a_jump_with_counters_is_found() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        let ns = TestNetns::new("counters");
        assert_exit(
            &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", backend]),
            0,
        );
        ns.run_checked_with_stdin(
            &format!("iptables-{backend}-restore"),
            &["--noflush", "--counters"],
            "*nat\n[7:420] -A OUTPUT -p udp -j APPMESH_EGRESS\nCOMMIT\n",
        );
        let status = meshinit(&ns, &["status", ECS_CONFIG, "--backend", backend]);
        assert_exit(&status, 1);
        assert!(stdout(&status).contains("-p udp"), "{}", stdout(&status));
        assert_exit(&meshinit(&ns, &["clean", "--backend", backend]), 0);
        assert!(!nat_state(&ns, backend).contains("APPMESH"));
    }
}

#[test]
fn foreign_chains_and_sets_named_like_ours_are_left_alone_on_every_path() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        let ns = TestNetns::new("foreign");
        ns.run_checked("ipset", &["create", "APPMESH_FOREIGN", "hash:ip"]);
        ns.run_checked("ipset", &["add", "APPMESH_FOREIGN", "192.0.2.1"]);
        ns.run_checked_with_stdin(
            &format!("iptables-{backend}-restore"),
            &["--noflush"],
            "*nat\n:APPMESH_OTHER - [0:0]\n-A APPMESH_OTHER -p udp -j RETURN\n\
             -A OUTPUT -p udp -j APPMESH_OTHER\nCOMMIT\n",
        );
        let foreign_rules = |state: &str| {
            state
                .lines()
                .filter(|l| l.contains("APPMESH_OTHER"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let before = foreign_rules(&nat_state(&ns, backend));
        assert_eq!(before.len(), 3, "{before:?}");

        // First apply (a namespace without our chains), a changed config with sets (the
        // reading path), a config without sets (stale sets go), then clean.
        let first = ["apply", ECS_CONFIG, "--backend", backend];
        assert_exit(&meshinit(&ns, &first), 0);
        let long = long_list_args("15002", 1);
        let mut second = with_verb("apply", &long);
        second.extend(["--backend", backend]);
        assert_exit(&meshinit(&ns, &second), 0);
        assert_exit(&meshinit(&ns, &first), 0);
        assert_exit(&meshinit(&ns, &["clean", "--backend", backend]), 0);

        assert_eq!(before, foreign_rules(&nat_state(&ns, backend)), "{backend}");
        let sets = ipset_state(&ns);
        assert!(
            sets.contains("add APPMESH_FOREIGN 192.0.2.1"),
            "{backend}: the foreign set was destroyed or emptied:\n{sets}"
        );
    }
}

#[test]
fn a_set_of_ours_still_referenced_by_a_foreign_rule_never_fails_apply_after_commit() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        let ns = TestNetns::new("setref");
        let long = long_list_args("15001", 1);
        let mut apply_long = with_verb("apply", &long);
        apply_long.extend(["--backend", backend]);
        assert_exit(&meshinit(&ns, &apply_long), 0);
        let state = nat_state(&ns, backend);
        let set = state
            .split_whitespace()
            .skip_while(|w| *w != "--match-set")
            .nth(1)
            .expect("a set is matched")
            .to_owned();
        // Someone else's rule now uses our set.
        ns.run_checked_with_stdin(
            &format!("iptables-{backend}-restore"),
            &["--noflush"],
            &format!("*nat\n-A OUTPUT -p udp -m set --match-set {set} dst -j RETURN\nCOMMIT\n"),
        );
        // A config without the long list leaves the set unneeded by us.
        let output = meshinit(&ns, &["apply", ECS_CONFIG, "--backend", backend]);
        assert_exit(&output, 0);
        assert!(
            stderr(&output).contains(&set),
            "{backend}: says which set it had to leave: {}",
            stderr(&output)
        );
        let status = meshinit(&ns, &["status", ECS_CONFIG, "--backend", backend]);
        assert_exit(&status, 0);
        assert!(
            nat_state(&ns, backend).contains(&format!("--match-set {set} dst")),
            "the foreign rule stays"
        );
    }
}

#[test]
fn our_chains_in_the_other_backend_are_reported_and_removed() {
    if !require_root() {
        return;
    }
    for (kept, other) in [("legacy", "nft"), ("nft", "legacy")] {
        for chosen in [kept, "auto"] {
            let ns = TestNetns::new("twoback");
            assert_exit(&meshinit(&ns, &["apply", ECS_CONFIG, "--backend", kept]), 0);
            // Our rules in the other backend too (an older run, another tool): the kernel
            // evaluates both.
            let rendered = meshinit(&ns, &["render", ECS_CONFIG, "--family", "ipv4"]);
            assert_exit(&rendered, 0);
            ns.run_checked_with_stdin(
                &format!("iptables-{other}-restore"),
                &["--noflush"],
                &stdout(&rendered),
            );
            if chosen == "auto" && kept == "nft" {
                // auto keeps legacy once it holds rules; that case is the first pair's.
                continue;
            }
            let status = meshinit(&ns, &["status", ECS_CONFIG, "--backend", chosen]);
            assert_exit(&status, 1);
            assert!(
                stdout(&status).contains(&format!("iptables-{other}")),
                "status names the other backend:\n{}",
                stdout(&status)
            );
            let apply = meshinit(&ns, &["apply", ECS_CONFIG, "--backend", chosen]);
            assert_exit(&apply, 0);
            assert!(
                stderr(&apply).contains(&format!("iptables-{other}")),
                "apply says it removed the other backend's rules: {}",
                stderr(&apply)
            );
            let left = if other == "legacy" {
                legacy_nat_state(&ns)
            } else {
                nat_state(&ns, other)
            };
            assert!(
                !left.contains("APPMESH"),
                "{other} still holds ours:\n{left}"
            );
            assert!(nat_state(&ns, kept).contains("APPMESH_EGRESS"));
            assert_exit(
                &meshinit(&ns, &["status", ECS_CONFIG, "--backend", chosen]),
                0,
            );
        }
    }
}

#[test]
fn clean_after_a_legacy_apply_with_sets_removes_everything() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("cleanleg");
    let long = long_list_args("15001", 2);
    let mut apply = with_verb("apply", &long);
    apply.extend(["--backend", "legacy"]);
    // Ports long enough for a port set too.
    let ports: Vec<String> = (0..100).map(|i| (20000 + i * 3).to_string()).collect();
    let ports = ports.join(",");
    apply.extend(["--egress-ignored-ports", &ports]);
    assert_exit(&meshinit(&ns, &apply), 0);
    assert!(nat_state(&ns, "legacy").contains("--match-set"));
    let output = meshinit(&ns, &["clean"]);
    assert_exit(&output, 0);
    assert!(!legacy_nat_state(&ns).contains("APPMESH"));
    assert!(!nat_state(&ns, "nft").contains("APPMESH"));
    let sets = ipset_names(&ns);
    assert!(
        !sets.iter().any(|s| s.starts_with("APPMESH")),
        "sets left: {sets:?}"
    );
}
