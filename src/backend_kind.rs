//! Which backend: the kinds meshinit programs and the user's choice among them. A leaf
//! module (it imports nothing of meshinit), so errors, reports and the command line can
//! name a backend without depending on the backends themselves.

use std::fmt;

use serde::Serialize;

/// The backends meshinit can program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BackendKind {
    /// iptables over the legacy x_tables interface.
    #[serde(rename = "legacy")]
    IptablesLegacy,
    /// iptables over nf_tables (`iptables-nft`).
    #[serde(rename = "nft")]
    IptablesNft,
    /// nf_tables over netlink, by meshinit itself: one `inet meshinit` table.
    #[serde(rename = "nftables")]
    Nftables,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::IptablesLegacy => "iptables-legacy",
            BackendKind::IptablesNft => "iptables-nft",
            BackendKind::Nftables => "nftables",
        })
    }
}

/// What the user asked for with `--backend` (its spellings are the command line's, in
/// `commands::args`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// iptables-legacy where it holds rules, iptables-nft where it holds our chains; else
    /// the native nftables backend when the kernel has nf_tables, else iptables.
    Auto,
    /// iptables over the legacy x_tables interface.
    IptablesLegacy,
    /// iptables over nf_tables.
    IptablesNft,
    /// nf_tables over netlink, without any program: one `inet meshinit` table holding both
    /// families, changed in one transaction.
    Nftables,
}
