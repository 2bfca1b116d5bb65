//! meshinit driven by a real container runtime: podman (CNI network backend, runc) runs
//! containers on a network whose conflist chains meshinit after `bridge` + `host-local`
//! (written by `meshinit cni install`), and runs meshinit's image as an init container in a
//! pod before the app. Each test gets a throwaway "host" namespace (podman runs under
//! `nsenter --net=`, so its bridge and host rules live there, never in the machine's own
//! namespace) and a private podman root, run root and CNI directories under a temporary
//! directory, all removed on drop. Images come from local content only: busybox-static and
//! scripts/build-image.sh's iptables variant, both FROM scratch. Needs root and podman,
//! runc, catatonit, busybox-static, containernetworking-plugins (scripts/test.sh installs
//! them); skips outside CI without them, fails in CI.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Debian's CNI reference plugins.
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
const BUSYBOX: &str = "/bin/busybox";
const APP_IMAGE: &str = "localhost/mshi-app:test";
const MESHINIT_IMAGE: &str = "localhost/mshi-meshinit:test-iptables";
const PROXY_UID: u32 = 1337;
const EGRESS_PORT: u16 = 15001;
/// An address that exists nowhere else; the host namespace owns it and listens on it.
const REMOTE: &str = "203.0.113.7:80";
/// Below the machine's hard limits: podman's defaults (the hard limit) make runc fail.
const ULIMITS: &str = r#"["nofile=1024:1024", "nproc=1024:1024"]"#;

static NEXT_FIXTURE: AtomicU32 = AtomicU32::new(0);

/// Whether podman and what it needs are installed; outside CI a missing tool skips the test.
fn require_podman() -> bool {
    if !require_root() {
        return false;
    }
    let missing: Vec<&str> = [
        ("podman", "/usr/bin/podman"),
        ("runc", "/usr/sbin/runc"),
        ("catatonit", "/usr/bin/catatonit"),
        ("busybox-static", BUSYBOX),
        ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ]
    .into_iter()
    .filter(|(_, path)| !Path::new(path).exists())
    .map(|(package, _)| package)
    .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "needs {} (apt-get install them; scripts/test.sh does)",
        missing.join(", ")
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}, and CI=true forbids skipping");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED podman test: {why}");
    false
}

/// A private podman: its own storage, run root, CNI configuration and plugin directories
/// under `dir`, running under the `host` namespace. Drop removes every container, pod and
/// file it made.
struct Podman {
    dir: PathBuf,
    host: TestNetns,
}

impl Podman {
    fn new() -> Podman {
        remove_leftovers_of_dead_processes();
        let serial = NEXT_FIXTURE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mshi-podman-{}-{serial}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["root", "runroot", "tmp", "net.d", "plugins", "ipam"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the podman directories");
        }
        let podman = Podman {
            host: TestNetns::new("podman-host"),
            dir,
        };
        for plugin in ["bridge", "host-local", "loopback"] {
            std::fs::copy(
                Path::new(REFERENCE_PLUGINS).join(plugin),
                podman.dir.join("plugins").join(plugin),
            )
            .unwrap_or_else(|e| panic!("copy the {plugin} plugin: {e}"));
        }
        let conf = format!(
            "[containers]\ndefault_ulimits = {ULIMITS}\n\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{plugins}\"]\n\
             network_config_dir = \"{netd}\"\n\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\nevents_logfile_path = \"{events}\"\ntmp_dir = \"{tmp}\"\n",
            plugins = podman.dir.join("plugins").display(),
            netd = podman.dir.join("net.d").display(),
            events = podman.dir.join("events.log").display(),
            tmp = podman.dir.join("tmp").display(),
        );
        std::fs::write(podman.dir.join("containers.conf"), conf).expect("write containers.conf");
        podman
    }

    /// `nsenter --net=HOST podman --root ... ARGS`: podman in the test's host namespace.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.host.path().display()))
            .args(self.podman_words())
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .stdin(Stdio::null());
        command
    }

    /// The podman command line with this fixture's storage (also given to build-image.sh).
    fn podman_words(&self) -> Vec<String> {
        vec![
            "podman".into(),
            "--root".into(),
            self.dir.join("root").display().to_string(),
            "--runroot".into(),
            self.dir.join("runroot").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
        ]
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run podman {}: {e}", args.join(" ")))
    }

    /// Runs podman and returns its stdout, panicking with its output when it fails.
    fn checked(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "podman {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A FROM scratch image holding only busybox-static: the "app".
    fn import_app_image(&self) {
        let rootfs = self.dir.join("app-rootfs/bin");
        std::fs::create_dir_all(&rootfs).expect("create the app rootfs");
        std::fs::copy(BUSYBOX, rootfs.join("busybox")).expect("copy busybox");
        let tarball = self.dir.join("app.tar");
        let tar = Command::new("tar")
            .arg("-C")
            .arg(self.dir.join("app-rootfs"))
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(tar.success(), "tar of the app rootfs failed");
        self.checked(&[
            "import",
            "--quiet",
            "--change",
            "ENTRYPOINT [\"/bin/busybox\"]",
            &tarball.display().to_string(),
            APP_IMAGE,
        ]);
    }

    /// meshinit's iptables image, made by scripts/build-image.sh around the test binary
    /// (dynamically linked: the image's Debian libc serves it).
    fn build_meshinit_image(&self) -> String {
        let (name, tag) = MESHINIT_IMAGE.rsplit_once(':').expect("name:tag");
        let tag = tag.trim_end_matches("-iptables");
        let output = Command::new(Path::new(REPO).join("scripts/build-image.sh"))
            .args(["--variant", "iptables", "--binary", MESHINIT])
            .args(["--name", name, "--tag", tag])
            .env("PODMAN", self.podman_words().join(" "))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/build-image.sh");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "build-image.sh failed ({}):\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(MESHINIT_IMAGE) && stdout.contains("bytes"),
            "build-image.sh prints the image and its size: {stdout}"
        );
        stdout
    }

    /// A network configuration list of `bridge` + `host-local` named `name` (bridge device
    /// `bridge`, subnet `subnet`), with leases kept under this fixture's directory.
    fn write_bridge_network(&self, name: &str, bridge: &str, subnet: &str) -> PathBuf {
        let path = self.dir.join("net.d").join(format!("{name}.conflist"));
        let text = format!(
            r#"{{
  "cniVersion": "1.0.0",
  "name": "{name}",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": true,
      "ipMasq": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "{subnet}" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}],
        "dataDir": "{ipam}"
      }}
    }}
  ]
}}
"#,
            ipam = self.dir.join("ipam").display()
        );
        std::fs::write(&path, text).expect("write the conflist");
        path
    }

    /// The process ID of a running container (or of a pod's infra container).
    fn pid_of(&self, container: &str) -> u32 {
        let pid = self.checked(&["inspect", "--format", "{{.State.Pid}}", container]);
        pid.parse()
            .unwrap_or_else(|_| panic!("pid of {container}: {pid:?}"))
    }

    /// The leases host-local holds for network `name`.
    fn leases(&self, name: &str) -> Vec<String> {
        std::fs::read_dir(self.dir.join("ipam").join(name))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts that `bridge` and the bridge plugin's masquerading rules for `subnet` live
    /// in the test's host namespace, and not in the machine's own.
    fn assert_bridge_only_in_host_namespace(&self, bridge: &str, subnet: &str) {
        let in_host = self.host.run_checked("ip", &["-o", "link", "show"]);
        assert!(
            in_host.contains(bridge),
            "{bridge} in the host namespace:\n{in_host}"
        );
        let host_rules = self.host.run_checked("iptables-nft-save", &["-t", "nat"]);
        assert!(
            host_rules.contains(subnet),
            "the bridge plugin's masquerading for {subnet} is in the host namespace:\n{host_rules}"
        );
        // Reading the machine's namespace only (never changing it): nothing of ours there.
        let machine_links = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .expect("run ip");
        assert!(
            !String::from_utf8_lossy(&machine_links.stdout).contains(bridge),
            "{bridge} must not appear in the machine's own namespace"
        );
        if let Ok(output) = Command::new("iptables-nft-save")
            .args(["-t", "nat"])
            .output()
        {
            assert!(
                !String::from_utf8_lossy(&output.stdout).contains(subnet),
                "rules for {subnet} must not appear in the machine's own namespace"
            );
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers first (their CNI DEL runs in the host namespace, still there), then pods.
        for args in [
            &["rm", "--all", "--force", "--time", "0"][..],
            &["pod", "rm", "--all", "--force", "--time", "0"][..],
        ] {
            if let Ok(output) = self.command(args).output()
                && !output.status.success()
            {
                eprintln!(
                    "warning: podman {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
        }
        unmount_below(&self.dir);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Lazily unmounts whatever is still mounted below `dir` (a container's shm after a
/// failed removal), deepest first, so the directory can be removed.
fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in mounts {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}

/// A test process killed mid-run leaves its podman directory behind: remove those of
/// processes that no longer exist.
fn remove_leftovers_of_dead_processes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("mshi-podman-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            unmount_below(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `podman exec [--user U] CONTAINER busybox nc -w 2 HOST PORT`: a connection made by a
/// process of the container. Returns nc's output (the listener's reply line).
fn connect_from_container(podman: &Podman, container: &str, user: Option<u32>) -> Output {
    let (host, port) = REMOTE.rsplit_once(':').expect("host:port");
    let user = user.map(|u| format!("{u}:{u}"));
    let mut args = vec!["exec"];
    if let Some(user) = &user {
        args.extend(["--user", user]);
    }
    args.extend([container, "/bin/busybox", "nc", "-w", "2", host, port]);
    podman.run(&args)
}

/// Waits until `listener` has accepted `count` connections (the reply may reach nc before
/// the accept thread records the landing).
fn landings(listener: &Listener, count: usize) -> Vec<Landing> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let accepted = listener.accepted();
        if accepted.len() >= count || Instant::now() > deadline {
            return accepted;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that a connection made inside a container to REMOTE was redirected to
/// `proxy` with its original destination, and that one made as the proxy's user went to
/// `remote` directly.
fn assert_container_traffic(podman: &Podman, container: &str, proxy: &Listener, remote: &Listener) {
    let dest: SocketAddr = REMOTE.parse().unwrap();
    let app = connect_from_container(podman, container, None);
    let reply = String::from_utf8_lossy(&app.stdout);
    let landed = landings(proxy, 1);
    assert_eq!(
        landed.len(),
        1,
        "the app's connection to {dest} lands on the proxy port {EGRESS_PORT} in its namespace \
         (nc: {reply} {})\nrules:\n{}",
        String::from_utf8_lossy(&app.stderr),
        podman.host.nat_rules()
    );
    assert_eq!(
        landed[0].original_dst,
        Some(dest),
        "SO_ORIGINAL_DST is the app's destination: {}",
        landed[0]
    );
    assert!(
        reply.contains(&format!("orig={dest}")),
        "the app received the proxy listener's answer: {reply}"
    );
    assert!(
        remote.accepted().is_empty(),
        "nothing reached {dest} directly"
    );

    let as_proxy = connect_from_container(podman, container, Some(PROXY_UID));
    let landed = landings(remote, 1);
    assert_eq!(
        landed.len(),
        1,
        "uid {PROXY_UID} (IgnoredUID) reaches {dest} directly (nc: {} {})",
        String::from_utf8_lossy(&as_proxy.stdout),
        String::from_utf8_lossy(&as_proxy.stderr)
    );
    assert_eq!(proxy.accepted().len(), 1, "and not the proxy port");
}

#[test]
fn podman_runs_meshinit_chained_after_bridge_and_deletes_on_removal() {
    if !require_podman() {
        return;
    }
    let started = Instant::now();
    let podman = Podman::new();
    podman.import_app_image();
    let (network, bridge, subnet) = ("mshi-chain", "mshichain0", "10.89.41.0/24");
    let conflist = podman.write_bridge_network(network, bridge, subnet);

    // The node DaemonSet's step: meshinit's entry after bridge, its binary beside bridge.
    let install = Command::new(MESHINIT)
        .args(["cni", "install", "--conflist"])
        .arg(&conflist)
        .arg("--bin-dir")
        .arg(podman.dir.join("plugins"))
        .args(["--ignored-uid", &PROXY_UID.to_string()])
        .args(["--proxy-egress-port", &EGRESS_PORT.to_string()])
        .args(["--proxy-ingress-port", "15000", "--app-ports", "8080"])
        .output()
        .expect("run meshinit cni install");
    assert!(
        install.status.success(),
        "cni install: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap()).unwrap();
    assert_eq!(list["plugins"][1]["type"], "meshinit", "{list}");
    assert!(podman.dir.join("plugins/meshinit").exists());

    podman.host.add_address("203.0.113.7".parse().unwrap());
    let remote = podman.host.listen(80);
    podman.checked(&[
        "run",
        "--detach",
        "--name",
        "app",
        "--network",
        network,
        APP_IMAGE,
        "sleep",
        "600",
    ]);
    // A name for the container's namespace, which also keeps it alive after removal, so
    // what DEL left behind can be looked at.
    let container = TestNetns::attach("podman-app", podman.pid_of("app"));
    podman.assert_bridge_only_in_host_namespace(bridge, subnet);

    // ADD installed the rules in the container's namespace: CNI's `auto` chose the native
    // backend there (a fresh namespace), read back with `nft`.
    assert_only_backend_holds_ours(&container, "nftables", EGRESS_PORT);
    let rules = without_counters(&our_rules(&container, "nftables"));
    for wanted in [
        "meta skuid 1337 return",
        "tcp dport 22 return",
        "meta l4proto tcp redirect to :15001",
        "tcp dport 8080 redirect to :15000",
        "type nat hook output",
    ] {
        assert!(rules.contains(wanted), "ADD installed {wanted:?}:\n{rules}");
    }
    let on_host = ours_anywhere(&podman.host);
    assert_eq!(on_host, "", "nothing of meshinit's in the host namespace");
    let proxy = container.listen(EGRESS_PORT);
    assert_container_traffic(&podman, "app", &proxy, &remote);
    assert_eq!(podman.leases(network).len(), 1);

    // Removing the container runs DEL through the chain, meshinit first: its rules go, and
    // bridge's DEL after it (which runs only when meshinit's succeeded) frees the lease.
    let removal = podman.run(&["rm", "--force", "--time", "0", "app"]);
    let stderr = String::from_utf8_lossy(&removal.stderr);
    assert!(removal.status.success(), "podman rm: {stderr}");
    assert!(
        !stderr.to_lowercase().contains("error"),
        "DEL reported no error: {stderr}"
    );
    let after = ours_anywhere(&container);
    assert_eq!(after, "", "DEL removed meshinit's rules");
    assert!(
        podman.leases(network).is_empty(),
        "the chain's DEL reached host-local"
    );
    let links = container.run_checked("ip", &["-o", "link", "show"]);
    assert!(
        !links.contains("eth0"),
        "bridge's DEL removed eth0: {links}"
    );

    // Uninstall leaves the list as bridge alone, the binary gone.
    let uninstall = Command::new(MESHINIT)
        .args(["cni", "uninstall", "--conflist"])
        .arg(&conflist)
        .arg("--bin-dir")
        .arg(podman.dir.join("plugins"))
        .output()
        .expect("run meshinit cni uninstall");
    assert!(uninstall.status.success());
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap()).unwrap();
    assert_eq!(list["plugins"].as_array().map(Vec::len), Some(1));
    assert!(!podman.dir.join("plugins/meshinit").exists());
    eprintln!("podman chain test: {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn meshinit_image_as_init_container_of_a_pod_with_least_privilege() {
    if !require_podman() {
        return;
    }
    let started = Instant::now();
    let podman = Podman::new();
    podman.import_app_image();
    let built = podman.build_meshinit_image();
    eprintln!("{}", built.trim());
    let (network, bridge, subnet) = ("mshi-pod", "mshipod0", "10.89.42.0/24");
    podman.write_bridge_network(network, bridge, subnet);

    // The pod: its infra (pause) container holds the network namespace, as in Kubernetes.
    podman.checked(&["pod", "create", "--name", "web", "--network", network]);
    podman.checked(&["pod", "start", "web"]);
    let infra = podman.checked(&["pod", "inspect", "--format", "{{.InfraContainerID}}", "web"]);
    let pod = TestNetns::attach("podman-pod", podman.pid_of(&infra));
    podman.assert_bridge_only_in_host_namespace(bridge, subnet);

    let env = [
        "--env",
        "APPMESH_IGNORE_UID=1337",
        "--env",
        "APPMESH_ENVOY_INGRESS_PORT=15000",
        "--env",
        "APPMESH_ENVOY_EGRESS_PORT=15001",
        "--env",
        "APPMESH_APP_PORTS=8080",
        "--env",
        "APPMESH_EGRESS_IGNORED_IP=169.254.169.254",
    ];
    let init = |caps: &str, args: &[&str]| {
        let mut command = vec!["run", "--rm", "--pod", "web", "--cap-drop=all"];
        if !caps.is_empty() {
            command.extend(["--cap-add", caps]);
        }
        command.extend(env);
        command.push(MESHINIT_IMAGE);
        command.extend(args);
        podman.run(&command)
    };

    // Too few privileges: refused up front with the fix, nothing installed.
    let refused = init("NET_ADMIN", &["apply", "--from-env"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "missing NET_RAW is exit 3: {stderr}"
    );
    assert!(stderr.contains("NET_RAW"), "{stderr}");
    assert_eq!(ours_anywhere(&pod), "");

    // The init container: only NET_ADMIN and NET_RAW, plus SETUID/SETGID for --verify.
    let applied = init(
        "NET_ADMIN,NET_RAW,SETUID,SETGID",
        &["apply", "--from-env", "--verify"],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&applied.stdout),
        String::from_utf8_lossy(&applied.stderr),
    );
    assert!(
        applied.status.success(),
        "init container apply --verify ({}):\n{stdout}\n{stderr}",
        applied.status
    );
    assert!(
        stdout.contains("redirection works as configured"),
        "{stdout}"
    );
    // `auto` chose the native backend in the fresh pod.
    assert_only_backend_holds_ours(&pod, "nftables", EGRESS_PORT);
    assert_eq!(
        ours_anywhere(&podman.host),
        "",
        "the rules went into the pod, not the host namespace"
    );
    let status = init("NET_ADMIN,NET_RAW", &["status", "--from-env"]);
    assert!(
        status.status.success(),
        "status in the pod says in sync: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    // The app starts after it, in the same namespace, with the rules in place.
    podman.host.add_address("203.0.113.7".parse().unwrap());
    let remote = podman.host.listen(80);
    let proxy = pod.listen(EGRESS_PORT);
    podman.checked(&[
        "run", "--detach", "--name", "app", "--pod", "web", APP_IMAGE, "sleep", "600",
    ]);
    assert_container_traffic(&podman, "app", &proxy, &remote);

    // The image's iptables backends work too: clean, then apply through iptables-legacy.
    let cleaned = init("NET_ADMIN,NET_RAW", &["clean"]);
    assert!(cleaned.status.success(), "{}", text(&cleaned.stderr));
    assert_eq!(ours_anywhere(&pod), "", "clean removed the rules");
    let legacy = init(
        "NET_ADMIN,NET_RAW",
        &["apply", "--from-env", "--backend", "legacy"],
    );
    assert!(legacy.status.success(), "{}", text(&legacy.stderr));
    let rules = pod.nat_rules();
    assert!(
        rules.contains("## iptables-legacy-save") && rules.contains("-j APPMESH_EGRESS"),
        "the legacy tables hold the rules:\n{rules}"
    );
    eprintln!(
        "podman init-container test: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The static binary scripts/test.sh builds (scripts/build-static.sh) before the tests.
fn static_meshinit() -> Option<PathBuf> {
    let host = Command::new("rustc").arg("-vV").output().ok()?;
    let host = String::from_utf8_lossy(&host.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))?;
    let path = Path::new(REPO).join(format!("target/{host}/release/meshinit"));
    path.exists().then_some(path)
}

#[test]
fn the_scratch_image_alone_applies_verifies_and_cleans_through_nf_tables() {
    if !require_podman() {
        return;
    }
    let Some(binary) = static_meshinit() else {
        let why = "no static meshinit: run scripts/build-static.sh (scripts/test.sh does)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    };
    let podman = Podman::new();
    podman.import_app_image();
    let image = "localhost/mshi-meshinit:test";
    let output = Command::new(Path::new(REPO).join("scripts/build-image.sh"))
        .args(["--variant", "static", "--binary"])
        .arg(&binary)
        .args(["--name", "localhost/mshi-meshinit", "--tag", "test"])
        .env("PODMAN", podman.podman_words().join(" "))
        .env("CONTAINERS_CONF", podman.dir.join("containers.conf"))
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/build-image.sh");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let (network, bridge, subnet) = ("mshi-scratch", "mshiscr0", "10.89.43.0/24");
    podman.write_bridge_network(network, bridge, subnet);
    podman.checked(&["pod", "create", "--name", "bare", "--network", network]);
    podman.checked(&["pod", "start", "bare"]);
    let infra = podman.checked(&[
        "pod",
        "inspect",
        "--format",
        "{{.InfraContainerID}}",
        "bare",
    ]);
    let pod = TestNetns::attach("podman-bare", podman.pid_of(&infra));
    let run = |caps: &str, args: &[&str]| {
        let mut command = vec![
            "run",
            "--rm",
            "--pod",
            "bare",
            "--cap-drop=all",
            "--cap-add",
            caps,
            "--env",
            "APPMESH_IGNORE_UID=1337",
            "--env",
            "APPMESH_ENVOY_EGRESS_PORT=15001",
            image,
        ];
        command.extend(args);
        podman.run(&command)
    };
    // Only the static binary is in the image: no iptables, no ipset, no shell.
    let applied = run(
        "NET_ADMIN,NET_RAW,SETUID,SETGID",
        &["apply", "--from-env", "--verify"],
    );
    assert!(
        applied.status.success(),
        "{}\n{}",
        text(&applied.stdout),
        text(&applied.stderr)
    );
    assert!(
        text(&applied.stderr).contains("backend=nftables"),
        "{}",
        text(&applied.stderr)
    );
    let table = pod.run_checked("nft", &["list", "table", "inet", "meshinit"]);
    assert!(table.contains("redirect to :15001"), "{table}");
    let status = run("NET_ADMIN,NET_RAW", &["status", "--from-env"]);
    assert!(status.status.success(), "{}", text(&status.stdout));

    podman.host.add_address("203.0.113.7".parse().unwrap());
    let remote = podman.host.listen(80);
    let proxy = pod.listen(EGRESS_PORT);
    podman.checked(&[
        "run", "--detach", "--name", "app", "--pod", "bare", APP_IMAGE, "sleep", "600",
    ]);
    assert_container_traffic(&podman, "app", &proxy, &remote);

    let cleaned = run("NET_ADMIN,NET_RAW", &["clean"]);
    assert!(cleaned.status.success(), "{}", text(&cleaned.stderr));
    let left = pod
        .command("nft")
        .args(["list", "table", "inet", "meshinit"])
        .output()
        .unwrap();
    assert!(!left.status.success(), "clean removed the table");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn build_image_refuses_a_dynamic_binary_for_the_scratch_image() {
    if !require_podman() {
        return;
    }
    // The test binary is dynamically linked: a FROM scratch image could not run it.
    let output = Command::new(Path::new(REPO).join("scripts/build-image.sh"))
        .args([
            "--variant",
            "static",
            "--binary",
            MESHINIT,
            "--tag",
            "never",
        ])
        .env("PODMAN", "podman --root /nonexistent-meshinit-root")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/build-image.sh");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("dynamically linked"), "{stderr}");
}
