//! Talking to nf_tables in the calling thread's network namespace: read a table back into
//! the model, commit a table (read, compare, replace atomically, retry on a concurrent
//! writer), delete a table, and the building blocks for other batches (migration from
//! iptables-nft: list rules with handles, delete them by handle in the same batch).

use netlink_packet_core::{DefaultNla, NlasIterator};
use netlink_packet_netfilter::nftables::{
    ChainMessage, GenAttribute, GenMessage, NfTablesMessage, NfTablesMessageType, RuleAttribute,
    RuleMessage, SetAttribute, SetElementList, SetElementMessage, SetMessage, TableAttribute,
};

use super::batch::{Batch, FinishedBatch, TableFamily};
use super::decode::{self, DumpedChain, DumpedRule, SetElementCollector};
use super::encode;
use super::error::NftError;
use super::model::{Chain, TABLE_F_OWNER, Table};
use super::socket::{DumpEnd, NfSocket, parse_nftables};

/// How many times a commit is planned from a fresh read when another writer changed the
/// ruleset in between.
pub const MAX_ATTEMPTS: u32 = 5;

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The installed table already equalled the desired one: nothing was sent.
    Unchanged,
    /// There was no table: it was created.
    Created,
    /// A different table was replaced, in one transaction.
    Replaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitReport {
    pub change: Change,
    /// Attempts made (1 unless a concurrent writer forced a fresh read).
    pub attempts: u32,
}

/// What deleting a table did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    WasAbsent,
}

/// A table's own attributes, as `get table` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableInfo {
    /// `NFTA_TABLE_FLAGS`: dormant, owner.
    pub flags: u32,
    /// `NFTA_TABLE_OWNER`: the netlink port id of the socket owning the table (`flags
    /// owner`), which for the first socket of a process is its pid.
    pub owner: Option<u32>,
}

/// The outcome of sending one batch planned on a generation id.
#[derive(Debug)]
pub enum BatchOutcome {
    Committed,
    /// The ruleset changed since the generation id: nothing was applied; read again.
    Stale,
}

/// A netlink connection to nf_tables in the namespace of the thread that opened it.
pub struct NftConnection {
    socket: NfSocket,
}

/// A consistent read: the table (if present) as of generation `genid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub genid: u32,
    pub table: Option<Table>,
}

impl NftConnection {
    pub fn open() -> Result<NftConnection, NftError> {
        Ok(NftConnection {
            socket: NfSocket::open()?,
        })
    }

    /// The ruleset generation id (`NFT_MSG_GETGEN`).
    pub fn generation(&mut self) -> Result<u32, NftError> {
        let what = "get the ruleset generation";
        let reply = self
            .socket
            .request(
                TableFamily::Inet,
                NfTablesMessage::GetGen(GenMessage {
                    attributes: Vec::new(),
                }),
                what,
            )?
            .map_err(|errno| NftError::from_errno(what, errno, false))?;
        let NfTablesMessage::NewGen(GenMessage { attributes }) = reply else {
            return Err(NftError::MalformedReply(format!("{what}: {reply:?}")));
        };
        attributes
            .iter()
            .find_map(|a| match a {
                GenAttribute::Id(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| NftError::MalformedReply(format!("{what}: no generation id")))
    }

    /// Reads table `inet NAME` consistently: if the ruleset changes while dumping, reads
    /// again (up to [`MAX_ATTEMPTS`] times).
    pub fn read_table(&mut self, name: &str) -> Result<Snapshot, NftError> {
        for _ in 0..MAX_ATTEMPTS {
            let genid = self.generation()?;
            match self.dump_table(name)? {
                // Absent: nothing to be inconsistent with (a commit's batch is guarded by
                // the generation id anyway).
                Some(None) => return Ok(Snapshot { genid, table: None }),
                Some(Some(table)) if self.generation()? == genid => {
                    return Ok(Snapshot {
                        genid,
                        table: Some(table),
                    });
                }
                _ => {}
            }
        }
        Err(NftError::GenerationChanged {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Dumps the table; `Ok(None)` when a concurrent change interrupted a dump or removed
    /// the table (or a set) half-way.
    fn dump_table(&mut self, name: &str) -> Result<Option<Option<Table>>, NftError> {
        match self.dump_table_once(name) {
            Err(NftError::Refused { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(None)
            }
            other => other,
        }
    }

    /// Table `inet NAME`'s own attributes (flags, owner), without its contents; `None`
    /// when there is no such table. One request, whatever the table holds.
    pub fn table_info(&mut self, name: &str) -> Result<Option<TableInfo>, NftError> {
        let what = format!("get table inet {name}");
        let reply = self.socket.request(
            TableFamily::Inet,
            NfTablesMessage::GetTable(encode::table_by_name(name)),
            &what,
        )?;
        let message = match reply {
            Ok(message) => message,
            Err(libc::ENOENT) => return Ok(None),
            Err(errno) => return Err(NftError::from_errno(&what, errno, false)),
        };
        let mut info = TableInfo::default();
        if let NfTablesMessage::NewTable(table) = message {
            for attribute in &table.attributes {
                match attribute {
                    TableAttribute::Flags(flags) => info.flags = flags.bits(),
                    TableAttribute::Owner(portid) => info.owner = Some(*portid),
                    _ => {}
                }
            }
        }
        Ok(Some(info))
    }

    #[allow(clippy::type_complexity)]
    fn dump_table_once(&mut self, name: &str) -> Result<Option<Option<Table>>, NftError> {
        let Some(info) = self.table_info(name)? else {
            return Ok(Some(None));
        };
        self.refuse_objects(name)?;

        let Some(chains) = self.dump_chains(TableFamily::Inet, Some(name))? else {
            return Ok(None);
        };
        let Some(rules) = self.dump_rules(TableFamily::Inet, name)? else {
            return Ok(None);
        };
        let mut chains: Vec<Chain> = chains
            .into_iter()
            .map(|c| Chain {
                name: c.name,
                base: c.base,
                rules: Vec::new(),
            })
            .collect();
        for dumped in rules {
            let chain = chains
                .iter_mut()
                .find(|c| c.name == dumped.chain)
                .ok_or_else(|| {
                    NftError::MalformedReply(format!("rule in unknown chain {}", dumped.chain))
                })?;
            chain.rules.push(dumped.rule);
        }

        let mut dumped_sets = Vec::new();
        let what = format!("list sets of inet {name}");
        let end = self.socket.dump(
            TableFamily::Inet,
            NfTablesMessage::GetSet(SetMessage {
                attributes: vec![SetAttribute::Table(name.to_owned())],
            }),
            &what,
            |nft_type, body| {
                if let NfTablesMessage::NewSet(set) =
                    parse_if(nft_type, body, NfTablesMessageType::NewSet)?
                {
                    let set = decode::set(&set)?;
                    if set.table == name {
                        dumped_sets.push(set);
                    }
                }
                Ok(())
            },
        )?;
        if !complete(end, &what)? {
            return Ok(None);
        }
        let mut sets = Vec::new();
        for dumped in dumped_sets {
            let what = format!("list elements of set inet {name} {}", dumped.name);
            let request = NfTablesMessage::GetSetElement(SetElementMessage {
                attributes: vec![
                    SetElementList::Table(name.to_owned()),
                    SetElementList::Set(dumped.name.clone()),
                ],
            });
            let mut collector = SetElementCollector::new(dumped);
            let end = self
                .socket
                .dump(TableFamily::Inet, request, &what, |nft_type, body| {
                    if nft_type == u8::from(NfTablesMessageType::NewSetElement) {
                        collector.add_raw(body)?;
                    }
                    Ok(())
                })?;
            if !complete(end, &what)? {
                return Ok(None);
            }
            sets.push(collector.finish());
        }
        Ok(Some(Some(
            Table::new(name, sets, chains).with_flags(info.flags),
        )))
    }

    /// Fails with [`NftError::Unmodelled`] when table `inet NAME` holds stateful objects
    /// (named counters, quotas, limits...): meshinit writes none, so any is not ours, and
    /// a read that skipped them would call the table what the plan says.
    fn refuse_objects(&mut self, name: &str) -> Result<(), NftError> {
        const NFTA_OBJ_TABLE: u16 = 1;
        const NFTA_OBJ_NAME: u16 = 2;
        const NFT_MSG_NEWOBJ: u8 = 18;
        let what = format!("list objects of inet {name}");
        let mut found = Vec::new();
        let end = self.socket.dump(
            TableFamily::Inet,
            NfTablesMessage::GetObject(vec![DefaultNla::new(
                NFTA_OBJ_TABLE,
                format!("{name}\0").into_bytes(),
            )]),
            &what,
            |nft_type, body| {
                if nft_type != NFT_MSG_NEWOBJ {
                    return Ok(());
                }
                let (mut table, mut object) = (None, None);
                for nla in NlasIterator::new(body).flatten() {
                    let text = || {
                        String::from_utf8_lossy(
                            nla.value().split(|b| *b == 0).next().unwrap_or_default(),
                        )
                        .into_owned()
                    };
                    match nla.kind() & 0x3fff {
                        NFTA_OBJ_TABLE => table = Some(text()),
                        NFTA_OBJ_NAME => object = Some(text()),
                        _ => {}
                    }
                }
                if table.as_deref() == Some(name) {
                    found.push(object.unwrap_or_default());
                }
                Ok(())
            },
        )?;
        match end {
            // An interrupted dump is told apart by the generation check after the read.
            Ok(_) => {}
            // A kernel without stateful objects has none.
            Err(libc::EOPNOTSUPP) => {}
            Err(errno) => return Err(NftError::from_errno(&what, errno, false)),
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(NftError::Unmodelled(format!(
                "named object(s) {} in table inet {name}",
                found.join(", ")
            )))
        }
    }

    /// Chains of `family` (of one table when given), with handles and base-chain settings;
    /// `None` when the dump was interrupted.
    pub fn dump_chains(
        &mut self,
        family: TableFamily,
        table: Option<&str>,
    ) -> Result<Option<Vec<DumpedChain>>, NftError> {
        let what = format!("list chains of {}", family.nft_name());
        let mut chains = Vec::new();
        let end = self.socket.dump(
            family,
            NfTablesMessage::GetChain(ChainMessage {
                attributes: Vec::new(),
            }),
            &what,
            |nft_type, body| {
                if let NfTablesMessage::NewChain(chain) =
                    parse_if(nft_type, body, NfTablesMessageType::NewChain)?
                {
                    let chain = decode::chain(&chain)?;
                    if table.is_none_or(|t| t == chain.table) {
                        chains.push(chain);
                    }
                }
                Ok(())
            },
        )?;
        Ok(complete(end, &what)?.then_some(chains))
    }

    /// Rules of one table, in chain order, with handles; `None` when interrupted. Works
    /// for any table, e.g. iptables-nft's `ip nat` (its `match` expressions stay opaque).
    pub fn dump_rules(
        &mut self,
        family: TableFamily,
        table: &str,
    ) -> Result<Option<Vec<DumpedRule>>, NftError> {
        let what = format!("list rules of {} {table}", family.nft_name());
        let mut rules = Vec::new();
        let end = self.socket.dump(
            family,
            NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![RuleAttribute::Table(table.to_owned())],
            }),
            &what,
            |nft_type, body| {
                if let NfTablesMessage::NewRule(rule) =
                    parse_if(nft_type, body, NfTablesMessageType::NewRule)?
                {
                    let rule = decode::rule(&rule)?;
                    if rule.table == table {
                        rules.push(rule);
                    }
                }
                Ok(())
            },
        )?;
        Ok(complete(end, &what)?.then_some(rules))
    }

    /// Makes table `desired.name` equal `desired`: reads it, sends nothing if equal, else
    /// deletes the old table and creates the new one in one batch. A concurrent writer
    /// makes the batch fail (stale generation id); then it starts over from a fresh read,
    /// at most [`MAX_ATTEMPTS`] times.
    pub fn commit(&mut self, desired: &Table) -> Result<CommitReport, NftError> {
        self.commit_observed(desired, |_| {})
    }

    /// [`commit`](Self::commit) calling `between_read_and_send(attempt)` after each read,
    /// before its batch is sent: lets a test play the concurrent writer.
    #[doc(hidden)]
    pub fn commit_observed(
        &mut self,
        desired: &Table,
        mut between_read_and_send: impl FnMut(u32),
    ) -> Result<CommitReport, NftError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let (genid, change) = match self.read_table(&desired.name) {
                Ok(Snapshot {
                    table: Some(installed),
                    ..
                }) if installed == *desired => {
                    return Ok(CommitReport {
                        change: Change::Unchanged,
                        attempts: attempt,
                    });
                }
                Ok(Snapshot {
                    genid,
                    table: Some(_),
                }) => (genid, Change::Replaced),
                Ok(Snapshot { genid, table: None }) => (genid, Change::Created),
                // Something we do not model was put into our table: it is not what we
                // want, so replace it (the table exists, or reading would have said so).
                Err(NftError::MalformedReply(why) | NftError::Unmodelled(why)) => {
                    tracing::warn!(
                        "table inet {} holds what meshinit does not model ({why}); replacing it",
                        desired.name
                    );
                    (self.generation()?, Change::Replaced)
                }
                Err(e) => return Err(e),
            };
            between_read_and_send(attempt);
            let outcome = self
                .send(genid, |batch| {
                    if change == Change::Replaced {
                        batch.delete_table(TableFamily::Inet, &desired.name);
                    }
                    batch.add_table(desired);
                })
                .map_err(|e| self.explain_refusal(&desired.name, e));
            let outcome = outcome?;
            if let BatchOutcome::Committed = outcome {
                return Ok(CommitReport {
                    change,
                    attempts: attempt,
                });
            }
            back_off(attempt);
        }
        Err(NftError::GenerationChanged {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Deletes table `inet NAME` with everything in it: one message, planned on no read (a
    /// table of ours is ours by name, whatever it holds), so neither content meshinit does
    /// not model nor another writer's commits can stop it. `WasAbsent` when there was none.
    pub fn delete_table(&mut self, name: &str) -> Result<Deletion, NftError> {
        let first_seq = self.socket.next_seq();
        let mut batch = Batch::unguarded(first_seq);
        batch.delete_table(TableFamily::Inet, name);
        let batch = batch.finish();
        self.socket
            .skip_seqs(batch.end_seq.wrapping_sub(first_seq) + 1);
        match self.socket.send_batch(&batch)? {
            Ok(()) => Ok(Deletion::Deleted),
            Err(refusal) if refusal.errno == libc::ENOENT => Ok(Deletion::WasAbsent),
            Err(refusal) => {
                let error =
                    NftError::from_errno(&batch.describe(refusal.seq), refusal.errno, false);
                Err(self.explain_refusal(name, error))
            }
        }
    }

    /// A permission error on table `inet NAME` explained when the table is owned by
    /// another process (`flags owner`): the kernel refuses everyone else, root included.
    pub fn explain_refusal(&mut self, name: &str, error: NftError) -> NftError {
        if !matches!(error, NftError::PermissionDenied { .. }) {
            return error;
        }
        match self.table_info(name) {
            Ok(Some(info)) if info.flags & TABLE_F_OWNER != 0 => NftError::OwnedByAnother {
                table: format!("inet {name}"),
                owner: info.owner,
            },
            _ => error,
        }
    }

    /// Builds a batch planned on `genid` with `build` and sends it. `Stale` means another
    /// writer came first and nothing was applied.
    pub fn send(
        &mut self,
        genid: u32,
        build: impl FnOnce(&mut Batch),
    ) -> Result<BatchOutcome, NftError> {
        let first_seq = self.socket.next_seq();
        let mut batch = Batch::new(genid, first_seq);
        build(&mut batch);
        let batch = batch.finish();
        self.socket
            .skip_seqs(batch.end_seq.wrapping_sub(first_seq) + 1);
        self.send_finished(&batch)
    }

    fn send_finished(&mut self, batch: &FinishedBatch) -> Result<BatchOutcome, NftError> {
        match self.socket.send_batch(batch)? {
            Ok(()) => Ok(BatchOutcome::Committed),
            Err(refusal) if refusal.seq == batch.begin_seq && refusal.errno == libc::ERESTART => {
                Ok(BatchOutcome::Stale)
            }
            Err(refusal) => {
                let what = batch.describe(refusal.seq);
                let creates_nat = what.starts_with("add chain") || what.starts_with("add rule");
                Err(NftError::from_errno(&what, refusal.errno, creates_nat))
            }
        }
    }
}

/// Waits a little before planning again after losing a race, longer each time and
/// jittered, so that writers racing each other stop colliding.
fn back_off(attempt: u32) {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 1000);
    std::thread::sleep(std::time::Duration::from_micros(
        u64::from(attempt) * 500 + u64::from(jitter) * u64::from(attempt),
    ));
}

/// Parses a dumped message of the `wanted` type; anything else becomes a placeholder.
fn parse_if(
    nft_type: u8,
    body: &[u8],
    wanted: NfTablesMessageType,
) -> Result<NfTablesMessage, NftError> {
    if nft_type == u8::from(wanted) {
        parse_nftables(nft_type, body)
    } else {
        Ok(NfTablesMessage::Other {
            message_type: nft_type,
            attributes: Vec::new(),
        })
    }
}

/// Whether a dump ended complete; an errno ends it as an error.
fn complete(end: Result<DumpEnd, i32>, what: &str) -> Result<bool, NftError> {
    match end {
        Ok(DumpEnd::Complete) => Ok(true),
        Ok(DumpEnd::Interrupted) => Ok(false),
        Err(errno) => Err(NftError::from_errno(what, errno, false)),
    }
}
