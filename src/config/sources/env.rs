//! The App Mesh Kubernetes init container's environment (`APPMESH_*`).

use std::ffi::OsString;

use tracing::warn;

use super::suggest;
use crate::config::mesh;
use crate::config::settings::{NAMES, RawSettings, Vocabulary};
use crate::error::ConfigError;

pub const VARIABLE_NAMES: [&str; 8] = NAMES[Vocabulary::Env as usize];

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
        if !VARIABLE_NAMES.contains(&name) && !mesh::ENV_NAMES.contains(&name) {
            warn_if_near_miss(name);
            continue;
        }
        let Some(value) = value.to_str() else {
            errors.push(ConfigError::new(
                name,
                Some(&value.to_string_lossy()),
                "is not valid UTF-8; write the value in plain ASCII",
            ));
            continue;
        };
        match name {
            "APPMESH_IGNORE_UID" => settings.ignored_uid = RawSettings::scalar(name, value),
            "APPMESH_IGNORE_GID" => settings.ignored_gid = RawSettings::scalar(name, value),
            "APPMESH_ENVOY_INGRESS_PORT" => {
                settings.proxy_ingress_port = RawSettings::scalar(name, value)
            }
            "APPMESH_ENVOY_EGRESS_PORT" => {
                settings.proxy_egress_port = RawSettings::scalar(name, value)
            }
            "APPMESH_APP_PORTS" => settings.app_ports = RawSettings::list(name, value),
            "APPMESH_EGRESS_IGNORED_IP" => {
                settings.egress_ignored_ips = RawSettings::list(name, value)
            }
            "APPMESH_EGRESS_IGNORED_PORTS" => {
                settings.egress_ignored_ports = RawSettings::list(name, value)
            }
            // Empty means unset here too, as for every other scalar and for `--ipv6=`.
            "APPMESH_ENABLE_IPV6" => settings.ipv6 = RawSettings::scalar(name, value),
            "MESHINIT_EGRESS_INCLUDED_IPS" => {
                settings.egress_included_ips = RawSettings::list(name, value)
            }
            "MESHINIT_INGRESS_IGNORED_PORTS" => {
                settings.ingress_ignored_ports = RawSettings::list(name, value)
            }
            "MESHINIT_IGNORED_INTERFACES" => {
                settings.ignored_interfaces = RawSettings::list(name, value)
            }
            "MESHINIT_DROP_INVALID" => settings.drop_invalid = RawSettings::scalar(name, value),
            "MESHINIT_PROXY_DNS_PORT" => settings.proxy_dns_port = RawSettings::scalar(name, value),
            "MESHINIT_DNS_CAPTURE" => settings.dns_capture = RawSettings::scalar(name, value),
            _ => {}
        }
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
        && let Some(known) = suggest::closest(name, &VARIABLE_NAMES)
    {
        warn!(
            variable = name,
            "unknown variable ignored; did you mean {known}?"
        );
    }
}
