//! `meshinit clean`: removes what meshinit (or the AWS App Mesh tools) installed.

use clap::Args;
use tracing::info;

use super::args::TargetArgs;
use super::target::{self, IPTABLES_CAPS};
use crate::backend::{self, BackendChoice, BackendKind, IptablesTools};
use crate::config::Ipv6Mode;
use crate::converge::{converge, read_with};
use crate::error::Result;
use crate::ruleset::{Family, Ruleset};

#[derive(Debug, Args)]
pub struct CleanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

impl CleanArgs {
    pub fn exec(self) -> Result<i32> {
        target::enter(&self.target, &IPTABLES_CAPS, "clean")?;
        clean(self.target.backend, self.target.lock_timeout)?;
        Ok(0)
    }
}

/// Converges every backend that may hold our rules to the empty ruleset. With `auto`, both
/// backends are cleaned when both are present, since rules in either still redirect.
pub fn clean(choice: BackendChoice, lock_wait: std::time::Duration) -> Result<()> {
    let backends: Vec<BackendKind> = match choice {
        BackendChoice::Auto => {
            let mut kinds = Vec::new();
            if IptablesTools::find(BackendKind::Nft, Family::Ipv4).is_ok() {
                kinds.push(BackendKind::Nft);
            }
            // Only when legacy tables exist: reading them with iptables-legacy would create them.
            let legacy_exists = Family::BOTH
                .iter()
                .any(|f| backend::legacy_tables(*f).iter().any(|t| t == "nat"));
            if legacy_exists || kinds.is_empty() {
                kinds.push(BackendKind::Legacy);
            }
            kinds
        }
        BackendChoice::Legacy => vec![BackendKind::Legacy],
        BackendChoice::Nft => vec![BackendKind::Nft],
    };
    for kind in backends {
        let installation = read_with(kind, Ipv6Mode::Auto)?;
        let report = converge(&installation, &Ruleset::empty, lock_wait, false)?;
        let changed = report
            .families
            .iter()
            .filter(|f| f.payload.is_some())
            .count();
        info!(backend = %report.backend, families_changed = changed, "cleaned");
    }
    Ok(())
}
