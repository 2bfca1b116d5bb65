//! nf_tables over netlink as every backend meets it: the kernel's errors in meshinit's
//! terms, and whether iptables-nft holds chains of ours (asked by selection and by the
//! iptables-nft backend, without running a program). Shared here so the iptables backends
//! never call into the native one.

use nftables_netlink::{NftConnection, NftError, TableFamily};

use crate::backend_kind::BackendKind;
use crate::error::{Error, Result};
use crate::ruleset::is_own_chain;

/// Whether iptables-nft holds chains of ours in the `ip nat` or `ip6 nat` table, read over
/// netlink (no program runs); `false` when there is no nf_tables to hold any. A read that
/// fails is an error, never "none".
pub fn iptables_nft_holds_ours() -> Result<bool> {
    let Ok(mut connection) = NftConnection::open() else {
        return Ok(false);
    };
    for family in [TableFamily::Ipv4, TableFamily::Ipv6] {
        // An interrupted dump (the ruleset changed under it) is read again.
        let mut retry = connection.retry();
        let chains = loop {
            if !retry.another() {
                return Err(kernel_error(retry.exhausted()));
            }
            match connection.dump_chains(family, Some("nat")) {
                Ok(Some(chains)) => break chains,
                Ok(None) => continue,
                // No nat table of that family (nothing there), or no such family here.
                Err(NftError::Refused { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    break Vec::new();
                }
                Err(NftError::Unavailable { .. }) => break Vec::new(),
                Err(e) => return Err(kernel_error(e)),
            }
        };
        if chains.iter().any(|c| is_own_chain(&c.name)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// An nf_tables error as the library's error.
pub fn kernel_error(e: NftError) -> Error {
    match e {
        NftError::Unavailable { .. } => Error::BackendUnusable {
            backend: BackendKind::Nftables,
            reason: e.to_string(),
        },
        NftError::PermissionDenied { .. } => Error::Privileges(e.to_string()),
        NftError::GenerationChanged { .. } => Error::Busy(format!(
            "{e}; run again, or give more time with --lock-timeout"
        )),
        NftError::Refused { .. }
        | NftError::MalformedReply(_)
        | NftError::Unmodelled(_)
        | NftError::OwnedByAnother { .. }
        | NftError::Socket { .. } => Error::Kernel(e.to_string()),
    }
}
