//! Running the meshinit binary inside a test namespace, and reading what the kernel holds
//! with the iptables and ipset programs (never with meshinit's own readers).

use std::process::{Command, Output};

use super::TestNetns;

pub const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");

/// Runs meshinit inside `ns` (as an init container would) and returns its output.
pub fn meshinit(ns: &TestNetns, args: &[&str]) -> Output {
    meshinit_with_env(ns, args, &[])
}

pub fn meshinit_with_env(ns: &TestNetns, args: &[&str], env: &[(&str, &str)]) -> Output {
    meshinit_command(ns, args, env)
        .output()
        .expect("meshinit runs")
}

/// The command [`meshinit_with_env`] runs, for tests that spawn it and act while it runs.
pub fn meshinit_command(ns: &TestNetns, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = ns.command(MESHINIT);
    command
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1");
    command
}

#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Both families' nat tables as `{iptables,ip6tables}-BACKEND-save` print them (BACKEND is
/// `nft` or `legacy`), without the timestamped comment lines, for byte comparisons. A
/// failing save fails the test: it must never read as "no rules".
pub fn nat_state(ns: &TestNetns, backend: &str) -> String {
    let mut out = String::new();
    for family in ["iptables", "ip6tables"] {
        let save = ns.run_checked(&format!("{family}-{backend}-save"), &["-t", "nat"]);
        out.extend(
            save.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n")),
        );
    }
    out
}

/// The legacy nat tables, read only when they exist: reading them with
/// `iptables-legacy-save` would create them.
pub fn legacy_nat_state(ns: &TestNetns) -> String {
    let names = ns.run_checked(
        "sh",
        &[
            "-c",
            "cat /proc/net/ip_tables_names /proc/net/ip6_tables_names 2>/dev/null; true",
        ],
    );
    if names.lines().any(|t| t == "nat") {
        nat_state(ns, "legacy")
    } else {
        String::new()
    }
}

/// `ipset save` in `ns`: every set with its members.
pub fn ipset_state(ns: &TestNetns) -> String {
    ns.run_checked("ipset", &["save"])
}

/// The names of the sets in `ns`.
pub fn ipset_names(ns: &TestNetns) -> Vec<String> {
    ns.run_checked("ipset", &["list", "-n"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Lines of a saved table that mention one of the App Mesh chain names.
pub fn lines_naming(state: &str, needle: &str) -> Vec<String> {
    state
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Starts meshinit as a CNI plugin run from `node` for the pod namespace `pod`, with
/// examples/cni-netconf.json on stdin. With `path`, meshinit gets that PATH instead of the
/// test's (e.g. one holding no iptables program).
pub fn cni_plugin(
    node: &TestNetns,
    pod: &TestNetns,
    command: &str,
    path: Option<&str>,
) -> std::process::Child {
    use std::io::Write;
    use std::process::Stdio;
    let netconf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cni-netconf.json"
    ))
    .expect("the example netconf exists");
    let mut invocation = match path {
        Some(path) => {
            let mut env = node.command("env");
            env.arg(format!("PATH={path}")).arg(MESHINIT);
            env
        }
        None => node.command(MESHINIT),
    };
    let mut child = invocation
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "test")
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", path.unwrap_or("/usr/lib/cni"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshinit starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(netconf.as_bytes())
        .expect("meshinit reads the netconf");
    child
}

/// Holds a private xtables lock (named by `XTABLES_LOCKFILE`, so other tests are not
/// blocked) until dropped, as another iptables process would.
pub struct XtablesLockHolder {
    path: std::path::PathBuf,
    holder: std::process::Child,
}

impl XtablesLockHolder {
    pub fn hold(tag: &str) -> XtablesLockHolder {
        let path =
            std::env::temp_dir().join(format!("meshinit-test-{}-{tag}.lock", std::process::id()));
        std::fs::write(&path, "").expect("write the lock file");
        let holder = Command::new("flock")
            .arg(&path)
            .args(["sleep", "30"])
            .spawn()
            .expect("flock runs");
        super::wait_until(
            "flock holds the test's xtables lock",
            std::time::Duration::from_secs(10),
            || lock_is_held(&path),
        );
        XtablesLockHolder { path, holder }
    }

    /// The `XTABLES_LOCKFILE` value that points iptables at this lock.
    pub fn lockfile(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }
}

/// Whether another process holds `path`'s flock: taking it without waiting fails.
fn lock_is_held(path: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor this function owns; closing the file releases a lock
    // taken here.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !taken
}

impl Drop for XtablesLockHolder {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}
