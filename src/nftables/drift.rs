//! What differs between the installed table and the desired one, in words for `status`
//! and CNI CHECK, as each family sees it.

use super::model::{KeyType, Set, Table};
use crate::ruleset::{Drift, Family};

/// How `family` sees the difference between the installed table and `desired` (empty when
/// they are equal). The table, its chains and the port set serve both families, so their
/// differences show under each; an address set only under its own.
pub fn describe_drift(installed: Option<&Table>, desired: &Table, family: Family) -> Drift {
    let mut drift = Drift::default();
    let Some(installed) = installed else {
        drift.missing.push(format!("table inet {}", desired.name));
        return drift;
    };
    if installed.flags != desired.flags {
        drift.unexpected.push(if installed.is_dormant() {
            format!(
                "table inet {} is dormant (flags {:#x}): none of its rules runs",
                installed.name, installed.flags
            )
        } else {
            format!(
                "flags of table inet {}: {:#x}, planned {:#x}",
                installed.name, installed.flags, desired.flags
            )
        });
    }
    let concerns = |set: &Set| match set.key {
        KeyType::Ipv4Addr => family == Family::Ipv4,
        KeyType::Ipv6Addr => family == Family::Ipv6,
        KeyType::InetService => true,
    };
    for set in desired.sets.iter().filter(|s| concerns(s)) {
        match installed.set(&set.name) {
            None => drift.missing.push(format!("set {}", set.name)),
            Some(found) if found != set => drift.unexpected.push(set_drift(found, set)),
            Some(_) => {}
        }
    }
    for set in installed.sets.iter().filter(|s| concerns(s)) {
        if desired.set(&set.name).is_none() {
            drift
                .unexpected
                .push(format!("set {} (not in the plan)", set.name));
        }
    }
    for chain in &desired.chains {
        match installed.chain(&chain.name) {
            None => drift.missing.push(format!("chain {}", chain.name)),
            Some(found) if found.base != chain.base => drift.unexpected.push(format!(
                "hook of chain {} (differs from the plan)",
                chain.name
            )),
            Some(found) if found.rules != chain.rules => {
                let first = found
                    .rules
                    .iter()
                    .zip(&chain.rules)
                    .position(|(a, b)| a != b)
                    .unwrap_or(found.rules.len().min(chain.rules.len()));
                drift.unexpected.push(format!(
                    "rules of chain {}: {} installed, {} planned, first difference at rule {}",
                    chain.name,
                    found.rules.len(),
                    chain.rules.len(),
                    first + 1
                ));
            }
            Some(_) => {}
        }
    }
    for chain in &installed.chains {
        if desired.chain(&chain.name).is_none() {
            drift
                .unexpected
                .push(format!("chain {} (not in the plan)", chain.name));
        }
    }
    drift
}

fn set_drift(found: &Set, wanted: &Set) -> String {
    if found.key != wanted.key || found.interval != wanted.interval {
        return format!(
            "type of set {}: {:?}{}, planned {:?}{}",
            wanted.name,
            found.key,
            if found.interval { " (interval)" } else { "" },
            wanted.key,
            if wanted.interval { " (interval)" } else { "" }
        );
    }
    let missing = wanted
        .elements()
        .iter()
        .filter(|e| found.elements().binary_search(e).is_err())
        .count();
    let extra = found
        .elements()
        .iter()
        .filter(|e| wanted.elements().binary_search(e).is_err())
        .count();
    format!(
        "elements of set {}: {missing} missing, {extra} not planned",
        wanted.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::model::{Chain, KeyRange, KeyType, TABLE_NAME};

    #[test]
    fn equal_tables_have_no_drift_and_differences_are_named_per_family() {
        let set = |name: &str, key, keys: &[u128]| {
            Set::new(name, key, keys.iter().map(|k| KeyRange::single(*k)))
        };
        let chain = Chain {
            name: "output".into(),
            base: None,
            rules: Vec::new(),
        };
        let desired = Table::new(
            TABLE_NAME,
            vec![
                set("ignored_ports", KeyType::InetService, &[22, 80]),
                set("ignored_ipv6", KeyType::Ipv6Addr, &[1]),
            ],
            vec![chain.clone()],
        );
        for family in Family::BOTH {
            assert!(describe_drift(Some(&desired), &desired, family).is_empty());
            assert_eq!(
                describe_drift(None, &desired, family).lines(),
                ["missing table inet meshinit"]
            );
        }
        let installed = Table::new(
            TABLE_NAME,
            vec![set("ignored_ports", KeyType::InetService, &[22, 443, 8443])],
            vec![],
        );
        assert_eq!(
            describe_drift(Some(&installed), &desired, Family::Ipv4).lines(),
            [
                "missing chain output",
                "unexpected elements of set ignored_ports: 1 missing, 2 not planned",
            ]
        );
        assert_eq!(
            describe_drift(Some(&installed), &desired, Family::Ipv6).lines(),
            [
                "missing set ignored_ipv6",
                "missing chain output",
                "unexpected elements of set ignored_ports: 1 missing, 2 not planned",
            ]
        );
    }
}
