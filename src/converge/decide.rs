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
    let ipv6_decision = match (ipv6, ipv6_unavailable) {
        (Ipv6Mode::On, Some(why)) => {
            return Err(Error::Environment(format!(
                "IPv6 is required (--ipv6 on) but {why}"
            )));
        }
        (Ipv6Mode::Off, Some(_)) => Some("IPv6 is off in the configuration".to_owned()),
        (Ipv6Mode::Auto, Some(why)) => {
            warn!("{why}; programming IPv4 only");
            Some(why)
        }
        (_, None) => None,
    };
    Ok(FamilyChoice {
        families: vec![(Family::Ipv4, None), (Family::Ipv6, ipv6_decision)],
        ipv6,
    })
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
            config: config.cloned(),
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
