//! DNS queries per second through the DNS capture, against the same queries sent straight
//! to the listener: the per-query cost of the redirect and the conntrack zones.
//!
//! Run by `scripts/bench.sh` inside a throwaway network namespace holding the rules under
//! test. A responder plays the proxy's DNS listener on 127.0.0.1:<port>, owning its socket as
//! the proxy's user (`--proxy-uid`; the zone rules know its answers by their owner). The
//! client (another user) sends one UDP query at a time from a fresh socket each time (a new
//! flow through nat and the zones, as a resolver library's queries are) to `--query` and
//! waits for the answer. Prints `rate=<queries/s> queries=<n> seconds=<s>`.
//!
//! `cargo bench` alone only prints a pointer to the script: the tool needs the namespace.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Inode of the machine's own network namespace (`PROC_NET_INIT_INO`): never measure there.
const INITIAL_NETNS_INODE: u64 = 0xEFFF_FFF9;
const USAGE: &str = "usage: dns_rate --listen-port PORT --query ADDR:PORT --proxy-uid UID \
[--seconds S] [--queries N]";

fn set_ids(id: u32) -> Result<()> {
    // SAFETY: raw syscalls changing only the calling thread's credentials.
    let ok = unsafe {
        libc::syscall(libc::SYS_setresgid, id, id, id) == 0
            && libc::syscall(libc::SYS_setresuid, id, id, id) == 0
    };
    ensure!(
        ok,
        "cannot become {id}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn run() -> Result<Option<String>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().all(|a| a == "--bench") {
        return Ok(None);
    }
    let (mut port, mut query, mut uid, mut seconds, mut queries) =
        (None, None, None, 2.0_f64, 20_000_u64);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().context(USAGE);
        match flag.as_str() {
            "--listen-port" => port = Some(value()?.parse::<u16>()?),
            "--query" => query = Some(value()?.parse::<SocketAddr>()?),
            "--proxy-uid" => uid = Some(value()?.parse::<u32>()?),
            "--seconds" => seconds = value()?.parse()?,
            "--queries" => queries = value()?.parse()?,
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let (port, query, uid) = (
        port.context(USAGE)?,
        query.context(USAGE)?,
        uid.context(USAGE)?,
    );
    let netns = std::fs::metadata("/proc/thread-self/ns/net")?;
    ensure!(
        std::os::unix::fs::MetadataExt::ino(&netns) != INITIAL_NETNS_INODE,
        "refusing to run in the machine's own network namespace"
    );
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || -> Result<()> {
        set_ids(uid)?;
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, port))?;
        ready_tx.send(()).ok();
        let mut buf = [0u8; 512];
        loop {
            let (n, from) = socket.recv_from(&mut buf)?;
            socket.send_to(&buf[..n], from)?;
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the responder did not start")?;
    set_ids(uid + 1)?;
    let ask = |i: u64| -> Result<()> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        let question = i.to_ne_bytes();
        socket.send_to(&question, query)?;
        let mut buf = [0u8; 16];
        let (n, from) = socket.recv_from(&mut buf).context("no answer")?;
        ensure!(
            from == query && buf[..n] == question,
            "answer from {from}, not {query}"
        );
        Ok(())
    };
    for i in 0..200 {
        ask(i)?;
    }
    let started = Instant::now();
    let mut done = 0;
    while done < queries && started.elapsed().as_secs_f64() < seconds {
        ask(done)?;
        done += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Some(format!(
        "rate={:.0} queries={done} seconds={elapsed:.3}",
        done as f64 / elapsed
    )))
}

fn main() -> ExitCode {
    match run() {
        Ok(Some(line)) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("dns_rate measures inside a namespace: run scripts/bench.sh");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dns_rate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
