//! A typed description of one nf_tables table: what is sent to the kernel and what a dump
//! decodes into, so "installed == desired" is a value comparison. Only what the kernel
//! gives back is modelled (no handles, no counter values). Sets are in [`set`], rules and
//! their expressions in [`expr`]; what counters have counted, read beside a table, in
//! [`counters`].

mod counters;
mod expr;
mod set;

pub use counters::*;
pub use expr::*;
pub use set::*;

/// `NFT_TABLE_F_DORMANT`: the table's chains are unhooked, so none of its rules run.
pub const TABLE_F_DORMANT: u32 = 1;
/// `NFT_TABLE_F_OWNER`: only the netlink socket that created the table may change it.
pub const TABLE_F_OWNER: u32 = 2;

/// One `inet` table: its flags, sets and chains, each list sorted by name (the kernel keeps
/// no meaningful order between sets or between chains; rules inside a chain are ordered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// `NFTA_TABLE_FLAGS` (dormant, owner, ...): state like the rules, since a dormant
    /// table's rules are all off. tables built from the model have none unless set.
    pub flags: u32,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn new(name: &str, mut sets: Vec<Set>, mut chains: Vec<Chain>) -> Table {
        sets.sort_by(|a, b| a.name.cmp(&b.name));
        chains.sort_by(|a, b| a.name.cmp(&b.name));
        Table {
            name: name.to_owned(),
            flags: 0,
            sets,
            chains,
        }
    }

    /// The same table with the flags a dump reported.
    pub fn with_flags(mut self, flags: u32) -> Table {
        self.flags = flags;
        self
    }

    /// Whether the table is switched off (`flags dormant`): its rules exist but none runs.
    pub fn is_dormant(&self) -> bool {
        self.flags & TABLE_F_DORMANT != 0
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|set| set.name == name)
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|chain| chain.name == name)
    }
}

/// A chain: a base chain hooks into the packet path, a regular one is only jumped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: ChainType,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainType {
    Nat,
    Filter,
    Route,
    Other(String),
}

impl ChainType {
    pub fn name(&self) -> &str {
        match self {
            ChainType::Nat => "nat",
            ChainType::Filter => "filter",
            ChainType::Route => "route",
            ChainType::Other(name) => name,
        }
    }

    pub fn from_name(name: &str) -> ChainType {
        match name {
            "nat" => ChainType::Nat,
            "filter" => ChainType::Filter,
            "route" => ChainType::Route,
            other => ChainType::Other(other.to_owned()),
        }
    }
}

/// Netfilter hooks of the `inet`/`ip`/`ip6` families (`NF_INET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Other(u32),
}

impl Hook {
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
            Hook::Other(number) => number,
        }
    }

    pub fn from_number(number: u32) -> Hook {
        match number {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            other => Hook::Other(other),
        }
    }
}

/// A base chain's verdict for packets no rule decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}
