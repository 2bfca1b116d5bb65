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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
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
/// The inner end's MAC (locally administered), so inbound frames can be addressed to it.
pub const INNER_MAC: [u8; 6] = [0x02, 0x6d, 0x73, 0x68, 0x69, 0x30];
/// Addresses of the inner end that inbound probes are sent to (benchmarking and
/// documentation ranges, RFC 2544 and RFC 3849, never a real pod's peer), and the stand-in
/// client they come from; replies to the client are routed back into the pair.
pub const INNER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 1);
pub const INBOUND_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 2);
pub const INNER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x6d73, 0, 0, 0, 0, 1);
pub const INBOUND_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x6d73, 0, 0, 0, 0, 2);

/// Where inbound probes go, once the sink is installed.
#[derive(Debug)]
pub struct SinkAddresses {
    pub inner_v4: Ipv4Addr,
    pub inner_v6: Ipv6Addr,
    /// The outer end, where inbound frames are written.
    pub outer_index: u32,
    /// The one packet socket inbound frames are written with (closing a packet socket
    /// waits for an RCU grace period, so there is one per run, closed beside the pair's
    /// removal).
    pub packets: Option<std::os::fd::OwnedFd>,
}

/// The installed sink; removed when dropped.
pub struct Sink {
    rtnl: Rtnl,
    pub addresses: SinkAddresses,
}

impl Sink {
    /// The part that needs no family and no rules (so `apply --verify` makes it while the
    /// rules are being programmed): sweeps what a killed run may have left, makes the pair
    /// and its packet socket. On failure nothing of it is left.
    pub fn create() -> io::Result<Sink> {
        let mut rtnl = Rtnl::open()?;
        sweep(&mut rtnl)?;
        let mut sink = Sink {
            rtnl,
            addresses: SinkAddresses {
                inner_v4: INNER_V4,
                inner_v6: INNER_V6,
                outer_index: 0,
                packets: None,
            },
        };
        // Dropping `sink` on an error sweeps whatever part was made.
        sink.build_link()?;
        sink.addresses.outer_index = interface_index(SINK_PEER)?;
        sink.addresses.packets = packet_socket().ok();
        Ok(sink)
    }

    fn build_link(&mut self) -> io::Result<()> {
        // Both ends are created down: a veth cannot come up before its peer is linked to it.
        let mut link = LinkMessage::default();
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(SINK_PEER.into()));
        link.attributes
            .push(LinkAttribute::IfName(SINK_IFACE.into()));
        link.attributes
            .push(LinkAttribute::Address(INNER_MAC.to_vec()));
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.rtnl.create(RouteNetlinkMessage::NewLink(link))?;
        for name in [SINK_PEER, SINK_IFACE] {
            let mut up = LinkMessage::default();
            up.header.index = interface_index(name)?;
            up.header.flags = LinkFlags::Up;
            up.header.change_mask = LinkFlags::Up;
            self.rtnl.change(RouteNetlinkMessage::SetLink(up))?;
        }
        Ok(())
    }

    /// The inner address, the table's route and the rules of each of `families`. On
    /// failure the sink is still removed whole when dropped.
    pub fn add_families(&mut self, families: &[Family]) -> io::Result<()> {
        let index = interface_index(SINK_IFACE)?;
        for family in families {
            self.rtnl
                .create(RouteNetlinkMessage::NewAddress(address(*family, index)))?;
            self.rtnl
                .create(RouteNetlinkMessage::NewRoute(route(*family, index)))?;
            self.rtnl
                .create(RouteNetlinkMessage::NewRule(rule(*family)))?;
            self.rtnl
                .create(RouteNetlinkMessage::NewRule(client_rule(*family)))?;
        }
        Ok(())
    }
}

/// Whether an earlier run's pair is still here: it is made before any probe and removed
/// after every probe's conntrack entry, so it marks a run killed in between.
pub fn left_by_a_killed_run() -> bool {
    interface_index(SINK_IFACE).is_ok()
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Both wait for a grace period; side by side they share it.
        let packets = self.addresses.packets.take();
        std::thread::scope(|scope| {
            if let Some(packets) = packets {
                let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(packets));
            }
            let _ = sweep(&mut self.rtnl);
        });
    }
}

/// Removes the rules (both families) and the pair (its routes go with it).
fn sweep(rtnl: &mut Rtnl) -> io::Result<()> {
    for family in Family::BOTH {
        while rtnl.delete(RouteNetlinkMessage::DelRule(rule(family)))? {}
        while rtnl.delete(RouteNetlinkMessage::DelRule(client_rule(family)))? {}
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

/// Replies to the inbound stand-in client go into the pair too.
fn client_rule(family: Family) -> RuleMessage {
    let mut rule = RuleMessage::default();
    rule.header.family = address_family(family);
    rule.header.action = RuleAction::ToTable;
    let (client, len): (IpAddr, u8) = match family {
        Family::Ipv4 => (INBOUND_CLIENT_V4.into(), 32),
        Family::Ipv6 => (INBOUND_CLIENT_V6.into(), 128),
    };
    rule.header.dst_len = len;
    rule.attributes = vec![
        RuleAttribute::Priority(RULE_PRIORITY),
        RuleAttribute::Destination(client),
        RuleAttribute::Table(TABLE),
    ];
    rule
}

fn address(family: Family, index: u32) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = address_family(family);
    message.header.index = index;
    let (ip, len): (IpAddr, u8) = match family {
        Family::Ipv4 => (INNER_V4.into(), 32),
        Family::Ipv6 => (INNER_V6.into(), 128),
    };
    message.header.prefix_len = len;
    if family == Family::Ipv6 {
        message.header.flags = AddressHeaderFlags::Nodad;
    }
    message.attributes = vec![AddressAttribute::Local(ip), AddressAttribute::Address(ip)];
    message
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

/// A packet socket that only sends (protocol 0: it receives nothing).
pub fn packet_socket() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned only here.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
