//! `meshinit clean`: removes what meshinit (or the AWS App Mesh tools) installed.

use clap::Args;

use super::args::TargetArgs;
use super::target::{self, IPTABLES_CAPS, Turn};
use crate::backend::TimeBudget;
use crate::converge::clean;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct CleanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

impl CleanArgs {
    pub fn exec(self) -> Result<i32> {
        let budget = TimeBudget::starting_now(self.target.lock_timeout);
        let _entered = target::enter(
            &self.target,
            &IPTABLES_CAPS,
            "clean",
            Turn::Exclusive(&budget),
        )?;
        clean(self.target.backend, &budget)?;
        Ok(0)
    }
}
