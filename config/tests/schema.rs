//! The committed JSON Schemas (`schema/<kind>.json`) are the ones the
//! config types make, and every example and shipped scenario names its
//! kind's schema and passes it, docs/config.md is the reference the same
//! types make, checked by an independent validator (the
//! `jsonschema` crate). `FANOUT_BLESS=1 cargo test -p fanout-config --test
//! schema` rewrites the committed schemas after a change to the types.

use std::path::{Path, PathBuf};

use fanout_config::schema::{reference, schema, schema_text};
use fanout_config::FileKind;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn committed(kind: FileKind) -> PathBuf {
    root().join("schema").join(format!("{kind}.json"))
}

#[test]
fn the_configuration_reference_is_the_one_the_types_make() {
    let path = root().join("docs/config.md");
    let made = reference();
    if std::env::var_os("FANOUT_BLESS").is_some() {
        std::fs::write(&path, &made).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == made,
        "docs/config.md is stale: run FANOUT_BLESS=1 cargo test -p fanout-config --test schema and commit it"
    );
    // Every field of every kind is in it.
    for field in [
        "sites[].cache.slice",
        "cache_nodes[].capacity",
        "hot_tier.max_object_size",
    ] {
        assert!(made.contains(&format!("`{field}`")), "{field} missing");
    }
}

#[test]
fn the_committed_schemas_are_the_ones_the_types_make() {
    let bless = std::env::var_os("FANOUT_BLESS").is_some();
    for kind in FileKind::ALL {
        let made = schema_text(kind);
        let path = committed(kind);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &made).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == made,
            "{} is stale: the config types changed. Run FANOUT_BLESS=1 cargo test -p fanout-config --test schema and commit schema/",
            path.display()
        );
    }
}

/// Every file with a `kind:` line under examples/ and loadtest/scenarios/.
fn shipped_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root().join("examples"), root().join("loadtest/scenarios")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.lines().any(|l| l.starts_with("kind:")) {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    assert!(out.len() >= 20, "found only {out:?}");
    out
}

fn kind_of(text: &str) -> FileKind {
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("kind:"))
        .unwrap()
        .trim();
    *FileKind::ALL.iter().find(|k| k.as_str() == name).unwrap()
}

#[test]
fn every_example_names_its_schema_and_passes_it() {
    for path in shipped_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let kind = kind_of(&text);
        // Editors find the schema from the first line.
        let named = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no `# yaml-language-server: $schema=` first line",
                    path.display()
                )
            });
        let target = path.parent().unwrap().join(named);
        assert_eq!(
            target.canonicalize().ok(),
            committed(kind).canonicalize().ok(),
            "{}: names {named}, not schema/{kind}.json",
            path.display()
        );
        let document: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let validator = jsonschema::validator_for(&schema(kind)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn the_schema_refuses_what_the_loader_refuses() {
    let cluster = schema(FileKind::Cluster);
    let validator = jsonschema::validator_for(&cluster).unwrap();
    let ok = "kind: cluster\nsites:\n  - name: s\n    hosts: [a.example]\n    origin: { addresses: ['127.0.0.1:80'] }\n    cache: { max_object_size: 64MiB, default_ttl: 2s }\n";
    let yaml = |s: &str| serde_yaml::from_str::<serde_json::Value>(s).unwrap();
    assert!(validator.is_valid(&yaml(ok)));
    for bad in [
        ok.replace("default_ttl", "default_tll"),
        ok.replace("2s", "two seconds"),
        ok.replace("64MiB", "lots"),
        ok.replace("kind: cluster", "kind: proxy"),
        ok.replace("cache: {", "cache: { query: { mode: shuffle }, "),
    ] {
        assert!(!validator.is_valid(&yaml(&bad)), "accepted:\n{bad}");
    }
}
