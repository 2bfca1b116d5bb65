//! `meshinit explain`: which rule decides a connection, and why, in the user's terms.
//! Answered from the plan (no privileges).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use clap::Args;

use super::args::{ConfigArgs, TargetArgs};
use super::target::{self, IPTABLES_CAPS, Turn};
use crate::backend::{self, BackendKind, TimeBudget};
use crate::converge;
use crate::error::{ConfigError, Error, Result};
use crate::explain::{Connection, Direction, Protocol, Provenance, explain};
use crate::ruleset::{Family, plan};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    meshinit explain task.json --direction out --to 10.0.0.5:443 --uid 1000 --gid 1000\n  \
    meshinit explain --from-env --direction in --port 9080\n\
    Exit codes: 0 explained (--live: and the installed rules are the plan); 1 --live: the \
    installed rules differ from the plan; 2 invalid configuration or connection; 3 and 4 as \
    for status.")]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// The connection's direction: out (made by a process of the namespace) or in (from
    /// elsewhere to a local port).
    #[arg(long, value_name = "in|out")]
    pub direction: String,

    /// Transport protocol: tcp or udp (only TCP is ever redirected).
    #[arg(long, value_name = "tcp|udp", default_value = "tcp")]
    pub protocol: String,

    /// Outbound: the destination, ADDRESS:PORT ([ADDRESS]:PORT for IPv6). Inbound: the
    /// local address and port (alternative to --port).
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub to: Option<String>,

    /// Inbound: the local port the connection arrives at.
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,

    /// Inbound with --port: the family it arrives in.
    #[arg(long, value_name = "ipv4|ipv6", default_value = "ipv4")]
    pub family: String,

    /// Outbound: the user ID of the connecting process.
    #[arg(long, value_name = "UID")]
    pub uid: Option<String>,

    /// Outbound: the group ID of the connecting process.
    #[arg(long, value_name = "GID")]
    pub gid: Option<String>,

    /// Outbound: the destination is one of this namespace's own addresses (loopback always
    /// is). Inbound: the connection comes from this namespace itself.
    #[arg(long)]
    pub local: bool,

    /// The interface the connection goes out through (outbound) or comes in through
    /// (inbound), for `--ignored-interfaces`; a local destination goes out through `lo`.
    #[arg(long, value_name = "NAME")]
    pub interface: Option<String>,

    /// Also read the namespace's installed rules (as `status` does; needs its privileges)
    /// and say whether they are the plan the answer comes from, and where they differ.
    #[arg(long)]
    pub live: bool,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Print the explanation as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `--live` found in the namespace.
#[derive(Debug, serde::Serialize)]
struct Live {
    backend: BackendKind,
    /// The installed rules of the connection's family equal the plan: the kernel decides
    /// as explained.
    in_sync: bool,
    /// Where they differ (the backend's lines; empty when in sync).
    differences: Vec<String>,
    /// When they differ, the answer of the installed rules themselves (read back into the
    /// model and walked the same way: iptables-save lines, or the native table's NAT
    /// chains rule by rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    installed: Option<crate::explain::Explanation>,
    /// Rules of ours the walk could not follow (shapes meshinit never writes; natively,
    /// those the walk passed before its decision).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_followed: Vec<String>,
}

impl ExplainArgs {
    pub fn exec(self) -> Result<i32> {
        // The connection first: a typo there needs no configuration to report.
        let connection = self.connection().map_err(Error::Usage)?;
        let (config, settings, document) = self.config.load_with_settings()?;
        let family = connection.family();
        // The rules `render` prints; the native table is rendered from the same plan.
        let options = backend::by_kind(BackendKind::IptablesNft).plan_options();
        let ruleset = plan(&config, family, options);
        let provenance = Provenance::new(&settings, document);
        let planned = (!ruleset.chains.is_empty()).then_some(&ruleset);
        let explanation = explain(&config, planned, &provenance, &connection);
        let live =
            if self.live {
                target::enter(&self.target, &IPTABLES_CAPS, "explain --live", Turn::Shared)?;
                let budget = TimeBudget::starting_now(self.target.lock_timeout);
                let status = converge::status(&config, self.target.backend, &budget)?;
                let drift = status.families.iter().find(|f| f.family == family);
                let mut differences = drift.map(|f| f.drift.lines()).unwrap_or_default();
                if drift.is_none() {
                    let why = status
                        .skipped
                        .iter()
                        .find(|(f, _)| *f == family)
                        .map_or("not checked", |(_, why)| why.as_str());
                    differences.push(format!("{family} is not programmed here: {why}"));
                }
                let in_sync = drift.is_some() && differences.is_empty();
                let (mut installed, mut not_followed) = (None, Vec::new());
                if !in_sync && drift.is_some() {
                    (installed, not_followed) = backend::by_kind(status.backend)
                        .explain_installed(&config, &ruleset, &provenance, &connection, &budget)?;
                }
                Some(Live {
                    backend: status.backend,
                    in_sync,
                    differences,
                    installed,
                    not_followed,
                })
            } else {
                None
            };
        if self.json {
            let mut value = serde_json::to_value(&explanation).expect("explanation serialises");
            if let Some(live) = &live {
                value["live"] = serde_json::to_value(live).expect("live serialises");
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&value).expect("explanation serialises")
            );
        } else {
            print!("{}", explanation.to_text());
            if let Some(live) = &live {
                if live.in_sync {
                    println!(
                        "installed ({}): the planned {family} rules, so the kernel decides as above",
                        live.backend
                    );
                } else {
                    println!(
                        "installed ({}): differs from the planned {family} rules, so the kernel \
                         may decide otherwise:",
                        live.backend
                    );
                    for line in &live.differences {
                        println!("  {line}");
                    }
                    if let Some(answer) = &live.installed {
                        println!("with the installed rules: {}", answer.reason);
                        if let Some(d) = &answer.decided_by {
                            let how = if d.matched {
                                "matches"
                            } else {
                                "does not match"
                            };
                            println!(
                                "installed rule: {} ({how}; rule {} of {})",
                                d.rule, d.position, d.chain
                            );
                        }
                    }
                    for line in &live.not_followed {
                        println!("  not followed (a rule shape meshinit does not write): {line}");
                    }
                }
            }
        }
        // As `status`: 1 when the installed rules are not the plan the answer came from.
        Ok(match live {
            Some(live) if !live.in_sync => 1,
            _ => 0,
        })
    }

    /// The connection asked about, or every problem with how it was given.
    fn connection(&self) -> std::result::Result<Connection, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let direction = match self.direction.trim().to_ascii_lowercase().as_str() {
            "out" | "outbound" | "egress" => Some(Direction::Out),
            "in" | "inbound" | "ingress" => Some(Direction::In),
            _ => {
                errors.push(ConfigError::new(
                    "--direction",
                    Some(&self.direction),
                    "is not a direction: use out (a process here connects elsewhere) or in \
                     (a connection from elsewhere to a local port)",
                ));
                None
            }
        };
        let protocol = match self.protocol.trim().to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => {
                errors.push(ConfigError::new(
                    "--protocol",
                    Some(&self.protocol),
                    "is not a protocol: use tcp or udp",
                ));
                None
            }
        };
        let to = self
            .to
            .as_deref()
            .and_then(|text| parse_socket_addr(text).map_err(|e| errors.push(e)).ok());
        let port = self
            .port
            .as_deref()
            .and_then(|text| parse_port(text).map_err(|e| errors.push(e)).ok());
        let family = match self.family.trim().to_ascii_lowercase().as_str() {
            "ipv4" | "4" => Some(Family::Ipv4),
            "ipv6" | "6" => Some(Family::Ipv6),
            _ => {
                errors.push(ConfigError::new(
                    "--family",
                    Some(&self.family),
                    "is not a family: use ipv4 or ipv6",
                ));
                None
            }
        };
        let uid = self
            .uid
            .as_deref()
            .and_then(|t| parse_id("--uid", t).map_err(|e| errors.push(e)).ok());
        let gid = self
            .gid
            .as_deref()
            .and_then(|t| parse_id("--gid", t).map_err(|e| errors.push(e)).ok());

        let destination = match direction {
            Some(Direction::Out) => {
                if self.port.is_some() {
                    errors.push(ConfigError::new(
                        "--port",
                        self.port.as_deref(),
                        "is for inbound connections: give an outbound one's destination as \
                         --to ADDRESS:PORT",
                    ));
                }
                if self.to.is_none() {
                    errors.push(ConfigError::new(
                        "--to",
                        None,
                        "missing: an outbound connection needs its destination, e.g. --to \
                         10.0.0.5:443 or --to [2001:db8::1]:443",
                    ));
                }
                to
            }
            Some(Direction::In) => {
                for (flag, value) in [("--uid", &self.uid), ("--gid", &self.gid)] {
                    if value.is_some() {
                        errors.push(ConfigError::new(
                            flag,
                            value.as_deref(),
                            "is for outbound connections: inbound ones are redirected by port \
                             alone",
                        ));
                    }
                }
                match (to, port, family) {
                    (Some(_), Some(_), _) => {
                        errors.push(ConfigError::new(
                            "--port",
                            self.port.as_deref(),
                            "and --to both give the local port: use one",
                        ));
                        None
                    }
                    (Some(to), None, _) => Some(to),
                    (None, Some(port), Some(family)) => Some(SocketAddr::new(
                        match family {
                            Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                            Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                        },
                        port,
                    )),
                    (None, None, _) if self.to.is_none() && self.port.is_none() => {
                        errors.push(ConfigError::new(
                            "--port",
                            None,
                            "missing: an inbound connection needs the local port it arrives \
                             at, e.g. --port 9080",
                        ));
                        None
                    }
                    _ => None,
                }
            }
            None => None,
        };
        match (direction, protocol, destination) {
            (Some(direction), Some(protocol), Some(destination)) if errors.is_empty() => {
                Ok(Connection {
                    direction,
                    protocol,
                    destination,
                    uid,
                    gid,
                    local: self.local,
                    interface: self.interface.clone(),
                })
            }
            _ => Err(errors),
        }
    }
}

fn parse_socket_addr(text: &str) -> std::result::Result<SocketAddr, ConfigError> {
    let trimmed = text.trim();
    trimmed.parse::<SocketAddr>().map_err(|_| {
        let why = match trimmed.parse::<IpAddr>() {
            Ok(_) => "has no port: write ADDRESS:PORT, e.g. 10.0.0.5:443 or [2001:db8::1]:443",
            Err(_) => {
                "is not ADDRESS:PORT: write e.g. 10.0.0.5:443, or [2001:db8::1]:443 for IPv6 \
                 (ports 0-65535)"
            }
        };
        ConfigError::new("--to", Some(text), why)
    })
}

fn parse_port(text: &str) -> std::result::Result<u16, ConfigError> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| ConfigError::new("--port", Some(text), "is not a port number (1-65535)"))
}

fn parse_id(flag: &str, text: &str) -> std::result::Result<u32, ConfigError> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|&id| id != u32::MAX)
        .ok_or_else(|| {
            ConfigError::new(
                flag,
                Some(text),
                "is not a numeric ID (0-4294967294); names are not resolved here",
            )
        })
}
