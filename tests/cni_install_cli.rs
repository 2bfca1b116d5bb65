//! `meshinit cni install` / `cni uninstall` from the command line, on files in a temporary
//! directory (no root needed): the list keeps every byte of the other plugins, a second run
//! changes nothing, bad input exits 2 with the files untouched, the binary copied is the
//! running one, `--watch` re-installs and uninstalls on SIGTERM, and `meshinit cni` without
//! a subcommand is still the plugin.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");

/// The AWS VPC CNI's list as written on an EKS node.
const AWS_CONFLIST: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "aws-cni",
  "disableCheck": true,
  "plugins": [
    {
      "name": "aws-cni",
      "type": "aws-cni",
      "vethPrefix": "eni",
      "mtu": "9001",
      "podSGEnforcingMode": "strict",
      "pluginLogFile": "/var/log/aws-routed-eni/plugin.log",
      "pluginLogLevel": "DEBUG",
      "capabilities": {"io.kubernetes.cri.pod-annotations": true}
    },
    {
      "name": "egress-cni",
      "type": "egress-cni",
      "mtu": "9001",
      "enabled": "false",
      "randomizeSNAT": "prng",
      "nodeIP": "",
      "ipam": {
         "type": "host-local",
         "ranges": [[{"subnet": "fd00::ac:00/118"}]],
         "routes": [{"dst": "::/0"}],
         "dataDir": "/run/cni/v4pd/egress-v6-ipam"
      },
      "pluginLogFile": "/var/log/aws-routed-eni/egress-v6-plugin.log",
      "pluginLogLevel": "DEBUG"
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true},
      "snat": true
    }
  ]
}
"#;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("meshinit-cli-{name}-{}", std::process::id()));
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
    fn list_text(&self) -> String {
        std::fs::read_to_string(self.conflist()).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn meshinit(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(MESHINIT);
    command.args(args).env_remove("CNI_COMMAND");
    for (flag, path) in paths {
        command.arg(flag).arg(path);
    }
    command.output().expect("run meshinit")
}

fn install(scratch: &Scratch, extra: &[&str]) -> Output {
    let mut args = vec!["cni", "install"];
    args.extend(extra);
    meshinit(
        &args,
        &[
            ("--conflist", &scratch.conflist()),
            ("--bin-dir", &scratch.bin()),
        ],
    )
}

const FLAGS: [&str; 8] = [
    "--ignored-uid",
    "1337",
    "--proxy-egress-port",
    "15001",
    "--proxy-ingress-port",
    "15000",
    "--app-ports",
    "8080,8081",
];

#[test]
fn install_appends_keeps_other_bytes_is_idempotent_and_uninstall_restores() {
    let scratch = Scratch::new("roundtrip");
    let first = install(&scratch, &FLAGS);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let installed = scratch.list_text();
    // Every byte up to the end of portmap's entry, and the closing tail, are the original.
    let portmap_end = AWS_CONFLIST
        .rfind('}')
        .and_then(|end| AWS_CONFLIST[..end].rfind('}'))
        .unwrap()
        + 1;
    assert_eq!(&installed[..portmap_end], &AWS_CONFLIST[..portmap_end]);
    assert!(installed.ends_with("\n  ]\n}\n"), "{installed}");
    let value: serde_json::Value = serde_json::from_str(&installed).unwrap();
    assert_eq!(
        value["plugins"][3],
        serde_json::json!({
            "type": "meshinit", "ignoredUID": "1337", "proxyIngressPort": "15000",
            "proxyEgressPort": "15001", "appPorts": ["8080", "8081"]
        })
    );
    // The binary copied is this very executable, runnable from its new place.
    let copied = scratch.bin().join("meshinit");
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        std::fs::read(MESHINIT).unwrap()
    );
    let version = Command::new(&copied).arg("--version").output().unwrap();
    let version: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));

    let modified = std::fs::metadata(scratch.conflist())
        .unwrap()
        .modified()
        .unwrap();
    let second = install(&scratch, &FLAGS);
    assert!(second.status.success());
    assert_eq!(
        scratch.list_text(),
        installed,
        "a second run changes no byte"
    );
    assert_eq!(
        std::fs::metadata(scratch.conflist())
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("already up to date"));

    let removed = meshinit(
        &["cni", "uninstall"],
        &[
            ("--conflist", &scratch.conflist()),
            ("--bin-dir", &scratch.bin()),
        ],
    );
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert_eq!(
        scratch.list_text(),
        AWS_CONFLIST,
        "uninstall restores the original bytes"
    );
    assert!(!copied.exists());
}

#[test]
fn an_entry_file_and_the_drop_in_type() {
    let scratch = Scratch::new("entry");
    let entry = scratch.0.join("entry.json");
    std::fs::write(
        &entry,
        r#"{"proxyEgressPort": "15001", "ignoredUID": "1337", "egressIgnoredIPs": ["10.0.0.0/8"]}"#,
    )
    .unwrap();
    let output = meshinit(
        &[
            "cni",
            "install",
            "--type",
            "aws-appmesh",
            "--ignored-gid",
            "1337",
        ],
        &[
            ("--conflist", &scratch.conflist()),
            ("--bin-dir", &scratch.bin()),
            ("--entry", &entry),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(&scratch.list_text()).unwrap();
    assert_eq!(
        value["plugins"][3],
        serde_json::json!({
            "type": "aws-appmesh", "ignoredUID": "1337", "ignoredGID": "1337",
            "proxyEgressPort": "15001", "egressIgnoredIPs": ["10.0.0.0/8"]
        })
    );
    assert!(scratch.bin().join("aws-appmesh").exists());
}

/// Flags, path flags, and what the error must mention.
type BadInstall<'a> = (Vec<&'a str>, Vec<(&'a str, PathBuf)>, &'a str);

#[test]
fn bad_input_exits_2_and_touches_nothing() {
    let scratch = Scratch::new("bad");
    let entry = scratch.0.join("entry.json");
    std::fs::write(
        &entry,
        r#"{"proxyEgressPort": "15001", "ignoredUid": "1337"}"#,
    )
    .unwrap();
    let cases: Vec<BadInstall> = vec![
        (vec!["--ignored-uid", "1337"], vec![], "proxyEgressPort"),
        (
            vec!["--ignored-uid", "x", "--proxy-egress-port", "15001"],
            vec![],
            "\"x\"",
        ),
        (vec![], vec![("--entry", entry.clone())], "ignoredUID"),
        (
            vec![
                "--ignored-uid",
                "1337",
                "--proxy-egress-port",
                "15001",
                "--type",
                "../sh",
            ],
            vec![],
            "--type",
        ),
        (
            vec!["--ignored-uid", "1337", "--proxy-egress-port", "15001"],
            vec![("--entry", scratch.0.join("missing.json"))],
            "--entry",
        ),
    ];
    let (conflist, bin) = (scratch.conflist(), scratch.bin());
    for (flags, paths, expected) in cases {
        let mut args = vec!["cni", "install"];
        args.extend(&flags);
        let mut all: Vec<(&str, &Path)> = vec![("--conflist", &conflist), ("--bin-dir", &bin)];
        all.extend(paths.iter().map(|(f, p)| (*f, p.as_path())));
        let output = meshinit(&args, &all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{flags:?}: {expected} in {stderr}"
        );
        assert_eq!(
            scratch.list_text(),
            AWS_CONFLIST,
            "{flags:?}: the list is untouched"
        );
        assert!(
            !scratch.bin().join("meshinit").exists(),
            "{flags:?}: no binary copied"
        );
    }

    // A list that is not one: exit 2, left as it was, nothing copied.
    for (text, expected) in [
        ("{\"plugins\": [", "not valid JSON"),
        (
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "bridge"}"#,
            "single plugin",
        ),
    ] {
        std::fs::write(scratch.conflist(), text).unwrap();
        let output = install(&scratch, &FLAGS);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert_eq!(scratch.list_text(), text);
        assert!(!scratch.bin().join("meshinit").exists());
    }
    std::fs::remove_file(scratch.conflist()).unwrap();
    let output = install(&scratch, &FLAGS);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--conflist"));
}

#[test]
fn watch_installs_when_the_list_appears_reinstalls_and_uninstalls_on_sigterm() {
    let scratch = Scratch::new("watch");
    std::fs::remove_file(scratch.conflist()).unwrap();
    let mut child = Command::new(MESHINIT)
        .args(["cni", "install", "--watch", "100ms"])
        .args(FLAGS)
        .arg("--conflist")
        .arg(scratch.conflist())
        .arg("--bin-dir")
        .arg(scratch.bin())
        .env_remove("CNI_COMMAND")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meshinit cni install --watch");
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Its log, collected as it comes, so the test can wait for what it says.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let collector = {
        let log = std::sync::Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let has_entry =
        || std::fs::read_to_string(scratch.conflist()).is_ok_and(|t| t.contains("\"meshinit\""));
    // The interface plugin's agent writes its list later: the entry follows once the
    // watcher has found no list.
    wait_for("the watcher has found no list and will retry", &|| {
        log.lock().unwrap().contains("will retry")
    });
    assert!(!has_entry(), "no list, no entry");
    std::fs::write(scratch.conflist(), AWS_CONFLIST).unwrap();
    wait_for("the entry is installed", &has_entry);
    assert!(scratch.bin().join("meshinit").exists());
    // The agent rewrites its list: the entry comes back.
    std::fs::write(scratch.conflist(), AWS_CONFLIST).unwrap();
    wait_for("the entry is installed again", &has_entry);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "--watch did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    collector.join().unwrap();
    let stderr = log.lock().unwrap().clone();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        scratch.list_text(),
        AWS_CONFLIST,
        "SIGTERM uninstalled: {stderr}"
    );
    assert!(!scratch.bin().join("meshinit").exists());
}

#[test]
fn cni_without_a_subcommand_is_still_the_plugin() {
    let output = Command::new(MESHINIT)
        .arg("cni")
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["code"], 4, "CNI_COMMAND missing: {error}");

    let version = Command::new(MESHINIT)
        .arg("cni")
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(version.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap();
    assert!(
        answer["supportedVersions"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
    );
}

#[test]
fn kubernetes_entries_declare_pod_annotations_and_hold_only_defaults() {
    let scratch = Scratch::new("kubernetes");
    // Without --kubernetes an entry must be complete: it applies to every pod.
    let incomplete = install(&scratch, &["--egress-ignored-ports", "5432"]);
    assert_eq!(incomplete.status.code(), Some(2));
    assert_eq!(scratch.list_text(), AWS_CONFLIST, "nothing written");

    let run = install(
        &scratch,
        &["--kubernetes", "--egress-ignored-ports", "5432"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(&scratch.list_text()).unwrap();
    assert_eq!(
        value["plugins"][3],
        serde_json::json!({
            "type": "meshinit", "egressIgnoredPorts": ["5432"],
            "capabilities": {"io.kubernetes.cri.pod-annotations": true}
        })
    );
    // What the defaults hold must still be valid.
    let bad = install(&scratch, &["--kubernetes", "--proxy-egress-port", "99999"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("99999"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
