//! The DNS conntrack-zone case (istio/istio#33469): many concurrent UDP queries from the app
//! while the proxy stand-in forwards each upstream from the very source port the app used.
//! In one conntrack zone the proxy's upstream query has the app's 4-tuple, is taken for the
//! app's flow and redirected back to the proxy, so no answer comes from upstream. With the
//! zones meshinit programs (raw table / a raw-priority chain) every query is answered through
//! the proxy with the upstream answer. The test first removes the zone rules by hand to show
//! the failure, then applies again (which restores them) and expects every answer right.
//! Every backend; needs root.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
};

use common::*;

const QUERIES: u16 = 48;
const PROXY_UID: u32 = 1337;
const APP_UID: u32 = 1000;
const DNS_PORT: u16 = 15053;

fn set_ids(id: u32) {
    // SAFETY: raw syscalls changing only the calling thread's credentials.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_setresgid, id, id, id), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, id, id, id), 0);
    }
}

/// A UDP socket on `addr` that shares its port (SO_REUSEADDR), as a DNS proxy forwarding
/// from the client's port does.
fn shared_port_socket(addr: SocketAddrV4) -> UdpSocket {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::from(addr)).unwrap();
    UdpSocket::from(fd)
}

/// Upstream: answers `upstream ` + the query, from PEER_V4:53.
fn upstream(net: &NetnsPair, stop: Arc<AtomicBool>) {
    let socket = net
        .peer
        .run_inside(|| UdpSocket::bind(SocketAddrV4::new(PEER_V4, 53)).unwrap());
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let mut reply = b"upstream ".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, from);
            }
        }
    });
}

/// Sends every query concurrently from its own port (from `first_port`) while the proxy
/// stand-in (UID 1337) forwards each upstream from that same port; returns the queries not
/// answered `proxy: upstream <query>` from the resolver's address.
fn wrong_answers(net: &NetnsPair, first_port: u16) -> Vec<String> {
    let resolver = SocketAddr::from((PEER_V4, 53));
    net.app.run_inside(|| {
        let stop = AtomicBool::new(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let stop = &stop;
            scope.spawn(move || {
                set_ids(PROXY_UID);
                // Created as the proxy's user: the owner match sees the socket's owner.
                let proxy = UdpSocket::bind((Ipv4Addr::LOCALHOST, DNS_PORT)).unwrap();
                proxy
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let proxy = &proxy;
                std::thread::scope(|forwards| {
                    let mut buf = [0u8; 512];
                    // One forward per query and client port: without zones the proxy's own
                    // forwarded query comes back to it, and forwarding that again would
                    // never end.
                    let mut forwarded = std::collections::HashSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((n, from)) = proxy.recv_from(&mut buf) else {
                            continue;
                        };
                        if !forwarded.insert((from, buf[..n].to_vec())) {
                            let _ = proxy.send_to(b"proxy: its own query came back", from);
                            continue;
                        }
                        let query = buf[..n].to_vec();
                        forwards.spawn(move || {
                            let SocketAddr::V4(from_v4) = from else {
                                return;
                            };
                            // From the app's own port, as a transparent DNS proxy would.
                            let upstream =
                                shared_port_socket(SocketAddrV4::new(APP_V4, from_v4.port()));
                            upstream
                                .set_read_timeout(Some(Duration::from_millis(1500)))
                                .unwrap();
                            let _ = upstream.send_to(&query, resolver);
                            let mut answer = [0u8; 512];
                            let upstream_answer = match upstream.recv_from(&mut answer) {
                                Ok((m, source)) if source == resolver => answer[..m].to_vec(),
                                Ok((m, source)) => format!(
                                    "{} from {source}",
                                    String::from_utf8_lossy(&answer[..m])
                                )
                                .into_bytes(),
                                Err(_) => b"no upstream answer".to_vec(),
                            };
                            drop(upstream);
                            let mut reply = b"proxy: ".to_vec();
                            reply.extend_from_slice(&upstream_answer);
                            let _ = proxy.send_to(&reply, from);
                        });
                    }
                });
            });
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the proxy stand-in listens");
            let clients: Vec<_> = (0..QUERIES)
                .map(|i| {
                    scope.spawn(move || {
                        set_ids(APP_UID);
                        let port = first_port + i;
                        let socket =
                            shared_port_socket(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
                        socket
                            .set_read_timeout(Some(Duration::from_secs(4)))
                            .unwrap();
                        // A lost datagram is asked again, as a resolver library does; an
                        // answer that is wrong is never retried.
                        let mut last = String::new();
                        for attempt in 1..=3 {
                            let query = format!("q{port}#{attempt}");
                            socket.send_to(query.as_bytes(), resolver).unwrap();
                            let mut buf = [0u8; 512];
                            let expected = format!("proxy: upstream {query}");
                            match socket.recv_from(&mut buf) {
                                Ok((n, from)) => {
                                    let got = String::from_utf8_lossy(&buf[..n]).to_string();
                                    return (got != expected || from != resolver)
                                        .then(|| format!("{query}: {got:?} from {from}"));
                                }
                                Err(e) => last = format!("{query}: no answer ({e})"),
                            }
                        }
                        Some(last)
                    })
                })
                .collect();
            let wrong: Vec<String> = clients
                .into_iter()
                .filter_map(|c| c.join().unwrap())
                .collect();
            stop.store(true, Ordering::Relaxed);
            wrong
        })
    })
}

fn strip_zones(net: &NetnsPair, backend: &str) {
    if backend == "nftables" {
        for chain in ["dns_zones_output", "dns_zones_prerouting"] {
            net.app
                .run_checked("nft", &["flush", "chain", "inet", "meshinit", chain]);
        }
    } else {
        for chain in ["MESHINIT_DNS_OUT", "MESHINIT_DNS_PRE"] {
            net.app.run_checked(backend, &["-t", "raw", "-F", chain]);
        }
    }
}

fn check(backend: &str) {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let stop = Arc::new(AtomicBool::new(false));
    upstream(&net, stop.clone());
    let apply = [
        "apply",
        "--backend",
        backend,
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-dns-port",
        "15053",
    ];
    assert_exit(&meshinit(&net.app, &apply), 0);
    strip_zones(&net, backend);
    let without = wrong_answers(&net, 30000);
    assert!(
        !without.is_empty(),
        "without conntrack zones the proxy's upstream queries should collide with the app's flows"
    );
    // Apply again: the zone rules are back.
    assert_exit(&meshinit(&net.app, &apply), 0);
    let with = wrong_answers(&net, 40000);
    stop.store(true, Ordering::Relaxed);
    assert!(
        with.is_empty(),
        "with zones every query must be answered through the proxy ({} of {QUERIES} without \
         zones failed); wrong:\n  {}",
        without.len(),
        with.join("\n  ")
    );
    let _ = IpAddr::V4(APP_V4);
}

#[test]
fn concurrent_dns_through_the_proxy_needs_and_gets_zones_with_native_nftables() {
    check("nftables");
}

#[test]
fn concurrent_dns_through_the_proxy_needs_and_gets_zones_with_iptables_nft() {
    check("iptables-nft");
}

#[test]
fn concurrent_dns_through_the_proxy_needs_and_gets_zones_with_iptables_legacy() {
    check("iptables-legacy");
}
