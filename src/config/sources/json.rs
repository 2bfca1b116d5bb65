//! JSON helpers shared by the document sources: a map that refuses duplicate keys (serde_json
//! keeps the last one silently) and errors that say where the document is malformed.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::error::ConfigError;

/// A JSON object whose keys were checked to be unique, in document order.
#[derive(Debug, Default)]
pub struct UniqueKeyObject(pub Vec<(String, Value)>);

impl UniqueKeyObject {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for UniqueKeyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = UniqueKeyObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, Value)> = Vec::new();
                // A hash of the keys: an object can hold hundreds of thousands of them.
                let mut seen = std::collections::HashSet::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate key {}",
                            crate::error::quote(&key)
                        )));
                    }
                    entries.push((key, value));
                }
                Ok(UniqueKeyObject(entries))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A pass over a whole document that fails on a duplicate key in any object, at any depth
/// (serde_json's own `Value` keeps the last one silently).
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {}",
                    crate::error::quote(&key)
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
}

/// Parses a JSON document, refusing duplicate keys at any depth.
pub fn from_str_unique_keys<T: serde::de::DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_str::<NoDuplicateKeys>(text)?;
    serde_json::from_str(text)
}

/// Parses a whole document into an object, refusing duplicate keys at any depth.
pub fn parse_object(origin: &str, text: &str) -> Result<UniqueKeyObject, ConfigError> {
    from_str_unique_keys(text).map_err(|e| {
        ConfigError::new(
            origin,
            None,
            format!(
                "not valid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Re-reads a nested value as a unique-key object (nested duplicates matter too).
pub fn as_object(origin: &str, value: &Value) -> Result<UniqueKeyObject, ConfigError> {
    // Duplicates at any depth were refused by `parse_object`; this only checks the shape.
    serde_json::from_value(value.clone())
        .map_err(|e| ConfigError::new(origin, None, format!("must be a JSON object: {e}")))
}

/// A JSON scalar as text: strings as they are, numbers and booleans printed; anything else
/// is an error naming the property.
pub fn scalar_text(property: &str, value: &Value) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ConfigError::new(
            property,
            Some(&other.to_string()),
            "must be a string",
        )),
    }
}
