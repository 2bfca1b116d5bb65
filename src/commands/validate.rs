//! `meshinit validate`: the fail-closed check of a pod meshed by the CNI plugin, run as the
//! pod's first init container (as Linkerd's network validator is). A pod created while
//! meshinit's entry was missing from the node's CNI list (a new node before the DaemonSet
//! runs, its rolling update, the interface plugin's agent rewriting the list) got no rules;
//! without this it would run unmeshed and nobody would know. It needs no privilege: it
//! listens on ProxyEgressPort itself (the proxy has not started yet) and connects to an
//! address outside the pod; the connection reaches its own listener only if the pod's
//! egress is redirected. It retries until `--timeout`, then fails, so the pod never starts
//! without its rules.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use tracing::{debug, info};

use crate::error::{Error, Result};

/// Exit codes shared with `verify`.
const REDIRECTION_BROKEN: i32 = 5;
const COULD_NOT_RUN: i32 = 6;
/// One attempt's bound: a redirected connection is accepted at once, an unredirected one
/// to a TEST-NET address goes nowhere.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Between attempts that failed at once (refused, unreachable).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The pod's ProxyEgressPort (its appmesh.k8s.aws/proxyEgressPort, or the entry's
    /// proxyEgressPort): where its outbound connections must land.
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    pub proxy_egress_port: u16,
    /// How long to wait for the redirection before failing (exit 5).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The address the test connection is made to (TEST-NET-1 by default: it is never
    /// reached when redirection works). Run as a user other than the proxy's IgnoredUID.
    #[arg(long, value_name = "ADDRESS:PORT", default_value = "192.0.2.1:80")]
    pub destination: SocketAddr,
}

impl ValidateArgs {
    pub fn exec(self) -> Result<i32> {
        let token = format!("meshinit-validate-{:016x}", random()?);
        let bind = match self.destination {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.proxy_egress_port)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, self.proxy_egress_port)),
        };
        let listener = match TcpListener::bind(bind) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!(
                    "meshinit validate: cannot listen on ProxyEgressPort {} ({e}); run it \
                     before the proxy starts, e.g. as the pod's first init container",
                    self.proxy_egress_port
                );
                return Ok(COULD_NOT_RUN);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let server = serve(listener, token.clone(), Arc::clone(&stop));
        let deadline = Instant::now() + self.timeout;
        let mut attempts = 0u32;
        let proven = loop {
            attempts += 1;
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            let bound = ATTEMPT_TIMEOUT.min(deadline - now);
            match attempt(self.destination, bound, &token) {
                Ok(true) => break true,
                Ok(false) => {}
                Err(why) => {
                    debug!(attempt = attempts, "not redirected: {why}");
                    std::thread::sleep(
                        RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
            }
        };
        stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, self.proxy_egress_port)),
            ATTEMPT_TIMEOUT,
        );
        let _ = server.join();
        if proven {
            info!(
                "outbound connections are redirected to ProxyEgressPort {} (a connection to {} \
                 reached it)",
                self.proxy_egress_port, self.destination
            );
            println!("meshinit validate: redirection in place");
            return Ok(0);
        }
        eprintln!(
            "meshinit validate: outbound connections are NOT redirected to ProxyEgressPort {} \
             ({attempts} connections to {} within {}); the pod's rules are missing (it was \
             probably created while meshinit's CNI entry was absent from the node's list): \
             delete the pod so that it is created again with them",
            self.proxy_egress_port,
            self.destination,
            humantime::format_duration(self.timeout)
        );
        Ok(REDIRECTION_BROKEN)
    }
}

/// One connection: `Ok(true)` when it reached our own listener (it was redirected).
fn attempt(
    destination: SocketAddr,
    bound: Duration,
    token: &str,
) -> std::result::Result<bool, String> {
    let stream = TcpStream::connect_timeout(&destination, bound).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(bound.max(Duration::from_millis(50))))
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = stream.take(token.len() as u64).read_to_end(&mut answer);
    Ok(answer == token.as_bytes())
}

/// Answers every connection with `token` until `stop`.
fn serve(
    listener: TcpListener,
    token: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(mut stream) = stream {
                let _ = stream.write_all(token.as_bytes());
            }
        }
    })
}

fn random() -> Result<u64> {
    getrandom::u64().map_err(|e| Error::Environment(format!("no random numbers: {e}")))
}
