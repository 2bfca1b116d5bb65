//! Where probes that must not leave the pod go. A probe that is not redirected would
//! otherwise reach its real destination (the metadata or credentials endpoint); instead its
//! socket carries verify's mark, and a policy rule sends marked packets to a routing table
//! whose only route leads into a veth pair with both ends inside this namespace. The SYN
//! still crosses the nat hook at OUTPUT (the rules do not look at marks or interfaces), so
//! its conntrack entry says what NAT did, and then it goes nowhere: no neighbour answers
//! on the pair, and its hop limit of 1 ends it if anything would forward it.
//!
//! Everything is named with a fixed prefix and swept at the start of the next run, so a run
//! killed with SIGKILL leaves nothing that outlives the next verify.

use std::io;

use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::rtnl::Rtnl;
use crate::ruleset::Family;

/// The mark of probe sockets that must not leave (ASCII "MSHI").
pub const PROBE_MARK: u32 = 0x4d53_4849;
/// The routing table marked packets look up.
const TABLE: u32 = 0x4d53_4849;
/// The policy rule's priority: before `main` (32766).
const RULE_PRIORITY: u32 = 19_795;
/// The veth pair's ends: the one routes lead into, and its peer.
pub const SINK_IFACE: &str = "mshi-vfy0";
pub const SINK_PEER: &str = "mshi-vfy1";

/// The installed sink; removed when dropped.
pub struct Sink {
    rtnl: Rtnl,
}

impl Sink {
    /// Sweeps what a killed run may have left, then installs the pair, the table's routes
    /// and the rules for `families`. On failure nothing of it is left.
    pub fn install(families: &[Family]) -> io::Result<Sink> {
        let mut rtnl = Rtnl::open()?;
        sweep(&mut rtnl)?;
        let mut sink = Sink { rtnl };
        sink.build(families)?;
        Ok(sink)
    }

    fn build(&mut self, families: &[Family]) -> io::Result<()> {
        // Both ends are created down: a veth cannot come up before its peer is linked to it.
        let mut link = LinkMessage::default();
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(SINK_PEER.into()));
        link.attributes
            .push(LinkAttribute::IfName(SINK_IFACE.into()));
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.rtnl.create(RouteNetlinkMessage::NewLink(link))?;
        let index = interface_index(SINK_IFACE)?;
        for name in [SINK_PEER, SINK_IFACE] {
            let mut up = LinkMessage::default();
            up.header.index = interface_index(name)?;
            up.header.flags = LinkFlags::Up;
            up.header.change_mask = LinkFlags::Up;
            self.rtnl.change(RouteNetlinkMessage::SetLink(up))?;
        }
        for family in families {
            self.rtnl
                .create(RouteNetlinkMessage::NewRoute(route(*family, index)))?;
            self.rtnl
                .create(RouteNetlinkMessage::NewRule(rule(*family)))?;
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = sweep(&mut self.rtnl);
    }
}

/// Removes the rules (both families) and the pair (its routes go with it).
fn sweep(rtnl: &mut Rtnl) -> io::Result<()> {
    for family in Family::BOTH {
        while rtnl.delete(RouteNetlinkMessage::DelRule(rule(family)))? {}
    }
    let mut link = LinkMessage::default();
    link.attributes
        .push(LinkAttribute::IfName(SINK_IFACE.into()));
    rtnl.delete(RouteNetlinkMessage::DelLink(link))?;
    Ok(())
}

fn address_family(family: Family) -> AddressFamily {
    match family {
        Family::Ipv4 => AddressFamily::Inet,
        Family::Ipv6 => AddressFamily::Inet6,
    }
}

fn rule(family: Family) -> RuleMessage {
    let mut rule = RuleMessage::default();
    rule.header.family = address_family(family);
    rule.header.action = RuleAction::ToTable;
    rule.attributes = vec![
        RuleAttribute::Priority(RULE_PRIORITY),
        RuleAttribute::FwMark(PROBE_MARK),
        RuleAttribute::FwMask(u32::MAX),
        RuleAttribute::Table(TABLE),
    ];
    rule
}

fn route(family: Family, index: u32) -> RouteMessage {
    let mut route = RouteMessage::default();
    route.header.address_family = address_family(family);
    route.header.protocol = RouteProtocol::Static;
    route.header.scope = RouteScope::Link;
    route.header.kind = RouteType::Unicast;
    route.attributes = vec![RouteAttribute::Oif(index), RouteAttribute::Table(TABLE)];
    route
}

fn interface_index(name: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name; the call only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}
