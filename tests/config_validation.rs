//! Every validation rule: the exit code (2), and a message that names the property, quotes
//! the value and says what would be right. Runs the real binary; no privileges needed.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `meshinit render` with `doc` on stdin (when given) and `args`.
fn render(doc: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshinit"));
    cmd.arg("render");
    if doc.is_some() {
        cmd.arg("-");
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("meshinit runs");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(doc) = doc {
        stdin.write_all(doc.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().expect("exited, did not crash");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
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

const BASE: [(&str, &str); 4] = [
    ("IgnoredUID", "1337"),
    ("ProxyEgressPort", "15001"),
    ("ProxyIngressPort", "15000"),
    ("AppPorts", "9080"),
];

/// BASE with one property replaced (or removed when `value` is None).
fn base_with(name: &str, value: Option<&str>) -> String {
    let mut props: Vec<(&str, &str)> = BASE.iter().copied().filter(|(n, _)| *n != name).collect();
    if let Some(v) = value {
        props.push((name, v));
    }
    ecs(&props)
}

fn assert_rejected(doc: &str, expected: &[&str]) {
    let (code, stderr) = render(Some(doc), &[], &[]);
    assert_eq!(code, 2, "expected exit 2 for {doc}\nstderr: {stderr}");
    for part in expected {
        assert!(
            stderr.contains(part),
            "message lacks {part:?}\ndoc: {doc}\nstderr: {stderr}"
        );
    }
}

#[test]
fn the_base_configuration_is_valid() {
    let (code, stderr) = render(Some(&ecs(&BASE)), &[], &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn ports_must_be_numbers_from_1_to_65535() {
    assert_rejected(
        &base_with("AppPorts", Some("9080,x")),
        &[r#"AppPorts: "9080,x": "x" is not a port number (1-65535)"#],
    );
    assert_rejected(
        &base_with("ProxyEgressPort", Some("0")),
        &["ProxyEgressPort", "\"0\" is not a port number (1-65535)"],
    );
    assert_rejected(
        &base_with("ProxyIngressPort", Some("65536")),
        &["ProxyIngressPort", "\"65536\""],
    );
    assert_rejected(
        &base_with("AppPorts", Some("-5")),
        &["AppPorts", "not a port range"],
    );
    assert_rejected(
        &base_with("AppPorts", Some("9090-9080")),
        &["AppPorts", "first port is above the last"],
    );
}

#[test]
fn one_of_ignored_uid_or_gid_is_required_and_numeric() {
    assert_rejected(
        &base_with("IgnoredUID", None),
        &["IgnoredUID", "missing", "IgnoredGID"],
    );
    assert_rejected(
        &base_with("IgnoredUID", Some("envoy")),
        &[r#"IgnoredUID: "envoy": is not a numeric user ID"#],
    );
    assert_rejected(
        &base_with("IgnoredUID", Some("-1")),
        &["IgnoredUID", "numeric user ID"],
    );
    let gid_only = ecs(&[("IgnoredGID", "1337"), ("ProxyEgressPort", "15001")]);
    assert_eq!(render(Some(&gid_only), &[], &[]).0, 0);
    let bad_gid = ecs(&[("IgnoredGID", "13x7"), ("ProxyEgressPort", "15001")]);
    assert_rejected(&bad_gid, &["IgnoredGID", "\"13x7\"", "numeric group ID"]);
}

#[test]
fn proxy_egress_port_is_required() {
    assert_rejected(
        &base_with("ProxyEgressPort", None),
        &["ProxyEgressPort", "missing", "15001"],
    );
}

#[test]
fn ingress_port_and_app_ports_come_together() {
    assert_rejected(
        &base_with("AppPorts", None),
        &["ProxyIngressPort", "AppPorts is empty", "neither"],
    );
    assert_rejected(
        &base_with("ProxyIngressPort", None),
        &["AppPorts", "ProxyIngressPort is not"],
    );
    let egress_only = ecs(&[("IgnoredUID", "1337"), ("ProxyEgressPort", "15001")]);
    assert_eq!(render(Some(&egress_only), &[], &[]).0, 0);
}

#[test]
fn app_ports_must_not_contain_a_proxy_port() {
    assert_rejected(
        &base_with("AppPorts", Some("9080,15000")),
        &["AppPorts", "proxy port 15000", "loop"],
    );
    assert_rejected(
        &base_with("AppPorts", Some("14000-16000")),
        &["AppPorts", "proxy port 15000", "proxy port 15001"],
    );
}

#[test]
fn the_proxy_ports_differ() {
    assert_rejected(
        &base_with("ProxyIngressPort", Some("15001")),
        &["ProxyIngressPort", "equals ProxyEgressPort"],
    );
}

#[test]
fn ignored_ips_are_addresses_or_cidrs_of_either_family() {
    let ok = base_with("EgressIgnoredIPs", Some("10.0.0.0/8, fd00::/8,192.0.2.7"));
    assert_eq!(render(Some(&ok), &[], &[]).0, 0);
    assert_rejected(
        &base_with("EgressIgnoredIPs", Some("10.0.0.0/8,example.com")),
        &[
            "EgressIgnoredIPs",
            "\"example.com\" is not an IP address or CIDR",
        ],
    );
    assert_rejected(
        &base_with("EgressIgnoredIPs", Some("10.0.0.0/33")),
        &["EgressIgnoredIPs", "10.0.0.0/33"],
    );
}

#[test]
fn host_bits_are_normalised_with_a_warning() {
    let doc = base_with("EgressIgnoredIPs", Some("10.1.2.3/8"));
    let out = Command::new(env!("CARGO_BIN_EXE_meshinit"))
        .args(["render", "--config", "/dev/stdin", "--family", "ipv4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(doc.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("-d 10.0.0.0/8 -p tcp -j RETURN"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("host bits set; using 10.0.0.0/8"));
}

#[test]
fn nothing_can_be_smuggled_into_the_rules() {
    for (name, value) in [
        ("AppPorts", "9080\n-A OUTPUT -j ACCEPT"),
        ("AppPorts", "9080;reboot"),
        ("EgressIgnoredIPs", "10.0.0.1 -j ACCEPT"),
        ("EgressIgnoredIPs", "10.0.0.1\nCOMMIT"),
        ("EgressIgnoredPorts", "22 --dports 1"),
        ("IgnoredUID", "1337 -j ACCEPT"),
        // A newline around a value is trimmed (the one whitespace rule); inside it is not.
        ("ProxyEgressPort", "15001\n-j ACCEPT"),
        ("IgnoredUID", "13\n37"),
    ] {
        let (code, stderr) = render(Some(&base_with(name, Some(value))), &[], &[]);
        assert_eq!(code, 2, "{name}={value:?} accepted: {stderr}");
        assert!(stderr.contains(name), "{stderr}");
        // The value is quoted with escapes: a newline can't forge a log line either.
        assert!(
            !stderr.contains("\n-A OUTPUT") && !stderr.contains("\nCOMMIT"),
            "{stderr}"
        );
    }
}

#[test]
fn the_type_must_be_appmesh() {
    let doc = ecs(&BASE).replace("\"APPMESH\"", "\"ENVOY\"");
    assert_rejected(
        &doc,
        &[
            "proxyConfiguration.type",
            "\"ENVOY\"",
            "must be \"APPMESH\"",
        ],
    );
}

#[test]
fn unknown_properties_suggest_the_closest_name() {
    assert_rejected(
        &ecs(&[
            ("IgnoredUID", "1337"),
            ("ProxyEgressPort", "15001"),
            ("AppPort", "80"),
        ]),
        &["AppPort", "did you mean \"AppPorts\"?"],
    );
    let cni = r#"{"cniVersion":"1.0.0","name":"x","type":"meshinit","ignoredUid":"1337","proxyEgressPort":"15001"}"#;
    assert_rejected(cni, &["ignoredUid", "did you mean \"ignoredUID\"?"]);
}

#[test]
fn duplicated_properties_are_errors() {
    let doc = ecs(&[
        ("IgnoredUID", "1337"),
        ("ProxyEgressPort", "15001"),
        ("IgnoredUID", "1338"),
    ]);
    assert_rejected(&doc, &["IgnoredUID", "more than once"]);
    let cni =
        r#"{"cniVersion":"1.0.0","ignoredUID":"1337","proxyEgressPort":"15001","ignoredUID":"1"}"#;
    assert_rejected(cni, &["duplicate key \"ignoredUID\""]);
    let nested = r#"{"family":"x","proxyConfiguration":{"type":"APPMESH","type":"APPMESH","properties":[]}}"#;
    assert_rejected(nested, &["duplicate key \"type\"", "line 1 column"]);
}

#[test]
fn malformed_json_says_where() {
    assert_rejected(
        "{\n  \"type\": \"APPMESH\",\n  \"properties\": [\n}",
        &["not valid JSON at line 4 column 1"],
    );
    assert_rejected("[]", &["not valid JSON", "object"]);
    assert_rejected("{\"family\":\"x\"}", &["neither an ECS proxyConfiguration"]);
}

#[test]
fn cni_config_types_are_checked() {
    let cni = r#"{"cniVersion":"1.0.0","ignoredUID":"1337","proxyEgressPort":"15001","enableIPv6":"yes"}"#;
    assert_rejected(cni, &["enableIPv6", "must be a boolean"]);
    let cni = r#"{"cniVersion":"1.0.0","ignoredUID":"1337","proxyEgressPort":"15001","appPorts":{"a":1}}"#;
    assert_rejected(cni, &["appPorts", "must be an array of strings"]);
}

#[test]
fn an_empty_ipv6_mode_is_unset_in_every_source() {
    // As for every other scalar: an empty value means "not given" (auto), whether it comes
    // from the environment or from a flag (found by tests/properties.rs).
    let base = [
        ("APPMESH_IGNORE_UID", "1337"),
        ("APPMESH_ENVOY_EGRESS_PORT", "15001"),
    ];
    let (code, stderr) = render(
        None,
        &["--from-env"],
        &[base[0], base[1], ("APPMESH_ENABLE_IPV6", "")],
    );
    assert_eq!(code, 0, "{stderr}");
    let flags = ["--ignored-uid", "1337", "--proxy-egress-port", "15001"];
    let (code, stderr) = render(None, &[&flags[..], &["--ipv6="]].concat(), &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn environment_and_flag_errors_name_their_variable_or_flag() {
    let (code, stderr) = render(
        None,
        &["--from-env"],
        &[
            ("APPMESH_IGNORE_UID", "1337"),
            ("APPMESH_ENVOY_EGRESS_PORT", "http"),
        ],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains(r#"APPMESH_ENVOY_EGRESS_PORT: "http": "http" is not a port number"#),
        "{stderr}"
    );
    let (code, stderr) = render(
        None,
        &[
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--ipv6",
            "maybe",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("--ipv6: \"maybe\""), "{stderr}");
    assert!(stderr.contains("use auto, on or off"), "{stderr}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let doc = ecs(&[
        ("IgnoredUID", "x"),
        ("ProxyEgressPort", "y"),
        ("AppPorts", "z"),
    ]);
    assert_rejected(&doc, &["IgnoredUID", "ProxyEgressPort", "AppPorts"]);
}

#[test]
fn no_configuration_at_all_is_a_usage_error() {
    let (code, stderr) = render(None, &[], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("none given"), "{stderr}");
}

#[test]
fn garbage_never_panics() {
    // A cheap sweep over hostile documents: every one exits 0 or 2, never crashes.
    let values = [
        "",
        "1",
        "-1",
        "1e9",
        "null",
        "true",
        "[]",
        "{}",
        "\"\\u0000\"",
        "\"9080,\"",
        "\"𝕏\"",
    ];
    let mut docs = vec![
        String::new(),
        "null".into(),
        "\"x\"".into(),
        "{".into(),
        "{}".into(),
    ];
    for v in values {
        docs.push(format!(
            "{{\"type\":\"APPMESH\",\"properties\":[{{\"name\":\"AppPorts\",\"value\":{v}}}]}}"
        ));
        docs.push(format!("{{\"type\":\"APPMESH\",\"properties\":{v}}}"));
        docs.push(format!("{{\"proxyConfiguration\":{v}}}"));
        docs.push(format!(
            "{{\"cniVersion\":{v},\"egressIgnoredIPs\":{v},\"ignoredUID\":{v}}}"
        ));
    }
    for doc in docs {
        let (code, stderr) = render(Some(&doc), &[], &[]);
        assert!(code == 0 || code == 2, "exit {code} for {doc:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{doc:?}: {stderr}");
    }
}
