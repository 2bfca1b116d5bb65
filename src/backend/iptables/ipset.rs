//! ipsets for long exclusion lists. A set is named after its content and filled under a
//! staging name that is renamed when complete (see `ruleset::sets`), so loading never
//! touches a set a rule already matches, and a set under its final name is always whole.

use std::fmt::Write;
use std::path::PathBuf;

use crate::backend::program::{self, TimeBudget};
use crate::error::{Error, Result};
use crate::ruleset::sets::{is_own_set, staging_name};
use crate::ruleset::{IpSet, SetMembers};

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

    /// The members of our sets, as `ipset save` prints them.
    pub fn own_sets(&self, budget: &TimeBudget) -> Result<Vec<(String, Vec<String>)>> {
        let output = program::run(&self.path, &["save"], None, budget)?;
        let text = String::from_utf8_lossy(&output.stdout);
        let mut sets: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("create"), Some(name), _) if is_own_set(name) => {
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

    /// The names of our sets, without reading their members.
    pub fn own_set_names(&self, budget: &TimeBudget) -> Result<Vec<String>> {
        let output = program::run(&self.path, &["list", "-n"], None, budget)?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|name| is_own_set(name))
            .map(str::to_owned)
            .collect())
    }

    /// Runs one `ipset restore` transaction.
    pub fn restore(&self, payload: &str, budget: &TimeBudget) -> Result<()> {
        program::run(&self.path, &["restore"], Some(payload), budget).map(drop)
    }

    /// Destroys one set; `Ok(false)` when a rule (someone else's) still uses it.
    pub fn destroy(&self, name: &str, budget: &TimeBudget) -> Result<bool> {
        match program::run(&self.path, &["destroy", name], None, budget) {
            Ok(_) => Ok(true),
            // ipset says so only in words (its exit status is 1 for every error).
            Err(Error::CommandFailed { stderr, .. }) if stderr.contains("in use") => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The `ipset restore` payload that creates each of `sets` missing from `existing`: filled
/// under its staging name, then renamed. A staging set a crash left behind is flushed first.
pub fn load_payload(sets: &[IpSet], existing: &[String]) -> String {
    let mut out = String::new();
    for set in sets.iter().filter(|s| !existing.contains(&s.name)) {
        let staging = staging_name(&set.name);
        let _ = writeln!(out, "create {staging} {} -exist", create_line(set));
        let _ = writeln!(out, "flush {staging}");
        for member in member_texts(&set.members) {
            let _ = writeln!(out, "add {staging} {member}");
        }
        let _ = writeln!(out, "rename {staging} {}", set.name);
    }
    out
}

/// Members as `ipset save` prints them: a host network as its bare address, a port range
/// as `first-last`.
pub fn member_texts(members: &SetMembers) -> Vec<String> {
    match members {
        SetMembers::Networks(nets) => nets
            .iter()
            // hash:net cannot hold a /0: the two halves of the address space say the same.
            .flat_map(|net| match net.prefix_len() {
                0 => net
                    .subnets(1)
                    .map(|halves| halves.collect())
                    .unwrap_or_default(),
                _ => vec![net],
            })
            .map(|net| {
                if net.prefix_len() == net.max_prefix_len() {
                    net.addr().to_string()
                } else {
                    net.to_string()
                }
            })
            .collect(),
        SetMembers::Ports(ports) => ports
            .iter()
            .map(|r| {
                if r.first == r.last {
                    r.first.to_string()
                } else {
                    format!("{}-{}", r.first, r.last)
                }
            })
            .collect(),
    }
}

fn create_line(set: &IpSet) -> String {
    match &set.members {
        // Sized up front: growing the hash while loading costs more than the entries do.
        SetMembers::Networks(_) => format!(
            "hash:net family {} hashsize {} maxelem {}",
            set.family.ipset_family(),
            set.members.len().next_power_of_two().clamp(1024, 1 << 20),
            set.members.len().max(65536)
        ),
        SetMembers::Ports(_) => "bitmap:port range 0-65535".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::Networks;

    #[test]
    fn members_are_spelled_as_ipset_takes_them() {
        let v4 = ["10.0.0.1/32", "10.1.0.0/16", "0.0.0.0/0"].map(|n| n.parse().unwrap());
        assert_eq!(
            member_texts(&SetMembers::Networks(Networks::V4(v4.to_vec()))),
            ["10.0.0.1", "10.1.0.0/16", "0.0.0.0/1", "128.0.0.0/1"]
        );
        let v6 = ["2001:db8::/32", "2001:db8:1::1/128"].map(|n| n.parse().unwrap());
        assert_eq!(
            member_texts(&SetMembers::Networks(Networks::V6(v6.to_vec()))),
            ["2001:db8::/32", "2001:db8:1::1"]
        );
    }
}
