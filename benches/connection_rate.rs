//! New-connection rate through the NAT rules: the per-connection cost of the egress chain.
//!
//! Run by `scripts/bench.sh` inside a throwaway network namespace that holds the rules under
//! test. A listener plays the proxy's egress port; the client opens sequential TCP connections
//! to a TEST-NET address that the rules redirect to it. Only a connection's first packet walks
//! the nat chain, so connections per second is what a long exclusion list costs.
//!
//! Each connection, in one thread: a blocking connect (the kernel completes the handshake with
//! the listening socket by itself), accept, then the client closes with SO_LINGER 0 (an RST)
//! and the accepted socket is closed, so neither side keeps a TIME_WAIT socket and the run
//! never exhausts ephemeral ports. One thread means no cross-CPU wake-ups in the measured
//! path, which otherwise make the rate swing with scheduling. It stops after `--connections`
//! or `--seconds`, whichever comes first, and prints one line:
//! `rate=<connections/s> connections=<n> seconds=<s> cpu_rate=<connections per CPU second>
//! cpu_seconds=<s>`; the second rate divides by the thread's own CPU time, so it moves less
//! when other processes compete for the CPUs.
//!
//! `cargo bench` alone only prints a pointer to the script: the tool needs the namespace.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;

/// Inode of the machine's own network namespace (`PROC_NET_INIT_INO`): never measure there.
const INITIAL_NETNS_INODE: u64 = 0xEFFF_FFF9;

#[derive(Debug)]
struct Options {
    /// Where the listener binds: where the rules redirect to (127.0.0.1:<ProxyEgressPort>).
    listen: SocketAddr,
    /// Where the client connects: an address the rules redirect.
    connect: SocketAddr,
    /// Upper bound of measured connections.
    connections: u64,
    /// Upper bound of the measured time.
    seconds: f64,
    /// Connections made before the clock starts (caches, conntrack, page faults).
    warmup: u64,
    /// Prove with SO_ORIGINAL_DST that connections went through the redirect.
    expect_redirect: bool,
}

const USAGE: &str = "usage: connection_rate --listen ADDR:PORT --connect ADDR:PORT \
[--connections N] [--seconds S] [--warmup N] [--expect-redirect]\n\
Measures new TCP connections per second inside the current network namespace; \
scripts/bench.sh runs it in namespaces it creates.";

fn parse_args() -> Result<Option<Options>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`: nothing to measure outside the script's namespaces.
    if args.is_empty() || args.iter().all(|a| a == "--bench") {
        return Ok(None);
    }
    let mut listen = None;
    let mut connect = None;
    let mut options = Options {
        listen: "127.0.0.1:15001".parse().expect("valid"),
        connect: "192.0.2.1:80".parse().expect("valid"),
        connections: 20_000,
        seconds: 2.0,
        warmup: 500,
        expect_redirect: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(value()?.parse().context("--listen: not ADDR:PORT")?),
            "--connect" => connect = Some(value()?.parse().context("--connect: not ADDR:PORT")?),
            "--connections" => options.connections = value()?.parse().context("--connections")?,
            "--seconds" => options.seconds = value()?.parse().context("--seconds")?,
            "--warmup" => options.warmup = value()?.parse().context("--warmup")?,
            "--expect-redirect" => options.expect_redirect = true,
            "--bench" => {}
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    options.listen = listen.context("--listen is required")?;
    options.connect = connect.context("--connect is required")?;
    ensure!(
        options.connections > 0 && options.seconds > 0.0,
        "nothing to measure"
    );
    Ok(Some(options))
}

/// One connection through the rules: connect, accept, reset. Returns the accepted socket's
/// view of the original destination when `check` is set.
fn one_connection(
    options: &Options,
    listener: &TcpListener,
    check: bool,
) -> Result<Option<SocketAddr>> {
    let client = TcpStream::connect_timeout(&options.connect, Duration::from_secs(2))
        .with_context(|| {
            format!(
                "connecting to {} (are the rules installed?)",
                options.connect
            )
        })?;
    let (accepted, peer) = listener.accept().context("accepting")?;
    ensure!(
        peer == client.local_addr()?,
        "a connection from elsewhere reached {}; is something else using it?",
        options.listen
    );
    let original = if check {
        Some(original_destination(&accepted)?)
    } else {
        None
    };
    // Reset rather than close: no TIME_WAIT, so ports are free again at once.
    setsockopt(
        &client,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )?;
    drop(client);
    drop(accepted);
    Ok(original)
}

/// The destination a redirected connection was addressed to, read on the accepted side.
fn original_destination(accepted: &TcpStream) -> Result<SocketAddr> {
    let addr = match accepted.local_addr()? {
        SocketAddr::V4(_) => {
            let raw = getsockopt(accepted, sockopt::OriginalDst).context("SO_ORIGINAL_DST")?;
            let ip = std::net::Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr));
            SocketAddr::from((ip, u16::from_be(raw.sin_port)))
        }
        SocketAddr::V6(_) => {
            let raw =
                getsockopt(accepted, sockopt::Ip6tOriginalDst).context("IP6T_SO_ORIGINAL_DST")?;
            let ip = std::net::Ipv6Addr::from(raw.sin6_addr.s6_addr);
            SocketAddr::from((ip, u16::from_be(raw.sin6_port)))
        }
    };
    Ok(addr)
}

/// Proves the path with a first connection before anything is timed: it must reach the
/// listener, and with `--expect-redirect` it must have been addressed to `--connect`.
fn probe(options: &Options, listener: &TcpListener) -> Result<()> {
    let original = one_connection(options, listener, options.expect_redirect)?;
    if let Some(original) = original {
        ensure!(
            original == options.connect,
            "the connection to {} reached the listener without being redirected by the rules \
             (original destination {original})",
            options.connect
        );
    }
    Ok(())
}

fn run(options: &Options) -> Result<()> {
    let inode = std::fs::metadata("/proc/thread-self/ns/net")
        .context("reading /proc/thread-self/ns/net")?
        .ino();
    ensure!(
        inode != INITIAL_NETNS_INODE,
        "this is the machine's own network namespace; run inside one made for the benchmark \
         (scripts/bench.sh does)"
    );
    let listener = TcpListener::bind(options.listen)
        .with_context(|| format!("listening on {}", options.listen))?;
    // Bounded: accept gives up after 2 s if a connection was taken by something else.
    setsockopt(&listener, sockopt::ReceiveTimeout, &TimeVal::new(2, 0))?;
    probe(options, &listener)?;
    for _ in 0..options.warmup {
        one_connection(options, &listener, false)?;
    }
    let cpu_start = thread_cpu_nanos()?;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(options.seconds);
    let mut done = 0u64;
    while done < options.connections {
        one_connection(options, &listener, false)?;
        done += 1;
        // Reading the clock every 64 connections keeps it out of the measured cost.
        if done.is_multiple_of(64) && start.elapsed() >= limit {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = (thread_cpu_nanos()? - cpu_start) as f64 / 1e9;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rate={:.0} connections={done} seconds={seconds:.3} cpu_rate={:.0} cpu_seconds={cpu_seconds:.3}",
        done as f64 / seconds,
        done as f64 / cpu_seconds.max(1e-9)
    )?;
    Ok(())
}

/// Time this thread has spent on a CPU, in ns (`/proc/thread-self/schedstat`, first field):
/// the connect, the nat chain walk and the accept all run in it, and unlike the wall clock it
/// does not count the time other processes held the CPU.
fn thread_cpu_nanos() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    stat.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected /proc/thread-self/schedstat: {stat:?}"))
}

fn main() -> ExitCode {
    match parse_args() {
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Some(options)) => match run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("connection_rate: {e:#}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("connection_rate: {e:#}");
            ExitCode::from(2)
        }
    }
}
