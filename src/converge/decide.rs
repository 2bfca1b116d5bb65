//! Deciding, once per run, what each family gets: its ruleset, the empty ruleset (removing
//! ours), or nothing at all (with the reason). Every layer below receives the decision.

use tracing::warn;

use crate::backend::{Desired, FamilyPlan};
use crate::config::{Ipv6Mode, ProxyConfig};
use crate::error::{Error, Result};
use crate::netns;
use crate::ruleset::{Family, PlanOptions, Ruleset, plan};

/// Whether a family is programmed, or skipped and why.
#[derive(Debug, Clone)]
pub struct FamilyChoice {
    families: Vec<(Family, Option<String>)>,
    ipv6: Ipv6Mode,
}

/// Decides the families for `ipv6` in this namespace: IPv4 always; IPv6 when present (with
/// `off` it is programmed empty, so earlier rules of ours go), skipped with the reason when
/// absent, or an error when `on` requires it.
pub fn decide(ipv6: Ipv6Mode) -> Result<FamilyChoice> {
    decide_for(ipv6, netns::ipv6_unavailable())
}

/// [`decide`] for a namespace where IPv6 is unavailable for the reason given, or available.
pub fn decide_for(ipv6: Ipv6Mode, ipv6_unavailable: Option<String>) -> Result<FamilyChoice> {
    let absent = ipv6_unavailable.is_some();
    let ipv6_decision = match ipv6_decision(ipv6, ipv6_unavailable) {
        Ipv6Decision::Refused(why) => return Err(Error::Environment(why)),
        // Off where IPv6 exists: programmed empty, so earlier rules of ours go.
        Ipv6Decision::Off(why) => absent.then_some(why),
        Ipv6Decision::Skipped(why) => {
            warn!("{why}; programming IPv4 only");
            Some(why)
        }
        Ipv6Decision::Programmed => None,
    };
    Ok(FamilyChoice {
        families: vec![(Family::Ipv4, None), (Family::Ipv6, ipv6_decision)],
        ipv6,
    })
}

/// What the engine does with IPv6, decided once here for apply, clean and verify alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6Decision {
    /// IPv6 is present and the configuration's IPv6 rules are programmed.
    Programmed,
    /// The configuration turns IPv6 off: none of our IPv6 rules belong (where IPv6 exists,
    /// they are removed).
    Off(String),
    /// IPv6 is absent and `auto` lets it go (the reason).
    Skipped(String),
    /// IPv6 is absent but `on` requires it (the whole error).
    Refused(String),
}

/// The IPv6 policy, without logging: `ipv6` in a namespace where IPv6 is unavailable for the
/// reason given, or available.
pub fn ipv6_decision(ipv6: Ipv6Mode, ipv6_unavailable: Option<String>) -> Ipv6Decision {
    match (ipv6, ipv6_unavailable) {
        (Ipv6Mode::Off, _) => Ipv6Decision::Off("IPv6 is off in the configuration".to_owned()),
        (Ipv6Mode::On, Some(why)) => {
            Ipv6Decision::Refused(format!("IPv6 is required (--ipv6 on) but {why}"))
        }
        (Ipv6Mode::Auto, Some(why)) => Ipv6Decision::Skipped(why),
        (_, None) => Ipv6Decision::Programmed,
    }
}

impl FamilyChoice {
    /// The IPv6 mode this was decided for.
    pub fn ipv6(&self) -> Ipv6Mode {
        self.ipv6
    }

    /// The desired state: `config`'s rulesets planned with `options`, or with no config the
    /// empty ones (clean).
    pub fn desired(&self, config: Option<&ProxyConfig>, options: PlanOptions) -> Desired {
        Desired {
            families: self
                .families
                .iter()
                .map(|(family, skip)| {
                    let plan = match (skip, config) {
                        (Some(why), _) => FamilyPlan::Skip(why.clone()),
                        (None, Some(config)) => FamilyPlan::Program(plan(config, *family, options)),
                        (None, None) => FamilyPlan::Program(Ruleset::empty(*family)),
                    };
                    (*family, plan)
                })
                .collect(),
            ipv6: self.ipv6,
        }
    }
}
