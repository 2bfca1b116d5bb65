//! Drop-in parity with the AWS plugin itself: `aws-appmesh` (built from AWS's source, found
//! through `MESHINIT_PEERS_DIR`) and meshinit get the same stdin, each in fresh namespaces,
//! and real connections must meet the same fate under both, for every shape of request the
//! ECS agent sends. Where meshinit deliberately differs (docs/cni.md, "Differences
//! from aws-appmesh"), `documented_differences` shows both sides.
//! Needs root and the AWS plugin (each skips loudly without them; fails under CI=true).

mod cni_runtime;
mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use cni_runtime::{Attachment, MESHINIT, PluginRun, run_plugin};
use common::*;

const PROXY_UID: u32 = 1337;
const PROXY_GID: u32 = 1338;
const APP_USER: (u32, u32) = (1000, 1000);
const INGRESS_PORT: u16 = 15000;
const EGRESS_PORT: u16 = 15001;
const APP_PORT: u16 = 8080;
const OTHER_POD_PORT: u16 = 9090;

/// Destinations on the peer ("the rest of the network"), each answered by a listener.
const REMOTE_V4: &str = "203.0.113.7";
const IGNORED_V4: &str = "203.0.113.8";
const IN_IGNORED_CIDR_V4: &str = "198.18.0.9";
const REMOTE_V6: &str = "2001:db8:ff::7";
const IGNORED_V6: &str = "2001:db8:ff::8";
const METADATA_V4: &str = "169.254.170.2";
const REMOTE_PORTS: [u16; 6] = [80, 22, 5432, 1007, 1015, 1016];

/// A request as the ECS agent sends it (cniVersion 0.3.0, `type` aws-appmesh), with `extra`
/// keys replacing the full configuration's.
fn agent_request(extra: Value) -> Value {
    let mut config = json!({
        "cniVersion": "0.3.0",
        "name": "appmesh",
        "type": "aws-appmesh",
        "ignoredUID": PROXY_UID.to_string(),
        "ignoredGID": "",
        "proxyIngressPort": INGRESS_PORT.to_string(),
        "proxyEgressPort": EGRESS_PORT.to_string(),
        "appPorts": [APP_PORT.to_string()],
        "egressIgnoredPorts": ["5432"],
        "egressIgnoredIPs": [IGNORED_V4],
        "enableIPv6": false
    });
    for (key, value) in extra.as_object().expect("an object").clone() {
        config[key] = value;
    }
    config
}

/// One plugin's world: the runtime's namespace and a pod with a peer.
struct World {
    node: TestNetns,
    net: NetnsPair,
    _listeners: Vec<Listener>,
}

impl World {
    fn new() -> World {
        let node = TestNetns::new("node");
        let net = NetnsPair::new();
        for addr in [
            REMOTE_V4,
            IGNORED_V4,
            IN_IGNORED_CIDR_V4,
            METADATA_V4,
            REMOTE_V6,
            IGNORED_V6,
        ] {
            net.peer.add_address(addr.parse().unwrap());
        }
        let mut listeners: Vec<Listener> =
            REMOTE_PORTS.iter().map(|&p| net.peer.listen(p)).collect();
        for port in [INGRESS_PORT, EGRESS_PORT, APP_PORT, OTHER_POD_PORT] {
            listeners.push(net.app.listen(port));
        }
        World {
            node,
            net,
            _listeners: listeners,
        }
    }

    fn run(&self, plugin: &Path, command: &str, request: &Value) -> PluginRun {
        run_plugin(
            &self.node,
            plugin,
            command,
            Some(&Attachment::new("task-1", self.net.app.path())),
            Some(Path::new(cni_runtime::REFERENCE_PLUGINS)),
            &request.to_string(),
        )
    }

    /// Where a connection went, in terms that do not depend on which namespaces ran it:
    /// `pod:PORT` or `peer:PORT`, with the original destination when NAT changed it.
    fn fate(&self, outcome: &ConnectOutcome) -> String {
        match &outcome.result {
            Ok(landing) => {
                let side = if landing.netns == self.net.app.name() {
                    "pod"
                } else {
                    "peer"
                };
                let nat = match landing.original_dst {
                    Some(original) if original != landing.local_addr => {
                        format!(" (original destination {original})")
                    }
                    _ => String::new(),
                };
                format!("{side}:{}{nat}", landing.listener_port)
            }
            Err(failure) => format!("failed: {failure}"),
        }
    }

    /// Every probe's fate, one line each.
    fn fates(&self, probes: &[Probe]) -> Vec<String> {
        probes
            .iter()
            .map(|probe| {
                let outcome = match probe.from {
                    Side::Pod => {
                        self.net
                            .app
                            .connect(probe.dest, probe.user, DEFAULT_CONNECT_TIMEOUT)
                    }
                    Side::Peer => {
                        self.net
                            .peer
                            .connect(probe.dest, probe.user, DEFAULT_CONNECT_TIMEOUT)
                    }
                };
                format!("{probe}: {}", self.fate(&outcome))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Pod,
    Peer,
}

#[derive(Debug, Clone)]
struct Probe {
    from: Side,
    user: Option<(u32, u32)>,
    dest: SocketAddr,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match (self.from, self.user) {
            (Side::Pod, Some((uid, gid))) => format!("pod uid {uid} gid {gid}"),
            (Side::Pod, None) => "pod root".into(),
            (Side::Peer, _) => "peer".into(),
        };
        write!(f, "{who} -> {}", self.dest)
    }
}

fn egress(user: (u32, u32), ip: &str, port: u16) -> Probe {
    Probe {
        from: Side::Pod,
        user: Some(user),
        dest: SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port),
    }
}

fn ingress(ip: IpAddr, port: u16) -> Probe {
    Probe {
        from: Side::Peer,
        user: None,
        dest: SocketAddr::new(ip, port),
    }
}

/// The connections every shape is judged by: egress of the app, of the proxy's UID and
/// GID, to ignored ports and networks, in both families, and ingress to an app port and to
/// another port. Port 22 and the metadata addresses are left to `documented_differences`.
fn probes() -> Vec<Probe> {
    let mut probes = Vec::new();
    for port in [80, 5432, 1007, 1015, 1016] {
        probes.push(egress(APP_USER, REMOTE_V4, port));
    }
    for ip in [IGNORED_V4, IN_IGNORED_CIDR_V4, REMOTE_V6, IGNORED_V6] {
        probes.push(egress(APP_USER, ip, 80));
    }
    probes.push(egress(APP_USER, REMOTE_V6, 5432));
    for user in [(PROXY_UID, PROXY_UID), (APP_USER.0, PROXY_GID)] {
        probes.push(egress(user, REMOTE_V4, 80));
        probes.push(egress(user, REMOTE_V6, 80));
    }
    for ip in [IpAddr::V4(APP_V4), IpAddr::V6(APP_V6)] {
        probes.push(ingress(ip, APP_PORT));
        probes.push(ingress(ip, OTHER_POD_PORT));
    }
    probes
}

/// ADD with `plugin` in a fresh world; the fates of `probes`; then DEL, after which every
/// probe must be what it was before ADD.
fn fates_under(plugin: &Path, request: &Value, probes: &[Probe]) -> Vec<String> {
    let world = World::new();
    let before = world.fates(probes);
    let add = world.run(plugin, "ADD", request);
    add.assert_success();
    let fates = world.fates(probes);
    world.run(plugin, "DEL", request).assert_success();
    assert_eq!(
        world.fates(probes),
        before,
        "{}: DEL leaves the pod as it was before ADD",
        plugin.display()
    );
    fates
}

/// The two plugins' fates for `request`, side by side; panics naming every probe on which
/// they differ.
#[track_caller]
fn assert_same_fates(aws: &Path, shape: &str, request: &Value) {
    let probes = probes();
    let theirs = fates_under(aws, request, &probes);
    let ours = fates_under(Path::new(MESHINIT), request, &probes);
    let differences: Vec<String> = theirs
        .iter()
        .zip(&ours)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  aws-appmesh {a}\n  meshinit    {b}"))
        .collect();
    assert!(
        differences.is_empty(),
        "{shape}: meshinit and aws-appmesh differ on {} of {} connections for {request}:\n{}",
        differences.len(),
        probes.len(),
        differences.join("\n")
    );
    // A shape under which nothing is redirected would prove nothing.
    assert!(
        ours.iter().any(|f| f.contains("original destination")),
        "{shape}: no connection was redirected:\n{}",
        ours.join("\n")
    );
}

fn aws_plugin() -> Option<PathBuf> {
    if !require_root() {
        return None;
    }
    peer_plugin("aws-appmesh")
}

#[test]
fn full_configuration() {
    let Some(aws) = aws_plugin() else { return };
    assert_same_fates(&aws, "full configuration", &agent_request(json!({})));
}

#[test]
fn egress_only() {
    let Some(aws) = aws_plugin() else { return };
    let request = agent_request(json!({"appPorts": null, "proxyIngressPort": ""}));
    assert_same_fates(&aws, "egress only", &request);
}

#[test]
fn ignored_gid() {
    let Some(aws) = aws_plugin() else { return };
    let request = agent_request(json!({"ignoredUID": "", "ignoredGID": PROXY_GID.to_string()}));
    assert_same_fates(&aws, "ignoredGID", &request);
}

#[test]
fn ignored_uid_and_gid_with_ipv6() {
    let Some(aws) = aws_plugin() else { return };
    let request = agent_request(json!({
        "ignoredGID": PROXY_GID.to_string(),
        "egressIgnoredIPs": [IGNORED_V4, IGNORED_V6],
        "enableIPv6": true
    }));
    assert_same_fates(&aws, "enableIPv6", &request);
}

#[test]
fn many_ignored_ips() {
    let Some(aws) = aws_plugin() else { return };
    // 200 of each family (meshinit matches them through a set), the probed ones among them.
    let mut ips: Vec<String> = (0..200)
        .map(|i| format!("10.{}.{}.1", i / 100, i % 100))
        .collect();
    ips.extend((0..200).map(|i| format!("2001:db8:aa:{i:x}::/64")));
    ips.insert(100, IGNORED_V4.to_owned());
    ips.insert(250, "198.18.0.0/24".to_owned());
    ips.push(IGNORED_V6.to_owned());
    let request = agent_request(json!({"egressIgnoredIPs": ips, "enableIPv6": true}));
    assert_same_fates(&aws, "many ignored IPs", &request);
}

#[test]
fn fifteen_ignored_ports() {
    let Some(aws) = aws_plugin() else { return };
    // The most one multiport match holds, which is all the AWS plugin can honour.
    let mut ports: Vec<String> = (1001..=1014).map(|p| p.to_string()).collect();
    ports.insert(3, "5432".into());
    assert_eq!(ports.len(), 15);
    let request = agent_request(json!({"egressIgnoredPorts": ports, "enableIPv6": true}));
    assert_same_fates(&aws, "15 ignored ports", &request);
}

/// Where meshinit differs from aws-appmesh on purpose (docs/cni.md, "Differences
/// from aws-appmesh"), both sides shown with real connections.
#[test]
fn documented_differences() {
    let Some(aws) = aws_plugin() else { return };
    let ours = Path::new(MESHINIT);

    // More than 15 ignored ports: aws-appmesh keeps the first 15, so the 16th is redirected.
    let ports: Vec<String> = (1001..=1016).map(|p| p.to_string()).collect();
    let request = agent_request(json!({"egressIgnoredPorts": ports}));
    let sixteenth = [egress(APP_USER, REMOTE_V4, 1016)];
    let redirected = format!(
        "{}: pod:{EGRESS_PORT} (original destination {REMOTE_V4}:1016)",
        sixteenth[0]
    );
    let direct = format!("{}: peer:1016", sixteenth[0]);
    assert_eq!(fates_under(&aws, &request, &sixteenth), [redirected]);
    assert_eq!(
        fates_under(ours, &request, &sixteenth),
        vec![direct.clone()]
    );

    // Ranges: aws-appmesh refuses the request; meshinit ignores the whole range.
    let request = agent_request(json!({"egressIgnoredPorts": ["1001-1016"]}));
    let world = World::new();
    let refused = world.run(&aws, "ADD", &request);
    assert!(
        !refused.succeeded(),
        "aws-appmesh takes a range:\n{refused}"
    );
    assert_eq!(
        fates_under(ours, &request, &sixteenth),
        vec![direct.clone()]
    );

    // Always ignored: port 22 and the metadata endpoints, listed or not.
    let request = agent_request(json!({}));
    let always = [
        egress(APP_USER, REMOTE_V4, 22),
        egress(APP_USER, METADATA_V4, 80),
    ];
    let theirs = fates_under(&aws, &request, &always);
    for fate in &theirs {
        assert!(fate.contains("original destination"), "{fate}");
    }
    let ours_fates = fates_under(ours, &request, &always);
    assert_eq!(
        ours_fates,
        [
            format!("{}: peer:22", always[0]),
            format!("{}: peer:80", always[1])
        ]
    );
}
