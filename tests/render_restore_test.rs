//! Every rendered payload is accepted as is by the real `iptables-restore --test` and
//! `ip6tables-restore --test` (legacy and nft) inside a throwaway namespace.
//! Needs root (skips outside CI without it; fails in CI).

mod common;

use std::process::Command;

use common::{TestNetns, require_root};

fn render(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meshinit"))
        .arg("render")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rendered_payloads_pass_iptables_restore_test() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("restoretest");
    let many_ports: Vec<String> = (9000..9040).map(|p| p.to_string()).collect();
    let many_ports = many_ports.join(",");
    let configs: Vec<Vec<&str>> = vec![
        vec!["examples/taskdef-fargate.json"],
        vec!["examples/taskdef-ec2.json"],
        vec!["examples/cni-netconf.json"],
        vec!["examples/proxy-configuration.json"],
        vec![
            "--ignored-uid",
            "1",
            "--ignored-gid",
            "2",
            "--proxy-egress-port",
            "15001",
            "--proxy-ingress-port",
            "15000",
            "--app-ports",
            &many_ports,
            "--egress-ignored-ports",
            "1-10,20-30,40-50,60-70,80-90,100-110,120-130,140",
            "--egress-ignored-ips",
            "10.0.0.0/8,fd00::/8",
        ],
    ];
    for config in configs {
        for (family, tool) in [("ipv4", "iptables"), ("ipv6", "ip6tables")] {
            let mut args = config.clone();
            args.extend(["--family", family]);
            let payload = render(&args);
            for backend in ["nft", "legacy"] {
                let program = format!("{tool}-{backend}-restore");
                ns.run_checked_with_stdin(&program, &["--test", "--noflush"], &payload);
            }
        }
    }
    // --test installs nothing.
    assert!(!ns.nat_rules().contains("APPMESH"), "{}", ns.nat_rules());
}
