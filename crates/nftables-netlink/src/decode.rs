//! Decoding: dumped nf_tables messages back into the model. Only the fields the model
//! holds are read; anything unexpected in what we model is a malformed reply.

use netlink_packet_core::{DefaultNla, Emitable, Nla, NlasIterator};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook as HookAttribute, Immediate, ListAttribute, Lookup, Meta, Payload, RuleAttribute,
    RuleMessage, SetAttribute, SetFlags, SetMessage, Verdict as VerdictCode, VerdictAttribute,
};

use super::encode::attr;
use super::error::NftError;
use super::model::{
    BaseChain, ChainType, CmpOp, CounterValues, Expr, FibResult, Hook, ImmediateData, KeyRange,
    KeyType, MetaKey, PayloadBase, Policy, Register, Rule, Set, Verdict,
};

fn malformed(what: impl Into<String>) -> NftError {
    NftError::MalformedReply(what.into())
}

/// A chain as dumped: where it lives and its base-chain settings (rules come separately).
#[derive(Debug, Clone)]
pub struct DumpedChain {
    pub table: String,
    pub name: String,
    pub handle: u64,
    pub base: Option<BaseChain>,
}

pub fn chain(message: &ChainMessage) -> Result<DumpedChain, NftError> {
    let mut table = None;
    let mut name = None;
    let mut handle = 0;
    let (mut hook, mut priority, mut policy, mut chain_type) = (None, None, None, None);
    for attribute in &message.attributes {
        match attribute {
            ChainAttribute::Table(t) => table = Some(t.clone()),
            ChainAttribute::Name(n) => name = Some(n.clone()),
            ChainAttribute::Handle(h) => handle = *h,
            ChainAttribute::Hook(hooks) => {
                for h in hooks {
                    match h {
                        HookAttribute::Number(number) => {
                            hook = Some(Hook::from_number(u32::from(*number)))
                        }
                        HookAttribute::Priority(p) => priority = Some(*p as i32),
                        _ => {}
                    }
                }
            }
            ChainAttribute::Policy(p) => {
                policy = Some(match p {
                    1 => Policy::Accept,
                    0 => Policy::Drop,
                    other => return Err(malformed(format!("chain policy {other}"))),
                })
            }
            ChainAttribute::Type(t) => chain_type = Some(ChainType::from_name(t)),
            _ => {}
        }
    }
    let name = name.ok_or_else(|| malformed("chain without a name"))?;
    let base = match (hook, priority, chain_type) {
        (Some(hook), Some(priority), Some(chain_type)) => Some(BaseChain {
            chain_type,
            hook,
            priority,
            policy: policy.unwrap_or(Policy::Accept),
        }),
        (None, _, _) => None,
        _ => {
            return Err(malformed(format!(
                "base chain {name} without type or priority"
            )));
        }
    };
    Ok(DumpedChain {
        table: table.ok_or_else(|| malformed("chain without a table"))?,
        name,
        handle,
        base,
    })
}

/// A rule as dumped, with its handle (for deleting it by handle) and what its counters
/// have counted (kept out of `rule`, so counts never make rules differ).
#[derive(Debug, Clone)]
pub struct DumpedRule {
    pub table: String,
    pub chain: String,
    pub handle: u64,
    pub rule: Rule,
    /// The values of the rule's `counter` expressions, in the rule's order.
    pub counters: Vec<CounterValues>,
    /// `NFTA_RULE_USERDATA` (nft keeps a rule's comment there). This crate writes none, so
    /// in our table any is foreign; iptables-nft rules carry comments, so it is kept here
    /// and judged by the reader of the table rather than refused for every table.
    pub userdata: Option<Vec<u8>>,
}

pub fn rule(message: &RuleMessage) -> Result<DumpedRule, NftError> {
    let mut table = None;
    let mut chain = None;
    let mut handle = 0;
    let mut exprs = Vec::new();
    let mut counters = Vec::new();
    let mut userdata = None;
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Table(t) => table = Some(t.clone()),
            RuleAttribute::UserData(bytes) => userdata = Some(bytes.clone()),
            RuleAttribute::Chain(c) => chain = Some(c.clone()),
            RuleAttribute::Handle(h) => handle = *h,
            RuleAttribute::Expressions(list) => {
                for element in list {
                    let expr = expression(element)?;
                    if expr == Expr::Counter {
                        counters.push(counter_values(element)?);
                    }
                    exprs.push(expr);
                }
            }
            _ => {}
        }
    }
    Ok(DumpedRule {
        table: table.ok_or_else(|| malformed("rule without a table"))?,
        chain: chain.ok_or_else(|| malformed("rule without a chain"))?,
        handle,
        rule: Rule::new(exprs),
        counters,
        userdata,
    })
}

/// What a `counter` expression has counted: `NFTA_COUNTER_BYTES` and
/// `NFTA_COUNTER_PACKETS`, 64-bit big-endian (a counter without data has counted nothing).
fn counter_values(element: &ListAttribute<ExpressionAttribute>) -> Result<CounterValues, NftError> {
    let mut values = CounterValues::default();
    let ListAttribute::Element(attributes) = element else {
        return Ok(values);
    };
    for attribute in attributes {
        let ExpressionAttribute::Data(Expressions::Other { attributes, .. }) = attribute else {
            continue;
        };
        for nla in attributes {
            let number = || -> Result<u64, NftError> {
                let bytes = nla_bytes(nla);
                let array: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    malformed(format!(
                        "counter value of {} bytes, expected 8",
                        bytes.len()
                    ))
                })?;
                Ok(u64::from_be_bytes(array))
            };
            match nla_kind(nla) {
                attr::COUNTER_BYTES => values.bytes = number()?,
                attr::COUNTER_PACKETS => values.packets = number()?,
                _ => {}
            }
        }
    }
    Ok(values)
}

fn reg(register: &netlink_packet_netfilter::nftables::Register) -> Register {
    Register(u32::from(*register))
}

fn value(data: &DataAttribute, what: &str) -> Result<Vec<u8>, NftError> {
    match data {
        DataAttribute::Value(bytes) => Ok(bytes.clone()),
        other => Err(malformed(format!(
            "{what}: expected a value, got {other:?}"
        ))),
    }
}

fn nla_bytes(nla: &DefaultNla) -> Vec<u8> {
    let mut bytes = vec![0; nla.value_len()];
    nla.emit_value(&mut bytes);
    bytes
}

fn nla_u32(nla: &DefaultNla, what: &str) -> Result<u32, NftError> {
    let bytes = nla_bytes(nla);
    let array: [u8; 4] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| malformed(format!("{what}: {} bytes, expected 4", bytes.len())))?;
    Ok(u32::from_be_bytes(array))
}

/// The attribute number without the nested/byte-order flag bits.
fn nla_kind(nla: &DefaultNla) -> u16 {
    nla.kind() & 0x3fff
}

fn expression(element: &ListAttribute<ExpressionAttribute>) -> Result<Expr, NftError> {
    let ListAttribute::Element(attributes) = element else {
        return Err(malformed("expression list entry is not an element"));
    };
    let mut name = None;
    let mut data = None;
    for attribute in attributes {
        match attribute {
            ExpressionAttribute::Name(n) => name = Some(n.as_str()),
            ExpressionAttribute::Data(d) => data = Some(d),
            _ => {}
        }
    }
    let name = name.ok_or_else(|| malformed("expression without a name"))?;
    let Some(data) = data else {
        // counter and a few others may come without data.
        return Ok(match name {
            "counter" => Expr::Counter,
            other => Expr::Other {
                name: other.to_owned(),
                data: Vec::new(),
            },
        });
    };
    let missing = |field: &str| malformed(format!("{name} expression without {field}"));
    Ok(match data {
        Expressions::Meta(attrs) => {
            let (mut key, mut dreg) = (None, None);
            for a in attrs {
                match a {
                    Meta::Key(k) => key = Some(MetaKey::from_number(u32::from(*k))),
                    Meta::DestinationRegister(r) => dreg = Some(reg(r)),
                    _ => {}
                }
            }
            match (key, dreg) {
                (Some(key), Some(dreg)) => Expr::Meta { key, dreg },
                // A meta *set* (sreg) is not modelled: keep it opaque.
                _ => opaque(name, data),
            }
        }
        Expressions::Cmp(attrs) => {
            let (mut sreg, mut op, mut bytes) = (None, None, None);
            for a in attrs {
                match a {
                    Cmp::SourceRegister(r) => sreg = Some(reg(r)),
                    Cmp::Op(o) => op = CmpOp::from_number(u32::from(*o)),
                    Cmp::Data(d) => bytes = Some(value(d, "cmp data")?),
                    _ => {}
                }
            }
            Expr::Cmp {
                sreg: sreg.ok_or_else(|| missing("sreg"))?,
                op: op.ok_or_else(|| missing("op"))?,
                data: bytes.ok_or_else(|| missing("data"))?,
            }
        }
        Expressions::Payload(attrs) => {
            let (mut base, mut offset, mut len, mut dreg) = (None, None, None, None);
            for a in attrs {
                match a {
                    Payload::Base(b) => base = Some(PayloadBase::from_number(*b)),
                    Payload::Offset(o) => offset = Some(*o),
                    Payload::Len(l) => len = Some(*l),
                    Payload::DestinationRegister(r) => dreg = Some(reg(r)),
                    _ => {}
                }
            }
            match (base, offset, len, dreg) {
                (Some(base), Some(offset), Some(len), Some(dreg)) => Expr::Payload {
                    base,
                    offset,
                    len,
                    dreg,
                },
                // A payload *write* (sreg): not modelled.
                _ => opaque(name, data),
            }
        }
        Expressions::Bitwise(attrs) => {
            let (mut sreg, mut dreg, mut len, mut mask, mut xor) = (None, None, None, None, None);
            for a in attrs {
                match a {
                    Bitwise::SourceRegister(r) => sreg = Some(reg(r)),
                    Bitwise::DestinationRegister(r) => dreg = Some(reg(r)),
                    Bitwise::Length(l) => len = Some(*l),
                    Bitwise::Mask(d) => mask = Some(value(d, "bitwise mask")?),
                    Bitwise::Xor(d) => xor = Some(value(d, "bitwise xor")?),
                    Bitwise::Op(op) if *op != 0 => return Ok(opaque(name, data)),
                    _ => {}
                }
            }
            Expr::Bitwise {
                sreg: sreg.ok_or_else(|| missing("sreg"))?,
                dreg: dreg.ok_or_else(|| missing("dreg"))?,
                len: len.ok_or_else(|| missing("len"))?,
                mask: mask.ok_or_else(|| missing("mask"))?,
                xor: xor.ok_or_else(|| missing("xor"))?,
            }
        }
        Expressions::Lookup(attrs) => {
            let (mut set, mut sreg, mut flags) = (None, None, 0);
            for a in attrs {
                match a {
                    Lookup::Set(s) => set = Some(s.clone()),
                    Lookup::SourceRegister(r) => sreg = Some(reg(r)),
                    Lookup::Flags(f) => flags = *f,
                    // A map lookup (dreg) is not modelled.
                    Lookup::DestinationRegister(_) => return Ok(opaque(name, data)),
                    _ => {}
                }
            }
            Expr::Lookup {
                set: set.ok_or_else(|| missing("set"))?,
                sreg: sreg.ok_or_else(|| missing("sreg"))?,
                invert: flags & attr::LOOKUP_F_INV != 0,
            }
        }
        Expressions::Immediate(attrs) => {
            let (mut dreg, mut immediate) = (None, None);
            for a in attrs {
                match a {
                    Immediate::DestinationRegister(r) => dreg = Some(reg(r)),
                    Immediate::Data(DataAttribute::Value(bytes)) => {
                        immediate = Some(ImmediateData::Value(bytes.clone()))
                    }
                    Immediate::Data(DataAttribute::Verdict(attrs)) => {
                        immediate = Some(ImmediateData::Verdict(verdict(attrs)?))
                    }
                    _ => {}
                }
            }
            Expr::Immediate {
                dreg: dreg.ok_or_else(|| missing("dreg"))?,
                data: immediate.ok_or_else(|| missing("data"))?,
            }
        }
        Expressions::Other {
            expression_type,
            attributes,
        } => match expression_type.as_str() {
            "fib" => {
                let (mut dreg, mut result, mut flags) = (None, None, None);
                for a in attributes {
                    match nla_kind(a) {
                        attr::FIB_DREG => dreg = Some(Register(nla_u32(a, "fib dreg")?)),
                        attr::FIB_RESULT => {
                            result = Some(FibResult::from_number(nla_u32(a, "fib result")?))
                        }
                        attr::FIB_FLAGS => flags = Some(nla_u32(a, "fib flags")?),
                        _ => {}
                    }
                }
                Expr::Fib {
                    flags: flags.ok_or_else(|| missing("flags"))?,
                    result: result.ok_or_else(|| missing("result"))?,
                    dreg: dreg.ok_or_else(|| missing("dreg"))?,
                }
            }
            "redir" => {
                let (mut min, mut max, mut flags) = (None, None, 0);
                for a in attributes {
                    match nla_kind(a) {
                        attr::REDIR_REG_PROTO_MIN => {
                            min = Some(Register(nla_u32(a, "redir proto_min")?))
                        }
                        attr::REDIR_REG_PROTO_MAX => {
                            max = Some(Register(nla_u32(a, "redir proto_max")?))
                        }
                        attr::REDIR_FLAGS => flags = nla_u32(a, "redir flags")?,
                        _ => {}
                    }
                }
                // The kernel reports proto_max = proto_min when only the minimum was sent.
                if max.is_some() && max != min {
                    return Ok(opaque(name, data));
                }
                Expr::Redir {
                    reg_proto_min: min,
                    flags,
                }
            }
            "counter" => Expr::Counter,
            _ => opaque(name, data),
        },
        _ => opaque(name, data),
    })
}

/// An expression kept as raw attribute bytes.
fn opaque(name: &str, data: &Expressions) -> Expr {
    let mut bytes = vec![0; data.buffer_len()];
    data.emit(&mut bytes);
    Expr::Other {
        name: name.to_owned(),
        data: bytes,
    }
}

fn verdict(attributes: &[VerdictAttribute]) -> Result<Verdict, NftError> {
    let mut code = None;
    let mut chain = None;
    for attribute in attributes {
        match attribute {
            VerdictAttribute::Code(c) => code = Some(*c),
            VerdictAttribute::Chain(c) => chain = Some(c.clone()),
            _ => {}
        }
    }
    let need_chain = || {
        chain
            .clone()
            .ok_or_else(|| malformed("jump verdict without a chain"))
    };
    Ok(
        match code.ok_or_else(|| malformed("verdict without a code"))? {
            VerdictCode::Return => Verdict::Return,
            VerdictCode::Continue => Verdict::Continue,
            VerdictCode::Jump => Verdict::Jump(need_chain()?),
            VerdictCode::Goto => Verdict::Goto(need_chain()?),
            VerdictCode::Other(1) => Verdict::Accept,
            VerdictCode::Other(0) => Verdict::Drop,
            other => return Err(malformed(format!("verdict code {other:?}"))),
        },
    )
}

/// A set as dumped, before its elements arrive.
#[derive(Debug, Clone)]
pub struct DumpedSet {
    pub table: String,
    pub name: String,
    pub key: KeyType,
    pub interval: bool,
}

pub fn set(message: &SetMessage) -> Result<DumpedSet, NftError> {
    let (mut table, mut name, mut key, mut interval) = (None, None, None, false);
    let mut key_len = None;
    for attribute in &message.attributes {
        match attribute {
            SetAttribute::Table(t) => table = Some(t.clone()),
            SetAttribute::Name(n) => name = Some(n.clone()),
            SetAttribute::KeyType(t) => key = KeyType::from_datatype(*t),
            SetAttribute::KeyLen(l) => key_len = Some(*l),
            SetAttribute::Flags(flags) => interval = flags.contains(SetFlags::Interval),
            SetAttribute::UserData(bytes) => {
                if let Some(comment) = set_comment(bytes) {
                    return Err(NftError::Unmodelled(format!(
                        "set {}: comment {comment:?}",
                        name.as_deref().unwrap_or("?")
                    )));
                }
            }
            _ => {}
        }
    }
    let name = name.ok_or_else(|| malformed("set without a name"))?;
    let unmodelled = |why: String| NftError::Unmodelled(format!("set {name}: {why}"));
    let key = key.ok_or_else(|| unmodelled("a key type not modelled".into()))?;
    if key_len != Some(key.byte_len() as u32) {
        return Err(unmodelled(format!("key length {key_len:?}")));
    }
    Ok(DumpedSet {
        table: table.ok_or_else(|| malformed("set without a table"))?,
        name,
        key,
        interval,
    })
}

/// The comment in a set's `NFTA_SET_USERDATA`, if any. The user data is libnftnl's
/// type-length-value list (a byte of type, a byte of length, the value); nft also keeps
/// display hints there (key byte order, `typeof` expressions, types 0-6), which say nothing
/// about what the set matches, so only the comment (`NFTNL_UDATA_SET_COMMENT`, 7) and types
/// newer than this crate count as content this crate does not model.
pub fn set_comment(userdata: &[u8]) -> Option<String> {
    const NFTNL_UDATA_SET_COMMENT: u8 = 7;
    let mut rest = userdata;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let Some(value) = tail.get(..len) else {
            return Some(format!("unreadable user data {userdata:02x?}"));
        };
        if *kind >= NFTNL_UDATA_SET_COMMENT {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = &tail[len..];
    }
    if rest.is_empty() {
        None
    } else {
        Some(format!("unreadable user data {userdata:02x?}"))
    }
}

/// What a rule's `NFTA_RULE_USERDATA` says, for a message: the comment
/// (`NFTNL_UDATA_RULE_COMMENT`, type 0, in libnftnl's type-length-value list) when there is
/// one, else the raw bytes.
pub fn rule_user_data_text(userdata: &[u8]) -> String {
    if let [0, len, tail @ ..] = userdata
        && let Some(value) = tail.get(..usize::from(*len))
    {
        let text = value.split(|b| *b == 0).next().unwrap_or_default();
        return format!("comment {:?}", String::from_utf8_lossy(text));
    }
    format!("user data {userdata:02x?}")
}

/// Collects dumped set elements (in whatever order the kernel gives them) into a [`Set`].
#[derive(Debug)]
pub struct SetElementCollector {
    set: DumpedSet,
    /// Range starts (or hash-set values) and interval end keys, kept apart (16 bytes a key).
    starts: Vec<u128>,
    ends: Vec<u128>,
}

impl SetElementCollector {
    pub fn new(set: DumpedSet) -> Self {
        SetElementCollector {
            set,
            starts: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Adds the elements of one dumped NEWSETELEM message body. Walked with
    /// netlink-packet-core's attribute iterator rather than netlink-packet-netfilter's
    /// parser, whose element-list parsing formats the whole buffer for every element
    /// (quadratic: minutes for 100,000 elements).
    pub fn add_raw(&mut self, body: &[u8]) -> Result<(), NftError> {
        use attr::{
            DATA_VALUE, LIST_ELEM, SET_ELEM_FLAGS as ELEM_FLAGS,
            SET_ELEM_INTERVAL_END as INTERVAL_END, SET_ELEM_KEY as ELEM_KEY,
            SET_ELEM_LIST_ELEMENTS as LIST_ELEMENTS,
        };
        /// `NFTA_SET_ELEM_*` attributes this crate never sends.
        const ELEM_DATA: u16 = 2;
        const ELEM_TIMEOUT: u16 = 4;
        const ELEM_USERDATA: u16 = 6;
        const ELEM_EXPR: u16 = 7;
        const ELEM_OBJREF: u16 = 9;
        const ELEM_KEY_END: u16 = 10;
        const ELEM_EXPRESSIONS: u16 = 11;
        let bad = |what: &str| malformed(format!("set {}: {what}", self.set.name));
        for list in NlasIterator::new(body) {
            let list = list.map_err(|e| bad(&e.to_string()))?;
            if list.kind() != LIST_ELEMENTS {
                continue;
            }
            for element in NlasIterator::new(list.value()) {
                let element = element.map_err(|e| bad(&e.to_string()))?;
                if element.kind() != LIST_ELEM {
                    continue;
                }
                let mut key = None;
                let mut end = false;
                for attribute in NlasIterator::new(element.value()) {
                    let attribute = attribute.map_err(|e| bad(&e.to_string()))?;
                    match attribute.kind() {
                        ELEM_KEY => {
                            for data in NlasIterator::new(attribute.value()) {
                                let data = data.map_err(|e| bad(&e.to_string()))?;
                                if data.kind() == DATA_VALUE {
                                    key = Some(self.set.key.decode(data.value()).ok_or_else(
                                        || {
                                            bad(&format!(
                                                "element key of {} bytes",
                                                data.value().len()
                                            ))
                                        },
                                    )?);
                                }
                            }
                        }
                        ELEM_FLAGS => {
                            let flags: [u8; 4] = attribute
                                .value()
                                .try_into()
                                .map_err(|_| bad("element flags not 4 bytes"))?;
                            end = u32::from_be_bytes(flags) & INTERVAL_END != 0;
                        }
                        // A comment (user data), an expression (a counter), a timeout...:
                        // nothing modelled, so the set is not what the plan says.
                        ELEM_KEY_END | ELEM_USERDATA | ELEM_EXPR | ELEM_EXPRESSIONS
                        | ELEM_TIMEOUT | ELEM_DATA | ELEM_OBJREF => {
                            return Err(NftError::Unmodelled(format!(
                                "set {}: an element with attribute {} (a comment, counter, \
                                 timeout, mapping or concatenation)",
                                self.set.name,
                                attribute.kind()
                            )));
                        }
                        _ => {}
                    }
                }
                let key = key.ok_or_else(|| bad("element without a key"))?;
                if end {
                    self.ends.push(key);
                } else {
                    self.starts.push(key);
                }
            }
        }
        Ok(())
    }

    /// Pairs each range start with the end key after it (end key = last + 1; no end key
    /// means the range reaches the top key). End keys with no start before them (the
    /// leading 0) are dropped.
    pub fn finish(mut self) -> Set {
        let set = self.set;
        if !set.interval {
            return Set::with_layout(
                &set.name,
                set.key,
                false,
                self.starts.into_iter().map(KeyRange::single),
            );
        }
        self.starts.sort_unstable();
        self.ends.sort_unstable();
        let mut ends = self.ends.into_iter().peekable();
        let mut ranges = Vec::with_capacity(self.starts.len());
        let mut starts = self.starts.into_iter().peekable();
        while let Some(first) = starts.next() {
            // End keys at or below this start close earlier ranges (or the leading 0).
            while ends.next_if(|end| *end <= first).is_some() {}
            let next_start = starts.peek().copied();
            let last = match ends.peek() {
                Some(end) if next_start.is_none_or(|next| *end <= next) => end - 1,
                // No end before the next start: this range runs up to it (or to the top).
                _ => next_start.map_or(set.key.max(), |next| next - 1),
            };
            ranges.push(KeyRange { first, last });
        }
        Set::with_layout(&set.name, set.key, true, ranges)
    }
}

#[cfg(test)]
mod tests {
    /// nft's own set user data (key byte order 1, then `typeof` hints) is no comment; a
    /// comment (type 7, NUL-terminated as nft writes it) is named; a cut-off list is refused.
    #[test]
    fn set_user_data_is_content_only_when_it_holds_a_comment() {
        assert_eq!(set_comment(&[]), None);
        assert_eq!(set_comment(&[0, 4, 1, 0, 0, 0]), None);
        assert_eq!(set_comment(&[0, 4, 1, 0, 0, 0, 3, 2, 9, 9]), None);
        assert_eq!(
            set_comment(&[0, 4, 1, 0, 0, 0, 7, 3, b'h', b'i', 0]).as_deref(),
            Some("hi")
        );
        assert!(set_comment(&[0, 9, 1]).unwrap().contains("unreadable"));
        assert!(set_comment(&[0]).unwrap().contains("unreadable"));
    }

    /// A rule's user data (where nft keeps its comment) is read, not dropped.
    #[test]
    fn rule_user_data_is_kept() {
        let mut message = RuleMessage {
            attributes: vec![
                RuleAttribute::Table("t".into()),
                RuleAttribute::Chain("c".into()),
            ],
        };
        assert_eq!(rule(&message).unwrap().userdata, None);
        message
            .attributes
            .push(RuleAttribute::UserData(vec![0, 2, b'x', 0]));
        assert_eq!(rule(&message).unwrap().userdata, Some(vec![0, 2, b'x', 0]));
        assert_eq!(rule_user_data_text(&[0, 2, b'x', 0]), "comment \"x\"");
        assert_eq!(rule_user_data_text(&[1, 1, 5]), "user data [01, 01, 05]");
    }
    use super::*;
    use crate::encode::new_set_elements;
    use netlink_packet_core::Emitable;
    use proptest::prelude::*;

    /// Encodes `set`'s elements as the kernel gets them, feeds them back in `order`, and
    /// collects them.
    fn through_the_encoding(set: &Set, reverse: bool) -> Set {
        let mut bodies: Vec<Vec<u8>> = new_set_elements("t", set, 1)
            .map(|message| {
                let mut bytes = vec![0; message.buffer_len()];
                message.emit(&mut bytes);
                bytes
            })
            .collect();
        if reverse {
            bodies.reverse();
        }
        let mut collector = SetElementCollector::new(DumpedSet {
            table: "t".into(),
            name: set.name.clone(),
            key: set.key,
            interval: set.interval,
        });
        for body in &bodies {
            collector.add_raw(body).unwrap();
        }
        collector.finish()
    }

    /// Two rules as the kernel dumped them (NFT_MSG_NEWRULE bodies after the nfgenmsg),
    /// captured in a throwaway namespace (`unshare -n`) from a GETRULE dump of
    /// `table inet t21 { chain output { type nat hook output priority -100;
    ///   tcp dport 22 counter packets 3 bytes 180 return
    ///   meta l4proto tcp counter packets 5000000000 bytes 123456789012 redirect to :15001 } }`
    /// loaded with `nft -f` (`nft --debug=netlink list table inet t21` shows
    /// `[ counter pkts 3 bytes 180 ]` and `[ counter pkts 5000000000 bytes 123456789012 ]`).
    const DUMPED_RULES: [&str; 2] = [
        "08000100743231000b0002006f757470757400000c0003000000000000000002100104002400010009000100\
         6d6574610000000014000200080002000000001008000100000000012c00010008000100636d7000200002\
         00080001000000000108000200000000000c0003000500010006000000340001000c0001007061796c6f61\
         64002400020008000100000000010800020000000002080003000000000208000400000000022c00010008\
         000100636d700020000200080001000000000108000200000000000c00030006000100001600002c00010\
         00c000100636f756e746572001c0002000c00010000000000000000b40c000200000000000000000330000\
         1000e000100696d6d6564696174650000001c0002000800010000000000100002000c000200080001\
         00fffffffb",
        "08000100743231000b0002006f757470757400000c00030000000000000000030c000600000000000000\
         0002d800040024000100090001006d6574610000000014000200080002000000001008000100000000012c\
         00010008000100636d700020000200080001000000000108000200000000000c0003000500010006000000\
         2c0001000c000100636f756e746572001c0002000c0001000000001cbe991a140c000200000000012a05f2\
         002c0001000e000100696d6d6564696174650000001800020008000100000000010c000200060001003a99\
         00002c0001000a00010072656469720000001c00020008000100000000010800020000000001080003000\
         0000002",
    ];

    fn dumped_rule(hex: &str) -> DumpedRule {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let message = crate::socket::parse_nftables(6, &bytes).unwrap();
        let netlink_packet_netfilter::nftables::NfTablesMessage::NewRule(message) = message else {
            panic!("{message:?}")
        };
        rule(&message).unwrap()
    }

    #[test]
    fn counter_values_decode_from_a_kernel_dump_and_stay_out_of_the_rule() {
        let [port, redirect] = DUMPED_RULES.map(dumped_rule);
        assert_eq!(
            (port.table.as_str(), port.chain.as_str()),
            ("t21", "output")
        );
        assert_eq!(
            port.counters,
            [CounterValues {
                packets: 3,
                bytes: 180
            }]
        );
        assert_eq!(
            redirect.counters,
            [CounterValues {
                packets: 5_000_000_000,
                bytes: 123_456_789_012
            }]
        );
        // The rules themselves are the model's, counts aside: equal to freshly built ones.
        let tcp = [
            Expr::meta(MetaKey::L4Proto),
            Expr::cmp(CmpOp::Eq, [crate::model::IPPROTO_TCP]),
        ];
        let mut expected = tcp.to_vec();
        expected.extend([
            Expr::payload(PayloadBase::Transport, 2, 2),
            Expr::cmp(CmpOp::Eq, 22u16.to_be_bytes()),
            Expr::Counter,
            Expr::verdict(Verdict::Return),
        ]);
        assert_eq!(port.rule, Rule::new(expected));
        let mut expected = tcp.to_vec();
        expected.push(Expr::Counter);
        expected.extend(Expr::redirect_to_port(15001));
        assert_eq!(redirect.rule, Rule::new(expected));
        assert_eq!(
            crate::text::rule_text_counted(&redirect.rule, &redirect.counters),
            "meta l4proto tcp counter packets 5000000000 bytes 123456789012 redirect to :15001"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn element_encoding_and_collection_round_trip(
            ranges in prop::collection::vec((any::<u16>(), 0u16..300), 0..400),
            singles_only in any::<bool>(),
            reverse in any::<bool>(),
        ) {
            let set = Set::new(
                "p",
                KeyType::InetService,
                ranges.into_iter().map(|(first, len)| KeyRange {
                    first: u128::from(first),
                    last: if singles_only { u128::from(first) } else { u128::from(first.saturating_add(len)) },
                }),
            );
            prop_assert_eq!(through_the_encoding(&set, reverse), set);
        }
    }
}
