//! The table as lines in nft's words (`chain output: meta skuid 1337 counter return`), one
//! per set and rule, so two tables (installed and planned) compare as a diff of lines
//! removed and added. Both sides go through this same printer, so a shape it spells
//! differently from `nft list` cannot show up as a difference.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::model::{
    CmpOp, CounterValues, Expr, FibResult, IPPROTO_TCP, ImmediateData, MetaKey, NFPROTO_IPV4,
    NFPROTO_IPV6, PayloadBase, RTN_LOCAL, Rule, Table, Verdict, fib_flags,
};

/// One line per set and per rule (prefixed with its chain), in table order.
pub fn table_lines(table: &Table) -> Vec<String> {
    let mut lines: Vec<String> = table.sets.iter().map(ToString::to_string).collect();
    for chain in &table.chains {
        let hook = match &chain.base {
            Some(base) => format!(" ({:?} hook {:?})", base.chain_type, base.hook).to_lowercase(),
            None => String::new(),
        };
        lines.push(format!("chain {}{hook}", chain.name));
        for rule in &chain.rules {
            lines.push(format!("chain {}: {}", chain.name, rule_text(rule)));
        }
    }
    lines
}

/// A rule in nft's words, for the shapes modelled; anything else by its name.
pub fn rule_text(rule: &Rule) -> String {
    spell(rule, None)
}

/// [`rule_text`] with what its counters have counted, as `nft list` shows them
/// (`counter packets 3 bytes 180`): `counters` are the values of the rule's counter
/// expressions in order (a counter without a value is spelled bare).
pub fn rule_text_counted(rule: &Rule, counters: &[CounterValues]) -> String {
    spell(rule, Some(counters))
}

fn spell(rule: &Rule, counters: Option<&[CounterValues]>) -> String {
    let mut counters = counters.unwrap_or_default().iter();
    let mut words: Vec<String> = Vec::new();
    // What the last load put in the register, waiting for its compare or lookup.
    let mut loaded: Option<String> = None;
    let mut mask: Option<u32> = None;
    let mut exprs = rule.exprs.iter().peekable();
    while let Some(expr) = exprs.next() {
        match expr {
            Expr::Meta { key, .. } => {
                loaded = Some(match key {
                    MetaKey::SkUid => "meta skuid".into(),
                    MetaKey::SkGid => "meta skgid".into(),
                    MetaKey::NfProto => "meta nfproto".into(),
                    MetaKey::L4Proto => "meta l4proto".into(),
                    // NFT_META_IIFNAME, NFT_META_OIFNAME: nft lists them bare.
                    MetaKey::Other(6) => "iifname".into(),
                    MetaKey::Other(7) => "oifname".into(),
                    MetaKey::Other(n) => format!("meta #{n}"),
                })
            }
            Expr::Fib { flags, result, .. } => {
                let addr = if flags & fib_flags::SADDR != 0 {
                    "saddr"
                } else {
                    "daddr"
                };
                let what = match result {
                    FibResult::AddrType => "type",
                    FibResult::Oif => "oif",
                    FibResult::OifName => "oifname",
                    FibResult::Other(_) => "?",
                };
                loaded = Some(format!("fib {addr} {what}"));
            }
            Expr::Payload {
                base, offset, len, ..
            } => {
                loaded = Some(match (base, offset, len) {
                    (PayloadBase::Transport, 2, 2) => "tcp dport".into(),
                    (PayloadBase::Network, 16, 4) => "ip daddr".into(),
                    (PayloadBase::Network, 24, 16) => "ip6 daddr".into(),
                    (base, offset, len) => format!("payload {base:?} @{offset},{len}"),
                });
                mask = None;
            }
            Expr::Bitwise { mask: bits, .. } => {
                mask = Some(bits.iter().map(|b| b.count_ones()).sum());
            }
            Expr::Cmp { op, data, .. } => {
                let subject = loaded.take().unwrap_or_default();
                let op = match op {
                    CmpOp::Eq => "",
                    CmpOp::Neq => "!= ",
                    CmpOp::Lt => "< ",
                    CmpOp::Lte => "<= ",
                    CmpOp::Gt => "> ",
                    CmpOp::Gte => ">= ",
                };
                let value = value_text(&subject, data, mask.take());
                words.push(format!("{subject} {op}{value}"));
            }
            Expr::Lookup { set, invert, .. } => {
                let subject = loaded.take().unwrap_or_default();
                let not = if *invert { "!= " } else { "" };
                words.push(format!("{subject} {not}@{set}"));
            }
            Expr::Counter => words.push(match counters.next() {
                Some(c) => format!("counter packets {} bytes {}", c.packets, c.bytes),
                None => "counter".into(),
            }),
            Expr::Immediate {
                data: ImmediateData::Verdict(verdict),
                ..
            } => words.push(match verdict {
                Verdict::Accept => "accept".into(),
                Verdict::Drop => "drop".into(),
                Verdict::Continue => "continue".into(),
                Verdict::Return => "return".into(),
                Verdict::Jump(chain) => format!("jump {chain}"),
                Verdict::Goto(chain) => format!("goto {chain}"),
            }),
            Expr::Immediate {
                data: ImmediateData::Value(value),
                ..
            } => {
                if matches!(exprs.peek(), Some(Expr::Redir { .. })) {
                    exprs.next();
                    words.push(format!("redirect to :{}", be_number(value)));
                } else {
                    loaded = Some(format!("immediate {value:02x?}"));
                }
            }
            Expr::Redir { .. } => words.push("redirect".into()),
            Expr::Other { name, .. } => words.push(format!("<{name}>")),
        }
    }
    words.join(" ")
}

fn be_number(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, b| (n << 8) | u64::from(*b))
}

fn value_text(subject: &str, data: &[u8], mask: Option<u32>) -> String {
    let ne_u32 = || {
        <[u8; 4]>::try_from(data)
            .map(u32::from_ne_bytes)
            .map_or_else(|_| format!("{data:02x?}"), |n| n.to_string())
    };
    let prefix = |full: u32| match mask {
        Some(bits) if bits < full => format!("/{bits}"),
        _ => String::new(),
    };
    match subject {
        "meta skuid" | "meta skgid" => ne_u32(),
        "meta l4proto" if data == [IPPROTO_TCP] => "tcp".into(),
        "meta nfproto" if data == [NFPROTO_IPV4] => "ipv4".into(),
        "meta nfproto" if data == [NFPROTO_IPV6] => "ipv6".into(),
        "fib saddr type" | "fib daddr type" if data == RTN_LOCAL.to_ne_bytes() => "local".into(),
        "tcp dport" => be_number(data).to_string(),
        // An interface name, NUL-padded to IFNAMSIZ.
        "iifname" | "oifname" => match std::str::from_utf8(data) {
            Ok(name) => format!("\"{}\"", name.trim_end_matches('\0')),
            Err(_) => format!("{data:02x?}"),
        },
        "ip daddr" => match <[u8; 4]>::try_from(data) {
            Ok(octets) => format!("{}{}", Ipv4Addr::from(octets), prefix(32)),
            Err(_) => format!("{data:02x?}"),
        },
        "ip6 daddr" => match <[u8; 16]>::try_from(data) {
            Ok(octets) => format!("{}{}", Ipv6Addr::from(octets), prefix(128)),
            Err(_) => format!("{data:02x?}"),
        },
        _ => format!("{data:02x?}"),
    }
}

/// The lines of `installed` not in `planned` as `- LINE` and those of `planned` not in
/// `installed` as `+ LINE`, in table order (a longest-common-subsequence diff).
pub fn diff(installed: &[String], planned: &[String]) -> Vec<String> {
    let (n, m) = (installed.len(), planned.len());
    // common[i][j]: length of the longest common subsequence of installed[i..], planned[j..].
    let mut common = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = if installed[i] == planned[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && installed[i] == planned[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || common[i + 1][j] >= common[i][j + 1]) {
            out.push(format!("- {}", installed[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", planned[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn a_changed_line_is_one_removed_and_one_added_in_order() {
        let installed = lines(&["a", "b", "c"]);
        let planned = lines(&["a", "B", "c", "d"]);
        assert_eq!(diff(&installed, &planned), ["- b", "+ B", "+ d"]);
        assert!(diff(&installed, &installed).is_empty());
    }

    #[test]
    fn interface_names_read_as_nft_lists_them() {
        let mut padded = b"eth1".to_vec();
        padded.resize(16, 0);
        let rule = Rule::new(vec![
            Expr::meta(MetaKey::Other(7)),
            Expr::cmp(CmpOp::Eq, padded),
            Expr::verdict(Verdict::Return),
        ]);
        assert_eq!(rule_text(&rule), "oifname \"eth1\" return");
    }

    #[test]
    fn a_verdict_reads_as_nft_writes_it() {
        let rule = Rule::new(vec![Expr::Counter, Expr::verdict(Verdict::Return)]);
        assert_eq!(rule_text(&rule), "counter return");
        let counted = [CounterValues {
            packets: 3,
            bytes: 180,
        }];
        assert_eq!(
            rule_text_counted(&rule, &counted),
            "counter packets 3 bytes 180 return"
        );
    }
}
