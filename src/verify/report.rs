//! The result of a verification: each check with its verdict and reason, the overall
//! outcome, and how both are printed for people and for machines.

use std::fmt::Write;

use serde::Serialize;

use super::check::{CheckKind, CheckResult, Evidence, Status};
use crate::backend::BackendKind;
use crate::error::exit_code;

/// The verdict of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every check that applies passed, and egress redirection was proven in some family.
    Passed,
    /// Redirection is broken: some check failed.
    Failed,
    /// Verify could not do its job (a proxy port taken, loopback down, IPv6 required but
    /// absent...), and nothing failed.
    CouldNotRun,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Passed => 0,
            Outcome::Failed => exit_code::VERIFY_FAILED,
            Outcome::CouldNotRun => exit_code::VERIFY_COULD_NOT_RUN,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub could_not_run: usize,
    pub not_applicable: usize,
}

/// Everything verify found, in the order the checks were planned.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    pub exit_code: i32,
    pub proxy_egress_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_ingress_port: Option<u16>,
    /// The iptables backend whose tables were read, when they could be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// How long each probe connection had.
    pub probe_window_ms: u64,
    pub summary: Summary,
    pub checks: Vec<CheckResult>,
    /// Context that is no check's verdict: sampling, families checked for a reason.
    pub notes: Vec<String>,
}

/// The outcome of a list of checks: any failure means redirection is broken; otherwise
/// anything that could not run, or no egress redirect proven at all, means verify could not
/// do its job; only then is it a pass.
pub fn outcome_of(checks: &[CheckResult]) -> Outcome {
    let proven = checks
        .iter()
        .any(|c| c.check == CheckKind::EgressRedirect && c.status == Status::Pass);
    if checks.iter().any(|c| c.status == Status::Fail) {
        Outcome::Failed
    } else if checks.iter().any(|c| c.status == Status::CouldNotRun) || !proven {
        Outcome::CouldNotRun
    } else {
        Outcome::Passed
    }
}

pub fn summary_of(checks: &[CheckResult]) -> Summary {
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    Summary {
        passed: count(Status::Pass),
        failed: count(Status::Fail),
        could_not_run: count(Status::CouldNotRun),
        not_applicable: count(Status::NotApplicable),
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        // Plain data (strings, numbers, enums): serialising it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// One line per check, the reason after the verdict; then the summary and notes.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        let headline = match self.outcome {
            Outcome::Passed => "redirection works as configured",
            Outcome::Failed => "redirection is BROKEN",
            Outcome::CouldNotRun => "could not verify redirection",
        };
        let _ = writeln!(out, "meshinit verify: {headline} (exit {})", self.exit_code);
        for check in &self.checks {
            let evidence = match check.evidence {
                Evidence::Rules => " [rules only]",
                Evidence::Connection | Evidence::None => "",
            };
            let _ = writeln!(
                out,
                "  {:<13} {:<4} {}{evidence}: {}",
                check.status.label(),
                check.family.to_string(),
                check.check.name(),
                check.reason
            );
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "{} passed, {} failed, {} could not run, {} not applicable",
            s.passed, s.failed, s.could_not_run, s.not_applicable
        );
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        if self.outcome == Outcome::CouldNotRun
            && !self
                .checks
                .iter()
                .any(|c| c.check == CheckKind::EgressRedirect && c.status == Status::Pass)
            && !self.checks.iter().any(|c| c.status == Status::CouldNotRun)
        {
            let _ = writeln!(
                out,
                "note: no egress redirect could be proven in any family"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::Family;
    use crate::verify::check::Identity;

    fn check(kind: CheckKind, status: Status) -> CheckResult {
        CheckResult {
            check: kind,
            family: Family::Ipv4,
            evidence: Evidence::Connection,
            status,
            destination: None,
            identity: None,
            observed: None,
            reason: "r".into(),
        }
    }

    #[test]
    fn any_failure_fails_and_anything_unrun_is_not_a_pass() {
        let pass = check(CheckKind::EgressRedirect, Status::Pass);
        let na = check(CheckKind::IgnoredGid, Status::NotApplicable);
        assert_eq!(outcome_of(&[pass.clone(), na.clone()]), Outcome::Passed);
        let unrun = check(CheckKind::IgnoredUid, Status::CouldNotRun);
        assert_eq!(
            outcome_of(&[pass.clone(), unrun.clone()]),
            Outcome::CouldNotRun
        );
        let fail = check(CheckKind::IgnoredPort, Status::Fail);
        assert_eq!(outcome_of(&[pass, unrun, fail]), Outcome::Failed);
    }

    #[test]
    fn nothing_proven_is_not_a_pass() {
        let na = check(CheckKind::EgressRedirect, Status::NotApplicable);
        let other = check(CheckKind::IgnoredPort, Status::Pass);
        assert_eq!(outcome_of(&[na, other]), Outcome::CouldNotRun);
        assert_eq!(outcome_of(&[]), Outcome::CouldNotRun);
    }

    #[test]
    fn json_names_statuses_and_checks_in_snake_and_kebab_case() {
        let mut c = check(CheckKind::IgnoredUid, Status::CouldNotRun);
        c.identity = Some(Identity {
            uid: 1337,
            gid: 1000,
        });
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["check"], "ignored-uid");
        assert_eq!(json["status"], "could_not_run");
        assert_eq!(json["family"], "ipv4");
        assert_eq!(json["identity"]["uid"], 1337);
        assert!(json.get("destination").is_none());
    }
}
