//! `meshinit verify`: proves redirection in a namespace where `apply` already ran.

use std::time::Duration;

use clap::Args;

use super::args::{ConfigArgs, TargetArgs};
use super::target::{self, IPTABLES_CAPS, Turn};
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
    pub options: VerifyFlags,
}

impl VerifyArgs {
    pub fn exec(self) -> Result<i32> {
        let config = self.config.load()?;
        // Reading the tables (which families to check, the ingress rules) needs iptables'
        // capabilities; the probes need to take on other users' IDs.
        let mut keep = IPTABLES_CAPS.to_vec();
        keep.extend(verify::needed_capabilities(&config));
        target::enter(&self.target, &keep, "verify", Turn::Shared)?;
        let budget = TimeBudget::starting_now(self.target.lock_timeout);
        let selection = backend::select(self.target.backend, &budget)?;
        Ok(verify::run(&config, selection.backend.as_ref(), &self.options.options())?.exit_code())
    }
}

/// `--timeout` and `--json`, for `verify` and `apply --verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyFlags {
    /// Upper bound for the whole verification (at least 200ms). Each probe connection gets
    /// half of it, at most 1s; all run at once.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--timeout`: a humantime duration of at least [`verify::MIN_TIMEOUT`].
fn parse_timeout(text: &str) -> std::result::Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if timeout < verify::MIN_TIMEOUT {
        return Err("too short: verify needs at least 200ms (default 5s)".into());
    }
    Ok(timeout)
}

impl VerifyFlags {
    pub fn options(&self) -> verify::VerifyOptions {
        verify::VerifyOptions {
            timeout: self.timeout,
            json: self.json,
        }
    }
}
