//! Capabilities: checked up front so a missing one is a clear exit 3 instead of an
//! iptables error, then reduced to what the job needs before any child process runs.

use caps::{CapSet, Capability, CapsHashSet};
use tracing::debug;

use crate::error::{Error, Result};

/// Capabilities iptables needs: NET_ADMIN for netlink/setsockopt, NET_RAW for the legacy
/// backend's raw socket.
pub const IPTABLES_CAPS: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

/// Fails with exit code 3 when any of `needed` is not effective.
pub fn require(needed: &[Capability], purpose: &str) -> Result<()> {
    let effective = caps::read(None, CapSet::Effective)
        .map_err(|e| Error::Privileges(format!("cannot read capabilities: {e}")))?;
    let missing: Vec<String> = needed
        .iter()
        .filter(|c| !effective.contains(c))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let short: Vec<String> = missing
        .iter()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    Err(Error::Privileges(format!(
        "{purpose} needs {} but it is not effective: run as root with it, e.g. Kubernetes \
         securityContext.capabilities.add: [{}], docker run --cap-add {}",
        missing.join(", "),
        short.join(", "),
        short.join(" --cap-add ")
    )))
}

/// Drops every capability except `keep`, also from the bounding set so that the iptables
/// children (which run as root and would otherwise regain everything) get no more.
pub fn drop_all_except(keep: &[Capability]) -> Result<()> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    let all = caps::all();
    let can_shrink_bounding =
        caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
    if can_shrink_bounding {
        for cap in all.difference(&keep) {
            // Caps the kernel doesn't know fail with EINVAL; nothing to drop then.
            let _ = caps::drop(None, CapSet::Bounding, *cap);
        }
    }
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let retained: CapsHashSet = keep.intersection(&permitted).copied().collect();
    let fail =
        |e: caps::errors::CapsError| Error::Privileges(format!("cannot drop capabilities: {e}"));
    caps::set(None, CapSet::Effective, &retained).map_err(fail)?;
    caps::set(None, CapSet::Inheritable, &retained).map_err(fail)?;
    caps::set(None, CapSet::Permitted, &retained).map_err(fail)?;
    // A non-root caller keeps its capabilities across exec only through the ambient set.
    if !nix::unistd::geteuid().is_root() {
        for cap in &retained {
            let _ = caps::raise(None, CapSet::Ambient, *cap);
        }
    }
    debug!(?retained, "capabilities reduced");
    Ok(())
}
