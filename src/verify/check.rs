//! What a check is and what it concluded: the vocabulary every stage of verify shares
//! (select, probe, judge, report), so none of them needs another's module for it.

use std::net::SocketAddr;

use serde::Serialize;

use crate::ruleset::Family;

/// What a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// Whether a family is checked at all.
    Family,
    /// Verify's own listener answers over loopback (the precondition of every probe).
    Listener,
    /// An ordinary user's connection reaches ProxyEgressPort with its destination intact.
    EgressRedirect,
    /// The proxy's user is not redirected.
    IgnoredUid,
    /// The proxy's group is not redirected.
    IgnoredGid,
    /// Egress-ignored ports are not redirected.
    IgnoredPort,
    /// Egress-ignored destinations are not redirected.
    IgnoredDestination,
    /// The ingress rules are installed as rendered (rule inspection, not traffic): only
    /// where an inbound packet could not be sent.
    IngressRules,
    /// An inbound SYN to an AppPort, through PREROUTING, is redirected to ProxyIngressPort.
    IngressRedirect,
    /// An inbound SYN to a port that is not an AppPort is left alone.
    IngressOtherPort,
    /// The rules of the settings beyond App Mesh are installed as rendered (rule inspection).
    MeshRules,
    /// An ordinary user's DNS query (UDP, TCP) is redirected to the proxy's DNS port, the
    /// proxy's own is not, each in the conntrack zone the zone rules give it.
    DnsCapture,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Family => "family",
            CheckKind::Listener => "listener",
            CheckKind::EgressRedirect => "egress-redirect",
            CheckKind::IgnoredUid => "ignored-uid",
            CheckKind::IgnoredGid => "ignored-gid",
            CheckKind::IgnoredPort => "ignored-port",
            CheckKind::IgnoredDestination => "ignored-destination",
            CheckKind::IngressRules => "ingress-rules",
            CheckKind::IngressRedirect => "ingress-redirect",
            CheckKind::IngressOtherPort => "ingress-other-port",
            CheckKind::MeshRules => "mesh-rules",
            CheckKind::DnsCapture => "dns-capture",
        }
    }
}

/// The user and group a probe connects as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Verify could not make the check (port taken, no IPv6, loopback down...); not a pass.
    CouldNotRun,
    /// The configuration or namespace gives the check nothing to prove.
    NotApplicable,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::CouldNotRun => "COULD NOT RUN",
            Status::NotApplicable => "N/A",
        }
    }
}

/// What a check's verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// A real connection made in the namespace.
    Connection,
    /// Reading the installed rules back (no traffic).
    Rules,
    /// Neither: the check was decided before anything was tried.
    None,
}

/// One check and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub check: CheckKind,
    pub family: Family,
    pub evidence: Evidence,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// What the probe connection did, as a short tag (`reached-proxy-egress-port`,
    /// `no-answer`, `refused`, `unreachable`, `connected-elsewhere`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    pub reason: String,
}

impl CheckResult {
    /// A verdict on a whole family, decided before any connection.
    pub fn family(family: Family, status: Status, reason: String) -> Self {
        CheckResult::decided(CheckKind::Family, family, status, reason)
    }

    /// A verdict decided without a connection or a rule (nothing to prove, or cannot try).
    pub fn decided(check: CheckKind, family: Family, status: Status, reason: String) -> Self {
        CheckResult {
            check,
            family,
            evidence: Evidence::None,
            status,
            destination: None,
            identity: None,
            observed: None,
            reason,
        }
    }
}
