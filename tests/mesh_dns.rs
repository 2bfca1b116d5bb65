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

    let base = with_dns("apply", backend);
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

/// `command` on `backend` with the configuration these tests share: the proxy's UID, its
/// egress port and DNS capture to 15053.
fn with_dns<'a>(command: &'a str, backend: &'a str) -> Vec<&'a str> {
    vec![
        command,
        "--backend",
        backend,
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-dns-port",
        "15053",
    ]
}

/// `verify --json` in the app namespace with DNS capture on; the report.
fn verify_dns(ns: &TestNetns, backend: &str) -> (Option<i32>, serde_json::Value) {
    verify_dns_with(ns, backend, &[])
}

/// Like [`verify_dns`], with more flags.
fn verify_dns_with(
    ns: &TestNetns,
    backend: &str,
    extra: &[&str],
) -> (Option<i32>, serde_json::Value) {
    let mut args = with_dns("verify", backend);
    args.push("--json");
    args.extend(extra);
    let output = meshinit(ns, &args);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// The dns-capture checks of a report: (family, status, reason).
fn dns_checks(report: &serde_json::Value) -> Vec<(String, String, String)> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["check"] == "dns-capture")
        .map(|c| {
            (
                c["family"].as_str().unwrap_or_default().to_owned(),
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Deletes the UDP DNS redirect from our egress chain, as a broken or tampered rule set.
fn remove_udp_dns_redirect(ns: &TestNetns, backend: &str) {
    if backend == "nftables" {
        let listing = ns.run_checked(
            "nft",
            &["-a", "list", "chain", "inet", "meshinit", "output"],
        );
        let handles: Vec<&str> = listing
            .lines()
            .filter(|l| l.contains("udp dport 53") && l.contains("redirect"))
            .filter_map(|l| l.rsplit("# handle ").next())
            .collect();
        assert!(!handles.is_empty(), "no UDP DNS redirect in:\n{listing}");
        for handle in handles {
            ns.run_checked(
                "nft",
                &[
                    "delete",
                    "rule",
                    "inet",
                    "meshinit",
                    "output",
                    "handle",
                    handle.trim(),
                ],
            );
        }
    } else {
        let rule = [
            "-t",
            "nat",
            "-D",
            "APPMESH_EGRESS",
            "-p",
            "udp",
            "-m",
            "multiport",
            "--dports",
            "53",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15053",
        ];
        ns.run_checked(backend, &rule);
        let ip6 = backend.replacen("iptables", "ip6tables", 1);
        ns.run_checked(&ip6, &rule);
    }
}

/// verify proves DNS capture by traffic: each probe's conntrack entry shows the app's
/// queries redirected to the proxy's DNS port and the proxy's own not, each in its zone;
/// without the UDP redirect rule, or without the zone rules, the dns-capture check fails
/// (and says why).
fn verify_check(backend: &str) {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    assert_exit(&meshinit(&net.app, &with_dns("apply", backend)), 0);
    let (code, report) = verify_dns(&net.app, backend);
    let checks = dns_checks(&report);
    // Per family: UDP and TCP, as the app and as the proxy.
    assert_eq!(checks.len(), 8, "{report:#}");
    assert!(
        checks.iter().all(|(_, status, _)| status == "pass"),
        "{report:#}"
    );
    assert_eq!(code, Some(0), "{report:#}");
    // verify deletes its queries' conntrack entries, whatever their zone.
    let left = net.app.run_inside(|| {
        let mut conntrack = meshinit::conntrack::Conntrack::open().expect("ctnetlink");
        let mut entries = conntrack.dump(false).expect("dump ipv4");
        entries.extend(conntrack.dump(true).expect("dump ipv6"));
        entries
            .into_iter()
            .filter(|e| e.original.destination.port() == 53)
            .collect::<Vec<_>>()
    });
    assert!(left.is_empty(), "DNS probe entries left: {left:#?}");

    remove_udp_dns_redirect(&net.app, backend);
    let (code, report) = verify_dns(&net.app, backend);
    let failed: Vec<_> = dns_checks(&report)
        .into_iter()
        .filter(|(_, status, _)| status == "fail")
        .collect();
    assert_eq!(code, Some(5), "{report:#}");
    // The app's UDP query in each family, and nothing else of DNS.
    assert_eq!(failed.len(), 2, "{report:#}");
    for (_, _, reason) in &failed {
        assert!(
            reason.contains("over UDP as uid") && reason.contains("not redirected"),
            "{reason}"
        );
    }
    let remaining = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail" && c["check"] != "dns-capture")
        .filter(|c| c["check"] != "mesh-rules")
        .count();
    assert_eq!(remaining, 0, "{report:#}");

    // The zone rules gone: every UDP query is tracked in the default zone, which is how
    // capture breaks under load; the redirects themselves still pass.
    assert_exit(&meshinit(&net.app, &with_dns("apply", backend)), 0);
    strip_zones(&net.app, backend);
    let (code, report) = verify_dns(&net.app, backend);
    let checks = dns_checks(&report);
    let failed: Vec<_> = checks.iter().filter(|(_, s, _)| s == "fail").collect();
    assert_eq!(code, Some(5), "{report:#}");
    assert_eq!(failed.len(), 4, "{report:#}");
    for (_, _, reason) in failed {
        assert!(
            reason.contains("over UDP") && reason.contains("tracked in the default conntrack zone"),
            "{reason}"
        );
    }
}

/// Empties our DNS conntrack-zone chains, as in tests/mesh_dns_zones.rs.
fn strip_zones(ns: &TestNetns, backend: &str) {
    if backend == "nftables" {
        for chain in ["dns_zones_output", "dns_zones_prerouting"] {
            ns.run_checked("nft", &["flush", "chain", "inet", "meshinit", chain]);
        }
    } else {
        let ip6 = backend.replacen("iptables", "ip6tables", 1);
        for program in [backend, ip6.as_str()] {
            for chain in ["MESHINIT_DNS_OUT", "MESHINIT_DNS_PRE"] {
                ns.run_checked(program, &["-t", "raw", "-F", chain]);
            }
        }
    }
}

#[test]
fn verify_proves_dns_capture_with_native_nftables() {
    verify_check("nftables");
}

#[test]
fn verify_proves_dns_capture_with_iptables_nft() {
    verify_check("iptables-nft");
}

#[test]
fn verify_proves_dns_capture_with_iptables_legacy() {
    verify_check("iptables-legacy");
}

/// With `--dns-capture resolv.conf` verify's queries go to the real resolver's address,
/// but into its sink: the resolver (on the peer, counting what arrives) sees none of them,
/// whether the rules capture them or not (after clean, every query is uncaptured).
#[test]
fn verify_dns_queries_never_reach_the_resolver() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    for protocol in ["udp", "tcp"] {
        net.peer.iptables(
            "iptables-nft",
            &format!("-A INPUT -d {PEER_V4} -p {protocol} --dport 53"),
        );
    }
    let dir = std::path::PathBuf::from(format!("/etc/netns/{}", net.app.name()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("resolv.conf"), format!("nameserver {PEER_V4}\n")).unwrap();
    let scope = ["--dns-capture", "resolv.conf"];
    let mut apply = with_dns("apply", "nftables");
    apply.extend(scope);
    let applied = meshinit(&net.app, &apply);
    let captured = verify_dns_with(&net.app, "nftables", &scope);
    let cleaned = meshinit(&net.app, &["clean"]);
    let uncaptured = verify_dns_with(&net.app, "nftables", &scope);
    let _ = std::fs::remove_dir_all(&dir);
    assert_exit(&applied, 0);
    assert_exit(&cleaned, 0);

    let at_resolver = |report: &serde_json::Value| {
        let checks = dns_checks(report);
        let destinations: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["check"] == "dns-capture" && c["family"] == "ipv4")
            .filter_map(|c| c["destination"].as_str())
            .collect();
        assert_eq!(destinations.len(), 4, "{report:#}");
        assert!(
            destinations.iter().all(|d| *d == format!("{PEER_V4}:53")),
            "{report:#}"
        );
        checks
    };
    let (code, report) = captured;
    assert_eq!(code, Some(0), "{report:#}");
    assert!(
        at_resolver(&report)
            .iter()
            .all(|(_, s, _)| s == "pass" || s == "not_applicable")
    );
    let (code, report) = uncaptured;
    assert_eq!(code, Some(5), "{report:#}");
    let failed = at_resolver(&report)
        .into_iter()
        .filter(|(family, s, _)| family == "ipv4" && s == "fail")
        .count();
    assert_eq!(failed, 2, "the app's UDP and TCP queries: {report:#}");

    let counted = net.peer.iptables("iptables-nft", "-L INPUT -v -x -n");
    let packets: Vec<u64> = counted
        .lines()
        .filter(|l| l.contains("dpt:53"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(
        packets,
        vec![0, 0],
        "queries reached the resolver:\n{counted}"
    );
}
