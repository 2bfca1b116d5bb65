//! A typed description of one nf_tables table: what is sent to the kernel and what a dump
//! decodes into, so "installed == desired" is a value comparison. Only what the kernel
//! gives back is modelled (no handles, no counter values).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::PortRange;

/// The table meshinit owns, in the `inet` family (IPv4 and IPv6 in one transaction).
pub const TABLE_NAME: &str = "meshinit";

/// One `inet` table: its sets and chains, each list sorted by name (the kernel keeps no
/// meaningful order between sets or between chains; rules inside a chain are ordered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn new(name: &str, mut sets: Vec<Set>, mut chains: Vec<Chain>) -> Table {
        sets.sort_by(|a, b| a.name.cmp(&b.name));
        chains.sort_by(|a, b| a.name.cmp(&b.name));
        Table {
            name: name.to_owned(),
            sets,
            chains,
        }
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|set| set.name == name)
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|chain| chain.name == name)
    }
}

/// The data type of a set's keys (nft's `type ...`), with the kernel's datatype number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    /// A TCP/UDP port (2 bytes, network byte order).
    InetService,
}

impl KeyType {
    /// nft's datatype numbers (`TYPE_IPADDR`, `TYPE_IP6ADDR`, `TYPE_INET_SERVICE`), stored
    /// by the kernel as `NFTA_SET_KEY_TYPE` so that `nft list` prints the elements right.
    pub fn datatype(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 7,
            KeyType::Ipv6Addr => 8,
            KeyType::InetService => 13,
        }
    }

    pub fn from_datatype(datatype: u32) -> Option<KeyType> {
        match datatype {
            7 => Some(KeyType::Ipv4Addr),
            8 => Some(KeyType::Ipv6Addr),
            13 => Some(KeyType::InetService),
            _ => None,
        }
    }

    /// Key length in bytes.
    pub fn byte_len(self) -> usize {
        match self {
            KeyType::Ipv4Addr => 4,
            KeyType::Ipv6Addr => 16,
            KeyType::InetService => 2,
        }
    }

    /// The largest key of this type.
    pub fn max(self) -> u128 {
        match self {
            KeyType::Ipv6Addr => u128::MAX,
            other => (1u128 << (8 * other.byte_len())) - 1,
        }
    }

    /// The key as the kernel stores it: big-endian, `len()` bytes.
    pub fn encode(self, key: u128) -> Vec<u8> {
        key.to_be_bytes()[16 - self.byte_len()..].to_vec()
    }

    pub fn decode(self, bytes: &[u8]) -> Option<u128> {
        if bytes.len() != self.byte_len() {
            return None;
        }
        Some(
            bytes
                .iter()
                .fold(0u128, |acc, b| (acc << 8) | u128::from(*b)),
        )
    }

    fn display(self, key: u128) -> String {
        match self {
            KeyType::Ipv4Addr => Ipv4Addr::from(key as u32).to_string(),
            KeyType::Ipv6Addr => Ipv6Addr::from(key).to_string(),
            KeyType::InetService => key.to_string(),
        }
    }
}

/// An inclusive range of keys (`first == last` for a single value), as host integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRange {
    pub first: u128,
    pub last: u128,
}

impl KeyRange {
    pub fn single(key: u128) -> KeyRange {
        KeyRange {
            first: key,
            last: key,
        }
    }

    pub fn is_single(&self) -> bool {
        self.first == self.last
    }

    pub fn from_ipv4_net(net: Ipv4Net) -> KeyRange {
        KeyRange {
            first: u128::from(u32::from(net.network())),
            last: u128::from(u32::from(net.broadcast())),
        }
    }

    pub fn from_ipv6_net(net: Ipv6Net) -> KeyRange {
        KeyRange {
            first: u128::from(net.network()),
            last: u128::from(net.broadcast()),
        }
    }

    pub fn from_ports(ports: PortRange) -> KeyRange {
        KeyRange {
            first: u128::from(ports.first),
            last: u128::from(ports.last),
        }
    }
}

/// A named set. Its elements are kept canonical: sorted, and for interval sets merged
/// (overlapping and adjacent ranges joined, which the kernel requires anyway), so a set
/// built from a configuration and one decoded from a dump compare as values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: KeyType,
    /// `flags interval`: ranges allowed. Without it the kernel uses a hash set.
    pub interval: bool,
    elements: Vec<KeyRange>,
}

impl Set {
    /// A set of the given members: a hash set when every member is a single value, an
    /// interval set otherwise.
    pub fn new(name: &str, key: KeyType, members: impl IntoIterator<Item = KeyRange>) -> Set {
        let members: Vec<KeyRange> = members.into_iter().collect();
        let interval = members.iter().any(|range| !range.is_single());
        Set::with_layout(name, key, interval, members)
    }

    /// A set with the interval flag given (what a dump says).
    pub fn with_layout(
        name: &str,
        key: KeyType,
        interval: bool,
        members: impl IntoIterator<Item = KeyRange>,
    ) -> Set {
        let mut members: Vec<KeyRange> = members
            .into_iter()
            .filter(|range| range.first <= range.last && range.last <= key.max())
            .collect();
        members.sort_unstable();
        if interval {
            // Merged in place: lists can be 100,000 long.
            members.dedup_by(|later, kept| {
                let touches = later.first <= kept.last.saturating_add(1);
                if touches {
                    kept.last = kept.last.max(later.last);
                }
                touches
            });
        } else {
            members.dedup();
        }
        let elements = members;
        Set {
            name: name.to_owned(),
            key,
            interval,
            elements,
        }
    }

    pub fn ipv4_networks(name: &str, nets: &[Ipv4Net]) -> Set {
        Set::new(
            name,
            KeyType::Ipv4Addr,
            nets.iter().map(|net| KeyRange::from_ipv4_net(*net)),
        )
    }

    pub fn ipv6_networks(name: &str, nets: &[Ipv6Net]) -> Set {
        Set::new(
            name,
            KeyType::Ipv6Addr,
            nets.iter().map(|net| KeyRange::from_ipv6_net(*net)),
        )
    }

    pub fn ports(name: &str, ports: &[PortRange]) -> Set {
        Set::new(
            name,
            KeyType::InetService,
            ports.iter().map(|range| KeyRange::from_ports(*range)),
        )
    }

    /// Sorted elements; disjoint and non-adjacent for an interval set.
    pub fn elements(&self) -> &[KeyRange] {
        &self.elements
    }
}

impl fmt::Display for Set {
    /// nft's spelling of the elements, for messages and debugging.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "set {} {{ ", self.name)?;
        for (i, range) in self.elements.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&self.key.display(range.first))?;
            if !range.is_single() {
                write!(f, "-{}", self.key.display(range.last))?;
            }
        }
        f.write_str(" }")
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

/// One rule: expressions evaluated in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub exprs: Vec<Expr>,
}

impl Rule {
    pub fn new(exprs: Vec<Expr>) -> Rule {
        Rule { exprs }
    }
}

/// An nf_tables register (`NFT_REG_*`): 0 is the verdict register, 1-4 the 16-byte data
/// registers, 8-23 the 4-byte ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Register(pub u32);

impl Register {
    pub const VERDICT: Register = Register(0);
    pub const R1: Register = Register(1);
}

/// Keys of the `meta` expression that meshinit uses; others are kept by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// The socket owner's UID (4 bytes, host order).
    SkUid,
    /// The socket owner's GID (4 bytes, host order).
    SkGid,
    /// The family of the packet (`NFPROTO_IPV4` = 2, `NFPROTO_IPV6` = 10), 1 byte.
    NfProto,
    /// The transport protocol number, 1 byte.
    L4Proto,
    Other(u32),
}

impl MetaKey {
    pub fn number(self) -> u32 {
        match self {
            MetaKey::SkUid => 10,
            MetaKey::SkGid => 11,
            MetaKey::NfProto => 15,
            MetaKey::L4Proto => 16,
            MetaKey::Other(number) => number,
        }
    }

    pub fn from_number(number: u32) -> MetaKey {
        match number {
            10 => MetaKey::SkUid,
            11 => MetaKey::SkGid,
            15 => MetaKey::NfProto,
            16 => MetaKey::L4Proto,
            other => MetaKey::Other(other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    pub fn number(self) -> u32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Neq => 1,
            CmpOp::Lt => 2,
            CmpOp::Lte => 3,
            CmpOp::Gt => 4,
            CmpOp::Gte => 5,
        }
    }

    pub fn from_number(number: u32) -> Option<CmpOp> {
        Some(match number {
            0 => CmpOp::Eq,
            1 => CmpOp::Neq,
            2 => CmpOp::Lt,
            3 => CmpOp::Lte,
            4 => CmpOp::Gt,
            5 => CmpOp::Gte,
            _ => return None,
        })
    }
}

/// Where a `payload` load counts its offset from (`NFT_PAYLOAD_*_HEADER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    LinkLayer,
    Network,
    Transport,
    Other(u32),
}

impl PayloadBase {
    pub fn number(self) -> u32 {
        match self {
            PayloadBase::LinkLayer => 0,
            PayloadBase::Network => 1,
            PayloadBase::Transport => 2,
            PayloadBase::Other(number) => number,
        }
    }

    pub fn from_number(number: u32) -> PayloadBase {
        match number {
            0 => PayloadBase::LinkLayer,
            1 => PayloadBase::Network,
            2 => PayloadBase::Transport,
            other => PayloadBase::Other(other),
        }
    }
}

/// What a `fib` lookup returns (`NFT_FIB_RESULT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FibResult {
    Oif,
    OifName,
    /// The route type of the address (`RTN_LOCAL` = 2 for a local address), 4 bytes.
    AddrType,
    Other(u32),
}

impl FibResult {
    pub fn number(self) -> u32 {
        match self {
            FibResult::Oif => 1,
            FibResult::OifName => 2,
            FibResult::AddrType => 3,
            FibResult::Other(number) => number,
        }
    }

    pub fn from_number(number: u32) -> FibResult {
        match number {
            1 => FibResult::Oif,
            2 => FibResult::OifName,
            3 => FibResult::AddrType,
            other => FibResult::Other(other),
        }
    }
}

/// `NFTA_FIB_F_*` flags: which address the lookup is about.
pub mod fib_flags {
    pub const SADDR: u32 = 1;
    pub const DADDR: u32 = 2;
}

/// The route type a local address has (`RTN_LOCAL`).
pub const RTN_LOCAL: u32 = 2;
/// `NF_NAT_RANGE_PROTO_SPECIFIED`: the redirect sets the port.
pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const IPPROTO_TCP: u8 = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImmediateData {
    Verdict(Verdict),
    Value(Vec<u8>),
}

/// One expression of a rule, with the fields the kernel dumps back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: MetaKey,
        dreg: Register,
    },
    Cmp {
        sreg: Register,
        op: CmpOp,
        data: Vec<u8>,
    },
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: Register,
    },
    /// `dreg = (sreg & mask) ^ xor` over `len` bytes: a prefix match loads, masks, compares.
    Bitwise {
        sreg: Register,
        dreg: Register,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Fib {
        flags: u32,
        result: FibResult,
        dreg: Register,
    },
    Lookup {
        set: String,
        sreg: Register,
        invert: bool,
    },
    Immediate {
        dreg: Register,
        data: ImmediateData,
    },
    /// `redirect to :PORT`, the port taken from `reg_proto_min`.
    Redir {
        reg_proto_min: Option<Register>,
        flags: u32,
    },
    /// A packet/byte counter; its values are not part of the model.
    Counter,
    /// An expression meshinit does not model (e.g. iptables-nft's `match`), kept as its
    /// name and raw attribute bytes.
    Other {
        name: String,
        data: Vec<u8>,
    },
}

impl Expr {
    pub fn meta(key: MetaKey) -> Expr {
        Expr::Meta {
            key,
            dreg: Register::R1,
        }
    }

    pub fn cmp(op: CmpOp, data: impl Into<Vec<u8>>) -> Expr {
        Expr::Cmp {
            sreg: Register::R1,
            op,
            data: data.into(),
        }
    }

    pub fn payload(base: PayloadBase, offset: u32, len: u32) -> Expr {
        Expr::Payload {
            base,
            offset,
            len,
            dreg: Register::R1,
        }
    }

    pub fn lookup(set: &str) -> Expr {
        Expr::Lookup {
            set: set.to_owned(),
            sreg: Register::R1,
            invert: false,
        }
    }

    pub fn verdict(verdict: Verdict) -> Expr {
        Expr::Immediate {
            dreg: Register::VERDICT,
            data: ImmediateData::Verdict(verdict),
        }
    }

    pub fn fib_addr_type(flags: u32) -> Expr {
        Expr::Fib {
            flags,
            result: FibResult::AddrType,
            dreg: Register::R1,
        }
    }

    /// Loads the port into register 1 and redirects to it (`redirect to :PORT`): two
    /// expressions, as nft generates them.
    pub fn redirect_to_port(port: u16) -> [Expr; 2] {
        [
            Expr::Immediate {
                dreg: Register::R1,
                data: ImmediateData::Value(port.to_be_bytes().to_vec()),
            },
            Expr::Redir {
                reg_proto_min: Some(Register::R1),
                flags: NF_NAT_RANGE_PROTO_SPECIFIED,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u128, last: u128) -> KeyRange {
        KeyRange { first, last }
    }

    #[test]
    fn single_members_make_a_hash_set_and_ranges_an_interval_set() {
        let hash = Set::new("s", KeyType::InetService, [r(22, 22), r(23, 23), r(22, 22)]);
        assert!(!hash.interval);
        assert_eq!(hash.elements(), &[r(22, 22), r(23, 23)]);
        let interval = Set::new("s", KeyType::InetService, [r(23, 23), r(20, 22), r(30, 40)]);
        assert!(interval.interval);
        assert_eq!(interval.elements(), &[r(20, 23), r(30, 40)]);
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge_up_to_the_top_key() {
        let set = Set::new(
            "s",
            KeyType::Ipv4Addr,
            [
                r(10, 20),
                r(15, 30),
                r(31, 31),
                r(40, 50),
                r(0xffff_fff0, 0xffff_ffff),
            ],
        );
        assert_eq!(
            set.elements(),
            &[r(10, 31), r(40, 50), r(0xffff_fff0, 0xffff_ffff)]
        );
        let all6 = Set::new("s", KeyType::Ipv6Addr, [r(0, u128::MAX), r(5, 7)]);
        assert_eq!(all6.elements(), &[r(0, u128::MAX)]);
    }

    #[test]
    fn keys_encode_big_endian_at_their_width() {
        assert_eq!(KeyType::InetService.encode(9080), vec![0x23, 0x78]);
        assert_eq!(
            KeyType::Ipv4Addr.encode(0xa9fe_aa02),
            vec![169, 254, 170, 2]
        );
        assert_eq!(
            KeyType::Ipv4Addr.decode(&[169, 254, 170, 2]),
            Some(0xa9fe_aa02)
        );
        assert_eq!(KeyType::Ipv4Addr.decode(&[1, 2]), None);
        assert_eq!(KeyType::Ipv6Addr.encode(1).len(), 16);
    }

    #[test]
    fn display_spells_elements_like_nft() {
        let set = Set::ipv4_networks(
            "ign4",
            &[
                "10.0.0.0/8".parse().unwrap(),
                "169.254.170.2/32".parse().unwrap(),
            ],
        );
        assert_eq!(
            set.to_string(),
            "set ign4 { 10.0.0.0-10.255.255.255, 169.254.170.2 }"
        );
    }
}
