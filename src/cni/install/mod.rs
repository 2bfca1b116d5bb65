//! `meshinit cni install` / `cni uninstall`: put meshinit's entry at the end of an existing
//! network configuration list (the AWS VPC CNI's `10-aws.conflist`, a bridge chain...) and
//! its binary into the CNI bin directory, or take both away again. This is what a node
//! DaemonSet runs.
//!
//! The list is edited as text, not re-serialised: every byte outside the `plugins` array's
//! meshinit entries stays as it was, so the other plugins' entries (and their key order,
//! numbers and whitespace) are untouched. Files are replaced atomically (a temporary file
//! beside the target, fsync, rename), and nothing is rewritten when it already holds the
//! wanted bytes, so a second run changes nothing.

mod conflist;
mod entry;
mod files;
mod owner;
#[cfg(test)]
mod test_support;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use conflist::Conflist;
pub use entry::{DEFAULT_PLUGIN_TYPE, PluginEntry};
pub use files::{install_binary, write_atomically};
pub use owner::Installer;

use crate::config::sources::json::{UniqueKeyObject, from_str_unique_keys};
use crate::error::{ConfigError, Error, Result};
use entry::check_plugin_type;
use files::{LIST_SIZE_LIMIT, ReadError, ReadFile};
use owner::{Original, OwnerRecord};

/// Found in every meshinit binary (this very text is in the list parser's messages of all
/// versions): how a binary in the bin directory is told to be meshinit's.
const BINARY_MARKER: &str = "meshinit is chained after an interface plugin";

/// The largest `--entry` file: an entry is a few hundred bytes.
const ENTRY_SIZE_LIMIT: u64 = 64 * 1024;

/// How often an edit is redone because another writer changed the list meanwhile.
const EDIT_ATTEMPTS: usize = 100;

/// What `install`/`uninstall` did to each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Written,
    Unchanged,
    Removed,
    Absent,
    /// Put back: what meshinit had replaced (the App Mesh plugin's binary or entry).
    Restored,
    /// There, but not meshinit's: left alone.
    NotOurs,
    /// A binary left because an entry meshinit does not own names it.
    StillNamed,
}

impl Change {
    pub fn describe(self) -> &'static str {
        match self {
            Change::Written => "written",
            Change::Unchanged => "already up to date",
            Change::Removed => "removed",
            Change::Absent => "not there",
            Change::Restored => "original restored",
            Change::NotOurs => "not installed by meshinit: left alone",
            Change::StillNamed => "left: an entry meshinit did not install names it",
        }
    }
}

/// What an install or uninstall did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done {
        list: Change,
        binary: Option<Change>,
    },
    /// A newer installer owns the list: nothing was changed.
    StoodDown {
        installer: String,
        plugin_type: String,
        entry: Value,
    },
}

impl Outcome {
    fn stood_down(record: &OwnerRecord) -> Outcome {
        Outcome::StoodDown {
            installer: record.installer.clone(),
            plugin_type: record.plugin_type.clone(),
            entry: record.entry.clone(),
        }
    }
}

fn unreadable(flag: &str, path: &Path, e: &ReadError, limit: u64) -> Error {
    Error::Config(vec![ConfigError::new(
        flag,
        Some(&path.display().to_string()),
        e.describe(limit),
    )])
}

/// The list's file and its parsed form; `None` when it does not exist.
fn read_list(path: &Path) -> Result<Option<(ReadFile, Conflist)>> {
    let file = match files::read_regular(path, LIST_SIZE_LIMIT) {
        Ok(file) => file,
        Err(ReadError::Missing) => return Ok(None),
        Err(e) => return Err(unreadable("--conflist", path, &e, LIST_SIZE_LIMIT)),
    };
    let origin = path.display().to_string();
    let text = String::from_utf8(file.bytes.clone()).map_err(|_| {
        Error::Config(vec![ConfigError::new(
            "--conflist",
            Some(&origin),
            "is not UTF-8 text, so not a JSON configuration list",
        )])
    })?;
    let list = Conflist::parse(&origin, &text).map_err(Error::Config)?;
    Ok(Some((file, list)))
}

/// Reads and checks the list at `path`; a missing, unreadable or oversized file, or one
/// that is not a regular file (a FIFO, a device), is a usage error.
pub fn read_conflist(path: &Path) -> Result<Conflist> {
    read_list(path)?
        .map(|(_, list)| list)
        .ok_or_else(|| unreadable("--conflist", path, &ReadError::Missing, LIST_SIZE_LIMIT))
}

/// Reads an `--entry FILE` object (netconf keys, `type` optional).
pub fn read_entry_file(path: &Path) -> Result<UniqueKeyObject> {
    let origin = path.display().to_string();
    let file = files::read_regular(path, ENTRY_SIZE_LIMIT)
        .map_err(|e| unreadable("--entry", path, &e, ENTRY_SIZE_LIMIT))?;
    let text = String::from_utf8_lossy(&file.bytes);
    let value: Value = from_str_unique_keys(&text).map_err(|e| {
        Error::Config(vec![ConfigError::new(
            &origin,
            None,
            format!(
                "not valid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )])
    })?;
    // Document order matters here (the entry is written in it), which `Value` loses.
    let object: UniqueKeyObject = serde_json::from_str(&text).map_err(|_| {
        Error::Config(vec![ConfigError::new(
            &origin,
            Some(&value.to_string()),
            "must be a JSON object of netconf keys, e.g. {\"ignoredUID\": \"1337\", \"proxyEgressPort\": \"15001\"}",
        )])
    })?;
    Ok(object)
}

/// What to do with the list, decided from what was read.
enum ListEdit {
    Keep,
    Write(String),
    /// Remove the file: it would hold no plugin.
    Remove,
}

/// Applies `edit` to the list and replaces it only if it is still the version read,
/// reading and editing again when another writer got in between. `None`: no list.
fn edit_list(
    path: &Path,
    mut edit: impl FnMut(&Conflist) -> Result<ListEdit>,
) -> Result<Option<Change>> {
    for _ in 0..EDIT_ATTEMPTS {
        let Some((file, list)) = read_list(path)? else {
            return Ok(None);
        };
        let done = match edit(&list)? {
            ListEdit::Keep => return Ok(Some(Change::Unchanged)),
            ListEdit::Write(text) if text == list.text => return Ok(Some(Change::Unchanged)),
            ListEdit::Write(text) => files::replace_if_unchanged(path, &file, text.as_bytes())?
                .then_some(Change::Written),
            ListEdit::Remove => files::remove_if_unchanged(path, &file)?.then_some(Change::Removed),
        };
        if let Some(change) = done {
            return Ok(Some(change));
        }
        tracing::info!(
            "{}: changed by another writer since it was read: editing its new version",
            path.display()
        );
    }
    Err(Error::Other(format!(
        "{}: changed by another writer during each of {EDIT_ATTEMPTS} attempts to edit it",
        path.display()
    )))
}

/// Whether the file at `path` is a meshinit binary (of any version).
fn is_meshinit_binary(path: &Path) -> bool {
    files::read_regular(path, 1 << 30).is_ok_and(|file| {
        file.bytes
            .windows(BINARY_MARKER.len())
            .any(|w| w == BINARY_MARKER.as_bytes())
    })
}

/// The name the original binary `name` is kept under while meshinit replaces it.
fn original_binary_name(name: &str) -> String {
    format!(".{name}.meshinit-original")
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn refuse_foreign(what: &str, value: &Path) -> Error {
    Error::Config(vec![ConfigError::new(
        "--type",
        Some(&value.display().to_string()),
        format!(
            "{what} is there and was not installed by meshinit: it is left alone; add \
             --replace to take its place (it is kept and put back on uninstall)"
        ),
    )])
}

/// Puts `entry` at the end of the list at `conflist` and, with `bin`, the binary at
/// `source` into `bin_dir/TYPE`, as `installer`. The binary goes first, so a runtime never
/// reads an entry whose plugin is missing. The list is read and checked before anything
/// is written. A newer installer's list is left alone ([`Outcome::StoodDown`]); a binary
/// or entry of this type that meshinit did not install is refused unless `replace`.
pub fn install(
    conflist: &Path,
    entry: &PluginEntry,
    bin: Option<(&Path, &Path)>,
    installer: &Installer,
    replace: bool,
) -> Result<Outcome> {
    let dir = directory_of(conflist);
    let _lock = owner::lock_dir(&dir)?;
    files::remove_stale_temporaries(&dir);
    if let Some((_, bin_dir)) = bin {
        if !bin_dir.is_dir() {
            return Err(Error::Config(vec![ConfigError::new(
                "--bin-dir",
                Some(&bin_dir.display().to_string()),
                "is not a directory: give the CNI bin directory the runtime searches (/opt/cni/bin, /usr/lib/cni)",
            )]));
        }
        files::remove_stale_temporaries(bin_dir);
    }
    let bin_dir = bin.map(|(_, d)| d);
    let record = owner::read_record(conflist)?;
    let mut original = None;
    let mut claimed = false;
    if let Some(record) = &record {
        if !record.is(installer) && installer.is_older_than(record) && owner::owner_runs(conflist) {
            return Ok(Outcome::stood_down(record));
        }
        if record.plugin_type == entry.plugin_type {
            original = record.original.clone();
            claimed = true;
        }
    }
    // Checked (and refused) before anything is written.
    let Some((_, list)) = read_list(conflist)? else {
        return Err(unreadable(
            "--conflist",
            conflist,
            &ReadError::Missing,
            LIST_SIZE_LIMIT,
        ));
    };
    list.check_chainable(&entry.plugin_type)
        .map_err(Error::Config)?;
    let target = bin_dir.map(|d| d.join(&entry.plugin_type));
    let foreign_binary = !claimed
        && target
            .as_ref()
            .is_some_and(|t| t.exists() && !is_meshinit_binary(t));
    let foreign_entry =
        !claimed && entry.plugin_type != DEFAULT_PLUGIN_TYPE && list.has(&entry.plugin_type);
    if foreign_binary || foreign_entry {
        if !replace {
            return Err(match (&target, foreign_binary) {
                (Some(t), true) => refuse_foreign("a binary", t),
                _ => refuse_foreign(
                    &format!("an entry of type {:?}", entry.plugin_type),
                    conflist,
                ),
            });
        }
        original = Some(Original {
            binary: foreign_binary.then(|| original_binary_name(&entry.plugin_type)),
            list: foreign_entry.then(|| list.text.clone()),
        });
    }
    // An older installer's entry of another type (`--type` changed) goes first.
    if let Some(old) = record
        .as_ref()
        .filter(|r| r.plugin_type != entry.plugin_type)
    {
        remove_installed(conflist, &old.plugin_type, Some(old), bin_dir)?;
    }
    let wanted = OwnerRecord {
        installer: installer.id.clone(),
        started: installer.started,
        plugin_type: entry.plugin_type.clone(),
        entry: entry.to_value(),
        original: original.clone(),
    };
    // The record first: whatever is written after it is known to be meshinit's.
    if record.as_ref() != Some(&wanted) {
        owner::write_record(conflist, &wanted)?;
    }
    installer.hold(conflist)?;
    let binary = match (bin, &target) {
        (Some((source, bin_dir)), Some(target)) => {
            if let Some(kept) = original.as_ref().and_then(|o| o.binary.as_ref()) {
                let kept = bin_dir.join(kept);
                if !kept.exists() && target.exists() {
                    // A link: the original stays in place until ours replaces it by rename.
                    std::fs::hard_link(target, &kept).map_err(|e| {
                        Error::io(
                            format!("keeping {} as {}", target.display(), kept.display()),
                            e,
                        )
                    })?;
                }
            }
            Some(install_binary(source, bin_dir, &entry.plugin_type)?)
        }
        _ => None,
    };
    let list = edit_list(conflist, |list| {
        list.check_chainable(&entry.plugin_type)
            .map_err(Error::Config)?;
        Ok(ListEdit::Write(list.with_entry(entry)))
    })?
    .ok_or_else(|| unreadable("--conflist", conflist, &ReadError::Missing, LIST_SIZE_LIMIT))?;
    Ok(Outcome::Done { list, binary })
}

/// Takes meshinit's entry out of the list and, with `bin_dir`, its binary, in that order
/// (a runtime never reads an entry whose plugin is gone); what meshinit replaced is put
/// back. The type is `plugin_type`, else the owner record's, else `meshinit`. With
/// `installer`, only what that installer owns is removed: a newer installer's entry and
/// binary stay ([`Outcome::StoodDown`]).
pub fn uninstall(
    conflist: &Path,
    plugin_type: Option<&str>,
    bin_dir: Option<&Path>,
    installer: Option<&Installer>,
) -> Result<(String, Outcome)> {
    if let Some(t) = plugin_type {
        check_plugin_type(t).map_err(Error::Config)?;
    }
    let dir = directory_of(conflist);
    let _lock = match owner::lock_dir(&dir) {
        Ok(lock) => Some(lock),
        // No directory: no list and no record; the binary may still be there.
        Err(_) if !dir.exists() => None,
        Err(e) => return Err(e),
    };
    let record = owner::read_record(conflist)?;
    let plugin_type = plugin_type
        .map(str::to_owned)
        .or_else(|| record.as_ref().map(|r| r.plugin_type.clone()))
        .unwrap_or_else(|| DEFAULT_PLUGIN_TYPE.to_owned());
    match (installer, &record) {
        (Some(me), Some(r)) if !r.is(me) => return Ok((plugin_type, Outcome::stood_down(r))),
        // Nothing is this installer's: whoever owned the list removed it.
        (Some(_), None) => {
            let nothing = Outcome::Done {
                list: Change::Absent,
                binary: bin_dir.map(|_| Change::Absent),
            };
            return Ok((plugin_type, nothing));
        }
        _ => {}
    }
    let record = record.filter(|r| r.plugin_type == plugin_type);
    let outcome = remove_installed(conflist, &plugin_type, record.as_ref(), bin_dir)?;
    if record.is_some() {
        owner::remove_record(conflist)?;
    }
    Ok((plugin_type, outcome))
}

/// Removes the entry of `plugin_type` and its binary (restoring what `record` says was
/// replaced). Entries of a type other than `meshinit` that no record claims, and binaries
/// that are not meshinit's, are not ours and stay.
fn remove_installed(
    conflist: &Path,
    plugin_type: &str,
    record: Option<&OwnerRecord>,
    bin_dir: Option<&Path>,
) -> Result<Outcome> {
    let original = record.and_then(|r| r.original.clone());
    let ours = record.is_some() || plugin_type == DEFAULT_PLUGIN_TYPE;
    let list = if !ours {
        read_list(conflist)?.map_or(Change::Absent, |(_, l)| match l.has(plugin_type) {
            true => Change::NotOurs,
            false => Change::Absent,
        })
    } else {
        let original_list = original.as_ref().and_then(|o| o.list.clone());
        let restoring = original_list.is_some();
        let change = edit_list(conflist, |list| {
            if !list.has(plugin_type) && !restoring {
                return Ok(ListEdit::Keep);
            }
            Ok(restored_list(list, plugin_type, original_list.as_deref()))
        })?;
        match change {
            None => Change::Absent,
            Some(Change::Written) if restoring => Change::Restored,
            Some(Change::Written) => Change::Removed,
            Some(Change::Unchanged) => Change::Absent,
            Some(other) => other,
        }
    };
    let binary = match bin_dir {
        None => None,
        Some(dir) => {
            let target = dir.join(plugin_type);
            let kept = original
                .as_ref()
                .and_then(|o| o.binary.as_ref())
                .map(|k| dir.join(k))
                .filter(|k| k.exists());
            Some(match kept {
                Some(kept) => {
                    std::fs::rename(&kept, &target)
                        .map_err(|e| Error::io(format!("restoring {}", target.display()), e))?;
                    files::sync_parent(&target)?;
                    Change::Restored
                }
                None if !target.exists() => Change::Absent,
                // An entry meshinit does not own names it (written by an older meshinit as
                // aws-appmesh, say): removing the binary would break every pod ADD.
                None if list == Change::NotOurs => Change::StillNamed,
                // Installed under this record, or (no record) a meshinit binary all the same.
                None if record.is_some() || is_meshinit_binary(&target) => {
                    files::remove_file(&target)?
                }
                None => Change::NotOurs,
            })
        }
    };
    Ok(Outcome::Done { list, binary })
}

/// The list without meshinit's entry of `plugin_type`, with the original entry it replaced
/// put back: the original list byte for byte when nothing else changed since, else the
/// original entry at the end. A list left without any plugin is removed (libcni refuses an
/// empty one).
fn restored_list(list: &Conflist, plugin_type: &str, original: Option<&str>) -> ListEdit {
    let without = list.without(plugin_type);
    if let Some(original) = original
        && let Ok(original_list) = Conflist::parse("original", original)
    {
        let now = Conflist::parse("list", &without).ok();
        if original_list.without(plugin_type) == without {
            return ListEdit::Write(original.to_owned());
        }
        if let Some(now) = now {
            return ListEdit::Write(now.with_raw_entries(&original_list.entry_texts(plugin_type)));
        }
    }
    match Conflist::parse("list", &without) {
        Ok(rest) if rest.is_empty() => ListEdit::Remove,
        _ => ListEdit::Write(without),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{AWS_CONFLIST, mesh_entry};
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn done(list: Change, binary: Option<Change>) -> Outcome {
        Outcome::Done { list, binary }
    }

    #[test]
    fn files_are_written_atomically_and_only_when_different() {
        let dir =
            std::env::temp_dir().join(format!("meshinit-install-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        let conflist = dir.join("10-aws.conflist");
        fs::write(&conflist, AWS_CONFLIST).unwrap();
        fs::set_permissions(&conflist, fs::Permissions::from_mode(0o640)).unwrap();
        let source = dir.join("meshinit-source");
        fs::write(&source, b"\x7fELF not really").unwrap();
        let bin = Some((source.as_path(), dir.join("bin")));
        let bin = bin.as_ref().map(|(s, d)| (*s, d.as_path()));

        let installer = Installer::new();
        let first = install(&conflist, &mesh_entry(), bin, &installer, false).unwrap();
        assert_eq!(first, done(Change::Written, Some(Change::Written)));
        let installed_at = fs::metadata(&conflist).unwrap().modified().unwrap();
        assert_eq!(
            fs::metadata(&conflist).unwrap().permissions().mode() & 0o7777,
            0o640,
            "the list keeps its mode"
        );
        let binary = dir.join("bin/meshinit");
        assert_eq!(fs::read(&binary).unwrap(), b"\x7fELF not really");
        assert_eq!(
            fs::metadata(&binary).unwrap().permissions().mode() & 0o7777,
            0o755
        );

        let second = install(&conflist, &mesh_entry(), bin, &installer, false).unwrap();
        assert_eq!(second, done(Change::Unchanged, Some(Change::Unchanged)));
        assert_eq!(
            fs::metadata(&conflist).unwrap().modified().unwrap(),
            installed_at
        );
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary files left: {leftovers:?}"
        );

        let (_, removed) =
            uninstall(&conflist, None, Some(&dir.join("bin")), Some(&installer)).unwrap();
        assert_eq!(removed, done(Change::Removed, Some(Change::Removed)));
        assert!(!owner::record_path(&conflist).exists());
        assert_eq!(fs::read_to_string(&conflist).unwrap(), AWS_CONFLIST);
        assert!(!binary.exists());
        let (_, again) =
            uninstall(&conflist, Some("meshinit"), Some(&dir.join("bin")), None).unwrap();
        assert_eq!(again, done(Change::Absent, Some(Change::Absent)));

        // A bad list is refused before the binary is copied.
        fs::write(&conflist, "{\"plugins\": [}").unwrap();
        assert!(matches!(
            install(&conflist, &mesh_entry(), bin, &installer, false),
            Err(Error::Config(_))
        ));
        assert!(!binary.exists());
        assert_eq!(fs::read_to_string(&conflist).unwrap(), "{\"plugins\": [}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_replaced_entry_comes_back_whole_or_at_the_end() {
        let original = r#"{"cniVersion":"0.3.0","name":"ecs","plugins":[{"type":"ecs-bridge"},{"type":"aws-appmesh","appPorts":["80"]}]}"#;
        let parse = |t: &str| Conflist::parse("t", t).unwrap();
        let mut ours = mesh_entry();
        ours.plugin_type = "aws-appmesh".into();
        let installed = parse(original).with_entry(&ours);
        let ListEdit::Write(back) =
            restored_list(&parse(&installed), "aws-appmesh", Some(original))
        else {
            panic!("a write")
        };
        assert_eq!(
            back, original,
            "nothing else changed: the original, byte for byte"
        );
        // Another writer added a plugin meanwhile: it stays, the original entry goes last.
        let changed = installed.replacen(
            r#"{"type":"ecs-bridge"}"#,
            r#"{"type":"ecs-bridge"},{"type":"bandwidth"}"#,
            1,
        );
        let ListEdit::Write(back) = restored_list(&parse(&changed), "aws-appmesh", Some(original))
        else {
            panic!("a write")
        };
        assert_eq!(
            back,
            r#"{"cniVersion":"0.3.0","name":"ecs","plugins":[{"type":"ecs-bridge"},{"type":"bandwidth"},{"type":"aws-appmesh","appPorts":["80"]}]}"#
        );
        // No original, and nothing left: the file goes.
        let only = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"meshinit"}]}"#;
        assert!(matches!(
            restored_list(&parse(only), "meshinit", None),
            ListEdit::Remove
        ));
    }
}
