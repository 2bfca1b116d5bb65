//! The kernel-facing half of verify: listeners that stand in for the proxy on its ports,
//! and probe connections made as a chosen user. Everything here runs in the namespace the
//! calling thread is in, and is bounded by a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
    UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn6, SockaddrStorage, bind, getsockopt,
    listen, socket, sockopt,
};

use super::check::Identity;
use super::route::{Route, route_to};
use super::selection::{Expectation, ListenerRole, ListenerSpec, Probe};
use super::sink::PROBE_MARK;
use crate::conntrack::{Conntrack, Flow, TcpTuple};
use crate::ruleset::Family;

/// First word of a listener's reply, versioned so a changed format fails loudly.
const REPLY_MAGIC: &str = "meshinit-verify/1";
/// How often the accept loop looks at its stop flag; bounds how long stopping takes.
const ACCEPT_POLL_MS: u16 = 10;
/// A reply is one short line; anything longer is not ours.
const MAX_REPLY_BYTES: usize = 256;
/// Probe threads only connect and read a line.
const PROBE_STACK_BYTES: usize = 128 * 1024;
/// The source ports of probes sent into the sink: what makes their conntrack entries
/// recognisable after a run killed with SIGKILL (an entry to an ignored destination
/// otherwise looks like an application's). Above Linux's default ephemeral range
/// (32768-60999), so an application's connections rarely use them; no rule looks at a TCP
/// source port, so the connection is still judged as an application's would be. Sockets
/// share a port (SO_REUSEADDR) as long as their destinations differ.
pub const PROBE_SOURCE_PORTS: std::ops::RangeInclusive<u16> = 61_000..=61_063;

/// The random tokens verify's listeners answer with, one per role, so a probe knows it
/// reached this run's listener and which one (and not a proxy or another process).
#[derive(Debug, Clone)]
pub struct Tokens {
    egress: String,
    ingress: String,
}

impl Tokens {
    pub fn random() -> Result<Self, String> {
        let token = || {
            getrandom::u64()
                .map(|n| format!("{n:016x}"))
                .map_err(|e| format!("cannot read random bytes for the listener tokens: {e}"))
        };
        Ok(Tokens {
            egress: token()?,
            ingress: token()?,
        })
    }

    fn of(&self, role: ListenerRole) -> &str {
        match role {
            ListenerRole::Egress => &self.egress,
            ListenerRole::Ingress => &self.ingress,
        }
    }

    fn role_of(&self, token: &str) -> Option<ListenerRole> {
        if token == self.egress {
            Some(ListenerRole::Egress)
        } else if token == self.ingress {
            Some(ListenerRole::Ingress)
        } else {
            None
        }
    }
}

/// Per spec, whether it bound (the error says why not: EADDRINUSE, no IPv6...).
pub type BindResults = Vec<(ListenerSpec, std::io::Result<()>)>;

/// The listeners of one verify run, served by one thread until dropped.
#[derive(Debug)]
pub struct Listeners {
    stop: Arc<AtomicBool>,
    /// Shared with the serving thread, so stopping can wake it (shutdown) at once.
    sockets: Arc<Vec<(TcpListener, ListenerRole)>>,
    thread: Option<JoinHandle<()>>,
}

impl Listeners {
    /// Binds every spec in this thread's namespace and starts serving those that bound.
    pub fn start(specs: &[ListenerSpec], tokens: &Tokens) -> (Listeners, BindResults) {
        let mut bound = Vec::new();
        let mut results = Vec::new();
        for spec in specs {
            match bind_listener(spec.family, spec.port) {
                Ok(socket) => {
                    bound.push((socket, spec.role));
                    results.push((*spec, Ok(())));
                }
                Err(e) => results.push((*spec, Err(e))),
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let bound = Arc::new(bound);
        let thread = if bound.is_empty() {
            None
        } else {
            let tokens = tokens.clone();
            let thread_stop = Arc::clone(&stop);
            let thread_sockets = Arc::clone(&bound);
            let spawned = std::thread::Builder::new()
                .name("verify-listener".into())
                .spawn(move || serve_until_stopped(&thread_sockets, &tokens, &thread_stop));
            match spawned {
                Ok(handle) => Some(handle),
                Err(e) => {
                    // Without the serving thread no probe can reach a listener; say so per spec.
                    let results = results
                        .into_iter()
                        .map(|(spec, r)| {
                            let r = r.and_then(|()| {
                                Err(std::io::Error::other(format!(
                                    "cannot start the listener thread: {e}"
                                )))
                            });
                            (spec, r)
                        })
                        .collect();
                    return (
                        Listeners {
                            stop,
                            sockets: bound,
                            thread: None,
                        },
                        results,
                    );
                }
            }
        };
        (
            Listeners {
                stop,
                sockets: bound,
                thread,
            },
            results,
        )
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A shut-down listening socket wakes the serving thread's poll at once.
        for (socket, _) in self.sockets.iter() {
            let _ =
                nix::sys::socket::shutdown(socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `0.0.0.0:port` or `[::]:port` (IPv6-only, so each family has its own socket and
/// a probe's family is never in doubt), nonblocking so the accept loop can poll.
fn bind_listener(family: Family, port: u16) -> std::io::Result<TcpListener> {
    let listener = match family {
        // std sets SO_REUSEADDR, which only skips TIME_WAIT leftovers: a port someone
        // listens on still fails with EADDRINUSE, which is what verify must notice.
        Family::Ipv4 => TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?,
        Family::Ipv6 => {
            let fd = socket(
                AddressFamily::Inet6,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            nix::sys::socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            nix::sys::socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            let addr = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
            bind(fd.as_raw_fd(), &addr)?;
            listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
            TcpListener::from(fd)
        }
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn serve_until_stopped(
    sockets: &[(TcpListener, ListenerRole)],
    tokens: &Tokens,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<PollFd> = sockets
            .iter()
            .map(|(socket, _)| PollFd::new(socket.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, ACCEPT_POLL_MS) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        for (socket, role) in sockets {
            while let Ok((stream, _)) = socket.accept() {
                answer(stream, tokens.of(*role));
            }
        }
    }
}

/// Tells the client which listener it reached and where it was going before NAT.
fn answer(mut stream: TcpStream, token: &str) {
    let original = stream
        .local_addr()
        .ok()
        .and_then(|local| original_destination(&stream, local))
        .map_or_else(|| "-".to_owned(), |addr| addr.to_string());
    // Accepted sockets are blocking on Linux; the timeout keeps a silent client from
    // stalling the loop (the reply fits in any send buffer, so it never waits in practice).
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = stream.write_all(format!("{REPLY_MAGIC} {token} {original}\n").as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// The destination before NAT, from conntrack (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`);
/// `None` when conntrack has no entry for the connection.
fn original_destination(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    match local {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst).ok().map(|sin| {
            SocketAddr::from((
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        }),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst)
            .ok()
            .map(|sin6| {
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    0,
                    sin6.sin6_scope_id,
                ))
            }),
    }
}

/// What happened to one probe connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// It reached one of this run's listeners, which saw this original destination.
    ReachedListener {
        role: ListenerRole,
        original_dst: Option<SocketAddr>,
    },
    /// It connected, but not to one of this run's listeners (a real server answered).
    OtherServer { reply: String },
    /// Connection refused: nothing listens where it went.
    Refused,
    /// ICMP unreachable (the packet left the namespace and a router said no).
    Unreachable(String),
    /// No connection before the deadline (only where conntrack could not be read).
    NoAnswer,
    /// Its conntrack entry shows the destination untouched: no NAT rule rewrote it.
    /// `sunk`: its SYN went into verify's sink inside the namespace (else it went out with
    /// a hop limit of 1).
    Untranslated { sunk: bool },
    /// Conntrack holds no entry for it after its SYN crossed the hooks: NAT, which always
    /// creates one, did not touch it.
    Untracked,
    /// NAT sent it to this address off the namespace (not a redirect to a local port).
    TranslatedElsewhere(SocketAddr),
    /// Any other connect error (EPERM from a local DROP/REJECT, ...).
    ConnectError(String),
    /// The probe could not be made (credentials, thread); nothing was learnt.
    NotRun(String),
}

impl Observation {
    /// A short machine-readable name for the report.
    pub fn tag(&self) -> &'static str {
        match self {
            Observation::ReachedListener {
                role: ListenerRole::Egress,
                ..
            } => "reached-proxy-egress-port",
            Observation::ReachedListener {
                role: ListenerRole::Ingress,
                ..
            } => "reached-proxy-ingress-port",
            Observation::OtherServer { .. } => "connected-elsewhere",
            Observation::Refused => "refused",
            Observation::Unreachable(_) => "unreachable",
            Observation::NoAnswer => "no-answer",
            Observation::Untranslated { .. } => "not-translated",
            Observation::Untracked => "not-tracked",
            Observation::TranslatedElsewhere(_) => "translated-elsewhere",
            Observation::ConnectError(_) => "connect-error",
            Observation::NotRun(_) => "not-run",
        }
    }
}

/// Runs every probe and returns their observations in order, with the conntrack entries
/// they created (delete them with [`Evidence::forget`] once the listeners are closed).
///
/// Each probe's socket is created on a thread that has taken on the probe's user and group
/// (`-m owner` and `meta skuid` match the credentials a socket was created with); this
/// thread then sends each SYN with a hop limit of 1, so a connection that is not redirected
/// dies at the first router, and reads the connection's conntrack entry: the SYN has
/// crossed the nat hook by the time `connect` returns, so whether NAT rewrote it is known
/// at once. Only connections that stay in the namespace (redirected to a local port, or
/// to loopback) are completed, to read what verify's listener saw.
pub fn run_all(
    probes: &[Probe],
    tokens: &Tokens,
    deadline: Instant,
    sink: bool,
) -> (Vec<Observation>, ConntrackEvidence) {
    let sockets = sockets_as_identities(probes);
    let mut conntrack = Conntrack::open().map_err(|e| format!("cannot open ctnetlink: {e}"));
    let mut tuples = Vec::new();
    let mut decided: Vec<Option<Observation>> = Vec::new();
    let mut pending: Vec<(usize, TcpStream)> = Vec::new();
    let mut source_ports = SourcePorts::default();
    for (index, (probe, socket)) in probes.iter().zip(sockets).enumerate() {
        // Only a probe that must not be redirected is sent into the sink: a redirected one
        // has to reach verify's listener over loopback to show its SO_ORIGINAL_DST.
        let into_sink = sink && probe.expectation == Expectation::NotRedirected;
        let socket = socket.and_then(|socket| {
            if into_sink {
                send_into_sink(&socket, probe.destination, Some(&mut source_ports))?;
            }
            Ok(socket)
        });
        match start_probe(
            probe.destination,
            socket,
            conntrack.as_mut().ok(),
            &mut tuples,
            into_sink,
        ) {
            Started::Decided(observation) => decided.push(Some(observation)),
            Started::Pending(stream) => {
                decided.push(None);
                pending.push((index, stream));
            }
        }
    }
    // What remains is local (a redirect, or the listener self-test) and answers at once;
    // each gets its own thread so one silent server cannot hold up the others.
    let finished: Vec<(usize, Observation, TcpStream)> = std::thread::scope(|scope| {
        let handles: Vec<_> = pending
            .into_iter()
            .map(|(index, stream)| {
                let handle = std::thread::Builder::new()
                    .name("verify-probe".into())
                    .stack_size(PROBE_STACK_BYTES)
                    .spawn_scoped(scope, move || {
                        let mut stream = stream;
                        let observation = finish_connection(&mut stream, tokens, deadline);
                        (observation, stream)
                    });
                (index, handle)
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|(index, handle)| match handle {
                Ok(handle) => handle.join().ok().map(|(o, s)| (index, o, s)),
                Err(_) => None,
            })
            .collect()
    });
    let mut streams = Vec::new();
    for (index, observation, stream) in finished {
        if let Some(slot) = decided.get_mut(index) {
            *slot = Some(observation);
        }
        streams.push(stream);
    }
    // Reset rather than close politely: no FIN is left to recreate an entry once deleted.
    for stream in &streams {
        reset_on_close(stream);
    }
    drop(streams);
    let observations = decided
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Observation::NotRun("cannot start a probe thread".into())))
        .collect();
    (
        observations,
        ConntrackEvidence {
            conntrack: conntrack.ok(),
            flows: tuples.into_iter().map(Flow::tcp).collect(),
        },
    )
}

/// The conntrack entries a verification created, deleted on [`forget`](Self::forget).
pub struct ConntrackEvidence {
    conntrack: Option<Conntrack>,
    flows: Vec<Flow>,
}

impl ConntrackEvidence {
    /// The ctnetlink socket, when it could be opened.
    pub fn conntrack(&mut self) -> Option<&mut Conntrack> {
        self.conntrack.as_mut()
    }

    /// Adds a TCP entry (default zone) to delete.
    pub fn remember(&mut self, tuple: TcpTuple) {
        self.flows.push(Flow::tcp(tuple));
    }

    /// Adds an entry of any transport and zone to delete.
    pub fn remember_flow(&mut self, flow: Flow) {
        self.flows.push(flow);
    }

    /// Deletes the probes' conntrack entries (after the listeners have closed their side).
    /// Returns how many were left that could not be deleted.
    pub fn forget(mut self) -> usize {
        let Some(conntrack) = self.conntrack.as_mut() else {
            return 0;
        };
        self.flows
            .iter()
            .filter(|flow| conntrack.delete_flow(**flow).is_err())
            .count()
    }
}

/// A probe once its SYN is sent: decided, or a local connection to finish.
enum Started {
    Decided(Observation),
    Pending(TcpStream),
}

/// Sends the probe's SYN (hop limit 1) and decides what it can from the conntrack entry.
fn start_probe(
    destination: SocketAddr,
    socket: Result<OwnedFd, String>,
    conntrack: Option<&mut Conntrack>,
    tuples: &mut Vec<TcpTuple>,
    sunk: bool,
) -> Started {
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => return Started::Decided(Observation::NotRun(e)),
    };
    let hop_limit = match destination {
        SocketAddr::V4(_) => nix::sys::socket::setsockopt(&socket, sockopt::Ipv4Ttl, &1),
        SocketAddr::V6(_) => nix::sys::socket::setsockopt(&socket, sockopt::Ipv6Ttl, &1),
    };
    if let Err(e) = hop_limit {
        return Started::Decided(Observation::NotRun(format!(
            "cannot set the probe's hop limit to 1: {e}"
        )));
    }
    let stream = TcpStream::from(socket);
    if let Err(e) = stream.set_nonblocking(true) {
        return Started::Decided(Observation::NotRun(format!(
            "cannot make the probe socket nonblocking: {e}"
        )));
    }
    let address = SockaddrStorage::from(destination);
    match nix::sys::socket::connect(stream.as_raw_fd(), &address) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(errno) => {
            return Started::Decided(classify_connect_error(&std::io::Error::from(errno)));
        }
    }
    let stays_local = |address: SocketAddr| matches!(route_to(address), Route::Local);
    let Some(conntrack) = conntrack else {
        // Without ctnetlink the old way remains: wait for an answer within the window.
        return Started::Pending(stream);
    };
    let source = match stream.local_addr() {
        Ok(source) => source,
        Err(_) => return Started::Pending(stream),
    };
    let tuple = TcpTuple {
        source,
        destination,
    };
    tuples.push(tuple);
    match conntrack.get(tuple) {
        Ok(Some(entry)) => match entry.translated_destination() {
            Some(to) if stays_local(to) => Started::Pending(stream),
            Some(to) => Started::Decided(Observation::TranslatedElsewhere(to)),
            None if stays_local(destination) => Started::Pending(stream),
            None => Started::Decided(Observation::Untranslated { sunk }),
        },
        Ok(None) if stays_local(destination) => Started::Pending(stream),
        Ok(None) => Started::Decided(Observation::Untracked),
        Err(_) => Started::Pending(stream),
    }
}

/// Marks `socket` for the sink's routing table, and binds it to the source address the
/// main table would choose (so the connection's addresses are the ones an application's
/// would have) and to a port of [`PROBE_SOURCE_PORTS`] (so a killed run's entry can be
/// told apart; any port when the range is taken, or without `ports`).
pub fn send_into_sink(
    socket: &OwnedFd,
    destination: SocketAddr,
    ports: Option<&mut SourcePorts>,
) -> Result<(), String> {
    nix::sys::socket::setsockopt(socket, sockopt::Mark, &PROBE_MARK)
        .map_err(|e| format!("cannot mark the probe socket: {e}"))?;
    let source = source_for(destination).unwrap_or(match destination {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    });
    nix::sys::socket::setsockopt(socket, sockopt::ReuseAddr, &true)
        .map_err(|e| format!("cannot share the probe's source port: {e}"))?;
    let mut ports = ports;
    while let Some(port) = ports.as_deref_mut().and_then(|p| p.next_for(destination)) {
        let local = SockaddrStorage::from(SocketAddr::new(source, port));
        match bind(socket.as_raw_fd(), &local) {
            Ok(()) => return Ok(()),
            // Someone else holds it without sharing: the next one.
            Err(Errno::EADDRINUSE) => continue,
            Err(e) => return Err(format!("cannot bind the probe socket to {source}: {e}")),
        }
    }
    let local = SockaddrStorage::from(SocketAddr::new(source, 0));
    bind(socket.as_raw_fd(), &local)
        .map_err(|e| format!("cannot bind the probe socket to {source}: {e}"))
}

/// Hands out ports of [`PROBE_SOURCE_PORTS`] so that no two probes to one destination
/// share one (their connections would be the same).
#[derive(Debug, Default)]
pub struct SourcePorts {
    /// Per destination, how many ports of the range were handed out for it.
    used: std::collections::HashMap<SocketAddr, u16>,
}

impl SourcePorts {
    /// The next port not yet used for `destination`, or `None` once the range is spent.
    fn next_for(&mut self, destination: SocketAddr) -> Option<u16> {
        let used = self.used.entry(destination).or_insert(0);
        let port = PROBE_SOURCE_PORTS.start().checked_add(*used)?;
        if !PROBE_SOURCE_PORTS.contains(&port) {
            return None;
        }
        *used += 1;
        Some(port)
    }
}

/// The source address the routing table picks for `destination` (a connected UDP socket
/// sends nothing).
fn source_for(destination: SocketAddr) -> Option<IpAddr> {
    let unspecified: IpAddr = match destination {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((unspecified, 0)).ok()?;
    socket.connect(destination).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Creates one TCP socket per probe as the probe's identity.
fn sockets_as_identities(probes: &[Probe]) -> Vec<Result<OwnedFd, String>> {
    let requests: Vec<SocketRequest> = probes
        .iter()
        .map(|p| SocketRequest {
            identity: p.identity,
            destination: p.destination,
            kind: SockType::Stream,
        })
        .collect();
    sockets_as(&requests)
}

/// A socket to create as `identity`, of `kind`, in `destination`'s family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketRequest {
    pub identity: Identity,
    pub destination: SocketAddr,
    pub kind: SockType,
}

/// Creates one socket per request, each on a thread that has taken on the request's
/// identity (credentials are per thread), one thread per identity.
pub fn sockets_as(probes: &[SocketRequest]) -> Vec<Result<OwnedFd, String>> {
    let mut identities: Vec<Identity> = Vec::new();
    for probe in probes {
        if !identities.contains(&probe.identity) {
            identities.push(probe.identity);
        }
    }
    let mut sockets: Vec<Option<Result<OwnedFd, String>>> = probes.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = identities
            .iter()
            .map(|identity| {
                let wanted: Vec<(usize, SocketAddr, SockType)> = probes
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.identity == *identity)
                    .map(|(i, p)| (i, p.destination, p.kind))
                    .collect();
                let identity = *identity;
                let handle = std::thread::Builder::new()
                    .name("verify-identity".into())
                    .stack_size(PROBE_STACK_BYTES)
                    .spawn_scoped(scope, move || {
                        if let Err(e) = become_on_this_thread(identity) {
                            return wanted
                                .iter()
                                .map(|(i, _, _)| (*i, Err(e.clone())))
                                .collect();
                        }
                        wanted
                            .iter()
                            .map(|(i, destination, kind)| (*i, new_socket(*destination, *kind)))
                            .collect::<Vec<_>>()
                    });
                (identity, handle)
            })
            .collect();
        for (identity, handle) in handles {
            let made = match handle {
                Ok(handle) => handle.join().unwrap_or_default(),
                Err(e) => probes
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.identity == identity)
                    .map(|(i, _)| (i, Err(format!("cannot start a probe thread: {e}"))))
                    .collect(),
            };
            for (index, socket) in made {
                if let Some(slot) = sockets.get_mut(index) {
                    *slot = Some(socket);
                }
            }
        }
    });
    sockets
        .into_iter()
        .map(|s| s.unwrap_or_else(|| Err("the probe thread ended early".into())))
        .collect()
}

fn new_socket(destination: SocketAddr, kind: SockType) -> Result<OwnedFd, String> {
    let family = match destination {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    socket(family, kind, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("cannot create a socket: {e}"))
}

/// Closing this socket sends a reset and leaves no TIME_WAIT or FIN behind.
pub fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(stream, sockopt::Linger, &linger);
}

/// Becomes `identity` on this thread only.
fn become_on_this_thread(identity: Identity) -> Result<(), String> {
    let Identity { uid, gid } = identity;
    // SAFETY: plain syscalls with integer arguments and an empty (null, length 0) group list;
    // they change only the calling thread, which ends after creating its sockets.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
            return Err(format!(
                "cannot drop supplementary groups: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
            return Err(format!(
                "cannot switch to gid {gid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
            return Err(format!(
                "cannot switch to uid {uid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// Waits (until `deadline`) for a nonblocking connect to complete, then reads the reply.
fn finish_connection(stream: &mut TcpStream, tokens: &Tokens, deadline: Instant) -> Observation {
    loop {
        let Some(left) = remaining(deadline) else {
            return Observation::NoAnswer;
        };
        let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, millis) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Observation::ConnectError(e.to_string()),
        }
    }
    match stream.take_error() {
        Ok(None) => {}
        Ok(Some(e)) | Err(e) => return classify_connect_error(&e),
    }
    if stream.set_nonblocking(false).is_err() {
        return Observation::ConnectError("cannot make the probe socket blocking".into());
    }
    let mut reply = Vec::new();
    let mut chunk = [0u8; 128];
    while reply.len() < MAX_REPLY_BYTES && !reply.contains(&b'\n') {
        let Some(left) = remaining(deadline) else {
            break;
        };
        if stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    parse_reply(&reply, tokens).unwrap_or(Observation::OtherServer { reply })
}

fn classify_connect_error(e: &std::io::Error) -> Observation {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Observation::Refused,
        Some(libc::ETIMEDOUT) => Observation::NoAnswer,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => Observation::Unreachable(e.to_string()),
        _ if e.kind() == ErrorKind::TimedOut => Observation::NoAnswer,
        _ => Observation::ConnectError(e.to_string()),
    }
}

/// `meshinit-verify/1 TOKEN ORIGINAL` from one of this run's listeners, or `None`.
fn parse_reply(reply: &str, tokens: &Tokens) -> Option<Observation> {
    let mut words = reply.split_whitespace();
    if words.next() != Some(REPLY_MAGIC) {
        return None;
    }
    let role = tokens.role_of(words.next()?)?;
    let original_dst = match words.next()? {
        "-" => None,
        text => Some(text.parse().ok()?),
    };
    Some(Observation::ReachedListener { role, original_dst })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            egress: "aaaa".into(),
            ingress: "bbbb".into(),
        }
    }

    #[test]
    fn replies_of_this_run_name_their_listener_and_original_destination() {
        let reached = parse_reply("meshinit-verify/1 aaaa 192.0.2.1:80\n", &tokens());
        assert_eq!(
            reached,
            Some(Observation::ReachedListener {
                role: ListenerRole::Egress,
                original_dst: Some("192.0.2.1:80".parse().unwrap()),
            })
        );
        let reached = parse_reply("meshinit-verify/1 bbbb -\n", &tokens());
        assert_eq!(
            reached,
            Some(Observation::ReachedListener {
                role: ListenerRole::Ingress,
                original_dst: None,
            })
        );
    }

    #[test]
    fn anything_else_is_not_one_of_our_listeners() {
        for reply in [
            "",
            "SSH-2.0-OpenSSH_9.6\r\n",
            "meshinit-verify/1 cccc 192.0.2.1:80\n",
            "meshinit-verify/1 aaaa not-an-address\n",
            "meshinit-verify/1 aaaa",
            "meshinit-verify/2 aaaa -\n",
        ] {
            assert_eq!(parse_reply(reply, &tokens()), None, "{reply:?}");
        }
    }

    #[test]
    fn probes_to_one_destination_get_different_source_ports_of_the_range() {
        let mut ports = SourcePorts::default();
        let a: SocketAddr = "169.254.169.254:80".parse().unwrap();
        let b: SocketAddr = "[fd00:ec2::254]:80".parse().unwrap();
        assert_eq!(ports.next_for(a), Some(*PROBE_SOURCE_PORTS.start()));
        assert_eq!(ports.next_for(b), Some(*PROBE_SOURCE_PORTS.start()));
        assert_eq!(ports.next_for(a), Some(PROBE_SOURCE_PORTS.start() + 1));
        let rest: Vec<u16> = std::iter::from_fn(|| ports.next_for(a)).collect();
        assert_eq!(rest.last(), Some(PROBE_SOURCE_PORTS.end()));
        assert_eq!(rest.len(), PROBE_SOURCE_PORTS.len() - 2);
    }

    #[test]
    fn connect_errors_are_classified() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(classify_connect_error(&refused), Observation::Refused);
        let unreachable = std::io::Error::from_raw_os_error(libc::ENETUNREACH);
        assert!(matches!(
            classify_connect_error(&unreachable),
            Observation::Unreachable(_)
        ));
        let timeout = std::io::Error::from(ErrorKind::TimedOut);
        assert_eq!(classify_connect_error(&timeout), Observation::NoAnswer);
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        assert!(matches!(
            classify_connect_error(&eperm),
            Observation::ConnectError(_)
        ));
    }
}
