//! DNS capture's probes: one query per probe (UDP: a real DNS question; TCP: the SYN of a
//! query's connection), made as the probe's user, always into verify's sink so that a query
//! the rules do not capture never reaches a resolver. The query has crossed the nat hook
//! when `send`/`connect` returns, so its conntrack entry says at once whether it was
//! redirected, and to which port; nothing waits for an answer.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{SockType, SockaddrStorage, sockopt};

use super::probe::{ConntrackEvidence, SocketRequest, send_into_sink, sockets_as};
use super::route::{Route, route_to};
use super::selection::{DnsProbe, DnsTransport};
use crate::conntrack::{Flow, TcpTuple, Transport};
use crate::ruleset::zones;

/// A DNS question for `meshinit-verify.invalid.` (type A): `.invalid` never resolves
/// (RFC 6761), so a proxy that answers it does nothing.
const QUERY: &[u8] = b"\x4d\x53\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
\x0fmeshinit-verify\x07invalid\x00\x00\x01\x00\x01";

/// What conntrack recorded for one DNS probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsObservation {
    /// The entry, found in `zone`: `to` is where NAT sent the query (`None`: untouched),
    /// `local` whether that is an address of this namespace.
    Entry {
        to: Option<SocketAddr>,
        local: bool,
        zone: u16,
    },
    /// No entry in any zone although the query crossed the nat hook.
    Untracked,
    /// The probe could not be made; nothing was learnt.
    NotRun(String),
}

impl DnsObservation {
    pub fn tag(&self) -> &'static str {
        match self {
            DnsObservation::Entry { to: Some(_), .. } => "translated",
            DnsObservation::Entry { to: None, .. } => "not-translated",
            DnsObservation::Untracked => "not-tracked",
            DnsObservation::NotRun(_) => "not-run",
        }
    }
}

/// Sends every DNS probe into the sink (`sink` false: none is sent, since a query that is not
/// captured would reach its resolver) and reads each one's conntrack entry; the entries are
/// added to `evidence` to be deleted.
pub fn run(
    probes: &[DnsProbe],
    sink: bool,
    evidence: &mut ConntrackEvidence,
) -> Vec<DnsObservation> {
    if probes.is_empty() {
        return Vec::new();
    }
    if !sink {
        let why = "verify could not set up its sink, and a query that is not captured would \
                   reach the resolver";
        return probes
            .iter()
            .map(|_| DnsObservation::NotRun(why.to_owned()))
            .collect();
    }
    let requests: Vec<SocketRequest> = probes
        .iter()
        .map(|p| SocketRequest {
            identity: p.identity,
            destination: p.destination,
            kind: match p.transport {
                DnsTransport::Udp => SockType::Datagram,
                DnsTransport::Tcp => SockType::Stream,
            },
        })
        .collect();
    // A refused SYN takes its conntrack entry with it (a reset kills an unassured entry), so
    // verify listens on the proxy's DNS port where a redirected TCP query lands, unless
    // the proxy already does (then the bind fails and the proxy completes the handshake).
    let _stand_ins = tcp_stand_ins(probes);
    let sockets = sockets_as(&requests);
    let mut open = Vec::new();
    let observations = probes
        .iter()
        .zip(sockets)
        .map(|(probe, socket)| {
            let socket = match socket {
                Ok(socket) => socket,
                Err(e) => return DnsObservation::NotRun(e),
            };
            let observation = match send_query(probe, &socket) {
                Ok(source) => observe(probe, source, evidence),
                Err(e) => DnsObservation::NotRun(e),
            };
            open.push(socket);
            observation
        })
        .collect();
    // TCP probes close with a reset: no FIN is left to recreate an entry once deleted.
    for socket in &open {
        let _ = nix::sys::socket::setsockopt(
            socket,
            sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        );
    }
    observations
}

/// Listeners on loopback at the DNS port of each redirected TCP probe's family, where
/// REDIRECT at OUTPUT delivers; the kernel completes handshakes without an `accept`.
fn tcp_stand_ins(probes: &[DnsProbe]) -> Vec<std::net::TcpListener> {
    let mut listeners = Vec::new();
    let mut bound: Vec<SocketAddr> = Vec::new();
    for probe in probes {
        let (DnsTransport::Tcp, Some(port)) = (probe.transport, probe.redirected_to) else {
            continue;
        };
        let loopback: std::net::IpAddr = match probe.destination {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        let address = SocketAddr::new(loopback, port);
        if bound.contains(&address) {
            continue;
        }
        bound.push(address);
        if let Ok(listener) = std::net::TcpListener::bind(address) {
            listeners.push(listener);
        }
    }
    listeners
}

/// Sends the query (hop limit 1, into the sink) and returns its source address.
fn send_query(probe: &DnsProbe, socket: &OwnedFd) -> Result<SocketAddr, String> {
    let hop_limit = match probe.destination {
        SocketAddr::V4(_) => nix::sys::socket::setsockopt(socket, sockopt::Ipv4Ttl, &1),
        SocketAddr::V6(_) => nix::sys::socket::setsockopt(socket, sockopt::Ipv6Ttl, &1),
    };
    hop_limit.map_err(|e| format!("cannot set the query's hop limit to 1: {e}"))?;
    send_into_sink(socket, probe.destination, None)?;
    // The source port is read before connecting: a TCP connection refused at once (nothing
    // listens on the DNS port yet) gives its port back.
    let bound = local_address(socket);
    let destination = SockaddrStorage::from(probe.destination);
    match probe.transport {
        DnsTransport::Udp => {
            nix::sys::socket::connect(socket.as_raw_fd(), &destination)
                .map_err(|e| format!("cannot connect the query's socket: {e}"))?;
            nix::sys::socket::send(
                socket.as_raw_fd(),
                QUERY,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            )
            .map_err(|e| format!("cannot send the query: {e}"))?;
        }
        DnsTransport::Tcp => {
            nix::fcntl::fcntl(
                socket,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(|e| format!("cannot make the query's socket nonblocking: {e}"))?;
            match nix::sys::socket::connect(socket.as_raw_fd(), &destination) {
                // Refused: the SYN went out (and was answered locally); the entry is there.
                Ok(()) | Err(Errno::EINPROGRESS | Errno::ECONNREFUSED) => {}
                Err(e) => return Err(format!("cannot connect: {e}")),
            }
        }
    }
    match (local_address(socket), bound) {
        (Some(after), _) if after.port() != 0 && !after.ip().is_unspecified() => Ok(after),
        (_, Some(bound)) if bound.port() != 0 => Ok(bound),
        _ => Err("cannot read the query's source address".to_owned()),
    }
}

fn local_address(socket: &OwnedFd) -> Option<SocketAddr> {
    let address: SockaddrStorage = nix::sys::socket::getsockname(socket.as_raw_fd()).ok()?;
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

/// Reads the query's entry: in the zone the rules should have put it in first, then in
/// the others a missing or wrong zone rule would leave it in.
fn observe(
    probe: &DnsProbe,
    source: SocketAddr,
    evidence: &mut ConntrackEvidence,
) -> DnsObservation {
    let Some(conntrack) = evidence.conntrack() else {
        return DnsObservation::NotRun("conntrack cannot be read here (ctnetlink)".to_owned());
    };
    let transport = match probe.transport {
        DnsTransport::Udp => Transport::Udp,
        DnsTransport::Tcp => Transport::Tcp,
    };
    let endpoints = TcpTuple {
        source,
        destination: probe.destination,
    };
    let mut zones_to_try = vec![probe.zone];
    for zone in [0, zones::APP_ZONE, zones::UPSTREAM_ZONE] {
        if !zones_to_try.contains(&zone) {
            zones_to_try.push(zone);
        }
    }
    for zone in zones_to_try {
        let flow = Flow {
            transport,
            endpoints,
            zone,
        };
        match conntrack.get_flow(flow) {
            Ok(Some(entry)) => {
                evidence.remember_flow(flow);
                let to = entry.translated_destination();
                let local = to.is_some_and(|to| matches!(route_to(to), Route::Local));
                return DnsObservation::Entry { to, local, zone };
            }
            Ok(None) => {}
            Err(e) => return DnsObservation::NotRun(format!("cannot read conntrack: {e}")),
        }
    }
    DnsObservation::Untracked
}
