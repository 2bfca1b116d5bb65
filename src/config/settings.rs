//! Unvalidated settings as read from one configuration source, keyed by [`Property`], each
//! value remembering the name its source gave it so that errors can name the property the
//! user actually wrote.

use std::collections::BTreeMap;

pub use super::properties::Property;
use super::properties::Source;

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

impl Setting<String> {
    /// The value as a list: the text it was read from (quoted in errors), split into items
    /// on demand. Lists can hold 100,000 entries: the text is kept once, not again as one
    /// string per item.
    pub fn list(&self) -> ListValue<'_> {
        ListValue {
            verbatim: &self.value,
        }
    }
}

/// A list value: comma-separated text; empty items are dropped so that a trailing comma or
/// an empty property means "nothing", as the ECS agent treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListValue<'a> {
    pub verbatim: &'a str,
}

impl<'a> ListValue<'a> {
    /// The items, trimmed, empty ones dropped.
    pub fn items(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.verbatim
            .split(',')
            .map(trim_value)
            .filter(|item| !item.is_empty())
    }
}

/// A JSON array of strings (CNI config) as list text; each element may itself be
/// comma-separated, so joining them with commas gives the same items.
pub fn join_items(items: &[String]) -> String {
    items.join(",")
}

/// The one whitespace rule, for every value of every source: ASCII whitespace (space, tab,
/// newline, carriage return, form feed) around a value, a list entry or a range bound is
/// ignored; anywhere else it is an error of the value's grammar. Values are parsed into
/// numbers and addresses before they reach a rule, so no raw text ends up in one.
pub fn trim_value(text: &str) -> &str {
    text.trim_ascii()
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
    /// The property's name in this vocabulary, from the one table. A property the
    /// vocabulary lacks is named as users of that source set it: ECS users with the flag
    /// (`--ipv6`), else by its CNI key.
    pub fn name(self, property: Property) -> &'static str {
        let spec = property.spec();
        match self {
            Vocabulary::Ecs => spec.ecs.or(spec.flag).unwrap_or(spec.cni),
            Vocabulary::Cni => spec.cni,
            Vocabulary::Env => spec.env,
            Vocabulary::Flags => spec.flag.unwrap_or(spec.cni),
        }
    }

    /// The table's column for this vocabulary.
    pub fn source(self) -> Source {
        match self {
            Vocabulary::Ecs => Source::Ecs,
            Vocabulary::Cni => Source::Cni,
            Vocabulary::Env => Source::Env,
            Vocabulary::Flags => Source::Flag,
        }
    }
}

/// Settings of one source. A property without a value is one the source did not mention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSettings {
    /// How the user's main source spells the properties: that of the lowest-precedence
    /// source that said anything (the document, else the environment, else flags).
    pub vocabulary: Option<Vocabulary>,
    values: BTreeMap<Property, Setting<String>>,
}

impl RawSettings {
    /// The value of `property`, if the source gave one.
    pub fn get(&self, property: Property) -> Option<&Setting<String>> {
        self.values.get(&property)
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The properties set, with their values, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (Property, &Setting<String>)> {
        self.values
            .iter()
            .map(|(property, setting)| (*property, setting))
    }

    /// Sets `property` from text its source spelled `name`, by the property's kind: an
    /// empty scalar counts as unset, as in the App Mesh tools (`"proxyIngressPort": ""`
    /// means egress only); a list is kept even when empty (it means "nothing").
    pub fn put(&mut self, property: Property, name: impl Into<String>, value: &str) {
        if !property.spec().kind.is_list() && trim_value(value).is_empty() {
            self.values.remove(&property);
        } else {
            self.values
                .insert(property, Setting::new(name, value.to_owned()));
        }
    }

    /// [`put`](Self::put), by value: `RawSettings::default().with(Property::AppPorts,
    /// "AppPorts", "9080")`.
    pub fn with(mut self, property: Property, name: impl Into<String>, value: &str) -> Self {
        self.put(property, name, value);
        self
    }

    /// Settings spelled as `vocabulary` spells the properties.
    pub fn spelled<'a>(
        vocabulary: Vocabulary,
        values: impl IntoIterator<Item = (Property, &'a str)>,
    ) -> Self {
        values
            .into_iter()
            .fold(RawSettings::default(), |settings, (property, value)| {
                settings.with(property, vocabulary.name(property), value)
            })
            .spelled_in(vocabulary)
    }

    /// Names every property set by `label`, so that validation errors say which source
    /// the bad value came from (`CNI_ARGS AppPorts`, `pod annotation appmesh.k8s.aws/ports`).
    pub fn relabel(&mut self, label: &str) {
        for setting in self.values.values_mut() {
            setting.property = label.to_owned();
        }
    }

    /// Layers `higher` over `self`: every property `higher` sets wins.
    pub fn overlay(mut self, higher: RawSettings) -> RawSettings {
        self.vocabulary = self.vocabulary.or(higher.vocabulary);
        self.values.extend(higher.values);
        self
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
        match self.get(property) {
            Some(setting) => setting.property.clone(),
            None => self
                .vocabulary
                .unwrap_or(Vocabulary::Ecs)
                .name(property)
                .to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_prefers_the_higher_source_per_property() {
        let file = RawSettings::default()
            .with(Property::IgnoredUid, "IgnoredUID", "1337")
            .with(Property::ProxyEgressPort, "ProxyEgressPort", "15001");
        let flags =
            RawSettings::default().with(Property::ProxyEgressPort, "--proxy-egress-port", "16001");
        let merged = file.overlay(flags);
        assert_eq!(merged.get(Property::IgnoredUid).unwrap().value, "1337");
        let egress = merged.get(Property::ProxyEgressPort).unwrap();
        assert_eq!(
            (egress.property.as_str(), egress.value.as_str()),
            ("--proxy-egress-port", "16001")
        );
    }

    #[test]
    fn each_vocabulary_names_a_property_as_its_source_does() {
        assert_eq!(Vocabulary::Ecs.name(Property::IgnoredUid), "IgnoredUID");
        assert_eq!(Vocabulary::Ecs.name(Property::Ipv6), "--ipv6");
        assert_eq!(Vocabulary::Cni.name(Property::Ipv6), "enableIPv6");
        assert_eq!(
            Vocabulary::Env.name(Property::EgressIgnoredIps),
            "APPMESH_EGRESS_IGNORED_IP"
        );
        assert_eq!(Vocabulary::Flags.name(Property::AppPorts), "--app-ports");
        let from_env = RawSettings::spelled(Vocabulary::Env, [(Property::IgnoredUid, "1")]);
        let with_flags = from_env.overlay(RawSettings::spelled(
            Vocabulary::Flags,
            [(Property::AppPorts, "80")],
        ));
        assert_eq!(with_flags.name_of(Property::AppPorts), "--app-ports");
        assert_eq!(
            with_flags.name_of(Property::ProxyEgressPort),
            "APPMESH_ENVOY_EGRESS_PORT"
        );
    }

    #[test]
    fn empty_scalars_are_unset_and_empty_lists_are_empty() {
        let settings = RawSettings::default()
            .with(Property::ProxyIngressPort, "proxyIngressPort", " ")
            .with(Property::AppPorts, "appPorts", "");
        assert!(settings.get(Property::ProxyIngressPort).is_none());
        assert_eq!(
            settings
                .get(Property::AppPorts)
                .unwrap()
                .list()
                .items()
                .count(),
            0
        );
    }

    #[test]
    fn lists_split_on_commas_and_drop_empty_items() {
        let setting = Setting::new("AppPorts", " 9080, 9081,,".to_owned());
        assert_eq!(setting.list().items().collect::<Vec<_>>(), ["9080", "9081"]);
        let joined = Setting::new(
            "appPorts",
            join_items(&["22".into(), "80,443".into(), String::new()]),
        );
        assert_eq!(
            joined.list().items().collect::<Vec<_>>(),
            ["22", "80", "443"]
        );
    }
}
