//! A configuration list read for editing: where its `plugins` array and entries lie in the
//! text (a small scanner), and the text with meshinit's entry spliced in or taken out.

use std::ops::Range;

use serde_json::Value;

use super::entry::PluginEntry;
use crate::cni::version::SUPPORTED_VERSIONS;
use crate::config::sources::json::from_str_unique_keys;
use crate::error::ConfigError;

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
    pub(super) text: String,
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

    /// Whether an entry of type `plugin_type` is in the list.
    pub fn has(&self, plugin_type: &str) -> bool {
        (0..self.entries.len()).any(|i| self.is_ours(i, plugin_type))
    }

    /// Whether the list holds no plugin at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// meshinit is chained after an interface plugin: a list with no plugin other than
    /// `plugin_type` would make it the whole chain, which sets up no interface.
    pub fn check_chainable(&self, plugin_type: &str) -> Result<(), Vec<ConfigError>> {
        if (0..self.entries.len()).any(|i| !self.is_ours(i, plugin_type)) {
            return Ok(());
        }
        Err(vec![ConfigError::new(
            "--conflist: plugins",
            Some(&Value::Array(self.entries.clone()).to_string()),
            format!(
                "holds no plugin besides {plugin_type:?}: {}, so the list must already hold \
                 the interface plugin (aws-cni, bridge, ptp...)",
                super::BINARY_MARKER
            ),
        )])
    }

    /// The text of each entry of type `plugin_type`, as written.
    pub fn entry_texts(&self, plugin_type: &str) -> Vec<String> {
        (0..self.entries.len())
            .filter(|&i| self.is_ours(i, plugin_type))
            .map(|i| self.text[self.array.entries[i].clone()].to_owned())
            .collect()
    }

    /// The list with `entries` (texts, as written) added at the end.
    pub fn with_raw_entries(&self, entries: &[String]) -> String {
        if entries.is_empty() {
            return self.text.clone();
        }
        let separator = self.entry_separator();
        let joined = entries.join(if separator.is_empty() {
            ","
        } else {
            &separator
        });
        self.rebuild(&[], Some((&separator, joined)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::install::test_support::{AWS_CONFLIST, entry, mesh_entry};
    use serde_json::json;

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
    fn a_list_without_another_plugin_is_not_chainable() {
        let empty = r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#;
        let message = format!("{:?}", list(empty).check_chainable("meshinit").unwrap_err());
        assert!(message.contains("interface plugin"), "{message}");
        let only_ours = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"meshinit"}]}"#;
        assert!(list(only_ours).check_chainable("meshinit").is_err());
        assert!(list(only_ours).check_chainable("aws-appmesh").is_ok());
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
}
