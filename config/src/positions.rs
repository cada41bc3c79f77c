//! Where each field of a YAML document is, by field path.
//!
//! serde deserialises into typed values and forgets positions; this index is
//! built from the parser's events so that any error that knows its field path
//! (a serde error via `serde_path_to_error`, or a semantic check) can name
//! the line and column a user has to edit.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

use crate::error::Location;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the mapping key is (for fields); the item start for list items.
    key: Location,
    /// Where the value starts.
    value: Location,
}

/// Field path (`sites[1].origin.addresses[0]`) → position.
#[derive(Debug, Default)]
pub struct Positions {
    entries: HashMap<String, Entry>,
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<(String, Location)>,
        seen_key: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Positions {
    /// Index a document. A syntax error yields an empty index: serde_yaml
    /// reports syntax errors with their own location.
    pub fn index(text: &str) -> Positions {
        let mut out = Positions::default();
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            let Ok((event, marker)) = parser.next_token() else {
                return out;
            };
            // yaml-rust2 documents its column as 1-based, but it counts from 0.
            let here = Location {
                line: marker.line(),
                column: marker.col() + 1,
            };
            let starts_value = matches!(
                event,
                Event::Scalar(..)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
                    | Event::Alias(..)
            );
            // Work out the path of the value that starts here, if any.
            let mut value_path: Option<String> = None;
            if starts_value {
                match stack.last_mut() {
                    Some(Frame::Map {
                        path,
                        pending_key,
                        seen_key,
                    }) => match pending_key.take() {
                        None => {
                            // A block mapping's start event sits at its first
                            // `:`; users expect the mapping to begin at its
                            // first key.
                            if !*seen_key {
                                *seen_key = true;
                                if let Some(e) = out.entries.get_mut(path.as_str()) {
                                    e.value = e.value.min(here);
                                    e.key = e.key.min(here);
                                }
                            }
                            // This node is a key.
                            if let Event::Scalar(ref k, ..) = event {
                                *pending_key = Some((child(path, k), here));
                            } else {
                                // Complex keys are not used by Fanout files;
                                // remember something so the next value pairs up.
                                *pending_key = Some((child(path, "?"), here));
                            }
                            continue;
                        }
                        Some((p, key_at)) => {
                            out.entries.insert(
                                p.clone(),
                                Entry {
                                    key: key_at,
                                    value: here,
                                },
                            );
                            value_path = Some(p);
                        }
                    },
                    Some(Frame::Seq { path, next }) => {
                        let p = format!("{path}[{next}]");
                        *next += 1;
                        out.entries.insert(
                            p.clone(),
                            Entry {
                                key: here,
                                value: here,
                            },
                        );
                        value_path = Some(p);
                    }
                    None => {
                        out.entries.insert(
                            String::new(),
                            Entry {
                                key: here,
                                value: here,
                            },
                        );
                        value_path = Some(String::new());
                    }
                }
            }
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map {
                    path: value_path.unwrap_or_default(),
                    pending_key: None,
                    seen_key: false,
                }),
                Event::SequenceStart(..) => stack.push(Frame::Seq {
                    path: value_path.unwrap_or_default(),
                    next: 0,
                }),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::StreamEnd => return out,
                _ => {}
            }
        }
    }

    /// Where the value at `path` starts, or the nearest enclosing value
    /// that has a position (a missing field points at its parent).
    pub fn value(&self, path: &str) -> Option<Location> {
        self.nearest(path).map(|e| e.value)
    }

    /// Where the key of the field at `path` is (falls back like `value`).
    pub fn key(&self, path: &str) -> Option<Location> {
        self.nearest(path).map(|e| e.key)
    }

    fn nearest(&self, path: &str) -> Option<&Entry> {
        let mut p = path;
        loop {
            if let Some(e) = self.entries.get(p) {
                return Some(e);
            }
            if p.is_empty() {
                return None;
            }
            let cut = p.rfind(['.', '[']).unwrap_or(0);
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
kind: cluster
sites:
  - name: a
    origin:
      addresses:
        - 127.0.0.1:1
        - 127.0.0.1:2
  - name: b
    hosts: [x.example, y.example]
";

    fn at(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn maps_paths_to_one_based_positions() {
        let p = Positions::index(DOC);
        assert_eq!(p.value("kind"), at(1, 7));
        assert_eq!(p.key("kind"), at(1, 1));
        assert_eq!(p.key("sites[1].name"), at(8, 5));
        assert_eq!(p.value("sites[0].origin.addresses[1]"), at(7, 11));
        assert_eq!(p.value("sites[1].hosts[1]"), at(9, 24));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_parent() {
        let p = Positions::index(DOC);
        assert_eq!(
            p.value("sites[0].origin.scheme"),
            p.value("sites[0].origin")
        );
        assert_eq!(p.value("nothing.here"), p.value(""));
    }
}
