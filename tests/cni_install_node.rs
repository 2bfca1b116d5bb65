//! `meshinit cni install` among the other writers of a node, as its DaemonSet runs it: the
//! interface plugin's agent rewriting the list (both write styles) while `--watch` runs,
//! old and new installers of a rolling update overlapping, installers that are all PID 1,
//! two installers with different settings, the real App Mesh plugin replaced and restored,
//! hostile files, and the smaller decisions (docs/cni.md, "`meshinit cni install` / `cni uninstall`").
//!
//! `MESHINIT_TEST_BINARY=PATH` runs these tests against another meshinit build (how each
//! was shown to fail before the change).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

fn meshinit_binary() -> String {
    std::env::var("MESHINIT_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_meshinit").into())
}

/// The AWS VPC CNI's list (shortened) as its agent writes it.
const AWS_CONFLIST: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "aws-cni",
  "disableCheck": true,
  "plugins": [
    {
      "name": "aws-cni",
      "type": "aws-cni",
      "vethPrefix": "eni",
      "mtu": "9001"
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true},
      "snat": true
    }
  ]
}
"#;

/// An ECS instance's list with the App Mesh plugin, as the ECS agent writes it.
const ECS_APPMESH_CONFLIST: &str = r#"{"cniVersion":"0.3.0","name":"ecs-appmesh","plugins":[{"type":"ecs-bridge","bridge":"ecs-br0","mtu":9001},{"type":"aws-appmesh","ignoredUID":"1337","proxyIngressPort":"15000","proxyEgressPort":"15001","appPorts":["80"],"egressIgnoredIPs":["169.254.170.2","169.254.169.254"]}]}"#;

const FLAGS: [&str; 8] = [
    "--ignored-uid",
    "1337",
    "--proxy-egress-port",
    "15001",
    "--proxy-ingress-port",
    "15000",
    "--app-ports",
    "8080",
];

/// A skip that is loud, and a failure under `CI=true`.
fn skip(why: &str) -> bool {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and CI=true forbids skipping it");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    true
}

/// A small deterministic generator for random offsets (the seed is printed).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("MESHINIT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("MESHINIT_TEST_SEED={seed}");
        Rng(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        // Under target/ (not /tmp, possibly a tmpfs without user xattrs).
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("meshinit-node-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("net.d/10-aws.conflist"), AWS_CONFLIST).unwrap();
        Scratch(dir)
    }
    fn conflist(&self) -> PathBuf {
        self.0.join("net.d/10-aws.conflist")
    }
    fn bin(&self) -> PathBuf {
        self.0.join("bin")
    }
    fn text(&self) -> String {
        std::fs::read_to_string(self.conflist()).unwrap_or_default()
    }
    fn plugins(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.text())
            .ok()
            .and_then(|v| v["plugins"].as_array().cloned())
            .unwrap_or_default()
    }
    fn entry(&self, plugin_type: &str) -> Option<Value> {
        self.plugins()
            .into_iter()
            .find(|p| p["type"] == plugin_type)
    }
    fn place(&self) -> Vec<String> {
        vec![
            "--conflist".into(),
            self.conflist().display().to_string(),
            "--bin-dir".into(),
            self.bin().display().to_string(),
        ]
    }
    /// Files of the two directories whose name has `pattern`.
    fn leftovers(&self, pattern: &str) -> Vec<String> {
        [self.0.join("net.d"), self.bin()]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(pattern))
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str], extra: &[String]) -> Output {
    Command::new(meshinit_binary())
        .args(args)
        .args(extra)
        .env_remove("CNI_COMMAND")
        .output()
        .expect("run meshinit")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `cni install --watch` with its log in a file.
struct Watcher {
    child: Child,
    log: PathBuf,
}

impl Watcher {
    fn start(scratch: &Scratch, name: &str, interval: &str, flags: &[&str], bin: bool) -> Watcher {
        Watcher::start_with(scratch, name, &[], interval, flags, bin)
    }
    fn start_with(
        scratch: &Scratch,
        name: &str,
        prefix: &[&str],
        interval: &str,
        flags: &[&str],
        bin: bool,
    ) -> Watcher {
        let log = scratch.0.join(format!("{name}.log"));
        let binary = meshinit_binary();
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        command
            .args(["cni", "install", "--watch", interval])
            .args(flags)
            .arg("--conflist")
            .arg(scratch.conflist());
        if bin {
            command.arg("--bin-dir").arg(scratch.bin());
        }
        let child = command
            .env_remove("CNI_COMMAND")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start cni install --watch");
        Watcher { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, pid: u32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    /// SIGTERM, and waits for the exit; panics when it does not stop or fails.
    fn stop(mut self) -> String {
        self.signal(self.child.id());
        let status = wait_exit(&mut self.child, Duration::from_secs(20));
        let log = self.log();
        assert!(status.success(), "{status}: {log}");
        log
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for(what: &str, bound: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + bound;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The AWS list of version `k` (its agent's `k`th write).
fn list_version(k: usize) -> String {
    AWS_CONFLIST.replacen(
        "\"disableCheck\": true,",
        &format!("\"disableCheck\": true,\n  \"version\": {k},"),
        1,
    )
}

fn version_of(text: &str) -> Option<u64> {
    serde_json::from_str::<Value>(text).ok()?["version"].as_u64()
}

#[derive(Clone, Copy, Debug)]
enum WriteStyle {
    TemporaryAndRename,
    InPlace,
}

/// The agent rewrites its list `versions` times at random intervals while `--watch`
/// re-adds meshinit's entry after each; before each write it checks that its previous
/// version is still there (with or without meshinit's entry). Returns (lost, raced):
/// versions replaced by an older one, and how often the two writers met: versions meshinit
/// edited before the next one, plus edits meshinit redid because the agent wrote in between.
/// On a fast machine the first dominates; under an emulated CPU meshinit's edits are slow
/// and the second does, and either is the race this test is about.
fn rewriter_race(style: WriteStyle, versions: usize) -> (usize, usize) {
    let scratch = Scratch::new(&format!("race-{style:?}"));
    std::fs::write(scratch.conflist(), list_version(0)).unwrap();
    let watcher = Watcher::start(&scratch, "watch", "10ms", &FLAGS, false);
    wait_for("the entry is installed", Duration::from_secs(20), || {
        scratch.entry("meshinit").is_some()
    });
    let mut rng = Rng::new();
    let (mut lost, mut raced) = (0, 0);
    let temporary = scratch.0.join("net.d/.agent-tmp");
    for k in 1..=versions {
        let now = scratch.text();
        if version_of(&now) != Some(k as u64 - 1) {
            // A reader may see meshinit's version for the instant before it undoes an
            // exchange that lost a race; what counts is what stays.
            let deadline = Instant::now() + Duration::from_secs(1);
            while version_of(&scratch.text()) != Some(k as u64 - 1) {
                if Instant::now() > deadline {
                    lost += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if now.contains("\"meshinit\"") {
            raced += 1;
        }
        match style {
            WriteStyle::TemporaryAndRename => {
                std::fs::write(&temporary, list_version(k)).unwrap();
                std::fs::rename(&temporary, scratch.conflist()).unwrap();
            }
            WriteStyle::InPlace => std::fs::write(scratch.conflist(), list_version(k)).unwrap(),
        }
        std::thread::sleep(rng.millis(12));
    }
    // meshinit has acted on the last write once its entry is back in the list: in the last
    // version, or (a lost version) in an older one.
    wait_for(
        "meshinit has edited the list after the last write",
        Duration::from_secs(20),
        || scratch.entry("meshinit").is_some(),
    );
    if version_of(&scratch.text()) != Some(versions as u64) {
        lost += 1;
    }
    let log = watcher.stop();
    let redone = log.matches("changed by another writer").count();
    eprintln!("{style:?}: meshinit edited {raced} versions and redid its edit {redone} times");
    (lost, raced + redone)
}

#[test]
fn a_rewriting_agent_never_loses_a_version_temporary_and_rename() {
    let (lost, raced) = rewriter_race(WriteStyle::TemporaryAndRename, 600);
    eprintln!("temporary+rename: {lost} of 600 versions lost, {raced} meetings");
    assert!(raced >= 30, "the race was hardly run: {raced} meetings");
    assert_eq!(lost, 0, "versions of the agent replaced by older ones");
}

#[test]
fn a_rewriting_agent_never_loses_a_version_in_place() {
    let (lost, raced) = rewriter_race(WriteStyle::InPlace, 600);
    eprintln!("in place: {lost} of 600 versions lost, {raced} meetings");
    assert!(raced >= 30, "the race was hardly run: {raced} meetings");
    assert_eq!(lost, 0, "versions of the agent replaced by older ones");
}

/// The PIDs of `parent`'s children.
fn children(parent: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn unshare_usable() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("unshare")
            .args(["-p", "-f", "--mount-proc", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

#[test]
fn installers_that_are_all_pid_1_do_not_collide() {
    if !unshare_usable() && skip("needs root and unshare (util-linux) for PID namespaces") {
        return;
    }
    let scratch = Scratch::new("pid1");
    let unshare = ["unshare", "-p", "-f", "--mount-proc"];
    for round in 0..12 {
        std::fs::write(scratch.conflist(), AWS_CONFLIST).unwrap();
        let spawn = || {
            Command::new(unshare[0])
                .args(&unshare[1..])
                .arg(meshinit_binary())
                .args(["cni", "install"])
                .args(FLAGS)
                .args(scratch.place())
                .env_remove("CNI_COMMAND")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        for child in [a, b] {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "round {round}: {}",
                stderr(&output)
            );
        }
        assert!(scratch.entry("meshinit").is_some(), "round {round}");
        assert!(scratch.bin().join("meshinit").exists(), "round {round}");
        assert_eq!(scratch.leftovers(".tmp"), Vec::<String>::new());
    }
    // Two watchers, each PID 1 of its namespace; SIGTERM to both: nothing of ours stays.
    std::fs::write(scratch.conflist(), AWS_CONFLIST).unwrap();
    let a = Watcher::start_with(&scratch, "a", &unshare, "20ms", &FLAGS, true);
    let b = Watcher::start_with(&scratch, "b", &unshare, "20ms", &FLAGS, true);
    wait_for("both run", Duration::from_secs(20), || {
        children(a.child.id()).len() == 1 && children(b.child.id()).len() == 1
    });
    wait_for("installed", Duration::from_secs(20), || {
        scratch.entry("meshinit").is_some()
    });
    // Each watcher logs "watching" once its SIGTERM handler is in place.
    wait_for("both watch", Duration::from_secs(20), || {
        a.log().contains("watching ") && b.log().contains("watching ")
    });
    for w in [&a, &b] {
        let inner = children(w.child.id())[0];
        let status = std::fs::read_to_string(format!("/proc/{inner}/status")).unwrap();
        assert!(
            status.contains("NSpid:")
                && status
                    .lines()
                    .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
            "{status}"
        );
        w.signal(inner);
    }
    let (mut a, mut b) = (a, b);
    for w in [&mut a, &mut b] {
        let status = wait_exit(&mut w.child, Duration::from_secs(20));
        assert!(status.success(), "{status}: {}", w.log());
    }
    assert_eq!(scratch.text(), AWS_CONFLIST, "{}\n{}", a.log(), b.log());
    assert!(!scratch.bin().join("meshinit").exists());
}

/// Watches, until stopped, that the list never names meshinit while its binary is missing
/// (a pod ADD then fails with "plugin not found"); counts such moments.
fn watch_entry_without_binary(
    scratch: &Scratch,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let conflist = scratch.conflist();
    let binary = scratch.bin().join("meshinit");
    std::thread::spawn(move || {
        let mut seen = 0;
        let names_meshinit =
            || std::fs::read_to_string(&conflist).is_ok_and(|t| t.contains("\"meshinit\""));
        while !stop.load(Ordering::SeqCst) {
            if names_meshinit() && !binary.exists() && names_meshinit() && !binary.exists() {
                seen += 1;
            }
            std::thread::sleep(Duration::from_micros(300));
        }
        seen
    })
}

#[test]
fn rolling_update_old_and_new_installers_overlap_at_random_offsets() {
    let scratch = Scratch::new("rolling");
    let mut rng = Rng::new();
    let stop = Arc::new(AtomicBool::new(false));
    let checker = watch_entry_without_binary(&scratch, stop.clone());
    let old = [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-ingress-port",
        "15000",
        "--app-ports",
        "8080",
    ];
    let new = [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-ingress-port",
        "15000",
        "--app-ports",
        "9090",
    ];
    let rounds = 20;
    let mut failures = Vec::new();
    for round in 0..rounds {
        let a = Watcher::start(&scratch, "old", "50ms", &old, true);
        wait_for("the old pod installed", Duration::from_secs(20), || {
            scratch.entry("meshinit").is_some() && scratch.bin().join("meshinit").exists()
        });
        let (before_new, before_term) = (rng.millis(300), rng.millis(300));
        std::thread::sleep(before_new);
        // The new pod's watcher installs at its start and then not for a long while, so
        // anything the old pod's uninstall takes away stays away.
        let b = Watcher::start(&scratch, "new", "60s", &new, true);
        std::thread::sleep(before_term);
        a.stop();
        wait_for("the new pod installed", Duration::from_secs(20), || {
            b.log().contains("meshinit entry:")
        });
        let entry = scratch.entry("meshinit");
        let binary = scratch.bin().join("meshinit").exists();
        if entry.as_ref().map(|e| e["appPorts"][0].clone()) != Some("9090".into()) || !binary {
            failures.push(format!(
                "round {round} (new after {before_new:?}, old stopped {before_term:?} later): \
                 entry {entry:?}, binary {binary}"
            ));
        }
        b.stop();
        assert_eq!(
            scratch.text(),
            AWS_CONFLIST,
            "round {round}: the new pod uninstalled"
        );
        assert!(!scratch.bin().join("meshinit").exists(), "round {round}");
    }
    stop.store(true, Ordering::SeqCst);
    let without_binary = checker.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {rounds}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        without_binary, 0,
        "moments the list named meshinit without its binary"
    );
}

#[test]
fn two_installers_with_different_settings_do_not_flap() {
    let scratch = Scratch::new("flap");
    let older = [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-ingress-port",
        "15000",
        "--app-ports",
        "8080",
    ];
    let newer = [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-ingress-port",
        "15000",
        "--app-ports",
        "9090",
    ];
    let a = Watcher::start(&scratch, "older", "20ms", &older, true);
    wait_for("installed", Duration::from_secs(20), || {
        scratch.entry("meshinit").is_some()
    });
    let b = Watcher::start(&scratch, "newer", "20ms", &newer, true);
    wait_for("the newer installed", Duration::from_secs(20), || {
        scratch
            .entry("meshinit")
            .is_some_and(|e| e["appPorts"][0] == "9090")
    });
    let changes = AtomicUsize::new(0);
    let identity = || {
        std::fs::metadata(scratch.conflist())
            .map(|m| (m.ino(), m.mtime_nsec(), m.size()))
            .ok()
    };
    let mut last = identity();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let now = identity();
        if now != last {
            changes.fetch_add(1, Ordering::SeqCst);
            last = now;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let changes = changes.into_inner();
    assert_eq!(
        changes, 0,
        "the list changed {changes} times in 2 s after the newer installed"
    );
    assert_eq!(scratch.entry("meshinit").unwrap()["appPorts"][0], "9090");
    let log = a.stop();
    assert!(log.contains("standing down"), "{log}");
    assert_eq!(
        scratch.entry("meshinit").map(|e| e["appPorts"][0].clone()),
        Some("9090".into()),
        "the older one's stop left the newer's entry"
    );
    assert!(scratch.bin().join("meshinit").exists());
    b.stop();
    assert_eq!(scratch.text(), AWS_CONFLIST);
}

#[test]
fn a_killed_newer_installer_leaves_the_list_to_the_older_one() {
    let scratch = Scratch::new("killed");
    let older = [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-ingress-port",
        "15000",
        "--app-ports",
        "8080",
    ];
    let newer = [
        "--ignored-uid",
        "1337",
        "--proxy-egress-port",
        "15001",
        "--proxy-ingress-port",
        "15000",
        "--app-ports",
        "9090",
    ];
    let a = Watcher::start(&scratch, "older", "20ms", &older, true);
    wait_for("installed", Duration::from_secs(20), || {
        scratch.entry("meshinit").is_some()
    });
    let mut b = Watcher::start(&scratch, "newer", "20ms", &newer, true);
    wait_for("the newer installed", Duration::from_secs(20), || {
        scratch
            .entry("meshinit")
            .is_some_and(|e| e["appPorts"][0] == "9090")
    });
    // SIGKILL: no uninstall, its record stays, but its lock on the record goes.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    // The agent rewrites its list: someone must put the entry back.
    std::fs::write(scratch.conflist(), AWS_CONFLIST).unwrap();
    wait_for("the older one took over", Duration::from_secs(20), || {
        scratch
            .entry("meshinit")
            .is_some_and(|e| e["appPorts"][0] == "8080")
    });
    a.stop();
    assert_eq!(scratch.text(), AWS_CONFLIST);
    assert!(!scratch.bin().join("meshinit").exists());
}

/// The directory of the peers (the real aws-appmesh plugin): `MESHINIT_PEERS_DIR`.
fn peers_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MESHINIT_PEERS_DIR").map(PathBuf::from);
    match dir {
        Some(dir) if dir.join("aws-appmesh").is_file() => Some(dir),
        other => {
            skip(&format!(
                "needs the real App Mesh plugin: MESHINIT_PEERS_DIR (now {other:?}) must name \
                 a directory with aws-appmesh (../shared/peers beside the repository)"
            ));
            None
        }
    }
}

#[test]
fn the_real_app_mesh_plugin_is_left_alone_or_replaced_and_restored_byte_for_byte() {
    let Some(peers) = peers_dir() else { return };
    let original_binary = std::fs::read(peers.join("aws-appmesh")).unwrap();
    let scratch = Scratch::new("appmesh");
    std::fs::write(scratch.conflist(), ECS_APPMESH_CONFLIST).unwrap();
    let plugin = scratch.bin().join("aws-appmesh");
    std::fs::copy(peers.join("aws-appmesh"), &plugin).unwrap();
    let mut args = vec!["cni", "install", "--type", "aws-appmesh"];
    args.extend(FLAGS);

    // Not asked to replace: refused, nothing changed.
    let refused = run(&args, &scratch.place());
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("--replace"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(scratch.text(), ECS_APPMESH_CONFLIST);
    assert_eq!(std::fs::read(&plugin).unwrap(), original_binary);

    // Asked: meshinit takes its place.
    args.push("--replace");
    let replaced = run(&args, &scratch.place());
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        std::fs::read(meshinit_binary()).unwrap()
    );
    let plugins = scratch.plugins();
    assert_eq!(plugins.len(), 2, "{plugins:?}");
    assert_eq!(plugins[1]["appPorts"], serde_json::json!(["8080"]));
    // Again (the DaemonSet's next tick, or a restarted pod): still restorable.
    let again = run(&args, &scratch.place());
    assert!(again.status.success(), "{}", stderr(&again));

    // The preStop's uninstall (no --type) puts both back, byte for byte.
    let removed = run(&["cni", "uninstall"], &scratch.place());
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(scratch.text(), ECS_APPMESH_CONFLIST);
    assert_eq!(std::fs::read(&plugin).unwrap(), original_binary);
    assert_eq!(scratch.leftovers(".meshinit-"), Vec::<String>::new());
    // And the restored plugin still runs (VERSION needs no namespace).
    let version = Command::new(&plugin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("cniVersion"));
}

#[test]
fn a_binary_meshinit_did_not_install_is_left_alone() {
    let scratch = Scratch::new("foreign");
    let foreign = scratch.bin().join("meshinit");
    let script = b"#!/bin/sh\necho someone else's meshinit\n";
    std::fs::write(&foreign, script).unwrap();
    let mut args = vec!["cni", "install"];
    args.extend(FLAGS);
    let refused = run(&args, &scratch.place());
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert_eq!(std::fs::read(&foreign).unwrap(), script);
    assert_eq!(scratch.text(), AWS_CONFLIST);
    let removed = run(&["cni", "uninstall"], &scratch.place());
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        script,
        "uninstall left it"
    );
}

#[test]
fn stale_temporary_files_of_ours_are_removed_and_young_ones_left() {
    let scratch = Scratch::new("stale");
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let make = |path: PathBuf, old: bool| {
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 20).unwrap();
        if old {
            file.set_modified(hour_ago).unwrap();
        }
        path
    };
    let net = scratch.0.join("net.d");
    let stale = [
        make(net.join(".10-aws.conflist.meshinit-1"), true),
        make(
            net.join(".10-aws.conflist.meshinit-00c0ffee00c0ffee.tmp"),
            true,
        ),
        make(scratch.bin().join(".meshinit.meshinit-1"), true),
    ];
    let young = make(
        scratch
            .bin()
            .join(".meshinit.meshinit-0123456789abcdef.tmp"),
        false,
    );
    let not_ours = make(net.join(".10-aws.conflist.agent-tmp"), true);
    let mut args = vec!["cni", "install"];
    args.extend(FLAGS);
    let output = run(&args, &scratch.place());
    assert!(output.status.success(), "{}", stderr(&output));
    for path in &stale {
        assert!(!path.exists(), "{} is stale and ours", path.display());
    }
    assert!(
        young.exists(),
        "a young one may be another writer's, being written"
    );
    assert!(not_ours.exists(), "not our name");
}

#[test]
fn a_binary_an_entry_not_ours_names_is_not_removed() {
    // An older meshinit installed itself as aws-appmesh over an ECS node's list (no owner
    // record): uninstall leaves that entry, so the binary it names stays too.
    let scratch = Scratch::new("named");
    std::fs::write(scratch.conflist(), ECS_APPMESH_CONFLIST).unwrap();
    let plugin = scratch.bin().join("aws-appmesh");
    std::fs::copy(meshinit_binary(), &plugin).unwrap();
    let removed = run(
        &["cni", "uninstall", "--type", "aws-appmesh"],
        &scratch.place(),
    );
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(scratch.text(), ECS_APPMESH_CONFLIST);
    assert!(plugin.exists(), "{}", stderr(&removed));
}

/// Runs `cni install` on a hostile list; it must exit 2 within a few seconds, naming
/// `expected`.
fn install_refuses(scratch: &Scratch, expected: &str) {
    let mut child = Command::new(meshinit_binary())
        .args(["cni", "install"])
        .args(FLAGS)
        .args(scratch.place())
        .env_remove("CNI_COMMAND")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(text.contains(expected), "{expected} in {text}");
    assert!(!scratch.bin().join("meshinit").exists());
}

#[test]
fn hostile_lists_are_refused_without_hanging_or_reading_them_whole() {
    let scratch = Scratch::new("hostile");
    std::fs::remove_file(scratch.conflist()).unwrap();
    std::os::unix::fs::symlink("/dev/zero", scratch.conflist()).unwrap();
    install_refuses(&scratch, "character device");
    std::fs::remove_file(scratch.conflist()).unwrap();
    nix::unistd::mkfifo(
        &scratch.conflist(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    install_refuses(&scratch, "FIFO");
    std::fs::remove_file(scratch.conflist()).unwrap();
    // A valid list of 2 MiB: one plugin with a long string.
    let huge = AWS_CONFLIST.replacen(
        "\"snat\": true",
        &format!("\"snat\": true, \"padding\": \"{}\"", "x".repeat(2 << 20)),
        1,
    );
    std::fs::write(scratch.conflist(), &huge).unwrap();
    install_refuses(&scratch, "bytes, more than");
    assert_eq!(std::fs::read_to_string(scratch.conflist()).unwrap(), huge);
    // An entry file that is a FIFO does not hang either.
    std::fs::write(scratch.conflist(), AWS_CONFLIST).unwrap();
    let fifo = scratch.0.join("entry.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut child = Command::new(meshinit_binary())
        .args(["cni", "install", "--entry"])
        .arg(&fifo)
        .args(scratch.place())
        .env_remove("CNI_COMMAND")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(2)
    );
}

#[test]
fn uninstall_with_the_list_missing_still_removes_the_binary() {
    let scratch = Scratch::new("nolist");
    let mut args = vec!["cni", "install"];
    args.extend(FLAGS);
    assert!(run(&args, &scratch.place()).status.success());
    std::fs::remove_file(scratch.conflist()).unwrap();
    let removed = run(&["cni", "uninstall"], &scratch.place());
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(!scratch.bin().join("meshinit").exists());
}

#[test]
fn the_list_keeps_its_owner_and_extended_attributes() {
    if !nix::unistd::geteuid().is_root() && skip("needs root to give the list another owner") {
        return;
    }
    let scratch = Scratch::new("owner");
    let list = scratch.conflist();
    std::os::unix::fs::chown(&list, Some(4321), Some(8765)).unwrap();
    let path = std::ffi::CString::new(list.as_os_str().as_encoded_bytes()).unwrap();
    let (name, value) = (c"user.meshinit-test", b"kept");
    // SAFETY: valid NUL-terminated strings and buffer.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 && skip("target/'s file system has no user xattrs") {
        return;
    }
    let mut args = vec!["cni", "install"];
    args.extend(FLAGS);
    let output = run(&args, &scratch.place());
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(scratch.entry("meshinit").is_some());
    let meta = std::fs::metadata(&list).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
    let path = std::ffi::CString::new(list.as_os_str().as_encoded_bytes()).unwrap();
    let mut buffer = [0u8; 16];
    // SAFETY: as above.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    assert_eq!(n, 4, "the xattr is kept");
    assert_eq!(&buffer[..4], value);
}

#[test]
fn without_cap_chown_a_list_of_another_owner_is_still_written_with_a_warning() {
    let usable = nix::unistd::geteuid().is_root()
        && Command::new("setpriv")
            .args(["--bounding-set=-all", "--inh-caps=-all", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !usable && skip("needs root and setpriv (util-linux) to drop capabilities") {
        return;
    }
    let scratch = Scratch::new("nocaps");
    std::os::unix::fs::chown(scratch.conflist(), Some(4321), Some(8765)).unwrap();
    // As the DaemonSet runs it: root, every capability dropped.
    let output = Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all"])
        .arg(meshinit_binary())
        .args(["cni", "install"])
        .args(FLAGS)
        .args(scratch.place())
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot keep its owner 4321:8765"),
        "{}",
        stderr(&output)
    );
    assert!(scratch.entry("meshinit").is_some());
}

#[test]
fn a_list_without_an_interface_plugin_is_refused_and_the_last_entry_removes_the_list() {
    let scratch = Scratch::new("empty");
    let empty = r#"{"cniVersion": "1.0.0", "name": "n", "plugins": []}"#;
    std::fs::write(scratch.conflist(), empty).unwrap();
    install_refuses(&scratch, "interface plugin");
    assert_eq!(scratch.text(), empty);
    // A list holding only meshinit (left by an older version, or edited by hand):
    // uninstall removes the file, since an empty list is one libcni refuses.
    let only = r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "meshinit", "ignoredUID": "1337", "proxyEgressPort": "15001"}]}"#;
    std::fs::write(scratch.conflist(), only).unwrap();
    let removed = run(&["cni", "uninstall"], &scratch.place());
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(!scratch.conflist().exists(), "{}", scratch.text());
}

#[test]
fn switching_the_type_removes_the_old_entry_and_uninstall_finds_any_type() {
    let scratch = Scratch::new("switch");
    let mut args = vec!["cni", "install"];
    args.extend(FLAGS);
    assert!(run(&args, &scratch.place()).status.success());
    args.extend(["--type", "aws-appmesh"]);
    let switched = run(&args, &scratch.place());
    assert!(switched.status.success(), "{}", stderr(&switched));
    let types: Vec<Value> = scratch
        .plugins()
        .iter()
        .map(|p| p["type"].clone())
        .collect();
    assert_eq!(types, ["aws-cni", "portmap", "aws-appmesh"]);
    assert!(!scratch.bin().join("meshinit").exists());
    assert!(scratch.bin().join("aws-appmesh").exists());

    // The DaemonSet's uninstall names no type; the entry file said aws-appmesh.
    std::fs::write(scratch.conflist(), AWS_CONFLIST).unwrap();
    std::fs::remove_file(scratch.bin().join("aws-appmesh")).unwrap();
    let entry = scratch.0.join("entry.json");
    std::fs::write(
        &entry,
        r#"{"type": "aws-appmesh", "ignoredUID": "1337", "proxyEgressPort": "15001"}"#,
    )
    .unwrap();
    let mut place = scratch.place();
    place.extend(["--entry".into(), entry.display().to_string()]);
    let installed = run(&["cni", "install"], &place);
    assert!(installed.status.success(), "{}", stderr(&installed));
    assert!(scratch.entry("aws-appmesh").is_some());
    let removed = run(&["cni", "uninstall"], &scratch.place());
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(scratch.text(), AWS_CONFLIST);
    assert!(!scratch.bin().join("aws-appmesh").exists());
}
