//! The select stage: which checks a run makes, in report order, and the probes to make
//! for them. Asks the routing table (no packet sent) to pick reachable destinations; decides
//! without traffic whatever needs none.

use super::check::{CheckKind, CheckResult, Status};
use super::route::{Route, route_to, source_interface};
use super::scope::FamilyDecision;
use super::selection::{self, DnsProbe, ListenerRole, ListenerSpec, Planned, Probe};
use crate::config::ProxyConfig;
use crate::ruleset::Family;

/// The listeners a run opens: the proxy's egress port, and its ingress port if any, in
/// every family probed.
pub fn listener_specs(config: &ProxyConfig, probed: &[Family]) -> Vec<ListenerSpec> {
    let mut specs = Vec::new();
    for family in probed {
        specs.push(ListenerSpec {
            role: ListenerRole::Egress,
            family: *family,
            port: config.proxy_egress_port,
        });
        if let Some(ingress) = &config.ingress {
            specs.push(ListenerSpec {
                role: ListenerRole::Ingress,
                family: *family,
                port: ingress.proxy_port,
            });
        }
    }
    specs
}

/// One slot of the report: decided already, or waiting for a probe's observation.
#[derive(Debug)]
pub enum Slot {
    Decided(CheckResult),
    Probed(usize),
    /// The ingress rule inspection of a family, made once the probes are done.
    Ingress(Family),
    /// The mesh settings' rule inspection of a family.
    Mesh(Family),
    /// A DNS capture probe, by its index in `dns_probes`.
    Dns(usize),
}

/// The checks in report order, and the probes to make.
#[derive(Debug, Default)]
pub struct ProbePlan {
    pub slots: Vec<Slot>,
    pub probes: Vec<Probe>,
    pub dns_probes: Vec<DnsProbe>,
    pub notes: Vec<String>,
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
    pub fn family(
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
            self.decided(listener.unprobed(Status::CouldNotRun, why));
            let reason = format!(
                "not run: verify could not listen on ProxyEgressPort {} ({family})",
                config.proxy_egress_port
            );
            let planned = to_test_destination
                .drain(..)
                .chain(to_ignored.drain(..).map(Planned::Probe));
            for entry in planned {
                self.decided(match entry {
                    Planned::Probe(probe) => probe.unprobed(Status::CouldNotRun, reason.clone()),
                    Planned::Decided(result) => result,
                });
            }
            self.slots.push(Slot::Ingress(family));
            if !config.mesh.is_off() {
                self.slots.push(Slot::Mesh(family));
            }
            self.dns(config, family);
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
            match route_to(probe.destination) {
                Route::Routed => self.probe(probe),
                Route::Local => self.decided(probe.unprobed(
                    Status::NotApplicable,
                    format!(
                        "{} is an address of this namespace: connections to it stay local and \
                         are never redirected, so there is nothing to prove",
                        probe.destination.ip()
                    ),
                )),
                Route::Unroutable(e) => self.decided(probe.unprobed(
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
        self.dns(config, family);
    }

    /// Plans DNS capture's probes of one family when it is on: queries to the first
    /// resolver of the capture's scope that a query could reach from here.
    fn dns(&mut self, config: &ProxyConfig, family: Family) {
        if config.mesh.dns.is_none() {
            return;
        }
        let not_applicable = |reason: String| {
            Slot::Decided(CheckResult::decided(
                CheckKind::DnsCapture,
                family,
                Status::NotApplicable,
                reason,
            ))
        };
        let candidates = selection::dns_destination_candidates(config, family);
        if candidates.is_empty() {
            self.slots.push(not_applicable(format!(
                "no {family} resolver in /etc/resolv.conf (read at apply time), so no {family} \
                 DNS query is captured"
            )));
            return;
        }
        let mut refusals = Vec::new();
        for ip in candidates {
            let destination = std::net::SocketAddr::new(ip, crate::config::mesh::DNS_PORT);
            match route_to(destination) {
                Route::Routed => match source_interface(destination)
                    .filter(|i| config.mesh.ignored_interfaces.contains(i))
                {
                    Some(interface) => refusals.push(format!(
                        "{ip} is reached through {interface}, an ignored interface"
                    )),
                    None => {
                        for probe in selection::dns_probes(config, family, ip) {
                            self.slots.push(Slot::Dns(self.dns_probes.len()));
                            self.dns_probes.push(probe);
                        }
                        return;
                    }
                },
                Route::Local => refusals.push(format!(
                    "{ip} is an address of this namespace (queries to it stay local and are \
                     not captured by design)"
                )),
                Route::Unroutable(e) => refusals.push(format!("no route to {ip} ({e})")),
            }
        }
        self.slots.push(not_applicable(format!(
            "no {family} resolver in the DNS capture's scope can be queried through the \
             capture from here: {}",
            refusals.join("; ")
        )));
    }
}

impl ProbePlan {
    /// The families whose ingress is checked (by an inbound packet, or by the rules).
    pub fn ingress_families(&self) -> Vec<Family> {
        self.slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::Ingress(family) => Some(*family),
                _ => None,
            })
            .collect()
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
        match route_to(destination) {
            Route::Routed => match source_interface(destination)
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
