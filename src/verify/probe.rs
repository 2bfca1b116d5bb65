//! The kernel-facing half of verify: listeners that stand in for the proxy on its ports,
//! and probe connections made as a chosen user. Everything here runs in the namespace the
//! calling thread is in, and is bounded by a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
    UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn6, bind, getsockopt, listen, socket,
    sockopt,
};
use serde::Serialize;

use super::selection::{Identity, Probe};
use crate::ruleset::Family;

/// First word of a listener's reply, versioned so a changed format fails loudly.
const REPLY_MAGIC: &str = "meshinit-verify/1";
/// How often the accept loop looks at its stop flag; bounds how long stopping takes.
const ACCEPT_POLL_MS: u16 = 10;
/// A reply is one short line; anything longer is not ours.
const MAX_REPLY_BYTES: usize = 256;
/// Probe threads only connect and read a line.
const PROBE_STACK_BYTES: usize = 128 * 1024;

/// Which proxy port a verify listener stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    Egress,
    Ingress,
}

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

/// One listening socket to open: a role's port in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSpec {
    pub role: ListenerRole,
    pub family: Family,
    pub port: u16,
}

/// Per spec, whether it bound (the error says why not: EADDRINUSE, no IPv6...).
pub type BindResults = Vec<(ListenerSpec, std::io::Result<()>)>;

/// The listeners of one verify run, served by one thread until dropped.
#[derive(Debug)]
pub struct Listeners {
    stop: Arc<AtomicBool>,
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
        let thread = if bound.is_empty() {
            None
        } else {
            let tokens = tokens.clone();
            let thread_stop = Arc::clone(&stop);
            let spawned = std::thread::Builder::new()
                .name("verify-listener".into())
                .spawn(move || serve_until_stopped(&bound, &tokens, &thread_stop));
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
                    return (Listeners { stop, thread: None }, results);
                }
            }
        };
        (Listeners { stop, thread }, results)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
    /// No connection before the deadline.
    NoAnswer,
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
            Observation::ConnectError(_) => "connect-error",
            Observation::NotRun(_) => "not-run",
        }
    }
}

/// Runs every probe at once, each on its own short-lived thread (credentials are per
/// thread), and returns their observations in order. Every probe ends by `deadline`.
pub fn run_all(probes: &[Probe], tokens: &Tokens, deadline: Instant) -> Vec<Observation> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = probes
            .iter()
            .map(|probe| {
                std::thread::Builder::new()
                    .name("verify-probe".into())
                    .stack_size(PROBE_STACK_BYTES)
                    .spawn_scoped(scope, move || {
                        probe_as(probe.identity, probe.destination, tokens, deadline)
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Observation::NotRun("the probe thread panicked".into())),
                Err(e) => Observation::NotRun(format!("cannot start a probe thread: {e}")),
            })
            .collect()
    })
}

/// Becomes `identity` on this thread only, then connects and reads the reply.
fn probe_as(
    identity: Identity,
    destination: SocketAddr,
    tokens: &Tokens,
    deadline: Instant,
) -> Observation {
    if let Err(e) = become_on_this_thread(identity) {
        return Observation::NotRun(e);
    }
    connect_and_identify(destination, tokens, deadline)
}

/// Sets this thread's groups, GID and UID with raw syscalls: the kernel keeps credentials
/// per thread, and only glibc's wrappers broadcast a change to every thread of the process.
/// The socket created afterwards carries these credentials, which is what `-m owner` matches.
fn become_on_this_thread(identity: Identity) -> Result<(), String> {
    let Identity { uid, gid } = identity;
    // SAFETY: plain syscalls with integer arguments and an empty (null, length 0) group list;
    // they change only the calling thread, which ends after this probe.
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

fn connect_and_identify(
    destination: SocketAddr,
    tokens: &Tokens,
    deadline: Instant,
) -> Observation {
    let Some(left) = remaining(deadline) else {
        return Observation::NoAnswer;
    };
    let mut stream = match TcpStream::connect_timeout(&destination, left) {
        Ok(stream) => stream,
        Err(e) => return classify_connect_error(&e),
    };
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

/// How the routing table treats a destination, learnt without sending anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Routed off this namespace: the OUTPUT rules see connections to it.
    Routed,
    /// An address of this namespace: local traffic is never redirected, by design.
    Local,
    /// No route (or prohibited): connect fails before any NAT rule is evaluated.
    Unroutable(String),
}

/// Asks the routing table with a connected UDP socket (no packet is sent).
pub fn route_to(destination: SocketAddr) -> Route {
    if destination.ip().is_loopback() {
        return Route::Local;
    }
    let unspecified: IpAddr = match destination {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = match UdpSocket::bind((unspecified, 0)) {
        Ok(socket) => socket,
        Err(e) => return Route::Unroutable(format!("cannot open a socket of that family: {e}")),
    };
    if let Err(e) = socket.connect(destination) {
        return Route::Unroutable(e.to_string());
    }
    // A local address is routed through `lo` with itself as the preferred source.
    match socket.local_addr() {
        Ok(source) if source.ip() == destination.ip() => Route::Local,
        _ => Route::Routed,
    }
}

/// The interface holding the source address the kernel picks for `destination`: where a
/// connection there leaves, as far as the source address tells (the usual case of one
/// address per interface).
pub fn source_interface(destination: SocketAddr) -> Option<String> {
    let unspecified: IpAddr = match destination {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((unspecified, 0)).ok()?;
    socket.connect(destination).ok()?;
    let source = socket.local_addr().ok()?.ip();
    nix::ifaddrs::getifaddrs().ok()?.find_map(|interface| {
        let address = interface.address?;
        let ip: IpAddr = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else {
            IpAddr::V6(address.as_sockaddr_in6()?.ip())
        };
        (ip == source).then_some(interface.interface_name)
    })
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
