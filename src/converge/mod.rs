//! Reading what is installed and converging it to a desired ruleset: the engine behind
//! `apply`, `clean`, `status` and the CNI commands. Per family it runs one
//! `iptables-save -t nat` and one `iptables-restore --noflush` (a namespace holding none of
//! our chains skips the save: see `read_and_converge`); when both families change, both
//! payloads are tested before either is committed (see `transaction`).

mod clean;
mod read;
mod sets;
mod transaction;

use serde::Serialize;
use tracing::{debug, info, warn};

pub use clean::clean;
pub use read::{FamilyState, Installation, read_installation, read_other_backend, read_with};
use transaction::{FamilyTransaction, commit_all};

use crate::backend::{self, BackendChoice, BackendKind, IptablesTools, TimeBudget};
use crate::config::Ipv6Mode;
use crate::error::{Error, Result};
use crate::netns;
use crate::ruleset::{
    Drift, Family, InstalledNat, Ruleset, diff, fresh_install_payload, reconcile_payload,
};

/// What converging did (or, for a dry run, would do) in one family.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyChange {
    pub family: Family,
    /// The restore payload sent, or `None` when the family was already in sync.
    pub payload: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConvergeReport {
    pub backend: BackendKind,
    pub families: Vec<FamilyChange>,
    /// The ipset payload sent to create new sets, if any.
    pub ipset_payloads: Vec<String>,
    /// Sets of ours destroyed because no rule needs them any more.
    pub sets_destroyed: Vec<String>,
}

/// Reads what is installed and converges it to `desired`, creating the sets of long lists
/// while the tables are being read (the two are independent; only the rules need the sets).
pub fn read_and_converge(
    choice: BackendChoice,
    ipv6: Ipv6Mode,
    desired: &(dyn Fn(Family) -> Ruleset + Sync),
    budget: &TimeBudget,
    dry_run: bool,
) -> Result<(Installation, ConvergeReport)> {
    let ipv6_here = netns::ipv6_unavailable().is_none();
    let mut expected = vec![desired(Family::Ipv4)];
    if ipv6 != Ipv6Mode::Off && ipv6_here {
        expected.push(desired(Family::Ipv6));
    }
    let wanted = sets::sets_of(&expected);
    let selection = backend::select(choice)?;

    // A namespace holding neither of our chains (a new pod: the common case) takes the whole
    // ruleset in one restore per family without reading the tables first; the restore itself
    // refuses, committing nothing, if a chain exists, and then the reading path below runs.
    // With IPv6 off but present the IPv6 table must be read to remove earlier rules.
    let must_read = dry_run || (ipv6 == Ipv6Mode::Off && ipv6_here);
    let fresh_payloads: Option<Vec<String>> = if must_read {
        None
    } else {
        expected.iter().map(fresh_install_payload).collect()
    };
    let (installation, set_payload) = if let Some(payloads) = fresh_payloads {
        let set_payload = sets::load(&wanted, budget, false)?;
        let fresh = install_fresh(selection.kind, ipv6, &expected, &payloads, budget)?;
        if let Some(mut installation) = fresh {
            installation.other_backend = read_other_backend(installation.backend, budget);
            remove_from_other_backend(&installation, budget, false)?;
            let sets_destroyed = if wanted.is_empty() {
                Vec::new()
            } else {
                sets::sweep(&wanted, budget, false)?
            };
            for ruleset in &expected {
                info!(family = %ruleset.family, "rules installed in one transaction (fresh namespace)");
            }
            let report = ConvergeReport {
                backend: installation.backend,
                families: expected
                    .iter()
                    .zip(payloads)
                    .map(|(r, payload)| FamilyChange {
                        family: r.family,
                        payload: Some(payload),
                    })
                    .collect(),
                ipset_payloads: set_payload.into_iter().collect(),
                sets_destroyed,
            };
            return Ok((installation, report));
        }
        (
            read::read_selected(&selection, choice, ipv6, budget)?,
            set_payload,
        )
    } else {
        let (installation, set_payload) = std::thread::scope(|s| {
            let loading = s.spawn(|| sets::load(&wanted, budget, dry_run));
            let installation = read::read_selected(&selection, choice, ipv6, budget);
            (
                installation,
                loading.join().expect("set loading does not panic"),
            )
        });
        (installation?, set_payload?)
    };
    let rulesets: Vec<Ruleset> = installation
        .families
        .iter()
        .map(|f| desired(f.family))
        .collect();
    let families = converge_rules(&installation, &rulesets, budget, dry_run)?;
    remove_from_other_backend(&installation, budget, dry_run)?;
    let references_own_sets = installation
        .families
        .iter()
        .chain(&installation.other_backend)
        .any(|f| {
            f.installed
                .matched_sets()
                .any(crate::ruleset::sets::is_own_set)
        });
    let sets_destroyed = if wanted.is_empty() && !references_own_sets {
        Vec::new()
    } else {
        sets::sweep(&sets::sets_of(&rulesets), budget, dry_run)?
    };
    let report = ConvergeReport {
        backend: installation.backend,
        families,
        ipset_payloads: set_payload.into_iter().collect(),
        sets_destroyed,
    };
    Ok((installation, report))
}

/// Installs `rulesets` (one per family, IPv4 first) with a single guarded restore each.
/// `Ok(None)` when a family refused (our chains exist) or could not be used: the caller then
/// reads and reconciles, which also reports real errors properly. Waiting for a lock or a
/// program too long is an error as it is: the reading path would only wait again.
fn install_fresh(
    kind: BackendKind,
    ipv6: Ipv6Mode,
    rulesets: &[Ruleset],
    payloads: &[String],
    budget: &TimeBudget,
) -> Result<Option<Installation>> {
    let mut skipped = Vec::new();
    if rulesets.len() == 1 {
        let why = match ipv6 {
            Ipv6Mode::Off => "IPv6 is off in the configuration".to_owned(),
            Ipv6Mode::On => return Ok(None), // the reading path reports the error
            Ipv6Mode::Auto => match netns::ipv6_unavailable() {
                Some(why) => {
                    warn!("{why}; programming IPv4 only");
                    why
                }
                None => return Ok(None),
            },
        };
        skipped.push((Family::Ipv6, why));
    }
    let Some(tools) = rulesets
        .iter()
        .map(|r| IptablesTools::find(kind, r.family).ok())
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let transactions: Vec<FamilyTransaction> = tools
        .iter()
        .zip(rulesets)
        .zip(payloads)
        .map(|((tools, ruleset), payload)| FamilyTransaction {
            tools,
            payload: payload.clone(),
            // Nothing of ours was there (the guard proves it): undoing removes what we added.
            undo: reconcile_payload(
                &Ruleset::empty(ruleset.family),
                &InstalledNat::holding(ruleset),
            ),
        })
        .collect();
    match commit_all(&transactions, budget) {
        Ok(()) => {}
        Err(e @ (Error::LockTimeout { .. } | Error::Timeout { .. } | Error::Busy(_))) => {
            return Err(e);
        }
        Err(e) => {
            debug!(error = %e, "not a fresh namespace; reading the tables");
            return Ok(None);
        }
    }
    Ok(Some(Installation {
        backend: kind,
        families: tools
            .into_iter()
            .zip(rulesets)
            .map(|(tools, ruleset)| FamilyState {
                family: tools.family,
                installed: InstalledNat::holding(ruleset),
                tools,
            })
            .collect(),
        skipped,
        other_backend: Vec::new(),
    }))
}

/// Converges each read family's rules to its ruleset (`rulesets` in the order of
/// `installation.families`), all or nothing; sets are left alone.
pub fn converge_rules(
    installation: &Installation,
    rulesets: &[Ruleset],
    budget: &TimeBudget,
    dry_run: bool,
) -> Result<Vec<FamilyChange>> {
    let mut transactions = Vec::new();
    let mut changes = Vec::new();
    for (state, ruleset) in installation.families.iter().zip(rulesets) {
        let payload = reconcile_payload(ruleset, &state.installed);
        if let Some(payload) = &payload {
            transactions.push(FamilyTransaction {
                tools: &state.tools,
                payload: payload.clone(),
                undo: reconcile_payload(
                    &state.installed.own_ruleset(state.family),
                    &InstalledNat::holding(ruleset),
                ),
            });
        }
        changes.push(FamilyChange {
            family: state.family,
            payload,
        });
    }
    if !dry_run {
        commit_all(&transactions, budget)?;
    }
    for change in &changes {
        match &change.payload {
            Some(_) => {
                info!(family = %change.family, dry_run, "rules converged in one transaction")
            }
            None => info!(family = %change.family, "rules already as configured; nothing sent"),
        }
    }
    Ok(changes)
}

/// Removes the rules of ours that the other iptables backend holds: the kernel evaluates
/// both backends, so they would still redirect (or shadow) connections.
fn remove_from_other_backend(
    installation: &Installation,
    budget: &TimeBudget,
    dry_run: bool,
) -> Result<()> {
    let transactions: Vec<FamilyTransaction> = installation
        .other_backend
        .iter()
        .filter_map(|state| {
            reconcile_payload(&Ruleset::empty(state.family), &state.installed).map(|payload| {
                FamilyTransaction {
                    tools: &state.tools,
                    payload,
                    undo: None,
                }
            })
        })
        .collect();
    if transactions.is_empty() || dry_run {
        return Ok(());
    }
    commit_all(&transactions, budget)?;
    let other = installation.other_backend[0].tools.kind;
    warn!(
        backend = %installation.backend,
        "removed meshinit's rules from {other} as well: the kernel evaluates both backends, \
         so they were still active beside the {} ones",
        installation.backend
    );
    Ok(())
}

/// The installed state compared with `desired(family)`, per read family; sets included, and
/// rules of ours in the other backend reported as unexpected.
pub fn drift(
    installation: &Installation,
    desired: &dyn Fn(Family) -> Ruleset,
    budget: &TimeBudget,
) -> Result<Vec<(Family, Drift)>> {
    let mut out = Vec::new();
    let mut own_sets: Option<Vec<(String, Vec<String>)>> = None;
    for state in &installation.families {
        let ruleset = desired(state.family);
        let mut drift = diff(&ruleset, &state.installed);
        if !ruleset.sets.is_empty() {
            if own_sets.is_none() {
                own_sets = Some(sets::installed_members(budget)?);
            }
            let installed_sets = own_sets.as_ref().expect("read above");
            for set in &ruleset.sets {
                match installed_sets.iter().find(|(name, _)| *name == set.name) {
                    None => drift.missing.push(format!("ipset {}", set.name)),
                    Some((_, members)) => {
                        let want = sets::comparable_members(set.kind, &set.members);
                        let have = sets::comparable_members(set.kind, members);
                        if want != have {
                            drift.unexpected.push(format!(
                                "ipset {} holds {} entries where {} are configured ({} missing, {} extra)",
                                set.name,
                                have.len(),
                                want.len(),
                                want.difference(&have).count(),
                                have.difference(&want).count()
                            ));
                        }
                    }
                }
            }
        }
        out.push((state.family, drift));
    }
    for state in &installation.other_backend {
        let leftovers = diff(&Ruleset::empty(state.family), &state.installed).unexpected;
        let lines = leftovers
            .into_iter()
            .map(|line| format!("{line}   (in {}, also active)", state.tools.kind));
        match out.iter_mut().find(|(family, _)| *family == state.family) {
            Some((_, drift)) => drift.unexpected.extend(lines),
            None => out.push((
                state.family,
                Drift {
                    unexpected: lines.collect(),
                    ..Drift::default()
                },
            )),
        }
    }
    Ok(out)
}
