//! `meshinit status`: are the installed rules exactly what the configuration renders?

use clap::Args;
use serde::Serialize;

use super::args::{ConfigArgs, TargetArgs};
use super::target::{self, IPTABLES_CAPS, Turn};
use crate::backend::{self, BackendKind, Desired, FamilyPlan, RuleCount, TimeBudget, show};
use crate::config::Ipv6Mode;
use crate::converge;
use crate::error::Result;
use crate::ruleset::plan;
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

    /// Also print the installed rules of ours in the backend's own syntax (nft for the
    /// native table, iptables-save lines otherwise) and the drift as lines removed (-) and
    /// added (+); the text form reads back with `nft -f` / `iptables-restore`.
    #[arg(long)]
    pub show: bool,

    /// Also print, per family and rule, how many connections each rule has decided since
    /// it was written (NAT rules see each connection's first packet only).
    #[arg(long)]
    pub counters: bool,
}

#[derive(Debug, Serialize)]
struct StatusReport {
    in_sync: bool,
    backend: BackendKind,
    families: Vec<FamilyStatus>,
    skipped: Vec<SkippedFamily>,
    /// `--show` with the native backend: the table both families share, in nft syntax.
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<String>,
    /// `--show` with the native backend: the table as installed against the plan, as
    /// `- installed` / `+ planned` lines in nft's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<Vec<String>>,
    /// `--counters`: every planned rule with its counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<Vec<RuleCount>>,
}

#[derive(Debug, Serialize)]
struct FamilyStatus {
    family: Family,
    /// False for IPv6 with `--ipv6 off`: checked only for the absence of redirection.
    redirected: bool,
    installed: bool,
    #[serde(flatten)]
    drift: Drift,
    /// `--show`: the drift as `- installed` / `+ planned` lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<Vec<String>>,
    /// `--show` with an iptables backend: this family's rules of ours, iptables-save lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<String>,
}

#[derive(Debug, Serialize)]
struct SkippedFamily {
    family: Family,
    reason: String,
}

impl StatusArgs {
    pub fn exec(self) -> Result<i32> {
        let config = self.config.load()?;
        target::enter(&self.target, &IPTABLES_CAPS, "status", Turn::Shared)?;
        let budget = TimeBudget::starting_now(self.target.lock_timeout);
        let status = converge::status(&config, self.target.backend, &budget)?;
        let ipv6_off = config.ipv6 == Ipv6Mode::Off;
        // What the backend prints and counts: the plan of every family status reports.
        let backend = backend::by_kind(status.backend);
        let desired = Desired {
            families: status
                .families
                .iter()
                .map(|f| {
                    let ruleset = plan(&config, f.family, backend.plan_options());
                    (f.family, FamilyPlan::Program(ruleset))
                })
                .collect(),
            ipv6: config.ipv6,
        };
        let shown = if self.show {
            Some(backend.show(&desired, status.in_sync(), &budget)?)
        } else {
            None
        };
        // A backend holding each family apart shows each family's rules and drift.
        let per_family = shown.as_ref().filter(|s| s.whole.is_none());
        let mut families = Vec::new();
        for f in &status.families {
            families.push(FamilyStatus {
                family: f.family,
                redirected: !(ipv6_off && f.family == Family::Ipv6),
                installed: f.installed,
                drift: f.drift.clone(),
                diff: per_family.map(|_| show::diff_lines(&f.drift)),
                rules: per_family.and_then(|s| {
                    s.families
                        .iter()
                        .find(|(family, _)| *family == f.family)
                        .map(|(_, rules)| rules.clone())
                }),
            });
        }
        let (rules, whole_diff) = match shown.and_then(|s| s.whole) {
            Some((rules, diff)) => (Some(rules), Some(diff)),
            None => (None, None),
        };
        let counters = if self.counters {
            Some(backend.counters(&desired, &budget)?)
        } else {
            None
        };
        let report = StatusReport {
            diff: whole_diff,
            counters,
            in_sync: status.in_sync(),
            backend: status.backend,
            rules,
            families,
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
    // With --show, everything but the rules is a `#` comment, so the output reads back.
    let note = if report.rules.is_some() || report.families.iter().any(|f| f.rules.is_some()) {
        "# "
    } else {
        ""
    };
    for f in &report.families {
        let state = match (f.installed, f.drift.is_empty()) {
            // Told to leave IPv6 alone: nothing of ours redirects it, which is all there is
            // to check; "in sync" would suggest its traffic goes to the proxy.
            (_, true) if !f.redirected => "off (not redirected: IPv6 is off in the configuration)",
            (_, true) => "in sync",
            (false, false) => "absent",
            (true, false) => "drifted",
        };
        println!("{note}{} ({}): {state}", f.family, report.backend);
        for line in f.drift.lines() {
            println!("{note}  {line}");
        }
        if let Some(diff) = f.diff.as_ref().filter(|d| !d.is_empty()) {
            println!("{note}difference from the plan (- installed, + planned):");
            for line in diff {
                println!("{note}{line}");
            }
        }
        if let Some(rules) = &f.rules {
            print!("{rules}");
        }
    }
    for s in &report.skipped {
        println!("{note}{}: not checked ({})", s.family, s.reason);
    }
    if let Some(diff) = report.diff.as_ref().filter(|d| !d.is_empty()) {
        println!("{note}difference from the plan (- installed, + planned):");
        for line in diff {
            println!("{note}{line}");
        }
    }
    if let Some(rules) = &report.rules {
        print!("{rules}");
    }
    if let Some(counters) = &report.counters {
        let native = report.backend == BackendKind::Nftables;
        if native {
            println!(
                "{note}rules of table inet meshinit since written (connections; both families \
                 unless marked):"
            );
        }
        let mut family = None;
        for count in counters {
            if !native && family != Some(count.family) {
                family = Some(count.family);
                match count.family {
                    Some(f) => println!("{note}{f} rules since written (connections):"),
                    None => println!("{note}rules since written (connections):"),
                }
            }
            let only = match (count.family, report.backend) {
                (Some(f), BackendKind::Nftables) => format!(" ({f} only)"),
                _ => String::new(),
            };
            println!("{note}  {}{only}", count.line());
        }
    }
}
