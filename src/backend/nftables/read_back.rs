//! Reading the installed `inet meshinit` table back into the model's rule shapes, one
//! family at a time, so `explain --live` walks it with the same evaluator as the plan
//! (the inverse of [`render`](super::render) for the shapes it writes). Pure.
//!
//! Each NAT base chain is read literally, rule by rule: the chain on the output hook
//! stands for the egress chain, the one on prerouting for the ingress chain, each entered
//! unconditionally (its guards, such as `fib daddr type local return`, are rules of it
//! that return). A rule limited to the other family (`meta nfproto ipv6 ...`) never
//! matches this family's connections and is left out. `explain` asks about TCP and UDP
//! connections only, so `meta l4proto != tcp` reads as UDP. A rule in any other shape is
//! an [`UnknownRule`]: the walk cannot evaluate it and says so.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv4Subnets, Ipv6Net, Ipv6Subnets};
use nftables_netlink::model::{
    ChainType, CmpOp, Expr, FibResult, Hook, IPPROTO_TCP, ImmediateData, KeyType, MetaKey,
    NFPROTO_IPV4, NFPROTO_IPV6, PayloadBase, RTN_LOCAL, Rule, Set, Table, Verdict, fib_flags,
};
use nftables_netlink::text::rule_text;

use super::TABLE_NAME;
use crate::backend::netfilter::kernel_error;
use crate::config::{PortRange, ProxyConfig};
use crate::error::Result;
use crate::explain::{Connection, Direction, Explanation, Provenance, explain};
use crate::ruleset::{
    self, EGRESS_CHAIN, Family, INGRESS_CHAIN, IpSet, Match, Networks, OUTPUT_CHAIN,
    PREROUTING_CHAIN, Ruleset, SetMembers, SetPurpose,
};

/// Where a rule of the walked ruleset sits in the installed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeRule {
    /// The base chain (`output`, `prerouting`).
    pub chain: String,
    /// 1-based, among all rules of the chain.
    pub position: usize,
    /// The rule in nft's words.
    pub text: String,
}

/// A rule of ours the model has no shape for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRule {
    pub rule: NativeRule,
    /// The model chain it stands in (egress or ingress).
    pub model_chain: String,
}

/// One family's view of the installed table.
#[derive(Debug, Clone)]
pub struct InstalledNative {
    /// Unconditional jumps from the hooks into the chains read, then each chain's rules.
    pub ruleset: Ruleset,
    /// For each rule of `ruleset.rules`, in order, where it is installed.
    pub origins: Vec<NativeRule>,
    /// Rules the walk cannot evaluate, in table order.
    pub unknown: Vec<UnknownRule>,
}

impl InstalledNative {
    /// Where rule `position` (1-based) of model chain `chain` is installed.
    pub fn origin(&self, chain: &str, position: usize) -> Option<&NativeRule> {
        self.ruleset
            .rules
            .iter()
            .zip(&self.origins)
            .filter(|(rule, _)| rule.chain == chain)
            .nth(position.checked_sub(1)?)
            .map(|(_, origin)| origin)
    }
}

/// `table`'s NAT base chains read as `family`'s ruleset.
pub fn installed_ruleset(table: &Table, family: Family) -> InstalledNative {
    let mut read = InstalledNative {
        ruleset: Ruleset::empty(family),
        origins: Vec::new(),
        unknown: Vec::new(),
    };
    for (hook, builtin, own) in [
        (Hook::Output, OUTPUT_CHAIN, EGRESS_CHAIN),
        (Hook::Prerouting, PREROUTING_CHAIN, INGRESS_CHAIN),
    ] {
        let base = table.chains.iter().find(|c| {
            c.base
                .as_ref()
                .is_some_and(|b| b.hook == hook && b.chain_type == ChainType::Nat)
        });
        let Some(chain) = base else {
            continue;
        };
        read.ruleset.chains.push(own.to_owned());
        read.ruleset.jumps.push(ruleset::Rule::new(
            builtin,
            Vec::new(),
            ruleset::Verdict::Jump(own.to_owned()),
        ));
        for (index, rule) in chain.rules.iter().enumerate() {
            let origin = NativeRule {
                chain: chain.name.clone(),
                position: index + 1,
                text: rule_text(&without_counters(rule)),
            };
            match model_rule(rule, family, table) {
                Ok(Some((matches, verdict))) => {
                    read.ruleset
                        .rules
                        .push(ruleset::Rule::new(own, matches, verdict));
                    read.origins.push(origin);
                }
                // Never matches this family: not part of its walk.
                Ok(None) => {}
                Err(()) => read.unknown.push(UnknownRule {
                    rule: origin,
                    model_chain: own.to_owned(),
                }),
            }
        }
    }
    for rule in &read.ruleset.rules {
        for condition in &rule.matches {
            if let Match::DestinationInSet(name) = condition
                && !read.ruleset.sets.iter().any(|s| s.name == *name)
                && let Some(set) = table.set(name).and_then(|s| model_set(s, family))
            {
                read.ruleset.sets.push(set);
            }
        }
    }
    read
}

fn without_counters(rule: &Rule) -> Rule {
    Rule::new(
        rule.exprs
            .iter()
            .filter(|e| **e != Expr::Counter)
            .cloned()
            .collect(),
    )
}

/// A rule's conditions and verdict; `Ok(None)` when it cannot match `family`; `Err` when
/// it is not a shape of the model.
#[allow(clippy::result_unit_err)]
pub fn model_rule(
    rule: &Rule,
    family: Family,
    table: &Table,
) -> Result<Option<(Vec<Match>, ruleset::Verdict)>, ()> {
    let exprs: Vec<&Expr> = rule.exprs.iter().filter(|e| **e != Expr::Counter).collect();
    let mut matches = Vec::new();
    let mut never = false;
    let mut i = 0;
    let verdict = loop {
        let Some(expr) = exprs.get(i) else {
            // No verdict: a rule that only counts decides nothing.
            return Err(());
        };
        match (expr, exprs.get(i + 1), exprs.get(i + 2)) {
            (
                Expr::Immediate {
                    data: ImmediateData::Verdict(verdict),
                    ..
                },
                None,
                _,
            ) => {
                break match verdict {
                    // In a base chain, accept ends our table's say: not redirected, as
                    // a return to the hook does.
                    Verdict::Return | Verdict::Accept => ruleset::Verdict::Return,
                    _ => return Err(()),
                };
            }
            (
                Expr::Immediate {
                    data: ImmediateData::Value(port),
                    dreg,
                },
                Some(Expr::Redir {
                    reg_proto_min: Some(reg),
                    ..
                }),
                None,
            ) if reg == dreg => {
                let port: [u8; 2] = port.as_slice().try_into().map_err(|_| ())?;
                break ruleset::Verdict::Redirect(u16::from_be_bytes(port));
            }
            (Expr::Meta { key, .. }, Some(Expr::Cmp { op, data, .. }), _) => {
                i += 2;
                match key {
                    MetaKey::L4Proto => match l4proto(*op, data)? {
                        Some(Some(m)) => matches.push(m),
                        Some(None) => {}
                        None => never = true,
                    },
                    MetaKey::NfProto => {
                        let wanted = match family {
                            Family::Ipv4 => NFPROTO_IPV4,
                            Family::Ipv6 => NFPROTO_IPV6,
                        };
                        match op {
                            CmpOp::Eq => never |= data.as_slice() != [wanted],
                            CmpOp::Neq => never |= data.as_slice() == [wanted],
                            _ => return Err(()),
                        }
                    }
                    MetaKey::SkUid | MetaKey::SkGid if *op == CmpOp::Eq => {
                        let id: [u8; 4] = data.as_slice().try_into().map_err(|_| ())?;
                        let id = u32::from_ne_bytes(id);
                        matches.push(if *key == MetaKey::SkUid {
                            Match::OwnerUid(id)
                        } else {
                            Match::OwnerGid(id)
                        });
                    }
                    // iifname / oifname (NFT_META_IIFNAME, NFT_META_OIFNAME), NUL-padded.
                    MetaKey::Other(key @ (6 | 7)) if *op == CmpOp::Eq => {
                        let name = std::str::from_utf8(data)
                            .map_err(|_| ())?
                            .trim_end_matches('\0')
                            .to_owned();
                        matches.push(if *key == 6 {
                            Match::InInterface(name)
                        } else {
                            Match::OutInterface(name)
                        });
                    }
                    _ => return Err(()),
                }
            }
            (
                Expr::Fib {
                    flags,
                    result: FibResult::AddrType,
                    ..
                },
                Some(Expr::Cmp { op, data, .. }),
                _,
            ) => {
                i += 2;
                if data.as_slice() != RTN_LOCAL.to_ne_bytes() {
                    return Err(());
                }
                let local = match op {
                    CmpOp::Eq => true,
                    CmpOp::Neq => false,
                    _ => return Err(()),
                };
                matches.push(match *flags {
                    fib_flags::DADDR => Match::DestinationIsLocal(local),
                    fib_flags::SADDR => Match::SourceIsLocal(local),
                    _ => return Err(()),
                });
            }
            (
                Expr::Payload {
                    base: PayloadBase::Transport,
                    offset: 2,
                    len: 2,
                    ..
                },
                Some(next),
                _,
            ) => {
                i += 2;
                match next {
                    Expr::Cmp {
                        op: CmpOp::Eq,
                        data,
                        ..
                    } => {
                        let port: [u8; 2] = data.as_slice().try_into().map_err(|_| ())?;
                        let port = u16::from_be_bytes(port);
                        matches.push(Match::DestinationPorts(vec![PortRange::single(port)]));
                    }
                    Expr::Lookup {
                        set, invert: false, ..
                    } if table
                        .set(set)
                        .is_some_and(|s| s.key == KeyType::InetService) =>
                    {
                        matches.push(Match::DestinationInSet(set.clone()));
                    }
                    _ => return Err(()),
                }
            }
            (
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset,
                    len,
                    ..
                },
                Some(next),
                after,
            ) => {
                let (v4, full) = match offset {
                    16 => (true, 4),
                    24 => (false, 16),
                    _ => return Err(()),
                };
                let len = *len as usize;
                if len == 0 || len > full {
                    return Err(());
                }
                // A load of the other family's header never holds this family's address.
                never |= v4 != (family == Family::Ipv4);
                match (next, after) {
                    (
                        Expr::Lookup {
                            set, invert: false, ..
                        },
                        _,
                    ) if len == full => {
                        i += 2;
                        let key = if v4 {
                            KeyType::Ipv4Addr
                        } else {
                            KeyType::Ipv6Addr
                        };
                        if table.set(set).is_none_or(|s| s.key != key) {
                            return Err(());
                        }
                        matches.push(Match::DestinationInSet(set.clone()));
                    }
                    (Expr::Bitwise { mask, xor, .. }, Some(Expr::Cmp { op, data, .. })) => {
                        i += 3;
                        if *op != CmpOp::Eq || xor.iter().any(|b| *b != 0) || mask.len() != len {
                            return Err(());
                        }
                        matches.push(network(data, Some(mask), full)?);
                    }
                    (
                        Expr::Cmp {
                            op: CmpOp::Eq,
                            data,
                            ..
                        },
                        _,
                    ) => {
                        i += 2;
                        if data.len() != len {
                            return Err(());
                        }
                        matches.push(network(data, None, full)?);
                    }
                    _ => return Err(()),
                }
            }
            _ => return Err(()),
        }
    };
    Ok((!never).then_some((matches, verdict)))
}

/// `meta l4proto` compared: `Some(Some(m))` a condition, `Some(None)` true of every TCP or
/// UDP connection, `None` true of none of them.
#[allow(clippy::option_option)]
fn l4proto(op: CmpOp, data: &[u8]) -> Result<Option<Option<Match>>, ()> {
    const IPPROTO_UDP: u8 = 17;
    let [proto] = data else { return Err(()) };
    let positive = |p: u8| match p {
        IPPROTO_TCP => Some(Some(Match::Tcp)),
        IPPROTO_UDP => Some(Some(Match::Udp)),
        _ => None,
    };
    Ok(match op {
        CmpOp::Eq => positive(*proto),
        // Not TCP, for a TCP or UDP connection, is UDP (and the other way round).
        CmpOp::Neq => match *proto {
            IPPROTO_TCP => positive(IPPROTO_UDP),
            IPPROTO_UDP => positive(IPPROTO_TCP),
            _ => Some(None),
        },
        _ => return Err(()),
    })
}

/// A destination network from the compared bytes (a prefix shorter than the load is a
/// shorter load or a mask).
fn network(data: &[u8], mask: Option<&[u8]>, full: usize) -> Result<Match, ()> {
    if data.len() > full {
        return Err(());
    }
    let prefix = match mask {
        Some(mask) => {
            let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
            // Only a contiguous prefix mask is a network.
            let bits = mask.iter().fold(0u128, |n, b| (n << 8) | u128::from(*b));
            let width = 8 * mask.len() as u32;
            let expected = if ones == 0 {
                0
            } else {
                (!0u128 >> (128 - ones)) << (width - ones)
            };
            if bits != expected {
                return Err(());
            }
            ones as u8
        }
        None => 8 * data.len() as u8,
    };
    let mut octets = data.to_vec();
    octets.resize(full, 0);
    let net = if full == 4 {
        let octets: [u8; 4] = octets.try_into().map_err(|_| ())?;
        ipnet::IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(octets), prefix)
                .map_err(|_| ())?
                .trunc(),
        )
    } else {
        let octets: [u8; 16] = octets.try_into().map_err(|_| ())?;
        ipnet::IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(octets), prefix)
                .map_err(|_| ())?
                .trunc(),
        )
    };
    Ok(Match::DestinationNetwork(net))
}

/// An installed set in the model's terms (its address ranges as the networks covering
/// them exactly); `None` for a set of the other family.
fn model_set(set: &Set, family: Family) -> Option<IpSet> {
    let members = match set.key {
        KeyType::InetService => SetMembers::Ports(
            set.elements()
                .iter()
                .map(|r| PortRange {
                    first: r.first as u16,
                    last: r.last as u16,
                })
                .collect(),
        ),
        KeyType::Ipv4Addr if family == Family::Ipv4 => SetMembers::Networks(Networks::V4(
            set.elements()
                .iter()
                .flat_map(|r| {
                    Ipv4Subnets::new(
                        Ipv4Addr::from(r.first as u32),
                        Ipv4Addr::from(r.last as u32),
                        0,
                    )
                })
                .collect(),
        )),
        KeyType::Ipv6Addr if family == Family::Ipv6 => SetMembers::Networks(Networks::V6(
            set.elements()
                .iter()
                .flat_map(|r| Ipv6Subnets::new(Ipv6Addr::from(r.first), Ipv6Addr::from(r.last), 0))
                .collect(),
        )),
        _ => return None,
    };
    // The native table names its sets by purpose (render's `included_ipv4`, `ignored_ipv4`).
    let purpose = if [
        super::render::INCLUDED_IPV4_SET,
        super::render::INCLUDED_IPV6_SET,
    ]
    .contains(&set.name.as_str())
    {
        SetPurpose::Included
    } else {
        SetPurpose::Ignored
    };
    Some(IpSet {
        name: set.name.clone(),
        family,
        purpose,
        members,
    })
}

/// What the installed native table decides for `connection`: its NAT chains read back
/// into the model's rules and walked like the plan, the deciding rule named as installed
/// (its base chain, position and nft words). Also the rules the walk could not evaluate
/// that come before the decision (so the answer holds only if they do not match); `None`
/// when there is no table.
pub fn explain_installed(
    config: &ProxyConfig,
    provenance: &Provenance<'_>,
    connection: &Connection,
) -> Result<(Option<Explanation>, Vec<String>)> {
    let table = nftables_netlink::NftConnection::open()
        .and_then(|mut c| c.read_table(TABLE_NAME))
        .map_err(kernel_error)?
        .table;
    let Some(table) = table else {
        return Ok((None, Vec::new()));
    };
    let read = installed_ruleset(&table, connection.family());
    let mut answer = explain(config, Some(&read.ruleset), provenance, connection);
    // The walk reached this rule of the installed chain (or its end, with no decision).
    let mut reached: Option<(String, usize)> = None;
    if let Some(decided) = answer.decided_by.as_mut()
        && let Some(origin) = read.origin(&decided.chain, decided.position)
    {
        decided.chain = origin.chain.clone();
        decided.position = origin.position;
        decided.rule = origin.text.clone();
        reached = Some((origin.chain.clone(), origin.position));
    }
    let not_followed = read
        .unknown
        .iter()
        .filter(|u| {
            let falls_off = answer.decided_by.as_ref().is_none_or(|d| !d.matched);
            match &reached {
                Some((chain, position)) if *chain == u.rule.chain => {
                    u.rule.position < *position || falls_off
                }
                // The walk went through this chain only if it is the connection's.
                _ => {
                    u.model_chain
                        == match connection.direction {
                            Direction::Out => crate::ruleset::EGRESS_CHAIN,
                            Direction::In => crate::ruleset::INGRESS_CHAIN,
                        }
                }
            }
        })
        .map(|u| {
            format!(
                "rule {} of chain {} ({}), before the decision: the answer holds only if it \
                 does not match this connection",
                u.rule.position, u.rule.chain, u.rule.text
            )
        })
        .collect();
    Ok((Some(answer), not_followed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::nftables::{counters, render_table};
    use crate::config::{RawSettings, validate};
    use crate::ruleset::plan;

    fn config() -> crate::config::ProxyConfig {
        validate(&config_raw()).unwrap().0
    }

    fn config_raw() -> RawSettings {
        use crate::config::settings::Property::*;
        RawSettings::default()
            .with(IgnoredUid, "IgnoredUID", "1337")
            .with(IgnoredGid, "IgnoredGID", "1338")
            .with(ProxyEgressPort, "ProxyEgressPort", "15001")
            .with(ProxyIngressPort, "ProxyIngressPort", "15000")
            .with(AppPorts, "AppPorts", "9080,9443")
            .with(EgressIgnoredPorts, "EgressIgnoredPorts", "5015,6000-6010")
            .with(
                EgressIgnoredIps,
                "EgressIgnoredIPs",
                "203.0.113.128/25,10.1.2.3,2001:db8::/32",
            )
    }

    #[test]
    fn every_rule_of_the_rendered_table_reads_back_into_a_model_shape() {
        let options = crate::backend::by_kind(crate::backend::BackendKind::Nftables).plan_options();
        let (v4, v6) = (
            plan(&config(), Family::Ipv4, options),
            plan(&config(), Family::Ipv6, options),
        );
        let table = counters::counted(render_table(&v4, Some(&v6)));
        for family in [Family::Ipv4, Family::Ipv6] {
            let read = installed_ruleset(&table, family);
            assert!(read.unknown.is_empty(), "{family}: {:?}", read.unknown);
            assert_eq!(read.ruleset.rules.len(), read.origins.len());
            // Each family's egress rules: the guards, then the plan's own rules in order.
            let egress: Vec<String> = read
                .ruleset
                .rules
                .iter()
                .filter(|r| r.chain == EGRESS_CHAIN)
                .map(ToString::to_string)
                .collect();
            let set = if family == Family::Ipv4 {
                "ignored_ipv4"
            } else {
                "ignored_ipv6"
            };
            assert_eq!(
                egress,
                [
                    "APPMESH_EGRESS: udp => return".to_owned(),
                    "APPMESH_EGRESS: daddr-local=true => return".to_owned(),
                    "APPMESH_EGRESS: uid=1337 => return".to_owned(),
                    "APPMESH_EGRESS: gid=1338 => return".to_owned(),
                    "APPMESH_EGRESS: tcp dst@ignored_ports => return".to_owned(),
                    format!("APPMESH_EGRESS: dst@{set} => return"),
                    "APPMESH_EGRESS: tcp => redirect :15001".to_owned(),
                ],
                "{family}"
            );
        }
        let read = installed_ruleset(&table, Family::Ipv4);
        let ignored = read
            .ruleset
            .sets
            .iter()
            .find(|s| s.name == "ignored_ipv4")
            .unwrap();
        let SetMembers::Networks(Networks::V4(nets)) = &ignored.members else {
            panic!("{ignored:?}")
        };
        let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert!(nets.contains(&"203.0.113.128/25".to_owned()), "{nets:?}");
        assert!(nets.contains(&"10.1.2.3/32".to_owned()), "{nets:?}");
        assert_eq!(
            read.origin(EGRESS_CHAIN, 7).unwrap().text,
            "meta l4proto tcp redirect to :15001"
        );
    }

    /// The read-back table decides every connection of a grid as the plan it was rendered
    /// from does, for configurations using each feature the native table renders.
    #[test]
    fn the_rendered_table_read_back_decides_as_the_plan() {
        use crate::explain::{Connection, Direction, Protocol, Provenance, explain};
        let base = config_raw();
        use crate::config::settings::Property::*;
        let variants = [
            base.clone(),
            base.clone().with(Ipv6, "APPMESH_ENABLE_IPV6", "0"),
            base.clone()
                .with(AppPorts, "--app-ports", "*")
                .with(
                    IngressIgnoredPorts,
                    "--ingress-ignored-ports",
                    "22,9000-9100",
                )
                .with(IgnoredInterfaces, "--ignored-interfaces", "eth1")
                .with(
                    EgressIncludedIps,
                    "--egress-included-ips",
                    "203.0.113.0/24,2001:db8:ff::/48",
                ),
            // Empty lists add nothing; an empty scalar is unset.
            base.with(EgressIgnoredPorts, "EgressIgnoredPorts", "")
                .with(EgressIgnoredIps, "EgressIgnoredIPs", "")
                .with(IgnoredGid, "IgnoredGID", "")
                .with(AppPorts, "AppPorts", "9080"),
        ];
        let options = crate::backend::by_kind(crate::backend::BackendKind::Nftables).plan_options();
        let mut compared = 0;
        for raw in &variants {
            let config = validate(raw).unwrap().0;
            let provenance = Provenance::new(raw, None);
            let (v4, v6) = (
                plan(&config, Family::Ipv4, options),
                plan(&config, Family::Ipv6, options),
            );
            let table = counters::counted(render_table(&v4, Some(&v6)));
            for family in [Family::Ipv4, Family::Ipv6] {
                let read = installed_ruleset(&table, family);
                assert!(read.unknown.is_empty(), "{raw:?}: {:?}", read.unknown);
                let planned = if family == Family::Ipv4 { &v4 } else { &v6 };
                let planned = (!planned.chains.is_empty()).then_some(planned);
                let addresses: &[&str] = match family {
                    Family::Ipv4 => &[
                        "203.0.113.7",
                        "203.0.113.200",
                        "10.1.2.3",
                        "169.254.169.254",
                        "127.0.0.1",
                        "198.51.100.1",
                    ],
                    Family::Ipv6 => &["2001:db8:ff::7", "2001:db8::1", "fd00:ec2::254", "::1"],
                };
                for address in addresses {
                    for port in [22, 80, 5015, 6005, 9050, 9080, 9443, 15000] {
                        for direction in [Direction::Out, Direction::In] {
                            for protocol in [Protocol::Tcp, Protocol::Udp] {
                                for (uid, gid) in
                                    [(Some(1000), None), (Some(1337), None), (None, Some(1338))]
                                {
                                    for local in [false, true] {
                                        for interface in [None, Some("eth1".to_owned())] {
                                            let connection = Connection {
                                                direction,
                                                protocol,
                                                destination: std::net::SocketAddr::new(
                                                    address.parse().unwrap(),
                                                    port,
                                                ),
                                                uid: uid.filter(|_| direction == Direction::Out),
                                                gid: gid.filter(|_| direction == Direction::Out),
                                                local,
                                                interface,
                                            };
                                            let from_plan =
                                                explain(&config, planned, &provenance, &connection);
                                            let from_table = explain(
                                                &config,
                                                Some(&read.ruleset),
                                                &provenance,
                                                &connection,
                                            );
                                            assert_eq!(
                                                from_plan.redirected_to(),
                                                from_table.redirected_to(),
                                                "{raw:?}\n{connection:?}\nplan: {}\ntable: {}",
                                                from_plan.reason,
                                                from_table.reason
                                            );
                                            compared += 1;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(compared > 10_000, "{compared}");
    }

    #[test]
    fn shapes_meshinit_never_writes_are_unknown_and_other_families_rules_are_left_out() {
        let table = Table::new(
            "meshinit",
            Vec::new(),
            vec![nftables_netlink::model::Chain {
                name: "output".into(),
                base: Some(nftables_netlink::model::BaseChain {
                    chain_type: ChainType::Nat,
                    hook: Hook::Output,
                    priority: -100,
                    policy: nftables_netlink::model::Policy::Accept,
                }),
                rules: vec![
                    Rule::new(vec![Expr::meta(MetaKey::SkUid), Expr::Counter]),
                    Rule::new(vec![
                        Expr::meta(MetaKey::NfProto),
                        Expr::cmp(CmpOp::Eq, [NFPROTO_IPV6]),
                        Expr::verdict(Verdict::Return),
                    ]),
                    Rule::new(vec![
                        Expr::payload(PayloadBase::Network, 16, 1),
                        Expr::cmp(CmpOp::Eq, [10]),
                        Expr::verdict(Verdict::Drop),
                    ]),
                    Rule::new(vec![
                        Expr::meta(MetaKey::NfProto),
                        Expr::cmp(CmpOp::Eq, [NFPROTO_IPV4]),
                        Expr::payload(PayloadBase::Network, 16, 1),
                        Expr::cmp(CmpOp::Eq, [10]),
                        Expr::verdict(Verdict::Return),
                    ]),
                ],
            }],
        );
        let read = installed_ruleset(&table, Family::Ipv4);
        let unknown: Vec<usize> = read.unknown.iter().map(|u| u.rule.position).collect();
        assert_eq!(unknown, [1, 3]);
        let walked: Vec<String> = read.ruleset.rules.iter().map(ToString::to_string).collect();
        assert_eq!(walked, ["APPMESH_EGRESS: daddr=10.0.0.0/8 => return"]);
        assert_eq!(read.origins[0].position, 4);
        let read = installed_ruleset(&table, Family::Ipv6);
        let walked: Vec<String> = read.ruleset.rules.iter().map(ToString::to_string).collect();
        assert_eq!(walked, ["APPMESH_EGRESS: => return"]);
    }
}
