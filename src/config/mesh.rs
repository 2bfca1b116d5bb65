//! What meshes other than App Mesh ask of the capture (Istio, Linkerd, Kuma), in meshinit's
//! own terms: an include list for outbound destinations, every inbound port (`AppPorts *`)
//! with ports never captured, interfaces whose traffic is never captured, and dropping
//! inbound packets conntrack marks INVALID. Everything is off unless set, so an App Mesh
//! configuration plans exactly as before.
//!
//! Their names in every source are rows of the one property table
//! ([`super::properties::PROPERTIES`]).

use ipnet::{Ipv4Net, Ipv6Net};

use super::PortList;

/// The longest interface name the kernel accepts (`IFNAMSIZ` less the NUL).
pub const MAX_INTERFACE_NAME: usize = 15;

/// The DNS port the app's queries go to.
pub const DNS_PORT: u16 = 53;

/// Which of the app's DNS queries go to the proxy's DNS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsScope {
    /// Queries to any resolver.
    All,
    /// Queries to the resolvers of the namespace's `/etc/resolv.conf`, read at apply time.
    ResolvConf,
}

/// DNS capture: UDP and TCP port 53 to the proxy's DNS listener, except the proxy's own
/// queries (its UID/GID leave the egress chain first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCapture {
    pub proxy_port: u16,
    pub scope: DnsScope,
    /// With [`DnsScope::ResolvConf`]: the resolvers, filled in by the shell that reads the
    /// file (the planner takes them as data). Empty with [`DnsScope::All`].
    pub resolvers: Vec<std::net::IpAddr>,
}

/// The `nameserver` addresses of a resolv.conf text (zone indexes dropped).
pub fn resolv_conf_nameservers(text: &str) -> Vec<std::net::IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_ascii_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let address = words.next()?;
            address.split('%').next()?.parse().ok()
        })
        .collect()
}

/// `AppPorts` meaning every inbound port.
pub const ALL_PORTS: &str = "*";

/// Outbound destinations captured when an include list is given: only these (exclusions
/// still win). A family without entries captures nothing outbound; `0.0.0.0/0` or `::/0`
/// captures the whole family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncludedDestinations {
    pub ipv4: Vec<Ipv4Net>,
    pub ipv6: Vec<Ipv6Net>,
}

impl IncludedDestinations {
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        match addr {
            std::net::IpAddr::V4(a) => self.ipv4.iter().any(|n| n.contains(&a)),
            std::net::IpAddr::V6(a) => self.ipv6.iter().any(|n| n.contains(&a)),
        }
    }

    /// The networks of one family.
    pub fn networks(
        &self,
        family: crate::ruleset::Family,
    ) -> Box<dyn Iterator<Item = ipnet::IpNet> + '_> {
        match family {
            crate::ruleset::Family::Ipv4 => Box::new(self.ipv4.iter().map(|n| (*n).into())),
            crate::ruleset::Family::Ipv6 => Box::new(self.ipv6.iter().map(|n| (*n).into())),
        }
    }
}

/// The validated mesh options. `Default` is everything off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshOptions {
    /// `None`: every outbound destination not excluded is captured (App Mesh).
    pub egress_included: Option<IncludedDestinations>,
    /// `AppPorts` was `*`: every inbound TCP port but `ingress_ignored_ports` is captured.
    pub ingress_all_ports: bool,
    /// With `ingress_all_ports`: the ports never captured, the proxy's own always among them.
    pub ingress_ignored_ports: PortList,
    /// Traffic in through or out through these interfaces is never captured.
    pub ignored_interfaces: Vec<String>,
    /// Inbound packets conntrack marks INVALID are dropped before they reach the app.
    pub drop_invalid: bool,
    /// The app's DNS queries go to the proxy's DNS listener.
    pub dns: Option<DnsCapture>,
}

impl MeshOptions {
    pub fn is_off(&self) -> bool {
        *self == MeshOptions::default()
    }
}

/// Checks an interface name as the kernel would (`dev_valid_name`), so a bad one is refused
/// before any rule changes.
pub fn interface_name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_INTERFACE_NAME {
        Some(format!(
            "{name:?} is longer than {MAX_INTERFACE_NAME} bytes, the longest interface name"
        ))
    } else if name == "." || name == ".." {
        Some(format!("{name:?} is not an interface name"))
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"/:+*".contains(&b))
    {
        Some(format!(
            "{name:?} is not an interface name (no '/', ':', '+', '*', spaces or non-ASCII; wildcards are not supported)"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::settings::{Property, RawSettings, Vocabulary};
    use crate::config::{PortRange, validate};

    fn base() -> RawSettings {
        RawSettings::spelled(
            Vocabulary::Flags,
            [
                (Property::IgnoredUid, "1337"),
                (Property::ProxyEgressPort, "15001"),
                (Property::ProxyIngressPort, "15000"),
                (Property::AppPorts, "*"),
            ],
        )
    }

    #[test]
    fn every_port_captures_all_but_the_ignored_and_the_proxys_own() {
        let raw = base().with(
            Property::IngressIgnoredPorts,
            "--ingress-ignored-ports",
            "22,9000-9100",
        );
        let (config, _) = validate(&raw).unwrap();
        let ingress = config.ingress.unwrap();
        let r = |first, last| PortRange { first, last };
        assert_eq!(
            ingress.app_ports.ranges(),
            [r(1, 21), r(23, 8999), r(9101, 14999), r(15002, 65535)]
        );
        assert!(config.mesh.ingress_all_ports);
        assert!(config.mesh.ingress_ignored_ports.contains(15000));
        assert!(config.mesh.ingress_ignored_ports.contains(15001));
    }

    #[test]
    fn bad_mesh_settings_name_property_and_value() {
        let raw = base()
            .with(Property::AppPorts, "--app-ports", "80")
            .with(
                Property::IngressIgnoredPorts,
                "--ingress-ignored-ports",
                "22",
            )
            .with(
                Property::IgnoredInterfaces,
                "--ignored-interfaces",
                "eth0,a/b",
            )
            .with(Property::DropInvalid, "--drop-invalid", "maybe")
            .with(
                Property::EgressIncludedIps,
                "--egress-included-ips",
                "10.0.0.0/33",
            );
        let errors = validate(&raw).unwrap_err();
        let named: Vec<&str> = errors.iter().map(|e| e.property.as_str()).collect();
        assert_eq!(
            named,
            [
                "--ingress-ignored-ports",
                "--egress-included-ips",
                "--ignored-interfaces",
                "--drop-invalid"
            ],
            "{errors:?}"
        );
        let every = base().with(
            Property::IngressIgnoredPorts,
            "--ingress-ignored-ports",
            "1-65535",
        );
        assert!(validate(&every).is_err());
    }

    #[test]
    fn off_by_default() {
        let raw = base().with(Property::AppPorts, "--app-ports", "80");
        assert!(validate(&raw).unwrap().0.mesh.is_off());
    }
}
