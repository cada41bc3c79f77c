//! Reading a file into a validated value: YAML syntax, the `kind:` line,
//! typed fields (serde), then semantic checks. Every error on the way is
//! reported as `file:line:column: field: problem; allowed: ...`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::cluster::ClusterConfig;
use crate::control::ControlConfig;
use crate::error::{ConfigError, ConfigErrors, Location};
use crate::origin::OriginConfig;
use crate::positions::Positions;
use crate::process::{CacheNodeConfig, CacheNodeFile, ProxyConfig, ProxyFile};
use crate::scenario::ScenarioConfig;
use crate::up::UpConfig;
use crate::validate::{Finding, Validator};

/// What a file describes, from its `kind:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Cluster,
    Proxy,
    Cache,
    Origin,
    Up,
    Control,
    Scenario,
}

impl FileKind {
    pub const ALL: [FileKind; 7] = [
        FileKind::Cluster,
        FileKind::Proxy,
        FileKind::Cache,
        FileKind::Origin,
        FileKind::Up,
        FileKind::Control,
        FileKind::Scenario,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Cluster => "cluster",
            FileKind::Proxy => "proxy",
            FileKind::Cache => "cache",
            FileKind::Origin => "origin",
            FileKind::Up => "up",
            FileKind::Control => "control",
            FileKind::Scenario => "scenario",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const KINDS_ALLOWED: &str = "kind: cluster, proxy, cache, origin, up, control or scenario";

/// Any Fanout file, loaded and validated.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per file loaded; the loaders hand out the variants unboxed"
)]
pub enum AnyConfig {
    Cluster(ClusterConfig),
    Proxy(ProxyConfig),
    Cache(CacheNodeConfig),
    Origin(OriginConfig),
    Up(Box<UpConfig>),
    Control(ControlConfig),
    Scenario(Box<ScenarioConfig>),
}

impl AnyConfig {
    pub fn kind(&self) -> FileKind {
        match self {
            AnyConfig::Cluster(_) => FileKind::Cluster,
            AnyConfig::Proxy(_) => FileKind::Proxy,
            AnyConfig::Cache(_) => FileKind::Cache,
            AnyConfig::Origin(_) => FileKind::Origin,
            AnyConfig::Up(_) => FileKind::Up,
            AnyConfig::Control(_) => FileKind::Control,
            AnyConfig::Scenario(_) => FileKind::Scenario,
        }
    }
}

/// A parsed document, kept with what is needed to point into its text.
struct Document {
    file: PathBuf,
    positions: Positions,
    kind: FileKind,
    body: serde_yaml::Value,
}

impl Document {
    fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    fn error_at(
        &self,
        path: &str,
        at: Option<Location>,
        problem: String,
        allowed: String,
    ) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            location: at,
            path: path.to_string(),
            problem,
            allowed,
        }
    }

    fn findings(&self, findings: Vec<Finding>) -> ConfigErrors {
        let mut errors: Vec<ConfigError> = findings
            .into_iter()
            .map(|f| {
                let at = self.positions.value(&f.path);
                self.error_at(&f.path, at, f.problem, f.allowed)
            })
            .collect();
        errors.sort_by_key(|e| e.location);
        ConfigErrors(errors)
    }

    /// Typed deserialisation with the field path of the first error.
    fn typed<T: DeserializeOwned>(&self) -> Result<T, ConfigErrors> {
        serde_path_to_error::deserialize(self.body.clone()).map_err(|e| {
            let path = match e.path().to_string() {
                p if p == "." => String::new(),
                p => p,
            };
            let message = e.inner().to_string();
            ConfigErrors(vec![self.explain_serde(&path, &message)])
        })
    }

    fn explain_serde(&self, path: &str, message: &str) -> ConfigError {
        let join = |parent: &str, child: &str| {
            if parent.is_empty() {
                child.to_string()
            } else {
                format!("{parent}.{child}")
            }
        };
        if let Some(u) = Unknown::parse(message) {
            // Point at the offending key itself, not at its parent mapping.
            // serde_path_to_error's path already ends in the unknown field.
            let (field_path, at) = if u.what == "field" {
                // Inside an internally tagged enum (`viewer: live`) the path
                // stops at the mapping; the key itself is one level down.
                let last = path.rsplit(['.', '[']).next().unwrap_or("");
                let child = join(path, u.name);
                match self.positions.key(&child) {
                    Some(at) if last != u.name => (child, Some(at)),
                    _ => (path.to_string(), self.positions.key(path)),
                }
            } else {
                (path.to_string(), self.positions.value(path))
            };
            let mut problem = format!("unknown {} `{}`", u.what, u.name);
            if let Some(s) = u.suggestion() {
                problem.push_str(&format!(" (did you mean `{s}`?)"));
            }
            let allowed = if u.expected.is_empty() {
                "nothing here".to_string()
            } else {
                u.expected.join(", ")
            };
            return self.error_at(&field_path, at, problem, allowed);
        }
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            let at = self.positions.value(path);
            return self.error_at(
                &join(path, field),
                at,
                "missing required field".into(),
                format!("add `{field}:` here"),
            );
        }
        // Wrong types and values that failed to parse: serde and our parsers
        // already say what was expected.
        let (problem, allowed) = match message.split_once("; expected ") {
            Some((p, a)) => (p.to_string(), a.to_string()),
            None => match message.split_once(", expected ") {
                Some((p, a)) => (p.to_string(), a.to_string()),
                None => (message.to_string(), String::new()),
            },
        };
        self.error_at(path, self.positions.value(path), problem, allowed)
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" in parts.
struct Unknown<'a> {
    what: &'a str,
    name: &'a str,
    expected: Vec<&'a str>,
}

impl<'a> Unknown<'a> {
    fn parse(message: &'a str) -> Option<Self> {
        let rest = message.strip_prefix("unknown ")?;
        let (what, rest) = rest.split_once(" `")?;
        if what != "field" && what != "variant" {
            return None;
        }
        let (name, rest) = rest.split_once('`')?;
        let expected = rest.split('`').skip(1).step_by(2).collect();
        Some(Unknown {
            what,
            name,
            expected,
        })
    }

    /// The closest allowed name, if it is close enough to be a typo.
    fn suggestion(&self) -> Option<&'a str> {
        self.expected
            .iter()
            .map(|e| (strsim::jaro_winkler(self.name, e), *e))
            .filter(|(score, _)| *score >= 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, e)| e)
    }
}

fn read(file: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(file).map_err(|e| {
        ConfigErrors::single(
            file,
            format!("cannot read the file: {e}"),
            "a readable UTF-8 YAML file",
        )
    })
}

fn parse(file: &Path, text: &str) -> Result<Document, ConfigErrors> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let location = e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        });
        // serde_yaml appends " at line L column C"; the location is already in front.
        let message = e.to_string();
        let problem = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            location,
            path: String::new(),
            problem: format!("invalid YAML: {problem}"),
            allowed: "YAML 1.2 (check the indentation and quoting near this point)".into(),
        }])
    })?;
    let positions = Positions::index(text);
    let doc_error = |problem: String| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            location: positions.value(""),
            path: String::new(),
            problem,
            allowed: format!("a mapping that starts with {KINDS_ALLOWED}"),
        }])
    };
    let serde_yaml::Value::Mapping(mut map) = value else {
        return Err(doc_error("the document is not a mapping of fields".into()));
    };
    let kind = match map.remove("kind") {
        None => return Err(doc_error("missing `kind`".into())),
        Some(serde_yaml::Value::String(k)) => {
            match FileKind::ALL.iter().find(|f| f.as_str() == k) {
                Some(k) => *k,
                None => {
                    return Err(ConfigErrors(vec![ConfigError {
                        file: file.to_path_buf(),
                        location: positions.value("kind"),
                        path: "kind".into(),
                        problem: format!("unknown kind {k:?}"),
                        allowed: KINDS_ALLOWED.into(),
                    }]))
                }
            }
        }
        Some(_) => return Err(doc_error("`kind` is not a string".into())),
    };
    Ok(Document {
        file: file.to_path_buf(),
        positions,
        kind,
        body: serde_yaml::Value::Mapping(map),
    })
}

fn validated<T>(
    doc: &Document,
    value: T,
    check: impl FnOnce(&T, &mut Validator),
) -> Result<T, ConfigErrors> {
    let mut v = Validator::default();
    check(&value, &mut v);
    if v.findings.is_empty() {
        Ok(value)
    } else {
        Err(doc.findings(v.findings))
    }
}

/// `path` as named in `file`: relative paths are relative to the file.
fn relative_to(file: &Path, path: &Path) -> PathBuf {
    file.parent().unwrap_or(Path::new(".")).join(path)
}

/// Loads the cluster file that a proxy or cache file names, relative to it.
fn load_cluster_ref(doc: &Document, relative: &Path) -> Result<ClusterConfig, ConfigErrors> {
    let base = doc.file.parent().unwrap_or(Path::new("."));
    let path = base.join(relative);
    if !path.is_file() {
        return Err(ConfigErrors(vec![doc.error_at(
            "cluster",
            doc.positions.value("cluster"),
            format!("cluster file {} does not exist", path.display()),
            "the path of a kind: cluster file, relative to this file".into(),
        )]));
    }
    load_cluster(&path)
}

/// An up file's `cluster` section as a `kind: cluster` document.
fn cluster_section(body: &serde_yaml::Value) -> String {
    let mut map = serde_yaml::Mapping::new();
    map.insert("kind".into(), "cluster".into());
    if let Some(serde_yaml::Value::Mapping(cluster)) = body.get("cluster") {
        for (k, v) in cluster {
            map.insert(k.clone(), v.clone());
        }
    }
    serde_yaml::to_string(&serde_yaml::Value::Mapping(map)).unwrap_or_default()
}

fn load_document(doc: Document) -> Result<AnyConfig, ConfigErrors> {
    Ok(match doc.kind {
        FileKind::Cluster => {
            let mut c: ClusterConfig = doc.typed()?;
            c.resolve_paths(doc.dir());
            AnyConfig::Cluster(validated(&doc, c, |c, v| c.validate("", v))?)
        }
        FileKind::Origin => {
            let mut o: OriginConfig = doc.typed()?;
            o.resolve_paths(doc.dir());
            AnyConfig::Origin(validated(&doc, o, |o, v| o.validate("", v))?)
        }
        FileKind::Up => {
            let mut u: UpConfig = doc.typed()?;
            u.cluster_yaml = cluster_section(&doc.body);
            if let Some(cp) = u.control_plane.as_mut() {
                cp.data_dir = cp.data_dir.take().map(|d| doc.dir().join(d));
            }
            u.admin_token_file = u.admin_token_file.map(|f| relative_to(&doc.file, &f));
            u.demo.scenario = u.demo.scenario.map(|f| relative_to(&doc.file, &f));
            u.cluster.resolve_paths(doc.dir());
            for p in &mut u.proxies {
                if let Some(tls) = p.tls.as_mut() {
                    for c in &mut tls.certificates {
                        c.cert_file = doc.dir().join(&c.cert_file);
                        c.key_file = doc.dir().join(&c.key_file);
                    }
                }
            }
            if let Some(o) = u.origin.as_mut() {
                o.resolve_paths(doc.dir());
            }
            AnyConfig::Up(Box::new(validated(&doc, u, |u, v| u.validate(v))?))
        }
        FileKind::Control => {
            let c: ControlConfig = doc.typed()?;
            let c = validated(&doc, c, |c, v| c.validate(v))?;
            AnyConfig::Control(c.resolve(doc.file.parent().unwrap_or(Path::new("."))))
        }
        FileKind::Scenario => {
            let s: ScenarioConfig = doc.typed()?;
            AnyConfig::Scenario(Box::new(validated(&doc, s, |s, v| s.validate(v))?))
        }
        FileKind::Proxy => {
            let p: ProxyFile = doc.typed()?;
            let p = validated(&doc, p, |p, v| p.validate(v))?;
            let cluster = match &p.cluster {
                Some(c) => load_cluster_ref(&doc, c)?,
                None => ClusterConfig::default(),
            };
            let control = p.control.clone().map(|mut c| {
                c.resolve_paths(doc.dir());
                c
            });
            let mut edge = p.edge();
            edge.resolve_paths(doc.dir());
            AnyConfig::Proxy(ProxyConfig {
                id: p.id,
                listen: p.listen,
                admin_listen: p.admin_listen,
                edge,
                cache_nodes: p.cache_nodes,
                cluster,
                admin_token_file: p.admin_token_file.map(|f| relative_to(&doc.file, &f)),
                control,
                telemetry: p.telemetry.clone(),
            })
        }
        FileKind::Cache => {
            let c: CacheNodeFile = doc.typed()?;
            let c = validated(&doc, c, |c, v| c.validate(v))?;
            let cluster = match &c.cluster {
                Some(f) => load_cluster_ref(&doc, f)?,
                None => ClusterConfig::default(),
            };
            let control = c.control.clone().map(|mut s| {
                s.resolve_paths(doc.dir());
                s
            });
            AnyConfig::Cache(CacheNodeConfig {
                control,
                id: c.id,
                listen: c.listen,
                admin_listen: c.admin_listen,
                capacity: c.capacity,
                cluster,
                admin_token_file: c.admin_token_file.map(|f| relative_to(&doc.file, &f)),
                max_origin_fetches: c.max_origin_fetches,
                send_buffer: c.send_buffer,
                peers: c.peers,
                telemetry: c.telemetry.clone(),
            })
        }
    })
}

/// Loads any Fanout file, whatever its kind (as `fanout check` does).
pub fn load_any(file: &Path) -> Result<AnyConfig, ConfigErrors> {
    let text = read_expanded(file)?;
    load_document(parse(file, &text)?)
}

/// A file's text with its environment references replaced (see
/// [`crate::env`]): what [`load_any`] parses, and what `fanout ctl apply`
/// sends, so the control plane stores the values the operator's shell had.
pub fn read_expanded(file: &Path) -> Result<String, ConfigErrors> {
    crate::env::expand(file, &read(file)?, |name| std::env::var(name).ok())
}

/// Loads YAML text as if it were the file `name` (for embedded defaults,
/// configs the control plane sends, and tests): environment references
/// are not replaced, since the text was not written for this process.
pub fn load_str(name: &Path, text: &str) -> Result<AnyConfig, ConfigErrors> {
    load_document(parse(name, text)?)
}

fn expect(file: &Path, want: FileKind, got: AnyConfig) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: file.to_path_buf(),
        location: None,
        path: "kind".into(),
        problem: format!("this is a `kind: {}` file, not `kind: {want}`", got.kind()),
        allowed: format!("a file with kind: {want}"),
    }])
}

macro_rules! loader {
    ($(#[$doc:meta])* $name:ident, $variant:ident, $ty:ty) => {
        $(#[$doc])*
        pub fn $name(file: &Path) -> Result<$ty, ConfigErrors> {
            match load_any(file)? {
                AnyConfig::$variant(c) => Ok(c),
                other => Err(expect(file, FileKind::$variant, other)),
            }
        }
    };
}

loader!(
    /// Loads a `kind: cluster` file.
    load_cluster, Cluster, ClusterConfig
);
loader!(
    /// Loads a `kind: proxy` file and the cluster file it names.
    load_proxy, Proxy, ProxyConfig
);
loader!(
    /// Loads a `kind: cache` file and the cluster file it names.
    load_cache_node, Cache, CacheNodeConfig
);
loader!(
    /// Loads a `kind: origin` file.
    load_origin, Origin, OriginConfig
);
loader!(
    /// Loads a `kind: up` file.
    load_up, Up, Box<UpConfig>
);
loader!(
    /// Loads a `kind: scenario` file.
    load_scenario, Scenario, Box<ScenarioConfig>
);
loader!(
    /// Loads a `kind: control` file, its relative paths resolved.
    load_control, Control, ControlConfig
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_messages_split_into_name_and_expected() {
        let u = Unknown::parse("unknown field `hots`, expected one of `name`, `hosts`, `origin`")
            .unwrap();
        assert_eq!((u.what, u.name), ("field", "hots"));
        assert_eq!(u.expected, ["name", "hosts", "origin"]);
        assert_eq!(u.suggestion(), Some("hosts"));
        let u =
            Unknown::parse("unknown variant `sorted`, expected one of `keep`, `sort`, `ignore`")
                .unwrap();
        assert_eq!(u.suggestion(), Some("sort"));
        let u = Unknown::parse("unknown field `zzz`, expected `name`").unwrap();
        assert_eq!(u.expected, ["name"]);
        assert_eq!(u.suggestion(), None);
    }
}
