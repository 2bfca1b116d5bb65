//! Throwaway network namespaces, created with iproute2 and deleted on drop.
//!
//! A [`NetnsPair`] is the usual fixture: an "app" namespace (where meshinit installs its
//! rules, like a pod) and a "peer" namespace (the rest of the network), joined by a veth
//! pair. The app's default routes point at the peer, and the peer owns whatever extra
//! addresses a test connects to, so "direct" traffic really leaves the app namespace and
//! lands on a listener in the peer.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sched::{CloneFlags, setns};

/// Every namespace the harness creates starts with this, so leftovers are easy to spot
/// (`ip netns list | grep mshi-`) and to clean up.
pub const NETNS_PREFIX: &str = "mshi-";
/// Where `ip netns add` bind-mounts namespace files.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Inode of the machine's own (initial) network namespace (`PROC_NET_INIT_INO`) since Linux
/// 6.18; older kernels allocate it at boot. The harness refuses to work in a namespace with
/// this inode or in the one the tests were started in (see `is_machines_namespace`).
pub const INIT_NET_NS_INODE: u64 = 0xEFFF_FFF9;

/// Whether `inode` is the machine's namespace: the fixed initial inode, or the namespace of
/// this process's main thread (which never leaves it), on any kernel.
pub fn is_machines_namespace(inode: u64) -> bool {
    inode == INIT_NET_NS_INODE
        || std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok() == Some(inode)
}

/// Interface name of the app's end of the veth pair (what a pod usually calls it).
pub const APP_IFACE: &str = "eth0";
/// Interface name of the peer's end of the veth pair.
pub const PEER_IFACE: &str = "peer0";
pub const APP_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const APP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);

/// Distinguishes namespaces created by one test process (the pid distinguishes processes).
static NEXT_NETNS_SERIAL: AtomicU64 = AtomicU64::new(0);
/// The first `ip netns add` in a process may set up the shared bind mount of
/// /var/run/netns; serializing `ip netns add` avoids racing two of those set-ups.
static IP_NETNS_ADD_LOCK: Mutex<()> = Mutex::new(());
static STALE_CLEANUP: Once = Once::new();

/// One named network namespace, deleted (with `ip netns del`) when dropped, including
/// when a test panics (drop runs during unwinding).
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    path: PathBuf,
    /// The veth end living in this namespace, if it is part of a pair; extra addresses go
    /// there, otherwise on `lo`.
    veth: Option<&'static str>,
}

impl TestNetns {
    /// Creates an empty namespace with `lo` up. `role` ends up in the name ("app", "peer")
    /// so a leftover or a failure message says what the namespace was for.
    pub fn new(role: &str) -> TestNetns {
        STALE_CLEANUP.call_once(delete_namespaces_of_dead_processes);
        let name = unique_name(role);
        {
            let _serialized = IP_NETNS_ADD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_host_command("ip", &["netns", "add", &name]);
        }
        // From here on, Drop deletes the namespace even if set-up below fails.
        let ns = TestNetns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
            veth: None,
        };
        let inode = std::fs::metadata(&ns.path)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", ns.path.display()))
            .ino();
        assert!(
            !is_machines_namespace(inode),
            "{} is the machine's own network namespace; refusing to use it",
            ns.path.display()
        );
        ns.run_inside(|| {
            // Reverse-path filtering would drop test traffic whose source has no route back
            // through the receiving interface; new namespaces normally start with it off,
            // but a host-wide default could be inherited, so turn it off explicitly.
            // Duplicate address detection makes new IPv6 addresses unusable for a second
            // or more; the harness's addresses are unique by construction.
            for (key, value) in [
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
                ("net/ipv6/conf/all/accept_dad", "0"),
                ("net/ipv6/conf/default/accept_dad", "0"),
            ] {
                write_sysctl_of_this_thread(key, value);
            }
        });
        // REDIRECT sends traffic to 127.0.0.1 / ::1: without `lo` up it would time out.
        ns.ip_batch(&["link set lo up"]);
        ns
    }

    /// Names the network namespace of process `pid` (`ip netns attach`), e.g. a container
    /// a runtime made, so the harness can look and listen inside it. The name also keeps
    /// the namespace alive after the process is gone, until drop.
    pub fn attach(role: &str, pid: u32) -> TestNetns {
        STALE_CLEANUP.call_once(delete_namespaces_of_dead_processes);
        let name = unique_name(role);
        {
            let _serialized = IP_NETNS_ADD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_host_command("ip", &["netns", "attach", &name, &pid.to_string()]);
        }
        let ns = TestNetns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
            veth: None,
        };
        let inode = std::fs::metadata(&ns.path)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", ns.path.display()))
            .ino();
        assert_ne!(
            inode, INIT_NET_NS_INODE,
            "process {pid} is in the machine's own network namespace; refusing to use it"
        );
        ns
    }

    /// Namespace name as `ip netns` knows it, e.g. `mshi-4242-3-9f1c2a7b-app`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The processes in this namespace (`ip netns pids`): a killed meshinit's orphaned
    /// children show up here until they finish.
    pub fn processes(&self) -> Vec<u32> {
        let output = Command::new("ip")
            .args(["netns", "pids"])
            .arg(&self.name)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns pids {}: {e}", self.name));
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }

    /// Namespace file, `/var/run/netns/NAME`: what `meshinit apply --netns PATH` takes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ip netns exec NAME program`: a command that runs inside this namespace. Add
    /// arguments and run it as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec"]).arg(&self.name).arg(program);
        command
    }

    /// Runs `program args…` inside this namespace and returns its stdout; panics with its
    /// stderr if it fails. Meant for set-up steps such as hand-written iptables rules.
    pub fn run_checked(&self, program: &str, args: &[&str]) -> String {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name));
        checked_stdout(&format!("{program} {}", args.join(" ")), &self.name, output)
    }

    /// Runs an iptables-family program (`iptables-nft`, `ip6tables-nft`,
    /// `iptables-legacy`…) inside this namespace with `rule` split on whitespace, e.g.
    /// `ns.iptables("iptables-nft", "-t nat -A OUTPUT -p tcp -j REDIRECT --to-ports 15001")`;
    /// panics with its stderr if it fails. Returns stdout (useful for `-S`/`-L`).
    pub fn iptables(&self, program: &str, rule: &str) -> String {
        self.run_checked(program, &rule.split_whitespace().collect::<Vec<_>>())
    }

    /// Like [`run_checked`](Self::run_checked) with `stdin` fed to the program, e.g.
    /// `ns.run_checked_with_stdin("iptables-nft-restore", &["--noflush"], rules)`.
    pub fn run_checked_with_stdin(&self, program: &str, args: &[&str], stdin: &str) -> String {
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name));
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(stdin.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write stdin of {program}: {e}"));
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for {program}: {e}"));
        checked_stdout(&format!("{program} {}", args.join(" ")), &self.name, output)
    }

    /// Runs `f` on a fresh thread that has joined this network namespace, and returns its
    /// result (a panic in `f` propagates). Only that thread changes namespace: `setns`
    /// affects the calling thread alone, and the thread ends when `f` returns, so the
    /// test's own thread never leaves the machine's namespace. Sockets created in `f`
    /// belong to this namespace for their whole life, wherever they are used later.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                enter_netns_on_this_thread(&self.path)
                    .unwrap_or_else(|e| panic!("cannot enter {}: {e}", self.name));
                f()
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Makes the namespace accept traffic for `addr` (a /32 or /128 on its veth end, or on
    /// `lo` for a lone namespace), so a peer can stand in for any remote host, e.g.
    /// 203.0.113.7, 169.254.169.254 or 2001:db8:ff::7.
    pub fn add_address(&self, addr: IpAddr) {
        let device = self.veth.unwrap_or("lo");
        let command = match addr {
            IpAddr::V4(v4) => format!("address add {v4}/32 dev {device}"),
            IpAddr::V6(v6) => format!("address add {v6}/128 dev {device} nodad"),
        };
        self.ip_batch(&[&command]);
    }

    /// The NAT rules currently in this namespace: nf_tables-backed iptables/ip6tables, plus
    /// legacy tables if any exist, plus meshinit's native table if it exists. (Listing with `iptables-legacy-save` would create the
    /// legacy nat table, so it is only used when /proc says the table already exists.) A
    /// save that fails fails the test: an unreadable table must never read as "no rules".
    pub fn nat_rules(&self) -> String {
        let mut dump = String::new();
        for program in ["iptables-nft-save", "ip6tables-nft-save"] {
            dump += &format!("## {program} -t nat\n");
            dump += &self.run_checked(program, &["-t", "nat"]);
        }
        let legacy_tables = self.run_inside(|| {
            ["ip_tables_names", "ip6_tables_names"].map(|file| {
                // /proc/self/net would show the main thread's namespace, not this thread's.
                std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default()
            })
        });
        for (tables, program) in legacy_tables
            .iter()
            .zip(["iptables-legacy-save", "ip6tables-legacy-save"])
        {
            if tables.lines().any(|table| table == "nat") {
                dump += &format!("## {program} -t nat\n");
                dump += &self.run_checked(program, &["-t", "nat"]);
            }
        }
        let tables = self.run_checked("nft", &["list", "tables"]);
        if tables.lines().any(|l| l.trim() == "table inet meshinit") {
            dump += "## nft list table inet meshinit\n";
            dump += &self.run_checked("nft", &["list", "table", "inet", "meshinit"]);
        }
        dump
    }

    /// Runs iproute2 commands in this namespace with one `ip` process (`ip -n NAME -batch`).
    fn ip_batch(&self, commands: &[&str]) {
        let script = commands.join("\n") + "\n";
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(script.as_bytes())
            .expect("cannot write ip -batch script");
        let output = child.wait_with_output().expect("cannot wait for ip");
        checked_stdout(&format!("ip -batch:\n{script}"), &self.name, output);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Sockets still open in the namespace keep it alive in the kernel, but it loses its
        // name and file at once, and it is freed when they close.
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(e) => eprintln!("warning: cannot run ip netns del {}: {e}", self.name),
        }
    }
}

/// The standard two-namespace fixture (see the module comment). Addresses:
/// app `eth0` 198.51.100.1/24 + 2001:db8:100::1/64, peer `peer0` 198.51.100.2/24 +
/// 2001:db8:100::2/64; the app's IPv4 and IPv6 default routes go via the peer.
#[derive(Debug)]
pub struct NetnsPair {
    /// Where the workload (and meshinit's rules) live.
    pub app: TestNetns,
    /// Stands in for every other host; give it addresses with `peer.add_address`.
    pub peer: TestNetns,
}

impl NetnsPair {
    pub fn new() -> NetnsPair {
        let mut app = TestNetns::new("app");
        let mut peer = TestNetns::new("peer");
        // Creating the veth inside the app namespace with its other end sent straight to the
        // peer means no interface ever appears in the machine's own namespace.
        app.ip_batch(&[
            &format!(
                "link add {APP_IFACE} type veth peer name {PEER_IFACE} netns {}",
                peer.name
            ),
            &format!("address add {APP_V4}/24 dev {APP_IFACE}"),
            &format!("address add {APP_V6}/64 dev {APP_IFACE} nodad"),
            &format!("link set {APP_IFACE} up"),
        ]);
        app.veth = Some(APP_IFACE);
        peer.ip_batch(&[
            &format!("address add {PEER_V4}/24 dev {PEER_IFACE}"),
            &format!("address add {PEER_V6}/64 dev {PEER_IFACE} nodad"),
            &format!("link set {PEER_IFACE} up"),
        ]);
        peer.veth = Some(PEER_IFACE);
        app.ip_batch(&[
            &format!("route add default via {PEER_V4} dev {APP_IFACE}"),
            &format!("route add default via {PEER_V6} dev {APP_IFACE}"),
        ]);
        NetnsPair { app, peer }
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        NetnsPair::new()
    }
}

/// Whether `ip netns` still knows a namespace of this name (its file exists).
pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Moves the calling thread into the network namespace at `path`, and checks it worked
/// and did not land in the machine's own namespace. Only for threads that end afterwards:
/// a thread-pool thread left in a test namespace would run later work in the wrong place.
pub(super) fn enter_netns_on_this_thread(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let wanted_inode = file.metadata().map_err(|e| e.to_string())?.ino();
    if is_machines_namespace(wanted_inode) {
        return Err(format!(
            "{} is the machine's own network namespace",
            path.display()
        ));
    }
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
    // /proc/thread-self, not /proc/self: the latter describes the main thread.
    let now_inode = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| format!("stat /proc/thread-self/ns/net: {e}"))?
        .ino();
    if now_inode != wanted_inode {
        return Err(format!(
            "after setns the thread is in namespace inode {now_inode}, not {wanted_inode}"
        ));
    }
    Ok(())
}

/// Writes `/proc/sys/<key>`. Network sysctls are per namespace of the *calling thread*,
/// so this must run on a thread that entered the namespace.
fn write_sysctl_of_this_thread(key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
}

fn unique_name(role: &str) -> String {
    let serial = NEXT_NETNS_SERIAL.fetch_add(1, Ordering::Relaxed);
    let random = getrandom::u32().expect("getrandom");
    format!(
        "{NETNS_PREFIX}{}-{serial}-{random:08x}-{role}",
        std::process::id()
    )
}

/// A test binary killed mid-run (SIGKILL, timeout) cannot run its drops; remove the
/// namespaces of harness processes that no longer exist, once per process.
fn delete_namespaces_of_dead_processes() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("harness: deleting leftover namespace {name} of dead process {pid}");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

fn run_host_command(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    checked_stdout(&format!("{program} {}", args.join(" ")), "(host)", output)
}

fn checked_stdout(what: &str, netns: &str, output: Output) -> String {
    if !output.status.success() {
        panic!(
            "`{what}` in {netns} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}
