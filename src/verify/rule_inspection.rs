//! What the installed rules say, read as the model: the ingress check (which traffic from
//! inside the namespace cannot prove) and the hints that explain a failed egress probe.

use super::check::{CheckKind, CheckResult, Evidence, Status};
use super::scope::Inspected;
use crate::config::ProxyConfig;
use crate::ruleset::{EGRESS_CHAIN, Family, INGRESS_CHAIN};

/// What the installed egress rules of a family say, to explain a failed probe: absent,
/// not jumped into, different from the configuration, or as configured (then something
/// else intercepts the traffic).
pub fn egress_rules_hint(family: Family, inspected: &Inspected) -> String {
    let installed = &inspected.table;
    let foreign_redirects: Vec<String> = installed
        .rules
        .iter()
        .filter(|r| !crate::ruleset::is_own_chain(&r.chain) && r.redirects())
        .take(2)
        .map(|r| format!("-A {} {}", r.chain, r.text))
        .collect();
    let foreign = if foreign_redirects.is_empty() {
        String::new()
    } else {
        format!(
            "; other rules redirect: `{}`",
            foreign_redirects.join("`, `")
        )
    };
    if !installed.chains.iter().any(|c| c == EGRESS_CHAIN) {
        return format!(
            "the {family} nat table holds no {EGRESS_CHAIN} chain: meshinit's egress rules are \
             not installed in this namespace{foreign}"
        );
    }
    if !installed.enters(EGRESS_CHAIN) {
        return format!("{EGRESS_CHAIN} exists but no built-in chain jumps into it{foreign}");
    }
    let drift = &inspected.egress_drift;
    let mentions_egress = |line: &String| line.contains(EGRESS_CHAIN);
    let missing: Vec<&String> = drift
        .missing
        .iter()
        .filter(|l| mentions_egress(l))
        .take(3)
        .collect();
    let unexpected: Vec<&String> = drift
        .unexpected
        .iter()
        .filter(|l| mentions_egress(l))
        .take(3)
        .collect();
    if missing.is_empty()
        && unexpected.is_empty()
        && !drift.misordered_chains.iter().any(|c| c == EGRESS_CHAIN)
    {
        return format!(
            "the {EGRESS_CHAIN} rules read back as configured, so something else handles this \
             traffic first: another rule ahead of the jump, or rules in the other iptables \
             backend{foreign}"
        );
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing `{}`", join(&missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected `{}`", join(&unexpected)));
    }
    if parts.is_empty() {
        parts.push(format!("{EGRESS_CHAIN} holds its rules in the wrong order"));
    }
    format!(
        "the installed {family} egress rules differ from the configuration: {}{foreign}",
        parts.join("; ")
    )
}

fn join(lines: &[&String]) -> String {
    lines
        .iter()
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join("`, `")
}

/// The ingress check, by rule inspection: from inside the namespace a connection is
/// locally generated and never traverses PREROUTING (and the rendered jump excludes local
/// sources), so ingress redirection cannot be proven with traffic here.
pub fn inspect_ingress(
    config: &ProxyConfig,
    family: Family,
    installed: Result<&Inspected, &str>,
) -> CheckResult {
    let result = |status, reason: String| CheckResult {
        check: CheckKind::IngressRules,
        family,
        evidence: Evidence::Rules,
        status,
        destination: None,
        identity: None,
        observed: None,
        reason,
    };
    const UNPROVABLE: &str = "connections made from inside the namespace do not traverse \
                              PREROUTING, so only the rules can be checked here; prove ingress \
                              with a connection from another host or namespace";
    let Some(ingress) = &config.ingress else {
        return result(
            Status::NotApplicable,
            "no ProxyIngressPort/AppPorts configured: egress only".to_owned(),
        );
    };
    let installed = match installed {
        Ok(installed) => installed,
        Err(why) => {
            return result(
                Status::CouldNotRun,
                format!("the {family} nat table could not be read ({why}), and {UNPROVABLE}"),
            );
        }
    };
    let ports: Vec<String> = ingress
        .app_ports
        .ranges()
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut ports = ports.join(",");
    if config.mesh.ingress_all_ports {
        let never: Vec<String> = config
            .mesh
            .ingress_ignored_ports
            .ranges()
            .iter()
            .map(ToString::to_string)
            .collect();
        ports = format!("* (every port but {})", never.join(","));
    }
    let has_chain = installed.table.chains.iter().any(|c| c == INGRESS_CHAIN);
    let has_jump = installed.table.enters(INGRESS_CHAIN);
    if !has_chain && !has_jump {
        return result(
            Status::Fail,
            format!(
                "the {family} nat table holds no {INGRESS_CHAIN} chain and nothing \
                 jumps to one: inbound connections to AppPorts {ports} would reach the application \
                 directly instead of ProxyIngressPort {}",
                ingress.proxy_port
            ),
        );
    }
    let drift = &installed.ingress_drift;
    let mentions_ingress = |line: &&String| line.contains(INGRESS_CHAIN);
    let missing: Vec<&String> = drift.missing.iter().filter(mentions_ingress).collect();
    let unexpected: Vec<&String> = drift.unexpected.iter().filter(mentions_ingress).collect();
    let misordered = drift.misordered_chains.iter().any(|c| c == INGRESS_CHAIN);
    if missing.is_empty() && unexpected.is_empty() && !misordered {
        return result(
            Status::Pass,
            format!(
                "{INGRESS_CHAIN} redirects AppPorts {ports} to ProxyIngressPort {} \
                 and PREROUTING jumps into it for non-local sources, as rendered; {UNPROVABLE}",
                ingress.proxy_port
            ),
        );
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing `{}`", join(&missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected `{}`", join(&unexpected)));
    }
    if misordered {
        parts.push(format!(
            "{INGRESS_CHAIN} holds its rules in the wrong order"
        ));
    }
    result(
        Status::Fail,
        format!(
            "the {family} ingress rules differ from the configuration, so inbound \
             connections to the AppPorts would not reach ProxyIngressPort {} as configured: {}",
            ingress.proxy_port,
            parts.join("; ")
        ),
    )
}

/// The rules of the settings beyond App Mesh, checked by reading the nat table back: the
/// include list, every inbound port, ignored interfaces and the DNS redirects live in our
/// chains, so both chains being as rendered proves them installed. (DNS capture and its
/// conntrack zones are also proven by traffic, the `dns-capture` check; the INVALID drop
/// lives outside nat and is left to `meshinit status`, which reports its drift.)
pub fn inspect_mesh(
    config: &ProxyConfig,
    family: Family,
    installed: Result<&Inspected, &str>,
) -> CheckResult {
    let result = |status, reason: String| CheckResult {
        check: CheckKind::MeshRules,
        family,
        evidence: Evidence::Rules,
        status,
        destination: None,
        identity: None,
        observed: None,
        reason,
    };
    let mesh = &config.mesh;
    let mut on = Vec::new();
    if mesh.egress_included.is_some() {
        on.push("the egress include list".to_owned());
    }
    if mesh.ingress_all_ports {
        on.push("AppPorts *".to_owned());
    }
    if !mesh.ignored_interfaces.is_empty() {
        on.push(format!(
            "ignored interfaces {}",
            mesh.ignored_interfaces.join(",")
        ));
    }
    if let Some(dns) = &mesh.dns {
        on.push(format!("DNS capture to port {}", dns.proxy_port));
    }
    if mesh.drop_invalid {
        on.push("the INVALID drop (outside nat: see meshinit status)".to_owned());
    }
    let installed = match installed {
        Ok(installed) => installed,
        Err(why) => {
            return result(
                Status::CouldNotRun,
                format!("the {family} nat table could not be read ({why})"),
            );
        }
    };
    // The ingress drift is taken against the ingress chain alone: only its lines count.
    let ingress_lines = installed
        .ingress_drift
        .lines()
        .into_iter()
        .filter(|l| config.ingress.is_some() && l.contains(INGRESS_CHAIN));
    // Likewise the egress drift against the egress chain alone.
    let lines: Vec<String> = installed
        .egress_drift
        .lines()
        .into_iter()
        .filter(|l| !l.contains(INGRESS_CHAIN))
        .chain(ingress_lines)
        .collect();
    if lines.is_empty() {
        result(
            Status::Pass,
            format!(
                "the {family} rules of {} are installed as rendered",
                on.join(", ")
            ),
        )
    } else {
        result(
            Status::Fail,
            format!(
                "the {family} rules of {} differ from the configuration: {}",
                on.join(", "),
                lines.join("; ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::backend::iptables::IptablesBackend;
    use crate::backend::iptables::parse::installed_table;
    use crate::backend::iptables::render::{PLAN_OPTIONS, render_restore};
    use crate::ruleset::plan;
    use crate::verify::scope::inspect;
    use crate::verify::test_fixture::config;

    /// What verify makes of an `iptables-save` text, for configuration `c`.
    fn inspected(c: &ProxyConfig, saved: &str) -> Inspected {
        let backend = IptablesBackend::new(BackendKind::IptablesNft);
        let installed = crate::backend::Installed {
            families: vec![(Family::Ipv4, installed_table(saved))],
            ..crate::backend::Installed::nothing(BackendKind::IptablesNft)
        };
        inspect(&backend, c, Family::Ipv4, &installed)
    }

    fn rendered(c: &ProxyConfig) -> String {
        render_restore(&plan(c, Family::Ipv4, PLAN_OPTIONS))
    }

    #[test]
    fn mesh_rules_pass_as_rendered_and_fail_with_a_rule_missing() {
        let mut c = config();
        c.mesh.ignored_interfaces = vec!["tun0".into()];
        c.mesh.egress_included = Some(crate::config::IncludedDestinations {
            ipv4: vec!["10.0.0.0/8".parse().unwrap()],
            ipv6: Vec::new(),
        });
        let full = rendered(&c);
        let pass = inspect_mesh(&c, Family::Ipv4, Ok(&inspected(&c, &full)));
        assert_eq!(pass.status, Status::Pass, "{}", pass.reason);
        let without = full.replace("-A APPMESH_EGRESS -o tun0 -j RETURN\n", "");
        let fail = inspect_mesh(&c, Family::Ipv4, Ok(&inspected(&c, &without)));
        assert_eq!(fail.status, Status::Fail);
        assert!(
            fail.reason.contains("missing -A APPMESH_EGRESS -o tun0"),
            "{}",
            fail.reason
        );
    }

    #[test]
    fn hints_say_whether_the_egress_rules_are_installed_and_as_configured() {
        let c = config();
        let none = inspected(&c, "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        assert!(egress_rules_hint(Family::Ipv4, &none).contains("holds no APPMESH_EGRESS chain"));
        let full = rendered(&c);
        let installed = inspected(&c, &full);
        assert!(egress_rules_hint(Family::Ipv4, &installed).contains("read back as configured"));
        let without_uid: String = full
            .lines()
            .filter(|l| !l.contains("--uid-owner"))
            .map(|l| format!("{l}\n"))
            .collect();
        let hint = egress_rules_hint(Family::Ipv4, &inspected(&c, &without_uid));
        assert!(
            hint.contains("missing `-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN`"),
            "{hint}"
        );
    }

    #[test]
    fn ingress_is_checked_by_rule_inspection_and_says_so() {
        let c = config();
        let full = rendered(&c);
        let pass = inspect_ingress(&c, Family::Ipv4, Ok(&inspected(&c, &full)));
        assert_eq!(
            (pass.status, pass.evidence),
            (Status::Pass, Evidence::Rules)
        );
        assert!(pass.reason.contains("do not traverse PREROUTING"));
        let no_jump: String = full
            .lines()
            .filter(|l| !l.starts_with("-A PREROUTING"))
            .map(|l| format!("{l}\n"))
            .collect();
        let fail = inspect_ingress(&c, Family::Ipv4, Ok(&inspected(&c, &no_jump)));
        assert_eq!(fail.status, Status::Fail);
        assert!(
            fail.reason.contains("missing `-A PREROUTING"),
            "{}",
            fail.reason
        );
        let unread = inspect_ingress(&c, Family::Ipv4, Err("iptables-nft-save is not installed"));
        assert_eq!(unread.status, Status::CouldNotRun);
        let mut egress_only = c.clone();
        egress_only.ingress = None;
        assert_eq!(
            inspect_ingress(&egress_only, Family::Ipv4, Err("x")).status,
            Status::NotApplicable
        );
    }
}
