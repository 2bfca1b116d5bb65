//! `status --show`: the installed rules in the backend's own syntax, and drift as lines
//! removed and added; the text form must read back with the backend's own loader (`nft -c
//! -f`, `iptables-restore --test`), in sync and drifted, on every backend. Needs root.

mod common;

use common::*;

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");
const CONFIG: &str = "examples/taskdef-fargate.json";

fn meshinit(ns: &TestNetns, args: &[&str]) -> std::process::Output {
    meshinit_with_path(ns, args, &std::env::var_os("PATH").unwrap_or_default())
}

/// meshinit with `path` as its PATH (e.g. one without `nft`).
fn meshinit_with_path(
    ns: &TestNetns,
    args: &[&str],
    path: &std::ffi::OsString,
) -> std::process::Output {
    ns.command(MESHINIT)
        .env("PATH", path)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("MESHINIT_BACKEND")
        .env("RUST_LOG", "error")
        .output()
        .expect("meshinit runs")
}

/// Feeds `text` to `program args` in `ns` and says whether it accepted it.
fn accepts(ns: &TestNetns, program: &str, args: &[&str], text: &str) -> Result<(), String> {
    let path = std::env::temp_dir().join(format!("meshinit-show-{}.rules", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    let file = path.to_str().unwrap().to_owned();
    all.push(&file);
    let out = ns.command(program).args(&all).output().unwrap();
    let _ = std::fs::remove_file(&path);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} refused it: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Checks that each part of the output reads back with the backend's loader.
fn reads_back(ns: &TestNetns, backend: &str, shown: &str) {
    if backend == "nftables" {
        accepts(ns, "nft", &["-c", "-f"], shown).unwrap();
        return;
    }
    let suffix = if backend == "iptables-nft" {
        "nft"
    } else {
        "legacy"
    };
    let (v4, v6) = shown.split_at(shown.find("# IPv6").expect("an IPv6 part"));
    accepts(ns, &format!("iptables-{suffix}-restore"), &["--test"], v4).unwrap();
    accepts(ns, &format!("ip6tables-{suffix}-restore"), &["--test"], v6).unwrap();
}

#[test]
fn status_show_prints_the_backends_own_rules_and_drift_as_lines_that_read_back() {
    if !require_root() {
        return;
    }
    // The native backend needs no program: --show reads the table over netlink.
    let without_nft = PathWithout::new("nft");
    for backend in ["nftables", "iptables-nft", "iptables-legacy"] {
        let ns = TestNetns::new("show");
        let meshinit = |ns: &TestNetns, args: &[&str]| {
            if backend == "nftables" {
                meshinit_with_path(ns, args, &without_nft.path_env())
            } else {
                meshinit(ns, args)
            }
        };
        let apply = meshinit(&ns, &["apply", CONFIG, "--backend", backend]);
        assert!(
            apply.status.success(),
            "{}",
            String::from_utf8_lossy(&apply.stderr)
        );

        let out = meshinit(&ns, &["status", CONFIG, "--backend", backend, "--show"]);
        let shown = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{backend}: {shown}");
        if backend == "nftables" {
            assert!(shown.contains("table inet meshinit {"), "{shown}");
            assert!(
                shown.contains("meta l4proto tcp counter packets 0 bytes 0 redirect to :15001"),
                "{shown}"
            );
            assert!(!shown.contains("nft is not installed"), "{shown}");
        } else {
            assert!(
                shown.contains("-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001"),
                "{shown}"
            );
            assert!(
                shown.contains("-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS")
            );
        }
        assert!(!shown.contains("difference from the plan"), "{shown}");
        reads_back(&ns, backend, &shown);

        // The same rules against another egress port: drifted, shown as - and + lines.
        let out = meshinit(
            &ns,
            &[
                "status",
                CONFIG,
                "--backend",
                backend,
                "--show",
                "--proxy-egress-port",
                "15002",
            ],
        );
        let shown = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(1), "{backend}: {shown}");
        assert!(
            shown.contains("# difference from the plan (- installed, + planned):"),
            "{shown}"
        );
        if backend != "nftables" {
            assert!(
                shown.contains("# - -A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001\n")
                    && shown
                        .contains("# + -A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15002\n"),
                "{backend}: {shown}"
            );
        } else {
            assert!(
                shown.contains("# - chain output: meta l4proto tcp counter redirect to :15001\n")
                    && shown.contains(
                        "# + chain output: meta l4proto tcp counter redirect to :15002\n"
                    ),
                "{shown}"
            );
            // Only that rule differs.
            assert_eq!(shown.matches("\n# - ").count(), 1, "{shown}");
            assert_eq!(shown.matches("\n# + ").count(), 1, "{shown}");
        }
        reads_back(&ns, backend, &shown);

        let out = meshinit(
            &ns,
            &["status", CONFIG, "--backend", backend, "--show", "--json"],
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if backend == "nftables" {
            assert!(
                report["rules"]
                    .as_str()
                    .unwrap()
                    .contains("table inet meshinit")
            );
            assert_eq!(report["diff"].as_array().unwrap().len(), 0);
        } else {
            for family in report["families"].as_array().unwrap() {
                assert!(family["rules"].as_str().unwrap().starts_with("*nat\n"));
                assert_eq!(family["diff"].as_array().unwrap().len(), 0);
            }
        }

        let clean = meshinit(&ns, &["clean"]);
        assert!(clean.status.success());
        // Nothing installed: absent, and still a file the loader reads.
        let out = meshinit(&ns, &["status", CONFIG, "--backend", backend, "--show"]);
        let shown = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(1), "{shown}");
        assert!(shown.contains("absent"), "{shown}");
        reads_back(&ns, backend, &shown);
    }
}

#[test]
fn explain_live_says_whether_the_installed_rules_are_the_plan_it_answers_from() {
    if !require_root() {
        return;
    }
    for backend in ["nftables", "iptables-nft", "iptables-legacy"] {
        let ns = TestNetns::new("live");
        let apply = meshinit(&ns, &["apply", CONFIG, "--backend", backend]);
        assert!(
            apply.status.success(),
            "{}",
            String::from_utf8_lossy(&apply.stderr)
        );
        let ask = |extra: &[&str]| {
            let mut args = vec![
                "explain",
                CONFIG,
                "--backend",
                backend,
                "--live",
                "--direction",
                "out",
                "--to",
                "1.2.3.4:80",
                "--uid",
                "5",
            ];
            args.extend(extra);
            let out = meshinit(&ns, &args);
            (out.status.code(), String::from_utf8(out.stdout).unwrap())
        };
        let (code, text) = ask(&[]);
        assert_eq!(code, Some(0), "{backend}: {text}");
        assert!(
            text.contains("the planned IPv4 rules, so the kernel decides as above"),
            "{text}"
        );
        let (code, text) = ask(&["--proxy-egress-port", "15002"]);
        assert_eq!(code, Some(1), "{backend}: {text}");
        assert!(
            text.contains("differs from the planned IPv4 rules"),
            "{text}"
        );
        if backend != "nftables" {
            assert!(
                text.contains("  missing -A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15002"),
                "{text}"
            );
        }
        let (code, text) = ask(&["--json"]);
        assert_eq!(code, Some(0));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["live"]["in_sync"], true);
        assert_eq!(v["port"], 15001);
    }
}

#[test]
fn explain_live_answers_from_the_installed_iptables_rules_when_they_differ() {
    if !require_root() {
        return;
    }
    for backend in ["iptables-nft", "iptables-legacy"] {
        let ns = TestNetns::new("live-ipt");
        let installed = [
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--egress-ignored-ips",
            "10.0.0.0/8",
            "--backend",
            backend,
        ];
        let mut apply = vec!["apply"];
        apply.extend(installed);
        assert!(meshinit(&ns, &apply).status.success());
        // Asked with a configuration that no longer ignores 10.0.0.0/8 (nor uses 15001).
        let out = meshinit(
            &ns,
            &[
                "explain",
                "--ignored-uid",
                "1337",
                "--proxy-egress-port",
                "15002",
                "--backend",
                backend,
                "--live",
                "--direction",
                "out",
                "--to",
                "10.0.0.5:80",
                "--uid",
                "5",
                "--json",
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["action"], "redirected", "{v}");
        assert_eq!(v["port"], 15002);
        let live = &v["live"];
        assert_eq!(live["in_sync"], false);
        assert_eq!(live["installed"]["action"], "not_redirected", "{v}");
        assert_eq!(
            live["installed"]["decided_by"]["rule"],
            "-A APPMESH_EGRESS -d 10.0.0.0/8 -p tcp -j RETURN"
        );
        assert!(
            live["installed"]["reason"].as_str().unwrap().contains(
                "10.0.0.5 is ignored by an installed rule that the configuration does not ask for"
            ),
            "{v}"
        );
        let out = meshinit(
            &ns,
            &[
                "explain",
                "--ignored-uid",
                "1337",
                "--proxy-egress-port",
                "15002",
                "--backend",
                backend,
                "--live",
                "--direction",
                "out",
                "--to",
                "11.0.0.5:80",
                "--uid",
                "5",
            ],
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(
                "with the installed rules: redirected to 15001 by an installed rule (the \
                 configuration's ProxyEgressPort is 15002)"
            ),
            "{text}"
        );
    }
}
