//! The proxy settings as flags, one per row of the property table that has a flag
//! (`--ignored-uid` for ECS `IgnoredUID`, netconf `ignoredUID`): a hand-written
//! [`clap::Args`], so a new row is a new flag without a field here. The commands that
//! read a configuration take them all; `cni install` (which writes one) takes all but
//! `--ipv6`, having its own `--enable-ipv6 true|false` for the netconf's boolean.

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::properties::{Kind, PROPERTIES, Property, Spec};
use crate::config::settings::{RawSettings, Vocabulary};

/// The flags given, in table order. `WITH_IPV6`: whether `--ipv6` is among them.
#[derive(Debug, Clone, Default)]
pub struct PropertyFlags<const WITH_IPV6: bool> {
    values: Vec<(Property, String)>,
}

/// What the commands that read a configuration take.
pub type ConfigFlags = PropertyFlags<true>;
/// What `cni install` takes.
pub type InstallFlags = PropertyFlags<false>;

impl<const WITH_IPV6: bool> PropertyFlags<WITH_IPV6> {
    /// The rows these flags stand for.
    pub fn specs() -> impl Iterator<Item = &'static Spec> {
        PROPERTIES
            .iter()
            .filter(|spec| spec.flag.is_some() && (WITH_IPV6 || spec.property != Property::Ipv6))
    }

    /// The flags given, with their values as typed, in table order.
    pub fn given(&self) -> impl Iterator<Item = (&'static Spec, &str)> {
        self.values
            .iter()
            .map(|(property, value)| (property.spec(), value.as_str()))
    }

    /// The flags as settings, named as flags.
    pub fn settings(&self) -> RawSettings {
        self.given()
            .fold(RawSettings::default(), |settings, (spec, value)| {
                settings.with(spec.property, flag_name(spec), value)
            })
            .spelled_in(Vocabulary::Flags)
    }
}

fn flag_name(spec: &Spec) -> &'static str {
    spec.flag.expect("only rows with a flag are flags")
}

/// The argument's id and long name: the flag without its dashes.
fn id(spec: &Spec) -> &'static str {
    flag_name(spec).trim_start_matches('-')
}

fn help(spec: &Spec) -> String {
    match spec.ecs {
        Some(ecs) => format!("{ecs} (netconf {}): {}", spec.cni, spec.doc),
        None if spec.property == Property::Ipv6 => spec.doc.to_owned(),
        None => format!("netconf {}: {}", spec.cni, spec.doc),
    }
}

fn arg(spec: &'static Spec) -> Arg {
    let arg = Arg::new(id(spec))
        .long(id(spec))
        .value_name(spec.kind.value_name())
        .action(ArgAction::Set)
        .help(help(spec));
    if spec.kind == Kind::Switch {
        // `--drop-invalid` alone means true.
        arg.num_args(0..=1).default_missing_value("true")
    } else {
        arg
    }
}

impl<const WITH_IPV6: bool> clap::FromArgMatches for PropertyFlags<WITH_IPV6> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = PropertyFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for spec in Self::specs() {
            if let Some(value) = matches.get_one::<String>(id(spec)) {
                self.values
                    .retain(|(property, _)| *property != spec.property);
                self.values.push((spec.property, value.clone()));
            }
        }
        self.values.sort_by_key(|(property, _)| *property);
        Ok(())
    }
}

impl<const WITH_IPV6: bool> clap::Args for PropertyFlags<WITH_IPV6> {
    fn augment_args(command: Command) -> Command {
        Self::specs().fold(command, |command, spec| command.arg(arg(spec)))
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

#[cfg(test)]
#[path = "property_sources_tests.rs"]
mod sources_tests;
