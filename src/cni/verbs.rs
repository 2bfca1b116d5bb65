//! The CNI verbs. ADD, DEL and CHECK run in the runtime's namespace (usually the host's)
//! and enter `CNI_NETNS` before touching any rule; everything that can be checked without
//! the kernel is checked first, so a bad request changes nothing.

use std::path::Path;
use std::time::Duration;

use caps::Capability;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::pod::{self, PodPlan};
use super::protocol::{CniError, Command, Invocation, NetworkConfig, code, declared_version};
use super::version::{LATEST, SUPPORTED_VERSIONS, SpecVersion};
use super::{attachment, result};
use crate::backend::{self, Availability, BackendChoice, BackendKind, TimeBudget};
use crate::config::properties::Property;
use crate::config::{ProxyConfig, validate};
use crate::converge::{self, clean};
use crate::error::{Error, Result};
use crate::namespace_entry::{self, EnterError, Entered, Target, Turn};
use crate::privileges;

/// How long to wait for locks held by others (another meshinit in the same namespace, the
/// legacy xtables lock), as `apply`'s default `--lock-timeout`.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Runs one invocation; `Ok(Some(json))` is printed on standard output.
pub fn execute(invocation: &Invocation, stdin: &str) -> Result<Option<String>, CniError> {
    if invocation.command == Command::Version {
        return Ok(Some(pretty(&version(stdin))));
    }
    let config = NetworkConfig::parse(stdin)?;
    match invocation.command {
        Command::Add => add(invocation, &config).map(|result| Some(pretty(&result))),
        Command::Del => del(invocation, &config).map(|()| None),
        Command::Check => check(invocation, &config).map(|()| None),
        Command::Status => status(&config).map(|()| None),
        Command::Gc => gc(&config).map(|()| None),
        Command::Version => Ok(Some(pretty(&version(stdin)))),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// VERSION: answers in the caller's version when it names one, as the specification asks.
fn version(stdin: &str) -> Value {
    let asked = declared_version(stdin).filter(|v| SpecVersion::parse(v).is_some());
    json!({
        "cniVersion": asked.unwrap_or_else(|| LATEST.to_string()),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// ADD: converge the container's rules to the configuration (idempotent, one transaction
/// per family, exactly the ruleset `meshinit render` prints), then pass the previous
/// result on.
fn add(invocation: &Invocation, config: &NetworkConfig) -> Result<Value, CniError> {
    let pod = pod::plan(&config.keys, invocation.args.as_deref())?;
    let proxy = match &pod {
        PodPlan::Untouched(why) => {
            info!(
                container = invocation.container_id.as_deref().unwrap_or_default(),
                "ADD: pod left alone: {why}"
            );
            None
        }
        _ => Some(proxy_config(invocation, config, &pod)?),
    };
    let output = match config.prev_result() {
        Some(prev) => result::convert(prev, config.cni_version)?,
        None => result::empty(config.cni_version),
    };
    // Not entering the namespace is the point: most pods of a node are not meshed.
    let Some(proxy) = proxy else {
        return Ok(output);
    };
    let netns = required_netns(invocation)?;
    let budget = TimeBudget::starting_now(LOCK_WAIT);
    let wants_proof = proxy.verify;
    let _entered = enter_container(
        netns,
        "ADD",
        &verify_capabilities(&proxy, wants_proof),
        Turn::Exclusive(&budget),
    )?;
    let applied = converge::apply(&proxy, BackendChoice::Auto, &budget, false)?;
    if wants_proof {
        prove(&proxy, applied.backend.as_ref(), "ADD")?;
    }
    let report = applied.report;
    let changed = report
        .families
        .iter()
        .filter(|f| f.payload.is_some())
        .count();
    info!(
        container = invocation.container_id.as_deref().unwrap_or_default(),
        netns = %netns.display(),
        backend = %report.backend,
        families_changed = changed,
        "ADD: rules in place"
    );
    Ok(output)
}

/// DEL: best effort and idempotent. Removes every APPMESH_* chain, jump and set (ours or
/// the aws-appmesh plugin's) like `meshinit clean`; the configuration is not needed for
/// that, so only an undecodable request fails. A namespace that is gone, or that is not a
/// container's (where ADD never installs anything), leaves nothing to remove.
fn del(invocation: &Invocation, config: &NetworkConfig) -> Result<(), CniError> {
    if let Err(e) = attachment::from_network_config(&config.keys) {
        warn!("DEL goes on despite the configuration: {e}");
    }
    let Some(netns) = invocation.netns.as_deref() else {
        info!("DEL without CNI_NETNS: the namespace is gone; nothing to remove");
        return Ok(());
    };
    if !is_network_namespace(netns) {
        info!(netns = %netns.display(), "DEL: the namespace is gone; nothing to remove");
        return Ok(());
    }
    let budget = TimeBudget::starting_now(LOCK_WAIT);
    let _entered = match enter_container(netns, "DEL", &[], Turn::Exclusive(&budget)) {
        Ok(entered) => entered,
        Err(EnterError::NotAContainer(why)) => {
            warn!("DEL: {why}; ADD never installs rules there, so there is nothing to remove");
            return Ok(());
        }
        Err(EnterError::Failed(e)) => return Err(e.into()),
    };
    clean(BackendChoice::Auto, &budget)?;
    info!(
        container = invocation.container_id.as_deref().unwrap_or_default(),
        netns = %netns.display(),
        "DEL: rules removed"
    );
    Ok(())
}

/// CHECK: fails with code 100 when the installed rules are not exactly the configuration's.
fn check(invocation: &Invocation, config: &NetworkConfig) -> Result<(), CniError> {
    if !config.cni_version.has_check() {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CHECK needs cniVersion 0.4.0 or later; the configuration is {}",
                config.cni_version
            ),
            "",
        ));
    }
    let pod = pod::plan(&config.keys, invocation.args.as_deref())?;
    if let Some(prev) = config.prev_result() {
        result::convert(prev, config.cni_version)?;
    }
    if let PodPlan::Untouched(why) = &pod {
        info!("CHECK: pod left alone by ADD ({why}); nothing to check");
        return Ok(());
    }
    let proxy = proxy_config(invocation, config, &pod)?;
    let wants_proof = proxy.verify;
    let netns = required_netns(invocation)?;
    enter_container(
        netns,
        "CHECK",
        &verify_capabilities(&proxy, wants_proof),
        Turn::Shared,
    )?;
    let budget = TimeBudget::starting_now(LOCK_WAIT);
    let status = converge::status(&proxy, BackendChoice::Auto, &budget)?;
    let differences: Vec<String> = status
        .families
        .iter()
        .flat_map(|f| {
            f.drift
                .lines()
                .into_iter()
                .map(move |l| format!("{}: {l}", f.family))
        })
        .collect();
    if differences.is_empty() {
        if wants_proof {
            let selection = backend::select(BackendChoice::Auto, &budget)?;
            prove(&proxy, selection.backend.as_ref(), "CHECK")?;
        }
        info!(backend = %status.backend, "CHECK: rules as configured");
        return Ok(());
    }
    Err(CniError::new(
        code::RULES_DIFFER,
        format!(
            "the rules in {} differ from the configuration ({} difference{})",
            netns.display(),
            differences.len(),
            if differences.len() == 1 { "" } else { "s" }
        ),
        differences.join("\n"),
    ))
}

/// The capabilities verify needs beyond iptables', when it is asked for.
fn verify_capabilities(proxy: &ProxyConfig, wanted: bool) -> Vec<Capability> {
    if wanted {
        crate::verify::needed_capabilities(proxy)
    } else {
        Vec::new()
    }
}

/// Runs verify in the container's namespace (entered already); anything but a pass is an
/// error whose details are verify's JSON report.
fn prove(proxy: &ProxyConfig, backend: &dyn backend::Backend, verb: &str) -> Result<(), CniError> {
    let options = crate::verify::VerifyOptions {
        timeout: Duration::from_secs(5),
        json: true,
    };
    let report = crate::verify::verify(proxy, backend, &options)?;
    let (code, what) = match report.outcome {
        crate::verify::Outcome::Passed => {
            info!("{verb}: verify proved the rules");
            return Ok(());
        }
        crate::verify::Outcome::Failed => (code::VERIFY_FAILED, "redirection is broken"),
        crate::verify::Outcome::CouldNotRun => (
            code::VERIFY_COULD_NOT_RUN,
            "verify could not prove the rules",
        ),
    };
    let failing: Vec<String> = report
        .checks
        .iter()
        .filter(|c| {
            matches!(
                c.status,
                crate::verify::Status::Fail | crate::verify::Status::CouldNotRun
            )
        })
        .take(3)
        .map(|c| format!("{} {}", c.family, c.check.name()))
        .collect();
    Err(CniError::new(
        code,
        format!("{verb}: {what} ({})", failing.join(", ")),
        report.to_json(),
    ))
}

/// STATUS: ready when the privileges ADD needs are there and an iptables backend runs.
/// Only `--version` is run: this executes in the runtime's namespace, whose rules are not
/// meshinit's to read or touch.
fn status(config: &NetworkConfig) -> Result<(), CniError> {
    require_status_and_gc(config, Command::Status)?;
    attachment::from_network_config(&config.keys)?;
    let not_available = |why: String| {
        CniError::new(
            code::PLUGIN_NOT_AVAILABLE,
            format!("meshinit cannot service ADD: {why}"),
            "",
        )
    };
    let needed = [
        Capability::CAP_SYS_ADMIN,
        Capability::CAP_NET_ADMIN,
        Capability::CAP_NET_RAW,
    ];
    privileges::require(&needed, "ADD").map_err(|e| not_available(e.to_string()))?;
    let backend = ready_backend().map_err(not_available)?;
    info!(%backend, "STATUS: ready");
    Ok(())
}

/// The first backend that could serve ADD here, found without reading or touching any rule.
fn ready_backend() -> Result<BackendKind, String> {
    let budget = TimeBudget::starting_now(LOCK_WAIT);
    let mut problems = Vec::new();
    for candidate in backend::all() {
        match candidate.available(Availability::Works(&budget)) {
            Ok(()) => return Ok(candidate.kind()),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Err(problems.join("; "))
}

/// GC: meshinit keeps nothing outside a container's namespace, and a namespace's rules go
/// with it, so there is never anything stale to collect.
fn gc(config: &NetworkConfig) -> Result<(), CniError> {
    require_status_and_gc(config, Command::Gc)?;
    let attachments = config
        .keys
        .get("cni.dev/valid-attachments")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    debug!(valid_attachments = attachments, "GC: nothing to collect");
    Ok(())
}

fn require_status_and_gc(config: &NetworkConfig, command: Command) -> Result<(), CniError> {
    if config.cni_version.has_status_and_gc() {
        return Ok(());
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!(
            "{command} needs cniVersion 1.1.0 or later; the configuration is {}",
            config.cni_version
        ),
        "",
    ))
}

/// The validated proxy configuration of this attachment: network configuration, then
/// `CNI_ARGS`, then `runtimeConfig`, each overriding the one before.
/// For a pod the entry meshes one by one, its annotations override all three.
fn proxy_config(
    invocation: &Invocation,
    config: &NetworkConfig,
    pod: &PodPlan,
) -> Result<ProxyConfig, CniError> {
    let mut raw = attachment::from_network_config(&config.keys)?;
    if let Some(args) = &invocation.args {
        raw = raw.overlay(attachment::from_cni_args(args)?);
    }
    if let Some(runtime_config) = config.runtime_config() {
        raw = raw.overlay(attachment::from_runtime_config(
            runtime_config,
            config.keys.get("capabilities"),
        )?);
    }
    if let PodPlan::Meshed(annotations) = pod {
        raw = raw.overlay(annotations.as_ref().clone());
    }
    let (proxy, warnings) = validate(&raw).map_err(|errors| {
        CniError::invalid_config(&attachment::with_network_config_names(errors))
    })?;
    for warning in warnings {
        warn!("{warning}");
    }
    // The plugin runs outside the pod's mount namespace: the pod's resolv.conf is not
    // readable here, and capturing no DNS at all silently is worse than refusing.
    if proxy
        .mesh
        .dns
        .as_ref()
        .is_some_and(|d| d.scope == crate::config::mesh::DnsScope::ResolvConf)
    {
        let label = raw
            .get(Property::DnsCapture)
            .map_or(Property::DnsCapture.spec().cni.to_owned(), |s| {
                s.property.clone()
            });
        return Err(CniError::invalid_config(&[crate::error::ConfigError::new(
            label,
            Some("resolv.conf"),
            "is not available in CNI mode (the pod's resolv.conf is not readable from the \
             plugin): use all",
        )]));
    }
    Ok(proxy)
}

fn required_netns(invocation: &Invocation) -> Result<&Path, CniError> {
    // Invocation::from_env already insists on it for ADD and CHECK; this keeps it total.
    invocation.netns.as_deref().ok_or_else(|| {
        CniError::new(
            code::INVALID_ENVIRONMENT,
            format!(
                "required environment variables missing for {}: CNI_NETNS",
                invocation.command
            ),
            "",
        )
    })
}

impl From<EnterError> for CniError {
    fn from(e: EnterError) -> Self {
        match e {
            EnterError::NotAContainer(why) => Error::Environment(why).into(),
            EnterError::Failed(e) => e.into(),
        }
    }
}

/// Moves this (only) thread into `netns` through the one seam ([`namespace_entry::enter`]),
/// refusing namespaces that are not a container's, keeping only the capabilities iptables
/// needs and `extra` (verify's, when it is asked for), and taking the lock for `turn`.
fn enter_container(
    netns: &Path,
    verb: &str,
    extra: &[Capability],
    turn: Turn<'_>,
) -> Result<Entered, EnterError> {
    let keep: Vec<Capability> = privileges::IPTABLES_CAPS
        .iter()
        .chain(extra)
        .copied()
        .collect();
    namespace_entry::enter(Target::Container(netns), &keep, verb, turn)
}

/// Whether `path` still is a network namespace file. A runtime that deleted the namespace
/// leaves no file, or an empty file where the bind mount was.
fn is_network_namespace(path: &Path) -> bool {
    use nix::sys::statfs::{NSFS_MAGIC, statfs};
    match statfs(path) {
        Ok(fs) => fs.filesystem_type() == NSFS_MAGIC,
        Err(nix::errno::Errno::ENOENT) => false,
        // Cannot tell (permissions...): let entering it report the real problem.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(command: Command, args: Option<&str>) -> Invocation {
        Invocation {
            command,
            container_id: Some("c1".into()),
            netns: Some("/var/run/netns/none".into()),
            ifname: Some("eth0".into()),
            args: args.map(str::to_owned),
        }
    }

    fn config(text: &str) -> NetworkConfig {
        NetworkConfig::parse(text).unwrap()
    }

    #[test]
    fn version_echoes_the_callers_version_and_lists_ours() {
        let answer = version(r#"{"cniVersion": "0.4.0"}"#);
        assert_eq!(answer["cniVersion"], "0.4.0");
        assert_eq!(
            answer["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        for garbage in ["", "not json", r#"{"cniVersion": "x"}"#] {
            assert_eq!(version(garbage)["cniVersion"], "1.1.0", "{garbage:?}");
        }
    }

    #[test]
    fn overrides_win_over_the_network_config_in_order() {
        let netconf = config(
            r#"{"cniVersion": "1.0.0", "ignoredUID": "1337", "proxyEgressPort": "15001",
                "runtimeConfig": {"proxyEgressPort": "17001"}}"#,
        );
        let proxy = proxy_config(
            &invocation(Command::Add, Some("ProxyEgressPort=16001;IgnoredUID=1000")),
            &netconf,
            &PodPlan::EveryContainer,
        )
        .unwrap();
        assert_eq!(proxy.proxy_egress_port, 17001);
        assert_eq!(proxy.ignored_uid, Some(1000));
    }

    #[test]
    fn a_missing_key_is_named_as_the_network_config_spells_it() {
        let error = proxy_config(
            &invocation(Command::Add, None),
            &config(r#"{"cniVersion": "1.0.0", "ignoredUID": "1337"}"#),
            &PodPlan::EveryContainer,
        )
        .unwrap_err();
        assert_eq!(error.code, code::INVALID_NETWORK_CONFIG);
        assert!(error.msg.contains("proxyEgressPort"), "{}", error.msg);
    }

    #[test]
    fn check_status_and_gc_need_their_versions_before_anything_else() {
        let old =
            config(r#"{"cniVersion": "0.3.1", "ignoredUID": "1337", "proxyEgressPort": "15001"}"#);
        assert_eq!(
            check(&invocation(Command::Check, None), &old)
                .unwrap_err()
                .code,
            code::INCOMPATIBLE_VERSION
        );
        let v1 = config(r#"{"cniVersion": "1.0.0"}"#);
        assert_eq!(status(&v1).unwrap_err().code, code::INCOMPATIBLE_VERSION);
        assert_eq!(gc(&v1).unwrap_err().code, code::INCOMPATIBLE_VERSION);
        assert!(
            gc(&config(
                r#"{"cniVersion": "1.1.0", "cni.dev/valid-attachments": []}"#
            ))
            .is_ok()
        );
    }

    #[test]
    fn missing_namespaces_are_not_namespaces() {
        assert!(!is_network_namespace(Path::new("/nonexistent/netns")));
        assert!(!is_network_namespace(Path::new("/")));
        assert!(is_network_namespace(Path::new("/proc/self/ns/net")));
    }
}
