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

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::version::SUPPORTED_VERSIONS;
use crate::config::sources::cni::{PROPERTY_NAMES, parse_network_config};
use crate::config::sources::json::{UniqueKeyObject, from_str_unique_keys};
use crate::config::validate;
use crate::error::{ConfigError, Error, Result};

/// The entry's `type` unless told otherwise: the binary's name in the CNI bin directory.
pub const DEFAULT_PLUGIN_TYPE: &str = "meshinit";

/// meshinit's entry in a configuration list: its `type` and the netconf keys, in the order
/// they are written.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEntry {
    pub plugin_type: String,
    /// Netconf keys other than `type`, in writing order.
    pub keys: Vec<(String, Value)>,
}

impl PluginEntry {
    /// Builds the entry from an optional JSON object (`--entry FILE`: netconf keys, `type`
    /// optional) overridden key by key by `overrides` (the flags), with `type` from
    /// `plugin_type`, else the object's, else `meshinit`. The keys and values are validated
    /// as CNI mode would read them at ADD time, and the entry must be complete on its own
    /// (a chain entry every ADD rejects would break every pod on the node).
    pub fn build(
        origin: &str,
        object: Option<UniqueKeyObject>,
        overrides: Vec<(String, Value)>,
        plugin_type: Option<&str>,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut keys = object.map(|o| o.0).unwrap_or_default();
        for (key, value) in overrides {
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => keys.push((key, value)),
            }
        }
        let from_object = match keys.iter().position(|(k, _)| k == "type") {
            Some(at) => match keys.remove(at).1 {
                Value::String(name) => Some(name),
                other => {
                    return Err(vec![ConfigError::new(
                        format!("{origin}: type"),
                        Some(&other.to_string()),
                        "must be a string: the plugin's name in the CNI bin directory",
                    )]);
                }
            },
            None => None,
        };
        let plugin_type = plugin_type
            .map(str::to_owned)
            .or(from_object)
            .unwrap_or_else(|| DEFAULT_PLUGIN_TYPE.to_owned());
        check_plugin_type(&plugin_type)?;
        // Keys meshinit reads first, in the README's order; anything else after them.
        keys.sort_by_key(|(k, _)| {
            PROPERTY_NAMES
                .iter()
                .position(|p| p == k)
                .unwrap_or(PROPERTY_NAMES.len())
        });
        let entry = PluginEntry { plugin_type, keys };
        entry.validate(origin)?;
        Ok(entry)
    }

    /// The netconf keys meshinit would read from this entry, validated like ADD does.
    fn validate(&self, origin: &str) -> Result<(), Vec<ConfigError>> {
        let misplaced: Vec<ConfigError> = self
            .keys
            .iter()
            .filter(|(k, _)| ["cniVersion", "name", "prevResult"].contains(&k.as_str()))
            .map(|(k, v)| {
                ConfigError::new(
                    format!("{origin}: {k}"),
                    Some(&v.to_string()),
                    "belongs to the whole list, not to a plugin's entry: remove it",
                )
            })
            .collect();
        if !misplaced.is_empty() {
            return Err(misplaced);
        }
        let object = UniqueKeyObject(self.keys.clone());
        let label = |mut e: ConfigError| {
            e.property = format!("{origin}: {}", e.property);
            e
        };
        let settings = parse_network_config(&object)
            .map_err(|es| es.into_iter().map(label).collect::<Vec<_>>())?;
        validate(&settings).map(|_| ()).map_err(|es| {
            super::settings::with_network_config_names(es)
                .into_iter()
                .map(label)
                .collect()
        })
    }

    /// The entry as a JSON object, for comparing with what a list already holds.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("type".into(), Value::String(self.plugin_type.clone()));
        for (k, v) in &self.keys {
            map.insert(k.clone(), v.clone());
        }
        Value::Object(map)
    }

    /// The entry's text: one key per line indented one level below `indent` (the
    /// indentation of the entries around it) with the list's line ending, or on one line
    /// when the list is compact.
    fn render(&self, indent: Option<&str>, newline: &str) -> String {
        let fields: Vec<String> =
            std::iter::once(("type", &Value::String(self.plugin_type.clone())))
                .chain(self.keys.iter().map(|(k, v)| (k.as_str(), v)))
                .map(|(k, v)| format!("{}: {}", Value::String(k.to_owned()), compact(v)))
                .collect();
        match indent {
            None => format!("{{{}}}", fields.join(", ")),
            Some(indent) => {
                let unit = if indent.contains('\t') { "\t" } else { "  " };
                let inner = format!("{indent}{unit}");
                format!(
                    "{{{newline}{inner}{}{newline}{indent}}}",
                    fields.join(&format!(",{newline}{inner}"))
                )
            }
        }
    }
}

/// A value on one line, with a space after commas in arrays (`["8080", "8081"]`), as
/// people write them.
fn compact(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(compact).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), compact(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// The `type` names the file the runtime executes in the bin directory: a plain file name.
fn check_plugin_type(name: &str) -> Result<(), Vec<ConfigError>> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(vec![ConfigError::new(
            "--type",
            Some(name),
            "must be a file name of letters, digits, '-', '_' or '.' (e.g. meshinit, aws-appmesh)",
        )])
    }
}

/// Where the `plugins` array and each of its entries lie in the list's text (byte ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PluginsArray {
    /// Index of `[`.
    open: usize,
    /// Index of `]`.
    close: usize,
    entries: Vec<Range<usize>>,
}

/// A configuration list read for editing: its text, and its entries parsed.
#[derive(Debug)]
pub struct Conflist {
    text: String,
    array: PluginsArray,
    entries: Vec<Value>,
}

impl Conflist {
    /// Reads a configuration list; anything that is not one (malformed JSON, duplicate keys,
    /// no `plugins` array, an entry without `type`, an unsupported `cniVersion`) is an error
    /// naming the problem.
    pub fn parse(origin: &str, text: &str) -> Result<Self, Vec<ConfigError>> {
        let error = |what: &str, value: Option<&str>, message: String| {
            vec![ConfigError::new(format!("{origin}{what}"), value, message)]
        };
        let document: Value = from_str_unique_keys(text).map_err(|e| {
            error(
                "",
                None,
                format!(
                    "not valid JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let Value::Object(top) = &document else {
            return Err(error(
                "",
                None,
                "must be a JSON object (a network configuration list)".into(),
            ));
        };
        let Some(plugins) = top.get("plugins") else {
            let hint = if top.contains_key("type") {
                "it is a single plugin's configuration (.conf); meshinit is chained after an \
                 interface plugin, so it needs a configuration list (.conflist) with a \
                 \"plugins\" array"
            } else {
                "a configuration list needs a \"plugins\" array"
            };
            return Err(error(": plugins", None, format!("missing: {hint}")));
        };
        let Value::Array(entries) = plugins else {
            return Err(error(
                ": plugins",
                Some(&plugins.to_string()),
                "must be an array of plugin configurations".into(),
            ));
        };
        for (i, entry) in entries.iter().enumerate() {
            if !entry.get("type").is_some_and(Value::is_string) {
                return Err(error(
                    &format!(": plugins[{i}]"),
                    Some(&entry.to_string()),
                    "must be an object with a string \"type\"".into(),
                ));
            }
        }
        match top.get("cniVersion") {
            Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => {}
            other => {
                return Err(error(
                    ": cniVersion",
                    other.map(|v| v.to_string()).as_deref(),
                    format!(
                        "meshinit supports {} (chaining needs 0.3.0 or later)",
                        SUPPORTED_VERSIONS.join(", ")
                    ),
                ));
            }
        }
        // The text is edited where the scanner says; it must agree with the parser.
        let array = locate_plugins_array(text)
            .filter(|array| array.entries.len() == entries.len())
            .ok_or_else(|| error(": plugins", None, "cannot be located in the text".into()))?;
        Ok(Conflist {
            text: text.to_owned(),
            array,
            entries: entries.clone(),
        })
    }

    fn is_ours(&self, index: usize, plugin_type: &str) -> bool {
        self.entries[index].get("type").and_then(Value::as_str) == Some(plugin_type)
    }

    /// The list with `entry` as the last plugin, replacing any entry of the same `type`.
    /// Unchanged text when it already is the last and only one, with the same contents.
    pub fn with_entry(&self, entry: &PluginEntry) -> String {
        let ours: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.is_ours(i, &entry.plugin_type))
            .collect();
        let last = self.entries.len().checked_sub(1);
        if ours.len() == 1 && Some(ours[0]) == last && self.entries[ours[0]] == entry.to_value() {
            return self.text.clone();
        }
        let indent = self.entry_indent();
        let separator = self.entry_separator();
        let newline = if self.text.contains("\r\n") {
            "\r\n"
        } else {
            "\n"
        };
        let text = entry.render(indent.as_deref(), newline);
        self.rebuild(&ours, Some((&separator, text)))
    }

    /// The list without any entry of type `plugin_type`; unchanged text when it has none.
    pub fn without(&self, plugin_type: &str) -> String {
        let ours: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.is_ours(i, plugin_type))
            .collect();
        if ours.is_empty() {
            return self.text.clone();
        }
        self.rebuild(&ours, None)
    }

    /// The text with entries `removed` taken out and `appended` (separator, entry) added at
    /// the end. Kept entries keep their bytes and the separators that preceded them.
    fn rebuild(&self, removed: &[usize], appended: Option<(&str, String)>) -> String {
        let PluginsArray {
            open,
            close,
            entries,
        } = &self.array;
        let text = &self.text;
        let lead_end = entries.first().map_or(*close, |r| r.start);
        let lead = &text[open + 1..lead_end];
        let trail = entries.last().map_or("", |r| &text[r.end..*close]);
        let mut inside = String::new();
        let mut first_kept = true;
        for (i, range) in entries.iter().enumerate() {
            if removed.contains(&i) {
                continue;
            }
            if first_kept {
                inside.push_str(lead);
                first_kept = false;
            } else {
                inside.push_str(&text[entries[i - 1].end..range.start]);
            }
            inside.push_str(&text[range.clone()]);
        }
        if let Some((separator, entry)) = appended {
            if first_kept {
                inside.push_str(lead);
            } else {
                inside.push_str(separator);
            }
            inside.push_str(&entry);
        }
        inside.push_str(trail);
        format!("{}{inside}{}", &text[..=*open], &text[*close..])
    }

    /// The indentation of the entries (the whitespace after the last line break before the
    /// last entry), or `None` when the entries share a line with what precedes them.
    fn entry_indent(&self) -> Option<String> {
        let before = match self.array.entries.len() {
            0 => &self.text[self.array.open + 1..self.array.close],
            n => {
                let start = self.array.entries[n - 1].start;
                let from = if n > 1 {
                    self.array.entries[n - 2].end
                } else {
                    self.array.open + 1
                };
                &self.text[from..start]
            }
        };
        before.rfind('\n').map(|at| before[at + 1..].to_owned())
    }

    /// What goes between the last kept entry and a new one: the list's own separator
    /// between its last two entries, or a comma and the first entry's leading whitespace.
    fn entry_separator(&self) -> String {
        let entries = &self.array.entries;
        match entries.len() {
            0 => String::new(),
            1 => format!(",{}", &self.text[self.array.open + 1..entries[0].start]),
            n => self.text[entries[n - 2].end..entries[n - 1].start].to_owned(),
        }
    }
}

/// Finds the top-level `plugins` array and its entries. The text is valid JSON (checked
/// before), so a scanner that only tells strings, nesting and separators apart suffices.
fn locate_plugins_array(text: &str) -> Option<PluginsArray> {
    let bytes = text.as_bytes();
    let mut i = skip_whitespace(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_whitespace(bytes, i);
        match bytes.get(i)? {
            b'}' => return None,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = end_of_string(bytes, i)?;
        let key: String = serde_json::from_str(&text[i..key_end]).ok()?;
        i = skip_whitespace(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        i = skip_whitespace(bytes, i + 1);
        let value_end = end_of_value(bytes, i)?;
        if key == "plugins" && bytes[i] == b'[' {
            return entries_of_array(bytes, i);
        }
        i = value_end;
    }
}

fn entries_of_array(bytes: &[u8], open: usize) -> Option<PluginsArray> {
    let mut entries = Vec::new();
    let mut i = open + 1;
    loop {
        i = skip_whitespace(bytes, i);
        match bytes.get(i)? {
            b']' => {
                return Some(PluginsArray {
                    open,
                    close: i,
                    entries,
                });
            }
            b',' => i += 1,
            _ => {
                let end = end_of_value(bytes, i)?;
                entries.push(i..end);
                i = end;
            }
        }
    }
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b" \t\r\n".contains(b)) {
        i += 1;
    }
    i
}

/// `bytes[start]` is `"`; returns the index after the closing quote.
fn end_of_string(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index after the value starting at `start`.
fn end_of_value(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => end_of_string(bytes, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = end_of_string(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = start;
            while bytes.get(i).is_some_and(|b| !b" \t\r\n,}]".contains(b)) {
                i += 1;
            }
            Some(i)
        }
    }
}

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

fn replace_if_different(path: &Path, old: &str, new: &str) -> Result<Change> {
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

fn remove_binary(path: &Path) -> Result<Change> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The AWS VPC CNI's list as it writes it on a node (egress-cni and portmap after the
    /// interface plugin), with odd spacing and key order that re-serialising would lose.
    const AWS_CONFLIST: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "aws-cni",
  "disableCheck": true,
  "plugins": [
    {
      "name": "aws-cni",
      "type": "aws-cni",
      "vethPrefix": "eni",
      "mtu": "9001",
      "podSGEnforcingMode": "strict",
      "pluginLogFile": "/var/log/aws-routed-eni/plugin.log",
      "pluginLogLevel": "DEBUG",
      "capabilities": {"io.kubernetes.cri.pod-annotations": true}
    },
    {
      "name": "egress-cni",
      "type": "egress-cni",
      "mtu": "9001",
      "enabled": "false",
      "randomizeSNAT": "prng",
      "nodeIP": "",
      "ipam": {
         "type": "host-local",
         "ranges": [[{"subnet": "fd00::ac:00/118"}]],
         "routes": [{"dst": "::/0"}],
         "dataDir": "/run/cni/v4pd/egress-v6-ipam"
      },
      "pluginLogFile": "/var/log/aws-routed-eni/egress-v6-plugin.log",
      "pluginLogLevel": "DEBUG"
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true},
      "snat": true,
      "conditionsV4":   ["!", "-s", "10.0.0.0/8"],
      "weird\u0020key": 1.50e3
    }
  ]
}
"#;

    fn entry(keys: Value) -> PluginEntry {
        let Value::Object(map) = keys else {
            unreachable!("test input is an object")
        };
        let overrides = map.into_iter().collect();
        PluginEntry::build("test", None, overrides, None).unwrap()
    }

    fn mesh_entry() -> PluginEntry {
        entry(json!({
            "ignoredUID": "1337", "proxyIngressPort": "15000", "proxyEgressPort": "15001",
            "appPorts": ["8080", "8081"], "enableIPv6": true
        }))
    }

    fn list(text: &str) -> Conflist {
        Conflist::parse("test", text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The bytes of every entry that is not meshinit's, in order.
    fn other_entries(text: &str, plugin_type: &str) -> Vec<String> {
        let parsed = list(text);
        parsed
            .array
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !parsed.is_ours(*i, plugin_type))
            .map(|(_, r)| text[r.clone()].to_owned())
            .collect()
    }

    #[test]
    fn locates_the_entries_of_the_plugins_array() {
        let parsed = list(AWS_CONFLIST);
        assert_eq!(parsed.array.entries.len(), 3);
        for range in &parsed.array.entries {
            let text = &AWS_CONFLIST[range.clone()];
            assert!(text.starts_with('{') && text.ends_with('}'), "{text}");
        }
        assert_eq!(&AWS_CONFLIST[parsed.array.open..=parsed.array.open], "[");
        assert_eq!(&AWS_CONFLIST[parsed.array.close..=parsed.array.close], "]");
    }

    #[test]
    fn install_appends_the_entry_and_keeps_every_other_byte() {
        let installed = list(AWS_CONFLIST).with_entry(&mesh_entry());
        // Everything before the end of the last original entry is the original, byte for byte.
        let last_end = list(AWS_CONFLIST).array.entries[2].end;
        assert_eq!(&installed[..last_end], &AWS_CONFLIST[..last_end]);
        // After it: the separator, our entry, and the original tail.
        let tail = &AWS_CONFLIST[last_end..];
        assert!(installed.ends_with(tail), "{installed}");
        let added = &installed[last_end..installed.len() - tail.len()];
        assert_eq!(
            added,
            ",\n    {\n      \"type\": \"meshinit\",\n      \"ignoredUID\": \"1337\",\n      \
             \"proxyIngressPort\": \"15000\",\n      \"proxyEgressPort\": \"15001\",\n      \
             \"appPorts\": [\"8080\", \"8081\"],\n      \"enableIPv6\": true\n    }"
        );
        let value: Value = serde_json::from_str(&installed).unwrap();
        assert_eq!(value["plugins"][3], mesh_entry().to_value());
        assert_eq!(
            other_entries(&installed, "meshinit"),
            other_entries(AWS_CONFLIST, "meshinit")
        );
    }

    #[test]
    fn install_is_idempotent() {
        let once = list(AWS_CONFLIST).with_entry(&mesh_entry());
        let twice = list(&once).with_entry(&mesh_entry());
        assert_eq!(once, twice);
    }

    #[test]
    fn install_updates_an_older_entry_and_moves_it_to_the_end() {
        let old = entry(json!({"ignoredUID": "1000", "proxyEgressPort": "15001"}));
        let first = list(AWS_CONFLIST).with_entry(&old);
        // Another plugin appended after ours (a second installer, a manual edit).
        let extra = list(&first).with_entry(&PluginEntry {
            plugin_type: "bandwidth".into(),
            keys: vec![],
        });
        let updated = list(&extra).with_entry(&mesh_entry());
        let value: Value = serde_json::from_str(&updated).unwrap();
        let types: Vec<&str> = value["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["aws-cni", "egress-cni", "portmap", "bandwidth", "meshinit"]
        );
        assert_eq!(value["plugins"][4], mesh_entry().to_value());
        assert_eq!(
            other_entries(&updated, "meshinit"),
            other_entries(&extra, "meshinit")
        );
    }

    #[test]
    fn duplicate_entries_collapse_into_one() {
        let with_two = AWS_CONFLIST.replacen(
            "\"type\": \"portmap\"",
            "\"type\": \"meshinit\", \"ignoredUID\": \"1\", \"proxyEgressPort\": \"1\"",
            1,
        );
        let once = list(&with_two).with_entry(&mesh_entry());
        let parsed = list(&once);
        assert_eq!(
            (0..parsed.entries.len())
                .filter(|&i| parsed.is_ours(i, "meshinit"))
                .count(),
            1
        );
        assert_eq!(parsed.entries.len(), 3);
    }

    #[test]
    fn uninstall_restores_the_original_bytes() {
        let installed = list(AWS_CONFLIST).with_entry(&mesh_entry());
        assert_eq!(list(&installed).without("meshinit"), AWS_CONFLIST);
        // And removing what is not there changes nothing.
        assert_eq!(list(AWS_CONFLIST).without("meshinit"), AWS_CONFLIST);
    }

    #[test]
    fn uninstall_of_a_first_or_only_entry_keeps_the_rest_valid() {
        let first = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"meshinit"}, {"type":"bridge"}]}"#;
        assert_eq!(
            list(first).without("meshinit"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#
        );
        let only =
            "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"plugins\":[\n  {\"type\":\"meshinit\"}\n]}";
        let emptied = list(only).without("meshinit");
        assert_eq!(
            emptied,
            "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"plugins\":[\n]}"
        );
        serde_json::from_str::<Value>(&emptied).unwrap();
    }

    #[test]
    fn compact_lists_get_a_compact_entry_and_empty_lists_get_one() {
        let compact = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#;
        let installed = list(compact).with_entry(&entry(
            json!({"ignoredUID": "1337", "proxyEgressPort": "15001"}),
        ));
        assert_eq!(
            installed,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type": "meshinit", "ignoredUID": "1337", "proxyEgressPort": "15001"}]}"#
        );
        let empty = r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#;
        let installed = list(empty).with_entry(&mesh_entry());
        let value: Value = serde_json::from_str(&installed).unwrap();
        assert_eq!(value["plugins"][0], mesh_entry().to_value());
    }

    #[test]
    fn crlf_lists_keep_their_line_endings() {
        let crlf = AWS_CONFLIST.replace('\n', "\r\n");
        let installed = list(&crlf).with_entry(&mesh_entry());
        assert!(
            !installed.replace("\r\n", "").contains('\n'),
            "{installed:?}"
        );
        assert_eq!(list(&installed).without("meshinit"), crlf);
    }

    #[test]
    fn strings_with_brackets_and_escapes_do_not_confuse_the_scanner() {
        let tricky = r#"{"name":"a]\"}[","cniVersion":"0.3.1","x":{"plugins":[1]},"plugins":[{"type":"bridge","s":"},{\\"}]}"#;
        let parsed = list(tricky);
        assert_eq!(parsed.array.entries.len(), 1);
        assert_eq!(
            &tricky[parsed.array.entries[0].clone()],
            r#"{"type":"bridge","s":"},{\\"}"#
        );
    }

    #[test]
    fn the_drop_in_type_replaces_the_app_mesh_plugin() {
        let aws = r#"{"cniVersion":"0.3.0","name":"ecs","plugins":[{"type":"ecs-bridge"},{"type":"aws-appmesh","ignoredUID":"1337","proxyEgressPort":"15001","appPorts":["80"]}]}"#;
        let mut ours = mesh_entry();
        ours.plugin_type = "aws-appmesh".into();
        let installed = list(aws).with_entry(&ours);
        let value: Value = serde_json::from_str(&installed).unwrap();
        assert_eq!(value["plugins"].as_array().unwrap().len(), 2);
        assert_eq!(value["plugins"][1], ours.to_value());
    }

    #[test]
    fn bad_lists_are_refused_naming_the_problem() {
        let cases = [
            ("{", "not valid JSON"),
            ("[]", "must be a JSON object"),
            (r#"{"cniVersion":"1.0.0","type":"bridge"}"#, "single plugin"),
            (r#"{"cniVersion":"1.0.0","plugins":{}}"#, "must be an array"),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"name":"x"}]}"#,
                "plugins[0]",
            ),
            (r#"{"cniVersion":"0.2.0","plugins":[]}"#, "cniVersion"),
            (
                r#"{"cniVersion":"1.0.0","plugins":[],"plugins":[]}"#,
                "duplicate key",
            ),
        ];
        for (text, expected) in cases {
            let errors = Conflist::parse("list", text).unwrap_err();
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn bad_entries_are_refused_naming_the_key() {
        let build = |keys: Value, plugin_type: Option<&str>| {
            let Value::Object(map) = keys else {
                unreachable!()
            };
            PluginEntry::build("entry.json", None, map.into_iter().collect(), plugin_type)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let message = build(
            json!({"ignoredUID": "1337", "proxyEgresPort": "15001"}),
            None,
        );
        assert!(
            message.contains("proxyEgresPort") && message.contains("proxyEgressPort"),
            "{message}"
        );
        let message = build(json!({"ignoredUID": "1337"}), None);
        assert!(message.contains("proxyEgressPort"), "{message}");
        let message = build(json!({"ignoredUID": "1337", "proxyEgressPort": "x"}), None);
        assert!(message.contains("\"x\""), "{message}");
        let message = build(
            json!({"ignoredUID": "1337", "proxyEgressPort": "15001"}),
            Some("../bin/sh"),
        );
        assert!(message.contains("--type"), "{message}");
        let message = build(
            json!({"ignoredUID": "1337", "proxyEgressPort": "15001", "cniVersion": "1.0.0"}),
            None,
        );
        assert!(message.contains("cniVersion"), "{message}");
    }

    #[test]
    fn entry_file_keys_are_overridden_by_flags_and_keep_their_order() {
        let object: UniqueKeyObject = serde_json::from_str(
            r#"{"type": "aws-appmesh", "proxyEgressPort": "15001", "ignoredUID": "1", "capabilities": {"appPorts": true}}"#,
        )
        .unwrap();
        let built = PluginEntry::build(
            "entry.json",
            Some(object),
            vec![("ignoredUID".into(), json!("1337"))],
            None,
        )
        .unwrap();
        assert_eq!(built.plugin_type, "aws-appmesh");
        let keys: Vec<&str> = built.keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ignoredUID", "proxyEgressPort", "capabilities"]);
        assert_eq!(built.keys[0].1, json!("1337"));
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
