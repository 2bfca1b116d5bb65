//! File operations of install/uninstall. Reads are bounded (regular files only, a size cap,
//! never blocking on a FIFO or device). A file is replaced through a temporary file beside
//! it (a name no other writer can pick, created exclusively, synced, with the old file's
//! mode, owner and extended attributes), and the list is replaced only if it still is the
//! version that was read: another writer's newer version is never replaced by an older one.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use crate::error::{Error, Result};

/// The most a configuration list may hold: lists are a few KiB; a larger one is not a list
/// someone wrote, and reading it whole would cost its size in memory.
pub(super) const LIST_SIZE_LIMIT: u64 = 1 << 20;

/// A temporary file of ours older than this is left over by a killed writer (writing one
/// takes milliseconds), and is removed.
const STALE_AFTER: Duration = Duration::from_secs(600);

/// What went wrong reading a file the user named.
#[derive(Debug)]
pub(super) enum ReadError {
    Missing,
    NotRegular(&'static str),
    TooLarge(u64),
    Io(io::Error),
}

impl ReadError {
    /// What is wrong, for a message naming the flag and path.
    pub(super) fn describe(&self, limit: u64) -> String {
        match self {
            ReadError::Missing => "does not exist".into(),
            ReadError::NotRegular(kind) => {
                format!("is {kind} (after following symlinks), not a regular file")
            }
            ReadError::TooLarge(size) => {
                format!("is {size} bytes, more than the {limit} a file here may hold")
            }
            ReadError::Io(e) => format!("cannot be read: {e}"),
        }
    }
}

/// A file as read: its bytes and which file it was.
#[derive(Debug, Clone)]
pub(super) struct ReadFile {
    pub bytes: Vec<u8>,
    pub dev: u64,
    pub ino: u64,
}

/// Reads a regular file of at most `limit` bytes. The open never blocks (a FIFO or a
/// device is refused from its fstat before any read), and reading stops after `limit`.
pub(super) fn read_regular(path: &Path, limit: u64) -> std::result::Result<ReadFile, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => ReadError::Missing,
            _ => ReadError::Io(e),
        })?;
    read_open(file, limit)
}

fn read_open(mut file: File, limit: u64) -> std::result::Result<ReadFile, ReadError> {
    let meta = file.metadata().map_err(ReadError::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        return Err(ReadError::NotRegular(if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        }));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(ReadFile {
        bytes,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// A temporary file's name beside `target`: the target's name, `.meshinit-`, 16 random hex
/// digits and `.tmp`. Random, not the PID: every container's installer is PID 1.
fn temporary_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = getrandom::u64().unwrap_or_else(|_| {
        // No entropy source: time and PID still differ between writers almost always, and
        // the exclusive create catches the rest.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(40)
    });
    target.with_file_name(format!(".{name}.meshinit-{suffix:016x}.tmp"))
}

/// Whether `name` is one of our temporary files: `.NAME.meshinit-HEX16.tmp`, or the
/// `.NAME.meshinit-PID` that versions before named them.
fn is_our_temporary(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let Some(at) = name.rfind(".meshinit-") else {
        return false;
    };
    if !name.starts_with('.') {
        return false;
    }
    let rest = &name[at + ".meshinit-".len()..];
    let current = rest
        .strip_suffix(".tmp")
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    let legacy = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    current || legacy
}

/// Removes our temporary files in `dir` older than [`STALE_AFTER`] (left by a writer that
/// was killed); a younger one may be another writer's, being written now, and stays.
pub(super) fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        if !is_our_temporary(&entry.file_name()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if meta.is_file() && old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A temporary file of ours, written and synced; removed on drop unless renamed away.
struct Temporary {
    path: PathBuf,
    ino: u64,
    kept: bool,
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.kept {
            // Created exclusively by us, so it is ours to remove.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What a replaced file's copy keeps of it.
#[derive(Debug, Clone, Copy)]
struct Keep<'a> {
    mode: u32,
    /// Owner and group, and the file whose extended attributes are copied.
    like: Option<(u32, u32, &'a Path)>,
}

fn write_temporary(target: &Path, bytes: &[u8], keep: Keep) -> io::Result<Temporary> {
    let path = temporary_name(target);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(keep.mode)
        .open(&path)?;
    // From here on the file is ours (the exclusive create succeeded).
    let temporary = Temporary {
        path,
        ino: file.metadata()?.ino(),
        kept: false,
    };
    file.write_all(bytes)?;
    if let Some((uid, gid, original)) = keep.like {
        keep_owner(&file, uid, gid, original)?;
        copy_xattrs(original, &file)?;
    }
    // The creation mode is filtered by the umask (and chown clears set-id bits): set it last.
    file.set_permissions(fs::Permissions::from_mode(keep.mode))?;
    file.sync_all()?;
    Ok(temporary)
}

/// Gives `file` the owner and group `uid`:`gid` of `original`. Without the privilege to
/// (the DaemonSet drops CAP_CHOWN; a root-owned list needs none), the new list would still
/// be the one the node needs: it is written, with a warning naming what changed.
fn keep_owner(file: &File, uid: u32, gid: u32, original: &Path) -> io::Result<()> {
    let meta = file.metadata()?;
    if (meta.uid(), meta.gid()) == (uid, gid) {
        return Ok(());
    }
    match std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            tracing::warn!(
                "{}: cannot keep its owner {uid}:{gid} ({e}): the new list is owned by {}:{}",
                original.display(),
                meta.uid(),
                meta.gid()
            );
            Ok(())
        }
        other => other,
    }
}

/// Copies the extended attributes of `from` (not following a symlink: `from` is the
/// resolved file) to `to`. A file system without them has none to copy.
fn copy_xattrs(from: &Path, to: &File) -> io::Result<()> {
    let from = CString::new(from.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "NUL in path"))?;
    let mut names = vec![0u8; 4096];
    let length = loop {
        // SAFETY: the buffer is valid for its length; the path is NUL-terminated.
        let n = unsafe { libc::llistxattr(from.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(()),
            _ => return Err(e),
        }
    };
    for name in names[..length].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = CString::new(name).expect("split on NUL");
        let mut value = vec![0u8; 4096];
        let size = loop {
            // SAFETY: as above.
            let n = unsafe {
                libc::lgetxattr(
                    from.as_ptr(),
                    name.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if value.len() < 1 << 20 => value.resize(value.len() * 4, 0),
                _ => return Err(e),
            }
        };
        // Already so (a label the system gives every new file there): nothing to set.
        let mut present = vec![0u8; size];
        // SAFETY: the fd is open; the buffer is valid for its length.
        let n = unsafe {
            libc::fgetxattr(
                to.as_raw_fd(),
                name.as_ptr(),
                present.as_mut_ptr().cast(),
                present.len(),
            )
        };
        if n >= 0 && n as usize == size && present == value[..size] {
            continue;
        }
        // SAFETY: the fd is open; the buffers are valid for the lengths given.
        let rc = unsafe {
            libc::fsetxattr(
                to.as_raw_fd(),
                name.as_ptr(),
                value.as_ptr().cast(),
                size,
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // Not allowed (a security.* label without the right to relabel, trusted.*
            // without CAP_SYS_ADMIN): the new file keeps the label the system gave it.
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EACCES | libc::ENOTSUP)
            ) {
                tracing::warn!(
                    "{}: cannot keep its extended attribute {} ({e})",
                    from.to_string_lossy(),
                    name.to_string_lossy()
                );
                continue;
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Whether the file at `path` is still the one read (same inode, same bytes).
fn still(path: &Path, read: &ReadFile) -> bool {
    read_regular(path, LIST_SIZE_LIMIT)
        .is_ok_and(|now| now.dev == read.dev && now.ino == read.ino && now.bytes == read.bytes)
}

/// Whether the file at `path` is our temporary file, untouched.
fn is_untouched(path: &Path, temporary: &Temporary, bytes: &[u8]) -> bool {
    read_regular(path, LIST_SIZE_LIMIT)
        .is_ok_and(|now| now.ino == temporary.ino && now.bytes == bytes)
}

fn exchange(a: &Path, b: &Path) -> nix::Result<()> {
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE)
}

/// Replaces the file at `path` (symlinks resolved) with `bytes` if it still is `read`;
/// false when another writer changed it since (the caller reads and edits again).
///
/// The check and the swap are one step: the new file is exchanged with the old one
/// (`renameat2(RENAME_EXCHANGE)`), and what came out is checked to be exactly what was
/// read. When it is not, a writer got in between (a rename, or an in-place write, which
/// truncates the file it read), and the exchange is undone so its version stands. Where
/// the file system cannot exchange, a check just before a plain rename is the fallback.
pub(super) fn replace_if_unchanged(path: &Path, read: &ReadFile, bytes: &[u8]) -> Result<bool> {
    let target = fs::canonicalize(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    let meta =
        fs::metadata(&target).map_err(|e| Error::io(format!("reading {}", target.display()), e))?;
    let keep = Keep {
        mode: meta.permissions().mode() & 0o7777,
        like: Some((meta.uid(), meta.gid(), &target)),
    };
    let writing = |e: io::Error| Error::io(format!("writing {}", target.display()), e);
    let mut temporary = write_temporary(&target, bytes, keep).map_err(writing)?;
    if !still(&target, read) {
        return Ok(false);
    }
    match exchange(&temporary.path, &target) {
        Ok(()) => {}
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            fs::rename(&temporary.path, &target).map_err(writing)?;
            temporary.kept = true;
            sync_parent(&target)?;
            return Ok(true);
        }
        Err(e) => return Err(writing(e.into())),
    }
    // The temporary name now holds what was at the target.
    if still(&temporary.path, read) {
        // Nobody got in between: what came out is the version read; ours stands.
        sync_parent(&target)?;
        return Ok(true);
    }
    // Another writer's version came out: put it back. What comes out of that is ours,
    // unless a third version arrived meanwhile, which is newer still: that one goes back.
    exchange(&temporary.path, &target).map_err(|e| writing(e.into()))?;
    if !is_untouched(&temporary.path, &temporary, bytes) {
        exchange(&temporary.path, &target).map_err(|e| writing(e.into()))?;
    }
    // Whatever is at the temporary name now is superseded; it goes on drop.
    sync_parent(&target)?;
    Ok(false)
}

/// Removes the file at `path` if it still is `read`; false when it changed.
pub(super) fn remove_if_unchanged(path: &Path, read: &ReadFile) -> Result<bool> {
    let target = fs::canonicalize(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    // Moved aside first, so the check is of the file that is then removed.
    let aside = temporary_name(&target);
    fs::rename(&target, &aside)
        .map_err(|e| Error::io(format!("removing {}", target.display()), e))?;
    if still(&aside, read) {
        fs::remove_file(&aside)
            .map_err(|e| Error::io(format!("removing {}", aside.display()), e))?;
        sync_parent(&target)?;
        return Ok(true);
    }
    // Changed: put it back, unless a newer one took the name meanwhile.
    let back = renameat2(
        AT_FDCWD,
        &aside,
        AT_FDCWD,
        &target,
        RenameFlags::RENAME_NOREPLACE,
    );
    if back.is_err() {
        let _ = fs::remove_file(&aside);
    }
    sync_parent(&target)?;
    Ok(false)
}

/// Copies `source` (the running executable, `/proc/self/exe`) to `bin_dir/name`, unless
/// the same bytes are there already with mode 0755.
pub fn install_binary(source: &Path, bin_dir: &Path, name: &str) -> Result<super::Change> {
    let bytes = fs::read(source)
        .map_err(|e| Error::io(format!("reading the executable {}", source.display()), e))?;
    let target = bin_dir.join(name);
    let same = read_regular(&target, bytes.len() as u64).is_ok_and(|old| old.bytes == bytes)
        && fs::metadata(&target).is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o755);
    if same {
        return Ok(super::Change::Unchanged);
    }
    write_atomically(&target, &bytes, 0o755)?;
    Ok(super::Change::Written)
}

pub(super) fn remove_file(path: &Path) -> Result<super::Change> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_parent(path)?;
            Ok(super::Change::Removed)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(super::Change::Absent),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// Writes `bytes` to a temporary file beside `target`, syncs it, renames it over `target`
/// and syncs the directory: readers see the old file or the new one, never a part.
pub fn write_atomically(target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let keep = Keep { mode, like: None };
    let writing = |e: io::Error| Error::io(format!("writing {}", target.display()), e);
    let mut temporary = write_temporary(target, bytes, keep).map_err(writing)?;
    fs::rename(&temporary.path, target).map_err(writing)?;
    temporary.kept = true;
    sync_parent(target)
}

pub(super) fn sync_parent(path: &Path) -> Result<()> {
    let parent: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    File::open(&parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", parent.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_and_unique() {
        let a = temporary_name(Path::new("/x/10-aws.conflist"));
        let b = temporary_name(Path::new("/x/10-aws.conflist"));
        assert_ne!(a, b);
        assert!(is_our_temporary(a.file_name().unwrap()), "{a:?}");
        assert!(is_our_temporary(OsStr::new(".10-aws.conflist.meshinit-1")));
        for other in [
            "10-aws.conflist",
            ".10-aws.conflist.meshinit-owner",
            ".aws-appmesh.meshinit-original",
            ".x.meshinit-0123.tmp",
        ] {
            assert!(!is_our_temporary(OsStr::new(other)), "{other}");
        }
    }
}
