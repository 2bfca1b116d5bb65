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
#[cfg(test)]
mod test_support;

use std::fs;
use std::path::Path;

use serde_json::Value;

pub use conflist::Conflist;
pub use entry::{DEFAULT_PLUGIN_TYPE, PluginEntry};
pub use files::{install_binary, write_atomically};

use crate::config::sources::json::{UniqueKeyObject, from_str_unique_keys};
use crate::error::{ConfigError, Error, Result};
use entry::check_plugin_type;
use files::{remove_binary, replace_if_different};

/// What `install`/`uninstall` did to each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Written,
    Unchanged,
    Removed,
    Absent,
}

impl Change {
    pub fn describe(self) -> &'static str {
        match self {
            Change::Written => "written",
            Change::Unchanged => "already up to date",
            Change::Removed => "removed",
            Change::Absent => "not there",
        }
    }
}

/// Reads and checks the list at `path`; a missing or unreadable file is a usage error.
pub fn read_conflist(path: &Path) -> Result<Conflist> {
    let origin = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| {
        Error::Config(vec![ConfigError::new(
            "--conflist",
            Some(&origin),
            format!("cannot be read: {e}"),
        )])
    })?;
    Conflist::parse(&origin, &text).map_err(Error::Config)
}

/// Reads an `--entry FILE` object (netconf keys, `type` optional).
pub fn read_entry_file(path: &Path) -> Result<UniqueKeyObject> {
    let origin = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| {
        Error::Config(vec![ConfigError::new(
            "--entry",
            Some(&origin),
            format!("cannot be read: {e}"),
        )])
    })?;
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

/// Puts `entry` at the end of the list at `conflist` and, with `bin_dir`, the binary at
/// `source` into `bin_dir/TYPE`. The binary goes first, so a runtime never reads an entry
/// whose plugin is missing. The list is read and checked before anything is written.
pub fn install(
    conflist: &Path,
    entry: &PluginEntry,
    bin: Option<(&Path, &Path)>,
) -> Result<(Change, Option<Change>)> {
    let list = read_conflist(conflist)?;
    let binary = match bin {
        Some((source, bin_dir)) => Some(install_binary(source, bin_dir, &entry.plugin_type)?),
        None => None,
    };
    let text = list.with_entry(entry);
    let change = replace_if_different(conflist, &list.text, &text)?;
    Ok((change, binary))
}

/// Takes every entry of type `plugin_type` out of the list and, with `bin_dir`, removes
/// `bin_dir/TYPE`, in that order (a runtime never reads an entry whose plugin is gone).
pub fn uninstall(
    conflist: &Path,
    plugin_type: &str,
    bin_dir: Option<&Path>,
) -> Result<(Change, Option<Change>)> {
    check_plugin_type(plugin_type).map_err(Error::Config)?;
    let list = read_conflist(conflist)?;
    let text = list.without(plugin_type);
    let change = match replace_if_different(conflist, &list.text, &text)? {
        Change::Written => Change::Removed,
        _ => Change::Absent,
    };
    let binary = match bin_dir {
        Some(dir) => Some(remove_binary(&dir.join(plugin_type))?),
        None => None,
    };
    Ok((change, binary))
}
#[cfg(test)]
mod tests {
    use super::test_support::{AWS_CONFLIST, mesh_entry};
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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

        let first = install(&conflist, &mesh_entry(), bin).unwrap();
        assert_eq!(first, (Change::Written, Some(Change::Written)));
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

        let second = install(&conflist, &mesh_entry(), bin).unwrap();
        assert_eq!(second, (Change::Unchanged, Some(Change::Unchanged)));
        assert_eq!(
            fs::metadata(&conflist).unwrap().modified().unwrap(),
            installed_at
        );
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".meshinit-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary files left: {leftovers:?}"
        );

        let removed = uninstall(&conflist, "meshinit", Some(&dir.join("bin"))).unwrap();
        assert_eq!(removed, (Change::Removed, Some(Change::Removed)));
        assert_eq!(fs::read_to_string(&conflist).unwrap(), AWS_CONFLIST);
        assert!(!binary.exists());
        let again = uninstall(&conflist, "meshinit", Some(&dir.join("bin"))).unwrap();
        assert_eq!(again, (Change::Absent, Some(Change::Absent)));

        // A bad list is refused before the binary is copied.
        fs::write(&conflist, "{\"plugins\": [}").unwrap();
        assert!(matches!(
            install(&conflist, &mesh_entry(), bin),
            Err(Error::Config(_))
        ));
        assert!(!binary.exists());
        assert_eq!(fs::read_to_string(&conflist).unwrap(), "{\"plugins\": [}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
