//! The judge stage: what each observation means (whether a probe landed where the
//! configuration says, and why not), and the run's checks in report order. Pure: tested
//! without root.

use std::time::Duration;

use super::check::{CheckKind, CheckResult, Evidence, Status};
use super::dns_probe::DnsObservation;
use super::inbound::{InboundObservation, InboundProbe, InboundResults};
use super::plan::{ProbePlan, Slot};
use super::probe::Observation;
use super::rule_inspection;
use super::scope::Scope;
use super::selection::{DnsProbe, Expectation, ListenerRole, Probe};
use crate::config::ProxyConfig;
use crate::conntrack::TcpTuple;
use crate::ruleset::Family;

/// What judging needs besides the probe and what it observed.
#[derive(Debug, Clone, Copy)]
pub struct Judging<'a> {
    pub proxy_egress_port: u16,
    pub proxy_ingress_port: Option<u16>,
    /// How long each probe had.
    pub window: Duration,
    /// What the installed rules say, appended to a failure to point at the cause.
    pub rules_hint: Option<&'a str>,
}

/// Turns what a probe observed into a verdict and a reason that says what happened and,
/// for a failure, what it means.
pub fn judge(probe: &Probe, observation: &Observation, judging: &Judging) -> CheckResult {
    let (status, reason) = verdict(probe, observation, judging);
    let reason = match (status, judging.rules_hint) {
        (Status::Fail, Some(hint)) => format!("{reason}; {hint}"),
        _ => reason,
    };
    CheckResult {
        observed: Some(observation.tag().to_owned()),
        ..probe.unprobed(status, reason)
    }
}

fn verdict(probe: &Probe, observation: &Observation, judging: &Judging) -> (Status, String) {
    let egress_port = judging.proxy_egress_port;
    let attempt = probe.attempt();
    if let Observation::NotRun(why) = observation {
        return (
            Status::CouldNotRun,
            format!("{attempt} could not be made: {why}"),
        );
    }
    match probe.expectation {
        Expectation::AnswersDirectly => match observation {
            Observation::ReachedListener {
                role: ListenerRole::Egress,
                ..
            } => (
                Status::Pass,
                format!(
                    "verify's stand-in for the proxy on ProxyEgressPort {egress_port} answers at {}",
                    probe.destination
                ),
            ),
            other => (
                Status::CouldNotRun,
                format!(
                    "verify's own listener did not answer at {} ({}): loopback is down or \
                     unusable in this namespace, and REDIRECT delivers to loopback, so no \
                     connection of this family can be checked; bring `lo` up (CNI: the \
                     loopback plugin) and verify again",
                    probe.destination,
                    describe(other, judging, false)
                ),
            ),
        },
        Expectation::RedirectedToEgress => match observation {
            Observation::ReachedListener {
                role: ListenerRole::Egress,
                original_dst,
            } => match original_dst {
                Some(original) if *original == probe.destination => (
                    Status::Pass,
                    format!(
                        "{attempt} was redirected to ProxyEgressPort {egress_port} with its \
                         original destination intact (SO_ORIGINAL_DST {original})"
                    ),
                ),
                Some(original) => (
                    Status::Fail,
                    format!(
                        "{attempt} reached ProxyEgressPort {egress_port}, but SO_ORIGINAL_DST \
                         says {original}: the proxy would forward it to the wrong place"
                    ),
                ),
                None => (
                    Status::Fail,
                    format!(
                        "{attempt} reached ProxyEgressPort {egress_port}, but SO_ORIGINAL_DST \
                         has no record of where it was going: the proxy could not forward it"
                    ),
                ),
            },
            Observation::ReachedListener {
                role: ListenerRole::Ingress,
                ..
            } => (
                Status::Fail,
                format!(
                    "{attempt} landed on ProxyIngressPort {} instead of ProxyEgressPort \
                     {egress_port}: the egress REDIRECT points at the wrong port",
                    judging.proxy_ingress_port.unwrap_or_default()
                ),
            ),
            other => (
                Status::Fail,
                format!(
                    "{attempt} was not redirected to ProxyEgressPort {egress_port}: {}",
                    describe(other, judging, true)
                ),
            ),
        },
        Expectation::NotRedirected => match observation {
            Observation::ReachedListener { role, .. } => {
                let port = match role {
                    ListenerRole::Egress => format!("ProxyEgressPort {egress_port}"),
                    ListenerRole::Ingress => {
                        format!(
                            "ProxyIngressPort {}",
                            judging.proxy_ingress_port.unwrap_or_default()
                        )
                    }
                };
                (
                    Status::Fail,
                    format!("{attempt} was redirected to {port}: {}", consequence(probe)),
                )
            }
            other => (
                Status::Pass,
                format!(
                    "{attempt} was not redirected: {}",
                    describe(other, judging, true)
                ),
            ),
        },
    }
}

/// Why a connection that should not have been redirected matters.
fn consequence(probe: &Probe) -> String {
    match probe.kind {
        CheckKind::IgnoredUid => format!(
            "the IgnoredUID rule is missing or does not match uid {} — the proxy's own \
             connections would be sent back into it, and traffic would loop",
            probe.identity.uid
        ),
        CheckKind::IgnoredGid => format!(
            "the IgnoredGID rule is missing or does not match gid {} — the proxy's own \
             connections would be sent back into it, and traffic would loop",
            probe.identity.gid
        ),
        CheckKind::IgnoredPort => format!(
            "port {} is egress-ignored but its traffic goes to the proxy",
            probe.destination.port()
        ),
        CheckKind::IgnoredDestination => format!(
            "{} is egress-ignored but its traffic goes to the proxy (metadata and credential \
             endpoints must be reached directly)",
            probe.destination.ip()
        ),
        _ => "it should have been left alone".to_owned(),
    }
}

/// What a connection that did not reach verify's listener did instead.
fn describe(observation: &Observation, judging: &Judging, probe_context: bool) -> String {
    match observation {
        Observation::ReachedListener { role, .. } => {
            format!("it reached verify's {role:?} listener")
        }
        Observation::OtherServer { reply } if reply.is_empty() => {
            "it connected to a server that is not verify's listener (a direct connection)"
                .to_owned()
        }
        Observation::OtherServer { reply } => format!(
            "it connected to a server that is not verify's listener (a direct connection; it \
             answered {:?})",
            reply.chars().take(40).collect::<String>()
        ),
        Observation::Refused => {
            "the connection was refused (nothing listens where it went)".to_owned()
        }
        Observation::Unreachable(e) => {
            format!("it left the namespace and came back unreachable ({e})")
        }
        Observation::NoAnswer => format!(
            "no answer within {}{}",
            humantime::format_duration(judging.window),
            if probe_context {
                " (a redirected connection reaches verify's listener at once)"
            } else {
                ""
            }
        ),
        Observation::Untranslated { sunk: true } => "its conntrack entry shows the destination \
             untouched by NAT (the SYN itself went into verify's sink and never left the \
             namespace)"
            .to_owned(),
        Observation::Untranslated { sunk: false } => "its conntrack entry shows the destination \
             untouched by NAT (the SYN left with a hop limit of 1: the first router drops it)"
            .to_owned(),
        Observation::Untracked => "conntrack holds no entry for it although its SYN crossed \
             the nat hook, and NAT always makes one, so no rule rewrote it"
            .to_owned(),
        Observation::TranslatedElsewhere(to) => {
            format!("NAT sent it to {to}, off this namespace, not to a proxy port")
        }
        Observation::ConnectError(e) => format!("connect failed: {e}"),
        Observation::NotRun(e) => format!("not made: {e}"),
    }
}

/// The checks of a run, judged, in report order, and the notes that are no check's verdict.
pub struct Checks {
    pub checks: Vec<CheckResult>,
    pub notes: Vec<String>,
}

/// Judges every observation and fills in the report, in planned order. A family whose
/// listener self-test failed has every probe of it turned into "could not run".
pub fn judge_all(
    plan: ProbePlan,
    config: &ProxyConfig,
    scope: &Scope,
    observations: &[Observation],
    dns: &[DnsObservation],
    inbound: &InboundResults,
    window: Duration,
) -> Checks {
    let hints: Vec<(Family, String)> = Family::BOTH
        .iter()
        .filter_map(|family| match scope.table(*family).as_result() {
            Ok(nat) => Some((*family, rule_inspection::egress_rules_hint(*family, nat))),
            Err(_) => None,
        })
        .collect();
    let self_test_failed = |family: Family| {
        plan.probes
            .iter()
            .zip(observations)
            .any(|(probe, observation)| {
                probe.family == family
                    && probe.kind == CheckKind::Listener
                    && !matches!(
                        observation,
                        Observation::ReachedListener {
                            role: ListenerRole::Egress,
                            ..
                        }
                    )
            })
    };
    let mut results = Vec::new();
    for slot in plan.slots {
        let result = match slot {
            Slot::Decided(result) => result,
            Slot::Ingress(family) => {
                let rules = rule_inspection::inspect_ingress(
                    config,
                    family,
                    scope.table(family).as_result(),
                );
                match inbound.iter().find(|(f, _)| *f == family) {
                    Some((_, Ok(probes))) => {
                        let rules_failure =
                            (rules.status == Status::Fail).then_some(rules.reason.as_str());
                        let proxy_port = config.ingress.as_ref().map_or(0, |i| i.proxy_port);
                        for (probe, tuple, observation) in probes {
                            results.push(judge_inbound(
                                probe,
                                *tuple,
                                observation,
                                proxy_port,
                                rules_failure,
                            ));
                        }
                        continue;
                    }
                    Some((_, Err(why))) => CheckResult {
                        reason: format!(
                            "{}; an inbound packet could not be sent instead: {why}",
                            rules.reason
                        ),
                        ..rules
                    },
                    None => rules,
                }
            }
            Slot::Mesh(family) => {
                rule_inspection::inspect_mesh(config, family, scope.table(family).as_result())
            }
            Slot::Dns(index) => {
                let (Some(probe), Some(observation)) = (plan.dns_probes.get(index), dns.get(index))
                else {
                    continue;
                };
                judge_dns(probe, observation)
            }
            Slot::Probed(index) => {
                let (Some(probe), Some(observation)) =
                    (plan.probes.get(index), observations.get(index))
                else {
                    continue;
                };
                if probe.kind != CheckKind::Listener && self_test_failed(probe.family) {
                    probe.unprobed(
                        Status::CouldNotRun,
                        format!(
                            "not judged: verify's own listener did not answer over {} loopback \
                             (see the listener check)",
                            probe.family
                        ),
                    )
                } else {
                    let judging = Judging {
                        proxy_egress_port: config.proxy_egress_port,
                        proxy_ingress_port: config.ingress.as_ref().map(|i| i.proxy_port),
                        window,
                        rules_hint: hints
                            .iter()
                            .find(|(f, _)| *f == probe.family)
                            .map(|(_, h)| h.as_str()),
                    };
                    judge(probe, observation, &judging)
                }
            }
        };
        results.push(result);
    }
    Checks {
        checks: results,
        notes: plan.notes,
    }
}

/// The verdict on one DNS probe: the app's query must be redirected to the proxy's DNS
/// port on this namespace, the proxy's own must not be, and each must be in the conntrack
/// zone the zone rules give it (a flow in the wrong zone is how capture breaks under load).
pub fn judge_dns(probe: &DnsProbe, observation: &DnsObservation) -> CheckResult {
    let attempt = probe.attempt();
    let zone_of = |zone: u16| match zone {
        0 => "the default conntrack zone".to_owned(),
        z => format!("conntrack zone {z}"),
    };
    let (status, reason) = match (observation, probe.redirected_to) {
        (DnsObservation::NotRun(why), _) => (
            Status::CouldNotRun,
            format!("{attempt} could not be made: {why}"),
        ),
        (DnsObservation::Untracked, Some(port)) => (
            Status::Fail,
            format!(
                "{attempt} was not redirected to the proxy's DNS port {port}: it left no \
                 conntrack entry, and NAT always makes one (the DNS capture rule is missing)"
            ),
        ),
        (DnsObservation::Untracked, None) => (
            Status::Pass,
            format!("{attempt} was not redirected (it left no conntrack entry)"),
        ),
        (DnsObservation::Entry { zone, .. }, _) if *zone != probe.zone => (
            Status::Fail,
            format!(
                "{attempt} is tracked in {} instead of {}: the DNS conntrack zone rules are \
                 missing or wrong, so the app's queries and the proxy's upstream queries can \
                 share an entry and answers can bypass the proxy under load",
                zone_of(*zone),
                zone_of(probe.zone)
            ),
        ),
        (DnsObservation::Entry { to, local, zone }, Some(port)) => match to {
            Some(to) if to.port() == port && *local => (
                Status::Pass,
                format!(
                    "{attempt} was redirected to the proxy's DNS port (conntrack: replies come \
                     from {to}, {})",
                    zone_of(*zone)
                ),
            ),
            Some(to) => (
                Status::Fail,
                format!(
                    "{attempt} was sent to {to}, not to the proxy's DNS port {port} on this \
                     namespace"
                ),
            ),
            None => (
                Status::Fail,
                format!(
                    "{attempt} was not redirected: its conntrack entry shows the resolver \
                     untouched (the query went into verify's sink), so the app's queries would \
                     reach the resolver, bypassing the proxy's DNS port {port}"
                ),
            ),
        },
        (DnsObservation::Entry { to, zone, .. }, None) => match to {
            None => (
                Status::Pass,
                format!(
                    "{attempt} was not redirected: its conntrack entry shows the resolver \
                     untouched ({}; the query itself went into verify's sink), so the proxy's \
                     own queries reach the resolver",
                    zone_of(*zone)
                ),
            ),
            Some(to) => (
                Status::Fail,
                format!(
                    "{attempt} was redirected to {to}: the proxy's own queries would be sent \
                     back into it, and DNS would loop"
                ),
            ),
        },
    };
    CheckResult {
        observed: Some(observation.tag().to_owned()),
        ..probe.unprobed(status, reason)
    }
}

/// The verdict on one inbound probe. `rules_failure`, when the ingress rules read back
/// differ from the configuration, says how, and is added to a failure.
pub fn judge_inbound(
    probe: &InboundProbe,
    tuple: TcpTuple,
    observation: &InboundObservation,
    proxy_ingress_port: u16,
    rules_failure: Option<&str>,
) -> CheckResult {
    let attempt = format!(
        "an inbound SYN from {} to {} entering through PREROUTING",
        tuple.source, tuple.destination
    );
    let port = probe.port;
    let (status, observed, reason) = match observation {
        InboundObservation::NotSent(why) => (
            Status::CouldNotRun,
            "not-sent",
            format!("{attempt} could not be checked: {why}"),
        ),
        // NAT always creates an entry; none means no rule translated the packet (in a
        // namespace without NAT rules conntrack is not even active).
        InboundObservation::Entry(None) if probe.app_port => (
            Status::Fail,
            "not-tracked",
            format!(
                "{attempt} was not redirected (it left no conntrack entry, and NAT always makes \
                 one): inbound connections to AppPort {port} would reach the application \
                 directly, bypassing ProxyIngressPort {proxy_ingress_port}"
            ),
        ),
        InboundObservation::Entry(None) => (
            Status::Pass,
            "not-tracked",
            format!(
                "{attempt} was not redirected (it left no conntrack entry, and NAT always makes \
                 one; port {port} is not an AppPort)"
            ),
        ),
        InboundObservation::Entry(Some(entry)) => {
            match (probe.app_port, entry.translated_destination()) {
                (true, Some(to)) if to.port() == proxy_ingress_port => (
                    Status::Pass,
                    "redirected-to-proxy-ingress-port",
                    format!(
                        "{attempt} was redirected to ProxyIngressPort {proxy_ingress_port} \
                         (conntrack: replies come from {to})"
                    ),
                ),
                (true, Some(to)) => (
                    Status::Fail,
                    "translated-elsewhere",
                    format!(
                        "{attempt} was sent to {to} instead of ProxyIngressPort \
                         {proxy_ingress_port}: the ingress REDIRECT points at the wrong port"
                    ),
                ),
                (true, None) => (
                    Status::Fail,
                    "not-translated",
                    format!(
                        "{attempt} was not redirected: inbound connections to AppPort {port} \
                         would reach the application directly, bypassing ProxyIngressPort \
                         {proxy_ingress_port}"
                    ),
                ),
                (false, None) => (
                    Status::Pass,
                    "not-translated",
                    format!("{attempt} was not redirected (port {port} is not an AppPort)"),
                ),
                (false, Some(to)) => (
                    Status::Fail,
                    "translated",
                    format!(
                        "{attempt} was redirected to {to}: port {port} is not an AppPort, but \
                         its inbound traffic is sent to the proxy"
                    ),
                ),
            }
        }
    };
    let reason = match (status, rules_failure) {
        (Status::Fail, Some(rules)) => format!("{reason}; {rules}"),
        _ => reason,
    };
    CheckResult {
        check: if probe.app_port {
            CheckKind::IngressRedirect
        } else {
            CheckKind::IngressOtherPort
        },
        family: probe.family,
        evidence: Evidence::Connection,
        status,
        destination: Some(tuple.destination),
        identity: None,
        observed: Some(observed.to_owned()),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::Family;
    use crate::verify::check::Identity;
    fn judging() -> Judging<'static> {
        Judging {
            proxy_egress_port: 15001,
            proxy_ingress_port: Some(15000),
            window: Duration::from_millis(500),
            rules_hint: Some("HINT"),
        }
    }

    fn probe(kind: CheckKind, expectation: Expectation) -> Probe {
        Probe {
            kind,
            family: Family::Ipv4,
            destination: "192.0.2.1:80".parse().unwrap(),
            identity: Identity {
                uid: 1337,
                gid: 1001,
            },
            expectation,
        }
    }

    #[test]
    fn a_redirect_passes_only_with_the_original_destination_intact() {
        let p = probe(CheckKind::EgressRedirect, Expectation::RedirectedToEgress);
        let reached = |original: Option<&str>| Observation::ReachedListener {
            role: ListenerRole::Egress,
            original_dst: original.map(|o| o.parse().unwrap()),
        };
        assert_eq!(
            judge(&p, &reached(Some("192.0.2.1:80")), &judging()).status,
            Status::Pass
        );
        let wrong = judge(&p, &reached(Some("192.0.2.1:81")), &judging());
        assert_eq!(wrong.status, Status::Fail);
        assert!(
            wrong.reason.contains("SO_ORIGINAL_DST says 192.0.2.1:81"),
            "{}",
            wrong.reason
        );
        assert_eq!(judge(&p, &reached(None), &judging()).status, Status::Fail);
        let ingress = Observation::ReachedListener {
            role: ListenerRole::Ingress,
            original_dst: None,
        };
        let misdirected = judge(&p, &ingress, &judging());
        assert!(
            misdirected
                .reason
                .contains("ProxyIngressPort 15000 instead of ProxyEgressPort 15001")
        );
        let missed = judge(&p, &Observation::NoAnswer, &judging());
        assert_eq!(missed.status, Status::Fail);
        assert!(
            missed.reason.starts_with("egress as uid 1337 gid 1001 to 192.0.2.1:80 was not redirected to ProxyEgressPort 15001: no answer within 500ms"),
            "{}",
            missed.reason
        );
        assert!(
            missed.reason.ends_with("at once); HINT"),
            "{}",
            missed.reason
        );
    }

    #[test]
    fn a_redirected_proxy_user_is_reported_as_a_loop() {
        let p = probe(CheckKind::IgnoredUid, Expectation::NotRedirected);
        let reached = Observation::ReachedListener {
            role: ListenerRole::Egress,
            original_dst: Some("192.0.2.1:80".parse().unwrap()),
        };
        let result = judge(&p, &reached, &judging());
        assert_eq!(result.status, Status::Fail);
        assert!(
            result
                .reason
                .contains("IgnoredUID rule is missing or does not match uid 1337")
        );
        assert!(result.reason.contains("loop"));
        for direct in [
            Observation::NoAnswer,
            Observation::Refused,
            Observation::OtherServer {
                reply: String::new(),
            },
        ] {
            let result = judge(&p, &direct, &judging());
            assert_eq!(result.status, Status::Pass, "{direct:?}");
            assert!(!result.reason.contains("HINT"));
        }
    }

    #[test]
    fn dns_probes_pass_only_redirected_to_the_dns_port_in_their_zone() {
        let mut c = crate::verify::test_fixture::config();
        c.mesh.dns = Some(crate::config::mesh::DnsCapture {
            proxy_port: 15053,
            scope: crate::config::mesh::DnsScope::All,
            resolvers: Vec::new(),
        });
        let probes =
            crate::verify::selection::dns_probes(&c, Family::Ipv4, "192.0.2.1".parse().unwrap());
        // UDP then TCP, each as the app and as the proxy's user.
        assert_eq!(probes.len(), 4);
        let (app_udp, proxy_udp) = (&probes[0], &probes[1]);
        assert_eq!(
            (app_udp.redirected_to, app_udp.zone),
            (Some(15053), crate::ruleset::zones::APP_ZONE)
        );
        assert_eq!(
            (
                proxy_udp.redirected_to,
                proxy_udp.identity.uid,
                proxy_udp.zone
            ),
            (None, 1337, crate::ruleset::zones::UPSTREAM_ZONE)
        );
        assert_eq!(probes[2].zone, 0, "TCP is not zoned");
        let entry = |to: Option<&str>, local, zone| DnsObservation::Entry {
            to: to.map(|t| t.parse().unwrap()),
            local,
            zone,
        };
        let pass = judge_dns(app_udp, &entry(Some("127.0.0.1:15053"), true, 2));
        assert_eq!(pass.status, Status::Pass, "{}", pass.reason);
        for (observation, words) in [
            (entry(None, false, 2), "not redirected"),
            (
                entry(Some("127.0.0.1:15001"), true, 2),
                "not to the proxy's DNS port",
            ),
            (
                entry(Some("10.0.0.9:15053"), false, 2),
                "not to the proxy's DNS port",
            ),
            (entry(Some("127.0.0.1:15053"), true, 0), "zone rules"),
            (DnsObservation::Untracked, "no conntrack entry"),
        ] {
            let result = judge_dns(app_udp, &observation);
            assert_eq!(result.status, Status::Fail, "{observation:?}");
            assert_eq!(result.check, CheckKind::DnsCapture);
            assert!(result.reason.contains(words), "{}", result.reason);
        }
        let proxy = judge_dns(proxy_udp, &entry(None, false, 1));
        assert_eq!(proxy.status, Status::Pass, "{}", proxy.reason);
        let looped = judge_dns(proxy_udp, &entry(Some("127.0.0.1:15053"), true, 1));
        assert!(looped.reason.contains("loop"), "{}", looped.reason);
        let not_run = judge_dns(app_udp, &DnsObservation::NotRun("no sink".into()));
        assert_eq!(not_run.status, Status::CouldNotRun);
    }

    #[test]
    fn a_probe_that_could_not_be_made_is_not_a_pass() {
        for expectation in [Expectation::NotRedirected, Expectation::RedirectedToEgress] {
            let p = probe(CheckKind::IgnoredUid, expectation);
            let result = judge(
                &p,
                &Observation::NotRun("cannot switch to uid 1337: EPERM".into()),
                &judging(),
            );
            assert_eq!(result.status, Status::CouldNotRun);
        }
        let listener = judge(
            &probe(CheckKind::Listener, Expectation::AnswersDirectly),
            &Observation::Unreachable("Network is unreachable".into()),
            &judging(),
        );
        assert_eq!(listener.status, Status::CouldNotRun);
        assert!(listener.reason.contains("loopback is down"));
    }
}
