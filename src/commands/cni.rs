//! `meshinit cni`: the CNI plugin itself (no subcommand: what a runtime runs), and
//! `cni install` / `cni uninstall`, which put meshinit into a node's CNI configuration.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use nix::sys::signal::{self, SigHandler, Signal};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::property_flags::InstallFlags;
use crate::cni::install::{self, Change, Installer, Outcome, PluginEntry};
use crate::config::properties::{Property, Source};
use crate::config::settings::Setting;
use crate::error::{Error, Result};

/// The running executable: what `cni install` copies into the bin directory.
const SELF_EXE: &str = "/proc/self/exe";

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Without a subcommand: runs as a CNI plugin (the runtime sets CNI_COMMAND, \
                  passes the network configuration on standard input and reads the result on \
                  standard output)."
)]
pub struct CniArgs {
    #[command(subcommand)]
    pub action: Option<CniAction>,
}

#[derive(Debug, Subcommand)]
pub enum CniAction {
    /// Put meshinit's entry at the end of a network configuration list (replacing an older
    /// entry of the same type) and copy this binary into the CNI bin directory; atomic and
    /// idempotent (a second run changes nothing). Exit 2 on a bad list or entry, which is
    /// then left untouched.
    Install(Box<InstallArgs>),
    /// Take meshinit's entry out of the list (every other byte stays) and remove its binary
    /// from the CNI bin directory.
    Uninstall(UninstallArgs),
}

impl CniArgs {
    pub fn exec(self) -> Result<i32> {
        match self.action {
            None => Ok(crate::cni::run()),
            Some(CniAction::Install(args)) => args.exec(),
            Some(CniAction::Uninstall(args)) => args.exec(),
        }
    }
}

/// Which list and bin directory, and the entry's `type`.
#[derive(Debug, Clone, Args)]
pub struct PlacementArgs {
    /// The network configuration list to edit, e.g. /etc/cni/net.d/10-aws.conflist.
    #[arg(long, value_name = "PATH")]
    pub conflist: PathBuf,

    /// The CNI bin directory (/opt/cni/bin; /usr/lib/cni on Debian): the binary is copied
    /// there (install) or removed from there (uninstall) under the entry's type. Without
    /// it, only the list is edited.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// The entry's "type", which is also the binary's name: meshinit (default, or the
    /// entry file's "type"), or aws-appmesh to replace the App Mesh plugin in place.
    #[arg(long = "type", value_name = "NAME")]
    pub plugin_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub placement: PlacementArgs,

    /// A JSON object with the entry's netconf keys (ignoredUID, proxyEgressPort, appPorts...
    /// as in the App Mesh CNI network config; "type" and "capabilities" optional). Flags
    /// override its keys.
    #[arg(long, value_name = "FILE")]
    pub entry: Option<PathBuf>,

    #[command(flatten)]
    pub settings: InstallFlags,

    /// enableIPv6: true (IPv6 rules when the pod's namespace has IPv6) or false.
    #[arg(long, value_name = "true|false")]
    pub enable_ipv6: Option<bool>,

    /// Kubernetes per-pod mode: declare the io.kubernetes.cri.pod-annotations capability,
    /// so that only pods annotated appmesh.k8s.aws/appmeshCNI: enabled are meshed, with
    /// their appmesh.k8s.aws/* annotations over this entry's keys (then node-wide defaults
    /// that need not be complete).
    #[arg(long)]
    pub kubernetes: bool,
    /// Keep running: install now and every DURATION again when the entry is gone or changed
    /// (the interface plugin's agent rewrote the list), retrying while the list is missing
    /// or unreadable; on SIGTERM or SIGINT, uninstall and exit. What a DaemonSet runs.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub watch: Option<Duration>,

    /// Take the place of a binary or entry of the same type that meshinit did not install
    /// (the App Mesh plugin's aws-appmesh); it is kept and put back byte for byte by
    /// uninstall. Without it, such a binary or entry is left alone and install fails.
    #[arg(long)]
    pub replace: bool,
}

impl InstallArgs {
    /// The flags as netconf keys, in the order they are written (the table's). Lists
    /// become arrays of their items, split and trimmed by the one whitespace rule as every
    /// source's are.
    pub(crate) fn flag_keys(&self) -> Vec<(String, Value)> {
        let mut keys: Vec<(String, Value)> = self
            .settings
            .given()
            .map(|(spec, value)| {
                let value = if spec.kind.is_list() {
                    let setting = Setting::new(spec.cni, value.to_owned());
                    Value::Array(
                        setting
                            .list()
                            .items()
                            .map(|item| Value::String(item.to_owned()))
                            .collect(),
                    )
                } else {
                    Value::String(value.to_owned())
                };
                (spec.cni.to_owned(), value)
            })
            .collect();
        if let Some(enabled) = self.enable_ipv6 {
            let ipv6 = Property::Ipv6.spec();
            let at = keys
                .iter()
                .position(|(key, _)| {
                    crate::config::properties::find(Source::Cni, key)
                        .is_some_and(|spec| spec.property > ipv6.property)
                })
                .unwrap_or(keys.len());
            keys.insert(at, (ipv6.cni.to_owned(), Value::Bool(enabled)));
        }
        keys
    }

    fn entry(&self) -> Result<PluginEntry> {
        let (origin, object) = match &self.entry {
            Some(path) => (
                path.display().to_string(),
                Some(install::read_entry_file(path)?),
            ),
            None => ("flags".to_owned(), None),
        };
        let mut overrides = self.flag_keys();
        if self.kubernetes {
            // Added to the entry file's own capabilities, if it declares some.
            let mut capabilities = match object.as_ref().and_then(|o| o.get("capabilities")) {
                Some(Value::Object(declared)) => declared.clone(),
                _ => serde_json::Map::new(),
            };
            capabilities.insert(crate::cni::pod::POD_ANNOTATIONS.into(), Value::Bool(true));
            overrides.push(("capabilities".into(), Value::Object(capabilities)));
        }
        PluginEntry::build(
            &origin,
            object,
            overrides,
            self.placement.plugin_type.as_deref(),
        )
        .map_err(Error::Config)
    }

    pub fn exec(self) -> Result<i32> {
        let entry = self.entry()?;
        let installer = Installer::new();
        match self.watch {
            None => {
                let outcome = install_once(&self.placement, &entry, &installer, self.replace)?;
                report_install(&self.placement, &entry, &outcome, false);
                Ok(0)
            }
            Some(interval) => watch(&self.placement, &entry, &installer, self.replace, interval),
        }
    }
}

fn install_once(
    placement: &PlacementArgs,
    entry: &PluginEntry,
    installer: &Installer,
    replace: bool,
) -> Result<Outcome> {
    let bin = placement
        .bin_dir
        .as_deref()
        .map(|dir| (Path::new(SELF_EXE), dir));
    install::install(&placement.conflist, entry, bin, installer, replace)
}

/// Reports each file's fate; a watcher's unchanged ticks only at debug level, so its log
/// shows changes, not a heartbeat.
fn report_install(
    placement: &PlacementArgs,
    entry: &PluginEntry,
    outcome: &Outcome,
    watching: bool,
) {
    let report = |what: String, change: Change| {
        if watching && change == Change::Unchanged {
            debug!("{what}: {}", change.describe());
        } else {
            info!("{what}: {}", change.describe());
        }
    };
    match outcome {
        Outcome::Done { list, binary } => {
            if let (Some(change), Some(dir)) = (binary, &placement.bin_dir) {
                report(dir.join(&entry.plugin_type).display().to_string(), *change);
            }
            let what = format!(
                "{}: {} entry",
                placement.conflist.display(),
                entry.plugin_type
            );
            report(what, *list);
        }
        Outcome::StoodDown {
            installer,
            plugin_type,
            entry: theirs,
        } => warn_stood_down(placement, installer, plugin_type, theirs),
    }
}

fn warn_stood_down(placement: &PlacementArgs, installer: &str, plugin_type: &str, entry: &Value) {
    warn!(
        "{}: installer {installer} (newer, or the owner when this one stops) owns the \
         {plugin_type} entry ({entry}): standing down, changing nothing",
        placement.conflist.display()
    );
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Re-installs whenever the list or binary lost meshinit; uninstalls what this installer
/// owns when told to stop. While a newer installer owns the list, stands down (logging
/// it once) instead of writing its own settings back.
fn watch(
    placement: &PlacementArgs,
    entry: &PluginEntry,
    installer: &Installer,
    replace: bool,
    interval: Duration,
) -> Result<i32> {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal::signal(sig, SigHandler::Handler(request_stop)) }
            .map_err(|e| Error::Other(format!("cannot handle {sig}: {e}")))?;
    }
    info!(
        "watching {} every {} as installer {}",
        placement.conflist.display(),
        humantime::format_duration(interval),
        installer.id
    );
    let mut next = Instant::now();
    let mut last_stood_down: Option<String> = None;
    while !STOP_REQUESTED.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            next = Instant::now() + interval;
            // The list may not exist yet (its agent writes it when it starts) or be briefly
            // unreadable while rewritten: try again at the next tick.
            match install_once(placement, entry, installer, replace) {
                Ok(Outcome::StoodDown {
                    installer: owner, ..
                }) if last_stood_down.as_ref() == Some(&owner) => {}
                Ok(outcome) => {
                    last_stood_down = match &outcome {
                        Outcome::StoodDown { installer, .. } => Some(installer.clone()),
                        Outcome::Done { .. } => None,
                    };
                    report_install(placement, entry, &outcome, true);
                }
                Err(e) => warn!(
                    "installing failed, will retry in {}: {e}",
                    humantime::format_duration(interval)
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(200).min(interval));
    }
    info!("stopping: uninstalling what this installer owns");
    uninstall(placement, Some(&entry.plugin_type), Some(installer))?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub placement: PlacementArgs,
}

impl UninstallArgs {
    pub fn exec(self) -> Result<i32> {
        uninstall(&self.placement, self.placement.plugin_type.as_deref(), None)?;
        Ok(0)
    }
}

fn uninstall(
    placement: &PlacementArgs,
    plugin_type: Option<&str>,
    installer: Option<&Installer>,
) -> Result<()> {
    let (plugin_type, outcome) = install::uninstall(
        &placement.conflist,
        plugin_type,
        placement.bin_dir.as_deref(),
        installer,
    )?;
    match outcome {
        Outcome::Done { list, binary } => {
            info!(
                "{}: {plugin_type} entry: {}",
                placement.conflist.display(),
                list.describe()
            );
            if let (Some(change), Some(dir)) = (binary, &placement.bin_dir) {
                info!(
                    "{}: {}",
                    dir.join(&plugin_type).display(),
                    change.describe()
                );
            }
        }
        Outcome::StoodDown {
            installer,
            plugin_type,
            entry,
        } => warn_stood_down(placement, &installer, &plugin_type, &entry),
    }
    Ok(())
}
