//! Unvalidated settings as read from one configuration source, each value remembering the
//! name its source gave it so that errors can name the property the user actually wrote.

/// One value and the property name it came from (`AppPorts`, `appPorts`,
/// `APPMESH_APP_PORTS`, `--app-ports`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub property: String,
}

impl<T> Setting<T> {
    pub fn new(property: impl Into<String>, value: T) -> Self {
        Setting {
            value,
            property: property.into(),
        }
    }
}

/// A list value: the text it was read from (quoted in errors), split into items on demand.
/// Lists can hold 100,000 entries: the text is kept once, not again as one string per item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListValue {
    pub verbatim: String,
}

impl ListValue {
    /// Splits a comma-separated value (`"9080, 9081"`); empty items are dropped so that a
    /// trailing comma or an empty property means "nothing", as the ECS agent treats it.
    pub fn from_comma_separated(text: &str) -> Self {
        ListValue {
            verbatim: text.to_owned(),
        }
    }

    /// A JSON array of strings (CNI config); each element may itself be comma-separated,
    /// so joining them with commas gives the same items.
    pub fn from_items(items: &[String]) -> Self {
        ListValue {
            verbatim: items.join(","),
        }
    }

    /// The items, trimmed, empty ones dropped.
    pub fn items(&self) -> impl Iterator<Item = &str> {
        self.verbatim
            .split(',')
            .map(trim_value)
            .filter(|item| !item.is_empty())
    }
}

/// The one whitespace rule, for every value of every source: ASCII whitespace (space, tab,
/// newline, carriage return, form feed) around a value, a list entry or a range bound is
/// ignored; anywhere else it is an error of the value's grammar. Values are parsed into
/// numbers and addresses before they reach a rule, so no raw text ends up in one.
pub fn trim_value(text: &str) -> &str {
    text.trim_ascii()
}

/// The properties of a proxy configuration, whatever a source calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    IgnoredUid,
    IgnoredGid,
    ProxyIngressPort,
    ProxyEgressPort,
    AppPorts,
    EgressIgnoredIps,
    EgressIgnoredPorts,
    Ipv6,
    // The mesh settings (`super::mesh`), in `MESH_NAMES` column order.
    EgressIncludedIps,
    IngressIgnoredPorts,
    IgnoredInterfaces,
    DropInvalid,
    ProxyDnsPort,
    DnsCapture,
}

/// How a kind of source spells the properties, so that a message about a property the user
/// did not give names it as they would write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vocabulary {
    /// ECS `proxyConfiguration` properties (`IgnoredUID`).
    Ecs,
    /// App Mesh CNI network config keys (`ignoredUID`).
    Cni,
    /// The init container's environment (`APPMESH_IGNORE_UID`).
    Env,
    /// Command-line flags (`--ignored-uid`).
    Flags,
}

impl Vocabulary {
    pub fn name(self, property: Property) -> &'static str {
        let column = property as usize;
        match NAMES[self as usize].get(column) {
            Some(name) => name,
            None => super::mesh::MESH_NAMES[self as usize][column - NAMES[0].len()],
        }
    }
}

/// Each vocabulary's names (rows in `Vocabulary` order, columns in `Property` order): the
/// one table every source reads its names from.
pub const NAMES: [[&str; 8]; 4] = [
    // ECS has no IPv6 property; its users set it with the flag.
    [
        "IgnoredUID",
        "IgnoredGID",
        "ProxyIngressPort",
        "ProxyEgressPort",
        "AppPorts",
        "EgressIgnoredIPs",
        "EgressIgnoredPorts",
        "--ipv6",
    ],
    [
        "ignoredUID",
        "ignoredGID",
        "proxyIngressPort",
        "proxyEgressPort",
        "appPorts",
        "egressIgnoredIPs",
        "egressIgnoredPorts",
        "enableIPv6",
    ],
    [
        "APPMESH_IGNORE_UID",
        "APPMESH_IGNORE_GID",
        "APPMESH_ENVOY_INGRESS_PORT",
        "APPMESH_ENVOY_EGRESS_PORT",
        "APPMESH_APP_PORTS",
        "APPMESH_EGRESS_IGNORED_IP",
        "APPMESH_EGRESS_IGNORED_PORTS",
        "APPMESH_ENABLE_IPV6",
    ],
    [
        "--ignored-uid",
        "--ignored-gid",
        "--proxy-ingress-port",
        "--proxy-egress-port",
        "--app-ports",
        "--egress-ignored-ips",
        "--egress-ignored-ports",
        "--ipv6",
    ],
];

/// Settings of one source. `None` means the source did not mention the property.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSettings {
    /// How the user's main source spells the properties: that of the lowest-precedence
    /// source that said anything (the document, else the environment, else flags).
    pub vocabulary: Option<Vocabulary>,
    pub ignored_uid: Option<Setting<String>>,
    pub ignored_gid: Option<Setting<String>>,
    pub proxy_ingress_port: Option<Setting<String>>,
    pub proxy_egress_port: Option<Setting<String>>,
    pub app_ports: Option<Setting<ListValue>>,
    pub egress_ignored_ips: Option<Setting<ListValue>>,
    pub egress_ignored_ports: Option<Setting<ListValue>>,
    pub ipv6: Option<Setting<String>>,
    pub egress_included_ips: Option<Setting<ListValue>>,
    pub ingress_ignored_ports: Option<Setting<ListValue>>,
    pub ignored_interfaces: Option<Setting<ListValue>>,
    pub drop_invalid: Option<Setting<String>>,
    pub proxy_dns_port: Option<Setting<String>>,
    pub dns_capture: Option<Setting<String>>,
}

impl RawSettings {
    /// Layers `higher` over `self`: every property `higher` sets wins.
    pub fn overlay(self, higher: RawSettings) -> RawSettings {
        RawSettings {
            vocabulary: self.vocabulary.or(higher.vocabulary),
            ignored_uid: higher.ignored_uid.or(self.ignored_uid),
            ignored_gid: higher.ignored_gid.or(self.ignored_gid),
            proxy_ingress_port: higher.proxy_ingress_port.or(self.proxy_ingress_port),
            proxy_egress_port: higher.proxy_egress_port.or(self.proxy_egress_port),
            app_ports: higher.app_ports.or(self.app_ports),
            egress_ignored_ips: higher.egress_ignored_ips.or(self.egress_ignored_ips),
            egress_ignored_ports: higher.egress_ignored_ports.or(self.egress_ignored_ports),
            ipv6: higher.ipv6.or(self.ipv6),
            egress_included_ips: higher.egress_included_ips.or(self.egress_included_ips),
            ingress_ignored_ports: higher.ingress_ignored_ports.or(self.ingress_ignored_ports),
            ignored_interfaces: higher.ignored_interfaces.or(self.ignored_interfaces),
            drop_invalid: higher.drop_invalid.or(self.drop_invalid),
            proxy_dns_port: higher.proxy_dns_port.or(self.proxy_dns_port),
            dns_capture: higher.dns_capture.or(self.dns_capture),
        }
    }

    /// Marks these settings as spelled in `vocabulary` when they set anything.
    pub fn spelled_in(mut self, vocabulary: Vocabulary) -> Self {
        if self != RawSettings::default() {
            self.vocabulary = Some(vocabulary);
        }
        self
    }

    /// The name of `property` for a message: as its source spelled it when given, else as
    /// the user's main source would.
    pub fn name_of(&self, property: Property) -> String {
        let given = match property {
            Property::IgnoredUid => self.ignored_uid.as_ref().map(|s| &s.property),
            Property::IgnoredGid => self.ignored_gid.as_ref().map(|s| &s.property),
            Property::ProxyIngressPort => self.proxy_ingress_port.as_ref().map(|s| &s.property),
            Property::ProxyEgressPort => self.proxy_egress_port.as_ref().map(|s| &s.property),
            Property::AppPorts => self.app_ports.as_ref().map(|s| &s.property),
            Property::EgressIgnoredIps => self.egress_ignored_ips.as_ref().map(|s| &s.property),
            Property::EgressIgnoredPorts => self.egress_ignored_ports.as_ref().map(|s| &s.property),
            Property::Ipv6 => self.ipv6.as_ref().map(|s| &s.property),
            Property::EgressIncludedIps => self.egress_included_ips.as_ref().map(|s| &s.property),
            Property::IngressIgnoredPorts => {
                self.ingress_ignored_ports.as_ref().map(|s| &s.property)
            }
            Property::IgnoredInterfaces => self.ignored_interfaces.as_ref().map(|s| &s.property),
            Property::DropInvalid => self.drop_invalid.as_ref().map(|s| &s.property),
            Property::ProxyDnsPort => self.proxy_dns_port.as_ref().map(|s| &s.property),
            Property::DnsCapture => self.dns_capture.as_ref().map(|s| &s.property),
        };
        given.cloned().unwrap_or_else(|| {
            self.vocabulary
                .unwrap_or(Vocabulary::Ecs)
                .name(property)
                .to_owned()
        })
    }

    /// A scalar property; an empty string counts as unset, as in the App Mesh tools
    /// (`"proxyIngressPort": ""` means egress only).
    pub fn scalar(property: &str, value: &str) -> Option<Setting<String>> {
        if trim_value(value).is_empty() {
            None
        } else {
            Some(Setting::new(property, value.to_owned()))
        }
    }

    pub fn list(property: &str, value: &str) -> Option<Setting<ListValue>> {
        Some(Setting::new(
            property,
            ListValue::from_comma_separated(value),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_prefers_the_higher_source_per_property() {
        let file = RawSettings {
            ignored_uid: RawSettings::scalar("IgnoredUID", "1337"),
            proxy_egress_port: RawSettings::scalar("ProxyEgressPort", "15001"),
            ..Default::default()
        };
        let flags = RawSettings {
            proxy_egress_port: RawSettings::scalar("--proxy-egress-port", "16001"),
            ..Default::default()
        };
        let merged = file.overlay(flags);
        assert_eq!(merged.ignored_uid.unwrap().value, "1337");
        let egress = merged.proxy_egress_port.unwrap();
        assert_eq!(
            (egress.property.as_str(), egress.value.as_str()),
            ("--proxy-egress-port", "16001")
        );
    }

    #[test]
    fn each_vocabulary_names_a_property_as_its_source_does() {
        assert_eq!(Vocabulary::Ecs.name(Property::IgnoredUid), "IgnoredUID");
        assert_eq!(Vocabulary::Cni.name(Property::Ipv6), "enableIPv6");
        assert_eq!(
            Vocabulary::Env.name(Property::EgressIgnoredIps),
            "APPMESH_EGRESS_IGNORED_IP"
        );
        assert_eq!(Vocabulary::Flags.name(Property::AppPorts), "--app-ports");
        let from_env = RawSettings {
            ignored_uid: RawSettings::scalar("APPMESH_IGNORE_UID", "1"),
            ..Default::default()
        }
        .spelled_in(Vocabulary::Env);
        let with_flags = from_env.overlay(
            RawSettings {
                app_ports: RawSettings::list("--app-ports", "80"),
                ..Default::default()
            }
            .spelled_in(Vocabulary::Flags),
        );
        assert_eq!(with_flags.name_of(Property::AppPorts), "--app-ports");
        assert_eq!(
            with_flags.name_of(Property::ProxyEgressPort),
            "APPMESH_ENVOY_EGRESS_PORT"
        );
    }

    #[test]
    fn lists_split_on_commas_and_drop_empty_items() {
        let list = ListValue::from_comma_separated(" 9080, 9081,,");
        assert_eq!(list.items().collect::<Vec<_>>(), ["9080", "9081"]);
        let list = ListValue::from_items(&["22".into(), "80,443".into(), String::new()]);
        assert_eq!(list.items().collect::<Vec<_>>(), ["22", "80", "443"]);
    }
}
