//! The JSON Schema of each file kind, generated from the config types
//! (schemars), their doc comments becoming the descriptions editors show
//! on hover. `schema/<kind>.json` holds the committed copies, which
//! `config/tests/schema.rs` checks against these, and every example and
//! shipped scenario names its kind's copy on a `# yaml-language-server:
//! $schema=` line.
//!
//! A schema checks the shape (fields, types, enum values, units); the
//! rules that relate fields to each other stay with the loader, whose
//! errors say `file:line:column`.

use schemars::{schema_for, Schema};
use serde_json::{json, Value};

use crate::cluster::ClusterConfig;
use crate::control::ControlConfig;
use crate::load::FileKind;
use crate::origin::OriginConfig;
use crate::process::{CacheNodeFile, ProxyFile};
use crate::scenario::ScenarioConfig;
use crate::up::UpConfig;

/// The schema of a `kind:` file, `kind` included.
pub fn schema(kind: FileKind) -> Value {
    let schema: Schema = match kind {
        FileKind::Cluster => schema_for!(ClusterConfig),
        FileKind::Proxy => schema_for!(ProxyFile),
        FileKind::Cache => schema_for!(CacheNodeFile),
        FileKind::Origin => schema_for!(OriginConfig),
        FileKind::Up => schema_for!(UpConfig),
        FileKind::Control => schema_for!(ControlConfig),
        FileKind::Scenario => schema_for!(ScenarioConfig),
    };
    let mut value = schema.to_value();
    let object = value
        .as_object_mut()
        .expect("a schema of a struct is an object");
    object.insert("title".into(), json!(format!("Fanout `kind: {kind}` file")));
    // The loader takes `kind` off before the fields are read.
    let properties = object
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("properties is an object");
    properties.insert(
        "kind".into(),
        json!({ "const": kind.as_str(), "description": "What this file describes." }),
    );
    let required = object
        .entry("required")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("required is an array");
    required.insert(0, json!("kind"));
    value
}

/// [`schema`] as the committed file holds it.
pub fn schema_text(kind: FileKind) -> String {
    let mut text = serde_json::to_string_pretty(&schema(kind)).expect("a schema serialises");
    text.push('\n');
    text
}

/// `docs/config.md`: every field of every kind, from the same schemas,
/// with its type, default and meaning. `config/tests/schema.rs` checks
/// the committed copy.
pub fn reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the config types (`config/src/schema.rs`); do not edit by\n\
         hand: `FANOUT_BLESS=1 cargo test -p fanout-config --test schema` rewrites\n\
         it with `schema/`. Every file starts with `kind:`; the loader checks more\n\
         than these fields' shapes (ranges, and how fields relate) and names\n\
         `file:line:column` when it refuses one. Durations take a unit (`250ms`,\n\
         `2s`, `1m30s`); sizes a byte count or `KiB/MiB/GiB` (1024) or\n\
         `KB/MB/GB` (1000). `[]` marks a list's elements.\n",
    );
    for kind in FileKind::ALL {
        let root = schema(kind);
        out.push_str(&format!(
            "\n## `kind: {kind}`\n\nSchema: [`schema/{kind}.json`](../schema/{kind}.json).\n\n"
        ));
        out.push_str("| field | type | default | meaning |\n|---|---|---|---|\n");
        let mut rows = Vec::new();
        fields(&root, &root, "", &mut rows, 0);
        for (path, ty, default, meaning) in rows {
            out.push_str(&format!("| `{path}` | {ty} | {default} | {meaning} |\n"));
        }
    }
    out
}

type Row = (String, String, String, String);

/// The definition `node` points to, if it is a `$ref`.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> (&'a Value, Option<&'a str>) {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or(r);
            (root.pointer(&r[1..]).unwrap_or(node), Some(name))
        }
        None => (node, None),
    }
}

fn fields(root: &Value, node: &Value, path: &str, rows: &mut Vec<Row>, depth: usize) {
    let (def, _) = resolve(root, node);
    let Some(props) = def.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = def
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, field) in props {
        let path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        // A field without a doc comment of its own borrows its type's,
        // unless that is only what a duration or a size is.
        let (target, target_name) = resolve(root, field);
        let generic = matches!(target_name, Some("Duration" | "Size" | "HostPort"));
        let meaning = field
            .get("description")
            .or_else(|| target.get("description").filter(|_| !generic))
            .and_then(Value::as_str)
            .unwrap_or("")
            .split("\n\n")
            .next()
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        let default = match field.get("default") {
            Some(Value::String(s)) => format!("`{s}`"),
            Some(Value::Null) | None if required.contains(&name.as_str()) => "required".into(),
            Some(Value::Null) | None => String::new(),
            Some(v) => format!("`{v}`"),
        };
        rows.push((path.clone(), type_name(root, field), default, meaning));
        if depth < 8 {
            for (inner, suffix) in children(root, field) {
                fields(root, inner, &format!("{path}{suffix}"), rows, depth + 1);
            }
        }
    }
}

/// The object schemas a field holds, with the path suffix that leads in.
fn children<'a>(root: &'a Value, field: &'a Value) -> Vec<(&'a Value, &'static str)> {
    let (def, _) = resolve(root, field);
    if let Some(items) = def.get("items") {
        return children(root, items)
            .into_iter()
            .map(|(v, _)| (v, "[]"))
            .collect();
    }
    if let Some(any) = def.get("anyOf").or_else(|| def.get("oneOf")) {
        return any
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|v| children(root, v))
            .take(1)
            .collect();
    }
    if def.get("properties").is_some() {
        return vec![(def, "")];
    }
    Vec::new()
}

fn type_name(root: &Value, field: &Value) -> String {
    let (def, name) = resolve(root, field);
    if let Some(values) = def.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect();
        return names.join(" \\| ");
    }
    if let Some(c) = def.get("const") {
        return format!("`{}`", c.as_str().unwrap_or("?"));
    }
    if let Some(alts) = def.get("oneOf").and_then(Value::as_array) {
        // Unit variants, one schema each.
        let names: Vec<String> = alts.iter().map(|a| type_name(root, a)).collect();
        if names.iter().all(|n| n.starts_with('`')) {
            return names.join(" \\| ");
        }
    }
    match name {
        Some("Duration") => return "duration".into(),
        Some("Size") => return "size".into(),
        Some("HostPort") => return "host:port".into(),
        Some(n) if def.get("properties").is_some() => return format!("object ({n})"),
        Some(n) if def.get("type").and_then(Value::as_str) == Some("string") => return n.into(),
        _ => {}
    }
    if let Some(any) = def.get("anyOf").and_then(Value::as_array) {
        let names: Vec<String> = any
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .map(|v| type_name(root, v))
            .collect();
        return names.join(" or ");
    }
    match def.get("type") {
        Some(Value::String(t)) if t == "array" => match def.get("items") {
            Some(items) => format!("list of {}", type_name(root, items)),
            None => "list".into(),
        },
        Some(Value::String(t)) => {
            let range = match (def.get("minimum"), def.get("maximum")) {
                (Some(lo), Some(hi)) => format!(" ({lo}..={hi})"),
                _ => String::new(),
            };
            format!("{t}{range}")
        }
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}
