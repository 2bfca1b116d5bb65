//! `iptables-restore` text for a fresh namespace (what `render` prints).

use std::fmt::Write;

use super::Ruleset;

/// The payload for `iptables-restore --noflush` (or `ip6tables-restore`) into a namespace
/// that holds none of our rules yet; `apply` instead reconciles against what is installed.
pub fn render_restore(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    let tool = match ruleset.family {
        super::Family::Ipv4 => "iptables-restore",
        super::Family::Ipv6 => "ip6tables-restore",
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
        let _ = writeln!(out, "{rule}");
    }
    out.push_str("COMMIT\n");
    out
}
