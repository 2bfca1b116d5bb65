//! Network namespaces: entering the workload's, and refusing the machine's own.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::{CloneFlags, setns};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// The inode of the kernel's initial network namespace (`PROC_NET_INIT_INO`): the machine's
/// own. Namespaces made by `unshare -n`, `ip netns add` or a container runtime get others.
pub const INITIAL_NETNS_INODE: u64 = 0xEFFF_FFF9;

/// Moves this thread into the namespace at `path` (`/proc/PID/ns/net`, `/var/run/netns/N`).
/// Call it before starting any other thread: the rest of the process runs there.
pub fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| {
        Error::Environment(format!(
            "cannot open network namespace {}: {e}",
            path.display()
        ))
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
        let hint = if e == nix::errno::Errno::EPERM {
            " (entering a namespace needs CAP_SYS_ADMIN)"
        } else if e == nix::errno::Errno::EINVAL {
            " (not a network namespace file)"
        } else {
            ""
        };
        Error::Environment(format!(
            "cannot enter network namespace {}: {e}{hint}",
            path.display()
        ))
    })?;
    info!(netns = %path.display(), "entered network namespace");
    Ok(())
}

/// The inode of the namespace this thread is in.
pub fn current_inode() -> Result<u64> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| Error::io("reading /proc/thread-self/ns/net", e))
}

/// Whether a namespace inode is the machine's own namespace.
pub fn is_initial_namespace(inode: u64) -> bool {
    inode == INITIAL_NETNS_INODE || kthreadd_is_in(inode)
}

/// Whether kthreadd (PID 2, parent 0), which always lives in the initial namespace, is in
/// the namespace `inode`, when this PID namespace shows it. Needed before Linux 6.18: the
/// initial namespace's inode was allocated at boot then (0xF000_0000 on 6.1 and 6.12, seen
/// in the VM tests), not fixed. PID 2's namespace is compared first, so only a match pays
/// for reading its status (a new pod's apply should not).
fn kthreadd_is_in(inode: u64) -> bool {
    let same = std::fs::metadata("/proc/2/ns/net").is_ok_and(|m| m.ino() == inode);
    same && pid_2_is_kthreadd()
}

fn pid_2_is_kthreadd() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/2/status") else {
        return false;
    };
    let mut lines = status.lines();
    lines.clone().any(|l| l == "Name:\tkthreadd") && lines.any(|l| l == "PPid:\t0")
}

/// Refuses to go on in the machine's own namespace unless explicitly allowed: a redirect
/// there takes the whole node's traffic (including the way in) into a proxy that isn't there.
pub fn guard_against_host(allow_host_netns: bool) -> Result<()> {
    let inode = current_inode()?;
    if !is_initial_namespace(inode) {
        return Ok(());
    }
    if allow_host_netns {
        warn!("programming the machine's own network namespace (--allow-host-netns)");
        return Ok(());
    }
    Err(Error::Environment(
        "this is the machine's own network namespace (the initial one), not a workload's: \
         run inside the pod/task (init container), pass --netns /proc/PID/ns/net, or, if \
         you really mean the host, --allow-host-netns"
            .into(),
    ))
}

/// Why IPv6 cannot be programmed here, if it cannot.
pub fn ipv6_unavailable() -> Option<String> {
    // Per-namespace sysctl: readable as this thread's namespace after `setns`.
    match std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6") {
        Err(_) => Some("the kernel has no IPv6 (ipv6.disable=1 or not built in)".into()),
        Ok(v) if v.trim() != "0" => {
            Some("IPv6 is disabled in this namespace (disable_ipv6=1)".into())
        }
        Ok(_) => None,
    }
}

/// Whether `lo` is down in this thread's namespace (`None` when that cannot be told).
/// REDIRECT delivers to 127.0.0.1 / ::1, so with loopback down no redirected connection
/// reaches the proxy.
pub fn loopback_is_down() -> Option<bool> {
    use std::os::fd::AsRawFd;
    // One SIOCGIFFLAGS on a datagram socket, which belongs to this thread's namespace: a
    // fraction of what listing every interface and address (getifaddrs) costs a new pod.
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    // SAFETY: ifreq is plain data, zeroed is a valid value; the name fits with its NUL.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `request`, which outlives
    // the call; the descriptor is open.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if rc != 0 {
        return None;
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    Some(flags & libc::IFF_UP as libc::c_short == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kthreadds_namespace_is_the_host_on_any_kernel() {
        // Proven for real by the VM tests (refuses_the_machines_own_namespace on 6.1 and 6.12);
        // here kthreadd is visible unless a PID namespace hides it.
        if pid_2_is_kthreadd() {
            let inode = std::fs::metadata("/proc/2/ns/net").unwrap().ino();
            assert!(is_initial_namespace(inode));
            assert!(!is_initial_namespace(inode + 1) || inode + 1 == INITIAL_NETNS_INODE);
        }
    }
}
