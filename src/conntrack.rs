//! Reading and deleting single conntrack entries over ctnetlink (a NETLINK_NETFILTER
//! socket; `CAP_NET_ADMIN` in the namespace is all it needs). Verify uses it to see what
//! NAT did to a probe the moment its first packet has crossed the nat hook: an entry's
//! reply tuple says where the answer would come from, so a REDIRECT shows as a reply
//! source rewritten to the proxy's port.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Status, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_NETFILTER};

/// A reply to one request arrives at once; this only bounds a kernel that never answers.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
const RECV_BUFFER: usize = 64 * 1024;

/// The attribute that names a conntrack zone (`CTA_ZONE`, a big-endian u16); the crate
/// has no variant for it.
const CTA_ZONE: u16 = 18;

/// One direction of a TCP connection as conntrack records it (its endpoints; a [`Flow`]
/// adds the transport and zone for other lookups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTuple {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// The transport protocol of a [`Flow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn protocol(self) -> Protocol {
        match self {
            Transport::Tcp => Protocol::Tcp,
            Transport::Udp => Protocol::Udp,
        }
    }
}

/// A flow's original direction, its transport and the conntrack zone it lives in (0, the
/// default, unless a `ct zone set` / `CT --zone` rule put it elsewhere: DNS capture does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub transport: Transport,
    pub endpoints: TcpTuple,
    pub zone: u16,
}

impl Flow {
    /// A TCP flow in the default zone.
    pub fn tcp(endpoints: TcpTuple) -> Flow {
        Flow {
            transport: Transport::Tcp,
            endpoints,
            zone: 0,
        }
    }

    fn attributes(&self) -> Vec<ConntrackAttribute> {
        let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(
            self.endpoints.attributes(self.transport),
        )];
        if self.zone != 0 {
            attributes.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ZONE,
                self.zone.to_be_bytes().to_vec(),
            )));
        }
        attributes
    }
}

impl TcpTuple {
    fn attributes(&self, transport: Transport) -> Vec<Tuple> {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(self.source.ip()),
                IPTuple::DestinationAddress(self.destination.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(transport.protocol()),
                ProtoTuple::SourcePort(self.source.port()),
                ProtoTuple::DestinationPort(self.destination.port()),
            ]),
        ]
    }

    fn from_attributes(tuples: &[Tuple]) -> Option<TcpTuple> {
        let (mut src, mut dst, mut sport, mut dport) = (None, None, None, None);
        for tuple in tuples {
            match tuple {
                Tuple::Ip(ips) => {
                    for ip in ips {
                        match ip {
                            IPTuple::SourceAddress(a) => src = Some(*a),
                            IPTuple::DestinationAddress(a) => dst = Some(*a),
                            _ => {}
                        }
                    }
                }
                Tuple::Proto(protos) => {
                    for proto in protos {
                        match proto {
                            ProtoTuple::SourcePort(p) => sport = Some(*p),
                            ProtoTuple::DestinationPort(p) => dport = Some(*p),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Some(TcpTuple {
            source: SocketAddr::new(src?, sport?),
            destination: SocketAddr::new(dst?, dport?),
        })
    }

    /// The reply tuple an untranslated connection has: the same endpoints, swapped.
    pub fn reversed(&self) -> TcpTuple {
        TcpTuple {
            source: self.destination,
            destination: self.source,
        }
    }
}

/// A conntrack entry: the connection as sent, and where its replies come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub original: TcpTuple,
    pub reply: TcpTuple,
    pub transport: Transport,
    /// Its conntrack zone (0: the default).
    pub zone: u16,
    /// Whether a packet in the reply direction was ever seen (`IPS_SEEN_REPLY`).
    pub seen_reply: bool,
}

impl Entry {
    /// The flow that names this entry, to get or delete it.
    pub fn flow(&self) -> Flow {
        Flow {
            transport: self.transport,
            endpoints: self.original,
            zone: self.zone,
        }
    }

    /// Where NAT sent the connection: the reply's source when it is not the original
    /// destination (REDIRECT and DNAT rewrite it), `None` when the destination is untouched.
    pub fn translated_destination(&self) -> Option<SocketAddr> {
        (self.reply.source != self.original.destination).then_some(self.reply.source)
    }
}

/// A ctnetlink socket in the namespace of the thread that opened it.
pub struct Conntrack {
    socket: Socket,
    seq: u32,
    buffer: Vec<u8>,
}

impl Conntrack {
    pub fn open() -> io::Result<Conntrack> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        set_receive_timeout(&socket, REPLY_TIMEOUT)?;
        Ok(Conntrack {
            socket,
            seq: 1,
            buffer: vec![0; RECV_BUFFER],
        })
    }

    /// The entry whose original direction is `original`, or `None` when conntrack holds
    /// none (ENOENT).
    pub fn get(&mut self, original: TcpTuple) -> io::Result<Option<Entry>> {
        self.get_flow(Flow::tcp(original))
    }

    /// The entry of `flow` (its original direction, in its zone), or `None` when conntrack
    /// holds none (ENOENT).
    pub fn get_flow(&mut self, flow: Flow) -> io::Result<Option<Entry>> {
        let message = ConntrackMessage::Get(flow.attributes());
        match self.request(flow.endpoints, message)? {
            Ok(Some(entry)) => Ok(Some(entry)),
            Ok(None) => Err(io::Error::other("ctnetlink answered without an entry")),
            Err(libc::ENOENT) => Ok(None),
            Err(errno) => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// Deletes the entry whose original direction is `original`; `false` when there was none.
    pub fn delete(&mut self, original: TcpTuple) -> io::Result<bool> {
        self.delete_flow(Flow::tcp(original))
    }

    /// Deletes the entry of `flow`; `false` when there was none.
    pub fn delete_flow(&mut self, flow: Flow) -> io::Result<bool> {
        let message = ConntrackMessage::Delete(flow.attributes());
        match self.request(flow.endpoints, message)? {
            Ok(_) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(errno) => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// Every TCP and UDP entry of `family` in this namespace, every zone (a dump), e.g. to
    /// check that nothing of verify's was left behind.
    pub fn dump(&mut self, ipv6: bool) -> io::Result<Vec<Entry>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let family = if ipv6 {
            NetfilterProtoFamily::IPv6
        } else {
            NetfilterProtoFamily::IPv4
        };
        let bytes = serialize(
            seq,
            NLM_F_REQUEST | NLM_F_DUMP,
            family,
            ConntrackMessage::Get(Vec::new()),
        );
        self.socket.send(&bytes, 0)?;
        let mut entries = Vec::new();
        loop {
            let mut done = false;
            self.each_reply(seq, |payload| match payload {
                NetlinkPayload::Done(_) => {
                    done = true;
                    Ok(())
                }
                NetlinkPayload::Error(error) => match error.code {
                    None => Ok(()),
                    Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                },
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                    ..
                }) => {
                    entries.extend(entry_of(&attributes));
                    Ok(())
                }
                _ => Ok(()),
            })?;
            if done {
                return Ok(entries);
            }
        }
    }

    /// Receives one datagram and hands each message answering `seq` to `each`.
    fn each_reply(
        &mut self,
        seq: u32,
        mut each: impl FnMut(NetlinkPayload<NetfilterMessage>) -> io::Result<()>,
    ) -> io::Result<()> {
        let received = self.socket.recv(&mut &mut self.buffer[..], 0)?;
        let mut offset = 0;
        while offset < received {
            let bytes = &self.buffer[offset..received];
            let raw = NetlinkBuffer::new_checked(bytes)
                .map_err(|e| io::Error::other(format!("malformed ctnetlink reply: {e}")))?;
            let length = raw.length() as usize;
            let ours = raw.sequence_number() == seq;
            let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
                .map_err(|e| io::Error::other(format!("malformed ctnetlink reply: {e}")))?;
            offset += length.div_ceil(4) * 4;
            if ours {
                each(message.payload)?;
            }
        }
        Ok(())
    }

    /// Sends one request (acknowledged) and returns the entry it answered with, if any, or
    /// the errno it was refused with.
    fn request(
        &mut self,
        original: TcpTuple,
        message: ConntrackMessage,
    ) -> io::Result<Result<Option<Entry>, i32>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let family = match original.source.ip() {
            IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
            IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
        };
        let bytes = serialize(seq, NLM_F_REQUEST | NLM_F_ACK, family, message);
        self.socket.send(&bytes, 0)?;
        let mut entry = None;
        let mut answer = None;
        while answer.is_none() {
            self.each_reply(seq, |payload| {
                match payload {
                    NetlinkPayload::Error(error) => {
                        answer = Some(error.code.map_or(0, |code| -code.get()));
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                        ..
                    }) => entry = entry_of(&attributes),
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(match answer {
            Some(0) | None => Ok(entry),
            Some(errno) => Err(errno),
        })
    }
}

fn serialize(
    seq: u32,
    flags: u16,
    family: NetfilterProtoFamily,
    message: ConntrackMessage,
) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            NetfilterMessageInner::Conntrack(message),
        )),
    );
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    bytes
}

/// The entry `attributes` describe, when it is a TCP or UDP flow.
fn entry_of(attributes: &[ConntrackAttribute]) -> Option<Entry> {
    use netlink_packet_core::Nla;
    let mut original = None;
    let mut reply = None;
    let mut transport = None;
    let mut zone = 0;
    let mut seen_reply = false;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) => {
                original = TcpTuple::from_attributes(t);
                transport = transport_of(t);
            }
            ConntrackAttribute::CtaTupleReply(t) => reply = TcpTuple::from_attributes(t),
            ConntrackAttribute::Other(nla) if nla.kind() == CTA_ZONE && nla.value_len() == 2 => {
                let mut value = [0u8; 2];
                nla.emit_value(&mut value);
                zone = u16::from_be_bytes(value);
            }
            ConntrackAttribute::CtaStatus(status) => {
                seen_reply = status.contains(Status::SeenReply);
            }
            _ => {}
        }
    }
    Some(Entry {
        original: original?,
        reply: reply?,
        transport: transport?,
        zone,
        seen_reply,
    })
}

fn transport_of(tuples: &[Tuple]) -> Option<Transport> {
    tuples.iter().find_map(|tuple| match tuple {
        Tuple::Proto(protos) => protos.iter().find_map(|p| match p {
            ProtoTuple::Protocol(Protocol::Tcp) => Some(Transport::Tcp),
            ProtoTuple::Protocol(Protocol::Udp) => Some(Transport::Udp),
            _ => None,
        }),
        _ => None,
    })
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(1),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: a valid socket and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>()).unwrap_or(16),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(source: &str, destination: &str) -> TcpTuple {
        TcpTuple {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn a_redirect_shows_as_a_rewritten_reply_source() {
        let original = tuple("10.0.0.2:40000", "192.0.2.1:80");
        let untouched = Entry {
            original,
            reply: original.reversed(),
            transport: Transport::Tcp,
            zone: 0,
            seen_reply: false,
        };
        assert_eq!(untouched.translated_destination(), None);
        let redirected = Entry {
            original,
            reply: tuple("127.0.0.1:15001", "10.0.0.2:40000"),
            transport: Transport::Tcp,
            zone: 0,
            seen_reply: true,
        };
        assert_eq!(
            redirected.translated_destination(),
            Some("127.0.0.1:15001".parse().unwrap())
        );
    }

    #[test]
    fn tuples_round_trip_through_their_attributes() {
        for t in [
            tuple("10.0.0.2:40000", "192.0.2.1:80"),
            tuple("[2001:db8::2]:40000", "[2001:db8::1]:22"),
        ] {
            for transport in [Transport::Tcp, Transport::Udp] {
                assert_eq!(TcpTuple::from_attributes(&t.attributes(transport)), Some(t));
            }
        }
    }
}
