//! The configurations whose native table is golden-tested as an nft script
//! (`tests/golden/*.nft`): `tests/render_golden.rs` pins the text, `tests/render_nftables.rs`
//! loads it with `nft -f` and compares the result with `apply --backend nftables`.

/// The `render --backend nftables` arguments of each native golden file.
pub const NATIVE_GOLDEN: [(&str, &[&str]); 5] = [
    ("taskdef-fargate.nft", &["examples/taskdef-fargate.json"]),
    ("taskdef-ec2.nft", &["examples/taskdef-ec2.json"]),
    ("cni-netconf.nft", &["examples/cni-netconf.json"]),
    // IPv6 off: one family, IPv6 passing through untouched.
    (
        "egress-only-ipv6-off.nft",
        &[
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--ipv6",
            "off",
        ],
    ),
    (
        "many-ports.nft",
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
            "9000,9001,9002,9003,9004,9005,9006,9007,9008,9009,9010,9011,9012,9013,9014,9015",
            "--egress-ignored-ports",
            "100-200,300-400,500-600,700-800,900-1000,1100-1200,1300-1400,1500,1600",
            "--egress-ignored-ips",
            "10.0.0.0/8,2001:db8:abcd::/48,10.1.0.0/16",
            "--ipv6",
            "on",
        ],
    ),
];
