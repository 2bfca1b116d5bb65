//! Talking to nf_tables in the calling thread's network namespace: read a table back into
//! the model, commit a table (read, compare, replace atomically, retry on a concurrent
//! writer), delete a table, and the building blocks for other batches (migration from
//! iptables-nft: list rules with handles, delete them by handle in the same batch).

use std::time::{Duration, Instant};

use netlink_packet_core::{DefaultNla, NlasIterator};
use netlink_packet_netfilter::nftables::{
    ChainMessage, GenAttribute, GenMessage, NfTablesMessage, NfTablesMessageType, RuleAttribute,
    RuleMessage, SetAttribute, SetElementList, SetElementMessage, SetMessage, TableAttribute,
};

use super::batch::{Batch, FinishedBatch, TableFamily};
use super::decode::{self, DumpedChain, DumpedRule, SetElementCollector};
use super::encode;
use super::error::NftError;
use super::model::{Chain, TABLE_F_OWNER, Table, TableCounters};
use super::socket::{DumpEnd, NfSocket, parse_nftables};

/// Attempts made whatever the deadline says (a run whose lock wait used up its time still
/// gets a fair chance).
pub const MIN_ATTEMPTS: u32 = 5;

/// How long a connection retries against other writers unless told otherwise
/// ([`NftConnection::retry_until`]): the default `--lock-timeout`.
pub const DEFAULT_RETRY_TIME: Duration = Duration::from_secs(10);

/// Consistent reads tried before a commit stops proving the installed table equal and
/// replaces it (guarded by the generation id, so still atomic and exact).
const READS_BEFORE_BLIND_REPLACE: u32 = 3;

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

/// A table as one pass of dumps found it; `complete` is false when a commit interrupted
/// one of them.
struct Dumped {
    table: Option<Table>,
    counters: TableCounters,
    complete: bool,
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
    /// Retries against other writers' commits stop here (after [`MIN_ATTEMPTS`]).
    deadline: Instant,
}

/// Counts attempts against a deadline and waits between them.
pub struct Retry {
    attempt: u32,
    started: Instant,
    deadline: Instant,
}

impl Retry {
    fn new(deadline: Instant) -> Retry {
        Retry {
            attempt: 0,
            started: Instant::now(),
            deadline,
        }
    }

    /// Starts the next attempt, after a back-off when it is not the first; `false` when the
    /// time is spent.
    pub fn another(&mut self) -> bool {
        if self.attempt > 0 {
            if self.attempt >= MIN_ATTEMPTS && Instant::now() >= self.deadline {
                return false;
            }
            back_off(self.attempt, self.deadline);
        }
        self.attempt += 1;
        true
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The error for retries that ran out of time.
    pub fn exhausted(&self) -> NftError {
        NftError::GenerationChanged {
            attempts: self.attempt,
            waited: self.started.elapsed(),
        }
    }
}

/// A consistent read: the table (if present) as of generation `genid`, and what its
/// rules' counters had counted when they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub genid: u32,
    pub table: Option<Table>,
    pub counters: TableCounters,
}

impl NftConnection {
    pub fn open() -> Result<NftConnection, NftError> {
        Ok(NftConnection {
            socket: NfSocket::open()?,
            deadline: Instant::now() + DEFAULT_RETRY_TIME,
        })
    }

    /// Retries against other writers (reads interrupted by their commits, batches they made
    /// stale) go on until `deadline`, with a growing, jittered back-off between attempts.
    pub fn retry_until(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Retries bounded by this connection's deadline, for batches built elsewhere.
    pub fn retry(&self) -> Retry {
        Retry::new(self.deadline)
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

    /// Reads table `inet NAME` consistently: a read during which no commit happened, or,
    /// when another writer commits too often for that (a read of a large table takes
    /// longer than the gaps between its commits), two reads in a row that found the same
    /// table (the writer changed other tables). Reads again, with back-off, until the
    /// connection's deadline.
    pub fn read_table(&mut self, name: &str) -> Result<Snapshot, NftError> {
        let mut retry = Retry::new(self.deadline);
        let mut previous: Option<Table> = None;
        while retry.another() {
            let genid = self.generation()?;
            let Some(dumped) = self.dump_table(name)? else {
                previous = None;
                continue;
            };
            let Some(table) = dumped.table else {
                // Absent: nothing to be inconsistent with (a commit's batch is guarded by
                // the generation id anyway).
                return Ok(Snapshot {
                    genid,
                    table: None,
                    counters: TableCounters::default(),
                });
            };
            let after = self.generation()?;
            if (dumped.complete && after == genid) || previous.as_ref() == Some(&table) {
                return Ok(Snapshot {
                    genid: after,
                    table: Some(table),
                    counters: dumped.counters,
                });
            }
            previous = Some(table);
        }
        Err(retry.exhausted())
    }

    /// One consistent read, or `None` when another writer committed during it.
    fn read_table_once(&mut self, name: &str) -> Result<Option<Snapshot>, NftError> {
        let genid = self.generation()?;
        Ok(match self.dump_table(name)? {
            Some(Dumped { table: None, .. }) => Some(Snapshot {
                genid,
                table: None,
                counters: TableCounters::default(),
            }),
            Some(Dumped {
                table: Some(table),
                counters,
                complete: true,
            }) if self.generation()? == genid => Some(Snapshot {
                genid,
                table: Some(table),
                counters,
            }),
            _ => None,
        })
    }

    /// Dumps the table; `Ok(None)` when a concurrent change removed the table (or a set)
    /// half-way.
    fn dump_table(&mut self, name: &str) -> Result<Option<Dumped>, NftError> {
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

    fn dump_table_once(&mut self, name: &str) -> Result<Option<Dumped>, NftError> {
        let Some(info) = self.table_info(name)? else {
            return Ok(Some(Dumped {
                table: None,
                counters: TableCounters::default(),
                complete: true,
            }));
        };
        self.refuse_objects(name)?;

        let (chains, chains_complete) = self.dump_chains_marked(TableFamily::Inet, Some(name))?;
        let (rules, rules_complete) = self.dump_rules_marked(TableFamily::Inet, name)?;
        let mut complete_dump = chains_complete && rules_complete;
        let mut chains: Vec<Chain> = chains
            .into_iter()
            .map(|c| Chain {
                name: c.name,
                base: c.base,
                rules: Vec::new(),
            })
            .collect();
        let mut counters = TableCounters::default();
        for dumped in rules {
            // nft keeps a rule's comment in its user data; this crate writes none.
            if let Some(userdata) = &dumped.userdata {
                return Err(NftError::Unmodelled(format!(
                    "a rule in chain {} of table inet {name} with {}",
                    dumped.chain,
                    decode::rule_user_data_text(userdata)
                )));
            }
            counters.push_rule(&dumped.chain, dumped.counters);
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
        complete_dump &= complete(end, &what)?;
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
            complete_dump &= complete(end, &what)?;
            sets.push(collector.finish());
        }
        Ok(Some(Dumped {
            table: Some(Table::new(name, sets, chains).with_flags(info.flags)),
            counters,
            complete: complete_dump,
        }))
    }

    /// Fails with [`NftError::Unmodelled`] when table `inet NAME` holds stateful objects
    /// (named counters, quotas, limits...) or flowtables: this crate writes none, so any is
    /// not ours, and a read that skipped them would call the table what the plan says.
    fn refuse_objects(&mut self, name: &str) -> Result<(), NftError> {
        const NFT_MSG_NEWOBJ: u8 = 18;
        const NFT_MSG_NEWFLOWTABLE: u8 = 22;
        let filter = || {
            // NFTA_OBJ_TABLE and NFTA_FLOWTABLE_TABLE are both attribute 1.
            vec![DefaultNla::new(1, format!("{name}\0").into_bytes())]
        };
        let objects = self.named_in_table(
            name,
            NfTablesMessage::GetObject(filter()),
            NFT_MSG_NEWOBJ,
            "objects",
        )?;
        let flowtables = self.named_in_table(
            name,
            NfTablesMessage::GetFlowTable(filter()),
            NFT_MSG_NEWFLOWTABLE,
            "flowtables",
        )?;
        let mut found = Vec::new();
        if !objects.is_empty() {
            found.push(format!("named object(s) {}", objects.join(", ")));
        }
        if !flowtables.is_empty() {
            found.push(format!("flowtable(s) {}", flowtables.join(", ")));
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(NftError::Unmodelled(format!(
                "{} in table inet {name}",
                found.join(" and ")
            )))
        }
    }

    /// The names of what a GETOBJ or GETFLOWTABLE dump lists in table `inet NAME` (both
    /// name the table in attribute 1 and the thing in attribute 2).
    fn named_in_table(
        &mut self,
        name: &str,
        request: NfTablesMessage,
        new_type: u8,
        kind: &str,
    ) -> Result<Vec<String>, NftError> {
        const TABLE: u16 = 1;
        const NAME: u16 = 2;
        let what = format!("list {kind} of inet {name}");
        let mut found = Vec::new();
        let end = self
            .socket
            .dump(TableFamily::Inet, request, &what, |nft_type, body| {
                if nft_type != new_type {
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
                        TABLE => table = Some(text()),
                        NAME => object = Some(text()),
                        _ => {}
                    }
                }
                if table.as_deref() == Some(name) {
                    found.push(object.unwrap_or_default());
                }
                Ok(())
            })?;
        match end {
            // An interrupted dump is told apart by the generation check after the read.
            Ok(_) => {}
            // A kernel without stateful objects or flowtables has none.
            Err(libc::EOPNOTSUPP) => {}
            Err(errno) => return Err(NftError::from_errno(&what, errno, false)),
        }
        Ok(found)
    }

    /// Chains of `family` (of one table when given), with handles and base-chain settings;
    /// `None` when the dump was interrupted.
    pub fn dump_chains(
        &mut self,
        family: TableFamily,
        table: Option<&str>,
    ) -> Result<Option<Vec<DumpedChain>>, NftError> {
        let (chains, complete) = self.dump_chains_marked(family, table)?;
        Ok(complete.then_some(chains))
    }

    /// The chains, and whether the dump was complete (not interrupted by a commit).
    fn dump_chains_marked(
        &mut self,
        family: TableFamily,
        table: Option<&str>,
    ) -> Result<(Vec<DumpedChain>, bool), NftError> {
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
        Ok((chains, complete(end, &what)?))
    }

    /// Rules of one table, in chain order, with handles; `None` when interrupted. Works
    /// for any table, e.g. iptables-nft's `ip nat` (its `match` expressions stay opaque).
    pub fn dump_rules(
        &mut self,
        family: TableFamily,
        table: &str,
    ) -> Result<Option<Vec<DumpedRule>>, NftError> {
        let (rules, complete) = self.dump_rules_marked(family, table)?;
        Ok(complete.then_some(rules))
    }

    /// The rules, and whether the dump was complete.
    fn dump_rules_marked(
        &mut self,
        family: TableFamily,
        table: &str,
    ) -> Result<(Vec<DumpedRule>, bool), NftError> {
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
        Ok((rules, complete(end, &what)?))
    }

    /// Makes table `desired.name` equal `desired`: reads it, sends nothing if equal, else
    /// deletes the old table and creates the new one in one batch guarded by the generation
    /// id of the read. Another writer's commit makes the batch stale (nothing applied); then
    /// it tries again, with back-off, until the connection's deadline. A retry re-reads only
    /// what it needs: the generation id and whether the table exists (the read already said
    /// it differs). When another writer keeps interrupting even the first, full read, the
    /// table is replaced without being proven equal first: still one exact transaction.
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
        let mut retry = Retry::new(self.deadline);
        // Whether the table is known to differ from `desired` (or to be absent).
        let mut differs = false;
        while retry.another() {
            let attempt = retry.attempt;
            let read = if differs || attempt > READS_BEFORE_BLIND_REPLACE {
                None
            } else {
                match self.read_table_once(&desired.name) {
                    Ok(read) => read,
                    // Something we do not model was put into our table: it is not what we
                    // want, so replace it.
                    Err(NftError::MalformedReply(why) | NftError::Unmodelled(why)) => {
                        tracing::warn!(
                            "table inet {} holds what is not modelled ({why}); replacing it",
                            desired.name
                        );
                        None
                    }
                    Err(e) => return Err(e),
                }
            };
            let (genid, change) = match read {
                Some(Snapshot {
                    table: Some(installed),
                    ..
                }) if installed == *desired => {
                    return Ok(CommitReport {
                        change: Change::Unchanged,
                        attempts: attempt,
                    });
                }
                Some(Snapshot {
                    genid,
                    table: Some(_),
                    ..
                }) => (genid, Change::Replaced),
                Some(Snapshot {
                    genid, table: None, ..
                }) => (genid, Change::Created),
                // Not read (or not readable): the generation id first, then whether the
                // table exists; a commit in between makes the batch stale.
                None => {
                    let genid = self.generation()?;
                    match self.table_info(&desired.name)? {
                        Some(_) => (genid, Change::Replaced),
                        None => (genid, Change::Created),
                    }
                }
            };
            differs = differs || read.is_some() || attempt >= READS_BEFORE_BLIND_REPLACE;
            between_read_and_send(attempt);
            let outcome = self
                .send(genid, |batch| {
                    if change == Change::Replaced {
                        batch.delete_table(TableFamily::Inet, &desired.name);
                    }
                    batch.add_table(desired);
                })
                .map_err(|e| self.explain_refusal(&desired.name, e));
            if let BatchOutcome::Committed = outcome? {
                return Ok(CommitReport {
                    change,
                    attempts: attempt,
                });
            }
        }
        Err(retry.exhausted())
    }

    /// Deletes table `inet NAME` with everything in it: one message, planned on no read (a
    /// table of ours is ours by name, whatever it holds), so neither content this crate does
    /// not model nor another writer's commits can stop it. `WasAbsent` when there was none.
    pub fn delete_table(&mut self, name: &str) -> Result<Deletion, NftError> {
        match self.send_unguarded(|batch| batch.delete_table(TableFamily::Inet, name))? {
            Ok(()) => Ok(Deletion::Deleted),
            Err((_, libc::ENOENT)) => Ok(Deletion::WasAbsent),
            Err((what, errno)) => {
                let error = NftError::from_errno(&what, errno, false);
                Err(self.explain_refusal(name, error))
            }
        }
    }

    /// Creates table `inet NAME` with `flags owner`, empty, failing if it exists: the
    /// kernel ties it to this connection's socket and removes it when the socket closes
    /// (however the process ends), and lets nobody else change it meanwhile. Only a process
    /// with CAP_NET_ADMIN over the namespace can create it. `Ok(Err(errno))` when the
    /// kernel refused: EEXIST (a table of that name without the flag), EPERM (owned by
    /// another socket, or no privilege), EOPNOTSUPP (a kernel without owner tables).
    pub fn create_owned_table(&mut self, name: &str) -> Result<Result<(), i32>, NftError> {
        use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
        use netlink_packet_netfilter::nftables::{TableFlags, TableMessage};
        let message = NfTablesMessage::NewTable(TableMessage {
            attributes: vec![
                TableAttribute::Name(name.to_owned()),
                TableAttribute::Flags(TableFlags::Owner),
            ],
        });
        Ok(self
            .send_unguarded(|batch| {
                batch.push(
                    TableFamily::Inet,
                    NLM_F_CREATE | NLM_F_EXCL,
                    message,
                    format!("add table inet {name} {{ flags owner; }}"),
                )
            })?
            .map_err(|(_, errno)| errno))
    }

    /// Sends a batch applied whatever the generation; a refusal as (the refused message's
    /// description, errno).
    fn send_unguarded(
        &mut self,
        build: impl FnOnce(&mut Batch),
    ) -> Result<Result<(), (String, i32)>, NftError> {
        let first_seq = self.socket.next_seq();
        let mut batch = Batch::unguarded(first_seq);
        build(&mut batch);
        let batch = batch.finish();
        self.socket
            .skip_seqs(batch.end_seq.wrapping_sub(first_seq) + 1);
        Ok(self
            .socket
            .send_batch(&batch)?
            .map_err(|refusal| (batch.describe(refusal.seq), refusal.errno)))
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

/// Waits before planning again after losing a race: growing with each attempt (0.5 ms,
/// 1 ms, ... up to 50 ms) and jittered over the whole step, so that a retry does not keep
/// landing in the same phase of a writer that commits on a timer; never past `deadline`.
fn back_off(attempt: u32, deadline: Instant) {
    let step_micros = (500u64 << attempt.min(7)).min(50_000);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            u64::from(d.subsec_nanos()) ^ (u64::from(std::process::id()) << 7)
        })
        % step_micros;
    let wait = Duration::from_micros(step_micros / 2 + jitter);
    let left = deadline.saturating_duration_since(Instant::now());
    std::thread::sleep(wait.min(left.max(Duration::from_micros(200))));
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
