//! The backends every traffic test runs with, and what each holds of ours, read with the
//! backend's own program (never meshinit's reader): `nft` for the native table, the
//! `*-save` programs for the iptables ones.

use super::{TestNetns, legacy_nat_state, lines_naming, nat_state};

/// Every backend, by its `--backend` name: the native one first.
pub const BACKENDS: [&str; 3] = ["nftables", "iptables-nft", "iptables-legacy"];

/// `--backend NAME` appended to `args`.
pub fn with_backend<'a>(args: &[&'a str], backend: &'a str) -> Vec<&'a str> {
    args.iter().copied().chain(["--backend", backend]).collect()
}

/// What of ours `backend` holds in `ns`: `nft list table inet meshinit` for the native
/// backend, the lines of both families' nat tables naming `APPMESH` for the iptables ones;
/// "" when it holds nothing. A failing read fails the test: it never reads as "nothing".
pub fn our_rules(ns: &TestNetns, backend: &str) -> String {
    match backend {
        "nftables" => {
            let tables = ns.run_checked("nft", &["list", "tables"]);
            if tables.lines().any(|l| l.trim() == "table inet meshinit") {
                ns.run_checked("nft", &["list", "table", "inet", "meshinit"])
            } else {
                String::new()
            }
        }
        "iptables-nft" => lines_naming(&nat_state(ns, "nft"), "APPMESH").concat(),
        // Only when the legacy tables exist: reading them would create them.
        "iptables-legacy" => lines_naming(&legacy_nat_state(ns), "APPMESH").concat(),
        other => panic!("no backend {other}"),
    }
}

/// What of ours every backend holds in `ns` (each read with its own program), headed by
/// the backend's name; "" when none holds anything.
pub fn ours_anywhere(ns: &TestNetns) -> String {
    BACKENDS
        .iter()
        .map(|backend| match our_rules(ns, backend) {
            rules if rules.is_empty() => String::new(),
            rules => format!("## {backend}\n{rules}"),
        })
        .collect()
}

/// Asserts that `backend` holds our rules in `ns` (for the iptables ones, a redirect to
/// `egress_port` in each family; for the native one, in its one table) and that no other backend holds any.
#[track_caller]
pub fn assert_only_backend_holds_ours(ns: &TestNetns, backend: &str, egress_port: u16) {
    for other in BACKENDS {
        let rules = our_rules(ns, other);
        if other != backend {
            assert!(
                rules.is_empty(),
                "{other} holds rules of ours beside {backend}:\n{rules}"
            );
        } else if backend == "nftables" {
            assert!(
                rules.contains(&format!("redirect to :{egress_port}")),
                "{backend}: no redirect to :{egress_port} in\n{rules}"
            );
        } else {
            // One redirect per family.
            assert!(
                rules.matches(&format!("--to-ports {egress_port}")).count() >= 2,
                "{backend}: no redirect to {egress_port} in both families:\n{rules}"
            );
        }
    }
}

/// `nft list` text without the `counter packets N bytes M` meshinit puts in every rule.
pub fn without_counters(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let mut kept = Vec::new();
        let mut i = 0;
        while i < words.len() {
            if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
                i += 5;
                continue;
            }
            kept.push(words[i]);
            i += 1;
        }
        out.push_str(&kept.join(" "));
        out.push('\n');
    }
    out
}
