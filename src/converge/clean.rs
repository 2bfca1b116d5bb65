//! Removing everything of ours from a namespace (`meshinit clean`, CNI DEL): the rules of
//! every backend that may hold them first, then our sets, which cannot be destroyed while
//! any rule still uses them. One backend failing does not stop the others' cleanup.

use tracing::{error, info};

use super::{converge_rules, read_with, sets};
use crate::backend::{self, BackendChoice, BackendKind, IptablesTools, TimeBudget};
use crate::config::Ipv6Mode;
use crate::error::Result;
use crate::ruleset::{Family, Ruleset};

/// Converges every backend that may hold our rules to the empty ruleset, then destroys our
/// sets. With `auto`, both backends are cleaned when both are present, since rules in
/// either still redirect.
pub fn clean(choice: BackendChoice, budget: &TimeBudget) -> Result<()> {
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
    let mut first_error = None;
    for kind in backends {
        let cleaned = read_with(kind, Ipv6Mode::Auto, budget).and_then(|installation| {
            let empty: Vec<Ruleset> = installation
                .families
                .iter()
                .map(|f| Ruleset::empty(f.family))
                .collect();
            converge_rules(&installation, &empty, budget, false)
        });
        match cleaned {
            Ok(changes) => {
                let changed = changes.iter().filter(|c| c.payload.is_some()).count();
                info!(backend = %kind, families_changed = changed, "cleaned");
            }
            Err(e) => {
                error!(backend = %kind, error = %e, "could not clean this backend; going on");
                first_error.get_or_insert(e);
            }
        }
    }
    match sets::sweep(&[], budget, false) {
        Ok(destroyed) if !destroyed.is_empty() => info!(sets = ?destroyed, "sets destroyed"),
        Ok(_) => {}
        Err(e) => {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
