//! meshinit as a CNI plugin, run exactly as a runtime runs it (parameters in `CNI_*`
//! variables, configuration on standard input) from a test "node" namespace against a pod
//! namespace, proven with each backend's own program (iptables-save, nft) and real
//! connections; the traffic tests run once per backend CNI's `auto` can choose. Requests refused before any
//! namespace is entered are in cni_errors.rs, which runs without root.
//! Needs root (skips outside CI without it; fails in CI), except VERSION.

mod cni_runtime;
mod common;

use std::net::SocketAddr;

use serde_json::{Value, json};

use cni_runtime::fixture::{
    APP_PORT, EGRESS_PORT, INGRESS_PORT, PROXY_UID, decodable_but_wrong_configs, netconf, with,
};
use cni_runtime::{
    Attachment, MESHINIT, PluginRun, assert_nothing_installed, backend_holding_ours, nat_state,
    ours_anywhere, run_meshinit, steer_auto_to,
};
use common::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The runtime's namespace ("node", where meshinit runs) and the pod's (with a peer that
/// stands in for the rest of the network).
struct Scene {
    node: TestNetns,
    net: NetnsPair,
}

impl Scene {
    fn new() -> Scene {
        Scene {
            node: TestNetns::new("node"),
            net: NetnsPair::new(),
        }
    }

    fn pod(&self) -> &TestNetns {
        &self.net.app
    }

    fn attachment(&self) -> Attachment {
        Attachment::new("pod-1234", self.pod().path())
    }

    fn cni(&self, command: &str, config: &Value) -> PluginRun {
        run_meshinit(
            &self.node,
            command,
            Some(&self.attachment()),
            &config.to_string(),
        )
    }

    fn cni_with(&self, command: &str, attachment: &Attachment, config: &Value) -> PluginRun {
        run_meshinit(&self.node, command, Some(attachment), &config.to_string())
    }

    fn nat_state(&self) -> String {
        nat_state(self.pod())
    }
}

#[track_caller]
fn assert_installed_as_rendered(scene: &Scene, config: &Value) {
    cni_runtime::assert_installed_as_rendered(&scene.node, scene.pod(), config);
}

#[test]
fn version_lists_the_supported_versions() {
    // VERSION touches no namespace, so it runs anywhere, as any user.
    for (stdin, answer_version) in [(r#"{"cniVersion": "0.4.0"}"#, "0.4.0"), ("", "1.1.0")] {
        let output = std::process::Command::new(MESHINIT)
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(stdin.as_bytes())?;
                child.wait_with_output()
            })
            .expect("meshinit runs");
        assert!(output.status.success(), "{output:?}");
        let answer: Value = serde_json::from_slice(&output.stdout).expect("VERSION prints JSON");
        assert_eq!(
            answer,
            json!({
                "cniVersion": answer_version,
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            })
        );
    }
}

#[test]
fn add_installs_what_render_prints_and_redirects_traffic() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        add_installs_and_redirects(backend);
    }
}

fn add_installs_and_redirects(backend: &str) {
    let scene = Scene::new();
    steer_auto_to(scene.pod(), backend);
    let peer = &scene.net.peer;
    peer.add_address("203.0.113.7".parse().unwrap());
    peer.add_address("2001:db8:ff::7".parse().unwrap());
    let remote = peer.listen(80);
    let egress_proxy = scene.pod().listen(EGRESS_PORT);
    let ingress_proxy = scene.pod().listen(INGRESS_PORT);

    let config = netconf("1.0.0");
    let run = scene.cni("ADD", &config);
    run.assert_success();
    assert_eq!(
        run.json(),
        json!({"cniVersion": "1.0.0", "interfaces": [], "ips": [], "dns": {}}),
        "run alone, ADD prints an empty result"
    );
    assert_eq!(backend_holding_ours(scene.pod()), backend, "{run}");
    assert_installed_as_rendered(&scene, &config);

    for dest in ["203.0.113.7:80", "[2001:db8:ff::7]:80"] {
        let dest = addr(dest);
        let outcome = scene.pod().connect(dest, None, DEFAULT_CONNECT_TIMEOUT);
        assert_redirected(&outcome, &egress_proxy, dest);
        let outcome =
            scene
                .pod()
                .connect(dest, Some((PROXY_UID, PROXY_UID)), DEFAULT_CONNECT_TIMEOUT);
        assert_direct(&outcome, &remote);
    }
    let app_port = SocketAddr::new(APP_V4.into(), APP_PORT);
    let inbound = peer.connect(app_port, None, DEFAULT_CONNECT_TIMEOUT);
    assert_redirected(&inbound, &ingress_proxy, app_port);
}

#[test]
fn add_passes_prev_result_through_in_the_configuration_version() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let sandbox = scene.pod().path().display().to_string();
    let prev_1_0 = json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "6a:1f:00:00:00:01"},
            {"name": "eth0", "mac": "6a:1f:00:00:00:02", "sandbox": sandbox}
        ],
        "ips": [{"interface": 1, "address": "10.22.0.5/16", "gateway": "10.22.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.22.0.1"]}
    });

    let run = scene.cni(
        "ADD",
        &with(netconf("1.0.0"), "prevResult", prev_1_0.clone()),
    );
    run.assert_success();
    assert_eq!(
        run.json(),
        prev_1_0,
        "same version: passed through unchanged"
    );

    let run = scene.cni(
        "ADD",
        &with(netconf("1.1.0"), "prevResult", prev_1_0.clone()),
    );
    run.assert_success();
    assert_eq!(
        run.json(),
        with(prev_1_0.clone(), "cniVersion", json!("1.1.0"))
    );

    let run = scene.cni(
        "ADD",
        &with(netconf("0.4.0"), "prevResult", prev_1_0.clone()),
    );
    run.assert_success();
    let mut expected_0_4 = with(prev_1_0.clone(), "cniVersion", json!("0.4.0"));
    expected_0_4["ips"][0]["version"] = json!("4");
    assert_eq!(
        run.json(),
        expected_0_4,
        "0.4.0 results carry ips[].version"
    );

    let run = scene.cni("ADD", &with(netconf("1.0.0"), "prevResult", expected_0_4));
    run.assert_success();
    assert_eq!(run.json(), prev_1_0, "1.0.0 removed ips[].version");
    assert_installed_as_rendered(&scene, &netconf("1.0.0"));
}

#[test]
fn add_twice_changes_nothing() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let config = netconf("1.0.0");
    scene.cni("ADD", &config).assert_success();
    let first = scene.nat_state();
    scene.cni("ADD", &config).assert_success();
    assert_eq!(scene.nat_state(), first, "a second ADD changed the rules");
    assert_installed_as_rendered(&scene, &config);
}

#[test]
fn check_passes_after_add_and_fails_after_tampering() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        check_after_add_and_tampering(backend);
    }
}

/// Deletes the proxy user's exemption from the pod's rules with `backend`'s own program.
fn remove_the_proxy_user_exemption(pod: &TestNetns, backend: &str) {
    match backend.strip_prefix("iptables-") {
        Some(program) => {
            pod.iptables(
                &format!("iptables-{program}"),
                &format!("-t nat -D APPMESH_EGRESS -m owner --uid-owner {PROXY_UID} -j RETURN"),
            );
        }
        None => {
            let chain = pod.run_checked(
                "nft",
                &["-a", "list", "chain", "inet", "meshinit", "output"],
            );
            let handle = chain
                .lines()
                .find(|l| l.contains("skuid"))
                .and_then(|l| l.rsplit("# handle ").next())
                .unwrap_or_else(|| panic!("no skuid rule in\n{chain}"))
                .trim()
                .to_owned();
            pod.run_checked(
                "nft",
                &[
                    "delete", "rule", "inet", "meshinit", "output", "handle", &handle,
                ],
            );
        }
    }
}

fn check_after_add_and_tampering(backend: &str) {
    let scene = Scene::new();
    steer_auto_to(scene.pod(), backend);
    let config = netconf("1.0.0");
    scene.cni("ADD", &config).assert_success();
    assert_eq!(backend_holding_ours(scene.pod()), backend);
    let run = scene.cni("CHECK", &config);
    run.assert_success();
    assert!(
        run.stdout.trim().is_empty(),
        "{backend}: CHECK prints nothing on success:\n{run}"
    );

    // A pod whose settings differ from what was installed is not as configured either.
    let mut other_port = scene.attachment();
    other_port.args = Some("IgnoreUnknown=1;ProxyEgressPort=16001".into());
    let run = scene.cni_with("CHECK", &other_port, &config);
    assert_eq!(run.error_code(), 100, "{backend}: {run}");

    remove_the_proxy_user_exemption(scene.pod(), backend);
    let run = scene.cni("CHECK", &config);
    assert_eq!(run.error_code(), 100, "{backend}: {run}");
    let details = run.error()["details"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The iptables backends name the missing rule; the native one the table's difference.
    let named = match backend {
        "nftables" => details.contains("rules of chain output: 6 installed, 7 planned"),
        _ => details.contains(&format!(
            "missing -A APPMESH_EGRESS -m owner --uid-owner {PROXY_UID} -j RETURN"
        )),
    };
    assert!(
        named,
        "{backend}: the details name the missing rule:\n{run}"
    );

    // ADD repairs it.
    scene.cni("ADD", &config).assert_success();
    scene.cni("CHECK", &config).assert_success();
    assert_eq!(backend_holding_ours(scene.pod()), backend);
}

#[test]
fn del_twice_succeeds_and_leaves_foreign_rules() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        del_twice_leaves_foreign_rules(backend);
    }
}

fn del_twice_leaves_foreign_rules(backend: &str) {
    let scene = Scene::new();
    steer_auto_to(scene.pod(), backend);
    let config = netconf("1.0.0");
    scene.cni("ADD", &config).assert_success();
    assert_eq!(backend_holding_ours(scene.pod()), backend);
    // Someone else's chain and jump, which DEL must leave alone.
    scene
        .pod()
        .iptables("iptables-nft", "-t nat -N FOREIGN_CHAIN");
    scene
        .pod()
        .iptables("iptables-nft", "-t nat -A OUTPUT -p udp -j FOREIGN_CHAIN");

    for attempt in ["first", "second"] {
        let run = scene.cni(
            "DEL",
            &with(config.clone(), "prevResult", json!({"cniVersion": "1.0.0"})),
        );
        run.assert_success();
        assert!(
            run.stdout.trim().is_empty(),
            "{attempt} DEL prints nothing:\n{run}"
        );
        let ours = ours_anywhere(scene.pod());
        assert_eq!(ours, "", "{backend}: {attempt} DEL left rules");
        let state = scene.nat_state();
        assert!(
            state.contains("-A OUTPUT -p udp -j FOREIGN_CHAIN") && state.contains(":FOREIGN_CHAIN"),
            "{backend}: {attempt} DEL removed someone else's rules:\n{state}"
        );
    }
    // CHECK now reports the rules as missing.
    assert_eq!(scene.cni("CHECK", &config).error_code(), 100);
}

#[test]
fn del_succeeds_when_the_namespace_is_gone() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("node");
    let config = netconf("1.0.0");
    let pod = TestNetns::new("pod");
    let attachment = Attachment::new("pod-gone", pod.path());
    run_meshinit(&node, "ADD", Some(&attachment), &config.to_string()).assert_success();
    drop(pod);
    assert!(!attachment.netns.as_ref().unwrap().exists());

    let mut unset = attachment.clone();
    unset.netns = None;
    let mut empty = attachment.clone();
    empty.netns = Some("".into());
    let mut dead_process = attachment.clone();
    dead_process.netns = Some("/proc/2147483646/ns/net".into());
    for case in [&attachment, &attachment, &unset, &empty, &dead_process] {
        let run = run_meshinit(&node, "DEL", Some(case), &config.to_string());
        run.assert_success();
        assert!(run.stdout.trim().is_empty(), "{case:?}:\n{run}");
    }
    assert_nothing_installed(&node);
}

#[test]
fn del_goes_on_despite_a_decodable_but_wrong_configuration() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    // DEL needs neither the settings nor prevResult, so it goes on (best effort), while
    // ADD and CHECK refuse these (tests/cni_errors.rs).
    for (config, _) in decodable_but_wrong_configs() {
        scene.cni("ADD", &netconf("1.0.0")).assert_success();
        assert_installed_as_rendered(&scene, &netconf("1.0.0"));
        let run = scene.cni("DEL", &config);
        run.assert_success();
        let ours = ours_anywhere(scene.pod());
        assert_eq!(ours, "", "DEL with {config} left rules");
    }
}

#[test]
fn per_pod_settings_from_cni_args_and_runtime_config_override_the_netconf() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let mut base = netconf("1.0.0");
    base.as_object_mut().unwrap().remove("proxyIngressPort");
    base.as_object_mut().unwrap().remove("appPorts");
    let mut attachment = scene.attachment();
    attachment.args = Some(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;ProxyIngressPort=15000;AppPorts=9080,9081;IgnoredUID=1000".into(),
    );
    let config = with(
        base.clone(),
        "runtimeConfig",
        json!({"ignoredUID": "2000", "portMappings": []}),
    );
    scene.cni_with("ADD", &attachment, &config).assert_success();
    scene
        .cni_with("CHECK", &attachment, &config)
        .assert_success();

    // The same as a network configuration holding the merged values renders.
    let mut merged = base;
    merged["proxyIngressPort"] = json!("15000");
    merged["appPorts"] = json!(["9080", "9081"]);
    merged["ignoredUID"] = json!("2000");
    assert_installed_as_rendered(&scene, &merged);
}

#[test]
fn the_ecs_agents_egress_only_request_installs_only_egress() {
    if !require_root() {
        return;
    }
    // What the ECS agent (Go, encoding/json) sends for a task without AppPorts: unset
    // fields as null or "". The AWS plugin accepts it and installs only the egress chain.
    let scene = Scene::new();
    let peer = &scene.net.peer;
    peer.add_address("203.0.113.7".parse().unwrap());
    let remote = peer.listen(80);
    let egress_proxy = scene.pod().listen(EGRESS_PORT);
    let app = scene.pod().listen(APP_PORT);
    let mut config = netconf("0.3.0");
    for (key, value) in [
        ("appPorts", Value::Null),
        ("proxyIngressPort", json!("")),
        ("ignoredGID", json!("")),
        ("egressIgnoredPorts", Value::Null),
        ("egressIgnoredIPs", Value::Null),
        ("enableIPv6", Value::Null),
    ] {
        config[key] = value;
    }
    scene.cni("ADD", &config).assert_success();

    let mut equivalent = netconf("0.3.0");
    for key in [
        "appPorts",
        "proxyIngressPort",
        "egressIgnoredPorts",
        "egressIgnoredIPs",
    ] {
        equivalent.as_object_mut().unwrap().remove(key);
    }
    assert_installed_as_rendered(&scene, &equivalent);
    let dest = addr("203.0.113.7:80");
    assert_redirected(
        &scene.pod().connect(dest, None, DEFAULT_CONNECT_TIMEOUT),
        &egress_proxy,
        dest,
    );
    assert_direct(
        &scene
            .pod()
            .connect(dest, Some((PROXY_UID, PROXY_UID)), DEFAULT_CONNECT_TIMEOUT),
        &remote,
    );
    let app_port = SocketAddr::new(APP_V4.into(), APP_PORT);
    assert_direct(&peer.connect(app_port, None, DEFAULT_CONNECT_TIMEOUT), &app);
}

#[test]
fn the_runtimes_own_namespace_is_refused() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("node");
    let attachment = Attachment::new("pod-misconfigured", node.path());
    let config = netconf("1.0.0").to_string();
    let run = run_meshinit(&node, "ADD", Some(&attachment), &config);
    assert_eq!(run.error_code(), 102, "{run}");
    assert!(
        run.error()["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("runtime"),
        "{run}"
    );
    assert_eq!(
        run_meshinit(&node, "CHECK", Some(&attachment), &config).error_code(),
        102
    );
    // ADD never installs there, so DEL has nothing to remove and succeeds.
    run_meshinit(&node, "DEL", Some(&attachment), &config).assert_success();
    assert_nothing_installed(&node);
}

#[test]
fn status_reports_readiness_and_gc_collects_nothing() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("node");
    let config = netconf("1.1.0");
    let run = run_meshinit(&node, "STATUS", None, &config.to_string());
    run.assert_success();
    assert!(run.stdout.trim().is_empty(), "{run}");

    // Without an iptables program on PATH, the native backend serves (it needs none).
    let mut without_iptables = node.command(MESHINIT);
    without_iptables
        .env_clear()
        .env("PATH", "/usr/bin")
        .env("CNI_COMMAND", "STATUS");
    let run = cni_runtime::run_with_stdin(without_iptables, &config.to_string());
    run.assert_success();
    assert!(run.stderr.contains("backend=nftables"), "{run}");

    // Without the privileges ADD needs, the plugin is not available (code 50).
    let mut unprivileged = node.command("setpriv");
    unprivileged
        .args([
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            MESHINIT,
        ])
        .env("CNI_COMMAND", "STATUS");
    let run = cni_runtime::run_with_stdin(unprivileged, &config.to_string());
    assert_eq!(run.error_code(), 50, "{run}");
    assert!(
        run.error()["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("NET_ADMIN"),
        "{run}"
    );

    let gc = with(
        config,
        "cni.dev/valid-attachments",
        json!([{"containerID": "pod-1", "ifname": "eth0"}]),
    );
    let run = run_meshinit(&node, "GC", None, &gc.to_string());
    run.assert_success();
    assert!(run.stdout.trim().is_empty(), "{run}");
    assert_nothing_installed(&node);
}
