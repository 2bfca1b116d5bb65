//! `explain --live` with the native backend: when the installed `inet meshinit` table has
//! drifted (a rule deleted, altered, or one meshinit never writes added, with `nft` in a
//! throwaway namespace), it says what the installed table decides, names the deciding
//! rule as installed, and that answer matches where a real connection lands. Needs root.

mod common;

use common::scene::*;
use common::*;

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");

fn env_config() -> Vec<(String, String)> {
    std::fs::read_to_string(ENV_CONFIG)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `explain --live --json` about an outbound connection to `dest` as `uid`: exit code and
/// the answer.
fn explain_live(scene: &Scene, dest: &str, uid: u32) -> (Option<i32>, serde_json::Value) {
    let out = scene
        .net
        .app
        .command(MESHINIT)
        .args(["explain", "--from-env", "--backend", "nftables", "--live"])
        .args([
            "--direction",
            "out",
            "--to",
            dest,
            "--uid",
            &uid.to_string(),
        ])
        .args(["--gid", "4242", "--json"])
        .envs(env_config())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let answer = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), answer)
}

/// The handle of the first rule of chain `output` whose `nft -a list` line contains
/// `needle`.
fn handle_of(scene: &Scene, needle: &str) -> String {
    let listed = scene.net.app.run_checked(
        "nft",
        &["-a", "list", "chain", "inet", "meshinit", "output"],
    );
    let line = listed
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle}:\n{listed}"));
    line.rsplit_once("# handle ")
        .unwrap_or_else(|| panic!("no handle in {line}"))
        .1
        .trim()
        .to_owned()
}

fn nft(scene: &Scene, args: &[&str]) {
    scene.net.app.run_checked("nft", args);
}

/// The installed answer's port (`None`: not redirected), checked against where a real
/// connection went: the proxy listening on that port, or the remote host.
fn agrees_with_a_real_connection(scene: &Scene, answer: &serde_json::Value, dest: &str, uid: u32) {
    let installed = &answer["live"]["installed"];
    let outcome = scene.connect_from_app(dest, (uid, 4242));
    match installed["action"].as_str() {
        Some("redirected") => {
            let proxy = match installed["port"].as_u64() {
                Some(15001) => &scene.egress_proxy,
                Some(15000) => &scene.ingress_proxy,
                other => panic!("no listener for port {other:?}: {answer}"),
            };
            assert_redirected(&outcome, proxy, addr(dest));
        }
        Some("not_redirected") => {
            let remote = match addr(dest).port() {
                80 => &scene.remote_80,
                7000 => &scene.remote_7000,
                other => panic!("no remote on port {other}"),
            };
            assert_direct(&outcome, remote);
        }
        other => panic!("no installed answer ({other:?}): {answer}"),
    }
}

#[test]
fn explain_live_says_what_a_drifted_native_table_decides_and_traffic_agrees() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let apply = scene
        .net
        .app
        .command(MESHINIT)
        .args(["apply", "--from-env", "--backend", "nftables"])
        .envs(env_config())
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    // In sync: no installed walk needed.
    let (code, answer) = explain_live(&scene, "203.0.113.7:80", PROXY_UID);
    assert_eq!(code, Some(0), "{answer}");
    assert_eq!(answer["live"]["in_sync"], true, "{answer}");

    // 1. The proxy's uid rule deleted: the plan says not redirected, the table redirects.
    let handle = handle_of(&scene, "meta skuid 1337");
    nft(
        &scene,
        &[
            "delete", "rule", "inet", "meshinit", "output", "handle", &handle,
        ],
    );
    let (code, answer) = explain_live(&scene, "203.0.113.7:80", PROXY_UID);
    assert_eq!(code, Some(1), "{answer}");
    assert_eq!(answer["action"], "not_redirected", "{answer}");
    let installed = &answer["live"]["installed"];
    assert_eq!(installed["action"], "redirected", "{answer}");
    assert_eq!(installed["port"], 15001, "{answer}");
    assert_eq!(installed["decided_by"]["chain"], "output", "{answer}");
    assert_eq!(
        installed["decided_by"]["rule"], "meta l4proto tcp redirect to :15001",
        "{answer}"
    );
    assert!(
        installed["reason"]
            .as_str()
            .unwrap()
            .starts_with("redirected to 15001, the ProxyEgressPort"),
        "{answer}"
    );
    agrees_with_a_real_connection(&scene, &answer, "203.0.113.7:80", PROXY_UID);

    // 2. The redirect altered to another port: named as not the configuration's.
    let handle = handle_of(&scene, "redirect to :15001");
    nft(
        &scene,
        &[
            "replace", "rule", "inet", "meshinit", "output", "handle", &handle, "meta", "l4proto",
            "tcp", "counter", "redirect", "to", ":15000",
        ],
    );
    let (code, answer) = explain_live(&scene, "203.0.113.7:80", 1000);
    assert_eq!(code, Some(1), "{answer}");
    assert_eq!(answer["action"], "redirected", "{answer}");
    assert_eq!(answer["port"], 15001, "{answer}");
    let installed = &answer["live"]["installed"];
    assert_eq!(installed["port"], 15000, "{answer}");
    assert!(
        installed["reason"].as_str().unwrap().contains(
            "redirected to 15000 by an installed rule (the configuration's ProxyEgressPort is \
             15001)"
        ),
        "{answer}"
    );
    agrees_with_a_real_connection(&scene, &answer, "203.0.113.7:80", 1000);

    // An ignored destination still decides by its installed rule, with the user's terms.
    let (_, answer) = explain_live(&scene, "203.0.113.200:80", 1000);
    let installed = &answer["live"]["installed"];
    assert_eq!(installed["action"], "not_redirected", "{answer}");
    assert!(
        installed["reason"]
            .as_str()
            .unwrap()
            .contains("203.0.113.200 is in EgressIgnoredIPs as 203.0.113.128/25"),
        "{answer}"
    );
    assert!(
        installed["decided_by"]["rule"]
            .as_str()
            .unwrap()
            .contains("ip daddr @"),
        "{answer}"
    );
    agrees_with_a_real_connection(&scene, &answer, "203.0.113.200:80", 1000);

    // An inbound connection: the prerouting redirect altered to the egress proxy's port.
    let listed = scene.net.app.run_checked(
        "nft",
        &["-a", "list", "chain", "inet", "meshinit", "prerouting"],
    );
    let line = listed
        .lines()
        .find(|l| l.contains("redirect to :15000"))
        .unwrap_or_else(|| panic!("{listed}"));
    let handle = line.rsplit_once("# handle ").unwrap().1.trim();
    nft(
        &scene,
        &[
            "replace",
            "rule",
            "inet",
            "meshinit",
            "prerouting",
            "handle",
            handle,
            "tcp",
            "dport",
            "@app_ports",
            "counter",
            "redirect",
            "to",
            ":15001",
        ],
    );
    let out = scene
        .net
        .app
        .command(MESHINIT)
        .args(["explain", "--from-env", "--backend", "nftables", "--live"])
        .args(["--direction", "in", "--to", "198.51.100.1:9080", "--json"])
        .envs(env_config())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let installed = &answer["live"]["installed"];
    assert_eq!(answer["port"], 15000, "{answer}");
    assert_eq!(installed["port"], 15001, "{answer}");
    assert_eq!(installed["decided_by"]["chain"], "prerouting", "{answer}");
    assert!(
        installed["reason"].as_str().unwrap().contains(
            "redirected to 15001 by an installed rule (the configuration's ProxyIngressPort is \
             15000)"
        ),
        "{answer}"
    );
    assert_redirected(
        &scene.connect_from_peer("198.51.100.1:9080"),
        &scene.egress_proxy,
        addr("198.51.100.1:9080"),
    );

    // 3. A rule meshinit never writes, before the decision: named, not evaluated.
    nft(
        &scene,
        &[
            "insert", "rule", "inet", "meshinit", "output", "meta", "mark", "0x2a", "return",
        ],
    );
    let (code, answer) = explain_live(&scene, "203.0.113.7:7000", 1000);
    assert_eq!(code, Some(1), "{answer}");
    let not_followed = answer["live"]["not_followed"].as_array().unwrap();
    assert_eq!(not_followed.len(), 1, "{answer}");
    let named = not_followed[0].as_str().unwrap();
    assert!(
        named.starts_with("rule 1 of chain output (") && named.contains("return"),
        "{answer}"
    );
    // The unmarked connection is not matched by it: the walk's answer holds.
    assert_eq!(answer["live"]["installed"]["port"], 15000, "{answer}");
    agrees_with_a_real_connection(&scene, &answer, "203.0.113.7:7000", 1000);
}
