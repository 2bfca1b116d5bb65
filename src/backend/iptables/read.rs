//! Reading the `nat` tables of one iptables backend, both families side by side.

use tracing::warn;

use super::parse::installed_table;
use super::tools::IptablesTools;
use crate::backend::{BackendKind, Desired, FamilyPlan, Installed, TimeBudget};
use crate::config::Ipv6Mode;
use crate::error::{Error, Result};
use crate::ruleset::Family;

/// A family that was read, with the tools that will write it.
#[derive(Debug, Clone)]
pub struct FamilyTools {
    pub family: Family,
    pub tools: IptablesTools,
}

/// Reads the `nat` table of every family `desired` programs. With IPv6 `auto`, an IPv6
/// table that cannot be read (no ip6tables, no IPv6 nat in the kernel) is skipped with the
/// reason; with `on` it is an error.
pub fn read(
    kind: BackendKind,
    desired: &Desired,
    budget: &TimeBudget,
) -> Result<(Installed, Vec<FamilyTools>)> {
    let lenient = desired.ipv6 != Ipv6Mode::On;
    let mut skipped: Vec<(Family, String)> = desired
        .skipped()
        .map(|(family, why)| (family, why.to_owned()))
        .collect();
    let mut tools = Vec::new();
    for (family, plan) in &desired.families {
        if let FamilyPlan::Skip(_) = plan {
            continue;
        }
        match IptablesTools::find(kind, *family) {
            Ok(found) => tools.push(FamilyTools {
                family: *family,
                tools: found,
            }),
            Err(e) if *family == Family::Ipv6 && lenient => {
                warn!(error = %e, "programming IPv4 only");
                skipped.push((Family::Ipv6, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    let saved: Vec<Result<String>> = std::thread::scope(|s| {
        let jobs: Vec<_> = tools
            .iter()
            .map(|t| s.spawn(|| t.tools.save_nat(budget)))
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("save thread does not panic"))
            .collect()
    });
    let mut families = Vec::new();
    let mut kept = Vec::new();
    for (family_tools, saved) in tools.into_iter().zip(saved) {
        let family = family_tools.family;
        match saved {
            Ok(text) => {
                families.push((family, installed_table(&text)));
                kept.push(family_tools);
            }
            // A hung program is not a verdict on the backend.
            Err(e @ Error::Timeout { .. }) => return Err(e),
            Err(e) if family == Family::Ipv6 && lenient => {
                let why = format!("the IPv6 nat table is not usable: {e}");
                warn!("{why}; programming IPv4 only");
                skipped.push((Family::Ipv6, why));
            }
            Err(e) => {
                return Err(Error::BackendUnusable {
                    backend: kind,
                    reason: format!("cannot read the {family} nat table: {e}"),
                });
            }
        }
    }
    Ok((
        Installed {
            backend: kind,
            families,
            skipped,
            own: None,
        },
        kept,
    ))
}
