//! Test inputs shared by the install module's unit tests.

use serde_json::{Value, json};

use super::PluginEntry;

/// The AWS VPC CNI's list as it writes it on a node (egress-cni and portmap after the
/// interface plugin), with odd spacing and key order that re-serialising would lose.
pub(super) const AWS_CONFLIST: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "aws-cni",
  "disableCheck": true,
  "plugins": [
    {
      "name": "aws-cni",
      "type": "aws-cni",
      "vethPrefix": "eni",
      "mtu": "9001",
      "podSGEnforcingMode": "strict",
      "pluginLogFile": "/var/log/aws-routed-eni/plugin.log",
      "pluginLogLevel": "DEBUG",
      "capabilities": {"io.kubernetes.cri.pod-annotations": true}
    },
    {
      "name": "egress-cni",
      "type": "egress-cni",
      "mtu": "9001",
      "enabled": "false",
      "randomizeSNAT": "prng",
      "nodeIP": "",
      "ipam": {
         "type": "host-local",
         "ranges": [[{"subnet": "fd00::ac:00/118"}]],
         "routes": [{"dst": "::/0"}],
         "dataDir": "/run/cni/v4pd/egress-v6-ipam"
      },
      "pluginLogFile": "/var/log/aws-routed-eni/egress-v6-plugin.log",
      "pluginLogLevel": "DEBUG"
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true},
      "snat": true,
      "conditionsV4":   ["!", "-s", "10.0.0.0/8"],
      "weird\u0020key": 1.50e3
    }
  ]
}
"#;

pub(super) fn entry(keys: Value) -> PluginEntry {
    let Value::Object(map) = keys else {
        unreachable!("test input is an object")
    };
    let overrides = map.into_iter().collect();
    PluginEntry::build("test", None, overrides, None).unwrap()
}

pub(super) fn mesh_entry() -> PluginEntry {
    entry(json!({
        "ignoredUID": "1337", "proxyIngressPort": "15000", "proxyEgressPort": "15001",
        "appPorts": ["8080", "8081"], "enableIPv6": true
    }))
}
