//! Names of the ipsets that hold long lists, and which sets are meshinit's.
//!
//! A set is named after its content (`APPMESH_IGNORED_NET4_1a2b3c4d`): a changed list gets a
//! new set, filled while no rule refers to it, and the rule transaction that switches to it
//! is the one atomic step. A crash at any moment therefore leaves rules that match a set
//! holding exactly the members they were planned with. A set is filled under a staging name
//! (`APPMESH_TMP_NET4_1a2b3c4d`) and renamed when complete, so a set under its final name is
//! always whole.
//!
//! A long egress include list is a set of its own, `APPMESH_INCLUDED_NET{4,6}_<8 hex>`
//! (staged as `APPMESH_TMP_INCNET{4,6}_<8 hex>`): its rule redirects where an ignored
//! list's returns, so the two never share a set even with the same members.
//!
//! Ownership: meshinit owns exactly the sets named `APPMESH_IGNORED_{NET,PORT}{4,6}_<8 hex>`,
//! `APPMESH_INCLUDED_NET{4,6}_<8 hex>`, `APPMESH_TMP_{NET,PORT,INCNET}{4,6}_<8 hex>`, plus
//! the names earlier versions used (`APPMESH_IGNORED_{NET,PORT}{4,6}` and their `_NEW`
//! staging sets). Any other set, whatever its prefix, is someone else's.

use std::hash::Hasher;

use super::{Family, SetKind, SetMembers, SetPurpose};

const FINAL_PREFIX: &str = "APPMESH_IGNORED_";
const INCLUDED_PREFIX: &str = "APPMESH_INCLUDED_";
const STAGING_PREFIX: &str = "APPMESH_TMP_";
/// Before the list name of an included set's staging name (`APPMESH_TMP_INCNET4_…`).
const INCLUDED_STAGING_MARK: &str = "INC";

fn list_name(kind: SetKind, family: Family) -> String {
    let kind = match kind {
        SetKind::Networks => "NET",
        SetKind::Ports => "PORT",
    };
    format!("{kind}{}", family.suffix())
}

/// The name of the set holding `members` for `purpose`.
pub fn versioned_name(
    purpose: SetPurpose,
    kind: SetKind,
    family: Family,
    members: &SetMembers,
) -> String {
    // FNV-1a: stable across Rust versions and machines, unlike std's hasher.
    let mut hasher = fnv::FnvHasher::default();
    let mut add = |member: String| {
        hasher.write(member.as_bytes());
        hasher.write_u8(b'\n');
    };
    match members {
        SetMembers::Networks(nets) => nets.iter().for_each(|n| add(n.to_string())),
        SetMembers::Ports(ports) => ports
            .iter()
            .for_each(|p| add(format!("{}-{}", p.first, p.last))),
    }
    let hash = hasher.finish();
    let folded = (hash ^ (hash >> 32)) as u32;
    let prefix = match purpose {
        SetPurpose::Ignored => FINAL_PREFIX,
        SetPurpose::Included => INCLUDED_PREFIX,
    };
    format!("{prefix}{}_{folded:08x}", list_name(kind, family))
}

/// The name a set is filled under before it is renamed to `final_name`.
pub fn staging_name(final_name: &str) -> String {
    if let Some(rest) = final_name.strip_prefix(INCLUDED_PREFIX) {
        return format!("{STAGING_PREFIX}{INCLUDED_STAGING_MARK}{rest}");
    }
    format!(
        "{STAGING_PREFIX}{}",
        final_name.strip_prefix(FINAL_PREFIX).unwrap_or(final_name)
    )
}

/// Whether meshinit owns the set `name` (see the module documentation).
pub fn is_own_set(name: &str) -> bool {
    is_own_ignored_set(name) || is_own_included_set(name)
}

/// `APPMESH_INCLUDED_NET{4,6}_<8 hex>` or its staging name.
fn is_own_included_set(name: &str) -> bool {
    let rest = name.strip_prefix(INCLUDED_PREFIX).or_else(|| {
        name.strip_prefix(STAGING_PREFIX)?
            .strip_prefix(INCLUDED_STAGING_MARK)
    });
    let Some((list, version)) = rest.and_then(|r| r.split_once('_')) else {
        return false;
    };
    ["NET4", "NET6"].contains(&list)
        && version.len() == 8
        && version.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_own_ignored_set(name: &str) -> bool {
    let rest = name
        .strip_prefix(FINAL_PREFIX)
        .or_else(|| name.strip_prefix(STAGING_PREFIX));
    let Some(rest) = rest else {
        return false;
    };
    let (list, version) = match rest.split_once('_') {
        Some((list, version)) => (list, Some(version)),
        None => (rest, None),
    };
    let list_ok = ["NET4", "NET6", "PORT4", "PORT6"].contains(&list);
    let legacy_name = name.starts_with(FINAL_PREFIX) && matches!(version, None | Some("NEW"));
    let versioned =
        version.is_some_and(|v| v.len() == 8 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    list_ok && (legacy_name || versioned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::Networks;

    #[test]
    fn names_fit_ipset_and_follow_the_content() {
        let nets = |n: &str| SetMembers::Networks(Networks::V4(vec![n.parse().unwrap()]));
        let a = versioned_name(
            SetPurpose::Ignored,
            SetKind::Networks,
            Family::Ipv4,
            &nets("10.0.0.0/8"),
        );
        let b = versioned_name(
            SetPurpose::Ignored,
            SetKind::Networks,
            Family::Ipv4,
            &nets("10.0.0.0/9"),
        );
        assert_ne!(a, b);
        assert_eq!(
            a,
            versioned_name(
                SetPurpose::Ignored,
                SetKind::Networks,
                Family::Ipv4,
                &nets("10.0.0.0/8")
            )
        );
        let port = SetMembers::Ports(vec![crate::config::PortRange::single(1)]);
        let longest = versioned_name(SetPurpose::Ignored, SetKind::Ports, Family::Ipv6, &port);
        // IPSET_MAXNAMELEN is 32 with the terminating NUL.
        assert!(
            longest.len() <= 31 && staging_name(&longest).len() <= 31,
            "{longest}"
        );
        assert!(is_own_set(&a) && is_own_set(&staging_name(&a)) && is_own_set(&longest));
        // An include list's set is never the ignored list's, even with the same members.
        let included = versioned_name(
            SetPurpose::Included,
            SetKind::Networks,
            Family::Ipv6,
            &nets("10.0.0.0/8"),
        );
        assert_ne!(included, a);
        assert!(included.starts_with("APPMESH_INCLUDED_NET6_"), "{included}");
        assert!(included.len() <= 31 && staging_name(&included).len() <= 31);
        assert!(is_own_set(&included) && is_own_set(&staging_name(&included)));
        assert_ne!(staging_name(&included), included);
    }

    #[test]
    fn only_the_names_meshinit_writes_are_its_own() {
        for ours in [
            "APPMESH_INCLUDED_NET4_0123abcd",
            "APPMESH_TMP_INCNET6_0123abcd",
            "APPMESH_IGNORED_NET4",
            "APPMESH_IGNORED_PORT6",
            "APPMESH_IGNORED_NET4_NEW",
            "APPMESH_IGNORED_NET6_0123abcd",
            "APPMESH_TMP_PORT4_0123abcd",
        ] {
            assert!(is_own_set(ours), "{ours}");
        }
        for foreign in [
            "APPMESH_FOREIGN",
            "APPMESH_IGNORED_NET5",
            "APPMESH_IGNORED_NET4_xyz",
            "APPMESH_TMP_NET4",
            "APPMESH_TMP_NET4_NEW",
            "APPMESH_IGNORED_NET4_0123abcd_X",
            "APPMESH_INCLUDED_PORT4_0123abcd",
            "APPMESH_INCLUDED_NET4",
            "APPMESH_TMP_INCNET4",
            "APPMESH_TMP_INCPORT4_0123abcd",
            "KUBE-SVC",
        ] {
            assert!(!is_own_set(foreign), "{foreign}");
        }
    }
}
