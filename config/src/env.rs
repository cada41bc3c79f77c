//! Environment references in config files: `${NAME}` and
//! `${NAME:-default}`, replaced before the YAML is parsed.
//!
//! They exist for schedulers that start many copies of one file: a
//! Kubernetes StatefulSet or a Swarm service gives each replica its name
//! or slot in the environment, and `id: ${POD_NAME}` makes it unique. The
//! replacement is textual, as with Loki's `-config.expand-env` or Compose
//! files, so the value is typed by where it lands (`id: ${N}` is a number,
//! `id: "${N}"` a string) and line numbers stay those of the file.
//! Comments are left alone, so a commented-out reference needs no
//! variable. `$${` stands for a literal `${`.

use std::path::Path;

use crate::error::{ConfigError, ConfigErrors, Location};

const ALLOWED: &str =
    "${NAME} with NAME set in the environment, ${NAME:-default}, or $${ for a literal ${";

/// `text` with every reference replaced, or the first one that cannot be.
pub fn expand(
    file: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigErrors> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line));
        let mut rest = code;
        let mut column = 1;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            column += rest[..at].chars().count();
            let after = &rest[at..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                column += 3;
                rest = tail;
                continue;
            }
            let Some(body) = after.strip_prefix("${") else {
                out.push('$');
                column += 1;
                rest = &after[1..];
                continue;
            };
            let error = |problem: String| {
                ConfigErrors(vec![ConfigError {
                    file: file.to_path_buf(),
                    location: Some(Location {
                        line: index + 1,
                        column,
                    }),
                    path: String::new(),
                    problem,
                    allowed: ALLOWED.into(),
                }])
            };
            let Some(end) = body.find('}') else {
                return Err(error("`${` without its closing `}`".into()));
            };
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (reference, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(error(format!(
                    "`${{{reference}}}` is not a reference to an environment variable"
                )));
            }
            let value = match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(error(format!(
                    "environment variable {name} is not set (the file refers to it as ${{{name}}})"
                )))
                }
            };
            if value.contains('\n') {
                return Err(error(format!(
                    "environment variable {name} holds a line break, which would change the file's structure"
                )));
            }
            out.push_str(&value);
            column += reference.chars().count() + 3;
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Where the line's comment starts (its length if it has none): a `#` at
/// the start or after white space, outside quotes.
fn comment_start(line: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if c == '\\' && previous != '\\' => {}
            Some(q) if c == q && !(q == '"' && previous == '\\') => quote = None,
            Some(_) => {}
            None if c == '#' && previous.is_whitespace() => return i,
            None if (c == '"' || c == '\'')
                && (previous.is_whitespace() || "[{,:".contains(previous)) =>
            {
                quote = Some(c)
            }
            None => {}
        }
        previous = if previous == '\\' && c == '\\' {
            ' '
        } else {
            c
        };
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "POD_NAME" => Some("fanout-cache-2".into()),
            "SLOT" => Some("3".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, String> {
        expand(Path::new("f.yaml"), text, env).map_err(|e| e.to_string())
    }

    #[test]
    fn references_are_replaced_where_they_stand() {
        assert_eq!(
            run("id: ${POD_NAME}\nadvertise: '${POD_NAME}.fanout-cache:8081'\n").unwrap(),
            "id: fanout-cache-2\nadvertise: 'fanout-cache-2.fanout-cache:8081'\n"
        );
        assert_eq!(run("id: ${SLOT}").unwrap(), "id: 3");
        assert_eq!(run("zone: ${ZONE:-a}\n").unwrap(), "zone: a\n");
        assert_eq!(run("zone: ${EMPTY:-b}\n").unwrap(), "zone: b\n");
        assert_eq!(run("zone: ${ZONE:-}\n").unwrap(), "zone: \n");
    }

    #[test]
    fn dollars_that_are_not_references_stay() {
        assert_eq!(
            run("a: $5 and $$ and $${NOT}\n").unwrap(),
            "a: $5 and $$ and ${NOT}\n"
        );
        assert_eq!(
            run("a: 1 # set ${UNSET} here\n").unwrap(),
            "a: 1 # set ${UNSET} here\n"
        );
        assert_eq!(run("# ${UNSET}\n").unwrap(), "# ${UNSET}\n");
        // A # inside quotes is not a comment.
        assert_eq!(
            run("a: '#${SLOT}' # ${UNSET}\n").unwrap(),
            "a: '#3' # ${UNSET}\n"
        );
        assert_eq!(
            run("a: \"x \\\" #${SLOT}\"\n").unwrap(),
            "a: \"x \\\" #3\"\n"
        );
    }

    #[test]
    fn a_missing_variable_is_named_with_its_position() {
        let e = run("kind: cache\nid: x-${NOPE}\n").unwrap_err();
        assert!(e.starts_with("f.yaml:2:7:"), "{e}");
        assert!(e.contains("environment variable NOPE is not set"), "{e}");
        let e = run("id: ${SLOT}${BAD NAME}\n").unwrap_err();
        assert!(e.starts_with("f.yaml:1:12:"), "{e}");
        let e = run("id: ${SLOT\n").unwrap_err();
        assert!(e.contains("without its closing"), "{e}");
    }
}
