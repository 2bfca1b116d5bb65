//! The property table drives every source: for each property, every source with a
//! spelling for it accepts that spelling and yields the same validated setting; and the
//! README's property table is the one the table renders.

use clap::Parser;
use serde_json::{Map, Value, json};

use crate::cni::{attachment, pod};
use crate::commands::{Cli, Command};
use crate::config::properties::{Kind, Origin, PROPERTIES, Property, Source, Spec, markdown_table};
use crate::config::settings::{RawSettings, Vocabulary};
use crate::config::sources::{document, env};
use crate::config::{ProxyConfig, validate};

/// What every case starts from: valid on its own, and with every property settable over
/// it (`AppPorts *` so that IngressIgnoredPorts applies, a DNS port so DnsCapture does).
fn base() -> RawSettings {
    RawSettings::spelled(
        Vocabulary::Flags,
        [
            (Property::IgnoredUid, "1337"),
            (Property::ProxyEgressPort, "15001"),
            (Property::ProxyIngressPort, "15000"),
            (Property::AppPorts, "*"),
            (Property::ProxyDnsPort, "15053"),
        ],
    )
}

/// A value of each property that differs from the base, as text.
fn sample(property: Property) -> &'static str {
    match property {
        Property::IgnoredUid => "1400",
        Property::IgnoredGid => "1401",
        Property::ProxyIngressPort => "15006",
        Property::ProxyEgressPort => "15002",
        Property::AppPorts => "9080,9443",
        Property::EgressIgnoredIps => "10.1.0.0/16,192.0.2.1",
        Property::EgressIgnoredPorts => "5432,8000-8010",
        Property::Ipv6 => "off",
        Property::EgressIncludedIps => "10.0.0.0/8,2001:db8::/32",
        Property::IngressIgnoredPorts => "22,9000-9100",
        Property::IgnoredInterfaces => "tun0,eth1",
        Property::DropInvalid => "true",
        Property::ProxyDnsPort => "15054",
        Property::DnsCapture => "resolv.conf",
        Property::Verify => "true",
    }
}

/// The sample as a netconf value of the property's kind.
fn json_sample(spec: &Spec) -> Value {
    let text = sample(spec.property);
    match spec.kind {
        kind if kind.is_list() => json!(text.split(',').collect::<Vec<_>>()),
        // enableIPv6 is a boolean: false is "off".
        Kind::Ipv6Mode => json!(false),
        Kind::Switch => json!(true),
        _ => json!(text),
    }
}

fn validated(over: RawSettings) -> ProxyConfig {
    validate(&base().overlay(over))
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("{other} is not an object"),
    }
}

/// What each source that spells `spec` reads from its sample, named by the source.
/// What each source that spells `spec` reads from its sample: the source, the name its
/// setting must carry (what messages call it), and the settings.
fn read_by_every_source(spec: &'static Spec) -> Vec<(String, String, RawSettings)> {
    let text = sample(spec.property);
    let mut read = Vec::new();
    if let Some(name) = spec.ecs {
        let document = json!({"type": "APPMESH", "containerName": "envoy",
            "properties": [{"name": name, "value": text}]});
        let (_, raw) = document::parse_document("ecs", &document.to_string()).unwrap();
        read.push((format!("ECS {name}"), name.to_owned(), raw));
    }
    let netconf = json!({"cniVersion": "1.0.0", spec.cni: json_sample(spec)});
    let (_, raw) = document::parse_document("cni", &netconf.to_string()).unwrap();
    read.push((format!("netconf {}", spec.cni), spec.cni.to_owned(), raw));
    let vars = [(spec.env.into(), text.into())];
    let raw = env::parse_env(vars).unwrap();
    read.push((spec.env.to_owned(), spec.env.to_owned(), raw));
    if let Some(flag) = spec.flag {
        let cli = Cli::try_parse_from(["meshinit", "render", &format!("{flag}={text}")]).unwrap();
        let Command::Render(args) = cli.command else {
            unreachable!("render parses as render")
        };
        read.push((
            flag.to_owned(),
            flag.to_owned(),
            args.config.settings.settings(),
        ));
        if spec.property != Property::Ipv6 {
            // `cni install` writes the flag as the netconf key; ADD reads it back.
            let cli = Cli::try_parse_from([
                "meshinit",
                "cni",
                "install",
                "--conflist",
                "/nonexistent",
                &format!("{flag}={text}"),
            ])
            .unwrap();
            let Command::Cni(crate::commands::cni::CniArgs {
                action: Some(crate::commands::cni::CniAction::Install(install)),
            }) = cli.command
            else {
                unreachable!("cni install parses as cni install")
            };
            let keys = object(Value::Object(install.flag_keys().into_iter().collect()));
            read.push((
                format!("cni install {flag}"),
                spec.cni.to_owned(),
                attachment::from_network_config(&keys).unwrap(),
            ));
        }
    }
    if let Some(annotation) = spec.annotation {
        let value = match spec.property {
            // The App Mesh controller's words for IPv6.
            Property::Ipv6 => "disabled",
            _ => text,
        };
        let capability = pod::POD_ANNOTATIONS;
        let request = object(json!({
            "cniVersion": "1.0.0", "capabilities": {capability: true},
            "runtimeConfig": {capability: {pod::OPT_IN: "enabled", annotation: value}}
        }));
        let Ok(pod::PodPlan::Meshed(raw)) = pod::plan(&request, None) else {
            panic!("{annotation}: the pod is meshed")
        };
        let label = format!("pod annotation {annotation}");
        read.push((label.clone(), label, *raw));
    }
    if spec.origin == Origin::AppMesh {
        // CNI_ARGS take the netconf key (or the ECS name) as text.
        let args = format!("{}={text}", spec.cni);
        read.push((
            format!("CNI_ARGS {}", spec.cni),
            format!("CNI_ARGS {}", spec.cni),
            attachment::from_cni_args(&args).unwrap(),
        ));
        let runtime_config = json!({spec.cni: json_sample(spec)});
        read.push((
            format!("runtimeConfig.{}", spec.cni),
            format!("runtimeConfig.{}", spec.cni),
            attachment::from_runtime_config(&runtime_config, None).unwrap(),
        ));
    }
    read
}

#[test]
fn every_source_reads_every_spelling_of_the_table_as_the_same_setting() {
    for spec in &PROPERTIES {
        let expected = validated(RawSettings::default().with(
            spec.property,
            "expected",
            sample(spec.property),
        ));
        assert_ne!(
            expected,
            validated(RawSettings::default()),
            "{:?}'s sample changes the configuration",
            spec.property
        );
        let read = read_by_every_source(spec);
        assert!(read.len() >= 3, "{:?}: {read:?}", spec.property);
        for (source, name, raw) in read {
            let setting = raw
                .get(spec.property)
                .unwrap_or_else(|| panic!("{source} sets {:?}: {raw:?}", spec.property));
            assert_eq!(setting.property, name, "{source}: the name messages use");
            assert_eq!(
                raw.iter().count(),
                1,
                "{source} sets only {:?}",
                spec.property
            );
            assert_eq!(validated(raw), expected, "{source}");
        }
    }
}

#[test]
fn every_spelling_is_unique_within_its_source_and_names_one_property() {
    for source in Source::ALL {
        for spec in &PROPERTIES {
            if let Some(name) = spec.spelling(source) {
                let found = crate::config::properties::find(source, name).expect("found");
                assert_eq!(found.property, spec.property, "{source:?} {name}");
            }
        }
    }
}

/// README.md keeps the property table between these markers; it is generated by
/// [`markdown_table`], so a row added here must be added there (paste the output of this
/// test's failure).
const BEGIN: &str = "<!-- properties:begin -->";
const END: &str = "<!-- properties:end -->";

#[test]
fn the_readme_property_table_is_the_generated_one() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let (Some(begin), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!(
            "README.md lacks the {BEGIN} ... {END} markers; put them around this table:\n{}",
            markdown_table()
        );
    };
    let written = readme[begin + BEGIN.len()..end].trim();
    let generated = markdown_table();
    assert_eq!(
        written,
        generated.trim(),
        "README.md's property table differs from the code's; put this between the markers:\n{generated}"
    );
}

/// `cni install`'s netconf keys for these flags.
fn install_keys(flags: &[&str]) -> Map<String, Value> {
    let args = ["meshinit", "cni", "install", "--conflist", "/nonexistent"];
    let cli = Cli::try_parse_from(args.iter().chain(flags)).unwrap();
    let Command::Cni(crate::commands::cni::CniArgs {
        action: Some(crate::commands::cni::CniAction::Install(install)),
    }) = cli.command
    else {
        unreachable!("cni install parses as cni install")
    };
    install.flag_keys().into_iter().collect()
}

/// `cni install` writes list flags as arrays split by the one whitespace rule, so an entry
/// it writes holds what the same flags give `apply`: ASCII whitespace around an item goes,
/// anything else (a no-break space) stays and is refused, by both.
#[test]
fn cni_install_lists_follow_the_one_whitespace_rule() {
    for ports in [" 80 ,\t81 ,", "80,\u{a0}81"] {
        let app_ports = format!("--app-ports={ports}");
        let flags = [
            "--ignored-uid=1337",
            "--proxy-egress-port=15001",
            "--proxy-ingress-port=15000",
            &app_ports,
        ];
        let cli = Cli::try_parse_from(["meshinit", "render"].iter().chain(&flags)).unwrap();
        let Command::Render(args) = cli.command else {
            unreachable!("render parses as render")
        };
        let through_flags = validate(&args.config.settings.settings()).map(|(c, _)| c);
        let installed = attachment::from_network_config(&install_keys(&flags)).unwrap();
        let through_install = validate(&installed).map(|(c, _)| c);
        assert_eq!(
            through_flags.is_ok(),
            through_install.is_ok(),
            "{ports:?}: {through_flags:?} / {through_install:?}"
        );
        if let (Ok(flags), Ok(install)) = (through_flags, through_install) {
            assert_eq!(flags, install, "{ports:?}");
        }
    }
    assert_eq!(
        install_keys(&["--app-ports", "80,\u{a0}81"])["appPorts"],
        json!(["80", "\u{a0}81"])
    );
}

/// A row's flag must not collide with a command's own (`apply --verify`, `--netns`...):
/// clap checks every command's arguments here rather than when a user runs it.
#[test]
fn the_table_flags_fit_every_command() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}
