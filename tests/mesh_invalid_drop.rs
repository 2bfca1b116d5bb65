//! `--drop-invalid`: an out-of-window TCP segment, injected from the peer namespace into a
//! connection the ingress rules redirected to the proxy, is INVALID to conntrack, so it
//! skips the nat table. Without the drop it reaches the app namespace un-rewritten, at the
//! app port where no socket has the connection, and the kernel answers with a reset (the
//! reset that kills proxied connections in istio/istio#36489). With the drop it never gets
//! there. The app namespace's `Tcp: OutRsts` counter tells the two apart; a marker
//! connection made after the injection bounds the wait (the veth delivers in order). Every
//! backend; needs root.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::*;

const APP_PORT: u16 = 8080;
const PROXY_INGRESS_PORT: u16 = 15006;
const MARKER_PORT: u16 = 7070;
const INJECTED: u64 = 5;

/// `Tcp: OutRsts` of the calling thread's namespace.
fn out_resets() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp readable");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let column = names
        .split_whitespace()
        .position(|n| n == "OutRsts")
        .unwrap();
    values
        .split_whitespace()
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}

fn checksum(bytes: &[u8], mut sum: u32) -> u16 {
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 TCP ACK segment with a correct checksum and a sequence number far outside any
/// window of the connection `from` -> `to`.
fn out_of_window_segment(from: SocketAddrV4, to: SocketAddrV4, seq: u32) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&from.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10; // ACK
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo, 0);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&from.ip().octets());
    ip[16..20].copy_from_slice(&to.ip().octets());
    let sum = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

/// The sequence number `stream` sends next, read in TCP repair mode (root only) and left
/// again at once.
fn next_send_sequence(stream: &TcpStream) -> u32 {
    let fd = stream.as_raw_fd();
    let set = |option: libc::c_int, value: libc::c_int| {
        // SAFETY: a setsockopt of one int on a live socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_TCP,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    };
    set(libc::TCP_REPAIR, 1);
    /// `TCP_SEND_QUEUE` of linux/tcp.h (not in the libc crate).
    const TCP_SEND_QUEUE: libc::c_int = 2;
    set(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
    let mut sequence: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: a getsockopt into a u32 with its length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_QUEUE_SEQ,
            (&mut sequence as *mut u32).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    set(libc::TCP_REPAIR, 0);
    sequence
}

fn inject(packet: &[u8], to: Ipv4Addr) {
    // SAFETY: a plain socket(2) call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the buffer and address outlive the call; lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&address as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(
        sent,
        packet.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

/// Applies the ingress config (with or without the drop), injects the segments into a live
/// redirected connection, and returns how many resets the app namespace sent for them.
fn resets_for_injected_segments(backend: &str, drop_invalid: bool) -> u64 {
    let net = NetnsPair::new();
    let mut args = vec![
        "apply",
        "--backend",
        backend,
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-ingress-port",
        "15006",
        "--app-ports",
        "8080",
    ];
    if drop_invalid {
        args.push("--drop-invalid");
    }
    assert_exit(&meshinit(&net.app, &args), 0);

    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let (proxy, marker) = net.app.run_inside(|| {
        (
            TcpListener::bind(any(PROXY_INGRESS_PORT)).unwrap(),
            TcpListener::bind(any(MARKER_PORT)).unwrap(),
        )
    });
    let app_addr = SocketAddrV4::new(APP_V4, APP_PORT);
    let client = net
        .peer
        .run_inside(|| TcpStream::connect_timeout(&app_addr.into(), Duration::from_secs(5)))
        .expect("the peer reaches the app port");
    let (_accepted, _) = proxy
        .accept()
        .expect("the proxy stand-in gets the connection");
    let SocketAddr::V4(from) = client.local_addr().unwrap() else {
        unreachable!()
    };

    let before = net.app.run_inside(out_resets);
    // A quarter of the sequence space ahead of what the client sends next: always over
    // conntrack's upper bound (a fixed number could land behind the window, which conntrack
    // ignores instead of marking INVALID).
    let segment = out_of_window_segment(
        from,
        app_addr,
        next_send_sequence(&client).wrapping_add(1 << 30),
    );
    net.peer.run_inside(|| {
        for _ in 0..INJECTED {
            inject(&segment, APP_V4);
        }
    });
    // Delivered in order: once the marker connection is accepted, the segments have been
    // handled one way or the other.
    let _marker_client = net
        .peer
        .run_inside(|| {
            TcpStream::connect_timeout(
                &SocketAddrV4::new(APP_V4, MARKER_PORT).into(),
                Duration::from_secs(5),
            )
        })
        .expect("the marker connection");
    let _ = marker.accept().unwrap();
    // Resets are sent in softirq context right when a segment is handled; a short bounded
    // poll covers a slow machine when they are expected.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let sent = net.app.run_inside(out_resets) - before;
        if sent >= INJECTED || drop_invalid || Instant::now() > deadline {
            return sent;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check(backend: &str) {
    if !require_root() {
        return;
    }
    assert_eq!(
        resets_for_injected_segments(backend, false),
        INJECTED,
        "without --drop-invalid, each out-of-window segment reaches the app namespace \
         un-rewritten and is answered with a reset (the failure the option prevents)"
    );
    assert_eq!(
        resets_for_injected_segments(backend, true),
        0,
        "with --drop-invalid no out-of-window segment may reach the app namespace"
    );
}

#[test]
fn out_of_window_segments_never_reach_the_app_with_native_nftables() {
    check("nftables");
}

#[test]
fn out_of_window_segments_never_reach_the_app_with_iptables_nft() {
    check("iptables-nft");
}

#[test]
fn out_of_window_segments_never_reach_the_app_with_iptables_legacy() {
    check("iptables-legacy");
}
