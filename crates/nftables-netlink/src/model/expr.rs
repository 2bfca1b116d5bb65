//! Rules as the kernel sees them: a list of typed expressions over registers.

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

/// Keys of the `meta` expression that are modelled; others are kept by number.
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
    /// An expression not modelled (e.g. iptables-nft's `match`), kept as its
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
