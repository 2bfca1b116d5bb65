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

/// Whether iptables-nft's table `table` of `family` may hold the chain `chain` of ours, read
/// over netlink (no program runs). Only `false` when the kernel says so: a read that fails or
/// is interrupted every time answers `true`, so the caller reads the table with the program.
pub fn iptables_nft_table_holds_chain(
    family: crate::ruleset::Family,
    table: &str,
    chain: &str,
) -> bool {
    let Ok(mut connection) = NftConnection::open() else {
        return false;
    };
    let family = match family {
        crate::ruleset::Family::Ipv4 => TableFamily::Ipv4,
        crate::ruleset::Family::Ipv6 => TableFamily::Ipv6,
    };
    let mut retry = connection.retry();
    while retry.another() {
        match connection.dump_chains(family, Some(table)) {
            Ok(Some(chains)) => return chains.iter().any(|c| c.name == chain),
            // Interrupted by another writer: read again.
            Ok(None) => continue,
            Err(NftError::Refused { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                return false;
            }
            Err(NftError::Unavailable { .. }) => return false,
            Err(_) => return true,
        }
    }
    true
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
