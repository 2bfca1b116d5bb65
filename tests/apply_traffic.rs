//! `meshinit apply` in throwaway namespaces, proven with real TCP connections: where each
//! one lands, from every configuration surface, and while a changed config is re-applied.
//! Needs root (skips outside CI without it; fails in CI).

mod common;

use std::process::Command;

use common::scene::*;
use common::*;

#[test]
fn ecs_config_redirects_and_exempts_as_configured_over_ipv4_and_ipv6() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    scene.assert_direct_traffic();
    assert_exit(&meshinit(&scene.net.app, &["apply", ECS_CONFIG]), 0);
    scene.assert_configured_traffic();
}

#[test]
fn cni_config_applied_from_the_host_with_netns_gives_the_same_outcomes() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let netns = scene.net.app.path().to_str().unwrap().to_owned();
    // Run from the machine's namespace: meshinit enters --netns before anything else.
    let output = Command::new(MESHINIT)
        .args(["apply", CNI_CONFIG, "--netns", &netns])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    scene.assert_configured_traffic();
}

#[test]
fn init_container_environment_gives_the_same_outcomes_and_rules() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let env_text = std::fs::read_to_string(ENV_CONFIG).unwrap();
    let vars: Vec<(&str, &str)> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_exit(
        &meshinit_with_env(&scene.net.app, &["apply", "--from-env"], &vars),
        0,
    );
    scene.assert_configured_traffic();
    // The three surfaces render the same ruleset, so status against the others is in sync.
    assert_exit(&meshinit(&scene.net.app, &["status", ECS_CONFIG]), 0);
    assert_exit(&meshinit(&scene.net.app, &["status", CNI_CONFIG]), 0);
}

#[test]
fn reapplying_a_changed_config_never_lets_traffic_bypass_the_proxy() {
    if !require_root() {
        return;
    }
    let scene = Scene::new();
    let app = &scene.net.app;
    let with_ignored_ports =
        |ports: &'static str| vec!["apply", ECS_CONFIG, "--egress-ignored-ports", ports];
    assert_exit(&meshinit(app, &with_ignored_ports("7001")), 0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let outcomes = std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut outcomes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                outcomes.push(scene.connect_from_app("203.0.113.7:80", APP_USER));
            }
            outcomes
        });
        for round in 0..12 {
            let ports = if round % 2 == 0 {
                "7002,7003-7010"
            } else {
                "7001"
            };
            assert_exit(&meshinit(app, &with_ignored_ports(ports)), 0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        prober.join().unwrap()
    });
    assert!(
        outcomes.len() > 10,
        "too few probes ({}) to mean anything",
        outcomes.len()
    );
    for outcome in &outcomes {
        assert_redirected(outcome, &scene.egress_proxy, addr("203.0.113.7:80"));
    }
}
