//! `status --counters`: each planned rule's counter rises by exactly the number of
//! connections a test makes through it, and by nothing for connections it does not decide.
//! Real connections through real rules in throwaway namespaces; needs root.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;

use common::scene::*;
use common::*;

/// Connections made per class.
const N: u64 = 3;

/// Every rule that sees IPv4 (the IPv4 family's, or the native table's shared ones) and
/// its connection count, by rule text. `path` is meshinit's PATH (the native backend's
/// without `nft`: counters are read over netlink).
fn counters(scene: &Scene, backend: &str, path: &OsString) -> BTreeMap<String, u64> {
    let out = scene
        .net
        .app
        .command(MESHINIT)
        .env("PATH", path)
        .args([
            "status",
            "--from-env",
            "--backend",
            backend,
            "--counters",
            "--json",
        ])
        .envs(env_config())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["family"] == "ipv4" || c["family"].is_null())
        // The namespace's own non-TCP traffic (IPv6 neighbour discovery...) is not the
        // test's to count.
        .filter(|c| c["rule"] != NATIVE_NOT_TCP)
        .map(|c| {
            let rule = c["rule"].as_str().unwrap().to_owned();
            let n = c["connections"]
                .as_u64()
                .unwrap_or_else(|| panic!("{rule} is not installed"));
            (rule, n)
        })
        .collect()
}

fn env_config() -> Vec<(String, String)> {
    std::fs::read_to_string(ENV_CONFIG)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Makes N connections with `connect` and checks that exactly the rules in `through`
/// counted N more, and every other rule of the family nothing.
fn check(
    scene: &Scene,
    (backend, path): (&str, &OsString),
    what: &str,
    through: &[&str],
    connect: impl Fn() -> ConnectOutcome,
) {
    let before = counters(scene, backend, path);
    for rule in through {
        assert!(
            before.contains_key(*rule),
            "{backend}: no planned rule {rule}: {before:#?}"
        );
    }
    for _ in 0..N {
        let outcome = connect();
        assert!(outcome.result.is_ok(), "{backend} {what}: {outcome}");
    }
    let after = counters(scene, backend, path);
    for (rule, was) in &before {
        let expected = if through.contains(&rule.as_str()) {
            N
        } else {
            0
        };
        assert_eq!(
            after[rule] - was,
            expected,
            "{backend}, {N} connections {what}: rule {rule} counted {} more",
            after[rule] - was
        );
    }
}

const NATIVE_NOT_TCP: &str = "meta l4proto != tcp return";

/// The rules each kind of connection goes through, per backend.
struct Rules {
    /// Outbound TCP to another host enters our rules.
    enter_out: &'static [&'static str],
    /// Inbound TCP from elsewhere enters our rules.
    enter_in: &'static [&'static str],
    uid: &'static str,
    gid: &'static str,
    port_5015: &'static str,
    network: &'static str,
    redirect: &'static str,
    local: &'static [&'static str],
    app_port: &'static str,
}

const IPTABLES: Rules = Rules {
    enter_out: &["-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS"],
    enter_in: &["-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS"],
    uid: "-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
    gid: "-A APPMESH_EGRESS -m owner --gid-owner 1338 -j RETURN",
    port_5015: "-A APPMESH_EGRESS -p tcp -m multiport --dports 5015,6000:6010,22 -j RETURN",
    network: "-A APPMESH_EGRESS -d 203.0.113.128/25 -p tcp -j RETURN",
    redirect: "-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001",
    local: &[],
    app_port: "-A APPMESH_INGRESS -p tcp -m multiport --dports 9080,9443 -j REDIRECT --to-ports 15000",
};

/// The native table has no jumps: its base chains' guards return what is not ours.
const NATIVE: Rules = Rules {
    enter_out: &[],
    enter_in: &[],
    uid: "meta skuid 1337 return",
    gid: "meta skgid 1338 return",
    port_5015: "tcp dport @ignored_ports return",
    network: "ip daddr @ignored_ipv4 return",
    redirect: "meta l4proto tcp redirect to :15001",
    local: &["fib daddr type local return"],
    app_port: "tcp dport @app_ports redirect to :15000",
};

fn with<'a>(first: &[&'a str], rule: &'a str) -> Vec<&'a str> {
    first.iter().copied().chain([rule]).collect()
}

#[test]
fn every_rule_counts_exactly_the_connections_it_decides() {
    if !require_root() {
        return;
    }
    let without_nft = PathWithout::new("nft");
    let whole_path = std::env::var_os("PATH").unwrap_or_default();
    for backend in ["nftables", "iptables-nft", "iptables-legacy"] {
        let scene = Scene::new();
        let path = if backend == "nftables" {
            without_nft.path_env()
        } else {
            whole_path.clone()
        };
        let b = (backend, &path);
        let apply = scene
            .net
            .app
            .command(MESHINIT)
            .args(["apply", "--from-env", "--backend", backend])
            .envs(env_config())
            .output()
            .unwrap();
        assert!(
            apply.status.success(),
            "{}",
            String::from_utf8_lossy(&apply.stderr)
        );
        let r = if backend == "nftables" {
            &NATIVE
        } else {
            &IPTABLES
        };
        check(
            &scene,
            b,
            "as the proxy's uid",
            &with(r.enter_out, r.uid),
            || scene.connect_from_app("203.0.113.7:80", (PROXY_UID, 4242)),
        );
        check(
            &scene,
            b,
            "as the proxy's gid",
            &with(r.enter_out, r.gid),
            || scene.connect_from_app("203.0.113.7:80", (4242, PROXY_GID)),
        );
        check(
            &scene,
            b,
            "to ignored port 5015",
            &with(r.enter_out, r.port_5015),
            || scene.connect_from_app("203.0.113.7:5015", APP_USER),
        );
        check(
            &scene,
            b,
            "to an ignored network",
            &with(r.enter_out, r.network),
            || scene.connect_from_app("203.0.113.200:80", APP_USER),
        );
        check(
            &scene,
            b,
            "redirected to the proxy",
            &with(r.enter_out, r.redirect),
            || scene.connect_from_app("203.0.113.7:80", APP_USER),
        );
        check(&scene, b, "to a local address", r.local, || {
            scene.connect_from_app("198.51.100.1:8080", APP_USER)
        });
        check(
            &scene,
            b,
            "inbound to an app port",
            &with(r.enter_in, r.app_port),
            || scene.connect_from_peer("198.51.100.1:9080"),
        );
        check(&scene, b, "inbound to another port", r.enter_in, || {
            scene.connect_from_peer("198.51.100.1:8080")
        });
        // Counts are not drift: after all that traffic the rules are still in sync.
        let status = scene
            .net
            .app
            .command(MESHINIT)
            .args(["status", "--from-env", "--backend", backend])
            .envs(env_config())
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_eq!(
            status.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&status.stdout)
        );
    }
}
