//! Kubernetes per-pod mode. On a node, one entry of the CNI list runs for every pod; an
//! entry that declares `"capabilities": {"io.kubernetes.cri.pod-annotations": true}` gets
//! each pod's annotations from containerd or CRI-O (in `runtimeConfig`) and serves pods one
//! by one, as the App Mesh controller's CNI mode describes them:
//! - a pod is meshed only when annotated `appmesh.k8s.aws/appmeshCNI: enabled`, and not in
//!   a namespace of the entry's `excludeNamespaces` (default `["kube-system"]`; the pod's
//!   namespace comes from `CNI_ARGS` `K8S_POD_NAMESPACE`);
//! - its settings are the entry's keys (node-wide defaults) overridden by the controller's
//!   annotations (`appmesh.k8s.aws/ports`, `egressIgnoredIPs`, ...; `ipv6: disabled`);
//! - any other pod is left alone: no namespace entered, no rule, no table.
//!
//! Pure: decides from the request alone, before anything is touched.

use serde_json::{Map, Value};

use super::protocol::CniError;
use crate::config::properties::{PROPERTIES, Property};
use crate::config::settings::{RawSettings, Vocabulary};
use crate::config::sources::cni;
use crate::error::ConfigError;

/// The capability under which containerd and CRI-O pass a pod's annotations.
pub const POD_ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";
/// The entry key listing namespaces whose pods are never meshed.
pub const EXCLUDE_NAMESPACES: &str = "excludeNamespaces";
/// Namespaces excluded when the entry names none.
pub const DEFAULT_EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];
/// The App Mesh controller's CNI-mode annotation: `enabled` opts the pod in.
pub const OPT_IN: &str = "appmesh.k8s.aws/appmeshCNI";
/// `disabled` turns IPv6 off for the pod: the IPv6 row's annotation, with its own words.
pub const IPV6: &str = match PROPERTIES[Property::Ipv6 as usize].annotation {
    Some(annotation) => annotation,
    None => panic!("the IPv6 row has the controller's annotation"),
};

/// What the entry does for this pod.
#[derive(Debug)]
pub enum PodPlan {
    /// The entry does not serve pods one by one: its settings apply to every container
    /// (ECS, podman, an entry without the capability).
    EveryContainer,
    /// The pod gets nothing (the reason is logged).
    Untouched(String),
    /// The pod is meshed: these settings go over the entry's.
    Meshed(Box<RawSettings>),
}

/// Decides for one request: `keys` is the network configuration (with `runtimeConfig`),
/// `cni_args` the `CNI_ARGS` variable. A malformed `excludeNamespaces`, annotation map or
/// annotation value is code 7, naming it and its value.
pub fn plan(keys: &Map<String, Value>, cni_args: Option<&str>) -> Result<PodPlan, CniError> {
    let runtime_annotations = keys
        .get("runtimeConfig")
        .and_then(|rc| rc.get(POD_ANNOTATIONS));
    let declared = keys
        .get("capabilities")
        .and_then(|c| c.get(POD_ANNOTATIONS))
        .is_some_and(|v| v == &Value::Bool(true));
    if !declared && runtime_annotations.is_none() {
        return Ok(PodPlan::EveryContainer);
    }
    let invalid = |e: ConfigError| CniError::invalid_config(&[e]);

    let namespace = cni_args.and_then(pod_namespace);
    let excluded = excluded_namespaces(keys.get(EXCLUDE_NAMESPACES)).map_err(invalid)?;
    if let Some(namespace) = namespace
        && excluded.iter().any(|e| e == namespace)
    {
        return Ok(PodPlan::Untouched(format!(
            "namespace {namespace} is in {EXCLUDE_NAMESPACES}"
        )));
    }

    let annotations = match runtime_annotations {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => {
            return Err(invalid(ConfigError::new(
                format!("runtimeConfig.{POD_ANNOTATIONS}"),
                Some(&other.to_string()),
                "must be an object of strings (the pod's annotations)",
            )));
        }
    };
    let text = |name: &str| -> Result<Option<String>, CniError> {
        match annotations.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(ConfigError::new(
                annotation_label(name),
                Some(&other.to_string()),
                "must be a string",
            ))),
        }
    };
    match text(OPT_IN)?.as_deref().map(str::trim_ascii) {
        None => {
            return Ok(PodPlan::Untouched(format!(
                "the pod is not annotated {OPT_IN}: enabled"
            )));
        }
        Some(v) if v.eq_ignore_ascii_case("disabled") => {
            return Ok(PodPlan::Untouched(format!(
                "the pod is annotated {OPT_IN}: {v}"
            )));
        }
        Some(v) if v.eq_ignore_ascii_case("enabled") => {}
        Some(v) => {
            return Err(invalid(ConfigError::new(
                annotation_label(OPT_IN),
                Some(v),
                "must be enabled or disabled",
            )));
        }
    }

    let mut settings = RawSettings::default();
    let mut errors = Vec::new();
    // Every row of the property table with an annotation (the App Mesh controller's, and
    // `meshinit.io/<netconf key>`), read as its netconf key; IPv6's words are its own.
    for spec in PROPERTIES
        .iter()
        .filter(|spec| spec.property != Property::Ipv6)
    {
        let Some(annotation) = spec.annotation else {
            continue;
        };
        let Some(value) = text(annotation)? else {
            continue;
        };
        let mut one = RawSettings::default();
        match cni::assign(&mut one, spec.cni, &Value::String(value)) {
            Ok(()) => {
                one.relabel(&annotation_label(annotation));
                settings = settings.overlay(one);
            }
            Err(e) => errors.push(ConfigError {
                property: annotation_label(annotation),
                ..e
            }),
        }
    }
    if let Some(value) = text(IPV6)? {
        let mode = match value.trim_ascii() {
            v if v.eq_ignore_ascii_case("disabled") => Some("off"),
            v if v.eq_ignore_ascii_case("enabled") => Some("auto"),
            "" => None,
            _ => {
                errors.push(ConfigError::new(
                    annotation_label(IPV6),
                    Some(&value),
                    "must be disabled (IPv4 only) or enabled",
                ));
                None
            }
        };
        if let Some(mode) = mode {
            settings.put(Property::Ipv6, annotation_label(IPV6), mode);
        }
    }
    if errors.is_empty() {
        Ok(PodPlan::Meshed(Box::new(
            settings.spelled_in(Vocabulary::Cni),
        )))
    } else {
        Err(CniError::invalid_config(&errors))
    }
}

/// How errors name an annotation.
fn annotation_label(name: &str) -> String {
    format!("pod annotation {name}")
}

/// `K8S_POD_NAMESPACE` of `CNI_ARGS` (`KEY=VALUE;...`).
fn pod_namespace(args: &str) -> Option<&str> {
    args.split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "K8S_POD_NAMESPACE")
        .map(|(_, value)| value)
}

/// The entry's `excludeNamespaces`: an array of strings, `kube-system` when absent or null.
fn excluded_namespaces(value: Option<&Value>) -> Result<Vec<String>, ConfigError> {
    let bad = |v: &Value| {
        ConfigError::new(
            EXCLUDE_NAMESPACES,
            Some(&v.to_string()),
            "must be an array of namespace names, e.g. [\"kube-system\"]",
        )
    };
    match value {
        None | Some(Value::Null) => Ok(DEFAULT_EXCLUDED_NAMESPACES
            .iter()
            .map(|s| (*s).to_owned())
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| bad(item)))
            .collect(),
        Some(other) => Err(bad(other)),
    }
}

/// Whether the entry (its keys as given to `cni install`) serves pods one by one.
pub fn declares_pod_annotations(keys: &[(String, Value)]) -> bool {
    keys.iter().any(|(k, v)| {
        k == "capabilities"
            && v.get(POD_ANNOTATIONS)
                .is_some_and(|v| v == &Value::Bool(true))
    })
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

    fn request(annotations: Value) -> Map<String, Value> {
        keys(json!({
            "cniVersion": "1.0.0", "type": "meshinit",
            "capabilities": {POD_ANNOTATIONS: true},
            "runtimeConfig": {POD_ANNOTATIONS: annotations}
        }))
    }

    const ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web";

    #[test]
    fn an_entry_without_the_capability_serves_every_container() {
        let plain = keys(json!({"cniVersion": "1.0.0", "ignoredUID": "1337"}));
        assert!(matches!(
            plan(&plain, Some(ARGS)),
            Ok(PodPlan::EveryContainer)
        ));
    }

    #[test]
    fn only_opted_in_pods_outside_excluded_namespaces_are_meshed() {
        for annotations in [json!({}), json!({OPT_IN: "disabled"}), Value::Null] {
            assert!(
                matches!(
                    plan(&request(annotations.clone()), Some(ARGS)),
                    Ok(PodPlan::Untouched(_))
                ),
                "{annotations}"
            );
        }
        let opted = request(json!({OPT_IN: "enabled"}));
        assert!(matches!(plan(&opted, Some(ARGS)), Ok(PodPlan::Meshed(_))));
        let system = "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns";
        assert!(matches!(
            plan(&opted, Some(system)),
            Ok(PodPlan::Untouched(_))
        ));
        let mut own = opted.clone();
        own.insert(EXCLUDE_NAMESPACES.into(), json!(["shop"]));
        assert!(matches!(plan(&own, Some(ARGS)), Ok(PodPlan::Untouched(_))));
        assert!(matches!(plan(&own, Some(system)), Ok(PodPlan::Meshed(_))));
    }

    #[test]
    fn annotations_become_settings_named_by_the_annotation() {
        let Ok(PodPlan::Meshed(settings)) = plan(
            &request(json!({
                OPT_IN: "enabled", "appmesh.k8s.aws/ports": "8080,9090",
                "appmesh.k8s.aws/proxyEgressPort": "15001", IPV6: "disabled",
                "appmesh.k8s.aws/sidecarInjectorWebhook": "enabled"
            })),
            Some(ARGS),
        ) else {
            panic!("meshed")
        };
        let ports = settings.get(Property::AppPorts).unwrap();
        assert_eq!(ports.property, "pod annotation appmesh.k8s.aws/ports");
        assert_eq!(ports.list().items().collect::<Vec<_>>(), ["8080", "9090"]);
        assert_eq!(settings.get(Property::Ipv6).unwrap().value, "off");
    }

    #[test]
    fn meshinit_annotations_set_the_mesh_settings() {
        let Ok(PodPlan::Meshed(settings)) = plan(
            &request(json!({
                OPT_IN: "enabled", "meshinit.io/ignoredInterfaces": "tun0,tap1",
                "meshinit.io/dropInvalid": "true", "meshinit.io/egressIncludedIPs": "10.0.0.0/8"
            })),
            Some(ARGS),
        ) else {
            panic!("meshed")
        };
        let interfaces = settings.get(Property::IgnoredInterfaces).unwrap();
        assert_eq!(
            interfaces.property,
            "pod annotation meshinit.io/ignoredInterfaces"
        );
        assert_eq!(
            interfaces.list().items().collect::<Vec<_>>(),
            ["tun0", "tap1"]
        );
        assert_eq!(settings.get(Property::DropInvalid).unwrap().value, "true");
        assert!(settings.get(Property::EgressIncludedIps).is_some());
    }

    #[test]
    fn bad_annotations_are_code_7_naming_annotation_and_value() {
        for (annotations, named) in [
            (json!({OPT_IN: "yes"}), OPT_IN),
            (json!({OPT_IN: "enabled", IPV6: "nope"}), IPV6),
            (
                json!({OPT_IN: "enabled", "appmesh.k8s.aws/ignoredUID": 7}),
                "appmesh.k8s.aws/ignoredUID",
            ),
        ] {
            let error = plan(&request(annotations), Some(ARGS)).unwrap_err();
            assert_eq!(
                error.code,
                super::super::protocol::code::INVALID_NETWORK_CONFIG
            );
            assert!(error.msg.contains(named), "{}", error.msg);
        }
        let mut bad = request(json!({}));
        bad.insert(EXCLUDE_NAMESPACES.into(), json!("kube-system"));
        assert!(plan(&bad, Some(ARGS)).is_err());
    }
}
