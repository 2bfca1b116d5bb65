//! Every rule of ours counts the packets and bytes it matches (`counter`), so `status
//! --counters` can say how many connections each rule decided. Counter values are not part
//! of the model (`decode` reads a counter as `Expr::Counter` whatever it holds), so counts
//! never make a table drift. Applied to the rendered table, after `render`, so the pure
//! rendering stays what `nft` would write for the rules themselves.

use super::model::{Expr, Rule, Table};

/// `rule` with a counter before its action (`... counter return`, `... counter redirect to
/// :15001`), where `nft` puts the `counter` statement; unchanged if it already counts.
pub fn counted_rule(mut rule: Rule) -> Rule {
    if rule.exprs.contains(&Expr::Counter) {
        return rule;
    }
    // The action starts at the first immediate: the verdict, or the port of a redirect.
    let at = rule
        .exprs
        .iter()
        .position(|e| matches!(e, Expr::Immediate { .. }))
        .unwrap_or(rule.exprs.len());
    rule.exprs.insert(at, Expr::Counter);
    rule
}

/// `table` with a counter in every rule.
pub fn counted(mut table: Table) -> Table {
    for chain in &mut table.chains {
        for rule in &mut chain.rules {
            *rule = counted_rule(std::mem::replace(rule, Rule::new(Vec::new())));
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::model::Verdict;

    #[test]
    fn the_counter_goes_before_the_action_once() {
        let rule = Rule::new(
            [Expr::meta(crate::nftables::model::MetaKey::SkUid)]
                .into_iter()
                .chain(Expr::redirect_to_port(15001))
                .collect(),
        );
        let counted = counted_rule(rule.clone());
        assert_eq!(counted.exprs[1], Expr::Counter);
        assert_eq!(counted.exprs.len(), 4);
        assert_eq!(counted_rule(counted.clone()), counted);
        let ret = counted_rule(Rule::new(vec![Expr::verdict(Verdict::Return)]));
        assert_eq!(ret.exprs, [Expr::Counter, Expr::verdict(Verdict::Return)]);
    }
}
