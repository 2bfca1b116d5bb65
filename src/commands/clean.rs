//! `meshinit clean`: removes what meshinit (or the AWS App Mesh tools) installed.

use clap::Args;

use super::args::TargetArgs;
use super::target::{self, IPTABLES_CAPS};
use crate::backend::TimeBudget;
use crate::converge::clean;
use crate::error::Result;
use crate::netns_lock::NamespaceLock;

#[derive(Debug, Args)]
pub struct CleanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

impl CleanArgs {
    pub fn exec(self) -> Result<i32> {
        let budget = TimeBudget::starting_now(self.target.lock_timeout);
        target::enter(&self.target, &IPTABLES_CAPS, "clean")?;
        let _lock = NamespaceLock::acquire(&budget)?;
        clean(self.target.backend, &budget)?;
        Ok(0)
    }
}
