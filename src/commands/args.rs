//! Arguments shared by several commands: where the configuration comes from, and which
//! namespace and backend to work in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tracing::{info, warn};

use super::property_flags::ConfigFlags;
use crate::backend::BackendChoice;
use crate::config::properties::{self, Property, Source};
use crate::config::settings::{RawSettings, Vocabulary};
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

    /// Read the environment: the App Mesh Kubernetes init container's APPMESH_* variables
    /// and meshinit's own MESHINIT_* ones (see --help; they override CONFIG; flags override
    /// them).
    #[arg(long, long_help = from_env_help())]
    pub from_env: bool,

    #[command(flatten)]
    pub settings: ConfigFlags,
}

/// `--from-env`'s long help: every variable of the property table.
fn from_env_help() -> String {
    format!(
        "Read the environment: {} (they override CONFIG; flags override them).",
        properties::spellings(Source::Env).join(", ")
    )
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
        self.settings.settings()
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

/// `--backend`'s spellings: the choice itself is a plain enum of the backend layer, so clap
/// stays at the edge.
impl clap::ValueEnum for BackendChoice {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            BackendChoice::Auto,
            BackendChoice::IptablesLegacy,
            BackendChoice::IptablesNft,
            BackendChoice::Nftables,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            BackendChoice::Auto => PossibleValue::new("auto").help(
                "iptables-legacy where it holds rules, iptables-nft where it holds our chains; \
                 else the native nftables backend when the kernel has nf_tables, else iptables",
            ),
            BackendChoice::IptablesLegacy => PossibleValue::new("iptables-legacy")
                .alias("legacy")
                .help("iptables over the legacy x_tables interface"),
            BackendChoice::IptablesNft => PossibleValue::new("iptables-nft")
                .alias("nft")
                .help("iptables over nf_tables"),
            BackendChoice::Nftables => PossibleValue::new("nftables").alias("native").help(
                "nf_tables over netlink, without any program: one `inet meshinit` table holding \
                 both families, changed in one transaction",
            ),
        })
    }
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
            Property::DnsCapture.spec().cni,
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
