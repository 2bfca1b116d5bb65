//! meshinit driven exactly as kubelet drives it: containerd (Debian's package) started by the
//! test in a throwaway "host" network namespace, with its own config, socket, state, CNI
//! list (bridge, portmap, meshinit in per-pod mode) and a pause image built locally; pods
//! created through the CRI (`RunPodSandbox`, with a small Python gRPC client generated from
//! tests/cri/cri.proto) with and without the App Mesh controller's annotations, proven with
//! real connections. containerd and its shims are stopped at the end.
//! Needs root, containerd, ctr, podman, busybox-static and target/pytools with grpcio-tools
//! (scripts/test.sh installs them); skips loudly without them, fails under CI=true.

mod cni_runtime;
mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use common::*;

const PAUSE_IMAGE: &str = "localhost/meshinit-pause:test";
const CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
const PROXY_UID: u32 = 1337;
const EGRESS_PORT: u16 = 15001;
const INGRESS_PORT: u16 = 15000;
const APP_PORT: u16 = 8080;
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Says why the test cannot run: a skip outside CI, a failure under CI=true.
fn unavailable(why: &str) -> bool {
    use std::io::Write;
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("containerd CRI test: {why}, and CI=true forbids skipping it");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED containerd CRI test: {why} (scripts/test.sh installs what it needs)"
    );
    false
}

fn python() -> PathBuf {
    Path::new(REPO).join("target/pytools/bin/python3")
}

fn prerequisites() -> bool {
    if !require_root() {
        return false;
    }
    for tool in ["containerd", "ctr", "podman", "nsenter"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return unavailable(&format!("{tool} is not installed"));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return unavailable("/bin/busybox (busybox-static) is missing");
    }
    let grpc = Command::new(python())
        .args(["-c", "import grpc, grpc_tools"])
        .status();
    if !grpc.is_ok_and(|s| s.success()) {
        return unavailable("target/pytools has no grpcio / grpcio-tools");
    }
    true
}

/// The `cni-*` namespaces containerd names pods' namespaces by.
fn cni_namespaces() -> BTreeSet<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("cni-"))
                .collect()
        })
        .unwrap_or_default()
}

fn checked(what: &str, output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A containerd of our own, serving the CRI on a private socket from inside `host`.
struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    daemon: Child,
    pods: Mutex<Vec<String>>,
    /// The node: containerd, its CNI plugins and the pods' bridge live here.
    host: TestNetns,
}

impl Containerd {
    fn start() -> Containerd {
        // Short, whatever the checkout's path: podman refuses a runroot longer than 50
        // characters, and containerd's socket path must fit a sockaddr_un (108 bytes).
        let dir = std::env::temp_dir().join(format!("mshi-ctrd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["root", "state", "net.d", "bin", "pause"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for plugin in ["bridge", "host-local", "loopback", "portmap"] {
            std::fs::copy(
                Path::new(cni_runtime::REFERENCE_PLUGINS).join(plugin),
                dir.join("bin").join(plugin),
            )
            .unwrap();
        }
        std::fs::copy(cni_runtime::MESHINIT, dir.join("bin/meshinit")).unwrap();
        let socket = dir.join("containerd.sock");
        let d = dir.display();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_cgroup = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/bin"
    conf_dir = "{d}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
"#,
                socket.display()
            ),
        )
        .unwrap();
        // The node's list: the interface plugin, portmap, then meshinit's entry as
        // `cni install --kubernetes` writes it, holding node-wide defaults.
        let list = json!({
            "cniVersion": "1.0.0",
            "name": "pods",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": format!("{d}/ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "meshinit", "ignoredUID": PROXY_UID.to_string(),
                 "proxyEgressPort": EGRESS_PORT.to_string(), "capabilities": {CAPABILITY: true}}
            ]
        });
        std::fs::write(dir.join("net.d/10-pods.conflist"), list.to_string()).unwrap();

        let host = TestNetns::new("node");
        let daemon = Command::new("nsenter")
            .arg(format!("--net={}", host.path().display()))
            .arg("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .expect("containerd starts");
        let containerd = Containerd {
            dir,
            socket,
            daemon,
            pods: Mutex::new(Vec::new()),
            host,
        };
        containerd.wait_for_socket();
        containerd.import_pause_image();
        containerd
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.socket.exists()
            || !self
                .ctr(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 30 s: {}",
                std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args);
        command
    }

    /// `FROM scratch` + busybox-static, built with podman in a private store, imported.
    fn import_pause_image(&self) {
        let pause = self.dir.join("pause");
        std::fs::copy("/bin/busybox", pause.join("busybox")).unwrap();
        std::fs::write(
            pause.join("Containerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             ENTRYPOINT [\"/bin/busybox\", \"sleep\", \"2147483647\"]\n",
        )
        .unwrap();
        let podman = |args: &[&str]| {
            let mut command = Command::new("podman");
            command
                .arg("--root")
                .arg(self.dir.join("podman/root"))
                .arg("--runroot")
                .arg(self.dir.join("podman/run"))
                .args(["--storage-driver", "vfs"])
                .args(args);
            command
        };
        let archive = self.dir.join("pause.tar");
        checked(
            "podman build",
            podman(&["build", "-q", "-t", PAUSE_IMAGE])
                .arg(&pause)
                .output()
                .unwrap(),
        );
        checked(
            "podman save",
            podman(&["save", "--format", "oci-archive", "-o"])
                .arg(&archive)
                .arg(PAUSE_IMAGE)
                .output()
                .unwrap(),
        );
        checked(
            "ctr images import",
            self.ctr(&[
                "images",
                "import",
                "--snapshotter",
                "native",
                "--base-name",
                "localhost/meshinit-pause",
            ])
            .arg(&archive)
            .output()
            .unwrap(),
        );
        let _ = std::fs::remove_dir_all(self.dir.join("podman"));
    }

    fn cri(&self, args: &[&str]) -> std::process::Output {
        Command::new(python())
            .arg(Path::new(REPO).join("tests/cri/cri_client.py"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--gen")
            .arg(self.dir.join("gen"))
            .args(args)
            .output()
            .expect("the CRI client runs")
    }

    /// RunPodSandbox: the pod's id, or the error containerd reported.
    fn run_pod(
        &self,
        name: &str,
        namespace: &str,
        annotations: &[(&str, String)],
    ) -> Result<String, String> {
        let mut args = vec![
            "run".to_owned(),
            "--name".into(),
            name.into(),
            "--namespace".into(),
            namespace.into(),
            "--uid".into(),
            format!("uid-{name}"),
        ];
        for (key, value) in annotations {
            args.push("--annotation".into());
            args.push(format!("{key}={value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.cri(&args);
        if output.status.success() {
            let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            self.pods.lock().unwrap().push(id.clone());
            Ok(id)
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// StopPodSandbox (CNI DEL) then RemovePodSandbox.
    fn remove_pod(&self, id: &str) {
        checked("StopPodSandbox", self.cri(&["stop", id]));
        checked("RemovePodSandbox", self.cri(&["remove", id]));
        self.pods.lock().unwrap().retain(|p| p != id);
    }

    /// The pod's network namespace file.
    fn netns_of(&self, id: &str) -> PathBuf {
        let info = checked(
            "ctr containers info",
            self.ctr(&["containers", "info", id]).output().unwrap(),
        );
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        let path = info["Spec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|namespaces| {
                namespaces
                    .iter()
                    .find(|n| n["type"] == "network")
                    .and_then(|n| n["path"].as_str())
            })
            .unwrap_or_else(|| panic!("no network namespace in {info}"));
        PathBuf::from(path)
    }

    /// The pod's pause process, to name its namespace for the harness.
    fn pid_of(&self, id: &str) -> u32 {
        let tasks = checked("ctr tasks ls", self.ctr(&["tasks", "ls"]).output().unwrap());
        tasks
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(id)).then(|| fields.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no task for pod {id}:\n{tasks}"))
    }

    /// What the pod's namespace holds of nf_tables (empty: nothing).
    /// The namespace's ruleset as `nft list` prints it, counters aside.
    fn ruleset_in(&self, netns: &Path) -> String {
        without_counters(&checked(
            "nft list ruleset",
            Command::new("nsenter")
                .arg(format!("--net={}", netns.display()))
                .args(["nft", "list", "ruleset"])
                .output()
                .unwrap(),
        ))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in self.pods.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            let _ = self.cri(&["stop", &id]);
            let _ = self.cri(&["remove", &id]);
        }
        // containerd, then the shims it started (they outlive it by design), by pid.
        let pid = nix::unistd::Pid::from_raw(self.daemon.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.daemon.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let socket = self.socket.display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("containerd-shim") && cmdline.contains(&socket) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Mounts containerd left under its directories (sandbox /dev/shm ...), deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let dir = self.dir.display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&dir))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in ours {
            let _ = Command::new("umount").args(["-l", mount]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mesh_annotations(app_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("appmesh.k8s.aws/appmeshCNI", "enabled".into()),
        ("appmesh.k8s.aws/sidecarInjectorWebhook", "enabled".into()),
        ("appmesh.k8s.aws/ports", app_port.to_string()),
        ("appmesh.k8s.aws/proxyIngressPort", INGRESS_PORT.to_string()),
    ]
}

/// The pod's IPv4 address on eth0.
fn pod_address(pod: &TestNetns) -> IpAddr {
    let out = pod.run_checked("ip", &["-o", "-4", "addr", "show", "dev", "eth0"]);
    let cidr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no IPv4 address on eth0: {out}"));
    cidr.split('/').next().unwrap().parse().unwrap()
}

#[test]
fn pods_created_through_containerds_cri_get_what_they_asked_for() {
    if !prerequisites() {
        return;
    }
    let namespaces_before = cni_namespaces();
    let containerd = Containerd::start();
    let host = &containerd.host;
    let remote_addr: SocketAddr = "10.88.0.1:80".parse().unwrap();
    let node_listener = host.listen(80);

    // 1. A plain pod starts and is untouched: no table, no rule, traffic as without meshinit.
    let plain = containerd.run_pod("plain", "shop", &[]).expect("plain pod");
    let plain_netns = containerd.netns_of(&plain);
    assert_eq!(
        containerd.ruleset_in(&plain_netns),
        "",
        "the plain pod holds nothing"
    );
    {
        let pod = TestNetns::attach("plain", containerd.pid_of(&plain));
        let app = pod.listen(APP_PORT);
        assert_direct(
            &pod.connect(remote_addr, Some((1000, 1000)), DEFAULT_CONNECT_TIMEOUT),
            &node_listener,
        );
        let inbound = SocketAddr::new(pod_address(&pod), APP_PORT);
        assert_direct(&host.connect(inbound, None, DEFAULT_CONNECT_TIMEOUT), &app);
    }

    // 2. An annotated pod gets exactly its annotations' rules, proven both ways.
    let web = containerd
        .run_pod("web", "shop", &mesh_annotations(APP_PORT))
        .expect("annotated pod");
    {
        let pod = TestNetns::attach("web", containerd.pid_of(&web));
        cni_runtime::assert_installed_as_rendered(
            host,
            &pod,
            &json!({
                "cniVersion": "1.0.0",
                "ignoredUID": PROXY_UID.to_string(),
                "proxyEgressPort": EGRESS_PORT.to_string(),
                "proxyIngressPort": INGRESS_PORT.to_string(),
                "appPorts": [APP_PORT.to_string()]
            }),
        );
        let egress_proxy = pod.listen(EGRESS_PORT);
        let ingress_proxy = pod.listen(INGRESS_PORT);
        let _app = pod.listen(APP_PORT);
        let outside: SocketAddr = "203.0.113.7:80".parse().unwrap();
        assert_redirected(
            &pod.connect(outside, Some((1000, 1000)), DEFAULT_CONNECT_TIMEOUT),
            &egress_proxy,
            outside,
        );
        assert_direct(
            &pod.connect(
                remote_addr,
                Some((PROXY_UID, PROXY_UID)),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            &node_listener,
        );
        // From the node, through the bridge: PREROUTING sends it to the ingress listener.
        let inbound = SocketAddr::new(pod_address(&pod), APP_PORT);
        assert_redirected(
            &host.connect(inbound, None, DEFAULT_CONNECT_TIMEOUT),
            &ingress_proxy,
            inbound,
        );
    }

    // 3. A bad annotation refuses the pod, and containerd's error names it.
    let mut bad = mesh_annotations(APP_PORT);
    bad.push(("appmesh.k8s.aws/egressIgnoredPorts", "22,ssh".into()));
    let error = containerd
        .run_pod("bad", "shop", &bad)
        .expect_err("a pod with a bad annotation is refused");
    assert!(
        error.contains("appmesh.k8s.aws/egressIgnoredPorts") && error.contains("22,ssh"),
        "containerd's error names the annotation and its value: {error}"
    );

    // 4. Twenty pods at once, half of them annotated (each with its own app port).
    let created: Vec<(usize, Result<String, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let containerd = &containerd;
                scope.spawn(move || {
                    let annotations = if i % 2 == 0 {
                        mesh_annotations(9000 + i as u16)
                    } else {
                        Vec::new()
                    };
                    (
                        i,
                        containerd.run_pod(&format!("pod{i}"), "shop", &annotations),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, pod) in &created {
        let id = pod
            .as_ref()
            .unwrap_or_else(|e| panic!("pod{i} was not created: {e}"));
        let ruleset = containerd.ruleset_in(&containerd.netns_of(id));
        if i % 2 == 0 {
            let expected = format!("tcp dport {} redirect to :{INGRESS_PORT}", 9000 + i);
            assert!(
                ruleset.contains(&expected)
                    && ruleset.contains(&format!("redirect to :{EGRESS_PORT}")),
                "pod{i} has its own rules ({expected}):\n{ruleset}"
            );
            assert_eq!(
                ruleset.matches("tcp dport 90").count(),
                1,
                "pod{i} has only its own port:\n{ruleset}"
            );
        } else {
            assert_eq!(ruleset, "", "pod{i} (not annotated) holds nothing");
        }
    }

    // 5. Stopping and removing every pod leaves nothing of ours and no namespace behind.
    let mut all: Vec<String> = vec![plain, web];
    all.extend(created.into_iter().filter_map(|(_, pod)| pod.ok()));
    let paths: Vec<PathBuf> = all.iter().map(|id| containerd.netns_of(id)).collect();
    for id in &all {
        containerd.remove_pod(id);
    }
    for path in &paths {
        assert!(!path.exists(), "{} is left behind", path.display());
    }
    let left: Vec<String> = cni_namespaces()
        .difference(&namespaces_before)
        .cloned()
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !host
            .run_checked("nft", &["list", "tables"])
            .contains("meshinit"),
        "nothing of ours on the node"
    );
}
