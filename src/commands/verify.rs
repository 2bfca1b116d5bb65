//! `meshinit verify`.

use clap::Args;

use super::args::{ConfigArgs, TargetArgs};
use super::target;
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
        target::enter(&self.target, &verify::NEEDED_CAPS, "verify")?;
        let families = vec![crate::ruleset::Family::Ipv4];
        Ok(verify::run(&config, &families, &self.options)?.exit_code())
    }
}
