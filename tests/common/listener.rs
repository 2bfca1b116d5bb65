//! Listeners that say where a connection landed.
//!
//! `ns.listen(port)` binds 0.0.0.0:port and [::]:port (IPv6-only, so each family is seen
//! by its own socket) inside a namespace. For every connection it accepts, it records a
//! [`Landing`] and writes one line back to the client:
//!
//! `MSHI1 token=<listener token> local=<addr> orig=<addr or -> client=<addr>`
//!
//! The token is random per listener; the client looks it up in this process's registry
//! to learn which listener (namespace + port) answered.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, Shutdown, SockFlag, SockType, SockaddrIn6, bind, getsockopt, listen,
    shutdown, socket, sockopt,
};

use super::client::Landing;
use super::netns::{TestNetns, enter_netns_on_this_thread};

/// First word of a listener's reply; a version so a changed format fails loudly.
pub(super) const REPLY_MAGIC: &str = "MSHI1";
/// How long the accept loop waits before checking whether the listener was dropped; this
/// bounds how long `drop` blocks.
const ACCEPT_POLL_INTERVAL_MS: u16 = 50;

/// Which listener a token belongs to: (namespace name, port). Process-wide because the
/// client that reads a token does not know which test's listener it reached.
static LISTENERS_BY_TOKEN: Mutex<BTreeMap<String, (String, u16)>> = Mutex::new(BTreeMap::new());

pub(super) fn listener_of_token(token: &str) -> Option<(String, u16)> {
    LISTENERS_BY_TOKEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(token)
        .cloned()
}

/// A TCP listener on one port (IPv4 and IPv6) inside one namespace. Stops accepting and
/// closes its sockets when dropped; afterwards connections to the port are refused.
#[derive(Debug)]
pub struct Listener {
    netns: String,
    port: u16,
    token: String,
    accepted: Arc<Mutex<Vec<Landing>>>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Namespace the listener lives in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `netns:port`, the way failure messages name a listener.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.netns, self.port)
    }

    /// Everything this listener accepted so far, oldest first. Useful when the client is
    /// not a harness client (e.g. a connection meshinit itself makes).
    pub fn accepted(&self) -> Vec<Landing> {
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.accept_thread.take() {
            // The accept loop never panics on purpose; if it did, say so without turning
            // an unwinding test into an abort.
            if thread.join().is_err() {
                eprintln!(
                    "warning: accept thread of listener {} panicked",
                    self.describe()
                );
            }
        }
        LISTENERS_BY_TOKEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.token);
    }
}

impl TestNetns {
    /// Starts a [`Listener`] on `port` (IPv4 and IPv6) in this namespace; panics if it
    /// cannot bind. Ports are per namespace, so fixed well-known ports are fine.
    pub fn listen(&self, port: u16) -> Listener {
        assert_ne!(
            port, 0,
            "listen needs a fixed port: IPv4 and IPv6 must share it"
        );
        let token = format!("{:016x}", getrandom::u64().expect("getrandom"));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound_rx) = mpsc::channel::<Result<(), String>>();

        let netns_path = self.path().to_path_buf();
        let reply_identity = ReplyIdentity {
            netns: self.name().to_string(),
            port,
            token: token.clone(),
        };
        let thread_accepted = Arc::clone(&accepted);
        let thread_stop = Arc::clone(&stop);
        // The accept thread joins the namespace for good (it never leaves it and ends when
        // the listener is dropped), binds there, then serves.
        let accept_thread = std::thread::Builder::new()
            .name(format!("listen-{}:{port}", self.name()))
            .spawn(move || {
                let sockets =
                    enter_netns_on_this_thread(&netns_path).and_then(|()| bind_dual_stack(port));
                let sockets = match sockets {
                    Ok(sockets) => {
                        let _ = bound_tx.send(Ok(()));
                        sockets
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                accept_until_stopped(&sockets, &reply_identity, &thread_accepted, &thread_stop);
                stop_listening(&sockets);
            })
            .expect("cannot spawn listener thread");

        match bound_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = accept_thread.join();
                panic!("cannot listen on {}:{port}: {e}", self.name());
            }
            Err(_) => {
                let _ = accept_thread.join();
                panic!(
                    "listener thread for {}:{port} died before binding",
                    self.name()
                );
            }
        }
        LISTENERS_BY_TOKEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), (self.name().to_string(), port));
        Listener {
            netns: self.name().to_string(),
            port,
            token,
            accepted,
            stop,
            accept_thread: Some(accept_thread),
        }
    }
}

/// What the accept thread needs to describe itself in replies and records.
struct ReplyIdentity {
    netns: String,
    port: u16,
    token: String,
}

/// Binds 0.0.0.0:port and [::]:port in the calling thread's namespace, both nonblocking so
/// the accept loop can poll and notice `stop`.
fn bind_dual_stack(port: u16) -> Result<[TcpListener; 2], String> {
    // std sets SO_REUSEADDR, so a port can be listened on again right after a drop even
    // though the listener's closed connections sit in TIME_WAIT.
    let v4 = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| format!("bind 0.0.0.0:{port}: {e}"))?;
    // std cannot set IPV6_V6ONLY before bind, and without it [::]:port would also take
    // IPv4 and clash with the socket above.
    let v6 = (|| -> nix::Result<TcpListener> {
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
        listen(&fd, Backlog::new(128)?)?;
        Ok(TcpListener::from(fd))
    })()
    .map_err(|e| format!("bind [::]:{port}: {e}"))?;
    for socket in [&v4, &v6] {
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
    }
    Ok([v4, v6])
}

fn accept_until_stopped(
    sockets: &[TcpListener; 2],
    identity: &ReplyIdentity,
    accepted: &Mutex<Vec<Landing>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut poll_fds = sockets
            .each_ref()
            .map(|socket| PollFd::new(socket.as_fd(), PollFlags::POLLIN));
        match poll(&mut poll_fds, ACCEPT_POLL_INTERVAL_MS) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                eprintln!("listener {}:{}: poll: {e}", identity.netns, identity.port);
                return;
            }
        }
        for socket in sockets {
            // Nonblocking: the connection may be gone by now (WouldBlock), and a queue may
            // hold several connections.
            while let Ok((stream, _)) = socket.accept() {
                answer(stream, identity, accepted);
            }
        }
    }
}

/// Takes the sockets out of LISTEN before they are closed. Closing alone is not enough
/// when tests run in parallel: a child process another thread is forking (`ip`,
/// `iptables`…) holds copies of every fd until it execs, so the socket would keep
/// accepting connections (later reset) and keep the port busy (EADDRINUSE on re-listen)
/// for a moment after the listener was dropped. shutdown() acts on the socket itself.
fn stop_listening(sockets: &[TcpListener; 2]) {
    for socket in sockets {
        let _ = shutdown(socket.as_raw_fd(), Shutdown::Both);
    }
}

/// Records where one accepted connection landed and tells the client, then closes it.
/// Recording comes first, so once a client has its reply, `Listener::accepted` shows it.
fn answer(stream: TcpStream, identity: &ReplyIdentity, accepted: &Mutex<Vec<Landing>>) {
    let unknown = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let local_addr = stream.local_addr().unwrap_or(unknown);
    let client_addr = stream.peer_addr().unwrap_or(unknown);
    let original_dst = original_dst(&stream, &local_addr);
    let reply = format!(
        "{REPLY_MAGIC} token={} local={local_addr} orig={} client={client_addr}\n",
        identity.token,
        original_dst.map_or_else(|| "-".to_string(), |addr| addr.to_string()),
    );
    accepted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Landing {
            netns: identity.netns.clone(),
            listener_port: identity.port,
            local_addr,
            original_dst,
            client_addr,
        });
    // Accepted sockets do not inherit O_NONBLOCK on Linux; the timeout keeps a client that
    // never reads from stalling the accept loop.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = (&stream).write_all(reply.as_bytes());
    // FIN now, even if a forking thread briefly holds a copy of the fd (see stop_listening).
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// The destination the client asked for before NAT, from conntrack (`SO_ORIGINAL_DST` /
/// `IP6T_SO_ORIGINAL_DST`).
///
/// For a connection that was not NATed this is either the socket's own local address
/// (conntrack tracks the family in this namespace) or `None`: the kernel answers ENOENT
/// when it has no conntrack entry, which is the case when no rule of that family in the
/// namespace uses conntrack. With iptables-nft that means no REDIRECT/DNAT/conntrack-match
/// rule right now (an empty nat table or flushed chain does not count); a legacy nat
/// table turns conntrack on for as long as it exists. A redirected connection always has
/// an entry.
fn original_dst(stream: &TcpStream, local_addr: &SocketAddr) -> Option<SocketAddr> {
    let result = match local_addr {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst).map(|sin| {
            SocketAddr::from((
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        }),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst).map(|sin6| {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            ))
        }),
    };
    match result {
        Ok(addr) => Some(addr),
        Err(nix::errno::Errno::ENOENT) => None,
        Err(e) => {
            // Not expected from the kernel; say so rather than look like "not tracked".
            eprintln!("warning: SO_ORIGINAL_DST on {local_addr} failed: {e}");
            None
        }
    }
}
