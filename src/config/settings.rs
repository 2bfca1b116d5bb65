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

/// A list value: the items and the text they were read from (quoted in errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListValue {
    pub items: Vec<String>,
    pub verbatim: String,
}

impl ListValue {
    /// Splits a comma-separated value (`"9080, 9081"`); empty items are dropped so that a
    /// trailing comma or an empty property means "nothing", as the ECS agent treats it.
    pub fn from_comma_separated(text: &str) -> Self {
        ListValue {
            items: split_list(text),
            verbatim: text.to_owned(),
        }
    }

    /// A JSON array of strings (CNI config); each element may itself be comma-separated.
    pub fn from_items(items: &[String]) -> Self {
        ListValue {
            items: items.iter().flat_map(|item| split_list(item)).collect(),
            verbatim: items.join(","),
        }
    }
}

/// Trims blanks only: a newline or other control character must stay and be rejected, since
/// it could otherwise end a rule line.
pub fn trim_blanks(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(trim_blanks)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Settings of one source. `None` means the source did not mention the property.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSettings {
    pub ignored_uid: Option<Setting<String>>,
    pub ignored_gid: Option<Setting<String>>,
    pub proxy_ingress_port: Option<Setting<String>>,
    pub proxy_egress_port: Option<Setting<String>>,
    pub app_ports: Option<Setting<ListValue>>,
    pub egress_ignored_ips: Option<Setting<ListValue>>,
    pub egress_ignored_ports: Option<Setting<ListValue>>,
    pub ipv6: Option<Setting<String>>,
}

impl RawSettings {
    /// Layers `higher` over `self`: every property `higher` sets wins.
    pub fn overlay(self, higher: RawSettings) -> RawSettings {
        RawSettings {
            ignored_uid: higher.ignored_uid.or(self.ignored_uid),
            ignored_gid: higher.ignored_gid.or(self.ignored_gid),
            proxy_ingress_port: higher.proxy_ingress_port.or(self.proxy_ingress_port),
            proxy_egress_port: higher.proxy_egress_port.or(self.proxy_egress_port),
            app_ports: higher.app_ports.or(self.app_ports),
            egress_ignored_ips: higher.egress_ignored_ips.or(self.egress_ignored_ips),
            egress_ignored_ports: higher.egress_ignored_ports.or(self.egress_ignored_ports),
            ipv6: higher.ipv6.or(self.ipv6),
        }
    }

    /// A scalar property; an empty string counts as unset, as in the App Mesh tools
    /// (`"proxyIngressPort": ""` means egress only).
    pub fn scalar(property: &str, value: &str) -> Option<Setting<String>> {
        if trim_blanks(value).is_empty() {
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
    fn lists_split_on_commas_and_drop_empty_items() {
        let list = ListValue::from_comma_separated(" 9080, 9081,,");
        assert_eq!(list.items, vec!["9080", "9081"]);
        let list = ListValue::from_items(&["22".into(), "80,443".into()]);
        assert_eq!(list.items, vec!["22", "80", "443"]);
    }
}
