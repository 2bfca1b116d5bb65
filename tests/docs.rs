//! Keeps the documentation navigable: every relative link in README.md, CONTRIBUTING.md,
//! ARCHITECTURE.md, BENCHMARKS.md and docs/*.md leads to a file that exists, and a link to
//! a heading (`file.md#anchor`) to a heading that exists, as GitHub names it; the README
//! stays a five-minute read, with its property table between the markers the code renders
//! it into.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The README's length limit, in lines: what a newcomer reads in about five minutes.
const README_MAX_LINES: usize = 300;

/// The documentation files whose links are checked, relative to the repository.
fn documentation() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "README.md",
        "CONTRIBUTING.md",
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let mut docs: Vec<PathBuf> = fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("a readable docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| {
            path.strip_prefix(ROOT)
                .expect("under the root")
                .to_path_buf()
        })
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// What one markdown file holds that links depend on.
struct Markdown {
    /// Link and image destinations, in order.
    links: Vec<String>,
    /// The anchors GitHub gives its headings.
    anchors: HashSet<String>,
}

/// The anchor GitHub gives a heading: lower case, every character but letters, digits,
/// spaces, `-` and `_` removed, spaces turned into `-`.
fn github_anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn read_markdown(path: &Path) -> Markdown {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut links = Vec::new();
    let mut anchors = HashSet::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(&text, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                links.push(dest_url.to_string())
            }
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = github_anchor(&heading.take().unwrap_or_default());
                // GitHub numbers repeated headings: `x`, `x-1`, `x-2`.
                let mut anchor = base.clone();
                let mut n = 0;
                while !anchors.insert(anchor.clone()) {
                    n += 1;
                    anchor = format!("{base}-{n}");
                }
            }
            _ => {}
        }
    }
    Markdown { links, anchors }
}

/// Every broken relative link of `file` (relative to the repository), as messages.
fn broken_links(file: &Path) -> Vec<String> {
    let root = Path::new(ROOT);
    let doc = read_markdown(&root.join(file));
    let mut broken = Vec::new();
    for link in &doc.links {
        if link.contains("://") || link.starts_with("mailto:") {
            continue;
        }
        let (target, anchor) = match link.split_once('#') {
            Some((target, anchor)) => (target, Some(anchor)),
            None => (link.as_str(), None),
        };
        let target_path = if target.is_empty() {
            root.join(file)
        } else {
            root.join(file.parent().unwrap_or(Path::new("")))
                .join(target)
        };
        if !target_path.exists() {
            broken.push(format!(
                "{}: {link}: no file {}",
                file.display(),
                target_path.display()
            ));
            continue;
        }
        let Some(anchor) = anchor else { continue };
        if target_path.extension().is_some_and(|ext| ext == "md") {
            let anchors = if target.is_empty() {
                &doc.anchors
            } else {
                &read_markdown(&target_path).anchors
            };
            if !anchors.contains(anchor) {
                broken.push(format!(
                    "{}: {link}: {} has no heading with the anchor #{anchor}",
                    file.display(),
                    target_path.display()
                ));
            }
        }
    }
    broken
}

#[test]
fn anchors_are_named_as_github_names_them() {
    assert_eq!(github_anchor("What is meshinit's"), "what-is-meshinits");
    assert_eq!(
        github_anchor("meshinit cni install / cni uninstall"),
        "meshinit-cni-install--cni-uninstall"
    );
    assert_eq!(
        github_anchor("Why did my connection (not) go through the proxy?"),
        "why-did-my-connection-not-go-through-the-proxy"
    );
    assert_eq!(github_anchor("Use apply --verify"), "use-apply---verify");
}

#[test]
fn every_relative_link_leads_to_a_file_and_heading_that_exist() {
    let files = documentation();
    assert!(files.len() > 4, "the docs/ pages are found: {files:?}");
    let broken: Vec<String> = files.iter().flat_map(|file| broken_links(file)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_broken_link_check_finds_a_missing_file_and_a_missing_heading() {
    let dir = Path::new(ROOT).join("target").join("docs-test");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("page.md"),
        "# Page\n\n## A heading\n\n[ok](#a-heading) [gone](#no-heading) [file](missing.md) \
         `[in code](missing-too.md)` [self](page.md#page)\n",
    )
    .unwrap();
    let broken = broken_links(Path::new("target/docs-test/page.md"));
    assert_eq!(broken.len(), 2, "{broken:#?}");
    assert!(broken[0].contains("#no-heading"), "{broken:#?}");
    assert!(broken[1].contains("missing.md"), "{broken:#?}");
}

#[test]
fn the_readme_stays_a_five_minute_read() {
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines (at most {README_MAX_LINES}): move details into docs/"
    );
}

#[test]
fn the_readme_holds_the_property_table_between_its_markers() {
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let (_, rest) = readme
        .split_once("<!-- properties:begin -->\n")
        .expect("README.md has <!-- properties:begin -->");
    let (table, _) = rest
        .split_once("<!-- properties:end -->")
        .expect("README.md has <!-- properties:end --> after the begin marker");
    let mut rows = table.lines();
    assert_eq!(
        rows.next(),
        Some("| ECS property | CNI key | Environment | Flag | Pod annotation | Value | Meaning |")
    );
    assert!(rows.next().is_some_and(|l| l.starts_with("|---")));
    let properties: Vec<&str> = rows.collect();
    assert!(
        properties
            .iter()
            .all(|row| row.starts_with("| ") && row.matches(" | ").count() == 6),
        "one row of 7 cells per property: {properties:#?}"
    );
    assert!(properties.len() >= 8, "{properties:#?}");
}

#[test]
fn every_page_of_the_documentation_is_linked_from_the_readme() {
    let readme = read_markdown(&Path::new(ROOT).join("README.md"));
    let linked: HashSet<&str> = readme
        .links
        .iter()
        .map(|link| {
            link.split_once('#')
                .map_or(link.as_str(), |(target, _)| target)
        })
        .collect();
    let unlinked: Vec<String> = documentation()
        .into_iter()
        .filter(|file| file != Path::new("README.md"))
        .map(|file| file.to_string_lossy().into_owned())
        .filter(|file| !linked.contains(file.as_str()))
        .collect();
    assert!(unlinked.is_empty(), "README.md links none of {unlinked:?}");
}
