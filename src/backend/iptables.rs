//! The iptables-save / iptables-restore binaries of one backend and family.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tracing::debug;

use super::BackendKind;
use crate::error::{Error, Result};
use crate::ruleset::Family;

/// The save/restore pair for one backend and family, resolved on `PATH`.
#[derive(Debug, Clone)]
pub struct IptablesTools {
    pub kind: BackendKind,
    pub family: Family,
    pub save: PathBuf,
    pub restore: PathBuf,
}

impl IptablesTools {
    /// Finds `iptables-nft-save` & co. Only the backend-specific names are used: the generic
    /// `iptables-restore` may be either backend, and mixing backends hides rules.
    pub fn find(kind: BackendKind, family: Family) -> Result<Self> {
        let stem = match family {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        };
        let suffix = kind.binary_infix();
        let find = |verb: &str| {
            let name = format!("{stem}-{suffix}-{verb}");
            which::which(&name).map_err(|_| {
                Error::Environment(format!(
                    "{name} is not installed (or not on PATH); install iptables \
                     (Debian/Ubuntu: apt-get install iptables)"
                ))
            })
        };
        Ok(IptablesTools {
            kind,
            family,
            save: find("save")?,
            restore: find("restore")?,
        })
    }

    /// `iptables-save -t nat`.
    pub fn save_nat(&self) -> Result<String> {
        let output = Command::new(&self.save)
            .args(["-t", "nat"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("running {}", self.save.display()), e))?;
        if !output.status.success() {
            return Err(command_failed(&self.save, &output.status, &output.stderr));
        }
        String::from_utf8(output.stdout)
            .map_err(|_| Error::Other(format!("{} printed non-UTF-8 output", self.save.display())))
    }

    /// Commits `payload` in one transaction with `iptables-restore --noflush`, waiting at
    /// most `lock_wait` for the xtables lock.
    pub fn restore(&self, payload: &str, lock_wait: Duration) -> Result<()> {
        let wait = lock_wait.as_secs().max(1).to_string();
        let args = ["--noflush", "--wait", wait.as_str()];
        debug!(program = %self.restore.display(), ?args, "committing:\n{payload}");
        run_with_input(&self.restore, &args, payload)
    }
}

pub(super) fn run_with_input(program: &PathBuf, args: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A child that dies early closes its stdin; its exit status says why, so a write error
    // here is not the error to report.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let output = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("waiting for {}", program.display()), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(command_failed(program, &output.status, &output.stderr))
    }
}

pub(super) fn command_failed(
    program: &std::path::Path,
    status: &std::process::ExitStatus,
    stderr: &[u8],
) -> Error {
    Error::CommandFailed {
        program: program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        status: status.to_string(),
        stderr: String::from_utf8_lossy(stderr).trim().to_owned(),
    }
}
