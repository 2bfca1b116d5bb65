//! A minimal CNI runtime for the CNI tests: runs plugin binaries exactly as a container
//! runtime does (parameters in `CNI_*` variables, configuration on standard input, result
//! or error object on standard output) and executes a network configuration list by the
//! specification's chaining rules (SPEC section 3).
//!
//! The runtime's own namespace is a test namespace ("node"): every plugin runs there via
//! `ip netns exec`, never in the machine's namespace, so a bridge the `bridge` plugin
//! creates, or a rule a bug would write, stays inside the test's namespaces.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

pub use crate::common::ours_anywhere;
use crate::common::{BACKENDS, TestNetns, our_rules};

pub mod fixture;

pub const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");
/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// The PATH a runtime typically passes on; meshinit finds iptables there.
const PLUGIN_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The attachment parameters of one container on one network.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    /// `CNI_NETNS`; `None` leaves it unset (allowed for DEL).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: Option<String>,
    /// Capability arguments the runtime offers; plugins that declare the capability get
    /// them in `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    pub fn new(container_id: &str, netns: &Path) -> Self {
        Attachment {
            container_id: container_id.to_owned(),
            netns: Some(netns.to_path_buf()),
            ifname: "eth0".to_owned(),
            args: None,
            capability_args: Map::new(),
        }
    }
}

/// What one plugin execution returned.
#[derive(Debug)]
pub struct PluginRun {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl PluginRun {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Standard output as JSON; panics (showing everything) when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}):\n{self}"))
    }

    /// The error object of a failed run; panics when the run succeeded or printed none.
    #[track_caller]
    pub fn error(&self) -> Value {
        assert!(!self.succeeded(), "expected the plugin to fail:\n{self}");
        let error = self.json();
        for key in ["cniVersion", "code", "msg"] {
            assert!(
                error.get(key).is_some(),
                "error object without {key}:\n{self}"
            );
        }
        error
    }

    /// The error code of a failed run.
    #[track_caller]
    pub fn error_code(&self) -> u64 {
        self.error()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error code is not a number:\n{self}"))
    }

    #[track_caller]
    pub fn assert_success(&self) {
        assert!(self.succeeded(), "expected the plugin to succeed:\n{self}");
        assert!(
            !self.stderr.contains("panicked"),
            "the plugin panicked:\n{self}"
        );
    }
}

impl std::fmt::Display for PluginRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.exit_code, self.stdout, self.stderr
        )
    }
}

/// Runs `plugin` in `node` with the CNI parameters and `stdin`. The environment is cleared
/// first, so the plugin sees only what a runtime passes.
pub fn run_plugin(
    node: &TestNetns,
    plugin: &Path,
    command: &str,
    attachment: Option<&Attachment>,
    cni_path: Option<&Path>,
    stdin: &str,
) -> PluginRun {
    let mut process = node.command(plugin);
    set_plugin_environment(&mut process, command, attachment, cni_path);
    run_with_stdin(process, stdin)
}

/// Gives `process` exactly the environment a runtime gives a plugin: the CNI parameters,
/// and nothing of the test's own environment.
pub fn set_plugin_environment(
    process: &mut Command,
    command: &str,
    attachment: Option<&Attachment>,
    cni_path: Option<&Path>,
) {
    process
        .env_clear()
        .env("PATH", PLUGIN_PATH_ENV)
        .env("NO_COLOR", "1")
        .env("CNI_COMMAND", command);
    if let Some(a) = attachment {
        process
            .env("CNI_CONTAINERID", &a.container_id)
            .env("CNI_IFNAME", &a.ifname);
        if let Some(netns) = &a.netns {
            process.env("CNI_NETNS", netns);
        }
        if let Some(args) = &a.args {
            process.env("CNI_ARGS", args);
        }
    }
    if let Some(path) = cni_path {
        process.env("CNI_PATH", path);
    }
}

/// Runs meshinit as a CNI plugin in `node`.
pub fn run_meshinit(
    node: &TestNetns,
    command: &str,
    attachment: Option<&Attachment>,
    stdin: &str,
) -> PluginRun {
    run_plugin(node, Path::new(MESHINIT), command, attachment, None, stdin)
}

/// Runs `process` with `stdin` fed to it.
pub fn run_with_stdin(mut process: Command, stdin: &str) -> PluginRun {
    let mut child = process
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plugin starts");
    // A plugin may exit without reading its input; its output says why.
    let _ = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes());
    let output = child.wait_with_output().expect("the plugin ends");
    PluginRun {
        exit_code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A directory under the system's temporary directory, removed on drop: a plugin
/// directory (`CNI_PATH`) or host-local's `dataDir`.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(role: &str) -> Self {
        let random = getrandom::u32().expect("getrandom");
        let path = std::env::temp_dir().join(format!(
            "meshinit-cni-{role}-{}-{random:08x}",
            std::process::id()
        ));
        std::fs::create_dir(&path).expect("create a temporary directory");
        TempDir { path }
    }

    /// A plugin directory: `plugins` are (type, binary) pairs, linked under the type name.
    pub fn with_plugins(plugins: &[(&str, &Path)]) -> Self {
        let dir = TempDir::new("bin");
        for (name, binary) in plugins {
            std::os::unix::fs::symlink(binary, dir.path.join(name)).expect("link a plugin");
        }
        dir
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Executes network configuration lists in one runtime namespace.
pub struct Runtime<'a> {
    pub node: &'a TestNetns,
    pub plugins: &'a TempDir,
}

/// A plugin of the chain failed: which one, and its output.
#[derive(Debug)]
pub struct ChainFailure {
    pub plugin: String,
    pub run: PluginRun,
}

impl std::fmt::Display for ChainFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin {} failed: {}", self.plugin, self.run)
    }
}

impl Runtime<'_> {
    /// ADD: every plugin in order, each given the previous one's result. Returns every
    /// plugin's result; the last is the final one, which the runtime keeps for CHECK and DEL.
    pub fn add(&self, list: &Value, attachment: &Attachment) -> Result<Vec<Value>, ChainFailure> {
        let mut results: Vec<Value> = Vec::new();
        for plugin in plugins_of(list) {
            let config = derive_request_config(list, plugin, attachment, results.last());
            let run = self.execute(plugin, "ADD", attachment, &config)?;
            results.push(serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
                panic!(
                    "ADD result of {} is not JSON ({e}):\n{run}",
                    plugin_type(plugin)
                )
            }));
        }
        Ok(results)
    }

    /// CHECK: every plugin in order, each given the final ADD result.
    pub fn check(
        &self,
        list: &Value,
        attachment: &Attachment,
        add_result: &Value,
    ) -> Result<(), ChainFailure> {
        for plugin in plugins_of(list) {
            let config = derive_request_config(list, plugin, attachment, Some(add_result));
            self.execute(plugin, "CHECK", attachment, &config)?;
        }
        Ok(())
    }

    /// DEL: every plugin in reverse order, each given the final ADD result.
    pub fn del(
        &self,
        list: &Value,
        attachment: &Attachment,
        add_result: &Value,
    ) -> Result<(), ChainFailure> {
        for plugin in plugins_of(list).iter().rev() {
            let config = derive_request_config(list, plugin, attachment, Some(add_result));
            self.execute(plugin, "DEL", attachment, &config)?;
        }
        Ok(())
    }

    fn execute(
        &self,
        plugin: &Value,
        command: &str,
        attachment: &Attachment,
        config: &Value,
    ) -> Result<PluginRun, ChainFailure> {
        let name = plugin_type(plugin);
        let binary = self.plugins.path().join(&name);
        assert!(
            binary.exists(),
            "no plugin {name} in {}",
            self.plugins.path().display()
        );
        let run = run_plugin(
            self.node,
            &binary,
            command,
            Some(attachment),
            Some(self.plugins.path()),
            &config.to_string(),
        );
        if run.succeeded() {
            Ok(run)
        } else {
            Err(ChainFailure { plugin: name, run })
        }
    }
}

fn plugins_of(list: &Value) -> Vec<&Value> {
    list["plugins"]
        .as_array()
        .expect("a configuration list has plugins")
        .iter()
        .collect()
}

fn plugin_type(plugin: &Value) -> String {
    plugin["type"]
        .as_str()
        .expect("a plugin configuration has a type")
        .to_owned()
}

/// The request configuration for one plugin (SPEC "Deriving request configuration"): the
/// plugin's object with the list's `cniVersion` and `name`, `runtimeConfig` from the
/// declared capabilities the runtime has arguments for, `prevResult` when there is one,
/// and no `capabilities`.
pub fn derive_request_config(
    list: &Value,
    plugin: &Value,
    attachment: &Attachment,
    previous: Option<&Value>,
) -> Value {
    let mut config = plugin
        .as_object()
        .expect("a plugin configuration is an object")
        .clone();
    config.insert("cniVersion".into(), list["cniVersion"].clone());
    config.insert("name".into(), list["name"].clone());
    if let Some(Value::Object(capabilities)) = config.remove("capabilities") {
        let runtime_config: Map<String, Value> = capabilities
            .iter()
            .filter(|(_, enabled)| enabled.as_bool() == Some(true))
            .filter_map(|(name, _)| {
                attachment
                    .capability_args
                    .get(name)
                    .map(|value| (name.clone(), value.clone()))
            })
            .collect();
        if !runtime_config.is_empty() {
            config.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
    }
    if let Some(previous) = previous {
        config.insert("prevResult".into(), previous.clone());
    }
    Value::Object(config)
}

/// Both families' nat tables (iptables-nft), without the timestamped comments, and the
/// native backend's table when there is one (read with `nft`).
pub fn nat_state(ns: &TestNetns) -> String {
    let mut out = String::new();
    for save in ["iptables-nft-save", "ip6tables-nft-save"] {
        let text = ns.run_checked(save, &["-t", "nat"]);
        out += &format!("## {save}\n");
        out.extend(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n")),
        );
    }
    out + &our_rules(ns, "nftables")
}

/// The backend holding our rules in `ns` (the one CNI's `auto` chose); panics unless
/// exactly one does.
#[track_caller]
pub fn backend_holding_ours(ns: &TestNetns) -> &'static str {
    let holding: Vec<&str> = BACKENDS
        .into_iter()
        .filter(|backend| !our_rules(ns, backend).is_empty())
        .collect();
    assert_eq!(
        holding.len(),
        1,
        "backends holding ours:\n{}",
        ours_anywhere(ns)
    );
    holding[0]
}

/// Makes CNI's `auto` choose `backend` in `pod`, from what the pod already holds, as it
/// would on a node: nothing for the native backend; a rule in the legacy tables (legacy is
/// in use there) for iptables-legacy; an empty chain of ours in iptables-nft (left by the
/// App Mesh plugin or an earlier meshinit) for iptables-nft.
pub fn steer_auto_to(pod: &TestNetns, backend: &str) {
    match backend {
        "nftables" => {}
        "iptables-legacy" => {
            pod.iptables("iptables-legacy", "-A INPUT -p tcp --dport 9999 -j ACCEPT");
        }
        "iptables-nft" => {
            pod.iptables("iptables-nft", "-t nat -N APPMESH_EGRESS");
        }
        other => panic!("no backend {other}"),
    }
}

/// Our chain declarations, and per chain our rules and the jumps into ours, in order:
/// comparable between `iptables-save` and `meshinit render` output.
pub fn appmesh_rules(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(declaration) = line.strip_prefix(":APPMESH_") {
            let name = declaration.split(' ').next().unwrap_or_default();
            rules
                .entry("(chains)".into())
                .or_default()
                .push(format!("APPMESH_{name}"));
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split(' ').next().unwrap_or_default();
            if chain.starts_with("APPMESH_") || rule.contains("-j APPMESH_") {
                rules
                    .entry(chain.to_owned())
                    .or_default()
                    .push(line.to_owned());
            }
        }
    }
    if let Some(chains) = rules.get_mut("(chains)") {
        chains.sort();
    }
    rules
}

/// `meshinit render -` of a network configuration, per family ("IPv4", "IPv6"). Rendering
/// touches no kernel state; it runs in `node` all the same.
pub fn render(node: &TestNetns, config: &Value) -> BTreeMap<String, String> {
    let mut command = node.command(MESHINIT);
    command.args(["render", "-"]);
    let run = run_with_stdin(command, &config.to_string());
    assert!(run.succeeded(), "meshinit render failed:\n{run}");
    let mut families = BTreeMap::new();
    let mut family = String::new();
    for line in run.stdout.lines() {
        if let Some(rest) = line.strip_prefix("# meshinit ") {
            family = rest.split(' ').next().unwrap_or_default().to_owned();
        }
        let text: &mut String = families.entry(family.clone()).or_default();
        text.push_str(line);
        text.push('\n');
    }
    families
}

/// Asserts that `pod` holds exactly the rules of `config`, in whichever backend holds them
/// (and only there): for an iptables backend, what `meshinit render` prints; for the native
/// one, the table `nft` lists after `meshinit apply --backend nftables` of the same
/// configuration in a fresh namespace.
#[track_caller]
pub fn assert_installed_as_rendered(node: &TestNetns, pod: &TestNetns, config: &Value) {
    let backend = backend_holding_ours(pod);
    let Some(program) = backend.strip_prefix("iptables-") else {
        let reference = TestNetns::new("cniref");
        let mut apply = reference.command(MESHINIT);
        apply.args(["apply", "-", "--backend", "nftables"]);
        let run = run_with_stdin(apply, &config.to_string());
        assert!(run.succeeded(), "meshinit apply failed:\n{run}");
        let expected = our_rules(&reference, "nftables");
        assert!(
            expected.contains("redirect to :"),
            "the reference holds no ruleset to compare with:\n{expected}"
        );
        assert_eq!(
            our_rules(pod, "nftables"),
            expected,
            "the pod's table differs from `meshinit apply --backend nftables` of the same config"
        );
        return;
    };
    let rendered = render(node, config);
    for (family, save) in [
        ("IPv4", format!("iptables-{program}-save")),
        ("IPv6", format!("ip6tables-{program}-save")),
    ] {
        let installed = pod.run_checked(&save, &["-t", "nat"]);
        let expected = rendered.get(family).map(String::as_str).unwrap_or_default();
        // Two empty sides would compare equal and prove nothing.
        assert!(
            expected.contains(":APPMESH_EGRESS"),
            "{family}: `meshinit render` printed no ruleset to compare with:\n{expected}"
        );
        assert_eq!(
            appmesh_rules(&installed),
            appmesh_rules(expected),
            "{family} ({backend}): installed rules differ from `meshinit render`\ninstalled:\n{installed}\nrendered:\n{expected}"
        );
    }
}

/// Nothing of ours, and not even a table, was created in `ns`.
#[track_caller]
pub fn assert_nothing_installed(ns: &TestNetns) {
    let rules = ns.nat_rules();
    assert!(!rules.contains("APPMESH"), "rules were installed:\n{rules}");
    let tables = ns.run_checked("nft", &["list", "tables"]);
    assert!(
        tables.trim().is_empty(),
        "tables were created: {tables}\n{rules}"
    );
}
