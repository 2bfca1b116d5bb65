//! The App Mesh CNI plugin's network configuration (`aws-appmesh`): string ports, string
//! arrays for lists, and a boolean `enableIPv6`, beside the standard CNI keys.

use serde_json::Value;

use super::json::{UniqueKeyObject, scalar_text};
use super::suggest::{self, Suggester};
use crate::config::settings::{ListValue, RawSettings, Setting, Vocabulary};
use crate::error::ConfigError;

/// The plugin-specific keys of the `aws-appmesh` network config.
pub const PROPERTY_NAMES: [&str; 8] = [
    "ignoredUID",
    "ignoredGID",
    "proxyIngressPort",
    "proxyEgressPort",
    "appPorts",
    "egressIgnoredPorts",
    "egressIgnoredIPs",
    "enableIPv6",
];

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

/// Keys a runtime injects; read by the CNI mode (`runtimeConfig`, `capabilities`).
const RUNTIME_KEYS: [&str; 2] = ["runtimeConfig", "capabilities"];

/// Reads a CNI network config object.
pub fn parse_network_config(object: &UniqueKeyObject) -> Result<RawSettings, Vec<ConfigError>> {
    let mut settings = RawSettings {
        vocabulary: Some(Vocabulary::Cni),
        ..RawSettings::default()
    };
    let mut errors = Vec::new();
    let mut suggester = Suggester::default();
    for (key, value) in &object.0 {
        let ours = PROPERTY_NAMES.contains(&key.as_str())
            || STANDARD_KEYS.contains(&key.as_str())
            || RUNTIME_KEYS.contains(&key.as_str());
        if !ours {
            errors.push(ConfigError::new(
                key,
                None,
                suggester.hint(key, &known_keys()),
            ));
        } else if let Err(e) = assign(&mut settings, key, value) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

/// Assigns one key of a CNI-style object (the network config itself, or a `runtimeConfig`
/// / `CNI_ARGS` override using the same key names).
pub fn assign(settings: &mut RawSettings, key: &str, value: &Value) -> Result<(), ConfigError> {
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
        k if STANDARD_KEYS.contains(&k) || RUNTIME_KEYS.contains(&k) => {}
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
