//! Conntrack zones for DNS capture, as Istio learned to use them (istio/istio#33469): the
//! app's UDP flows to a resolver (redirected to the proxy) and the proxy's own flows to the
//! real resolver can share a 4-tuple when the proxy forwards from the app's source port; in
//! one zone the proxy's query would be taken for the app's flow and redirected back to the
//! proxy, and the resolver's answer would never reach it. So, before conntrack sees them:
//!
//! - out: the proxy's queries to port 53 go to zone 1, its answers from the DNS port
//!   (`sport DNS port`) to zone 2, and everyone else's queries (the app's) to zone 2;
//! - in: answers from port 53 go to zone 1 (the proxy's upstream flows).
//!
//! The first zone set on a packet wins (a packet that has one is skipped), so the proxy's
//! rules come first. With `dnsCapture: resolv.conf` the app and inbound rules name the
//! resolvers.

use ipnet::IpNet;

use super::Family;
use crate::config::mesh::{DNS_PORT, DnsCapture, DnsScope};

/// Zone of the proxy's flows to the real resolvers.
pub const UPSTREAM_ZONE: u16 = 1;
/// Zone of the app's flows to the proxy's DNS listener.
pub const APP_ZONE: u16 = 2;

/// Where a zone rule sits: before conntrack for local packets, or for arriving ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneHook {
    Output,
    Prerouting,
}

/// Whose packets: the socket's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneOwner {
    Uid(u32),
    Gid(u32),
}

/// One UDP rule that puts matching packets into `zone`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneRule {
    pub hook: ZoneHook,
    pub owner: Option<ZoneOwner>,
    /// `Some(port)`: the destination port; see `source_port`.
    pub destination_port: Option<u16>,
    pub source_port: Option<u16>,
    /// The resolver: the destination (out) or the source (in).
    pub peer: Option<IpNet>,
    pub zone: u16,
}

/// The zone rules of one family, in order.
pub fn plan_zones(dns: &DnsCapture, owners: &[ZoneOwner], family: Family) -> Vec<ZoneRule> {
    let rule = |hook, owner, dport, sport, peer, zone| ZoneRule {
        hook,
        owner,
        destination_port: dport,
        source_port: sport,
        peer,
        zone,
    };
    let mut rules = Vec::new();
    for owner in owners {
        rules.push(rule(
            ZoneHook::Output,
            Some(*owner),
            Some(DNS_PORT),
            None,
            None,
            UPSTREAM_ZONE,
        ));
        rules.push(rule(
            ZoneHook::Output,
            Some(*owner),
            None,
            Some(dns.proxy_port),
            None,
            APP_ZONE,
        ));
    }
    let peers: Vec<Option<IpNet>> = match dns.scope {
        DnsScope::All => vec![None],
        DnsScope::ResolvConf => dns
            .resolvers
            .iter()
            .filter(|a| a.is_ipv4() == (family == Family::Ipv4))
            .map(|a| Some(IpNet::from(*a)))
            .collect(),
    };
    for peer in peers {
        rules.push(rule(
            ZoneHook::Output,
            None,
            Some(DNS_PORT),
            None,
            peer,
            APP_ZONE,
        ));
        rules.push(rule(
            ZoneHook::Prerouting,
            None,
            None,
            Some(DNS_PORT),
            peer,
            UPSTREAM_ZONE,
        ));
    }
    rules
}
