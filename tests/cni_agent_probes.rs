//! The ECS agent's startup probes (`PLUGIN --capabilities`, `PLUGIN --version`), answered
//! whatever name meshinit is installed under and parsed as the agent parses them
//! (amazon-ecs-agent `agent/ecscni/plugin.go`: Go's `encoding/json` into the structs below).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::MESHINIT;
use serde::Deserialize;

/// `struct { Capabilities []string `json:"capabilities,omitempty"` }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentCapabilities {
    #[serde(default)]
    capabilities: Vec<String>,
}

/// `struct { Version, GitShortHash, Built string }` with the JSON names the agent uses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentVersion {
    version: String,
    #[serde(rename = "gitShortHash")]
    git_short_hash: String,
    built: String,
}

/// A private directory holding copies of meshinit under the names the agent may run.
struct Installed {
    dir: PathBuf,
}

impl Installed {
    fn new() -> Installed {
        let dir = std::env::temp_dir().join(format!("meshinit-probes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["aws-appmesh", "meshinit"] {
            std::fs::copy(MESHINIT, dir.join(name)).unwrap();
        }
        Installed { dir }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `plugin FLAG` as the agent does: no CNI_* variable, nothing on stdin.
fn probe(plugin: &Path, flag: &str) -> Vec<u8> {
    let output = Command::new(plugin)
        .arg(flag)
        .env_remove("CNI_COMMAND")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} {flag} exits {:?}: {}",
        plugin.display(),
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn the_agents_probes_get_json_whatever_the_installed_name() {
    let installed = Installed::new();
    for name in ["aws-appmesh", "meshinit"] {
        let plugin = installed.dir.join(name);
        let capabilities: AgentCapabilities =
            serde_json::from_slice(&probe(&plugin, "--capabilities"))
                .unwrap_or_else(|e| panic!("{name} --capabilities: {e}"));
        assert!(capabilities.capabilities.is_empty(), "{capabilities:?}");
        let version: AgentVersion = serde_json::from_slice(&probe(&plugin, "--version"))
            .unwrap_or_else(|e| panic!("{name} --version: {e}"));
        assert_eq!(version.version, env!("CARGO_PKG_VERSION"), "{name}");
        let _ = (version.git_short_hash, version.built);
        // Go's flag package takes one dash too, and the AWS plugin is a Go program.
        let _: AgentCapabilities =
            serde_json::from_slice(&probe(&plugin, "-capabilities")).unwrap();
        let _: AgentVersion = serde_json::from_slice(&probe(&plugin, "-version")).unwrap();
    }
}
