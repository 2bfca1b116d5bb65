//! `meshinit verify` and `meshinit apply --verify` against real rules in throwaway
//! namespaces (needs root): correct rules pass; missing rules, a redirect that catches the
//! proxy's own user, redirected ignored ports and destinations, and an IPv6 family left out
//! fail with the reason; a taken proxy port or a downed loopback is "could not run".
//! Broken rules are installed by hand (iptables-nft-restore inside the namespace).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");
const VERIFY_FAILED: i32 = 5;
const VERIFY_COULD_NOT_RUN: i32 = 6;

/// The configuration of every test: the proxy's user and group, both proxy ports, ignored
/// ports with a range, and ignored networks besides the always-ignored metadata endpoints.
const CONFIG: &[&str] = &[
    "--ignored-uid",
    "1337",
    "--ignored-gid",
    "1338",
    "--proxy-egress-port",
    "15001",
    "--proxy-ingress-port",
    "15000",
    "--app-ports",
    "9080",
    "--egress-ignored-ports",
    "5432,8000-8010",
    "--egress-ignored-ips",
    "10.9.0.0/16,203.0.113.9",
];

/// One run of meshinit: exit code, parsed `--json` report (Null if none), and output.
struct Run {
    code: i32,
    report: Value,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn from(output: Output, elapsed: Duration) -> Run {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        // apply --verify prints nothing else on stdout, so the report is all of it.
        let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        Run {
            code: output.status.code().unwrap_or(-1),
            report,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
        }
    }

    #[track_caller]
    fn assert_exit(&self, code: i32) {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }

    /// The checks of one kind and family, in report order.
    fn checks(&self, kind: &str, family: &str) -> Vec<&Value> {
        self.report["checks"]
            .as_array()
            .unwrap_or_else(|| panic!("no checks in the report:\n{}\n{}", self.stdout, self.stderr))
            .iter()
            .filter(|c| c["check"] == kind && c["family"] == family)
            .collect()
    }

    /// The one check of a kind and family, or of a kind, family and destination.
    #[track_caller]
    fn check(&self, kind: &str, family: &str, destination: Option<&str>) -> &Value {
        let found: Vec<&Value> = self
            .checks(kind, family)
            .into_iter()
            .filter(|c| destination.is_none_or(|d| c["destination"] == d))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {kind} {family} {destination:?} check in:\n{}",
            self.stdout
        );
        found[0]
    }

    fn statuses(&self) -> Vec<(String, String, String)> {
        self.report["checks"]
            .as_array()
            .map(|checks| {
                checks
                    .iter()
                    .map(|c| {
                        (
                            c["family"].as_str().unwrap_or("").to_owned(),
                            c["check"].as_str().unwrap_or("").to_owned(),
                            c["status"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[track_caller]
fn assert_status(check: &Value, status: &str, reason_parts: &[&str]) {
    assert_eq!(check["status"], status, "{check:#}");
    let reason = check["reason"].as_str().unwrap_or_default();
    for part in reason_parts {
        assert!(reason.contains(part), "reason lacks {part:?}: {check:#}");
    }
}

/// `meshinit ARGS --netns /var/run/netns/NAME`: run from the host, entering the namespace.
fn meshinit_netns(ns: &TestNetns, args: &[&str]) -> Run {
    let started = Instant::now();
    let output = std::process::Command::new(MESHINIT)
        .args(args)
        .arg("--netns")
        .arg(ns.path())
        .output()
        .expect("cannot run meshinit");
    Run::from(output, started.elapsed())
}

/// `ip netns exec NAME meshinit ARGS`: run inside the namespace, as an init container.
fn meshinit_inside(ns: &TestNetns, args: &[&str]) -> Run {
    let started = Instant::now();
    let output = ns
        .command(MESHINIT)
        .args(args)
        .output()
        .expect("cannot run meshinit");
    Run::from(output, started.elapsed())
}

fn with_config<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().chain(CONFIG).copied().collect()
}

fn verify(ns: &TestNetns) -> Run {
    meshinit_netns(ns, &with_config(&["verify", "--json"]))
}

fn apply(ns: &TestNetns) {
    meshinit_netns(ns, &with_config(&["apply"])).assert_exit(0);
}

/// `verify --json --backend BACKEND`: reads the rules of that backend.
fn verify_with(ns: &TestNetns, backend: &str) -> Run {
    meshinit_netns(
        ns,
        &with_backend(&with_config(&["verify", "--json"]), backend),
    )
}

/// Installs by hand what `render` prints for the configuration, without the lines that
/// `drop_line` selects: a broken ruleset that meshinit did not write.
fn install_rendered_except(
    ns: &TestNetns,
    extra_config: &[&str],
    drop_line: impl Fn(&str) -> bool,
) {
    for (family, restore) in [
        ("ipv4", "iptables-nft-restore"),
        ("ipv6", "ip6tables-nft-restore"),
    ] {
        let mut args = with_config(&["render", "--family", family]);
        args.extend(extra_config);
        let rendered = meshinit_inside(ns, &args);
        rendered.assert_exit(0);
        let kept: String = rendered
            .stdout
            .lines()
            .filter(|line| !drop_line(line))
            .map(|line| format!("{line}\n"))
            .collect();
        ns.run_checked_with_stdin(restore, &["--noflush"], &kept);
    }
}

/// Installs by hand what `render` prints for the configuration, each line passed through
/// `transform` (`None` drops it): one rule removed or altered.
fn install_rendered_with(ns: &TestNetns, transform: impl Fn(&str) -> Option<String>) {
    for (family, restore) in [
        ("ipv4", "iptables-nft-restore"),
        ("ipv6", "ip6tables-nft-restore"),
    ] {
        let rendered = meshinit_inside(ns, &with_config(&["render", "--family", family]));
        rendered.assert_exit(0);
        let kept: String = rendered
            .stdout
            .lines()
            .filter_map(&transform)
            .map(|line| format!("{line}\n"))
            .collect();
        ns.run_checked_with_stdin(restore, &["--noflush"], &kept);
    }
}

/// The report has checks, each of the `failing` (family, check) pairs is among them, and
/// those failed while every other check passed.
#[track_caller]
fn all_passed_but(run: &Run, failing: &[(&str, &str)]) {
    let statuses = run.statuses();
    assert!(
        !statuses.is_empty(),
        "no checks in the report:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    for (family, check, status) in &statuses {
        let expected_to_fail = failing.iter().any(|(f, c)| f == family && c == check);
        let expected = if expected_to_fail { "fail" } else { "pass" };
        assert_eq!(status, expected, "{family} {check} in:\n{}", run.stdout);
    }
    for (family, check) in failing {
        assert!(
            statuses.iter().any(|(f, c, _)| f == family && c == check),
            "no {family} {check} check in:\n{}",
            run.stdout
        );
    }
}

/// No conntrack entry of a probe is left in the namespace: none whose original destination
/// is one verify probed.
#[track_caller]
fn assert_no_probe_conntrack_entries(ns: &TestNetns, run: &Run) {
    let probed: Vec<std::net::SocketAddr> = run.report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["destination"].as_str()?.parse().ok())
        .collect();
    assert!(!probed.is_empty());
    let entries = ns.run_inside(|| {
        let mut conntrack = meshinit::conntrack::Conntrack::open().expect("ctnetlink");
        let mut entries = conntrack.dump(false).expect("dump ipv4");
        entries.extend(conntrack.dump(true).expect("dump ipv6"));
        entries
    });
    let left: Vec<_> = entries
        .iter()
        .filter(|e| probed.contains(&e.original.destination))
        .collect();
    assert!(left.is_empty(), "probe conntrack entries left: {left:#?}");
}

/// Verify's sink (its veth pair and policy rules) is gone after a run.
#[track_caller]
fn assert_no_verify_interfaces_or_rules(ns: &TestNetns) {
    let links = ns.run_checked("ip", &["-o", "link"]);
    assert!(!links.contains("mshi-vfy"), "{links}");
    for family in ["-4", "-6"] {
        let rules = ns.run_checked("ip", &[family, "rule"]);
        assert!(
            !rules.contains("fwmark") && !rules.contains("198.18.77") && !rules.contains("6d73"),
            "{rules}"
        );
        let routes = ns.run_checked("ip", &[family, "route", "show", "table", "all"]);
        assert!(
            !routes.contains("mshi-vfy") && !routes.contains("1297303625"),
            "{routes}"
        );
        let addresses = ns.run_checked("ip", &[family, "address"]);
        assert!(
            !addresses.contains("198.18.77") && !addresses.contains("2001:db8:6d73"),
            "{addresses}"
        );
    }
}

/// Whether `ip` is one of the ignored destinations of [`CONFIG`] (the metadata and
/// credentials endpoints, 10.9.0.0/16, 203.0.113.9): nothing but verify's probes goes
/// there in a test namespace.
fn is_ignored_destination(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            (a, b) == (10, 9)
                || [
                    "203.0.113.9",
                    KILLED_RUNS_EXTRA_IGNORED_IP,
                    "169.254.169.254",
                    "169.254.170.2",
                ]
                .contains(&v4.to_string().as_str())
        }
        std::net::IpAddr::V6(v6) => v6.to_string() == "fd00:ec2::254",
    }
}

/// Conntrack entries that only verify's probes make: from the inbound stand-in client, to
/// the documentation addresses egress probes go to, or to an ignored destination.
fn verify_conntrack_entries(ns: &TestNetns) -> Vec<meshinit::conntrack::Entry> {
    let entries = ns.run_inside(|| {
        let mut conntrack = meshinit::conntrack::Conntrack::open().expect("ctnetlink");
        let mut entries = conntrack.dump(false).expect("dump ipv4");
        entries.extend(conntrack.dump(true).expect("dump ipv6"));
        entries
    });
    entries
        .into_iter()
        .filter(|e| {
            let source = e.original.source.ip().to_string();
            let destination = e.original.destination.ip().to_string();
            source == "198.18.77.2"
                || source == "2001:db8:6d73::2"
                || destination == "192.0.2.1"
                || destination == "2001:db8::1"
                || is_ignored_destination(e.original.destination.ip())
        })
        .collect()
}

/// An ignored destination only the killed runs of
/// `verify_killed_at_random_points_leaves_nothing_after_the_next_run` know: the run after
/// them does not probe it, so only its sweep can delete their entries to it.
const KILLED_RUNS_EXTRA_IGNORED_IP: &str = "172.31.77.7";

/// verify killed with SIGKILL at random points (mid-set-up, mid-probe, mid-clean-up), on
/// each backend, leaves nothing the next run does not sweep: no interface, address, route or rule of its
/// sink, and no conntrack entry of its probes, those to ignored destinations included. The
/// killed runs ignore one destination more than the next run (re-applied in between), so
/// their entries to it are not simply the next run's own connections, deleted as such.
#[test]
fn verify_killed_at_random_points_leaves_nothing_after_the_next_run() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        killed_runs_leave_nothing_after_the_next_run(backend);
    }
}

/// DNS capture for the killed-runs test: its UDP probes live in conntrack zones.
const DNS: [&str; 2] = ["--proxy-dns-port", "15053"];

fn killed_runs_leave_nothing_after_the_next_run(backend: &'static str) {
    let net = NetnsPair::new();
    let ignored_ips = format!("10.9.0.0/16,203.0.113.9,{KILLED_RUNS_EXTRA_IGNORED_IP}");
    let killed_config: Vec<&str> = CONFIG
        .iter()
        .map(|word| {
            if *word == "10.9.0.0/16,203.0.113.9" {
                ignored_ips.as_str()
            } else {
                word
            }
        })
        .collect();
    assert_ne!(
        killed_config, CONFIG,
        "the killed runs' configuration differs"
    );
    let with_killed_config = |args: &[&'static str]| -> Vec<String> {
        args.iter()
            .copied()
            .chain(killed_config.iter().copied())
            .chain(["--backend", backend])
            // With DNS capture, so runs are also killed among its UDP probes (zone 2).
            .chain(DNS)
            .map(str::to_owned)
            .collect()
    };
    meshinit_netns(
        &net.app,
        &with_killed_config(&["apply"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .assert_exit(0);
    let args = with_killed_config(&["verify", "--json"]);
    // Kill points spread over a whole run's length, measured here (a debug build in a
    // slow VM takes many times what a release build does).
    let whole_run = meshinit_netns(
        &net.app,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    whole_run.assert_exit(0);
    let span_micros = u32::try_from(whole_run.elapsed.as_micros())
        .unwrap_or(u32::MAX)
        .max(1);
    // At least 12 kills, and more until one has left an entry to the extra destination
    // (a kill mid-probe): the case only the sweep handles must have happened.
    let left_an_extra_entry = || {
        verify_conntrack_entries(&net.app)
            .iter()
            .any(|e| e.original.destination.ip().to_string() == KILLED_RUNS_EXTRA_IGNORED_IP)
    };
    let mut kills = 0;
    while kills < 12 || !left_an_extra_entry() {
        assert!(
            kills < 200,
            "{backend}: no kill out of {kills} landed while probes were out"
        );
        kills += 1;
        let mut child = std::process::Command::new(MESHINIT)
            .args(&args)
            .arg("--netns")
            .arg(net.app.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot run meshinit");
        // The point of the test is a random moment, not a condition to wait for.
        let delay = u64::from(getrandom::u32().expect("getrandom") % span_micros);
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let final_args = |command: &'static str| {
        let mut args = with_backend(&with_config(&[command]), backend);
        args.extend(DNS);
        args
    };
    meshinit_netns(&net.app, &final_args("apply")).assert_exit(0);
    let run = meshinit_netns(&net.app, &final_args("verify"));
    run.assert_exit(0);
    assert_no_verify_interfaces_or_rules(&net.app);
    let left = verify_conntrack_entries(&net.app);
    assert!(left.is_empty(), "{backend}: left behind: {left:#?}");
}

/// Packets the peer namespace received for `destination` port 80 (a counting rule).
fn count_syns_to(ns: &TestNetns, program: &str, destination: &str) -> u64 {
    let listing = ns.iptables(program, "-L INPUT -v -x -n");
    listing
        .lines()
        .find(|line| line.contains(destination.split('/').next().unwrap_or(destination)))
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counting rule for {destination}:\n{listing}"))
}

/// The metadata and credentials endpoints exist on the peer, one hop away, with a listener
/// and a counting rule: verify proves they are not redirected, and not one packet of its
/// probes reaches them.
#[test]
fn verify_probes_never_reach_an_ignored_destination() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let endpoints = [
        ("iptables-nft", "169.254.169.254", "169.254.169.254:80"),
        ("iptables-nft", "169.254.170.2", "169.254.170.2:80"),
        ("ip6tables-nft", "fd00:ec2::254", "[fd00:ec2::254]:80"),
    ];
    for (program, address, _) in endpoints {
        net.peer.add_address(address.parse().unwrap());
        net.peer
            .iptables(program, &format!("-A INPUT -d {address} -p tcp --dport 80"));
    }
    let listener = net.peer.listen(80);
    apply(&net.app);
    let run = verify(&net.app);
    run.assert_exit(0);
    for (program, address, destination) in endpoints {
        let family = if program.starts_with("ip6") {
            "ipv6"
        } else {
            "ipv4"
        };
        assert_status(
            run.check("ignored-destination", family, Some(destination)),
            "pass",
            &["was not redirected"],
        );
        assert_eq!(
            count_syns_to(&net.peer, program, address),
            0,
            "a probe reached {address}"
        );
    }
    assert!(listener.accepted().is_empty());
    assert_no_verify_interfaces_or_rules(&net.app);
}

#[test]
fn verify_passes_after_apply_over_ipv4_and_ipv6() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        verify_passes_after_apply(backend);
    }
}

fn verify_passes_after_apply(backend: &str) {
    let net = NetnsPair::new();
    meshinit_netns(&net.app, &with_backend(&with_config(&["apply"]), backend)).assert_exit(0);
    assert_only_backend_holds_ours(&net.app, backend, 15001);
    let verify = with_backend(&with_config(&["verify", "--json"]), backend);
    let run = meshinit_inside(&net.app, &verify);
    run.assert_exit(0);
    assert_eq!(run.report["outcome"], "passed");
    all_passed_but(&run, &[]);
    for (family, destination) in [("ipv4", "192.0.2.1:80"), ("ipv6", "[2001:db8::1]:80")] {
        let redirect = run.check("egress-redirect", family, None);
        assert_status(
            redirect,
            "pass",
            &[
                "redirected to ProxyEgressPort 15001",
                "original destination intact",
            ],
        );
        assert_eq!(redirect["destination"], destination);
        assert_eq!(redirect["identity"]["uid"], 1000);
        let proxy_user = run.check("ignored-uid", family, None);
        assert_eq!(proxy_user["identity"]["uid"], 1337);
        assert_status(proxy_user, "pass", &["was not redirected"]);
        assert_eq!(
            run.check("ignored-gid", family, None)["identity"]["gid"],
            1338
        );
        let ports: Vec<&str> = run
            .checks("ignored-port", family)
            .iter()
            .filter_map(|c| c["destination"].as_str())
            .collect();
        assert_eq!(ports.len(), 4, "{ports:?}");
        for port in [":22", ":5432", ":8000", ":8010"] {
            assert!(
                ports.iter().any(|p| p.ends_with(port)),
                "{port} not probed: {ports:?}"
            );
        }
        // Inbound is proven with a packet through PREROUTING, not read back from the rules.
        assert!(
            run.checks("ingress-rules", family).is_empty(),
            "{}",
            run.stdout
        );
        let inner = if family == "ipv4" {
            "198.18.77.1"
        } else {
            "[2001:db8:6d73::1]"
        };
        let ingress = run.check("ingress-redirect", family, None);
        assert_eq!(ingress["evidence"], "connection");
        assert_eq!(ingress["destination"], format!("{inner}:9080"));
        assert_status(
            ingress,
            "pass",
            &[
                "entering through PREROUTING",
                "redirected to ProxyIngressPort 15000",
            ],
        );
        let other = run.check("ingress-other-port", family, None);
        assert_eq!(other["destination"], format!("{inner}:8080"));
        assert_status(other, "pass", &["was not redirected"]);
    }
    // Decided from the probe's conntrack entry the moment its SYN crossed the nat hook,
    // not from waiting for an answer that never comes.
    let metadata_probe = run.check("ignored-destination", "ipv4", Some("169.254.169.254:80"));
    assert_eq!(
        metadata_probe["observed"], "not-translated",
        "{metadata_probe:#}"
    );
    for (family, _, status) in run.statuses() {
        assert_ne!(status, "could_not_run", "{family}: {}", run.stdout);
    }
    for check in run.report["checks"].as_array().unwrap() {
        assert_ne!(check["observed"], "no-answer", "waited for: {check:#}");
    }
    assert_no_probe_conntrack_entries(&net.app, &run);
    assert_no_verify_interfaces_or_rules(&net.app);
    for destination in ["169.254.170.2:80", "10.9.0.1:80", "203.0.113.9:80"] {
        assert_status(
            run.check("ignored-destination", "ipv4", Some(destination)),
            "pass",
            &[],
        );
    }
    assert_status(
        run.check("ignored-destination", "ipv6", Some("[fd00:ec2::254]:80")),
        "pass",
        &[],
    );
}

#[test]
fn verify_fails_when_no_rules_are_installed_and_stays_within_its_timeout() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let run = meshinit_netns(
        &net.app,
        &with_config(&["verify", "--json", "--timeout", "1s"]),
    );
    run.assert_exit(VERIFY_FAILED);
    assert_eq!(run.report["outcome"], "failed");
    assert_status(
        run.check("egress-redirect", "ipv4", None),
        "fail",
        &[
            "egress as uid 1000 gid 1000 to 192.0.2.1:80 was not redirected to ProxyEgressPort 15001",
            "the IPv4 nat table holds no APPMESH_EGRESS chain",
        ],
    );
    assert_status(
        run.check("ingress-redirect", "ipv4", None),
        "fail",
        &[
            "to 198.18.77.1:9080 entering through PREROUTING was not redirected",
            "holds no APPMESH_INGRESS chain",
        ],
    );
    assert_no_verify_interfaces_or_rules(&net.app);
    assert_eq!(
        run.check("family", "ipv6", None)["status"],
        "not_applicable"
    );
    // Well under the default 5s timeout; the slack over 1s covers start-up under emulation
    // (about 2.3s under qemu TCG in scripts/vm-test.sh).
    assert!(
        run.elapsed < Duration::from_secs(4),
        "verify took {:?}",
        run.elapsed
    );
}

/// The native table's ingress part is checked rule by rule, not only for its chain: with
/// the redirect gone, the rules-only ingress check fails and says what is missing.
#[test]
fn verify_fails_the_native_ingress_rules_without_their_redirect() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    meshinit_netns(
        &net.app,
        &with_backend(&with_config(&["apply"]), "nftables"),
    )
    .assert_exit(0);
    let listing = net.app.run_checked(
        "nft",
        &["-a", "list", "chain", "inet", "meshinit", "prerouting"],
    );
    let handle = listing
        .lines()
        .find(|l| l.contains("redirect to :15000"))
        .and_then(|l| l.rsplit("# handle ").next())
        .unwrap_or_else(|| panic!("no ingress redirect: {listing}"))
        .trim()
        .to_owned();
    net.app.run_checked(
        "nft",
        &[
            "delete",
            "rule",
            "inet",
            "meshinit",
            "prerouting",
            "handle",
            &handle,
        ],
    );
    let run = verify_with(&net.app, "nftables");
    run.assert_exit(VERIFY_FAILED);
    for family in ["ipv4", "ipv6"] {
        assert_status(
            run.check("ingress-redirect", family, None),
            "fail",
            &["was not redirected", "AppPort 9080", "chain prerouting"],
        );
        assert_status(run.check("ingress-other-port", family, None), "pass", &[]);
    }
}

#[test]
fn verify_reports_a_loop_when_the_redirect_catches_the_proxy_user() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    install_rendered_except(&net.app, &[], |line| line.contains("--uid-owner"));
    let run = verify(&net.app);
    run.assert_exit(VERIFY_FAILED);
    all_passed_but(&run, &[("ipv4", "ignored-uid"), ("ipv6", "ignored-uid")]);
    assert_status(
        run.check("ignored-uid", "ipv4", None),
        "fail",
        &[
            "egress as uid 1337 gid 1000 to 192.0.2.1:80 was redirected to ProxyEgressPort 15001",
            "IgnoredUID rule is missing or does not match uid 1337",
            "loop",
            "missing `-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN`",
        ],
    );
}

#[test]
fn verify_reports_a_loop_for_a_bare_redirect_of_everything() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    net.app.iptables(
        "iptables-nft",
        "-t nat -A OUTPUT -p tcp -j REDIRECT --to-ports 15001",
    );
    // The evidence quoted is iptables-nft's rule text.
    let run = verify_with(&net.app, "iptables-nft");
    run.assert_exit(VERIFY_FAILED);
    assert_status(run.check("egress-redirect", "ipv4", None), "pass", &[]);
    for check in ["ignored-uid", "ignored-gid"] {
        assert_status(
            run.check(check, "ipv4", None),
            "fail",
            &[
                "loop",
                "other rules redirect: `-A OUTPUT -p tcp -j REDIRECT --to-ports 15001`",
            ],
        );
    }
    assert_status(
        run.check("ignored-port", "ipv4", Some("192.0.2.1:22")),
        "fail",
        &["port 22 is egress-ignored"],
    );
    assert_status(
        run.check("ignored-destination", "ipv4", Some("169.254.169.254:80")),
        "fail",
        &["169.254.169.254 is egress-ignored but its traffic goes to the proxy"],
    );
}

#[test]
fn verify_fails_when_ignored_ports_are_redirected() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    install_rendered_except(&net.app, &[], |line| {
        line.contains("--dports 5432,8000:8010,22 -j RETURN")
    });
    let run = verify(&net.app);
    run.assert_exit(VERIFY_FAILED);
    all_passed_but(&run, &[("ipv4", "ignored-port"), ("ipv6", "ignored-port")]);
    for port in [22, 5432, 8000, 8010] {
        assert_status(
            run.check("ignored-port", "ipv4", Some(&format!("192.0.2.1:{port}"))),
            "fail",
            &[&format!(
                "was redirected to ProxyEgressPort 15001: port {port} is egress-ignored"
            )],
        );
    }
}

#[test]
fn verify_fails_when_an_ignored_ip_is_redirected() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    install_rendered_except(&net.app, &[], |line| line.contains("-d 169.254.169.254/32"));
    let run = verify(&net.app);
    run.assert_exit(VERIFY_FAILED);
    assert_status(
        run.check("ignored-destination", "ipv4", Some("169.254.169.254:80")),
        "fail",
        &[
            "169.254.169.254 is egress-ignored but its traffic goes to the proxy",
            "missing `-A APPMESH_EGRESS -d 169.254.169.254/32 -p tcp -j RETURN`",
        ],
    );
    let failed: Vec<_> = run
        .statuses()
        .into_iter()
        .filter(|(_, _, s)| s == "fail")
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "only the metadata endpoint should fail: {failed:?}"
    );
}

#[test]
fn verify_could_not_run_while_the_egress_port_is_taken() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    apply(&net.app);
    // Something (a proxy that already started) holds ProxyEgressPort on both families.
    let proxy = net.app.listen(15001);
    let run = verify(&net.app);
    run.assert_exit(VERIFY_COULD_NOT_RUN);
    assert_eq!(run.report["outcome"], "could_not_run");
    for family in ["ipv4", "ipv6"] {
        assert_status(
            run.check("listener", family, None),
            "could_not_run",
            &["ProxyEgressPort 15001 is already in use in this namespace"],
        );
        assert_status(
            run.check("egress-redirect", family, None),
            "could_not_run",
            &[],
        );
    }
    assert!(
        !run.statuses().iter().any(|(_, _, s)| s == "fail"),
        "{}",
        run.stdout
    );
    assert!(
        proxy.accepted().is_empty(),
        "verify sent probes to someone else's listener: {:?}",
        proxy.accepted()
    );
}

#[test]
fn verify_could_not_run_with_loopback_down() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    apply(&net.app);
    net.app.run_checked("ip", &["link", "set", "lo", "down"]);
    let run = verify(&net.app);
    run.assert_exit(VERIFY_COULD_NOT_RUN);
    assert_status(
        run.check("listener", "ipv4", None),
        "could_not_run",
        &["loopback is down"],
    );
    assert_status(
        run.check("egress-redirect", "ipv4", None),
        "could_not_run",
        &["see the listener check"],
    );
    assert!(
        !run.statuses().iter().any(|(_, _, s)| s == "fail"),
        "{}",
        run.stdout
    );
}

#[test]
fn verify_over_ipv6_fails_when_only_ipv4_is_redirected() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let ipv4_only = meshinit_inside(&net.app, &with_config(&["render", "--family", "ipv4"]));
    ipv4_only.assert_exit(0);
    net.app
        .run_checked_with_stdin("iptables-nft-restore", &["--noflush"], &ipv4_only.stdout);
    let run = verify(&net.app);
    run.assert_exit(VERIFY_FAILED);
    assert_status(run.check("egress-redirect", "ipv4", None), "pass", &[]);
    assert_status(
        run.check("egress-redirect", "ipv6", None),
        "fail",
        &[
            "egress as uid 1000 gid 1000 to [2001:db8::1]:80 was not redirected to ProxyEgressPort 15001",
            "the IPv6 nat table holds no APPMESH_EGRESS chain",
        ],
    );
    assert!(
        run.report["notes"]
            .to_string()
            .contains("IPv6 traffic would bypass the proxy"),
        "{}",
        run.stdout
    );
    // With IPv6 off in the configuration, the same namespace passes on IPv4 alone.
    let ipv4_config = meshinit_netns(
        &net.app,
        &with_config(&["verify", "--json", "--ipv6", "off"]),
    );
    ipv4_config.assert_exit(0);
    assert_status(
        ipv4_config.check("family", "ipv6", None),
        "not_applicable",
        &["IPv6 is off"],
    );
}

#[test]
fn apply_verify_exits_0_on_a_good_config() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        let net = NetnsPair::new();
        let apply_verify = with_backend(&with_config(&["apply", "--verify", "--json"]), backend);
        let run = meshinit_inside(&net.app, &apply_verify);
        run.assert_exit(0);
        assert_eq!(run.report["outcome"], "passed", "{backend}");
        all_passed_but(&run, &[]);
        assert_only_backend_holds_ours(&net.app, backend, 15001);
        let status = with_backend(&with_config(&["status"]), backend);
        meshinit_netns(&net.app, &status).assert_exit(0);
    }
}

#[test]
fn apply_verify_fails_when_a_foreign_rule_shadows_the_redirect() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    // Someone else's rule ahead of ours: apply leaves it alone, and it wins.
    net.app
        .iptables("iptables-nft", "-t nat -I OUTPUT 1 -p tcp -j ACCEPT");
    // An ACCEPT ahead of the jump ends the chain in iptables; in nf_tables another base
    // chain (the native backend's) would still run, so this is iptables' shadowing.
    let apply_verify = with_config(&["apply", "--verify", "--json"]);
    let run = meshinit_netns(&net.app, &with_backend(&apply_verify, "iptables-nft"));
    run.assert_exit(VERIFY_FAILED);
    assert_status(
        run.check("egress-redirect", "ipv4", None),
        "fail",
        &[
            "was not redirected",
            "read back as configured",
            "another rule ahead of the jump",
        ],
    );
    assert_status(run.check("egress-redirect", "ipv6", None), "pass", &[]);
}

#[test]
fn apply_verify_could_not_run_while_the_egress_port_is_taken() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new();
    let _proxy = net.app.listen(15001);
    let run = meshinit_netns(&net.app, &with_config(&["apply", "--verify"]));
    run.assert_exit(VERIFY_COULD_NOT_RUN);
    assert!(run.stdout.contains("COULD NOT RUN"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("ProxyEgressPort 15001 is already in use"),
        "{}",
        run.stdout
    );
}

/// `verify` is a row of the property table: `MESHINIT_VERIFY=true` asks the init
/// container's `apply --from-env` for the proof as `--verify` does (here it cannot run, the
/// egress port being taken: exit 6); without it the same apply succeeds unproven.
#[test]
fn meshinit_verify_in_the_environment_asks_apply_to_prove_the_rules() {
    if !require_root() {
        return;
    }
    let env = [
        ("APPMESH_IGNORE_UID", "1337"),
        ("APPMESH_ENVOY_EGRESS_PORT", "15001"),
        ("APPMESH_ENVOY_INGRESS_PORT", "15000"),
        ("APPMESH_APP_PORTS", "9080"),
    ];
    let asked = NetnsPair::new();
    let _proxy = asked.app.listen(15001);
    let with_verify: Vec<_> = env
        .iter()
        .copied()
        .chain([("MESHINIT_VERIFY", "true")])
        .collect();
    let output = meshinit_with_env(&asked.app, &["apply", "--from-env"], &with_verify);
    assert_exit(&output, VERIFY_COULD_NOT_RUN);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("COULD NOT RUN"), "{stdout}");

    let plain = NetnsPair::new();
    let _proxy = plain.app.listen(15001);
    assert_exit(
        &meshinit_with_env(&plain.app, &["apply", "--from-env"], &env),
        0,
    );

    let bad = NetnsPair::new();
    let with_bad: Vec<_> = env
        .iter()
        .copied()
        .chain([("MESHINIT_VERIFY", "maybe")])
        .collect();
    let output = meshinit_with_env(&bad.app, &["apply", "--from-env"], &with_bad);
    assert_exit(&output, 2);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("MESHINIT_VERIFY"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One rule removed or altered, and what verify must then fail on.
struct Flip {
    rule: &'static str,
    transform: fn(&str) -> Option<String>,
    /// (check, destination port or address) that must fail, in both families where the
    /// destination exists; every other check must pass.
    failing: &'static [(&'static str, &'static str)],
    reason: &'static str,
}

/// Every check flips: for each kind of rule, the ruleset with that one rule removed or
/// altered fails verify on exactly the checks about it, naming it.
#[test]
fn every_check_flips_when_its_rule_is_removed_or_altered() {
    if !require_root() {
        return;
    }
    let flips = [
        Flip {
            rule: "IgnoredUID (the proxy's own traffic)",
            transform: |l| (!l.contains("--uid-owner")).then(|| l.to_owned()),
            failing: &[("ignored-uid", "")],
            reason: "IgnoredUID rule is missing or does not match uid 1337",
        },
        Flip {
            rule: "IgnoredGID",
            transform: |l| (!l.contains("--gid-owner")).then(|| l.to_owned()),
            failing: &[("ignored-gid", "")],
            reason: "IgnoredGID rule is missing or does not match gid 1338",
        },
        Flip {
            rule: "an ignored port",
            transform: |l| Some(l.replace("--dports 5432,", "--dports ")),
            failing: &[("ignored-port", ":5432")],
            reason: "port 5432 is egress-ignored",
        },
        Flip {
            rule: "the ends of an ignored port range",
            transform: |l| Some(l.replace("8000:8010", "8001:8009")),
            failing: &[("ignored-port", ":8000"), ("ignored-port", ":8010")],
            reason: "is egress-ignored but its traffic goes to the proxy",
        },
        Flip {
            rule: "an ignored network",
            transform: |l| (!l.contains("-d 10.9.0.0/16")).then(|| l.to_owned()),
            failing: &[("ignored-destination", "10.9.0.1:80")],
            reason: "10.9.0.1 is egress-ignored",
        },
        Flip {
            rule: "an ignored address",
            transform: |l| (!l.contains("-d 203.0.113.9/32")).then(|| l.to_owned()),
            failing: &[("ignored-destination", "203.0.113.9:80")],
            reason: "203.0.113.9 is egress-ignored",
        },
        Flip {
            rule: "an AppPort's inbound redirect",
            transform: |l| {
                Some(l.replace("--dports 9080 -j REDIRECT", "--dports 9081 -j REDIRECT"))
            },
            failing: &[("ingress-redirect", ":9080")],
            reason: "inbound connections to AppPort 9080 would reach the application directly",
        },
        Flip {
            rule: "a port that is not an AppPort, redirected inbound",
            transform: |l| {
                Some(l.replace(
                    "--dports 9080 -j REDIRECT",
                    "--dports 9080,8080 -j REDIRECT",
                ))
            },
            failing: &[("ingress-other-port", ":8080")],
            reason: "port 8080 is not an AppPort, but its inbound traffic is sent to the proxy",
        },
    ];
    for flip in &flips {
        let net = NetnsPair::new();
        install_rendered_with(&net.app, flip.transform);
        let run = verify(&net.app);
        assert_eq!(run.code, VERIFY_FAILED, "{}: {}", flip.rule, run.stdout);
        let checks = run.report["checks"].as_array().unwrap();
        for check in checks {
            let destination = check["destination"].as_str().unwrap_or("");
            let expected_to_fail = flip.failing.iter().any(|(kind, at)| {
                check["check"] == *kind && (at.is_empty() || destination.ends_with(at))
            });
            let expected = if expected_to_fail { "fail" } else { "pass" };
            if check["status"] == "not_applicable" && !expected_to_fail {
                continue;
            }
            assert_eq!(check["status"], expected, "{}: {check:#}", flip.rule);
            if expected_to_fail {
                let reason = check["reason"].as_str().unwrap_or("");
                assert!(reason.contains(flip.reason), "{}: {check:#}", flip.rule);
            }
        }
        for (kind, at) in flip.failing {
            assert!(
                checks.iter().any(|c| c["check"] == *kind
                    && c["status"] == "fail"
                    && c["destination"].as_str().unwrap_or("").ends_with(at)),
                "{}: no failing {kind} {at} in {}",
                flip.rule,
                run.stdout
            );
        }
        assert_no_verify_interfaces_or_rules(&net.app);
    }
}

/// Each AppPort is proven inbound on its own: with AppPorts 9080 and 9443-9445, a redirect
/// that lost the range's last port fails verify on exactly that port, both families.
#[test]
fn each_app_port_is_proven_inbound() {
    if !require_root() {
        return;
    }
    let config: Vec<&str> = CONFIG
        .iter()
        .map(|a| if *a == "9080" { "9080,9443-9445" } else { a })
        .collect();
    let net = NetnsPair::new();
    for (family, restore) in [
        ("ipv4", "iptables-nft-restore"),
        ("ipv6", "ip6tables-nft-restore"),
    ] {
        let mut args = vec!["render", "--family", family];
        args.extend(&config);
        let rendered = meshinit_inside(&net.app, &args);
        rendered.assert_exit(0);
        assert!(rendered.stdout.contains("9443:9445"), "{}", rendered.stdout);
        let altered = rendered.stdout.replace("9443:9445", "9443:9444");
        net.app
            .run_checked_with_stdin(restore, &["--noflush"], &altered);
    }
    let mut args = vec!["verify", "--json"];
    args.extend(&config);
    let run = meshinit_netns(&net.app, &args);
    run.assert_exit(VERIFY_FAILED);
    for family in ["ipv4", "ipv6"] {
        let inbound = run.checks("ingress-redirect", family);
        let ports: Vec<&str> = inbound
            .iter()
            .filter_map(|c| c["destination"].as_str())
            .collect();
        assert_eq!(inbound.len(), 3, "9080, 9443 and 9445: {ports:?}");
        for check in inbound {
            let destination = check["destination"].as_str().unwrap_or("");
            if destination.ends_with(":9445") {
                assert_status(
                    check,
                    "fail",
                    &["AppPort 9445", "bypassing ProxyIngressPort"],
                );
            } else {
                assert_status(check, "pass", &["redirected to ProxyIngressPort 15000"]);
            }
        }
    }
}
