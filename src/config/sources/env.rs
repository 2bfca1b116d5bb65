//! The App Mesh Kubernetes init container's environment (`APPMESH_*`).

use std::ffi::OsString;

use tracing::warn;

use super::suggest;
use crate::config::properties::{self, Source};
use crate::config::settings::RawSettings;
use crate::error::ConfigError;

/// Variables that share the prefix but belong to Envoy or the controller; not ours to judge.
const FOREIGN_VARIABLES: [&str; 6] = [
    "APPMESH_START_ENABLED",
    "APPMESH_VIRTUAL_NODE_NAME",
    "APPMESH_RESOURCE_ARN",
    "APPMESH_RESOURCE_CLUSTER",
    "APPMESH_PREVIEW",
    "APPMESH_DUALSTACK_ENDPOINT",
];

/// Reads the variables from `vars` (pass `std::env::vars_os()`; tests pass their own).
/// Variables that are not ours are ignored whatever their bytes; one of ours whose value is
/// not UTF-8 is an error naming it.
pub fn parse_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<RawSettings, Vec<ConfigError>> {
    let mut settings = RawSettings::default();
    let mut errors = Vec::new();
    for (name, value) in vars {
        // A name that is not UTF-8 cannot be one of ours.
        let Some(name) = name.to_str() else { continue };
        let Some(spec) = properties::find(Source::Env, name) else {
            warn_if_near_miss(name);
            continue;
        };
        let Some(value) = value.to_str() else {
            errors.push(ConfigError::new(
                name,
                Some(&value.to_string_lossy()),
                "is not valid UTF-8; write the value in plain ASCII",
            ));
            continue;
        };
        // Empty means unset for every scalar (`APPMESH_ENABLE_IPV6=` too, as `--ipv6=`).
        settings.put(spec.property, name, value);
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

/// Envoy's own APPMESH_* variables share the environment, so an unknown name is only a
/// warning; a near miss is most likely a typo of ours.
fn warn_if_near_miss(name: &str) {
    if name.starts_with("APPMESH_")
        && !FOREIGN_VARIABLES.contains(&name)
        && let Some(known) = suggest::closest(name, &properties::app_mesh_spellings(Source::Env))
    {
        warn!(
            variable = name,
            "unknown variable ignored; did you mean {known}?"
        );
    }
}
