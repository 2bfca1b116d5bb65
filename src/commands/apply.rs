//! `meshinit apply`: the main job.

use clap::Args;
use tracing::{info, warn};

use super::args::{ConfigArgs, TargetArgs};
use super::target::{self, IPTABLES_CAPS, Turn};
use crate::backend::TimeBudget;
use crate::converge;
use crate::error::Result;
use crate::{netns, verify};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Print the payloads that would be sent and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// After applying, prove redirection with real connections (see `verify`); exit 5 if it
    /// is broken, so an init container stops the pod from starting with broken rules. The
    /// configuration's verify property (MESHINIT_VERIFY=true, netconf "verify": true) asks
    /// for the same.
    #[arg(long, conflicts_with = "dry_run")]
    pub verify: bool,

    #[command(flatten)]
    pub verify_options: super::verify::VerifyFlags,
}

impl ApplyArgs {
    pub fn exec(self) -> Result<i32> {
        let config = self.config.load()?;
        // `--verify`, or the configuration's `verify` (MESHINIT_VERIFY, netconf "verify"); a
        // dry run sends nothing, so there is nothing to prove.
        let prove = self.verify || (config.verify && !self.dry_run);
        let budget = TimeBudget::starting_now(self.target.lock_timeout);
        let mut keep = IPTABLES_CAPS.to_vec();
        if prove {
            keep.extend(verify::needed_capabilities(&config));
        }
        // A dry run changes nothing, so it needs no turn.
        let turn = if self.dry_run {
            Turn::Shared
        } else {
            Turn::Exclusive(&budget)
        };
        let mut entered = target::enter(&self.target, &keep, "apply", turn)?;
        if netns::loopback_is_down() == Some(true) {
            warn!(
                "loopback is down in this network namespace: REDIRECT delivers connections to \
                 the proxy over loopback, so redirected connections will fail until it is up \
                 (ip link set lo up, or the CNI loopback plugin)"
            );
        }
        // Verify's set-up needs no rules: it runs beside programming them.
        let verify_options = self.verify_options.options();
        let preparation =
            (self.verify && !self.dry_run && verify::check_options(&verify_options).is_ok())
                .then(verify::Preparation::start);
        let applied = converge::apply(&config, self.target.backend, &budget, self.dry_run)?;
        let report = &applied.report;
        if self.dry_run {
            // Each backend writes what it would send in its own syntax.
            print!("{}", applied.backend.dry_run_text(report));
            return Ok(0);
        }
        let families: Vec<String> = report
            .families
            .iter()
            .map(|f| f.family.to_string())
            .collect();
        info!(backend = %report.backend, families = ?families, "ruleset applied");
        if prove {
            // Verify reads the tables again, from the backend apply used: it checks what was
            // committed, not what was sent.
            let outcome = verify::run_prepared(
                &config,
                applied.backend.as_ref(),
                &verify_options,
                preparation
                    .unwrap_or_else(verify::Preparation::start)
                    .holding_until_teardown(entered.take_lock()),
            )?;
            return Ok(outcome.exit_code());
        }
        Ok(0)
    }
}
