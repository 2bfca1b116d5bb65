//! The mesh settings of one attachment: the network configuration's keys, overridden per
//! pod by `CNI_ARGS`, overridden in turn by `runtimeConfig`.

use std::collections::HashSet;

use serde_json::{Map, Value};
use tracing::{debug, warn};

use super::protocol::{CniError, code};
use crate::config::properties::{self, Property, Source};
use crate::config::settings::{RawSettings, Vocabulary};
use crate::config::sources::{cni, suggest};
use crate::error::{ConfigError, quote};

/// `CNI_ARGS` keys the CNI conventions define for Kubernetes; accepted and not used.
const WELL_KNOWN_ARGS: [&str; 4] = [
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// The `CNI_ARGS` key that lets a plugin skip keys it does not know (CNI conventions).
const IGNORE_UNKNOWN: &str = "IgnoreUnknown";

/// Settings from the network configuration alone, through the one netconf reader. Unknown
/// keys are code 2 (naming them, with the nearest known key); malformed values of known keys
/// code 7.
pub fn from_network_config(keys: &Map<String, Value>) -> Result<RawSettings, CniError> {
    cni::read_network_config(keys).map_err(|problems| {
        if problems.unknown_keys.is_empty() {
            CniError::invalid_config(&problems.bad_values)
        } else {
            CniError::unsupported_fields(&problems.unknown_keys)
        }
    })
}

/// Per-pod settings from `CNI_ARGS` (`KEY=VALUE;KEY=VALUE`). A key is a network
/// configuration key in any letter case (`appPorts`, or the ECS property name `AppPorts`);
/// lists are comma-separated; `enableIPv6` also takes `auto`, `on`, `off`. As the CNI
/// conventions ask, a key given twice is an error, and so is a key meshinit does not know
/// unless `IgnoreUnknown=1` (or `true`) is among the pairs; the Kubernetes keys
/// (`K8S_POD_NAME`...) are known. Those are code 4, like a pair without `=`; a bad value of
/// one of our keys is code 7.
pub fn from_cni_args(args: &str) -> Result<RawSettings, CniError> {
    let bad_args = |msg: String| {
        CniError::new(
            code::INVALID_ENVIRONMENT,
            msg,
            "CNI_ARGS holds KEY=VALUE pairs separated by ';', each key once, e.g. \
             IgnoreUnknown=1;AppPorts=8080",
        )
    };
    let mut pairs = Vec::new();
    let mut seen = HashSet::new();
    for pair in args.split(';').filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(bad_args(format!(
                "CNI_ARGS: {} is not KEY=VALUE",
                quote(pair)
            )));
        };
        // Our keys in any letter case are one key.
        let canonical = match our_key(key) {
            Some(property) => property.to_ascii_lowercase(),
            None => key.to_owned(),
        };
        if !seen.insert(canonical) {
            return Err(bad_args(format!(
                "CNI_ARGS: {} is given more than once",
                quote(key)
            )));
        }
        pairs.push((key, value));
    }
    let ignore_unknown = match pairs.iter().find(|(key, _)| *key == IGNORE_UNKNOWN) {
        None => false,
        Some((_, value)) => match value.trim_ascii().to_ascii_lowercase().as_str() {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => {
                return Err(bad_args(format!(
                    "CNI_ARGS: {IGNORE_UNKNOWN}={} is not 1/true or 0/false",
                    quote(value)
                )));
            }
        },
    };

    let mut settings = RawSettings::default();
    let mut errors = Vec::new();
    for (key, value) in pairs {
        let Some(property) = our_key(key) else {
            if key == IGNORE_UNKNOWN || WELL_KNOWN_ARGS.contains(&key) {
                continue;
            }
            let near = suggest::closest(key, &properties::app_mesh_spellings(Source::Cni));
            if ignore_unknown {
                // Another plugin's key, or a typo of ours: worth a line when it looks like one.
                match near {
                    Some(near) => warn!(
                        "CNI_ARGS {key} is not a meshinit key (did you mean {near}?); ignored \
                         (IgnoreUnknown)"
                    ),
                    None => debug!("CNI_ARGS {key} is not a meshinit key; ignored (IgnoreUnknown)"),
                }
                continue;
            }
            let hint = match near {
                Some(near) => format!("did you mean {near}? "),
                None => String::new(),
            };
            return Err(bad_args(format!(
                "CNI_ARGS: unknown key {}; {hint}keys for other plugins need IgnoreUnknown=1",
                quote(key)
            )));
        };
        let label = format!("CNI_ARGS {key}");
        let mut one = RawSettings::default();
        if property == Property::Ipv6.spec().cni {
            // The text goes to the IPv6 mode parser, which also knows auto/on/off.
            one.put(Property::Ipv6, &label, value);
        } else if let Err(e) = cni::assign(&mut one, property, &Value::String(value.to_owned())) {
            errors.push(ConfigError {
                property: label.clone(),
                ..e
            });
        }
        one.relabel(&label);
        settings = settings.overlay(one);
    }
    if errors.is_empty() {
        Ok(settings.spelled_in(Vocabulary::Cni))
    } else {
        Err(CniError::invalid_config(&errors))
    }
}

/// The App Mesh network configuration key `key` names, in any letter case (the ECS
/// property names are the same but for the first letter).
fn our_key(key: &str) -> Option<&'static str> {
    properties::app_mesh_spellings(Source::Cni)
        .into_iter()
        .find(|name| name.eq_ignore_ascii_case(key))
}

/// Per-pod settings from `runtimeConfig`, which a runtime fills for the capabilities the
/// network configuration declares (`"capabilities": {"appPorts": true}`). Keys and value
/// types are those of the network configuration. When the request still carries
/// `capabilities`, a key is honoured only if its capability is declared `true` there (an
/// undeclared one is ignored with a warning); other capabilities' keys are not ours.
pub fn from_runtime_config(
    runtime_config: &Value,
    capabilities: Option<&Value>,
) -> Result<RawSettings, CniError> {
    let Value::Object(keys) = runtime_config else {
        return Err(CniError::invalid_config(&[ConfigError::new(
            "runtimeConfig",
            Some(&runtime_config.to_string()),
            "must be a JSON object",
        )]));
    };
    // A runtime that follows the specification removes `capabilities` from the request
    // after building runtimeConfig from the declared ones alone; libcni keeps it, and then
    // what it declares is checked here.
    let declared = match capabilities {
        None | Some(Value::Null) => None,
        Some(Value::Object(declared)) => Some(declared),
        Some(other) => {
            return Err(CniError::new(
                code::DECODING_FAILURE,
                format!(
                    "cannot decode the network configuration: capabilities: {} is not an \
                     object of booleans",
                    quote(&other.to_string())
                ),
                "",
            ));
        }
    };
    let mut settings = RawSettings::default();
    let mut errors = Vec::new();
    for (key, value) in keys {
        if !properties::app_mesh_spellings(Source::Cni).contains(&key.as_str()) {
            continue;
        }
        if declared.is_some_and(|declared| declared.get(key) != Some(&Value::Bool(true))) {
            warn!(
                "runtimeConfig.{key} ignored: the network configuration does not declare the \
                 capability (\"capabilities\": {{\"{key}\": true}})"
            );
            continue;
        }
        let label = format!("runtimeConfig.{key}");
        let mut one = RawSettings::default();
        match cni::assign(&mut one, key, value) {
            Ok(()) => {
                one.relabel(&label);
                settings = settings.overlay(one);
            }
            Err(e) => errors.push(ConfigError {
                property: label,
                ..e
            }),
        }
    }
    if errors.is_empty() {
        Ok(settings.spelled_in(Vocabulary::Cni))
    } else {
        Err(CniError::invalid_config(&errors))
    }
}

/// Validation names a missing property by its ECS name; in CNI mode the key to add is the
/// network configuration's.
pub fn with_network_config_names(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    for error in &mut errors {
        if let Some(key) = our_key(&error.property) {
            error.property = key.to_owned();
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test input is an object"),
        }
    }

    fn app_ports(settings: &RawSettings) -> Vec<&str> {
        let setting = settings.get(Property::AppPorts).expect("app ports set");
        setting.list().items().collect()
    }

    #[test]
    fn reads_the_aws_appmesh_keys_and_ignores_protocol_and_reserved_ones() {
        let settings = from_network_config(&keys(json!({
            "cniVersion": "1.0.0", "name": "mesh", "type": "aws-appmesh",
            "ignoredUID": "1337", "proxyEgressPort": "15001", "appPorts": ["8080"],
            "prevResult": {}, "runtimeConfig": {}, "capabilities": {},
            "cni.dev/valid-attachments": []
        })))
        .unwrap();
        assert_eq!(settings.get(Property::IgnoredUid).unwrap().value, "1337");
        assert_eq!(app_ports(&settings), vec!["8080"]);
    }

    #[test]
    fn unknown_keys_are_code_2_with_a_suggestion() {
        let error = from_network_config(&keys(json!({"cniVersion": "1.0.0", "appPort": ["80"]})))
            .unwrap_err();
        assert_eq!(error.code, code::UNSUPPORTED_FIELD);
        assert!(
            error.msg.contains("appPort") && error.msg.contains("appPorts"),
            "{}",
            error.msg
        );
        assert!(
            error.msg.contains("80"),
            "the value is named too: {}",
            error.msg
        );
    }

    #[test]
    fn malformed_values_are_code_7_naming_the_key() {
        let error = from_network_config(&keys(json!({"cniVersion": "1.0.0", "enableIPv6": "yes"})))
            .unwrap_err();
        assert_eq!(error.code, code::INVALID_NETWORK_CONFIG);
        assert!(error.msg.contains("enableIPv6"), "{}", error.msg);
    }

    #[test]
    fn cni_args_take_both_spellings_and_ignore_other_plugins_keys() {
        let settings = from_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAME=web;IgnoredUID=1337;proxyEgressPort=15001;AppPorts=8080,8081;;enableipv6=off",
        )
        .unwrap();
        let uid = settings.get(Property::IgnoredUid).unwrap();
        assert_eq!(
            (uid.property.as_str(), uid.value.as_str()),
            ("CNI_ARGS IgnoredUID", "1337")
        );
        assert_eq!(
            settings.get(Property::ProxyEgressPort).unwrap().value,
            "15001"
        );
        assert_eq!(app_ports(&settings), vec!["8080", "8081"]);
        assert_eq!(settings.get(Property::Ipv6).unwrap().value, "off");
    }

    #[test]
    fn cni_args_errors_name_the_variable_and_key() {
        let error = from_cni_args("AppPorts").unwrap_err();
        assert_eq!(error.code, code::INVALID_ENVIRONMENT);
        assert!(error.msg.contains("CNI_ARGS"));
    }

    #[test]
    fn cni_args_refuse_duplicates_and_unknown_keys_unless_told_to_ignore_them() {
        for args in [
            "AppPorts=80;AppPorts=81",
            "ignoreduid=1;IgnoredUID=2",
            "IgnoreUnknown=1;IgnoreUnknown=1",
            "Foo=1",
            "IgnoreUnknown=0;Foo=1",
            "IgnoreUnknown=yes",
        ] {
            let error = from_cni_args(args).unwrap_err();
            assert_eq!(error.code, code::INVALID_ENVIRONMENT, "{args}: {error}");
        }
        let settings = from_cni_args("Foo=1;IgnoreUnknown=TRUE;K8S_POD_UID=u;AppPorts=80").unwrap();
        assert_eq!(app_ports(&settings), vec!["80"]);
        assert!(
            from_cni_args("K8S_POD_NAME=web").is_ok(),
            "well-known keys need no flag"
        );
    }

    #[test]
    fn runtime_config_values_are_labelled_by_their_source() {
        let settings = from_runtime_config(
            &json!({
                "appPorts": ["9080", "9081"], "ignoredGID": "1337", "portMappings": []
            }),
            None,
        )
        .unwrap();
        let app = settings.get(Property::AppPorts).unwrap();
        assert_eq!(app.property, "runtimeConfig.appPorts");
        assert_eq!(app_ports(&settings), vec!["9080", "9081"]);
        let error = from_runtime_config(&json!({"enableIPv6": "yes"}), None).unwrap_err();
        assert_eq!(error.code, code::INVALID_NETWORK_CONFIG);
        assert!(
            error.msg.contains("runtimeConfig.enableIPv6"),
            "{}",
            error.msg
        );
        assert_eq!(
            from_runtime_config(&json!([]), None).unwrap_err().code,
            code::INVALID_NETWORK_CONFIG
        );
    }

    #[test]
    fn runtime_config_keys_need_their_capability_when_capabilities_are_present() {
        let runtime_config = json!({"appPorts": ["9080"], "ignoredGID": "7"});
        let declared = json!({"appPorts": true, "ignoredGID": false, "portMappings": true});
        let settings = from_runtime_config(&runtime_config, Some(&declared)).unwrap();
        assert_eq!(app_ports(&settings), vec!["9080"]);
        assert!(
            settings.get(Property::IgnoredGid).is_none(),
            "undeclared capability"
        );
        let error = from_runtime_config(&runtime_config, Some(&json!(["appPorts"]))).unwrap_err();
        assert_eq!(error.code, code::DECODING_FAILURE);
    }

    #[test]
    fn ecs_names_from_validation_become_network_config_keys() {
        let errors = with_network_config_names(vec![
            ConfigError::new("ProxyEgressPort", None, "missing"),
            ConfigError::new("CNI_ARGS AppPorts", Some("x"), "bad"),
        ]);
        assert_eq!(errors[0].property, "proxyEgressPort");
        assert_eq!(errors[1].property, "CNI_ARGS AppPorts");
    }
}
