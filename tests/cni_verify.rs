//! CNI ADD and CHECK with `"verify": true` in the network configuration: the plugin proves
//! the pod's rules with verify's probes before answering; a proof that does not pass fails
//! the verb with verify's JSON report in the CNI error's details. Needs root.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::*;
use serde_json::{Value, json};

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");

fn netconf(verify: Value) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cni-netconf.json"
    ))
    .expect("the example netconf exists");
    let mut config: Value = serde_json::from_str(&text).expect("JSON");
    config["verify"] = verify;
    config.to_string()
}

/// Runs meshinit as a CNI plugin from `node` for `pod`, with `stdin`.
fn plugin(node: &TestNetns, pod: &TestNetns, command: &str, stdin: &str) -> Output {
    let mut child = node
        .command(MESHINIT)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "verify-test")
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshinit starts");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("meshinit reads the netconf");
    child.wait_with_output().expect("meshinit ends")
}

fn error_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON on stdout:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The CNI error `output` printed, after checking its code and that its message says `text`.
fn error_with(output: &Output, code: u64, text: &str) -> Value {
    let error = error_of(output);
    assert_eq!(error["code"], code, "{error:#}");
    assert!(
        error["msg"].as_str().unwrap_or("").contains(text),
        "not {text:?}: {error:#}"
    );
    error
}

#[test]
fn add_and_check_with_verify_prove_the_pods_rules() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("node");
    let net = NetnsPair::new();
    let add = plugin(&node, &net.app, "ADD", &netconf(json!(true)));
    assert!(
        add.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&add.stdout),
        String::from_utf8_lossy(&add.stderr)
    );
    let log = String::from_utf8_lossy(&add.stderr);
    assert!(log.contains("ADD: verify proved the rules"), "{log}");
    let check = plugin(&node, &net.app, "CHECK", &netconf(json!(true)));
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(String::from_utf8_lossy(&check.stderr).contains("CHECK: verify proved the rules"));
    // Without the key nothing is proven (and nothing is slower).
    let plain = plugin(&node, &net.app, "CHECK", &netconf(json!(false)));
    assert!(plain.status.success());
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("verify proved"));
}

#[test]
fn add_with_verify_fails_with_the_report_in_the_details() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("node");
    let net = NetnsPair::new();
    // Something already holds ProxyEgressPort: verify cannot stand in for the proxy.
    let _proxy = net.app.listen(15001);
    let add = plugin(&node, &net.app, "ADD", &netconf(json!(true)));
    assert!(!add.status.success());
    let error = error_with(&add, 105, "verify could not prove the rules");
    let report: Value =
        serde_json::from_str(error["details"].as_str().expect("details")).expect("a report");
    assert_eq!(report["outcome"], "could_not_run");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "listener" && c["status"] == "could_not_run"),
        "{report:#}"
    );
    let check = plugin(&node, &net.app, "CHECK", &netconf(json!(true)));
    assert_eq!(error_of(&check)["code"], 105);
}

#[test]
fn a_verify_key_that_is_not_a_boolean_is_invalid_configuration() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("node");
    let net = NetnsPair::new();
    let add = plugin(&node, &net.app, "ADD", &netconf(json!("yes")));
    error_with(&add, 7, "verify");
    assert_eq!(
        net.app.nat_rules().matches("APPMESH").count(),
        0,
        "nothing is installed on bad input"
    );
}

/// A Kubernetes per-pod entry (the capability declared, the pod's annotations in
/// `runtimeConfig`) whose pod is opted in, with `extra` annotations.
fn annotated_netconf(extra: Value) -> String {
    let mut config: Value = serde_json::from_str(&netconf(Value::Null)).expect("JSON");
    let object = config.as_object_mut().expect("an object");
    object.remove("verify");
    let capability = "io.kubernetes.cri.pod-annotations";
    let mut annotations = json!({"appmesh.k8s.aws/appmeshCNI": "enabled"});
    for (key, value) in extra.as_object().expect("annotations") {
        annotations[key] = value.clone();
    }
    object.insert("capabilities".into(), json!({capability: true}));
    object.insert("runtimeConfig".into(), json!({capability: annotations}));
    config.to_string()
}

/// `verify` is a row of the property table, so the pod annotation `meshinit.io/verify`
/// asks ADD for the proof as the netconf key does: with the proxy's egress port taken the
/// proof cannot run (code 105); without the annotation the same pod is meshed silently.
#[test]
fn the_verify_pod_annotation_asks_add_to_prove_the_rules() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("node");
    let annotated = NetnsPair::new();
    let _proxy = annotated.app.listen(15001);
    let add = plugin(
        &node,
        &annotated.app,
        "ADD",
        &annotated_netconf(json!({"meshinit.io/verify": "true"})),
    );
    error_with(&add, 105, "verify could not prove the rules");

    let plain = NetnsPair::new();
    let _proxy = plain.app.listen(15001);
    let add = plugin(&node, &plain.app, "ADD", &annotated_netconf(json!({})));
    assert!(
        add.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&add.stdout),
        String::from_utf8_lossy(&add.stderr)
    );
    let log = String::from_utf8_lossy(&add.stderr);
    assert!(
        !log.contains("verify proved") && !log.contains("verify could not"),
        "{log}"
    );

    // A value that is not a switch is the annotation's error, naming it (code 7).
    let bad = NetnsPair::new();
    let add = plugin(
        &node,
        &bad.app,
        "ADD",
        &annotated_netconf(json!({"meshinit.io/verify": "maybe"})),
    );
    error_with(&add, 7, "pod annotation meshinit.io/verify");
    assert_eq!(bad.app.nat_rules().matches("APPMESH").count(), 0);
}
