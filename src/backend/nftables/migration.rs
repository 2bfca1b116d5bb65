//! Moving from iptables-nft to the native table in one nf_tables transaction: iptables-nft
//! keeps its rules in the `ip nat` / `ip6 nat` tables, so the jumps into our chains, the
//! rules in them and the chains themselves are deleted by handle in the same batch that
//! creates `inet meshinit`. No moment has both sets of rules, or neither.

use tracing::{info, warn};

use crate::nftables::model::{Expr, ImmediateData, Verdict};
use crate::nftables::{BatchOutcome, NftConnection, NftError, TABLE_NAME, Table, TableFamily};
use crate::ruleset::is_own_chain;

/// What of ours iptables-nft holds in one family's `nat` table, by handle.
#[derive(Debug, Default)]
struct Leftovers {
    /// (chain, handle) of every rule in our chains or jumping into them.
    rules: Vec<(String, u64)>,
    /// Handles of our chains.
    chains: Vec<u64>,
}

/// Reads what iptables-nft holds of ours; `None` when a dump was interrupted (read again).
fn leftovers(
    connection: &mut NftConnection,
    family: TableFamily,
) -> Result<Option<Leftovers>, NftError> {
    let Some(chains) = connection.dump_chains(family, Some("nat"))? else {
        return Ok(None);
    };
    let chains: Vec<_> = chains
        .into_iter()
        .filter(|c| is_own_chain(&c.name))
        .collect();
    if chains.is_empty() {
        return Ok(Some(Leftovers::default()));
    }
    let Some(rules) = connection.dump_rules(family, "nat")? else {
        return Ok(None);
    };
    let enters_ours = |exprs: &[Expr]| {
        exprs.iter().any(|e| {
            matches!(
                e,
                Expr::Immediate {
                    data: ImmediateData::Verdict(Verdict::Jump(target) | Verdict::Goto(target)),
                    ..
                } if is_own_chain(target)
            )
        })
    };
    Ok(Some(Leftovers {
        rules: rules
            .into_iter()
            .filter(|r| is_own_chain(&r.chain) || enters_ours(&r.rule.exprs))
            .map(|r| (r.chain, r.handle))
            .collect(),
        chains: chains.into_iter().map(|c| c.handle).collect(),
    }))
}

/// Whether iptables-nft holds chains of ours in the `ip nat` or `ip6 nat` table, read over
/// netlink (no program runs); `false` when there is no nf_tables to hold any. A read that
/// fails is an error, never "none".
pub fn iptables_nft_holds_ours() -> crate::error::Result<bool> {
    let Ok(mut connection) = NftConnection::open() else {
        return Ok(false);
    };
    for family in [TableFamily::Ipv4, TableFamily::Ipv6] {
        // An interrupted dump (the ruleset changed under it) is read again.
        let mut retry = connection.retry();
        let chains = loop {
            if !retry.another() {
                return Err(super::kernel_error(retry.exhausted()));
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
                Err(e) => return Err(super::kernel_error(e)),
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

/// Replaces iptables-nft's rules of ours with `table` in one transaction, when iptables-nft
/// holds any; `Ok(false)` when it holds none (the caller then commits as usual).
pub fn migrate_from_iptables_nft(
    connection: &mut NftConnection,
    table: &Table,
) -> Result<bool, NftError> {
    let mut retry = connection.retry();
    while retry.another() {
        let attempt = retry.attempt();
        let genid = connection.generation()?;
        let (Some(v4), Some(v6)) = (
            leftovers(connection, TableFamily::Ipv4)?,
            leftovers(connection, TableFamily::Ipv6)?,
        ) else {
            continue;
        };
        if v4.chains.is_empty() && v6.chains.is_empty() {
            return Ok(false);
        }
        let ours_exists = connection.table_info(TABLE_NAME)?.is_some();
        let outcome = connection.send(genid, |batch| {
            for (family, found) in [(TableFamily::Ipv4, &v4), (TableFamily::Ipv6, &v6)] {
                // Jumps and chain contents first: a chain still referenced or not empty
                // cannot be deleted.
                for (chain, handle) in &found.rules {
                    batch.delete_rule(family, "nat", chain, *handle);
                }
                for handle in &found.chains {
                    batch.delete_chain(family, "nat", *handle);
                }
            }
            if ours_exists {
                batch.delete_table(TableFamily::Inet, TABLE_NAME);
            }
            batch.add_table(table);
        })?;
        match outcome {
            BatchOutcome::Committed => {
                info!(
                    rules = v4.rules.len() + v6.rules.len(),
                    chains = v4.chains.len() + v6.chains.len(),
                    "moved from iptables-nft to table inet {TABLE_NAME} in one transaction"
                );
                return Ok(true);
            }
            BatchOutcome::Stale => warn!(
                attempt,
                "the ruleset changed while migrating; reading again"
            ),
        }
    }
    Err(retry.exhausted())
}
