//! `meshinit render`: the pure core's output, for review or for feeding the backend's own
//! loader: `iptables-restore` payloads (the default), or with `--backend nftables` the
//! native table as an nft script.

use clap::{Args, ValueEnum};

use super::args::ConfigArgs;
use crate::backend::{self, BackendChoice, BackendKind, Desired, FamilyPlan};
use crate::config::Ipv6Mode;
use crate::error::{ConfigError, Error, Result};
use crate::ruleset::{Family, plan};

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Print only this family's payload (iptables backends).
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,

    /// Print the `ipset restore` payload of the sets long exclusion lists use, instead
    /// (iptables backends).
    #[arg(long)]
    pub sets: bool,

    /// Whose text to print: the iptables backends' restore payloads (the default), or the
    /// native backend's table as an nft script (`nft -f` loads it).
    #[arg(long, value_enum, default_value = "iptables-nft")]
    pub backend: BackendChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    Ipv4,
    Ipv6,
}

impl From<FamilyArg> for Family {
    fn from(f: FamilyArg) -> Self {
        match f {
            FamilyArg::Ipv4 => Family::Ipv4,
            FamilyArg::Ipv6 => Family::Ipv6,
        }
    }
}

impl RenderArgs {
    pub fn exec(self) -> Result<i32> {
        let kind = match self.backend {
            BackendChoice::IptablesNft => BackendKind::IptablesNft,
            BackendChoice::IptablesLegacy => BackendKind::IptablesLegacy,
            BackendChoice::Nftables => BackendKind::Nftables,
            BackendChoice::Auto => {
                return Err(refused(
                    "--backend",
                    "auto",
                    "render prints one backend's text without looking at this machine: choose \
                     iptables-nft, iptables-legacy or nftables",
                ));
            }
        };
        // The native table holds both families and its sets.
        if kind == BackendKind::Nftables {
            if let Some(family) = self.family {
                let family = format!("{family:?}").to_lowercase();
                return Err(refused(
                    "--family",
                    &family,
                    "the native table holds both families; omit --family with --backend nftables",
                ));
            }
            if self.sets {
                return Err(refused(
                    "--sets",
                    "true",
                    "the native table holds its sets; omit --sets with --backend nftables",
                ));
            }
        }
        let config = self.config.load()?;
        let families: Vec<Family> = match self.family {
            Some(f) => vec![f.into()],
            None if config.ipv6 == Ipv6Mode::Off => vec![Family::Ipv4],
            None => Family::BOTH.to_vec(),
        };
        let renderer = backend::all()
            .into_iter()
            .find(|b| b.kind() == kind)
            .ok_or_else(|| Error::Other(format!("no {kind} backend in this build")))?;
        let desired = Desired {
            families: families
                .iter()
                .map(|f| {
                    let ruleset = plan(&config, *f, renderer.plan_options());
                    (*f, FamilyPlan::Program(ruleset))
                })
                .collect(),
            ipv6: config.ipv6,
        };
        let rendered = renderer.render(&desired);
        if self.sets {
            // What is sent before the rules: the sets they use.
            for payload in &rendered.first {
                print!("{}", payload.text);
            }
        } else {
            print!("{}", rendered.rules);
        }
        Ok(0)
    }
}

/// A usage error naming the option, its value and what would be right.
fn refused(option: &str, value: &str, message: &str) -> Error {
    Error::Config(vec![ConfigError::new(option, Some(value), message)])
}
