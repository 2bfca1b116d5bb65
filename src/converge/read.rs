//! Reading what is installed: the `nat` tables of the chosen backend, per family, and any
//! rules of ours the other iptables backend still holds (the kernel evaluates both).

use tracing::{debug, warn};

use crate::backend::{self, BackendChoice, BackendKind, IptablesTools, TimeBudget};
use crate::config::Ipv6Mode;
use crate::error::{Error, Result};
use crate::netns;
use crate::ruleset::{Family, InstalledNat};

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
    /// Families of the other iptables backend that hold rules of ours. They are active too,
    /// so apply removes them and status reports them.
    pub other_backend: Vec<FamilyState>,
}

/// Reads the `nat` tables of the families `ipv6` asks for, in the backend `choice` selects.
pub fn read_installation(
    choice: BackendChoice,
    ipv6: Ipv6Mode,
    budget: &TimeBudget,
) -> Result<Installation> {
    read_selected(&backend::select(choice)?, choice, ipv6, budget)
}

pub(super) fn read_selected(
    selection: &backend::Selection,
    choice: BackendChoice,
    ipv6: Ipv6Mode,
    budget: &TimeBudget,
) -> Result<Installation> {
    // Decided once, before trying a backend, so an IPv6 problem is never taken for an
    // unusable backend.
    let families = families_to_read(ipv6)?;
    let mut installation = match read_families(selection.kind, ipv6, families.clone(), budget) {
        Err(e)
            if choice == BackendChoice::Auto
                && selection.kind == BackendKind::Nft
                && matches!(e, Error::Environment(_) | Error::CommandFailed { .. }) =>
        {
            // Proving the backend: nft's first save failed, so the kernel can't do nf_tables.
            warn!(error = %e, "iptables-nft is not usable here; falling back to iptables-legacy");
            read_families(BackendKind::Legacy, ipv6, families, budget)?
        }
        other => other?,
    };
    installation.other_backend = read_other_backend(installation.backend, budget);
    Ok(installation)
}

/// Which families `ipv6` asks to read, or the error when IPv6 is required but absent.
fn families_to_read(ipv6: Ipv6Mode) -> Result<(bool, Vec<(Family, String)>)> {
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
    Ok((want_ipv6, skipped))
}

/// Reads the `nat` tables in a given backend, without choosing one.
pub fn read_with(kind: BackendKind, ipv6: Ipv6Mode, budget: &TimeBudget) -> Result<Installation> {
    read_families(kind, ipv6, families_to_read(ipv6)?, budget)
}

fn read_families(
    kind: BackendKind,
    ipv6: Ipv6Mode,
    (want_ipv6, mut skipped): (bool, Vec<(Family, String)>),
    budget: &TimeBudget,
) -> Result<Installation> {
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
        let v6_job = v6.as_ref().map(|tools| s.spawn(|| tools.save_nat(budget)));
        let v4_saved = v4.save_nat(budget);
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
            Err(e @ Error::Timeout { .. }) => return Err(e),
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
        other_backend: Vec::new(),
    })
}

fn unusable(kind: BackendKind, family: Family, e: Error) -> Error {
    match e {
        // A hung program is not a verdict on the backend.
        Error::Timeout { .. } => e,
        e => Error::Environment(format!("{kind} cannot read the {family} nat table: {e}")),
    }
}

/// The families of the backend other than `chosen` that hold rules of ours. Legacy tables
/// are read only when they exist (reading them would create them); nf_tables only when
/// iptables-nft is installed. Anything unreadable holds nothing we could remove.
pub fn read_other_backend(chosen: BackendKind, budget: &TimeBudget) -> Vec<FamilyState> {
    let other = match chosen {
        BackendKind::Nft => BackendKind::Legacy,
        BackendKind::Legacy => BackendKind::Nft,
    };
    let mut held = Vec::new();
    for family in Family::BOTH {
        if other == BackendKind::Legacy
            && !backend::legacy_tables(family).iter().any(|t| t == "nat")
        {
            continue;
        }
        if other == BackendKind::Nft
            && family == Family::Ipv6
            && netns::ipv6_unavailable().is_some()
        {
            continue;
        }
        let Ok(tools) = IptablesTools::find(other, family) else {
            continue;
        };
        match tools.save_nat(budget) {
            Ok(text) => {
                let installed = InstalledNat::parse(&text);
                if !installed.is_clean() {
                    held.push(FamilyState {
                        family,
                        tools,
                        installed,
                    });
                }
            }
            Err(e) => debug!(backend = %other, %family, error = %e, "not readable"),
        }
    }
    held
}
