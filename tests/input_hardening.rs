//! Hostile and careless input: no panic on any byte, bounded reading, one whitespace rule,
//! errors that name what the user wrote and stay short, values that would silently disable
//! redirection, and overlapping ranges. Runs the real binary; the kernel-backed tests
//! (apply) need root and run in namespaces they create.

mod common;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestNetns, require_root};

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");

/// A command for the binary without the developer's own APPMESH_*/CNI_* variables.
fn meshinit() -> Command {
    let mut cmd = Command::new(MESHINIT);
    for (key, _) in std::env::vars_os() {
        let key_bytes = key.as_bytes();
        if key_bytes.starts_with(b"APPMESH_")
            || key_bytes.starts_with(b"CNI_")
            || key_bytes.starts_with(b"MESHINIT_")
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs `cmd` with `stdin` and returns its output.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshinit runs");
    let mut pipe = child.stdin.take().unwrap();
    // The binary may refuse before reading everything; a broken pipe is fine then.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code} (a signal or 101 is a crash)\nstdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

fn ecs(properties: &[(&str, &str)]) -> String {
    let props: Vec<String> = properties
        .iter()
        .map(|(n, v)| format!("{{\"name\":{n:?},\"value\":{v:?}}}"))
        .collect();
    format!(
        "{{\"type\":\"APPMESH\",\"containerName\":\"envoy\",\"properties\":[{}]}}",
        props.join(",")
    )
}

const VALID_ENV: [(&str, &str); 2] = [
    ("APPMESH_IGNORE_UID", "1337"),
    ("APPMESH_ENVOY_EGRESS_PORT", "15001"),
];

fn non_utf8(prefix: &str) -> std::ffi::OsString {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend([0xff, 0xfe, b'x']);
    std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&bytes))
}

#[test]
fn a_non_utf8_environment_variable_never_panics() {
    // An unrelated variable is none of our business, whatever its bytes.
    let mut cmd = meshinit();
    cmd.args(["render", "--from-env"])
        .envs(VALID_ENV)
        .env("SOME_OTHER_VARIABLE", non_utf8("v"))
        .env(non_utf8("NAME_"), "value");
    assert_exit(&run(cmd, b""), 0);

    // Ours: exit 2, naming the variable.
    let mut cmd = meshinit();
    cmd.args(["render", "--from-env"])
        .env("APPMESH_ENVOY_EGRESS_PORT", "15001")
        .env("APPMESH_IGNORE_UID", non_utf8("13"));
    let output = run(cmd, b"");
    assert_exit(&output, 2);
    let err = stderr(&output);
    assert!(
        err.contains("APPMESH_IGNORE_UID") && err.contains("UTF-8"),
        "{err}"
    );

    // A flag's environment fallback (clap reads it): a usage error, not a crash.
    let mut cmd = meshinit();
    cmd.args(["render", "--ignored-uid", "1", "--proxy-egress-port", "2"])
        .env("MESHINIT_LOG_FORMAT", non_utf8("js"));
    let output = run(cmd, b"");
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("--log-format"),
        "{}",
        stderr(&output)
    );

    // CNI mode reads its environment too: unrelated variables are ignored, its own named.
    let mut cmd = meshinit();
    cmd.env("CNI_COMMAND", "VERSION")
        .env("SOME_OTHER_VARIABLE", non_utf8("v"));
    assert_exit(&run(cmd, b""), 0);
    let mut cmd = meshinit();
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", non_utf8("c"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/nonexistent/netns");
    let output = run(cmd, b"{}");
    assert_exit(&output, 1);
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply["code"], 4, "{reply}");
    assert!(
        reply["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{reply}"
    );
}

#[test]
fn invalid_utf8_on_stdin_is_exit_2_like_the_same_bytes_in_a_file() {
    let bytes =
        b"{\"type\":\"APPMESH\",\"properties\":[{\"name\":\"AppPorts\",\"value\":\"\xff\"}]}";
    let mut cmd = meshinit();
    cmd.args(["render", "-"]);
    let from_stdin = run(cmd, bytes);
    assert_exit(&from_stdin, 2);

    let dir = tempdir();
    let path = dir.join("bad.json");
    std::fs::write(&path, bytes).unwrap();
    let mut cmd = meshinit();
    cmd.arg("render").arg(&path);
    let from_file = run(cmd, b"");
    assert_exit(&from_file, 2);
    for err in [stderr(&from_stdin), stderr(&from_file)] {
        assert!(
            err.contains("not valid UTF-8") && err.contains("byte 60"),
            "says what and where: {err}"
        );
    }
}

#[test]
fn a_byte_order_mark_is_named() {
    let dir = tempdir();
    let path = dir.join("bom.json");
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend(ecs(&[("IgnoredUID", "1337"), ("ProxyEgressPort", "15001")]).as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let mut cmd = meshinit();
    cmd.arg("render").arg(&path);
    let output = run(cmd, b"");
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("byte order mark"),
        "{}",
        stderr(&output)
    );
}

/// Spawns `cmd` with at most 1 GiB of address space, so reading an endless input all the
/// way crashes instead of eating the machine, and waits at most `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> (Output, Duration) {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshinit runs");
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (output, started.elapsed())
}

#[test]
fn oversized_input_is_refused_without_reading_it_all() {
    let dir = tempdir();
    // A sparse file far above the cap: refused from its size, not read.
    let sparse = dir.join("huge.json");
    let file = std::fs::File::create(&sparse).unwrap();
    file.set_len(64 << 30).unwrap();
    drop(file);

    let cases: Vec<(&str, Command)> = vec![
        ("/dev/zero as a file", {
            let mut cmd = meshinit();
            cmd.args(["render", "/dev/zero"]);
            cmd
        }),
        ("/dev/zero on stdin", {
            let mut cmd = meshinit();
            cmd.args(["render", "-"])
                .stdin(std::fs::File::open("/dev/zero").unwrap());
            cmd
        }),
        ("a sparse 64 GiB file", {
            let mut cmd = meshinit();
            cmd.arg("render").arg(&sparse);
            cmd
        }),
    ];
    for (what, cmd) in cases {
        let (output, took) = run_bounded(cmd, Duration::from_secs(30));
        assert_exit(&output, 2);
        let err = stderr(&output);
        assert!(err.contains("larger than 16 MiB"), "{what}: {err}");
        assert!(took < Duration::from_secs(10), "{what} took {took:?}");
    }

    // CNI: stdin from /dev/zero is a decoding failure (code 6) on stdout.
    let mut cmd = meshinit();
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/nonexistent/netns")
        .stdin(std::fs::File::open("/dev/zero").unwrap());
    let (output, took) = run_bounded(cmd, Duration::from_secs(30));
    assert_exit(&output, 1);
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)));
    assert_eq!(reply["code"], 6, "{reply}");
    assert!(reply["msg"].as_str().unwrap().contains("16 MiB"), "{reply}");
    assert!(took < Duration::from_secs(10), "CNI took {took:?}");
}

#[test]
fn errors_cut_long_values_and_summarize_many_bad_entries() {
    let bad: Vec<String> = (0..10_000).map(|i| format!("x{i}")).collect();
    let doc = ecs(&[
        ("IgnoredUID", "1337"),
        ("ProxyEgressPort", "15001"),
        ("EgressIgnoredPorts", &bad.join(",")),
        ("EgressIgnoredIPs", &bad.join(",")),
    ]);
    let mut cmd = meshinit();
    cmd.args(["render", "-"]);
    let output = run(cmd, doc.as_bytes());
    assert_exit(&output, 2);
    let err = stderr(&output);
    assert!(err.lines().count() <= 4, "one line per problem:\n{err}");
    assert!(err.len() < 2000, "short: {} bytes\n{err}", err.len());
    assert!(err.contains("EgressIgnoredPorts") && err.contains("EgressIgnoredIPs"));
    assert!(
        err.contains("\"x0\"") && err.contains("and 9997 more"),
        "names the first and counts the rest: {err}"
    );

    // One huge bad value is quoted cut to a readable length.
    let huge = "9".repeat(100_000);
    let mut cmd = meshinit();
    cmd.args(["render", "--ignored-uid", "1337", "--proxy-egress-port"])
        .arg(&huge);
    let output = run(cmd, b"");
    assert_exit(&output, 2);
    let err = stderr(&output);
    assert!(err.len() < 1000, "{} bytes", err.len());
    assert!(
        err.contains("--proxy-egress-port") && err.contains("more bytes"),
        "{err}"
    );

    // As many unknown properties as the document holds: still a few lines.
    let unknown: Vec<(String, &str)> = (0..5000).map(|i| (format!("Unknown{i}"), "1")).collect();
    let mut props: Vec<(&str, &str)> = unknown.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    props.push(("IgnoredUID", "1337"));
    let mut cmd = meshinit();
    cmd.args(["render", "-"]);
    let output = run(cmd, ecs(&props).as_bytes());
    assert_exit(&output, 2);
    let err = stderr(&output);
    assert!(err.lines().count() <= 25, "{} lines", err.lines().count());
    assert!(err.contains("more problems"), "{err}");
}

#[test]
fn whitespace_around_values_is_trimmed_in_every_source_and_inside_is_an_error() {
    let base_render = {
        let mut cmd = meshinit();
        cmd.args([
            "render",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--egress-ignored-ports",
            "8080,9000-9010",
        ]);
        let output = run(cmd, b"");
        assert_exit(&output, 0);
        stdout(&output)
    };
    for padding in [" {}", "{}\n", "\t{}\r\n", "\n {} \n"] {
        let pad = |value: &str| padding.replace("{}", value);
        let ports = format!("{},{},\t9000-9010\n", pad("8080"), pad(""));
        // ECS document.
        let doc = ecs(&[
            ("IgnoredUID", &pad("1337")),
            ("ProxyEgressPort", &pad("15001")),
            ("EgressIgnoredPorts", &ports),
        ]);
        let mut cmd = meshinit();
        cmd.args(["render", "-"]);
        let output = run(cmd, doc.as_bytes());
        assert_exit(&output, 0);
        assert_eq!(stdout(&output), base_render, "ECS {padding:?}");
        // CNI network config (arrays and strings).
        let cni = serde_json::json!({
            "cniVersion": "1.0.0", "name": "m", "type": "aws-appmesh",
            "ignoredUID": pad("1337"), "proxyEgressPort": pad("15001"),
            "egressIgnoredPorts": [pad("8080"), "9000-9010\n"],
        });
        let mut cmd = meshinit();
        cmd.args(["render", "-"]);
        let output = run(cmd, cni.to_string().as_bytes());
        assert_exit(&output, 0);
        assert_eq!(stdout(&output), base_render, "CNI {padding:?}");
        // Environment.
        let mut cmd = meshinit();
        cmd.args(["render", "--from-env"])
            .env("APPMESH_IGNORE_UID", pad("1337"))
            .env("APPMESH_ENVOY_EGRESS_PORT", pad("15001"))
            .env("APPMESH_EGRESS_IGNORED_PORTS", &ports);
        let output = run(cmd, b"");
        assert_exit(&output, 0);
        assert_eq!(stdout(&output), base_render, "env {padding:?}");
        // Flags.
        let mut cmd = meshinit();
        cmd.args(["render", "--ignored-uid"])
            .arg(pad("1337"))
            .arg("--proxy-egress-port")
            .arg(pad("15001"))
            .arg("--egress-ignored-ports")
            .arg(&ports);
        let output = run(cmd, b"");
        assert_exit(&output, 0);
        assert_eq!(stdout(&output), base_render, "flags {padding:?}");
    }
    // Whitespace inside a value is an error in every source.
    for inside in ["150 01", "15\n001", "15001\n-j ACCEPT"] {
        let mut cmd = meshinit();
        cmd.args(["render", "--ignored-uid", "1337", "--proxy-egress-port"])
            .arg(inside);
        let output = run(cmd, b"");
        assert_exit(&output, 2);
        let mut cmd = meshinit();
        cmd.args(["render", "--from-env"])
            .env("APPMESH_IGNORE_UID", "1337")
            .env("APPMESH_ENVOY_EGRESS_PORT", inside);
        let output = run(cmd, b"");
        assert_exit(&output, 2);
        assert!(stderr(&output).contains("APPMESH_ENVOY_EGRESS_PORT"));
    }
}

#[test]
fn env_and_flag_errors_name_what_the_user_wrote() {
    // A property that is missing is named as the source the user writes in spells it.
    let mut cmd = meshinit();
    cmd.args(["render", "--from-env"])
        .env("APPMESH_IGNORE_UID", "1337")
        .env("APPMESH_ENVOY_INGRESS_PORT", "15000");
    let output = run(cmd, b"");
    assert_exit(&output, 2);
    let err = stderr(&output);
    assert!(err.contains("APPMESH_ENVOY_EGRESS_PORT"), "{err}");
    assert!(err.contains("APPMESH_APP_PORTS"), "{err}");
    assert!(
        !err.contains("ProxyEgressPort") && !err.contains("AppPorts"),
        "no ECS names for an environment: {err}"
    );

    let mut cmd = meshinit();
    cmd.args([
        "render",
        "--proxy-egress-port",
        "15001",
        "--app-ports",
        "9080",
    ]);
    let output = run(cmd, b"");
    assert_exit(&output, 2);
    let err = stderr(&output);
    assert!(err.contains("--ignored-uid"), "{err}");
    assert!(err.contains("--proxy-ingress-port"), "{err}");
    assert!(
        !err.contains("IgnoredUID") && !err.contains("ProxyIngressPort"),
        "no ECS names for flags: {err}"
    );
}

fn render_ips(ips: &str) -> Output {
    let mut cmd = meshinit();
    cmd.args([
        "render",
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-ignored-ips",
        ips,
    ]);
    run(cmd, b"")
}

#[test]
fn ignored_ips_covering_a_whole_family_are_refused() {
    for (ips, family) in [
        ("0.0.0.0/0", "IPv4"),
        ("10.0.0.0/8,::/0", "IPv6"),
        ("0.0.0.0/1,128.0.0.0/1", "IPv4"),
        ("::ffff:0.0.0.0/96", "IPv4"),
    ] {
        let output = render_ips(ips);
        assert_exit(&output, 2);
        let err = stderr(&output);
        assert!(
            err.contains("--egress-ignored-ips")
                && err.contains(&format!("turn egress redirection off for {family}")),
            "{ips}: {err}"
        );
    }
    assert_exit(&render_ips("0.0.0.0/1"), 0);
    assert_exit(&render_ips("::/1"), 0);
}

#[test]
fn ignored_ports_covering_every_port_are_refused() {
    let render_ports = |ports: &str| {
        let mut cmd = meshinit();
        cmd.args([
            "render",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--egress-ignored-ports",
            ports,
        ]);
        run(cmd, b"")
    };
    // A union of ranges and separate ports (one argument may hold at most 128 KiB).
    let every_port_but_22 = format!(
        "1-21,23-100,{},20001-65535",
        (101..=20000u16)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    for ports in [
        "1-65535",
        "1-30000,30001-65535",
        "20000-65535,1-20000",
        "1-21,23-65535",
        every_port_but_22.as_str(),
    ] {
        let output = render_ports(ports);
        assert_exit(&output, 2);
        let err = stderr(&output);
        assert!(
            err.contains("--egress-ignored-ports")
                && err.contains("covers every port")
                && err.contains("turn egress redirection off")
                && err.contains("IgnoredUID"),
            "{}: {err}",
            &ports[..ports.len().min(40)]
        );
    }
    assert_exit(&render_ports("2-65535"), 0);
    assert_exit(&render_ports("1-21,24-65535"), 0);
}

#[test]
fn ipv4_mapped_ipv6_addresses_are_matched_as_ipv4() {
    let output = render_ips("::ffff:10.1.2.3,::ffff:192.168.0.0/112");
    assert_exit(&output, 0);
    let rules = stdout(&output);
    let (ipv4, ipv6) = rules.split_once("IPv6 NAT rules").unwrap();
    assert!(ipv4.contains("-d 10.1.2.3/32 -p tcp -j RETURN"), "{ipv4}");
    assert!(
        ipv4.contains("-d 192.168.0.0/16 -p tcp -j RETURN"),
        "{ipv4}"
    );
    assert!(!ipv6.contains("ffff"), "{ipv6}");
    let err = stderr(&output);
    assert!(
        err.contains("IPv4-mapped") && err.contains("10.1.2.3"),
        "{err}"
    );
}

#[test]
fn overlapping_and_adjacent_ranges_merge_in_place() {
    let mut cmd = meshinit();
    cmd.args([
        "render",
        "--family",
        "ipv4",
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-ignored-ports",
        "443,1005-1020,80,1000-1010,1021",
    ]);
    let output = run(cmd, b"");
    assert_exit(&output, 0);
    // Listed form: overlaps merged where the first member stood; adjacent entries stay as
    // written, like the AWS plugin renders them.
    assert!(
        stdout(&output).contains("--dports 443,1000:1020,80,1021,22 -j RETURN"),
        "{}",
        stdout(&output)
    );
    // Set form: overlaps and adjacency merged, each port once.
    let mut ports: Vec<String> = (0..70).map(|i| (30000 + 2 * i).to_string()).collect();
    ports.extend(["1000-1010".into(), "1005-1020".into(), "1021".into()]);
    let mut cmd = meshinit();
    cmd.args([
        "render",
        "--sets",
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-ignored-ports",
        &ports.join(","),
    ]);
    let output = run(cmd, b"");
    assert_exit(&output, 0);
    let sets = stdout(&output);
    let members: Vec<&str> = sets
        .lines()
        .filter(|l| l.starts_with("add APPMESH_"))
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    assert!(members.contains(&"1000-1021"), "{sets}");
    assert!(!sets.contains("1005"), "{sets}");
}

#[test]
fn a_long_port_list_renders_in_linear_time() {
    let ports: Vec<String> = (3..=65535).map(|p| p.to_string()).collect();
    let doc = ecs(&[
        ("IgnoredUID", "1337"),
        ("ProxyEgressPort", "1"),
        ("EgressIgnoredPorts", &ports.join(",")),
        ("AppPorts", &ports[..30000].join(",")),
        ("ProxyIngressPort", "2"),
    ]);
    let mut cmd = meshinit();
    cmd.args(["render", "-"]);
    let started = Instant::now();
    let output = run(cmd, doc.as_bytes());
    let took = started.elapsed();
    assert_exit(&output, 0);
    // Quadratic took 30 s in a debug build; linear takes a fraction of a second.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn overlapping_port_ranges_apply_through_a_port_set() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("overlap");
    let mut ports: Vec<String> = (0..70).map(|i| (30000 + 2 * i).to_string()).collect();
    ports.extend(["1000-1010".into(), "1005-1020".into()]);
    let output = ns
        .command(MESHINIT)
        .args([
            "apply",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--egress-ignored-ports",
            &ports.join(","),
            // The port set asserted below is iptables-nft's ipset.
            "--backend",
            "iptables-nft",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    // ipset save lists a bitmap's ports one by one.
    let sets = ns.run_checked("ipset", &["save"]);
    let members: Vec<&str> = sets
        .lines()
        .filter(|l| l.starts_with("add APPMESH_IGNORED_PORT4"))
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    for port in ["1000", "1007", "1020", "30138"] {
        assert!(members.contains(&port), "{port}: {sets}");
    }
}

#[test]
fn apply_warns_when_loopback_is_down() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("lodown");
    ns.run_checked("ip", &["link", "set", "lo", "down"]);
    let output = ns
        .command(MESHINIT)
        .args([
            "apply",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let err = stderr(&output);
    assert!(
        err.contains("loopback") && err.contains("ip link set lo up"),
        "{err}"
    );
    ns.run_checked("ip", &["link", "set", "lo", "up"]);
    let output = ns
        .command(MESHINIT)
        .args([
            "apply",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert!(!stderr(&output).contains("loopback"), "{}", stderr(&output));
}

/// A directory of this test's own under the system temp directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "meshinit-input-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Runs CNI ADD against a namespace that does not exist: a request that passes validation
/// ends with 101/102 (cannot enter it), so nothing is ever touched.
fn cni_add(netconf: &serde_json::Value, cni_args: &str) -> serde_json::Value {
    let mut cmd = meshinit();
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/nonexistent/netns")
        .env("CNI_ARGS", cni_args);
    let output = run(cmd, netconf.to_string().as_bytes());
    assert_exit(&output, 1);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)))
}

#[test]
fn cni_args_and_runtime_config_follow_the_conventions() {
    let netconf = |capabilities: serde_json::Value| {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "m", "type": "aws-appmesh",
            "ignoredUID": "1337", "proxyEgressPort": "15001",
            "capabilities": capabilities,
            "runtimeConfig": {"ignoredUID": "not-a-uid"},
        })
    };
    // runtimeConfig for a capability the configuration does not declare is not honoured.
    let reply = cni_add(&netconf(serde_json::json!({"ignoredUID": false})), "");
    let code = reply["code"].as_u64().unwrap();
    assert!(
        code == 101 || code == 102,
        "validated, then stopped at the namespace: {reply}"
    );
    // Declared: honoured (and this value is wrong).
    let reply = cni_add(&netconf(serde_json::json!({"ignoredUID": true})), "");
    assert_eq!(reply["code"], 7, "{reply}");
    assert!(
        reply["msg"]
            .as_str()
            .unwrap()
            .contains("runtimeConfig.ignoredUID")
    );

    let plain = serde_json::json!({
        "cniVersion": "1.0.0", "name": "m", "type": "aws-appmesh",
        "ignoredUID": "1337", "proxyEgressPort": "15001",
    });
    for (args, says) in [
        ("AppPorts=9080;appports=9081", "more than once"),
        ("K8S_POD_NAME=a;K8S_POD_NAME=b", "more than once"),
        ("Foo=1", "IgnoreUnknown=1"),
        ("IgnoreUnknown=maybe;Foo=1", "IgnoreUnknown"),
    ] {
        let reply = cni_add(&plain, args);
        assert_eq!(reply["code"], 4, "{args}: {reply}");
        let msg = reply["msg"].as_str().unwrap();
        assert!(
            msg.contains("CNI_ARGS") && msg.contains(says),
            "{args}: {msg}"
        );
    }
    for args in [
        "IgnoreUnknown=1;Foo=1",
        "IgnoreUnknown=true;Foo=1",
        "K8S_POD_NAME=web",
    ] {
        let code = cni_add(&plain, args)["code"].as_u64().unwrap();
        assert!(code == 101 || code == 102, "{args}: accepted, got {code}");
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let nested = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    for doc in [&deep, &nested] {
        let mut cmd = meshinit();
        cmd.args(["render", "-"]);
        let output = run(cmd, doc.as_bytes());
        assert_exit(&output, 2);
        assert!(
            stderr(&output).contains("recursion limit"),
            "{}",
            stderr(&output)
        );
    }
    let request = format!("{{\"cniVersion\":\"1.0.0\",\"prevResult\":{deep}}}");
    let mut cmd = meshinit();
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/nonexistent/netns");
    let output = run(cmd, request.as_bytes());
    assert_exit(&output, 1);
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply["code"], 6, "{reply}");
}
