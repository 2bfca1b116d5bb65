//! Golden tests: the rendered ruleset of each configuration surface, byte for byte.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test --test render_golden` and review the diff
//! (refused when `CI` is set).

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/native_golden.rs"]
mod native_golden;
use native_golden::{LONG_INCLUDE_LIST, NATIVE_GOLDEN};

fn render(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshinit"));
    cmd.arg("render")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // Only the variables a test names: the developer's own APPMESH_* must not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("APPMESH_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("meshinit runs");
    assert!(
        out.status.success(),
        "render {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        // In CI a rewrite would make every golden test pass whatever was rendered.
        let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        assert!(
            !in_ci,
            "UPDATE_GOLDEN is refused when CI is set: regenerate the golden files locally \
             and commit them"
        );
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "rendered rules differ from {}",
        path.display()
    );
}

#[test]
fn seed_fargate_task_definition() {
    check_golden(
        "taskdef-fargate.rules",
        &render(&["examples/taskdef-fargate.json"], &[]),
    );
}

#[test]
fn seed_ec2_task_definition() {
    check_golden(
        "taskdef-ec2.rules",
        &render(&["examples/taskdef-ec2.json"], &[]),
    );
}

#[test]
fn ecs_proxy_configuration_renders_like_its_task_definition() {
    let proxy = render(&["--config", "examples/proxy-configuration.json"], &[]);
    check_golden("proxy-configuration.rules", &proxy);
    assert_eq!(proxy, render(&["examples/taskdef-ec2.json"], &[]));
}

#[test]
fn cni_network_config() {
    check_golden(
        "cni-netconf.rules",
        &render(&["examples/cni-netconf.json"], &[]),
    );
}

#[test]
fn kubernetes_init_container_environment() {
    let env_file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/appmesh.env"))
            .unwrap();
    let vars: Vec<(&str, &str)> = env_file.lines().filter_map(|l| l.split_once('=')).collect();
    check_golden("appmesh-env.rules", &render(&["--from-env"], &vars));
}

#[test]
fn stdin_is_read_with_a_dash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshinit"))
        .args(["render", "-", "--family", "ipv4"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let doc = std::fs::read(golden_path("../../examples/proxy-configuration.json")).unwrap();
    child.stdin.take().unwrap().write_all(&doc).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let full = render(
        &["examples/proxy-configuration.json", "--family", "ipv4"],
        &[],
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), full);
}

#[test]
fn flags_override_environment_override_file() {
    let out = render(
        &[
            "examples/taskdef-ec2.json",
            "--from-env",
            "--proxy-egress-port",
            "16001",
            "--family",
            "ipv4",
        ],
        &[
            ("APPMESH_ENVOY_EGRESS_PORT", "17001"),
            ("APPMESH_IGNORE_UID", "1500"),
        ],
    );
    assert!(out.contains("--to-ports 16001"), "{out}");
    assert!(out.contains("--uid-owner 1500"), "{out}");
    assert!(!out.contains("1337"), "{out}");
}

#[test]
fn sixteen_ports_and_ranges_split_across_multiport_rules() {
    let app_ports: Vec<String> = (9000..9016).map(|p| p.to_string()).collect();
    let ignored = "100-200,300-400,500-600,700-800,900-1000,1100-1200,1300-1400,1500,1600";
    let out = render(
        &[
            "--ignored-uid",
            "1337",
            "--ignored-gid",
            "1338",
            "--proxy-egress-port",
            "15001",
            "--proxy-ingress-port",
            "15000",
            "--app-ports",
            &app_ports.join(","),
            "--egress-ignored-ports",
            ignored,
            "--egress-ignored-ips",
            "10.0.0.0/8,2001:db8:abcd::/48,10.1.0.0/16",
            "--ipv6",
            "on",
        ],
        &[],
    );
    check_golden("many-ports.rules", &out);
}

#[test]
fn a_long_include_list_is_one_set() {
    let args = [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-included-ips",
        LONG_INCLUDE_LIST,
    ];
    check_golden("long-include-list.rules", &render(&args, &[]));
    let mut sets = args.to_vec();
    sets.push("--sets");
    check_golden("long-include-list.sets", &render(&sets, &[]));
}

#[test]
fn egress_only_has_no_ingress_chain() {
    let out = render(
        &["--ignored-uid", "1337", "--proxy-egress-port", "15001"],
        &[],
    );
    assert!(!out.contains("APPMESH_INGRESS"), "{out}");
    assert!(!out.contains("PREROUTING"), "{out}");
    assert_eq!(
        out.matches("-j APPMESH_EGRESS").count(),
        2,
        "one jump per family: {out}"
    );
}

#[test]
fn ipv6_off_renders_ipv4_only() {
    let out = render(
        &[
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--ipv6",
            "off",
        ],
        &[],
    );
    assert!(out.contains("IPv4") && !out.contains("IPv6"), "{out}");
}

#[test]
fn long_ip_lists_use_a_set_holding_the_merged_networks() {
    let ips: Vec<String> = (0..64).map(|i| format!("10.0.{i}.0/24")).collect();
    let args = [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--egress-ignored-ips",
        &ips.join(","),
        "--family",
        "ipv4",
    ];
    let rules = render(&args, &[]);
    // The set is named after its content: `APPMESH_IGNORED_NET4_<8 hex digits>`.
    let name = rules
        .split(" --match-set ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no set matched:\n{rules}"));
    let version = name
        .strip_prefix("APPMESH_IGNORED_NET4_")
        .unwrap_or_default();
    assert!(
        version.len() == 8 && version.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert!(
        rules.contains(&format!("-m set --match-set {name} dst -j RETURN")),
        "{rules}"
    );
    assert!(!rules.contains("10.0.5.0"), "{rules}");
    let mut with_sets = args.to_vec();
    with_sets.push("--sets");
    let sets = render(&with_sets, &[]);
    // Filled under a staging name, then renamed; 64 adjacent /24s merge into one /18; the
    // metadata endpoints stay as they are.
    let staging = format!("APPMESH_TMP_NET4_{version}");
    assert!(
        sets.contains(&format!("add {staging} 10.0.0.0/18\n")),
        "{sets}"
    );
    assert!(
        sets.contains(&format!("add {staging} 169.254.169.254\n")),
        "{sets}"
    );
    assert!(
        sets.ends_with(&format!("rename {staging} {name}\n")),
        "{sets}"
    );
    assert!(!sets.contains("10.0.1.0/24"), "{sets}");
}

// ---- the native backend's table, as the nft script `render --backend nftables` prints ----
// tests/render_nftables.rs loads the same scripts with `nft -f` and compares them with what
// `apply --backend nftables` makes.

#[test]
fn native_tables_as_nft_scripts() {
    for (name, args) in NATIVE_GOLDEN {
        let mut with_backend = vec!["--backend", "nftables"];
        with_backend.extend_from_slice(args);
        check_golden(name, &render(&with_backend, &[]));
    }
}

#[test]
fn the_kubernetes_environment_as_an_nft_script() {
    let env_file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/appmesh.env"))
            .unwrap();
    let vars: Vec<(&str, &str)> = env_file.lines().filter_map(|l| l.split_once('=')).collect();
    check_golden(
        "appmesh-env.nft",
        &render(&["--from-env", "--backend", "nftables"], &vars),
    );
}

#[test]
fn native_render_refuses_what_it_cannot_print() {
    for (args, option) in [
        (
            &["examples/taskdef-ec2.json", "--backend", "auto"][..],
            "--backend",
        ),
        (
            &[
                "examples/taskdef-ec2.json",
                "--backend",
                "nftables",
                "--family",
                "ipv4",
            ][..],
            "--family",
        ),
        (
            &[
                "examples/taskdef-ec2.json",
                "--backend",
                "nftables",
                "--sets",
            ][..],
            "--sets",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_meshinit"))
            .arg("render")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
