//! Dropping inbound packets conntrack marks INVALID, for the iptables backends. Such packets
//! (out-of-window TCP segments above all) never pass the nat table, so they would reach the
//! application un-rewritten and its reset would kill the proxied connection
//! (istio/istio#36489). The drop lives in the `mangle` table's PREROUTING, as Istio and Kuma
//! put it: the earliest table that sees conntrack's verdict, and one a plain `filter`
//! INPUT policy of the host never overrides.
//!
//! Ownership: the chain `MESHINIT_INVALID` of `mangle` and the jumps into it from
//! PREROUTING are meshinit's; nothing else of `mangle` is touched. The table is read only
//! when the drop is wanted or may be installed (legacy: the table exists; iptables-nft: our
//! chain exists, asked over netlink), so configurations without it pay nothing.

use tracing::info;

use super::tools::IptablesTools;
use crate::backend::{BackendKind, TimeBudget};
use crate::error::Result;
use crate::ruleset::{Drift, Family};

pub const INVALID_CHAIN: &str = "MESHINIT_INVALID";
/// The one rule of the chain, as `iptables-save` prints it.
pub const DROP_RULE: &str = "-m conntrack --ctstate INVALID -j DROP";
const JUMP_RULE: &str = "-j MESHINIT_INVALID";

/// What of ours `mangle` holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MangleState {
    pub chain: bool,
    /// The chain's rules.
    pub rules: Vec<String>,
    /// Jumps from PREROUTING into the chain.
    pub jumps: usize,
}

impl MangleState {
    fn is_wanted_shape(&self) -> bool {
        self.chain && self.rules == [DROP_RULE] && self.jumps == 1
    }

    fn is_empty(&self) -> bool {
        !self.chain && self.jumps == 0
    }
}

/// Parses `iptables-save -t mangle`.
pub fn parse(save_output: &str) -> MangleState {
    let mut state = MangleState::default();
    for line in save_output.lines().map(str::trim_end) {
        if line.strip_prefix(':').and_then(|d| d.split(' ').next()) == Some(INVALID_CHAIN) {
            state.chain = true;
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            if chain == INVALID_CHAIN {
                state.rules.push(spec.to_owned());
            } else if chain == "PREROUTING" && spec == JUMP_RULE {
                state.jumps += 1;
            }
        }
    }
    state
}

/// The `iptables-restore --noflush` payload that turns `state` into what is wanted, or
/// `None` when it already is.
pub fn payload(want: bool, state: &MangleState) -> Option<String> {
    if (want && state.is_wanted_shape()) || (!want && state.is_empty()) {
        return None;
    }
    let mut out = String::from("*mangle\n");
    let keep_jump = usize::from(want);
    for _ in keep_jump..state.jumps.max(keep_jump) {
        out.push_str(&format!("-D PREROUTING {JUMP_RULE}\n"));
    }
    if want {
        // Declaring the chain creates it, or empties it when it exists.
        out.push_str(&format!(":{INVALID_CHAIN} - [0:0]\n"));
        out.push_str(&format!("-A {INVALID_CHAIN} {DROP_RULE}\n"));
        if state.jumps == 0 {
            out.push_str(&format!("-I PREROUTING 1 {JUMP_RULE}\n"));
        }
    } else if state.chain {
        out.push_str(&format!("-F {INVALID_CHAIN}\n-X {INVALID_CHAIN}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Whether `mangle` may hold anything of ours, asked without running a program.
fn may_hold_ours(kind: BackendKind, family: Family) -> bool {
    match kind {
        BackendKind::IptablesLegacy => super::legacy_tables(family).iter().any(|t| t == "mangle"),
        _ => crate::backend::nftables::iptables_nft_mangle_holds_ours(family),
    }
}

fn read(tools: &IptablesTools, budget: &TimeBudget) -> Result<MangleState> {
    let output = crate::backend::program::run(&tools.save, &["-t", "mangle"], None, budget)?;
    Ok(parse(&String::from_utf8_lossy(&output.stdout)))
}

/// Brings `mangle` of one family to `want`; returns the payload sent, if any.
pub fn converge(
    kind: BackendKind,
    family: Family,
    want: bool,
    budget: &TimeBudget,
    dry_run: bool,
) -> Result<Option<String>> {
    if !want && !may_hold_ours(kind, family) {
        return Ok(None);
    }
    let tools = IptablesTools::find(kind, family)?;
    let state = read(&tools, budget)?;
    let Some(payload) = payload(want, &state) else {
        return Ok(None);
    };
    if dry_run {
        tools.test(&payload, budget)?;
    } else {
        tools.restore(&payload, budget)?;
        info!(backend = %kind, %family, drop_invalid = want, "mangle table converged");
    }
    Ok(Some(payload))
}

/// What status reports: the difference between `mangle` and `want`.
pub fn drift(
    kind: BackendKind,
    family: Family,
    want: bool,
    budget: &TimeBudget,
    drift: &mut Drift,
) -> Result<()> {
    if !want && !may_hold_ours(kind, family) {
        return Ok(());
    }
    let state = read(&IptablesTools::find(kind, family)?, budget)?;
    if want && !state.is_wanted_shape() {
        drift.missing.push(format!(
            "-t mangle -A {INVALID_CHAIN} {DROP_RULE} (and one -A PREROUTING {JUMP_RULE})"
        ));
    }
    if !want && !state.is_empty() {
        drift
            .unexpected
            .push(format!("-t mangle chain {INVALID_CHAIN} and its jumps"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_create_repair_and_remove_only_our_chain() {
        let empty = MangleState::default();
        assert_eq!(payload(false, &empty), None);
        let create = payload(true, &empty).unwrap();
        assert_eq!(
            create,
            "*mangle\n:MESHINIT_INVALID - [0:0]\n-A MESHINIT_INVALID -m conntrack --ctstate \
             INVALID -j DROP\n-I PREROUTING 1 -j MESHINIT_INVALID\nCOMMIT\n"
        );
        let installed = parse(
            "*mangle\n:PREROUTING ACCEPT [0:0]\n:MESHINIT_INVALID - [0:0]\n\
             -A PREROUTING -j MESHINIT_INVALID\n-A PREROUTING -j MESHINIT_INVALID\n\
             -A PREROUTING -j OTHER\n-A MESHINIT_INVALID -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n",
        );
        assert_eq!(installed.jumps, 2);
        let repair = payload(true, &installed).unwrap();
        assert!(repair.starts_with("*mangle\n-D PREROUTING -j MESHINIT_INVALID\n:MESHINIT"));
        assert!(!repair.contains("-I PREROUTING"));
        let remove = payload(false, &installed).unwrap();
        assert_eq!(
            remove,
            "*mangle\n-D PREROUTING -j MESHINIT_INVALID\n-D PREROUTING -j MESHINIT_INVALID\n\
             -F MESHINIT_INVALID\n-X MESHINIT_INVALID\nCOMMIT\n"
        );
    }
}
