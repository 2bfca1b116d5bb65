//! Encoding: the model as nf_tables messages (what `nft --debug=netlink` prints for the
//! same ruleset). The three expressions netlink-packet-netfilter does not type (`fib`,
//! `redir`, `counter`) are written here from their uapi attribute numbers.

use netlink_packet_core::{DefaultNla, NLA_F_NESTED};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook as HookAttribute, HookNumber, Immediate, ListAttribute, Lookup, Meta, NfTablesMessage,
    Payload, RuleAttribute, RuleMessage, SetAttribute, SetDescription, SetFlags, SetMessage,
    TableAttribute, TableMessage, Verdict as VerdictCode, VerdictAttribute,
};

use super::model::{
    BaseChain, Chain, Expr, ImmediateData, KeyType, Policy, Register, Rule, Set, Verdict,
};

/// `NFTA_FIB_*`, `NFTA_REDIR_*` attribute numbers (uapi nf_tables.h).
pub(crate) mod attr {
    pub const FIB_DREG: u16 = 1;
    pub const FIB_RESULT: u16 = 2;
    pub const FIB_FLAGS: u16 = 3;
    pub const REDIR_REG_PROTO_MIN: u16 = 1;
    pub const REDIR_REG_PROTO_MAX: u16 = 2;
    pub const REDIR_FLAGS: u16 = 3;
    pub const COUNTER_BYTES: u16 = 1;
    pub const COUNTER_PACKETS: u16 = 2;
    /// `NFT_LOOKUP_F_INV`
    pub const LOOKUP_F_INV: u32 = 1;
    pub const SET_ELEM_LIST_TABLE: u16 = 1;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const SET_ELEM_LIST_SET_ID: u16 = 4;
    pub const LIST_ELEM: u16 = 1;
    pub const SET_ELEM_KEY: u16 = 1;
    pub const SET_ELEM_FLAGS: u16 = 3;
    pub const DATA_VALUE: u16 = 1;
    /// `NFT_SET_ELEM_INTERVAL_END`
    pub const SET_ELEM_INTERVAL_END: u32 = 1;
}

/// The element list of one NEWSETELEM message stays under this many bytes: its length is
/// a 16-bit attribute length, so large sets go in several messages.
const MAX_ELEMENT_BYTES: usize = 60_000;

pub fn new_table(name: &str) -> NfTablesMessage {
    NfTablesMessage::NewTable(TableMessage {
        attributes: vec![TableAttribute::Name(name.to_owned())],
    })
}

pub fn table_by_name(name: &str) -> TableMessage {
    TableMessage {
        attributes: vec![TableAttribute::Name(name.to_owned())],
    }
}

pub fn new_set(table: &str, set: &Set, id: u32) -> NfTablesMessage {
    let mut flags = SetFlags::empty();
    if set.interval {
        flags |= SetFlags::Interval;
    }
    let mut attributes = vec![
        SetAttribute::Table(table.to_owned()),
        SetAttribute::Name(set.name.clone()),
        SetAttribute::Flags(flags),
        SetAttribute::KeyType(set.key.datatype()),
        SetAttribute::KeyLen(set.key.byte_len() as u32),
        SetAttribute::Id(id),
    ];
    if !set.interval {
        // Sized up front, the kernel builds a hash table that never resizes: a table that
        // grows while it is filled is rehashed in the background, and a dump that walks it
        // then can miss elements (100,000 members read back as 94,000).
        let size = u32::try_from(set.elements().len())
            .unwrap_or(u32::MAX)
            .max(1);
        attributes.push(SetAttribute::Description(vec![SetDescription::Size(size)]));
    }
    NfTablesMessage::NewSet(SetMessage { attributes })
}

/// One set key as the kernel gets it, with `NFT_SET_ELEM_INTERVAL_END` when it ends a range.
struct ElementKey {
    key: u128,
    interval_end: bool,
}

/// The keys sent for a set: each value of a hash set; for an interval set nft's encoding,
/// a start key per range and an end key one past it (none when the range reaches the top
/// key), led by an end key at 0 when the first range starts above 0.
fn element_keys(set: &Set) -> impl Iterator<Item = ElementKey> + '_ {
    let start = |key| ElementKey {
        key,
        interval_end: false,
    };
    let end = |key| ElementKey {
        key,
        interval_end: true,
    };
    let interval = set.interval;
    let leading_end =
        (interval && set.elements().first().is_some_and(|r| r.first > 0)).then(|| end(0));
    let top = set.key.max();
    leading_end
        .into_iter()
        .chain(set.elements().iter().flat_map(move |range| {
            let range_end = (interval && range.last < top).then(|| end(range.last + 1));
            std::iter::once(start(range.first)).chain(range_end)
        }))
}

/// The NEWSETELEM messages that fill `set` (none for an empty set). The element list is
/// laid out here byte by byte: building one attribute tree per element through the typed
/// messages cost ~150 ms for 100,000 elements, this costs a few.
pub fn new_set_elements<'a>(
    table: &'a str,
    set: &'a Set,
    set_id: u32,
) -> impl Iterator<Item = NfTablesMessage> + 'a {
    let per_message = (MAX_ELEMENT_BYTES / element_size(set.key)).max(1);
    let mut keys = element_keys(set).peekable();
    // Made one at a time, so only one message's elements exist besides the batch bytes.
    std::iter::from_fn(move || {
        keys.peek()?;
        let mut elements = Vec::with_capacity(per_message * element_size(set.key));
        for element in keys.by_ref().take(per_message) {
            push_element(&mut elements, set.key, &element);
        }
        Some(NfTablesMessage::Other {
            message_type: NFT_MSG_NEWSETELEM,
            attributes: vec![
                string_nla(attr::SET_ELEM_LIST_TABLE, table),
                string_nla(attr::SET_ELEM_LIST_SET, &set.name),
                u32_nla(attr::SET_ELEM_LIST_SET_ID, set_id),
                DefaultNla::new(attr::SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, elements),
            ],
        })
    })
}

const NFT_MSG_NEWSETELEM: u8 = 12;

/// Appends one attribute header (length covers header and value, padding excluded).
fn push_nla_header(out: &mut Vec<u8>, kind: u16, value_len: usize) {
    out.extend_from_slice(&((4 + value_len) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
}

/// `NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE key }, [NFTA_SET_ELEM_FLAGS] }`
fn push_element(out: &mut Vec<u8>, key_type: KeyType, element: &ElementKey) {
    let key_len = key_type.byte_len();
    let padded_key = key_len.div_ceil(4) * 4;
    let data_nla = 4 + padded_key;
    let key_nla = 4 + data_nla;
    let flags_nla = if element.interval_end { 8 } else { 0 };
    push_nla_header(out, attr::LIST_ELEM | NLA_F_NESTED, key_nla + flags_nla);
    push_nla_header(out, attr::SET_ELEM_KEY | NLA_F_NESTED, data_nla);
    push_nla_header(out, attr::DATA_VALUE, key_len);
    out.extend_from_slice(&key_type.encode(element.key));
    out.resize(out.len() + padded_key - key_len, 0);
    if element.interval_end {
        push_nla_header(out, attr::SET_ELEM_FLAGS, 4);
        out.extend_from_slice(&attr::SET_ELEM_INTERVAL_END.to_be_bytes());
    }
}

fn string_nla(kind: u16, value: &str) -> DefaultNla {
    let mut bytes = value.as_bytes().to_vec();
    bytes.push(0);
    DefaultNla::new(kind, bytes)
}

/// Upper bound of one encoded element: list entry, key nest, key value, flags.
fn element_size(key: KeyType) -> usize {
    4 + 4 + 4 + key.byte_len().div_ceil(4) * 4 + 8
}

pub fn new_chain(table: &str, chain: &Chain) -> NfTablesMessage {
    let mut attributes = vec![
        ChainAttribute::Table(table.to_owned()),
        ChainAttribute::Name(chain.name.clone()),
    ];
    if let Some(BaseChain {
        chain_type,
        hook,
        priority,
        policy,
    }) = &chain.base
    {
        attributes.push(ChainAttribute::Hook(vec![
            HookAttribute::Number(HookNumber::Inet(hook.number().into())),
            // The kernel reads the priority as a signed 32-bit number.
            HookAttribute::Priority(*priority as u32),
        ]));
        attributes.push(ChainAttribute::Policy(match policy {
            Policy::Accept => 1,
            Policy::Drop => 0,
        }));
        attributes.push(ChainAttribute::Type(chain_type.name().to_owned()));
    }
    NfTablesMessage::NewChain(ChainMessage { attributes })
}

/// A NEWRULE message; `set_id` gives the batch id of a set created in the same batch.
pub fn new_rule(
    table: &str,
    chain: &str,
    rule: &Rule,
    set_id: impl Fn(&str) -> Option<u32>,
) -> NfTablesMessage {
    NfTablesMessage::NewRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(table.to_owned()),
            RuleAttribute::Chain(chain.to_owned()),
            RuleAttribute::Expressions(
                rule.exprs
                    .iter()
                    .map(|expr| expression(expr, &set_id))
                    .collect(),
            ),
        ],
    })
}

fn reg(register: Register) -> netlink_packet_netfilter::nftables::Register {
    register.0.into()
}

fn u32_nla(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

fn expression(
    expr: &Expr,
    set_id: &impl Fn(&str) -> Option<u32>,
) -> ListAttribute<ExpressionAttribute> {
    let other = |name: &str, attributes: Vec<DefaultNla>| Expressions::Other {
        expression_type: name.to_owned(),
        attributes,
    };
    let expressions = match expr {
        Expr::Meta { key, dreg } => Expressions::Meta(vec![
            Meta::DestinationRegister(reg(*dreg)),
            Meta::Key(key.number().into()),
        ]),
        Expr::Cmp { sreg, op, data } => Expressions::Cmp(vec![
            Cmp::SourceRegister(reg(*sreg)),
            Cmp::Op(op.number().into()),
            Cmp::Data(DataAttribute::Value(data.clone())),
        ]),
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => Expressions::Payload(vec![
            Payload::DestinationRegister(reg(*dreg)),
            Payload::Base(base.number()),
            Payload::Offset(*offset),
            Payload::Len(*len),
        ]),
        Expr::Bitwise {
            sreg,
            dreg,
            len,
            mask,
            xor,
        } => Expressions::Bitwise(vec![
            Bitwise::SourceRegister(reg(*sreg)),
            Bitwise::DestinationRegister(reg(*dreg)),
            Bitwise::Length(*len),
            Bitwise::Mask(DataAttribute::Value(mask.clone())),
            Bitwise::Xor(DataAttribute::Value(xor.clone())),
        ]),
        Expr::Fib {
            flags,
            result,
            dreg,
        } => other(
            "fib",
            vec![
                u32_nla(attr::FIB_DREG, dreg.0),
                u32_nla(attr::FIB_RESULT, result.number()),
                u32_nla(attr::FIB_FLAGS, *flags),
            ],
        ),
        Expr::Lookup { set, sreg, invert } => {
            let mut attributes = vec![Lookup::Set(set.clone()), Lookup::SourceRegister(reg(*sreg))];
            if let Some(id) = set_id(set) {
                attributes.push(Lookup::SetId(id));
            }
            if *invert {
                attributes.push(Lookup::Flags(attr::LOOKUP_F_INV));
            }
            Expressions::Lookup(attributes)
        }
        Expr::Immediate { dreg, data } => Expressions::Immediate(vec![
            Immediate::DestinationRegister(reg(*dreg)),
            Immediate::Data(match data {
                ImmediateData::Value(bytes) => DataAttribute::Value(bytes.clone()),
                ImmediateData::Verdict(verdict) => {
                    DataAttribute::Verdict(verdict_attributes(verdict))
                }
            }),
        ]),
        Expr::Redir {
            reg_proto_min,
            flags,
        } => {
            let mut attributes = Vec::new();
            if let Some(register) = reg_proto_min {
                attributes.push(u32_nla(attr::REDIR_REG_PROTO_MIN, register.0));
            }
            if *flags != 0 {
                attributes.push(u32_nla(attr::REDIR_FLAGS, *flags));
            }
            other("redir", attributes)
        }
        Expr::Counter => other("counter", Vec::new()),
        Expr::Other { name, data } => other(name, raw_attributes(data)),
    };
    expressions.into()
}

/// Splits raw attribute bytes back into attributes, so an unmodelled expression read from
/// the kernel can be sent again unchanged.
fn raw_attributes(data: &[u8]) -> Vec<DefaultNla> {
    use netlink_packet_core::{NlasIterator, Parseable};
    NlasIterator::new(data)
        .filter_map(|nla| nla.ok().and_then(|nla| DefaultNla::parse(&nla).ok()))
        .collect()
}

fn verdict_attributes(verdict: &Verdict) -> Vec<VerdictAttribute> {
    match verdict {
        Verdict::Accept => vec![VerdictAttribute::Code(VerdictCode::Other(1))],
        Verdict::Drop => vec![VerdictAttribute::Code(VerdictCode::Other(0))],
        Verdict::Continue => vec![VerdictAttribute::Code(VerdictCode::Continue)],
        Verdict::Return => vec![VerdictAttribute::Code(VerdictCode::Return)],
        Verdict::Jump(chain) => vec![
            VerdictAttribute::Code(VerdictCode::Jump),
            VerdictAttribute::Chain(chain.clone()),
        ],
        Verdict::Goto(chain) => vec![
            VerdictAttribute::Code(VerdictCode::Goto),
            VerdictAttribute::Chain(chain.clone()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyRange;

    fn keys(set: &Set) -> Vec<(u128, bool)> {
        element_keys(set).map(|k| (k.key, k.interval_end)).collect()
    }

    #[test]
    fn interval_keys_follow_nft() {
        // nft --debug=netlink: 0 [end], 10.0.0.0, 11.0.0.0 [end], ..., 255.255.255.0 (no end)
        let set = Set::new(
            "s",
            KeyType::Ipv4Addr,
            [
                KeyRange {
                    first: 0x0a00_0000,
                    last: 0x0aff_ffff,
                },
                KeyRange::single(0xa9fe_aa02),
                KeyRange {
                    first: 0xffff_ff00,
                    last: 0xffff_ffff,
                },
            ],
        );
        assert_eq!(
            keys(&set),
            vec![
                (0, true),
                (0x0a00_0000, false),
                (0x0b00_0000, true),
                (0xa9fe_aa02, false),
                (0xa9fe_aa03, true),
                (0xffff_ff00, false),
            ]
        );
    }

    #[test]
    fn hand_laid_elements_parse_as_the_typed_crate_reads_them() {
        use netlink_packet_core::{Emitable, ParseableParametrized};
        use netlink_packet_netfilter::nftables::{
            DataAttribute, SetElementAttribute, SetElementFlags, SetElementList,
        };
        let set = Set::new(
            "ports",
            KeyType::InetService,
            [
                KeyRange {
                    first: 1000,
                    last: 2000,
                },
                KeyRange::single(22),
            ],
        );
        let messages: Vec<_> = new_set_elements("t", &set, 7).collect();
        let [message] = messages.try_into().unwrap();
        let mut bytes = vec![0; message.buffer_len()];
        message.emit(&mut bytes);
        let parsed = NfTablesMessage::parse_with_param(bytes.as_slice(), 12).unwrap();
        let NfTablesMessage::NewSetElement(parsed) = parsed else {
            panic!("{parsed:?}")
        };
        let mut seen = Vec::new();
        for list in &parsed.attributes {
            match list {
                SetElementList::Table(t) => assert_eq!(t, "t"),
                SetElementList::Set(s) => assert_eq!(s, "ports"),
                SetElementList::SetId(id) => assert_eq!(*id, 7),
                SetElementList::Elements(elements) => {
                    for element in elements {
                        let ListAttribute::Element(attributes) = element else {
                            panic!()
                        };
                        let mut key = None;
                        let mut end = false;
                        for a in attributes {
                            match a {
                                SetElementAttribute::Key(DataAttribute::Value(v)) => {
                                    key = Some(u16::from_be_bytes([v[0], v[1]]))
                                }
                                SetElementAttribute::Flags(f) => {
                                    end = f.contains(SetElementFlags::IntervalEnd)
                                }
                                other => panic!("{other:?}"),
                            }
                        }
                        seen.push((key.unwrap(), end));
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                (0, true),
                (22, false),
                (23, true),
                (1000, false),
                (2001, true)
            ]
        );
    }

    #[test]
    fn big_sets_split_into_messages_under_the_attribute_limit() {
        let set = Set::new(
            "s",
            KeyType::Ipv6Addr,
            (0..10_000u128).map(|i| KeyRange::single(i * 7)),
        );
        let messages: Vec<_> = new_set_elements("t", &set, 1).collect();
        assert!(messages.len() > 1);
        for message in &messages {
            use netlink_packet_core::Emitable;
            assert!(message.buffer_len() < 65_535);
        }
    }
}
