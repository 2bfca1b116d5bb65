//! ECS `proxyConfiguration` (type `APPMESH`): a list of `{"name", "value"}` properties whose
//! values are strings and whose lists are comma-separated.

use std::collections::HashSet;

use serde_json::Value;

use super::json::{UniqueKeyObject, as_object, scalar_text};
use super::suggest::Suggester;
use crate::config::properties::{self, Source};
use crate::config::settings::{RawSettings, Vocabulary};
use crate::error::ConfigError;

const PROXY_CONFIGURATION_KEYS: [&str; 3] = ["type", "containerName", "properties"];

/// Reads a `proxyConfiguration` object. `origin` prefixes messages (`proxyConfiguration`).
pub fn parse_proxy_configuration(
    origin: &str,
    object: &UniqueKeyObject,
) -> Result<RawSettings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut suggester = Suggester::default();
    for (key, _) in &object.0 {
        if !PROXY_CONFIGURATION_KEYS.contains(&key.as_str()) {
            errors.push(ConfigError::new(
                format!("{origin}.{key}"),
                None,
                suggester.hint(key, &PROXY_CONFIGURATION_KEYS),
            ));
        }
    }
    match object.get("type") {
        Some(Value::String(t)) if t == "APPMESH" => {}
        Some(other) => errors.push(ConfigError::new(
            format!("{origin}.type"),
            Some(other.as_str().unwrap_or(&other.to_string())),
            "must be \"APPMESH\" (the only proxy configuration type meshinit implements)",
        )),
        None => errors.push(ConfigError::new(
            format!("{origin}.type"),
            None,
            "missing; set it to \"APPMESH\"",
        )),
    }
    let mut settings = RawSettings::default();
    settings.vocabulary = Some(Vocabulary::Ecs);
    match object.get("properties") {
        Some(Value::Array(properties)) => {
            let mut seen: HashSet<String> = HashSet::new();
            for property in properties {
                match read_property(origin, property) {
                    Ok((name, value)) => {
                        if !seen.insert(name.clone()) {
                            errors.push(ConfigError::new(
                                &name,
                                Some(&value),
                                "is given more than once; give each property once",
                            ));
                            continue;
                        }
                        if let Err(e) = assign(&mut settings, &name, &value, &mut suggester) {
                            errors.push(e);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        Some(other) => errors.push(ConfigError::new(
            format!("{origin}.properties"),
            Some(&other.to_string()),
            "must be an array of {\"name\": ..., \"value\": ...} objects",
        )),
        None => errors.push(ConfigError::new(
            format!("{origin}.properties"),
            None,
            "missing; list the App Mesh properties (IgnoredUID, ProxyEgressPort, ...)",
        )),
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

fn read_property(origin: &str, property: &Value) -> Result<(String, String), ConfigError> {
    let where_ = format!("{origin}.properties");
    let object = as_object(&where_, property)?;
    for (key, _) in &object.0 {
        if key != "name" && key != "value" {
            return Err(ConfigError::new(
                &where_,
                Some(&property.to_string()),
                format!("unexpected key {key:?}; each property has only \"name\" and \"value\""),
            ));
        }
    }
    let name = match object.get("name") {
        Some(Value::String(name)) => name.clone(),
        _ => {
            return Err(ConfigError::new(
                &where_,
                Some(&property.to_string()),
                "each property needs a string \"name\"",
            ));
        }
    };
    let value = match object.get("value") {
        Some(value) => scalar_text(&name, value)?,
        None => {
            return Err(ConfigError::new(
                &name,
                None,
                "has no \"value\"; give the value as a string",
            ));
        }
    };
    Ok((name, value))
}

fn assign(
    settings: &mut RawSettings,
    name: &str,
    value: &str,
    suggester: &mut Suggester,
) -> Result<(), ConfigError> {
    match properties::find(Source::Ecs, name) {
        Some(spec) => settings.put(spec.property, name, value),
        None => {
            return Err(ConfigError::new(
                name,
                Some(value),
                suggester.hint(name, &properties::spellings(Source::Ecs)),
            ));
        }
    }
    Ok(())
}
