//! The three places users already write an App Mesh proxy configuration, each turned into
//! [`RawSettings`](super::settings::RawSettings): a JSON document (ECS `proxyConfiguration`,
//! a whole ECS task definition, or an App Mesh CNI network config), the Kubernetes init
//! container's `APPMESH_*` environment, and command-line flags.

pub mod cni;
pub mod document;
pub mod ecs;
pub mod env;
pub mod json;
pub mod suggest;
