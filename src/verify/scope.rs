//! Which families verify checks, decided from the configuration and from what the nat
//! tables of this namespace hold. Reading the tables is the only I/O here.

use crate::backend::{Backend, BackendKind, Installed, TimeBudget};
use crate::config::{Ipv6Mode, ProxyConfig};
use crate::converge::{Ipv6Decision, ipv6_decision, read_for_inspection};
use crate::ruleset::{Drift, EGRESS_CHAIN, Family, INGRESS_CHAIN, InstalledTable, Ruleset, plan};

/// One family's nat table as read, with how its egress and ingress parts differ from the
/// configuration (in the backend's words), so the checks need no backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub table: InstalledTable,
    pub egress_drift: Drift,
    pub ingress_drift: Drift,
}

/// One family's nat table as read, or why it was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatTable {
    Read(Inspected),
    Unread(String),
}

impl NatTable {
    pub fn as_result(&self) -> Result<&Inspected, &str> {
        match self {
            NatTable::Read(nat) => Ok(nat),
            NatTable::Unread(why) => Err(why),
        }
    }

    fn has_egress_chain(&self) -> bool {
        matches!(self, NatTable::Read(nat) if nat.table.chains.iter().any(|c| c == EGRESS_CHAIN))
    }
}

/// The part of `ruleset` that concerns one of our chains: the chain, its rules, the jumps
/// into it.
pub fn only_chain(ruleset: &Ruleset, chain: &str) -> Ruleset {
    let mut part = ruleset.clone();
    part.chains.retain(|c| c == chain);
    part.rules.retain(|r| r.chain == chain);
    part.jumps.retain(|j| j.jump_target() == Some(chain));
    part
}

/// What verify knows of one family of `installed`: its table and its drift from `config`,
/// per chain.
pub fn inspect(
    backend: &dyn Backend,
    config: &ProxyConfig,
    family: Family,
    installed: &Installed,
) -> Inspected {
    let desired = plan(config, family, backend.plan_options());
    let drift = |chain| backend.describe_drift(&only_chain(&desired, chain), installed, family);
    Inspected {
        egress_drift: drift(EGRESS_CHAIN),
        ingress_drift: drift(INGRESS_CHAIN),
        table: installed.table(family).cloned().unwrap_or_default(),
    }
}

/// Whether a family is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyDecision {
    /// Probe it; the note, if any, says why it is checked although one might not expect it.
    Probe(Option<String>),
    NotApplicable(String),
    CouldNotRun(String),
}

/// The tables of both families and the decision for each.
#[derive(Debug, Clone)]
pub struct Scope {
    pub backend: Option<BackendKind>,
    pub ipv4: NatTable,
    pub ipv6: NatTable,
    pub decisions: [(Family, FamilyDecision); 2],
}

impl Scope {
    pub fn table(&self, family: Family) -> &NatTable {
        match family {
            Family::Ipv4 => &self.ipv4,
            Family::Ipv6 => &self.ipv6,
        }
    }
}

/// Reads the nat tables with `backend` and decides what to check. IPv6 is read whenever
/// the configuration allows it (as `auto`, so a missing IPv6 is a verdict here rather than
/// an error); a failed read leaves the traffic checks to run.
pub fn read(backend: &dyn Backend, config: &ProxyConfig, budget: &TimeBudget) -> Scope {
    let mode = config.ipv6;
    let (backend_kind, ipv4, ipv6): (Option<BackendKind>, NatTable, NatTable) =
        match read_for_inspection(backend, mode, budget) {
            Ok(installation) => {
                let table = |family| {
                    if installation.table(family).is_some() {
                        return NatTable::Read(inspect(backend, config, family, &installation));
                    }
                    let why = installation
                        .skipped
                        .iter()
                        .find(|(f, _)| *f == family)
                        .map_or_else(
                            || format!("the {family} nat table was not read"),
                            |(_, why)| why.clone(),
                        );
                    NatTable::Unread(why)
                };
                (
                    Some(installation.backend),
                    table(Family::Ipv4),
                    table(Family::Ipv6),
                )
            }
            Err(e) => {
                let why = format!("reading the nat tables failed: {e}");
                (None, NatTable::Unread(why.clone()), NatTable::Unread(why))
            }
        };
    let engine = ipv6_decision(mode, crate::netns::ipv6_unavailable());
    let decisions = decide(mode, &engine, &ipv4, &ipv6);
    Scope {
        backend: backend_kind,
        ipv4,
        ipv6,
        decisions,
    }
}

/// IPv4 is always checked. IPv6 follows the engine's decision (`engine`, as apply takes it
/// here): not checked where the configuration turns it off; otherwise checked where its
/// rules should be: `on` demands them; under `auto` they are expected when the IPv6 nat
/// table holds our chain, or when IPv4's does and IPv6 was readable (apply in `auto`
/// programs both whenever it can, so IPv6 left out would leak).
pub fn decide(
    mode: Ipv6Mode,
    engine: &Ipv6Decision,
    ipv4: &NatTable,
    ipv6: &NatTable,
) -> [(Family, FamilyDecision); 2] {
    let v6 = match (engine, ipv6) {
        (Ipv6Decision::Off(why), _) => FamilyDecision::NotApplicable(why.clone()),
        (_, NatTable::Read(_)) if ipv6.has_egress_chain() => FamilyDecision::Probe(None),
        (_, NatTable::Read(_)) if mode == Ipv6Mode::On => FamilyDecision::Probe(None),
        (_, NatTable::Read(_)) if ipv4.has_egress_chain() => FamilyDecision::Probe(Some(
            "IPv6 is checked although its nat table holds no APPMESH_EGRESS chain: IPv4's \
             does, and IPv6 is usable here, so IPv6 traffic would bypass the proxy"
                .into(),
        )),
        (_, NatTable::Read(_)) => FamilyDecision::NotApplicable(
            "neither nat table holds meshinit's rules; IPv4 is checked to show it".into(),
        ),
        // IPv4 was read, so the IPv6 table was skipped on purpose (IPv6 disabled, no ip6 nat).
        (_, NatTable::Unread(why)) if mode == Ipv6Mode::On && matches!(ipv4, NatTable::Read(_)) => {
            FamilyDecision::CouldNotRun(format!("IPv6 is required (ipv6: on) but {why}"))
        }
        (_, NatTable::Unread(why)) if matches!(ipv4, NatTable::Read(_)) => {
            FamilyDecision::NotApplicable(why.clone())
        }
        // Nothing could be read: traffic decides under `on`; under `auto` the rules may or may
        // not be meant to be there, so a failed probe would prove nothing.
        (_, NatTable::Unread(_)) if mode == Ipv6Mode::On => FamilyDecision::Probe(None),
        (Ipv6Decision::Skipped(why) | Ipv6Decision::Refused(why), NatTable::Unread(_)) => {
            FamilyDecision::NotApplicable(why.clone())
        }
        (Ipv6Decision::Programmed, NatTable::Unread(why)) => FamilyDecision::CouldNotRun(format!(
            "cannot tell whether IPv6 rules should be here (ipv6: auto): {why}"
        )),
    };
    [
        (Family::Ipv4, FamilyDecision::Probe(None)),
        (Family::Ipv6, v6),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(table: InstalledTable) -> NatTable {
        NatTable::Read(Inspected {
            table,
            egress_drift: Drift::default(),
            ingress_drift: Drift::default(),
        })
    }
    fn with_chain() -> NatTable {
        read(InstalledTable {
            chains: vec![EGRESS_CHAIN.to_owned()],
            ..InstalledTable::default()
        })
    }
    fn empty() -> NatTable {
        read(InstalledTable::default())
    }
    fn unread() -> NatTable {
        NatTable::Unread("IPv6 is disabled in this namespace (disable_ipv6=1)".into())
    }
    /// The decision for IPv6, with the engine's taken for `mode` where IPv6 is present or not.
    fn v6(mode: Ipv6Mode, ipv4: NatTable, ipv6: NatTable, has_ipv6: bool) -> FamilyDecision {
        let unavailable =
            (!has_ipv6).then(|| "IPv6 is disabled in this namespace (disable_ipv6=1)".to_owned());
        let engine = ipv6_decision(mode, unavailable);
        let [(_, v4), (_, v6)] = decide(mode, &engine, &ipv4, &ipv6);
        assert_eq!(v4, FamilyDecision::Probe(None));
        v6
    }

    #[test]
    fn ipv6_is_checked_where_its_rules_are_or_should_be() {
        assert_eq!(
            v6(Ipv6Mode::Auto, with_chain(), with_chain(), true),
            FamilyDecision::Probe(None)
        );
        assert_eq!(
            v6(Ipv6Mode::On, empty(), empty(), true),
            FamilyDecision::Probe(None)
        );
        assert!(matches!(
            v6(Ipv6Mode::Auto, with_chain(), empty(), true),
            FamilyDecision::Probe(Some(_))
        ));
        assert!(matches!(
            v6(Ipv6Mode::Auto, empty(), empty(), true),
            FamilyDecision::NotApplicable(_)
        ));
        assert!(matches!(
            v6(Ipv6Mode::Off, with_chain(), with_chain(), true),
            FamilyDecision::NotApplicable(_)
        ));
    }

    #[test]
    fn absent_ipv6_is_not_applicable_under_auto_and_could_not_run_under_on() {
        assert!(matches!(
            v6(Ipv6Mode::Auto, with_chain(), unread(), false),
            FamilyDecision::NotApplicable(_)
        ));
        let FamilyDecision::CouldNotRun(why) = v6(Ipv6Mode::On, with_chain(), unread(), false)
        else {
            panic!("expected could not run");
        };
        assert!(why.contains("disable_ipv6=1"), "{why}");
    }

    #[test]
    fn unreadable_tables_leave_ipv6_undecided_unless_required() {
        let failed = || {
            NatTable::Unread(
                "reading the nat tables failed: iptables-nft-save is not installed".into(),
            )
        };
        assert_eq!(
            v6(Ipv6Mode::On, failed(), failed(), true),
            FamilyDecision::Probe(None)
        );
        assert!(matches!(
            v6(Ipv6Mode::Auto, failed(), failed(), true),
            FamilyDecision::CouldNotRun(_)
        ));
        assert!(matches!(
            v6(Ipv6Mode::Auto, failed(), failed(), false),
            FamilyDecision::NotApplicable(_)
        ));
    }

    #[test]
    fn ipv6_reasons_are_the_engines() {
        assert_eq!(
            v6(Ipv6Mode::Off, with_chain(), with_chain(), true),
            FamilyDecision::NotApplicable("IPv6 is off in the configuration".into())
        );
        let failed = || NatTable::Unread("reading the nat tables failed: no tool".into());
        assert_eq!(
            v6(Ipv6Mode::Auto, failed(), failed(), false),
            FamilyDecision::NotApplicable(
                "IPv6 is disabled in this namespace (disable_ipv6=1)".into()
            )
        );
    }
}
