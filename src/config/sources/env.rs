//! The App Mesh Kubernetes init container's environment (`APPMESH_*`).

use tracing::warn;

use super::suggest;
use crate::config::settings::{RawSettings, Setting};

pub const VARIABLE_NAMES: [&str; 8] = [
    "APPMESH_IGNORE_UID",
    "APPMESH_IGNORE_GID",
    "APPMESH_ENVOY_INGRESS_PORT",
    "APPMESH_ENVOY_EGRESS_PORT",
    "APPMESH_APP_PORTS",
    "APPMESH_EGRESS_IGNORED_IP",
    "APPMESH_EGRESS_IGNORED_PORTS",
    "APPMESH_ENABLE_IPV6",
];

/// Variables that share the prefix but belong to Envoy or the controller; not ours to judge.
const FOREIGN_VARIABLES: [&str; 6] = [
    "APPMESH_START_ENABLED",
    "APPMESH_VIRTUAL_NODE_NAME",
    "APPMESH_RESOURCE_ARN",
    "APPMESH_RESOURCE_CLUSTER",
    "APPMESH_PREVIEW",
    "APPMESH_DUALSTACK_ENDPOINT",
];

/// Reads the variables from `vars` (pass `std::env::vars()`; tests pass their own).
pub fn parse_env(vars: impl IntoIterator<Item = (String, String)>) -> RawSettings {
    let mut settings = RawSettings::default();
    for (name, value) in vars {
        match name.as_str() {
            "APPMESH_IGNORE_UID" => settings.ignored_uid = RawSettings::scalar(&name, &value),
            "APPMESH_IGNORE_GID" => settings.ignored_gid = RawSettings::scalar(&name, &value),
            "APPMESH_ENVOY_INGRESS_PORT" => {
                settings.proxy_ingress_port = RawSettings::scalar(&name, &value)
            }
            "APPMESH_ENVOY_EGRESS_PORT" => {
                settings.proxy_egress_port = RawSettings::scalar(&name, &value)
            }
            "APPMESH_APP_PORTS" => settings.app_ports = RawSettings::list(&name, &value),
            "APPMESH_EGRESS_IGNORED_IP" => {
                settings.egress_ignored_ips = RawSettings::list(&name, &value)
            }
            "APPMESH_EGRESS_IGNORED_PORTS" => {
                settings.egress_ignored_ports = RawSettings::list(&name, &value)
            }
            "APPMESH_ENABLE_IPV6" => settings.ipv6 = Some(Setting::new(&name, value)),
            other if other.starts_with("APPMESH_") && !FOREIGN_VARIABLES.contains(&other) => {
                // Envoy's own APPMESH_* variables share the environment, so an unknown name
                // is only a warning; a near miss is most likely a typo of ours.
                if let Some(known) = suggest::closest(other, &VARIABLE_NAMES) {
                    warn!(
                        variable = other,
                        "unknown variable ignored; did you mean {known}?"
                    );
                }
            }
            _ => {}
        }
    }
    settings
}
