//! Faults and races: kill -9 in the middle of an apply, a family whose transaction fails,
//! child programs that fail or hang, locks held by others, and concurrent runs in one
//! namespace. Each leaves either the complete old state or the complete new one. Needs root.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ECS_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/configs/traffic-ecs.json"
);
/// The fake programs, ipset sets and kill points below are iptables-nft's.
const IPTABLES_NFT: [&str; 2] = ["--backend", "iptables-nft"];
/// Exit code of a run that gave up waiting for another meshinit in the same namespace.
const EXIT_BUSY: i32 = 7;

/// A config with `count` ignored /32s starting at 10.`first_octet`.0.0, and its egress port.
fn long_config(count: u32, first_octet: u32, egress_port: u16) -> Vec<String> {
    let ips: Vec<String> = (0..count)
        .map(|i| {
            // Scattered addresses, so the set cannot be merged into a few prefixes.
            let n = i * 7;
            format!("10.{first_octet}.{}.{}", (n / 256) % 256, (n % 256) | 1)
        })
        .collect();
    vec![
        "--ignored-uid".into(),
        "1337".into(),
        "--proxy-egress-port".into(),
        egress_port.to_string(),
        "--egress-ignored-ips".into(),
        ips.join(","),
        "--ipv6".into(),
        "off".into(),
    ]
}

fn args_of<'a>(verb: &'a str, config: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut out = vec![verb];
    out.extend(config.iter().map(String::as_str));
    out.extend_from_slice(extra);
    out
}

/// A directory of fake programs to put first on meshinit's PATH. Each fake is a shell
/// script; `REAL` in it is replaced by the real program's path.
struct FakeTools {
    dir: PathBuf,
}

impl FakeTools {
    fn new() -> FakeTools {
        let dir = std::env::temp_dir().join(format!(
            "meshinit-fakes-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        FakeTools { dir }
    }

    fn add(&self, name: &str, script: &str) {
        let real = which(name);
        let path = self.dir.join(name);
        let body = format!(
            "#!/bin/bash\n{}\n",
            script.replace("REAL", &real.display().to_string())
        );
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn path_env(&self) -> String {
        format!("{}:{}", self.dir.display(), std::env::var("PATH").unwrap())
    }
}

impl Drop for FakeTools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap().split(':') {
        let candidate = Path::new(dir).join(name);
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("{name} is not installed");
}

/// Everything of ours the kernel holds in `ns` (nft backend, both families, and the sets).
fn snapshot(ns: &TestNetns) -> String {
    format!("{}{}", nat_state(ns, "nft"), ipset_state(ns))
}

/// The sets named by a rule and what each holds, from the kernel.
fn matched_sets(ns: &TestNetns, rules: &str) -> Vec<(String, BTreeSet<String>)> {
    let names: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.split(" --match-set ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    names
        .into_iter()
        .map(|name| {
            let saved = ns.run_checked("ipset", &["save", name]);
            let members = saved
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("add {name} ")))
                .map(str::to_owned)
                .collect();
            (name.to_owned(), members)
        })
        .collect()
}

/// The IPv4 rules of ours with set names blanked, and the members of the sets they match.
fn egress_state(ns: &TestNetns) -> (Vec<String>, Vec<BTreeSet<String>>) {
    let rules = ns.run_checked("iptables-nft-save", &["-t", "nat"]);
    let ours: Vec<String> = rules
        .lines()
        .filter(|l| l.contains("APPMESH"))
        .map(|l| match l.split_once(" --match-set ") {
            Some((head, tail)) => {
                let rest = tail.split_once(' ').map(|x| x.1).unwrap_or("");
                format!("{head} --match-set SET {rest}")
            }
            None => l.to_owned(),
        })
        .collect();
    let sets = matched_sets(ns, &rules)
        .into_iter()
        .map(|(_, members)| members)
        .collect();
    (ours, sets)
}

#[test]
fn kill_9_at_any_moment_of_an_apply_leaves_the_old_or_the_new_state() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("kill9");
    let old = long_config(10_000, 1, 15001);
    let new = long_config(10_000, 2, 15002);
    assert_exit(&meshinit(&ns, &args_of("apply", &new, &IPTABLES_NFT)), 0);
    let new_state = egress_state(&ns);
    assert_exit(&meshinit(&ns, &args_of("clean", &[], &IPTABLES_NFT)), 0);
    assert_exit(&meshinit(&ns, &args_of("apply", &old, &IPTABLES_NFT)), 0);
    let old_state = egress_state(&ns);
    assert_ne!(old_state, new_state);

    // How long an apply of `new` over `old` takes here, to spread the kill points over it.
    let started = Instant::now();
    assert_exit(&meshinit(&ns, &args_of("apply", &new, &IPTABLES_NFT)), 0);
    let duration = started.elapsed();
    assert_exit(&meshinit(&ns, &args_of("apply", &old, &IPTABLES_NFT)), 0);

    let points = 16;
    let mut saw_old = 0;
    let mut saw_new = 0;
    for i in 0..points {
        let delay = duration.mul_f64(i as f64 / points as f64 * 1.2);
        let mut child = meshinit_command(&ns, &args_of("apply", &new, &IPTABLES_NFT), &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // `ip netns exec` execs meshinit, so the child's pid is meshinit's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        // Any orphaned child program (iptables-nft-restore, ipset) finishes what it would.
        wait_until(
            "the killed apply's children have finished",
            Duration::from_secs(10),
            || ns.processes().is_empty(),
        );
        let state = egress_state(&ns);
        if state == old_state {
            saw_old += 1;
        } else if state == new_state {
            saw_new += 1;
        } else {
            panic!(
                "kill -9 after {delay:?} left a mix: rules {:?} with {} set(s) of sizes {:?}",
                state.0,
                state.1.len(),
                state.1.iter().map(BTreeSet::len).collect::<Vec<_>>()
            );
        }
        // The next apply after a crash converges and exits 0.
        let next = meshinit(&ns, &args_of("apply", &new, &IPTABLES_NFT));
        assert_exit(&next, 0);
        assert_eq!(egress_state(&ns), new_state);
        assert_exit(&meshinit(&ns, &args_of("status", &new, &IPTABLES_NFT)), 0);
        assert_exit(&meshinit(&ns, &args_of("apply", &old, &IPTABLES_NFT)), 0);
        assert_eq!(egress_state(&ns), old_state);
    }
    eprintln!("kill points: {saw_old} left the old state, {saw_new} the new one");
    // Sets of crashed runs never accumulate: only the current one remains.
    let sets = ipset_names(&ns);
    assert_eq!(sets.len(), 1, "{sets:?}");
}

#[test]
fn a_leftover_staging_set_does_not_stop_the_next_apply() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("staging");
    let config = long_config(100, 3, 15001);
    assert_exit(&meshinit(&ns, &args_of("apply", &config, &IPTABLES_NFT)), 0);
    // What a crash of an earlier version between `create ..._NEW` and `swap` left behind.
    for name in ["APPMESH_IGNORED_NET4_NEW", "APPMESH_IGNORED_NET4"] {
        ns.run_checked(
            "ipset",
            &["create", name, "hash:net", "family", "inet", "-exist"],
        );
    }
    let changed = long_config(100, 4, 15001);
    assert_exit(
        &meshinit(&ns, &args_of("apply", &changed, &IPTABLES_NFT)),
        0,
    );
    assert_exit(
        &meshinit(&ns, &args_of("status", &changed, &IPTABLES_NFT)),
        0,
    );
    let sets = ipset_names(&ns);
    assert_eq!(sets.len(), 1, "stale sets of ours are swept: {sets:?}");
}

/// Applies `ECS_CONFIG`, then a changed config with `fakes` on PATH; returns that run.
fn apply_change_with(ns: &TestNetns, fakes: &FakeTools, extra: &[&str]) -> (Output, Duration) {
    assert_exit(
        &meshinit(ns, &["apply", ECS_CONFIG, "--backend", "iptables-nft"]),
        0,
    );
    let path = fakes.path_env();
    let mut args = vec![
        "apply",
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "16001",
        "--backend",
        "iptables-nft",
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let output = meshinit_with_env(ns, &args, &[("PATH", &path)]);
    (output, started.elapsed())
}

#[test]
fn a_family_failing_its_test_changes_neither_family() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("famtest");
    let fakes = FakeTools::new();
    fakes.add(
        "ip6tables-nft-restore",
        "cat >/dev/null; echo 'injected: line 2 failed' >&2; exit 1",
    );
    assert_exit(
        &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", "iptables-nft"]),
        0,
    );
    let before = snapshot(&ns);
    let (output, _) = apply_change_with(&ns, &fakes, &[]);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("injected"), "{}", stderr(&output));
    assert_eq!(before, snapshot(&ns), "IPv4 changed although IPv6 failed");
}

#[test]
fn a_family_failing_its_commit_restores_the_other() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("famcommit");
    let fakes = FakeTools::new();
    // Passes `--test`, fails the real commit.
    fakes.add(
        "ip6tables-nft-restore",
        "for a in \"$@\"; do [ \"$a\" = --test ] && exec REAL \"$@\"; done\n\
         cat >/dev/null; echo 'injected: commit failed' >&2; exit 1",
    );
    assert_exit(
        &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", "iptables-nft"]),
        0,
    );
    let before = snapshot(&ns);
    let (output, _) = apply_change_with(&ns, &fakes, &[]);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("injected"), "{}", stderr(&output));
    assert_eq!(
        before,
        snapshot(&ns),
        "IPv4 was not restored after IPv6 failed"
    );
}

#[test]
fn hanging_child_programs_are_killed_after_the_timeout() {
    if !require_root() {
        return;
    }
    for tool in ["iptables-nft-restore", "iptables-nft-save", "ipset"] {
        let ns = TestNetns::new("hang");
        let fakes = FakeTools::new();
        // The marker lets the test find a hung fake that was left running.
        let marker = format!("meshinit-hang-{}", std::process::id());
        fakes.add(tool, &format!("exec -a {marker} sleep 600"));
        assert_exit(
            &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", "iptables-nft"]),
            0,
        );
        let before = snapshot(&ns);
        let mut extra = vec!["--lock-timeout", "1s"];
        let ips: String;
        if tool == "ipset" {
            // Only a long list needs ipset.
            ips = (0..100)
                .map(|i| format!("10.9.{}.1", i))
                .collect::<Vec<_>>()
                .join(",");
            extra.extend(["--egress-ignored-ips", &ips]);
        }
        let (output, took) = apply_change_with(&ns, &fakes, &extra);
        assert_exit(&output, 1);
        assert!(
            took < Duration::from_secs(10),
            "{tool}: a hung child held the run for {took:?}"
        );
        assert!(
            stderr(&output).contains("did not finish"),
            "{tool}: {}",
            stderr(&output)
        );
        assert_eq!(before, snapshot(&ns), "{tool}: the rules changed");
        let left = Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .unwrap();
        assert!(
            left.stdout.is_empty(),
            "{tool}: the hung child is still running"
        );
    }
}

#[test]
fn lock_timeout_bounds_the_whole_wait() {
    if !require_root() {
        return;
    }
    for (timeout, limit) in [("3s", 3.0), ("500ms", 0.5)] {
        let ns = TestNetns::new("lockwait");
        let apply = ["apply", ECS_CONFIG, "--backend", "legacy"];
        assert_exit(&meshinit(&ns, &apply), 0);
        // What a run costs here without waiting (a re-apply reads and sends nothing): slow
        // machines and emulated kernels add it to any run, waiting or not.
        let started = Instant::now();
        assert_exit(&meshinit(&ns, &apply), 0);
        let overhead = started.elapsed().as_secs_f64();
        // Waiting twice (the old behaviour) would exceed this by a whole timeout.
        let bound = limit + overhead + 0.25;
        let before = nat_state(&ns, "legacy");
        let lock = XtablesLockHolder::hold(&format!("lockwait-{timeout}"));
        let started = Instant::now();
        let output = meshinit_with_env(
            &ns,
            &[
                "apply",
                "--ignored-uid",
                "1337",
                "--proxy-egress-port",
                "16001",
                "--backend",
                "legacy",
                "--lock-timeout",
                timeout,
            ],
            &[("XTABLES_LOCKFILE", lock.lockfile())],
        );
        let took = started.elapsed();
        drop(lock);
        eprintln!(
            "--lock-timeout {timeout}: exit {:?} after {took:?} (a run without waiting: {overhead:.2}s)",
            output.status.code()
        );
        assert_exit(&output, 1);
        assert!(
            took.as_secs_f64() < bound,
            "--lock-timeout {timeout} waited {took:?}, more than {bound:.2}s"
        );
        assert_eq!(before, nat_state(&ns, "legacy"));
    }
}

/// Which of `configs` the rules of `backend` in `ns` are, read with the backend's program
/// (and, for the iptables ones, at most two jumps per family); `None` when there are none.
fn assert_one_complete_ruleset_or_none(
    ns: &TestNetns,
    backend: &str,
    configs: &[&[&str]],
) -> Option<usize> {
    let state = our_rules(ns, backend);
    if state.is_empty() {
        return None;
    }
    let jumps = state
        .lines()
        .filter(|l| {
            (l.starts_with("-A OUTPUT") || l.starts_with("-A PREROUTING")) && l.contains("APPMESH")
        })
        .count();
    // Two jumps per family, never more.
    assert!(jumps <= 4, "duplicate jumps:\n{state}");
    for (i, config) in configs.iter().enumerate() {
        let mut args = vec!["status"];
        args.extend_from_slice(config);
        args.extend(["--backend", backend]);
        if meshinit(ns, &args).status.code() == Some(0) {
            return Some(i);
        }
    }
    panic!("{backend}: the ruleset is none of the configs':\n{state}");
}

#[test]
fn concurrent_applies_of_two_configs_serialise() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        concurrent_applies_serialise(backend);
    }
}

fn concurrent_applies_serialise(backend: &str) {
    let ns = TestNetns::new("race");
    let a: &[&str] = &["--ignored-uid", "1337", "--proxy-egress-port", "15001"];
    let b: &[&str] = &[
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15002",
        "--proxy-ingress-port",
        "15000",
        "--app-ports",
        "9080",
    ];
    let children: Vec<_> = (0..20)
        .map(|i| {
            let mut args = vec!["apply"];
            args.extend_from_slice(if i % 2 == 0 { a } else { b });
            // Twenty runs queue for one namespace, and the wait for it counts against the
            // lock timeout: its default (10 s) is not what this test is about, and twenty
            // legacy applies under an emulated CPU take longer than that.
            args.extend(["--backend", backend, "--lock-timeout", "600s"]);
            meshinit_command(&ns, &args, &[])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let code = output.status.code();
        assert!(
            code == Some(0) || code == Some(EXIT_BUSY),
            "{backend}: exit {code:?}: {}",
            stderr(&output)
        );
    }
    assert!(assert_one_complete_ruleset_or_none(&ns, backend, &[a, b]).is_some());
    for other in BACKENDS.into_iter().filter(|b| *b != backend) {
        assert_eq!(our_rules(&ns, other), "", "{backend}: rules in {other} too");
    }
}

#[test]
fn apply_racing_clean_ends_with_all_or_nothing() {
    if !require_root() {
        return;
    }
    for backend in BACKENDS {
        apply_racing_clean(backend);
    }
}

fn apply_racing_clean(backend: &str) {
    let config = long_config(200, 5, 15001);
    let config: Vec<&str> = config.iter().map(String::as_str).collect();
    let apply_args = args_of("apply", &[], &config)
        .into_iter()
        .chain(["--backend", backend, "--lock-timeout", "600s"])
        .collect::<Vec<_>>();
    for round in 0..6 {
        let ns = TestNetns::new("applyclean");
        if round % 2 == 1 {
            assert_exit(&meshinit(&ns, &apply_args), 0);
        }
        let apply = meshinit_command(&ns, &apply_args, &[])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Whichever waits for the other must not give up: the race is the point, not the
        // lock timeout (other tests of this binary hold the global xtables lock meanwhile).
        let clean = meshinit_command(&ns, &["clean", "--lock-timeout", "600s"], &[])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for child in [apply, clean] {
            let output = child.wait_with_output().unwrap();
            assert!(
                matches!(output.status.code(), Some(0) | Some(EXIT_BUSY)),
                "{backend}: {}",
                stderr(&output)
            );
        }
        let won = assert_one_complete_ruleset_or_none(&ns, backend, &[&config]);
        // The native backend's sets live in its table; the iptables ones' are ipsets.
        if backend != "nftables" {
            match won {
                Some(_) => assert!(!ipset_names(&ns).is_empty()),
                None => assert!(
                    ipset_names(&ns).is_empty(),
                    "{backend}: clean won but sets remain: {:?}",
                    ipset_names(&ns)
                ),
            }
        }
    }
}

/// Runs meshinit as a CNI plugin from `node` for the container namespace `pod`.
fn cni(node: &TestNetns, pod: &TestNetns, command: &str) -> std::process::Child {
    cni_plugin(node, pod, command, None)
}

#[test]
fn cni_add_racing_del_ends_with_all_or_nothing() {
    if !require_root() {
        return;
    }
    let node = TestNetns::new("cninode");
    let reference = TestNetns::new("cniref");
    let added = cni(&node, &reference, "ADD").wait_with_output().unwrap();
    assert!(added.status.success(), "{}", stderr(&added));
    // CNI runs `auto`: the native backend in a fresh pod.
    let complete = our_rules(&reference, "nftables");
    assert!(complete.contains("chain output"), "{complete}");
    for _ in 0..6 {
        let pod = TestNetns::new("cnipod");
        let add = cni(&node, &pod, "ADD");
        let del = cni(&node, &pod, "DEL");
        for child in [add, del] {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}\n{}",
                stdout(&output),
                stderr(&output)
            );
        }
        let state = our_rules(&pod, "nftables");
        // Nothing, or the whole table (sets, chains and rules of both families).
        assert!(
            state.is_empty() || state == complete,
            "neither nothing nor the whole table:\n{state}"
        );
        assert_eq!(our_rules(&pod, "iptables-nft"), "");
    }
}

/// Our DNS zone chains and the jumps into them, as iptables-nft holds them (both families).
fn raw_state(ns: &TestNetns) -> String {
    ["iptables-nft-save", "ip6tables-nft-save"]
        .iter()
        .flat_map(|save| {
            ns.run_checked(save, &["-t", "raw"])
                .lines()
                .filter(|l| l.contains("MESHINIT_DNS"))
                .map(|l| format!("{l}\n"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A restore wrapper that fails every payload for `table` (with `--test` too when
/// `also_test`), passing the rest to the real program.
fn failing_table(table: &str, also_test: bool) -> String {
    let test_passes = if also_test {
        ""
    } else {
        "for a in \"$@\"; do [ \"$a\" = --test ] && exec REAL \"$@\"; done\n"
    };
    format!(
        "{test_passes}payload=$(cat)\n\
         if grep -q '^\\*{table}$' <<<\"$payload\"; then echo 'injected: {table} failed' >&2; exit 1; fi\n\
         printf '%s\\n' \"$payload\" | REAL \"$@\""
    )
}

/// The side tables (raw: DNS conntrack zones) are separate restore transactions from nat,
/// ordered so that the DNS redirect never runs without its zones: zones that cannot be
/// installed leave the nat rules as they were, and nat rules that cannot be committed take
/// the zones just installed back out.
#[test]
fn the_dns_redirect_never_runs_without_its_zones() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("zoneorder");
    let dns = ["--proxy-dns-port", "15053"];

    // The zones fail: nothing changes, the redirect included.
    let fakes = FakeTools::new();
    for restore in ["iptables-nft-restore", "ip6tables-nft-restore"] {
        fakes.add(restore, &failing_table("raw", true));
    }
    assert_exit(
        &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", "iptables-nft"]),
        0,
    );
    let before = snapshot(&ns);
    let (output, _) = apply_change_with(&ns, &fakes, &dns);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("injected"), "{}", stderr(&output));
    assert_eq!(
        before,
        snapshot(&ns),
        "nat changed although its zones failed"
    );
    assert_eq!(raw_state(&ns), "");

    // The nat commit fails after the zones went in: they come back out.
    let fakes = FakeTools::new();
    for restore in ["iptables-nft-restore", "ip6tables-nft-restore"] {
        fakes.add(restore, &failing_table("nat", false));
    }
    let (output, _) = apply_change_with(&ns, &fakes, &dns);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("injected"), "{}", stderr(&output));
    assert_eq!(before, snapshot(&ns));
    assert_eq!(raw_state(&ns), "", "zones left without their redirect");

    // Unhindered, both go in; turned off with the zones' removal failing, the redirect
    // goes first and the zones stay (harmless without it) for the next apply.
    let (output, _) = apply_change_with(&ns, &FakeTools::new(), &dns);
    assert_exit(&output, 0);
    assert!(snapshot(&ns).contains("--dports 53"), "{}", snapshot(&ns));
    assert_ne!(raw_state(&ns), "");
    let fakes = FakeTools::new();
    for restore in ["iptables-nft-restore", "ip6tables-nft-restore"] {
        fakes.add(restore, &failing_table("raw", true));
    }
    // (Not apply_change_with: it first applies the configuration without DNS.)
    let without_dns = [
        "apply",
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "16001",
        "--backend",
        "iptables-nft",
    ];
    let output = meshinit_with_env(&ns, &without_dns, &[("PATH", &fakes.path_env())]);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("injected"), "{}", stderr(&output));
    assert!(!snapshot(&ns).contains("--dports 53"), "{}", snapshot(&ns));
    assert_ne!(raw_state(&ns), "");
    assert_exit(&meshinit(&ns, &without_dns), 0);
    assert_eq!(raw_state(&ns), "");
}
