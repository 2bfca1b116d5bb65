//! The native backend: meshinit's rules as one `inet meshinit` nf_tables table, written and
//! read over netlink by [`nftables_netlink`] with no program and no C library. Both families
//! live in the one table, so IPv4 and IPv6 change in one transaction; sets of any length
//! replace ipsets and the 15-port limit.

pub mod counters;
pub mod drift;
mod migration;
pub mod read_back;
pub mod render;
mod render_zones;
pub mod script;
#[cfg(test)]
mod text_tests;

pub use drift::describe_drift;
pub use render::{ActiveFamilies, TABLE_NAME, plan_table, render_table};

/// Whether table `inet meshinit` exists here (one request over netlink, no program; its
/// content is not read). `false` when nf_tables cannot be asked.
pub fn native_table_exists() -> bool {
    NftConnection::open()
        .and_then(|mut connection| connection.table_info(TABLE_NAME))
        .is_ok_and(|info| info.is_some())
}

use tracing::info;

use super::netfilter::kernel_error;
use super::{
    Availability, Backend, BackendKind, ConvergeReport, Desired, FamilyChange, FamilyPlan,
    Installed, OwnReading, Removal, Rendered, RuleCount, Scope, Shown, TimeBudget, counts, show,
};
use crate::error::Result;
use crate::ruleset::{
    Drift, EGRESS_CHAIN, Family, INGRESS_CHAIN, InstalledRule, InstalledTable, PlanOptions, Ruleset,
};
use nftables_netlink::model::{Expr, Rule};
use nftables_netlink::{Change, Deletion, NftConnection, NftError, Table};

#[derive(Debug, Clone, Copy)]
pub struct NftablesBackend;

/// The table's chains, and the model's chains they stand for.
const CHAINS: [(&str, &str); 2] = [
    (render::PREROUTING_BASE_CHAIN, INGRESS_CHAIN),
    (render::OUTPUT_BASE_CHAIN, EGRESS_CHAIN),
];

impl NftablesBackend {
    /// A connection whose retries against other writers last as long as the run may wait
    /// (`--lock-timeout`).
    fn connect(budget: &TimeBudget) -> Result<NftConnection> {
        let mut connection = NftConnection::open().map_err(kernel_error)?;
        connection.retry_until(budget.lock_deadline());
        Ok(connection)
    }

    fn read_table(connection: &mut NftConnection) -> Result<Option<Table>> {
        Ok(connection
            .read_table(TABLE_NAME)
            .map_err(kernel_error)?
            .table)
    }

    /// The table `desired` asks for (its rulesets rendered into one table), or `None` when
    /// ours is to be removed.
    fn planned(desired: &Desired) -> Option<Table> {
        if desired.is_nothing() {
            return None;
        }
        let ipv4 = desired.ruleset(Family::Ipv4)?;
        // Every rule counts what it decides (`status --counters`); counts are never drift.
        Some(counters::counted(render_table(
            ipv4,
            desired.ruleset(Family::Ipv6),
        )))
    }

    /// The snapshot of the families `desired` covers, from one read of the table.
    fn snapshot(desired: &Desired, reading: Reading) -> Installed {
        let view = match &reading {
            Reading::Table(table) => table.as_ref().map(model_view).unwrap_or_default(),
            Reading::Unmodelled(_) => unreadable_view(),
        };
        Installed {
            backend: BackendKind::Nftables,
            families: desired
                .families
                .iter()
                .filter(|(_, plan)| matches!(plan, FamilyPlan::Program(_)))
                .map(|(family, _)| (*family, view.clone()))
                .collect(),
            skipped: desired
                .skipped()
                .map(|(family, why)| (family, why.to_owned()))
                .collect(),
            own: Some(OwnReading::new(reading)),
        }
    }

    /// The table as read now.
    fn reading(budget: &TimeBudget) -> Result<Reading> {
        match Self::connect(budget)?.read_table(TABLE_NAME) {
            Ok(snapshot) => Ok(Reading::Table(snapshot.table)),
            // The table is there, holding what meshinit never writes: drift names it.
            Err(NftError::Unmodelled(what)) => Ok(Reading::Unmodelled(what)),
            Err(e) => Err(kernel_error(e)),
        }
    }

    /// [`Scope::Ours`]: whether the table exists (one request; its content is not read).
    fn read_ours(budget: &TimeBudget) -> Result<Installed> {
        // Without nf_tables nothing can be there.
        let Ok(mut connection) = Self::connect(budget) else {
            return Ok(Installed::nothing(BackendKind::Nftables));
        };
        // Whether the table exists is one request; its content is not needed to remove it
        // (and a read can fail on content meshinit does not model, or under a busy writer,
        // which must never pass for "nothing of ours").
        // What it holds is not read either: that the table is there is all the callers
        // need (clean and moving away delete it by name; status names it), and reading a
        // table of a million elements back takes seconds.
        if connection
            .table_info(TABLE_NAME)
            .map_err(kernel_error)?
            .is_none()
        {
            return Ok(Installed::nothing(BackendKind::Nftables));
        }
        let view = unreadable_view();
        Ok(Installed {
            backend: BackendKind::Nftables,
            families: Family::BOTH.iter().map(|f| (*f, view.clone())).collect(),
            skipped: Vec::new(),
            own: None,
        })
    }
}

/// One read of table `inet meshinit`: the snapshot [`NftablesBackend::drift`] compares.
#[derive(Debug)]
enum Reading {
    /// The table (`None`: not there).
    Table(Option<Table>),
    /// The table holds what the model has no words for (named).
    Unmodelled(String),
}

impl Backend for NftablesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn plan_options(&self) -> PlanOptions {
        render::PLAN_OPTIONS
    }

    fn available(&self, check: Availability<'_>) -> Result<()> {
        match check {
            // Nothing to install: the kernel interface is all it needs, proven on first use.
            Availability::Installed => Ok(()),
            Availability::Works(budget) => Self::connect(budget)?
                .generation()
                .map(drop)
                .map_err(kernel_error),
        }
    }

    fn read(&self, scope: Scope<'_>, budget: &TimeBudget) -> Result<Installed> {
        match scope {
            Scope::Planned(desired) => Ok(Self::snapshot(desired, Self::reading(budget)?)),
            Scope::Ours => Self::read_ours(budget),
        }
    }

    fn converge(
        &self,
        desired: &Desired,
        budget: &TimeBudget,
        dry_run: bool,
    ) -> Result<ConvergeReport> {
        let mut connection = Self::connect(budget)?;
        let planned = Self::planned(desired);
        let mut replaced = Vec::new();
        let changed = match (&planned, dry_run) {
            (Some(table), false) => {
                if migration::migrate_from_iptables_nft(&mut connection, table)
                    .map_err(kernel_error)?
                {
                    replaced.push(BackendKind::IptablesNft);
                    true
                } else {
                    let report = connection.commit(table).map_err(kernel_error)?;
                    info!(change = ?report.change, attempts = report.attempts, "inet {TABLE_NAME} committed");
                    report.change != Change::Unchanged
                }
            }
            (None, false) => {
                let deletion = connection.delete_table(TABLE_NAME).map_err(kernel_error)?;
                deletion == Deletion::Deleted
            }
            (planned, true) => Self::read_table(&mut connection)?.as_ref() != planned.as_ref(),
        };
        let summary = planned.as_ref().map_or_else(
            || format!("delete table inet {TABLE_NAME}"),
            // A dry run shows what would be sent: the table, as an nft script.
            |t| {
                if dry_run {
                    script::script(t)
                } else {
                    format!(
                        "table inet {} ({} chains, {} sets, {} set elements) in one transaction",
                        t.name,
                        t.chains.len(),
                        t.sets.len(),
                        t.sets.iter().map(|s| s.elements().len()).sum::<usize>()
                    )
                }
            },
        );
        Ok(ConvergeReport {
            backend: BackendKind::Nftables,
            families: desired
                .rulesets()
                .map(|r| FamilyChange {
                    family: r.family,
                    payload: changed.then(|| summary.clone()),
                })
                .collect(),
            skipped: desired
                .skipped()
                .map(|(family, why)| (family, why.to_owned()))
                .collect(),
            sent_first: Vec::new(),
            replaced,
        })
    }

    fn render(&self, desired: &Desired) -> Rendered {
        let rules = match Self::planned(desired) {
            Some(table) => script::script(&table),
            None => format!("delete table inet {TABLE_NAME}\n"),
        };
        // Its sets are in the table, sent with the rules.
        Rendered {
            first: Vec::new(),
            rules,
        }
    }

    fn dry_run_text(&self, report: &ConvergeReport) -> String {
        let families: Vec<String> = report
            .families
            .iter()
            .map(|f| f.family.to_string())
            .collect();
        let families = families.join(" + ");
        match report.families.iter().find_map(|f| f.payload.as_ref()) {
            Some(sent) => format!("# one nf_tables transaction ({families})\n{sent}\n"),
            None => format!("# {families}: already as configured; nothing to send\n\n"),
        }
    }

    fn drift(
        &self,
        installed: &Installed,
        desired: &Desired,
        budget: &TimeBudget,
    ) -> Result<Vec<(Family, Drift)>> {
        let planned = Self::planned(desired);
        // The snapshot it was given (read again only when it came from elsewhere).
        let read_now;
        let reading = match installed.own.as_ref().and_then(|own| own.get::<Reading>()) {
            Some(reading) => reading,
            None => {
                read_now = Self::reading(budget)?;
                &read_now
            }
        };
        let table = match reading {
            Reading::Table(table) => table,
            // Something in our table meshinit never writes: drift, named, which apply
            // replaces (never "nothing there").
            Reading::Unmodelled(what) => {
                let line = format!("content of table inet {TABLE_NAME} not in the plan: {what}");
                return Ok(installed
                    .families
                    .iter()
                    .map(|(family, _)| {
                        let drift = Drift {
                            unexpected: vec![line.clone()],
                            ..Drift::default()
                        };
                        (*family, drift)
                    })
                    .collect());
            }
        };
        Ok(installed
            .families
            .iter()
            .map(|(family, _)| {
                let drift = match (&planned, table) {
                    (Some(planned), table) => describe_drift(table.as_ref(), planned, *family),
                    (None, Some(table)) => Drift {
                        unexpected: vec![format!("table inet {}", table.name)],
                        ..Drift::default()
                    },
                    (None, None) => Drift::default(),
                };
                (*family, drift)
            })
            .collect())
    }

    fn describe_drift(&self, desired: &Ruleset, installed: &Installed, family: Family) -> Drift {
        let empty = InstalledTable::default();
        let view = installed.table(family).unwrap_or(&empty);
        if desired.chains.is_empty() {
            // Nothing of ours is wanted: the table, if there, is unexpected.
            let unexpected = if view.is_clean() {
                Vec::new()
            } else {
                vec![format!("table inet {TABLE_NAME}")]
            };
            return Drift {
                unexpected,
                ..Drift::default()
            };
        }
        // The table itself, as this backend read it (none: not there, or not readable).
        let table = match installed.own.as_ref().and_then(|own| own.get::<Reading>()) {
            Some(Reading::Table(table)) => table.as_ref(),
            _ => None,
        };
        part_drift(view, table, desired)
    }

    fn show(&self, desired: &Desired, in_sync: bool, _: &TimeBudget) -> Result<Shown> {
        let listed = show::native_rules()?;
        let diff = match desired.ruleset(Family::Ipv4) {
            Some(ipv4) if !in_sync => show::native_diff(ipv4, desired.ruleset(Family::Ipv6))?,
            _ => Vec::new(),
        };
        Ok(Shown {
            families: Vec::new(),
            whole: Some((listed, diff)),
        })
    }

    fn counters(&self, _: &Desired, _: &TimeBudget) -> Result<Vec<RuleCount>> {
        counts::native_counts()
    }

    /// The snapshot keeps rules in nft's words: the table is read back into the model's
    /// rules, and the deciding rule is named as installed.
    fn explain_installed(
        &self,
        config: &crate::config::ProxyConfig,
        _: &Ruleset,
        provenance: &crate::explain::Provenance<'_>,
        connection: &crate::explain::Connection,
        _: &TimeBudget,
    ) -> Result<(Option<crate::explain::Explanation>, Vec<String>)> {
        read_back::explain_installed(config, provenance, connection)
    }

    fn remove(&self, what: Removal, budget: &TimeBudget) -> Result<()> {
        match what {
            Removal::Rules => {
                let deletion = Self::connect(budget)?
                    .delete_table(TABLE_NAME)
                    .map_err(kernel_error)?;
                info!(?deletion, "table inet {TABLE_NAME} removed");
                Ok(())
            }
            // Its sets live in its table and went with it.
            Removal::Sets => Ok(()),
        }
    }
}

/// How the table lacks the part of the plan `desired` holds (one family, possibly one
/// chain): that part, rendered alone, must be in the table, each chain's rules in order (the
/// table holds the other family's rules between them), compared by [`rule_key`]. `view`
/// says which chains are there; `table` (when read) holds their rules.
fn part_drift(view: &InstalledTable, table: Option<&Table>, desired: &Ruleset) -> Drift {
    let mut drift = Drift::default();
    // Lines name the model's chains, as the iptables backends' do, for what filters them by
    // chain (verify).
    let part = desired.chains.join(", ");
    let wanted = counters::counted(render_table(desired, None));
    let guard = counters::counted_rule(render::ipv6_passes_rule());
    for chain in &wanted.chains {
        let Some((_, own_chain)) = CHAINS.iter().find(|(name, _)| *name == chain.name) else {
            continue;
        };
        if !view.chains.iter().any(|c| c == own_chain) {
            drift
                .missing
                .push(format!("chain {}, for {part}", chain.name));
            continue;
        }
        let rules: Vec<String> = chain
            .rules
            .iter()
            .filter(|r| **r != guard)
            .map(|r| rule_key(r, &wanted))
            .collect();
        let installed = table
            .and_then(|t| t.chain(&chain.name).map(|c| (t, c)))
            .into_iter()
            .flat_map(|(t, c)| c.rules.iter().map(move |r| rule_key(r, t)));
        let mut next = 0;
        for rule in installed {
            if next < rules.len() && rule == rules[next] {
                next += 1;
            }
        }
        if next < rules.len() {
            drift.missing.push(format!(
                "rule {} of the {} planned in chain {}, for {part} (it or a later one differs, \
                 or a set it uses)",
                next + 1,
                rules.len(),
                chain.name
            ));
        }
    }
    drift
}

/// A rule as one comparable value: its expressions, with each set it looks up standing for
/// its type and members (by a fingerprint), so a changed set changes the rules using it.
fn rule_key(rule: &Rule, table: &Table) -> String {
    use std::hash::{Hash, Hasher};
    let mut key = String::new();
    for expr in &rule.exprs {
        key.push_str(&format!("{expr:?}; "));
        if let Expr::Lookup { set, .. } = expr {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            table.set(set).hash(&mut hasher);
            key.push_str(&format!("set#{:016x}; ", hasher.finish()));
        }
    }
    key
}

/// The table in the model's terms, for what reads chains and how they are entered
/// (verify's rule inspection, status): a base chain is one of our chains, entered by its
/// hook (no jump rule); each rule's text is its spelling in `nft`'s words. Drift does not
/// compare these (it compares the table itself, [`part_drift`]).
fn model_view(table: &Table) -> InstalledTable {
    let mut view = InstalledTable::default();
    for (name, own_chain) in CHAINS {
        let Some(chain) = table.chain(name) else {
            continue;
        };
        view.chains.push(own_chain.to_owned());
        view.hooked.push(own_chain.to_owned());
        view.rules
            .extend(chain.rules.iter().map(|rule| InstalledRule {
                chain: own_chain.to_owned(),
                rule: None,
                target: None,
                sets: Vec::new(),
                text: nftables_netlink::text::rule_text(rule),
            }));
    }
    view
}

/// What stands for a table that exists but was not (or could not be) read: not clean, so
/// callers remove it or report it.
fn unreadable_view() -> InstalledTable {
    InstalledTable {
        chains: vec![EGRESS_CHAIN.to_owned()],
        ..InstalledTable::default()
    }
}
