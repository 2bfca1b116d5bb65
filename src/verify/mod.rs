//! `verify`: proves redirection with real connections in the live namespace.

use std::time::Duration;

use caps::Capability;
use clap::Args;

use crate::config::ProxyConfig;
use crate::error::{Error, Result, exit_code};
use crate::ruleset::Family;

/// Capabilities verify needs beyond iptables': dropping to the proxy's UID/GID in a child.
pub const NEEDED_CAPS: [Capability; 2] = [Capability::CAP_SETUID, Capability::CAP_SETGID];

#[derive(Debug, Clone, Args)]
pub struct VerifyOptions {
    /// Upper bound for the whole verification.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The verdict of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    CouldNotRun,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Passed => 0,
            Outcome::Failed => exit_code::VERIFY_FAILED,
            Outcome::CouldNotRun => exit_code::VERIFY_COULD_NOT_RUN,
        }
    }
}

pub fn run(_config: &ProxyConfig, _families: &[Family], _options: &VerifyOptions) -> Result<Outcome> {
    Err(Error::Other("verify is not implemented yet".into()))
}
