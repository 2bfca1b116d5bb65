//! The model in iptables' words: each rule exactly as `iptables-save` prints it, so what is
//! sent and what is read back are the same text, and whole payloads for `iptables-restore`.

use std::fmt::Write;

pub use crate::ruleset::spelling::{line, spec};
use crate::ruleset::{EGRESS_CHAIN, Family, INGRESS_CHAIN, PlanOptions, Ruleset};

/// How the model plans for iptables: one `multiport` match holds 15 slots (the kernel's
/// `XT_MULTI_PORTS`), and lists longer than a few rules move into ipsets. Measured in
/// BENCHMARKS.md: a few dozen RETURN rules cost nothing noticeable; beyond that the
/// per-connection walk grows linearly.
pub const PLAN_OPTIONS: PlanOptions = PlanOptions {
    max_listed_networks: 32,
    max_port_rules: 4,
    port_list_slots: Some(crate::config::ports::MULTIPORT_SLOTS),
};

/// The payload for `iptables-restore --noflush` (or `ip6tables-restore`) into a namespace
/// that holds none of our rules yet: what `render` prints.
pub fn render_restore(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    let tool = match ruleset.family {
        Family::Ipv4 => "iptables-restore",
        Family::Ipv6 => "ip6tables-restore",
    };
    let _ = writeln!(
        out,
        "# meshinit {} NAT rules, for {tool} --noflush",
        ruleset.family
    );
    for set in &ruleset.sets {
        let _ = writeln!(
            out,
            "# needs ipset {} ({} members): see `meshinit render --sets`",
            set.name,
            set.members.len()
        );
    }
    out.push_str("*nat\n");
    for chain in &ruleset.chains {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for rule in ruleset.rules.iter().chain(&ruleset.jumps) {
        let _ = writeln!(out, "{}", line(rule));
    }
    out.push_str("COMMIT\n");
    out
}

/// The payload `apply` sends to a namespace believed to hold none of our chains, or `None`
/// when the ruleset does not create both `APPMESH_INGRESS` and `APPMESH_EGRESS`. `-N` fails
/// when the chain exists, which aborts the whole transaction, so rules of ours or of the AWS
/// tools under either name are never left beside the new ones; without our chains there can
/// be no jump into them. (Guarding a chain the ruleset does not want would need `-X` in the
/// same transaction, which costs iptables-nft more than reading the table first.)
pub fn fresh_install_payload(ruleset: &Ruleset) -> Option<String> {
    let guarded = [INGRESS_CHAIN, EGRESS_CHAIN];
    if !guarded
        .iter()
        .all(|g| ruleset.chains.iter().any(|c| c == g))
    {
        return None;
    }
    let mut out = String::from("*nat\n");
    for chain in &ruleset.chains {
        let _ = writeln!(out, "-N {chain}");
    }
    for rule in ruleset.rules.iter().chain(&ruleset.jumps) {
        let _ = writeln!(out, "{}", line(rule));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{Match, Rule, Verdict};

    #[test]
    fn fresh_payload_guards_both_chains_or_is_not_offered() {
        let mut ruleset = Ruleset::empty(Family::Ipv4);
        ruleset.chains = vec![EGRESS_CHAIN.into()];
        ruleset.rules = vec![Rule::new(
            EGRESS_CHAIN,
            vec![Match::Tcp],
            Verdict::Redirect(15001),
        )];
        assert_eq!(
            fresh_install_payload(&ruleset),
            None,
            "egress only cannot guard ingress"
        );
        ruleset.chains.insert(0, INGRESS_CHAIN.into());
        let payload = fresh_install_payload(&ruleset).unwrap();
        assert!(
            payload.starts_with("*nat\n-N APPMESH_INGRESS\n-N APPMESH_EGRESS\n"),
            "{payload}"
        );
        assert!(
            payload.ends_with("-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n")
        );
    }
}
