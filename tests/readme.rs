//! The README and docs as a user meets them: the two commands are the ones
//! CI runs, every headline figure was written by the benchmark script its
//! row names (not typed in), and every relative link leads to a file.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_two_commands_are_the_demo_and_the_suite_ci_runs() {
    let readme = read(&root().join("README.md"));
    assert!(readme.contains("cargo run --release -- up --demo"));
    assert!(readme.contains("cargo test --workspace"));
    let ci = read(&root().join(".ci/run"));
    assert!(
        ci.contains("cargo test --workspace --locked"),
        "CI runs another test command than the README gives"
    );
}

#[test]
fn every_headline_figure_comes_from_the_script_its_row_names() {
    let readme = read(&root().join("README.md"));
    let start = readme
        .find("<!-- headline figures:")
        .expect("the README has a headline table");
    let end = readme[start..]
        .find("<!-- end of headline figures -->")
        .map(|e| start + e)
        .expect("the headline table ends");
    let rows: Vec<&str> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| measure") && !l.starts_with("|---"))
        .collect();
    assert!(!rows.is_empty(), "the headline table is empty");
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 4, "measure, figure, command, date: {row}");
        let (measure, command, date) = (cells[0], cells[2], cells[3]);
        let script = command
            .trim_matches('`')
            .split_whitespace()
            .find(|w| w.starts_with("loadtest/bench/"))
            .unwrap_or_else(|| panic!("no benchmark script in {command}"));
        let text = read(&root().join(script));
        assert!(
            text.contains("record_headline"),
            "{script} does not write headline rows, so {measure:?} was typed in"
        );
        // The measure's fixed words (before any figure the script fills in)
        // are in the script that writes it.
        let words: String = measure
            .split(' ')
            .take_while(|w| !w.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains(&words),
            "{script} does not write the row {measure:?}"
        );
        let parts: Vec<&str> = date.split('-').collect();
        assert!(
            parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
            "date {date:?} in {row}"
        );
    }
}

#[test]
fn relative_links_in_the_readme_and_docs_lead_to_files() {
    let mut pages: Vec<PathBuf> = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            pages.push(e.path());
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(page);
        let mut in_fence = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
            }
            if in_fence {
                continue;
            }
            for (i, _) in line.match_indices("](") {
                let rest = &line[i + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.contains("://")
                    || target.starts_with('#')
                    || target.starts_with("mailto:")
                {
                    continue;
                }
                let file = target.split('#').next().unwrap_or("");
                let path = page.parent().unwrap().join(file);
                if !path.exists() {
                    broken.push(format!("{}: {target}", page.display()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing:\n{}",
        broken.join("\n")
    );
}
