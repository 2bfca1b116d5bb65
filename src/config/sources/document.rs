//! A JSON configuration document of any of the shapes users already have, told apart by
//! their keys: an ECS `proxyConfiguration`, an ECS task definition holding one (also as
//! printed by `aws ecs describe-task-definition`), or an App Mesh CNI network config.

use super::json::{UniqueKeyObject, as_object, parse_object};
use super::{cni, ecs};
use crate::config::properties::{self, Source};
use crate::config::settings::RawSettings;
use crate::error::ConfigError;

/// Which shape a document had; logged so users see how their file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    ProxyConfiguration,
    TaskDefinition,
    CniNetworkConfig,
}

impl DocumentKind {
    pub fn describe(self) -> &'static str {
        match self {
            DocumentKind::ProxyConfiguration => "ECS proxyConfiguration",
            DocumentKind::TaskDefinition => "ECS task definition",
            DocumentKind::CniNetworkConfig => "App Mesh CNI network config",
        }
    }
}

/// Parses a document. `origin` names it in messages (the file path, or `stdin`).
pub fn parse_document(
    origin: &str,
    text: &str,
) -> Result<(DocumentKind, RawSettings), Vec<ConfigError>> {
    let object = parse_object(origin, text).map_err(|e| vec![e])?;
    read_object(origin, &object)
}

fn read_object(
    origin: &str,
    object: &UniqueKeyObject,
) -> Result<(DocumentKind, RawSettings), Vec<ConfigError>> {
    if let Some(inner) = object.get("taskDefinition") {
        let inner = as_object("taskDefinition", inner).map_err(|e| vec![e])?;
        return read_object(origin, &inner);
    }
    if let Some(proxy) = object.get("proxyConfiguration") {
        let proxy = as_object("proxyConfiguration", proxy).map_err(|e| vec![e])?;
        let settings = ecs::parse_proxy_configuration("proxyConfiguration", &proxy)?;
        return Ok((DocumentKind::TaskDefinition, settings));
    }
    if object.get("properties").is_some() || object.get("containerName").is_some() {
        let settings = ecs::parse_proxy_configuration("proxyConfiguration", object)?;
        return Ok((DocumentKind::ProxyConfiguration, settings));
    }
    // The App Mesh plugin's keys: what a CNI config without `cniVersion` still has.
    let app_mesh_keys = properties::app_mesh_spellings(Source::Cni);
    let looks_like_cni = object.get("cniVersion").is_some()
        || object
            .0
            .iter()
            .any(|(k, _)| app_mesh_keys.contains(&k.as_str()));
    if looks_like_cni {
        let settings = cni::parse_network_config(object)?;
        return Ok((DocumentKind::CniNetworkConfig, settings));
    }
    Err(vec![ConfigError::new(
        origin,
        None,
        "is neither an ECS proxyConfiguration (with \"properties\"), an ECS task definition \
         (with \"proxyConfiguration\"), nor an App Mesh CNI network config (with \"cniVersion\")",
    )])
}
