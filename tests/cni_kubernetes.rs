//! Kubernetes per-pod mode: an entry declaring the `io.kubernetes.cri.pod-annotations`
//! capability meshes only pods annotated `appmesh.k8s.aws/appmeshCNI: enabled`, with their
//! annotations over the entry's defaults; every other pod is left exactly as it was. Run as
//! containerd runs the plugin (`CNI_ARGS` with the pod's namespace and name, annotations in
//! `runtimeConfig`), proven with real connections.
//! Needs root (skips outside CI without it; fails in CI).

mod cni_runtime;
mod common;

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use cni_runtime::{
    Attachment, PluginRun, assert_installed_as_rendered, assert_nothing_installed, run_meshinit,
};
use common::*;

const CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
const PROXY_UID: u32 = 1337;
const EGRESS_PORT: u16 = 15001;
const INGRESS_PORT: u16 = 15000;
const APP_PORT: u16 = 8080;
const REMOTE: &str = "203.0.113.7:80";

/// The entry `cni install --kubernetes` writes with node-wide defaults, as containerd
/// derives it for one pod: `runtimeConfig` holds the pod's annotations.
fn request(annotations: Value) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "meshinit",
        "ignoredUID": PROXY_UID.to_string(),
        "proxyEgressPort": EGRESS_PORT.to_string(),
        "capabilities": {CAPABILITY: true},
        "runtimeConfig": {CAPABILITY: annotations},
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "6a:1f:00:00:00:02", "sandbox": "/var/run/netns/x"}],
            "ips": [{"interface": 0, "address": "198.51.100.1/24", "gateway": "198.51.100.2"}],
            "dns": {}
        }
    })
}

fn pod_args(namespace: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME=web;\
         K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
    )
}

/// The annotations of a mesh pod in the App Mesh controller's CNI mode.
fn mesh_annotations() -> Value {
    json!({
        "appmesh.k8s.aws/appmeshCNI": "enabled",
        "appmesh.k8s.aws/sidecarInjectorWebhook": "enabled",
        "appmesh.k8s.aws/ports": APP_PORT.to_string(),
        "appmesh.k8s.aws/proxyIngressPort": INGRESS_PORT.to_string(),
        "appmesh.k8s.aws/egressIgnoredPorts": "5432",
        "appmesh.k8s.aws/egressIgnoredIPs": "169.254.169.254",
        "kubernetes.io/config.source": "api"
    })
}

struct Pod {
    node: TestNetns,
    net: NetnsPair,
    remote: Listener,
    egress_proxy: Listener,
    ingress_proxy: Listener,
    app: Listener,
}

impl Pod {
    fn new() -> Pod {
        let node = TestNetns::new("node");
        let net = NetnsPair::new();
        net.peer.add_address("203.0.113.7".parse().unwrap());
        Pod {
            remote: net.peer.listen(80),
            egress_proxy: net.app.listen(EGRESS_PORT),
            ingress_proxy: net.app.listen(INGRESS_PORT),
            app: net.app.listen(APP_PORT),
            node,
            net,
        }
    }

    fn cni(&self, command: &str, namespace: &str, config: &Value) -> PluginRun {
        self.cni_at(command, namespace, self.net.app.path(), config)
    }

    fn cni_at(&self, command: &str, namespace: &str, netns: &Path, config: &Value) -> PluginRun {
        let mut attachment = Attachment::new("sandbox-1", netns);
        attachment.args = Some(pod_args(namespace));
        run_meshinit(&self.node, command, Some(&attachment), &config.to_string())
    }

    fn egress(&self) -> ConnectOutcome {
        self.net.app.connect(
            REMOTE.parse().unwrap(),
            Some((1000, 1000)),
            DEFAULT_CONNECT_TIMEOUT,
        )
    }

    fn ingress(&self) -> ConnectOutcome {
        let dest = SocketAddr::new(APP_V4.into(), APP_PORT);
        self.net.peer.connect(dest, None, DEFAULT_CONNECT_TIMEOUT)
    }

    #[track_caller]
    fn assert_untouched(&self) {
        assert_nothing_installed(&self.net.app);
        assert_direct(&self.egress(), &self.remote);
        assert_direct(&self.ingress(), &self.app);
    }
}

#[test]
fn a_pod_that_does_not_opt_in_is_left_exactly_as_it_was() {
    if !require_root() {
        return;
    }
    let pod = Pod::new();
    for (namespace, annotations) in [
        ("shop", json!({})),
        ("shop", Value::Null),
        ("shop", json!({"appmesh.k8s.aws/appmeshCNI": "disabled"})),
        // Opted in, but in a namespace the entry excludes (kube-system by default).
        ("kube-system", mesh_annotations()),
    ] {
        let config = request(annotations.clone());
        let run = pod.cni("ADD", namespace, &config);
        run.assert_success();
        assert_eq!(
            run.json(),
            config["prevResult"],
            "{namespace} {annotations}: prevResult passes through unchanged"
        );
        pod.assert_untouched();
        pod.cni("CHECK", namespace, &config).assert_success();
        pod.cni("DEL", namespace, &config).assert_success();
        pod.assert_untouched();
    }
    // Not even its namespace is entered: ADD and CHECK succeed for a path that is none.
    let config = request(json!({}));
    let nowhere = Path::new("/nonexistent/netns");
    pod.cni_at("ADD", "shop", nowhere, &config).assert_success();
    pod.cni_at("CHECK", "shop", nowhere, &config)
        .assert_success();
    pod.cni_at("DEL", "shop", nowhere, &config).assert_success();
}

#[test]
fn an_annotated_pod_gets_its_annotations_over_the_entrys_defaults() {
    if !require_root() {
        return;
    }
    let pod = Pod::new();
    let config = request(mesh_annotations());
    let run = pod.cni("ADD", "shop", &config);
    run.assert_success();
    assert_eq!(run.json(), config["prevResult"]);
    assert_installed_as_rendered(
        &pod.node,
        &pod.net.app,
        &json!({
            "cniVersion": "1.0.0",
            "ignoredUID": PROXY_UID.to_string(),
            "proxyEgressPort": EGRESS_PORT.to_string(),
            "proxyIngressPort": INGRESS_PORT.to_string(),
            "appPorts": [APP_PORT.to_string()],
            "egressIgnoredPorts": ["5432"],
            "egressIgnoredIPs": ["169.254.169.254"]
        }),
    );
    let remote: SocketAddr = REMOTE.parse().unwrap();
    assert_redirected(&pod.egress(), &pod.egress_proxy, remote);
    assert_direct(
        &pod.net.app.connect(
            remote,
            Some((PROXY_UID, PROXY_UID)),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        &pod.remote,
    );
    let app_port = SocketAddr::new(APP_V4.into(), APP_PORT);
    assert_redirected(&pod.ingress(), &pod.ingress_proxy, app_port);
    pod.cni("CHECK", "shop", &config).assert_success();

    // An annotation overrides the entry's key of the same setting, and ipv6: disabled
    // leaves IPv6 alone.
    let mut annotations = mesh_annotations();
    annotations["appmesh.k8s.aws/proxyEgressPort"] = json!("15011");
    annotations["appmesh.k8s.aws/ipv6"] = json!("disabled");
    let changed = request(annotations);
    let run = pod.cni("CHECK", "shop", &changed);
    assert_eq!(
        run.error_code(),
        100,
        "CHECK sees the pod's own settings:\n{run}"
    );
    pod.cni("ADD", "shop", &changed).assert_success();
    let other_proxy = pod.net.app.listen(15011);
    assert_redirected(&pod.egress(), &other_proxy, remote);
    let remote6: SocketAddr = "[2001:db8:100::2]:80".parse().unwrap();
    let peer6 = pod
        .net
        .app
        .connect(remote6, Some((1000, 1000)), DEFAULT_CONNECT_TIMEOUT);
    assert_direct(&peer6, &pod.remote);

    pod.cni("DEL", "shop", &changed).assert_success();
    pod.assert_untouched();
    pod.cni("DEL", "shop", &changed).assert_success();
}

#[test]
fn a_bad_annotation_refuses_the_pod_naming_it_and_installs_nothing() {
    if !require_root() {
        return;
    }
    let pod = Pod::new();
    for (annotation, value) in [
        ("appmesh.k8s.aws/ports", "80,http"),
        ("appmesh.k8s.aws/proxyEgressPort", "99999"),
        ("appmesh.k8s.aws/egressIgnoredIPs", "10.0.0.300"),
        ("appmesh.k8s.aws/ignoredUID", "envoy"),
        ("appmesh.k8s.aws/ipv6", "off please"),
        ("appmesh.k8s.aws/appmeshCNI", "yes"),
    ] {
        let mut annotations = mesh_annotations();
        annotations[annotation] = json!(value);
        let config = request(annotations);
        let run = pod.cni("ADD", "shop", &config);
        assert_eq!(run.error_code(), 7, "{annotation}={value}:\n{run}");
        let error = run.error();
        let text = format!("{} {}", error["msg"], error["details"]);
        assert!(
            text.contains(annotation) && text.contains(value),
            "the error names {annotation} and {value:?}: {text}"
        );
        pod.assert_untouched();
        assert_eq!(pod.cni("CHECK", "shop", &config).error_code(), 7);
        pod.cni("DEL", "shop", &config).assert_success();
    }
}

#[test]
fn an_entry_without_the_capability_serves_every_container_as_before() {
    if !require_root() {
        return;
    }
    let pod = Pod::new();
    let mut config = request(json!({}));
    let object = config.as_object_mut().unwrap();
    object.remove("capabilities");
    object.remove("runtimeConfig");
    pod.cni("ADD", "shop", &config).assert_success();
    assert_redirected(&pod.egress(), &pod.egress_proxy, REMOTE.parse().unwrap());
    pod.cni("DEL", "shop", &config).assert_success();
    pod.assert_untouched();
}

/// `meshinit validate` in the pod, as an unprivileged init container runs it.
fn validate(pod: &TestNetns, timeout: &str) -> std::process::Command {
    let mut command = pod.command("setpriv");
    command.args([
        "--reuid=1000",
        "--regid=1000",
        "--clear-groups",
        cni_runtime::MESHINIT,
        "validate",
        "--proxy-egress-port",
        &EGRESS_PORT.to_string(),
        "--timeout",
        timeout,
    ]);
    command.env_remove("CNI_COMMAND");
    command
}

#[test]
fn a_pod_created_while_the_entry_is_missing_fails_closed() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("node");
    let net = NetnsPair::new();
    let mut attachment = Attachment::new("sandbox-1", net.app.path());
    attachment.args = Some(pod_args("shop"));
    let config = request(mesh_annotations()).to_string();

    // The runtime ran the list without meshinit's entry: no ADD, no rules. The pod's
    // validate init container fails, so the pod never runs unmeshed.
    let output = validate(&net.app, "1s").output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("NOT redirected"));

    // The race: the rules arrive while it waits; it passes as soon as they do.
    let waiting = validate(&net.app, "20s")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    run_meshinit(&node, "ADD", Some(&attachment), &config).assert_success();
    let output = waiting.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A pod created with its rules passes at once; a pod that was not annotated does not
    // (it is not meshed, so a validate container in it would say so).
    let output = validate(&net.app, "5s").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    run_meshinit(&node, "DEL", Some(&attachment), &config).assert_success();
    let plain = request(json!({})).to_string();
    run_meshinit(&node, "ADD", Some(&attachment), &plain).assert_success();
    assert_eq!(
        validate(&net.app, "1s").output().unwrap().status.code(),
        Some(5)
    );
}
