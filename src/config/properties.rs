//! The one table of properties: each property once, with its kind and how every source
//! spells it. The sources (ECS `proxyConfiguration`, App Mesh CNI network config, the
//! environment, flags, pod annotations), `cni install`, the messages and the README's
//! property table all read their names from [`PROPERTIES`]; adding a property is a row
//! here, its rule in validation, and the code that acts on it.

/// The properties of a proxy configuration, whatever a source calls them. The order is
/// that of [`PROPERTIES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Property {
    IgnoredUid,
    IgnoredGid,
    ProxyIngressPort,
    ProxyEgressPort,
    AppPorts,
    EgressIgnoredIps,
    EgressIgnoredPorts,
    Ipv6,
    EgressIncludedIps,
    IngressIgnoredPorts,
    IgnoredInterfaces,
    DropInvalid,
    ProxyDnsPort,
    DnsCapture,
    Verify,
}

/// What a property's value is: decides how a source reads it (a list is comma-separated
/// text or a JSON array; an empty scalar is unset) and what validation expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    UserId,
    GroupId,
    Port,
    PortList,
    AddressList,
    InterfaceList,
    /// auto, on or off (`1`/`true` = auto, `0`/`false` = off); a JSON boolean in netconf.
    Ipv6Mode,
    /// true or false (1/on, 0/off); a JSON boolean or string in netconf.
    Switch,
    /// all or resolv.conf.
    DnsScope,
}

impl Kind {
    /// Whether the value is a comma-separated list (a JSON array in netconf).
    pub fn is_list(self) -> bool {
        matches!(
            self,
            Kind::PortList | Kind::AddressList | Kind::InterfaceList
        )
    }

    /// How help and the README name a value of this kind.
    pub fn value_name(self) -> &'static str {
        match self {
            Kind::UserId => "UID",
            Kind::GroupId => "GID",
            Kind::Port => "PORT",
            Kind::PortList => "PORTS",
            Kind::AddressList => "IPS",
            Kind::InterfaceList => "NAMES",
            Kind::Ipv6Mode => "auto|on|off",
            Kind::Switch => "true|false",
            Kind::DnsScope => "all|resolv.conf",
        }
    }

    /// The kind in words, for the README's table.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::UserId => "user ID",
            Kind::GroupId => "group ID",
            Kind::Port => "port",
            Kind::PortList => "port list (ranges `8000-8010`)",
            Kind::AddressList => "address/CIDR list",
            Kind::InterfaceList => "interface name list",
            Kind::Ipv6Mode => "`auto`, `on`, `off` (netconf: boolean)",
            Kind::Switch => "boolean",
            Kind::DnsScope => "`all`, `resolv.conf`",
        }
    }
}

/// Whose property it is: App Mesh's are also read from `CNI_ARGS` and `runtimeConfig`,
/// as the App Mesh plugin reads them; meshinit's own only where meshinit defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    AppMesh,
    Meshinit,
}

/// The kinds of source that spell property names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// ECS `proxyConfiguration` properties (`IgnoredUID`).
    Ecs,
    /// App Mesh CNI network config keys (`ignoredUID`), also `CNI_ARGS` and
    /// `runtimeConfig` keys.
    Cni,
    /// Environment variables (`APPMESH_IGNORE_UID`).
    Env,
    /// Command-line flags (`--ignored-uid`).
    Flag,
    /// Kubernetes pod annotations (`appmesh.k8s.aws/ignoredUID`, `meshinit.io/dropInvalid`).
    Annotation,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Ecs,
        Source::Cni,
        Source::Env,
        Source::Flag,
        Source::Annotation,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Source::Ecs => "ECS proxyConfiguration",
            Source::Cni => "CNI netconf key",
            Source::Env => "environment",
            Source::Flag => "flag",
            Source::Annotation => "pod annotation",
        }
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Spec {
    pub property: Property,
    pub kind: Kind,
    pub origin: Origin,
    /// ECS `proxyConfiguration` accepts only App Mesh's properties, and has no IPv6 one.
    pub ecs: Option<&'static str>,
    pub cni: &'static str,
    pub env: &'static str,
    /// With the dashes; `None` where a command has its own flag instead (`apply --verify`).
    pub flag: Option<&'static str>,
    /// The App Mesh controller's annotation, or `meshinit.io/` and the CNI key.
    pub annotation: Option<&'static str>,
    /// One line for help and the README.
    pub doc: &'static str,
}

impl Spec {
    /// How `source` spells this property, if it has it at all.
    pub fn spelling(&self, source: Source) -> Option<&'static str> {
        match source {
            Source::Ecs => self.ecs,
            Source::Cni => Some(self.cni),
            Source::Env => Some(self.env),
            Source::Flag => self.flag,
            Source::Annotation => self.annotation,
        }
    }
}

/// Pod annotations for meshinit's own settings: this prefix and the CNI key.
pub const ANNOTATION_PREFIX: &str = "meshinit.io/";

/// Every property, in [`Property`] order.
pub const PROPERTIES: [Spec; 15] = [
    Spec {
        property: Property::IgnoredUid,
        kind: Kind::UserId,
        origin: Origin::AppMesh,
        ecs: Some("IgnoredUID"),
        cni: "ignoredUID",
        env: "APPMESH_IGNORE_UID",
        flag: Some("--ignored-uid"),
        annotation: Some("appmesh.k8s.aws/ignoredUID"),
        doc: "the proxy's user ID; its traffic is never redirected.",
    },
    Spec {
        property: Property::IgnoredGid,
        kind: Kind::GroupId,
        origin: Origin::AppMesh,
        ecs: Some("IgnoredGID"),
        cni: "ignoredGID",
        env: "APPMESH_IGNORE_GID",
        flag: Some("--ignored-gid"),
        annotation: Some("appmesh.k8s.aws/ignoredGID"),
        doc: "the proxy's group ID; its traffic is never redirected.",
    },
    Spec {
        property: Property::ProxyIngressPort,
        kind: Kind::Port,
        origin: Origin::AppMesh,
        ecs: Some("ProxyIngressPort"),
        cni: "proxyIngressPort",
        env: "APPMESH_ENVOY_INGRESS_PORT",
        flag: Some("--proxy-ingress-port"),
        annotation: Some("appmesh.k8s.aws/proxyIngressPort"),
        doc: "where inbound connections to AppPorts are redirected.",
    },
    Spec {
        property: Property::ProxyEgressPort,
        kind: Kind::Port,
        origin: Origin::AppMesh,
        ecs: Some("ProxyEgressPort"),
        cni: "proxyEgressPort",
        env: "APPMESH_ENVOY_EGRESS_PORT",
        flag: Some("--proxy-egress-port"),
        annotation: Some("appmesh.k8s.aws/proxyEgressPort"),
        doc: "where outbound TCP connections are redirected (required).",
    },
    Spec {
        property: Property::AppPorts,
        kind: Kind::PortList,
        origin: Origin::AppMesh,
        ecs: Some("AppPorts"),
        cni: "appPorts",
        env: "APPMESH_APP_PORTS",
        flag: Some("--app-ports"),
        annotation: Some("appmesh.k8s.aws/ports"),
        doc: "comma-separated ports or ranges (8000-8010) the application listens on; * for every port.",
    },
    Spec {
        property: Property::EgressIgnoredIps,
        kind: Kind::AddressList,
        origin: Origin::AppMesh,
        ecs: Some("EgressIgnoredIPs"),
        cni: "egressIgnoredIPs",
        env: "APPMESH_EGRESS_IGNORED_IP",
        flag: Some("--egress-ignored-ips"),
        annotation: Some("appmesh.k8s.aws/egressIgnoredIPs"),
        doc: "comma-separated addresses/CIDRs reached directly. Always added: 169.254.170.2, \
              169.254.169.254, 169.254.170.23, fd00:ec2::23, fd00:ec2::254.",
    },
    Spec {
        property: Property::EgressIgnoredPorts,
        kind: Kind::PortList,
        origin: Origin::AppMesh,
        ecs: Some("EgressIgnoredPorts"),
        cni: "egressIgnoredPorts",
        env: "APPMESH_EGRESS_IGNORED_PORTS",
        flag: Some("--egress-ignored-ports"),
        annotation: Some("appmesh.k8s.aws/egressIgnoredPorts"),
        doc: "comma-separated ports or ranges reached directly. 22 is always added.",
    },
    Spec {
        property: Property::Ipv6,
        kind: Kind::Ipv6Mode,
        origin: Origin::AppMesh,
        ecs: None,
        cni: "enableIPv6",
        env: "APPMESH_ENABLE_IPV6",
        flag: Some("--ipv6"),
        annotation: Some("appmesh.k8s.aws/ipv6"),
        doc: "IPv6 rules: auto (when the namespace has IPv6), on (fail without it), off.",
    },
    Spec {
        property: Property::EgressIncludedIps,
        kind: Kind::AddressList,
        origin: Origin::Meshinit,
        ecs: None,
        cni: "egressIncludedIPs",
        env: "MESHINIT_EGRESS_INCLUDED_IPS",
        flag: Some("--egress-included-ips"),
        annotation: Some("meshinit.io/egressIncludedIPs"),
        doc: "capture only outbound connections to these addresses/CIDRs (per family; \
              0.0.0.0/0 or ::/0 for a whole family); the ignored lists still win.",
    },
    Spec {
        property: Property::IngressIgnoredPorts,
        kind: Kind::PortList,
        origin: Origin::Meshinit,
        ecs: None,
        cni: "ingressIgnoredPorts",
        env: "MESHINIT_INGRESS_IGNORED_PORTS",
        flag: Some("--ingress-ignored-ports"),
        annotation: Some("meshinit.io/ingressIgnoredPorts"),
        doc: "with AppPorts *, inbound ports never captured (the proxy's own ports are always \
              added).",
    },
    Spec {
        property: Property::IgnoredInterfaces,
        kind: Kind::InterfaceList,
        origin: Origin::Meshinit,
        ecs: None,
        cni: "ignoredInterfaces",
        env: "MESHINIT_IGNORED_INTERFACES",
        flag: Some("--ignored-interfaces"),
        annotation: Some("meshinit.io/ignoredInterfaces"),
        doc: "interfaces whose traffic, in or out, is never captured.",
    },
    Spec {
        property: Property::DropInvalid,
        kind: Kind::Switch,
        origin: Origin::Meshinit,
        ecs: None,
        cni: "dropInvalid",
        env: "MESHINIT_DROP_INVALID",
        flag: Some("--drop-invalid"),
        annotation: Some("meshinit.io/dropInvalid"),
        doc: "drop inbound packets conntrack marks INVALID (out-of-window segments that would \
              otherwise reach the app un-rewritten and reset the connection).",
    },
    Spec {
        property: Property::ProxyDnsPort,
        kind: Kind::Port,
        origin: Origin::Meshinit,
        ecs: None,
        cni: "proxyDNSPort",
        env: "MESHINIT_PROXY_DNS_PORT",
        flag: Some("--proxy-dns-port"),
        annotation: Some("meshinit.io/proxyDNSPort"),
        doc: "capture the app's DNS queries (UDP and TCP port 53) to this port of the proxy; \
              the proxy's own queries (IgnoredUID/GID) go out as they are.",
    },
    Spec {
        property: Property::DnsCapture,
        kind: Kind::DnsScope,
        origin: Origin::Meshinit,
        ecs: None,
        cni: "dnsCapture",
        env: "MESHINIT_DNS_CAPTURE",
        flag: Some("--dns-capture"),
        annotation: Some("meshinit.io/dnsCapture"),
        doc: "which queries: all (to any resolver, the default) or resolv.conf (to the \
              resolvers of /etc/resolv.conf as apply reads it).",
    },
    Spec {
        property: Property::Verify,
        kind: Kind::Switch,
        origin: Origin::Meshinit,
        ecs: None,
        cni: "verify",
        env: "MESHINIT_VERIFY",
        // `apply --verify` is apply's own flag (it conflicts with --dry-run); the commands
        // that only read a configuration have nothing to prove.
        flag: None,
        annotation: Some("meshinit.io/verify"),
        doc: "after the rules are in place, prove them with real connections (as apply \
              --verify): CNI ADD and CHECK, and apply, fail when redirection is broken.",
    },
];

impl Property {
    /// Every property, in table order.
    pub fn all() -> impl Iterator<Item = Property> {
        PROPERTIES.iter().map(|spec| spec.property)
    }

    pub fn spec(self) -> &'static Spec {
        &PROPERTIES[self as usize]
    }
}

/// The property `source` spells `name`, exactly.
pub fn find(source: Source, name: &str) -> Option<&'static Spec> {
    PROPERTIES
        .iter()
        .find(|spec| spec.spelling(source) == Some(name))
}

/// Every spelling of `source`, in table order (for suggestions and help).
pub fn spellings(source: Source) -> Vec<&'static str> {
    PROPERTIES
        .iter()
        .filter_map(|spec| spec.spelling(source))
        .collect()
}

/// The App Mesh properties' spellings in `source`: what the App Mesh tools accept there.
pub fn app_mesh_spellings(source: Source) -> Vec<&'static str> {
    PROPERTIES
        .iter()
        .filter(|spec| spec.origin == Origin::AppMesh)
        .filter_map(|spec| spec.spelling(source))
        .collect()
}

/// The README's property table, as markdown: generated from [`PROPERTIES`] so the two
/// cannot disagree (a test compares it with README.md).
pub fn markdown_table() -> String {
    let cell = |name: Option<&str>| match name {
        Some(name) => format!("`{name}`"),
        None => "—".to_owned(),
    };
    let mut text = String::from(
        "| ECS property | CNI key | Environment | Flag | Pod annotation | Value | Meaning |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for spec in &PROPERTIES {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            cell(spec.ecs),
            cell(Some(spec.cni)),
            cell(Some(spec.env)),
            cell(spec.flag),
            cell(spec.annotation),
            spec.kind.describe(),
            spec.doc.replace('|', "\\|").replace('*', "`*`"),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_property_order() {
        for (index, spec) in PROPERTIES.iter().enumerate() {
            assert_eq!(spec.property as usize, index, "{:?}", spec.property);
        }
    }

    #[test]
    fn every_spelling_is_unique_within_its_source() {
        for source in Source::ALL {
            let names = spellings(source);
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{source:?}: {names:?}");
        }
    }

    #[test]
    fn meshinit_annotations_are_the_prefix_and_the_cni_key() {
        for spec in PROPERTIES.iter().filter(|s| s.origin == Origin::Meshinit) {
            assert_eq!(
                spec.annotation,
                Some(format!("{ANNOTATION_PREFIX}{}", spec.cni).as_str()),
            );
            assert!(spec.ecs.is_none(), "ECS accepts only App Mesh's properties");
            assert!(spec.env.starts_with("MESHINIT_"), "{}", spec.env);
        }
    }
}
