//! The README and docs/: every relative link resolves to a file in the repository, and every
//! `#anchor` to a heading of its target (GitHub's slugs); the README stays a landing page.

use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown pages: README.md and every docs/*.md.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// `[text](target)` links outside code spans and blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop inline code spans.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(j) = after.find(')') else { break };
            out.push(after[..j].to_string());
            rest = &after[j..];
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped but `-` and `_`, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap();
    text.lines().filter(|l| l.starts_with('#')).map(|l| slug(l.trim_start_matches('#'))).collect()
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').map_or((link.as_str(), None), |(f, a)| (f, Some(a)));
            let target = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            assert!(
                target.exists(),
                "{}: the link ({link}) points at {}, which is not there",
                page.display(),
                target.display()
            );
            if let Some(a) = anchor {
                assert!(
                    anchors(&target).iter().any(|h| h == a),
                    "{}: ({link}): no heading #{a} in {}",
                    page.display(),
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} links found: the parser is broken");
}

#[test]
fn the_readme_is_a_landing_page_and_every_doc_is_linked_from_it() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 150, "README.md has {lines} lines: move the detail into docs/");
    for page in pages().iter().skip(1) {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        assert!(readme.contains(&format!("]({name})")), "README.md does not link {name}");
    }
    assert!(
        readme.contains("make test") && readme.contains("make reproduce-table6"),
        "the two set-up commands"
    );
}

#[test]
fn the_link_checker_finds_broken_links_and_anchors() {
    assert_eq!(
        links("a [x](docs/a.md#b) `[no](code)` and [y](#z)\n```\n[no](block)\n```\n"),
        ["docs/a.md#b", "#z"]
    );
    assert_eq!(
        slug(" Table 6 and Figures 1 and 6: `make reproduce-table6`"),
        "table-6-and-figures-1-and-6-make-reproduce-table6"
    );
    assert_eq!(slug("Several workers: `JOBS=N`"), "several-workers-jobsn");
}

#[test]
fn the_metrics_columns_the_docs_list_are_those_written() {
    let text = std::fs::read_to_string(repo().join("docs/experiments.md")).unwrap();
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let listed = format!(
        "`metrics.csv` (every 100 iterations: `{}`;",
        resnet_repro::train::metrics::METRICS_COLUMNS.join(", ")
    );
    assert!(flat.contains(&listed), "docs/experiments.md does not list {listed}");
}

#[test]
fn the_nets_the_status_table_calls_queued_are_in_the_release_queue() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let queue: String = makefile
        .lines()
        .filter(|l| l.starts_with("RELEASE_DEPTHS :=") || l.starts_with("RELEASE_ONLY :="))
        .collect::<Vec<_>>()
        .join(",");
    let Some(row) = readme.lines().find(|l| l.contains("not trained yet")) else { return };
    let nets = row.split('|').nth(1).unwrap().trim().trim_start_matches("Table 6: ");
    for net in nets.split(", ") {
        let name = net.to_lowercase().replace('-', "");
        assert!(
            queue.split([',', ' ', '=']).any(|q| q == name || q.starts_with(&format!("{name}/"))),
            "the README calls {net} queued, but the Makefile's release queue does not train it: {queue}"
        );
    }
}
