//! The command line's way into position: its `--netns` and `--allow-host-netns` as a
//! [`Target::Cli`] for the one seam every command and CNI verb goes through
//! ([`crate::namespace_entry`]).

use caps::Capability;

use super::args::TargetArgs;
use crate::error::Result;
use crate::namespace_entry::{self, Entered, Target};

pub use crate::namespace_entry::Turn;
pub use crate::privileges::IPTABLES_CAPS;

/// Enters the target namespace, reduces privileges to `keep`, and takes the namespace's
/// lock for an exclusive `turn`.
pub fn enter(
    target: &TargetArgs,
    keep: &[Capability],
    purpose: &str,
    turn: Turn,
) -> Result<Entered> {
    let target = Target::Cli {
        netns: target.netns.as_deref(),
        allow_host: target.allow_host_netns,
    };
    namespace_entry::entered(namespace_entry::enter(target, keep, purpose, turn))
}
