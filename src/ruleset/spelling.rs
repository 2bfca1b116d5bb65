//! A planned rule in `iptables-save`'s words: the plan's one canonical text. The iptables
//! backends send and read back exactly this; `render` prints it; `explain` and
//! `status --counters` name rules by it whatever the backend (the native table is rendered
//! from the same plan). It lives in the model, not in `backend/`, so that the explanation
//! (pure) never imports a backend.

use super::{Match, Rule, Verdict};

/// The rule's spec after `-A CHAIN`, in `iptables-save`'s canonical order: the address
/// first, then the protocol, then each module match in the rule's order, then the target.
pub fn spec(rule: &Rule) -> String {
    let mut words: Vec<String> = Vec::new();
    for m in &rule.matches {
        if let Match::DestinationNetwork(net) = m {
            words.push(format!("-d {net}"));
        }
    }
    for m in &rule.matches {
        match m {
            Match::InInterface(name) => words.push(format!("-i {name}")),
            Match::OutInterface(name) => words.push(format!("-o {name}")),
            _ => {}
        }
    }
    if rule.matches.contains(&Match::Tcp) {
        words.push("-p tcp".into());
    }
    if rule.matches.contains(&Match::Udp) {
        words.push("-p udp".into());
    }
    for m in &rule.matches {
        match m {
            Match::Tcp
            | Match::Udp
            | Match::DestinationNetwork(_)
            | Match::InInterface(_)
            | Match::OutInterface(_) => {}
            Match::OwnerUid(uid) => words.push(format!("-m owner --uid-owner {uid}")),
            Match::OwnerGid(gid) => words.push(format!("-m owner --gid-owner {gid}")),
            Match::DestinationPorts(ports) => {
                let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
                words.push(format!("-m multiport --dports {}", ports.join(",")));
            }
            Match::DestinationInSet(set) => words.push(format!("-m set --match-set {set} dst")),
            Match::DestinationIsLocal(local) => {
                words.push(format!("-m addrtype {}--dst-type LOCAL", negation(*local)));
            }
            Match::SourceIsLocal(local) => {
                words.push(format!("-m addrtype {}--src-type LOCAL", negation(*local)));
            }
        }
    }
    words.push(match &rule.verdict {
        Verdict::Return => "-j RETURN".into(),
        Verdict::Redirect(port) => format!("-j REDIRECT --to-ports {port}"),
        Verdict::Jump(chain) => format!("-j {chain}"),
    });
    words.join(" ")
}

fn negation(local: bool) -> &'static str {
    if local { "" } else { "! " }
}

/// `-A CHAIN SPEC`.
pub fn line(rule: &Rule) -> String {
    format!("-A {} {}", rule.chain, spec(rule))
}
