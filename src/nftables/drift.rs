//! What differs between the installed table and the desired one, in words for `status`.

use super::model::{Set, Table};

/// One line per difference; empty when the tables are equal.
pub fn describe_drift(installed: Option<&Table>, desired: &Table) -> Vec<String> {
    let Some(installed) = installed else {
        return vec![format!("table inet {} is absent", desired.name)];
    };
    let mut lines = Vec::new();
    for set in &desired.sets {
        match installed.set(&set.name) {
            None => lines.push(format!("set {} is missing", set.name)),
            Some(found) if found != set => lines.push(set_drift(found, set)),
            Some(_) => {}
        }
    }
    for set in &installed.sets {
        if desired.set(&set.name).is_none() {
            lines.push(format!("set {} is not ours", set.name));
        }
    }
    for chain in &desired.chains {
        match installed.chain(&chain.name) {
            None => lines.push(format!("chain {} is missing", chain.name)),
            Some(found) if found.base != chain.base => {
                lines.push(format!("chain {} hooks differently", chain.name))
            }
            Some(found) if found.rules != chain.rules => {
                let first = found
                    .rules
                    .iter()
                    .zip(&chain.rules)
                    .position(|(a, b)| a != b)
                    .unwrap_or(found.rules.len().min(chain.rules.len()));
                lines.push(format!(
                    "chain {}: {} rules installed, {} wanted, first difference at rule {}",
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
            lines.push(format!("chain {} is not ours", chain.name));
        }
    }
    lines
}

fn set_drift(found: &Set, wanted: &Set) -> String {
    if found.key != wanted.key || found.interval != wanted.interval {
        return format!(
            "set {} has type {:?}{}, wanted {:?}{}",
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
        "set {}: {missing} elements missing, {extra} not wanted",
        wanted.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::model::{Chain, KeyRange, KeyType, TABLE_NAME};

    #[test]
    fn equal_tables_have_no_drift_and_differences_are_named() {
        let set = |keys: &[u128]| {
            Set::new(
                "ignored_ports",
                KeyType::InetService,
                keys.iter().map(|k| KeyRange::single(*k)),
            )
        };
        let chain = Chain {
            name: "output".into(),
            base: None,
            rules: Vec::new(),
        };
        let desired = Table::new(TABLE_NAME, vec![set(&[22, 80])], vec![chain.clone()]);
        assert!(describe_drift(Some(&desired), &desired).is_empty());
        assert_eq!(
            describe_drift(None, &desired),
            ["table inet meshinit is absent"]
        );
        let installed = Table::new(TABLE_NAME, vec![set(&[22, 443, 8443])], vec![]);
        assert_eq!(
            describe_drift(Some(&installed), &desired),
            [
                "set ignored_ports: 1 elements missing, 2 not wanted",
                "chain output is missing"
            ]
        );
    }
}
