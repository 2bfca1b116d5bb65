//! `meshinit status`: are the installed rules exactly what the configuration renders?

use clap::Args;
use serde::Serialize;

use super::args::{ConfigArgs, TargetArgs};
use super::target::{self, IPTABLES_CAPS};
use crate::backend::{BackendKind, TimeBudget};
use crate::config::Ipv6Mode;
use crate::converge;
use crate::error::Result;
use crate::ruleset::{Drift, Family};

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
    /// False for IPv6 with `--ipv6 off`: checked only for the absence of redirection.
    redirected: bool,
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
        let status = converge::status(&config, self.target.backend, &budget)?;
        let ipv6_off = config.ipv6 == Ipv6Mode::Off;
        let report = StatusReport {
            in_sync: status.in_sync(),
            backend: status.backend,
            families: status
                .families
                .into_iter()
                .map(|f| FamilyStatus {
                    family: f.family,
                    redirected: !(ipv6_off && f.family == Family::Ipv6),
                    installed: f.installed,
                    drift: f.drift,
                })
                .collect(),
            skipped: status
                .skipped
                .into_iter()
                .map(|(family, reason)| SkippedFamily { family, reason })
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
            // Told to leave IPv6 alone: nothing of ours redirects it, which is all there is
            // to check; "in sync" would suggest its traffic goes to the proxy.
            (_, true) if !f.redirected => "off (not redirected: IPv6 is off in the configuration)",
            (_, true) => "in sync",
            (false, false) => "absent",
            (true, false) => "drifted",
        };
        println!("{} ({}): {state}", f.family, report.backend);
        for line in f.drift.lines() {
            println!("  {line}");
        }
    }
    for s in &report.skipped {
        println!("{}: not checked ({})", s.family, s.reason);
    }
}
