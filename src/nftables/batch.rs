//! A transaction: `NFNL_MSG_BATCH_BEGIN` (with the generation id it was planned on), the
//! change messages, `NFNL_MSG_BATCH_END`, serialized as they are added (a 100,000-element
//! set costs its bytes, not a tree of attribute values). Each change asks for an ack, and
//! the batch remembers what each sequence number was, so an error names its message.

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, NfTablesMessage, RuleAttribute, RuleMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::encode;
use super::model::Table;

/// `NFNL_SUBSYS_NFTABLES`: the batch begin names the subsystem the batch is for.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u8 = 16;
const NFNL_MSG_BATCH_END: u8 = 17;
/// `NFNL_BATCH_GENID`: refuse the batch (ERESTART) if the ruleset changed since this id.
const NFNL_BATCH_GENID: u16 = 1;

/// Address families of nf_tables tables (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFamily {
    Inet,
    Ipv4,
    Ipv6,
}

impl TableFamily {
    pub(crate) fn proto(self) -> NetfilterProtoFamily {
        match self {
            TableFamily::Inet => NetfilterProtoFamily::Inet,
            TableFamily::Ipv4 => NetfilterProtoFamily::IPv4,
            TableFamily::Ipv6 => NetfilterProtoFamily::IPv6,
        }
    }

    pub fn nft_name(self) -> &'static str {
        match self {
            TableFamily::Inet => "inet",
            TableFamily::Ipv4 => "ip",
            TableFamily::Ipv6 => "ip6",
        }
    }
}

/// Serializes one netlink message carrying a netfilter message into `out`.
pub(crate) fn serialize_into(
    out: &mut Vec<u8>,
    flags: u16,
    sequence_number: u32,
    header: NetfilterHeader,
    inner: NetfilterMessageInner,
) {
    let mut nl_header = NetlinkHeader::default();
    nl_header.flags = flags;
    nl_header.sequence_number = sequence_number;
    let mut message = NetlinkMessage::new(
        nl_header,
        NetlinkPayload::InnerMessage(NetfilterMessage::new(header, inner)),
    );
    message.finalize();
    let start = out.len();
    out.resize(start + message.buffer_len(), 0);
    message.serialize(&mut out[start..]);
}

/// A batch under construction. Messages are numbered from `first_seq`.
#[derive(Debug)]
pub struct Batch {
    bytes: Vec<u8>,
    begin_seq: u32,
    next_seq: u32,
    /// (sequence number, description) of each change message, in order.
    messages: Vec<(u32, String)>,
    next_set_id: u32,
    finished: bool,
}

impl Batch {
    /// Starts a batch that the kernel refuses if the ruleset generation is not `genid`.
    pub fn new(genid: u32, first_seq: u32) -> Batch {
        Batch::begin(Some(genid), first_seq)
    }

    /// Starts a batch applied whatever the generation: for changes planned on no read
    /// (deleting a table by name), which another writer cannot make stale.
    pub fn unguarded(first_seq: u32) -> Batch {
        Batch::begin(None, first_seq)
    }

    fn begin(genid: Option<u32>, first_seq: u32) -> Batch {
        let mut bytes = Vec::new();
        serialize_into(
            &mut bytes,
            NLM_F_REQUEST,
            first_seq,
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
            NetfilterMessageInner::None(ControlMessage::Other {
                message_type: NFNL_MSG_BATCH_BEGIN,
                attributes: genid
                    .map(|genid| DefaultNla::new(NFNL_BATCH_GENID, genid.to_be_bytes().to_vec()))
                    .into_iter()
                    .collect(),
            }),
        );
        Batch {
            bytes,
            begin_seq: first_seq,
            next_seq: first_seq.wrapping_add(1),
            messages: Vec::new(),
            next_set_id: 1,
            finished: false,
        }
    }

    /// Adds one change message; `description` is what an error about it will say.
    pub fn push(
        &mut self,
        family: TableFamily,
        extra_flags: u16,
        message: NfTablesMessage,
        description: impl Into<String>,
    ) {
        assert!(!self.finished, "batch already finished");
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        serialize_into(
            &mut self.bytes,
            NLM_F_REQUEST | NLM_F_ACK | extra_flags,
            seq,
            NetfilterHeader::new(family.proto(), 0, 0),
            NetfilterMessageInner::NfTables(message),
        );
        self.messages.push((seq, description.into()));
    }

    /// Deletes a table with everything in it.
    pub fn delete_table(&mut self, family: TableFamily, name: &str) {
        self.push(
            family,
            0,
            NfTablesMessage::DeleteTable(encode::table_by_name(name)),
            format!("delete table {} {name}", family.nft_name()),
        );
    }

    /// Creates `table` with its sets, elements, chains and rules.
    pub fn add_table(&mut self, table: &Table) {
        let family = TableFamily::Inet;
        let name = &table.name;
        self.push(
            family,
            NLM_F_CREATE,
            encode::new_table(name),
            format!("add table inet {name}"),
        );
        let mut set_ids = Vec::new();
        for set in &table.sets {
            let id = self.next_set_id;
            self.next_set_id += 1;
            set_ids.push((set.name.clone(), id));
            self.push(
                family,
                NLM_F_CREATE,
                encode::new_set(name, set, id),
                format!(
                    "add set inet {name} {} ({:?}{})",
                    set.name,
                    set.key,
                    if set.interval { ", interval" } else { "" }
                ),
            );
            for (i, message) in encode::new_set_elements(name, set, id).enumerate() {
                self.push(
                    family,
                    NLM_F_CREATE,
                    message,
                    format!(
                        "add elements to set inet {name} {} (part {})",
                        set.name,
                        i + 1
                    ),
                );
            }
        }
        for chain in &table.chains {
            self.push(
                family,
                NLM_F_CREATE,
                encode::new_chain(name, chain),
                format!("add chain inet {name} {}", chain.name),
            );
        }
        let set_id = |set: &str| {
            set_ids
                .iter()
                .find(|(name, _)| name == set)
                .map(|(_, id)| *id)
        };
        for chain in &table.chains {
            for (i, rule) in chain.rules.iter().enumerate() {
                self.push(
                    family,
                    NLM_F_CREATE | NLM_F_APPEND,
                    encode::new_rule(name, &chain.name, rule, set_id),
                    format!("add rule inet {name} {} (rule {})", chain.name, i + 1),
                );
            }
        }
    }

    /// Deletes one rule by handle (e.g. an iptables-nft jump in `ip nat`).
    pub fn delete_rule(&mut self, family: TableFamily, table: &str, chain: &str, handle: u64) {
        self.push(
            family,
            0,
            NfTablesMessage::DeleteRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(table.to_owned()),
                    RuleAttribute::Chain(chain.to_owned()),
                    RuleAttribute::Handle(handle),
                ],
            }),
            format!(
                "delete rule {} {table} {chain} handle {handle}",
                family.nft_name()
            ),
        );
    }

    /// Deletes an (empty) chain by handle.
    pub fn delete_chain(&mut self, family: TableFamily, table: &str, handle: u64) {
        self.push(
            family,
            0,
            NfTablesMessage::DeleteChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(table.to_owned()),
                    ChainAttribute::Handle(handle),
                ],
            }),
            format!("delete chain {} {table} handle {handle}", family.nft_name()),
        );
    }

    /// Ends the batch and returns what to send.
    pub fn finish(mut self) -> FinishedBatch {
        let end_seq = self.next_seq;
        serialize_into(
            &mut self.bytes,
            NLM_F_REQUEST,
            end_seq,
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
            NetfilterMessageInner::None(ControlMessage::Other {
                message_type: NFNL_MSG_BATCH_END,
                attributes: Vec::new(),
            }),
        );
        self.finished = true;
        FinishedBatch {
            bytes: self.bytes,
            begin_seq: self.begin_seq,
            end_seq,
            messages: self.messages,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// A complete batch, ready to send in one `sendmsg`.
#[derive(Debug)]
pub struct FinishedBatch {
    pub bytes: Vec<u8>,
    pub begin_seq: u32,
    pub end_seq: u32,
    /// (sequence number, description) of each change message.
    pub messages: Vec<(u32, String)>,
}

impl FinishedBatch {
    pub fn describe(&self, seq: u32) -> String {
        if seq == self.begin_seq {
            return "the batch".to_owned();
        }
        self.messages
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| format!("message #{seq}"))
    }
}
