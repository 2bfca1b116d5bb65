//! The words of a rule as `iptables-save` prints it: whitespace-separated, with double
//! quotes around words that hold spaces (comments), and backslash escapes inside quotes.
//! Each word comes with whether it was quoted: a quoted `-j X` is a comment's text.

/// Splits `spec` into words, quotes removed. Quoted words are compared by their content, so
/// a comment with `-j X` inside it is never taken for a target.
pub fn words(spec: &str) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    let bytes = spec.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if bytes[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push((&spec[start..j.min(bytes.len())], true));
            i = j + 1;
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push((&spec[start..i], false));
        }
    }
    out
}

/// The chain a rule jumps (`-j`, `--jump`) or goes (`-g`, `--goto`) to.
pub fn target(spec: &str) -> Option<&str> {
    let words = words(spec);
    words
        .windows(2)
        .find(|pair| {
            !pair[0].1 && matches!(pair[0].0, "-j" | "--jump" | "-g" | "--goto") && !pair[1].1
        })
        .map(|pair| pair[1].0)
}

/// The names after every `--match-set`.
pub fn match_sets(spec: &str) -> Vec<&str> {
    let words = words(spec);
    words
        .windows(2)
        .filter(|pair| !pair[0].1 && pair[0].0 == "--match-set")
        .map(|pair| pair[1].0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_shape_iptables_save_prints_has_its_target_found() {
        for (spec, want) in [
            ("-j APPMESH_EGRESS", Some("APPMESH_EGRESS")),
            ("-g APPMESH_EGRESS", Some("APPMESH_EGRESS")),
            ("--goto APPMESH_EGRESS", Some("APPMESH_EGRESS")),
            (
                "-p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
                Some("APPMESH_EGRESS"),
            ),
            (
                "-p tcp -m comment --comment \"say -j X \\\"quoted\\\"\" -j APPMESH_INGRESS",
                Some("APPMESH_INGRESS"),
            ),
            ("-m comment --comment \"-j APPMESH_EGRESS\"", None),
            ("-p tcp -j REDIRECT --to-ports 15001", Some("REDIRECT")),
            ("-p udp", None),
        ] {
            assert_eq!(target(spec), want, "{spec}");
        }
    }

    #[test]
    fn matched_sets_are_listed() {
        assert_eq!(
            match_sets(
                "-p tcp -m set --match-set APPMESH_X dst -m set --match-set Y src -j RETURN"
            ),
            vec!["APPMESH_X", "Y"]
        );
    }
}
