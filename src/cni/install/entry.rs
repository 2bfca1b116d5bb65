//! meshinit's entry in a configuration list: built from `--entry FILE` and the flags,
//! validated as CNI mode reads it at ADD time, and rendered as text in the list's style.

use serde_json::{Map, Value};

use crate::config::properties::{self, Source};
use crate::config::sources::cni::parse_network_config;
use crate::config::sources::json::UniqueKeyObject;
use crate::config::validate;
use crate::error::ConfigError;

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
        // The App Mesh keys first, in the table's order; anything else after them.
        let app_mesh_keys = properties::app_mesh_spellings(Source::Cni);
        keys.sort_by_key(|(k, _)| {
            app_mesh_keys
                .iter()
                .position(|p| p == k)
                .unwrap_or(app_mesh_keys.len())
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
        let mut settings = parse_network_config(&object)
            .map_err(|es| es.into_iter().map(label).collect::<Vec<_>>())?;
        if crate::cni::pod::declares_pod_annotations(&self.keys) {
            // Per-pod entries hold node-wide defaults that each pod's annotations complete:
            // what they give must be valid, but they need not be complete.
            settings = pod_defaults_placeholder().overlay(settings);
        }
        validate(&settings).map(|_| ()).map_err(|es| {
            crate::cni::attachment::with_network_config_names(es)
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
    pub(super) fn render(&self, indent: Option<&str>, newline: &str) -> String {
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
/// Stand-ins for the settings every meshed pod needs, so that an entry of defaults is
/// validated for what it holds, not for what its pods' annotations will add.
fn pod_defaults_placeholder() -> crate::config::settings::RawSettings {
    use crate::config::settings::{Property, RawSettings, Vocabulary};
    RawSettings::spelled(
        Vocabulary::Cni,
        [
            (Property::IgnoredUid, "1337"),
            (Property::ProxyEgressPort, "15001"),
        ],
    )
}

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
pub(super) fn check_plugin_type(name: &str) -> Result<(), Vec<ConfigError>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
