//! Randomized, model-based traffic test: generated configurations are applied with the real
//! meshinit binary in a throwaway namespace, real TCP connections probe the edges of each
//! configuration (ports at range ends and just outside, addresses at CIDR boundaries and
//! just outside, each identity, both families), and where every connection lands is
//! compared with an independent model of the App Mesh semantics written in this file (it
//! never asks meshinit's library what the answer is). Then a second configuration is
//! applied over the first (reconciliation), and `meshinit clean` must leave nothing of ours.
//! Runs once per backend (native nf_tables, iptables-nft, iptables-legacy). Needs root
//! (skips outside CI without it; fails in CI).
//!
//! Reproducible: case seeds derive from a fixed base seed. To replay or widen:
//! - `MESHINIT_MODEL_SEED=0x1234abcd[,0x…]` runs only those case seeds;
//! - `MESHINIT_MODEL_CASES=200` runs that many cases per backend (default [`DEFAULT_CASES`]).
//!
//! Every failing case is reported with its seed, backend, the configurations as meshinit
//! flags, the step that failed and, for traffic, each connection that landed elsewhere than
//! the model says.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");
/// Cases per backend when MESHINIT_MODEL_CASES is not set: sized for CI (about a second
/// per case when the machine is busy).
const DEFAULT_CASES: u64 = 12;
/// Base of the case seeds ("MESHINIT").
const BASE_SEED: u64 = 0x4d45_5348_494e_4954;
/// Upper bound of connections per configuration.
const MAX_PROBES: usize = 40;
/// Port of the peer's catch-all listener: every TCP connection arriving at the peer (any
/// address, any port) is redirected there, and its SO_ORIGINAL_DST says what the app
/// namespace really sent, so "direct" is proven without a listener per address and port.
const SINK_PORT: u16 = 9;
/// Bound of the first connections of a fresh namespace pair (see [`Scene::new`]).
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// A meshinit run longer than this is a hang, reported as a failure.
const MESHINIT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Deterministic random numbers (SplitMix64): the same seed gives the same case everywhere.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn port_between(&mut self, lo: u16, hi: u16) -> u16 {
        self.between(lo.into(), hi.into()) as u16
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

fn case_seeds() -> Vec<u64> {
    if let Ok(list) = std::env::var("MESHINIT_MODEL_SEED") {
        return list
            .split(',')
            .map(|s| {
                let s = s.trim();
                let parsed = match s.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => s.parse(),
                };
                parsed.unwrap_or_else(|_| panic!("MESHINIT_MODEL_SEED: {s:?} is not a seed"))
            })
            .collect();
    }
    let cases = std::env::var("MESHINIT_MODEL_CASES")
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("MESHINIT_MODEL_CASES: {s:?} is not a count"))
        })
        .unwrap_or(DEFAULT_CASES);
    (0..cases)
        .map(|i| Rng(BASE_SEED.wrapping_add(i)).next())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Addresses as numbers, so the model does its own CIDR arithmetic.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn width(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    fn max(self) -> u128 {
        match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }
}

fn ip_bits(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

fn ip_from_bits(family: Family, bits: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// The bits below a prefix of `prefix` bits.
fn host_mask(family: Family, prefix: u32) -> u128 {
    let host_bits = family.width() - prefix;
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// Whether a connection from the app namespace to this address really reaches the peer
/// and is answered there: unicast, routed via the peer (not on the veth's own subnet),
/// not the app's own, not an IPv4-mapped address (that would be IPv4 traffic).
fn probeable(family: Family, bits: u128) -> bool {
    match family {
        Family::V4 => {
            let first_octet = bits >> 24;
            first_octet != 0
                && first_octet != 127
                && first_octet < 224
                && (bits >> 8) != u128::from(u32::from(APP_V4) >> 8)
        }
        Family::V6 => {
            bits >> 32 != 0 // ::/96: unspecified, loopback, IPv4-compatible
                && bits >> 32 != 0xffff // ::ffff:0:0/96, IPv4-mapped
                && bits >> 118 != 0x3fa // fe80::/10
                && bits >> 120 != 0xff // ff00::/8
                && bits >> 64 != u128::from(APP_V6) >> 64
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configurations as a user writes them.

/// One EgressIgnoredPorts/AppPorts entry. `separator` is how a range is spelt (`-` as in
/// App Mesh, `:` as in iptables); `None` writes a single port.
#[derive(Debug, Clone, Copy)]
struct PortEntry {
    first: u16,
    last: u16,
    separator: Option<char>,
}

impl PortEntry {
    fn single(port: u16) -> PortEntry {
        PortEntry {
            first: port,
            last: port,
            separator: None,
        }
    }

    fn range(first: u16, last: u16) -> PortEntry {
        PortEntry {
            first: first.min(last),
            last: first.max(last),
            separator: Some('-'),
        }
    }

    fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    fn text(&self) -> String {
        match self.separator {
            None => self.first.to_string(),
            Some(sep) => format!("{}{sep}{}", self.first, self.last),
        }
    }
}

/// One EgressIgnoredIPs entry as written: an address (`bare`) or `address/prefix`, the
/// address possibly with host bits set under the prefix.
#[derive(Debug, Clone, Copy)]
struct IgnoredNet {
    family: Family,
    written: u128,
    prefix: u32,
    bare: bool,
}

impl IgnoredNet {
    fn first(&self) -> u128 {
        self.written & !host_mask(self.family, self.prefix) & self.family.max()
    }

    fn last(&self) -> u128 {
        self.first() | host_mask(self.family, self.prefix)
    }

    fn contains(&self, family: Family, bits: u128) -> bool {
        family == self.family && self.first() <= bits && bits <= self.last()
    }

    fn text(&self) -> String {
        let ip = ip_from_bits(self.family, self.written);
        if self.bare {
            ip.to_string()
        } else {
            format!("{ip}/{}", self.prefix)
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    ignored_uid: Option<u32>,
    ignored_gid: Option<u32>,
    egress_port: u16,
    /// ProxyIngressPort and AppPorts.
    ingress: Option<(u16, Vec<PortEntry>)>,
    ignored_ports: Vec<PortEntry>,
    ignored_ips: Vec<IgnoredNet>,
    /// Given as an ECS proxyConfiguration on stdin rather than as flags.
    as_ecs_json: bool,
    /// Run from the machine's namespace with `--netns` rather than inside with `ip netns exec`.
    with_netns_flag: bool,
    /// The settings beyond App Mesh's (flags only: ECS has no names for them).
    mesh: Mesh,
}

/// The mesh settings of a case, as docs/configuration.md describes them.
#[derive(Debug, Clone, Default)]
struct Mesh {
    /// `--egress-included-ips`: only these outbound destinations are captured (a family
    /// without entries: none of it); the exclusions still win.
    included_ips: Option<Vec<IgnoredNet>>,
    /// `--app-ports '*'` with these `--ingress-ignored-ports` (the ingress's app ports
    /// are then unused): every inbound port but these and the proxy's is captured.
    all_app_ports: Option<Vec<PortEntry>>,
    /// `--ignored-interfaces`: traffic in or out through these is never captured.
    ignored_interfaces: Vec<&'static str>,
    /// `--proxy-dns-port`: TCP (and UDP, tests/mesh_dns.rs) port 53 goes to this port, unless
    /// the proxy's own or out through an ignored interface; before the exclusions.
    dns_port: Option<u16>,
    /// `--drop-invalid`: no connection here is INVALID, so routing is unchanged; the rules
    /// must still apply, show in sync, move over and clean up with the rest
    /// (tests/mesh_invalid_drop.rs sends the packets it drops).
    drop_invalid: bool,
}

impl Mesh {
    fn is_off(&self) -> bool {
        self.included_ips.is_none()
            && self.all_app_ports.is_none()
            && self.ignored_interfaces.is_empty()
            && !self.drop_invalid
            && self.dns_port.is_none()
    }
}

impl Config {
    /// (ECS property name, flag, value) of every property that is set.
    fn properties(&self) -> Vec<(&'static str, &'static str, String)> {
        let join_ports = |entries: &[PortEntry]| {
            entries
                .iter()
                .map(PortEntry::text)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut props = Vec::new();
        if let Some(uid) = self.ignored_uid {
            props.push(("IgnoredUID", "--ignored-uid", uid.to_string()));
        }
        if let Some(gid) = self.ignored_gid {
            props.push(("IgnoredGID", "--ignored-gid", gid.to_string()));
        }
        props.push((
            "ProxyEgressPort",
            "--proxy-egress-port",
            self.egress_port.to_string(),
        ));
        if let Some((port, app_ports)) = &self.ingress {
            props.push(("ProxyIngressPort", "--proxy-ingress-port", port.to_string()));
            match &self.mesh.all_app_ports {
                None => props.push(("AppPorts", "--app-ports", join_ports(app_ports))),
                Some(never) => {
                    props.push(("AppPorts", "--app-ports", "*".into()));
                    if !never.is_empty() {
                        props.push(("", "--ingress-ignored-ports", join_ports(never)));
                    }
                }
            }
        }
        if !self.ignored_ports.is_empty() {
            props.push((
                "EgressIgnoredPorts",
                "--egress-ignored-ports",
                join_ports(&self.ignored_ports),
            ));
        }
        if !self.ignored_ips.is_empty() {
            let ips: Vec<String> = self.ignored_ips.iter().map(IgnoredNet::text).collect();
            props.push(("EgressIgnoredIPs", "--egress-ignored-ips", ips.join(",")));
        }
        if let Some(included) = &self.mesh.included_ips {
            let ips: Vec<String> = included.iter().map(IgnoredNet::text).collect();
            props.push(("", "--egress-included-ips", ips.join(",")));
        }
        if !self.mesh.ignored_interfaces.is_empty() {
            props.push((
                "",
                "--ignored-interfaces",
                self.mesh.ignored_interfaces.join(","),
            ));
        }
        if self.mesh.drop_invalid {
            props.push(("", "--drop-invalid", "true".into()));
        }
        if let Some(port) = self.mesh.dns_port {
            props.push(("", "--proxy-dns-port", port.to_string()));
        }
        props
    }

    /// Arguments after the command name, and what goes to stdin.
    fn args_and_stdin(&self) -> (Vec<String>, Option<String>) {
        if self.as_ecs_json {
            let properties: Vec<serde_json::Value> = self
                .properties()
                .into_iter()
                .map(|(name, _, value)| serde_json::json!({ "name": name, "value": value }))
                .collect();
            let doc = serde_json::json!({
                "type": "APPMESH",
                "containerName": "envoy",
                "properties": properties,
            });
            (vec!["-".into()], Some(doc.to_string()))
        } else {
            let args = self
                .properties()
                .into_iter()
                .flat_map(|(_, flag, value)| [flag.to_string(), value])
                .collect();
            (args, None)
        }
    }

    /// The configuration as a meshinit command line (the same settings whatever surface
    /// the case used), for failure reports.
    fn describe(&self) -> String {
        let mut text = String::new();
        for (_, flag, value) in self.properties() {
            let _ = write!(text, " {flag} '{value}'");
        }
        let surface = if self.as_ecs_json {
            "ECS JSON on stdin"
        } else {
            "flags"
        };
        let how = if self.with_netns_flag {
            "--netns"
        } else {
            "ip netns exec"
        };
        let v4 = self
            .ignored_ips
            .iter()
            .filter(|n| n.family == Family::V4)
            .count();
        let _ = write!(
            text,
            "\n      (given as {surface}, run with {how}; {} port entries, {v4} IPv4 and {} IPv6 networks)",
            self.ignored_ports.len(),
            self.ignored_ips.len() - v4
        );
        text
    }
}

// ---------------------------------------------------------------------------------------
// The generator: values at the edges and entries related to each other.

const EDGE_PORTS: [u16; 11] = [1, 2, 21, 22, 23, 1023, 1024, 15001, 32768, 65534, 65535];

fn generate_config(rng: &mut Rng) -> Config {
    let ids = [0, 1, 1337, 1338, 65534, 65535, 4_294_967_294];
    let random_id = |rng: &mut Rng| {
        if rng.chance(60) {
            rng.pick(&ids)
        } else {
            rng.between(1, 200_000) as u32
        }
    };
    let (ignored_uid, ignored_gid) = match rng.below(3) {
        0 => (Some(random_id(rng)), None),
        1 => (None, Some(random_id(rng))),
        _ => (Some(random_id(rng)), Some(random_id(rng))),
    };
    let egress_port = if rng.chance(40) {
        15001
    } else if rng.chance(30) {
        rng.pick(&EDGE_PORTS)
    } else {
        rng.port_between(1, 65535)
    };
    let ingress = rng.chance(60).then(|| {
        let mut ingress_port = if rng.chance(50) {
            15000
        } else {
            rng.port_between(1, 65535)
        };
        if ingress_port == egress_port {
            ingress_port = if egress_port == 65535 {
                1
            } else {
                egress_port + 1
            };
        }
        let proxy_ports = [egress_port, ingress_port];
        let count = if rng.chance(15) {
            rng.between(16, 30)
        } else {
            rng.between(1, 5)
        };
        let mut app_ports: Vec<PortEntry> = generate_port_entries(rng, count)
            .into_iter()
            .filter(|e| !proxy_ports.iter().any(|&p| e.contains(p)))
            .collect();
        if app_ports.is_empty() {
            let port = (1..=65535u16)
                .map(|_| rng.port_between(1, 65535))
                .find(|p| !proxy_ports.contains(p))
                .expect("a free port");
            app_ports.push(PortEntry::single(port));
        }
        (ingress_port, app_ports)
    });
    // Long lists: more than 4 multiport rules of ports (60 slots), more than 32 networks.
    let port_count = if rng.chance(35) {
        rng.between(70, 100)
    } else {
        rng.between(0, 8)
    };
    let ignored_ports = generate_port_entries(rng, port_count);
    let ignored_ips = generate_ip_list(rng);
    let proxy_ports = [Some(egress_port), ingress.as_ref().map(|(p, _)| *p)];
    let mesh = generate_mesh(rng, ingress.is_some(), &proxy_ports);
    Config {
        ignored_uid,
        ignored_gid,
        egress_port,
        ingress,
        ignored_ports,
        ignored_ips,
        as_ecs_json: mesh.is_off() && rng.chance(50),
        with_netns_flag: rng.chance(30),
        mesh,
    }
}

/// The settings beyond App Mesh's, each in about a third of the cases.
fn generate_mesh(rng: &mut Rng, has_ingress: bool, proxy_ports: &[Option<u16>]) -> Mesh {
    let included_ips = rng.chance(35).then(|| {
        let mut nets = Vec::new();
        // Sometimes a list longer than iptables keeps as rules (32): then it is a set.
        let long = rng.chance(25);
        for family in [Family::V4, Family::V6] {
            // Sometimes none of a family: then none of it is captured.
            let count = if long && family == Family::V4 {
                rng.between(33, 40)
            } else {
                rng.between(0, 3)
            };
            for _ in 0..count {
                let net = generate_net(rng, family, &nets);
                nets.push(net);
            }
        }
        if nets.is_empty() {
            nets.push(generate_net(rng, Family::V4, &[]));
        }
        nets
    });
    let all_app_ports = (has_ingress && rng.chance(35)).then(|| {
        let count = rng.between(0, 6);
        generate_port_entries(rng, count)
    });
    let ignored_interfaces = match rng.below(6) {
        // The app's only way out: nothing through it is captured, either way.
        0 => vec![APP_IFACE],
        // An interface the namespace does not have: no effect.
        1 => vec!["tun9"],
        _ => Vec::new(),
    };
    Mesh {
        included_ips,
        all_app_ports,
        ignored_interfaces,
        drop_invalid: rng.chance(35),
        dns_port: rng.chance(35).then(|| {
            (0..)
                .map(|i| {
                    if i == 0 {
                        15053
                    } else {
                        rng.port_between(1024, 65535)
                    }
                })
                .find(|p| !proxy_ports.contains(&Some(*p)) && *p != SINK_PORT)
                .unwrap()
        }),
    }
}

/// `count` entries. Short lists favour wide ranges and the edges of the port space; long
/// lists (`count` > 15) favour scattered single ports and short ranges, so that they stay
/// long after merging (and so use a port set), with some related pairs among them.
fn generate_port_entries(rng: &mut Rng, count: u64) -> Vec<PortEntry> {
    let long = count > 15;
    let mut entries: Vec<PortEntry> = Vec::new();
    for _ in 0..count {
        let roll = rng.below(100);
        let mut entry = if !entries.is_empty() && roll < if long { 30 } else { 40 } {
            let base = entries[rng.below(entries.len() as u64) as usize];
            related_port_entry(rng, base)
        } else if long && roll < 75 {
            PortEntry::single(rng.port_between(1, 65535))
        } else if long && roll < 95 {
            let first = rng.port_between(1, 65535);
            PortEntry::range(first, first.saturating_add(rng.between(1, 10) as u16))
        } else {
            match rng.below(5) {
                0 => PortEntry::single(rng.pick(&EDGE_PORTS)),
                1 => PortEntry::single(rng.port_between(1, 65535)),
                2 => {
                    let first = rng.port_between(1, 65535);
                    let len = rng.pick(&[1u16, 2, 9, 100, 1000, 20000]);
                    PortEntry::range(first, first.saturating_add(len))
                }
                3 => {
                    if rng.chance(50) {
                        PortEntry::range(1, rng.port_between(1, 2000))
                    } else {
                        PortEntry::range(rng.port_between(60000, 65535), 65535)
                    }
                }
                _ => {
                    let (first, last) =
                        rng.pick(&[(20, 25), (22, 22), (1, 22), (22, 80), (23, 30)]);
                    PortEntry::range(first, last)
                }
            }
        };
        if entry.separator.is_some() && rng.chance(10) {
            entry.separator = Some(':');
        }
        entries.push(entry);
    }
    entries
}

/// An entry touching, adjacent to, overlapping, nested in, containing or equal to `base`.
fn related_port_entry(rng: &mut Rng, base: PortEntry) -> PortEntry {
    let step = rng.pick(&[1u16, 2, 5, 50]);
    let (first, last) = (base.first, base.last);
    match rng.below(8) {
        // Starts where base ends.
        0 => PortEntry::range(last, last.saturating_add(step)),
        // Starts right after base.
        1 => {
            let start = last.saturating_add(1);
            PortEntry::range(start, start.saturating_add(step))
        }
        // Ends right before base.
        2 => {
            let end = first.saturating_sub(1).max(1);
            PortEntry::range(end.saturating_sub(step).max(1), end)
        }
        // Overlaps base's upper end.
        3 => PortEntry::range(rng.port_between(first, last), last.saturating_add(step)),
        // Overlaps base's lower end.
        4 => PortEntry::range(
            first.saturating_sub(step).max(1),
            rng.port_between(first, last),
        ),
        // Nested in base.
        5 => {
            let a = rng.port_between(first, last);
            let b = rng.port_between(first, last);
            if a == b && rng.chance(50) {
                PortEntry::single(a)
            } else {
                PortEntry::range(a, b)
            }
        }
        // Contains base.
        6 => PortEntry::range(first.saturating_sub(step).max(1), last.saturating_add(step)),
        // The same entry again.
        _ => base,
    }
}

fn generate_ip_list(rng: &mut Rng) -> Vec<IgnoredNet> {
    let long = rng.below(5);
    let (v4_count, v6_count) = match long {
        0 => (rng.between(34, 50), rng.between(0, 4)),
        1 => (rng.between(0, 4), rng.between(34, 50)),
        2 if rng.chance(50) => (rng.between(34, 45), rng.between(34, 45)),
        _ => (rng.between(0, 5), rng.between(0, 5)),
    };
    let mut v4 = Vec::new();
    for _ in 0..v4_count {
        let net = generate_net(rng, Family::V4, &v4);
        v4.push(net);
    }
    let mut v6 = Vec::new();
    for _ in 0..v6_count {
        let net = generate_net(rng, Family::V6, &v6);
        v6.push(net);
    }
    // meshinit refuses a list that covers a whole family (tests/input_hardening.rs proves
    // that); these cases are about routing, so the widest entries go until none does.
    for list in [&mut v4, &mut v6] {
        while covers_whole_family(list) {
            let widest = (0..list.len()).min_by_key(|&i| list[i].prefix).unwrap();
            list.remove(widest);
        }
    }
    let mut all: Vec<IgnoredNet> = v4.into_iter().chain(v6).collect();
    // Families mixed in one list, in any order.
    rng.shuffle(&mut all);
    all
}

/// Whether `nets` (all of one family) together cover every address of it.
fn covers_whole_family(nets: &[IgnoredNet]) -> bool {
    let Some(family) = nets.first().map(|n| n.family) else {
        return false;
    };
    let mut ranges: Vec<(u128, u128)> = nets.iter().map(|n| (n.first(), n.last())).collect();
    ranges.sort_unstable();
    // The first address not covered by the ranges seen so far.
    let mut uncovered = 0;
    for (first, last) in ranges {
        if first > uncovered {
            return false;
        }
        if last >= family.max() {
            return true;
        }
        uncovered = uncovered.max(last + 1);
    }
    false
}

const V4_PREFIXES: [u32; 17] = [
    4, 6, 7, 8, 9, 15, 16, 17, 23, 24, 25, 28, 30, 31, 32, 32, 32,
];
const V6_PREFIXES: [u32; 17] = [
    4, 8, 16, 32, 47, 48, 63, 64, 65, 96, 112, 120, 126, 127, 128, 128, 128,
];

fn always_ignored() -> Vec<(Family, u128)> {
    [
        "169.254.170.2",
        "169.254.169.254",
        "169.254.170.23",
        "fd00:ec2::23",
        "fd00:ec2::254",
    ]
    .iter()
    .map(|s| ip_bits(s.parse().unwrap()))
    .collect()
}

fn random_base(rng: &mut Rng, family: Family) -> u128 {
    match family {
        Family::V4 => {
            let random = u128::from(rng.next() as u32);
            match rng.below(5) {
                0 => (10 << 24) | (random & 0xff_ffff),
                1 => (u128::from(u32::from(Ipv4Addr::new(203, 0, 113, 0)))) | (random & 0xff),
                2 => (u128::from(u32::from(Ipv4Addr::new(169, 254, 0, 0)))) | (random & 0xffff),
                _ => random,
            }
        }
        Family::V6 => {
            let random = rng.u128();
            let (network, prefix): (u128, u32) = match rng.below(5) {
                0 => ("2000::".parse::<Ipv6Addr>().unwrap().into(), 3),
                1 => ("fd00::".parse::<Ipv6Addr>().unwrap().into(), 8),
                2 => ("2001:db8:ff::".parse::<Ipv6Addr>().unwrap().into(), 48),
                3 => ("fd00:ec2::".parse::<Ipv6Addr>().unwrap().into(), 32),
                _ => (0, 0),
            };
            if prefix == 0 {
                random
            } else {
                network | (random & host_mask(Family::V6, prefix))
            }
        }
    }
}

fn generate_net(rng: &mut Rng, family: Family, earlier: &[IgnoredNet]) -> IgnoredNet {
    let width = family.width();
    let prefixes: &[u32] = match family {
        Family::V4 => &V4_PREFIXES,
        Family::V6 => &V6_PREFIXES,
    };
    let kinds = if earlier.is_empty() { 3 } else { 6 };
    let (base, prefix) = match rng.below(kinds) {
        // Prefixes up to /3 are rare: a few of them together cover a whole family.
        0 | 1 if rng.chance(4) => (random_base(rng, family), rng.pick(&[1, 2, 3])),
        0 | 1 => (random_base(rng, family), rng.pick(prefixes)),
        // Around an always-ignored endpoint.
        2 => {
            let endpoints: Vec<u128> = always_ignored()
                .into_iter()
                .filter(|(f, _)| *f == family)
                .map(|(_, bits)| bits)
                .collect();
            let prefix = width - rng.pick(&[0, 0, 1, 2, 8, 16]);
            (rng.pick(&endpoints), prefix)
        }
        kind => {
            let other = earlier[rng.below(earlier.len() as u64) as usize];
            match kind {
                // Nested in (or equal to) an earlier network.
                3 => {
                    let prefix = rng.between(other.prefix.into(), width.into()) as u32;
                    (
                        other.first() | (rng.u128() & host_mask(family, other.prefix)),
                        prefix,
                    )
                }
                // Its sibling: adjacent, the same size.
                4 => {
                    let sibling_bit = 1u128 << (width - other.prefix);
                    (other.first() ^ sibling_bit, other.prefix)
                }
                // Containing it.
                _ => {
                    let wider = rng.pick(&[1, 1, 2, 8]);
                    (other.first(), other.prefix.saturating_sub(wider).max(4))
                }
            }
        }
    };
    let base = base & family.max();
    let first = base & !host_mask(family, prefix);
    // Host bits set under the prefix (meshinit clears them, with a warning).
    let written = if prefix < width && rng.chance(25) {
        first | (rng.u128() & host_mask(family, prefix))
    } else {
        first
    };
    let net = IgnoredNet {
        family,
        written,
        prefix,
        bare: prefix == width && rng.chance(50),
    };
    let mapped = family == Family::V6 && written >> 32 == 0xffff;
    if mapped {
        // An IPv4-mapped address is out of scope here (issue: map it or refuse it).
        return generate_net(rng, family, earlier);
    }
    net
}

// ---------------------------------------------------------------------------------------
// The model: App Mesh semantics, from docs/configuration.md, independent of meshinit's code.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    uid: u32,
    gid: u32,
    role: &'static str,
}

/// Where a connection should land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// Redirected to ProxyEgressPort in the app namespace, original destination intact.
    EgressProxy,
    /// Redirected to the proxy's DNS port in the app namespace, original destination intact.
    DnsProxy,
    /// Redirected to ProxyIngressPort in the app namespace, original destination intact.
    IngressProxy,
    /// Left the app namespace unchanged and reached the peer.
    Remote,
    /// Reached the app's own listener on this port unchanged.
    AppListener(u16),
}

fn is_local_to_app(ip: IpAddr) -> bool {
    ip.is_loopback() || ip == IpAddr::V4(APP_V4) || ip == IpAddr::V6(APP_V6)
}

fn port_ignored(config: &Config, port: u16) -> bool {
    port == 22 || config.ignored_ports.iter().any(|e| e.contains(port))
}

fn address_ignored(config: &Config, ip: IpAddr) -> bool {
    let (family, bits) = ip_bits(ip);
    always_ignored().contains(&(family, bits))
        || config
            .ignored_ips
            .iter()
            .any(|net| net.contains(family, bits))
}

/// Outbound TCP from the app namespace (`config` is None when no rules are installed).
fn expected_egress(config: Option<&Config>, who: Identity, dest: SocketAddr) -> Expected {
    if is_local_to_app(dest.ip()) {
        return Expected::AppListener(dest.port());
    }
    let Some(config) = config else {
        return Expected::Remote;
    };
    let (family, bits) = ip_bits(dest.ip());
    let not_included = config
        .mesh
        .included_ips
        .as_ref()
        .is_some_and(|nets| !nets.iter().any(|n| n.contains(family, bits)));
    let proxy_or_interface = config.ignored_uid == Some(who.uid)
        || config.ignored_gid == Some(who.gid)
        || config.mesh.ignored_interfaces.contains(&APP_IFACE);
    if !proxy_or_interface && config.mesh.dns_port.is_some() && dest.port() == 53 {
        return Expected::DnsProxy;
    }
    let exempt = config.ignored_uid == Some(who.uid)
        || config.ignored_gid == Some(who.gid)
        || port_ignored(config, dest.port())
        || address_ignored(config, dest.ip())
        || not_included
        || config.mesh.ignored_interfaces.contains(&APP_IFACE);
    if exempt {
        Expected::Remote
    } else {
        Expected::EgressProxy
    }
}

/// Inbound TCP from the peer to the app's address.
fn expected_ingress(config: Option<&Config>, dest: SocketAddr) -> Expected {
    if let Some(config) = config
        && config.mesh.ignored_interfaces.contains(&APP_IFACE)
    {
        return Expected::AppListener(dest.port());
    }
    if let Some(config) = config
        && let (Some((ingress_port, _)), Some(never)) =
            (&config.ingress, &config.mesh.all_app_ports)
    {
        let port = dest.port();
        let never_captured = never.iter().any(|e| e.contains(port))
            || port == *ingress_port
            || port == config.egress_port
            || Some(port) == config.mesh.dns_port;
        return if never_captured {
            Expected::AppListener(port)
        } else {
            Expected::IngressProxy
        };
    }
    match config.and_then(|c| c.ingress.as_ref()) {
        Some((_, app_ports)) if app_ports.iter().any(|e| e.contains(dest.port())) => {
            Expected::IngressProxy
        }
        _ => Expected::AppListener(dest.port()),
    }
}

// ---------------------------------------------------------------------------------------
// Probes: connections chosen to sit on the configuration's edges.

#[derive(Debug, Clone)]
struct Probe {
    /// None: from the peer (inbound); Some: from the app namespace as this identity.
    from_app_as: Option<Identity>,
    dest: SocketAddr,
    why: String,
}

impl Probe {
    fn expected(&self, config: Option<&Config>) -> Expected {
        match self.from_app_as {
            Some(who) => expected_egress(config, who, self.dest),
            None => expected_ingress(config, self.dest),
        }
    }

    fn describe(&self) -> String {
        match self.from_app_as {
            Some(who) => format!(
                "app as {} (uid {} gid {}) -> {} [{}]",
                who.role, who.uid, who.gid, self.dest, self.why
            ),
            None => format!("peer -> {} [{}]", self.dest, self.why),
        }
    }
}

/// What a phase needs: the identities, the probes and the app-side listener ports.
struct ProbePlan {
    probes: Vec<Probe>,
    app_listener_ports: Vec<u16>,
}

fn identities(config: &Config) -> [Identity; 3] {
    // Numbers equal to neither ignored ID.
    let other = |ignored: Option<u32>| {
        [1000u32, 1001]
            .into_iter()
            .find(|&n| Some(n) != ignored)
            .unwrap()
    };
    let ordinary = Identity {
        uid: other(config.ignored_uid),
        gid: other(config.ignored_gid),
        role: "ordinary user",
    };
    let ignored_uid = Identity {
        uid: config.ignored_uid.unwrap_or(ordinary.uid),
        gid: other(config.ignored_gid),
        role: "ignored uid",
    };
    let ignored_gid = Identity {
        uid: other(config.ignored_uid),
        gid: config.ignored_gid.unwrap_or(ordinary.gid),
        role: "ignored gid",
    };
    [ordinary, ignored_uid, ignored_gid]
}

fn random_probeable(rng: &mut Rng, family: Family) -> u128 {
    loop {
        let bits = random_base(rng, family);
        if probeable(family, bits) {
            return bits;
        }
    }
}

/// A destination the config does not ignore by address (if one is easy to find).
fn ordinary_destination(rng: &mut Rng, config: &Config, family: Family) -> IpAddr {
    let mut candidate = ip_from_bits(family, random_probeable(rng, family));
    for _ in 0..200 {
        if !address_ignored(config, candidate) {
            break;
        }
        candidate = ip_from_bits(family, random_probeable(rng, family));
    }
    candidate
}

fn ordinary_port(rng: &mut Rng, config: &Config) -> u16 {
    let mut port = rng.port_between(1024, 65535);
    for _ in 0..200 {
        if !port_ignored(config, port) && port != SINK_PORT {
            break;
        }
        port = rng.port_between(1, 65535);
    }
    port
}

/// Up to [`MAX_PROBES`] connections for `config`; `earlier` (the configuration applied
/// before, on reconciliation) adds a few probes on its edges, where stale rules would show.
fn plan_probes(rng: &mut Rng, config: &Config, earlier: Option<&Config>) -> ProbePlan {
    let [ordinary, ignored_uid, ignored_gid] = identities(config);
    let d4 = ordinary_destination(rng, config, Family::V4);
    let d6 = ordinary_destination(rng, config, Family::V6);
    let port = ordinary_port(rng, config);
    let app = |who: Identity, ip: IpAddr, port: u16, why: String| Probe {
        from_app_as: Some(who),
        dest: SocketAddr::new(ip, port),
        why,
    };

    let mut core = vec![
        app(ordinary, d4, port, "ordinary destination".into()),
        app(ordinary, d6, port, "ordinary destination".into()),
    ];
    for (who, set) in [
        (ignored_uid, config.ignored_uid.is_some()),
        (ignored_gid, config.ignored_gid.is_some()),
    ] {
        if set {
            core.push(app(who, d4, port, "ordinary destination".into()));
            core.push(app(who, d6, port, "ordinary destination".into()));
        }
    }
    // DNS over TCP: captured for the app even to an ignored destination, not for the proxy.
    if config.mesh.dns_port.is_some() {
        let (family, bits) = rng.pick(&always_ignored());
        core.push(app(ordinary, d4, 53, "DNS".into()));
        core.push(app(ordinary, d6, 53, "DNS".into()));
        core.push(app(
            ordinary,
            ip_from_bits(family, bits),
            53,
            "DNS to an ignored destination".into(),
        ));
        core.push(app(ignored_uid, d4, 53, "DNS from the proxy".into()));
    }
    let (family, bits) = rng.pick(&always_ignored());
    core.push(app(
        ordinary,
        ip_from_bits(family, bits),
        port,
        "always ignored".into(),
    ));

    // The app's own listener for local destinations: not a proxy port.
    let proxy_ports = [
        Some(config.egress_port),
        config.ingress.as_ref().map(|(p, _)| *p),
        config.mesh.dns_port,
    ];
    let free = |p: u16| !proxy_ports.contains(&Some(p)) && p != 0;
    let local_port = (0..)
        .map(|_| rng.port_between(1, 65535))
        .find(|&p| free(p))
        .unwrap();
    let mut app_listener_ports = vec![local_port];
    let locals = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(APP_V4),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(APP_V6),
    ];
    for _ in 0..2 {
        core.push(app(
            ordinary,
            rng.pick(&locals),
            local_port,
            "the app's own address".into(),
        ));
    }

    // Inbound, from the peer: AppPorts edges, or any port without ingress.
    let inbound_ports: Vec<(u16, String)> = match (&config.ingress, &config.mesh.all_app_ports) {
        (Some(_), Some(never)) => {
            let mut candidates = vec![
                (
                    rng.port_between(1, 65535),
                    "AppPorts * any port".to_string(),
                ),
                (rng.pick(&EDGE_PORTS), "AppPorts * edge port".to_string()),
            ];
            for e in never {
                for (p, edge) in port_edges(*e) {
                    candidates.push((p, format!("IngressIgnoredPorts {} {edge}", e.text())));
                }
            }
            rng.shuffle(&mut candidates[2..]);
            candidates.retain(|(p, _)| free(*p));
            candidates.truncate(5);
            candidates
        }
        (Some((_, app_ports)), None) => {
            let mut candidates = Vec::new();
            for _ in 0..2 {
                let e = app_ports[rng.below(app_ports.len() as u64) as usize];
                for (p, edge) in port_edges(e) {
                    candidates.push((p, format!("AppPorts {} {edge}", e.text())));
                }
            }
            rng.shuffle(&mut candidates);
            candidates.retain(|(p, _)| free(*p));
            candidates.truncate(3);
            candidates
        }
        (None, _) => vec![(local_port, "no ingress".into())],
    };
    for (p, why) in inbound_ports {
        if !app_listener_ports.contains(&p) {
            app_listener_ports.push(p);
        }
        let ip = if rng.chance(50) {
            IpAddr::V4(APP_V4)
        } else {
            IpAddr::V6(APP_V6)
        };
        core.push(Probe {
            from_app_as: None,
            dest: SocketAddr::new(ip, p),
            why,
        });
    }

    // Edges of the ignored ports (and of 22) and of the ignored networks.
    let mut edges = Vec::new();
    let mut port_sources: Vec<(PortEntry, &str)> = vec![(PortEntry::single(22), "always")];
    for (source, count, label) in [
        (Some(config), 3, "EgressIgnoredPorts"),
        (earlier, 1, "earlier"),
    ] {
        let Some(source) = source else { continue };
        for _ in 0..count.min(source.ignored_ports.len()) {
            let e = source.ignored_ports[rng.below(source.ignored_ports.len() as u64) as usize];
            port_sources.push((e, label));
        }
    }
    for (entry, label) in port_sources {
        let mut candidates = port_edges(entry);
        rng.shuffle(&mut candidates);
        for (p, edge) in candidates.into_iter().take(3) {
            if p == SINK_PORT {
                continue;
            }
            let ip = if rng.chance(50) { d4 } else { d6 };
            edges.push(app(
                ordinary,
                ip,
                p,
                format!("{label} port {} {edge}", entry.text()),
            ));
        }
    }
    let mut net_sources = Vec::new();
    let included = |c: &Config| c.mesh.included_ips.clone().unwrap_or_default();
    for (source, count, label, list) in [
        (Some(config), 2, "EgressIgnoredIPs", None),
        (earlier, 1, "earlier", None),
        (Some(config), 2, "EgressIncludedIPs", Some(included(config))),
    ] {
        let Some(source) = source else { continue };
        let list = list.unwrap_or_else(|| source.ignored_ips.clone());
        for family in [Family::V4, Family::V6] {
            let nets: Vec<IgnoredNet> = list
                .iter()
                .filter(|n| n.family == family)
                .copied()
                .collect();
            for _ in 0..count.min(nets.len()) {
                net_sources.push((nets[rng.below(nets.len() as u64) as usize], label));
            }
        }
    }
    for (net, label) in net_sources {
        let (first, last) = (net.first(), net.last());
        let mut candidates = vec![(first, "first"), (last, "last")];
        if first > 0 {
            candidates.push((first - 1, "just below"));
        }
        if last < net.family.max() {
            candidates.push((last + 1, "just above"));
        }
        let span = last - first;
        if span > 1 {
            candidates.push((first + 1 + rng.u128() % (span - 1), "inside"));
        }
        candidates.retain(|(bits, _)| probeable(net.family, *bits));
        rng.shuffle(&mut candidates);
        for (bits, edge) in candidates.into_iter().take(3) {
            let p = if rng.chance(80) {
                port
            } else {
                rng.port_between(1, 65535)
            };
            if p == SINK_PORT {
                continue;
            }
            edges.push(app(
                ordinary,
                ip_from_bits(net.family, bits),
                p,
                format!("{label} {} {edge}", net.text()),
            ));
        }
    }
    rng.shuffle(&mut edges);
    edges.truncate(MAX_PROBES.saturating_sub(core.len()));
    core.extend(edges);
    ProbePlan {
        probes: core,
        app_listener_ports,
    }
}

/// A port range's ends and the ports just outside them.
fn port_edges(e: PortEntry) -> Vec<(u16, &'static str)> {
    let mut edges = vec![(e.first, "first"), (e.last, "last")];
    if e.first > 1 {
        edges.push((e.first - 1, "just below"));
    }
    if e.last < 65535 {
        edges.push((e.last + 1, "just above"));
    }
    edges.dedup_by_key(|(p, _)| *p);
    edges
}

// ---------------------------------------------------------------------------------------
// Running meshinit and looking at the namespace.

/// Runs meshinit with `args` in the app namespace, as configured (inside with `ip netns
/// exec`, or from here with `--netns`), bounded by [`MESHINIT_TIMEOUT`].
fn meshinit(
    app: &TestNetns,
    with_netns_flag: bool,
    args: &[String],
    stdin: Option<&str>,
) -> Result<Output, String> {
    let mut command = if with_netns_flag {
        let mut c = Command::new(MESHINIT);
        c.args(args)
            .arg("--netns")
            .arg(app.path().to_str().unwrap());
        c
    } else {
        let mut c = app.command(MESHINIT);
        c.args(args);
        c
    };
    for var in ["MESHINIT_BACKEND", "MESHINIT_NETNS", "RUST_LOG"] {
        command.env_remove(var);
    }
    command.env("NO_COLOR", "1");
    run_bounded(command, stdin)
}

fn run_bounded(mut command: Command, stdin: Option<&str>) -> Result<Output, String> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let text = text.to_owned();
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + MESHINIT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{command:?} did not finish within {MESHINIT_TIMEOUT:?}"
                ));
            }
            Err(e) => return Err(format!("waiting for {command:?}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn expect_exit_0(what: &str, output: Result<Output, String>) -> Result<(), String> {
    let output = output?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} exited with {}\n    stdout: {}\n    stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        last_part(String::from_utf8_lossy(&output.stderr).trim(), 3000)
    ))
}

/// The end of a long text (where a failing program says why), with a mark of the cut.
fn last_part(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("(… {start} bytes) {}", &text[start..])
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// Every backend by its `--backend` name here: "nftables" (native), "nft", "legacy".
const ALL_BACKENDS: [&str; 3] = ["nftables", "nft", "legacy"];

fn other_backends(backend: &str) -> Vec<&'static str> {
    ALL_BACKENDS.into_iter().filter(|b| *b != backend).collect()
}

/// What of ours the given backends hold: the native `inet meshinit` table (read with
/// `nft`), lines that mention APPMESH in the iptables backends' tables (every table, both
/// families), and the namespace's ipsets. The save programs are run without `-t`, so they
/// list the tables that exist and create none (which would change what `auto` picks).
fn our_leftovers(app: &TestNetns, backends: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for backend in backends {
        if *backend == "nftables" {
            match app.command("nft").args(["list", "tables"]).output() {
                Ok(o) if o.status.success() => found.extend(
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter(|l| l.trim() == "table inet meshinit")
                        .map(|l| format!("nft: {l}")),
                ),
                Ok(o) => found.push(format!(
                    "nft list tables failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => found.push(format!("cannot run nft: {e}")),
            }
            continue;
        }
        for family in ["iptables", "ip6tables"] {
            let program = format!("{family}-{backend}-save");
            let output = app.command(&program).output();
            match output {
                Ok(o) if o.status.success() => {
                    for line in String::from_utf8_lossy(&o.stdout).lines() {
                        if line.contains("APPMESH") || line.contains("MESHINIT") {
                            found.push(format!("{program}: {line}"));
                        }
                    }
                }
                Ok(o) => found.push(format!(
                    "{program} failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => found.push(format!("cannot run {program}: {e}")),
            }
        }
    }
    match app.command("ipset").args(["list", "-n"]).output() {
        Ok(o) if o.status.success() => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if line.starts_with("APPMESH") {
                    found.push(format!("ipset: {line}"));
                }
            }
        }
        Ok(o) => found.push(format!(
            "ipset list -n failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => found.push(format!("cannot run ipset: {e}")),
    }
    found
}

// ---------------------------------------------------------------------------------------
// One case: apply A, probe; apply B over A, probe; clean, check, probe.

struct Scene {
    net: NetnsPair,
    /// The peer's catch-all listener (see [`SINK_PORT`]).
    _sink: Listener,
}

impl Scene {
    fn new() -> Scene {
        let net = NetnsPair::new();
        for program in ["iptables-nft", "ip6tables-nft"] {
            net.peer.iptables(
                program,
                &format!(
                    "-t nat -A PREROUTING -i {PEER_IFACE} -p tcp -j REDIRECT --to-ports {SINK_PORT}"
                ),
            );
        }
        let sink = net.peer.listen(SINK_PORT);
        // The first direct IPv6 connection of a fresh pair loses its first SYN or two to
        // neighbour discovery (1-3 s): make it here, unhurried, so probes see settled links.
        for dest in ["203.0.113.1:80", "[2001:db8:ff::1]:80"] {
            let dest: SocketAddr = dest.parse().unwrap();
            let outcome = net.app.connect(dest, None, WARM_UP_TIMEOUT);
            let landing = outcome.landing();
            assert!(
                landing.netns == net.peer.name() && landing.original_dst == Some(dest),
                "without rules, {dest} must reach the peer's sink: {outcome}"
            );
        }
        Scene { net, _sink: sink }
    }
}

/// The app namespace's listeners while one configuration is in place.
struct AppListeners {
    _proxies: Vec<Listener>,
    _apps: BTreeMap<u16, Listener>,
}

fn start_listeners(app: &TestNetns, config: &Config, plan: &ProbePlan) -> AppListeners {
    let mut proxies = vec![app.listen(config.egress_port)];
    if let Some(port) = config.mesh.dns_port {
        proxies.push(app.listen(port));
    }
    if let Some((port, _)) = &config.ingress {
        proxies.push(app.listen(*port));
    }
    let apps = plan
        .app_listener_ports
        .iter()
        .map(|&p| (p, app.listen(p)))
        .collect();
    AppListeners {
        _proxies: proxies,
        _apps: apps,
    }
}

/// Connects every probe and returns one line per connection that landed elsewhere than
/// the model says.
fn mismatches(scene: &Scene, config: Option<&Config>, probes: &[Probe]) -> Vec<String> {
    let app_ns = scene.net.app.name();
    let peer_ns = scene.net.peer.name();
    let mut wrong = Vec::new();
    for probe in probes {
        let expected = probe.expected(config);
        let (from, as_user) = match probe.from_app_as {
            Some(who) => (&scene.net.app, Some((who.uid, who.gid))),
            None => (&scene.net.peer, None),
        };
        let outcome = from.connect(probe.dest, as_user, DEFAULT_CONNECT_TIMEOUT);
        let dest = probe.dest;
        let ok = match &outcome.result {
            Err(_) => false,
            Ok(landing) => match expected {
                Expected::EgressProxy => {
                    let port = config.map(|c| c.egress_port);
                    landing.netns == app_ns
                        && Some(landing.listener_port) == port
                        && landing.original_dst == Some(dest)
                }
                Expected::DnsProxy => {
                    let port = config.and_then(|c| c.mesh.dns_port);
                    landing.netns == app_ns
                        && Some(landing.listener_port) == port
                        && landing.original_dst == Some(dest)
                }
                Expected::IngressProxy => {
                    let port = config.and_then(|c| c.ingress.as_ref()).map(|(p, _)| *p);
                    landing.netns == app_ns
                        && Some(landing.listener_port) == port
                        && landing.original_dst == Some(dest)
                }
                Expected::Remote => {
                    landing.netns == peer_ns
                        && landing.listener_port == SINK_PORT
                        && landing.original_dst == Some(dest)
                }
                Expected::AppListener(port) => {
                    landing.netns == app_ns
                        && landing.listener_port == port
                        && landing.local_addr == dest
                        && landing.original_dst.is_none_or(|orig| orig == dest)
                }
            },
        };
        if let (Some(config), Ok(landing)) = (config, &outcome.result) {
            let redirected_to = (landing.netns == app_ns && landing.listener_port != dest.port())
                .then_some(landing.listener_port);
            if let Err(disagreement) = explain_agrees(config, probe, redirected_to) {
                wrong.push(format!("{}: {disagreement}", probe.describe()));
            }
        }
        if !ok {
            let got = match &outcome.result {
                Ok(landing) => {
                    let place = if landing.netns == app_ns {
                        "app"
                    } else if landing.netns == peer_ns {
                        "peer"
                    } else {
                        "elsewhere"
                    };
                    format!(
                        "{place} listener :{} (local {}, original dst {:?})",
                        landing.listener_port, landing.local_addr, landing.original_dst
                    )
                }
                Err(failure) => failure.to_string(),
            };
            wrong.push(format!(
                "{}: expected {expected:?}, got {got}",
                probe.describe()
            ));
        }
    }
    wrong
}

/// Asks `meshinit explain` (from the plan, outside the namespace) about `probe` and
/// compares its answer with where the real connection went: redirected to this port of the
/// app namespace, or not redirected.
fn explain_agrees(
    config: &Config,
    probe: &Probe,
    redirected_to: Option<u16>,
) -> Result<(), String> {
    let (mut args, stdin) = config.args_and_stdin();
    args.insert(0, "explain".into());
    let dest = probe.dest.to_string();
    match probe.from_app_as {
        Some(who) => args.extend([
            "--direction".into(),
            "out".into(),
            "--to".into(),
            dest,
            "--uid".into(),
            who.uid.to_string(),
            "--gid".into(),
            who.gid.to_string(),
        ]),
        None => args.extend(["--direction".into(), "in".into(), "--to".into(), dest]),
    }
    // The namespace's own addresses are part of the question (loopback explain knows).
    if probe.from_app_as.is_some() && is_local_to_app(probe.dest.ip()) {
        args.push("--local".into());
    } else {
        // Every other probe crosses the app namespace's one interface.
        args.extend(["--interface".into(), APP_IFACE.into()]);
    }
    args.push("--json".into());
    let mut command = Command::new(MESHINIT);
    command.args(&args).env("RUST_LOG", "error");
    for var in ["MESHINIT_BACKEND", "MESHINIT_NETNS"] {
        command.env_remove(var);
    }
    let output = run_bounded(command, stdin.as_deref())?;
    if !output.status.success() {
        return Err(format!(
            "meshinit explain exited {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("meshinit explain printed no JSON ({e})"))?;
    let explained = match answer["action"].as_str() {
        Some("redirected") => answer["port"].as_u64().map(|p| p as u16),
        _ => None,
    };
    if explained == redirected_to {
        return Ok(());
    }
    Err(format!(
        "explain says {:?} ({}), but the connection was {}",
        answer["action"].as_str().unwrap_or("?"),
        answer["reason"].as_str().unwrap_or("?"),
        match redirected_to {
            Some(port) => format!("redirected to {port}"),
            None => "not redirected".to_owned(),
        }
    ))
}

fn check_traffic(
    scene: &Scene,
    step: &str,
    config: Option<&Config>,
    probes: &[Probe],
) -> Result<(), String> {
    let wrong = mismatches(scene, config, probes);
    if wrong.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{step}: {} of {} connections landed elsewhere than the model says:\n    {}\n  nat rules now:\n{}",
        wrong.len(),
        probes.len(),
        wrong.join("\n    "),
        shorten(&scene.net.app.nat_rules(), 6000)
    ))
}

fn apply_and_check(
    scene: &Scene,
    backend: &str,
    step: &str,
    config: &Config,
    plan: &ProbePlan,
) -> Result<(), String> {
    let app = &scene.net.app;
    let (args, stdin) = config.args_and_stdin();
    let with = |command: &str| {
        let mut all = vec![command.to_string()];
        all.extend(args.iter().cloned());
        all.extend(["--backend".to_string(), backend.to_string()]);
        all
    };
    expect_exit_0(
        &format!("{step}: meshinit apply"),
        meshinit(
            app,
            config.with_netns_flag,
            &with("apply"),
            stdin.as_deref(),
        ),
    )?;
    let stray = our_leftovers(app, &other_backends(backend));
    let stray: Vec<String> = stray
        .into_iter()
        .filter(|l| !l.starts_with("ipset"))
        .collect();
    if !stray.is_empty() {
        return Err(format!(
            "{step}: apply --backend {backend} wrote into the other backend:\n    {}",
            stray.join("\n    ")
        ));
    }
    check_traffic(scene, step, Some(config), &plan.probes)?;
    expect_exit_0(
        &format!("{step}: meshinit status (right after apply)"),
        meshinit(
            app,
            config.with_netns_flag,
            &with("status"),
            stdin.as_deref(),
        ),
    )
}

fn run_case(seed: u64, backend: &str) -> Result<usize, String> {
    let mut rng = Rng(seed);
    let first = generate_config(&mut rng);
    let second = generate_config(&mut rng);
    let first_plan = plan_probes(&mut rng, &first, None);
    let second_plan = plan_probes(&mut rng, &second, Some(&first));
    let describe = || {
        format!(
            "  config A:{}\n  config B (applied over A):{}",
            first.describe(),
            second.describe()
        )
    };
    let scene = Scene::new();
    let app = &scene.net.app;

    let listeners = start_listeners(app, &first, &first_plan);
    apply_and_check(&scene, backend, "A", &first, &first_plan)
        .map_err(|e| format!("{e}\n{}", describe()))?;
    drop(listeners);

    let _listeners = start_listeners(app, &second, &second_plan);
    apply_and_check(&scene, backend, "B over A", &second, &second_plan)
        .map_err(|e| format!("{e}\n{}", describe()))?;

    expect_exit_0(
        "clean (auto backend)",
        meshinit(app, second.with_netns_flag, &["clean".into()], None),
    )
    .map_err(|e| format!("{e}\n{}", describe()))?;
    let left = our_leftovers(app, &ALL_BACKENDS);
    if !left.is_empty() {
        return Err(format!(
            "clean exited 0 but left:\n    {}\n{}",
            left.join("\n    "),
            describe()
        ));
    }
    check_traffic(&scene, "after clean", None, &second_plan.probes)
        .map_err(|e| format!("{e}\n{}", describe()))?;
    Ok(first_plan.probes.len() + 2 * second_plan.probes.len())
}

fn run_all_cases(backend: &str) {
    let seeds = case_seeds();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut connections = 0;
    for &seed in &seeds {
        match run_case(seed, backend) {
            Ok(n) => connections += n,
            Err(e) => failures.push(format!(
                "seed {seed:#018x} backend {backend}: {e}\n  replay: MESHINIT_MODEL_SEED={seed:#018x} \
                 cargo test --test model_traffic {backend}"
            )),
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "model_traffic {backend}: {} cases, {} failed, {connections} connections in passing cases, {:.1?}",
        seeds.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} generated cases failed with --backend {backend}:\n\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n\n")
    );
}

#[test]
fn generated_configs_route_as_modelled_with_native_nftables() {
    if !require_root() {
        return;
    }
    run_all_cases("nftables");
}

#[test]
fn generated_configs_route_as_modelled_with_iptables_legacy() {
    if !require_root() {
        return;
    }
    run_all_cases("legacy");
}

#[test]
fn generated_configs_route_as_modelled_with_iptables_nft() {
    if !require_root() {
        return;
    }
    run_all_cases("nft");
}

// ---------------------------------------------------------------------------------------
// The model and generator themselves: cheap checks that they mean what they say.

#[test]
fn model_follows_the_documented_rules() {
    let config = Config {
        ignored_uid: Some(1337),
        ignored_gid: None,
        egress_port: 15001,
        ingress: Some((15000, vec![PortEntry::range(9080, 9081)])),
        ignored_ports: vec![PortEntry::range(1000, 1010), PortEntry::single(65535)],
        ignored_ips: vec![
            IgnoredNet {
                family: Family::V4,
                written: ip_bits("10.1.2.3".parse().unwrap()).1,
                prefix: 8,
                bare: false,
            },
            IgnoredNet {
                family: Family::V6,
                written: ip_bits("2001:db8:ff::".parse().unwrap()).1,
                prefix: 127,
                bare: false,
            },
        ],
        as_ecs_json: false,
        with_netns_flag: false,
        mesh: Mesh::default(),
    };
    let user = Identity {
        uid: 1000,
        gid: 1000,
        role: "u",
    };
    let proxy = Identity {
        uid: 1337,
        gid: 1000,
        role: "p",
    };
    let egress = |who, dest: &str| expected_egress(Some(&config), who, dest.parse().unwrap());
    assert_eq!(egress(user, "203.0.113.7:80"), Expected::EgressProxy);
    assert_eq!(egress(proxy, "203.0.113.7:80"), Expected::Remote);
    assert_eq!(egress(user, "203.0.113.7:22"), Expected::Remote);
    assert_eq!(egress(user, "203.0.113.7:999"), Expected::EgressProxy);
    assert_eq!(egress(user, "203.0.113.7:1000"), Expected::Remote);
    assert_eq!(egress(user, "203.0.113.7:1010"), Expected::Remote);
    assert_eq!(egress(user, "203.0.113.7:1011"), Expected::EgressProxy);
    assert_eq!(egress(user, "[2001:db8::1]:65535"), Expected::Remote);
    assert_eq!(egress(user, "10.0.0.0:80"), Expected::Remote);
    assert_eq!(egress(user, "10.255.255.255:80"), Expected::Remote);
    assert_eq!(egress(user, "11.0.0.0:80"), Expected::EgressProxy);
    assert_eq!(egress(user, "9.255.255.255:80"), Expected::EgressProxy);
    assert_eq!(egress(user, "[2001:db8:ff::1]:80"), Expected::Remote);
    assert_eq!(egress(user, "[2001:db8:ff::2]:80"), Expected::EgressProxy);
    assert_eq!(egress(user, "169.254.170.23:80"), Expected::Remote);
    assert_eq!(egress(user, "[fd00:ec2::254]:80"), Expected::Remote);
    assert_eq!(egress(user, "[fd00:ec2::253]:80"), Expected::EgressProxy);
    assert_eq!(egress(user, "127.0.0.1:80"), Expected::AppListener(80));
    assert_eq!(egress(user, "198.51.100.1:80"), Expected::AppListener(80));
    assert_eq!(
        expected_egress(None, user, "203.0.113.7:80".parse().unwrap()),
        Expected::Remote
    );
    let ingress = |dest: &str| expected_ingress(Some(&config), dest.parse().unwrap());
    assert_eq!(ingress("198.51.100.1:9081"), Expected::IngressProxy);
    assert_eq!(ingress("[2001:db8:100::1]:9080"), Expected::IngressProxy);
    assert_eq!(ingress("198.51.100.1:9082"), Expected::AppListener(9082));
    assert_eq!(
        config.properties().last().unwrap().2,
        "10.1.2.3/8,2001:db8:ff::/127"
    );
}

#[test]
fn generated_configs_are_valid_reproducible_and_reach_the_edges() {
    let seeds: Vec<u64> = (0..300)
        .map(|i| Rng(BASE_SEED.wrapping_add(i)).next())
        .collect();
    let (mut long_ports, mut long_v4, mut long_v6, mut partial_overlaps) = (0, 0, 0, 0);
    let mut long_included = 0;
    let mut mesh_features = [0usize; 5];
    for seed in seeds {
        let config = generate_config(&mut Rng(seed));
        assert_eq!(
            config.describe(),
            generate_config(&mut Rng(seed)).describe(),
            "same seed, same config"
        );
        for e in config
            .ignored_ports
            .iter()
            .chain(config.ingress.iter().flat_map(|(_, a)| a))
        {
            assert!(e.first >= 1 && e.first <= e.last, "{e:?}");
        }
        if let Some((port, app_ports)) = &config.ingress {
            assert_ne!(*port, config.egress_port);
            assert!(!app_ports.is_empty());
            assert!(
                !app_ports
                    .iter()
                    .any(|e| e.contains(*port) || e.contains(config.egress_port))
            );
        }
        assert!(config.ignored_uid.is_some() || config.ignored_gid.is_some());
        for net in &config.ignored_ips {
            assert!(
                net.prefix >= 1 && net.prefix <= net.family.width(),
                "{net:?}"
            );
        }
        let plan = plan_probes(&mut Rng(seed), &config, None);
        assert!(plan.probes.len() <= MAX_PROBES);
        let [ordinary, _, _] = identities(&config);
        assert_ne!(Some(ordinary.uid), config.ignored_uid);
        assert_ne!(Some(ordinary.gid), config.ignored_gid);
        for probe in &plan.probes {
            let (family, bits) = ip_bits(probe.dest.ip());
            assert!(
                is_local_to_app(probe.dest.ip())
                    || probe.from_app_as.is_none()
                    || probeable(family, bits),
                "{probe:?}"
            );
        }
        let m = &config.mesh;
        for (i, on) in [
            m.included_ips.is_some(),
            m.all_app_ports.is_some(),
            m.ignored_interfaces.contains(&APP_IFACE),
            m.drop_invalid,
            m.dns_port.is_some(),
        ]
        .into_iter()
        .enumerate()
        {
            mesh_features[i] += usize::from(on);
        }
        long_ports += usize::from(config.ignored_ports.len() > 60);
        let v4 = config
            .ignored_ips
            .iter()
            .filter(|n| n.family == Family::V4)
            .count();
        long_v4 += usize::from(v4 > 32);
        long_v6 += usize::from(config.ignored_ips.len() - v4 > 32);
        let included_v4 = m
            .included_ips
            .iter()
            .flatten()
            .filter(|n| n.family == Family::V4)
            .count();
        long_included += usize::from(included_v4 > 32);
        let overlapping = config.ignored_ports.iter().any(|a| {
            config
                .ignored_ports
                .iter()
                .any(|b| a.first < b.first && b.first <= a.last && a.last < b.last)
        });
        partial_overlaps += usize::from(overlapping);
    }
    for (what, count) in [
        ("long port lists", long_ports),
        ("long IPv4 lists", long_v4),
        ("long IPv6 lists", long_v6),
        ("partially overlapping port ranges", partial_overlaps),
        ("include lists", mesh_features[0]),
        ("AppPorts *", mesh_features[1]),
        ("the app's interface ignored", mesh_features[2]),
        ("the INVALID drop", mesh_features[3]),
        ("DNS capture", mesh_features[4]),
    ] {
        assert!(count >= 30, "only {count} of 300 configs have {what}");
    }
    // A quarter of the include lists (a set on iptables' backends too).
    assert!(
        long_included >= 10,
        "only {long_included} of 300 configs have a long include list"
    );
}
