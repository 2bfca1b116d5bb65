//! Getting into position before touching any rule: enter the namespace, refuse the
//! machine's own, check and then shed privileges.

use caps::Capability;

use super::args::TargetArgs;
use crate::error::Result;
use crate::{netns, privileges};

/// Capabilities iptables needs: NET_ADMIN for netlink/setsockopt, NET_RAW for the legacy
/// backend's raw socket.
pub const IPTABLES_CAPS: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

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
