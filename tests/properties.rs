//! Property tests (proptest) of the parsers and the renderer:
//! - arbitrary bytes, as a file, on stdin, in environment values and as CNI stdin, never
//!   crash the binary (render exits 0 or 2; CNI answers with a result or an error object);
//! - arbitrary structured configurations never panic the pure core, read the same from
//!   every source (ECS JSON, CNI JSON, environment, flags), and when accepted render
//!   well-formed rules whose ignored ports are exactly the ones listed (plus 22), with set
//!   members that never overlap;
//! - every configuration the binary accepts renders payloads that `ipset restore` and
//!   `iptables-restore --test` / `ip6tables-restore --test` (legacy and nft) accept, in a
//!   throwaway namespace (`unshare -n`), and every one it rejects exits 2.
//!
//! Case counts are fixed so CI time stays small; `PROPTEST_CASES` overrides them all.
//! Failures are persisted under `target/` (never committed); proptest prints the minimal
//! failing input, which belongs in a named regression test once fixed.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Output, Stdio};

use clap::Parser;
use ipnet::IpNet;
use meshinit::backend::iptables::ipset;
use meshinit::backend::iptables::render::render_restore;
use meshinit::commands::{Cli, Command as Subcommand};
use meshinit::config::PortRange;
use meshinit::config::input;
use meshinit::config::settings::{Property, RawSettings, Vocabulary};
use meshinit::config::sources::{document, env};
use meshinit::config::{ProxyConfig, validate};
use meshinit::ruleset::{Family, Match, Ruleset, SetMembers, plan};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

use common::require_root;

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");

/// Pure properties run this many cases; those that spawn processes fewer.
const PURE_CASES: u32 = 256;
const PROCESS_CASES: u32 = 32;
const KERNEL_CASES: u32 = 24;

fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "target/proptest-regressions/properties.txt",
        ))),
        rng_seed: common::proptest_seed(),
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Whitespace the one whitespace rule trims around a value.
fn padded(value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    let pad = prop::sample::select(vec!["", "", "", " ", "\t", "\n", "\r\n", " \n\t"]);
    (pad.clone(), value, pad).prop_map(|(before, value, after)| format!("{before}{value}{after}"))
}

/// Printable junk and a few characters that must never reach a rule.
fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,6}",
        "\\PC{0,3}",
        prop::sample::select(vec![
            "-j ACCEPT",
            "1;2",
            "80\n-A OUTPUT",
            "\u{feff}80",
            "1 2",
            "0x50",
            "+80",
            "-",
            ":",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Each generator below makes values of its grammar (with edge cases), or, for `wild`
/// configurations, also values outside it.
fn valid_or_junk(
    valid: impl Strategy<Value = String> + 'static,
    wild: bool,
) -> BoxedStrategy<String> {
    if wild {
        prop_oneof![6 => valid, 1 => junk()].boxed()
    } else {
        valid.boxed()
    }
}

fn id(wild: bool) -> BoxedStrategy<String> {
    let valid = prop_oneof![
        3 => prop::sample::select(vec!["0", "1", "1337", "65534", "4294967294"]).prop_map(str::to_owned),
        1 => (0..u32::MAX).prop_map(|n| n.to_string()),
    ];
    let wrong = prop::sample::select(vec!["4294967295", "99999999999", "-1", "envoy"]);
    if wild {
        prop_oneof![6 => valid, 1 => wrong.prop_map(str::to_owned), 1 => junk()].boxed()
    } else {
        valid.boxed()
    }
}

fn port_number(wild: bool) -> BoxedStrategy<u32> {
    let valid = prop_oneof![
        4 => 1..=65535u32,
        2 => prop::sample::select(vec![1u32, 2, 22, 1023, 1024, 15000, 15001, 65534, 65535]),
    ];
    if wild {
        prop_oneof![6 => valid, 1 => prop::sample::select(vec![0u32, 65536, 99999])].boxed()
    } else {
        valid.boxed()
    }
}

fn port(wild: bool) -> BoxedStrategy<String> {
    valid_or_junk(port_number(wild).prop_map(|p| p.to_string()), wild)
}

fn port_entry(wild: bool) -> BoxedStrategy<String> {
    let range = (
        port_number(wild),
        0..300u32,
        prop::sample::select(vec!["-", ":"]),
    )
        .prop_map(|(first, width, sep)| format!("{first}{sep}{}", (first + width).min(65535)));
    let entry = if wild {
        let any_order =
            (port_number(wild), port_number(wild)).prop_map(|(a, b)| format!("{a}-{b}"));
        prop_oneof![5 => port(wild), 3 => range, 1 => any_order].boxed()
    } else {
        prop_oneof![5 => port(wild), 3 => range].boxed()
    };
    padded(entry).boxed()
}

fn port_list(wild: bool) -> BoxedStrategy<Vec<String>> {
    prop_oneof![
        5 => prop::collection::vec(port_entry(wild), 0..6),
        // Long enough for more than four multiport rules: a port set.
        2 => prop::collection::vec(port_entry(wild), 40..90),
    ]
    .boxed()
}

fn ipv4(wild: bool) -> BoxedStrategy<String> {
    let address = prop_oneof![
        any::<[u8; 4]>(),
        prop::sample::select(vec![
            [0, 0, 0, 0],
            [10, 0, 0, 0],
            [10, 255, 255, 255],
            [169, 254, 169, 254],
            [169, 254, 170, 2],
            [127, 0, 0, 1],
            [255, 255, 255, 255],
        ]),
    ];
    // /0 covers the family and is refused; /33 is no prefix.
    let prefix = if wild {
        prop::option::of(prop_oneof![6 => 1..=32u8, 1 => Just(0u8), 1 => Just(33u8)]).boxed()
    } else {
        prop::option::of(prop_oneof![1..=32u8, 8..=24u8, 28..=32u8]).boxed()
    };
    (address, prefix)
        .prop_map(|([a, b, c, d], prefix)| match prefix {
            Some(p) => format!("{a}.{b}.{c}.{d}/{p}"),
            None => format!("{a}.{b}.{c}.{d}"),
        })
        .boxed()
}

fn ipv6(wild: bool) -> BoxedStrategy<String> {
    let address = prop_oneof![
        any::<u128>().prop_map(|n| std::net::Ipv6Addr::from(n).to_string()),
        prop::sample::select(vec!["::", "::1", "fd00:ec2::254", "2001:db8::", "fe80::1"])
            .prop_map(str::to_owned),
        any::<[u8; 4]>().prop_map(|[a, b, c, d]| format!("::ffff:{a}.{b}.{c}.{d}")),
    ];
    let prefix = if wild {
        prop::option::of(prop_oneof![6 => 1..=128u8, 1 => Just(0u8), 1 => Just(129u8)]).boxed()
    } else {
        // Above 96 also keeps an IPv4-mapped network from covering all of IPv4.
        prop::option::of(prop_oneof![97..=128u8, 16..=64u8]).boxed()
    };
    (address, prefix)
        .prop_map(|(address, prefix)| match prefix {
            Some(p) => format!("{address}/{p}"),
            None => address,
        })
        .boxed()
}

fn ip_list(wild: bool) -> BoxedStrategy<Vec<String>> {
    let entry = valid_or_junk(prop_oneof![5 => ipv4(wild), 3 => ipv6(wild)], wild);
    prop_oneof![
        5 => prop::collection::vec(padded(entry), 0..6),
        // More than 32 networks of a family: a network set.
        2 => prop::collection::vec(padded(ipv4(wild)), 33..60),
    ]
    .boxed()
}

fn ipv6_mode(wild: bool) -> BoxedStrategy<String> {
    let valid = prop::sample::select(vec!["auto", "on", "off", "1", "0", "true", "false", "OFF"])
        .prop_map(str::to_owned);
    valid_or_junk(valid, wild)
}

/// One configuration, independent of how a source writes it.
#[derive(Debug, Clone)]
struct Structured {
    ignored_uid: Option<String>,
    ignored_gid: Option<String>,
    proxy_ingress_port: Option<String>,
    proxy_egress_port: Option<String>,
    app_ports: Option<Vec<String>>,
    egress_ignored_ports: Option<Vec<String>>,
    egress_ignored_ips: Option<Vec<String>>,
    ipv6: Option<String>,
}

/// Configurations of the grammar (most of them accepted), and wild ones.
fn structured() -> impl Strategy<Value = Structured> {
    prop_oneof![3 => structured_with(false), 2 => structured_with(true)]
}

fn structured_with(wild: bool) -> BoxedStrategy<Structured> {
    // Ingress needs both its port and the app ports; wild ones may give one alone.
    let ingress = if wild {
        (
            prop::option::of(padded(port(wild))),
            prop::option::of(port_list(wild)),
        )
            .boxed()
    } else {
        prop::option::of((padded(port(wild)), port_list(wild)))
            .prop_map(|both| match both {
                Some((port, apps)) => (Some(port), Some(apps)),
                None => (None, None),
            })
            .boxed()
    };
    let uid_probability = if wild { 0.7 } else { 0.9 };
    (
        prop::option::weighted(uid_probability, padded(id(wild))),
        prop::option::weighted(0.3, padded(id(wild))),
        ingress,
        prop::option::weighted(if wild { 0.9 } else { 0.99 }, padded(port(wild))),
        prop::option::weighted(0.6, port_list(wild)),
        prop::option::weighted(0.6, ip_list(wild)),
        prop::option::weighted(0.3, padded(ipv6_mode(wild))),
    )
        .prop_map(
            |(uid, gid, (ingress, app), egress, ports, ips, ipv6)| Structured {
                // Without either the configuration is refused; keep most of them usable.
                ignored_uid: uid.or_else(|| gid.is_none().then(|| "1337".to_owned())),
                ignored_gid: gid,
                proxy_ingress_port: ingress,
                proxy_egress_port: egress,
                app_ports: app,
                egress_ignored_ports: ports,
                egress_ignored_ips: ips,
                ipv6,
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------------------
// The same configuration written by each source
// ---------------------------------------------------------------------------------------

impl Structured {
    fn scalars(&self) -> [(&Option<String>, [&'static str; 3]); 4] {
        [
            (
                &self.ignored_uid,
                ["IgnoredUID", "APPMESH_IGNORE_UID", "--ignored-uid"],
            ),
            (
                &self.ignored_gid,
                ["IgnoredGID", "APPMESH_IGNORE_GID", "--ignored-gid"],
            ),
            (
                &self.proxy_ingress_port,
                [
                    "ProxyIngressPort",
                    "APPMESH_ENVOY_INGRESS_PORT",
                    "--proxy-ingress-port",
                ],
            ),
            (
                &self.proxy_egress_port,
                [
                    "ProxyEgressPort",
                    "APPMESH_ENVOY_EGRESS_PORT",
                    "--proxy-egress-port",
                ],
            ),
        ]
    }

    fn lists(&self) -> [(&Option<Vec<String>>, [&'static str; 3]); 3] {
        [
            (
                &self.app_ports,
                ["AppPorts", "APPMESH_APP_PORTS", "--app-ports"],
            ),
            (
                &self.egress_ignored_ports,
                [
                    "EgressIgnoredPorts",
                    "APPMESH_EGRESS_IGNORED_PORTS",
                    "--egress-ignored-ports",
                ],
            ),
            (
                &self.egress_ignored_ips,
                [
                    "EgressIgnoredIPs",
                    "APPMESH_EGRESS_IGNORED_IP",
                    "--egress-ignored-ips",
                ],
            ),
        ]
    }

    fn ecs_json(&self) -> String {
        let mut properties = Vec::new();
        for (value, [name, ..]) in self.scalars() {
            if let Some(value) = value {
                properties.push(serde_json::json!({"name": name, "value": value}));
            }
        }
        for (items, [name, ..]) in self.lists() {
            if let Some(items) = items {
                properties.push(serde_json::json!({"name": name, "value": items.join(",")}));
            }
        }
        serde_json::json!({"type": "APPMESH", "containerName": "envoy", "properties": properties})
            .to_string()
    }

    fn cni_json(&self) -> String {
        let mut object =
            serde_json::json!({"cniVersion": "1.0.0", "name": "m", "type": "aws-appmesh"});
        let keys = [
            "ignoredUID",
            "ignoredGID",
            "proxyIngressPort",
            "proxyEgressPort",
        ];
        for ((value, _), key) in self.scalars().into_iter().zip(keys) {
            if let Some(value) = value {
                object[key] = serde_json::json!(value);
            }
        }
        let keys = ["appPorts", "egressIgnoredPorts", "egressIgnoredIPs"];
        for ((items, _), key) in self.lists().into_iter().zip(keys) {
            if let Some(items) = items {
                object[key] = serde_json::json!(items);
            }
        }
        object.to_string()
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut vars = Vec::new();
        for (value, [_, name, _]) in self.scalars() {
            if let Some(value) = value {
                vars.push((name.to_owned(), value.clone()));
            }
        }
        for (items, [_, name, _]) in self.lists() {
            if let Some(items) = items {
                vars.push((name.to_owned(), items.join(",")));
            }
        }
        if let Some(mode) = &self.ipv6 {
            vars.push(("APPMESH_ENABLE_IPV6".to_owned(), mode.clone()));
        }
        vars
    }

    fn flags(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (value, [_, _, flag]) in self.scalars() {
            if let Some(value) = value {
                args.push(format!("{flag}={value}"));
            }
        }
        for (items, [_, _, flag]) in self.lists() {
            if let Some(items) = items {
                args.push(format!("{flag}={}", items.join(",")));
            }
        }
        if let Some(mode) = &self.ipv6 {
            args.push(format!("--ipv6={mode}"));
        }
        args
    }

    /// The IPv6 mode, which the documents carry only as a flag.
    fn ipv6_flag(&self) -> RawSettings {
        let mut settings = RawSettings::default();
        if let Some(mode) = &self.ipv6 {
            settings.put(Property::Ipv6, "--ipv6", mode);
        }
        settings.spelled_in(Vocabulary::Flags)
    }
}

/// What a configuration renders: both families' payloads and the sets, or rejected.
fn outcome(result: Result<ProxyConfig, ()>) -> Option<(Vec<Ruleset>, String)> {
    let config = result.ok()?;
    let rulesets: Vec<Ruleset> = Family::BOTH
        .iter()
        .map(|family| {
            plan(
                &config,
                *family,
                meshinit::backend::iptables::render::PLAN_OPTIONS,
            )
        })
        .collect();
    let sets: Vec<_> = rulesets.iter().flat_map(|r| r.sets.clone()).collect();
    let text = rulesets
        .iter()
        .map(render_restore)
        .chain([ipset::load_payload(&sets, &[])])
        .collect::<Vec<_>>()
        .join("\n");
    Some((rulesets, text))
}

fn validated(raw: RawSettings) -> Result<ProxyConfig, ()> {
    validate(&raw).map(|(config, _)| config).map_err(|_| ())
}

fn through_ecs(s: &Structured) -> Result<ProxyConfig, ()> {
    let (_, raw) = document::parse_document("ecs", &s.ecs_json()).map_err(|_| ())?;
    validated(raw.overlay(s.ipv6_flag()))
}

fn through_cni(s: &Structured) -> Result<ProxyConfig, ()> {
    let (_, raw) = document::parse_document("cni", &s.cni_json()).map_err(|_| ())?;
    validated(raw.overlay(s.ipv6_flag()))
}

fn through_env(s: &Structured) -> Result<ProxyConfig, ()> {
    let vars = s
        .env()
        .into_iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    let raw = env::parse_env(vars).map_err(|_| ())?;
    validated(raw.spelled_in(Vocabulary::Env))
}

fn through_flags(s: &Structured) -> Result<ProxyConfig, ()> {
    let args = ["meshinit".to_owned(), "render".to_owned()]
        .into_iter()
        .chain(s.flags());
    let cli = Cli::try_parse_from(args).map_err(|_| ())?;
    let Subcommand::Render(render) = cli.command else {
        unreachable!("render was asked for")
    };
    render.config.load().map_err(|_| ())
}

// ---------------------------------------------------------------------------------------
// Independent checks of a rendered ruleset
// ---------------------------------------------------------------------------------------

/// Every line is one the restore grammar allows, built only from characters a rule needs.
fn assert_well_formed(text: &str) {
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') || line == "*nat" || line == "COMMIT" {
            continue;
        }
        if let Some(chain) = line.strip_prefix(':') {
            assert!(
                chain == "APPMESH_INGRESS - [0:0]" || chain == "APPMESH_EGRESS - [0:0]",
                "{line:?}"
            );
            continue;
        }
        let set_command = ["create ", "add ", "flush ", "rename "]
            .iter()
            .find_map(|command| line.strip_prefix(command));
        if let Some(set_line) = set_command {
            assert!(set_line.starts_with("APPMESH_"), "{line:?}");
            assert!(
                set_line
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b" :./-_".contains(&b)),
                "{line:?}"
            );
            continue;
        }
        let rule = line
            .strip_prefix("-A ")
            .unwrap_or_else(|| panic!("{line:?}"));
        let chain = rule.split(' ').next().unwrap();
        assert!(
            ["APPMESH_INGRESS", "APPMESH_EGRESS", "PREROUTING", "OUTPUT"].contains(&chain),
            "{line:?}"
        );
        assert!(
            rule.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" :./,!_-".contains(&b)),
            "{line:?}"
        );
    }
}

/// The ports the user listed, read independently of meshinit's parser (None: some entry
/// is not a port or range, so the configuration must have been refused).
fn listed_ports(entries: &[String]) -> Option<BTreeSet<u16>> {
    let mut ports = BTreeSet::new();
    for item in entries.iter().flat_map(|e| e.split(',')) {
        let item = item.trim_ascii();
        if item.is_empty() {
            continue;
        }
        let number = |text: &str| -> Option<u16> {
            let text = text.trim_ascii();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 5 {
                return None;
            }
            text.parse::<u16>().ok().filter(|p| *p != 0)
        };
        let (first, last) = match item.split_once(['-', ':']) {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(item)?, number(item)?),
        };
        if first > last {
            return None;
        }
        ports.extend(first..=last);
    }
    Some(ports)
}

/// The destination ports the egress chain returns for: from port lists or from the port
/// set's members. Also checks the slot limit and that set members never overlap.
fn rendered_ignored_ports(ruleset: &Ruleset) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for rule in ruleset.rules.iter().filter(|r| r.chain == "APPMESH_EGRESS") {
        for matched in &rule.matches {
            if let Match::DestinationPorts(list) = matched {
                let slots: usize = list.iter().map(PortRange::multiport_slots).sum();
                assert!(slots <= 15, "more than 15 multiport slots: {list:?}");
                ports.extend(list.iter().flat_map(|r| r.first..=r.last));
            }
        }
    }
    for set in &ruleset.sets {
        if let SetMembers::Ports(members) = &set.members {
            for pair in members.windows(2) {
                assert!(
                    pair[1].first > pair[0].last,
                    "overlapping set members in {}: {pair:?}",
                    set.name
                );
            }
            ports.extend(members.iter().flat_map(|r| r.first..=r.last));
        }
    }
    ports
}

fn assert_network_set_members_disjoint(ruleset: &Ruleset) {
    for set in &ruleset.sets {
        let SetMembers::Networks(nets) = &set.members else {
            continue;
        };
        let nets: Vec<IpNet> = nets.iter().collect();
        let unique: BTreeSet<&IpNet> = nets.iter().collect();
        assert_eq!(
            unique.len(),
            nets.len(),
            "duplicate members in {}",
            set.name
        );
        for (i, a) in nets.iter().enumerate() {
            for b in &nets[i + 1..] {
                assert!(
                    !a.contains(b) && !b.contains(a),
                    "{a} and {b} overlap in {}",
                    set.name
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pure properties
// ---------------------------------------------------------------------------------------

const SEED_DOCUMENTS: [&str; 5] = [
    include_str!("../examples/taskdef-fargate.json"),
    include_str!("../examples/taskdef-ec2.json"),
    include_str!("../examples/proxy-configuration.json"),
    include_str!("../examples/cni-netconf.json"),
    // What a runtime sends a chained plugin: a previous result and runtimeConfig.
    r#"{"cniVersion":"1.0.0","name":"m","type":"aws-appmesh","ignoredUID":"1337",
        "proxyEgressPort":"15001","capabilities":{"appPorts":true},
        "runtimeConfig":{"appPorts":["9080"]},"proxyIngressPort":"15000",
        "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/n"}],
        "ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}],
        "dns":{}}}"#,
];

/// A real document with a few random byte edits, or random bytes.
fn document_bytes() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (prop::sample::select(SEED_DOCUMENTS.to_vec()), edits).prop_map(|(seed, edits)| {
            let mut bytes = seed.as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let len = bytes.len();
                let i = at.index(len.max(1));
                match kind {
                    0 if len > 0 => bytes[i.min(len - 1)] = byte,
                    1 => bytes.insert(i.min(len), byte),
                    _ if len > 0 => {
                        bytes.remove(i.min(len - 1));
                    }
                    _ => {}
                }
            }
            bytes
        }),
    ]
}

proptest! {
    #![proptest_config(config(PURE_CASES))]

    #[test]
    fn arbitrary_document_bytes_never_panic_the_core(bytes in document_bytes()) {
        let Ok(text) = input::decode(bytes) else { return Ok(()) };
        if let Ok((_, raw)) = document::parse_document("doc", &text)
            && let Some((_, rendered)) = outcome(validated(raw))
        {
            assert_well_formed(&rendered);
        }
    }

    #[test]
    fn arbitrary_environment_values_never_panic_the_core(
        values in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "APPMESH_IGNORE_UID", "APPMESH_ENVOY_EGRESS_PORT", "APPMESH_APP_PORTS",
                    "APPMESH_EGRESS_IGNORED_IP", "APPMESH_ENABLE_IPV6", "APPMESH_OTHER", "PATH",
                ]),
                prop::collection::vec(any::<u8>(), 0..24),
            ),
            0..8,
        )
    ) {
        let vars = values
            .into_iter()
            .map(|(name, value)| (OsString::from(name), OsString::from_vec(value)));
        if let Ok(raw) = env::parse_env(vars)
            && let Some((_, rendered)) = outcome(validated(raw))
        {
            assert_well_formed(&rendered);
        }
    }

    #[test]
    fn every_source_reads_a_configuration_the_same_and_accepted_ones_render_what_was_listed(
        s in structured()
    ) {
        let ecs = outcome(through_ecs(&s));
        let cni = outcome(through_cni(&s));
        let env = outcome(through_env(&s));
        let flags = outcome(through_flags(&s));
        let texts = |o: &Option<(Vec<Ruleset>, String)>| o.as_ref().map(|(_, t)| t.clone());
        prop_assert_eq!(texts(&ecs), texts(&cni), "ECS and CNI differ");
        prop_assert_eq!(texts(&ecs), texts(&env), "ECS and environment differ");
        prop_assert_eq!(texts(&ecs), texts(&flags), "ECS and flags differ");
        let Some((rulesets, text)) = ecs else { return Ok(()) };
        assert_well_formed(&text);
        let mut expected = listed_ports(s.egress_ignored_ports.as_deref().unwrap_or_default())
            .expect("an accepted configuration lists only ports and ranges");
        expected.insert(22);
        for ruleset in rulesets.iter().filter(|r| !r.rules.is_empty()) {
            prop_assert_eq!(&rendered_ignored_ports(ruleset), &expected);
            assert_network_set_members_disjoint(ruleset);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The binary, on arbitrary bytes
// ---------------------------------------------------------------------------------------

/// The binary, without the developer's own APPMESH_* or CNI_* variables.
fn meshinit() -> Command {
    let mut cmd = Command::new(MESHINIT);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("APPMESH_") || name.starts_with("CNI_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

fn spawn(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshinit runs");
    let mut pipe = child.stdin.take().unwrap();
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn assert_exit_in(output: &Output, codes: &[i32], what: &str) {
    let code = output.status.code();
    assert!(
        code.is_some_and(|c| codes.contains(&c)),
        "{what}: exit {:?} (expected one of {codes:?}; a signal or 101 is a crash)\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn arbitrary_bytes_never_crash_the_binary() {
    let dir = std::env::temp_dir().join(format!("meshinit-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.json");
    let mut runner = TestRunner::new(config(PROCESS_CASES));
    let strategy = (
        document_bytes(),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::sample::select(vec!["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"]),
    );
    let result = runner.run(&strategy, |(bytes, env_value, verb)| {
        std::fs::write(&file, &bytes).unwrap();
        let mut cmd = meshinit();
        cmd.arg("render").arg(&file);
        assert_exit_in(&spawn(cmd, b""), &[0, 2], "a file");

        let mut cmd = meshinit();
        cmd.args(["render", "-"]);
        assert_exit_in(&spawn(cmd, &bytes), &[0, 2], "stdin");

        // Environment values cannot hold NUL; anything else goes.
        let value: Vec<u8> = env_value.into_iter().filter(|b| *b != 0).collect();
        let mut cmd = meshinit();
        cmd.args(["render", "--from-env"])
            .env("APPMESH_ENVOY_EGRESS_PORT", "15001")
            .env("APPMESH_IGNORE_UID", OsString::from_vec(value.clone()))
            .env("UNRELATED_VARIABLE", OsString::from_vec(value.clone()));
        assert_exit_in(&spawn(cmd, b""), &[0, 2], "the environment");

        // CNI: a namespace that does not exist, so a valid request stops before any rule.
        let mut cmd = meshinit();
        cmd.env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", "c1")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", "/nonexistent/netns")
            .env("CNI_ARGS", OsString::from_vec(value));
        let output = spawn(cmd, &bytes);
        assert_exit_in(&output, &[0, 1], "CNI");
        if output.status.code() == Some(1) {
            let reply: serde_json::Value = serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|e| panic!("CNI error is JSON: {e}"));
            assert!(reply["code"].is_u64(), "{reply}");
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// The kernel accepts what is rendered
// ---------------------------------------------------------------------------------------

fn render_to(file: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = meshinit();
    cmd.arg("render").arg(file).args(args);
    spawn(cmd, b"")
}

#[test]
fn accepted_configurations_pass_iptables_restore_test_and_rejected_ones_exit_2() {
    if !require_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("meshinit-kprops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut runner = TestRunner::new(config(KERNEL_CASES));
    let result = runner.run(&structured(), |s| {
        let config = dir.join("config.json");
        std::fs::write(&config, s.ecs_json()).unwrap();
        let expected = through_ecs(&Structured {
            ipv6: None,
            ..s.clone()
        });
        let ipv4 = render_to(&config, &["--family", "ipv4"]);
        let Ok(_) = expected else {
            assert_exit_in(&ipv4, &[2], "a rejected configuration");
            return Ok(());
        };
        assert_exit_in(&ipv4, &[0], "an accepted configuration");
        let ipv6 = render_to(&config, &["--family", "ipv6"]);
        let sets = render_to(&config, &["--sets"]);
        for (name, output) in [("v4", &ipv4), ("v6", &ipv6), ("sets", &sets)] {
            assert_exit_in(output, &[0], name);
            std::fs::write(dir.join(name), &output.stdout).unwrap();
        }
        // Sets first: a rule naming a set that does not exist is refused.
        let script = "set -e; ipset restore < sets; \
             for b in legacy nft; do \
               iptables-$b-restore -w 30 --test --noflush < v4; \
               ip6tables-$b-restore -w 30 --test --noflush < v6; \
             done";
        let output = Command::new("unshare")
            .args(["-n", "sh", "-c", script])
            .current_dir(&dir)
            .output()
            .expect("unshare runs");
        prop_assert!(
            output.status.success(),
            "restore --test refused it: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&ipv4.stdout)
        );
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn flags_with_arbitrary_bytes_never_crash_the_binary() {
    let mut runner = TestRunner::new(config(PROCESS_CASES / 2));
    let strategy = prop::collection::vec(any::<u8>(), 0..40);
    runner
        .run(&strategy, |bytes| {
            let value: Vec<u8> = bytes.into_iter().filter(|b| *b != 0).collect();
            let mut flag = b"--app-ports=".to_vec();
            flag.extend(&value);
            let mut cmd = meshinit();
            cmd.args(["render", "--ignored-uid", "1", "--proxy-egress-port", "2"])
                .args(["--proxy-ingress-port", "3"])
                .arg(OsString::from_vec(flag));
            assert_exit_in(&spawn(cmd, b""), &[0, 2], "a flag");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
