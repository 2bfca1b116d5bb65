//! meshinit as a CNI plugin given requests it must refuse before it enters any namespace:
//! bad `CNI_*` parameters, undecodable or invalid configurations, unsupported versions.
//! Each is an error object with its documented code, naming what is wrong, never a panic.
//!
//! Runs as any user, root or not, and meshinit always runs without privileges (as root, the
//! tests start it as `nobody` with no capabilities): it cannot change any kernel state, and
//! a request that got past the checks would fail entering `CNI_NETNS` (code 101, which
//! `a_valid_request_gets_as_far_as_the_namespace` shows), not with the code expected here.

mod cni_runtime;
mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use cni_runtime::fixture::{decodable_but_wrong_configs, netconf, with};
use cni_runtime::{Attachment, MESHINIT, PluginRun, run_with_stdin, set_plugin_environment};

/// A pod namespace that is never created: nothing here may get as far as entering it.
const NEVER_ENTERED: &str = "/var/run/netns/meshinit-cni-errors-never-created";
/// The overflow user and group: no capabilities, owns nothing.
const NOBODY: &str = "65534";
/// The CNI error code for missing privileges, what entering `CNI_NETNS` fails with here.
const MISSING_PRIVILEGES: u64 = 101;

fn attachment() -> Attachment {
    Attachment::new("pod-1234", Path::new(NEVER_ENTERED))
}

/// The meshinit binary, started without privileges: directly when the tests are not root,
/// through `setpriv` as `nobody` (which drops every capability) when they are.
fn unprivileged_meshinit() -> Command {
    if !nix::unistd::geteuid().is_root() {
        return Command::new(MESHINIT);
    }
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg("--inh-caps=-all")
        .arg("--bounding-set=-all")
        .arg(MESHINIT);
    command
}

/// Runs meshinit as a CNI plugin, as a runtime does, without privileges.
fn run_meshinit(command: &str, attachment: Option<&Attachment>, stdin: &str) -> PluginRun {
    let mut process = unprivileged_meshinit();
    set_plugin_environment(&mut process, command, attachment, None);
    run_with_stdin(process, stdin)
}

fn cni(command: &str, config: &Value) -> PluginRun {
    run_meshinit(command, Some(&attachment()), &config.to_string())
}

fn cni_with(command: &str, attachment: &Attachment, config: &Value) -> PluginRun {
    run_meshinit(command, Some(attachment), &config.to_string())
}

#[test]
fn a_valid_request_gets_as_far_as_the_namespace() {
    for command in ["ADD", "CHECK"] {
        let run = cni(command, &netconf("1.0.0"));
        assert_eq!(run.error_code(), MISSING_PRIVILEGES, "{command}:\n{run}");
        let msg = run.error()["msg"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains("CNI_NETNS"), "{command}:\n{run}");
    }
    // DEL of a namespace that is not there has nothing to do.
    cni("DEL", &netconf("1.0.0")).assert_success();
}

#[test]
fn invalid_config_is_code_7_naming_the_key_and_touches_nothing() {
    let mut cni_args = attachment();
    cni_args.args = Some("IgnoreUnknown=1;AppPorts=80,x".into());
    let cases = [
        (
            with(netconf("1.0.0"), "proxyEgressPort", json!("15001x")),
            attachment(),
            7,
            "proxyEgressPort",
        ),
        (
            with(netconf("1.0.0"), "appPorts", json!(["70000"])),
            attachment(),
            7,
            "appPorts",
        ),
        (
            with(netconf("1.0.0"), "egressIgnoredIPs", json!(["10.0.0.300"])),
            attachment(),
            7,
            "egressIgnoredIPs",
        ),
        (
            with(netconf("1.0.0"), "enableIPv6", json!("yes")),
            attachment(),
            7,
            "enableIPv6",
        ),
        (
            {
                let mut config = netconf("1.0.0");
                config.as_object_mut().unwrap().remove("proxyEgressPort");
                config
            },
            attachment(),
            7,
            "proxyEgressPort",
        ),
        (netconf("1.0.0"), cni_args, 7, "CNI_ARGS AppPorts"),
        (
            with(
                netconf("1.0.0"),
                "runtimeConfig",
                json!({"ignoredUID": ["1337"]}),
            ),
            attachment(),
            7,
            "runtimeConfig.ignoredUID",
        ),
        (
            with(netconf("1.0.0"), "appPort", json!(["8080"])),
            attachment(),
            2,
            "appPort",
        ),
        (
            with(
                netconf("1.0.0"),
                "prevResult",
                json!({"cniVersion": "1.0.0", "ips": [{"address": "x"}]}),
            ),
            attachment(),
            6,
            "prevResult",
        ),
    ];
    for (config, attachment, code, key) in cases {
        for command in ["ADD", "CHECK"] {
            let run = cni_with(command, &attachment, &config);
            assert_eq!(run.error_code(), code, "{command} {config}:\n{run}");
            let msg = run.error()["msg"].as_str().unwrap_or_default().to_owned();
            assert!(
                msg.contains(key),
                "{command}: the message names {key}:\n{run}"
            );
        }
    }
}

#[test]
fn unsupported_version_is_code_1_and_touches_nothing() {
    let mut no_version = netconf("1.0.0");
    no_version.as_object_mut().unwrap().remove("cniVersion");
    for config in [
        netconf("0.2.0"),
        netconf("2.0.0"),
        netconf("1.0"),
        no_version,
    ] {
        for command in ["ADD", "DEL", "CHECK"] {
            let run = cni(command, &config);
            assert_eq!(run.error_code(), 1, "{command} {config}:\n{run}");
        }
    }
    // CHECK exists since 0.4.0; STATUS and GC since 1.1.0.
    assert_eq!(cni("CHECK", &netconf("0.3.1")).error_code(), 1);
    assert_eq!(cni("STATUS", &netconf("1.0.0")).error_code(), 1);
    assert_eq!(cni("GC", &netconf("1.0.0")).error_code(), 1);
}

#[test]
fn bad_environment_and_garbage_input_are_error_objects_not_panics() {
    let config = netconf("1.0.0").to_string();

    // Missing or malformed parameters: code 4, naming the variable.
    let mut no_netns = attachment();
    no_netns.netns = None;
    let mut bad_ifname = attachment();
    bad_ifname.ifname = "much-too-long-name".into();
    let mut bad_id = attachment();
    bad_id.container_id = "/etc/passwd".into();
    let mut bad_args = attachment();
    bad_args.args = Some("AppPorts".into());
    for (command, attachment, variable) in [
        ("ADD", Some(&no_netns), "CNI_NETNS"),
        ("CHECK", Some(&no_netns), "CNI_NETNS"),
        ("ADD", None, "CNI_CONTAINERID"),
        ("DEL", None, "CNI_CONTAINERID"),
        ("ADD", Some(&bad_ifname), "CNI_IFNAME"),
        ("ADD", Some(&bad_id), "CNI_CONTAINERID"),
        ("ADD", Some(&bad_args), "CNI_ARGS"),
        ("FINALIZE", Some(&attachment()), "CNI_COMMAND"),
        ("", Some(&attachment()), "CNI_COMMAND"),
    ] {
        let run = run_meshinit(command, attachment, &config);
        assert_eq!(run.error_code(), 4, "{command} {attachment:?}:\n{run}");
        assert!(
            run.error()["msg"]
                .as_str()
                .unwrap_or_default()
                .contains(variable),
            "{variable}:\n{run}"
        );
    }

    // Undecodable input: code 6, for every verb.
    for stdin in [
        "",
        "\u{0}\u{1}binary",
        "{",
        "[]",
        "null",
        "\"text\"",
        r#"{"cniVersion": 1.0}"#,
    ] {
        for command in ["ADD", "DEL", "CHECK"] {
            let run = run_meshinit(command, Some(&attachment()), stdin);
            assert_eq!(run.error_code(), 6, "{command} {stdin:?}:\n{run}");
            assert!(
                !run.stderr.contains("panicked"),
                "{command} {stdin:?} panicked:\n{run}"
            );
        }
    }
    // Decodable but wrong: ADD and CHECK refuse it (DEL goes on: see cni_protocol.rs).
    for (config, code) in decodable_but_wrong_configs() {
        for command in ["ADD", "CHECK"] {
            let run = cni(command, &config);
            assert_eq!(run.error_code(), code, "{command} {config}:\n{run}");
            assert!(
                !run.stderr.contains("panicked"),
                "{command} {config} panicked:\n{run}"
            );
        }
    }

    // `meshinit cni` run by hand, without CNI_COMMAND.
    let output = unprivileged_meshinit()
        .arg("cni")
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&output.stdout).expect("an error object");
    assert_eq!(error["code"], 4);
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("CNI_COMMAND")
    );
}
