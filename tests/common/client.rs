//! A client that connects from inside a namespace, optionally as another UID/GID, and
//! reports which harness listener answered; plus assertions on the outcome.

use std::fmt;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::listener::{Listener, REPLY_MAGIC, listener_of_token};
use super::netns::{TestNetns, enter_netns_on_this_thread};

/// Short, so a rule that black-holes traffic fails a test in seconds instead of hanging
/// it; in these namespaces a working connection takes well under a millisecond.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a connection landed, as seen by the listener that accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    /// Name of the namespace of the listener that accepted the connection.
    pub netns: String,
    /// Port the listener was started on (`ns.listen(port)`).
    pub listener_port: u16,
    /// Local address of the accepted socket: after a REDIRECT this is 127.0.0.1 / ::1 (from
    /// OUTPUT) or the receiving interface's address (from PREROUTING), not what the client
    /// asked for.
    pub local_addr: SocketAddr,
    /// Destination before NAT, from SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST. For a connection
    /// that was not NATed it is `local_addr` if conntrack is active for that family in the
    /// listener's namespace, else `None` (ENOENT: no rule there uses conntrack).
    pub original_dst: Option<SocketAddr>,
    /// Source address of the connection as the listener saw it.
    pub client_addr: SocketAddr,
}

impl fmt::Display for Landing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listener {}:{} (local {}, original dst {}, client {})",
            self.netns,
            self.listener_port,
            self.local_addr,
            self.original_dst
                .map_or_else(|| "none".to_string(), |addr| addr.to_string()),
            self.client_addr
        )
    }
}

/// Why a connection did not reach a harness listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// RST: nothing listens where the packet went (e.g. REDIRECT to a port with no proxy).
    Refused,
    /// No answer within the timeout (dropped packets, missing route back, `lo` down…).
    TimedOut,
    /// EHOSTUNREACH / ENETUNREACH (no route, ICMP unreachable).
    Unreachable(String),
    /// TCP connected, but the other end did not answer like a listener of this process.
    NotHarnessListener(String),
    /// Anything else, e.g. EPERM when a local DROP/REJECT rule hits the SYN.
    Other(String),
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Refused => write!(f, "connection refused"),
            ConnectFailure::TimedOut => write!(f, "timed out"),
            ConnectFailure::Unreachable(e) => write!(f, "unreachable ({e})"),
            ConnectFailure::NotHarnessListener(e) => write!(f, "not a harness listener: {e}"),
            ConnectFailure::Other(e) => write!(f, "failed: {e}"),
        }
    }
}

/// What was tried, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAttempt {
    /// Namespace the client connected from.
    pub from_netns: String,
    pub dest: SocketAddr,
    /// `(uid, gid)` the client's socket was created with; `None` = the test's own (root).
    pub as_user: Option<(u32, u32)>,
}

impl fmt::Display for ConnectAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connect from {} ", self.from_netns)?;
        match self.as_user {
            Some((uid, gid)) => write!(f, "as uid {uid} gid {gid} ")?,
            None => write!(f, "as the test's own user ")?,
        }
        write!(f, "to {}", self.dest)
    }
}

/// Result of [`TestNetns::connect`]: the attempt plus where it landed or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOutcome {
    pub attempt: ConnectAttempt,
    pub result: Result<Landing, ConnectFailure>,
}

impl ConnectOutcome {
    /// Where the connection landed; panics with the failure if it did not land.
    #[track_caller]
    pub fn landing(&self) -> &Landing {
        match &self.result {
            Ok(landing) => landing,
            Err(_) => panic!("expected a landing: {self}"),
        }
    }

    pub fn failure(&self) -> Option<&ConnectFailure> {
        self.result.as_ref().err()
    }
}

impl fmt::Display for ConnectOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(landing) => write!(f, "{} landed on {landing}", self.attempt),
            Err(failure) => write!(f, "{}: {failure}", self.attempt),
        }
    }
}

impl TestNetns {
    /// Connects to `dest` from inside this namespace and reads which harness listener
    /// answered. With `as_user = Some((uid, gid))` the socket belongs to that user (no
    /// supplementary groups), which is what iptables `-m owner` matches on.
    ///
    /// Runs on a fresh thread that enters the namespace and changes only its own
    /// credentials with raw syscalls (glibc's setuid()/setgid() would change every thread
    /// of the test process), then ends, so nothing else is affected.
    pub fn connect(
        &self,
        dest: SocketAddr,
        as_user: Option<(u32, u32)>,
        timeout: Duration,
    ) -> ConnectOutcome {
        let attempt = ConnectAttempt {
            from_netns: self.name().to_string(),
            dest,
            as_user,
        };
        let path = self.path();
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter_netns_on_this_thread(path).map_err(ConnectFailure::Other)?;
                    if let Some((uid, gid)) = as_user {
                        become_user_on_this_thread(uid, gid).map_err(ConnectFailure::Other)?;
                    }
                    connect_and_read_reply(dest, timeout)
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        ConnectOutcome { attempt, result }
    }
}

/// Sets the calling thread's groups, GID and UID (real, effective, saved; filesystem
/// IDs follow). Raw syscalls on purpose: the kernel keeps credentials per thread, and
/// only glibc's wrappers broadcast a change to all threads. Dropping UID 0 also drops the
/// thread's capabilities, which is harmless because it only connects and then ends.
fn become_user_on_this_thread(uid: u32, gid: u32) -> Result<(), String> {
    // SAFETY: plain syscalls with integer arguments and a null group list of length 0.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
            return Err(format!("setgroups: {}", std::io::Error::last_os_error()));
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
            return Err(format!(
                "setresgid({gid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
            return Err(format!(
                "setresuid({uid}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn connect_and_read_reply(dest: SocketAddr, timeout: Duration) -> Result<Landing, ConnectFailure> {
    let mut stream = TcpStream::connect_timeout(&dest, timeout).map_err(classify_connect_error)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| ConnectFailure::Other(format!("set_read_timeout: {e}")))?;
    // The listener writes one short line and closes, so read to EOF (bounded).
    let mut reply = Vec::new();
    let mut chunk = [0u8; 256];
    while reply.len() < 4096 && !reply.contains(&b'\n') {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ConnectFailure::NotHarnessListener(format!(
                    "connected, but no reply within {timeout:?} (got {:?})",
                    String::from_utf8_lossy(&reply)
                )));
            }
            Err(e) => {
                return Err(ConnectFailure::NotHarnessListener(format!(
                    "connected, but reading the reply failed: {e} (got {:?})",
                    String::from_utf8_lossy(&reply)
                )));
            }
        }
    }
    parse_reply(&String::from_utf8_lossy(&reply))
}

fn classify_connect_error(e: std::io::Error) -> ConnectFailure {
    match e.kind() {
        ErrorKind::ConnectionRefused => ConnectFailure::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => ConnectFailure::TimedOut,
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => {
                ConnectFailure::Unreachable(e.to_string())
            }
            _ => ConnectFailure::Other(e.to_string()),
        },
    }
}

/// Parses `MSHI1 token=… local=… orig=… client=…` and resolves the token to its listener.
fn parse_reply(reply: &str) -> Result<Landing, ConnectFailure> {
    let not_ours = |why: &str| ConnectFailure::NotHarnessListener(format!("{why}: {reply:?}"));
    let mut words = reply.split_whitespace();
    if words.next() != Some(REPLY_MAGIC) {
        return Err(not_ours("reply does not start with the harness magic"));
    }
    let (mut token, mut local, mut orig, mut client) = (None, None, None, None);
    for word in words {
        match word.split_once('=') {
            Some(("token", v)) => token = Some(v),
            Some(("local", v)) => local = v.parse::<SocketAddr>().ok(),
            Some(("orig", "-")) => orig = Some(None),
            Some(("orig", v)) => orig = v.parse::<SocketAddr>().ok().map(Some),
            Some(("client", v)) => client = v.parse::<SocketAddr>().ok(),
            _ => {}
        }
    }
    let (Some(token), Some(local_addr), Some(original_dst), Some(client_addr)) =
        (token, local, orig, client)
    else {
        return Err(not_ours("malformed reply"));
    };
    let Some((netns, listener_port)) = listener_of_token(token) else {
        return Err(not_ours(
            "token of no live listener in this process (dropped listener, or another process)",
        ));
    };
    Ok(Landing {
        netns,
        listener_port,
        local_addr,
        original_dst,
        client_addr,
    })
}

/// Asserts that the connection was redirected to `proxy` (right namespace and port) and
/// that the proxy can recover `original_dst`, the address the client asked for.
#[track_caller]
pub fn assert_redirected(outcome: &ConnectOutcome, proxy: &Listener, original_dst: SocketAddr) {
    let landing = match &outcome.result {
        Ok(landing) => landing,
        Err(_) => panic!(
            "expected redirect to proxy {} with original dst {original_dst}, but {outcome}",
            proxy.describe()
        ),
    };
    assert!(
        landing.netns == proxy.netns() && landing.listener_port == proxy.port(),
        "expected redirect to proxy {} with original dst {original_dst}, but {outcome}",
        proxy.describe()
    );
    assert_eq!(
        landing.original_dst,
        Some(original_dst),
        "reached proxy {} but SO_ORIGINAL_DST is wrong: {outcome}",
        proxy.describe()
    );
}

/// Asserts that the connection reached `expected` untouched: that listener, with the
/// accepted socket's local address equal to the destination the client asked for, and no
/// conntrack record of a different original destination.
#[track_caller]
pub fn assert_direct(outcome: &ConnectOutcome, expected: &Listener) {
    let landing = match &outcome.result {
        Ok(landing) => landing,
        Err(_) => panic!(
            "expected a direct connection to {}, but {outcome}",
            expected.describe()
        ),
    };
    assert!(
        landing.netns == expected.netns() && landing.listener_port == expected.port(),
        "expected a direct connection to {}, but {outcome}",
        expected.describe()
    );
    let dest = outcome.attempt.dest;
    assert!(
        landing.local_addr == dest && landing.original_dst.is_none_or(|orig| orig == dest),
        "reached {} but the destination was rewritten on the way: {outcome}",
        expected.describe()
    );
}

/// Asserts that the connection did not land anywhere, failing the way `expected` says
/// (compared by variant; the detail text of `Unreachable`/`Other` is ignored).
#[track_caller]
pub fn assert_failed(outcome: &ConnectOutcome, expected: &ConnectFailure) {
    match &outcome.result {
        Err(failure) if std::mem::discriminant(failure) == std::mem::discriminant(expected) => {}
        _ => panic!("expected the connection to fail with \"{expected}\", but {outcome}"),
    }
}

/// Asserts that the connection was refused (e.g. redirected to a port with no proxy).
#[track_caller]
pub fn assert_refused(outcome: &ConnectOutcome) {
    assert_failed(outcome, &ConnectFailure::Refused);
}
