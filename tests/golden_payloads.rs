//! Golden files of what `apply` sends: for `iptables-save` fixtures recorded from real
//! namespaces (nothing, ours in sync, ours drifted, the AWS plugin's rules, a crashed
//! half-install, foreign rules beside ours), the exact reconcile payload and the payload
//! that would undo it. A change in what is sent shows up in review. No root needed.
//!
//! Regenerate with `UPDATE_GOLDEN=1 cargo test --test golden_payloads` and review the diff
//! (refused when `CI` is set).

use std::path::Path;

use meshinit::backend::iptables::parse::installed_table;
use meshinit::backend::iptables::reconcile::{reconcile_payload, undo_payload};
use meshinit::config::{RawSettings, validate};
use meshinit::ruleset::{Family, Ruleset, plan};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/payloads");

/// tests/configs/traffic-ecs.json, IPv4.
fn desired() -> Ruleset {
    use meshinit::config::settings::{Property, Vocabulary};
    let raw = RawSettings::spelled(
        Vocabulary::Ecs,
        [
            (Property::IgnoredUid, "1337"),
            (Property::IgnoredGid, "1338"),
            (Property::ProxyIngressPort, "15000"),
            (Property::ProxyEgressPort, "15001"),
            (Property::AppPorts, "9080,9443"),
            (
                Property::EgressIgnoredIps,
                "203.0.113.128/25,2001:db8:ff:1::/64",
            ),
            (
                Property::EgressIgnoredPorts,
                "5000,5001,5002,5003,5004,5005,5006,5007,5008,5009,5010,5011,5012,5013,5014,5015,6000-6010",
            ),
        ],
    );
    let (config, _) = validate(&raw).expect("the traffic config is valid");
    plan(
        &config,
        Family::Ipv4,
        meshinit::backend::iptables::render::PLAN_OPTIONS,
    )
}

fn sent(fixture: &str) -> String {
    let saved = std::fs::read_to_string(Path::new(FIXTURES).join(format!("{fixture}.save")))
        .expect("fixture exists");
    let installed = installed_table(&saved);
    let desired = desired();
    let payload = reconcile_payload(&desired, &installed);
    let undo = payload
        .as_ref()
        .and_then(|_| undo_payload(&installed, &desired));
    format!(
        "# apply sends (iptables-restore --noflush):\n{}\n# undo, if the other family fails:\n{}",
        payload
            .as_deref()
            .unwrap_or("(nothing: already as configured)\n"),
        undo.as_deref().unwrap_or("(nothing)\n"),
    )
}

fn check(fixture: &str) {
    let actual = sent(fixture);
    let path = Path::new(FIXTURES).join(format!("{fixture}.payload"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        assert!(!in_ci, "UPDATE_GOLDEN is refused when CI is set");
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual, expected,
        "{fixture}: what apply sends changed; review and regenerate with UPDATE_GOLDEN=1"
    );
}

#[test]
fn empty_table_gets_the_whole_ruleset() {
    check("empty");
}

#[test]
fn a_table_in_sync_gets_nothing() {
    check("in-sync");
    assert!(sent("in-sync").contains("(nothing: already as configured)"));
}

#[test]
fn drifted_rules_are_refilled_and_the_duplicate_jump_goes() {
    check("drifted");
}

#[test]
fn the_aws_plugin_rules_are_replaced_in_place() {
    check("aws-plugin");
}

#[test]
fn a_crashed_half_install_is_completed() {
    check("crashed-half-install");
}

#[test]
fn foreign_rules_are_left_alone_and_hand_made_jumps_go() {
    check("foreign-rules");
    let sent = sent("foreign-rules");
    let apply = sent.split("# undo").next().unwrap();
    assert!(
        !apply.contains("APPMESH_OTHER") && !apply.contains("DOCKER"),
        "{apply}"
    );
    assert!(apply.contains("-D OUTPUT -j APPMESH_EGRESS\n"), "{apply}");
    assert!(
        apply.contains(
            "-D OUTPUT -p tcp -m comment --comment \"added by hand\" -g APPMESH_EGRESS\n"
        ),
        "{apply}"
    );
}
