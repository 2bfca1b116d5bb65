//! Keeps ARCHITECTURE.md's layering claims true by reading the sources: which modules may
//! name a concrete backend, that the pure core imports nothing of the shell, that
//! `error.rs` and `backend_kind.rs` import no backend, that
//! clap stays at the edge, that the iptables backends reach nf_tables only through the
//! shared seam, and that the netlink crate knows nothing of meshinit.

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every `.rs` file under `dir`, as paths relative to the repository (`src/...`).
fn rust_files(dir: &str) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&Path::new(ROOT).join(dir), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            let relative = p.strip_prefix(ROOT).unwrap().to_string_lossy().into_owned();
            (relative, text)
        })
        .collect()
}

/// The lines of `text` that are code (not `//` comments), with their numbers.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line))
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
}

/// `file:line: text` for each code line of the files `include` accepts that contains any
/// of `words`.
fn offending(
    files: &[(String, String)],
    include: impl Fn(&str) -> bool,
    words: &[&str],
) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files.iter().filter(|(path, _)| include(path)) {
        for (number, line) in code_lines(text) {
            if words.iter().any(|w| line.contains(w)) {
                found.push(format!("{path}:{number}: {}", line.trim()));
            }
        }
    }
    found
}

/// Modules outside `src/backend/` that may name a concrete backend, as ARCHITECTURE.md
/// lists them: each prints or reads one backend's own text.
const NAMING_A_BACKEND_ALLOWED: [&str; 0] = [];

/// A file without its unit tests (the `#[cfg(test)] mod tests` at its end): tests may take
/// one backend's text as their fixture; what ships may not name it.
fn without_unit_tests((path, text): &(String, String)) -> (String, String) {
    let shipped = text
        .find("\n#[cfg(test)]\nmod tests {")
        .map_or(text.as_str(), |end| &text[..end]);
    (path.clone(), shipped.to_owned())
}

#[test]
fn no_module_outside_backend_names_a_concrete_backend_but_the_listed_ones() {
    let files: Vec<_> = rust_files("src").iter().map(without_unit_tests).collect();
    let found = offending(
        &files,
        |path| !path.starts_with("src/backend/") && !NAMING_A_BACKEND_ALLOWED.contains(&path),
        &[
            "IptablesBackend",
            "NftablesBackend",
            "backend::iptables",
            "backend::nftables",
            "backend::netfilter",
        ],
    );
    assert!(
        found.is_empty(),
        "concrete backends named outside src/backend/ (go through backend::select, \
         backend::all or backend::by_kind, or list the module in ARCHITECTURE.md and here):\n{}",
        found.join("\n")
    );
}

/// The pure core: configuration, the planned model and the explanation. It decides; the
/// shell (backends, the engine, namespaces, probes, the edges) carries it out.
fn is_core(path: &str) -> bool {
    let test_file = path.ends_with("/tests.rs") || path.ends_with("_tests.rs");
    !test_file
        && (path.starts_with("src/config/")
            || path.starts_with("src/ruleset/")
            || path == "src/explain.rs"
            || path == "src/backend_kind.rs")
}

#[test]
fn the_core_imports_nothing_of_the_shell() {
    let files: Vec<_> = rust_files("src").iter().map(without_unit_tests).collect();
    let found = offending(
        &files,
        is_core,
        &[
            "crate::backend::",
            "crate::backend;",
            "crate::converge",
            "crate::commands",
            "crate::cni",
            "crate::verify",
            "crate::netns",
            "crate::namespace_entry",
            "crate::conntrack",
            "crate::privileges",
            "nftables_netlink",
        ],
    );
    assert!(
        found.is_empty(),
        "the core (config, ruleset, explain) must not import the shell; pass what it needs \
         down instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn errors_and_the_backend_kind_import_no_backend() {
    let files = rust_files("src");
    let found = offending(
        &files,
        |path| path == "src/error.rs",
        &["crate::backend::", "crate::backend;", "crate::{backend"],
    );
    assert_eq!(
        found,
        Vec::<String>::new(),
        "error.rs must stay below backend"
    );
    let found = offending(&files, |path| path == "src/backend_kind.rs", &["crate::"]);
    assert_eq!(found, Vec::<String>::new(), "backend_kind.rs is a leaf");
}

#[test]
fn clap_only_at_the_edge() {
    let files = rust_files("src");
    let found = offending(
        &files,
        |path| !path.starts_with("src/commands/") && path != "src/main.rs",
        &["clap::", "use clap", "#[arg(", "#[command(", "#[value("],
    );
    assert!(
        found.is_empty(),
        "clap outside src/commands/ and main.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn iptables_backends_reach_nf_tables_only_through_the_shared_seam() {
    let files = rust_files("src/backend/iptables");
    let found = offending(
        &files,
        |_| true,
        &["super::nftables", "backend::nftables", "NftablesBackend"],
    );
    assert!(
        found.is_empty(),
        "iptables calls into the native backend (use backend::netfilter):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_netlink_crate_knows_nothing_of_meshinit() {
    let manifest =
        fs::read_to_string(Path::new(ROOT).join("crates/nftables-netlink/Cargo.toml")).unwrap();
    for line in manifest.lines() {
        assert!(
            !line.contains("path ="),
            "the crate must build from crates.io alone: {line}"
        );
    }
    let files = rust_files("crates/nftables-netlink/src");
    assert!(!files.is_empty());
    let found = offending(
        &files,
        |_| true,
        &["meshinit", "crate::config", "crate::ruleset"],
    );
    assert!(
        found.is_empty(),
        "the netlink crate names meshinit:\n{}",
        found.join("\n")
    );
    // Nor does meshinit's policy live there: the table's name and the rendering are ours.
    assert!(!Path::new(ROOT).join("src/nftables").exists());
}
