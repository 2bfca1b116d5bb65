//! The App Mesh CNI plugin's network configuration (`aws-appmesh`): string ports, string
//! arrays for lists, and a boolean `enableIPv6`, beside the standard CNI keys.

use serde_json::Value;

use super::json::{UniqueKeyObject, scalar_text};
use super::suggest::{self, Suggester};
use crate::config::properties::{self, Kind, Source};
use crate::config::settings::{RawSettings, Vocabulary, join_items};
use crate::error::ConfigError;

/// Keys the CNI specification defines for any plugin's config; they are accepted and, apart
/// from what the CNI mode reads itself, ignored here.
pub const STANDARD_KEYS: [&str; 9] = [
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "args",
    "ipMasq",
    "ipam",
    "dns",
    "prevResult",
];

/// Keys a runtime injects and the Kubernetes per-pod mode's own (`excludeNamespaces`, read
/// by `crate::cni::pod`): read by the CNI mode, not settings.
const RUNTIME_KEYS: [&str; 3] = ["runtimeConfig", "capabilities", "excludeNamespaces"];

/// Keys the runtime reserves (`cni.dev/valid-attachments` on GC, future ones): never ours,
/// never an error.
const RESERVED_KEY_PREFIX: &str = "cni.dev/";

/// What is wrong with a network config, kept apart because the CNI mode answers them with
/// different codes (2: unsupported field, 7: invalid network config).
#[derive(Debug, Default)]
pub struct NetconfProblems {
    /// Keys that are nobody's, each with the nearest known key.
    pub unknown_keys: Vec<ConfigError>,
    /// Our keys with values that are not of their kind.
    pub bad_values: Vec<ConfigError>,
}

impl NetconfProblems {
    /// Every problem, unknown keys first: what the command line reports (exit 2).
    pub fn all(self) -> Vec<ConfigError> {
        self.unknown_keys
            .into_iter()
            .chain(self.bad_values)
            .collect()
    }
}

/// Reads a CNI network config object: the one reader of the command line (`meshinit apply
/// netconf.json`), of `cni install`'s entry and of the CNI mode.
pub fn read_network_config<'a>(
    keys: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> Result<RawSettings, NetconfProblems> {
    let mut settings = RawSettings::default();
    settings.vocabulary = Some(Vocabulary::Cni);
    let mut problems = NetconfProblems::default();
    let mut suggester = Suggester::default();
    for (key, value) in keys {
        let ours = properties::find(Source::Cni, key).is_some()
            || STANDARD_KEYS.contains(&key.as_str())
            || RUNTIME_KEYS.contains(&key.as_str())
            || key.starts_with(RESERVED_KEY_PREFIX);
        if !ours {
            problems.unknown_keys.push(ConfigError::new(
                key,
                Some(&value.to_string()),
                suggester.hint(key, &known_keys()),
            ));
        } else if let Err(e) = assign(&mut settings, key, value) {
            problems.bad_values.push(e);
        }
    }
    if problems.unknown_keys.is_empty() && problems.bad_values.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

/// Reads a CNI network config object, every problem alike (the command line's view).
pub fn parse_network_config(object: &UniqueKeyObject) -> Result<RawSettings, Vec<ConfigError>> {
    read_network_config(object.0.iter().map(|(key, value)| (key, value)))
        .map_err(NetconfProblems::all)
}

/// Assigns one key of a CNI-style object (the network config itself, or a `runtimeConfig`
/// / `CNI_ARGS` override using the same key names).
///
/// `null` leaves the key unset, as Go's `encoding/json` does for the AWS plugin (a null
/// into a string, a slice or a bool is a no-op): the ECS agent sends unset fields of an
/// egress-only task that way (`"appPorts": null`). An empty string is unset too (every
/// source's rule), and so is a list holding one empty string (`[""]`), as the AWS plugin
/// reads it.
pub fn assign(settings: &mut RawSettings, key: &str, value: &Value) -> Result<(), ConfigError> {
    let Some(spec) = properties::find(Source::Cni, key) else {
        if STANDARD_KEYS.contains(&key)
            || RUNTIME_KEYS.contains(&key)
            || key.starts_with(RESERVED_KEY_PREFIX)
        {
            return Ok(());
        }
        return Err(ConfigError::new(
            key,
            None,
            suggest::hint(key, &known_keys()),
        ));
    };
    if value.is_null() {
        return Ok(());
    }
    let text = match (spec.kind, value) {
        (kind, value) if kind.is_list() => list(key, value)?,
        // `enableIPv6` is a JSON boolean in the App Mesh plugin's config, nothing else.
        (Kind::Ipv6Mode, Value::Bool(enabled)) => enabled.to_string(),
        (Kind::Ipv6Mode, other) => {
            return Err(ConfigError::new(
                key,
                Some(&other.to_string()),
                "must be a boolean (true or false)",
            ));
        }
        (_, value) => scalar_text(key, value)?,
    };
    settings.put(spec.property, key, &text);
    Ok(())
}

/// The keys an unknown one is compared with for a suggestion.
fn known_keys() -> Vec<&'static str> {
    let mut keys = properties::spellings(Source::Cni);
    keys.extend(STANDARD_KEYS);
    keys
}

/// A list: a JSON array of strings (or numbers), or, leniently, one comma-separated string.
fn list(key: &str, value: &Value) -> Result<String, ConfigError> {
    match value {
        Value::Array(items) => {
            let texts = items
                .iter()
                .map(|item| scalar_text(key, item))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(join_items(&texts))
        }
        Value::String(text) => Ok(text.clone()),
        other => Err(ConfigError::new(
            key,
            Some(&other.to_string()),
            "must be an array of strings",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::properties::Property;
    use serde_json::json;

    #[test]
    fn null_and_empty_values_are_unset_as_go_reads_them() {
        let config = json!({
            "cniVersion": "0.3.0", "ignoredUID": "1337", "proxyEgressPort": "15001",
            "appPorts": null, "proxyIngressPort": "", "ignoredGID": null,
            "egressIgnoredPorts": [""], "egressIgnoredIPs": null, "enableIPv6": null
        });
        let Value::Object(keys) = config else {
            unreachable!()
        };
        let settings = read_network_config(&keys).unwrap();
        for unset in [
            Property::AppPorts,
            Property::ProxyIngressPort,
            Property::IgnoredGid,
            Property::EgressIgnoredIps,
            Property::Ipv6,
        ] {
            assert!(settings.get(unset).is_none(), "{unset:?}");
        }
        let ports = settings.get(Property::EgressIgnoredPorts).unwrap();
        assert_eq!(ports.list().items().count(), 0);
    }
}
