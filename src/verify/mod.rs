//! `verify`: proves redirection with real connections in the live namespace.
//!
//! Verify stands in for the proxy: it listens on ProxyEgressPort (and ProxyIngressPort)
//! itself, answering each connection with a random token and the `SO_ORIGINAL_DST` it
//! sees, then connects as an ordinary user, as the proxy's user and group, to ignored
//! ports and to ignored destinations, all at once and each within a short window. What
//! cannot be proven with traffic from inside the namespace (ingress) is checked by reading
//! the rules back, and reported as such.
//!
//! Modules: `scope` (which families), `checks` (what to probe, what it means), `probe`
//! (listeners and connections), `report` (verdicts and output).

mod inbound;
mod judging;
mod probe;
mod report;
mod rtnl;
mod rule_inspection;
mod scope;
mod selection;
mod sink;
#[cfg(test)]
mod test_fixture;

use std::time::{Duration, Instant};

use caps::Capability;
use serde::Serialize;
use tracing::{debug, info};

pub use report::{CheckResult, Evidence, Report, Status, Summary};
pub use selection::{CheckKind, Identity};

use self::judging::Judging;
use self::probe::{ListenerRole, ListenerSpec, Listeners, Observation, Route, Tokens};
use self::scope::{FamilyDecision, Scope};
use self::selection::{Planned, Probe};
use crate::backend::{Backend, TimeBudget};
use crate::config::ProxyConfig;
use crate::conntrack::TcpTuple;
use crate::error::{ConfigError, Error, Result, exit_code};
use crate::ruleset::Family;

/// The shortest `--timeout` accepted: below it a working redirect could miss its window.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(200);
/// The longest a single probe waits: a redirected connection reaches the local listener
/// in well under a millisecond, so a longer wait only delays the verdict on the rest.
const MAX_PROBE_WINDOW: Duration = Duration::from_secs(1);

/// How to verify: the time allowed and the report's form.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Upper bound for the whole verification (at least [`MIN_TIMEOUT`]).
    pub timeout: Duration,
    /// Print the checks as JSON.
    pub json: bool,
}

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

/// Capabilities verify needs beyond reading the tables: taking on the proxy's and an
/// ordinary user's UID/GID on a probe thread, and binding a proxy port below 1024.
pub fn needed_capabilities(config: &ProxyConfig) -> Vec<Capability> {
    let mut caps = vec![Capability::CAP_SETUID, Capability::CAP_SETGID];
    let ingress_port = config.ingress.as_ref().map(|i| i.proxy_port);
    // Inbound probes listen on each AppPort too (a reset as the only answer would erase the
    // evidence from conntrack).
    let low_app_port = config
        .ingress
        .as_ref()
        .is_some_and(|i| i.app_ports.ranges().iter().any(|r| r.first < 1024));
    if config.proxy_egress_port < 1024 || ingress_port.is_some_and(|p| p < 1024) || low_app_port {
        caps.push(Capability::CAP_NET_BIND_SERVICE);
    }
    caps
}

/// Verifies the namespace this process is in, prints the report (human or JSON) on
/// standard output, and returns the outcome (its exit code is the command's).
pub fn run(
    config: &ProxyConfig,
    backend: &dyn Backend,
    options: &VerifyOptions,
) -> Result<Outcome> {
    let report = verify(config, backend, options)?;
    if options.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_human());
    }
    Ok(report.outcome)
}

/// Runs every check in the namespace this thread is in and returns the report.
pub fn verify(
    config: &ProxyConfig,
    backend: &dyn Backend,
    options: &VerifyOptions,
) -> Result<Report> {
    if options.timeout < MIN_TIMEOUT {
        return Err(Error::Config(vec![ConfigError::new(
            "--timeout",
            Some(&humantime::format_duration(options.timeout).to_string()),
            "is too short: verify needs at least 200ms (default 5s)",
        )]));
    }
    let started = Instant::now();
    let window = (options.timeout / 2).min(MAX_PROBE_WINDOW);
    let scope = scope::read(backend, config, &TimeBudget::starting_now(options.timeout));
    let tokens = Tokens::random().map_err(Error::Other)?;
    let ingress_port = config.ingress.as_ref().map(|i| i.proxy_port);

    let probed: Vec<Family> = scope
        .decisions
        .iter()
        .filter(|(_, d)| matches!(d, FamilyDecision::Probe(_)))
        .map(|(f, _)| *f)
        .collect();
    let mut specs = Vec::new();
    for family in &probed {
        specs.push(ListenerSpec {
            role: ListenerRole::Egress,
            family: *family,
            port: config.proxy_egress_port,
        });
        if let Some(port) = ingress_port {
            specs.push(ListenerSpec {
                role: ListenerRole::Ingress,
                family: *family,
                port,
            });
        }
    }
    let (listeners, bound) = Listeners::start(&specs, &tokens);

    let mut plan = ProbePlan::default();
    for (family, decision) in &scope.decisions {
        plan.family(config, *family, decision, &bound);
    }

    // The whole run stays within the timeout whatever the set-up above cost.
    let deadline = (Instant::now() + window).min(started + options.timeout);
    debug!(probes = plan.probes.len(), ?window, "probing");
    // Probes that must not be redirected go into a sink inside the namespace, so none
    // reaches a metadata or credentials endpoint (nor any other ignored destination).
    // A run killed before removing its sink may have left probe entries too; they go
    // first, while its sink still marks it (a kill here leaves the mark for the next run).
    if sink::left_by_a_killed_run() {
        sweep_stale_conntrack_entries();
    }
    let sink = match sink::Sink::install(&probed) {
        Ok(sink) => Some(sink),
        Err(e) => {
            plan.notes.push(format!(
                "probes that are not redirected were sent with a hop limit of 1 only (the \
                 first router drops them, but a destination on this link would see their SYN): \
                 verify could not set up its sink ({e})"
            ));
            None
        }
    };
    let (observations, mut evidence) =
        probe::run_all(&plan.probes, &tokens, deadline, sink.is_some());
    let inbound = prove_inbound(config, &plan, sink.as_ref(), &mut evidence);
    // The sink goes last: while it exists, it marks a run that may have left entries.
    drop(listeners);
    let left_behind = evidence.forget();
    drop(sink);
    if left_behind > 0 {
        plan.notes.push(format!(
            "{left_behind} conntrack entries of verify's probes could not be deleted; they expire \
             on their own"
        ));
    }

    let checks = plan.into_checks(config, &scope, &observations, &inbound, window);
    let outcome = report::outcome_of(&checks.checks);
    info!(?outcome, elapsed = ?started.elapsed(), "verification finished");
    Ok(Report {
        outcome,
        exit_code: outcome.exit_code(),
        proxy_egress_port: config.proxy_egress_port,
        proxy_ingress_port: ingress_port,
        backend: scope.backend,
        probe_window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        summary: report::summary_of(&checks.checks),
        checks: checks.checks,
        notes: checks.notes,
    })
}

/// Deletes conntrack entries an earlier, killed run left (a dump walks the whole conntrack
/// table, so this only runs when a leftover sink says there was such a run): those of its inbound probes (from
/// the stand-in client) and of its egress probes to the documentation addresses (no real
/// traffic goes there). Probes to ignored destinations cannot be told from real traffic,
/// so theirs are left to expire.
fn sweep_stale_conntrack_entries() {
    let Ok(mut conntrack) = crate::conntrack::Conntrack::open() else {
        return;
    };
    for ipv6 in [false, true] {
        let Ok(entries) = conntrack.dump(ipv6) else {
            continue;
        };
        for entry in entries {
            let source = entry.original.source.ip();
            let ours = source == std::net::IpAddr::from(sink::INBOUND_CLIENT_V4)
                || source == std::net::IpAddr::from(sink::INBOUND_CLIENT_V6)
                || selection::is_test_destination(entry.original.destination.ip());
            if ours {
                let _ = conntrack.delete(entry.original);
            }
        }
    }
}

/// Per family, the inbound probes sent and what conntrack saw, or why none could be sent.
type InboundResults = Vec<(Family, std::result::Result<InboundFamily, String>)>;
type InboundFamily = Vec<(inbound::InboundProbe, TcpTuple, inbound::InboundObservation)>;

/// Sends the inbound probes of every family whose ingress the plan checks.
fn prove_inbound(
    config: &ProxyConfig,
    plan: &ProbePlan,
    sink: Option<&sink::Sink>,
    evidence: &mut probe::ConntrackEvidence,
) -> InboundResults {
    let families: Vec<Family> = plan
        .slots
        .iter()
        .filter_map(|slot| match slot {
            Slot::Ingress(family) => Some(*family),
            _ => None,
        })
        .collect();
    let mut results = Vec::new();
    for family in families {
        let probes = inbound::probes(config, family);
        if probes.is_empty() {
            continue;
        }
        let Some(sink) = sink else {
            results.push((
                family,
                Err("verify could not set up its veth pair to send an inbound packet".to_owned()),
            ));
            continue;
        };
        let addresses = &sink.addresses;
        let Some(conntrack) = evidence.conntrack() else {
            results.push((
                family,
                Err("conntrack cannot be read here (ctnetlink)".to_owned()),
            ));
            continue;
        };
        let seen = inbound::run(&probes, addresses, conntrack);
        let mut family_results = Vec::new();
        for (probe, (observation, tuple)) in probes.into_iter().zip(seen) {
            evidence.remember(tuple);
            family_results.push((probe, tuple, observation));
        }
        results.push((family, Ok(family_results)));
    }
    results
}

/// One slot of the report: decided already, or waiting for a probe's observation.
#[derive(Debug)]
enum Slot {
    Decided(CheckResult),
    Probed(usize),
    /// The ingress rule inspection of a family, made once the probes are done.
    Ingress(Family),
    /// The mesh settings' rule inspection of a family.
    Mesh(Family),
}

/// The checks in report order, and the probes to make.
#[derive(Debug, Default)]
struct ProbePlan {
    slots: Vec<Slot>,
    probes: Vec<Probe>,
    notes: Vec<String>,
}

struct Checks {
    checks: Vec<CheckResult>,
    notes: Vec<String>,
}

impl ProbePlan {
    fn decided(&mut self, result: CheckResult) {
        self.slots.push(Slot::Decided(result));
    }

    fn probe(&mut self, probe: Probe) {
        self.slots.push(Slot::Probed(self.probes.len()));
        self.probes.push(probe);
    }

    /// Plans one family: its verdict if it is not probed, else its listener self-test, the
    /// probes to a TEST-NET destination and to the ignored destinations, and the ingress
    /// inspection.
    fn family(
        &mut self,
        config: &ProxyConfig,
        family: Family,
        decision: &FamilyDecision,
        bound: &[(ListenerSpec, std::io::Result<()>)],
    ) {
        match decision {
            FamilyDecision::NotApplicable(why) => {
                return self.decided(CheckResult::family(
                    family,
                    Status::NotApplicable,
                    why.clone(),
                ));
            }
            FamilyDecision::CouldNotRun(why) => {
                return self.decided(CheckResult::family(
                    family,
                    Status::CouldNotRun,
                    why.clone(),
                ));
            }
            FamilyDecision::Probe(note) => self.notes.extend(note.clone()),
        }
        let bind_error = |role| {
            bound
                .iter()
                .find(|(spec, _)| spec.family == family && spec.role == role)
                .and_then(|(_, result)| result.as_ref().err())
        };
        if let (Some(e), Some(port)) = (
            bind_error(ListenerRole::Ingress),
            config.ingress.as_ref().map(|i| i.proxy_port),
        ) {
            self.notes.push(format!(
                "{family}: verify could not listen on ProxyIngressPort {port} ({e}), so an egress \
                 connection sent there by mistake would show up as not redirected rather than \
                 misdirected"
            ));
        }

        let listener = selection::listener_probe(config, family);
        let port = selection::ordinary_port(config);
        let destination = match port {
            Some(port) => choose_test_destination(config, family, port).map(|ip| (ip, port)),
            None => Err(format!(
                "every destination port is egress-ignored, so no {family} connection is meant to \
                 be redirected"
            )),
        };
        let mut to_test_destination = match &destination {
            Ok((ip, port)) => selection::checks_at_test_destination(config, family, *ip, *port),
            Err(_) => Vec::new(),
        };
        let mut to_ignored = port.map_or_else(Vec::new, |port| {
            selection::probes_to_ignored_destinations(config, family, port)
        });

        if let Some(e) = bind_error(ListenerRole::Egress) {
            let why = listener_unavailable(config.proxy_egress_port, family, e);
            self.decided(judging::unprobed(&listener, Status::CouldNotRun, why));
            let reason = format!(
                "not run: verify could not listen on ProxyEgressPort {} ({family})",
                config.proxy_egress_port
            );
            let planned = to_test_destination
                .drain(..)
                .chain(to_ignored.drain(..).map(Planned::Probe));
            for entry in planned {
                self.decided(match entry {
                    Planned::Probe(probe) => {
                        judging::unprobed(&probe, Status::CouldNotRun, reason.clone())
                    }
                    Planned::Decided(result) => result,
                });
            }
            self.slots.push(Slot::Ingress(family));
            if !config.mesh.is_off() {
                self.slots.push(Slot::Mesh(family));
            }
            return;
        }

        self.probe(listener);
        match destination {
            Ok(_) => {
                for entry in to_test_destination {
                    match entry {
                        Planned::Probe(probe) => self.probe(probe),
                        Planned::Decided(result) => self.decided(result),
                    }
                }
            }
            Err(why) => self.decided(CheckResult::decided(
                CheckKind::EgressRedirect,
                family,
                Status::NotApplicable,
                why,
            )),
        }
        for probe in to_ignored {
            match probe::route_to(probe.destination) {
                Route::Routed => self.probe(probe),
                Route::Local => self.decided(judging::unprobed(
                    &probe,
                    Status::NotApplicable,
                    format!(
                        "{} is an address of this namespace: connections to it stay local and \
                         are never redirected, so there is nothing to prove",
                        probe.destination.ip()
                    ),
                )),
                Route::Unroutable(e) => self.decided(judging::unprobed(
                    &probe,
                    Status::NotApplicable,
                    format!(
                        "no route to {} here ({e}): connections there fail before any NAT rule \
                         is evaluated, so there is no traffic to redirect",
                        probe.destination.ip()
                    ),
                )),
            }
        }
        let (ports, total_ports) = selection::sampled_ignored_ports(config);
        if total_ports > ports.len() {
            self.notes.push(format!(
                "{family}: probed {} of {total_ports} ignored ports (22, then configured ports \
                 and range ends spread evenly over the list, its first and last included)",
                ports.len()
            ));
        }
        let (destinations, total) = selection::sampled_ignored_destinations(config, family);
        if total > destinations.len() {
            self.notes.push(format!(
                "{family}: probed {} of {total} ignored destinations (the metadata endpoints, then \
                 one address of configured networks spread evenly over the list, its first and \
                 last included)",
                destinations.len()
            ));
        }
        self.slots.push(Slot::Ingress(family));
        if !config.mesh.is_off() {
            self.slots.push(Slot::Mesh(family));
        }
    }

    /// Judges every observation and fills in the report, in planned order. A family whose
    /// listener self-test failed has every probe of it turned into "could not run".
    fn into_checks(
        self,
        config: &ProxyConfig,
        scope: &Scope,
        observations: &[Observation],
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
            self.probes
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
        for slot in self.slots {
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
                                results.push(inbound::judge(
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
                Slot::Probed(index) => {
                    let (Some(probe), Some(observation)) =
                        (self.probes.get(index), observations.get(index))
                    else {
                        continue;
                    };
                    if probe.kind != CheckKind::Listener && self_test_failed(probe.family) {
                        judging::unprobed(
                            probe,
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
                        judging::judge(probe, observation, &judging)
                    }
                }
            };
            results.push(result);
        }
        Checks {
            checks: results,
            notes: self.notes,
        }
    }
}

/// The first TEST-NET address of `family` that is not ignored, routed off this namespace
/// and not one of its own addresses; or why there is none (then the redirect cannot be
/// exercised: with no route, a connection fails before any NAT rule sees it).
fn choose_test_destination(
    config: &ProxyConfig,
    family: Family,
    port: u16,
) -> std::result::Result<std::net::IpAddr, String> {
    let candidates = selection::test_destination_candidates(config, family);
    if candidates.is_empty() {
        return Err(format!(
            "every {family} TEST-NET address is egress-ignored, so no destination is left to \
             prove redirection with"
        ));
    }
    let mut refusals = Vec::new();
    for ip in &candidates {
        let destination = std::net::SocketAddr::new(*ip, port);
        match probe::route_to(destination) {
            Route::Routed => match probe::source_interface(destination)
                .filter(|i| config.mesh.ignored_interfaces.contains(i))
            {
                // Nothing through an ignored interface is redirected: no proof there.
                Some(interface) => refusals.push(format!(
                    "{ip} leaves through {interface}, an ignored interface"
                )),
                None => return Ok(*ip),
            },
            Route::Local => refusals.push(format!("{ip} is an address of this namespace")),
            Route::Unroutable(e) => refusals.push(format!("no route to {ip} ({e})")),
        }
    }
    if refusals.iter().all(|r| r.ends_with("an ignored interface")) {
        return Err(format!(
            "every {family} TEST-NET destination leaves through an ignored interface ({}), \
             where nothing is redirected by design, so redirection cannot be proven here",
            refusals.join("; ")
        ));
    }
    Err(format!(
        "no {family} TEST-NET destination is routed off this namespace ({}): without a route a \
         connection fails before any NAT rule sees it, so an application could not send such \
         traffic either",
        refusals.join("; ")
    ))
}

/// Why the egress listener could not be opened, and what it means.
fn listener_unavailable(port: u16, family: Family, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            "ProxyEgressPort {port} is already in use in this namespace ({family}): verify stands \
             in for the proxy, so it must run before the proxy starts (right after apply, or as \
             the init container)"
        ),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL) => {
            format!(
                "cannot listen on ProxyEgressPort {port} over {family}: {e} ({family} is not available here)"
            )
        }
        Some(libc::EACCES) => format!(
            "cannot listen on ProxyEgressPort {port} over {family}: {e} (a port below 1024 needs \
             CAP_NET_BIND_SERVICE)"
        ),
        _ => format!("cannot listen on ProxyEgressPort {port} over {family}: {e}"),
    }
}
