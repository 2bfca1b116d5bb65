//! Reading `iptables-save -t nat` output into the model: every chain, every rule with its
//! text, its target and the sets it matches (whatever its shape), and its typed form when it
//! is a shape meshinit writes.

use ipnet::IpNet;

use super::words::{self, words};
use crate::config::PortRange;
use crate::ruleset::{InstalledRule, InstalledTable, Match, Rule, Verdict};

/// Parses the output of `iptables-save -t nat` (other tables, if present, are skipped).
pub fn installed_table(save_output: &str) -> InstalledTable {
    let mut installed = InstalledTable::default();
    let mut in_nat = false;
    for line in save_output.lines() {
        let line = line.trim_end();
        if let Some(table) = line.strip_prefix('*') {
            in_nat = table == "nat";
        } else if !in_nat || line.starts_with('#') {
            continue;
        } else if let Some(declaration) = line.strip_prefix(':') {
            if let Some(name) = declaration.split(' ').next() {
                installed.chains.push(name.to_owned());
            }
        } else if let Some(rule) = without_counters(line).strip_prefix("-A ") {
            // A bare `-A CHAIN` (no match, no target) has no spec.
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            installed.rules.push(installed_rule(chain, spec));
        }
    }
    installed
}

/// One rule of chain `chain`, from its spec as `iptables-save` prints it.
pub fn installed_rule(chain: &str, spec: &str) -> InstalledRule {
    InstalledRule {
        chain: chain.to_owned(),
        rule: typed(chain, spec),
        target: words::target(spec).map(str::to_owned),
        sets: words::match_sets(spec)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        text: spec.to_owned(),
    }
}

/// A rule line without the `[packets:bytes]` prefix `iptables-save -c` prints.
fn without_counters(line: &str) -> &str {
    match line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((counters, rule)) if counters.bytes().all(|b| b.is_ascii_digit() || b == b':') => rule,
        _ => line,
    }
}

/// The typed rule, when `spec` is exactly a shape the model has; `None` for anything else
/// (other modules, options, quoted words, `-g`), so an unknown rule never passes for ours.
fn typed(chain: &str, spec: &str) -> Option<Rule> {
    let words = words(spec);
    if words.iter().any(|(_, quoted)| *quoted) {
        return None;
    }
    let mut rest = words.iter().map(|(w, _)| *w);
    let mut matches = Vec::new();
    let mut verdict = None;
    while let Some(word) = rest.next() {
        match word {
            "-d" => matches.push(Match::DestinationNetwork(
                rest.next()?.parse::<IpNet>().ok()?,
            )),
            "-i" => matches.push(Match::InInterface(rest.next()?.to_owned())),
            "-o" => matches.push(Match::OutInterface(rest.next()?.to_owned())),
            "-p" => match rest.next()? {
                "tcp" => matches.push(Match::Tcp),
                "udp" => matches.push(Match::Udp),
                _ => return None,
            },
            "-m" => match rest.next()? {
                "owner" => match (rest.next()?, rest.next()?.parse().ok()?) {
                    ("--uid-owner", uid) => matches.push(Match::OwnerUid(uid)),
                    ("--gid-owner", gid) => matches.push(Match::OwnerGid(gid)),
                    _ => return None,
                },
                "multiport" => {
                    (rest.next()? == "--dports").then_some(())?;
                    matches.push(Match::DestinationPorts(port_list(rest.next()?)?));
                }
                "set" => {
                    (rest.next()? == "--match-set").then_some(())?;
                    let name = rest.next()?;
                    (rest.next()? == "dst").then_some(())?;
                    matches.push(Match::DestinationInSet(name.to_owned()));
                }
                "addrtype" => {
                    let mut option = rest.next()?;
                    let local = option != "!";
                    if !local {
                        option = rest.next()?;
                    }
                    (rest.next()? == "LOCAL").then_some(())?;
                    matches.push(match option {
                        "--dst-type" => Match::DestinationIsLocal(local),
                        "--src-type" => Match::SourceIsLocal(local),
                        _ => return None,
                    });
                }
                _ => return None,
            },
            "-j" if verdict.is_none() => {
                verdict = Some(match rest.next()? {
                    "RETURN" => Verdict::Return,
                    "REDIRECT" => {
                        (rest.next()? == "--to-ports").then_some(())?;
                        Verdict::Redirect(rest.next()?.parse().ok()?)
                    }
                    target => Verdict::Jump(target.to_owned()),
                });
            }
            _ => return None,
        }
    }
    Some(Rule::new(chain, matches, verdict?))
}

/// `80,8000:8080` as `multiport` prints it.
fn port_list(text: &str) -> Option<Vec<PortRange>> {
    text.split(',')
        .map(|item| {
            let (first, last) = item.split_once(':').unwrap_or((item, item));
            Some(PortRange {
                first: first.parse().ok()?,
                last: last.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::iptables::render;
    use crate::backend::iptables::render::PLAN_OPTIONS;
    use crate::config::{RawSettings, validate};
    use crate::ruleset::{Family, plan};

    #[test]
    fn every_planned_rule_reads_back_as_itself() {
        let ips: Vec<String> = (0..40).map(|i| format!("10.{i}.0.0/16")).collect();
        use crate::config::settings::{Property, Vocabulary};
        let raw = RawSettings::spelled(
            Vocabulary::Ecs,
            [
                (Property::IgnoredUid, "1337"),
                (Property::IgnoredGid, "1338"),
                (Property::ProxyEgressPort, "15001"),
                (Property::ProxyIngressPort, "15000"),
                (Property::AppPorts, "9080,9000-9010"),
                (Property::EgressIgnoredPorts, "5000-5100,443"),
                (Property::EgressIgnoredIps, &ips.join(",")),
            ],
        );
        let (config, _) = validate(&raw).unwrap();
        for family in Family::BOTH {
            let ruleset = plan(&config, family, PLAN_OPTIONS);
            for rule in ruleset.rules.iter().chain(&ruleset.jumps) {
                let read = installed_rule(&rule.chain, &render::spec(rule));
                assert_eq!(read.rule.as_ref(), Some(rule), "{}", render::spec(rule));
            }
        }
    }

    #[test]
    fn counters_bare_jumps_and_foreign_appmesh_chains_are_told_apart() {
        let installed = installed_table(
            "*nat\n:OUTPUT ACCEPT [0:0]\n:APPMESH_EGRESS - [0:0]\n:APPMESH_OTHER - [0:0]\n\
             [3:180] -A OUTPUT -p sctp -j APPMESH_EGRESS\n-A OUTPUT -j APPMESH_EGRESS\n\
             -A OUTPUT -g APPMESH_EGRESS\n-A OUTPUT -j APPMESH_OTHER\n-A APPMESH_OTHER\nCOMMIT\n",
        );
        assert_eq!(
            installed.own_chains().collect::<Vec<_>>(),
            ["APPMESH_EGRESS"]
        );
        let jumps: Vec<&str> = installed
            .jumps_into_own_chains()
            .map(|r| r.text.as_str())
            .collect();
        assert_eq!(
            jumps,
            [
                "-p sctp -j APPMESH_EGRESS",
                "-j APPMESH_EGRESS",
                "-g APPMESH_EGRESS"
            ]
        );
        // Only the bare `-j` has a shape the model knows (a jump matching everything).
        let typed: Vec<bool> = installed
            .jumps_into_own_chains()
            .map(|r| r.rule.is_some())
            .collect();
        assert_eq!(typed, [false, true, false]);
        assert!(installed.rules.iter().any(|r| r.chain == "APPMESH_OTHER"));
    }

    #[test]
    fn comments_and_unknown_options_are_not_taken_for_ours() {
        for spec in [
            "-p tcp -m comment --comment \"x\" -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
            "-p tcp -m tcp --dport 1 -j RETURN",
            "-p sctp -j RETURN",
            "-j REDIRECT --to-ports 15001 --random",
        ] {
            assert_eq!(installed_rule("APPMESH_EGRESS", spec).rule, None, "{spec}");
        }
    }
}
