//! Converging one iptables backend to the desired rulesets: per family one
//! `iptables-save -t nat` and one `iptables-restore --noflush` (a namespace holding none of
//! our chains skips the save), the families side by side, and the sets of long lists
//! created before the rules that use them and destroyed after the last rule that did.

use tracing::{debug, info};

use super::read::{FamilyTools, read};
use super::reconcile::{reconcile_payload, undo_payload};
use super::render::fresh_install_payload;
use super::sets;
use super::tools::IptablesTools;
use super::transaction::{FamilyTransaction, commit_all};
use crate::backend::{
    BackendKind, ConvergeReport, Desired, FamilyChange, Installed, Payload, TimeBudget,
};
use crate::error::{Error, Result};
use crate::ruleset::{InstalledTable, Ruleset};

pub fn converge(
    kind: BackendKind,
    desired: &Desired,
    budget: &TimeBudget,
    dry_run: bool,
) -> Result<ConvergeReport> {
    let expected: Vec<&Ruleset> = desired.rulesets().collect();
    let wanted = sets::sets_of(expected.iter().copied());

    // A namespace holding neither of our chains (a new pod: the common case) takes the whole
    // ruleset in one restore per family without reading the tables first; the restore itself
    // refuses, committing nothing, if a chain exists, and then the reading path below runs.
    // A family whose plan is empty (IPv6 off, clean) must be read to remove earlier rules.
    let fresh_payloads: Option<Vec<String>> = if dry_run {
        None
    } else {
        expected.iter().map(|r| fresh_install_payload(r)).collect()
    };
    let (installed, set_payload) = if let Some(payloads) = fresh_payloads {
        let set_payload = sets::load(&wanted, budget, false)?;
        if let Some(installed) = install_fresh(kind, desired, &expected, &payloads, budget)? {
            for ruleset in &expected {
                info!(family = %ruleset.family, "rules installed in one transaction (fresh namespace)");
            }
            // Every apply sweeps sets of ours no rule uses (a crash can leave one behind).
            log_destroyed(&sets::sweep(&wanted, budget, false, true)?, false);
            return Ok(ConvergeReport {
                backend: kind,
                families: expected
                    .iter()
                    .zip(payloads)
                    .map(|(r, payload)| FamilyChange {
                        family: r.family,
                        payload: Some(payload),
                    })
                    .collect(),
                skipped: installed.skipped,
                sent_first: set_loads(set_payload),
                replaced: Vec::new(),
            });
        }
        (read(kind, desired, budget)?, set_payload)
    } else {
        let (read_result, set_payload) = std::thread::scope(|s| {
            let loading = s.spawn(|| sets::load(&wanted, budget, dry_run));
            let read_result = read(kind, desired, budget);
            (
                read_result,
                loading.join().expect("set loading does not panic"),
            )
        });
        (read_result?, set_payload?)
    };
    let (installed, tools) = installed;
    let families = converge_rules(&installed, &tools, desired, budget, dry_run)?;
    // Every apply sweeps sets of ours no rule uses, whatever this run changed (a crash can
    // leave one behind).
    let keep = sets::sets_of(
        installed
            .families
            .iter()
            .filter_map(|(family, _)| desired.ruleset(*family)),
    );
    log_destroyed(&sets::sweep(&keep, budget, dry_run, true)?, dry_run);
    Ok(ConvergeReport {
        backend: kind,
        families,
        skipped: installed.skipped,
        sent_first: set_loads(set_payload),
        replaced: Vec::new(),
    })
}

/// The `ipset restore` that loads new sets, as sent before the rules.
fn set_loads(payload: Option<String>) -> Vec<Payload> {
    payload
        .map(|text| Payload {
            to: "ipset restore".to_owned(),
            text,
        })
        .into_iter()
        .collect()
}

fn log_destroyed(sets: &[String], dry_run: bool) {
    if !sets.is_empty() {
        info!(?sets, dry_run, "sets of ours no rule needs destroyed");
    }
}

/// Installs `rulesets` with a single guarded restore each. `Ok(None)` when a family refused
/// (our chains exist) or could not be used: the caller then reads and reconciles, which also
/// reports real errors properly. Waiting too long for a lock or a program is an error as it
/// is: the reading path would only wait again.
fn install_fresh(
    kind: BackendKind,
    desired: &Desired,
    rulesets: &[&Ruleset],
    payloads: &[String],
    budget: &TimeBudget,
) -> Result<Option<Installed>> {
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
            undo: undo_payload(&InstalledTable::default(), ruleset),
        })
        .collect();
    match commit_all(&transactions, budget, false) {
        Ok(()) => {}
        Err(e @ (Error::LockTimeout { .. } | Error::Timeout { .. } | Error::Busy(_))) => {
            return Err(e);
        }
        Err(e) => {
            debug!(error = %e, "not a fresh namespace; reading the tables");
            return Ok(None);
        }
    }
    Ok(Some(Installed {
        backend: kind,
        families: rulesets
            .iter()
            .map(|r| (r.family, super::reconcile::installed_holding(r)))
            .collect(),
        skipped: desired
            .skipped()
            .map(|(family, why)| (family, why.to_owned()))
            .collect(),
        own: None,
    }))
}

/// Converges each read family's rules to its desired ruleset, all or nothing; sets are left
/// alone.
pub fn converge_rules(
    installed: &Installed,
    tools: &[FamilyTools],
    desired: &Desired,
    budget: &TimeBudget,
    dry_run: bool,
) -> Result<Vec<FamilyChange>> {
    let mut transactions = Vec::new();
    let mut changes = Vec::new();
    for ((family, table), family_tools) in installed.families.iter().zip(tools) {
        let empty = Ruleset::empty(*family);
        let ruleset = desired.ruleset(*family).unwrap_or(&empty);
        let payload = reconcile_payload(ruleset, table);
        if let Some(payload) = &payload {
            transactions.push(FamilyTransaction {
                tools: &family_tools.tools,
                payload: payload.clone(),
                undo: undo_payload(table, ruleset),
            });
        }
        changes.push(FamilyChange {
            family: *family,
            payload,
        });
    }
    if !dry_run {
        commit_all(&transactions, budget, true)?;
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
