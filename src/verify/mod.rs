//! `verify`: proves redirection with real connections in the live namespace.
//!
//! Verify stands in for the proxy: it listens on ProxyEgressPort (and ProxyIngressPort)
//! itself, answering each connection with a random token and the `SO_ORIGINAL_DST` it
//! sees, then connects as an ordinary user, as the proxy's user and group, to ignored
//! ports and to ignored destinations, all at once and each within a short window. What
//! cannot be proven with traffic from inside the namespace (ingress) is checked by reading
//! the rules back, and reported as such.
//!
//! A straight pipeline, each stage importing only the ones before it and `check` (the
//! vocabulary they share): `scope` (which families, from the tables and the engine's IPv6
//! decision) -> select (`selection`, `plan`) -> probe (`probe`, `dns_probe`, `inbound`,
//! `sink`) -> judge (`judging`, `rule_inspection`) -> `report`. This module only runs the
//! stages.

mod check;
mod dns_probe;
mod inbound;
mod judging;
#[cfg(test)]
mod layering;
mod plan;
mod probe;
mod report;
mod route;
mod rtnl;
mod rule_inspection;
mod scope;
mod selection;
mod sink;
#[cfg(test)]
mod test_fixture;

use std::time::{Duration, Instant};

use caps::Capability;
use tracing::{debug, info};

pub use check::{CheckKind, CheckResult, Evidence, Identity, Status};
pub use report::{Outcome, Report, Summary};

use self::inbound::InboundResults;
use self::plan::ProbePlan;
use self::probe::{Listeners, Tokens};
use self::scope::FamilyDecision;
use crate::backend::{Backend, TimeBudget};
use crate::config::ProxyConfig;
use crate::error::{ConfigError, Error, Result};
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

/// Verify's set-up that needs no rules, started on a thread of its own: sweeping what a
/// killed run left, and making the sink's veth pair (making a network device is the
/// costliest part of verify's set-up). `apply --verify` starts it beside programming the
/// rules; the thread is always joined (by verify, or when this is dropped).
pub struct Preparation {
    sink: Option<std::thread::JoinHandle<std::io::Result<sink::Sink>>>,
    /// Held until verify has judged, then dropped beside the sink's removal.
    held: Vec<Box<dyn Send>>,
}

impl Preparation {
    /// Starts the set-up in the namespace (and with the capabilities) of this thread.
    pub fn start() -> Preparation {
        let sink = std::thread::Builder::new()
            .name("verify-prepare".into())
            .spawn(prepare_sink)
            .ok();
        Preparation {
            sink,
            held: Vec::new(),
        }
    }

    /// Keeps `value` (the namespace's lock, for `apply --verify`: no writer may change the
    /// rules being proven) until every probe is done, then drops it beside the sink's
    /// removal: both wait for a kernel grace period, and side by side they share it.
    pub fn holding_until_teardown(mut self, value: Option<impl Send + 'static>) -> Preparation {
        if let Some(value) = value {
            self.held.push(Box::new(value));
        }
        self
    }

    fn take_sink(&mut self) -> std::io::Result<sink::Sink> {
        match self.sink.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("its set-up thread panicked"))),
            // The thread could not be started: the set-up runs here.
            None => prepare_sink(),
        }
    }
}

impl Drop for Preparation {
    fn drop(&mut self) {
        // An unused sink is removed before this returns.
        if let Some(handle) = self.sink.take() {
            let _ = handle.join();
        }
    }
}

/// A run killed before removing its sink may have left probe entries; they go first,
/// while its sink still marks it (a kill here leaves the mark for the next run). Then the
/// new sink's pair.
fn prepare_sink() -> std::io::Result<sink::Sink> {
    if sink::left_by_a_killed_run() {
        sweep_stale_conntrack_entries();
    }
    sink::Sink::create()
}

/// Refuses options verify cannot run with, before anything is set up.
pub fn check_options(options: &VerifyOptions) -> Result<()> {
    if options.timeout < MIN_TIMEOUT {
        return Err(Error::Config(vec![ConfigError::new(
            "--timeout",
            Some(&humantime::format_duration(options.timeout).to_string()),
            "is too short: verify needs at least 200ms (default 5s)",
        )]));
    }
    Ok(())
}

/// Verifies the namespace this process is in, prints the report (human or JSON) on
/// standard output, and returns the outcome (its exit code is the command's).
pub fn run(
    config: &ProxyConfig,
    backend: &dyn Backend,
    options: &VerifyOptions,
) -> Result<Outcome> {
    check_options(options)?;
    run_prepared(config, backend, options, Preparation::start())
}

/// [`run`], with the set-up `preparation` already started (the set-up overlaps whatever
/// ran since).
pub fn run_prepared(
    config: &ProxyConfig,
    backend: &dyn Backend,
    options: &VerifyOptions,
    preparation: Preparation,
) -> Result<Outcome> {
    let report = verify_prepared(config, backend, options, preparation)?;
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
    check_options(options)?;
    verify_prepared(config, backend, options, Preparation::start())
}

/// [`verify`], with the set-up `preparation` already started.
pub fn verify_prepared(
    config: &ProxyConfig,
    backend: &dyn Backend,
    options: &VerifyOptions,
    mut preparation: Preparation,
) -> Result<Report> {
    check_options(options)?;
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
    let (listeners, bound) = Listeners::start(&plan::listener_specs(config, &probed), &tokens);

    let mut plan = ProbePlan::default();
    for (family, decision) in &scope.decisions {
        plan.family(config, *family, decision, &bound);
    }

    // The whole run stays within the timeout whatever the set-up above cost.
    let deadline = (Instant::now() + window).min(started + options.timeout);
    debug!(probes = plan.probes.len(), ?window, "probing");
    // Probes that must not be redirected go into a sink inside the namespace, so none
    // reaches a metadata or credentials endpoint (nor any other ignored destination).
    let sink = match preparation
        .take_sink()
        .and_then(|mut sink| sink.add_families(&probed).map(|()| sink))
    {
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
    let dns = dns_probe::run(&plan.dns_probes, sink.is_some(), &mut evidence);
    let inbound = prove_inbound(config, &plan, sink.as_ref(), &mut evidence);
    // The sink goes last: while it exists, it marks a run that may have left entries.
    drop(listeners);
    let left_behind = evidence.forget();
    let held = std::mem::take(&mut preparation.held);
    std::thread::scope(|scope| {
        for value in held {
            // Should the thread not start, the value is dropped here instead.
            let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(value));
        }
        drop(sink);
    });
    if left_behind > 0 {
        plan.notes.push(format!(
            "{left_behind} conntrack entries of verify's probes could not be deleted; they expire \
             on their own"
        ));
    }

    let checks = judging::judge_all(plan, config, &scope, &observations, &dns, &inbound, window);
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
/// table, so this only runs when a leftover sink says there was such a run): those of its
/// inbound probes (from the stand-in client), of its egress probes to the documentation
/// addresses (no real traffic goes there), and of its probes into the sink, ignored
/// destinations included: they come from a port of `PROBE_SOURCE_PORTS` and were never
/// answered nor translated (an application's connection that matched all three would lose
/// nothing: its next packet makes a new entry, and it has no NAT to keep).
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
            let sunk_probe = probe::PROBE_SOURCE_PORTS.contains(&entry.original.source.port())
                && !entry.seen_reply
                && entry.translated_destination().is_none();
            let ours = source == std::net::IpAddr::from(sink::INBOUND_CLIENT_V4)
                || source == std::net::IpAddr::from(sink::INBOUND_CLIENT_V6)
                || selection::is_test_destination(entry.original.destination.ip())
                || sunk_probe;
            if ours {
                let _ = conntrack.delete_flow(entry.flow());
            }
        }
    }
}

/// Sends the inbound probes of every family whose ingress the plan checks.
fn prove_inbound(
    config: &ProxyConfig,
    plan: &ProbePlan,
    sink: Option<&sink::Sink>,
    evidence: &mut probe::ConntrackEvidence,
) -> InboundResults {
    let mut results = Vec::new();
    for family in plan.ingress_families() {
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
