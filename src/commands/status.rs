//! `meshinit status`: are the installed rules exactly what the configuration renders?

use clap::Args;
use serde::Serialize;

use super::args::{ConfigArgs, TargetArgs};
use super::target::{self, IPTABLES_CAPS};
use crate::backend::{BackendKind, TimeBudget};
use crate::converge::{drift, read_installation};
use crate::error::Result;
use crate::ruleset::{Drift, Family, PlanOptions, plan};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct StatusReport {
    in_sync: bool,
    backend: BackendKind,
    families: Vec<FamilyStatus>,
    skipped: Vec<SkippedFamily>,
}

#[derive(Debug, Serialize)]
struct FamilyStatus {
    family: Family,
    installed: bool,
    #[serde(flatten)]
    drift: Drift,
}

#[derive(Debug, Serialize)]
struct SkippedFamily {
    family: Family,
    reason: String,
}

impl StatusArgs {
    pub fn exec(self) -> Result<i32> {
        let config = self.config.load()?;
        target::enter(&self.target, &IPTABLES_CAPS, "status")?;
        let budget = TimeBudget::starting_now(self.target.lock_timeout);
        let installation = read_installation(self.target.backend, config.ipv6, &budget)?;
        let desired = |family| plan(&config, family, PlanOptions::default());
        let drifts = drift(&installation, &desired, &budget)?;
        let families: Vec<FamilyStatus> = drifts
            .into_iter()
            .map(|(family, drift)| FamilyStatus {
                family,
                installed: installation
                    .families
                    .iter()
                    .chain(&installation.other_backend)
                    .any(|s| s.family == family && !s.installed.is_clean()),
                drift,
            })
            .collect();
        let report = StatusReport {
            in_sync: families.iter().all(|f| f.drift.is_empty()),
            backend: installation.backend,
            families,
            skipped: installation
                .skipped
                .iter()
                .map(|(family, reason)| SkippedFamily {
                    family: *family,
                    reason: reason.clone(),
                })
                .collect(),
        };
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report serialises")
            );
        } else {
            print_human(&report);
        }
        Ok(if report.in_sync { 0 } else { 1 })
    }
}

fn print_human(report: &StatusReport) {
    for f in &report.families {
        let state = match (f.installed, f.drift.is_empty()) {
            (_, true) => "in sync",
            (false, false) => "absent",
            (true, false) => "drifted",
        };
        println!("{} ({}): {state}", f.family, report.backend);
        for line in &f.drift.missing {
            println!("  missing:    {line}");
        }
        for line in &f.drift.unexpected {
            println!("  unexpected: {line}");
        }
        for chain in &f.drift.misordered_chains {
            println!("  out of order: {chain}");
        }
    }
    for s in &report.skipped {
        println!("{}: not checked ({})", s.family, s.reason);
    }
}
