//! The App Mesh CNI plugin's network configuration (`aws-appmesh`): string ports, string
//! arrays for lists, and a boolean `enableIPv6`, beside the standard CNI keys.

use serde_json::Value;

use super::json::{UniqueKeyObject, scalar_text};
use super::suggest::{self, Suggester};
use crate::config::mesh;
use crate::config::settings::{ListValue, NAMES, RawSettings, Setting, Vocabulary};
use crate::error::ConfigError;

/// The plugin-specific keys of the `aws-appmesh` network config.
pub const PROPERTY_NAMES: [&str; 8] = NAMES[Vocabulary::Cni as usize];

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

/// Keys a runtime injects, the Kubernetes per-pod mode's own (`excludeNamespaces`, read by
/// `crate::cni::pod`) and `verify` (ADD and CHECK prove the rules with verify's probes): read
/// by the CNI mode, not settings.
const RUNTIME_KEYS: [&str; 4] = [
    "runtimeConfig",
    "capabilities",
    "excludeNamespaces",
    "verify",
];

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
    let mut settings = RawSettings {
        vocabulary: Some(Vocabulary::Cni),
        ..RawSettings::default()
    };
    let mut problems = NetconfProblems::default();
    let mut suggester = Suggester::default();
    for (key, value) in keys {
        let ours = PROPERTY_NAMES.contains(&key.as_str())
            || mesh::CNI_KEYS.contains(&key.as_str())
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
    if value.is_null() && (PROPERTY_NAMES.contains(&key) || mesh::CNI_KEYS.contains(&key)) {
        return Ok(());
    }
    match key {
        "ignoredUID" => settings.ignored_uid = RawSettings::scalar(key, &scalar_text(key, value)?),
        "ignoredGID" => settings.ignored_gid = RawSettings::scalar(key, &scalar_text(key, value)?),
        "proxyIngressPort" => {
            settings.proxy_ingress_port = RawSettings::scalar(key, &scalar_text(key, value)?)
        }
        "proxyEgressPort" => {
            settings.proxy_egress_port = RawSettings::scalar(key, &scalar_text(key, value)?)
        }
        "appPorts" => settings.app_ports = Some(Setting::new(key, list(key, value)?)),
        "egressIgnoredPorts" => {
            settings.egress_ignored_ports = Some(Setting::new(key, list(key, value)?))
        }
        "egressIgnoredIPs" => {
            settings.egress_ignored_ips = Some(Setting::new(key, list(key, value)?))
        }
        "enableIPv6" => match value {
            Value::Bool(enabled) => {
                settings.ipv6 = Some(Setting::new(key, enabled.to_string()));
            }
            other => {
                return Err(ConfigError::new(
                    key,
                    Some(&other.to_string()),
                    "must be a boolean (true or false)",
                ));
            }
        },
        "egressIncludedIPs" => {
            settings.egress_included_ips = Some(Setting::new(key, list(key, value)?))
        }
        "ingressIgnoredPorts" => {
            settings.ingress_ignored_ports = Some(Setting::new(key, list(key, value)?))
        }
        "ignoredInterfaces" => {
            settings.ignored_interfaces = Some(Setting::new(key, list(key, value)?))
        }
        "proxyDNSPort" => {
            settings.proxy_dns_port = RawSettings::scalar(key, &scalar_text(key, value)?)
        }
        "dnsCapture" => settings.dns_capture = RawSettings::scalar(key, &scalar_text(key, value)?),
        "dropInvalid" => {
            let text = match value {
                Value::Bool(on) => on.to_string(),
                other => scalar_text(key, other)?,
            };
            settings.drop_invalid = RawSettings::scalar(key, &text);
        }
        k if STANDARD_KEYS.contains(&k)
            || RUNTIME_KEYS.contains(&k)
            || k.starts_with(RESERVED_KEY_PREFIX) => {}
        unknown => {
            return Err(ConfigError::new(
                unknown,
                None,
                suggest::hint(unknown, &known_keys()),
            ));
        }
    }
    Ok(())
}

/// The keys an unknown one is compared with for a suggestion.
fn known_keys() -> Vec<&'static str> {
    PROPERTY_NAMES
        .iter()
        .chain(&mesh::CNI_KEYS)
        .chain(&STANDARD_KEYS)
        .copied()
        .collect()
}

/// A list: a JSON array of strings (or numbers), or, leniently, one comma-separated string.
fn list(key: &str, value: &Value) -> Result<ListValue, ConfigError> {
    match value {
        Value::Array(items) => {
            let texts = items
                .iter()
                .map(|item| scalar_text(key, item))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ListValue::from_items(&texts))
        }
        Value::String(text) => Ok(ListValue::from_comma_separated(text)),
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
        assert!(settings.app_ports.is_none());
        assert!(settings.proxy_ingress_port.is_none());
        assert!(settings.ignored_gid.is_none());
        assert!(settings.egress_ignored_ips.is_none());
        assert!(settings.ipv6.is_none());
        assert_eq!(
            settings.egress_ignored_ports.unwrap().value.items().count(),
            0
        );
    }
}
