//! The engine behind every command: decide once what each family gets, choose the backend
//! once ([`backend::select`]), converge it, and make sure no other backend keeps rules of
//! ours (the kernel evaluates them all). Backend specifics stay behind [`Backend`].

mod clean;
mod decide;

pub use clean::clean;
pub use decide::{FamilyChoice, Ipv6Decision, decide, decide_for, ipv6_decision};

use tracing::warn;

use crate::backend::{
    self, Availability, Backend, BackendChoice, BackendKind, ConvergeReport, Desired, Installed,
    Removal, Scope, Selection, TimeBudget,
};
use crate::config::{Ipv6Mode, ProxyConfig};
use crate::error::Result;
use crate::ruleset::{Drift, Family, Ruleset};

/// What `apply` did, and the backend it used (so `apply --verify` checks that one).
#[derive(Debug)]
pub struct Applied {
    pub report: ConvergeReport,
    pub backend: Box<dyn Backend>,
}

/// Converges the namespace to `config`: the chosen backend first (the new rules are in place
/// before any old ones go), then rules of ours in any other backend are removed.
pub fn apply(
    config: &ProxyConfig,
    choice: BackendChoice,
    budget: &TimeBudget,
    dry_run: bool,
) -> Result<Applied> {
    let families = decide(config.ipv6)?;
    let selection = backend::select(choice, budget)?;
    apply_with(
        config,
        &families,
        selection,
        backend::all(),
        budget,
        dry_run,
    )
}

/// [`apply`] with the decisions made: converge `selection`'s backend, then remove our rules
/// from each of `others` that holds some.
fn apply_with(
    config: &ProxyConfig,
    families: &FamilyChoice,
    mut selection: Selection,
    others: Vec<Box<dyn Backend>>,
    budget: &TimeBudget,
    dry_run: bool,
) -> Result<Applied> {
    let report = selection.run(|b| {
        let desired = families.desired(Some(config), b.plan_options());
        b.converge(&desired, budget, dry_run)
    })?;
    if !dry_run {
        let chosen = selection.backend.kind();
        remove_from_other_backends(chosen, &report.replaced, &others, budget)?;
        if chosen == BackendKind::Nftables {
            // The native backend keeps no ipset; sets of ours a crash left behind (a kill
            // during a move from iptables) are swept by every apply, as iptables' applies
            // do. Those another program's rule uses stay, with a warning.
            for other in others.iter().filter(|b| b.kind() != chosen) {
                if other.available(Availability::Installed).is_ok() {
                    if let Err(e) = other.remove(Removal::Sets, budget) {
                        warn!(backend = %other.kind(), error = %e, "sets of ours left behind");
                    }
                    break;
                }
            }
        }
    }
    Ok(Applied {
        report,
        backend: selection.backend,
    })
}

/// Removes rules of ours from every backend of `others` but `chosen`, and what the backends
/// `chosen` has just `replaced` keep besides their rules (their sets).
fn remove_from_other_backends(
    chosen: BackendKind,
    replaced: &[BackendKind],
    others: &[Box<dyn Backend>],
    budget: &TimeBudget,
) -> Result<()> {
    for other in others.iter().filter(|b| b.kind() != chosen) {
        if replaced.contains(&other.kind()) {
            // Its rules went in the transaction that installed ours; a set left behind is
            // untidy but harmless, so failing to remove it is a warning, not a failed apply.
            if let Err(e) = other.remove(Removal::Sets, budget) {
                warn!(backend = %other.kind(), error = %e, "sets of ours left behind");
            }
        } else if !other.read(Scope::Ours, budget)?.is_clean() {
            other.remove(Removal::Rules, budget)?;
            warn!(
                backend = %chosen,
                "removed meshinit's rules from {} as well: the kernel evaluates every backend, \
                 so they were still active beside the {chosen} ones",
                other.kind()
            );
        }
    }
    Ok(())
}

/// One family's state for `status` and CNI CHECK.
#[derive(Debug)]
pub struct FamilyStatus {
    pub family: Family,
    /// Whether anything of ours is installed in it.
    pub installed: bool,
    pub drift: Drift,
}

#[derive(Debug)]
pub struct Status {
    pub backend: BackendKind,
    pub families: Vec<FamilyStatus>,
    pub skipped: Vec<(Family, String)>,
}

impl Status {
    pub fn in_sync(&self) -> bool {
        self.families.iter().all(|f| f.drift.is_empty())
    }
}

/// Compares what is installed with `config`, in the chosen backend; rules of ours in any
/// other backend are drift too (they are active).
pub fn status(config: &ProxyConfig, choice: BackendChoice, budget: &TimeBudget) -> Result<Status> {
    let families = decide(config.ipv6)?;
    let selection = backend::select(choice, budget)?;
    status_with(config, &families, selection, &backend::all(), budget)
}

/// [`status`] with the decisions made: the drift of `selection`'s backend, and rules of
/// ours any of `others` holds as unexpected lines of their family.
fn status_with(
    config: &ProxyConfig,
    families: &FamilyChoice,
    mut selection: Selection,
    others: &[Box<dyn Backend>],
    budget: &TimeBudget,
) -> Result<Status> {
    let (installed, drifts) = selection.run(|b| {
        let desired = families.desired(Some(config), b.plan_options());
        let installed = b.read(Scope::Planned(&desired), budget)?;
        let drifts = b.drift(&installed, &desired, budget)?;
        Ok((installed, drifts))
    })?;
    let mut families: Vec<FamilyStatus> = drifts
        .into_iter()
        .map(|(family, drift)| FamilyStatus {
            family,
            installed: installed.table(family).is_some_and(|t| !t.is_clean()),
            drift,
        })
        .collect();
    for other in others.iter().filter(|b| b.kind() != installed.backend) {
        let held = other.read(Scope::Ours, budget)?;
        if held.is_clean() {
            continue;
        }
        for (family, _) in &held.families {
            let leftovers = other.describe_drift(&Ruleset::empty(*family), &held, *family);
            let lines = leftovers
                .unexpected
                .into_iter()
                .map(|line| format!("{line}   (in {}, also active)", other.kind()));
            match families.iter_mut().find(|f| f.family == *family) {
                Some(status) => {
                    status.installed = true;
                    status.drift.unexpected.extend(lines);
                }
                None => families.push(FamilyStatus {
                    family: *family,
                    installed: true,
                    drift: Drift {
                        unexpected: lines.collect(),
                        ..Drift::default()
                    },
                }),
            }
        }
    }
    Ok(Status {
        backend: installed.backend,
        families,
        skipped: installed.skipped,
    })
}

/// Reads what `backend` holds for the families `ipv6` allows (as `auto`, so a missing IPv6
/// is reported rather than an error): what verify inspects.
pub fn read_for_inspection(
    backend: &dyn Backend,
    ipv6: Ipv6Mode,
    budget: &TimeBudget,
) -> Result<Installed> {
    let mode = if ipv6 == Ipv6Mode::Off {
        Ipv6Mode::Off
    } else {
        Ipv6Mode::Auto
    };
    let desired: Desired = decide(mode)?.desired(None, backend.plan_options());
    backend.read(Scope::Planned(&desired), budget)
}

#[cfg(test)]
mod tests;
