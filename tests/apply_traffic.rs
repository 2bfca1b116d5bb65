//! `meshinit apply` / `clean` / `status` in throwaway namespaces, proven with real TCP
//! connections: where each one lands, and what `iptables-save` holds afterwards.
//! Needs root (skips outside CI without it; fails in CI).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Output};

use common::*;

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");
const ECS_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/configs/traffic-ecs.json"
);
const CNI_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/configs/traffic-cni.json"
);
const ENV_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/configs/traffic.env");

const PROXY_UID: u32 = 1337;
const PROXY_GID: u32 = 1338;
/// An ordinary application user.
const APP_USER: (u32, u32) = (1000, 1000);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Runs meshinit inside `ns` (as an init container would) and returns its output.
fn meshinit(ns: &TestNetns, args: &[&str]) -> Output {
    meshinit_with_env(ns, args, &[])
}

fn meshinit_with_env(ns: &TestNetns, args: &[&str], env: &[(&str, &str)]) -> Output {
    ns.command(MESHINIT)
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .expect("meshinit runs")
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Both families' nat tables as iptables-nft-save prints them, without the timestamped
/// comment lines, for byte comparisons.
/// Makes the legacy backend usable on a fresh kernel, as on any node that uses it: meshinit
/// drops CAP_SYS_MODULE before running iptables (as in a container), so `iptables-legacy`
/// cannot load `ip_tables`/`ip6_tables` for it; root's own save here does (VM kernels need it).
fn load_legacy_modules(ns: &TestNetns) {
    nat_state(ns, "legacy");
}

fn nat_state(ns: &TestNetns, backend: &str) -> String {
    let mut out = String::new();
    for family in ["iptables", "ip6tables"] {
        let save = ns.run_checked(&format!("{family}-{backend}-save"), &["-t", "nat"]);
        out.extend(
            save.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n")),
        );
    }
    out
}

/// The traffic fixture: remote hosts on the peer, the proxy's ports and some app ports in
/// the app namespace.
struct Scene {
    net: NetnsPair,
    egress_proxy: Listener,
    ingress_proxy: Listener,
    app_9080: Listener,
    app_8080: Listener,
    remote_80: Listener,
    remote_22: Listener,
    remote_5015: Listener,
    remote_6005: Listener,
    remote_7000: Listener,
}

impl Scene {
    fn new() -> Scene {
        let net = NetnsPair::new();
        for ip in [
            "203.0.113.7",
            "203.0.113.200",
            "169.254.169.254",
            "169.254.170.2",
            "2001:db8:ff::7",
            "2001:db8:ff:1::7",
            "fd00:ec2::254",
        ] {
            net.peer.add_address(ip.parse::<IpAddr>().unwrap());
        }
        Scene {
            egress_proxy: net.app.listen(15001),
            ingress_proxy: net.app.listen(15000),
            app_9080: net.app.listen(9080),
            app_8080: net.app.listen(8080),
            remote_80: net.peer.listen(80),
            remote_22: net.peer.listen(22),
            remote_5015: net.peer.listen(5015),
            remote_6005: net.peer.listen(6005),
            remote_7000: net.peer.listen(7000),
            net,
        }
    }

    fn connect_from_app(&self, dest: &str, user: (u32, u32)) -> ConnectOutcome {
        self.net
            .app
            .connect(addr(dest), Some(user), DEFAULT_CONNECT_TIMEOUT)
    }

    fn connect_from_peer(&self, dest: &str) -> ConnectOutcome {
        self.net
            .peer
            .connect(addr(dest), None, DEFAULT_CONNECT_TIMEOUT)
    }

    /// Every outcome the traffic config promises, both families.
    fn assert_configured_traffic(&self) {
        // Ordinary egress goes to the proxy, original destination intact.
        for dest in ["203.0.113.7:80", "[2001:db8:ff::7]:80", "203.0.113.7:7000"] {
            assert_redirected(
                &self.connect_from_app(dest, APP_USER),
                &self.egress_proxy,
                addr(dest),
            );
        }
        // The root user is an ordinary user too.
        let outcome = self
            .net
            .app
            .connect(addr("203.0.113.7:80"), None, DEFAULT_CONNECT_TIMEOUT);
        assert_redirected(&outcome, &self.egress_proxy, addr("203.0.113.7:80"));
        // The proxy's own user and group go direct.
        for dest in ["203.0.113.7:80", "[2001:db8:ff::7]:80"] {
            assert_direct(
                &self.connect_from_app(dest, (PROXY_UID, 4242)),
                &self.remote_80,
            );
            assert_direct(
                &self.connect_from_app(dest, (4242, PROXY_GID)),
                &self.remote_80,
            );
        }
        // Port 22, the 16th ignored port and a port inside an ignored range go direct.
        for (dest, remote) in [
            ("203.0.113.7:22", &self.remote_22),
            ("[2001:db8:ff::7]:22", &self.remote_22),
            ("203.0.113.7:5015", &self.remote_5015),
            ("[2001:db8:ff::7]:5015", &self.remote_5015),
            ("203.0.113.7:6005", &self.remote_6005),
        ] {
            assert_direct(&self.connect_from_app(dest, APP_USER), remote);
        }
        // Metadata endpoints and ignored CIDRs go direct.
        for dest in [
            "169.254.169.254:80",
            "169.254.170.2:80",
            "203.0.113.200:80",
            "[2001:db8:ff:1::7]:80",
            "[fd00:ec2::254]:80",
        ] {
            assert_direct(&self.connect_from_app(dest, APP_USER), &self.remote_80);
        }
        // Local traffic is untouched.
        for dest in [
            "127.0.0.1:8080",
            "198.51.100.1:8080",
            "[::1]:8080",
            "[2001:db8:100::1]:8080",
        ] {
            assert_direct(&self.connect_from_app(dest, APP_USER), &self.app_8080);
        }
        // Inbound: AppPorts go to the ingress proxy, other ports are untouched.
        for dest in [
            "198.51.100.1:9080",
            "[2001:db8:100::1]:9080",
            "198.51.100.1:9443",
        ] {
            assert_redirected(
                &self.connect_from_peer(dest),
                &self.ingress_proxy,
                addr(dest),
            );
        }
        for dest in ["198.51.100.1:8080", "[2001:db8:100::1]:8080"] {
            assert_direct(&self.connect_from_peer(dest), &self.app_8080);
        }
    }

    /// Without rules, everything goes where it was sent.
    fn assert_direct_traffic(&self) {
        for dest in ["203.0.113.7:80", "[2001:db8:ff::7]:80"] {
            assert_direct(&self.connect_from_app(dest, APP_USER), &self.remote_80);
        }
        assert_direct(
            &self.connect_from_app("203.0.113.7:7000", APP_USER),
            &self.remote_7000,
        );
        for dest in ["198.51.100.1:9080", "[2001:db8:100::1]:9080"] {
            assert_direct(&self.connect_from_peer(dest), &self.app_9080);
        }
    }
}

#[test]
fn ecs_config_redirects_and_exempts_as_configured_over_ipv4_and_ipv6() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    scene.assert_direct_traffic();
    assert_exit(&meshinit(&scene.net.app, &["apply", ECS_CONFIG]), 0);
    scene.assert_configured_traffic();
}

#[test]
fn cni_config_applied_from_the_host_with_netns_gives_the_same_outcomes() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let netns = scene.net.app.path().to_str().unwrap().to_owned();
    // Run from the machine's namespace: meshinit enters --netns before anything else.
    let output = Command::new(MESHINIT)
        .args(["apply", CNI_CONFIG, "--netns", &netns])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    scene.assert_configured_traffic();
}

#[test]
fn init_container_environment_gives_the_same_outcomes_and_rules() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let env_text = std::fs::read_to_string(ENV_CONFIG).unwrap();
    let vars: Vec<(&str, &str)> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_exit(
        &meshinit_with_env(&scene.net.app, &["apply", "--from-env"], &vars),
        0,
    );
    scene.assert_configured_traffic();
    // The three surfaces render the same ruleset, so status against the others is in sync.
    assert_exit(&meshinit(&scene.net.app, &["status", ECS_CONFIG]), 0);
    assert_exit(&meshinit(&scene.net.app, &["status", CNI_CONFIG]), 0);
}

#[test]
fn reapply_is_byte_identical_and_foreign_rules_survive_apply_and_clean() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    // Someone else's chain and rules, in the nat table and elsewhere.
    app.run_checked_with_stdin(
        "iptables-nft-restore",
        &["--noflush"],
        "*nat\n:FOREIGN_CHAIN - [0:0]\n-A FOREIGN_CHAIN -p udp -j RETURN\n\
         -A OUTPUT -p udp --dport 53 -j FOREIGN_CHAIN\n-A PREROUTING -p udp -j ACCEPT\nCOMMIT\n\
         *filter\n-A INPUT -p tcp --dport 9999 -j ACCEPT\nCOMMIT\n",
    );
    let foreign_before = app.run_checked("iptables-nft-save", &[]);

    assert_exit(&meshinit(app, &["apply", ECS_CONFIG]), 0);
    let first = nat_state(app, "nft");
    assert_exit(&meshinit(app, &["apply", ECS_CONFIG]), 0);
    assert_eq!(first, nat_state(app, "nft"), "re-apply changed the rules");
    assert!(first.contains(":FOREIGN_CHAIN") && first.contains("-j FOREIGN_CHAIN"));
    assert_eq!(first.matches("-j APPMESH_EGRESS").count(), 2, "{first}");
    scene.assert_configured_traffic();
    assert_exit(&meshinit(app, &["status", ECS_CONFIG]), 0);

    assert_exit(&meshinit(app, &["clean"]), 0);
    assert_exit(&meshinit(app, &["clean"]), 0);
    let after = app.run_checked("iptables-nft-save", &[]);
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert_eq!(
        strip(&foreign_before),
        strip(&after),
        "clean changed foreign rules"
    );
    assert!(!nat_state(app, "nft").contains("APPMESH"));
    scene.assert_direct_traffic();
    // Status says absent (exit 1) once cleaned.
    let status = meshinit(app, &["status", ECS_CONFIG]);
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
        "-t nat -N APPMESH_OLD",
        "-t nat -A OUTPUT -p tcp --dport 1 -j APPMESH_OLD",
    ] {
        app.iptables("iptables-nft", rule);
    }
    let status = meshinit(app, &["status", ECS_CONFIG]);
    assert_exit(&status, 1);
    assert!(String::from_utf8_lossy(&status.stdout).contains("unexpected"));

    assert_exit(&meshinit(app, &["apply", ECS_CONFIG]), 0);
    assert_exit(&meshinit(app, &["status", ECS_CONFIG]), 0);
    let replaced = nat_state(app, "nft");

    // Exactly what a fresh namespace gets.
    let fresh = TestNetns::new("fresh");
    assert_exit(&meshinit(&fresh, &["apply", ECS_CONFIG]), 0);
    assert_eq!(replaced, nat_state(&fresh, "nft"));
    scene.assert_configured_traffic();
}

#[test]
fn auto_uses_legacy_when_legacy_already_holds_rules() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    load_legacy_modules(app);
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
fn bad_configuration_exits_2_and_leaves_the_rules_untouched() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("badcfg");
    assert_exit(&meshinit(&ns, &["apply", ECS_CONFIG]), 0);
    let before = nat_state(&ns, "nft");
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
        assert_eq!(before, nat_state(&ns, "nft"), "{args:?} changed the rules");
    }
}

#[test]
fn a_failed_restore_leaves_the_rules_exactly_as_before() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("lockfail");
    load_legacy_modules(&ns);
    assert_exit(
        &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", "legacy"]),
        0,
    );
    let before = nat_state(&ns, "legacy");
    // Hold a private xtables lock so the legacy restore really fails, like under contention.
    let lock = std::env::temp_dir().join(format!("meshinit-test-{}.lock", std::process::id()));
    std::fs::write(&lock, "").unwrap();
    let lock_str = lock.to_str().unwrap();
    let mut holder = Command::new("flock")
        .args([lock_str, "sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
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
        &[("XTABLES_LOCKFILE", lock_str)],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    let _ = std::fs::remove_file(&lock);
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
        .args(["PATH=/nonexistent", MESHINIT, "apply", ECS_CONFIG])
        .output()
        .unwrap();
    assert_exit(&output, 4);
    assert!(
        stderr(&output).contains("is not installed"),
        "{}",
        stderr(&output)
    );

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
    assert!(!nat_state(&ns, "nft").contains("APPMESH"));
}

#[test]
fn refuses_the_machines_own_namespace() {
    if !require_root() {
        return;
    }
    // Run in this machine's namespace, but with no iptables reachable on PATH: even if the
    // guard were broken nothing could be installed here, and the message tells them apart.
    let output = Command::new(MESHINIT)
        .args(["apply", ECS_CONFIG])
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
fn dry_run_prints_the_payload_and_changes_nothing() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("dryrun");
    let before = nat_state(&ns, "nft");
    let output = meshinit(&ns, &["apply", ECS_CONFIG, "--dry-run"]);
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS"));
    assert!(stdout.contains("COMMIT"));
    assert_eq!(before, nat_state(&ns, "nft"));
}

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
    ];
    assert_exit(&meshinit(app, &args), 0);
    let rules = nat_state(app, "nft");
    assert!(
        rules.contains("--match-set APPMESH_IGNORED_NET4 dst"),
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

#[test]
fn reapplying_a_changed_config_never_lets_traffic_bypass_the_proxy() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    let with_ignored_ports =
        |ports: &'static str| vec!["apply", ECS_CONFIG, "--egress-ignored-ports", ports];
    assert_exit(&meshinit(app, &with_ignored_ports("7001")), 0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let outcomes = std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut outcomes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                outcomes.push(scene.connect_from_app("203.0.113.7:80", APP_USER));
            }
            outcomes
        });
        for round in 0..12 {
            let ports = if round % 2 == 0 {
                "7002,7003-7010"
            } else {
                "7001"
            };
            assert_exit(&meshinit(app, &with_ignored_ports(ports)), 0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        prober.join().unwrap()
    });
    assert!(
        outcomes.len() > 10,
        "too few probes ({}) to mean anything",
        outcomes.len()
    );
    for outcome in &outcomes {
        assert_redirected(outcome, &scene.egress_proxy, addr("203.0.113.7:80"));
    }
}

#[test]
fn status_json_reports_drift_precisely() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("statusjson");
    assert_exit(&meshinit(&ns, &["apply", ECS_CONFIG]), 0);
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

#[test]
fn switching_ipv6_off_removes_the_ipv6_rules() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("ipv6off");
    assert_exit(&meshinit(&ns, &["apply", ECS_CONFIG]), 0);
    assert!(
        ns.run_checked("ip6tables-nft-save", &["-t", "nat"])
            .contains("APPMESH_EGRESS")
    );
    assert_exit(&meshinit(&ns, &["apply", ECS_CONFIG, "--ipv6", "off"]), 0);
    assert!(
        !ns.run_checked("ip6tables-nft-save", &["-t", "nat"])
            .contains("APPMESH")
    );
    assert!(
        ns.run_checked("iptables-nft-save", &["-t", "nat"])
            .contains("APPMESH_EGRESS")
    );
    assert_exit(&meshinit(&ns, &["status", ECS_CONFIG, "--ipv6", "off"]), 0);
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
