//! meshinit chained after the reference plugins (`bridge` with `host-local` IPAM), the way
//! an ECS or Kubernetes CNI chain runs it: a small runtime of ours executes
//! `examples/appmesh.conflist` by the specification's chaining rules. The runtime's
//! namespace is a test "node" namespace (the bridge is created there, never in the
//! machine's), the pod has its own. Needs root (skips outside CI without it; fails in CI).

mod cni_runtime;
mod common;

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use cni_runtime::{
    Attachment, MESHINIT, REFERENCE_PLUGINS, Runtime, TempDir, assert_installed_as_rendered,
    backend_holding_ours, nat_state, ours_anywhere, steer_auto_to,
};
use common::*;

const EXAMPLE_CONFLIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/appmesh.conflist");
const PROXY_UID: u32 = 1337;
const EGRESS_PORT: u16 = 15001;

/// The example configuration list, with host-local keeping its leases in `ipam_dir`
/// instead of the machine's /var/lib/cni.
fn example_conflist(ipam_dir: &Path) -> Value {
    let text = std::fs::read_to_string(EXAMPLE_CONFLIST).expect("read the example conflist");
    let mut list: Value = serde_json::from_str(&text).expect("the example conflist is JSON");
    list["plugins"][0]["ipam"]["dataDir"] = json!(ipam_dir);
    list
}

/// The reference plugins and meshinit, under the names a configuration's `type` uses
/// (`aws-appmesh` too: meshinit is a drop-in replacement for it).
fn plugin_dir() -> TempDir {
    let reference = |name: &str| Path::new(REFERENCE_PLUGINS).join(name);
    let (bridge, host_local) = (reference("bridge"), reference("host-local"));
    assert!(
        bridge.exists() && host_local.exists(),
        "the reference plugins are missing from {REFERENCE_PLUGINS}: install containernetworking-plugins"
    );
    TempDir::with_plugins(&[
        ("bridge", &bridge),
        ("host-local", &host_local),
        ("meshinit", Path::new(MESHINIT)),
        ("aws-appmesh", Path::new(MESHINIT)),
    ])
}

/// The meshinit plugin's request configuration, for `meshinit render`.
fn meshinit_config(list: &Value) -> Value {
    let mut config = list["plugins"][1].clone();
    config["cniVersion"] = list["cniVersion"].clone();
    config["name"] = list["name"].clone();
    config
}

/// The leases host-local holds in `ipam_dir` for network `name` (files named by address).
fn leases(ipam_dir: &Path, name: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(ipam_dir.join(name)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

fn has_link(ns: &TestNetns, name: &str) -> bool {
    ns.command("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A connection from the pod to a remote host (the node stands in for it) is redirected to
/// the proxy with its original destination, while the proxy's own user goes direct.
#[track_caller]
fn assert_egress_goes_through_the_proxy(node: &TestNetns, pod: &TestNetns) {
    node.add_address("203.0.113.7".parse().unwrap());
    let remote = node.listen(80);
    let proxy = pod.listen(EGRESS_PORT);
    let dest: SocketAddr = "203.0.113.7:80".parse().unwrap();
    assert_redirected(
        &pod.connect(dest, None, DEFAULT_CONNECT_TIMEOUT),
        &proxy,
        dest,
    );
    assert_direct(
        &pod.connect(dest, Some((PROXY_UID, PROXY_UID)), DEFAULT_CONNECT_TIMEOUT),
        &remote,
    );
}

/// Every rule in the pod's nat tables is meshinit's (a chain of ours or a jump into one),
/// in the one backend holding ours, and both of our chains are there: with
/// [`assert_installed_as_rendered`], the pod holds exactly what meshinit programs.
#[track_caller]
fn assert_only_ours_in_the_pod(pod: &TestNetns) {
    let backend = backend_holding_ours(pod);
    let Some(program) = backend.strip_prefix("iptables-") else {
        // The native table holds both chains; iptables-nft's nat tables hold no rule.
        let state = nat_state(pod);
        assert!(
            !state.lines().any(|l| l.starts_with("-A ")),
            "rules that are not meshinit's in the pod:\n{state}"
        );
        let table = our_rules(pod, backend);
        for chain in ["chain prerouting", "chain output"] {
            assert!(table.contains(chain), "no {chain}:\n{table}");
        }
        return;
    };
    let state = common::nat_state(pod, program);
    let rules: Vec<&str> = state.lines().filter(|l| l.starts_with("-A ")).collect();
    assert!(
        rules.iter().all(|rule| rule.contains("APPMESH_")),
        "rules that are not meshinit's in the pod:\n{state}"
    );
    for chain in [":APPMESH_EGRESS", ":APPMESH_INGRESS"] {
        assert_eq!(
            state.matches(chain).count(),
            2,
            "{chain} per family:\n{state}"
        );
    }
}

/// The pod's nat tables hold exactly what a namespace nobody programmed holds.
#[track_caller]
fn assert_nat_tables_empty(pod: &TestNetns) {
    let untouched = TestNetns::new("untouched");
    assert_eq!(
        nat_state(pod),
        nat_state(&untouched),
        "the pod's nat tables are not back to empty"
    );
}

#[test]
fn bridge_then_meshinit_chain_adds_checks_and_deletes() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        bridge_then_meshinit_chain(backend);
    }
}

fn bridge_then_meshinit_chain(backend: &str) {
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    steer_auto_to(&pod, backend);
    let plugins = plugin_dir();
    let ipam_dir = TempDir::new("ipam");
    let list = example_conflist(ipam_dir.path());
    let runtime = Runtime {
        node: &node,
        plugins: &plugins,
    };
    let attachment = Attachment::new("chain-pod-1", pod.path());

    let results = runtime
        .add(&list, &attachment)
        .unwrap_or_else(|failure| panic!("chain ADD failed: {failure}"));
    let (bridge_result, final_result) = (&results[0], &results[1]);
    assert_eq!(
        final_result, bridge_result,
        "meshinit passes bridge's result on unchanged"
    );

    // The interface and address come from bridge + host-local ...
    let ip = bridge_result["ips"][0]["address"]
        .as_str()
        .expect("bridge assigned an address");
    assert!(
        ip.starts_with("10.22."),
        "address from the example's subnet: {ip}"
    );
    let eth0 = bridge_result["interfaces"]
        .as_array()
        .and_then(|list| list.iter().find(|i| i["name"] == "eth0"))
        .unwrap_or_else(|| panic!("no eth0 in the result: {bridge_result}"));
    assert_eq!(eth0["sandbox"], json!(pod.path()));
    let pod_addresses = pod.run_checked("ip", &["-o", "address", "show", "dev", "eth0"]);
    assert!(
        pod_addresses.contains(&format!("inet {ip}")),
        "eth0 in the pod has {ip}:\n{pod_addresses}"
    );
    assert!(
        has_link(&node, "cni0"),
        "the bridge lives in the node namespace"
    );
    assert!(!has_link(&pod, "cni0"));
    assert_eq!(leases(ipam_dir.path(), "appmesh").len(), 1);

    // ... and the redirection from meshinit, in the backend `auto` chose.
    assert_eq!(backend_holding_ours(&pod), backend);
    assert_installed_as_rendered(&node, &pod, &meshinit_config(&list));
    assert_only_ours_in_the_pod(&pod);
    assert_egress_goes_through_the_proxy(&node, &pod);

    runtime
        .check(&list, &attachment, final_result)
        .unwrap_or_else(|failure| panic!("chain CHECK failed: {failure}"));

    // DEL in reverse order removes both the redirection and the interface and lease.
    runtime
        .del(&list, &attachment, final_result)
        .unwrap_or_else(|failure| panic!("chain DEL failed: {failure}"));
    let ours = ours_anywhere(&pod);
    assert_eq!(ours, "", "{backend}: DEL left meshinit's rules");
    assert_nat_tables_empty(&pod);
    assert!(!has_link(&pod, "eth0"), "DEL left the pod's interface");
    assert_eq!(
        leases(ipam_dir.path(), "appmesh"),
        Vec::<String>::new(),
        "DEL left the lease"
    );

    // DEL again, and once the namespace is gone: both plugins succeed.
    runtime
        .del(&list, &attachment, final_result)
        .unwrap_or_else(|failure| panic!("second chain DEL failed: {failure}"));
    drop(pod);
    runtime
        .del(&list, &attachment, final_result)
        .unwrap_or_else(|failure| {
            panic!("chain DEL after the namespace is gone failed: {failure}")
        });
}

#[test]
fn an_aws_appmesh_chain_at_0_4_0_runs_meshinit_under_that_name() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("node");
    let pod = TestNetns::new("pod");
    let plugins = plugin_dir();
    let ipam_dir = TempDir::new("ipam");
    let mut list = example_conflist(ipam_dir.path());
    list["cniVersion"] = json!("0.4.0");
    list["name"] = json!("appmesh-v04");
    list["plugins"][1]["type"] = json!("aws-appmesh");
    let runtime = Runtime {
        node: &node,
        plugins: &plugins,
    };
    let attachment = Attachment::new("chain-pod-2", pod.path());

    let results = runtime
        .add(&list, &attachment)
        .unwrap_or_else(|failure| panic!("chain ADD failed: {failure}"));
    assert_eq!(
        results[1], results[0],
        "the 0.4.0 result is passed on unchanged"
    );
    assert_eq!(
        results[1]["ips"][0]["version"], "4",
        "a 0.4.0 result: {}",
        results[1]
    );
    assert_installed_as_rendered(&node, &pod, &meshinit_config(&list));
    assert_only_ours_in_the_pod(&pod);
    assert_egress_goes_through_the_proxy(&node, &pod);
    runtime
        .check(&list, &attachment, &results[1])
        .unwrap_or_else(|failure| panic!("chain CHECK failed: {failure}"));
    runtime
        .del(&list, &attachment, &results[1])
        .unwrap_or_else(|failure| panic!("chain DEL failed: {failure}"));
    assert_eq!(ours_anywhere(&pod), "");
    assert_nat_tables_empty(&pod);
    assert!(!has_link(&pod, "eth0"));
    assert!(leases(ipam_dir.path(), "appmesh-v04").is_empty());
}
