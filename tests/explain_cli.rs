//! `meshinit explain`: the text form of representative connections is pinned by a golden
//! file (regenerate with `UPDATE_GOLDEN=1 cargo test --test explain_cli` and review the
//! diff; refused when `CI` is set); JSON and bad input are checked here. Runs without root.

use std::path::Path;
use std::process::{Command, Output};

fn meshinit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshinit"));
    cmd.arg("explain")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "error");
    for (key, _) in std::env::vars() {
        if key.starts_with("APPMESH_") || key.starts_with("MESHINIT_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("meshinit runs")
}

/// An environment variable a case sets.
type Var = (&'static str, &'static str);

const ENV: [Var; 5] = [
    ("APPMESH_IGNORE_UID", "1337"),
    ("APPMESH_ENVOY_EGRESS_PORT", "15001"),
    (
        "APPMESH_EGRESS_IGNORED_IP",
        "10.0.0.0/8,192.168.1.1,2001:db8::/32",
    ),
    ("APPMESH_EGRESS_IGNORED_PORTS", "5000-6000,8443"),
    ("APPMESH_ENABLE_IPV6", "1"),
];

/// 40 ignored networks: matched through a set, which explain must look into.
fn many_ips() -> String {
    (0..40)
        .map(|i| format!("10.{i}.0.0/16"))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn explanations_match_the_golden_file() {
    let fargate = "examples/taskdef-fargate.json";
    let cni = "examples/cni-netconf.json";
    let many = many_ips();
    let flags_many = [
        "--ignored-gid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-ignored-ips",
        many.as_str(),
    ];
    let mut cases: Vec<(Vec<&str>, &[Var])> = vec![
        (
            vec![
                fargate,
                "--direction",
                "out",
                "--to",
                "93.184.216.34:443",
                "--uid",
                "1000",
                "--gid",
                "1000",
            ],
            &[],
        ),
        (
            vec![
                fargate,
                "--direction",
                "out",
                "--to",
                "10.0.0.5:443",
                "--uid",
                "1337",
            ],
            &[],
        ),
        (
            vec![
                fargate,
                "--direction",
                "out",
                "--to",
                "169.254.170.2:80",
                "--uid",
                "1000",
            ],
            &[],
        ),
        (
            vec![
                fargate,
                "--direction",
                "out",
                "--to",
                "93.184.216.34:22",
                "--uid",
                "1000",
            ],
            &[],
        ),
        (
            vec![
                fargate,
                "--direction",
                "out",
                "--to",
                "127.0.0.1:8080",
                "--uid",
                "1000",
            ],
            &[],
        ),
        (
            vec![
                fargate,
                "--direction",
                "out",
                "--to",
                "10.1.2.3:8080",
                "--uid",
                "1000",
                "--local",
            ],
            &[],
        ),
        (
            vec![
                fargate,
                "--direction",
                "out",
                "--to",
                "93.184.216.34:53",
                "--protocol",
                "udp",
            ],
            &[],
        ),
        (vec![fargate, "--direction", "in", "--port", "9080"], &[]),
        (vec![fargate, "--direction", "in", "--port", "9081"], &[]),
        (
            vec![fargate, "--direction", "in", "--port", "9080", "--local"],
            &[],
        ),
        (
            vec![
                fargate,
                "--direction",
                "out",
                "--to",
                "[2001:db8::1]:443",
                "--uid",
                "1000",
                "--ipv6",
                "off",
            ],
            &[],
        ),
        (
            vec![cni, "--direction", "in", "--to", "[fd00::5]:9080"],
            &[],
        ),
        (
            vec![
                "--from-env",
                "--direction",
                "out",
                "--to",
                "10.0.0.5:443",
                "--uid",
                "1000",
            ],
            &ENV,
        ),
        (
            vec![
                "--from-env",
                "--direction",
                "out",
                "--to",
                "1.2.3.4:5432",
                "--uid",
                "1000",
            ],
            &ENV,
        ),
        (
            vec![
                "--from-env",
                "--direction",
                "out",
                "--to",
                "[2001:db8:1::9]:80",
                "--uid",
                "1000",
            ],
            &ENV,
        ),
        (
            vec![
                "--from-env",
                "--direction",
                "out",
                "--to",
                "[::ffff:192.168.1.1]:80",
                "--uid",
                "1000",
            ],
            &ENV,
        ),
        (
            vec!["--from-env", "--direction", "in", "--port", "9080"],
            &ENV,
        ),
        (
            vec![
                "--from-env",
                "--direction",
                "out",
                "--to",
                "169.254.169.254:80",
                "--uid",
                "1000",
            ],
            &ENV,
        ),
        (
            vec![
                "--from-env",
                "--direction",
                "out",
                "--to",
                "1.2.3.4:22",
                "--uid",
                "1000",
            ],
            &ENV,
        ),
        (
            vec![
                "--from-env",
                "--direction",
                "out",
                "--to",
                "1.2.3.4:80",
                "--uid",
                "1000",
                "--egress-ignored-ips",
                "1.2.0.0/16",
            ],
            &ENV,
        ),
    ];
    let mut with_set = flags_many.to_vec();
    with_set.extend([
        "--direction",
        "out",
        "--to",
        "10.39.1.1:80",
        "--gid",
        "1337",
    ]);
    cases.push((with_set, &[]));
    let mut with_set = flags_many.to_vec();
    with_set.extend([
        "--direction",
        "out",
        "--to",
        "10.39.1.1:80",
        "--gid",
        "1000",
    ]);
    cases.push((with_set, &[]));
    let mut with_set = flags_many.to_vec();
    with_set.extend([
        "--direction",
        "out",
        "--to",
        "10.40.1.1:80",
        "--gid",
        "1000",
    ]);
    cases.push((with_set, &[]));

    let mut actual = String::new();
    for (args, env) in &cases {
        let out = meshinit(args, env);
        assert!(
            out.status.success(),
            "explain {args:?} exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        let env_text: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let shown: Vec<&str> = args
            .iter()
            .map(|a| {
                if *a == many.as_str() {
                    "<40 networks 10.0.0.0/16..10.39.0.0/16>"
                } else {
                    a
                }
            })
            .collect();
        actual.push_str(&format!(
            "$ {}meshinit explain {}\n{}\n",
            env_text.concat(),
            shown.join(" "),
            String::from_utf8(out.stdout).expect("utf-8")
        ));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/explain.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "UPDATE_GOLDEN is refused when CI is set"
        );
        std::fs::write(&path, &actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "explain output differs from {}",
        path.display()
    );
}

#[test]
fn json_names_the_outcome_the_rule_and_the_reason() {
    let out = meshinit(
        &[
            "--from-env",
            "--direction",
            "out",
            "--to",
            "10.0.0.5:443",
            "--uid",
            "1000",
            "--json",
        ],
        &ENV,
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["action"], "not_redirected");
    assert_eq!(v["family"], "ipv4");
    assert_eq!(v["decided_by"]["chain"], "APPMESH_EGRESS");
    assert_eq!(
        v["decided_by"]["rule"],
        "-A APPMESH_EGRESS -d 10.0.0.0/8 -p tcp -j RETURN"
    );
    assert_eq!(v["decided_by"]["matched"], true);
    assert_eq!(
        v["reason"],
        "not redirected: 10.0.0.5 is in EgressIgnoredIPs as 10.0.0.0/8 (from APPMESH_EGRESS_IGNORED_IP)"
    );

    let out = meshinit(
        &[
            "--from-env",
            "--direction",
            "out",
            "--to",
            "8.8.8.8:443",
            "--uid",
            "1000",
            "--json",
        ],
        &ENV,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["action"], "redirected");
    assert_eq!(v["port"], 15001);
}

#[test]
fn a_badly_given_connection_is_exit_2_naming_the_flag_and_what_is_right() {
    let cases: [(&[&str], &[&str]); 8] = [
        (
            &["--direction", "sideways", "--to", "1.2.3.4:80"],
            &["--direction: \"sideways\"", "use out", "or in"],
        ),
        (
            &["--direction", "out", "--to", "1.2.3.4"],
            &["--to: \"1.2.3.4\": has no port"],
        ),
        (
            &["--direction", "out", "--to", "1.2.3:80"],
            &["--to: \"1.2.3:80\": is not ADDRESS:PORT"],
        ),
        (
            &["--direction", "out", "--to", "1.2.3.4:70000"],
            &["--to: \"1.2.3.4:70000\""],
        ),
        (&["--direction", "out"], &["--to: missing"]),
        (
            &["--direction", "in", "--port", "0"],
            &["--port: \"0\": is not a port number (1-65535)"],
        ),
        (
            &["--direction", "in", "--port", "80", "--uid", "5"],
            &["--uid: \"5\": is for outbound"],
        ),
        (
            &[
                "--direction",
                "out",
                "--to",
                "1.2.3.4:80",
                "--protocol",
                "sctp",
                "--uid",
                "me",
            ],
            &["--protocol: \"sctp\"", "--uid: \"me\": is not a numeric ID"],
        ),
    ];
    for (args, wanted) in cases {
        let mut all = vec!["examples/taskdef-fargate.json"];
        all.extend(args);
        let out = meshinit(&all, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        for w in wanted {
            assert!(
                stderr.contains(w),
                "{args:?}: stderr lacks {w:?}:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A bad configuration is the configuration's exit 2, as for every command.
    let out = meshinit(
        &[
            "--ignored-uid",
            "x",
            "--proxy-egress-port",
            "15001",
            "--direction",
            "out",
            "--to",
            "1.2.3.4:80",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid configuration: --ignored-uid"));
}
