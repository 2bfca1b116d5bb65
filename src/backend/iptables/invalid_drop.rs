//! Dropping inbound packets conntrack marks INVALID, for the iptables backends. Such packets
//! (out-of-window TCP segments above all) never pass the nat table, so they would reach the
//! application un-rewritten and its reset would kill the proxied connection
//! (istio/istio#36489). The drop lives in the `mangle` table's PREROUTING, as Istio and Kuma
//! put it: the earliest table that sees conntrack's verdict, and one a plain `filter`
//! INPUT policy of the host never overrides.
//!
//! Ownership: the chain `MESHINIT_INVALID` of `mangle` and the jumps into it from
//! PREROUTING are meshinit's; nothing else of `mangle` is touched.

use super::side_chains::SideChain;

pub const INVALID_CHAIN: &str = "MESHINIT_INVALID";
/// The one rule of the chain, as `iptables-save` prints it.
pub const DROP_RULE: &str = "-m conntrack --ctstate INVALID -j DROP";

pub const INVALID_DROP: SideChain = SideChain {
    table: "mangle",
    chain: INVALID_CHAIN,
    hook: "PREROUTING",
};

/// The chain's rules for `want`.
pub fn rules(want: bool) -> Vec<String> {
    if want {
        vec![DROP_RULE.to_owned()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_create_repair_and_remove_only_our_chain() {
        let empty = INVALID_DROP.parse("");
        assert_eq!(INVALID_DROP.payload(&rules(false), &empty), None);
        let create = INVALID_DROP.payload(&rules(true), &empty).unwrap();
        assert_eq!(
            create,
            "*mangle\n:MESHINIT_INVALID - [0:0]\n-A MESHINIT_INVALID -m conntrack --ctstate \
             INVALID -j DROP\n-I PREROUTING 1 -j MESHINIT_INVALID\nCOMMIT\n"
        );
        let installed = INVALID_DROP.parse(
            "*mangle\n:PREROUTING ACCEPT [0:0]\n:MESHINIT_INVALID - [0:0]\n\
             -A PREROUTING -j MESHINIT_INVALID\n-A PREROUTING -j MESHINIT_INVALID\n\
             -A PREROUTING -j OTHER\n-A MESHINIT_INVALID -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n",
        );
        assert_eq!(installed.jumps, 2);
        let repair = INVALID_DROP.payload(&rules(true), &installed).unwrap();
        assert!(repair.starts_with("*mangle\n-D PREROUTING -j MESHINIT_INVALID\n:MESHINIT"));
        assert!(!repair.contains("-I PREROUTING"));
        let remove = INVALID_DROP.payload(&rules(false), &installed).unwrap();
        assert_eq!(
            remove,
            "*mangle\n-D PREROUTING -j MESHINIT_INVALID\n-D PREROUTING -j MESHINIT_INVALID\n\
             -F MESHINIT_INVALID\n-X MESHINIT_INVALID\nCOMMIT\n"
        );
    }
}
