//! `meshinit verify`: proves redirection in a namespace where `apply` already ran.

use clap::Args;

use super::args::{ConfigArgs, TargetArgs};
use super::target::{self, IPTABLES_CAPS};
use crate::backend::{self, TimeBudget};
use crate::error::Result;
use crate::verify;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub options: verify::VerifyOptions,
}

impl VerifyArgs {
    pub fn exec(self) -> Result<i32> {
        let config = self.config.load()?;
        // Reading the tables (which families to check, the ingress rules) needs iptables'
        // capabilities; the probes need to take on other users' IDs.
        let mut keep = IPTABLES_CAPS.to_vec();
        keep.extend(verify::needed_capabilities(&config));
        target::enter(&self.target, &keep, "verify")?;
        let budget = TimeBudget::starting_now(self.target.lock_timeout);
        let selection = backend::select(self.target.backend, &budget)?;
        Ok(verify::run(&config, selection.backend.as_ref(), &self.options)?.exit_code())
    }
}
