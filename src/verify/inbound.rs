//! Inbound proof: a TCP SYN made to enter the namespace from outside, so it crosses
//! PREROUTING like a client's. It is written with `AF_PACKET` (`CAP_NET_RAW`) on the outer
//! end of verify's veth pair (see `sink`) and arrives on the inner end, addressed from a
//! stand-in client to an address of that end; its conntrack entry then says whether the
//! nat rules redirected it. Replies to the stand-in client are routed back into the pair,
//! where nobody answers for it, so nothing leaves the namespace.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::sink::{INBOUND_CLIENT_V4, INBOUND_CLIENT_V6, INNER_MAC, SinkAddresses};
use crate::config::ProxyConfig;
use crate::conntrack::{Conntrack, Entry, TcpTuple};
use crate::ruleset::Family;

/// How long sent SYNs may take to be processed (they normally are before `sendto`
/// returns); only a failing check waits this long.
const ARRIVAL_BOUND: Duration = Duration::from_secs(1);
/// How often a SYN whose entry has not appeared is sent again.
const RESEND_EVERY: Duration = Duration::from_millis(5);

/// Per family, the inbound probes sent and what conntrack saw, or why none could be sent.
pub type InboundResults = Vec<(Family, std::result::Result<InboundFamily, String>)>;
pub type InboundFamily = Vec<(InboundProbe, TcpTuple, InboundObservation)>;

/// One inbound SYN to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundProbe {
    pub family: Family,
    pub port: u16,
    /// An AppPort: must be redirected to ProxyIngressPort. Otherwise must not be.
    pub app_port: bool,
}

/// What the nat hook did to an inbound SYN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundObservation {
    /// Its conntrack entry; `None` when no entry appeared (it never crossed the hooks).
    Entry(Option<Entry>),
    /// It could not be sent.
    NotSent(String),
}

/// The ports to probe inbound: each AppPort (a range by both ends), and one port that is
/// not an AppPort nor a proxy port.
pub fn probes(config: &ProxyConfig, family: Family) -> Vec<InboundProbe> {
    let Some(ingress) = &config.ingress else {
        return Vec::new();
    };
    let mut probes = Vec::new();
    for range in ingress.app_ports.ranges() {
        for port in [range.first, range.last] {
            if !probes.iter().any(|p: &InboundProbe| p.port == port) {
                probes.push(InboundProbe {
                    family,
                    port,
                    app_port: true,
                });
            }
        }
    }
    let is_app = |port: u16| {
        ingress
            .app_ports
            .ranges()
            .iter()
            .any(|r| r.first <= port && port <= r.last)
    };
    // Above 1024: verify listens there (see `run`) and keeps CAP_NET_BIND_SERVICE only when
    // a configured port needs it.
    let other = [8080u16, 9000, 8443]
        .into_iter()
        .chain(1024..=u16::MAX)
        .find(|p| !is_app(*p) && *p != ingress.proxy_port && *p != config.proxy_egress_port);
    if let Some(port) = other {
        probes.push(InboundProbe {
            family,
            port,
            app_port: false,
        });
    }
    probes
}

/// Where an inbound probe goes and comes from.
pub fn tuple(probe: &InboundProbe, addresses: &SinkAddresses, source_port: u16) -> TcpTuple {
    let (client, inner): (IpAddr, IpAddr) = match probe.family {
        Family::Ipv4 => (INBOUND_CLIENT_V4.into(), addresses.inner_v4.into()),
        Family::Ipv6 => (INBOUND_CLIENT_V6.into(), addresses.inner_v6.into()),
    };
    TcpTuple {
        source: SocketAddr::new(client, source_port),
        destination: SocketAddr::new(inner, probe.port),
    }
}

/// Sends each probe's SYN into the pair and reads its conntrack entry. Returns, per probe,
/// what was seen and the tuple to delete afterwards.
pub fn run(
    probes: &[InboundProbe],
    addresses: &SinkAddresses,
    conntrack: &mut Conntrack,
) -> Vec<(InboundObservation, TcpTuple)> {
    let base = source_port_base();
    let send = |tuple: TcpTuple| match &addresses.packets {
        Some(socket) => send_syn(socket, addresses.outer_index, tuple),
        None => Err(io::Error::other("no packet socket")),
    };
    let mut answerers = Vec::new();
    let mut results: Vec<(Option<InboundObservation>, TcpTuple)> = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let source_port = base.wrapping_add(u16::try_from(i).unwrap_or(0));
        let tuple = tuple(probe, addresses, source_port);
        // Something must answer the SYN wherever it lands with a SYN-ACK: a reset as the
        // only reply makes conntrack drop the entry at once. So listen on the inner address
        // at the probed port (the redirect target has verify's or the proxy's listener); if
        // that is taken, whoever holds it answers. They stay open until every entry is read.
        answerers.push(std::net::TcpListener::bind(tuple.destination));
        let sent = send(tuple)
            .err()
            .map(|e| InboundObservation::NotSent(format!("cannot send the inbound SYN: {e}")));
        results.push((sent, tuple));
    }
    // The SYNs are normally processed before `sendto` returns; a loaded machine may defer
    // them to ksoftirqd, and a pair that has just come up may lose its first frame, so
    // absent entries are looked for again, and their SYN resent as TCP would, until the
    // bound.
    let bound = Instant::now() + ARRIVAL_BOUND;
    let mut next_resend = Instant::now() + RESEND_EVERY;
    loop {
        if Instant::now() >= next_resend {
            next_resend = Instant::now() + RESEND_EVERY;
            for (observation, tuple) in &results {
                if observation.is_none() {
                    let _ = send(*tuple);
                }
            }
        }
        let mut missing = false;
        for (observation, tuple) in &mut results {
            if observation.is_some() {
                continue;
            }
            match conntrack.get(*tuple) {
                Ok(Some(entry)) => *observation = Some(InboundObservation::Entry(Some(entry))),
                Ok(None) => missing = true,
                Err(e) => {
                    *observation = Some(InboundObservation::NotSent(format!(
                        "cannot read conntrack: {e}"
                    )));
                }
            }
        }
        if !missing || Instant::now() >= bound {
            break;
        }
        std::thread::yield_now();
    }
    drop(answerers);
    results
        .into_iter()
        .map(|(observation, tuple)| {
            (
                observation.unwrap_or(InboundObservation::Entry(None)),
                tuple,
            )
        })
        .collect()
}

/// A source port in the dynamic range, different per run.
fn source_port_base() -> u16 {
    let random = getrandom::u32().unwrap_or(0);
    49_152 + u16::try_from(random % 8_192).unwrap_or(0)
}

/// Writes one TCP SYN for `tuple` on interface `index` (the kernel adds the Ethernet
/// header addressed to the inner end's MAC).
fn send_syn(socket: &std::os::fd::OwnedFd, index: u32, tuple: TcpTuple) -> io::Result<()> {
    let (ethertype, packet) = syn_packet(tuple);
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = ethertype.to_be();
    address.sll_ifindex = i32::try_from(index).unwrap_or(0);
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&INNER_MAC);
    // SAFETY: a valid fd, a buffer of the length passed, an address of the size passed.
    let sent = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(&address).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(20),
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const TCP_HEADER_LEN: usize = 20;

/// The IP packet of a TCP SYN (no options) for `tuple`, and its ethertype.
fn syn_packet(tuple: TcpTuple) -> (u16, Vec<u8>) {
    let mut tcp = [0u8; TCP_HEADER_LEN];
    tcp[0..2].copy_from_slice(&tuple.source.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&tuple.destination.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&getrandom::u32().unwrap_or(1).to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&65_535u16.to_be_bytes());
    let tcp_len = TCP_HEADER_LEN as u16;
    match (tuple.source.ip(), tuple.destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut pseudo = Vec::with_capacity(12 + TCP_HEADER_LEN);
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&tcp_len.to_be_bytes());
            pseudo.extend_from_slice(&tcp);
            tcp[16..18].copy_from_slice(&checksum(&pseudo).to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(20 + tcp_len).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let sum = checksum(&ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            ip.extend_from_slice(&tcp);
            (libc::ETH_P_IP as u16, ip)
        }
        (src, dst) => {
            let (src, dst) = (v6_octets(src), v6_octets(dst));
            let mut pseudo = Vec::with_capacity(40 + TCP_HEADER_LEN);
            pseudo.extend_from_slice(&src);
            pseudo.extend_from_slice(&dst);
            pseudo.extend_from_slice(&u32::from(tcp_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
            pseudo.extend_from_slice(&tcp);
            tcp[16..18].copy_from_slice(&checksum(&pseudo).to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&tcp_len.to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&src);
            ip[24..40].copy_from_slice(&dst);
            ip.extend_from_slice(&tcp);
            (libc::ETH_P_IPV6 as u16, ip)
        }
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::test_fixture::config;

    #[test]
    fn the_checksum_of_a_packet_with_its_checksum_is_zero() {
        let tuple = TcpTuple {
            source: "198.18.0.2:50000".parse().unwrap(),
            destination: "198.18.0.1:9080".parse().unwrap(),
        };
        let (_, packet) = syn_packet(tuple);
        assert_eq!(checksum(&packet[..20]), 0);
    }

    #[test]
    fn each_app_port_end_and_one_other_port_are_probed() {
        let probes = probes(&config(), Family::Ipv4);
        let app: Vec<u16> = probes
            .iter()
            .filter(|p| p.app_port)
            .map(|p| p.port)
            .collect();
        assert!(!app.is_empty());
        let other: Vec<&InboundProbe> = probes.iter().filter(|p| !p.app_port).collect();
        assert_eq!(other.len(), 1);
        assert!(!app.contains(&other[0].port));
    }
}
