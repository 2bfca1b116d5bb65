//! Configuration: sources -> [`RawSettings`] -> one validated [`ProxyConfig`].

pub mod addresses;
pub mod input;
pub mod mesh;
pub mod ports;
pub mod properties;
pub mod settings;
pub mod sources;
mod validate;

pub use addresses::{ALWAYS_IGNORED_IPS, IgnoredDestinations};
pub use mesh::{IncludedDestinations, MeshOptions};
pub use ports::{PortList, PortRange};
pub use settings::RawSettings;
pub use validate::validate;

/// Port that is always excluded from egress redirection, so SSH keeps working (as in ECS).
pub const ALWAYS_IGNORED_PORT: u16 = 22;

/// Whether to program IPv6 rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Mode {
    /// Program IPv6 when the namespace has it; otherwise warn and continue with IPv4, because a
    /// node with IPv6 disabled must never fail the pod.
    Auto,
    /// Program IPv6 or fail.
    On,
    /// IPv4 only.
    Off,
}

/// Inbound redirection: connections to the application's ports go to the proxy first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    pub proxy_port: u16,
    pub app_ports: PortList,
}

/// A validated proxy configuration: everything the ruleset is planned from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The proxy's own user; its traffic is never redirected.
    pub ignored_uid: Option<u32>,
    /// The proxy's own group; its traffic is never redirected.
    pub ignored_gid: Option<u32>,
    pub proxy_egress_port: u16,
    /// `None` means egress only.
    pub ingress: Option<IngressConfig>,
    /// Always contains port 22.
    pub egress_ignored_ports: PortList,
    /// Always contains the metadata endpoints.
    pub egress_ignored_destinations: IgnoredDestinations,
    pub ipv6: Ipv6Mode,
    /// What meshes beyond App Mesh ask for; all off by default.
    pub mesh: MeshOptions,
    /// Prove the rules with real connections once they are in place (apply, CNI ADD and
    /// CHECK); not part of the ruleset.
    pub verify: bool,
}
