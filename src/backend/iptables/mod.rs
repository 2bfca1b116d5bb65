//! The iptables backends: `iptables-legacy` (x_tables) and `iptables-nft` (nf_tables through
//! iptables' compatibility layer), driven with `iptables-save`/`iptables-restore`, with
//! ipsets for long lists and the legacy xtables lock: all of it lives here, since only they
//! need it.

mod converge;
pub mod dns_zones;
pub mod invalid_drop;
pub mod ipset;
pub mod parse;
mod read;
pub mod reconcile;
pub mod render;
mod sets;
mod side_chains;
mod tools;
mod transaction;
mod words;

pub use tools::IptablesTools;

use tracing::info;

use super::program::{self, TimeBudget};
use super::{
    Availability, Backend, BackendKind, ConvergeReport, Desired, FamilyPlan, Installed, Payload,
    Removal, Rendered, RuleCount, Scope, Shown, counts, show,
};
use crate::config::Ipv6Mode;
use crate::error::Result;
use crate::netns;
use crate::ruleset::{Drift, Family, InstalledTable, PlanOptions, Ruleset};

/// One of the two iptables backends.
#[derive(Debug, Clone, Copy)]
pub struct IptablesBackend {
    kind: BackendKind,
}

impl IptablesBackend {
    pub fn new(kind: BackendKind) -> Self {
        IptablesBackend { kind }
    }

    /// Every family this namespace has, to be emptied of our rules.
    fn everything_of_ours_removed() -> Desired {
        let mut families = vec![(
            Family::Ipv4,
            FamilyPlan::Program(Ruleset::empty(Family::Ipv4)),
        )];
        families.push(match netns::ipv6_unavailable() {
            None => (
                Family::Ipv6,
                FamilyPlan::Program(Ruleset::empty(Family::Ipv6)),
            ),
            Some(why) => (Family::Ipv6, FamilyPlan::Skip(why)),
        });
        Desired {
            families,
            ipv6: Ipv6Mode::Auto,
        }
    }
}

impl Backend for IptablesBackend {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn plan_options(&self) -> PlanOptions {
        render::PLAN_OPTIONS
    }

    fn available(&self, check: Availability<'_>) -> Result<()> {
        let tools = IptablesTools::find(self.kind, Family::Ipv4)?;
        match check {
            Availability::Installed => Ok(()),
            Availability::Works(budget) => {
                program::run(&tools.restore, &["--version"], None, budget).map(drop)
            }
        }
    }

    fn read(&self, scope: Scope<'_>, budget: &TimeBudget) -> Result<Installed> {
        match scope {
            Scope::Planned(desired) => {
                read::read(self.kind, desired, budget).map(|(installed, _)| installed)
            }
            Scope::Ours => self.read_ours(budget),
        }
    }

    fn converge(
        &self,
        desired: &Desired,
        budget: &TimeBudget,
        dry_run: bool,
    ) -> Result<ConvergeReport> {
        // iptables-restore commits each table separately (one nf_tables batch or one
        // IPT_SO_SET_REPLACE per COMMIT), so the side tables cannot share the nat
        // transaction. The order keeps every moment safe instead: what the new nat rules need
        // (DNS conntrack zones, the INVALID drop) goes in before them and is put back if they
        // fail; what only the old ones needed goes after them. So the DNS redirect never
        // runs without its zones, and zones or a drop without a redirect harm nothing.
        let mut first: Vec<side_chains::SentTable> = Vec::new();
        let mut before_nat = Vec::new();
        for ruleset in desired.rulesets() {
            let family = ruleset.family;
            // A family iptables cannot program here (no IPv6) is left to the nat step,
            // which skips it with its reason.
            if family == Family::Ipv6 && side_tables_unusable(self.kind) {
                continue;
            }
            let wanted: Vec<_> = side_chains(ruleset)
                .into_iter()
                .filter(|(_, want)| !want.is_empty())
                .collect();
            match side_chains::converge_all(self.kind, family, &wanted, budget, dry_run) {
                Ok(sent) => first.extend(sent),
                Err(e) => {
                    side_chains::undo_all(self.kind, &first, budget);
                    return Err(e);
                }
            }
            before_nat.push(family);
        }
        let report = match converge::converge(self.kind, desired, budget, dry_run) {
            Ok(report) => report,
            Err(e) => {
                if !dry_run {
                    side_chains::undo_all(self.kind, &first, budget);
                }
                return Err(e);
            }
        };
        for ruleset in desired.rulesets() {
            if report.skipped.iter().any(|(f, _)| *f == ruleset.family) {
                continue;
            }
            let done_before = before_nat.contains(&ruleset.family);
            let rest: Vec<_> = side_chains(ruleset)
                .into_iter()
                .filter(|(_, want)| !done_before || want.is_empty())
                .collect();
            side_chains::converge_all(self.kind, ruleset.family, &rest, budget, dry_run)?;
        }
        Ok(report)
    }

    fn render(&self, desired: &Desired) -> Rendered {
        let payloads: Vec<String> = desired.rulesets().map(render::render_restore).collect();
        let sets: Vec<_> = desired
            .rulesets()
            .flat_map(|r| r.sets.iter().cloned())
            .collect();
        Rendered {
            first: vec![Payload {
                to: "ipset restore".to_owned(),
                text: ipset::load_payload(&sets, &[]),
            }],
            rules: payloads.join("\n"),
        }
    }

    fn dry_run_text(&self, report: &ConvergeReport) -> String {
        let mut out = String::new();
        for payload in &report.sent_first {
            out.push_str(&format!("# {}\n{}\n", payload.to, payload.text));
        }
        for change in &report.families {
            match &change.payload {
                Some(p) => out.push_str(&format!(
                    "# {} restore --noflush ({})\n{p}\n",
                    report.backend, change.family
                )),
                None => out.push_str(&format!(
                    "# {}: already as configured; nothing to send\n\n",
                    change.family
                )),
            }
        }
        out
    }

    fn drift(
        &self,
        installed: &Installed,
        desired: &Desired,
        budget: &TimeBudget,
    ) -> Result<Vec<(Family, Drift)>> {
        let mut out = Vec::new();
        let mut own_sets: Option<Vec<(String, Vec<String>)>> = None;
        for (family, table) in &installed.families {
            let empty = Ruleset::empty(*family);
            let ruleset = desired.ruleset(*family).unwrap_or(&empty);
            let mut drift = reconcile::drift(ruleset, table);
            if !ruleset.sets.is_empty() {
                if own_sets.is_none() {
                    own_sets = Some(sets::installed_members(budget)?);
                }
                let installed_sets = own_sets.as_ref().expect("read above");
                sets::describe_drift(ruleset, installed_sets, &mut drift);
            }
            for (chain, want) in side_chains(ruleset) {
                chain.drift(self.kind, *family, &want, budget, &mut drift)?;
            }
            out.push((*family, drift));
        }
        Ok(out)
    }

    fn describe_drift(&self, desired: &Ruleset, installed: &Installed, family: Family) -> Drift {
        let empty = InstalledTable::default();
        reconcile::drift(desired, installed.table(family).unwrap_or(&empty))
    }

    fn show(&self, desired: &Desired, _: bool, budget: &TimeBudget) -> Result<Shown> {
        let families = desired
            .rulesets()
            .map(|r| Ok((r.family, show::iptables_rules(self.kind, r.family, budget)?)))
            .collect::<Result<_>>()?;
        Ok(Shown {
            families,
            whole: None,
        })
    }

    fn counters(&self, desired: &Desired, budget: &TimeBudget) -> Result<Vec<RuleCount>> {
        let mut all = Vec::new();
        for ruleset in desired.rulesets() {
            all.extend(counts::iptables_counts(self.kind, ruleset, budget)?);
        }
        Ok(all)
    }

    fn remove(&self, what: Removal, budget: &TimeBudget) -> Result<()> {
        match what {
            Removal::Rules => self.remove_rules(budget),
            Removal::Sets => {
                let destroyed = sets::sweep(&[], budget, false, true)?;
                if !destroyed.is_empty() {
                    info!(sets = ?destroyed, "sets destroyed");
                }
                Ok(())
            }
        }
    }
}

impl IptablesBackend {
    /// [`Scope::Ours`]: the nat tables, read only where rules of ours may be.
    fn read_ours(&self, budget: &TimeBudget) -> Result<Installed> {
        let nothing = Installed::nothing(self.kind);
        // The kernel is asked first (iptables-nft's tables over netlink, legacy's table
        // names in /proc), so the common answer, nothing of ours, costs no program and no
        // search of PATH.
        if self.kind == BackendKind::IptablesNft && !super::netfilter::iptables_nft_holds_ours()? {
            return Ok(nothing);
        }
        let mut desired = Self::everything_of_ours_removed();
        if self.kind == BackendKind::IptablesLegacy {
            // Reading a legacy table that does not exist would create it.
            for (family, plan) in &mut desired.families {
                if !legacy_tables(*family).iter().any(|t| t == "nat") {
                    *plan = FamilyPlan::Skip("no legacy nat table".into());
                }
            }
        }
        if desired.rulesets().next().is_none() || self.available(Availability::Installed).is_err() {
            return Ok(nothing);
        }
        let (installed, _) = read::read(self.kind, &desired, budget)?;
        Ok(if installed.is_clean() {
            nothing
        } else {
            installed
        })
    }

    fn remove_rules(&self, budget: &TimeBudget) -> Result<()> {
        let desired = Self::everything_of_ours_removed();
        let (installed, tools) = read::read(self.kind, &desired, budget)?;
        let changes = converge::converge_rules(&installed, &tools, &desired, budget, false)?;
        let changed = changes.iter().filter(|c| c.payload.is_some()).count();
        for family in Family::BOTH {
            if netns::ipv6_unavailable().is_some() && family == Family::Ipv6 {
                continue;
            }
            side_chains::converge_all(
                self.kind,
                family,
                &side_chains(&Ruleset::empty(family)),
                budget,
                false,
            )?;
        }
        info!(backend = %self.kind, families_changed = changed, "rules removed");
        // Sets only these rules used can go now; sets another backend still uses stay (the
        // kernel refuses), quietly: that backend's own turn removes them.
        sets::sweep(&[], budget, false, false)?;
        Ok(())
    }
}

/// Whether IPv6 side tables cannot be changed here (no IPv6, or no ip6tables program).
fn side_tables_unusable(kind: BackendKind) -> bool {
    netns::ipv6_unavailable().is_some() || tools::IptablesTools::find(kind, Family::Ipv6).is_err()
}

/// Our chains outside nat and the rules `ruleset` wants in each (none: the chain goes).
fn side_chains(ruleset: &Ruleset) -> [(side_chains::SideChain, Vec<String>); 3] {
    use crate::ruleset::zones::ZoneHook;
    [
        (
            invalid_drop::INVALID_DROP,
            invalid_drop::rules(ruleset.drop_invalid),
        ),
        (
            dns_zones::DNS_ZONES_OUT,
            dns_zones::specs(&ruleset.dns_zones, ZoneHook::Output),
        ),
        (
            dns_zones::DNS_ZONES_PRE,
            dns_zones::specs(&ruleset.dns_zones, ZoneHook::Prerouting),
        ),
    ]
}

/// The kernel's list of legacy x_tables tables that exist in this namespace. Reading it,
/// unlike running `iptables-legacy-save`, creates nothing. (`thread-self`: `self` would show
/// the main thread's namespace.)
pub fn legacy_tables(family: Family) -> Vec<String> {
    let path = match family {
        Family::Ipv4 => "/proc/thread-self/net/ip_tables_names",
        Family::Ipv6 => "/proc/thread-self/net/ip6_tables_names",
    };
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// True when any legacy table of either family holds a rule or a user chain: then legacy is
/// in use here, and a second backend would run beside it.
pub fn legacy_holds_rules(budget: &TimeBudget) -> bool {
    for family in Family::BOTH {
        if legacy_tables(family).is_empty() {
            continue;
        }
        let Ok(tools) = IptablesTools::find(BackendKind::IptablesLegacy, family) else {
            continue;
        };
        let Ok(output) = program::run(&tools.save, &[], None, budget) else {
            continue;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let holds = text.lines().any(|l| {
            l.starts_with("-A ")
                || (l.starts_with(':') && !l.contains(" ACCEPT ") && !l.contains(" DROP "))
        });
        if holds {
            return true;
        }
    }
    false
}
