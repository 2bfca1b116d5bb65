//! The engine's decisions, tested with a fake backend (the kernel tests prove the real ones
//! honest): fallback, skip reasons, waiting once, and other backends cleaned after.

use std::sync::{Arc, Mutex};

use super::*;
use crate::backend::{FamilyChange, FamilyPlan};
use crate::config::{RawSettings, validate};
use crate::error::Error;
use crate::ruleset::{InstalledTable, PlanOptions};

/// What a fake does when asked to converge.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Converges,
    KernelRefuses,
    LockTimesOut,
}

/// A backend that records every call in a shared log.
#[derive(Debug)]
struct Fake {
    kind: BackendKind,
    outcome: Outcome,
    holds_ours: bool,
    log: Log,
}

impl Fake {
    fn boxed(
        kind: BackendKind,
        outcome: Outcome,
        holds_ours: bool,
        log: &Arc<Mutex<Vec<String>>>,
    ) -> Box<dyn Backend> {
        Box::new(Fake {
            kind,
            outcome,
            holds_ours,
            log: Arc::clone(log),
        })
    }

    fn note(&self, what: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {what}", self.kind));
    }
}

/// The fake's limits (those of a multiport-like match).
const FAKE_OPTIONS: PlanOptions = PlanOptions {
    max_listed_networks: 32,
    max_port_rules: 4,
    port_list_slots: Some(15),
};

impl Backend for Fake {
    fn kind(&self) -> BackendKind {
        self.kind
    }
    fn render(&self, desired: &Desired) -> crate::backend::Rendered {
        crate::backend::Rendered {
            first: Vec::new(),
            rules: format!("{} rulesets\n", desired.rulesets().count()),
        }
    }
    fn dry_run_text(&self, report: &ConvergeReport) -> String {
        format!("{} families\n", report.families.len())
    }
    fn plan_options(&self) -> PlanOptions {
        FAKE_OPTIONS
    }
    fn available(&self, _: Availability<'_>) -> Result<()> {
        Ok(())
    }
    fn read(&self, scope: Scope<'_>, _: &TimeBudget) -> Result<Installed> {
        let held = Installed {
            backend: self.kind,
            families: vec![(Family::Ipv4, InstalledTable::default())],
            skipped: Vec::new(),
            own: None,
        };
        match scope {
            Scope::Planned(_) => {
                self.note("read");
                Ok(held)
            }
            // What it holds is one rule of ours (see describe_drift): not clean.
            Scope::Ours => {
                self.note("holds_ours");
                Ok(if self.holds_ours {
                    Installed {
                        families: vec![(Family::Ipv4, one_rule_of_ours())],
                        ..held
                    }
                } else {
                    Installed::nothing(self.kind)
                })
            }
        }
    }
    fn converge(&self, desired: &Desired, _: &TimeBudget, dry_run: bool) -> Result<ConvergeReport> {
        self.note(&format!("converge dry_run={dry_run}"));
        match self.outcome {
            Outcome::Converges => Ok(ConvergeReport {
                backend: self.kind,
                families: desired
                    .rulesets()
                    .map(|r| FamilyChange {
                        family: r.family,
                        payload: Some(format!("{} rules", r.rules.len())),
                    })
                    .collect(),
                skipped: desired
                    .skipped()
                    .map(|(f, why)| (f, why.to_owned()))
                    .collect(),
                sent_first: Vec::new(),
                replaced: Vec::new(),
            }),
            Outcome::KernelRefuses => Err(Error::BackendUnusable {
                backend: self.kind,
                reason: "no nf_tables".into(),
            }),
            Outcome::LockTimesOut => Err(Error::LockTimeout {
                program: "iptables-legacy-restore".into(),
                status: "exit status: 4".into(),
                stderr: "another app holds the xtables lock".into(),
            }),
        }
    }
    fn drift(&self, _: &Installed, _: &Desired, _: &TimeBudget) -> Result<Vec<(Family, Drift)>> {
        Ok(vec![(Family::Ipv4, Drift::default())])
    }
    /// What it holds is one rule of ours, unexpected against the empty ruleset.
    fn describe_drift(&self, _: &Ruleset, _: &Installed, _: Family) -> Drift {
        Drift {
            unexpected: vec![format!("a rule of ours in {}", self.kind)],
            ..Drift::default()
        }
    }
    fn show(&self, _: &Desired, _: bool, _: &TimeBudget) -> Result<crate::backend::Shown> {
        Ok(crate::backend::Shown::default())
    }
    fn counters(&self, _: &Desired, _: &TimeBudget) -> Result<Vec<crate::backend::RuleCount>> {
        Ok(Vec::new())
    }
    fn remove(&self, what: Removal, _: &TimeBudget) -> Result<()> {
        match what {
            Removal::Rules => {
                self.note("remove_rules");
                match self.outcome {
                    Outcome::KernelRefuses => Err(Error::Kernel("the kernel refused".into())),
                    _ => Ok(()),
                }
            }
            Removal::Sets => {
                self.note("remove_sets");
                Ok(())
            }
        }
    }
}

/// A table holding our egress chain: not clean.
fn one_rule_of_ours() -> InstalledTable {
    InstalledTable {
        chains: vec![crate::ruleset::EGRESS_CHAIN.to_owned()],
        ..InstalledTable::default()
    }
}

fn config() -> ProxyConfig {
    use crate::config::settings::{Property, Vocabulary};
    let raw = RawSettings::spelled(
        Vocabulary::Ecs,
        [
            (Property::IgnoredUid, "1337"),
            (Property::ProxyEgressPort, "15001"),
        ],
    );
    validate(&raw).unwrap().0
}

fn budget() -> TimeBudget {
    TimeBudget::starting_now(std::time::Duration::from_secs(1))
}

const NFT: BackendKind = BackendKind::IptablesNft;
const LEGACY: BackendKind = BackendKind::IptablesLegacy;
const NATIVE: BackendKind = BackendKind::Nftables;

type Log = Arc<Mutex<Vec<String>>>;

/// Runs `apply_with` with the chosen fake, its fallback and other backends (each a kind, an
/// outcome and whether it holds our rules), and returns the result and every call made.
fn apply_fakes(
    chosen: (BackendKind, Outcome),
    fallback: Option<(BackendKind, Outcome)>,
    others: &[(BackendKind, bool)],
    dry_run: bool,
) -> (Result<Applied>, Vec<String>) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let selection = Selection {
        backend: Fake::boxed(chosen.0, chosen.1, false, &log),
        reason: "test".into(),
        fallback: fallback.map(|(kind, outcome)| Fake::boxed(kind, outcome, false, &log)),
    };
    let others = others
        .iter()
        .map(|(kind, holds)| Fake::boxed(*kind, Outcome::Converges, *holds, &log))
        .collect();
    let families = decide_for(Ipv6Mode::Auto, None).unwrap();
    let result = apply_with(&config(), &families, selection, others, &budget(), dry_run);
    let calls = log.lock().unwrap().clone();
    (result, calls)
}

#[test]
fn auto_falls_back_when_the_kernel_refuses_the_first_backend() {
    // `auto`'s shape in a fresh namespace: native first, an installed iptables behind it.
    let (result, calls) = apply_fakes(
        (NATIVE, Outcome::KernelRefuses),
        Some((NFT, Outcome::Converges)),
        &[],
        false,
    );
    assert_eq!(result.unwrap().backend.kind(), NFT);
    assert_eq!(
        calls,
        [
            "nftables converge dry_run=false",
            "iptables-nft converge dry_run=false"
        ]
    );
}

#[test]
fn a_lock_timeout_is_an_error_waited_once_never_a_reason_to_fall_back() {
    let (result, calls) = apply_fakes(
        (LEGACY, Outcome::LockTimesOut),
        Some((NFT, Outcome::Converges)),
        &[],
        false,
    );
    let err = result.unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
    assert_eq!(calls, ["iptables-legacy converge dry_run=false"]);
}

#[test]
fn an_explicit_backend_the_kernel_refuses_is_an_environment_error() {
    let (result, _) = apply_fakes((NFT, Outcome::KernelRefuses), None, &[], false);
    assert_eq!(
        result.unwrap_err().exit_code(),
        crate::error::exit_code::ENVIRONMENT
    );
}

#[test]
fn other_backends_holding_ours_are_emptied_after_the_chosen_one_converged() {
    let (result, calls) = apply_fakes(
        (NFT, Outcome::Converges),
        None,
        &[(NFT, true), (LEGACY, true)],
        false,
    );
    result.unwrap();
    assert_eq!(
        calls,
        [
            "iptables-nft converge dry_run=false",
            "iptables-legacy holds_ours",
            "iptables-legacy remove_rules",
        ]
    );
}

#[test]
fn a_dry_run_touches_no_other_backend() {
    let (result, calls) = apply_fakes((NFT, Outcome::Converges), None, &[(LEGACY, true)], true);
    result.unwrap();
    assert_eq!(calls, ["iptables-nft converge dry_run=true"]);
}

#[test]
fn families_are_decided_once_with_their_reasons() {
    let absent = || Some("IPv6 is disabled in this namespace".to_owned());
    let programmed = |choice: &FamilyChoice| {
        let mut config = config();
        config.ipv6 = choice.ipv6();
        choice
            .desired(Some(&config), FAKE_OPTIONS)
            .families
            .into_iter()
            .map(|(family, plan)| match plan {
                FamilyPlan::Program(r) => format!("{family}: {} rules", r.rules.len()),
                FamilyPlan::Skip(why) => format!("{family}: skip ({why})"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        programmed(&decide_for(Ipv6Mode::Auto, absent()).unwrap()),
        [
            "IPv4: 6 rules",
            "IPv6: skip (IPv6 is disabled in this namespace)"
        ]
    );
    assert_eq!(
        programmed(&decide_for(Ipv6Mode::Off, None).unwrap()),
        ["IPv4: 6 rules", "IPv6: 0 rules"],
        "IPv6 off but present: programmed empty, so earlier rules go"
    );
    assert_eq!(
        programmed(&decide_for(Ipv6Mode::Off, absent()).unwrap()),
        [
            "IPv4: 6 rules",
            "IPv6: skip (IPv6 is off in the configuration)"
        ]
    );
    let err = decide_for(Ipv6Mode::On, absent()).unwrap_err();
    assert_eq!(err.exit_code(), crate::error::exit_code::ENVIRONMENT);
    assert!(err.to_string().contains("IPv6 is required"), "{err}");
}

/// Fakes of `(kind, outcome, holds ours)`, all logging into the returned log.
fn fakes(backends: &[(BackendKind, Outcome, bool)]) -> (Vec<Box<dyn Backend>>, Log) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let boxed = backends
        .iter()
        .map(|(kind, outcome, holds)| Fake::boxed(*kind, *outcome, *holds, &log))
        .collect();
    (boxed, log)
}

/// Runs `status_with` with the chosen fake (holding nothing) and `others`.
fn status_fakes(chosen: BackendKind, others: &[(BackendKind, bool)]) -> (Status, Vec<String>) {
    let (others, log) = fakes(
        &others
            .iter()
            .map(|(kind, holds)| (*kind, Outcome::Converges, *holds))
            .collect::<Vec<_>>(),
    );
    let selection = Selection {
        backend: Fake::boxed(chosen, Outcome::Converges, false, &log),
        reason: "test".into(),
        fallback: None,
    };
    let families = decide_for(Ipv6Mode::Auto, None).unwrap();
    let status = status_with(&config(), &families, selection, &others, &budget()).unwrap();
    let calls = log.lock().unwrap().clone();
    (status, calls)
}

#[test]
fn status_reads_the_chosen_backend_and_asks_every_other_one() {
    let (status, calls) = status_fakes(NFT, &[(NATIVE, false), (NFT, true), (LEGACY, false)]);
    assert!(status.in_sync(), "{status:?}");
    assert_eq!(status.backend, NFT);
    assert!(!status.families[0].installed);
    // The chosen backend is not asked again as an "other" one.
    assert_eq!(
        calls,
        [
            "iptables-nft read",
            "nftables holds_ours",
            "iptables-legacy holds_ours"
        ]
    );
}

#[test]
fn status_counts_rules_of_ours_in_another_backend_as_active_drift() {
    let (status, _) = status_fakes(NATIVE, &[(LEGACY, true)]);
    assert!(!status.in_sync());
    let ipv4 = &status.families[0];
    assert_eq!(ipv4.family, Family::Ipv4);
    assert!(ipv4.installed);
    assert_eq!(
        ipv4.drift.unexpected,
        ["a rule of ours in iptables-legacy   (in iptables-legacy, also active)"]
    );
}

#[test]
fn clean_removes_rules_only_where_ours_are_then_every_backends_sets() {
    let (backends, log) = fakes(&[
        (NATIVE, Outcome::Converges, false),
        (NFT, Outcome::Converges, true),
        (LEGACY, Outcome::Converges, true),
    ]);
    clean::clean_backends(&backends, &budget()).unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "nftables holds_ours",
            "iptables-nft holds_ours",
            "iptables-nft remove_rules",
            "iptables-legacy holds_ours",
            "iptables-legacy remove_rules",
            "nftables remove_sets",
            "iptables-nft remove_sets",
            "iptables-legacy remove_sets",
        ]
    );
}

#[test]
fn clean_goes_on_past_a_backend_that_fails_and_returns_its_error() {
    let (backends, log) = fakes(&[
        (NFT, Outcome::KernelRefuses, true),
        (LEGACY, Outcome::Converges, true),
    ]);
    let err = clean::clean_backends(&backends, &budget()).unwrap_err();
    assert!(matches!(err, Error::Kernel(_)), "{err}");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "iptables-nft holds_ours",
            "iptables-nft remove_rules",
            "iptables-legacy holds_ours",
            "iptables-legacy remove_rules",
            "iptables-nft remove_sets",
            "iptables-legacy remove_sets",
        ]
    );
}
