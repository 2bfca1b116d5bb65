//! The configurations whose native table is golden-tested as an nft script
//! (`tests/golden/*.nft`): `tests/render_golden.rs` pins the text, `tests/render_nftables.rs`
//! loads it with `nft -f` and compares the result with `apply --backend nftables`.

/// The `render --backend nftables` arguments of each native golden file.
pub const NATIVE_GOLDEN: [(&str, &[&str]); 6] = [
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
    // A long include list (33 IPv4 networks, one over the threshold): a set; IPv6 keeps
    // its one rule.
    (
        "long-include-list.nft",
        &[
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--egress-included-ips",
            LONG_INCLUDE_LIST,
        ],
    ),
];

/// 33 IPv4 networks (none adjacent, so none merge) and one IPv6 network.
pub const LONG_INCLUDE_LIST: &str = "203.0.113.0/29,203.0.113.16/29,203.0.113.32/29,203.0.113.48/29,203.0.113.64/29,203.0.113.80/29,203.0.113.96/29,203.0.113.112/29,203.0.113.128/29,203.0.113.144/29,203.0.113.160/29,203.0.113.176/29,203.0.113.192/29,203.0.113.208/29,203.0.113.224/29,203.0.113.240/29,198.51.100.0/29,198.51.100.16/29,198.51.100.32/29,198.51.100.48/29,198.51.100.64/29,198.51.100.80/29,198.51.100.96/29,198.51.100.112/29,198.51.100.128/29,198.51.100.144/29,198.51.100.160/29,198.51.100.176/29,198.51.100.192/29,198.51.100.208/29,198.51.100.224/29,198.51.100.240/29,192.0.2.0/29,2001:db8:ff::/64";
