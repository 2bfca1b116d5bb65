//! One rule of the model: what it matches and what it does, as values. Backends render it
//! (iptables text, nf_tables expressions) and read the kernel's state back into it, so
//! "installed" and "wanted" compare as values, not as one program's spelling.

use std::fmt;

use ipnet::IpNet;

use crate::config::PortRange;

/// A condition on a packet. A rule matches when all of its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// The transport protocol is TCP.
    Tcp,
    /// The transport protocol is UDP.
    Udp,
    /// The socket belongs to this user (locally generated packets only).
    OwnerUid(u32),
    /// The socket belongs to this group.
    OwnerGid(u32),
    /// The TCP destination port is one of these (a backend may limit the list's length; the
    /// planner splits longer lists, see `PlanOptions`).
    DestinationPorts(Vec<PortRange>),
    /// The destination address is in this network.
    DestinationNetwork(IpNet),
    /// The destination (address or port, per the set's kind) is in this set of the ruleset.
    DestinationInSet(String),
    /// The destination address is (`true`) or is not (`false`) one of this host's own.
    DestinationIsLocal(bool),
    /// The source address is (`true`) or is not (`false`) one of this host's own.
    SourceIsLocal(bool),
    /// The packet came in through this interface (exact name).
    InInterface(String),
    /// The packet goes out through this interface (exact name).
    OutInterface(String),
}

/// What a rule does with a packet it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Leave this chain: the packet is not redirected.
    Return,
    /// Redirect the connection to this port on the host (the proxy).
    Redirect(u16),
    /// Continue in this chain of the ruleset.
    Jump(String),
}

/// A rule in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub chain: String,
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

impl Rule {
    pub fn new(chain: &str, matches: Vec<Match>, verdict: Verdict) -> Self {
        Rule {
            chain: chain.to_owned(),
            matches,
            verdict,
        }
    }

    /// The chain this rule jumps to, if it jumps.
    pub fn jump_target(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Jump(target) => Some(target),
            _ => None,
        }
    }
}

/// A neutral spelling for logs and tests; backends show their own syntax to users.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.chain)?;
        for m in &self.matches {
            match m {
                Match::Tcp => write!(f, " tcp")?,
                Match::Udp => write!(f, " udp")?,
                Match::OwnerUid(uid) => write!(f, " uid={uid}")?,
                Match::OwnerGid(gid) => write!(f, " gid={gid}")?,
                Match::DestinationPorts(ports) => {
                    let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
                    write!(f, " dport={}", ports.join(","))?
                }
                Match::DestinationNetwork(net) => write!(f, " daddr={net}")?,
                Match::DestinationInSet(set) => write!(f, " dst@{set}")?,
                Match::DestinationIsLocal(local) => write!(f, " daddr-local={local}")?,
                Match::SourceIsLocal(local) => write!(f, " saddr-local={local}")?,
                Match::InInterface(name) => write!(f, " iif={name}")?,
                Match::OutInterface(name) => write!(f, " oif={name}")?,
            }
        }
        match &self.verdict {
            Verdict::Return => write!(f, " => return"),
            Verdict::Redirect(port) => write!(f, " => redirect :{port}"),
            Verdict::Jump(chain) => write!(f, " => {chain}"),
        }
    }
}
