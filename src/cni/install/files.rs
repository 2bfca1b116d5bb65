//! File operations of install/uninstall: a file is replaced atomically (a temporary file
//! beside it, fsync, rename, directory fsync) and only when its bytes change.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Change;
use crate::error::{ConfigError, Error, Result};

pub(super) fn replace_if_different(path: &Path, old: &str, new: &str) -> Result<Change> {
    if old == new {
        return Ok(Change::Unchanged);
    }
    // Write beside the real file, so a symlinked list (a ConfigMap mount) keeps its link.
    let target = fs::canonicalize(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    let mode = fs::metadata(&target)
        .map_err(|e| Error::io(format!("reading {}", target.display()), e))?
        .permissions()
        .mode()
        & 0o7777;
    write_atomically(&target, new.as_bytes(), mode)?;
    Ok(Change::Written)
}

/// Copies `source` (the running executable, `/proc/self/exe`) to `bin_dir/name`, unless
/// the same bytes are there already with mode 0755.
pub fn install_binary(source: &Path, bin_dir: &Path, name: &str) -> Result<Change> {
    let bytes = fs::read(source)
        .map_err(|e| Error::io(format!("reading the executable {}", source.display()), e))?;
    if !bin_dir.is_dir() {
        return Err(Error::Config(vec![ConfigError::new(
            "--bin-dir",
            Some(&bin_dir.display().to_string()),
            "is not a directory: give the CNI bin directory the runtime searches (/opt/cni/bin, /usr/lib/cni)",
        )]));
    }
    let target = bin_dir.join(name);
    let same = fs::read(&target).is_ok_and(|old| old == bytes)
        && fs::metadata(&target).is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o755);
    if same {
        return Ok(Change::Unchanged);
    }
    write_atomically(&target, &bytes, 0o755)?;
    Ok(Change::Written)
}

pub(super) fn remove_binary(path: &Path) -> Result<Change> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_parent(path)?;
            Ok(Change::Removed)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Change::Absent),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// Writes `bytes` to a temporary file beside `target`, syncs it, renames it over `target`
/// and syncs the directory: readers see the old file or the new one, never a part.
pub fn write_atomically(target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = target.with_file_name(format!(".{name}.meshinit-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(bytes)?;
        // The creation mode is filtered by the umask; the wanted mode is set explicitly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temporary, target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temporary);
        return Err(Error::io(format!("writing {}", target.display()), e));
    }
    sync_parent(target)
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    File::open(&parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", parent.display()), e))
}
