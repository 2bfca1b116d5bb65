//! The iptables-save / iptables-restore binaries of one backend and family.

use std::path::PathBuf;
use std::time::Duration;

use tracing::{debug, info};

use crate::backend::BackendKind;
use crate::backend::program::{self, TimeBudget};
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
        let suffix = match kind {
            BackendKind::IptablesLegacy => "legacy",
            // Only the two iptables kinds build an `IptablesBackend`.
            BackendKind::IptablesNft | BackendKind::Nftables => "nft",
        };
        let find = |verb: &str| {
            let name = format!("{stem}-{suffix}-{verb}");
            which::which(&name).map_err(|_| {
                Error::BackendNotInstalled(format!(
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
    pub fn save_nat(&self, budget: &TimeBudget) -> Result<String> {
        let output = program::run(&self.save, &["-t", "nat"], None, budget)?;
        String::from_utf8(output.stdout)
            .map_err(|_| Error::Other(format!("{} printed non-UTF-8 output", self.save.display())))
    }

    /// Commits `payload` in one transaction with `iptables-restore --noflush`.
    pub fn restore(&self, payload: &str, budget: &TimeBudget) -> Result<()> {
        self.run_restore(payload, &[], budget)
    }

    /// Checks `payload` with `iptables-restore --noflush --test`, committing nothing.
    pub fn test(&self, payload: &str, budget: &TimeBudget) -> Result<()> {
        self.run_restore(payload, &["--test"], budget)
    }

    fn run_restore(&self, payload: &str, extra: &[&str], budget: &TimeBudget) -> Result<()> {
        if self.kind == BackendKind::IptablesLegacy {
            wait_for_xtables_lock(&self.restore, budget)?;
        }
        // Whole seconds only; the lock is already free (see above), so this rarely waits.
        let wait = budget.lock_wait_left().as_secs().max(1).to_string();
        let mut args = vec!["--noflush", "--wait", wait.as_str()];
        args.extend_from_slice(extra);
        debug!(program = %self.restore.display(), ?args, "sending:\n{payload}");
        program::run(&self.restore, &args, Some(payload), budget).map(drop)
    }
}

/// Waits, until the budget's lock deadline, for no other process to hold the legacy xtables
/// lock, saying so when it has to wait. iptables' own `--wait` counts whole seconds, so
/// without this a 500 ms limit would become a second, and a second wait another.
fn wait_for_xtables_lock(restore: &std::path::Path, budget: &TimeBudget) -> Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{Flock, FlockArg};
    let path = std::env::var("XTABLES_LOCKFILE").unwrap_or_else(|_| "/run/xtables.lock".into());
    let mut said_waiting = false;
    loop {
        let Ok(file) = std::fs::OpenOptions::new().read(true).open(&path) else {
            return Ok(()); // no lock file: nobody holds it
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_released_on_drop) => return Ok(()),
            Err((_, Errno::EWOULDBLOCK)) => {}
            Err(_) => return Ok(()), // let iptables report what it finds
        }
        let left = budget.lock_wait_left();
        if left.is_zero() {
            return Err(Error::LockTimeout {
                program: restore
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                status: "not started".into(),
                stderr: format!(
                    "another process held the xtables lock ({path}) for longer than \
                     --lock-timeout while meshinit was waiting for it"
                ),
            });
        }
        if !said_waiting {
            info!(lock = %path, wait = ?left, "another process holds the xtables lock; waiting for it");
            said_waiting = true;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}
