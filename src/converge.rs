//! Reading what is installed and converging it to a desired ruleset: the engine behind
//! `apply`, `clean`, `status` and the CNI commands. Per family it runs one
//! `iptables-save -t nat` and at most one `iptables-restore --noflush` (a namespace holding
//! none of our chains skips the save: see `read_and_converge`); the two families run side by
//! side since they are independent tables.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use tracing::{debug, info, warn};

use crate::backend::ipset::{self, IpsetTool};
use crate::backend::{self, BackendChoice, BackendKind, IptablesTools};
use crate::config::Ipv6Mode;
use crate::error::{Error, Result};
use crate::netns;
use crate::ruleset::{
    Drift, Family, InstalledNat, IpSet, OWN_PREFIX, Ruleset, SetKind, diff, fresh_install_payload,
    reconcile_payload,
};

/// One family's tools and what its `nat` table held when read.
#[derive(Debug, Clone)]
pub struct FamilyState {
    pub family: Family,
    pub tools: IptablesTools,
    pub installed: InstalledNat,
}

/// What is installed in this namespace, per family, in the chosen backend.
#[derive(Debug, Clone)]
pub struct Installation {
    pub backend: BackendKind,
    pub families: Vec<FamilyState>,
    /// Families left alone, and why (IPv6 off or unavailable).
    pub skipped: Vec<(Family, String)>,
}

/// Reads the `nat` tables of the families `ipv6` asks for, in the backend `choice` selects.
pub fn read_installation(choice: BackendChoice, ipv6: Ipv6Mode) -> Result<Installation> {
    read_selected(&backend::select(choice)?, choice, ipv6)
}

fn read_selected(
    selection: &backend::Selection,
    choice: BackendChoice,
    ipv6: Ipv6Mode,
) -> Result<Installation> {
    match read_with(selection.kind, ipv6) {
        Err(e) if choice == BackendChoice::Auto && selection.kind == BackendKind::Nft => {
            // Proving the backend: nft's first save failed, so the kernel can't do nf_tables.
            warn!(error = %e, "iptables-nft is not usable here; falling back to iptables-legacy");
            read_with(BackendKind::Legacy, ipv6)
        }
        other => other,
    }
}

/// Reads the `nat` tables in a given backend, without choosing one.
pub fn read_with(kind: BackendKind, ipv6: Ipv6Mode) -> Result<Installation> {
    let mut skipped = Vec::new();
    let want_ipv6 = match (ipv6, netns::ipv6_unavailable()) {
        (Ipv6Mode::Off, Some(_)) => {
            skipped.push((Family::Ipv6, "IPv6 is off in the configuration".to_owned()));
            false
        }
        (Ipv6Mode::On, Some(why)) => {
            return Err(Error::Environment(format!(
                "IPv6 is required (--ipv6 on) but {why}"
            )));
        }
        (Ipv6Mode::Auto, Some(why)) => {
            warn!("{why}; programming IPv4 only");
            skipped.push((Family::Ipv6, why));
            false
        }
        // With IPv6 off but present, the IPv6 table is still read so that rules of ours left
        // there by an earlier configuration are removed (the plan for it is empty).
        (_, None) => true,
    };
    let lenient = ipv6 != Ipv6Mode::On;
    let v4 = IptablesTools::find(kind, Family::Ipv4)?;
    let v6 = if want_ipv6 {
        match IptablesTools::find(kind, Family::Ipv6) {
            Ok(tools) => Some(tools),
            Err(e) if lenient => {
                warn!(error = %e, "programming IPv4 only");
                skipped.push((Family::Ipv6, e.to_string()));
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let (v4_saved, v6_saved) = std::thread::scope(|s| {
        let v6_job = v6.as_ref().map(|tools| s.spawn(|| tools.save_nat()));
        let v4_saved = v4.save_nat();
        (
            v4_saved,
            v6_job.map(|j| j.join().expect("save thread does not panic")),
        )
    });
    let mut families = vec![FamilyState {
        family: Family::Ipv4,
        installed: InstalledNat::parse(&v4_saved.map_err(|e| unusable(kind, Family::Ipv4, e))?),
        tools: v4,
    }];
    if let (Some(tools), Some(saved)) = (v6, v6_saved) {
        match saved {
            Ok(text) => families.push(FamilyState {
                family: Family::Ipv6,
                installed: InstalledNat::parse(&text),
                tools,
            }),
            Err(e) if lenient => {
                let why = format!("the IPv6 nat table is not usable: {e}");
                warn!("{why}; programming IPv4 only");
                skipped.push((Family::Ipv6, why));
            }
            Err(e) => return Err(unusable(kind, Family::Ipv6, e)),
        }
    }
    Ok(Installation {
        backend: kind,
        families,
        skipped,
    })
}

fn unusable(kind: BackendKind, family: Family, e: Error) -> Error {
    Error::Environment(format!("{kind} cannot read the {family} nat table: {e}"))
}

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
    /// The ipset payloads sent (loading, then destroying stale sets).
    pub ipset_payloads: Vec<String>,
}

/// Converges each read family to `desired(family)`. With `dry_run` nothing is sent.
pub fn converge(
    installation: &Installation,
    desired: &dyn Fn(Family) -> Ruleset,
    lock_wait: Duration,
    dry_run: bool,
) -> Result<ConvergeReport> {
    let rulesets: Vec<Ruleset> = installation
        .families
        .iter()
        .map(|f| desired(f.family))
        .collect();
    // Converging to nothing (clean, CNI DEL) also sweeps sets a crash left without rules.
    let sweep = rulesets.iter().all(|r| r == &Ruleset::empty(r.family));
    let sets = load_sets(&sets_of(&rulesets), sweep, dry_run)?;
    converge_loaded(installation, &rulesets, sets, lock_wait, dry_run)
}

/// Reads what is installed and converges it to `desired`, loading the ipsets of long lists
/// while the tables are being read (the two are independent; only the rules need the sets).
pub fn read_and_converge(
    choice: BackendChoice,
    ipv6: Ipv6Mode,
    desired: &(dyn Fn(Family) -> Ruleset + Sync),
    lock_wait: Duration,
    dry_run: bool,
) -> Result<(Installation, ConvergeReport)> {
    let ipv6_here = netns::ipv6_unavailable().is_none();
    let mut expected = vec![desired(Family::Ipv4)];
    if ipv6 != Ipv6Mode::Off && ipv6_here {
        expected.push(desired(Family::Ipv6));
    }
    let wanted = sets_of(&expected);
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
    let (installation, sets) = if let Some(payloads) = fresh_payloads {
        let sets = load_sets(&wanted, false, false)?;
        let fresh = install_fresh(selection.kind, ipv6, &expected, &payloads, lock_wait);
        if let Some(installation) = fresh {
            let report = report_fresh(&installation, &expected, payloads, sets)?;
            return Ok((installation, report));
        }
        (read_selected(&selection, choice, ipv6)?, sets)
    } else {
        let (installation, sets) = std::thread::scope(|s| {
            let loading = s.spawn(|| load_sets(&wanted, false, dry_run));
            let installation = read_selected(&selection, choice, ipv6);
            (
                installation,
                loading.join().expect("set loading does not panic"),
            )
        });
        (installation?, sets?)
    };
    let rulesets: Vec<Ruleset> = installation
        .families
        .iter()
        .map(|f| desired(f.family))
        .collect();
    let report = converge_loaded(&installation, &rulesets, sets, lock_wait, dry_run)?;
    Ok((installation, report))
}

/// Installs `rulesets` (one per family, IPv4 first) with a single guarded restore each,
/// side by side. `None` when any family refused (our chains exist) or could not be used:
/// the caller then reads and reconciles, which also reports real errors properly.
fn install_fresh(
    kind: BackendKind,
    ipv6: Ipv6Mode,
    rulesets: &[Ruleset],
    payloads: &[String],
    lock_wait: Duration,
) -> Option<Installation> {
    let mut skipped = Vec::new();
    if rulesets.len() == 1 {
        let why = match ipv6 {
            Ipv6Mode::Off => "IPv6 is off in the configuration".to_owned(),
            Ipv6Mode::On => return None, // the reading path reports the error
            Ipv6Mode::Auto => {
                let why = netns::ipv6_unavailable()?;
                warn!("{why}; programming IPv4 only");
                why
            }
        };
        skipped.push((Family::Ipv6, why));
    }
    let tools: Vec<IptablesTools> = rulesets
        .iter()
        .map(|r| IptablesTools::find(kind, r.family).ok())
        .collect::<Option<_>>()?;
    let transactions: Vec<_> = tools.iter().zip(payloads.iter().map(Some)).collect();
    if let Some(Err(e)) = restore_side_by_side(&transactions, lock_wait)
        .into_iter()
        .find(Result::is_err)
    {
        debug!(error = %e, "not a fresh namespace; reading the tables");
        return None;
    }
    Some(Installation {
        backend: kind,
        families: tools
            .into_iter()
            .map(|tools| FamilyState {
                family: tools.family,
                // Nothing of ours was there: the guarded restore proved it.
                installed: InstalledNat::default(),
                tools,
            })
            .collect(),
        skipped,
    })
}

fn report_fresh(
    installation: &Installation,
    rulesets: &[Ruleset],
    payloads: Vec<String>,
    mut sets: SetsState,
) -> Result<ConvergeReport> {
    for ruleset in rulesets {
        info!(family = %ruleset.family, "rules installed in one transaction (fresh namespace)");
    }
    remove_stale_sets(&mut sets, installation, rulesets, false)?;
    Ok(ConvergeReport {
        backend: installation.backend,
        families: rulesets
            .iter()
            .zip(payloads)
            .map(|(r, payload)| FamilyChange {
                family: r.family,
                payload: Some(payload),
            })
            .collect(),
        ipset_payloads: sets.payloads,
    })
}

fn sets_of(rulesets: &[Ruleset]) -> Vec<IpSet> {
    rulesets
        .iter()
        .flat_map(|r| r.sets.iter().cloned())
        .collect()
}

/// Our ipsets: which existed before, which were loaded, and what was sent.
struct SetsState {
    tool: Option<IpsetTool>,
    /// Names of our sets present before loading, plus the ones loaded.
    present: Vec<String>,
    payloads: Vec<String>,
}

/// Loads `wanted` (atomically per set) before any rule refers to it.
fn load_sets(wanted: &[IpSet], sweep: bool, dry_run: bool) -> Result<SetsState> {
    let tool = if !wanted.is_empty() {
        Some(IpsetTool::require()?)
    } else if sweep {
        IpsetTool::find()
    } else {
        None
    };
    let mut state = SetsState {
        present: match &tool {
            Some(tool) => tool.own_set_names()?,
            None => Vec::new(),
        },
        tool,
        payloads: Vec::new(),
    };
    if let Some(tool) = &state.tool
        && !wanted.is_empty()
    {
        let payload = ipset::load_payload(wanted, &state.present);
        if !dry_run {
            tool.restore(&payload)?;
        }
        state.payloads.push(payload);
        for set in wanted {
            if !state.present.contains(&set.name) {
                state.present.push(set.name.clone());
            }
        }
    }
    Ok(state)
}

/// Commits one transaction per family (side by side), then destroys our sets that no rule
/// needs any more.
fn converge_loaded(
    installation: &Installation,
    rulesets: &[Ruleset],
    mut sets: SetsState,
    lock_wait: Duration,
    dry_run: bool,
) -> Result<ConvergeReport> {
    let mut report = commit_rules(installation, rulesets, lock_wait, dry_run)?;
    remove_stale_sets(&mut sets, installation, rulesets, dry_run)?;
    report.ipset_payloads = sets.payloads;
    Ok(report)
}

/// One reconciling transaction per family that needs one, side by side.
fn commit_rules(
    installation: &Installation,
    rulesets: &[Ruleset],
    lock_wait: Duration,
    dry_run: bool,
) -> Result<ConvergeReport> {
    let payloads: Vec<Option<String>> = installation
        .families
        .iter()
        .zip(rulesets)
        .map(|(state, ruleset)| reconcile_payload(ruleset, &state.installed))
        .collect();
    if !dry_run {
        let transactions: Vec<_> = installation
            .families
            .iter()
            .zip(&payloads)
            .map(|(state, payload)| (&state.tools, payload.as_ref()))
            .collect();
        for result in restore_side_by_side(&transactions, lock_wait) {
            result?;
        }
    }
    let mut report = ConvergeReport {
        backend: installation.backend,
        families: Vec::new(),
        ipset_payloads: Vec::new(),
    };
    for (state, payload) in installation.families.iter().zip(payloads) {
        match &payload {
            Some(_) => info!(family = %state.family, dry_run, "rules converged in one transaction"),
            None => info!(family = %state.family, "rules already as configured; nothing sent"),
        }
        report.families.push(FamilyChange {
            family: state.family,
            payload,
        });
    }
    Ok(report)
}

/// Runs each family's restore (where there is one) at the same time: the tables are
/// independent, so two transactions cost about one.
fn restore_side_by_side(
    transactions: &[(&IptablesTools, Option<&String>)],
    lock_wait: Duration,
) -> Vec<Result<()>> {
    std::thread::scope(|s| {
        let jobs: Vec<_> = transactions
            .iter()
            .map(|(tools, payload)| {
                s.spawn(move || match payload {
                    Some(payload) => {
                        warn_if_lock_busy(tools.kind, lock_wait);
                        tools.restore(payload, lock_wait)
                    }
                    None => Ok(()),
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("restore thread does not panic"))
            .collect()
    })
}

/// Destroys our sets that no desired rule matches, once no rule refers to them.
fn remove_stale_sets(
    sets: &mut SetsState,
    installation: &Installation,
    rulesets: &[Ruleset],
    dry_run: bool,
) -> Result<()> {
    let references_sets = installation.families.iter().any(|f| {
        f.installed
            .rules
            .iter()
            .any(|r| r.spec.contains(&format!("--match-set {OWN_PREFIX}")))
    });
    if sets.tool.is_none()
        && references_sets
        && let Some(tool) = IpsetTool::find()
    {
        sets.present = tool.own_set_names()?;
        sets.tool = Some(tool);
    }
    if let Some(tool) = &sets.tool {
        let wanted = sets_of(rulesets);
        let stale: Vec<&str> = sets
            .present
            .iter()
            .map(String::as_str)
            .filter(|name| !wanted.iter().any(|w| w.name == *name))
            .collect();
        if !stale.is_empty() {
            let payload = ipset::destroy_payload(&stale);
            if !dry_run {
                tool.restore(&payload)?;
            }
            sets.payloads.push(payload);
        }
    }
    Ok(())
}

/// The installed state compared with `desired(family)`, per read family; sets included.
pub fn drift(
    installation: &Installation,
    desired: &dyn Fn(Family) -> Ruleset,
) -> Result<Vec<(Family, Drift)>> {
    let mut out = Vec::new();
    let mut own_sets: Option<Vec<(String, Vec<String>)>> = None;
    for state in &installation.families {
        let ruleset = desired(state.family);
        let mut drift = diff(&ruleset, &state.installed);
        if !ruleset.sets.is_empty() {
            if own_sets.is_none() {
                own_sets = Some(IpsetTool::require()?.own_sets()?);
            }
            let installed_sets = own_sets.as_ref().expect("read above");
            for set in &ruleset.sets {
                match installed_sets.iter().find(|(name, _)| *name == set.name) {
                    None => drift.missing.push(format!("ipset {}", set.name)),
                    Some((_, members)) => {
                        let want = comparable_members(set.kind, &set.members);
                        let have = comparable_members(set.kind, members);
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
    Ok(out)
}

/// Set members in one spelling: `ipset save` prints host networks without their prefix
/// length and bitmap ports one by one.
fn comparable_members(kind: SetKind, members: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for member in members {
        match kind {
            SetKind::Networks => {
                let bare = member
                    .strip_suffix("/32")
                    .or_else(|| member.strip_suffix("/128"));
                out.insert(bare.unwrap_or(member).to_owned());
            }
            SetKind::Ports => {
                let (first, last) = member.split_once('-').unwrap_or((member, member));
                match (first.parse::<u16>(), last.parse::<u16>()) {
                    (Ok(first), Ok(last)) => out.extend((first..=last).map(|p| p.to_string())),
                    _ => {
                        out.insert(member.clone());
                    }
                }
            }
        }
    }
    out
}

/// Says so when another process holds the legacy xtables lock, since iptables will wait.
fn warn_if_lock_busy(kind: BackendKind, lock_wait: Duration) {
    use nix::fcntl::{Flock, FlockArg};
    if kind != BackendKind::Legacy {
        return; // nf_tables transactions need no global lock
    }
    let path = std::env::var("XTABLES_LOCKFILE").unwrap_or_else(|_| "/run/xtables.lock".into());
    let Ok(file) = std::fs::OpenOptions::new().read(true).open(&path) else {
        return;
    };
    if let Err((_, nix::errno::Errno::EWOULDBLOCK)) =
        Flock::lock(file, FlockArg::LockExclusiveNonblock)
    {
        info!(lock = %path, wait = ?lock_wait, "another process holds the xtables lock; waiting for it");
    }
}
