//! The DNS conntrack zones ([`crate::ruleset::zones`]) in iptables' words: two chains of
//! the `raw` table, `MESHINIT_DNS_OUT` (from OUTPUT) and `MESHINIT_DNS_PRE` (from
//! PREROUTING), each rule spelled as `iptables-save` prints it.

use super::side_chains::SideChain;
use crate::ruleset::zones::{ZoneHook, ZoneOwner, ZoneRule};

pub const DNS_ZONES_OUT: SideChain = SideChain {
    table: "raw",
    chain: "MESHINIT_DNS_OUT",
    hook: "OUTPUT",
};
pub const DNS_ZONES_PRE: SideChain = SideChain {
    table: "raw",
    chain: "MESHINIT_DNS_PRE",
    hook: "PREROUTING",
};

/// The specs of the rules at `hook`.
pub fn specs(rules: &[ZoneRule], hook: ZoneHook) -> Vec<String> {
    rules
        .iter()
        .filter(|r| r.hook == hook)
        .map(|r| {
            let mut words = Vec::new();
            if let Some(peer) = r.peer {
                let side = if hook == ZoneHook::Output { "-d" } else { "-s" };
                words.push(format!("{side} {peer}"));
            }
            words.push("-p udp".to_owned());
            if let Some(port) = r.source_port {
                words.push(format!("-m udp --sport {port}"));
            }
            if let Some(port) = r.destination_port {
                words.push(format!("-m udp --dport {port}"));
            }
            match r.owner {
                Some(ZoneOwner::Uid(uid)) => words.push(format!("-m owner --uid-owner {uid}")),
                Some(ZoneOwner::Gid(gid)) => words.push(format!("-m owner --gid-owner {gid}")),
                None => {}
            }
            words.push(format!("-j CT --zone {}", r.zone));
            words.join(" ")
        })
        .collect()
}
