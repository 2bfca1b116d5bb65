//! The DNS conntrack zones ([`crate::ruleset::zones`]) in the native table: two filter
//! chains at the `raw` priority (before conntrack), `dns_zones_output` and
//! `dns_zones_prerouting`, each rule ending in `ct zone set N`. Rules without a resolver are
//! the same for both families and written once; with IPv6 not programmed, IPv6 packets leave
//! first, as in every chain of the table.

use super::model::{
    BaseChain, Chain, ChainType, CmpOp, Expr, Hook, MetaKey, NFPROTO_IPV4, NFPROTO_IPV6,
    PayloadBase, Policy, Register, Rule,
};
use super::render::{family_check, ipv6_passes_rule};
use crate::ruleset::Ruleset;
use crate::ruleset::zones::{ZoneHook, ZoneOwner, ZoneRule};

pub const ZONES_OUTPUT_CHAIN: &str = "dns_zones_output";
pub const ZONES_PREROUTING_CHAIN: &str = "dns_zones_prerouting";
/// nft's `raw` priority: zones must be set before conntrack looks the packet up.
pub const RAW_PRIORITY: i32 = -300;
const IPPROTO_UDP: u8 = 17;

/// The zone chains, none when no family has zone rules.
pub fn zone_chains(ipv4: &Ruleset, ipv6: Option<&Ruleset>) -> Vec<Chain> {
    let mut chains = Vec::new();
    for (name, hook, zone_hook) in [
        (ZONES_OUTPUT_CHAIN, Hook::Output, ZoneHook::Output),
        (
            ZONES_PREROUTING_CHAIN,
            Hook::Prerouting,
            ZoneHook::Prerouting,
        ),
    ] {
        let mut wanted: Vec<&ZoneRule> = Vec::new();
        for rule in ipv4
            .dns_zones
            .iter()
            .chain(ipv6.iter().flat_map(|r| &r.dns_zones))
        {
            if rule.hook == zone_hook && !wanted.contains(&rule) {
                wanted.push(rule);
            }
        }
        if wanted.is_empty() {
            continue;
        }
        let mut rules = Vec::new();
        if ipv6.is_none() {
            rules.push(ipv6_passes_rule());
        }
        rules.extend(wanted.into_iter().map(zone_rule));
        chains.push(Chain {
            name: name.to_owned(),
            base: Some(BaseChain {
                chain_type: ChainType::Filter,
                hook,
                priority: RAW_PRIORITY,
                policy: Policy::Accept,
            }),
            rules,
        });
    }
    chains
}

fn zone_rule(rule: &ZoneRule) -> Rule {
    let mut exprs = Vec::new();
    if let Some(peer) = rule.peer {
        let source = rule.hook == ZoneHook::Prerouting;
        let (nfproto, offset, bytes) = match peer {
            ipnet::IpNet::V4(n) => (
                NFPROTO_IPV4,
                if source { 12 } else { 16 },
                n.addr().octets().to_vec(),
            ),
            ipnet::IpNet::V6(n) => (
                NFPROTO_IPV6,
                if source { 8 } else { 24 },
                n.addr().octets().to_vec(),
            ),
        };
        exprs.extend(family_check(nfproto));
        exprs.push(Expr::payload(
            PayloadBase::Network,
            offset,
            bytes.len() as u32,
        ));
        exprs.push(Expr::cmp(CmpOp::Eq, bytes));
    }
    exprs.push(Expr::meta(MetaKey::L4Proto));
    exprs.push(Expr::cmp(CmpOp::Eq, [IPPROTO_UDP]));
    for (offset, port) in [(0, rule.source_port), (2, rule.destination_port)] {
        if let Some(port) = port {
            exprs.push(Expr::payload(PayloadBase::Transport, offset, 2));
            exprs.push(Expr::cmp(CmpOp::Eq, port.to_be_bytes()));
        }
    }
    match rule.owner {
        Some(ZoneOwner::Uid(uid)) => {
            exprs.push(Expr::meta(MetaKey::SkUid));
            exprs.push(Expr::cmp(CmpOp::Eq, uid.to_ne_bytes()));
        }
        Some(ZoneOwner::Gid(gid)) => {
            exprs.push(Expr::meta(MetaKey::SkGid));
            exprs.push(Expr::cmp(CmpOp::Eq, gid.to_ne_bytes()));
        }
        None => {}
    }
    exprs.push(Expr::Immediate {
        dreg: Register::R1,
        data: super::model::ImmediateData::Value(rule.zone.to_ne_bytes().to_vec()),
    });
    exprs.push(ct_set_zone());
    Rule::new(exprs)
}

/// `ct zone set` from register 1 (NFTA_CT_SREG, NFTA_CT_KEY = NFT_CT_ZONE, big-endian), as
/// the kernel dumps it: the model has no `ct` expression.
fn ct_set_zone() -> Expr {
    const NFTA_CT_KEY: u16 = 2;
    const NFTA_CT_SREG: u16 = 4;
    const NFT_CT_ZONE: u32 = 17;
    let mut data = Vec::new();
    for (kind, value) in [(NFTA_CT_SREG, 1u32), (NFTA_CT_KEY, NFT_CT_ZONE)] {
        data.extend_from_slice(&8u16.to_ne_bytes());
        data.extend_from_slice(&kind.to_ne_bytes());
        data.extend_from_slice(&value.to_be_bytes());
    }
    Expr::Other {
        name: "ct".to_owned(),
        data,
    }
}
