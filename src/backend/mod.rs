//! Backends: which iptables implementation holds this namespace's rules (legacy x_tables or
//! nf_tables), chosen once and used for both families; plus ipset for long lists.

pub mod ipset;
pub mod iptables;
pub mod program;

use std::fmt;

use tracing::info;

pub use iptables::IptablesTools;
pub use program::TimeBudget;

use crate::error::{Error, Result};
use crate::ruleset::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Legacy,
    Nft,
}

impl BackendKind {
    /// The infix of the binaries: `iptables-legacy-restore`, `iptables-nft-restore`.
    pub fn binary_infix(self) -> &'static str {
        match self {
            BackendKind::Legacy => "legacy",
            BackendKind::Nft => "nft",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Legacy => "iptables-legacy",
            BackendKind::Nft => "iptables-nft",
        })
    }
}

/// What the user asked for with `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The backend already holding rules here; else nft when it works; else legacy.
    Auto,
    Legacy,
    Nft,
}

/// The kernel's list of legacy x_tables tables that exist in this namespace. Reading it,
/// unlike running `iptables-legacy-save`, creates nothing. (`thread-self`: `self` would show
/// the main thread's namespace.)
pub fn legacy_tables(family: Family) -> Vec<String> {
    let path = match family {
        Family::Ipv4 => "/proc/thread-self/net/ip_tables_names",
        Family::Ipv6 => "/proc/thread-self/net/ip6_tables_names",
    };
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A chosen backend and why, for the log.
#[derive(Debug, Clone)]
pub struct Selection {
    pub kind: BackendKind,
    pub reason: String,
}

/// Chooses the backend. For `auto`, legacy tables existing in this namespace are inspected
/// (legacy wins when they hold any rule, since a second backend would hide its rules from the
/// first); otherwise nft is preferred and proven by the first save, falling back to legacy.
pub fn select(choice: BackendChoice) -> Result<Selection> {
    let selection = match choice {
        BackendChoice::Legacy => Selection {
            kind: BackendKind::Legacy,
            reason: "--backend legacy".into(),
        },
        BackendChoice::Nft => Selection {
            kind: BackendKind::Nft,
            reason: "--backend nft".into(),
        },
        BackendChoice::Auto => auto_select()?,
    };
    info!(backend = %selection.kind, reason = %selection.reason, "backend chosen");
    Ok(selection)
}

fn auto_select() -> Result<Selection> {
    let has_legacy_tables = Family::BOTH.iter().any(|f| !legacy_tables(*f).is_empty());
    if has_legacy_tables && legacy_holds_rules()? {
        return Ok(Selection {
            kind: BackendKind::Legacy,
            reason: "iptables-legacy already holds rules in this namespace".into(),
        });
    }
    match IptablesTools::find(BackendKind::Nft, Family::Ipv4) {
        Ok(_) => Ok(Selection {
            kind: BackendKind::Nft,
            reason: "no legacy rules here; nf_tables is the current kernel interface".into(),
        }),
        Err(_) => Ok(Selection {
            kind: BackendKind::Legacy,
            reason: "iptables-nft is not installed".into(),
        }),
    }
}

/// True when any legacy table of either family holds a rule or a user chain.
fn legacy_holds_rules() -> Result<bool> {
    for family in Family::BOTH {
        if legacy_tables(family).is_empty() {
            continue;
        }
        let tools = IptablesTools::find(BackendKind::Legacy, family)?;
        let output = std::process::Command::new(&tools.save)
            .output()
            .map_err(|e| Error::io(format!("running {}", tools.save.display()), e))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let holds = text.lines().any(|l| {
            l.starts_with("-A ")
                || (l.starts_with(':') && !l.contains(" ACCEPT ") && !l.contains(" DROP "))
        });
        if holds {
            return Ok(true);
        }
    }
    Ok(false)
}
