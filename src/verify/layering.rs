//! Keeps verify a straight pipeline: each module may import only the modules listed before
//! it (`check` is the vocabulary every stage shares), so no stage reaches back into a later
//! one and no two modules import each other.

/// The modules in pipeline order, with their source.
const ORDER: [(&str, &str); 13] = [
    ("check", include_str!("check.rs")),
    ("route", include_str!("route.rs")),
    ("rtnl", include_str!("rtnl.rs")),
    ("scope", include_str!("scope.rs")),
    ("selection", include_str!("selection.rs")),
    ("plan", include_str!("plan.rs")),
    ("sink", include_str!("sink.rs")),
    ("probe", include_str!("probe.rs")),
    ("dns_probe", include_str!("dns_probe.rs")),
    ("inbound", include_str!("inbound.rs")),
    ("rule_inspection", include_str!("rule_inspection.rs")),
    ("judging", include_str!("judging.rs")),
    ("report", include_str!("report.rs")),
];

/// The sibling modules `source` imports outside its tests.
fn imports(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    let mut found = Vec::new();
    for prefix in ["super::", "crate::verify::"] {
        for (at, _) in code.match_indices(prefix) {
            let name: String = code[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn every_verify_module_imports_only_earlier_stages() {
    for (position, (module, source)) in ORDER.iter().enumerate() {
        for imported in imports(source) {
            let earlier = ORDER[..position].iter().any(|(name, _)| *name == imported);
            assert!(
                earlier,
                "verify/{module}.rs imports `{imported}`, which is not an earlier stage \
                 (order: {:?})",
                ORDER.map(|(name, _)| name)
            );
        }
    }
}

#[test]
fn the_layering_check_sees_imports() {
    assert_eq!(
        imports(
            "use super::check::Status;\nuse super::scope::{self, Scope};\n#[cfg(test)]\nuse super::report;"
        ),
        vec!["check".to_owned(), "scope".to_owned()]
    );
}
