//! The ADD result: the previous plugin's result passed through (meshinit adds no
//! interface, address or route), in the version the configuration asks for.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::protocol::{CniError, code};
use super::version::{ResultFormat, SpecVersion};

/// Interface keys that 1.x results may carry and 0.x results do not define.
const V1_ONLY_INTERFACE_KEYS: [&str; 3] = ["mtu", "socketPath", "pciID"];

/// The result of a plugin that changed nothing and had no previous result.
pub fn empty(version: SpecVersion) -> Value {
    json!({
        "cniVersion": version.to_string(),
        "interfaces": [],
        "ips": [],
        "dns": {},
    })
}

/// `prev_result` as a result of version `to`. Its own `cniVersion` says what it is; a result
/// without one is taken to be in the configuration's version (as libcni does). Within one
/// format only `cniVersion` changes; across formats `ips[].version` is added (1.x -> 0.x,
/// from the address family) or removed (0.x -> 1.x, where 1.0.0 dropped it), and interface
/// keys 0.x does not define are dropped. A result that is not shaped like one (what libcni
/// could not decode either) is code 6, whatever the versions.
pub fn convert(prev_result: &Value, to: SpecVersion) -> Result<Value, CniError> {
    let Value::Object(object) = prev_result else {
        return Err(not_decodable("it must be a JSON object".into()));
    };
    let from = match object.get("cniVersion") {
        None => to,
        Some(Value::String(text)) if text.is_empty() => to,
        Some(Value::String(text)) => SpecVersion::parse(text)
            .filter(|v| v.is_supported())
            .ok_or_else(|| {
                CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!("incompatible CNI version: prevResult is cniVersion {text:?}"),
                    "meshinit passes on results of versions 0.3.0 to 1.1.0",
                )
            })?,
        Some(other) => {
            return Err(not_decodable(format!(
                "cniVersion: {other} is not a string"
            )));
        }
    };
    let mut result = object.clone();
    if let Some(dns) = result
        .get("dns")
        .filter(|dns| !dns.is_null() && !dns.is_object())
    {
        return Err(not_decodable(format!("dns: {dns} is not an object")));
    }
    for (index, route) in entries_mut(&mut result, "routes")?.into_iter().enumerate() {
        cidr_family(route, "dst", &format!("routes[{index}].dst"))?;
    }
    let interfaces = entries_mut(&mut result, "interfaces")?;
    if (from.result_format(), to.result_format()) == (ResultFormat::V1, ResultFormat::V0) {
        for interface in interfaces {
            for key in V1_ONLY_INTERFACE_KEYS {
                interface.remove(key);
            }
        }
    }
    for (index, ip) in entries_mut(&mut result, "ips")?.into_iter().enumerate() {
        let family = cidr_family(ip, "address", &format!("ips[{index}].address"))?;
        match (from.result_format(), to.result_format()) {
            (ResultFormat::V0, ResultFormat::V1) => {
                ip.remove("version");
            }
            (ResultFormat::V1, ResultFormat::V0) => {
                ip.insert("version".into(), Value::String(family.into()));
            }
            _ => {}
        }
    }
    result.insert("cniVersion".into(), Value::String(to.to_string()));
    Ok(Value::Object(result))
}

fn not_decodable(what: String) -> CniError {
    CniError::new(
        code::DECODING_FAILURE,
        format!("cannot decode prevResult: {what}"),
        "",
    )
}

/// The objects of the array `key` (absent or null = none); anything else cannot be decoded.
fn entries_mut<'a>(
    result: &'a mut Map<String, Value>,
    key: &str,
) -> Result<Vec<&'a mut Map<String, Value>>, CniError> {
    match result.get_mut(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter_mut()
            .enumerate()
            .map(|(index, item)| match item {
                Value::Object(entry) => Ok(entry),
                other => Err(not_decodable(format!(
                    "{key}[{index}]: {other} is not an object"
                ))),
            })
            .collect(),
        Some(other) => Err(not_decodable(format!("{key}: {other} is not an array"))),
    }
}

/// `"4"` or `"6"`: the family of the CIDR (`10.0.0.2/24`) in `entry[key]`.
fn cidr_family(
    entry: &Map<String, Value>,
    key: &str,
    name: &str,
) -> Result<&'static str, CniError> {
    let text = entry.get(key).and_then(Value::as_str).unwrap_or_default();
    let parsed = text.split_once('/').and_then(|(address, prefix)| {
        let address = address.parse::<IpAddr>().ok()?;
        let max_prefix = if address.is_ipv4() { 32 } else { 128 };
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 3
            && prefix.bytes().all(|b| b.is_ascii_digit())
            && prefix.parse::<u8>().is_ok_and(|p| p <= max_prefix);
        prefix_ok.then_some(address)
    });
    match parsed {
        Some(IpAddr::V4(_)) => Ok("4"),
        Some(IpAddr::V6(_)) => Ok("6"),
        None => Err(not_decodable(format!(
            "{name}: {} is not an address in CIDR notation",
            entry
                .get(key)
                .map_or_else(|| "missing".to_owned(), Value::to_string)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> SpecVersion {
        SpecVersion::parse(text).unwrap()
    }

    fn bridge_result_1_0() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "sandbox": "/var/run/netns/pod", "mtu": 1500}
            ],
            "ips": [
                {"interface": 1, "address": "10.22.0.2/16", "gateway": "10.22.0.1"},
                {"interface": 1, "address": "fd00::2/64", "gateway": "fd00::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.22.0.1"]}
        })
    }

    #[test]
    fn same_version_passes_through_unchanged() {
        let prev = bridge_result_1_0();
        assert_eq!(convert(&prev, v("1.0.0")).unwrap(), prev);
    }

    #[test]
    fn within_a_format_only_the_version_changes() {
        let mut expected = bridge_result_1_0();
        expected["cniVersion"] = json!("1.1.0");
        assert_eq!(convert(&bridge_result_1_0(), v("1.1.0")).unwrap(), expected);
    }

    #[test]
    fn down_to_0_4_adds_ip_versions_and_drops_1_x_interface_keys() {
        let converted = convert(&bridge_result_1_0(), v("0.4.0")).unwrap();
        assert_eq!(converted["cniVersion"], "0.4.0");
        assert_eq!(converted["ips"][0]["version"], "4");
        assert_eq!(converted["ips"][1]["version"], "6");
        assert_eq!(converted["ips"][0]["gateway"], "10.22.0.1");
        assert!(converted["interfaces"][1].get("mtu").is_none());
        assert_eq!(converted["interfaces"][1]["sandbox"], "/var/run/netns/pod");
        assert_eq!(converted["routes"], bridge_result_1_0()["routes"]);
        assert_eq!(converted["dns"], bridge_result_1_0()["dns"]);
    }

    #[test]
    fn up_to_1_0_removes_ip_versions() {
        let prev = json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "eth0", "sandbox": "/proc/42/ns/net"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.0.0.2/24"}],
            "dns": {}
        });
        let converted = convert(&prev, v("1.0.0")).unwrap();
        assert_eq!(
            converted,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": "/proc/42/ns/net"}],
                "ips": [{"interface": 0, "address": "10.0.0.2/24"}],
                "dns": {}
            })
        );
    }

    #[test]
    fn a_result_without_version_is_in_the_configuration_version() {
        let prev = json!({"ips": [{"version": "4", "address": "10.0.0.2/24"}]});
        let converted = convert(&prev, v("0.4.0")).unwrap();
        assert_eq!(converted["ips"][0]["version"], "4");
        assert_eq!(converted["cniVersion"], "0.4.0");
    }

    #[test]
    fn undecodable_results_are_errors_not_panics() {
        let cases = [
            (json!("text"), code::DECODING_FAILURE),
            (json!({"cniVersion": 1}), code::DECODING_FAILURE),
            (
                json!({"cniVersion": "0.2.0", "ip4": {}}),
                code::INCOMPATIBLE_VERSION,
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": "10.0.0.1/24"}),
                code::DECODING_FAILURE,
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [7]}),
                code::DECODING_FAILURE,
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "nowhere"}]}),
                code::DECODING_FAILURE,
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{}]}),
                code::DECODING_FAILURE,
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}),
                code::DECODING_FAILURE,
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/33"}]}),
                code::DECODING_FAILURE,
            ),
            (
                json!({"cniVersion": "1.0.0", "routes": [{"dst": "default"}]}),
                code::DECODING_FAILURE,
            ),
            (
                json!({"cniVersion": "1.0.0", "interfaces": {}}),
                code::DECODING_FAILURE,
            ),
            (
                json!({"cniVersion": "1.0.0", "dns": []}),
                code::DECODING_FAILURE,
            ),
        ];
        for (prev, expected) in cases {
            for to in ["0.4.0", "1.0.0"] {
                assert_eq!(
                    convert(&prev, v(to)).unwrap_err().code,
                    expected,
                    "{prev} to {to}"
                );
            }
        }
    }

    #[test]
    fn the_empty_result_has_the_requested_version() {
        assert_eq!(
            empty(v("0.3.1")),
            json!({"cniVersion": "0.3.1", "interfaces": [], "ips": [], "dns": {}})
        );
    }
}
