//! Arguments shared by several commands: where the configuration comes from, and which
//! namespace and backend to work in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tracing::{info, warn};

use crate::backend::BackendChoice;
use crate::config::settings::{ListValue, RawSettings, Setting, Vocabulary};
use crate::config::sources::{document, env};
use crate::config::{ProxyConfig, input, validate};
use crate::error::{ConfigError, Error, Result};

/// The proxy configuration: a document, the environment and flags; flags > env > file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// JSON document: an ECS proxyConfiguration, an ECS task definition holding one, or an
    /// App Mesh CNI network config ("-" reads standard input).
    #[arg(value_name = "CONFIG")]
    pub config_path: Option<PathBuf>,

    /// The same as CONFIG.
    #[arg(long = "config", value_name = "FILE", conflicts_with = "config_path")]
    pub config_flag: Option<PathBuf>,

    /// Read the App Mesh Kubernetes init container variables: APPMESH_IGNORE_UID,
    /// APPMESH_IGNORE_GID, APPMESH_ENVOY_INGRESS_PORT, APPMESH_ENVOY_EGRESS_PORT,
    /// APPMESH_APP_PORTS, APPMESH_EGRESS_IGNORED_IP, APPMESH_EGRESS_IGNORED_PORTS,
    /// APPMESH_ENABLE_IPV6, and meshinit's own MESHINIT_EGRESS_INCLUDED_IPS,
    /// MESHINIT_INGRESS_IGNORED_PORTS, MESHINIT_IGNORED_INTERFACES, MESHINIT_DROP_INVALID,
    /// MESHINIT_PROXY_DNS_PORT, MESHINIT_DNS_CAPTURE (they override CONFIG; flags override
    /// them).
    #[arg(long)]
    pub from_env: bool,

    #[command(flatten)]
    pub settings: SettingFlags,

    /// IPv6 rules: auto (when the namespace has IPv6), on (fail without it), off.
    #[arg(long, value_name = "auto|on|off")]
    pub ipv6: Option<String>,
}

/// The proxy settings as flags, named after the properties (`--ignored-uid` for ECS
/// `IgnoredUID`, netconf `ignoredUID`): the commands that read a configuration and
/// `cni install` (which writes one) take the same ones.
#[derive(Debug, Clone, Default, Args)]
pub struct SettingFlags {
    /// IgnoredUID (netconf ignoredUID): the proxy's user ID; its traffic is never redirected.
    #[arg(long, value_name = "UID")]
    pub ignored_uid: Option<String>,

    /// IgnoredGID (netconf ignoredGID): the proxy's group ID; its traffic is never redirected.
    #[arg(long, value_name = "GID")]
    pub ignored_gid: Option<String>,

    /// ProxyIngressPort (netconf proxyIngressPort): where inbound connections to AppPorts are redirected.
    #[arg(long, value_name = "PORT")]
    pub proxy_ingress_port: Option<String>,

    /// ProxyEgressPort (netconf proxyEgressPort): where outbound TCP connections are redirected (required).
    #[arg(long, value_name = "PORT")]
    pub proxy_egress_port: Option<String>,

    /// AppPorts (netconf appPorts): comma-separated ports or ranges (8000-8010) the application listens on.
    #[arg(long, value_name = "PORTS")]
    pub app_ports: Option<String>,

    /// EgressIgnoredIPs (netconf egressIgnoredIPs): comma-separated addresses/CIDRs reached directly. Always added:
    /// 169.254.170.2, 169.254.169.254, 169.254.170.23, fd00:ec2::23, fd00:ec2::254.
    #[arg(long, value_name = "IPS")]
    pub egress_ignored_ips: Option<String>,

    /// EgressIgnoredPorts (netconf egressIgnoredPorts): comma-separated ports or ranges reached directly. 22 is always added.
    #[arg(long, value_name = "PORTS")]
    pub egress_ignored_ports: Option<String>,

    /// netconf egressIncludedIPs: capture only outbound connections to these addresses/CIDRs
    /// (per family; 0.0.0.0/0 or ::/0 for a whole family); the ignored lists still win.
    #[arg(long, value_name = "IPS")]
    pub egress_included_ips: Option<String>,

    /// netconf ingressIgnoredPorts: with --app-ports '*', inbound ports never captured (the
    /// proxy's own ports are always added).
    #[arg(long, value_name = "PORTS")]
    pub ingress_ignored_ports: Option<String>,

    /// netconf ignoredInterfaces: interfaces whose traffic, in or out, is never captured.
    #[arg(long, value_name = "NAMES")]
    pub ignored_interfaces: Option<String>,

    /// netconf dropInvalid: drop inbound packets conntrack marks INVALID (out-of-window
    /// segments that would otherwise reach the app un-rewritten and reset the connection).
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub drop_invalid: Option<String>,

    /// netconf proxyDNSPort: capture the app's DNS queries (UDP and TCP port 53) to this
    /// port of the proxy; the proxy's own queries (IgnoredUID/GID) go out as they are.
    #[arg(long, value_name = "PORT")]
    pub proxy_dns_port: Option<String>,

    /// netconf dnsCapture: which queries: all (to any resolver, the default) or resolv.conf
    /// (to the resolvers of /etc/resolv.conf as apply reads it).
    #[arg(long, value_name = "all|resolv.conf")]
    pub dns_capture: Option<String>,
}

impl ConfigArgs {
    fn path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref().or(self.config_flag.as_ref())
    }

    /// True when no configuration source at all was given.
    pub fn is_empty(&self) -> bool {
        self.path().is_none() && !self.from_env && self.flag_settings() == RawSettings::default()
    }

    fn flag_settings(&self) -> RawSettings {
        let scalar =
            |name: &str, v: &Option<String>| v.as_ref().and_then(|v| RawSettings::scalar(name, v));
        let list = |name: &str, v: &Option<String>| {
            v.as_ref()
                .map(|v| Setting::new(name, ListValue::from_comma_separated(v)))
        };
        RawSettings {
            ignored_uid: scalar("--ignored-uid", &self.settings.ignored_uid),
            ignored_gid: scalar("--ignored-gid", &self.settings.ignored_gid),
            proxy_ingress_port: scalar("--proxy-ingress-port", &self.settings.proxy_ingress_port),
            proxy_egress_port: scalar("--proxy-egress-port", &self.settings.proxy_egress_port),
            app_ports: list("--app-ports", &self.settings.app_ports),
            egress_ignored_ips: list("--egress-ignored-ips", &self.settings.egress_ignored_ips),
            egress_ignored_ports: list(
                "--egress-ignored-ports",
                &self.settings.egress_ignored_ports,
            ),
            ipv6: scalar("--ipv6", &self.ipv6),
            egress_included_ips: list("--egress-included-ips", &self.settings.egress_included_ips),
            ingress_ignored_ports: list(
                "--ingress-ignored-ports",
                &self.settings.ingress_ignored_ports,
            ),
            ignored_interfaces: list("--ignored-interfaces", &self.settings.ignored_interfaces),
            drop_invalid: scalar("--drop-invalid", &self.settings.drop_invalid),
            proxy_dns_port: scalar("--proxy-dns-port", &self.settings.proxy_dns_port),
            dns_capture: scalar("--dns-capture", &self.settings.dns_capture),
            vocabulary: None,
        }
        .spelled_in(Vocabulary::Flags)
    }

    /// Reads, merges and validates the configuration. Nothing touches the kernel before this
    /// succeeds, so bad input changes nothing.
    pub fn load(&self) -> Result<ProxyConfig> {
        Ok(self.load_with_settings()?.0)
    }

    /// [`load`](Self::load), also returning the merged settings (each value naming its
    /// source) and the document read, if any: what `explain` cites.
    pub fn load_with_settings(&self) -> Result<(ProxyConfig, RawSettings, Option<String>)> {
        let mut settings = RawSettings::default();
        let mut document_origin = None;
        if let Some(path) = self.path() {
            let (origin, text) = read_document(path)?;
            document_origin = Some(origin.clone());
            let (kind, from_file) =
                document::parse_document(&origin, &text).map_err(Error::Config)?;
            info!(source = %origin, kind = kind.describe(), "configuration read");
            settings = from_file;
        }
        if self.from_env {
            let from_env = env::parse_env(std::env::vars_os()).map_err(Error::Config)?;
            settings = settings.overlay(from_env.spelled_in(Vocabulary::Env));
        }
        settings = settings.overlay(self.flag_settings());
        if settings == RawSettings::default() {
            return Err(Error::Config(vec![ConfigError::new(
                "configuration",
                None,
                "none given: pass CONFIG (an ECS task definition, proxyConfiguration or CNI \
                 config), --from-env, or flags such as --ignored-uid and --proxy-egress-port",
            )]));
        }
        let (mut config, warnings) = validate(&settings).map_err(Error::Config)?;
        resolve_dns_scope(&mut config)?;
        for warning in warnings {
            warn!("{warning}");
        }
        Ok((config, settings, document_origin))
    }
}

fn read_document(path: &Path) -> Result<(String, String)> {
    let (origin, bytes) = if path.as_os_str() == "-" {
        (
            "stdin".to_owned(),
            input::read_bounded(std::io::stdin().lock()),
        )
    } else {
        (path.display().to_string(), input::read_file(path))
    };
    let text = bytes
        .and_then(input::decode)
        .map_err(|e| Error::Config(vec![ConfigError::new(&origin, None, e.to_string())]))?;
    Ok((origin, text))
}

/// Where to work: the namespace, the backend and how long to wait for the xtables lock.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Network namespace to work in (/proc/PID/ns/net or /var/run/netns/NAME); default: the
    /// current one.
    #[arg(long, value_name = "PATH", env = "MESHINIT_NETNS")]
    pub netns: Option<PathBuf>,

    /// iptables backend: auto (the one already holding rules here; else nft; else legacy).
    #[arg(long, value_enum, default_value = "auto", env = "MESHINIT_BACKEND")]
    pub backend: BackendChoice,

    /// Allow programming the machine's own (initial) network namespace. Almost never right.
    #[arg(long)]
    pub allow_host_netns: bool,

    /// How long to wait for the legacy xtables lock held by another process.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
}

/// Where `dnsCapture: resolv.conf` reads the resolvers: this process's view of the file,
/// which is the namespace's for the init container and for `ip netns exec`.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Fills in the resolvers of `dnsCapture: resolv.conf`, so that the planner gets them as
/// data. No nameserver at all is an error: capturing nothing is not what was asked.
pub fn resolve_dns_scope(config: &mut ProxyConfig) -> Result<()> {
    use crate::config::mesh::{DnsScope, resolv_conf_nameservers};
    let Some(dns) = config.mesh.dns.as_mut() else {
        return Ok(());
    };
    if dns.scope != DnsScope::ResolvConf {
        return Ok(());
    }
    let text = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
    dns.resolvers = resolv_conf_nameservers(&text);
    if dns.resolvers.is_empty() {
        return Err(Error::Config(vec![ConfigError::new(
            "dnsCapture",
            Some("resolv.conf"),
            format!(
                "{RESOLV_CONF} names no nameserver here, so no query would be captured; use \
                 all, or run where the app's resolv.conf is"
            ),
        )]));
    }
    info!(resolvers = ?dns.resolvers, "DNS capture limited to the resolvers of {RESOLV_CONF}");
    Ok(())
}
