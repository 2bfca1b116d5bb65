//! `meshinit render`: the pure core's output, for review or for feeding iptables-restore.

use clap::{Args, ValueEnum};

use super::args::ConfigArgs;
use crate::backend::Backend;
use crate::backend::BackendKind;
use crate::backend::iptables::{IptablesBackend, ipset, render};
use crate::config::Ipv6Mode;
use crate::error::Result;
use crate::ruleset::{Family, plan};

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Print only this family's payload.
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,

    /// Print the `ipset restore` payload of the sets long exclusion lists use, instead.
    #[arg(long)]
    pub sets: bool,
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
        let config = self.config.load()?;
        let families: Vec<Family> = match self.family {
            Some(f) => vec![f.into()],
            None if config.ipv6 == Ipv6Mode::Off => vec![Family::Ipv4],
            None => Family::BOTH.to_vec(),
        };
        // `render` prints what the iptables backends send.
        let renderer = IptablesBackend::new(BackendKind::IptablesNft);
        let rulesets: Vec<_> = families
            .iter()
            .map(|f| plan(&config, *f, renderer.plan_options()))
            .collect();
        if self.sets {
            let sets: Vec<_> = rulesets
                .iter()
                .flat_map(|r| r.sets.iter().cloned())
                .collect();
            print!("{}", ipset::load_payload(&sets, &[]));
        } else {
            let payloads: Vec<String> = rulesets.iter().map(render::render_restore).collect();
            print!("{}", payloads.join("\n"));
        }
        Ok(0)
    }
}
