//! `meshinit apply` where it cannot or must not go on: bad configuration, a failed restore,
//! no IPv6, missing tools or capabilities, the machine's own namespace, an unusable
//! `--netns` path. Each exits with its documented code and leaves the rules as they were.
//! Needs root (skips outside CI without it; fails in CI).

mod common;

use std::process::Command;

use common::scene::*;
use common::*;

#[test]
fn bad_configuration_exits_2_and_leaves_the_rules_untouched() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("badcfg");
    assert_exit(&meshinit(&ns, &["apply", ECS_CONFIG]), 0);
    let before = ours_anywhere(&ns);
    assert!(!before.is_empty(), "the first apply installed nothing");
    for args in [
        vec!["apply", "--ignored-uid", "1337"],
        vec![
            "apply",
            "--ignored-uid",
            "x",
            "--proxy-egress-port",
            "15001",
        ],
        vec![
            "apply",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--app-ports",
            "80",
        ],
        vec!["apply", ECS_CONFIG, "--proxy-ingress-port", "15001"],
        vec![
            "apply",
            ECS_CONFIG,
            "--egress-ignored-ips",
            "10.0.0.1\n-A OUTPUT -j ACCEPT",
        ],
        vec!["clean", "--backend", "bogus"],
    ] {
        let output = meshinit(&ns, &args);
        assert_exit(&output, 2);
        assert_eq!(before, ours_anywhere(&ns), "{args:?} changed the rules");
    }
}

#[test]
fn a_failed_restore_leaves_the_rules_exactly_as_before() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("lockfail");
    assert_exit(
        &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", "legacy"]),
        0,
    );
    let before = nat_state(&ns, "legacy");
    // Hold a private xtables lock so the legacy restore really fails, like under contention.
    let lock = XtablesLockHolder::hold("failedrestore");
    let output = meshinit_with_env(
        &ns,
        &[
            "apply",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "16001",
            "--backend",
            "legacy",
            "--lock-timeout",
            "1s",
        ],
        &[("XTABLES_LOCKFILE", lock.lockfile())],
    );
    drop(lock);
    assert_exit(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("iptables-legacy-restore failed"), "{err}");
    assert!(
        err.contains("xtables lock"),
        "the restore's stderr is quoted: {err}"
    );
    assert!(
        err.contains("waiting"),
        "says that it waits for the lock: {err}"
    );
    assert_eq!(before, nat_state(&ns, "legacy"));
}

#[test]
fn ipv6_disabled_namespace_auto_continues_with_ipv4_and_on_fails() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("noipv6");
    ns.run_checked("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    let output = meshinit(&ns, &["apply", ECS_CONFIG]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("programming IPv4 only"),
        "{}",
        stderr(&output)
    );
    let on = meshinit(&ns, &["apply", ECS_CONFIG, "--ipv6", "on"]);
    assert_exit(&on, 4);
    assert!(stderr(&on).contains("IPv6 is required"), "{}", stderr(&on));
}

#[test]
fn missing_iptables_exits_4_and_missing_capability_exits_3() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("env");
    let output = ns
        .command("env")
        .args([
            "PATH=/nonexistent",
            MESHINIT,
            "apply",
            ECS_CONFIG,
            "--backend",
            "iptables-nft",
        ])
        .output()
        .unwrap();
    assert_exit(&output, 4);
    assert!(
        stderr(&output).contains("is not installed"),
        "{}",
        stderr(&output)
    );
    // Without any iptables program, `auto` uses nf_tables over netlink, which needs none.
    let output = ns
        .command("env")
        .args(["PATH=/nonexistent", MESHINIT, "apply", ECS_CONFIG])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("backend=nftables"),
        "{}",
        stderr(&output)
    );
    assert!(
        ns.run_checked("nft", &["list", "table", "inet", "meshinit"])
            .contains("redirect")
    );

    let before = ours_anywhere(&ns);
    let output = ns
        .command("setpriv")
        .args([
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            MESHINIT,
            "apply",
            ECS_CONFIG,
        ])
        .output()
        .unwrap();
    assert_exit(&output, 3);
    let err = stderr(&output);
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("securityContext"),
        "{err}"
    );
    assert_eq!(
        before,
        ours_anywhere(&ns),
        "a run without CAP_NET_ADMIN changed rules"
    );
}

#[test]
fn refuses_the_machines_own_namespace() {
    if !require_root() {
        return;
    }
    // Run in this machine's namespace, but with an iptables backend and no iptables
    // reachable on PATH: even if the guard were broken nothing could be installed here (the
    // native backend needs no program, so `auto` is never run here), and the message tells
    // them apart.
    let output = Command::new(MESHINIT)
        .args(["apply", ECS_CONFIG, "--backend", "iptables-nft"])
        .env("PATH", "/nonexistent-meshinit-test")
        .output()
        .unwrap();
    assert_exit(&output, 4);
    assert!(
        stderr(&output).contains("machine's own network namespace"),
        "{}",
        stderr(&output)
    );
    // A namespace made by `ip netns` is not refused.
    let ns = TestNetns::new("guard");
    assert_exit(&meshinit(&ns, &["apply", ECS_CONFIG, "--dry-run"]), 0);
}

#[test]
fn an_unusable_netns_path_exits_4() {
    if !require_root() {
        return;
    }
    for path in ["/var/run/netns/meshinit-does-not-exist", "/etc/hostname"] {
        let output = Command::new(MESHINIT)
            .args(["apply", ECS_CONFIG, "--netns", path])
            .output()
            .unwrap();
        assert_exit(&output, 4);
        assert!(stderr(&output).contains(path), "{}", stderr(&output));
    }
}
