//! The ipsets of long lists around a rule transaction: wanted sets are created before it
//! (no rule refers to a new set until the transaction switches to it), and our sets that no
//! rule of ours needs any more are destroyed after it.

use std::collections::BTreeSet;

use tracing::warn;

use super::ipset::{self, IpsetTool};
use crate::backend::TimeBudget;
use crate::error::Result;
use crate::ruleset::{Drift, IpSet, Ruleset, SetKind};

/// The sets `rulesets` match against.
pub fn sets_of<'a>(rulesets: impl IntoIterator<Item = &'a Ruleset>) -> Vec<IpSet> {
    rulesets
        .into_iter()
        .flat_map(|r| r.sets.iter().cloned())
        .collect()
}

/// Creates each of `wanted` that does not exist yet; returns the `ipset restore` payload
/// (also for a dry run, which sends nothing).
pub fn load(wanted: &[IpSet], budget: &TimeBudget, dry_run: bool) -> Result<Option<String>> {
    if wanted.is_empty() {
        return Ok(None);
    }
    let tool = IpsetTool::require()?;
    let present = tool.own_set_names(budget)?;
    let payload = ipset::load_payload(wanted, &present);
    if payload.is_empty() {
        return Ok(None);
    }
    if !dry_run {
        tool.restore(&payload, budget)?;
    }
    Ok(Some(payload))
}

/// Destroys our sets other than `keep`, once no rule of ours refers to them. A set that a
/// rule still uses cannot be destroyed; it is left in place, with a warning when
/// `warn_in_use` (the rule is then someone else's), rather than failing a run whose rules
/// are already committed. Returns what was destroyed.
pub fn sweep(
    keep: &[IpSet],
    budget: &TimeBudget,
    dry_run: bool,
    warn_in_use: bool,
) -> Result<Vec<String>> {
    // Without the kernel's ipset core no set can exist: no program needs to run.
    if !std::path::Path::new("/sys/module/ip_set").exists() {
        return Ok(Vec::new());
    }
    let Some(tool) = IpsetTool::find() else {
        return Ok(Vec::new());
    };
    let mut destroyed = Vec::new();
    for name in tool.own_set_names(budget)? {
        if keep.iter().any(|k| k.name == name) {
            continue;
        }
        if dry_run || tool.destroy(&name, budget)? {
            destroyed.push(name);
        } else if warn_in_use {
            warn!(
                set = %name,
                "left set {name} in place: a rule that is not meshinit's still uses it; \
                 remove that rule and run meshinit again to destroy the set"
            );
        }
    }
    Ok(destroyed)
}

/// Our sets' members as the kernel holds them, for drift.
pub fn installed_members(budget: &TimeBudget) -> Result<Vec<(String, Vec<String>)>> {
    IpsetTool::require()?.own_sets(budget)
}

/// Adds to `drift` each set of `desired` that is missing or holds other members.
pub fn describe_drift(desired: &Ruleset, installed: &[(String, Vec<String>)], drift: &mut Drift) {
    for set in &desired.sets {
        match installed.iter().find(|(name, _)| *name == set.name) {
            None => drift.missing.push(format!("ipset {}", set.name)),
            Some((_, members)) => {
                let want = comparable_members(set.kind(), &ipset::member_texts(&set.members));
                let have = comparable_members(set.kind(), members);
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
