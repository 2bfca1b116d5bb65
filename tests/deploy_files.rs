//! The deployment files in deploy/ are valid and say what meshinit accepts:
//! - Kubernetes manifests pass `yamllint` and `kubernetes-validate --strict` (the Kubernetes
//!   schemas, offline), and a misspelled field fails the same check;
//! - the init container's environment and the DaemonSet's entry and arguments are accepted
//!   by this meshinit (render; the DaemonSet's cni install --watch and its SIGTERM on a scratch list);
//! - the ECS task definition renders, and its meshinit container's environment renders
//!   exactly the same rules as its proxyConfiguration, with the container ordering and
//!   capabilities docs/deploying.md promises.
//!
//! The Python validators live in target/pytools (scripts/test.sh installs them from PyPI);
//! without them the Kubernetes checks skip outside CI and fail in CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const MESHINIT: &str = env!("CARGO_BIN_EXE_meshinit");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const MANIFESTS: [&str; 2] = [
    "deploy/kubernetes/init-container-pod.yaml",
    "deploy/kubernetes/cni-daemonset.yaml",
];

/// A meshed pod for the CNI DaemonSet: validated, kept apart from `MANIFESTS` (whose
/// documents are read by kind).
const CNI_MODE_POD: &str = "deploy/kubernetes/cni-mode-pod.yaml";

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

fn python_tool(name: &str) -> Option<PathBuf> {
    let path = repo("target/pytools/bin").join(name);
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is missing: run scripts/test.sh, which installs kubernetes-validate and yamllint there",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}; CI=true forbids skipping");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    None
}

fn run(mut command: Command) -> Output {
    command.output().expect("run a command")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn kubernetes_manifests_pass_yamllint_and_the_kubernetes_schemas() {
    let (Some(yamllint), Some(validate)) =
        (python_tool("yamllint"), python_tool("kubernetes-validate"))
    else {
        return;
    };
    let mut lint = Command::new(yamllint);
    lint.arg("--strict")
        .arg("-c")
        .arg(repo("deploy/.yamllint.yaml"))
        .arg(repo("deploy"));
    let output = run(lint);
    assert!(
        output.status.success(),
        "yamllint:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );

    let mut check = Command::new(&validate);
    check
        .arg("--strict")
        .args(MANIFESTS.map(repo))
        .arg(repo(CNI_MODE_POD));
    let output = run(check);
    let report = text(&output.stdout) + &text(&output.stderr);
    assert!(output.status.success(), "kubernetes-validate:\n{report}");
    for resource in [
        "deployment/web",
        "deployment/web-cni",
        "daemonset/meshinit-cni",
        "configmap/meshinit-cni-entry",
    ] {
        assert!(
            report.contains(&format!("passed for resource {resource}")),
            "{resource} was validated:\n{report}"
        );
    }

    // The validator does catch a misspelled field: the check above can fail.
    let broken = std::env::temp_dir().join(format!("meshinit-broken-{}.yaml", std::process::id()));
    let original = std::fs::read_to_string(repo(MANIFESTS[0])).unwrap();
    std::fs::write(
        &broken,
        original.replacen("securityContext:", "securityContxt:", 1),
    )
    .unwrap();
    let mut check = Command::new(&validate);
    check.arg("--strict").arg(&broken);
    let output = run(check);
    let _ = std::fs::remove_file(&broken);
    assert!(
        !output.status.success(),
        "a misspelled field must fail validation:\n{}",
        text(&output.stdout)
    );
}

/// The manifests' documents by kind, read with the validators' own YAML parser.
fn manifests_by_kind() -> Option<Value> {
    let python = python_tool("python3")?;
    let mut read = Command::new(python);
    read.arg("-c")
        .arg(
            "import json, sys, yaml\n\
             docs = {}\n\
             for path in sys.argv[1:]:\n    \
                 for doc in yaml.safe_load_all(open(path)):\n        \
                     docs[doc['kind']] = doc\n\
             print(json.dumps(docs))",
        )
        .args(MANIFESTS.map(repo));
    let output = run(read);
    assert!(output.status.success(), "{}", text(&output.stderr));
    Some(serde_json::from_slice(&output.stdout).expect("JSON from the YAML reader"))
}

#[test]
fn the_manifests_meshinit_settings_are_accepted_by_meshinit() {
    let Some(docs) = manifests_by_kind() else {
        return;
    };
    // The init container: its arguments and environment render.
    let pod = &docs["Deployment"]["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "meshinit");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let caps = &init["securityContext"]["capabilities"];
    assert_eq!(caps["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        caps["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW", "SETUID", "SETGID"])
    );
    let args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["apply", "--from-env", "--verify"]);
    let mut render = Command::new(MESHINIT);
    render.args(["render", "--from-env"]).env_clear();
    for var in init["env"].as_array().unwrap() {
        render.env(
            var["name"].as_str().unwrap(),
            var["value"].as_str().unwrap(),
        );
    }
    let output = run(render);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("--dports 9080 -j REDIRECT --to-ports 15000"));

    // The DaemonSet: its install arguments (less --watch) and preStop command, run against
    // a scratch copy of the node's directories.
    let daemonset = &docs["DaemonSet"]["spec"]["template"]["spec"];
    assert_eq!(daemonset["automountServiceAccountToken"], false);
    let container = &daemonset["containers"][0];
    let scratch = std::env::temp_dir().join(format!("meshinit-daemonset-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    for dir in ["host/etc/cni/net.d", "host/opt/cni/bin", "config"] {
        std::fs::create_dir_all(scratch.join(dir)).unwrap();
    }
    let original = std::fs::read_to_string(repo("examples/appmesh.conflist"))
        .unwrap()
        .replace("\"type\": \"meshinit\"", "\"type\": \"bandwidth\"");
    let conflist = scratch.join("host/etc/cni/net.d/10-aws.conflist");
    std::fs::write(&conflist, &original).unwrap();
    let entry = docs["ConfigMap"]["data"]["entry.json"].as_str().unwrap();
    std::fs::write(scratch.join("config/entry.json"), entry).unwrap();
    let relocated = |arg: &Value| {
        let arg = arg.as_str().unwrap();
        let root = scratch.display().to_string();
        arg.replace("=/host/", &format!("={root}/host/"))
            .replace("=/config/", &format!("={root}/config/"))
    };
    let install_args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(relocated)
        .collect();
    assert!(install_args.starts_with(&["cni".to_owned(), "install".to_owned()]));
    assert!(install_args.iter().any(|a| a.starts_with("--watch")));
    // No preStop: an uninstall there knows no installer, so during a rolling update
    // (the new pod starts first) it would take away the new pod's entry. The container's
    // SIGTERM uninstalls what that pod's installer owns (tests/cni_install_node.rs).
    assert!(
        container["lifecycle"].is_null(),
        "{}",
        container["lifecycle"]
    );
    let rolling = &docs["DaemonSet"]["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(
        (&rolling["maxSurge"], &rolling["maxUnavailable"]),
        (&Value::from(1), &Value::from(0)),
        "the new pod starts before the old one stops"
    );
    let watcher = Command::new(MESHINIT)
        .args(&install_args)
        .env_remove("CNI_COMMAND")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let binary = scratch.join("host/opt/cni/bin/meshinit");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let installed = loop {
        let list = std::fs::read_to_string(&conflist).unwrap();
        let value: Value = serde_json::from_str(&list).unwrap();
        if value["plugins"][2]["type"] == "meshinit" && binary.exists() {
            break value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not installed: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(installed["plugins"][2]["type"], "meshinit");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watcher.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = watcher.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(std::fs::read_to_string(&conflist).unwrap(), original);
    assert!(!binary.exists());
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn the_ecs_task_definition_renders_and_orders_its_containers() {
    let path = repo("deploy/ecs/taskdef-ec2.json");
    let output = run({
        let mut c = Command::new(MESHINIT);
        c.arg("render").arg(&path);
        c
    });
    assert!(output.status.success(), "{}", text(&output.stderr));
    let from_proxy_configuration = text(&output.stdout);

    let taskdef: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        taskdef["requiresCompatibilities"],
        serde_json::json!(["EC2"])
    );
    assert_eq!(taskdef["networkMode"], "awsvpc");
    let containers = taskdef["containerDefinitions"].as_array().unwrap();
    let named = |name: &str| {
        containers
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} container"))
    };
    let meshinit = named("meshinit");
    assert_eq!(meshinit["essential"], false);
    let added = meshinit["linuxParameters"]["capabilities"]["add"]
        .as_array()
        .unwrap();
    for cap in ["NET_ADMIN", "NET_RAW"] {
        assert!(added.iter().any(|c| c == cap), "{cap} added");
    }
    for dependent in ["envoy", "app"] {
        let depends = named(dependent)["dependsOn"].as_array().unwrap();
        assert!(
            depends
                .iter()
                .any(|d| d["containerName"] == "meshinit" && d["condition"] == "SUCCESS"),
            "{dependent} waits for meshinit's success"
        );
    }
    assert_eq!(named("envoy")["user"], "1337");

    // The container's settings are the proxyConfiguration's: the same rules, byte for byte.
    let mut render = Command::new(MESHINIT);
    render.args(["render", "--from-env"]).env_clear();
    for var in meshinit["environment"].as_array().unwrap() {
        render.env(
            var["name"].as_str().unwrap(),
            var["value"].as_str().unwrap(),
        );
    }
    let output = run(render);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), from_proxy_configuration);
}
