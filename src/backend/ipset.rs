//! ipsets for long exclusion lists, loaded atomically: the members go into a temporary set
//! that is then swapped with the live one, so a rule never matches a half-filled set.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::iptables::{command_failed, run_with_input};
use crate::error::{Error, Result};
use crate::ruleset::{IpSet, OWN_PREFIX, SetKind};

#[derive(Debug, Clone)]
pub struct IpsetTool {
    pub path: PathBuf,
}

impl IpsetTool {
    /// `None` when ipset is not installed; only long lists need it.
    pub fn find() -> Option<Self> {
        which::which("ipset").ok().map(|path| IpsetTool { path })
    }

    pub fn require() -> Result<Self> {
        Self::find().ok_or_else(|| {
            Error::Environment(
                "a long exclusion list needs ipset, which is not installed \
                 (Debian/Ubuntu: apt-get install ipset)"
                    .into(),
            )
        })
    }

    /// The members of our sets (`APPMESH_*`), as `ipset save` prints them.
    pub fn own_sets(&self) -> Result<Vec<(String, Vec<String>)>> {
        let output = Command::new(&self.path)
            .arg("save")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("running ipset save", e))?;
        if !output.status.success() {
            return Err(command_failed(&self.path, &output.status, &output.stderr));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut sets: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("create"), Some(name), _) if name.starts_with(OWN_PREFIX) => {
                    sets.push((name.to_owned(), Vec::new()));
                }
                (Some("add"), Some(name), Some(member)) => {
                    if let Some((_, members)) = sets.iter_mut().find(|(n, _)| n == name) {
                        members.push(member.to_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(sets)
    }

    /// The names of our sets (`APPMESH_*`), without reading their members.
    pub fn own_set_names(&self) -> Result<Vec<String>> {
        let output = Command::new(&self.path)
            .args(["list", "-n"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("running ipset list -n", e))?;
        if !output.status.success() {
            return Err(command_failed(&self.path, &output.status, &output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|name| name.starts_with(OWN_PREFIX))
            .map(str::to_owned)
            .collect())
    }

    /// Runs one `ipset restore` transaction.
    pub fn restore(&self, payload: &str) -> Result<()> {
        run_with_input(&self.path, &["restore"], payload)
    }
}

/// The `ipset restore` payload that leaves each desired set holding exactly its members.
pub fn load_payload(sets: &[IpSet], existing: &[String]) -> String {
    let mut out = String::new();
    for set in sets {
        let create = create_line(set);
        if !existing.contains(&set.name) {
            // A set that does not exist yet is referenced by no rule: fill it directly.
            let _ = writeln!(out, "create {} {create}", set.name);
            for member in &set.members {
                let _ = writeln!(out, "add {} {member}", set.name);
            }
            continue;
        }
        let staging = format!("{}_NEW", set.name);
        let _ = writeln!(out, "create {staging} {create} -exist");
        let _ = writeln!(out, "flush {staging}");
        for member in &set.members {
            let _ = writeln!(out, "add {staging} {member}");
        }
        let _ = writeln!(out, "swap {staging} {}", set.name);
        let _ = writeln!(out, "destroy {staging}");
    }
    out
}

/// `destroy` lines for sets that are ours but no longer wanted; run after the rules that
/// referenced them are gone (a referenced set cannot be destroyed).
pub fn destroy_payload(stale: &[&str]) -> String {
    stale
        .iter()
        .map(|name| format!("destroy {name}\n"))
        .collect()
}

fn create_line(set: &IpSet) -> String {
    match set.kind {
        // Sized up front: growing the hash while loading costs more than the entries do.
        SetKind::Networks => format!(
            "hash:net family {} hashsize {} maxelem {}",
            set.family.ipset_family(),
            set.members.len().next_power_of_two().clamp(1024, 1 << 20),
            set.members.len().max(65536)
        ),
        SetKind::Ports => "bitmap:port range 0-65535".to_owned(),
    }
}
