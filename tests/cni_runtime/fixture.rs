//! The App Mesh network configuration the CNI protocol tests start from, and a way to
//! change one key of it.

use serde_json::{Value, json};

pub const PROXY_UID: u32 = 1337;
pub const EGRESS_PORT: u16 = 15001;
pub const INGRESS_PORT: u16 = 15000;
pub const APP_PORT: u16 = 8080;

/// The aws-appmesh network configuration (as a runtime derives it for the plugin).
pub fn netconf(cni_version: &str) -> Value {
    json!({
        "cniVersion": cni_version,
        "name": "appmesh",
        "type": "meshinit",
        "ignoredUID": PROXY_UID.to_string(),
        "proxyIngressPort": INGRESS_PORT.to_string(),
        "proxyEgressPort": EGRESS_PORT.to_string(),
        "appPorts": [APP_PORT.to_string()],
        "egressIgnoredPorts": ["5432"],
        "egressIgnoredIPs": ["169.254.170.2", "169.254.169.254"]
    })
}

/// `config` with `key` set to `value`.
pub fn with(mut config: Value, key: &str, value: Value) -> Value {
    config[key] = value;
    config
}

/// Configurations that decode but that ADD and CHECK refuse, with the CNI error code:
/// a `prevResult` of the wrong shape (6), values of the wrong type (7).
pub fn decodable_but_wrong_configs() -> Vec<(Value, u64)> {
    vec![
        (with(netconf("1.0.0"), "prevResult", json!([1, 2])), 6),
        (
            with(
                netconf("1.0.0"),
                "prevResult",
                json!({"cniVersion": "1.0.0", "ips": {"address": 7}}),
            ),
            6,
        ),
        (
            with(
                netconf("1.0.0"),
                "ignoredUID",
                json!(99999999999999999999999.0),
            ),
            7,
        ),
        (
            with(netconf("1.0.0"), "proxyEgressPort", json!({"port": 15001})),
            7,
        ),
    ]
}
