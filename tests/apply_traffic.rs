//! `meshinit apply` in throwaway namespaces, proven with real TCP connections: where each
//! one lands, from every configuration surface, and while a changed config is re-applied.
//! Each test runs once per backend (a fresh scene each), and checks with the backend's own
//! program that only that backend holds our rules. Needs root (skips outside CI without it; fails in CI).

mod common;

use std::process::Command;

use common::scene::*;
use common::*;

#[test]
fn ecs_config_redirects_and_exempts_as_configured_over_ipv4_and_ipv6() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        let scene = Scene::new();
        scene.assert_direct_traffic();
        let apply = with_backend(&["apply", ECS_CONFIG], backend);
        assert_exit(&meshinit(&scene.net.app, &apply), 0);
        assert_only_backend_holds_ours(&scene.net.app, backend, 15001);
        scene.assert_configured_traffic();
    }
}

#[test]
fn cni_config_applied_from_the_host_with_netns_gives_the_same_outcomes() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        let scene = Scene::new();
        let netns = scene.net.app.path().to_str().unwrap().to_owned();
        // Run from the machine's namespace: meshinit enters --netns before anything else.
        let output = Command::new(MESHINIT)
            .args(["apply", CNI_CONFIG, "--netns", &netns, "--backend", backend])
            .output()
            .unwrap();
        assert_exit(&output, 0);
        assert_only_backend_holds_ours(&scene.net.app, backend, 15001);
        scene.assert_configured_traffic();
    }
}

#[test]
fn init_container_environment_gives_the_same_outcomes_and_rules() {
    if !require_root() {
        return;
    }
    let env_text = std::fs::read_to_string(ENV_CONFIG).unwrap();
    let vars: Vec<(&str, &str)> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    for backend in BACKENDS {
        let scene = Scene::new();
        let app = &scene.net.app;
        let apply = with_backend(&["apply", "--from-env"], backend);
        assert_exit(&meshinit_with_env(app, &apply, &vars), 0);
        assert_only_backend_holds_ours(app, backend, 15001);
        scene.assert_configured_traffic();
        // The three surfaces render the same ruleset, so status against the others is in
        // sync.
        for config in [ECS_CONFIG, CNI_CONFIG] {
            let status = with_backend(&["status", config], backend);
            assert_exit(&meshinit(app, &status), 0);
        }
    }
}

#[test]
fn reapplying_a_changed_config_never_lets_traffic_bypass_the_proxy() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        reapplying_never_bypasses(backend);
    }
}

fn reapplying_never_bypasses(backend: &str) {
    let scene = Scene::new();
    let app = &scene.net.app;
    let with_ignored_ports = |ports| {
        with_backend(
            &["apply", ECS_CONFIG, "--egress-ignored-ports", ports],
            backend,
        )
    };
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
        "{backend}: too few probes ({}) to mean anything",
        outcomes.len()
    );
    assert_only_backend_holds_ours(app, backend, 15001);
    for outcome in &outcomes {
        assert_redirected(outcome, &scene.egress_proxy, addr("203.0.113.7:80"));
    }
}
