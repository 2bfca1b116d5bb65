//! Proves the test harness in `tests/common` against the real kernel, with NAT rules
//! written by hand (never by meshinit), so a meshinit test failure can be trusted to be
//! meshinit's fault. All rules go into the harness's own namespaces.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;

use common::*;

const PROXY_EGRESS_PORT: u16 = 15001;
const PROXY_INGRESS_PORT: u16 = 15000;
const PROXY_UID: u32 = 1337;
const PROXY_GID: u32 = 1337;

fn addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("bad socket address {text}: {e}"))
}

/// Egress to the proxy for everyone but the proxy's own user, like an App Mesh sidecar.
fn redirect_egress_except_proxy_uid(ns: &TestNetns, iptables: &str) {
    ns.iptables(
        iptables,
        &format!(
            "-t nat -A OUTPUT -p tcp -m owner ! --uid-owner {PROXY_UID} \
             -j REDIRECT --to-ports {PROXY_EGRESS_PORT}"
        ),
    );
}

#[test]
fn without_rules_app_reaches_peer_directly_over_ipv4_and_ipv6() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    for ip in [
        "203.0.113.7",
        "192.0.2.10",
        "169.254.169.254",
        "2001:db8:ff::7",
    ] {
        net.peer.add_address(ip.parse().unwrap());
    }
    let remote = net.peer.listen(80);
    for dest in [
        "203.0.113.7:80",
        "192.0.2.10:80",
        "169.254.169.254:80",
        "[2001:db8:ff::7]:80",
        "198.51.100.2:80",
        "[2001:db8:100::2]:80",
    ] {
        let outcome = net.app.connect(addr(dest), None, DEFAULT_CONNECT_TIMEOUT);
        assert_direct(&outcome, &remote);
        let landing = outcome.landing();
        let expected_client: std::net::IpAddr = if landing.local_addr.is_ipv4() {
            APP_V4.into()
        } else {
            APP_V6.into()
        };
        assert_eq!(landing.client_addr.ip(), expected_client, "{outcome}");
    }
    assert_eq!(remote.accepted().len(), 6);
}

#[test]
fn owner_redirect_ipv4_sends_everyone_but_the_proxy_uid_to_the_proxy() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    net.peer.add_address("203.0.113.7".parse().unwrap());
    let remote = net.peer.listen(80);
    let proxy = net.app.listen(PROXY_EGRESS_PORT);
    redirect_egress_except_proxy_uid(&net.app, "iptables-nft");
    let dest = addr("203.0.113.7:80");

    let as_root = net.app.connect(dest, None, DEFAULT_CONNECT_TIMEOUT);
    assert_redirected(&as_root, &proxy, dest);
    // From OUTPUT, REDIRECT rewrites the destination to loopback.
    assert_eq!(
        as_root.landing().local_addr,
        addr("127.0.0.1:15001"),
        "{as_root}"
    );

    let as_proxy = net
        .app
        .connect(dest, Some((PROXY_UID, PROXY_GID)), DEFAULT_CONNECT_TIMEOUT);
    assert_direct(&as_proxy, &remote);

    // Any other non-root UID is redirected too: the match is on the UID, not on "root".
    let as_other = net
        .app
        .connect(dest, Some((4242, 4242)), DEFAULT_CONNECT_TIMEOUT);
    assert_redirected(&as_other, &proxy, dest);
}

#[test]
fn owner_match_sees_the_client_threads_gid() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    net.peer.add_address("203.0.113.7".parse().unwrap());
    let remote = net.peer.listen(80);
    let proxy = net.app.listen(PROXY_EGRESS_PORT);
    net.app.iptables(
        "iptables-nft",
        "-t nat -A OUTPUT -p tcp -m owner ! --gid-owner 1337 -j REDIRECT --to-ports 15001",
    );
    let dest = addr("203.0.113.7:80");
    let proxy_gid = net
        .app
        .connect(dest, Some((4242, 1337)), DEFAULT_CONNECT_TIMEOUT);
    assert_direct(&proxy_gid, &remote);
    let other_gid = net
        .app
        .connect(dest, Some((1337, 4242)), DEFAULT_CONNECT_TIMEOUT);
    assert_redirected(&other_gid, &proxy, dest);
}

#[test]
fn owner_redirect_ipv6_sends_everyone_but_the_proxy_uid_to_the_proxy() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    net.peer.add_address("2001:db8:ff::7".parse().unwrap());
    let remote = net.peer.listen(80);
    let proxy = net.app.listen(PROXY_EGRESS_PORT);
    redirect_egress_except_proxy_uid(&net.app, "ip6tables-nft");
    let dest = addr("[2001:db8:ff::7]:80");

    let as_root = net.app.connect(dest, None, DEFAULT_CONNECT_TIMEOUT);
    assert_redirected(&as_root, &proxy, dest);
    assert_eq!(
        as_root.landing().local_addr,
        addr("[::1]:15001"),
        "{as_root}"
    );

    let as_proxy = net
        .app
        .connect(dest, Some((PROXY_UID, PROXY_GID)), DEFAULT_CONNECT_TIMEOUT);
    assert_direct(&as_proxy, &remote);

    // The IPv6 rule leaves IPv4 alone.
    net.peer.add_address("203.0.113.7".parse().unwrap());
    let v4 = net
        .app
        .connect(addr("203.0.113.7:80"), None, DEFAULT_CONNECT_TIMEOUT);
    assert_direct(&v4, &remote);
}

#[test]
fn prerouting_redirect_sends_inbound_app_port_traffic_to_the_ingress_proxy() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let app_port = net.app.listen(9080);
    let ingress_proxy = net.app.listen(PROXY_INGRESS_PORT);
    let other_port = net.app.listen(9090);
    for iptables in ["iptables-nft", "ip6tables-nft"] {
        net.app.iptables(
            iptables,
            "-t nat -A PREROUTING -p tcp --dport 9080 -j REDIRECT --to-ports 15000",
        );
    }
    for dest in ["198.51.100.1:9080", "[2001:db8:100::1]:9080"] {
        let dest = addr(dest);
        let inbound = net.peer.connect(dest, None, DEFAULT_CONNECT_TIMEOUT);
        assert_redirected(&inbound, &ingress_proxy, dest);
        // From PREROUTING, REDIRECT goes to the receiving interface's address.
        assert_eq!(
            inbound.landing().local_addr,
            SocketAddr::new(dest.ip(), 15000),
            "{inbound}"
        );
    }
    // Ports not named in the rule, and the app's own connections, are untouched.
    let other = net
        .peer
        .connect(addr("198.51.100.1:9090"), None, DEFAULT_CONNECT_TIMEOUT);
    assert_direct(&other, &other_port);
    let local = net
        .app
        .connect(addr("127.0.0.1:9080"), None, DEFAULT_CONNECT_TIMEOUT);
    assert_direct(&local, &app_port);
    assert!(app_port.accepted().len() == 1, "{:?}", app_port.accepted());
}

#[test]
fn namespaces_are_deleted_on_drop_and_on_panic() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let names = [net.app.name().to_string(), net.peer.name().to_string()];
    assert!(names.iter().all(|name| name.starts_with(NETNS_PREFIX)));
    assert!(names.iter().all(|name| netns_exists(name)));
    assert_eq!(
        net.app.path(),
        std::path::Path::new(NETNS_DIR).join(&names[0])
    );
    drop(net);
    assert!(
        names.iter().all(|name| !netns_exists(name)),
        "{names:?} survived drop"
    );
    let listed = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        names.iter().all(|name| !listed.contains(name.as_str())),
        "{listed}"
    );

    let mut names_in_panicking_test = Vec::new();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = NetnsPair::new();
        let _listener = net.app.listen(80);
        names_in_panicking_test = vec![net.app.name().to_string(), net.peer.name().to_string()];
        panic!("simulated test failure");
    }));
    assert!(unwound.is_err());
    assert_eq!(names_in_panicking_test.len(), 2);
    assert!(
        names_in_panicking_test
            .iter()
            .all(|name| !netns_exists(name)),
        "{names_in_panicking_test:?} survived a panic"
    );
}

#[test]
fn dropped_listener_stops_answering_and_redirect_to_nothing_is_refused() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let dest = addr("198.51.100.2:80");
    let remote = net.peer.listen(80);
    assert_direct(
        &net.app.connect(dest, None, DEFAULT_CONNECT_TIMEOUT),
        &remote,
    );
    drop(remote);
    assert_refused(&net.app.connect(dest, None, DEFAULT_CONNECT_TIMEOUT));
    // The same port can be listened on again at once (TIME_WAIT does not block it).
    let again = net.peer.listen(80);
    assert_direct(
        &net.app.connect(dest, None, DEFAULT_CONNECT_TIMEOUT),
        &again,
    );

    // A redirect to a proxy port nobody listens on is refused, quickly, not a timeout.
    redirect_egress_except_proxy_uid(&net.app, "iptables-nft");
    let started = std::time::Instant::now();
    assert_refused(&net.app.connect(dest, None, DEFAULT_CONNECT_TIMEOUT));
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn black_holed_connection_times_out_within_the_timeout() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let _remote = net.peer.listen(80);
    net.peer
        .iptables("iptables-nft", "-A INPUT -p tcp --dport 80 -j DROP");
    let timeout = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    let outcome = net.app.connect(addr("198.51.100.2:80"), None, timeout);
    assert_failed(&outcome, &ConnectFailure::TimedOut);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn client_threads_leave_the_test_thread_as_it_was() {
    if !require_root() {
        return;
    }
    let netns_inode = || std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    let before = netns_inode();
    // Read on the test thread, i.e. the machine's own namespace (reading changes nothing).
    let host_accept_dad =
        || std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/accept_dad").unwrap();
    let host_accept_dad_before = host_accept_dad();
    let net = NetnsPair::new();
    let _remote = net.peer.listen(80);
    let outcome = net.app.connect(
        addr("198.51.100.2:80"),
        Some((PROXY_UID, PROXY_GID)),
        DEFAULT_CONNECT_TIMEOUT,
    );
    assert!(outcome.result.is_ok(), "{outcome}");
    assert_eq!(netns_inode(), before, "the test thread changed namespace");
    assert!(
        nix::unistd::geteuid().is_root(),
        "the test thread lost root"
    );
    assert!(
        nix::unistd::getegid().as_raw() == 0,
        "the test thread changed GID"
    );
    // run_inside really runs in the namespace, and sysctls written there stay there.
    let inside = net.app.run_inside(netns_inode);
    assert_eq!(inside, std::fs::metadata(net.app.path()).unwrap().ino());
    assert!(!is_machines_namespace(inside));
    let accept_dad = net
        .app
        .run_checked("sysctl", &["-n", "net.ipv6.conf.default.accept_dad"]);
    assert_eq!(accept_dad.trim(), "0");
    assert_eq!(
        host_accept_dad(),
        host_accept_dad_before,
        "a sysctl leaked into the host"
    );
}

#[test]
fn nat_rules_dump_shows_hand_written_rules() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    redirect_egress_except_proxy_uid(&net.app, "iptables-nft");
    net.app.run_checked_with_stdin(
        "ip6tables-nft-restore",
        &["--noflush"],
        "*nat\n-A PREROUTING -p tcp --dport 9080 -j REDIRECT --to-ports 15000\nCOMMIT\n",
    );
    let dump = net.app.nat_rules();
    assert!(dump.contains("--to-ports 15001"), "{dump}");
    assert!(
        dump.contains("--dport 9080 -j REDIRECT --to-ports 15000"),
        "{dump}"
    );
    // Dumping must not create legacy tables as a side effect.
    // (The file exists only once the kernel has ip_tables loaded, never on a fresh kernel.)
    let legacy = net.app.run_inside(|| {
        std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default()
    });
    assert!(!legacy.lines().any(|t| t == "nat"), "{legacy}");
}

/// Documents what the listener's `original_dst` means for connections that were not
/// NATed, so tests do not read too much into `None`.
#[test]
fn original_dst_of_untouched_connections_depends_on_conntrack_being_in_use() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let app_listener = net.app.listen(80);
    let v4 = addr("198.51.100.1:80");
    let v6 = addr("[2001:db8:100::1]:80");
    let original_dst = |dest| {
        net.peer
            .connect(dest, None, DEFAULT_CONNECT_TIMEOUT)
            .landing()
            .original_dst
    };

    // No rule uses conntrack: the kernel has no entry, SO_ORIGINAL_DST fails (ENOENT).
    assert_eq!(original_dst(v4), None);
    // An IPv4 REDIRECT rule (matching something else) turns on IPv4 conntrack only: the
    // untouched connection's "original" destination is just its real destination.
    net.app.iptables(
        "iptables-nft",
        "-t nat -A PREROUTING -p tcp --dport 1 -j REDIRECT --to-ports 2",
    );
    assert_eq!(original_dst(v4), Some(v4));
    assert_eq!(original_dst(v6), None);
    // With iptables-nft it is the rule, not the table, that keeps conntrack on.
    net.app.iptables("iptables-nft", "-t nat -F PREROUTING");
    assert_eq!(original_dst(v4), None);
    assert_direct(
        &net.peer.connect(v4, None, DEFAULT_CONNECT_TIMEOUT),
        &app_listener,
    );
}

/// Runs `program args` with the fakes first on PATH.
fn run_with_fakes(fakes: &FakeTools, program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .env("PATH", fakes.path_env())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

#[test]
fn fake_tools_fail_pass_through_delay_and_log_their_calls() {
    let fakes = FakeTools::new();
    fakes.add("echo", FakeBehavior::fail(3, "echo: injected failure"));
    let output = run_with_fakes(&fakes, "echo", &["-n", "one"]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "echo: injected failure"
    );
    assert!(output.stdout.is_empty());

    // Rules by argument: the first match wins; anything else runs the real program.
    fakes.add("echo", FakeBehavior::Real);
    fakes.add_when("echo", "restore", FakeBehavior::fail(1, "boom"));
    fakes.add_when(
        "echo",
        "save",
        FakeBehavior::RealThenFail {
            code: 5,
            stderr: "late".into(),
        },
    );
    let plain = run_with_fakes(&fakes, "echo", &["hello", "world"]);
    assert_eq!(plain.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "hello world\n");
    let restore = run_with_fakes(&fakes, "echo", &["ipset", "restore", "-exist"]);
    assert_eq!(restore.status.code(), Some(1));
    assert!(restore.stdout.is_empty());
    let save = run_with_fakes(&fakes, "echo", &["save"]);
    assert_eq!(save.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&save.stdout), "save\n");
    assert_eq!(String::from_utf8_lossy(&save.stderr), "late");

    fakes.add(
        "echo",
        FakeBehavior::RealAfterDelay(std::time::Duration::from_millis(300)),
    );
    let started = std::time::Instant::now();
    let delayed = run_with_fakes(&fakes, "echo", &["late"]);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(String::from_utf8_lossy(&delayed.stdout), "late\n");

    assert_eq!(
        fakes.calls("echo"),
        [
            "-n one",
            "hello world",
            "ipset restore -exist",
            "save",
            "late"
        ]
    );
    let dir = fakes.dir().to_path_buf();
    drop(fakes);
    assert!(!dir.exists(), "the fakes' directory is removed on drop");
}

#[test]
fn a_hanging_fake_hangs_until_the_fakes_are_dropped() {
    let fakes = FakeTools::new();
    fakes.add("iptables-nft-restore", FakeBehavior::Hang);
    let mut child = std::process::Command::new("iptables-nft-restore")
        .arg("--noflush")
        .env("PATH", fakes.path_env())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while fakes.hanging_pids().is_empty() && started.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(fakes.hanging_pids(), [child.id() as i32]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the fake still runs");
    drop(fakes);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "dropping the fakes kills it");
}
