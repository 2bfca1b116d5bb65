//! Getting into position before touching any rule: enter the namespace, refuse the
//! machine's own, check and then shed privileges.

use caps::Capability;

use super::args::TargetArgs;
use crate::error::Result;
use crate::{netns, privileges};

pub use crate::privileges::IPTABLES_CAPS;

/// Enters the target namespace and reduces privileges to `keep`.
pub fn enter(target: &TargetArgs, keep: &[Capability], purpose: &str) -> Result<()> {
    if let Some(path) = &target.netns {
        privileges::require(&[Capability::CAP_SYS_ADMIN], "entering --netns")?;
        netns::enter(path)?;
    }
    netns::guard_against_host(target.allow_host_netns)?;
    privileges::require(keep, purpose)?;
    privileges::drop_all_except(keep)
}
