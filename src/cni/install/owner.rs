//! Who installed meshinit into a list: one installer at a time owns it, and its record (a
//! hidden file beside the list) says who, since when, with which type and settings, and
//! what meshinit replaced. Installers take a lock on the list's directory around each
//! install or uninstall, so one never sees another's half-done steps.
//!
//! The newest running installer (latest start) owns the list; an older one stands down
//! instead of writing its settings back (two DaemonSets, or the old pod during a rolling
//! update), and on stopping removes nothing unless it still owns the list. The owner holds a
//! shared flock on its record for as long as it runs, so a record whose installer is gone
//! (killed, or a one-shot install that finished, or a clock that went back across a reboot)
//! is known to be stale whatever its start time says, and the next installer takes over.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::files::{self, ReadError};
use crate::error::{ConfigError, Error, Result};

/// The longest an install or uninstall waits for another one on the same directory (each
/// takes milliseconds; a holder stuck this long is not going to finish).
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// One `cni install` process: a random identity, when it started, and the lock it holds
/// on its record while it owns the list.
#[derive(Debug)]
pub struct Installer {
    pub id: String,
    /// Start time, nanoseconds since the epoch.
    pub started: u64,
    held: Mutex<Option<(u64, File)>>,
}

impl Installer {
    pub fn new() -> Installer {
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let id = getrandom::u64().unwrap_or(started ^ u64::from(std::process::id()));
        Installer {
            id: format!("{id:016x}"),
            started,
            held: Mutex::new(None),
        }
    }

    /// Whether the record's installer started after this one (ties broken by identity).
    pub(super) fn is_older_than(&self, record: &OwnerRecord) -> bool {
        (record.started, record.installer.as_str()) > (self.started, self.id.as_str())
    }

    /// Holds a shared lock on the record at `conflist` (this installer's), so others see
    /// that its owner runs; the lock on a replaced record is let go.
    pub(super) fn hold(&self, conflist: &Path) -> Result<()> {
        let path = record_path(conflist);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let ino = std::fs::metadata(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .ino();
        if held.as_ref().is_some_and(|(i, _)| *i == ino) {
            return Ok(());
        }
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        // SAFETY: flock on an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(Error::io(format!("locking {}", path.display()), e));
        }
        *held = Some((ino, file));
        Ok(())
    }
}

impl Default for Installer {
    fn default() -> Self {
        Installer::new()
    }
}

/// Whether the installer that wrote the record at `conflist` still runs (holds its lock).
/// Called under the directory lock, as every taking of a record lock is.
pub(super) fn owner_runs(conflist: &Path) -> bool {
    let Ok(file) = File::open(record_path(conflist)) else {
        return false;
    };
    // SAFETY: flock on an open descriptor; the lock goes with the descriptor at return.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !free
}

/// What meshinit replaced when it took the place of a plugin it did not install.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Original {
    /// The replaced binary, kept under this name in the bin directory.
    pub binary: Option<String>,
    /// The whole list before meshinit's entry replaced the original entry.
    pub list: Option<String>,
}

/// The record beside the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct OwnerRecord {
    pub installer: String,
    pub started: u64,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The entry it installs (what an installer standing down reports).
    pub entry: Value,
    #[serde(default)]
    pub original: Option<Original>,
}

impl OwnerRecord {
    pub(super) fn is(&self, installer: &Installer) -> bool {
        self.installer == installer.id && self.started == installer.started
    }
}

/// The record's path: `.LIST.meshinit-owner` beside the list (runtimes read only `.conf`,
/// `.conflist` and `.json` files).
pub(super) fn record_path(conflist: &Path) -> PathBuf {
    let name = conflist
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    conflist.with_file_name(format!(".{name}.meshinit-owner"))
}

/// The record, or `None` when there is none. An unreadable one is an error: guessing
/// ownership could remove another installer's entry.
pub(super) fn read_record(conflist: &Path) -> Result<Option<OwnerRecord>> {
    let path = record_path(conflist);
    let file = match files::read_regular(&path, files::LIST_SIZE_LIMIT * 2 + 4096) {
        Ok(file) => file,
        Err(ReadError::Missing) => return Ok(None),
        Err(e) => {
            return Err(Error::Other(format!(
                "{}: {}",
                path.display(),
                e.describe(files::LIST_SIZE_LIMIT)
            )));
        }
    };
    serde_json::from_slice(&file.bytes).map(Some).map_err(|e| {
        Error::Other(format!(
            "{}: not a meshinit owner record ({e}); remove it to let an installer take over",
            path.display()
        ))
    })
}

pub(super) fn write_record(conflist: &Path, record: &OwnerRecord) -> Result<()> {
    let text = serde_json::to_string_pretty(record).expect("a record serialises");
    files::write_atomically(
        &record_path(conflist),
        format!("{text}\n").as_bytes(),
        0o644,
    )
}

pub(super) fn remove_record(conflist: &Path) -> Result<()> {
    files::remove_file(&record_path(conflist)).map(|_| ())
}

/// An exclusive lock on a directory, released on drop (when the descriptor closes).
pub(super) struct DirLock(#[allow(dead_code)] File);

/// Locks `dir` (flock on the directory itself: no lock file to leave behind), waiting up
/// to [`LOCK_TIMEOUT`] for another installer.
pub(super) fn lock_dir(dir: &Path) -> Result<DirLock> {
    let file = File::open(dir).map_err(|e| {
        Error::Config(vec![ConfigError::new(
            "--conflist",
            Some(&dir.display().to_string()),
            format!("its directory cannot be opened: {e}"),
        )])
    })?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        // SAFETY: flock on an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(DirLock(file));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::io(format!("locking {}", dir.display()), e));
        }
        if Instant::now() >= deadline {
            return Err(Error::Other(format!(
                "{}: another installer kept its lock for more than {}s",
                dir.display(),
                LOCK_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
