//! DNS capture (`--proxy-dns-port`): the app's queries over UDP and TCP to port 53 are
//! answered by a stand-in for the proxy's DNS listener inside the app namespace, while the
//! proxy's own queries (its UID) reach the real resolver, a small server in the peer
//! namespace. With `--dns-capture resolv.conf` only the resolvers of the namespace's
//! /etc/resolv.conf are captured (`ip netns exec` mounts /etc/netns/NAME/resolv.conf over
//! it). Every backend; needs root.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::*;

const PROXY_DNS_PORT: u16 = 15053;
const PROXY_UID: u32 = 1337;
const APP_UID: u32 = 1000;
/// A second resolver address on the peer, absent from resolv.conf.
const OTHER_RESOLVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
const TIMEOUT: Duration = Duration::from_secs(3);

/// Answers (from `ip`) every UDP datagram and TCP connection on `port` with `answer` (followed by the
/// query, so a reply is tied to its question), for the life of the test process.
fn serve(ns: &TestNetns, ip: Ipv4Addr, port: u16, answer: &'static str, owner: Option<u32>) {
    let (udp, tcp) = ns.run_inside(|| {
        // The proxy's sockets belong to its user: the conntrack-zone rules know its answers
        // by their owner.
        if let Some(id) = owner {
            // SAFETY: raw syscalls changing only this short-lived thread's credentials.
            unsafe {
                assert_eq!(libc::syscall(libc::SYS_setresgid, id, id, id), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, id, id, id), 0);
            }
        }
        let any = SocketAddr::from((ip, port));
        (
            UdpSocket::bind(any).unwrap(),
            TcpListener::bind(any).unwrap(),
        )
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let mut reply = answer.as_bytes().to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = udp.send_to(&reply, from);
        }
    });
    std::thread::spawn(move || {
        for stream in tcp.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 512];
            let n = stream.read(&mut buf).unwrap_or(0);
            let mut reply = answer.as_bytes().to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = stream.write_all(&reply);
        }
    });
}

/// Runs `f` in `ns` on a thread with this UID and GID (raw syscalls: glibc's setuid would
/// change every thread of the test).
fn as_user<T: Send>(ns: &TestNetns, id: u32, f: impl FnOnce() -> T + Send) -> T {
    ns.run_inside(|| {
        // SAFETY: plain syscalls changing only this short-lived thread's credentials.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setresgid, id, id, id), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, id, id, id), 0);
        }
        f()
    })
}

/// Who answers a UDP and a TCP query to `resolver:53` from `uid`: "proxy", "upstream" or
/// what went wrong.
fn answers(ns: &TestNetns, uid: u32, resolver: IpAddr) -> (String, String) {
    as_user(ns, uid, || {
        let to = SocketAddr::new(resolver, 53);
        let udp = (|| -> std::io::Result<String> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            socket.send_to(b"?udp", to)?;
            let mut buf = [0u8; 512];
            let (n, from) = socket.recv_from(&mut buf)?;
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            // The answer must come back from the address asked (NAT undone).
            Ok(if from == to {
                text
            } else {
                format!("{text} from {from}")
            })
        })()
        .unwrap_or_else(|e| format!("udp error: {e}"));
        let tcp = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&to, TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.write_all(b"?tcp")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })()
        .unwrap_or_else(|e| format!("tcp error: {e}"));
        (udp, tcp)
    })
}

fn expect(got: (String, String), who: &str, what: &str) {
    assert_eq!(
        got,
        (format!("{who}?udp"), format!("{who}?tcp")),
        "{what}: expected {who} to answer both queries"
    );
}

fn check(backend: &str) {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    net.peer.add_address(IpAddr::V4(OTHER_RESOLVER));
    // Bound to each address, so each answers from the address asked.
    serve(&net.peer, PEER_V4, 53, "upstream", None);
    serve(&net.peer, OTHER_RESOLVER, 53, "upstream", None);
    // On loopback, as Istio's and Kuma's DNS listeners: a redirected query arrives at
    // 127.0.0.1, and a reply from there is what conntrack turns back into the resolver's.
    serve(
        &net.app,
        Ipv4Addr::LOCALHOST,
        PROXY_DNS_PORT,
        "proxy",
        Some(PROXY_UID),
    );
    let resolver = IpAddr::V4(PEER_V4);
    let other = IpAddr::V4(OTHER_RESOLVER);
    expect(answers(&net.app, APP_UID, resolver), "upstream", "no rules");

    let base = [
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
    assert_exit(&meshinit(&net.app, &base), 0);
    expect(
        answers(&net.app, APP_UID, resolver),
        "proxy",
        "the app's query",
    );
    expect(answers(&net.app, APP_UID, other), "proxy", "any resolver");
    expect(
        answers(&net.app, PROXY_UID, resolver),
        "upstream",
        "the proxy's own query",
    );

    // Only the resolvers of resolv.conf.
    let dir = std::path::PathBuf::from(format!("/etc/netns/{}", net.app.name()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("resolv.conf"), format!("nameserver {PEER_V4}\n")).unwrap();
    let mut scoped = base.to_vec();
    // Port 53 ignored for egress: TCP to another resolver then goes out directly instead of
    // to ProxyEgressPort, while the DNS capture (planned before the exclusions) still wins.
    scoped.extend([
        "--dns-capture",
        "resolv.conf",
        "--egress-ignored-ports",
        "53",
    ]);
    let output = meshinit(&net.app, &scoped);
    let _ = std::fs::remove_dir_all(&dir);
    assert_exit(&output, 0);
    expect(
        answers(&net.app, APP_UID, resolver),
        "proxy",
        "a resolv.conf resolver",
    );
    expect(
        answers(&net.app, APP_UID, other),
        "upstream",
        "a resolver not in resolv.conf",
    );

    assert_exit(&meshinit(&net.app, &["clean"]), 0);
    expect(
        answers(&net.app, APP_UID, resolver),
        "upstream",
        "after clean",
    );
}

#[test]
fn dns_queries_reach_the_proxy_stand_in_with_native_nftables() {
    check("nftables");
}

#[test]
fn dns_queries_reach_the_proxy_stand_in_with_iptables_nft() {
    check("iptables-nft");
}

#[test]
fn dns_queries_reach_the_proxy_stand_in_with_iptables_legacy() {
    check("iptables-legacy");
}
