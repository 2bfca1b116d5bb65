//! Chains of ours outside the nat table (the INVALID drop in `mangle`, the DNS conntrack
//! zones in `raw`): one chain per concern, entered by one jump inserted first in a built-in
//! chain, converged on its own with `iptables-restore --noflush`. The table is read only
//! when the chain is wanted or may exist (legacy: the table exists; iptables-nft: our chain
//! exists, asked over netlink), so configurations without it pay nothing.
//!
//! Why not in nat's transaction: `iptables-restore` commits at every `COMMIT` line, one
//! table at a time. iptables-nft-restore (`xtables-restore.c`, iptables 1.8.x up to 1.8.11)
//! sends one nf_tables batch per `COMMIT` ("Commit per table, although we support global
//! commit at once, stick by now to the existing behaviour"), and a `*table` line inside an
//! open table is refused; iptables-legacy-restore replaces each table with its own
//! `IPT_SO_SET_REPLACE`, which the kernel offers per table only. So the backend orders the
//! transactions instead (see `IptablesBackend::converge`), and `converge_all` returns each
//! transaction with the one that puts back what it replaced.

use tracing::info;

use super::tools::IptablesTools;
use crate::backend::{BackendKind, TimeBudget};
use crate::error::Result;
use crate::ruleset::{Drift, Family};

/// One chain of ours in another table.
#[derive(Debug, Clone, Copy)]
pub struct SideChain {
    pub table: &'static str,
    pub chain: &'static str,
    /// The built-in chain that jumps into it.
    pub hook: &'static str,
}

/// What of one side chain a table holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SideState {
    pub chain: bool,
    /// The chain's rules as `iptables-save` prints them.
    pub rules: Vec<String>,
    /// Jumps from the hook chain into it.
    pub jumps: usize,
}

impl SideChain {
    fn jump(&self) -> String {
        format!("-j {}", self.chain)
    }

    /// Parses `iptables-save -t TABLE`.
    pub fn parse(&self, save_output: &str) -> SideState {
        let mut state = SideState::default();
        let jump = self.jump();
        for line in save_output.lines().map(str::trim_end) {
            if line.strip_prefix(':').and_then(|d| d.split(' ').next()) == Some(self.chain) {
                state.chain = true;
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                if chain == self.chain {
                    state.rules.push(spec.to_owned());
                } else if chain == self.hook && spec == jump {
                    state.jumps += 1;
                }
            }
        }
        state
    }

    /// The payload that turns `state` into `want` (`None`: no chain), or `None` when it
    /// already is. An empty list of rules is no chain either.
    pub fn payload(&self, want: &[String], state: &SideState) -> Option<String> {
        let wanted = !want.is_empty();
        let in_shape = state.chain && state.rules == want && state.jumps == 1;
        let absent = !state.chain && state.jumps == 0;
        if (wanted && in_shape) || (!wanted && absent) {
            return None;
        }
        let (chain, hook, jump) = (self.chain, self.hook, self.jump());
        let mut out = format!("*{}\n", self.table);
        let keep_jump = usize::from(wanted);
        for _ in keep_jump..state.jumps.max(keep_jump) {
            out.push_str(&format!("-D {hook} {jump}\n"));
        }
        if wanted {
            // Declaring the chain creates it, or empties it when it exists.
            out.push_str(&format!(":{chain} - [0:0]\n"));
            for rule in want {
                out.push_str(&format!("-A {chain} {rule}\n"));
            }
            if state.jumps == 0 {
                out.push_str(&format!("-I {hook} 1 {jump}\n"));
            }
        } else if state.chain {
            out.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
        out.push_str("COMMIT\n");
        Some(out)
    }

    fn may_hold_ours(&self, kind: BackendKind, family: Family) -> bool {
        match kind {
            BackendKind::IptablesLegacy => {
                super::legacy_tables(family).iter().any(|t| t == self.table)
            }
            _ => crate::backend::netfilter::iptables_nft_table_holds_chain(
                family, self.table, self.chain,
            ),
        }
    }

    fn read(&self, tools: &IptablesTools, budget: &TimeBudget) -> Result<SideState> {
        let output = crate::backend::program::run(&tools.save, &["-t", self.table], None, budget)?;
        Ok(self.parse(&String::from_utf8_lossy(&output.stdout)))
    }

    /// The payload lines between `*table` and `COMMIT`, when any change is needed.
    fn body(&self, want: &[String], state: &SideState) -> Option<String> {
        let payload = self.payload(want, state)?;
        let body = payload
            .strip_prefix(&format!("*{}\n", self.table))?
            .strip_suffix("COMMIT\n")?;
        Some(body.to_owned())
    }

    /// What status reports: how the chain differs from `want`.
    pub fn drift(
        &self,
        kind: BackendKind,
        family: Family,
        want: &[String],
        budget: &TimeBudget,
        drift: &mut Drift,
    ) -> Result<()> {
        if want.is_empty() && !self.may_hold_ours(kind, family) {
            return Ok(());
        }
        let state = self.read(&IptablesTools::find(kind, family)?, budget)?;
        let (table, chain, hook) = (self.table, self.chain, self.hook);
        for rule in want.iter().filter(|r| !state.rules.contains(r)) {
            drift.missing.push(format!("-t {table} -A {chain} {rule}"));
        }
        for rule in state.rules.iter().filter(|r| !want.contains(r)) {
            drift
                .unexpected
                .push(format!("-t {table} -A {chain} {rule}"));
        }
        let jumps_wanted = usize::from(!want.is_empty());
        if state.jumps < jumps_wanted {
            drift
                .missing
                .push(format!("-t {table} -A {hook} {}", self.jump()));
        }
        for _ in jumps_wanted..state.jumps.max(jumps_wanted) {
            drift
                .unexpected
                .push(format!("-t {table} -A {hook} {}", self.jump()));
        }
        if want.is_empty() && state.chain && state.rules.is_empty() {
            drift.unexpected.push(format!("-t {table} chain {chain}"));
        }
        if !want.is_empty()
            && state.rules != want
            && want.iter().all(|r| state.rules.contains(r))
            && state.rules.len() == want.len()
        {
            drift.misordered_chains.push(format!("{table} {chain}"));
        }
        Ok(())
    }
}

/// One restore transaction sent to a side table, and the one that puts back what it
/// replaced (our chains' rules and jumps as they were read just before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentTable {
    pub family: Family,
    pub payload: String,
    pub undo: String,
}

/// Puts back what `sent` replaced, newest first; a failure is logged and the rest still
/// undone (the next apply converges whatever is left, and `status` reports it).
pub fn undo_all(kind: BackendKind, sent: &[SentTable], budget: &TimeBudget) {
    for table in sent.iter().rev() {
        let result = IptablesTools::find(kind, table.family)
            .and_then(|tools| tools.restore(&table.undo, budget));
        match result {
            Ok(()) => info!(backend = %kind, family = %table.family, "side chains put back"),
            Err(e) => tracing::warn!(
                backend = %kind, family = %table.family, error = %e,
                "side chains could not be put back; the next apply converges them"
            ),
        }
    }
}

/// Brings every side chain of one family to what is wanted: each table is read once and
/// changed in one restore transaction, and tables that cannot hold anything of ours and need
/// nothing are not read at all. Returns the transactions sent, with their undo.
pub fn converge_all(
    kind: BackendKind,
    family: Family,
    chains: &[(SideChain, Vec<String>)],
    budget: &TimeBudget,
    dry_run: bool,
) -> Result<Vec<SentTable>> {
    let mut tables: Vec<&'static str> = Vec::new();
    for (chain, want) in chains {
        let needed = !want.is_empty() || chain.may_hold_ours(kind, family);
        if needed && !tables.contains(&chain.table) {
            tables.push(chain.table);
        }
    }
    let mut sent = Vec::new();
    if tables.is_empty() {
        return Ok(sent);
    }
    let tools = IptablesTools::find(kind, family)?;
    for table in tables {
        let output = crate::backend::program::run(&tools.save, &["-t", table], None, budget)?;
        let saved = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut body = String::new();
        let mut undo = String::new();
        for (chain, want) in chains.iter().filter(|(chain, _)| chain.table == table) {
            let before = chain.parse(&saved);
            let Some(change) = chain.body(want, &before) else {
                continue;
            };
            body.push_str(&change);
            let after = SideState {
                chain: !want.is_empty(),
                rules: want.clone(),
                jumps: usize::from(!want.is_empty()),
            };
            let previous = if before.chain {
                before.rules.clone()
            } else {
                Vec::new()
            };
            undo.extend(chain.body(&previous, &after));
        }
        if body.is_empty() {
            continue;
        }
        let payload = format!("*{table}\n{body}COMMIT\n");
        if dry_run {
            tools.test(&payload, budget)?;
        } else {
            tools.restore(&payload, budget)?;
            info!(backend = %kind, %family, table, "side chains converged");
        }
        sent.push(SentTable {
            family,
            payload,
            undo: format!("*{table}\n{undo}COMMIT\n"),
        });
    }
    Ok(sent)
}
